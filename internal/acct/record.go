// Package acct writes accounting files in PowerMTA's CSV record format, so
// tools that already parse /var/log/pmta/acct-*.csv keep working.
//
// Record types: d delivered, b bounced, t transient (one failed attempt),
// tq transient-queue (a whole queue's attempt failed), r received, f
// feedback loop report, rb remote bounce, rs remote status.
//
// A file holds one family of records and starts with ONE header line
// naming its fields, so a CSV reader can go by name, not position:
//
// Delivery family (d, b, t, tq, r), DeliveryFields:
//
//	type, timeLogged, timeQueued, timeImprinted, timeFirstAttempt,
//	totalSecondsQueued, orig, rcpt, orcpt, dsnAction, dsnStatus, dsnDiag,
//	dsnMta, bounceCat, srcType, srcMta, rcvSmtpUser, dlvType, dlvSourceIp,
//	dlvDestinationIp, dlvEsmtpAvailable, dlvSize, vmta, vmtaPool, queue,
//	jobId, envId, queueId, dlvTlsProtocol, dlvTlsCipher
//
// The first 27 are PowerMTA's, in PowerMTA's order; the last three are
// sluice's own: queueId (the stable queue id also shown by logs and mailq),
// dlvTlsProtocol ("TLSv1.3") and dlvTlsCipher. r records leave the
// delivery fields empty.
//
// Report family (f, rb, rs), ReportFields:
//
//	type, timeLogged, orig, rcpt, orcpt, dsnAction, dsnStatus, dsnDiag,
//	dsnMta, bounceCat, feedbackType, format, userAgent, reportingMta,
//	reportedDomain, repSourceIp, rcvSourceIp, dsnReportingMta, vmta, jobId,
//	envId, queueId
//
// Value shapes: times "2016-08-01 14:06:01-0400"; dsnStatus
// "5.1.1 (bad destination mailbox address)" (RFC 3463 text, "2.0.0
// (success)" for d); dsnMta and srcMta "host (ip)"; dsnDiag as given, e.g.
// "smtp;550 5.1.1 no such user"; lists joined with ",". CR, LF and other
// control characters in values become spaces, so a record is always one
// line even for line-based tools.
package acct

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/sluicemta/sluice/internal/bounce"
)

// Record types.
const (
	TypeDelivered      = "d"
	TypeBounced        = "b"
	TypeTransient      = "t"
	TypeTransientQueue = "tq"
	TypeReceived       = "r"
	TypeFeedback       = "f"
	TypeRemoteBounce   = "rb"
	TypeRemoteStatus   = "rs"
)

// DSN actions (RFC 3464 §2.3.3) as PowerMTA writes them.
const (
	ActionRelayed   = "relayed"
	ActionDelivered = "delivered"
	ActionFailed    = "failed"
	ActionDelayed   = "delayed"
	ActionExpanded  = "expanded"
)

// TimeLayout is PowerMTA's timestamp shape.
const TimeLayout = "2006-01-02 15:04:05-0700"

// Host is an MTA named by host name and IP, written "host (ip)".
type Host struct {
	Name string
	IP   netip.Addr
}

func (h Host) String() string {
	switch {
	case h.Name != "" && h.IP.IsValid():
		return h.Name + " (" + h.IP.String() + ")"
	case h.IP.IsValid():
		return h.IP.String()
	}
	return h.Name
}

// Record is one accounting record. Zero values are written as empty fields.
type Record struct {
	Type string // one of the Type constants

	TimeLogged       time.Time // zero means the time of Write
	TimeQueued       time.Time
	TimeImprinted    time.Time // when the message was first received (PowerMTA: imprinted by the first PowerMTA)
	TimeFirstAttempt time.Time
	// totalSecondsQueued is computed: TimeLogged - TimeQueued.

	Orig  string // MAIL FROM address, "" for the null sender
	Rcpt  string
	Orcpt string // ORCPT as given, e.g. "rfc822;user@example.com"

	DsnAction string // Action constants
	DsnStatus string // enhanced status code, e.g. "5.1.1"; the text is added
	DsnDiag   string // e.g. "smtp;550 5.1.1 no such user" (see SMTPDiag)
	DsnMta    Host   // the remote MTA that answered
	BounceCat string // bounce category, "success" for d records

	SrcType     string // "smtp", "api" (sendmail and pickup are "api", as in PowerMTA)
	SrcMta      Host   // client's HELO name and IP
	RcvSmtpUser string // SMTP AUTH user the message came in with

	DlvType           string // "smtp" (or "local", "pipe")
	DlvSourceIP       netip.Addr
	DlvDestinationIP  netip.Addr
	DlvEsmtpAvailable []string // extensions the remote MTA offered
	DlvSize           int64    // bytes sent; 0 writes an empty field
	Vmta              string
	VmtaPool          string
	Queue             string // "domain/vmta"
	JobID             string
	EnvID             string

	QueueID        string // sluice's stable queue id
	DlvTLSProtocol string // e.g. "TLSv1.3", "" when in clear
	DlvTLSCipher   string // e.g. "TLS_AES_128_GCM_SHA256"

	// Report family (f, rb, rs).
	FeedbackType    string // ARF Feedback-Type, e.g. "abuse"
	Format          string // "arf", "xarf", "dsn", ...
	UserAgent       string
	ReportingMta    string
	ReportedDomain  string
	RepSourceIP     netip.Addr // Source-IP named in the report
	RcvSourceIP     netip.Addr // IP the report was received from
	DsnReportingMta string

	// Headers holds values for header_NAME fields (see Options.Fields);
	// keys are header names in any case.
	Headers map[string]string
}

// SMTPDiag formats an SMTP reply as a dsnDiag value: "smtp;550 5.1.1 ...".
// Multi-line replies are joined with spaces.
func SMTPDiag(reply string) string {
	return "smtp;" + strings.Join(strings.Fields(reply), " ")
}

// DeliveryFields is the field list of d, b, t, tq and r files.
var DeliveryFields = []string{
	"type", "timeLogged", "timeQueued", "timeImprinted", "timeFirstAttempt",
	"totalSecondsQueued", "orig", "rcpt", "orcpt", "dsnAction", "dsnStatus", "dsnDiag",
	"dsnMta", "bounceCat", "srcType", "srcMta", "rcvSmtpUser", "dlvType", "dlvSourceIp",
	"dlvDestinationIp", "dlvEsmtpAvailable", "dlvSize", "vmta", "vmtaPool", "queue",
	"jobId", "envId", "queueId", "dlvTlsProtocol", "dlvTlsCipher",
}

// ReportFields is the field list of f, rb and rs files.
var ReportFields = []string{
	"type", "timeLogged", "orig", "rcpt", "orcpt", "dsnAction", "dsnStatus", "dsnDiag",
	"dsnMta", "bounceCat", "feedbackType", "format", "userAgent", "reportingMta",
	"reportedDomain", "repSourceIp", "rcvSourceIp", "dsnReportingMta", "vmta", "jobId",
	"envId", "queueId",
}

// family maps a record type to its field list; unknown types are absent.
var family = map[string][]string{
	TypeDelivered: DeliveryFields, TypeBounced: DeliveryFields, TypeTransient: DeliveryFields,
	TypeTransientQueue: DeliveryFields, TypeReceived: DeliveryFields,
	TypeFeedback: ReportFields, TypeRemoteBounce: ReportFields, TypeRemoteStatus: ReportFields,
}

// familyName tells the two families apart, for error messages and checks.
var familyName = map[string]string{
	TypeDelivered: "delivery", TypeBounced: "delivery", TypeTransient: "delivery",
	TypeTransientQueue: "delivery", TypeReceived: "delivery",
	TypeFeedback: "report", TypeRemoteBounce: "report", TypeRemoteStatus: "report",
}

// ValidType reports whether t is a record type.
func ValidType(t string) bool { _, ok := family[t]; return ok }

type fmtCtx struct {
	loc *time.Location
	now time.Time
}

func (c *fmtCtx) time(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.In(c.loc).Format(TimeLayout)
}

func addr(a netip.Addr) string {
	if !a.IsValid() {
		return ""
	}
	return a.String()
}

func (c *fmtCtx) logged(r *Record) time.Time {
	if r.TimeLogged.IsZero() {
		return c.now
	}
	return r.TimeLogged
}

// dsnStatus adds the RFC 3463 text: "5.1.1 (bad destination mailbox address)".
func dsnStatus(s string) string {
	if s == "" {
		return ""
	}
	if txt := bounce.StatusText(s); txt != "" {
		return s + " (" + txt + ")"
	}
	return s
}

// getters renders each named field of a record.
var getters = map[string]func(*Record, *fmtCtx) string{
	"type":             func(r *Record, c *fmtCtx) string { return r.Type },
	"timeLogged":       func(r *Record, c *fmtCtx) string { return c.time(c.logged(r)) },
	"timeQueued":       func(r *Record, c *fmtCtx) string { return c.time(r.TimeQueued) },
	"timeImprinted":    func(r *Record, c *fmtCtx) string { return c.time(r.TimeImprinted) },
	"timeFirstAttempt": func(r *Record, c *fmtCtx) string { return c.time(r.TimeFirstAttempt) },
	"totalSecondsQueued": func(r *Record, c *fmtCtx) string {
		if r.TimeQueued.IsZero() {
			return ""
		}
		d := c.logged(r).Sub(r.TimeQueued)
		if d < 0 {
			d = 0
		}
		return strconv.FormatInt(int64(d/time.Second), 10)
	},
	"orig":              func(r *Record, c *fmtCtx) string { return r.Orig },
	"rcpt":              func(r *Record, c *fmtCtx) string { return r.Rcpt },
	"orcpt":             func(r *Record, c *fmtCtx) string { return r.Orcpt },
	"dsnAction":         func(r *Record, c *fmtCtx) string { return r.DsnAction },
	"dsnStatus":         func(r *Record, c *fmtCtx) string { return dsnStatus(r.DsnStatus) },
	"dsnDiag":           func(r *Record, c *fmtCtx) string { return r.DsnDiag },
	"dsnMta":            func(r *Record, c *fmtCtx) string { return r.DsnMta.String() },
	"bounceCat":         func(r *Record, c *fmtCtx) string { return r.BounceCat },
	"srcType":           func(r *Record, c *fmtCtx) string { return r.SrcType },
	"srcMta":            func(r *Record, c *fmtCtx) string { return r.SrcMta.String() },
	"rcvSmtpUser":       func(r *Record, c *fmtCtx) string { return r.RcvSmtpUser },
	"dlvType":           func(r *Record, c *fmtCtx) string { return r.DlvType },
	"dlvSourceIp":       func(r *Record, c *fmtCtx) string { return addr(r.DlvSourceIP) },
	"dlvDestinationIp":  func(r *Record, c *fmtCtx) string { return addr(r.DlvDestinationIP) },
	"dlvEsmtpAvailable": func(r *Record, c *fmtCtx) string { return strings.Join(r.DlvEsmtpAvailable, ",") },
	"dlvSize": func(r *Record, c *fmtCtx) string {
		if r.DlvSize <= 0 {
			return ""
		}
		return strconv.FormatInt(r.DlvSize, 10)
	},
	"vmta":            func(r *Record, c *fmtCtx) string { return r.Vmta },
	"vmtaPool":        func(r *Record, c *fmtCtx) string { return r.VmtaPool },
	"queue":           func(r *Record, c *fmtCtx) string { return r.Queue },
	"jobId":           func(r *Record, c *fmtCtx) string { return r.JobID },
	"envId":           func(r *Record, c *fmtCtx) string { return r.EnvID },
	"queueId":         func(r *Record, c *fmtCtx) string { return r.QueueID },
	"dlvTlsProtocol":  func(r *Record, c *fmtCtx) string { return r.DlvTLSProtocol },
	"dlvTlsCipher":    func(r *Record, c *fmtCtx) string { return r.DlvTLSCipher },
	"feedbackType":    func(r *Record, c *fmtCtx) string { return r.FeedbackType },
	"format":          func(r *Record, c *fmtCtx) string { return r.Format },
	"userAgent":       func(r *Record, c *fmtCtx) string { return r.UserAgent },
	"reportingMta":    func(r *Record, c *fmtCtx) string { return r.ReportingMta },
	"reportedDomain":  func(r *Record, c *fmtCtx) string { return r.ReportedDomain },
	"repSourceIp":     func(r *Record, c *fmtCtx) string { return addr(r.RepSourceIP) },
	"rcvSourceIp":     func(r *Record, c *fmtCtx) string { return addr(r.RcvSourceIP) },
	"dsnReportingMta": func(r *Record, c *fmtCtx) string { return r.DsnReportingMta },
}

// headerField renders header_NAME from Record.Headers.
func headerField(name string) func(*Record, *fmtCtx) string {
	return func(r *Record, c *fmtCtx) string {
		for k, v := range r.Headers {
			if strings.EqualFold(k, name) {
				return v
			}
		}
		return ""
	}
}

// clean keeps a record on one line whatever the value holds.
func clean(s string) string {
	if !strings.ContainsFunc(s, isCtl) {
		return s
	}
	return strings.Map(func(r rune) rune {
		if isCtl(r) {
			return ' '
		}
		return r
	}, s)
}

func isCtl(r rune) bool { return r < 0x20 || r == 0x7f }

// FieldList resolves a record-fields spec against a default list:
// "*" is every default field, "!name" removes one, "name" adds one
// (a known field or header_NAME). "type" always comes first. Removals win
// wherever they stand, so specs from several record-fields lines can be
// joined with "," without one's "*" undoing another's "!name".
func FieldList(defaults []string, spec string) ([]string, error) {
	out, err := fieldList(defaults, spec)
	if err != nil {
		return nil, fmt.Errorf("acct: %w", err)
	}
	return out, nil
}

func fieldList(defaults []string, spec string) ([]string, error) {
	var out []string
	has := map[string]bool{}
	drop := map[string]bool{}
	add := func(f string) {
		if !has[f] {
			has[f] = true
			out = append(out, f)
		}
	}
	add("type")
	for _, item := range strings.Split(spec, ",") {
		item = strings.TrimSpace(item)
		switch {
		case item == "":
		case item == "*":
			for _, f := range defaults {
				add(f)
			}
		case strings.HasPrefix(item, "!"):
			name := item[1:]
			if name == "type" {
				return nil, fmt.Errorf("field type cannot be removed")
			}
			if !knownField(name) {
				return nil, fmt.Errorf("unknown field %q", name)
			}
			drop[name] = true
		default:
			if !knownField(item) {
				return nil, fmt.Errorf("unknown field %q", item)
			}
			add(item)
		}
	}
	kept := out[:0]
	for _, f := range out {
		if !drop[f] {
			kept = append(kept, f)
		}
	}
	return kept, nil
}

func knownField(name string) bool {
	if _, ok := getters[name]; ok {
		return true
	}
	h, ok := strings.CutPrefix(name, "header_")
	return ok && h != "" && !strings.ContainsFunc(h, func(r rune) bool { return r <= ' ' || r == ':' || r > '~' })
}

func getter(name string) func(*Record, *fmtCtx) string {
	if g, ok := getters[name]; ok {
		return g
	}
	return headerField(strings.TrimPrefix(name, "header_"))
}
