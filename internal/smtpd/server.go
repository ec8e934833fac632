package smtpd

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/emersion/go-smtp"
)

// Server is the inbound SMTP service over all configured listeners.
//
// Connections are accepted here, counted against the limits, and only then
// handed to a go-smtp server through an in-memory listener. There are two
// go-smtp servers per settings generation, one that offers STARTTLS and one
// that does not, because go-smtp decides that per server and sluice decides
// it per client (Policy.AllowStartTLS).
type Server struct {
	q Queue

	gen atomic.Pointer[generation]

	// ctx is cancelled by Close; Enqueue runs under it.
	ctx    context.Context
	cancel context.CancelFunc

	connRate *keyedRate
	authFail *keyedRate

	mu        sync.Mutex
	listeners map[string]*boundListener // by configured address
	conns     map[*sconn]struct{}
	perIP     map[netip.Addr]int
	total     int
	closed    bool
	draining  bool
	serving   bool          // Serve has started the accept loops
	idle      chan struct{} // closed when conns drops to zero while draining

	wg       sync.WaitGroup // accept loops
	serveErr chan error
}

type boundListener struct {
	addr     string // as configured
	l        net.Listener
	started  bool // an accept loop runs (guarded by Server.mu)
	external bool // from ServeListener: not in Settings, kept across Update
}

// generation is one immutable set of Settings with the go-smtp servers
// built from them. Update makes a new one for new sessions; the old one
// serves its sessions to their end.
type generation struct {
	s      Settings
	tlsCfg *tls.Config
	plain  *chanListener // go-smtp server without STARTTLS
	tls    *chanListener // go-smtp server offering STARTTLS (nil without a certificate)
}

const (
	defaultMaxMessageSize = 10240000
	defaultMaxRcpts       = 1000
	defaultMaxReceived    = 50
	defaultMaxLineLength  = 2000
	defaultCommandTimeout = 5 * time.Minute
	defaultDataTimeout    = 10 * time.Minute
	defaultErrorDelay     = time.Second
	defaultSoftErrors     = 10
	defaultHardErrors     = 20
)

// withDefaults fills zero fields and checks the rest.
func withDefaults(s Settings) (Settings, error) {
	if s.Hostname == "" {
		h, err := os.Hostname()
		if err != nil {
			return s, fmt.Errorf("smtpd: no Hostname set and os.Hostname failed: %w", err)
		}
		s.Hostname = h
	}
	if s.MaxMessageSize <= 0 {
		s.MaxMessageSize = defaultMaxMessageSize
	}
	if s.MaxReceived <= 0 {
		s.MaxReceived = defaultMaxReceived
	}
	if s.MaxLineLength <= 0 {
		s.MaxLineLength = defaultMaxLineLength
	}
	if s.CommandTimeout <= 0 {
		s.CommandTimeout = defaultCommandTimeout
	}
	if s.DataTimeout <= 0 {
		s.DataTimeout = defaultDataTimeout
	}
	if s.ErrorDelay <= 0 {
		s.ErrorDelay = defaultErrorDelay
	}
	if s.SoftErrorLimit <= 0 {
		s.SoftErrorLimit = defaultSoftErrors
	}
	if s.HardErrorLimit <= 0 {
		s.HardErrorLimit = defaultHardErrors
	}
	if s.LocalDomain == nil {
		s.LocalDomain = func(string) bool { return false }
	}
	if s.PolicyFor == nil {
		s.PolicyFor = DefaultPolicy
	}
	if (s.CertFile == "") != (s.KeyFile == "") {
		return s, errors.New("smtpd: CertFile and KeyFile must be set together")
	}
	seen := map[string]bool{}
	for _, l := range s.Listeners {
		if _, _, err := net.SplitHostPort(l.Addr); err != nil {
			return s, fmt.Errorf("smtpd: listener %q: %w", l.Addr, err)
		}
		if seen[l.Addr] {
			return s, fmt.Errorf("smtpd: listener %q configured twice", l.Addr)
		}
		seen[l.Addr] = true
		if l.Mode == ImplicitTLS && s.CertFile == "" {
			return s, fmt.Errorf("smtpd: listener %q: implicit TLS needs a certificate", l.Addr)
		}
	}
	return s, nil
}

// DefaultPolicy is used when Settings.PolicyFor is nil: loopback clients
// relay, everyone gets STARTTLS and a Received header.
func DefaultPolicy(ip netip.Addr, authUser string) Policy {
	return Policy{
		Relay:         ip.IsLoopback() || authUser != "",
		AllowStartTLS: true,
		AddReceived:   true,
	}
}

// New checks s and returns a Server that hands accepted messages to q.
// Nothing listens until Listen, ListenAndServe or ServeListener.
func New(s Settings, q Queue) (*Server, error) {
	if q == nil {
		return nil, errors.New("smtpd: nil Queue")
	}
	ctx, cancel := context.WithCancel(context.Background())
	srv := &Server{
		q:         q,
		ctx:       ctx,
		cancel:    cancel,
		connRate:  newKeyedRate(s.ConnRatePerIP),
		authFail:  newKeyedRate(s.AuthFailureRate),
		listeners: map[string]*boundListener{},
		conns:     map[*sconn]struct{}{},
		perIP:     map[netip.Addr]int{},
		serveErr:  make(chan error, 1),
	}
	g, err := srv.newGeneration(s)
	if err != nil {
		cancel()
		return nil, err
	}
	srv.gen.Store(g)
	return srv, nil
}

func (srv *Server) newGeneration(s Settings) (*generation, error) {
	s, err := withDefaults(s)
	if err != nil {
		return nil, err
	}
	g := &generation{s: s}
	if s.CertFile != "" {
		cr, err := newCertReloader(s.CertFile, s.KeyFile, srv.logf)
		if err != nil {
			return nil, err
		}
		g.tlsCfg = &tls.Config{
			MinVersion:     tls.VersionTLS12,
			GetCertificate: cr.get,
		}
	}
	g.plain = srv.startSMTP(g, nil)
	if g.tlsCfg != nil {
		g.tls = srv.startSMTP(g, g.tlsCfg)
	}
	return g, nil
}

// startSMTP runs one go-smtp server fed through an in-memory listener.
func (srv *Server) startSMTP(g *generation, tlsCfg *tls.Config) *chanListener {
	s := smtp.NewServer(&backend{srv: srv, gen: g})
	s.Domain = g.s.Hostname
	s.MaxMessageBytes = g.s.MaxMessageSize
	s.MaxLineLength = g.s.MaxLineLength
	s.ReadTimeout = g.s.CommandTimeout
	s.WriteTimeout = g.s.CommandTimeout
	s.EnableSMTPUTF8 = true
	s.EnableDSN = true
	// AUTH exposure is decided per client in AuthMechanisms/Auth.
	s.AllowInsecureAuth = true
	s.TLSConfig = tlsCfg
	s.ErrorLog = smtpLogger{srv}
	cl := newChanListener()
	go s.Serve(cl) //nolint:errcheck // ends when cl is closed
	return cl
}

// Update applies s to sessions that start from now on. Listeners that were
// added are opened and those removed are closed (once Listen has bound
// the first set); a running Serve picks the new ones up. On any error
// nothing changes.
func (srv *Server) Update(s Settings) error {
	g, err := srv.newGeneration(s)
	if err != nil {
		return err
	}
	srv.mu.Lock()
	if srv.closed || srv.draining {
		srv.mu.Unlock()
		g.stop()
		return errors.New("smtpd: server is closed")
	}
	bound := len(srv.listeners) > 0
	var opened []*boundListener
	if bound {
		for _, l := range g.s.Listeners {
			if _, ok := srv.listeners[l.Addr]; ok {
				continue
			}
			nl, err := net.Listen("tcp", l.Addr)
			if err != nil {
				for _, o := range opened {
					o.l.Close()
				}
				srv.mu.Unlock()
				g.stop()
				return fmt.Errorf("smtpd: listen %s: %w", l.Addr, err)
			}
			opened = append(opened, &boundListener{addr: l.Addr, l: nl})
		}
		for addr, bl := range srv.listeners {
			if !bl.external && !slices.ContainsFunc(g.s.Listeners, func(l Listener) bool { return l.Addr == addr }) {
				bl.l.Close()
				delete(srv.listeners, addr)
			}
		}
	}
	srv.connRate.setRate(g.s.ConnRatePerIP)
	srv.authFail.setRate(g.s.AuthFailureRate)
	old := srv.gen.Swap(g)
	for _, bl := range opened {
		srv.listeners[bl.addr] = bl
		if srv.serving {
			bl.started = true
			srv.wg.Add(1)
			go srv.acceptLoop(bl)
		}
	}
	srv.mu.Unlock()
	// The old go-smtp servers stop accepting; their sessions run on.
	old.stop()
	return nil
}

func (g *generation) stop() {
	g.plain.Close()
	if g.tls != nil {
		g.tls.Close()
	}
}

// Listen binds every configured listener. Addrs then reports them.
func (srv *Server) Listen() error {
	g := srv.gen.Load()
	var bound []*boundListener
	for _, l := range g.s.Listeners {
		nl, err := net.Listen("tcp", l.Addr)
		if err != nil {
			for _, b := range bound {
				b.l.Close()
			}
			return fmt.Errorf("smtpd: listen %s: %w", l.Addr, err)
		}
		bound = append(bound, &boundListener{addr: l.Addr, l: nl})
	}
	srv.mu.Lock()
	defer srv.mu.Unlock()
	if srv.closed {
		for _, b := range bound {
			b.l.Close()
		}
		return errors.New("smtpd: server is closed")
	}
	for _, b := range bound {
		if old, ok := srv.listeners[b.addr]; ok {
			old.l.Close()
		}
		srv.listeners[b.addr] = b
	}
	return nil
}

// Addrs returns the bound address of each listener, keyed by the configured
// address (useful with port 0).
func (srv *Server) Addrs() map[string]net.Addr {
	srv.mu.Lock()
	defer srv.mu.Unlock()
	m := make(map[string]net.Addr, len(srv.listeners))
	for a, bl := range srv.listeners {
		m[a] = bl.l.Addr()
	}
	return m
}

// Serve accepts on the listeners bound by Listen until Close or Shutdown,
// then returns nil; an accept failure that is not temporary is returned.
func (srv *Server) Serve() error {
	srv.mu.Lock()
	if len(srv.listeners) == 0 {
		srv.mu.Unlock()
		return errors.New("smtpd: Serve before Listen (or no listeners configured)")
	}
	srv.serving = true
	for _, bl := range srv.listeners {
		if !bl.started {
			bl.started = true
			srv.wg.Add(1)
			go srv.acceptLoop(bl)
		}
	}
	srv.mu.Unlock()
	srv.wg.Wait()
	select {
	case err := <-srv.serveErr:
		return err
	default:
		return nil
	}
}

// ListenAndServe is Listen followed by Serve.
func (srv *Server) ListenAndServe() error {
	if err := srv.Listen(); err != nil {
		return err
	}
	return srv.Serve()
}

// ServeListener serves one already-open listener (socket activation,
// tests) in the given mode until it is closed; it blocks.
func (srv *Server) ServeListener(l net.Listener, mode Mode) error {
	addr := l.Addr().String()
	g := srv.gen.Load()
	if mode == ImplicitTLS && g.tlsCfg == nil {
		return fmt.Errorf("smtpd: listener %s: implicit TLS needs a certificate", addr)
	}
	bl := &boundListener{addr: addr, l: l, started: true, external: true}
	srv.mu.Lock()
	if srv.closed || srv.draining {
		srv.mu.Unlock()
		return errors.New("smtpd: server is closed")
	}
	srv.listeners[addr] = bl
	srv.wg.Add(1)
	srv.mu.Unlock()
	srv.acceptLoopMode(bl, &mode)
	select {
	case err := <-srv.serveErr:
		return err
	default:
		return nil
	}
}

func (srv *Server) acceptLoop(bl *boundListener) { srv.acceptLoopMode(bl, nil) }

func (srv *Server) acceptLoopMode(bl *boundListener, fixed *Mode) {
	defer srv.wg.Done()
	var delay time.Duration
	for {
		nc, err := bl.l.Accept()
		if err != nil {
			srv.mu.Lock()
			stopping := srv.closed || srv.draining || srv.listeners[bl.addr] != bl
			srv.mu.Unlock()
			if stopping || errors.Is(err, net.ErrClosed) {
				return
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() || isTemporary(err) {
				delay = min(max(2*delay, 5*time.Millisecond), time.Second)
				srv.logf("accept on %s: %v; retrying in %v", bl.addr, err, delay)
				time.Sleep(delay)
				continue
			}
			select {
			case srv.serveErr <- fmt.Errorf("smtpd: accept on %s: %w", bl.addr, err):
			default:
			}
			return
		}
		delay = 0
		g := srv.gen.Load()
		mode := Plain
		if fixed != nil {
			mode = *fixed
		} else if i := slices.IndexFunc(g.s.Listeners, func(l Listener) bool { return l.Addr == bl.addr }); i >= 0 {
			mode = g.s.Listeners[i].Mode
		}
		srv.admit(nc, bl.addr, mode)
	}
}

func isTemporary(err error) bool {
	t, ok := err.(interface{ Temporary() bool })
	return ok && t.Temporary()
}

// admit applies the connection limits to a new connection and hands it to
// go-smtp, or answers 421/554 and closes it.
func (srv *Server) admit(nc net.Conn, listener string, mode Mode) {
	ap := addrPort(nc.RemoteAddr())
	ip := ap.Addr()
	g := srv.gen.Load()
	now := time.Now()
	pol := g.s.PolicyFor(ip, "")

	srv.mu.Lock()
	var reply string
	switch {
	case srv.closed || srv.draining:
		reply = "421 4.3.2 " + g.s.Hostname + " Service shutting down"
	case pol.Refuse:
		reply = "554 5.7.1 " + g.s.Hostname + " Service unavailable; client [" + ip.String() + "] blocked"
	case !srv.connRate.allow(ip, now):
		reply = "421 4.7.0 " + g.s.Hostname + " Error: too many connections from " + ip.String()
	case g.s.TotalMaxIn > 0 && srv.total >= g.s.TotalMaxIn:
		reply = "421 4.7.0 " + g.s.Hostname + " Error: too many connections, try again later"
	case g.s.MaxPerIP > 0 && srv.perIP[ip] >= g.s.MaxPerIP:
		reply = "421 4.7.0 " + g.s.Hostname + " Error: too many connections from " + ip.String()
	}
	if reply != "" {
		srv.mu.Unlock()
		srv.log(Event{Kind: EvReject, Listener: listener, Client: ap, Command: "CONNECT", Code: replyCode(reply), Text: reply[4:]})
		if mode == ImplicitTLS {
			// The client expects a TLS handshake, not a plain-text reply;
			// a handshake just to say 421 is not worth the CPU.
			nc.Close()
			return
		}
		// Written off the accept loop so a client that does not read
		// cannot stall accepting.
		go func() {
			nc.SetWriteDeadline(time.Now().Add(5 * time.Second))
			nc.Write([]byte(reply + "\r\n"))
			nc.Close()
		}()
		return
	}
	sc := &sconn{Conn: nc, srv: srv, ap: ap, listener: listener, mode: mode, policy: pol}
	srv.conns[sc] = struct{}{}
	srv.total++
	srv.perIP[ip]++
	srv.mu.Unlock()
	srv.log(Event{Kind: EvConnect, Listener: listener, Client: ap})

	var c net.Conn = sc
	target := g.plain
	switch {
	case mode == ImplicitTLS:
		c = tls.Server(sc, g.tlsCfg)
	case g.tls != nil && pol.AllowStartTLS:
		target = g.tls
	}
	if !target.deliver(c) {
		// The generation was retired between Load and deliver: retry on
		// the current one.
		g2 := srv.gen.Load()
		target = g2.plain
		if mode != ImplicitTLS && g2.tls != nil && pol.AllowStartTLS {
			target = g2.tls
		}
		if !target.deliver(c) {
			sc.Close()
		}
	}
}

func replyCode(reply string) int {
	var code int
	fmt.Sscanf(reply, "%d", &code)
	return code
}

func addrPort(a net.Addr) netip.AddrPort {
	switch a := a.(type) {
	case *net.TCPAddr:
		ap := a.AddrPort()
		return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
	case nil:
		return netip.AddrPort{}
	}
	ap, err := netip.ParseAddrPort(a.String())
	if err != nil {
		return netip.AddrPort{}
	}
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
}

// live reports whether a connection from a is open.
func (srv *Server) live(a net.Addr) bool {
	ap := addrPort(a)
	srv.mu.Lock()
	defer srv.mu.Unlock()
	for sc := range srv.conns {
		if sc.ap == ap {
			return true
		}
	}
	return false
}

// release is called once when a connection closes.
func (srv *Server) release(sc *sconn) {
	srv.mu.Lock()
	delete(srv.conns, sc)
	srv.total--
	ip := sc.ap.Addr()
	if srv.perIP[ip] <= 1 {
		delete(srv.perIP, ip)
	} else {
		srv.perIP[ip]--
	}
	if srv.draining && len(srv.conns) == 0 && srv.idle != nil {
		close(srv.idle)
		srv.idle = nil
	}
	srv.mu.Unlock()
	srv.log(Event{Kind: EvDisconnect, Listener: sc.listener, Client: sc.ap})
}

// Close closes the listeners and every connection at once; an Enqueue in
// progress sees its context cancelled and the client gets no 250.
func (srv *Server) Close() error {
	srv.mu.Lock()
	if srv.closed {
		srv.mu.Unlock()
		return nil
	}
	srv.closed = true
	var err error
	for _, bl := range srv.listeners {
		if e := bl.l.Close(); e != nil && !errors.Is(e, net.ErrClosed) && err == nil {
			err = fmt.Errorf("smtpd: close %s: %w", bl.addr, e)
		}
	}
	conns := make([]*sconn, 0, len(srv.conns))
	for sc := range srv.conns {
		conns = append(conns, sc)
	}
	srv.mu.Unlock()
	srv.cancel()
	for _, sc := range conns {
		sc.Close()
	}
	srv.gen.Load().stop()
	srv.wg.Wait()
	return err
}

// Shutdown stops accepting, lets every message in progress finish (idle
// sessions are told 421 at their next command), and returns when all
// sessions have ended. If ctx ends first it closes what is left and returns
// ctx's error.
func (srv *Server) Shutdown(ctx context.Context) error {
	srv.mu.Lock()
	if srv.closed {
		srv.mu.Unlock()
		return nil
	}
	srv.draining = true
	for _, bl := range srv.listeners {
		bl.l.Close()
	}
	idle := make(chan struct{})
	if len(srv.conns) == 0 {
		close(idle)
	} else {
		srv.idle = idle
	}
	conns := make([]*sconn, 0, len(srv.conns))
	for sc := range srv.conns {
		conns = append(conns, sc)
	}
	srv.mu.Unlock()
	for _, sc := range conns {
		sc.startDrain()
	}
	select {
	case <-idle:
		srv.Close()
		return nil
	case <-ctx.Done():
		srv.Close()
		return ctx.Err()
	}
}

func (srv *Server) log(e Event) {
	g := srv.gen.Load()
	if g == nil || g.s.Log == nil {
		return
	}
	if e.Time.IsZero() {
		e.Time = time.Now()
	}
	g.s.Log(e)
}

func (srv *Server) logf(format string, args ...any) {
	srv.log(Event{Kind: EvError, Err: fmt.Errorf(format, args...)})
}

// smtpLogger routes go-smtp's internal error log into our events.
type smtpLogger struct{ srv *Server }

func (l smtpLogger) Printf(format string, v ...any) {
	// go-smtp v0.25.1 closes a connection after too many bad commands but
	// goes on with commands already buffered; the next MAIL/RCPT/DATA then
	// calls a nil Session and its recover logs a panic with a stack. That
	// is harmless (the connection is gone) but lets any client fill the log
	// with stacks, so a panic on a connection we already released is logged
	// as one short line. A panic on a live connection is logged in full.
	if strings.HasPrefix(format, "panic serving") && len(v) > 0 {
		if a, ok := v[0].(net.Addr); ok && !l.srv.live(a) {
			var why any
			if len(v) > 1 {
				why = v[1]
			}
			l.srv.logf("smtp: go-smtp used a session after closing %v (upstream bug, harmless): %v", a, why)
			return
		}
	}
	l.srv.logf("smtp: "+format, v...)
}

func (l smtpLogger) Println(v ...any) {
	l.srv.logf("smtp: %s", fmt.Sprintln(v...))
}

// chanListener is the in-memory listener a go-smtp server accepts from.
type chanListener struct {
	ch   chan net.Conn
	done chan struct{}
	once sync.Once
}

func newChanListener() *chanListener {
	return &chanListener{ch: make(chan net.Conn), done: make(chan struct{})}
}

func (l *chanListener) deliver(c net.Conn) bool {
	select {
	case l.ch <- c:
		return true
	case <-l.done:
		return false
	}
}

func (l *chanListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.ch:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

func (l *chanListener) Close() error {
	l.once.Do(func() { close(l.done) })
	return nil
}

func (l *chanListener) Addr() net.Addr { return &net.TCPAddr{} }
