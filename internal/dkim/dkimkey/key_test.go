package dkimkey

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"os"
	"strings"
	"sync"
	"testing"
)

var (
	once  sync.Once
	rsa2k *rsa.PrivateKey
)

func keys(t testing.TB) {
	once.Do(func() { rsa2k, _ = rsa.GenerateKey(rand.Reader, 2048) })
	if rsa2k == nil {
		t.Fatal("no RSA key")
	}
}

func pemOf(typ string, der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der})
}

func TestParse(t *testing.T) {
	keys(t)
	_, ed, _ := ed25519.GenerateKey(rand.Reader)
	ec, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	pk8 := func(k any) []byte {
		der, err := x509.MarshalPKCS8PrivateKey(k)
		if err != nil {
			t.Fatal(err)
		}
		return der
	}
	ecDER, _ := x509.MarshalECPrivateKey(ec)
	enc := pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Headers: map[string]string{"Proc-Type": "4,ENCRYPTED", "DEK-Info": "AES-128-CBC,00"}, Bytes: []byte{1}})
	tests := []struct {
		name string
		data []byte
		algo string // "" = error expected
		err  string
	}{
		{"pkcs1 rsa (opendkim-genkey)", pemOf("RSA PRIVATE KEY", x509.MarshalPKCS1PrivateKey(rsa2k)), RSASHA256, ""},
		{"pkcs8 rsa", pemOf("PRIVATE KEY", pk8(rsa2k)), RSASHA256, ""},
		{"pkcs8 ed25519", pemOf("PRIVATE KEY", pk8(ed)), Ed25519SHA256, ""},
		{"dkimpy ed25519 seed", []byte(base64.StdEncoding.EncodeToString(ed.Seed()) + "\n"), Ed25519SHA256, ""},
		{"leading text before PEM", append([]byte("# my key\n"), pemOf("PRIVATE KEY", pk8(ed))...), Ed25519SHA256, ""},
		{"ecdsa", pemOf("PRIVATE KEY", pk8(ec)), "", "are not used by DKIM"},
		{"ec private key block", pemOf("EC PRIVATE KEY", ecDER), "", `PEM block "EC PRIVATE KEY" is not`},
		{"certificate", pemOf("CERTIFICATE", []byte{1, 2}), "", "is not an RSA or Ed25519 private key"},
		{"encrypted", enc, "", "encrypted private keys are not supported"},
		{"bad der", pemOf("PRIVATE KEY", []byte{1, 2, 3}), "", "parse PRIVATE KEY"},
		{"empty", nil, "", "empty key file"},
		{"garbage", []byte("hello"), "", "no PEM private key"},
		{"short seed", []byte(base64.StdEncoding.EncodeToString(make([]byte, 16))), "", "no PEM private key"},
	}
	// crypto/rsa no longer makes keys this small; openssl genrsa 512 did.
	small, err := os.ReadFile("testdata/rsa512.pem")
	if err != nil {
		t.Fatal(err)
	}
	tests = append(tests, struct {
		name string
		data []byte
		algo string
		err  string
	}{"rsa 512", small, "", "RSA key has 512 bits; DKIM needs at least 1024"})
	for _, tt := range tests {
		s, err := Parse(tt.data)
		if tt.algo == "" {
			if err == nil || !strings.Contains(err.Error(), tt.err) {
				t.Errorf("%s: got %v, want %q", tt.name, err, tt.err)
			}
			continue
		}
		if err != nil {
			t.Errorf("%s: %v", tt.name, err)
			continue
		}
		if got := Algorithm(s); got != tt.algo {
			t.Errorf("%s: algorithm %s, want %s", tt.name, got, tt.algo)
		}
	}
}

func TestRecord(t *testing.T) {
	keys(t)
	_, ed, _ := ed25519.GenerateKey(rand.Reader)
	r, err := Record(ed)
	if err != nil {
		t.Fatal(err)
	}
	p, ok := strings.CutPrefix(r, "v=DKIM1; k=ed25519; p=")
	if raw, _ := base64.StdEncoding.DecodeString(p); !ok || len(raw) != ed25519.PublicKeySize {
		t.Errorf("ed25519 record %q: want the raw 32-byte key (RFC 8463)", r)
	}
	r, err = Record(rsa2k)
	if err != nil {
		t.Fatal(err)
	}
	p, ok = strings.CutPrefix(r, "v=DKIM1; k=rsa; p=")
	der, _ := base64.StdEncoding.DecodeString(p)
	if pub, err := x509.ParsePKIXPublicKey(der); !ok || err != nil || !pub.(*rsa.PublicKey).Equal(&rsa2k.PublicKey) {
		t.Errorf("rsa record %q: %v", r, err)
	}
}

// FuzzParse: key files are outside input; nothing panics, and what is
// accepted can sign.
func FuzzParse(f *testing.F) {
	keys(f)
	_, ed, _ := ed25519.GenerateKey(rand.Reader)
	der, _ := x509.MarshalPKCS8PrivateKey(ed)
	f.Add(pemOf("PRIVATE KEY", der))
	f.Add(pemOf("RSA PRIVATE KEY", x509.MarshalPKCS1PrivateKey(rsa2k)))
	f.Add([]byte(base64.StdEncoding.EncodeToString(ed.Seed())))
	f.Add([]byte("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, data []byte) {
		s, err := Parse(data)
		if err != nil {
			return
		}
		if Algorithm(s) == "" {
			t.Fatalf("accepted a %T key", s.Public())
		}
		if _, err := Record(s); err != nil {
			t.Fatal(err)
		}
	})
}
