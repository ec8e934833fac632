package qmgr

import (
	"time"

	"github.com/sluicemta/sluice/internal/config"
	"github.com/sluicemta/sluice/vmta"
)

// applyPatterns runs the queue's <smtp-pattern-list> over the replies of
// one attempt (each distinct reply once) and returns a backoff queue to
// normal at its first delivery when backoff-to-normal-after-delivery says so.
func (m *Manager) applyPatterns(cfg *config.Config, q *queue, lim *limits, dom *config.Block, res *vmta.Result, now time.Time) {
	delivered := false
	for _, rr := range res.Rcpts {
		if rr.Delivered() {
			delivered = true
			break
		}
	}
	if delivered && m.bo.Mode(q.name, now) == vmta.ModeBackoff && dom.Bool("backoff-to-normal-after-delivery") {
		m.bo.SetMode(q.name, vmta.ModeNormal, "delivery in backoff mode (backoff-to-normal-after-delivery)", now, 0)
	}
	name := dom.String("smtp-pattern-list")
	if name == "" {
		return
	}
	pl := cfg.PatternList(name)
	if pl == nil {
		return
	}
	rules := pl.PatternRules("reply")
	seen := map[string]bool{}
	for _, rr := range res.Rcpts {
		reply := rr.Reply.String()
		if seen[reply] {
			continue
		}
		seen[reply] = true
		for _, r := range rules {
			if !r.Re.MatchString(reply) {
				continue
			}
			reason := reply + " (matched /" + r.Source + "/ of smtp-pattern-list " + name + ")"
			switch r.Mode {
			case "backoff":
				m.bo.SetMode(q.name, vmta.ModeBackoff, reason, now, dom.Duration("backoff-to-normal-after"))
			case "normal":
				m.bo.SetMode(q.name, vmta.ModeNormal, reason, now, 0)
			}
			if r.DisableSourceIP && lim.src.IsValid() {
				after := r.ReenableAfter
				if after <= 0 {
					after = dom.Duration("reenable-source-ip-after")
				}
				m.bo.DisableSource(q.key.dest, lim.src.String(), now.Add(after), reason, now)
			}
			if r.DeferQueue {
				m.deferQueue(q, now.Add(dom.Duration("backoff-retry-after")), reason)
			}
		}
	}
}

// deferQueue gives q's waiting recipients back to the spool, due at next
// (no attempt is counted: they were not tried), and keeps q from starting
// deliveries until then.
func (m *Manager) deferQueue(q *queue, next time.Time, reason string) {
	m.mu.Lock()
	pending := q.pending
	q.pending = nil
	m.block(q, next)
	m.mu.Unlock()
	for _, d := range pending {
		m.sp.Return(d, next)
	}
	m.logf("qmgr: queue %s: deferred %d waiting recipients until %s: %s", q.name, len(pending), next.Format(time.RFC3339), reason)
}
