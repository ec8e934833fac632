// Package smtpd is sluice's inbound SMTP server: listeners, connection
// limits, relay control, AUTH, STARTTLS and the header fixes a message gets
// on the way in. The protocol engine is github.com/emersion/go-smtp; this
// package is the policy around it.
//
// It knows neither the spool nor the config: the daemon hands it a Queue and
// Settings (with PolicyFor, LocalDomain and CheckPassword callbacks) built
// from the config. A message is answered 250 only after Queue.Enqueue has
// returned, that is once the spool made it durable.
//
// Bare <LF> and bare <CR> in message content are rejected with
// "550 5.5.2 Error: bare <LF> received", as Postfix's
// smtpd_forbid_bare_newline=reject does, unless the client's Policy asks for
// NormalizeBareNewlines (for known-broken local software). Rejecting rather
// than silently rewriting tells the sender its software is broken and keeps
// us from relaying a message whose line structure another MTA could read
// differently (SMTP smuggling). Either way, content handed to Queue has CRLF
// line endings only.
package smtpd

import (
	"context"
	"crypto/tls"
	"errors"
	"net/netip"
	"time"

	"github.com/sluicemta/sluice/spool"
)

// ErrQueueFull is what a Queue returns (wrapped or not) when it has no room;
// the client is told "452 4.3.1 Insufficient system storage". Any other
// Enqueue error is answered "451 4.3.0".
var ErrQueueFull = errors.New("smtpd: queue full")

// Queue takes accepted messages. Enqueue returns only once the message is
// durable; the client is told 250 only after that. env.ID is already set
// (made with internal/qid) and content starts with our Received header.
type Queue interface {
	Enqueue(ctx context.Context, env *Envelope, content []byte) error
}

// Notify is the DSN NOTIFY set of one recipient (RFC 3461); zero means the
// client sent no NOTIFY parameter.
type Notify = spool.Notify

// Notify bits.
const (
	NotifyNever   = spool.NotifyNever
	NotifySuccess = spool.NotifySuccess
	NotifyFailure = spool.NotifyFailure
	NotifyDelay   = spool.NotifyDelay
)

// Rcpt is one accepted recipient.
type Rcpt struct {
	Addr   string // as the client sent it, without brackets; quoting removed
	ORCPT  string // DSN ORCPT as "type;address" (decoded), or ""
	Notify Notify
}

// Envelope is everything known about a message apart from its content.
type Envelope struct {
	ID       string // queue id (internal/qid), also in our Received header
	From     string // reverse path without brackets; "" is the null sender
	Ret      string // DSN RET: "", "FULL" or "HDRS"
	EnvID    string // DSN ENVID (decoded)
	SMTPUTF8 bool
	Body     string // "7BIT" or "8BITMIME" ("" when the client said nothing)
	Rcpts    []Rcpt

	ClientIP   netip.Addr
	ClientName string // reverse name, "unknown" when none
	Helo       string
	Proto      string // SMTP, ESMTP, ESMTPS, ESMTPA or ESMTPSA
	AuthUser   string
	TLS        *tls.ConnectionState // nil without TLS

	// Hold asks for the message to be queued on hold (a filter's
	// quarantine); HoldReason says why.
	Hold       bool
	HoldReason string

	Source   string // listener address the message came in on
	VMTA     string // Policy.DefaultVMTA of the client at the time
	Received time.Time
}

// Policy is what the daemon computes from the config for one client (a
// PowerMTA <source> block). Zero values mean "no"/"default".
type Policy struct {
	Relay                     bool  // always-allow-relaying
	RequireAuth               bool  // MAIL needs a successful AUTH first
	Refuse                    bool  // smtp-service no: 554 at connect
	MaxMessageSize            int64 // 0: Settings.MaxMessageSize
	MaxRcpts                  int   // 0: 1000 (Postfix's smtpd_recipient_limit)
	AddReceived               bool
	AddMessageID              bool // when the message has none
	AddDate                   bool // when the message has none
	AllowStartTLS             bool // advertise and accept STARTTLS
	AllowPlainAuthUnencrypted bool // AUTH without TLS from a non-loopback client
	NormalizeBareNewlines     bool // rewrite bare LF/CR to CRLF instead of 550
	DefaultVMTA               string
}

// Mode is what a listener is for.
type Mode int

const (
	Plain       Mode = iota // port 25: STARTTLS offered, AUTH optional
	ImplicitTLS             // port 465: TLS from the first byte, AUTH required
	Submission              // port 587: STARTTLS, AUTH required
)

func (m Mode) String() string {
	switch m {
	case Plain:
		return "smtp"
	case ImplicitTLS:
		return "smtps"
	case Submission:
		return "submission"
	}
	return "mode?"
}

// Listener is one smtp-listener.
type Listener struct {
	Addr string // host:port
	Mode Mode
}

// Rate is N events per Per; the zero Rate is unlimited.
type Rate struct {
	N   int
	Per time.Duration
}

// Settings configure a Server. Update swaps them for new sessions.
type Settings struct {
	Hostname  string // in the greeting and Received headers
	Listeners []Listener

	CertFile, KeyFile string // PEM; reloaded when their mtime changes

	TotalMaxIn    int  // concurrent sessions over all listeners (0: unlimited)
	MaxPerIP      int  // concurrent sessions per client IP (0: unlimited)
	ConnRatePerIP Rate // new connections per client IP

	CommandTimeout time.Duration // per command read/write (0: 5m)
	DataTimeout    time.Duration // per read while receiving content (0: 10m)

	MaxMessageSize int64 // ceiling advertised in EHLO SIZE (0: 10240000)
	MaxReceived    int   // Received headers allowed before 554 5.4.6 (0: 50)
	MaxLineLength  int   // command and content line length (0: 2000)

	// Error tarpit: after SoftErrorLimit rejected commands each reply waits
	// ErrorDelay times the errors over the limit; at HardErrorLimit the
	// client is told 421 and disconnected. A delivered message clears the
	// count. Zeros: 1s, 10, 20 (Postfix's defaults).
	ErrorDelay     time.Duration
	SoftErrorLimit int
	HardErrorLimit int

	AuthFailureRate Rate // per client IP; over it: 421 4.7.0 and disconnect

	// PolicyFor is called at connect (authUser "") and again after AUTH.
	// It runs on the accept path: a lookup in the config, nothing slower.
	PolicyFor func(ip netip.Addr, authUser string) Policy
	// LocalDomain reports relay-domain destinations, accepted from anyone.
	// It gets the domain lower-cased without a trailing dot (UTF-8 as sent,
	// no IDNA mapping), or an address literal as "[192.0.2.1]" or
	// "[IPv6:2001:db8::1]".
	LocalDomain func(domain string) bool
	// CheckPassword checks AUTH credentials (nil: AUTH not offered).
	CheckPassword func(user, pass string) bool
	// ClientName returns the verified reverse name of ip ("" if none). nil
	// means no lookups: every client is "unknown".
	ClientName func(ctx context.Context, ip netip.Addr) string

	// NewFilter opens the content filter (milter chain) of a connection
	// at its first HELO/EHLO; nil, or a nil Filter, means none. A reply
	// with a code answers every HELO/EHLO of the connection (a milter
	// refusing the connection). ctx ends when the connection does.
	NewFilter func(ctx context.Context, c FilterConn) (Filter, FilterReply)

	// Log receives connection events for the maillog (may be nil). It is
	// called from many goroutines at once and must not block for long.
	Log func(Event)
}

// EventKind says what an Event reports.
type EventKind int

const (
	EvConnect    EventKind = iota
	EvReject               // a command was refused; Code/Text say how
	EvQueued               // a message was enqueued
	EvAuth                 // AUTH succeeded (AuthUser) or failed (Code != 0)
	EvDisconnect           // the connection ended
	EvError                // a local fault or a connection error (Err)
	EvFilter               // a filter discarded (Text "discard") or held ("hold: reason") a message
)

func (k EventKind) String() string {
	switch k {
	case EvConnect:
		return "connect"
	case EvReject:
		return "reject"
	case EvQueued:
		return "queued"
	case EvAuth:
		return "auth"
	case EvDisconnect:
		return "disconnect"
	case EvError:
		return "error"
	case EvFilter:
		return "filter"
	}
	return "event?"
}

// Event is one line for the maillog.
type Event struct {
	Time     time.Time
	Kind     EventKind
	Listener string
	Client   netip.AddrPort
	Helo     string
	Proto    string // SMTP, ESMTP, ESMTPS, ... as far as known
	AuthUser string
	QueueID  string
	From     string // envelope sender, when a transaction is open
	Rcpt     string // the refused recipient, for a RCPT reject
	Command  string // the verb refused, for EvReject: CONNECT, MAIL, RCPT, DATA, AUTH, BDAT; "-" for a hang-up
	Code     int    // reply code sent (EvReject, failed EvAuth, EvError with a reply)
	Text     string // the rest of the reply: enhanced code and message, e.g. "5.7.1 <u@x>: Relay access denied"
	Err      error  // local detail not shown to the client
}
