package spool

import (
	"fmt"
	"os"
	"strings"
	"testing"
	"time"
)

// waitReused waits until the spool has readied n removed segments' files
// for reuse (one may already be the spare), kicking compaction meanwhile.
func waitReused(t testing.TB, s *Spool, n int) {
	t.Helper()
	for deadline := time.Now().Add(30 * time.Second); ; {
		s.spareMu.Lock()
		got := s.reused
		s.spareMu.Unlock()
		if got >= n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d segment files readied for reuse", got, n)
		}
		s.kickCompaction()
		time.Sleep(time.Millisecond)
	}
}

// checkReused checks a spool reopened after reuse: the finished messages
// whose segments' files were reused stay gone, and the messages written
// into those files read back whole.
func checkReused(t *testing.T, s *Spool, finished, fresh []*Message) {
	t.Helper()
	for _, m := range finished {
		if _, _, err := s.Envelope(m.ID); err == nil {
			t.Fatalf("finished message %s came back", m.ID)
		}
	}
	for _, m := range fresh {
		if got := mustContent(t, s, m.ID); string(got) != string(m.Content) {
			t.Fatalf("message %s: content differs", m.ID)
		}
	}
}

// TestRecycledSegments: the files of finished segments are reused for new
// ones. Their old frames must never come back: not after a clean restart,
// and not after a power cut that leaves new writes half done (the salt
// and the end mark, spool/FORMAT.md). Files removed but not yet reused
// (".free") are deleted at start.
func TestRecycledSegments(t *testing.T) {
	const seg = 64 << 10
	fs := newMemFS(5)
	s := openMem(t, fs, seg)
	old := submitN(t, s, 60, 1, 3000) // about three segments
	first := s.newestSeg()
	deliverAll(t, s, old)
	// Finished segments are compacted away; their files go to the pool.
	waitReused(t, s, 1)
	// New messages land in reused files: the file names are reused
	// numbers, and the data before it is there under old frames.
	fresh := submitN(t, s, 60, 1, 2000)
	if s.newestSeg() <= first {
		t.Fatal("no new segment activated")
	}
	img := fs.Crash() // durable state now, with torn unsynced pieces
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	for name, fsys := range map[string]*memFS{"restart": fs, "power cut": img} {
		t.Run(name, func(t *testing.T) {
			var logs []string
			s2, err := Open("/spool", Options{SegmentSize: seg, FS: fsys, Reserve: 1, Logf: func(f string, a ...any) {
				logs = append(logs, fmt.Sprintf(f, a...))
			}})
			if err != nil {
				t.Fatal(err)
			}
			defer s2.Close()
			<-s2.Recovered()
			checkReused(t, s2, old, fresh)
			for _, l := range logs {
				if strings.Contains(l, "dropping corrupt or torn tail") && name == "restart" {
					t.Errorf("clean restart logged %q", l)
				}
			}
			names, _ := fsys.ReadDir("/spool")
			for _, n := range names {
				if strings.HasSuffix(n, freeSuffix) {
					t.Errorf("%s left at start", n)
				}
			}
		})
	}
}

// TestRecycledSegmentsOSFS runs the reuse on the real file system: the
// renames to NAME.free and back, and what a restart finds on disk.
func TestRecycledSegmentsOSFS(t *testing.T) {
	const seg = 64 << 10
	dir := t.TempDir()
	open := func() *Spool {
		s, err := Open(dir, Options{SegmentSize: seg, Reserve: 1, Logf: t.Logf})
		if err != nil {
			t.Fatal(err)
		}
		<-s.Recovered()
		return s
	}
	s := open()
	old := submitN(t, s, 60, 1, 3000)
	deliverAll(t, s, old)
	waitReused(t, s, 1)
	fresh := submitN(t, s, 60, 1, 2000)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	// A removed segment's file not yet reused, as a crash would leave it.
	if err := os.WriteFile(dir+"/00000000000000ff.seg"+freeSuffix, []byte("old"), 0o600); err != nil {
		t.Fatal(err)
	}
	s = open()
	defer s.Close()
	checkReused(t, s, old, fresh)
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		if strings.HasSuffix(e.Name(), freeSuffix) {
			t.Errorf("%s left at start", e.Name())
		}
	}
}

// TestSparesKeptAcrossRestart: the spare and the reused files readied by
// one run are what the next Open starts from. Its first segment is one
// of them, no file is made for it, and none of them is thrown away.
func TestSparesKeptAcrossRestart(t *testing.T) {
	const seg = 64 << 10
	fs := newMemFS(12)
	s := openMem(t, fs, seg)
	deliverAll(t, s, submitN(t, s, 60, 1, 3000))
	waitReused(t, s, 2)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	spares := map[string]bool{}
	fs.mu.Lock()
	for _, name := range fs.spareFiles() {
		spares[name] = true
	}
	files := len(fs.files)
	fs.mu.Unlock()
	if len(spares) < 2 {
		t.Fatalf("%d spare files after Close, want the spare and the reused ones", len(spares))
	}

	s, err := Open("/spool", Options{SegmentSize: seg, FS: fs, Reserve: 1, Logf: t.Logf})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if !spares[s.active.path] {
		t.Errorf("first segment %s is not one of the spares %v", s.active.path, spares)
	}
	fs.mu.Lock()
	defer fs.mu.Unlock()
	if len(fs.files) != files {
		t.Errorf("%d files after Open, %d before: Open made or removed files", len(fs.files), files)
	}
	for name := range spares {
		if fs.files[name] == nil {
			t.Errorf("spare %s removed at start", name)
		}
	}
}
