package bounce

import (
	"strconv"
	"strings"
)

// statusDetail holds the RFC 3463 descriptions (and later registrations in
// the IANA "Enumerated Status Codes" registry) keyed by "subject.detail";
// the class (4 or 5) does not change the wording.
var statusDetail = map[string]string{
	"0.0":  "other undefined status",
	"1.0":  "other address status",
	"1.1":  "bad destination mailbox address",
	"1.2":  "bad destination system address",
	"1.3":  "bad destination mailbox address syntax",
	"1.4":  "destination mailbox address ambiguous",
	"1.5":  "destination address valid",
	"1.6":  "destination mailbox has moved, no forwarding address",
	"1.7":  "bad sender's mailbox address syntax",
	"1.8":  "bad sender's system address",
	"1.9":  "message relayed to non-compliant mailer",
	"1.10": "recipient address has null MX",
	"2.0":  "other or undefined mailbox status",
	"2.1":  "mailbox disabled, not accepting messages",
	"2.2":  "mailbox full",
	"2.3":  "message length exceeds administrative limit",
	"2.4":  "mailing list expansion problem",
	"3.0":  "other or undefined mail system status",
	"3.1":  "mail system full",
	"3.2":  "system not accepting network messages",
	"3.3":  "system not capable of selected features",
	"3.4":  "message too big for system",
	"3.5":  "system incorrectly configured",
	"4.0":  "other or undefined network or routing status",
	"4.1":  "no answer from host",
	"4.2":  "bad connection",
	"4.3":  "directory server failure",
	"4.4":  "unable to route",
	"4.5":  "mail system congestion",
	"4.6":  "routing loop detected",
	"4.7":  "delivery time expired",
	"5.0":  "other or undefined protocol status",
	"5.1":  "invalid command",
	"5.2":  "syntax error",
	"5.3":  "too many recipients",
	"5.4":  "invalid command arguments",
	"5.5":  "wrong protocol version",
	"5.6":  "authentication exchange line is too long",
	"6.0":  "other or undefined media error",
	"6.1":  "media not supported",
	"6.2":  "conversion required and prohibited",
	"6.3":  "conversion required but not supported",
	"6.4":  "conversion with loss performed",
	"6.5":  "conversion failed",
	"6.6":  "message content not available",
	"6.7":  "non-ASCII addresses not permitted for that sender/recipient",
	"6.8":  "UTF-8 string reply is required, but not permitted by the SMTP client",
	"6.9":  "UTF-8 header message cannot be transferred to one or more recipients",
	"7.0":  "other or undefined security status",
	"7.1":  "delivery not authorized, message refused",
	"7.2":  "mailing list expansion prohibited",
	"7.3":  "security conversion required but not possible",
	"7.4":  "security features not supported",
	"7.5":  "cryptographic failure",
	"7.6":  "cryptographic algorithm not supported",
	"7.7":  "message integrity failure",
	"7.8":  "authentication credentials invalid",
	"7.9":  "authentication mechanism is too weak",
	"7.10": "encryption needed",
	"7.11": "encryption required for requested authentication mechanism",
	"7.12": "a password transition is needed",
	"7.13": "user account disabled",
	"7.14": "trust relationship required",
	"7.15": "priority level is too low",
	"7.16": "message is too big for the specified priority",
	"7.17": "mailbox owner has changed",
	"7.18": "domain owner has changed",
	"7.19": "RRVS test cannot be completed",
	"7.20": "no passing DKIM signature found",
	"7.21": "no acceptable DKIM signature found",
	"7.22": "no valid author-matched DKIM signature found",
	"7.23": "SPF validation failed",
	"7.24": "SPF validation error",
	"7.25": "reverse DNS validation failed",
	"7.26": "multiple authentication checks failed",
	"7.27": "sender address has null MX",
	"7.29": "ARC validation failure",
	"7.30": "REQUIRETLS support required",
}

// StatusText returns the RFC 3463 description of an enhanced status code,
// the text accounting puts in parentheses after dsnStatus ("5.1.1 (bad
// destination mailbox address)"). Every 2.x.x code reads "success", as in
// PowerMTA's d records. A detail not in the registry falls back to its
// subject's "other" wording; a malformed code gives "".
func StatusText(status string) string {
	class, subject, detail, ok := splitStatus(status)
	if !ok {
		return ""
	}
	if class == 2 {
		return "success"
	}
	if s, ok := statusDetail[strconv.Itoa(subject)+"."+strconv.Itoa(detail)]; ok {
		return s
	}
	if s, ok := statusDetail[strconv.Itoa(subject)+".0"]; ok {
		return s
	}
	return statusDetail["0.0"]
}

// ValidStatus reports whether s is an RFC 3463 enhanced status code:
// class 2, 4 or 5, then a subject and a detail of one to three digits.
func ValidStatus(s string) bool {
	_, _, _, ok := splitStatus(s)
	return ok
}

func splitStatus(s string) (class, subject, detail int, ok bool) {
	a, rest, ok1 := strings.Cut(s, ".")
	b, c, ok2 := strings.Cut(rest, ".")
	if !ok1 || !ok2 || len(a) != 1 || (a[0] != '2' && a[0] != '4' && a[0] != '5') {
		return 0, 0, 0, false
	}
	subject, ok = num3(b)
	if !ok {
		return 0, 0, 0, false
	}
	detail, ok = num3(c)
	if !ok {
		return 0, 0, 0, false
	}
	return int(a[0] - '0'), subject, detail, true
}

// num3 parses one to three ASCII digits (RFC 3463 allows no more, and no
// sign or space, which strconv.Atoi would accept).
func num3(s string) (int, bool) {
	if len(s) < 1 || len(s) > 3 {
		return 0, false
	}
	n := 0
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return 0, false
		}
		n = n*10 + int(s[i]-'0')
	}
	return n, true
}
