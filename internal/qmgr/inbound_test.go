package qmgr

import (
	"bytes"
	"net/netip"
	"testing"

	"github.com/sluicemta/sluice/internal/config"
)

func TestInboundRouting(t *testing.T) {
	cfg, err := config.Parse("t.conf", []byte(`host-name mx.test.example
<virtual-mta a>
  smtp-source-host 127.0.0.2 a.test.example
</virtual-mta>
<virtual-mta b>
  smtp-source-host 127.0.0.3 b.test.example
</virtual-mta>
<virtual-mta-pool p>
  virtual-mta a
  virtual-mta b
</virtual-mta-pool>
<smtp-user u>
  password $2b$10$abcdefghijklmnopqrstuuABCDEFGHIJKLMNOPQRSTUVWXYZ01234
  default-virtual-mta b
</smtp-user>
<source 127.0.0.1>
  process-x-virtual-mta yes
  process-x-job yes
  default-virtual-mta a
</source>
<source 0/0>
  default-virtual-mta p
</source>
`))
	if err != nil {
		t.Fatal(err)
	}
	trusted := cfg.Source(netip.MustParseAddr("127.0.0.1"), "")
	other := cfg.Source(netip.MustParseAddr("192.0.2.1"), "")
	const body = "\r\nX-Virtual-MTA: b\r\n"
	for _, tc := range []struct {
		name       string
		src        *config.Block
		user       string
		content    string
		vmta, job  string
		wantOutput string
	}{
		{"honoured and removed", trusted, "", "From: x\r\nx-virtual-mta: p\r\nX-Job: 42\r\nSubject: s\r\n" + body, "p", "42", "From: x\r\nSubject: s\r\n" + body},
		{"ignored and removed without process-x-virtual-mta", other, "", "X-Virtual-MTA: a\r\nX-Job: 9\r\n\tfolded\r\nFrom: x\r\n" + body, "p", "", "From: x\r\n" + body},
		{"unknown name falls back", trusted, "", "X-Virtual-MTA: nosuch\r\n" + body, "a", "", body},
		{"user default wins over source default", other, "u", "From: x\r\n" + body, "b", "", "From: x\r\n" + body},
		{"source default", trusted, "", "From: x\r\n" + body, "a", "", "From: x\r\n" + body},
		{"header in the body is content", trusted, "", "From: x\r\n" + body, "a", "", "From: x\r\n" + body},
		{"LF line ends", trusted, "", "X-Virtual-MTA: b\nFrom: x\n\nbody\n", "b", "", "From: x\n\nbody\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v, j, out := InboundRouting(cfg, tc.src, tc.user, []byte(tc.content))
			if v != tc.vmta || j != tc.job || string(out) != tc.wantOutput {
				t.Fatalf("got (%q, %q, %q), want (%q, %q, %q)", v, j, out, tc.vmta, tc.job, tc.wantOutput)
			}
		})
	}
	in := []byte("From: x\r\n\r\nbody")
	if _, _, out := InboundRouting(cfg, trusted, "", in); &out[0] != &in[0] {
		t.Fatal("content copied though nothing was removed")
	}
}

func FuzzInboundRouting(f *testing.F) {
	cfg, err := config.Parse("t.conf", []byte("host-name mx.test.example\n<virtual-mta a>\n smtp-source-host 127.0.0.2 a.example\n</virtual-mta>\n<source 0/0>\n process-x-virtual-mta yes\n process-x-job yes\n</source>\n"))
	if err != nil {
		f.Fatal(err)
	}
	src := cfg.Source(netip.MustParseAddr("192.0.2.1"), "")
	f.Add([]byte("X-Virtual-MTA: a\r\nX-Job: 1\r\n\r\nbody"))
	f.Add([]byte("x-job:\n \n\n"))
	f.Add([]byte("\r\nX-Virtual-MTA: a\r\n"))
	f.Add([]byte("X-Virtual-MTA"))
	f.Fuzz(func(t *testing.T, content []byte) {
		_, _, out := InboundRouting(cfg, src, "", content)
		if len(out) > len(content) {
			t.Fatal("output grew")
		}
		hdr := headerSection(out)
		if _, ok := headerValue(hdr, "x-virtual-mta"); ok {
			t.Fatalf("x-virtual-mta left in %q", out)
		}
		if !bytes.HasSuffix(content, out[len(hdr):]) {
			t.Fatal("body changed")
		}
	})
}
