// Package spool is sluice's queue store: fixed-size append-only segment
// files written by one group-committing goroutine, message content read
// back through mmap, and a compact in-RAM index of every queued recipient
// rebuilt from the segments at start. See FORMAT.md for the on-disk layout.
//
// Durability contract: Submit and Commit return nil only after the batch
// that holds their records has been written and fdatasync'ed. A crash or
// power cut at any instant loses nothing that was acknowledged.
package spool

import (
	"errors"
	"io"
	"os"
	"strings"
	"time"
)

// ErrNoSpace is returned by Submit (and by a Batch whose Submit does not use
// the reserve) when only the reserve is left on the spool's file system.
// The SMTP layer answers it with "452 4.3.1 Insufficient system storage".
var ErrNoSpace = errors.New("spool: insufficient system storage")

// ErrNotFound is returned for a queue id the spool does not hold (never
// queued, or already finished or deleted).
var ErrNotFound = errors.New("spool: no such message")

// ErrClosed is returned by every operation after Close.
var ErrClosed = errors.New("spool: closed")

// ErrLocked is returned by Open when another process holds the spool.
var ErrLocked = errors.New("spool: directory in use by another process")

// ErrUnreadable is returned by Content reads when the storage under the
// mapping failed (SIGBUS); the message has been set aside (held).
var ErrUnreadable = errors.New("spool: message content unreadable")

// Options configure Open. The zero value is usable.
type Options struct {
	// SegmentSize is the size of every segment file (default 64 MiB).
	SegmentSize int64
	// Reserve is the free space (bytes) kept for state records and DSNs:
	// plain submissions fail with ErrNoSpace once only this much is left
	// (default 2 segments).
	Reserve int64
	// FS is the file system to work through; nil means the real one (OSFS).
	FS FS
	// Logf receives recovery and I/O reports (torn tails, abandoned
	// segments); nil discards them.
	Logf func(format string, args ...any)

	// noSync skips fdatasync; benchmarks use it to build big spools fast.
	noSync bool
	// noCompact turns compaction off (benchmarks).
	noCompact bool
	// recoverGate, if set, holds recovery until it is closed (tests).
	recoverGate chan struct{}
}

// FS is everything the spool asks of the file system, so tests can model
// power cuts and full disks. OSFS is the real implementation.
type FS interface {
	OpenFile(name string, flag int, perm os.FileMode) (File, error)
	Remove(name string) error
	// ReadDir returns the names (not paths) of the entries of dir.
	ReadDir(dir string) ([]string, error)
	// SyncDir makes creations and removals in dir durable.
	SyncDir(dir string) error
	// Rename renames a file within dir; SyncDir makes it durable.
	Rename(oldpath, newpath string) error
	MkdirAll(dir string, perm os.FileMode) error
	// Lock takes an exclusive, non-blocking lock on dir for this process.
	Lock(dir string) (io.Closer, error)
	// Avail reports the bytes still free for new segments under dir.
	Avail(dir string) (int64, error)
}

// File is one open segment.
type File interface {
	io.ReaderAt
	io.WriterAt
	io.Closer
	// Datasync is fdatasync: it returns after every completed WriteAt is durable.
	Datasync() error
	// Allocate reserves size bytes (fallocate) so later writes cannot hit ENOSPC.
	Allocate(size int64) error
	// Map returns a read-only shared mapping of the first size bytes; it
	// sees later WriteAt calls.
	Map(size int64) ([]byte, error)
	// Unmap releases a mapping Map returned.
	Unmap(b []byte) error
	// DropCache asks the kernel to forget cached pages (posix_fadvise DONTNEED).
	DropCache() error
}

// Notify is the DSN NOTIFY parameter of one recipient (RFC 3461), a bit
// set; zero means none was given. smtpd and bounce use this same type, so
// a recipient's NOTIFY passes from SMTP to the spool to a DSN unconverted.
type Notify uint8

const (
	NotifyNever Notify = 1 << iota
	NotifySuccess
	NotifyFailure
	NotifyDelay
)

// String is the NOTIFY value as sent: "NEVER" or a comma list of
// SUCCESS, FAILURE and DELAY; "" for none.
func (f Notify) String() string {
	if f == 0 {
		return ""
	}
	var w []string
	for _, k := range []struct {
		f Notify
		s string
	}{{NotifyNever, "NEVER"}, {NotifySuccess, "SUCCESS"}, {NotifyFailure, "FAILURE"}, {NotifyDelay, "DELAY"}} {
		if f&k.f != 0 {
			w = append(w, k.s)
		}
	}
	return strings.Join(w, ",")
}

// Recipient is one envelope recipient as received.
type Recipient struct {
	Addr   string
	ORCPT  string // RFC 3461 ORCPT, as received ("rfc822;user@example.com"); "" if none
	Notify Notify // 0 = not given (default FAILURE,DELAY semantics are the DSN layer's)
}

// Message is a message as submitted. Envelope returns it with Content nil.
type Message struct {
	ID      string // from qid.New; checked with qid.Check
	Arrival time.Time
	Sender  string // "" = null sender
	// ESMTP MAIL parameters.
	Ret      string // RET=FULL|HDRS, "" if not given
	EnvID    string // ENVID, "" if not given
	SMTPUTF8 bool
	Body     string // BODY=7BIT|8BITMIME|BINARYMIME, "" if not given

	Recipients []Recipient
	JobID      string
	VMTA       string
	Content    []byte // the whole message, CRLF line endings

	// Origin says where the message came from, for accounting.
	Origin Origin

	// Held submits the message on hold (a milter's quarantine): it is
	// durable and listed, but not handed out by PopDue until Release.
	Held bool

	// Verify marks an address-verification request (sendmail -bv): its
	// recipients are to be probed, not delivered to, and a report mailed
	// to the sender. The spool only keeps the mark.
	Verify bool
}

// Origin is where a message came from: accounting's srcType, srcMta and
// rcvSmtpUser. The zero value (unknown) takes no space on disk.
type Origin struct {
	Type     string // "smtp", or "api" for sendmail, pickup and maildrop (PowerMTA's words)
	Helo     string // the client's HELO/EHLO name
	Addr     string // the client's IP address
	AuthUser string // the SMTP AUTH user
}

// Status is where one recipient stands.
type Status uint8

const (
	Queued    Status = iota // never tried, or due again after Reschedule
	Deferred                // tried, will be tried again at Next
	Delivered               // finished
	Bounced                 // finished, permanently failed
	Expired                 // finished, gave up after the queue lifetime
)

func (s Status) String() string {
	switch s {
	case Queued:
		return "queued"
	case Deferred:
		return "deferred"
	case Delivered:
		return "delivered"
	case Bounced:
		return "bounced"
	case Expired:
		return "expired"
	}
	return "unknown"
}

// Finished reports whether no more delivery will be attempted.
func (s Status) Finished() bool { return s >= Delivered }

// RcptState is one recipient's durable state.
type RcptState struct {
	Status   Status
	Attempts int
	Next     time.Time // next try (wall clock); zero when finished
	Reason   string    // last reply or reason, "" if none
	Active   bool      // popped by PopDue or marked by Attempt, no outcome yet
}

// QueueKey names a queue: (virtual MTA, lower-cased recipient domain).
// MX rollup is the scheduler's business, not the spool's.
type QueueKey struct {
	VMTA   string
	Domain string
}

// Due is one recipient handed out by PopDue.
type Due struct {
	ID       string
	Rcpt     int // index into Message.Recipients
	Queue    QueueKey
	Attempts int // attempts so far
}

// MessageInfo is what Walk reports per live message (for mailq).
type MessageInfo struct {
	ID         string
	Arrival    time.Time
	Size       int64
	Sender     string
	Held       bool
	Active     bool // some recipient is in flight
	Recipients []RcptInfo
}

// RcptInfo is one recipient in a MessageInfo.
type RcptInfo struct {
	Addr string
	RcptState
}

// QueueStats counts the unfinished recipients of one queue.
type QueueStats struct {
	Recipients int   // unfinished
	Deferred   int   // of which waiting for a later try
	Active     int   // of which in flight
	Bytes      int64 // content size summed over those recipients
}

// Stats are spool totals.
type Stats struct {
	Messages   int   // live messages
	Recipients int   // unfinished recipients
	Held       int   // held messages
	Bytes      int64 // content bytes of live messages
	Segments   int   // segment files
	DiskBytes  int64 // bytes those files take
	Recovering bool  // recovery is still reading old segments
	Queues     map[QueueKey]QueueStats
}

// Batch collects changes to commit together in one durable write. The zero
// value is an empty batch. Ops on a message the spool no longer holds
// (deleted meanwhile) are skipped when committed.
type Batch struct {
	ops []op
}

// Delivered marks recipient rcpt of message id delivered.
func (b *Batch) Delivered(id string, rcpt int, reason string) {
	b.ops = append(b.ops, op{kind: opOutcome, id: id, rcpt: rcpt, status: Delivered, reason: reason})
}

// Deferred marks a recipient deferred until next; the spool counts the attempt.
func (b *Batch) Deferred(id string, rcpt int, next time.Time, reason string) {
	b.ops = append(b.ops, op{kind: opOutcome, id: id, rcpt: rcpt, status: Deferred, next: next, reason: reason})
}

// Bounced marks a recipient permanently failed.
func (b *Batch) Bounced(id string, rcpt int, reason string) {
	b.ops = append(b.ops, op{kind: opOutcome, id: id, rcpt: rcpt, status: Bounced, reason: reason})
}

// Expired marks a recipient given up on (queue lifetime reached).
func (b *Batch) Expired(id string, rcpt int, reason string) {
	b.ops = append(b.ops, op{kind: opOutcome, id: id, rcpt: rcpt, status: Expired, reason: reason})
}

// Attempt records, before dialling, that recipient rcpt is being tried
// (attempts+1) and is due at next if no outcome follows (a crash). The
// recipient stays in flight until an outcome op.
func (b *Batch) Attempt(id string, rcpt int, next time.Time) {
	b.ops = append(b.ops, op{kind: opAttempt, id: id, rcpt: rcpt, next: next})
}

// Submit adds a new message to the batch. useReserve lets it use the
// reserve (DSNs queued with the bounce records that cause them).
func (b *Batch) Submit(m *Message, useReserve bool) {
	b.ops = append(b.ops, op{kind: opSubmit, msg: m, reserve: useReserve})
}

// Len is the number of ops in the batch.
func (b *Batch) Len() int { return len(b.ops) }

// Reset empties the batch for reuse.
func (b *Batch) Reset() { b.ops = b.ops[:0] }
