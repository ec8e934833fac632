package qmgr

import (
	"errors"
	"fmt"
	"strings"
	"sync"

	"github.com/sluicemta/sluice/internal/bounce"
	"github.com/sluicemta/sluice/spool"
	"github.com/sluicemta/sluice/vmta"
)

// Library calls for the admin CLI and the HTTP API: pause and resume a
// queue, a virtual MTA or a job; schedule (retry now); set a queue's mode;
// delete a job; enable a disabled source address.
//
// Queue and virtual-MTA pauses live in RAM (a restart resumes them, as in
// PowerMTA). A job pause holds the job's messages in the spool, so it
// survives a restart; ResumeJob releases them.

type pauseKind uint8

const (
	pauseQueue pauseKind = iota
	pauseVMTA
	pauseJob
)

type pauses struct {
	mu  sync.Mutex
	set map[pauseKind]map[string]bool
}

func (p *pauses) init() { p.set = map[pauseKind]map[string]bool{} }

func (p *pauses) has(k pauseKind, name string) bool {
	if name == "" {
		return false
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.set[k][name]
}

func (p *pauses) put(k pauseKind, name string, on bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if on {
		if p.set[k] == nil {
			p.set[k] = map[string]bool{}
		}
		p.set[k][name] = true
	} else {
		delete(p.set[k], name)
	}
}

// queueName normalizes "domain[/vmta]" as an operator writes it: the
// domain is case-insensitive, the virtual MTA name is not.
func queueName(q string) string {
	dom, vm, ok := strings.Cut(strings.TrimSpace(q), "/")
	dom = strings.ToLower(dom)
	if !ok {
		return dom
	}
	return dom + "/" + vm
}

// PauseQueue stops new deliveries of queue "domain/vmta" (or "domain" for
// mail without a virtual MTA); deliveries in flight finish.
func (m *Manager) PauseQueue(name string) { m.paused.put(pauseQueue, queueName(name), true) }

// ResumeQueue undoes PauseQueue.
func (m *Manager) ResumeQueue(name string) {
	m.paused.put(pauseQueue, queueName(name), false)
	m.readyAll()
}

// PauseVMTA stops new deliveries through a virtual MTA or every member of a pool.
func (m *Manager) PauseVMTA(name string) { m.paused.put(pauseVMTA, name, true) }

// ResumeVMTA undoes PauseVMTA.
func (m *Manager) ResumeVMTA(name string) {
	m.paused.put(pauseVMTA, name, false)
	m.readyAll()
}

// Paused reports the paused queues, virtual MTAs and jobs.
func (m *Manager) Paused() (queues, vmtas, jobs []string) {
	m.paused.mu.Lock()
	defer m.paused.mu.Unlock()
	for k, set := range m.paused.set {
		for n := range set {
			switch k {
			case pauseQueue:
				queues = append(queues, n)
			case pauseVMTA:
				vmtas = append(vmtas, n)
			case pauseJob:
				jobs = append(jobs, n)
			}
		}
	}
	return
}

// readyAll puts every queue with waiting recipients back in the ready set.
func (m *Manager) readyAll() {
	m.mu.Lock()
	m.wakeAll()
	for _, q := range m.queues {
		if len(q.pending) > 0 && q.until.IsZero() {
			m.setReady(q, true)
		}
	}
	m.mu.Unlock()
	m.wakeup()
}

// jobMessages returns the queue ids of live messages of job.
func (m *Manager) jobMessages(job string) []string {
	var ids []string
	m.sp.Walk(func(info spool.MessageInfo) bool {
		ids = append(ids, info.ID)
		return true
	})
	out := ids[:0]
	for _, id := range ids {
		if env, _, err := m.sp.Envelope(id); err == nil && env.JobID == job {
			out = append(out, id)
		}
	}
	return out
}

// PauseJob holds every queued message of job (durably) and keeps new ones
// from being sent until ResumeJob. It returns how many were held.
func (m *Manager) PauseJob(job string) (int, error) {
	if job == "" {
		return 0, errors.New("qmgr: pause job: empty job id")
	}
	m.paused.put(pauseJob, job, true)
	n := 0
	for _, id := range m.jobMessages(job) {
		if err := m.sp.Hold(id); err != nil && !errors.Is(err, spool.ErrNotFound) {
			return n, fmt.Errorf("qmgr: pause job %s: hold %s: %w", job, id, err)
		}
		n++
	}
	return n, nil
}

// ResumeJob releases the messages of job (held by PauseJob, or by an
// operator: a job resume releases them all).
func (m *Manager) ResumeJob(job string) (int, error) {
	m.paused.put(pauseJob, job, false)
	n := 0
	for _, id := range m.jobMessages(job) {
		if err := m.sp.Release(id); err != nil && !errors.Is(err, spool.ErrNotFound) {
			return n, fmt.Errorf("qmgr: resume job %s: release %s: %w", job, id, err)
		}
		n++
	}
	return n, nil
}

// DeleteJob deletes every queued message of job without DSNs.
func (m *Manager) DeleteJob(job string) (int, error) {
	if job == "" {
		return 0, errors.New("qmgr: delete job: empty job id")
	}
	n := 0
	for _, id := range m.jobMessages(job) {
		if err := m.sp.Delete(id); err != nil && !errors.Is(err, spool.ErrNotFound) {
			return n, fmt.Errorf("qmgr: delete job %s: %s: %w", job, id, err)
		}
		n++
	}
	return n, nil
}

// Schedule makes the waiting recipients for domain (through virtual MTA or
// pool vmta, "" for all) due now, as `pmta schedule DOMAIN[/VMTA]`, and
// lifts the rate-limit waits of the matching delivery queues. It returns
// how many recipients were rescheduled.
func (m *Manager) Schedule(domain, vmtaName string) int {
	domain = strings.ToLower(domain)
	n := 0
	for k := range m.sp.Stats().Queues {
		if k.Domain == domain && (vmtaName == "" || k.VMTA == vmtaName) {
			n += m.sp.RescheduleQueue(k)
		}
	}
	m.mu.Lock()
	for _, q := range m.queues {
		if q.key.dest == domain && (vmtaName == "" || q.key.vmta == vmtaName || q.pool == vmtaName) && !q.until.IsZero() {
			q.until = m.opt.Now()
			if q.hidx >= 0 {
				m.blocked.fix(q)
			}
		}
	}
	m.mu.Unlock()
	m.wakeup()
	return n
}

// SetQueueMode sets queue "domain/vmta" to normal or backoff by hand (`pmta
// set queue --mode=`). A backoff set by hand ends only by hand or by a
// mode=normal pattern.
func (m *Manager) SetQueueMode(name string, mode vmta.Mode) bool {
	return m.bo.SetMode(queueName(name), mode, "set by operator", m.opt.Now(), 0)
}

// EnableSource lets queue destination dest use source address ip again
// (`pmta enable source`).
func (m *Manager) EnableSource(dest, ip string) bool {
	ok := m.bo.EnableSource(strings.ToLower(dest), ip, "enabled by operator", m.opt.Now())
	m.readyAll()
	return ok
}

// QueueInfo is one delivery queue as the scheduler sees it.
type QueueInfo struct {
	Name     string // domain/vmta
	VMTA     string
	Pool     string
	Dest     string
	Waiting  int // popped from the spool, waiting for a slot or a rate
	Active   int // deliveries in flight
	Priority int
	Mode     vmta.Mode
	Paused   bool
}

// Queues lists the delivery queues that hold recipients now.
func (m *Manager) Queues() []QueueInfo {
	now := m.opt.Now()
	m.mu.Lock()
	out := make([]QueueInfo, 0, len(m.queues))
	for _, q := range m.queues {
		out = append(out, QueueInfo{Name: q.name, VMTA: q.key.vmta, Pool: q.pool, Dest: q.key.dest, Waiting: len(q.pending), Active: q.active, Priority: max(q.prio, 0)})
	}
	m.mu.Unlock()
	for i := range out {
		out[i].Mode = m.bo.Mode(out[i].Name, now)
		out[i].Paused = m.paused.has(pauseQueue, out[i].Name) || m.paused.has(pauseVMTA, out[i].VMTA) || m.paused.has(pauseVMTA, out[i].Pool)
	}
	return out
}

// Expire gives up on every unfinished recipient of message id now, as
// `postsuper -e`: the recipients are marked expired and the sender gets
// one DSN for them (a double bounce to the postmaster for null-sender
// mail), committed together. Recipients in flight get their outcome from
// that delivery instead. It returns spool.ErrNotFound for an unknown id.
func (m *Manager) Expire(id string) error {
	env, states, err := m.sp.Envelope(id)
	if err != nil {
		return err
	}
	cfg := m.opt.Config()
	now := m.opt.Now()
	if env.Verify {
		n, err := m.expireVerify(cfg, env, states, now)
		if err != nil {
			return fmt.Errorf("qmgr: expire %s: %w", id, err)
		}
		if n > 0 {
			m.logf("qmgr: %s: verification request expired by the administrator (%d recipients)", id, n)
		}
		return nil
	}
	postmaster := postmasterOf(cfg)
	var b spool.Batch
	var reports []bounce.RcptReport
	for i, st := range states {
		if st.Status.Finished() || st.Active {
			continue
		}
		r := env.Recipients[i]
		b.Expired(id, i, "message expired by the administrator")
		if m.owesFailureNotice(env, r.Addr, r.Notify, postmaster) {
			reports = append(reports, bounce.RcptReport{
				Final: r.Addr, Original: r.ORCPT, Action: bounce.ActionFailed, Status: "5.4.7",
				Diagnostic: "X-Sluice; message expired by the administrator", LastAttempt: now,
			})
		}
	}
	if b.Len() == 0 {
		return nil
	}
	if len(reports) > 0 {
		dsn, err := m.buildDSN(cfg, env, reports, postmaster, now)
		if err != nil {
			return fmt.Errorf("qmgr: expire %s: %w", id, err)
		}
		b.Submit(dsn, true)
	}
	if err := m.sp.Commit(&b); err != nil {
		return fmt.Errorf("qmgr: expire %s: %w", id, err)
	}
	m.logf("qmgr: %s: expired by the administrator (%d recipients)", id, b.Len()-min(1, len(reports)))
	return nil
}
