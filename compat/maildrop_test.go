package compat

import (
	"bufio"
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func newPickup(t *testing.T, fb *fakeBackend) *Pickup {
	t.Helper()
	dir := t.TempDir()
	drop, bad := filepath.Join(dir, "maildrop"), filepath.Join(dir, "bad")
	os.Mkdir(drop, 0o1730)
	os.Mkdir(bad, 0o700)
	h := &Handler{Backend: fb, Hostname: "host.example", Origin: "host.example", MaxSize: 1 << 16,
		Now:        func() time.Time { return testNow },
		LookupUser: func(uid uint32) (string, string, error) { return "dropper", "Drop Per", nil }}
	return &Pickup{Dir: drop, BadDir: bad, Handler: h}
}

func dropFile(t *testing.T, dir string, args []string, msg string) string {
	t.Helper()
	inv, err := ParseSendmail(CmdSendmail, args)
	if err != nil {
		t.Fatal(err)
	}
	name, err := WriteMaildrop(dir, EncodeMaildrop(inv, []byte(msg)))
	if err != nil {
		t.Fatal(err)
	}
	return name
}

func names(t *testing.T, dir string) []string {
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

func TestPickupHostileFiles(t *testing.T) {
	fb := &fakeBackend{}
	p := newPickup(t, fb)
	dropFile(t, p.Dir, []string{"-t"}, "To: a@x.example\nSubject: s\n\nb\n")

	// Garbage, a symlink, a hard link, an oversized file, a file of the
	// wrong op, a file still being written.
	os.WriteFile(filepath.Join(p.Dir, "garbage"), []byte("hello\n"), 0o644)
	secret := filepath.Join(t.TempDir(), "secret")
	os.WriteFile(secret, EncodeMaildrop(&Invocation{Rcpts: []string{"evil@x"}}, []byte("\n")), 0o600)
	os.Symlink(secret, filepath.Join(p.Dir, "symlink"))
	if err := os.Link(secret, filepath.Join(p.Dir, "hardlink")); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(p.Dir, "huge"), append([]byte(MaildropMagic), bytes.Repeat([]byte("x"), 2<<20)...), 0o644)
	os.WriteFile(filepath.Join(p.Dir, "listop"), []byte(MaildropMagic+"op 4\nlist\nend 0\n\n"), 0o644)
	os.WriteFile(filepath.Join(p.Dir, tmpPrefix+"inprogress"), []byte(MaildropMagic), 0o644)
	os.WriteFile(filepath.Join(p.Dir, "norcpt"), EncodeMaildrop(&Invocation{}, []byte("Subject: x\n\n")), 0o644)

	n, err := p.Scan(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if n != 1 || len(fb.subs) != 1 {
		t.Fatalf("queued %d, backend has %d", n, len(fb.subs))
	}
	m := fb.subs[0]
	if m.Login != "dropper" || m.UID != uint32(os.Getuid()) || m.Rcpts[0] != "a@x.example" || m.Sender != "dropper@host.example" {
		t.Errorf("submission %+v", m)
	}
	if got := strings.Join(names(t, p.Dir), ","); got != tmpPrefix+"inprogress" {
		t.Errorf("left in maildrop: %s", got)
	}
	bad := strings.Join(names(t, p.BadDir), ",")
	for _, want := range []string{"garbage", "symlink", "hardlink", "huge", "listop", "norcpt"} {
		if !strings.Contains(bad, want) {
			t.Errorf("%s not set aside (bad dir: %s)", want, bad)
		}
	}
	if _, err := os.Stat(secret); err != nil {
		t.Errorf("symlink target touched: %v", err)
	}
}

func TestPickupTemporaryFailureKeepsFile(t *testing.T) {
	fb := &fakeBackend{fail: Exitf(ExitTempFail, "spool busy")}
	p := newPickup(t, fb)
	name := dropFile(t, p.Dir, []string{"a@x"}, "\n")
	if n, _ := p.Scan(context.Background()); n != 0 {
		t.Fatal("queued despite failure")
	}
	if got := names(t, p.Dir); len(got) != 1 || got[0] != name {
		t.Fatalf("file not kept for retry: %q", got)
	}
	fb.fail = nil
	if n, _ := p.Scan(context.Background()); n != 1 {
		t.Fatal("not queued on retry")
	}
}

func TestPickupRunWatches(t *testing.T) {
	fb := &fakeBackend{}
	p := newPickup(t, fb)
	dropFile(t, p.Dir, []string{"early@x"}, "\n") // present at start
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- p.Run(ctx, time.Hour) }()
	time.Sleep(100 * time.Millisecond)
	dropFile(t, p.Dir, []string{"late@x"}, "\n") // seen through fsnotify
	deadline := time.Now().Add(5 * time.Second)
	for {
		fb.mu.Lock()
		n := len(fb.subs)
		fb.mu.Unlock()
		if n == 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("pickup queued %d of 2", n)
		}
		time.Sleep(20 * time.Millisecond)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

func TestPostdropCommand(t *testing.T) {
	dir := t.TempDir()
	inv, _ := ParseSendmail(CmdSendmail, []string{"a@x"})
	var out, errb bytes.Buffer
	env := Env{Stdin: bytes.NewReader(EncodeMaildrop(inv, []byte("Subject: x\n\nb\n"))), Stdout: &out, Stderr: &errb,
		Getenv: func(k string) string {
			if k == "SLUICE_MAILDROP" {
				return dir
			}
			return ""
		}}
	if code := Run(context.Background(), []string{"/usr/sbin/sluice-postdrop"}, env); code != 0 {
		t.Fatalf("exit %d: %s", code, errb.String())
	}
	if got := names(t, dir); len(got) != 1 || strings.HasPrefix(got[0], tmpPrefix) {
		t.Fatalf("maildrop holds %q", got)
	}
	env.Stdin = strings.NewReader("not a request")
	if code := Run(context.Background(), []string{"sluice-postdrop"}, env); code != ExitDataErr {
		t.Fatalf("garbage: exit %d", code)
	}
}

// FuzzPickupFile feeds arbitrary maildrop file bodies to the daemon side.
func FuzzPickupFile(f *testing.F) {
	inv := &Invocation{Rcpts: []string{"a@b"}, Extract: true}
	good := EncodeMaildrop(inv, []byte("To: c@d\nBcc: e@f\n\nbody\n"))
	f.Add(good[len(MaildropMagic):])
	f.Add([]byte("op 6\nsubmit\nsender-set 1\n1\nsender 0\n\nend 0\n\n"))
	f.Add([]byte("content 99999999\n"))
	f.Fuzz(func(t *testing.T, in []byte) {
		fb := &fakeBackend{}
		h := &Handler{Backend: fb, Hostname: "h", MaxSize: 1 << 16,
			LookupUser: func(uint32) (string, string, error) { return "u", "", nil }}
		_, err := h.SubmitFile(context.Background(), 1000, bufio.NewReader(bytes.NewReader(in)))
		if err == nil {
			if len(fb.subs) != 1 || len(fb.subs[0].Rcpts) == 0 {
				t.Fatalf("accepted without recipients")
			}
			for _, r := range fb.subs[0].Rcpts {
				if strings.ContainsAny(r, "\r\n<>") {
					t.Fatalf("bad recipient %q accepted", r)
				}
			}
		}
	})
}
