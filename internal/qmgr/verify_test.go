package qmgr

import (
	"bytes"
	"context"
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/sluicemta/sluice/internal/bounce"
	"github.com/sluicemta/sluice/internal/config"
	"github.com/sluicemta/sluice/internal/qid"
	"github.com/sluicemta/sluice/spool"
	"github.com/sluicemta/sluice/vmta"
)

// submitVerify queues a sendmail -bv request.
func submitVerify(t *testing.T, sp *spool.Spool, sender string, rcpts ...string) string {
	t.Helper()
	id := qid.New(time.Now())
	m := &spool.Message{ID: id, Arrival: time.Now(), Sender: sender, Verify: true,
		Content: []byte("From: <" + sender + ">\r\nSubject: verify " + id + "\r\n\r\nnot to be delivered\r\n")}
	for _, r := range rcpts {
		m.Recipients = append(m.Recipients, spool.Recipient{Addr: r})
	}
	if err := sp.Submit(m); err != nil {
		t.Fatal(err)
	}
	return id
}

func (r *recorder) waitVerify(t *testing.T, n int) []*Event {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		r.mu.Lock()
		if len(r.verify) >= n {
			out := append([]*Event(nil), r.verify...)
			r.mu.Unlock()
			return out
		}
		r.mu.Unlock()
		time.Sleep(5 * time.Millisecond)
	}
	t.Fatalf("got %d verify events, want %d", len(r.verify), n)
	return nil
}

// reports returns the verification reports the fake delivered.
func (f *fakeDeliverer) reports() [][]byte {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out [][]byte
	for _, c := range f.content {
		if bytes.Contains(c, []byte("Subject: Mail Delivery Status Report")) {
			out = append(out, c)
		}
	}
	return out
}

// TestVerifyReport: every recipient of a -bv request is probed once,
// over several domains at once, and ONE report reaches the sender with a
// deliverable or undeliverable line each; a temporary failure is reported
// (undeliverable) rather than retried. Nothing is delivered, and no
// delivery event (accounting) is recorded for a probe.
func TestVerifyReport(t *testing.T) {
	dlv := &fakeDeliverer{ip: netip.MustParseAddr("192.0.2.25"), delay: 20 * time.Millisecond, replies: map[string]vmta.Reply{
		"bad@b.example":   {Code: 550, Enhanced: "5.1.1", Text: "no such user"},
		"later@c.example": {Code: 450, Enhanced: "4.2.1", Text: "mailbox busy"},
	}}
	h := start(t, "", dlv)
	rcpts := []string{"good@b.example", "bad@b.example", "later@c.example"}
	for i := 0; i < 6; i++ {
		rcpts = append(rcpts, fmt.Sprintf("u%d@d%d.example", i, i))
	}
	id := submitVerify(t, h.sp, "me@a.example", rcpts...)
	evs := h.rec.waitVerify(t, len(rcpts))
	got := map[string]*Event{}
	reportID := ""
	for _, ev := range evs {
		got[ev.Rcpt] = ev
		if ev.DSNQueueID != "" {
			if reportID != "" {
				t.Errorf("report named twice: %s and %s", reportID, ev.DSNQueueID)
			}
			reportID = ev.DSNQueueID
		}
	}
	for rcpt, want := range map[string]string{"good@b.example": StatusDeliverable, "bad@b.example": StatusUndeliverable,
		"later@c.example": StatusUndeliverable, "u3@d3.example": StatusDeliverable} {
		if ev := got[rcpt]; ev == nil || ev.Status != want || ev.QueueID != id {
			t.Errorf("%s: event %+v, want %s", rcpt, ev, want)
		}
	}
	if ev := got["bad@b.example"]; ev.Reason != "host mx.b.example[192.0.2.25] said: 550 5.1.1 no such user (in reply to RCPT TO command)" {
		t.Errorf("undeliverable reason %q", ev.Reason)
	}
	if reportID == "" {
		t.Fatal("no report queued")
	}
	// The report is delivered like any mail (a delivery event), to the sender.
	evs = h.rec.wait(t, 1)
	if evs[0].Rcpt != "me@a.example" || evs[0].Sender != "" || evs[0].QueueID != reportID {
		t.Fatalf("report delivery %+v", evs[0])
	}
	time.Sleep(300 * time.Millisecond) // a second report or a retry would show now
	reps := dlv.reports()
	if len(reps) != 1 {
		t.Fatalf("%d reports, want 1", len(reps))
	}
	rep := string(reps[0])
	for _, want := range []string{
		"Enclosed is the mail delivery report that you requested.",
		"<good@b.example>: delivery via mx.b.example[192.0.2.25]:25: 250 2.0.0 ok",
		"<later@c.example>: delivery via mx.c.example[192.0.2.25]:25: host",
		"Final-Recipient: rfc822; bad@b.example\r\nAction: undeliverable\r\nStatus: 5.1.1\r\n",
		"Final-Recipient: rfc822; later@c.example\r\nAction: undeliverable\r\nStatus: 4.2.1\r\n",
		"Final-Recipient: rfc822; u5@d5.example\r\nAction: deliverable\r\n",
		"Subject: verify " + id,
	} {
		if !strings.Contains(rep, want) {
			t.Errorf("report lacks %q:\n%s", want, rep)
		}
	}
	if strings.Contains(rep, "not to be delivered") {
		t.Error("the report returns the request's body")
	}
	dlv.mu.Lock()
	delivered, probed := len(dlv.content), 0
	for _, p := range dlv.probes {
		probed += len(p)
	}
	dlv.mu.Unlock()
	if delivered != 1 || probed != len(rcpts) {
		t.Errorf("%d deliveries (want 1: the report) and %d recipients probed (want %d)", delivered, probed, len(rcpts))
	}
	h.rec.mu.Lock()
	n := len(h.rec.events)
	h.rec.mu.Unlock()
	if n != 1 {
		t.Errorf("%d delivery events, want 1 (the report): probes are not deliveries", n)
	}
	if st := status(t, h.sp, id); st != nil {
		t.Errorf("request still queued: %+v", st)
	}
}

// TestVerifyNullSender: the probes happen and are logged, but nobody
// gets a report.
func TestVerifyNullSender(t *testing.T) {
	dlv := &fakeDeliverer{}
	h := start(t, "", dlv)
	submitVerify(t, h.sp, "", "a@b.example", "c@d.example")
	evs := h.rec.waitVerify(t, 2)
	for _, ev := range evs {
		if ev.Status != StatusDeliverable || ev.DSNQueueID != "" {
			t.Errorf("event %+v", ev)
		}
	}
	time.Sleep(200 * time.Millisecond)
	if n := len(dlv.reports()); n != 0 {
		t.Fatalf("%d reports for a null sender", n)
	}
}

// TestVerifySurvivesShutdown: a probe cut short by shutdown is no
// result. The request stays queued, due at once, and after a restart (a
// new Manager on the same spool) it is probed and reported, once.
func TestVerifySurvivesShutdown(t *testing.T) {
	cfg, err := config.Parse("test.conf", []byte(baseConfig))
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	sp, err := spool.Open(dir, spool.Options{SegmentSize: 1 << 20, Reserve: 1})
	if err != nil {
		t.Fatal(err)
	}
	run := func(dlv *fakeDeliverer, rec *recorder) (stop func()) {
		m := New(Options{Spool: sp, Config: func() *config.Config { return cfg }, Deliver: dlv, Recorder: rec, Logf: t.Logf})
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { defer close(done); m.Run(ctx) }()
		return func() { cancel(); <-done }
	}
	hung := &fakeDeliverer{block: make(chan struct{})}
	rec1 := &recorder{}
	stop := run(hung, rec1)
	id := submitVerify(t, sp, "me@a.example", "x@b.example")
	for deadline := time.Now().Add(5 * time.Second); hung.calls.Load() == 0; {
		if time.Now().After(deadline) {
			t.Fatal("no probe started")
		}
		time.Sleep(5 * time.Millisecond)
	}
	stop()
	if len(rec1.verify) != 0 || len(hung.reports()) != 0 {
		t.Fatalf("a probe cut by shutdown was reported: %+v", rec1.verify)
	}
	st := status(t, sp, id)
	if len(st) != 1 || st[0].Status.Finished() || st[0].Next.After(time.Now()) {
		t.Fatalf("after shutdown: %+v, want unfinished and due now", st)
	}
	sp.Close()

	sp, err = spool.Open(dir, spool.Options{SegmentSize: 1 << 20, Reserve: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer sp.Close()
	dlv, rec2 := &fakeDeliverer{}, &recorder{}
	stop = run(dlv, rec2)
	defer stop()
	evs := rec2.waitVerify(t, 1)
	if evs[0].Status != StatusDeliverable || evs[0].DSNQueueID == "" {
		t.Fatalf("after restart: %+v", evs[0])
	}
	rec2.wait(t, 1)
	if n := len(dlv.reports()); n != 1 {
		t.Fatalf("%d reports after restart, want 1", n)
	}
}

// TestVerifyExpire: postsuper -e on a pending request finishes it with
// undeliverable lines and sends the report (not a bounce).
func TestVerifyExpire(t *testing.T) {
	dlv := &fakeDeliverer{}
	h := start(t, "", dlv)
	id := qid.New(time.Now())
	// Held (as a milter's quarantine would), so it waits for postsuper.
	if err := h.sp.Submit(&spool.Message{ID: id, Arrival: time.Now(), Sender: "me@a.example", Verify: true, Held: true,
		Recipients: []spool.Recipient{{Addr: "x@b.example"}}, Content: []byte("Subject: v\r\n\r\nbody\r\n")}); err != nil {
		t.Fatal(err)
	}
	if err := h.m.Expire(id); err != nil {
		t.Fatal(err)
	}
	h.rec.wait(t, 1)
	reps := dlv.reports()
	if len(reps) != 1 || !bytes.Contains(reps[0], []byte("<x@b.example>: message expired by the administrator")) ||
		!bytes.Contains(reps[0], []byte("Action: undeliverable\r\nStatus: 4.4.7")) {
		t.Fatalf("reports %q", reps)
	}
}

func TestVerifyResultEncoding(t *testing.T) {
	v := verifyResult{Action: bounce.ActionUndeliverable, Status: "5.1.1", RemoteMTA: "mx.b.example",
		Diagnostic: "smtp; 550 5.1.1 no\tsuch\r\nuser", Text: "delivery via mx[1.2.3.4]:25: 550 5.1.1 no such user"}
	got, ok := decodeVerify(v.encode())
	want := v
	want.Diagnostic = "smtp; 550 5.1.1 no such user"
	if !ok || got != want {
		t.Fatalf("round trip %+v %v, want %+v", got, ok, want)
	}
	for _, s := range []string{"", "250 2.0.0 ok", "verify\tmaybe\t2.0.0\t\t\t", "verify\tdeliverable\t250\t\t\t"} {
		if _, ok := decodeVerify(s); ok {
			t.Errorf("decoded %q", s)
		}
	}
	if v := storedResult(spool.RcptState{Status: spool.Delivered, Reason: "250 ok"}); v.Action != bounce.ActionDeliverable || v.Status != "2.0.0" || v.Text != "250 ok" {
		t.Errorf("fallback %+v", v)
	}
}

// FuzzDecodeVerify: the reasons read back from the spool never panic the
// decoder, and what it accepts encodes back to itself.
func FuzzDecodeVerify(f *testing.F) {
	f.Add(verifyResult{Action: "deliverable", Status: "2.1.5", RemoteMTA: "mx", Diagnostic: "smtp; 250 ok", Text: "delivery via mx[1.2.3.4]:25: 250 ok"}.encode())
	f.Add("verify\tundeliverable\t4.4.1\t\tX-Sluice; 451 4.4.1 x\tconnect to x")
	f.Add("verify\t\t\t\t\t")
	f.Fuzz(func(t *testing.T, s string) {
		v, ok := decodeVerify(s)
		if !ok {
			return
		}
		if w, ok := decodeVerify(v.encode()); !ok || w != normalize(v) {
			t.Fatalf("%q: decoded %+v, re-encoded %+v", s, v, w)
		}
	})
}

func normalize(v verifyResult) verifyResult {
	v.RemoteMTA, v.Diagnostic, v.Text = oneLine(v.RemoteMTA), oneLine(v.Diagnostic), oneLine(v.Text)
	return v
}
