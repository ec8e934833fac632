package smtpsink

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"strconv"
	"sync"
	"testing"
	"time"
)

// TLSInfo is what the sink saw of a STARTTLS session.
type TLSInfo struct {
	Version     uint16
	CipherSuite uint16
	ServerName  string // SNI sent by the client
}

// VersionName is the protocol name, e.g. "TLSv1.3".
func (t *TLSInfo) VersionName() string {
	if t == nil {
		return ""
	}
	return tls.VersionName(t.Version)
}

// Rcpt is one RCPT TO command and the sink's answer to it.
type Rcpt struct {
	Addr   string   // without angle brackets
	Params []string // ESMTP parameters as sent, e.g. "NOTIFY=FAILURE"
	Reply  string
}

// Accepted reports whether the sink answered 2xx.
func (r Rcpt) Accepted() bool { return len(r.Reply) > 0 && r.Reply[0] == '2' }

// Message is one transaction that reached the end of its content.
type Message struct {
	ID         string // the sink's own queue id, in the 250 reply
	Conn       int    // connection id
	PeerIP     string
	LocalAddr  string
	Helo       string // EHLO/HELO argument
	ESMTP      bool   // EHLO rather than HELO
	TLS        *TLSInfo
	AuthUser   string
	From       string   // reverse path without brackets; "" for the null sender
	FromParams []string // e.g. "BODY=8BITMIME", "SIZE=1234"
	Rcpts      []Rcpt   // every RCPT, accepted or not
	Data       []byte   // content: DATA after dot-unstuffing, or BDAT chunks joined
	Raw        []byte   // DATA content as on the wire (stuffed), nil for BDAT
	Bdat       bool     // content came by BDAT
	Chunks     int      // number of BDAT chunks
	BareLF     bool     // a DATA line ended in LF without CR
	MessageID  string   // Message-ID header, brackets kept; "" if none
	Reply      string   // reply after the content
	Arrived    time.Time
}

// Accepted reports whether the content was answered 2xx.
func (m *Message) Accepted() bool { return len(m.Reply) > 0 && m.Reply[0] == '2' }

// Recipients lists the accepted recipient addresses.
func (m *Message) Recipients() []string {
	var out []string
	for _, r := range m.Rcpts {
		if r.Accepted() {
			out = append(out, r.Addr)
		}
	}
	return out
}

func (m *Message) clone() Message {
	c := *m
	c.FromParams = append([]string(nil), m.FromParams...)
	c.Rcpts = append([]Rcpt(nil), m.Rcpts...)
	for i := range c.Rcpts {
		c.Rcpts[i].Params = append([]string(nil), m.Rcpts[i].Params...)
	}
	if m.TLS != nil {
		t := *m.TLS
		c.TLS = &t
	}
	return c
}

// Conn is one client connection.
type Conn struct {
	ID         int
	PeerIP     string
	LocalAddr  string
	Helo       string
	TLS        *TLSInfo
	AuthUser   string
	Start, End time.Time // End is zero while open
	// RoundTrips counts the times the sink flushed replies to commands
	// after reading all the input the client had sent (the greeting is not
	// counted). A pipelining client sending MAIL, RCPT..., DATA in one
	// write costs one round trip for all of them.
	RoundTrips int
	Messages   int      // transactions that reached the end of content
	Log        []string // "C: ..." and "S: ..." lines, content excluded
}

// Sink is a running recording SMTP server.
type Sink struct {
	opts    Options
	ln      net.Listener
	tlsConf *tls.Config
	pool    *x509.CertPool

	wg sync.WaitGroup

	mu      sync.Mutex
	cond    *sync.Cond
	msgs    []*Message
	conns   []*Conn
	open    map[net.Conn]struct{}
	active  int
	peak    int
	nextID  int
	nextMsg int
	replies map[Stage]string
	rcptRep map[string]string
	closed  bool
}

// Start listens and serves until the test ends. It fails the test if the
// address is not loopback or cannot be bound.
func Start(t testing.TB, opts Options) *Sink {
	t.Helper()
	s, err := New(opts)
	if err != nil {
		t.Fatalf("smtpsink: %v", err)
	}
	t.Cleanup(s.Close)
	return s
}

// New starts a sink that the caller must Close; Start is the usual entry.
func New(opts Options) (*Sink, error) {
	if opts.Addr == "" {
		opts.Addr = "127.0.0.1:0"
	}
	if opts.Hostname == "" {
		opts.Hostname = "sink.test"
	}
	if opts.IdleTimeout == 0 {
		opts.IdleTimeout = time.Minute
	}
	host, _, err := net.SplitHostPort(opts.Addr)
	if err != nil {
		return nil, fmt.Errorf("listen address %q: %w", opts.Addr, err)
	}
	if ip := net.ParseIP(host); host != "localhost" && (ip == nil || !ip.IsLoopback()) {
		return nil, fmt.Errorf("listen address %q is not loopback", opts.Addr)
	}
	if opts.ext()&Auth != 0 && opts.AuthUser == "" {
		return nil, errors.New("Auth extension needs Options.AuthUser")
	}
	s := &Sink{
		opts:    opts,
		open:    map[net.Conn]struct{}{},
		replies: map[Stage]string{},
		rcptRep: map[string]string{},
	}
	s.cond = sync.NewCond(&s.mu)
	for k, v := range opts.Replies {
		s.replies[k] = v
	}
	for k, v := range opts.RcptReplies {
		s.rcptRep[normAddr(k)] = v
	}
	if opts.ext()&StartTLS != 0 {
		if opts.TLSConfig != nil {
			s.tlsConf = opts.TLSConfig
		} else {
			cert, pool, err := selfSigned(opts.Hostname)
			if err != nil {
				return nil, fmt.Errorf("generate certificate: %w", err)
			}
			s.tlsConf = &tls.Config{Certificates: []tls.Certificate{cert}}
			s.pool = pool
		}
	}
	ln, err := net.Listen("tcp", opts.Addr)
	if err != nil {
		return nil, fmt.Errorf("listen %s: %w", opts.Addr, err)
	}
	s.ln = ln
	s.wg.Add(1)
	go s.acceptLoop()
	return s, nil
}

// Addr is the listening address, host:port.
func (s *Sink) Addr() string { return s.ln.Addr().String() }

// Port is the listening TCP port.
func (s *Sink) Port() int { return s.ln.Addr().(*net.TCPAddr).Port }

// CertPool holds the generated certificate, for clients that verify it;
// nil when STARTTLS is off or Options.TLSConfig was given.
func (s *Sink) CertPool() *x509.CertPool { return s.pool }

// SetReply changes the scripted reply of a stage from now on ("" restores
// the default), e.g. to make a retry succeed after a 451.
func (s *Sink) SetReply(st Stage, reply string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if reply == "" {
		delete(s.replies, st)
	} else {
		s.replies[st] = reply
	}
}

// SetRcptReply changes the reply for one recipient ("" restores the default).
func (s *Sink) SetRcptReply(addr, reply string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if reply == "" {
		delete(s.rcptRep, normAddr(addr))
	} else {
		s.rcptRep[normAddr(addr)] = reply
	}
}

// Messages returns copies of the transactions whose content was accepted.
func (s *Sink) Messages() []Message {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []Message
	for _, m := range s.msgs {
		if m.Accepted() {
			out = append(out, m.clone())
		}
	}
	return out
}

// Transactions returns copies of every transaction that reached the end of
// its content, accepted or refused.
func (s *Sink) Transactions() []Message {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]Message, 0, len(s.msgs))
	for _, m := range s.msgs {
		out = append(out, m.clone())
	}
	return out
}

// WaitMessages waits until at least n messages were accepted and returns
// them, or returns an error naming what did arrive after timeout.
func (s *Sink) WaitMessages(n int, timeout time.Duration) ([]Message, error) {
	deadline := time.Now().Add(timeout)
	// sync.Cond has no timed wait: a timer broadcasts at the deadline.
	tm := time.AfterFunc(timeout, func() {
		s.mu.Lock()
		s.cond.Broadcast()
		s.mu.Unlock()
	})
	defer tm.Stop()
	s.mu.Lock()
	for {
		got := 0
		for _, m := range s.msgs {
			if m.Accepted() {
				got++
			}
		}
		if got >= n {
			s.mu.Unlock()
			return s.Messages(), nil
		}
		if !time.Now().Before(deadline) || s.closed {
			total := len(s.msgs)
			s.mu.Unlock()
			return s.Messages(), fmt.Errorf("smtpsink: %d of %d messages accepted after %v (%d transactions, %d connections)",
				got, n, timeout, total, len(s.Connections()))
		}
		s.cond.Wait()
	}
}

// Connections returns copies of every connection since start or Reset.
func (s *Sink) Connections() []Conn {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]Conn, 0, len(s.conns))
	for _, c := range s.conns {
		cc := *c
		cc.Log = append([]string(nil), c.Log...)
		if c.TLS != nil {
			t := *c.TLS
			cc.TLS = &t
		}
		out = append(out, cc)
	}
	return out
}

// MaxConcurrent is the peak number of simultaneously open connections. A
// connection counts from accept until the sink sends its final reply (221,
// 421, or a scripted drop) or reads EOF; a client that closes without QUIT
// and reconnects at once may briefly be counted twice.
func (s *Sink) MaxConcurrent() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.peak
}

// Reset forgets recorded messages and connections and sets the concurrency
// peak to the number open now. Scripted replies are kept.
func (s *Sink) Reset() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.msgs = nil
	s.conns = nil
	s.peak = s.active
}

// Close stops listening, drops open connections and waits for them.
func (s *Sink) Close() {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return
	}
	s.closed = true
	s.ln.Close()
	for c := range s.open {
		c.Close()
	}
	s.cond.Broadcast()
	s.mu.Unlock()
	s.wg.Wait()
}

func (s *Sink) acceptLoop() {
	defer s.wg.Done()
	for {
		c, err := s.ln.Accept()
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			return
		}
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			c.Close()
			return
		}
		s.nextID++
		info := &Conn{
			ID:        s.nextID,
			PeerIP:    hostOf(c.RemoteAddr()),
			LocalAddr: c.LocalAddr().String(),
			Start:     time.Now(),
		}
		s.conns = append(s.conns, info)
		s.open[c] = struct{}{}
		s.active++
		if s.active > s.peak {
			s.peak = s.active
		}
		s.wg.Add(1)
		s.mu.Unlock()
		go func() {
			defer s.wg.Done()
			ss := newSession(s, c, info)
			ss.serve()
			ss.leave()
			c.Close()
			s.mu.Lock()
			delete(s.open, c)
			info.End = time.Now()
			s.mu.Unlock()
		}()
	}
}

// record stores a finished transaction and wakes WaitMessages.
func (s *Sink) record(m *Message, info *Conn) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.msgs = append(s.msgs, m)
	info.Messages++
	s.cond.Broadcast()
}

func (s *Sink) newMsgID() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.nextMsg++
	return "S" + strconv.Itoa(s.nextMsg)
}

func hostOf(a net.Addr) string {
	if ta, ok := a.(*net.TCPAddr); ok {
		return ta.IP.String()
	}
	h, _, _ := net.SplitHostPort(a.String())
	return h
}
