// Package daemon wires sluiced together: config, spool, inbound SMTP, the
// queue manager and the outbound client, logs and accounting, signals and
// privilege. It holds the glue and nothing else; every policy lives in the
// package that owns it.
package daemon

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/sluicemta/sluice/internal/config"
	"github.com/sluicemta/sluice/internal/dkim"
	"github.com/sluicemta/sluice/internal/qmgr"
	"github.com/sluicemta/sluice/internal/resolve"
	"github.com/sluicemta/sluice/internal/smtpd"
	"github.com/sluicemta/sluice/spool"
	"github.com/sluicemta/sluice/vmta"
)

// Options are what the main hands over.
type Options struct {
	ConfigPath string
	// Stderr receives start-up and fatal messages before the log file is open.
	Stderr *os.File
}

// ConfigError is a start-up failure caused by the config file (exit 78).
type ConfigError struct{ Err error }

func (e *ConfigError) Error() string { return e.Err.Error() }
func (e *ConfigError) Unwrap() error { return e.Err }

// Daemon is one running sluiced.
type Daemon struct {
	opt   Options
	store *config.Store
	logs  *logs
	sp    *spool.Spool
	smtp  *smtpd.Server
	qm    *qmgr.Manager
	dlv   *vmta.Deliverer
	// resolver is kept for `sluice clear dnscache`.
	resolver *resolve.Resolver
	ctl      *control

	stopQmgr context.CancelFunc
	qmDone   chan struct{}
}

// Run starts the daemon and blocks until SIGTERM/SIGINT or ctx ends, then
// stops gracefully. SIGHUP reloads the config and reopens the logs.
func Run(ctx context.Context, opt Options) error {
	cfg, err := config.Load(opt.ConfigPath)
	if err != nil {
		return &ConfigError{Err: err}
	}
	d := &Daemon{opt: opt, store: config.NewStore(cfg)}
	if err := checkMilters(cfg); err != nil { // milter.go
		return &ConfigError{Err: err}
	}
	// Caught before anything starts: a SIGTERM that arrives while the
	// listeners open (a service manager stopping us right away) must stop
	// the daemon gracefully once it is up, not kill it mid-start.
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGHUP, syscall.SIGTERM, syscall.SIGINT)
	defer signal.Stop(sigs)
	if err := d.start(cfg); err != nil {
		d.close()
		return err
	}
	for {
		select {
		case <-ctx.Done():
			return d.stop()
		case s := <-sigs:
			if s == syscall.SIGHUP {
				d.reload()
				continue
			}
			d.logs.Printf("sluiced", "stopping on %v", s)
			return d.stop()
		}
	}
}

func (d *Daemon) start(cfg *config.Config) error {
	g := cfg.Global()
	var err error
	if d.logs, err = openLogs(cfg); err != nil {
		return err
	}

	d.smtp, err = smtpd.New(d.smtpSettings(cfg), &queueAdapter{d: d})
	if err != nil {
		return fmt.Errorf("smtpd: %w", err)
	}
	// Bind first: port 25 may need root, which is given up right after.
	if err := d.smtp.Listen(); err != nil {
		return err
	}
	ctlPath := g.String("control-socket")
	if d.ctl, err = listenControl(ctlPath, d); err != nil {
		return err
	}
	if err := dropPrivileges(g.String("run-as-user"), d.logs.paths(cfg)...); err != nil {
		return err
	}

	d.sp, err = spool.Open(g.String("spool"), spool.Options{Logf: func(f string, a ...any) { d.logs.Printf("spool", f, a...) }})
	if err != nil {
		return fmt.Errorf("spool %s: %w", g.String("spool"), err)
	}

	d.resolver = resolve.New(resolve.Options{Servers: g.Strings("dns-server")})
	d.dlv = vmta.NewDeliverer(vmta.Options{
		Resolver: d.resolver,
		Logf:     func(f string, a ...any) { d.logs.Printf("smtp", f, a...) },
		// Connection-rate limits (max-connect-rate, source-ip-max-connect-rate)
		// are taken where the connection is opened.
		Dial: qmgr.ConnectLimitedDial(nil),
	})
	d.qm = qmgr.New(qmgr.Options{
		Spool:    d.sp,
		Config:   d.store.Current,
		Deliver:  d.dlv,
		Resolver: d.resolver, // MX rollup
		Recorder: d.logs,
		Logf:     func(f string, a ...any) { d.logs.Printf("qmgr", f, a...) },
		// Signing converts first what the client would re-encode for the
		// next hop (long lines, 8-bit bodies), so the signature survives.
		Sign: dkim.NewSigner(dkim.Options{Convert: vmta.Downgrade}).Hook(func(f string, a ...any) { d.logs.Printf("dkim", f, a...) }, nil),
	})
	qctx, cancel := context.WithCancel(context.Background())
	d.stopQmgr = cancel
	d.qmDone = make(chan struct{})
	go func() {
		defer close(d.qmDone)
		if err := d.qm.Run(qctx); err != nil {
			d.logs.Printf("qmgr", "stopped: %v", err)
		}
	}()
	go d.ctl.serve()
	if err := d.startMaildrop(qctx, g.String("maildrop")); err != nil {
		return err
	}
	if err := d.startPickupDirs(qctx); err != nil {
		return err
	}
	go func() {
		if err := d.smtp.Serve(); err != nil {
			d.logs.Printf("smtpd", "serve: %v", err)
		}
	}()
	d.logs.Printf("sluiced", "started: config %s, spool %s, listening on %s", cfg.File(), g.String("spool"), listenerList(d.smtp))
	d.logWarnings(cfg)
	return nil
}

func listenerList(s *smtpd.Server) string {
	var out []string
	for _, a := range s.Addrs() {
		out = append(out, a.String())
	}
	return strings.Join(out, ", ")
}

// reload validates the file and swaps the snapshot in; an invalid file
// leaves the running config in force. Logs are reopened either way.
func (d *Daemon) reload() {
	path := d.store.Current().File()
	if err := d.store.Reload(path); err != nil {
		d.logs.Printf("sluiced", "reload of %s refused, running config kept: %v", path, err)
	} else {
		if err := d.smtp.Update(d.smtpSettings(d.store.Current())); err != nil {
			d.logs.Printf("sluiced", "reload: smtpd settings: %v", err)
		}
		d.logs.Printf("sluiced", "reloaded %s", path)
		d.logWarnings(d.store.Current())
	}
	d.reopenLogs()
}

// logWarnings logs what the config accepted but an operator should fix
// (a world-readable DKIM key, ...).
func (d *Daemon) logWarnings(cfg *config.Config) {
	for _, w := range cfg.Warnings() {
		d.logs.Printf("sluiced", "%v", w)
	}
}

func (d *Daemon) reopenLogs() {
	if err := d.logs.Reopen(d.store.Current()); err != nil {
		fmt.Fprintf(os.Stderr, "sluiced: reopen logs: %v\n", err)
	}
}

// stop ends inbound service first (no new acceptances), then delivery
// (in-flight attempts end and are deferred), then closes the spool.
func (d *Daemon) stop() error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var errs []error
	if d.smtp != nil {
		if err := d.smtp.Shutdown(ctx); err != nil {
			errs = append(errs, fmt.Errorf("smtpd shutdown: %w", err))
		}
	}
	if d.stopQmgr != nil {
		d.stopQmgr()
		<-d.qmDone
	}
	errs = append(errs, d.close())
	return errors.Join(errs...)
}

func (d *Daemon) close() error {
	var errs []error
	if d.ctl != nil {
		d.ctl.close()
	}
	if d.dlv != nil {
		d.dlv.Close()
	}
	if d.sp != nil {
		if err := d.sp.Close(); err != nil {
			errs = append(errs, fmt.Errorf("spool close: %w", err))
		}
	}
	if d.logs != nil {
		d.logs.Close()
	}
	return errors.Join(errs...)
}

// smtpSettings maps the config snapshot onto the SMTP server's settings.
func (d *Daemon) smtpSettings(cfg *config.Config) smtpd.Settings {
	g := cfg.Global()
	// Asked for every RCPT: a set built once per config snapshot. smtpd
	// hands the domain over lower-cased without a trailing dot.
	relayDomains := map[string]bool{}
	for _, rd := range g.Strings("relay-domain") {
		relayDomains[strings.ToLower(strings.TrimSuffix(rd, "."))] = true
	}
	s := smtpd.Settings{
		Hostname:    g.String("host-name"),
		TotalMaxIn:  int(g.Int("total-max-smtp-in")),
		MaxReceived: int(g.Int("max-received-headers")),
		// go-smtp applies one limit to command and content lines. Real mail
		// (scripts, HTML mailers) has body lines far over RFC 5321's 1000
		// octets; Postfix accepts them, and the client re-encodes lines over
		// 998 octets on the way out. 64 KiB keeps a command line bounded.
		MaxLineLength: 64 << 10,
		PolicyFor: func(ip netip.Addr, user string) smtpd.Policy {
			return policyFor(cfg, ip, user)
		},
		LocalDomain: func(domain string) bool { return relayDomains[domain] },
		Log:         d.logSMTP,
	}
	// Per-IP limits live in <source 0/0>: the catch-all is where PowerMTA
	// operators put server-wide inbound settings.
	any := cfg.Source(netip.IPv4Unspecified(), "")
	s.MaxPerIP = int(any.Int("max-smtp-in-per-ip"))
	if r := any.Rate("max-connect-rate-per-ip"); !r.Unlimited() {
		s.ConnRatePerIP = smtpd.Rate{N: r.N, Per: r.Per}
	}
	if r := any.Rate("smtp-max-auth-failure-rate"); !r.Unlimited() {
		s.AuthFailureRate = smtpd.Rate{N: r.N, Per: r.Per}
	}
	if g.IsSet("smtp-server-tls-certificate") {
		ck := g.CertKey("smtp-server-tls-certificate")
		s.CertFile, s.KeyFile = ck.CertFile, ck.KeyFile
	}
	for _, l := range cfg.Listeners() {
		s.Listeners = append(s.Listeners, smtpd.Listener{Addr: l.Network(), Mode: listenerMode(l.Port)})
	}
	// Milters (milter.go): the chain of the client's <source>, and the
	// discard/hold events they cause in the log.
	s.NewFilter = d.smtpFilter(cfg)
	s.Log = d.logFilterEvents(s.Log)
	if len(cfg.SMTPUsers()) > 0 {
		s.CheckPassword = func(user, pass string) bool {
			u := cfg.SMTPUser(user)
			if u == nil {
				// Spend the same time as a real check, so user names cannot be probed.
				bcrypt.CompareHashAndPassword(dummyHash, []byte(pass))
				return false
			}
			return bcrypt.CompareHashAndPassword([]byte(u.String("password")), []byte(pass)) == nil
		}
	}
	return s
}

func addrString(a netip.Addr) string {
	if !a.IsValid() {
		return ""
	}
	return a.String()
}

// listenerMode follows the well-known ports: 465 is implicit TLS
// (RFC 8314) and 587 submission (RFC 6409), both requiring AUTH; every
// other port is plain SMTP with STARTTLS offered.
func listenerMode(port int) smtpd.Mode {
	switch port {
	case 465:
		return smtpd.ImplicitTLS
	case 587:
		return smtpd.Submission
	}
	return smtpd.Plain
}

var dummyHash, _ = bcrypt.GenerateFromPassword([]byte("sluice-dummy"), bcrypt.DefaultCost)

// policyFor maps the <source> settings that apply to a client.
func policyFor(cfg *config.Config, ip netip.Addr, user string) smtpd.Policy {
	b := cfg.Source(ip, user)
	return smtpd.Policy{
		Relay:                     b.Bool("always-allow-relaying") || user != "",
		RequireAuth:               b.Bool("require-auth"),
		Refuse:                    !b.Bool("smtp-service"),
		MaxMessageSize:            b.Size("max-message-size"),
		MaxRcpts:                  int(b.Int("max-rcpt-per-message")),
		AddReceived:               b.Bool("add-received-header"),
		AddMessageID:              b.Bool("add-message-id-header"),
		AddDate:                   b.Bool("add-date-header"),
		AllowStartTLS:             b.Bool("allow-starttls"),
		AllowPlainAuthUnencrypted: b.Bool("allow-unencrypted-plain-auth"),
		DefaultVMTA:               b.String("default-virtual-mta"),
	}
}

// queueAdapter puts smtpd's accepted messages into the spool.
type queueAdapter struct{ d *Daemon }

func (q *queueAdapter) Enqueue(ctx context.Context, env *smtpd.Envelope, content []byte) error {
	m := &spool.Message{
		ID:       env.ID,
		Arrival:  env.Received,
		Sender:   env.From,
		Ret:      env.Ret,
		EnvID:    env.EnvID,
		SMTPUTF8: env.SMTPUTF8,
		Body:     env.Body,
		Held:     env.Hold, // a milter's quarantine: durable, listed, not delivered
		Origin:   spool.Origin{Type: "smtp", Helo: env.Helo, Addr: addrString(env.ClientIP), AuthUser: env.AuthUser},
	}
	// x-virtual-mta / x-job where the source allows them (then removed),
	// else the user's or source's default-virtual-mta.
	cfg := q.d.store.Current()
	m.VMTA, m.JobID, m.Content = qmgr.InboundRouting(cfg, cfg.Source(env.ClientIP, env.AuthUser), env.AuthUser, content)
	if m.Arrival.IsZero() {
		m.Arrival = time.Now()
	}
	for _, r := range env.Rcpts {
		m.Recipients = append(m.Recipients, spool.Recipient{Addr: r.Addr, ORCPT: r.ORCPT, Notify: r.Notify})
	}
	if err := q.d.sp.Submit(m); err != nil {
		if errors.Is(err, spool.ErrNoSpace) {
			return fmt.Errorf("%w: %v", smtpd.ErrQueueFull, err)
		}
		return err
	}
	q.d.logs.Arrival(m, env.ClientName, env.ClientIP)
	return nil
}
