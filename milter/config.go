package milter

import (
	"fmt"
	"net"
	"strconv"
	"strings"
	"time"
)

// Action is what happens to mail when a milter cannot be used
// (unreachable, too slow, or speaking garbage): Postfix's milter_default_action.
type Action uint8

const (
	// ActionTempfail answers 451 4.7.1 (the default, as in Postfix up to 3.10).
	ActionTempfail Action = iota
	// ActionAccept goes on as if the milter were not configured.
	ActionAccept
	// ActionReject answers 550 5.5.0.
	ActionReject
	// ActionQuarantine accepts the message into the hold queue.
	ActionQuarantine
)

var actionNames = [...]string{"tempfail", "accept", "reject", "quarantine"}

func (a Action) String() string {
	if int(a) < len(actionNames) {
		return actionNames[a]
	}
	return "Action(" + strconv.Itoa(int(a)) + ")"
}

// ParseAction parses accept|tempfail|reject|quarantine (case-insensitive).
func ParseAction(s string) (Action, error) {
	for i, n := range actionNames {
		if strings.EqualFold(s, n) {
			return Action(i), nil
		}
	}
	return 0, fmt.Errorf("milter: unknown default-action %q (want accept, tempfail, reject or quarantine)", s)
}

// Stage names a macro list. The values are the protocol's SMFIM_* codes,
// which a milter uses in SETSYMLIST; StageUnknown has no code on the wire.
type Stage uint32

const (
	StageConnect Stage = 0 // SMFIM_CONNECT
	StageHelo    Stage = 1 // SMFIM_HELO
	StageMail    Stage = 2 // SMFIM_ENVFROM
	StageRcpt    Stage = 3 // SMFIM_ENVRCPT
	StageData    Stage = 4 // SMFIM_DATA
	StageEOM     Stage = 5 // SMFIM_EOM: sent with body chunks and end of message
	StageEOH     Stage = 6 // SMFIM_EOH: sent with each header and end of headers
	StageUnknown Stage = 7 // unknown SMTP command (Postfix's milter_unknown_command_macros)
)

var stageNames = [...]string{"connect", "helo", "mail", "rcpt", "data", "eom", "eoh", "unknown"}

func (s Stage) String() string {
	if int(s) < len(stageNames) {
		return stageNames[s]
	}
	return "Stage(" + strconv.Itoa(int(s)) + ")"
}

// DefaultMacros returns Postfix's milter_*_macros defaults, a fresh map each call.
func DefaultMacros() map[Stage][]string {
	return map[Stage][]string{
		StageConnect: {"j", "{daemon_name}", "{daemon_addr}", "v", "_"},
		StageHelo:    {"{tls_version}", "{cipher}", "{cipher_bits}", "{cert_subject}", "{cert_issuer}"},
		StageMail:    {"i", "{auth_type}", "{auth_authen}", "{auth_author}", "{mail_addr}", "{mail_host}", "{mail_mailer}"},
		StageRcpt:    {"i", "{rcpt_addr}", "{rcpt_host}", "{rcpt_mailer}"},
		StageData:    {"i"},
		StageEOH:     {"i"},
		StageEOM:     {"i"},
		StageUnknown: {},
	}
}

// Default timeouts, as Postfix's milter_*_timeout.
const (
	DefaultConnectTimeout = 30 * time.Second
	DefaultCommandTimeout = 30 * time.Second
	DefaultContentTimeout = 300 * time.Second
	DefaultProtocol       = 6
)

// Config describes one milter of a chain.
type Config struct {
	// Name appears in logs; the socket is used when empty.
	Name string
	// Socket is inet:HOST:PORT (also inet:[v6addr]:PORT or inet:PORT@HOST,
	// Sendmail's form) or unix:PATH (local:PATH is the same).
	Socket        string
	DefaultAction Action
	// Zero timeouts mean the defaults (30 s, 30 s, 300 s).
	ConnectTimeout, CommandTimeout, ContentTimeout time.Duration
	// Protocol is the version offered: 2, 3, 4 or 6 (0 means 6).
	Protocol int
	// Macros overrides the macro list of a stage; stages absent here use
	// DefaultMacros. A milter may override them again with SETSYMLIST.
	Macros map[Stage][]string
}

// withDefaults fills zero fields and checks the rest.
func (c Config) withDefaults() (Config, error) {
	if c.ConnectTimeout == 0 {
		c.ConnectTimeout = DefaultConnectTimeout
	}
	if c.CommandTimeout == 0 {
		c.CommandTimeout = DefaultCommandTimeout
	}
	if c.ContentTimeout == 0 {
		c.ContentTimeout = DefaultContentTimeout
	}
	if c.Protocol == 0 {
		c.Protocol = DefaultProtocol
	}
	if c.Name == "" {
		c.Name = c.Socket
	}
	switch c.Protocol {
	case 2, 3, 4, 6:
	default:
		return c, fmt.Errorf("milter %s: protocol %d not supported (want 2, 3, 4 or 6)", c.Name, c.Protocol)
	}
	if c.ConnectTimeout < 0 || c.CommandTimeout < 0 || c.ContentTimeout < 0 {
		return c, fmt.Errorf("milter %s: negative timeout", c.Name)
	}
	if int(c.DefaultAction) >= len(actionNames) {
		return c, fmt.Errorf("milter %s: bad default action %d", c.Name, c.DefaultAction)
	}
	if _, _, err := ParseSocket(c.Socket); err != nil {
		return c, fmt.Errorf("milter %s: %w", c.Name, err)
	}
	m := DefaultMacros()
	for st, names := range c.Macros {
		if st > StageUnknown {
			return c, fmt.Errorf("milter %s: unknown macro stage %d", c.Name, st)
		}
		m[st] = append([]string(nil), names...)
	}
	c.Macros = m
	return c, nil
}

// ParseSocket turns a milter socket specification into a network and
// address for net.Dial.
func ParseSocket(s string) (network, address string, err error) {
	kind, rest, ok := strings.Cut(s, ":")
	if !ok || rest == "" {
		return "", "", fmt.Errorf("socket %q: want inet:HOST:PORT or unix:PATH", s)
	}
	switch strings.ToLower(kind) {
	case "unix", "local":
		return "unix", rest, nil
	case "inet", "inet6":
		host, port := "", ""
		if p, h, ok := strings.Cut(rest, "@"); ok { // Sendmail: inet:PORT@HOST
			host, port = h, p
		} else if host, port, err = net.SplitHostPort(rest); err != nil {
			return "", "", fmt.Errorf("socket %q: %w", s, err)
		}
		if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
			return "", "", fmt.Errorf("socket %q: bad port %q", s, port)
		}
		if host == "" {
			return "", "", fmt.Errorf("socket %q: empty host", s)
		}
		return "tcp", net.JoinHostPort(host, port), nil
	}
	return "", "", fmt.Errorf("socket %q: unknown transport %q (want inet or unix)", s, kind)
}
