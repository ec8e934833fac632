package smtpd

import (
	"net/netip"
	"strings"
	"unicode/utf8"

	"github.com/emersion/go-smtp"
)

// Relay control.
//
// go-smtp has already parsed the path: a source route (<@a,@b:user@c>) is
// dropped as RFC 5321 section 4.1.1.3 lets servers do, so the decision is
// made on the final mailbox user@c; a quoted local part arrives unquoted,
// so <"user@other"@local> reads user@other@local. Splitting at the LAST
// '@' keeps the real domain; any '@', '%' or '!' left in the local part is
// sender-specified routing (Postfix's allow_untrusted_routing=no), refused
// for clients that may not relay.

var (
	errRelayDenied = func(addr string) *smtp.SMTPError {
		return &smtp.SMTPError{Code: 554, EnhancedCode: smtp.EnhancedCode{5, 7, 1}, Message: "<" + printable(addr) + ">: Relay access denied"}
	}
	errBadRcpt = &smtp.SMTPError{Code: 501, EnhancedCode: smtp.EnhancedCode{5, 1, 3}, Message: "Bad recipient address syntax"}
)

// checkRcpt decides whether a client may send to addr. trusted means the
// client may relay (Policy.Relay or authenticated); local reports
// relay-domain destinations.
func checkRcpt(addr string, trusted bool, local func(string) bool) *smtp.SMTPError {
	at := strings.LastIndexByte(addr, '@')
	if at <= 0 || len(addr) > 512 || hasControl(addr) || !utf8.ValidString(addr) {
		return errBadRcpt
	}
	lp, dom := addr[:at], addr[at+1:]
	d, ok := normDomain(dom)
	if trusted {
		if !ok {
			return errBadRcpt
		}
		return nil
	}
	if !ok || !local(d) || strings.ContainsAny(lp, "@%!") {
		return errRelayDenied(addr)
	}
	return nil
}

// normDomain returns the form LocalDomain is asked about: lower case,
// without a trailing dot, IDNA A-labels; an address literal in canonical
// form. Non-ASCII (U-label) domains are lower-cased UTF-8, not converted
// to A-labels. ok is false for anything that is not a valid domain.
func normDomain(d string) (string, bool) {
	if strings.HasPrefix(d, "[") {
		if !strings.HasSuffix(d, "]") {
			return "", false
		}
		lit := d[1 : len(d)-1]
		v6 := false
		if len(lit) > 5 && strings.EqualFold(lit[:5], "IPv6:") {
			lit, v6 = lit[5:], true
		}
		ip, err := netip.ParseAddr(lit)
		if err != nil || ip.Zone() != "" || ip.Is6() != v6 {
			return "", false
		}
		if v6 {
			return "[IPv6:" + ip.String() + "]", true
		}
		return "[" + ip.String() + "]", true
	}
	d = strings.TrimSuffix(d, ".")
	if d == "" {
		return "", false
	}
	if !utf8.ValidString(d) {
		return "", false
	}
	d = strings.ToLower(d)
	if len(d) > 253 {
		return "", false
	}
	for _, label := range strings.Split(d, ".") {
		if len(label) == 0 || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return "", false
		}
		for i := 0; i < len(label); i++ {
			c := label[i]
			// Bytes of UTF-8 U-labels (SMTPUTF8) pass; no IDNA mapping is
			// done here, to keep golang.org/x/text out of the build.
			if !('a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '-' || c >= utf8.RuneSelf) {
				return "", false
			}
		}
	}
	return d, true
}

// checkSender vets a MAIL FROM path. The sender is not checked against any
// domain list: that is policy for milters.
func checkSender(addr string) *smtp.SMTPError {
	if addr == "" {
		return nil
	}
	at := strings.LastIndexByte(addr, '@')
	if at <= 0 || len(addr) > 512 || hasControl(addr) || !utf8.ValidString(addr) {
		return &smtp.SMTPError{Code: 501, EnhancedCode: smtp.EnhancedCode{5, 1, 7}, Message: "Bad sender address syntax"}
	}
	if _, ok := normDomain(addr[at+1:]); !ok {
		return &smtp.SMTPError{Code: 501, EnhancedCode: smtp.EnhancedCode{5, 1, 7}, Message: "Bad sender address syntax"}
	}
	return nil
}

func hasControl(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < 0x20 || s[i] == 0x7f {
			return true
		}
	}
	return false
}

func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= utf8.RuneSelf {
			return false
		}
	}
	return true
}

// printable makes client text safe to echo in a reply or a header: no
// control characters, no invalid UTF-8.
func printable(s string) string {
	if len(s) > 256 {
		s = s[:256]
	}
	ok := utf8.ValidString(s) && !hasControl(s)
	if ok {
		return s
	}
	var b strings.Builder
	for _, r := range s {
		if r < 0x20 || r == 0x7f || r == utf8.RuneError {
			b.WriteByte('?')
		} else {
			b.WriteRune(r)
		}
	}
	return b.String()
}
