package smtpd

import (
	"context"
	"crypto/tls"
	"net"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// sconn wraps every accepted connection, under TLS if there is any. It
// holds what outlives one go-smtp Session (STARTTLS starts a new Session):
// the client, its error count, and the flags that let us hang up after a
// reply and drain on shutdown.
type sconn struct {
	net.Conn
	srv      *Server
	ap       netip.AddrPort
	listener string
	mode     Mode
	policy   Policy // computed at connect, before any AUTH

	nameOnce sync.Once
	name     string

	errCount atomic.Int32

	busy   atomic.Bool // a transaction (MAIL..end of DATA) is in progress
	drain  atomic.Bool // shutting down: refuse further commands when not busy
	hangup atomic.Bool // close right after the next write (a 421 reply)

	// dataTimeout, while content is arriving, is the deadline pushed
	// forward before every network read: a slow but steady sender is not
	// cut off, a stalled one is.
	dataTimeout atomic.Int64

	closeOnce sync.Once
	closed    atomic.Bool

	// The content filter lives as long as the connection (filter.go).
	fmu        sync.Mutex
	filter     *lockedFilter
	fcancel    context.CancelFunc // ends the filter's I/O, even while it opens
	filterDone bool               // started, or never to be
}

// connState finds our wrapper under a go-smtp connection.
func connState(c net.Conn) *sconn {
	if t, ok := c.(*tls.Conn); ok {
		c = t.NetConn()
	}
	sc, _ := c.(*sconn)
	return sc
}

func (c *sconn) Read(b []byte) (int, error) {
	if c.drain.Load() && !c.busy.Load() {
		return 0, os.ErrDeadlineExceeded
	}
	if d := c.dataTimeout.Load(); d > 0 {
		c.Conn.SetReadDeadline(time.Now().Add(time.Duration(d)))
	}
	return c.Conn.Read(b)
}

func (c *sconn) Write(b []byte) (int, error) {
	n, err := c.Conn.Write(b)
	if c.hangup.Load() {
		c.Close()
	}
	return n, err
}

// SetReadDeadline keeps a draining connection's deadline in the past so
// go-smtp's own per-command deadline cannot revive it.
func (c *sconn) SetReadDeadline(t time.Time) error {
	if c.drain.Load() && !c.busy.Load() {
		t = time.Unix(1, 0)
	}
	return c.Conn.SetReadDeadline(t)
}

func (c *sconn) SetDeadline(t time.Time) error {
	if err := c.Conn.SetWriteDeadline(t); err != nil {
		return err
	}
	return c.SetReadDeadline(t)
}

func (c *sconn) Close() error {
	var err error
	c.closeOnce.Do(func() {
		c.closed.Store(true)
		err = c.Conn.Close()
		c.closeFilter()
		c.srv.release(c)
	})
	return err
}

// startDrain makes an idle session end at its next read: go-smtp answers
// "421 4.4.2" to the timeout and closes. A busy one ends after its message.
func (c *sconn) startDrain() {
	c.drain.Store(true)
	if !c.busy.Load() {
		c.Conn.SetReadDeadline(time.Unix(1, 0))
	}
}

// dataMode turns the per-read content deadline on (d > 0) or off.
func (c *sconn) dataMode(d time.Duration) {
	c.dataTimeout.Store(int64(d))
}
