package qmgr

import (
	"bytes"
	"context"
	"fmt"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sluicemta/sluice/internal/config"
	"github.com/sluicemta/sluice/internal/qid"
	"github.com/sluicemta/sluice/spool"
	"github.com/sluicemta/sluice/vmta"
)

// fakeDeliverer answers each recipient from a table keyed by address
// (default 250) and tracks concurrency per destination domain.
type fakeDeliverer struct {
	replies map[string]vmta.Reply
	delay   time.Duration
	dsn     bool          // the next hop offers DSN
	defer_  time.Duration // Result.QueueDefer (a 421)
	ip      netip.Addr    // Result.IP and Port 25 when set
	block   chan struct{} // when set, Deliver waits for it or for ctx

	mu      sync.Mutex
	active  map[string]int
	peak    map[string]int
	calls   atomic.Int64
	content [][]byte
	dests   []vmta.Destination
	probes  [][]string // the recipients of each probe (Message.Probe)
}

func (f *fakeDeliverer) Deliver(ctx context.Context, dest vmta.Destination, msg *vmta.Message) vmta.Result {
	f.calls.Add(1)
	f.mu.Lock()
	if f.active == nil {
		f.active, f.peak = map[string]int{}, map[string]int{}
	}
	f.active[dest.Domain]++
	if f.active[dest.Domain] > f.peak[dest.Domain] {
		f.peak[dest.Domain] = f.active[dest.Domain]
	}
	if msg.Probe {
		var rcpts []string
		for _, r := range msg.Rcpts {
			rcpts = append(rcpts, r.Addr)
		}
		f.probes = append(f.probes, rcpts)
	} else {
		buf := make([]byte, msg.Size)
		msg.Content.ReadAt(buf, 0)
		f.content = append(f.content, buf)
	}
	f.dests = append(f.dests, dest)
	f.mu.Unlock()
	if f.delay > 0 {
		time.Sleep(f.delay)
	}
	res := vmta.Result{Host: "mx." + dest.Domain, DSN: f.dsn, QueueDefer: f.defer_}
	if f.block != nil {
		select {
		case <-f.block:
		case <-ctx.Done():
			// What a session cut by shutdown reports.
			f.mu.Lock()
			f.active[dest.Domain]--
			f.mu.Unlock()
			for range msg.Rcpts {
				res.Rcpts = append(res.Rcpts, vmta.RcptResult{Reply: vmta.Reply{Code: 451, Enhanced: "4.4.2", Text: "lost connection"}, Stage: vmta.StageGreeting, Synthesized: true})
			}
			return res
		}
	}
	if f.ip.IsValid() {
		res.IP, res.Port = f.ip, 25
	}
	for _, r := range msg.Rcpts {
		rep, ok := f.replies[r.Addr]
		if !ok {
			rep = vmta.Reply{Code: 250, Enhanced: "2.0.0", Text: "ok"}
		}
		stage := vmta.StageDot
		if msg.Probe {
			stage = vmta.StageRcpt // a probe ends after RCPT
		}
		res.Rcpts = append(res.Rcpts, vmta.RcptResult{Reply: rep, Stage: stage})
	}
	f.mu.Lock()
	f.active[dest.Domain]--
	f.mu.Unlock()
	return res
}

type recorder struct {
	mu     sync.Mutex
	events []*Event
	verify []*Event // RecordVerify
}

func (r *recorder) RecordVerify(ev *Event) {
	r.mu.Lock()
	r.verify = append(r.verify, ev)
	r.mu.Unlock()
}

func (r *recorder) Record(ev *Event) {
	r.mu.Lock()
	r.events = append(r.events, ev)
	r.mu.Unlock()
}

func (r *recorder) wait(t *testing.T, n int) []*Event {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		r.mu.Lock()
		if len(r.events) >= n {
			out := append([]*Event(nil), r.events...)
			r.mu.Unlock()
			return out
		}
		r.mu.Unlock()
		time.Sleep(5 * time.Millisecond)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	t.Fatalf("got %d events, want %d", len(r.events), n)
	return nil
}

const baseConfig = `
host-name mx.test.example
postmaster postmaster@test.example
<domain *>
    retry-after 10m
    bounce-after 4d12h
    max-smtp-out 2
</domain>
`

type harness struct {
	m   *Manager
	sp  *spool.Spool
	rec *recorder
	dlv *fakeDeliverer
	cfg *config.Config
}

func start(t *testing.T, cfgText string, dlv *fakeDeliverer) *harness {
	t.Helper()
	return startWith(t, cfgText, dlv, Options{})
}

// startWith is start with extra Options (Sign, Resolver, ...).
func startWith(t *testing.T, cfgText string, dlv *fakeDeliverer, opt Options) *harness {
	t.Helper()
	cfg, err := config.Parse("test.conf", []byte(baseConfig+cfgText))
	if err != nil {
		t.Fatalf("config: %v", err)
	}
	sp, err := spool.Open(t.TempDir(), spool.Options{SegmentSize: 1 << 20, Reserve: 1})
	if err != nil {
		t.Fatal(err)
	}
	h := &harness{sp: sp, rec: &recorder{}, dlv: dlv, cfg: cfg}
	opt.Spool, opt.Config, opt.Deliver, opt.Recorder, opt.Logf = sp, func() *config.Config { return cfg }, dlv, h.rec, t.Logf
	m := New(opt)
	h.m = m
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); m.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		<-done
		sp.Close()
	})
	return h
}

func (h *harness) submit(t *testing.T, sender string, arrival time.Time, rcpts ...string) string {
	t.Helper()
	id := qid.New(time.Now())
	m := &spool.Message{
		ID: id, Arrival: arrival, Sender: sender,
		Content: []byte("From: <" + sender + ">\r\nSubject: test " + id + "\r\nMessage-ID: <" + id + "@test>\r\n\r\nbody\r\n"),
	}
	for _, r := range rcpts {
		m.Recipients = append(m.Recipients, spool.Recipient{Addr: r})
	}
	if err := h.sp.Submit(m); err != nil {
		t.Fatal(err)
	}
	return id
}

func status(t *testing.T, sp *spool.Spool, id string) []spool.RcptState {
	t.Helper()
	_, st, err := sp.Envelope(id)
	if err != nil {
		return nil // finished and gone
	}
	return st
}

func TestOutcomes(t *testing.T) {
	dlv := &fakeDeliverer{replies: map[string]vmta.Reply{
		"bad@b.example":    {Code: 550, Enhanced: "5.1.1", Text: "no such user"},
		"later@b.example":  {Code: 450, Enhanced: "4.2.0", Text: "greylisted"},
		"bad@null.example": {Code: 550, Enhanced: "5.1.1", Text: "no such user"},
	}}
	h := start(t, "", dlv)
	now := time.Now()
	id := h.submit(t, "sender@a.example", now, "good@b.example", "bad@b.example", "later@b.example")
	evs := h.rec.wait(t, 3)

	got := map[string]string{}
	var dsnID string
	for _, ev := range evs {
		got[ev.Rcpt] = ev.Status
		if ev.Rcpt == "bad@b.example" {
			dsnID = ev.DSNQueueID
		}
	}
	want := map[string]string{"good@b.example": "sent", "bad@b.example": "bounced", "later@b.example": "deferred"}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s: status %q, want %q", k, got[k], v)
		}
	}
	if dsnID == "" {
		t.Fatal("bounce queued no DSN")
	}
	st := status(t, h.sp, id)
	if len(st) != 3 {
		t.Fatalf("message gone or wrong: %v", st)
	}
	if st[2].Status != spool.Deferred || st[2].Attempts != 1 {
		t.Errorf("deferred recipient state %+v", st[2])
	}
	if d := st[2].Next.Sub(now); d < 8*time.Minute || d > 12*time.Minute {
		t.Errorf("next try in %v, want about 10m", d)
	}

	// The DSN goes to the sender with a null envelope sender and is then
	// delivered by the same loop: a 4th event, to sender@a.example.
	evs = h.rec.wait(t, 4)
	dsnEv := evs[3]
	if dsnEv.Rcpt != "sender@a.example" || dsnEv.Sender != "" || dsnEv.QueueID != dsnID {
		t.Fatalf("DSN event %+v", dsnEv)
	}
	h.dlv.mu.Lock()
	last := h.dlv.content[len(h.dlv.content)-1]
	h.dlv.mu.Unlock()
	for _, want := range []string{"multipart/report", "report-type=delivery-status", "Final-Recipient: rfc822; bad@b.example", "Action: failed", "Status: 5.1.1", "Subject: test " + id} {
		if !bytes.Contains(last, []byte(want)) {
			t.Errorf("DSN lacks %q:\n%s", want, last)
		}
	}
}

// A bounce of null-sender mail cannot go to its sender: it is a double
// bounce, reported to the postmaster; a double bounce that fails itself
// (the postmaster bounces) ends the chain.
func TestDoubleBounceGoesToPostmasterOnce(t *testing.T) {
	dlv := &fakeDeliverer{replies: map[string]vmta.Reply{
		"bad@b.example":           {Code: 550, Enhanced: "5.1.1", Text: "no"},
		"postmaster@test.example": {Code: 550, Enhanced: "5.1.1", Text: "no postmaster here"},
	}}
	h := start(t, "", dlv)
	h.submit(t, "", time.Now(), "bad@b.example")
	evs := h.rec.wait(t, 2)
	if evs[0].Status != "bounced" || evs[0].DSNQueueID == "" {
		t.Fatalf("first event %+v", evs[0])
	}
	if evs[1].Rcpt != "postmaster@test.example" || evs[1].Status != "bounced" || evs[1].DSNQueueID != "" {
		t.Fatalf("double bounce event %+v", evs[1])
	}
	time.Sleep(200 * time.Millisecond)
	if n := dlv.calls.Load(); n != 2 {
		t.Fatalf("%d deliveries, want 2 (the bounce, the double bounce, nothing after)", n)
	}
}

func TestExpiry(t *testing.T) {
	dlv := &fakeDeliverer{replies: map[string]vmta.Reply{"slow@b.example": {Code: 451, Enhanced: "4.4.1", Text: "try later"}}}
	h := start(t, "", dlv)
	h.submit(t, "s@a.example", time.Now().Add(-5*24*time.Hour), "slow@b.example")
	evs := h.rec.wait(t, 2)
	if evs[0].Status != "expired" || evs[0].DSNQueueID == "" {
		t.Fatalf("event %+v", evs[0])
	}
	if evs[1].Rcpt != "s@a.example" {
		t.Fatalf("expiry DSN went to %q", evs[1].Rcpt)
	}
}

func TestMaxSMTPOut(t *testing.T) {
	dlv := &fakeDeliverer{delay: 30 * time.Millisecond}
	h := start(t, "<domain c.example>\n max-smtp-out 3\n</domain>\n", dlv)
	for i := 0; i < 30; i++ {
		h.submit(t, "s@a.example", time.Now(), fmt.Sprintf("r%d@c.example", i))
	}
	h.rec.wait(t, 30)
	dlv.mu.Lock()
	defer dlv.mu.Unlock()
	if p := dlv.peak["c.example"]; p != 3 {
		t.Fatalf("peak concurrency %d, want exactly 3", p)
	}
}

func TestRecipientsOfOneMessageShareATransaction(t *testing.T) {
	dlv := &fakeDeliverer{}
	h := start(t, "", dlv)
	var rcpts []string
	for i := 0; i < 5; i++ {
		rcpts = append(rcpts, fmt.Sprintf("u%d@d.example", i))
	}
	h.submit(t, "s@a.example", time.Now(), rcpts...)
	h.rec.wait(t, 5)
	if n := dlv.calls.Load(); n != 1 {
		t.Fatalf("%d transactions for one message to one domain, want 1", n)
	}
}

func TestRetryDelay(t *testing.T) {
	list := []time.Duration{time.Minute, 5 * time.Minute, time.Hour}
	for _, tc := range []struct {
		attempts int
		want     time.Duration
	}{{1, time.Minute}, {2, 5 * time.Minute}, {3, time.Hour}, {9, time.Hour}} {
		if got := retryDelay(list, tc.attempts); got != tc.want {
			t.Errorf("attempt %d: %v, want %v", tc.attempts, got, tc.want)
		}
	}
	for i := 0; i < 100; i++ {
		d := retryDelay([]time.Duration{10 * time.Minute}, 1)
		if d < 9*time.Minute || d > 11*time.Minute {
			t.Fatalf("jittered delay %v outside ±10%%", d)
		}
	}
}

// NOTIFY=SUCCESS: where the next hop offers DSN the request was passed
// on and the notice is its to send; otherwise sluice sends "relayed".
func TestRelayedDSNOnlyWhenNextHopLacksDSN(t *testing.T) {
	for _, tc := range []struct {
		dsn  bool
		want int // deliveries: the message, plus the relayed DSN
	}{{false, 2}, {true, 1}} {
		dlv := &fakeDeliverer{dsn: tc.dsn}
		h := start(t, "", dlv)
		id := qid.New(time.Now())
		m := &spool.Message{ID: id, Arrival: time.Now(), Sender: "s@a.example",
			Recipients: []spool.Recipient{{Addr: "r@b.example", Notify: spool.NotifySuccess}},
			Content:    []byte("Subject: x\r\n\r\nbody\r\n")}
		if err := h.sp.Submit(m); err != nil {
			t.Fatal(err)
		}
		h.rec.wait(t, tc.want)
		time.Sleep(200 * time.Millisecond)
		if n := dlv.calls.Load(); int(n) != tc.want {
			t.Errorf("next hop offers DSN=%v: %d deliveries, want %d", tc.dsn, n, tc.want)
		}
		if !tc.dsn {
			dlv.mu.Lock()
			last := dlv.content[len(dlv.content)-1]
			dlv.mu.Unlock()
			if !bytes.Contains(last, []byte("Action: relayed")) {
				t.Errorf("success notice is not a relayed DSN:\n%s", last)
			}
		}
	}
}

// A 421 holds back the rest of the queue for Result.QueueDefer.
func TestQueueDeferOn421(t *testing.T) {
	dlv := &fakeDeliverer{defer_: time.Hour, replies: map[string]vmta.Reply{"r0@c.example": {Code: 421, Enhanced: "4.7.0", Text: "closing"}}}
	h := start(t, "<domain c.example>\n max-smtp-out 1\n</domain>\n", dlv)
	for i := 0; i < 5; i++ {
		h.submit(t, "s@a.example", time.Now(), fmt.Sprintf("r%d@c.example", i))
	}
	h.rec.wait(t, 1)
	time.Sleep(300 * time.Millisecond)
	if n := dlv.calls.Load(); n != 1 {
		t.Fatalf("%d deliveries after a 421, want 1 (the queue is held back)", n)
	}
}

// postsuper -e: every waiting recipient expires at once, with one DSN.
func TestExpireByAdministrator(t *testing.T) {
	dlv := &fakeDeliverer{replies: map[string]vmta.Reply{
		"a@slow.example": {Code: 451, Enhanced: "4.4.1", Text: "later"},
		"b@slow.example": {Code: 451, Enhanced: "4.4.1", Text: "later"},
	}}
	h := start(t, "", dlv)
	id := h.submit(t, "s@a.example", time.Now(), "a@slow.example", "b@slow.example")
	h.rec.wait(t, 2) // both deferred
	if err := h.m.Expire(id); err != nil {
		t.Fatal(err)
	}
	evs := h.rec.wait(t, 3) // the DSN is delivered
	if evs[2].Rcpt != "s@a.example" || evs[2].Sender != "" {
		t.Fatalf("DSN event %+v", evs[2])
	}
	h.dlv.mu.Lock()
	dsn := h.dlv.content[len(h.dlv.content)-1]
	h.dlv.mu.Unlock()
	for _, want := range []string{"Final-Recipient: rfc822; a@slow.example", "Final-Recipient: rfc822; b@slow.example", "Status: 5.4.7"} {
		if !bytes.Contains(dsn, []byte(want)) {
			t.Errorf("DSN lacks %q:\n%s", want, dsn)
		}
	}
	if _, _, err := h.sp.Envelope(id); err == nil {
		t.Error("the expired message is still queued")
	}
	if err := h.m.Expire(id); err == nil {
		t.Error("expiring a finished message succeeded")
	}
}
