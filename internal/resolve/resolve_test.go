package resolve

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/miekg/dns"
	"github.com/sluicemta/sluice/internal/testutil/fakedns"
)

func setup(t *testing.T) (*fakedns.Server, *Resolver, *atomic.Int64) {
	t.Helper()
	srv := fakedns.Start(t)
	var now atomic.Int64
	now.Store(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC).UnixNano())
	r := New(Options{Servers: []string{srv.Addr()}, Timeout: 300 * time.Millisecond,
		Now: func() time.Time { return time.Unix(0, now.Load()) }})
	return srv, r, &now
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func TestMX(t *testing.T) {
	srv, r, _ := setup(t)
	must(t, srv.Add(
		"example.com. MX 20 MX2.Example.com.",
		"example.com. MX 10 mx1.example.com.",
		"null.example. MX 0 .",
		"noMX.example. A 192.0.2.1",
		"mixed.example. MX 0 .",
		"mixed.example. MX 10 mx.mixed.example.",
	))
	srv.SetServFail("broken.example")
	srv.SetTimeout("slow.example", true)
	ctx := context.Background()

	mxs, err := r.MX(ctx, "Example.COM.")
	if err != nil || len(mxs) != 2 || mxs[0] != (MX{"mx1.example.com", 10}) || mxs[1] != (MX{"mx2.example.com", 20}) {
		t.Fatalf("MX = %v, %v", mxs, err)
	}
	mxs, err = r.MX(ctx, "mixed.example")
	if err != nil || len(mxs) != 1 || mxs[0].Host != "mx.mixed.example" {
		t.Errorf("mixed null MX = %v, %v", mxs, err)
	}
	for _, tc := range []struct {
		domain string
		want   error
	}{
		{"null.example", ErrNullMX},
		{"nomx.example", ErrNoMX},
		{"nx.example", ErrNXDomain},
		{"broken.example", ErrTemporary},
		{"slow.example", ErrTemporary},
		{"bad..name", ErrNXDomain},
	} {
		_, err := r.MX(ctx, tc.domain)
		if !errors.Is(err, tc.want) {
			t.Errorf("MX(%s) = %v, want %v", tc.domain, err, tc.want)
		}
	}
}

func TestEqualPreferencesShuffled(t *testing.T) {
	srv, r, _ := setup(t)
	must(t, srv.Add("eq.example. MX 10 a.eq.example.", "eq.example. MX 10 b.eq.example.",
		"eq.example. MX 10 c.eq.example.", "eq.example. MX 5 first.eq.example."))
	firsts := map[string]bool{}
	for i := 0; i < 200; i++ {
		mxs, err := r.MX(context.Background(), "eq.example")
		must(t, err)
		if mxs[0].Host != "first.eq.example" {
			t.Fatalf("preference order broken: %v", mxs)
		}
		firsts[mxs[1].Host] = true
	}
	if len(firsts) != 3 {
		t.Errorf("equal preferences not shuffled: %v", firsts)
	}
	if n := srv.QueryCount("eq.example", "MX"); n != 1 {
		t.Errorf("%d queries, want 1 (cached)", n)
	}
}

func TestAddrs(t *testing.T) {
	srv, r, _ := setup(t)
	must(t, srv.Add("h.example. A 192.0.2.1", "h.example. AAAA 2001:db8::1", "h.example. A 192.0.2.2",
		"v6.example. AAAA 2001:db8::2", "alias.example. CNAME h.example.", "mxonly.example. MX 10 h.example."))
	ctx := context.Background()
	got, err := r.Addrs(ctx, "h.example")
	want := []netip.Addr{netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("192.0.2.2"), netip.MustParseAddr("2001:db8::1")}
	if err != nil || fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("Addrs = %v, %v", got, err)
	}
	if got, err := r.Addrs(ctx, "alias.example"); err != nil || len(got) != 3 {
		t.Errorf("CNAME: %v, %v", got, err)
	}
	if got, err := r.Addrs(ctx, "v6.example"); err != nil || len(got) != 1 || !got[0].Is6() {
		t.Errorf("v6: %v, %v", got, err)
	}
	if got, err := r.Addrs(ctx, "[192.0.2.7]"); err != nil || got[0] != netip.MustParseAddr("192.0.2.7") {
		t.Errorf("literal: %v, %v", got, err)
	}
	if _, err := r.Addrs(ctx, "nx.example"); !errors.Is(err, ErrNXDomain) {
		t.Errorf("nx: %v", err)
	}
	if _, err := r.Addrs(ctx, "mxonly.example"); !errors.Is(err, ErrNoAddrs) {
		t.Errorf("no addrs: %v", err)
	}
	srv.SetServFail("sf.example")
	if _, err := r.Addrs(ctx, "sf.example"); !errors.Is(err, ErrTemporary) {
		t.Errorf("servfail: %v", err)
	}
	for _, q := range srv.Queries() {
		if q.Name == "192.0.2.7." {
			t.Error("an IP literal was looked up")
		}
	}
}

func TestCacheTTLAndNegative(t *testing.T) {
	srv, r, now := setup(t)
	must(t, srv.Add("c.example. 300 MX 10 mx.c.example."))
	ctx := context.Background()
	for i := 0; i < 3; i++ {
		if _, err := r.MX(ctx, "c.example"); err != nil {
			t.Fatal(err)
		}
		r.MX(ctx, "nx.example")
	}
	if n := srv.QueryCount("c.example", "MX"); n != 1 {
		t.Errorf("positive: %d queries", n)
	}
	if n := srv.QueryCount("nx.example", "MX"); n != 1 {
		t.Errorf("negative: %d queries", n)
	}
	// The SOA minimum (60s) bounds the negative entry, the TTL (300s) the positive one.
	now.Add(int64(61 * time.Second))
	r.MX(ctx, "c.example")
	r.MX(ctx, "nx.example")
	if a, b := srv.QueryCount("c.example", "MX"), srv.QueryCount("nx.example", "MX"); a != 1 || b != 2 {
		t.Errorf("after 61s: %d, %d queries, want 1, 2", a, b)
	}
	now.Add(int64(240 * time.Second))
	r.MX(ctx, "c.example")
	if n := srv.QueryCount("c.example", "MX"); n != 2 {
		t.Errorf("after TTL: %d queries, want 2", n)
	}
	// A temporary failure is remembered only briefly.
	srv.SetServFail("t.example")
	r.MX(ctx, "t.example")
	r.MX(ctx, "t.example")
	now.Add(int64(6 * time.Second))
	r.MX(ctx, "t.example")
	if n := srv.QueryCount("t.example", "MX"); n != 2 {
		t.Errorf("temp failure: %d queries, want 2", n)
	}
}

func TestInflightShared(t *testing.T) {
	srv, r, _ := setup(t)
	must(t, srv.Add("s.example. MX 10 mx.s.example."))
	var wg sync.WaitGroup
	errs := make(chan error, 50)
	for i := 0; i < 50; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := r.MX(context.Background(), "s.example")
			errs <- err
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if n := srv.QueryCount("s.example", "MX"); n != 1 {
		t.Errorf("%d queries for 50 concurrent lookups", n)
	}
}

func TestCancelledCallerDoesNotPoisonOthers(t *testing.T) {
	srv, r, _ := setup(t)
	must(t, srv.Add("x.example. MX 10 mx.x.example."))
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := r.MX(ctx, "x.example"); !errors.Is(err, ErrTemporary) {
		t.Errorf("cancelled: %v", err)
	}
	if _, err := r.MX(context.Background(), "x.example"); err != nil {
		t.Errorf("after a cancelled caller: %v", err)
	}
}

func TestTruncatedAnswerRetriedOverTCP(t *testing.T) {
	srv, r, _ := setup(t)
	for i := 0; i < 120; i++ {
		must(t, srv.Add(fmt.Sprintf("big.example. A 192.0.%d.%d", i/250, i%250+1)))
	}
	got, err := r.Addrs(context.Background(), "big.example")
	if err != nil || len(got) != 120 {
		t.Fatalf("Addrs = %d addrs, %v", len(got), err)
	}
	tcp := false
	for _, q := range srv.Queries() {
		tcp = tcp || (q.Name == "big.example." && q.Net == "tcp")
	}
	if !tcp {
		t.Error("no TCP retry after truncation")
	}
}

func TestSecondServerAfterFailure(t *testing.T) {
	bad := fakedns.Start(t)
	bad.SetServFail("y.example")
	good := fakedns.Start(t)
	must(t, good.Add("y.example. MX 10 mx.y.example."))
	r := New(Options{Servers: []string{bad.Addr(), good.Addr()}, Timeout: 300 * time.Millisecond})
	if mxs, err := r.MX(context.Background(), "y.example"); err != nil || len(mxs) != 1 {
		t.Fatalf("MX = %v, %v", mxs, err)
	}
}

func TestEviction(t *testing.T) {
	srv, _, _ := setup(t)
	r := New(Options{Servers: []string{srv.Addr()}, MaxEntries: 10})
	for i := 0; i < 30; i++ {
		r.MX(context.Background(), fmt.Sprintf("n%d.example", i))
	}
	r.mu.Lock()
	n := len(r.cache)
	r.mu.Unlock()
	if n > 10 {
		t.Errorf("cache holds %d entries, bound 10", n)
	}
}

// FuzzMXFrom feeds arbitrary DNS messages through the answer parsing.
func FuzzMXFrom(f *testing.F) {
	m := new(dns.Msg)
	m.SetQuestion("example.com.", dns.TypeMX)
	rr, _ := dns.NewRR("example.com. 300 MX 10 mx.example.com.")
	null, _ := dns.NewRR("example.com. 300 MX 0 .")
	m.Answer = []dns.RR{rr, null}
	seed, _ := m.Pack()
	f.Add(seed)
	f.Add([]byte{0, 1, 2})
	r := New(Options{Servers: []string{"127.0.0.1:1"}})
	f.Fuzz(func(t *testing.T, data []byte) {
		var msg dns.Msg
		if msg.Unpack(data) != nil {
			return
		}
		rrs, _, err := r.classify(&msg, dns.TypeMX)
		if err != nil {
			return
		}
		mxs, _ := mxFrom(rrs)
		for i := 1; i < len(mxs); i++ {
			if mxs[i].Pref < mxs[i-1].Pref || mxs[i].Host == "" {
				t.Fatalf("unsorted or empty: %v", mxs)
			}
		}
	})
}

func TestIDNAndCNAMEdMX(t *testing.T) {
	srv, r, _ := setup(t)
	must(t, srv.Add(
		"xn--bcher-kva.example. MX 10 mail.xn--bcher-kva.example.",
		"mail.xn--bcher-kva.example. CNAME real.example.net.",
		"real.example.net. A 192.0.2.9",
	))
	ctx := context.Background()
	mxs, err := r.MX(ctx, "B\u00fcCHER.example")
	if err != nil || len(mxs) != 1 || mxs[0].Host != "mail.xn--bcher-kva.example" {
		t.Fatalf("MX = %v, %v", mxs, err)
	}
	// An MX host that is a CNAME (RFC 2181 10.3 forbids it; it is common):
	// its addresses are those of the target.
	addrs, err := r.Addrs(ctx, mxs[0].Host)
	if err != nil || len(addrs) != 1 || addrs[0] != netip.MustParseAddr("192.0.2.9") {
		t.Errorf("Addrs = %v, %v", addrs, err)
	}
	if n := srv.QueryCount("xn--bcher-kva.example", "MX"); n != 1 {
		t.Errorf("%d MX queries in A-labels; queries %v", n, srv.Queries())
	}
	for _, tc := range []struct{ in, want string }{
		{"Example.COM.", "example.com"},
		{"b\u00fccher.example", "xn--bcher-kva.example"},
		{"\u4f8b\u3048.\u30c6\u30b9\u30c8", "xn--r8jz45g.xn--zckzah"},
	} {
		if got, err := ToASCII(tc.in); err != nil || got != tc.want {
			t.Errorf("ToASCII(%q) = %q, %v", tc.in, got, err)
		}
	}
	if _, err := ToASCII("xn--a.\u00fc"); !errors.Is(err, ErrNXDomain) {
		t.Errorf("invalid IDN: %v", err)
	}
	if _, err := r.MX(ctx, "a\u00fc..b"); !errors.Is(err, ErrNXDomain) {
		t.Errorf("MX of invalid IDN: %v", err)
	}
}
