package main

import (
	"bufio"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/sluicemta/sluice/internal/testutil/fakedns"
)

func TestResolve(t *testing.T) {
	dns := fakedns.Start(t)
	if err := dns.Add(
		"example.com. MX 10 mx1.example.com.",
		"example.com. MX 20 mx2.example.com.",
		"mx1.example.com. A 127.0.0.1",
		"mx1.example.com. AAAA ::1",
		"mx2.example.com. A 127.0.0.2",
		"nomx.example. A 127.0.0.3",
		"null.example. MX 0 .",
		"xn--bcher-kva.example. MX 5 mx1.example.com.",
	); err != nil {
		t.Fatal(err)
	}
	dns.SetServFail("broken.example")
	for _, tc := range []struct {
		domain string
		rc     int
		want   []string
	}{
		{"example.com", 0, []string{"MX 10 mx1.example.com: 127.0.0.1 ::1\n", "MX 20 mx2.example.com: 127.0.0.2\n"}},
		{"nomx.example", 0, []string{"no MX records", "A/AAAA nomx.example: 127.0.0.3\n"}},
		{"null.example", exitNoHost, []string{"null MX", "5.1.10"}},
		{"nx.example", exitNoHost, []string{"does not exist (NXDOMAIN)", "5.1.2"}},
		{"broken.example", exitTempFail, []string{"temporary DNS failure", "deferred"}},
		{"b\u00fccher.example", 0, []string{"b\u00fccher.example is xn--bcher-kva.example\n", "MX 5 mx1.example.com"}},
	} {
		rc, out, errs := runCLI(t, "", "resolve", "--server", dns.Addr(), tc.domain)
		if rc != tc.rc {
			t.Errorf("%s: rc %d, out %q err %q", tc.domain, rc, out, errs)
		}
		for _, w := range tc.want {
			if !strings.Contains(out, w) {
				t.Errorf("%s: %q missing from %q", tc.domain, w, out)
			}
		}
		if strings.Index(out, "MX 10") > strings.Index(out, "MX 20") {
			t.Errorf("%s: preference order: %q", tc.domain, out)
		}
	}

	// dns-server from the config; --connect reads the greeting.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Write([]byte("220 fake.test ESMTP hi\r\n"))
			bufio.NewReader(c).ReadString('\n')
			c.Close()
		}
	}()
	conf := filepath.Join(t.TempDir(), "config")
	if err := os.WriteFile(conf, []byte("dns-server "+dns.Addr()+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	port := strconv.Itoa(ln.Addr().(*net.TCPAddr).Port)
	rc, out, errs := runCLI(t, "", "--config", conf, "resolve", "--connect", "--port", port, "nomx.example")
	if rc != 0 || !strings.Contains(out, "127.0.0.3:"+port+": ") {
		t.Fatalf("rc %d out %q err %q", rc, out, errs)
	}
	dns.Add("conn.example. A 127.0.0.1")
	rc, out, _ = runCLI(t, "", "--config", conf, "resolve", "--connect", "--port", port, "conn.example")
	if rc != 0 || !strings.Contains(out, "127.0.0.1:"+port+": 220 fake.test ESMTP hi\n") {
		t.Errorf("rc %d out %q", rc, out)
	}
	if rc, _, _ := runCLI(t, "", "resolve"); rc != exitUsage {
		t.Errorf("no domain: rc %d", rc)
	}
}
