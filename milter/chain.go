// Package milter is sluice's milter client: it runs a chain of Sendmail
// mail filters (OpenDKIM, rspamd, ClamAV, ...) over the milter protocol
// (versions 2 to 6) the way Postfix's smtpd and cleanup do, for mail
// arriving by SMTP and, with a simulated connection, for locally
// submitted mail.
//
// The protocol client is written here rather than wrapping
// github.com/emersion/go-milter's client: that client cannot send DATA,
// UNKNOWN or a unix-socket CONNECT with a port, refuses skip, shutdown,
// early quarantine and ADDRCPT_PAR replies, does not check or fully offer
// negotiation masks, ignores SETSYMLIST, canonicalises header values, has
// one timeout for all stages and sends ABORT after finished messages.
// Fixing all of that left nothing of it to wrap.
package milter

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
)

// Verdict is the outcome of a stage for the SMTP layer.
type Verdict uint8

const (
	// Continue: go on (the milters accepted, continued or skipped).
	Continue Verdict = iota
	// Reject: answer Code/Enhanced/Text (5xx).
	Reject
	// Tempfail: answer Code/Enhanced/Text (4xx).
	Tempfail
	// Shutdown: answer 421 and close the SMTP connection.
	Shutdown
	// Discard: accept the message and drop it (Result only; stages answer
	// Continue and the session remembers).
	Discard

	// verdictHold is a quarantine; it stops the chain like a reply does
	// in Postfix, then the message is accepted into hold.
	verdictHold Verdict = 255
)

var verdictNames = [...]string{"continue", "reject", "tempfail", "shutdown", "discard"}

func (v Verdict) String() string {
	if int(v) < len(verdictNames) {
		return verdictNames[v]
	}
	if v == verdictHold {
		return "hold"
	}
	return "Verdict(" + strconv.Itoa(int(v)) + ")"
}

// Decision is what the chain says about one SMTP command or the message.
type Decision struct {
	Verdict  Verdict
	Code     int    // SMTP reply code for Reject, Tempfail, Shutdown
	Enhanced string // RFC 3463 code such as "5.7.1", or ""
	// Text is the reply text; lines of a multi-line reply are separated by
	// "\n" (the code and a repeated enhanced code removed from each).
	Text string
	// Milter names the milter that decided.
	Milter string
}

// Reply formats the decision as SMTP reply lines joined by CRLF, without
// the final CRLF, e.g. "550 5.7.1 Command rejected".
func (d Decision) Reply() string {
	if d.Code == 0 {
		return ""
	}
	lines := strings.Split(d.Text, "\n")
	var b strings.Builder
	for i, ln := range lines {
		if i > 0 {
			b.WriteString("\r\n")
		}
		b.WriteString(strconv.Itoa(d.Code))
		if i < len(lines)-1 {
			b.WriteByte('-')
		} else {
			b.WriteByte(' ')
		}
		if d.Enhanced != "" {
			b.WriteString(d.Enhanced)
			if ln != "" {
				b.WriteByte(' ')
			}
		}
		b.WriteString(ln)
	}
	return b.String()
}

// Result is the chain's verdict on a message and the message as the
// milters left it.
type Result struct {
	// Decision is Continue (deliver), Discard, or a reply to give.
	Decision Decision
	// Quarantine, when not empty, is the reason to put the message on hold.
	Quarantine string
	// Header is the final header list (Hidden fields kept in place).
	Header []HeaderField
	// Body is the replacement body (CRLF lines) when BodyReplaced.
	Body         []byte
	BodyReplaced bool
	// Sender and SenderArgs are the envelope sender, changed when SenderChanged.
	Sender        string
	SenderArgs    []string
	SenderChanged bool
	// Recipients is the final envelope; Added and Deleted list the changes.
	Recipients []Recipient
	Added      []Recipient
	Deleted    []string
}

// TLSInfo feeds the helo-stage macros.
type TLSInfo struct {
	Version     string // {tls_version}, e.g. "TLSv1.3"
	Cipher      string // {cipher}
	CipherBits  int    // {cipher_bits}
	CertSubject string // {cert_subject}, only for a verified client certificate
	CertIssuer  string // {cert_issuer}
}

// ConnInfo describes the SMTP client as the CONNECT and HELO stages see it.
type ConnInfo struct {
	// Hostname is the verified client name, or "unknown".
	Hostname string
	// ReverseName is the PTR name (defaults to Hostname).
	ReverseName string
	// Addr is the client IP address, or a unix socket path.
	Addr string
	Port int
	// Helo is the HELO/EHLO argument, when known at Begin.
	Helo string
	TLS  *TLSInfo
	// Macros adds or overrides macro values; keys with or without braces
	// ("j", "{daemon_name}", "auth_type").
	Macros map[string]string
	// Simulated marks mail not received by SMTP (sendmail, pickup): as in
	// Postfix, addresses are passed without angle brackets and a rejected
	// recipient is a configuration error.
	Simulated bool
}

// LocalConnInfo is the connection Postfix pretends for mail submitted
// without SMTP: localhost, 127.0.0.1, port 0, EHLO localhost.
func LocalConnInfo() ConnInfo {
	return ConnInfo{Hostname: "localhost", Addr: "127.0.0.1", Helo: "localhost", Simulated: true}
}

// Chain is an ordered list of milters. It is safe for concurrent use;
// each SMTP session gets its own Session and its own milter connections.
type Chain struct {
	cfgs []Config
	log  *slog.Logger
	dial func(ctx context.Context, network, addr string) (net.Conn, error) // tests only
}

// NewChain checks the configurations and fills in defaults. An empty chain
// is valid and does nothing.
func NewChain(cfgs []Config) (*Chain, error) {
	c := &Chain{log: slog.Default()}
	for i, cfg := range cfgs {
		cfg, err := cfg.withDefaults()
		if err != nil {
			return nil, fmt.Errorf("milter chain entry %d: %w", i+1, err)
		}
		c.cfgs = append(c.cfgs, cfg)
	}
	return c, nil
}

// SetLogger sets where milter failures are logged (slog.Default otherwise).
func (c *Chain) SetLogger(l *slog.Logger) { c.log = l }

// Len is the number of milters.
func (c *Chain) Len() int { return len(c.cfgs) }

// Session is one SMTP connection's view of the chain. Its methods must be
// called from one goroutine, in SMTP order. Each stage method returns the
// decision to apply, including a connection-wide one a milter gave
// earlier, so the SMTP layer can simply call them for every command.
type Session struct {
	ctx     context.Context
	stop    func() bool
	info    ConnInfo
	filters []*filter
	macros  map[string]string

	// Per transaction.
	inTx       bool
	discard    bool
	hold       string
	from       string
	fromArgs   []string
	recipients []Recipient
}

// Begin opens a session: it connects to every milter and reports CONNECT
// and, when info.Helo is set, HELO. Cancelling ctx closes the milter
// connections.
func (c *Chain) Begin(ctx context.Context, info ConnInfo) (*Session, Decision) {
	if info.ReverseName == "" {
		info.ReverseName = info.Hostname
	}
	if info.Hostname == "" {
		info.Hostname = "unknown"
	}
	s := &Session{ctx: ctx, info: info, macros: make(map[string]string)}
	s.initMacros()
	for _, cfg := range c.cfgs {
		s.filters = append(s.filters, &filter{cfg: cfg, log: c.log, dial: c.dial})
	}
	s.stop = context.AfterFunc(ctx, func() {
		for _, f := range s.filters {
			f.interrupt()
		}
	})
	d := s.each(func(f *filter) Decision { return s.connectFilter(f) })
	if d.Verdict != Continue {
		return s, s.envelopeDecision(d)
	}
	if info.Helo != "" {
		return s, s.Helo(info.Helo)
	}
	return s, Decision{}
}

// connectFilter dials one milter and reports CONNECT (and HELO when known).
func (s *Session) connectFilter(f *filter) Decision {
	if ok := s.ctx.Err() == nil && f.open(s.ctx); !ok {
		if s.ctx.Err() != nil && f.state != fsError {
			return f.fail(commError, s.ctx.Err())
		}
		return f.sticky
	}
	var data []byte
	host := s.info.Hostname
	if host == "unknown" && s.info.Addr != "" && s.info.Addr != "unknown" {
		host = "[" + s.info.Addr + "]" // Sendmail's form of an unknown name
	}
	port := binaryPort(s.info.Port)
	switch fam := s.family(); fam {
	case '4', '6':
		data = slices.Concat([]byte(host), []byte{0, fam}, port, cstrings(s.info.Addr))
	case 'L':
		// libmilter reads a port for every family but U: send 0.
		data = slices.Concat([]byte(host), []byte{0, fam, 0, 0}, cstrings(s.info.Addr))
	default:
		data = slices.Concat([]byte(host), []byte{0, 'U'})
	}
	return f.event(event{cmd: cmdConnect, noFlag: pNoConnect, nrFlag: pNRConn, stage: StageConnect, macros: true, data: data}, s.lookup, nil)
}

func binaryPort(p int) []byte { return []byte{byte(p >> 8), byte(p)} }

func (s *Session) family() byte {
	a := s.info.Addr
	if strings.HasPrefix(a, "/") {
		return 'L'
	}
	ip := net.ParseIP(a)
	switch {
	case ip == nil:
		return 'U'
	case ip.To4() != nil:
		return '4'
	default:
		return '6'
	}
}

// each runs fn over the milters in order and stops at the first one that
// does not let the command through, as Postfix's milter.c does.
func (s *Session) each(fn func(f *filter) Decision) Decision {
	for _, f := range s.filters {
		d := fn(f)
		if f.earlyHold != "" {
			// Quarantine before end of message: Sendmail keeps going
			// and so do we (Postfix would stop feeding this milter).
			if s.hold == "" {
				s.hold = f.earlyHold
			}
			f.earlyHold = ""
		}
		if d.Verdict != Continue {
			return d
		}
	}
	return Decision{}
}

// envelopeDecision turns hold and discard into per-transaction flags, as
// Postfix's check_milter_reply does: the command itself is accepted.
func (s *Session) envelopeDecision(d Decision) Decision {
	switch d.Verdict {
	case verdictHold:
		if s.hold == "" {
			s.hold = d.Text
		}
		return Decision{}
	case Discard:
		s.discard = true
		return Decision{}
	}
	return d
}

// SetMacro sets a macro value for later stages, e.g. "i" (the queue id)
// once it is known, or "{auth_authen}" after AUTH.
func (s *Session) SetMacro(name, value string) { s.macros[macroKey(name)] = value }

func macroKey(n string) string { return strings.TrimSuffix(strings.TrimPrefix(n, "{"), "}") }

func (s *Session) lookup(name string) (string, bool) {
	v, ok := s.macros[macroKey(name)]
	return v, ok
}

func (s *Session) initMacros() {
	in := s.info
	host, _ := os.Hostname()
	m := s.macros
	m["j"] = host
	m["daemon_name"] = host
	m["v"] = "sluice"
	m["client_addr"] = in.Addr
	m["client_name"] = in.Hostname
	m["client_ptr"] = in.ReverseName
	m["client_port"] = strconv.Itoa(in.Port)
	u := in.ReverseName + " [" + in.Addr + "]"
	if !strings.EqualFold(in.Hostname, in.ReverseName) {
		u += " (may be forged)"
	}
	m["_"] = u
	if t := in.TLS; t != nil {
		m["tls_version"] = t.Version
		m["cipher"] = t.Cipher
		m["cipher_bits"] = strconv.Itoa(t.CipherBits)
		if t.CertSubject != "" {
			m["cert_subject"] = t.CertSubject
			m["cert_issuer"] = t.CertIssuer
		}
	}
	for k, v := range in.Macros {
		m[macroKey(k)] = v
	}
}

// Helo reports HELO/EHLO. A HELO inside a transaction aborts it first.
func (s *Session) Helo(name string) Decision {
	s.Abort()
	s.info.Helo = name
	return s.envelopeDecision(s.each(func(f *filter) Decision {
		if f.state == fsAcceptCon {
			return Decision{}
		}
		return f.event(event{cmd: cmdHelo, noFlag: pNoHelo, nrFlag: pNRHelo, stage: StageHelo, macros: true, data: cstrings(name)}, s.lookup, nil)
	}))
}

// retry reconnects milters that failed earlier, so each message tries
// again; the replayed CONNECT and HELO answers count for this message.
func (s *Session) retry() Decision {
	return s.each(func(f *filter) Decision {
		if f.state != fsError {
			return Decision{}
		}
		d := s.connectFilter(f)
		if d.Verdict == Continue && s.info.Helo != "" && f.state == fsEnvelope {
			d = f.event(event{cmd: cmdHelo, noFlag: pNoHelo, nrFlag: pNRHelo, stage: StageHelo, macros: true, data: cstrings(s.info.Helo)}, s.lookup, nil)
		}
		return d
	})
}

func (s *Session) extAddr(a string) string {
	if s.info.Simulated {
		return a // Postfix's non-SMTP path sends addresses without <>
	}
	return "<" + a + ">"
}

func domainOf(a string) string {
	if i := strings.LastIndexByte(a, '@'); i >= 0 {
		return a[i+1:]
	}
	return ""
}

// Mail starts a transaction with MAIL FROM (from without angle brackets).
func (s *Session) Mail(from string, args []string) Decision {
	s.Abort()
	s.inTx = true
	s.from, s.fromArgs = from, args
	s.macros["mail_addr"] = from
	s.macros["mail_host"] = domainOf(from)
	s.macros["mail_mailer"] = "smtp"
	if d := s.retry(); d.Verdict != Continue {
		return s.envelopeDecision(d)
	}
	data := cstrings(append([]string{s.extAddr(from)}, args...)...)
	d := s.envelopeDecision(s.each(func(f *filter) Decision {
		if f.state == fsAcceptCon || f.state == fsClosed {
			return f.sticky
		}
		if f.state == fsEnvelope {
			f.inMessage = true
		}
		return f.event(event{cmd: cmdMail, noFlag: pNoMail, nrFlag: pNRMail, stage: StageMail, macros: true, data: data}, s.lookup, nil)
	}))
	if d.Verdict != Continue {
		s.Abort() // the transaction is over, as after Postfix's mail_reset
	}
	return d
}

// envEvent sends a transaction event to milters still interested in it.
func (s *Session) envEvent(ev event) Decision {
	if s.discard || (!s.inTx && ev.cmd != cmdUnknown) {
		return Decision{}
	}
	return s.envelopeDecision(s.each(func(f *filter) Decision {
		switch f.state {
		case fsAcceptCon, fsAcceptMsg, fsClosed:
			return Decision{}
		}
		return f.event(ev, s.lookup, nil)
	}))
}

// Rcpt reports an RCPT TO the SMTP layer accepted. On Continue the
// recipient joins the envelope. In a Simulated session a rejection is a
// configuration error and becomes 451 4.3.5, as in Postfix.
func (s *Session) Rcpt(to string, args []string) Decision {
	s.macros["rcpt_addr"] = to
	s.macros["rcpt_host"] = domainOf(to)
	s.macros["rcpt_mailer"] = "smtp"
	d := s.envEvent(event{cmd: cmdRcpt, noFlag: pNoRcpt, nrFlag: pNRRcpt, stage: StageRcpt, macros: true,
		data: cstrings(append([]string{s.extAddr(to)}, args...)...)})
	if d.Verdict == Continue {
		s.recipients = append(s.recipients, Recipient{Addr: to, Args: args})
	} else if s.info.Simulated && (d.Verdict == Reject || d.Verdict == Tempfail) {
		d = Decision{Verdict: Tempfail, Code: 451, Enhanced: "4.3.5", Text: "Server configuration error", Milter: d.Milter}
	}
	return d
}

// RejectedRcpt tells milters that asked for them (SMFIP_RCPT_REJ) about a
// recipient the SMTP layer rejected with reply (e.g. "554 5.7.1 <a@b>:
// Relay access denied"). Their answer does not matter.
func (s *Session) RejectedRcpt(to string, args []string, reply string) {
	// Postfix's macros for a rejected recipient (smtpd_milter.c): mailer
	// "error", host the first word after the code (the enhanced code),
	// addr what follows the second word ("554 5.7.1 <a@b>: Relay access
	// denied" gives "Relay access denied").
	rest := ""
	if len(reply) > 4 {
		rest = reply[4:]
	}
	host, tail, _ := strings.Cut(rest, " ")
	s.macros["rcpt_host"], s.macros["rcpt_mailer"] = host, "error"
	if _, text, ok := strings.Cut(tail, " "); ok {
		s.macros["rcpt_addr"] = text
	} else {
		delete(s.macros, "rcpt_addr")
	}
	data := cstrings(append([]string{s.extAddr(to)}, args...)...)
	for _, f := range s.filters {
		if f.state == fsEnvelope && f.events&pRcptRej != 0 {
			f.event(event{cmd: cmdRcpt, noFlag: pNoRcpt, nrFlag: pNRRcpt, stage: StageRcpt, macros: true, data: data}, s.lookup, nil)
		}
	}
}

// Data reports the DATA command.
func (s *Session) Data() Decision {
	d := s.envEvent(event{cmd: cmdData, noFlag: pNoData, nrFlag: pNRData, stage: StageData, macros: true})
	if d.Verdict != Continue {
		s.Abort()
	}
	return d
}

// Unknown reports an SMTP command the server does not know.
func (s *Session) Unknown(cmd string) Decision {
	return s.envEvent(event{cmd: cmdUnknown, noFlag: pNoUnknown, nrFlag: pNRUnkn, stage: StageUnknown, macros: true, data: cstrings(cmd)})
}

// Message runs the content stages (headers, end of headers, body, end of
// message) through each milter in turn; each sees the message as changed
// by those before it. body is CRLF text after dot-unstuffing; it is read
// once per milter, so an io.ReadSeeker is rewound and anything else is
// buffered in memory. The transaction ends with Message; an error means
// reading body failed (milter trouble is a Decision, never an error).
func (s *Session) Message(header []HeaderField, body io.Reader) (Result, error) {
	res := Result{
		Header:     slices.Clone(header),
		Sender:     s.from,
		SenderArgs: s.fromArgs,
		Recipients: slices.Clone(s.recipients),
		Quarantine: s.hold,
	}
	defer func() {
		// Milters the chain stopped before (or that stopped half way)
		// still have the transaction open; Postfix's mail_reset aborts them.
		for _, f := range s.filters {
			f.abort()
		}
		s.endTx()
	}()
	if !s.inTx {
		return res, errors.New("milter: Message without Mail")
	}
	if s.discard {
		res.Decision = Decision{Verdict: Discard}
		return res, nil
	}
	var rewind func() (io.Reader, error)
	if rs, ok := body.(io.ReadSeeker); ok {
		start, err := rs.Seek(0, io.SeekCurrent)
		if err != nil {
			return res, fmt.Errorf("milter: body: %w", err)
		}
		rewind = func() (io.Reader, error) {
			_, err := rs.Seek(start, io.SeekStart)
			return rs, err
		}
	} else {
		// Read the body once, keeping a copy for the milters after the
		// first; a milter that stops early (skip, accept) leaves the rest
		// to be drained before the copy is reused.
		var buf bytes.Buffer
		used := false
		rewind = func() (io.Reader, error) {
			if !used {
				used = true
				return io.TeeReader(body, &buf), nil
			}
			if _, err := buf.ReadFrom(body); err != nil {
				return nil, err
			}
			return bytes.NewReader(buf.Bytes()), nil
		}
	}
	for _, f := range s.filters {
		switch f.state {
		case fsAcceptCon, fsAcceptMsg, fsClosed:
			continue
		case fsError, fsRejectCon:
			if d := f.sticky; d.Verdict != Continue {
				return s.finish(res, d), nil
			}
			continue
		}
		var br io.Reader
		if res.BodyReplaced {
			br = bytes.NewReader(res.Body)
		} else {
			r, err := rewind()
			if err != nil {
				return res, fmt.Errorf("milter: rewind body: %w", err)
			}
			br = r
		}
		d, ed, err := s.messageTo(f, res.Header, br)
		if f.earlyHold != "" { // quarantine while headers or body were sent
			if res.Quarantine == "" {
				res.Quarantine = f.earlyHold
			}
			f.earlyHold = ""
		}
		if err != nil {
			return res, err
		}
		if ed != nil {
			res = applyEdits(res, ed)
		}
		if d.Verdict != Continue {
			return s.finish(res, d), nil
		}
	}
	return res, nil
}

func (s *Session) finish(res Result, d Decision) Result {
	if d.Verdict == verdictHold {
		if res.Quarantine == "" {
			res.Quarantine = d.Text
		}
		return res
	}
	res.Decision = d
	return res
}

// messageTo sends the content to one milter and collects its edits.
func (s *Session) messageTo(f *filter, hdr []HeaderField, body io.Reader) (Decision, *edits, error) {
	f.timeout = f.cfg.ContentTimeout
	defer func() { f.timeout = f.cfg.CommandTimeout }()
	for _, h := range hdr {
		if h.Hidden {
			continue
		}
		d := f.event(event{cmd: cmdHeader, noFlag: pNoHdrs, nrFlag: pNRHdr, stage: StageEOH, macros: true, content: true, data: f.headerData(h)}, s.lookup, nil)
		if d.Verdict != Continue || f.state != fsEnvelope {
			return d, nil, nil
		}
	}
	d := f.event(event{cmd: cmdEOH, noFlag: pNoEOH, nrFlag: pNREOH, stage: StageEOH, macros: true, content: true}, s.lookup, nil)
	if d.Verdict != Continue || f.state != fsEnvelope {
		return d, nil, nil
	}
	if f.events&pNoBody == 0 {
		d, err := f.sendBody(body, s.lookup)
		if err != nil {
			f.fail(commError, err) // the milter is mid-message; start over with it
			return Decision{}, nil, err
		}
		if d.Verdict != Continue || f.state != fsEnvelope {
			return d, nil, nil
		}
	}
	ed := &edits{}
	d = f.event(event{cmd: cmdEOB, stage: StageEOM, macros: true}, s.lookup, ed)
	if f.state == fsError {
		return d, nil, nil
	}
	f.inMessage = false
	if f.state == fsAcceptMsg {
		f.state = fsEnvelope
	}
	if ed.hold != "" && d.Verdict == Continue {
		d = Decision{Verdict: verdictHold, Text: ed.hold, Milter: f.cfg.Name}
	}
	return d, ed, nil
}

// applyEdits folds one milter's requests into the result.
func applyEdits(res Result, ed *edits) Result {
	res.Header = applyHeaders(res.Header, ed.hdrs)
	if ed.bodySet {
		res.Body = normalizeBody(ed.body)
		res.BodyReplaced = true
	}
	if ed.fromSet {
		res.Sender = ed.from
		res.SenderArgs = strings.Fields(ed.fromArgs)
		res.SenderChanged = true
	}
	for _, r := range ed.addRcpt {
		res.Recipients = append(res.Recipients, r)
		res.Added = append(res.Added, r)
	}
	for _, a := range ed.del {
		n := len(res.Recipients)
		res.Recipients = slices.DeleteFunc(res.Recipients, func(r Recipient) bool { return r.Addr == a })
		if len(res.Recipients) != n {
			res.Deleted = append(res.Deleted, a)
		}
	}
	return res
}

func (s *Session) endTx() {
	for _, f := range s.filters {
		if f.state == fsAcceptMsg {
			f.state = fsEnvelope
		}
		f.earlyHold = ""
		f.skipEvent = 0
	}
	s.inTx, s.discard, s.hold = false, false, ""
	s.from, s.fromArgs, s.recipients = "", nil, nil
	delete(s.macros, "mail_addr")
	delete(s.macros, "mail_host")
	delete(s.macros, "mail_mailer")
	delete(s.macros, "rcpt_addr")
	delete(s.macros, "rcpt_host")
	delete(s.macros, "rcpt_mailer")
}

// Abort ends an open transaction (RSET, a new MAIL, HELO, or a failed
// DATA): milters that saw MAIL get SMFIC_ABORT. Harmless otherwise.
func (s *Session) Abort() {
	if !s.inTx {
		return
	}
	for _, f := range s.filters {
		f.abort()
	}
	s.endTx()
}

// Close ends the session: QUIT to every milter still connected.
func (s *Session) Close() {
	s.Abort()
	s.stop()
	for _, f := range s.filters {
		f.quit()
	}
}

// Filter runs the chain for one message that did not arrive by SMTP
// (sendmail, pickup): the simulated CONNECT and EHLO from LocalConnInfo
// (or info), MAIL, each RCPT, DATA and the content. A milter rejecting a
// recipient is a configuration error and tempfails the message.
func (c *Chain) Filter(ctx context.Context, info ConnInfo, from string, rcpts []Recipient, header []HeaderField, body io.Reader) (Result, error) {
	if info.Addr == "" {
		info = LocalConnInfo()
	}
	info.Simulated = true
	s, d := c.Begin(ctx, info)
	defer s.Close()
	res := Result{Header: header, Sender: from, Recipients: rcpts}
	if d.Verdict != Continue {
		res.Decision = d
		return res, nil
	}
	if d = s.Mail(from, nil); d.Verdict != Continue {
		res.Decision = d
		return res, nil
	}
	for _, r := range rcpts {
		if d = s.Rcpt(r.Addr, r.Args); d.Verdict != Continue {
			res.Decision = d
			return res, nil
		}
	}
	if d = s.Data(); d.Verdict != Continue {
		res.Decision = d
		return res, nil
	}
	return s.Message(header, body)
}
