package milter

import (
	"bufio"
	"bytes"
	"context"
	"io"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"
)

func FuzzReadPacketAndReply(f *testing.F) {
	for _, p := range [][]byte{
		appendPacket(nil, repContinue),
		appendPacket(nil, repReplyCode, cstrings("550-5.7.1 a\r\n550 5.7.1 b%%")),
		appendPacket(nil, repChgHeader, u32(2), cstrings("Subject", "x\n\ty")),
		appendPacket(nil, repInsHeader, u32(0), cstrings("X", "")),
		appendPacket(nil, repChgFrom, cstrings("<a@b>", "RET=HDRS")),
		appendPacket(nil, repAddRcptPar, cstrings("<a@b>")),
		appendPacket(nil, repReplBody, []byte("body\n")),
		appendPacket(nil, repQuarantine, cstrings("why")),
		{0, 0, 0, 0},
		{0, 0, 0, 5, 'h', 'a'},
	} {
		f.Add(p)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		p, err := readPacket(bytes.NewReader(b))
		if err != nil {
			return
		}
		r, err := parseReply(p)
		if err != nil {
			return
		}
		if r.code == repReplyCode {
			if d, err := parseSMTPReply(r.text); err == nil {
				if d.Code < 400 || d.Code > 599 || (d.Verdict != Reject && d.Verdict != Tempfail) {
					t.Fatalf("bad decision %+v from %q", d, r.text)
				}
				if !strings.HasPrefix(d.Reply(), r.text[:3]) {
					t.Fatalf("reply %q does not keep code of %q", d.Reply(), r.text)
				}
			}
		}
	})
}

func FuzzParseOptneg(f *testing.F) {
	f.Add([]byte("\x00\x00\x00\x06\x00\x00\x01\xff\x00\x00\x00\x00"))
	f.Add([]byte("\x00\x00\x00\x06\x00\x00\x01\xff\x00\x00\x00\x00\x00\x00\x00\x02{a} b\x00"))
	f.Fuzz(func(t *testing.T, b []byte) {
		n, err := parseOptneg(b)
		if err == nil && len(b) < 12 {
			t.Fatalf("short reply accepted: %+v", n)
		}
	})
}

// FuzzEndOfBody feeds arbitrary bytes as a milter's answer to end of body:
// the client must neither panic nor hang, and whatever it accepts must
// leave a well-formed header list.
func FuzzEndOfBody(f *testing.F) {
	f.Add(join(appendPacket(nil, repAddHeader, cstrings("X-A", "1")), appendPacket(nil, repAccept)))
	f.Add(join(appendPacket(nil, repChgHeader, u32(1), cstrings("Subject", "")), appendPacket(nil, repContinue)))
	f.Add(join(appendPacket(nil, repInsHeader, u32(7), cstrings("X-B", "b\nc")), appendPacket(nil, repProgress), appendPacket(nil, repDiscard)))
	f.Add(join(appendPacket(nil, repReplBody, []byte("x")), appendPacket(nil, repReplyCode, cstrings("450 4.2.0 wait"))))
	f.Add([]byte{0, 0, 0, 1})
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	f.Fuzz(func(t *testing.T, answer []byte) {
		mta, milter := net.Pipe()
		defer mta.Close()
		go func() {
			defer milter.Close()
			// Drain the EOB command, then answer with the fuzz input.
			if _, err := readPacket(milter); err != nil {
				return
			}
			milter.Write(answer)
		}()
		fl := &filter{cfg: Config{Name: "fuzz", DefaultAction: ActionTempfail, CommandTimeout: time.Second}, log: log,
			nc: mta, br: bufio.NewReader(mta), actions: allActions, state: fsEnvelope, timeout: time.Second}
		ed := &edits{}
		d := fl.event(event{cmd: cmdEOB}, nil, ed)
		if fl.state == fsError {
			return
		}
		h := applyHeaders(append([]HeaderField(nil), testHeader...), ed.hdrs)
		for _, x := range h {
			if x.Name == "" || strings.ContainsAny(x.Name, ":\r\n") {
				t.Fatalf("bad header %q after %+v", x.Name, d)
			}
		}
	})
}

func join(bs ...[]byte) []byte { return bytes.Join(bs, nil) }

// FuzzConversation lets the fuzzer play a whole milter: the input is
// everything the milter says, from its OPTNEG answer on, whatever the
// client sends. The session must neither panic nor hang, and its answers
// must be ones an SMTP server can give.
func FuzzConversation(f *testing.F) {
	optneg := func(proto uint32) []byte {
		return appendPacket(nil, cmdOptneg, u32(6), u32(allActions), u32(proto))
	}
	cont := appendPacket(nil, repContinue)
	f.Add(join(optneg(0), cont, cont, cont, cont, cont, cont, cont, cont, cont, cont, cont, appendPacket(nil, repAccept)))
	f.Add(join(optneg(0), cont, cont, cont, appendPacket(nil, repReplyCode, cstrings("450-4.2.0 a\r\n450 4.2.0 b"))))
	f.Add(join(optneg(pNRHdr|pNRBody|pHdrLeadSpc), cont, cont, cont, cont, cont,
		appendPacket(nil, repChgHeader, u32(1), cstrings("Subject", "")), appendPacket(nil, repAddRcptPar, cstrings("<x@y>", "A=B")),
		appendPacket(nil, repQuarantine, cstrings("q")), appendPacket(nil, repContinue)))
	f.Add(join(optneg(pSkip), cont, cont, cont, cont, cont, cont, cont, cont, appendPacket(nil, repSkip), appendPacket(nil, repDiscard)))
	f.Add(join(optneg(0), appendPacket(nil, repShutdown)))
	f.Add(join(appendPacket(nil, cmdOptneg, u32(2), u32(0), u32(0), u32(1), []byte("j\x00")), cont, cont, appendPacket(nil, repReject)))
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	body := strings.Repeat("x", ChunkSize+5)
	f.Fuzz(func(t *testing.T, script []byte) {
		c, err := NewChain([]Config{{Name: "fuzz", Socket: "unix:/fuzz", CommandTimeout: 200 * time.Millisecond, ContentTimeout: 200 * time.Millisecond}})
		if err != nil {
			t.Fatal(err)
		}
		c.log = log
		c.dial = func(ctx context.Context, _, _ string) (net.Conn, error) {
			mta, milter := net.Pipe()
			go io.Copy(io.Discard, milter) // whatever the client says
			go func() {
				// net.Pipe is synchronous: once Write returns the client
				// has read the whole script, and then the milter hangs up.
				milter.Write(script)
				milter.Close()
			}()
			return mta, nil
		}
		s, d := c.Begin(context.Background(), testInfo())
		ds := []Decision{d}
		if d = s.Mail("a@example.org", nil); d.Verdict == Continue {
			ds = append(ds, d, s.Rcpt("b@example.net", nil))
			if d = s.Data(); d.Verdict != Continue {
				ds = append(ds, d)
			} else {
				res, err := s.Message(testHeader, strings.NewReader(body))
				if err != nil {
					t.Fatal(err)
				}
				ds = append(ds, res.Decision)
				for _, h := range res.Header {
					if h.Name == "" || strings.ContainsAny(h.Name, ": \t\r\n") {
						t.Fatalf("header name %q", h.Name)
					}
				}
			}
		} else {
			ds = append(ds, d)
		}
		s.Close()
		for _, d := range ds {
			switch d.Verdict {
			case Continue, Discard:
			case Reject, Tempfail, Shutdown:
				r := d.Reply()
				if d.Code < 400 || d.Code > 599 || strings.ContainsAny(strings.ReplaceAll(r, "\r\n", ""), "\r\n\x00") {
					t.Fatalf("bad reply %q", r)
				}
			default:
				t.Fatalf("verdict %v leaked to the SMTP layer", d.Verdict)
			}
		}
	})
}
