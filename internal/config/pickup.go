package config

import (
	"fmt"
	"path/filepath"
	"strings"
)

// Pickup is one "pickup DIR BADMAIL-DIR" line (PowerMTA): message files
// dropped in Dir are queued; rejected ones are moved to BadDir.
type Pickup struct {
	Dir    string // absolute, cleaned
	BadDir string // absolute, cleaned, not Dir
}

// Pickups reads every pickup line of a block, in file order.
func (b *Block) Pickups(name string) []Pickup {
	_, vs := b.values(name, "Pickups", TPathPair)
	return valuesOf[Pickup](vs)
}

func parsePathPair(raw string) (Pickup, error) {
	f := strings.Fields(raw)
	if len(f) != 2 {
		return Pickup{}, fmt.Errorf("want DIR BADMAIL-DIR, got %q", raw)
	}
	for _, p := range f {
		if !filepath.IsAbs(p) {
			return Pickup{}, fmt.Errorf("%q is not an absolute path", p)
		}
	}
	p := Pickup{Dir: filepath.Clean(f[0]), BadDir: filepath.Clean(f[1])}
	if p.Dir == p.BadDir || strings.HasPrefix(p.BadDir, p.Dir+"/") {
		// Inside the pickup directory, the bad-mail directory would be a
		// name in it; the same one would loop.
		return Pickup{}, fmt.Errorf("BADMAIL-DIR %q must be outside DIR %q", p.BadDir, p.Dir)
	}
	return p, nil
}
