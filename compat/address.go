package compat

import "strings"

// ParseAddressList extracts the addresses of an RFC 5322 address list the
// way Postfix's tok822 parser does for sendmail arguments and -t headers:
// display names, comments and group names are dropped, "Name <a@b>" gives
// "a@b", a quoted local part loses its quotes, and an address without a
// domain ("root") is kept as is. "<>" yields the empty address, which
// callers use for the null sender. It never fails: text that is not an
// address is kept as the address Postfix would make of it.
func ParseAddressList(s string) []string {
	var (
		out     []string
		cur     strings.Builder // atoms of the current element outside <>
		angle   strings.Builder // content of <...>
		inAngle bool
		hadAng  bool
	)
	flush := func() {
		if hadAng {
			out = append(out, stripRoute(angle.String()))
		} else if a := cur.String(); a != "" {
			out = append(out, a)
		}
		cur.Reset()
		angle.Reset()
		hadAng = false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '"':
			// Quoted string: part of a local part or of a phrase; keep the
			// text without quotes (Postfix's internal form).
			j := i + 1
			var q strings.Builder
			for ; j < len(s) && s[j] != '"'; j++ {
				if s[j] == '\\' && j+1 < len(s) {
					j++
				}
				q.WriteByte(s[j])
			}
			i = j
			if inAngle {
				angle.WriteString(q.String())
			} else {
				cur.WriteString(q.String())
			}
		case c == '(':
			// Comments nest; drop them.
			i = commentEnd(s, i)
		case inAngle:
			if c == '>' {
				inAngle = false
			} else if c == '<' {
				angle.Reset() // "<<a>": the innermost bracket wins
			} else if c != ' ' && c != '\t' && c != '\r' && c != '\n' {
				angle.WriteByte(c)
			}
		case c == '[':
			// Domain literal: copied verbatim, ':' inside is no group.
			j := strings.IndexByte(s[i:], ']')
			if j < 0 {
				j = len(s) - i - 1
			}
			if !hadAng {
				cur.WriteString(s[i : i+j+1])
			}
			i += j
		case c == '<':
			// What came before was a display name.
			inAngle, hadAng = true, true
			angle.Reset()
			cur.Reset()
		case c == ',':
			flush()
		case c == '>':
			// A stray '>' outside <...> is no part of any address.
		case c == ':':
			// A group name ends here; the phrase before it is no address.
			cur.Reset()
		case c == ';':
			flush()
		case c == ' ' || c == '\t' || c == '\r' || c == '\n':
			// Atoms of a phrase are separated by spaces; if a <...>
			// follows, cur is reset anyway. Postfix joins "a @ b" as "a@b".
		default:
			if hadAng {
				// Text after <...> within one element is junk Postfix ignores.
				continue
			}
			cur.WriteByte(c)
		}
	}
	flush()
	return out
}

// stripRoute removes an obsolete source route ("@a,@b:user@c").
func stripRoute(a string) string {
	if strings.HasPrefix(a, "@") {
		if i := strings.IndexByte(a, ':'); i >= 0 {
			return a[i+1:]
		}
	}
	return a
}

// commentEnd returns the index of the ")" closing the RFC 5322 comment
// that opens at s[i], comments nesting and backslash quoting inside; at or
// past the end of s when it is not closed.
func commentEnd(s string, i int) int {
	depth := 1
	j := i + 1
	for ; j < len(s) && depth > 0; j++ {
		switch s[j] {
		case '\\':
			j++
		case '(':
			depth++
		case ')':
			depth--
		}
	}
	return j - 1
}
