package spool

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math/bits"
	"math/rand/v2"
	"runtime"
	"sort"
	"time"
)

// The committer is the only writer. It takes every pending request and
// writes them with one WriteAt; one fdatasync per batch makes them durable;
// only then are their records applied to the index and the callers
// answered. Requests that arrive meanwhile form the next batch, so a lone
// writer never waits for company and many writers share one fdatasync.
//
// One batch is on its way to the disk at a time. Overlapping fdatasyncs
// was measured on a 2-core VM and lost: the kernel serializes them on the
// file and each costs a cache flush, so overlapping only split the writers
// into two groups and halved the batches, and a flush's cost grows far
// slower than its size. So batches are made as large as the callers allow:
// the next one is cut only once the callers just answered have had the
// processor to queue their next appends (gather).
func (s *Spool) committer() {
	defer s.wg.Done()
	for {
		reqs, closed := s.take()
		if len(reqs) == 0 {
			if closed {
				return
			}
			select {
			case <-s.qch:
			case <-s.stop:
			}
			continue
		}
		if s.commitBatch(reqs) > 0 {
			t := time.Now()
			s.gather()
			s.stats.mu.Lock()
			s.stats.gatherTime += time.Since(t)
			s.stats.mu.Unlock()
		}
	}
}

// take returns the pending requests, and whether the spool is closing.
func (s *Spool) take() ([]*request, bool) {
	s.qmu.Lock()
	defer s.qmu.Unlock()
	reqs := s.pending
	s.pending = nil
	return reqs, s.closed
}

// gather lets the callers just answered queue their next appends before
// the next batch is cut: it yields the processor for as long as yielding
// brings more requests, and no longer. No timer is involved, so a lone
// writer, or writers with nothing more to send, are not kept waiting.
func (s *Spool) gather() {
	prev := -1
	for range 64 {
		s.qmu.Lock()
		n := len(s.pending)
		s.qmu.Unlock()
		if n == prev {
			return
		}
		prev = n
		runtime.Gosched()
	}
}

// complete finishes a batch written at off in g whose write or fdatasync
// returned err, and reports how many callers were answered with success.
func (s *Spool) complete(reqs []*request, g *segment, off int64, buf []byte, err error) int {
	if err != nil {
		// Never fdatasync the same file again and trust it: after a
		// failed writeback the kernel may have dropped the dirty pages
		// and a second fdatasync reports success. Abandon the segment;
		// the next one's header says where its trustworthy part ends.
		s.logf("spool: segment %d: write or fdatasync failed at offset %d, abandoning it: %v", g.seq, off, err)
		s.abandonSeq, s.abandonLen = g.seq, off
		s.sealNoFooter()
		werr := fmt.Errorf("spool: write segment %d: %w", g.seq, err)
		for _, r := range reqs {
			r.done <- werr
		}
		return 0
	}
	s.mu.Lock()
	g.end = off + int64(len(buf))
	woke := s.applyBuf(buf, g, off)
	s.mu.Unlock()
	if woke {
		s.notify()
	}
	for _, r := range reqs {
		r.done <- nil
	}
	s.kickCompaction()
	return len(reqs)
}

// avail is the space appends may use: the file system's free space and
// what the spool's own files have left.
func (s *Spool) avail() int64 {
	a := s.fsAvail()
	if s.active != nil {
		a += s.active.size - s.woff
	}
	s.spareMu.Lock()
	if s.spare != nil {
		a += s.spare.size
	}
	for _, g := range s.recycled {
		a += g.size
	}
	s.spareMu.Unlock()
	return a
}

// fsAvail is the file system's free space. Far from the reserve, a figure
// up to 50 ms old does: statfs costs tens of microseconds a batch, and no
// disk fills hundreds of megabytes in 50 ms. Near it, every batch asks.
func (s *Spool) fsAvail() int64 {
	now := time.Now()
	if s.fsFree > s.opt.Reserve+4*s.opt.SegmentSize && now.Sub(s.fsAt) < 50*time.Millisecond {
		return s.fsFree
	}
	a, err := s.fs.Avail(s.dir)
	if err != nil {
		s.logf("spool: statfs %s: %v", s.dir, err)
		a = 0
	}
	s.fsFree, s.fsAt = a, now
	return a
}

// commitBatch writes reqs, in as many batches as segment ends require,
// and reports how many callers were answered with success.
func (s *Spool) commitBatch(reqs []*request) int {
	// Compaction output is encoded first, from an index that reflects
	// every earlier record, so its snapshots are exact.
	nb := sortBuilds(reqs)
	// What the committer builds (compaction) may be as big as the callers'
	// appends it rides with, or compactChunk if they are fewer: compaction
	// keeps pace with the garbage callers make, and they never wait for
	// much more than twice their own bytes. A quarter segment at most, so
	// that it fits.
	callers := 0
	for _, r := range reqs[nb:] {
		callers += len(r.buf)
	}
	limit := min(max(compactChunk, callers), int(s.opt.SegmentSize/4))
	free := s.avail()
	todo := reqs[:0:0]
	var size int64
	for _, r := range reqs {
		if r.build != nil {
			s.mu.Lock()
			b, err := r.build(s, r.buf[:0], limit)
			s.mu.Unlock()
			if err != nil {
				r.done <- err
				continue
			}
			r.buf = b
			s.stats.mu.Lock()
			s.stats.builds++
			s.stats.mu.Unlock()
		}
		n := int64(len(r.buf))
		if !r.reserve && free-size-n < s.opt.Reserve {
			r.done <- fmt.Errorf("spool: %w (%d bytes free, %d reserved)", ErrNoSpace, free-size, s.opt.Reserve)
			continue
		}
		if n > s.opt.SegmentSize-headerSize {
			r.done <- fmt.Errorf("spool: %d-byte append does not fit a segment", n)
			continue
		}
		size += n
		todo = append(todo, r)
	}
	answered := 0
	for len(todo) > 0 {
		if s.active == nil {
			if err := s.roll(); err != nil {
				for _, r := range todo {
					r.done <- err
				}
				return answered
			}
		}
		// Leave room for the index footer written at sealing.
		room := s.active.size - s.woff - trailerSize - 4096 - s.active.foot
		var n int
		var used int64
		for n < len(todo) {
			l := used + int64(len(todo[n].buf))
			if l+footerGrowth(l) > room {
				break
			}
			used = l
			n++
		}
		if n == 0 && s.woff == headerSize && int64(len(todo[0].buf)) <= s.active.size-headerSize {
			n = 1 // too big to leave footer room: this segment will be scanned
		}
		if n == 0 {
			s.seal()
			continue
		}
		answered += s.writeBatch(todo[:n])
		todo = todo[n:]
	}
	return answered
}

// sortBuilds moves the requests built by the committer to the front and
// returns how many there are.
func sortBuilds(reqs []*request) int {
	k := 0
	for i, r := range reqs {
		if r.build != nil {
			reqs[k], reqs[i] = reqs[i], reqs[k]
			k++
		}
	}
	return k
}

// writeBatch writes reqs at the end of the active segment, makes them
// durable and completes them; it returns how many succeeded.
func (s *Spool) writeBatch(reqs []*request) int {
	g := s.active
	buf := s.buf[:0]
	for _, r := range reqs {
		n := len(buf)
		buf = append(buf, r.buf...)
		saltFrames(buf[n:], g.salt)
		if r.pooled {
			putBuf(r.buf)
			r.buf = nil
		}
	}
	// Zeroes after the batch mark the end of the data: a recycled
	// segment holds old frames there. The next batch overwrites them.
	buf = append(buf, endMark[:]...)
	if cap(buf) <= 4<<20 {
		s.buf = buf // reused by the next batch; an outsized one is not kept
	}
	off := s.woff
	buf = buf[:len(buf)-frameHeader]
	s.woff += int64(len(buf))
	t0 := time.Now()
	mark := min(frameHeader, g.size-off-int64(len(buf))) // none at the file's end
	_, err := g.f.WriteAt(buf[:len(buf)+int(mark)], off)
	t1 := time.Now()
	synced := err == nil && !s.opt.noSync
	if synced {
		err = g.f.Datasync()
	}
	t2 := time.Now()
	n := s.complete(reqs, g, off, buf, err)
	st := &s.stats
	st.mu.Lock()
	if synced {
		st.fsyncs++ // counted where it is called, so fsyncs = batches can fail
	}
	st.batches++
	st.hist[min(bits.Len(uint(len(reqs)))-1, len(st.hist)-1)]++
	st.writeTime += t1.Sub(t0)
	st.syncTime += t2.Sub(t1)
	st.applyTime += time.Since(t2)
	st.mu.Unlock()
	return n
}

// endMark follows every batch on disk (FORMAT.md, Frames).
var endMark [frameHeader]byte

// saltFrames XORs salt into the CRC of every frame in b, which the
// encoders wrote unsalted: a frame checks only in the segment (the life of
// a recycled file) it was written for.
func saltFrames(b []byte, salt uint32) {
	for p := 0; p+frameHeader <= len(b); {
		l := binary.LittleEndian.Uint32(b[p:])
		sum := binary.LittleEndian.Uint32(b[p+4:])
		binary.LittleEndian.PutUint32(b[p+4:], sum^salt)
		p += frameHeader + int(l)
	}
}

// applyBuf applies the records just made durable at off in g. Called with
// s.mu held. It reports whether something became due. The frames are the
// committer's own, their CRCs computed by the encoders moments ago: they
// are split by length, not checked again.
func (s *Spool) applyBuf(buf []byte, g *segment, off int64) bool {
	woke := false
	for p := 0; p < len(buf); {
		l := int(binary.LittleEndian.Uint32(buf[p:]))
		n := frameHeader + l
		if l == 0 || p+n > len(buf) {
			panic(fmt.Sprintf("spool: own batch does not parse at %d: frame length %d", p, l)) // a bug, never disk data
		}
		body := buf[p+frameHeader : p+n]
		if err := s.scratch.parse(body); err != nil {
			panic(fmt.Sprintf("spool: own record does not parse: %v", err))
		}
		g.foot += metaSize(&s.scratch, n)
		if s.apply(&s.scratch, g.seq, uint32(off)+uint32(p), uint32(n), true) {
			woke = true
		}
		p += n
	}
	return woke
}

// seal ends appends to the active segment and has its index footer
// written; the next batch rolls.
func (s *Spool) seal() {
	if g := s.active; g != nil {
		// The footer is written beside the committer: the segment takes
		// no more appends, and a reference keeps its file open.
		s.mu.Lock()
		g.refs++
		s.mu.Unlock()
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			s.writeFooter(g)
			s.unref(g)
		}()
	}
	s.sealNoFooter()
}

// sealNoFooter ends appends to the active segment. An abandoned segment
// gets no footer: recovery scans it up to what its successor vouches for.
func (s *Spool) sealNoFooter() {
	if s.active == nil {
		return
	}
	s.mu.Lock()
	s.active.sealed = true
	s.maybeCompact(s.active)
	s.active = nil // written under s.mu: the compactor reads it
	s.mu.Unlock()
}

// roll makes a fresh segment active: the spare if there is one, else a new
// file. Its header (and any abandon note) goes out with the first batch.
func (s *Spool) roll() error {
	s.spareMu.Lock()
	g := s.spare
	s.spare = nil
	s.spareMu.Unlock()
	if g == nil {
		var err error
		g, err = s.createSegment(s.newFileNo())
		if err != nil {
			return err
		}
	}
	// The order number is given now, not at creation: a spare made
	// earlier must still sort after every segment activated before it.
	s.mu.Lock()
	g.seq = s.nextSeq
	s.nextSeq++
	s.mu.Unlock()
	g.salt = newSalt()
	h := segHeader{seq: uint64(g.seq), created: time.Now().UnixNano(), salt: g.salt}
	if s.abandonSeq != 0 {
		h.abandonSeq, h.abandonLen = uint64(s.abandonSeq), uint64(s.abandonLen)
	}
	if _, err := g.f.WriteAt(h.encode(), 0); err != nil {
		// Nothing was acknowledged from this file: drop it.
		g.f.Unmap(g.data)
		g.f.Close()
		s.fs.Remove(g.path)
		return fmt.Errorf("spool: write header of segment %d: %w", g.seq, err)
	}
	s.abandonSeq, s.abandonLen = 0, 0
	s.mu.Lock()
	s.addSegment(g)
	s.active = g
	s.mu.Unlock()
	s.woff = headerSize
	select {
	case s.spareCh <- struct{}{}:
	default:
	}
	return nil
}

// newSalt is a segment's frame salt: random, never 0 (old segments' value).
func newSalt() uint32 {
	for {
		if v := rand.Uint32(); v != 0 {
			return v
		}
	}
}

// preparer makes the next segment ahead of need, so rolling over costs no
// file creation in the write path. A failure (a full disk) is not an error
// here: roll creates one itself when it must, and reports that failure.
func (s *Spool) preparer() {
	defer s.wg.Done()
	for {
		select {
		case <-s.spareCh:
		case g := <-s.recycleCh:
			s.recycle(g)
		case <-s.stop:
			return
		}
		s.spareMu.Lock()
		if s.spare == nil && len(s.recycled) > 0 {
			s.spare = s.recycled[len(s.recycled)-1]
			s.recycled = s.recycled[:len(s.recycled)-1]
		}
		have := s.spare != nil
		s.spareMu.Unlock()
		if have {
			continue
		}
		g, err := s.createSegment(s.newFileNo())
		if err != nil {
			if !errors.Is(err, ErrNoSpace) {
				s.logf("%v", err)
			}
			continue
		}
		s.spareMu.Lock()
		s.spare = g
		s.spareMu.Unlock()
	}
}

func (s *Spool) newFileNo() uint32 {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := s.nextFile
	s.nextFile++
	return n
}

// addSegment enters g in the segment table. Called with s.mu held.
func (s *Spool) addSegment(g *segment) {
	s.segs[g.seq] = g
	i := sort.Search(len(s.seqs), func(i int) bool { return s.seqs[i] >= g.seq })
	s.seqs = append(s.seqs, 0)
	copy(s.seqs[i+1:], s.seqs[i:])
	s.seqs[i] = g.seq
}
