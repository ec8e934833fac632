package smtpd

import (
	"net/netip"
	"strings"
	"testing"
	"time"
)

func TestMessageSize(t *testing.T) {
	s := baseSettings(&eventLog{})
	s.MaxMessageSize = 2000
	s.PolicyFor = func(ip netip.Addr, user string) Policy { return Policy{MaxMessageSize: 1000} }
	q := newRecQueue()
	_, addrs := startServer(t, s, q)
	c := dial(t, addrs["127.0.0.1:0"])
	c.expect("", "220")
	if ehlo := c.expect("EHLO c", "250"); !strings.Contains(ehlo, "SIZE 2000") {
		t.Errorf("EHLO: %q", ehlo)
	}
	c.expect("MAIL FROM:<a@b.test> SIZE=1001", "552 5.3.4")
	c.expect("MAIL FROM:<a@b.test> SIZE=3000", "552 5.3.4")
	c.expect("MAIL FROM:<a@b.test> SIZE=1000", "250")
	c.expect("RCPT TO:<u@local.test>", "250")
	c.expect("DATA", "354")
	// Over the client's policy but under the server's ceiling.
	c.expect(strings.Repeat("x", 1500)+"\r\n.", "552 5.3.4")
	// Over the server's ceiling: go-smtp's own limit, same reply.
	c.expect("MAIL FROM:<a@b.test>", "250")
	c.expect("RCPT TO:<u@local.test>", "250")
	c.expect("DATA", "354")
	c.expect(strings.Repeat(strings.Repeat("y", 998)+"\r\n", 5)+".", "552 5.3.4")
	// BDAT over the policy limit.
	c.expect("MAIL FROM:<a@b.test>", "250")
	c.expect("RCPT TO:<u@local.test>", "250")
	c.send("BDAT 1200 LAST\r\n" + strings.Repeat("z", 1200))
	c.expect("", "552 5.3.4")
	// Still in step, and a message at the limit passes.
	c.expect("MAIL FROM:<a@b.test>", "250")
	c.expect("RCPT TO:<u@local.test>", "250")
	c.expect("DATA", "354")
	c.expect(strings.Repeat("x", 998)+"\r\n.", "250")
	if n := len(q.all()); n != 1 {
		t.Errorf("%d queued", n)
	}
}

func TestTooManyRecipients(t *testing.T) {
	s := baseSettings(&eventLog{})
	s.PolicyFor = func(ip netip.Addr, user string) Policy { return Policy{MaxRcpts: 3} }
	q := newRecQueue()
	_, addrs := startServer(t, s, q)
	c := dial(t, addrs["127.0.0.1:0"])
	c.expect("", "220")
	c.expect("EHLO c", "250")
	c.expect("MAIL FROM:<a@b.test>", "250")
	for i := 0; i < 3; i++ {
		c.expect("RCPT TO:<u"+itoa(i)+"@local.test>", "250")
	}
	c.expect("RCPT TO:<u9@local.test>", "452 4.5.3")
	c.expect("DATA", "354")
	c.expect("x\r\n.", "250")
	if env := q.all()[0].env; len(env.Rcpts) != 3 {
		t.Errorf("rcpts %v", env.Rcpts)
	}
}

func TestConnectionLimits(t *testing.T) {
	tests := []struct {
		name    string
		set     func(*Settings)
		allowed int
	}{
		{"per IP", func(s *Settings) { s.MaxPerIP = 2 }, 2},
		{"total", func(s *Settings) { s.TotalMaxIn = 3 }, 3},
		{"rate", func(s *Settings) { s.ConnRatePerIP = Rate{N: 4, Per: time.Hour} }, 4},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ev := &eventLog{}
			s := baseSettings(ev)
			tc.set(&s)
			_, addrs := startServer(t, s, newRecQueue())
			var open []*client
			for i := 0; i < tc.allowed; i++ {
				c := dial(t, addrs["127.0.0.1:0"])
				c.expect("", "220 ")
				open = append(open, c)
			}
			c := dial(t, addrs["127.0.0.1:0"])
			c.expect("", "421 4.7.0 mx.test Error: too many connections")
			if r := c.reply(); r != "" {
				t.Errorf("after 421: %q", r)
			}
			if !ev.find(EvReject, "4.7.0 mx.test Error: too many connections") {
				t.Errorf("no reject event")
			}
			// Closing one session frees a slot, except under the rate limit.
			open[0].cmd("QUIT")
			waitFor(t, "disconnect", func() bool { return ev.find(EvDisconnect, "") })
			c = dial(t, addrs["127.0.0.1:0"])
			if tc.name == "rate" {
				c.expect("", "421 4.7.0")
			} else {
				c.expect("", "220 ")
			}
		})
	}
}

func TestKeyedRate(t *testing.T) {
	k := newKeyedRate(Rate{N: 2, Per: time.Second})
	a, b := netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("192.0.2.2")
	t0 := time.Unix(1000, 0)
	for i, want := range []bool{true, true, false} {
		if got := k.allow(a, t0); got != want {
			t.Errorf("take %d: %v", i, got)
		}
	}
	if !k.allow(b, t0) || !k.exhausted(a, t0) {
		t.Errorf("keys not independent")
	}
	if !k.allow(a, t0.Add(500*time.Millisecond)) || k.allow(a, t0.Add(500*time.Millisecond)) {
		t.Errorf("refill after half a period should give one token")
	}
	// Stale buckets are dropped.
	k.allow(netip.MustParseAddr("192.0.2.3"), t0.Add(10*time.Second))
	if n := k.size(); n != 1 {
		t.Errorf("%d buckets kept", n)
	}
	if !newKeyedRate(Rate{}).allow(a, t0) {
		t.Errorf("zero rate must be unlimited")
	}
}

func TestErrorTarpit(t *testing.T) {
	ev := &eventLog{}
	s := baseSettings(ev)
	s.ErrorDelay = 50 * time.Millisecond
	s.SoftErrorLimit = 2
	s.HardErrorLimit = 5
	_, addrs := startServer(t, s, newRecQueue())
	c := dial(t, addrs["127.0.0.1:0"])
	c.expect("", "220")
	c.expect("EHLO c", "250")
	c.expect("MAIL FROM:<a@b.test>", "250")
	var took []time.Duration
	for i := 0; i < 4; i++ {
		t0 := time.Now()
		c.expect("RCPT TO:<u@other.test>", "554 5.7.1")
		took = append(took, time.Since(t0))
	}
	// Errors 3 and 4 wait 50ms and 100ms.
	if took[1] > 40*time.Millisecond || took[2] < 50*time.Millisecond || took[3] < 100*time.Millisecond {
		t.Errorf("delays %v", took)
	}
	c.expect("RCPT TO:<u@other.test>", "421 4.7.0 Error: too many errors")
	if r := c.reply(); r != "" {
		t.Errorf("connection still open: %q", r)
	}
}

func TestLineAndTimeouts(t *testing.T) {
	s := baseSettings(&eventLog{})
	s.MaxLineLength = 100
	s.CommandTimeout = 300 * time.Millisecond
	s.DataTimeout = 300 * time.Millisecond
	q := newRecQueue()
	_, addrs := startServer(t, s, q)

	c := dial(t, addrs["127.0.0.1:0"])
	c.expect("", "220")
	c.expect("NOOP "+strings.Repeat("x", 200), "500 5.4.0")

	c = dial(t, addrs["127.0.0.1:0"])
	c.expect("", "220")
	t0 := time.Now()
	c.expect("", "421 4.4.2") // idle
	if d := time.Since(t0); d < 250*time.Millisecond || d > 3*time.Second {
		t.Errorf("idle timeout after %v", d)
	}

	// DataTimeout is per read: a slow but steady sender is not cut off.
	c = dial(t, addrs["127.0.0.1:0"])
	c.expect("", "220")
	c.expect("EHLO c", "250")
	c.expect("MAIL FROM:<a@b.test>", "250")
	c.expect("RCPT TO:<u@local.test>", "250")
	c.expect("DATA", "354")
	for i := 0; i < 5; i++ {
		c.send("line\r\n")
		time.Sleep(150 * time.Millisecond)
	}
	c.expect(".", "250")
	// A stalled one is.
	c.expect("MAIL FROM:<a@b.test>", "250")
	c.expect("RCPT TO:<u@local.test>", "250")
	c.expect("DATA", "354")
	c.send("partial")
	r := c.reply()
	if !strings.HasPrefix(r, "421 4.4.2") {
		t.Errorf("stalled DATA: %q", r)
	}
	if n := len(q.all()); n != 1 {
		t.Errorf("%d queued", n)
	}
}

func TestRefusedSource(t *testing.T) {
	ev := &eventLog{}
	s := baseSettings(ev)
	s.PolicyFor = func(ip netip.Addr, _ string) Policy { return Policy{Refuse: ip == netip.MustParseAddr("192.0.2.66")} }
	srv, err := New(s, newRecQueue())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	c := wrapClient(t, pipeDial(t, srv, "192.0.2.66", Plain))
	c.expect("", "554 5.7.1 mx.test Service unavailable; client [192.0.2.66] blocked")
	if r := c.reply(); r != "" {
		t.Errorf("after 554: %q", r)
	}
	c = wrapClient(t, pipeDial(t, srv, "192.0.2.67", Plain))
	c.expect("", "220 ")
}

// TestBDATOverCeiling: go-smtp refuses a chunk that takes the message over
// the server's ceiling and resets the transaction under a running Data.
func TestBDATOverCeiling(t *testing.T) {
	s := baseSettings(&eventLog{})
	s.MaxMessageSize = 2000
	q := newRecQueue()
	_, addrs := startServer(t, s, q)
	c := dial(t, addrs["127.0.0.1:0"])
	c.expect("", "220")
	c.expect("EHLO c", "250")
	c.expect("MAIL FROM:<a@b.test>", "250")
	c.expect("RCPT TO:<u@local.test>", "250")
	c.send("BDAT 1000\r\n" + strings.Repeat("a", 998) + "\r\n")
	c.expect("", "250")
	c.send("BDAT 1500 LAST\r\n" + strings.Repeat("b", 1498) + "\r\n")
	c.expect("", "552 5.3.4")
	// The next reply is the last on this connection.
	c.expect("MAIL FROM:<a@b.test>", "421 4.3.0")
	if r := c.reply(); r != "" {
		t.Errorf("connection kept after an abandoned chunked transfer: %q", r)
	}
	if n := len(q.all()); n != 0 {
		t.Errorf("%d queued", n)
	}
}
