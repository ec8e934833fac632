package dkim

import (
	"bytes"
	"io"
	"sync"
)

// A line end in content is CRLF, a bare LF or a bare CR: vmta's DATA writer
// sends each of them as CRLF (so no receiver sees a line end we did not
// mean), and the signature must match what goes on the wire.

// nextLine returns the line starting at i: its text content[i:end] and the
// index of the next line. A last line without a line end has next == len.
// Two IndexByte scans (vectorised) find the line end; this runs over every
// byte of every message signed.
func nextLine(content []byte, i int) (end, next int) {
	rest := content[i:]
	lf := bytes.IndexByte(rest, '\n')
	lim := len(rest)
	if lf >= 0 {
		lim = lf
	}
	if cr := bytes.IndexByte(rest[:lim], '\r'); cr >= 0 && cr != lf-1 {
		return i + cr, i + cr + 1 // a bare CR ends a line too
	} else if lf < 0 {
		return len(content), len(content)
	} else if cr >= 0 {
		return i + cr, i + lf + 1
	}
	return i + lf, i + lf + 1
}

// field is one header field: content[start:end] spans its lines, without
// the line end of the last one.
type field struct {
	name       []byte // as written, before the colon, trailing WSP removed
	start, end int
}

// splitHeader returns the header fields of content and the offset of its
// body (len(content) when there is no empty line).
func splitHeader(content []byte) ([]field, int) {
	fields := make([]field, 0, 32)
	i := 0
	for i < len(content) {
		end, next := nextLine(content, i)
		if end == i {
			if next == i { // cannot happen: i < len
				break
			}
			return fields, next // the empty line ends the header
		}
		if (content[i] == ' ' || content[i] == '\t') && len(fields) > 0 {
			fields[len(fields)-1].end = end // continuation line
		} else {
			name := content[i:end]
			if c := bytes.IndexByte(name, ':'); c >= 0 {
				name = name[:c]
			}
			fields = append(fields, field{name: bytes.TrimRight(name, " \t"), start: i, end: end})
		}
		i = next
	}
	return fields, len(content)
}

// lineWriter batches small writes into a hash.
type lineWriter struct {
	w   io.Writer
	buf []byte
}

func (lw *lineWriter) write(b []byte) {
	if len(lw.buf)+len(b) > cap(lw.buf) {
		lw.flush()
		if len(b) >= cap(lw.buf) {
			lw.w.Write(b)
			return
		}
	}
	lw.buf = append(lw.buf, b...)
}

func (lw *lineWriter) writeByte(c byte) {
	if len(lw.buf) == cap(lw.buf) {
		lw.flush()
	}
	lw.buf = append(lw.buf, c)
}

func (lw *lineWriter) flush() {
	if len(lw.buf) > 0 {
		lw.w.Write(lw.buf)
		lw.buf = lw.buf[:0]
	}
}

var crlf = []byte("\r\n")

// bufPool holds canonBody's write buffers, so hashing a body allocates
// nothing.
var bufPool = sync.Pool{New: func() any { b := make([]byte, 0, 16<<10); return &b }}

// canonHeader appends field f of content in canonical form, ending in CRLF
// (RFC 6376 3.4.1, 3.4.2).
func canonHeader(dst, content []byte, f field, c Canon) []byte {
	raw := content[f.start:f.end]
	if c == Simple {
		for i := 0; ; {
			end, next := nextLine(raw, i)
			dst = append(dst, raw[i:end]...)
			dst = append(dst, crlf...)
			if next >= len(raw) {
				return dst
			}
			i = next
		}
	}
	dst = append(dst, bytes.ToLower(f.name)...)
	dst = append(dst, ':')
	value := raw[len(f.name):]
	value = bytes.TrimLeft(value, " \t")
	if len(value) > 0 && value[0] == ':' {
		value = value[1:]
	}
	// Unfold (drop line ends), turn WSP runs into one SP, trim both ends.
	wsp, any := false, false
	for _, ch := range value {
		switch ch {
		case '\r', '\n':
		case ' ', '\t':
			wsp = true
		default:
			if wsp && any {
				dst = append(dst, ' ')
			}
			wsp, any = false, true
			dst = append(dst, ch)
		}
	}
	return append(dst, crlf...)
}

// canonBody writes the body in canonical form to w (RFC 6376 3.4.3,
// 3.4.4). Trailing empty lines are dropped; an empty body is one CRLF in
// simple, nothing in relaxed.
func canonBody(w io.Writer, body []byte, c Canon) {
	bp := bufPool.Get().(*[]byte)
	defer bufPool.Put(bp)
	lw := lineWriter{w: w, buf: (*bp)[:0]}
	empty := 0 // empty lines seen and not yet written
	wrote := false
	for i := 0; i < len(body); {
		end, next := nextLine(body, i)
		line := body[i:end]
		i = next
		if c == Relaxed {
			line = bytes.TrimRight(line, " \t")
		}
		if len(line) == 0 {
			empty++
			continue
		}
		for ; empty > 0; empty-- {
			lw.write(crlf)
		}
		if c == Simple {
			lw.write(line)
		} else {
			relaxLine(&lw, line)
		}
		lw.write(crlf)
		wrote = true
	}
	if !wrote && c == Simple {
		lw.write(crlf)
	}
	lw.flush()
}

// relaxLine writes line with each run of WSP as one SP (no trailing WSP:
// the caller trimmed it). A line without a tab or two spaces in a row is
// already canonical and is written whole.
func relaxLine(lw *lineWriter, line []byte) {
	if bytes.IndexByte(line, '\t') < 0 && bytes.Index(line, doubleSP) < 0 {
		lw.write(line)
		return
	}
	start := 0
	for i := 0; i < len(line); i++ {
		c := line[i]
		if c != '\t' && (c != ' ' || i+1 == len(line) || line[i+1] != ' ' && line[i+1] != '\t') {
			continue
		}
		lw.write(line[start:i])
		lw.writeByte(' ')
		j := i
		for j < len(line) && (line[j] == ' ' || line[j] == '\t') {
			j++
		}
		start, i = j, j-1
	}
	lw.write(line[start:])
}

var doubleSP = []byte("  ")
