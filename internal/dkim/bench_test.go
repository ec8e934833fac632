package dkim

import (
	"strings"
	"testing"
	"time"
)

// benchMessage is a typical bulk message: a dozen header fields, ~10 KB of
// body.
func benchMessage(variant byte) []byte {
	h := "From: News <news@example.com>\r\nTo: someone@example.net\r\nSubject: This week's offers\r\nDate: Sun, 29 Nov 2026 10:00:00 +0000\r\n" +
		"Message-ID: <abc.123@example.com>\r\nMIME-Version: 1.0\r\nContent-Type: text/html; charset=utf-8\r\n" +
		"List-Unsubscribe: <https://example.com/u/abc>\r\nList-Unsubscribe-Post: List-Unsubscribe=One-Click\r\nFeedback-ID: c1:news:esp\r\n\r\n"
	body := []byte(strings.Repeat("<p>Lorem ipsum dolor sit amet,  consectetur\tadipiscing elit, sed do eiusmod.</p>  \r\n", 120))
	body[0] = variant
	return append([]byte(h), body...)
}

// BenchmarkSign compares RSA-2048 and Ed25519 in one run, with the body
// hash cached (a message's second and later queues) and not (its first).
func BenchmarkSign(b *testing.B) {
	rk, ek := testKeys(b)
	for _, k := range []*Key{rk, ek} {
		for _, cached := range []bool{true, false} {
			name := k.Algo + "/body-cached"
			if !cached {
				name = k.Algo + "/body-hashed"
			}
			b.Run(name, func(b *testing.B) {
				// Alternating two bodies through a one-entry cache misses
				// every time.
				s := NewSigner(Options{CacheSize: 1})
				msgs := [2][]byte{benchMessage('<'), benchMessage('[')}
				p := &Params{Key: k, Oversign: []string{"From", "To", "Subject", "Date", "List-Unsubscribe", "List-Unsubscribe-Post"}}
				now := time.Now()
				b.SetBytes(int64(len(msgs[0])))
				b.ReportAllocs()
				for i := 0; b.Loop(); i++ {
					m := msgs[0]
					if !cached {
						m = msgs[i&1]
					}
					if _, err := s.Header(m, p, now); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}

// BenchmarkBodyHash is the canonicalization and SHA-256 of a 100 KB body.
func BenchmarkBodyHash(b *testing.B) {
	body := []byte(strings.Repeat("Lorem ipsum dolor sit amet,  consectetur\tadipiscing elit, sed do eiusmod tempor.  \r\n", 1200))
	for _, c := range []Canon{Relaxed, Simple} {
		b.Run(string(c), func(b *testing.B) {
			s := NewSigner(Options{CacheSize: 1})
			b.SetBytes(int64(len(body)))
			for b.Loop() {
				s.mu.Lock()
				clear(s.cache)
				s.ring[0] = bodyKey{}
				s.mu.Unlock()
				s.bodyHash(body, c)
			}
		})
	}
}
