package bounce

import (
	"regexp"
	"strings"
)

// Pattern maps replies to a bounce category, as one line of PowerMTA's
// <bounce-category-patterns>: the regexp is matched against
// "status;text", e.g. "5.1.1;The email account that you tried to reach does not exist".
type Pattern struct {
	Re       *regexp.Regexp
	Category string
}

// Categorize returns the category of the first pattern matching
// "status;text", or "other".
func Categorize(patterns []Pattern, status, text string) string {
	s := status + ";" + text
	for _, p := range patterns {
		if p.Re.MatchString(s) {
			return p.Category
		}
	}
	return "other"
}

// DefaultPatterns returns a copy of the built-in category patterns, for a
// configuration that wants to put its own in front of them.
func DefaultPatterns() []Pattern {
	return append([]Pattern(nil), defaultPatterns...)
}

// The order matters: first match wins. Strong wording comes before status
// codes because receivers reuse codes loosely (Microsoft says "5.4.1
// Recipient address rejected: Access denied" for a user that does not
// exist, 5.4.1 being "no answer from host"); status codes come before weak
// wording ("rejected", "denied").
var defaultPatterns = compilePatterns([][2]string{
	{`^[45]\.4\.7;|(?i)(message|delivery) (time )?expired|too long in (the )?queue|queue\.expired`, "message-expired"},
	{`(?i)\bvirus|malware|infected|trojan`, "virus-related"},
	{`(?i)spam|unsolicited|bl[ao]cklist|block ?list|black ?list|spamhaus|spamcop|barracuda|\b(dns|r|ur|sur)bl\b|` +
		`listed (at|on|in|by)|reputation|complaints|\[TSS?\d+\]|\bbulk\b|\bjunk\b`, "spam-related"},
	// The sender's side is wrong: not the recipient's fault.
	{`^[45]\.1\.[78];|(?i)sender address rejected|sender verify failed|invalid sender|bad (outbound )?sender|` +
		`sender (domain|address) (must|does not|doesn't)`, "invalid-sender"},
	{`^[45]\.7\.(2[0-7]|29);|(?i)\b(spf|dkim|dmarc|arc)\b|unauthenticated|ptr record|reverse dns`, "policy-related"},
	{`(?i)gr[ae]ylist|rate limit|\brate (that|which) prevents|too many (messages|connections|emails|recipients)|` +
		`unusual rate|throttl`, "policy-related"},
	{`^[45]\.(2\.2|3\.1);|(?i)quota|mailbox (is )?full|insufficient (system )?storage|exceeded (its |the )?storage|` +
		`mailbox size limit|out of storage`, "quota-issues"},
	{`^5\.2\.1;|^[45]\.7\.13;|(?i)disabled|inactive|deactivated|suspended|no longer (active|in use|available)|` +
		`account (has been |is )?(closed|expired|locked|blocked)`, "inactive-mailbox"},
	{`(?i)relay(ing)? (access )?(denied|not permitted|prohibited)|(not permitted|unable|not allowed) to relay|` +
		`we do not relay`, "relaying-issues"},
	{`^[45]\.1\.2;|^5\.3\.2;|(?i)domain (name )?(not found|does not exist|doesn't exist|unknown)|` +
		`(host|domain) or domain name not found|unknown domain|no such domain|no mx|null mx|nxdomain|` +
		`name service error|does not accept mail`, "bad-domain"},
	{`^[45]\.1\.[01346];|(?i)user unknown|unknown (user|recipient|local part|address)|no such (user|mailbox|recipient|address)|` +
		`does not exist|doesn't exist|mailbox (unavailable|not found|does not exist)|no mailbox|` +
		`recipient (address )?(not found|unknown|rejected|invalid)|invalid (recipient|mailbox|address)|` +
		`RecipientNotFound|unrouteable address|not our customer|doesn't have an? [^ ]+ account|user not found`, "bad-mailbox"},
	{`^[45]\.4\.1;|(?i)connection (timed out|refused)|timed? ?out|no answer|unreachable|no route to host`, "no-answer-from-host"},
	{`^[45]\.4\.2;|(?i)connection (reset|dropped|lost|closed)|lost connection|broken pipe|\btls\b|\bssl\b|handshake`, "bad-connection"},
	{`(?i)message (size|too (big|large))|size (limit|exceeds)|\bcontent\b|attachment|line too long`, "content-related"},
	{`^[45]\.7\.[0-9]+;|(?i)policy|blocked|denied|not allowed|prohibit|refused|rejected`, "policy-related"},
	{`^[45]\.(6\.[0-9]+|3\.4|2\.3);`, "content-related"},
	{`^[45]\.5\.[0-9]+;|(?i)syntax|protocol|command|pipelining`, "protocol-errors"},
	{`^[45]\.4\.[03456];|(?i)loops? back|routing loop|unable to route|mail loop`, "routing-errors"},
	{`^[45]\.3\.5;|(?i)misconfigur|configuration error`, "bad-configuration"},
})

func compilePatterns(src [][2]string) []Pattern {
	ps := make([]Pattern, len(src))
	for i, s := range src {
		ps[i] = Pattern{Re: regexp.MustCompile(s[0]), Category: s[1]}
	}
	return ps
}

// knownCategories are PowerMTA's bounce categories plus "success".
var knownCategories = strings.Fields(`bad-configuration bad-connection bad-domain bad-mailbox
	content-related inactive-mailbox invalid-sender message-expired no-answer-from-host other
	policy-related protocol-errors quota-issues relaying-issues routing-errors spam-related
	virus-related success`)
