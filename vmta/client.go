package vmta

// The SMTP client is our own rather than go-smtp's: go-smtp's client sends
// one command and waits for its reply, and bulk delivery needs PIPELINING
// (RFC 2920: MAIL, every RCPT and DATA in one write, one wait), RSET on a
// reused connection folded into that same write, and per-step timeouts.

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// conn is one SMTP session, owned by one Deliver call at a time.
type conn struct {
	nc    net.Conn
	r     *bufio.Reader
	w     *bufio.Writer
	key   connKey
	host  string // name used for EHLO checks, logs and TLS verification
	ip    netip.Addr
	port  int
	src   netip.Addr
	esmtp bool
	ext   map[string]string
	tls   *tls.ConnectionState
	// verified: the TLS certificate was checked against host.
	verified bool
	// implicitTLS: TLS starts on connect (port 465), before the greeting.
	implicitTLS bool
	msgs        int       // transactions finished on this connection
	used        bool      // a transaction has run (the next one starts with RSET)
	idleAt      time.Time // when it went into the cache
	idleFor     time.Duration
	broken      bool // must not be reused (I/O error, 421, protocol error)
	closed      bool
	open        *atomic.Int64 // the Deliverer's count of open sessions
}

// sessErr is a failure with the reply recipients get for it.
type sessErr struct {
	stage string
	reply Reply
	synth bool
	err   error
	// tlsFailed: the TLS handshake failed; an opportunistic session may
	// retry the same address in plain text.
	tlsFailed bool
	// final: no other host is tried (5xx greeting with BounceOn5xxGreeting).
	final bool
	// The host it happened with, when there was one.
	host string
	ip   netip.Addr
	port int
}

func (e *sessErr) Error() string {
	if e.err != nil {
		return fmt.Sprintf("%s: %s (%v)", e.stage, e.reply, e.err)
	}
	return fmt.Sprintf("%s: %s", e.stage, e.reply)
}

func (e *sessErr) Unwrap() error { return e.err }

func (c *conn) name() string { return fmt.Sprintf("%s[%s]:%d", c.host, c.ip, c.port) }

func (c *conn) has(ext string) bool {
	_, ok := c.ext[ext]
	return ok
}

// sizeLimit is the server's SIZE limit, 0 if none announced.
func (c *conn) sizeLimit() int64 {
	n, err := strconv.ParseInt(c.ext["SIZE"], 10, 64)
	if err != nil || n < 0 {
		return 0
	}
	return n
}

func newConn(nc net.Conn) *conn {
	return &conn{nc: nc, r: bufio.NewReaderSize(nc, 4096), w: bufio.NewWriterSize(nc, 32<<10)}
}

// read reads one reply within timeout.
func (c *conn) read(timeout time.Duration) (Reply, []string, error) {
	c.nc.SetReadDeadline(time.Now().Add(timeout))
	rep, lines, err := readReply(c.r)
	if err != nil {
		c.broken = true
	}
	return rep, lines, err
}

// flush writes what is buffered within timeout.
func (c *conn) flush(timeout time.Duration) error {
	c.nc.SetWriteDeadline(time.Now().Add(timeout))
	if err := c.w.Flush(); err != nil {
		c.broken = true
		return err
	}
	return nil
}

// cmd sends one command and waits for its reply.
func (c *conn) cmd(timeout time.Duration, line string) (Reply, []string, error) {
	c.w.WriteString(line)
	c.w.WriteString("\r\n")
	if err := c.flush(timeout); err != nil {
		return Reply{}, nil, err
	}
	return c.read(timeout)
}

// quit says goodbye without waiting long, then closes.
func (c *conn) quit() {
	if c.closed {
		return
	}
	c.closed = true
	if c.open != nil {
		c.open.Add(-1)
	}
	if !c.broken {
		c.nc.SetDeadline(time.Now().Add(2 * time.Second))
		c.w.WriteString("QUIT\r\n")
		if c.w.Flush() == nil {
			readReply(c.r)
		}
	}
	c.nc.Close()
}

// alive checks, without blocking, that a cached connection has not been
// closed by the server or sent an unsolicited reply (a 421 on idle timeout).
func (c *conn) alive() bool {
	if c.r.Buffered() > 0 {
		return false
	}
	c.nc.SetReadDeadline(time.Now())
	_, err := c.r.Peek(1)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return true
	}
	return false
}

// ioErr turns an I/O error during stage into the 4xx reply recipients get,
// worded like Postfix so operators recognise it.
func (c *conn) ioErr(stage, doing string, err error) *sessErr {
	c.broken = true
	what := "lost connection with"
	if errors.Is(err, os.ErrDeadlineExceeded) || isTimeout(err) {
		what = "conversation timed out with"
	}
	if errors.Is(err, errProtocol) {
		return &sessErr{stage: stage, synth: true, err: err,
			reply: synth(451, "4.5.0", "protocol error from %s while %s: %v", c.name(), doing, err)}
	}
	return &sessErr{stage: stage, synth: true, err: err,
		reply: synth(451, "4.4.2", "%s %s while %s", what, c.name(), doing)}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// connectErr words a dial failure (RFC 3463 4.4.1: no answer from host).
func connectErr(host string, ip netip.Addr, port int, err error) *sessErr {
	reason := err.Error()
	switch {
	case errors.Is(err, syscall.ECONNREFUSED):
		reason = "Connection refused"
	case errors.Is(err, syscall.EHOSTUNREACH), errors.Is(err, syscall.ENETUNREACH):
		reason = "No route to host"
	case errors.Is(err, context.DeadlineExceeded), isTimeout(err):
		reason = "Connection timed out"
	}
	return &sessErr{stage: StageConnect, synth: true, err: err,
		reply: synth(451, "4.4.1", "connect to %s[%s]:%d: %s", host, ip, port, reason)}
}

// setup reads the greeting, says EHLO (HELO if refused), when asked and
// offered starts TLS, and logs in when credentials are configured.
func (d *Deliverer) setup(c *conn, dest *Destination, plain bool) *sessErr {
	if c.implicitTLS {
		if se := d.handshake(c, dest); se != nil {
			se.tlsFailed = false // no plain-text service on a TLS port
			return se
		}
	}
	rep, _, err := c.read(dest.GreetingTimeout)
	if err != nil {
		return c.ioErr(StageGreeting, "receiving the initial server greeting", err)
	}
	switch {
	case rep.Code/100 == 2:
	case rep.Code/100 == 5 && dest.BounceOn5xxGreeting:
		return &sessErr{stage: StageGreeting, reply: rep, final: true}
	default:
		return &sessErr{stage: StageGreeting, reply: rep}
	}
	if se := d.hello(c, dest); se != nil {
		return se
	}
	// Credentials go over TLS only: a smarthost login makes TLS required.
	needTLS := dest.RequireStartTLS || dest.AuthUsername != ""
	wantTLS := (dest.UseStartTLS || needTLS) && c.tls == nil
	if !wantTLS || plain {
		return d.auth(c, dest)
	}
	if !c.has("STARTTLS") {
		if needTLS {
			return &sessErr{stage: StageSTARTTLS, synth: true,
				reply: synth(451, "4.7.4", "TLS is required, but was not offered by host %s", c.name())}
		}
		return nil
	}
	rep, _, err = c.cmd(dest.CommandTimeout, "STARTTLS")
	if err != nil {
		return c.ioErr(StageSTARTTLS, "sending STARTTLS", err)
	}
	if rep.Code != 220 {
		if rep.Code == 421 || needTLS {
			return &sessErr{stage: StageSTARTTLS, reply: rep}
		}
		return nil // opportunistic: carry on in plain text on this session
	}
	if se := d.handshake(c, dest); se != nil {
		return se
	}
	if se := d.hello(c, dest); se != nil {
		return se
	}
	return d.auth(c, dest)
}

// handshake starts TLS on c (after a 220 to STARTTLS, or on connect for
// implicit TLS). The certificate is checked only when TLS is required:
// opportunistic TLS against an unverified peer still beats plain text.
func (d *Deliverer) handshake(c *conn, dest *Destination) *sessErr {
	cfg := &tls.Config{}
	if d.opt.TLSConfig != nil {
		cfg = d.opt.TLSConfig.Clone()
	}
	if cfg.ClientSessionCache == nil {
		cfg.ClientSessionCache = d.tlsSessions
	}
	cfg.ServerName = c.host
	cfg.InsecureSkipVerify = !dest.RequireStartTLS
	if cfg.MinVersion == 0 {
		cfg.MinVersion = tls.VersionTLS10 // opportunistic: old TLS beats plain text
	}
	tc := tls.Client(c.nc, cfg)
	tc.SetDeadline(time.Now().Add(dest.CommandTimeout))
	if err := tc.Handshake(); err != nil {
		c.broken = true
		return &sessErr{stage: StageSTARTTLS, synth: true, err: err, tlsFailed: true,
			reply: synth(451, "4.7.5", "TLS handshake with %s failed: %v", c.name(), err)}
	}
	st := tc.ConnectionState()
	c.tls = &st
	c.verified = dest.RequireStartTLS
	c.nc = tc
	c.r = bufio.NewReaderSize(tc, 4096)
	c.w = bufio.NewWriterSize(tc, 32<<10)
	return nil
}

// auth logs in with the configured credentials, AUTH PLAIN (RFC 4616) or
// LOGIN, only over TLS. A refused login defers (the next host is tried):
// it is a configuration problem, never the recipients' fault.
func (d *Deliverer) auth(c *conn, dest *Destination) *sessErr {
	if dest.AuthUsername == "" {
		return nil
	}
	if c.tls == nil {
		return &sessErr{stage: StageAuth, synth: true,
			reply: synth(451, "4.7.4", "TLS is required to send credentials, but was not offered by host %s", c.name())}
	}
	mechs := strings.Fields(strings.ToUpper(c.ext["AUTH"]))
	b64 := base64.StdEncoding.EncodeToString
	var rep Reply
	var err error
	switch {
	case slices.Contains(mechs, "PLAIN"):
		rep, _, err = c.cmd(dest.CommandTimeout, "AUTH PLAIN "+b64([]byte("\x00"+dest.AuthUsername+"\x00"+dest.AuthPassword)))
	case slices.Contains(mechs, "LOGIN"):
		rep, _, err = c.cmd(dest.CommandTimeout, "AUTH LOGIN")
		for _, v := range []string{dest.AuthUsername, dest.AuthPassword} {
			if err != nil || rep.Code != 334 {
				break
			}
			rep, _, err = c.cmd(dest.CommandTimeout, b64([]byte(v)))
		}
	default:
		return &sessErr{stage: StageAuth, synth: true,
			reply: synth(451, "4.7.0", "host %s offers no AUTH mechanism we can use (PLAIN, LOGIN); credentials are configured for it", c.name())}
	}
	if err != nil {
		return c.ioErr(StageAuth, "authenticating", err)
	}
	if rep.Code != 235 {
		if rep.Code == 421 {
			c.broken = true
		}
		return &sessErr{stage: StageAuth, synth: true,
			reply: synth(451, "4.7.0", "SASL authentication failed; server %s said: %s", c.name(), rep)}
	}
	return nil
}

// hello sends EHLO, falling back to HELO when EHLO is refused.
func (d *Deliverer) hello(c *conn, dest *Destination) *sessErr {
	rep, lines, err := c.cmd(dest.CommandTimeout, "EHLO "+dest.HeloName)
	if err != nil {
		return c.ioErr(StageEHLO, "sending EHLO", err)
	}
	if rep.Code == 250 {
		c.esmtp = true
		c.ext = extensions(lines)
		if dest.IgnorePipelining {
			delete(c.ext, "PIPELINING")
		}
		if dest.IgnoreDSN {
			delete(c.ext, "DSN")
		}
		return nil
	}
	if rep.Code == 421 {
		c.broken = true
		return &sessErr{stage: StageEHLO, reply: rep}
	}
	rep, _, err = c.cmd(dest.CommandTimeout, "HELO "+dest.HeloName)
	if err != nil {
		return c.ioErr(StageEHLO, "sending HELO", err)
	}
	if rep.Code != 250 {
		return &sessErr{stage: StageEHLO, reply: rep}
	}
	c.esmtp = false
	c.ext = map[string]string{}
	return nil
}

// errStale: a cached connection turned out dead before any reply of this
// transaction; nothing was sent to anyone, so the caller redials.
var errStale = errors.New("cached connection is dead")

// txn is one transaction's recipients (indexes into Message.Rcpts).
type txn struct {
	msg                  *Message
	idx                  []int
	res                  []RcptResult // Result.Rcpts, written at idx
	smtputf8, dsn, body8 bool
	// The envelope as this session sends it: with A-label domains when
	// the server lacks SMTPUTF8 (rcpt holds only the rewritten ones).
	from string
	rcpt map[int]string

	// What the session sends: the message's content, or its 7-bit
	// conversion (prepare).
	content    io.ReaderAt
	size       int64
	downgraded bool
	// The content scan and the conversion, done at most once per Deliver.
	scanned     bool
	info        contentInfo
	scanErr     error
	down        []byte
	downChanged bool
	downErr     error
}

// transact runs one transaction. It fills res for every index in t.idx and
// returns the indexes refused with "452 4.5.3 too many recipients" when
// others were accepted: the caller sends those in a next transaction. A
// non-nil error means the connection is unusable (errStale: retry elsewhere,
// res untouched).
func (c *conn) transact(dest *Destination, t *txn) (retry []int, err error) {
	reset := c.used
	c.used = true
	mail := c.mailCmd(t)
	rcpts := make([]string, len(t.idx))
	for i, ix := range t.idx {
		rcpts[i] = c.rcptCmd(t, ix)
	}
	switch {
	case t.msg.Probe && c.has("PIPELINING"):
		return c.pipelinedProbe(dest, t, reset, mail, rcpts)
	case t.msg.Probe:
		return c.lockstepProbe(dest, t, reset, mail, rcpts)
	case c.has("PIPELINING"):
		return c.pipelined(dest, t, reset, mail, rcpts)
	}
	return c.lockstep(dest, t, reset, mail, rcpts)
}

func (c *conn) mailCmd(t *txn) string {
	var b strings.Builder
	b.WriteString("MAIL FROM:<")
	b.WriteString(t.from)
	b.WriteString(">")
	if c.has("SIZE") && t.size > 0 {
		b.WriteString(" SIZE=")
		b.WriteString(strconv.FormatInt(t.size, 10))
	}
	if t.body8 && c.has("8BITMIME") {
		b.WriteString(" BODY=8BITMIME")
	}
	if t.smtputf8 {
		b.WriteString(" SMTPUTF8")
	}
	if c.has("DSN") {
		if r := strings.ToUpper(t.msg.Ret); r == "FULL" || r == "HDRS" {
			b.WriteString(" RET=" + r)
		}
		if t.msg.EnvID != "" {
			b.WriteString(" ENVID=" + xtext(t.msg.EnvID))
		}
	}
	return b.String()
}

func (c *conn) rcptCmd(t *txn, ix int) string {
	r := t.msg.Rcpts[ix]
	addr := r.Addr
	if a, ok := t.rcpt[ix]; ok {
		addr = a
	}
	s := "RCPT TO:<" + addr + ">"
	if c.has("DSN") {
		if r.Notify != "" {
			s += " NOTIFY=" + strings.ToUpper(r.Notify)
		}
		if r.ORCPT != "" {
			typ, addr, ok := strings.Cut(r.ORCPT, ";")
			if !ok {
				typ, addr = "rfc822", r.ORCPT
			}
			s += " ORCPT=" + typ + ";" + xtext(addr)
		}
	}
	return s
}

// tooMany reports RFC 5321 4.5.3.1.10's "too many recipients" reply.
func tooMany(r Reply) bool {
	return r.Code == 452 && (r.Enhanced == "4.5.3" || strings.Contains(strings.ToLower(r.Text), "too many recipients"))
}

// set records a recipient's reply.
func (t *txn) set(ix int, stage string, rep Reply, synthesized bool) {
	t.res[ix] = RcptResult{Reply: rep, Stage: stage, Synthesized: synthesized}
}

func (t *txn) setAll(idx []int, stage string, rep Reply, synthesized bool) {
	for _, ix := range idx {
		t.set(ix, stage, rep, synthesized)
	}
}

func (t *txn) fail(idx []int, se *sessErr) {
	t.setAll(idx, se.stage, se.reply, se.synth)
}

// pipelined sends [RSET] MAIL RCPT... DATA in one write and reads the
// replies in one wait (RFC 2920 3.1).
func (c *conn) pipelined(dest *Destination, t *txn, reset bool, mail string, rcpts []string) ([]int, error) {
	batch := envelopeBatch(reset, mail, rcpts, "DATA")
	if len(batch) <= maxSyncBatch {
		if err := c.sendBatch(dest, t, reset, batch); err != nil {
			return nil, err
		}
	} else {
		// RFC 2920 5: a batch larger than the socket buffers deadlocks if
		// the server's replies are not read while it is written, so a big
		// one is written by a goroutine while the replies are read here.
		// It is still one write and one wait.
		errc := make(chan error, 1)
		c.nc.SetWriteDeadline(time.Now().Add(dest.CommandTimeout))
		go func() {
			_, err := c.w.Write(batch)
			if err == nil {
				err = c.w.Flush()
			}
			errc <- err
		}()
		done := false
		wait := func() {
			if !done {
				done = true
				if <-errc != nil {
					c.broken = true
				}
			}
		}
		defer wait() // before c.w is used again
		return c.readPipelined(dest, t, reset, len(rcpts), wait)
	}
	return c.readPipelined(dest, t, reset, len(rcpts), func() {})
}

// maxSyncBatch is the largest command batch written before reading replies.
const maxSyncBatch = 8 << 10

// readPipelined reads the replies to a pipelined batch; writeDone waits for
// the batch to be written before the content is sent.
func (c *conn) readPipelined(dest *Destination, t *txn, reset bool, nrcpt int, writeDone func()) ([]int, error) {
	mrep, replies, gone, err := c.readEnvelope(dest, t, reset, nrcpt)
	if err != nil {
		return nil, err
	}
	if gone != nil {
		writeDone()
		return c.afterData(dest, t, mrep, replies, *gone)
	}
	drep, _, err := c.read(dest.CommandTimeout)
	if err != nil {
		se := c.ioErr(StageData, "receiving the DATA reply", err)
		t.fail(t.idx, se)
		return nil, se
	}
	writeDone()
	if c.broken {
		se := c.ioErr(StageData, "sending the commands", errors.New("write failed"))
		t.fail(t.idx, se)
		return nil, se
	}
	return c.afterData(dest, t, mrep, replies, drep)
}

// envelopeBatch is [RSET] MAIL RCPT... and a last command, for one write.
func envelopeBatch(reset bool, mail string, rcpts []string, last string) []byte {
	var b []byte
	if reset {
		b = append(b, "RSET\r\n"...)
	}
	b = append(append(b, mail...), "\r\n"...)
	for _, r := range rcpts {
		b = append(append(b, r...), "\r\n"...)
	}
	return append(append(b, last...), "\r\n"...)
}

// sendBatch writes a batch small enough not to need its replies read
// meanwhile. A failure on a reused session (reset) means it went stale.
func (c *conn) sendBatch(dest *Destination, t *txn, reset bool, batch []byte) error {
	c.w.Write(batch)
	if err := c.flush(dest.CommandTimeout); err != nil {
		if reset {
			return errStale
		}
		se := c.ioErr(StageMail, "sending MAIL FROM", err)
		t.fail(t.idx, se)
		return se
	}
	return nil
}

// readEnvelope reads the replies to a pipelined [RSET] MAIL RCPT... batch.
// After a 421 the server hangs up: the replies still due never come, so
// the 421 stands for them, and gone points at it.
func (c *conn) readEnvelope(dest *Destination, t *txn, reset bool, nrcpt int) (mrep Reply, replies []Reply, gone *Reply, err error) {
	if reset {
		rep, _, err := c.read(dest.CommandTimeout)
		if err != nil || rep.Code != 250 {
			c.broken = true
			return mrep, nil, nil, errStale
		}
	}
	mrep, _, err = c.read(dest.CommandTimeout)
	if err != nil {
		se := c.ioErr(StageMail, "receiving the MAIL FROM reply", err)
		t.fail(t.idx, se)
		return mrep, nil, nil, se
	}
	if mrep.Code == 421 {
		gone = &mrep
	}
	replies = make([]Reply, nrcpt)
	for i := range replies {
		if gone != nil {
			replies[i] = *gone
			continue
		}
		replies[i], _, err = c.read(dest.CommandTimeout)
		if err != nil {
			se := c.ioErr(StageRcpt, "receiving the RCPT TO reply", err)
			t.fail(t.idx, se)
			return mrep, nil, nil, se
		}
		if replies[i].Code == 421 {
			gone = &replies[i]
		}
	}
	return mrep, replies, gone, nil
}

// lockstep is the same transaction without PIPELINING: one command, one wait.
func (c *conn) lockstep(dest *Destination, t *txn, reset bool, mail string, rcpts []string) ([]int, error) {
	mrep, replies, gone, err := c.lockstepEnvelope(dest, t, reset, mail, rcpts)
	if err != nil {
		return nil, err
	}
	if mrep.Code/100 != 2 {
		return c.afterData(dest, t, mrep, replies, mrep)
	}
	if gone != nil {
		return c.afterData(dest, t, mrep, replies, *gone)
	}
	any := false
	for _, r := range replies {
		any = any || r.Code/100 == 2
	}
	if !any {
		return c.afterData(dest, t, mrep, replies, Reply{Code: 554, Text: "no valid recipients (DATA not sent)"})
	}
	drep, _, err := c.cmd(dest.CommandTimeout, "DATA")
	if err != nil {
		se := c.ioErr(StageData, "sending DATA", err)
		t.fail(t.idx, se)
		return nil, se
	}
	return c.afterData(dest, t, mrep, replies, drep)
}

// lockstepEnvelope sends [RSET] MAIL and, if MAIL is accepted, each RCPT,
// one command at a time. After a 421 the server is going away: the
// recipients not yet sent stand with that reply, and gone points at it.
func (c *conn) lockstepEnvelope(dest *Destination, t *txn, reset bool, mail string, rcpts []string) (mrep Reply, replies []Reply, gone *Reply, err error) {
	if reset {
		rep, _, err := c.cmd(dest.CommandTimeout, "RSET")
		if err != nil || rep.Code != 250 {
			c.broken = true
			return mrep, nil, nil, errStale
		}
	}
	mrep, _, err = c.cmd(dest.CommandTimeout, mail)
	if err != nil {
		se := c.ioErr(StageMail, "sending MAIL FROM", err)
		t.fail(t.idx, se)
		return mrep, nil, nil, se
	}
	replies = make([]Reply, len(rcpts))
	if mrep.Code/100 != 2 {
		return mrep, replies, nil, nil
	}
	for i, r := range rcpts {
		replies[i], _, err = c.cmd(dest.CommandTimeout, r)
		if err != nil {
			se := c.ioErr(StageRcpt, "sending RCPT TO", err)
			t.fail(t.idx, se)
			return mrep, nil, nil, se
		}
		if replies[i].Code == 421 {
			for j := i + 1; j < len(rcpts); j++ {
				replies[j] = replies[i]
			}
			return mrep, replies, &replies[i], nil
		}
	}
	return mrep, replies, nil, nil
}

// applyRcpts records the RCPT replies and sorts the recipients: accepted,
// and refused with "452 4.5.3 too many recipients" (later, for a next
// transaction). closeErr says whether a reply ended the session.
func (c *conn) applyRcpts(dest *Destination, t *txn, replies []Reply) (accepted, later []int, closeErr error) {
	for i, ix := range t.idx {
		rep := replies[i]
		if dest.InvalidMailbox553 && rep.Code == 553 && (rep.Enhanced == "" || rep.Enhanced == "5.0.0") {
			rep.Enhanced = "5.1.1" // smtp-553-means-invalid-mailbox
		}
		t.set(ix, StageRcpt, rep, false)
		switch {
		case rep.Code/100 == 2:
			accepted = append(accepted, ix)
		case tooMany(rep):
			later = append(later, ix)
		}
		if err := c.closing(rep); err != nil && closeErr == nil {
			closeErr = err
		}
	}
	return accepted, later, closeErr
}

// closing returns an error when rep means the server is closing the
// connection (421, RFC 5321 3.8).
func (c *conn) closing(rep Reply) error {
	if rep.Code == 421 {
		c.broken = true
		return fmt.Errorf("vmta: %s closed the session: %s", c.name(), rep)
	}
	return nil
}

// afterData applies MAIL, RCPT and DATA replies, sends the content when the
// server is ready for it and applies the final reply.
func (c *conn) afterData(dest *Destination, t *txn, mrep Reply, replies []Reply, drep Reply) ([]int, error) {
	if mrep.Code/100 != 2 {
		t.setAll(t.idx, StageMail, mrep, false)
		if drep.Code == 354 {
			c.abortData(dest)
		}
		return nil, c.closing(mrep)
	}
	accepted, later, closeErr := c.applyRcpts(dest, t, replies)
	if drep.Code != 354 {
		t.setAll(accepted, StageData, drep, false)
		if err := c.closing(drep); err != nil && closeErr == nil {
			closeErr = err
		}
		return nil, closeErr
	}
	if len(accepted) == 0 {
		// RFC 2920 3.1: a server that answers DATA with 354 after refusing
		// every recipient gets an empty message, which it must reject.
		c.abortData(dest)
		return nil, closeErr
	}
	if err := c.sendBody(dest, t); err != nil {
		var le *localErr
		if errors.As(err, &le) {
			// Our fault, mid-DATA: the session cannot be ended cleanly, and
			// closing without the dot makes the server drop the message.
			c.broken = true
			se := &sessErr{stage: StageData, synth: true, err: err,
				reply: synth(451, "4.3.0", "local error reading the queued message: %v", le.err)}
			t.fail(accepted, se)
			return nil, se
		}
		se := c.ioErr(StageData, "sending message body", err)
		t.fail(accepted, se)
		return nil, se
	}
	frep, _, err := c.read(dest.DataTerminationTimeout)
	if err != nil {
		// The whole message is out; only its acknowledgement is missing.
		// The server may have queued it: see "Data termination" in doc.go.
		se := c.ioErr(StageDot, "receiving the end of data reply", err)
		se.reply.Text += "; the message may have been delivered (outcome unknown)"
		t.fail(accepted, se)
		for _, ix := range accepted {
			t.res[ix].OutcomeUnknown = true
		}
		return nil, se
	}
	c.msgs++
	t.setAll(accepted, StageDot, frep, false)
	if err := c.closing(frep); err != nil {
		return nil, err
	}
	if closeErr != nil {
		return nil, closeErr
	}
	return later, nil
}

// abortData ends a DATA the server should not have accepted.
func (c *conn) abortData(dest *Destination) {
	c.w.WriteString(".\r\n")
	if c.flush(dest.CommandTimeout) != nil {
		return
	}
	c.read(dest.DataTerminationTimeout)
}

// bodyBufs recycles the buffers content is read through, so a message
// costs no 64 KiB allocation.
var bodyBufs = sync.Pool{New: func() any { b := make([]byte, 64<<10); return &b }}

// localErr is a failure to read our own copy of the message.
type localErr struct{ err error }

func (e *localErr) Error() string { return e.err.Error() }
func (e *localErr) Unwrap() error { return e.err }

// sendBody streams the content, dot-stuffed, refreshing the write deadline
// for every chunk so DataTimeout bounds a stall, not the whole transfer.
func (c *conn) sendBody(dest *Destination, t *txn) error {
	msg := t.msg
	dw := newDotWriter(c.w)
	if t.content != nil {
		src := t.reader()
		bp := bodyBufs.Get().(*[]byte)
		defer bodyBufs.Put(bp)
		buf := *bp
		for {
			n, err := src.Read(buf)
			if n > 0 {
				c.nc.SetWriteDeadline(time.Now().Add(dest.DataTimeout))
				dw.Write(buf[:n])
			}
			if err == io.EOF {
				break
			}
			if err != nil {
				return &localErr{fmt.Errorf("vmta: read message %s: %w", msg.ID, err)}
			}
		}
	}
	dw.close()
	return c.flush(dest.DataTimeout)
}
