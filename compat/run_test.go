package compat

import (
	"bytes"
	"context"
	"io"
	"strings"
	"testing"
)

func runWith(t *testing.T, c *Client, argv []string, stdin string) (int, string, string) {
	t.Helper()
	var out, errb bytes.Buffer
	code := Run(context.Background(), argv, Env{
		Stdin: strings.NewReader(stdin), Stdout: &out, Stderr: &errb,
		Getenv: func(string) string { return "" },
		Socket: func(string) (string, error) { return c.Socket, nil },
	})
	return code, out.String(), errb.String()
}

func TestRunCommands(t *testing.T) {
	fb := &fakeBackend{}
	c := startServer(t, fb, nil)
	tests := []struct {
		argv   string
		stdin  string
		code   int
		out    string // substring of stdout
		errOut string // substring of stderr
	}{
		{argv: "/usr/sbin/sendmail -t -i", stdin: "To: a@x\n\nb\n", code: 0},
		{argv: "sendmail -FCronDaemon -i -odi -oem -oi -t", stdin: "To: a@x\nSubject: cron\n\nb\n", code: 0},
		{argv: "sendmail -t", stdin: "Subject: x\n\n", code: ExitUsage, errOut: "sendmail: fatal: tester("},
		{argv: "sendmail -n a@x", code: ExitUsage, errOut: "sendmail: fatal: -n option not supported"},
		{argv: "sendmail -bh", code: 0},
		{argv: "newaliases", code: 0, errOut: "no local alias database"},
		{argv: "sendmail -bd", code: ExitUnavailable},
		{argv: "mailq", code: 0, out: "-- 0 Kbytes in 2 Requests."},
		{argv: "sendmail -bp", code: 0, out: "----Queue ID-----"},
		{argv: "postqueue -j", code: 0, out: `"queue_name": "deferred"`},
		{argv: "postqueue -p", code: 0, out: "Requests."},
		{argv: "postqueue -f", code: 0},
		{argv: "postqueue -s example.com", code: 0},
		{argv: "postqueue", code: ExitUsage, errOut: "postqueue: fatal: usage: postqueue -f"},
		{argv: "sendmail -q", code: 0},
		{argv: "postsuper -h ALL", code: 0, errOut: "postsuper: Placed on hold: 2 messages"},
		{argv: "postsuper -d ALL hold", code: 0, errOut: "postsuper: Deleted: 2 messages"},
		{argv: "mailq", code: 0, out: "Mail queue is empty"},
		{argv: "postsuper -d bogus", code: ExitUsage},
	}
	for _, tt := range tests {
		code, out, errOut := runWith(t, c, strings.Fields(tt.argv), tt.stdin)
		if code != tt.code || !strings.Contains(out, tt.out) || !strings.Contains(errOut, tt.errOut) {
			t.Errorf("%s: exit %d, stdout %q, stderr %q; want exit %d, %q, %q", tt.argv, code, out, errOut, tt.code, tt.out, tt.errOut)
		}
	}
	if len(fb.flushed) != 3 {
		t.Errorf("flushes %q", fb.flushed)
	}
}

func TestRunDaemonDown(t *testing.T) {
	c := &Client{Socket: t.TempDir() + "/none.sock"}
	code, _, errOut := runWith(t, c, []string{"sendmail", "a@x"}, "Subject: x\n\n")
	if code != ExitTempFail || !strings.Contains(errOut, "not running") {
		t.Fatalf("exit %d, %q", code, errOut)
	}
}

// errReader fails the test's expectations if anything reads it.
type errReader struct{ read *bool }

func (e errReader) Read([]byte) (int, error) { *e.read = true; return 0, io.ErrUnexpectedEOF }

// TestRunVerifyReadsNoStdin: as Postfix's, sendmail -bv reads no message
// (typed at a terminal it must not wait for EOF); it submits a probe of
// headers naming the sender and recipients, with the verify flag.
func TestRunVerifyReadsNoStdin(t *testing.T) {
	fb := &fakeBackend{}
	c := startServer(t, fb, nil)
	var read bool
	var errb bytes.Buffer
	code := Run(context.Background(), []string{"sendmail", "-bv", "-f", "me@here.test", "a@x.test", "b@y.test"}, Env{
		Stdin: errReader{&read}, Stdout: io.Discard, Stderr: &errb,
		Getenv: func(string) string { return "" },
		Socket: func(string) (string, error) { return c.Socket, nil },
	})
	if code != 0 || read {
		t.Fatalf("exit %d (stderr %q), stdin read: %v", code, errb.String(), read)
	}
	if len(fb.subs) != 1 || !fb.subs[0].Verify {
		t.Fatalf("submissions %+v", fb.subs)
	}
	got := string(fb.subs[0].Content)
	for _, want := range []string{"From: me@here.test\r\n", "Subject: probe\r\n", "To:\ta@x.test,\r\n\tb@y.test\r\n"} {
		if !strings.Contains(got, want) {
			t.Errorf("probe content %q lacks %q", got, want)
		}
	}
}
