package e2e

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sluicemta/sluice/internal/testutil"
	"github.com/sluicemta/sluice/internal/testutil/smtpsink"
)

// TestPrivilegeDrop: started as root, the daemon binds its listener and
// then runs as run-as-user for good; it still receives, delivers, and
// reopens its log and accounting files on SIGHUP.
func TestPrivilegeDrop(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to start the daemon as root")
	}
	sink := smtpsink.Start(t, smtpsink.Options{})
	dir := t.TempDir()
	for _, d := range []string{"log", "spool", "run"} {
		if err := os.Mkdir(filepath.Join(dir, d), 0o750); err != nil {
			t.Fatal(err)
		}
		if err := os.Chown(filepath.Join(dir, d), 65534, 65534); err != nil {
			t.Fatal(err)
		}
	}
	openForTraversal(t, dir)
	port := testutil.FreePort(t)
	conf := filepath.Join(dir, "sluice.conf")
	text := fmt.Sprintf(`host-name priv.test
smtp-listener 127.0.0.1:%d
spool %s/spool
log-file %s/log/sluice.log
control-socket %s/run/control.sock
run-as-user nobody
<source 127.0.0.0/8>
    always-allow-relaying yes
</source>
<acct-file %s/log/acct.csv>
    records d,b
</acct-file>
<domain *>
    route [127.0.0.1]:%d
</domain>
`, port, dir, dir, dir, dir, sink.Port())
	if err := os.WriteFile(conf, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(binPath(t, "sluiced"), "--config", conf)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		cmd.Process.Signal(syscall.SIGTERM)
		cmd.Wait()
	}()
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	deadline := time.Now().Add(10 * time.Second)
	for !greets(addr) {
		if time.Now().After(deadline) {
			t.Fatalf("sluiced did not come up: %s", stderr.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", cmd.Process.Pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(status), "\n") {
		if strings.HasPrefix(line, "Uid:") || strings.HasPrefix(line, "Gid:") {
			if f := strings.Fields(line); len(f) != 5 || f[1] != "65534" || f[2] != "65534" || f[3] != "65534" || f[4] != "65534" {
				t.Fatalf("daemon still holds privilege: %q", line)
			}
		}
	}
	swaks(t, addr, "--from", "a@sender.test", "--to", "r@rcpt.test")
	if _, err := sink.WaitMessages(1, 20*time.Second); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"log/sluice.log", "log/acct.csv"} {
		var st syscall.Stat_t
		if err := syscall.Stat(filepath.Join(dir, f), &st); err != nil || st.Uid != 65534 {
			t.Errorf("%s: owner uid %d (%v), want the run-as-user's", f, st.Uid, err)
		}
	}
	cmd.Process.Signal(syscall.SIGHUP)
	deadline = time.Now().Add(5 * time.Second)
	for {
		data, _ := os.ReadFile(filepath.Join(dir, "log/sluice.log"))
		if strings.Contains(string(data), "reloaded") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no reload after SIGHUP as nobody:\n%s\n%s", data, stderr.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func greets(addr string) bool {
	c, err := (&net.Dialer{Timeout: time.Second}).Dial("tcp", addr)
	if err != nil {
		return false
	}
	defer c.Close()
	c.SetReadDeadline(time.Now().Add(2 * time.Second))
	buf := make([]byte, 4)
	n, _ := c.Read(buf)
	return n >= 3 && string(buf[:3]) == "220"
}
