package smtpd

import (
	"bytes"
	"crypto/tls"
	"errors"
	"io"
	"net/netip"
	"strings"
	"sync"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/sluicemta/sluice/internal/tlsname"
)

var (
	errBareNewline = &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 5, 2}, Message: "Error: bare <LF> received"}
	errTooBig      = &smtp.SMTPError{Code: 552, EnhancedCode: smtp.EnhancedCode{5, 3, 4}, Message: "Error: message file too big"}
	errTooManyHops = &smtp.SMTPError{Code: 554, EnhancedCode: smtp.EnhancedCode{5, 4, 6}, Message: "Too many hops"}
	errLineTooLong = &smtp.SMTPError{Code: 500, EnhancedCode: smtp.EnhancedCode{5, 5, 2}, Message: "Error: line too long"}
	errDataTimeout = &smtp.SMTPError{Code: 421, EnhancedCode: smtp.EnhancedCode{4, 4, 2}, Message: "Error: timeout exceeded"}
	errDataRead    = &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 3, 0}, Message: "Error: lost connection while receiving data"}
)

// readBufs recycles readContent's read buffers: a fresh one per message
// showed up as memory clearing in profiles.
var readBufs = sync.Pool{New: func() any { b := make([]byte, 8<<10); return &b }}

// readContent reads a message's content (already dot-unstuffed by go-smtp)
// and returns it with CRLF line endings only, ending in CRLF unless empty.
// A bare LF or CR is an error unless normalize is set, in which case each
// becomes CRLF. More than max input bytes is errTooBig. After an error of
// our own the rest of the stream is read and dropped, so the client's
// reply lines up with the end of its data (it matters for BDAT).
func readContent(r io.Reader, max int64, normalize bool) ([]byte, error) {
	var out bytes.Buffer
	bp := readBufs.Get().(*[]byte)
	defer readBufs.Put(bp)
	buf := *bp
	var n int64
	prevCR := false
	var bad error
	for {
		k, err := r.Read(buf)
		n += int64(k)
		if bad == nil && n > max {
			bad = errTooBig
		}
		if bad == nil && k > 0 {
			chunk := buf[:k]
			for len(chunk) > 0 {
				if prevCR {
					prevCR = false
					if chunk[0] == '\n' {
						out.WriteString("\r\n")
						chunk = chunk[1:]
						continue
					}
					if !normalize {
						bad = errBareNewline
						break
					}
					out.WriteString("\r\n")
				}
				i := bytes.IndexAny(chunk, "\r\n")
				if i < 0 {
					out.Write(chunk)
					break
				}
				out.Write(chunk[:i])
				if chunk[i] == '\r' {
					prevCR = true
					chunk = chunk[i+1:]
					continue
				}
				// A bare LF.
				if !normalize {
					bad = errBareNewline
					break
				}
				out.WriteString("\r\n")
				chunk = chunk[i+1:]
			}
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, dataReadError(err)
		}
	}
	if bad == nil && prevCR {
		if !normalize {
			bad = errBareNewline
		} else {
			out.WriteString("\r\n")
		}
	}
	if bad != nil {
		return nil, bad
	}
	b := out.Bytes()
	if len(b) > 0 && !bytes.HasSuffix(b, []byte("\r\n")) {
		b = append(b, '\r', '\n')
	}
	return b, nil
}

// dataReadError maps a failure while reading content to the reply.
func dataReadError(err error) error {
	var se *smtp.SMTPError
	switch {
	case errors.As(err, &se):
		return se // go-smtp's own size limit: 552 5.3.4
	case errors.Is(err, smtp.ErrTooLongLine):
		return errLineTooLong
	case isTimeout(err):
		return errDataTimeout
	case errors.Is(err, smtp.ErrDataReset):
		return err // the transfer was abandoned: Data records it for Reset
	}
	return errDataRead
}

func isTimeout(err error) bool {
	var t interface{ Timeout() bool }
	return errors.As(err, &t) && t.Timeout()
}

// header holds what the inbound path needs to know about a header section.
type header struct {
	end       int // offset of the first byte after the header fields
	received  int
	messageID bool
	date      bool
}

// scanHeader reads the header fields at the start of CRLF content. The
// header ends at the empty line or at the first line that is not a field
// or a continuation.
func scanHeader(b []byte) header {
	var h header
	pos := 0
	seen := false
	for pos < len(b) {
		eol := bytes.Index(b[pos:], []byte("\r\n"))
		next := len(b)
		line := b[pos:]
		if eol >= 0 {
			line = b[pos : pos+eol]
			next = pos + eol + 2
		}
		if len(line) == 0 {
			h.end = pos
			return h
		}
		if line[0] == ' ' || line[0] == '\t' {
			if !seen {
				h.end = pos
				return h
			}
			pos = next
			continue
		}
		colon := bytes.IndexByte(line, ':')
		if colon <= 0 {
			h.end = pos
			return h
		}
		name := bytes.TrimRight(line[:colon], " \t")
		if len(name) == 0 || !fieldName(name) {
			h.end = pos
			return h
		}
		seen = true
		switch {
		case strings.EqualFold(string(name), "Received"):
			h.received++
		case strings.EqualFold(string(name), "Message-ID"):
			h.messageID = true
		case strings.EqualFold(string(name), "Date"):
			h.date = true
		}
		pos = next
	}
	h.end = len(b)
	return h
}

func fieldName(b []byte) bool {
	for _, c := range b {
		if c < 33 || c > 126 || c == ':' {
			return false
		}
	}
	return true
}

// rfc5322Date is the Date/Received time format, with Postfix's zone comment.
func rfc5322Date(t time.Time) string {
	return t.Format("Mon, 2 Jan 2006 15:04:05 -0700 (MST)")
}

// receivedInfo is what goes into our Received header.
type receivedInfo struct {
	Helo, ClientName string
	IP               netip.Addr
	Host, Proto, ID  string
	TLS              *tls.ConnectionState
	Rcpt             string // only with exactly one recipient
	Time             time.Time
}

// received builds a Received header in Postfix's shape.
func received(ri receivedInfo) string {
	var b strings.Builder
	b.WriteString("Received: from ")
	b.WriteString(headerToken(ri.Helo))
	b.WriteString(" (")
	name := ri.ClientName
	if name == "" {
		name = "unknown"
	}
	b.WriteString(headerToken(name))
	b.WriteString(" [")
	if ri.IP.Is6() {
		b.WriteString("IPv6:")
	}
	b.WriteString(ri.IP.String())
	b.WriteString("])\r\n")
	if ri.TLS != nil {
		b.WriteString("\t(using ")
		b.WriteString(tlsname.Version(ri.TLS.Version))
		b.WriteString(" with cipher ")
		b.WriteString(tls.CipherSuiteName(ri.TLS.CipherSuite))
		b.WriteString(")\r\n")
	}
	b.WriteString("\tby ")
	b.WriteString(ri.Host)
	b.WriteString(" (sluice) with ")
	b.WriteString(ri.Proto)
	b.WriteString(" id ")
	b.WriteString(ri.ID)
	if ri.Rcpt != "" {
		b.WriteString("\r\n\tfor <")
		b.WriteString(headerToken(ri.Rcpt))
		b.WriteString(">; ")
	} else {
		b.WriteString(";\r\n\t")
	}
	b.WriteString(rfc5322Date(ri.Time))
	b.WriteString("\r\n")
	return b.String()
}

// headerToken keeps client-chosen text from breaking the header's
// structure: no controls, no spaces, no comment or angle delimiters.
func headerToken(s string) string {
	s = printable(s)
	return strings.Map(func(r rune) rune {
		switch r {
		case ' ', '(', ')', '<', '>', ';', '[', ']', '\\':
			return '_'
		}
		return r
	}, s)
}

// assemble returns the content handed to the queue: our Received header on
// top, then the client's header with Message-ID and Date added at its end
// where wanted and missing, then the body.
func assemble(content []byte, h header, recv string, addMsgID, addDate string) []byte {
	out := make([]byte, 0, len(recv)+len(content)+len(addMsgID)+len(addDate))
	out = append(out, recv...)
	out = append(out, content[:h.end]...)
	out = append(out, addMsgID...)
	out = append(out, addDate...)
	out = append(out, content[h.end:]...)
	return out
}
