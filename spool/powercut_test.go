package spool

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand"
	"sync"
	"testing"
	"time"
)

// ackState is what a worker knows was made durable before the cut.
type ackState struct {
	msg      *Message
	acked    bool   // Submit returned nil before the cut
	finished []bool // per recipient: a finishing outcome was acknowledged
	tried    []bool // per recipient: a finishing outcome was attempted (maybe durable)
	deferred []int  // per recipient: attempts of the last acknowledged deferral
	held     bool
}

// TestPowerCut runs writers against a file system that, at a random
// operation, takes the image a power cut would leave: only what a
// completed fdatasync covered (and, in half the runs, torn pieces of the
// rest). Recovery from that image must return every acknowledged message
// byte for byte with its acknowledged state, and nothing corrupt.
func TestPowerCut(t *testing.T) {
	const cuts = 220
	for c := 0; c < cuts; c++ {
		powerCutOnce(t, int64(c))
		if t.Failed() {
			t.Fatalf("failed at cut %d", c)
		}
	}
}

func powerCutOnce(t *testing.T, seed int64) {
	rng := rand.New(rand.NewSource(seed))
	fs := newMemFS(seed)
	fs.torn = seed%2 == 0
	const seg = 48 << 10
	s, err := Open("/spool", Options{SegmentSize: seg, FS: fs, Reserve: 1})
	if err != nil {
		t.Fatal(err)
	}
	var history []*Message // delivered before the cut: never to come back
	if seed%3 == 0 {
		// Finished segments first, so that the writes below go to
		// reused files full of old frames (recycle, FORMAT.md).
		var b Batch
		history = submitN(t, s, 30, 1, 3000)
		for _, m := range history {
			b.Delivered(m.ID, 0, "250 ok")
		}
		if err := s.Commit(&b); err != nil {
			t.Fatal(err)
		}
		waitReused(t, s, 1)
	}
	// Some history first, so the cut can also land in compaction and in
	// recovery of a previous run's segments.
	fs.mu.Lock()
	fs.crashAt = 1 + rng.Intn(400)
	fs.mu.Unlock()

	var mu sync.Mutex
	var all []*ackState
	var wg sync.WaitGroup
	for w := 0; w < 4; w++ {
		wg.Add(1)
		wseed := rng.Int63()
		go func() {
			defer wg.Done()
			r := rand.New(rand.NewSource(wseed))
			var mine []*ackState
			for i := 0; i < 40 && !fs.Crashed(); i++ {
				if len(mine) > 0 && r.Intn(3) == 0 {
					a := mine[r.Intn(len(mine))]
					if !a.acked {
						continue
					}
					var b Batch
					k := r.Intn(len(a.msg.Recipients))
					fin, def := false, false
					switch r.Intn(4) {
					case 0:
						b.Delivered(a.msg.ID, k, "250 ok")
						fin = true
					case 1:
						b.Bounced(a.msg.ID, k, "550 no")
						fin = true
					case 2:
						b.Attempt(a.msg.ID, k, time.Now().Add(time.Hour))
						b.Deferred(a.msg.ID, k, time.Now().Add(time.Hour), "451 later")
						def = true
					case 3:
						if err := s.Hold(a.msg.ID); err == nil && !fs.Crashed() {
							a.held = true
						}
						continue
					}
					if a.finished[k] {
						continue
					}
					if fin {
						a.tried[k] = true
					}
					err := s.Commit(&b)
					if err == nil && !fs.Crashed() {
						if fin {
							a.finished[k] = true
						}
						if def {
							a.deferred[k]++
						}
					}
					continue
				}
				m := testMsg(1+r.Intn(3), 200+r.Intn(4000))
				a := &ackState{msg: m, finished: make([]bool, len(m.Recipients)), tried: make([]bool, len(m.Recipients)), deferred: make([]int, len(m.Recipients))}
				mine = append(mine, a)
				mu.Lock()
				all = append(all, a)
				mu.Unlock()
				err := s.Submit(m)
				// Acknowledged before the cut only if the cut had not
				// happened when Submit returned.
				a.acked = err == nil && !fs.Crashed()
			}
		}()
	}
	wg.Wait()
	s.Close()
	fs.mu.Lock()
	img := fs.crashImg
	fs.mu.Unlock()
	if img == nil {
		img = fs.Crash()
	}

	var logs bytes.Buffer
	var lmu sync.Mutex
	s2, err := Open("/spool", Options{SegmentSize: seg, FS: img, Reserve: 1, Logf: func(f string, a ...any) {
		lmu.Lock()
		fmt.Fprintf(&logs, f+"\n", a...)
		lmu.Unlock()
	}})
	if err != nil {
		t.Fatalf("seed %d: reopen after cut: %v", seed, err)
	}
	defer s2.Close()
	<-s2.Recovered()
	for _, m := range history {
		if _, _, err := s2.Envelope(m.ID); !errors.Is(err, ErrNotFound) {
			t.Errorf("seed %d: message %s, delivered before the cut, came back (%v)\n%s", seed, m.ID, err, logs.String())
		}
	}
	byID := make(map[string]*ackState)
	for _, a := range all {
		byID[a.msg.ID] = a
	}
	for _, a := range all {
		if !a.acked {
			continue
		}
		done := true
		for _, f := range a.finished {
			done = done && f
		}
		_, st, err := s2.Envelope(a.msg.ID)
		if done {
			if !errors.Is(err, ErrNotFound) {
				t.Errorf("seed %d: finished message %s came back (%v)\n%s", seed, a.msg.ID, err, logs.String())
			}
			continue
		}
		maybeDone := true
		for _, f := range a.tried {
			maybeDone = maybeDone && f
		}
		if err != nil && maybeDone && errors.Is(err, ErrNotFound) {
			continue // finished by outcomes that were durable but not yet acknowledged
		}
		if err != nil {
			t.Errorf("seed %d: acknowledged message %s lost: %v\n%s", seed, a.msg.ID, err, logs.String())
			for name, f := range img.files {
				t.Logf("file %s: id at %d (durable %v) header %x", name, bytes.Index(f.data, []byte(a.msg.ID)), img.durable[name] == f, f.data[:24])
			}
			for name, f := range fs.files {
				t.Logf("orig file %s: id at %d (durable %v) header %x", name, bytes.Index(f.synced, []byte(a.msg.ID)), fs.durable[name] == f, f.synced[:24])
			}
			continue
		}
		if got := mustContent(t, s2, a.msg.ID); !bytes.Equal(got, a.msg.Content) {
			t.Errorf("seed %d: message %s content differs", seed, a.msg.ID)
		}
		for k := range st {
			if a.finished[k] && !st[k].Status.Finished() {
				t.Errorf("seed %d: %s rcpt %d: acknowledged outcome lost: %+v\n%s", seed, a.msg.ID, k, st[k], logs.String())
			}
			if !a.finished[k] && a.deferred[k] > 0 && st[k].Attempts < a.deferred[k] {
				t.Errorf("seed %d: %s rcpt %d: attempts %d < acknowledged %d", seed, a.msg.ID, k, st[k].Attempts, a.deferred[k])
			}
		}
	}
	// Nothing that was never submitted, nothing corrupt.
	s2.Walk(func(info MessageInfo) bool {
		a, ok := byID[info.ID]
		if !ok {
			t.Errorf("seed %d: unknown message %s recovered", seed, info.ID)
			return true
		}
		if got := mustContent(t, s2, info.ID); !bytes.Equal(got, a.msg.Content) {
			t.Errorf("seed %d: unacknowledged message %s recovered with different content", seed, info.ID)
		}
		if a.held && !info.Held {
			t.Errorf("seed %d: acknowledged hold of %s lost", seed, info.ID)
		}
		return true
	})
}
