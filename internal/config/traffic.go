package config

import (
	"fmt"
	"net/netip"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// Values of the traffic-shaping directives (issue #8): per-source-IP limits,
// volume rates and <smtp-pattern-list> rules.

// CIDRRate is one source-ip-max-msg-rate / source-ip-max-connect-rate line.
type CIDRRate struct {
	Prefix netip.Prefix // 0/0 parses as the invalid Prefix: every address
	Rate   Rate
}

// CIDRInt is one source-ip-max-smtp-out line.
type CIDRInt struct {
	Prefix netip.Prefix // invalid = every address (0/0)
	N      int
}

// Contains reports whether ip falls in p, where the zero Prefix is 0/0.
func prefixContains(p netip.Prefix, ip netip.Addr) bool {
	return !p.IsValid() || p.Contains(ip.Unmap())
}

// Matches reports whether the line applies to source address ip.
func (c CIDRRate) Matches(ip netip.Addr) bool { return prefixContains(c.Prefix, ip) }

// Matches reports whether the line applies to source address ip.
func (c CIDRInt) Matches(ip netip.Addr) bool { return prefixContains(c.Prefix, ip) }

// PatternRule is one `reply /regex/ ACTION...` line of an <smtp-pattern-list>.
type PatternRule struct {
	Source string         // the regex as written, for logs
	Re     *regexp.Regexp // matched against the reply as logged ("421 4.7.0 text")
	// Mode is "backoff" or "normal" (mode=...), "" when the rule sets none.
	Mode            string
	DisableSourceIP bool
	ReenableAfter   time.Duration // reenable-after=; 0 = the domain's reenable-source-ip-after
	DeferQueue      bool
}

// parseTraffic parses the value types of this file; ok is false for the
// other types.
func parseTraffic(d *Directive, raw string) (v any, ok bool, err error) {
	switch d.Type {
	case TCIDRRate:
		pfx, rest, err := cutCIDR(raw)
		if err != nil {
			return nil, true, err
		}
		r, err := parseRate(rest)
		if err != nil {
			return nil, true, err
		}
		return CIDRRate{Prefix: pfx, Rate: r}, true, nil
	case TCIDRInt:
		pfx, rest, err := cutCIDR(raw)
		if err != nil {
			return nil, true, err
		}
		n, err := strconv.Atoi(rest)
		if err != nil || n < 0 {
			return nil, true, fmt.Errorf("%q is not a non-negative integer", rest)
		}
		return CIDRInt{Prefix: pfx, N: n}, true, nil
	case TVolumeRate:
		return parseVolumeRate(raw)
	case TPatternRule:
		r, err := parsePatternRule(raw)
		return r, true, err
	}
	return nil, false, nil
}

// cutCIDR splits "CIDR REST"; a bare address is a /32 (/128), 0/0 every address.
func cutCIDR(raw string) (netip.Prefix, string, error) {
	f, rest, ok := strings.Cut(raw, " ")
	rest = strings.TrimSpace(rest)
	if !ok || rest == "" {
		return netip.Prefix{}, "", fmt.Errorf("want CIDR VALUE, got %q", raw)
	}
	if f == "0/0" {
		return netip.Prefix{}, rest, nil
	}
	if !strings.Contains(f, "/") {
		a, err := netip.ParseAddr(f)
		if err != nil || a.Zone() != "" {
			return netip.Prefix{}, "", fmt.Errorf("%q is not an address or CIDR", f)
		}
		a = a.Unmap()
		return netip.PrefixFrom(a, a.BitLen()), rest, nil
	}
	p, err := netip.ParsePrefix(f)
	if err != nil {
		return netip.Prefix{}, "", fmt.Errorf("%q is not a CIDR", f)
	}
	return p.Masked(), rest, nil
}

// parseVolumeRate reads SIZE/UNIT (100M/h); unlimited is the zero Rate. N
// in the result is bytes.
func parseVolumeRate(s string) (any, bool, error) {
	if strings.EqualFold(s, "unlimited") {
		return Rate{}, true, nil
	}
	size, per, ok := strings.Cut(s, "/")
	if !ok {
		return nil, true, fmt.Errorf("%q is not a volume rate (SIZE/UNIT, e.g. 100M/h, or unlimited)", s)
	}
	n, err := parseSize(size)
	if err != nil || n == 0 || n > 1<<50 {
		return nil, true, fmt.Errorf("%q is not a volume rate (SIZE/UNIT, e.g. 100M/h, or unlimited)", s)
	}
	r, err := parseRate("1/" + per)
	if err != nil {
		return nil, true, fmt.Errorf("%q is not a volume rate (SIZE/UNIT, e.g. 100M/h, or unlimited)", s)
	}
	return Rate{N: int(n), Per: r.Per}, true, nil
}

// parsePatternRule reads `/REGEX/ ACTION...` (the word reply is the directive
// name). Actions: mode=backoff, mode=normal, disable-source-ip,
// reenable-after=DURATION, defer-queue. The regex is matched
// case-insensitively, as PowerMTA does.
func parsePatternRule(raw string) (PatternRule, error) {
	if len(raw) < 2 || raw[0] != '/' {
		return PatternRule{}, fmt.Errorf("want /REGEX/ ACTION..., got %q", raw)
	}
	end := -1
	for i := 1; i < len(raw); i++ {
		if raw[i] == '\\' {
			i++
			continue
		}
		if raw[i] == '/' {
			end = i
			break
		}
	}
	if end < 0 {
		return PatternRule{}, fmt.Errorf("regex %q has no closing /", raw)
	}
	src := raw[1:end]
	re, err := regexp.Compile("(?i)" + src)
	if err != nil {
		return PatternRule{}, fmt.Errorf("regex /%s/: %v", src, err)
	}
	r := PatternRule{Source: src, Re: re}
	actions := strings.Fields(raw[end+1:])
	if len(actions) == 0 {
		return PatternRule{}, fmt.Errorf("/%s/ needs an action: mode=backoff, mode=normal, disable-source-ip or defer-queue", src)
	}
	for _, a := range actions {
		k, v, _ := strings.Cut(a, "=")
		switch k {
		case "mode":
			if v != "backoff" && v != "normal" {
				return PatternRule{}, fmt.Errorf("mode=%s: want mode=backoff or mode=normal", v)
			}
			r.Mode = v
		case "disable-source-ip":
			r.DisableSourceIP = true
		case "reenable-after":
			d, err := parseDuration(v)
			if err != nil || d <= 0 {
				return PatternRule{}, fmt.Errorf("reenable-after=%s: want a positive duration", v)
			}
			r.ReenableAfter = d
		case "defer-queue":
			r.DeferQueue = true
		default:
			return PatternRule{}, fmt.Errorf("unknown action %q (want mode=backoff, mode=normal, disable-source-ip, reenable-after=DURATION or defer-queue)", a)
		}
	}
	if r.ReenableAfter > 0 && !r.DisableSourceIP {
		return PatternRule{}, fmt.Errorf("reenable-after= needs disable-source-ip")
	}
	return r, nil
}

// CIDRRates reads every line of a source-ip-max-*-rate directive.
func (b *Block) CIDRRates(name string) []CIDRRate {
	_, vs := b.values(name, "CIDRRates", TCIDRRate)
	return valuesOf[CIDRRate](vs)
}

// CIDRInts reads every line of source-ip-max-smtp-out.
func (b *Block) CIDRInts(name string) []CIDRInt {
	_, vs := b.values(name, "CIDRInts", TCIDRInt)
	return valuesOf[CIDRInt](vs)
}

// VolumeRate reads a SIZE/UNIT rate; N is bytes, the zero Rate unlimited.
func (b *Block) VolumeRate(name string) Rate {
	_, vs := b.values(name, "VolumeRate", TVolumeRate)
	v, _ := last(vs).(Rate)
	return v
}

// PatternRules reads the reply lines of an <smtp-pattern-list>, in order.
func (b *Block) PatternRules(name string) []PatternRule {
	_, vs := b.values(name, "PatternRules", TPatternRule)
	return valuesOf[PatternRule](vs)
}

// PatternList returns the <smtp-pattern-list> named name, or nil.
func (c *Config) PatternList(name string) *Block { return c.patternLists[name] }

// finishTraffic checks references between the traffic directives.
func (p *parser) finishTraffic() {
	c := p.cfg
	for _, owner := range append([]*Block{c.global}, append(c.VMTAs(), c.Pools()...)...) {
		for _, d := range uniqueBlocks(owner.domains) {
			for _, e := range d.vals["smtp-pattern-list"] {
				if c.patternLists[e.v.(string)] == nil {
					p.errorf(e.file, e.line, "smtp-pattern-list: no <smtp-pattern-list %s>", e.v)
				}
			}
			for _, e := range d.vals["list-unsubscribe"] {
				if u := e.v.(string); !strings.HasPrefix(strings.ToLower(u), "https://") {
					p.errorf(e.file, e.line, "list-unsubscribe: %q must be an https:// URI template (RFC 8058 one-click needs https)", u)
				}
			}
		}
	}
	for _, u := range c.users {
		for _, e := range u.vals["default-virtual-mta"] {
			if c.byName[e.v.(string)] == nil {
				p.errorf(e.file, e.line, "default-virtual-mta: no <virtual-mta %s> or <virtual-mta-pool %s>", e.v, e.v)
			}
		}
	}
}
