package qmgr

import (
	"container/heap"
	"context"
	"net"
	"net/netip"
	"strings"
	"time"

	"github.com/sluicemta/sluice/internal/config"
	"github.com/sluicemta/sluice/spool"
	"github.com/sluicemta/sluice/vmta"
)

// The scheduler. The spool files recipients under (virtual MTA or pool as
// chosen at acceptance, recipient domain); delivery queues are finer and
// coarser at once: a pool's recipients are spread over its members (each
// recipient sticking to one member, see vmta.Pick), and domains whose MX
// hosts are the same share one queue (MX rollup). A delivery queue is
// (member virtual MTA, destination) and every limit is kept per queue, per
// source address, or both, in one vmta.Limiter.

const maxPriority = 100

// Recipient rates are spent twice: at dispatch (the decision, which keeps
// the long-run pace and the number of waiting deliveries small) and again
// just before the message goes on the wire ("wire" keys), where a delivery
// whose attempt record or connection was quick waits for one that was slow,
// so the spacing holds as the receiver sees it. rateGuard lengthens every
// recipient-rate interval by 4% to absorb what jitter remains after that
// (connection set-up, the receiver's own scheduling).
const rateGuard = 1.04

// dispatchLead is how far ahead of the wire pace dispatch may start
// rate-limited deliveries (at least 2, at most 10 recipients ahead).
const dispatchLead = 250 * time.Millisecond

type qkey struct {
	vmta string // the member virtual MTA sending ("" = none configured)
	dest string // recipient domain, or "[mx host list]" for a rolled-up queue
}

// Name is the queue's name as shown in logs, accounting and mailq:
// PowerMTA's domain/vmta.
func (k qkey) Name() string {
	if k.vmta == "" {
		return k.dest
	}
	return k.dest + "/" + k.vmta
}

// queue is one delivery queue's recipients waiting for a delivery slot.
type queue struct {
	key     qkey
	name    string
	pool    string // the pool its recipients were chosen from ("" if none)
	pending []spool.Due
	active  int
	prio    int
	inReady bool
	until   time.Time // blocked until then (rate limit); zero = not blocked
	hidx    int       // index in the blocked heap, -1 when not in it
	waiting string    // the shared slot key it waits for ("" = none)

	// The limits computed for one config snapshot and mode, reused until
	// either changes (the lookups cost more than the rest of dispatch).
	lim     *limits
	limCfg  *config.Config
	limMode vmta.Mode
}

// limits is what one delivery may use, computed from the config snapshot
// at dispatch.
type limits struct {
	mode     vmta.Mode
	src      netip.Addr
	maxRcpt  int
	slots    []vmta.Slot     // taken for the delivery's life
	rates    []vmta.RateTake // per recipient, taken at dispatch
	wire     []vmta.RateTake // the same rates, spent again just before sending
	volume   vmta.RateTake   // bytes, taken before sending
	connects []vmta.RateTake // per new connection, taken when dialling
}

// route files one due recipient under its delivery queue.
func (m *Manager) route(cfg *config.Config, d spool.Due, now time.Time) (qkey, string) {
	pool := ""
	name := d.Queue.VMTA
	if name == "" {
		if b := cfg.VMTA("default"); b != nil && b.Kind == config.KindPool {
			name = "default"
		}
	}
	member := ""
	dest := d.Queue.Domain
	if m.mx != nil {
		dest = m.mx.dest(cfg, d.Queue.Domain, name)
	}
	if b := cfg.VMTA(name); b != nil {
		if b.Kind == config.KindVMTA {
			member = name
		} else {
			pool = name
			members := poolMembers(cfg, b)
			usable := func(n string) bool {
				src, ok := primarySource(cfg, n)
				if !ok {
					return true
				}
				off, _ := m.bo.SourceDisabled(dest, src.String(), now)
				return !off
			}
			var ok bool
			if member, ok = vmta.Pick(members, d.ID, d.Rcpt, usable); !ok {
				// Every member is disabled for this destination: keep the
				// recipient's own member; its queue waits for re-enabling.
				member, _ = vmta.Pick(members, d.ID, d.Rcpt, nil)
			}
			if m.mx != nil && dest != d.Queue.Domain {
				// The member may have a <domain> block of its own for it.
				dest = m.mx.dest(cfg, d.Queue.Domain, member)
			}
		}
	}
	return qkey{vmta: member, dest: dest}, pool
}

func poolMembers(cfg *config.Config, pool *config.Block) []vmta.Member {
	names := pool.Strings("virtual-mta")
	out := make([]vmta.Member, 0, len(names))
	for _, n := range names {
		w := 1
		if b := cfg.VMTA(n); b != nil {
			w = int(b.Int("pool-weight"))
		}
		out = append(out, vmta.Member{Name: n, Weight: w})
	}
	return out
}

func (m *Manager) enqueue(due []spool.Due) {
	if len(due) == 0 {
		return
	}
	cfg := m.opt.Config()
	now := m.opt.Now()
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, d := range due {
		k, pool := m.route(cfg, d, now)
		q := m.queueFor(cfg, k, pool)
		q.pending = append(q.pending, d)
		if q.until.IsZero() {
			m.setReady(q, true)
		}
	}
}

func (m *Manager) queueFor(cfg *config.Config, k qkey, pool string) *queue {
	q := m.queues[k]
	if q == nil {
		q = &queue{key: k, name: k.Name(), pool: pool, prio: -1, hidx: -1}
		// Its priority from the start, so its first round already counts.
		m.setPriority(q, int(cfg.Domain(k.vmta, governingDest(k.dest)).Int("queue-priority")))
		m.queues[k] = q
	}
	if pool != "" {
		q.pool = pool
	}
	return q
}

// setReady adds q to or removes it from the ready set (mu held).
func (m *Manager) setReady(q *queue, on bool) {
	if q.prio < 0 {
		q.prio = 50
	}
	if on == q.inReady {
		return
	}
	q.inReady = on
	if on {
		m.ready[q.prio][q] = struct{}{}
	} else {
		delete(m.ready[q.prio], q)
	}
}

func (m *Manager) setPriority(q *queue, p int) {
	p = max(0, min(p, maxPriority))
	if q.prio == p {
		return
	}
	if q.inReady {
		delete(m.ready[q.prio], q)
		m.ready[p][q] = struct{}{}
	}
	q.prio = p
}

// block takes q out of the ready set until t (mu held).
func (m *Manager) block(q *queue, t time.Time) {
	m.setReady(q, false)
	q.until = t
	if q.hidx >= 0 {
		heap.Fix(&m.blocked, q.hidx)
	} else {
		heap.Push(&m.blocked, q)
	}
}

// unblockDue readies the blocked queues whose time has come (mu held).
func (m *Manager) unblockDue(now time.Time) {
	for len(m.blocked) > 0 && !m.blocked[0].until.After(now) {
		q := heap.Pop(&m.blocked).(*queue)
		q.until = time.Time{}
		if len(q.pending) > 0 {
			m.setReady(q, true)
		} else {
			m.forget(q)
		}
	}
}

func (m *Manager) nextUnblock() (time.Time, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var t time.Time
	if len(m.waiters) > 0 {
		t = m.swept.Add(time.Second)
	}
	if len(m.blocked) > 0 && (t.IsZero() || m.blocked[0].until.Before(t)) {
		t = m.blocked[0].until
	}
	return t, !t.IsZero()
}

// forget drops an idle queue (mu held).
func (m *Manager) forget(q *queue) {
	if len(q.pending) == 0 && q.active == 0 && q.until.IsZero() && !q.inReady && q.waiting == "" {
		delete(m.queues, q.key)
	}
}

// dispatch starts deliveries for ready queues, higher priority first,
// within every limit.
func (m *Manager) dispatch(ctx context.Context) {
	if ctx.Err() != nil {
		return
	}
	cfg := m.opt.Config()
	now := m.opt.Now()
	totalMax := int(cfg.Global().Int("total-max-smtp-out"))
	m.mu.Lock()
	defer m.mu.Unlock()
	m.unblockDue(now)
	if len(m.waiters) > 0 && now.Sub(m.swept) >= time.Second {
		m.swept = now
		m.wakeAll()
	}
	// Ranging over a map while dispatchQueue removes from it (or moves a
	// queue to another priority) is safe; a random start is fair among
	// equals when total-max-smtp-out cuts the round short.
	for p := maxPriority; p >= 0; p-- {
		for q := range m.ready[p] {
			if !m.dispatchQueue(ctx, cfg, q, now, totalMax) {
				return
			}
		}
	}
}

// dispatchQueue starts what q may start now. It returns false when the
// global connection limit is reached (nothing else may start).
func (m *Manager) dispatchQueue(ctx context.Context, cfg *config.Config, q *queue, now time.Time, totalMax int) bool {
	for len(q.pending) > 0 {
		if m.paused.has(pauseQueue, q.name) || m.paused.has(pauseVMTA, q.key.vmta) || (q.pool != "" && m.paused.has(pauseVMTA, q.pool)) {
			m.setReady(q, false) // Resume readies it again
			return true
		}
		mode := m.bo.Mode(q.name, now)
		if q.lim == nil || q.limCfg != cfg || q.limMode != mode {
			dom := cfg.Domain(q.key.vmta, governingDest(q.key.dest))
			m.setPriority(q, int(dom.Int("queue-priority")))
			q.lim, q.limCfg, q.limMode = m.limitsFor(cfg, q, dom, mode, totalMax), cfg, mode
		}
		lim := q.lim
		if lim.src.IsValid() {
			if off, until := m.bo.SourceDisabled(q.key.dest, lim.src.String(), now); off {
				if m.rehome(cfg, q, now) {
					continue
				}
				m.block(q, until)
				return true
			}
		}
		if i := m.lim.Acquire(lim.slots...); i >= 0 {
			m.setReady(q, false)
			if i > 0 {
				// A limit shared with other queues (total, a source
				// address): wait in line for a slot of it. The queue's own
				// limit needs no line: its own deliveries ending ready it.
				key := lim.slots[i].Key
				q.waiting = key
				m.waiters[key] = append(m.waiters[key], q)
				if key == totalKey {
					return false
				}
			}
			return true
		}
		before := q.pending
		group := takeGroup(q, lim.maxRcpt)
		if len(lim.rates) > 0 {
			if w := m.lim.Take(now, rateTakes(lim.rates, len(group))...); w > 0 {
				m.lim.Release(lim.slots...)
				q.pending = before // the group was its prefix
				m.block(q, now.Add(w))
				return true
			}
		}
		q.active++
		m.total++
		m.wg.Add(1)
		go func() {
			defer m.wg.Done()
			m.deliverFn(ctx, cfg, q, lim, group)
			m.lim.Release(lim.slots...)
			m.mu.Lock()
			for _, sl := range lim.slots[1:] {
				m.wakeOne(sl.Key)
			}
			q.active--
			m.total--
			if len(q.pending) > 0 && q.until.IsZero() {
				m.setReady(q, true)
			}
			m.forget(q)
			m.mu.Unlock()
			m.wakeup()
		}()
	}
	m.setReady(q, false)
	m.forget(q)
	return true
}

// wakeOne readies the first queue waiting for a slot of key (mu held).
func (m *Manager) wakeOne(key string) {
	line := m.waiters[key]
	for len(line) > 0 {
		q := line[0]
		line[0] = nil
		line = line[1:]
		if q.waiting != key {
			continue // stale: woken otherwise meanwhile
		}
		q.waiting = ""
		if len(q.pending) > 0 && q.until.IsZero() {
			m.setReady(q, true)
			break
		}
		m.forget(q)
	}
	if len(line) == 0 {
		delete(m.waiters, key)
	} else {
		m.waiters[key] = line
	}
}

// wakeAll readies every waiting queue: a slot freed for a queue that then
// did not use it must not strand the others (mu held; called at most once
// a second, see dispatch).
func (m *Manager) wakeAll() {
	for key, line := range m.waiters {
		for _, q := range line {
			if q.waiting == key {
				q.waiting = ""
				if len(q.pending) > 0 && q.until.IsZero() {
					m.setReady(q, true)
				} else {
					m.forget(q)
				}
			}
		}
		delete(m.waiters, key)
	}
}

// governingDest is the domain whose <domain> settings govern a queue's
// limits: its own domain, or * for a rolled-up queue (only domains
// governed by <domain *> alone are rolled up).
func governingDest(dest string) string {
	if strings.HasPrefix(dest, "[") {
		return "*"
	}
	return dest
}

// rehome sends q's waiting recipients through routing again (its source
// address was disabled for the destination). It reports whether q was
// emptied; recipients with no usable member stay.
func (m *Manager) rehome(cfg *config.Config, q *queue, now time.Time) bool {
	pending := q.pending
	q.pending = nil
	for _, d := range pending {
		k, pool := m.route(cfg, d, now)
		nq := m.queueFor(cfg, k, pool)
		nq.pending = append(nq.pending, d)
		if nq != q && nq.until.IsZero() {
			m.setReady(nq, true)
		}
	}
	return len(q.pending) == 0
}

const totalKey = "total"

// limitsFor computes q's limits from the config (mu held). The first slot
// is always the queue's own.
func (m *Manager) limitsFor(cfg *config.Config, q *queue, dom *config.Block, mode vmta.Mode, totalMax int) *limits {
	lim := &limits{mode: mode}
	maxOut := int(dom.Int("max-smtp-out"))
	msgRate := dom.Rate("max-msg-rate")
	connRate := dom.Rate("max-connect-rate")
	if lim.mode == vmta.ModeBackoff {
		maxOut = int(dom.Int("backoff-max-smtp-out"))
		msgRate = dom.Rate("backoff-max-msg-rate")
		connRate = dom.Rate("backoff-max-connect-rate")
	}
	if maxOut <= 0 {
		maxOut = 1
	}
	lim.maxRcpt = int(dom.Int("max-rcpt-per-message"))
	if lim.maxRcpt <= 0 {
		lim.maxRcpt = 100
	}
	qn := q.name
	lim.slots = append(lim.slots, vmta.Slot{Key: "q:" + qn, Max: maxOut}, vmta.Slot{Key: totalKey, Max: totalMax})
	lim.rates = appendRate(lim.rates, "r:"+qn, msgRate, true)
	lim.connects = appendRate(lim.connects, "c:"+qn, connRate, false)
	if v := dom.VolumeRate("max-data-volume-rate"); !v.Unlimited() {
		lim.volume = vmta.RateTake{Key: "v:" + qn, Rate: vmta.Rate{N: v.N, Per: v.Per}}
	}
	if src, ok := primarySource(cfg, q.key.vmta); ok {
		lim.src = src
		ip := src.String()
		// A line in <domain *> limits the address over all queues; one in
		// the queue's own <domain> block, within the queue.
		star := cfg.Domain(q.key.vmta, "*")
		own := func(name string) bool {
			f1, l1 := dom.Where(name)
			f2, l2 := star.Where(name)
			return l1 != 0 && (f1 != f2 || l1 != l2)
		}
		scope := func(name, global, local string) string {
			if own(name) {
				return local + qn + "|" + ip
			}
			return global + ip
		}
		for _, c := range dom.CIDRInts("source-ip-max-smtp-out") {
			if c.Matches(src) && c.N > 0 {
				lim.slots = append(lim.slots, vmta.Slot{Key: scope("source-ip-max-smtp-out", "ip:", "qip:"), Max: c.N})
				break
			}
		}
		for _, c := range dom.CIDRRates("source-ip-max-msg-rate") {
			if c.Matches(src) {
				lim.rates = appendRate(lim.rates, scope("source-ip-max-msg-rate", "rip:", "rqip:"), c.Rate, true)
				break
			}
		}
		for _, c := range dom.CIDRRates("source-ip-max-connect-rate") {
			if c.Matches(src) {
				lim.connects = appendRate(lim.connects, scope("source-ip-max-connect-rate", "cip:", "cqip:"), c.Rate, false)
				break
			}
		}
	}
	if strings.Contains(dom.String("list-unsubscribe"), "{rcpt}") {
		lim.maxRcpt = 1 // the header names the one recipient
	}
	for i, r := range lim.rates {
		// Dispatch may run up to dispatchLead ahead (the attempt record's
		// fsync and the connection take time; the wire stage paces); the
		// wire stage forgives half the guard margin of lateness.
		lim.rates[i].Rate.Burst = min(10, max(2, int(float64(r.Rate.N)*float64(dispatchLead)/float64(r.Rate.Per))+1))
		// Time lost to a late dispatch would be lost for good (the wire
		// stage cannot send what was not dispatched): forgive it.
		lim.rates[i].Rate.Slack = dispatchLead
		r.Key += "|wire"
		r.Rate.Slack = time.Duration(float64(r.Rate.Per) * (1 - 1/rateGuard) / 2)
		lim.wire = append(lim.wire, r)
	}
	if len(lim.rates) > 0 {
		// Burst 1: one recipient per transaction keeps every window
		// within the rate however the receiver counts.
		lim.maxRcpt = 1
	}
	return lim
}

func appendRate(to []vmta.RateTake, key string, r config.Rate, guard bool) []vmta.RateTake {
	if r.Unlimited() {
		return to
	}
	per := r.Per
	if guard {
		per = time.Duration(float64(per) * rateGuard)
	}
	return append(to, vmta.RateTake{Key: key, Rate: vmta.Rate{N: r.N, Per: per}})
}

func rateTakes(rs []vmta.RateTake, n int) []vmta.RateTake {
	out := make([]vmta.RateTake, len(rs))
	for i, r := range rs {
		r.N = n
		out[i] = r
	}
	return out
}

// takeGroup removes from the front of q's waiting recipients the first
// one and those right after it of the same message and domain, up to
// maxRcpt: one transaction carries one message to one domain. (The spool
// hands out a message's recipients together, so looking only at the run
// at the front costs O(group), not O(queue).) It returns a copy.
func takeGroup(q *queue, maxRcpt int) []spool.Due {
	first := q.pending[0]
	n := 1
	for n < len(q.pending) && n < maxRcpt && q.pending[n].ID == first.ID && q.pending[n].Queue.Domain == first.Queue.Domain {
		n++
	}
	group := append([]spool.Due(nil), q.pending[:n]...)
	q.pending = q.pending[n:]
	if len(q.pending) == 0 {
		q.pending = nil // let the array go
	}
	return group
}

// waitSend spends, waiting for them, the queue's data volume (size bytes)
// and the wire pacing of its recipient rates (n recipients) just before a
// delivery sends; the delivery holds its connection slot meanwhile.
func (m *Manager) waitSend(ctx context.Context, lim *limits, size int64, n int) error {
	takes := rateTakes(lim.wire, n)
	if !lim.volume.Rate.Unlimited() && size > 0 {
		t := lim.volume
		t.N = int(size)
		takes = append(takes, t)
	}
	if len(takes) == 0 {
		return nil
	}
	for {
		w := m.lim.Take(m.opt.Now(), takes...)
		if w == 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(w):
		}
	}
}

type connLimitsKey struct{}

type connLimits struct {
	lim   vmta.Limiter
	rates []vmta.RateTake
}

func withConnLimits(ctx context.Context, l vmta.Limiter, lim *limits) context.Context {
	if len(lim.connects) == 0 {
		return ctx
	}
	return context.WithValue(ctx, connLimitsKey{}, &connLimits{lim: l, rates: rateTakes(lim.connects, 1)})
}

// ConnectLimitedDial wraps next (nil: a plain dialer from the source
// address) so that each new connection of a delivery spends the queue's
// max-connect-rate and source-ip-max-connect-rate, waiting for them; give
// it to vmta.Options.Dial. Reused connections cost nothing.
func ConnectLimitedDial(next vmta.DialFunc) vmta.DialFunc {
	if next == nil {
		next = plainDial
	}
	return func(ctx context.Context, laddr netip.Addr, raddr netip.AddrPort) (net.Conn, error) {
		if cl, ok := ctx.Value(connLimitsKey{}).(*connLimits); ok {
			for {
				w := cl.lim.Take(time.Now(), cl.rates...)
				if w == 0 {
					break
				}
				select {
				case <-ctx.Done():
					return nil, ctx.Err()
				case <-time.After(w):
				}
			}
		}
		return next(ctx, laddr, raddr)
	}
}

// blockHeap orders blocked queues by the time they may go again.
type blockHeap []*queue

func (h blockHeap) Len() int           { return len(h) }
func (h blockHeap) Less(i, j int) bool { return h[i].until.Before(h[j].until) }
func (h blockHeap) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].hidx = i
	h[j].hidx = j
}
func (h *blockHeap) Push(x any) {
	q := x.(*queue)
	q.hidx = len(*h)
	*h = append(*h, q)
}
func (h *blockHeap) Pop() any {
	old := *h
	q := old[len(old)-1]
	old[len(old)-1] = nil
	*h = old[:len(old)-1]
	q.hidx = -1
	return q
}

func plainDial(ctx context.Context, laddr netip.Addr, raddr netip.AddrPort) (net.Conn, error) {
	var d net.Dialer
	if laddr.IsValid() {
		d.LocalAddr = &net.TCPAddr{IP: laddr.AsSlice()}
	}
	return d.DialContext(ctx, "tcp", raddr.String())
}

func oneLine(s string) string {
	return strings.Join(strings.Fields(s), " ")
}

func (h *blockHeap) fix(q *queue) { heap.Fix(h, q.hidx) }
