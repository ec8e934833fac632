package qmgr

import (
	"context"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/sluicemta/sluice/internal/config"
	"github.com/sluicemta/sluice/vmta"
)

// MX rollup: domains whose MX host sets are equal share one delivery queue
// (and so its connection and rate limits: the receiver is one system).
// Only a domain governed by <domain *> alone is rolled up: a domain with a
// <domain NAME> block of its own (anywhere: global, its virtual MTA, its
// pool) or disable-mx-rollup yes keeps its own queue, so the block that
// governs a rolled-up queue is always <domain *> (of the virtual MTA, its
// pools, then global). A rolled-up queue is named after its MX hosts,
// "[mx1.example.net,mx2.example.net]/vmta", in logs, accounting and mailq.
//
// Lookups run in the background: until a domain's MX set is known its
// recipients go to the domain's own queue.

const (
	rollupTTL    = time.Hour
	rollupNegTTL = 5 * time.Minute
)

type rollup struct {
	res  vmta.Resolver
	now  func() time.Time
	wake func()

	mu    sync.Mutex
	cache map[string]*mxEntry // domain -> its MX set
	own   map[ownKey]bool     // has its own <domain> block, per config snapshot
	owncf *config.Config
}

type ownKey struct{ vmta, domain string }

type mxEntry struct {
	name    string // "[hosts]" or "" (own queue)
	expires time.Time
	busy    bool
}

func newRollup(res vmta.Resolver, now func() time.Time, wake func()) *rollup {
	return &rollup{res: res, now: now, wake: wake, cache: map[string]*mxEntry{}, own: map[ownKey]bool{}}
}

// dest returns the delivery destination of mail to domain through virtual
// MTA or pool vmtaName: the rolled-up queue name, or domain itself.
func (r *rollup) dest(cfg *config.Config, domain, vmtaName string) string {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.owncf != cfg {
		r.owncf, r.own = cfg, map[ownKey]bool{}
	}
	k := ownKey{vmtaName, domain}
	own, ok := r.own[k]
	if !ok {
		own = hasOwnBlock(cfg, vmtaName, domain) || cfg.Domain(vmtaName, domain).Bool("disable-mx-rollup")
		r.own[k] = own
	}
	if own {
		return domain
	}
	now := r.now()
	e := r.cache[domain]
	if e == nil {
		e = &mxEntry{}
		r.cache[domain] = e
	}
	if now.After(e.expires) && !e.busy {
		e.busy = true
		go r.lookup(domain, e)
	}
	if e.name == "" {
		return domain
	}
	return e.name
}

func (r *rollup) lookup(domain string, e *mxEntry) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	mxs, err := r.res.MX(ctx, domain)
	name, ttl := "", rollupNegTTL
	if err == nil && len(mxs) > 0 {
		hosts := make([]string, 0, len(mxs))
		for _, mx := range mxs {
			hosts = append(hosts, strings.ToLower(mx.Host))
		}
		slices.Sort(hosts)
		hosts = slices.Compact(hosts)
		name, ttl = "["+strings.Join(hosts, ",")+"]", rollupTTL
	}
	r.mu.Lock()
	changed := e.name != name
	e.name, e.expires, e.busy = name, r.now().Add(ttl), false
	r.mu.Unlock()
	if changed {
		r.wake()
	}
}

// hasOwnBlock reports whether a <domain domain> block (not *) applies to
// mail through vmtaName: in the virtual MTA, a pool holding it or the pool
// itself, or at the top level.
func hasOwnBlock(cfg *config.Config, vmtaName, domain string) bool {
	owners := []*config.Block{cfg.Global()}
	if b := cfg.VMTA(vmtaName); b != nil {
		owners = append(owners, b)
		for _, p := range cfg.Pools() {
			if slices.Contains(p.Strings("virtual-mta"), vmtaName) {
				owners = append(owners, p)
			}
		}
	}
	for _, o := range owners {
		if _, ok := o.Domains()[domain]; ok {
			return true
		}
	}
	return false
}
