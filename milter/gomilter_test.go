package milter

import (
	"context"
	"fmt"
	"net"
	"net/textproto"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	gomilter "github.com/emersion/go-milter"
)

// These tests drive the client with a milter built on go-milter's server
// side (protocol version 2, the way many small Go milters are written).

// recorder remembers what a go-milter milter saw, across connections.
type recorder struct {
	mu      sync.Mutex
	events  []string
	headers []string
	body    strings.Builder
	macros  map[string]string
}

func (r *recorder) add(s string) {
	r.mu.Lock()
	r.events = append(r.events, s)
	r.mu.Unlock()
}

func (r *recorder) saw(prefix string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.ContainsFunc(r.events, func(e string) bool { return strings.HasPrefix(e, prefix) })
}

// scripted answers resp at stage `at` (continue elsewhere) and runs mods at end of body.
type scripted struct {
	rec  *recorder
	at   string
	resp gomilter.Response
	mods func(m *gomilter.Modifier) error
}

func (s *scripted) answer(stage string) (gomilter.Response, error) {
	if stage == s.at && s.resp != nil {
		return s.resp, nil
	}
	if stage == "eob" {
		return gomilter.RespAccept, nil
	}
	return gomilter.RespContinue, nil
}

func (s *scripted) Connect(host, family string, port uint16, addr net.IP, m *gomilter.Modifier) (gomilter.Response, error) {
	s.rec.add(fmt.Sprintf("connect %s %s %d %s", host, family, port, addr))
	return s.answer("connect")
}
func (s *scripted) Helo(name string, m *gomilter.Modifier) (gomilter.Response, error) {
	s.rec.add("helo " + name)
	return s.answer("helo")
}
func (s *scripted) MailFrom(from string, m *gomilter.Modifier) (gomilter.Response, error) {
	s.rec.add("mail " + from)
	s.rec.mu.Lock()
	s.rec.macros = m.Macros
	s.rec.mu.Unlock()
	return s.answer("mail")
}
func (s *scripted) RcptTo(to string, m *gomilter.Modifier) (gomilter.Response, error) {
	s.rec.add("rcpt " + to)
	return s.answer("rcpt")
}
func (s *scripted) Header(name, value string, m *gomilter.Modifier) (gomilter.Response, error) {
	s.rec.add("header " + name)
	s.rec.mu.Lock()
	s.rec.headers = append(s.rec.headers, name+":"+value)
	s.rec.mu.Unlock()
	return s.answer("header")
}
func (s *scripted) Headers(h textproto.MIMEHeader, m *gomilter.Modifier) (gomilter.Response, error) {
	s.rec.add("eoh")
	return s.answer("eoh")
}
func (s *scripted) BodyChunk(chunk []byte, m *gomilter.Modifier) (gomilter.Response, error) {
	s.rec.add("body")
	s.rec.mu.Lock()
	s.rec.body.Write(chunk)
	s.rec.mu.Unlock()
	return s.answer("body")
}
func (s *scripted) Body(m *gomilter.Modifier) (gomilter.Response, error) {
	s.rec.add("eob")
	if s.mods != nil {
		if err := s.mods(m); err != nil {
			return nil, err
		}
	}
	return s.answer("eob")
}
func (s *scripted) Abort(m *gomilter.Modifier) error { s.rec.add("abort"); return nil }

// startGoMilter serves a go-milter milter on a unix socket and returns its config.
func startGoMilter(t *testing.T, name string, newM func() gomilter.Milter) Config {
	t.Helper()
	path := filepath.Join(t.TempDir(), "gm.sock")
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	srv := &gomilter.Server{
		NewMilter: newM,
		Actions: gomilter.OptAddHeader | gomilter.OptChangeHeader | gomilter.OptChangeBody | gomilter.OptAddRcpt |
			gomilter.OptRemoveRcpt | gomilter.OptQuarantine | gomilter.OptChangeFrom,
	}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	c := cfgFor("unix:" + path)
	c.Name = name
	return c
}

func quietChain(t *testing.T, cfgs ...Config) *Chain {
	t.Helper()
	return mustChain(t, cfgs...)
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Helper()
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

var modHeader = []HeaderField{
	{Name: "Received", Value: " from x by y", Hidden: true},
	{Name: "Subject", Value: " hi"},
	{Name: "X-A", Value: " one"},
	{Name: "X-B", Value: " b"},
	{Name: "X-A", Value: " two"},
	{Name: "From", Value: " a@example.org"},
}

// hdrs writes a header list compactly: "name:value" with hidden ones starred.
func hdrs(h []HeaderField) string {
	var parts []string
	for _, f := range h {
		s := f.Name + ":" + f.Value
		if f.Hidden {
			s = "*" + s
		}
		parts = append(parts, s)
	}
	return strings.Join(parts, "|")
}

func TestGoMilterModifications(t *testing.T) {
	base := "*Received: from x by y|Subject: hi|X-A: one|X-B: b|X-A: two|From: a@example.org"
	for _, tc := range []struct {
		name string
		mods func(m *gomilter.Modifier) error
		hdr  string
		chk  func(t *testing.T, r Result)
	}{
		{"add", func(m *gomilter.Modifier) error { return m.AddHeader("X-New", "v") }, base + "|X-New: v", nil},
		{"add folded", func(m *gomilter.Modifier) error { return m.AddHeader("X-New", "a\r\n\tb") }, base + "|X-New: a\r\n\tb", nil},
		{"insert 0 above our Received", func(m *gomilter.Modifier) error { return m.InsertHeader(0, "X-New", "v") },
			"X-New: v|" + base, nil},
		{"insert 1", func(m *gomilter.Modifier) error { return m.InsertHeader(1, "X-New", "v") },
			"*Received: from x by y|X-New: v|Subject: hi|X-A: one|X-B: b|X-A: two|From: a@example.org", nil},
		{"insert 3", func(m *gomilter.Modifier) error { return m.InsertHeader(3, "X-New", "v") },
			"*Received: from x by y|Subject: hi|X-A: one|X-New: v|X-B: b|X-A: two|From: a@example.org", nil},
		{"insert past end", func(m *gomilter.Modifier) error { return m.InsertHeader(99, "X-New", "v") }, base + "|X-New: v", nil},
		{"change 0 is 1", func(m *gomilter.Modifier) error { return m.ChangeHeader(0, "X-A", "z") },
			"*Received: from x by y|Subject: hi|X-A: z|X-B: b|X-A: two|From: a@example.org", nil},
		{"change 1 any case", func(m *gomilter.Modifier) error { return m.ChangeHeader(1, "x-a", "z") },
			"*Received: from x by y|Subject: hi|x-a: z|X-B: b|X-A: two|From: a@example.org", nil},
		{"change 2", func(m *gomilter.Modifier) error { return m.ChangeHeader(2, "X-A", "z") },
			"*Received: from x by y|Subject: hi|X-A: one|X-B: b|X-A: z|From: a@example.org", nil},
		{"change missing appends", func(m *gomilter.Modifier) error { return m.ChangeHeader(3, "X-A", "z") }, base + "|X-A: z", nil},
		{"delete 2", func(m *gomilter.Modifier) error { return m.ChangeHeader(2, "X-A", "") },
			"*Received: from x by y|Subject: hi|X-A: one|X-B: b|From: a@example.org", nil},
		{"delete missing", func(m *gomilter.Modifier) error { return m.ChangeHeader(3, "X-A", "") }, base, nil},
		{"change skips hidden Received", func(m *gomilter.Modifier) error { return m.ChangeHeader(1, "Received", "r") }, base + "|Received: r", nil},
		{"several in order", func(m *gomilter.Modifier) error {
			if err := m.InsertHeader(1, "X-1", "1"); err != nil {
				return err
			}
			if err := m.ChangeHeader(1, "Subject", "s"); err != nil {
				return err
			}
			return m.ChangeHeader(1, "X-B", "")
		}, "*Received: from x by y|X-1: 1|Subject: s|X-A: one|X-A: two|From: a@example.org", nil},
		{"replace body", func(m *gomilter.Modifier) error { return m.ReplaceBody([]byte("new\r\nbody\r\n")) }, base,
			func(t *testing.T, r Result) {
				if !r.BodyReplaced || string(r.Body) != "new\r\nbody\r\n" {
					t.Errorf("body %q", r.Body)
				}
			}},
		{"change from", func(m *gomilter.Modifier) error { return m.ChangeFrom("<x@example.com>") }, base,
			func(t *testing.T, r Result) {
				if !r.SenderChanged || r.Sender != "x@example.com" || len(r.SenderArgs) != 0 {
					t.Errorf("sender %q %v", r.Sender, r.SenderArgs)
				}
			}},
		{"add and delete recipients", func(m *gomilter.Modifier) error {
			if err := m.AddRecipient("c@example.net"); err != nil {
				return err
			}
			return m.DeleteRecipient("b@example.net")
		}, base, func(t *testing.T, r Result) {
			if len(r.Recipients) != 1 || r.Recipients[0].Addr != "c@example.net" || !slices.Equal(r.Deleted, []string{"b@example.net"}) {
				t.Errorf("recipients %+v deleted %v", r.Recipients, r.Deleted)
			}
		}},
		{"quarantine", func(m *gomilter.Modifier) error { return m.Quarantine("suspicious") }, base,
			func(t *testing.T, r Result) {
				if r.Quarantine != "suspicious" || r.Decision.Verdict != Continue {
					t.Errorf("quarantine %q decision %+v", r.Quarantine, r.Decision)
				}
			}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rec := &recorder{}
			cfg := startGoMilter(t, "gm", func() gomilter.Milter { return &scripted{rec: rec, mods: tc.mods} })
			c := quietChain(t, cfg)
			s, _ := c.Begin(context.Background(), testInfo())
			defer s.Close()
			s.Mail("a@example.org", nil)
			s.Rcpt("b@example.net", nil)
			s.Data()
			res, err := s.Message(modHeader, strings.NewReader("body\r\n"))
			if err != nil {
				t.Fatal(err)
			}
			if got := hdrs(res.Header); got != tc.hdr {
				t.Errorf("header\n got %q\nwant %q", got, tc.hdr)
			}
			if tc.chk != nil {
				tc.chk(t, res)
			}
		})
	}
}

func TestGoMilterSeesRawEnvelopeAndContent(t *testing.T) {
	rec := &recorder{}
	cfg := startGoMilter(t, "gm", func() gomilter.Milter { return &scripted{rec: rec} })
	c := quietChain(t, cfg)
	res, ds := runTx(t, c, testInfo(), "line1\r\nline2\r\n")
	for _, d := range ds {
		if d.Verdict != Continue {
			t.Fatalf("%+v", d)
		}
	}
	if res.Decision.Verdict != Continue {
		t.Fatal(res.Decision)
	}
	for _, e := range []string{"connect mx.example.org tcp4 4242 192.0.2.1", "helo client.example.org", "mail a@example.org", "rcpt b@example.net", "eoh", "eob"} {
		if !rec.saw(e) {
			t.Errorf("milter did not see %q: %v", e, rec.events)
		}
	}
	rec.mu.Lock()
	defer rec.mu.Unlock()
	if want := []string{"Subject:hello\n world", "From:a@example.org"}; !slices.Equal(rec.headers, want) {
		t.Errorf("headers %q, want %q (hidden Received, one space eaten, folds as LF)", rec.headers, want)
	}
	if rec.body.String() != "line1\r\nline2\r\n" {
		t.Errorf("body %q", rec.body.String())
	}
	if rec.macros["i"] != "Q1" || rec.macros["{mail_addr}"] != "a@example.org" {
		t.Errorf("mail macros %v", rec.macros)
	}
}

// TestGoMilterDecisions answers each reply at each stage and checks what
// the SMTP layer is told, as Postfix's milter8.c decides.
func TestGoMilterDecisions(t *testing.T) {
	stages := []string{"connect", "helo", "mail", "rcpt", "header", "eoh", "body", "eob"}
	replies := map[string]gomilter.Response{
		"accept":   gomilter.RespAccept,
		"reject":   gomilter.RespReject,
		"tempfail": gomilter.RespTempFail,
		"discard":  gomilter.RespDiscard,
		"custom":   gomilter.NewResponseStr('y', "554 5.7.0 custom 100%% no"),
	}
	wantReply := map[string]string{
		"reject":   "550 5.7.1 Command rejected",
		"tempfail": "451 4.7.1 Service unavailable - try again later",
		"custom":   "554 5.7.0 custom 100% no",
	}
	for _, stage := range stages {
		for rname, resp := range replies {
			t.Run(stage+"/"+rname, func(t *testing.T) {
				rec := &recorder{}
				cfg := startGoMilter(t, "gm", func() gomilter.Milter { return &scripted{rec: rec, at: stage, resp: resp} })
				c := quietChain(t, cfg)
				s, begin := c.Begin(context.Background(), testInfo())
				mail := s.Mail("a@example.org", nil)
				rcpt, data := Decision{}, Decision{}
				var res Result
				if mail.Verdict == Continue {
					rcpt = s.Rcpt("b@example.net", nil)
					data = s.Data()
					var err error
					if res, err = s.Message(testHeader, strings.NewReader("body\r\n")); err != nil {
						t.Fatal(err)
					}
				}
				s.Close()
				inConnect := stage == "connect" || stage == "helo"
				got := map[string]Decision{"begin": begin, "mail": mail, "rcpt": rcpt, "data": data, "message": res.Decision}
				where := map[string]string{"connect": "begin", "helo": "begin", "mail": "mail", "rcpt": "rcpt"}[stage]
				if where == "" {
					where = "message"
				}
				for k, d := range got {
					want := Verdict(Continue)
					switch {
					case rname == "reject" || rname == "tempfail" || rname == "custom":
						if k == where || (inConnect && k == "mail") {
							want = map[string]Verdict{"reject": Reject, "tempfail": Tempfail, "custom": Reject}[rname]
						}
					case rname == "discard" && !inConnect && k == "message":
						want = Discard
					}
					if d.Verdict != want {
						t.Errorf("%s: verdict %v, want %v (%+v)", k, d.Verdict, want, d)
					}
					if want == Reject || want == Tempfail {
						if d.Reply() != wantReply[rname] || d.Milter != "gm" {
							t.Errorf("%s: reply %q from %q, want %q", k, d.Reply(), d.Milter, wantReply[rname])
						}
					}
				}
				// After accept the milter hears nothing more of the message
				// (of the connection, at connect or helo).
				if rname == "accept" {
					later := map[string]string{"connect": "helo", "helo": "mail", "mail": "rcpt", "rcpt": "header", "header": "eoh", "eoh": "body", "body": "eob"}[stage]
					if later != "" && rec.saw(later) {
						t.Errorf("milter saw %s after accepting at %s: %v", later, stage, rec.events)
					}
				}
				if rname == "reject" && stage == "rcpt" && len(res.Recipients) != 0 {
					t.Errorf("rejected recipient kept: %+v", res.Recipients)
				}
			})
		}
	}
}

func TestChainOrderAndVisibility(t *testing.T) {
	rec1, rec2 := &recorder{}, &recorder{}
	first := startGoMilter(t, "first", func() gomilter.Milter {
		return &scripted{rec: rec1, mods: func(m *gomilter.Modifier) error {
			if err := m.InsertHeader(1, "X-First", "yes"); err != nil {
				return err
			}
			return m.ReplaceBody([]byte("replaced by first\n"))
		}}
	})
	second := startGoMilter(t, "second", func() gomilter.Milter {
		return &scripted{rec: rec2, at: "eob", resp: gomilter.NewResponseStr('y', "550 5.7.1 second says no")}
	})
	c := quietChain(t, first, second)
	res, _ := runTx(t, c, testInfo(), "original\r\n")
	if res.Decision.Verdict != Reject || res.Decision.Milter != "second" || res.Decision.Reply() != "550 5.7.1 second says no" {
		t.Errorf("decision %+v", res.Decision)
	}
	rec2.mu.Lock()
	defer rec2.mu.Unlock()
	if len(rec2.headers) == 0 || rec2.headers[0] != "X-First:yes" {
		t.Errorf("second milter saw headers %q; want X-First first", rec2.headers)
	}
	if rec2.body.String() != "replaced by first\r\n" {
		t.Errorf("second milter saw body %q", rec2.body.String())
	}
	if res.Header[1].Name != "X-First" || string(res.Body) != "replaced by first\r\n" {
		t.Errorf("result %+v", res)
	}
}

func TestChainStopsAtFirstRejectAndAtQuarantine(t *testing.T) {
	recA, recB := &recorder{}, &recorder{}
	a := startGoMilter(t, "a", func() gomilter.Milter {
		return &scripted{rec: recA, mods: func(m *gomilter.Modifier) error { return m.Quarantine("held by a") }}
	})
	b := startGoMilter(t, "b", func() gomilter.Milter { return &scripted{rec: recB} })
	c := quietChain(t, a, b)
	res, _ := runTx(t, c, testInfo(), "x\r\n")
	if res.Quarantine != "held by a" || res.Decision.Verdict != Continue {
		t.Errorf("%+v", res)
	}
	// Postfix: a quarantine at end of message ends the chain for that message.
	if recB.saw("eob") {
		t.Error("milter after a quarantine saw the message")
	}
}
