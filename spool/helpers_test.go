package spool

import (
	"bytes"
	"fmt"
	"testing"
	"time"

	"github.com/sluicemta/sluice/internal/qid"
)

var testEpoch = time.Date(2026, 11, 29, 10, 0, 0, 0, time.UTC)

// testMsg makes a message with n recipients spread over domains.
func testMsg(n int, size int) *Message {
	m := &Message{
		ID:      qid.New(testEpoch),
		Arrival: testEpoch,
		Sender:  "bounce@sender.example",
		Ret:     "HDRS",
		EnvID:   "env-1",
		Body:    "8BITMIME",
		JobID:   "job7",
		VMTA:    "vmta1",
	}
	for i := 0; i < n; i++ {
		m.Recipients = append(m.Recipients, Recipient{
			Addr:   fmt.Sprintf("user%d@Domain%d.example", i, i%3),
			ORCPT:  fmt.Sprintf("rfc822;user%d@domain%d.example", i, i%3),
			Notify: NotifyFailure | NotifyDelay,
		})
	}
	line := []byte(fmt.Sprintf("Subject: %s\r\n", m.ID))
	m.Content = bytes.Repeat(line, 1+size/len(line))[:size]
	return m
}

func openMem(t testing.TB, fs *memFS, segSize int64) *Spool {
	t.Helper()
	s, err := Open("/spool", Options{SegmentSize: segSize, FS: fs, Reserve: 1, Logf: t.Logf})
	if err != nil {
		t.Fatal(err)
	}
	<-s.Recovered()
	return s
}

func mustContent(t testing.TB, s *Spool, id string) []byte {
	t.Helper()
	c, err := s.Content(id)
	if err != nil {
		t.Fatalf("Content(%s): %v", id, err)
	}
	defer c.Close()
	var out []byte
	if err := c.Do(func(b []byte) error { out = append(out, b...); return nil }); err != nil {
		t.Fatal(err)
	}
	return out
}
