package daemon

import (
	"bytes"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sluicemta/sluice/internal/acct"
	"github.com/sluicemta/sluice/internal/bounce"
	"github.com/sluicemta/sluice/internal/maillog"
	"github.com/sluicemta/sluice/internal/qmgr"
	"github.com/sluicemta/sluice/vmta"
)

// TestRecordVerify: a -bv probe result is logged as Postfix logs it,
// the report once, and no accounting record is written for it; a real
// delivery through the same logs is accounted (so the file works).
func TestRecordVerify(t *testing.T) {
	var buf bytes.Buffer
	path := filepath.Join(t.TempDir(), "acct.csv")
	w, err := acct.Open(path, acct.Options{})
	if err != nil {
		t.Fatal(err)
	}
	l := &logs{ml: maillog.New(&buf), acct: []*acct.Writer{w}}
	t.Cleanup(l.Close)
	arrival := time.Now()
	res := &vmta.Result{Host: "mx.b.example", IP: netip.MustParseAddr("192.0.2.25"), Port: 25}
	ev := func(rcpt, status string, code int, enh, text, reason, report string) *qmgr.Event {
		return &qmgr.Event{QueueID: "Q1", Status: status, Rcpt: rcpt, Sender: "me@a.example", Arrival: arrival, Logged: arrival,
			Class: bounce.Classify(code, enh, text), Reply: vmta.Reply{Code: code, Enhanced: enh, Text: text}, Reason: reason,
			Result: res, DSNQueueID: report}
	}
	l.RecordVerify(ev("ok@b.example", qmgr.StatusDeliverable, 250, "2.1.5", "Ok", "250 2.1.5 Ok", ""))
	l.RecordVerify(ev("bad@b.example", qmgr.StatusUndeliverable, 550, "5.1.1", "no such user",
		"host mx.b.example[192.0.2.25] said: 550 5.1.1 no such user (in reply to RCPT TO command)", "R2"))
	out := buf.String()
	for _, want := range []string{
		"sluice/smtp[", "Q1: to=<ok@b.example>, relay=mx.b.example[192.0.2.25]:25, delay=0, delays=0/0/0/0, dsn=2.1.5, status=deliverable (250 2.1.5 Ok)\n",
		"Q1: to=<bad@b.example>, relay=mx.b.example[192.0.2.25]:25, delay=0, delays=0/0/0/0, dsn=5.1.1, status=undeliverable (host mx.b.example[192.0.2.25] said: 550 5.1.1 no such user (in reply to RCPT TO command))\n",
		"sluice/bounce[", "Q1: sender delivery status notification: R2\n",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("log lacks %q:\n%s", want, out)
		}
	}
	if n := strings.Count(out, "status notification"); n != 1 {
		t.Errorf("%d report lines, want 1", n)
	}
	if recs, err := sluiceAcct(path); err != nil || recs != 0 {
		t.Fatalf("%d accounting records written for probes (%v)", recs, err)
	}
	l.Record(ev("real@b.example", maillog.StatusSent, 250, "2.0.0", "queued", "250 2.0.0 queued", ""))
	if recs, err := sluiceAcct(path); err != nil || recs != 1 {
		t.Fatalf("a delivery wrote %d records (%v), want 1", recs, err)
	}
}

// sluiceAcct counts the records (non-header lines) of an accounting file.
func sluiceAcct(path string) (int, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	n := 0
	for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		if line != "" && !strings.HasPrefix(line, "type,") && !strings.HasPrefix(line, "#") {
			n++
		}
	}
	return n, nil
}

func TestWantSMTPUTF8(t *testing.T) {
	for _, tc := range []struct {
		opt, sender string
		rcpts       []string
		want        bool
	}{
		{"", "a@b.example", []string{"c@d.example"}, false},
		{"", "a@b.example", []string{"jürgen@d.example"}, true},
		{"", "ñ@b.example", []string{"c@d.example"}, true},
		{"yes", "a@b.example", []string{"c@d.example"}, true},
		{"YES", "a@b.example", nil, true},
		{"no", "a@b.example", []string{"jürgen@d.example"}, false},
	} {
		if got := wantSMTPUTF8(tc.opt, tc.sender, tc.rcpts); got != tc.want {
			t.Errorf("wantSMTPUTF8(%q, %q, %q) = %v, want %v", tc.opt, tc.sender, tc.rcpts, got, tc.want)
		}
	}
}
