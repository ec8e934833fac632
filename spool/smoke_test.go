package spool

import (
	"bytes"
	"testing"
	"time"
)

func TestSmoke(t *testing.T) {
	fs := newMemFS(1)
	s := openMem(t, fs, 1<<20)
	m := testMsg(3, 1000)
	if err := s.Submit(m); err != nil {
		t.Fatal(err)
	}
	if got := mustContent(t, s, m.ID); !bytes.Equal(got, m.Content) {
		t.Fatalf("content differs")
	}
	due := s.PopDue(time.Now(), 10)
	if len(due) != 3 {
		t.Fatalf("due %v", due)
	}
	var b Batch
	b.Delivered(m.ID, 0, "250 ok")
	b.Deferred(m.ID, 1, testEpoch.Add(time.Hour), "451 later")
	if err := s.Commit(&b); err != nil {
		t.Fatal(err)
	}
	env, st, err := s.Envelope(m.ID)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%+v %+v", env, st)
	s.Close()
	s = openMem(t, fs, 1<<20)
	env2, st2, err := s.Envelope(m.ID)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%+v %+v", env2, st2)
	if got := mustContent(t, s, m.ID); !bytes.Equal(got, m.Content) {
		t.Fatalf("content differs after reopen")
	}
	s.Close()
}
