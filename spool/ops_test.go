package spool

import (
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sluicemta/sluice/internal/qid"
)

func submitN(t testing.TB, s *Spool, n, rcpts, size int) []*Message {
	t.Helper()
	var out []*Message
	for i := 0; i < n; i++ {
		m := testMsg(rcpts, size)
		if err := s.Submit(m); err != nil {
			t.Fatalf("Submit: %v", err)
		}
		out = append(out, m)
	}
	return out
}

func popAll(s *Spool) []Due { return s.PopDue(time.Now(), 1<<30) }

func TestOutcomesAndAttempts(t *testing.T) {
	fs := newMemFS(1)
	s := openMem(t, fs, 1<<20)
	m := submitN(t, s, 1, 4, 500)[0]
	due := popAll(s)
	if len(due) != 4 {
		t.Fatalf("popped %d, want 4", len(due))
	}
	if again := popAll(s); len(again) != 0 {
		t.Fatalf("in-flight recipients popped again: %v", again)
	}
	next := time.Now().Add(time.Hour).Truncate(time.Second)
	var b Batch
	b.Attempt(m.ID, 1, next)
	b.Deferred(m.ID, 1, next, "451 try later")
	b.Attempt(m.ID, 2, next) // crash before the outcome: due at next, one attempt
	b.Bounced(m.ID, 3, "550 no")
	if err := s.Commit(&b); err != nil {
		t.Fatal(err)
	}
	_, st, err := s.Envelope(m.ID)
	if err != nil {
		t.Fatal(err)
	}
	want := []struct {
		status   Status
		attempts int
		active   bool
		reason   string
	}{{Queued, 0, true, ""}, {Deferred, 1, false, "451 try later"}, {Deferred, 1, true, ""}, {Bounced, 1, false, "550 no"}}
	for i, w := range want {
		if st[i].Status != w.status || st[i].Attempts != w.attempts || st[i].Active != w.active || st[i].Reason != w.reason {
			t.Errorf("rcpt %d: %+v, want %+v", i, st[i], w)
		}
	}
	if !st[1].Next.Equal(next) {
		t.Errorf("next %v want %v", st[1].Next, next)
	}
	s.Close()

	// After a restart nothing is in flight; the attempted one waits for next.
	s = openMem(t, fs, 1<<20)
	defer s.Close()
	_, st, err = s.Envelope(m.ID)
	if err != nil {
		t.Fatal(err)
	}
	if st[2].Active || st[2].Attempts != 1 || !st[2].Next.Equal(next) || st[3].Status != Bounced {
		t.Fatalf("after restart: %+v", st)
	}
	if d := s.PopDue(time.Now(), 10); len(d) != 1 || d[0].Rcpt != 0 {
		t.Fatalf("due now: %+v", d)
	}
	if d := s.PopDue(next.Add(time.Second), 10); len(d) != 2 {
		t.Fatalf("due at next: %+v", d)
	}
	// Finishing every recipient removes the message.
	b.Reset()
	b.Delivered(m.ID, 0, "250 ok")
	b.Delivered(m.ID, 1, "250 ok")
	b.Expired(m.ID, 2, "too old")
	if err := s.Commit(&b); err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.Envelope(m.ID); !errors.Is(err, ErrNotFound) {
		t.Fatalf("finished message: %v", err)
	}
	if st := s.Stats(); st.Messages != 0 || st.Recipients != 0 || len(st.Queues) != 0 {
		t.Fatalf("stats after finish: %+v", st)
	}
	// Ops on a finished message are skipped, not errors.
	b.Reset()
	b.Delivered(m.ID, 0, "late")
	if err := s.Commit(&b); err != nil {
		t.Fatal(err)
	}
}

func TestHoldReleaseDeleteReschedule(t *testing.T) {
	fs := newMemFS(2)
	s := openMem(t, fs, 1<<20)
	defer s.Close()
	ms := submitN(t, s, 4, 3, 300)
	if err := s.Hold(ms[0].ID); err != nil {
		t.Fatal(err)
	}
	due := popAll(s)
	if len(due) != 9 {
		t.Fatalf("popped %d, want 9 (held message skipped)", len(due))
	}
	for _, d := range due {
		if d.ID == ms[0].ID {
			t.Fatal("held message popped")
		}
	}
	if st := s.Stats(); st.Held != 1 || st.Messages != 4 || st.Recipients != 12 {
		t.Fatalf("stats %+v", st)
	}
	select {
	case <-s.Wake():
	default:
	}
	if err := s.Release(ms[0].ID); err != nil {
		t.Fatal(err)
	}
	select {
	case <-s.Wake():
	default:
		t.Fatal("Release did not wake")
	}
	if d := popAll(s); len(d) != 3 {
		t.Fatalf("after release popped %d", len(d))
	}
	// Defer everything of ms[1] an hour; Reschedule makes it due now.
	var b Batch
	later := time.Now().Add(time.Hour)
	for i := 0; i < 3; i++ {
		b.Deferred(ms[1].ID, i, later, "451")
		b.Deferred(ms[2].ID, i, later, "451")
	}
	if err := s.Commit(&b); err != nil {
		t.Fatal(err)
	}
	if d := s.PopDue(time.Now(), 100); len(d) != 0 {
		t.Fatalf("deferred popped early: %v", d)
	}
	// NextDue is when PopDue will find it: its time rounded up to a tick.
	if nd, ok := s.NextDue(); !ok || nd.Before(later) || nd.After(later.Add(1<<tickShift)) {
		t.Fatalf("NextDue %v %v, want about %v", nd, ok, later)
	}
	if err := s.Reschedule(ms[1].ID); err != nil {
		t.Fatal(err)
	}
	if d := s.PopDue(time.Now(), 100); len(d) != 3 || d[0].ID != ms[1].ID || d[0].Attempts != 1 {
		t.Fatalf("after Reschedule: %+v", d)
	}
	q := QueueKey{VMTA: "vmta1", Domain: "domain1.example"}
	if n := s.RescheduleQueue(q); n != 1 {
		t.Fatalf("RescheduleQueue moved %d, want 1", n)
	}
	if d := s.PopDueQueue(q, time.Now(), 10); len(d) != 1 || d[0].Queue != q {
		t.Fatalf("PopDueQueue: %+v", d)
	}
	if n := s.RescheduleAll(); n != 2 {
		t.Fatalf("RescheduleAll moved %d, want 2", n)
	}
	// Return puts an in-flight recipient back.
	d := s.PopDue(time.Now(), 1)
	s.Return(d[0], time.Now().Add(-time.Second))
	if d2 := s.PopDue(time.Now(), 10); len(d2) != 2 {
		t.Fatalf("after Return: %+v", d2)
	}
	st := s.Stats()
	if qs := st.Queues[q]; qs.Recipients != 4 || qs.Active != 4 {
		t.Fatalf("queue stats %+v", qs)
	}
	// Walk sees every message with its recipients.
	n := 0
	s.Walk(func(info MessageInfo) bool {
		n++
		if len(info.Recipients) != 3 || !strings.HasPrefix(info.Recipients[0].Addr, "user0@") || info.Size != 300 {
			t.Errorf("walk info %+v", info)
		}
		return true
	})
	if n != 4 {
		t.Fatalf("walked %d", n)
	}
	if err := s.Delete(ms[3].ID); err != nil {
		t.Fatal(err)
	}
	if err := s.Delete(ms[3].ID); !errors.Is(err, ErrNotFound) {
		t.Fatalf("second delete: %v", err)
	}
	if n, err := s.DeleteQueue(QueueKey{VMTA: "vmta1", Domain: "domain0.example"}); err != nil || n != 3 {
		t.Fatalf("DeleteQueue = %d, %v", n, err)
	}
	s2 := submitN(t, s, 2, 1, 10)
	if n, err := s.DeleteAll(); err != nil || n != 2 {
		t.Fatalf("DeleteAll = %d, %v", n, err)
	}
	_ = s2
	if st := s.Stats(); st.Messages != 0 || st.Recipients != 0 {
		t.Fatalf("stats after deletes: %+v", st)
	}
}

func TestDeletesSurviveRestart(t *testing.T) {
	fs := newMemFS(3)
	s := openMem(t, fs, 1<<20)
	ms := submitN(t, s, 3, 2, 100)
	if err := s.Delete(ms[0].ID); err != nil {
		t.Fatal(err)
	}
	if err := s.Hold(ms[1].ID); err != nil {
		t.Fatal(err)
	}
	s.Close()
	s = openMem(t, fs, 1<<20)
	defer s.Close()
	if _, _, err := s.Envelope(ms[0].ID); !errors.Is(err, ErrNotFound) {
		t.Fatalf("deleted message back: %v", err)
	}
	var held []string
	s.Walk(func(i MessageInfo) bool {
		if i.Held {
			held = append(held, i.ID)
		}
		return true
	})
	if len(held) != 1 || held[0] != ms[1].ID {
		t.Fatalf("held after restart: %v", held)
	}
}

func TestSecondOpenLocked(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir, Options{SegmentSize: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if _, err := Open(dir, Options{SegmentSize: 1 << 20}); !errors.Is(err, ErrLocked) {
		t.Fatalf("second Open: %v, want ErrLocked", err)
	}
}

func TestBadInput(t *testing.T) {
	s := openMem(t, newMemFS(4), 1<<20)
	defer s.Close()
	m := testMsg(1, 10)
	m.ID = "not-a-qid"
	if err := s.Submit(m); err == nil {
		t.Fatal("bad id accepted")
	}
	m = testMsg(0, 10)
	if err := s.Submit(m); err == nil {
		t.Fatal("no recipients accepted")
	}
	m = testMsg(1, 2<<20)
	if err := s.Submit(m); err == nil {
		t.Fatal("message larger than a segment accepted")
	}
	m = testMsg(1, 10)
	if err := s.Submit(m); err != nil {
		t.Fatal(err)
	}
	if err := s.Submit(m); err == nil {
		t.Fatal("duplicate id accepted")
	}
	var b Batch
	b.Delivered(m.ID, 5, "x")
	if err := s.Commit(&b); err == nil {
		t.Fatal("recipient out of range accepted")
	}
}

func TestNoSpaceReserve(t *testing.T) {
	fs := newMemFS(5)
	const seg = 64 << 10
	fs.capacity = 4 * seg
	s, err := Open("/spool", Options{SegmentSize: seg, FS: fs, Reserve: seg + seg/2, Logf: t.Logf})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	<-s.Recovered()
	var ok []*Message
	var noSpace error
	for i := 0; i < 200; i++ {
		m := testMsg(1, 2000)
		if err := s.Submit(m); err != nil {
			noSpace = err
			break
		}
		ok = append(ok, m)
	}
	if !errors.Is(noSpace, ErrNoSpace) {
		t.Fatalf("want ErrNoSpace, got %v after %d", noSpace, len(ok))
	}
	// State records and a reserve-using DSN still go through.
	var b Batch
	for _, m := range ok[:20] {
		b.Bounced(m.ID, 0, "550 gone")
	}
	dsn := testMsg(1, 2000)
	b.Submit(dsn, true)
	if err := s.Commit(&b); err != nil {
		t.Fatalf("reserve commit: %v", err)
	}
	if _, _, err := s.Envelope(dsn.ID); err != nil {
		t.Fatal(err)
	}
	// Space returns: submissions work again.
	fs.mu.Lock()
	fs.capacity = 1 << 30
	fs.mu.Unlock()
	if err := s.Submit(testMsg(1, 2000)); err != nil {
		t.Fatalf("after space returned: %v", err)
	}
	for _, m := range ok[20:] {
		if _, _, err := s.Envelope(m.ID); err != nil {
			t.Fatalf("accepted message lost: %v", err)
		}
	}
}

func TestFsyncFailureAbandonsSegment(t *testing.T) {
	fs := newMemFS(6)
	s := openMem(t, fs, 1<<20)
	before := submitN(t, s, 5, 1, 500)
	var fail sync.Once
	failing := true
	fs.mu.Lock()
	fs.failSync = func(string) bool {
		f := false
		fail.Do(func() { f = failing })
		return f
	}
	fs.mu.Unlock()
	bad := testMsg(1, 500)
	if err := s.Submit(bad); err == nil {
		t.Fatal("Submit succeeded although fdatasync failed")
	}
	if _, _, err := s.Envelope(bad.ID); !errors.Is(err, ErrNotFound) {
		t.Fatalf("failed message visible: %v", err)
	}
	after := submitN(t, s, 5, 1, 500)
	s.Close()
	s = openMem(t, fs, 1<<20)
	defer s.Close()
	for _, m := range append(before, after...) {
		if got := mustContent(t, s, m.ID); string(got) != string(m.Content) {
			t.Fatalf("message %s differs", m.ID)
		}
	}
	if _, _, err := s.Envelope(bad.ID); !errors.Is(err, ErrNotFound) {
		t.Fatalf("message from the abandoned tail recovered: %v", err)
	}
}

func TestTornTail(t *testing.T) {
	fs := newMemFS(7)
	s := openMem(t, fs, 1<<20)
	ms := submitN(t, s, 10, 1, 300)
	s.Close()
	// Tear the last record: flip a byte in its body on "disk".
	var victim *memFile
	for _, f := range fs.files {
		if victim == nil || f.name > victim.name {
			if len(f.synced) > headerSize && f.synced[headerSize] != 0 {
				victim = f
			}
		}
	}
	last := ms[len(ms)-1]
	i := strings.LastIndex(string(victim.synced), string(last.Content[:40]))
	victim.synced[i] ^= 0xff
	victim.data[i] ^= 0xff
	var logs []string
	var mu sync.Mutex
	s2, err := Open("/spool", Options{SegmentSize: 1 << 20, FS: fs, Logf: func(f string, a ...any) {
		mu.Lock()
		logs = append(logs, f)
		mu.Unlock()
	}})
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	<-s2.Recovered()
	for _, m := range ms[:len(ms)-1] {
		if got := mustContent(t, s2, m.ID); string(got) != string(m.Content) {
			t.Fatalf("record before the torn tail lost or changed")
		}
	}
	if _, _, err := s2.Envelope(last.ID); !errors.Is(err, ErrNotFound) {
		t.Fatalf("corrupt record accepted: %v", err)
	}
	mu.Lock()
	defer mu.Unlock()
	if !strings.Contains(strings.Join(logs, "\n"), "torn tail") {
		t.Fatalf("torn tail not reported: %q", logs)
	}
}

// TestFakeClockInThePast: a caller whose clock is behind the wall clock
// (a test's fake clock) still sees deferrals honoured on its own clock.
func TestFakeClockInThePast(t *testing.T) {
	s := openMem(t, newMemFS(31), 1<<20)
	defer s.Close()
	now := time.Date(2020, 1, 1, 0, 0, 0, 0, time.UTC)
	m := submitN(t, s, 1, 1, 100)[0]
	if d := s.PopDue(now, 10); len(d) != 1 {
		t.Fatalf("new message not due on a past clock: %v", d)
	}
	var b Batch
	b.Deferred(m.ID, 0, now.Add(time.Hour), "451")
	if err := s.Commit(&b); err != nil {
		t.Fatal(err)
	}
	if d := s.PopDue(now.Add(30*time.Minute), 10); len(d) != 0 {
		t.Fatalf("deferred recipient popped 30 minutes early: %v", d)
	}
	if nd, ok := s.NextDue(); !ok || nd.Before(now.Add(59*time.Minute)) || nd.After(now.Add(61*time.Minute)) {
		t.Fatalf("NextDue = %v, %v", nd, ok)
	}
	if d := s.PopDue(now.Add(time.Hour+time.Second), 10); len(d) != 1 {
		t.Fatalf("deferred recipient not due after an hour: %v", d)
	}
}

// TestOpenOnFullDisk: with no room for a segment the spool still opens,
// serves what it holds, refuses appends with ErrNoSpace, and writes again
// once space returns.
func TestOpenOnFullDisk(t *testing.T) {
	fs := newMemFS(41)
	const seg = 64 << 10
	s := openMem(t, fs, seg)
	m := submitN(t, s, 1, 1, 100)[0]
	s.Close()
	fs.mu.Lock()
	// No spare kept from the run before either (keepSpare): the disk
	// filled while the spool was stopped and its spare went.
	for _, name := range fs.spareFiles() {
		delete(fs.files, name)
		delete(fs.durable, name)
	}
	fs.recount()
	fs.capacity = fs.used + seg/2
	fs.mu.Unlock()
	s, err := Open("/spool", Options{SegmentSize: seg, FS: fs, Reserve: 1, Logf: t.Logf})
	if err != nil {
		t.Fatalf("Open on a full disk: %v", err)
	}
	defer s.Close()
	<-s.Recovered()
	if got := mustContent(t, s, m.ID); string(got) != string(m.Content) {
		t.Fatal("content differs")
	}
	if err := s.Submit(testMsg(1, 100)); !errors.Is(err, ErrNoSpace) {
		t.Fatalf("Submit on a full disk: %v, want ErrNoSpace", err)
	}
	fs.mu.Lock()
	fs.capacity = 0
	fs.mu.Unlock()
	if err := s.Submit(testMsg(1, 100)); err != nil {
		t.Fatalf("Submit after space returned: %v", err)
	}
}

func TestSubmitHeld(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir, Options{SegmentSize: 1 << 20, Reserve: 1})
	if err != nil {
		t.Fatal(err)
	}
	m := &Message{ID: qid.New(time.Now()), Arrival: time.Now(), Sender: "a@x", Recipients: []Recipient{{Addr: "b@y"}}, Content: []byte("Subject: held\r\n\r\nx\r\n"), Held: true}
	if err := s.Submit(m); err != nil {
		t.Fatal(err)
	}
	if due := s.PopDue(time.Now().Add(time.Hour), 10); len(due) != 0 {
		t.Fatalf("a message submitted held was handed out: %v", due)
	}
	s.Close()
	// The hold is durable: after a restart the message is still held.
	s, err = Open(dir, Options{SegmentSize: 1 << 20, Reserve: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	<-s.Recovered()
	if due := s.PopDue(time.Now().Add(time.Hour), 10); len(due) != 0 {
		t.Fatalf("held message handed out after restart: %v", due)
	}
	var held bool
	s.Walk(func(info MessageInfo) bool { held = info.ID == m.ID && info.Held; return true })
	if !held {
		t.Fatal("Walk does not show the message held")
	}
	if err := s.Release(m.ID); err != nil {
		t.Fatal(err)
	}
	if due := s.PopDue(time.Now().Add(time.Hour), 10); len(due) != 1 {
		t.Fatalf("released message not due: %v", due)
	}
}
