// Package fakedns is an authoritative DNS server on loopback for tests.
//
// Zone data is set from Go; any name can be made to fail with SERVFAIL or
// NXDOMAIN, or to get no answer at all (a timeout for the resolver). Every
// query is logged, so tests can assert that MX lookups happened, or did
// not (a bracketed route host must skip them).
package fakedns

import (
	"errors"
	"fmt"
	"net"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// TTL of every record the server answers with.
const TTL = 300

// Query is one question the server received.
type Query struct {
	Name string // canonical: lower case, trailing dot
	Type string // "MX", "A", ...
	Net  string // "udp" or "tcp"
	Time time.Time
}

// Server is a running fake DNS server, UDP and TCP on one loopback port.
type Server struct {
	udp, tcp *dns.Server
	addr     string

	mu      sync.Mutex
	rrs     map[string][]dns.RR // by canonical owner name
	rcode   map[string]int
	silent  map[string]bool
	queries []Query
}

// Start serves on 127.0.0.1 until the test ends.
func Start(t testing.TB) *Server {
	t.Helper()
	s, err := New()
	if err != nil {
		t.Fatalf("fakedns: %v", err)
	}
	t.Cleanup(s.Close)
	return s
}

// New starts a server that the caller must Close.
func New() (*Server, error) {
	s := &Server{rrs: map[string][]dns.RR{}, rcode: map[string]int{}, silent: map[string]bool{}}
	var (
		pc  net.PacketConn
		ln  net.Listener
		err error
	)
	// UDP picks the port, TCP must get the same one; retry if it is taken.
	for i := 0; i < 20; i++ {
		pc, err = net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("listen udp: %w", err)
		}
		ln, err = net.Listen("tcp", pc.LocalAddr().String())
		if err == nil {
			break
		}
		pc.Close()
	}
	if err != nil {
		return nil, fmt.Errorf("listen tcp beside udp: %w", err)
	}
	s.addr = pc.LocalAddr().String()
	h := dns.HandlerFunc(s.serve)
	s.udp = &dns.Server{PacketConn: pc, Handler: h}
	s.tcp = &dns.Server{Listener: ln, Handler: h}
	for _, srv := range []*dns.Server{s.udp, s.tcp} {
		started := make(chan struct{})
		srv.NotifyStartedFunc = func() { close(started) }
		go srv.ActivateAndServe()
		select {
		case <-started:
		case <-time.After(5 * time.Second):
			s.Close()
			return nil, errors.New("server did not start")
		}
	}
	return s, nil
}

// Addr is "127.0.0.1:port", for UDP and TCP alike.
func (s *Server) Addr() string { return s.addr }

// Close stops both listeners.
func (s *Server) Close() {
	s.udp.Shutdown()
	s.tcp.Shutdown()
}

// Add adds records in zone-file syntax, e.g.
// "example.com. MX 10 mx.example.com." (TTL and class may be left out).
func (s *Server) Add(rrs ...string) error {
	for _, text := range rrs {
		rr, err := dns.NewRR(text)
		if err != nil {
			return fmt.Errorf("fakedns: record %q: %w", text, err)
		}
		if rr == nil {
			return fmt.Errorf("fakedns: record %q is empty", text)
		}
		if rr.Header().Ttl == 3600 && !strings.Contains(text, "3600") {
			rr.Header().Ttl = TTL // NewRR's default is an hour; tests want short
		}
		s.addRR(rr)
	}
	return nil
}

func (s *Server) addRR(rr dns.RR) {
	h := rr.Header()
	h.Name = dns.CanonicalName(h.Name)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.rrs[h.Name] = append(s.rrs[h.Name], rr)
}

func hdr(name string, t uint16) dns.RR_Header {
	return dns.RR_Header{Name: dns.CanonicalName(name), Rrtype: t, Class: dns.ClassINET, Ttl: TTL}
}

// AddMX adds an MX record: name MX pref host.
func (s *Server) AddMX(name string, pref uint16, host string) {
	s.addRR(&dns.MX{Hdr: hdr(name, dns.TypeMX), Preference: pref, Mx: dns.Fqdn(host)})
}

// AddNullMX adds RFC 7505's "MX 0 ." (the domain accepts no mail).
func (s *Server) AddNullMX(name string) { s.AddMX(name, 0, ".") }

// AddA adds A records (or AAAA for IPv6 addresses) for name.
func (s *Server) AddA(name string, ips ...string) {
	for _, a := range ips {
		ip := net.ParseIP(a)
		if ip == nil {
			panic("fakedns: bad IP " + a)
		}
		if ip4 := ip.To4(); ip4 != nil {
			s.addRR(&dns.A{Hdr: hdr(name, dns.TypeA), A: ip4})
		} else {
			s.addRR(&dns.AAAA{Hdr: hdr(name, dns.TypeAAAA), AAAA: ip})
		}
	}
}

// AddAAAA is AddA for readers who want to see the family at the call.
func (s *Server) AddAAAA(name string, ips ...string) { s.AddA(name, ips...) }

// AddCNAME points name at target.
func (s *Server) AddCNAME(name, target string) {
	s.addRR(&dns.CNAME{Hdr: hdr(name, dns.TypeCNAME), Target: dns.Fqdn(target)})
}

// AddTXT adds one TXT record; strings longer than 255 bytes are split
// into several character-strings, as a DKIM key record must be.
func (s *Server) AddTXT(name, txt string) {
	var parts []string
	for len(txt) > 255 {
		parts = append(parts, txt[:255])
		txt = txt[255:]
	}
	parts = append(parts, txt)
	s.addRR(&dns.TXT{Hdr: hdr(name, dns.TypeTXT), Txt: parts})
}

// AddPTR adds the reverse record of ip (in-addr.arpa or ip6.arpa) naming host.
func (s *Server) AddPTR(ip, host string) error {
	rev, err := dns.ReverseAddr(ip)
	if err != nil {
		return fmt.Errorf("fakedns: PTR for %q: %w", ip, err)
	}
	s.addRR(&dns.PTR{Hdr: hdr(rev, dns.TypePTR), Ptr: dns.Fqdn(host)})
	return nil
}

// SetRcode answers every query for name with rcode, e.g.
// dns.RcodeServerFailure or dns.RcodeNameError; 0 clears it.
func (s *Server) SetRcode(name string, rcode int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if rcode == 0 {
		delete(s.rcode, dns.CanonicalName(name))
	} else {
		s.rcode[dns.CanonicalName(name)] = rcode
	}
}

// SetServFail makes name answer SERVFAIL.
func (s *Server) SetServFail(name string) { s.SetRcode(name, dns.RcodeServerFailure) }

// SetNXDomain makes name answer NXDOMAIN even if it has records.
func (s *Server) SetNXDomain(name string) { s.SetRcode(name, dns.RcodeNameError) }

// SetTimeout makes the server never answer queries for name (on = false
// answers again).
func (s *Server) SetTimeout(name string, on bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if on {
		s.silent[dns.CanonicalName(name)] = true
	} else {
		delete(s.silent, dns.CanonicalName(name))
	}
}

// Remove deletes every record of name.
func (s *Server) Remove(name string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.rrs, dns.CanonicalName(name))
}

// Queries returns the query log in arrival order.
func (s *Server) Queries() []Query {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Query(nil), s.queries...)
}

// QueryCount counts logged queries for name and type ("" = any type).
func (s *Server) QueryCount(name, typ string) int {
	name = dns.CanonicalName(name)
	n := 0
	for _, q := range s.Queries() {
		if q.Name == name && (typ == "" || q.Type == typ) {
			n++
		}
	}
	return n
}

// ResetQueries empties the query log; zone data is kept.
func (s *Server) ResetQueries() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.queries = nil
}

// Names lists the owner names that have records, sorted (for debugging).
func (s *Server) Names() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []string
	for n := range s.rrs {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

// maxChase bounds CNAME chains (and loops) within our own data.
const maxChase = 8

func (s *Server) serve(w dns.ResponseWriter, req *dns.Msg) {
	if len(req.Question) != 1 {
		m := new(dns.Msg)
		m.SetRcode(req, dns.RcodeFormatError)
		w.WriteMsg(m)
		return
	}
	q := req.Question[0]
	name := dns.CanonicalName(q.Name)
	network := "udp"
	if _, ok := w.RemoteAddr().(*net.TCPAddr); ok {
		network = "tcp"
	}
	s.mu.Lock()
	s.queries = append(s.queries, Query{Name: name, Type: dns.TypeToString[q.Qtype], Net: network, Time: time.Now()})
	silent := s.silent[name]
	rcode, forced := s.rcode[name]
	m := new(dns.Msg)
	m.SetReply(req)
	m.Authoritative = true
	if !forced {
		rcode = s.resolveLocked(m, name, q.Qtype)
	}
	s.mu.Unlock()
	if silent {
		return // the client times out
	}
	m.Rcode = rcode
	if forced {
		m.Answer, m.Ns = nil, nil
		if rcode == dns.RcodeNameError {
			m.Ns = []dns.RR{s.soa(name)}
		}
	}
	if network == "udp" {
		size := dns.MinMsgSize
		if o := req.IsEdns0(); o != nil {
			size = int(o.UDPSize())
		}
		m.Truncate(size)
	}
	w.WriteMsg(m)
}

// resolveLocked fills the answer for name/qtype, chasing CNAMEs inside our
// data, and returns the rcode.
func (s *Server) resolveLocked(m *dns.Msg, name string, qtype uint16) int {
	for i := 0; i < maxChase; i++ {
		rrs, exists := s.rrs[name]
		if !exists {
			if i > 0 {
				return dns.RcodeSuccess // the CNAME target is outside our data
			}
			m.Ns = append(m.Ns, s.soa(name))
			return dns.RcodeNameError
		}
		var cname *dns.CNAME
		found := false
		for _, rr := range rrs {
			t := rr.Header().Rrtype
			if t == qtype || qtype == dns.TypeANY {
				m.Answer = append(m.Answer, dns.Copy(rr))
				found = true
			} else if t == dns.TypeCNAME {
				cname = rr.(*dns.CNAME)
			}
		}
		if found || cname == nil {
			if !found {
				m.Ns = append(m.Ns, s.soa(name))
			}
			return dns.RcodeSuccess
		}
		m.Answer = append(m.Answer, dns.Copy(cname))
		name = dns.CanonicalName(cname.Target)
	}
	m.Answer = nil // a loop, or a chain too long to be real
	return dns.RcodeServerFailure
}

// soa is a synthetic SOA for negative answers, owned by the parent of name.
func (s *Server) soa(name string) dns.RR {
	zone := name
	if labels := dns.SplitDomainName(name); len(labels) > 1 {
		zone = dns.Fqdn(strings.Join(labels[1:], "."))
	}
	return &dns.SOA{
		Hdr: dns.RR_Header{Name: zone, Rrtype: dns.TypeSOA, Class: dns.ClassINET, Ttl: TTL},
		Ns:  "ns.fakedns.test.", Mbox: "hostmaster.fakedns.test.",
		Serial: 1, Refresh: 3600, Retry: 600, Expire: 86400, Minttl: 60,
	}
}
