package spool

import (
	"fmt"
	"math"
	"math/rand"
	"slices"
	"testing"
	"time"
)

// TestWheelAgainstModel schedules, cancels and pops recipients at times
// from the past to years ahead (every wheel level and the overflow), moving the clock
// in small steps and big jumps: PopDue must never return a recipient
// before its time, and must return every one whose tick has passed.
func TestWheelAgainstModel(t *testing.T) {
	// The last two start months before 2043-01-25, where the tick count
	// crosses 2^33: the overflow's entries are placed again there.
	starts := []time.Time{
		time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC),
		time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC),
		time.Date(2042, 6, 1, 0, 0, 0, 0, time.UTC),
		time.Date(2042, 11, 1, 0, 0, 0, 0, time.UTC),
	}
	for seed, start := range starts {
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			rng := rand.New(rand.NewSource(int64(seed + 1)))
			now := start.UnixNano()
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
			// Level 0 covers 69 seconds, level 1 4.9 hours, level 2 52
			// days, level 3 36 years to the next 2^32 ticks; beyond is the
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
	far := now + int64(60*24*time.Hour) // level 3: cascaded only weeks from now
	keep := []int32{addWaiting(x, far), addWaiting(x, far+1), addWaiting(x, far+2)}
	gone := addWaiting(x, far+3)
	x.unlink(gone)
	for round := 0; round < 10000; round++ {
		i := keep[round%len(keep)]
		x.unlink(i)
		x.schedule(i) // same time, same slot: the old entry is now stale
	}
	if n := len(x.slots[x.slotOf(far>>tickShift)]); n > 64+4*len(keep) {
		t.Fatalf("the slot holds %d entries for %d recipients", n, len(keep))
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

// TestWheelBoundaries: recipients due on either side of each level's
// boundary (a block, a page, ..., the overflow's 2^32 ticks), placed from
// before the boundary at every level, some cancelled and put back so that
// a cascade carries stale entries down. Each must come out exactly once,
// in the call that first passes its tick, and NextDue must not say later.
func TestWheelBoundaries(t *testing.T) {
	tick := int64(1) << tickShift
	for l := 1; l <= nLevels; l++ {
		span := int64(1) << (l * lvBits) // ticks
		// the first boundary of this level after 2026
		b := (time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC).UnixNano()>>tickShift/span + 1) * span
		for _, lead := range []int64{3, span / 2, span + 7} {
			t.Run(fmt.Sprintf("level%d-lead%d", l, lead), func(t *testing.T) {
				now := (b - lead) << tickShift
				x := newIndex(now)
				due := map[int32]int64{} // recipient -> tick
				for _, d := range []int64{-2, -1, 0, 1, 2, span - 1, span, span + 1} {
					at := b + d
					if at < b-lead {
						continue
					}
					i := addWaiting(x, at<<tickShift+tick/2)
					due[i] = at
					if d%2 == 0 {
						x.unlink(i)
						x.schedule(i) // a stale entry beside the live one
					}
				}
				if len(due) == 0 {
					t.Fatal("nothing placed")
				}
				// the start, then tick by tick around both boundaries
				ticks := []int64{b - lead}
				for d := int64(-4); d <= 4; d++ {
					ticks = append(ticks, b+d, b+span+d)
				}
				slices.Sort(ticks)
				for _, cur := range slices.Compact(ticks) {
					if cur < b-lead {
						continue
					}
					if nd, ok := x.nextDue(); ok != (len(due) > 0) {
						t.Fatalf("nextDue ok=%v with %d waiting", ok, len(due))
					} else if ok && nd > (minTick(due)+1)<<tickShift {
						t.Fatalf("nextDue tick %d, later than the earliest due %d", nd>>tickShift, minTick(due))
					}
					for _, i := range x.popDue((cur+1)<<tickShift, 100, nil) {
						at, ok := due[i]
						if !ok {
							t.Fatalf("popped %d twice", i)
						}
						if at != cur {
							t.Fatalf("popped %d passing tick %d, due at %d", i, cur, at)
						}
						delete(due, i)
					}
				}
				if len(due) > 0 {
					t.Fatalf("left behind: %v", due)
				}
				if x.waiting != 0 {
					t.Fatalf("waiting %d after all popped", x.waiting)
				}
			})
		}
	}
}

func addWaiting(x *index, next int64) int32 {
	mi := x.allocMsg()
	x.m[mi] = msg{nrcpt: 1, left: 1, flags: mUsed}
	i := x.allocRcpts(1)
	x.m[mi].rcpt0 = i
	x.r[i] = rcpt{prev: i, nx: i, msg: mi, queue: x.queueFor([]byte("v"), []byte("a@d")), status: uint8(Deferred), next: next}
	x.account(i, 1)
	x.schedule(i)
	return i
}

func minTick(due map[int32]int64) int64 {
	lo := int64(math.MaxInt64)
	for _, t := range due {
		lo = min(lo, t)
	}
	return lo
}
