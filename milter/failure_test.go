package milter

import (
	"context"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// defaultReplies is what each default action gives after an I/O failure.
var defaultReplies = map[Action]struct {
	verdict Verdict
	reply   string
	hold    bool
}{
	ActionAccept:     {Continue, "", false},
	ActionTempfail:   {Tempfail, "451 4.7.1 Service unavailable - try again later", false},
	ActionReject:     {Reject, "550 5.5.0 Service unavailable", false},
	ActionQuarantine: {Continue, "", true},
}

func TestMilterDown(t *testing.T) {
	for act, want := range defaultReplies {
		t.Run(act.String(), func(t *testing.T) {
			sock := "unix:" + filepath.Join(t.TempDir(), "nobody-listens")
			c := quietChain(t, cfgFor(sock, func(c *Config) { c.DefaultAction = act }))
			s, begin := c.Begin(context.Background(), testInfo())
			defer s.Close()
			mail := s.Mail("a@example.org", nil)
			for _, d := range []Decision{begin, mail} {
				if d.Verdict != want.verdict || d.Reply() != want.reply {
					t.Errorf("got %v %q, want %v %q", d.Verdict, d.Reply(), want.verdict, want.reply)
				}
			}
			if mail.Verdict != Continue {
				return
			}
			s.Rcpt("b@example.net", nil)
			res, err := s.Message(testHeader, strings.NewReader("x\r\n"))
			if err != nil {
				t.Fatal(err)
			}
			if (res.Quarantine != "") != want.hold || res.Decision.Verdict != Continue {
				t.Errorf("result %+v", res)
			}
		})
	}
}

// TestMisbehavingMilter: every kind of garbage leads to the default action
// at the stage where it happened, and the next message reconnects.
func TestMisbehavingMilter(t *testing.T) {
	for _, tc := range []struct {
		name  string
		at    byte // where the milter misbehaves
		bad   []byte
		sleep bool
		neg   func(c *fakeConn) error
		conf  bool // configuration error: 451 4.3.5 instead of the default action's text
		offer int  // protocol version offered (6 when zero)
	}{
		{name: "zero-length packet", at: cmdMail, bad: []byte{0, 0, 0, 0}},
		{name: "huge length", at: cmdMail, bad: []byte{0xff, 0xff, 0xff, 0xff, 'c'}},
		{name: "unknown reply", at: cmdRcpt, bad: appendPacket(nil, 'Z')},
		{name: "data after continue", at: cmdRcpt, bad: appendPacket(nil, repContinue, []byte("junk"))},
		{name: "edit before end of body", at: cmdRcpt, bad: appendPacket(nil, repAddHeader, cstrings("X", "y"))},
		{name: "edit without the action", at: cmdEOB, bad: appendPacket(nil, repDelRcpt, cstrings("<b@example.net>")), conf: true},
		{name: "bad header name", at: cmdEOB, bad: appendPacket(nil, repAddHeader, cstrings("X Y", "v")), conf: true},
		{name: "malformed reply code", at: cmdMail, bad: appendPacket(nil, repReplyCode, cstrings("hello")), conf: true},
		{name: "truncated string", at: cmdEOB, bad: appendPacket(nil, repAddHeader, []byte("X-Name")), conf: false},
		{name: "connection closed", at: cmdMail, bad: nil},
		{name: "too slow", at: cmdRcpt, sleep: true},
		{name: "too slow in content", at: cmdEOB, sleep: true},
		{name: "version too high", neg: func(c *fakeConn) error { return c.negotiate(7, 0, 0) }},
		{name: "actions not offered", neg: func(c *fakeConn) error { return c.negotiate(6, 0x200, 0) }},
		{name: "step not offered", offer: 4, neg: func(c *fakeConn) error { return c.negotiate(4, 0, pNRBody) }},
		{name: "garbage instead of OPTNEG", neg: func(c *fakeConn) error {
			c.read()
			c.write(repContinue)
			return nil
		}},
	} {
		for _, act := range []Action{ActionTempfail, ActionReject, ActionAccept} {
			t.Run(tc.name+"/"+act.String(), func(t *testing.T) {
				var used atomic.Bool
				f := startFake(t, func(c *fakeConn) {
					misbehave := !used.Swap(true)
					if misbehave && tc.neg != nil {
						tc.neg(c)
						c.read() // wait for the client to hang up
						return
					}
					v := uint32(6)
					if tc.offer != 0 {
						v = uint32(tc.offer)
					}
					if c.negotiate(v, actAddHdrs, 0) != nil {
						return
					}
					c.serve(func(cmd byte, data []byte) [][]byte {
						if misbehave && cmd == tc.at {
							if tc.sleep {
								return nil // never answer; the client times out and hangs up
							}
							if tc.bad == nil {
								c.c.Close()
								return nil
							}
							c.c.Write(tc.bad)
							return nil
						}
						return continueAll(cmd, data)
					})
				})
				cfg := cfgFor(f.socket, func(c *Config) {
					c.DefaultAction = act
					// Short timeouts only where they are the point: a loaded
					// machine must not turn the healthy retry into a failure.
					c.CommandTimeout, c.ContentTimeout = 5*time.Second, 5*time.Second
					if tc.sleep {
						c.CommandTimeout, c.ContentTimeout = 300*time.Millisecond, 300*time.Millisecond
					}
					c.Protocol = tc.offer
				})
				c := quietChain(t, cfg)
				s, begin := c.Begin(context.Background(), testInfo())
				defer s.Close()
				ds := []Decision{begin}
				// Go on as an SMTP server would: no DATA after a refused
				// MAIL, no content after a refused DATA.
				if d := s.Mail("a@example.org", nil); d.Verdict != Continue {
					ds = append(ds, d)
				} else if ds = append(ds, d, s.Rcpt("b@example.net", nil)); ds[len(ds)-1].Verdict == Continue {
					if d := s.Data(); d.Verdict != Continue {
						ds = append(ds, d)
					} else {
						res, err := s.Message(testHeader, strings.NewReader("x\r\n"))
						if err != nil {
							t.Fatal(err)
						}
						ds = append(ds, res.Decision)
					}
				}
				want := defaultReplies[act]
				if tc.conf && act != ActionAccept {
					want.verdict, want.reply = Tempfail, "451 4.3.5 Server configuration problem - try again later"
				}
				var failed *Decision
				for i := range ds {
					if ds[i].Verdict != Continue {
						failed = &ds[i]
						break
					}
				}
				switch {
				case want.verdict == Continue && failed != nil:
					t.Errorf("default accept, got %+v", *failed)
				case want.verdict != Continue && failed == nil:
					t.Errorf("no failure reported; want %v", want.verdict)
				case failed != nil && (failed.Verdict != want.verdict || failed.Reply() != want.reply):
					t.Errorf("got %v %q, want %v %q", failed.Verdict, failed.Reply(), want.verdict, want.reply)
				}
				// The session is not corrupted: the next message reconnects
				// and passes.
				s.Abort()
				if d := s.Mail("a@example.org", nil); d.Verdict != Continue {
					t.Fatalf("next MAIL: %+v", d)
				}
				if d := s.Rcpt("c@example.net", nil); d.Verdict != Continue {
					t.Fatalf("next RCPT: %+v", d)
				}
				res, err := s.Message(testHeader, strings.NewReader("y\r\n"))
				if err != nil || res.Decision.Verdict != Continue || len(res.Recipients) != 1 {
					t.Fatalf("next message: %+v %v", res, err)
				}
				if n := f.connections(); n != 2 {
					t.Errorf("%d connections to the milter, want 2 (one retry)", n)
				}
			})
		}
	}
}

func TestContextCancelUnblocks(t *testing.T) {
	f := startFake(t, func(c *fakeConn) {
		if c.negotiate(6, 0, 0) != nil {
			return
		}
		c.serve(func(cmd byte, data []byte) [][]byte {
			if cmd == cmdMail {
				return nil // hang until the client gives up
			}
			return continueAll(cmd, data)
		})
	})
	c := quietChain(t, cfgFor(f.socket, func(c *Config) { c.CommandTimeout = 10 * time.Second }))
	ctx, cancel := context.WithCancel(context.Background())
	s, _ := c.Begin(ctx, testInfo())
	defer s.Close()
	time.AfterFunc(100*time.Millisecond, cancel)
	start := time.Now()
	d := s.Mail("a@example.org", nil)
	if time.Since(start) > 2*time.Second || d.Verdict != Tempfail {
		t.Errorf("after cancel: %+v in %v", d, time.Since(start))
	}
}

func TestConfigChecks(t *testing.T) {
	for _, c := range []Config{
		{Socket: "tcp:1.2.3.4:5"},
		{Socket: "inet:127.0.0.1"},
		{Socket: "inet:127.0.0.1:0"},
		{Socket: "unix:"},
		{Socket: "unix:/x", Protocol: 5},
		{Socket: "unix:/x", DefaultAction: 9},
		{Socket: "unix:/x", Macros: map[Stage][]string{42: {"i"}}},
	} {
		if _, err := NewChain([]Config{c}); err == nil {
			t.Errorf("%+v accepted", c)
		}
	}
	for sock, want := range map[string]string{
		"inet:127.0.0.1:8891":  "tcp 127.0.0.1:8891",
		"inet:[::1]:8891":      "tcp [::1]:8891",
		"inet:8891@127.0.0.1":  "tcp 127.0.0.1:8891",
		"unix:/run/m.sock":     "unix /run/m.sock",
		"local:/run/m.sock":    "unix /run/m.sock",
		"inet:localhost:11332": "tcp localhost:11332",
	} {
		n, a, err := ParseSocket(sock)
		if err != nil || n+" "+a != want {
			t.Errorf("%s: %s %s %v, want %s", sock, n, a, err, want)
		}
	}
	for _, s := range []string{"accept", "Tempfail", "REJECT", "quarantine"} {
		if _, err := ParseAction(s); err != nil {
			t.Error(err)
		}
	}
	if _, err := ParseAction("shutdown"); err == nil {
		t.Error("shutdown accepted")
	}
}
