package e2e

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/sluicemta/sluice/internal/dkim/dkimkey"
	"github.com/sluicemta/sluice/internal/testutil/milterpeers"
	"github.com/sluicemta/sluice/internal/testutil/sluicetest"
	"github.com/sluicemta/sluice/internal/testutil/smtpsink"
)

// TestNativeDKIMSigning: with dkim-sign yes and a domain-key, mail relayed
// through sluiced reaches the next hop signed, and python3-dkim verifies
// the exact bytes delivered, for RSA and Ed25519 keys, on an 8-bit body
// with long lines (which the client would re-encode: signing comes after).
func TestNativeDKIMSigning(t *testing.T) {
	for _, algo := range []string{"rsa-sha256", "ed25519-sha256"} {
		t.Run(algo, func(t *testing.T) {
			var der []byte
			var err error
			if algo == "rsa-sha256" {
				k, _ := rsa.GenerateKey(rand.Reader, 2048)
				der, err = x509.MarshalPKCS8PrivateKey(k)
			} else {
				_, k, _ := ed25519.GenerateKey(rand.Reader)
				der, err = x509.MarshalPKCS8PrivateKey(k)
			}
			if err != nil {
				t.Fatal(err)
			}
			keyFile := filepath.Join(t.TempDir(), "sel.pem")
			if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o640); err != nil {
				t.Fatal(err)
			}
			parsed, err := dkimkey.Parse(mustRead(t, keyFile))
			if err != nil {
				t.Fatal(err)
			}
			txt, err := dkimkey.Record(parsed)
			if err != nil {
				t.Fatal(err)
			}
			key := milterpeers.Record{Name: milterpeers.KeyName("sel", "sender.test"), TXT: txt}
			sink := smtpsink.Start(t, smtpsink.Options{Ext: smtpsink.NoExt})
			d := sluicetest.Start(t, sluicetest.Options{Config: fmt.Sprintf(`
domain-key sel,sender.test,%s
<domain *>
    route [127.0.0.1]:%d
    dkim-sign yes
    dkim-algorithm %s
</domain>
`, keyFile, sink.Port(), algo)})
			body := "Grüße aus Köln\n" + string(bytes.Repeat([]byte("long line "), 120)) + "\ntrailing blank lines follow\n\n\n"
			swaks(t, d.SMTPAddr(), "--from", "alice@sender.test", "--to", "bob@rcpt.test",
				"--header", "Subject: native "+algo, "--header", "Content-Type: text/plain; charset=utf-8",
				"--header", "Content-Transfer-Encoding: 8bit", "--body", body)
			msgs, err := sink.WaitMessages(1, 20*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			m := msgs[0].Data
			if !bytes.HasPrefix(m, []byte("DKIM-Signature:")) {
				t.Fatalf("not signed:\n%s", m)
			}
			if !bytes.Contains(m, []byte("a="+algo)) {
				t.Errorf("signature is not %s:\n%s", algo, m[:400])
			}
			if !milterpeers.DKIMVerify(t, m, key) {
				t.Fatalf("signature does not verify:\n%s", m)
			}
			tampered := bytes.Replace(m, []byte("trailing blank"), []byte("trailing-blank"), 1)
			if milterpeers.DKIMVerify(t, tampered, key) {
				t.Fatal("a changed body still verifies: the check cannot fail")
			}
		})
	}
}

func mustRead(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
