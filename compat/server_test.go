package compat

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// fakeBackend is an in-memory queue.
type fakeBackend struct {
	mu      sync.Mutex
	subs    []*Submission
	queue   []QueueEntry
	flushed []string
	applied []string
	fail    error
}

func (f *fakeBackend) Submit(ctx context.Context, m *Submission) (string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.fail != nil {
		return "", f.fail
	}
	f.subs = append(f.subs, m)
	e := QueueEntry{ID: m.ID, Arrival: m.Arrival, Size: int64(len(m.Content)), Sender: m.Sender}
	for _, r := range m.Rcpts {
		e.Rcpts = append(e.Rcpts, QueueRcpt{Addr: r})
	}
	f.queue = append(f.queue, e)
	return m.ID, nil
}

func (f *fakeBackend) List(ctx context.Context, fn func(*QueueEntry) bool) error {
	f.mu.Lock()
	q := append([]QueueEntry(nil), f.queue...)
	f.mu.Unlock()
	for i := range q {
		if !fn(&q[i]) {
			break
		}
	}
	return nil
}

func (f *fakeBackend) Flush(ctx context.Context, site, id string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.flushed = append(f.flushed, site+"|"+id)
	return nil
}

func (f *fakeBackend) Apply(ctx context.Context, a PostsuperAction, id string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	for i := range f.queue {
		if f.queue[i].ID == id {
			f.applied = append(f.applied, string(a)+id)
			switch a {
			case ActDelete:
				f.queue = append(f.queue[:i], f.queue[i+1:]...)
			case ActHold:
				f.queue[i].Held = true
			case ActRelease:
				if !f.queue[i].Held {
					return ErrNotFound
				}
				f.queue[i].Held = false
			}
			return nil
		}
	}
	return ErrNotFound
}

// ServeLocalSMTP echoes one line back, standing in for an SMTP session.
func (f *fakeBackend) ServeLocalSMTP(ctx context.Context, c net.Conn, uid uint32, login string) error {
	line, _ := bufio.NewReader(c).ReadString('\n')
	_, err := io.WriteString(c, "220 hello "+login+" "+line)
	return err
}

var testNow = time.Date(2026, 11, 29, 10, 24, 33, 0, time.UTC)

func startServer(t *testing.T, b Backend, mod func(*Handler)) *Client {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "control.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	h := &Handler{Backend: b, Hostname: "host.example", Origin: "host.example", MaxSize: 1 << 20,
		Now:        func() time.Time { return testNow },
		LookupUser: func(uid uint32) (string, string, error) { return "tester", "Test User", nil }}
	if mod != nil {
		mod(h)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { h.Serve(ctx, ln); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	return &Client{Socket: sock, Timeout: 10 * time.Second}
}

func TestSubmitEndToEnd(t *testing.T) {
	fb := &fakeBackend{}
	c := startServer(t, fb, nil)
	inv, err := ParseSendmail(CmdSendmail, []string{"-t", "-i", "-v", "-N", "never", "-XV", "cmd@x.example"})
	if err != nil {
		t.Fatal(err)
	}
	msg, _ := ReadMessage(strings.NewReader("From x\r\nTo: a@b.example\r\nBcc: h@b.example\r\n\r\nbody\r\n"), inv.DotEnds, 0)
	id, err := c.Submit(context.Background(), inv, msg)
	if err != nil {
		t.Fatal(err)
	}
	if len(fb.subs) != 1 || fb.subs[0].ID != id {
		t.Fatalf("backend got %d submissions, id %q", len(fb.subs), id)
	}
	m := fb.subs[0]
	if m.Sender != "tester@host.example" || m.Login != "tester" || m.DSNNotify != "never" || !m.VERP || !m.Trace {
		t.Errorf("submission %+v", m)
	}
	if want := []string{"cmd@x.example", "a@b.example", "h@b.example"}; strings.Join(m.Rcpts, ",") != strings.Join(want, ",") {
		t.Errorf("rcpts %q want %q", m.Rcpts, want)
	}
	for _, want := range []string{"\r\nTo: a@b.example\r\n", "From: Test User <tester@host.example>\r\n", "user tester)", "Message-Id: <" + id + "@host.example>"} {
		if !bytes.Contains(m.Content, []byte(want)) {
			t.Errorf("content lacks %q:\n%s", want, m.Content)
		}
	}
	if bytes.Contains(m.Content, []byte("Bcc")) {
		t.Errorf("Bcc kept:\n%s", m.Content)
	}
}

func TestSubmitErrors(t *testing.T) {
	tests := []struct {
		name string
		args []string
		msg  string
		mod  func(*Handler, *fakeBackend)
		code int
	}{
		{name: "no recipients", args: []string{"-t"}, msg: "Subject: x\n\n", code: ExitUsage},
		{name: "too big", args: []string{"a@b"}, msg: strings.Repeat("x", 2<<20), code: ExitDataErr},
		{name: "no login", args: []string{"a@b"}, msg: "\n",
			mod: func(h *Handler, _ *fakeBackend) {
				h.LookupUser = func(uint32) (string, string, error) { return "", "", errors.New("x") }
			},
			code: ExitOSErr},
		{name: "backend failure", args: []string{"a@b"}, msg: "\n",
			mod: func(_ *Handler, b *fakeBackend) { b.fail = errors.New("disk full") }, code: ExitTempFail},
		{name: "backend exit code", args: []string{"a@b"}, msg: "\n",
			mod: func(_ *Handler, b *fakeBackend) { b.fail = Exitf(ExitNoPerm, "not allowed") }, code: ExitNoPerm},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fb := &fakeBackend{}
			c := startServer(t, fb, func(h *Handler) {
				if tt.mod != nil {
					tt.mod(h, fb)
				}
			})
			inv, err := ParseSendmail(CmdSendmail, tt.args)
			if err != nil {
				t.Fatal(err)
			}
			_, err = c.Submit(context.Background(), inv, []byte(tt.msg))
			if got := ExitCode(err); got != tt.code {
				t.Fatalf("exit %d (%v), want %d", got, err, tt.code)
			}
			if len(fb.subs) != 0 {
				t.Fatal("message queued despite error")
			}
		})
	}
}

func TestListFlushPostsuperEndToEnd(t *testing.T) {
	fb := &fakeBackend{}
	c := startServer(t, fb, nil)
	ctx := context.Background()
	var ids []string
	for i := 0; i < 3; i++ {
		inv, _ := ParseSendmail(CmdSendmail, []string{"r@x.example"})
		id, err := c.Submit(ctx, inv, []byte("Subject: s\n\nb\n"))
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
	}
	var p, j bytes.Buffer
	if err := c.List(ctx, 'p', &p); err != nil {
		t.Fatal(err)
	}
	var want bytes.Buffer
	WriteMailq(&want, fb.queue, nil)
	if p.String() != want.String() {
		t.Fatalf("mailq over the socket:\n%s\nwant\n%s", p.String(), want.String())
	}
	if err := c.List(ctx, 'j', &j); err != nil || strings.Count(j.String(), "\n") != 3 {
		t.Fatalf("json: %v\n%s", err, j.String())
	}
	if err := c.Flush(ctx, "example.com", ""); err != nil || fb.flushed[0] != "example.com|" {
		t.Fatalf("flush: %v %q", err, fb.flushed)
	}

	var lines []string
	collect := func(s string) { lines = append(lines, s) }
	if err := c.Postsuper(ctx, PostsuperOp{ActHold, []string{ids[0]}}, nil, collect); err != nil {
		t.Fatal(err)
	}
	if err := c.Postsuper(ctx, PostsuperOp{ActDelete, []string{AllIDs}}, []string{"deferred"}, collect); err != nil {
		t.Fatal(err)
	}
	if err := c.Postsuper(ctx, PostsuperOp{ActDelete, []string{"4jckGV1dtNz1SGLS"}}, nil, collect); err != nil {
		t.Fatal(err)
	}
	wantLines := []string{ids[0] + ": placed on hold", "Placed on hold: 1 message", "Deleted: 2 messages", "Deleted: 0 messages"}
	if strings.Join(lines, "\n") != strings.Join(wantLines, "\n") {
		t.Fatalf("lines %q\nwant %q", lines, wantLines)
	}
	if len(fb.queue) != 1 || !fb.queue[0].Held {
		t.Fatalf("queue after postsuper: %+v", fb.queue)
	}
}

func TestPostsuperNotPermitted(t *testing.T) {
	fb := &fakeBackend{}
	c := startServer(t, fb, func(h *Handler) { h.Admin = func(uint32) bool { return false } })
	err := c.Postsuper(context.Background(), PostsuperOp{ActDelete, []string{AllIDs}}, nil, nil)
	if ExitCode(err) != ExitNoPerm {
		t.Fatalf("err %v, want EX_NOPERM", err)
	}
}

func TestSMTPMode(t *testing.T) {
	c := startServer(t, &fakeBackend{}, nil)
	var out bytes.Buffer
	if err := c.SMTP(context.Background(), strings.NewReader("EHLO x\n"), &out); err != nil {
		t.Fatal(err)
	}
	if out.String() != "220 hello tester EHLO x\n" {
		t.Fatalf("got %q", out.String())
	}
}

func TestDaemonDown(t *testing.T) {
	c := &Client{Socket: filepath.Join(t.TempDir(), "nothing.sock")}
	inv, _ := ParseSendmail(CmdSendmail, []string{"a@b"})
	_, err := c.Submit(context.Background(), inv, []byte("\n"))
	if ExitCode(err) != ExitTempFail || !errors.Is(err, ErrDaemonDown) {
		t.Fatalf("err %v", err)
	}
}

func TestProtocolGarbage(t *testing.T) {
	c := startServer(t, &fakeBackend{}, nil)
	for _, in := range []string{"HELLO\n", Hello + "op 999999999999\n", Hello + "op 3\nabcX", Hello + "end 0\n\n", Hello + "op 4\nnope\nend 0\n\n", Hello + strings.Repeat("x", 100) + "\n"} {
		conn, err := net.Dial("unix", c.Socket)
		if err != nil {
			t.Fatal(err)
		}
		io.WriteString(conn, in)
		conn.(*net.UnixConn).CloseWrite()
		conn.SetDeadline(time.Now().Add(5 * time.Second))
		_, err = readReply(bufio.NewReader(conn), nil)
		conn.Close()
		if ExitCode(err) == ExitOK {
			t.Errorf("%q accepted", in)
		}
	}
}

// FuzzReadRequest feeds arbitrary bytes to the request decoder, the part
// of the daemon any local user can reach.
func FuzzReadRequest(f *testing.F) {
	f.Add([]byte("op 6\nsubmit\nrcpt 3\na@b\ncontent 2\nx\n\nend 0\n\n"))
	f.Add([]byte("op 4\nlist\nformat 1\np\nend 0\n\n"))
	f.Add([]byte("op 1\n"))
	f.Fuzz(func(t *testing.T, in []byte) {
		h := &Handler{MaxSize: 1 << 16}
		req, err := h.readRequest(bufio.NewReader(bytes.NewReader(in)))
		if err == nil && req.op == "" {
			t.Fatal("request without op accepted")
		}
	})
}

// bigBackend lists n synthetic messages.
type bigBackend struct {
	fakeBackend
	n int
}

func (b *bigBackend) List(ctx context.Context, fn func(*QueueEntry) bool) error {
	e := QueueEntry{ID: "4jckGV1dtNz1SGLS", Arrival: testNow, Size: 4000, Sender: "sender@example.org",
		Rcpts: []QueueRcpt{{Addr: "rcpt@example.net", Reason: "connect to mx.example.net[192.0.2.1]:25: Connection timed out"}}}
	for i := 0; i < b.n; i++ {
		if !fn(&e) {
			break
		}
	}
	return nil
}

// BenchmarkMailqSocket100k is `mailq` end to end over the control socket
// for 100,000 queued messages (the daemon's own index walk excluded).
func BenchmarkMailqSocket100k(b *testing.B) {
	sock := filepath.Join(b.TempDir(), "control.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		b.Fatal(err)
	}
	h := &Handler{Backend: &bigBackend{n: 100000}}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go h.Serve(ctx, ln)
	c := &Client{Socket: sock}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if err := c.List(ctx, 'p', discard{}); err != nil {
			b.Fatal(err)
		}
	}
}

func TestPostsuperQueueRestriction(t *testing.T) {
	fb := &fakeBackend{}
	c := startServer(t, fb, nil)
	ctx := context.Background()
	var ids []string
	for i := 0; i < 2; i++ {
		inv, _ := ParseSendmail(CmdSendmail, []string{"r@x.example"})
		id, err := c.Submit(ctx, inv, []byte("\n"))
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
	}
	if err := c.Postsuper(ctx, PostsuperOp{ActHold, []string{ids[0]}}, nil, nil); err != nil {
		t.Fatal(err)
	}
	var lines []string
	err := c.Postsuper(ctx, PostsuperOp{ActDelete, ids}, []string{"hold"}, func(s string) { lines = append(lines, s) })
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(lines, "|") != ids[0]+": removed|Deleted: 1 message" || len(fb.queue) != 1 || fb.queue[0].ID != ids[1] {
		t.Fatalf("lines %q, queue %+v", lines, fb.queue)
	}
}
