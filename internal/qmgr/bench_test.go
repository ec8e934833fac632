package qmgr

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/sluicemta/sluice/internal/config"
	"github.com/sluicemta/sluice/internal/qid"
	"github.com/sluicemta/sluice/internal/testutil/smtpsink"
	"github.com/sluicemta/sluice/spool"
	"github.com/sluicemta/sluice/vmta"
)

// BenchmarkScheduler measures the scheduler's own CPU per recipient
// (routing through a pool, limits, ready set, slot release), with the
// delivery itself a no-op, for recipients spread over 1,000 and 100,000
// delivery queues.
func BenchmarkScheduler(b *testing.B) {
	for _, nq := range []int{1000, 100000} {
		b.Run(fmt.Sprintf("queues=%d", nq), func(b *testing.B) {
			cfg, err := config.Parse("b.conf", []byte(benchVMTAs(8)+`
total-max-smtp-out 100000
<domain *>
  max-smtp-out 2
  source-ip-max-smtp-out 0/0 1000
</domain>
`))
			if err != nil {
				b.Fatal(err)
			}
			m := New(Options{Config: func() *config.Config { return cfg }})
			m.deliverFn = func(context.Context, *config.Config, *queue, *limits, []spool.Due) {}
			ctx := context.Background()
			id := qid.New(time.Now())
			batch := make([]spool.Due, 0, 1024)
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				dom := fmt.Sprintf("d%d.example", i%(nq/8))
				batch = append(batch, spool.Due{ID: id, Rcpt: i, Queue: spool.QueueKey{VMTA: "pool", Domain: dom}})
				if len(batch) == cap(batch) || i == b.N-1 {
					m.enqueue(batch)
					m.dispatch(ctx)
					batch = batch[:0]
				}
			}
			for {
				m.wg.Wait()
				m.dispatch(ctx)
				m.mu.Lock()
				left := len(m.queues)
				m.mu.Unlock()
				if left == 0 {
					break
				}
				time.Sleep(time.Millisecond)
			}
			m.wg.Wait()
		})
	}
}

func benchVMTAs(n int) string {
	var sb strings.Builder
	for i := 0; i < n; i++ {
		fmt.Fprintf(&sb, "<virtual-mta v%d>\n  smtp-source-host 127.0.1.%d v%d.test.example\n</virtual-mta>\n", i, i+1, i)
	}
	sb.WriteString("<virtual-mta-pool pool>\n")
	for i := 0; i < n; i++ {
		fmt.Fprintf(&sb, "  virtual-mta v%d\n", i)
	}
	sb.WriteString("</virtual-mta-pool>\n")
	return sb.String()
}

// BenchmarkDeliveryLimits delivers through the whole stack (spool, pool
// of 8 virtual MTAs on 127.0.1.1-8, smtpsink) to 100 domains, with every
// kind of limit configured (high enough not to throttle) and with none,
// and reports delivered messages per second.
func BenchmarkDeliveryLimits(b *testing.B) {
	for _, tc := range []struct{ name, conf string }{
		{"none", ""},
		{"limits", `  max-msg-rate 1000000/s
  max-connect-rate 100000/s
  max-data-volume-rate 100000M/s
  source-ip-max-smtp-out 0/0 50
  source-ip-max-msg-rate 0/0 1000000/s
  source-ip-max-connect-rate 0/0 100000/s
`},
	} {
		b.Run(tc.name, func(b *testing.B) {
			sink := smtpsink.Start(b, smtpsink.Options{})
			cfg, err := config.Parse("b.conf", []byte(fmt.Sprintf("host-name mx.test.example\n%s<domain *>\n  route [127.0.0.1]:%d\n  use-starttls no\n  max-smtp-out 4\n%s</domain>\n", benchVMTAs(8), sink.Port(), tc.conf)))
			if err != nil {
				b.Fatal(err)
			}
			sp, err := spool.Open(b.TempDir(), spool.Options{SegmentSize: 64 << 20})
			if err != nil {
				b.Fatal(err)
			}
			defer sp.Close()
			dlv := vmta.NewDeliverer(vmta.Options{Dial: ConnectLimitedDial(nil)})
			defer dlv.Close()
			rec := &recorder{}
			m := New(Options{Spool: sp, Config: func() *config.Config { return cfg }, Deliver: dlv, Recorder: rec})
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan struct{})
			go func() { defer close(done); m.Run(ctx) }()
			b.ResetTimer()
			start := time.Now()
			var batch spool.Batch
			for i := 0; i < b.N; i++ {
				batch.Submit(&spool.Message{ID: qid.New(time.Now()), Arrival: time.Now(), Sender: "s@a.example", VMTA: "pool",
					Recipients: []spool.Recipient{{Addr: fmt.Sprintf("u%d@d%d.example", i, i%100)}},
					Content:    []byte("From: <s@a.example>\r\nSubject: bench\r\n\r\nbody\r\n")}, false)
				if batch.Len() == 500 || i == b.N-1 {
					if err := sp.Commit(&batch); err != nil {
						b.Fatal(err)
					}
					batch.Reset()
				}
			}
			if _, err := sink.WaitMessages(b.N, 5*time.Minute); err != nil {
				b.Fatal(err)
			}
			b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "msgs/s")
			b.StopTimer()
			cancel()
			<-done
		})
	}
}
