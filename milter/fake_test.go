package milter

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// fakeMilter speaks the wire protocol directly so tests can drive every
// packet, including version-6 features and malformed ones that no milter
// library would produce.
type fakeMilter struct {
	t      testing.TB
	ln     net.Listener
	socket string

	mu    sync.Mutex
	log   []string // commands received, as "O", "C", "D:C j=..." ...
	conns int
}

// fakeConn is one accepted connection.
type fakeConn struct {
	c  net.Conn
	br *bufio.Reader
	f  *fakeMilter
}

// startFake listens on a unix socket in a temp dir and runs handle for each connection.
func startFake(t testing.TB, handle func(c *fakeConn)) *fakeMilter {
	t.Helper()
	path := filepath.Join(t.TempDir(), "m.sock")
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	f := &fakeMilter{t: t, ln: ln, socket: "unix:" + path}
	var wg sync.WaitGroup
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			f.mu.Lock()
			f.conns++
			f.mu.Unlock()
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				handle(&fakeConn{c: c, br: bufio.NewReader(c), f: f})
			}()
		}
	}()
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	return f
}

func (f *fakeMilter) record(s string) {
	f.mu.Lock()
	f.log = append(f.log, s)
	f.mu.Unlock()
}

func (f *fakeMilter) commands() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.log...)
}

func (f *fakeMilter) reset() {
	f.mu.Lock()
	f.log = nil
	f.mu.Unlock()
}

func (f *fakeMilter) connections() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.conns
}

// read returns the next command; macro packets are recorded with their
// contents, other commands as their letter (plus data for some).
func (c *fakeConn) read() (byte, []byte, error) {
	p, err := readPacket(c.br)
	if err != nil {
		return 0, nil, err
	}
	c.f.record(describe(p))
	return p.cmd, p.data, nil
}

func describe(p packet) string {
	switch p.cmd {
	case cmdMacro:
		if len(p.data) == 0 {
			return "D"
		}
		kv := strings.Split(strings.TrimSuffix(string(p.data[1:]), "\x00"), "\x00")
		return "D" + string(p.data[0]) + " " + strings.Join(kv, " ")
	case cmdHelo, cmdMail, cmdRcpt, cmdHeader, cmdUnknown:
		return string(p.cmd) + " " + strings.Join(strings.Split(strings.TrimSuffix(string(p.data), "\x00"), "\x00"), "|")
	case cmdBody:
		return fmt.Sprintf("B %d", len(p.data))
	}
	return string(p.cmd)
}

func (c *fakeConn) write(cmd byte, data ...[]byte) {
	if _, err := c.c.Write(appendPacket(nil, cmd, data...)); err != nil {
		c.f.t.Logf("fake milter write: %v", err)
	}
}

// negotiate answers OPTNEG with version, actions, protocol and optional symlists.
func (c *fakeConn) negotiate(version, actions, protocol uint32, symlist ...any) error {
	cmd, _, err := c.read()
	if err != nil {
		return err
	}
	if cmd != cmdOptneg {
		return fmt.Errorf("first command %q, want O", cmd)
	}
	b := binary.BigEndian.AppendUint32(nil, version)
	b = binary.BigEndian.AppendUint32(b, actions)
	b = binary.BigEndian.AppendUint32(b, protocol)
	for i := 0; i+1 < len(symlist); i += 2 {
		b = binary.BigEndian.AppendUint32(b, uint32(symlist[i].(Stage)))
		b = append(b, symlist[i+1].(string)...)
		b = append(b, 0)
	}
	c.write(cmdOptneg, b)
	return nil
}

// serve answers every command with reply(cmd, data); a nil reply list
// means no reply at all (for NR_* steps and macros).
func (c *fakeConn) serve(reply func(cmd byte, data []byte) [][]byte) {
	for {
		cmd, data, err := c.read()
		if err != nil {
			if !errors.Is(err, io.EOF) && !errors.Is(err, net.ErrClosed) && !strings.Contains(err.Error(), "reset") {
				c.f.t.Logf("fake milter read: %v", err)
			}
			return
		}
		if cmd == cmdQuit {
			return
		}
		for _, r := range reply(cmd, data) {
			c.write(r[0], r[1:])
		}
	}
}

// continueAll is the polite milter: continue to every event, accept at EOB.
func continueAll(cmd byte, _ []byte) [][]byte {
	switch cmd {
	case cmdMacro, cmdAbort:
		return nil
	case cmdEOB:
		return [][]byte{{repAccept}}
	}
	return [][]byte{{repContinue}}
}

func cfgFor(socket string, mod ...func(*Config)) Config {
	c := Config{Name: "fake", Socket: socket, CommandTimeout: 2 * time.Second, ContentTimeout: 2 * time.Second, ConnectTimeout: 2 * time.Second}
	for _, m := range mod {
		m(&c)
	}
	return c
}

func mustChain(t *testing.T, cfgs ...Config) *Chain {
	t.Helper()
	c, err := NewChain(cfgs)
	if err != nil {
		t.Fatal(err)
	}
	c.SetLogger(slog.New(slog.NewTextHandler(testWriter{t}, nil)))
	return c
}

// rep builds a reply packet: code then payload pieces.
func rep(code byte, parts ...[]byte) []byte {
	b := []byte{code}
	for _, p := range parts {
		b = append(b, p...)
	}
	return b
}

func u32(v uint32) []byte { return binary.BigEndian.AppendUint32(nil, v) }
