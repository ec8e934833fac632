package bounce

import (
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

func readFixture(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestParse reads DSNs shaped like those Postfix, Gmail, Exchange Online
// and Exim send, including their quirks.
func TestParse(t *testing.T) {
	type rc struct{ final, orig, action, status, remote, diag string }
	tests := []struct {
		file     string
		mta      string
		qid      string
		sender   string
		arrival  string
		global   bool
		ret      string
		origHas  string
		rcpts    []rc
		rcpt0Try string // Will-Retry-Until of recipient 1, when set
	}{
		{file: "parse-postfix.eml", mta: "mx.example.net", qid: "7D1E2F3A4B",
			sender: "list-bounces+bob=example.net@lists.example.com", arrival: "2026-11-28T22:01:01Z",
			ret: "HDRS", origHas: "Subject: Weekly digest\r\n",
			rcpts: []rc{{"bob@example.net", "bob@example.net", "failed", "5.1.1", "",
				"X-Postfix; user unknown. Command output: Invalid user specified."}}},
		{file: "parse-gmail.eml", mta: "googlemail.com", sender: "alice@example.com", arrival: "2026-11-28T22:02:01Z",
			ret: "FULL", origHas: "Message-ID: <q3.1@example.com>\r\n\r\nHi!\r\n",
			rcpts: []rc{{"nobody@example.org", "", "failed", "5.1.1",
				"mx.example.org. (192.0.2.25, the server for the domain example.org.)",
				"smtp; 550 5.1.1 <nobody@example.org>: Recipient address rejected: User unknown in local recipient table"}}},
		{file: "parse-exchange-base64.eml", mta: "AM0PR01MB1234.eurprd01.prod.exchangelabs.com",
			sender: "alice@example.com", arrival: "2026-11-28T22:02:01Z", ret: "FULL", origHas: "Subject: Hello\r\n",
			rcpts: []rc{
				{"first@contoso.example", "", "failed", "5.1.10", "",
					"smtp;550 5.1.10 RESOLVER.ADR.RecipientNotFound; Recipient first@contoso.example not found by SMTP address lookup"},
				{"second@contoso.example", "", "delayed", "4.4.7", "", ""}},
			rcpt0Try: "2026-11-29T22:02:01Z"},
		{file: "parse-exim-lf.eml", mta: "smtp.example.net", sender: "alice@example.com", ret: "FULL", origHas: "Subject: hi\n",
			rcpts: []rc{
				{"carol@example.net", "", "failed", "5.0.0", "mx.example.net", "smtp; 550 Unrouteable address"},
				{"jürgen@example.net", "", "failed", "5.1.1", "", ""}}},
		{file: "parse-forwarded-qp.eml", mta: "relay.example.org", sender: "alice@example.com", ret: "HDRS",
			origHas: "Subject: report\r\n",
			rcpts: []rc{{"dave@example.org", "", "delivered", "2.0.0", "",
				"smtp; 250 2.0.0 Ok: queued as 1A2B3C4D5E, a reply long enough that quoted-printable has to break it into lines"}}},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			r, err := Parse(readFixture(t, tt.file))
			if err != nil {
				t.Fatal(err)
			}
			if r.ReportingMTA != tt.mta || r.QueueID != tt.qid || r.Sender != tt.sender || r.SMTPUTF8 != tt.global || r.Ret != tt.ret {
				t.Errorf("per-message: got mta=%q qid=%q sender=%q global=%v ret=%q", r.ReportingMTA, r.QueueID, r.Sender, r.SMTPUTF8, r.Ret)
			}
			if tt.arrival != "" {
				if want, _ := time.Parse(time.RFC3339, tt.arrival); !r.ArrivalDate.Equal(want) {
					t.Errorf("arrival %v, want %v", r.ArrivalDate, want)
				}
			}
			if !strings.Contains(string(r.Original), tt.origHas) {
				t.Errorf("returned content lacks %q:\n%q", tt.origHas, r.Original)
			}
			if len(r.Recipients) != len(tt.rcpts) {
				t.Fatalf("%d recipients, want %d: %+v", len(r.Recipients), len(tt.rcpts), r.Recipients)
			}
			for i, w := range tt.rcpts {
				g := r.Recipients[i]
				got := rc{g.Final, g.Original, g.Action, g.Status, g.RemoteMTA, g.Diagnostic}
				if got != w {
					t.Errorf("recipient %d:\n got %+v\nwant %+v", i, got, w)
				}
			}
			if tt.rcpt0Try != "" {
				want, _ := time.Parse(time.RFC3339, tt.rcpt0Try)
				if !r.Recipients[1].WillRetryUntil.Equal(want) {
					t.Errorf("will-retry-until %v, want %v", r.Recipients[1].WillRetryUntil, want)
				}
			}
		})
	}
}

func TestParseRejects(t *testing.T) {
	for name, msg := range map[string][]byte{
		"plain message":  readFixture(t, "parse-not-dsn.eml"),
		"empty":          nil,
		"no header end":  []byte("Content-Type: multipart/report; boundary=x"),
		"no boundary":    []byte("Content-Type: multipart/report\r\n\r\n--x\r\nContent-Type: message/delivery-status\r\n\r\nAction: failed\r\n--x--\r\n"),
		"bad media type": []byte("Content-Type: ;;;\r\n\r\nbody\r\n"),
		"other report":   []byte("Content-Type: multipart/report; report-type=feedback-report; boundary=x\r\n\r\n--x\r\nContent-Type: message/feedback-report\r\n\r\nFeedback-Type: abuse\r\n--x--\r\n"),
	} {
		if _, err := Parse(msg); err == nil {
			t.Errorf("%s: Parse accepted it", name)
		} else if name == "plain message" && !errors.Is(err, ErrNotDSN) {
			t.Errorf("%s: error %v, want ErrNotDSN", name, err)
		}
	}
}

func TestParseDeepNesting(t *testing.T) {
	// 50 nested multiparts: an error, not a stack or a long hunt.
	var b strings.Builder
	b.WriteString("Content-Type: multipart/mixed; boundary=b0\r\n\r\n")
	for i := 1; i < 50; i++ {
		b.WriteString("--b" + itoa(i-1) + "\r\nContent-Type: multipart/mixed; boundary=b" + itoa(i) + "\r\n\r\n")
	}
	if _, err := Parse([]byte(b.String())); err == nil {
		t.Error("deep nesting accepted")
	}
}

func itoa(i int) string { return strconv.Itoa(i) }

func TestParseManyRecipientsCapped(t *testing.T) {
	var b strings.Builder
	b.WriteString("Content-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; x\r\n")
	for i := 0; i < maxRecipients+50; i++ {
		b.WriteString("\r\nFinal-Recipient: rfc822; a@b\r\nAction: failed\r\nStatus: 5.0.0\r\n")
	}
	r, err := Parse([]byte(b.String()))
	if err != nil {
		t.Fatal(err)
	}
	if len(r.Recipients) != maxRecipients {
		t.Errorf("%d recipients kept, want the cap %d", len(r.Recipients), maxRecipients)
	}
}

func TestDecodeUTF8XText(t *testing.T) {
	for in, want := range map[string]string{
		`j\x{FC}rgen@example.net`:      "jürgen@example.net",
		`\x{7528}\x{6237}@example.net`: "用户@example.net",
		`plain@example.net`:            "plain@example.net",
		`bad\x{ZZ}@x`:                  `bad\x{ZZ}@x`,
		`open\x{41`:                    `open\x{41`,
		`surrogate\x{D800}@x`:          `surrogate\x{D800}@x`,
	} {
		if got := decodeUTF8XText(in); got != want {
			t.Errorf("decodeUTF8XText(%q) = %q, want %q", in, got, want)
		}
		if enc := utf8XText(want); decodeUTF8XText(enc) != want && !strings.Contains(want, `\`) {
			t.Errorf("utf8XText(%q) = %q does not decode back", want, enc)
		}
	}
}
