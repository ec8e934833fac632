package daemon

import (
	"context"
	"fmt"
	"io"
	"testing"
	"time"

	"github.com/sluicemta/sluice/compat"
	"github.com/sluicemta/sluice/internal/qid"
	"github.com/sluicemta/sluice/spool"
)

// BenchmarkMailq100k lists 100,000 queued messages the way `mailq` does:
// the spool walk, the compat.Backend mapping and Postfix's text layout.
// The floor is `mailq | tail -1` under 0.5 s at this size.
func BenchmarkMailq100k(b *testing.B) {
	const n = 100_000
	sp, err := spool.Open(b.TempDir(), spool.Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer sp.Close()
	content := []byte("From: a@sender.example\r\nSubject: queued\r\n\r\n" + fmt.Sprintf("%01000d", 0) + "\r\n")
	for i := 0; i < n; {
		var batch spool.Batch
		for j := 0; j < 1000 && i < n; j, i = j+1, i+1 {
			batch.Submit(&spool.Message{
				ID: qid.New(time.Now()), Arrival: time.Now(), Sender: "a@sender.example",
				Recipients: []spool.Recipient{{Addr: fmt.Sprintf("user%d@domain%d.example", i, i%1000)}},
				Content:    content,
			}, false)
		}
		if err := sp.Commit(&batch); err != nil {
			b.Fatal(err)
		}
	}
	be := &localBackend{d: &Daemon{sp: sp}}
	b.ResetTimer()
	start := time.Now()
	for it := 0; it < b.N; it++ {
		w := compat.NewMailqWriter(io.Discard, time.UTC)
		count := 0
		if err := be.List(context.Background(), func(e *compat.QueueEntry) bool {
			count++
			return w.Write(e) == nil
		}); err != nil {
			b.Fatal(err)
		}
		if err := w.Close(); err != nil {
			b.Fatal(err)
		}
		if count != n {
			b.Fatalf("listed %d of %d", count, n)
		}
	}
	b.ReportMetric(time.Since(start).Seconds()/float64(b.N), "s/mailq")
}
