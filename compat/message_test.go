package compat

import (
	"bytes"
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestReadMessage(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		dotEnds bool
		want    string
	}{
		{"plain", "Subject: x\n\nbody\n", true, "Subject: x\n\nbody\n"},
		{"crlf", "Subject: x\r\n\r\nbody\r\n", true, "Subject: x\n\nbody\n"},
		{"from line dropped", "From me Thu Jan  1 00:00:00 2026\nSubject: x\n\nb\n", true, "Subject: x\n\nb\n"},
		{">from line dropped", ">From me\nSubject: x\n", true, "Subject: x\n"},
		{"from only first", "Subject: x\n\nFrom here\n", true, "Subject: x\n\nFrom here\n"},
		{"dot ends", "a\n.\nb\n", true, "a\n"},
		{"dot crlf ends", "a\r\n.\r\nb\r\n", true, "a\n"},
		{"dot kept with -i", "a\n.\nb\n", false, "a\n.\nb\n"},
		{"no unstuffing", "a\n..x\n", true, "a\n..x\n"},
		{"no final newline", "a\nb", true, "a\nb\n"},
		{"empty", "", true, ""},
		{"lone cr kept", "a\rb\n", true, "a\rb\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ReadMessage(strings.NewReader(tt.in), tt.dotEnds, 0)
			if err != nil {
				t.Fatal(err)
			}
			if string(got) != tt.want {
				t.Errorf("got %q, want %q", got, tt.want)
			}
		})
	}
}

func TestReadMessageLongLine(t *testing.T) {
	long := strings.Repeat("x", 200000)
	got, err := ReadMessage(strings.NewReader("a\n"+long+"\r\nb\n"), true, 0)
	if err != nil {
		t.Fatal(err)
	}
	if want := "a\n" + long + "\nb\n"; string(got) != want {
		t.Errorf("long line mangled: len %d, want %d", len(got), len(want))
	}
}

func TestReadMessageTooBig(t *testing.T) {
	_, err := ReadMessage(strings.NewReader(strings.Repeat("line\n", 1000)), true, 100)
	if !errors.Is(err, ErrTooBig) {
		t.Fatalf("err = %v, want ErrTooBig", err)
	}
}

func baseParams() PrepareParams {
	return PrepareParams{
		Sender: "alice", Origin: "host.example", Hostname: "host.example", QueueID: "4jcjv54Q7rz1SC8X",
		UID: 1000, Login: "alice", Now: time.Date(2026, 11, 29, 10, 24, 33, 0, time.UTC),
	}
}

func TestPrepare(t *testing.T) {
	const recv = "Received: by host.example (sluice, from userid 1000, user alice)\r\n\tid 4jcjv54Q7rz1SC8X; Sun, 29 Nov 2026 10:24:33 +0000 (UTC)\r\n"
	const added = "Message-Id: <4jcjv54Q7rz1SC8X@host.example>\r\nDate: Sun, 29 Nov 2026 10:24:33 +0000 (UTC)\r\n"
	tests := []struct {
		name    string
		in      string
		mod     func(*PrepareParams)
		rcpts   []string
		content string
		code    int
	}{
		{name: "adds headers", in: "Subject: hi\n\nbody\n",
			mod:     func(p *PrepareParams) { p.Rcpts = []string{"bob@x"} },
			rcpts:   []string{"bob@x"},
			content: recv + "Subject: hi\r\n" + added + "From: alice@host.example\r\n\r\nbody\r\n"},
		{name: "full name", in: "Subject: hi\n\nbody\n",
			mod:     func(p *PrepareParams) { p.Rcpts = []string{"bob@x"}; p.FullName = "Alice A." },
			rcpts:   []string{"bob@x"},
			content: recv + "Subject: hi\r\n" + added + "From: \"Alice A.\" <alice@host.example>\r\n\r\nbody\r\n"},
		{name: "extract adds to command line, drops bcc", in: "To: a@b.c\nCc: X <x@y.z>, a@b.c\nBcc: hidden@h.h\nSubject: t\n\nbody\n",
			mod:     func(p *PrepareParams) { p.Rcpts = []string{"cmd@line"}; p.Extract = true; p.FullName = "CronDaemon" },
			rcpts:   []string{"cmd@line", "a@b.c", "x@y.z", "hidden@h.h"},
			content: recv + "To: a@b.c\r\nCc: X <x@y.z>, a@b.c\r\nSubject: t\r\n" + added + "From: CronDaemon <alice@host.example>\r\n\r\nbody\r\n"},
		{name: "resent only", in: "To: old@x\nResent-To: new@x\nResent-Bcc: hid@x\nFrom: f@x\nDate: d\nMessage-Id: <m@x>\n\nb\n",
			mod:     func(p *PrepareParams) { p.Extract = true },
			rcpts:   []string{"new@x", "hid@x"},
			content: recv + "To: old@x\r\nResent-To: new@x\r\nFrom: f@x\r\nDate: d\r\nMessage-Id: <m@x>\r\nResent-Message-Id: <4jcjv54Q7rz1SC8X@host.example>\r\nResent-Date: Sun, 29 Nov 2026 10:24:33 +0000 (UTC)\r\nResent-From: alice@host.example\r\n\r\nb\r\n"},
		{name: "folded to", in: "To: a@x,\n b@x\nFrom: me\n\nb\n",
			mod:   func(p *PrepareParams) { p.Extract = true },
			rcpts: []string{"a@x", "b@x"}},
		{name: "unqualified rcpt", in: "\nb\n",
			mod:   func(p *PrepareParams) { p.Rcpts = []string{"root"} },
			rcpts: []string{"root@host.example"}},
		{name: "drops return-path and content-length", in: "Return-Path: <x>\nContent-Length: 3\nFrom: a@b\nDate: x\nMessage-ID: <y>\n\nabc\n",
			mod:     func(p *PrepareParams) { p.Rcpts = []string{"r@x"} },
			rcpts:   []string{"r@x"},
			content: recv + "From: a@b\r\nDate: x\r\nMessage-ID: <y>\r\n\r\nabc\r\n"},
		{name: "body without separator", in: "Subject: x\nnot a header line\n",
			mod:     func(p *PrepareParams) { p.Rcpts = []string{"r@x"}; p.Gateway = true },
			rcpts:   []string{"r@x"},
			content: recv + "Subject: x\r\n\r\nnot a header line\r\n"},
		{name: "null sender", in: "\nb\n",
			mod:     func(p *PrepareParams) { p.Rcpts = []string{"r@x"}; p.Sender = "" },
			rcpts:   []string{"r@x"},
			content: recv + added + "From: MAILER-DAEMON\r\n\r\nb\r\n"},
		{name: "no recipients", in: "Subject: x\n\nb\n", code: ExitUsage},
		{name: "no recipients -t", in: "Subject: x\n\nb\n", mod: func(p *PrepareParams) { p.Extract = true }, code: ExitUsage},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := baseParams()
			if tt.mod != nil {
				tt.mod(&p)
			}
			got, err := Prepare([]byte(tt.in), p)
			if c := ExitCode(err); c != tt.code {
				t.Fatalf("exit %d (%v), want %d", c, err, tt.code)
			}
			if err != nil {
				return
			}
			if !reflect.DeepEqual(got.Rcpts, tt.rcpts) {
				t.Errorf("rcpts %q, want %q", got.Rcpts, tt.rcpts)
			}
			if tt.content != "" && string(got.Content) != tt.content {
				t.Errorf("content\n%s\nwant\n%s", got.Content, tt.content)
			}
		})
	}
}

func TestNoRecipientsText(t *testing.T) {
	if !strings.Contains(NoRecipients(true).Error(), "No recipient addresses found in message header") {
		t.Error("-t text")
	}
	if !strings.Contains(NoRecipients(false).Error(), "must be specified on the command line or via the -t option") {
		t.Error("plain text")
	}
}

// FuzzPrepare drives -t header parsing with arbitrary input: it must never
// panic, the output must keep CRLF line ends, and no Bcc may survive.
func FuzzPrepare(f *testing.F) {
	for _, s := range []string{
		"To: a@b\nBcc: c@d\n\nbody\n",
		"Resent-To: x@y\nTo: z@w\n\n",
		"To: a@b,\n\tc@d\nSubject: x\n\n",
		"no header\n",
		"To: \"q, r\" <s@t>, (c) u@v\n\n",
		":\n",
		"Bcc: x\n continued\n\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		msg, err := ReadMessage(bytes.NewReader(in), false, 1<<20)
		if err != nil {
			return
		}
		p := baseParams()
		p.Extract = true
		got, err := Prepare(msg, p)
		if err != nil {
			if ExitCode(err) != ExitUsage {
				t.Fatalf("unexpected error %v", err)
			}
			return
		}
		if bytes.Contains(bytes.ReplaceAll(got.Content, []byte("\r\n"), nil), []byte("\n")) {
			t.Fatalf("bare LF in output %q", got.Content)
		}
		hdrs, _, _ := SplitHeader(bytes.ReplaceAll(got.Content, []byte("\r\n"), []byte("\n")))
		for _, h := range hdrs {
			if strings.EqualFold(h.Name, "bcc") {
				t.Fatalf("Bcc survived in %q", got.Content)
			}
		}
	})
}

func FuzzReadMessage(f *testing.F) {
	for _, s := range []string{"From x\na\n.\nb", "a\r\n.\r\n", "..\n", ""} {
		f.Add([]byte(s), true)
	}
	f.Fuzz(func(t *testing.T, in []byte, dotEnds bool) {
		got, err := ReadMessage(bytes.NewReader(in), dotEnds, 0)
		if err != nil {
			t.Fatal(err)
		}
		if len(got) > 0 && got[len(got)-1] != '\n' {
			t.Fatalf("output %q does not end in LF", got)
		}
		if len(got) > len(in)+1 {
			t.Fatalf("output %q longer than input %q", got, in)
		}
	})
}
