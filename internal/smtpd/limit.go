package smtpd

import (
	"net/netip"
	"sync"
	"time"
)

// keyedRate is a token bucket per client IP: Rate.N events, refilled
// evenly over Rate.Per. Buckets that have refilled completely are dropped,
// so the map holds only clients seen within the last period.
type keyedRate struct {
	mu        sync.Mutex
	rate      Rate
	m         map[netip.Addr]*bucket
	lastSweep time.Time
}

type bucket struct {
	tokens float64
	last   time.Time
}

func newKeyedRate(r Rate) *keyedRate {
	return &keyedRate{rate: r, m: map[netip.Addr]*bucket{}}
}

func (k *keyedRate) setRate(r Rate) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if r != k.rate {
		k.rate = r
		clear(k.m)
	}
}

func (k *keyedRate) unlimited() bool { return k.rate.N <= 0 || k.rate.Per <= 0 }

// refill brings ip's bucket up to now; it returns nil when unlimited.
func (k *keyedRate) refill(ip netip.Addr, now time.Time) *bucket {
	if k.unlimited() {
		return nil
	}
	if now.Sub(k.lastSweep) > k.rate.Per {
		k.lastSweep = now
		for a, b := range k.m {
			if now.Sub(b.last) >= k.rate.Per {
				delete(k.m, a)
			}
		}
	}
	b := k.m[ip]
	if b == nil {
		b = &bucket{tokens: float64(k.rate.N), last: now}
		k.m[ip] = b
		return b
	}
	if el := now.Sub(b.last); el > 0 {
		b.tokens = min(float64(k.rate.N), b.tokens+float64(el)*float64(k.rate.N)/float64(k.rate.Per))
		b.last = now
	}
	return b
}

// allow takes one token for ip and reports whether there was one.
func (k *keyedRate) allow(ip netip.Addr, now time.Time) bool {
	k.mu.Lock()
	defer k.mu.Unlock()
	b := k.refill(ip, now)
	if b == nil {
		return true
	}
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}

// exhausted reports whether ip has no token left, without taking one.
func (k *keyedRate) exhausted(ip netip.Addr, now time.Time) bool {
	k.mu.Lock()
	defer k.mu.Unlock()
	b := k.refill(ip, now)
	return b != nil && b.tokens < 1
}

// size is the number of tracked clients (for tests).
func (k *keyedRate) size() int {
	k.mu.Lock()
	defer k.mu.Unlock()
	return len(k.m)
}
