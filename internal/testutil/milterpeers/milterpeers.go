// Package milterpeers starts the real milters sluice is tested against
// (OpenDKIM signing, rspamd's proxy sealing ARC) and checks what they
// wrote with python3-dkim, answering its key lookups from the records
// given instead of DNS. It only runs external programs: it must not
// import package milter, whose own tests use it.
package milterpeers

import (
	"bytes"
	"cmp"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/sluicemta/sluice/internal/testutil"
)

// Record is a DNS TXT record: Name is the owner name without the
// trailing dot, e.g. "sel._domainkey.example.org".
type Record struct {
	Name string
	TXT  string
}

// KeyName is the DNS name of a DKIM key: selector._domainkey.domain.
func KeyName(selector, domain string) string {
	return selector + "._domainkey." + domain
}

// keyDefaults fills in the signing domain and selector both peers default to.
func keyDefaults(domain, selector string) (string, string) {
	return cmp.Or(domain, "example.org"), cmp.Or(selector, "sel")
}

// OpenDKIMOptions configures StartOpenDKIM; zero values take the defaults.
type OpenDKIMOptions struct {
	Domain           string // signing domain; default "example.org"
	Selector         string // default "sel"
	Canonicalization string // default "simple/simple"
}

// StartOpenDKIM runs a real OpenDKIM in signing mode on a unix socket in a
// temp dir, stopped at the end of the test. It returns the milter socket
// spec ("unix:/path") and the DNS record of its key.
func StartOpenDKIM(t testing.TB, opts OpenDKIMOptions) (socket string, rec Record) {
	t.Helper()
	opts.Domain, opts.Selector = keyDefaults(opts.Domain, opts.Selector)
	opts.Canonicalization = cmp.Or(opts.Canonicalization, "simple/simple")
	bin := testutil.NeedCommand(t, "opendkim")
	genkey := testutil.NeedCommand(t, "opendkim-genkey")
	dir := shortTempDir(t, "odk")
	if out, err := exec.Command(genkey, "-D", dir, "-d", opts.Domain, "-s", opts.Selector, "-b", "1024").CombinedOutput(); err != nil {
		t.Fatalf("opendkim-genkey: %v\n%s", err, out)
	}
	zone, err := os.ReadFile(filepath.Join(dir, opts.Selector+".txt"))
	if err != nil {
		t.Fatal(err)
	}
	// sel._domainkey IN TXT ( "v=DKIM1; ..." "p=..." ) ; comment
	rec.Name = KeyName(opts.Selector, opts.Domain)
	for _, m := range regexp.MustCompile(`"([^"]*)"`).FindAllStringSubmatch(string(zone), -1) {
		rec.TXT += m[1]
	}
	if !strings.Contains(rec.TXT, "p=") {
		t.Fatalf("opendkim-genkey wrote no key record:\n%s", zone)
	}
	sock := filepath.Join(dir, "odk.sock")
	conf := filepath.Join(dir, "opendkim.conf")
	err = os.WriteFile(conf, []byte(strings.Join([]string{
		"Domain " + opts.Domain,
		"Selector " + opts.Selector,
		"KeyFile " + filepath.Join(dir, opts.Selector+".private"),
		"Socket local:" + sock,
		"Mode s",
		"Canonicalization " + opts.Canonicalization,
		"Syslog no",
		"InternalHosts 127.0.0.1",
		"RequireSafeKeys no", // the temp dir lives under world-writable /tmp
		"PidFile " + filepath.Join(dir, "pid"),
		"",
	}, "\n")), 0o644)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "-x", conf, "-f")
	out := start(t, "opendkim", cmd, 0)
	waitSocket(t, "opendkim", sock, out, 5*time.Second)
	return "unix:" + sock, rec
}

// RspamdOptions configures StartRspamd; zero values take the defaults.
type RspamdOptions struct {
	Domain   string // ARC signing domain; default "example.org"
	Selector string // default "sel"
}

// StartRspamd runs rspamd's proxy worker in milter mode with self-scan and
// only the ARC module (plus the dkim module it needs), sealing for
// opts.Domain: the README's ARC recipe plus what a test needs (temp paths,
// DNS to a closed loopback port, a four-entry TLD list because compiling
// the real one takes over a minute on a small machine). It returns the
// milter socket spec and the DNS record of the sealing key.
func StartRspamd(t testing.TB, opts RspamdOptions) (socket string, rec Record) {
	t.Helper()
	opts.Domain, opts.Selector = keyDefaults(opts.Domain, opts.Selector)
	bin := testutil.NeedCommand(t, "rspamd")
	dir := shortTempDir(t, "rsp")
	key, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		t.Fatal(err)
	}
	pemKey := pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(key)})
	if err := os.WriteFile(filepath.Join(dir, "arc.key"), pemKey, 0o600); err != nil {
		t.Fatal(err)
	}
	pub, err := x509.MarshalPKIXPublicKey(&key.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	rec = Record{Name: KeyName(opts.Selector, opts.Domain), TXT: "v=DKIM1; k=rsa; p=" + base64.StdEncoding.EncodeToString(pub)}
	if err := os.WriteFile(filepath.Join(dir, "tld.dat"), []byte("org\nnet\ncom\ntest\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(dir, "proxy.sock")
	conf := strings.NewReplacer("@DIR@", dir, "@DOMAIN@", opts.Domain, "@SELECTOR@", opts.Selector).Replace(`
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
  domain { @DOMAIN@ { path = "@DIR@/arc.key"; selector = "@SELECTOR@"; } }
}
`)
	confPath := filepath.Join(dir, "rspamd.conf")
	if err := os.WriteFile(confPath, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "-f", "-i", "-c", confPath, "-u", "root", "-g", "root")
	// rspamd stops its workers on SIGTERM; a kill would leave them running.
	out := start(t, "rspamd", cmd, syscall.SIGTERM)
	waitSocket(t, "rspamd", sock, out, 30*time.Second)
	return "unix:" + sock, rec
}

// DKIMVerify reports whether python3-dkim verifies msg's first
// DKIM-Signature, looking keys up only in records.
func DKIMVerify(t testing.TB, msg []byte, records ...Record) bool {
	t.Helper()
	out := runPython(t, "dkim.verify", msg, records, `
print("PASS" if dkim.verify(msg, dnsfunc=dnsfunc) else "FAIL")
`)
	switch out {
	case "PASS":
		return true
	case "FAIL":
		return false
	}
	t.Fatalf("python3 dkim.verify: unexpected output %q", out)
	return false
}

// ARCVerify runs python3-dkim's arc_verify on msg, looking keys up only in
// records, and returns its chain validation ("pass", "fail", "none")
// followed by the reason it gives.
func ARCVerify(t testing.TB, msg []byte, records ...Record) string {
	t.Helper()
	return runPython(t, "dkim.arc_verify", msg, records, `
cv, results, why = dkim.arc_verify(msg, dnsfunc=dnsfunc)
print(cv.decode(), why)
`)
}

// runPython runs body after a prelude that reads the message into msg and
// defines dnsfunc over records; it returns the trimmed output.
func runPython(t testing.TB, what string, msg []byte, records []Record, body string) string {
	t.Helper()
	py := testutil.NeedPython(t)
	f := filepath.Join(t.TempDir(), "msg.eml")
	if err := os.WriteFile(f, msg, 0o644); err != nil {
		t.Fatal(err)
	}
	zone := map[string]string{}
	for _, r := range records {
		zone[strings.ToLower(strings.TrimSuffix(r.Name, "."))] = r.TXT
	}
	js, err := json.Marshal(zone)
	if err != nil {
		t.Fatal(err)
	}
	script := `
import sys, json, dkim
zone = json.loads(sys.argv[2])
def dnsfunc(name, timeout=5):
    txt = zone.get(name.decode().rstrip(".").lower())
    return txt.encode() if txt is not None else None
msg = open(sys.argv[1], "rb").read()
` + body
	out, err := exec.Command(py, "-c", script, f, string(js)).CombinedOutput()
	if err != nil {
		t.Fatalf("python3 %s: %v\n%s", what, err, out)
	}
	return strings.TrimSpace(string(out))
}

// shortTempDir makes a temp dir directly under os.TempDir(), removed at
// the end of the test: a unix socket path must fit in sun_path (108
// bytes), which t.TempDir() under a long test name may not.
func shortTempDir(t testing.TB, prefix string) string {
	t.Helper()
	dir, err := os.MkdirTemp("", prefix)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

// peerOutput collects a peer's stdout and stderr and notes its exit.
type peerOutput struct {
	mu   sync.Mutex
	buf  bytes.Buffer
	done chan struct{}
}

func (o *peerOutput) Write(p []byte) (int, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.buf.Write(p)
}

func (o *peerOutput) String() string {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.buf.String()
}

// start starts cmd in its own process group and stops the whole group at
// the end of the test: with stop if not zero, then SIGKILL after 5 s; with
// SIGKILL at once otherwise. The group matters: rspamd forks helpers that
// outlive a killed parent and would hold its output pipe open forever.
func start(t testing.TB, name string, cmd *exec.Cmd, stop syscall.Signal) *peerOutput {
	t.Helper()
	out := &peerOutput{done: make(chan struct{})}
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.WaitDelay = 2 * time.Second // never block on a pipe a stray child holds
	if err := cmd.Start(); err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	pgid := cmd.Process.Pid
	go func() { cmd.Wait(); close(out.done) }()
	t.Cleanup(func() {
		if stop != 0 {
			syscall.Kill(-pgid, stop)
			select {
			case <-out.done:
			case <-time.After(5 * time.Second):
			}
		}
		// Whatever of the group is left (all of it, or helpers the
		// parent did not wait for) goes now.
		syscall.Kill(-pgid, syscall.SIGKILL)
		<-out.done
	})
	return out
}

// waitSocket waits until the peer has created sock, failing the test with
// the peer's output if it exits first or takes longer than limit.
func waitSocket(t testing.TB, name, sock string, out *peerOutput, limit time.Duration) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for {
		if _, err := os.Stat(sock); err == nil {
			return
		}
		select {
		case <-out.done:
			t.Fatalf("%s exited before creating %s:\n%s", name, sock, out.String())
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s did not create %s within %v:\n%s", name, sock, limit, out.String())
		}
	}
}
