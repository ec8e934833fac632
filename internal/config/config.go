// Package config reads sluice's configuration: PowerMTA's syntax
// (/etc/pmta/config) checked against one typed table of directives
// (table.go), which also drives `--check`, reload and sluice.conf(5).
//
// A *Config is an immutable snapshot. Store swaps snapshots atomically on
// reload; work in flight keeps the snapshot it started with.
package config

import (
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"strings"
)

// DefaultPath is where the config is read when neither --config nor
// SLUICE_CONFIG names one: PowerMTA's own location.
const DefaultPath = "/etc/pmta/config"

// ExitInvalid is the exit status for an invalid config (EX_CONFIG).
const ExitInvalid = 78

// Locate returns the config path: flagValue, else $SLUICE_CONFIG, else
// DefaultPath.
func Locate(flagValue string) string {
	if flagValue != "" {
		return flagValue
	}
	if env := os.Getenv("SLUICE_CONFIG"); env != "" {
		return env
	}
	return DefaultPath
}

// Error is one problem found in a config file. Line is 0 when the problem
// concerns the file as a whole (it cannot be read).
type Error struct {
	File string
	Line int
	Msg  string
}

func (e *Error) Error() string {
	if e.Line == 0 {
		return e.File + ": " + e.Msg
	}
	return e.File + ":" + strconv.Itoa(e.Line) + ": " + e.Msg
}

// Errors is every problem found in one load, in file order.
type Errors []*Error

func (es Errors) Error() string {
	var b strings.Builder
	for i, e := range es {
		if i > 0 {
			b.WriteByte('\n')
		}
		b.WriteString(e.Error())
	}
	return b.String()
}

// Config is one parsed and validated configuration. It is never modified
// after Load returns it, so it may be shared freely between goroutines.
type Config struct {
	file       string
	warnings   Errors // acceptable but unwise settings (a world-readable key)
	global     *Block
	cidrs      []*Block          // CIDR sources, most specific first
	named      map[string]*Block // {auth}, {name}
	users      []*Block
	vmtas      []*Block
	pools      []*Block
	acct       []*Block
	listeners  []Listener
	byName     map[string]*Block // virtual MTAs and pools share one namespace
	userByName map[string]*Block
	poolsOf    map[string][]*Block // virtual MTA name -> pools holding it
	// patternLists holds the <smtp-pattern-list> blocks by name.
	patternLists map[string]*Block
	// milters holds the <milter> blocks in file order (milter.go).
	milters []*Block
}

// File returns the path the config was read from.
func (c *Config) File() string { return c.file }

// Warnings returns what is accepted but unwise (a DKIM key readable by
// everyone), each as `FILE:LINE: warning: ...`; log them at every load.
func (c *Config) Warnings() Errors { return slices.Clone(c.warnings) }

// Global returns the top-level directives.
func (c *Config) Global() *Block { return c.global }

// Listeners returns every address to accept SMTP on (smtp-listener and
// smtp-port lines, or the default 0/0:25).
func (c *Config) Listeners() []Listener { return slices.Clone(c.listeners) }

// TLSCertificate returns the loaded smtp-server-tls-certificate, or nil.
func (c *Config) TLSCertificate() *tls.Certificate {
	if !c.global.IsSet("smtp-server-tls-certificate") {
		return nil
	}
	return c.global.CertKey("smtp-server-tls-certificate").Cert
}

// VMTAs returns the <virtual-mta> blocks in file order.
func (c *Config) VMTAs() []*Block { return slices.Clone(c.vmtas) }

// Pools returns the <virtual-mta-pool> blocks in file order.
func (c *Config) Pools() []*Block { return slices.Clone(c.pools) }

// VMTA returns the <virtual-mta> or <virtual-mta-pool> named name, or nil.
// Check Kind to tell them apart.
func (c *Config) VMTA(name string) *Block { return c.byName[name] }

// SMTPUsers returns the <smtp-user> blocks in file order.
func (c *Config) SMTPUsers() []*Block { return slices.Clone(c.users) }

// SMTPUser returns the <smtp-user> named name, or nil.
func (c *Config) SMTPUser(name string) *Block { return c.userByName[name] }

// AcctFiles returns the <acct-file> blocks in file order; Name is the path.
func (c *Config) AcctFiles() []*Block { return slices.Clone(c.acct) }

// Source returns the merged <source> settings for a client at ip: the most
// specific CIDR block containing ip (0/0 is the catch-all; as in PowerMTA
// the less specific ones do not add to it), and on top of it, when authUser
// is not "", the user's source {name} block or else <source {auth}>.
// Unset directives read as their defaults.
func (c *Config) Source(ip netip.Addr, authUser string) *Block {
	ip = ip.Unmap()
	v := &Block{Kind: KindSource, Name: ip.String()}
	if authUser != "" {
		if u := c.userByName[authUser]; u != nil && u.IsSet("source") {
			if b := c.named[u.String("source")]; b != nil {
				v.layers = append(v.layers, b)
			}
		} else if b := c.named["{auth}"]; b != nil {
			v.layers = append(v.layers, b)
		}
	}
	for _, b := range c.cidrs {
		if b.catchAll || b.prefix.Contains(ip) {
			v.layers = append(v.layers, b)
			break
		}
	}
	return v
}

// Domain returns the merged <domain> settings for mail to domain sent
// through the virtual MTA (or pool) named vmta ("" for none). Most specific
// first: <domain d> in the virtual MTA, <domain *> in it, the same in each
// pool that holds it (or in the pool itself when vmta names a pool), global
// <domain d>, global <domain *>, then the defaults.
func (c *Config) Domain(vmta, domain string) *Block {
	domain = normDomain(domain)
	v := &Block{Kind: KindDomain, Name: domain, layers: make([]*Block, 0, 8)}
	add := func(owner *Block) {
		if b := owner.domains[domain]; b != nil {
			v.layers = append(v.layers, b)
		}
		if b := owner.domains["*"]; b != nil {
			v.layers = append(v.layers, b)
		}
	}
	if b := c.byName[vmta]; b != nil {
		add(b)
		for _, p := range c.poolsOf[vmta] {
			add(p)
		}
	}
	add(c.global)
	return v
}

// Check loads path and writes every error to w, one `FILE:LINE: message`
// per line (for a valid config, its warnings). It returns 0 for a valid
// config and ExitInvalid otherwise; both
// `sluiced --check` and `sluice check config` call it.
func Check(path string, w io.Writer) int {
	c, err := Load(path)
	if err == nil {
		for _, e := range c.warnings {
			fmt.Fprintln(w, e.Error())
		}
		return 0
	}
	var es Errors
	if errors.As(err, &es) {
		for _, e := range es {
			fmt.Fprintln(w, e.Error())
		}
	} else {
		fmt.Fprintln(w, err)
	}
	return ExitInvalid
}

// Load reads, parses and validates the config at path. The error, if any,
// is an Errors holding every problem found.
func Load(path string) (*Config, error) {
	src, err := os.ReadFile(path)
	if err != nil {
		return nil, Errors{{File: path, Msg: fmt.Sprintf("cannot read config: %v", errors.Unwrap(err))}}
	}
	return Parse(path, src)
}

// Parse parses src as if read from the file name; include paths are
// relative to name's directory.
func Parse(name string, src []byte) (*Config, error) {
	return parse(name, src, osFS)
}

func normDomain(d string) string { return strings.ToLower(strings.TrimSuffix(d, ".")) }
