package compat

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"strconv"
)

// Hello is the first line a client sends on the control socket; a daemon
// that serves other control traffic on the same socket can route on it.
// PROTOCOL.md describes the whole exchange.
const Hello = "sluice-compat/1\n"

// Frame limits: outside input, so every length is bounded before reading.
const (
	maxTagLen    = 32
	maxFieldLen  = 4096
	maxRcpts     = 100000
	maxHeaderLen = 64
)

// ErrProtocol is wrapped by every framing error.
var ErrProtocol = errors.New("compat protocol error")

// frameTooBigError names the frame whose length exceeded its limit.
type frameTooBigError struct {
	tag    string
	n, max int
}

func (e *frameTooBigError) Error() string {
	return fmt.Sprintf("%v: %s frame of %d bytes exceeds %d", ErrProtocol, e.tag, e.n, e.max)
}

func (e *frameTooBigError) Unwrap() error { return ErrProtocol }

// writeFrame writes "<tag> <len>\n<payload>\n".
func writeFrame(w *bufio.Writer, tag string, payload []byte) error {
	w.WriteString(tag)
	w.WriteByte(' ')
	w.WriteString(strconv.Itoa(len(payload)))
	w.WriteByte('\n')
	w.Write(payload)
	return w.WriteByte('\n')
}

func writeStr(w *bufio.Writer, tag, s string) error { return writeFrame(w, tag, []byte(s)) }

// readFrame reads one frame, refusing payloads longer than max.
func readFrame(r *bufio.Reader, max int) (tag string, payload []byte, err error) {
	return readFrameLimit(r, func(string) int { return max })
}

// readFrameLimit reads one frame whose payload limit depends on its tag.
func readFrameLimit(r *bufio.Reader, limit func(tag string) int) (tag string, payload []byte, err error) {
	line, err := r.ReadSlice('\n')
	if err != nil {
		if err == io.EOF && len(line) == 0 {
			return "", nil, io.EOF
		}
		if err == bufio.ErrBufferFull || len(line) > maxHeaderLen {
			return "", nil, fmt.Errorf("%w: frame header too long", ErrProtocol)
		}
		return "", nil, fmt.Errorf("%w: read frame header: %v", ErrProtocol, err)
	}
	if len(line) > maxHeaderLen {
		return "", nil, fmt.Errorf("%w: frame header too long", ErrProtocol)
	}
	line = line[:len(line)-1]
	sp := -1
	for i, c := range line {
		if c == ' ' {
			sp = i
			break
		}
	}
	if sp <= 0 || sp > maxTagLen {
		return "", nil, fmt.Errorf("%w: bad frame header %q", ErrProtocol, line)
	}
	tag = string(line[:sp])
	n, err := strconv.Atoi(string(line[sp+1:]))
	if err != nil || n < 0 {
		return "", nil, fmt.Errorf("%w: bad frame length in %q", ErrProtocol, line)
	}
	if max := limit(tag); n > max {
		return "", nil, &frameTooBigError{tag, n, max}
	}
	payload = make([]byte, n+1)
	if _, err := io.ReadFull(r, payload); err != nil {
		return "", nil, fmt.Errorf("%w: read %s frame: %v", ErrProtocol, tag, err)
	}
	if payload[n] != '\n' {
		return "", nil, fmt.Errorf("%w: %s frame not terminated", ErrProtocol, tag)
	}
	return tag, payload[:n], nil
}

// encodeStatus is the payload of a status frame: "<exit code> <text>".
func encodeStatus(code int, text string) string { return strconv.Itoa(code) + " " + text }

func decodeStatus(p []byte) (int, string, error) {
	s := string(p)
	i := 0
	for i < len(s) && s[i] != ' ' {
		i++
	}
	code, err := strconv.Atoi(s[:i])
	if err != nil || code < 0 || code > 255 {
		return 0, "", fmt.Errorf("%w: bad status %q", ErrProtocol, s)
	}
	if i < len(s) {
		i++
	}
	return code, s[i:], nil
}
