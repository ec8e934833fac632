package dkim

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	msgauth "github.com/emersion/go-msgauth/dkim"

	"github.com/sluicemta/sluice/internal/testutil"
)

var (
	keysOnce         sync.Once
	rsaKey, edKey    *Key
	rsaKey2, edKey2  *Key // a second domain, for policy tests
	testKeyGenFailed error
)

// testKeys makes one RSA-2048 and one Ed25519 key per test binary (RSA
// generation takes a moment).
func testKeys(t testing.TB) (*Key, *Key) {
	t.Helper()
	keysOnce.Do(func() {
		rk, err := rsa.GenerateKey(rand.Reader, 2048)
		if err != nil {
			testKeyGenFailed = err
			return
		}
		_, ek, _ := ed25519.GenerateKey(rand.Reader)
		rsaKey, _ = NewKey("s-rsa", "example.com", rk)
		edKey, _ = NewKey("s-ed", "example.com", ek)
		rsaKey2, _ = NewKey("s-rsa", "esp.example", rk)
		edKey2, _ = NewKey("s-ed", "esp.example", ek)
	})
	if testKeyGenFailed != nil {
		t.Fatal(testKeyGenFailed)
	}
	return rsaKey, edKey
}

// records returns the TXT records of keys, by name.
func records(t testing.TB, keys ...*Key) map[string]string {
	t.Helper()
	m := map[string]string{}
	for _, k := range keys {
		r, err := k.Record()
		if err != nil {
			t.Fatal(err)
		}
		m[k.Selector+"._domainkey."+k.Domain] = r
	}
	return m
}

// toWire is content as vmta sends it: every CR, LF or CRLF a CRLF, and a
// final line end.
func toWire(content []byte) []byte {
	var b bytes.Buffer
	for i := 0; i < len(content); {
		end, next := nextLine(content, i)
		b.Write(content[i:end])
		b.WriteString("\r\n")
		i = next
	}
	return b.Bytes()
}

// verifyGo checks the first signature of wire with go-msgauth.
func verifyGo(wire []byte, recs map[string]string) error {
	if _, at := splitHeader(wire); at == len(wire) && !bytes.HasSuffix(wire, []byte("\r\n\r\n")) {
		// go-msgauth wants the empty line even before an empty body.
		wire = append(wire[:len(wire):len(wire)], "\r\n"...)
	}
	vs, err := msgauth.VerifyWithOptions(bytes.NewReader(wire), &msgauth.VerifyOptions{
		LookupTXT: func(name string) ([]string, error) {
			if r, ok := recs[strings.TrimSuffix(name, ".")]; ok {
				return []string{r}, nil
			}
			return nil, fmt.Errorf("no record %s", name)
		},
	})
	if err != nil {
		return err
	}
	if len(vs) == 0 {
		return fmt.Errorf("no signature found")
	}
	return vs[0].Err
}

// verifyPython checks the first signature of each file with python3-dkim;
// it returns the failures by file.
func verifyPython(t *testing.T, recs map[string]string, files []string) map[string]string {
	t.Helper()
	py := testutil.NeedPython(t)
	if err := exec.Command(py, "-c", "import dkim, nacl").Run(); err != nil {
		if testutil.InCI() {
			t.Fatalf("python3-dkim or python3-nacl missing: %v", err)
		}
		t.Skipf("python3-dkim or python3-nacl missing: %v", err)
	}
	kf := filepath.Join(t.TempDir(), "keys.json")
	j, _ := json.Marshal(recs)
	if err := os.WriteFile(kf, j, 0o600); err != nil {
		t.Fatal(err)
	}
	out, _ := exec.Command(py, append([]string{"testdata/verify.py", kf}, files...)...).CombinedOutput()
	fails := map[string]string{}
	seen := 0
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		file, res, _ := strings.Cut(line, " ")
		if res == "ok" {
			seen++
			continue
		}
		if strings.HasPrefix(res, "fail") {
			seen++
			fails[file] = res
		}
	}
	if seen != len(files) {
		t.Fatalf("verify.py answered for %d of %d messages:\n%s", seen, len(files), out)
	}
	return fails
}

// messages are the shapes the issue asks for, and a few more.
var messages = map[string]string{
	"plain":          "From: Alice <alice@example.com>\r\nTo: bob@example.net\r\nSubject: hello\r\nDate: Sun, 29 Nov 2026 10:00:00 +0000\r\nMessage-ID: <1@example.com>\r\n\r\nHello Bob.\r\n",
	"8bit":           "From: =?utf-8?q?J=C3=BCrgen?= <j@example.com>\r\nTo: b@example.net\r\nSubject: Grüße\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\nGrüße aus Köln — ünïcödé\r\n\xe9t\xe9 latin-1 bytes \xff\xfe\r\n",
	"folded":         "From: alice@example.com\r\nTo: a@example.net,\r\n  b@example.net,\r\n\tc@example.net,  d@example.net\r\nSubject: a very long subject line that goes on and on and on and on and on\r\n\tand is folded with a tab\r\n   and again with spaces   \r\nX-Long: " + strings.Repeat("word ", 200) + "\r\nDate: Sun, 29 Nov 2026 10:00:00 +0000\r\n\r\nbody\r\n",
	"trailing-blank": "From: alice@example.com\r\nSubject: blanks\r\n\r\nline one  \r\nline\t\ttwo \t \r\n\r\n\r\n \r\n\r\n",
	"empty-body":     "From: alice@example.com\r\nSubject: nothing\r\n\r\n",
	"no-body":        "From: alice@example.com\r\nSubject: no separator\r\n",
	"bare-lf":        "From: alice@example.com\nSubject: unix\n\tfolded\n\nline 1\nline 2  \n\n",
	"no-final-eol":   "From: alice@example.com\r\nSubject: x\r\n\r\nlast line without end",
	"dot-lines":      "From: alice@example.com\r\nSubject: dots\r\n\r\n.\r\n..leading dots\r\n.\r\n",
	"repeated": "Received: from a\r\nReceived: from b\r\nFrom: alice@example.com\r\nTo: x@example.net\r\nTo: y@example.net\r\nList-Unsubscribe: <https://example.com/u?x=1>\r\n" +
		"List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\nSubject: s\r\n\r\nbody\r\n",
	// RFC 5322 4.5's obsolete space before the colon (python3-dkim refuses it).
	"obs-colon": "From: alice@example.com\r\nSubject \t: spaced name\r\n\r\nbody\r\n",
	"long-line": "From: alice@example.com\r\nSubject: long\r\n\r\n" + strings.Repeat("x", 5000) + "\r\n" + strings.Repeat("y ", 3000) + "\r\n",
}

var canons = [][2]Canon{{Relaxed, Relaxed}, {Simple, Simple}, {Relaxed, Simple}, {Simple, Relaxed}}

// TestSignVerify: every message, key type and canonicalization verifies
// with go-msgauth and with python3-dkim.
func TestSignVerify(t *testing.T) {
	rk, ek := testKeys(t)
	recs := records(t, rk, ek)
	s := NewSigner(Options{})
	now := time.Now() // python3-dkim checks x= against its clock
	dir := t.TempDir()
	var files []string
	for name, msg := range messages {
		for _, k := range []*Key{rk, ek} {
			for _, c := range canons {
				p := &Params{Key: k, HeaderCanon: c[0], BodyCanon: c[1], Expire: time.Hour}
				signed, err := s.Sign([]byte(msg), p, now)
				if err != nil {
					t.Fatalf("%s: %v", name, err)
				}
				if !bytes.HasSuffix(signed, []byte(msg)) || !bytes.HasPrefix(signed, []byte("DKIM-Signature: v=1; a="+k.Algo+"; c="+string(c[0])+"/"+string(c[1])+";")) {
					t.Fatalf("%s: signed form:\n%s", name, signed)
				}
				for _, l := range strings.Split(string(signed[:len(signed)-len(msg)]), "\r\n") {
					if len(l) > 78 {
						t.Errorf("%s: signature line of %d characters: %q", name, len(l), l)
					}
				}
				wire := toWire(signed)
				id := fmt.Sprintf("%s-%s-%s-%s", name, k.Algo, c[0], c[1])
				if err := verifyGo(wire, recs); err != nil {
					t.Errorf("%s: go-msgauth: %v\n%s", id, err, signed)
				}
				if name == "obs-colon" {
					continue
				}
				f := filepath.Join(dir, id+".eml")
				if err := os.WriteFile(f, wire, 0o600); err != nil {
					t.Fatal(err)
				}
				files = append(files, f)
			}
		}
	}
	for f, why := range verifyPython(t, recs, files) {
		t.Errorf("python3-dkim: %s: %s", filepath.Base(f), why)
	}
}

// TestSignatureTags: t= is the caller's clock, x= follows dkim-expire-after,
// i= is set when asked, h= oversigns.
func TestSignatureTags(t *testing.T) {
	_, ek := testKeys(t)
	s := NewSigner(Options{})
	now := time.Unix(1_790_000_000, 0)
	msg := []byte(messages["repeated"])
	h, err := s.Header(msg, &Params{Key: ek, Identity: "@news.example.com", Expire: 24 * time.Hour,
		Headers: []string{"From", "To", "Subject", "Received"}, Oversign: []string{"From", "To", "List-Unsubscribe", "X-Absent"}}, now)
	if err != nil {
		t.Fatal(err)
	}
	tags := parseTags(t, h)
	want := map[string]string{
		"v": "1", "a": "ed25519-sha256", "c": "relaxed/relaxed", "d": "example.com", "s": "s-ed",
		"i": "@news.example.com", "t": "1790000000", "x": "1790086400",
		"h": "from:from:to:to:to:subject:received:received:list-unsubscribe:list-unsubscribe:x-absent",
	}
	for k, v := range want {
		if tags[k] != v {
			t.Errorf("%s= %q, want %q", k, tags[k], v)
		}
	}
	if _, ok := tags["l"]; ok {
		t.Error("l= must not be set")
	}
	h, _ = s.Header(msg, &Params{Key: ek, Identity: "a;b=c d@news.example.com"}, now)
	if got := parseTags(t, h)["i"]; got != "a=3B=62=3Dc=20d@news.example.com" {
		t.Errorf("i= %q: want DKIM-Quoted-Printable", got)
	}
	if err := verifyGo(append([]byte(h), msg...), records(t, ek)); err != nil {
		t.Errorf("quoted i=: %v", err)
	}
	h, _ = s.Header(msg, &Params{Key: ek, Headers: []string{"Subject"}}, now)
	if got := parseTags(t, h)["h"]; got != "from:subject" {
		t.Errorf("From must always be signed: h=%s", got)
	}
	if _, ok := parseTags(t, h)["x"]; ok {
		t.Error("x= without Expire")
	}
}

func parseTags(t *testing.T, h string) map[string]string {
	t.Helper()
	v, ok := strings.CutPrefix(h, "DKIM-Signature:")
	if !ok {
		t.Fatalf("not a DKIM-Signature: %q", h)
	}
	m := map[string]string{}
	for _, kv := range strings.Split(v, ";") {
		kv = strings.Join(strings.Fields(kv), "")
		if k, v, ok := strings.Cut(kv, "="); ok {
			m[k] = v
		}
	}
	return m
}

// TestOversigning: a second From, Subject or To, or a List-Unsubscribe
// added in transit, breaks the signature; other added fields do not.
func TestOversigning(t *testing.T) {
	rk, ek := testKeys(t)
	recs := records(t, rk, ek)
	s := NewSigner(Options{})
	base := "From: alice@example.com\r\nTo: bob@example.net\r\nSubject: hi\r\nDate: Sun, 29 Nov 2026 10:00:00 +0000\r\n\r\nbody\r\n"
	p := &Params{Key: ek, Oversign: []string{"From", "To", "Subject", "Date", "List-Unsubscribe", "List-Unsubscribe-Post"}}
	signed, err := s.Sign([]byte(base), p, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	sigEnd := len(signed) - len(base)
	if err := verifyGo(signed, recs); err != nil {
		t.Fatalf("unchanged: %v", err)
	}
	for _, tt := range []struct {
		add    string
		break_ bool
	}{
		{"From: mallory@evil.example\r\n", true},
		{"Subject: buy now\r\n", true},
		{"To: victim@example.net\r\n", true},
		{"List-Unsubscribe: <https://evil.example/u>\r\n", true},
		{"List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n", true},
		{"Received: from relay\r\n", false},
		{"X-Spam-Score: 0\r\n", false},
	} {
		// Added below the signature, as a relay would, and at the end of
		// the header, where a From picker looks first.
		for _, at := range []int{sigEnd, len(signed) - len("\r\nbody\r\n")} {
			m := append(append(append([]byte{}, signed[:at]...), tt.add...), signed[at:]...)
			err := verifyGo(m, recs)
			if tt.break_ && err == nil {
				t.Errorf("adding %q at %d still verifies", tt.add, at)
			}
			if !tt.break_ && err != nil {
				t.Errorf("adding %q at %d: %v", tt.add, at, err)
			}
		}
	}
}

// TestBodyHashOnce: signing the same body for several queues (different
// keys, headers, canonicalization of the header) hashes it once per body
// canonicalization; a changed body is hashed again.
func TestBodyHashOnce(t *testing.T) {
	rk, ek := testKeys(t)
	recs := records(t, rk, ek)
	s := NewSigner(Options{CacheSize: 2})
	body := "\r\n" + strings.Repeat("line of text\r\n", 1000)
	now := time.Now()
	for i, hdr := range []string{"From: a@example.com\r\n", "From: a@example.com\r\nList-Unsubscribe: <https://x.example/1>\r\n", "From: b@example.com\r\nTo: c@example.net\r\n"} {
		for _, k := range []*Key{rk, ek} {
			signed, err := s.Sign([]byte(hdr+body), &Params{Key: k, HeaderCanon: canons[i%2][0]}, now)
			if err != nil {
				t.Fatal(err)
			}
			if err := verifyGo(signed, recs); err != nil {
				t.Fatalf("%d: %v", i, err)
			}
		}
	}
	if hits, misses := s.CacheStats(); misses != 1 || hits != 5 {
		t.Errorf("hits, misses = %d, %d; want 5, 1", hits, misses)
	}
	// A different canonicalization or body is another entry; the cache
	// holds two, evicting the oldest.
	for _, tt := range []struct {
		body  string
		canon Canon
		miss  bool
	}{
		{body, Simple, true},
		{body + "x\r\n", Relaxed, true},
		{body, Relaxed, true}, // evicted by the two before
		{body + "x\r\n", Relaxed, false},
	} {
		_, m0 := s.CacheStats()
		signed, err := s.Sign([]byte("From: a@example.com\r\n"+tt.body), &Params{Key: ek, BodyCanon: tt.canon}, now)
		if err != nil {
			t.Fatal(err)
		}
		if err := verifyGo(signed, recs); err != nil {
			t.Fatal(err)
		}
		if _, m1 := s.CacheStats(); (m1 > m0) != tt.miss {
			t.Errorf("body %d bytes %s: miss=%v, want %v", len(tt.body), tt.canon, m1 > m0, tt.miss)
		}
	}
}

// TestCanonRFCExample is RFC 6376 3.4.5's example.
func TestCanonRFCExample(t *testing.T) {
	msg := []byte("A: X\r\nB : Y\t\r\n\tZ  \r\n\r\n C \r\nD \t E\r\n\r\n\r\n")
	fields, at := splitHeader(msg)
	var rh, sh []byte
	for _, f := range fields {
		rh = canonHeader(rh, msg, f, Relaxed)
		sh = canonHeader(sh, msg, f, Simple)
	}
	if string(rh) != "a:X\r\nb:Y Z\r\n" {
		t.Errorf("relaxed header %q", rh)
	}
	if string(sh) != "A: X\r\nB : Y\t\r\n\tZ  \r\n" {
		t.Errorf("simple header %q", sh)
	}
	var rb, sb bytes.Buffer
	canonBody(&rb, msg[at:], Relaxed)
	canonBody(&sb, msg[at:], Simple)
	if rb.String() != " C\r\nD E\r\n" {
		t.Errorf("relaxed body %q", rb.String())
	}
	if sb.String() != " C \r\nD \t E\r\n" {
		t.Errorf("simple body %q", sb.String())
	}
	for _, tt := range []struct {
		body          string
		simple, relax string
	}{
		{"", "\r\n", ""},
		{"\r\n\r\n", "\r\n", ""},
		{"  \r\n", "  \r\n", ""},
		{"a", "a\r\n", "a\r\n"},
		{"a\rb\nc", "a\r\nb\r\nc\r\n", "a\r\nb\r\nc\r\n"},
		{"a \t b\t\r\n", "a \t b\t\r\n", "a b\r\n"},
	} {
		var s, r bytes.Buffer
		canonBody(&s, []byte(tt.body), Simple)
		canonBody(&r, []byte(tt.body), Relaxed)
		if s.String() != tt.simple || r.String() != tt.relax {
			t.Errorf("body %q: simple %q relaxed %q, want %q %q", tt.body, s.String(), r.String(), tt.simple, tt.relax)
		}
	}
}

func TestLoadKey(t *testing.T) {
	if _, err := LoadKey("s", "example.com", filepath.Join(t.TempDir(), "none")); err == nil || !strings.Contains(err.Error(), "no such file") {
		t.Errorf("missing key: %v", err)
	}
	_, ek := testKeys(t)
	if _, err := NewKey("", "example.com", ek.Signer); err == nil {
		t.Error("empty selector accepted")
	}
}

// TestConcurrentSign: one Signer shared by deliveries in parallel, its
// small cache evicting all the while, gives only good signatures.
func TestConcurrentSign(t *testing.T) {
	_, ek := testKeys(t)
	recs := records(t, ek)
	s := NewSigner(Options{CacheSize: 3})
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 40; i++ {
				msg := fmt.Sprintf("From: a@example.com\r\nSubject: %d\r\n\r\nbody %d\r\n", g, (g+i)%7)
				out, err := s.Sign([]byte(msg), &Params{Key: ek}, time.Now())
				if err == nil {
					err = verifyGo(out, recs)
				}
				if err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if hits, misses := s.CacheStats(); hits+misses != 320 || hits == 0 {
		t.Errorf("hits %d, misses %d", hits, misses)
	}
}
