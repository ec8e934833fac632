package daemon

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sync"
)

// control is the daemon's unix socket for local clients: sendmail's
// submissions, mailq/postqueue/postsuper, and the sluice CLI. Who is
// calling is learned from the socket's peer credentials, never from what
// the client says.
type control struct {
	path   string
	ln     *net.UnixListener
	handle func(*net.UnixConn)
	wg     sync.WaitGroup
}

func listenControl(path string, d *Daemon) (*control, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, fmt.Errorf("control-socket %s: %w", path, err)
	}
	// A socket file left by a crashed daemon is removed; a live daemon
	// still holding it is detected by a connect that succeeds.
	if c, err := net.Dial("unix", path); err == nil {
		c.Close()
		return nil, fmt.Errorf("control-socket %s: another sluiced is running", path)
	}
	os.Remove(path)
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		return nil, fmt.Errorf("control-socket %s: %w", path, err)
	}
	// Every local user may submit mail and list the queue, as with Postfix;
	// what each request may do is decided per request from SO_PEERCRED.
	if err := os.Chmod(path, 0o666); err != nil {
		ln.Close()
		return nil, fmt.Errorf("control-socket %s: %w", path, err)
	}
	return &control{path: path, ln: ln, handle: d.handleControl}, nil
}

func (c *control) serve() {
	for {
		conn, err := c.ln.AcceptUnix()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		c.wg.Add(1)
		go func() {
			defer c.wg.Done()
			defer conn.Close()
			c.handle(conn)
		}()
	}
}

func (c *control) close() {
	c.ln.Close()
	c.wg.Wait()
	os.Remove(c.path)
}
