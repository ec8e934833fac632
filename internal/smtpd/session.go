package smtpd

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync/atomic"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"

	"github.com/sluicemta/sluice/internal/qid"
)

var (
	errAuthRequired = &smtp.SMTPError{Code: 530, EnhancedCode: smtp.EnhancedCode{5, 7, 0}, Message: "Authentication required"}
	errAuthTLS      = &smtp.SMTPError{Code: 538, EnhancedCode: smtp.EnhancedCode{5, 7, 11}, Message: "Encryption required for requested authentication mechanism"}
	errAuthFailed   = &smtp.SMTPError{Code: 535, EnhancedCode: smtp.EnhancedCode{5, 7, 8}, Message: "Error: authentication failed"}
	errAuthRate     = &smtp.SMTPError{Code: 421, EnhancedCode: smtp.EnhancedCode{4, 7, 0}, Message: "Error: too many authentication failures"}
	errTooManyErrs  = &smtp.SMTPError{Code: 421, EnhancedCode: smtp.EnhancedCode{4, 7, 0}, Message: "Error: too many errors"}
	errTooManyRcpts = &smtp.SMTPError{Code: 452, EnhancedCode: smtp.EnhancedCode{4, 5, 3}, Message: "Error: too many recipients"}
	errNeedUTF8     = &smtp.SMTPError{Code: 553, EnhancedCode: smtp.EnhancedCode{5, 6, 7}, Message: "Must declare SMTPUTF8 to send unicode address"}
	errQueueFull    = &smtp.SMTPError{Code: 452, EnhancedCode: smtp.EnhancedCode{4, 3, 1}, Message: "Insufficient system storage"}
	errQueueWrite   = &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 3, 0}, Message: "Error: queue file write error"}
	errAbandoned    = &smtp.SMTPError{Code: 421, EnhancedCode: smtp.EnhancedCode{4, 3, 0}, Message: "Error: chunked transfer abandoned, please reconnect"}
	errShutdown     = &smtp.SMTPError{Code: 421, EnhancedCode: smtp.EnhancedCode{4, 3, 2}, Message: "Service shutting down"}
)

// backend makes sessions for one settings generation.
type backend struct {
	srv *Server
	gen *generation
}

// NewSession is called by go-smtp at the first HELO/EHLO (and again after
// STARTTLS).
func (b *backend) NewSession(c *smtp.Conn) (smtp.Session, error) {
	sc := connState(c.Conn())
	if sc == nil {
		return nil, errors.New("smtpd: connection not admitted")
	}
	s := b.gen.s
	sc.nameOnce.Do(func() {
		sc.name = "unknown"
		if s.ClientName != nil {
			ctx, cancel := context.WithTimeout(b.srv.ctx, min(s.CommandTimeout, 30*time.Second))
			if n := s.ClientName(ctx, sc.ap.Addr()); n != "" {
				sc.name = n
			}
			cancel()
		}
	})
	sess := &session{srv: b.srv, s: &b.gen.s, c: c, sc: sc, policy: sc.policy}
	var st *tls.ConnectionState
	if cs, ok := c.TLSConnectionState(); ok {
		st = &cs
	}
	if f := sc.startFilter(&b.gen.s, c.Hostname(), st); f != nil {
		sess.filter = f
		// Every HELO/EHLO that makes a session (the first, and the one
		// after STARTTLS) is reported; go-smtp handles a repeated EHLO
		// as a reset without asking us.
		if r := f.helo(c.Hostname(), st); r.Code != 0 {
			return nil, sess.filterReject(sess.event(EvReject), "HELO", r)
		}
	}
	return sess, nil
}

// session is one go-smtp Session: from HELO/EHLO to QUIT or STARTTLS.
type session struct {
	srv *Server
	s   *Settings
	c   *smtp.Conn
	sc  *sconn

	policy   Policy
	authUser string
	authMech string
	ehlo     bool // go-smtp asks AuthMechanisms only while answering EHLO

	env *Envelope // the transaction in progress, nil between them

	filter *lockedFilter // the connection's content filter, or nil

	// dataActive is set while Data runs. Under BDAT, Data runs in its own
	// goroutine and go-smtp may Reset the transaction (RSET, EHLO, a chunk
	// over the size limit) while it still runs.
	dataActive atomic.Bool
	// bdatAbandoned is set by Data when go-smtp closed its chunk pipe
	// (RSET or a new MAIL mid-BDAT). go-smtp closes the pipe BEFORE it
	// calls Reset, so Data may have returned by then: dataActive alone
	// would miss the abandoned transfer.
	bdatAbandoned atomic.Bool
}

func (s *session) event(kind EventKind) Event {
	e := Event{Kind: kind, Listener: s.sc.listener, Client: s.sc.ap, Helo: s.c.Hostname(), AuthUser: s.authUser, Proto: s.proto()}
	if s.env != nil {
		e.From = s.env.From
	}
	return e
}

// reject logs a refused command, counts it for the tarpit, sleeps the
// tarpit delay and returns the reply (421 and hang-up at the hard limit).
func (s *session) reject(cmd string, e *smtp.SMTPError, detail error) error {
	return s.rejectAddr(cmd, "", "", e, detail)
}

// rejectAddr is reject with the addresses of the refused command.
func (s *session) rejectAddr(cmd, from, rcpt string, e *smtp.SMTPError, detail error) error {
	ev := s.event(EvReject)
	if from != "" {
		ev.From = from
	}
	ev.Rcpt = rcpt
	return s.rejectWith(ev, cmd, e, detail)
}

// rejectWith does the work of reject from a prepared event; it reads no
// session field that go-smtp's goroutine may change (see Data).
func (s *session) rejectWith(ev Event, cmd string, e *smtp.SMTPError, detail error) error {
	ev.Kind = EvReject
	ev.Command, ev.Code, ev.Text, ev.Err = cmd, e.Code, replyText(e), detail
	s.srv.log(ev)
	n := int(s.sc.errCount.Add(1))
	if n >= s.s.HardErrorLimit {
		return s.hangupWith(ev, errTooManyErrs)
	}
	if over := n - s.s.SoftErrorLimit; over > 0 {
		d := min(time.Duration(over)*s.s.ErrorDelay, s.s.CommandTimeout/2)
		t := time.NewTimer(d)
		select {
		case <-t.C:
		case <-s.srv.ctx.Done():
			t.Stop()
		}
	}
	return e
}

// hangup makes the connection close right after e is written.
func (s *session) hangup(e *smtp.SMTPError) error {
	return s.hangupWith(s.event(EvReject), e)
}

func (s *session) hangupWith(ev Event, e *smtp.SMTPError) error {
	ev.Kind, ev.Err = EvReject, nil
	ev.Command, ev.Code, ev.Text = "-", e.Code, replyText(e)
	s.srv.log(ev)
	s.sc.hangup.Store(true)
	return e
}

// replyText is an event's Text: the enhanced code and message, without
// the basic code (that is Event.Code).
func replyText(e *smtp.SMTPError) string {
	return fmt.Sprintf("%d.%d.%d %s", e.EnhancedCode[0], e.EnhancedCode[1], e.EnhancedCode[2], e.Message)
}

func (s *session) isTLS() bool {
	_, ok := s.c.TLSConnectionState()
	return ok
}

// authOffered: AUTH only over TLS or from loopback, unless the policy
// allows plain-text passwords from this client.
func (s *session) authOffered() bool {
	return s.s.CheckPassword != nil &&
		(s.isTLS() || s.sc.ap.Addr().IsLoopback() || s.policy.AllowPlainAuthUnencrypted)
}

func (s *session) AuthMechanisms() []string {
	s.ehlo = true
	if !s.authOffered() {
		return nil
	}
	return []string{sasl.Plain, "LOGIN"}
}

func (s *session) Auth(mech string) (sasl.Server, error) {
	if s.s.CheckPassword == nil {
		return nil, smtp.ErrAuthUnsupported
	}
	if !s.authOffered() {
		return nil, s.reject("AUTH", errAuthTLS, nil)
	}
	if s.srv.authFail.exhausted(s.sc.ap.Addr(), time.Now()) {
		return nil, s.hangup(errAuthRate)
	}
	switch strings.ToUpper(mech) {
	case sasl.Plain:
		s.authMech = sasl.Plain
		return &plainServer{check: s.checkAuth}, nil
	case "LOGIN":
		s.authMech = "LOGIN"
		return &loginServer{check: s.checkAuth}, nil
	}
	return nil, smtp.ErrAuthUnknownMechanism
}

func (s *session) checkAuth(identity, user, pass string) error {
	ok := (identity == "" || identity == user) && user != "" &&
		!hasControl(user) && s.s.CheckPassword(user, pass)
	if !ok {
		ev := s.event(EvAuth)
		ev.Code, ev.Text, ev.Err = errAuthFailed.Code, replyText(errAuthFailed), fmt.Errorf("smtpd: auth failed for %q", printable(user))
		s.srv.log(ev)
		if !s.srv.authFail.allow(s.sc.ap.Addr(), time.Now()) {
			return s.hangup(errAuthRate)
		}
		return s.reject("AUTH", errAuthFailed, nil)
	}
	s.authUser = user
	s.policy = s.s.PolicyFor(s.sc.ap.Addr(), user)
	if s.filter != nil {
		s.filter.setMacro("{auth_type}", s.authMech)
		s.filter.setMacro("{auth_authen}", user)
	}
	s.srv.log(s.event(EvAuth))
	return nil
}

func (s *session) maxSize() int64 {
	if m := s.policy.MaxMessageSize; m > 0 && m < s.s.MaxMessageSize {
		return m
	}
	return s.s.MaxMessageSize
}

func (s *session) Mail(from string, opts *smtp.MailOptions) error {
	if s.sc.drain.Load() {
		return s.hangup(errShutdown)
	}
	if s.sc.hangup.Load() {
		return errAbandoned // the write closes the connection
	}
	if s.authUser == "" && (s.policy.RequireAuth || s.sc.mode != Plain) {
		return s.reject("MAIL", errAuthRequired, nil)
	}
	if e := checkSender(from); e != nil {
		return s.rejectAddr("MAIL", from, "", e, nil)
	}
	if !opts.UTF8 && !isASCII(from) {
		return s.rejectAddr("MAIL", from, "", errNeedUTF8, nil)
	}
	if opts.Size > s.maxSize() {
		return s.rejectAddr("MAIL", from, "", &smtp.SMTPError{Code: 552, EnhancedCode: smtp.EnhancedCode{5, 3, 4}, Message: "Message size exceeds fixed limit"}, nil)
	}
	env := &Envelope{
		From:     from,
		Ret:      string(opts.Return),
		EnvID:    opts.EnvelopeID,
		SMTPUTF8: opts.UTF8,
		Body:     string(opts.Body),
	}
	if s.filter != nil {
		// Filters know the queue id from MAIL on (macro i), as in Postfix.
		env.ID = qid.New(time.Now())
		s.filter.setMacro("i", env.ID)
		if r := s.filter.mail(from, mailArgs(opts)); r.Code != 0 {
			ev := s.event(EvReject)
			ev.From = from
			return s.filterReject(ev, "MAIL", r)
		}
	}
	s.env = env
	s.sc.busy.Store(true)
	return nil
}

func (s *session) Rcpt(to string, opts *smtp.RcptOptions) error {
	if s.env == nil {
		return &smtp.SMTPError{Code: 503, EnhancedCode: smtp.EnhancedCode{5, 5, 1}, Message: "Error: need MAIL command"}
	}
	max := s.policy.MaxRcpts
	if max <= 0 {
		max = defaultMaxRcpts
	}
	if len(s.env.Rcpts) >= max {
		// Not a client error: a bulk sender splits and retries.
		ev := s.event(EvReject)
		ev.Command, ev.Code, ev.Text, ev.Rcpt = "RCPT", errTooManyRcpts.Code, replyText(errTooManyRcpts), to
		s.srv.log(ev)
		if s.filter != nil {
			s.filter.rejectedRcpt(to, rcptArgs(opts), fmt.Sprintf("%d %s", errTooManyRcpts.Code, replyText(errTooManyRcpts)))
		}
		return errTooManyRcpts
	}
	if !s.env.SMTPUTF8 && !isASCII(to) {
		return s.rcptRefused(to, opts, errNeedUTF8)
	}
	trusted := s.policy.Relay || s.authUser != ""
	if e := checkRcpt(to, trusted, s.s.LocalDomain); e != nil {
		return s.rcptRefused(to, opts, e)
	}
	if s.filter != nil {
		if r := s.filter.rcpt(to, rcptArgs(opts)); r.Code != 0 {
			ev := s.event(EvReject)
			ev.Rcpt = to
			return s.filterReject(ev, "RCPT", r)
		}
	}
	r := Rcpt{Addr: to}
	if opts.OriginalRecipient != "" {
		r.ORCPT = string(opts.OriginalRecipientType) + ";" + opts.OriginalRecipient
	}
	for _, n := range opts.Notify {
		switch n {
		case smtp.DSNNotifyNever:
			r.Notify |= NotifyNever
		case smtp.DSNNotifySuccess:
			r.Notify |= NotifySuccess
		case smtp.DSNNotifyFailure:
			r.Notify |= NotifyFailure
		case smtp.DSNNotifyDelayed:
			r.Notify |= NotifyDelay
		}
	}
	s.env.Rcpts = append(s.env.Rcpts, r)
	return nil
}

// dataSnap is what Data needs from the session, copied before the first
// read of content. Under BDAT, Data runs in go-smtp's own goroutine while
// the connection goroutine may Reset the session or take the next
// command, so Data touches no session field after taking it.
type dataSnap struct {
	ev     Event // base for events
	env    *Envelope
	policy Policy
	proto  string
	helo   string
	user   string
	tls    *tls.ConnectionState
}

func (s *session) snapshot() dataSnap {
	d := dataSnap{ev: s.event(EvReject), env: s.env, policy: s.policy, proto: s.proto(), helo: s.c.Hostname(), user: s.authUser}
	if st, ok := s.c.TLSConnectionState(); ok {
		d.tls = &st
	}
	return d
}

func (s *session) Data(r io.Reader) error {
	s.dataActive.Store(true)
	defer s.dataActive.Store(false)
	snap := s.snapshot()
	env := snap.env
	if env == nil || len(env.Rcpts) == 0 {
		io.Copy(io.Discard, r)
		return &smtp.SMTPError{Code: 503, EnhancedCode: smtp.EnhancedCode{5, 5, 1}, Message: "Error: need RCPT command"}
	}
	if f := s.filter; f != nil {
		// Ends the filter's transaction on every way out; a no-op once
		// the message was filtered.
		defer f.abort()
		if fr := f.data(); fr.Code != 0 {
			// go-smtp has already said 354: the refusal answers the content.
			io.Copy(io.Discard, r)
			return s.filterReject(snap.ev, "DATA", fr)
		}
	}
	max := s.s.MaxMessageSize
	if m := snap.policy.MaxMessageSize; m > 0 && m < max {
		max = m
	}
	s.sc.dataMode(s.s.DataTimeout)
	content, err := readContent(r, max, snap.policy.NormalizeBareNewlines)
	s.sc.dataMode(0)
	if errors.Is(err, smtp.ErrDataReset) {
		s.bdatAbandoned.Store(true) // before dataActive clears (deferred)
	}
	if err != nil {
		var se *smtp.SMTPError
		if !errors.As(err, &se) {
			se = errDataRead
		}
		if se.Code == 421 || se == errDataRead || se == errLineTooLong {
			// The connection is gone or about to be: no tarpit.
			ev := snap.ev
			ev.Command, ev.Code, ev.Text = "DATA", se.Code, replyText(se)
			s.srv.log(ev)
			return se
		}
		return s.rejectWith(snap.ev, "DATA", se, nil)
	}
	h := scanHeader(content)
	if h.received > s.s.MaxReceived {
		return s.rejectWith(snap.ev, "DATA", errTooManyHops, fmt.Errorf("smtpd: %d Received headers", h.received))
	}

	now := time.Now()
	if env.ID == "" {
		env.ID = qid.New(now)
	}
	env.Received = now
	env.ClientIP = s.sc.ap.Addr()
	env.ClientName = s.sc.name
	env.Helo = snap.helo
	env.AuthUser = snap.user
	env.Source = s.sc.listener
	env.VMTA = snap.policy.DefaultVMTA
	env.Proto = snap.proto
	env.TLS = snap.tls

	var recv, msgID, date string
	if snap.policy.AddReceived {
		ri := receivedInfo{
			Helo: env.Helo, ClientName: env.ClientName, IP: env.ClientIP,
			Host: s.s.Hostname, Proto: env.Proto, ID: env.ID, TLS: env.TLS, Time: now,
		}
		if len(env.Rcpts) == 1 {
			ri.Rcpt = env.Rcpts[0].Addr
		}
		recv = received(ri)
	}
	if snap.policy.AddMessageID && !h.messageID {
		msgID = "Message-ID: <" + now.UTC().Format("20060102150405") + "." + env.ID + "@" + s.s.Hostname + ">\r\n"
	}
	if snap.policy.AddDate && !h.date {
		date = "Date: " + rfc5322Date(now) + "\r\n"
	}
	content = assemble(content, h, recv, msgID, date)

	ev := snap.ev
	ev.QueueID = env.ID
	if f := s.filter; f != nil {
		var discard bool
		var fe *smtp.SMTPError
		var detail error
		content, discard, fe, detail = s.runFilter(f, env, content, recv != "")
		switch {
		case fe != nil && fe.Code == 421:
			ev.Command, ev.Code, ev.Text, ev.Err = "END-OF-MESSAGE", fe.Code, flatText(fe), ErrFilterRefused
			s.srv.log(ev)
			s.sc.hangup.Store(true)
			return fe
		case fe != nil && detail != nil:
			// A local fault: no tarpit, the client did nothing wrong.
			ev.Kind = EvError
			ev.Command, ev.Code, ev.Text, ev.Err = "DATA", fe.Code, flatText(fe), detail
			s.srv.log(ev)
			return fe
		case fe != nil:
			return s.rejectWith(ev, "END-OF-MESSAGE", fe, ErrFilterRefused)
		case discard:
			fev := ev
			fev.Kind, fev.Command, fev.Text = EvFilter, "END-OF-MESSAGE", "discard"
			s.srv.log(fev)
			s.sc.errCount.Store(0)
			return &smtp.SMTPError{Code: 250, EnhancedCode: smtp.EnhancedCode{2, 0, 0}, Message: "Ok: queued as " + env.ID}
		case env.Hold:
			fev := ev
			fev.Kind, fev.Command, fev.Text = EvFilter, "END-OF-MESSAGE", "hold: "+env.HoldReason
			s.srv.log(fev)
		}
	}
	if err := s.srv.q.Enqueue(s.srv.ctx, env, content); err != nil {
		e := errQueueWrite
		if errors.Is(err, ErrQueueFull) {
			e = errQueueFull
		}
		ev.Kind = EvError
		ev.Command, ev.Code, ev.Text, ev.Err = "DATA", e.Code, replyText(e), fmt.Errorf("smtpd: enqueue %s: %w", env.ID, err)
		s.srv.log(ev)
		return e
	}
	s.sc.errCount.Store(0)
	ev.Kind = EvQueued
	s.srv.log(ev)
	return &smtp.SMTPError{Code: 250, EnhancedCode: smtp.EnhancedCode{2, 0, 0}, Message: "Ok: queued as " + env.ID}
}

// proto is the "with" word of the Received header (RFC 3848).
func (s *session) proto() string {
	if !s.ehlo {
		return "SMTP"
	}
	p := "ESMTP"
	if s.isTLS() {
		p += "S"
	}
	if s.authUser != "" {
		p += "A"
	}
	return p
}

func (s *session) Reset() {
	if s.filter != nil {
		s.filter.abort()
	}
	if s.dataActive.Load() || s.bdatAbandoned.Swap(false) {
		// go-smtp v0.25.1 lets the abandoned BDAT goroutine deliver its
		// result on whichever channel the NEXT BDAT transaction has made,
		// so that transaction could be answered with the old result after
		// its message was queued (a duplicate on retry). Ending the
		// connection after this reply means no next transaction.
		s.sc.hangup.Store(true)
		ev := s.event(EvReject)
		ev.Command, ev.Text = "BDAT", "chunked transfer abandoned; disconnecting after the reply"
		s.srv.log(ev)
	}
	s.env = nil
	s.sc.busy.Store(false)
}

func (s *session) Logout() error {
	s.env = nil
	s.sc.busy.Store(false)
	return nil
}

// filterReject answers a command the content filter refused. 421 ends
// the connection; other refusals count for the tarpit like ours.
func (s *session) filterReject(ev Event, cmd string, r FilterReply) error {
	e := r.smtpError()
	if e.Code == 421 {
		ev.Kind, ev.Command, ev.Code, ev.Text, ev.Err = EvReject, cmd, e.Code, flatText(e), ErrFilterRefused
		s.srv.log(ev)
		s.sc.hangup.Store(true)
		return e
	}
	return s.rejectWith(ev, cmd, e, ErrFilterRefused)
}

// rcptRefused refuses a recipient for a reason of our own, telling the
// filter (milters that asked for rejected recipients see it).
func (s *session) rcptRefused(to string, opts *smtp.RcptOptions, e *smtp.SMTPError) error {
	if s.filter != nil {
		s.filter.rejectedRcpt(to, rcptArgs(opts), fmt.Sprintf("%d %s", e.Code, replyText(e)))
	}
	return s.rejectAddr("RCPT", "", to, e, nil)
}

// flatText is replyText on one line, for the log.
func flatText(e *smtp.SMTPError) string {
	return strings.ReplaceAll(replyText(e), "\n", " / ")
}

// runFilter hands the assembled message to the filter and applies its
// result to env. It returns the content to queue, or discard, or the
// reply to give (detail set when the reply is for a local fault).
func (s *session) runFilter(f *lockedFilter, env *Envelope, content []byte, hidden bool) ([]byte, bool, *smtp.SMTPError, error) {
	fields, body, _ := SplitHeader(content)
	if hidden && len(fields) > 0 {
		fields[0].Hidden = true
	}
	res, err := f.message(FilterMessage{QueueID: env.ID, Header: fields, Body: body})
	if err != nil {
		return nil, false, errFilterFault, fmt.Errorf("smtpd: content filter on %s: %w", env.ID, err)
	}
	if res.Reply.Code != 0 {
		e := res.Reply.smtpError()
		var detail error
		if e == errFilterConfig {
			detail = fmt.Errorf("smtpd: content filter gave a bad reply %d on %s", res.Reply.Code, env.ID)
		}
		return nil, false, e, detail
	}
	if res.Discard {
		return nil, true, nil, nil
	}
	out, e := applyFilter(env, content, res)
	if e != nil {
		return nil, false, e, fmt.Errorf("smtpd: content filter asked for an impossible change to %s", env.ID)
	}
	if len(env.Rcpts) == 0 {
		// Every recipient removed: nothing to queue, as a discard.
		return nil, true, nil, nil
	}
	if res.Hold != "" {
		env.Hold, env.HoldReason = true, res.Hold
	}
	return out, false, nil, nil
}
