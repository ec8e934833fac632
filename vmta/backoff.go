package vmta

import (
	"slices"
	"strings"
	"sync"
	"time"
)

// Mode is a queue's delivery mode.
type Mode uint8

const (
	ModeNormal Mode = iota
	ModeBackoff
)

func (m Mode) String() string {
	if m == ModeBackoff {
		return "backoff"
	}
	return "normal"
}

// ParseMode reads "normal" or "backoff".
func ParseMode(s string) (Mode, bool) {
	switch strings.ToLower(s) {
	case "normal":
		return ModeNormal, true
	case "backoff":
		return ModeBackoff, true
	}
	return ModeNormal, false
}

// Change is one mode change or source-address change, for the log.
type Change struct {
	Queue    string // "domain/vmta"
	SourceIP string // set for disable/enable of a source address
	What     string // "mode backoff", "mode normal", "source disabled", "source enabled"
	Reason   string
	At       time.Time
}

// ChangeCounts counts changes since start, for metrics.
type ChangeCounts struct {
	ToBackoff, ToNormal, SourcesDisabled, SourcesEnabled uint64
}

// Backoff holds each queue's mode and the source addresses disabled per
// queue; it is how a queue reacts to receivers' pushback. Keys are queue
// names chosen by the caller. Timed returns (backoff-to-normal-after,
// reenable-source-ip-after) happen lazily, when the state is next read,
// and are reported then. Safe for concurrent use.
type Backoff struct {
	mu       sync.Mutex
	modes    map[string]*modeState
	disabled map[string]map[string]disabledSource // queue -> source IP ->
	counts   ChangeCounts
	onChange func(Change)
}

type modeState struct {
	mode   Mode
	since  time.Time
	until  time.Time // back to normal then; zero = not by time
	reason string
}

type disabledSource struct {
	until  time.Time
	reason string
}

// NewBackoff returns an empty state; onChange (may be nil) is called for
// every change, without locks held.
func NewBackoff(onChange func(Change)) *Backoff {
	return &Backoff{modes: map[string]*modeState{}, disabled: map[string]map[string]disabledSource{}, onChange: onChange}
}

func (b *Backoff) report(chs []Change) {
	if b.onChange == nil {
		return
	}
	for _, c := range chs {
		b.onChange(c)
	}
}

// Mode returns queue's mode at now, ending a timed backoff that is over.
func (b *Backoff) Mode(queue string, now time.Time) Mode {
	b.mu.Lock()
	st := b.modes[queue]
	if st == nil {
		b.mu.Unlock()
		return ModeNormal
	}
	if st.mode == ModeBackoff && !st.until.IsZero() && !now.Before(st.until) {
		delete(b.modes, queue)
		b.counts.ToNormal++
		b.mu.Unlock()
		b.report([]Change{{Queue: queue, What: "mode normal", Reason: "backoff-to-normal-after elapsed (in backoff since " + st.since.Format(time.RFC3339) + ")", At: now}})
		return ModeNormal
	}
	m := st.mode
	b.mu.Unlock()
	return m
}

// Info returns the mode, since when and why (for status pages).
func (b *Backoff) Info(queue string, now time.Time) (m Mode, since time.Time, reason string) {
	if b.Mode(queue, now) == ModeNormal {
		return ModeNormal, time.Time{}, ""
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if st := b.modes[queue]; st != nil {
		return st.mode, st.since, st.reason
	}
	return ModeNormal, time.Time{}, ""
}

// SetMode puts queue in mode m for reason; a backoff ends by itself after
// normalAfter (0: never by time). Entering backoff while in backoff
// extends it without a new change. It reports whether the mode changed.
func (b *Backoff) SetMode(queue string, m Mode, reason string, now time.Time, normalAfter time.Duration) bool {
	cur := b.Mode(queue, now)
	b.mu.Lock()
	var until time.Time
	if normalAfter > 0 {
		until = now.Add(normalAfter)
	}
	if m == ModeBackoff {
		if st := b.modes[queue]; st != nil {
			st.until = until
		} else {
			b.modes[queue] = &modeState{mode: ModeBackoff, since: now, until: until, reason: reason}
		}
	} else {
		delete(b.modes, queue)
	}
	changed := cur != m
	if changed {
		if m == ModeBackoff {
			b.counts.ToBackoff++
		} else {
			b.counts.ToNormal++
		}
	}
	b.mu.Unlock()
	if changed {
		b.report([]Change{{Queue: queue, What: "mode " + m.String(), Reason: reason, At: now}})
	}
	return changed
}

// DisableSource stops queue from using source address ip until until.
func (b *Backoff) DisableSource(queue, ip string, until time.Time, reason string, now time.Time) {
	b.mu.Lock()
	m := b.disabled[queue]
	if m == nil {
		m = map[string]disabledSource{}
		b.disabled[queue] = m
	}
	_, was := m[ip]
	m[ip] = disabledSource{until: until, reason: reason}
	if !was {
		b.counts.SourcesDisabled++
	}
	b.mu.Unlock()
	if !was {
		b.report([]Change{{Queue: queue, SourceIP: ip, What: "source disabled", Reason: reason + " (until " + until.Format(time.RFC3339) + ")", At: now}})
	}
}

// EnableSource lets queue use ip again at once (by hand).
func (b *Backoff) EnableSource(queue, ip, reason string, now time.Time) bool {
	b.mu.Lock()
	_, was := b.disabled[queue][ip]
	if was {
		delete(b.disabled[queue], ip)
		if len(b.disabled[queue]) == 0 {
			delete(b.disabled, queue)
		}
		b.counts.SourcesEnabled++
	}
	b.mu.Unlock()
	if was {
		b.report([]Change{{Queue: queue, SourceIP: ip, What: "source enabled", Reason: reason, At: now}})
	}
	return was
}

// SourceDisabled reports whether queue may not use ip at now, and until
// when; a disabling that is over is ended (and reported) here.
func (b *Backoff) SourceDisabled(queue, ip string, now time.Time) (bool, time.Time) {
	b.mu.Lock()
	d, ok := b.disabled[queue][ip]
	b.mu.Unlock()
	if !ok {
		return false, time.Time{}
	}
	if now.Before(d.until) {
		return true, d.until
	}
	b.EnableSource(queue, ip, "reenable-source-ip-after elapsed", now)
	return false, time.Time{}
}

// DisabledSource is one entry of Disabled.
type DisabledSource struct {
	Queue, SourceIP, Reason string
	Until                   time.Time
}

// Disabled lists the disabled source addresses (pmta show disabled sources).
func (b *Backoff) Disabled() []DisabledSource {
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []DisabledSource
	for q, m := range b.disabled {
		for ip, d := range m {
			out = append(out, DisabledSource{Queue: q, SourceIP: ip, Reason: d.reason, Until: d.until})
		}
	}
	slices.SortFunc(out, func(a, b DisabledSource) int {
		if c := strings.Compare(a.Queue, b.Queue); c != 0 {
			return c
		}
		return strings.Compare(a.SourceIP, b.SourceIP)
	})
	return out
}

// Counts returns the changes counted so far.
func (b *Backoff) Counts() ChangeCounts {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.counts
}
