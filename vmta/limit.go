package vmta

import (
	"sync"
	"time"
)

// Rate is N events per Per, spent by the generic cell rate algorithm
// (GCRA): one event every Per/N, with Burst events allowed back to back
// (0 or 1: none). The zero Rate is unlimited.
type Rate struct {
	N     int
	Per   time.Duration
	Burst int
	// Slack forgives lateness: an event at most Slack after its scheduled
	// time keeps the schedule (the next is due one interval after the
	// scheduled time, not after now), so a caller woken late by the
	// scheduler does not lose that time for good. A window of Per then
	// holds at most (Per+Slack)/interval + 1 events: keep Slack below the
	// margin between the real limit and N.
	Slack time.Duration
}

// Unlimited reports whether r limits nothing.
func (r Rate) Unlimited() bool { return r.N <= 0 || r.Per <= 0 }

// interval is the time one event costs.
func (r Rate) interval() time.Duration { return r.Per / time.Duration(r.N) }

// tolerance is how far ahead of now the schedule may run (the burst).
func (r Rate) tolerance() time.Duration {
	if r.Burst <= 1 {
		return 0
	}
	return time.Duration(r.Burst-1) * r.interval()
}

// RateTake asks for N units (recipients, bytes, connections) of Rate
// under Key.
type RateTake struct {
	Key  string
	Rate Rate
	N    int
}

// Slot asks for one of Max concurrent slots under Key (Max <= 0: no limit).
type Slot struct {
	Key string
	Max int
}

// Limiter is the one store of every delivery limit, keyed by source IP,
// destination queue or both (the caller builds the keys). It is an
// interface so a store shared between hosts can replace the local one.
// Each call is all-or-nothing: a refused call changes nothing, so a
// caller never holds half of what it needs.
type Limiter interface {
	// Take spends every request and returns 0, or spends nothing and
	// returns how long to wait before asking again.
	Take(now time.Time, reqs ...RateTake) time.Duration
	// Acquire takes one slot of every request and returns -1, or takes
	// nothing and returns the index of the first full one.
	Acquire(slots ...Slot) int
	// Release gives back slots taken by Acquire.
	Release(slots ...Slot)
}

// LocalLimiter is the in-process Limiter.
//
// Rates are never exceeded across a restart: a key first seen within one
// interval of the limiter's creation is treated as if its last event (and
// burst) had just been spent, since the previous process may have spent it.
// A reload changing a rate keeps each key's schedule, so the new rate
// applies from the next event on without a fresh burst.
type LocalLimiter struct {
	mu    sync.Mutex
	start time.Time
	tat   map[string]time.Time // theoretical arrival time per rate key
	used  map[string]int       // slots in use per key
	sweep time.Time
}

// NewLocalLimiter returns an empty limiter created at now.
func NewLocalLimiter(now time.Time) *LocalLimiter {
	return &LocalLimiter{start: now, tat: map[string]time.Time{}, used: map[string]int{}, sweep: now}
}

// Take implements Limiter. A request for more units than its burst is
// granted when the key's schedule has caught up with now (it then runs
// into debt): callers that must never exceed a rate in any window ask for
// at most Burst units at a time.
func (l *LocalLimiter) Take(now time.Time, reqs ...RateTake) time.Duration {
	l.mu.Lock()
	defer l.mu.Unlock()
	var wait time.Duration
	for _, r := range reqs {
		if r.Rate.Unlimited() || r.N <= 0 {
			continue
		}
		tat := l.tatOf(r.Key, r.Rate)
		if tat.Before(now) {
			tat = now
		}
		if w := tat.Sub(now) - r.Rate.tolerance(); w > wait {
			wait = w
		}
	}
	if wait > 0 {
		return wait
	}
	for _, r := range reqs {
		if r.Rate.Unlimited() || r.N <= 0 {
			continue
		}
		tat := l.tatOf(r.Key, r.Rate)
		if tat.Before(now.Add(-r.Rate.Slack)) {
			tat = now
		}
		l.tat[r.Key] = tat.Add(time.Duration(r.N) * r.Rate.interval())
	}
	if now.Sub(l.sweep) > time.Minute {
		l.sweepLocked(now)
	}
	return 0
}

// tatOf returns the key's schedule, creating it as described on
// LocalLimiter.
func (l *LocalLimiter) tatOf(key string, r Rate) time.Time {
	if t, ok := l.tat[key]; ok {
		return t
	}
	return l.start.Add(r.tolerance() + r.interval())
}

// sweepLocked forgets schedules that are in the past: a key created
// afresh at now behaves the same (after the start-up interval).
func (l *LocalLimiter) sweepLocked(now time.Time) {
	l.sweep = now
	for k, t := range l.tat {
		if t.Before(now.Add(-time.Hour)) {
			delete(l.tat, k)
		}
	}
}

// Acquire implements Limiter.
func (l *LocalLimiter) Acquire(slots ...Slot) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	for i, s := range slots {
		if s.Max > 0 && l.used[s.Key] >= s.Max {
			return i
		}
	}
	for _, s := range slots {
		l.used[s.Key]++
	}
	return -1
}

// Release implements Limiter.
func (l *LocalLimiter) Release(slots ...Slot) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, s := range slots {
		if n := l.used[s.Key] - 1; n > 0 {
			l.used[s.Key] = n
		} else {
			delete(l.used, s.Key)
		}
	}
}

// InUse reports the slots taken under key (for status pages and tests).
func (l *LocalLimiter) InUse(key string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.used[key]
}
