package vmta

import (
	"context"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"
)

// slowConn delays every write, standing in for network latency: each
// client round trip costs at least the delay.
type slowConn struct {
	net.Conn
	delay time.Duration
}

func (c slowConn) Write(p []byte) (int, error) {
	time.Sleep(c.delay)
	return c.Conn.Write(p)
}

// BenchmarkDeliver compares, in one run, pipelining with connection reuse
// against one command per round trip and a new connection per message.
// Messages have 2 recipients and a 4 KiB body; the sink is in-process on
// loopback, so the gap here is smaller than over a real network, where
// every round trip costs milliseconds.
func BenchmarkDeliver(b *testing.B) {
	body := "Subject: bench\r\n\r\n" + strings.Repeat("0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcde\r\n", 64)
	type benchCase struct {
		name    string
		pipe    bool
		reuse   bool
		postfix bool
		latency time.Duration
	}
	var cases []benchCase
	for _, peer := range []struct {
		name    string
		postfix bool
		latency time.Duration
	}{{"sink", false, 0}, {"sink-1ms", false, time.Millisecond}, {"postfix-smtp-sink", true, 0}} {
		cases = append(cases,
			benchCase{peer.name + "/pipelining+reuse", true, true, peer.postfix, peer.latency},
			benchCase{peer.name + "/pipelining", true, false, peer.postfix, peer.latency},
			benchCase{peer.name + "/reuse", false, true, peer.postfix, peer.latency},
			benchCase{peer.name + "/neither", false, false, peer.postfix, peer.latency})
	}
	for _, bc := range cases {
		b.Run(bc.name, func(b *testing.B) {
			var dest Destination
			if bc.postfix {
				port := startSmtpSink(b)
				dest = Destination{Domain: "x.test", Hosts: []HostPort{{Host: "127.0.0.1", Port: port}}}
			} else {
				dest = routeTo(newSink(b, sinkConfig{NoRecord: true}))
			}
			opt := Options{}
			if bc.latency > 0 {
				opt.Dial = func(ctx context.Context, l netip.Addr, r netip.AddrPort) (net.Conn, error) {
					time.Sleep(bc.latency) // the SYN's trip
					nc, err := defaultDial(ctx, l, r)
					if err != nil {
						return nil, err
					}
					return slowConn{nc, bc.latency}, nil
				}
			}
			d := NewDeliverer(opt)
			defer d.Close()
			dest.IgnorePipelining = !bc.pipe
			dest.IdleTimeout = time.Minute
			if !bc.reuse {
				dest.MaxMsgPerConnection = 1
			}
			msg := testMsg(body, "a@x.test", "b@x.test")
			b.SetBytes(int64(len(body)))
			b.ResetTimer()
			start := time.Now()
			for i := 0; i < b.N; i++ {
				msg.Content = strings.NewReader(body)
				res := d.Deliver(context.Background(), dest, msg)
				if !res.Rcpts[1].Delivered() {
					b.Fatalf("%+v", res.Rcpts)
				}
			}
			b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "msgs/s")
		})
	}
}
