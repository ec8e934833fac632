package vmta

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"testing"
	"time"

	"github.com/sluicemta/sluice/internal/testutil"
)

// startSmtpSink runs Postfix's smtp-sink on a free loopback port.
func startSmtpSink(t testing.TB, args ...string) int {
	t.Helper()
	bin := testutil.NeedCommand(t, "smtp-sink")
	port := testutil.FreePort(t)
	if os.Geteuid() == 0 {
		args = append(args, "-u", "nobody") // required when run as root
	}
	args = append(args, "127.0.0.1:"+strconv.Itoa(port), "64")
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatalf("smtp-sink: %v", err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	for deadline := time.Now().Add(5 * time.Second); ; {
		c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", port))
		if err == nil {
			c.Close()
			return port
		}
		if time.Now().After(deadline) {
			t.Fatalf("smtp-sink did not listen: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestPostfixSmtpSink(t *testing.T) {
	for _, tc := range []struct {
		name  string
		args  []string
		code  int
		stage string
	}{
		{"pipelining", nil, 250, StageDot},
		{"no pipelining", []string{"-p"}, 250, StageDot},
		{"rcpt hard error", []string{"-f", "rcpt"}, 550, StageRcpt},
		{"mail soft error", []string{"-r", "mail"}, 450, StageMail},
		{"disconnect after data", []string{"-q", "data"}, 451, StageData},
	} {
		t.Run(tc.name, func(t *testing.T) {
			port := startSmtpSink(t, tc.args...)
			d := newTestDeliverer(t, Options{})
			dest := Destination{Domain: "example.net", Hosts: []HostPort{{Host: "127.0.0.1", Port: port}},
				UseStartTLS: true, CommandTimeout: 5 * time.Second, GreetingTimeout: 5 * time.Second}
			for i := 0; i < 5; i++ {
				res := d.Deliver(context.Background(), dest, testMsg(body1, "a@example.net", "b@example.net", "c@example.net"))
				for j, r := range res.Rcpts {
					if r.Reply.Code/100 != tc.code/100 || r.Stage != tc.stage {
						t.Fatalf("msg %d rcpt %d: %+v", i, j, r)
					}
				}
				if tc.code == 250 && res.Reused != (i > 0) {
					t.Errorf("msg %d: Reused = %v", i, res.Reused)
				}
			}
		})
	}
}
