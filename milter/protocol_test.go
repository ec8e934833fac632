package milter

import (
	"bytes"
	"context"
	"encoding/binary"
	"io"
	"slices"
	"strings"
	"testing"
	"time"
)

func noMacros() map[Stage][]string {
	m := map[Stage][]string{}
	for st := StageConnect; st <= StageUnknown; st++ {
		m[st] = nil
	}
	return m
}

var testHeader = []HeaderField{
	{Name: "Received", Value: " from client (client [192.0.2.1])\r\n\tby mta.test; Sun, 29 Nov 2026 10:00:00 +0000", Hidden: true},
	{Name: "Subject", Value: " hello\r\n world"},
	{Name: "From", Value: " a@example.org"},
}

func testInfo() ConnInfo {
	return ConnInfo{Hostname: "mx.example.org", Addr: "192.0.2.1", Port: 4242, Helo: "client.example.org",
		Macros: map[string]string{"j": "mta.test", "{daemon_name}": "sluice-test", "v": "sluice 1"}}
}

// runTx drives one whole SMTP session with one message.
func runTx(t *testing.T, c *Chain, info ConnInfo, body string) (Result, []Decision) {
	t.Helper()
	s, d0 := c.Begin(context.Background(), info)
	defer s.Close()
	s.SetMacro("i", "Q1")
	ds := []Decision{d0, s.Mail("a@example.org", []string{"SIZE=100"}), s.Rcpt("b@example.net", nil), s.Data()}
	res, err := s.Message(testHeader, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	return res, ds
}

func TestFullConversationV6(t *testing.T) {
	var optneg, connect []byte
	f := startFake(t, func(c *fakeConn) {
		cmd, data, err := c.read()
		if err != nil || cmd != cmdOptneg {
			return
		}
		optneg = data
		c.write(cmdOptneg, u32(6), u32(allActions), u32(0))
		c.serve(func(cmd byte, data []byte) [][]byte {
			if cmd == cmdConnect {
				connect = slices.Clone(data)
			}
			return continueAll(cmd, data)
		})
	})
	c := mustChain(t, cfgFor(f.socket))
	res, ds := runTx(t, c, testInfo(), "line1\r\nline2\r\n")
	for i, d := range ds {
		if d.Verdict != Continue {
			t.Errorf("stage %d: %+v", i, d)
		}
	}
	if res.Decision.Verdict != Continue || res.Quarantine != "" {
		t.Errorf("result %+v", res)
	}
	want := []string{
		"O",
		"DC j mta.test {daemon_name} sluice-test v sluice 1 _ mx.example.org [192.0.2.1]",
		"C",
		"H client.example.org",
		"DM i Q1 {mail_addr} a@example.org {mail_host} example.org {mail_mailer} smtp",
		"M <a@example.org>|SIZE=100",
		"DR i Q1 {rcpt_addr} b@example.net {rcpt_host} example.net {rcpt_mailer} smtp",
		"R <b@example.net>",
		"DT i Q1", "T",
		"DL i Q1", "L Subject|hello\n world",
		"DL i Q1", "L From|a@example.org",
		"DN i Q1", "N",
		"DB i Q1", "B 14",
		"DE i Q1", "E",
		"Q",
	}
	waitLog(t, f, want)
	wantOpt := slices.Concat(u32(6), u32(0x1ff), u32(protoMaskV6))
	if !bytes.Equal(optneg, wantOpt) {
		t.Errorf("OPTNEG %x, want %x", optneg, wantOpt)
	}
	wantConn := slices.Concat([]byte("mx.example.org\x00"), []byte{'4', 0x10, 0x92}, []byte("192.0.2.1\x00"))
	if !bytes.Equal(connect, wantConn) {
		t.Errorf("CONNECT %q, want %q", connect, wantConn)
	}
}

// waitLog compares the fake's log once the session's QUIT arrived.
func waitLog(t *testing.T, f *fakeMilter, want []string) {
	t.Helper()
	deadline := time.Now().Add(2 * time.Second)
	for time.Now().Before(deadline) && len(f.commands()) < len(want) {
		time.Sleep(5 * time.Millisecond)
	}
	if got := f.commands(); !slices.Equal(got, want) {
		t.Errorf("milter saw\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

func TestNothingSentToMilterThatNeedsNothing(t *testing.T) {
	all := uint32(pNoConnect | pNoHelo | pNoMail | pNoRcpt | pNoBody | pNoHdrs | pNoEOH | pNoUnknown | pNoData)
	f := startFake(t, func(c *fakeConn) {
		if c.negotiate(6, 0, all) == nil {
			c.serve(continueAll)
		}
	})
	c := mustChain(t, cfgFor(f.socket, func(c *Config) { c.Macros = noMacros() }))
	s, _ := c.Begin(context.Background(), testInfo())
	s.Mail("a@example.org", nil)
	s.Rcpt("b@example.net", nil)
	s.Unknown("XYZZY")
	s.Data()
	if res, err := s.Message(testHeader, strings.NewReader("x\r\n")); err != nil || res.Decision.Verdict != Continue {
		t.Fatal(res, err)
	}
	s.Close()
	waitLog(t, f, []string{"O", "E", "Q"})
}

func TestOlderVersionsGetOnlyTheirEvents(t *testing.T) {
	for _, tc := range []struct {
		offer, milter int
		want          []string
	}{
		{6, 2, []string{"O", "C", "H client.example.org", "M <a@example.org>", "R <b@example.net>", "N", "E", "Q"}},
		{6, 3, []string{"O", "C", "H client.example.org", "M <a@example.org>", "R <b@example.net>", "U XYZZY", "N", "E", "Q"}},
		{4, 4, []string{"O", "C", "H client.example.org", "M <a@example.org>", "R <b@example.net>", "U XYZZY", "T", "N", "E", "Q"}},
		{2, 2, []string{"O", "C", "H client.example.org", "M <a@example.org>", "R <b@example.net>", "N", "E", "Q"}},
	} {
		var offered []byte
		f := startFake(t, func(c *fakeConn) {
			_, data, err := c.read()
			if err != nil {
				return
			}
			offered = data
			c.write(cmdOptneg, u32(uint32(tc.milter)), u32(actAddHdrs), u32(0))
			c.serve(continueAll)
		})
		c := mustChain(t, cfgFor(f.socket, func(c *Config) { c.Macros = noMacros(); c.Protocol = tc.offer }))
		s, _ := c.Begin(context.Background(), testInfo())
		s.Mail("a@example.org", nil)
		s.Rcpt("b@example.net", nil)
		s.Unknown("XYZZY")
		s.Data()
		if _, err := s.Message(nil, strings.NewReader("")); err != nil {
			t.Fatal(err)
		}
		s.Close()
		waitLog(t, f, tc.want)
		if want := slices.Concat(u32(uint32(tc.offer)), u32(0x1ff), u32(protoMask(tc.offer))); !bytes.Equal(offered, want) {
			t.Errorf("offer %d: OPTNEG %x, want %x", tc.offer, offered, want)
		}
	}
}

func TestConnectFamilies(t *testing.T) {
	for _, tc := range []struct {
		info ConnInfo
		want []byte
	}{
		{ConnInfo{Hostname: "h", Addr: "/run/client.sock"}, []byte("h\x00L\x00\x00/run/client.sock\x00")},
		{ConnInfo{Hostname: "h6", Addr: "2001:db8::1", Port: 25}, []byte("h6\x006\x00\x192001:db8::1\x00")},
		{ConnInfo{Addr: "192.0.2.7", Port: 1}, []byte("[192.0.2.7]\x004\x00\x01192.0.2.7\x00")},
		{ConnInfo{Hostname: "x"}, []byte("x\x00U")},
		{LocalConnInfo(), []byte("localhost\x004\x00\x00127.0.0.1\x00")},
	} {
		got := make(chan []byte, 1)
		f := startFake(t, func(c *fakeConn) {
			if c.negotiate(6, 0, 0) != nil {
				return
			}
			c.serve(func(cmd byte, data []byte) [][]byte {
				if cmd == cmdConnect {
					got <- slices.Clone(data)
				}
				return continueAll(cmd, data)
			})
		})
		c := mustChain(t, cfgFor(f.socket))
		s, _ := c.Begin(context.Background(), tc.info)
		s.Close()
		if g := <-got; !bytes.Equal(g, tc.want) {
			t.Errorf("%+v: CONNECT %q, want %q", tc.info, g, tc.want)
		}
	}
}

func TestNoReplyStepsAndLeadingSpace(t *testing.T) {
	nr := uint32(pNRConn | pNRHelo | pNRMail | pNRRcpt | pNRData | pNRHdr | pNREOH | pNRBody | pNRUnkn | pHdrLeadSpc)
	f := startFake(t, func(c *fakeConn) {
		if c.negotiate(6, actAddHdrs|actChgHdrs, nr) != nil {
			return
		}
		c.serve(func(cmd byte, data []byte) [][]byte {
			if cmd != cmdEOB {
				return nil // never reply: NR_* negotiated
			}
			return [][]byte{
				rep(repAddHeader, cstrings("X-Lead", "nospace")),
				rep(repChgHeader, u32(1), cstrings("Subject", " changed")),
				{repAccept},
			}
		})
	})
	c := mustChain(t, cfgFor(f.socket, func(c *Config) { c.Macros = noMacros() }))
	res, ds := runTx(t, c, testInfo(), "body\r\n")
	for _, d := range ds {
		if d.Verdict != Continue {
			t.Fatalf("%+v", d)
		}
	}
	waitLog(t, f, []string{"O", "C", "H client.example.org", "M <a@example.org>|SIZE=100", "R <b@example.net>", "T",
		"L Subject| hello\n world", "L From| a@example.org", "N", "B 6", "E", "Q"})
	want := []HeaderField{testHeader[0], {Name: "Subject", Value: " changed"}, testHeader[2], {Name: "X-Lead", Value: "nospace"}}
	if !slices.Equal(res.Header, want) {
		t.Errorf("header %+v, want %+v", res.Header, want)
	}
}

func TestSkipStopsBodyChunks(t *testing.T) {
	f := startFake(t, func(c *fakeConn) {
		if c.negotiate(6, 0, pSkip) != nil {
			return
		}
		c.serve(func(cmd byte, data []byte) [][]byte {
			if cmd == cmdBody {
				return [][]byte{{repSkip}}
			}
			return continueAll(cmd, data)
		})
	})
	c := mustChain(t, cfgFor(f.socket, func(c *Config) { c.Macros = noMacros() }))
	body := strings.Repeat("0123456789abcdefghijklmnopqrstuvwxyz\r\n", 6000) // 228000 bytes
	res, _ := runTx(t, c, testInfo(), body)
	if res.Decision.Verdict != Continue {
		t.Fatal(res.Decision)
	}
	got := f.commands()
	if n := strings.Count(strings.Join(got, ","), "B "); n != 1 || !slices.Contains(got, "B 65535") {
		t.Errorf("after SKIP the milter got %d chunks: %v", n, got)
	}
}

func TestBodyChunks(t *testing.T) {
	f := startFake(t, func(c *fakeConn) {
		if c.negotiate(6, 0, pNoHdrs|pNoConnect|pNoHelo|pNoMail|pNoRcpt|pNoData|pNoEOH) == nil {
			c.serve(continueAll)
		}
	})
	c := mustChain(t, cfgFor(f.socket, func(c *Config) { c.Macros = noMacros() }))
	body := strings.Repeat("x", 3*ChunkSize+10)
	runTx(t, c, testInfo(), body)
	waitLog(t, f, []string{"O", "B 65535", "B 65535", "B 65535", "B 10", "E", "Q"})
}

func TestSetSymList(t *testing.T) {
	f := startFake(t, func(c *fakeConn) {
		if c.negotiate(6, actSetSymList, pNoConnect|pNoHelo|pNoHdrs|pNoEOH|pNoBody|pNoData,
			StageMail, "{mail_addr} {auth_type}", StageRcpt, "{rcpt_addr}", StageEOM, "j") == nil {
			c.serve(continueAll)
		}
	})
	c := mustChain(t, cfgFor(f.socket))
	info := testInfo()
	info.Macros["auth_type"] = "PLAIN"
	runTx(t, c, info, "x\r\n")
	waitLog(t, f, []string{"O",
		"DC j mta.test {daemon_name} sluice-test v sluice 1 _ mx.example.org [192.0.2.1]",
		"DM {mail_addr} a@example.org {auth_type} PLAIN", "M <a@example.org>|SIZE=100",
		"DR {rcpt_addr} b@example.net", "R <b@example.net>",
		"DT i Q1",
		"DE j mta.test", "E", "Q"})
}

func TestV6Modifications(t *testing.T) {
	all := uint32(allActions)
	f := startFake(t, func(c *fakeConn) {
		if c.negotiate(6, all, 0) != nil {
			return
		}
		c.serve(func(cmd byte, data []byte) [][]byte {
			if cmd != cmdEOB {
				return continueAll(cmd, data)
			}
			return [][]byte{
				{repProgress},
				rep(repChgFrom, cstrings("<new@example.org>", "RET=HDRS ENVID=x")),
				rep(repAddRcptPar, cstrings("<c@example.net>", "NOTIFY=NEVER")),
				rep(repAddRcpt, cstrings("<d@example.net>")),
				rep(repDelRcpt, cstrings("<b@example.net>")),
				rep(repReplBody, []byte("new\nbody")),
				{repProgress},
				rep(repReplBody, []byte(" part two\n")),
				rep(repQuarantine, cstrings("looks odd")),
				rep(repInsHeader, u32(0), cstrings("X-Top", "first")),
				{repContinue},
			}
		})
	})
	c := mustChain(t, cfgFor(f.socket))
	res, _ := runTx(t, c, testInfo(), "old\r\n")
	if res.Decision.Verdict != Continue {
		t.Fatal(res.Decision)
	}
	if !res.SenderChanged || res.Sender != "new@example.org" || !slices.Equal(res.SenderArgs, []string{"RET=HDRS", "ENVID=x"}) {
		t.Errorf("sender %q %q %v", res.Sender, res.SenderArgs, res.SenderChanged)
	}
	wantR := []Recipient{{Addr: "c@example.net", Args: []string{"NOTIFY=NEVER"}}, {Addr: "d@example.net"}}
	if len(res.Recipients) != 2 || res.Recipients[0].Addr != wantR[0].Addr || !slices.Equal(res.Recipients[0].Args, wantR[0].Args) || res.Recipients[1].Addr != wantR[1].Addr {
		t.Errorf("recipients %+v, want %+v", res.Recipients, wantR)
	}
	if !slices.Equal(res.Deleted, []string{"b@example.net"}) || len(res.Added) != 2 {
		t.Errorf("added %+v deleted %v", res.Added, res.Deleted)
	}
	if !res.BodyReplaced || string(res.Body) != "new\r\nbody part two\r\n" {
		t.Errorf("body %q", res.Body)
	}
	if res.Quarantine != "looks odd" {
		t.Errorf("quarantine %q", res.Quarantine)
	}
	if res.Header[0].Name != "X-Top" || res.Header[0].Value != " first" || !res.Header[1].Hidden {
		t.Errorf("header %+v", res.Header)
	}
}

func TestCustomReplies(t *testing.T) {
	for _, tc := range []struct {
		text    string
		verdict Verdict
		reply   string
	}{
		{"550 5.7.1 go away", Reject, "550 5.7.1 go away"},
		{"451 4.7.0 later, 100%% sure", Tempfail, "451 4.7.0 later, 100% sure"},
		{"554-5.7.1 line one\r\n554 5.7.1 line two", Reject, "554-5.7.1 line one\r\n554 5.7.1 line two"},
		{"421 no enhanced code", Tempfail, "421 no enhanced code"},
		// Malformed: a configuration problem, default action tempfail.
		{"250 ok", Tempfail, "451 4.3.5 Server configuration problem - try again later"},
		{"550 4.7.1 class mismatch", Tempfail, "451 4.3.5 Server configuration problem - try again later"},
		{"550-first\n550 bare LF", Tempfail, "451 4.3.5 Server configuration problem - try again later"},
	} {
		f := startFake(t, func(c *fakeConn) {
			if c.negotiate(6, 0, 0) != nil {
				return
			}
			c.serve(func(cmd byte, data []byte) [][]byte {
				if cmd == cmdRcpt {
					return [][]byte{rep(repReplyCode, cstrings(tc.text))}
				}
				return continueAll(cmd, data)
			})
		})
		c := mustChain(t, cfgFor(f.socket))
		s, _ := c.Begin(context.Background(), testInfo())
		s.Mail("a@example.org", nil)
		d := s.Rcpt("b@example.net", nil)
		s.Close()
		if d.Verdict != tc.verdict || d.Reply() != tc.reply {
			t.Errorf("%q: got %v %q, want %v %q", tc.text, d.Verdict, d.Reply(), tc.verdict, tc.reply)
		}
	}
}

func TestOptnegEncoding(t *testing.T) {
	b := slices.Concat(u32(6), u32(3), u32(5), u32(2), []byte("{a} b\x00"), u32(99), []byte("x\x00"))
	n, err := parseOptneg(b)
	if err != nil || n.version != 6 || n.actions != 3 || n.protocol != 5 || !slices.Equal(n.macros[StageMail], []string{"{a}", "b"}) || len(n.macros) != 1 {
		t.Fatalf("%+v %v", n, err)
	}
	if _, err := parseOptneg(b[:14]); err == nil {
		t.Error("truncated macro list accepted")
	}
	var hdr [4]byte
	binary.BigEndian.PutUint32(hdr[:], 0)
	if _, err := readPacket(bytes.NewReader(hdr[:])); err == nil {
		t.Error("zero-length packet accepted")
	}
}

func TestShutdownSticks(t *testing.T) {
	f := startFake(t, func(c *fakeConn) {
		if c.negotiate(6, 0, 0) != nil {
			return
		}
		c.serve(func(cmd byte, data []byte) [][]byte {
			if cmd == cmdMail {
				return [][]byte{{repShutdown}}
			}
			return continueAll(cmd, data)
		})
	})
	c := mustChain(t, cfgFor(f.socket))
	s, _ := c.Begin(context.Background(), testInfo())
	defer s.Close()
	for i := 0; i < 2; i++ {
		if d := s.Mail("a@example.org", nil); d.Verdict != Shutdown || d.Reply() != "421 4.7.0 Server closing connection" {
			t.Errorf("MAIL %d: %+v", i, d)
		}
	}
	if n := f.connections(); n != 1 {
		t.Errorf("%d connections after shutdown; a shutdown is not a failure to retry", n)
	}
}

func TestRejectedRcptOnlyToMiltersThatAsk(t *testing.T) {
	mk := func(proto uint32) *fakeMilter {
		return startFake(t, func(c *fakeConn) {
			if c.negotiate(6, 0, proto) == nil {
				c.serve(continueAll)
			}
		})
	}
	wants, plain := mk(pRcptRej|pNoConnect|pNoHelo), mk(pNoConnect|pNoHelo)
	c := mustChain(t, cfgFor(wants.socket, func(c *Config) { c.Macros = map[Stage][]string{StageConnect: nil, StageMail: nil} }),
		cfgFor(plain.socket, func(c *Config) { c.Macros = noMacros() }))
	s, _ := c.Begin(context.Background(), testInfo())
	s.Mail("a@example.org", nil)
	s.RejectedRcpt("x@example.com", nil, "554 5.7.1 <x@example.com>: Relay access denied")
	s.Rcpt("b@example.net", nil)
	s.Abort()
	s.Close()
	waitLog(t, wants, []string{"O", "M <a@example.org>",
		"DR {rcpt_addr} Relay access denied {rcpt_host} 5.7.1 {rcpt_mailer} error", "R <x@example.com>",
		"DR {rcpt_addr} b@example.net {rcpt_host} example.net {rcpt_mailer} smtp", "R <b@example.net>",
		"A", "Q"})
	waitLog(t, plain, []string{"O", "M <a@example.org>", "R <b@example.net>", "A", "Q"})
}

func TestEarlyQuarantineHoldsAndChainGoesOn(t *testing.T) {
	f := startFake(t, func(c *fakeConn) {
		if c.negotiate(6, actQuarantine, 0) != nil {
			return
		}
		c.serve(func(cmd byte, data []byte) [][]byte {
			if cmd == cmdRcpt {
				return [][]byte{rep(repQuarantine, cstrings("rcpt looked odd")), {repContinue}}
			}
			return continueAll(cmd, data)
		})
	})
	g := startFake(t, func(c *fakeConn) {
		if c.negotiate(6, 0, 0) == nil {
			c.serve(continueAll)
		}
	})
	c := mustChain(t, cfgFor(f.socket), cfgFor(g.socket, func(c *Config) { c.Macros = noMacros() }))
	res, ds := runTx(t, c, testInfo(), "x\r\n")
	if ds[2].Verdict != Continue || res.Quarantine != "rcpt looked odd" || res.Decision.Verdict != Continue || len(res.Recipients) != 1 {
		t.Errorf("rcpt %+v result %+v", ds[2], res)
	}
	if !slices.Contains(g.commands(), "E") {
		t.Error("second milter did not get the message")
	}
}

func TestSimulatedSubmission(t *testing.T) {
	f := startFake(t, func(c *fakeConn) {
		if c.negotiate(6, 0, pNoHdrs|pNoBody|pNoEOH) != nil {
			return
		}
		c.serve(func(cmd byte, data []byte) [][]byte {
			if cmd == cmdRcpt && strings.HasPrefix(string(data), "bad@") {
				return [][]byte{{repReject}}
			}
			return continueAll(cmd, data)
		})
	})
	c := mustChain(t, cfgFor(f.socket, func(c *Config) { c.Macros = noMacros() }))
	res, err := c.Filter(context.Background(), ConnInfo{}, "root@example.org", []Recipient{{Addr: "ok@example.net"}}, testHeader, strings.NewReader("x\r\n"))
	if err != nil || res.Decision.Verdict != Continue {
		t.Fatal(res, err)
	}
	// Postfix passes non-SMTP addresses without angle brackets.
	waitLog(t, f, []string{"O", "C", "H localhost", "M root@example.org", "R ok@example.net", "T", "E", "Q"})
	f.reset()
	res, err = c.Filter(context.Background(), ConnInfo{}, "", []Recipient{{Addr: "bad@example.net"}}, testHeader, strings.NewReader("x\r\n"))
	if err != nil || res.Decision.Reply() != "451 4.3.5 Server configuration error" {
		t.Fatalf("rejected simulated RCPT: %+v %v", res.Decision, err)
	}
	// The null sender is an empty string.
	waitLog(t, f, []string{"O", "C", "H localhost", "M ", "R bad@example.net", "A", "Q"})
}

func TestHeloInTransactionAborts(t *testing.T) {
	f := startFake(t, func(c *fakeConn) {
		if c.negotiate(6, 0, 0) == nil {
			c.serve(continueAll)
		}
	})
	c := mustChain(t, cfgFor(f.socket, func(c *Config) { c.Macros = noMacros() }))
	s, _ := c.Begin(context.Background(), ConnInfo{Hostname: "h", Addr: "192.0.2.9"})
	s.Abort() // no transaction: nothing sent
	s.Helo("one")
	s.Mail("a@example.org", nil)
	s.Helo("two")
	s.Close()
	waitLog(t, f, []string{"O", "C", "H one", "M <a@example.org>", "A", "H two", "Q"})
}

func TestRejectAbortsTheRestOfTheChain(t *testing.T) {
	rejecter := startFake(t, func(c *fakeConn) {
		if c.negotiate(6, 0, 0) != nil {
			return
		}
		c.serve(func(cmd byte, data []byte) [][]byte {
			if cmd == cmdHeader {
				return [][]byte{{repReject}}
			}
			return continueAll(cmd, data)
		})
	})
	after := startFake(t, func(c *fakeConn) {
		if c.negotiate(6, 0, 0) == nil {
			c.serve(continueAll)
		}
	})
	c := mustChain(t, cfgFor(rejecter.socket, func(c *Config) { c.Macros = noMacros() }), cfgFor(after.socket, func(c *Config) { c.Macros = noMacros() }))
	res, _ := runTx(t, c, testInfo(), "x\r\n")
	if res.Decision.Verdict != Reject {
		t.Fatal(res.Decision)
	}
	waitLog(t, after, []string{"O", "C", "H client.example.org", "M <a@example.org>|SIZE=100", "R <b@example.net>", "T", "A", "Q"})
}

// TestUnseekableBodyReachesEveryMilter: the body is read once; a milter
// that skips part of it does not shorten what the next one gets.
func TestUnseekableBodyReachesEveryMilter(t *testing.T) {
	skipper := startFake(t, func(c *fakeConn) {
		if c.negotiate(6, 0, pSkip|pNoHdrs|pNoEOH) != nil {
			return
		}
		c.serve(func(cmd byte, data []byte) [][]byte {
			if cmd == cmdBody {
				return [][]byte{{repSkip}}
			}
			return continueAll(cmd, data)
		})
	})
	var got bytes.Buffer
	reader := startFake(t, func(c *fakeConn) {
		if c.negotiate(6, 0, pNoHdrs|pNoEOH|pNoConnect|pNoHelo|pNoMail|pNoRcpt|pNoData) != nil {
			return
		}
		c.serve(func(cmd byte, data []byte) [][]byte {
			if cmd == cmdBody {
				got.Write(data)
			}
			return continueAll(cmd, data)
		})
	})
	c := mustChain(t, cfgFor(skipper.socket, func(c *Config) { c.Macros = noMacros() }), cfgFor(reader.socket, func(c *Config) { c.Macros = noMacros() }))
	body := strings.Repeat("abcdefghij\r\n", 20000)
	s, _ := c.Begin(context.Background(), testInfo())
	s.Mail("a@example.org", nil)
	s.Rcpt("b@example.net", nil)
	if _, err := s.Message(testHeader, io.MultiReader(strings.NewReader(body))); err != nil {
		t.Fatal(err)
	}
	s.Close()
	waitLog(t, reader, []string{"O", "B 65535", "B 65535", "B 65535", "B 43395", "E", "Q"})
	if got.String() != body {
		t.Errorf("second milter got %d bytes, want %d", got.Len(), len(body))
	}
}

func TestHeloTLSMacros(t *testing.T) {
	f := startFake(t, func(c *fakeConn) {
		if c.negotiate(6, 0, pNoConnect) == nil {
			c.serve(continueAll)
		}
	})
	m := noMacros()
	m[StageHelo] = DefaultMacros()[StageHelo]
	c := mustChain(t, cfgFor(f.socket, func(c *Config) { c.Macros = m }))
	info := testInfo()
	info.TLS = &TLSInfo{Version: "TLSv1.3", Cipher: "TLS_AES_128_GCM_SHA256", CipherBits: 128, CertSubject: "client.example.org", CertIssuer: "Test CA"}
	s, _ := c.Begin(context.Background(), info)
	s.Close()
	waitLog(t, f, []string{"O",
		"DH {tls_version} TLSv1.3 {cipher} TLS_AES_128_GCM_SHA256 {cipher_bits} 128 {cert_subject} client.example.org {cert_issuer} Test CA",
		"H client.example.org", "Q"})
}

func TestQuarantineDuringHeaders(t *testing.T) {
	f := startFake(t, func(c *fakeConn) {
		if c.negotiate(6, actQuarantine, 0) != nil {
			return
		}
		c.serve(func(cmd byte, data []byte) [][]byte {
			if cmd == cmdEOH {
				return [][]byte{rep(repQuarantine, cstrings("header smell")), {repContinue}}
			}
			return continueAll(cmd, data)
		})
	})
	c := mustChain(t, cfgFor(f.socket))
	res, _ := runTx(t, c, testInfo(), "x\r\n")
	if res.Quarantine != "header smell" || res.Decision.Verdict != Continue {
		t.Errorf("%+v", res)
	}
}
