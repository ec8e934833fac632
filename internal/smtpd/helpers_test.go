package smtpd

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// recQueue records what the server enqueues.
type recQueue struct {
	mu   sync.Mutex
	msgs []queued
	err  error // returned by Enqueue when set
	ch   chan queued
	hold chan struct{} // when set, Enqueue waits for it to close
}

type queued struct {
	env     Envelope
	content []byte
}

func newRecQueue() *recQueue { return &recQueue{ch: make(chan queued, 1000)} }

func (q *recQueue) Enqueue(ctx context.Context, env *Envelope, content []byte) error {
	q.mu.Lock()
	hold, err := q.hold, q.err
	q.mu.Unlock()
	if hold != nil {
		select {
		case <-hold:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	if err != nil {
		return err
	}
	if bad := bareNewline(content); bad >= 0 {
		return fmt.Errorf("test queue: bare CR/LF at %d", bad)
	}
	m := queued{env: *env, content: bytes.Clone(content)}
	q.mu.Lock()
	q.msgs = append(q.msgs, m)
	q.mu.Unlock()
	select {
	case q.ch <- m:
	default:
	}
	return nil
}

func (q *recQueue) all() []queued {
	q.mu.Lock()
	defer q.mu.Unlock()
	return append([]queued(nil), q.msgs...)
}

func (q *recQueue) setErr(err error) {
	q.mu.Lock()
	q.err = err
	q.mu.Unlock()
}

// bareNewline returns the offset of the first CR or LF that is not part of
// a CRLF pair, or -1.
func bareNewline(b []byte) int {
	for i := 0; i < len(b); i++ {
		switch b[i] {
		case '\r':
			if i+1 >= len(b) || b[i+1] != '\n' {
				return i
			}
			i++
		case '\n':
			return i
		}
	}
	return -1
}

// eventLog collects events for assertions.
type eventLog struct {
	mu sync.Mutex
	ev []Event
}

func (l *eventLog) log(e Event) {
	l.mu.Lock()
	l.ev = append(l.ev, e)
	l.mu.Unlock()
}

func (l *eventLog) find(kind EventKind, sub string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, e := range l.ev {
		if e.Kind != kind {
			continue
		}
		s := e.Text
		if e.Err != nil {
			s += " " + e.Err.Error()
		}
		if strings.Contains(s, sub) {
			return true
		}
	}
	return false
}

// baseSettings are quick-timeout settings for tests; local domain
// "local.test", relay from 127.0.0.1 only when relay is set.
func baseSettings(ev *eventLog) Settings {
	return Settings{
		Hostname:       "mx.test",
		Listeners:      []Listener{{Addr: "127.0.0.1:0", Mode: Plain}},
		CommandTimeout: 10 * time.Second,
		DataTimeout:    10 * time.Second,
		ErrorDelay:     time.Millisecond,
		LocalDomain:    func(d string) bool { return d == "local.test" },
		PolicyFor: func(ip netip.Addr, user string) Policy {
			return Policy{AllowStartTLS: true, AddReceived: true, Relay: user != ""}
		},
		Log: ev.log,
	}
}

// startServer listens on the configured (port 0) listeners and serves.
func startServer(t testing.TB, s Settings, q Queue) (*Server, map[string]string) {
	t.Helper()
	srv, err := New(s, q)
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Listen(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve() }()
	t.Cleanup(func() {
		srv.Close()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Serve: %v", err)
			}
		case <-time.After(5 * time.Second):
			t.Errorf("Serve did not return after Close")
		}
	})
	addrs := map[string]string{}
	for k, a := range srv.Addrs() {
		addrs[k] = a.String()
	}
	return srv, addrs
}

// client is a raw SMTP client: it sends exactly the bytes it is given.
type client struct {
	t  testing.TB
	c  net.Conn
	br *bufio.Reader
}

func dial(t testing.TB, addr string) *client {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return wrapClient(t, c)
}

func wrapClient(t testing.TB, c net.Conn) *client {
	c.SetDeadline(time.Now().Add(20 * time.Second))
	return &client{t: t, c: c, br: bufio.NewReader(c)}
}

// reply reads one (possibly multi-line) reply and returns it joined by
// "\n"; "" on EOF.
func (c *client) reply() string {
	c.t.Helper()
	var lines []string
	for {
		l, err := c.br.ReadString('\n')
		if err != nil {
			if len(lines) == 0 {
				return ""
			}
			c.t.Fatalf("reading reply after %q: %v", lines, err)
		}
		l = strings.TrimRight(l, "\r\n")
		lines = append(lines, l)
		if len(l) < 4 || l[3] != '-' {
			return strings.Join(lines, "\n")
		}
	}
}

func (c *client) send(s string) {
	c.t.Helper()
	if _, err := c.c.Write([]byte(s)); err != nil {
		c.t.Fatalf("write %q: %v", s, err)
	}
}

// cmd sends one command line and returns the reply.
func (c *client) cmd(line string) string {
	c.t.Helper()
	c.send(line + "\r\n")
	return c.reply()
}

// expect checks that reply starts with prefix.
func (c *client) expect(line, prefix string) string {
	c.t.Helper()
	var r string
	if line == "" {
		r = c.reply()
	} else {
		r = c.cmd(line)
	}
	if !strings.HasPrefix(r, prefix) {
		c.t.Fatalf("%q: got %q, want prefix %q", line, r, prefix)
	}
	return r
}

// pipeConn is one end of a net.Pipe that claims a chosen remote address,
// to test clients that are not on loopback.
type pipeConn struct {
	net.Conn
	remote net.Addr
}

func (p pipeConn) RemoteAddr() net.Addr { return p.remote }

// Deadlines on a net.Pipe fail once the other end is closed; on TCP a
// peer's close does not stop us from reading what it sent first.
func (p pipeConn) SetDeadline(t time.Time) error      { p.Conn.SetDeadline(t); return nil }
func (p pipeConn) SetReadDeadline(t time.Time) error  { p.Conn.SetReadDeadline(t); return nil }
func (p pipeConn) SetWriteDeadline(t time.Time) error { p.Conn.SetWriteDeadline(t); return nil }

// pipeDial hands the server a connection from ip on a listener of the
// given mode and returns the client's end.
func pipeDial(t testing.TB, srv *Server, ip string, mode Mode) net.Conn {
	t.Helper()
	a, b := net.Pipe()
	remote := &net.TCPAddr{IP: net.ParseIP(ip), Port: 40000}
	srv.admit(pipeConn{Conn: a, remote: remote}, "pipe:"+mode.String(), mode)
	t.Cleanup(func() { b.Close() })
	return b
}

// writeCert writes a fresh self-signed certificate for cn.
func writeCert(t testing.TB, dir, cn string) (certFile, keyFile string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		Subject:      pkix.Name{CommonName: cn},
		DNSNames:     []string{cn},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	// Write to temp names and rename, as an operator's tooling would.
	for _, f := range []struct {
		name, typ string
		der       []byte
	}{{certFile, "CERTIFICATE", der}, {keyFile, "EC PRIVATE KEY", kder}} {
		tmp := f.name + ".tmp"
		if err := os.WriteFile(tmp, pem.EncodeToMemory(&pem.Block{Type: f.typ, Bytes: f.der}), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, f.name); err != nil {
			t.Fatal(err)
		}
	}
	return certFile, keyFile
}

// waitFor polls cond for up to 5 s.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
