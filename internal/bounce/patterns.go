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
// "status;text", or "other". It is for configured patterns; the built-in
// ones go through the faster DefaultCategory.
func Categorize(patterns []Pattern, status, text string) string {
	s := status + ";" + text
	for _, p := range patterns {
		if p.Re.MatchString(s) {
			return p.Category
		}
	}
	return "other"
}

// DefaultCategory is Categorize over the built-in rules, without regexps:
// Go's regexp engine took ~40 µs a reply over these alternations, too much
// for a call made once per recipient per attempt; substring tests over the
// lowercased text give the same answers.
func DefaultCategory(status, text string) string {
	lower := strings.ToLower(text)
	for i := range defaultRules {
		if defaultRules[i].match(status, lower) {
			return defaultRules[i].category
		}
	}
	return "other"
}

// DefaultPatterns returns the built-in rules as regexps, equivalent to
// DefaultCategory, for a configuration that puts its own patterns in front.
func DefaultPatterns() []Pattern {
	ps := make([]Pattern, len(defaultRules))
	for i, r := range defaultRules {
		ps[i] = Pattern{Re: r.regexp(), Category: r.category}
	}
	return ps
}

// rule matches when the status matches one of its status patterns or the
// lowercased text contains one of its words. A status pattern is
// "class.subject.detail" where any part may be "*".
type rule struct {
	category string
	statuses []string
	words    []string
}

func (r *rule) match(status, lower string) bool {
	for _, p := range r.statuses {
		if statusMatch(p, status) {
			return true
		}
	}
	for _, w := range r.words {
		if strings.Contains(lower, w) {
			return true
		}
	}
	return false
}

func statusMatch(pattern, status string) bool {
	for range 3 {
		p, prest, _ := strings.Cut(pattern, ".")
		s, srest, _ := strings.Cut(status, ".")
		if p != "*" && p != s {
			return false
		}
		pattern, status = prest, srest
	}
	return true
}

func (r *rule) regexp() *regexp.Regexp {
	var alt []string
	for _, p := range r.statuses {
		parts := strings.Split(p, ".")
		for i, x := range parts {
			if x == "*" {
				parts[i] = `[0-9]{1,3}`
			}
		}
		alt = append(alt, `^`+strings.Join(parts, `\.`)+`;`)
	}
	if len(r.words) > 0 {
		ws := make([]string, len(r.words))
		for i, w := range r.words {
			ws[i] = regexp.QuoteMeta(w)
		}
		// The status part has no letters, so matching the words
		// case-insensitively over "status;text" cannot misfire on it.
		alt = append(alt, `(?i:`+strings.Join(ws, "|")+`)`)
	}
	return regexp.MustCompile(strings.Join(alt, "|"))
}

// The order matters: first match wins. Strong wording comes before status
// codes because receivers reuse codes loosely (Microsoft says "5.4.1
// Recipient address rejected: Access denied", and "5.1.10
// RecipientNotFound", for users that do not exist; 5.4.1 is "no answer from
// host" and 5.1.10 "null MX"); status codes come before weak wording
// ("rejected", "denied"). Words are lowercase.
var defaultRules = []rule{
	{"message-expired", []string{"*.4.7"}, []string{"message expired", "delivery expired", "message time expired",
		"delivery time expired", "too long in queue", "too long in the queue", "queue.expired"}},
	{"virus-related", nil, []string{"virus", "malware", "infected", "trojan"}},
	{"spam-related", nil, []string{"spam", "unsolicited", "blacklist", "black list", "blocklist", "block list",
		"blocklisted", "spamhaus", "spamcop", "barracuda", "dnsbl", "surbl", "uribl", " rbl", "listed at", "listed on",
		"listed in", "listed by", "reputation", "complaints", "[ts0", "[tss", " bulk ", " junk"}},
	// The sender's side is wrong: not the recipient's fault.
	{"invalid-sender", []string{"*.1.7", "*.1.8"}, []string{"sender address rejected", "sender verify failed",
		"invalid sender", "bad sender", "bad outbound sender", "sender domain must", "sender domain does not",
		"sender address does not"}},
	{"policy-related", []string{"*.7.20", "*.7.21", "*.7.22", "*.7.23", "*.7.24", "*.7.25", "*.7.26", "*.7.27", "*.7.29"},
		[]string{"spf", "dkim", "dmarc", " arc ", "unauthenticated", "ptr record", "reverse dns"}},
	{"policy-related", nil, []string{"greylist", "graylist", "rate limit", "rate that prevents", "rate which prevents",
		"too many messages", "too many connections", "too many emails", "too many recipients", "unusual rate", "throttl"}},
	{"quota-issues", []string{"*.2.2", "*.3.1"}, []string{"quota", "mailbox full", "mailbox is full",
		"insufficient storage", "insufficient system storage", "exceeded storage", "exceeded its storage",
		"exceeded the storage", "mailbox size limit", "out of storage"}},
	{"inactive-mailbox", []string{"5.2.1", "*.7.13"}, []string{"disabled", "inactive", "deactivated", "suspended",
		"no longer active", "no longer in use", "no longer available", "account closed", "account has been closed",
		"account is closed", "account expired", "account has expired", "account has been expired", "account locked",
		"account is locked", "account has been locked", "account blocked", "account is blocked", "account has been blocked"}},
	{"relaying-issues", nil, []string{"relay access denied", "relaying denied", "relay denied", "relay not permitted",
		"relaying not permitted", "relay prohibited", "relaying prohibited", "not permitted to relay", "unable to relay",
		"not allowed to relay", "we do not relay"}},
	{"bad-domain", []string{"*.1.2", "5.3.2"}, []string{"domain not found", "domain name not found", "domain does not exist",
		"domain doesn't exist", "domain unknown", "domain name unknown", "host or domain name not found", "unknown domain",
		"no such domain", "no mx", "null mx", "nxdomain", "name service error", "does not accept mail"}},
	{"bad-mailbox", []string{"*.1.0", "*.1.1", "*.1.3", "*.1.4", "*.1.6"}, []string{"user unknown", "unknown user",
		"unknown recipient", "unknown local part", "unknown address", "no such user", "no such mailbox",
		"no such recipient", "no such address", "does not exist", "doesn't exist", "mailbox unavailable",
		"mailbox not found", "no mailbox", "recipient not found", "recipient unknown", "recipient rejected",
		"recipient invalid", "recipient address not found", "recipient address unknown", "recipient address rejected",
		"recipient address invalid", "invalid recipient", "invalid mailbox", "invalid address", "recipientnotfound",
		"unrouteable address", "not our customer", "user not found", "doesn't have a ", "doesn't have an "}},
	{"no-answer-from-host", []string{"*.4.1"}, []string{"connection timed out", "connection refused", "timed out",
		"timeout", "time out", "no answer", "unreachable", "no route to host"}},
	{"bad-connection", []string{"*.4.2"}, []string{"connection reset", "connection dropped", "connection lost",
		"connection closed", "lost connection", "broken pipe", " tls ", "tls:", " ssl ", "ssl:", "handshake"}},
	{"content-related", nil, []string{"message size", "message too big", "message too large", "size limit",
		"size exceeds", "content", "attachment", "line too long"}},
	{"policy-related", []string{"*.7.*"}, []string{"policy", "blocked", "denied", "not allowed", "prohibit", "refused",
		"rejected"}},
	{"content-related", []string{"*.6.*", "*.3.4", "*.2.3"}, nil},
	{"protocol-errors", []string{"*.5.*"}, []string{"syntax", "protocol", "command", "pipelining"}},
	{"routing-errors", []string{"*.4.0", "*.4.3", "*.4.4", "*.4.5", "*.4.6"}, []string{"loops back", "loop back",
		"routing loop", "unable to route", "mail loop"}},
	{"bad-configuration", []string{"*.3.5"}, []string{"misconfigur", "configuration error"}},
}

// knownCategories are PowerMTA's bounce categories plus "success".
var knownCategories = strings.Fields(`bad-configuration bad-connection bad-domain bad-mailbox
	content-related inactive-mailbox invalid-sender message-expired no-answer-from-host other
	policy-related protocol-errors quota-issues relaying-issues routing-errors spam-related
	virus-related success`)
