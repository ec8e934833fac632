package config

import (
	"bytes"
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

func loadFull(t *testing.T) *Config {
	t.Helper()
	c, err := Load("testdata/full.conf")
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	return c
}

func TestFullGlobal(t *testing.T) {
	c := loadFull(t)
	g := c.Global()
	if got := g.String("host-name"); got != "mta.example.com" {
		t.Errorf("host-name = %q", got)
	}
	if got := g.String("postmaster"); got != "abuse@example.com" {
		t.Errorf("postmaster = %q", got)
	}
	if got := g.Int("total-max-smtp-out"); got != 3000 {
		t.Errorf("total-max-smtp-out = %d", got)
	}
	if got := g.Strings("relay-domain"); !reflect.DeepEqual(got, []string{"example.com", "example.org"}) {
		t.Errorf("relay-domain = %q", got)
	}
	if got := g.Duration("dsn-bounce-after"); got != 48*time.Hour {
		t.Errorf("dsn-bounce-after = %v", got)
	}
	if !g.Bool("sync-msg-update") {
		t.Error("sync-msg-update false")
	}
	want := []string{":25", "[::1]:2525", ":587"}
	var got []string
	for _, l := range c.Listeners() {
		got = append(got, l.Network())
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("listeners = %q, want %q", got, want)
	}
	if c.TLSCertificate() != nil {
		t.Error("TLSCertificate set without smtp-server-tls-certificate")
	}
	if f, l := g.Where("run-as-user"); !strings.HasSuffix(f, "full.conf") || l != 15 {
		t.Errorf("Where(run-as-user) = %s:%d", f, l)
	}
}

func TestDefaultsApply(t *testing.T) {
	c, err := Parse("min.conf", []byte("host-name a.example\n"))
	if err != nil {
		t.Fatal(err)
	}
	g := c.Global()
	if got := g.String("postmaster"); got != "postmaster@a.example" {
		t.Errorf("postmaster = %q", got)
	}
	if got := g.String("spool"); got != "/var/spool/pmta" {
		t.Errorf("spool = %q", got)
	}
	if got := g.Int("max-received-headers"); got != 50 {
		t.Errorf("max-received-headers = %d", got)
	}
	if ls := c.Listeners(); len(ls) != 1 || ls[0].Network() != ":25" {
		t.Errorf("listeners = %v", ls)
	}
	d := c.Domain("", "anything.example")
	for name, want := range map[string]any{
		"max-smtp-out":           int64(20),
		"max-msg-per-connection": int64(0),
		"bounce-after":           108 * time.Hour,
		"retry-after-dns-error":  time.Minute,
		"default-smtp-port":      int64(25),
		"type":                   "smtp",
		"use-starttls":           true,
		"require-starttls":       false,
	} {
		var got any
		switch want.(type) {
		case int64:
			got = d.Int(name)
		case time.Duration:
			got = d.Duration(name)
		case string:
			got = d.String(name)
		case bool:
			got = d.Bool(name)
		}
		if got != want {
			t.Errorf("%s = %v, want %v", name, got, want)
		}
	}
	if got := d.Durations("retry-after"); !reflect.DeepEqual(got, []time.Duration{10 * time.Minute}) {
		t.Errorf("retry-after = %v", got)
	}
	if d.HostPorts("route") != nil || d.IsSet("route") {
		t.Error("route set by default")
	}
	s := c.Source(netip.MustParseAddr("192.0.2.1"), "")
	if !s.Bool("smtp-service") || s.Bool("always-allow-relaying") || s.Size("max-message-size") != 0 {
		t.Error("source defaults wrong")
	}
	if got := s.Rate("max-connect-rate-per-ip"); !got.Unlimited() {
		t.Errorf("max-connect-rate-per-ip = %v", got)
	}
	if got := s.Rate("smtp-max-auth-failure-rate"); got != (Rate{5, time.Minute}) {
		t.Errorf("smtp-max-auth-failure-rate = %v", got)
	}
}

func TestHostNameFromSystem(t *testing.T) {
	c, err := parse("x.conf", nil, fsys{os.ReadFile, filepath.Glob, func() (string, error) { return "box.example", nil }})
	if err != nil {
		t.Fatal(err)
	}
	if got := c.Global().String("host-name"); got != "box.example" {
		t.Errorf("host-name = %q", got)
	}
	_, err = parse("x.conf", nil, fsys{os.ReadFile, filepath.Glob, func() (string, error) { return "", errors.New("no name") }})
	if err == nil || !strings.Contains(err.Error(), "x.conf: host-name is not set") {
		t.Errorf("err = %v", err)
	}
}

func TestSourceLookup(t *testing.T) {
	c := loadFull(t)
	tests := []struct {
		ip, user       string
		relay, service bool
		size           int64
		vmta           string
	}{
		{"192.0.2.7", "", false, true, 10 << 20, ""},           // 0/0
		{"10.2.3.4", "", true, true, 50 << 20, "pool1"},        // 10/8
		{"10.1.2.3", "", false, false, 0, ""},                  // 10.1/16 wins alone; 10/8 does not add to it
		{"::ffff:10.2.3.4", "", true, true, 50 << 20, "pool1"}, // mapped address
		{"2001:db8::5", "", false, true, 10 << 20, ""},         // 0/0 is IPv4 and IPv6
		{"192.0.2.7", "bob", true, true, 10 << 20, "mta2"},     // {auth} on top of 0/0
		{"192.0.2.7", "alice", true, true, 10 << 20, ""},       // alice's {submit} instead of {auth}
	}
	for _, tt := range tests {
		s := c.Source(netip.MustParseAddr(tt.ip), tt.user)
		if got := s.Bool("always-allow-relaying"); got != tt.relay {
			t.Errorf("%s/%s relay = %v", tt.ip, tt.user, got)
		}
		if got := s.Bool("smtp-service"); got != tt.service {
			t.Errorf("%s/%s smtp-service = %v", tt.ip, tt.user, got)
		}
		if got := s.Size("max-message-size"); got != tt.size {
			t.Errorf("%s/%s max-message-size = %v", tt.ip, tt.user, got)
		}
		if got := s.String("default-virtual-mta"); got != tt.vmta {
			t.Errorf("%s/%s default-virtual-mta = %q", tt.ip, tt.user, got)
		}
	}
	s := c.Source(netip.MustParseAddr("192.0.2.7"), "alice")
	if s.Int("max-rcpt-per-message") != 50 || s.Rate("smtp-max-auth-failure-rate") != (Rate{3, 10 * time.Minute}) ||
		s.Rate("max-connect-rate-per-ip") != (Rate{100, time.Hour}) {
		t.Error("{submit} settings not applied for alice")
	}
}

func TestDomainLookup(t *testing.T) {
	c := loadFull(t)
	tests := []struct {
		vmta, domain string
		maxOut       int64
		perConn      int64
	}{
		{"", "other.example", 40, 0},       // global <domain *>
		{"", "Example.NET.", 40, 10},       // global <domain example.net>, * for the rest
		{"mta1", "example.net", 2, 50},     // mta1's own, then pool1's example.net
		{"mta1", "other.example", 20, 0},   // pool1's <domain *>
		{"mta2", "example.net", 7, 50},     // mta2's <domain *> beats pool1's example.net
		{"pool1", "example.net", 20, 50},   // the pool itself: its example.net then its *
		{"pool1", "gmail.com", 20, 0},      // pool1's * beats the global macro block
		{"", "gmail.com", 5, 0},            // macro
		{"", "googlemail.com", 5, 0},       // macro
		{"", "yahoo.com", 3, 0},            // from the included file
		{"nosuch", "other.example", 40, 0}, // unknown vmta: global only
	}
	for _, tt := range tests {
		d := c.Domain(tt.vmta, tt.domain)
		if got := d.Int("max-smtp-out"); got != tt.maxOut {
			t.Errorf("Domain(%q,%q) max-smtp-out = %d, want %d", tt.vmta, tt.domain, got, tt.maxOut)
		}
		if got := d.Int("max-msg-per-connection"); got != tt.perConn {
			t.Errorf("Domain(%q,%q) max-msg-per-connection = %d, want %d", tt.vmta, tt.domain, got, tt.perConn)
		}
	}
	d := c.Domain("", "example.net")
	if got := d.HostPorts("route"); !reflect.DeepEqual(got, []HostPort{{"127.0.0.1", 2599, true}}) {
		t.Errorf("route = %v", got)
	}
	if got := d.Durations("retry-after"); !reflect.DeepEqual(got, []time.Duration{time.Minute, 5 * time.Minute, 30 * time.Minute}) {
		t.Errorf("retry-after = %v", got)
	}
	if got := d.Duration("connection-idle-timeout"); got != 30*time.Second {
		t.Errorf("connection-idle-timeout = %v", got)
	}
	if got := d.Duration("connect-timeout"); got != time.Minute {
		t.Errorf("connect-timeout from <domain *> = %v", got)
	}
	if got := c.Domain("", "yahoo.com").HostPorts("smtp-hosts"); !reflect.DeepEqual(got, []HostPort{{"mx1.example.com", 2525, false}, {"192.0.2.9", 0, true}}) {
		t.Errorf("smtp-hosts = %v", got)
	}
	if got := c.Domain("", "discard.test").String("type"); got != "discard" {
		t.Errorf("type = %q", got)
	}
	if !c.Domain("", "gmail.com").Bool("require-starttls") {
		t.Error("require-starttls not set for gmail.com")
	}
}

func TestBlocks(t *testing.T) {
	c := loadFull(t)
	var names []string
	for _, v := range c.VMTAs() {
		names = append(names, v.Name)
	}
	if !reflect.DeepEqual(names, []string{"mta1", "mta2"}) {
		t.Errorf("VMTAs = %q", names)
	}
	hosts := c.VMTA("mta1").SourceHosts("smtp-source-host")
	if len(hosts) != 2 || hosts[0].IP != netip.MustParseAddr("192.0.2.1") || hosts[1].HostName != "mta1.example.com" {
		t.Errorf("smtp-source-host = %v", hosts)
	}
	pools := c.Pools()
	if len(pools) != 1 || pools[0].Kind != KindPool || !reflect.DeepEqual(pools[0].Strings("virtual-mta"), []string{"mta1", "mta2"}) {
		t.Errorf("pools = %v", pools)
	}
	if len(c.VMTA("pool1").Domains()) != 2 {
		t.Errorf("pool1 domains = %v", c.VMTA("pool1").Domains())
	}
	users := c.SMTPUsers()
	if len(users) != 2 || c.SMTPUser("alice").String("source") != "{submit}" || c.SMTPUser("bob").String("authentication-method") != "password" {
		t.Errorf("users = %v", users)
	}
	if !strings.HasPrefix(c.SMTPUser("bob").String("password"), "$2y$") {
		t.Error("quoted password not unquoted")
	}
	acct := c.AcctFiles()
	if len(acct) != 1 || acct[0].Name != "/var/log/pmta/acct.csv" {
		t.Fatalf("acct = %v", acct)
	}
	a := acct[0]
	if !reflect.DeepEqual(a.Strings("records"), []string{"d", "b", "t"}) || !a.Bool("world-readable") {
		t.Error("acct-file settings wrong")
	}
	if got := a.RecordFields("record-fields"); len(got) != 2 || got[1].Type != "b" || !reflect.DeepEqual(got[1].Fields, []string{"*", "!dsnDiag"}) {
		t.Errorf("record-fields = %v", got)
	}
	c2, err := Parse("x.conf", []byte("host-name a.example\n<acct-file /x>\n</acct-file>\n"))
	if err != nil {
		t.Fatal(err)
	}
	if got := c2.AcctFiles()[0].Strings("records"); !reflect.DeepEqual(got, []string{"d", "b"}) {
		t.Errorf("default records = %v", got)
	}
}

// TestAccessorMisuse: a name not in the table, or read with the wrong
// type, panics rather than returning a silent zero.
func TestAccessorMisuse(t *testing.T) {
	c := loadFull(t)
	g, d := c.Global(), c.Domain("", "x.example")
	for name, f := range map[string]func(){
		"unknown":          func() { g.Bool("no-such-thing") },
		"wrong block":      func() { g.Int("max-smtp-out") },
		"wrong type":       func() { d.Bool("max-smtp-out") },
		"string of list":   func() { g.String("relay-domain") },
		"strings of one":   func() { g.Strings("spool") },
		"duration of list": func() { d.Duration("retry-after") },
		"isset unknown":    func() { d.IsSet("spool") },
	} {
		t.Run(name, func(t *testing.T) {
			defer func() {
				if recover() == nil {
					t.Error("no panic")
				}
			}()
			f()
		})
	}
}

// TestErrors covers every message the parser and validator produce.
func TestErrors(t *testing.T) {
	const hash = "$2b$10$abcdefghijklmnopqrstuuABCDEFGHIJKLMNOPQRSTUVWXYZ01234"
	tests := []struct {
		name, src string
		want      []string // "LINE: message" each
	}{
		{"typo", "smtp-listner 0/0:25", []string{"1: unknown directive smtp-listner (did you mean smtp-listener?)"}},
		{"no suggestion", "frobnicate yes", []string{"1: unknown directive frobnicate"}},
		{"powermta", "http-mgmt-port 8080\n<domain *>\nignore-chunking yes\n</domain>", []string{
			"1: PowerMTA directive http-mgmt-port is not supported by sluice",
			"3: PowerMTA directive ignore-chunking is not supported by sluice"}},
		{"powermta block", "<bounce-processor>\n<address-list>\nx y\n</address-list>\n</bounce-processor>\nspool /x\nfoo 1",
			[]string{"1: PowerMTA block <bounce-processor> is not supported by sluice", "7: unknown directive foo"}},
		{"skipped unclosed", "<bounce-processor>\n<address-list>\n</address-list>", []string{
			"1: PowerMTA block <bounce-processor> is not supported by sluice",
			"1: <bounce-processor> is not closed before the end of t.conf"}},
		{"unknown block", "<sorce 0/0>\nsmtp-service yes\n</sorce>", []string{"1: unknown block <sorce> (did you mean source?)"}},
		{"wrong block", "<source 0/0>\nmax-smtp-out 3\n</source>\nalways-allow-relaying yes",
			[]string{"2: max-smtp-out is not allowed in <source> (only in <domain>)",
				"4: always-allow-relaying is not allowed at the top level (only in <source>)"}},
		{"both blocks", "max-rcpt-per-message 5", []string{"1: max-rcpt-per-message is not allowed at the top level (only in <source>, <domain>)"}},
		{"sync", "sync-msg-create no\nsync-msg-update false", []string{
			"1: sync-msg-create no is refused: sluice acknowledges mail only after it is fsynced",
			"2: sync-msg-update no is refused"}},
		{"no value", "spool", []string{"1: spool needs a value (DIR)"}},
		{"no value type", "total-max-smtp-in", []string{"1: total-max-smtp-in needs a value (N)"}},
		{"bad value", "total-max-smtp-in lots", []string{`1: total-max-smtp-in: "lots" is not a non-negative integer`}},
		{"twice", "spool /a\nspool /b", []string{"2: spool is already set at t.conf:1"}},
		{"unclosed", "<domain *>\nmax-smtp-out 1", []string{"1: <domain *> is not closed before the end of t.conf"}},
		{"stray close", "</domain>", []string{"1: </domain> closes no open block"}},
		{"close global", "<domain *>\n</global>\n</domain>\nspool /x", []string{"2: </global> does not match <domain *> opened at t.conf:1"}},
		{"mismatch", "<virtual-mta a>\n<domain *>\n</virtual-mta>\nspool /x", []string{"3: </virtual-mta> does not match <domain *> opened at t.conf:2"}},
		{"no >", "<domain *\nmax-smtp-out 2\n</domain>", []string{`1: "<domain *": a block start needs a closing >`}},
		{"close no >", "<domain *>\n</domain\nspool /x", []string{`2: "</domain": a block end needs a closing >`}},
		{"no arg", "<domain>\n</domain>", []string{"1: <domain> needs an argument (NAME|*|$MACRO)"}},
		{"nesting", "<source 0/0>\n<domain *>\n</domain>\n</source>", []string{"2: <domain> is not allowed inside <source>"}},
		{"nested vmta", "<virtual-mta a>\n<virtual-mta b>\n</virtual-mta>\n</virtual-mta>", []string{"2: <virtual-mta> is not allowed inside <virtual-mta>"}},
		{"bad cidr", "<source 10.0.0.0/33>\n</source>", []string{"1: <source 10.0.0.0/33>: not a CIDR"}},
		{"bad source", "<source foo>\n</source>", []string{"1: <source foo>: not an address or CIDR"}},
		{"bad named source", "<source {x>\n</source>", []string{"1: <source {x>: want CIDR, {auth} or {name}"}},
		{"dup source", "<source 10.0.0.1/8>\n</source>\n<source 10.0.0.0/8>\n</source>", []string{"3: <source 10.0.0.0/8> repeats <source 10.0.0.1/8> at t.conf:1"}},
		{"mapped short", "<source ::ffff:0.0.0.0/64>\n</source>", []string{"1: <source ::ffff:0.0.0.0/64>: an IPv4-mapped CIDR needs at least /96"}},
		{"dup user", "<smtp-user a>\npassword " + hash + "\n</smtp-user>\n<smtp-user a>\n</smtp-user>", []string{"4: <smtp-user a> repeats the one at t.conf:1"}},
		{"user name", "<smtp-user a b>\n</smtp-user>", []string{"1: <smtp-user a b>: the name must be one word"}},
		{"user no password", "<smtp-user a>\n</smtp-user>", []string{"1: <smtp-user a> has no password"}},
		{"plain password", "<smtp-user a>\npassword secret\n</smtp-user>", []string{"2: password: must be a bcrypt hash ($2a$, $2b$ or $2y$), not the password itself; make one with `sluice hash-password`"}},
		{"user source", "<smtp-user a>\npassword " + hash + "\nsource {nope}\n</smtp-user>", []string{"3: source: no <source {nope}>"}},
		{"dup vmta", "<virtual-mta a>\n</virtual-mta>\n<virtual-mta-pool a>\nvirtual-mta a\n</virtual-mta-pool>", []string{"3: <virtual-mta-pool a> reuses the name of <virtual-mta> at t.conf:1"}},
		{"vmta name", "<virtual-mta a/b>\n</virtual-mta>", []string{"1: <virtual-mta a/b>: the name must be one word without /"}},
		{"pool member", "<virtual-mta-pool p>\nvirtual-mta nope\n</virtual-mta-pool>", []string{"2: virtual-mta: no <virtual-mta nope>"}},
		{"pool of pool", "<virtual-mta a>\n</virtual-mta>\n<virtual-mta-pool p>\nvirtual-mta a\n</virtual-mta-pool>\n<virtual-mta-pool q>\nvirtual-mta p\n</virtual-mta-pool>",
			[]string{"7: virtual-mta: p is a pool; pools cannot nest"}},
		{"pool twice", "<virtual-mta a>\n</virtual-mta>\n<virtual-mta-pool p>\nvirtual-mta a\nvirtual-mta a\n</virtual-mta-pool>", []string{"5: virtual-mta: a is listed twice"}},
		{"empty pool", "<virtual-mta-pool p>\n</virtual-mta-pool>", []string{"1: <virtual-mta-pool p> has no virtual-mta"}},
		{"default vmta", "<source 0/0>\ndefault-virtual-mta nope\n</source>", []string{"2: default-virtual-mta: no <virtual-mta nope> or <virtual-mta-pool nope>"}},
		{"two v4", "<virtual-mta a>\nsmtp-source-host 192.0.2.1 a.example\nsmtp-source-host 192.0.2.2 a.example\n</virtual-mta>",
			[]string{"3: smtp-source-host: <virtual-mta a> already has a source address of this family at t.conf:2"}},
		{"acct pipe", "<acct-file |/usr/bin/x>\n</acct-file>", []string{"1: <acct-file |/usr/bin/x>: accounting to a pipe is not supported by sluice"}},
		{"dup acct", "<acct-file /a>\n</acct-file>\n<acct-file /a>\n</acct-file>", []string{"3: <acct-file /a> repeats the one at t.conf:1"}},
		{"bad domain", "<domain exa mple>\n</domain>", []string{`1: <domain exa mple>: "exa mple" is not a domain name or *`}},
		{"dup domain", "<domain a.example>\n</domain>\n<domain A.example.>\n</domain>", []string{"3: <domain a.example> repeats <domain a.example> at t.conf:1"}},
		{"undefined macro", "<domain $m>\n</domain>", []string{"1: <domain $m>: domain-macro m is not defined (define it before use)"}},
		{"macro twice", "domain-macro m a.example\ndomain-macro m b.example", []string{"2: domain-macro m is already defined"}},
		{"macro empty", "domain-macro m", []string{"1: domain-macro needs a name and a list"}},
		{"macro bad", "domain-macro m a.example,b..example", []string{`1: domain-macro m: "b..example" is not a domain name`}},
		{"macro in block", "<domain *>\ndomain-macro m a.example\n</domain>", []string{"2: domain-macro is only allowed at the top level"}},
		{"macro overlaps", "domain-macro m a.example,b.example\n<domain b.example>\n</domain>\n<domain $m>\n</domain>", []string{"4: <domain b.example> repeats <domain b.example> at t.conf:2"}},
		{"route and hosts", "<domain *>\nroute a.example\nsmtp-hosts b.example\n</domain>", []string{"3: smtp-hosts and route both set in <domain *>; use one"}},
		{"starttls", "<domain *>\nuse-starttls no\nrequire-starttls yes\n</domain>", []string{"3: require-starttls yes contradicts use-starttls no in <domain *>"}},
		{"dsn vs bounce", "dsn-bounce-after 2d\n<domain *>\nbounce-after 1d\n</domain>", []string{"3: bounce-after 1d must be longer than dsn-bounce-after 2d (t.conf:1)"}},
		{"dsn default vs bounce", "<domain *>\nbounce-after 12h\n</domain>", []string{"2: bounce-after 12h must be longer than dsn-bounce-after 1d (the default)"}},
		{"dsn vs default", "dsn-bounce-after 5d", []string{"1: dsn-bounce-after 5d must be shorter than the default bounce-after 4d12h"}},
		{"dup listener", "smtp-listener 0/0:25\nsmtp-port 25", []string{"2: listener :25 is already set at t.conf:1"}},
		{"host-name", "host-name not_a..host", []string{`1: host-name: "not_a..host" is not a host name`}},
		{"postmaster", "postmaster nobody", []string{`1: postmaster: "nobody" is not a mail address`}},
		{"relay-domain", "relay-domain a..b", []string{`1: relay-domain: "a..b" is not a domain name`}},
		{"cert", "smtp-server-tls-certificate nope.pem,nope.key", []string{"1: smtp-server-tls-certificate: load certificate: open "}},
		{"cert form", "smtp-server-tls-certificate nope.pem", []string{"1: smtp-server-tls-certificate: want CERT-FILE,KEY-FILE"}},
		{"include missing", "include nope.conf", []string{"1: include nope.conf: open "}},
		{"include empty", "include", []string{"1: include needs a file name"}},
		{"many at once", "a 1\nb 2\n<domain *>\nc 3\n</domain>", []string{"1: unknown directive a", "2: unknown directive b", "4: unknown directive c"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := t.TempDir()
			_, err := parse(filepath.Join(d, "t.conf"), []byte(tt.src+"\n"), testFS)
			var es Errors
			if !errors.As(err, &es) {
				t.Fatalf("err = %v, want Errors", err)
			}
			var got []string
			for _, e := range es {
				if e.File != filepath.Join(d, "t.conf") {
					t.Errorf("error in file %q", e.File)
				}
				got = append(got, e.Error())
			}
			if len(got) != len(tt.want) {
				t.Fatalf("got %d errors, want %d:\n%s", len(got), len(tt.want), es)
			}
			for i, w := range tt.want {
				line, msg, _ := strings.Cut(w, ": ")
				g := es[i]
				gotMsg := strings.ReplaceAll(g.Msg, d+"/", "")
				if itoa(g.Line) != line || !strings.HasPrefix(gotMsg, msg) {
					t.Errorf("error %d = %d: %s\nwant        %s", i, g.Line, gotMsg, w)
				}
			}
		})
	}
}

func itoa(n int) string { return strconv.Itoa(n) }

var testFS = fsys{os.ReadFile, filepath.Glob, func() (string, error) { return "h.example", nil }}

func TestErrorFormat(t *testing.T) {
	es := Errors{{File: "a.conf", Line: 3, Msg: "x"}, {File: "b.conf", Msg: "y"}}
	if got := es.Error(); got != "a.conf:3: x\nb.conf: y" {
		t.Errorf("Errors.Error() = %q", got)
	}
}

func writeFiles(t *testing.T, files map[string]string) string {
	t.Helper()
	d := t.TempDir()
	for name, src := range files {
		p := filepath.Join(d, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(src), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return d
}

func TestInclude(t *testing.T) {
	d := writeFiles(t, map[string]string{
		"main.conf":       "host-name h.example\ninclude sub/a.conf\ninclude " + "conf.d/*.conf\ninclude empty.d/*.conf\n",
		"sub/a.conf":      "<domain a.example>\ninclude b.conf\n</domain>\n", // relative to sub/
		"sub/b.conf":      "max-smtp-out 3\n",
		"conf.d/1.conf":   "relay-domain one.example\n",
		"conf.d/2.conf":   "relay-domain two.example\n",
		"conf.d/skip.txt": "not read\n",
	})
	c, err := Load(filepath.Join(d, "main.conf"))
	if err != nil {
		t.Fatal(err)
	}
	if got := c.Domain("", "a.example").Int("max-smtp-out"); got != 3 {
		t.Errorf("max-smtp-out from nested include = %d", got)
	}
	if got := c.Global().Strings("relay-domain"); !reflect.DeepEqual(got, []string{"one.example", "two.example"}) {
		t.Errorf("relay-domain = %q", got)
	}
	if f, l := c.Domain("", "a.example").Where("max-smtp-out"); f != filepath.Join(d, "sub/b.conf") || l != 1 {
		t.Errorf("Where = %s:%d", f, l)
	}
}

func TestIncludeErrors(t *testing.T) {
	d := writeFiles(t, map[string]string{
		"main.conf":   "host-name h.example\ninclude a.conf\ninclude self.conf\ninclude open.conf\nbogus 1\n",
		"a.conf":      "include b.conf\n",
		"b.conf":      "spool /x\ninclude a.conf\n",
		"self.conf":   "include self.conf\n",
		"open.conf":   "<domain *>\n",
		"unused.conf": "",
	})
	_, err := Load(filepath.Join(d, "main.conf"))
	var es Errors
	if !errors.As(err, &es) {
		t.Fatalf("err = %v", err)
	}
	want := []string{
		"main.conf:5: unknown directive bogus",
		"b.conf:2: include cycle: " + d + "/a.conf -> " + d + "/b.conf -> " + d + "/a.conf",
		"self.conf:1: include cycle: " + d + "/self.conf -> " + d + "/self.conf",
		"open.conf:1: <domain *> is not closed before the end of " + d + "/open.conf",
	}
	if len(es) != len(want) {
		t.Fatalf("got:\n%s", es)
	}
	for i, w := range want {
		if got := strings.TrimPrefix(es[i].Error(), d+"/"); got != w {
			t.Errorf("error %d = %q\nwant %q", i, got, w)
		}
	}
}

func TestIncludeDepth(t *testing.T) {
	files := map[string]string{"main.conf": "host-name h.example\ninclude 0.conf\n"}
	for i := 0; i < 20; i++ {
		files[strconv.Itoa(i)+".conf"] = "include " + strconv.Itoa(i+1) + ".conf\n"
	}
	files["20.conf"] = ""
	d := writeFiles(t, files)
	_, err := Load(filepath.Join(d, "main.conf"))
	if err == nil || !strings.Contains(err.Error(), "includes nested more than 16 deep") {
		t.Fatalf("err = %v", err)
	}
}

func TestComments(t *testing.T) {
	src := "# full line\nhost-name\th.example # trailing\n\t  \n  spool /var/spool#notacomment\r\n<domain *> # after a block\n</domain>\n"
	c, err := Parse("t.conf", []byte(src))
	if err != nil {
		t.Fatal(err)
	}
	if got := c.Global().String("spool"); got != "/var/spool#notacomment" {
		t.Errorf("spool = %q", got)
	}
	if got := c.Global().String("host-name"); got != "h.example" {
		t.Errorf("host-name = %q", got)
	}
}

func TestMacroExpansionInVMTA(t *testing.T) {
	src := "host-name h.example\ndomain-macro big a.example,b.example\n<virtual-mta v>\n<domain $big>\nmax-smtp-out 9\n</domain>\n</virtual-mta>\n"
	c, err := Parse("t.conf", []byte(src))
	if err != nil {
		t.Fatal(err)
	}
	for _, dom := range []string{"a.example", "b.example"} {
		if got := c.Domain("v", dom).Int("max-smtp-out"); got != 9 {
			t.Errorf("%s: max-smtp-out = %d", dom, got)
		}
	}
	if got := c.Domain("v", "c.example").Int("max-smtp-out"); got != 20 {
		t.Errorf("c.example: max-smtp-out = %d", got)
	}
	if keys := slices.Sorted(mapKeys(c.VMTA("v").Domains())); !reflect.DeepEqual(keys, []string{"a.example", "b.example"}) {
		t.Errorf("domains = %q", keys)
	}
}

func mapKeys(m map[string]*Block) func(func(string) bool) {
	return func(yield func(string) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	}
}

func TestDefaultConfig(t *testing.T) {
	d := t.TempDir()
	p := filepath.Join(d, "sluice.conf")
	if err := os.WriteFile(p, []byte(DefaultConfig(d)), 0o644); err != nil {
		t.Fatal(err)
	}
	c, err := Load(p)
	if err != nil {
		t.Fatal(err)
	}
	if ls := c.Listeners(); len(ls) != 1 || ls[0].Network() != "127.0.0.1:2525" {
		t.Errorf("listeners = %v", ls)
	}
	if got := c.Global().String("spool"); got != filepath.Join(d, "spool") {
		t.Errorf("spool = %q", got)
	}
	if !c.Source(netip.MustParseAddr("127.0.0.1"), "").Bool("always-allow-relaying") {
		t.Error("loopback may not relay")
	}
	if c.Source(netip.MustParseAddr("192.0.2.1"), "").Bool("always-allow-relaying") {
		t.Error("anyone may relay")
	}
	if len(c.AcctFiles()) != 1 || !strings.HasPrefix(c.AcctFiles()[0].Name, d) {
		t.Errorf("acct files = %v", c.AcctFiles())
	}
	if _, ok := c.Global().Domains()["*"]; !ok {
		t.Error("no <domain *>")
	}
}

func TestLocate(t *testing.T) {
	t.Setenv("SLUICE_CONFIG", "")
	if got := Locate(""); got != "/etc/pmta/config" {
		t.Errorf("Locate() = %q", got)
	}
	t.Setenv("SLUICE_CONFIG", "/env.conf")
	if got := Locate(""); got != "/env.conf" {
		t.Errorf("Locate() with env = %q", got)
	}
	if got := Locate("/flag.conf"); got != "/flag.conf" {
		t.Errorf("Locate(flag) = %q", got)
	}
}

func TestCheck(t *testing.T) {
	d := writeFiles(t, map[string]string{
		"good.conf": "host-name h.example\n",
		"bad.conf":  "host-name h.example\nsync-msg-create no\nsmtp-listner 0/0:25\n",
	})
	var out bytes.Buffer
	if rc := Check(filepath.Join(d, "good.conf"), &out); rc != 0 || out.Len() != 0 {
		t.Errorf("good: rc=%d out=%q", rc, out.String())
	}
	if rc := Check(filepath.Join(d, "bad.conf"), &out); rc != 78 {
		t.Errorf("bad: rc=%d", rc)
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if len(lines) != 2 || !strings.HasPrefix(lines[0], filepath.Join(d, "bad.conf")+":2: sync-msg-create no is refused") ||
		!strings.HasPrefix(lines[1], filepath.Join(d, "bad.conf")+":3: unknown directive smtp-listner") {
		t.Errorf("output:\n%s", out.String())
	}
	out.Reset()
	if rc := Check(filepath.Join(d, "missing.conf"), &out); rc != 78 || !strings.Contains(out.String(), "missing.conf: cannot read config: no such file") {
		t.Errorf("missing: rc=%d out=%q", rc, out.String())
	}
}

// BenchmarkDomainLookup is the per-delivery cost of reading a queue's
// settings: go test -run '^$' -bench DomainLookup ./internal/config
func BenchmarkDomainLookup(b *testing.B) {
	c, err := Load("testdata/full.conf")
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		d := c.Domain("mta1", "example.net")
		_ = d.Int("max-smtp-out")
		_ = d.Durations("retry-after")
		_ = d.HostPorts("route")
	}
}
