package spool

import (
	"errors"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/sluicemta/sluice/internal/qid"
)

// Spool is an open spool directory. All methods are safe for concurrent use.
type Spool struct {
	dir  string
	opt  Options
	fs   FS
	lock io.Closer
	logf func(format string, args ...any)

	// mu guards the index, the segment table and the graveyard.
	mu         sync.Mutex
	x          *index
	segs       map[uint32]*segment
	seqs       []uint32 // sorted keys of segs
	grave      map[[idLen]byte]graveEnt
	nextSeq    uint32 // order number of the next segment to become active
	nextFile   uint32 // number in the next segment file's name
	recovering bool
	compactQ   []uint32
	scratch    rec

	recovered chan struct{}
	wake      chan struct{}
	compactCh chan struct{}

	// The commit queue.
	qmu     sync.Mutex
	pending []*request
	qch     chan struct{}
	closed  bool

	// Owned by the committer goroutine.
	active     *segment // written under mu too: the compactor reads it
	woff       int64
	fsFree     int64 // the file system's free space at fsAt
	fsAt       time.Time
	spare      *segment // guarded by spareMu
	spareMu    sync.Mutex
	spareCh    chan struct{}
	recycleCh  chan *segment // removed segments whose files may be reused
	recycled   []*segment    // files ready for reuse; guarded by spareMu
	reused     int           // files readied for reuse so far; guarded by spareMu
	abandonSeq uint32
	abandonLen int64
	buf        []byte // the committer's batch buffer, reused
	stats      commitStats

	stop chan struct{}
	wg   sync.WaitGroup
}

// graveEnt remembers, for a finished message, which segments may still
// hold its content record, so its tombstone is carried while they exist.
type graveEnt struct{ first, last uint32 }

type commitStats struct {
	mu      sync.Mutex
	fsyncs  int // fdatasync calls made for batches
	batches int
	builds  int     // requests the committer built (compaction chunks)
	hist    [12]int // batch sizes in requests: 1, 2-3, 4-7, ... (powers of two)
	// time spent, summed over batches: in write, in fdatasync, in
	// applying and answering, and in gathering the next batch
	// (benchmarks report them)
	writeTime, syncTime, applyTime, gatherTime time.Duration
}

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

type request struct {
	buf     []byte
	pooled  bool                                                // buf came from getBuf; the committer returns it
	reserve bool                                                // may use the reserve
	build   func(s *Spool, b []byte, limit int) ([]byte, error) // encoded by the committer (compaction), about limit bytes
	done    chan error
}

// Open opens (creating if needed) the spool in dir and takes its lock; a
// second Open of the same dir by another process fails with ErrLocked.
// It returns as soon as new appends can be accepted; the index of old
// segments keeps loading in the background until Recovered is closed.
func Open(dir string, opt Options) (*Spool, error) {
	if opt.SegmentSize == 0 {
		opt.SegmentSize = defaultSize
	}
	if opt.SegmentSize < 4096 || opt.SegmentSize > 1<<32-1 {
		return nil, fmt.Errorf("spool: segment size %d out of range", opt.SegmentSize)
	}
	if opt.Reserve == 0 {
		opt.Reserve = 2 * opt.SegmentSize
	}
	if opt.FS == nil {
		opt.FS = OSFS{}
	}
	s := &Spool{
		dir:        dir,
		opt:        opt,
		fs:         opt.FS,
		logf:       opt.Logf,
		segs:       make(map[uint32]*segment),
		grave:      make(map[[idLen]byte]graveEnt),
		recovering: true,
		recovered:  make(chan struct{}),
		wake:       make(chan struct{}, 1),
		compactCh:  make(chan struct{}, 1),
		qch:        make(chan struct{}, 1),
		spareCh:    make(chan struct{}, 1),
		recycleCh:  make(chan *segment, maxRecycled),
		stop:       make(chan struct{}),
		x:          newIndex(time.Now().UnixNano()),
	}
	if s.logf == nil {
		s.logf = func(string, ...any) {}
	}
	if err := s.fs.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("spool: create %s: %w", dir, err)
	}
	lock, err := s.fs.Lock(dir)
	if err != nil {
		if errors.Is(err, ErrLocked) {
			return nil, fmt.Errorf("spool: %s: %w", dir, ErrLocked)
		}
		return nil, fmt.Errorf("spool: lock %s: %w", dir, err)
	}
	s.lock = lock
	names, err := s.fs.ReadDir(dir)
	if err != nil {
		lock.Close()
		return nil, fmt.Errorf("spool: read %s: %w", dir, err)
	}
	// Headers are read now (64 bytes each) so that the new active segment
	// sorts after every old one; their records are read in the background.
	var old []oldSeg
	s.nextSeq, s.nextFile = 1, 1
	for _, n := range names {
		if strings.HasSuffix(n, freeSuffix) {
			// A removed segment's file not yet reused: nothing in it counts.
			if err := s.fs.Remove(dir + "/" + n); err != nil {
				s.logf("spool: remove %s: %v", n, err)
			}
			continue
		}
		fileNo, ok := parseSegName(n)
		if !ok {
			continue
		}
		if fileNo >= s.nextFile {
			s.nextFile = fileNo + 1
		}
		g, h, err := s.openOld(fileNo)
		if err != nil {
			lock.Close()
			return nil, err
		}
		if g == nil {
			continue
		}
		old = append(old, oldSeg{g, h})
		if g.seq >= s.nextSeq {
			s.nextSeq = g.seq + 1
		}
	}
	sort.Slice(old, func(i, j int) bool { return old[i].g.seq < old[j].g.seq })
	// The first active segment is made before returning so that Submit
	// works at once; old segments are read in the background.
	if err := s.roll(); err != nil {
		if !errors.Is(err, ErrNoSpace) {
			lock.Close()
			return nil, err
		}
		// A full disk must not keep the daemon from starting: the queue
		// is readable, and the first append tries again.
		s.logf("%v; appends fail until space returns", err)
	}
	s.wg.Add(4)
	go s.preparer()
	go s.committer()
	go s.recover(old)
	go s.compactor()
	return s, nil
}

// Recovered is closed when the index holds every message of the old segments.
func (s *Spool) Recovered() <-chan struct{} { return s.recovered }

// Close stops the committer (pending appends finish first), unmaps and
// releases the lock.
func (s *Spool) Close() error {
	s.qmu.Lock()
	if s.closed {
		s.qmu.Unlock()
		return ErrClosed
	}
	s.closed = true
	s.qmu.Unlock()
	close(s.stop)
	s.signal()
	s.wg.Wait()
	s.mu.Lock()
	var errs []error
	// Files made ahead of need (the spare, reused files readied) stay for
	// the next Open (keepSpare); those removed but not yet readied are
	// deleted, as Open would.
	s.spareMu.Lock()
	defer s.spareMu.Unlock()
	files := append(s.recycled, s.spare)
	for _, g := range s.segs {
		files = append(files, g)
	}
	for _, g := range files {
		if g != nil {
			if err := closeFile(g); err != nil {
				errs = append(errs, err)
			}
		}
	}
	s.spare, s.recycled = nil, nil
	for len(s.recycleCh) > 0 { // the preparer, its reader, has stopped
		s.dropFile(<-s.recycleCh)
	}
	s.mu.Unlock()
	if err := s.lock.Close(); err != nil {
		errs = append(errs, err)
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("spool: close: %w", err)
	}
	return nil
}

func (s *Spool) signal() {
	select {
	case s.qch <- struct{}{}:
	default:
	}
}

func (s *Spool) notify() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// enqueue hands r to the committer and waits for the batch holding it.
func (s *Spool) enqueue(r *request) error {
	r.done = make(chan error, 1)
	s.qmu.Lock()
	if s.closed {
		s.qmu.Unlock()
		return ErrClosed
	}
	s.pending = append(s.pending, r)
	s.qmu.Unlock()
	s.signal()
	return <-r.done
}

// Encoding buffers of Commit are reused once the committer has copied
// them into its batch: at tens of thousands of appends a second, fresh
// ones would keep the heap growing and the collector busy. Big ones are
// not kept. Only Commit's own buffers go back (request.pooled): other
// callers may still hold theirs, or slices of them (deleteWhere).
var bufPool sync.Pool // *[]byte

const maxPooledBuf = 64 << 10

func getBuf(size int) []byte {
	if p, ok := bufPool.Get().(*[]byte); ok && cap(*p) >= size {
		return (*p)[:0]
	}
	return make([]byte, 0, max(size, 4096))
}

func putBuf(b []byte) {
	if cap(b) <= maxPooledBuf {
		bufPool.Put(&b)
	}
}

func parseID(id string) ([idLen]byte, error) {
	var b [idLen]byte
	if err := qid.Check(id); err != nil {
		return b, fmt.Errorf("spool: %w", err)
	}
	copy(b[:], id)
	return b, nil
}

func (s *Spool) checkMessage(m *Message) ([idLen]byte, error) {
	id, err := parseID(m.ID)
	if err != nil {
		return id, err
	}
	if len(m.Recipients) == 0 {
		return id, fmt.Errorf("spool: message %s: no recipients", m.ID)
	}
	if len(m.Recipients) > maxRcpts {
		return id, fmt.Errorf("spool: message %s: %d recipients, at most %d", m.ID, len(m.Recipients), maxRcpts)
	}
	return id, nil
}

// Submit appends a new message and returns when it is durable. All its
// recipients are due at once. It fails with ErrNoSpace when only the
// reserve is left.
func (s *Spool) Submit(m *Message) error {
	var b Batch
	b.Submit(m, false)
	return s.Commit(&b)
}

// Commit appends every op of b in one durable batch: all or none.
func (s *Spool) Commit(b *Batch) error {
	r := &request{reserve: true}
	if err := s.encode(b, r); err != nil {
		return err
	}
	if len(r.buf) == 0 {
		return nil
	}
	return s.enqueue(r)
}

// encode turns b's ops into frames, reading the index for the attempt
// counts; ops on messages the spool no longer holds are dropped.
func (s *Spool) encode(b *Batch, r *request) error {
	type key struct {
		m    int32
		rcpt int
	}
	var local map[key]uint32 // attempts already counted earlier in this batch
	for _, o := range b.ops {
		if o.kind == opSubmit {
			id, err := s.checkMessage(o.msg)
			if err != nil {
				return err
			}
			if !o.reserve {
				r.reserve = false
			}
			if r.buf == nil {
				r.buf, r.pooled = getBuf(len(o.msg.Content)+256+64*len(o.msg.Recipients)), true
			}
			r.buf = appendMessage(r.buf, kMessage, id, o.msg, false, nil, o.msg.Content)
			if o.msg.Held {
				// In the same batch, applied right after the message under
				// one lock: PopDue can never hand out a message submitted held.
				r.buf = appendSimple(r.buf, kHold, id)
			}
			if int64(len(r.buf)) > s.opt.SegmentSize-headerSize {
				return fmt.Errorf("spool: message %s: %d bytes do not fit a %d-byte segment", o.msg.ID, len(o.msg.Content), s.opt.SegmentSize)
			}
			// Checked after encoding, so the copy above does not wait
			// for the committer, which holds the lock while it applies.
			s.mu.Lock()
			_, dup := s.x.idGet(id)
			s.mu.Unlock()
			if dup {
				return fmt.Errorf("spool: message %s already queued", o.msg.ID)
			}
			continue
		}
		id, err := parseID(o.id)
		if err != nil {
			return err
		}
		s.mu.Lock()
		mi, ok := s.lookup(id)
		if !ok {
			s.mu.Unlock()
			continue
		}
		m := &s.x.m[mi]
		if o.rcpt < 0 || o.rcpt >= int(m.nrcpt) {
			s.mu.Unlock()
			return fmt.Errorf("spool: message %s has no recipient %d", o.id, o.rcpt)
		}
		rc := &s.x.r[m.rcpt0+int32(o.rcpt)]
		attempts, attempted := rc.attempts, rc.flags&rAttempted != 0
		if Status(rc.status).Finished() {
			s.mu.Unlock()
			continue
		}
		s.mu.Unlock()
		k := key{mi, o.rcpt}
		if a, ok := local[k]; ok {
			attempts, attempted = a, true
		}
		switch o.kind {
		case opAttempt:
			attempts++
			r.buf = appendAttempt(r.buf, id, o.rcpt, int(attempts), o.next.UnixNano())
			if local == nil {
				local = make(map[key]uint32)
			}
			local[k] = attempts
		case opOutcome:
			if !attempted {
				attempts++
			}
			var next int64
			if o.status == Deferred {
				next = o.next.UnixNano()
			}
			r.buf = appendOutcome(r.buf, id, o.rcpt, o.status, int(attempts), next, o.reason)
		}
	}
	return nil
}

// lookup finds a live message, waiting for recovery when it may still be
// in an old segment. Called with s.mu held; may release it meanwhile.
func (s *Spool) lookup(id [idLen]byte) (int32, bool) {
	for {
		if mi, ok := s.x.idGet(id); ok {
			return mi, true
		}
		if !s.recovering {
			return 0, false
		}
		s.mu.Unlock()
		<-s.recovered
		s.mu.Lock()
	}
}

// simple commits a one-record change to message id.
func (s *Spool) simple(id string, build func(b []byte, bid [idLen]byte, mi int32) []byte) error {
	bid, err := parseID(id)
	if err != nil {
		return err
	}
	s.mu.Lock()
	mi, ok := s.lookup(bid)
	if !ok {
		s.mu.Unlock()
		return fmt.Errorf("spool: %s: %w", id, ErrNotFound)
	}
	buf := build(nil, bid, mi)
	s.mu.Unlock()
	return s.enqueue(&request{buf: buf, reserve: true})
}

// Hold keeps a message from being handed out by PopDue until Release.
func (s *Spool) Hold(id string) error {
	return s.simple(id, func(b []byte, bid [idLen]byte, _ int32) []byte { return appendSimple(b, kHold, bid) })
}

// Release undoes Hold; the message's recipients are due at once.
func (s *Spool) Release(id string) error {
	return s.simple(id, func(b []byte, bid [idLen]byte, _ int32) []byte { return appendSimple(b, kRelease, bid) })
}

// Delete removes a message without any DSN (postsuper -d).
func (s *Spool) Delete(id string) error {
	return s.simple(id, func(b []byte, bid [idLen]byte, mi int32) []byte {
		m := &s.x.m[mi]
		return appendDone(b, bid, m.first, m.seg)
	})
}

// deleteWhere deletes, in batches, every live message pick accepts.
func (s *Spool) deleteWhere(pick func(mi int32) bool) (int, error) {
	<-s.recovered
	s.mu.Lock()
	var buf []byte
	n := 0
	for mi := range s.x.m {
		m := &s.x.m[mi]
		if m.flags&mUsed != 0 && pick(int32(mi)) {
			buf = appendDone(buf, m.id, m.first, m.seg)
			n++
		}
	}
	s.mu.Unlock()
	// Split so that no batch outgrows a segment.
	limit := int(s.opt.SegmentSize / 4)
	for len(buf) > 0 {
		cut := len(buf)
		if cut > limit {
			cut = 0
			for cut < limit {
				_, fl, err := frame(buf[cut:], 0) // not yet written: unsalted
				if err != nil || fl == 0 {
					break
				}
				cut += fl
			}
		}
		if err := s.enqueue(&request{buf: buf[:cut], reserve: true}); err != nil {
			return 0, err
		}
		buf = buf[cut:]
	}
	return n, nil
}

// DeleteQueue deletes every message with an unfinished recipient in key's
// queue (their other recipients too) and returns how many.
func (s *Spool) DeleteQueue(key QueueKey) (int, error) {
	return s.deleteWhere(func(mi int32) bool {
		m := &s.x.m[mi]
		for i := m.rcpt0; i < m.rcpt0+m.nrcpt; i++ {
			r := &s.x.r[i]
			if !Status(r.status).Finished() && s.x.queues[r.queue].key == key {
				return true
			}
		}
		return false
	})
}

// DeleteAll deletes every message and returns how many.
func (s *Spool) DeleteAll() (int, error) {
	return s.deleteWhere(func(int32) bool { return true })
}

// rescheduleRcpts makes the waiting recipients of mi due now (RAM only).
func (s *Spool) rescheduleMsg(mi int32, only int32) int {
	m := &s.x.m[mi]
	if m.flags&mHeld != 0 {
		return 0
	}
	n := 0
	for i := m.rcpt0; i < m.rcpt0+m.nrcpt; i++ {
		r := &s.x.r[i]
		if Status(r.status).Finished() || r.flags&rFlight != 0 || (only >= 0 && r.queue != only) {
			continue
		}
		if r.flags&rWheel == 0 && r.flags&rLinked != 0 {
			continue // already ready
		}
		s.x.unlink(i)
		r.next = 0
		s.x.schedule(i)
		n++
	}
	return n
}

// Reschedule makes every waiting recipient of id due now (postqueue -i).
func (s *Spool) Reschedule(id string) error {
	bid, err := parseID(id)
	if err != nil {
		return err
	}
	s.mu.Lock()
	mi, ok := s.lookup(bid)
	if ok {
		s.rescheduleMsg(mi, -1)
	}
	s.mu.Unlock()
	if !ok {
		return fmt.Errorf("spool: %s: %w", id, ErrNotFound)
	}
	s.notify()
	return nil
}

// RescheduleQueue makes every waiting recipient of key's queue due now.
func (s *Spool) RescheduleQueue(key QueueKey) int {
	<-s.recovered
	s.mu.Lock()
	n := 0
	if dm, ok := s.x.qidx[key.VMTA]; ok {
		if q, ok := dm[key.Domain]; ok {
			for mi := range s.x.m {
				if s.x.m[mi].flags&mUsed != 0 {
					n += s.rescheduleMsg(int32(mi), q)
				}
			}
		}
	}
	s.mu.Unlock()
	s.notify()
	return n
}

// RescheduleAll makes every waiting recipient due now (postqueue -f).
func (s *Spool) RescheduleAll() int {
	<-s.recovered
	s.mu.Lock()
	n := 0
	for mi := range s.x.m {
		if s.x.m[mi].flags&mUsed != 0 {
			n += s.rescheduleMsg(int32(mi), -1)
		}
	}
	s.mu.Unlock()
	s.notify()
	return n
}

// PopDue returns up to max recipients whose next-try time is at or before
// now, that are not held and not in flight, taking queues in turn, and
// marks them in flight (in RAM only) until an outcome is committed.
func (s *Spool) PopDue(now time.Time, max int) []Due {
	s.mu.Lock()
	defer s.mu.Unlock()
	idx := s.x.popDue(now.UnixNano(), max, nil)
	return s.dues(idx)
}

// PopDueQueue is PopDue restricted to one queue.
func (s *Spool) PopDueQueue(key QueueKey, now time.Time, max int) []Due {
	s.mu.Lock()
	defer s.mu.Unlock()
	dm, ok := s.x.qidx[key.VMTA]
	if !ok {
		return nil
	}
	q, ok := dm[key.Domain]
	if !ok {
		return nil
	}
	s.x.advance(now.UnixNano())
	return s.dues(s.x.popReady(q, max, nil))
}

func (s *Spool) dues(idx []int32) []Due {
	if len(idx) == 0 {
		return nil
	}
	out := make([]Due, len(idx))
	for k, i := range idx {
		r := &s.x.r[i]
		m := &s.x.m[r.msg]
		out[k] = Due{ID: string(m.id[:]), Rcpt: int(i - m.rcpt0), Queue: s.x.queues[r.queue].key, Attempts: int(r.attempts)}
	}
	return out
}

// Return puts a popped recipient back without an outcome (e.g. a rate
// limit was hit before dialling): due again at next, in RAM only.
func (s *Spool) Return(d Due, next time.Time) {
	bid, err := parseID(d.ID)
	if err != nil {
		return
	}
	s.mu.Lock()
	mi, ok := s.x.idGet(bid)
	if ok && d.Rcpt >= 0 && d.Rcpt < int(s.x.m[mi].nrcpt) {
		i := s.x.m[mi].rcpt0 + int32(d.Rcpt)
		r := &s.x.r[i]
		if r.flags&rFlight != 0 && !Status(r.status).Finished() {
			s.x.account(i, -1)
			r.flags &^= rFlight
			r.next = next.UnixNano()
			s.x.account(i, 1)
			if s.x.m[mi].flags&mHeld == 0 {
				s.x.schedule(i)
			}
		}
	}
	s.mu.Unlock()
	s.notify()
}

// Wake returns a channel that receives (capacity 1, never closed) when
// something becomes due earlier than NextDue said before: a Submit,
// Reschedule, Release or Return.
func (s *Spool) Wake() <-chan struct{} { return s.wake }

// NextDue returns when PopDue will next hand out a waiting recipient that
// is not held or in flight: its next-try time rounded up to the wheel's
// 268 ms tick, or earlier (PopDue then returns nothing and NextDue moves
// on); false when there is none.
func (s *Spool) NextDue() (time.Time, bool) {
	s.mu.Lock()
	t, ok := s.x.nextDue()
	s.mu.Unlock()
	if !ok {
		return time.Time{}, false
	}
	return time.Unix(0, t), true
}

// Stats returns totals and per-queue counts.
func (s *Spool) Stats() Stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := Stats{
		Messages:   s.x.nmsgs,
		Recipients: s.x.nrcpts,
		Held:       s.x.nheld,
		Bytes:      s.x.bytes,
		Segments:   len(s.segs),
		Recovering: s.recovering,
		Queues:     make(map[QueueKey]QueueStats),
	}
	for _, g := range s.segs {
		st.DiskBytes += g.size
	}
	for _, q := range s.x.queues {
		if q.st.Recipients > 0 {
			st.Queues[q.key] = q.st
		}
	}
	return st
}

var _ = os.O_RDONLY
