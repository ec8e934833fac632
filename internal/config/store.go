package config

import (
	"reflect"
	"sync/atomic"
)

// Store holds the running config. Reload builds and validates a new
// snapshot and swaps it in atomically; an invalid file leaves the running
// snapshot in force. Callers take Current() once per unit of work (a
// connection, a delivery attempt) and keep using that snapshot, so a reload
// affects new work only.
type Store struct {
	cur atomic.Pointer[Config]
}

// NewStore returns a Store running c, which must not be nil.
func NewStore(c *Config) *Store {
	if c == nil {
		panic("config: NewStore(nil)")
	}
	s := &Store{}
	s.cur.Store(c)
	return s
}

// Current returns the running snapshot.
func (s *Store) Current() *Config { return s.cur.Load() }

// Reload loads path and, if it is valid, makes it the running snapshot.
// On error (an Errors) the running snapshot is unchanged.
func (s *Store) Reload(path string) error {
	c, err := Load(path)
	if err != nil {
		return err
	}
	s.cur.Store(c)
	return nil
}

// RestartNeeded lists the global directives (marked Restart in the table)
// whose value differs between old and cur: a reload swaps the snapshot but
// the daemon keeps its sockets, spool and user until it restarts, so the
// caller should log these.
func RestartNeeded(old, cur *Config) []string {
	var out []string
	for i := range Directives {
		d := &Directives[i]
		if !d.Restart || !contains(d.Blocks, KindGlobal) {
			continue
		}
		if !reflect.DeepEqual(values(old.global, d.Name), values(cur.global, d.Name)) {
			out = append(out, d.Name)
		}
	}
	return out
}

func values(b *Block, name string) []any {
	var out []any
	for _, e := range b.entries(name) {
		out = append(out, e.v)
	}
	return out
}
