package config

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestReload: a bad file leaves the running snapshot in force; a good one
// takes effect for new work only.
func TestReload(t *testing.T) {
	d := t.TempDir()
	p := filepath.Join(d, "sluice.conf")
	write := func(src string) {
		t.Helper()
		if err := os.WriteFile(p, []byte(src), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("host-name h.example\n<domain *>\nmax-smtp-out 5\n</domain>\n")
	c, err := Load(p)
	if err != nil {
		t.Fatal(err)
	}
	s := NewStore(c)

	inFlight := s.Current() // work started before any reload

	write("host-name h.example\n<domain *>\nmax-smtp-out 5\nmax-smtp-ot 9\n</domain>\nsync-msg-create no\n")
	err = s.Reload(p)
	var es Errors
	if !errors.As(err, &es) || len(es) != 2 {
		t.Fatalf("Reload(bad) = %v, want 2 errors", err)
	}
	if s.Current() != c || s.Current().Domain("", "x.example").Int("max-smtp-out") != 5 {
		t.Fatal("a bad config replaced the running one")
	}

	write("host-name h.example\n<domain *>\nmax-smtp-out 7\n</domain>\n")
	if err := s.Reload(p); err != nil {
		t.Fatal(err)
	}
	if got := s.Current().Domain("", "x.example").Int("max-smtp-out"); got != 7 {
		t.Errorf("new work sees max-smtp-out %d, want 7", got)
	}
	if got := inFlight.Domain("", "x.example").Int("max-smtp-out"); got != 5 {
		t.Errorf("work in flight sees max-smtp-out %d, want 5", got)
	}

	if err := s.Reload(filepath.Join(d, "gone.conf")); err == nil || s.Current().Domain("", "x").Int("max-smtp-out") != 7 {
		t.Errorf("Reload(missing) = %v", err)
	}
}

// TestReloadConcurrent is for the race detector: readers take snapshots
// while reloads swap them.
func TestReloadConcurrent(t *testing.T) {
	d := t.TempDir()
	p := filepath.Join(d, "sluice.conf")
	if err := os.WriteFile(p, []byte("host-name h.example\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	c, err := Load(p)
	if err != nil {
		t.Fatal(err)
	}
	s := NewStore(c)
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for i := 0; i < 4; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				if s.Current().Domain("", "a.example").Int("max-smtp-out") != 20 {
					t.Error("bad read")
					return
				}
			}
		}()
	}
	for i := 0; i < 20; i++ {
		if err := s.Reload(p); err != nil {
			t.Error(err)
		}
	}
	close(stop)
	wg.Wait()
}

func writeCert(t *testing.T, dir, name string) (certFile, keyFile string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "h.example"},
		DNSNames:     []string{"h.example"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile = filepath.Join(dir, name+".pem"), filepath.Join(dir, name+".key")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), 0o600); err != nil {
		t.Fatal(err)
	}
	return certFile, keyFile
}

func TestCertificate(t *testing.T) {
	d := t.TempDir()
	writeCert(t, d, "a")
	_, bKey := writeCert(t, d, "b")
	p := filepath.Join(d, "sluice.conf")
	// Relative names resolve against the config file's directory.
	if err := os.WriteFile(p, []byte("host-name h.example\nsmtp-server-tls-certificate a.pem, a.key\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	c, err := Load(p)
	if err != nil {
		t.Fatal(err)
	}
	cert := c.TLSCertificate()
	if cert == nil || cert.Leaf == nil || cert.Leaf.Subject.CommonName != "h.example" {
		t.Fatalf("TLSCertificate = %v", cert)
	}
	if ck := c.Global().CertKey("smtp-server-tls-certificate"); ck.KeyFile != filepath.Join(d, "a.key") {
		t.Errorf("KeyFile = %q", ck.KeyFile)
	}
	// A key that does not match the certificate.
	if err := os.WriteFile(p, []byte("host-name h.example\nsmtp-server-tls-certificate "+filepath.Join(d, "a.pem")+","+bKey+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(p); err == nil || !strings.Contains(err.Error(), "sluice.conf:2: smtp-server-tls-certificate: load certificate: tls: private key does not match public key") {
		t.Errorf("mismatched key: %v", err)
	}
}

func TestRestartNeeded(t *testing.T) {
	parse := func(src string) *Config {
		t.Helper()
		c, err := Parse("t.conf", []byte("host-name h.example\n"+src))
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	a := parse("spool /a\nsmtp-listener 0/0:25\nlog-file /l\n")
	if got := RestartNeeded(a, parse("spool /a\nsmtp-listener 0/0:25\nlog-file /m\n<domain *>\nmax-smtp-out 1\n</domain>\n")); len(got) != 0 {
		t.Errorf("reloadable change reported: %q", got)
	}
	got := RestartNeeded(a, parse("spool /b\nsmtp-listener 0/0:26\nrun-as-user x\n"))
	if strings.Join(got, ",") != "smtp-listener,spool,run-as-user" {
		t.Errorf("RestartNeeded = %q", got)
	}
}
