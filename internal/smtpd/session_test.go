package smtpd

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/sluicemta/sluice/internal/qid"
)

func TestDeliverOne(t *testing.T) {
	ev := &eventLog{}
	q := newRecQueue()
	_, addrs := startServer(t, baseSettings(ev), q)
	c := dial(t, addrs["127.0.0.1:0"])
	c.expect("", "220 mx.test ESMTP")
	ehlo := c.expect("EHLO client.test", "250-")
	for _, capa := range []string{"PIPELINING", "8BITMIME", "SMTPUTF8", "SIZE 10240000", "ENHANCEDSTATUSCODES", "DSN", "CHUNKING"} {
		if !strings.Contains(ehlo, capa) {
			t.Errorf("EHLO lacks %s:\n%s", capa, ehlo)
		}
	}
	if strings.Contains(ehlo, "STARTTLS") {
		t.Errorf("STARTTLS offered without a certificate")
	}
	c.expect("MAIL FROM:<a@b.test> RET=HDRS ENVID=x+2By BODY=8BITMIME", "250 ")
	c.expect("RCPT TO:<u@local.test> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;u+40local.test", "250 ")
	c.expect("DATA", "354 ")
	r := c.cmd("Subject: hi\r\n\r\nbody\r\n..dot\r\n.")
	m := regexp.MustCompile(`^250 2\.0\.0 Ok: queued as (\S+)$`).FindStringSubmatch(r)
	if m == nil {
		t.Fatalf("DATA: %q", r)
	}
	c.expect("QUIT", "221 ")

	msgs := q.all()
	if len(msgs) != 1 {
		t.Fatalf("%d messages queued", len(msgs))
	}
	env, content := msgs[0].env, string(msgs[0].content)
	if env.ID != m[1] || qid.Check(env.ID) != nil {
		t.Errorf("ID %q, reply said %q", env.ID, m[1])
	}
	want := Envelope{From: "a@b.test", Ret: "HDRS", EnvID: "x+y", Body: "8BITMIME", Helo: "client.test", Proto: "ESMTP",
		ClientName: "unknown", Source: "127.0.0.1:0"}
	if env.From != want.From || env.Ret != want.Ret || env.EnvID != want.EnvID || env.Body != want.Body ||
		env.Helo != want.Helo || env.Proto != want.Proto || env.ClientName != want.ClientName || env.Source != want.Source {
		t.Errorf("envelope %+v", env)
	}
	if env.ClientIP != netip.MustParseAddr("127.0.0.1") || env.TLS != nil {
		t.Errorf("client %v tls %v", env.ClientIP, env.TLS)
	}
	if len(env.Rcpts) != 1 || env.Rcpts[0] != (Rcpt{Addr: "u@local.test", ORCPT: "RFC822;u@local.test", Notify: NotifySuccess | NotifyFailure}) {
		t.Errorf("rcpts %+v", env.Rcpts)
	}
	recv := regexp.MustCompile(`^Received: from client\.test \(unknown \[127\.0\.0\.1\]\)\r\n` +
		`\tby mx\.test \(sluice\) with ESMTP id ` + env.ID + `\r\n` +
		`\tfor <u@local\.test>; \w{3}, \d{1,2} \w{3} \d{4} \d\d:\d\d:\d\d [+-]\d{4} \(\w+\)\r\n`)
	loc := recv.FindStringIndex(content)
	if loc == nil || loc[0] != 0 {
		t.Fatalf("no Received header in Postfix's shape:\n%s", content)
	}
	if rest := content[loc[1]:]; rest != "Subject: hi\r\n\r\nbody\r\n.dot\r\n" {
		t.Errorf("content after Received: %q", rest)
	}
	if !ev.find(EvQueued, "") || !ev.find(EvConnect, "") {
		t.Errorf("missing connect/queued events")
	}
}

func TestHeaderFixes(t *testing.T) {
	tests := []struct {
		name           string
		msg            string
		addID, addDate bool
		wantID, wantDt bool // header present after
		wantTail       string
	}{
		{"both added", "Subject: x\r\n\r\nbody\r\n", true, true, true, true, "\r\nbody\r\n"},
		{"kept", "Message-Id: <a@b>\r\nDATE: Mon, 1 Jan 2024 00:00:00 +0000\r\n\r\nb\r\n", true, true, true, true, "\r\nb\r\n"},
		{"not wanted", "Subject: x\r\n\r\nb\r\n", false, false, false, false, "\r\nb\r\n"},
		{"no body", "Subject: x\r\n", true, true, true, true, ""},
		{"no separator", "Subject: x\r\nnot a header\r\n", true, false, true, false, "not a header\r\n"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := baseSettings(&eventLog{})
			s.PolicyFor = func(netip.Addr, string) Policy {
				return Policy{AddReceived: false, AddMessageID: tc.addID, AddDate: tc.addDate}
			}
			q := newRecQueue()
			_, addrs := startServer(t, s, q)
			c := dial(t, addrs["127.0.0.1:0"])
			c.expect("", "220")
			c.expect("HELO c", "250")
			c.expect("MAIL FROM:<>", "250")
			c.expect("RCPT TO:<u@local.test>", "250")
			c.expect("DATA", "354")
			c.expect(tc.msg+".", "250")
			got := string(q.all()[0].content)
			if strings.HasPrefix(got, "Received:") {
				t.Errorf("Received added against policy")
			}
			h := scanHeader([]byte(got))
			if h.messageID != tc.wantID || h.date != tc.wantDt {
				t.Errorf("message-id %v date %v in\n%s", h.messageID, h.date, got)
			}
			if !strings.HasSuffix(got, tc.wantTail) || bareNewline([]byte(got)) >= 0 {
				t.Errorf("content %q", got)
			}
			if tc.addID && !strings.Contains(tc.msg, "Message-Id") && !regexp.MustCompile(`Message-ID: <\d{14}\.\w+@mx\.test>\r\n`).MatchString(got) {
				t.Errorf("Message-ID shape: %q", got)
			}
		})
	}
}

func TestClientName(t *testing.T) {
	s := baseSettings(&eventLog{})
	s.ClientName = func(_ context.Context, ip netip.Addr) string {
		if ip == netip.MustParseAddr("192.0.2.9") {
			return "client.example"
		}
		return ""
	}
	q := newRecQueue()
	srv, err := New(s, q)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	for _, tc := range []struct{ ip, want string }{
		{"192.0.2.9", "Received: from h.test (client.example [192.0.2.9])"},
		{"2001:db8::9", "Received: from h.test (unknown [IPv6:2001:db8::9])"},
	} {
		c := wrapClient(t, pipeDial(t, srv, tc.ip, Plain))
		c.expect("", "220")
		c.expect("HELO h.test", "250")
		c.expect("MAIL FROM:<a@b.test>", "250")
		c.expect("RCPT TO:<u@local.test>", "250")
		c.expect("RCPT TO:<v@local.test>", "250")
		c.expect("DATA", "354")
		c.expect("x\r\n.", "250")
		m := q.all()[len(q.all())-1]
		if got := string(m.content); !strings.HasPrefix(got, tc.want+"\r\n\tby mx.test (sluice) with SMTP id "+m.env.ID+";\r\n\t") {
			t.Errorf("Received: %q", got)
		}
	}
}

func TestTooManyHops(t *testing.T) {
	s := baseSettings(&eventLog{})
	s.MaxReceived = 3
	q := newRecQueue()
	_, addrs := startServer(t, s, q)
	c := dial(t, addrs["127.0.0.1:0"])
	c.expect("", "220")
	c.expect("EHLO c", "250")
	for n, want := range map[int]string{3: "250 ", 4: "554 5.4.6 Too many hops"} {
		c.expect("MAIL FROM:<a@b.test>", "250")
		c.expect("RCPT TO:<u@local.test>", "250")
		c.expect("DATA", "354")
		c.expect(strings.Repeat("Received: from x by y; date\r\n", n)+"\r\nb\r\n.", want)
	}
}

func TestQueueErrors(t *testing.T) {
	q := newRecQueue()
	_, addrs := startServer(t, baseSettings(&eventLog{}), q)
	for _, tc := range []struct {
		err  error
		want string
	}{
		{fmt.Errorf("spool: append: %w", ErrQueueFull), "452 4.3.1 Insufficient system storage"},
		{errors.New("spool: fsync: EIO"), "451 4.3.0 "},
	} {
		q.setErr(tc.err)
		c := dial(t, addrs["127.0.0.1:0"])
		c.expect("", "220")
		c.expect("EHLO c", "250")
		c.expect("MAIL FROM:<a@b.test>", "250")
		c.expect("RCPT TO:<u@local.test>", "250")
		c.expect("DATA", "354")
		c.expect("x\r\n.", tc.want)
		// BDAT takes the same path.
		c.expect("MAIL FROM:<a@b.test>", "250")
		c.expect("RCPT TO:<u@local.test>", "250")
		c.send("BDAT 3 LAST\r\nx\r\n")
		c.expect("", tc.want)
	}
}

func TestBDAT(t *testing.T) {
	q := newRecQueue()
	_, addrs := startServer(t, baseSettings(&eventLog{}), q)
	c := dial(t, addrs["127.0.0.1:0"])
	c.expect("", "220")
	c.expect("EHLO c", "250")
	c.expect("MAIL FROM:<a@b.test>", "250")
	c.expect("RCPT TO:<u@local.test>", "250")
	c.send("BDAT 10\r\nSubject: x")
	c.expect("", "250")
	c.send("BDAT 8 LAST\r\n\r\n\r\n.\r\nb")
	c.expect("", "250 2.0.0 Ok: queued as")
	got := string(q.all()[0].content)
	if !strings.HasSuffix(got, "Subject: x\r\n\r\n.\r\nb\r\n") {
		t.Errorf("content %q", got)
	}
}

func TestUTF8(t *testing.T) {
	q := newRecQueue()
	s := baseSettings(&eventLog{})
	s.LocalDomain = func(d string) bool { return d == "bücher.test" }
	_, addrs := startServer(t, s, q)
	c := dial(t, addrs["127.0.0.1:0"])
	c.expect("", "220")
	c.expect("EHLO c", "250")
	c.expect("MAIL FROM:<jörg@b.test>", "553 5.6.7")
	c.expect("MAIL FROM:<jörg@b.test> SMTPUTF8", "250")
	c.expect("RCPT TO:<ü@BÜCHER.test>", "250")
	c.expect("DATA", "354")
	c.expect("Subject: ü\r\n\r\nü\r\n.", "250")
	if env := q.all()[0].env; !env.SMTPUTF8 || env.From != "jörg@b.test" {
		t.Errorf("env %+v", env)
	}
}

// TestBDATReset abandons a chunked message half way: nothing is queued,
// RSET is answered and the connection ends (see session.Reset for why).
func TestBDATReset(t *testing.T) {
	q := newRecQueue()
	_, addrs := startServer(t, baseSettings(&eventLog{}), q)
	c := dial(t, addrs["127.0.0.1:0"])
	c.expect("", "220")
	c.expect("EHLO c", "250")
	c.expect("MAIL FROM:<a@b.test>", "250")
	c.expect("RCPT TO:<u@local.test>", "250")
	c.send("BDAT 5\r\nhello")
	c.expect("", "250")
	// Pipelined, so go-smtp would reach the next BDAT at once.
	c.send("RSET\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<v@local.test>\r\nBDAT 5 LAST\r\nbye\r\n")
	c.expect("", "250 2.0.0 Session reset")
	if r := c.reply(); r != "" {
		t.Errorf("after RSET mid-BDAT: %q", r)
	}
	time.Sleep(50 * time.Millisecond)
	if msgs := q.all(); len(msgs) != 0 {
		t.Fatalf("queued %+v", msgs)
	}

	// A bare LF in a chunk is refused like in DATA; the session goes on.
	c = dial(t, addrs["127.0.0.1:0"])
	c.expect("", "220")
	c.expect("EHLO c", "250")
	c.expect("MAIL FROM:<a@b.test>", "250")
	c.expect("RCPT TO:<v@local.test>", "250")
	c.send("BDAT 4 LAST\r\nbye\n")
	c.expect("", "550 5.5.2")
	c.expect("MAIL FROM:<a@b.test>", "250")
	c.expect("RCPT TO:<w@local.test>", "250")
	c.send("BDAT 5 LAST\r\nbye\r\n")
	c.expect("", "250")
	msgs := q.all()
	if len(msgs) != 1 || msgs[0].env.Rcpts[0].Addr != "w@local.test" || !strings.HasSuffix(string(msgs[0].content), "\r\nbye\r\n") {
		t.Fatalf("queued %+v", msgs)
	}
}
