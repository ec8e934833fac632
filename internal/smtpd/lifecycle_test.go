package smtpd

import (
	"context"
	"errors"
	"net"
	"strings"
	"testing"
	"time"
)

func TestShutdownGraceful(t *testing.T) {
	ev := &eventLog{}
	q := newRecQueue()
	srv, addrs := startServer(t, baseSettings(ev), q)
	addr := addrs["127.0.0.1:0"]

	idle := dial(t, addr)
	idle.expect("", "220")
	idle.expect("EHLO c", "250")

	busy := dial(t, addr)
	busy.expect("", "220")
	busy.expect("EHLO c", "250")
	busy.expect("MAIL FROM:<a@b.test>", "250")
	busy.expect("RCPT TO:<u@local.test>", "250")
	busy.expect("DATA", "354")
	busy.send("Subject: in flight\r\n\r\n")

	done := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		done <- srv.Shutdown(ctx)
	}()
	idle.expect("", "421 4.4.2")
	waitFor(t, "listener closed", func() bool {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
		}
		return err != nil
	})
	select {
	case err := <-done:
		t.Fatalf("Shutdown returned %v with a message in flight", err)
	case <-time.After(100 * time.Millisecond):
	}
	busy.expect("body\r\n.", "250 2.0.0 Ok: queued as")
	if r := busy.cmd("NOOP"); r != "" && !strings.HasPrefix(r, "421") {
		t.Errorf("after the message: %q", r)
	}
	if err := <-done; err != nil {
		t.Errorf("Shutdown: %v", err)
	}
	if n := len(q.all()); n != 1 {
		t.Errorf("%d queued", n)
	}
}

func TestCloseCancelsEnqueue(t *testing.T) {
	q := newRecQueue()
	q.hold = make(chan struct{})
	srv, addrs := startServer(t, baseSettings(&eventLog{}), q)
	c := dial(t, addrs["127.0.0.1:0"])
	c.expect("", "220")
	c.expect("EHLO c", "250")
	c.expect("MAIL FROM:<a@b.test>", "250")
	c.expect("RCPT TO:<u@local.test>", "250")
	c.expect("DATA", "354")
	c.send("x\r\n.\r\n")
	time.Sleep(50 * time.Millisecond)
	srv.Close()
	if r := c.reply(); strings.HasPrefix(r, "250") {
		t.Errorf("got %q after Close with Enqueue unfinished", r)
	}
	if len(q.all()) != 0 {
		t.Errorf("queued")
	}
}

func TestUpdate(t *testing.T) {
	ev := &eventLog{}
	s := baseSettings(ev)
	q := newRecQueue()
	srv, addrs := startServer(t, s, q)
	old := dial(t, addrs["127.0.0.1:0"])
	old.expect("", "220 mx.test ")

	s2 := s
	s2.Hostname = "mx2.test"
	s2.Listeners = []Listener{{Addr: "127.0.0.1:0"}, {Addr: "127.0.0.2:0"}}
	if err := srv.Update(s2); err != nil {
		t.Fatal(err)
	}
	a2 := srv.Addrs()
	if len(a2) != 2 {
		t.Fatalf("listeners after Update: %v", a2)
	}
	dial(t, a2["127.0.0.1:0"].String()).expect("", "220 mx2.test ")
	dial(t, a2["127.0.0.2:0"].String()).expect("", "220 mx2.test ")

	// The session that began before keeps its settings.
	old.expect("EHLO c", "250")
	old.expect("MAIL FROM:<a@b.test>", "250")
	old.expect("RCPT TO:<u@local.test>", "250")
	old.expect("DATA", "354")
	old.expect("x\r\n.", "250")
	if c := string(q.all()[0].content); !strings.Contains(c, "by mx.test (sluice)") {
		t.Errorf("old session used new settings: %q", c)
	}

	// Removing a listener closes it; a bad update changes nothing.
	s3 := s2
	s3.Listeners = s2.Listeners[1:]
	if err := srv.Update(s3); err != nil {
		t.Fatal(err)
	}
	if _, err := net.DialTimeout("tcp", a2["127.0.0.1:0"].String(), time.Second); err == nil {
		t.Errorf("removed listener still accepts")
	}
	bad := s3
	bad.CertFile = "/nonexistent/cert.pem"
	bad.KeyFile = "/nonexistent/key.pem"
	if err := srv.Update(bad); err == nil {
		t.Errorf("Update with a missing certificate succeeded")
	}
	dial(t, a2["127.0.0.2:0"].String()).expect("", "220 mx2.test ")
}

func TestNewErrors(t *testing.T) {
	s := baseSettings(&eventLog{})
	if _, err := New(s, nil); err == nil {
		t.Error("nil queue accepted")
	}
	s.CertFile = "x"
	if _, err := New(s, newRecQueue()); err == nil {
		t.Error("CertFile without KeyFile accepted")
	}
	s = baseSettings(&eventLog{})
	s.Listeners = append(s.Listeners, s.Listeners[0])
	if _, err := New(s, newRecQueue()); err == nil {
		t.Error("duplicate listener accepted")
	}
	s = baseSettings(&eventLog{})
	s.Listeners = []Listener{{Addr: "256.0.0.1:0"}}
	srv, err := New(s, newRecQueue())
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.ListenAndServe(); err == nil || errors.Is(err, net.ErrClosed) {
		t.Errorf("ListenAndServe on a bad address: %v", err)
	}
}
