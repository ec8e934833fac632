package spool

import (
	"errors"
	"fmt"
	"math/bits"
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
// The fdatasync of a batch runs on its own goroutine; with maxFlight > 1
// the next batch could be written while the disk works on the previous
// one. Batches complete strictly in order, and after a failed fdatasync
// every later batch of that segment fails too, whatever its own fdatasync
// said. Measured on a 2-core VM, overlapping fdatasyncs made batches
// smaller without raising throughput, so one is in flight at a time.
const maxFlight = 1

type flight struct {
	reqs []*request
	g    *segment
	off  int64
	buf  []byte
	done chan error
}

func (s *Spool) committer() {
	defer s.wg.Done()
	for {
		if len(s.flights) >= maxFlight {
			// Wait for the disk before taking requests, so that all that
			// arrived meanwhile go out together.
			s.complete(<-s.flights[0].done)
			// Let the callers just answered queue their next appends:
			// a yield, not a delay, so a lone writer does not wait.
			runtime.Gosched()
			continue
		}
		s.qmu.Lock()
		reqs := s.pending
		s.pending = nil
		closed := s.closed
		s.qmu.Unlock()
		if len(reqs) == 0 {
			if len(s.flights) > 0 {
				select {
				case err := <-s.flights[0].done:
					s.complete(err)
				case <-s.qch:
				}
				continue
			}
			if closed {
				return
			}
			select {
			case <-s.qch:
			case <-s.stop:
			}
			continue
		}
		s.commitBatch(reqs)
		s.reap()
	}
}

// reap completes the batches at the head whose fdatasync has returned.
func (s *Spool) reap() {
	for len(s.flights) > 0 {
		select {
		case err := <-s.flights[0].done:
			s.complete(err)
		default:
			return
		}
	}
}

// drain completes every batch in flight.
func (s *Spool) drain() {
	for len(s.flights) > 0 {
		s.complete(<-s.flights[0].done)
	}
}

// complete finishes the oldest batch in flight, whose fdatasync returned err.
func (s *Spool) complete(err error) {
	f := s.flights[0]
	s.flights[0] = nil
	s.flights = s.flights[1:]
	g := f.g
	if err == nil && s.failedSeg == g {
		err = errors.New("an earlier batch of this segment failed")
	}
	if err != nil {
		if s.failedSeg != g {
			// Never fdatasync the same file again and trust it: after a
			// failed writeback the kernel may have dropped the dirty
			// pages and a second fdatasync reports success. Abandon the
			// segment; the next one's header says where its trustworthy
			// part ends.
			s.logf("spool: segment %d: write or fdatasync failed at offset %d, abandoning it: %v", g.seq, f.off, err)
			s.failedSeg = g
			s.abandonSeq, s.abandonLen = g.seq, f.off
			if s.active == g {
				s.sealNoDrain()
			}
		}
		werr := fmt.Errorf("spool: write segment %d: %w", g.seq, err)
		for _, r := range f.reqs {
			r.done <- werr
		}
		s.putBuf(f.buf)
		return
	}
	s.mu.Lock()
	g.end = f.off + int64(len(f.buf))
	woke := s.applyBuf(f.buf, g, f.off)
	s.mu.Unlock()
	if woke {
		s.notify()
	}
	for _, r := range f.reqs {
		r.done <- nil
	}
	s.putBuf(f.buf)
	s.kickCompaction()
}

func (s *Spool) getBuf() []byte {
	if n := len(s.bufs); n > 0 {
		b := s.bufs[n-1]
		s.bufs = s.bufs[:n-1]
		return b[:0]
	}
	return nil
}

func (s *Spool) putBuf(b []byte) {
	if cap(b) <= 4<<20 && len(s.bufs) < maxFlight+1 {
		s.bufs = append(s.bufs, b)
	}
}

func (s *Spool) avail() int64 {
	a, err := s.fs.Avail(s.dir)
	if err != nil {
		s.logf("spool: statfs %s: %v", s.dir, err)
		a = 0
	}
	if s.active != nil {
		a += s.active.size - s.woff
	}
	s.spareMu.Lock()
	if s.spare != nil {
		a += s.spare.size
	}
	s.spareMu.Unlock()
	return a
}

func (s *Spool) commitBatch(reqs []*request) {
	// Compaction output is encoded first, from an index that already
	// reflects every earlier record, so its snapshots are exact.
	if sortBuilds(reqs) {
		s.drain() // snapshots must see every earlier record applied
	}
	free := s.avail()
	todo := reqs[:0:0]
	var size int64
	for _, r := range reqs {
		if r.build != nil {
			s.mu.Lock()
			b, err := r.build(s, r.buf[:0])
			s.mu.Unlock()
			if err != nil {
				r.done <- err
				continue
			}
			r.buf = b
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
	for len(todo) > 0 {
		if s.active == nil {
			if err := s.roll(); err != nil {
				for _, r := range todo {
					r.done <- err
				}
				return
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
		s.writeBatch(todo[:n])
		todo = todo[n:]
	}
}

func sortBuilds(reqs []*request) bool {
	k := 0
	for i, r := range reqs {
		if r.build != nil {
			reqs[k], reqs[i] = reqs[i], reqs[k]
			k++
		}
	}
	return k > 0
}

func (s *Spool) writeBatch(reqs []*request) {
	g := s.active
	buf := s.getBuf()
	for _, r := range reqs {
		buf = append(buf, r.buf...)
	}
	off := s.woff
	s.woff += int64(len(buf))
	f := &flight{reqs: reqs, g: g, off: off, buf: buf, done: make(chan error, 1)}
	s.flights = append(s.flights, f)
	s.stats.mu.Lock()
	s.stats.fsyncs++
	s.stats.batches++
	s.stats.hist[min(bits.Len(uint(len(reqs)))-1, len(s.stats.hist)-1)]++
	s.stats.mu.Unlock()
	if _, err := g.f.WriteAt(buf, off); err != nil {
		f.done <- err
		return
	}
	if s.opt.noSync {
		f.done <- nil
		return
	}
	go func() { f.done <- g.f.Datasync() }()
}

// applyBuf applies the records just made durable at off in g. Called with
// s.mu held. It reports whether something became due.
func (s *Spool) applyBuf(buf []byte, g *segment, off int64) bool {
	woke := false
	for p := 0; p < len(buf); {
		body, n, err := frame(buf[p:])
		if err != nil || n == 0 {
			panic(fmt.Sprintf("spool: own batch does not parse at %d: %v", p, err)) // a bug, never disk data
		}
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

// seal ends appends to the active segment once its batches in flight
// are done; the next batch rolls.
func (s *Spool) seal() {
	s.drain()
	if g := s.active; g != nil && g != s.failedSeg {
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
	s.sealNoDrain()
}

func (s *Spool) sealNoDrain() {
	if s.active == nil {
		return
	}
	s.mu.Lock()
	s.active.sealed = true
	s.maybeCompact(s.active)
	s.mu.Unlock()
	s.active = nil
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
	h := segHeader{seq: uint64(g.seq), created: time.Now().UnixNano()}
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
	s.mu.Unlock()
	s.active = g
	s.woff = headerSize
	select {
	case s.spareCh <- struct{}{}:
	default:
	}
	return nil
}

// preparer makes the next segment ahead of need, so rolling over costs no
// file creation in the write path. A failure (a full disk) is not an error
// here: roll creates one itself when it must, and reports that failure.
func (s *Spool) preparer() {
	defer s.wg.Done()
	for {
		select {
		case <-s.spareCh:
		case <-s.stop:
			return
		}
		s.spareMu.Lock()
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
