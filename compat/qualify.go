package compat

import "strings"

// addressHeaders are the header fields whose addresses Postfix's cleanup
// rewrites for locally submitted mail (sender and recipient classes).
var addressHeaders = map[string]bool{
	"from": true, "sender": true, "reply-to": true, "errors-to": true, "return-receipt-to": true,
	"resent-from": true, "resent-sender": true, "resent-reply-to": true,
	"to": true, "cc": true, "bcc": true, "apparently-to": true,
	"resent-to": true, "resent-cc": true, "resent-bcc": true,
}

// qualifyHeader appends "@"+origin to every address without a domain in
// the raw header field (name, colon, value, folding kept), as Postfix's
// local rewriting does ("To: root" becomes "To: root@host"). Everything
// else in the field is left as written. It returns raw unchanged when
// nothing needed qualifying.
func qualifyHeader(raw string, nameLen int, origin string) string {
	s := raw
	var inserts []int
	var (
		atStart   = nameLen + 1
		inAngle   bool
		angleFrom int
		hadAngle  bool
		sawAt     bool
		words     int
		lastEnd   = -1
		inWord    bool
	)
	flush := func() {
		if !hadAngle && words == 1 && !sawAt && lastEnd > 0 {
			inserts = append(inserts, lastEnd)
		}
		hadAngle, sawAt, words, lastEnd, inWord = false, false, 0, -1, false
	}
	for i := atStart; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '"':
			j := i + 1
			for ; j < len(s) && s[j] != '"'; j++ {
				if s[j] == '\\' {
					j++
				}
			}
			if !inAngle {
				if !inWord {
					words++
				}
				inWord = true
				lastEnd = min(j+1, len(s))
			}
			i = j
		case c == '(':
			i = commentEnd(s, i)
			inWord = false
		case inAngle:
			switch c {
			case '@':
				sawAt = true
			case '>':
				inAngle = false
				content := strings.TrimSpace(s[angleFrom:i])
				if content != "" && !sawAt {
					inserts = append(inserts, i)
				}
			}
		case c == '<':
			inAngle, hadAngle, sawAt = true, true, false
			angleFrom = i + 1
		case c == ',' || c == ';':
			flush()
		case c == ':':
			hadAngle, sawAt, words, lastEnd, inWord = false, false, 0, -1, false
		case c == ' ' || c == '\t' || c == '\r' || c == '\n':
			inWord = false
		case c == '[':
			j := strings.IndexByte(s[i:], ']')
			if j < 0 {
				j = len(s) - i - 1
			}
			i += j
			lastEnd = i + 1
		default:
			if c == '@' {
				sawAt = true
			}
			if !hadAngle {
				if !inWord {
					words++
				}
				inWord = true
				lastEnd = i + 1
			}
		}
	}
	flush()
	if len(inserts) == 0 {
		return raw
	}
	var b strings.Builder
	prev := 0
	for _, at := range inserts {
		b.WriteString(s[prev:at])
		b.WriteString("@" + origin)
		prev = at
	}
	b.WriteString(s[prev:])
	return b.String()
}
