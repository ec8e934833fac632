package config

import "fmt"

// The one table of directives. Parsing, validation, `--check`, reload and the
// sluice.conf(5) man page are all driven from it, so they cannot drift apart.
// Add a directive here when the daemon implements it; until then a PowerMTA
// name is reported as "not supported" (see powermtaDirectives).

// Type is the value type of a directive; it decides the parser and the one
// accessor of Block that may read it.
type Type int

const (
	TBool         Type = iota + 1 // yes|no (also true|false, on|off)
	TInt                          // non-negative integer
	TSize                         // bytes with an optional K, M or G suffix
	TDuration                     // 30s, 10m, 4d12h, 1w
	TDurations                    // comma list of durations
	TRate                         // N/s, N/m, N/h, N/d, N/10m; "unlimited" = zero Rate
	TString                       // one word or a path
	TStrings                      // comma list of words
	THostPorts                    // comma list of host:port or [host]:port
	TListener                     // IP:PORT, 0/0:PORT, [IPv6]:PORT
	TCertKey                      // CERT,KEY file pair (loaded at Load)
	TSourceHost                   // IP HOSTNAME
	TRecordTypes                  // comma list of accounting record types
	TRecordFields                 // TYPE field,field,...
	TEnum                         // one of Directive.Enum
	TPasswordHash                 // a bcrypt hash
	TSourceRef                    // {name} of a <source {name}> block
	TCIDRRate                     // CIDR RATE (traffic.go)
	TCIDRInt                      // CIDR N
	TVolumeRate                   // SIZE/UNIT, e.g. 100M/h
	TPatternRule                  // /REGEX/ ACTION...
	TDomainKey                    // SELECTOR,DOMAIN,KEYFILE (key loaded at Load; domainkey.go)
	TPathPair                     // DIR BADMAIL-DIR, two absolute paths (pickup.go)
)

func (t Type) String() string {
	switch t {
	case TBool:
		return "yes|no"
	case TInt:
		return "N"
	case TSize:
		return "SIZE"
	case TDuration:
		return "DURATION"
	case TDurations:
		return "DURATION[,DURATION...]"
	case TRate:
		return "RATE"
	case TString:
		return "VALUE"
	case TStrings:
		return "VALUE[,VALUE...]"
	case THostPorts:
		return "HOST[:PORT][,...]"
	case TListener:
		return "IP:PORT"
	case TCertKey:
		return "CERT-FILE,KEY-FILE"
	case TSourceHost:
		return "IP HOSTNAME"
	case TRecordTypes:
		return "TYPE[,TYPE...]"
	case TRecordFields:
		return "TYPE FIELD[,FIELD...]"
	case TEnum:
		return "WORD"
	case TPasswordHash:
		return "BCRYPT-HASH"
	case TSourceRef:
		return "{NAME}"
	case TCIDRRate:
		return "CIDR RATE"
	case TCIDRInt:
		return "CIDR N"
	case TVolumeRate:
		return "SIZE/UNIT"
	case TPatternRule:
		return "/REGEX/ ACTION..."
	case TDomainKey:
		return "SELECTOR,DOMAIN,KEYFILE"
	case TPathPair:
		return "DIR BADMAIL-DIR"
	}
	return "?"
}

// Block kinds. "global" is the top level of the file.
const (
	KindGlobal   = "global"
	KindSource   = "source"
	KindSMTPUser = "smtp-user"
	KindDomain   = "domain"
	KindVMTA     = "virtual-mta"
	KindPool     = "virtual-mta-pool"
	KindAcctFile = "acct-file"
	KindPatterns = "smtp-pattern-list"
	KindMilter   = "milter"
)

// BlockKind describes a <kind arg> block: where it may appear and what its
// argument is.
type BlockKind struct {
	Kind    string
	Parents []string
	Arg     string
	Doc     string
}

// Blocks lists the block kinds sluice implements, in man-page order.
var Blocks = []BlockKind{
	{KindGlobal, nil, "", "Directives outside any block."},
	{KindSource, []string{KindGlobal}, "CIDR|{name}|{auth}",
		"Policy for inbound SMTP clients. A CIDR block applies to clients in that network; the most specific matching CIDR wins (0/0 is the catch-all). {auth} applies on top once a client has authenticated, {name} instead of it for an <smtp-user> that names it with source."},
	{KindSMTPUser, []string{KindGlobal}, "NAME", "An account for SMTP AUTH on the listener."},
	{KindDomain, []string{KindGlobal, KindVMTA, KindPool}, "NAME|*|$MACRO",
		"Delivery settings for a recipient domain. Looked up from the most specific: <domain d> inside the virtual MTA, <domain *> inside it, the same inside each pool holding it, global <domain d>, global <domain *>, then the defaults."},
	{KindVMTA, []string{KindGlobal}, "NAME", "A virtual MTA: the source addresses mail is sent from."},
	{KindPool, []string{KindGlobal}, "NAME", "A pool of virtual MTAs used in turn."},
	{KindAcctFile, []string{KindGlobal}, "PATH", "An accounting CSV file in PowerMTA's record format."},
	{KindPatterns, []string{KindGlobal}, "NAME",
		"Rules applied to every reply from the queues whose <domain> names this list with smtp-pattern-list; every matching rule acts, in order."},
	{KindMilter, []string{KindGlobal}, "NAME",
		"(sluice) A mail filter (OpenDKIM, rspamd, ...) spoken to over the milter protocol, as Postfix does; smtpd-milters and non-smtpd-milters name the ones that run."},
}

// Directive is one row of the table.
type Directive struct {
	Name       string
	Blocks     []string // kinds it may appear in
	Type       Type
	Default    string // parsed with the directive's own parser; "" = unset
	DefaultDoc string // shown instead of Default when the default is computed
	Doc        string
	Repeatable bool
	Enum       []string
	Arg        string // the value's name in messages and the man page; "" = from Type
	// Restart marks settings a reload cannot apply to a running daemon
	// (listening sockets, the spool, the user it runs as); see RestartNeeded.
	Restart bool
	// Check refuses values that parse but are not acceptable; it returns
	// "" for a good value.
	Check func(v any) string
}

var (
	global  = []string{KindGlobal}
	source  = []string{KindSource}
	domain  = []string{KindDomain}
	vmtaK   = []string{KindVMTA}
	poolK   = []string{KindPool}
	userK   = []string{KindSMTPUser}
	acctK   = []string{KindAcctFile}
	patK    = []string{KindPatterns}
	milterK = []string{KindMilter}
	syncDoc = "only yes is accepted: sluice answers 250 only once a message is fsynced to the spool"
)

// Directives is the table. The same name may appear twice when its meaning
// differs by block (max-rcpt-per-message inbound and outbound).
var Directives = []Directive{
	// Global.
	{Name: "host-name", Arg: "HOSTNAME", Blocks: global, Type: TString, DefaultDoc: "the system host name", Doc: "Name used in the SMTP greeting, HELO/EHLO and Received headers."},
	{Name: "postmaster", Arg: "ADDRESS", Blocks: global, Type: TString, DefaultDoc: "postmaster@HOST-NAME", Doc: "Address that receives reports and is the From of DSNs."},
	{Name: "smtp-listener", Restart: true, Blocks: global, Type: TListener, Repeatable: true, Default: "0/0:25", Doc: "Address and port to accept SMTP on; 0/0:PORT is every address, [::1]:PORT an IPv6 one. Port 465 is implicit TLS and 587 submission, both requiring AUTH (and smtp-server-tls-certificate); other ports are plain SMTP with STARTTLS. Repeat for several."},
	{Name: "smtp-port", Restart: true, Blocks: global, Type: TInt, Doc: "Legacy form of smtp-listener 0/0:N.", Check: checkPort},
	{Name: "spool", Arg: "DIR", Restart: true, Blocks: global, Type: TString, Default: "/var/spool/pmta", Doc: "Directory holding the spool segments."},
	{Name: "log-file", Arg: "PATH", Blocks: global, Type: TString, Default: "/var/log/pmta/log", Doc: "The daemon's log file; reopened on SIGHUP and `sluice reopen-logs`."},
	{Name: "total-max-smtp-in", Blocks: global, Type: TInt, Default: "1000", Doc: "Most inbound SMTP connections at once, over all listeners."},
	{Name: "total-max-smtp-out", Blocks: global, Type: TInt, Default: "2000", Doc: "Most outbound SMTP connections at once, over all queues."},
	{Name: "sync-msg-create", Blocks: global, Type: TBool, Default: "yes", Doc: "Fsync a message before accepting it; " + syncDoc + ".", Check: refuseNo("sync-msg-create")},
	{Name: "sync-msg-update", Blocks: global, Type: TBool, Default: "yes", Doc: "Fsync recipient state changes; " + syncDoc + ".", Check: refuseNo("sync-msg-update")},
	{Name: "smtp-server-tls-certificate", Blocks: global, Type: TCertKey, Doc: "PEM certificate chain and key offered with STARTTLS; both are loaded when the config is."},
	{Name: "relay-domain", Arg: "DOMAIN", Blocks: global, Type: TString, Repeatable: true, Doc: "A domain accepted from any source (inbound mail for it is not relaying). Repeat for several."},
	{Name: "run-as-user", Arg: "USER", Restart: true, Blocks: global, Type: TString, Default: "sluice", Doc: "(sluice) Unprivileged user the daemon runs as."},
	{Name: "control-socket", Arg: "PATH", Restart: true, Blocks: global, Type: TString, Default: "/run/sluice/control.sock", Doc: "(sluice) Unix socket the sluice CLI and sendmail talk to."},
	{Name: "maildrop", Arg: "DIR", Restart: true, Blocks: global, Type: TString, Default: "/var/spool/pmta/maildrop", Doc: "(sluice) Directory sendmail's setgid helper writes to while the daemon is down (mode 1730); picked up at start and while running. Bad files go to DIR.bad."},
	{Name: "pickup", Arg: "DIR BADMAIL-DIR", Restart: true, Blocks: global, Type: TPathPair, Repeatable: true, Doc: "(PowerMTA) Queue the message files dropped in DIR (absolute path): each begins with one x-sender: and one or more x-receiver: header lines giving the envelope, which are removed; missing Date and Message-Id are added. A file is taken when its name appears (write it under a name starting with \".\" or ending in \".tmp\", then rename it), and DIR is scanned at start. A file that cannot be queued (no x-receiver, too big, not a regular file, refused by a milter) is moved to BADMAIL-DIR (created if missing) with NAME.reason saying why; after a temporary queue failure it is retried. Repeat for several directories."},
	{Name: "max-received-headers", Blocks: global, Type: TInt, Default: "50", Doc: "A message with more Received headers is refused as a mail loop."},
	{Name: "dsn-bounce-after", Blocks: global, Type: TDuration, Default: "1d", Doc: "How long a DSN (bounce) is retried; must be shorter than bounce-after."},
	{Name: "dns-server", Arg: "HOST[:PORT][,...]", Restart: true, Blocks: global, Type: TStrings, DefaultDoc: "the nameservers of /etc/resolv.conf", Doc: "Recursive DNS servers for MX and address lookups, tried in order (port 53 unless given)."},

	// <source>.
	{Name: "always-allow-relaying", Blocks: source, Type: TBool, Default: "no", Doc: "Let these clients relay to any domain."},
	{Name: "smtp-service", Blocks: source, Type: TBool, Default: "yes", Doc: "Whether these clients are served at all; no closes the connection with 554."},
	{Name: "require-auth", Blocks: source, Type: TBool, Default: "no", Doc: "Refuse MAIL until the client has authenticated."},
	{Name: "max-message-size", Blocks: source, Type: TSize, Default: "0", Doc: "Largest message accepted (10M, 512K or bytes); 0 = no limit."},
	{Name: "max-rcpt-per-message", Blocks: source, Type: TInt, Default: "1000", Doc: "Most recipients accepted in one inbound transaction."},
	{Name: "add-received-header", Blocks: source, Type: TBool, Default: "yes", Doc: "Add a Received header to incoming messages."},
	{Name: "add-message-id-header", Blocks: source, Type: TBool, Default: "yes", Doc: "Add a Message-ID header when it is missing."},
	{Name: "add-date-header", Blocks: source, Type: TBool, Default: "yes", Doc: "Add a Date header when it is missing."},
	{Name: "default-virtual-mta", Arg: "NAME", Blocks: []string{KindSource, KindSMTPUser}, Type: TString, Doc: "Virtual MTA or pool for mail from these clients (or this user, which wins over its source); without one, mail goes through the pool named default if there is one."},
	{Name: "process-x-virtual-mta", Blocks: source, Type: TBool, Default: "no", Doc: "Honour an x-virtual-mta header naming a virtual MTA or pool. The header is removed either way."},
	{Name: "process-x-job", Blocks: source, Type: TBool, Default: "no", Doc: "Take the job id (for accounting, pause, resume and delete by job) from an x-job header. The header is removed either way."},
	{Name: "log-connections", Blocks: source, Type: TBool, Default: "no", Doc: "Log each connection."},
	{Name: "log-commands", Blocks: source, Type: TBool, Default: "no", Doc: "Log each SMTP command and reply."},
	{Name: "allow-starttls", Blocks: source, Type: TBool, Default: "yes", Doc: "Offer STARTTLS (when smtp-server-tls-certificate is set)."},
	{Name: "allow-unencrypted-plain-auth", Blocks: source, Type: TBool, Default: "no", Doc: "Accept AUTH PLAIN/LOGIN before STARTTLS."},
	{Name: "smtp-max-auth-failure-rate", Blocks: source, Type: TRate, Default: "5/m", Doc: "Failed AUTH attempts allowed per client address before further attempts are refused."},
	{Name: "max-smtp-in-per-ip", Blocks: source, Type: TInt, Default: "0", Doc: "(sluice) Most connections at once from one client address; 0 = no limit."},
	{Name: "max-connect-rate-per-ip", Blocks: source, Type: TRate, Default: "unlimited", Doc: "(sluice) New connections allowed per client address."},

	// <smtp-user>.
	{Name: "password", Blocks: userK, Type: TPasswordHash, Doc: "bcrypt hash ($2a$, $2b$ or $2y$) of the password; make one with `sluice hash-password`."},
	{Name: "authentication-method", Blocks: userK, Type: TEnum, Enum: []string{"password"}, Default: "password", Doc: "How the user authenticates; only password."},
	{Name: "source", Blocks: userK, Type: TSourceRef, Doc: "A <source {name}> block whose settings apply once this user has authenticated."},

	// <domain>.
	{Name: "max-smtp-out", Blocks: domain, Type: TInt, Default: "20", Doc: "Most connections at once to this domain."},
	{Name: "max-msg-per-connection", Blocks: domain, Type: TInt, Default: "0", Doc: "Messages sent over one connection before it is closed; 0 = no limit."},
	{Name: "max-rcpt-per-message", Blocks: domain, Type: TInt, Default: "100", Doc: "Most recipients in one outbound transaction; more are sent as further transactions."},
	{Name: "retry-after", Blocks: domain, Type: TDurations, Default: "10m", Doc: "Wait before retrying a deferred recipient; a comma list gives successive waits, the last repeating."},
	{Name: "bounce-after", Blocks: domain, Type: TDuration, Default: "4d12h", Doc: "A recipient still undelivered after this long is bounced."},
	{Name: "retry-after-dns-error", Blocks: domain, Type: TDuration, Default: "1m", Doc: "Wait before retrying after a DNS lookup failed."},
	{Name: "route", Blocks: domain, Type: THostPorts, Doc: "Send to these hosts instead of the domain's MX; [host] skips MX lookup of host itself."},
	{Name: "smtp-hosts", Blocks: domain, Type: THostPorts, Doc: "PowerMTA's newer name for route."},
	{Name: "default-smtp-port", Blocks: domain, Type: TInt, Default: "25", Doc: "Port used when a host has none.", Check: checkPort},
	{Name: "connect-timeout", Blocks: domain, Type: TDuration, Default: "2m", Doc: "Time allowed to open a TCP connection."},
	{Name: "smtp-greeting-timeout", Blocks: domain, Type: TDuration, Default: "5m", Doc: "Time allowed for the 220 greeting."},
	{Name: "data-send-timeout", Blocks: domain, Type: TDuration, Default: "3m", Doc: "Time allowed for each write of message data."},
	{Name: "smtp-data-termination-timeout", Blocks: domain, Type: TDuration, Default: "10m", Doc: "Time allowed for the reply to the final dot."},
	{Name: "connection-idle-timeout", Blocks: domain, Type: TDuration, Default: "1m", Doc: "An idle outbound connection is closed after this long."},
	{Name: "use-starttls", Blocks: domain, Type: TBool, Default: "yes", Doc: "Use STARTTLS when the server offers it."},
	{Name: "require-starttls", Blocks: domain, Type: TBool, Default: "no", Doc: "Defer rather than send without TLS."},
	{Name: "bounce-upon-5xx-greeting", Blocks: domain, Type: TBool, Default: "yes", Doc: "Bounce (rather than defer) when the greeting is 5xx."},
	{Name: "smtp-553-means-invalid-mailbox", Blocks: domain, Type: TBool, Default: "yes", Doc: "Treat a 553 reply to RCPT as an invalid mailbox."},
	{Name: "ignore-8bitmime", Blocks: domain, Type: TBool, Default: "no", Doc: "Act as if the server did not offer 8BITMIME: 8-bit content is sent converted to quoted-printable."},
	{Name: "ignore-pipelining", Blocks: domain, Type: TBool, Default: "no", Doc: "Act as if the server did not offer PIPELINING: one command, one reply."},
	{Name: "ignore-dsn", Blocks: domain, Type: TBool, Default: "no", Doc: "Act as if the server did not offer DSN: NOTIFY, ORCPT, RET and ENVID are not passed on, and a success notice asked for is sent by sluice itself (relayed)."},
	{Name: "auth-username", Arg: "NAME", Blocks: domain, Type: TString, Doc: "Log in to the route/smtp-hosts relay with AUTH PLAIN or LOGIN as NAME, over TLS only: implicit TLS on port 465, STARTTLS (then required) elsewhere."},
	{Name: "auth-password", Arg: "PASSWORD", Blocks: domain, Type: TString, Doc: "Password for auth-username; keep the config file unreadable to others."},
	{Name: "type", Blocks: domain, Type: TEnum, Enum: []string{"smtp", "discard"}, Default: "smtp", Doc: "smtp delivers; discard drops the mail (accounted as delivered)."},
	{Name: "max-msg-rate", Blocks: domain, Type: TRate, Default: "unlimited", Doc: "Recipients attempted per time unit in this queue (GCRA, no burst)."},
	{Name: "max-connect-rate", Blocks: domain, Type: TRate, Default: "unlimited", Doc: "New connections per time unit in this queue."},
	{Name: "max-data-volume-rate", Blocks: domain, Type: TVolumeRate, Default: "unlimited", Doc: "Message bytes per time unit in this queue (SIZE/UNIT, e.g. 500M/h; each recipient counts the message size)."},
	{Name: "source-ip-max-msg-rate", Blocks: domain, Type: TCIDRRate, Repeatable: true, Doc: "Recipients per time unit from each source address in CIDR. In <domain *> it limits the address across all queues; in <domain NAME> within that queue."},
	{Name: "source-ip-max-connect-rate", Blocks: domain, Type: TCIDRRate, Repeatable: true, Doc: "New connections per time unit from each source address in CIDR (scope as source-ip-max-msg-rate)."},
	{Name: "source-ip-max-smtp-out", Blocks: domain, Type: TCIDRInt, Repeatable: true, Doc: "Most connections at once from each source address in CIDR (scope as source-ip-max-msg-rate); 0 = no limit."},
	{Name: "backoff-max-smtp-out", Blocks: domain, Type: TInt, Default: "20", Doc: "max-smtp-out while the queue is in backoff mode."},
	{Name: "backoff-max-msg-rate", Blocks: domain, Type: TRate, Default: "unlimited", Doc: "max-msg-rate while the queue is in backoff mode."},
	{Name: "backoff-max-connect-rate", Blocks: domain, Type: TRate, Default: "unlimited", Doc: "max-connect-rate while the queue is in backoff mode."},
	{Name: "backoff-retry-after", Blocks: domain, Type: TDuration, Default: "1h", Doc: "Wait before retrying a recipient deferred while the queue is in backoff mode."},
	{Name: "backoff-to-normal-after", Blocks: domain, Type: TDuration, Default: "1h", Doc: "A queue in backoff mode returns to normal after this long (sluice's default; PowerMTA's is never). 0 = only by hand or by a mode=normal pattern."},
	{Name: "backoff-to-normal-after-delivery", Blocks: domain, Type: TBool, Default: "no", Doc: "Return to normal mode at the first delivery made in backoff mode."},
	{Name: "reenable-source-ip-after", Blocks: domain, Type: TDuration, Default: "1h", Doc: "A source address disabled by a disable-source-ip pattern is used again for this queue after this long (unless the rule's reenable-after= says otherwise)."},
	{Name: "smtp-pattern-list", Arg: "NAME", Blocks: domain, Type: TString, Doc: "The <smtp-pattern-list> applied to every reply in this queue."},
	{Name: "disable-mx-rollup", Blocks: domain, Type: TBool, Default: "no", Doc: "Keep this domain in its own queue even when its MX hosts are those of other domains. Only domains governed by <domain *> alone are rolled up; the rolled-up queue is named [MX,MX...]/VMTA (see docs/queues.md)."},
	{Name: "queue-priority", Blocks: domain, Type: TInt, Default: "50", Doc: "0-100: a queue of higher priority is given connections first when total-max-smtp-out is reached.", Check: checkPriority},
	{Name: "list-unsubscribe", Arg: "URL-TEMPLATE", Blocks: domain, Type: TString, Doc: "Add List-Unsubscribe: <URL> where the message has none; https only. {rcpt}, {from}, {jobid}, {envid} and {id} are replaced (URL-escaped)."},
	{Name: "add-list-unsubscribe-post", Blocks: domain, Type: TBool, Default: "no", Doc: "Add List-Unsubscribe-Post: List-Unsubscribe=One-Click (RFC 8058) where the message has none and its List-Unsubscribe holds an https URI."},

	// <virtual-mta>.
	{Name: "smtp-source-host", Blocks: vmtaK, Type: TSourceHost, Repeatable: true, Doc: "Source address and the host name to announce from it; at most one per address family."},

	// <virtual-mta-pool>.
	{Name: "virtual-mta", Arg: "NAME", Blocks: poolK, Type: TString, Repeatable: true, Doc: "A member virtual MTA. Repeat for several."},
	{Name: "pool-weight", Blocks: vmtaK, Type: TInt, Default: "1", Doc: "(sluice) This virtual MTA's share in every pool holding it, relative to the other members' weights (1-1000). Each recipient sticks to the member first chosen for it across retries.", Check: checkWeight},

	// <smtp-pattern-list>.
	{Name: "reply", Blocks: patK, Type: TPatternRule, Repeatable: true, Doc: "/REGEX/ ACTION...: when a reply (as logged, \"421 4.7.0 text\") matches REGEX (case-insensitive), act: mode=backoff or mode=normal sets the queue's mode; disable-source-ip stops using the source address for this queue (until reenable-after=DURATION or reenable-source-ip-after); defer-queue defers the queue's waiting recipients (backoff-retry-after)."},

	// <acct-file>.
	{Name: "records", Blocks: acctK, Type: TRecordTypes, Default: "d,b", Doc: "Record types written: d, b, t, tq, r, f, rb, rs."},
	{Name: "record-fields", Blocks: acctK, Type: TRecordFields, Repeatable: true, Doc: "Fields (and their order) written for one record type; * is every field, !name drops one."},
	{Name: "world-readable", Blocks: acctK, Type: TBool, Default: "no", Doc: "Create the file mode 0644 instead of 0640."},

	// <milter> and the chains naming them (milter.go).
	{Name: "socket", Arg: "inet:HOST:PORT|unix:PATH", Blocks: milterK, Type: TString, Doc: "Where the milter listens: inet:HOST:PORT (inet:[IPv6]:PORT, Sendmail's inet:PORT@HOST) or unix:PATH. Required.", Check: checkMilterSocket},
	{Name: "default-action", Blocks: milterK, Type: TEnum, Enum: []string{"tempfail", "accept", "reject", "quarantine"}, Default: "tempfail", Doc: "What happens when the milter cannot be reached, times out or breaks the protocol: tempfail answers 451 4.7.1, accept goes on without it, reject answers 550 5.5.0, quarantine accepts the message on hold (Postfix's milter_default_action)."},
	{Name: "connect-timeout", Blocks: milterK, Type: TDuration, Default: "30s", Doc: "Time allowed to connect to the milter and negotiate."},
	{Name: "command-timeout", Blocks: milterK, Type: TDuration, Default: "30s", Doc: "Time allowed for the milter's answer to each SMTP command."},
	{Name: "content-timeout", Blocks: milterK, Type: TDuration, Default: "5m", Doc: "Time allowed for the milter's answer to each header and body chunk and to the end of the message."},
	{Name: "protocol", Blocks: milterK, Type: TInt, Default: "6", Doc: "Milter protocol version offered: 2, 3, 4 or 6.", Check: checkMilterProtocol},
	{Name: "connect-macros", Arg: "MACRO[,MACRO...]|none", Blocks: milterK, Type: TStrings, Default: "j,{daemon_name},{daemon_addr},v,_", Doc: "Macros sent with the connection (Postfix's milter_connect_macros); none for none. The milter may ask for others itself."},
	{Name: "helo-macros", Arg: "MACRO[,MACRO...]|none", Blocks: milterK, Type: TStrings, Default: "{tls_version},{cipher},{cipher_bits},{cert_subject},{cert_issuer}", Doc: "Macros sent with HELO/EHLO (milter_helo_macros)."},
	{Name: "mail-macros", Arg: "MACRO[,MACRO...]|none", Blocks: milterK, Type: TStrings, Default: "i,{auth_type},{auth_authen},{auth_author},{mail_addr},{mail_host},{mail_mailer}", Doc: "Macros sent with MAIL FROM (milter_mail_macros)."},
	{Name: "rcpt-macros", Arg: "MACRO[,MACRO...]|none", Blocks: milterK, Type: TStrings, Default: "i,{rcpt_addr},{rcpt_host},{rcpt_mailer}", Doc: "Macros sent with RCPT TO (milter_rcpt_macros)."},
	{Name: "data-macros", Arg: "MACRO[,MACRO...]|none", Blocks: milterK, Type: TStrings, Default: "i", Doc: "Macros sent with DATA (milter_data_macros)."},
	{Name: "eoh-macros", Arg: "MACRO[,MACRO...]|none", Blocks: milterK, Type: TStrings, Default: "i", Doc: "Macros sent with the headers and their end (milter_end_of_header_macros)."},
	{Name: "eom-macros", Arg: "MACRO[,MACRO...]|none", Blocks: milterK, Type: TStrings, Default: "i", Doc: "Macros sent with the body and the end of the message (milter_end_of_data_macros)."},
	{Name: "unknown-macros", Arg: "MACRO[,MACRO...]|none", Blocks: milterK, Type: TStrings, DefaultDoc: "none", Doc: "Macros sent with an unknown SMTP command (milter_unknown_command_macros)."},
	{Name: "smtpd-milters", Arg: "NAME[,NAME...]", Blocks: source, Type: TStrings, Doc: "(sluice) The <milter> blocks, in order, that see mail from these clients (chosen at connect, by address; Postfix's smtpd_milters)."},
	{Name: "non-smtpd-milters", Arg: "NAME[,NAME...]", Blocks: global, Type: TStrings, Doc: "(sluice) The <milter> blocks, in order, that see mail submitted without SMTP (sendmail, pickup), from a simulated localhost connection (Postfix's non_smtpd_milters)."},

	// DKIM signing at delivery (internal/dkim). Settings in a <virtual-mta>
	// apply to all its domains unless one of its own <domain> blocks says
	// otherwise, and win over pools' and global <domain> blocks.
	{Name: "domain-key", Blocks: []string{KindGlobal, KindVMTA}, Type: TDomainKey, Repeatable: true, Doc: "A DKIM private key (PEM RSA of at least 1024 bits, 2048 recommended, or PEM/base64 Ed25519) signing for DOMAIN and its subdomains with selector SELECTOR. Keys are loaded with the config: an unreadable key is a config error, a world-readable one a warning. A key naming the identity's domain is used before one naming a parent domain, and at each the virtual MTA's keys before the global ones. DOMAIN * (PowerMTA's wildcard) signs for any identity domain with d= that domain, for senders who publish the key under their own domains (by CNAME, say); it is tried after every key naming a domain."},
	{Name: "dkim-sign", Blocks: dkimK, Type: TBool, Default: "no", Doc: "Sign outgoing mail with DKIM (one signature per delivery, after List-Unsubscribe headers are added) using the domain-key matching the dkim-identity domain."},
	{Name: "dkim-algorithm", Blocks: dkimK, Type: TEnum, Enum: []string{"rsa-sha256", "ed25519-sha256"}, DefaultDoc: "that of the first matching key", Doc: "Sign only with keys of this algorithm (rsa-sha1 is not offered: RFC 8301)."},
	{Name: "dkim-body-canon", Blocks: dkimK, Type: TEnum, Enum: []string{"relaxed", "simple"}, Default: "relaxed", Doc: "Body canonicalization (RFC 6376 3.4)."},
	{Name: "dkim-headers-canon", Blocks: dkimK, Type: TEnum, Enum: []string{"relaxed", "simple"}, Default: "relaxed", Doc: "Header canonicalization (RFC 6376 3.4)."},
	{Name: "dkim-identity", Arg: "RULE|ADDRESS|@DOMAIN", Blocks: dkimK, Type: TString, Default: "sender-or-from", Doc: "Whose domain picks the key: sender-or-from (the Sender header if present, else From), from, sender, or a fixed address or @domain. An identity below the key's domain is put in i=.", Check: checkDKIMIdentity("dkim-identity", "sender-or-from", "from", "sender")},
	{Name: "dkim-identity-fallback", Arg: "ADDRESS|@DOMAIN", Blocks: dkimK, Type: TString, Doc: "Identity used when no domain-key matches dkim-identity (an ESP's own domain, say); without one such mail goes out unsigned and is logged.", Check: checkDKIMIdentity("dkim-identity-fallback")},
	{Name: "dkim-expire-after", Blocks: dkimK, Type: TDuration, Doc: "Put x= this long after the signing time in each signature; unset or 0 = no expiry."},
	{Name: "dkim-sign-headers", Arg: "HEADER[,HEADER...]", Blocks: dkimK, Type: TStrings, Default: defaultSignHeaders, Doc: "(sluice) Header fields signed when present (every instance). From is required.", Check: checkSignsFrom},
	{Name: "dkim-oversign-headers", Arg: "HEADER[,HEADER...]|none", Blocks: dkimK, Type: TStrings, Default: "From,To,Subject,Date,List-Unsubscribe,List-Unsubscribe-Post", Doc: "(sluice) Header fields signed once more than they occur, so a copy added in transit breaks the signature (RFC 6376 8.15); none for none.", Check: checkHeaderNames("dkim-oversign-headers")},
}

// dkimK: DKIM settings may be given per virtual MTA or per domain.
var dkimK = []string{KindDomain, KindVMTA}

const defaultSignHeaders = "From,Sender,Reply-To,Subject,Date,Message-ID,To,Cc,MIME-Version,Content-Type,Content-Transfer-Encoding,In-Reply-To,References,List-Id,List-Unsubscribe,List-Unsubscribe-Post,Feedback-ID"

// powermtaDirectives are PowerMTA directive and block names sluice does not
// implement yet; they get their own message instead of "unknown directive".
var powermtaDirectives = []string{
	// global
	"http-mgmt-port", "http-access", "run-as-root",
	"bounce-processor", "feedback-loop-processor", "address-list", "rewrite-list",
	"bounce-category-patterns", "deliver-only",
	// source
	"process-x-envid", "retain-x-job",
	"retain-x-virtual-mta", "jobid-header", "remove-received-headers",
	"hide-message-source", "remove-header", "log-data", "pattern-list",
	"verp-default", "suppress-local-dsn",
	// domain
	"max-errors-per-connection",
	"smtp-out-rampup-interval", "retry-recipients-after",
	"backoff-notify",
	"backoff-reroute-to-virtual-mta", "bounce-upon-no-mx",
	"ignore-chunking", "dsn-format", "notify-of-delay-every",
	"disable-acct-records",
	// smtp-pattern-list and acct-file
	"disable-source-ip", "defer-queue", "move-to", "move-interval",
	"max-size", "delete-after",
}

// powermtaBlocks are PowerMTA block kinds sluice does not implement yet.
var powermtaBlocks = []string{
	"spool", "bounce-processor", "feedback-loop-processor", "address-list",
	"rewrite-list", "bounce-category-patterns", "pattern-list",
}

// acctRecordTypes are PowerMTA's accounting record types.
var acctRecordTypes = []string{"d", "b", "t", "tq", "r", "f", "rb", "rs"}

func refuseNo(name string) func(any) string {
	return func(v any) string {
		if v.(bool) {
			return ""
		}
		return name + " no is refused: sluice acknowledges mail only after it is fsynced to the spool, so a crash cannot lose accepted mail; remove the line"
	}
}

func checkPriority(v any) string {
	if n := v.(int64); n > 100 {
		return fmt.Sprintf("queue-priority %d is not 0-100", n)
	}
	return ""
}

func checkWeight(v any) string {
	if n := v.(int64); n < 1 || n > 1000 {
		return fmt.Sprintf("pool-weight %d is not 1-1000", n)
	}
	return ""
}

func checkPort(v any) string {
	if n := v.(int64); n < 1 || n > 65535 {
		return fmt.Sprintf("port %d is not 1-65535", n)
	}
	return ""
}
