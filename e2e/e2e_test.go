// Package e2e runs the built sluiced (bin/sluiced, `make build`) against
// real peers: swaks and Postfix's smtp-source as clients, the recording
// sink as the next hop. Every address is on loopback; no DNS is used
// (each test domain has a bracketed route).
package e2e

import (
	"bytes"
	"fmt"
	"net"
	"net/smtp"
	"os/exec"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sluicemta/sluice/internal/testutil"
	"github.com/sluicemta/sluice/internal/testutil/sluicetest"
	"github.com/sluicemta/sluice/internal/testutil/smtpsink"
)

// routes sends every domain to the sink (so no test ever asks DNS), the
// sender domain too, so DSNs arrive there as well.
func routes(port int, extra string) string {
	return fmt.Sprintf(`<domain *>
    retry-after 1s
    route [127.0.0.1]:%d
</domain>
<domain rcpt.test>
    route [127.0.0.1]:%d
</domain>
<domain sender.test>
    route [127.0.0.1]:%d
</domain>
%s`, port, port, port, extra)
}

func swaks(t *testing.T, server string, args ...string) string {
	t.Helper()
	bin := testutil.NeedCommand(t, "swaks")
	cmd := exec.Command(bin, append([]string{"--server", server, "--timeout", "20"}, args...)...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("swaks %v: %v\n%s", args, err, out)
	}
	return string(out)
}

func TestRelayDeliversExactlyWhatWasSent(t *testing.T) {
	sink := smtpsink.Start(t, smtpsink.Options{})
	d := sluicetest.Start(t, sluicetest.Options{Config: routes(sink.Port(), "")})
	for i := 0; i < 3; i++ {
		out := swaks(t, d.SMTPAddr(), "--from", "a@sender.test", "--to", fmt.Sprintf("x%d@rcpt.test,y%d@rcpt.test", i, i),
			"--header", fmt.Sprintf("Message-Id: <e2e-%d@sender.test>", i), "--body", "line one\nline two\n.\n..dots\n")
		if !strings.Contains(out, "250 2.0.0") {
			t.Fatalf("not queued:\n%s", out)
		}
	}
	msgs, err := sink.WaitMessages(3, 20*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond) // nothing more may arrive
	msgs = sink.Messages()
	if len(msgs) != 3 {
		t.Fatalf("sink got %d messages, want exactly 3", len(msgs))
	}
	seen := map[string]bool{}
	for _, m := range msgs {
		seen[m.MessageID] = true
		if len(m.Recipients()) != 2 {
			t.Errorf("%s: recipients %v, want both in one transaction", m.MessageID, m.Recipients())
		}
		if m.BareLF || bytes.Contains(bytes.ReplaceAll(m.Data, []byte("\r\n"), nil), []byte("\n")) {
			t.Errorf("%s: content has a bare LF", m.MessageID)
		}
		if !bytes.Contains(m.Data, []byte("Received: from ")) {
			t.Errorf("%s: no Received header", m.MessageID)
		}
		if !bytes.Contains(m.Data, []byte("\r\n.\r\n..dots\r\n")) {
			t.Errorf("%s: dot lines not carried intact:\n%s", m.MessageID, m.Data)
		}
	}
	for i := 0; i < 3; i++ {
		if !seen[fmt.Sprintf("<e2e-%d@sender.test>", i)] {
			t.Errorf("message %d missing at the sink", i)
		}
	}
	recs, err := d.WaitAcct("d", 6, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if len(recs) != 6 {
		t.Errorf("%d d records, want 6", len(recs))
	}
	for _, r := range recs {
		if r["dsnStatus"] != "2.0.0 (success)" || r["dsnAction"] != "relayed" || r["queueId"] == "" {
			t.Errorf("d record %v", r)
		}
		if r["srcType"] != "smtp" || !strings.HasSuffix(r["srcMta"], " (127.0.0.1)") {
			t.Errorf("d record source: srcType %q srcMta %q", r["srcType"], r["srcMta"])
		}
	}
	if _, err := d.WaitLog("status=sent (250", 5*time.Second); err != nil {
		t.Error(err)
	}
}

func TestBounceMakesOneDSNAndDoubleBounceGoesToPostmaster(t *testing.T) {
	sink := smtpsink.Start(t, smtpsink.Options{RcptReplies: map[string]string{
		"bad1@rcpt.test": "550 5.1.1 no such user",
		"bad2@rcpt.test": "550 5.1.1 no such user",
		"bad3@rcpt.test": "550 5.1.1 no such user",
	}})
	d := sluicetest.Start(t, sluicetest.Options{Config: routes(sink.Port(), "")})
	swaks(t, d.SMTPAddr(), "--from", "a@sender.test", "--to", "good@rcpt.test,bad1@rcpt.test,bad2@rcpt.test")
	swaks(t, d.SMTPAddr(), "--from", "<>", "--to", "bad3@rcpt.test")

	bs, err := d.WaitAcct("b", 3, 20*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	for _, b := range bs {
		if !strings.HasPrefix(b["dsnStatus"], "5.1.1") || !strings.Contains(b["dsnDiag"], "550 5.1.1") || b["bounceCat"] != "bad-mailbox" {
			t.Errorf("b record %v", b)
		}
	}
	// The good recipient and the one DSN are delivered: 2 d records.
	if _, err := d.WaitAcct("d", 2, 20*time.Second); err != nil {
		t.Fatal(err)
	}
	time.Sleep(500 * time.Millisecond)
	var dsns []smtpsink.Message
	for _, m := range sink.Messages() {
		if m.From == "" {
			dsns = append(dsns, m)
		}
	}
	// One DSN to the sender covering both failed recipients, and one double
	// bounce to the postmaster for the null-sender message.
	var dsn *smtpsink.Message
	to := map[string]int{}
	for i, m := range dsns {
		for _, r := range m.Recipients() {
			to[r]++
			if r == "a@sender.test" {
				dsn = &dsns[i]
			}
		}
	}
	if len(dsns) != 2 || to["a@sender.test"] != 1 || to["postmaster@sluice.test"] != 1 {
		t.Fatalf("null-sender messages at the sink went to %v, want one DSN to the sender and one double bounce to the postmaster", to)
	}
	for _, want := range []string{"report-type=delivery-status", "Final-Recipient: rfc822; bad1@rcpt.test", "Final-Recipient: rfc822; bad2@rcpt.test", "Action: failed"} {
		if !bytes.Contains(dsn.Data, []byte(want)) {
			t.Errorf("DSN lacks %q", want)
		}
	}
	if bytes.Contains(dsn.Data, []byte("Final-Recipient: rfc822; good@rcpt.test")) {
		t.Error("DSN names the delivered recipient")
	}
}

func TestDeferralIsRetriedOnSchedule(t *testing.T) {
	var tries atomic.Int32
	sink := smtpsink.Start(t, smtpsink.Options{Func: func(c smtpsink.Call) string {
		if c.Stage == smtpsink.StageRcpt && c.Arg == "later@rcpt.test" && tries.Add(1) == 1 {
			return "450 4.2.0 greylisted, come back later"
		}
		return ""
	}})
	d := sluicetest.Start(t, sluicetest.Options{Config: routes(sink.Port(), "")})
	start := time.Now()
	swaks(t, d.SMTPAddr(), "--from", "a@sender.test", "--to", "later@rcpt.test")
	ts, err := d.WaitAcct("t", 1, 20*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if ts[0]["dsnAction"] != "delayed" || !strings.HasPrefix(ts[0]["dsnStatus"], "4.2.0") {
		t.Errorf("t record %v", ts[0])
	}
	if _, err := d.WaitAcct("d", 1, 20*time.Second); err != nil {
		t.Fatal(err)
	}
	if el := time.Since(start); el < 800*time.Millisecond {
		t.Errorf("retried after %v, before retry-after 1s (-10%% jitter)", el)
	}
	if n := tries.Load(); n != 2 {
		t.Errorf("%d attempts, want 2", n)
	}
}

func TestRelayRefusedForOtherSources(t *testing.T) {
	sink := smtpsink.Start(t, smtpsink.Options{})
	d := sluicetest.Start(t, sluicetest.Options{Config: routes(sink.Port(), `
relay-domain rcpt.test
<source 127.0.0.2/32>
    always-allow-relaying no
</source>`)})
	dialer := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP("127.0.0.2")}, Timeout: 5 * time.Second}
	for _, tc := range []struct {
		rcpt string
		want string
	}{
		{"user@elsewhere.test", "554"},
		{"user%elsewhere.test@rcpt.test", "554"},
		{"@rcpt.test:user@elsewhere.test", "5"},
		{"\"user@elsewhere.test\"@rcpt.test", "554"},
		{"user@rcpt.test", "250"}, // a relay-domain is accepted from anyone
	} {
		conn, err := dialer.Dial("tcp", d.SMTPAddr())
		if err != nil {
			t.Fatal(err)
		}
		c, err := smtp.NewClient(conn, "localhost")
		if err != nil {
			t.Fatal(err)
		}
		if err := c.Mail("a@sender.test"); err != nil {
			t.Fatal(err)
		}
		err = c.Rcpt(tc.rcpt)
		got := "250"
		if err != nil {
			got = err.Error()
		}
		if !strings.HasPrefix(got, tc.want) {
			t.Errorf("RCPT %s from 127.0.0.2: %q, want %s", tc.rcpt, got, tc.want)
		}
		if tc.want == "554" && !strings.Contains(got, "5.7.1") {
			t.Errorf("RCPT %s refusal lacks 5.7.1: %q", tc.rcpt, got)
		}
		c.Close()
	}
}

func TestSmtpSourceLoad(t *testing.T) {
	src := testutil.NeedCommand(t, "smtp-source")
	sink := smtpsink.Start(t, smtpsink.Options{})
	d := sluicetest.Start(t, sluicetest.Options{Config: routes(sink.Port(), "")})
	const n = 200
	cmd := exec.Command(src, "-s", "20", "-m", fmt.Sprint(n), "-l", "2048", "-f", "a@sender.test", "-t", "r@rcpt.test", d.SMTPAddr())
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("smtp-source: %v\n%s", err, out)
	}
	if _, err := sink.WaitMessages(n, 60*time.Second); err != nil {
		t.Fatal(err)
	}
	recs, err := d.WaitAcct("d", n, 20*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond)
	if got := len(sink.Messages()); got != n {
		t.Errorf("sink got %d messages, want %d", got, n)
	}
	if len(recs) != n {
		t.Errorf("%d d records, want %d", len(recs), n)
	}
}

// TestRestartDeliversQueuedMailOnce queues mail while the next hop is
// down, restarts the daemon, and then brings the next hop up.
func TestRestartDeliversQueuedMailOnce(t *testing.T) {
	port := testutil.FreePort(t)
	d := sluicetest.Start(t, sluicetest.Options{Config: routes(port, "")})
	const n = 5
	for i := 0; i < n; i++ {
		swaks(t, d.SMTPAddr(), "--from", "a@sender.test", "--to", fmt.Sprintf("r%d@rcpt.test", i))
	}
	if _, err := d.WaitAcct("t", n, 20*time.Second); err != nil {
		t.Fatal(err)
	}
	if err := d.Stop(); err != nil {
		t.Fatal(err)
	}
	sink := smtpsink.Start(t, smtpsink.Options{Addr: fmt.Sprintf("127.0.0.1:%d", port)})
	d.Restart()
	if _, err := sink.WaitMessages(n, 30*time.Second); err != nil {
		t.Fatal(err)
	}
	time.Sleep(2 * time.Second) // a retry storm or a duplicate would show now
	got := map[string]int{}
	for _, m := range sink.Messages() {
		for _, r := range m.Recipients() {
			got[r]++
		}
	}
	for i := 0; i < n; i++ {
		if c := got[fmt.Sprintf("r%d@rcpt.test", i)]; c != 1 {
			t.Errorf("r%d delivered %d times, want once", i, c)
		}
	}
}
