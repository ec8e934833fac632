package config

import (
	"crypto/tls"
	"fmt"
	"net/netip"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Rate is N events per Per. The zero Rate means unlimited.
type Rate struct {
	N   int
	Per time.Duration
}

// Unlimited reports whether r sets no limit.
func (r Rate) Unlimited() bool { return r.N == 0 || r.Per == 0 }

func (r Rate) String() string {
	if r.Unlimited() {
		return "unlimited"
	}
	return fmt.Sprintf("%d/%s", r.N, formatDuration(r.Per))
}

// HostPort is one entry of route/smtp-hosts. Bracketed means the host is
// used as is, without an MX lookup.
type HostPort struct {
	Host      string
	Port      int // 0 = default-smtp-port
	Bracketed bool
}

func (h HostPort) String() string {
	host := h.Host
	if h.Bracketed || strings.Contains(host, ":") {
		host = "[" + host + "]"
	}
	if h.Port != 0 {
		return host + ":" + strconv.Itoa(h.Port)
	}
	return host
}

// Listener is one address to accept SMTP on. An invalid Addr means every
// address (PowerMTA's 0/0).
type Listener struct {
	Addr netip.Addr
	Port int
}

// Network returns the address for net.Listen("tcp", ...).
func (l Listener) Network() string {
	if !l.Addr.IsValid() {
		return ":" + strconv.Itoa(l.Port)
	}
	return netip.AddrPortFrom(l.Addr, uint16(l.Port)).String()
}

// SourceHost is one smtp-source-host line of a virtual MTA.
type SourceHost struct {
	IP       netip.Addr
	HostName string
}

// CertKey is a loaded smtp-server-tls-certificate.
type CertKey struct {
	CertFile, KeyFile string
	Cert              *tls.Certificate
}

// RecordFields is one record-fields line of an <acct-file>.
type RecordFields struct {
	Type   string
	Fields []string
}

// parseValue turns raw into the Go value of d's type. dir resolves relative
// file names (of certificates) against the directory of the config file.
func parseValue(d *Directive, raw, dir string) (any, error) {
	v, err := parseTyped(d, raw, dir)
	if err != nil {
		return nil, err
	}
	if d.Check != nil {
		if msg := d.Check(v); msg != "" {
			return nil, checkError(msg)
		}
	}
	return v, nil
}

// checkError is a refusal by Directive.Check; its text is a whole sentence
// that already names the directive.
type checkError string

func (e checkError) Error() string { return string(e) }

func parseTyped(d *Directive, raw, dir string) (any, error) {
	switch d.Type {
	case TBool:
		return parseBool(raw)
	case TInt:
		n, err := strconv.ParseInt(raw, 10, 64)
		if err != nil || n < 0 {
			return nil, fmt.Errorf("%q is not a non-negative integer", raw)
		}
		return n, nil
	case TSize:
		return parseSize(raw)
	case TDuration:
		return parseDuration(raw)
	case TDurations:
		var ds []time.Duration
		for _, f := range splitList(raw) {
			v, err := parseDuration(f)
			if err != nil {
				return nil, err
			}
			if v <= 0 {
				return nil, fmt.Errorf("duration %q must be positive", f)
			}
			ds = append(ds, v)
		}
		if len(ds) == 0 {
			return nil, fmt.Errorf("empty duration list")
		}
		return ds, nil
	case TRate:
		return parseRate(raw)
	case TString:
		if strings.ContainsAny(raw, " \t") {
			return nil, fmt.Errorf("%q must be one word", raw)
		}
		return raw, nil
	case TStrings:
		l := splitList(raw)
		if len(l) == 0 {
			return nil, fmt.Errorf("empty list")
		}
		return l, nil
	case THostPorts:
		var hs []HostPort
		for _, f := range splitList(raw) {
			h, err := parseHostPort(f)
			if err != nil {
				return nil, err
			}
			hs = append(hs, h)
		}
		if len(hs) == 0 {
			return nil, fmt.Errorf("empty host list")
		}
		return hs, nil
	case TListener:
		return parseListener(raw)
	case TCertKey:
		return loadCertKey(raw, dir)
	case TDomainKey:
		return loadDomainKey(raw, dir)
	case TPathPair:
		return parsePathPair(raw)
	case TSourceHost:
		f := strings.Fields(raw)
		if len(f) != 2 {
			return nil, fmt.Errorf("want IP HOSTNAME, got %q", raw)
		}
		ip, err := netip.ParseAddr(f[0])
		if err != nil || ip.Zone() != "" {
			return nil, fmt.Errorf("%q is not an IP address", f[0])
		}
		if !validHostName(f[1]) {
			return nil, fmt.Errorf("%q is not a host name", f[1])
		}
		return SourceHost{IP: ip.Unmap(), HostName: f[1]}, nil
	case TRecordTypes:
		l := splitList(raw)
		if len(l) == 0 {
			return nil, fmt.Errorf("empty record type list")
		}
		for _, t := range l {
			if !slices.Contains(acctRecordTypes, t) {
				return nil, fmt.Errorf("unknown record type %q (want %s)", t, strings.Join(acctRecordTypes, ", "))
			}
		}
		return l, nil
	case TRecordFields:
		typ, rest, ok := strings.Cut(raw, " ")
		rest = strings.TrimSpace(rest)
		if !ok || rest == "" {
			return nil, fmt.Errorf("want TYPE FIELD[,FIELD...], got %q", raw)
		}
		if !slices.Contains(acctRecordTypes, typ) {
			return nil, fmt.Errorf("unknown record type %q (want %s)", typ, strings.Join(acctRecordTypes, ", "))
		}
		return RecordFields{Type: typ, Fields: splitList(rest)}, nil
	case TEnum:
		if !slices.Contains(d.Enum, raw) {
			return nil, fmt.Errorf("%q is not one of %s", raw, strings.Join(d.Enum, ", "))
		}
		return raw, nil
	case TPasswordHash:
		if !isBcrypt(raw) {
			return nil, fmt.Errorf("must be a bcrypt hash ($2a$, $2b$ or $2y$), not the password itself; make one with `sluice hash-password`")
		}
		return raw, nil
	case TSourceRef:
		if len(raw) < 3 || raw[0] != '{' || raw[len(raw)-1] != '}' || raw == "{auth}" {
			return nil, fmt.Errorf("want {name} of a <source {name}> block, got %q", raw)
		}
		return raw, nil
	}
	if v, ok, err := parseTraffic(d, raw); ok {
		return v, err
	}
	panic(fmt.Sprintf("config: directive %s has no parser for type %d", d.Name, d.Type))
}

func splitList(raw string) []string {
	var out []string
	for _, f := range strings.Split(raw, ",") {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}

func parseBool(s string) (bool, error) {
	switch strings.ToLower(s) {
	case "yes", "true", "on":
		return true, nil
	case "no", "false", "off":
		return false, nil
	}
	return false, fmt.Errorf("%q is not yes or no", s)
}

func parseSize(s string) (int64, error) {
	mult := int64(1)
	num := s
	if n := len(s); n > 0 {
		switch s[n-1] {
		case 'k', 'K':
			mult, num = 1<<10, s[:n-1]
		case 'm', 'M':
			mult, num = 1<<20, s[:n-1]
		case 'g', 'G':
			mult, num = 1<<30, s[:n-1]
		case 'b', 'B':
			num = s[:n-1]
		}
	}
	n, err := strconv.ParseInt(num, 10, 64)
	if err != nil || n < 0 || n > (1<<62)/mult {
		return 0, fmt.Errorf("%q is not a size (bytes, or a number with K, M or G)", s)
	}
	return n * mult, nil
}

// parseDuration accepts PowerMTA's forms: one or more NUMBER UNIT pairs with
// units w, d, h, m, s (4d12h, 90s, 1h30m). A bare number is refused: it is
// ambiguous between PowerMTA versions and a likely typo.
func parseDuration(s string) (time.Duration, error) {
	if s == "" {
		return 0, fmt.Errorf("empty duration")
	}
	if s == "0" {
		return 0, nil
	}
	var total time.Duration
	rest := s
	for rest != "" {
		i := 0
		for i < len(rest) && rest[i] >= '0' && rest[i] <= '9' {
			i++
		}
		if i == 0 || i == len(rest) || i > 9 {
			return 0, fmt.Errorf("%q is not a duration (e.g. 30s, 10m, 4d12h)", s)
		}
		n, _ := strconv.ParseInt(rest[:i], 10, 64)
		var unit time.Duration
		switch rest[i] {
		case 's':
			unit = time.Second
		case 'm':
			unit = time.Minute
		case 'h':
			unit = time.Hour
		case 'd':
			unit = 24 * time.Hour
		case 'w':
			unit = 7 * 24 * time.Hour
		default:
			return 0, fmt.Errorf("%q is not a duration (e.g. 30s, 10m, 4d12h)", s)
		}
		const maxDuration = 10 * 365 * 24 * time.Hour
		if time.Duration(n) > maxDuration/unit {
			return 0, fmt.Errorf("duration %q is too long", s)
		}
		total += time.Duration(n) * unit
		if total > maxDuration {
			return 0, fmt.Errorf("duration %q is too long", s)
		}
		rest = rest[i+1:]
	}
	return total, nil
}

// formatDuration prints d in the config's own units, so defaults in the man
// page read as they would be written.
func formatDuration(d time.Duration) string {
	if d == 0 {
		return "0"
	}
	var b strings.Builder
	for _, u := range []struct {
		c byte
		d time.Duration
	}{{'d', 24 * time.Hour}, {'h', time.Hour}, {'m', time.Minute}, {'s', time.Second}} {
		if n := d / u.d; n > 0 {
			b.WriteString(strconv.FormatInt(int64(n), 10))
			b.WriteByte(u.c)
			d -= n * u.d
		}
	}
	return b.String()
}

// parseRate accepts N/UNIT and N/MUNIT (100/10m); "unlimited" is the zero Rate.
func parseRate(s string) (Rate, error) {
	if strings.EqualFold(s, "unlimited") {
		return Rate{}, nil
	}
	num, per, ok := strings.Cut(s, "/")
	n, err := strconv.Atoi(num)
	if !ok || err != nil || n < 0 || per == "" {
		return Rate{}, fmt.Errorf("%q is not a rate (N/s, N/m, N/h, N/d, N/10m or unlimited)", s)
	}
	// "100/h" has an implicit 1.
	if per[0] < '0' || per[0] > '9' {
		per = "1" + per
	}
	d, err := parseDuration(per)
	if err != nil || d <= 0 || strings.IndexFunc(per, func(r rune) bool { return r < '0' || r > '9' }) != len(per)-1 {
		return Rate{}, fmt.Errorf("%q is not a rate (N/s, N/m, N/h, N/d, N/10m or unlimited)", s)
	}
	if n == 0 {
		return Rate{}, fmt.Errorf("rate %q allows nothing; use unlimited or a positive count", s)
	}
	return Rate{N: n, Per: d}, nil
}

func parseHostPort(s string) (HostPort, error) {
	var h HostPort
	host, port := s, ""
	if strings.HasPrefix(s, "[") {
		end := strings.IndexByte(s, ']')
		if end < 0 {
			return h, fmt.Errorf("%q: missing ]", s)
		}
		host, h.Bracketed = s[1:end], true
		rest := s[end+1:]
		if rest != "" {
			if rest[0] != ':' {
				return h, fmt.Errorf("%q: want [host]:port", s)
			}
			port = rest[1:]
			if port == "" {
				return h, fmt.Errorf("%q: empty port", s)
			}
		}
	} else if i := strings.LastIndexByte(s, ':'); i >= 0 {
		if strings.Count(s, ":") > 1 {
			return h, fmt.Errorf("%q: write an IPv6 host as [addr]:port", s)
		}
		host, port = s[:i], s[i+1:]
		if port == "" {
			return h, fmt.Errorf("%q: empty port", s)
		}
	}
	if port != "" {
		p, err := strconv.Atoi(port)
		if err != nil || p < 1 || p > 65535 {
			return h, fmt.Errorf("%q: bad port %q", s, port)
		}
		h.Port = p
	}
	if a, err := netip.ParseAddr(host); err == nil {
		if a.Zone() != "" {
			return h, fmt.Errorf("%q: zoned addresses are not allowed", s)
		}
		h.Host = a.Unmap().String()
		return h, nil
	}
	if !validHostName(host) {
		return h, fmt.Errorf("%q is not a host name or address", host)
	}
	h.Host = strings.ToLower(strings.TrimSuffix(host, "."))
	return h, nil
}

func parseListener(s string) (Listener, error) {
	i := strings.LastIndexByte(s, ':')
	if i < 0 {
		return Listener{}, fmt.Errorf("%q: want IP:PORT (0/0:25 for every address)", s)
	}
	host, port := s[:i], s[i+1:]
	p, err := strconv.Atoi(port)
	if err != nil || p < 1 || p > 65535 {
		return Listener{}, fmt.Errorf("%q: bad port %q", s, port)
	}
	if host == "0/0" || host == "" || host == "*" {
		return Listener{Port: p}, nil
	}
	if strings.HasPrefix(host, "[") && strings.HasSuffix(host, "]") {
		host = host[1 : len(host)-1]
	} else if strings.Contains(host, ":") {
		return Listener{}, fmt.Errorf("%q: write an IPv6 address as [addr]:port", s)
	}
	a, err := netip.ParseAddr(host)
	if err != nil || a.Zone() != "" {
		return Listener{}, fmt.Errorf("%q: %q is not an IP address", s, host)
	}
	return Listener{Addr: a.Unmap(), Port: p}, nil
}

func loadCertKey(raw, dir string) (CertKey, error) {
	c, k, ok := strings.Cut(raw, ",")
	c, k = strings.TrimSpace(c), strings.TrimSpace(k)
	if !ok || c == "" || k == "" {
		return CertKey{}, fmt.Errorf("want CERT-FILE,KEY-FILE, got %q", raw)
	}
	if !filepath.IsAbs(c) {
		c = filepath.Join(dir, c)
	}
	if !filepath.IsAbs(k) {
		k = filepath.Join(dir, k)
	}
	cert, err := tls.LoadX509KeyPair(c, k)
	if err != nil {
		return CertKey{}, fmt.Errorf("load certificate: %w", err)
	}
	return CertKey{CertFile: c, KeyFile: k, Cert: &cert}, nil
}

func isBcrypt(s string) bool {
	// $2b$10$ + 22 salt + 31 hash characters = 60.
	if len(s) != 60 || s[0] != '$' || s[1] != '2' || s[3] != '$' || s[6] != '$' {
		return false
	}
	if !strings.ContainsRune("aby", rune(s[2])) {
		return false
	}
	cost, err := strconv.Atoi(s[4:6])
	if err != nil || cost < 4 || cost > 31 {
		return false
	}
	for _, r := range s[7:] {
		if !(r == '.' || r == '/' || r >= 'A' && r <= 'Z' || r >= 'a' && r <= 'z' || r >= '0' && r <= '9') {
			return false
		}
	}
	return true
}

func validHostName(s string) bool {
	s = strings.TrimSuffix(s, ".")
	if s == "" || len(s) > 253 {
		return false
	}
	for _, label := range strings.Split(s, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for _, r := range label {
			if !(r == '-' || r == '_' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9') {
				return false
			}
		}
	}
	return true
}

// parseSourceArg parses the argument of <source ...>: a CIDR, a bare
// address, 0/0, {auth} or {name}.
func parseSourceArg(arg string) (netip.Prefix, bool, error) {
	if strings.HasPrefix(arg, "{") {
		if len(arg) < 3 || !strings.HasSuffix(arg, "}") {
			return netip.Prefix{}, false, fmt.Errorf("<source %s>: want CIDR, {auth} or {name}", arg)
		}
		return netip.Prefix{}, true, nil
	}
	if arg == "0/0" {
		return netip.Prefix{}, false, nil // both families; see Config.Source
	}
	if !strings.Contains(arg, "/") {
		a, err := netip.ParseAddr(arg)
		if err != nil || a.Zone() != "" {
			return netip.Prefix{}, false, fmt.Errorf("<source %s>: not an address or CIDR", arg)
		}
		a = a.Unmap()
		return netip.PrefixFrom(a, a.BitLen()), false, nil
	}
	p, err := netip.ParsePrefix(arg)
	if err != nil {
		return netip.Prefix{}, false, fmt.Errorf("<source %s>: not a CIDR: %v", arg, err)
	}
	if p.Addr().Is4In6() {
		if p.Bits() < 96 {
			return netip.Prefix{}, false, fmt.Errorf("<source %s>: an IPv4-mapped CIDR needs at least /96", arg)
		}
		p = netip.PrefixFrom(p.Addr().Unmap(), p.Bits()-96)
	}
	return p.Masked(), false, nil
}
