package daemon

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"

	"github.com/sluicemta/sluice/internal/config"
	"github.com/sluicemta/sluice/internal/maillog"
	"github.com/sluicemta/sluice/internal/smtpd"
	"github.com/sluicemta/sluice/internal/tlsname"
	"github.com/sluicemta/sluice/milter"
	"github.com/sluicemta/sluice/spool"
)

// Milters: the <milter> blocks of the config become milter.Chains; smtpd
// gets them through its Filter hook (adapted here, so smtpd does not know
// the milter package) and locally submitted mail through FilterLocal.

// milterStages maps the macro directives onto the protocol's stages.
var milterStages = map[string]milter.Stage{
	"connect-macros": milter.StageConnect,
	"helo-macros":    milter.StageHelo,
	"mail-macros":    milter.StageMail,
	"rcpt-macros":    milter.StageRcpt,
	"data-macros":    milter.StageData,
	"eoh-macros":     milter.StageEOH,
	"eom-macros":     milter.StageEOM,
	"unknown-macros": milter.StageUnknown,
}

// milterConfig reads one <milter NAME> block.
func milterConfig(b *config.Block) (milter.Config, error) {
	act, err := milter.ParseAction(b.String("default-action"))
	if err != nil {
		return milter.Config{}, err
	}
	c := milter.Config{
		Name:           b.Name,
		Socket:         b.String("socket"),
		DefaultAction:  act,
		ConnectTimeout: b.Duration("connect-timeout"),
		CommandTimeout: b.Duration("command-timeout"),
		ContentTimeout: b.Duration("content-timeout"),
		Protocol:       int(b.Int("protocol")),
		Macros:         map[milter.Stage][]string{},
	}
	for name, st := range milterStages {
		l := b.Strings(name)
		if len(l) == 1 && strings.EqualFold(l[0], "none") {
			l = nil
		}
		c.Macros[st] = append([]string{}, l...)
	}
	return c, nil
}

// milterChains builds and keeps the chains one config snapshot names.
// A chain holds no connections (each session dials its own), so sharing
// one per list of names is safe.
type milterChains struct {
	cfg  *config.Config
	log  *slog.Logger
	mu   sync.Mutex
	byID map[string]*milter.Chain
}

func newMilterChains(cfg *config.Config, log *slog.Logger) *milterChains {
	return &milterChains{cfg: cfg, log: log, byID: map[string]*milter.Chain{}}
}

// chain returns the chain of the named milters (nil for none).
func (m *milterChains) chain(names []string) (*milter.Chain, error) {
	if len(names) == 0 {
		return nil, nil
	}
	key := strings.Join(names, ",")
	m.mu.Lock()
	defer m.mu.Unlock()
	if c := m.byID[key]; c != nil {
		return c, nil
	}
	var cfgs []milter.Config
	for _, n := range names {
		b := m.cfg.Milter(n)
		if b == nil {
			return nil, fmt.Errorf("milter: no <milter %s>", n)
		}
		mc, err := milterConfig(b)
		if err != nil {
			return nil, fmt.Errorf("<milter %s>: %w", n, err)
		}
		cfgs = append(cfgs, mc)
	}
	c, err := milter.NewChain(cfgs)
	if err != nil {
		return nil, err
	}
	if m.log != nil {
		c.SetLogger(m.log)
	}
	m.byID[key] = c
	return c, nil
}

// checkMilters builds every <milter> alone, so a block the milter package
// refuses stops the start (or a reload) rather than a connection.
func checkMilters(cfg *config.Config) error {
	for _, b := range cfg.Milters() {
		mc, err := milterConfig(b)
		if err == nil {
			_, err = milter.NewChain([]milter.Config{mc})
		}
		if err != nil {
			return fmt.Errorf("%s:%d: <milter %s>: %w", b.File, b.Line, b.Name, err)
		}
	}
	return nil
}

// milterLogger sends the milter package's warnings to the maillog.
func (d *Daemon) milterLogger() *slog.Logger {
	return slog.New(&logHandler{d: d})
}

type logHandler struct {
	d     *Daemon
	attrs []slog.Attr
}

func (h *logHandler) Enabled(_ context.Context, l slog.Level) bool { return l >= slog.LevelInfo }
func (h *logHandler) Handle(_ context.Context, r slog.Record) error {
	var b strings.Builder
	b.WriteString(r.Message)
	write := func(a slog.Attr) bool {
		fmt.Fprintf(&b, " %s=%q", a.Key, a.Value.String())
		return true
	}
	for _, a := range h.attrs {
		write(a)
	}
	r.Attrs(write)
	if r.Level >= slog.LevelWarn {
		h.d.logs.Printf("milter", "warning: %s", b.String())
	} else {
		h.d.logs.Printf("milter", "%s", b.String())
	}
	return nil
}
func (h *logHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return &logHandler{d: h.d, attrs: append(append([]slog.Attr{}, h.attrs...), as...)}
}
func (h *logHandler) WithGroup(string) slog.Handler { return h }

// smtpFilter is smtpd's Settings.NewFilter for one config snapshot: the
// smtpd-milters of the client's <source>, chosen by address at connect.
func (d *Daemon) smtpFilter(cfg *config.Config) func(context.Context, smtpd.FilterConn) (smtpd.Filter, smtpd.FilterReply) {
	chains := newMilterChains(cfg, d.milterLogger())
	host := cfg.Global().String("host-name")
	return func(ctx context.Context, c smtpd.FilterConn) (smtpd.Filter, smtpd.FilterReply) {
		names := cfg.Source(c.Client.Addr(), "").Strings("smtpd-milters")
		ch, err := chains.chain(names)
		if err != nil {
			d.logs.Printf("milter", "warning: smtpd-milters %s: %v", strings.Join(names, ","), err)
			return refusingFilter{}, configProblem
		}
		if ch == nil {
			return nil, smtpd.FilterReply{}
		}
		info := milter.ConnInfo{
			Hostname: c.ClientName,
			Addr:     c.Client.Addr().String(),
			Port:     int(c.Client.Port()),
			TLS:      tlsInfo(c),
			Macros: map[string]string{
				"j":             host,
				"{daemon_name}": host,
				"{daemon_addr}": c.Local.Addr().String(),
				"{daemon_port}": strconv.Itoa(int(c.Local.Port())),
			},
		}
		if !c.Local.IsValid() {
			delete(info.Macros, "{daemon_addr}")
			delete(info.Macros, "{daemon_port}")
		}
		s, dec := ch.Begin(ctx, info) // HELO comes from smtpd, separately
		return &milterFilter{s: s}, filterReply(dec)
	}
}

var configProblem = smtpd.FilterReply{Code: 451, Enhanced: "4.3.5", Text: "Server configuration problem - try again later"}

func tlsInfo(c smtpd.FilterConn) *milter.TLSInfo {
	if c.TLS == nil {
		return nil
	}
	return &milter.TLSInfo{Version: tlsname.Version(c.TLS.Version)}
}

// filterReply turns a chain decision about a command into smtpd's form.
// Discard and hold are per message and arrive with the Result.
func filterReply(d milter.Decision) smtpd.FilterReply {
	switch d.Verdict {
	case milter.Reject, milter.Tempfail:
		return smtpd.FilterReply{Code: d.Code, Enhanced: d.Enhanced, Text: d.Text}
	case milter.Shutdown:
		return smtpd.FilterReply{Code: 421, Enhanced: d.Enhanced, Text: d.Text}
	}
	return smtpd.FilterReply{}
}

// milterFilter adapts a milter.Session to smtpd.Filter.
type milterFilter struct{ s *milter.Session }

func (m *milterFilter) Helo(name string) smtpd.FilterReply { return filterReply(m.s.Helo(name)) }
func (m *milterFilter) SetMacro(n, v string)               { m.s.SetMacro(n, v) }
func (m *milterFilter) Mail(from string, args []string) smtpd.FilterReply {
	return filterReply(m.s.Mail(from, args))
}
func (m *milterFilter) Rcpt(to string, args []string) smtpd.FilterReply {
	return filterReply(m.s.Rcpt(to, args))
}
func (m *milterFilter) RejectedRcpt(to string, args []string, reply string) {
	m.s.RejectedRcpt(to, args, reply)
}
func (m *milterFilter) Data() smtpd.FilterReply { return filterReply(m.s.Data()) }
func (m *milterFilter) Abort()                  { m.s.Abort() }
func (m *milterFilter) Close()                  { m.s.Close() }

func (m *milterFilter) Message(msg smtpd.FilterMessage) (smtpd.FilterResult, error) {
	hdr := make([]milter.HeaderField, len(msg.Header))
	for i, h := range msg.Header {
		hdr[i] = milter.HeaderField(h)
	}
	// A ReadSeeker is rewound for each milter instead of copied.
	res, err := m.s.Message(hdr, bytes.NewReader(msg.Body))
	if err != nil {
		return smtpd.FilterResult{}, err
	}
	return filterResult(res), nil
}

func filterResult(res milter.Result) smtpd.FilterResult {
	out := smtpd.FilterResult{
		Reply:         filterReply(res.Decision),
		Discard:       res.Decision.Verdict == milter.Discard,
		Hold:          res.Quarantine,
		Header:        make([]smtpd.HeaderField, len(res.Header)),
		Body:          res.Body,
		BodyReplaced:  res.BodyReplaced,
		Sender:        res.Sender,
		SenderArgs:    res.SenderArgs,
		SenderChanged: res.SenderChanged,
	}
	for i, h := range res.Header {
		out.Header[i] = smtpd.HeaderField(h)
	}
	if len(res.Added) > 0 || len(res.Deleted) > 0 {
		out.RecipientsChanged = true
		out.Recipients = make([]smtpd.FilterRcpt, len(res.Recipients))
		for i, r := range res.Recipients {
			out.Recipients[i] = smtpd.FilterRcpt{Addr: r.Addr, Args: r.Args}
		}
	}
	return out
}

// refusingFilter stands in for a chain that cannot be built: the
// connection reply refuses every HELO, so no other stage is reached.
type refusingFilter struct{}

func (refusingFilter) Helo(string) smtpd.FilterReply           { return configProblem }
func (refusingFilter) SetMacro(string, string)                 {}
func (refusingFilter) Mail(string, []string) smtpd.FilterReply { return configProblem }
func (refusingFilter) Rcpt(string, []string) smtpd.FilterReply { return configProblem }
func (refusingFilter) RejectedRcpt(string, []string, string)   {}
func (refusingFilter) Data() smtpd.FilterReply                 { return configProblem }
func (refusingFilter) Abort()                                  {}
func (refusingFilter) Close()                                  {}
func (refusingFilter) Message(smtpd.FilterMessage) (smtpd.FilterResult, error) {
	return smtpd.FilterResult{Reply: configProblem}, nil
}

// LocalFiltered is what the non-smtpd milters made of a locally submitted
// message.
type LocalFiltered struct {
	// Reply, when its Code is set, refuses the message (sendmail exits
	// EX_TEMPFAIL for 4xx, EX_UNAVAILABLE for 5xx).
	Reply      smtpd.FilterReply
	Discard    bool   // accept and drop
	Hold       string // queue on hold, with this reason
	Sender     string
	Recipients []spool.Recipient
	Content    []byte
}

// FilterLocal runs a message submitted without SMTP (sendmail, pickup)
// through the non-smtpd-milters, from the simulated localhost connection
// Postfix uses. content is the whole message (CRLF), our Received header
// first when hidden is set. With no non-smtpd-milters it returns the
// input unchanged.
func (d *Daemon) FilterLocal(ctx context.Context, id, from string, rcpts []spool.Recipient, content []byte, hidden bool) (LocalFiltered, error) {
	out := LocalFiltered{Sender: from, Recipients: rcpts, Content: content}
	cfg := d.store.Current()
	ch, err := newMilterChains(cfg, d.milterLogger()).chain(cfg.Global().Strings("non-smtpd-milters"))
	if err != nil {
		return out, fmt.Errorf("non-smtpd-milters: %w", err)
	}
	return filterLocal(ctx, ch, cfg.Global().String("host-name"), id, out, hidden)
}

func filterLocal(ctx context.Context, ch *milter.Chain, host, id string, in LocalFiltered, hidden bool) (LocalFiltered, error) {
	if ch == nil || ch.Len() == 0 {
		return in, nil
	}
	fields, body, _ := smtpd.SplitHeader(in.Content)
	hdr := make([]milter.HeaderField, len(fields))
	for i, f := range fields {
		hdr[i] = milter.HeaderField(f)
	}
	if hidden && len(hdr) > 0 {
		hdr[0].Hidden = true
	}
	env := &smtpd.Envelope{ID: id, From: in.Sender}
	rs := make([]milter.Recipient, len(in.Recipients))
	for i, r := range in.Recipients {
		rs[i] = milter.Recipient{Addr: r.Addr}
		env.Rcpts = append(env.Rcpts, smtpd.Rcpt{Addr: r.Addr, ORCPT: r.ORCPT, Notify: r.Notify})
	}
	info := milter.LocalConnInfo()
	info.Macros = map[string]string{"i": id, "j": host, "{daemon_name}": host}
	res, err := ch.Filter(ctx, info, in.Sender, rs, hdr, bytes.NewReader(body))
	if err != nil {
		return in, fmt.Errorf("milter: %w", err)
	}
	fr := filterResult(res)
	out := in
	switch {
	case fr.Reply.Code != 0:
		out.Reply = fr.Reply
		return out, nil
	case fr.Discard:
		out.Discard = true
		return out, nil
	}
	content, err := smtpd.ApplyFilter(env, in.Content, fr)
	if err != nil {
		return in, err
	}
	out.Content, out.Sender, out.Hold = content, env.From, fr.Hold
	out.Recipients = nil
	for _, r := range env.Rcpts {
		out.Recipients = append(out.Recipients, spool.Recipient{Addr: r.Addr, ORCPT: r.ORCPT, Notify: r.Notify})
	}
	if len(out.Recipients) == 0 {
		out.Discard = true // every recipient removed
	}
	return out, nil
}

// logFilterEvents logs smtpd's filter events (discard, hold) in Postfix's
// words and passes every other event on to next.
func (d *Daemon) logFilterEvents(next func(smtpd.Event)) func(smtpd.Event) {
	return func(e smtpd.Event) {
		ip := ""
		if e.Client.IsValid() {
			ip = e.Client.Addr().String()
		}
		switch {
		case e.Kind == smtpd.EvReject && errors.Is(e.Err, smtpd.ErrFilterRefused):
			line := maillog.RejectLine{QueueID: e.QueueID, Stage: e.Command, ClientIP: ip, Reply: fmt.Sprintf("%d %s", e.Code, e.Text),
				From: e.From, To: e.Rcpt, Proto: e.Proto, Helo: e.Helo}.String()
			d.logs.Printf("smtpd", "%s", strings.Replace(line, ": reject: ", ": milter-reject: ", 1))
		case e.Kind == smtpd.EvFilter:
			// Postfix: the quarantine reason, or "milter triggers HOLD action".
			what, reason, _ := strings.Cut(e.Text, ": ")
			if reason == "" {
				reason = "milter triggers " + strings.ToUpper(what) + " action"
			}
			d.logs.Printf("smtpd", "%s: milter-%s: %s from unknown[%s]: %s; from=<%s> proto=%s helo=<%s>",
				e.QueueID, what, e.Command, ip, reason, e.From, e.Proto, e.Helo)
		default:
			next(e)
		}
	}
}
