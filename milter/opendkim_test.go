package milter

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	"github.com/sluicemta/sluice/internal/testutil/milterpeers"
)

func render(h []HeaderField, body []byte) []byte {
	var b bytes.Buffer
	for _, f := range h {
		b.WriteString(f.Name + ":" + f.Value + "\r\n")
	}
	b.WriteString("\r\n")
	b.Write(body)
	return b.Bytes()
}

var dkimHeader = []HeaderField{
	{Name: "Received", Value: " from localhost by mta.test (sluice) id Q1; Sun, 29 Nov 2026 10:00:00 +0000", Hidden: true},
	{Name: "From", Value: " Alice <alice@example.org>"},
	{Name: "To", Value: " bob@example.net"},
	// Folded, with runs of spaces and a tab: simple canonicalisation signs these bytes.
	{Name: "Subject", Value: " a  folded\r\n\tsubject   line "},
	{Name: "Date", Value: " Sun, 29 Nov 2026 10:00:00 +0000"},
	{Name: "Message-ID", Value: " <q1@example.org>"},
}

const dkimBody = "Hello Bob,\r\n\r\ntrailing spaces here   \r\n.dot line\r\n"

func TestOpenDKIMSigns(t *testing.T) {
	for _, canon := range []string{"simple/simple", "relaxed/relaxed"} {
		t.Run(canon, func(t *testing.T) {
			sock, key := milterpeers.StartOpenDKIM(t, milterpeers.OpenDKIMOptions{Canonicalization: canon})
			c := mustChain(t, Config{Name: "opendkim", Socket: sock, CommandTimeout: 10 * time.Second, ContentTimeout: 10 * time.Second})
			ctx := context.Background()
			res, err := c.Filter(ctx, LocalConnInfo(), "alice@example.org", []Recipient{{Addr: "bob@example.net"}},
				dkimHeader, strings.NewReader(dkimBody))
			if err != nil {
				t.Fatal(err)
			}
			if res.Decision.Verdict != Continue {
				t.Fatalf("decision %+v", res.Decision)
			}
			var sig *HeaderField
			for i := range res.Header {
				if strings.EqualFold(res.Header[i].Name, "DKIM-Signature") {
					sig = &res.Header[i]
				}
			}
			if sig == nil {
				t.Fatalf("no DKIM-Signature added: %+v", res.Header)
			}
			if !strings.Contains(sig.Value, "c="+canon) && canon != "simple/simple" {
				t.Errorf("signature %q lacks c=%s", sig.Value, canon)
			}
			msg := render(res.Header, []byte(dkimBody))
			t.Logf("signed:\n%s", msg)
			if !milterpeers.DKIMVerify(t, msg, key) {
				t.Fatalf("signature does not verify:\n%s", msg)
			}
			// Control: the verifier does notice a changed header, so the
			// pass above means the milter saw the raw bytes we deliver.
			if canon == "simple/simple" {
				tampered := bytes.Replace(msg, []byte("a  folded\r\n\tsubject"), []byte("a folded\r\n\tsubject"), 1)
				if milterpeers.DKIMVerify(t, tampered, key) {
					t.Fatal("tampered message verifies; the check proves nothing")
				}
			}
		})
	}
}

// TestOpenDKIMOverSMTPSession signs two messages in one SMTP session, the
// second after an RSET, over one milter connection.
func TestOpenDKIMOverSMTPSession(t *testing.T) {
	sock, key := milterpeers.StartOpenDKIM(t, milterpeers.OpenDKIMOptions{Canonicalization: "simple/simple"})
	c := mustChain(t, Config{Name: "opendkim", Socket: sock, CommandTimeout: 10 * time.Second, ContentTimeout: 10 * time.Second})
	s, d := c.Begin(context.Background(), ConnInfo{Hostname: "localhost", Addr: "127.0.0.1", Port: 40000, Helo: "client.test"})
	defer s.Close()
	if d.Verdict != Continue {
		t.Fatal(d)
	}
	for i, abortFirst := range []bool{false, true} {
		if abortFirst {
			s.Mail("x@example.org", nil)
			s.Abort() // RSET
		}
		s.SetMacro("i", "Q"+string(rune('1'+i)))
		if d := s.Mail("alice@example.org", []string{"BODY=8BITMIME"}); d.Verdict != Continue {
			t.Fatal(d)
		}
		if d := s.Rcpt("bob@example.net", nil); d.Verdict != Continue {
			t.Fatal(d)
		}
		if d := s.Data(); d.Verdict != Continue {
			t.Fatal(d)
		}
		res, err := s.Message(dkimHeader, strings.NewReader(dkimBody))
		if err != nil || res.Decision.Verdict != Continue {
			t.Fatal(res.Decision, err)
		}
		if !milterpeers.DKIMVerify(t, render(res.Header, []byte(dkimBody)), key) {
			t.Fatalf("message %d: signature does not verify", i+1)
		}
	}
}
