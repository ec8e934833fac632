package compat

import (
	"context"
	"fmt"
	"time"

	"github.com/fsnotify/fsnotify"
)

// dirWatch drives a directory scanner (the maildrop's and the pickup
// directories'): scan at start, after fsnotify reports a name that wanted
// accepts (once events have been quiet for quiet, so a burst of create,
// write and close gives one scan), a second after a watch error, a second
// after a scan that left files waiting (again), and every interval as a
// safety net, until ctx ends.
type dirWatch struct {
	dir      string
	interval time.Duration
	quiet    time.Duration
	wanted   func(fsnotify.Event) bool
	again    func() bool // nil: never
	scan     func()
	logf     func(format string, args ...any)
}

func (d dirWatch) run(ctx context.Context) error {
	w, err := fsnotify.NewWatcher()
	if err != nil {
		return fmt.Errorf("pickup: watch: %w", err)
	}
	defer w.Close()
	if err := w.Add(d.dir); err != nil {
		return fmt.Errorf("pickup: watch %s: %w", d.dir, err)
	}
	d.scan()
	tick := time.NewTicker(d.interval)
	defer tick.Stop()
	soon := time.NewTimer(time.Hour)
	soon.Stop()
	for {
		if d.again != nil && d.again() {
			soon.Reset(time.Second)
		}
		select {
		case <-ctx.Done():
			return nil
		case ev, ok := <-w.Events:
			if !ok {
				return nil
			}
			if d.wanted(ev) {
				soon.Reset(d.quiet)
			}
		case err, ok := <-w.Errors:
			if !ok {
				return nil
			}
			d.logf("pickup %s: watch: %v", d.dir, err)
			soon.Reset(time.Second)
		case <-soon.C:
			d.scan()
		case <-tick.C:
			d.scan()
		}
	}
}
