package vmta

import (
	"bytes"
	"errors"
	"io"
	"mime/multipart"
	"mime/quotedprintable"
	"net/mail"
	"strings"
	"testing"
	"testing/iotest"
)

// sevenBitClean checks what Downgrade promises of its output: no 8-bit
// octet and no line over 998 octets outside the headers.
func sevenBitClean(t *testing.T, out []byte) {
	t.Helper()
	_, _, body := splitEntity(out)
	if has8bit(body) {
		t.Errorf("8-bit octets left in %q", out)
	}
	if hasLongLine(body) {
		t.Errorf("line over 998 octets left")
	}
}

func TestDowngrade(t *testing.T) {
	long := strings.Repeat("x", 1200)
	for _, tc := range []struct {
		name    string
		in      string
		changed bool
		err     error
		want    []string // substrings of the output
		absent  []string
	}{
		{"7bit untouched", "Subject: a\r\n\r\nhello\r\n", false, nil, nil, nil},
		{"plain 8bit, not MIME", "Subject: a\r\n\r\ncaf\xc3\xa9\r\n", true, nil,
			[]string{"MIME-Version: 1.0\r\n", "Content-Type: text/plain; charset=utf-8\r\n", "Content-Transfer-Encoding: quoted-printable\r\n", "caf=C3=A9"}, nil},
		{"latin1 not MIME", "Subject: a\n\ncaf\xe9\n", true, nil,
			[]string{"charset=unknown-8bit", "caf=E9"}, nil},
		{"MIME 8bit text", "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n\xc3\xa9t\xc3\xa9\r\n", true, nil,
			[]string{"Content-Transfer-Encoding: quoted-printable\r\n", "=C3=A9t=C3=A9"}, []string{"8bit", "MIME-Version: 1.0\r\nMIME-Version"}},
		{"long line ascii", "Subject: a\r\n\r\n" + long + "\r\n", true, nil,
			[]string{"Content-Transfer-Encoding: quoted-printable"}, nil},
		{"8bit header", "Subject: caf\xc3\xa9\r\n\r\ncaf\xc3\xa9\r\n", false, ErrNotConvertible, nil, nil},
		{"8bit in base64 part", "MIME-Version: 1.0\r\nContent-Transfer-Encoding: base64\r\n\r\n\xff\xff\r\n", false, ErrNotConvertible, nil, nil},
		{"binary attachment", "MIME-Version: 1.0\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: binary\r\n\r\n\x00\xff\x01", true, nil,
			[]string{"Content-Transfer-Encoding: base64\r\n", "AP8B"}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, changed, err := Downgrade([]byte(tc.in))
			if !errors.Is(err, tc.err) || changed != tc.changed {
				t.Fatalf("changed %v err %v, want %v %v", changed, err, tc.changed, tc.err)
			}
			if !changed {
				if string(out) != tc.in {
					t.Errorf("unchanged content altered: %q", out)
				}
				return
			}
			sevenBitClean(t, out)
			for _, w := range tc.want {
				if !bytes.Contains(out, []byte(w)) {
					t.Errorf("missing %q in %q", w, out)
				}
			}
			for _, a := range tc.absent {
				if bytes.Contains(out, []byte(a)) {
					t.Errorf("unexpected %q in %q", a, out)
				}
			}
			if again, c, err := Downgrade(out); c || err != nil || !bytes.Equal(again, out) {
				t.Errorf("not idempotent: changed %v err %v", c, err)
			}
		})
	}
}

// TestDowngradeMultipart converts only the 8-bit part of a multipart and
// a message/rfc822 inside it, and decoding gives the original text back.
func TestDowngradeMultipart(t *testing.T) {
	in := "From: a@example.org\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"BB\"\r\nContent-Transfer-Encoding: 8bit\r\n\r\n" +
		"preamble\r\n" +
		"--BB\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\nplain part\r\n" +
		"--BB\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\nGr\xc3\xbc\xc3\x9fe\r\nzweite Zeile\r\n" +
		"--BB\r\nContent-Type: message/rfc822\r\n\r\nSubject: inner\r\n\r\ninner \xc3\xa9\r\n" +
		"--BB--\r\nepilogue\r\n"
	out, changed, err := Downgrade([]byte(in))
	if err != nil || !changed {
		t.Fatalf("changed %v err %v", changed, err)
	}
	sevenBitClean(t, out)
	if !bytes.Contains(out, []byte("--BB\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\nplain part\r\n--BB")) {
		t.Errorf("7-bit part not kept byte for byte:\n%s", out)
	}
	if !bytes.HasSuffix(out, []byte("--BB--\r\nepilogue\r\n")) || !bytes.Contains(out, []byte("\r\n\r\npreamble\r\n--BB")) {
		t.Errorf("preamble/epilogue lost:\n%s", out)
	}
	if !bytes.Contains(out, []byte("Content-Transfer-Encoding: 7bit\r\n")) {
		t.Errorf("multipart not relabelled 7bit:\n%s", out)
	}
	msg, err := mail.ReadMessage(bytes.NewReader(out))
	if err != nil {
		t.Fatal(err)
	}
	mr := multipart.NewReader(msg.Body, "BB")
	var texts []string
	for {
		p, err := mr.NextRawPart()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		var r io.Reader = p
		if strings.EqualFold(p.Header.Get("Content-Transfer-Encoding"), "quoted-printable") {
			r = quotedprintable.NewReader(p)
		}
		b, _ := io.ReadAll(r)
		texts = append(texts, string(b))
	}
	want := []string{"plain part", "Gr\xc3\xbc\xc3\x9fe\r\nzweite Zeile", "Subject: inner\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\ninner =C3=A9"}
	if len(texts) != 3 {
		t.Fatalf("parts %q", texts)
	}
	for i := range want {
		if texts[i] != want[i] {
			t.Errorf("part %d = %q, want %q", i, texts[i], want[i])
		}
	}
}

func FuzzDowngrade(f *testing.F) {
	f.Add([]byte("Subject: a\r\n\r\ncaf\xc3\xa9\r\n"))
	f.Add([]byte("MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n\r\n\xff\r\n--b--\r\n"))
	f.Add([]byte("Content-Type: message/rfc822\r\n\r\nX: y\r\n\r\n\xe9" + strings.Repeat("y", 1000)))
	f.Add([]byte("no header line\n\xff"))
	f.Fuzz(func(t *testing.T, in []byte) {
		out, changed, err := Downgrade(in)
		if err != nil || !changed {
			if !bytes.Equal(out, in) {
				t.Fatalf("unchanged output differs")
			}
			return
		}
		// Every body that could be converted was; a second pass finds
		// nothing new to do.
		again, c, err := Downgrade(out)
		if err != nil || (c && !bytes.Equal(again, out)) {
			t.Fatalf("second pass changed %v err %v", c, err)
		}
	})
}

// BenchmarkScanContent: the pass every Deliver makes over the content to
// decide whether it must be converted.
func BenchmarkScanContent(b *testing.B) {
	body := []byte("Subject: bench\r\n\r\n" + strings.Repeat("0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcde\r\n", 64))
	b.SetBytes(int64(len(body)))
	for i := 0; i < b.N; i++ {
		if info, err := scanContent(bytes.NewReader(body)); err != nil || info.body8bit {
			b.Fatal(info, err)
		}
	}
}

func TestScanContent(t *testing.T) {
	l998, l999 := strings.Repeat("a", 998), strings.Repeat("a", 999)
	for _, tc := range []struct {
		in   string
		want contentInfo
	}{
		{"A: b\r\n\r\nbody\r\n", contentInfo{}},
		{"A: \xc3\xa9\r\n\r\nbody\r\n", contentInfo{header8bit: true}},
		{"A: b\n\nb\xc3\xa9dy\n", contentInfo{body8bit: true}},
		{"A: b\r\n\r\n" + l998 + "\r\n" + l998, contentInfo{}},
		{"A: b\r\n\r\n" + l999 + "\r\n", contentInfo{longLines: true}},
		{"A: b\r\n\r\n" + l999, contentInfo{longLines: true}},
		{"A: b\r\n\r\n" + l998 + "\r\r\n", contentInfo{longLines: true}}, // a bare CR is an octet
		{"A: b\r\n" + l999 + "\r\n\r\n", contentInfo{longLines: true}},
		{"A: b\r\n\r\n\r\n\xff", contentInfo{body8bit: true}},
	} {
		for _, oneByte := range []bool{false, true} {
			var r io.Reader = strings.NewReader(tc.in)
			if oneByte {
				r = iotest.OneByteReader(r)
			}
			got, err := scanContent(r)
			if err != nil || got != tc.want {
				t.Errorf("%.40q (one byte %v) = %+v, %v; want %+v", tc.in, oneByte, got, err, tc.want)
			}
		}
	}
}
