package smtpd

import (
	"net/netip"
	"strings"
	"testing"
)

// TestSmuggling sends end-of-data look-alikes mid-DATA, each followed by a
// second transaction, and checks that exactly one reply comes back and at
// most one message is queued: intact or rejected, never split.
func TestSmuggling(t *testing.T) {
	const smuggled = "MAIL FROM:<evil@x.test>\r\nRCPT TO:<v@local.test>\r\nDATA\r\nSubject: smuggled\r\n\r\nevil\r\n"
	seps := []struct {
		name    string
		sep     string
		visible bool // the bare CR/LF survives go-smtp's dot-unstuffing
	}{
		{"LF.LF", "\n.\n", true},
		{"CR.LF", "\r.\n", true},
		{"LF.CRLF", "\n.\r\n", true},
		{"CRLF.LF", "\r\n.\n", true},
		{"CR.CR", "\r.\r", true},
		{"CRLF.CR", "\r\n.\r", false}, // go-smtp drops ".\r" at a line start
		{"LF", "\n", true},
		{"CR", "\r", true},
		{"CRCRLF.CRLF", "\r\r\n.\r\n", true},
	}
	for _, normalize := range []bool{false, true} {
		for _, sp := range seps {
			name := sp.name
			if normalize {
				name += "/normalize"
			}
			t.Run(name, func(t *testing.T) {
				s := baseSettings(&eventLog{})
				s.PolicyFor = func(netip.Addr, string) Policy { return Policy{NormalizeBareNewlines: normalize} }
				q := newRecQueue()
				_, addrs := startServer(t, s, q)
				c := dial(t, addrs["127.0.0.1:0"])
				c.expect("", "220")
				c.expect("EHLO c", "250")
				c.expect("MAIL FROM:<a@b.test>", "250")
				c.expect("RCPT TO:<u@local.test>", "250")
				c.expect("DATA", "354")
				c.send("Subject: first\r\n\r\nhello" + sp.sep + smuggled + "\r\n.\r\n")
				r := c.reply()
				c.expect("NOOP", "250 2.0.0 I have successfully done nothing")
				msgs := q.all()
				switch {
				case normalize || !sp.visible:
					if !strings.HasPrefix(r, "250 2.0.0 Ok: queued as") || len(msgs) != 1 {
						t.Fatalf("reply %q, %d messages", r, len(msgs))
					}
					body := string(msgs[0].content)
					if !strings.Contains(body, "Subject: first") || !strings.Contains(body, "evil\r\n") {
						t.Errorf("message not intact: %q", body)
					}
				default:
					if r != "550 5.5.2 Error: bare <LF> received" || len(msgs) != 0 {
						t.Fatalf("reply %q, %d messages", r, len(msgs))
					}
				}
				for _, m := range msgs {
					if i := bareNewline(m.content); i >= 0 {
						t.Errorf("bare CR/LF at %d in %q", i, m.content)
					}
				}
				// The session is still in step.
				c.expect("MAIL FROM:<a@b.test>", "250")
				c.expect("RCPT TO:<u@local.test>", "250")
				c.expect("DATA", "354")
				c.expect("ok\r\n.", "250")
			})
		}
	}
}

func TestReadContent(t *testing.T) {
	tests := []struct {
		in        string
		normalize bool
		max       int64
		want      string
		err       error
	}{
		{"a\r\nb\r\n", false, 100, "a\r\nb\r\n", nil},
		{"a\r\nb", false, 100, "a\r\nb\r\n", nil}, // BDAT without final CRLF
		{"", false, 100, "", nil},
		{"a\nb\r\n", false, 100, "", errBareNewline},
		{"a\rb\r\n", false, 100, "", errBareNewline},
		{"a\r", false, 100, "", errBareNewline},
		{"a\nb\rc\r\r\n\n", true, 100, "a\r\nb\r\nc\r\n\r\n\r\n", nil},
		{"a\r", true, 100, "a\r\n", nil},
		{"0123456789", false, 9, "", errTooBig},
		{"0123456789", false, 10, "0123456789\r\n", nil},
	}
	for _, tc := range tests {
		// Feed one byte at a time too, so CR/LF pairs split across reads.
		for _, oneByte := range []bool{false, true} {
			var r = strings.NewReader(tc.in)
			var rd interface{ Read([]byte) (int, error) } = r
			if oneByte {
				rd = &oneByteReader{r}
			}
			got, err := readContent(rd, tc.max, tc.normalize)
			if err != tc.err || string(got) != tc.want {
				t.Errorf("readContent(%q, normalize=%v, oneByte=%v) = %q, %v; want %q, %v", tc.in, tc.normalize, oneByte, got, err, tc.want, tc.err)
			}
		}
	}
}

type oneByteReader struct{ r *strings.Reader }

func (o *oneByteReader) Read(b []byte) (int, error) {
	if len(b) > 1 {
		b = b[:1]
	}
	return o.r.Read(b)
}
