package dkim

import (
	"bytes"
	"strings"
	"testing"
	"time"
)

// wellFormed reports whether every header line of wire is a field name and
// a colon, or a continuation: what a verifier can be expected to parse.
func wellFormed(wire []byte) bool {
	for i, first := 0, true; i < len(wire); first = false {
		end, next := nextLine(wire, i)
		line := wire[i:end]
		if len(line) == 0 {
			return true
		}
		if line[0] == ' ' || line[0] == '\t' {
			if first {
				return false
			}
		} else {
			c := bytes.IndexByte(line, ':')
			if c <= 0 {
				return false
			}
			for _, ch := range line[:c] {
				if ch <= ' ' || ch >= 0x7f {
					return false
				}
			}
		}
		i = next
	}
	return true
}

// FuzzSign: message content is outside input. Signing never panics, adds
// exactly one header field in front, and the signature of a well-formed
// message verifies (go-msgauth) on the wire form in every
// canonicalization.
func FuzzSign(f *testing.F) {
	for _, m := range messages {
		f.Add([]byte(m), uint8(0))
	}
	f.Add([]byte("From: a@example.com\r\n\r\n\r\n \t\r\n"), uint8(1))
	f.Add([]byte("\r\n\r\nFrom: x"), uint8(2))
	f.Add([]byte(" leading: space\r\nFrom: a@b.example\r\n\r\nx"), uint8(3))
	f.Add([]byte("From: a@example.com\rSubject: cr\r\rbody\r"), uint8(0))
	_, ek := testKeys(f)
	recs := records(f, ek)
	s := NewSigner(Options{CacheSize: 8})
	now := time.Now()
	f.Fuzz(func(t *testing.T, content []byte, mode uint8) {
		c := canons[int(mode)%len(canons)]
		p := &Params{Key: ek, HeaderCanon: c[0], BodyCanon: c[1]}
		out, err := s.Sign(content, p, now)
		if err != nil {
			t.Fatal(err)
		}
		sig := out[:len(out)-len(content)]
		if !bytes.Equal(out[len(sig):], content) || !bytes.HasPrefix(sig, []byte("DKIM-Signature: ")) || !bytes.HasSuffix(sig, []byte("\r\n")) {
			t.Fatalf("bad signed form %q", out)
		}
		if fs, _ := splitHeader(sig); len(fs) != 1 {
			t.Fatalf("signature is %d fields", len(fs))
		}
		fields, _ := splitHeader(content)
		_, _ = identity("sender-or-from", fields, content)
		wire := toWire(out)
		if wellFormed(toWire(content)) && !strings.Contains(string(wire), "\x00") {
			if err := verifyGo(wire, recs); err != nil {
				t.Fatalf("%s/%s: %v\n%q", c[0], c[1], err, wire)
			}
		}
	})
}
