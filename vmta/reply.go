package vmta

import (
	"bufio"
	"errors"
	"fmt"
	"strings"
)

// Limits on what a server may send, so a hostile peer cannot make us buffer
// without bound. RFC 5321 4.5.3.1.5 allows 512 octets a reply line; real
// servers exceed it, so we allow more and truncate.
const (
	maxReplyLine  = 2048
	maxReplyLines = 200
)

var errProtocol = errors.New("malformed SMTP reply")

// readReply reads one (possibly multi-line) reply. It also returns the text
// of every line, which EHLO parsing needs.
func readReply(r *bufio.Reader) (Reply, []string, error) {
	var lines []string
	code := 0
	for {
		line, err := readLine(r)
		if err != nil {
			return Reply{}, nil, err
		}
		if len(line) < 3 || !isDigit(line[0]) || !isDigit(line[1]) || !isDigit(line[2]) ||
			line[0] < '2' || line[0] > '5' {
			return Reply{}, nil, fmt.Errorf("%w: %q", errProtocol, trunc(line, 80))
		}
		c := int(line[0]-'0')*100 + int(line[1]-'0')*10 + int(line[2]-'0')
		if code != 0 && c != code {
			return Reply{}, nil, fmt.Errorf("%w: code %d after %d", errProtocol, c, code)
		}
		code = c
		more := false
		text := ""
		if len(line) > 3 {
			switch line[3] {
			case '-':
				more = true
			case ' ':
			default:
				return Reply{}, nil, fmt.Errorf("%w: %q", errProtocol, trunc(line, 80))
			}
			text = line[4:]
		}
		lines = append(lines, text)
		if !more {
			break
		}
		if len(lines) >= maxReplyLines {
			return Reply{}, nil, fmt.Errorf("%w: more than %d lines", errProtocol, maxReplyLines)
		}
	}
	return makeReply(code, lines), lines, nil
}

// makeReply splits the enhanced status code (RFC 3463) off the first line
// and drops it from the others, where servers repeat it.
func makeReply(code int, lines []string) Reply {
	rep := Reply{Code: code}
	if len(lines) == 0 {
		return rep
	}
	enh, _ := splitEnhanced(code, lines[0])
	rep.Enhanced = enh
	parts := make([]string, 0, len(lines))
	for _, l := range lines {
		if enh != "" {
			if e, rest := splitEnhanced(code, l); e == enh {
				l = rest
			}
		}
		if l = strings.TrimSpace(l); l != "" {
			parts = append(parts, l)
		}
	}
	rep.Text = strings.Join(parts, " ")
	return rep
}

// splitEnhanced returns "c.s.d" when text starts with an enhanced code whose
// class matches the reply code, and the text after it.
func splitEnhanced(code int, text string) (string, string) {
	i := 0
	if len(text) < 5 || int(text[0]-'0') != code/100 || text[1] != '.' {
		return "", text
	}
	i = 2
	for part := 0; part < 2; part++ {
		j := i
		for j < len(text) && j-i < 3 && isDigit(text[j]) {
			j++
		}
		if j == i {
			return "", text
		}
		if part == 0 {
			if j >= len(text) || text[j] != '.' {
				return "", text
			}
			j++
		}
		i = j
	}
	if i < len(text) && text[i] != ' ' {
		return "", text
	}
	return text[:i], strings.TrimLeft(text[i:], " ")
}

// readLine reads one line without its CRLF (a bare LF is accepted: servers
// send it), truncating overlong lines.
func readLine(r *bufio.Reader) (string, error) {
	var b []byte
	for {
		frag, err := r.ReadSlice('\n')
		if len(b) < maxReplyLine {
			b = append(b, frag[:min(len(frag), maxReplyLine-len(b))]...)
		}
		if err == bufio.ErrBufferFull {
			continue
		}
		if err != nil {
			return "", err
		}
		break
	}
	s := string(b)
	s = strings.TrimSuffix(s, "\n")
	s = strings.TrimSuffix(s, "\r")
	return s, nil
}

func isDigit(c byte) bool { return c >= '0' && c <= '9' }

func trunc(s string, n int) string {
	if len(s) > n {
		return s[:n] + "..."
	}
	return s
}

// extensions parses the EHLO reply lines after the first into keyword (upper
// case) → parameters.
func extensions(lines []string) map[string]string {
	ext := make(map[string]string)
	for _, l := range lines[min(1, len(lines)):] {
		kw, params, _ := strings.Cut(strings.TrimSpace(l), " ")
		if kw == "" {
			continue
		}
		ext[strings.ToUpper(kw)] = strings.TrimSpace(params)
	}
	return ext
}

// xtext encodes s as RFC 3461 4 xtext: '+', '=', controls, space and
// non-ASCII as "+HH".
func xtext(s string) string {
	const hex = "0123456789ABCDEF"
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < '!' || c > '~' || c == '+' || c == '=' {
			b.WriteByte('+')
			b.WriteByte(hex[c>>4])
			b.WriteByte(hex[c&15])
			continue
		}
		b.WriteByte(c)
	}
	return b.String()
}

// synth builds a synthesized reply.
func synth(code int, enh, format string, args ...any) Reply {
	return Reply{Code: code, Enhanced: enh, Text: fmt.Sprintf(format, args...)}
}
