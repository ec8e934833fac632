// Package qmgr is the queue manager: it takes recipients the spool says are
// due, groups them per queue (virtual MTA, recipient domain) and per
// message, hands each group to the outbound client within the queue's
// connection limit, and turns every reply into a durable outcome, a DSN
// where one is owed, and an event for the logs and accounting.
//
// The order of writes is the point of this package:
//
//  1. the attempt and the next-try time are made durable BEFORE dialling,
//     so a crash in the middle of a delivery can never cause a retry storm
//     (the recipient is simply due again at its next-try time);
//  2. the outcome records and the DSN they cause are committed in ONE
//     batch, so a bounce is never recorded without its DSN or vice versa;
//  3. logs and accounting are written only after that commit.
package qmgr

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"strings"
	"sync"
	"time"

	"github.com/sluicemta/sluice/internal/bounce"
	"github.com/sluicemta/sluice/internal/config"
	"github.com/sluicemta/sluice/internal/maillog"
	"github.com/sluicemta/sluice/internal/qid"
	"github.com/sluicemta/sluice/spool"
	"github.com/sluicemta/sluice/vmta"
)

// Deliverer sends one message to one destination; *vmta.Deliverer is one.
type Deliverer interface {
	Deliver(ctx context.Context, dest vmta.Destination, msg *vmta.Message) vmta.Result
}

// Recorder receives one Event per recipient outcome, after it is durable.
// The daemon writes the log line and the accounting record from it.
type Recorder interface {
	Record(ev *Event)
}

// Event is one recipient's outcome of one attempt.
type Event struct {
	QueueID string
	Status  string // sent, deferred, bounced, expired
	Class   bounce.Class
	Reply   vmta.Reply
	Origin  spool.Origin // where the message came from (accounting)
	// Reason is the reply as Postfix words it in logs and mailq: "host
	// mx[ip] said: 550 5.1.1 ... (in reply to RCPT TO command)" for a
	// refusal, the bare text of a local failure ("connect to ...").
	Reason     string
	Sender     string
	Rcpt       string
	ORCPT      string
	Queue      spool.QueueKey // {member virtual MTA, queue destination}: the queue as shown
	VMTA       string         // the virtual MTA that sent (a pool's member)
	VMTAPool   string         // the pool it was chosen from, "" if none
	JobID      string
	EnvID      string
	Arrival    time.Time
	Logged     time.Time
	Size       int64
	Attempts   int
	Result     *vmta.Result // nil when no delivery was tried (expiry, discard)
	Stage      string       // the SMTP stage the reply came from
	DSNQueueID string       // the DSN queued for this event, if any
}

// Options configure a Manager.
type Options struct {
	Spool    *spool.Spool
	Config   func() *config.Config // the current snapshot; read once per delivery
	Deliver  Deliverer
	Recorder Recorder
	Logf     func(format string, args ...any)
	// Now is the clock (tests); nil = time.Now.
	Now func() time.Time
	// MaxReturn caps the original content returned in a DSN (default 100 KiB).
	MaxReturn int
	// Limiter keeps every delivery limit; nil = a LocalLimiter. Connection
	// rates are spent in it too when the Deliverer dials through
	// ConnectLimitedDial.
	Limiter vmta.Limiter
	// Sign, when set, is called for every transaction after sluice's own
	// headers (List-Unsubscribe) are added, with the queue (member virtual
	// MTA, recipient domain) whose settings govern it; it returns the
	// content to send (DKIM-signed). An error defers the recipients.
	Sign func(cfg *config.Config, queue spool.QueueKey, content []byte) ([]byte, error)
	// Resolver, when set, enables MX rollup (domains with the same MX hosts
	// share one queue). vmta's Resolver interface; *resolve.Resolver is one.
	Resolver vmta.Resolver
	// OnChange receives every queue mode change and source-address
	// disable/enable (after it is logged through Logf). It may be called
	// with the scheduler's lock held: it must not call the Manager.
	OnChange func(vmta.Change)
}

// Manager runs the delivery loop.
type Manager struct {
	opt  Options
	sp   *spool.Spool
	logf func(string, ...any)
	lim  vmta.Limiter
	bo   *vmta.Backoff
	mx   *rollup

	mu      sync.Mutex
	queues  map[qkey]*queue
	ready   [maxPriority + 1]map[*queue]struct{} // queues that may start a delivery, by priority
	blocked blockHeap                            // queues waiting for a rate limit or a re-enabled source
	total   int                                  // deliveries in flight over all queues
	waiters map[string][]*queue                  // queues in line for a shared slot (total, source address)
	swept   time.Time                            // last wakeAll
	paused  pauses
	kick    chan struct{}
	// deliverFn is deliver; the scheduler benchmark replaces it.
	deliverFn func(ctx context.Context, cfg *config.Config, q *queue, lim *limits, group []spool.Due)
	wg        sync.WaitGroup
	// verifyMu makes a verify request's completion check and its commit
	// one step (verify.go).
	verifyMu sync.Mutex
}

// New makes a Manager; Run starts it.
func New(opt Options) *Manager {
	if opt.Now == nil {
		opt.Now = time.Now
	}
	if opt.MaxReturn == 0 {
		opt.MaxReturn = 100 << 10
	}
	logf := opt.Logf
	if logf == nil {
		logf = func(string, ...any) {}
	}
	m := &Manager{opt: opt, sp: opt.Spool, logf: logf, queues: map[qkey]*queue{}, waiters: map[string][]*queue{}, kick: make(chan struct{}, 1)}
	m.lim = opt.Limiter
	if m.lim == nil {
		m.lim = vmta.NewLocalLimiter(opt.Now())
	}
	m.bo = vmta.NewBackoff(func(c vmta.Change) {
		if c.SourceIP != "" {
			logf("qmgr: queue %s: source %s: %s: %s", c.Queue, c.SourceIP, c.What, c.Reason)
		} else {
			logf("qmgr: queue %s: %s: %s", c.Queue, c.What, c.Reason)
		}
		if opt.OnChange != nil {
			opt.OnChange(c)
		}
		m.wakeup()
	})
	for i := range m.ready {
		m.ready[i] = map[*queue]struct{}{}
	}
	m.paused.init()
	m.deliverFn = m.deliver
	if opt.Resolver != nil {
		m.mx = newRollup(opt.Resolver, opt.Now, m.wakeup)
	}
	return m
}

// Backoff exposes queue modes and disabled source addresses (status pages,
// `sluice show disabled sources`).
func (m *Manager) Backoff() *vmta.Backoff { return m.bo }

// Limiter is the limit store in use.
func (m *Manager) Limiter() vmta.Limiter { return m.lim }

func (m *Manager) wakeup() {
	select {
	case m.kick <- struct{}{}:
	default:
	}
}

// popBatch bounds how many due recipients one loop turn takes from the
// spool, so a huge backlog is taken in slices and the loop stays responsive.
const popBatch = 1024

// Run delivers until ctx is cancelled, then waits for deliveries in flight
// (which end promptly: they are cancelled through ctx and their recipients
// deferred).
func (m *Manager) Run(ctx context.Context) error {
	defer m.wg.Wait()
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		for {
			due := m.sp.PopDue(m.opt.Now(), popBatch)
			m.enqueue(due)
			if len(due) < popBatch {
				break
			}
		}
		m.dispatch(ctx)

		wait := time.Minute
		if next, ok := m.sp.NextDue(); ok {
			wait = time.Until(next)
		}
		if next, ok := m.nextUnblock(); ok {
			wait = min(wait, time.Until(next))
		}
		if wait < 0 {
			wait = 0
		}
		if !timer.Stop() {
			select {
			case <-timer.C:
			default:
			}
		}
		timer.Reset(wait)
		select {
		case <-ctx.Done():
			return nil
		case <-m.sp.Wake():
		case <-m.kick:
		case <-timer.C:
		}
	}
}

// retryDelay is the wait before attempt number n+1 after n attempts:
// one value is a fixed interval with ±10% jitter (so recipients deferred
// together do not all come back together); a list gives successive waits,
// the last repeating.
func retryDelay(intervals []time.Duration, attempts int) time.Duration {
	if len(intervals) == 0 {
		return 10 * time.Minute
	}
	if len(intervals) == 1 {
		d := intervals[0]
		j := time.Duration(rand.Int64N(int64(d)/5+1)) - d/10
		return d + j
	}
	i := attempts - 1
	if i < 0 {
		i = 0
	}
	if i >= len(intervals) {
		i = len(intervals) - 1
	}
	return intervals[i]
}

// deliver makes one attempt for a group of recipients of one message to
// one domain, through queue q.
func (m *Manager) deliver(ctx context.Context, cfg *config.Config, q *queue, lim *limits, group []spool.Due) {
	id := group[0].ID
	env, states, err := m.sp.Envelope(id)
	if err != nil {
		if !errors.Is(err, spool.ErrNotFound) {
			m.logf("qmgr: %s: read envelope: %v", id, err)
		}
		return
	}
	now := m.opt.Now()
	if env.JobID != "" && m.paused.has(pauseJob, env.JobID) {
		// A paused job's messages are held (durably) until it is resumed.
		if err := m.sp.Hold(id); err != nil {
			m.logf("qmgr: %s: hold for paused job %s: %v", id, env.JobID, err)
		}
		for _, d := range group {
			m.sp.Return(d, now)
		}
		return
	}
	key := spool.QueueKey{VMTA: q.key.vmta, Domain: group[0].Queue.Domain}
	dom := cfg.Domain(key.VMTA, key.Domain)
	lifetime := dom.Duration("bounce-after")
	if env.Sender == "" {
		lifetime = cfg.Global().Duration("dsn-bounce-after")
	}
	retry := dom.Durations("retry-after")
	if lim.mode == vmta.ModeBackoff {
		retry = []time.Duration{dom.Duration("backoff-retry-after")}
	}

	// 1. The attempt is durable before anything leaves the host.
	attempts := make([]int, len(group))
	var b spool.Batch
	for i, d := range group {
		attempts[i] = states[d.Rcpt].Attempts + 1
		next := now.Add(retryDelay(retry, attempts[i]))
		b.Attempt(id, d.Rcpt, next)
	}
	if err := m.sp.Commit(&b); err != nil {
		m.logf("qmgr: %s: record attempt: %v (recipients stay queued)", id, err)
		return
	}
	if env.Verify {
		// sendmail -bv: probe, never deliver (verify.go).
		m.probe(ctx, cfg, env, q, lim, key, dom, group, attempts, now)
		return
	}

	var res vmta.Result
	var size int64
	switch dom.String("type") {
	case "discard":
		res.Rcpts = discarded(len(group), vmta.StageDot)
	default:
		content, err := m.sp.Content(id)
		if err != nil {
			m.logf("qmgr: %s: read content: %v", id, err)
			m.deferAll(env, group, attempts, retry, now, "451 4.3.0 local error reading the queued message")
			return
		}
		data := content.Bytes()
		size = int64(len(data))
		out, err := m.prepare(cfg, key, dom, env, group, data)
		if err != nil {
			content.Close()
			m.logf("qmgr: %s: prepare content: %v", id, err)
			m.deferAll(env, group, attempts, retry, now, "451 4.3.0 local error preparing the message: "+oneLine(err.Error()))
			return
		}
		if err := m.waitSend(ctx, lim, size*int64(len(group)), len(group)); err != nil {
			content.Close()
			m.deferAll(env, group, attempts, retry, now, "451 4.3.0 delivery stopped")
			return
		}
		msg := outboundMessage(env, group, out)
		dest := destination(cfg, key, dom)
		res = m.opt.Deliver.Deliver(withConnLimits(ctx, m.lim, lim), dest, msg)
		content.Close() // out may be the mapped content itself
	}
	m.finish(cfg, env, q, lim, key, group, attempts, dom, retry, lifetime, &res, size, now)
}

// outboundMessage builds the client's view of the message for these recipients.
func outboundMessage(env *spool.Message, group []spool.Due, content []byte) *vmta.Message {
	msg := &vmta.Message{
		ID:       env.ID,
		From:     env.Sender,
		Ret:      env.Ret,
		EnvID:    env.EnvID,
		SMTPUTF8: env.SMTPUTF8,
		Body8bit: strings.EqualFold(env.Body, "8BITMIME"),
		Content:  bytes.NewReader(content),
		Size:     int64(len(content)),
	}
	for _, d := range group {
		r := env.Recipients[d.Rcpt]
		msg.Rcpts = append(msg.Rcpts, vmta.Rcpt{Addr: r.Addr, ORCPT: r.ORCPT, Notify: r.Notify.String()})
	}
	return msg
}

// destination turns the governing <domain> settings into the client's
// Destination.
func destination(cfg *config.Config, key spool.QueueKey, dom *config.Block) vmta.Destination {
	d := vmta.Destination{
		Domain:                 key.Domain,
		Port:                   int(dom.Int("default-smtp-port")),
		HeloName:               cfg.Global().String("host-name"),
		UseStartTLS:            dom.Bool("use-starttls"),
		RequireStartTLS:        dom.Bool("require-starttls"),
		BounceOn5xxGreeting:    dom.Bool("bounce-upon-5xx-greeting"),
		ConnectTimeout:         dom.Duration("connect-timeout"),
		GreetingTimeout:        dom.Duration("smtp-greeting-timeout"),
		DataTimeout:            dom.Duration("data-send-timeout"),
		DataTerminationTimeout: dom.Duration("smtp-data-termination-timeout"),
		IdleTimeout:            dom.Duration("connection-idle-timeout"),
		MaxMsgPerConnection:    int(dom.Int("max-msg-per-connection")),
		IgnorePipelining:       dom.Bool("ignore-pipelining"),
		IgnoreDSN:              dom.Bool("ignore-dsn"),
		Ignore8BitMIME:         dom.Bool("ignore-8bitmime"),
		InvalidMailbox553:      dom.Bool("smtp-553-means-invalid-mailbox"),
		AuthUsername:           dom.String("auth-username"),
		AuthPassword:           dom.String("auth-password"),
		QualifyDomain:          cfg.Global().String("host-name"),
	}
	// An MX pointing back at one of our own listeners is a mail loop.
	var self []netip.AddrPort
	for _, l := range cfg.Global().Listeners("smtp-listener") {
		self = append(self, netip.AddrPortFrom(l.Addr, uint16(l.Port)))
	}
	if p := cfg.Global().Int("smtp-port"); p > 0 {
		self = append(self, netip.AddrPortFrom(netip.Addr{}, uint16(p)))
	}
	d.IsSelf = vmta.ListenerSelf(self)
	hosts := dom.HostPorts("smtp-hosts")
	if len(hosts) == 0 {
		hosts = dom.HostPorts("route")
	}
	if len(hosts) > 0 {
		d.Bracketed = true
		for _, h := range hosts {
			d.Hosts = append(d.Hosts, vmta.HostPort{Host: h.Host, Port: h.Port, Bracketed: h.Bracketed})
			d.Bracketed = d.Bracketed && h.Bracketed
		}
	}
	if b := vmtaBlock(cfg, key.VMTA); b != nil {
		// One source per address family: each address of the next hop is
		// dialled from the source of its own family.
		for _, h := range b.SourceHosts("smtp-source-host") {
			if h.IP.Is4() && !d.SourceIP4.IsValid() {
				d.SourceIP4 = h.IP
				if h.HostName != "" {
					d.HeloName = h.HostName
				}
			} else if !h.IP.Is4() && !d.SourceIP6.IsValid() {
				d.SourceIP6 = h.IP
				if h.HostName != "" && !d.SourceIP4.IsValid() {
					d.HeloName = h.HostName
				}
			}
		}
	}
	return d
}

// primarySource is the address a virtual MTA is known by for
// disable-source-ip: its IPv4 source, else its first.
func primarySource(cfg *config.Config, name string) (netip.Addr, bool) {
	b := vmtaBlock(cfg, name)
	if b == nil {
		return netip.Addr{}, false
	}
	hosts := b.SourceHosts("smtp-source-host")
	for _, h := range hosts {
		if h.IP.Is4() {
			return h.IP, true
		}
	}
	if len(hosts) > 0 {
		return hosts[0].IP, true
	}
	return netip.Addr{}, false
}

// vmtaBlock finds a virtual MTA's block, or that of the first member of a
// pool (the scheduler picks pool members; a queue key names the member).
func vmtaBlock(cfg *config.Config, name string) *config.Block {
	if name == "" {
		return nil
	}
	if b := cfg.VMTA(name); b != nil {
		return b
	}
	for _, p := range cfg.Pools() {
		if p.Name == name {
			if members := p.Strings("virtual-mta"); len(members) > 0 {
				return cfg.VMTA(members[0])
			}
			break
		}
	}
	return nil
}

// discarded is what a domain of type discard answers for n recipients,
// at the stage the transaction would have ended (DATA's dot, or RCPT for
// a probe).
func discarded(n int, stage string) []vmta.RcptResult {
	rs := make([]vmta.RcptResult, n)
	for i := range rs {
		rs[i] = vmta.RcptResult{Reply: vmta.Reply{Code: 250, Enhanced: "2.0.0", Text: "discarded"}, Stage: stage, Synthesized: true}
	}
	return rs
}

// deferAll defers every recipient of the group with one local reason.
func (m *Manager) deferAll(env *spool.Message, group []spool.Due, attempts []int, retry []time.Duration, now time.Time, reason string) {
	var b spool.Batch
	for i, d := range group {
		b.Deferred(env.ID, d.Rcpt, now.Add(retryDelay(retry, attempts[i])), reason)
	}
	if err := m.sp.Commit(&b); err != nil {
		m.logf("qmgr: %s: record deferral: %v", env.ID, err)
	}
}

// finish classifies each reply, commits the outcomes together with any DSN
// they owe, then reports the events.
func (m *Manager) finish(cfg *config.Config, env *spool.Message, q *queue, lim *limits, key spool.QueueKey, group []spool.Due, attempts []int, dom *config.Block, retry []time.Duration, lifetime time.Duration, res *vmta.Result, size int64, now time.Time) {
	m.applyPatterns(cfg, q, lim, dom, res, now)
	if res.QueueDefer > 0 && m.bo.Mode(q.name, now) != vmta.ModeBackoff {
		// A 421 from the receiver is about the whole destination: the
		// recipients waiting for it are held back, not sent into it. A
		// queue a pattern put in backoff is paced by backoff-* instead.
		m.deferQueue(q, now.Add(res.QueueDefer), "421 from "+res.Host)
	}
	var b spool.Batch
	events := make([]*Event, 0, len(group))
	var failed, delayed, relayed []bounce.RcptReport
	var failedEv, delayedEv, relayedEv []*Event
	expireAt := env.Arrival.Add(lifetime)
	postmaster := postmasterOf(cfg)

	m.mu.Lock()
	pool := q.pool // routing may re-point it meanwhile (rehome)
	m.mu.Unlock()
	for i, d := range group {
		rcpt := env.Recipients[d.Rcpt]
		rr := vmta.RcptResult{Reply: vmta.Reply{Code: 451, Enhanced: "4.3.0", Text: "no result from delivery"}, Synthesized: true}
		if i < len(res.Rcpts) {
			rr = res.Rcpts[i]
		}
		class := bounce.Classify(rr.Reply.Code, rr.Reply.Enhanced, rr.Reply.Text)
		ev := &Event{
			QueueID: env.ID, Class: class, Reply: rr.Reply, Sender: env.Sender, Rcpt: rcpt.Addr,
			ORCPT: rcpt.ORCPT, Queue: spool.QueueKey{VMTA: q.key.vmta, Domain: q.key.dest}, VMTA: q.key.vmta,
			VMTAPool: pool, JobID: env.JobID, EnvID: env.EnvID,
			Arrival: env.Arrival, Logged: now, Size: size, Attempts: attempts[i],
			Result: res, Stage: rr.Stage, Origin: env.Origin,
		}
		reason := reasonText(rr, res)
		ev.Reason = reason
		report := bounce.RcptReport{
			Final: rcpt.Addr, Original: rcpt.ORCPT, Status: class.Status,
			RemoteMTA: res.Host, Diagnostic: diagnostic(rr), LastAttempt: now,
		}
		notify := rcpt.Notify
		switch class.Outcome {
		case bounce.Delivered:
			ev.Status = "sent"
			b.Delivered(env.ID, d.Rcpt, reason)
			if notify&bounce.NotifySuccess != 0 && !res.DSN && bounce.ShouldNotify(env.Sender, notify, bounce.ActionRelayed) {
				// Where the next hop offers DSN the client passed NOTIFY on
				// and the success notice is its to send; otherwise sluice's
				// own notice is "relayed" (RFC 3464 2.3.3).
				report.Action = bounce.ActionRelayed
				relayed = append(relayed, report)
				relayedEv = append(relayedEv, ev)
			}
		case bounce.Bounced:
			ev.Status = "bounced"
			b.Bounced(env.ID, d.Rcpt, reason)
			if m.owesFailureNotice(env, rcpt.Addr, notify, postmaster) {
				report.Action = bounce.ActionFailed
				failed = append(failed, report)
				failedEv = append(failedEv, ev)
			}
		default:
			next := now.Add(retryDelay(retry, attempts[i]))
			switch {
			case rr.NotAttempted:
				// The receiver took part of the recipients (452 4.5.3) and the
				// connection ended before the rest could go: due again at once.
				next = now
			case rr.Stage == vmta.StageDNS && rr.Reply.Temporary():
				next = now.Add(dom.Duration("retry-after-dns-error"))
			}
			if !now.Before(expireAt) {
				ev.Status = "expired"
				ev.Class = bounce.Class{Outcome: bounce.Bounced, Status: "5.4.7", Category: "message-expired"}
				b.Expired(env.ID, d.Rcpt, reason)
				if m.owesFailureNotice(env, rcpt.Addr, notify, postmaster) {
					report.Action = bounce.ActionFailed
					report.Status = "5.4.7"
					report.Diagnostic = diagnostic(rr)
					failed = append(failed, report)
					failedEv = append(failedEv, ev)
				}
				break
			}
			if next.After(expireAt) {
				next = expireAt // the last try is at the end of the lifetime
			}
			ev.Status = "deferred"
			b.Deferred(env.ID, d.Rcpt, next, reason)
			// Delay notices only where the sender asked for them: sending one
			// per deferral by default would double the mail on a slow domain.
			if notify&bounce.NotifyDelay != 0 && attempts[i] == 1 && bounce.ShouldNotify(env.Sender, notify, bounce.ActionDelayed) {
				report.Action = bounce.ActionDelayed
				report.WillRetryUntil = expireAt
				delayed = append(delayed, report)
				delayedEv = append(delayedEv, ev)
			}
		}
		events = append(events, ev)
	}

	for _, set := range []struct {
		reports []bounce.RcptReport
		events  []*Event
	}{{failed, failedEv}, {delayed, delayedEv}, {relayed, relayedEv}} {
		if len(set.reports) == 0 {
			continue
		}
		dsn, err := m.buildDSN(cfg, env, set.reports, postmaster, now)
		if err != nil {
			m.logf("qmgr: %s: build DSN: %v", env.ID, err)
			continue
		}
		b.Submit(dsn, true)
		for _, ev := range set.events {
			ev.DSNQueueID = dsn.ID
		}
	}

	if err := m.sp.Commit(&b); err != nil {
		// The attempt record stands: the recipients are due again at their
		// recorded next-try time, so nothing is lost, at worst delivered twice.
		m.logf("qmgr: %s: record outcome: %v", env.ID, err)
		return
	}
	if m.opt.Recorder != nil {
		for _, ev := range events {
			m.opt.Recorder.Record(ev)
		}
	}
}

// owesFailureNotice says whether a failed recipient goes into a DSN. Mail
// with a sender gets one as NOTIFY asks. Mail with the null sender (a
// bounce itself) cannot be bounced to its sender: its failure is a double
// bounce, reported to the postmaster, except when the failed recipient IS
// the postmaster, which ends the chain (a double bounce that fails is only
// logged, never reported again).
func (m *Manager) owesFailureNotice(env *spool.Message, rcpt string, notify bounce.NotifyFlags, postmaster string) bool {
	if env.Sender == "" {
		return !strings.EqualFold(rcpt, postmaster)
	}
	return bounce.ShouldNotify(env.Sender, notify, bounce.ActionFailed)
}

func postmasterOf(cfg *config.Config) string {
	if p := cfg.Global().String("postmaster"); p != "" {
		return p
	}
	return "postmaster@" + cfg.Global().String("host-name")
}

// stageCommand names the command a reply answered, as Postfix's "(in
// reply to ... command)".
var stageCommand = map[string]string{
	vmta.StageEHLO:     "EHLO",
	vmta.StageSTARTTLS: "STARTTLS",
	vmta.StageAuth:     "AUTH",
	vmta.StageMail:     "MAIL FROM",
	vmta.StageRcpt:     "RCPT TO",
	vmta.StageData:     "DATA",
	vmta.StageDot:      "end of DATA",
}

// reasonText words a recipient's reply as Postfix does in its logs and
// mailq's delay reasons, so tools that parse those keep working.
func reasonText(rr vmta.RcptResult, res *vmta.Result) string {
	rep := rr.Reply.String()
	switch {
	case rr.Synthesized:
		// A local failure: its text, without the code we made up for it.
		if rr.Reply.Text != "" {
			return rr.Reply.Text
		}
		return rep
	case rr.Reply.Code >= 400 && res.Host != "" && rr.Stage != vmta.StageGreeting:
		ip := ""
		if res.IP.IsValid() {
			ip = res.IP.String()
		}
		return maillog.Said(res.Host, ip, rep, stageCommand[rr.Stage])
	}
	return rep
}

func diagnostic(rr vmta.RcptResult) string {
	if rr.Synthesized {
		return "X-Sluice; " + rr.Reply.String()
	}
	return "smtp; " + rr.Reply.String()
}

// buildDSN makes the DSN message for one event of one message.
// A DSN goes to the sender; a double bounce (the failed message had the
// null sender) to the postmaster.
func (m *Manager) buildDSN(cfg *config.Config, env *spool.Message, reports []bounce.RcptReport, postmaster string, now time.Time) (*spool.Message, error) {
	content, err := m.sp.Content(env.ID)
	if err != nil {
		return nil, fmt.Errorf("read original: %w", err)
	}
	defer content.Close()
	host := cfg.Global().String("host-name")
	id := qid.New(now)
	to := env.Sender
	if to == "" {
		to = postmaster
	}
	r := &bounce.Report{
		ReportingMTA: host,
		QueueID:      env.ID,
		EnvID:        env.EnvID,
		ArrivalDate:  env.Arrival,
		Sender:       env.Sender,
		Postmaster:   postmaster,
		Recipients:   reports,
		Ret:          env.Ret,
		Original:     content.Bytes(),
		SMTPUTF8:     env.SMTPUTF8,
		MaxReturn:    m.opt.MaxReturn,
	}
	data, err := bounce.Build(r, now, id+"@"+host)
	if err != nil {
		return nil, err
	}
	return &spool.Message{
		ID:         id,
		Arrival:    now,
		Sender:     "",
		SMTPUTF8:   env.SMTPUTF8,
		Body:       "8BITMIME",
		Recipients: []spool.Recipient{{Addr: to, Notify: spool.NotifyNever}},
		VMTA:       env.VMTA,
		Content:    data,
	}, nil
}
