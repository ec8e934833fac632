// Package sluicetest runs the built daemon, bin/sluiced, in a temporary
// directory for end-to-end tests.
//
//	d := sluicetest.Start(t, sluicetest.Options{Config: "<domain example.net>\n route [127.0.0.1]:2599\n</domain>\n"})
//	swaks --server d.SMTPAddr() ...
//
// Spool, log, accounting file and control socket live under the test's
// temporary directory; the SMTP listener is on a free 127.0.0.1 port. The
// daemon's stderr goes to the test log. It is stopped when the test ends
// (SIGTERM, then SIGKILL after 10 s).
package sluicetest

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/sluicemta/sluice/internal/testutil"
)

// StopGrace is how long Stop waits after SIGTERM before SIGKILL.
const StopGrace = 10 * time.Second

// Options shape the daemon's config and start.
type Options struct {
	// Config is appended to the generated config: extra directives and
	// blocks (<domain ...>, <virtual-mta ...>, ...).
	Config string
	// HostName is the host-name directive; "" means "sluice.test". Set it
	// here rather than in Config: a directive given twice is an error.
	HostName string
	// Records is the record list of the accounting file; "" means "d,b,t".
	Records string
	// RunAs is the run-as-user directive; "" means the user running the
	// test, so the daemon needs no sluice account (root stays root).
	RunAs string
	// Binary overrides <repo root>/bin/sluiced.
	Binary string
	// Env is added to the daemon's environment.
	Env []string
	// StartTimeout bounds the wait for the SMTP greeting; 0 means 30 s.
	StartTimeout time.Duration
}

// Paths are where a daemon's files are.
type Paths struct {
	Dir           string // the test's temporary directory
	Config        string
	Spool         string
	LogFile       string
	AcctFile      string
	ControlSocket string
}

// Daemon is a running (or stopped) sluiced.
type Daemon struct {
	t      testing.TB
	opts   Options
	bin    string
	paths  Paths
	port   int
	cmd    *exec.Cmd
	waited chan struct{} // closed when cmd has exited
	werr   error
	copied sync.WaitGroup // stderr copier

	mu     sync.Mutex
	stderr strings.Builder
}

// Start writes the config, runs the daemon and waits until its SMTP port
// greets. It fails the test if bin/sluiced is missing or does not come up.
func Start(t testing.TB, opts Options) *Daemon {
	t.Helper()
	d := prepare(t, opts)
	t.Cleanup(func() {
		if err := d.Stop(); err != nil {
			t.Logf("sluicetest: stop: %v", err)
		}
	})
	if err := d.start(); err != nil {
		t.Fatalf("sluicetest: %v", err)
	}
	return d
}

// prepare finds the binary and writes the config and directories.
func prepare(t testing.TB, opts Options) *Daemon {
	t.Helper()
	bin := opts.Binary
	if bin == "" {
		root, err := RepoRoot()
		if err != nil {
			t.Fatalf("sluicetest: %v", err)
		}
		bin = filepath.Join(root, "bin", "sluiced")
	}
	if st, err := os.Stat(bin); err != nil || st.IsDir() {
		t.Fatalf("sluicetest: %s is missing: run `make build` first", bin)
	}
	dir := t.TempDir()
	d := &Daemon{t: t, opts: opts, bin: bin, port: testutil.FreePort(t)}
	d.paths = Paths{
		Dir:           dir,
		Config:        filepath.Join(dir, "sluice.conf"),
		Spool:         filepath.Join(dir, "spool"),
		LogFile:       filepath.Join(dir, "log", "sluice.log"),
		AcctFile:      filepath.Join(dir, "log", "acct.csv"),
		ControlSocket: socketPath(t, dir),
	}
	for _, p := range []string{d.paths.Spool, filepath.Dir(d.paths.LogFile)} {
		if err := os.MkdirAll(p, 0o755); err != nil {
			t.Fatalf("sluicetest: %v", err)
		}
	}
	if err := os.WriteFile(d.paths.Config, []byte(ConfigText(d.paths, d.port, opts)), 0o644); err != nil {
		t.Fatalf("sluicetest: write config: %v", err)
	}
	return d
}

// socketPath keeps the control socket under the 108-byte sun_path limit:
// t.TempDir() paths grow with the test name.
func socketPath(t testing.TB, dir string) string {
	p := filepath.Join(dir, "control.sock")
	if len(p) < 100 {
		return p
	}
	short, err := os.MkdirTemp("", "sl")
	if err != nil {
		t.Fatalf("sluicetest: %v", err)
	}
	t.Cleanup(func() { os.RemoveAll(short) })
	return filepath.Join(short, "control.sock")
}

// ConfigText is the config Start writes for paths and an SMTP port.
func ConfigText(p Paths, port int, opts Options) string {
	host := opts.HostName
	if host == "" {
		host = "sluice.test"
	}
	records := opts.Records
	if records == "" {
		records = "d,b,t"
	}
	runAs := opts.RunAs
	if runAs == "" {
		runAs = "root"
		if u, err := user.Current(); err == nil {
			runAs = u.Username
		}
	}
	var b strings.Builder
	fmt.Fprintf(&b, "# written by sluicetest for one test run\n")
	fmt.Fprintf(&b, "host-name %s\n", host)
	fmt.Fprintf(&b, "smtp-listener 127.0.0.1:%d\n", port)
	fmt.Fprintf(&b, "spool %s\n", p.Spool)
	fmt.Fprintf(&b, "log-file %s\n", p.LogFile)
	fmt.Fprintf(&b, "control-socket %s\n", p.ControlSocket)
	fmt.Fprintf(&b, "run-as-user %s\n", runAs)
	fmt.Fprintf(&b, "\n<source 127.0.0.0/8>\n    always-allow-relaying yes\n</source>\n")
	fmt.Fprintf(&b, "\n<acct-file %s>\n    records %s\n</acct-file>\n", p.AcctFile, records)
	if opts.Config != "" {
		b.WriteString("\n# from the test\n")
		b.WriteString(strings.TrimRight(opts.Config, "\n") + "\n")
	}
	return b.String()
}

func (d *Daemon) start() error {
	cmd := exec.Command(d.bin, "--config", d.paths.Config)
	cmd.Dir = d.paths.Dir
	cmd.Env = append(os.Environ(), d.opts.Env...)
	pr, pw, err := os.Pipe()
	if err != nil {
		return fmt.Errorf("stderr pipe: %w", err)
	}
	cmd.Stderr = pw
	cmd.Stdout = pw
	if err := cmd.Start(); err != nil {
		pr.Close()
		pw.Close()
		return fmt.Errorf("start %s: %w", d.bin, err)
	}
	pw.Close()
	d.cmd = cmd
	d.waited = make(chan struct{})
	d.copied.Add(1)
	go d.copyStderr(pr)
	go func() {
		d.werr = cmd.Wait()
		close(d.waited)
	}()
	timeout := d.opts.StartTimeout
	if timeout == 0 {
		timeout = 30 * time.Second
	}
	if err := d.waitGreeting(timeout); err != nil {
		d.Kill()
		return fmt.Errorf("%w\nstderr:\n%s", err, d.Stderr())
	}
	return nil
}

// copyStderr sends each line to the test log and keeps it for Stderr. It
// ends before Stop returns, so it never logs after the test.
func (d *Daemon) copyStderr(r io.ReadCloser) {
	defer d.copied.Done()
	defer r.Close()
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	for sc.Scan() {
		d.mu.Lock()
		d.stderr.WriteString(sc.Text() + "\n")
		d.mu.Unlock()
		d.t.Logf("sluiced: %s", sc.Text())
	}
}

func (d *Daemon) waitGreeting(timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	var last error
	for time.Now().Before(deadline) {
		select {
		case <-d.waited:
			return fmt.Errorf("sluiced exited before listening: %v", d.werr)
		default:
		}
		last = greets(d.SMTPAddr())
		if last == nil {
			return nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("no SMTP greeting on %s after %v: %v", d.SMTPAddr(), timeout, last)
}

// greets connects, reads a 220 greeting and says QUIT.
func greets(addr string) error {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return fmt.Errorf("read greeting: %w", err)
	}
	if !strings.HasPrefix(line, "220") {
		return fmt.Errorf("greeting %q", strings.TrimSpace(line))
	}
	io.WriteString(c, "QUIT\r\n")
	return nil
}

// SMTPAddr is the daemon's SMTP listener, 127.0.0.1:port.
func (d *Daemon) SMTPAddr() string { return fmt.Sprintf("127.0.0.1:%d", d.port) }

// Dir is the temporary directory holding config, spool and logs.
func (d *Daemon) Dir() string { return d.paths.Dir }

// Paths returns every file location.
func (d *Daemon) Paths() Paths { return d.paths }

// AcctFile is the accounting CSV's path.
func (d *Daemon) AcctFile() string { return d.paths.AcctFile }

// LogFile is the mail log's path.
func (d *Daemon) LogFile() string { return d.paths.LogFile }

// ControlSocket is the control socket's path.
func (d *Daemon) ControlSocket() string { return d.paths.ControlSocket }

// ConfigFile is the written config's path (rewrite it, then Signal(SIGHUP)).
func (d *Daemon) ConfigFile() string { return d.paths.Config }

// Stderr returns what the daemon has written to stderr and stdout so far.
func (d *Daemon) Stderr() string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.stderr.String()
}

// PID is the running daemon's process id, 0 when stopped.
func (d *Daemon) PID() int {
	if d.cmd == nil || d.exited() {
		return 0
	}
	return d.cmd.Process.Pid
}

func (d *Daemon) exited() bool {
	select {
	case <-d.waited:
		return true
	default:
		return false
	}
}

// Signal sends sig (e.g. syscall.SIGHUP) to the running daemon.
func (d *Daemon) Signal(sig os.Signal) error {
	if d.cmd == nil || d.exited() {
		return errors.New("sluicetest: daemon is not running")
	}
	return d.cmd.Process.Signal(sig)
}

// Stop sends SIGTERM, waits up to StopGrace, then SIGKILL. It returns the
// daemon's exit error when it did not exit 0 on SIGTERM. Stopping a
// stopped daemon returns nil.
func (d *Daemon) Stop() error {
	if d.cmd == nil {
		return nil
	}
	defer d.finish()
	if d.exited() {
		return nil
	}
	d.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-d.waited:
		return d.werr
	case <-time.After(StopGrace):
		d.cmd.Process.Kill()
		<-d.waited
		return fmt.Errorf("sluiced ignored SIGTERM for %v and was killed", StopGrace)
	}
}

// Kill stops the daemon with SIGKILL, as a crash would.
func (d *Daemon) Kill() {
	if d.cmd == nil {
		return
	}
	defer d.finish()
	if !d.exited() {
		d.cmd.Process.Kill()
		<-d.waited
	}
}

// finish waits for the stderr copier and forgets the process.
func (d *Daemon) finish() {
	d.copied.Wait()
	d.cmd = nil
}

// Restart stops the daemon (SIGTERM) and starts it again on the same
// directory, config and port; it fails the test if it does not come back.
func (d *Daemon) Restart() {
	d.t.Helper()
	if err := d.Stop(); err != nil {
		d.t.Logf("sluicetest: stop before restart: %v", err)
	}
	if err := d.start(); err != nil {
		d.t.Fatalf("sluicetest: restart: %v", err)
	}
}

// RepoRoot walks up from the working directory to the directory holding
// go.mod.
func RepoRoot() (string, error) {
	wd, err := os.Getwd()
	if err != nil {
		return "", err
	}
	return findRoot(wd)
}

func findRoot(dir string) (string, error) {
	for d := dir; ; d = filepath.Dir(d) {
		if _, err := os.Stat(filepath.Join(d, "go.mod")); err == nil {
			return d, nil
		}
		if filepath.Dir(d) == d {
			return "", fmt.Errorf("no go.mod above %s", dir)
		}
	}
}
