package dkim

import (
	"errors"
	"fmt"
	"net/mail"
	"strings"
	"time"

	"github.com/sluicemta/sluice/internal/config"
	"github.com/sluicemta/sluice/spool"
)

// ErrNoKey is returned (wrapped) by SignFor when signing is on but no
// domain-key matches the identity or its fallback. The content comes back
// unchanged: deliver it unsigned and log the error, as PowerMTA does; a
// missing key FILE is caught earlier, when the config loads.
var ErrNoKey = errors.New("no domain-key for the signing identity")

// Policy is the DKIM settings of one queue, read from the config.
type Policy struct {
	Sign        bool
	Algorithm   string // "" = any
	HeaderCanon Canon
	BodyCanon   Canon
	Identity    string // sender-or-from, from, sender, ADDRESS or @DOMAIN
	Fallback    string // ADDRESS or @DOMAIN, or ""
	Expire      time.Duration
	Headers     []string
	Oversign    []string
}

// PolicyFor reads the dkim-* settings for mail to domain through vmta (a
// virtual MTA or pool name, "" for none). Most specific first: the virtual
// MTA's own <domain domain> and <domain *>, the <virtual-mta> block
// itself, then config.Domain's order (pools, global <domain>), then the
// defaults.
func PolicyFor(cfg *config.Config, vmta, domain string) Policy {
	merged := cfg.Domain(vmta, domain)
	var own []*config.Block
	if vb := cfg.VMTA(vmta); vb != nil && vb.Kind == config.KindVMTA {
		ds := vb.Domains()
		if b := ds[strings.ToLower(strings.TrimSuffix(domain, "."))]; b != nil {
			own = append(own, b)
		}
		if b := ds["*"]; b != nil {
			own = append(own, b)
		}
		own = append(own, vb)
	}
	block := func(name string) *config.Block {
		for _, b := range own {
			if b.IsSet(name) {
				return b
			}
		}
		return merged
	}
	p := Policy{
		Sign:        block("dkim-sign").Bool("dkim-sign"),
		Algorithm:   block("dkim-algorithm").String("dkim-algorithm"),
		HeaderCanon: Canon(block("dkim-headers-canon").String("dkim-headers-canon")),
		BodyCanon:   Canon(block("dkim-body-canon").String("dkim-body-canon")),
		Identity:    block("dkim-identity").String("dkim-identity"),
		Fallback:    block("dkim-identity-fallback").String("dkim-identity-fallback"),
		Expire:      block("dkim-expire-after").Duration("dkim-expire-after"),
		Headers:     block("dkim-sign-headers").Strings("dkim-sign-headers"),
		Oversign:    block("dkim-oversign-headers").Strings("dkim-oversign-headers"),
	}
	if len(p.Oversign) == 1 && strings.EqualFold(p.Oversign[0], "none") {
		p.Oversign = nil
	}
	return p
}

// KeysFor returns the keys that may sign for identity domain dom through
// vmta, best first: keys naming dom, then its parent domains, the virtual
// MTA's domain-key lines before the global ones at each step; then
// wildcard (*) keys, the virtual MTA's first, which sign with d=dom.
// algo, when not "", keeps only keys of that algorithm.
func KeysFor(cfg *config.Config, vmta, dom, algo string) []*Key {
	dom = strings.ToLower(strings.TrimSuffix(dom, "."))
	if dom == "" {
		return nil
	}
	var blocks [][]config.DomainKey
	if vb := cfg.VMTA(vmta); vb != nil && vb.Kind == config.KindVMTA {
		blocks = append(blocks, vb.DomainKeys("domain-key"))
	}
	blocks = append(blocks, cfg.Global().DomainKeys("domain-key"))
	var out []*Key
	add := func(k config.DomainKey, d string) {
		if key, err := NewKey(k.Selector, d, k.Signer); err == nil && (algo == "" || key.Algo == algo) {
			out = append(out, key)
		}
	}
	for d := dom; ; {
		for _, ks := range blocks {
			for _, k := range ks {
				if k.Domain == d {
					add(k, d)
				}
			}
		}
		_, rest, ok := strings.Cut(d, ".")
		if !ok || !strings.Contains(rest, ".") {
			break // stop above the top-level domain: never sign for "com"
		}
		d = rest
	}
	if strings.Contains(dom, ".") {
		for _, ks := range blocks {
			for _, k := range ks {
				if k.Domain == "*" {
					add(k, dom)
				}
			}
		}
	}
	return out
}

// Plan decides how content, sent to domain through vmta, is signed: nil
// params when dkim-sign is off; ErrNoKey (wrapped) when it is on and no
// key matches.
func Plan(cfg *config.Config, vmta, domain string, content []byte) (*Params, error) {
	pol := PolicyFor(cfg, vmta, domain)
	if !pol.Sign {
		return nil, nil
	}
	fields, _ := splitHeader(content)
	id, idDom := identity(pol.Identity, fields, content)
	key := first(KeysFor(cfg, vmta, idDom, pol.Algorithm))
	if key == nil && pol.Fallback != "" {
		id, idDom = identity(pol.Fallback, nil, nil)
		key = first(KeysFor(cfg, vmta, idDom, pol.Algorithm))
	}
	if key == nil {
		what := idDom
		if what == "" {
			what = "(no " + pol.Identity + " address in the message)"
		}
		queue := domain
		if vmta != "" {
			queue += "/" + vmta
		}
		return nil, fmt.Errorf("dkim: %w: identity %s, queue %s", ErrNoKey, what, queue)
	}
	p := &Params{Key: key, HeaderCanon: pol.HeaderCanon, BodyCanon: pol.BodyCanon,
		Headers: pol.Headers, Oversign: pol.Oversign, Expire: pol.Expire}
	// i= only when it says more than d= does: a subdomain, or a fixed
	// address the operator chose.
	if idDom != key.Domain {
		p.Identity = "@" + idDom
	}
	if strings.Contains(pol.Identity, "@") && !strings.HasPrefix(pol.Identity, "@") && id == pol.Identity {
		p.Identity = id
	}
	return p, nil
}

// SignFor signs content for delivery to domain through vmta as cfg says:
// the content unchanged when dkim-sign is off, with one DKIM-Signature
// prepended when it is on (after Options.Convert). On ErrNoKey the content
// is returned unchanged with the error.
func (s *Signer) SignFor(cfg *config.Config, vmta, domain string, content []byte, now time.Time) ([]byte, error) {
	p, err := Plan(cfg, vmta, domain, content)
	if err != nil {
		return content, err
	}
	if p == nil {
		return content, nil
	}
	if s.convert != nil {
		if out, changed, err := s.convert(content); err == nil && changed {
			content = out
		}
	}
	return s.Sign(content, p, now)
}

func first(ks []*Key) *Key {
	if len(ks) == 0 {
		return nil
	}
	return ks[0]
}

// identity resolves a dkim-identity rule to an address (or @domain) and
// its lower-case domain; both "" when the message has no such address.
func identity(rule string, fields []field, content []byte) (string, string) {
	var id string
	switch rule {
	case "sender-or-from":
		if id = headerAddress(fields, content, "sender"); id == "" {
			id = headerAddress(fields, content, "from")
		}
	case "from", "sender":
		id = headerAddress(fields, content, rule)
	default:
		id = rule
	}
	at := strings.LastIndexByte(id, '@')
	if at < 0 {
		return "", ""
	}
	return id, strings.ToLower(strings.TrimSuffix(id[at+1:], "."))
}

// headerAddress returns the first address of the last header field name
// (the one a reader sees last is the one signed first; there should be
// only one).
func headerAddress(fields []field, content []byte, name string) string {
	for i := len(fields) - 1; i >= 0; i-- {
		f := fields[i]
		if !strings.EqualFold(string(f.name), name) {
			continue
		}
		v := canonHeader(nil, content, f, Relaxed)
		v = v[len(f.name)+1 : len(v)-2]
		if as, err := mail.ParseAddressList(string(v)); err == nil && len(as) > 0 {
			return as[0].Address
		}
		return looseAddress(string(v))
	}
	return ""
}

// looseAddress finds local@domain in a value net/mail refuses (raw 8-bit
// display names, odd quoting): the text in the last <...>, else the word
// holding an @.
func looseAddress(v string) string {
	if i := strings.LastIndexByte(v, '<'); i >= 0 {
		if j := strings.IndexByte(v[i:], '>'); j > 0 {
			return strings.TrimSpace(v[i+1 : i+j])
		}
	}
	for _, w := range strings.FieldsFunc(v, func(r rune) bool { return r == ' ' || r == ',' || r == ';' }) {
		if strings.Contains(w, "@") {
			return strings.Trim(w, "<>\"()")
		}
	}
	return ""
}

// Hook returns the function for qmgr.Options.Sign. A message whose
// identity has no key goes out unsigned and is logged through logf (an
// error there would defer it again and again); any other failure is
// returned, and the queue manager defers the recipients. now nil =
// time.Now.
func (s *Signer) Hook(logf func(format string, args ...any), now func() time.Time) func(*config.Config, spool.QueueKey, []byte) ([]byte, error) {
	if now == nil {
		now = time.Now
	}
	return func(cfg *config.Config, q spool.QueueKey, content []byte) ([]byte, error) {
		out, err := s.SignFor(cfg, q.VMTA, q.Domain, content, now())
		if errors.Is(err, ErrNoKey) {
			if logf != nil {
				logf("%v; sent unsigned", err)
			}
			return content, nil
		}
		return out, err
	}
}
