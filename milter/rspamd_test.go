package milter

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sluicemta/sluice/internal/testutil"
)

// startRspamd runs rspamd's proxy worker in milter mode with self-scan and
// only the ARC module (plus the dkim module it needs) configured. DNS goes
// to a closed loopback port; the TLD list is cut to four entries because
// compiling the real one takes over a minute on a small machine.
func startRspamd(t *testing.T) (socket, txt string) {
	t.Helper()
	bin := testutil.NeedCommand(t, "rspamd")
	dir := t.TempDir()
	key, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		t.Fatal(err)
	}
	keyPath := filepath.Join(dir, "arc.key")
	pemKey := pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(key)})
	if err := os.WriteFile(keyPath, pemKey, 0o600); err != nil {
		t.Fatal(err)
	}
	pub, err := x509.MarshalPKIXPublicKey(&key.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	txt = "v=DKIM1; k=rsa; p=" + base64.StdEncoding.EncodeToString(pub)
	if err := os.WriteFile(filepath.Join(dir, "tld.dat"), []byte("org\nnet\ncom\ntest\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(dir, "proxy.sock")
	conf := strings.NewReplacer("@DIR@", dir).Replace(`
lua = "$RULESDIR/rspamd.lua"
modules { path = "${PLUGINSDIR}"; }
options {
  pidfile = "@DIR@/rspamd.pid";
  filters = "dkim";
  dns { nameserver = ["127.0.0.1:9"]; timeout = 0.2s; retransmits = 1; }
  local_addrs = [127.0.0.0/8];
  url_tld = "@DIR@/tld.dat";
  cache_file = "@DIR@/symbols.cache";
  dynamic_conf = "@DIR@/dyn";
  history_file = "@DIR@/history";
  hs_cache_dir = "@DIR@/";
  control_socket = "@DIR@/ctl.sock mode=0600";
  stats_file = "@DIR@/stats.ucl";
  tempdir = "@DIR@";
  explicit_modules = [];
}
logging { type = "console"; level = "error"; }
worker "rspamd_proxy" {
  bind_socket = "@DIR@/proxy.sock mode=0600";
  milter = yes;
  timeout = 30s;
  count = 1;
  upstream "local" { default = yes; self_scan = yes; }
}
dkim { }
actions { reject = 1000; add_header = 999; greylist = 998; }
arc {
  sign_local = true;
  sign_inbound = true;
  use_domain = "header";
  use_esld = false;
  allow_hdrfrom_mismatch = true;
  allow_username_mismatch = true;
  domain { example.org { path = "@DIR@/arc.key"; selector = "sel"; } }
}
`)
	confPath := filepath.Join(dir, "rspamd.conf")
	if err := os.WriteFile(confPath, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "-f", "-i", "-c", confPath, "-u", "root", "-g", "root")
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			cmd.Process.Kill()
			<-done
		}
	})
	for i := 0; ; i++ {
		if _, err := os.Stat(sock); err == nil {
			break
		}
		select {
		case <-done:
			t.Fatalf("rspamd exited:\n%s", out.String())
		case <-time.After(100 * time.Millisecond):
		}
		if i > 300 {
			t.Fatalf("rspamd did not create %s:\n%s", sock, out.String())
		}
	}
	return "unix:" + sock, txt
}

func arcVerify(t *testing.T, msg []byte, txt string) string {
	t.Helper()
	py := testutil.NeedPython(t)
	f := filepath.Join(t.TempDir(), "msg.eml")
	if err := os.WriteFile(f, msg, 0o644); err != nil {
		t.Fatal(err)
	}
	script := `
import sys, dkim
txt = sys.argv[2].encode()
def dnsfunc(name, timeout=5):
    return txt if name in (b"sel._domainkey.example.org.", b"sel._domainkey.example.org") else None
cv, results, why = dkim.arc_verify(open(sys.argv[1], "rb").read(), dnsfunc=dnsfunc)
print(cv.decode(), why)
`
	out, err := exec.Command(py, "-c", script, f, txt).CombinedOutput()
	if err != nil {
		t.Fatalf("python3 dkim.arc_verify: %v\n%s", err, out)
	}
	return strings.TrimSpace(string(out))
}

// TestRspamdARC seals a message with rspamd's ARC module in milter mode,
// chained after OpenDKIM, and checks the chain with python3-dkim.
func TestRspamdARC(t *testing.T) {
	rsock, arcTXT := startRspamd(t)
	dsock, dkimTXT := startOpenDKIM(t, "relaxed/relaxed")
	c := mustChain(t,
		Config{Name: "opendkim", Socket: dsock, CommandTimeout: 10 * time.Second, ContentTimeout: 10 * time.Second},
		Config{Name: "rspamd", Socket: rsock, CommandTimeout: 20 * time.Second, ContentTimeout: 20 * time.Second},
	)
	s, d := c.Begin(context.Background(), ConnInfo{Hostname: "localhost", Addr: "127.0.0.1", Port: 40001, Helo: "client.example.org"})
	defer s.Close()
	if d.Verdict != Continue {
		t.Fatal(d)
	}
	s.SetMacro("i", "QARC1")
	s.Mail("alice@example.org", nil)
	s.Rcpt("bob@example.net", nil)
	s.Data()
	res, err := s.Message(dkimHeader, strings.NewReader(dkimBody))
	if err != nil {
		t.Fatal(err)
	}
	if res.Decision.Verdict != Continue {
		t.Fatalf("decision %+v", res.Decision)
	}
	msg := render(res.Header, []byte(dkimBody))
	for _, h := range []string{"ARC-Seal:", "ARC-Message-Signature:", "ARC-Authentication-Results:", "DKIM-Signature:"} {
		if !bytes.Contains(msg, []byte(h)) {
			t.Fatalf("no %s header:\n%s", h, msg)
		}
	}
	// ARC verification fetches both keys under the same selector name;
	// rspamd signed with its own key, OpenDKIM with another, so verify
	// each against its key.
	if got := arcVerify(t, msg, arcTXT); !strings.HasPrefix(got, "pass") {
		t.Errorf("ARC chain: %s\n%s", got, msg)
	}
	if !dkimVerify(t, msg, dkimTXT) {
		t.Errorf("DKIM signature broken by the ARC milter:\n%s", msg)
	}
}
