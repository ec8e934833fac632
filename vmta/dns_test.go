package vmta

import (
	"context"
	"testing"
	"time"

	"github.com/sluicemta/sluice/internal/resolve"
	"github.com/sluicemta/sluice/internal/testutil/fakedns"
)

// TestWithRealResolver routes through internal/resolve and a loopback DNS
// server: the first MX (127.0.0.2) refuses, the second takes the mail.
func TestWithRealResolver(t *testing.T) {
	s := newSink(t, sinkConfig{})
	dns := fakedns.Start(t)
	if err := dns.Add(
		"example.com. MX 10 mx1.example.com.",
		"example.com. MX 20 mx2.example.com.",
		"mx1.example.com. A 127.0.0.2",
		"mx2.example.com. A 127.0.0.1",
		"nomx.example. A 127.0.0.1",
		"null.example. MX 0 .",
	); err != nil {
		t.Fatal(err)
	}
	dns.SetServFail("broken.example")
	r := resolve.New(resolve.Options{Servers: []string{dns.Addr()}, Timeout: time.Second})
	d := newTestDeliverer(t, Options{Resolver: r})
	for _, tc := range []struct {
		domain string
		code   int
		enh    string
		host   string
	}{
		{"example.com", 250, "2.0.0", "mx2.example.com"},
		{"nomx.example", 250, "2.0.0", "nomx.example"},
		{"null.example", 556, "5.1.10", ""},
		{"nx.example", 550, "5.1.2", ""},
		{"broken.example", 451, "4.4.3", ""},
	} {
		dest := Destination{Domain: tc.domain, Port: s.port(), CommandTimeout: 5 * time.Second}
		res := d.Deliver(context.Background(), dest, testMsg(body1, "u@"+tc.domain))
		got := res.Rcpts[0]
		if got.Reply.Code != tc.code || got.Reply.Enhanced != tc.enh || res.Host != tc.host {
			t.Errorf("%s: %+v host %q", tc.domain, got, res.Host)
		}
	}

	// A bracketed route host is not looked up by MX.
	dns.ResetQueries()
	dest := Destination{Domain: "other.example", Hosts: []HostPort{{Host: "mx2.example.com", Port: s.port(), Bracketed: true}},
		CommandTimeout: 5 * time.Second, MaxMsgPerConnection: 1}
	r.Flush()
	res := d.Deliver(context.Background(), dest, testMsg(body1, "u@other.example"))
	if !res.Rcpts[0].Delivered() {
		t.Fatalf("%+v", res.Rcpts[0])
	}
	if n := dns.QueryCount("mx2.example.com", "MX"); n != 0 {
		t.Errorf("%d MX queries for a bracketed host", n)
	}
	if n := dns.QueryCount("mx2.example.com", "A"); n != 1 {
		t.Errorf("%d A queries", n)
	}
}
