package config

import (
	"fmt"
	"net/netip"
	"slices"
	"time"
)

// Block is one <kind name> block, the global level, or a merged view made
// by Config.Source and Config.Domain. Its typed accessors return the value
// set in the block (for a merged view, in its most specific layer) or the
// table's default. Asking for a directive the table does not have for the
// block's kind, or through the accessor of another type, panics: that is a
// programming error, and a silent zero would hide it. A Block belongs to an
// immutable snapshot: read its fields, never assign them.
type Block struct {
	Kind string
	Name string // the argument as written (after macro expansion for domains)
	File string
	Line int

	vals     map[string][]entry
	layers   []*Block          // merged view: most specific first
	domains  map[string]*Block // nested <domain> blocks by name, "*" included
	prefix   netip.Prefix      // <source CIDR>
	catchAll bool              // <source 0/0>
}

type entry struct {
	v    any
	file string
	line int
}

func newBlock(kind, name, file string, line int) *Block {
	return &Block{Kind: kind, Name: name, File: file, Line: line, vals: map[string][]entry{}}
}

// Domains returns the <domain> blocks nested in a <virtual-mta> or
// <virtual-mta-pool> (or, for Config.Global(), the global ones), by name.
func (b *Block) Domains() map[string]*Block {
	out := make(map[string]*Block, len(b.domains))
	for k, v := range b.domains {
		out[k] = v
	}
	return out
}

// IsSet reports whether name is set in the block (or any layer of a merged
// view) rather than read from the default.
func (b *Block) IsSet(name string) bool {
	b.directive(name)
	return len(b.entries(name)) > 0
}

// Where returns the file and line name was set at, or "", 0 for a default.
func (b *Block) Where(name string) (string, int) {
	b.directive(name)
	es := b.entries(name)
	if len(es) == 0 {
		return "", 0
	}
	return es[len(es)-1].file, es[len(es)-1].line
}

func (b *Block) entries(name string) []entry {
	if b.layers == nil {
		return b.vals[name]
	}
	for _, l := range b.layers {
		if es := l.vals[name]; len(es) > 0 {
			return es
		}
	}
	return nil
}

func (b *Block) directive(name string) *Directive {
	d := lookup(b.Kind, name)
	if d == nil {
		panic(fmt.Sprintf("config: no directive %q in <%s>", name, b.Kind))
	}
	return d
}

// values returns the entries of name (or its default as one entry),
// checking that its type is one of ts. It does not allocate: lookups run
// once per delivery.
func (b *Block) values(name string, accessor string, ts ...Type) (*Directive, []entry) {
	d := b.directive(name)
	if !slices.Contains(ts, d.Type) {
		panic(fmt.Sprintf("config: %s(%q): directive has type %s", accessor, name, d.Type))
	}
	if es := b.entries(name); len(es) > 0 {
		return d, es
	}
	return d, defaultEntries[d]
}

func last(es []entry) any {
	if len(es) == 0 {
		return nil
	}
	return es[len(es)-1].v
}

// Bool reads a yes|no directive.
func (b *Block) Bool(name string) bool {
	_, vs := b.values(name, "Bool", TBool)
	v, _ := last(vs).(bool)
	return v
}

// Int reads an integer directive (0 when unset without a default).
func (b *Block) Int(name string) int64 {
	_, vs := b.values(name, "Int", TInt)
	v, _ := last(vs).(int64)
	return v
}

// Size reads a size in bytes.
func (b *Block) Size(name string) int64 {
	_, vs := b.values(name, "Size", TSize)
	v, _ := last(vs).(int64)
	return v
}

// Duration reads one duration.
func (b *Block) Duration(name string) time.Duration {
	_, vs := b.values(name, "Duration", TDuration)
	v, _ := last(vs).(time.Duration)
	return v
}

// Durations reads a comma list of durations.
func (b *Block) Durations(name string) []time.Duration {
	_, vs := b.values(name, "Durations", TDurations)
	v, _ := last(vs).([]time.Duration)
	return slices.Clone(v)
}

// Rate reads a rate; the zero Rate means unlimited.
func (b *Block) Rate(name string) Rate {
	_, vs := b.values(name, "Rate", TRate)
	v, _ := last(vs).(Rate)
	return v
}

// String reads a one-word directive ("" when unset without a default).
func (b *Block) String(name string) string {
	d, vs := b.values(name, "String", TString, TEnum, TPasswordHash, TSourceRef)
	if d.Repeatable {
		panic(fmt.Sprintf("config: String(%q): directive is repeatable; use Strings", name))
	}
	v, _ := last(vs).(string)
	return v
}

// Strings reads a comma list, or every value of a repeatable one-word
// directive.
func (b *Block) Strings(name string) []string {
	d, vs := b.values(name, "Strings", TStrings, TRecordTypes, TString)
	if d.Type == TString && !d.Repeatable {
		panic(fmt.Sprintf("config: Strings(%q): directive takes one value; use String", name))
	}
	var out []string
	for _, e := range vs {
		switch v := e.v.(type) {
		case string:
			out = append(out, v)
		case []string:
			out = append(out, v...)
		}
	}
	return out
}

// HostPorts reads a route / smtp-hosts list.
func (b *Block) HostPorts(name string) []HostPort {
	_, vs := b.values(name, "HostPorts", THostPorts)
	v, _ := last(vs).([]HostPort)
	return slices.Clone(v)
}

// valuesOf returns the parsed values of a repeatable directive's lines,
// in order; the table guarantees their type.
func valuesOf[T any](vs []entry) []T {
	out := make([]T, 0, len(vs))
	for _, e := range vs {
		out = append(out, e.v.(T))
	}
	return out
}

// SourceHosts reads every smtp-source-host of a virtual MTA.
func (b *Block) SourceHosts(name string) []SourceHost {
	_, vs := b.values(name, "SourceHosts", TSourceHost)
	return valuesOf[SourceHost](vs)
}

// CertKey reads a loaded certificate pair (zero when unset).
func (b *Block) CertKey(name string) CertKey {
	_, vs := b.values(name, "CertKey", TCertKey)
	v, _ := last(vs).(CertKey)
	return v
}

// RecordFields reads every record-fields line of an <acct-file>.
func (b *Block) RecordFields(name string) []RecordFields {
	_, vs := b.values(name, "RecordFields", TRecordFields)
	return valuesOf[RecordFields](vs)
}

// Listeners reads every smtp-listener line.
func (b *Block) Listeners(name string) []Listener {
	_, vs := b.values(name, "Listeners", TListener)
	return valuesOf[Listener](vs)
}

var (
	byKind   = map[string]map[string]*Directive{}
	byName   = map[string][]*Directive{}
	defaults = map[*Directive]any{}
	// defaultEntries holds each default as the one entry an unset
	// directive reads.
	defaultEntries = map[*Directive][]entry{}
)

// init indexes the table and parses every default with its directive's own
// parser, so a bad default fails every test at once.
func init() {
	for i := range Directives {
		d := &Directives[i]
		for _, k := range d.Blocks {
			if byKind[k] == nil {
				byKind[k] = map[string]*Directive{}
			}
			if byKind[k][d.Name] != nil {
				panic("config: directive " + d.Name + " twice in <" + k + ">")
			}
			byKind[k][d.Name] = d
		}
		byName[d.Name] = append(byName[d.Name], d)
		if d.Default != "" {
			v, err := parseValue(d, d.Default, "")
			if err != nil {
				panic(fmt.Sprintf("config: default of %s: %v", d.Name, err))
			}
			defaults[d] = v
			defaultEntries[d] = []entry{{v: v}}
		}
	}
}

func lookup(kind, name string) *Directive { return byKind[kind][name] }
