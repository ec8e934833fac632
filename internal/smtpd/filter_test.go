package smtpd

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// fakeFilter records the calls smtpd makes and answers as told.
type fakeFilter struct {
	mu      sync.Mutex
	calls   []string
	macros  map[string]string
	replies map[string]FilterReply // by stage: helo, mail, rcpt, data
	message func(m FilterMessage) (FilterResult, error)
	got     []FilterMessage
	closed  chan struct{}
}

func newFakeFilter() *fakeFilter {
	return &fakeFilter{macros: map[string]string{}, replies: map[string]FilterReply{}, closed: make(chan struct{})}
}

func (f *fakeFilter) rec(s string) {
	f.mu.Lock()
	f.calls = append(f.calls, s)
	f.mu.Unlock()
}

func (f *fakeFilter) reply(stage string) FilterReply {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.replies[stage]
}

func (f *fakeFilter) Helo(name string) FilterReply { f.rec("helo " + name); return f.reply("helo") }
func (f *fakeFilter) SetMacro(n, v string) {
	f.mu.Lock()
	f.macros[n] = v
	f.mu.Unlock()
}
func (f *fakeFilter) Mail(from string, args []string) FilterReply {
	f.rec(fmt.Sprintf("mail %s %q i=%s", from, args, f.macro("i")))
	return f.reply("mail")
}
func (f *fakeFilter) Rcpt(to string, args []string) FilterReply {
	f.rec(fmt.Sprintf("rcpt %s %q", to, args))
	return f.reply("rcpt")
}
func (f *fakeFilter) RejectedRcpt(to string, args []string, reply string) {
	f.rec(fmt.Sprintf("rejected %s %s", to, reply))
}
func (f *fakeFilter) Data() FilterReply { f.rec("data"); return f.reply("data") }
func (f *fakeFilter) Message(m FilterMessage) (FilterResult, error) {
	f.rec("message")
	f.mu.Lock()
	f.got = append(f.got, m)
	fn := f.message
	f.mu.Unlock()
	if fn == nil {
		return FilterResult{}, nil
	}
	return fn(m)
}
func (f *fakeFilter) Abort() { f.rec("abort") }
func (f *fakeFilter) Close() { f.rec("close"); close(f.closed) }

func (f *fakeFilter) macro(n string) string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.macros[n]
}

func (f *fakeFilter) callList() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.calls)
}

// filterServer starts a server whose connections all get f.
func filterServer(t *testing.T, f *fakeFilter, conn FilterReply) (*recQueue, *eventLog, string, *FilterConn) {
	t.Helper()
	ev := &eventLog{}
	q := newRecQueue()
	s := baseSettings(ev)
	var fc FilterConn
	s.NewFilter = func(ctx context.Context, c FilterConn) (Filter, FilterReply) {
		fc = c
		return f, conn
	}
	_, addrs := startServer(t, s, q)
	return q, ev, addrs["127.0.0.1:0"], &fc
}

func TestFilterSeesEveryStage(t *testing.T) {
	f := newFakeFilter()
	q, _, addr, fc := filterServer(t, f, FilterReply{})
	c := dial(t, addr)
	c.expect("", "220 ")
	c.expect("EHLO client.test", "250-")
	c.expect("MAIL FROM:<a@b.test> RET=HDRS ENVID=x+2By BODY=8BITMIME", "250 ")
	c.expect("RCPT TO:<u@local.test> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;u+40local.test", "250 ")
	c.expect("RCPT TO:<x@other.test>", "554 5.7.1")
	c.expect("DATA", "354 ")
	c.expect("Subject: hi\r\n\r\nbody\r\n.", "250 2.0.0 Ok: queued as ")
	c.expect("RSET", "250 ")
	c.expect("QUIT", "221 ")
	select {
	case <-f.closed:
	case <-time.After(5 * time.Second):
		t.Fatal("filter not closed with the connection")
	}
	msgs := q.all()
	if len(msgs) != 1 {
		t.Fatalf("%d queued", len(msgs))
	}
	id := msgs[0].env.ID
	want := []string{
		"helo client.test",
		fmt.Sprintf(`mail a@b.test ["BODY=8BITMIME" "RET=HDRS" "ENVID=x+2By"] i=%s`, id),
		`rcpt u@local.test ["NOTIFY=SUCCESS,FAILURE" "ORCPT=RFC822;u@local.test"]`,
		"rejected x@other.test 554 5.7.1 <x@other.test>: Relay access denied",
		"data", "message", "abort", "abort", "abort", "close",
	}
	// Aborts after the message are no-ops for a real chain; only their
	// place matters: none between data and message.
	if got := f.callList(); !slices.Equal(got, want) {
		t.Errorf("calls\n%q\nwant\n%q", got, want)
	}
	if fc.Helo != "client.test" || fc.Client.Addr().String() != "127.0.0.1" || fc.Local.Port() == 0 || fc.ClientName != "unknown" {
		t.Errorf("FilterConn %+v", fc)
	}
	m := f.got[0]
	if m.QueueID != id || len(m.Header) < 2 || !m.Header[0].Hidden || m.Header[0].Name != "Received" {
		t.Fatalf("message %+v", m)
	}
	names := []string{}
	for _, h := range m.Header[1:] {
		if h.Hidden {
			t.Errorf("%s hidden", h.Name)
		}
		names = append(names, h.Name)
	}
	// The header fixes come before the filter, as Postfix's cleanup does.
	if !slices.Equal(names, []string{"Subject", "Message-ID", "Date"}) && !slices.Equal(names, []string{"Subject"}) {
		t.Errorf("header names %q", names)
	}
	if m.Header[1].Value != " hi" || string(m.Body) != "body\r\n" {
		t.Errorf("subject %q body %q", m.Header[1].Value, m.Body)
	}
}

func TestFilterRefusals(t *testing.T) {
	tests := []struct {
		name  string
		stage string
		reply FilterReply
		want  string // the client's reply (lines joined by \n)
		gone  bool   // connection closed after it
	}{
		{"helo reject", "helo", FilterReply{Code: 550, Enhanced: "5.7.1", Text: "go away"}, "550 5.7.1 go away", false},
		{"mail tempfail", "mail", FilterReply{Code: 451, Enhanced: "4.7.1", Text: "Service unavailable - try again later"}, "451 4.7.1 Service unavailable - try again later", false},
		{"rcpt multi-line", "rcpt", FilterReply{Code: 550, Enhanced: "5.7.1", Text: "first line\nsecond line"}, "550-first line\n550 5.7.1 second line", false},
		{"rcpt shutdown", "rcpt", FilterReply{Code: 421, Enhanced: "4.7.0", Text: "closing"}, "421 4.7.0 closing", true},
		{"data reject", "data", FilterReply{Code: 554, Enhanced: "5.7.1", Text: "no data"}, "554 5.7.1 no data", false},
		{"message reject", "message", FilterReply{Code: 550, Enhanced: "5.7.1", Text: "spam"}, "550 5.7.1 spam", false},
		{"message shutdown", "message", FilterReply{Code: 421, Text: "bye"}, "421 4.0.0 bye", true},
		{"class mismatch drops the enhanced code", "mail", FilterReply{Code: 550, Enhanced: "4.7.1", Text: "odd"}, "550 5.0.0 odd", false},
		{"nonsense code is a local fault", "mail", FilterReply{Code: 250, Text: "ok?"}, "451 4.3.5", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFakeFilter()
			if tt.stage == "message" {
				f.message = func(FilterMessage) (FilterResult, error) { return FilterResult{Reply: tt.reply}, nil }
			} else {
				f.replies[tt.stage] = tt.reply
			}
			q, ev, addr, _ := filterServer(t, f, FilterReply{})
			c := dial(t, addr)
			c.expect("", "220 ")
			steps := []struct{ stage, cmd, ok string }{
				{"helo", "EHLO client.test", "250"},
				{"mail", "MAIL FROM:<a@b.test>", "250"},
				{"rcpt", "RCPT TO:<u@local.test>", "250"},
				{"data", "DATA", "354"},
				{"message", "Subject: x\r\n\r\nhello\r\n.", "250"},
			}
			var got string
			for _, st := range steps {
				got = c.cmd(st.cmd)
				if st.stage == "message" && tt.stage == "data" {
					break // the DATA refusal comes after the content (go-smtp said 354)
				}
				if st.stage == tt.stage && tt.stage != "data" {
					break
				}
				if !strings.HasPrefix(got, st.ok) {
					t.Fatalf("%s: %q", st.cmd, got)
				}
			}
			if !strings.HasPrefix(got, tt.want) {
				t.Fatalf("got %q, want %q", got, tt.want)
			}
			if len(q.all()) != 0 {
				t.Error("message queued despite the refusal")
			}
			if tt.gone {
				if r := c.reply(); r != "" {
					t.Errorf("connection still open: %q", r)
				}
			} else if tt.stage != "helo" {
				c.expect("RSET", "250")
			}
			if !ev.find(EvReject, tt.want[4:min(len(tt.want), 9)]) {
				t.Errorf("no reject event for %q", tt.want)
			}
		})
	}
}

func TestFilterRefusesConnection(t *testing.T) {
	f := newFakeFilter()
	_, _, addr, _ := filterServer(t, f, FilterReply{Code: 554, Enhanced: "5.7.1", Text: "not you"})
	c := dial(t, addr)
	c.expect("", "220 ")
	c.expect("EHLO client.test", "554 5.7.1 not you")
	c.expect("MAIL FROM:<a@b.test>", "502 ") // no session: go-smtp wants a HELO first
	c.expect("HELO client.test", "554 5.7.1 not you")
	if got := f.callList(); len(got) != 0 {
		t.Errorf("stages reported after a refused connection: %q", got)
	}
}

func TestFilterEditsApplied(t *testing.T) {
	f := newFakeFilter()
	f.message = func(m FilterMessage) (FilterResult, error) {
		h := append(slices.Clone(m.Header), HeaderField{Name: "X-Filtered", Value: " yes\r\n\tfolded"})
		h = slices.DeleteFunc(h, func(x HeaderField) bool { return x.Name == "Subject" })
		return FilterResult{
			Header: h, Body: []byte("new body\r\n"), BodyReplaced: true,
			Sender: "bounce@b.test", SenderArgs: []string{"RET=FULL", "SIZE=1", "ENVID=e+2B1"}, SenderChanged: true,
			Recipients: []FilterRcpt{
				{Addr: "keep@local.test"},
				{Addr: "new@else.test", Args: []string{"NOTIFY=FAILURE,DELAY", "ORCPT=rfc822;n+40else.test", "XFOO=1"}},
				{Addr: "keep@local.test"}, // added twice: once is enough
			},
			RecipientsChanged: true,
			Hold:              "suspicious",
		}, nil
	}
	q, ev, addr, _ := filterServer(t, f, FilterReply{})
	c := dial(t, addr)
	c.expect("", "220 ")
	c.expect("EHLO client.test", "250-")
	c.expect("MAIL FROM:<a@b.test> RET=HDRS", "250 ")
	c.expect("RCPT TO:<keep@local.test> NOTIFY=NEVER", "250 ")
	c.expect("RCPT TO:<gone@local.test>", "250 ")
	c.expect("DATA", "354 ")
	c.expect("Subject: x\r\nFrom: a@b.test\r\n\r\nold body\r\n.", "250 2.0.0 Ok: queued as ")
	m := q.all()[0]
	env := m.env
	if env.From != "bounce@b.test" || env.Ret != "FULL" || env.EnvID != "e+1" {
		t.Errorf("sender %q ret %q envid %q", env.From, env.Ret, env.EnvID)
	}
	wantRcpts := []Rcpt{{Addr: "keep@local.test", Notify: NotifyNever}, {Addr: "new@else.test", ORCPT: "rfc822;n@else.test", Notify: NotifyFailure | NotifyDelay}}
	if !slices.Equal(env.Rcpts, wantRcpts) {
		t.Errorf("rcpts %+v", env.Rcpts)
	}
	if !env.Hold || env.HoldReason != "suspicious" {
		t.Errorf("hold %v %q", env.Hold, env.HoldReason)
	}
	s := string(m.content)
	if !strings.HasPrefix(s, "Received: from client.test") || strings.Contains(s, "Subject:") ||
		!strings.Contains(s, "From: a@b.test\r\n") || !strings.HasSuffix(s, "X-Filtered: yes\r\n\tfolded\r\n\r\nnew body\r\n") {
		t.Errorf("content:\n%s", s)
	}
	if !ev.find(EvFilter, "hold: suspicious") {
		t.Error("no hold event")
	}
}

func TestFilterDiscardAndFaults(t *testing.T) {
	tests := []struct {
		name   string
		result FilterResult
		err    error
		want   string
		queued bool
		event  EventKind
	}{
		{"discard", FilterResult{Discard: true}, nil, "250 2.0.0 Ok: queued as", false, EvFilter},
		{"every recipient deleted", FilterResult{Recipients: []FilterRcpt{}, RecipientsChanged: true}, nil, "250 2.0.0", false, EvFilter},
		{"filter fault", FilterResult{}, errors.New("milter: rewind body: boom"), "451 4.3.0", false, EvError},
		{"header with a bare LF", FilterResult{Header: []HeaderField{{Name: "X", Value: " a\nb"}}}, nil, "451 4.3.5", false, EvError},
		{"bad header name", FilterResult{Header: []HeaderField{{Name: "X Y", Value: " a"}}}, nil, "451 4.3.5", false, EvError},
		{"sender with a CR", FilterResult{Sender: "a\r@b", SenderChanged: true}, nil, "451 4.3.5", false, EvError},
		{"recipient still in brackets", FilterResult{Recipients: []FilterRcpt{{Addr: "<x@local.test>"}}, RecipientsChanged: true}, nil, "451 4.3.5", false, EvError},
		{"non-ASCII recipient without SMTPUTF8", FilterResult{Recipients: []FilterRcpt{{Addr: "jö@local.test"}}, RecipientsChanged: true}, nil, "451 4.3.5", false, EvError},
		{"null sender is fine", FilterResult{Sender: "", SenderChanged: true}, nil, "250 2.0.0", true, EvQueued},
		{"nothing to change", FilterResult{}, nil, "250 2.0.0", true, EvQueued},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFakeFilter()
			f.message = func(FilterMessage) (FilterResult, error) { return tt.result, tt.err }
			q, ev, addr, _ := filterServer(t, f, FilterReply{})
			c := dial(t, addr)
			c.expect("", "220 ")
			c.expect("EHLO client.test", "250-")
			c.expect("MAIL FROM:<a@b.test>", "250 ")
			c.expect("RCPT TO:<u@local.test>", "250 ")
			c.expect("DATA", "354 ")
			c.expect("Subject: x\r\n\r\nhello\r\n.", tt.want)
			if got := len(q.all()) == 1; got != tt.queued {
				t.Errorf("queued %v, want %v", got, tt.queued)
			}
			if !ev.find(tt.event, "") {
				t.Errorf("no %v event", tt.event)
			}
			c.expect("MAIL FROM:<a@b.test>", "250 ") // the session goes on
		})
	}
}

func TestFilterAfterSTARTTLS(t *testing.T) {
	dir := t.TempDir()
	cert, key := writeCert(t, dir, "mx.test")
	f := newFakeFilter()
	ev := &eventLog{}
	q := newRecQueue()
	s := baseSettings(ev)
	s.CertFile, s.KeyFile = cert, key
	n := 0
	s.NewFilter = func(ctx context.Context, c FilterConn) (Filter, FilterReply) { n++; return f, FilterReply{} }
	_, addrs := startServer(t, s, q)
	c := dial(t, addrs["127.0.0.1:0"])
	c.expect("", "220 ")
	c.expect("EHLO one.test", "250-")
	c.startTLS()
	c.expect("EHLO two.test", "250-")
	got := f.callList()
	if n != 1 || !slices.Equal(got, []string{"helo one.test", "helo two.test"}) {
		t.Errorf("%d filters, calls %q", n, got)
	}
	if v := f.macro("{tls_version}"); !strings.HasPrefix(v, "TLSv1.") || f.macro("{cipher}") == "" || f.macro("{cipher_bits}") == "0" {
		t.Errorf("tls macros %q %q %q", v, f.macro("{cipher}"), f.macro("{cipher_bits}"))
	}
}

func TestSplitJoinHeader(t *testing.T) {
	tests := []struct {
		in     string
		fields []HeaderField
		body   string
		sep    bool
	}{
		{"A: 1\r\nB:2\r\n\tfold\r\n\r\nbody\r\n", []HeaderField{{Name: "A", Value: " 1"}, {Name: "B", Value: "2\r\n\tfold"}}, "body\r\n", true},
		{"A: 1\r\n\r\n", []HeaderField{{Name: "A", Value: " 1"}}, "", true},
		{"no header\r\n", nil, "no header\r\n", false},
		{"A: 1\r\nnot a field\r\n", []HeaderField{{Name: "A", Value: " 1"}}, "not a field\r\n", false},
		{"Subject : obs\r\n\r\nb\r\n", []HeaderField{{Name: "Subject ", Value: " obs"}}, "b\r\n", true},
		{"", nil, "", false},
	}
	for _, tt := range tests {
		f, b, sep := SplitHeader([]byte(tt.in))
		if !slices.Equal(f, tt.fields) || string(b) != tt.body || sep != tt.sep {
			t.Errorf("%q: got %+v %q %v", tt.in, f, b, sep)
		}
		if out := JoinHeader(f, b, sep); string(out) != tt.in {
			t.Errorf("%q: joined back to %q", tt.in, out)
		}
	}
}

// FuzzSplitHeader: client content split and joined again is unchanged,
// and every field it yields passes the checks applied to filter output.
func FuzzSplitHeader(f *testing.F) {
	f.Add([]byte("A: 1\r\nB:2\r\n\tfold\r\n\r\nbody\r\n"))
	f.Add([]byte("Received: from x\r\n by y\r\nSubject : obs\r\n\r\n"))
	f.Add([]byte("no header\r\n"))
	f.Fuzz(func(t *testing.T, in []byte) {
		c, err := readContent(bytes.NewReader(in), 1<<20, true)
		if err != nil {
			return
		}
		fields, body, sep := SplitHeader(c)
		if out := JoinHeader(fields, body, sep); !bytes.Equal(out, c) {
			t.Fatalf("round trip %q -> %q", c, out)
		}
		for _, h := range fields {
			if !validField(h) {
				t.Fatalf("field %+v from client content fails validField", h)
			}
		}
	})
}

func TestFilterBDAT(t *testing.T) {
	f := newFakeFilter()
	f.message = func(m FilterMessage) (FilterResult, error) {
		return FilterResult{Header: append(slices.Clone(m.Header), HeaderField{Name: "X-Seen", Value: " bdat"})}, nil
	}
	q, _, addr, _ := filterServer(t, f, FilterReply{})
	c := dial(t, addr)
	c.expect("", "220")
	c.expect("EHLO c", "250")
	c.expect("MAIL FROM:<a@b.test>", "250")
	c.expect("RCPT TO:<u@local.test>", "250")
	c.send("BDAT 10\r\nSubject: x")
	c.expect("", "250")
	c.send("BDAT 8 LAST\r\n\r\n\r\n.\r\nb")
	c.expect("", "250 2.0.0 Ok: queued as")
	got := string(q.all()[0].content)
	if !strings.HasSuffix(got, "Subject: x\r\nX-Seen: bdat\r\n\r\n.\r\nb\r\n") {
		t.Errorf("content %q", got)
	}
	// The next transaction on the same connection is filtered too.
	c.expect("MAIL FROM:<a@b.test>", "250")
	c.expect("RCPT TO:<u@local.test>", "250")
	c.send("BDAT 12 LAST\r\nSubject: y\r\n")
	c.expect("", "250 2.0.0 Ok: queued as")
	f.mu.Lock()
	n := len(f.got)
	f.mu.Unlock()
	if n != 2 {
		t.Errorf("filter saw %d messages, want 2", n)
	}
}

// A filter that is slow to open (milters not answering) must not hold up
// closing the server: the open is cancelled.
func TestFilterSlowOpenCancelledByClose(t *testing.T) {
	ev := &eventLog{}
	s := baseSettings(ev)
	started := make(chan struct{})
	s.NewFilter = func(ctx context.Context, c FilterConn) (Filter, FilterReply) {
		close(started)
		<-ctx.Done()
		return nil, FilterReply{}
	}
	srv, err := New(s, newRecQueue())
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Listen(); err != nil {
		t.Fatal(err)
	}
	go srv.Serve()
	var addr string
	for _, a := range srv.Addrs() {
		addr = a.String()
	}
	c := dial(t, addr)
	c.expect("", "220")
	c.send("EHLO c\r\n")
	<-started
	done := make(chan struct{})
	go func() { srv.Close(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Close waited for the filter to open")
	}
}

// FuzzXtext: decoding what a filter sends never panics, and encoding
// then decoding gives back the input.
func FuzzXtext(f *testing.F) {
	for _, s := range []string{"", "a+2Bb", "+", "+4", "+zz", "x=y", "\x00\xff", "rfc822;u+40x.test"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		decodeXtext(s)
		if d, ok := decodeXtext(encodeXtext(s)); !ok || d != s {
			t.Fatalf("%q -> %q -> %q %v", s, encodeXtext(s), d, ok)
		}
	})
}
