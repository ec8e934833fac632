package vmta

import (
	"context"
	"io"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"
)

// FuzzConversation replays arbitrary server bytes against a whole Deliver:
// whatever the server says, every recipient must end with a reply, and only
// a recipient the server accepted after the dot may count as delivered.
func FuzzConversation(f *testing.F) {
	f.Add("220 hi\r\n250-x\r\n250-PIPELINING\r\n250 SIZE 10\r\n250 ok\r\n250 ok\r\n550 5.1.1 no\r\n354 go\r\n250 2.0.0 queued\r\n221 bye\r\n")
	f.Add("220 hi\r\n502 no\r\n250 x\r\n250 ok\r\n250 ok\r\n250 ok\r\n354 go\r\n250 ok\r\n")
	f.Add("220 hi\r\n250-x\r\n250 PIPELINING\r\n250 ok\r\n452 4.5.3 too many recipients\r\n452 4.5.3 too many recipients\r\n354 go\r\n250 ok\r\n250 ok\r\n250 ok\r\n354 go\r\n250 ok\r\n")
	f.Add("421 busy\r\n")
	f.Add("220 hi\r\n250-x\r\n250 STARTTLS\r\n220 go\r\n\x16\x03\x01")
	f.Fuzz(func(t *testing.T, script string) {
		dial := func(ctx context.Context, _ netip.Addr, _ netip.AddrPort) (net.Conn, error) {
			cli, srv := net.Pipe()
			go io.Copy(io.Discard, srv)
			go func() {
				srv.SetWriteDeadline(time.Now().Add(time.Second))
				srv.Write([]byte(script))
				srv.Close()
			}()
			return cli, nil
		}
		d := NewDeliverer(Options{Dial: dial, MaxAddrs: 1})
		defer d.Close()
		dest := Destination{Domain: "x.test", Hosts: []HostPort{{Host: "192.0.2.1"}}, UseStartTLS: true,
			GreetingTimeout: time.Second, CommandTimeout: time.Second, DataTimeout: time.Second, DataTerminationTimeout: time.Second}
		msg := testMsg("Subject: x\r\n\r\nbody\r\n", "a@x.test", "b@x.test", "c@x.test")
		res := d.Deliver(context.Background(), dest, msg)
		if len(res.Rcpts) != 3 {
			t.Fatalf("%d results", len(res.Rcpts))
		}
		for i, r := range res.Rcpts {
			if r.Reply.Code < 200 || r.Reply.Code > 599 || r.Stage == "" {
				t.Fatalf("rcpt %d has no reply: %+v", i, r)
			}
			if r.Delivered() && !strings.Contains(script, "354") {
				t.Fatalf("rcpt %d delivered without DATA: %+v", i, r)
			}
		}
	})
}
