package milter

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	"github.com/sluicemta/sluice/internal/testutil/milterpeers"
)

// TestRspamdARC seals a message with rspamd's ARC module in milter mode,
// chained after OpenDKIM, and checks the chain with python3-dkim.
func TestRspamdARC(t *testing.T) {
	rsock, arcKey := milterpeers.StartRspamd(t, milterpeers.RspamdOptions{})
	dsock, dkimKey := milterpeers.StartOpenDKIM(t, milterpeers.OpenDKIMOptions{Canonicalization: "relaxed/relaxed"})
	c := mustChain(t,
		Config{Name: "opendkim", Socket: dsock, CommandTimeout: 10 * time.Second, ContentTimeout: 10 * time.Second},
		Config{Name: "rspamd", Socket: rsock, CommandTimeout: 20 * time.Second, ContentTimeout: 20 * time.Second},
	)
	s, d := c.Begin(context.Background(), ConnInfo{Hostname: "localhost", Addr: "127.0.0.1", Port: 40001, Helo: "client.example.org"})
	defer s.Close()
	if d.Verdict != Continue {
		t.Fatal(d)
	}
	s.SetMacro("i", "QARC1")
	s.Mail("alice@example.org", nil)
	s.Rcpt("bob@example.net", nil)
	s.Data()
	res, err := s.Message(dkimHeader, strings.NewReader(dkimBody))
	if err != nil {
		t.Fatal(err)
	}
	if res.Decision.Verdict != Continue {
		t.Fatalf("decision %+v", res.Decision)
	}
	msg := render(res.Header, []byte(dkimBody))
	for _, h := range []string{"ARC-Seal:", "ARC-Message-Signature:", "ARC-Authentication-Results:", "DKIM-Signature:"} {
		if !bytes.Contains(msg, []byte(h)) {
			t.Fatalf("no %s header:\n%s", h, msg)
		}
	}
	// ARC verification fetches both keys under the same selector name;
	// rspamd signed with its own key, OpenDKIM with another, so verify
	// each against its key.
	if got := milterpeers.ARCVerify(t, msg, arcKey); !strings.HasPrefix(got, "pass") {
		t.Errorf("ARC chain: %s\n%s", got, msg)
	}
	if !milterpeers.DKIMVerify(t, msg, dkimKey) {
		t.Errorf("DKIM signature broken by the ARC milter:\n%s", msg)
	}
}
