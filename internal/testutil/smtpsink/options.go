// Package smtpsink is a recording SMTP server for tests.
//
// It is written on net and bufio rather than go-smtp's server because tests
// need full control of the wire: exact replies per stage and per recipient,
// pipelining-aware flushing (so round trips can be counted), delays, dropped
// connections, and the raw bytes of DATA and BDAT. It listens on loopback
// only and stops when the test ends.
package smtpsink

import (
	"crypto/tls"
	"time"
)

// Stage names a point in an SMTP conversation where a reply can be scripted.
type Stage int

// Stages, in conversation order.
const (
	StageNone      Stage = iota
	StageGreeting        // on connect
	StageHelo            // EHLO or HELO
	StageStartTLS        // STARTTLS command
	StageAuth            // AUTH (final reply)
	StageMail            // MAIL FROM
	StageRcpt            // RCPT TO (every recipient without a per-address reply)
	StageData            // the DATA command itself (default 354)
	StageBdat            // a BDAT chunk that is not LAST
	StageAfterData       // end of DATA content or BDAT LAST
	StageRset            // RSET
	StageQuit            // QUIT
)

var stageNames = [...]string{"none", "greeting", "helo", "starttls", "auth", "mail", "rcpt", "data", "bdat", "after-data", "rset", "quit"}

func (s Stage) String() string {
	if int(s) < len(stageNames) {
		return stageNames[s]
	}
	return "stage?"
}

// Ext is a set of EHLO extensions the sink advertises and honours.
type Ext uint

// Extensions. A MAIL or RCPT parameter of an extension that is not
// advertised is refused with 555, so clients that send unadvertised
// parameters are caught.
const (
	Pipelining Ext = 1 << iota
	EightBitMIME
	SMTPUTF8
	DSN
	Size
	Chunking
	EnhancedStatusCodes
	StartTLS // needs a certificate: Options.TLSConfig, or a generated self-signed one
	Auth     // AUTH PLAIN LOGIN against Options.AuthUser/AuthPass

	// NoExt advertises nothing (EHLO answers with the hostname line only).
	NoExt Ext = 1 << 30
)

// DefaultExt is what a zero Options.Ext means.
const DefaultExt = Pipelining | EightBitMIME | SMTPUTF8 | DSN | Size | Chunking | EnhancedStatusCodes

// Close, returned by Options.Func, drops the connection without a reply.
const Close = "<close>"

// Call is what Options.Func is told about the command being answered.
type Call struct {
	Stage Stage
	Arg   string   // the command's argument (address for MAIL/RCPT), "" for greeting/after-data
	Conn  int      // connection id, from 1
	Msg   *Message // the transaction so far, read-only; nil outside one
}

// Options configure a sink. The zero value is a permissive ESMTP server on
// a free 127.0.0.1 port that accepts everything.
type Options struct {
	// Addr to listen on; "" means 127.0.0.1:0. Must be a loopback address.
	Addr string
	// Hostname in the greeting and EHLO reply; "" means "sink.test".
	Hostname string
	// Ext is the set of extensions; 0 means DefaultExt, NoExt means none.
	Ext Ext
	// MaxSize is advertised with SIZE and enforced (552); 0 means no limit.
	MaxSize int64

	// Replies overrides the default reply per stage, e.g.
	// {StageGreeting: "554 5.3.2 go away"}. Multi-line replies are written
	// with "\n" between lines; the code of the first line is repeated.
	// A 421 reply closes the connection after it is sent.
	Replies map[Stage]string
	// RcptReplies answers RCPT per address (case-insensitive, no brackets),
	// e.g. {"bad@x": "550 5.1.1 no such user"}.
	RcptReplies map[string]string
	// Delays sleeps before replying at a stage (a slow server).
	Delays map[Stage]time.Duration
	// CloseAt drops the connection at a stage instead of replying; for
	// StageAfterData the content has been read in full, which is how a
	// data-termination timeout looks to the client.
	CloseAt Stage
	// Func, when set, is asked first at every stage. It returns the reply
	// to send, "" for the scripted or default one, or Close. It runs on the
	// connection's goroutine and may be called concurrently.
	Func func(Call) string

	// TLSConfig is used for STARTTLS; nil means a generated self-signed
	// certificate for localhost, 127.0.0.1 and ::1 (see Sink.CertPool).
	TLSConfig *tls.Config
	// RequireTLS refuses MAIL before STARTTLS with 530.
	RequireTLS bool

	// AuthUser and AuthPass are the one account AUTH accepts.
	AuthUser, AuthPass string
	// RequireAuth refuses MAIL before a successful AUTH with 530.
	RequireAuth bool

	// IdleTimeout closes a connection that sends nothing; 0 means 1 minute.
	IdleTimeout time.Duration
}

func (o *Options) ext() Ext {
	switch {
	case o.Ext == 0:
		return DefaultExt
	case o.Ext&NoExt != 0:
		return 0
	}
	return o.Ext
}
