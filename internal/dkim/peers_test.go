package dkim

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/sluicemta/sluice/internal/config"
	"github.com/sluicemta/sluice/internal/testutil"
)

// TestToolKeys: keys made by opendkim-genkey (RSA, PKCS #8 PEM) and by
// dkimpy's dknewkey (Ed25519, a base64 seed) load through domain-key, and
// what sluice signs verifies with python3-dkim against the DNS records the
// tools printed, per virtual MTA.
func TestToolKeys(t *testing.T) {
	genkey := testutil.NeedCommand(t, "opendkim-genkey")
	dknewkey := testutil.NeedCommand(t, "dknewkey")
	dir := t.TempDir()
	run := func(name string, args ...string) {
		t.Helper()
		cmd := exec.Command(name, args...)
		cmd.Dir = dir
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("%s: %v\n%s", name, err, out)
		}
	}
	run(genkey, "-b", "2048", "-s", "odk", "-d", "example.com")
	run(dknewkey, "--ktype", "ed25519", "dkp")
	os.Chmod(filepath.Join(dir, "dkp.key"), 0o600) // dknewkey leaves it to the umask

	// opendkim-genkey's .txt is a zone-file record in quoted chunks.
	txt, err := os.ReadFile(filepath.Join(dir, "odk.txt"))
	if err != nil {
		t.Fatal(err)
	}
	var rsaRec strings.Builder
	for _, m := range regexp.MustCompile(`"([^"]*)"`).FindAllStringSubmatch(string(txt), -1) {
		rsaRec.WriteString(m[1])
	}
	edRec, err := os.ReadFile(filepath.Join(dir, "dkp.dns"))
	if err != nil {
		t.Fatal(err)
	}
	recs := map[string]string{
		"odk._domainkey.example.com": rsaRec.String(),
		"dkp._domainkey.example.org": strings.TrimSpace(string(edRec)),
	}

	conf := filepath.Join(dir, "config")
	if err := os.WriteFile(conf, []byte(`host-name h.example
domain-key odk,example.com,odk.private
<virtual-mta ed>
    smtp-source-host 127.0.0.2 ed.example
    domain-key dkp,example.org,dkp.key
</virtual-mta>
<domain *>
    dkim-sign yes
</domain>
`), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Load(conf)
	if err != nil {
		t.Fatal(err)
	}
	for _, w := range cfg.Warnings() {
		t.Logf("config warning: %v", w)
	}
	s := NewSigner(Options{})
	var files []string
	for i, c := range []struct{ vmta, from string }{{"", "a@example.com"}, {"ed", "b@example.org"}, {"ed", "c@sub.example.com"}} {
		msg := "From: " + c.from + "\r\nTo: r@example.net\r\nSubject: Grüße, tool keys\r\n\r\nBody ünïcödé \r\n\r\n\r\n"
		out, err := s.SignFor(cfg, c.vmta, "example.net", []byte(msg), time.Now())
		if err != nil {
			t.Fatal(err)
		}
		if len(out) == len(msg) {
			t.Fatalf("%s via %q not signed", c.from, c.vmta)
		}
		f := filepath.Join(dir, "m"+string(rune('0'+i))+".eml")
		if err := os.WriteFile(f, toWire(out), 0o600); err != nil {
			t.Fatal(err)
		}
		files = append(files, f)
	}
	for f, why := range verifyPython(t, recs, files) {
		t.Errorf("python3-dkim: %s: %s", filepath.Base(f), why)
	}
}
