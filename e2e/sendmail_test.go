package e2e

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/sluicemta/sluice/internal/testutil/sluicetest"
	"github.com/sluicemta/sluice/internal/testutil/smtpsink"
)

func binPath(t *testing.T, name string) string {
	t.Helper()
	root, err := sluicetest.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	return filepath.Join(root, "bin", name)
}

// run starts bin/NAME with the daemon's control socket and returns its
// output and exit code.
func run(t *testing.T, d *sluicetest.Daemon, stdin string, env []string, name string, args ...string) (string, int) {
	t.Helper()
	cmd := exec.Command(binPath(t, name), args...)
	cmd.Env = append(os.Environ(), append([]string{"SLUICE_CONTROL_SOCKET=" + d.ControlSocket(), "SLUICE_CONFIG=" + d.ConfigFile()}, env...)...)
	cmd.Stdin = strings.NewReader(stdin)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	return out.String(), code
}

// TestSendmailCallers: the invocations cron, PHP and git use reach the
// next hop through the running daemon, with the headers sendmail adds.
func TestSendmailCallers(t *testing.T) {
	sink := smtpsink.Start(t, smtpsink.Options{})
	d := sluicetest.Start(t, sluicetest.Options{Config: routes(sink.Port(), "")})
	for i, tc := range []struct {
		name, stdin string
		args        []string
		rcpt        string
	}{
		{"cron", "To: root@rcpt.test\nSubject: Cron <root@host> run-parts\n\nout\n", []string{"-FCronDaemon", "-i", "-odi", "-oem", "-oi", "-t"}, "root@rcpt.test"},
		{"php", "To: web@rcpt.test\nSubject: from php\n\n.\nline after a lone dot\n", []string{"-t", "-i"}, "web@rcpt.test"},
		{"git", "From: dev@sender.test\nSubject: [PATCH] x\n\npatch\n", []string{"-f", "dev@sender.test", "-i", "maint@rcpt.test"}, "maint@rcpt.test"},
	} {
		out, code := run(t, d, tc.stdin, nil, "sendmail", tc.args...)
		if code != 0 {
			t.Fatalf("%s: sendmail exited %d: %s", tc.name, code, out)
		}
		msgs, err := sink.WaitMessages(i+1, 20*time.Second)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		m := msgs[i]
		if r := m.Recipients(); len(r) != 1 || r[0] != tc.rcpt {
			t.Errorf("%s: recipients %v, want %s", tc.name, r, tc.rcpt)
		}
		for _, h := range []string{"Received: ", "Message-Id: ", "Date: ", "From: "} {
			if !bytes.Contains(m.Data, []byte("\r\n"+h)) && !bytes.HasPrefix(m.Data, []byte(h)) {
				t.Errorf("%s: header %q missing:\n%s", tc.name, h, m.Data)
			}
		}
		if tc.name == "php" && !bytes.Contains(m.Data, []byte("\r\n.\r\nline after a lone dot")) {
			t.Errorf("php: -i did not keep the lone dot:\n%s", m.Data)
		}
		if tc.name == "cron" && !bytes.Contains(m.Data, []byte("CronDaemon")) {
			t.Errorf("cron: -F full name not used:\n%s", m.Data)
		}
	}
	if out, code := run(t, d, "", nil, "sendmail"); code != 64 || !strings.Contains(out, "Recipient addresses must be specified") {
		t.Errorf("no recipients: exit %d %q, want 64 and Postfix's message", code, out)
	}
}

// TestMailqAndPostsuper: a deferred message shows in mailq with its
// reason, postsuper holds (shown with !), releases and deletes it.
func TestMailqAndPostsuper(t *testing.T) {
	sink := smtpsink.Start(t, smtpsink.Options{RcptReplies: map[string]string{"slow@rcpt.test": "450 4.2.0 mailbox busy"}})
	d := sluicetest.Start(t, sluicetest.Options{Config: routes(sink.Port(), "<domain rcpt2.test>\n    retry-after 1h\n    route [127.0.0.1]:1\n</domain>")})
	if out, _ := run(t, d, "", nil, "mailq"); strings.TrimSpace(out) != "Mail queue is empty" {
		t.Fatalf("empty queue: %q", out)
	}
	out, code := run(t, d, "Subject: q\n\nbody\n", nil, "sendmail", "-f", "a@sender.test", "x@rcpt2.test")
	if code != 0 {
		t.Fatalf("sendmail: %d %s", code, out)
	}
	ts, err := d.WaitAcct("t", 1, 20*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if ts[0]["srcType"] != "api" {
		t.Errorf("sendmail mail accounted as srcType %q, want api", ts[0]["srcType"])
	}
	out, _ = run(t, d, "", nil, "mailq")
	id := regexp.MustCompile(`(?m)^([0-9B-Zb-z]{16})\s`).FindStringSubmatch(out)
	if id == nil || !strings.Contains(out, "x@rcpt2.test") || !strings.Contains(out, "a@sender.test") ||
		!regexp.MustCompile(`\n-- \d+ Kbytes in 1 Request\.\n$`).MatchString(out) || !strings.Contains(out, "-Queue ID-") {
		t.Fatalf("mailq:\n%s", out)
	}
	// Postfix's wording of the delay reason, without a made-up reply code.
	if !strings.Contains(out, "(connect to 127.0.0.1[127.0.0.1]:1: Connection refused)") {
		t.Errorf("mailq delay reason not in Postfix's wording:\n%s", out)
	}
	if out, code := run(t, d, "", nil, "postsuper", "-h", id[1]); code != 0 || !strings.Contains(out, "placed on hold") {
		t.Fatalf("postsuper -h: %d %s", code, out)
	}
	if out, _ := run(t, d, "", nil, "mailq"); !strings.Contains(out, id[1]+"!") {
		t.Errorf("held message not marked with !:\n%s", out)
	}
	if out, code := run(t, d, "", nil, "postsuper", "-H", id[1]); code != 0 || !strings.Contains(out, "released from hold") {
		t.Fatalf("postsuper -H: %d %s", code, out)
	}
	if out, code := run(t, d, "", nil, "postsuper", "-d", id[1]); code != 0 || !strings.Contains(out, "Deleted: 1 message") {
		t.Fatalf("postsuper -d: %d %s", code, out)
	}
	// postsuper -e: a second deferred message expires at once, with a DSN.
	if out, code := run(t, d, "Subject: q2\n\nbody\n", nil, "sendmail", "-f", "a@sender.test", "y@rcpt2.test"); code != 0 {
		t.Fatalf("sendmail: %d %s", code, out)
	}
	if _, err := d.WaitAcct("t", 2, 20*time.Second); err != nil {
		t.Fatal(err)
	}
	out, _ = run(t, d, "", nil, "mailq")
	id2 := regexp.MustCompile(`(?m)^([0-9B-Zb-z]{16})[*!]?\s`).FindStringSubmatch(out)
	if id2 == nil {
		t.Fatalf("mailq:\n%s", out)
	}
	if out, code := run(t, d, "", nil, "postsuper", "-e", id2[1]); code != 0 || !strings.Contains(out, "expired") {
		t.Fatalf("postsuper -e: %d %s", code, out)
	}
	msgs, err := sink.WaitMessages(1, 20*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if msgs[0].From != "" || !bytes.Contains(msgs[0].Data, []byte("Final-Recipient: rfc822; y@rcpt2.test")) {
		t.Errorf("no DSN for the expired message: from <%s>\n%s", msgs[0].From, msgs[0].Data)
	}
	if out, _ := run(t, d, "", nil, "mailq"); strings.TrimSpace(out) != "Mail queue is empty" {
		t.Errorf("after delete: %q", out)
	}
	if out, code := run(t, d, "", nil, "postqueue", "-j"); code != 0 || out != "" {
		t.Errorf("postqueue -j on an empty queue: %d %q", code, out)
	}
	if out, code := run(t, d, "", nil, "sluice", "reopen-logs"); code != 0 {
		t.Errorf("sluice reopen-logs: %d %s", code, out)
	}
}

// TestSubmissionWhileDaemonDown: with the daemon stopped, sendmail hands
// the message to the maildrop helper and exits 0; the daemon picks it up
// at start and delivers it.
func TestSubmissionWhileDaemonDown(t *testing.T) {
	sink := smtpsink.Start(t, smtpsink.Options{})
	d, maildrop, env := stoppedWithMaildrop(t, sink)
	out, code := run(t, d, "To: down@rcpt.test\nSubject: while down\n\nqueued in the maildrop\n", env, "sendmail", "-t", "-i")
	if code != 0 {
		t.Fatalf("sendmail with the daemon down: exit %d: %s", code, out)
	}
	ents, _ := os.ReadDir(maildrop)
	if len(ents) != 1 {
		t.Fatalf("maildrop holds %d files, want 1", len(ents))
	}
	d.Restart()
	msgs, err := sink.WaitMessages(1, 20*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(msgs[0].Data, []byte("queued in the maildrop")) {
		t.Errorf("delivered content:\n%s", msgs[0].Data)
	}
	if ents, _ := os.ReadDir(maildrop); len(ents) != 0 {
		t.Errorf("maildrop file not removed after pickup")
	}
}

// stoppedWithMaildrop starts a daemon relaying to sink with a maildrop
// directory, then stops it: submissions go to the maildrop through
// sluice-postdrop (the environment returned) until d.Restart().
func stoppedWithMaildrop(t *testing.T, sink *smtpsink.Sink) (d *sluicetest.Daemon, maildrop string, env []string) {
	t.Helper()
	maildrop = filepath.Join(t.TempDir(), "maildrop")
	if err := os.Mkdir(maildrop, 0o1730); err != nil {
		t.Fatal(err)
	}
	d = sluicetest.Start(t, sluicetest.Options{Config: routes(sink.Port(), "maildrop "+maildrop)})
	if err := d.Stop(); err != nil {
		t.Fatal(err)
	}
	return d, maildrop, []string{"SLUICE_POSTDROP=" + binPath(t, "sluice-postdrop"), "SLUICE_MAILDROP=" + maildrop}
}

// TestSendmailBS: `sendmail -bs` speaks SMTP on stdin/stdout and the
// message it is given is delivered.
func TestSendmailBS(t *testing.T) {
	sink := smtpsink.Start(t, smtpsink.Options{})
	d := sluicetest.Start(t, sluicetest.Options{Config: routes(sink.Port(), "")})
	conv := "EHLO client.test\r\nMAIL FROM:<a@sender.test>\r\nRCPT TO:<bs@rcpt.test>\r\nDATA\r\nSubject: via -bs\r\n\r\nhello over stdin\r\n.\r\nQUIT\r\n"
	out, code := run(t, d, conv, nil, "sendmail", "-bs")
	if code != 0 || !strings.Contains(out, "250 2.0.0 Ok: queued as") || !strings.HasPrefix(out, "220 ") {
		t.Fatalf("sendmail -bs: exit %d:\n%s", code, out)
	}
	msgs, err := sink.WaitMessages(1, 20*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if r := msgs[0].Recipients(); len(r) != 1 || r[0] != "bs@rcpt.test" || !bytes.Contains(msgs[0].Data, []byte("hello over stdin")) {
		t.Errorf("delivered %v:\n%s", r, msgs[0].Data)
	}
}

// TestSendmailV: `sendmail -v` mails the sender a report of the delivery.
func TestSendmailV(t *testing.T) {
	sink := smtpsink.Start(t, smtpsink.Options{Ext: smtpsink.NoExt}) // no DSN at the next hop
	d := sluicetest.Start(t, sluicetest.Options{Config: routes(sink.Port(), "")})
	if out, code := run(t, d, "Subject: traced\n\nbody\n", nil, "sendmail", "-v", "-f", "me@sender.test", "traced@rcpt.test"); code != 0 {
		t.Fatalf("sendmail -v: exit %d: %s", code, out)
	}
	msgs, err := sink.WaitMessages(2, 20*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	var report *smtpsink.Message
	for i := range msgs {
		if msgs[i].From == "" {
			report = &msgs[i]
		}
	}
	if report == nil || report.Recipients()[0] != "me@sender.test" {
		t.Fatalf("no delivery report to the sender: %+v", msgs)
	}
	for _, want := range []string{"Final-Recipient: rfc822; traced@rcpt.test", "Action: relayed"} {
		if !bytes.Contains(report.Data, []byte(want)) {
			t.Errorf("report lacks %q:\n%s", want, report.Data)
		}
	}
}
