package vmta

import (
	"testing"
	"time"
)

// TestGCRANeverExceeds drives one key with a request every millisecond of
// a simulated clock and checks that no window of Per holds more than N.
func TestGCRANeverExceeds(t *testing.T) {
	for _, r := range []Rate{{N: 20, Per: time.Second}, {N: 7, Per: time.Second, Burst: 3}, {N: 100, Per: time.Minute}} {
		start := time.Unix(1000, 0)
		l := NewLocalLimiter(start)
		var got []time.Time
		for now := start; now.Before(start.Add(3 * r.Per)); now = now.Add(time.Millisecond) {
			if l.Take(now, RateTake{Key: "k", Rate: r, N: 1}) == 0 {
				got = append(got, now)
			}
		}
		for i := range got {
			n := 0
			for j := i; j < len(got) && got[j].Sub(got[i]) < r.Per; j++ {
				n++
			}
			if n > r.N {
				t.Fatalf("%+v: %d events in one window from %v", r, n, got[i].Sub(start))
			}
		}
		// Sustained: over 3 periods, at least 3N-1 (the first event waits one
		// interval: a restart may have just spent it).
		if len(got) < 3*r.N-1 {
			t.Fatalf("%+v: only %d events in 3 periods", r, len(got))
		}
	}
}

func TestTakeAllOrNothing(t *testing.T) {
	now := time.Unix(1000, 0)
	l := NewLocalLimiter(now.Add(-time.Hour))
	fast := Rate{N: 1000, Per: time.Second}
	slow := Rate{N: 1, Per: time.Second}
	if w := l.Take(now, RateTake{"a", fast, 1}, RateTake{"b", slow, 1}); w != 0 {
		t.Fatalf("first take refused (%v)", w)
	}
	// b is spent: the pair is refused and a is not charged.
	if w := l.Take(now, RateTake{"a", fast, 1}, RateTake{"b", slow, 1}); w <= 0 || w > time.Second {
		t.Fatalf("second take: wait %v, want (0,1s]", w)
	}
	if got := l.tat["a"]; got != now.Add(time.Millisecond) {
		t.Fatalf("a charged for a refused take: %v", got.Sub(now))
	}
	if w := l.Take(now.Add(time.Second), RateTake{"b", slow, 1}); w != 0 {
		t.Fatalf("after one interval: wait %v", w)
	}
}

func TestSlots(t *testing.T) {
	l := NewLocalLimiter(time.Now())
	q := Slot{"q", 2}
	ip := Slot{"ip", 3}
	if l.Acquire(q, ip) != -1 || l.Acquire(q, ip) != -1 {
		t.Fatal("refused below the limits")
	}
	if i := l.Acquire(q, ip); i != 0 {
		t.Fatalf("third on q: index %d, want 0", i)
	}
	if l.InUse("ip") != 2 {
		t.Fatalf("ip charged for a refused acquire: %d", l.InUse("ip"))
	}
	if l.Acquire(Slot{"other", 5}, ip) != -1 {
		t.Fatal("ip has one slot left")
	}
	if i := l.Acquire(Slot{"other", 5}, ip); i != 1 {
		t.Fatalf("ip full: index %d, want 1", i)
	}
	l.Release(q, ip)
	if l.Acquire(q, ip) != -1 {
		t.Fatal("release did not free")
	}
	if l.Acquire(Slot{"free", 0}) != -1 {
		t.Fatal("Max 0 is no limit")
	}
}

// The first event after a (re)start waits one interval: the previous
// process may have just sent.
func TestRestartGuard(t *testing.T) {
	start := time.Unix(1000, 0)
	l := NewLocalLimiter(start)
	r := Rate{N: 10, Per: time.Second}
	if w := l.Take(start, RateTake{"k", r, 1}); w != 100*time.Millisecond {
		t.Fatalf("wait %v, want 100ms", w)
	}
	if w := l.Take(start.Add(time.Hour), RateTake{"new", r, 1}); w != 0 {
		t.Fatalf("a key first seen long after start waited %v", w)
	}
}

func BenchmarkTake(b *testing.B) {
	l := NewLocalLimiter(time.Now())
	r := Rate{N: 1 << 30, Per: time.Second}
	now := time.Now()
	for i := 0; i < b.N; i++ {
		l.Take(now, RateTake{"q:example.com/a", r, 1}, RateTake{"ip:127.0.0.2", r, 1})
	}
}

// With Slack, events woken late keep the schedule, and a window still
// holds no more than (Per+Slack)/interval + 1.
func TestSlackKeepsPace(t *testing.T) {
	start := time.Unix(1000, 0)
	l := NewLocalLimiter(start.Add(-time.Hour))
	r := Rate{N: 20, Per: 1040 * time.Millisecond, Slack: 20 * time.Millisecond}
	now := start
	var got []time.Time
	for len(got) < 200 {
		w := l.Take(now, RateTake{"k", r, 1})
		if w == 0 {
			got = append(got, now)
			continue
		}
		// Wake late by 0-15ms, as a loaded scheduler does.
		now = now.Add(w + time.Duration(len(got)%4)*5*time.Millisecond)
	}
	span := got[len(got)-1].Sub(got[0])
	if rate := float64(len(got)-1) / span.Seconds(); rate < 19 {
		t.Fatalf("sustained %.2f/s, want >= 19 (lateness lost)", rate)
	}
	for i := range got {
		n := 0
		for j := i; j < len(got) && got[j].Sub(got[i]) < time.Second; j++ {
			n++
		}
		if n > 20 {
			t.Fatalf("%d events in 1s", n)
		}
	}
}

// A reload that changes a rate keeps the key's schedule: no fresh burst,
// the new interval from the next event on.
func TestRateChangeKeepsSchedule(t *testing.T) {
	start := time.Unix(1000, 0)
	l := NewLocalLimiter(start.Add(-time.Hour))
	slow := Rate{N: 1, Per: time.Second}
	fast := Rate{N: 10, Per: time.Second}
	if l.Take(start, RateTake{"k", slow, 1}) != 0 {
		t.Fatal("first take refused")
	}
	// Reloaded to 10/s just after: the next event is still due at +1s.
	if w := l.Take(start.Add(10*time.Millisecond), RateTake{"k", fast, 1}); w != 990*time.Millisecond {
		t.Fatalf("after a reload: wait %v, want 990ms", w)
	}
	if l.Take(start.Add(time.Second), RateTake{"k", fast, 1}) != 0 {
		t.Fatal("refused at the scheduled time")
	}
	if w := l.Take(start.Add(time.Second), RateTake{"k", fast, 1}); w != 100*time.Millisecond {
		t.Fatalf("then the new interval: wait %v, want 100ms", w)
	}
}
