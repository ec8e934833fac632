package e2e

import (
	"bytes"
	"io"
	"mime"
	"mime/multipart"
	"mime/quotedprintable"
	"net/mail"
	"strings"
	"testing"
	"time"

	"github.com/sluicemta/sluice/internal/testutil/sluicetest"
	"github.com/sluicemta/sluice/internal/testutil/smtpsink"
)

// TestLongBodyLines: a body line far over 1000 octets (as PHP and HTML
// mailers send) is accepted, and leaves with no line over 998 octets.
func TestLongBodyLines(t *testing.T) {
	sink := smtpsink.Start(t, smtpsink.Options{})
	d := sluicetest.Start(t, sluicetest.Options{Config: routes(sink.Port(), "")})
	long := strings.Repeat("0123456789", 500) // 5000 octets
	out := swaks(t, d.SMTPAddr(), "--from", "a@sender.test", "--to", "long@rcpt.test", "--body", "before\n"+long+"\nafter\n")
	if !strings.Contains(out, "250 2.0.0 Ok: queued") {
		t.Fatalf("a 5000-octet body line was refused:\n%s", out)
	}
	msgs, err := sink.WaitMessages(1, 20*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range bytes.Split(msgs[0].Data, []byte("\r\n")) {
		if len(line) > 998 {
			t.Fatalf("a %d-octet line left sluice", len(line))
		}
	}
	// The content survives the re-encoding.
	m, err := mail.ReadMessage(bytes.NewReader(msgs[0].Data))
	if err != nil {
		t.Fatal(err)
	}
	body := decodedBody(t, m)
	if !strings.Contains(body, long) {
		t.Errorf("the long line did not survive:\n%s", msgs[0].Data)
	}
}

func decodedBody(t *testing.T, m *mail.Message) string {
	t.Helper()
	mt, params, _ := mime.ParseMediaType(m.Header.Get("Content-Type"))
	if strings.HasPrefix(mt, "multipart/") {
		r := multipart.NewReader(m.Body, params["boundary"])
		var b strings.Builder
		for {
			p, err := r.NextPart()
			if err != nil {
				return b.String()
			}
			buf := new(bytes.Buffer)
			buf.ReadFrom(p)
			b.Write(buf.Bytes())
		}
	}
	var r io.Reader = m.Body
	if strings.EqualFold(m.Header.Get("Content-Transfer-Encoding"), "quoted-printable") {
		r = quotedprintable.NewReader(r)
	}
	buf := new(bytes.Buffer)
	buf.ReadFrom(r)
	return buf.String()
}
