package smtpd

import (
	"bufio"
	"crypto/tls"
	"encoding/base64"
	"net"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"
)

// startTLS upgrades a raw client after a 220 to STARTTLS.
func (c *client) startTLS() *tls.ConnectionState {
	c.t.Helper()
	c.expect("STARTTLS", "220 ")
	tc := tls.Client(c.c, &tls.Config{InsecureSkipVerify: true, ServerName: "mx.test"})
	if err := tc.Handshake(); err != nil {
		c.t.Fatalf("handshake: %v", err)
	}
	c.c, c.br = tc, bufio.NewReader(tc)
	st := tc.ConnectionState()
	return &st
}

func plainIR(user, pass string) string {
	return base64.StdEncoding.EncodeToString([]byte("\x00" + user + "\x00" + pass))
}

func tlsSettings(t *testing.T, ev *eventLog) Settings {
	s := baseSettings(ev)
	s.CertFile, s.KeyFile = writeCert(t, t.TempDir(), "mx.test")
	s.CheckPassword = func(u, p string) bool { return u == "alice" && p == "secret" }
	return s
}

func TestStartTLSAndAuth(t *testing.T) {
	q := newRecQueue()
	srv, err := New(tlsSettings(t, &eventLog{}), q)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })

	c := wrapClient(t, pipeDial(t, srv, "192.0.2.7", Plain))
	c.expect("", "220")
	ehlo := c.expect("EHLO c.test", "250")
	if !strings.Contains(ehlo, "STARTTLS") || strings.Contains(ehlo, "AUTH") {
		t.Fatalf("plain-text EHLO from a stranger: %q", ehlo)
	}
	c.expect("AUTH PLAIN "+plainIR("alice", "secret"), "538 5.7.11")
	st := c.startTLS()
	if st.Version < tls.VersionTLS12 {
		t.Errorf("TLS version %x", st.Version)
	}
	ehlo = c.expect("EHLO c.test", "250")
	if strings.Contains(ehlo, "STARTTLS") || !strings.Contains(ehlo, "AUTH PLAIN LOGIN") {
		t.Fatalf("EHLO under TLS: %q", ehlo)
	}
	c.expect("MAIL FROM:<a@b.test>", "250")
	c.expect("RCPT TO:<u@other.test>", "554 5.7.1")
	c.expect("RSET", "250")
	c.expect("AUTH PLAIN "+plainIR("alice", "wrong"), "535 5.7.8")
	c.expect("AUTH PLAIN "+plainIR("alice", "secret"), "235 ")
	c.expect("MAIL FROM:<a@b.test>", "250")
	c.expect("RCPT TO:<u@other.test>", "250")
	c.expect("DATA", "354")
	c.expect("Subject: x\r\n\r\nb\r\n.", "250")
	env := q.all()[0].env
	if env.Proto != "ESMTPSA" || env.AuthUser != "alice" || env.TLS == nil || env.ClientIP != netip.MustParseAddr("192.0.2.7") {
		t.Errorf("envelope %+v", env)
	}
	if content := string(q.all()[0].content); !strings.Contains(content, "\t(using TLSv1.3 with cipher TLS_") ||
		!strings.Contains(content, "with ESMTPSA id "+env.ID) {
		t.Errorf("Received: %q", content)
	}
}

func TestAuthLoginFromLoopback(t *testing.T) {
	q := newRecQueue()
	_, addrs := startServer(t, tlsSettings(t, &eventLog{}), q)
	c := dial(t, addrs["127.0.0.1:0"])
	c.expect("", "220")
	// Loopback may authenticate without TLS (local scripts).
	if ehlo := c.expect("EHLO c", "250"); !strings.Contains(ehlo, "AUTH PLAIN LOGIN") {
		t.Fatalf("EHLO: %q", ehlo)
	}
	b64 := base64.StdEncoding.EncodeToString
	c.expect("AUTH LOGIN", "334 "+b64([]byte("Username:")))
	c.expect(b64([]byte("alice")), "334 "+b64([]byte("Password:")))
	c.expect(b64([]byte("secret")), "235 ")
	c.expect("AUTH PLAIN", "503") // already authenticated
	c.expect("MAIL FROM:<a@b.test>", "250")
	c.expect("RCPT TO:<u@other.test>", "250")
	c.expect("DATA", "354")
	c.expect("x\r\n.", "250")
	if env := q.all()[0].env; env.Proto != "ESMTPA" {
		t.Errorf("proto %q", env.Proto)
	}
}

func TestStartTLSPolicy(t *testing.T) {
	s := tlsSettings(t, &eventLog{})
	s.PolicyFor = func(ip netip.Addr, _ string) Policy { return Policy{AllowStartTLS: ip.Is6()} }
	srv, err := New(s, newRecQueue())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	for ip, want := range map[string]bool{"192.0.2.7": false, "2001:db8::7": true} {
		c := wrapClient(t, pipeDial(t, srv, ip, Plain))
		c.expect("", "220")
		if ehlo := c.expect("EHLO c", "250"); strings.Contains(ehlo, "STARTTLS") != want {
			t.Errorf("%s: EHLO %q", ip, ehlo)
		}
	}
}

func TestSubmissionRequiresAuth(t *testing.T) {
	q := newRecQueue()
	srv, err := New(tlsSettings(t, &eventLog{}), q)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	c := wrapClient(t, pipeDial(t, srv, "192.0.2.7", Submission))
	c.expect("", "220")
	c.expect("EHLO c", "250")
	c.expect("MAIL FROM:<a@b.test>", "530 5.7.0")
	c.startTLS()
	c.expect("EHLO c", "250")
	c.expect("MAIL FROM:<a@b.test>", "530 5.7.0")
	c.expect("AUTH PLAIN "+plainIR("alice", "secret"), "235")
	c.expect("MAIL FROM:<a@b.test>", "250")
}

func TestImplicitTLS(t *testing.T) {
	s := tlsSettings(t, &eventLog{})
	s.Listeners = []Listener{{Addr: "127.0.0.1:0", Mode: ImplicitTLS}}
	q := newRecQueue()
	_, addrs := startServer(t, s, q)
	tc, err := tls.Dial("tcp", addrs["127.0.0.1:0"], &tls.Config{InsecureSkipVerify: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tc.Close() })
	c := wrapClient(t, tc)
	c.expect("", "220")
	if ehlo := c.expect("EHLO c", "250"); strings.Contains(ehlo, "STARTTLS") {
		t.Errorf("STARTTLS offered inside TLS: %q", ehlo)
	}
	c.expect("MAIL FROM:<a@b.test>", "530 5.7.0")
	c.expect("AUTH PLAIN "+plainIR("alice", "secret"), "235")
	c.expect("MAIL FROM:<a@b.test>", "250")
	c.expect("RCPT TO:<x@other.test>", "250")
	c.expect("DATA", "354")
	c.expect("x\r\n.", "250")
	if env := q.all()[0].env; env.Proto != "ESMTPSA" || env.TLS == nil {
		t.Errorf("env %+v", env)
	}

	// Implicit TLS without a certificate is a configuration error.
	s.CertFile, s.KeyFile = "", ""
	if _, err := New(s, q); err == nil {
		t.Errorf("New accepted implicit TLS without a certificate")
	}
}

func TestAuthFailureRate(t *testing.T) {
	s := tlsSettings(t, &eventLog{})
	s.AuthFailureRate = Rate{N: 2, Per: time.Hour}
	_, addrs := startServer(t, s, newRecQueue())
	c := dial(t, addrs["127.0.0.1:0"])
	c.expect("", "220")
	c.expect("EHLO c", "250")
	c.expect("AUTH PLAIN "+plainIR("alice", "x"), "535")
	c.expect("AUTH PLAIN "+plainIR("alice", "y"), "535")
	c.expect("AUTH PLAIN "+plainIR("alice", "z"), "421 4.7.0")
	if r := c.reply(); r != "" {
		t.Errorf("still open: %q", r)
	}
	// The same client, new connection: refused before trying a password.
	c = dial(t, addrs["127.0.0.1:0"])
	c.expect("", "220")
	c.expect("EHLO c", "250")
	c.expect("AUTH PLAIN "+plainIR("alice", "secret"), "421 4.7.0")
}

func TestCertReload(t *testing.T) {
	ev := &eventLog{}
	s := baseSettings(ev)
	dir := t.TempDir()
	s.CertFile, s.KeyFile = writeCert(t, dir, "one.test")
	_, addrs := startServer(t, s, newRecQueue())
	peer := func() string {
		c := dial(t, addrs["127.0.0.1:0"])
		c.expect("", "220")
		c.expect("EHLO c", "250")
		st := c.startTLS()
		return st.PeerCertificates[0].Subject.CommonName
	}
	if cn := peer(); cn != "one.test" {
		t.Fatalf("first cert %q", cn)
	}
	writeCert(t, dir, "two.test")
	future := time.Now().Add(time.Minute)
	os.Chtimes(s.CertFile, future, future)
	if cn := peer(); cn != "two.test" {
		t.Errorf("after rewrite: %q", cn)
	}
	// A broken file keeps the last good pair.
	os.WriteFile(s.KeyFile, []byte("garbage"), 0o600)
	if cn := peer(); cn != "two.test" {
		t.Errorf("after breaking the key: %q", cn)
	}
	if !ev.find(EvError, "keeping the previous certificate") {
		t.Errorf("reload failure not logged")
	}
}

var _ net.Conn = (*sconn)(nil)
