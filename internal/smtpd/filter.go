package smtpd

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"sync"

	"github.com/emersion/go-smtp"

	"github.com/sluicemta/sluice/internal/tlsname"
)

// Content filters (milters).
//
// smtpd does not speak the milter protocol itself: the daemon adapts the
// milter package's Session to Filter, so this package stays independent of
// it. A connection opens its Filter at the first HELO/EHLO (go-smtp makes
// no session earlier; the client address comes from our own connection
// wrapper) and keeps it across STARTTLS; each SMTP stage is reported after
// sluice's own checks passed, and the message is filtered after its header
// fixes, with our Received header passed as Hidden.

// Filter is one connection's content filter chain. smtpd calls it from one
// goroutine at a time, in SMTP order. A FilterReply with Code 0 lets the
// command through.
type Filter interface {
	Helo(name string) FilterReply
	// SetMacro sets a value for later stages, e.g. "i" or "{auth_authen}".
	SetMacro(name, value string)
	Mail(from string, args []string) FilterReply
	Rcpt(to string, args []string) FilterReply
	// RejectedRcpt reports a recipient sluice refused itself with reply.
	RejectedRcpt(to string, args []string, reply string)
	Data() FilterReply
	// Message filters the content; an error means a local fault (the
	// client is told 451), a refusal is a Reply in the result.
	Message(m FilterMessage) (FilterResult, error)
	// Abort ends the transaction (RSET, a failed or refused DATA).
	Abort()
	Close()
}

// FilterConn describes the client to a new Filter.
type FilterConn struct {
	Client     netip.AddrPort
	ClientName string // verified reverse name, or "unknown"
	Helo       string
	Local      netip.AddrPort // the address the client connected to
	Listener   string
	TLS        *tls.ConnectionState // nil without TLS (implicit TLS only at this point)
}

// FilterReply is a filter's answer to one stage. Code 0 means go on; 421
// closes the connection after the reply.
type FilterReply struct {
	Code     int
	Enhanced string // "5.7.1", or ""
	Text     string // reply lines separated by "\n"
}

// HeaderField is a header field as stored: Value is everything after the
// colon up to the final CRLF, folding kept. Hidden marks our own Received
// header, which filters do not see.
type HeaderField struct {
	Name   string
	Value  string
	Hidden bool
}

// FilterMessage is the content handed to a filter.
type FilterMessage struct {
	QueueID string
	Header  []HeaderField
	Body    []byte // CRLF lines, after the empty line
}

// FilterRcpt is a recipient as a filter names it, with ESMTP arguments.
type FilterRcpt struct {
	Addr string
	Args []string
}

// FilterResult is a filter's verdict on a message and the changes it asks for.
type FilterResult struct {
	Reply   FilterReply // Code != 0: refuse the message with it
	Discard bool        // answer 250, queue nothing
	Hold    string      // non-empty: queue the message on hold; the reason
	Header  []HeaderField
	Body    []byte // replacement body when BodyReplaced
	// BodyReplaced, SenderChanged and RecipientsChanged say which fields hold changes.
	BodyReplaced      bool
	Sender            string
	SenderArgs        []string
	SenderChanged     bool
	Recipients        []FilterRcpt // the final envelope
	RecipientsChanged bool
}

// ErrFilterRefused is the Event.Err of an EvReject the content filter
// caused (the log says milter-reject, as Postfix does).
var ErrFilterRefused = errors.New("smtpd: refused by content filter")

var (
	errFilterFault  = &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 3, 0}, Message: "Error: content filter failed, try again later"}
	errFilterConfig = &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 3, 5}, Message: "Error: server configuration problem, try again later"}
)

// smtpError turns a filter reply into the error go-smtp writes. A bad or
// missing code (a filter speaking nonsense) is a local fault: 451.
func (r FilterReply) smtpError() *smtp.SMTPError {
	if r.Code < 400 || r.Code > 599 {
		return errFilterConfig
	}
	// Without a usable enhanced code, X.0.0 (what go-smtp would send).
	e := &smtp.SMTPError{Code: r.Code, EnhancedCode: smtp.EnhancedCode{r.Code / 100, 0, 0}, Message: r.Text}
	if p := strings.Split(r.Enhanced, "."); len(p) == 3 {
		var ec smtp.EnhancedCode
		ok := true
		for i, s := range p {
			n, err := strconv.Atoi(s)
			if err != nil || n < 0 || n > 999 {
				ok = false
			}
			ec[i] = n
		}
		// The class must agree with the reply code (go-smtp would send 550 4.x.x).
		if ok && ec[0] == r.Code/100 {
			e.EnhancedCode = ec
		}
	}
	if e.Message == "" {
		e.Message = "Command rejected"
		if r.Code < 500 {
			e.Message = "Service unavailable - try again later"
		}
	}
	return e
}

// lockedFilter serialises a Filter: under BDAT, go-smtp runs Data in its
// own goroutine while the connection goroutine may Reset, and Server.Close
// comes from yet another. After close every stage is refused with 421 and
// Message fails, so nothing is queued unfiltered.
type lockedFilter struct {
	mu     sync.Mutex
	f      Filter
	cancel context.CancelFunc // ends the filter's I/O at once
	closed bool
	// connReply is the answer to the connection itself (CONNECT), given
	// again at every HELO/EHLO.
	connReply FilterReply
}

var filterClosed = FilterReply{Code: 421, Enhanced: "4.3.2", Text: "Service shutting down"}

func (l *lockedFilter) do(fn func(Filter) FilterReply) FilterReply {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return filterClosed
	}
	return fn(l.f)
}

func (l *lockedFilter) helo(name string, tlsState *tls.ConnectionState) FilterReply {
	return l.do(func(f Filter) FilterReply {
		if l.connReply.Code != 0 {
			return l.connReply
		}
		if tlsState != nil {
			for k, v := range tlsMacros(tlsState) {
				f.SetMacro(k, v)
			}
		}
		return f.Helo(name)
	})
}

func (l *lockedFilter) setMacro(name, value string) {
	l.do(func(f Filter) FilterReply { f.SetMacro(name, value); return FilterReply{} })
}

func (l *lockedFilter) mail(from string, args []string) FilterReply {
	return l.do(func(f Filter) FilterReply { return f.Mail(from, args) })
}

func (l *lockedFilter) rcpt(to string, args []string) FilterReply {
	return l.do(func(f Filter) FilterReply { return f.Rcpt(to, args) })
}

func (l *lockedFilter) rejectedRcpt(to string, args []string, reply string) {
	l.do(func(f Filter) FilterReply { f.RejectedRcpt(to, args, reply); return FilterReply{} })
}

func (l *lockedFilter) data() FilterReply {
	return l.do(func(f Filter) FilterReply { return f.Data() })
}

func (l *lockedFilter) abort() {
	l.do(func(f Filter) FilterReply { f.Abort(); return FilterReply{} })
}

func (l *lockedFilter) message(m FilterMessage) (FilterResult, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return FilterResult{}, errors.New("smtpd: filter closed")
	}
	return l.f.Message(m)
}

// close interrupts any filter I/O first (so a blocked call returns), then
// closes the filter once the call in progress has given up the lock.
func (l *lockedFilter) close() {
	l.cancel()
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.closed {
		l.closed = true
		l.f.Close()
	}
}

// tlsMacros are the helo-stage values Postfix gives milters.
func tlsMacros(st *tls.ConnectionState) map[string]string {
	m := map[string]string{
		"{tls_version}": tlsname.Version(st.Version),
		"{cipher}":      tls.CipherSuiteName(st.CipherSuite),
		"{cipher_bits}": strconv.Itoa(cipherBits(st.CipherSuite)),
	}
	if len(st.VerifiedChains) > 0 && len(st.PeerCertificates) > 0 {
		m["{cert_subject}"] = st.PeerCertificates[0].Subject.CommonName
		m["{cert_issuer}"] = st.PeerCertificates[0].Issuer.CommonName
	}
	return m
}

func cipherBits(suite uint16) int {
	n := tls.CipherSuiteName(suite)
	switch {
	case strings.Contains(n, "AES_128"):
		return 128
	case strings.Contains(n, "AES_256"), strings.Contains(n, "CHACHA20"):
		return 256
	}
	return 0
}

// startFilter opens the connection's filter at its first HELO/EHLO. It
// returns nil when none is configured. Opening may take a while (the
// filter connects to its milters), so it runs without the lock; closing
// the connection meanwhile cancels it.
func (sc *sconn) startFilter(s *Settings, helo string, tlsState *tls.ConnectionState) *lockedFilter {
	sc.fmu.Lock()
	if sc.filterDone || s.NewFilter == nil {
		f := sc.filter
		sc.filterDone = true
		sc.fmu.Unlock()
		return f
	}
	sc.filterDone = true
	ctx, cancel := context.WithCancel(context.Background())
	sc.fcancel = cancel
	sc.fmu.Unlock()
	if sc.closed.Load() {
		cancel()
		return nil
	}
	fc := FilterConn{Client: sc.ap, ClientName: sc.name, Helo: helo, Local: addrPort(sc.LocalAddr()), Listener: sc.listener, TLS: tlsState}
	f, r := s.NewFilter(ctx, fc)
	if f == nil {
		cancel()
		return nil
	}
	lf := &lockedFilter{f: f, cancel: cancel, connReply: r}
	sc.fmu.Lock()
	sc.filter = lf
	sc.fmu.Unlock()
	if sc.closed.Load() {
		// Closed while opening: closeFilter may have missed it.
		lf.close()
	}
	return lf
}

// closeFilter is called once the connection is closed.
func (sc *sconn) closeFilter() {
	sc.fmu.Lock()
	f, cancel := sc.filter, sc.fcancel
	sc.filterDone = true
	sc.fmu.Unlock()
	if cancel != nil {
		cancel()
	}
	if f != nil {
		f.close()
	}
}

// mailArgs rebuilds the MAIL FROM parameters go-smtp parsed, as a filter
// expects to see them.
func mailArgs(o *smtp.MailOptions) []string {
	if o == nil {
		return nil
	}
	var a []string
	if o.Size > 0 {
		a = append(a, "SIZE="+strconv.FormatInt(o.Size, 10))
	}
	if o.Body != "" {
		a = append(a, "BODY="+string(o.Body))
	}
	if o.UTF8 {
		a = append(a, "SMTPUTF8")
	}
	if o.RequireTLS {
		a = append(a, "REQUIRETLS")
	}
	if o.Return != "" {
		a = append(a, "RET="+string(o.Return))
	}
	if o.EnvelopeID != "" {
		a = append(a, "ENVID="+encodeXtext(o.EnvelopeID))
	}
	if o.Auth != nil {
		v := "<>"
		if *o.Auth != "" {
			v = encodeXtext(*o.Auth)
		}
		a = append(a, "AUTH="+v)
	}
	return a
}

// rcptArgs rebuilds the RCPT TO parameters.
func rcptArgs(o *smtp.RcptOptions) []string {
	if o == nil {
		return nil
	}
	var a []string
	if len(o.Notify) > 0 {
		ns := make([]string, len(o.Notify))
		for i, n := range o.Notify {
			ns[i] = string(n)
		}
		a = append(a, "NOTIFY="+strings.Join(ns, ","))
	}
	if o.OriginalRecipient != "" {
		a = append(a, "ORCPT="+string(o.OriginalRecipientType)+";"+encodeXtext(o.OriginalRecipient))
	}
	return a
}

// encodeXtext is RFC 3461's xtext: "+", "=" and anything outside
// printable ASCII as +XX.
func encodeXtext(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < '!' || c > '~' || c == '+' || c == '=' {
			fmt.Fprintf(&b, "+%02X", c)
			continue
		}
		b.WriteByte(c)
	}
	return b.String()
}

func decodeXtext(s string) (string, bool) {
	if !strings.Contains(s, "+") {
		return s, true
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] != '+' {
			b.WriteByte(s[i])
			continue
		}
		if i+2 >= len(s) {
			return "", false
		}
		n, err := strconv.ParseUint(s[i+1:i+3], 16, 8)
		if err != nil {
			return "", false
		}
		b.WriteByte(byte(n))
		i += 2
	}
	return b.String(), true
}

// ApplyFilter applies a filter's result to env and content the way an
// SMTP message's is applied, for mail that did not arrive by SMTP.
func ApplyFilter(env *Envelope, content []byte, res FilterResult) ([]byte, error) {
	out, e := applyFilter(env, content, res)
	if e != nil {
		return nil, errors.New("smtpd: content filter asked for an impossible change")
	}
	return out, nil
}

// SplitHeader splits CRLF content into its header fields and the body
// after the empty line. sep reports whether there was an empty line (a
// header ended by a line that is no field has none).
func SplitHeader(content []byte) (fields []HeaderField, body []byte, sep bool) {
	h := scanHeader(content)
	hdr := content[:h.end]
	for len(hdr) > 0 {
		// A field runs to the CRLF not followed by a space or tab.
		end := 0
		for {
			i := bytes.Index(hdr[end:], []byte("\r\n"))
			if i < 0 {
				end = len(hdr)
				break
			}
			end += i + 2
			if end >= len(hdr) || (hdr[end] != ' ' && hdr[end] != '\t') {
				break
			}
		}
		line := hdr[:end]
		hdr = hdr[end:]
		line = bytes.TrimSuffix(line, []byte("\r\n"))
		colon := bytes.IndexByte(line, ':')
		fields = append(fields, HeaderField{Name: string(line[:colon]), Value: string(line[colon+1:])})
	}
	body = content[h.end:]
	if bytes.HasPrefix(body, []byte("\r\n")) {
		return fields, body[2:], true
	}
	return fields, body, false
}

// JoinHeader is the inverse of SplitHeader.
func JoinHeader(fields []HeaderField, body []byte, sep bool) []byte {
	n := len(body) + 2
	for _, f := range fields {
		n += len(f.Name) + len(f.Value) + 3
	}
	out := make([]byte, 0, n)
	for _, f := range fields {
		out = append(out, f.Name...)
		out = append(out, ':')
		out = append(out, f.Value...)
		out = append(out, '\r', '\n')
	}
	if sep {
		out = append(out, '\r', '\n')
	}
	return append(out, body...)
}

// applyFilter changes env and content as the filter's result asks. It
// returns the new content, or an error reply when the result cannot be
// applied (a filter naming an impossible sender or recipient).
func applyFilter(env *Envelope, content []byte, res FilterResult) ([]byte, *smtp.SMTPError) {
	fields, body, sep := SplitHeader(content)
	if res.Header != nil {
		fields = res.Header
	}
	if res.BodyReplaced {
		body, sep = res.Body, true
	}
	for _, f := range fields {
		if !validField(f) {
			return nil, errFilterConfig
		}
	}
	if res.SenderChanged {
		if checkSender(res.Sender) != nil || !utf8OK(res.Sender, env.SMTPUTF8) {
			return nil, errFilterConfig
		}
		env.From = res.Sender
		// Only the DSN arguments make sense on a sender a filter chose.
		for _, a := range res.SenderArgs {
			k, v, _ := strings.Cut(a, "=")
			switch strings.ToUpper(k) {
			case "RET":
				if v = strings.ToUpper(v); v == "FULL" || v == "HDRS" {
					env.Ret = v
				}
			case "ENVID":
				if d, ok := decodeXtext(v); ok && !hasControl(d) {
					env.EnvID = d
				}
			}
		}
	}
	if res.RecipientsChanged {
		old := env.Rcpts
		used := make([]bool, len(old))
		seen := map[string]bool{}
		var rcpts []Rcpt
		for _, fr := range res.Recipients {
			if seen[fr.Addr] {
				continue
			}
			if checkRcpt(fr.Addr, true, nil) != nil || !utf8OK(fr.Addr, env.SMTPUTF8) {
				return nil, errFilterConfig
			}
			seen[fr.Addr] = true
			r := Rcpt{Addr: fr.Addr}
			found := false
			for i, o := range old {
				if !used[i] && o.Addr == fr.Addr {
					r, used[i], found = o, true, true
					break
				}
			}
			if !found {
				r = rcptFromArgs(fr)
			}
			rcpts = append(rcpts, r)
		}
		env.Rcpts = rcpts
	}
	return JoinHeader(fields, body, sep), nil
}

// utf8OK: a non-ASCII address needs an SMTPUTF8 message.
func utf8OK(addr string, smtputf8 bool) bool { return smtputf8 || isASCII(addr) }

// validField refuses a header field that would break the message's
// structure: a bad name, or a line break that is not a fold.
func validField(f HeaderField) bool {
	name := strings.TrimRight(f.Name, " \t") // obsolete "Name :" form
	if name == "" || !fieldName([]byte(name)) {
		return false
	}
	v := f.Value
	for i := 0; i < len(v); i++ {
		switch v[i] {
		case '\r':
			if i+2 >= len(v) || v[i+1] != '\n' || (v[i+2] != ' ' && v[i+2] != '\t') {
				return false
			}
			i++
		case '\n':
			return false
		}
	}
	return true
}

// rcptFromArgs makes a recipient a filter added, keeping only the DSN
// arguments NOTIFY and ORCPT.
func rcptFromArgs(fr FilterRcpt) Rcpt {
	r := Rcpt{Addr: fr.Addr}
	for _, a := range fr.Args {
		k, v, _ := strings.Cut(a, "=")
		switch strings.ToUpper(k) {
		case "NOTIFY":
			for _, n := range strings.Split(strings.ToUpper(v), ",") {
				switch n {
				case "NEVER":
					r.Notify |= NotifyNever
				case "SUCCESS":
					r.Notify |= NotifySuccess
				case "FAILURE":
					r.Notify |= NotifyFailure
				case "DELAY":
					r.Notify |= NotifyDelay
				}
			}
			if r.Notify&NotifyNever != 0 && r.Notify != NotifyNever {
				r.Notify = 0 // NEVER with others is invalid: as if absent
			}
		case "ORCPT":
			typ, addr, ok := strings.Cut(v, ";")
			if d, good := decodeXtext(addr); ok && good && typ != "" && !hasControl(d) {
				r.ORCPT = typ + ";" + d
			}
		}
	}
	return r
}
