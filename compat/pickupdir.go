package compat

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/fsnotify/fsnotify"
	"golang.org/x/sys/unix"
)

// PowerMTA's "pickup DIR BADMAIL-DIR": any program may drop a message
// file in DIR whose first header lines give the envelope,
//
//	x-sender: <from@example.com>
//	x-receiver: <to@example.net>
//	x-receiver: <other@example.net>
//
// followed by the message. Writers use a temporary name ("." prefix or
// ".tmp" suffix) and rename it into place; such names are ignored.

// ErrPickupFile is wrapped by every error ParsePickupFile returns for a
// file that will never be accepted (it goes to the bad-mail directory).
var ErrPickupFile = errors.New("bad pickup file")

// maxPickupRcpts bounds the x-receiver lines of one file.
const maxPickupRcpts = 100000

func pickupErr(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrPickupFile}, args...)...)
}

// ParsePickupFile splits a pickup file into its envelope and content.
// x-sender (exactly one) and x-receiver (one or more) fields are taken,
// case-insensitively, from the header section and removed from the
// content, whose line ends become CRLF. "<>" is the null sender. max
// bounds the content (<= 0: 64 MiB); a larger file fails with an error
// wrapping ErrTooBig and ErrPickupFile.
func ParsePickupFile(data []byte, max int64) (sender string, rcpts []string, content []byte, err error) {
	if max <= 0 {
		max = defaultMaxSize
	}
	if int64(len(data)) > max+maxOverhead {
		return "", nil, nil, fmt.Errorf("%w: %w (%d bytes)", ErrPickupFile, ErrTooBig, len(data))
	}
	lf := toLF(data)
	hdrs, body, sep := SplitHeader(lf)
	var out bytes.Buffer
	out.Grow(len(lf) + len(lf)/32 + 2)
	haveSender := false
	for _, h := range hdrs {
		switch strings.ToLower(h.Name) {
		case "x-sender":
			if haveSender {
				return "", nil, nil, pickupErr("more than one x-sender")
			}
			a, err := pickupAddr(h.Value(), true)
			if err != nil {
				return "", nil, nil, pickupErr("x-sender: %v", err)
			}
			sender, haveSender = a, true
		case "x-receiver":
			a, err := pickupAddr(h.Value(), false)
			if err != nil {
				return "", nil, nil, pickupErr("x-receiver: %v", err)
			}
			if len(rcpts) >= maxPickupRcpts {
				return "", nil, nil, pickupErr("more than %d x-receiver lines", maxPickupRcpts)
			}
			rcpts = append(rcpts, a)
		default:
			out.WriteString(h.Raw)
		}
	}
	if !haveSender {
		return "", nil, nil, pickupErr("no x-sender header")
	}
	if len(rcpts) == 0 {
		return "", nil, nil, pickupErr("no x-receiver header")
	}
	if sep || len(body) > 0 {
		out.WriteByte('\n')
	}
	out.Write(body)
	if int64(out.Len()) > max {
		return "", nil, nil, fmt.Errorf("%w: %w (%d bytes)", ErrPickupFile, ErrTooBig, out.Len())
	}
	return sender, rcpts, toCRLF(out.String()), nil
}

// toLF turns CRLF, and a bare CR (never a line end in mail, and a
// smuggling tool), into LF, and ends a final line without an end.
func toLF(data []byte) []byte {
	out := bytes.ReplaceAll(data, []byte("\r\n"), []byte("\n"))
	out = bytes.ReplaceAll(out, []byte("\r"), []byte("\n"))
	if len(out) > 0 && out[len(out)-1] != '\n' {
		out = append(out, '\n')
	}
	return out
}

// pickupAddr checks one envelope address: "<addr>" or a bare addr, no
// spaces or controls, valid UTF-8, a domain part unless it is the null
// sender (allowed only when null is true).
func pickupAddr(v string, null bool) (string, error) {
	a := strings.TrimSpace(v)
	if strings.HasPrefix(a, "<") && strings.HasSuffix(a, ">") {
		a = a[1 : len(a)-1]
	}
	if a == "" {
		if null {
			return "", nil
		}
		return "", fmt.Errorf("empty address")
	}
	if len(a) > 320 || !utf8.ValidString(a) {
		return "", fmt.Errorf("invalid address %q", truncateStr(a, 80))
	}
	for _, c := range a {
		if c <= ' ' || c == 0x7f || c == '<' || c == '>' {
			return "", fmt.Errorf("invalid address %q", truncateStr(a, 80))
		}
	}
	at := strings.LastIndexByte(a, '@')
	if at <= 0 || at == len(a)-1 {
		return "", fmt.Errorf("address %q has no domain", truncateStr(a, 80))
	}
	return a, nil
}

// CompletePickupHeaders adds a Message-Id (queueID@hostname) and a Date
// when content (CRLF, from ParsePickupFile) lacks them, after the last
// header field, as Prepare does for sendmail.
func CompletePickupHeaders(content []byte, queueID, hostname string, now time.Time) []byte {
	hdrs, body, _ := SplitHeader(toLF(content))
	have := map[string]bool{}
	for _, h := range hdrs {
		have[strings.ToLower(h.Name)] = true
	}
	if have["message-id"] && have["date"] {
		return content
	}
	var b strings.Builder
	b.Grow(len(content) + 128)
	for _, h := range hdrs {
		b.WriteString(h.Raw)
	}
	if !have["message-id"] {
		fmt.Fprintf(&b, "Message-Id: <%s@%s>\n", queueID, hostname)
	}
	if !have["date"] {
		b.WriteString("Date: " + now.Format("Mon, _2 Jan 2006 15:04:05 -0700 (MST)") + "\n")
	}
	b.WriteString("\n")
	b.Write(body)
	return toCRLF(b.String())
}

// PickupDir queues the files of a PowerMTA pickup directory. Files are
// hostile: only regular files with one link are opened (never through a
// symlink), sizes are bounded, and a file that cannot be accepted is
// moved to BadDir with NAME.reason beside it, without stopping the
// others. A temporary Submit failure (ExitTempFail, or an error that is
// no ExitError) leaves the file for the next scan.
type PickupDir struct {
	Dir     string
	BadDir  string
	MaxSize int64 // content bound; <= 0: 64 MiB
	Submit  func(ctx context.Context, sender string, rcpts []string, content []byte) (id string, err error)
	Logf    func(format string, args ...any)

	mu    sync.Mutex
	young bool // a file was too fresh to judge; rescan soon
}

// pickupYoung is how long a file that does not parse may still be being
// written in place (by a writer that does not rename) and is left alone.
const pickupYoung = 5 * time.Second

func (p *PickupDir) logf(format string, args ...any) {
	if p.Logf != nil {
		p.Logf(format, args...)
	}
}

// ignoredPickupName reports names that are never messages: temporary
// names of writers, and anything that could be a path trick.
func ignoredPickupName(name string) bool {
	return name == "" || strings.HasPrefix(name, ".") || strings.HasSuffix(name, ".tmp") ||
		strings.ContainsAny(name, "/\x00")
}

// Scan processes every complete file now in Dir and returns how many
// were queued.
func (p *PickupDir) Scan(ctx context.Context) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.young = false
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
		if ignoredPickupName(name) || e.IsDir() {
			continue
		}
		id, err := p.one(ctx, name)
		var bad *pickupBad
		switch {
		case err == nil:
			n++
			p.logf("pickup %s: %q queued as %s", p.Dir, name, id)
		case errors.As(err, &bad):
			p.logf("pickup %s: %q rejected: %s", p.Dir, name, bad.reason)
			p.setAside(name, bad)
		case errors.Is(err, errPickupYoung):
			p.young = true
		default:
			p.logf("pickup %s: %q deferred: %v", p.Dir, name, err)
		}
	}
	return n, nil
}

// pickupBad is a file for the bad-mail directory; data is what was read
// (nil when it was not), for a copy when rename cannot move it.
type pickupBad struct {
	reason string
	data   []byte
}

func (b *pickupBad) Error() string { return b.reason }

var errPickupYoung = errors.New("pickup: file may still be being written")

func (p *PickupDir) one(ctx context.Context, name string) (string, error) {
	path := filepath.Join(p.Dir, name)
	max := p.MaxSize
	if max <= 0 {
		max = defaultMaxSize
	}
	f, st, err := openHostile(path, max+maxOverhead)
	var bad *badFile
	switch {
	case errors.Is(err, errVanished):
		return "", errPickupYoung // nothing to do
	case errors.As(err, &bad):
		return "", &pickupBad{reason: bad.reason}
	case err != nil:
		return "", err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, max+maxOverhead+1))
	if err != nil {
		return "", fmt.Errorf("read: %w", err)
	}
	sender, rcpts, content, err := ParsePickupFile(data, max)
	if err != nil {
		mtime := time.Unix(st.Mtim.Unix())
		if !errors.Is(err, ErrTooBig) && time.Since(mtime) < pickupYoung {
			return "", errPickupYoung
		}
		return "", &pickupBad{reason: err.Error(), data: data}
	}
	id, err := p.Submit(ctx, sender, rcpts, content)
	if err != nil {
		var x *ExitError
		if errors.As(err, &x) && x.Code != ExitTempFail {
			return "", &pickupBad{reason: err.Error(), data: data}
		}
		return "", err
	}
	if err := os.Remove(path); err != nil {
		// Queued but not removable: it would be queued again. Loud.
		p.logf("pickup %s: %q queued as %s but NOT removed: %v", p.Dir, name, id, err)
	}
	return id, nil
}

// setAside moves a rejected file to BadDir (a fresh name if taken) and
// writes NAME.reason beside it; without a bad-mail directory, or when
// neither rename nor copy works, the file is removed so it cannot block
// the pickup.
func (p *PickupDir) setAside(name string, bad *pickupBad) {
	from := filepath.Join(p.Dir, name)
	if p.BadDir == "" {
		os.Remove(from)
		return
	}
	dst := name
	for i := 1; ; i++ {
		_, err1 := os.Lstat(filepath.Join(p.BadDir, dst))
		_, err2 := os.Lstat(filepath.Join(p.BadDir, dst+".reason"))
		if errors.Is(err1, os.ErrNotExist) && errors.Is(err2, os.ErrNotExist) || i > 1000 {
			break
		}
		dst = fmt.Sprintf("%s.%d", name, i)
	}
	to := filepath.Join(p.BadDir, dst)
	err := os.Rename(from, to)
	if err != nil && bad.data != nil {
		// Another file system: copy what was read, then remove.
		if err = writeNew(to, bad.data); err == nil {
			os.Remove(from)
		}
	}
	if err != nil {
		p.logf("pickup %s: %q cannot be set aside: %v; removing", p.Dir, name, err)
		os.Remove(from)
		return
	}
	if err := writeNew(to+".reason", []byte(bad.reason+"\n")); err != nil {
		p.logf("pickup %s: %q: %v", p.Dir, name, err)
	}
}

// writeNew creates path (never through a symlink, never over a file).
func writeNew(path string, data []byte) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL|unix.O_NOFOLLOW, 0o600)
	if err != nil {
		return err
	}
	_, err = f.Write(data)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(path)
	}
	return err
}

// Run scans at start, then shortly after fsnotify reports a name in Dir,
// and every minute as a safety net (retrying deferred files), until ctx
// ends.
func (p *PickupDir) Run(ctx context.Context) error {
	return dirWatch{
		dir: p.Dir, interval: time.Minute,
		// Files are written in place: one scan once the burst is over.
		quiet: 100 * time.Millisecond,
		wanted: func(ev fsnotify.Event) bool {
			return ev.Op&(fsnotify.Create|fsnotify.Write) != 0 && !ignoredPickupName(filepath.Base(ev.Name))
		},
		again: func() bool {
			p.mu.Lock()
			defer p.mu.Unlock()
			return p.young
		},
		scan: func() {
			if _, err := p.Scan(ctx); err != nil && ctx.Err() == nil {
				p.logf("%v", err)
			}
		},
		logf: p.logf,
	}.run(ctx)
}
