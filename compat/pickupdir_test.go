package compat

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestParsePickupFile(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		max     int64
		sender  string
		rcpts   []string
		content string
		err     string // substring; "" for success
	}{
		{name: "basic", in: "x-sender: <a@b.example>\nx-receiver: <c@d.example>\nSubject: hi\n\nbody\n",
			sender: "a@b.example", rcpts: []string{"c@d.example"}, content: "Subject: hi\r\n\r\nbody\r\n"},
		{name: "case and crlf and several", in: "X-Sender: a@b.example\r\nX-RECEIVER: c@d.example\r\nx-receiver:   <e@f.example>  \r\nFrom: a@b.example\r\n\r\nline\r\nlast",
			sender: "a@b.example", rcpts: []string{"c@d.example", "e@f.example"}, content: "From: a@b.example\r\n\r\nline\r\nlast\r\n"},
		{name: "null sender", in: "x-sender: <>\nx-receiver: c@d.example\n\nb\n",
			sender: "", rcpts: []string{"c@d.example"}, content: "\r\nb\r\n"},
		{name: "anywhere in header", in: "Subject: s\nx-receiver: c@d.example\nx-sender: a@b.example\nTo: c@d.example\n\nb\n",
			sender: "a@b.example", rcpts: []string{"c@d.example"}, content: "Subject: s\r\nTo: c@d.example\r\n\r\nb\r\n"},
		{name: "folded receiver", in: "x-sender: a@b.example\nx-receiver:\n <c@d.example>\n\nb\n",
			sender: "a@b.example", rcpts: []string{"c@d.example"}, content: "\r\nb\r\n"},
		{name: "x-receiver in body stays", in: "x-sender: a@b.example\nx-receiver: c@d.example\n\nx-receiver: e@f.example\n",
			sender: "a@b.example", rcpts: []string{"c@d.example"}, content: "\r\nx-receiver: e@f.example\r\n"},
		{name: "bare CR is a line end", in: "x-sender: a@b.example\nx-receiver: c@d.example\n\na\r.\rb\n",
			sender: "a@b.example", rcpts: []string{"c@d.example"}, content: "\r\na\r\n.\r\nb\r\n"},
		{name: "no blank line", in: "x-sender: a@b.example\nx-receiver: c@d.example\nnot a header\n",
			sender: "a@b.example", rcpts: []string{"c@d.example"}, content: "\r\nnot a header\r\n"},
		{name: "no receiver", in: "x-sender: a@b.example\nSubject: s\n\nb\n", err: "no x-receiver"},
		{name: "no sender", in: "x-receiver: c@d.example\n\nb\n", err: "no x-sender"},
		{name: "two senders", in: "x-sender: a@b.example\nx-sender: e@b.example\nx-receiver: c@d.example\n\nb\n", err: "more than one x-sender"},
		{name: "empty receiver", in: "x-sender: a@b.example\nx-receiver: <>\n\nb\n", err: "empty address"},
		{name: "no domain", in: "x-sender: a@b.example\nx-receiver: root\n\nb\n", err: "no domain"},
		{name: "space", in: "x-sender: a@b.example\nx-receiver: c d@e.example\n\nb\n", err: "invalid address"},
		{name: "sender no domain", in: "x-sender: a\nx-receiver: c@d.example\n\nb\n", err: "x-sender"},
		{name: "bad utf8", in: "x-sender: a@b.example\nx-receiver: \xff@d.example\n\nb\n", err: "invalid address"},
		{name: "empty", in: "", err: "no x-sender"},
		{name: "too big", in: "x-sender: a@b.example\nx-receiver: c@d.example\n\n" + strings.Repeat("x", 100) + "\n", max: 50, err: "too big"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s, r, c, err := ParsePickupFile([]byte(tc.in), tc.max)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) || !errors.Is(err, ErrPickupFile) {
					t.Fatalf("err = %v, want %q (ErrPickupFile)", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if s != tc.sender || !slices.Equal(r, tc.rcpts) || string(c) != tc.content {
				t.Fatalf("got %q %q %q\nwant %q %q %q", s, r, c, tc.sender, tc.rcpts, tc.content)
			}
		})
	}
}

func TestParsePickupFileTooBigIsErrTooBig(t *testing.T) {
	_, _, _, err := ParsePickupFile([]byte("x-sender: a@b.c\nx-receiver: c@d.e\n\n"+strings.Repeat("y", 4000)), 1000)
	if !errors.Is(err, ErrTooBig) {
		t.Fatalf("err = %v, want ErrTooBig", err)
	}
}

func TestCompletePickupHeaders(t *testing.T) {
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	got := string(CompletePickupHeaders([]byte("Subject: s\r\n\r\nbody\r\n"), "QID", "mx.example", now))
	want := "Subject: s\r\nMessage-Id: <QID@mx.example>\r\nDate: Fri,  2 Jan 2026 03:04:05 +0000 (UTC)\r\n\r\nbody\r\n"
	if got != want {
		t.Fatalf("got %q\nwant %q", got, want)
	}
	full := "Date: x\r\nmessage-id: <y@z>\r\n\r\nbody\r\n"
	if got := string(CompletePickupHeaders([]byte(full), "QID", "h", now)); got != full {
		t.Fatalf("complete message changed: %q", got)
	}
	if got := string(CompletePickupHeaders([]byte("Date: x\r\n\r\nb\r\n"), "Q", "h", now)); got != "Date: x\r\nMessage-Id: <Q@h>\r\n\r\nb\r\n" {
		t.Fatalf("got %q", got)
	}
}

type pickupSink struct {
	mu   sync.Mutex
	got  []string // sender|rcpt,rcpt|content
	err  error
	seen chan struct{}
}

func (s *pickupSink) submit(_ context.Context, sender string, rcpts []string, content []byte) (string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.err != nil {
		return "", s.err
	}
	s.got = append(s.got, sender+"|"+strings.Join(rcpts, ",")+"|"+string(content))
	if s.seen != nil {
		select {
		case s.seen <- struct{}{}:
		default:
		}
	}
	return "ID" + string(rune('0'+len(s.got))), nil
}

func (s *pickupSink) list() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.got)
}

func writeOld(t *testing.T, path, data string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(data), 0o644); err != nil {
		t.Fatal(err)
	}
	old := time.Now().Add(-time.Minute)
	os.Chtimes(path, old, old)
}

func dirNames(t *testing.T, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range ents {
		out = append(out, e.Name())
	}
	return out
}

func TestPickupDirScan(t *testing.T) {
	dir, bad, outside := t.TempDir(), t.TempDir(), t.TempDir()
	good := "x-sender: a@b.example\nx-receiver: c@d.example\nSubject: s\n\nbody\n"
	writeOld(t, filepath.Join(dir, "good"), good)
	writeOld(t, filepath.Join(dir, "norcpt"), "x-sender: a@b.example\n\nbody\n")
	writeOld(t, filepath.Join(dir, ".hidden"), good)
	writeOld(t, filepath.Join(dir, "writing.tmp"), good)
	writeOld(t, filepath.Join(outside, "secret"), good)
	if err := os.Symlink(filepath.Join(outside, "secret"), filepath.Join(dir, "link")); err != nil {
		t.Fatal(err)
	}
	if err := os.Link(filepath.Join(outside, "secret"), filepath.Join(dir, "hard")); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(dir, "sub"), 0o755); err != nil {
		t.Fatal(err)
	}
	writeOld(t, filepath.Join(dir, "big"), "x-sender: a@b.example\nx-receiver: c@d.example\n\n"+strings.Repeat("z", 3000))
	// A file that does not parse yet but was just written may be being
	// written in place: it is left alone.
	if err := os.WriteFile(filepath.Join(dir, "fresh"), []byte("x-sender: a@b.exa"), 0o644); err != nil {
		t.Fatal(err)
	}

	sink := &pickupSink{}
	var logs []string
	p := &PickupDir{Dir: dir, BadDir: bad, MaxSize: 1000, Submit: sink.submit,
		Logf: func(f string, a ...any) { logs = append(logs, f) }}
	n, err := p.Scan(context.Background())
	if err != nil || n != 1 {
		t.Fatalf("Scan = %d, %v; logs %q", n, err, logs)
	}
	if got := sink.list(); len(got) != 1 || got[0] != "a@b.example|c@d.example|Subject: s\r\n\r\nbody\r\n" {
		t.Fatalf("submitted %q", got)
	}
	if got, want := dirNames(t, dir), []string{".hidden", "fresh", "sub", "writing.tmp"}; !slices.Equal(got, want) {
		t.Fatalf("left in pickup: %q, want %q", got, want)
	}
	wantBad := []string{"big", "big.reason", "hard", "hard.reason", "link", "link.reason", "norcpt", "norcpt.reason"}
	if got := dirNames(t, bad); !slices.Equal(got, wantBad) {
		t.Fatalf("bad dir: %q, want %q", got, wantBad)
	}
	for name, want := range map[string]string{"norcpt": "no x-receiver", "link": "not a regular file", "hard": "2 links", "big": "too big"} {
		r, err := os.ReadFile(filepath.Join(bad, name+".reason"))
		if err != nil || !strings.Contains(string(r), want) {
			t.Errorf("%s.reason = %q, %v; want %q", name, r, err, want)
		}
	}
	// The symlink was moved, not followed: its target is intact.
	if fi, err := os.Lstat(filepath.Join(bad, "link")); err != nil || fi.Mode()&os.ModeSymlink == 0 {
		t.Fatalf("link in bad dir: %v %v", fi, err)
	}
	if b, err := os.ReadFile(filepath.Join(outside, "secret")); err != nil || string(b) != good {
		t.Fatalf("symlink target touched: %q %v", b, err)
	}

	// A second reject of the same name does not overwrite the first.
	writeOld(t, filepath.Join(dir, "norcpt"), "x-sender: a@b.example\n\nagain\n")
	if _, err := p.Scan(context.Background()); err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(filepath.Join(bad, "norcpt.1")); err != nil || !strings.Contains(string(b), "again") {
		t.Fatalf("norcpt.1 = %q, %v", b, err)
	}
	if _, err := os.Stat(filepath.Join(bad, "norcpt.1.reason")); err != nil {
		t.Fatal(err)
	}
}

func TestPickupDirSubmitFailures(t *testing.T) {
	dir, bad := t.TempDir(), t.TempDir()
	good := "x-sender: a@b.example\nx-receiver: c@d.example\n\nbody\n"
	writeOld(t, filepath.Join(dir, "m1"), good)
	sink := &pickupSink{err: Exitf(ExitTempFail, "queue file write error")}
	p := &PickupDir{Dir: dir, BadDir: bad, Submit: sink.submit}
	if n, err := p.Scan(context.Background()); n != 0 || err != nil {
		t.Fatalf("Scan = %d, %v", n, err)
	}
	if got := dirNames(t, dir); !slices.Equal(got, []string{"m1"}) {
		t.Fatalf("temporary failure: pickup holds %q", got)
	}
	sink.err = errors.New("something odd") // not an ExitError: temporary
	p.Scan(context.Background())
	if got := dirNames(t, dir); !slices.Equal(got, []string{"m1"}) {
		t.Fatalf("plain error: pickup holds %q", got)
	}
	sink.err = Exitf(ExitUnavailable, "550 5.7.1 rejected by milter")
	p.Scan(context.Background())
	if got := dirNames(t, dir); len(got) != 0 {
		t.Fatalf("permanent failure: pickup holds %q", got)
	}
	if r, err := os.ReadFile(filepath.Join(bad, "m1.reason")); err != nil || !strings.Contains(string(r), "550 5.7.1") {
		t.Fatalf("reason %q %v", r, err)
	}
	sink.err = nil
	writeOld(t, filepath.Join(dir, "m2"), good)
	if n, _ := p.Scan(context.Background()); n != 1 {
		t.Fatalf("after recovery: %d queued", n)
	}
}

func TestPickupDirRun(t *testing.T) {
	dir, bad := t.TempDir(), t.TempDir()
	good := "x-sender: a@b.example\nx-receiver: c@d.example\n\nbody\n"
	writeOld(t, filepath.Join(dir, "before"), good)
	sink := &pickupSink{seen: make(chan struct{}, 10)}
	p := &PickupDir{Dir: dir, BadDir: bad, Submit: sink.submit}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- p.Run(ctx) }()
	wait := func(n int) {
		t.Helper()
		deadline := time.After(10 * time.Second)
		for len(sink.list()) < n {
			select {
			case <-sink.seen:
			case <-deadline:
				t.Fatalf("only %d of %d submitted", len(sink.list()), n)
			}
		}
	}
	wait(1)
	// The PowerMTA way: write a temporary name, then rename.
	tmp := filepath.Join(dir, "new.tmp")
	if err := os.WriteFile(tmp, []byte(strings.Replace(good, "body", "second", 1)), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, filepath.Join(dir, "new")); err != nil {
		t.Fatal(err)
	}
	wait(2)
	// Written in place in two steps: the partial file is not rejected.
	f, err := os.Create(filepath.Join(dir, "inplace"))
	if err != nil {
		t.Fatal(err)
	}
	f.WriteString("x-sender: a@b.example\n")
	f.Sync()
	time.Sleep(300 * time.Millisecond)
	f.WriteString("x-receiver: c@d.example\n\nthird\n")
	f.Close()
	wait(3)
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if got := dirNames(t, bad); len(got) != 0 {
		t.Fatalf("bad dir holds %q", got)
	}
	if got := sink.list(); !strings.HasSuffix(got[2], "third\r\n") {
		t.Fatalf("third = %q", got[2])
	}
}

// FuzzParsePickupFile checks that whatever a file holds, an accepted
// one has a sender, recipients and CRLF-only content without the
// envelope fields in its header.
func FuzzParsePickupFile(f *testing.F) {
	f.Add([]byte("x-sender: <a@b.example>\nx-receiver: <c@d.example>\nSubject: hi\n\nbody\n"))
	f.Add([]byte("X-Sender: <>\r\nX-Receiver: c@d\r\nX-Receiver: e@f\r\n\r\nbody"))
	f.Add([]byte("x-sender: a@b\nx-receiver:\n\t<c@d>\n\n"))
	f.Add([]byte("x-sender: a@b\nx-receiver: c@d\n\na\r.\rb\r\n.\r\n"))
	f.Add([]byte("x-sender: a@b\nx-sender: a@b\nx-receiver: c@d\n\n"))
	f.Add([]byte("x-receiver: c@d\n"))
	f.Add([]byte(""))
	f.Fuzz(func(t *testing.T, in []byte) {
		s, r, c, err := ParsePickupFile(in, 1<<16)
		if err != nil {
			if !errors.Is(err, ErrPickupFile) {
				t.Fatalf("error %v does not wrap ErrPickupFile", err)
			}
			return
		}
		if len(r) == 0 {
			t.Fatal("accepted without recipients")
		}
		for _, a := range append([]string{s}, r...) {
			if strings.ContainsAny(a, "\r\n<> \t") {
				t.Fatalf("bad address %q accepted", a)
			}
		}
		if bytes.Contains(bytes.ReplaceAll(c, []byte("\r\n"), nil), []byte("\r")) ||
			bytes.Contains(bytes.ReplaceAll(c, []byte("\r\n"), nil), []byte("\n")) {
			t.Fatalf("bare CR or LF in %q", c)
		}
		hdrs, _, _ := SplitHeader(toLF(c))
		for _, h := range hdrs {
			if n := strings.ToLower(h.Name); n == "x-sender" || n == "x-receiver" {
				t.Fatalf("%s left in %q", h.Name, c)
			}
		}
	})
}
