package config

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func writeDKIMKeys(t *testing.T, dir string) (rsaFile, edFile string) {
	t.Helper()
	rk, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		t.Fatal(err)
	}
	rsaFile = filepath.Join(dir, "rsa.key")
	if err := os.WriteFile(rsaFile, pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(rk)}), 0o640); err != nil {
		t.Fatal(err)
	}
	_, ek, _ := ed25519.GenerateKey(rand.Reader)
	der, err := x509.MarshalPKCS8PrivateKey(ek)
	if err != nil {
		t.Fatal(err)
	}
	edFile = filepath.Join(dir, "ed.key")
	if err := os.WriteFile(edFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	return rsaFile, edFile
}

// TestDomainKey: keys load with the config (relative to its directory),
// per virtual MTA and globally; unreadable, malformed and world-readable
// keys are reported at their line.
func TestDomainKey(t *testing.T) {
	d := t.TempDir()
	rsaFile, _ := writeDKIMKeys(t, d)
	open := filepath.Join(d, "open.key")
	data, _ := os.ReadFile(rsaFile)
	if err := os.WriteFile(open, data, 0o644); err != nil {
		t.Fatal(err)
	}
	os.Chmod(open, 0o644) // whatever the umask
	if err := os.WriteFile(filepath.Join(d, "junk.key"), []byte("not a key\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(d, "big.key"), bytes.Repeat([]byte("A"), 70<<10), 0o600); err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(d, "sluice.conf")
	write := func(src string) {
		t.Helper()
		if err := os.WriteFile(p, []byte("host-name h.example\n"+src), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("domain-key s1,Example.COM.,rsa.key\n<virtual-mta v>\ndomain-key s2, example.net ,ed.key\ndkim-sign yes\n</virtual-mta>\n<domain *>\ndkim-sign yes\ndkim-identity @mail.example.com\n</domain>\n")
	c, err := Load(p)
	if err != nil {
		t.Fatal(err)
	}
	g := c.Global().DomainKeys("domain-key")
	if len(g) != 1 || g[0].Selector != "s1" || g[0].Domain != "example.com" || g[0].File != rsaFile || g[0].Signer == nil {
		t.Fatalf("global keys = %+v", g)
	}
	v := c.VMTA("v").DomainKeys("domain-key")
	if len(v) != 1 || v[0].Domain != "example.net" || v[0].File != filepath.Join(d, "ed.key") {
		t.Fatalf("vmta keys = %+v", v)
	}
	if _, ok := v[0].Signer.Public().(ed25519.PublicKey); !ok {
		t.Errorf("ed.key loaded as %T", v[0].Signer.Public())
	}
	if len(c.Warnings()) != 0 {
		t.Errorf("warnings: %v", c.Warnings())
	}

	tests := []struct{ line, err string }{
		{"domain-key s1,example.com,missing.key", "sluice.conf:2: domain-key: cannot read " + filepath.Join(d, "missing.key") + ": no such file or directory"},
		{"domain-key s1,example.com,junk.key", "sluice.conf:2: domain-key: " + filepath.Join(d, "junk.key") + ": no PEM private key"},
		{"domain-key s1,example.com,/dev/zero", "cannot read /dev/zero: not a regular file"},
		{"domain-key s1,example.com,big.key", "big.key: larger than 64 KiB"},
		{"domain-key s1,example.com", "want SELECTOR,DOMAIN,KEYFILE"},
		{"domain-key s 1,example.com,rsa.key", "is not a selector"},
		{"domain-key s1,*.example.com,rsa.key", `"*.example.com" is not a domain name`},
		{"<domain *>\ndkim-identity sender-or-reply-to\n</domain>", `dkim-identity "sender-or-reply-to": want sender-or-from, from, sender, @DOMAIN or an address`},
		{"<domain *>\ndkim-identity-fallback from\n</domain>", `want @DOMAIN or an address`},
		{"<domain *>\ndkim-sign-headers Subject,To\n</domain>", "dkim-sign-headers must include From"},
		{"<domain *>\ndkim-oversign-headers From,X:Y\n</domain>", `"X:Y" is not a header field name`},
		{"<domain *>\ndkim-algorithm rsa-sha1\n</domain>", `"rsa-sha1" is not one of rsa-sha256, ed25519-sha256`},
		{"<source 0/0>\ndomain-key s1,example.com,rsa.key\n</source>", "domain-key is not allowed in <source>"},
	}
	for _, tt := range tests {
		write(tt.line + "\n")
		_, err := Load(p)
		if err == nil || !strings.Contains(err.Error(), tt.err) {
			t.Errorf("%q: got %v, want %q", tt.line, err, tt.err)
		}
	}

	// A key everyone can read loads, with a warning that Check prints.
	write("domain-key s1,example.com,open.key\n")
	c, err = Load(p)
	if err != nil {
		t.Fatal(err)
	}
	if w := c.Warnings(); len(w) != 1 || !strings.Contains(w[0].Error(), "sluice.conf:2: warning: domain-key: "+open+" is readable by everyone (mode 0644)") {
		t.Errorf("warnings = %v", w)
	}
	var out bytes.Buffer
	if code := Check(p, &out); code != 0 || !strings.Contains(out.String(), "readable by everyone") {
		t.Errorf("Check = %d, %q", code, out.String())
	}
}

func TestDKIMDefaults(t *testing.T) {
	c, err := Parse("t.conf", []byte("host-name h.example\n"))
	if err != nil {
		t.Fatal(err)
	}
	b := c.Domain("", "example.org")
	if b.Bool("dkim-sign") || b.String("dkim-body-canon") != "relaxed" || b.String("dkim-headers-canon") != "relaxed" ||
		b.String("dkim-identity") != "sender-or-from" || b.IsSet("dkim-algorithm") || b.Duration("dkim-expire-after") != 0 {
		t.Error("unexpected DKIM defaults")
	}
	if got := b.Strings("dkim-oversign-headers"); len(got) != 6 || got[0] != "From" {
		t.Errorf("dkim-oversign-headers = %q", got)
	}
	if len(c.Global().DomainKeys("domain-key")) != 0 {
		t.Error("keys without domain-key lines")
	}
}
