package spool

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
)

// TestRecoveryReadsFooters: sealed segments are recovered from their index
// footers, without reading message content. To show it, a content byte of
// a message in a sealed segment is flipped on disk: a record-by-record scan
// would stop there and lose every later record of the segment; through
// the footer every message is recovered.
func TestRecoveryReadsFooters(t *testing.T) {
	const seg = 64 << 10
	fs := newMemFS(51)
	s := openMem(t, fs, seg)
	ms := submitN(t, s, 60, 1, 3000) // about three segments
	first := s.segs[s.seqs[0]]
	s.Close()
	f := fs.files[first.path]
	victim := ms[2]
	i := bytes.Index(f.synced, victim.Content[100:140])
	if i < 0 {
		t.Fatal("victim not in the first segment")
	}
	f.synced[i] ^= 0xff
	f.data[i] ^= 0xff

	var logs []string
	var mu sync.Mutex
	s, err := Open("/spool", Options{SegmentSize: seg, FS: fs, Reserve: 1, Logf: func(f string, a ...any) {
		mu.Lock()
		logs = append(logs, fmt.Sprintf(f, a...))
		mu.Unlock()
	}})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	<-s.Recovered()
	for _, m := range ms {
		_, _, err := s.Envelope(m.ID)
		if m == victim {
			// Its corruption is found when it is read, and it is set aside.
			if !errors.Is(err, ErrUnreadable) {
				t.Fatalf("corrupt message read without error: %v", err)
			}
			continue
		}
		if err != nil {
			t.Fatalf("message %s lost: %v", m.ID, err)
		}
	}
	mu.Lock()
	all := strings.Join(logs, "\n")
	mu.Unlock()
	if strings.Contains(all, "torn tail at") || !strings.Contains(all, "through index footers") || strings.Contains(all, "(0 through index footers)") {
		t.Fatalf("a torn tail was reported, so content was read:\n%s", all)
	}
}

// FuzzFooter feeds arbitrary bytes to the footer-entry and segment-header
// decoders: they must reject or decode, never panic.
func FuzzFooter(f *testing.F) {
	var foot []byte
	for _, b := range sampleRecords() {
		foot = append(foot, make([]byte, 20)...)
		e := foot[len(foot)-20:]
		body := b[frameHeader:]
		putU32 := func(p []byte, v uint32) { p[0], p[1], p[2], p[3] = byte(v), byte(v>>8), byte(v>>16), byte(v>>24) }
		putU32(e[0:], 64)
		putU32(e[4:], uint32(len(b)))
		putU32(e[12:], uint32(len(body)))
		putU32(e[16:], crc32c(body))
		foot = append(foot, body...)
	}
	f.Add(foot)
	f.Add(segHeader{seq: 3, abandonSeq: 2, abandonLen: 999}.encode())
	f.Fuzz(func(t *testing.T, b []byte) {
		parseHeader(b)
		for len(b) > 0 {
			e, n, err := nextEntry(b)
			if err != nil {
				return
			}
			var r rec
			r.parse(e.meta)
			b = b[n:]
		}
	})
}
