package smtpd

import (
	"net"
	"sync"
)

// ServeLocal serves one SMTP session on a connection a local process
// already opened (sendmail -bs over the control socket) and returns when
// the session ends. The client is treated as one on 127.0.0.1: the
// daemon's Policy for loopback applies, as Postfix applies its local
// submission rules to `sendmail -bs`.
func (srv *Server) ServeLocal(nc net.Conn) {
	lc := &localConn{Conn: nc, done: make(chan struct{})}
	srv.admit(lc, "local", Plain)
	<-lc.done
}

// localConn presents a unix-socket connection as a loopback client and
// tells ServeLocal when the session has closed it.
type localConn struct {
	net.Conn
	once sync.Once
	done chan struct{}
}

var loopback = &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)}

func (c *localConn) RemoteAddr() net.Addr { return loopback }

func (c *localConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(func() { close(c.done) })
	return err
}
