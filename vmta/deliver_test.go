package vmta

import (
	"bytes"
	"context"
	"crypto/tls"
	"net/netip"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/sluicemta/sluice/internal/resolve"
)

func testMsg(body string, rcpts ...string) *Message {
	m := &Message{ID: "TESTID", From: "sender@example.org", Content: strings.NewReader(body), Size: int64(len(body))}
	for _, r := range rcpts {
		m.Rcpts = append(m.Rcpts, Rcpt{Addr: r})
	}
	return m
}

const body1 = "Subject: test\r\n\r\nhello\r\n"

// routeTo is a destination fixed to the sink, as `route [127.0.0.1]:port`.
func routeTo(s *sink) Destination {
	return Destination{Domain: "example.net", Hosts: []HostPort{{Host: "127.0.0.1", Port: s.port(), Bracketed: true}},
		HeloName: "client.test", GreetingTimeout: 5 * time.Second, CommandTimeout: 5 * time.Second,
		DataTimeout: 5 * time.Second, DataTerminationTimeout: 5 * time.Second}
}

func newTestDeliverer(t *testing.T, opt Options) *Deliverer {
	t.Helper()
	if opt.Logf == nil {
		opt.Logf = t.Logf
	}
	d := NewDeliverer(opt)
	t.Cleanup(d.Close)
	return d
}

func codes(res Result) []int {
	var out []int
	for _, r := range res.Rcpts {
		out = append(out, r.Reply.Code)
	}
	return out
}

func equalInts(a, b []int) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestPerRecipientReplies(t *testing.T) {
	s := newSink(t, sinkConfig{Rcpt: func(addr string) string {
		switch {
		case strings.HasPrefix(addr, "bad"):
			return "550 5.1.1 <" + addr + ">: Recipient address rejected: User unknown"
		case strings.HasPrefix(addr, "later"):
			return "450 4.2.1 mailbox busy"
		}
		return ""
	}})
	d := newTestDeliverer(t, Options{})
	res := d.Deliver(context.Background(), routeTo(s), testMsg(body1, "a@example.net", "bad@example.net", "later@example.net", "b@example.net"))
	if res.Err != nil {
		t.Fatalf("Err = %v", res.Err)
	}
	want := []struct {
		code  int
		enh   string
		stage string
	}{{250, "2.0.0", StageDot}, {550, "5.1.1", StageRcpt}, {450, "4.2.1", StageRcpt}, {250, "2.0.0", StageDot}}
	for i, w := range want {
		got := res.Rcpts[i]
		if got.Reply.Code != w.code || got.Reply.Enhanced != w.enh || got.Stage != w.stage || got.Synthesized {
			t.Errorf("rcpt %d = %+v, want %d %s at %s", i, got, w.code, w.enh, w.stage)
		}
	}
	if !res.Rcpts[0].Delivered() || res.Rcpts[1].Delivered() {
		t.Error("Delivered() wrong")
	}
	if res.Rcpts[1].Reply.Text != "<bad@example.net>: Recipient address rejected: User unknown" {
		t.Errorf("text = %q", res.Rcpts[1].Reply.Text)
	}
	_, txns, _, _ := s.stats()
	if len(txns) != 1 || strings.Join(txns[0].Rcpts, ",") != "a@example.net,b@example.net" {
		t.Fatalf("sink got %+v", txns)
	}
	if string(txns[0].Raw) != body1 {
		t.Errorf("body = %q", txns[0].Raw)
	}
	if res.Host != "127.0.0.1" || res.Port != s.port() || !res.ESMTP || res.IP != netip.MustParseAddr("127.0.0.1") {
		t.Errorf("result meta = %+v", res)
	}
}

func TestPipeliningRoundTrips(t *testing.T) {
	for _, tc := range []struct {
		name      string
		ignore    bool
		pipelined bool
		writes    int
	}{
		// EHLO, MAIL..DATA, body+dot, (QUIT at Close is not counted: counted before).
		{"pipelining", false, true, 3},
		// EHLO, MAIL, RCPT x3, DATA, body+dot.
		{"lockstep", true, false, 7},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := newSink(t, sinkConfig{})
			md := &mapDial{}
			d := newTestDeliverer(t, Options{Dial: md.dial})
			dest := routeTo(s)
			dest.IgnorePipelining = tc.ignore
			res := d.Deliver(context.Background(), dest, testMsg(body1, "a@x.test", "b@x.test", "c@x.test"))
			if !equalInts(codes(res), []int{250, 250, 250}) {
				t.Fatalf("codes = %v (%v)", codes(res), res.Err)
			}
			_, txns, _, _ := s.stats()
			if len(txns) != 1 || txns[0].Pipelined != tc.pipelined {
				t.Fatalf("sink saw pipelined=%v, want %v", txns, tc.pipelined)
			}
			if got := md.conns[0].Writes(); got != tc.writes {
				t.Errorf("client writes = %d, want %d", got, tc.writes)
			}
		})
	}
}

func TestConnectionReuse(t *testing.T) {
	s := newSink(t, sinkConfig{})
	d := newTestDeliverer(t, Options{})
	dest := routeTo(s)
	for i := 0; i < 3; i++ {
		res := d.Deliver(context.Background(), dest, testMsg(body1, "a@x.test"))
		if !res.Rcpts[0].Delivered() {
			t.Fatalf("msg %d: %+v", i, res.Rcpts[0])
		}
		if res.Reused != (i > 0) {
			t.Errorf("msg %d: Reused = %v", i, res.Reused)
		}
	}
	conns, txns, rsets, _ := s.stats()
	if conns != 1 || len(txns) != 3 || rsets != 2 {
		t.Errorf("conns=%d txns=%d rsets=%d, want 1, 3, 2", conns, len(txns), rsets)
	}
	if d.IdleConns() != 1 || d.OpenConns() != 1 {
		t.Errorf("idle = %d, open = %d", d.IdleConns(), d.OpenConns())
	}
	d.Close()
	if d.OpenConns() != 0 {
		t.Errorf("open after Close = %d", d.OpenConns())
	}
	time.Sleep(50 * time.Millisecond)
	if _, _, _, quits := s.stats(); quits != 1 {
		t.Errorf("QUIT on Close: %d", quits)
	}
}

func TestMaxMsgPerConnection(t *testing.T) {
	s := newSink(t, sinkConfig{})
	d := newTestDeliverer(t, Options{})
	dest := routeTo(s)
	dest.MaxMsgPerConnection = 2
	for i := 0; i < 5; i++ {
		if res := d.Deliver(context.Background(), dest, testMsg(body1, "a@x.test")); !res.Rcpts[0].Delivered() {
			t.Fatalf("msg %d: %+v", i, res.Rcpts[0])
		}
	}
	if conns, _, _, _ := s.stats(); conns != 3 {
		t.Errorf("conns = %d, want 3", conns)
	}
}

func TestIdleTimeoutAndDeadCachedConnection(t *testing.T) {
	s := newSink(t, sinkConfig{})
	d := newTestDeliverer(t, Options{SweepInterval: 10 * time.Millisecond})
	dest := routeTo(s)
	dest.IdleTimeout = 50 * time.Millisecond
	d.Deliver(context.Background(), dest, testMsg(body1, "a@x.test"))
	if d.IdleConns() != 1 {
		t.Fatalf("idle = %d", d.IdleConns())
	}
	deadline := time.Now().Add(2 * time.Second)
	for d.IdleConns() != 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if d.IdleConns() != 0 {
		t.Fatal("idle connection not expired")
	}

	// The server drops an idle session: the next message reconnects
	// transparently.
	dest.IdleTimeout = time.Minute
	d.Deliver(context.Background(), dest, testMsg(body1, "a@x.test"))
	s.dropAll()
	time.Sleep(20 * time.Millisecond)
	res := d.Deliver(context.Background(), dest, testMsg(body1, "b@x.test"))
	if !res.Rcpts[0].Delivered() || res.Reused {
		t.Fatalf("after drop: %+v reused=%v", res.Rcpts[0], res.Reused)
	}
	if conns, txns, _, _ := s.stats(); conns != 3 || len(txns) != 3 {
		t.Errorf("conns=%d txns=%d, want 3, 3", conns, len(txns))
	}
}

// A cached session that passes the liveness check but whose server has
// meanwhile given up (421 to the RSET) is replaced without a deferral.
func TestStaleSessionRedialled(t *testing.T) {
	for _, ignore := range []bool{false, true} {
		s := newSink(t, sinkConfig{})
		d := newTestDeliverer(t, Options{})
		dest := routeTo(s)
		dest.IgnorePipelining = ignore
		d.Deliver(context.Background(), dest, testMsg(body1, "a@x.test"))
		s.update(func(c *sinkConfig) { c.Rset = "421 4.4.2 idle too long" })
		res := d.Deliver(context.Background(), dest, testMsg(body1, "b@x.test"))
		if !res.Rcpts[0].Delivered() || res.Reused || res.Err != nil {
			t.Errorf("pipelining off=%v: %+v reused=%v err=%v", ignore, res.Rcpts[0], res.Reused, res.Err)
		}
		if conns, txns, _, _ := s.stats(); conns != 2 || len(txns) != 2 {
			t.Errorf("conns=%d txns=%d", conns, len(txns))
		}
	}
}

func TestTooManyRecipientsSplitsTransactions(t *testing.T) {
	for _, ignore := range []bool{false, true} {
		s := newSink(t, sinkConfig{MaxRcpts: 2, Rcpt: func(a string) string {
			if a == "4@x.test" {
				return "550 5.1.1 unknown"
			}
			return ""
		}})
		d := newTestDeliverer(t, Options{})
		dest := routeTo(s)
		dest.IgnorePipelining = ignore
		msg := testMsg(body1, "1@x.test", "2@x.test", "3@x.test", "4@x.test", "5@x.test", "6@x.test")
		res := d.Deliver(context.Background(), dest, msg)
		if got := codes(res); !equalInts(got, []int{250, 250, 250, 550, 250, 250}) {
			t.Errorf("pipelining off=%v: %+v", ignore, res.Rcpts)
		}
		conns, txns, _, _ := s.stats()
		if conns != 1 || len(txns) != 3 {
			t.Errorf("conns=%d txns=%d, want 1, 3", conns, len(txns))
		}
	}
}

func TestTooManyRecipientsAtMaxMsgPerConnection(t *testing.T) {
	s := newSink(t, sinkConfig{MaxRcpts: 2})
	d := newTestDeliverer(t, Options{})
	dest := routeTo(s)
	dest.MaxMsgPerConnection = 1
	res := d.Deliver(context.Background(), dest, testMsg(body1, "1@x.test", "2@x.test", "3@x.test"))
	if !res.Rcpts[0].Delivered() || !res.Rcpts[1].Delivered() {
		t.Fatalf("%+v", res.Rcpts)
	}
	if r := res.Rcpts[2]; !r.NotAttempted || r.Reply.Code != 452 || r.Reply.Enhanced != "4.5.3" {
		t.Errorf("third: %+v", r)
	}
	if res.Rcpts[0].NotAttempted {
		t.Error("delivered recipient marked NotAttempted")
	}
}

func TestMailAndDataRejections(t *testing.T) {
	for _, tc := range []struct {
		name  string
		cfg   sinkConfig
		codes []int
		stage string
	}{
		{"mail 5xx", sinkConfig{Mail: "550 5.7.1 sender blocked"}, []int{550, 550}, StageMail},
		{"mail 4xx", sinkConfig{Mail: "451 4.7.1 greylisted"}, []int{451, 451}, StageMail},
		{"data 5xx", sinkConfig{Data: "554 5.7.1 no"}, []int{554, 554}, StageData},
		{"dot 5xx", sinkConfig{Dot: "550 5.7.1 spam"}, []int{550, 550}, StageDot},
		{"dot 4xx", sinkConfig{Dot: "451 4.3.0 try later"}, []int{451, 451}, StageDot},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, ignore := range []bool{false, true} {
				s := newSink(t, tc.cfg)
				d := newTestDeliverer(t, Options{})
				dest := routeTo(s)
				dest.IgnorePipelining = ignore
				res := d.Deliver(context.Background(), dest, testMsg(body1, "a@x.test", "b@x.test"))
				if !equalInts(codes(res), tc.codes) || res.Rcpts[0].Stage != tc.stage || res.Rcpts[0].Synthesized {
					t.Errorf("pipelining off=%v: %+v", ignore, res.Rcpts)
				}
				// The session survives a refused transaction.
				if d.IdleConns() != 1 {
					t.Errorf("idle = %d", d.IdleConns())
				}
			}
		})
	}
}

func TestAllRecipientsRefused(t *testing.T) {
	s := newSink(t, sinkConfig{Rcpt: func(string) string { return "550 5.1.1 no" }})
	d := newTestDeliverer(t, Options{})
	res := d.Deliver(context.Background(), routeTo(s), testMsg(body1, "a@x.test", "b@x.test"))
	if !equalInts(codes(res), []int{550, 550}) || res.Rcpts[0].Stage != StageRcpt {
		t.Fatalf("%+v", res.Rcpts)
	}
	// The next message on the same session still goes through.
	s.update(func(c *sinkConfig) { c.Rcpt = nil })
	res = d.Deliver(context.Background(), routeTo(s), testMsg(body1, "c@x.test"))
	if !res.Rcpts[0].Delivered() || !res.Reused {
		t.Fatalf("%+v reused=%v", res.Rcpts, res.Reused)
	}
}

func TestRcpt421ClosesSession(t *testing.T) {
	for _, ignore := range []bool{false, true} {
		s := newSink(t, sinkConfig{Rcpt: func(a string) string {
			switch a {
			case "b@x.test":
				return "550 5.1.1 unknown"
			case "c@x.test":
				return "421 4.3.2 shutting down"
			}
			return ""
		}})
		d := newTestDeliverer(t, Options{})
		dest := routeTo(s)
		dest.IgnorePipelining = ignore
		res := d.Deliver(context.Background(), dest, testMsg(body1, "a@x.test", "b@x.test", "c@x.test", "d@x.test"))
		if got := codes(res); !equalInts(got, []int{421, 550, 421, 421}) {
			t.Errorf("pipelining off=%v: %+v", ignore, res.Rcpts)
		}
		if d.IdleConns() != 0 || res.Err == nil {
			t.Errorf("session cached after 421 (err %v)", res.Err)
		}
	}
}

func TestGreetingFailures(t *testing.T) {
	for _, tc := range []struct {
		name   string
		cfg    sinkConfig
		bounce bool
		code   int
		enh    string
		stage  string
		synth  bool
		text   string
	}{
		{"421", sinkConfig{Greeting: "421 4.3.2 too busy"}, false, 421, "4.3.2", StageGreeting, false, "too busy"},
		{"554 defers", sinkConfig{Greeting: "554 5.7.1 go away"}, false, 451, "4.4.0", StageGreeting, true, "554 5.7.1 go away"},
		{"554 bounces", sinkConfig{Greeting: "554 5.7.1 go away"}, true, 554, "5.7.1", StageGreeting, false, "go away"},
		{"dropped", sinkConfig{CloseAfterGreeting: true}, false, 451, "4.4.2", StageEHLO, true, "lost connection"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := newSink(t, tc.cfg)
			d := newTestDeliverer(t, Options{})
			dest := routeTo(s)
			dest.BounceOn5xxGreeting = tc.bounce
			res := d.Deliver(context.Background(), dest, testMsg(body1, "a@x.test", "b@x.test"))
			for _, r := range res.Rcpts {
				if r.Reply.Code != tc.code || r.Reply.Enhanced != tc.enh || r.Stage != tc.stage || r.Synthesized != tc.synth ||
					!strings.Contains(r.Reply.Text, tc.text) {
					t.Errorf("got %+v", r)
				}
			}
			if res.Err == nil || res.Host != "127.0.0.1" || res.Port != s.port() {
				t.Errorf("Err = %v, host %s port %d", res.Err, res.Host, res.Port)
			}
		})
	}
}

func TestTransportFailures(t *testing.T) {
	t.Run("refused", func(t *testing.T) {
		s := newSink(t, sinkConfig{})
		dest := routeTo(s)
		s.close()
		d := newTestDeliverer(t, Options{})
		res := d.Deliver(context.Background(), dest, testMsg(body1, "a@x.test"))
		r := res.Rcpts[0]
		want := "connect to 127.0.0.1[127.0.0.1]:"
		if r.Reply.Code != 451 || r.Reply.Enhanced != "4.4.1" || !strings.HasPrefix(r.Reply.Text, want) ||
			!strings.HasSuffix(r.Reply.Text, "Connection refused") || r.Stage != StageConnect {
			t.Errorf("got %+v", r)
		}
	})
	t.Run("greeting timeout", func(t *testing.T) {
		s := newSink(t, sinkConfig{Hang: true})
		dest := routeTo(s)
		dest.CommandTimeout = 200 * time.Millisecond
		d := newTestDeliverer(t, Options{})
		res := d.Deliver(context.Background(), dest, testMsg(body1, "a@x.test"))
		r := res.Rcpts[0]
		if r.Reply.Code != 451 || r.Reply.Enhanced != "4.4.2" || !strings.Contains(r.Reply.Text, "timed out") {
			t.Errorf("got %+v", r)
		}
	})
	t.Run("context cancelled", func(t *testing.T) {
		s := newSink(t, sinkConfig{Hang: true})
		ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		defer cancel()
		d := newTestDeliverer(t, Options{})
		start := time.Now()
		res := d.Deliver(ctx, routeTo(s), testMsg(body1, "a@x.test"))
		if res.Rcpts[0].Reply.Code != 451 || time.Since(start) > 3*time.Second {
			t.Errorf("got %+v after %v", res.Rcpts[0], time.Since(start))
		}
	})
}

func TestMXOrderAndFallback(t *testing.T) {
	good := newSink(t, sinkConfig{})
	busy := newSink(t, sinkConfig{Greeting: "421 4.7.0 busy"})
	ip := func(s string) netip.Addr { return netip.MustParseAddr(s) }
	md := &mapDial{to: map[netip.Addr]netip.AddrPort{
		ip("192.0.2.2"): busy.addrPort(),
		ip("192.0.2.3"): good.addrPort(),
	}}
	r := &fakeResolver{
		mx: map[string][]resolve.MX{
			"example.com":  {{Host: "mx1.example.com", Pref: 10}, {Host: "mx2.example.com", Pref: 20}, {Host: "mx3.example.com", Pref: 30}},
			"nomx.example": nil,
		},
		mxErr: map[string]error{"null.example": resolve.ErrNullMX, "tmp.example": resolve.ErrTemporary},
		addrs: map[string][]netip.Addr{
			"mx1.example.com": {ip("192.0.2.1")}, // refused
			"mx2.example.com": {ip("192.0.2.2")}, // 421 greeting
			"mx3.example.com": {ip("192.0.2.3")},
			"a.example":       {ip("192.0.2.3")}, // no MX: its own A record
			"noaddr.example":  {},
		},
	}
	d := newTestDeliverer(t, Options{Resolver: r, Dial: md.dial})
	dest := Destination{Domain: "example.com", Port: 25, GreetingTimeout: 5 * time.Second}
	res := d.Deliver(context.Background(), dest, testMsg(body1, "a@example.com"))
	if !res.Rcpts[0].Delivered() || res.Host != "mx3.example.com" {
		t.Fatalf("%+v host=%s", res.Rcpts[0], res.Host)
	}
	var order []string
	for _, a := range md.Dialed() {
		order = append(order, a.String())
	}
	if strings.Join(order, " ") != "192.0.2.1:25 192.0.2.2:25 192.0.2.3:25" {
		t.Errorf("dial order %v", order)
	}

	for _, tc := range []struct {
		domain string
		code   int
		enh    string
	}{
		{"a.example", 250, "2.0.0"},
		{"nx.example", 550, "5.1.2"},
		{"null.example", 556, "5.1.10"},
		{"tmp.example", 451, "4.4.3"},
		{"noaddr.example", 550, "5.4.4"},
	} {
		dest.Domain = tc.domain
		res := d.Deliver(context.Background(), dest, testMsg(body1, "u@"+tc.domain))
		got := res.Rcpts[0]
		if got.Reply.Code != tc.code || got.Reply.Enhanced != tc.enh {
			t.Errorf("%s: %+v", tc.domain, got)
		}
	}

	// A cap on MX hosts: with MaxHosts 2 the good third MX is never tried.
	d2 := newTestDeliverer(t, Options{Resolver: r, Dial: md.dial, MaxHosts: 2})
	dest.Domain = "example.com"
	res = d2.Deliver(context.Background(), dest, testMsg(body1, "a@example.com"))
	if got := res.Rcpts[0]; got.Reply.Code != 421 || got.Stage != StageGreeting {
		t.Errorf("MaxHosts 2: %+v", got)
	}
}

func TestRouteHostIsLookedUpByMX(t *testing.T) {
	good := newSink(t, sinkConfig{})
	md := &mapDial{to: map[netip.Addr]netip.AddrPort{netip.MustParseAddr("192.0.2.9"): good.addrPort()}}
	r := &fakeResolver{
		mx:    map[string][]resolve.MX{"relay.example": {{Host: "in.relay.example", Pref: 5}}},
		addrs: map[string][]netip.Addr{"in.relay.example": {netip.MustParseAddr("192.0.2.9")}, "relay.example": {netip.MustParseAddr("192.0.2.8")}},
	}
	d := newTestDeliverer(t, Options{Resolver: r, Dial: md.dial})
	dest := Destination{Domain: "example.com", Hosts: []HostPort{{Host: "relay.example"}}}
	res := d.Deliver(context.Background(), dest, testMsg(body1, "a@example.com"))
	if !res.Rcpts[0].Delivered() || res.Host != "in.relay.example" {
		t.Fatalf("%+v %s", res.Rcpts[0], res.Host)
	}
	// Bracketed: the host's own address, no MX lookup (192.0.2.8 is not mapped: refused).
	dest.Bracketed = true
	res = d.Deliver(context.Background(), dest, testMsg(body1, "a@example.com"))
	if got := res.Rcpts[0]; got.Reply.Enhanced != "4.4.1" || !strings.Contains(got.Reply.Text, "relay.example[192.0.2.8]:25") {
		t.Fatalf("bracketed: %+v", got)
	}
	// An unknown route host defers (configuration), never bounces.
	dest = Destination{Domain: "example.com", Hosts: []HostPort{{Host: "nowhere.example"}}}
	res = d.Deliver(context.Background(), dest, testMsg(body1, "a@example.com"))
	if got := res.Rcpts[0]; got.Reply.Code != 451 || got.Stage != StageDNS {
		t.Fatalf("unknown route: %+v", got)
	}
}

func TestSTARTTLS(t *testing.T) {
	srvTLS, pool := testCert(t, "mx.example.com")
	r := &fakeResolver{
		mx:    map[string][]resolve.MX{"example.com": {{Host: "mx.example.com", Pref: 10}}, "other.com": {{Host: "mx.other.com", Pref: 10}}},
		addrs: map[string][]netip.Addr{"mx.example.com": {netip.MustParseAddr("192.0.2.1")}, "mx.other.com": {netip.MustParseAddr("192.0.2.1")}},
	}
	for _, tc := range []struct {
		name    string
		cfg     sinkConfig
		domain  string
		use     bool
		require bool
		code    int
		enh     string
		tls     bool
		conns   int
	}{
		{"opportunistic", sinkConfig{TLS: srvTLS}, "example.com", true, false, 250, "2.0.0", true, 1},
		{"off", sinkConfig{TLS: srvTLS}, "example.com", false, false, 250, "2.0.0", false, 1},
		{"not offered", sinkConfig{}, "example.com", true, false, 250, "2.0.0", false, 1},
		{"broken handshake falls back to plain", sinkConfig{BadTLS: true}, "example.com", true, false, 250, "2.0.0", false, 2},
		{"required and verified", sinkConfig{TLS: srvTLS}, "example.com", true, true, 250, "2.0.0", true, 1},
		{"required, wrong name", sinkConfig{TLS: srvTLS}, "other.com", true, true, 451, "4.7.5", false, 1},
		{"required, not offered", sinkConfig{}, "example.com", true, true, 451, "4.7.4", false, 1},
		{"required, broken", sinkConfig{BadTLS: true}, "example.com", true, true, 451, "4.7.5", false, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := newSink(t, tc.cfg)
			md := &mapDial{to: map[netip.Addr]netip.AddrPort{netip.MustParseAddr("192.0.2.1"): s.addrPort()}}
			d := newTestDeliverer(t, Options{Resolver: r, Dial: md.dial, TLSConfig: &tls.Config{RootCAs: pool}})
			dest := Destination{Domain: tc.domain, UseStartTLS: tc.use, RequireStartTLS: tc.require, CommandTimeout: 5 * time.Second}
			res := d.Deliver(context.Background(), dest, testMsg(body1, "a@"+tc.domain))
			got := res.Rcpts[0]
			if got.Reply.Code != tc.code || got.Reply.Enhanced != tc.enh {
				t.Fatalf("got %+v", got)
			}
			if (res.TLSVersion != "") != tc.tls {
				t.Errorf("TLSVersion = %q", res.TLSVersion)
			}
			conns, txns, _, _ := s.stats()
			if conns != tc.conns {
				t.Errorf("conns = %d, want %d", conns, tc.conns)
			}
			if tc.code == 250 && (len(txns) != 1 || txns[0].TLS != tc.tls) {
				t.Errorf("sink txns %+v", txns)
			}
			if tc.code == 250 {
				// A second message reuses the session, TLS and all.
				res = d.Deliver(context.Background(), dest, testMsg(body1, "b@"+tc.domain))
				if !res.Reused || !res.Rcpts[0].Delivered() || (res.TLSVersion != "") != tc.tls {
					t.Errorf("second: %+v reused=%v tls=%q", res.Rcpts[0], res.Reused, res.TLSVersion)
				}
			}
		})
	}
}

func TestRequireTLSDoesNotReusePlainSession(t *testing.T) {
	srvTLS, pool := testCert(t, "127.0.0.1.invalid")
	s := newSink(t, sinkConfig{TLS: srvTLS})
	d := newTestDeliverer(t, Options{TLSConfig: &tls.Config{RootCAs: pool}})
	dest := routeTo(s)
	d.Deliver(context.Background(), dest, testMsg(body1, "a@x.test")) // plain, cached
	dest.UseStartTLS, dest.RequireStartTLS = true, true
	res := d.Deliver(context.Background(), dest, testMsg(body1, "a@x.test"))
	if res.Reused || res.Rcpts[0].Reply.Enhanced != "4.7.5" {
		t.Fatalf("%+v reused=%v", res.Rcpts[0], res.Reused)
	}
}

func TestESMTPParameters(t *testing.T) {
	s := newSink(t, sinkConfig{})
	d := newTestDeliverer(t, Options{})
	msg := testMsg(body1, "a@x.test", "b@x.test")
	msg.Ret, msg.EnvID, msg.Body8bit = "hdrs", "id+1 =x", true
	msg.Rcpts[0].Notify, msg.Rcpts[0].ORCPT = "success,failure", "rfc822;A+B@x.test"
	msg.Rcpts[1].ORCPT = "b@x.test"
	res := d.Deliver(context.Background(), routeTo(s), msg)
	if !res.Rcpts[0].Delivered() {
		t.Fatalf("%+v", res.Rcpts)
	}
	_, txns, _, _ := s.stats()
	wantMail := "MAIL FROM:<sender@example.org> SIZE=" + itoa(len(body1)) + " BODY=8BITMIME RET=HDRS ENVID=id+2B1+20+3Dx"
	if txns[0].MailLine != wantMail {
		t.Errorf("MAIL = %q\nwant   %q", txns[0].MailLine, wantMail)
	}
	wantRcpt := []string{"RCPT TO:<a@x.test> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;A+2BB@x.test", "RCPT TO:<b@x.test> ORCPT=rfc822;b@x.test"}
	if strings.Join(txns[0].RcptLines, "|") != strings.Join(wantRcpt, "|") {
		t.Errorf("RCPT = %q", txns[0].RcptLines)
	}

	// Without the extensions no parameter is sent; HELO when EHLO is refused.
	s2 := newSink(t, sinkConfig{NoEHLO: true})
	res = d.Deliver(context.Background(), routeTo(s2), msg)
	if !res.Rcpts[0].Delivered() || res.ESMTP {
		t.Fatalf("HELO: %+v esmtp=%v", res.Rcpts, res.ESMTP)
	}
	_, txns, _, _ = s2.stats()
	if txns[0].MailLine != "MAIL FROM:<sender@example.org>" || txns[0].RcptLines[0] != "RCPT TO:<a@x.test>" {
		t.Errorf("HELO session sent %q %q", txns[0].MailLine, txns[0].RcptLines)
	}
}

func itoa(n int) string { return strconv.Itoa(n) }

func TestSMTPUTF8AndSize(t *testing.T) {
	s := newSink(t, sinkConfig{Ext: []string{"PIPELINING", "SIZE 100", "SMTPUTF8"}})
	d := newTestDeliverer(t, Options{})
	msg := testMsg(body1, "ü@x.test")
	msg.SMTPUTF8 = true
	res := d.Deliver(context.Background(), routeTo(s), msg)
	_, txns, _, _ := s.stats()
	if !res.Rcpts[0].Delivered() || !strings.HasSuffix(txns[0].MailLine, " SMTPUTF8") {
		t.Fatalf("%+v %+v", res.Rcpts, txns)
	}

	big := testMsg(strings.Repeat("x", 200), "a@x.test")
	res = d.Deliver(context.Background(), routeTo(s), big)
	if got := res.Rcpts[0]; got.Reply.Code != 552 || got.Reply.Enhanced != "5.3.4" || !got.Synthesized {
		t.Errorf("oversize: %+v", got)
	}

	s2 := newSink(t, sinkConfig{Ext: []string{"PIPELINING"}})
	msg = testMsg(body1, "ü@x.test", "plain@x.test")
	msg.SMTPUTF8 = true
	res = d.Deliver(context.Background(), routeTo(s2), msg)
	if got := res.Rcpts[0]; got.Reply.Code != 553 || got.Reply.Enhanced != "5.6.7" {
		t.Errorf("utf8 rcpt without SMTPUTF8: %+v", got)
	}
	if !res.Rcpts[1].Delivered() {
		t.Errorf("ascii rcpt: %+v", res.Rcpts[1])
	}
}

func TestDataIsStuffedAndCRLF(t *testing.T) {
	s := newSink(t, sinkConfig{})
	d := newTestDeliverer(t, Options{})
	in := "Subject: x\n\n.hidden\nbare\rcr\r\n..two\r\n.\r\nend"
	res := d.Deliver(context.Background(), routeTo(s), testMsg(in, "a@x.test"))
	if !res.Rcpts[0].Delivered() {
		t.Fatalf("%+v", res.Rcpts)
	}
	_, txns, _, _ := s.stats()
	want := "Subject: x\r\n\r\n..hidden\r\nbare\r\ncr\r\n...two\r\n..\r\nend\r\n"
	if string(txns[0].Raw) != want {
		t.Errorf("wire = %q\nwant   %q", txns[0].Raw, want)
	}
}

func TestLargeBodyAcrossChunks(t *testing.T) {
	s := newSink(t, sinkConfig{})
	d := newTestDeliverer(t, Options{})
	var b bytes.Buffer
	for b.Len() < 300<<10 {
		b.WriteString(".line of text that starts with a dot\r\n")
	}
	res := d.Deliver(context.Background(), routeTo(s), &Message{From: "a@b", Rcpts: []Rcpt{{Addr: "c@d"}},
		Content: bytes.NewReader(b.Bytes()), Size: int64(b.Len())})
	if !res.Rcpts[0].Delivered() {
		t.Fatalf("%+v", res.Rcpts)
	}
	_, txns, _, _ := s.stats()
	want := strings.ReplaceAll("\r\n"+b.String(), "\r\n.", "\r\n..")[2:]
	if string(txns[0].Raw) != want {
		t.Errorf("body mismatch: %d bytes, want %d", len(txns[0].Raw), len(want))
	}
}

// TestLargePipelinedBatch: thousands of recipients are still one write and
// one wait, written while the replies are read (RFC 2920 5 deadlock).
func TestLargePipelinedBatch(t *testing.T) {
	s := newSink(t, sinkConfig{})
	md := &mapDial{}
	d := newTestDeliverer(t, Options{Dial: md.dial})
	var rcpts []string
	for i := 0; i < 3000; i++ {
		rcpts = append(rcpts, "user"+strconv.Itoa(i)+"@a-rather-long-domain-name.example.net")
	}
	res := d.Deliver(context.Background(), routeTo(s), testMsg(body1, rcpts...))
	for i, r := range res.Rcpts {
		if !r.Delivered() {
			t.Fatalf("rcpt %d: %+v", i, r)
		}
	}
	_, txns, _, _ := s.stats()
	if len(txns) != 1 || len(txns[0].Rcpts) != 3000 {
		t.Fatalf("%d transactions", len(txns))
	}
	if w := md.conns[0].Writes(); w != 3 {
		t.Errorf("client writes = %d, want 3 (EHLO, batch, content)", w)
	}
	// And the session is reusable afterwards.
	if res := d.Deliver(context.Background(), routeTo(s), testMsg(body1, "a@x.test")); !res.Reused || !res.Rcpts[0].Delivered() {
		t.Errorf("after a large batch: %+v", res)
	}
}

func TestBrokenServer354WithoutRecipients(t *testing.T) {
	for _, mail := range []string{"", "550 5.7.1 sender refused"} {
		s := newSink(t, sinkConfig{Data354Always: true, Mail: mail, Rcpt: func(string) string { return "550 5.1.1 no" }})
		d := newTestDeliverer(t, Options{})
		res := d.Deliver(context.Background(), routeTo(s), testMsg(body1, "a@x.test"))
		if res.Rcpts[0].Reply.Code != 550 || res.Rcpts[0].Delivered() {
			t.Fatalf("mail %q: %+v", mail, res.Rcpts[0])
		}
		// The empty message was ended properly: the session still works.
		s.update(func(c *sinkConfig) { c.Mail, c.Rcpt = "", nil })
		res = d.Deliver(context.Background(), routeTo(s), testMsg(body1, "b@x.test"))
		if !res.Reused || !res.Rcpts[0].Delivered() {
			t.Errorf("mail %q: next message %+v reused=%v", mail, res.Rcpts[0], res.Reused)
		}
	}
}

func TestSourceIP(t *testing.T) {
	s := newSink(t, sinkConfig{})
	d := newTestDeliverer(t, Options{})
	dest := routeTo(s)
	dest.SourceIP = netip.MustParseAddr("127.0.0.1")
	res := d.Deliver(context.Background(), dest, testMsg(body1, "a@x.test"))
	if !res.Rcpts[0].Delivered() || res.SourceIP != dest.SourceIP {
		t.Fatalf("%+v from %s", res.Rcpts[0], res.SourceIP)
	}
	// An IPv6-only destination cannot be reached from an IPv4 source.
	dest.Hosts = []HostPort{{Host: "::1", Port: s.port()}}
	res = d.Deliver(context.Background(), dest, testMsg(body1, "a@x.test"))
	if got := res.Rcpts[0]; got.Reply.Code != 451 || got.Reply.Enhanced != "4.4.4" {
		t.Errorf("family mismatch: %+v", got)
	}
}

func TestTLSSessionResumed(t *testing.T) {
	srvTLS, _ := testCert(t, "mx.example.com")
	s := newSink(t, sinkConfig{TLS: srvTLS})
	d := newTestDeliverer(t, Options{})
	dest := routeTo(s)
	dest.UseStartTLS, dest.MaxMsgPerConnection = true, 1
	for i := 0; i < 2; i++ {
		if res := d.Deliver(context.Background(), dest, testMsg(body1, "a@x.test")); res.TLSVersion == "" || !res.Rcpts[0].Delivered() {
			t.Fatalf("%d: %+v", i, res)
		}
	}
	conns, txns, _, _ := s.stats()
	if conns != 2 || txns[0].Resumed || !txns[1].Resumed {
		t.Errorf("conns=%d resumed=%v,%v; want 2, false,true", conns, txns[0].Resumed, txns[1].Resumed)
	}
}
