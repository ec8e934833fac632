package spool

import (
	"fmt"
	"math/rand"
	"testing"
	"time"
)

// TestWheelAgainstModel schedules, cancels and pops recipients at times
// from the past to weeks ahead (all three wheel levels), moving the clock
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
			spans := []time.Duration{time.Second, time.Minute, time.Hour, 48 * time.Hour, 30 * 24 * time.Hour}
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
					if rng.Intn(20) == 0 {
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
			for _, i := range x.popDue(now+int64(60*24*time.Hour), 1<<30, nil) {
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
