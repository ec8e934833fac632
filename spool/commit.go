package spool

import (
	"errors"
	"fmt"
	"math/bits"
	"sort"
	"time"
)

// The committer is the only writer. It takes every pending request,
// writes them with one WriteAt and one fdatasync, applies their records to
// the index and only then answers the callers. Requests that arrive while
// it waits for the disk form the next batch, so a lone writer never waits
// for company and many writers share one fdatasync.
func (s *Spool) committer() {
	defer s.wg.Done()
	for {
		s.qmu.Lock()
		reqs := s.pending
		s.pending = nil
		closed := s.closed
		s.qmu.Unlock()
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
		s.commitBatch(reqs)
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
	sortBuilds(reqs)
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
		room := s.active.size - s.woff
		var n int
		var used int64
		for n < len(todo) && used+int64(len(todo[n].buf)) <= room {
			used += int64(len(todo[n].buf))
			n++
		}
		if n == 0 {
			s.seal()
			continue
		}
		s.writeBatch(todo[:n])
		todo = todo[n:]
	}
}

func sortBuilds(reqs []*request) {
	k := 0
	for i, r := range reqs {
		if r.build != nil {
			reqs[k], reqs[i] = reqs[i], reqs[k]
			k++
		}
	}
}

func (s *Spool) writeBatch(reqs []*request) {
	g := s.active
	buf := s.batchBuf[:0]
	if s.woff == headerSize && g.end == headerSize {
		// nothing yet: the header goes out with the first batch
	}
	for _, r := range reqs {
		buf = append(buf, r.buf...)
	}
	s.batchBuf = buf
	off := s.woff
	_, err := g.f.WriteAt(buf, off)
	if err == nil && !s.opt.noSync {
		err = g.f.Datasync()
	}
	s.stats.mu.Lock()
	s.stats.fsyncs++
	s.stats.batches++
	s.stats.hist[min(bits.Len(uint(len(reqs)))-1, len(s.stats.hist)-1)]++
	s.stats.mu.Unlock()
	if err != nil {
		// Never fdatasync the same file again and trust it: after a
		// failed writeback the kernel may have dropped the dirty pages
		// and a second fdatasync reports success. Abandon the segment;
		// the next one's header says where its trustworthy part ends.
		s.logf("spool: segment %d: write or fdatasync failed at offset %d, abandoning it: %v", g.seq, off, err)
		s.abandonSeq, s.abandonLen = g.seq, off
		s.seal()
		werr := fmt.Errorf("spool: write segment %d: %w", g.seq, err)
		for _, r := range reqs {
			r.done <- werr
		}
		return
	}
	s.woff += int64(len(buf))
	s.mu.Lock()
	g.end = s.woff
	woke := s.applyBuf(buf, g, off)
	s.mu.Unlock()
	if woke {
		s.notify()
	}
	for _, r := range reqs {
		r.done <- nil
	}
	s.kickCompaction()
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
		if s.apply(&s.scratch, g.seq, uint32(off)+uint32(p), uint32(n), true) {
			woke = true
		}
		p += n
	}
	return woke
}

// seal ends appends to the active segment; the next batch rolls.
func (s *Spool) seal() {
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
