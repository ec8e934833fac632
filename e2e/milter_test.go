package e2e

import (
	"bytes"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"fmt"
	"net"
	"net/smtp"
	"net/textproto"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	gomilter "github.com/emersion/go-milter"

	"github.com/sluicemta/sluice/internal/testutil"
	"github.com/sluicemta/sluice/internal/testutil/sluicetest"
	"github.com/sluicemta/sluice/internal/testutil/smtpsink"
)

// startOpenDKIM runs a real OpenDKIM in signing mode for sender.test on a
// unix socket in a temp dir; it returns the socket and the key's TXT record.
func startOpenDKIM(t *testing.T) (socket, txt string) {
	t.Helper()
	bin := testutil.NeedCommand(t, "opendkim")
	genkey := testutil.NeedCommand(t, "opendkim-genkey")
	// A short directory: the socket path must fit sun_path.
	dir, err := os.MkdirTemp("", "odk")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if out, err := exec.Command(genkey, "-D", dir, "-d", "sender.test", "-s", "sel", "-b", "1024").CombinedOutput(); err != nil {
		t.Fatalf("opendkim-genkey: %v\n%s", err, out)
	}
	rec, err := os.ReadFile(filepath.Join(dir, "sel.txt"))
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range regexp.MustCompile(`"([^"]*)"`).FindAllStringSubmatch(string(rec), -1) {
		txt += m[1]
	}
	sock := filepath.Join(dir, "odk.sock")
	conf := filepath.Join(dir, "opendkim.conf")
	err = os.WriteFile(conf, []byte(strings.Join([]string{
		"Domain sender.test",
		"Selector sel",
		"KeyFile " + filepath.Join(dir, "sel.private"),
		"Socket local:" + sock,
		"Mode s",
		"Canonicalization simple/simple",
		"Syslog no",
		"InternalHosts 127.0.0.1",
		"RequireSafeKeys no", // the temp dir is under world-writable /tmp
		"PidFile " + filepath.Join(dir, "pid"),
		"",
	}, "\n")), 0o644)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "-x", conf, "-f")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
	})
	for i := 0; ; i++ {
		if _, err := os.Stat(sock); err == nil {
			break
		}
		if i > 100 {
			t.Fatalf("opendkim did not create %s: %s", sock, stderr.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	return "unix:" + sock, txt
}

// dkimVerify checks msg with python3-dkim, serving the test key itself.
func dkimVerify(t *testing.T, msg []byte, txt string) bool {
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
    return txt if name in (b"sel._domainkey.sender.test.", b"sel._domainkey.sender.test") else None
print("PASS" if dkim.verify(open(sys.argv[1], "rb").read(), dnsfunc=dnsfunc) else "FAIL")
`
	out, err := exec.Command(py, "-c", script, f, txt).CombinedOutput()
	if err != nil {
		t.Fatalf("python3 dkim: %v\n%s", err, out)
	}
	return strings.TrimSpace(string(out)) == "PASS"
}

// milterSource gives 127.0.0.1 (the e2e client) its own <source> naming
// the milters; the generated 127.0.0.0/8 one stays for everything else.
func milterSource(milters, blocks string) string {
	return blocks + `
<source 127.0.0.1/32>
    always-allow-relaying yes
    smtpd-milters ` + milters + `
</source>
`
}

// TestOpenDKIMSignsRelayedMail: a message relayed through sluiced with a
// real OpenDKIM as smtpd milter reaches the next hop with a signature
// that verifies, over the exact bytes delivered.
func TestOpenDKIMSignsRelayedMail(t *testing.T) {
	sock, txt := startOpenDKIM(t)
	sink := smtpsink.Start(t, smtpsink.Options{})
	d := sluicetest.Start(t, sluicetest.Options{Config: routes(sink.Port(), milterSource("opendkim", `
<milter opendkim>
    socket `+sock+`
    command-timeout 10s
    content-timeout 10s
</milter>`))})
	out := swaks(t, d.SMTPAddr(), "--from", "alice@sender.test", "--to", "bob@rcpt.test",
		"--header", "Subject: a  folded\n\tsubject   line ", "--header", "Message-Id: <odk-1@sender.test>",
		"--body", "Hello Bob,\n\ntrailing spaces   \n.dot line\n")
	if !strings.Contains(out, "250 2.0.0 Ok: queued as") {
		t.Fatalf("not queued:\n%s", out)
	}
	msgs, err := sink.WaitMessages(1, 20*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	m := msgs[0].Data
	if !bytes.Contains(m, []byte("DKIM-Signature:")) {
		t.Fatalf("no DKIM-Signature at the sink:\n%s", m)
	}
	// OpenDKIM inserts its signature at index 0, above our Received
	// header, as with Postfix; it never saw that header, so h= lacks it.
	if !bytes.HasPrefix(m, []byte("DKIM-Signature:")) || !bytes.Contains(m, []byte("\r\nReceived: from ")) {
		t.Errorf("want the signature on top, then our Received header:\n%s", m)
	}
	if sig := regexp.MustCompile(`h=([^;]*);`).FindSubmatch(m); sig == nil || bytes.Contains(bytes.ToLower(sig[1]), []byte("received")) {
		t.Errorf("signed headers %q: our hidden Received must not be among them", sig)
	}
	if !dkimVerify(t, m, txt) {
		t.Fatalf("signature does not verify:\n%s", m)
	}
	// The check can fail: one changed byte in a signed header breaks it.
	tampered := bytes.Replace(m, []byte("a  folded"), []byte("a folded"), 1)
	if bytes.Equal(tampered, m) || dkimVerify(t, tampered, txt) {
		t.Fatal("tampered message verifies; the check proves nothing")
	}
}

// TestMilterDownDefaultAction: an unreachable milter answers with its
// default-action, as seen by the SMTP client.
func TestMilterDownDefaultAction(t *testing.T) {
	dead := "inet:127.0.0.1:" + fmt.Sprint(testutil.FreePort(t))
	for _, tc := range []struct {
		action string
		want   string // the first refusal the client sees (EHLO, as Postfix refuses every command after a failed connect)
	}{
		{"tempfail", "451"},
		{"accept", "250"},
	} {
		t.Run(tc.action, func(t *testing.T) {
			sink := smtpsink.Start(t, smtpsink.Options{})
			d := sluicetest.Start(t, sluicetest.Options{Config: routes(sink.Port(), milterSource("down", `
<milter down>
    socket `+dead+`
    default-action `+tc.action+`
    connect-timeout 2s
</milter>`))})
			c, err := smtp.Dial(d.SMTPAddr())
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			err = c.Hello("client.test")
			if err == nil {
				err = c.Mail("a@sender.test")
			}
			if err == nil {
				err = c.Rcpt("down@rcpt.test")
			}
			var got string
			if err != nil {
				got = err.Error()
			} else {
				w, err := c.Data()
				if err != nil {
					t.Fatal(err)
				}
				fmt.Fprintf(w, "Subject: down\r\n\r\nbody\r\n")
				if err := w.Close(); err != nil {
					t.Fatalf("DATA: %v", err)
				}
				got = "250"
			}
			if !strings.HasPrefix(got, tc.want) || (tc.action == "tempfail" && !strings.Contains(got, "4.7.1 Service unavailable")) {
				t.Fatalf("got %q, want %s", got, tc.want)
			}
			if tc.action == "accept" {
				if _, err := sink.WaitMessages(1, 20*time.Second); err != nil {
					t.Fatal(err)
				}
			} else {
				time.Sleep(300 * time.Millisecond)
				if n := len(sink.Messages()); n != 0 {
					t.Fatalf("%d messages delivered despite tempfail", n)
				}
			}
			if _, err := d.WaitLog("milter failed; applying default action", 5*time.Second); err != nil {
				t.Error(err)
			}
		})
	}
}

// TestMilterConfigErrors: a chain naming a missing milter stops the start
// with FILE:LINE.
func TestMilterConfigErrors(t *testing.T) {
	root, err := sluicetest.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	f := filepath.Join(t.TempDir(), "bad.conf")
	if err := os.WriteFile(f, []byte("host-name mx.test\n<source 0/0>\n  smtpd-milters ghost\n</source>\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(filepath.Join(root, "bin", "sluiced"), "--check", f).CombinedOutput()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 78 {
		t.Fatalf("exit %v, want 78:\n%s", err, out)
	}
	if !strings.Contains(string(out), f+":3: smtpd-milters: no <milter ghost>") {
		t.Fatalf("output:\n%s", out)
	}
}

// scriptMilter is a go-milter milter that acts on the message's Subject
// (hold, discard, edit) and refuses RCPT reject@rcpt.test with a
// multi-line reply.
type scriptMilter struct{ subject string }

func (s *scriptMilter) Connect(string, string, uint16, net.IP, *gomilter.Modifier) (gomilter.Response, error) {
	return gomilter.RespContinue, nil
}
func (s *scriptMilter) Helo(string, *gomilter.Modifier) (gomilter.Response, error) {
	return gomilter.RespContinue, nil
}
func (s *scriptMilter) MailFrom(string, *gomilter.Modifier) (gomilter.Response, error) {
	s.subject = ""
	return gomilter.RespContinue, nil
}
func (s *scriptMilter) RcptTo(rcpt string, _ *gomilter.Modifier) (gomilter.Response, error) {
	if strings.Contains(rcpt, "reject@") {
		return gomilter.NewResponseStr('y', "550-5.7.1 first line\r\n550 5.7.1 not this one"), nil
	}
	return gomilter.RespContinue, nil
}
func (s *scriptMilter) Header(name, value string, _ *gomilter.Modifier) (gomilter.Response, error) {
	if strings.EqualFold(name, "Subject") {
		s.subject = strings.TrimSpace(value)
	}
	return gomilter.RespContinue, nil
}
func (s *scriptMilter) Headers(textproto.MIMEHeader, *gomilter.Modifier) (gomilter.Response, error) {
	return gomilter.RespContinue, nil
}
func (s *scriptMilter) BodyChunk([]byte, *gomilter.Modifier) (gomilter.Response, error) {
	return gomilter.RespContinue, nil
}
func (s *scriptMilter) Body(m *gomilter.Modifier) (gomilter.Response, error) {
	switch s.subject {
	case "hold":
		if err := m.Quarantine("e2e says hold"); err != nil {
			return nil, err
		}
	case "discard":
		return gomilter.RespDiscard, nil
	case "edit":
		for _, err := range []error{
			m.AddHeader("X-Milter", "seen"),
			m.ChangeFrom("<bounce@sender.test>"),
			m.AddRecipient("extra@rcpt.test"), // go-milter adds the brackets
			m.DeleteRecipient("drop@rcpt.test"),
			m.ReplaceBody([]byte("replaced body\r\n")),
		} {
			if err != nil {
				return nil, err
			}
		}
	}
	return gomilter.RespAccept, nil
}
func (s *scriptMilter) Abort(*gomilter.Modifier) error { return nil }

// TestMilterActions: what a milter decides is what the client and the
// next hop see.
func TestMilterActions(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &gomilter.Server{
		NewMilter: func() gomilter.Milter { return &scriptMilter{} },
		Actions: gomilter.OptAddHeader | gomilter.OptChangeBody | gomilter.OptAddRcpt |
			gomilter.OptRemoveRcpt | gomilter.OptQuarantine | gomilter.OptChangeFrom,
	}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	sink := smtpsink.Start(t, smtpsink.Options{})
	d := sluicetest.Start(t, sluicetest.Options{Config: routes(sink.Port(), milterSource("script", `
<milter script>
    socket inet:`+ln.Addr().String()+`
    command-timeout 10s
</milter>`))})

	send := func(subject string, rcpts ...string) string {
		t.Helper()
		c, err := smtp.Dial(d.SMTPAddr())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if err := c.Mail("a@sender.test"); err != nil {
			return err.Error()
		}
		for _, r := range rcpts {
			if err := c.Rcpt(r); err != nil {
				return err.Error()
			}
		}
		w, err := c.Data()
		if err != nil {
			return err.Error()
		}
		fmt.Fprintf(w, "Subject: %s\r\nMessage-ID: <%s@sender.test>\r\n\r\nbody\r\n", subject, subject)
		if err := w.Close(); err != nil {
			return err.Error()
		}
		c.Quit()
		return "250"
	}

	if got := send("rcpt", "reject@rcpt.test"); !strings.HasPrefix(got, "550") || !strings.Contains(got, "first line") || !strings.Contains(got, "not this one") {
		t.Errorf("RCPT reject@: %q, want the milter's two-line 550", got)
	}
	for _, subj := range []string{"hold", "discard", "edit", "plain"} {
		rcpts := []string{subj + "@rcpt.test"}
		if subj == "edit" {
			rcpts = append(rcpts, "drop@rcpt.test")
		}
		if got := send(subj, rcpts...); got != "250" {
			t.Fatalf("%s: %q", subj, got)
		}
	}
	// plain and edit arrive; hold and discard do not.
	if _, err := sink.WaitMessages(2, 20*time.Second); err != nil {
		t.Fatal(err)
	}
	for _, w := range []string{"milter-hold: END-OF-MESSAGE from unknown[127.0.0.1]: e2e says hold;", "milter-discard: END-OF-MESSAGE from unknown[127.0.0.1]: milter triggers DISCARD action", "NOQUEUE: milter-reject: RCPT from unknown[127.0.0.1]: 550 5.7.1"} {
		line, err := d.WaitLog(w, 5*time.Second)
		if err != nil {
			t.Error(err)
		}
		t.Log(line)
	}
	time.Sleep(1500 * time.Millisecond) // a held message would have been sent by now
	got := map[string]smtpsink.Message{}
	for _, m := range sink.Messages() {
		got[m.MessageID] = m
	}
	if len(got) != 2 {
		var ids []string
		for id := range got {
			ids = append(ids, id)
		}
		t.Errorf("sink has %d messages %q, want plain and edit only", len(got), ids)
	}
	e, ok := got["<edit@sender.test>"]
	if !ok {
		t.Fatal("edited message missing")
	}
	if e.From != "bounce@sender.test" || !slices.Equal(e.Recipients(), []string{"edit@rcpt.test", "extra@rcpt.test"}) {
		t.Errorf("edited envelope: from %q to %v", e.From, e.Recipients())
	}
	if !bytes.Contains(e.Data, []byte("\r\nX-Milter: seen\r\n")) || !bytes.HasSuffix(e.Data, []byte("\r\n\r\nreplaced body\r\n")) {
		t.Errorf("edited content:\n%s", e.Data)
	}
}

// startRspamd runs rspamd's proxy worker in milter mode with only the ARC
// module (and the dkim module it needs), sealing for sender.test: the
// README's ARC recipe plus what a test needs (temp paths, DNS to a closed
// port, a four-entry TLD list because compiling the real one takes a minute).
func startRspamd(t *testing.T) (socket, txt string) {
	t.Helper()
	bin := testutil.NeedCommand(t, "rspamd")
	dir, err := os.MkdirTemp("", "rsp")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
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
  domain { sender.test { path = "@DIR@/arc.key"; selector = "sel"; } }
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
			return "unix:" + sock, txt
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
    return txt if name in (b"sel._domainkey.sender.test.", b"sel._domainkey.sender.test") else None
cv, results, why = dkim.arc_verify(open(sys.argv[1], "rb").read(), dnsfunc=dnsfunc)
print(cv.decode(), why)
`
	out, err := exec.Command(py, "-c", script, f, txt).CombinedOutput()
	if err != nil {
		t.Fatalf("python3 dkim.arc_verify: %v\n%s", err, out)
	}
	return strings.TrimSpace(string(out))
}

// TestRspamdARCAfterOpenDKIM is the README's ARC recipe through sluiced:
// OpenDKIM signs, rspamd seals, the next hop gets a message whose DKIM
// signature and ARC chain both verify.
func TestRspamdARCAfterOpenDKIM(t *testing.T) {
	rsock, arcTXT := startRspamd(t)
	dsock, dkimTXT := startOpenDKIM(t)
	sink := smtpsink.Start(t, smtpsink.Options{})
	d := sluicetest.Start(t, sluicetest.Options{Config: routes(sink.Port(), milterSource("opendkim,rspamd", `
<milter opendkim>
    socket `+dsock+`
    command-timeout 10s
    content-timeout 10s
</milter>
<milter rspamd>
    socket `+rsock+`
    default-action accept
    command-timeout 20s
    content-timeout 20s
</milter>`))})
	out := swaks(t, d.SMTPAddr(), "--from", "alice@sender.test", "--to", "bob@rcpt.test",
		"--header", "Subject: sealed", "--header", "Message-Id: <arc-1@sender.test>", "--body", "sealed body\n")
	if !strings.Contains(out, "250 2.0.0 Ok: queued as") {
		t.Fatalf("not queued:\n%s", out)
	}
	msgs, err := sink.WaitMessages(1, 30*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	m := msgs[0].Data
	for _, h := range []string{"ARC-Seal:", "ARC-Message-Signature:", "ARC-Authentication-Results:", "DKIM-Signature:"} {
		if !bytes.Contains(m, []byte(h)) {
			t.Fatalf("no %s header at the sink:\n%s", h, m)
		}
	}
	if got := arcVerify(t, m, arcTXT); !strings.HasPrefix(got, "pass") {
		t.Errorf("ARC chain: %s\n%s", got, m)
	}
	if !dkimVerify(t, m, dkimTXT) {
		t.Errorf("DKIM signature broken after sealing:\n%s", m)
	}
	if got := arcVerify(t, bytes.Replace(m, []byte("sealed body"), []byte("sealed bodY"), 1), arcTXT); strings.HasPrefix(got, "pass") {
		t.Errorf("tampered message passes ARC (%s): the check proves nothing", got)
	}
}
