package vmta

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/sluicemta/sluice/internal/testutil/smtpsink"
)

// probeMsg is a verification request: no content, only the envelope.
func probeMsg(rcpts ...string) *Message {
	m := &Message{ID: "PROBEID", From: "me@example.org", Probe: true}
	for _, r := range rcpts {
		m.Rcpts = append(m.Rcpts, Rcpt{Addr: r})
	}
	return m
}

func routeToSink(s *smtpsink.Sink) Destination {
	return Destination{Domain: "example.net", Hosts: []HostPort{{Host: "127.0.0.1", Port: s.Port(), Bracketed: true}},
		HeloName: "client.test", GreetingTimeout: 5 * time.Second, CommandTimeout: 5 * time.Second,
		DataTimeout: 5 * time.Second, DataTerminationTimeout: 5 * time.Second}
}

// commands returns the client's commands on every connection, in order.
func commands(s *smtpsink.Sink) [][]string {
	var out [][]string
	for _, c := range s.Connections() {
		var cmds []string
		for _, l := range c.Log {
			if cmd, ok := strings.CutPrefix(l, "C: "); ok {
				cmds = append(cmds, cmd)
			}
		}
		out = append(out, cmds)
	}
	return out
}

// TestProbe: in both the pipelined and the lockstep path a probe sends
// MAIL and RCPT, then RSET and never DATA, reports every RCPT reply, and
// leaves a session that is cached, reused by the next probe and still
// good for a real delivery.
func TestProbe(t *testing.T) {
	for _, tc := range []struct {
		name       string
		ext        smtpsink.Ext
		roundTrips int // for EHLO and one probe of three recipients
	}{
		{"pipelined", smtpsink.DefaultExt, 2},         // EHLO; MAIL RCPT RCPT RCPT RSET
		{"lockstep", smtpsink.EnhancedStatusCodes, 6}, // EHLO, MAIL, 3 RCPT, RSET
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := smtpsink.Start(t, smtpsink.Options{Ext: tc.ext, RcptReplies: map[string]string{
				"bad@example.net":   "550 5.1.1 no such user",
				"later@example.net": "450 4.2.1 mailbox busy",
			}})
			d := newTestDeliverer(t, Options{})
			dest := routeToSink(s)
			res := d.Deliver(context.Background(), dest, probeMsg("ok@example.net", "bad@example.net", "later@example.net"))
			if res.Err != nil {
				t.Fatalf("Err = %v", res.Err)
			}
			want := []struct {
				code   int
				probed bool
			}{{250, true}, {550, false}, {450, false}}
			for i, w := range want {
				r := res.Rcpts[i]
				if r.Reply.Code != w.code || r.Probed() != w.probed || r.Stage != StageRcpt || r.Synthesized || r.Delivered() {
					t.Errorf("rcpt %d: %+v, want %d at rcpt (probed %v)", i, r, w.code, w.probed)
				}
			}
			if n := len(s.Transactions()); n != 0 {
				t.Fatalf("the sink received content %d times from a probe", n)
			}
			cmds := commands(s)
			if len(cmds) != 1 {
				t.Fatalf("%d connections, want 1", len(cmds))
			}
			got := strings.Join(cmds[0][1:], "|")
			if wantCmds := "MAIL FROM:<me@example.org>|RCPT TO:<ok@example.net>|RCPT TO:<bad@example.net>|RCPT TO:<later@example.net>|RSET"; got != wantCmds {
				t.Errorf("commands %s, want %s", got, wantCmds)
			}
			if rt := s.Connections()[0].RoundTrips; rt != tc.roundTrips {
				t.Errorf("%d round trips, want %d", rt, tc.roundTrips)
			}
			if d.IdleConns() != 1 {
				t.Fatalf("probe session not cached (%d idle)", d.IdleConns())
			}

			// The next probe reuses the session; so does a real delivery.
			res = d.Deliver(context.Background(), dest, probeMsg("ok2@example.net"))
			if !res.Reused || !res.Rcpts[0].Probed() {
				t.Fatalf("second probe: reused %v, %+v", res.Reused, res.Rcpts[0])
			}
			res = d.Deliver(context.Background(), dest, testMsg(body1, "real@example.net"))
			if !res.Reused || !res.Rcpts[0].Delivered() {
				t.Fatalf("delivery after probes: reused %v, %+v", res.Reused, res.Rcpts[0])
			}
			msgs := s.Messages()
			if len(msgs) != 1 || msgs[0].Recipients()[0] != "real@example.net" {
				t.Fatalf("sink messages %+v", msgs)
			}
			if cmds := commands(s); len(cmds) != 1 || strings.Count(strings.Join(cmds[0], "|"), "DATA") != 1 {
				t.Errorf("commands %v: want one connection and DATA only for the real delivery", cmds)
			}
		})
	}
}

// TestProbeFailures: a refused MAIL fails every recipient, a failed RSET
// keeps the replies but retires the session, a 421 holds the queue, and
// "452 too many recipients" sends the rest in a next probe.
func TestProbeFailures(t *testing.T) {
	for _, tc := range []struct {
		name   string
		opts   smtpsink.Options
		rcpts  []string
		codes  []int
		cached int
		defer_ bool
		probes int // MAIL commands sent
	}{
		{name: "mail refused", opts: smtpsink.Options{Replies: map[smtpsink.Stage]string{smtpsink.StageMail: "553 5.7.1 sender refused"}},
			rcpts: []string{"a@example.net", "b@example.net"}, codes: []int{553, 553}, cached: 1, probes: 1},
		{name: "rset refused", opts: smtpsink.Options{Replies: map[smtpsink.Stage]string{smtpsink.StageRset: "502 5.5.1 no RSET here"}},
			rcpts: []string{"a@example.net"}, codes: []int{250}, cached: 0, probes: 1},
		{name: "421 at rcpt", opts: smtpsink.Options{RcptReplies: map[string]string{"b@example.net": "421 4.3.2 shutting down"}},
			rcpts: []string{"a@example.net", "b@example.net", "c@example.net"}, codes: []int{250, 421, 421}, cached: 0, defer_: true, probes: 1},
		{name: "too many", opts: smtpsink.Options{Func: func(c smtpsink.Call) string {
			if c.Stage == smtpsink.StageRcpt && c.Msg != nil && len(c.Msg.Rcpts) >= 2 {
				return "452 4.5.3 too many recipients"
			}
			return ""
		}}, rcpts: []string{"a@example.net", "b@example.net", "c@example.net"}, codes: []int{250, 250, 250}, cached: 1, probes: 2},
	} {
		for _, ext := range []smtpsink.Ext{smtpsink.DefaultExt, smtpsink.EnhancedStatusCodes} {
			t.Run(fmt.Sprintf("%s/pipelining=%v", tc.name, ext&smtpsink.Pipelining != 0), func(t *testing.T) {
				opts := tc.opts
				opts.Ext = ext
				s := smtpsink.Start(t, opts)
				d := newTestDeliverer(t, Options{})
				res := d.Deliver(context.Background(), routeToSink(s), probeMsg(tc.rcpts...))
				if got := codes(res); !equalInts(got, tc.codes) {
					t.Errorf("codes %v, want %v (%+v)", got, tc.codes, res.Rcpts)
				}
				if d.IdleConns() != tc.cached {
					t.Errorf("%d cached sessions, want %d", d.IdleConns(), tc.cached)
				}
				if (res.QueueDefer > 0) != tc.defer_ {
					t.Errorf("QueueDefer %v", res.QueueDefer)
				}
				all := strings.Join(commands(s)[0], "|")
				if strings.Contains(all, "DATA") || strings.Count(all, "MAIL FROM") != tc.probes {
					t.Errorf("commands %s: want %d MAIL and no DATA", all, tc.probes)
				}
			})
		}
	}
}
