package bounce

import (
	"strconv"
	"strings"
)

// Outcome is what a reply means for one recipient.
type Outcome int

// The three outcomes of a delivery attempt.
const (
	Deferred  Outcome = iota // try again later; the zero value, so nothing is lost by default
	Delivered                // the receiver took responsibility
	Bounced                  // permanent failure: give up and notify
)

func (o Outcome) String() string {
	switch o {
	case Delivered:
		return "delivered"
	case Deferred:
		return "deferred"
	case Bounced:
		return "bounced"
	}
	return "Outcome(" + strconv.Itoa(int(o)) + ")"
}

// Class is the classification of one SMTP reply (or of a local failure).
type Class struct {
	Outcome Outcome
	// Status is the RFC 3463 enhanced code, X.Y.Z, whose class always
	// agrees with Outcome (2 delivered, 4 deferred, 5 bounced). It is the
	// receiver's code when it gave one, else synthesized from the basic code.
	Status string
	// Category is a PowerMTA bounce category ("bad-mailbox", "spam-related",
	// ...), "success" for deliveries, "other" when nothing matched.
	Category string
}

// Classify classifies a reply: code is the basic reply code (0 when there
// was no reply at all: connection refused, timeout, no MX, expiry decided
// locally), enhanced the RFC 3463 code if the reply carried one (or "", in
// which case one at the start of text is used), text the reply text with
// multi-line replies joined by spaces.
//
// The basic code decides first (2xx delivered, 4xx deferred, 5xx bounced)
// with the overrides commented below.
func Classify(code int, enhanced, text string) Class {
	text = strings.TrimSpace(text)
	if enhanced == "" {
		// Callers that hand over the raw reply text: "5.1.1 user unknown".
		if f, rest, _ := strings.Cut(text, " "); ValidStatus(f) {
			enhanced, text = f, strings.TrimSpace(rest)
		}
	}
	if !ValidStatus(enhanced) {
		enhanced = ""
	}

	var out Outcome
	switch {
	case code >= 200 && code < 300:
		// Accepted is accepted, whatever the enhanced code claims: the
		// receiver now holds the message, and retrying would duplicate it.
		return Class{Outcome: Delivered, Status: withClass(enhanced, code, 2), Category: "success"}
	case code >= 400 && code < 500:
		// Never escalate a 4xx to a bounce from its wording, not even
		// "450 4.1.2 Domain not found": Postfix answers that way exactly
		// when the DNS failure may be temporary. The receiver said "try
		// again", so we do; bounce-after ends it, and the category still
		// tells accounting why (bad-domain).
		out = Deferred
	case code >= 500 && code < 600:
		out = Bounced
		switch {
		case strings.HasPrefix(enhanced, "4."):
			// The receiver's specific code says temporary, and RFC 3463
			// wants the classes to agree; of the two, believing the
			// temporary one can only delay mail, never lose it.
			out = Deferred
		case containsAny(strings.ToLower(text), temporaryWords):
			// Some receivers send a 5xx with "try again later" or
			// "temporarily" (greylisting and rate limits behind badly
			// configured front ends); their own words say retry.
			out = Deferred
		case code == 552 && strings.Contains(strings.ToLower(text), "too many recipients"):
			// RFC 5321 4.5.3.1.10: a 552 for too many recipients must be
			// treated as 452, retried in a later transaction.
			out = Deferred
		}
	case code == 0 && strings.HasPrefix(enhanced, "5."):
		// No reply, but the MTA itself decided the failure is permanent
		// (no such domain, null MX, bounce-after reached): trust it.
		out = Bounced
	default:
		// No reply, or one outside 2xx-5xx (a protocol violation): nothing
		// proves the recipient bad, so retry.
		out = Deferred
		if enhanced == "" && code == 0 {
			enhanced = "4.4.1" // no answer from host
		}
	}
	cls := 5
	if out == Deferred {
		cls = 4
	}
	st := withClass(enhanced, code, cls)
	return Class{Outcome: out, Status: st, Category: DefaultCategory(st, text)}
}

// temporaryWords in a 5xx reply mean the receiver wants a retry.
var temporaryWords = []string{"try again later", "try later", "temporarily", "temporary", "please retry",
	"greylist", "graylist"}

func containsAny(s string, words []string) bool {
	for _, w := range words {
		if strings.Contains(s, w) {
			return true
		}
	}
	return false
}

// withClass returns enhanced with its class replaced by cls, or, when there
// is no enhanced code, one synthesized from the basic code.
func withClass(enhanced string, code, cls int) string {
	if enhanced == "" {
		enhanced = synthesize(code)
	}
	return strconv.Itoa(cls) + enhanced[1:]
}

// synthesize maps a basic reply code without an enhanced code to the
// closest RFC 3463 code; the class digit is fixed by the caller.
func synthesize(code int) string {
	switch code {
	case 421:
		return "4.3.2" // service not available, closing channel
	case 450:
		return "4.2.0" // mailbox unavailable (busy)
	case 451:
		return "4.3.0" // local error in processing
	case 452:
		return "4.3.1" // insufficient system storage
	case 500:
		return "5.5.2" // syntax error, command unrecognized
	case 501:
		return "5.5.4" // syntax error in parameters
	case 502, 503:
		return "5.5.1" // not implemented, bad sequence
	case 504:
		return "5.5.4" // parameter not implemented
	case 521, 556:
		return "5.3.2" // RFC 7504: host/domain does not accept mail
	case 530:
		return "5.7.0" // authentication required
	case 534:
		return "5.7.9" // mechanism too weak
	case 535:
		return "5.7.8" // credentials invalid
	case 551:
		return "5.1.6" // user not local
	case 552:
		return "5.2.2" // exceeded storage allocation
	case 553:
		return "5.1.3" // mailbox name not allowed
	}
	switch {
	case code >= 200 && code < 300:
		return "2.0.0"
	case code >= 500 && code < 600:
		return "5.0.0"
	}
	return "4.0.0"
}
