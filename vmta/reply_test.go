package vmta

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"
)

func TestReadReply(t *testing.T) {
	for _, tc := range []struct {
		in    string
		want  Reply
		lines int
		err   bool
	}{
		{"250 ok\r\n", Reply{250, "", "ok"}, 1, false},
		{"250 2.1.0 Ok\r\n", Reply{250, "2.1.0", "Ok"}, 1, false},
		{"550-5.1.1 The email account does not exist.\r\n550-5.1.1 Please check\r\n550 5.1.1 https://x y - gsmtp\r\n",
			Reply{550, "5.1.1", "The email account does not exist. Please check https://x y - gsmtp"}, 3, false},
		{"421\r\n", Reply{421, "", ""}, 1, false},
		{"250 bare lf\n", Reply{250, "", "bare lf"}, 1, false},
		{"451 5.1.1 class mismatch\r\n", Reply{451, "", "5.1.1 class mismatch"}, 1, false},
		{"250 2.1.0x not a code\r\n", Reply{250, "", "2.1.0x not a code"}, 1, false},
		{"250 2.1000.0 too long\r\n", Reply{250, "", "2.1000.0 too long"}, 1, false},
		{"452 4.5.3\r\n", Reply{452, "4.5.3", ""}, 1, false},
		{"250-a\r\n251 b\r\n", Reply{}, 0, true},
		{"hello\r\n", Reply{}, 0, true},
		{"250x\r\n", Reply{}, 0, true},
		{"650 no\r\n", Reply{}, 0, true},
		{"250-unterminated\r\n", Reply{}, 0, true},
		{"", Reply{}, 0, true},
	} {
		rep, lines, err := readReply(bufio.NewReader(strings.NewReader(tc.in)))
		if (err != nil) != tc.err {
			t.Errorf("%q: err = %v", tc.in, err)
			continue
		}
		if rep != tc.want || len(lines) != tc.lines {
			t.Errorf("%q: got %+v (%d lines), want %+v", tc.in, rep, len(lines), tc.want)
		}
	}
}

func TestReadReplyLimits(t *testing.T) {
	long := "250 " + strings.Repeat("x", 10000) + "\r\n250 next\r\n"
	r := bufio.NewReaderSize(strings.NewReader(long), 16)
	rep, _, err := readReply(r)
	if err != nil || len(rep.Text) != maxReplyLine-4 {
		t.Fatalf("long line: %d, %v", len(rep.Text), err)
	}
	if rep, _, err := readReply(r); err != nil || rep.Text != "next" {
		t.Fatalf("after long line: %+v %v", rep, err)
	}
	many := strings.Repeat("250-x\r\n", maxReplyLines+5) + "250 end\r\n"
	if _, _, err := readReply(bufio.NewReader(strings.NewReader(many))); !errors.Is(err, errProtocol) {
		t.Errorf("too many lines: %v", err)
	}
}

func TestExtensions(t *testing.T) {
	ext := extensions([]string{"mx.example greets you", "pipelining", "SIZE 35882577", "8BITMIME", "AUTH PLAIN LOGIN", "", "STARTTLS"})
	for k, v := range map[string]string{"PIPELINING": "", "SIZE": "35882577", "8BITMIME": "", "AUTH": "PLAIN LOGIN", "STARTTLS": ""} {
		if got, ok := ext[k]; !ok || got != v {
			t.Errorf("%s = %q, %v", k, got, ok)
		}
	}
	if len(ext) != 5 {
		t.Errorf("ext = %v", ext)
	}
}

func TestXtext(t *testing.T) {
	for in, want := range map[string]string{
		"a@b.c":         "a@b.c",
		"a+b=c d":       "a+2Bb+3Dc+20d",
		"\x01ü":         "+01+C3+BC",
		"rfc822;a@b.co": "rfc822;a@b.co",
	} {
		if got := xtext(in); got != want {
			t.Errorf("xtext(%q) = %q, want %q", in, got, want)
		}
	}
}

func stuff(in []string) string {
	var b bytes.Buffer
	w := bufio.NewWriter(&b)
	d := newDotWriter(w)
	for _, p := range in {
		d.Write([]byte(p))
	}
	d.close()
	w.Flush()
	return b.String()
}

func TestDotWriter(t *testing.T) {
	for _, tc := range []struct {
		in   []string
		want string
	}{
		{nil, ".\r\n"},
		{[]string{"a"}, "a\r\n.\r\n"},
		{[]string{"a\r\n"}, "a\r\n.\r\n"},
		{[]string{".a\n.\n"}, "..a\r\n..\r\n.\r\n"},
		{[]string{"a\r", "\nb"}, "a\r\nb\r\n.\r\n"},
		{[]string{"a\r", "b"}, "a\r\nb\r\n.\r\n"},
		{[]string{"a\r"}, "a\r\n.\r\n"},
		{[]string{"a\n", ".b"}, "a\r\n..b\r\n.\r\n"},
		{[]string{"a\r", ".b"}, "a\r\n..b\r\n.\r\n"},
		{[]string{"a\r\n", "\r\n.", "\r\n"}, "a\r\n\r\n..\r\n.\r\n"},
		{[]string{"x.y\n\r\n"}, "x.y\r\n\r\n.\r\n"},
		// SMTP smuggling: a bare-LF "end of data" inside the body stays data.
		{[]string{"a\n.\nMAIL FROM:<x>\r\n"}, "a\r\n..\r\nMAIL FROM:<x>\r\n.\r\n"},
	} {
		if got := stuff(tc.in); got != tc.want {
			t.Errorf("%q: got %q, want %q", tc.in, got, tc.want)
		}
	}
}

// unstuff reads DATA back as a server does: the text up to the dot line,
// with one leading dot removed per line.
func unstuff(wire string) (string, bool) {
	var out strings.Builder
	r := bufio.NewReader(strings.NewReader(wire))
	for {
		l, err := r.ReadString('\n')
		if err != nil || !strings.HasSuffix(l, "\r\n") {
			return "", false
		}
		if l == ".\r\n" {
			_, err := r.ReadByte()
			return out.String(), err == io.EOF
		}
		out.WriteString(strings.TrimPrefix(l, "."))
	}
}

// normalize is what the content should read as after transfer: every line
// end CRLF, a last line terminated.
func normalize(s string) string {
	s = strings.ReplaceAll(s, "\r\n", "\n")
	s = strings.ReplaceAll(s, "\r", "\n")
	if s != "" && !strings.HasSuffix(s, "\n") {
		s += "\n"
	}
	return strings.ReplaceAll(s, "\n", "\r\n")
}

func FuzzDotWriter(f *testing.F) {
	f.Add("Subject: x\r\n\r\n.body\n.\r\nend", 3)
	f.Add("\r\r\n\n.", 1)
	f.Add("", 0)
	f.Fuzz(func(t *testing.T, in string, split int) {
		var parts []string
		if split > 0 && split < len(in) {
			parts = []string{in[:split], in[split:]}
		} else {
			parts = []string{in}
		}
		wire := stuff(parts)
		for i := 0; i < len(wire); i++ {
			if (wire[i] == '\n' && (i == 0 || wire[i-1] != '\r')) || (wire[i] == '\r' && (i+1 == len(wire) || wire[i+1] != '\n')) {
				t.Fatalf("bare line end at %d in %q", i, wire)
			}
		}
		got, ok := unstuff(wire)
		if !ok || got != normalize(in) {
			t.Fatalf("in %q: wire %q reads back as %q (ok=%v), want %q", in, wire, got, ok, normalize(in))
		}
	})
}

func FuzzReadReply(f *testing.F) {
	f.Add("250-mx.example\r\n250-PIPELINING\r\n250 SIZE 100\r\n")
	f.Add("550 5.1.1 no\r\n")
	f.Add("421\n")
	f.Add("250-2.0.0 a\r\n250 2.0.0 b\r\n")
	f.Fuzz(func(t *testing.T, in string) {
		rep, lines, err := readReply(bufio.NewReader(strings.NewReader(in)))
		if err != nil {
			return
		}
		if rep.Code < 200 || rep.Code > 599 || len(lines) == 0 || len(lines) > maxReplyLines {
			t.Fatalf("accepted %q as %+v", in, rep)
		}
		if rep.Enhanced != "" && int(rep.Enhanced[0]-'0') != rep.Code/100 {
			t.Fatalf("enhanced class mismatch: %+v", rep)
		}
		extensions(lines)
	})
}
