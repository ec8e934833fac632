package config

import (
	"crypto"
	"errors"
	"fmt"
	"io"
	"net/mail"
	"os"
	"path/filepath"
	"strings"

	"github.com/sluicemta/sluice/internal/dkim/dkimkey"
)

// DomainKey is one domain-key line, its private key loaded when the config
// loaded: a key that cannot be read is a config error, never an unsigned
// message found later.
type DomainKey struct {
	Selector string
	Domain   string // lower case, no trailing dot; "*" signs for any domain
	File     string // absolute, or relative to the working directory as written
	Signer   crypto.Signer
	// warning is set when the file is readable by everyone.
	warning string
}

// Warning implements the parser's warning hook.
func (k DomainKey) Warning() string { return k.warning }

// DomainKeys reads every domain-key line of a block, in file order.
func (b *Block) DomainKeys(name string) []DomainKey {
	_, vs := b.values(name, "DomainKeys", TDomainKey)
	return valuesOf[DomainKey](vs)
}

func loadDomainKey(raw, dir string) (DomainKey, error) {
	parts := strings.Split(raw, ",")
	if len(parts) != 3 {
		return DomainKey{}, fmt.Errorf("want SELECTOR,DOMAIN,KEYFILE, got %q", raw)
	}
	sel := strings.TrimSpace(parts[0])
	dom := normDomain(strings.TrimSpace(parts[1]))
	file := strings.TrimSpace(parts[2])
	if !validHostName(sel) {
		return DomainKey{}, fmt.Errorf("%q is not a selector (DNS labels)", sel)
	}
	if dom != "*" && (!validHostName(dom) || !strings.Contains(dom, ".")) {
		return DomainKey{}, fmt.Errorf("%q is not a domain name", parts[1])
	}
	if file == "" {
		return DomainKey{}, fmt.Errorf("want SELECTOR,DOMAIN,KEYFILE, got %q", raw)
	}
	if !filepath.IsAbs(file) {
		file = filepath.Join(dir, file)
	}
	data, st, err := readKeyFile(file)
	if err != nil {
		return DomainKey{}, fmt.Errorf("cannot read %s: %v", file, err)
	}
	s, err := dkimkey.Parse(data)
	if err != nil {
		return DomainKey{}, fmt.Errorf("%s: %v", file, err)
	}
	k := DomainKey{Selector: strings.ToLower(sel), Domain: dom, File: file, Signer: s}
	if st.Mode().Perm()&0o004 != 0 {
		k.warning = fmt.Sprintf("domain-key: %s is readable by everyone (mode %04o); make it readable by root and the sluice group only (chmod 640)", file, st.Mode().Perm())
	}
	return k, nil
}

// maxKeyFile bounds what is read as a key: an RSA-8192 PEM is under 7 KiB.
const maxKeyFile = 64 << 10

// readKeyFile reads a regular file of at most maxKeyFile bytes: a typo
// naming /dev/zero or a FIFO must not hang the config check.
func readKeyFile(file string) ([]byte, os.FileInfo, error) {
	unwrap := func(err error) error {
		var pe *os.PathError
		if errors.As(err, &pe) {
			return pe.Err
		}
		return err
	}
	st, err := os.Stat(file)
	if err != nil {
		return nil, nil, unwrap(err)
	}
	if !st.Mode().IsRegular() {
		return nil, nil, errors.New("not a regular file")
	}
	f, err := os.Open(file)
	if err != nil {
		return nil, nil, unwrap(err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxKeyFile+1))
	if err != nil {
		return nil, nil, unwrap(err)
	}
	if len(data) > maxKeyFile {
		return nil, nil, fmt.Errorf("larger than %d KiB: not a key", maxKeyFile>>10)
	}
	return data, st, nil
}

// checkDKIMIdentity accepts dkim-identity and dkim-identity-fallback values:
// a header rule or a fixed address or @domain.
func checkDKIMIdentity(name string, rules ...string) func(any) string {
	return func(v any) string {
		s := v.(string)
		for _, r := range rules {
			if s == r {
				return ""
			}
		}
		if dom, ok := strings.CutPrefix(s, "@"); ok {
			if validHostName(dom) && strings.Contains(dom, ".") {
				return ""
			}
		} else if a, err := mail.ParseAddress(s); err == nil && a.Address == s && strings.Contains(s, "@") {
			return ""
		}
		want := "@DOMAIN or an address"
		if len(rules) > 0 {
			want = strings.Join(rules, ", ") + ", " + want
		}
		return fmt.Sprintf("%s %q: want %s", name, s, want)
	}
}

// checkSignsFrom refuses a dkim-sign-headers list without From: RFC 6376
// 5.4 requires it signed.
func checkSignsFrom(v any) string {
	if msg := checkHeaderNames("dkim-sign-headers")(v); msg != "" {
		return msg
	}
	for _, h := range v.([]string) {
		if strings.EqualFold(h, "from") {
			return ""
		}
	}
	return "dkim-sign-headers must include From (RFC 6376 5.4)"
}

// checkHeaderNames refuses what cannot be a header field name (RFC 5322
// 2.2: printable ASCII but the colon).
func checkHeaderNames(name string) func(any) string {
	return func(v any) string {
		for _, h := range v.([]string) {
			for i := 0; i < len(h); i++ {
				if c := h[i]; c <= ' ' || c >= 0x7f || c == ':' {
					return fmt.Sprintf("%s: %q is not a header field name", name, h)
				}
			}
		}
		return ""
	}
}
