// Package qid makes and checks queue ids.
//
// A queue id names one message for its whole life: logs, accounting,
// mailq and postsuper all show the same string. It follows Postfix's long
// queue id layout so that log tools which already parse Postfix ids accept
// ours: arrival seconds (6 base-52 digits), microseconds (4 base-52 digits),
// the separator 'z', then 5 base-51 digits of a per-process sequence that
// starts at a random value. The id is never derived from where the message
// sits in the spool, so compaction and recovery cannot change it.
package qid

import (
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"sync/atomic"
	"time"
)

// base52 is Postfix's alphabet: digits and consonants, so no id spells a word.
const base52 = "0123456789BCDFGHJKLMNPQRSTVWXYZbcdfghjklmnpqrstvwxyz"

// base51 is base52 without the separator 'z'.
const base51 = "0123456789BCDFGHJKLMNPQRSTVWXYZbcdfghjklmnpqrstvwxy"

// Sep separates the time part from the sequence part.
const Sep = 'z'

// Len is the length of every id New returns.
const Len = 6 + 4 + 1 + 5

// MaxLen bounds ids accepted from outside (postsuper arguments, pickup files).
const MaxLen = 32

var seq atomic.Uint64

func init() {
	var b [8]byte
	if _, err := rand.Read(b[:]); err == nil {
		seq.Store(binary.LittleEndian.Uint64(b[:]))
	}
}

// New returns a fresh id for a message arriving at t.
func New(t time.Time) string {
	var b [Len]byte
	putDigits(b[0:6], uint64(t.Unix()), base52)
	putDigits(b[6:10], uint64(t.Nanosecond()/1000), base52)
	b[10] = Sep
	putDigits(b[11:16], seq.Add(1), base51)
	return string(b[:])
}

// putDigits writes v into dst, most significant digit first, keeping only
// the low len(dst) digits.
func putDigits(dst []byte, v uint64, alphabet string) {
	base := uint64(len(alphabet))
	for i := len(dst) - 1; i >= 0; i-- {
		dst[i] = alphabet[v%base]
		v /= base
	}
}

// Time returns the arrival time encoded in id, to the microsecond.
func Time(id string) (time.Time, error) {
	if err := Check(id); err != nil {
		return time.Time{}, err
	}
	sec, err := digits(id[0:6], base52)
	if err != nil {
		return time.Time{}, err
	}
	usec, err := digits(id[6:10], base52)
	if err != nil {
		return time.Time{}, err
	}
	return time.Unix(int64(sec), int64(usec)*1000), nil
}

func digits(s, alphabet string) (uint64, error) {
	var v uint64
	for i := 0; i < len(s); i++ {
		d := index(alphabet, s[i])
		if d < 0 {
			return 0, fmt.Errorf("qid: bad digit %q", s[i])
		}
		v = v*uint64(len(alphabet)) + uint64(d)
	}
	return v, nil
}

// digit52 maps a byte to its base52 value, or -1; base51's values are
// the same but for the separator, which Check tests first.
var digit52 = func() (t [256]int8) {
	for i := range t {
		t[i] = -1
	}
	for i := 0; i < len(base52); i++ {
		t[base52[i]] = int8(i)
	}
	return t
}()

// index returns c's value in alphabet (base52 or base51), or -1.
func index(alphabet string, c byte) int {
	d := int(digit52[c])
	if d >= len(alphabet) {
		return -1 // 'z', which base51 lacks
	}
	return d
}

// Check reports whether id has the shape of an id New makes. Ids come
// from outside (command lines, files), so nothing else is trusted.
func Check(id string) error {
	if len(id) != Len {
		return fmt.Errorf("qid: %q: want %d characters", truncate(id), Len)
	}
	for i := 0; i < Len; i++ {
		c := id[i]
		switch {
		case i == 10:
			if c != Sep {
				return fmt.Errorf("qid: %q: missing separator", id)
			}
		case i < 10:
			if index(base52, c) < 0 {
				return fmt.Errorf("qid: %q: bad character %q", id, c)
			}
		default:
			if index(base51, c) < 0 {
				return fmt.Errorf("qid: %q: bad character %q", id, c)
			}
		}
	}
	return nil
}

func truncate(s string) string {
	if len(s) > MaxLen {
		return s[:MaxLen] + "..."
	}
	return s
}
