package daemon

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"time"

	"github.com/sluicemta/sluice/compat"
	"github.com/sluicemta/sluice/internal/bounce"
	"github.com/sluicemta/sluice/spool"
)

// localBackend serves the sendmail family (compat.Backend) from the spool.
type localBackend struct{ d *Daemon }

// handleControl serves one control-socket connection with the compat
// protocol (compat/PROTOCOL.md); who is asking comes from SO_PEERCRED.
func (d *Daemon) handleControl(conn *net.UnixConn) {
	if err := d.compatHandler().ServeConn(context.Background(), conn); err != nil {
		d.logs.Printf("control", "%v", err)
	}
}

// compatHandler serves the sendmail family, on the control socket and for
// maildrop files, with the current config's names.
func (d *Daemon) compatHandler() *compat.Handler {
	host := d.store.Current().Global().String("host-name")
	return &compat.Handler{
		Backend:  &localBackend{d: d},
		Hostname: host,
		Origin:   host,
		AdminOps: map[string]func(context.Context) error{
			"reopen-logs":    func(context.Context) error { d.reopenLogs(); return nil },
			"clear-dnscache": func(context.Context) error { d.resolver.Flush(); return nil },
		},
	}
}

// Submit queues a locally submitted message: non-smtpd milters first,
// then one durable append; the caller is answered only after it.
func (b *localBackend) Submit(ctx context.Context, m *compat.Submission) (string, error) {
	d := b.d
	var notify spool.Notify
	if m.DSNNotify != "" {
		var err error
		if notify, err = bounce.ParseNotify(m.DSNNotify); err != nil {
			return "", compat.Exitf(compat.ExitUsage, "-N %s: %v", m.DSNNotify, err)
		}
	}
	if m.Trace {
		// sendmail -v: mail the sender a report of the first delivery
		// attempt, whatever its outcome (Postfix's "record" flag). Success,
		// failure and delay notices together are that report.
		notify = spool.NotifySuccess | spool.NotifyFailure | spool.NotifyDelay
	}
	rcpts := make([]spool.Recipient, len(m.Rcpts))
	for i, r := range m.Rcpts {
		rcpts[i] = spool.Recipient{Addr: r, Notify: notify}
	}
	f, err := d.FilterLocal(ctx, m.ID, m.Sender, rcpts, m.Content, true)
	if err != nil {
		return "", compat.Exitf(compat.ExitTempFail, "milter: %v", err)
	}
	switch {
	case f.Reply.Code >= 500:
		return "", compat.Exitf(compat.ExitUnavailable, "%d %s %s", f.Reply.Code, f.Reply.Enhanced, f.Reply.Text)
	case f.Reply.Code >= 400:
		return "", compat.Exitf(compat.ExitTempFail, "%d %s %s", f.Reply.Code, f.Reply.Enhanced, f.Reply.Text)
	case f.Discard || len(f.Recipients) == 0:
		d.logs.Printf("cleanup", "%s: milter-discard: END-OF-MESSAGE from local; from=<%s>", m.ID, m.Sender)
		return m.ID, nil
	}
	msg := &spool.Message{
		ID:         m.ID,
		Arrival:    m.Arrival,
		Sender:     f.Sender,
		Ret:        m.DSNRet,
		EnvID:      m.EnvID,
		SMTPUTF8:   wantSMTPUTF8(m.SMTPUTF8, m.Sender, m.Rcpts),
		Body:       m.Body,
		Recipients: f.Recipients,
		Content:    f.Content,
		Held:       f.Hold != "",
		// sendmail -bv: queued like any submission (durable before exit
		// 0), then probed and reported on by the queue manager, never
		// delivered.
		Verify: m.Verify,
		// PowerMTA accounts mail not received by SMTP as srcType "api".
		Origin: spool.Origin{Type: "api"},
	}
	if msg.Arrival.IsZero() {
		msg.Arrival = time.Now()
	}
	if err := d.sp.Submit(msg); err != nil {
		return "", compat.Exitf(compat.ExitTempFail, "queue file write error: %v", err)
	}
	if ml := d.logs.log(); ml != nil {
		ml.Printf("pickup", "%s: uid=%d from=<%s>", msg.ID, m.UID, m.Login)
	}
	d.logs.Arrival(msg, "", netip.Addr{})
	return msg.ID, nil
}

// List reports every live message with its unfinished recipients.
func (b *localBackend) List(ctx context.Context, fn func(*compat.QueueEntry) bool) error {
	var stop bool
	b.d.sp.Walk(func(info spool.MessageInfo) bool {
		if ctx.Err() != nil {
			stop = true
			return false
		}
		e := &compat.QueueEntry{
			ID: info.ID, Arrival: info.Arrival, Size: info.Size, Sender: info.Sender,
			Held: info.Held, Active: info.Active,
		}
		deferred := false
		for _, r := range info.Recipients {
			if r.Status.Finished() {
				continue
			}
			deferred = deferred || r.Attempts > 0
			e.Rcpts = append(e.Rcpts, compat.QueueRcpt{Addr: r.Addr, Reason: r.Reason})
		}
		if len(e.Rcpts) == 0 {
			return true
		}
		switch {
		case info.Held:
			e.Queue = "hold"
		case info.Active:
			e.Queue = "active"
		case deferred:
			e.Queue = "deferred"
		default:
			e.Queue = "incoming"
		}
		return fn(e)
	})
	if stop {
		return ctx.Err()
	}
	return nil
}

// Flush makes messages due now: all, one site's, or one id.
func (b *localBackend) Flush(ctx context.Context, site, id string) error {
	sp := b.d.sp
	switch {
	case id != "":
		if err := sp.Reschedule(id); err != nil {
			return notFound(err)
		}
	case site != "":
		site = strings.ToLower(strings.TrimSuffix(site, "."))
		sp.Walk(func(info spool.MessageInfo) bool {
			for _, r := range info.Recipients {
				if _, dom, ok := strings.Cut(r.Addr, "@"); ok && strings.EqualFold(dom, site) && !r.Status.Finished() {
					sp.Reschedule(info.ID)
					break
				}
			}
			return true
		})
	default:
		sp.RescheduleAll()
	}
	return nil
}

// Apply performs one postsuper action.
func (b *localBackend) Apply(ctx context.Context, a compat.PostsuperAction, id string) error {
	sp := b.d.sp
	var err error
	switch a {
	case compat.ActDelete:
		err = sp.Delete(id)
		if err == nil {
			if ml := b.d.logs.log(); ml != nil {
				ml.Removed(id)
			}
		}
	case compat.ActHold:
		err = sp.Hold(id)
	case compat.ActRelease:
		err = sp.Release(id)
	case compat.ActRequeue:
		err = sp.Reschedule(id)
	case compat.ActExpire:
		err = b.d.qm.Expire(id)
	default:
		return compat.Exitf(compat.ExitUnavailable, "postsuper -%c is not supported by sluice", byte(a))
	}
	return notFound(err)
}

// notFound maps the spool's not-found onto compat's, which postsuper counts.
func notFound(err error) error {
	if errors.Is(err, spool.ErrNotFound) {
		return fmt.Errorf("%w: %v", compat.ErrNotFound, err)
	}
	return err
}

// ServeLocalSMTP serves `sendmail -bs`: an SMTP session on the control
// connection, with the policy the config gives loopback clients.
func (b *localBackend) ServeLocalSMTP(ctx context.Context, conn net.Conn, uid uint32, login string) error {
	b.d.smtp.ServeLocal(conn)
	return nil
}

// wantSMTPUTF8 decides whether a local submission (sendmail, a pickup
// file) needs SMTPUTF8: as asked with -O smtputf8=yes|no, else when an
// envelope address is not ASCII, as Postfix detects it for the classes
// sendmail and verify (smtputf8_autodetect_classes).
func wantSMTPUTF8(opt, sender string, rcpts []string) bool {
	switch strings.ToLower(opt) {
	case "yes":
		return true
	case "no":
		return false
	}
	for _, a := range append([]string{sender}, rcpts...) {
		for i := 0; i < len(a); i++ {
			if a[i] >= 0x80 {
				return true
			}
		}
	}
	return false
}
