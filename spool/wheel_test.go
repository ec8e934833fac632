package spool

import (
	"fmt"
	"math/rand"
	"testing"
	"time"
)

// TestWheelAgainstModel schedules, cancels and pops recipients at times
// from the past to years ahead (all three wheel levels), moving the clock
// in small steps and big jumps: PopDue must never return a recipient
// before its time, and must return every one whose tick has passed.
func TestWheelAgainstModel(t *testing.T) {
	for _, seed := range []int64{1, 2, 3} {
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			rng := rand.New(rand.NewSource(seed))
			now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC).UnixNano()
			x := newIndex(now)
			live := map[int32]int64{}
			var ids []int32
			add := func(next int64) {
				mi := x.allocMsg()
				x.m[mi] = msg{nrcpt: 1, left: 1, flags: mUsed}
				i := x.allocRcpts(1)
				x.m[mi].rcpt0 = i
				x.r[i] = rcpt{prev: i, nx: i, msg: mi, queue: x.queueFor([]byte("v"), []byte(fmt.Sprintf("a@d%d", rng.Intn(5)))), status: uint8(Deferred), next: next}
				x.account(i, 1)
				x.schedule(i)
				live[i] = next
				ids = append(ids, i)
			}
			// Level 0 covers 73 minutes, level 1 2.3 years; beyond is the
			// overflow, which the year-long jumps below carry into range.
			year := 365 * 24 * time.Hour
			spans := []time.Duration{time.Second, time.Minute, time.Hour, 2 * time.Hour, 48 * time.Hour, 30 * 24 * time.Hour, 4 * year}
			for step := 0; step < 3000; step++ {
				switch rng.Intn(4) {
				case 0, 1:
					add(now - int64(time.Second) + rng.Int63n(int64(spans[rng.Intn(len(spans))])))
				case 2:
					if len(ids) > 0 {
						i := ids[rng.Intn(len(ids))]
						if _, ok := live[i]; ok && x.r[i].flags&rLinked != 0 {
							x.unlink(i)
							delete(live, i)
						}
					}
				case 3:
					if rng.Intn(300) == 0 {
						now += rng.Int63n(int64(year))
					} else if rng.Intn(20) == 0 {
						now += rng.Int63n(int64(10 * 24 * time.Hour))
					} else if rng.Intn(30) == 0 {
						now -= rng.Int63n(int64(time.Hour)) // a clock stepped back
					} else {
						now += rng.Int63n(int64(5 * time.Second))
					}
					for _, i := range x.popDue(now, 1<<30, nil) {
						next, ok := live[i]
						if !ok {
							t.Fatalf("popped %d twice or after cancel", i)
						}
						if next > now {
							t.Fatalf("popped %d at %d, %v early", i, now, time.Duration(next-now))
						}
						delete(live, i)
					}
					for i, next := range live {
						if next < (now>>tickShift)<<tickShift {
							t.Fatalf("step %d: %d due %v ago not popped", step, i, time.Duration(now-next))
						}
					}
					if nd, ok := x.nextDue(); ok != (len(live) > 0) {
						t.Fatalf("nextDue ok=%v with %d waiting", ok, len(live))
					} else if ok {
						min := int64(-1)
						for _, n := range live {
							if min < 0 || n < min {
								min = n
							}
						}
						if nd > ((min>>tickShift)+1)<<tickShift {
							t.Fatalf("nextDue %v later than the earliest %v's tick end", nd, min)
						}
					}
				}
			}
			// Far enough ahead, everything comes out exactly once.
			for _, i := range x.popDue(now+int64(5*year), 1<<30, nil) {
				if _, ok := live[i]; !ok {
					t.Fatalf("popped %d twice or after cancel", i)
				}
				delete(live, i)
			}
			if len(live) != 0 || x.waiting != 0 {
				t.Fatalf("left behind: %d (waiting %d)", len(live), x.waiting)
			}
		})
	}
}

// TestWheelStaleEntries: unlinking leaves a stale entry behind in the
// slot's array. A recipient taken out and put back many times into a slot
// that does not drain for days (the overflow) must not grow it without
// bound, and must still come out exactly once, at its time; recipients
// unlinked for good must never come out.
func TestWheelStaleEntries(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC).UnixNano()
	x := newIndex(now)
	add := func(next int64) int32 {
		mi := x.allocMsg()
		x.m[mi] = msg{nrcpt: 1, left: 1, flags: mUsed}
		i := x.allocRcpts(1)
		x.m[mi].rcpt0 = i
		x.r[i] = rcpt{prev: i, nx: i, msg: mi, queue: x.queueFor([]byte("v"), []byte("a@d")), status: uint8(Deferred), next: next}
		x.account(i, 1)
		x.schedule(i)
		return i
	}
	far := now + int64(60*24*time.Hour) // beyond level 1: the overflow slot
	keep := []int32{add(far), add(far + 1), add(far + 2)}
	gone := add(far + 3)
	x.unlink(gone)
	for round := 0; round < 10000; round++ {
		i := keep[round%len(keep)]
		x.unlink(i)
		x.schedule(i) // same time, same slot: the old entry is now stale
	}
	if n := len(x.slots[ovflSlot]); n > 64+4*len(keep) {
		t.Fatalf("overflow slot holds %d entries for %d recipients", n, len(keep))
	}
	if got := x.popDue(far-int64(time.Hour), 100, nil); len(got) != 0 {
		t.Fatalf("popped %v an hour early", got)
	}
	got := x.popDue(far+int64(time.Second), 100, nil)
	if len(got) != len(keep) {
		t.Fatalf("popped %v, want each of %v once", got, keep)
	}
	seen := map[int32]bool{}
	for _, i := range got {
		if i == gone || seen[i] {
			t.Fatalf("popped %v: %d twice or after unlink", got, i)
		}
		seen[i] = true
	}
	if x.waiting != 0 {
		t.Fatalf("waiting %d after all popped", x.waiting)
	}
}

// TestWheelLevelsOverlap: level 0 rolls into the next epoch while that
// epoch's level-1 slot still holds a recipient placed before; nextDue must
// report that earlier one, not the later one level 0 holds.
func TestWheelLevelsOverlap(t *testing.T) {
	tick := int64(1) << tickShift
	start := (time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC).UnixNano() >> (tickShift + wBits)) << (tickShift + wBits) // an epoch's first tick
	x := newIndex(start)
	add := func(next int64) int32 {
		mi := x.allocMsg()
		x.m[mi] = msg{nrcpt: 1, left: 1, flags: mUsed}
		i := x.allocRcpts(1)
		x.m[mi].rcpt0 = i
		x.r[i] = rcpt{prev: i, nx: i, msg: mi, queue: x.queueFor([]byte("v"), []byte("a@d")), status: uint8(Deferred), next: next}
		x.account(i, 1)
		x.schedule(i)
		return i
	}
	early := add(start + (wSlots+5)*tick) // beyond level 0 now: level 1
	if got := x.popDue(start+20*tick, 10, nil); len(got) != 0 {
		t.Fatalf("popped %v", got)
	}
	late := add(start + (wSlots+15)*tick) // within level 0 from here
	if x.r[early].wslot < l1Base || x.r[late].wslot >= l1Base {
		t.Fatalf("slots %d and %d: the test no longer sets up the overlap", x.r[early].wslot, x.r[late].wslot)
	}
	nd, ok := x.nextDue()
	if want := start + (wSlots+6)*tick; !ok || nd > want {
		t.Fatalf("nextDue %v, want by %v (the level-1 recipient)", time.Duration(nd-start), time.Duration(want-start))
	}
	got := x.popDue(start+(wSlots+6)*tick, 10, nil)
	if len(got) != 1 || got[0] != early {
		t.Fatalf("popped %v, want [%d]", got, early)
	}
}
