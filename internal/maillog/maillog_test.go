package maillog

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestFormatDelay(t *testing.T) {
	for _, tc := range []struct {
		d    time.Duration
		want string
	}{
		{0, "0"},
		{-time.Second, "0"},
		{4 * time.Millisecond, "0"},
		{5 * time.Millisecond, "0.01"},
		{10 * time.Millisecond, "0.01"},
		{70 * time.Millisecond, "0.07"},
		{100 * time.Millisecond, "0.1"},
		{420 * time.Millisecond, "0.42"},
		{999 * time.Millisecond, "1"},
		{1200 * time.Millisecond, "1.2"},
		{1040 * time.Millisecond, "1"},
		{1250 * time.Millisecond, "1.3"},
		{5500 * time.Millisecond, "5.5"},
		{9960 * time.Millisecond, "10"},
		{12300 * time.Millisecond, "12"},
		{146700 * time.Millisecond, "147"},
		{432000 * time.Second, "432000"},
	} {
		if got := FormatDelay(tc.d); got != tc.want {
			t.Errorf("FormatDelay(%v) = %q, want %q", tc.d, got, tc.want)
		}
	}
}

func TestLineShapes(t *testing.T) {
	ms := time.Millisecond
	tests := []struct {
		name string
		got  string
		want string
	}{
		{"sent", DeliveryLine{QueueID: "4ZkQ8x1B2CzBCDFG", To: "user@example.com", RelayHost: "mx.example.com", RelayIP: "192.0.2.1", RelayPort: 25,
			Delay: 1200 * ms, Delays: [4]time.Duration{100 * ms, 10 * ms, 500 * ms, 600 * ms}, DSN: "2.0.0", Status: StatusSent,
			Reason: "250 2.0.0 Ok: queued as X"}.String(),
			"4ZkQ8x1B2CzBCDFG: to=<user@example.com>, relay=mx.example.com[192.0.2.1]:25, delay=1.2, delays=0.1/0.01/0.5/0.6, dsn=2.0.0, status=sent (250 2.0.0 Ok: queued as X)"},
		{"sent, reused connection, orig_to", DeliveryLine{QueueID: "Q", To: "a@x.test", OrigTo: "alias@x.test", RelayHost: "mx.x.test", RelayIP: "2001:db8::1", RelayPort: 25,
			ConnUse: 3, Delay: 420 * ms, Delays: [4]time.Duration{70 * ms, 0, 0, 350 * ms}, DSN: "2.0.0", Status: StatusSent, Reason: "250 OK"}.String(),
			"Q: to=<a@x.test>, orig_to=<alias@x.test>, relay=mx.x.test[2001:db8::1]:25, conn_use=3, delay=0.42, delays=0.07/0/0/0.35, dsn=2.0.0, status=sent (250 OK)"},
		{"orig_to equal to to is not logged", DeliveryLine{QueueID: "Q", To: "a@x.test", OrigTo: "A@X.test", RelayHost: "local", DSN: "2.0.0", Status: StatusSent, Reason: "delivered to mailbox"}.String(),
			"Q: to=<a@x.test>, relay=local, delay=0, delays=0/0/0/0, dsn=2.0.0, status=sent (delivered to mailbox)"},
		{"deferred without connection", DeliveryLine{QueueID: "Q", To: "u@down.test", Delay: 30 * time.Second, Delays: [4]time.Duration{0, 0, 30 * time.Second, 0},
			DSN: "4.4.1", Status: StatusDeferred, Reason: "connect to mx.down.test[192.0.2.9]:25: Connection refused"}.String(),
			"Q: to=<u@down.test>, relay=none, delay=30, delays=0/0/30/0, dsn=4.4.1, status=deferred (connect to mx.down.test[192.0.2.9]:25: Connection refused)"},
		{"bounced", DeliveryLine{QueueID: "Q", To: "nobody@example.com", RelayHost: "mx.example.com", RelayIP: "192.0.2.1", RelayPort: 25,
			Delay: 2 * time.Second, Delays: [4]time.Duration{0, 0, time.Second, time.Second}, DSN: "5.1.1", Status: StatusBounced,
			Reason: Said("mx.example.com", "192.0.2.1", "550-5.1.1 The email account does not exist.\r\n550 5.1.1 Please check", "RCPT TO")}.String(),
			"Q: to=<nobody@example.com>, relay=mx.example.com[192.0.2.1]:25, delay=2, delays=0/0/1/1, dsn=5.1.1, status=bounced (host mx.example.com[192.0.2.1] said: 550-5.1.1 The email account does not exist. 550 5.1.1 Please check (in reply to RCPT TO command))"},
		{"expired", DeliveryLine{QueueID: "Q", To: "u@slow.test", Delay: 432000 * time.Second, Delays: [4]time.Duration{432000 * time.Second, 0, 0, 0},
			DSN: "4.4.7", Status: StatusExpired, Reason: "message expired: connect to mx.slow.test[192.0.2.3]:25: Connection timed out"}.String(),
			"Q: to=<u@slow.test>, relay=none, delay=432000, delays=432000/0/0/0, dsn=4.4.7, status=expired (message expired: connect to mx.slow.test[192.0.2.3]:25: Connection timed out)"},
		{"deliverable (sendmail -bv)", DeliveryLine{QueueID: "Q", To: "u@example.com", RelayHost: "mx.example.com", RelayIP: "192.0.2.1", RelayPort: 25,
			Delay: 70 * ms, DSN: "2.1.5", Status: StatusDeliverable, Reason: "250 2.1.5 Ok"}.String(),
			"Q: to=<u@example.com>, relay=mx.example.com[192.0.2.1]:25, delay=0.07, delays=0/0/0/0, dsn=2.1.5, status=deliverable (250 2.1.5 Ok)"},
		{"undeliverable (sendmail -bv)", DeliveryLine{QueueID: "Q", To: "nobody@example.com", RelayHost: "mx.example.com", RelayIP: "192.0.2.1", RelayPort: 25,
			DSN: "5.1.1", Status: StatusUndeliverable, Reason: Said("mx.example.com", "192.0.2.1", "550 5.1.1 no such user", "RCPT TO")}.String(),
			"Q: to=<nobody@example.com>, relay=mx.example.com[192.0.2.1]:25, delay=0, delays=0/0/0/0, dsn=5.1.1, status=undeliverable (host mx.example.com[192.0.2.1] said: 550 5.1.1 no such user (in reply to RCPT TO command))"},
		{"arrival", ArrivalLine{QueueID: "Q", From: "sender@example.org", Size: 1234, NRcpt: 2}.String(),
			"Q: from=<sender@example.org>, size=1234, nrcpt=2 (queue active)"},
		{"arrival null sender", ArrivalLine{QueueID: "Q", Size: 10, NRcpt: 1}.String(),
			"Q: from=<>, size=10, nrcpt=1 (queue active)"},
		{"relay denied", RejectLine{Stage: "RCPT", ClientHost: "host.example", ClientIP: "203.0.113.5", Reply: "554 5.7.1 <x@y>: Relay access denied",
			From: "", To: "x@y", Proto: "ESMTP", Helo: "h"}.String(),
			"NOQUEUE: reject: RCPT from host.example[203.0.113.5]: 554 5.7.1 <x@y>: Relay access denied; from=<> to=<x@y> proto=ESMTP helo=<h>"},
		{"connect reject", RejectLine{Stage: "CONNECT", ClientIP: "203.0.113.5", Reply: "554 5.7.1 Service unavailable; Client host [203.0.113.5] blocked", Proto: "SMTP"}.String(),
			"NOQUEUE: reject: CONNECT from unknown[203.0.113.5]: 554 5.7.1 Service unavailable; Client host [203.0.113.5] blocked; proto=SMTP"},
		{"data reject with queue id", RejectLine{QueueID: "Q", Stage: "END-OF-MESSAGE", ClientHost: "c.test", ClientIP: "127.0.0.1",
			Reply: "550 5.7.1 message content rejected", From: "a@b.test", To: "r@x.test", Helo: "c.test"}.String(),
			"Q: reject: END-OF-MESSAGE from c.test[127.0.0.1]: 550 5.7.1 message content rejected; from=<a@b.test> to=<r@x.test> proto=ESMTP helo=<c.test>"},
	}
	for _, tc := range tests {
		if tc.got != tc.want {
			t.Errorf("%s:\n got %s\nwant %s", tc.name, tc.got, tc.want)
		}
	}
}

func fixedLog(buf *bytes.Buffer, at time.Time) *Log {
	l := New(buf)
	l.SetHost("mail")
	l.SetPID(1234)
	l.SetClock(func() time.Time { return at })
	return l
}

func TestFullLines(t *testing.T) {
	var buf bytes.Buffer
	l := fixedLog(&buf, time.Date(2026, 11, 29, 10, 18, 33, 0, time.Local))
	l.Delivery(DeliveryLine{QueueID: "Q", To: "u@x.test", RelayHost: "mx.x.test", RelayIP: "192.0.2.1", RelayPort: 25, DSN: "2.0.0", Status: StatusSent, Reason: "250 ok"})
	l.Arrival(ArrivalLine{QueueID: "Q", From: "a@b.test", Size: 5, NRcpt: 1})
	l.Reject(RejectLine{Stage: "RCPT", ClientIP: "127.0.0.2", Reply: "550 5.1.1 <r@x>: no", From: "a@b", To: "r@x", Helo: "h"})
	l.Connect("c.test", "127.0.0.1")
	l.Received("Q", "c.test", "127.0.0.1", "PLAIN", "user")
	l.Received("Q", "c.test", "127.0.0.1", "", "")
	l.MessageID("Q", "<m@b.test>")
	l.Disconnect("c.test", "127.0.0.1", "ehlo=1 mail=1 rcpt=1 data=1 quit=1 commands=5")
	l.Expired("Q", "a@b.test")
	l.Removed("Q")
	l.StatusNotification("Q", "R")
	l.Printf("pickup", "%s: uid=%d from=<%s>", "Q", 1000, "me")
	l.SetName("postfix")
	l.Delivery(DeliveryLine{Component: "local", QueueID: "Q", To: "u@localhost", RelayHost: "local", DSN: "2.0.0", Status: StatusSent, Reason: "delivered to mailbox"})
	want := `Nov 29 10:18:33 mail sluice/smtp[1234]: Q: to=<u@x.test>, relay=mx.x.test[192.0.2.1]:25, delay=0, delays=0/0/0/0, dsn=2.0.0, status=sent (250 ok)
Nov 29 10:18:33 mail sluice/qmgr[1234]: Q: from=<a@b.test>, size=5, nrcpt=1 (queue active)
Nov 29 10:18:33 mail sluice/smtpd[1234]: NOQUEUE: reject: RCPT from unknown[127.0.0.2]: 550 5.1.1 <r@x>: no; from=<a@b> to=<r@x> proto=ESMTP helo=<h>
Nov 29 10:18:33 mail sluice/smtpd[1234]: connect from c.test[127.0.0.1]
Nov 29 10:18:33 mail sluice/smtpd[1234]: Q: client=c.test[127.0.0.1], sasl_method=PLAIN, sasl_username=user
Nov 29 10:18:33 mail sluice/smtpd[1234]: Q: client=c.test[127.0.0.1]
Nov 29 10:18:33 mail sluice/cleanup[1234]: Q: message-id=<m@b.test>
Nov 29 10:18:33 mail sluice/smtpd[1234]: disconnect from c.test[127.0.0.1] ehlo=1 mail=1 rcpt=1 data=1 quit=1 commands=5
Nov 29 10:18:33 mail sluice/qmgr[1234]: Q: from=<a@b.test>, status=expired, returned to sender
Nov 29 10:18:33 mail sluice/qmgr[1234]: Q: removed
Nov 29 10:18:33 mail sluice/bounce[1234]: Q: sender delivery status notification: R
Nov 29 10:18:33 mail sluice/pickup[1234]: Q: uid=1000 from=<me>
Nov 29 10:18:33 mail postfix/local[1234]: Q: to=<u@localhost>, relay=local, delay=0, delays=0/0/0/0, dsn=2.0.0, status=sent (delivered to mailbox)
`
	if got := buf.String(); got != want {
		t.Errorf("got:\n%s\nwant:\n%s", got, want)
	}
}

func TestSingleDigitDayIsPadded(t *testing.T) {
	var buf bytes.Buffer
	fixedLog(&buf, time.Date(2026, 3, 3, 1, 2, 3, 0, time.Local)).Removed("Q")
	if got := buf.String(); got != "Mar  3 01:02:03 mail sluice/qmgr[1234]: Q: removed\n" {
		t.Errorf("got %q", got)
	}
}

// pflogsumm and fail2ban match lines with patterns like these.
func TestToolPatterns(t *testing.T) {
	var buf bytes.Buffer
	l := fixedLog(&buf, time.Date(2026, 11, 29, 10, 18, 33, 0, time.Local))
	l.SetName("postfix")
	l.Reject(RejectLine{Stage: "RCPT", ClientHost: "bad.example", ClientIP: "203.0.113.5", Reply: "554 5.7.1 <x@y.test>: Relay access denied", To: "x@y.test", Helo: "bad"})
	l.Delivery(DeliveryLine{QueueID: "4ZkQ8x1B2CzBCDFG", To: "u@x.test", RelayHost: "mx.x.test", RelayIP: "192.0.2.1", RelayPort: 25, Delay: time.Second, DSN: "2.0.0", Status: StatusSent, Reason: "250 ok"})
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	// Modelled on fail2ban's postfix filter (mode normal), <HOST> expanded.
	f2b := regexp.MustCompile(`^\w{3} [ :0-9]{11} [._[:alnum:]-]+ postfix(-\w+)?/\w+(?:/smtp[ds])?\[\d+\]: NOQUEUE: reject: RCPT from \S+\[(\S+)\]: [45]54 [45]\.7\.1 .*Relay access denied; from=<\S*> to=<\S+> proto=E?SMTP helo=<\S*>$`)
	if m := f2b.FindStringSubmatch(lines[0]); m == nil || m[2] != "203.0.113.5" {
		t.Errorf("fail2ban pattern does not match %q", lines[0])
	}
	// Modelled on pflogsumm's delivery pattern.
	pfl := regexp.MustCompile(`^\w{3} [ :0-9]{11} \S+ postfix/smtp\[\d+\]: [0-9A-Za-z]+: to=<([^>]*)>, (?:orig_to=<[^>]*>, )?relay=([^,]+), (?:conn_use=[^,]+, )?delay=([^,]+), (?:delays=[^,]+, )?(?:dsn=[^,]+, )?status=(\S+)`)
	if m := pfl.FindStringSubmatch(lines[1]); m == nil || m[1] != "u@x.test" || m[2] != "mx.x.test[192.0.2.1]:25" || m[3] != "1" || m[4] != "sent" {
		t.Errorf("pflogsumm pattern: %q on %q", m, lines[1])
	}
}

func TestNoLineInjection(t *testing.T) {
	var buf bytes.Buffer
	l := fixedLog(&buf, time.Date(2026, 11, 29, 10, 18, 33, 0, time.Local))
	l.Reject(RejectLine{Stage: "RCPT", ClientIP: "127.0.0.1", Reply: "550 no", To: "x@y\nNov 29 10:18:33 mail sluice/smtp[1]: FAKE: status=sent", Helo: "h\r\x00\xff"})
	got := buf.String()
	if strings.Count(got, "\n") != 1 {
		t.Fatalf("injected a line: %q", got)
	}
	if !strings.Contains(got, "to=<x@y?Nov 29") || !strings.Contains(got, "helo=<h???>") {
		t.Errorf("got %q", got)
	}
}

func TestFileReopenAndClose(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "sluice.log")
	l, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	l.Removed("A")
	if err := os.Rename(path, path+".1"); err != nil {
		t.Fatal(err)
	}
	l.Removed("B") // still the old file until Reopen
	if err := l.Reopen(); err != nil {
		t.Fatal(err)
	}
	l.Removed("C")
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	old, _ := os.ReadFile(path + ".1")
	cur, _ := os.ReadFile(path)
	if !strings.Contains(string(old), "A: removed") || !strings.Contains(string(old), "B: removed") || strings.Count(string(cur), "\n") != 1 || !strings.Contains(string(cur), "C: removed") {
		t.Errorf("old %q, new %q", old, cur)
	}
	if err := l.Err(); err != nil {
		t.Errorf("Err before a failed write: %v", err)
	}
	l.Removed("D")
	if err := l.Err(); err == nil {
		t.Error("write after Close not reported")
	}
	if err := l.Err(); err != nil {
		t.Error("Err not cleared")
	}
	st, _ := os.Stat(path)
	if st.Mode().Perm()&0o007 != 0 {
		t.Errorf("log mode %v is world-accessible", st.Mode().Perm())
	}
	if _, err := Open(filepath.Join(dir, "missing", "x.log")); err == nil {
		t.Error("opened a log in a missing directory")
	}
}

func TestStderr(t *testing.T) {
	for _, p := range []string{"", "-"} {
		l, err := Open(p)
		if err != nil || l.f != nil || l.w != os.Stderr {
			t.Errorf("Open(%q) = %+v, %v", p, l, err)
		}
		if err := l.Reopen(); err != nil {
			t.Errorf("Reopen on stderr: %v", err)
		}
	}
}

func TestConcurrentLinesStayWhole(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sluice.log")
	l, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	const workers, each = 8, 300
	var wg sync.WaitGroup
	for g := 0; g < workers; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			for i := 0; i < each; i++ {
				l.Delivery(DeliveryLine{QueueID: fmt.Sprintf("G%dI%d", g, i), To: strings.Repeat("x", 200) + "@x.test", DSN: "2.0.0", Status: StatusSent, Reason: "ok"})
				if i == each/2 && g == 0 {
					l.Reopen()
				}
			}
		}(g)
	}
	wg.Wait()
	l.Close()
	data, _ := os.ReadFile(path)
	lines := strings.Split(strings.TrimSuffix(string(data), "\n"), "\n")
	if len(lines) != workers*each {
		t.Fatalf("%d lines, want %d", len(lines), workers*each)
	}
	shape := regexp.MustCompile(`^\w{3} [ 0-9]\d \d\d:\d\d:\d\d \S+ sluice/smtp\[\d+\]: G\d+I\d+: to=<x+@x\.test>, relay=none, delay=0, delays=0/0/0/0, dsn=2\.0\.0, status=sent \(ok\)$`)
	for _, line := range lines {
		if !shape.MatchString(line) {
			t.Fatalf("torn line %q", line)
		}
	}
}

func FuzzDeliveryLineIsOneLine(f *testing.F) {
	for _, s := range []string{"u@x", "a\nb", "\r\n.\r\n", "\xff\xfe", "ü@exämple"} {
		f.Add(s, s, int64(1500))
	}
	f.Fuzz(func(t *testing.T, to, reason string, ms int64) {
		var buf bytes.Buffer
		l := fixedLog(&buf, time.Unix(0, 0))
		l.Delivery(DeliveryLine{QueueID: "Q", To: to, Reason: reason, Delay: time.Duration(ms) * time.Millisecond, Status: StatusDeferred, DSN: "4.0.0"})
		out := buf.String()
		if strings.Count(out, "\n") != 1 || !strings.HasSuffix(out, "\n") {
			t.Fatalf("not one line: %q", out)
		}
		for _, r := range strings.TrimSuffix(out, "\n") {
			if r < 0x20 || r == 0x7f || r == '\uFFFD' {
				t.Fatalf("unprintable %q in %q", r, out)
			}
		}
	})
}

func FuzzFormatDelay(f *testing.F) {
	for _, n := range []int64{0, 4999999, 5000000, 999999999, 9960000000, 1 << 50} {
		f.Add(n)
	}
	digits := regexp.MustCompile(`^(\d+|[1-9]\.[1-9]|0\.[1-9]|0\.\d[1-9])$`)
	f.Fuzz(func(t *testing.T, n int64) {
		s := FormatDelay(time.Duration(n))
		if !digits.MatchString(s) {
			t.Fatalf("FormatDelay(%d) = %q", n, s)
		}
	})
}
