package smtpsink

import (
	"bufio"
	"crypto/tls"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"net/textproto"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sluicemta/sluice/internal/testutil"
)

// client is a bare SMTP client on net/textproto, so the tests see the wire.
type client struct {
	t    *testing.T
	conn net.Conn
	r    *textproto.Reader
}

func dial(t *testing.T, addr string, greet int) *client {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	t.Cleanup(func() { conn.Close() })
	conn.SetDeadline(time.Now().Add(20 * time.Second))
	c := &client{t: t, conn: conn, r: textproto.NewReader(bufio.NewReader(conn))}
	if greet != 0 {
		c.expect(greet)
	}
	return c
}

func (c *client) send(raw string) {
	c.t.Helper()
	if _, err := io.WriteString(c.conn, raw); err != nil {
		c.t.Fatalf("write %q: %v", raw, err)
	}
}

func (c *client) expect(code int) string {
	c.t.Helper()
	got, msg, err := c.r.ReadResponse(0)
	if err != nil && !errors.As(err, new(*textproto.Error)) {
		c.t.Fatalf("read reply (want %d): %v", code, err)
	}
	if got != code {
		c.t.Fatalf("reply %d %q, want %d", got, msg, code)
	}
	return msg
}

func (c *client) cmd(code int, line string) string {
	c.t.Helper()
	c.send(line + "\r\n")
	return c.expect(code)
}

// closed asserts that the server dropped the connection.
func (c *client) closed() {
	c.t.Helper()
	line, err := c.r.ReadLine()
	if err == nil {
		c.t.Fatalf("connection still open, read %q", line)
	}
}

func TestTransactionRecorded(t *testing.T) {
	s := Start(t, Options{RcptReplies: map[string]string{"Bad@X.test": "550 5.1.1 no such user"}})
	c := dial(t, s.Addr(), 220)
	ehlo := c.cmd(250, "EHLO client.test")
	for _, kw := range []string{"PIPELINING", "8BITMIME", "SMTPUTF8", "DSN", "SIZE", "CHUNKING", "ENHANCEDSTATUSCODES"} {
		if !strings.Contains(ehlo, kw) {
			t.Errorf("EHLO reply lacks %s: %q", kw, ehlo)
		}
	}
	if strings.Contains(ehlo, "STARTTLS") || strings.Contains(ehlo, "AUTH") {
		t.Errorf("EHLO advertises what is off: %q", ehlo)
	}
	c.cmd(250, "MAIL FROM:<a@b.test> BODY=8BITMIME SIZE=100")
	c.cmd(250, "RCPT TO:<ok@x.test> NOTIFY=FAILURE ORCPT=rfc822;ok@x.test")
	c.cmd(550, "RCPT TO:<bad@x.test>")
	c.cmd(354, "DATA")
	c.send("Message-ID: <m1@b.test>\r\nSubject: hi\r\n\r\n..leading dot\r\nbody\r\n.\r\n")
	msg := c.cmd(250, "NOOP") // NOOP's reply follows the data reply
	_ = msg
	ms, err := s.WaitMessages(1, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	m := ms[0]
	want := "Message-ID: <m1@b.test>\r\nSubject: hi\r\n\r\n.leading dot\r\nbody\r\n"
	if string(m.Data) != want {
		t.Errorf("Data = %q, want %q", m.Data, want)
	}
	if !strings.Contains(string(m.Raw), "\r\n..leading dot\r\n") {
		t.Errorf("Raw = %q, want the stuffed dot kept", m.Raw)
	}
	if m.MessageID != "<m1@b.test>" || m.From != "a@b.test" || m.Helo != "client.test" || !m.ESMTP {
		t.Errorf("message = %+v", m)
	}
	if got := strings.Join(m.FromParams, " "); got != "BODY=8BITMIME SIZE=100" {
		t.Errorf("FromParams = %q", got)
	}
	if len(m.Rcpts) != 2 || m.Rcpts[0].Params[0] != "NOTIFY=FAILURE" || m.Rcpts[1].Reply != "550 5.1.1 no such user" {
		t.Errorf("Rcpts = %+v", m.Rcpts)
	}
	if got := m.Recipients(); len(got) != 1 || got[0] != "ok@x.test" {
		t.Errorf("Recipients = %v", got)
	}
	if m.PeerIP != "127.0.0.1" || m.LocalAddr != s.Addr() || m.Reply != "250 2.0.0 Ok: queued as "+m.ID || m.BareLF || m.Bdat {
		t.Errorf("message = %+v", m)
	}
	if m.Arrived.IsZero() || time.Since(m.Arrived) > time.Minute {
		t.Errorf("Arrived = %v", m.Arrived)
	}
}

// The data reply and the NOOP reply above were read in order; this checks
// the reply to DATA's end separately and the QUIT path.
func TestQuitAndDataReply(t *testing.T) {
	s := Start(t, Options{})
	c := dial(t, s.Addr(), 220)
	c.cmd(250, "HELO old.test")
	c.cmd(250, "MAIL FROM:<>")
	c.cmd(250, "RCPT TO:<r@x.test>")
	c.cmd(354, "DATA")
	got := c.cmd(250, "x\r\n.")
	if !strings.HasPrefix(got, "2.0.0 Ok: queued as S") {
		t.Errorf("data reply %q", got)
	}
	c.cmd(221, "QUIT")
	c.closed()
	m := s.Messages()[0]
	if m.From != "" || m.ESMTP || string(m.Data) != "x\r\n" {
		t.Errorf("message = %+v", m)
	}
}

func TestRoundTripsWithPipelining(t *testing.T) {
	s := Start(t, Options{})
	c := dial(t, s.Addr(), 220)
	c.cmd(250, "EHLO c.test")
	// One write: the sink must answer all four with one flush.
	c.send("MAIL FROM:<a@b.test>\r\nRCPT TO:<x@y.test>\r\nRCPT TO:<z@y.test>\r\nDATA\r\n")
	for _, code := range []int{250, 250, 250, 354} {
		c.expect(code)
	}
	c.send("hello\r\n.\r\nQUIT\r\n")
	c.expect(250)
	c.expect(221)
	c.closed()
	time.Sleep(50 * time.Millisecond)
	conns := s.Connections()
	if len(conns) != 1 {
		t.Fatalf("%d connections", len(conns))
	}
	// EHLO, the pipelined group, data end + QUIT together.
	if conns[0].RoundTrips != 3 {
		t.Errorf("RoundTrips = %d, want 3; log:\n%s", conns[0].RoundTrips, strings.Join(conns[0].Log, "\n"))
	}
	if conns[0].End.IsZero() || conns[0].Messages != 1 || conns[0].Helo != "c.test" {
		t.Errorf("conn = %+v", conns[0])
	}
}

func TestScriptedStages(t *testing.T) {
	tests := []struct {
		name    string
		opts    Options
		convo   func(c *client)
		accepts int
		txns    int
	}{
		{"greeting 554 then only QUIT", Options{Replies: map[Stage]string{StageGreeting: "554 5.3.2 not now"}},
			func(c *client) {
				c.expect(554)
				c.cmd(503, "EHLO c.test")
				c.cmd(503, "MAIL FROM:<a@b>")
				c.cmd(221, "QUIT")
			}, 0, 0},
		{"greeting 421 closes", Options{Replies: map[Stage]string{StageGreeting: "421 4.3.2 busy"}},
			func(c *client) { c.expect(421); c.closed() }, 0, 0},
		{"close at greeting", Options{CloseAt: StageGreeting},
			func(c *client) { c.closed() }, 0, 0},
		{"MAIL 451", Options{Replies: map[Stage]string{StageMail: "451 4.3.0 try later"}},
			func(c *client) {
				c.expect(220)
				c.cmd(250, "EHLO c")
				c.cmd(451, "MAIL FROM:<a@b>")
				c.cmd(503, "RCPT TO:<x@y>")
			}, 0, 0},
		{"DATA 554", Options{Replies: map[Stage]string{StageData: "554 5.7.1 no"}},
			func(c *client) {
				c.expect(220)
				c.cmd(250, "EHLO c")
				c.cmd(250, "MAIL FROM:<a@b>")
				c.cmd(250, "RCPT TO:<x@y>")
				c.cmd(554, "DATA")
				c.cmd(250, "MAIL FROM:<a@b>") // transaction was reset
			}, 0, 0},
		{"after-data multi-line 452", Options{Replies: map[Stage]string{StageAfterData: "452-4.3.1 full\n4.3.1 try later"}},
			func(c *client) {
				c.expect(220)
				c.cmd(250, "EHLO c")
				c.cmd(250, "MAIL FROM:<a@b>")
				c.cmd(250, "RCPT TO:<x@y>")
				c.cmd(354, "DATA")
				if got := c.cmd(452, "x\r\n."); got != "4.3.1 full\n4.3.1 try later" {
					c.t.Errorf("multi-line reply %q", got)
				}
			}, 0, 1},
		{"close after data", Options{CloseAt: StageAfterData},
			func(c *client) {
				c.expect(220)
				c.cmd(250, "EHLO c")
				c.cmd(250, "MAIL FROM:<a@b>")
				c.cmd(250, "RCPT TO:<x@y>")
				c.cmd(354, "DATA")
				c.send("x\r\n.\r\n")
				c.closed()
			}, 0, 1},
		{"no valid recipients", Options{Replies: map[Stage]string{StageRcpt: "550 5.1.1 nobody"}},
			func(c *client) {
				c.expect(220)
				c.cmd(250, "EHLO c")
				c.cmd(250, "MAIL FROM:<a@b>")
				c.cmd(550, "RCPT TO:<x@y>")
				c.cmd(554, "DATA")
			}, 0, 0},
		{"func overrides and counts", Options{Func: func(call Call) string {
			if call.Stage == StageRcpt && strings.HasPrefix(call.Arg, "temp") {
				return "450 4.2.0 greylisted " + call.Msg.From
			}
			return ""
		}},
			func(c *client) {
				c.expect(220)
				c.cmd(250, "EHLO c")
				c.cmd(250, "MAIL FROM:<a@b>")
				if got := c.cmd(450, "RCPT TO:<temp@y>"); got != "4.2.0 greylisted a@b" {
					c.t.Errorf("func reply %q", got)
				}
				c.cmd(250, "RCPT TO:<ok@y>")
				c.cmd(354, "DATA")
				c.cmd(250, "x\r\n.")
			}, 1, 1},
		{"protocol errors", Options{},
			func(c *client) {
				c.expect(220)
				c.cmd(503, "MAIL FROM:<a@b>")
				c.cmd(501, "EHLO")
				c.cmd(250, "EHLO c")
				c.cmd(501, "MAIL TO:<a@b>")
				c.cmd(501, "MAIL FROM:a@b")
				c.cmd(503, "RCPT TO:<x@y>")
				c.cmd(503, "DATA")
				c.cmd(500, "WHAT")
				c.cmd(555, "MAIL FROM:<a@b> FOO=1")
				c.cmd(553, "MAIL FROM:<é@b>")
				c.cmd(250, "MAIL FROM:<é@b> SMTPUTF8")
				c.cmd(503, "MAIL FROM:<a@b>")
				c.cmd(250, "RSET")
				c.cmd(500, strings.Repeat("x", 5000))
				c.cmd(250, "NOOP")
			}, 0, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := Start(t, tc.opts)
			tc.convo(dial(t, s.Addr(), 0))
			time.Sleep(20 * time.Millisecond) // the after-data record follows the reply
			if got := len(s.Messages()); got != tc.accepts {
				t.Errorf("Messages = %d, want %d", got, tc.accepts)
			}
			if got := len(s.Transactions()); got != tc.txns {
				t.Errorf("Transactions = %d, want %d", got, tc.txns)
			}
		})
	}
}

func TestExtensionsOff(t *testing.T) {
	s := Start(t, Options{Ext: NoExt, Hostname: "mx.test"})
	c := dial(t, s.Addr(), 220)
	if got := c.cmd(250, "EHLO c"); got != "mx.test" {
		t.Errorf("EHLO reply %q", got)
	}
	c.cmd(555, "MAIL FROM:<a@b> BODY=8BITMIME")
	c.cmd(555, "MAIL FROM:<a@b> SIZE=10")
	c.cmd(250, "MAIL FROM:<a@b>")
	c.cmd(555, "RCPT TO:<x@y> NOTIFY=NEVER")
	c.cmd(250, "RCPT TO:<x@y>")
	c.send("BDAT 3 LAST\r\nabc")
	c.expect(502)
}

func TestSizeLimit(t *testing.T) {
	s := Start(t, Options{MaxSize: 10})
	c := dial(t, s.Addr(), 220)
	if got := c.cmd(250, "EHLO c"); !strings.Contains(got, "SIZE 10") {
		t.Errorf("EHLO reply %q", got)
	}
	c.cmd(552, "MAIL FROM:<a@b> SIZE=11")
	c.cmd(250, "MAIL FROM:<a@b>")
	c.cmd(250, "RCPT TO:<x@y>")
	c.cmd(354, "DATA")
	c.cmd(552, "0123456789abc\r\n.")
}

func TestBdat(t *testing.T) {
	s := Start(t, Options{})
	c := dial(t, s.Addr(), 220)
	c.cmd(250, "EHLO c")
	c.send("BDAT 2\r\nab")
	c.expect(503)
	c.send("MAIL FROM:<a@b>\r\nRCPT TO:<x@y>\r\nBDAT 5\r\nHello")
	c.expect(250)
	c.expect(250)
	if got := c.expect(250); got != "2.0.0 5 octets received" {
		t.Errorf("chunk reply %q", got)
	}
	c.send("BDAT 10 LAST\r\n\r\n.\r\nbare\n")
	c.expect(250)
	m := s.Messages()[0]
	if string(m.Data) != "Hello\r\n.\r\nbare\n" || !m.Bdat || m.Chunks != 2 || m.Raw != nil {
		t.Errorf("message = %+v data %q", m, m.Data)
	}
}

func TestSmugglingShapeIsContent(t *testing.T) {
	s := Start(t, Options{})
	c := dial(t, s.Addr(), 220)
	c.cmd(250, "EHLO c")
	c.cmd(250, "MAIL FROM:<a@b>")
	c.cmd(250, "RCPT TO:<x@y>")
	c.cmd(354, "DATA")
	c.send("one\n.\r\nMAIL FROM:<evil@b>\r\n.\r\n")
	c.expect(250)
	ms := s.Messages()
	if len(ms) != 1 || string(ms[0].Data) != "one\n.\r\nMAIL FROM:<evil@b>\r\n" || !ms[0].BareLF {
		t.Fatalf("messages = %+v", ms)
	}
}

func TestStartTLS(t *testing.T) {
	s := Start(t, Options{Ext: DefaultExt | StartTLS, RequireTLS: true})
	c := dial(t, s.Addr(), 220)
	if got := c.cmd(250, "EHLO c"); !strings.Contains(got, "STARTTLS") {
		t.Fatalf("EHLO reply %q", got)
	}
	c.cmd(530, "MAIL FROM:<a@b>")
	c.cmd(220, "STARTTLS")
	tc := tls.Client(c.conn, &tls.Config{RootCAs: s.CertPool(), ServerName: "localhost"})
	if err := tc.Handshake(); err != nil {
		t.Fatalf("handshake: %v", err)
	}
	c.conn = tc
	c.r = textproto.NewReader(bufio.NewReader(tc))
	c.cmd(503, "MAIL FROM:<a@b>") // EHLO is forgotten after TLS
	if got := c.cmd(250, "EHLO c"); strings.Contains(got, "STARTTLS") {
		t.Errorf("STARTTLS offered twice: %q", got)
	}
	c.cmd(250, "MAIL FROM:<a@b>")
	c.cmd(250, "RCPT TO:<x@y>")
	c.cmd(354, "DATA")
	c.cmd(250, "x\r\n.")
	m := s.Messages()[0]
	if m.TLS == nil || m.TLS.Version != tls.VersionTLS13 || m.TLS.ServerName != "localhost" || m.TLS.VersionName() != "TLS 1.3" {
		t.Errorf("TLS = %+v", m.TLS)
	}
	if s.Connections()[0].TLS == nil {
		t.Error("connection has no TLS state")
	}
}

func TestStartTLSDiscardsPipelinedCommands(t *testing.T) {
	s := Start(t, Options{Ext: StartTLS})
	c := dial(t, s.Addr(), 220)
	c.cmd(250, "EHLO c")
	c.send("STARTTLS\r\nMAIL FROM:<injected@b>\r\n")
	c.expect(220)
	tc := tls.Client(c.conn, &tls.Config{RootCAs: s.CertPool(), ServerName: "localhost"})
	if err := tc.Handshake(); err != nil {
		t.Fatalf("handshake after injection: %v", err)
	}
	c.conn = tc
	c.r = textproto.NewReader(bufio.NewReader(tc))
	c.cmd(250, "EHLO c")
	c.cmd(250, "MAIL FROM:<a@b>") // no "nested MAIL": the injected one was dropped
	if log := strings.Join(s.Connections()[0].Log, "\n"); !strings.Contains(log, "discarded") {
		t.Errorf("log does not note the discard:\n%s", log)
	}
}

func TestAuth(t *testing.T) {
	b64 := func(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }
	s := Start(t, Options{Ext: DefaultExt | Auth, AuthUser: "u", AuthPass: "p", RequireAuth: true})
	t.Run("plain initial response", func(t *testing.T) {
		c := dial(t, s.Addr(), 220)
		if got := c.cmd(250, "EHLO c"); !strings.Contains(got, "AUTH PLAIN LOGIN") {
			t.Fatalf("EHLO %q", got)
		}
		c.cmd(530, "MAIL FROM:<a@b>")
		c.cmd(535, "AUTH PLAIN "+b64("\x00u\x00wrong"))
		c.cmd(235, "AUTH PLAIN "+b64("\x00u\x00p"))
		c.cmd(503, "AUTH PLAIN "+b64("\x00u\x00p"))
		c.cmd(250, "MAIL FROM:<a@b> AUTH=<>")
		c.cmd(250, "RCPT TO:<x@y>")
		c.cmd(354, "DATA")
		c.cmd(250, "x\r\n.")
	})
	t.Run("login", func(t *testing.T) {
		c := dial(t, s.Addr(), 220)
		c.cmd(250, "EHLO c")
		if got := c.cmd(334, "AUTH LOGIN"); got != "VXNlcm5hbWU6" {
			t.Errorf("challenge %q", got)
		}
		c.cmd(334, b64("u"))
		c.cmd(235, b64("p"))
	})
	t.Run("plain challenge and cancel", func(t *testing.T) {
		c := dial(t, s.Addr(), 220)
		c.cmd(250, "EHLO c")
		c.cmd(334, "AUTH PLAIN")
		c.cmd(501, "*")
		c.cmd(504, "AUTH CRAM-MD5")
		c.cmd(334, "AUTH PLAIN")
		c.cmd(235, b64("\x00u\x00p"))
	})
	ms := s.Messages()
	if len(ms) != 1 || ms[0].AuthUser != "u" {
		t.Fatalf("messages = %+v", ms)
	}
	for _, c := range s.Connections() {
		for _, l := range c.Log {
			if strings.Contains(l, b64("\x00u\x00p")) {
				t.Errorf("credentials logged: %q", l)
			}
		}
	}
}

func TestConcurrencyPeakAndReset(t *testing.T) {
	s := Start(t, Options{})
	var cs []*client
	for i := 0; i < 3; i++ {
		cs = append(cs, dial(t, s.Addr(), 220))
	}
	for _, c := range cs {
		c.cmd(250, "NOOP") // each connection is served, so all are counted
	}
	if got := s.MaxConcurrent(); got != 3 {
		t.Errorf("MaxConcurrent = %d, want 3", got)
	}
	for _, c := range cs[1:] {
		c.cmd(221, "QUIT")
		c.closed()
	}
	time.Sleep(50 * time.Millisecond)
	s.Reset()
	if got := s.MaxConcurrent(); got != 1 {
		t.Errorf("after Reset MaxConcurrent = %d, want 1 (one still open)", got)
	}
	if len(s.Connections()) != 0 || len(s.Messages()) != 0 {
		t.Error("Reset kept records")
	}
}

func TestWaitMessages(t *testing.T) {
	s := Start(t, Options{})
	if _, err := s.WaitMessages(1, 50*time.Millisecond); err == nil || !strings.Contains(err.Error(), "0 of 1") {
		t.Fatalf("WaitMessages on nothing: %v", err)
	}
	var wg sync.WaitGroup
	for i := 0; i < 4; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			conn, err := net.Dial("tcp", s.Addr())
			if err != nil {
				t.Error(err)
				return
			}
			defer conn.Close()
			fmt.Fprintf(conn, "EHLO c\r\nMAIL FROM:<a@b>\r\nRCPT TO:<r%d@y>\r\nDATA\r\n", i)
			r := textproto.NewReader(bufio.NewReader(conn))
			for _, code := range []int{220, 250, 250, 250, 354} {
				if _, _, err := r.ReadResponse(code); err != nil {
					t.Error(err)
					return
				}
			}
			fmt.Fprintf(conn, "x\r\n.\r\n")
			r.ReadResponse(250)
		}(i)
	}
	ms, err := s.WaitMessages(4, 5*time.Second)
	if err != nil || len(ms) != 4 {
		t.Fatalf("WaitMessages = %d, %v", len(ms), err)
	}
	wg.Wait()
}

func TestDelayAndRuntimeScript(t *testing.T) {
	s := Start(t, Options{Delays: map[Stage]time.Duration{StageMail: 150 * time.Millisecond}})
	c := dial(t, s.Addr(), 220)
	c.cmd(250, "EHLO c")
	start := time.Now()
	c.cmd(250, "MAIL FROM:<a@b>")
	if d := time.Since(start); d < 150*time.Millisecond {
		t.Errorf("MAIL answered after %v, want >= 150ms", d)
	}
	s.SetRcptReply("<R@Y>", "451 4.7.1 later")
	c.cmd(451, "RCPT TO:<r@y>")
	s.SetRcptReply("r@y", "")
	c.cmd(250, "RCPT TO:<r@y>")
	s.SetReply(StageAfterData, "554 5.7.1 spam")
	c.cmd(354, "DATA")
	c.cmd(554, "x\r\n.")
	if len(s.Messages()) != 0 || len(s.Transactions()) != 1 {
		t.Errorf("refused message counted as accepted")
	}
}

func TestRefusesNonLoopback(t *testing.T) {
	for _, addr := range []string{"0.0.0.0:0", "192.0.2.1:25", ":0"} {
		if s, err := New(Options{Addr: addr}); err == nil {
			s.Close()
			t.Errorf("New(%q) listened", addr)
		}
	}
}

func TestSwaks(t *testing.T) {
	swaks := testutil.NeedCommand(t, "swaks")
	s := Start(t, Options{Ext: DefaultExt | StartTLS | Auth, AuthUser: "user", AuthPass: "secret"})
	for _, tc := range []struct {
		name string
		args []string
	}{
		{"plain", nil},
		{"pipelining", []string{"--pipeline"}},
		{"auth", []string{"--auth", "LOGIN", "--auth-user", "user", "--auth-password", "secret"}},
		{"tls and auth", []string{"--tls", "--auth", "PLAIN", "--auth-user", "user", "--auth-password", "secret"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if strings.Contains(tc.name, "tls") {
				needPerlSSL(t)
			}
			s.Reset()
			args := append([]string{"--server", s.Addr(), "--from", "sender@example.org", "--to", "rcpt@example.net",
				"--helo", "swaks.test", "--header", "Message-Id: <swaks-" + tc.name + "@example.org>"}, tc.args...)
			out, err := exec.Command(swaks, args...).CombinedOutput()
			if err != nil {
				t.Fatalf("swaks: %v\n%s", err, out)
			}
			ms, err := s.WaitMessages(1, 5*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			m := ms[0]
			if m.From != "sender@example.org" || m.Recipients()[0] != "rcpt@example.net" || m.Helo != "swaks.test" ||
				m.MessageID != "<swaks-"+tc.name+"@example.org>" {
				t.Errorf("message = %+v", m)
			}
			if strings.Contains(tc.name, "auth") && m.AuthUser != "user" {
				t.Errorf("auth user %q", m.AuthUser)
			}
			if strings.Contains(tc.name, "tls") && m.TLS == nil {
				t.Error("no TLS recorded")
			}
			if tc.name == "pipelining" && s.Connections()[0].RoundTrips > 4 {
				t.Errorf("pipelined swaks took %d round trips", s.Connections()[0].RoundTrips)
			}
		})
	}
}

// needPerlSSL skips (or fails under CI) when swaks cannot do TLS: it needs
// Debian's libnet-ssleay-perl, which swaks only recommends.
func needPerlSSL(t *testing.T) {
	t.Helper()
	if exec.Command("perl", "-MNet::SSLeay", "-e1").Run() == nil {
		return
	}
	if testutil.InCI() {
		t.Fatal("swaks cannot do TLS: install libnet-ssleay-perl")
	}
	t.Skip("swaks cannot do TLS: libnet-ssleay-perl is not installed")
}

// TestSmtpSource drives the sink with Postfix's load generator: parallel
// sessions must all be recorded and show up in the concurrency peak.
func TestSmtpSource(t *testing.T) {
	src := testutil.NeedCommand(t, "smtp-source")
	s := Start(t, Options{})
	out, err := exec.Command(src, "-s", "4", "-m", "40", "-l", "2000", "-f", "load@example.org", "-t", "sink@example.net", s.Addr()).CombinedOutput()
	if err != nil {
		t.Fatalf("smtp-source: %v\n%s", err, out)
	}
	ms, err := s.WaitMessages(40, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range ms {
		if m.From != "load@example.org" || len(m.Recipients()) != 1 || len(m.Data) < 2000 {
			t.Fatalf("message = %+v (%d bytes)", m, len(m.Data))
		}
	}
	if p := s.MaxConcurrent(); p < 1 || p > 4 {
		t.Errorf("MaxConcurrent = %d, want 1..4", p)
	}
	if n := len(s.Connections()); n != 40 {
		t.Errorf("%d connections, want one per message (40)", n)
	}
}

// FuzzSession feeds arbitrary client bytes to a sink: it must neither
// panic nor hang, whatever the client sends.
func FuzzSession(f *testing.F) {
	for _, s := range []string{
		"EHLO a\r\nMAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\nx\r\n.\r\nQUIT\r\n",
		"EHLO a\r\nMAIL FROM:<a@b> SIZE=9999999999999999999999\r\nRCPT TO:<c@d> NOTIFY=\r\nBDAT 3 LAST\r\nabcQUIT\r\n",
		"EHLO a\r\nAUTH PLAIN\r\n=\r\nAUTH LOGIN\r\n*\r\nSTARTTLS\r\n\x16\x03\x01",
		"HELO a\nMAIL FROM:<\"a>b\"@c>\nRCPT TO:<@x,@y:z@w>\nDATA\n.\n\r\n.\r\n",
		"BDAT 99999999999\r\n",
		"\x00\xff\r\n" + strings.Repeat("A", 5000) + "\r\n",
	} {
		f.Add(s)
	}
	s, err := New(Options{Ext: DefaultExt | StartTLS | Auth, AuthUser: "u", AuthPass: "p", IdleTimeout: 2 * time.Second})
	if err != nil {
		f.Fatal(err)
	}
	defer s.Close()
	f.Fuzz(func(t *testing.T, in string) {
		c, err := net.Dial("tcp", s.Addr())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(5 * time.Second))
		go func() {
			io.WriteString(c, in)
			c.(*net.TCPConn).CloseWrite()
		}()
		if _, err := io.Copy(io.Discard, c); err != nil {
			t.Fatalf("sink did not finish the conversation: %v", err)
		}
	})
}

func FuzzParsePath(f *testing.F) {
	for _, s := range []string{"<a@b>", "<> SIZE=1", `<"a>b"@c> X`, "<@r1,@r2:u@d>", "<a@b", "a@b", "<a@b>x", `<"\>"@x>`} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		addr, params, ok := parsePath(s)
		if !ok {
			return
		}
		if len(addr) >= len(s) {
			t.Fatalf("address %q longer than input %q", addr, s)
		}
		for _, p := range params {
			if p == "" || strings.ContainsAny(p, " ") {
				t.Fatalf("bad param %q from %q", p, s)
			}
		}
	})
}
