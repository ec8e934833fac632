package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sluicemta/sluice/internal/testutil"
	"github.com/sluicemta/sluice/internal/testutil/sluicetest"
	"github.com/sluicemta/sluice/internal/testutil/smtpsink"
)

// TestReloadOnSIGHUP: a good file takes effect for new work; a bad one is
// refused and the running config stays in force.
func TestReloadOnSIGHUP(t *testing.T) {
	sinkA := smtpsink.Start(t, smtpsink.Options{})
	sinkB := smtpsink.Start(t, smtpsink.Options{})
	opts := sluicetest.Options{Config: routes(sinkA.Port(), "")}
	d := sluicetest.Start(t, opts)
	swaks(t, d.SMTPAddr(), "--from", "a@sender.test", "--to", "one@rcpt.test")
	if _, err := sinkA.WaitMessages(1, 20*time.Second); err != nil {
		t.Fatal(err)
	}

	// Point everything at sink B and reload.
	opts.Config = routes(sinkB.Port(), "")
	writeConfig(t, d, opts)
	if err := d.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	if _, err := d.WaitLog("reloaded", 10*time.Second); err != nil {
		t.Fatal(err)
	}
	swaks(t, d.SMTPAddr(), "--from", "a@sender.test", "--to", "two@rcpt.test")
	if _, err := sinkB.WaitMessages(1, 20*time.Second); err != nil {
		t.Fatal(err)
	}

	// A broken file is refused; mail keeps flowing to sink B.
	if err := os.WriteFile(d.ConfigFile(), []byte("this-is-not-a-directive yes\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := d.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	line, err := d.WaitLog("refused, running config kept", 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(line, "this-is-not-a-directive") {
		t.Errorf("refusal does not say what is wrong: %s", line)
	}
	swaks(t, d.SMTPAddr(), "--from", "a@sender.test", "--to", "three@rcpt.test")
	if _, err := sinkB.WaitMessages(2, 20*time.Second); err != nil {
		t.Fatal(err)
	}
	if n := len(sinkA.Messages()); n != 1 {
		t.Errorf("sink A got %d messages after the reload, want 1", n)
	}
}

func writeConfig(t *testing.T, d *sluicetest.Daemon, opts sluicetest.Options) {
	t.Helper()
	text := sluicetest.ConfigText(d.Paths(), portOf(t, d.SMTPAddr()), opts)
	if err := os.WriteFile(d.ConfigFile(), []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
}

func portOf(t *testing.T, addr string) int {
	t.Helper()
	_, p, _ := strings.Cut(addr, ":")
	var n int
	for _, c := range p {
		n = n*10 + int(c-'0')
	}
	return n
}

// TestSecondInstanceRefused: a second daemon on the same spool fails at
// once with an error that says why, and the first keeps running.
func TestSecondInstanceRefused(t *testing.T) {
	sink := smtpsink.Start(t, smtpsink.Options{})
	d := sluicetest.Start(t, sluicetest.Options{Config: routes(sink.Port(), "")})
	root, err := sluicetest.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	// The same spool and control socket, another SMTP port.
	text, err := os.ReadFile(d.ConfigFile())
	if err != nil {
		t.Fatal(err)
	}
	other := strings.Replace(string(text), d.SMTPAddr(), fmt.Sprintf("127.0.0.1:%d", testutil.FreePort(t)), 1)
	path := filepath.Join(t.TempDir(), "second.conf")
	if err := os.WriteFile(path, []byte(other), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(filepath.Join(root, "bin", "sluiced"), "--config", path)
	done := make(chan struct{})
	var out []byte
	go func() { out, err = cmd.CombinedOutput(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		cmd.Process.Kill()
		t.Fatal("second sluiced on the same spool kept running")
	}
	if err == nil {
		t.Fatal("second sluiced exited 0")
	}
	if !strings.Contains(string(out), "another sluiced") && !strings.Contains(string(out), "in use") {
		t.Errorf("second sluiced's error does not say the spool is taken: %s", out)
	}
	swaks(t, d.SMTPAddr(), "--from", "a@sender.test", "--to", "still@rcpt.test")
	if _, err := sink.WaitMessages(1, 20*time.Second); err != nil {
		t.Fatal(err)
	}
}

// TestStopRightAfterStart: a SIGTERM that comes as soon as the daemon
// greets (a service manager stopping it at once, or a test) stops it
// cleanly: the signal handler is in place before anything is started,
// so the signal is never left to its default action, which kills.
func TestStopRightAfterStart(t *testing.T) {
	sink := smtpsink.Start(t, smtpsink.Options{})
	d := sluicetest.Start(t, sluicetest.Options{Config: routes(sink.Port(), "")})
	for i := 0; i < 10; i++ {
		if err := d.Stop(); err != nil {
			t.Fatalf("stop %d right after start: %v\n%s", i, err, d.Stderr())
		}
		d.Restart()
	}
}
