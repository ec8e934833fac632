package bounce

import (
	"regexp"
	"slices"
	"strings"
	"testing"
)

// Real replies as receivers send them (multi-line replies joined by
// spaces, the way the delivery client hands them over).
func TestClassify(t *testing.T) {
	tests := []struct {
		name     string
		code     int
		enhanced string
		text     string
		outcome  Outcome
		status   string
		category string
	}{
		// Gmail
		{"gmail no such user", 550, "5.1.1", "The email account that you tried to reach does not exist. Please try double-checking the recipient's email address for typos or unnecessary spaces. Learn more at https://support.google.com/mail/?p=NoSuchUser a1si2345678qkb.12 - gsmtp", Bounced, "5.1.1", "bad-mailbox"},
		{"gmail disabled", 550, "5.2.1", "The email account that you tried to reach is disabled. Learn more at https://support.google.com/mail/?p=DisabledUser a1si2345678qkb.12 - gsmtp", Bounced, "5.2.1", "inactive-mailbox"},
		{"gmail over quota", 452, "4.2.2", "The email account that you tried to reach is over quota. Please direct the recipient to https://support.google.com/mail/?p=OverQuotaTemp a1si2345678qkb.12 - gsmtp", Deferred, "4.2.2", "quota-issues"},
		{"gmail rate limited spam", 421, "4.7.0", "[192.0.2.1      15] Our system has detected an unusual rate of unsolicited mail originating from your IP address. To protect our users from spam, mail sent from your IP address has been temporarily rate limited. - gsmtp", Deferred, "4.7.0", "spam-related"},
		{"gmail likely spam", 550, "5.7.1", "[192.0.2.1      12] Our system has detected that this message is likely unsolicited mail. To reduce the amount of spam sent to Gmail, this message has been blocked. - gsmtp", Bounced, "5.7.1", "spam-related"},
		{"gmail unauthenticated", 550, "5.7.26", "This mail has been blocked because the sender is unauthenticated. Gmail requires all senders to authenticate with either SPF or DKIM. - gsmtp", Bounced, "5.7.26", "policy-related"},
		{"gmail no ptr", 550, "5.7.25", "[192.0.2.1] The IP address sending this message does not have a PTR record setup, or the corresponding forward DNS entry does not point to the sending IP. - gsmtp", Bounced, "5.7.25", "policy-related"},
		{"gmail user rate", 450, "4.2.1", "The user you are trying to contact is receiving mail at a rate that prevents additional messages from being delivered. Please resend your message at a later time. - gsmtp", Deferred, "4.2.1", "policy-related"},
		{"gmail too big", 552, "5.2.3", "Your message exceeded Google's message size limits. Please visit https://support.google.com/mail/?p=MaxSizeError to view our size guidelines. - gsmtp", Bounced, "5.2.3", "content-related"},
		{"gmail accepted", 250, "2.0.0", "OK  1764410400 a1si2345678qkb.12 - gsmtp", Delivered, "2.0.0", "success"},
		// Microsoft
		{"outlook.com mailbox unavailable", 550, "5.5.0", "Requested action not taken: mailbox unavailable (S2017062302). [HE1EUR01FT020.eop-EUR01.prod.protection.outlook.com 2023-09-19T15:05:34.324Z 08DBB71928CA8F8E]", Bounced, "5.5.0", "bad-mailbox"},
		{"o365 recipient not found", 550, "5.1.10", "RESOLVER.ADR.RecipientNotFound; Recipient nobody@example.com not found by SMTP address lookup", Bounced, "5.1.10", "bad-mailbox"},
		{"o365 access denied", 550, "5.4.1", "Recipient address rejected: Access denied. [CY4PEPF0000EE3C.namprd03.prod.outlook.com 2023-09-18T12:48:32.808Z 08DBB45899852BA7]", Bounced, "5.4.1", "bad-mailbox"},
		{"outlook block list", 550, "5.7.1", "Unfortunately, messages from [192.0.2.1] weren't sent. Please contact your Internet service provider since part of their network is on our block list (S3150). You can also refer your provider to http://mail.live.com/mail/troubleshooting.aspx#errors.", Bounced, "5.7.1", "spam-related"},
		{"outlook server busy", 451, "4.7.500", "Server busy. Please try again later from [192.0.2.1]. (S77719) [Name=Protocol Filter Agent] [AGT=PFA]", Deferred, "4.7.500", "policy-related"},
		{"outlook ip not accepted", 550, "5.7.708", "Service unavailable. Access denied, traffic not accepted from this IP.", Bounced, "5.7.708", "policy-related"},
		{"o365 bad sender", 550, "5.1.8", "Access denied, bad outbound sender.", Bounced, "5.1.8", "invalid-sender"},
		{"exchange quota", 554, "5.2.2", "mailbox full; STOREDRV.Deliver.Exception:QuotaExceededException.MapiExceptionShutoffQuotaExceeded", Bounced, "5.2.2", "quota-issues"},
		// Yahoo
		{"yahoo TSS04", 421, "4.7.0", "[TSS04] Messages from 192.0.2.1 temporarily deferred due to unexpected volume or user complaints - 4.16.55.1; see https://postmaster.yahooinc.com/error-codes", Deferred, "4.7.0", "spam-related"},
		{"yahoo no account", 554, "", "delivery error: dd This user doesn't have a yahoo.com account (nobody@yahoo.com) [0] - mta1234.mail.bf1.yahoo.com", Bounced, "5.0.0", "bad-mailbox"},
		{"yahoo disabled", 554, "", "delivery error: dd Sorry your message to nobody@yahoo.com cannot be delivered. This mailbox is disabled (554.30). - mta1234.mail.bf1.yahoo.com", Bounced, "5.0.0", "inactive-mailbox"},
		{"yahoo permanently deferred", 553, "5.7.2", "[TSS09] All messages from 192.0.2.1 will be permanently deferred; Retrying will NOT succeed. See https://postmaster.yahooinc.com/error-codes", Bounced, "5.7.2", "spam-related"},
		{"yahoo policy", 554, "5.7.9", "Message not accepted for policy reasons.  See https://postmaster.yahooinc.com/error-codes", Bounced, "5.7.9", "policy-related"},
		{"yahoo deferred no enhanced", 451, "", "Message temporarily deferred - [160]", Deferred, "4.3.0", "other"},
		// Postfix
		{"postfix user unknown", 550, "5.1.1", "<bob@example.net>: Recipient address rejected: User unknown in virtual mailbox table", Bounced, "5.1.1", "bad-mailbox"},
		{"postfix relay denied", 554, "5.7.1", "<bob@example.org>: Relay access denied", Bounced, "5.7.1", "relaying-issues"},
		{"postfix domain not found is 4xx: stays deferred", 450, "4.1.2", "<bob@nonexistent.example>: Recipient address rejected: Domain not found", Deferred, "4.1.2", "bad-domain"},
		{"postgrey", 450, "4.7.1", "<bob@example.net>: Recipient address rejected: Greylisted, see http://postgrey.schweikert.ch/help/example.net.html", Deferred, "4.7.1", "policy-related"},
		{"postfix spamhaus", 554, "5.7.1", "Service unavailable; Client host [192.0.2.1] blocked using zen.spamhaus.org; https://www.spamhaus.org/query/ip/192.0.2.1", Bounced, "5.7.1", "spam-related"},
		{"postfix size", 552, "5.3.4", "Message size exceeds fixed limit", Bounced, "5.3.4", "content-related"},
		{"postfix sender domain", 450, "4.1.8", "<alice@nodomain.example>: Sender address rejected: Domain not found", Deferred, "4.1.8", "invalid-sender"},
		{"postfix queued", 250, "2.0.0", "Ok: queued as 4B3F1C2D3E", Delivered, "2.0.0", "success"},
		{"postfix too many recipients 452", 452, "4.5.3", "Error: too many recipients", Deferred, "4.5.3", "policy-related"},
		{"421 shutting down", 421, "4.3.2", "Service currently unavailable", Deferred, "4.3.2", "other"},
		// Exim
		{"exim unrouteable", 550, "", "Unrouteable address", Bounced, "5.0.0", "bad-mailbox"},
		{"exim no such user", 550, "", "No such user here", Bounced, "5.0.0", "bad-mailbox"},
		{"exim temporary", 451, "", "Temporary local problem - please try later", Deferred, "4.3.0", "other"},
		{"exim sender verify", 550, "", "Verification failed for <alice@example.com> Unrouteable address Sender verify failed", Bounced, "5.0.0", "invalid-sender"},
		{"exim acl", 550, "", "Administrative prohibition", Bounced, "5.0.0", "policy-related"},
		{"exim content", 550, "5.7.1", "Message rejected due to content restrictions", Bounced, "5.7.1", "content-related"},
		// No SMTP reply: local decisions of the delivery client.
		{"connection refused", 0, "", "connect to mx.example.net[192.0.2.1]:25: Connection refused", Deferred, "4.4.1", "no-answer-from-host"},
		{"no reply at all", 0, "", "", Deferred, "4.4.1", "no-answer-from-host"},
		{"lost connection", 0, "4.4.2", "lost connection with mx.example.net[192.0.2.1] while sending end of data", Deferred, "4.4.2", "bad-connection"},
		{"host not found", 0, "5.4.4", "Host or domain name not found. Name service error for name=nonexistent.example type=MX: Host not found", Bounced, "5.4.4", "bad-domain"},
		{"null MX", 0, "5.1.10", "Recipient address has null MX", Bounced, "5.1.10", "bad-domain"},
		{"expired", 0, "5.4.7", "delivery time expired", Bounced, "5.4.7", "message-expired"},
		{"routing loop", 0, "5.4.6", "mail for example.net loops back to myself", Bounced, "5.4.6", "routing-errors"},
		// Overrides.
		{"5xx with 4.x.x stays deferred", 550, "4.2.0", "Mailbox busy", Deferred, "4.2.0", "other"},
		{"5xx saying try again later", 554, "5.7.1", "Too many concurrent connections, try again later", Deferred, "4.7.1", "policy-related"},
		{"5xx saying temporarily", 550, "", "Requested action aborted: temporarily unavailable", Deferred, "4.0.0", "other"},
		{"552 too many recipients is 452", 552, "5.5.3", "Error: too many recipients", Deferred, "4.5.3", "policy-related"},
		{"4xx with 5.x.x stays deferred", 451, "5.7.1", "Policy rejection", Deferred, "4.7.1", "policy-related"},
		{"2xx with 5.x.x is delivered", 250, "5.0.0", "queued", Delivered, "2.0.0", "success"},
		{"code outside range", 999, "", "what", Deferred, "4.0.0", "other"},
		{"enhanced code in text", 550, "", "5.1.1 <bob@example.net>... User unknown", Bounced, "5.1.1", "bad-mailbox"},
		{"malformed enhanced ignored", 553, "5.1", "sorry, that domain isn't in my list of allowed rcpthosts", Bounced, "5.1.3", "bad-mailbox"},
		{"virus", 554, "5.7.1", "Message rejected: infected by Eicar-Test-Signature", Bounced, "5.7.1", "virus-related"},
		{"auth required", 530, "", "Authentication required", Bounced, "5.7.0", "policy-related"},
		{"starttls required is policy", 530, "5.7.0", "Must issue a STARTTLS command first", Bounced, "5.7.0", "policy-related"},
		{"tls failure", 0, "4.7.5", "TLS handshake failed: remote error: tls: bad certificate", Deferred, "4.7.5", "bad-connection"},
		{"syntax", 501, "", "Syntax error in parameters or arguments", Bounced, "5.5.4", "protocol-errors"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := Classify(tt.code, tt.enhanced, tt.text)
			want := Class{tt.outcome, tt.status, tt.category}
			if got != want {
				t.Errorf("Classify(%d, %q, %q)\n got %+v\nwant %+v", tt.code, tt.enhanced, tt.text, got, want)
			}
			if got.Outcome != Delivered {
				if viaRe := Categorize(DefaultPatterns(), got.Status, tt.text); viaRe != got.Category {
					t.Errorf("DefaultPatterns say %q, DefaultCategory %q", viaRe, got.Category)
				}
			}
			if !slices.Contains(knownCategories, got.Category) {
				t.Errorf("category %q is not a PowerMTA category", got.Category)
			}
		})
	}
}

func TestClassifyStatusAgreesWithOutcome(t *testing.T) {
	for code := 0; code < 1000; code++ {
		for _, enh := range []string{"", "2.0.0", "4.4.1", "5.1.1", "junk"} {
			c := Classify(code, enh, "x")
			want := map[Outcome]byte{Delivered: '2', Deferred: '4', Bounced: '5'}[c.Outcome]
			if !ValidStatus(c.Status) || c.Status[0] != want {
				t.Fatalf("Classify(%d, %q) = %+v: status disagrees with outcome", code, enh, c)
			}
		}
	}
}

func TestStatusText(t *testing.T) {
	tests := map[string]string{
		"5.1.1":    "bad destination mailbox address",
		"4.1.1":    "bad destination mailbox address",
		"2.0.0":    "success",
		"2.1.5":    "success",
		"5.7.26":   "multiple authentication checks failed",
		"4.4.7":    "delivery time expired",
		"5.1.10":   "recipient address has null MX",
		"5.7.999":  "other or undefined security status",
		"4.9.9":    "other undefined status",
		"5.1":      "",
		"3.0.0":    "",
		"5.1.1 ":   "",
		"5.+1.1":   "",
		"5.1234.1": "",
		"":         "",
	}
	for in, want := range tests {
		if got := StatusText(in); got != want {
			t.Errorf("StatusText(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestCategorizeCustomPatterns(t *testing.T) {
	ps := append([]Pattern{{regexp.MustCompile(`(?i)mailbox unavailable`), "inactive-mailbox"}}, DefaultPatterns()...)
	if got := Categorize(ps, "5.5.0", "Requested action not taken: mailbox unavailable"); got != "inactive-mailbox" {
		t.Errorf("custom pattern first: got %q", got)
	}
	if got := Categorize(nil, "5.1.1", "user unknown"); got != "other" {
		t.Errorf("no patterns: got %q, want other", got)
	}
	if got := Categorize(ps, "5.1.1", "user unknown"); got != "bad-mailbox" {
		t.Errorf("defaults after custom: got %q", got)
	}
}

func TestOutcomeString(t *testing.T) {
	for o, s := range map[Outcome]string{Delivered: "delivered", Deferred: "deferred", Bounced: "bounced", 7: "Outcome(7)"} {
		if o.String() != s {
			t.Errorf("%d.String() = %q, want %q", int(o), o.String(), s)
		}
	}
}

func TestShouldNotify(t *testing.T) {
	tests := []struct {
		sender string
		notify string // "" = not given
		action string
		want   bool
	}{
		{"alice@example.com", "", "failed", true},
		{"alice@example.com", "", "delayed", true},
		{"alice@example.com", "", "delivered", false},
		{"alice@example.com", "", "relayed", false},
		{"", "", "failed", false},
		{"<>", "FAILURE", "failed", false},
		{"alice@example.com", "NEVER", "failed", false},
		{"alice@example.com", "SUCCESS", "delivered", true},
		{"alice@example.com", "SUCCESS", "failed", false},
		{"alice@example.com", "SUCCESS", "expanded", true},
		{"alice@example.com", "failure,delay", "delayed", true},
		{"alice@example.com", "FAILURE", "delayed", false},
		{"alice@example.com", "DELAY", "failed", false},
		{"alice@example.com", "SUCCESS,FAILURE,DELAY", "bogus", false},
	}
	for _, tt := range tests {
		var f NotifyFlags
		if tt.notify != "" {
			var err error
			if f, err = ParseNotify(tt.notify); err != nil {
				t.Fatal(err)
			}
		}
		if got := ShouldNotify(tt.sender, f, tt.action); got != tt.want {
			t.Errorf("ShouldNotify(%q, %q, %q) = %v, want %v", tt.sender, tt.notify, tt.action, got, tt.want)
		}
	}
}

func TestParseNotify(t *testing.T) {
	good := map[string]NotifyFlags{
		"NEVER":                 NotifyNever,
		"success":               NotifySuccess,
		"FAILURE,DELAY":         NotifyFailure | NotifyDelay,
		"SUCCESS,FAILURE,DELAY": NotifySuccess | NotifyFailure | NotifyDelay,
	}
	for in, want := range good {
		got, err := ParseNotify(in)
		if err != nil || got != want {
			t.Errorf("ParseNotify(%q) = %v, %v; want %v", in, got, err, want)
		}
		if back, _ := ParseNotify(got.String()); back != got {
			t.Errorf("String() of %q does not parse back: %q", in, got.String())
		}
	}
	for _, in := range []string{"", "NEVER,SUCCESS", "SOMETIMES", "FAILURE,"} {
		if _, err := ParseNotify(in); err == nil {
			t.Errorf("ParseNotify(%q) accepted", in)
		}
	}
}

// Classify runs once per recipient per attempt; its cost is the category
// regexps. go test -run '^$' -bench Classify -benchtime 1s ./internal/bounce
func BenchmarkClassify(b *testing.B) {
	for b.Loop() {
		Classify(550, "5.1.1", "The email account that you tried to reach does not exist. Please try double-checking the recipient's email address for typos or unnecessary spaces. - gsmtp")
		Classify(421, "4.7.0", "[TSS04] Messages from 192.0.2.1 temporarily deferred due to unexpected volume or user complaints - 4.16.55.1")
		Classify(250, "2.0.0", "OK 1764410400 a1si2345678qkb.12 - gsmtp")
		Classify(451, "", "Temporary local problem - please try later")
	}
}

// FuzzClassify: remote replies are outside input. Whatever they say, the
// status is valid and agrees with the outcome, the category is a known one,
// and the regexp form of the rules agrees with the fast one on ASCII.
func FuzzClassify(f *testing.F) {
	f.Add(550, "5.1.1", "user unknown")
	f.Add(0, "", "5.4.7 expired")
	f.Add(452, "4.2.2", "over quota")
	f.Add(554, "", "try again later")
	f.Add(250, "junk", "")
	f.Fuzz(func(t *testing.T, code int, enhanced, text string) {
		c := Classify(code, enhanced, text)
		want := map[Outcome]byte{Delivered: '2', Deferred: '4', Bounced: '5'}[c.Outcome]
		if !ValidStatus(c.Status) || c.Status[0] != want {
			t.Fatalf("Classify(%d, %q, %q) = %+v", code, enhanced, text, c)
		}
		if !slices.Contains(knownCategories, c.Category) {
			t.Fatalf("unknown category %q", c.Category)
		}
		if StatusText(c.Status) == "" {
			t.Fatalf("no text for %q", c.Status)
		}
		if isASCII([]byte(text)) && isASCII([]byte(enhanced)) && c.Outcome != Delivered {
			_, rest, _ := strings.Cut(strings.TrimSpace(text), " ")
			if enhanced == "" && ValidStatus(strings.Fields(text + " x")[0]) {
				text = rest // Classify took the code off the text
			}
			if re := Categorize(DefaultPatterns(), c.Status, strings.TrimSpace(text)); re != c.Category {
				t.Fatalf("regexp rules say %q, fast rules %q for %q", re, c.Category, text)
			}
		}
	})
}
