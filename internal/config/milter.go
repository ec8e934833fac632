package config

import (
	"fmt"
	"strings"

	"github.com/sluicemta/sluice/milter"
)

// Milters returns the <milter> blocks in file order.
func (c *Config) Milters() []*Block { return append([]*Block(nil), c.milters...) }

// Milter returns the <milter> block named name, or nil.
func (c *Config) Milter(name string) *Block {
	for _, b := range c.milters {
		if b.Name == name {
			return b
		}
	}
	return nil
}

// registerMilter files a <milter NAME> block; false skips it.
func (p *parser) registerMilter(b *Block) bool {
	if strings.ContainsAny(b.Name, " \t,") {
		p.errorf(b.File, b.Line, "<milter %s>: the name must be one word without commas", b.Name)
		return false
	}
	if o := p.cfg.Milter(b.Name); o != nil {
		p.errorf(b.File, b.Line, "<milter %s> repeats the one at %s:%d", b.Name, o.File, o.Line)
		return false
	}
	p.cfg.milters = append(p.cfg.milters, b)
	return true
}

// finishMilters checks that every milter has a socket and that every
// chain names milters that exist, each once.
func (p *parser) finishMilters() {
	c := p.cfg
	for _, m := range c.milters {
		if len(m.vals["socket"]) == 0 && !p.bad[m]["socket"] {
			p.errorf(m.File, m.Line, "<milter %s> needs a socket (inet:HOST:PORT or unix:PATH)", m.Name)
		}
	}
	blocks := append([]*Block{c.global}, c.cidrs...)
	blocks = append(blocks, mapValues(c.named)...)
	for _, b := range blocks {
		for _, name := range []string{"smtpd-milters", "non-smtpd-milters"} {
			for _, e := range b.vals[name] {
				seen := map[string]bool{}
				for _, n := range e.v.([]string) {
					if c.Milter(n) == nil {
						p.errorf(e.file, e.line, "%s: no <milter %s>", name, n)
					} else if seen[n] {
						p.errorf(e.file, e.line, "%s: %s is named twice", name, n)
					}
					seen[n] = true
				}
			}
		}
	}
}

func checkMilterSocket(v any) string {
	if _, _, err := milter.ParseSocket(v.(string)); err != nil {
		return "socket: " + err.Error()
	}
	return ""
}

func checkMilterProtocol(v any) string {
	switch n := v.(int64); n {
	case 2, 3, 4, 6:
		return ""
	default:
		return fmt.Sprintf("protocol %d is not 2, 3, 4 or 6", n)
	}
}
