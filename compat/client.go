package compat

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"time"
)

// DefaultSocket is the control socket when neither the config's
// control-socket directive nor SLUICE_CONTROL_SOCKET names one.
const DefaultSocket = "/run/sluice/control.sock"

// ErrDaemonDown is wrapped when the daemon's socket cannot be reached, so
// sendmail can fall back to the maildrop directory.
var ErrDaemonDown = errors.New("the sluice daemon is not running")

// Client speaks the compat protocol to the daemon.
type Client struct {
	Socket  string        // unix socket path
	Timeout time.Duration // per request; 0 means 10 minutes
}

// call dials, sends Hello and the request frames, then hands the reply
// reader to read. Each request uses its own connection.
func (c *Client) call(ctx context.Context, send func(*bufio.Writer) error, read func(*bufio.Reader) error) error {
	conn, err := c.dial(ctx)
	if err != nil {
		return err
	}
	defer conn.Close()
	t := c.Timeout
	if t == 0 {
		t = 10 * time.Minute
	}
	conn.SetDeadline(time.Now().Add(t))
	bw := bufio.NewWriterSize(conn, 64<<10)
	bw.WriteString(Hello)
	err = send(bw)
	if err == nil {
		writeStr(bw, "end", "")
		err = bw.Flush()
	}
	if err != nil {
		// The daemon may have refused the request early (too big, not
		// permitted) and closed: its status says why.
		if rerr := read(bufio.NewReader(conn)); rerr != nil && ExitCode(rerr) != ExitTempFail {
			return rerr
		}
		return Exitf(ExitTempFail, "send request: %v", err)
	}
	return read(bufio.NewReaderSize(conn, 64<<10))
}

func (c *Client) dial(ctx context.Context) (net.Conn, error) {
	sock := c.Socket
	if sock == "" {
		sock = DefaultSocket
	}
	var d net.Dialer
	conn, err := d.DialContext(ctx, "unix", sock)
	if err != nil {
		return nil, &ExitError{Code: ExitTempFail, Msg: fmt.Sprintf("%v (%v)", ErrDaemonDown, err), Err: fmt.Errorf("%w: %v", ErrDaemonDown, err)}
	}
	return conn, nil
}

// readReply reads frames until status, passing data/line frames to onFrame.
func readReply(br *bufio.Reader, onFrame func(tag string, p []byte) error) (string, error) {
	for {
		tag, p, err := readFrame(br, 1<<20)
		if err != nil {
			return "", Exitf(ExitTempFail, "read reply: %v", err)
		}
		if tag == "status" {
			code, text, err := decodeStatus(p)
			if err != nil {
				return "", Exitf(ExitTempFail, "read reply: %v", err)
			}
			if code != ExitOK {
				return "", &ExitError{Code: code, Msg: text}
			}
			return text, nil
		}
		if onFrame != nil {
			if err := onFrame(tag, p); err != nil {
				return "", err
			}
		}
	}
}

// Submit hands a message read by ReadMessage to the daemon and returns
// its queue id once the daemon reports it durable.
func (c *Client) Submit(ctx context.Context, inv *Invocation, content []byte) (string, error) {
	var id string
	err := c.call(ctx, func(w *bufio.Writer) error {
		return writeSubmit(w, inv, content)
	}, func(r *bufio.Reader) error {
		var err error
		id, err = readReply(r, nil)
		return err
	})
	return id, err
}

// List writes the queue listing to w: format 'p' (mailq) or 'j' (JSON lines).
func (c *Client) List(ctx context.Context, format byte, w io.Writer) error {
	return c.call(ctx, func(bw *bufio.Writer) error {
		writeStr(bw, "op", "list")
		return writeStr(bw, "format", string(format))
	}, func(r *bufio.Reader) error {
		_, err := readReply(r, func(tag string, p []byte) error {
			if tag == "data" {
				if _, err := w.Write(p); err != nil {
					return Exitf(ExitIOErr, "write: %v", err)
				}
			}
			return nil
		})
		return err
	})
}

// Flush asks for immediate delivery of everything, of site, or of id.
func (c *Client) Flush(ctx context.Context, site, id string) error {
	return c.call(ctx, func(bw *bufio.Writer) error {
		writeStr(bw, "op", "flush")
		if site != "" {
			writeStr(bw, "site", site)
		}
		if id != "" {
			writeStr(bw, "id", id)
		}
		return nil
	}, func(r *bufio.Reader) error {
		_, err := readReply(r, nil)
		return err
	})
}

// Postsuper performs one operation; line receives each line postsuper
// prints ("<id>: removed", "Deleted: 1 message").
func (c *Client) Postsuper(ctx context.Context, op PostsuperOp, queues []string, line func(string)) error {
	return c.call(ctx, func(bw *bufio.Writer) error {
		writeStr(bw, "op", "postsuper")
		writeStr(bw, "action", string(op.Action))
		if op.All() {
			writeStr(bw, "all", "1")
		} else {
			for _, id := range op.IDs {
				writeStr(bw, "id", id)
			}
		}
		for _, q := range queues {
			writeStr(bw, "queue", q)
		}
		return nil
	}, func(r *bufio.Reader) error {
		_, err := readReply(r, func(tag string, p []byte) error {
			if tag == "line" && line != nil {
				line(string(p))
			}
			return nil
		})
		return err
	})
}

// SMTP runs sendmail -bs: after the daemon accepts, bytes are copied
// between stdin/stdout and the daemon's local SMTP session until the
// daemon closes it.
func (c *Client) SMTP(ctx context.Context, stdin io.Reader, stdout io.Writer) error {
	conn, err := c.dial(ctx)
	if err != nil {
		return err
	}
	defer conn.Close()
	bw := bufio.NewWriter(conn)
	bw.WriteString(Hello)
	writeStr(bw, "op", "smtp")
	writeStr(bw, "end", "")
	if err := bw.Flush(); err != nil {
		return Exitf(ExitTempFail, "send request: %v", err)
	}
	br := bufio.NewReader(conn)
	if _, err := readReply(br, nil); err != nil {
		return err
	}
	go func() {
		io.Copy(conn, stdin)
		conn.(*net.UnixConn).CloseWrite()
	}()
	if _, err := io.Copy(stdout, br); err != nil {
		return Exitf(ExitIOErr, "smtp session: %v", err)
	}
	return nil
}

// writeSubmit writes a submit request's frames (without Hello and end):
// the socket protocol and maildrop files share it.
func writeSubmit(w *bufio.Writer, inv *Invocation, content []byte) error {
	writeStr(w, "op", "submit")
	if inv.SenderSet {
		writeStr(w, "sender-set", "1")
		writeStr(w, "sender", inv.Sender)
	}
	if inv.FullName != "" {
		writeStr(w, "fullname", inv.FullName)
	}
	for _, r := range inv.Rcpts {
		writeStr(w, "rcpt", r)
	}
	flag := func(k string, on bool) {
		if on {
			writeStr(w, k, "1")
		}
	}
	flag("extract", inv.Extract)
	flag("gateway", inv.Gateway)
	flag("verify", inv.Verify)
	flag("trace", inv.Verbose == 1 && !inv.Verify)
	opt := func(k, v string) {
		if v != "" {
			writeStr(w, k, v)
		}
	}
	opt("body", inv.Body)
	opt("notify", inv.DSNNotify)
	opt("ret", inv.DSNRet)
	opt("envid", inv.EnvID)
	opt("requiretls", inv.RequireTLS)
	opt("smtputf8", inv.SMTPUTF8)
	if inv.VERP {
		writeStr(w, "verp", inv.VERPDelims)
	}
	return writeFrame(w, "content", content)
}
