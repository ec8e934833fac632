package e2e

import (
	"bytes"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sluicemta/sluice/internal/testutil/sluicetest"
	"github.com/sluicemta/sluice/internal/testutil/smtpsink"
)

// TestNonRootCaller: an unprivileged user (nobody) submits with sendmail
// and lists the queue; the daemon names the sender from the socket's peer
// credentials, and refuses queue changes to that user.
func TestNonRootCaller(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to run a command as another user")
	}
	sink := smtpsink.Start(t, smtpsink.Options{})
	d := sluicetest.Start(t, sluicetest.Options{Config: routes(sink.Port(), "")})
	// nobody must reach the control socket.
	openForTraversal(t, filepath.Dir(d.ControlSocket()))
	// A copy of the binary nobody can execute wherever the repository is.
	bin := filepath.Join(t.TempDir(), "sendmail")
	copyFile(t, binPath(t, "sendmail"), bin, 0o755)
	os.Chmod(filepath.Dir(bin), 0o711)
	asNobody := func(stdin string, args ...string) (string, int) {
		cmd := exec.Command(bin, args...)
		cmd.Args = args // argv[0] selects sendmail, mailq or postsuper
		cmd.Env = []string{"SLUICE_CONTROL_SOCKET=" + d.ControlSocket(), "PATH=/usr/bin:/bin"}
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
		cmd.Stdin = strings.NewReader(stdin)
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		err := cmd.Run()
		if ee, ok := err.(*exec.ExitError); ok {
			return out.String(), ee.ExitCode()
		} else if err != nil {
			t.Fatal(err)
		}
		return out.String(), 0
	}
	if out, code := asNobody("Subject: from nobody\n\nunprivileged\n", "sendmail", "-i", "r@rcpt.test"); code != 0 {
		t.Fatalf("sendmail as nobody: exit %d: %s", code, out)
	}
	msgs, err := sink.WaitMessages(1, 20*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(msgs[0].From, "nobody@") {
		t.Errorf("envelope sender %q, want the caller's login name", msgs[0].From)
	}
	if !regexp.MustCompile(`(?m)^From: .*nobody@sluice\.test`).Match(msgs[0].Data) {
		t.Errorf("From header does not name the caller:\n%s", msgs[0].Data)
	}
	if out, code := asNobody("", "mailq"); code != 0 {
		t.Errorf("mailq as nobody: exit %d: %s", code, out)
	}
	if out, code := asNobody("", "postsuper", "-d", "ALL"); code != 77 {
		t.Errorf("postsuper as nobody: exit %d, want 77 (not permitted): %s", code, out)
	}
}

// openForTraversal opens dir and its parents up to the temporary
// directory (t.TempDir makes them 0700) for traversal only, so that
// another user can reach what lies inside.
func openForTraversal(t *testing.T, dir string) {
	t.Helper()
	for ; dir != "/" && dir != os.TempDir(); dir = filepath.Dir(dir) {
		if err := os.Chmod(dir, 0o711); err != nil {
			t.Fatal(err)
		}
	}
}

func copyFile(t *testing.T, from, to string, mode os.FileMode) {
	t.Helper()
	in, err := os.Open(from)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	out, err := os.OpenFile(to, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, mode)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(out, in); err != nil {
		t.Fatal(err)
	}
	if err := out.Close(); err != nil {
		t.Fatal(err)
	}
}
