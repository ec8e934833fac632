package qmgr

import (
	"bytes"
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"net/netip"

	"github.com/sluicemta/sluice/internal/config"
	"github.com/sluicemta/sluice/internal/qid"
	"github.com/sluicemta/sluice/internal/resolve"
	"github.com/sluicemta/sluice/spool"
	"github.com/sluicemta/sluice/vmta"
)

func (h *harness) submitJob(t *testing.T, job string, rcpts ...string) string {
	t.Helper()
	id := qid.New(time.Now())
	m := &spool.Message{ID: id, Arrival: time.Now(), Sender: "s@a.example", JobID: job,
		Content: []byte("From: <s@a.example>\r\nSubject: " + id + "\r\n\r\nbody\r\n")}
	for _, r := range rcpts {
		m.Recipients = append(m.Recipients, spool.Recipient{Addr: r})
	}
	if err := h.sp.Submit(m); err != nil {
		t.Fatal(err)
	}
	return id
}

func TestListUnsubscribeAddedBeforeSigning(t *testing.T) {
	var signed [][]byte
	sign := func(cfg *config.Config, q spool.QueueKey, content []byte) ([]byte, error) {
		if q.Domain != "b.example" {
			t.Errorf("signer told queue %+v", q)
		}
		signed = append(signed, bytes.Clone(content))
		return append([]byte("DKIM-Signature: v=1; test\r\n"), content...), nil
	}
	dlv := &fakeDeliverer{}
	h := startWith(t, `<domain b.example>
  list-unsubscribe https://u.example/unsub?r={rcpt}&j={jobid}
  add-list-unsubscribe-post yes
</domain>
`, dlv, Options{Sign: sign})
	h.submitJob(t, "job 7", "x+y@b.example")
	h.rec.wait(t, 1)
	dlv.mu.Lock()
	got := string(dlv.content[0])
	dlv.mu.Unlock()
	want := "DKIM-Signature: v=1; test\r\nList-Unsubscribe: <https://u.example/unsub?r=x%2By%40b.example&j=job+7>\r\nList-Unsubscribe-Post: List-Unsubscribe=One-Click\r\nFrom:"
	if !strings.HasPrefix(got, want) {
		t.Fatalf("sent:\n%s\nwant prefix:\n%s", got, want)
	}
	if len(signed) != 1 || !bytes.HasPrefix(signed[0], []byte("List-Unsubscribe: <https:")) {
		t.Fatalf("the signer did not see the added headers: %q", signed)
	}
}

func TestAddUnsubscribe(t *testing.T) {
	v := unsubVars{rcpt: "r@x.example"}
	for _, tc := range []struct {
		name, content, template string
		post                    bool
		want                    string // "" = unchanged
	}{
		{"own header kept, mailto only: no post", "List-Unsubscribe: <mailto:u@x>\r\n\r\nb", "https://u/{rcpt}", true, ""},
		{"own https header: post added", "list-unsubscribe:\r\n <https://own/u>\r\n\r\nb", "", true, "List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n"},
		{"post already there", "List-Unsubscribe: <https://own>\r\nList-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n\r\nb", "https://u", true, ""},
		{"header in the body does not count", "Subject: x\r\n\r\nList-Unsubscribe: <https://body>\r\n", "https://u/{rcpt}", false, "List-Unsubscribe: <https://u/r%40x.example>\r\n"},
		{"nothing configured", "Subject: x\r\n\r\nb", "", false, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out := addUnsubscribe([]byte(tc.content), tc.template, tc.post, v)
			if tc.want == "" {
				if string(out) != tc.content {
					t.Fatalf("changed: %q", out)
				}
				return
			}
			if string(out) != tc.want+tc.content {
				t.Fatalf("got %q, want %q", out, tc.want+tc.content)
			}
		})
	}
}

func FuzzAddUnsubscribe(f *testing.F) {
	f.Add([]byte("List-Unsubscribe: <https://a>\r\n\r\nbody"), true)
	f.Add([]byte("Subject: x\n\nbody"), false)
	f.Add([]byte("\r\n"), true)
	f.Fuzz(func(t *testing.T, content []byte, post bool) {
		out := addUnsubscribe(content, "https://u/{rcpt}", post, unsubVars{rcpt: "a@b"})
		if !bytes.HasSuffix(out, content) {
			t.Fatal("original content not kept whole at the end")
		}
		if hdr := headerSection(content); len(hdr) > len(content) {
			t.Fatal("header longer than content")
		}
	})
}

func TestPauseResumeQueueAndVMTA(t *testing.T) {
	dlv := &fakeDeliverer{}
	h := start(t, "", dlv)
	h.m.PauseQueue("B.example")
	h.submit(t, "s@a.example", time.Now(), "u@b.example")
	time.Sleep(150 * time.Millisecond)
	if n := dlv.calls.Load(); n != 0 {
		t.Fatalf("%d deliveries to a paused queue", n)
	}
	if qs := h.m.Queues(); len(qs) != 1 || !qs[0].Paused || qs[0].Waiting != 1 {
		t.Fatalf("queues %+v", qs)
	}
	h.m.ResumeQueue("b.example")
	h.rec.wait(t, 1)
}

func TestPauseResumeDeleteJob(t *testing.T) {
	dlv := &fakeDeliverer{}
	h := start(t, "", dlv)
	if _, err := h.m.PauseJob("j1"); err != nil {
		t.Fatal(err)
	}
	h.m.PauseJob("j2")
	id1 := h.submitJob(t, "j1", "a@b.example")
	id2 := h.submitJob(t, "j2", "b@b.example")
	h.submitJob(t, "", "c@b.example")
	evs := h.rec.wait(t, 1)
	if evs[0].Rcpt != "c@b.example" {
		t.Fatalf("delivered %s of a paused job", evs[0].Rcpt)
	}
	time.Sleep(150 * time.Millisecond)
	if n := len(h.rec.wait(t, 1)); n != 1 {
		t.Fatalf("%d events with two jobs paused", n)
	}
	held := 0
	h.sp.Walk(func(info spool.MessageInfo) bool {
		if info.Held {
			held++
		}
		return true
	})
	if held != 2 {
		t.Fatalf("%d messages held, want 2 (the paused jobs')", held)
	}
	if n, err := h.m.DeleteJob("j2"); err != nil || n != 1 {
		t.Fatalf("DeleteJob: %d, %v", n, err)
	}
	if _, _, err := h.sp.Envelope(id2); err == nil {
		t.Fatal("deleted job's message still queued")
	}
	if n, err := h.m.ResumeJob("j1"); err != nil || n != 1 {
		t.Fatalf("ResumeJob: %d, %v", n, err)
	}
	evs = h.rec.wait(t, 2)
	if evs[1].Rcpt != "a@b.example" || evs[1].JobID != "j1" {
		t.Fatalf("after resume: %+v", evs[1])
	}
	_ = id1
}

func TestPriorityGetsConnectionsFirst(t *testing.T) {
	dlv := &fakeDeliverer{delay: 10 * time.Millisecond}
	h := start(t, `total-max-smtp-out 1
<domain hi.example>
  queue-priority 90
</domain>
<domain lo.example>
  queue-priority 10
</domain>
`, dlv)
	var b spool.Batch
	for i := 0; i < 10; i++ {
		dom := "lo.example"
		if i%2 == 1 {
			dom = "hi.example"
		}
		b.Submit(&spool.Message{ID: qid.New(time.Now()), Arrival: time.Now(), Sender: "s@a.example",
			Recipients: []spool.Recipient{{Addr: fmt.Sprintf("u%d@%s", i, dom)}}, Content: []byte("Subject: x\r\n\r\nb\r\n")}, false)
	}
	if err := h.sp.Commit(&b); err != nil {
		t.Fatal(err)
	}
	h.rec.wait(t, 10)
	dlv.mu.Lock()
	defer dlv.mu.Unlock()
	var order []string
	for _, d := range dlv.dests {
		order = append(order, strings.TrimSuffix(d.Domain, ".example"))
	}
	// The batch is popped at once, so the first round already sees both
	// queues (the spool may hand out a few before the rest: allow one).
	if n := strings.Count(strings.Join(order[:6], ","), "hi"); n != 5 {
		t.Fatalf("delivery order %v: want the 5 hi deliveries within the first 6", order)
	}
}

// defer-queue hands the queue's waiting recipients back to the spool for
// backoff-retry-after without counting an attempt.
func TestDeferQueuePattern(t *testing.T) {
	dlv := &fakeDeliverer{delay: 50 * time.Millisecond, replies: map[string]vmta.Reply{
		"u0@b.example": {Code: 452, Enhanced: "4.2.2", Text: "mailbox full, queue deferred"},
	}}
	h := start(t, `<smtp-pattern-list p>
  reply /queue deferred/ defer-queue
</smtp-pattern-list>
<domain b.example>
  max-smtp-out 1
  smtp-pattern-list p
  backoff-retry-after 30m
</domain>
`, dlv)
	var ids []string
	var b spool.Batch
	for i := 0; i < 5; i++ {
		id := qid.New(time.Now())
		ids = append(ids, id)
		b.Submit(&spool.Message{ID: id, Arrival: time.Now(), Sender: "s@a.example",
			Recipients: []spool.Recipient{{Addr: fmt.Sprintf("u%d@b.example", i)}}, Content: []byte("Subject: x\r\n\r\nb\r\n")}, false)
	}
	if err := h.sp.Commit(&b); err != nil {
		t.Fatal(err)
	}
	h.rec.wait(t, 1)
	time.Sleep(200 * time.Millisecond)
	if n := dlv.calls.Load(); n != 1 {
		t.Fatalf("%d deliveries after defer-queue, want 1", n)
	}
	for _, id := range ids[1:] {
		st := status(t, h.sp, id)
		if st[0].Attempts != 0 || time.Until(st[0].Next) < 25*time.Minute {
			t.Fatalf("%s: %+v, want not attempted and due in ~30m", id, st[0])
		}
	}
}

func TestSetQueueModeAndSchedule(t *testing.T) {
	dlv := &fakeDeliverer{replies: map[string]vmta.Reply{"u@b.example": {Code: 451, Enhanced: "4.3.0", Text: "later"}}}
	h := start(t, "", dlv)
	if !h.m.SetQueueMode("b.example", vmta.ModeBackoff) {
		t.Fatal("no change")
	}
	if m := h.m.Backoff().Mode("b.example", time.Now()); m != vmta.ModeBackoff {
		t.Fatal("mode not set")
	}
	h.submit(t, "s@a.example", time.Now(), "u@b.example")
	h.rec.wait(t, 1)
	if n := h.m.Schedule("b.example", ""); n != 1 {
		t.Fatalf("Schedule rescheduled %d, want 1", n)
	}
	h.rec.wait(t, 2)
	h.m.SetQueueMode("b.example", vmta.ModeNormal)
	if c := h.m.Backoff().Counts(); c.ToBackoff != 1 || c.ToNormal != 1 {
		t.Fatalf("counts %+v", c)
	}
}

type fakeMX map[string][]string

func (f fakeMX) MX(ctx context.Context, domain string) ([]resolve.MX, error) {
	var out []resolve.MX
	for i, h := range f[domain] {
		out = append(out, resolve.MX{Host: h, Pref: uint16(10 * i)})
	}
	if len(out) == 0 {
		return nil, resolve.ErrNoMX
	}
	return out, nil
}

func (f fakeMX) Addrs(ctx context.Context, host string) ([]netip.Addr, error) { return nil, nil }

func TestMXRollup(t *testing.T) {
	res := fakeMX{
		"a.example": {"mx2.shared.example", "mx1.shared.example"},
		"b.example": {"mx1.shared.example", "mx2.shared.example"},
		"c.example": {"mx1.shared.example", "mx2.shared.example"},
		"d.example": {"mx1.shared.example", "mx2.shared.example"},
		"e.example": {"mx.e.example"},
	}
	dlv := &fakeDeliverer{}
	h := startWith(t, `<domain c.example>
  max-smtp-out 5
</domain>
<domain d.example>
  disable-mx-rollup yes
</domain>
`, dlv, Options{Resolver: res})
	// Warm the MX cache; until a lookup ends a domain has its own queue.
	for _, d := range []string{"a.example", "b.example", "c.example", "d.example", "e.example"} {
		h.m.mx.dest(h.cfg, d, "")
	}
	deadline := time.Now().Add(5 * time.Second)
	for h.m.mx.dest(h.cfg, "b.example", "") == "b.example" && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	time.Sleep(20 * time.Millisecond)
	want := map[string]string{
		"a.example": "[mx1.shared.example,mx2.shared.example]",
		"b.example": "[mx1.shared.example,mx2.shared.example]",
		"c.example": "c.example", // its own <domain> block
		"d.example": "d.example", // disable-mx-rollup
		"e.example": "[mx.e.example]",
	}
	for d, w := range want {
		if got := h.m.mx.dest(h.cfg, d, ""); got != w {
			t.Errorf("%s: queue %q, want %q", d, got, w)
		}
	}
	h.submit(t, "s@a.example", time.Now(), "x@a.example", "y@b.example")
	evs := h.rec.wait(t, 2)
	for _, ev := range evs {
		if ev.Queue.Domain != want["a.example"] {
			t.Errorf("%s: event queue %q", ev.Rcpt, ev.Queue.Domain)
		}
	}
	dlv.mu.Lock()
	defer dlv.mu.Unlock()
	if len(dlv.dests) != 2 || dlv.dests[0].Domain == dlv.dests[1].Domain {
		t.Fatalf("one transaction per recipient domain expected, got %d", len(dlv.dests))
	}
}
