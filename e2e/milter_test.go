package e2e

import (
	"bytes"
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
	"testing"
	"time"

	gomilter "github.com/emersion/go-milter"

	"github.com/sluicemta/sluice/internal/testutil"
	"github.com/sluicemta/sluice/internal/testutil/milterpeers"
	"github.com/sluicemta/sluice/internal/testutil/sluicetest"
	"github.com/sluicemta/sluice/internal/testutil/smtpsink"
)

// senderDKIM is the OpenDKIM the e2e tests sign with: sender.test's key,
// simple/simple so that any byte sluiced changes breaks the signature.
var senderDKIM = milterpeers.OpenDKIMOptions{Domain: "sender.test", Canonicalization: "simple/simple"}

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
	sock, key := milterpeers.StartOpenDKIM(t, senderDKIM)
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
	if !milterpeers.DKIMVerify(t, m, key) {
		t.Fatalf("signature does not verify:\n%s", m)
	}
	// The check can fail: one changed byte in a signed header breaks it.
	tampered := bytes.Replace(m, []byte("a  folded"), []byte("a folded"), 1)
	if bytes.Equal(tampered, m) || milterpeers.DKIMVerify(t, tampered, key) {
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

// TestRspamdARCAfterOpenDKIM is the README's ARC recipe through sluiced:
// OpenDKIM signs, rspamd seals, the next hop gets a message whose DKIM
// signature and ARC chain both verify.
func TestRspamdARCAfterOpenDKIM(t *testing.T) {
	rsock, arcKey := milterpeers.StartRspamd(t, milterpeers.RspamdOptions{Domain: "sender.test"})
	dsock, dkimKey := milterpeers.StartOpenDKIM(t, senderDKIM)
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
	if got := milterpeers.ARCVerify(t, m, arcKey); !strings.HasPrefix(got, "pass") {
		t.Errorf("ARC chain: %s\n%s", got, m)
	}
	if !milterpeers.DKIMVerify(t, m, dkimKey) {
		t.Errorf("DKIM signature broken after sealing:\n%s", m)
	}
	if got := milterpeers.ARCVerify(t, bytes.Replace(m, []byte("sealed body"), []byte("sealed bodY"), 1), arcKey); strings.HasPrefix(got, "pass") {
		t.Errorf("tampered message passes ARC (%s): the check proves nothing", got)
	}
}
