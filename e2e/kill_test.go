package e2e

import (
	"fmt"
	"net/smtp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sluicemta/sluice/internal/testutil/sluicetest"
	"github.com/sluicemta/sluice/internal/testutil/smtpsink"
)

// TestSIGKILLUnderLoadLosesNothingAcknowledged kills the daemon with
// SIGKILL while four clients submit, restarts it, and checks that every
// message the daemon answered 250 is delivered. Duplicates (a delivery
// whose outcome was not yet durable at the kill) are allowed by SMTP's
// at-least-once contract; they are counted and reported.
func TestSIGKILLUnderLoadLosesNothingAcknowledged(t *testing.T) {
	sink := smtpsink.Start(t, smtpsink.Options{})
	d := sluicetest.Start(t, sluicetest.Options{Config: routes(sink.Port(), "")})

	var mu sync.Mutex
	acked := map[string]bool{}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w := 0; w < 4; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				id := fmt.Sprintf("<kill-%d-%d@sender.test>", w, i)
				msg := "From: a@sender.test\r\nTo: r@rcpt.test\r\nMessage-Id: " + id + "\r\nSubject: kill\r\n\r\n" + strings.Repeat(strings.Repeat("x", 76)+"\r\n", 26)
				if err := smtp.SendMail(d.SMTPAddr(), nil, "a@sender.test", []string{"r@rcpt.test"}, []byte(msg)); err == nil {
					mu.Lock()
					acked[id] = true
					mu.Unlock()
				} else {
					time.Sleep(20 * time.Millisecond) // the daemon is down: try again shortly
				}
			}
		}()
	}
	waitAcked := func(n int) {
		deadline := time.Now().Add(30 * time.Second)
		for time.Now().Before(deadline) {
			mu.Lock()
			c := len(acked)
			mu.Unlock()
			if c >= n {
				return
			}
			time.Sleep(10 * time.Millisecond)
		}
		t.Fatalf("fewer than %d messages acknowledged", n)
	}
	for round := 1; round <= 3; round++ {
		waitAcked(round * 40)
		d.Kill()
		d.Restart()
	}
	waitAcked(160)
	close(stop)
	wg.Wait()

	mu.Lock()
	want := len(acked)
	mu.Unlock()
	deadline := time.Now().Add(60 * time.Second)
	for {
		got := map[string]int{}
		for _, m := range sink.Messages() {
			got[m.MessageID]++
		}
		missing, dups := 0, 0
		for id := range acked {
			if got[id] == 0 {
				missing++
			}
			if got[id] > 1 {
				dups += got[id] - 1
			}
		}
		if missing == 0 {
			t.Logf("%d acknowledged messages all delivered; %d duplicate deliveries after 3 SIGKILLs", want, dups)
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d acknowledged messages never delivered", missing, want)
		}
		time.Sleep(200 * time.Millisecond)
	}
}
