package vmta

import (
	"context"
	"io"
	"net"
	"net/netip"
	"strconv"
	"time"

	"github.com/sluicemta/sluice/internal/resolve"
)

// HostPort is one configured next hop (`route`, `smtp-hosts`).
type HostPort struct {
	Host      string // name or IP literal, brackets removed
	Port      int    // 0: Destination.Port
	Bracketed bool   // [host]: use its addresses, no MX lookup
}

// Destination says where and how to deliver one queue's mail.
type Destination struct {
	Domain    string     // recipient domain (A-label)
	Hosts     []HostPort // from route/smtp-hosts; empty = MX lookup of Domain
	Bracketed bool       // every host in Hosts is [bracketed]
	Port      int        // default-smtp-port (0: 25)
	// SourceIP4 and SourceIP6 are the addresses to dial from, chosen by the
	// family of the address dialled; a family without one is not dialled
	// when the other has one. SourceIP is the older single source: it
	// serves whichever family it belongs to when that family's own field
	// is unset. All zero: any source, both families.
	SourceIP, SourceIP4, SourceIP6 netip.Addr
	HeloName                       string // EHLO/HELO argument (empty: "localhost")

	// AuthUsername and AuthPassword log in to the next hop (a smarthost,
	// PowerMTA auth-username/auth-password) with AUTH PLAIN, or LOGIN when
	// PLAIN is not offered. Credentials are only ever sent over TLS: on
	// port 465 the connection starts with TLS (implicit TLS, RFC 8314),
	// elsewhere STARTTLS is required and its failure defers.
	AuthUsername, AuthPassword string
	// ImplicitTLS starts TLS on connect (port 465 sets it too).
	ImplicitTLS bool
	// QualifyDomain is appended to envelope addresses without a domain
	// ("root" becomes "root@QualifyDomain"); the queue manager sets it to
	// host-name. Only the envelope: header addresses are the accepting
	// side's business. "" leaves bare addresses alone.
	QualifyDomain string

	// UseStartTLS enables opportunistic STARTTLS (the config default is yes;
	// the zero value here is off). RequireStartTLS defers unless STARTTLS
	// succeeds with a certificate valid for the MX host name.
	UseStartTLS, RequireStartTLS bool
	// BounceOn5xxGreeting: a 5xx greeting fails the recipients with that
	// reply (PowerMTA bounce-upon-5xx-greeting); otherwise the next host is
	// tried and the recipients are deferred.
	BounceOn5xxGreeting bool
	// IgnorePipelining / IgnoreDSN: act as if the server had not offered
	// the extension (PowerMTA ignore-pipelining, ignore-dsn).
	IgnorePipelining, IgnoreDSN bool
	// Ignore8BitMIME: act as if 8BITMIME were not offered, so 8-bit
	// content is converted to quoted-printable (PowerMTA ignore-8bitmime).
	Ignore8BitMIME bool
	// InvalidMailbox553: a 553 reply to RCPT without a more specific
	// enhanced code reads as 5.1.1 (bad mailbox), PowerMTA's
	// smtp-553-means-invalid-mailbox (its default is yes; here the zero
	// value is off).
	InvalidMailbox553 bool
	// IsSelf reports whether dialling ip:port would reach this very MTA
	// (its own listeners). An MX host that does is a mail loop: MX hosts
	// of its preference and worse are dropped, and when it is the best MX
	// the recipients bounce with 5.4.6 (RFC 5321 5.1). nil: no check.
	IsSelf func(ip netip.Addr, port int) bool

	// Timeouts, zero = default: connect 2m, greeting 5m, each command 5m,
	// data 3m per write, after the final dot 10m, idle in cache 5s.
	ConnectTimeout, GreetingTimeout, CommandTimeout, DataTimeout,
	DataTerminationTimeout, IdleTimeout time.Duration
	MaxMsgPerConnection int // 0 = unlimited; 1 = no reuse
}

// Rcpt is one envelope recipient.
type Rcpt struct {
	Addr string
	// ORCPT is "addr-type;address" decoded (as go-smtp hands it over, e.g.
	// "rfc822;user@example.com"); it is xtext-encoded on the wire.
	ORCPT string
	// Notify is the DSN NOTIFY value ("NEVER" or e.g. "SUCCESS,FAILURE"); "" = none.
	Notify string
}

// Message is one message to deliver.
type Message struct {
	ID       string // queue id, for logs
	From     string // envelope sender, "" = null sender
	Ret      string // DSN RET: "FULL", "HDRS" or ""
	EnvID    string // DSN ENVID, decoded; xtext-encoded on the wire
	SMTPUTF8 bool   // the message needs SMTPUTF8 (RFC 6531)
	Body8bit bool   // BODY=8BITMIME
	Rcpts    []Rcpt
	// Probe verifies the recipients instead of delivering (sendmail -bv):
	// the session is set up as for a delivery, MAIL FROM and every RCPT TO
	// are sent, then RSET instead of DATA. Content is not sent (it may be
	// nil). A recipient the server accepts gets its RCPT reply with
	// StageRcpt; RcptResult.Probed tells it from a refusal.
	Probe bool
	// Content is the message (headers and body). Line ends are sent as
	// CRLF whatever they are stored as; dot-stuffing is done here.
	Content io.ReaderAt
	Size    int64
}

// Reply is an SMTP reply, received or synthesized.
type Reply struct {
	Code     int    // 250, 451, 550, ...
	Enhanced string // "5.1.1" (RFC 3463) or ""
	Text     string // text without code and enhanced code; lines joined by " "
}

// String renders the reply as it would be logged: "550 5.1.1 text".
func (r Reply) String() string {
	s := strconv.Itoa(r.Code)
	if r.Enhanced != "" {
		s += " " + r.Enhanced
	}
	if r.Text != "" {
		s += " " + r.Text
	}
	return s
}

// Temporary reports a 4xx reply; Permanent a 5xx one.
func (r Reply) Temporary() bool { return r.Code >= 400 && r.Code < 500 }

// Permanent reports a 5xx reply.
func (r Reply) Permanent() bool { return r.Code >= 500 && r.Code < 600 }

// Stages a recipient's reply came from.
const (
	StageDNS      = "dns" // MX/address lookup (synthesized reply)
	StageConnect  = "connect"
	StageGreeting = "greeting"
	StageEHLO     = "ehlo"
	StageSTARTTLS = "starttls"
	StageAuth     = "auth" // smarthost login (AUTH)
	StageMail     = "mail"
	StageRcpt     = "rcpt"
	StageData     = "data"
	StageDot      = "dot"
)

// RcptResult is what happened to one recipient.
type RcptResult struct {
	Reply Reply
	Stage string
	// Synthesized: no server sent this reply (DNS, connect, timeout, lost
	// connection, local limits).
	Synthesized bool
	// OutcomeUnknown: the content went out, the reply to the final dot
	// never came; see Result.OutcomeUnknown.
	OutcomeUnknown bool
	// NotAttempted: the recipient was never offered to the server because
	// the session ran out of room (the rest of a "452 4.5.3 too many
	// recipients" split when max-msg-per-connection ended the session). The
	// reply is a synthesized 452 4.5.3; the caller should send it again
	// at once, on another connection, without counting a failed attempt.
	NotAttempted bool
}

// Probed reports a recipient a probe (Message.Probe) found deliverable:
// the server accepted its RCPT TO.
func (r RcptResult) Probed() bool { return r.Stage == StageRcpt && r.Reply.Code/100 == 2 }

// Delivered reports a 2xx reply after the final dot.
func (r RcptResult) Delivered() bool { return r.Stage == StageDot && r.Reply.Code/100 == 2 }

// Result is the outcome of one Deliver call.
type Result struct {
	Rcpts      []RcptResult // same order as Message.Rcpts
	Host       string       // MX or route host last talked to ("" if none)
	IP         netip.Addr   // its address
	Port       int
	SourceIP   netip.Addr // local address used
	TLSVersion string     // "TLSv1.3" as OpenSSL and Postfix name it, "" without TLS
	TLSCipher  string
	ESMTP      bool // EHLO was accepted
	// Extensions are the EHLO keywords the next hop offered, upper case,
	// sorted (accounting's dlvEsmtpAvailable); nil without EHLO.
	Extensions []string
	// DSN: the next hop offered DSN (and ignore-dsn was off), so NOTIFY
	// and ORCPT went on with the recipients. When it is false and a
	// recipient asked NOTIFY=SUCCESS, the queue manager owes the sender a
	// "relayed" DSN itself (RFC 3461 4.1).
	DSN bool
	// Downgraded: the content was converted to 7 bit (quoted-printable)
	// because the next hop lacks 8BITMIME, or long lines were encoded.
	Downgraded bool
	Reused     bool // the connection came from the cache
	// QueueDefer asks the queue manager to hold the whole queue (every
	// recipient of this destination, not only these) for this long: the
	// server said 421 (greeting or mid-session), it is shedding load, and
	// more connections now would only be refused (RFC 5321 3.8).
	QueueDefer time.Duration
	// OutcomeUnknown: the content was sent but no reply to the final dot
	// came (smtp-data-termination-timeout, or the connection dropped).
	// The server may have taken the message; the recipients are deferred
	// (a possible duplicate beats a possible loss) and this flag lets the
	// log and accounting say so.
	OutcomeUnknown bool
	Err            error // the transport-level error, if any (nil when replies say it all)
}

// Resolver is what Deliver needs from DNS; *resolve.Resolver implements it.
// Errors must wrap resolve.ErrNXDomain, ErrNoMX, ErrNullMX, ErrNoAddrs or
// ErrTemporary.
type Resolver interface {
	MX(ctx context.Context, domain string) ([]resolve.MX, error)
	Addrs(ctx context.Context, host string) ([]netip.Addr, error)
}

// DialFunc opens a TCP connection from laddr (zero = any) to raddr.
type DialFunc func(ctx context.Context, laddr netip.Addr, raddr netip.AddrPort) (net.Conn, error)
