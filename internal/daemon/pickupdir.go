package daemon

import (
	"context"
	"fmt"
	"os"
	"time"

	"github.com/sluicemta/sluice/compat"
	"github.com/sluicemta/sluice/internal/qid"
)

// startPickupDirs serves every "pickup DIR BADMAIL-DIR" line (PowerMTA's
// pickup directories): DIR must exist; BADMAIL-DIR is created if missing.
// Files are queued as sendmail submissions are (milters, one durable
// append), by the pseudo user "pickup"; compat.PickupDir treats every
// file as hostile.
func (d *Daemon) startPickupDirs(ctx context.Context) error {
	for _, pk := range d.store.Current().Global().Pickups("pickup") {
		st, err := os.Stat(pk.Dir)
		if err != nil {
			return fmt.Errorf("pickup %s: %w", pk.Dir, err)
		}
		if !st.IsDir() {
			return fmt.Errorf("pickup %s: not a directory", pk.Dir)
		}
		if err := os.MkdirAll(pk.BadDir, 0o750); err != nil {
			return fmt.Errorf("pickup %s: bad-mail directory: %w", pk.Dir, err)
		}
		p := &compat.PickupDir{
			Dir:     pk.Dir,
			BadDir:  pk.BadDir,
			MaxSize: d.compatHandler().MaxSize, // as sendmail's; <= 0: 64 MiB
			Submit:  d.submitPickup,
			Logf:    func(f string, a ...any) { d.logs.Printf("pickup", f, a...) },
		}
		go func() {
			if err := p.Run(ctx); err != nil {
				d.logs.Printf("pickup", "%s: stopped: %v", pk.Dir, err)
			}
		}()
	}
	return nil
}

// submitPickup queues one pickup file through the sendmail path, adding
// the Message-Id and Date it lacks.
func (d *Daemon) submitPickup(ctx context.Context, sender string, rcpts []string, content []byte) (string, error) {
	now := time.Now()
	id := qid.New(now)
	host := d.store.Current().Global().String("host-name")
	m := &compat.Submission{
		ID:      id,
		Arrival: now,
		UID:     0,
		Login:   "pickup",
		Sender:  sender,
		Rcpts:   rcpts,
		Content: compat.CompletePickupHeaders(content, id, host, now),
	}
	return (&localBackend{d: d}).Submit(ctx, m) // SMTPUTF8 as for sendmail: wantSMTPUTF8
}
