// Package maillog writes the per-recipient mail log in Postfix's line
// shapes, so pflogsumm-style reports and fail2ban filters need only their
// syslog name changed ("sluice" instead of "postfix"):
//
//	Nov 29 10:18:33 HOST sluice/smtp[PID]: QUEUEID: to=<rcpt>, relay=host[ip]:port, delay=1.2, delays=a/b/c/d, dsn=2.0.0, status=sent (250 2.0.0 Ok: queued as X)
//	Nov 29 10:18:33 HOST sluice/smtp[PID]: QUEUEID: to=<rcpt>, relay=host[ip]:port, delay=0.1, delays=a/b/c/d, dsn=2.1.5, status=deliverable (250 2.1.5 Ok)
//	Nov 29 10:18:32 HOST sluice/qmgr[PID]: QUEUEID: from=<sender>, size=N, nrcpt=N (queue active)
//	Nov 29 10:18:31 HOST sluice/smtpd[PID]: NOQUEUE: reject: RCPT from host[ip]: 554 5.7.1 <x@y>: Relay access denied; from=<> to=<x@y> proto=ESMTP helo=<h>
//
// Every value from outside (addresses, HELO names, remote replies) is
// made printable first: a CR or LF in a reply must not forge a log line.
package maillog

import (
	"fmt"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// Statuses of a delivery line.
const (
	StatusSent     = "sent"
	StatusDeferred = "deferred"
	StatusBounced  = "bounced"
	StatusExpired  = "expired"
	// A sendmail -bv probe's result, as Postfix logs it (log_adhoc with
	// the trace action): the recipient would be accepted, or not.
	StatusDeliverable   = "deliverable"
	StatusUndeliverable = "undeliverable"
)

// DeliveryLine is one recipient's delivery attempt (Postfix smtp(8)).
type DeliveryLine struct {
	Component string // "" means "smtp"
	QueueID   string
	To        string
	OrigTo    string // logged as orig_to= when it differs from To

	// Relay is host[ip]:port; an empty RelayHost and RelayIP logs
	// "relay=none" (no connection was made).
	RelayHost string
	RelayIP   string
	RelayPort int
	ConnUse   int // > 1 logs conn_use=N (the connection's Nth delivery)

	Delay time.Duration // total, since arrival
	// Delays are Postfix's a/b/c/d: before the queue manager, in the
	// queue manager, connection setup (DNS, HELO, TLS), transmission.
	Delays [4]time.Duration

	DSN    string // enhanced status, e.g. "2.0.0"
	Status string // StatusSent, ...
	Reason string // text in parentheses: the remote reply or our explanation
}

// ArrivalLine is a message entering the active queue (Postfix qmgr(8)).
type ArrivalLine struct {
	QueueID string
	From    string
	Size    int64
	NRcpt   int
}

// RejectLine is an SMTP command the server refused (Postfix smtpd(8)).
type RejectLine struct {
	QueueID    string // "" logs NOQUEUE
	Stage      string // CONNECT, HELO, EHLO, MAIL, RCPT, DATA, BDAT, END-OF-MESSAGE
	ClientHost string // "" logs "unknown"
	ClientIP   string
	Reply      string // e.g. "554 5.7.1 <x@y>: Relay access denied"
	From       string // logged as from=<...> at MAIL and later stages
	To         string // logged as to=<...> when not ""
	Proto      string // "SMTP" or "ESMTP"; "" means ESMTP
	Helo       string // logged as helo=<...> when not ""
}

// Client formats Postfix's "host[ip]"; an unknown host name is "unknown".
func Client(host, ip string) string {
	if host == "" {
		host = "unknown"
	}
	return host + "[" + ip + "]"
}

// Said formats the reason Postfix gives for a remote refusal:
// "host mx.example.com[192.0.2.1] said: 550 5.1.1 ... (in reply to RCPT TO command)".
func Said(host, ip, reply, command string) string {
	s := "host " + Client(host, ip) + " said: " + joinLines(reply)
	if command != "" {
		s += " (in reply to " + command + " command)"
	}
	return s
}

// joinLines turns a multi-line SMTP reply into one line, as Postfix does.
func joinLines(s string) string { return strings.Join(strings.Fields(s), " ") }

// FormatDelay prints a duration as Postfix does: at most two significant
// digits below 10 s, whole seconds from 10 s, resolution 10 ms (0.42,
// 0.07, 1.2, 5.5, 146, 0).
func FormatDelay(d time.Duration) string {
	if d < 0 {
		d = 0
	}
	const million = 1000000
	sec := int64(d / time.Second)
	usec := int64(d%time.Second) / int64(time.Microsecond)
	// Resolution in microseconds: 0.01 s below 1 s, 0.1 s below 10 s,
	// whole seconds above, so two significant digits at most.
	res := int64(10000)
	if sec >= 10 {
		res = million
	} else if sec >= 1 {
		res = 100000
	}
	usec += res / 2 // round half up
	if usec >= million {
		sec++
		usec -= million
	}
	var b strings.Builder
	b.WriteString(strconv.FormatInt(sec, 10))
	if usec >= res {
		b.WriteByte('.')
		for n := int64(million / 10); usec >= res && n > 0; n /= 10 {
			b.WriteByte(byte('0' + usec/n))
			usec %= n
		}
	}
	return b.String()
}

// String is the message part of the line, after "sluice/smtp[PID]: ".
func (d DeliveryLine) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s: to=<%s>", d.QueueID, d.To)
	if d.OrigTo != "" && !strings.EqualFold(d.OrigTo, d.To) {
		fmt.Fprintf(&b, ", orig_to=<%s>", d.OrigTo)
	}
	relay := "none"
	switch {
	case d.RelayIP != "":
		relay = Client(d.RelayHost, d.RelayIP)
		if d.RelayPort > 0 {
			relay += ":" + strconv.Itoa(d.RelayPort)
		}
	case d.RelayHost != "":
		relay = d.RelayHost // "local", "pipe": no network peer
	}
	b.WriteString(", relay=" + relay)
	if d.ConnUse > 1 {
		fmt.Fprintf(&b, ", conn_use=%d", d.ConnUse)
	}
	fmt.Fprintf(&b, ", delay=%s, delays=%s/%s/%s/%s", FormatDelay(d.Delay),
		FormatDelay(d.Delays[0]), FormatDelay(d.Delays[1]), FormatDelay(d.Delays[2]), FormatDelay(d.Delays[3]))
	fmt.Fprintf(&b, ", dsn=%s, status=%s (%s)", d.DSN, d.Status, joinLines(d.Reason))
	return b.String()
}

func (a ArrivalLine) String() string {
	return fmt.Sprintf("%s: from=<%s>, size=%d, nrcpt=%d (queue active)", a.QueueID, a.From, a.Size, a.NRcpt)
}

func (r RejectLine) String() string {
	id := r.QueueID
	if id == "" {
		id = "NOQUEUE"
	}
	proto := r.Proto
	if proto == "" {
		proto = "ESMTP"
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%s: reject: %s from %s: %s;", id, r.Stage, Client(r.ClientHost, r.ClientIP), joinLines(r.Reply))
	switch r.Stage {
	case "MAIL", "RCPT", "DATA", "BDAT", "END-OF-MESSAGE":
		fmt.Fprintf(&b, " from=<%s>", r.From)
	}
	if r.To != "" {
		fmt.Fprintf(&b, " to=<%s>", r.To)
	}
	b.WriteString(" proto=" + proto)
	if r.Helo != "" {
		fmt.Fprintf(&b, " helo=<%s>", r.Helo)
	}
	return b.String()
}

// printable replaces control characters and invalid UTF-8 with '?', as
// Postfix's printable() does, so no value can start a new log line.
func printable(s string) string {
	bad := func(r rune) bool { return r < 0x20 || r == 0x7f || r == utf8.RuneError }
	clean := true
	for _, r := range s {
		if bad(r) {
			clean = false
			break
		}
	}
	if clean {
		return s
	}
	return strings.Map(func(r rune) rune {
		if bad(r) {
			return '?'
		}
		return r
	}, s)
}
