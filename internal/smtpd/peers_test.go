package smtpd

import (
	"context"
	"net"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/sluicemta/sluice/internal/testutil"
)

// TestSwaks sends with swaks, a real scripted client. swaks on this
// machine lacks Net::SSLeay, so TLS is covered by the Go tests instead;
// AUTH runs from loopback, where it is offered without TLS.
func TestSwaks(t *testing.T) {
	swaks := testutil.NeedCommand(t, "swaks")
	s := baseSettings(&eventLog{})
	s.CheckPassword = func(u, p string) bool { return u == "alice" && p == "secret" }
	q := newRecQueue()
	_, addrs := startServer(t, s, q)
	host, port, _ := net.SplitHostPort(addrs["127.0.0.1:0"])

	tests := []struct {
		name   string
		args   []string
		ok     bool
		output string // must appear in swaks' transcript
		proto  string // of the queued message, when ok
		rcpts  int
	}{
		{"plain", []string{"--to", "u@local.test"}, true, "250 2.0.0 Ok: queued as", "ESMTP", 1},
		{"pipelining", []string{"--pipeline", "--to", "u@local.test,v@local.test"}, true, "PIPELINING", "ESMTP", 2},
		{"helo", []string{"--protocol", "SMTP", "--to", "u@local.test"}, true, "250 2.0.0 Ok", "SMTP", 1},
		{"relay denied", []string{"--to", "u@other.test"}, false, "554 5.7.1 <u@other.test>: Relay access denied", "", 0},
		{"percent hack", []string{"--to", "u%other.test@local.test"}, false, "554 5.7.1", "", 0},
		{"auth plain", []string{"--to", "u@other.test", "--auth", "PLAIN", "--auth-user", "alice", "--auth-password", "secret"}, true, "235 ", "ESMTPA", 1},
		{"auth login", []string{"--to", "u@other.test", "--auth", "LOGIN", "--auth-user", "alice", "--auth-password", "secret"}, true, "235 ", "ESMTPA", 1},
		{"auth wrong", []string{"--to", "u@other.test", "--auth", "PLAIN", "--auth-user", "alice", "--auth-password", "nope"}, false, "535 5.7.8", "", 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			before := len(q.all())
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			args := append([]string{"--server", host, "--port", port, "--from", "a@b.test", "--helo", "client.test",
				"--header", "Subject: swaks " + tc.name, "--body", "hello from swaks"}, tc.args...)
			out, err := exec.CommandContext(ctx, swaks, args...).CombinedOutput()
			if (err == nil) != tc.ok || !strings.Contains(string(out), tc.output) {
				t.Fatalf("swaks %v: err=%v\n%s", tc.args, err, out)
			}
			msgs := q.all()[before:]
			if !tc.ok {
				if len(msgs) != 0 {
					t.Errorf("%d messages queued", len(msgs))
				}
				return
			}
			if len(msgs) != 1 {
				t.Fatalf("%d messages queued", len(msgs))
			}
			env, content := msgs[0].env, string(msgs[0].content)
			if env.Proto != tc.proto || len(env.Rcpts) != tc.rcpts || env.Helo != "client.test" {
				t.Errorf("envelope %+v", env)
			}
			if !strings.HasPrefix(content, "Received: from client.test (unknown [127.0.0.1])") ||
				!strings.Contains(content, "Subject: swaks "+tc.name) || !strings.Contains(content, "hello from swaks") {
				t.Errorf("content %q", content)
			}
		})
	}
}

// TestSmtpSource drives the server with Postfix's load generator:
// several sessions, several messages per session, several recipients.
func TestSmtpSource(t *testing.T) {
	src := testutil.NeedCommand(t, "smtp-source")
	q := newRecQueue()
	_, addrs := startServer(t, baseSettings(&eventLog{}), q)
	ctx, cancel := context.WithTimeout(context.Background(), 45*time.Second)
	defer cancel()
	const msgs = 40
	out, err := exec.CommandContext(ctx, src, "-s", "4", "-m", strconv.Itoa(msgs), "-d", "-r", "3", "-l", "3000",
		"-M", "client.test", "-f", "a@b.test", "-t", "u@local.test", addrs["127.0.0.1:0"]).CombinedOutput()
	if err != nil {
		t.Fatalf("smtp-source: %v\n%s", err, out)
	}
	got := q.all()
	if len(got) != msgs {
		t.Fatalf("%d messages queued, want %d", len(got), msgs)
	}
	ids := map[string]bool{}
	for _, m := range got {
		if ids[m.env.ID] {
			t.Errorf("duplicate queue id %s", m.env.ID)
		}
		ids[m.env.ID] = true
		if len(m.env.Rcpts) != 3 || m.env.From != "a@b.test" || m.env.Helo != "client.test" {
			t.Errorf("envelope %+v", m.env)
		}
		if len(m.content) < 3000 || bareNewline(m.content) >= 0 {
			t.Errorf("content of %d bytes, bare newline at %d", len(m.content), bareNewline(m.content))
		}
	}
}
