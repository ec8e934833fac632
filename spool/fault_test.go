package spool

import (
	"errors"
	"hash/crc32"
	"io"
	"os"
	"testing"
	"time"
)

var faultSink byte

// TestContentFaultSetAside truncates a segment file under a live mapping:
// reading the content then raises SIGBUS, which must come back as
// ErrUnreadable (not kill the process) and set the message aside.
func TestContentFaultSetAside(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir, Options{SegmentSize: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	<-s.Recovered()
	m := testMsg(1, 64<<10) // spans pages past the first
	if err := s.Submit(m); err != nil {
		t.Fatal(err)
	}
	// Fill the segment so that it is sealed: later writes (the set-aside
	// hold records) then go to another file.
	victimSeq := s.newestSeg()
	for s.newestSeg() == victimSeq {
		submitN(t, s, 1, 1, 64<<10)
	}
	c, err := s.Content(m.ID)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	s.mu.Lock()
	vg := s.segs[victimSeq]
	segs := []string{vg.path}
	s.mu.Unlock()
	// Its index footer is written in the background: let that finish, or
	// it would extend the file again after the truncation.
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		if _, _, ok := footerOf(vg); ok {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no index footer on the sealed segment")
		}
	}
	for _, p := range segs {
		if err := os.Truncate(p, 4096); err != nil {
			t.Fatal(err)
		}
	}
	err = c.Do(func(b []byte) error {
		for _, x := range b {
			faultSink += x
		}
		return nil
	})
	if !errors.Is(err, ErrUnreadable) {
		t.Fatalf("Do over a truncated mapping: %v, want ErrUnreadable", err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		held := false
		s.Walk(func(i MessageInfo) bool { held = held || (i.ID == m.ID && i.Held); return true })
		if held {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("message not set aside")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if _, err := io.Copy(crc32.NewIEEE(), c.Reader()); !errors.Is(err, ErrUnreadable) {
		t.Fatalf("Reader over a truncated mapping: %v, want ErrUnreadable", err)
	}
	for _, d := range s.PopDue(time.Now(), 1000) {
		if d.ID == m.ID {
			t.Fatalf("set-aside message handed out: %v", d)
		}
	}
}

// TestAppendsDuringRecovery: Open returns before the old segments are read;
// new messages are accepted, durable and deliverable meanwhile, and an op
// on an old message waits for its record instead of failing.
func TestAppendsDuringRecovery(t *testing.T) {
	fs := newMemFS(21)
	s := openMem(t, fs, 1<<20)
	old := submitN(t, s, 50, 1, 500)
	s.Close()

	gate := make(chan struct{})
	s, err := Open("/spool", Options{SegmentSize: 1 << 20, FS: fs, Reserve: 1, recoverGate: gate})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if st := s.Stats(); !st.Recovering {
		t.Fatal("recovery finished although gated")
	}
	m := testMsg(1, 100)
	if err := s.Submit(m); err != nil {
		t.Fatalf("Submit during recovery: %v", err)
	}
	if d := s.PopDue(time.Now(), 100); len(d) != 1 || d[0].ID != m.ID {
		t.Fatalf("during recovery PopDue = %v, want only the new message", d)
	}
	done := make(chan error, 1)
	go func() { done <- s.Hold(old[0].ID) }()
	select {
	case err := <-done:
		t.Fatalf("Hold of an unrecovered message returned early: %v", err)
	case <-time.After(50 * time.Millisecond):
	}
	close(gate)
	if err := <-done; err != nil {
		t.Fatalf("Hold after recovery: %v", err)
	}
	<-s.Recovered()
	if st := s.Stats(); st.Messages != 51 {
		t.Fatalf("messages %d, want 51", st.Messages)
	}
}
