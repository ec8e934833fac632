package e2e

import (
	"strings"
	"testing"
	"time"

	"github.com/sluicemta/sluice/internal/testutil/sluicetest"
	"github.com/sluicemta/sluice/internal/testutil/smtpsink"
)

// TestOpportunisticTLSOutRecorded: a next hop offering STARTTLS gets it,
// and the TLS version and cipher show in the log and the accounting.
func TestOpportunisticTLSOutRecorded(t *testing.T) {
	sink := smtpsink.Start(t, smtpsink.Options{Ext: smtpsink.DefaultExt | smtpsink.StartTLS})
	d := sluicetest.Start(t, sluicetest.Options{Config: routes(sink.Port(), "")})
	swaks(t, d.SMTPAddr(), "--from", "a@sender.test", "--to", "tls1@rcpt.test,tls2@rcpt.test")
	msgs, err := sink.WaitMessages(1, 20*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if msgs[0].TLS == nil {
		t.Fatal("delivered without STARTTLS although the next hop offered it")
	}
	recs, err := d.WaitAcct("d", 2, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range recs {
		if !strings.HasPrefix(r["dlvTlsProtocol"], "TLSv1.") || r["dlvTlsCipher"] == "" {
			t.Errorf("accounting lacks TLS: protocol %q cipher %q", r["dlvTlsProtocol"], r["dlvTlsCipher"])
		}
		// The extensions of the EHLO after TLS (STARTTLS is not offered again).
		if !strings.Contains(r["dlvEsmtpAvailable"], "PIPELINING") {
			t.Errorf("dlvEsmtpAvailable %q lacks PIPELINING", r["dlvEsmtpAvailable"])
		}
	}
	line, err := d.WaitLog("TLS connection established to", 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(line, "TLSv1.") || !strings.Contains(line, "with cipher") {
		t.Errorf("TLS log line: %s", line)
	}
	if n := strings.Count(readLog(t, d), "TLS connection established"); n != 1 {
		t.Errorf("%d TLS lines for one connection, want 1", n)
	}
}

// TestClearDNSCacheReachesTheDaemon: `sluice clear dnscache` is an admin
// operation on the control socket, answered by the running daemon.
func TestClearDNSCacheReachesTheDaemon(t *testing.T) {
	d := sluicetest.Start(t, sluicetest.Options{Config: routes(1, "")})
	if out, code := run(t, d, "", nil, "sluice", "clear", "dnscache"); code != 0 || !strings.Contains(out, "DNS cache cleared") {
		t.Fatalf("sluice clear dnscache: exit %d: %s", code, out)
	}
}

func readLog(t *testing.T, d *sluicetest.Daemon) string {
	t.Helper()
	return string(mustRead(t, d.LogFile()))
}
