package dkim

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sluicemta/sluice/internal/config"
	"github.com/sluicemta/sluice/internal/qid"
	"github.com/sluicemta/sluice/internal/qmgr"
	"github.com/sluicemta/sluice/internal/testutil/smtpsink"
	"github.com/sluicemta/sluice/spool"
	"github.com/sluicemta/sluice/vmta"
)

type nopRecorder struct{}

func (nopRecorder) Record(*qmgr.Event) {}

// TestFlow: one message to two domains goes through the real spool, the
// queue manager (which adds List-Unsubscribe per queue, then calls the
// Sign hook), vmta and a loopback SMTP sink. Each queue's copy carries one
// signature from its own key, covering the per-queue header, and verifies
// with python3-dkim; the body was hashed once for both.
func TestFlow(t *testing.T) {
	rk, ek := testKeys(t)
	dir := t.TempDir()
	writeKey(t, dir, "rsa.key", rk)
	writeKey(t, dir, "ed.key", ek)
	sink := smtpsink.Start(t, smtpsink.Options{})
	conf := fmt.Sprintf(`host-name mx.test.example
postmaster postmaster@test.example
domain-key s-rsa,example.com,rsa.key
<virtual-mta v>
    smtp-source-host 127.0.0.2 v.test.example
    domain-key s-ed,example.com,ed.key
</virtual-mta>
<domain *>
    route [127.0.0.1]:%d
    use-starttls no
    dkim-sign yes
</domain>
<domain b.example>
    list-unsubscribe https://example.com/u?r={rcpt}
    add-list-unsubscribe-post yes
</domain>
`, sink.Port())
	cfg, err := config.Parse(filepath.Join(dir, "config"), []byte(conf))
	if err != nil {
		t.Fatal(err)
	}
	sp, err := spool.Open(filepath.Join(dir, "spool"), spool.Options{SegmentSize: 1 << 20, Reserve: 1})
	if err != nil {
		t.Fatal(err)
	}
	signer := NewSigner(Options{Convert: vmta.Downgrade})
	dlv := vmta.NewDeliverer(vmta.Options{Logf: t.Logf})
	m := qmgr.New(qmgr.Options{Spool: sp, Config: func() *config.Config { return cfg }, Deliver: dlv, Recorder: nopRecorder{}, Logf: t.Logf,
		Sign: signer.Hook(t.Logf, nil)})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); m.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		<-done
		dlv.Close()
		sp.Close()
	})

	body := "\r\nGrüße — an 8-bit body\r\n" + strings.Repeat("line of text  \t with spaces\r\n", 50) + "\r\n\r\n"
	for _, vm := range []string{"", "v"} {
		id := qid.New(time.Now())
		if err := sp.Submit(&spool.Message{ID: id, Arrival: time.Now(), Sender: "news@example.com", VMTA: vm,
			Recipients: []spool.Recipient{{Addr: "x@a.example"}, {Addr: "y@b.example"}},
			Content: []byte("From: News <news@example.com>\r\nTo: list@example.com\r\nSubject: flow " + vm +
				"\r\n\tfolded\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n" + body)}); err != nil {
			t.Fatal(err)
		}
	}
	msgs, err := sink.WaitMessages(4, 20*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	recs := records(t, rk, ek)
	var files []string
	for i, msg := range msgs {
		data := msg.Data
		if n := strings.Count(string(data), "DKIM-Signature:"); n != 1 {
			t.Errorf("message %d has %d signatures", i, n)
		}
		tags := parseTags(t, string(data[:strings.Index(string(data), "\r\nFrom:")+2]))
		wantSel := "s-rsa"
		if msg.PeerIP == "127.0.0.2" {
			wantSel = "s-ed"
		}
		if tags["s"] != wantSel || !strings.Contains(tags["h"], "list-unsubscribe") {
			t.Errorf("message %d from %s: s=%s h=%s", i, msg.PeerIP, tags["s"], tags["h"])
		}
		if strings.HasSuffix(msg.Rcpts[0].Addr, "@b.example") && !strings.Contains(string(data), "List-Unsubscribe: <https://example.com/u?r=y%40b.example>") {
			t.Errorf("message %d lacks its List-Unsubscribe:\n%s", i, data)
		}
		if err := verifyGo(data, recs); err != nil {
			t.Errorf("message %d: go-msgauth: %v", i, err)
		}
		f := filepath.Join(dir, fmt.Sprintf("m%d.eml", i))
		if err := os.WriteFile(f, data, 0o600); err != nil {
			t.Fatal(err)
		}
		files = append(files, f)
	}
	for f, why := range verifyPython(t, recs, files) {
		t.Errorf("python3-dkim: %s: %s", filepath.Base(f), why)
	}
	// Two messages with the same body, four queues: hashed once.
	if hits, misses := signer.CacheStats(); misses != 1 || hits != 3 {
		t.Errorf("body hash cache: %d hits, %d misses; want 3, 1", hits, misses)
	}
}
