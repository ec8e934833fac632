package daemon

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"net/smtp"
	"strings"
	"testing"
	"time"

	gomilter "github.com/emersion/go-milter"

	"github.com/sluicemta/sluice/internal/config"
	"github.com/sluicemta/sluice/internal/maillog"
	"github.com/sluicemta/sluice/internal/smtpd"
)

type discardQueue struct{}

func (discardQueue) Enqueue(context.Context, *smtpd.Envelope, []byte) error { return nil }

// BenchmarkMilters sends whole SMTP transactions (one connection, 10 KB
// messages) into the inbound server with no milter, and with a chain of
// two no-op milters (go-milter servers on loopback) through the daemon's
// own adapter, in one run.
func BenchmarkMilters(b *testing.B) {
	var socks []string
	for i := 0; i < 2; i++ {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			b.Fatal(err)
		}
		srv := &gomilter.Server{NewMilter: func() gomilter.Milter { return gomilter.NoOpMilter{} }}
		go srv.Serve(ln)
		defer srv.Close()
		socks = append(socks, "inet:"+ln.Addr().String())
	}
	body := strings.Repeat("0123456789012345678901234567890123456789012345678\r\n", 200)
	for _, tc := range []struct{ name, milters string }{{"none", ""}, {"two-noop", "m1,m2"}} {
		b.Run(tc.name, func(b *testing.B) {
			text := fmt.Sprintf("host-name bench.test\nrun-as-user root\n<milter m1>\n socket %s\n</milter>\n<milter m2>\n socket %s\n</milter>\n", socks[0], socks[1])
			if tc.milters != "" {
				text += "<source 127.0.0.0/8>\n always-allow-relaying yes\n smtpd-milters " + tc.milters + "\n</source>\n"
			} else {
				text += "<source 127.0.0.0/8>\n always-allow-relaying yes\n</source>\n"
			}
			cfg, err := config.Parse("bench.conf", []byte(text))
			if err != nil {
				b.Fatal(err)
			}
			d := &Daemon{logs: &logs{ml: maillog.New(discard{})}}
			s := smtpd.Settings{
				Hostname:  "bench.test",
				Listeners: []smtpd.Listener{{Addr: "127.0.0.1:0"}},
				PolicyFor: func(ip netip.Addr, user string) smtpd.Policy { return policyFor(cfg, ip, user) },
				NewFilter: d.smtpFilter(cfg),
			}
			srv, err := smtpd.New(s, discardQueue{})
			if err != nil {
				b.Fatal(err)
			}
			if err := srv.Listen(); err != nil {
				b.Fatal(err)
			}
			go srv.Serve()
			defer srv.Close()
			var addr string
			for _, a := range srv.Addrs() {
				addr = a.String()
			}
			c, err := smtp.Dial(addr)
			if err != nil {
				b.Fatal(err)
			}
			defer c.Close()
			if err := c.Hello("client.test"); err != nil {
				b.Fatal(err)
			}
			msg := []byte("From: a@example.org\r\nTo: b@example.net\r\nSubject: bench\r\n\r\n" + body)
			b.SetBytes(int64(len(msg)))
			b.ResetTimer()
			start := time.Now()
			for i := 0; i < b.N; i++ {
				if err := c.Mail("a@example.org"); err != nil {
					b.Fatal(err)
				}
				if err := c.Rcpt("b@example.net"); err != nil {
					b.Fatal(err)
				}
				w, err := c.Data()
				if err != nil {
					b.Fatal(err)
				}
				w.Write(msg)
				if err := w.Close(); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "msgs/s")
		})
	}
}

type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }
