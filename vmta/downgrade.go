package vmta

// Content conversion for a next hop that cannot take the message as it is
// (RFC 6152 3: without 8BITMIME the client converts to 7 bit or returns
// the message), and for lines longer than RFC 5322 2.1.1's 998 octets,
// which many servers refuse or break. DKIM signs the bytes that go out, so
// a signer must sign after conversion: call Downgrade first and sign what
// it returns; vmta then finds nothing left to convert.

import (
	"bytes"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"io"
	"mime"
	"mime/quotedprintable"
	"strings"
	"unicode/utf8"
)

// ErrNotConvertible: the content has 8-bit octets that cannot be encoded
// (in a header, or in a part already declared base64, quoted-printable or
// an unknown encoding), or MIME nested too deep. Delivery to a server
// without 8BITMIME bounces with 5.6.3.
var ErrNotConvertible = errors.New("vmta: content cannot be converted to 7 bit")

// maxLine is RFC 5322 2.1.1's limit on a line, without its CRLF.
const maxLine = 998

// maxMIMEDepth bounds nested multiparts and message/rfc822 parts.
const maxMIMEDepth = 32

// contentInfo is what one scan of a message finds.
type contentInfo struct {
	header8bit bool // 8-bit octets in the top-level header
	body8bit   bool // 8-bit octets after the header
	longLines  bool // a line (header or body) over 998 octets
}

// scanContent reads the content once. It is cheap next to sending it:
// lines are found with IndexByte and 8-bit octets eight at a time.
func scanContent(r io.Reader) (contentInfo, error) {
	var info contentInfo
	bp := bodyBufs.Get().(*[]byte)
	defer bodyBufs.Put(bp)
	buf := *bp
	inHeader := true
	lineLen, lastCR := 0, false // the current line so far
	endLine := func() {
		n := lineLen
		if lastCR {
			n-- // the CR of CRLF is not part of the line
		}
		if n > maxLine {
			info.longLines = true
		}
	}
	for {
		n, err := r.Read(buf)
		p := buf[:n]
		for len(p) > 0 {
			i := bytes.IndexByte(p, '\n')
			seg := p
			if i >= 0 {
				seg = p[:i]
			}
			if len(seg) > 0 {
				if inHeader {
					info.header8bit = info.header8bit || has8bit(seg)
				} else if !info.body8bit {
					info.body8bit = has8bit(seg)
				}
				lineLen += len(seg)
				lastCR = seg[len(seg)-1] == '\r'
			}
			if i < 0 {
				break
			}
			endLine()
			if inHeader && (lineLen == 0 || (lineLen == 1 && lastCR)) {
				inHeader = false
			}
			lineLen, lastCR = 0, false
			p = p[i+1:]
		}
		if err == io.EOF {
			lastCR = false
			endLine()
			return info, nil
		}
		if err != nil {
			return info, err
		}
	}
}

// Downgrade returns content fit for a 7-bit SMTP path: every MIME leaf
// part (or the body of a message that is not MIME) with 8-bit octets or
// lines over 998 octets is re-encoded, text/* as quoted-printable and
// anything else as base64, and its Content-Transfer-Encoding rewritten;
// enclosing multipart and message/rfc822 parts are relabelled 7bit. A
// message without MIME headers gets MIME-Version and, for an 8-bit body, a
// Content-Type naming its charset (utf-8, or unknown-8bit per RFC 1428).
// Parts that need nothing are copied byte for byte.
//
// changed is false (and out is content) when nothing needed converting.
// Headers are never rewritten: 8-bit octets in any header, or in a part
// already declared base64 or quoted-printable, give ErrNotConvertible.
// Lines over 998 octets that cannot be re-encoded (a header, an encoded
// part) are left as they are.
func Downgrade(content []byte) (out []byte, changed bool, err error) {
	info, _ := scanContent(bytes.NewReader(content))
	if !info.body8bit && !info.longLines {
		if info.header8bit {
			return content, false, ErrNotConvertible
		}
		return content, false, nil
	}
	var b bytes.Buffer
	b.Grow(len(content) + len(content)/8)
	changed, err = downgradeEntity(&b, content, true, 0)
	if err != nil {
		return content, false, err
	}
	if !changed {
		return content, false, nil
	}
	return b.Bytes(), true, nil
}

// field is one header field as it appears, continuation lines included.
type field struct {
	name string // lower case
	raw  []byte
}

func (f field) value() string {
	_, v, _ := bytes.Cut(f.raw, []byte(":"))
	v = bytes.ReplaceAll(v, []byte("\r\n"), nil)
	v = bytes.ReplaceAll(v, []byte("\n"), nil)
	return strings.TrimSpace(string(v))
}

// splitEntity splits an entity into its header fields, the blank line
// (empty when there is none) and the body. A line that is neither a field
// nor a continuation ends the header, as Postfix reads it.
func splitEntity(b []byte) (fields []field, blank, body []byte) {
	for len(b) > 0 {
		line := b
		if i := bytes.IndexByte(b, '\n'); i >= 0 {
			line = b[:i+1]
		}
		trimmed := bytes.TrimRight(line, "\r\n")
		if len(trimmed) == 0 {
			return fields, line, b[len(line):]
		}
		if (trimmed[0] == ' ' || trimmed[0] == '\t') && len(fields) > 0 {
			f := &fields[len(fields)-1]
			f.raw = f.raw[:len(f.raw)+len(line)] // contiguous in b
			b = b[len(line):]
			continue
		}
		name, _, ok := bytes.Cut(trimmed, []byte(":"))
		if !ok || len(name) == 0 || bytes.ContainsAny(name, " \t") {
			return fields, nil, b
		}
		fields = append(fields, field{name: strings.ToLower(string(name)), raw: line})
		b = b[len(line):]
	}
	return fields, nil, nil
}

func lookup(fields []field, name string) (string, bool) {
	for _, f := range fields {
		if f.name == name {
			return f.value(), true
		}
	}
	return "", false
}

func has8bit(b []byte) bool {
	for len(b) >= 8 {
		if binary.LittleEndian.Uint64(b)&0x8080808080808080 != 0 {
			return true
		}
		b = b[8:]
	}
	for _, c := range b {
		if c >= 0x80 {
			return true
		}
	}
	return false
}

func hasLongLine(b []byte) bool {
	for len(b) > 0 {
		i := bytes.IndexByte(b, '\n')
		line := b
		if i >= 0 {
			line, b = b[:i], b[i+1:]
		} else {
			b = nil
		}
		if len(bytes.TrimSuffix(line, []byte("\r"))) > maxLine {
			return true
		}
	}
	return false
}

// downgradeEntity writes the converted entity to w and reports whether it
// differs from b.
func downgradeEntity(w *bytes.Buffer, b []byte, top bool, depth int) (bool, error) {
	if depth > maxMIMEDepth {
		return false, ErrNotConvertible
	}
	fields, blank, body := splitEntity(b)
	for _, f := range fields {
		if has8bit(f.raw) {
			return false, ErrNotConvertible
		}
	}
	if !has8bit(body) && !hasLongLine(body) {
		w.Write(b)
		return false, nil
	}
	ctype, hasCType := lookup(fields, "content-type")
	mt, params, err := mime.ParseMediaType(ctype)
	if err != nil || !hasCType {
		mt, params = "text/plain", nil // RFC 2045 5.2
	}
	cte, _ := lookup(fields, "content-transfer-encoding")
	cte = strings.ToLower(cte)

	switch {
	case strings.HasPrefix(mt, "multipart/") && params["boundary"] != "":
		var nb bytes.Buffer
		changed, err := downgradeMultipart(&nb, body, params["boundary"], depth)
		if err != nil || !changed {
			if err == nil {
				w.Write(b)
			}
			return false, err
		}
		writeHeader(w, fields, blank, "7bit", top, "")
		w.Write(nb.Bytes())
		return true, nil
	case mt == "message/rfc822":
		var nb bytes.Buffer
		changed, err := downgradeEntity(&nb, body, false, depth+1)
		if err != nil || !changed {
			if err == nil {
				w.Write(b)
			}
			return false, err
		}
		writeHeader(w, fields, blank, "7bit", top, "")
		w.Write(nb.Bytes())
		return true, nil
	}

	switch cte {
	case "", "7bit", "8bit", "binary":
	default:
		// Already encoded (or an unknown encoding): 8-bit octets here are
		// damage we cannot repair; long lines are left alone.
		if has8bit(body) {
			return false, ErrNotConvertible
		}
		w.Write(b)
		return false, nil
	}
	var enc bytes.Buffer
	newCTE := "quoted-printable"
	if strings.HasPrefix(mt, "text/") {
		qw := quotedprintable.NewWriter(&enc)
		qw.Write(body)
		qw.Close()
	} else {
		newCTE = "base64"
		s := base64.StdEncoding.EncodeToString(body)
		for len(s) > 76 {
			enc.WriteString(s[:76])
			enc.WriteString("\r\n")
			s = s[76:]
		}
		enc.WriteString(s)
	}
	addType := ""
	if top && !hasCType && has8bit(body) {
		cs := "unknown-8bit"
		if utf8.Valid(body) {
			cs = "utf-8"
		}
		addType = "text/plain; charset=" + cs
	}
	writeHeader(w, fields, blank, newCTE, top, addType)
	w.Write(enc.Bytes())
	if enc.Len() > 0 && !bytes.HasSuffix(enc.Bytes(), []byte("\n")) && bytes.HasSuffix(body, []byte("\n")) {
		w.WriteString("\r\n")
	}
	return true, nil
}

// writeHeader writes fields with Content-Transfer-Encoding set to cte; at
// the top level it adds MIME-Version when missing (without it the new
// field means nothing, RFC 2045 4) and contentType when not "".
func writeHeader(w *bytes.Buffer, fields []field, blank []byte, cte string, top bool, contentType string) {
	wrote, mimeVersion := false, false
	for _, f := range fields {
		switch f.name {
		case "content-transfer-encoding":
			if !wrote {
				w.WriteString("Content-Transfer-Encoding: " + cte + "\r\n")
				wrote = true
			}
			continue
		case "mime-version":
			mimeVersion = true
		}
		w.Write(f.raw)
	}
	if top && !mimeVersion {
		w.WriteString("MIME-Version: 1.0\r\n")
	}
	if contentType != "" {
		w.WriteString("Content-Type: " + contentType + "\r\n")
	}
	if !wrote {
		w.WriteString("Content-Transfer-Encoding: " + cte + "\r\n")
	}
	if len(blank) == 0 {
		blank = []byte("\r\n")
	}
	w.Write(blank)
}

// downgradeMultipart converts each part of a multipart body (RFC 2046
// 5.1.1). The line end before a delimiter belongs to the delimiter, so a
// part is converted without it and it is written back after.
func downgradeMultipart(w *bytes.Buffer, body []byte, boundary string, depth int) (bool, error) {
	delim := []byte("--" + boundary)
	changed := false
	var part []byte // the current part: from its start to the line before the next delimiter
	partStart := -1 // -1: in the preamble
	flush := func(end int) error {
		if partStart < 0 {
			w.Write(body[:end])
			return nil
		}
		part = body[partStart:end]
		content := bytes.TrimSuffix(part, []byte("\n"))
		content = bytes.TrimSuffix(content, []byte("\r"))
		eol := part[len(content):]
		var pb bytes.Buffer
		c, err := downgradeEntity(&pb, content, false, depth+1)
		if err != nil {
			return err
		}
		if c {
			changed = true
			w.Write(pb.Bytes())
			w.WriteString("\r\n")
		} else {
			w.Write(content)
			w.Write(eol)
		}
		return nil
	}
	pos := 0
	for pos < len(body) {
		end := len(body)
		if i := bytes.IndexByte(body[pos:], '\n'); i >= 0 {
			end = pos + i + 1
		}
		line := body[pos:end]
		if bytes.HasPrefix(line, delim) {
			rest := bytes.TrimRight(line[len(delim):], " \t\r\n")
			if len(rest) == 0 || string(rest) == "--" {
				if err := flush(pos); err != nil {
					return false, err
				}
				w.Write(line)
				if string(rest) == "--" {
					w.Write(body[end:]) // the epilogue
					return changed, nil
				}
				partStart = end
			}
		}
		pos = end
	}
	if err := flush(len(body)); err != nil {
		return false, err
	}
	return changed, nil
}
