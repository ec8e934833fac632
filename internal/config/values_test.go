package config

import (
	"net/netip"
	"reflect"
	"strings"
	"testing"
	"time"
)

func dir(t *testing.T, kind, name string) *Directive {
	t.Helper()
	d := lookup(kind, name)
	if d == nil {
		t.Fatalf("no directive %s in <%s>", name, kind)
	}
	return d
}

// TestValueTypes covers every directive type: good values and the error
// for bad ones.
func TestValueTypes(t *testing.T) {
	const h = time.Hour
	tests := []struct {
		kind, name, raw string
		want            any    // nil when an error is expected
		err             string // substring of the error
	}{
		{KindSource, "smtp-service", "yes", true, ""},
		{KindSource, "smtp-service", "No", false, ""},
		{KindSource, "smtp-service", "true", true, ""},
		{KindSource, "smtp-service", "off", false, ""},
		{KindSource, "smtp-service", "maybe", nil, `"maybe" is not yes or no`},

		{KindGlobal, "total-max-smtp-in", "100", int64(100), ""},
		{KindGlobal, "total-max-smtp-in", "-1", nil, "not a non-negative integer"},
		{KindGlobal, "total-max-smtp-in", "ten", nil, "not a non-negative integer"},
		{KindGlobal, "smtp-port", "0", nil, "port 0 is not 1-65535"},
		{KindGlobal, "smtp-port", "70000", nil, "port 70000 is not 1-65535"},

		{KindSource, "max-message-size", "10M", int64(10 << 20), ""},
		{KindSource, "max-message-size", "512K", int64(512 << 10), ""},
		{KindSource, "max-message-size", "1g", int64(1 << 30), ""},
		{KindSource, "max-message-size", "12345", int64(12345), ""},
		{KindSource, "max-message-size", "10T", nil, "not a size"},
		{KindSource, "max-message-size", "M", nil, "not a size"},
		{KindSource, "max-message-size", "99999999999G", nil, "not a size"},

		{KindDomain, "dkim-sign-headers", "From, Subject,,To", []string{"From", "Subject", "To"}, ""},
		{KindDomain, "dkim-sign-headers", ",", nil, "empty list"},

		{KindDomain, "bounce-after", "4d12h", 4*24*h + 12*h, ""},
		{KindDomain, "bounce-after", "30s", 30 * time.Second, ""},
		{KindDomain, "bounce-after", "10m", 10 * time.Minute, ""},
		{KindDomain, "bounce-after", "1h30m", 90 * time.Minute, ""},
		{KindDomain, "bounce-after", "2w", 14 * 24 * h, ""},
		{KindDomain, "bounce-after", "0", time.Duration(0), ""},
		{KindDomain, "bounce-after", "30", nil, "not a duration"},
		{KindDomain, "bounce-after", "10x", nil, "not a duration"},
		{KindDomain, "bounce-after", "h", nil, "not a duration"},
		{KindDomain, "bounce-after", "1.5h", nil, "not a duration"},
		{KindDomain, "bounce-after", "9999999d", nil, "too long"},

		{KindDomain, "retry-after", "10m", []time.Duration{10 * time.Minute}, ""},
		{KindDomain, "retry-after", "1m, 5m,1h", []time.Duration{time.Minute, 5 * time.Minute, h}, ""},
		{KindDomain, "retry-after", "1m,0", nil, "must be positive"},
		{KindDomain, "retry-after", ",", nil, "empty duration list"},

		{KindSource, "smtp-max-auth-failure-rate", "5/m", Rate{5, time.Minute}, ""},
		{KindSource, "smtp-max-auth-failure-rate", "100/10m", Rate{100, 10 * time.Minute}, ""},
		{KindSource, "smtp-max-auth-failure-rate", "3/s", Rate{3, time.Second}, ""},
		{KindSource, "smtp-max-auth-failure-rate", "1000/h", Rate{1000, h}, ""},
		{KindSource, "smtp-max-auth-failure-rate", "10/d", Rate{10, 24 * h}, ""},
		{KindSource, "smtp-max-auth-failure-rate", "unlimited", Rate{}, ""},
		{KindSource, "smtp-max-auth-failure-rate", "5", nil, "not a rate"},
		{KindSource, "smtp-max-auth-failure-rate", "5/", nil, "not a rate"},
		{KindSource, "smtp-max-auth-failure-rate", "5/1h30m", nil, "not a rate"},
		{KindSource, "smtp-max-auth-failure-rate", "x/h", nil, "not a rate"},
		{KindSource, "smtp-max-auth-failure-rate", "0/h", nil, "allows nothing"},

		{KindGlobal, "spool", "/var/spool/pmta", "/var/spool/pmta", ""},
		{KindGlobal, "spool", "/a b", nil, "must be one word"},

		{KindAcctFile, "records", "d,b,tq", []string{"d", "b", "tq"}, ""},
		{KindAcctFile, "records", "d,x", nil, `unknown record type "x"`},
		{KindAcctFile, "records", ",", nil, "empty record type list"},
		{KindAcctFile, "record-fields", "d type,timeLogged,rcpt", RecordFields{"d", []string{"type", "timeLogged", "rcpt"}}, ""},
		{KindAcctFile, "record-fields", "d *,!dsnDiag", RecordFields{"d", []string{"*", "!dsnDiag"}}, ""},
		{KindAcctFile, "record-fields", "zz type", nil, `unknown record type "zz"`},
		{KindAcctFile, "record-fields", "d", nil, "want TYPE FIELD"},

		{KindDomain, "route", "[127.0.0.1]:2599", []HostPort{{"127.0.0.1", 2599, true}}, ""},
		{KindDomain, "route", "mx.Example.com:2525, [mx2.example.com], mx3.example.com",
			[]HostPort{{"mx.example.com", 2525, false}, {"mx2.example.com", 0, true}, {"mx3.example.com", 0, false}}, ""},
		{KindDomain, "smtp-hosts", "[::1]:25", []HostPort{{"::1", 25, true}}, ""},
		{KindDomain, "route", "::1:25", nil, "write an IPv6 host as [addr]:port"},
		{KindDomain, "route", "[127.0.0.1", nil, "missing ]"},
		{KindDomain, "route", "[127.0.0.1]x", nil, "want [host]:port"},
		{KindDomain, "route", "host:", nil, "empty port"},
		{KindDomain, "route", "host:0", nil, "bad port"},
		{KindDomain, "route", "bad_host!:25", nil, "not a host name or address"},

		{KindGlobal, "smtp-listener", "0/0:25", Listener{Port: 25}, ""},
		{KindGlobal, "smtp-listener", "127.0.0.1:2525", Listener{netip.MustParseAddr("127.0.0.1"), 2525}, ""},
		{KindGlobal, "smtp-listener", "[::1]:25", Listener{netip.MustParseAddr("::1"), 25}, ""},
		{KindGlobal, "smtp-listener", "::1:25", nil, "write an IPv6 address as [addr]:port"},
		{KindGlobal, "smtp-listener", "127.0.0.1", nil, "want IP:PORT"},
		{KindGlobal, "smtp-listener", "mail.example.com:25", nil, "is not an IP address"},
		{KindGlobal, "smtp-listener", "127.0.0.1:99999", nil, "bad port"},

		{KindVMTA, "smtp-source-host", "192.0.2.1 mta1.example.com", SourceHost{netip.MustParseAddr("192.0.2.1"), "mta1.example.com"}, ""},
		{KindVMTA, "smtp-source-host", "2001:db8::1 mta1.example.com", SourceHost{netip.MustParseAddr("2001:db8::1"), "mta1.example.com"}, ""},
		{KindVMTA, "smtp-source-host", "192.0.2.1", nil, "want IP HOSTNAME"},
		{KindVMTA, "smtp-source-host", "mta1 192.0.2.1", nil, `"mta1" is not an IP address`},
		{KindVMTA, "smtp-source-host", "192.0.2.1 -bad-", nil, "is not a host name"},

		{KindDomain, "type", "discard", "discard", ""},
		{KindDomain, "type", "pipe", nil, `"pipe" is not one of smtp, discard`},

		{KindSMTPUser, "password", "$2b$10$abcdefghijklmnopqrstuuABCDEFGHIJKLMNOPQRSTUVWXYZ01234", "$2b$10$abcdefghijklmnopqrstuuABCDEFGHIJKLMNOPQRSTUVWXYZ01234", ""},
		{KindSMTPUser, "password", "hunter2", nil, "sluice hash-password"},
		{KindSMTPUser, "password", "$1$abcdefgh$abcdefghijklmnopqrstuv", nil, "must be a bcrypt hash"},
		{KindSMTPUser, "password", "$2x$10$abcdefghijklmnopqrstuuABCDEFGHIJKLMNOPQRSTUVWXYZ01234", nil, "must be a bcrypt hash"},
		{KindSMTPUser, "password", "$2b$99$abcdefghijklmnopqrstuuABCDEFGHIJKLMNOPQRSTUVWXYZ01234", nil, "must be a bcrypt hash"},

		{KindSMTPUser, "source", "{submit}", "{submit}", ""},
		{KindSMTPUser, "source", "submit", nil, "want {name}"},
		{KindSMTPUser, "source", "{auth}", nil, "want {name}"},

		{KindGlobal, "sync-msg-create", "yes", true, ""},
		{KindGlobal, "sync-msg-create", "no", nil, "sync-msg-create no is refused"},
		{KindGlobal, "sync-msg-update", "no", nil, "sync-msg-update no is refused"},
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
			if !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("got %#v, want %#v", got, tt.want)
			}
		})
	}
}

// TestEveryTypeCovered keeps TestValueTypes honest when a type is added.
func TestEveryTypeCovered(t *testing.T) {
	covered := map[Type]bool{TCertKey: true, TDomainKey: true, TPathPair: true} // TestCertificate, TestDomainKey, TestPickup
	for _, d := range []string{"smtp-service", "total-max-smtp-in", "max-message-size", "bounce-after", "retry-after",
		"smtp-max-auth-failure-rate", "spool", "route", "smtp-listener", "smtp-source-host", "records", "record-fields",
		"type", "password", "source", "dkim-sign-headers",
		"source-ip-max-msg-rate", "source-ip-max-smtp-out", "max-data-volume-rate", "reply"} { // traffic_test.go
		for _, dd := range byName[d] {
			covered[dd.Type] = true
		}
	}
	for _, d := range Directives {
		if !covered[d.Type] {
			t.Errorf("type %s (of %s) has no case in TestValueTypes", d.Type, d.Name)
		}
	}
}

func TestDefaultsParse(t *testing.T) {
	for _, d := range Directives {
		if d.Default == "" && d.DefaultDoc == "" {
			continue
		}
		if d.Default != "" {
			if _, ok := defaults[&d]; ok {
				continue
			}
			// defaults is keyed by the table element, not the copy.
			found := false
			for k := range defaults {
				if k.Name == d.Name && reflect.DeepEqual(k.Blocks, d.Blocks) {
					found = true
				}
			}
			if !found {
				t.Errorf("default of %s was not parsed", d.Name)
			}
		}
		if d.Doc == "" {
			t.Errorf("%s has no documentation", d.Name)
		}
	}
}

func TestFormatDurationRoundTrip(t *testing.T) {
	for _, s := range []string{"4d12h", "10m", "30s", "1d", "1h1m1s", "0"} {
		d, err := parseDuration(s)
		if err != nil {
			t.Fatal(err)
		}
		if got := formatDuration(d); got != s {
			t.Errorf("formatDuration(%s) = %s", s, got)
		}
	}
	if got := (Rate{100, 10 * time.Minute}).String(); got != "100/10m" {
		t.Errorf("Rate.String = %s", got)
	}
	if got := (Rate{}).String(); got != "unlimited" {
		t.Errorf("zero Rate.String = %s", got)
	}
}

func TestSuggest(t *testing.T) {
	tests := []struct{ in, want string }{
		{"smtp-listner", " (did you mean smtp-listener?)"},
		{"bounce-afer", " (did you mean bounce-after?)"},
		{"max-smtp-ot", " (did you mean max-smtp-out?)"},
		{"completely-different", ""},
	}
	var known []string
	for _, d := range Directives {
		known = append(known, d.Name)
	}
	for _, tt := range tests {
		if got := suggest(tt.in, known); got != tt.want {
			t.Errorf("suggest(%s) = %q, want %q", tt.in, got, tt.want)
		}
	}
}
