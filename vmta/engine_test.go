package vmta

// Tests of the outbound engine against internal/testutil/smtpsink and
// fakedns: what Result reports, content conversion, smarthost login,
// IPv6, IDN and MX loops.

import (
	"bytes"
	"context"
	"crypto/tls"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/sluicemta/sluice/internal/resolve"
	"github.com/sluicemta/sluice/internal/testutil/fakedns"
	"github.com/sluicemta/sluice/internal/testutil/smtpsink"
)

func toSink(s *smtpsink.Sink) Destination {
	return Destination{Domain: "example.net", Hosts: []HostPort{{Host: "127.0.0.1", Port: s.Port(), Bracketed: true}},
		HeloName: "client.test", GreetingTimeout: 5 * time.Second, CommandTimeout: 5 * time.Second,
		DataTimeout: 5 * time.Second, DataTerminationTimeout: 5 * time.Second, MaxMsgPerConnection: 1}
}

func TestResultReportsExtensionsAndDSN(t *testing.T) {
	for _, tc := range []struct {
		name    string
		ext     smtpsink.Ext
		ignore  bool
		wantDSN bool
	}{
		{"dsn offered", smtpsink.DefaultExt, false, true},
		{"dsn ignored", smtpsink.DefaultExt, true, false},
		{"no dsn", smtpsink.Pipelining | smtpsink.EightBitMIME, false, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := smtpsink.Start(t, smtpsink.Options{Ext: tc.ext})
			d := newTestDeliverer(t, Options{})
			dest := toSink(s)
			dest.IgnoreDSN = tc.ignore
			msg := testMsg(body1, "a@example.net")
			msg.Rcpts[0].Notify = "SUCCESS,FAILURE"
			res := d.Deliver(context.Background(), dest, msg)
			if !res.Rcpts[0].Delivered() || res.DSN != tc.wantDSN {
				t.Fatalf("%+v DSN=%v", res.Rcpts[0], res.DSN)
			}
			if !slices.Contains(res.Extensions, "PIPELINING") || !slices.IsSorted(res.Extensions) ||
				slices.Contains(res.Extensions, "DSN") != tc.wantDSN {
				t.Errorf("Extensions = %v", res.Extensions)
			}
			msgs, _ := s.WaitMessages(1, 5*time.Second)
			notify := slices.Contains(msgs[0].Rcpts[0].Params, "NOTIFY=SUCCESS,FAILURE")
			if notify != tc.wantDSN {
				t.Errorf("RCPT params %v", msgs[0].Rcpts[0].Params)
			}
		})
	}
}

func TestTLSVersionAndCipherRecorded(t *testing.T) {
	s := smtpsink.Start(t, smtpsink.Options{Ext: smtpsink.DefaultExt | smtpsink.StartTLS})
	d := newTestDeliverer(t, Options{})
	dest := toSink(s)
	dest.UseStartTLS = true
	res := d.Deliver(context.Background(), dest, testMsg(body1, "a@example.net"))
	if !res.Rcpts[0].Delivered() {
		t.Fatalf("%+v", res.Rcpts[0])
	}
	if res.TLSVersion != "TLSv1.3" || !strings.HasPrefix(res.TLSCipher, "TLS_") {
		t.Errorf("TLS %q %q", res.TLSVersion, res.TLSCipher)
	}
	msgs, _ := s.WaitMessages(1, 5*time.Second)
	if msgs[0].TLS == nil {
		t.Error("sink saw no TLS")
	}
}

func TestQueueDeferOn421(t *testing.T) {
	for _, tc := range []struct {
		name      string
		opt       smtpsink.Options
		wantDefer bool
	}{
		{"421 greeting", smtpsink.Options{Replies: map[smtpsink.Stage]string{smtpsink.StageGreeting: "421 4.3.2 too busy"}}, true},
		{"421 to MAIL", smtpsink.Options{Replies: map[smtpsink.Stage]string{smtpsink.StageMail: "421 4.7.0 try later"}}, true},
		{"421 to RCPT", smtpsink.Options{RcptReplies: map[string]string{"a@example.net": "421 4.7.0 closing"}}, true},
		{"450 is per recipient", smtpsink.Options{RcptReplies: map[string]string{"a@example.net": "450 4.2.1 busy"}}, false},
		{"delivered", smtpsink.Options{}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := smtpsink.Start(t, tc.opt)
			d := newTestDeliverer(t, Options{})
			res := d.Deliver(context.Background(), toSink(s), testMsg(body1, "a@example.net"))
			if got := res.QueueDefer > 0; got != tc.wantDefer {
				t.Errorf("QueueDefer = %v, rcpt %+v", res.QueueDefer, res.Rcpts[0])
			}
		})
	}
}

func TestSMTP553MeansInvalidMailbox(t *testing.T) {
	s := smtpsink.Start(t, smtpsink.Options{RcptReplies: map[string]string{
		"a@example.net": "553 sorry, no such mailbox here",
		"b@example.net": "553 5.7.1 policy says no",
	}})
	d := newTestDeliverer(t, Options{})
	for _, on := range []bool{true, false} {
		dest := toSink(s)
		dest.InvalidMailbox553 = on
		res := d.Deliver(context.Background(), dest, testMsg(body1, "a@example.net", "b@example.net"))
		want := ""
		if on {
			want = "5.1.1"
		}
		if res.Rcpts[0].Reply.Code != 553 || res.Rcpts[0].Reply.Enhanced != want {
			t.Errorf("on=%v: %+v", on, res.Rcpts[0])
		}
		if res.Rcpts[1].Reply.Enhanced != "5.7.1" {
			t.Errorf("a specific enhanced code must be kept: %+v", res.Rcpts[1])
		}
	}
}

// TestDataTerminationTimeout: the content is out, the reply to the dot
// does not come in time (or the connection drops): the recipients defer,
// marked OutcomeUnknown, and the connection is not reused.
func TestDataTerminationTimeout(t *testing.T) {
	for _, tc := range []struct {
		name string
		opt  smtpsink.Options
	}{
		{"slow", smtpsink.Options{Delays: map[smtpsink.Stage]time.Duration{smtpsink.StageAfterData: 2 * time.Second}}},
		{"dropped", smtpsink.Options{CloseAt: smtpsink.StageAfterData}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := smtpsink.Start(t, tc.opt)
			d := newTestDeliverer(t, Options{})
			dest := toSink(s)
			dest.DataTerminationTimeout = 300 * time.Millisecond
			dest.MaxMsgPerConnection = 0
			res := d.Deliver(context.Background(), dest, testMsg(body1, "a@example.net"))
			r := res.Rcpts[0]
			if r.Reply.Code != 451 || r.Stage != StageDot || !r.OutcomeUnknown || !res.OutcomeUnknown || !r.Synthesized {
				t.Fatalf("%+v", r)
			}
			if !strings.Contains(r.Reply.Text, "outcome unknown") {
				t.Errorf("text %q", r.Reply.Text)
			}
			if d.IdleConns() != 0 {
				t.Error("a session with an unanswered dot was cached")
			}
		})
	}
}

func TestContentConversion(t *testing.T) {
	const eightBit = "Subject: x\r\n\r\ncaf\xc3\xa9\r\n"
	long := "Subject: x\r\n\r\n" + strings.Repeat("y", 1500) + "\r\n"
	for _, tc := range []struct {
		name       string
		ext        smtpsink.Ext
		ignore8    bool
		body       string
		declared8  bool
		downgraded bool
		bodyParam  bool // BODY=8BITMIME sent
		code       int
		enh        string
	}{
		{"8bit to 8BITMIME server", smtpsink.DefaultExt, false, eightBit, false, false, true, 250, "2.0.0"},
		{"8bit to 7bit server", smtpsink.Pipelining | smtpsink.EnhancedStatusCodes, false, eightBit, true, true, false, 250, "2.0.0"},
		{"ignore-8bitmime", smtpsink.DefaultExt, true, eightBit, true, true, false, 250, "2.0.0"},
		{"long lines always encoded", smtpsink.DefaultExt, false, long, false, true, false, 250, "2.0.0"},
		{"8bit header to 7bit server", smtpsink.Pipelining, false, "Subject: caf\xc3\xa9\r\n\r\nx\r\n", true, false, false, 554, "5.6.3"},
		{"7bit untouched", smtpsink.Pipelining, false, body1, false, false, false, 250, "2.0.0"},
		{"long header line sent as is", smtpsink.DefaultExt, false, "X-Long: " + strings.Repeat("z", 1000) + "\r\n\r\nbody\r\n", false, false, false, 250, "2.0.0"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := smtpsink.Start(t, smtpsink.Options{Ext: tc.ext})
			d := newTestDeliverer(t, Options{})
			dest := toSink(s)
			dest.Ignore8BitMIME = tc.ignore8
			msg := testMsg(tc.body, "a@example.net")
			msg.Body8bit = tc.declared8
			res := d.Deliver(context.Background(), dest, msg)
			r := res.Rcpts[0]
			if r.Reply.Code != tc.code || (r.Reply.Enhanced != tc.enh && tc.code != 250) || res.Downgraded != tc.downgraded {
				t.Fatalf("%+v downgraded=%v", r, res.Downgraded)
			}
			if tc.code != 250 {
				if len(s.Messages()) != 0 {
					t.Error("refused content was sent")
				}
				return
			}
			msgs, _ := s.WaitMessages(1, 5*time.Second)
			m := msgs[0]
			if got := slices.Contains(m.FromParams, "BODY=8BITMIME"); got != tc.bodyParam {
				t.Errorf("MAIL params %v", m.FromParams)
			}
			if tc.downgraded {
				sevenBitClean(t, m.Data)
				if !bytes.Contains(m.Data, []byte("Content-Transfer-Encoding: quoted-printable")) {
					t.Errorf("data %q", m.Data)
				}
				if slices.Contains(m.FromParams, "SIZE="+strconv.Itoa(len(tc.body))) {
					t.Errorf("SIZE is the original's, not the converted size: %v", m.FromParams)
				}
			} else if string(m.Data) != tc.body {
				t.Errorf("data changed: %q", m.Data)
			}
		})
	}
}

func TestSMTPUTF8(t *testing.T) {
	utf8Hdr := "Subject: caf\xc3\xa9\r\n\r\nx\r\n"
	for _, tc := range []struct {
		name     string
		ext      smtpsink.Ext
		body     string
		rcpt     string
		code     int
		enh      string
		sentRcpt string
	}{
		{"utf8 headers, server has SMTPUTF8", smtpsink.DefaultExt, utf8Hdr, "a@example.net", 250, "", "a@example.net"},
		{"utf8 headers, no SMTPUTF8", smtpsink.DefaultExt &^ smtpsink.SMTPUTF8, utf8Hdr, "a@example.net", 554, "5.6.7", ""},
		{"utf8 local part, no SMTPUTF8", smtpsink.DefaultExt &^ smtpsink.SMTPUTF8, body1, "j\xc3\xb6rg@example.net", 553, "5.6.7", ""},
		{"IDN domain only goes in A-labels", smtpsink.DefaultExt &^ smtpsink.SMTPUTF8, body1, "a@b\xc3\xbccher.example", 250, "", "a@xn--bcher-kva.example"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := smtpsink.Start(t, smtpsink.Options{Ext: tc.ext})
			d := newTestDeliverer(t, Options{})
			msg := testMsg(tc.body, tc.rcpt)
			msg.SMTPUTF8 = true
			res := d.Deliver(context.Background(), toSink(s), msg)
			r := res.Rcpts[0]
			if r.Reply.Code != tc.code || (tc.enh != "" && r.Reply.Enhanced != tc.enh) {
				t.Fatalf("%+v", r)
			}
			if tc.code == 250 {
				msgs, _ := s.WaitMessages(1, 5*time.Second)
				if msgs[0].Rcpts[0].Addr != tc.sentRcpt {
					t.Errorf("RCPT %q", msgs[0].Rcpts[0].Addr)
				}
				if got := slices.Contains(msgs[0].FromParams, "SMTPUTF8"); got != (tc.ext&smtpsink.SMTPUTF8 != 0) {
					t.Errorf("MAIL params %v", msgs[0].FromParams)
				}
			}
		})
	}
}

// TestSmarthostAuth: a relay that wants AUTH over TLS, as a null client
// sends through its provider's submission port.
func TestSmarthostAuth(t *testing.T) {
	newRelay := func(t *testing.T, ext smtpsink.Ext) *smtpsink.Sink {
		return smtpsink.Start(t, smtpsink.Options{Ext: ext, AuthUser: "relayuser", AuthPass: "s3cret", RequireAuth: true})
	}
	const withTLS = smtpsink.DefaultExt | smtpsink.StartTLS | smtpsink.Auth
	for _, tc := range []struct {
		name      string
		ext       smtpsink.Ext
		pass      string
		wantCode  int
		wantStage string
	}{
		{"login over STARTTLS", withTLS, "s3cret", 250, StageDot},
		{"wrong password defers", withTLS, "nope", 451, StageAuth},
		{"no TLS: credentials never sent", smtpsink.DefaultExt | smtpsink.Auth, "s3cret", 451, StageSTARTTLS},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := newRelay(t, tc.ext)
			d := newTestDeliverer(t, Options{TLSConfig: &tls.Config{RootCAs: s.CertPool()}})
			dest := toSink(s)
			dest.AuthUsername, dest.AuthPassword = "relayuser", tc.pass
			res := d.Deliver(context.Background(), dest, testMsg(body1, "a@example.net"))
			r := res.Rcpts[0]
			if r.Reply.Code != tc.wantCode || r.Stage != tc.wantStage {
				t.Fatalf("%+v", r)
			}
			conns := s.Connections()
			for _, c := range conns {
				for _, l := range c.Log {
					if strings.HasPrefix(l, "C: AUTH") && c.TLS == nil {
						t.Errorf("AUTH sent in clear: %q", l)
					}
				}
			}
			if tc.wantCode == 250 {
				msgs, _ := s.WaitMessages(1, 5*time.Second)
				if msgs[0].AuthUser != "relayuser" || msgs[0].TLS == nil {
					t.Errorf("auth %q tls %v", msgs[0].AuthUser, msgs[0].TLS)
				}
			}
		})
	}
}

// TestSmarthostImplicitTLS logs in over TLS from the first byte (port
// 465 style): a TLS terminator in front of the sink.
func TestSmarthostImplicitTLS(t *testing.T) {
	s := smtpsink.Start(t, smtpsink.Options{Ext: smtpsink.DefaultExt | smtpsink.StartTLS | smtpsink.Auth,
		AuthUser: "u", AuthPass: "p", RequireAuth: true})
	srvCfg, pool := testCert(t, "127.0.0.1")
	ln, err := tls.Listen("tcp", "127.0.0.1:0", srvCfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				b, err := net.Dial("tcp", s.Addr())
				if err != nil {
					return
				}
				defer b.Close()
				go func() { copyConn(b, c) }()
				copyConn(c, b)
			}()
		}
	}()
	d := newTestDeliverer(t, Options{TLSConfig: &tls.Config{RootCAs: pool}})
	dest := toSink(s)
	dest.Hosts[0].Port = ln.Addr().(*net.TCPAddr).Port
	dest.ImplicitTLS = true
	dest.AuthUsername, dest.AuthPassword = "u", "p"
	res := d.Deliver(context.Background(), dest, testMsg(body1, "a@example.net"))
	if !res.Rcpts[0].Delivered() || res.TLSVersion == "" {
		t.Fatalf("%+v tls %q", res.Rcpts[0], res.TLSVersion)
	}
	msgs, _ := s.WaitMessages(1, 5*time.Second)
	if msgs[0].AuthUser != "u" || msgs[0].TLS != nil {
		t.Errorf("auth %q; the sink itself must not have seen STARTTLS: %v", msgs[0].AuthUser, msgs[0].TLS)
	}
}

func copyConn(dst, src net.Conn) {
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			if tc, ok := dst.(*net.TCPConn); ok {
				tc.CloseWrite()
			} else {
				dst.Close()
			}
			return
		}
	}
}

func newResolver(t *testing.T, dns *fakedns.Server) *resolve.Resolver {
	return resolve.New(resolve.Options{Servers: []string{dns.Addr()}, Timeout: time.Second})
}

// TestIPv6MX delivers to an MX host with only an AAAA record, from the
// IPv6 source when both families have one.
func TestIPv6MX(t *testing.T) {
	if ln, err := net.Listen("tcp", "[::1]:0"); err != nil {
		t.Skipf("no IPv6 loopback: %v", err)
	} else {
		ln.Close()
	}
	s := smtpsink.Start(t, smtpsink.Options{Addr: "[::1]:0"})
	dns := fakedns.Start(t)
	if err := dns.Add("v6.example. MX 10 mx6.v6.example.", "mx6.v6.example. AAAA ::1"); err != nil {
		t.Fatal(err)
	}
	d := newTestDeliverer(t, Options{Resolver: newResolver(t, dns)})
	dest := Destination{Domain: "v6.example", Port: s.Port(), CommandTimeout: 5 * time.Second, MaxMsgPerConnection: 1,
		SourceIP4: netip.MustParseAddr("127.0.0.1"), SourceIP6: netip.MustParseAddr("::1")}
	res := d.Deliver(context.Background(), dest, testMsg(body1, "u@v6.example"))
	if !res.Rcpts[0].Delivered() || res.IP != netip.MustParseAddr("::1") || res.SourceIP != netip.MustParseAddr("::1") {
		t.Fatalf("%+v ip %v src %v", res.Rcpts[0], res.IP, res.SourceIP)
	}
	// Only an IPv4 source: the IPv6-only MX is not dialled from elsewhere.
	dest.SourceIP6 = netip.Addr{}
	res = d.Deliver(context.Background(), dest, testMsg(body1, "u@v6.example"))
	if r := res.Rcpts[0]; r.Reply.Code != 451 || r.Reply.Enhanced != "4.4.4" {
		t.Fatalf("%+v", r)
	}
}

func TestIDNDomain(t *testing.T) {
	s := smtpsink.Start(t, smtpsink.Options{})
	dns := fakedns.Start(t)
	if err := dns.Add("xn--bcher-kva.example. MX 10 mx.xn--bcher-kva.example.", "mx.xn--bcher-kva.example. A 127.0.0.1"); err != nil {
		t.Fatal(err)
	}
	d := newTestDeliverer(t, Options{Resolver: newResolver(t, dns)})
	dest := Destination{Domain: "B\xc3\xbccher.example", Port: s.Port(), CommandTimeout: 5 * time.Second, MaxMsgPerConnection: 1}
	res := d.Deliver(context.Background(), dest, testMsg(body1, "u@b\xc3\xbccher.example"))
	if !res.Rcpts[0].Delivered() || res.Host != "mx.xn--bcher-kva.example" {
		t.Fatalf("%+v host %q", res.Rcpts[0], res.Host)
	}
	if dns.QueryCount("xn--bcher-kva.example", "MX") != 1 {
		t.Errorf("queries %+v", dns.Queries())
	}
	dest.Domain = "xn--a.example\xc3\xbc-"
	res = d.Deliver(context.Background(), dest, testMsg(body1, "u@x"))
	if r := res.Rcpts[0]; r.Reply.Code != 550 || r.Reply.Enhanced != "5.1.2" {
		t.Errorf("invalid IDN: %+v", r)
	}
}

// TestMXLoop: an MX host that is this MTA ends the list there; as the
// best MX it is a loop and bounces 5.4.6 (RFC 5321 5.1).
func TestMXLoop(t *testing.T) {
	s := smtpsink.Start(t, smtpsink.Options{})
	dns := fakedns.Start(t)
	if err := dns.Add(
		"self.example. MX 10 me.example.",
		"eq.example. MX 10 me.example.", "eq.example. MX 10 other.example.",
		"worse.example. MX 10 other.example.", "worse.example. MX 20 me.example.",
		"implicit.example. A 127.0.0.9",
		"me.example. A 127.0.0.9", "other.example. A 127.0.0.1",
	); err != nil {
		t.Fatal(err)
	}
	d := newTestDeliverer(t, Options{Resolver: newResolver(t, dns)})
	isSelf := func(ip netip.Addr, port int) bool { return ip == netip.MustParseAddr("127.0.0.9") && port == s.Port() }
	for _, tc := range []struct {
		domain string
		code   int
	}{{"self.example", 554}, {"eq.example", 554}, {"implicit.example", 554}, {"worse.example", 250}} {
		for i := 0; i < 5; i++ { // eq.example's order is shuffled
			dest := Destination{Domain: tc.domain, Port: s.Port(), CommandTimeout: 5 * time.Second, MaxMsgPerConnection: 1, IsSelf: isSelf}
			res := d.Deliver(context.Background(), dest, testMsg(body1, "u@"+tc.domain))
			r := res.Rcpts[0]
			if r.Reply.Code != tc.code || (tc.code == 554 && (r.Reply.Enhanced != "5.4.6" || !strings.Contains(r.Reply.Text, "loops back to myself"))) {
				t.Fatalf("%s: %+v", tc.domain, r)
			}
		}
	}
	// The same MX set without the check is dialled (and fails to connect).
	dest := Destination{Domain: "self.example", Port: s.Port(), CommandTimeout: 5 * time.Second, ConnectTimeout: time.Second}
	if r := d.Deliver(context.Background(), dest, testMsg(body1, "u@self.example")).Rcpts[0]; r.Reply.Code/100 != 4 {
		t.Errorf("without IsSelf: %+v", r)
	}
}

func TestListenerSelf(t *testing.T) {
	self := ListenerSelf([]netip.AddrPort{netip.MustParseAddrPort("0.0.0.0:25"), netip.MustParseAddrPort("192.0.2.7:587")})
	for _, tc := range []struct {
		ip   string
		port int
		want bool
	}{
		{"127.0.0.1", 25, true}, {"127.0.0.2", 25, true}, {"::1", 25, true},
		{"127.0.0.1", 2525, false}, {"192.0.2.7", 587, true}, {"192.0.2.8", 587, false},
		{"198.51.100.1", 25, false},
	} {
		if got := self(netip.MustParseAddr(tc.ip), tc.port); got != tc.want {
			t.Errorf("%s:%d = %v", tc.ip, tc.port, got)
		}
	}
}

// TestMaxAddrsPerAttempt: a domain with many dead addresses costs at most
// MaxAddrs connection attempts per Deliver.
func TestMaxAddrsPerAttempt(t *testing.T) {
	dns := fakedns.Start(t)
	if err := dns.Add("many.example. MX 10 a.many.example.", "many.example. MX 20 b.many.example.",
		"a.many.example. A 192.0.2.1", "a.many.example. A 192.0.2.2", "a.many.example. A 192.0.2.3",
		"b.many.example. A 192.0.2.4", "b.many.example. A 192.0.2.5"); err != nil {
		t.Fatal(err)
	}
	var dialled []netip.AddrPort
	dial := func(ctx context.Context, laddr netip.Addr, raddr netip.AddrPort) (net.Conn, error) {
		dialled = append(dialled, raddr)
		return nil, errRefused
	}
	d := newTestDeliverer(t, Options{Resolver: newResolver(t, dns), Dial: dial, MaxAddrs: 4})
	res := d.Deliver(context.Background(), Destination{Domain: "many.example"}, testMsg(body1, "u@many.example"))
	if r := res.Rcpts[0]; r.Reply.Code != 451 || r.Reply.Enhanced != "4.4.1" {
		t.Errorf("%+v", r)
	}
	if len(dialled) != 4 || dialled[3].Addr() != netip.MustParseAddr("192.0.2.4") {
		t.Errorf("dialled %v", dialled)
	}
}

// TestBareAddressesQualified: a null client's "root" goes out as
// root@host-name, in the envelope.
func TestBareAddressesQualified(t *testing.T) {
	s := smtpsink.Start(t, smtpsink.Options{})
	d := newTestDeliverer(t, Options{})
	dest := toSink(s)
	dest.QualifyDomain = "host.example.org"
	msg := testMsg(body1, "admin", "b@example.net")
	msg.From = "root"
	if res := d.Deliver(context.Background(), dest, msg); !res.Rcpts[0].Delivered() || !res.Rcpts[1].Delivered() {
		t.Fatalf("%+v", res.Rcpts)
	}
	msg = testMsg(body1, "c@example.net")
	msg.From = ""
	d.Deliver(context.Background(), dest, msg)
	msgs, _ := s.WaitMessages(2, 5*time.Second)
	if msgs[0].From != "root@host.example.org" || strings.Join(msgs[0].Recipients(), ",") != "admin@host.example.org,b@example.net" {
		t.Errorf("envelope %q %v", msgs[0].From, msgs[0].Recipients())
	}
	if msgs[1].From != "" {
		t.Errorf("null sender qualified: %q", msgs[1].From)
	}
}

// TestEqualPreferenceSpreadAndCNAMEdMX: two MX hosts of one preference
// (one of them a CNAME) both get mail over many deliveries; a worse one
// gets none while they answer.
func TestEqualPreferenceSpreadAndCNAMEdMX(t *testing.T) {
	a := smtpsink.Start(t, smtpsink.Options{})
	b, err := smtpsink.New(smtpsink.Options{Addr: "127.0.0.2:" + strconv.Itoa(a.Port())})
	if err != nil {
		t.Skipf("second loopback address: %v", err)
	}
	t.Cleanup(b.Close)
	dns := fakedns.Start(t)
	if err := dns.Add(
		"spread.example. MX 10 a.spread.example.", "spread.example. MX 10 alias.spread.example.",
		"spread.example. MX 50 never.spread.example.",
		"a.spread.example. A 127.0.0.1",
		"alias.spread.example. CNAME b.elsewhere.example.", "b.elsewhere.example. A 127.0.0.2",
		"never.spread.example. A 127.0.0.3",
	); err != nil {
		t.Fatal(err)
	}
	d := newTestDeliverer(t, Options{Resolver: newResolver(t, dns)})
	const n = 40
	for i := 0; i < n; i++ {
		dest := Destination{Domain: "spread.example", Port: a.Port(), CommandTimeout: 5 * time.Second, MaxMsgPerConnection: 1}
		if r := d.Deliver(context.Background(), dest, testMsg(body1, "u@spread.example")).Rcpts[0]; !r.Delivered() {
			t.Fatalf("%+v", r)
		}
	}
	na, nb := len(a.Messages()), len(b.Messages())
	if na+nb != n || na < 5 || nb < 5 {
		t.Errorf("spread %d/%d over equal MX hosts", na, nb)
	}
}
