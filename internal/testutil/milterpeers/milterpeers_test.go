package milterpeers

import (
	"bytes"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-msgauth/dkim"
)

const testMsg = "From: Alice <alice@example.org>\r\nTo: bob@example.net\r\nSubject: a  test\r\n\r\nbody line\r\n"

// signed returns testMsg signed by a fresh key for sel._domainkey.example.org
// and that key's record.
func signed(t *testing.T) ([]byte, Record) {
	t.Helper()
	key, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		t.Fatal(err)
	}
	var b bytes.Buffer
	if err := dkim.Sign(&b, strings.NewReader(testMsg), &dkim.SignOptions{
		Domain: "example.org", Selector: "sel", Signer: key,
		HeaderKeys: []string{"From", "To", "Subject"},
	}); err != nil {
		t.Fatal(err)
	}
	pub, err := x509.MarshalPKIXPublicKey(&key.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	return b.Bytes(), Record{Name: KeyName("sel", "example.org"), TXT: "v=DKIM1; k=rsa; p=" + base64.StdEncoding.EncodeToString(pub)}
}

func TestDKIMVerify(t *testing.T) {
	msg, rec := signed(t)
	_, other := signed(t)
	for _, tc := range []struct {
		name string
		msg  []byte
		recs []Record
		want bool
	}{
		{"signed", msg, []Record{rec}, true},
		{"trailing dot and case in the name", msg, []Record{{Name: "SEL._domainkey.Example.ORG.", TXT: rec.TXT}}, true},
		{"among other records", msg, []Record{{Name: "x._domainkey.example.org", TXT: other.TXT}, rec}, true},
		{"tampered header", bytes.Replace(msg, []byte("a  test"), []byte("a test"), 1), []Record{rec}, false},
		{"tampered body", bytes.Replace(msg, []byte("body line"), []byte("body Line"), 1), []Record{rec}, false},
		{"wrong key", msg, []Record{other}, false},
		{"no record", msg, nil, false},
		{"unsigned", []byte(testMsg), []Record{rec}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := DKIMVerify(t, tc.msg, tc.recs...); got != tc.want {
				t.Errorf("DKIMVerify = %v, want %v\n%s", got, tc.want, tc.msg)
			}
		})
	}
}

func TestARCVerifyUnsealed(t *testing.T) {
	// No ARC headers: python3-dkim reports no chain, never a pass.
	if got := ARCVerify(t, []byte(testMsg)); !strings.HasPrefix(got, "none") {
		t.Errorf("ARCVerify on an unsealed message = %q, want none", got)
	}
}

// dialMilter checks that a milter socket spec from Start* accepts a connection.
func dialMilter(t *testing.T, socket string) {
	t.Helper()
	path, ok := strings.CutPrefix(socket, "unix:")
	if !ok {
		t.Fatalf("socket %q is not a unix: spec", socket)
	}
	c, err := net.DialTimeout("unix", path, 5*time.Second)
	if err != nil {
		t.Fatalf("dial %s: %v", socket, err)
	}
	c.Close()
}

func TestStartOpenDKIM(t *testing.T) {
	sock, rec := StartOpenDKIM(t, OpenDKIMOptions{Domain: "sender.test", Selector: "s1", Canonicalization: "relaxed/simple"})
	if rec.Name != "s1._domainkey.sender.test" || !strings.HasPrefix(rec.TXT, "v=DKIM1;") || !strings.Contains(rec.TXT, "p=MI") {
		t.Errorf("record %+v", rec)
	}
	dialMilter(t, sock)
}

func TestStartRspamd(t *testing.T) {
	sock, rec := StartRspamd(t, RspamdOptions{})
	if rec.Name != "sel._domainkey.example.org" || !strings.HasPrefix(rec.TXT, "v=DKIM1; k=rsa; p=MI") {
		t.Errorf("record %+v", rec)
	}
	dialMilter(t, sock)
}
