package e2e

import (
	"bytes"
	"fmt"
	"regexp"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sluicemta/sluice/internal/testutil/sluicetest"
	"github.com/sluicemta/sluice/internal/testutil/smtpsink"
)

// sendmail -bv: the recipients are probed (MAIL, RCPT, RSET; never DATA)
// and the sender gets ONE "Mail Delivery Status Report", as from Postfix.

// verifyReport waits for the one report to sender (null envelope sender)
// and returns it.
func verifyReport(t *testing.T, sink *smtpsink.Sink, sender string) smtpsink.Message {
	t.Helper()
	msgs, err := sink.WaitMessages(1, 20*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if len(msgs) != 1 || msgs[0].From != "" || msgs[0].Recipients()[0] != sender {
		t.Fatalf("want one report to %s, got %+v", sender, msgs)
	}
	return msgs[0]
}

// probedOnly checks that each recipient's RCPT TO was followed by RSET
// (or QUIT), never DATA, and returns how often each was probed.
func probedOnly(t *testing.T, sink *smtpsink.Sink, rcpts ...string) map[string]int {
	t.Helper()
	seen := map[string]int{}
	for _, c := range sink.Connections() {
		var cmds []string
		for _, l := range c.Log {
			if cmd, ok := strings.CutPrefix(l, "C: "); ok {
				cmds = append(cmds, cmd)
			}
		}
		for i, cmd := range cmds {
			for _, r := range rcpts {
				if !strings.HasPrefix(cmd, "RCPT TO:<"+r+">") {
					continue
				}
				seen[r]++
				j := i + 1
				for j < len(cmds) && strings.HasPrefix(cmds[j], "RCPT TO:") {
					j++
				}
				if j < len(cmds) && cmds[j] != "RSET" && cmds[j] != "QUIT" {
					t.Errorf("probe of %s followed by %q (want RSET): %v", r, cmds[j], cmds)
				}
			}
		}
	}
	return seen
}

func wantIn(t *testing.T, what string, data []byte, wants ...string) {
	t.Helper()
	for _, w := range wants {
		if !bytes.Contains(data, []byte(w)) {
			t.Errorf("%s lacks %q:\n%s", what, w, data)
		}
	}
}

// noProbeAccounting: probes write no d or b record (only the report's
// own delivery is accounted).
func noProbeAccounting(t *testing.T, d *sluicetest.Daemon, rcpts ...string) {
	t.Helper()
	recs, err := d.WaitAcct("d", 1, 10*time.Second) // the report's delivery
	if err != nil {
		t.Fatal(err)
	}
	all, _ := d.Accounting()
	for _, r := range all {
		for _, rc := range rcpts {
			if r["rcpt"] == rc {
				t.Errorf("probe of %s accounted: %v", rc, r)
			}
		}
	}
	if len(recs) != 1 {
		t.Errorf("%d d records, want 1 (the report)", len(recs))
	}
}

// TestVerifyDeliverable: the sink accepts the RCPT; the report says
// deliverable, and the sink got no DATA for the probe. As Postfix's,
// sendmail -bv reads no message: the report carries the probe's headers,
// not what was on standard input.
func TestVerifyDeliverable(t *testing.T) {
	sink := smtpsink.Start(t, smtpsink.Options{})
	d := sluicetest.Start(t, sluicetest.Options{Config: routes(sink.Port(), "")})
	out, code := run(t, d, "Subject: is it there?\n\nthis body is never sent\n", nil, "sendmail", "-bv", "-f", "me@sender.test", "ok@rcpt.test")
	if code != 0 {
		t.Fatalf("sendmail -bv: exit %d: %s", code, out)
	}
	rep := verifyReport(t, sink, "me@sender.test")
	wantIn(t, "report", rep.Data,
		"Subject: Mail Delivery Status Report",
		"Enclosed is the mail delivery report that you requested.",
		fmt.Sprintf("<ok@rcpt.test>: delivery via 127.0.0.1[127.0.0.1]:%d: 250 2.1.5 Ok", sink.Port()),
		"Final-Recipient: rfc822; ok@rcpt.test\r\nAction: deliverable\r\nStatus: 2.1.5\r\nRemote-MTA: dns; 127.0.0.1\r\nDiagnostic-Code: smtp; 250 2.1.5 Ok",
		"Content-Type: text/rfc822-headers", "Subject: probe", "To:\tok@rcpt.test")
	if bytes.Contains(rep.Data, []byte("is it there?")) {
		t.Error("the report carries what was on standard input; -bv must not read it")
	}
	if bytes.Contains(rep.Data, []byte("this body is never sent")) {
		t.Errorf("the report carries the body:\n%s", rep.Data)
	}
	if n := len(sink.Transactions()); n != 1 {
		t.Errorf("the sink received content %d times, want once (the report)", n)
	}
	if seen := probedOnly(t, sink, "ok@rcpt.test"); seen["ok@rcpt.test"] != 1 {
		t.Errorf("probed %d times, want 1", seen["ok@rcpt.test"])
	}
	if _, err := d.WaitLog("to=<ok@rcpt.test>, relay=127.0.0.1[127.0.0.1]", 5*time.Second); err != nil {
		t.Fatal(err)
	}
	if line, _ := d.WaitLog("to=<ok@rcpt.test>", time.Second); !strings.Contains(line, "dsn=2.1.5, status=deliverable (250 2.1.5 Ok)") {
		t.Errorf("log line %q", line)
	}
	if _, err := d.WaitLog("sender delivery status notification: ", 5*time.Second); err != nil {
		t.Error(err)
	}
	noProbeAccounting(t, d, "ok@rcpt.test")
}

// TestVerifyUndeliverable: one of two recipients is refused; one
// report has one deliverable and one undeliverable recipient.
func TestVerifyUndeliverable(t *testing.T) {
	sink := smtpsink.Start(t, smtpsink.Options{RcptReplies: map[string]string{"bad@rcpt.test": "550 5.1.1 <bad@rcpt.test>: Recipient address rejected: User unknown"}})
	d := sluicetest.Start(t, sluicetest.Options{Config: routes(sink.Port(), "")})
	if out, code := run(t, d, "", nil, "sendmail", "-bv", "-f", "me@sender.test", "good@rcpt.test", "bad@rcpt.test"); code != 0 {
		t.Fatalf("sendmail -bv: exit %d: %s", code, out)
	}
	rep := verifyReport(t, sink, "me@sender.test")
	wantIn(t, "report", rep.Data,
		"<good@rcpt.test>: delivery via 127.0.0.1[127.0.0.1]:",
		"<bad@rcpt.test>: delivery via 127.0.0.1[127.0.0.1]:",
		"Final-Recipient: rfc822; good@rcpt.test\r\nAction: deliverable\r\n",
		"Final-Recipient: rfc822; bad@rcpt.test\r\nAction: undeliverable\r\nStatus: 5.1.1\r\n",
		"Diagnostic-Code: smtp; 550 5.1.1 <bad@rcpt.test>: Recipient address")
	if line, err := d.WaitLog("to=<bad@rcpt.test>", 5*time.Second); err != nil || !strings.Contains(line, "status=undeliverable (host 127.0.0.1[127.0.0.1] said: 550 5.1.1") {
		t.Errorf("log line %q (%v)", line, err)
	}
	probedOnly(t, sink, "good@rcpt.test", "bad@rcpt.test")
	noProbeAccounting(t, d, "good@rcpt.test", "bad@rcpt.test")
	time.Sleep(time.Second)
	if n := len(sink.Messages()); n != 1 {
		t.Errorf("%d messages, want the one report", n)
	}
}

// TestVerifyTemporaryFailure: as Postfix in verify mode, a temporary
// failure (a 450 to RCPT, a next hop that refuses connections) is not
// retried for days: it is reported at once as undeliverable, with its
// 4.x.x status, and never probed again (retry-after is 1s here).
func TestVerifyTemporaryFailure(t *testing.T) {
	sink := smtpsink.Start(t, smtpsink.Options{RcptReplies: map[string]string{"busy@rcpt.test": "450 4.2.1 mailbox busy, try later"}})
	d := sluicetest.Start(t, sluicetest.Options{Config: routes(sink.Port(), "<domain down.test>\n    route [127.0.0.1]:1\n</domain>")})
	if out, code := run(t, d, "", nil, "sendmail", "-bv", "-f", "me@sender.test", "busy@rcpt.test", "x@down.test"); code != 0 {
		t.Fatalf("sendmail -bv: exit %d: %s", code, out)
	}
	rep := verifyReport(t, sink, "me@sender.test")
	wantIn(t, "report", rep.Data,
		"Final-Recipient: rfc822; busy@rcpt.test\r\nAction: undeliverable\r\nStatus: 4.2.1\r\n",
		"Final-Recipient: rfc822; x@down.test\r\nAction: undeliverable\r\nStatus: 4.4.1\r\n",
		"<x@down.test>: connect to 127.0.0.1[127.0.0.1]:1: Connection refused")
	time.Sleep(3 * time.Second) // three retry-after intervals
	if seen := probedOnly(t, sink, "busy@rcpt.test"); seen["busy@rcpt.test"] != 1 {
		t.Errorf("busy@rcpt.test probed %d times, want once", seen["busy@rcpt.test"])
	}
	if n := len(sink.Messages()); n != 1 {
		t.Errorf("%d messages, want the one report", n)
	}
	if out, _ := run(t, d, "", nil, "mailq"); strings.TrimSpace(out) != "Mail queue is empty" {
		t.Errorf("request still queued:\n%s", out)
	}
}

// TestVerifySurvivesRestart: the request is durable when sendmail
// exits 0 and shows in mailq; the daemon is stopped while its probe hangs
// on an unresponsive next hop, and after a restart the report arrives,
// once, and says deliverable (the shutdown is not the recipient's fault).
func TestVerifySurvivesRestart(t *testing.T) {
	hang := make(chan struct{})
	var hanging atomic.Bool
	hanging.Store(true)
	sink := smtpsink.Start(t, smtpsink.Options{Func: func(c smtpsink.Call) string {
		if c.Stage == smtpsink.StageGreeting && hanging.Load() {
			<-hang // a next hop that accepts the connection and says nothing
			return smtpsink.Close
		}
		return ""
	}})
	defer func() {
		if hanging.Swap(false) {
			close(hang)
		}
	}()
	d := sluicetest.Start(t, sluicetest.Options{Config: routes(sink.Port(), "")})
	if out, code := run(t, d, "Subject: survive\n\n", nil, "sendmail", "-bv", "-f", "me@sender.test", "later@rcpt.test"); code != 0 {
		t.Fatalf("sendmail -bv: exit %d: %s", code, out)
	}
	for deadline := time.Now().Add(10 * time.Second); len(sink.Connections()) == 0; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the daemon never connected to probe")
		}
	}
	out, _ := run(t, d, "", nil, "mailq")
	if !regexp.MustCompile(`(?m)^[0-9B-Zb-z]{16}\*?\s.*me@sender\.test`).MatchString(out) || !strings.Contains(out, "later@rcpt.test") {
		t.Errorf("mailq does not show the pending -bv request:\n%s", out)
	}
	if err := d.Stop(); err != nil {
		t.Fatal(err)
	}
	hanging.Store(false)
	close(hang)
	sink.Reset()
	d.Restart()
	rep := verifyReport(t, sink, "me@sender.test")
	wantIn(t, "report", rep.Data, "Final-Recipient: rfc822; later@rcpt.test\r\nAction: deliverable\r\n", "Subject: probe")
	time.Sleep(2 * time.Second) // a second report would show now
	if n := len(sink.Messages()); n != 1 {
		t.Errorf("%d messages after restart, want the one report", n)
	}
	probedOnly(t, sink, "later@rcpt.test")
}

// TestVerifyWhileDaemonDown: with the daemon stopped, sendmail -bv goes
// through the maildrop like any submission; the daemon picks the request
// up at start, probes and reports.
func TestVerifyWhileDaemonDown(t *testing.T) {
	sink := smtpsink.Start(t, smtpsink.Options{})
	d, _, env := stoppedWithMaildrop(t, sink)
	if out, code := run(t, d, "", env, "sendmail", "-bv", "-f", "me@sender.test", "down@rcpt.test"); code != 0 {
		t.Fatalf("sendmail -bv with the daemon down: exit %d: %s", code, out)
	}
	d.Restart()
	rep := verifyReport(t, sink, "me@sender.test")
	wantIn(t, "report", rep.Data, "Final-Recipient: rfc822; down@rcpt.test\r\nAction: deliverable\r\n")
	probedOnly(t, sink, "down@rcpt.test")
	if n := len(sink.Transactions()); n != 1 {
		t.Errorf("the sink received content %d times, want once (the report)", n)
	}
}
