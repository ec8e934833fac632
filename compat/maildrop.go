package compat

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/fsnotify/fsnotify"
	"github.com/sluicemta/sluice/internal/qid"
	"golang.org/x/sys/unix"
)

// When the daemon is down, sendmail hands its request to the setgid
// helper sluice-postdrop (as Postfix's postdrop), which writes it into the
// maildrop directory: mode 1730, owned by the daemon's user and a
// dedicated group, never world-writable. A maildrop file is the magic line
// below followed by exactly the frames of a submit request (PROTOCOL.md)
// and the end frame. The daemon's Pickup submits each file as coming from
// the file's owner.

// MaildropMagic starts every maildrop file.
const MaildropMagic = "sluice-maildrop/1\n"

// DefaultMaildrop is the maildrop directory of a packaged install.
const DefaultMaildrop = "/var/spool/pmta/maildrop"

// tmpPrefix marks files still being written; Pickup ignores them.
const tmpPrefix = "tmp."

// EncodeMaildrop returns the maildrop file content for a submission.
func EncodeMaildrop(inv *Invocation, content []byte) []byte {
	var b bytes.Buffer
	w := bufio.NewWriter(&b)
	w.WriteString(MaildropMagic)
	writeSubmit(w, inv, content)
	writeStr(w, "end", "")
	w.Flush()
	return b.Bytes()
}

// WriteMaildrop stores data (from EncodeMaildrop) in dir atomically: a
// temporary name, fsync, then rename to a fresh queue-id-shaped name. The
// caller cannot list the directory, so the directory fsync is best effort.
func WriteMaildrop(dir string, data []byte) (string, error) {
	name := qid.New(time.Now())
	tmp := filepath.Join(dir, tmpPrefix+name)
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL|syscall.O_NOFOLLOW, 0o644)
	if err != nil {
		return "", fmt.Errorf("maildrop: create %s: %w", tmp, err)
	}
	_, err = f.Write(data)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, filepath.Join(dir, name))
	}
	if err != nil {
		os.Remove(tmp)
		return "", fmt.Errorf("maildrop: write %s: %w", name, err)
	}
	if d, err := os.Open(dir); err == nil {
		d.Sync()
		d.Close()
	}
	return name, nil
}

// SubmitFile submits a maildrop request (after its magic line) as coming
// from uid; the same checks apply as to a socket request.
func (h *Handler) SubmitFile(ctx context.Context, uid uint32, br *bufio.Reader) (string, error) {
	req, err := h.readRequest(br)
	if err != nil {
		if errors.Is(err, ErrTooBig) {
			return "", &ExitError{Code: ExitDataErr, Msg: "message file too big", Err: err}
		}
		return "", &ExitError{Code: ExitDataErr, Msg: err.Error(), Err: err}
	}
	if req.op != "submit" {
		return "", Exitf(ExitDataErr, "maildrop file with op %q", truncateStr(req.op, 40))
	}
	login, fullName, err := h.lookup(uid)
	if err != nil {
		return "", Exitf(ExitOSErr, "no login name found for user ID %d", uid)
	}
	return h.submit(ctx, req, &unix.Ucred{Uid: uid}, login, fullName)
}

// Pickup moves maildrop files into the queue. Files are hostile: only
// regular files with one link are opened (never through a symlink), the
// sender's identity is the file's owner, sizes are bounded, and a file
// that does not parse is moved to BadDir without stopping the others.
type Pickup struct {
	Dir     string
	BadDir  string // same file system as Dir; "" removes bad files
	Handler *Handler
	Logf    func(format string, args ...any)

	mu sync.Mutex
}

func (p *Pickup) logf(format string, args ...any) {
	if p.Logf != nil {
		p.Logf(format, args...)
	}
}

// Scan processes every complete file now in Dir and returns how many
// were queued. A temporary failure leaves the file for the next scan.
func (p *Pickup) Scan(ctx context.Context) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	ents, err := os.ReadDir(p.Dir)
	if err != nil {
		return 0, fmt.Errorf("pickup: read %s: %w", p.Dir, err)
	}
	n := 0
	for _, e := range ents {
		if ctx.Err() != nil {
			return n, ctx.Err()
		}
		name := e.Name()
		if strings.HasPrefix(name, tmpPrefix) {
			// An abandoned temporary file (the writer died) is removed
			// after a day.
			if info, err := e.Info(); err == nil && time.Since(info.ModTime()) > 24*time.Hour {
				os.Remove(filepath.Join(p.Dir, name))
			}
			continue
		}
		id, err := p.one(ctx, name)
		switch {
		case err == nil:
			n++
			p.logf("pickup: %s: queued as %s", name, id)
		case ExitCode(err) == ExitTempFail:
			p.logf("pickup: %s: deferred: %v", name, err)
		default:
			p.logf("pickup: %s: set aside: %v", name, err)
			p.setAside(name)
		}
	}
	return n, nil
}

func (p *Pickup) setAside(name string) {
	from := filepath.Join(p.Dir, name)
	if p.BadDir != "" {
		if err := os.Rename(from, filepath.Join(p.BadDir, name)); err == nil {
			return
		} else {
			p.logf("pickup: %s: cannot set aside: %v; removing", name, err)
		}
	}
	os.Remove(from)
}

// maxOverhead bounds the frames around the content in a maildrop file.
const maxOverhead = 1 << 20

func (p *Pickup) one(ctx context.Context, name string) (string, error) {
	path := filepath.Join(p.Dir, name)
	max := p.Handler.MaxSize
	if max <= 0 {
		max = defaultMaxSize
	}
	f, st, err := openHostile(path, max+maxOverhead)
	var bad *badFile
	switch {
	case errors.Is(err, errVanished):
		return "", Exitf(ExitTempFail, "vanished")
	case errors.As(err, &bad):
		return "", Exitf(ExitDataErr, "%s", bad.reason)
	case err != nil:
		return "", Exitf(ExitTempFail, "%v", err)
	}
	defer f.Close()
	br := bufio.NewReader(io.LimitReader(f, max+maxOverhead))
	magic := make([]byte, len(MaildropMagic))
	if _, err := io.ReadFull(br, magic); err != nil || string(magic) != MaildropMagic {
		return "", Exitf(ExitDataErr, "not a maildrop file")
	}
	id, err := p.Handler.SubmitFile(ctx, st.Uid, br)
	if err != nil {
		return "", err
	}
	if err := os.Remove(path); err != nil {
		// Queued but not removable: it would be queued twice. Loud.
		return id, fmt.Errorf("pickup: %s queued as %s but not removed: %w", name, id, err)
	}
	return id, nil
}

// Run scans at start, then whenever fsnotify reports a new name in Dir,
// and every interval as a safety net (0: one minute), until ctx ends.
func (p *Pickup) Run(ctx context.Context, interval time.Duration) error {
	if interval <= 0 {
		interval = time.Minute
	}
	return dirWatch{
		dir: p.Dir, interval: interval,
		// Files arrive whole, by rename: no need to wait for quiet.
		wanted: func(ev fsnotify.Event) bool {
			return ev.Op&(fsnotify.Create|fsnotify.Rename) != 0 && !strings.HasPrefix(filepath.Base(ev.Name), tmpPrefix)
		},
		scan: func() {
			if _, err := p.Scan(ctx); err != nil && ctx.Err() == nil {
				p.logf("%v", err)
			}
		},
		logf: p.logf,
	}.run(ctx)
}
