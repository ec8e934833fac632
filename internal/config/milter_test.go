package config

import (
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestMilterConfig(t *testing.T) {
	good := `host-name mx.example.com
<milter odk>
  socket unix:/run/opendkim/opendkim.sock
  default-action accept
  command-timeout 10s
  protocol 4
  connect-macros none
  mail-macros i,{auth_authen}
</milter>
<milter rspamd>
  socket inet:127.0.0.1:11332
</milter>
<source 127.0.0.1/32>
  smtpd-milters odk,rspamd
</source>
non-smtpd-milters rspamd
`
	cfg, err := Parse("t.conf", []byte(good))
	if err != nil {
		t.Fatal(err)
	}
	if got := len(cfg.Milters()); got != 2 {
		t.Fatalf("%d milters, want 2", got)
	}
	odk := cfg.Milter("odk")
	if odk.String("default-action") != "accept" || odk.Duration("command-timeout") != 10*time.Second ||
		odk.Duration("content-timeout") != 5*time.Minute || odk.Int("protocol") != 4 {
		t.Fatalf("odk values wrong")
	}
	if got := odk.Strings("connect-macros"); !slices.Equal(got, []string{"none"}) {
		t.Fatalf("connect-macros %q", got)
	}
	r := cfg.Milter("rspamd")
	if r.String("default-action") != "tempfail" || r.Duration("connect-timeout") != 30*time.Second || r.Int("protocol") != 6 {
		t.Fatal("rspamd defaults wrong")
	}
	if got := r.Strings("rcpt-macros"); !slices.Equal(got, []string{"i", "{rcpt_addr}", "{rcpt_host}", "{rcpt_mailer}"}) {
		t.Fatalf("rcpt-macros default %q", got)
	}
	if got := cfg.Source(netip.MustParseAddr("127.0.0.1"), "").Strings("smtpd-milters"); !slices.Equal(got, []string{"odk", "rspamd"}) {
		t.Fatalf("smtpd-milters %q", got)
	}
	if got := cfg.Global().Strings("non-smtpd-milters"); !slices.Equal(got, []string{"rspamd"}) {
		t.Fatalf("non-smtpd-milters %q", got)
	}

	for _, tc := range []struct{ src, err string }{
		{"<milter a>\n</milter>\n", "t.conf:2: <milter a> needs a socket"},
		{"<milter a>\n socket tcp:1.2.3.4:5\n</milter>\n", `t.conf:3: socket: socket "tcp:1.2.3.4:5": unknown transport`},
		{"<milter a>\n socket inet:127.0.0.1:0\n</milter>\n", "bad port"},
		{"<milter a>\n socket unix:/x\n protocol 5\n</milter>\n", "protocol 5 is not 2, 3, 4 or 6"},
		{"<milter a>\n socket unix:/x\n default-action bounce\n</milter>\n", "default-action"},
		{"<milter a>\n socket unix:/x\n</milter>\n<milter a>\n socket unix:/y\n</milter>\n", "t.conf:5: <milter a> repeats the one at t.conf:2"},
		{"<source 0/0>\n smtpd-milters ghost\n</source>\n", "t.conf:3: smtpd-milters: no <milter ghost>"},
		{"<milter a>\n socket unix:/x\n</milter>\nnon-smtpd-milters a,a\n", "t.conf:5: non-smtpd-milters: a is named twice"},
		{"<milter a>\n socket unix:/x\n</milter>\n<source {auth}>\n smtpd-milters a,b\n</source>\n", "t.conf:6: smtpd-milters: no <milter b>"},
		{"<source 0/0>\n <milter a>\n </milter>\n</source>\n", "<milter> is not allowed inside <source>"},
		{"smtpd-milters a\n", "smtpd-milters is not allowed at the top level"},
	} {
		_, err := Parse("t.conf", []byte("host-name mx.example.com\n"+tc.src))
		if err == nil || !strings.Contains(err.Error(), tc.err) {
			t.Errorf("%q: got %v, want error containing %q", tc.src, err, tc.err)
		}
	}
}
