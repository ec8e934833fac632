package dkim

import (
	"bytes"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/sluicemta/sluice/internal/config"
	"github.com/sluicemta/sluice/spool"
	"github.com/sluicemta/sluice/vmta"
)

// writeKey stores k's private key as PKCS #8 PEM in dir/name.
func writeKey(t *testing.T, dir, name string, k *Key) {
	t.Helper()
	der, err := x509.MarshalPKCS8PrivateKey(k.Signer)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, name), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
}

const policyConf = `host-name h.example
domain-key g-rsa,example.com,rsa.key
domain-key g-ed,example.com,ed.key
domain-key esp,esp.example,rsa.key
<virtual-mta own>
    smtp-source-host 127.0.0.2 own.example
    domain-key v1,example.com,ed.key
    dkim-sign yes
    <domain nosign.example>
        dkim-sign no
    </domain>
</virtual-mta>
<virtual-mta wild>
    smtp-source-host 127.0.0.4 wild.example
    domain-key wild,*,ed.key
</virtual-mta>
<virtual-mta plain>
    smtp-source-host 127.0.0.3 plain.example
</virtual-mta>
<virtual-mta-pool pool>
    virtual-mta plain
    <domain *>
        dkim-sign yes
        dkim-identity-fallback @esp.example
        dkim-expire-after 2d
    </domain>
</virtual-mta-pool>
<domain *>
    dkim-sign no
</domain>
<domain signed.example>
    dkim-sign yes
    dkim-headers-canon simple
</domain>
<domain ed.example>
    dkim-sign yes
    dkim-algorithm ed25519-sha256
</domain>
<domain fixed.example>
    dkim-sign yes
    dkim-identity bounces@mail.example.com
    dkim-oversign-headers none
</domain>
`

// TestPolicy: which key signs, with which identity, per queue.
func TestPolicy(t *testing.T) {
	rk, ek := testKeys(t)
	dir := t.TempDir()
	writeKey(t, dir, "rsa.key", rk)
	writeKey(t, dir, "ed.key", ek)
	cf := filepath.Join(dir, "config")
	if err := os.WriteFile(cf, []byte(policyConf), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Load(cf)
	if err != nil {
		t.Fatal(err)
	}
	recs := records(t, rk, ek)
	for _, sel := range []string{"g-rsa", "esp"} {
		k := *rk
		k.Selector, k.Domain = sel, map[string]string{"g-rsa": "example.com", "esp": "esp.example"}[sel]
		for n, r := range records(t, &k) {
			recs[n] = r
		}
	}
	for _, sel := range []string{"g-ed", "v1", "wild"} {
		k := *ek
		k.Selector = sel
		if sel == "wild" {
			k.Domain = "customer.example"
		}
		for n, r := range records(t, &k) {
			recs[n] = r
		}
	}

	now := time.Now().Truncate(time.Second)
	from := func(f string) string {
		return "From: " + f + "\r\nTo: x@example.net\r\nSubject: s\r\n\r\nbody\r\n"
	}
	tests := []struct {
		name, vmta, domain, msg string
		// want tags; nil = unsigned
		want  map[string]string
		noKey bool
	}{
		{"off by default", "", "other.example", from("a@example.com"), nil, false},
		{"global domain", "", "signed.example", from("A <a@Example.COM>"), map[string]string{"d": "example.com", "s": "g-rsa", "c": "simple/relaxed", "i": ""}, false},
		{"parent domain key, i= subdomain", "", "signed.example", from("a@news.example.com"), map[string]string{"d": "example.com", "s": "g-rsa", "i": "@news.example.com"}, false},
		{"sender before from", "", "signed.example", "Sender: s@esp.example\r\n" + from("a@example.com"), map[string]string{"d": "esp.example", "s": "esp"}, false},
		{"algorithm picks ed25519", "", "ed.example", from("a@example.com"), map[string]string{"d": "example.com", "s": "g-ed", "a": "ed25519-sha256"}, false},
		{"vmta key first, vmta-level dkim-sign over global domain *", "own", "other.example", from("a@example.com"), map[string]string{"s": "v1", "a": "ed25519-sha256"}, false},
		{"vmta's own domain block over vmta level", "own", "nosign.example", from("a@example.com"), nil, false},
		{"wildcard key signs as the From domain", "wild", "signed.example", from("a@Customer.Example"), map[string]string{"d": "customer.example", "s": "wild", "i": ""}, false},
		{"a key naming the domain before the wildcard", "wild", "signed.example", from("a@news.example.com"), map[string]string{"d": "example.com", "s": "g-rsa", "i": "@news.example.com"}, false},
		{"no key, no fallback", "", "signed.example", from("a@other.org"), nil, true},
		{"no From at all", "", "signed.example", "Subject: s\r\n\r\nb\r\n", nil, true},
		{"fallback identity through a pool", "plain", "any.example", from("a@other.org"), map[string]string{"d": "esp.example", "s": "esp", "i": "", "x": strconv.FormatInt(now.Add(48*time.Hour).Unix(), 10)}, false},
		{"pool by name", "pool", "any.example", from("a@example.com"), map[string]string{"d": "example.com", "s": "g-rsa"}, false},
		{"fixed identity, no oversigning", "", "fixed.example", from("a@other.org"), map[string]string{"d": "example.com", "i": "bounces@mail.example.com", "h": "from:subject:to"}, false},
		{"8-bit display name", "", "signed.example", from("J\xfcrgen <j@example.com>"), map[string]string{"d": "example.com"}, false},
	}
	s := NewSigner(Options{})
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, err := s.SignFor(cfg, tt.vmta, tt.domain, []byte(tt.msg), now)
			if tt.noKey {
				if !errors.Is(err, ErrNoKey) || string(out) != tt.msg {
					t.Fatalf("want ErrNoKey and the content unchanged; got %v\n%s", err, out)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if tt.want == nil {
				if string(out) != tt.msg {
					t.Fatalf("signed although dkim-sign is off:\n%s", out)
				}
				return
			}
			tags := parseTags(t, string(out[:len(out)-len(tt.msg)]))
			for k, v := range tt.want {
				if tags[k] != v {
					t.Errorf("%s= %q, want %q", k, tags[k], v)
				}
			}
			if err := verifyGo(out, recs); err != nil {
				t.Errorf("verify: %v\n%s", err, out)
			}
		})
	}
}

// TestHook: the qmgr adapter signs per queue, and sends mail whose
// identity has no key unsigned (logged) instead of deferring it forever.
func TestHook(t *testing.T) {
	rk, _ := testKeys(t)
	dir := t.TempDir()
	writeKey(t, dir, "rsa.key", rk)
	cfg, err := config.Parse(filepath.Join(dir, "config"), []byte("host-name h.example\ndomain-key s-rsa,example.com,rsa.key\n<domain *>\ndkim-sign yes\n</domain>\n"))
	if err != nil {
		t.Fatal(err)
	}
	var logged []string
	hook := NewSigner(Options{}).Hook(func(f string, a ...any) { logged = append(logged, fmt.Sprintf(f, a...)) }, nil)
	msg := []byte("From: a@example.com\r\nSubject: s\r\n\r\nb\r\n")
	out, err := hook(cfg, spool.QueueKey{Domain: "example.net"}, msg)
	if err != nil || verifyGo(out, records(t, rk)) != nil {
		t.Fatalf("signed: %v\n%s", err, out)
	}
	other := []byte("From: a@other.org\r\n\r\nb\r\n")
	out, err = hook(cfg, spool.QueueKey{Domain: "example.net"}, other)
	if err != nil || !bytes.Equal(out, other) || len(logged) != 1 || !strings.Contains(logged[0], "no domain-key for the signing identity: identity other.org, queue example.net; sent unsigned") {
		t.Fatalf("no key: %v %q %q", err, out, logged)
	}
}

// TestConvertBeforeSigning: with vmta.Downgrade as Convert, a message with
// an 8-bit body and a line over 998 octets is converted, then signed, and
// vmta finds nothing more to change, so the signature survives DATA.
func TestConvertBeforeSigning(t *testing.T) {
	rk, _ := testKeys(t)
	dir := t.TempDir()
	writeKey(t, dir, "rsa.key", rk)
	cfg, err := config.Parse(filepath.Join(dir, "config"), []byte("host-name h.example\ndomain-key s-rsa,example.com,rsa.key\n<domain signed.example>\ndkim-sign yes\n</domain>\n"))
	if err != nil {
		t.Fatal(err)
	}
	msg := []byte("From: a@example.com\r\nSubject: long\r\nMIME-Version: 1.0\r\nContent-Type: text/html; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n<p>Gr\xc3\xbc\xc3\x9fe " + strings.Repeat("<b>x</b> ", 300) + "</p>\r\n")
	s := NewSigner(Options{Convert: vmta.Downgrade})
	out, err := s.SignFor(cfg, "", "signed.example", msg, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if bytes.HasSuffix(out, msg) {
		t.Fatal("content was not converted before signing")
	}
	if err := verifyGo(out, records(t, rk)); err != nil {
		t.Fatal(err)
	}
	if _, changed, err := vmta.Downgrade(out); err != nil || changed {
		t.Errorf("vmta would still change the signed content: changed=%v err=%v", changed, err)
	}
	// Unsigned queues are not converted here: vmta converts only when the
	// next hop needs it.
	if out, _ := s.SignFor(cfg, "", "other.example", msg, time.Now()); !bytes.Equal(out, msg) {
		t.Error("content of an unsigned queue changed")
	}
}
