package vmta

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"net/netip"
	"strings"
	"sync/atomic"
	"time"

	"github.com/sluicemta/sluice/internal/resolve"
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
	return dest
}

// target is one next hop: an MX host, a route host, or the domain itself
// when it has no MX.
type target struct {
	name    string
	port    int
	literal netip.Addr // set when name is an IP literal
	// implicit: the domain's own address records (no MX), so a domain
	// without addresses is a permanent failure.
	implicit bool
}

// Deliver sends msg to dest in one or more transactions on one connection
// (more than one when the server limits recipients per transaction with
// "452 4.5.3") and reports each recipient's reply. It never returns without
// a reply for every recipient.
func (d *Deliverer) Deliver(ctx context.Context, dest Destination, msg *Message) Result {
	dest = withDefaults(dest)
	res := Result{Rcpts: make([]RcptResult, len(msg.Rcpts))}
	if len(msg.Rcpts) == 0 {
		return res
	}
	all := make([]int, len(msg.Rcpts))
	for i := range all {
		all[i] = i
	}
	t := &txn{msg: msg, res: res.Rcpts, body8: msg.Body8bit}
	targets, se := d.route(ctx, &dest)
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
			if se != nil && se.tlsFailed && !dest.RequireStartTLS {
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
	return connKey{src: dest.SourceIP, host: tg.name, port: tg.port, helo: dest.HeloName}
}

// open dials ip and sets the session up (greeting, EHLO, STARTTLS).
func (d *Deliverer) open(ctx context.Context, dest *Destination, tg target, ip netip.Addr, plain bool) (*conn, *sessErr) {
	dctx, cancel := context.WithTimeout(ctx, dest.ConnectTimeout)
	nc, err := d.opt.Dial(dctx, dest.SourceIP, netip.AddrPortFrom(ip, uint16(tg.port)))
	cancel()
	if err != nil {
		se := connectErr(tg.name, ip, tg.port, err)
		se.host, se.ip, se.port = tg.name, ip, tg.port
		return nil, se
	}
	c := newConn(nc)
	d.nopen.Add(1)
	c.open = &d.nopen
	c.key, c.host, c.ip, c.port, c.src = d.key(dest, tg), tg.name, ip, tg.port, dest.SourceIP
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
		res.TLSVersion = tls.VersionName(c.tls.Version)
		res.TLSCipher = tls.CipherSuiteName(c.tls.CipherSuite)
	}
	stop := context.AfterFunc(ctx, func() { c.nc.SetDeadline(time.Now()) })
	defer stop()

	pending = d.precheck(c, t, pending)
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
// take: a message over its SIZE limit (RFC 1870), non-ASCII addresses
// without SMTPUTF8 (RFC 6531 3.2). It returns the recipients left.
func (d *Deliverer) precheck(c *conn, t *txn, pending []int) []int {
	if lim := c.sizeLimit(); lim > 0 && t.msg.Size > lim {
		t.setAll(pending, StageMail, synth(552, "5.3.4",
			"message size %d exceeds size limit %d of server %s", t.msg.Size, lim, c.name()), true)
		return nil
	}
	t.smtputf8 = t.msg.SMTPUTF8
	if !t.msg.SMTPUTF8 || c.has("SMTPUTF8") {
		return pending
	}
	notUTF8 := synth(553, "5.6.7", "server %s does not support SMTPUTF8, needed for this address", c.name())
	if !isASCII(t.msg.From) {
		t.setAll(pending, StageMail, notUTF8, true)
		return nil
	}
	var left []int
	for _, ix := range pending {
		if isASCII(t.msg.Rcpts[ix].Addr) {
			left = append(left, ix)
		} else {
			t.set(ix, StageRcpt, notUTF8, true)
		}
	}
	return left
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
		name := strings.ToLower(strings.TrimSuffix(strings.Trim(h.Host, "[]"), "."))
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
		return []target{{name: domain, port: port, implicit: recipient}}, nil
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
		tg := target{name: mx.Host, port: port}
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
	if src := dest.SourceIP; src.IsValid() {
		kept := addrs[:0:0]
		for _, a := range addrs {
			if a.Is4() == src.Unmap().Is4() {
				kept = append(kept, a)
			}
		}
		if len(kept) == 0 {
			return nil, &sessErr{stage: StageConnect, synth: true,
				reply: synth(451, "4.4.4", "no address of %s in the family of source %s", tg.name, src)}
		}
		addrs = kept
	}
	return addrs, nil
}
