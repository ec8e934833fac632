package vmta

// A minimal recording SMTP server for these tests, scripted per stage and
// per recipient. (internal/testutil/smtpsink was not committed when this
// package was written; this one is small enough to keep.)

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"math/big"
	"net"
	"net/netip"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/sluicemta/sluice/internal/resolve"
)

type sinkConfig struct {
	Greeting string   // default "220 sink.test ESMTP"
	NoEHLO   bool     // refuse EHLO (HELO fallback)
	Ext      []string // EHLO keywords; nil = defaultExt
	TLS      *tls.Config
	// BadTLS answers STARTTLS with 220 and then garbage instead of a handshake.
	BadTLS bool
	// Rcpt returns the reply to RCPT TO for addr ("" = 250).
	Rcpt     func(addr string) string
	MaxRcpts int    // recipients per transaction; beyond: 452 4.5.3
	Mail     string // reply to MAIL ("" = 250)
	Data     string // reply to DATA ("" = 354)
	Dot      string // reply after the dot ("" = 250)
	// Hang: after the greeting, read commands but never answer.
	Hang bool
	// CloseAfterGreeting drops the connection right after the greeting.
	CloseAfterGreeting bool
	// NoRecord keeps no transactions (benchmarks).
	NoRecord bool
	// Rset is the reply to RSET ("" = 250).
	Rset string
	// Data354Always answers DATA with 354 even without a valid recipient
	// (a broken server; RFC 2920 3.1 has the client send an empty message).
	Data354Always bool
}

var defaultExt = []string{"PIPELINING", "SIZE 10240000", "8BITMIME", "SMTPUTF8", "DSN", "ENHANCEDSTATUSCODES"}

type sinkTxn struct {
	Conn      int
	MailLine  string
	RcptLines []string
	Rcpts     []string // accepted
	Raw       []byte   // DATA as on the wire, without the final dot line
	TLS       bool
	Resumed   bool // the TLS session was resumed
	// Pipelined: when MAIL was read, DATA was already waiting in the buffer.
	Pipelined bool
}

type sink struct {
	t   testing.TB
	ln  net.Listener
	cfg sinkConfig

	mu     sync.Mutex
	conns  int
	txns   []sinkTxn
	rsets  int
	quits  int
	active map[net.Conn]bool
	wg     sync.WaitGroup
}

func newSink(t testing.TB, cfg sinkConfig) *sink {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &sink{t: t, ln: ln, cfg: cfg, active: map[net.Conn]bool{}}
	s.wg.Add(1)
	go s.accept()
	t.Cleanup(s.close)
	return s
}

func (s *sink) port() int { return s.ln.Addr().(*net.TCPAddr).Port }

func (s *sink) addrPort() netip.AddrPort { return s.ln.Addr().(*net.TCPAddr).AddrPort() }

func (s *sink) close() {
	s.ln.Close()
	s.mu.Lock()
	for c := range s.active {
		c.Close()
	}
	s.mu.Unlock()
	s.wg.Wait()
}

// dropAll closes every open connection (the server timing out idle clients).
func (s *sink) dropAll() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for c := range s.active {
		c.Close()
	}
}

func (s *sink) stats() (conns int, txns []sinkTxn, rsets, quits int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.conns, append([]sinkTxn(nil), s.txns...), s.rsets, s.quits
}

func (s *sink) accept() {
	defer s.wg.Done()
	for {
		c, err := s.ln.Accept()
		if err != nil {
			return
		}
		s.mu.Lock()
		s.conns++
		n := s.conns
		s.active[c] = true
		s.mu.Unlock()
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			s.serve(c, n)
			c.Close()
			s.mu.Lock()
			delete(s.active, c)
			s.mu.Unlock()
		}()
	}
}

func or(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

// update changes the script while clients are connected.
func (s *sink) update(f func(*sinkConfig)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	f(&s.cfg)
}

func (s *sink) config() sinkConfig {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cfg
}

func (s *sink) serve(nc net.Conn, n int) {
	cfg := s.config()
	r := bufio.NewReader(nc)
	w := bufio.NewWriter(nc)
	reply := func(line string) bool {
		w.WriteString(line + "\r\n")
		return w.Flush() == nil
	}
	if !reply(or(cfg.Greeting, "220 sink.test ESMTP")) {
		return
	}
	if cfg.CloseAfterGreeting {
		return
	}
	if strings.HasPrefix(or(cfg.Greeting, "220"), "4") || strings.HasPrefix(cfg.Greeting, "5") {
		// Keep reading until QUIT like a real server would.
		for {
			l, err := r.ReadString('\n')
			if err != nil {
				return
			}
			if strings.HasPrefix(strings.ToUpper(l), "QUIT") {
				reply("221 bye")
				return
			}
			reply("503 5.5.1 no service")
		}
	}
	ext := cfg.Ext
	if ext == nil {
		ext = defaultExt
	}
	if cfg.TLS != nil || cfg.BadTLS {
		ext = append(append([]string(nil), ext...), "STARTTLS")
	}
	var cur *sinkTxn
	inTLS, resumed := false, false
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			return
		}
		if cfg.Hang {
			continue
		}
		cfg = s.config()
		line = strings.TrimRight(line, "\r\n")
		verb := strings.ToUpper(line)
		switch {
		case strings.HasPrefix(verb, "EHLO"):
			if cfg.NoEHLO {
				reply("502 5.5.2 EHLO not implemented")
				continue
			}
			lines := append([]string{"sink.test"}, ext...)
			if inTLS {
				lines = slicesDelete(lines, "STARTTLS")
			}
			for i, l := range lines {
				sep := "-"
				if i == len(lines)-1 {
					sep = " "
				}
				w.WriteString("250" + sep + l + "\r\n")
			}
			if w.Flush() != nil {
				return
			}
		case strings.HasPrefix(verb, "HELO"):
			reply("250 sink.test")
		case verb == "STARTTLS":
			reply("220 2.0.0 go ahead")
			if cfg.BadTLS {
				nc.Write([]byte("this is not TLS\r\n"))
				return
			}
			tc := tls.Server(nc, cfg.TLS)
			tc.SetDeadline(time.Now().Add(5 * time.Second))
			if err := tc.Handshake(); err != nil {
				return
			}
			tc.SetDeadline(time.Time{})
			nc = tc
			r = bufio.NewReader(tc)
			w = bufio.NewWriter(tc)
			inTLS = true
			resumed = tc.ConnectionState().DidResume
		case strings.HasPrefix(verb, "MAIL FROM:"):
			b, _ := r.Peek(r.Buffered())
			cur = &sinkTxn{Conn: n, MailLine: line, TLS: inTLS, Resumed: resumed, Pipelined: bytes.Contains(b, []byte("DATA\r\n"))}
			rep := or(cfg.Mail, "250 2.1.0 ok")
			if !strings.HasPrefix(rep, "2") {
				cur = nil
			}
			reply(rep)
		case strings.HasPrefix(verb, "RCPT TO:"):
			if cur == nil {
				reply("503 5.5.1 need MAIL")
				continue
			}
			cur.RcptLines = append(cur.RcptLines, line)
			addr := line[len("RCPT TO:<"):]
			addr = addr[:strings.IndexByte(addr, '>')]
			rep := "250 2.1.5 ok"
			if cfg.Rcpt != nil {
				rep = or(cfg.Rcpt(addr), rep)
			}
			if cfg.MaxRcpts > 0 && len(cur.Rcpts) >= cfg.MaxRcpts {
				rep = "452 4.5.3 Error: too many recipients"
			}
			if strings.HasPrefix(rep, "2") {
				cur.Rcpts = append(cur.Rcpts, addr)
			}
			reply(rep)
			if strings.HasPrefix(rep, "421") {
				return
			}
		case verb == "DATA":
			if (cur == nil || len(cur.Rcpts) == 0) && !cfg.Data354Always {
				reply("554 5.5.1 no valid recipients")
				continue
			}
			if cur == nil || len(cur.Rcpts) == 0 {
				reply("354 go ahead")
				for {
					l, err := r.ReadString('\n')
					if err != nil {
						return
					}
					if l == ".\r\n" {
						break
					}
				}
				reply("554 5.5.1 no valid recipients")
				continue
			}
			rep := or(cfg.Data, "354 go ahead")
			reply(rep)
			if !strings.HasPrefix(rep, "354") {
				cur = nil
				continue
			}
			var raw []byte
			for {
				l, err := r.ReadString('\n')
				if err != nil {
					return
				}
				if l == ".\r\n" {
					break
				}
				raw = append(raw, l...)
			}
			cur.Raw = raw
			rep = or(cfg.Dot, "250 2.0.0 queued as SINK")
			if strings.HasPrefix(rep, "2") && !cfg.NoRecord {
				s.mu.Lock()
				s.txns = append(s.txns, *cur)
				s.mu.Unlock()
			}
			cur = nil
			reply(rep)
		case verb == "RSET":
			s.mu.Lock()
			s.rsets++
			s.mu.Unlock()
			cur = nil
			rep := or(cfg.Rset, "250 2.0.0 ok")
			reply(rep)
			if strings.HasPrefix(rep, "421") {
				return
			}
		case verb == "QUIT":
			s.mu.Lock()
			s.quits++
			s.mu.Unlock()
			reply("221 2.0.0 bye")
			return
		default:
			reply("502 5.5.2 unknown command")
		}
	}
}

func slicesDelete(list []string, v string) []string {
	var out []string
	for _, x := range list {
		if x != v {
			out = append(out, x)
		}
	}
	return out
}

// testCert returns a server TLS config for name and the pool that trusts it.
func testCert(t testing.TB, name string) (*tls.Config, *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: name},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
		DNSNames:              []string{name},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(leaf)
	return &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}}}, pool
}

// fakeResolver answers from maps; missing names are NXDOMAIN.
type fakeResolver struct {
	mu    sync.Mutex
	mx    map[string][]resolve.MX
	mxErr map[string]error
	addrs map[string][]netip.Addr
}

func (f *fakeResolver) MX(ctx context.Context, domain string) ([]resolve.MX, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err, ok := f.mxErr[domain]; ok {
		return nil, fmt.Errorf("fake: %s MX: %w", domain, err)
	}
	if mx, ok := f.mx[domain]; ok {
		return append([]resolve.MX(nil), mx...), nil
	}
	if _, ok := f.addrs[domain]; ok {
		return nil, fmt.Errorf("fake: %s MX: %w", domain, resolve.ErrNoMX)
	}
	return nil, fmt.Errorf("fake: %s MX: %w", domain, resolve.ErrNXDomain)
}

func (f *fakeResolver) Addrs(ctx context.Context, host string) ([]netip.Addr, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if a, ok := f.addrs[host]; ok {
		if len(a) == 0 {
			return nil, fmt.Errorf("fake: %s A: %w", host, resolve.ErrNoAddrs)
		}
		return a, nil
	}
	return nil, fmt.Errorf("fake: %s A: %w", host, resolve.ErrNXDomain)
}

// mapDial dials the sink registered for an address (so several "hosts" on
// the same port can be told apart) and counts writes per connection.
type mapDial struct {
	mu     sync.Mutex
	to     map[netip.Addr]netip.AddrPort // nil: dial the address as is
	dialed []netip.AddrPort
	conns  []*countConn
}

type countConn struct {
	net.Conn
	mu     sync.Mutex
	writes int
}

func (c *countConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	c.writes++
	c.mu.Unlock()
	return c.Conn.Write(p)
}

func (c *countConn) Writes() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.writes
}

func (m *mapDial) dial(ctx context.Context, laddr netip.Addr, raddr netip.AddrPort) (net.Conn, error) {
	m.mu.Lock()
	m.dialed = append(m.dialed, raddr)
	target, ok := m.to[raddr.Addr()]
	m.mu.Unlock()
	if !ok {
		if m.to != nil {
			return nil, fmt.Errorf("dial tcp %s: connect: %w", raddr, errRefused)
		}
		target = raddr
	}
	var d net.Dialer
	nc, err := d.DialContext(ctx, "tcp", target.String())
	if err != nil {
		return nil, err
	}
	cc := &countConn{Conn: nc}
	m.mu.Lock()
	m.conns = append(m.conns, cc)
	m.mu.Unlock()
	return cc, nil
}

func (m *mapDial) Dialed() []netip.AddrPort {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]netip.AddrPort(nil), m.dialed...)
}

var errRefused = syscall.ECONNREFUSED
