package fakedns

import (
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"
)

func ask(t *testing.T, s *Server, network, name string, qtype uint16) (*dns.Msg, error) {
	t.Helper()
	c := &dns.Client{Net: network, Timeout: 300 * time.Millisecond}
	m := new(dns.Msg)
	m.SetQuestion(dns.Fqdn(name), qtype)
	r, _, err := c.Exchange(m, s.Addr())
	return r, err
}

func answers(r *dns.Msg) string {
	var out []string
	for _, rr := range r.Answer {
		f := strings.Fields(rr.String())
		out = append(out, f[0]+" "+strings.Join(f[3:], " "))
	}
	return strings.Join(out, "; ")
}

func TestAnswers(t *testing.T) {
	s := Start(t)
	s.AddMX("Example.COM", 10, "mx1.example.com")
	s.AddMX("example.com", 20, "mx2.example.com.")
	s.AddA("mx1.example.com", "127.0.0.1", "::1")
	s.AddAAAA("mx2.example.com", "::1")
	s.AddCNAME("alias.example.com", "mx1.example.com")
	s.AddCNAME("loop.example.com", "loop.example.com")
	s.AddCNAME("out.example.com", "elsewhere.test")
	s.AddNullMX("nomail.example.org")
	s.AddTXT("sel._domainkey.example.com", "v=DKIM1; k=rsa; p="+strings.Repeat("A", 300))
	if err := s.Add("spf.example.com. TXT \"v=spf1 -all\"", "x.example.com. 60 IN A 127.0.0.9"); err != nil {
		t.Fatal(err)
	}
	s.SetServFail("broken.example.com")
	s.AddA("gone.example.com", "127.0.0.2")
	s.SetNXDomain("gone.example.com")

	tests := []struct {
		name  string
		qtype uint16
		rcode int
		want  string
	}{
		{"example.com", dns.TypeMX, dns.RcodeSuccess, "example.com. MX 10 mx1.example.com.; example.com. MX 20 mx2.example.com."},
		{"MX1.example.com", dns.TypeA, dns.RcodeSuccess, "mx1.example.com. A 127.0.0.1"},
		{"mx1.example.com", dns.TypeAAAA, dns.RcodeSuccess, "mx1.example.com. AAAA ::1"},
		{"mx2.example.com", dns.TypeA, dns.RcodeSuccess, ""}, // NODATA
		{"alias.example.com", dns.TypeA, dns.RcodeSuccess, "alias.example.com. CNAME mx1.example.com.; mx1.example.com. A 127.0.0.1"},
		{"alias.example.com", dns.TypeCNAME, dns.RcodeSuccess, "alias.example.com. CNAME mx1.example.com."},
		{"out.example.com", dns.TypeA, dns.RcodeSuccess, "out.example.com. CNAME elsewhere.test."},
		{"loop.example.com", dns.TypeA, dns.RcodeServerFailure, ""},
		{"nomail.example.org", dns.TypeMX, dns.RcodeSuccess, "nomail.example.org. MX 0 ."},
		{"spf.example.com", dns.TypeTXT, dns.RcodeSuccess, `spf.example.com. TXT "v=spf1 -all"`},
		{"x.example.com", dns.TypeA, dns.RcodeSuccess, "x.example.com. A 127.0.0.9"},
		{"nowhere.example.com", dns.TypeMX, dns.RcodeNameError, ""},
		{"broken.example.com", dns.TypeMX, dns.RcodeServerFailure, ""},
		{"gone.example.com", dns.TypeA, dns.RcodeNameError, ""},
	}
	for _, tc := range tests {
		for _, network := range []string{"udp", "tcp"} {
			r, err := ask(t, s, network, tc.name, tc.qtype)
			if err != nil {
				t.Fatalf("%s %s %s: %v", network, tc.name, dns.TypeToString[tc.qtype], err)
			}
			if r.Rcode != tc.rcode || answers(r) != tc.want || !r.Authoritative {
				t.Errorf("%s %s %s: rcode %s answers %q, want %s %q",
					network, tc.name, dns.TypeToString[tc.qtype], dns.RcodeToString[r.Rcode], answers(r), dns.RcodeToString[tc.rcode], tc.want)
			}
			if tc.rcode == dns.RcodeNameError && (len(r.Ns) != 1 || r.Ns[0].Header().Rrtype != dns.TypeSOA) {
				t.Errorf("%s: negative answer without SOA: %v", tc.name, r.Ns)
			}
		}
	}

	r, err := ask(t, s, "tcp", "sel._domainkey.example.com", dns.TypeTXT)
	if err != nil {
		t.Fatal(err)
	}
	txt := r.Answer[0].(*dns.TXT)
	if len(txt.Txt) != 2 || len(txt.Txt[0]) != 255 || strings.Join(txt.Txt, "") != "v=DKIM1; k=rsa; p="+strings.Repeat("A", 300) {
		t.Errorf("long TXT = %q", txt.Txt)
	}
}

func TestTimeoutAndLog(t *testing.T) {
	s := Start(t)
	s.AddMX("slow.example.com", 10, "mx.slow.example.com")
	s.SetTimeout("slow.example.com", true)
	if _, err := ask(t, s, "udp", "slow.example.com", dns.TypeMX); err == nil {
		t.Fatal("silent name answered")
	}
	s.SetTimeout("slow.example.com", false)
	if r, err := ask(t, s, "udp", "slow.example.com", dns.TypeMX); err != nil || len(r.Answer) != 1 {
		t.Fatalf("after SetTimeout(false): %v %v", r, err)
	}
	ask(t, s, "tcp", "other.test", dns.TypeA)
	qs := s.Queries()
	if len(qs) != 3 || qs[0].Name != "slow.example.com." || qs[0].Type != "MX" || qs[0].Net != "udp" || qs[2].Net != "tcp" {
		t.Errorf("queries = %+v", qs)
	}
	if n := s.QueryCount("SLOW.example.com", "MX"); n != 2 {
		t.Errorf("QueryCount = %d", n)
	}
	s.ResetQueries()
	if len(s.Queries()) != 0 || len(s.Names()) != 1 {
		t.Errorf("ResetQueries: %v %v", s.Queries(), s.Names())
	}
	s.Remove("slow.example.com")
	if r, _ := ask(t, s, "udp", "slow.example.com", dns.TypeMX); r.Rcode != dns.RcodeNameError {
		t.Errorf("removed name rcode %d", r.Rcode)
	}
}

func TestTruncationOverUDP(t *testing.T) {
	s := Start(t)
	for i := 0; i < 40; i++ {
		s.AddTXT("big.example.com", strings.Repeat("x", 100))
	}
	r, err := ask(t, s, "udp", "big.example.com", dns.TypeTXT)
	if err != nil {
		t.Fatal(err)
	}
	if !r.Truncated {
		t.Errorf("4 kB answer over UDP not truncated (%d answers)", len(r.Answer))
	}
	r, err = ask(t, s, "tcp", "big.example.com", dns.TypeTXT)
	if err != nil || len(r.Answer) != 40 {
		t.Fatalf("TCP: %d answers, %v", len(r.Answer), err)
	}
}

func TestPTR(t *testing.T) {
	s := Start(t)
	if err := s.AddPTR("127.0.0.2", "client.example.org"); err != nil {
		t.Fatal(err)
	}
	if err := s.AddPTR("::1", "localhost"); err != nil {
		t.Fatal(err)
	}
	if s.AddPTR("not-an-ip", "x") == nil {
		t.Error("bad IP accepted")
	}
	r, err := ask(t, s, "udp", "2.0.0.127.in-addr.arpa", dns.TypePTR)
	if err != nil || answers(r) != "2.0.0.127.in-addr.arpa. PTR client.example.org." {
		t.Errorf("PTR = %q, %v", answers(r), err)
	}
	rev, _ := dns.ReverseAddr("::1")
	if r, err := ask(t, s, "tcp", rev, dns.TypePTR); err != nil || len(r.Answer) != 1 {
		t.Errorf("IPv6 PTR: %v %v", r, err)
	}
}

func TestAddRejectsBadRecord(t *testing.T) {
	s := Start(t)
	if err := s.Add("example.com. MX ten mx."); err == nil {
		t.Error("bad record accepted")
	}
}
