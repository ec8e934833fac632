package milter

import (
	"context"
	"strings"
	"testing"
)

// BenchmarkMessage measures one transaction (MAIL, RCPT, DATA, a 10 KB
// message with three headers) through one milter on a unix socket, reusing
// the session as an SMTP connection would.
func BenchmarkMessage(b *testing.B) {
	for _, tc := range []struct {
		name  string
		proto uint32
	}{
		{"replies", 0},
		{"no-reply-steps", pNRMail | pNRRcpt | pNRData | pNRHdr | pNREOH | pNRBody},
	} {
		b.Run(tc.name, func(b *testing.B) {
			f := startFake(b, func(c *fakeConn) {
				if c.negotiate(6, actAddHdrs, tc.proto) != nil {
					return
				}
				c.serve(func(cmd byte, data []byte) [][]byte {
					if cmd == cmdEOB {
						return [][]byte{rep(repAddHeader, cstrings("X-Checked", "yes")), {repAccept}}
					}
					if tc.proto != 0 && cmd != cmdConnect && cmd != cmdHelo {
						return nil
					}
					return continueAll(cmd, data)
				})
			})
			c, err := NewChain([]Config{{Name: "bench", Socket: f.socket}})
			if err != nil {
				b.Fatal(err)
			}
			s, _ := c.Begin(context.Background(), testInfo())
			defer s.Close()
			body := strings.Repeat("0123456789012345678901234567890123456789012345678\r\n", 200)
			b.SetBytes(int64(len(body)))
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				s.Mail("a@example.org", nil)
				s.Rcpt("b@example.net", nil)
				s.Data()
				res, err := s.Message(testHeader, strings.NewReader(body))
				if err != nil || res.Decision.Verdict != Continue || len(res.Header) != 4 {
					b.Fatal(res, err)
				}
			}
		})
	}
}
