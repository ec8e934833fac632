package smtpd

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"
)

// fuzzQueue checks the one promise about content: CRLF line endings only.
type fuzzQueue struct {
	mu  sync.Mutex
	bad []string
	n   int
}

func (q *fuzzQueue) Enqueue(_ context.Context, env *Envelope, content []byte) error {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.n++
	if i := bareNewline(content); i >= 0 {
		q.bad = append(q.bad, fmt.Sprintf("bare CR/LF at %d in %q", i, content))
	}
	if len(env.Rcpts) == 0 || env.ID == "" {
		q.bad = append(q.bad, fmt.Sprintf("envelope without recipients or id: %+v", env))
	}
	return nil
}

func (q *fuzzQueue) problems() []string {
	q.mu.Lock()
	defer q.mu.Unlock()
	p := q.bad
	q.bad = nil
	return p
}

// FuzzSession feeds whole conversations through a net.Pipe into a Server.
// It must never panic (go-smtp would catch it and log "panic serving") and
// never hand the queue content with a bare CR or LF.
func FuzzSession(f *testing.F) {
	seeds := []string{
		"EHLO c\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<u@local.test>\r\nDATA\r\nSubject: x\r\n\r\nbody\r\n.\r\nQUIT\r\n",
		"EHLO c\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<u@local.test>\r\nDATA\r\nhello\n.\nMAIL FROM:<e@x>\r\n.\r\n",
		"EHLO c\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<u@local.test>\r\nDATA\r\nhello\r\n.\rMAIL FROM:<e@x>\r\n.\r\n",
		"EHLO c\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<u@local.test>\r\nDATA\r\na\r.\r\nb\n.\r\n\r\n.\r\n",
		"EHLO c\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<u@local.test>\r\nBDAT 5\r\nab\r\ncBDAT 3 LAST\r\n\r\rx",
		"EHLO c\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<u@local.test>\r\nBDAT 4 LAST\r\na\nb\r",
		"HELO c\r\nMAIL FROM:<> SIZE=99999999999\r\nRCPT TO:<\"u@x\"@local.test>\r\nRCPT TO:<u%x@local.test>\r\nRCPT TO:<@a,@b:u@c>\r\n",
		"EHLO c\r\nAUTH PLAIN AGFsaWNlAHNlY3JldA==\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<x@other.test>\r\nDATA\r\nx\r\n.\r\n",
		"EHLO c\r\nAUTH LOGIN\r\nYWxpY2U=\r\nc2VjcmV0\r\nAUTH PLAIN =\r\n",
		"EHLO c\r\nSTARTTLS\r\n\x16\x03\x01\x00\x05hello",
		"EHLO c\r\nMAIL FROM:<j\xc3\xb6rg@b.test> SMTPUTF8\r\nRCPT TO:<\xc3\xbc@local.test> NOTIFY=SUCCESS ORCPT=utf-8;\xc3\xbc\\x{40}x\r\nDATA\r\nReceived: x\r\n\r\n.\r\n",
		"EHLO c\r\nMAIL FROM:<a@b.test> RET=FULL ENVID=a+2Bb BODY=7BIT\r\nRCPT TO:<u@[127.0.0.1]>\r\nRSET\r\nNOOP\r\nVRFY x\r\nQUIT\r\n",
		"\x00\xff\r\n\r\n\n\n" + strings.Repeat("A", 3000) + "\r\n",
	}
	for i, s := range seeds {
		f.Add(byte(i), []byte(s))
	}

	ended := make(chan struct{}, 16)
	var failMu sync.Mutex
	var panics []string
	s := Settings{
		Hostname:       "mx.test",
		CommandTimeout: 2 * time.Second,
		DataTimeout:    2 * time.Second,
		ErrorDelay:     time.Nanosecond,
		MaxMessageSize: 64 << 10,
		MaxReceived:    3,
		MaxLineLength:  1000,
		LocalDomain:    func(d string) bool { return d == "local.test" || d == "[127.0.0.1]" },
		CheckPassword:  func(u, p string) bool { return u == "alice" && p == "secret" },
		PolicyFor: func(ip netip.Addr, user string) Policy {
			return Policy{
				Relay: user != "", AddReceived: true, AddMessageID: true, AddDate: true,
				AllowStartTLS: true, AllowPlainAuthUnencrypted: ip.Is4(),
				NormalizeBareNewlines: ip.Is6(), MaxRcpts: 5,
			}
		},
		Log: func(e Event) {
			if e.Kind == EvDisconnect {
				ended <- struct{}{}
			}
			if e.Err != nil && strings.Contains(e.Err.Error(), "panic") {
				failMu.Lock()
				panics = append(panics, e.Err.Error())
				failMu.Unlock()
			}
		},
	}
	s.CertFile, s.KeyFile = writeCert(f, f.TempDir(), "mx.test")
	q := &fuzzQueue{}
	srv, err := New(s, q)
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { srv.Close() })

	port := 0
	f.Fuzz(func(t *testing.T, sel byte, conv []byte) {
		q.mu.Lock()
		before := q.n
		q.mu.Unlock()
		ip := []string{"192.0.2.1", "2001:db8::1", "127.0.0.1"}[int(sel)%3]
		mode := []Mode{Plain, Plain, Submission}[int(sel/3)%3]
		a, b := net.Pipe()
		// A distinct port per run: go-smtp may still be finishing the
		// previous connection, and the logger tells them apart by address.
		port++
		srv.admit(pipeConn{Conn: a, remote: &net.TCPAddr{IP: net.ParseIP(ip), Port: 1 + port%65000}}, "fuzz", mode)
		drained := make(chan struct{})
		go func() {
			io.Copy(io.Discard, b)
			close(drained)
		}()
		b.SetWriteDeadline(time.Now().Add(5 * time.Second))
		b.Write(conv)
		b.Close()
		<-drained
		select {
		case <-ended:
		case <-time.After(10 * time.Second):
			t.Fatal("session did not end")
		}
		q.mu.Lock()
		after := q.n
		q.mu.Unlock()
		if sel == 0 && string(conv) == seeds[0] && after != before+1 {
			t.Errorf("the plain seed conversation queued %d messages", after-before)
		}
		for _, p := range q.problems() {
			t.Error(p)
		}
		failMu.Lock()
		for _, p := range panics {
			t.Error(p)
		}
		panics = nil
		failMu.Unlock()
	})
}
