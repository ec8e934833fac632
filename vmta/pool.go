package vmta

import (
	"math"
	"strconv"
)

// Member is one virtual MTA of a pool and its weight (<= 0 counts as 1).
type Member struct {
	Name   string
	Weight int
}

// Pick chooses the member of a pool that sends one recipient, by weighted
// rendezvous hashing of the message's queue id and the recipient's index:
//   - the choice is the same on every retry and after a restart (nothing is
//     stored), so greylisting sees the same source address again;
//   - over many recipients each member's share follows its weight;
//   - when members become unusable (a disabled source address) only their
//     recipients move, and they come back when the member is usable again.
//
// usable may be nil. ok is false when no member is usable.
func Pick(members []Member, id string, rcpt int, usable func(name string) bool) (name string, ok bool) {
	best := -1.0
	key := hashString(offset64, id)
	key = hashString(key, strconv.Itoa(rcpt))
	for _, m := range members {
		if usable != nil && !usable(m.Name) {
			continue
		}
		w := float64(m.Weight)
		if w <= 0 {
			w = 1
		}
		h := mix(hashString(key, m.Name))
		// u in (0,1); -w/ln(u) is the weighted rendezvous score (the
		// largest wins with probability w/sum(w)).
		u := (float64(h>>11) + 0.5) / (1 << 53)
		score := -w / math.Log(u)
		if score > best {
			best, name, ok = score, m.Name, true
		}
	}
	return name, ok
}

const (
	offset64 = 14695981039346656037
	prime64  = 1099511628211
)

// hashString continues a 64-bit FNV-1a hash over s and a separator, so
// ("ab","c") and ("a","bc") differ.
func hashString(h uint64, s string) uint64 {
	for i := 0; i < len(s); i++ {
		h ^= uint64(s[i])
		h *= prime64
	}
	h ^= 0xff
	h *= prime64
	return h
}

// mix is splitmix64's finalizer: FNV's low bits are poorly spread.
func mix(x uint64) uint64 {
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	x ^= x >> 31
	return x
}
