package compat

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"
)

// ErrTooBig is returned (wrapped) when input exceeds the size limit.
var ErrTooBig = errors.New("message too big")

// ReadMessage reads a message from r as Postfix's sendmail does: a
// leading "From " (or ">From ") line is dropped, the CR of each CRLF is
// removed, and unless dotEnds is false (-i/-oi) a line of only "." ends
// the input. A final line without a newline gets one. No dot is ever
// unstuffed. The result uses bare LF line ends. max <= 0 means no limit;
// a larger input fails with an error wrapping ErrTooBig.
func ReadMessage(r io.Reader, dotEnds bool, max int64) ([]byte, error) {
	return readMessage(r, dotEnds, true, max)
}

// readMessage is ReadMessage; dropFrom false keeps a leading "From " line
// (the daemon re-normalises content a client already read).
func readMessage(r io.Reader, dotEnds, dropFrom bool, max int64) ([]byte, error) {
	br := bufio.NewReaderSize(r, 64<<10)
	var out bytes.Buffer
	first := true
	for {
		line, err := br.ReadSlice('\n')
		if err == bufio.ErrBufferFull {
			// A long line: copy this piece and carry on with the rest of it;
			// the "From "/"." tests only apply to whole short lines.
			out.Write(line)
			first = false
			if max > 0 && int64(out.Len()) > max {
				return nil, fmt.Errorf("compat: read message: %w", ErrTooBig)
			}
			for err == bufio.ErrBufferFull {
				line, err = br.ReadSlice('\n')
				out.Write(line)
			}
			if err != nil && err != io.EOF {
				return nil, Exitf(ExitDataErr, "error reading input: %v", err)
			}
			fixLineEnd(&out, err == io.EOF)
			if err == io.EOF {
				break
			}
			continue
		}
		if err != nil && err != io.EOF {
			return nil, &ExitError{Code: ExitDataErr, Msg: fmt.Sprintf("error reading input: %v", err), Err: err}
		}
		if len(line) == 0 && err == io.EOF {
			break
		}
		body := bytes.TrimSuffix(line, []byte("\n"))
		body = bytes.TrimSuffix(body, []byte("\r"))
		if first {
			first = false
			if dropFrom && bytes.HasPrefix(body, []byte("From ")) || bytes.HasPrefix(body, []byte(">From ")) {
				if err == io.EOF {
					break
				}
				continue
			}
		}
		if dotEnds && len(body) == 1 && body[0] == '.' {
			break
		}
		out.Write(body)
		out.WriteByte('\n')
		if max > 0 && int64(out.Len()) > max {
			return nil, fmt.Errorf("compat: read message: %w", ErrTooBig)
		}
		if err == io.EOF {
			break
		}
	}
	return out.Bytes(), nil
}

// fixLineEnd ends a long line just copied: strips its CR and makes sure it
// ends in LF.
func fixLineEnd(out *bytes.Buffer, eof bool) {
	b := out.Bytes()
	if n := len(b); n > 0 && b[n-1] == '\n' {
		if n > 1 && b[n-2] == '\r' {
			out.Truncate(n - 2)
			out.WriteByte('\n')
		}
		return
	}
	out.WriteByte('\n')
}

// Header is one header field: Name as written, Raw the whole field
// including continuation lines, each line ending in "\n".
type Header struct {
	Name string
	Raw  string
}

// Value returns the field body with continuation lines joined.
func (h Header) Value() string {
	v := h.Raw[len(h.Name)+1:]
	v = strings.ReplaceAll(v, "\n", "")
	return strings.TrimSpace(v)
}

// SplitHeader splits LF-terminated content into header fields and the
// body (the text after the blank line, or from the first line that is
// not a header field). sep reports whether a blank separator was present.
func SplitHeader(content []byte) (hdrs []Header, body []byte, sep bool) {
	rest := content
	for len(rest) > 0 {
		end := bytes.IndexByte(rest, '\n')
		if end < 0 {
			end = len(rest) - 1
		}
		line := rest[:end+1]
		if len(bytes.TrimRight(line, "\n")) == 0 {
			return hdrs, rest[end+1:], true
		}
		if (line[0] == ' ' || line[0] == '\t') && len(hdrs) > 0 {
			hdrs[len(hdrs)-1].Raw += string(line)
			rest = rest[end+1:]
			continue
		}
		name, ok := fieldName(line)
		if !ok {
			return hdrs, rest, false
		}
		hdrs = append(hdrs, Header{Name: name, Raw: string(line)})
		rest = rest[end+1:]
	}
	return hdrs, nil, false
}

// fieldName returns the name of a header line "Name: value"; the name is
// printable ASCII without spaces or ':' (RFC 5322 2.2).
func fieldName(line []byte) (string, bool) {
	i := bytes.IndexByte(line, ':')
	if i <= 0 {
		return "", false
	}
	for _, c := range line[:i] {
		if c <= ' ' || c > '~' {
			return "", false
		}
	}
	return string(line[:i]), true
}

// PrepareParams is what the daemon knows about a local submission.
type PrepareParams struct {
	Sender   string   // envelope sender; "" is the null sender
	FullName string   // for an added From:; "" for none
	Rcpts    []string // command-line recipients
	Extract  bool     // -t
	Gateway  bool     // -G: leave the headers alone (no additions)

	Origin   string // appended as "@Origin" to addresses without a domain; "" leaves them
	Hostname string // for Received: and Message-Id:
	QueueID  string
	UID      uint32
	Login    string
	Now      time.Time
}

// Prepared is a message ready for the queue.
type Prepared struct {
	Sender  string
	Rcpts   []string // command-line recipients, then extracted ones, no duplicates
	Content []byte   // CRLF line ends, not dot-stuffed
}

// dropHeaders are removed from every locally submitted message, as
// Postfix's message_drop_headers default.
var dropHeaders = map[string]bool{"bcc": true, "resent-bcc": true, "content-length": true, "return-path": true}

// probeMessage is what sendmail -bv submits instead of reading standard
// input, as Postfix's sendmail does: a From header when the sender was
// given, "Subject: probe", and the recipients in a To header. The daemon
// completes it like any submission; only its headers reach the report.
func probeMessage(inv *Invocation) []byte {
	var b strings.Builder
	if inv.SenderSet && inv.Sender != "" {
		fmt.Fprintf(&b, "From: %s\n", inv.Sender)
	}
	b.WriteString("Subject: probe\n")
	// Postfix writes "To:" as a partial record and each recipient as a
	// tab-led line, so the first shares the header's line.
	if len(inv.Rcpts) > 0 {
		fmt.Fprintf(&b, "To:\t%s\n", strings.Join(inv.Rcpts, ",\n\t"))
	}
	return []byte(b.String())
}

// Prepare turns content read by ReadMessage (LF line ends) into the
// queued message: recipients extracted under -t (from To/Cc/Bcc, or only
// from Resent-To/Cc/Bcc when the message has any of those), added to
// the command-line ones and de-duplicated; Bcc, Resent-Bcc,
// Content-Length and Return-Path dropped; addresses without a domain in
// address headers qualified with Origin; a Received: line prepended;
// missing Message-Id, Date and From (Resent- ones for a resent message)
// added after the last header, in Postfix's order. No recipients is the
// EX_USAGE error Postfix gives.
func Prepare(content []byte, p PrepareParams) (*Prepared, error) {
	hdrs, body, sep := SplitHeader(content)
	qualify := func(a string) string {
		if a != "" && p.Origin != "" && !strings.Contains(a, "@") {
			return a + "@" + p.Origin
		}
		return a
	}
	out := &Prepared{Sender: qualify(p.Sender)}
	seen := map[string]bool{}
	addRcpt := func(a string) {
		a = qualify(a)
		if a == "" || seen[a] {
			return
		}
		seen[a] = true
		out.Rcpts = append(out.Rcpts, a)
	}
	for _, r := range p.Rcpts {
		addRcpt(r)
	}
	// Any Resent- header makes the added headers Resent- ones; only a
	// Resent-To/Cc/Bcc makes -t read the Resent- recipients alone.
	resent, resentRcpt := false, false
	for _, h := range hdrs {
		if len(h.Name) > 7 && strings.EqualFold(h.Name[:7], "resent-") {
			resent = true
			switch strings.ToLower(h.Name[7:]) {
			case "to", "cc", "bcc":
				resentRcpt = true
			}
		}
	}
	if p.Extract {
		for _, h := range hdrs {
			n := strings.ToLower(h.Name)
			if resentRcpt {
				n = strings.TrimPrefix(n, "resent-")
				if len(n) == len(h.Name) {
					continue
				}
			}
			if n == "to" || n == "cc" || n == "bcc" {
				for _, a := range ParseAddressList(h.Value()) {
					addRcpt(a)
				}
			}
		}
	}
	if len(out.Rcpts) == 0 {
		return nil, NoRecipients(p.Extract)
	}

	var b strings.Builder
	b.Grow(len(content) + 512)
	date := p.Now.Format("Mon, _2 Jan 2006 15:04:05 -0700 (MST)")
	login := p.Login
	if login == "" {
		login = "unknown"
	}
	fmt.Fprintf(&b, "Received: by %s (sluice, from userid %d, user %s)\n\tid %s; %s\n", p.Hostname, p.UID, login, p.QueueID, date)
	have := map[string]bool{}
	for _, h := range hdrs {
		n := strings.ToLower(h.Name)
		if dropHeaders[n] {
			continue
		}
		have[n] = true
		if p.Origin != "" && addressHeaders[n] {
			b.WriteString(qualifyHeader(h.Raw, len(h.Name), p.Origin))
			continue
		}
		b.WriteString(h.Raw)
	}
	if !p.Gateway {
		pre := ""
		if resent {
			pre = "Resent-"
		}
		lp := strings.ToLower(pre)
		if !have[lp+"message-id"] {
			fmt.Fprintf(&b, "%sMessage-Id: <%s@%s>\n", pre, p.QueueID, p.Hostname)
		}
		if !have[lp+"date"] {
			fmt.Fprintf(&b, "%sDate: %s\n", pre, date)
		}
		if !have[lp+"from"] {
			b.WriteString(pre + "From: " + FromHeader(p.FullName, out.Sender) + "\n")
		}
	}
	// Always one blank line: when the body began at a line that was not a
	// header field (sep false) this inserts the missing separator.
	_ = sep
	b.WriteString("\n")
	b.Write(body)
	return &Prepared{Sender: out.Sender, Rcpts: out.Rcpts, Content: toCRLF(b.String())}, nil
}

// FromHeader formats a From: value from a full name and an address:
// "Name <addr>", the name quoted when it holds specials; the null sender
// is plain MAILER-DAEMON.
func FromHeader(fullName, addr string) string {
	if addr == "" {
		return "MAILER-DAEMON" // Postfix gives the null sender no name
	}
	if fullName == "" {
		return addr
	}
	if strings.ContainsAny(fullName, "()<>@,;:\\\".[]") {
		fullName = `"` + strings.NewReplacer(`\`, `\\`, `"`, `\"`).Replace(fullName) + `"`
	}
	return fullName + " <" + addr + ">"
}

func toCRLF(s string) []byte {
	n := strings.Count(s, "\n")
	out := make([]byte, 0, len(s)+n)
	for i := 0; i < len(s); i++ {
		if s[i] == '\n' {
			out = append(out, '\r')
		}
		out = append(out, s[i])
	}
	return out
}
