package bounce

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"mime"
	"mime/multipart"
	"net/mail"
	"net/textproto"
	"strconv"
	"strings"
	"unicode/utf8"
)

// ErrNotDSN is returned by Parse for a message that has no
// message/delivery-status (or global-delivery-status) part.
var ErrNotDSN = errors.New("bounce: not a delivery status notification")

// Limits on hostile input: how deep multiparts nest, how many parts one
// holds, how many recipient blocks are kept.
const (
	maxDepth      = 5
	maxParts      = 100
	maxRecipients = 10000
)

// Parse reads an incoming DSN: the delivery-status fields (plain or RFC
// 6533 global), and the returned message or headers (Original, with Ret
// "FULL" or "HDRS"). The report may be the message itself or nested in
// other multiparts. Addresses of type rfc822 and utf-8 come back bare
// ("user@example.net"), others as "type; address"; Remote-MTA of type dns
// comes back as the host alone; Diagnostic keeps its type ("smtp; 550 ...").
// Sender is the X-*-Sender field if there is one, else the To: address.
// Fields that do not parse are left empty; only a missing report is an error.
func Parse(msg []byte) (*Report, error) {
	br := bufio.NewReader(bytes.NewReader(msg))
	h, err := textproto.NewReader(br).ReadMIMEHeader()
	if err != nil && len(h) == 0 {
		return nil, fmt.Errorf("bounce: parse DSN header: %w", err)
	}
	body, _ := io.ReadAll(br) // reading from memory cannot fail
	p := &parser{}
	if err := p.walk(h, body, 0); err != nil {
		return nil, err
	}
	if p.status == nil {
		return nil, ErrNotDSN
	}
	r := p.report()
	if r.Sender == "" {
		if a, err := mail.ParseAddress(h.Get("To")); err == nil {
			r.Sender = a.Address
		} else {
			r.Sender = strings.Trim(strings.TrimSpace(h.Get("To")), "<>")
		}
	}
	return r, nil
}

type parser struct {
	status   []byte // the delivery-status body
	global   bool
	original []byte
	ret      string
}

// walk looks for the report in one entity; parts of the multipart that
// holds the status are its returned content.
func (p *parser) walk(h textproto.MIMEHeader, body []byte, depth int) error {
	mt, params, err := mime.ParseMediaType(h.Get("Content-Type"))
	if err != nil && mt == "" {
		return nil
	}
	body = decodeCTE(h.Get("Content-Transfer-Encoding"), body)
	switch {
	case mt == "message/delivery-status" || mt == "message/global-delivery-status":
		p.status, p.global = body, mt == "message/global-delivery-status"
		return nil
	case !strings.HasPrefix(mt, "multipart/"):
		return nil
	case depth >= maxDepth:
		return fmt.Errorf("bounce: parse DSN: multiparts nested deeper than %d", maxDepth)
	}
	bnd := params["boundary"]
	if bnd == "" {
		return nil
	}
	mr := multipart.NewReader(bytes.NewReader(body), bnd)
	var orig []byte
	var ret string
	for n := 0; n < maxParts; n++ {
		part, err := mr.NextPart()
		if err != nil {
			break // io.EOF or a broken tail: keep what was read
		}
		// A part that ends badly (broken quoted-printable, a missing
		// boundary) still gives what was read: bounces are often mangled.
		pb, _ := io.ReadAll(part)
		pmt, _, _ := mime.ParseMediaType(part.Header.Get("Content-Type"))
		switch pmt {
		case "message/rfc822", "message/global":
			if orig == nil {
				orig, ret = decodeCTE(part.Header.Get("Content-Transfer-Encoding"), pb), "FULL"
			}
		case "text/rfc822-headers", "message/global-headers":
			if orig == nil {
				orig, ret = decodeCTE(part.Header.Get("Content-Transfer-Encoding"), pb), "HDRS"
			}
		default:
			if p.status != nil {
				continue // a second report is ignored
			}
			if err := p.walk(part.Header, pb, depth+1); err != nil {
				return err
			}
			if p.status != nil && p.original != nil {
				return nil // found deeper, with its own content
			}
		}
	}
	if p.status != nil && p.original == nil {
		p.original, p.ret = orig, ret
	}
	return nil
}

func decodeCTE(cte string, b []byte) []byte {
	if !strings.EqualFold(strings.TrimSpace(cte), "base64") {
		return b
	}
	// Line breaks and stray padding are common in the wild; decode what
	// decodes.
	clean := bytes.Map(func(r rune) rune {
		if r == '\r' || r == '\n' || r == ' ' || r == '\t' {
			return -1
		}
		return r
	}, b)
	out := make([]byte, base64.StdEncoding.DecodedLen(len(clean)))
	n, _ := base64.StdEncoding.Decode(out, clean)
	return out[:n]
}

// field is one unfolded "Name: value" line of the status body.
type field struct{ name, value string }

// fields splits a status body into fields, with nil marking each blank
// line (block boundary). Lines without a colon are skipped.
func fields(b []byte) []*field {
	var out []*field
	var cur *field
	for _, line := range strings.Split(string(b), "\n") {
		line = strings.TrimRight(line, "\r")
		switch {
		case strings.TrimSpace(line) == "":
			cur = nil
			out = append(out, nil)
		case line[0] == ' ' || line[0] == '\t':
			if cur != nil && len(cur.value) < 4*maxField {
				cur.value += " " + strings.TrimSpace(line)
			}
		default:
			name, value, ok := strings.Cut(line, ":")
			if !ok {
				cur = nil
				continue
			}
			cur = &field{strings.ToLower(strings.TrimSpace(name)), strings.TrimSpace(value)}
			out = append(out, cur)
		}
	}
	return out
}

func (p *parser) report() *Report {
	r := &Report{SMTPUTF8: p.global, Original: p.original, Ret: p.ret}
	var rc *RcptReport
	closeRcpt := func() {
		if rc != nil && rc.Final != "" && len(r.Recipients) < maxRecipients {
			r.Recipients = append(r.Recipients, *rc)
		}
		rc = nil
	}
	for _, f := range fields(p.status) {
		if f == nil {
			closeRcpt()
			continue
		}
		switch f.name {
		case "reporting-mta":
			if r.ReportingMTA == "" {
				_, r.ReportingMTA = splitType(f.value)
			}
		case "original-envelope-id":
			if r.EnvID == "" {
				r.EnvID = f.value
			}
		case "arrival-date":
			if t, err := mail.ParseDate(f.value); err == nil && r.ArrivalDate.IsZero() {
				r.ArrivalDate = t
			}
		case "final-recipient", "original-recipient", "action", "status", "remote-mta",
			"diagnostic-code", "last-attempt-date", "will-retry-until":
			if rc == nil || (f.name == "final-recipient" && rc.Final != "") {
				closeRcpt()
				rc = &RcptReport{}
			}
			p.rcptField(rc, f)
		default:
			if strings.HasPrefix(f.name, "x-") && strings.HasSuffix(f.name, "-queue-id") && r.QueueID == "" {
				r.QueueID = f.value
			}
			if strings.HasPrefix(f.name, "x-") && strings.HasSuffix(f.name, "-sender") && r.Sender == "" {
				r.Sender = parseAddr(f.value)
			}
		}
	}
	closeRcpt()
	return r
}

func (p *parser) rcptField(rc *RcptReport, f *field) {
	switch f.name {
	case "final-recipient":
		rc.Final = parseAddr(f.value)
	case "original-recipient":
		rc.Original = parseAddr(f.value)
	case "action":
		a, _, _ := strings.Cut(f.value, " ")
		rc.Action = strings.ToLower(a)
	case "status":
		s, _, _ := strings.Cut(f.value, " ")
		if ValidStatus(s) {
			rc.Status = s
		}
	case "remote-mta":
		typ, v := splitType(f.value)
		if typ != "" && !strings.EqualFold(typ, "dns") {
			v = typ + "; " + v
		}
		rc.RemoteMTA = v
	case "diagnostic-code":
		rc.Diagnostic = f.value
	case "last-attempt-date":
		if t, err := mail.ParseDate(f.value); err == nil {
			rc.LastAttempt = t
		}
	case "will-retry-until":
		if t, err := mail.ParseDate(f.value); err == nil {
			rc.WillRetryUntil = t
		}
	}
}

// parseAddr undoes addrField: rfc822 and utf-8 addresses come back bare.
func parseAddr(v string) string {
	typ, a := splitAddr(v)
	switch strings.ToLower(typ) {
	case "", "rfc822":
		return a
	case "utf-8":
		return decodeUTF8XText(a)
	}
	return typ + "; " + a
}

// decodeUTF8XText decodes the \x{HEX} escapes of RFC 6533
// utf-8-addr-xtext; anything else passes through.
func decodeUTF8XText(s string) string {
	if !strings.Contains(s, `\x{`) {
		return s
	}
	var b strings.Builder
	for {
		i := strings.Index(s, `\x{`)
		if i < 0 {
			break
		}
		j := strings.IndexByte(s[i:], '}')
		if j < 0 {
			break
		}
		n, err := strconv.ParseUint(s[i+3:i+j], 16, 32)
		b.WriteString(s[:i])
		if err != nil || !utf8.ValidRune(rune(n)) {
			b.WriteString(s[i : i+j+1])
		} else {
			b.WriteRune(rune(n))
		}
		s = s[i+j+1:]
	}
	b.WriteString(s)
	return b.String()
}
