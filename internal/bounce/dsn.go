package bounce

import (
	"bytes"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// Report is one delivery status notification: per-message fields, one
// RcptReport per recipient the event affected, and what to return of the
// original message. Build writes it; Parse reads one back.
type Report struct {
	ReportingMTA string    // our host name (Reporting-MTA: dns; ...)
	QueueID      string    // our queue id (X-Sluice-Queue-ID)
	EnvID        string    // ENVID of MAIL FROM, xtext-decoded (Original-Envelope-Id)
	ArrivalDate  time.Time // when we accepted the message
	Sender       string    // envelope sender the DSN goes to; "" for a double bounce
	Postmaster   string    // named in the text; the To: of a double bounce
	Recipients   []RcptReport
	Ret          string // RET: "FULL" or "HDRS"; "" returns the message for failures, headers otherwise
	Original     []byte // the original message, CRLF line ends
	SMTPUTF8     bool   // the original was SMTPUTF8 mail: use the RFC 6533 global types
	MaxReturn    int    // above this many bytes of Original, return its headers only; 0 = no cap
}

// RcptReport is the per-recipient part of a DSN.
type RcptReport struct {
	// Final is the recipient address ("user@example.net"; a "type;address"
	// form keeps its type). Original is the ORCPT parameter, "" if none.
	Final, Original string
	Action          string    // failed, delayed, delivered, relayed, expanded; deliverable or undeliverable in a verification report
	Status          string    // enhanced status code, X.Y.Z
	RemoteMTA       string    // host that replied, "mx.example.net" (Remote-MTA: dns; ...)
	Diagnostic      string    // "smtp; 550 5.1.1 ..."; a bare reply gets "smtp; " put in front
	LastAttempt     time.Time // zero: field omitted
	WillRetryUntil  time.Time // for delayed only; zero: omitted
	// Text is the recipient's line in the human-readable part, after
	// "<address>: " (Postfix's "delivery via mx[ip]:25: 250 2.1.5 Ok");
	// "" words it from RemoteMTA and Diagnostic.
	Text string
}

// DSN actions (RFC 3464 2.3.3).
const (
	ActionFailed    = "failed"
	ActionDelayed   = "delayed"
	ActionDelivered = "delivered"
	ActionRelayed   = "relayed"
	ActionExpanded  = "expanded"

	// A verification report (sendmail -bv) has only these two, Postfix's
	// words for a probe's result: the recipient would be accepted, or not
	// (refused, or a temporary failure: a probe is tried once).
	ActionDeliverable   = "deliverable"
	ActionUndeliverable = "undeliverable"
)

// kindVerify is the report kind of a verification report: Postfix's
// "verify" template, never mixed with delivery notices.
const kindVerify = "verify"

// maxField caps one field value so that, folded or not, no output line can
// reach SMTP's 998-octet limit even when a remote reply is huge.
const maxField = 900

const dateLayout = "Mon, 02 Jan 2006 15:04:05 -0700"

// Build writes the whole DSN message (RFC 3464 inside an RFC 3462
// multipart/report), CRLF line ends, dated now, with the given Message-ID
// (angle brackets optional; "" makes one from the queue id). Text taken
// from outside (diagnostics, addresses) is cleaned of line breaks and
// control characters, and of non-ASCII unless SMTPUTF8, so the output is
// always well-formed.
func Build(r *Report, now time.Time, messageID string) ([]byte, error) {
	host := clean(r.ReportingMTA, false)
	if host == "" || strings.ContainsAny(host, " ;") {
		return nil, fmt.Errorf("bounce: build DSN: bad reporting MTA %q", r.ReportingMTA)
	}
	if len(r.Recipients) == 0 {
		return nil, errors.New("bounce: build DSN: no recipients")
	}
	kind := ""
	for i, rc := range r.Recipients {
		switch a := strings.ToLower(rc.Action); a {
		case ActionDeliverable, ActionUndeliverable:
			if kind != "" && kind != kindVerify {
				return nil, fmt.Errorf("bounce: build DSN: recipient %d: %s in a delivery notice", i, a)
			}
			kind = kindVerify
		case ActionFailed:
			if kind == kindVerify {
				return nil, fmt.Errorf("bounce: build DSN: recipient %d: %s in a verification report", i, a)
			}
			kind = ActionFailed
		case ActionDelayed:
			if kind == kindVerify {
				return nil, fmt.Errorf("bounce: build DSN: recipient %d: %s in a verification report", i, a)
			}
			if kind != ActionFailed {
				kind = ActionDelayed
			}
		case ActionDelivered, ActionRelayed, ActionExpanded:
			if kind == kindVerify {
				return nil, fmt.Errorf("bounce: build DSN: recipient %d: %s in a verification report", i, a)
			}
			if kind == "" {
				kind = ActionDelivered
			}
		default:
			return nil, fmt.Errorf("bounce: build DSN: recipient %d: bad action %q", i, rc.Action)
		}
		if !ValidStatus(rc.Status) {
			return nil, fmt.Errorf("bounce: build DSN: recipient %d: bad status %q", i, rc.Status)
		}
		if _, a := splitAddr(clean(rc.Final, true)); a == "" {
			return nil, fmt.Errorf("bounce: build DSN: recipient %d: no address", i)
		}
	}
	global := r.SMTPUTF8
	to := clean(r.Sender, global)
	if to == "" || to == "<>" {
		to = clean(r.Postmaster, global)
	}
	if to == "" {
		return nil, errors.New("bounce: build DSN: no sender and no postmaster to send to")
	}
	if messageID = strings.ReplaceAll(strings.Trim(clean(messageID, false), "<>"), " ", ""); messageID == "" {
		messageID = now.UTC().Format("20060102150405") + "." + bchars(r.QueueID) + "@" + host
	}

	text := humanText(r, kind, host, now, global)
	status := deliveryStatus(r, host, global)
	retType, retDesc, ret := returned(r, kind, global)

	bnd := bchars(r.QueueID)
	if bnd == "" {
		bnd = "dsn"
	}
	bnd += "." + strconv.FormatInt(now.Unix(), 10) + "/" + bchars(host)
	if len(bnd) > 60 {
		bnd = bnd[:60]
	}
	for n := 1; bytes.Contains(ret, []byte("--"+bnd)) || strings.Contains(text, "--"+bnd) ||
		strings.Contains(status, "--"+bnd); n++ {
		bnd = strings.TrimRight(bnd[:min(len(bnd), 55)], " ") + "=" + strconv.Itoa(n)
	}

	eight := global || !isASCII(ret)
	var b bytes.Buffer
	b.Grow(len(ret) + len(text) + len(status) + 1024)
	hdr := func(name, value string) { b.WriteString(name + ": " + value + "\r\n") }
	hdr("Date", now.Format(dateLayout))
	hdr("From", "MAILER-DAEMON@"+host+" (Mail Delivery System)")
	hdr("Subject", subjects[kind])
	hdr("To", fold("To", addrSpec(to)))
	hdr("Auto-Submitted", "auto-replied")
	hdr("Message-ID", "<"+messageID+">")
	hdr("MIME-Version", "1.0")
	rt := "delivery-status"
	if global {
		rt = "global-delivery-status"
	}
	hdr("Content-Type", "multipart/report; report-type="+rt+";\r\n\tboundary=\""+bnd+"\"")
	if eight {
		hdr("Content-Transfer-Encoding", "8bit")
	}
	b.WriteString("\r\nThis is a MIME-encapsulated message.\r\n\r\n")

	part := func(desc, ctype, cte, body string, raw []byte) {
		b.WriteString("--" + bnd + "\r\n")
		hdr("Content-Description", desc)
		hdr("Content-Type", ctype)
		if cte != "" {
			hdr("Content-Transfer-Encoding", cte)
		}
		b.WriteString("\r\n")
		b.WriteString(body)
		b.Write(raw)
		b.WriteString("\r\n")
	}
	charset, textCTE := "us-ascii", ""
	if global {
		charset, textCTE = "utf-8", "8bit"
	}
	part("Notification", "text/plain; charset="+charset, textCTE, text, nil)
	dsType := "message/delivery-status"
	if global {
		dsType = "message/global-delivery-status"
	}
	part("Delivery report", dsType, textCTE, status, nil)
	if ret != nil {
		cte := ""
		if !isASCII(ret) {
			cte = "8bit"
		}
		part(retDesc, retType, cte, "", ret)
	}
	b.WriteString("--" + bnd + "--\r\n")
	return b.Bytes(), nil
}

var subjects = map[string]string{
	ActionFailed:    "Undelivered Mail Returned to Sender",
	ActionDelayed:   "Delayed Mail (still being retried)",
	ActionDelivered: "Successful Mail Delivery Report",
	kindVerify:      "Mail Delivery Status Report",
}

// humanText is the first part, in Postfix's wording so that users and
// their help desks recognise it. Every line ends in CRLF except the last
// (the CRLF before the boundary belongs to the boundary).
func humanText(r *Report, kind, host string, now time.Time, global bool) string {
	pm := clean(r.Postmaster, global)
	if pm == "" {
		pm = "postmaster"
	}
	var t strings.Builder
	t.WriteString("This is the mail system at host " + host + ".\r\n\r\n")
	switch kind {
	case ActionFailed:
		t.WriteString("I'm sorry to have to inform you that your message could not\r\n" +
			"be delivered to one or more recipients. It's attached below.\r\n\r\n")
	case ActionDelayed:
		t.WriteString("####################################################################\r\n" +
			"# THIS IS A WARNING ONLY.  YOU DO NOT NEED TO RESEND YOUR MESSAGE. #\r\n" +
			"####################################################################\r\n\r\n")
		if !r.ArrivalDate.IsZero() {
			hours := int(now.Sub(r.ArrivalDate) / time.Hour)
			t.WriteString("Your message could not be delivered for more than " + strconv.Itoa(max(hours, 0)) + " hour(s).\r\n")
			var until time.Time
			for _, rc := range r.Recipients {
				if rc.WillRetryUntil.After(until) {
					until = rc.WillRetryUntil
				}
			}
			if !until.IsZero() {
				days := int((until.Sub(r.ArrivalDate) + 12*time.Hour) / (24 * time.Hour))
				t.WriteString("It will be retried until it is " + strconv.Itoa(max(days, 0)) + " day(s) old.\r\n")
			}
			t.WriteString("\r\n")
		}
	case kindVerify:
		t.WriteString("Enclosed is the mail delivery report that you requested.\r\n\r\n")
	default:
		t.WriteString("Your message was successfully delivered to the destination(s)\r\n" +
			"listed below. If the message was delivered to mailbox you will\r\n" +
			"receive no further notifications. Otherwise you may still receive\r\n" +
			"notifications of mail delivery errors from other systems.\r\n\r\n")
	}
	if kind == ActionFailed || kind == ActionDelayed {
		t.WriteString("For further assistance, please send mail to " + pm + ".\r\n\r\n" +
			"If you do so, please include this problem report. You can\r\n" +
			"delete your own text from the attached returned message.\r\n\r\n")
	}
	t.WriteString("                   The mail system\r\n")
	for _, rc := range r.Recipients {
		_, final := splitAddr(clean(rc.Final, true))
		line := "<" + clean(final, global) + ">"
		if _, orig := splitAddr(clean(rc.Original, true)); orig != "" && !strings.EqualFold(orig, final) {
			line += " (expanded from <" + clean(orig, global) + ">)"
		}
		_, diag := splitType(clean(rc.Diagnostic, global))
		switch {
		case clean(rc.Text, global) != "":
			line += ": " + clean(rc.Text, global)
		case diag != "" && rc.RemoteMTA != "":
			line += ": host " + clean(rc.RemoteMTA, global) + " said: " + diag
		case diag != "":
			line += ": " + diag
		default:
			line += ": " + StatusText(rc.Status)
		}
		t.WriteString("\r\n" + wrap(line) + "\r\n")
	}
	return strings.TrimSuffix(t.String(), "\r\n")
}

// deliveryStatus is the message/delivery-status body (RFC 3464 2.1):
// per-message fields, then one block per recipient, blank lines between.
func deliveryStatus(r *Report, host string, global bool) string {
	var s strings.Builder
	f := func(name, value string) {
		if value != "" {
			s.WriteString(name + ": " + fold(name, value) + "\r\n")
		}
	}
	f("Reporting-MTA", "dns; "+host)
	f("X-Sluice-Queue-ID", clean(r.QueueID, false))
	if snd := clean(r.Sender, true); snd != "" && snd != "<>" {
		f("X-Sluice-Sender", addrField(snd, global))
	}
	f("Original-Envelope-Id", clean(r.EnvID, false))
	if !r.ArrivalDate.IsZero() {
		f("Arrival-Date", r.ArrivalDate.Format(dateLayout))
	}
	for _, rc := range r.Recipients {
		s.WriteString("\r\n")
		f("Final-Recipient", addrField(clean(rc.Final, true), global))
		if o := clean(rc.Original, true); o != "" {
			f("Original-Recipient", addrField(o, global))
		}
		f("Action", strings.ToLower(rc.Action))
		f("Status", rc.Status)
		if m := clean(rc.RemoteMTA, global); m != "" {
			if typ, _ := splitType(m); typ == "" {
				m = "dns; " + m
			}
			f("Remote-MTA", m)
		}
		if d := clean(rc.Diagnostic, global); d != "" {
			if typ, _ := splitType(d); typ == "" {
				d = "smtp; " + d
			}
			f("Diagnostic-Code", d)
		}
		if !rc.LastAttempt.IsZero() {
			f("Last-Attempt-Date", rc.LastAttempt.Format(dateLayout))
		}
		if !rc.WillRetryUntil.IsZero() && strings.EqualFold(rc.Action, ActionDelayed) {
			f("Will-Retry-Until", rc.WillRetryUntil.Format(dateLayout))
		}
	}
	return strings.TrimSuffix(s.String(), "\r\n")
}

// returned picks the third part: the whole message or its header section.
func returned(r *Report, kind string, global bool) (ctype, desc string, body []byte) {
	if len(r.Original) == 0 {
		return "", "", nil
	}
	msg := crlf(r.Original)
	full := strings.EqualFold(r.Ret, "FULL") || (r.Ret == "" && kind == ActionFailed)
	if strings.EqualFold(r.Ret, "HDRS") || (r.MaxReturn > 0 && len(msg) > r.MaxReturn) || kind == kindVerify {
		// A verification report returns the headers only, as Postfix's
		// trace service does (DSN_RET_HDRS): nothing was delivered.
		full = false
	}
	what := map[string]string{ActionFailed: "Undelivered", ActionDelayed: "Delayed", ActionDelivered: "Delivered"}[kind]
	if kind == kindVerify {
		if global {
			return "message/global-headers", "Message Headers", headerSection(msg)
		}
		return "text/rfc822-headers", "Message Headers", headerSection(msg)
	}
	if full {
		if global {
			return "message/global", what + " Message", msg
		}
		return "message/rfc822", what + " Message", msg
	}
	h := headerSection(msg)
	if global {
		return "message/global-headers", what + " Message Headers", h
	}
	return "text/rfc822-headers", what + " Message Headers", h
}

// headerSection is the header of a CRLF message, without the blank line.
func headerSection(msg []byte) []byte {
	if i := bytes.Index(msg, []byte("\r\n\r\n")); i >= 0 {
		return msg[:i+2]
	}
	return msg
}

// crlf makes every line end in CRLF, including the last, so that a stray
// bare LF or CR in the spool cannot break the MIME structure around it.
func crlf(b []byte) []byte {
	if !bytes.ContainsAny(b, "\r\n") || (!bytes.Contains(b, []byte("\r\r")) && bytes.Count(b, []byte("\n")) == bytes.Count(b, []byte("\r\n")) && bytes.Count(b, []byte("\r")) == bytes.Count(b, []byte("\r\n"))) {
		if bytes.HasSuffix(b, []byte("\r\n")) {
			return b
		}
		return append(b[:len(b):len(b)], '\r', '\n')
	}
	out := make([]byte, 0, len(b)+len(b)/32+2)
	for i := 0; i < len(b); i++ {
		switch c := b[i]; c {
		case '\r':
			out = append(out, '\r', '\n')
			if i+1 < len(b) && b[i+1] == '\n' {
				i++
			}
		case '\n':
			out = append(out, '\r', '\n')
		default:
			out = append(out, c)
		}
	}
	if !bytes.HasSuffix(out, []byte("\r\n")) {
		out = append(out, '\r', '\n')
	}
	return out
}

// clean makes outside text safe for one header field: control characters
// become spaces, runs of white space one space, invalid UTF-8 (and, unless
// utf8ok, all non-ASCII) becomes '?', and the result is capped at maxField.
func clean(s string, utf8ok bool) string {
	var b strings.Builder
	space := false
	for _, c := range s {
		switch {
		case c < 0x20 || c == 0x7f || c == ' ' || (c >= 0x80 && c < 0xa0) || c == 0x2028 || c == 0x2029:
			space = b.Len() > 0
			continue
		case c == utf8.RuneError || (c >= 0x80 && !utf8ok):
			c = '?'
		}
		if space {
			b.WriteByte(' ')
			space = false
		}
		if b.Len()+utf8.RuneLen(c) > maxField {
			break
		}
		b.WriteRune(c)
	}
	return b.String()
}

// fold breaks a long header value at spaces so lines stay near 78
// columns, continuing with a tab.
func fold(name, v string) string { return wrapWords(v, len(name)+2, "\t") }

// wrap breaks a line of the human-readable part at spaces near 78
// columns, indenting continuations as Postfix does.
func wrap(line string) string { return wrapWords(line, 0, "    ") }

// wrapWords breaks s at spaces so lines stay near 78 columns: s starts at
// column start, and each continuation line with indent.
func wrapWords(s string, start int, indent string) string {
	if start+len(s) <= 78 {
		return s
	}
	var b strings.Builder
	col := start
	for i, w := range strings.Split(s, " ") {
		if i > 0 {
			if col+1+len(w) > 78 {
				b.WriteString("\r\n" + indent)
				col = len(indent)
			} else {
				b.WriteByte(' ')
				col++
			}
		}
		b.WriteString(w)
		col += len(w)
	}
	return b.String()
}

// splitType splits "type; value" (RFC 3464 address-type, diagnostic-type,
// mta-name-type) when s starts with an atom and a semicolon.
func splitType(s string) (typ, value string) {
	i := strings.IndexByte(s, ';')
	if i <= 0 {
		return "", s
	}
	for _, c := range s[:i] {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.') {
			return "", s
		}
	}
	return s[:i], strings.TrimSpace(s[i+1:])
}

// splitAddr is splitType for addresses, with brackets dropped.
func splitAddr(s string) (typ, addr string) {
	typ, addr = splitType(s)
	return typ, strings.TrimSuffix(strings.TrimPrefix(addr, "<"), ">")
}

// addrField writes an address as "type; address". Plain addresses are
// rfc822; non-ASCII ones are RFC 6533 utf-8, written raw in a global DSN
// and as utf-8-addr-xtext otherwise.
func addrField(s string, global bool) string {
	typ, addr := splitAddr(s)
	if typ == "" {
		typ = "rfc822"
		if !isASCII([]byte(addr)) {
			typ = "utf-8"
		}
	}
	if strings.EqualFold(typ, "utf-8") && !global {
		return typ + "; " + utf8XText(addr)
	}
	return typ + "; " + clean(addr, global)
}

func addrSpec(s string) string {
	_, a := splitAddr(s)
	return "<" + a + ">"
}

// utf8XText encodes an address as RFC 6533 utf-8-addr-xtext: printable
// ASCII except '+', '=' and '\' as is, everything else as \x{HEX}.
func utf8XText(s string) string {
	var b strings.Builder
	for _, c := range s {
		if b.Len() > maxField-12 {
			break // keep the field within maxField like any other
		}
		if c > 0x20 && c < 0x7f && c != '+' && c != '=' && c != '\\' {
			b.WriteRune(c)
		} else {
			fmt.Fprintf(&b, `\x{%X}`, c)
		}
	}
	return b.String()
}

// bchars keeps what RFC 2046 allows in a boundary (less space and the
// characters that would need quoting in a Message-ID).
func bchars(s string) string {
	var b strings.Builder
	for _, c := range s {
		if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.ContainsRune("'+_-.=?", c) {
			b.WriteRune(c)
		}
		if b.Len() >= 40 {
			break
		}
	}
	return b.String()
}

func isASCII(b []byte) bool {
	for _, c := range b {
		if c >= 0x80 {
			return false
		}
	}
	return true
}
