package e2e

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/sluicemta/sluice/internal/testutil/sluicetest"
	"github.com/sluicemta/sluice/internal/testutil/smtpsink"
)

// TestPickupDirectory: PowerMTA's pickup directory. A file present before
// start and one dropped while running are delivered with the envelope
// from their x-sender/x-receiver lines, which are gone from the content;
// a file without x-receiver lands in the bad-mail directory with a
// reason.
func TestPickupDirectory(t *testing.T) {
	sink := smtpsink.Start(t, smtpsink.Options{})
	root := t.TempDir()
	pickup, bad := filepath.Join(root, "pickup"), filepath.Join(root, "badmail") // bad: created by the daemon
	if err := os.Mkdir(pickup, 0o755); err != nil {
		t.Fatal(err)
	}
	drop := func(name, content string) {
		t.Helper()
		tmp := filepath.Join(pickup, name+".tmp")
		if err := os.WriteFile(tmp, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, filepath.Join(pickup, name)); err != nil {
			t.Fatal(err)
		}
	}
	drop("early", "x-sender: <early@sender.test>\nx-receiver: <one@rcpt.test>\nSubject: before start\n\nearly body\n")

	d := sluicetest.Start(t, sluicetest.Options{Config: routes(sink.Port(), fmt.Sprintf("pickup %s %s\n", pickup, bad))})
	msgs, err := sink.WaitMessages(1, 20*time.Second)
	if err != nil {
		t.Fatalf("file present at start: %v\n%s", err, d.Stderr())
	}
	if m := msgs[0]; m.From != "early@sender.test" || !slices.Equal(m.Recipients(), []string{"one@rcpt.test"}) || !bytes.Contains(m.Data, []byte("early body")) {
		t.Fatalf("early: from %q to %v:\n%s", m.From, m.Recipients(), m.Data)
	}

	drop("late", "X-Sender: late@sender.test\r\nX-Receiver: two@rcpt.test\r\nx-receiver: three@rcpt.test\r\nSubject: while running\r\n\r\nlate body\r\n")
	drop("bad", "x-sender: <late@sender.test>\nSubject: no receiver\n\nbody\n")
	msgs, err = sink.WaitMessages(2, 20*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	m := msgs[1]
	rcpts := m.Recipients()
	slices.Sort(rcpts)
	if m.From != "late@sender.test" || !slices.Equal(rcpts, []string{"three@rcpt.test", "two@rcpt.test"}) {
		t.Fatalf("late: from %q to %v", m.From, rcpts)
	}
	lower := strings.ToLower(string(m.Data))
	if strings.Contains(lower, "x-sender") || strings.Contains(lower, "x-receiver") {
		t.Errorf("x- headers delivered:\n%s", m.Data)
	}
	if !bytes.HasPrefix(m.Data, []byte("Subject: while running\r\n")) {
		t.Errorf("late: content starts %q", m.Data[:min(len(m.Data), 40)])
	}
	for _, h := range []string{"\r\nMessage-Id: <", "\r\nDate: ", "\r\n\r\nlate body\r\n"} {
		if !bytes.Contains(m.Data, []byte(h)) {
			t.Errorf("late: %q missing:\n%s", h, m.Data)
		}
	}
	if m.BareLF {
		t.Errorf("late: bare LF delivered")
	}

	deadline := time.Now().Add(10 * time.Second)
	var reason []byte
	for time.Now().Before(deadline) {
		if reason, err = os.ReadFile(filepath.Join(bad, "bad.reason")); err == nil {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if !strings.Contains(string(reason), "no x-receiver") {
		t.Fatalf("bad.reason = %q, %v", reason, err)
	}
	if b, err := os.ReadFile(filepath.Join(bad, "bad")); err != nil || !strings.Contains(string(b), "no receiver") {
		t.Fatalf("bad file in bad-mail dir: %q, %v", b, err)
	}
	ents, err := os.ReadDir(pickup)
	if err != nil || len(ents) != 0 {
		t.Fatalf("pickup dir not empty: %v %v", ents, err)
	}
	time.Sleep(time.Second) // nothing is delivered twice
	if n := len(sink.Messages()); n != 2 {
		t.Fatalf("%d messages delivered, want 2", n)
	}
}
