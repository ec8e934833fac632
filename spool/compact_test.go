package spool

import (
	"errors"
	"testing"
	"time"
)

func (s *Spool) newestSeg() uint32 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.seqs[len(s.seqs)-1]
}

func (s *Spool) hasSeg(seq uint32) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.segs[seq] != nil
}

func waitGone(t *testing.T, s *Spool, seq uint32) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); s.hasSeg(seq); {
		if time.Now().After(deadline) {
			t.Fatalf("segment %d was not compacted", seq)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func deliverAll(t *testing.T, s *Spool, ms []*Message) {
	t.Helper()
	var b Batch
	for _, m := range ms {
		for i := range m.Recipients {
			b.Delivered(m.ID, i, "250 ok")
		}
	}
	if err := s.Commit(&b); err != nil {
		t.Fatal(err)
	}
}

// TestCompactionCarriesTombstonesAndState: M lives in an old segment A that
// stays (a big live message L keeps it mostly live); M's delivery and L's
// deferral are recorded in segment C, which then dies and is compacted.
// After a restart M must not come back and L's deferral must not be lost.
func TestCompactionCarriesTombstonesAndState(t *testing.T) {
	const seg = 64 << 10
	fs := newMemFS(11)
	s := openMem(t, fs, seg)
	L := testMsg(1, 40<<10)
	M := testMsg(2, 1<<10)
	for _, m := range []*Message{L, M} {
		if err := s.Submit(m); err != nil {
			t.Fatal(err)
		}
	}
	segA := s.newestSeg()
	fill := submitN(t, s, 30, 1, 3000) // rolls into later segments
	deliverAll(t, s, fill)
	next := time.Now().Add(2 * time.Hour).Truncate(time.Millisecond)
	var b Batch
	b.Delivered(M.ID, 0, "250 ok")
	b.Bounced(M.ID, 1, "550 5.1.1 unknown")
	b.Deferred(L.ID, 0, next, "421 4.7.0 try later")
	if err := s.Commit(&b); err != nil {
		t.Fatal(err)
	}
	segC := s.newestSeg()
	if segC == segA {
		t.Fatal("test setup: records landed in segment A")
	}
	fill2 := submitN(t, s, 25, 1, 3000)
	deliverAll(t, s, fill2)
	waitGone(t, s, segC)
	if !s.hasSeg(segA) {
		t.Fatal("segment A (mostly live) was removed")
	}
	if _, _, err := s.Envelope(M.ID); !errors.Is(err, ErrNotFound) {
		t.Fatalf("M visible: %v", err)
	}
	s.Close()

	s = openMem(t, fs, seg)
	defer s.Close()
	if !s.hasSeg(segA) || s.hasSeg(segC) {
		t.Fatalf("segments after restart: A %v C %v", s.hasSeg(segA), s.hasSeg(segC))
	}
	if _, _, err := s.Envelope(M.ID); !errors.Is(err, ErrNotFound) {
		t.Fatalf("finished message resurrected by compaction: %v", err)
	}
	_, st, err := s.Envelope(L.ID)
	if err != nil {
		t.Fatal(err)
	}
	if st[0].Status != Deferred || st[0].Attempts != 1 || !st[0].Next.Equal(next) || st[0].Reason != "421 4.7.0 try later" {
		t.Fatalf("L's state lost in compaction: %+v", st[0])
	}
	if got := mustContent(t, s, L.ID); string(got) != string(L.Content) {
		t.Fatal("L content differs")
	}
	for _, m := range append(fill, fill2...) {
		if _, _, err := s.Envelope(m.ID); !errors.Is(err, ErrNotFound) {
			t.Fatalf("delivered filler came back: %v", err)
		}
	}
}

// TestCompactionCopiesLiveMessages: a segment with one live message among
// many finished ones is rewritten; the live message moves with its state
// and stays readable, also across a restart and while a reader holds the
// old mapping.
func TestCompactionCopiesLiveMessages(t *testing.T) {
	const seg = 64 << 10
	fs := newMemFS(12)
	s := openMem(t, fs, seg)
	keep := testMsg(3, 2000)
	if err := s.Submit(keep); err != nil {
		t.Fatal(err)
	}
	segA := s.newestSeg()
	dead := submitN(t, s, 15, 1, 3000)
	var b Batch
	b.Delivered(keep.ID, 1, "250 ok")
	if err := s.Hold(keep.ID); err != nil {
		t.Fatal(err)
	}
	if err := s.Commit(&b); err != nil {
		t.Fatal(err)
	}
	c, err := s.Content(keep.ID) // an open reader across compaction
	if err != nil {
		t.Fatal(err)
	}
	deliverAll(t, s, dead)
	submitN(t, s, 30, 1, 3000) // roll past segment A
	waitGone(t, s, segA)
	if string(c.Bytes()) != string(keep.Content) {
		t.Fatal("open reader saw different bytes after compaction")
	}
	c.Close()
	check := func(s *Spool) {
		_, st, err := s.Envelope(keep.ID)
		if err != nil {
			t.Fatal(err)
		}
		if st[1].Status != Delivered || st[0].Status != Queued || st[2].Status != Queued {
			t.Fatalf("state after copy: %+v", st)
		}
		held := false
		s.Walk(func(i MessageInfo) bool {
			if i.ID == keep.ID {
				held = i.Held
			}
			return true
		})
		if !held {
			t.Fatal("hold lost in copy")
		}
		if got := mustContent(t, s, keep.ID); string(got) != string(keep.Content) {
			t.Fatal("content differs after copy")
		}
	}
	check(s)
	s.Close()
	s = openMem(t, fs, seg)
	defer s.Close()
	check(s)
}

// TestSegmentsFinishedDuringRecovery: appends are taken while recovery
// runs, and compaction waits for it. Segments written and finished in that
// window must still be removed once recovery is done, or a daemon that
// restarted under load keeps their files for good.
func TestSegmentsFinishedDuringRecovery(t *testing.T) {
	const seg = 48 << 10
	fs := newMemFS(9)
	gate := make(chan struct{})
	s, err := Open("/spool", Options{SegmentSize: seg, FS: fs, Reserve: 1, recoverGate: gate, Logf: t.Logf})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ms := submitN(t, s, 30, 1, 3000) // two sealed segments and the active one
	var b Batch
	for _, m := range ms {
		b.Delivered(m.ID, 0, "250 ok")
	}
	if err := s.Commit(&b); err != nil {
		t.Fatal(err)
	}
	close(gate)
	<-s.Recovered()
	waitReused(t, s, 1)
}

// TestCompactionInChunks: a segment whose live part is several compaction
// chunks is carried forward chunk by chunk while a writer keeps appending.
// Every carried message keeps its content and state, across a restart, and
// so does every message the writer appended meanwhile.
func TestCompactionInChunks(t *testing.T) {
	const seg = 1 << 20 // a chunk is a quarter segment at most: 256 KiB
	fs := newMemFS(13)
	s := openMem(t, fs, seg)
	segA := s.newestSeg()
	ms := submitN(t, s, 300, 2, 3000) // about 900 KB: A and the next
	var carried []*Message
	next := testEpoch.Add(3 * time.Hour)
	var b Batch
	for i, m := range ms {
		if i%5 < 3 {
			b.Delivered(m.ID, 0, "250 ok")
			b.Delivered(m.ID, 1, "250 ok")
			continue
		}
		b.Delivered(m.ID, 0, "250 ok")
		b.Deferred(m.ID, 1, next, "451 4.3.0 try later")
		carried = append(carried, m)
	}
	s.stats.mu.Lock()
	builds := s.stats.builds
	s.stats.mu.Unlock()

	stop := make(chan struct{})
	done := make(chan []*Message)
	go func() {
		var out []*Message
		for {
			select {
			case <-stop:
				done <- out
				return
			default:
			}
			m := testMsg(1, 1000)
			if err := s.Submit(m); err != nil {
				t.Error(err)
				done <- out
				return
			}
			out = append(out, m)
		}
	}()
	if err := s.Commit(&b); err != nil {
		t.Fatal(err)
	}
	waitGone(t, s, segA)
	close(stop)
	appended := <-done
	s.stats.mu.Lock()
	builds = s.stats.builds - builds
	s.stats.mu.Unlock()
	if builds < 2 {
		t.Fatalf("segment A was carried forward in %d chunks, want several", builds)
	}
	check := func(s *Spool) {
		t.Helper()
		for _, m := range carried {
			_, st, err := s.Envelope(m.ID)
			if err != nil {
				t.Fatal(err)
			}
			if st[0].Status != Delivered || st[1].Status != Deferred || !st[1].Next.Equal(next) || st[1].Reason != "451 4.3.0 try later" {
				t.Fatalf("%s: state after compaction: %+v", m.ID, st)
			}
			if got := mustContent(t, s, m.ID); string(got) != string(m.Content) {
				t.Fatalf("%s: content differs after compaction", m.ID)
			}
		}
		for _, m := range appended {
			if got := mustContent(t, s, m.ID); string(got) != string(m.Content) {
				t.Fatalf("%s: appended during compaction, content differs", m.ID)
			}
		}
		for i, m := range ms {
			if i%5 < 3 {
				if _, _, err := s.Envelope(m.ID); !errors.Is(err, ErrNotFound) {
					t.Fatalf("%s: finished, but Envelope says %v", m.ID, err)
				}
			}
		}
	}
	check(s)
	s.Close()
	s = openMem(t, fs, seg)
	defer s.Close()
	check(s)
	t.Logf("%d carried in %d chunks; %d appended meanwhile", len(carried), builds, len(appended))
}
