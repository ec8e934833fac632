package config

import (
	"net/netip"
	"strings"
	"testing"
	"time"
)

func TestTrafficValues(t *testing.T) {
	p24 := netip.MustParsePrefix("192.0.2.0/24")
	tests := []struct {
		kind, name, raw string
		want            any
		err             string
	}{
		{KindDomain, "source-ip-max-msg-rate", "192.0.2.0/24 20/s", CIDRRate{p24, Rate{20, time.Second}}, ""},
		{KindDomain, "source-ip-max-msg-rate", "192.0.2.9/24 20/s", CIDRRate{p24, Rate{20, time.Second}}, ""},
		{KindDomain, "source-ip-max-msg-rate", "0/0 100/h", CIDRRate{netip.Prefix{}, Rate{100, time.Hour}}, ""},
		{KindDomain, "source-ip-max-msg-rate", "127.0.0.2 5/m", CIDRRate{netip.MustParsePrefix("127.0.0.2/32"), Rate{5, time.Minute}}, ""},
		{KindDomain, "source-ip-max-connect-rate", "::1 5/m", CIDRRate{netip.MustParsePrefix("::1/128"), Rate{5, time.Minute}}, ""},
		{KindDomain, "source-ip-max-msg-rate", "20/s", nil, "want CIDR VALUE"},
		{KindDomain, "source-ip-max-msg-rate", "bogus 20/s", nil, "not an address or CIDR"},
		{KindDomain, "source-ip-max-msg-rate", "10.0.0.0/33 20/s", nil, "not a CIDR"},
		{KindDomain, "source-ip-max-msg-rate", "10.0.0.0/8 fast", nil, "not a rate"},
		{KindDomain, "source-ip-max-smtp-out", "10.0.0.0/8 3", CIDRInt{netip.MustParsePrefix("10.0.0.0/8"), 3}, ""},
		{KindDomain, "source-ip-max-smtp-out", "10.0.0.0/8 -3", nil, "non-negative integer"},
		{KindDomain, "max-data-volume-rate", "100M/h", Rate{100 << 20, time.Hour}, ""},
		{KindDomain, "max-data-volume-rate", "512K/10m", Rate{512 << 10, 10 * time.Minute}, ""},
		{KindDomain, "max-data-volume-rate", "unlimited", Rate{}, ""},
		{KindDomain, "max-data-volume-rate", "100M", nil, "not a volume rate"},
		{KindDomain, "max-data-volume-rate", "0/h", nil, "not a volume rate"},
		{KindDomain, "queue-priority", "101", nil, "not 0-100"},
		{KindVMTA, "pool-weight", "0", nil, "not 1-1000"},
		{KindPatterns, "reply", "/foo/", nil, "needs an action"},
		{KindPatterns, "reply", "/foo( mode=backoff", nil, "no closing /"},
		{KindPatterns, "reply", "/foo(/ mode=backoff", nil, "regex /foo(/"},
		{KindPatterns, "reply", "/x/ mode=slow", nil, "want mode=backoff or mode=normal"},
		{KindPatterns, "reply", "/x/ jump", nil, `unknown action "jump"`},
		{KindPatterns, "reply", "/x/ reenable-after=1h", nil, "needs disable-source-ip"},
		{KindPatterns, "reply", "foo mode=backoff", nil, "want /REGEX/"},
	}
	for _, tt := range tests {
		t.Run(tt.name+"="+tt.raw, func(t *testing.T) {
			got, err := parseValue(dir(t, tt.kind, tt.name), tt.raw, t.TempDir())
			if tt.want == nil {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("got (%v, %v), want error containing %q", got, err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got != tt.want {
				t.Fatalf("got %#v, want %#v", got, tt.want)
			}
		})
	}
}

func TestPatternRule(t *testing.T) {
	v, err := parseValue(dir(t, KindPatterns, "reply"), `/^421 4\.7\.0 .*\/ deferred/ mode=backoff disable-source-ip reenable-after=30m defer-queue`, "")
	if err != nil {
		t.Fatal(err)
	}
	r := v.(PatternRule)
	if r.Mode != "backoff" || !r.DisableSourceIP || r.ReenableAfter != 30*time.Minute || !r.DeferQueue {
		t.Fatalf("rule %+v", r)
	}
	if !r.Re.MatchString("421 4.7.0 Try AGAIN / DEFERRED") || r.Re.MatchString("450 4.7.0 x / deferred") {
		t.Fatalf("regex %s matches wrong", r.Re)
	}
}

func TestTrafficConfig(t *testing.T) {
	good := `host-name mx.example.com
<smtp-pattern-list isp>
  reply /421 4\.7\.0/ mode=backoff
  reply /^250/ mode=normal
</smtp-pattern-list>
<virtual-mta a>
  smtp-source-host 127.0.0.2 a.example.com
  pool-weight 3
</virtual-mta>
<smtp-user u>
  password $2b$10$abcdefghijklmnopqrstuuABCDEFGHIJKLMNOPQRSTUVWXYZ01234
  default-virtual-mta a
</smtp-user>
<source 127.0.0.1>
  process-x-virtual-mta yes
</source>
<domain *>
  smtp-pattern-list isp
  source-ip-max-msg-rate 127.0.0.0/8 20/s
  source-ip-max-msg-rate 10.0.0.0/8 5/s
  list-unsubscribe https://u.example.com/{rcpt}
  queue-priority 80
</domain>
`
	cfg, err := Parse("t.conf", []byte(good))
	if err != nil {
		t.Fatal(err)
	}
	d := cfg.Domain("a", "x.example")
	if got := d.CIDRRates("source-ip-max-msg-rate"); len(got) != 2 || !got[0].Matches(netip.MustParseAddr("127.0.0.2")) || got[1].Matches(netip.MustParseAddr("127.0.0.2")) {
		t.Fatalf("rates %+v", got)
	}
	if pl := cfg.PatternList("isp"); pl == nil || len(pl.PatternRules("reply")) != 2 {
		t.Fatalf("pattern list %+v", pl)
	}
	if cfg.VMTA("a").Int("pool-weight") != 3 || d.Int("queue-priority") != 80 || d.Duration("backoff-to-normal-after") != time.Hour {
		t.Fatal("values")
	}
	for _, tc := range []struct{ src, err string }{
		{"<domain *>\n smtp-pattern-list nope\n</domain>\n", "no <smtp-pattern-list nope>"},
		{"<domain *>\n list-unsubscribe http://x.example/u\n</domain>\n", "must be an https://"},
		{"<smtp-user u>\n password $2b$10$abcdefghijklmnopqrstuuABCDEFGHIJKLMNOPQRSTUVWXYZ01234\n default-virtual-mta ghost\n</smtp-user>\n", "no <virtual-mta ghost>"},
		{"<smtp-pattern-list a>\n reply /x/ defer-queue\n</smtp-pattern-list>\n<smtp-pattern-list a>\n</smtp-pattern-list>\n", "repeats"},
	} {
		_, err := Parse("t.conf", []byte("host-name mx.example.com\n"+tc.src))
		if err == nil || !strings.Contains(err.Error(), tc.err) {
			t.Errorf("%q: err %v, want %q", tc.src, err, tc.err)
		}
	}
}

func FuzzTrafficValues(f *testing.F) {
	for _, s := range []string{`/^421 4\.7\.0/ mode=backoff`, `/a\/b/ disable-source-ip reenable-after=1h defer-queue`, `/(/ x`, `//`, "10.0.0.0/8 20/s", "0/0 5", "100M/h", "::1 1/m"} {
		f.Add(s)
	}
	rule, rate, n, vol := lookup(KindPatterns, "reply"), lookup(KindDomain, "source-ip-max-msg-rate"), lookup(KindDomain, "source-ip-max-smtp-out"), lookup(KindDomain, "max-data-volume-rate")
	f.Fuzz(func(t *testing.T, raw string) {
		if v, err := parseValue(rule, raw, ""); err == nil {
			r := v.(PatternRule)
			if r.Re == nil || (r.Mode == "" && !r.DisableSourceIP && !r.DeferQueue) {
				t.Fatalf("%q: rule %+v without regex or action", raw, r)
			}
		}
		if v, err := parseValue(rate, raw, ""); err == nil && v.(CIDRRate).Rate.N < 0 {
			t.Fatalf("%q: negative rate", raw)
		}
		if v, err := parseValue(n, raw, ""); err == nil && v.(CIDRInt).N < 0 {
			t.Fatalf("%q: negative count", raw)
		}
		if v, err := parseValue(vol, raw, ""); err == nil {
			if r := v.(Rate); !r.Unlimited() && (r.N <= 0 || r.Per <= 0) {
				t.Fatalf("%q: bad volume rate %+v", raw, r)
			}
		}
	})
}
