package vmta

import (
	"bufio"
	"bytes"
)

// dotWriter writes message content as SMTP DATA (RFC 5321 4.5.2): every line
// end becomes CRLF (a bare LF or bare CR too, so no peer can read a line end
// we did not mean: SMTP smuggling), a leading '.' is doubled, and close adds
// the final ".\r\n".
type dotWriter struct {
	w   *bufio.Writer
	bol bool // at the beginning of a line
	cr  bool // the last byte was a CR whose line end is not yet written
}

func newDotWriter(w *bufio.Writer) *dotWriter { return &dotWriter{w: w, bol: true} }

func (d *dotWriter) Write(p []byte) (int, error) {
	n := len(p)
	for len(p) > 0 {
		if d.cr {
			d.cr = false
			d.w.WriteString("\r\n")
			d.bol = true
			if p[0] == '\n' {
				p = p[1:]
				continue
			}
		}
		if d.bol && p[0] == '.' {
			d.w.WriteByte('.')
		}
		i := bytes.IndexAny(p, "\r\n")
		if i < 0 {
			d.w.Write(p)
			d.bol = false
			break
		}
		if i > 0 {
			d.w.Write(p[:i])
			d.bol = false
		}
		if p[i] == '\n' {
			d.w.WriteString("\r\n")
			d.bol = true
		} else {
			d.cr = true
		}
		p = p[i+1:]
	}
	// bufio.Writer keeps the first write error and returns it from Flush.
	return n, nil
}

// close ends the last line if needed and writes the terminating dot.
func (d *dotWriter) close() {
	if d.cr || !d.bol {
		d.w.WriteString("\r\n")
	}
	d.cr = false
	d.bol = true
	d.w.WriteString(".\r\n")
}
