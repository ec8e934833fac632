package smtpd

import (
	"net/netip"
	"strings"
	"testing"
)

func TestCheckRcpt(t *testing.T) {
	local := func(d string) bool { return d == "local.test" || d == "[192.0.2.1]" || d == "bücher.test" }
	tests := []struct {
		addr    string
		trusted bool
		want    int // 0: accepted
	}{
		{"u@local.test", false, 0},
		{"u@LOCAL.TEST", false, 0},
		{"u@local.test.", false, 0},
		{"u@[192.0.2.1]", false, 0},
		{"ü@BÜCHER.test", false, 0},
		{"u@other.test", false, 554},
		{"u@other.test", true, 0},
		{"u@[192.0.2.2]", false, 554},
		{"u@[IPv6:2001:db8::1]", true, 0},
		// %-hack, bang path and quoted/nested @ in the local part.
		{"u%other.test@local.test", false, 554},
		{"other.test!u@local.test", false, 554},
		{"u@other.test@local.test", false, 554}, // <"u@other.test"@local.test> after go-smtp
		{"u%other.test@local.test", true, 0},
		// A domain that is not a domain.
		{"u@local.test@", false, 554},
		{"u@local.test@", true, 501},
		{"u@loc al.test", false, 554},
		{"u@-local.test", false, 554},
		{"u@local..test", false, 554},
		{"u@local..test", true, 501},
		{"u@[192.0.2.1", false, 554},
		{"u@[IPv6:192.0.2.1]", false, 554},
		{"u@[fe80::1%eth0]", true, 501},
		{"@local.test", false, 501},
		{"u\x00@local.test", false, 501},
		{"u@local.test\x7f", true, 501},
		{"u@" + strings.Repeat("a.", 130) + "test", true, 501},
	}
	for _, tc := range tests {
		e := checkRcpt(tc.addr, tc.trusted, local)
		got := 0
		if e != nil {
			got = e.Code
			if got == 554 && (e.EnhancedCode != [3]int{5, 7, 1} || !strings.Contains(e.Message, "Relay access denied")) {
				t.Errorf("%q: %+v", tc.addr, e)
			}
		}
		if got != tc.want {
			t.Errorf("checkRcpt(%q, trusted=%v) = %d %v, want %d", tc.addr, tc.trusted, got, e, tc.want)
		}
	}
}

// TestRelayOverSMTP runs the tricks through go-smtp's parser too, from a
// client that is not on loopback, unauthenticated, authenticated, and from
// a source allowed to relay.
func TestRelayOverSMTP(t *testing.T) {
	s := baseSettings(&eventLog{})
	s.PolicyFor = func(ip netip.Addr, user string) Policy {
		return Policy{Relay: ip == netip.MustParseAddr("192.0.2.50"), AllowPlainAuthUnencrypted: true}
	}
	s.CheckPassword = func(u, p string) bool { return u == "alice" && p == "secret" }
	srv, err := New(s, newRecQueue())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })

	rcpts := []struct {
		rcpt           string
		stranger, auth int // expected reply codes
	}{
		{"<u@local.test>", 250, 250},
		{"<U@Local.Test>", 250, 250},
		{"<u@other.test>", 554, 250},
		{"<u%other.test@local.test>", 554, 250},
		{"<other.test!u@local.test>", 554, 250},
		{`<"u@other.test"@local.test>`, 554, 250},
		{`<"u%other.test"@local.test>`, 554, 250},
		{"<@local.test:u@other.test>", 554, 250},
		{"<@a.test,@local.test:u@other.test>", 554, 250},
		{"<@other.test:u@local.test>", 250, 250}, // the route is dropped; u@local.test is local
		{"<u@other.test@local.test>", 554, 250},
		{"<u@[192.0.2.1]>", 554, 250},
		{"u@other.test", 554, 250},
	}
	for _, who := range []string{"stranger", "auth", "relay-source"} {
		ip := "192.0.2.7"
		if who == "relay-source" {
			ip = "192.0.2.50"
		}
		c := wrapClient(t, pipeDial(t, srv, ip, Plain))
		c.expect("", "220")
		c.expect("EHLO c", "250")
		if who == "auth" {
			c.expect("AUTH PLAIN AGFsaWNlAHNlY3JldA==", "235")
		}
		c.expect("MAIL FROM:<a@b.test>", "250")
		for _, r := range rcpts {
			want := r.stranger
			if who != "stranger" {
				want = r.auth
			}
			got := c.cmd("RCPT TO:" + r.rcpt)
			if !strings.HasPrefix(got, itoa(want)) {
				t.Errorf("%s: RCPT TO:%s: %q, want %d", who, r.rcpt, got, want)
			}
			if want == 554 && !strings.HasPrefix(got, "554 5.7.1 ") {
				t.Errorf("%s: RCPT TO:%s: %q, want 554 5.7.1", who, r.rcpt, got)
			}
		}
		c.cmd("QUIT")
	}
}

func itoa(n int) string {
	return string([]byte{byte('0' + n/100), byte('0' + n/10%10), byte('0' + n%10)})
}
