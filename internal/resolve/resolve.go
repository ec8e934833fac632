// Package resolve is the caching DNS resolver outbound delivery uses for MX
// and address lookups.
//
// It talks to recursive servers (those in /etc/resolv.conf, or the ones
// configured) with github.com/miekg/dns, so it sees the response codes the
// stdlib resolver hides: a caller must tell NXDOMAIN (the domain does not
// exist: bounce) from SERVFAIL or a timeout (try again later), a null MX
// (RFC 7505: the domain accepts no mail) from no MX at all (RFC 5321 5.1:
// fall back to the domain's own A/AAAA records). Answers are cached for
// their TTL, negative answers for the SOA minimum (RFC 2308), and concurrent
// lookups of one name share one query.
package resolve

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/miekg/dns"
	"golang.org/x/net/idna"
)

// Errors a lookup returns, wrapped with the name and type; test them with
// errors.Is.
var (
	// ErrNXDomain: the name does not exist (permanent).
	ErrNXDomain = errors.New("host or domain name not found")
	// ErrNullMX: the domain publishes a null MX (RFC 7505) and accepts no mail.
	ErrNullMX = errors.New("domain accepts no mail (null MX)")
	// ErrNoMX: the domain exists but has no MX records; RFC 5321 5.1 says to
	// deliver to the domain's own addresses.
	ErrNoMX = errors.New("no MX records")
	// ErrNoAddrs: the host exists but has no A or AAAA records (permanent).
	ErrNoAddrs = errors.New("no address records")
	// ErrTemporary: SERVFAIL, REFUSED, timeout or another transient failure.
	ErrTemporary = errors.New("temporary DNS failure")
)

// MX is one mail exchanger of a domain.
type MX struct {
	Host string // lower case, no trailing dot
	Pref uint16
}

// Options configure a Resolver. The zero value reads /etc/resolv.conf.
type Options struct {
	// Servers are "host:port" (or bare host, port 53) recursive servers,
	// tried in order. Empty: the nameservers of /etc/resolv.conf.
	Servers []string
	// Timeout bounds one query to one server (default 5s).
	Timeout time.Duration
	// MinTTL and MaxTTL clamp cached positive answers (defaults 5s, 1h).
	MinTTL, MaxTTL time.Duration
	// NegativeTTL caps how long NXDOMAIN/NODATA is cached (default 15m;
	// the SOA minimum is used when lower).
	NegativeTTL time.Duration
	// TempFailTTL is how long a temporary failure is remembered, so a
	// broken domain's backlog does not hammer the servers (default 5s; <0 off).
	TempFailTTL time.Duration
	// MaxEntries bounds the cache (default 100000 names × types).
	MaxEntries int
	// Now is the clock (tests).
	Now func() time.Time
}

// Resolver is a caching stub resolver, safe for concurrent use.
type Resolver struct {
	opt     Options
	servers []string
	client  *dns.Client
	tcp     *dns.Client
	cfgErr  error

	mu       sync.Mutex
	cache    map[key]*entry
	inflight map[key]*call
}

type key struct {
	name  string
	qtype uint16
}

type entry struct {
	rrs     []dns.RR
	err     error
	expires time.Time
}

type call struct {
	done chan struct{}
	rrs  []dns.RR
	err  error
}

// New returns a Resolver. A missing or unreadable resolv.conf is reported by
// every lookup as a temporary failure rather than here, so a daemon can start.
func New(opt Options) *Resolver {
	if opt.Timeout <= 0 {
		opt.Timeout = 5 * time.Second
	}
	if opt.MinTTL <= 0 {
		opt.MinTTL = 5 * time.Second
	}
	if opt.MaxTTL <= 0 {
		opt.MaxTTL = time.Hour
	}
	if opt.NegativeTTL <= 0 {
		opt.NegativeTTL = 15 * time.Minute
	}
	if opt.TempFailTTL == 0 {
		opt.TempFailTTL = 5 * time.Second
	}
	if opt.MaxEntries <= 0 {
		opt.MaxEntries = 100000
	}
	if opt.Now == nil {
		opt.Now = time.Now
	}
	r := &Resolver{
		opt:      opt,
		client:   &dns.Client{Net: "udp", Timeout: opt.Timeout, UDPSize: 1232},
		tcp:      &dns.Client{Net: "tcp", Timeout: opt.Timeout},
		cache:    make(map[key]*entry),
		inflight: make(map[key]*call),
	}
	if len(opt.Servers) > 0 {
		for _, s := range opt.Servers {
			r.servers = append(r.servers, withPort(s, "53"))
		}
	} else {
		cfg, err := dns.ClientConfigFromFile("/etc/resolv.conf")
		if err != nil {
			r.cfgErr = fmt.Errorf("resolve: read /etc/resolv.conf: %w", err)
		} else {
			for _, s := range cfg.Servers {
				r.servers = append(r.servers, net.JoinHostPort(s, cfg.Port))
			}
		}
		if r.cfgErr == nil && len(r.servers) == 0 {
			r.cfgErr = errors.New("resolve: no nameservers in /etc/resolv.conf")
		}
	}
	return r
}

func withPort(s, port string) string {
	if _, _, err := net.SplitHostPort(s); err == nil {
		return s
	}
	return net.JoinHostPort(strings.Trim(s, "[]"), port)
}

// MX returns the domain's mail exchangers sorted by preference, equal
// preferences shuffled so load spreads as RFC 5321 5.1 asks. It returns
// ErrNoMX when the domain exists without MX records, ErrNullMX for a null MX,
// ErrNXDomain or ErrTemporary (all wrapped).
func (r *Resolver) MX(ctx context.Context, domain string) ([]MX, error) {
	rrs, err := r.lookup(ctx, domain, dns.TypeMX)
	if err != nil {
		return nil, fmt.Errorf("resolve: %s MX: %w", domain, err)
	}
	mxs, null := mxFrom(rrs)
	if len(mxs) == 0 {
		if null {
			return nil, fmt.Errorf("resolve: %s MX: %w", domain, ErrNullMX)
		}
		return nil, fmt.Errorf("resolve: %s MX: %w", domain, ErrNoMX)
	}
	shuffleEqual(mxs)
	return mxs, nil
}

// mxFrom extracts the MX set from an answer. A "." target is a null MX
// (RFC 7505); mixed with real MX records it is ignored, as the RFC leaves
// that case to the client and delivering is the useful reading.
func mxFrom(rrs []dns.RR) (mxs []MX, null bool) {
	seen := make(map[string]bool)
	for _, rr := range rrs {
		mx, ok := rr.(*dns.MX)
		if !ok {
			continue
		}
		host := strings.ToLower(strings.TrimSuffix(mx.Mx, "."))
		if host == "" {
			null = true
			continue
		}
		if seen[host] {
			continue
		}
		seen[host] = true
		mxs = append(mxs, MX{Host: host, Pref: mx.Preference})
	}
	slices.SortStableFunc(mxs, func(a, b MX) int { return int(a.Pref) - int(b.Pref) })
	return mxs, null
}

func shuffleEqual(mxs []MX) {
	for i := 0; i < len(mxs); {
		j := i + 1
		for j < len(mxs) && mxs[j].Pref == mxs[i].Pref {
			j++
		}
		group := mxs[i:j]
		rand.Shuffle(len(group), func(a, b int) { group[a], group[b] = group[b], group[a] })
		i = j
	}
}

// Addrs returns host's IPv4 then IPv6 addresses. An IP literal is returned
// as is. Errors: ErrNXDomain, ErrNoAddrs, ErrTemporary (wrapped). When one
// family answers and the other fails temporarily, the answers are returned.
func (r *Resolver) Addrs(ctx context.Context, host string) ([]netip.Addr, error) {
	if a, err := netip.ParseAddr(strings.Trim(host, "[]")); err == nil {
		return []netip.Addr{a.Unmap()}, nil
	}
	type res struct {
		rrs []dns.RR
		err error
	}
	ch := make(chan res, 1)
	go func() {
		rrs, err := r.lookup(ctx, host, dns.TypeAAAA)
		ch <- res{rrs, err}
	}()
	rrs4, err4 := r.lookup(ctx, host, dns.TypeA)
	r6 := <-ch
	var addrs []netip.Addr
	for _, rr := range rrs4 {
		if a, ok := rr.(*dns.A); ok {
			if ip, ok := netip.AddrFromSlice(a.A.To4()); ok {
				addrs = append(addrs, ip)
			}
		}
	}
	for _, rr := range r6.rrs {
		if a, ok := rr.(*dns.AAAA); ok {
			if ip, ok := netip.AddrFromSlice(a.AAAA.To16()); ok {
				addrs = append(addrs, ip.Unmap())
			}
		}
	}
	if len(addrs) > 0 {
		return addrs, nil
	}
	switch {
	case errors.Is(err4, ErrTemporary) || errors.Is(r6.err, ErrTemporary):
		return nil, fmt.Errorf("resolve: %s A/AAAA: %w", host, ErrTemporary)
	case errors.Is(err4, ErrNXDomain) || errors.Is(r6.err, ErrNXDomain):
		return nil, fmt.Errorf("resolve: %s A/AAAA: %w", host, ErrNXDomain)
	case err4 != nil:
		return nil, fmt.Errorf("resolve: %s A: %w", host, err4)
	case r6.err != nil:
		return nil, fmt.Errorf("resolve: %s AAAA: %w", host, r6.err)
	}
	return nil, fmt.Errorf("resolve: %s A/AAAA: %w", host, ErrNoAddrs)
}

// lookup answers from the cache or runs one shared query. The records
// returned are of qtype (CNAME chains followed by the recursive server).
// A nil error with no records means NODATA.
func (r *Resolver) lookup(ctx context.Context, name string, qtype uint16) ([]dns.RR, error) {
	if r.cfgErr != nil {
		return nil, fmt.Errorf("%w: %v", ErrTemporary, r.cfgErr)
	}
	name, err := ToASCII(name)
	if err != nil {
		return nil, err
	}
	if _, ok := dns.IsDomainName(name); !ok || name == "" {
		return nil, fmt.Errorf("invalid name %q: %w", name, ErrNXDomain)
	}
	k := key{name, qtype}
	now := r.opt.Now()
	r.mu.Lock()
	if e, ok := r.cache[k]; ok {
		if now.Before(e.expires) {
			r.mu.Unlock()
			return e.rrs, e.err
		}
		delete(r.cache, k)
	}
	c, ok := r.inflight[k]
	if !ok {
		c = &call{done: make(chan struct{})}
		r.inflight[k] = c
		// The query outlives the first caller's cancellation: others may
		// be waiting on it, and its answer is cached for later ones.
		go r.run(context.WithoutCancel(ctx), k, c)
	}
	r.mu.Unlock()
	select {
	case <-c.done:
		return c.rrs, c.err
	case <-ctx.Done():
		return nil, fmt.Errorf("%w: %v", ErrTemporary, ctx.Err())
	}
}

func (r *Resolver) run(ctx context.Context, k key, c *call) {
	rrs, ttl, err := r.query(ctx, k.name, k.qtype)
	c.rrs, c.err = rrs, err
	r.mu.Lock()
	delete(r.inflight, k)
	if ttl > 0 {
		if len(r.cache) >= r.opt.MaxEntries {
			r.evictLocked()
		}
		r.cache[k] = &entry{rrs: rrs, err: err, expires: r.opt.Now().Add(ttl)}
	}
	r.mu.Unlock()
	close(c.done)
}

// evictLocked drops expired entries, then arbitrary ones, until a tenth of
// the cache is free; map order is random enough for a bound of last resort.
func (r *Resolver) evictLocked() {
	now := r.opt.Now()
	for k, e := range r.cache {
		if !now.Before(e.expires) {
			delete(r.cache, k)
		}
	}
	for k := range r.cache {
		if len(r.cache) < r.opt.MaxEntries*9/10 {
			break
		}
		delete(r.cache, k)
	}
}

// query asks the servers in turn and returns the records, how long to cache
// the outcome (0: do not) and the classified error.
func (r *Resolver) query(ctx context.Context, name string, qtype uint16) ([]dns.RR, time.Duration, error) {
	m := new(dns.Msg)
	m.SetQuestion(dns.Fqdn(name), qtype)
	m.SetEdns0(1232, false)
	var lastErr error
	for _, srv := range r.servers {
		resp, _, err := r.client.ExchangeContext(ctx, m, srv)
		if err == nil && resp.Truncated {
			resp, _, err = r.tcp.ExchangeContext(ctx, m, srv)
		}
		if err != nil {
			lastErr = fmt.Errorf("%w: %s: %v", ErrTemporary, srv, err)
			continue
		}
		rrs, ttl, err := r.classify(resp, qtype)
		if errors.Is(err, ErrTemporary) {
			lastErr = fmt.Errorf("%s: %w", srv, err)
			continue
		}
		return rrs, ttl, err
	}
	if lastErr == nil {
		lastErr = ErrTemporary
	}
	return nil, r.opt.TempFailTTL, lastErr
}

// classify turns a response into records, a cache lifetime and an error.
func (r *Resolver) classify(resp *dns.Msg, qtype uint16) ([]dns.RR, time.Duration, error) {
	switch resp.Rcode {
	case dns.RcodeSuccess:
	case dns.RcodeNameError:
		return nil, r.negTTL(resp), ErrNXDomain
	default:
		return nil, 0, fmt.Errorf("%w: rcode %s", ErrTemporary, dns.RcodeToString[resp.Rcode])
	}
	var rrs []dns.RR
	var minTTL uint32 = 1<<32 - 1
	for _, rr := range resp.Answer {
		if rr.Header().Rrtype != qtype {
			continue
		}
		rrs = append(rrs, rr)
		minTTL = min(minTTL, rr.Header().Ttl)
	}
	if len(rrs) == 0 {
		return nil, r.negTTL(resp), nil
	}
	ttl := time.Duration(minTTL) * time.Second
	return rrs, max(r.opt.MinTTL, min(ttl, r.opt.MaxTTL)), nil
}

// negTTL is RFC 2308 5: min(SOA TTL, SOA MINIMUM), capped by NegativeTTL.
func (r *Resolver) negTTL(resp *dns.Msg) time.Duration {
	ttl := r.opt.NegativeTTL
	for _, rr := range resp.Ns {
		if soa, ok := rr.(*dns.SOA); ok {
			t := time.Duration(min(soa.Hdr.Ttl, soa.Minttl)) * time.Second
			ttl = min(ttl, t)
		}
	}
	return max(ttl, r.opt.MinTTL)
}

// ToASCII returns name in A-labels (IDNA 2008 with UTS #46 mapping, as
// browsers and MTAs look names up): "bücher.example" becomes
// "xn--bcher-kva.example". An ASCII name is returned lower-cased, without a
// trailing dot. An invalid internationalized name wraps ErrNXDomain: no DNS
// name can match it.
func ToASCII(name string) (string, error) {
	name = strings.TrimSuffix(name, ".")
	ascii := true
	for i := 0; i < len(name); i++ {
		if name[i] >= 0x80 {
			ascii = false
			break
		}
	}
	if ascii {
		return strings.ToLower(name), nil
	}
	a, err := idna.Lookup.ToASCII(name)
	if err != nil {
		return "", fmt.Errorf("resolve: invalid internationalized name %q: %v: %w", name, err, ErrNXDomain)
	}
	return strings.ToLower(a), nil
}

// Flush empties the cache (config reload, tests).
func (r *Resolver) Flush() {
	r.mu.Lock()
	clear(r.cache)
	r.mu.Unlock()
}
