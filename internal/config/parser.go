package config

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

// maxIncludeDepth stops runaway include chains that are not cycles (a
// glob that keeps matching new files, say).
const maxIncludeDepth = 16

type parser struct {
	cfg      *Config
	errs     Errors
	read     func(string) ([]byte, error)
	glob     func(string) ([]string, error)
	includes []string // absolute paths of the files being read, outermost first
	macros   map[string][]string
	stack    []*Block // open blocks; stack[0] is the global level
	srcSeen  map[string]*Block
	skip     int // depth inside a block being skipped after an error
	// where the outermost skipped block opened
	skipFile, skipKind string
	skipLine           int
	// bad records directives whose value was refused, so that checks of
	// the whole config do not report them a second time as missing.
	bad map[*Block]map[string]bool
	// fileRank orders files as first read, for sorting errors.
	fileRank map[string]int
}

func (p *parser) markBad(b *Block, name string) {
	if p.bad[b] == nil {
		p.bad[b] = map[string]bool{}
	}
	p.bad[b][name] = true
}

// fsys is what the parser needs from the file system, replaceable in tests
// and the fuzz target.
type fsys struct {
	read     func(string) ([]byte, error)
	glob     func(string) ([]string, error)
	hostname func() (string, error)
}

var osFS = fsys{read: os.ReadFile, glob: filepath.Glob, hostname: os.Hostname}

func parse(name string, src []byte, fs fsys) (*Config, error) {
	g := newBlock(KindGlobal, "", name, 0)
	g.domains = map[string]*Block{}
	p := &parser{
		cfg: &Config{
			file:       name,
			global:     g,
			named:      map[string]*Block{},
			byName:     map[string]*Block{},
			userByName: map[string]*Block{},
		},
		read:     fs.read,
		glob:     fs.glob,
		macros:   map[string][]string{},
		stack:    []*Block{g},
		srcSeen:  map[string]*Block{},
		bad:      map[*Block]map[string]bool{},
		fileRank: map[string]int{},
	}
	p.file(name, src)
	p.finish(fs.hostname)
	if len(p.errs) > 0 {
		sortErrors(p.errs, p.fileRank)
		return nil, p.errs
	}
	return p.cfg, nil
}

func (p *parser) errorf(file string, line int, format string, args ...any) {
	p.errs = append(p.errs, &Error{File: file, Line: line, Msg: fmt.Sprintf(format, args...)})
}

func (p *parser) top() *Block { return p.stack[len(p.stack)-1] }

// file parses one file (the main one or an include). Blocks must close in
// the file that opened them.
func (p *parser) file(name string, src []byte) {
	abs, err := filepath.Abs(name)
	if err != nil {
		abs = name
	}
	p.includes = append(p.includes, abs)
	if _, ok := p.fileRank[name]; !ok {
		p.fileRank[name] = len(p.fileRank)
	}
	defer func() { p.includes = p.includes[:len(p.includes)-1] }()
	depth, skip := len(p.stack), p.skip

	for i, line := range strings.Split(string(src), "\n") {
		p.line(name, i+1, line)
	}
	for len(p.stack) > depth {
		b := p.top()
		p.errorf(b.File, b.Line, "<%s %s> is not closed before the end of %s", b.Kind, b.Name, name)
		p.stack = p.stack[:len(p.stack)-1]
	}
	if p.skip > skip {
		p.errorf(p.skipFile, p.skipLine, "<%s> is not closed before the end of %s", p.skipKind, name)
		p.skip = skip
	}
}

// startSkip skips the block just opened at file:n, already reported, so its
// contents do not each produce an error.
func (p *parser) startSkip(file string, n int, kind string) {
	p.skip = 1
	p.skipFile, p.skipLine, p.skipKind = file, n, kind
}

func stripComment(s string) string {
	for i := 0; i < len(s); i++ {
		if s[i] == '#' && (i == 0 || s[i-1] == ' ' || s[i-1] == '\t') {
			return s[:i]
		}
	}
	return s
}

// unquote removes one pair of double quotes around a whole value, as in
// PowerMTA's <acct-file "|command">.
func unquote(s string) string {
	if len(s) >= 2 && s[0] == '"' && s[len(s)-1] == '"' {
		return s[1 : len(s)-1]
	}
	return s
}

func (p *parser) line(file string, n int, raw string) {
	s := strings.TrimSpace(stripComment(strings.TrimSuffix(raw, "\r")))
	if s == "" {
		return
	}
	if p.skip > 0 {
		switch {
		case strings.HasPrefix(s, "</"):
			p.skip--
		case strings.HasPrefix(s, "<") && strings.HasSuffix(s, ">"):
			p.skip++
		}
		return
	}
	switch {
	case strings.HasPrefix(s, "</"):
		p.closeBlock(file, n, s)
	case strings.HasPrefix(s, "<"):
		p.openBlock(file, n, s)
	default:
		p.directive(file, n, s)
	}
}

func (p *parser) closeBlock(file string, n int, s string) {
	if !strings.HasSuffix(s, ">") {
		// Report it, then read it as meant so one slip is one error.
		p.errorf(file, n, "%q: a block end needs a closing >", s)
		s += ">"
	}
	kind := strings.TrimSpace(s[2 : len(s)-1])
	if len(p.stack) == 1 {
		p.errorf(file, n, "</%s> closes no open block", kind)
		return
	}
	b := p.top()
	if b.Kind != kind {
		p.errorf(file, n, "</%s> does not match <%s %s> opened at %s:%d", kind, b.Kind, b.Name, b.File, b.Line)
		if slices.ContainsFunc(p.stack[1:], func(o *Block) bool { return o.Kind == kind }) {
			// Pop through the forgotten end tags so later lines land right.
			for p.top().Kind != kind {
				p.stack = p.stack[:len(p.stack)-1]
			}
			p.stack = p.stack[:len(p.stack)-1]
		}
		return
	}
	p.stack = p.stack[:len(p.stack)-1]
}

func (p *parser) openBlock(file string, n int, s string) {
	if !strings.HasSuffix(s, ">") {
		p.errorf(file, n, "%q: a block start needs a closing >", s)
		s += ">"
	}
	kind, arg, _ := strings.Cut(strings.TrimSpace(s[1:len(s)-1]), " ")
	arg = unquote(strings.TrimSpace(arg))
	var bk *BlockKind
	for i := range Blocks {
		if Blocks[i].Kind == kind && kind != KindGlobal {
			bk = &Blocks[i]
		}
	}
	if bk == nil {
		switch {
		case slices.Contains(powermtaBlocks, kind):
			p.errorf(file, n, "PowerMTA block <%s> is not supported by sluice", kind)
		default:
			p.errorf(file, n, "unknown block <%s>%s", kind, suggest(kind, blockNames()))
		}
		p.startSkip(file, n, kind)
		return
	}
	parent := p.top()
	if !slices.Contains(bk.Parents, parent.Kind) {
		where := "at the top level"
		if parent.Kind != KindGlobal {
			where = "inside <" + parent.Kind + ">"
		}
		p.errorf(file, n, "<%s> is not allowed %s", kind, where)
		p.startSkip(file, n, kind)
		return
	}
	if arg == "" {
		p.errorf(file, n, "<%s> needs an argument (%s)", kind, bk.Arg)
		p.startSkip(file, n, kind)
		return
	}
	b := newBlock(kind, arg, file, n)
	if !p.register(parent, b) {
		p.startSkip(file, n, kind)
		return
	}
	p.stack = append(p.stack, b)
}

// register files a new block in the config, reporting a bad argument or a
// duplicate. It returns false when the block is to be skipped.
func (p *parser) register(parent, b *Block) bool {
	c := p.cfg
	file, n := b.File, b.Line
	switch b.Kind {
	case KindSource:
		pfx, named, err := parseSourceArg(b.Name)
		if err != nil {
			p.errorf(file, n, "%v", err)
			return false
		}
		key := b.Name
		if !named {
			if b.Name == "0/0" {
				b.catchAll = true
			} else {
				b.prefix = pfx
				key = pfx.String()
			}
		}
		if o := p.srcSeen[key]; o != nil {
			p.errorf(file, n, "<source %s> repeats <source %s> at %s:%d", b.Name, o.Name, o.File, o.Line)
			return false
		}
		p.srcSeen[key] = b
		if named {
			c.named[b.Name] = b
		} else {
			c.cidrs = append(c.cidrs, b)
			// Most specific first; 0/0 (catchAll, zero prefix) last.
			slices.SortStableFunc(c.cidrs, func(x, y *Block) int { return bits(y) - bits(x) })
		}
	case KindSMTPUser:
		if strings.ContainsAny(b.Name, " \t") {
			p.errorf(file, n, "<smtp-user %s>: the name must be one word", b.Name)
			return false
		}
		if o := c.userByName[b.Name]; o != nil {
			p.errorf(file, n, "<smtp-user %s> repeats the one at %s:%d", b.Name, o.File, o.Line)
			return false
		}
		c.userByName[b.Name] = b
		c.users = append(c.users, b)
	case KindVMTA, KindPool:
		if strings.ContainsAny(b.Name, " \t/") {
			p.errorf(file, n, "<%s %s>: the name must be one word without /", b.Kind, b.Name)
			return false
		}
		if o := c.byName[b.Name]; o != nil {
			p.errorf(file, n, "<%s %s> reuses the name of <%s> at %s:%d", b.Kind, b.Name, o.Kind, o.File, o.Line)
			return false
		}
		b.domains = map[string]*Block{}
		c.byName[b.Name] = b
		if b.Kind == KindVMTA {
			c.vmtas = append(c.vmtas, b)
		} else {
			c.pools = append(c.pools, b)
		}
	case KindPatterns:
		if o := c.patternLists[b.Name]; o != nil {
			p.errorf(file, n, "<smtp-pattern-list %s> repeats the one at %s:%d", b.Name, o.File, o.Line)
			return false
		}
		if c.patternLists == nil {
			c.patternLists = map[string]*Block{}
		}
		c.patternLists[b.Name] = b
	case KindMilter:
		if !p.registerMilter(b) {
			return false
		}
	case KindAcctFile:
		if strings.HasPrefix(b.Name, "|") {
			p.errorf(file, n, "<acct-file %s>: accounting to a pipe is not supported by sluice; write a file", b.Name)
			return false
		}
		for _, o := range c.acct {
			if o.Name == b.Name {
				p.errorf(file, n, "<acct-file %s> repeats the one at %s:%d", b.Name, o.File, o.Line)
				return false
			}
		}
		c.acct = append(c.acct, b)
	case KindDomain:
		names := []string{b.Name}
		if strings.HasPrefix(b.Name, "$") {
			m, ok := p.macros[b.Name[1:]]
			if !ok {
				p.errorf(file, n, "<domain %s>: domain-macro %s is not defined (define it before use)", b.Name, b.Name[1:])
				return false
			}
			names = m
		}
		ok := true
		for _, d := range names {
			d = normDomain(d)
			if d != "*" && !validHostName(d) {
				p.errorf(file, n, "<domain %s>: %q is not a domain name or *", b.Name, d)
				ok = false
				continue
			}
			if o := parent.domains[d]; o != nil {
				p.errorf(file, n, "<domain %s> repeats <domain %s> at %s:%d", d, o.Name, o.File, o.Line)
				ok = false
				continue
			}
			parent.domains[d] = b
		}
		return ok
	}
	return true
}

func bits(b *Block) int {
	if b.catchAll {
		return -1
	}
	return b.prefix.Bits()
}

func (p *parser) directive(file string, n int, s string) {
	name, value := s, ""
	if i := strings.IndexAny(s, " \t"); i >= 0 {
		name, value = s[:i], s[i+1:]
	}
	value = unquote(strings.TrimSpace(value))
	b := p.top()
	switch name {
	case "include":
		p.include(file, n, value)
		return
	case "domain-macro":
		p.domainMacro(file, n, value)
		return
	}
	d := lookup(b.Kind, name)
	if d == nil {
		p.unknown(file, n, name, b)
		return
	}
	if value == "" {
		p.errorf(file, n, "%s needs a value (%s)", name, typeDoc(d))
		return
	}
	v, err := parseValue(d, value, filepath.Dir(file))
	if err != nil {
		p.markBad(b, name)
		if ce, ok := err.(checkError); ok {
			p.errorf(file, n, "%s", string(ce))
		} else {
			p.errorf(file, n, "%s: %v", name, err)
		}
		return
	}
	if es := b.vals[name]; len(es) > 0 && !d.Repeatable {
		p.errorf(file, n, "%s is already set at %s:%d", name, es[0].file, es[0].line)
		return
	}
	b.vals[name] = append(b.vals[name], entry{v: v, file: file, line: n})
	if w, ok := v.(interface{ Warning() string }); ok && w.Warning() != "" {
		p.cfg.warnings = append(p.cfg.warnings, &Error{File: file, Line: n, Msg: "warning: " + w.Warning()})
	}
}

func (p *parser) unknown(file string, n int, name string, b *Block) {
	if ds := byName[name]; len(ds) > 0 {
		var kinds []string
		for _, d := range ds {
			for _, k := range d.Blocks {
				if k == KindGlobal {
					kinds = append(kinds, "the top level")
				} else {
					kinds = append(kinds, "<"+k+">")
				}
			}
		}
		where := "at the top level"
		if b.Kind != KindGlobal {
			where = "in <" + b.Kind + ">"
		}
		p.errorf(file, n, "%s is not allowed %s (only in %s)", name, where, strings.Join(kinds, ", "))
		return
	}
	if slices.Contains(powermtaDirectives, name) {
		p.errorf(file, n, "PowerMTA directive %s is not supported by sluice", name)
		return
	}
	var known []string
	for k := range byKind[b.Kind] {
		known = append(known, k)
	}
	if b.Kind == KindGlobal {
		known = append(known, "include", "domain-macro")
	}
	p.errorf(file, n, "unknown directive %s%s", name, suggest(name, known))
}

func (p *parser) include(file string, n int, value string) {
	if value == "" {
		p.errorf(file, n, "include needs a file name")
		return
	}
	path := value
	if !filepath.IsAbs(path) {
		path = filepath.Join(filepath.Dir(file), path)
	}
	paths := []string{path}
	if strings.ContainsAny(path, "*?[") {
		m, err := p.glob(path)
		if err != nil {
			p.errorf(file, n, "include %s: %v", value, err)
			return
		}
		paths = m // no match is no error: an empty conf.d is normal
	}
	for _, path := range paths {
		abs, err := filepath.Abs(path)
		if err != nil {
			abs = path
		}
		if i := slices.Index(p.includes, abs); i >= 0 {
			chain := append(slices.Clone(p.includes[i:]), abs)
			p.errorf(file, n, "include cycle: %s", strings.Join(chain, " -> "))
			continue
		}
		if len(p.includes) >= maxIncludeDepth {
			p.errorf(file, n, "include %s: includes nested more than %d deep", value, maxIncludeDepth)
			continue
		}
		src, err := p.read(path)
		if err != nil {
			p.errorf(file, n, "include %s: %v", value, err)
			continue
		}
		p.file(path, src)
	}
}

func (p *parser) domainMacro(file string, n int, value string) {
	if p.top().Kind != KindGlobal {
		p.errorf(file, n, "domain-macro is only allowed at the top level")
		return
	}
	name, list, _ := strings.Cut(value, " ")
	list = strings.TrimSpace(list)
	if name == "" || list == "" {
		p.errorf(file, n, "domain-macro needs a name and a list: domain-macro NAME a.com,b.com")
		return
	}
	if _, ok := p.macros[name]; ok {
		p.errorf(file, n, "domain-macro %s is already defined", name)
		return
	}
	domains := splitList(list)
	for _, d := range domains {
		if !validHostName(d) {
			p.errorf(file, n, "domain-macro %s: %q is not a domain name", name, d)
			return
		}
	}
	p.macros[name] = domains
}

func blockNames() []string {
	var out []string
	for _, b := range Blocks {
		if b.Kind != KindGlobal {
			out = append(out, b.Kind)
		}
	}
	return out
}

// suggest returns ` (did you mean X?)` for the known name nearest to name,
// when it is near enough to be a typo.
func suggest(name string, known []string) string {
	best, bestD := "", 1<<30
	slices.Sort(known)
	for _, k := range known {
		if d := editDistance(name, k); d < bestD {
			best, bestD = k, d
		}
	}
	if best == "" || bestD > max(2, len(name)/4) {
		return ""
	}
	return " (did you mean " + best + "?)"
}

func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

// finish fills computed defaults and checks what spans blocks: references,
// listeners, limits that must agree.
func (p *parser) finish(hostname func() (string, error)) {
	c, g := p.cfg, p.cfg.global
	if !g.IsSet("host-name") {
		h, err := hostname()
		if err != nil || !validHostName(h) {
			p.errorf(c.file, 0, "host-name is not set and the system host name %q cannot be used; set host-name", h)
		} else {
			g.vals["host-name"] = []entry{{v: h, file: c.file}}
		}
	} else if h := g.String("host-name"); !validHostName(h) {
		f, l := g.Where("host-name")
		p.errorf(f, l, "host-name: %q is not a host name", h)
	}
	if !g.IsSet("postmaster") && g.IsSet("host-name") {
		g.vals["postmaster"] = []entry{{v: "postmaster@" + g.String("host-name"), file: c.file}}
	} else if pm := g.String("postmaster"); g.IsSet("postmaster") && !strings.Contains(pm, "@") {
		f, l := g.Where("postmaster")
		p.errorf(f, l, "postmaster: %q is not a mail address", pm)
	}
	for _, e := range g.vals["relay-domain"] {
		if d := e.v.(string); !validHostName(d) {
			p.errorf(e.file, e.line, "relay-domain: %q is not a domain name", d)
		}
	}

	// Listeners: smtp-listener lines plus smtp-port as 0/0:N.
	seen := map[Listener]entry{}
	var ls []Listener
	addL := func(l Listener, e entry) {
		if o, dup := seen[l]; dup {
			p.errorf(e.file, e.line, "listener %s is already set at %s:%d", l.Network(), o.file, o.line)
			return
		}
		seen[l] = e
		ls = append(ls, l)
	}
	for _, e := range g.vals["smtp-listener"] {
		addL(e.v.(Listener), e)
	}
	for _, e := range g.vals["smtp-port"] {
		addL(Listener{Port: int(e.v.(int64))}, e)
	}
	if len(ls) == 0 {
		ls = []Listener{defaults[lookup(KindGlobal, "smtp-listener")].(Listener)}
	}
	c.listeners = ls

	for _, s := range append(slices.Clone(c.cidrs), mapValues(c.named)...) {
		for _, e := range s.vals["default-virtual-mta"] {
			if c.byName[e.v.(string)] == nil {
				p.errorf(e.file, e.line, "default-virtual-mta: no <virtual-mta %s> or <virtual-mta-pool %s>", e.v, e.v)
			}
		}
	}
	c.poolsOf = map[string][]*Block{}
	for _, pool := range c.pools {
		for _, e := range pool.vals["virtual-mta"] {
			if name := e.v.(string); !slices.Contains(c.poolsOf[name], pool) {
				c.poolsOf[name] = append(c.poolsOf[name], pool)
			}
		}
		if len(pool.vals["virtual-mta"]) == 0 && !p.bad[pool]["virtual-mta"] {
			p.errorf(pool.File, pool.Line, "<virtual-mta-pool %s> has no virtual-mta", pool.Name)
		}
		members := map[string]bool{}
		for _, e := range pool.vals["virtual-mta"] {
			name := e.v.(string)
			switch b := c.byName[name]; {
			case b == nil:
				p.errorf(e.file, e.line, "virtual-mta: no <virtual-mta %s>", name)
			case b.Kind != KindVMTA:
				p.errorf(e.file, e.line, "virtual-mta: %s is a pool; pools cannot nest", name)
			case members[name]:
				p.errorf(e.file, e.line, "virtual-mta: %s is listed twice", name)
			}
			members[name] = true
		}
	}
	for _, v := range c.vmtas {
		var v4, v6 *entry
		for i, e := range v.vals["smtp-source-host"] {
			slot := &v4
			if e.v.(SourceHost).IP.Is6() {
				slot = &v6
			}
			if *slot != nil {
				p.errorf(e.file, e.line, "smtp-source-host: <virtual-mta %s> already has a source address of this family at %s:%d", v.Name, (*slot).file, (*slot).line)
				continue
			}
			*slot = &v.vals["smtp-source-host"][i]
		}
	}
	for _, u := range c.users {
		if len(u.vals["password"]) == 0 && !p.bad[u]["password"] {
			p.errorf(u.File, u.Line, "<smtp-user %s> has no password", u.Name)
		}
		for _, e := range u.vals["source"] {
			if c.named[e.v.(string)] == nil {
				p.errorf(e.file, e.line, "source: no <source %s>", e.v)
			}
		}
	}

	// Per domain block: settings that contradict each other, and the DSN
	// lifetime, which must end before the mail it reports on would bounce.
	dsn := g.Duration("dsn-bounce-after")
	dsnFile, dsnLine := g.Where("dsn-bounce-after")
	dsnAt := "the default"
	if dsnLine > 0 {
		dsnAt = fmt.Sprintf("%s:%d", dsnFile, dsnLine)
	} else {
		dsnFile = c.file
	}
	if def := defaults[lookup(KindDomain, "bounce-after")].(time.Duration); dsn >= def {
		p.errorf(dsnFile, dsnLine, "dsn-bounce-after %s must be shorter than the default bounce-after %s", formatDuration(dsn), formatDuration(def))
	}
	for _, owner := range append([]*Block{g}, append(c.VMTAs(), c.Pools()...)...) {
		for _, d := range uniqueBlocks(owner.domains) {
			if len(d.vals["route"]) > 0 && len(d.vals["smtp-hosts"]) > 0 {
				e := d.vals["smtp-hosts"][0]
				p.errorf(e.file, e.line, "smtp-hosts and route both set in <domain %s>; use one", d.Name)
			}
			if d.IsSet("require-starttls") && d.Bool("require-starttls") && d.IsSet("use-starttls") && !d.Bool("use-starttls") {
				f, l := d.Where("require-starttls")
				p.errorf(f, l, "require-starttls yes contradicts use-starttls no in <domain %s>", d.Name)
			}
			if d.IsSet("bounce-after") && d.Duration("bounce-after") <= dsn {
				f, l := d.Where("bounce-after")
				p.errorf(f, l, "bounce-after %s must be longer than dsn-bounce-after %s (%s)", formatDuration(d.Duration("bounce-after")), formatDuration(dsn), dsnAt)
			}
		}
	}
	p.finishTraffic()
	p.finishMilters()
}

func mapValues(m map[string]*Block) []*Block {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	out := make([]*Block, 0, len(m))
	for _, k := range keys {
		out = append(out, m[k])
	}
	return out
}

// uniqueBlocks returns the distinct blocks of a domain map (a macro block
// is filed under each of its names), in file order.
func uniqueBlocks(m map[string]*Block) []*Block {
	var out []*Block
	for _, b := range m {
		if !slices.Contains(out, b) {
			out = append(out, b)
		}
	}
	slices.SortFunc(out, func(x, y *Block) int {
		if x.File != y.File {
			return strings.Compare(x.File, y.File)
		}
		return x.Line - y.Line
	})
	return out
}

// sortErrors orders errors by file (in the order files were first read)
// and line, so checks of the whole config that run after parsing appear
// where they belong.
func sortErrors(es Errors, rank map[string]int) {
	slices.SortStableFunc(es, func(a, b *Error) int {
		if a.File != b.File {
			return rank[a.File] - rank[b.File]
		}
		return a.Line - b.Line
	})
}
