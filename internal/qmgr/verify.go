package qmgr

// Address verification (sendmail -bv), as Postfix does it: a message
// marked Verify is routed, limited and connected like any other, but each
// recipient is probed (MAIL, RCPT, then RSET: vmta.Message.Probe) instead
// of delivered. A probe is tried once: a refusal and a temporary failure
// alike make the recipient "undeliverable" (Postfix's defer_append in
// verify mode), an accepted RCPT "deliverable". When every recipient has
// a result, ONE report goes to the sender.
//
// Durability follows the DSN rule of this package: the recipients'
// results are their outcome records (Delivered = deliverable, Bounced or
// Expired = undeliverable, the details in the reason, see verifyResult),
// and the report is submitted in the same batch as the last results, so
// a crash leaves either both or neither (then the last recipients are
// simply probed again). verifyMu makes "are all the others finished?"
// and that commit one step, so two groups of one request finishing
// together give one report, not two or none.

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/sluicemta/sluice/internal/bounce"
	"github.com/sluicemta/sluice/internal/config"
	"github.com/sluicemta/sluice/spool"
	"github.com/sluicemta/sluice/vmta"
)

// Event statuses of verification results; their events go only to a
// Recorder that is also a VerifyRecorder (a probe is not a delivery: no
// accounting record of one may be written for it).
const (
	StatusDeliverable   = "deliverable"
	StatusUndeliverable = "undeliverable"
)

// VerifyRecorder receives the Event of each probed recipient (Status
// StatusDeliverable or StatusUndeliverable) after it is durable. The
// request's report, when this event completed it, is named in the
// DSNQueueID of the last event of the request only, so it is logged once.
// A Recorder that does not implement it is told nothing of verifications.
type VerifyRecorder interface {
	RecordVerify(ev *Event)
}

// verifyResult is one recipient's result as kept in its outcome reason,
// so the report can be built from the spool alone, whichever delivery
// finishes the request and after any restart.
type verifyResult struct {
	Action     string // bounce.ActionDeliverable or bounce.ActionUndeliverable
	Status     string // enhanced status
	RemoteMTA  string
	Diagnostic string
	Text       string // the report's line after "<rcpt>: "
}

// verifyTag starts an encoded verifyResult; fields are tab-separated.
const verifyTag = "verify"

func (v verifyResult) encode() string {
	f := []string{verifyTag, v.Action, v.Status, v.RemoteMTA, v.Diagnostic, v.Text}
	for i := range f {
		f[i] = oneLine(f[i]) // no tab or line break inside a field
	}
	return strings.Join(f, "\t")
}

// decodeVerify reads back encode's output; ok is false for anything else.
func decodeVerify(s string) (v verifyResult, ok bool) {
	f := strings.SplitN(s, "\t", 6)
	if len(f) != 6 || f[0] != verifyTag {
		return verifyResult{}, false
	}
	if f[1] != bounce.ActionDeliverable && f[1] != bounce.ActionUndeliverable || !bounce.ValidStatus(f[2]) {
		return verifyResult{}, false
	}
	return verifyResult{Action: f[1], Status: f[2], RemoteMTA: f[3], Diagnostic: f[4], Text: f[5]}, true
}

// storedResult is the result a finished recipient of a verify request
// left in the spool; a reason not written by encode (it should not
// happen) still gives a result from the state.
func storedResult(st spool.RcptState) verifyResult {
	if v, ok := decodeVerify(st.Reason); ok {
		return v
	}
	v := verifyResult{Action: bounce.ActionUndeliverable, Status: "5.0.0", Text: oneLine(st.Reason)}
	if st.Status == spool.Delivered {
		v.Action, v.Status = bounce.ActionDeliverable, "2.0.0"
	}
	if v.Text == "" {
		v.Text = bounce.StatusText(v.Status)
	}
	return v
}

// probe is deliver for a verify request: the attempt is already durable.
func (m *Manager) probe(ctx context.Context, cfg *config.Config, env *spool.Message, q *queue, lim *limits, key spool.QueueKey, dom *config.Block, group []spool.Due, attempts []int, now time.Time) {
	var res vmta.Result
	switch dom.String("type") {
	case "discard":
		// What a delivery would do: discard it, which Postfix reports as
		// deliverable ("delivery via discard").
		res.Rcpts = discarded(len(group), vmta.StageRcpt)
	default:
		// The recipient rates a delivery would spend; no content, no volume.
		if err := m.waitSend(ctx, lim, 0, len(group)); err != nil {
			m.verifyInterrupted(env, group, now)
			return
		}
		msg := outboundMessage(env, group, nil)
		msg.Probe, msg.Content, msg.Size = true, nil, 0
		res = m.opt.Deliver.Deliver(withConnLimits(ctx, m.lim, lim), destination(cfg, key, dom), msg)
	}
	if ctx.Err() != nil {
		// Stopping: what the probe met is our shutdown, not the recipient.
		m.verifyInterrupted(env, group, m.opt.Now())
		return
	}
	m.finishVerify(cfg, env, q, lim, dom, group, attempts, &res, now)
}

// verifyInterrupted leaves the group due at once: a probe cut short by
// shutdown is no result, and the request is probed again after restart.
func (m *Manager) verifyInterrupted(env *spool.Message, group []spool.Due, now time.Time) {
	var b spool.Batch
	for _, d := range group {
		b.Deferred(env.ID, d.Rcpt, now, "verification interrupted by shutdown")
	}
	if err := m.sp.Commit(&b); err != nil {
		m.logf("qmgr: %s: record interrupted verification: %v", env.ID, err)
	}
}

// finishVerify turns the probe's replies into results, commits them
// (with the report when they complete the request) and reports events.
func (m *Manager) finishVerify(cfg *config.Config, env *spool.Message, q *queue, lim *limits, dom *config.Block, group []spool.Due, attempts []int, res *vmta.Result, now time.Time) {
	m.applyPatterns(cfg, q, lim, dom, res, now)
	if res.QueueDefer > 0 && m.bo.Mode(q.name, now) != vmta.ModeBackoff {
		m.deferQueue(q, now.Add(res.QueueDefer), "421 from "+res.Host)
	}
	m.mu.Lock()
	pool := q.pool
	m.mu.Unlock()

	var b spool.Batch
	results := map[int]verifyResult{}
	var events []*Event
	for i, d := range group {
		rcpt := env.Recipients[d.Rcpt]
		rr := vmta.RcptResult{Reply: vmta.Reply{Code: 451, Enhanced: "4.3.0", Text: "no result from verification"}, Synthesized: true}
		if i < len(res.Rcpts) {
			rr = res.Rcpts[i]
		}
		reason := reasonText(rr, res)
		if rr.NotAttempted {
			// Never offered to the server (the session ran out of room):
			// not a result; probed again at once on another connection.
			b.Deferred(env.ID, d.Rcpt, now, reason)
			continue
		}
		class := bounce.Classify(rr.Reply.Code, rr.Reply.Enhanced, rr.Reply.Text)
		v := verifyResult{Action: bounce.ActionUndeliverable, Status: class.Status, RemoteMTA: res.Host,
			Diagnostic: diagnostic(rr), Text: reason}
		status := StatusUndeliverable
		if class.Outcome == bounce.Delivered {
			v.Action, status = bounce.ActionDeliverable, StatusDeliverable
		}
		if !rr.Synthesized && res.Host != "" && res.IP.IsValid() {
			// trace_append's wording: the relay the answer came from.
			v.Text = fmt.Sprintf("delivery via %s[%s]:%d: %s", res.Host, res.IP, res.Port, reason)
		}
		results[d.Rcpt] = v
		if v.Action == bounce.ActionDeliverable {
			b.Delivered(env.ID, d.Rcpt, v.encode())
		} else {
			b.Bounced(env.ID, d.Rcpt, v.encode())
		}
		events = append(events, &Event{
			QueueID: env.ID, Status: status, Class: class, Reply: rr.Reply, Origin: env.Origin, Reason: reason,
			Sender: env.Sender, Rcpt: rcpt.Addr, ORCPT: rcpt.ORCPT,
			Queue: spool.QueueKey{VMTA: q.key.vmta, Domain: q.key.dest}, VMTA: q.key.vmta, VMTAPool: pool,
			JobID: env.JobID, EnvID: env.EnvID, Arrival: env.Arrival, Logged: now, Attempts: attempts[i],
			Result: res, Stage: rr.Stage,
		})
	}
	reportID, err := m.commitVerify(cfg, env, results, &b, now)
	if err != nil {
		// The attempt record stands: the recipients are probed again.
		m.logf("qmgr: %s: record verification: %v", env.ID, err)
		return
	}
	if len(events) > 0 {
		events[len(events)-1].DSNQueueID = reportID
	}
	if vr, ok := m.opt.Recorder.(VerifyRecorder); ok {
		for _, ev := range events {
			vr.RecordVerify(ev)
		}
	}
}

// commitVerify commits b, which finishes the recipients in results (and
// may hold other ops), adding the report to it when those results
// complete the request. It returns the report's queue id, "" if none.
func (m *Manager) commitVerify(cfg *config.Config, env *spool.Message, results map[int]verifyResult, b *spool.Batch, now time.Time) (string, error) {
	m.verifyMu.Lock()
	defer m.verifyMu.Unlock()
	reportID := ""
	if len(results) > 0 && env.Sender != "" {
		// A null sender gets no report (Postfix sends it to nobody unless
		// notify_classes has 2bounce); the probes are still logged.
		if _, states, err := m.sp.Envelope(env.ID); err == nil {
			reports, complete := verifyReports(env, states, results)
			if complete {
				rep, err := m.buildDSN(cfg, env, reports, postmasterOf(cfg), now)
				if err != nil {
					return "", fmt.Errorf("build report: %w", err)
				}
				b.Submit(rep, true)
				reportID = rep.ID
			}
		}
		// ErrNotFound: deleted meanwhile; its ops are skipped, no report.
	}
	if err := m.sp.Commit(b); err != nil {
		return "", err
	}
	return reportID, nil
}

// verifyReports gives the report's lines, in the recipients' order, when
// every recipient has a result: from results, or from the spool for
// those finished before.
func verifyReports(env *spool.Message, states []spool.RcptState, results map[int]verifyResult) ([]bounce.RcptReport, bool) {
	out := make([]bounce.RcptReport, 0, len(env.Recipients))
	for i, r := range env.Recipients {
		v, ok := results[i]
		if !ok {
			if i >= len(states) || !states[i].Status.Finished() {
				return nil, false
			}
			v = storedResult(states[i])
		}
		out = append(out, bounce.RcptReport{
			Final: r.Addr, Original: r.ORCPT, Action: v.Action, Status: v.Status,
			RemoteMTA: v.RemoteMTA, Diagnostic: v.Diagnostic, Text: v.Text,
		})
	}
	return out, true
}

// expireVerify is Expire for a verify request: the recipients not yet
// probed are undeliverable, and the report goes out if that completes it.
func (m *Manager) expireVerify(cfg *config.Config, env *spool.Message, states []spool.RcptState, now time.Time) (int, error) {
	var b spool.Batch
	results := map[int]verifyResult{}
	for i, st := range states {
		if st.Status.Finished() || st.Active {
			continue
		}
		const why = "message expired by the administrator"
		v := verifyResult{Action: bounce.ActionUndeliverable, Status: "4.4.7", Diagnostic: "X-Sluice; " + why, Text: why}
		results[i] = v
		b.Expired(env.ID, i, v.encode())
	}
	if b.Len() == 0 {
		return 0, nil
	}
	if _, err := m.commitVerify(cfg, env, results, &b, now); err != nil {
		return 0, err
	}
	return len(results), nil
}
