package milter

import (
	"bufio"
	"bytes"
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
