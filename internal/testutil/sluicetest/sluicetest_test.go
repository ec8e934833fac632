package sluicetest

import (
	"fmt"
	"net/smtp"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/sluicemta/sluice/internal/config"
	"github.com/sluicemta/sluice/internal/testutil"
	"github.com/sluicemta/sluice/internal/testutil/smtpsink"
)

func TestConfigTextParses(t *testing.T) {
	p := Paths{Spool: "/tmp/x/spool", LogFile: "/tmp/x/log/sluice.log", AcctFile: "/tmp/x/log/acct.csv", ControlSocket: "/tmp/x/c.sock"}
	extra := "<domain example.net>\n    route [127.0.0.1]:2599\n</domain>\n"
	text := ConfigText(p, 2600, Options{Config: extra})
	for _, want := range []string{
		"host-name sluice.test\n",
		"smtp-listener 127.0.0.1:2600\n",
		"spool /tmp/x/spool\n",
		"log-file /tmp/x/log/sluice.log\n",
		"control-socket /tmp/x/c.sock\n",
		"<acct-file /tmp/x/log/acct.csv>\n    records d,b,t\n</acct-file>\n",
		"<source 127.0.0.0/8>\n    always-allow-relaying yes\n</source>\n",
		extra,
	} {
		if !strings.Contains(text, want) {
			t.Errorf("config lacks %q:\n%s", want, text)
		}
	}
	// The text must be valid for the real parser, or every e2e test fails.
	if _, err := config.Parse("sluicetest.conf", []byte(text)); err != nil {
		t.Errorf("config.Parse: %v\n%s", err, text)
	}
	if u, err := user.Current(); err == nil && !strings.Contains(text, "run-as-user "+u.Username+"\n") {
		t.Errorf("config does not run as %s:\n%s", u.Username, text)
	}
	text = ConfigText(p, 1, Options{HostName: "mx.test", Records: "d,b,t,r", RunAs: "nobody"})
	if !strings.Contains(text, "host-name mx.test\n") || !strings.Contains(text, "records d,b,t,r\n") || !strings.Contains(text, "run-as-user nobody\n") {
		t.Errorf("options ignored:\n%s", text)
	}
}

func TestFindRoot(t *testing.T) {
	root := t.TempDir()
	deep := filepath.Join(root, "a", "b", "c")
	if err := os.MkdirAll(deep, 0o755); err != nil {
		t.Fatal(err)
	}
	if _, err := findRoot(deep); err == nil {
		t.Error("found a root where there is no go.mod")
	}
	os.WriteFile(filepath.Join(root, "go.mod"), []byte("module x\n"), 0o644)
	if got, err := findRoot(deep); err != nil || got != root {
		t.Errorf("findRoot = %q, %v; want %q", got, err, root)
	}
	got, err := RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(got, "internal", "testutil", "sluicetest")); err != nil {
		t.Errorf("RepoRoot = %q is not this repository", got)
	}
}

func TestSocketPathFits(t *testing.T) {
	long := filepath.Join(t.TempDir(), strings.Repeat("d", 120))
	if p := socketPath(t, long); len(p) >= 100 {
		t.Errorf("socket path %d bytes: %s", len(p), p)
	}
}

var (
	fakeOnce sync.Once
	fakeBin  string
	fakeErr  error
	fakeDir  string
)

// buildFake compiles testdata/fakesluiced once per test binary.
func buildFake(t *testing.T) string {
	t.Helper()
	fakeOnce.Do(func() {
		fakeDir, fakeErr = os.MkdirTemp("", "fakesluiced")
		if fakeErr != nil {
			return
		}
		fakeBin = filepath.Join(fakeDir, "fakesluiced")
		out, err := exec.Command("go", "build", "-o", fakeBin, "./testdata/fakesluiced").CombinedOutput()
		if err != nil {
			fakeErr = fmt.Errorf("build fake daemon: %v\n%s", err, out)
		}
	})
	if fakeErr != nil {
		t.Fatal(fakeErr)
	}
	return fakeBin
}

func TestMain(m *testing.M) {
	code := m.Run()
	if fakeDir != "" {
		os.RemoveAll(fakeDir)
	}
	os.Exit(code)
}

func TestLifecycleWithFakeDaemon(t *testing.T) {
	fake := buildFake(t)
	d := Start(t, Options{Binary: fake})
	if err := greets(d.SMTPAddr()); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{d.Paths().Spool, filepath.Dir(d.LogFile()), d.ConfigFile()} {
		if _, err := os.Stat(p); err != nil {
			t.Error(err)
		}
	}
	if !strings.HasPrefix(d.AcctFile(), d.Dir()) || !strings.HasPrefix(d.LogFile(), d.Dir()) {
		t.Errorf("files outside %s: %+v", d.Dir(), d.Paths())
	}
	pid := d.PID()
	if err := d.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { return strings.Contains(d.Stderr(), "got hangup") })

	d.Restart()
	if d.PID() == pid || d.PID() == 0 {
		t.Errorf("Restart: pid %d -> %d", pid, d.PID())
	}
	if err := greets(d.SMTPAddr()); err != nil {
		t.Fatalf("after restart: %v", err)
	}
	if n := strings.Count(d.Stderr(), "listening on "+d.SMTPAddr()); n != 2 {
		t.Errorf("listening %d times on the same address, want 2:\n%s", n, d.Stderr())
	}

	d.Kill()
	if d.PID() != 0 || greets(d.SMTPAddr()) == nil {
		t.Error("still running after Kill")
	}
	d.Restart()
	if err := d.Stop(); err != nil {
		t.Errorf("Stop: %v", err)
	}
	if !strings.Contains(d.Stderr(), "got terminated") {
		t.Errorf("SIGTERM not delivered:\n%s", d.Stderr())
	}
	if err := d.Stop(); err != nil {
		t.Errorf("second Stop: %v", err)
	}
	if d.Signal(syscall.SIGHUP) == nil {
		t.Error("Signal on a stopped daemon succeeded")
	}
}

func TestStartFailureCarriesStderr(t *testing.T) {
	fake := buildFake(t)
	d := prepare(t, Options{Binary: fake, Env: []string{"FAKE_FAIL=1"}, StartTimeout: 5 * time.Second})
	err := d.start()
	if err == nil {
		d.Stop()
		t.Fatal("start succeeded")
	}
	if !strings.Contains(err.Error(), "exited before listening") || !strings.Contains(err.Error(), "fake failure") {
		t.Errorf("error = %v", err)
	}
}

// TestRealDaemon starts bin/sluiced when it has been built.
func TestRealDaemon(t *testing.T) {
	root, err := RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, "bin", "sluiced")); err != nil {
		if testutil.InCI() {
			t.Fatal("bin/sluiced missing under CI: `make build` must run first")
		}
		t.Skip("bin/sluiced not built; `make build` first")
	}
	d := Start(t, Options{})
	if err := greets(d.SMTPAddr()); err != nil {
		t.Fatal(err)
	}
	if err := d.Stop(); err != nil {
		t.Errorf("SIGTERM exit: %v", err)
	}
}

// TestRealDaemonDelivers sends one message through bin/sluiced to a sink
// and finds it in the sink, the accounting file and the mail log: the
// helpers agree with the daemon on every path and format.
func TestRealDaemonDelivers(t *testing.T) {
	root, err := RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, "bin", "sluiced")); err != nil {
		if testutil.InCI() {
			t.Fatal("bin/sluiced missing under CI: `make build` must run first")
		}
		t.Skip("bin/sluiced not built; `make build` first")
	}
	sink := smtpsink.Start(t, smtpsink.Options{})
	d := Start(t, Options{Config: fmt.Sprintf("<domain example.net>\n    route [127.0.0.1]:%d\n</domain>\n", sink.Port())})
	c, err := smtp.Dial(d.SMTPAddr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Hello("client.test"); err != nil {
		t.Fatal(err)
	}
	if err := c.Mail("sender@example.org"); err != nil {
		t.Fatal(err)
	}
	if err := c.Rcpt("user@example.net"); err != nil {
		t.Fatal(err)
	}
	w, err := c.Data()
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(w, "From: sender@example.org\r\nTo: user@example.net\r\nSubject: e2e\r\nMessage-ID: <e2e@example.org>\r\n\r\nhello\r\n")
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	c.Quit()

	ms, err := sink.WaitMessages(1, 20*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if ms[0].From != "sender@example.org" || ms[0].Recipients()[0] != "user@example.net" || ms[0].MessageID != "<e2e@example.org>" {
		t.Errorf("sink got %+v", ms[0])
	}
	recs, err := d.WaitAcct("d", 1, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if r := recs[0]; r["rcpt"] != "user@example.net" || r["orig"] != "sender@example.org" || !strings.HasPrefix(r["dsnStatus"], "2.0.0") || r["queueId"] == "" {
		t.Errorf("d record = %v", r)
	}
	t.Logf("d record: %v", recs[0])
	line, err := d.WaitLog("status=sent", 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(line, "to=<user@example.net>") || !strings.Contains(line, recs[0]["queueId"]+": ") {
		t.Errorf("log line %q does not match the d record's queue id %s", line, recs[0]["queueId"])
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	for i := 0; i < 100; i++ {
		if cond() {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatal("condition not met in 2 s")
}
