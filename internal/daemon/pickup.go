package daemon

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/sluicemta/sluice/compat"
)

// startMaildrop picks up what sendmail's setgid helper left in the
// maildrop directory while the daemon was down, then watches it. The
// directory belongs to the packaging (mode 1730, daemon user, a dedicated
// group); a missing one means no local fallback is installed, which is not
// an error. Every file is treated as hostile by compat.Pickup.
func (d *Daemon) startMaildrop(ctx context.Context, dir string) error {
	st, err := os.Stat(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("maildrop %s: %w", dir, err)
	}
	if !st.IsDir() {
		return fmt.Errorf("maildrop %s: not a directory", dir)
	}
	bad := dir + ".bad"
	if err := os.MkdirAll(bad, 0o700); err != nil {
		return fmt.Errorf("maildrop: %w", err)
	}
	p := &compat.Pickup{
		Dir:     dir,
		BadDir:  bad,
		Handler: d.compatHandler(),
		Logf:    func(f string, a ...any) { d.logs.Printf("pickup", f, a...) },
	}
	go func() {
		if err := p.Run(ctx, time.Minute); err != nil {
			d.logs.Printf("pickup", "stopped: %v", err)
		}
	}()
	return nil
}
