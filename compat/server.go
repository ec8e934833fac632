package compat

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os/user"
	"strconv"
	"strings"
	"time"

	"github.com/sluicemta/sluice/internal/qid"
	"golang.org/x/sys/unix"
)

// Submission is one locally submitted message, checked and prepared, as
// the daemon's Backend receives it.
type Submission struct {
	ID      string // queue id chosen by the Handler (qid.New); the Backend keeps it
	Arrival time.Time
	UID     uint32 // the caller, from SO_PEERCRED: trusted
	PID     int32
	Login   string // the caller's login name, from UID
	Sender  string // envelope sender; "" is the null sender
	Rcpts   []string
	Content []byte // CRLF line ends, with Received: and added headers

	Body       string // "8BITMIME", "7BIT" or ""
	DSNNotify  string
	DSNRet     string
	EnvID      string
	VERP       bool
	VERPDelims string
	RequireTLS string // "yes", "no" or ""
	SMTPUTF8   string
	Verify     bool // -bv: verify the recipients and mail a report
	Trace      bool // -v once: mail the sender a delivery report (Postfix's record flag)
}

// Backend is what the daemon provides to the sendmail family.
type Backend interface {
	// Submit queues m and returns only once it is durable; the returned
	// id is the one mailq and the logs will show (normally m.ID). An
	// *ExitError selects sendmail's exit code; other errors exit 75.
	Submit(ctx context.Context, m *Submission) (id string, err error)
	// List calls fn for each queued message until fn returns false.
	List(ctx context.Context, fn func(*QueueEntry) bool) error
	// Flush schedules immediate delivery: everything, or only the
	// messages for site, or only the message id (one of site, id set).
	Flush(ctx context.Context, site, id string) error
	// Apply performs a postsuper action on one message; ErrNotFound if
	// there is no such message (or, for release, it is not held).
	Apply(ctx context.Context, a PostsuperAction, id string) error
}

// LocalSMTP is implemented by a Backend that can serve sendmail -bs: an
// SMTP session on conn for a local user.
type LocalSMTP interface {
	ServeLocalSMTP(ctx context.Context, conn net.Conn, uid uint32, login string) error
}

// ErrNotFound is returned by Backend.Apply for an unknown id.
var ErrNotFound = errors.New("no such message")

// Handler serves the compat protocol (PROTOCOL.md) on the daemon's
// control socket.
type Handler struct {
	Backend  Backend
	Hostname string // for Received: and Message-Id:
	Origin   string // domain for unqualified addresses ("" leaves them)
	MaxSize  int64  // largest message accepted, bytes; <= 0: 64 MiB
	// AdminUIDs may run postsuper besides root; Admin, when set, decides
	// instead (tests, or a daemon with its own policy).
	AdminUIDs []uint32
	Admin     func(uid uint32) bool
	// Now and LookupUser are for tests; nil means time.Now and os/user.
	Now        func() time.Time
	LookupUser func(uid uint32) (login, fullName string, err error)
	// Timeout bounds one request; 0 means 10 minutes.
	Timeout time.Duration
	// AdminOps are further operations without fields (reopen-logs,
	// clear-dnscache, ...), allowed to the same callers as postsuper.
	AdminOps map[string]func(ctx context.Context) error
}

const defaultMaxSize = 64 << 20

// Serve accepts connections on ln until ctx is done or ln fails.
func (h *Handler) Serve(ctx context.Context, ln net.Listener) error {
	go func() { <-ctx.Done(); ln.Close() }()
	for {
		c, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("compat: accept: %w", err)
		}
		go func() {
			defer c.Close()
			h.ServeConn(ctx, c)
		}()
	}
}

// PeerCred returns the credentials of the process at the other end of a
// unix socket connection.
func PeerCred(c net.Conn) (*unix.Ucred, error) {
	uc, ok := c.(*net.UnixConn)
	if !ok {
		return nil, fmt.Errorf("compat: peer credentials: %T is not a unix socket", c)
	}
	raw, err := uc.SyscallConn()
	if err != nil {
		return nil, fmt.Errorf("compat: peer credentials: %w", err)
	}
	var cred *unix.Ucred
	var cerr error
	if err := raw.Control(func(fd uintptr) {
		cred, cerr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	}); err != nil {
		return nil, fmt.Errorf("compat: peer credentials: %w", err)
	}
	if cerr != nil {
		return nil, fmt.Errorf("compat: peer credentials: %w", cerr)
	}
	return cred, nil
}

// request is one decoded request.
type request struct {
	op     string
	fields map[string][]string
	body   []byte
}

func (r *request) get(k string) string {
	if v := r.fields[k]; len(v) > 0 {
		return v[0]
	}
	return ""
}

func (r *request) has(k string) bool { return len(r.fields[k]) > 0 }

// ServeConn serves one request on c, which must be a unix socket; the
// Hello line may already have been consumed by a router only if br holds
// the rest (use ServeConnReader then).
func (h *Handler) ServeConn(ctx context.Context, c net.Conn) error {
	return h.ServeConnReader(ctx, c, bufio.NewReader(c), true)
}

// ServeConnReader is ServeConn for a connection whose reader a router has
// already wrapped; wantHello says whether the Hello line is still unread.
func (h *Handler) ServeConnReader(ctx context.Context, c net.Conn, br *bufio.Reader, wantHello bool) error {
	timeout := h.Timeout
	if timeout == 0 {
		timeout = 10 * time.Minute
	}
	c.SetDeadline(time.Now().Add(timeout))
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	bw := bufio.NewWriter(c)
	defer bw.Flush()
	fail := func(code int, format string, args ...any) error {
		msg := fmt.Sprintf(format, args...)
		writeStr(bw, "status", encodeStatus(code, msg))
		return fmt.Errorf("compat: %s", msg)
	}
	cred, err := PeerCred(c)
	if err != nil {
		return fail(ExitSoftware, "%v", err)
	}
	if wantHello {
		line, err := br.ReadString('\n')
		if err != nil || line != Hello {
			return fail(ExitProtocol, "bad hello %q", truncateStr(line, 40))
		}
	}
	req, err := h.readRequest(br)
	if err != nil {
		if errors.Is(err, ErrTooBig) {
			return fail(ExitDataErr, "message file too big")
		}
		return fail(ExitProtocol, "%v", err)
	}
	login, fullName, lerr := h.lookup(cred.Uid)
	switch req.op {
	case "submit":
		if lerr != nil {
			return fail(ExitOSErr, "no login name found for user ID %d", cred.Uid)
		}
		id, err := h.submit(ctx, req, cred, login, fullName)
		if err != nil {
			code := ExitCode(err)
			var xe *ExitError
			if !errors.As(err, &xe) {
				return fail(code, "queue file write error: %v", err)
			}
			if code == ExitUsage {
				// Postfix names the caller in these: "root(0): No recipient..."
				return fail(code, "%s(%d): %s", login, cred.Uid, xe.Msg)
			}
			return fail(code, "%s", xe.Msg)
		}
		return writeStr(bw, "status", encodeStatus(ExitOK, id))
	case "list":
		return h.list(ctx, req, bw)
	case "flush":
		if id := req.get("id"); id != "" {
			if err := checkFlushID(id); err != nil {
				return fail(ExitUsage, "%v", err)
			}
		}
		if err := h.Backend.Flush(ctx, req.get("site"), req.get("id")); err != nil {
			return fail(ExitCode(err), "flush: %v", err)
		}
		return writeStr(bw, "status", encodeStatus(ExitOK, ""))
	case "postsuper":
		if !h.admin(cred.Uid) {
			return fail(ExitNoPerm, "use of this command is reserved for the superuser")
		}
		return h.postsuper(ctx, req, bw)
	case "smtp":
		ls, ok := h.Backend.(LocalSMTP)
		if !ok {
			return fail(ExitUnavailable, "stand-alone SMTP mode is not available")
		}
		if lerr != nil {
			return fail(ExitOSErr, "no login name found for user ID %d", cred.Uid)
		}
		if err := writeStr(bw, "status", encodeStatus(ExitOK, "smtp")); err != nil {
			return err
		}
		bw.Flush()
		c.SetDeadline(time.Time{})
		return ls.ServeLocalSMTP(ctx, &bufferedConn{Conn: c, r: br}, cred.Uid, login)
	}
	if op, ok := h.AdminOps[req.op]; ok {
		if !h.admin(cred.Uid) {
			return fail(ExitNoPerm, "use of this command is reserved for the superuser")
		}
		if err := op(ctx); err != nil {
			return fail(ExitCode(err), "%s: %v", req.op, err)
		}
		return writeStr(bw, "status", encodeStatus(ExitOK, ""))
	}
	return fail(ExitProtocol, "unknown operation %q", truncateStr(req.op, 40))
}

// bufferedConn reads what the bufio.Reader already holds first.
type bufferedConn struct {
	net.Conn
	r *bufio.Reader
}

func (b *bufferedConn) Read(p []byte) (int, error) { return b.r.Read(p) }

func (h *Handler) readRequest(br *bufio.Reader) (*request, error) {
	req := &request{fields: map[string][]string{}}
	max := h.MaxSize
	if max <= 0 {
		max = defaultMaxSize
	}
	n := 0
	for {
		tag, p, err := readFrameLimit(br, func(tag string) int {
			if tag == "content" {
				return int(max)
			}
			return maxFieldLen
		})
		if err != nil {
			var big *frameTooBigError
			if errors.As(err, &big) && big.tag == "content" {
				return nil, fmt.Errorf("compat: request: %w", ErrTooBig)
			}
			return nil, fmt.Errorf("compat: request: %w", err)
		}
		switch tag {
		case "end":
			if req.op == "" {
				return nil, fmt.Errorf("%w: request without op", ErrProtocol)
			}
			return req, nil
		case "op":
			req.op = string(p)
		case "content":
			req.body = p
		default:
			n++
			if n > maxRcpts+64 {
				return nil, fmt.Errorf("%w: too many fields", ErrProtocol)
			}
			req.fields[tag] = append(req.fields[tag], string(p))
		}
	}
}

func (h *Handler) lookup(uid uint32) (string, string, error) {
	if h.LookupUser != nil {
		return h.LookupUser(uid)
	}
	u, err := user.LookupId(strconv.FormatUint(uint64(uid), 10))
	if err != nil {
		return "", "", err
	}
	full, _, _ := strings.Cut(u.Name, ",") // GECOS: the first field is the name
	return u.Username, full, nil
}

func (h *Handler) admin(uid uint32) bool {
	if h.Admin != nil {
		return h.Admin(uid)
	}
	if uid == 0 {
		return true
	}
	for _, a := range h.AdminUIDs {
		if a == uid {
			return true
		}
	}
	return false
}

// checkAddr refuses what cannot be an address on an envelope.
func checkAddr(a string) error {
	if len(a) > 998 {
		return Exitf(ExitDataErr, "address too long")
	}
	for i := 0; i < len(a); i++ {
		if a[i] < 0x20 || a[i] == 0x7f || a[i] == '<' || a[i] == '>' {
			return Exitf(ExitDataErr, "bad character in address %q", truncateStr(a, 64))
		}
	}
	return nil
}

func (h *Handler) submit(ctx context.Context, req *request, cred *unix.Ucred, login, fullName string) (string, error) {
	now := time.Now()
	if h.Now != nil {
		now = h.Now()
	}
	max := h.MaxSize
	if max <= 0 {
		max = defaultMaxSize
	}
	// The client already read the message; normalise again, since the
	// daemon trusts nothing a client sends.
	content, err := readMessage(bytes.NewReader(req.body), false, false, max)
	if err != nil {
		if errors.Is(err, ErrTooBig) {
			return "", Exitf(ExitDataErr, "message file too big")
		}
		return "", err
	}
	sender := login
	if req.get("sender-set") == "1" {
		sender = req.get("sender")
	}
	if err := checkAddr(sender); err != nil {
		return "", err
	}
	rcpts := req.fields["rcpt"]
	for _, r := range rcpts {
		if err := checkAddr(r); err != nil {
			return "", err
		}
	}
	if f := req.get("fullname"); f != "" {
		fullName = f
	}
	if strings.ContainsAny(fullName, "\r\n\x00") {
		return "", Exitf(ExitDataErr, "bad full name")
	}
	for _, k := range []string{"body", "notify", "ret", "envid", "verp", "requiretls", "smtputf8"} {
		if v := req.get(k); v != "" && !allPrint(v) {
			return "", Exitf(ExitDataErr, "bad %s value", k)
		}
	}
	id := qid.New(now)
	p, err := Prepare(content, PrepareParams{
		Sender: sender, FullName: fullName, Rcpts: rcpts,
		Extract: req.get("extract") == "1", Gateway: req.get("gateway") == "1",
		Origin: h.Origin, Hostname: h.Hostname, QueueID: id,
		UID: cred.Uid, Login: login, Now: now,
	})
	if err != nil {
		return "", err
	}
	m := &Submission{
		ID: id, Arrival: now, UID: cred.Uid, PID: cred.Pid, Login: login,
		Sender: p.Sender, Rcpts: p.Rcpts, Content: p.Content,
		Body: req.get("body"), DSNNotify: req.get("notify"), DSNRet: req.get("ret"),
		EnvID: req.get("envid"), VERP: req.has("verp"), VERPDelims: req.get("verp"),
		RequireTLS: req.get("requiretls"), SMTPUTF8: req.get("smtputf8"),
		Verify: req.get("verify") == "1", Trace: req.get("trace") == "1",
	}
	return h.Backend.Submit(ctx, m)
}

// frameWriter turns writes into data frames.
type frameWriter struct{ w *bufio.Writer }

func (f frameWriter) Write(p []byte) (int, error) {
	if err := writeFrame(f.w, "data", p); err != nil {
		return 0, err
	}
	return len(p), nil
}

func (h *Handler) list(ctx context.Context, req *request, bw *bufio.Writer) error {
	fw := frameWriter{bw}
	var werr error
	switch req.get("format") {
	case "j":
		out := bufio.NewWriterSize(fw, 64<<10)
		var b []byte
		err := h.Backend.List(ctx, func(e *QueueEntry) bool {
			b = AppendJSON(b[:0], e)
			_, werr = out.Write(b)
			return werr == nil
		})
		if err == nil {
			err = werr
		}
		if err == nil {
			err = out.Flush()
		}
		if err != nil {
			return writeStr(bw, "status", encodeStatus(ExitTempFail, fmt.Sprintf("list: %v", err)))
		}
	default:
		m := NewMailqWriter(fw, nil)
		err := h.Backend.List(ctx, func(e *QueueEntry) bool {
			werr = m.Write(e)
			return werr == nil
		})
		if err == nil {
			err = werr
		}
		if err == nil {
			err = m.Close()
		}
		if err != nil {
			return writeStr(bw, "status", encodeStatus(ExitTempFail, fmt.Sprintf("list: %v", err)))
		}
	}
	return writeStr(bw, "status", encodeStatus(ExitOK, ""))
}

func (h *Handler) postsuper(ctx context.Context, req *request, bw *bufio.Writer) error {
	a := req.get("action")
	if len(a) != 1 || PostsuperAction(a[0]).Done() == "?" {
		return writeStr(bw, "status", encodeStatus(ExitUsage, "bad postsuper action"))
	}
	act := PostsuperAction(a[0])
	queues := map[string]bool{}
	for _, q := range req.fields["queue"] {
		queues[q] = true
	}
	ids := req.fields["id"]
	all := req.get("all") == "1"
	if all {
		ids = nil
		err := h.Backend.List(ctx, func(e *QueueEntry) bool {
			if len(queues) == 0 || queues[e.QueueName()] {
				ids = append(ids, e.ID)
			}
			return true
		})
		if err != nil {
			return writeStr(bw, "status", encodeStatus(ExitTempFail, fmt.Sprintf("list: %v", err)))
		}
	}
	// Postfix only looks in the named queues: one pass finds where the
	// requested ids are.
	var inQueues map[string]bool
	if len(queues) > 0 && !all {
		want := map[string]bool{}
		for _, id := range ids {
			want[id] = true
		}
		inQueues = map[string]bool{}
		err := h.Backend.List(ctx, func(e *QueueEntry) bool {
			if want[e.ID] && queues[e.QueueName()] {
				inQueues[e.ID] = true
			}
			return true
		})
		if err != nil {
			return writeStr(bw, "status", encodeStatus(ExitTempFail, fmt.Sprintf("list: %v", err)))
		}
	}
	n, failed := 0, false
	for _, id := range ids {
		if err := qid.Check(id); err != nil {
			writeStr(bw, "line", "warning: invalid mail queue id: "+quoteID(id))
			continue
		}
		if inQueues != nil && !inQueues[id] {
			continue
		}
		err := h.Backend.Apply(ctx, act, id)
		switch {
		case err == nil:
			n++
			if !all {
				writeStr(bw, "line", id+": "+act.Done())
			}
		case errors.Is(err, ErrNotFound):
		default:
			failed = true
			writeStr(bw, "line", fmt.Sprintf("warning: %s: %v", id, err))
		}
	}
	writeStr(bw, "line", act.Total(n))
	if failed {
		return writeStr(bw, "status", encodeStatus(ExitTempFail, "some operations failed"))
	}
	return writeStr(bw, "status", encodeStatus(ExitOK, ""))
}

func truncateStr(s string, n int) string {
	if len(s) > n {
		return s[:n] + "..."
	}
	return s
}

var _ io.Writer = frameWriter{}
