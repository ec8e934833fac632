package main

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/sluicemta/sluice/compat"
	"github.com/sluicemta/sluice/internal/testutil"
)

// memBackend keeps submissions in memory.
type memBackend struct {
	mu   sync.Mutex
	subs []*compat.Submission
}

func (b *memBackend) Submit(ctx context.Context, m *compat.Submission) (string, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.subs = append(b.subs, m)
	return m.ID, nil
}

func (b *memBackend) List(ctx context.Context, fn func(*compat.QueueEntry) bool) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, m := range b.subs {
		e := &compat.QueueEntry{ID: m.ID, Arrival: m.Arrival, Size: int64(len(m.Content)), Sender: m.Sender}
		for _, r := range m.Rcpts {
			e.Rcpts = append(e.Rcpts, compat.QueueRcpt{Addr: r})
		}
		if !fn(e) {
			break
		}
	}
	return nil
}

func (b *memBackend) Flush(ctx context.Context, site, id string) error { return nil }
func (b *memBackend) Apply(ctx context.Context, a compat.PostsuperAction, id string) error {
	return compat.ErrNotFound
}

func (b *memBackend) last(t *testing.T) *compat.Submission {
	t.Helper()
	b.mu.Lock()
	defer b.mu.Unlock()
	if len(b.subs) == 0 {
		t.Fatal("nothing submitted")
	}
	return b.subs[len(b.subs)-1]
}

var (
	buildOnce sync.Once
	builtDir  string
	buildErr  error
)

func TestMain(m *testing.M) {
	code := m.Run()
	if builtDir != "" {
		os.RemoveAll(builtDir)
	}
	os.Exit(code)
}

// setup builds the binary under all its names and starts a daemon side on
// a socket in a temp dir.
func setup(t *testing.T) (dir string, b *memBackend, env []string) {
	t.Helper()
	dir = t.TempDir()
	bin := filepath.Join(dir, "sendmail")
	buildOnce.Do(func() {
		builtDir, buildErr = os.MkdirTemp("", "sluice-sendmail-test")
		if buildErr == nil {
			var out []byte
			if out, buildErr = exec.Command("go", "build", "-o", filepath.Join(builtDir, "sendmail"), ".").CombinedOutput(); buildErr != nil {
				buildErr = fmt.Errorf("%v\n%s", buildErr, out)
			}
		}
	})
	if buildErr != nil {
		t.Fatalf("build: %v", buildErr)
	}
	data, err := os.ReadFile(filepath.Join(builtDir, "sendmail"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bin, data, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, n := range []string{"mailq", "postqueue", "postsuper", "newaliases"} {
		if err := os.Symlink("sendmail", filepath.Join(dir, n)); err != nil {
			t.Fatal(err)
		}
	}
	sock := filepath.Join(dir, "control.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	b = &memBackend{}
	h := &compat.Handler{Backend: b, Hostname: "host.example", Origin: "host.example"}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { h.Serve(ctx, ln); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	env = append(os.Environ(), "SLUICE_CONTROL_SOCKET="+sock, "SLUICE_CONFIG="+filepath.Join(dir, "no-config"))
	return dir, b, env
}

func run(t *testing.T, env []string, stdin string, name string, args ...string) (string, int) {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Env = env
	cmd.Stdin = strings.NewReader(stdin)
	out, err := cmd.CombinedOutput()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	return string(out), code
}

// TestRealCallers drives the built binary the way cron, PHP, git and
// mailx call sendmail.
func TestRealCallers(t *testing.T) {
	dir, b, env := setup(t)
	sm := filepath.Join(dir, "sendmail")
	tests := []struct {
		name  string
		args  []string
		stdin string
		rcpts string
		has   string
	}{
		{"cron", []string{"-FCronDaemon", "-i", "-odi", "-oem", "-oi", "-t"}, "To: root\nSubject: Cron <root@host> ls\n\nout\n", "root@host.example", "From: CronDaemon <root@host.example>"},
		{"php", []string{"-t", "-i"}, "To: user@example.net\nSubject: php\n\n.\nstill body\n", "user@example.net", "\r\n.\r\nstill body\r\n"},
		{"git", []string{"-f", "dev@example.org", "-i", "a@example.net", "b@example.net"}, "Subject: [PATCH] x\n\ndiff\n", "a@example.net,b@example.net", "From: root <dev@example.org>"},
		{"logwatch", []string{"-t"}, "To: root\nSubject: logwatch\n\nline\n.\nafter dot\n", "root@host.example", "\r\n\r\nline\r\n"},
	}
	for _, tt := range tests {
		out, code := run(t, env, tt.stdin, sm, tt.args...)
		if code != 0 {
			t.Fatalf("%s: exit %d: %s", tt.name, code, out)
		}
		m := b.last(t)
		if strings.Join(m.Rcpts, ",") != tt.rcpts || !strings.Contains(string(m.Content), tt.has) {
			t.Errorf("%s: rcpts %q content\n%s", tt.name, m.Rcpts, m.Content)
		}
		if tt.name == "logwatch" && strings.Contains(string(m.Content), "after dot") {
			t.Errorf("logwatch (no -i): a lone dot must end the message")
		}
	}

	// bsd-mailx with sendmail pointed at our binary.
	mailx := testutil.NeedCommand(t, "bsd-mailx")
	rc := filepath.Join(dir, "mailrc")
	os.WriteFile(rc, []byte("set sendmail="+sm+"\n"), 0o644)
	out, code := run(t, append(env, "MAILRC="+rc), "hello from mailx\n", mailx, "-s", "mailx subject", "mx@example.net")
	if code != 0 {
		t.Fatalf("mailx: exit %d: %s", code, out)
	}
	m := b.last(t)
	if strings.Join(m.Rcpts, ",") != "mx@example.net" || !strings.Contains(string(m.Content), "Subject: mailx subject") || !strings.Contains(string(m.Content), "hello from mailx") {
		t.Errorf("mailx: rcpts %q content\n%s", m.Rcpts, m.Content)
	}

	// The other names of the binary.
	out, code = run(t, env, "", filepath.Join(dir, "mailq"))
	if code != 0 || !strings.Contains(out, "Kbytes in 5 Requests.\n") || !strings.HasPrefix(out, "----Queue ID----- ") {
		t.Errorf("mailq: exit %d\n%s", code, out)
	}
	out, code = run(t, env, "", filepath.Join(dir, "postqueue"), "-j")
	if code != 0 || strings.Count(out, "\n") != 5 {
		t.Errorf("postqueue -j: exit %d\n%s", code, out)
	}
	out, code = run(t, env, "", filepath.Join(dir, "postsuper"), "-d", "4jckGV1dtNz1SGLS")
	if code != 0 || out != "postsuper: Deleted: 0 messages\n" {
		t.Errorf("postsuper: exit %d %q", code, out)
	}
	out, code = run(t, env, "", sm, "-n", "x@y")
	if code != compat.ExitUsage || out != "sendmail: fatal: -n option not supported\n" {
		t.Errorf("-n: exit %d %q", code, out)
	}
	// Daemon down, no helper: temporary failure, never exit 0.
	down := append(env, "SLUICE_CONTROL_SOCKET="+filepath.Join(dir, "none.sock"), "SLUICE_POSTDROP=/nonexistent")
	if _, code := run(t, down, "Subject: x\n\n", sm, "a@b"); code != compat.ExitTempFail {
		t.Errorf("daemon down: exit %d", code)
	}
}

// TestMaildropFallback: with the daemon down, sendmail runs the helper
// (a copy of the binary named sluice-postdrop) and the message waits in
// the maildrop directory until Pickup queues it.
func TestMaildropFallback(t *testing.T) {
	dir, b, env := setup(t)
	helper := filepath.Join(dir, "sluice-postdrop")
	data, err := os.ReadFile(filepath.Join(dir, "sendmail"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(helper, data, 0o755); err != nil {
		t.Fatal(err)
	}
	drop := filepath.Join(dir, "maildrop")
	os.Mkdir(drop, 0o1730)
	down := append(env, "SLUICE_CONTROL_SOCKET="+filepath.Join(dir, "none.sock"), "SLUICE_MAILDROP="+drop, "SLUICE_POSTDROP=")
	out, code := run(t, down, "To: late@example.net\nSubject: while down\n\nbody\n", filepath.Join(dir, "sendmail"), "-t", "-i")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, out)
	}
	p := &compat.Pickup{Dir: drop, Handler: &compat.Handler{Backend: b, Hostname: "host.example", Origin: "host.example"}}
	n, err := p.Scan(context.Background())
	if err != nil || n != 1 {
		t.Fatalf("pickup queued %d: %v", n, err)
	}
	if m := b.last(t); m.Rcpts[0] != "late@example.net" || !strings.Contains(string(m.Content), "Subject: while down") {
		t.Errorf("picked up %+v", m)
	}
}

func TestControlSocketFromConfig(t *testing.T) {
	dir := t.TempDir()
	t.Setenv("SLUICE_CONTROL_SOCKET", "")
	cfg := filepath.Join(dir, "config")
	os.WriteFile(cfg, []byte("control-socket /tmp/x.sock\n"), 0o644)
	if s, err := controlSocket(cfg); err != nil || s != "/tmp/x.sock" {
		t.Errorf("got %q, %v", s, err)
	}
	t.Setenv("SLUICE_CONFIG", filepath.Join(dir, "missing"))
	if s, err := controlSocket(""); err != nil || s != compat.DefaultSocket {
		t.Errorf("missing default config: %q, %v", s, err)
	}
	if _, err := controlSocket(filepath.Join(dir, "missing-explicit")); err == nil {
		t.Error("a missing -C file must be an error")
	}
	t.Setenv("SLUICE_CONTROL_SOCKET", "/run/env.sock")
	if s, _ := controlSocket(cfg); s != "/run/env.sock" {
		t.Errorf("env override: %q", s)
	}
}
