package spool

import (
	"io"
	"time"
)

// Spool is an open spool directory. All methods are safe for concurrent use.
type Spool struct{}

type opKind uint8

const (
	opSubmit opKind = iota + 1
	opOutcome
	opAttempt
)

type op struct {
	kind    opKind
	id      string
	rcpt    int
	status  Status
	next    time.Time
	reason  string
	msg     *Message
	reserve bool
}

// Open opens (creating if needed) the spool in dir and takes its lock; a
// second Open of the same dir by another process fails with ErrLocked.
// It returns as soon as new appends can be accepted; the index of old
// segments keeps loading in the background until Recovered is closed.
func Open(dir string, opt Options) (*Spool, error) { panic("TODO") }

// Recovered is closed when the index holds every message of the old segments.
func (s *Spool) Recovered() <-chan struct{} { panic("TODO") }

// Close stops the committer (pending appends finish first), unmaps and
// releases the lock.
func (s *Spool) Close() error { panic("TODO") }

// Submit appends a new message and returns when it is durable. All its
// recipients are due at once. It fails with ErrNoSpace when only the
// reserve is left.
func (s *Spool) Submit(m *Message) error { panic("TODO") }

// Commit appends every op of b in one durable batch: all or none.
func (s *Spool) Commit(b *Batch) error { panic("TODO") }

// Hold keeps a message from being handed out by PopDue until Release.
func (s *Spool) Hold(id string) error { panic("TODO") }

// Release undoes Hold; the message's recipients are due at once.
func (s *Spool) Release(id string) error { panic("TODO") }

// Delete removes a message without any DSN (postsuper -d).
func (s *Spool) Delete(id string) error { panic("TODO") }

// DeleteQueue deletes every message with an unfinished recipient in key's
// queue (their other recipients too) and returns how many.
func (s *Spool) DeleteQueue(key QueueKey) (int, error) { panic("TODO") }

// DeleteAll deletes every message and returns how many.
func (s *Spool) DeleteAll() (int, error) { panic("TODO") }

// Reschedule makes every waiting recipient of id due now (postqueue -i).
func (s *Spool) Reschedule(id string) error { panic("TODO") }

// RescheduleQueue makes every waiting recipient of key's queue due now.
func (s *Spool) RescheduleQueue(key QueueKey) int { panic("TODO") }

// RescheduleAll makes every waiting recipient due now (postqueue -f).
func (s *Spool) RescheduleAll() int { panic("TODO") }

// PopDue returns up to max recipients whose next-try time is at or before
// now, that are not held and not in flight, taking queues in turn, and
// marks them in flight (in RAM only) until an outcome is committed.
func (s *Spool) PopDue(now time.Time, max int) []Due { panic("TODO") }

// PopDueQueue is PopDue restricted to one queue.
func (s *Spool) PopDueQueue(key QueueKey, now time.Time, max int) []Due { panic("TODO") }

// Return puts a popped recipient back without an outcome (e.g. a rate
// limit was hit before dialling): due again at next, in RAM only.
func (s *Spool) Return(d Due, next time.Time) { panic("TODO") }

// Wake returns a channel that receives (capacity 1, never closed) when
// something becomes due earlier than NextDue said before: a Submit,
// Reschedule, Release or Return.
func (s *Spool) Wake() <-chan struct{} { panic("TODO") }

// NextDue returns the earliest next-try time of a waiting recipient that
// is not held or in flight; false when there is none.
func (s *Spool) NextDue() (time.Time, bool) { panic("TODO") }

// Envelope returns a message's envelope (Content nil) and the state of
// each of its recipients.
func (s *Spool) Envelope(id string) (*Message, []RcptState, error) { panic("TODO") }

// Content returns the message content, backed by the segment mapping.
// The caller must Close it; until then the segment is not unmapped.
func (s *Spool) Content(id string) (*Content, error) { panic("TODO") }

// Walk calls fn for every live message until fn returns false (mailq).
// It holds no lock across fn, so writers are never stopped.
func (s *Spool) Walk(fn func(info MessageInfo) bool) { panic("TODO") }

// Stats returns totals and per-queue counts.
func (s *Spool) Stats() Stats { panic("TODO") }

// Content is one message's content in a segment mapping.
type Content struct{}

// Bytes returns the content without copying. Reading it touches the
// mapping: an I/O error under it raises SIGBUS, so read it inside Do or
// through Reader, which turn such a fault into ErrUnreadable.
func (c *Content) Bytes() []byte { panic("TODO") }

// Len is the content size.
func (c *Content) Len() int { panic("TODO") }

// Do calls fn with the content while a memory fault is turned into
// ErrUnreadable (and the message set aside) instead of killing the process.
func (c *Content) Do(fn func(b []byte) error) error { panic("TODO") }

// Reader returns a fault-safe reader over the content (io.Reader,
// io.ReaderAt, io.WriterTo, io.Seeker); nothing is copied to the heap
// beyond the caller's buffers.
func (c *Content) Reader() io.ReadSeeker { panic("TODO") }

// Close releases the mapping reference. Bytes must not be used afterwards.
func (c *Content) Close() error { panic("TODO") }
