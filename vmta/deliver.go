package vmta

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/sluicemta/sluice/internal/resolve"
	"github.com/sluicemta/sluice/internal/tlsname"
)

// Options configure a Deliverer.
type Options struct {
	Resolver Resolver                         // required unless every destination is an IP literal
	Logf     func(format string, args ...any) // nil: silent
	Dial     DialFunc                         // nil: net.Dialer bound to the source IP
	// TLSConfig is cloned for each STARTTLS (RootCAs for tests); ServerName
	// and InsecureSkipVerify are set per destination.
	TLSConfig *tls.Config
	MaxHosts  int // MX hosts considered per Deliver (default 5)
	MaxAddrs  int // connection attempts per Deliver (default 5)
	MaxIdle   int // idle cached connections kept in all (default 1000)
	// SweepInterval is how often idle connections are checked for expiry (default 1s).
	SweepInterval time.Duration
}

// Deliverer delivers messages and caches connections; safe for concurrent use.
type Deliverer struct {
	opt         Options
	cache       *connCache
	nopen       atomic.Int64 // open sessions
	tlsSessions tls.ClientSessionCache
}

// NewDeliverer returns a Deliverer; Close it to release cached connections.
func NewDeliverer(opt Options) *Deliverer {
	if opt.MaxHosts <= 0 {
		opt.MaxHosts = 5
	}
	if opt.MaxAddrs <= 0 {
		opt.MaxAddrs = 5
	}
	if opt.MaxIdle <= 0 {
		opt.MaxIdle = 1000
	}
	if opt.SweepInterval <= 0 {
		opt.SweepInterval = time.Second
	}
	if opt.Logf == nil {
		opt.Logf = func(string, ...any) {}
	}
	if opt.Dial == nil {
		opt.Dial = defaultDial
	}
	d := &Deliverer{opt: opt, cache: newConnCache(opt.MaxIdle, opt.SweepInterval)}
	// Resumed TLS sessions spare the handshake's public-key work when a
	// busy destination is reconnected to all day.
	d.tlsSessions = tls.NewLRUClientSessionCache(4096)
	if opt.TLSConfig != nil && opt.TLSConfig.ClientSessionCache != nil {
		d.tlsSessions = opt.TLSConfig.ClientSessionCache
	}
	return d
}

func defaultDial(ctx context.Context, laddr netip.Addr, raddr netip.AddrPort) (net.Conn, error) {
	var dl net.Dialer
	if laddr.IsValid() {
		dl.LocalAddr = &net.TCPAddr{IP: laddr.AsSlice()}
	}
	return dl.DialContext(ctx, "tcp", raddr.String())
}

// Close sends QUIT on and closes every cached connection. Deliver calls in
// progress finish; their connections are closed instead of cached.
func (d *Deliverer) Close() { d.cache.close() }

// IdleConns reports how many connections are cached (status pages, tests).
func (d *Deliverer) IdleConns() int { return d.cache.idleCount() }

// OpenConns reports how many outbound connections are open, idle or busy
// (status.conn.smtpOut.cur).
func (d *Deliverer) OpenConns() int { return int(d.nopen.Load()) }

func withDefaults(dest Destination) Destination {
	def := func(p *time.Duration, v time.Duration) {
		if *p <= 0 {
			*p = v
		}
	}
	def(&dest.ConnectTimeout, 2*time.Minute)
	def(&dest.GreetingTimeout, 5*time.Minute)
	def(&dest.CommandTimeout, 5*time.Minute)
	def(&dest.DataTimeout, 3*time.Minute)
	def(&dest.DataTerminationTimeout, 10*time.Minute)
	def(&dest.IdleTimeout, 5*time.Second)
	if dest.Port <= 0 {
		dest.Port = 25
	}
	if dest.HeloName == "" {
		dest.HeloName = "localhost"
	}
	dest.Domain = strings.ToLower(strings.TrimSuffix(dest.Domain, "."))
	dest.SourceIP4, dest.SourceIP6 = dest.SourceIP4.Unmap(), dest.SourceIP6.Unmap()
	if s := dest.SourceIP.Unmap(); s.IsValid() {
		if s.Is4() && !dest.SourceIP4.IsValid() {
			dest.SourceIP4 = s
		}
		if s.Is6() && !dest.SourceIP6.IsValid() {
			dest.SourceIP6 = s
		}
	}
	dest.SourceIP = netip.Addr{}
	return dest
}

// sourceFor picks the source address for dialling ip: the one of ip's
// family. ok is false when only the other family has a source (a VMTA's
// identity is its source addresses; dialling from an unplanned one would
// send as someone else).
func sourceFor(dest *Destination, ip netip.Addr) (src netip.Addr, ok bool) {
	if !dest.SourceIP4.IsValid() && !dest.SourceIP6.IsValid() {
		return netip.Addr{}, true
	}
	if ip.Unmap().Is4() {
		return dest.SourceIP4, dest.SourceIP4.IsValid()
	}
	return dest.SourceIP6, dest.SourceIP6.IsValid()
}

// QueueDefer421 is how long Result.QueueDefer asks the queue manager to
// hold a destination that said 421: long enough for a server shedding
// load to recover, short next to a retry interval.
const QueueDefer421 = time.Minute

// target is one next hop: an MX host, a route host, or the domain itself
// when it has no MX.
type target struct {
	name    string
	port    int
	literal netip.Addr // set when name is an IP literal
	// implicit: the domain's own address records (no MX), so a domain
	// without addresses is a permanent failure.
	implicit bool
	// mx: a host of the recipient domain's MX set (or implicit), with its
	// preference; only these are checked for pointing back at us.
	mx   bool
	pref int
}

// Deliver sends msg to dest in one or more transactions on one connection
// (more than one when the server limits recipients per transaction with
// "452 4.5.3") and reports each recipient's reply. It never returns without
// a reply for every recipient.
func (d *Deliverer) Deliver(ctx context.Context, dest Destination, msg *Message) Result {
	res := d.deliver(ctx, dest, msg)
	for _, r := range res.Rcpts {
		if r.Reply.Code == 421 && !r.Synthesized {
			res.QueueDefer = QueueDefer421
		}
		res.OutcomeUnknown = res.OutcomeUnknown || r.OutcomeUnknown
	}
	return res
}

func (d *Deliverer) deliver(ctx context.Context, dest Destination, msg *Message) Result {
	dest = withDefaults(dest)
	res := Result{Rcpts: make([]RcptResult, len(msg.Rcpts))}
	if len(msg.Rcpts) == 0 {
		return res
	}
	all := make([]int, len(msg.Rcpts))
	for i := range all {
		all[i] = i
	}
	t := &txn{msg: msg, res: res.Rcpts}
	if a, err := resolve.ToASCII(dest.Domain); err != nil {
		se := &sessErr{stage: StageDNS, synth: true, err: err,
			reply: synth(550, "5.1.2", "bad destination domain %q: %v", dest.Domain, err)}
		t.fail(all, se)
		res.Err = se
		return res
	} else {
		dest.Domain = a // IDN: DNS and the connection cache speak A-labels
	}
	targets, se := d.route(ctx, &dest)
	if se == nil && dest.IsSelf != nil && len(dest.Hosts) == 0 {
		targets, se = d.dropSelf(ctx, &dest, targets)
	}
	if se != nil {
		t.fail(all, se)
		res.Err = se
		d.opt.Logf("vmta: %s: %s: %v", msg.ID, dest.Domain, se)
		return res
	}

	// A cached session to any of the hosts first, in preference order.
	for _, tg := range targets {
		for {
			c := d.cache.get(d.key(&dest, tg), dest.RequireStartTLS)
			if c == nil {
				break
			}
			err := d.session(ctx, c, &dest, t, all, &res, true)
			if !errors.Is(err, errStale) {
				res.Err = err
				return res
			}
			d.opt.Logf("vmta: %s: cached session to %s unusable, reconnecting", msg.ID, c.name())
			c.quit()
			res = Result{Rcpts: res.Rcpts}
		}
	}

	var last *sessErr
	tries := 0
	for _, tg := range targets {
		addrs, se := d.addrs(ctx, &dest, tg)
		if se != nil {
			last = se
			if tg.implicit {
				break // the domain itself has no address: nothing else to try
			}
			continue
		}
		for _, ip := range addrs {
			if tries >= d.opt.MaxAddrs {
				break
			}
			tries++
			c, se := d.open(ctx, &dest, tg, ip, false)
			if se != nil && se.tlsFailed && !dest.RequireStartTLS && dest.AuthUsername == "" {
				// A failed handshake leaves the session unusable; the same
				// host in plain text beats deferring (opportunistic TLS).
				d.opt.Logf("vmta: %s: %v; retrying in plain text", msg.ID, se)
				c, se = d.open(ctx, &dest, tg, ip, true)
			}
			if se != nil {
				d.opt.Logf("vmta: %s: %v", msg.ID, se)
				last = se
				if se.final {
					t.fail(all, se)
					res.Err = se
					res.Host, res.IP, res.Port = se.host, se.ip, se.port
					return res
				}
				continue
			}
			if err := d.session(ctx, c, &dest, t, all, &res, false); err != nil {
				res.Err = err
			}
			return res
		}
	}
	if last == nil {
		last = &sessErr{stage: StageConnect, synth: true,
			reply: synth(451, "4.4.4", "no usable address for %s", dest.Domain)}
	}
	if last.reply.Code/100 == 5 && last.stage != StageDNS {
		// Only a policy (null MX, NXDOMAIN, 5xx greeting when asked) bounces
		// from here; a host that refused to talk defers: another may not.
		rep := last.reply
		last.reply = synth(451, "4.4.0", "host refused to talk to me: %s", rep)
		last.synth = true
	}
	t.fail(all, last)
	res.Err = last
	res.Host, res.IP, res.Port = last.host, last.ip, last.port
	return res
}

func (d *Deliverer) key(dest *Destination, tg target) connKey {
	return connKey{src4: dest.SourceIP4, src6: dest.SourceIP6, host: tg.name, port: tg.port,
		helo: dest.HeloName, user: dest.AuthUsername}
}

// dropSelf applies RFC 5321 5.1's loop rule to the recipient domain's MX
// hosts: the first one whose address is this MTA's marks our own
// preference; hosts of that preference or worse are dropped, and when
// nothing better remains the mail loops and bounces (5.4.6).
func (d *Deliverer) dropSelf(ctx context.Context, dest *Destination, targets []target) ([]target, *sessErr) {
	for i, tg := range targets {
		if !tg.mx {
			continue
		}
		addrs, se := d.addrs(ctx, dest, tg)
		if se != nil {
			continue
		}
		for _, ip := range addrs {
			if !dest.IsSelf(ip, tg.port) {
				continue
			}
			n := 0
			for n < i && targets[n].pref < tg.pref {
				n++
			}
			if n == 0 {
				return nil, &sessErr{stage: StageDNS, synth: true, host: tg.name, ip: ip, port: tg.port,
					reply: synth(554, "5.4.6", "mail for %s loops back to myself (MX host %s[%s])", dest.Domain, tg.name, ip)}
			}
			return targets[:n], nil
		}
	}
	return targets, nil
}

// open dials ip and sets the session up (greeting, EHLO, STARTTLS).
func (d *Deliverer) open(ctx context.Context, dest *Destination, tg target, ip netip.Addr, plain bool) (*conn, *sessErr) {
	src, _ := sourceFor(dest, ip)
	dctx, cancel := context.WithTimeout(ctx, dest.ConnectTimeout)
	nc, err := d.opt.Dial(dctx, src, netip.AddrPortFrom(ip, uint16(tg.port)))
	cancel()
	if err != nil {
		se := connectErr(tg.name, ip, tg.port, err)
		se.host, se.ip, se.port = tg.name, ip, tg.port
		return nil, se
	}
	c := newConn(nc)
	d.nopen.Add(1)
	c.open = &d.nopen
	c.key, c.host, c.ip, c.port, c.src = d.key(dest, tg), tg.name, ip, tg.port, src
	c.implicitTLS = dest.ImplicitTLS || tg.port == 465
	if la, ok := nc.LocalAddr().(*net.TCPAddr); ok {
		if a, ok := netip.AddrFromSlice(la.IP); ok {
			c.src = a.Unmap()
		}
	}
	c.idleFor = dest.IdleTimeout
	stop := context.AfterFunc(ctx, func() { nc.SetDeadline(time.Now()) })
	se := d.setup(c, dest, plain)
	stop()
	if se != nil {
		c.quit()
		se.host, se.ip, se.port = tg.name, ip, tg.port
		return nil, se
	}
	return c, nil
}

// session runs the transactions for pending on c and then caches or closes
// c. It returns errStale (c not yet used for anything, res untouched) when a
// cached c turns out dead.
func (d *Deliverer) session(ctx context.Context, c *conn, dest *Destination, t *txn, pending []int, res *Result, reused bool) error {
	if reused && dest.MaxMsgPerConnection > 0 && c.msgs >= dest.MaxMsgPerConnection {
		return errStale // cached under a laxer limit (config reload): retire it
	}
	res.Host, res.IP, res.Port, res.SourceIP, res.ESMTP, res.Reused = c.host, c.ip, c.port, c.src, c.esmtp, reused
	res.TLSVersion, res.TLSCipher = "", ""
	if c.tls != nil {
		res.TLSVersion = tlsname.Version(c.tls.Version)
		res.TLSCipher = tls.CipherSuiteName(c.tls.CipherSuite)
	}
	res.Extensions = nil
	if c.esmtp {
		res.Extensions = make([]string, 0, len(c.ext))
		for k := range c.ext {
			res.Extensions = append(res.Extensions, k)
		}
		slices.Sort(res.Extensions)
	}
	res.DSN = c.has("DSN")
	stop := context.AfterFunc(ctx, func() { c.nc.SetDeadline(time.Now()) })
	defer stop()

	pending = d.precheck(c, dest, t, pending)
	res.Downgraded = t.downgraded
	first := true
	var err error
	for len(pending) > 0 {
		if dest.MaxMsgPerConnection > 0 && c.msgs >= dest.MaxMsgPerConnection {
			t.setAll(pending, StageRcpt, synth(452, "4.5.3", "too many recipients; the rest go on another connection"), true)
			for _, ix := range pending {
				t.res[ix].NotAttempted = true
			}
			break
		}
		t.idx = pending
		pending, err = c.transact(dest, t)
		if errors.Is(err, errStale) {
			if reused && first {
				return errStale
			}
			se := c.ioErr(StageMail, "starting a transaction", err)
			t.fail(t.idx, se)
			err = se
			break
		}
		first = false
		if err != nil {
			break
		}
	}
	if ctx.Err() != nil {
		c.broken = true
	}
	if c.broken || (dest.MaxMsgPerConnection > 0 && c.msgs >= dest.MaxMsgPerConnection) {
		c.quit()
	} else {
		d.cache.put(c)
	}
	if err != nil {
		d.opt.Logf("vmta: %s: %s: %v", t.msg.ID, c.name(), err)
	}
	return err
}

// precheck fails, before any command, the recipients this server cannot
// take: an SMTPUTF8 message it cannot carry (RFC 6531 3.2: non-ASCII
// addresses or headers without SMTPUTF8, 5.6.7), 8-bit content that cannot
// be converted for a server without 8BITMIME (RFC 6152 3, 5.6.3), a
// message over its SIZE limit (RFC 1870). It chooses what content this
// server gets and returns the recipients left.
func (d *Deliverer) precheck(c *conn, dest *Destination, t *txn, pending []int) []int {
	if err := t.prepare(c, dest); err != nil {
		var le *localErr
		switch {
		case errors.As(err, &le):
			t.setAll(pending, StageMail, synth(451, "4.3.0", "local error reading the queued message: %v", le.err), true)
		case t.msg.SMTPUTF8 && !c.has("SMTPUTF8"):
			t.setAll(pending, StageMail, synth(554, "5.6.7",
				"SMTPUTF8 is required, but was not offered by host %s", c.name()), true)
		default:
			t.setAll(pending, StageMail, synth(554, "5.6.3",
				"message has 8-bit content that cannot be converted to 7 bit for host %s, which does not offer 8BITMIME", c.name()), true)
		}
		return nil
	}
	if lim := c.sizeLimit(); lim > 0 && t.size > lim {
		t.setAll(pending, StageMail, synth(552, "5.3.4",
			"message size %d exceeds size limit %d of server %s", t.size, lim, c.name()), true)
		return nil
	}
	t.smtputf8 = t.msg.SMTPUTF8 && c.has("SMTPUTF8")
	t.from, t.rcpt = qualify(t.msg.From, dest.QualifyDomain), nil
	for _, ix := range pending {
		if q := qualify(t.msg.Rcpts[ix].Addr, dest.QualifyDomain); q != t.msg.Rcpts[ix].Addr {
			if t.rcpt == nil {
				t.rcpt = make(map[int]string)
			}
			t.rcpt[ix] = q
		}
	}
	if t.smtputf8 {
		return pending
	}
	// Without SMTPUTF8 an address may still go when only its domain is
	// internationalized: the domain is sent in A-labels (RFC 6531 3.2).
	notUTF8 := synth(553, "5.6.7", "server %s does not support SMTPUTF8, needed for this address", c.name())
	from, ok := asciiAddr(t.from)
	if !ok {
		t.setAll(pending, StageMail, notUTF8, true)
		return nil
	}
	t.from = from
	var left []int
	for _, ix := range pending {
		addr := t.msg.Rcpts[ix].Addr
		if q, ok := t.rcpt[ix]; ok {
			addr = q
		}
		a, ok := asciiAddr(addr)
		if !ok {
			t.set(ix, StageRcpt, notUTF8, true)
			continue
		}
		if a != t.msg.Rcpts[ix].Addr {
			if t.rcpt == nil {
				t.rcpt = make(map[int]string)
			}
			t.rcpt[ix] = a
		}
		left = append(left, ix)
	}
	return left
}

// qualify appends "@domain" to a bare address ("root"), as a null client
// must before handing mail to a relay (RFC 5321 4.1.2 wants a domain);
// the null sender and addresses with a domain are returned as they are.
func qualify(addr, domain string) string {
	if addr == "" || domain == "" || strings.ContainsRune(addr, '@') {
		return addr
	}
	return addr + "@" + domain
}

// asciiAddr returns addr with its domain in A-labels; ok is false when
// the local part is not ASCII (only SMTPUTF8 can carry it) or the domain
// is not a valid IDN.
func asciiAddr(addr string) (string, bool) {
	if isASCII(addr) {
		return addr, true
	}
	at := strings.LastIndexByte(addr, '@')
	if at < 0 || !isASCII(addr[:at]) {
		return "", false
	}
	dom, err := resolve.ToASCII(addr[at+1:])
	if err != nil {
		return "", false
	}
	return addr[:at+1] + dom, true
}

// reader reads what the session sends.
func (t *txn) reader() io.Reader {
	if t.size > 0 {
		return io.NewSectionReader(t.content, 0, t.size)
	}
	return io.NewSectionReader(t.content, 0, 1<<62)
}

// prepare chooses the content for c: as queued, or converted to 7 bit
// (Downgrade) when it has 8-bit octets and c lacks 8BITMIME, or has lines
// over 998 octets. It declares BODY=8BITMIME whenever 8-bit content goes
// out, whatever the sender declared. Errors: *localErr, or
// ErrNotConvertible (8-bit headers, or parts that cannot be re-encoded).
func (t *txn) prepare(c *conn, dest *Destination) error {
	t.content, t.size, t.downgraded, t.body8 = t.msg.Content, t.msg.Size, false, t.msg.Body8bit
	if t.content == nil {
		return nil
	}
	if !t.scanned {
		t.scanned = true
		t.info, t.scanErr = scanContent(t.reader())
		if t.scanErr != nil {
			t.scanErr = &localErr{fmt.Errorf("vmta: read message %s: %w", t.msg.ID, t.scanErr)}
		}
	}
	if t.scanErr != nil {
		return t.scanErr
	}
	eightOK := c.has("8BITMIME") && !dest.Ignore8BitMIME
	utf8OK := t.msg.SMTPUTF8 && c.has("SMTPUTF8")
	if t.info.header8bit && !eightOK && !utf8OK {
		return ErrNotConvertible
	}
	if t.msg.SMTPUTF8 && !c.has("SMTPUTF8") && t.info.header8bit {
		return ErrNotConvertible // UTF-8 headers need SMTPUTF8 (RFC 6532)
	}
	t.body8 = t.body8 || t.info.body8bit
	if !t.info.longLines && (!t.info.body8bit || eightOK) {
		if !eightOK {
			t.body8 = false
		}
		return nil
	}
	if t.down == nil && t.downErr == nil {
		raw, err := io.ReadAll(t.reader())
		if err != nil {
			t.downErr = &localErr{fmt.Errorf("vmta: read message %s: %w", t.msg.ID, err)}
		} else if out, changed, err := Downgrade(raw); err != nil {
			t.downErr = err
		} else if changed {
			t.down, t.downChanged = out, true
		} else {
			t.down = raw // only what cannot be re-encoded: sent as is
		}
	}
	if t.downErr != nil {
		if eightOK && !errors.As(t.downErr, new(*localErr)) {
			return nil // only long lines it could not fix: send as is
		}
		return t.downErr
	}
	t.content, t.size, t.downgraded = bytes.NewReader(t.down), int64(len(t.down)), t.downChanged
	t.body8 = has8bit(t.down) && eightOK
	return nil
}

func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= 0x80 {
			return false
		}
	}
	return true
}

// route turns dest into next hops in preference order.
func (d *Deliverer) route(ctx context.Context, dest *Destination) ([]target, *sessErr) {
	if len(dest.Hosts) == 0 {
		return d.mxTargets(ctx, dest, dest.Domain, dest.Port, true)
	}
	var out []target
	var last *sessErr
	for _, h := range dest.Hosts {
		port := h.Port
		if port <= 0 {
			port = dest.Port
		}
		name, err := resolve.ToASCII(strings.Trim(h.Host, "[]"))
		if err != nil {
			last = &sessErr{stage: StageDNS, synth: true, err: err,
				reply: synth(451, "4.3.5", "bad route host %q: %v", h.Host, err)}
			continue
		}
		if ip, err := netip.ParseAddr(name); err == nil {
			out = append(out, target{name: name, port: port, literal: ip.Unmap()})
			continue
		}
		if h.Bracketed || dest.Bracketed {
			out = append(out, target{name: name, port: port})
			continue
		}
		tgs, se := d.mxTargets(ctx, dest, name, port, false)
		if se != nil {
			last = se
			continue
		}
		out = append(out, tgs...)
	}
	if len(out) == 0 {
		return nil, last
	}
	return out, nil
}

// mxTargets looks up domain's MX. For the recipient domain (recipient=true)
// NXDOMAIN and null MX are permanent; for a configured route host they are
// a configuration problem and defer.
func (d *Deliverer) mxTargets(ctx context.Context, dest *Destination, domain string, port int, recipient bool) ([]target, *sessErr) {
	if d.opt.Resolver == nil {
		return nil, &sessErr{stage: StageDNS, synth: true,
			reply: synth(451, "4.3.5", "no resolver configured to look up %s", domain)}
	}
	mxs, err := d.opt.Resolver.MX(ctx, domain)
	switch {
	case err == nil:
	case errors.Is(err, resolve.ErrNoMX):
		return []target{{name: domain, port: port, implicit: recipient, mx: recipient}}, nil
	case errors.Is(err, resolve.ErrNullMX) && recipient:
		return nil, &sessErr{stage: StageDNS, synth: true, err: err,
			reply: synth(556, "5.1.10", "Recipient address rejected: Domain %s does not accept mail (nullMX)", domain)}
	case errors.Is(err, resolve.ErrNXDomain) && recipient:
		return nil, &sessErr{stage: StageDNS, synth: true, err: err,
			reply: synth(550, "5.1.2", "Host or domain name not found. Name service error for name=%s type=MX: Host not found", domain)}
	default:
		return nil, &sessErr{stage: StageDNS, synth: true, err: err,
			reply: synth(451, "4.4.3", "Host or domain name not found. Name service error for name=%s type=MX: %v", domain, err)}
	}
	if len(mxs) > d.opt.MaxHosts {
		mxs = mxs[:d.opt.MaxHosts]
	}
	out := make([]target, 0, len(mxs))
	for _, mx := range mxs {
		tg := target{name: mx.Host, port: port, mx: recipient, pref: int(mx.Pref)}
		if ip, err := netip.ParseAddr(mx.Host); err == nil {
			tg.literal = ip.Unmap() // not allowed by RFC 5321, seen in the wild
		}
		out = append(out, tg)
	}
	return out, nil
}

// addrs returns the addresses to dial for tg, only of the source IP's family.
func (d *Deliverer) addrs(ctx context.Context, dest *Destination, tg target) ([]netip.Addr, *sessErr) {
	var addrs []netip.Addr
	if tg.literal.IsValid() {
		addrs = []netip.Addr{tg.literal}
	} else {
		if d.opt.Resolver == nil {
			return nil, &sessErr{stage: StageDNS, synth: true,
				reply: synth(451, "4.3.5", "no resolver configured to look up %s", tg.name)}
		}
		var err error
		addrs, err = d.opt.Resolver.Addrs(ctx, tg.name)
		if err == nil && len(addrs) == 0 {
			err = resolve.ErrNoAddrs
		}
		if err != nil {
			rep := synth(451, "4.4.3", "Host or domain name not found. Name service error for name=%s type=A: %v", tg.name, err)
			if tg.implicit && (errors.Is(err, resolve.ErrNXDomain) || errors.Is(err, resolve.ErrNoAddrs)) {
				rep = synth(550, "5.4.4", "Host or domain name not found. Name service error for name=%s type=A: %v", tg.name, err)
			}
			return nil, &sessErr{stage: StageDNS, synth: true, err: err, reply: rep}
		}
	}
	if dest.SourceIP4.IsValid() || dest.SourceIP6.IsValid() {
		kept := addrs[:0:0]
		for _, a := range addrs {
			if _, ok := sourceFor(dest, a); ok {
				kept = append(kept, a)
			}
		}
		if len(kept) == 0 {
			src := dest.SourceIP4
			if !src.IsValid() {
				src = dest.SourceIP6
			}
			return nil, &sessErr{stage: StageConnect, synth: true,
				reply: synth(451, "4.4.4", "no address of %s in the family of source %s", tg.name, src)}
		}
		addrs = kept
	}
	return addrs, nil
}
