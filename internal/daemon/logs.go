package daemon

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"github.com/sluicemta/sluice/internal/acct"
	"github.com/sluicemta/sluice/internal/config"
	"github.com/sluicemta/sluice/internal/maillog"
	"github.com/sluicemta/sluice/internal/qmgr"
	"github.com/sluicemta/sluice/internal/smtpd"
	"github.com/sluicemta/sluice/spool"
	"github.com/sluicemta/sluice/vmta"
)

// logs owns the mail log and the accounting files, and turns the other
// packages' events into their lines and records.
type logs struct {
	mu   sync.RWMutex
	ml   *maillog.Log
	acct []*acct.Writer

	tlsMu   sync.Mutex
	tlsSeen *vmta.Result // the delivery whose TLS line was logged last
}

func openLogs(cfg *config.Config) (*logs, error) {
	l := &logs{}
	if err := l.open(cfg); err != nil {
		return nil, err
	}
	return l, nil
}

// open opens the files the config names and swaps them in.
func (l *logs) open(cfg *config.Config) error {
	g := cfg.Global()
	path := g.String("log-file")
	if err := mkParent(path); err != nil {
		return err
	}
	ml, err := maillog.Open(path)
	if err != nil {
		return fmt.Errorf("log-file: %w", err)
	}
	ml.SetHost(shortHost(g.String("host-name")))
	ml.SetPID(os.Getpid())
	var writers []*acct.Writer
	for _, b := range cfg.AcctFiles() {
		opt := acct.Options{Records: b.Strings("records"), WorldReadable: b.Bool("world-readable")}
		var specs []string
		for _, rf := range b.RecordFields("record-fields") {
			specs = append(specs, strings.Join(rf.Fields, ","))
		}
		opt.Fields = strings.Join(specs, ",")
		err := mkParent(b.Name)
		var w *acct.Writer
		if err == nil {
			w, err = acct.Open(b.Name, opt)
		}
		if err != nil {
			for _, o := range writers {
				o.Close()
			}
			ml.Close()
			return fmt.Errorf("acct-file %s: %w", b.Name, err)
		}
		writers = append(writers, w)
	}
	l.mu.Lock()
	oldML, oldAcct := l.ml, l.acct
	l.ml, l.acct = ml, writers
	l.mu.Unlock()
	if oldML != nil {
		oldML.Close()
	}
	for _, w := range oldAcct {
		w.Close()
	}
	return nil
}

// mkParent creates the directory of a log file, as a fresh install or
// `make run` has none yet.
func mkParent(path string) error {
	if path == "" || path == "-" {
		return nil
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o750); err != nil {
		return fmt.Errorf("log directory for %s: %w", path, err)
	}
	return nil
}

// paths lists the files open() opens for cfg.
func (l *logs) paths(cfg *config.Config) []string {
	out := []string{cfg.Global().String("log-file")}
	for _, b := range cfg.AcctFiles() {
		out = append(out, b.Name)
	}
	return out
}

// Reopen reopens the log and accounting files (logrotate has moved them),
// as named by the current config.
func (l *logs) Reopen(cfg *config.Config) error { return l.open(cfg) }

func (l *logs) Close() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.ml != nil {
		l.ml.Close()
	}
	for _, w := range l.acct {
		w.Close()
	}
	l.ml, l.acct = nil, nil
}

func (l *logs) log() *maillog.Log {
	l.mu.RLock()
	defer l.mu.RUnlock()
	return l.ml
}

func (l *logs) Printf(component, format string, args ...any) {
	if ml := l.log(); ml != nil {
		ml.Printf(component, format, args...)
	}
}

func (l *logs) writeAcct(r *acct.Record) {
	l.mu.RLock()
	defer l.mu.RUnlock()
	for _, w := range l.acct {
		if !w.Wants(r.Type) {
			continue
		}
		if err := w.Write(r); err != nil && l.ml != nil {
			l.ml.Printf("acct", "write %s: %v", w.Path(), err)
		}
	}
}

// Arrival logs a message entering the queue.
func (l *logs) Arrival(m *spool.Message, clientName string, clientIP netip.Addr) {
	ml := l.log()
	if ml == nil {
		return
	}
	ml.Arrival(maillog.ArrivalLine{QueueID: m.ID, From: m.Sender, Size: int64(len(m.Content)), NRcpt: len(m.Recipients)})
}

// logSMTP turns smtpd's connection events into smtpd log lines.
func (d *Daemon) logSMTP(e smtpd.Event) {
	ml := d.logs.log()
	if ml == nil {
		return
	}
	ip := ""
	if e.Client.IsValid() {
		ip = e.Client.Addr().String()
	}
	switch e.Kind {
	case smtpd.EvConnect:
		ml.Connect("", ip)
	case smtpd.EvDisconnect:
		ml.Disconnect("", ip, "")
	case smtpd.EvQueued:
		method := ""
		if e.AuthUser != "" {
			method = "PLAIN"
		}
		ml.Received(e.QueueID, "", ip, method, e.AuthUser)
	case smtpd.EvReject:
		proto := "ESMTP"
		if e.Proto == "SMTP" {
			proto = "SMTP"
		}
		ml.Reject(maillog.RejectLine{
			QueueID: e.QueueID, Stage: e.Command, ClientIP: ip, Reply: fmt.Sprintf("%d %s", e.Code, e.Text),
			From: e.From, To: e.Rcpt, Proto: proto, Helo: e.Helo,
		})
	case smtpd.EvAuth:
		if e.Code != 0 {
			ml.Printf("smtpd", "warning: unknown[%s]: SASL authentication failed: %d %s", ip, e.Code, e.Text)
		}
	case smtpd.EvError:
		if e.Err != nil && !errors.Is(e.Err, os.ErrDeadlineExceeded) {
			ml.Printf("smtpd", "warning: unknown[%s]: %v", ip, e.Err)
		}
	}
}

// Record writes the log line and the accounting record of one recipient
// outcome (qmgr.Recorder).
func (l *logs) Record(ev *qmgr.Event) {
	if ml := l.log(); ml != nil {
		line := deliveryLine(ev)
		l.logTLS(ml, ev.Result, line.RelayHost, line.RelayIP, line.RelayPort)
		if ev.Status == maillog.StatusExpired {
			line.Status = maillog.StatusBounced // Postfix logs expiry as a bounce with its reason
			line.Reason = "message expired: " + line.Reason
		}
		ml.Delivery(line)
		if ev.DSNQueueID != "" {
			ml.Printf("bounce", "%s: sender non-delivery notification: %s", ev.QueueID, ev.DSNQueueID)
		}
	}

	r := &acct.Record{
		TimeLogged: ev.Logged, TimeQueued: ev.Arrival, TimeImprinted: ev.Arrival,
		Orig: ev.Sender, Rcpt: ev.Rcpt, Orcpt: ev.ORCPT,
		DsnStatus: ev.Class.Status, DsnDiag: acct.SMTPDiag(ev.Reply.String()),
		BounceCat: ev.Class.Category, SrcType: ev.Origin.Type, RcvSmtpUser: ev.Origin.AuthUser,
		DlvType: "smtp", DlvSize: ev.Size, Vmta: ev.VMTA, VmtaPool: ev.VMTAPool, Queue: queueName(ev.Queue),
		JobID: ev.JobID, EnvID: ev.EnvID, QueueID: ev.QueueID,
	}
	if ev.Attempts == 1 {
		r.TimeFirstAttempt = ev.Logged
	}
	if ev.Origin.Addr != "" {
		ip, _ := netip.ParseAddr(ev.Origin.Addr)
		r.SrcMta = acct.Host{Name: ev.Origin.Helo, IP: ip}
	}
	if res := ev.Result; res != nil {
		r.DsnMta = acct.Host{Name: res.Host, IP: res.IP}
		r.DlvSourceIP = res.SourceIP
		r.DlvDestinationIP = res.IP
		r.DlvTLSProtocol = res.TLSVersion
		r.DlvTLSCipher = res.TLSCipher
		r.DlvEsmtpAvailable = res.Extensions
	}
	switch ev.Status {
	case maillog.StatusSent:
		r.Type, r.DsnAction, r.BounceCat = acct.TypeDelivered, acct.ActionRelayed, "success"
	case maillog.StatusDeferred:
		r.Type, r.DsnAction = acct.TypeTransient, acct.ActionDelayed
	default: // bounced, expired
		r.Type, r.DsnAction = acct.TypeBounced, acct.ActionFailed
	}
	l.writeAcct(r)
}

// RecordVerify logs one sendmail -bv probe result as Postfix does
// ("status=deliverable (...)"), and the report when the event names one
// (qmgr.VerifyRecorder). A verification is not a delivery: no accounting
// record is written for it (docs/accounting.md).
func (l *logs) RecordVerify(ev *qmgr.Event) {
	ml := l.log()
	if ml == nil {
		return
	}
	line := deliveryLine(ev)
	line.Status = maillog.StatusUndeliverable
	if ev.Status == qmgr.StatusDeliverable {
		line.Status = maillog.StatusDeliverable
	}
	ml.Delivery(line)
	if ev.DSNQueueID != "" {
		ml.StatusNotification(ev.QueueID, ev.DSNQueueID)
	}
}

// deliveryLine is the log line of one recipient's event.
func deliveryLine(ev *qmgr.Event) maillog.DeliveryLine {
	line := maillog.DeliveryLine{
		QueueID: ev.QueueID, To: ev.Rcpt, Delay: ev.Logged.Sub(ev.Arrival),
		DSN: ev.Class.Status, Status: ev.Status, Reason: ev.Reason,
	}
	if line.Reason == "" {
		line.Reason = ev.Reply.String()
	}
	if res := ev.Result; res != nil {
		line.RelayHost, line.RelayPort = res.Host, res.Port
		if res.IP.IsValid() {
			line.RelayIP = res.IP.String()
		}
	}
	if ev.ORCPT != "" {
		if _, addr, ok := strings.Cut(ev.ORCPT, ";"); ok {
			line.OrigTo = addr
		}
	}
	return line
}

// logTLS writes Postfix's line for a new TLS connection, once per
// delivery (the events of one delivery share its Result) and not for a
// reused connection, whose handshake was logged when it was opened.
func (l *logs) logTLS(ml *maillog.Log, res *vmta.Result, host, ip string, port int) {
	if res == nil || res.TLSVersion == "" || res.Reused {
		return
	}
	l.tlsMu.Lock()
	seen := l.tlsSeen == res
	l.tlsSeen = res
	l.tlsMu.Unlock()
	if !seen {
		ml.Printf("smtp", "Untrusted TLS connection established to %s:%d: %s with cipher %s", maillog.Client(host, ip), port, res.TLSVersion, res.TLSCipher)
	}
}

// queueName is PowerMTA's "domain/vmta" queue name.
func queueName(k spool.QueueKey) string {
	if k.VMTA == "" {
		return k.Domain
	}
	return k.Domain + "/" + k.VMTA
}

func shortHost(h string) string {
	if i := strings.IndexByte(h, '.'); i > 0 {
		return h[:i]
	}
	return h
}
