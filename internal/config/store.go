package config

import "sync/atomic"

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
