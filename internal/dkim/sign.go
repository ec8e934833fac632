// Package dkim signs outgoing mail with DKIM (RFC 6376) at delivery time,
// per queue, so per-VMTA keys and headers added per recipient (such as
// List-Unsubscribe) are covered. RSA-SHA256 and Ed25519-SHA256 (RFC 8463)
// keys are supported.
//
// The signature is computed here rather than with go-msgauth's
// dkim.NewSigner, which sluice uses only to verify in tests, because:
//   - the body hash is the same for every transaction of a message (it
//     depends on the body and the body canonicalization only), and a
//     message to many domains is signed once per queue; go-msgauth hashes
//     the body inside each Sign with no way to pass the hash in. Signer
//     keeps recent body hashes, keyed by a seeded 64-bit hash of the body
//     and its length, so the canonicalization and SHA-256 run once per
//     message (a body changed per queue, by an 8BITMIME downgrade say, is a
//     different key and is hashed again);
//   - go-msgauth takes t= from its own clock, which the caller cannot set
//     (the queue manager's clock, tests), and runs a goroutine and a pipe
//     per message;
//   - line ends must be those vmta writes: a bare LF or CR goes out as CRLF,
//     so the signer reads them as CRLF too.
//
// What is signed is decided by the config (PolicyFor, KeysFor, Plan,
// SignFor): dkim-sign, domain-key, dkim-identity and the other dkim-*
// directives; keys are loaded by internal/config when the config loads.
// The daemon wires one Signer into the queue manager with
//
//	qmgr.Options{Sign: dkim.NewSigner(dkim.Options{Convert: vmta.Downgrade}).Hook(logf, nil)}
//
// and the queue manager calls it per transaction, after adding
// List-Unsubscribe, so the signature covers per-recipient headers.
package dkim

import (
	"crypto"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"hash/maphash"
	"io"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sluicemta/sluice/internal/dkim/dkimkey"
)

// Canon is a canonicalization algorithm (RFC 6376 3.4).
type Canon string

// The two canonicalizations; "" means Relaxed.
const (
	Relaxed Canon = "relaxed"
	Simple  Canon = "simple"
)

// Key is a private key that signs for Domain with Selector.
type Key struct {
	Selector string
	Domain   string
	Signer   crypto.Signer
	Algo     string // a= value: dkimkey.RSASHA256 or dkimkey.Ed25519SHA256
}

// NewKey makes a Key from a loaded private key.
func NewKey(selector, domain string, s crypto.Signer) (*Key, error) {
	algo := dkimkey.Algorithm(s)
	if algo == "" {
		return nil, fmt.Errorf("dkim: %T keys cannot sign DKIM", s.Public())
	}
	if selector == "" || domain == "" {
		return nil, errors.New("dkim: key needs a selector and a domain")
	}
	return &Key{Selector: strings.ToLower(selector), Domain: strings.ToLower(strings.TrimSuffix(domain, ".")), Signer: s, Algo: algo}, nil
}

// LoadKey reads a private key file (see dkimkey.Parse for the formats).
func LoadKey(selector, domain, path string) (*Key, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("dkim: read key: %w", err)
	}
	s, err := dkimkey.Parse(data)
	if err != nil {
		return nil, fmt.Errorf("dkim: %s: %w", path, err)
	}
	return NewKey(selector, domain, s)
}

// Record returns the TXT record to publish at SELECTOR._domainkey.DOMAIN.
func (k *Key) Record() (string, error) { return dkimkey.Record(k.Signer) }

// Params says how to sign one message.
type Params struct {
	Key *Key
	// Identity is the AUID put in i= ("" for none, which means @Domain). It
	// must be in Domain or below it.
	Identity    string
	HeaderCanon Canon // "" = Relaxed
	BodyCanon   Canon // "" = Relaxed
	// Headers are signed in every instance present; nil means
	// DefaultHeaders. From is always signed.
	Headers []string
	// Oversign are signed once more than they occur (RFC 6376 8.15), so
	// an instance added later breaks the signature.
	Oversign []string
	// Expire, when positive, sets x= that long after t=.
	Expire time.Duration
}

// DefaultHeaders is what Params.Headers nil signs (RFC 6376 5.4.1's list,
// trimmed to what receivers look at, plus the list and feedback headers).
var DefaultHeaders = []string{"From", "Sender", "Reply-To", "Subject", "Date", "Message-ID", "To", "Cc",
	"MIME-Version", "Content-Type", "Content-Transfer-Encoding", "In-Reply-To", "References",
	"List-Id", "List-Unsubscribe", "List-Unsubscribe-Post", "Feedback-ID"}

// Options configure a Signer.
type Options struct {
	// CacheSize is how many body hashes are remembered (default 4096;
	// 48 bytes each). A message delivered to many domains at once needs
	// one entry.
	CacheSize int
	// Rand is the randomness for RSA blinding; nil = crypto/rand.
	Rand io.Reader
	// Convert, when set, rewrites content before SignFor signs it; set it
	// to vmta.Downgrade. vmta re-encodes lines over 998 octets (and 8-bit
	// bodies for a next hop without 8BITMIME) before DATA, which would
	// break a signature made over the original, so SignFor signs the
	// converted content, and vmta finds nothing left to change. An error
	// (content that cannot be converted) signs the original: vmta decides
	// what to do with it.
	Convert func(content []byte) (out []byte, changed bool, err error)
}

// Signer makes DKIM-Signature header fields. It is safe for concurrent
// use; make one per daemon so the body-hash cache is shared by queues.
type Signer struct {
	rand    io.Reader
	seed    maphash.Seed
	convert func([]byte) ([]byte, bool, error)

	mu       sync.Mutex
	cache    map[bodyKey][sha256.Size]byte
	ring     []bodyKey // insertion order, for eviction
	next     int
	inflight map[bodyKey]*hashing // bodies being hashed now

	hits, misses atomic.Uint64
}

type bodyKey struct {
	sum   uint64
	n     int
	canon Canon
}

// NewSigner makes a Signer.
func NewSigner(o Options) *Signer {
	if o.CacheSize <= 0 {
		o.CacheSize = 4096
	}
	if o.Rand == nil {
		o.Rand = rand.Reader
	}
	return &Signer{rand: o.Rand, seed: maphash.MakeSeed(), convert: o.Convert,
		cache: make(map[bodyKey][sha256.Size]byte, o.CacheSize), ring: make([]bodyKey, o.CacheSize),
		inflight: map[bodyKey]*hashing{}}
}

// hashing is one body hash in progress; others wanting it wait on done.
type hashing struct {
	done chan struct{}
	h    [sha256.Size]byte
}

// CacheStats returns how many body hashes were found in the cache and how
// many were computed.
func (s *Signer) CacheStats() (hits, misses uint64) { return s.hits.Load(), s.misses.Load() }

// bodyHash returns the SHA-256 of the canonical body, computing it only
// when this body was not hashed recently.
func (s *Signer) bodyHash(body []byte, c Canon) [sha256.Size]byte {
	k := bodyKey{sum: maphash.Bytes(s.seed, body), n: len(body), canon: c}
	s.mu.Lock()
	if h, ok := s.cache[k]; ok {
		s.mu.Unlock()
		s.hits.Add(1)
		return h
	}
	// The queues of one message are delivered at the same time: the
	// second to ask waits for the first one's hash instead of hashing too.
	if f, ok := s.inflight[k]; ok {
		s.mu.Unlock()
		<-f.done
		s.hits.Add(1)
		return f.h
	}
	f := &hashing{done: make(chan struct{})}
	s.inflight[k] = f
	s.mu.Unlock()
	s.misses.Add(1)
	var h [sha256.Size]byte
	d := sha256.New()
	canonBody(d, body, c)
	d.Sum(h[:0])
	f.h = h
	close(f.done)
	s.mu.Lock()
	delete(s.inflight, k)
	if _, ok := s.cache[k]; !ok {
		if old := s.ring[s.next]; old != (bodyKey{}) {
			delete(s.cache, old)
		}
		s.ring[s.next] = k
		s.next = (s.next + 1) % len(s.ring)
		s.cache[k] = h
	}
	s.mu.Unlock()
	return h
}

// Sign returns content with a DKIM-Signature header field prepended.
func (s *Signer) Sign(content []byte, p *Params, now time.Time) ([]byte, error) {
	h, err := s.Header(content, p, now)
	if err != nil {
		return nil, err
	}
	out := make([]byte, 0, len(h)+len(content))
	return append(append(out, h...), content...), nil
}

// Header returns the DKIM-Signature header field for content, ending in
// CRLF, to be sent before content (it covers nothing put before it).
func (s *Signer) Header(content []byte, p *Params, now time.Time) (string, error) {
	k := p.Key
	if k == nil || k.Signer == nil {
		return "", errors.New("dkim: no key")
	}
	hc, bc := p.HeaderCanon, p.BodyCanon
	if hc == "" {
		hc = Relaxed
	}
	if bc == "" {
		bc = Relaxed
	}
	if (hc != Relaxed && hc != Simple) || (bc != Relaxed && bc != Simple) {
		return "", fmt.Errorf("dkim: unknown canonicalization %s/%s", hc, bc)
	}
	fields, bodyAt := splitHeader(content)
	bh := s.bodyHash(content[bodyAt:], bc)
	names := signedNames(fields, p.Headers, p.Oversign)

	var f folder
	f.b.WriteString("DKIM-Signature: v=1;")
	f.col = f.b.Len()
	f.tag("a=" + k.Algo + ";")
	f.tag("c=" + string(hc) + "/" + string(bc) + ";")
	f.tag("d=" + k.Domain + ";")
	f.tag("s=" + k.Selector + ";")
	if p.Identity != "" {
		f.tag("i=" + quoteTagValue(p.Identity) + ";")
	}
	f.tag("t=" + strconv.FormatInt(now.Unix(), 10) + ";")
	if p.Expire > 0 {
		f.tag("x=" + strconv.FormatInt(now.Add(p.Expire).Unix(), 10) + ";")
	}
	f.list("h=", names)
	f.split("bh=", base64.StdEncoding.EncodeToString(bh[:]), ";")
	f.newLine()
	f.b.WriteString("b=")
	f.col += 2
	unsigned := f.b.String()

	// Header hash: the signed fields bottom-up per name, then this field
	// with an empty b= and no final CRLF (RFC 6376 3.7).
	d := sha256.New()
	buf := make([]byte, 0, 1024)
	used := make(map[string]int, len(names))
	for _, n := range names {
		if i := pick(fields, n, used); i >= 0 {
			buf = canonHeader(buf[:0], content, fields[i], hc)
			d.Write(buf)
		}
	}
	self := []byte(unsigned)
	sf, _ := splitHeader(self)
	buf = canonHeader(buf[:0], self, sf[0], hc)
	d.Write(buf[:len(buf)-2])
	digest := d.Sum(nil)

	var sig []byte
	var err error
	switch k.Signer.Public().(type) {
	case ed25519.PublicKey:
		// RFC 8463: Ed25519 signs the SHA-256 digest as its message.
		sig, err = k.Signer.Sign(nil, digest, crypto.Hash(0))
	default:
		sig, err = k.Signer.Sign(s.rand, digest, crypto.SHA256)
	}
	if err != nil {
		return "", fmt.Errorf("dkim: sign with %s._domainkey.%s: %w", k.Selector, k.Domain, err)
	}
	f.split("", base64.StdEncoding.EncodeToString(sig), "")
	f.b.WriteString("\r\n")
	return f.b.String(), nil
}

// quoteTagValue writes v in DKIM-Quoted-Printable (RFC 6376 2.11): octets
// outside 0x21-0x7E, ";" and "=" as =XX, so an odd local part cannot end
// the i= tag early. A "b" before an encoded octet is encoded too: some
// verifiers (go-msgauth) blank every "b=" in the field, not only the tag.
func quoteTagValue(v string) string {
	enc := func(c byte) bool { return c <= ' ' || c >= 0x7f || c == ';' || c == '=' }
	var b strings.Builder
	for i := 0; i < len(v); i++ {
		c := v[i]
		if enc(c) || c == 'b' && i+1 < len(v) && enc(v[i+1]) {
			fmt.Fprintf(&b, "=%02X", c)
			continue
		}
		b.WriteByte(c)
	}
	return b.String()
}

// signedNames lists h=: every instance of headers present, the oversigned
// ones once more, From at least once, in lower case.
func signedNames(fields []field, headers, oversign []string) []string {
	if headers == nil {
		headers = DefaultHeaders
	}
	count := func(name string) int {
		n := 0
		for _, f := range fields {
			if strings.EqualFold(string(f.name), name) {
				n++
			}
		}
		return n
	}
	isOver := func(name string) bool {
		for _, o := range oversign {
			if strings.EqualFold(o, name) {
				return true
			}
		}
		return false
	}
	var out []string
	seen := map[string]bool{}
	add := func(name string, over bool) {
		l := strings.ToLower(name)
		if seen[l] {
			return
		}
		seen[l] = true
		n := count(l)
		if over || (l == "from" && n == 0) {
			n++
		}
		for ; n > 0; n-- {
			out = append(out, l)
		}
	}
	add("from", isOver("from"))
	for _, h := range headers {
		add(h, isOver(h))
	}
	for _, h := range oversign {
		add(h, true)
	}
	return out
}

// pick returns the index of the next instance of name to sign, from the
// bottom of the header up, or -1 when all were used (RFC 6376 5.4.2).
func pick(fields []field, name string, used map[string]int) int {
	skip := used[name]
	used[name]++
	for i := len(fields) - 1; i >= 0; i-- {
		if strings.EqualFold(string(fields[i].name), name) {
			if skip == 0 {
				return i
			}
			skip--
		}
	}
	return -1
}

// folder writes tag=value pairs folded before 78 columns.
type folder struct {
	b   strings.Builder
	col int
}

const foldAt = 76

func (f *folder) newLine() {
	f.b.WriteString("\r\n\t")
	f.col = 8
}

func (f *folder) tag(s string) {
	if f.col+1+len(s) > foldAt {
		f.newLine()
	} else {
		f.b.WriteByte(' ')
		f.col++
	}
	f.b.WriteString(s)
	f.col += len(s)
}

// list writes prefix and names joined by colons, folding after a colon.
func (f *folder) list(prefix string, names []string) {
	f.tag(prefix + names[0])
	for i, n := range names[1:] {
		s := ":" + n
		if i == len(names)-2 {
			s += ";"
		}
		if f.col+len(s) > foldAt {
			f.newLine()
		}
		f.b.WriteString(s)
		f.col += len(s)
	}
	if len(names) == 1 {
		f.b.WriteByte(';')
		f.col++
	}
}

// split writes prefix+value+suffix starting on a fresh line when it does
// not fit, breaking value itself (base64 may hold FWS) across lines.
func (f *folder) split(prefix, value, suffix string) {
	if prefix != "" {
		if f.col+1+len(prefix)+len(value)+len(suffix) > foldAt {
			f.newLine()
		} else {
			f.b.WriteByte(' ')
			f.col++
		}
		f.b.WriteString(prefix)
		f.col += len(prefix)
	}
	for len(value) > 0 {
		room := foldAt - f.col
		if room <= 0 {
			f.newLine()
			continue
		}
		n := min(room, len(value))
		f.b.WriteString(value[:n])
		f.col += n
		value = value[n:]
	}
	f.b.WriteString(suffix)
	f.col += len(suffix)
}
