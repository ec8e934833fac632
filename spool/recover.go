package spool

import (
	"errors"
	"fmt"
	"os"
	"time"
)

// recover rebuilds the index from the segments that existed at Open, in
// order, while the committer already accepts new appends into a newer
// segment. A torn or corrupt tail is reported and dropped: everything
// before it is kept, and it never stops the start.
func (s *Spool) recover(segs []oldSeg) {
	defer s.wg.Done()
	if s.opt.recoverGate != nil {
		select {
		case <-s.opt.recoverGate:
		case <-s.stop:
			close(s.recovered)
			return
		}
	}
	start := time.Now()
	limit := make(map[uint32]int64) // abandoned segments: trusted length
	for _, o := range segs {
		if o.h.abandonSeq != 0 {
			limit[uint32(o.h.abandonSeq)] = int64(o.h.abandonLen)
		}
	}
	var r rec
	records, torn, footers := 0, 0, 0
	for _, o := range segs {
		g := o.g
		end := g.size
		if l, ok := limit[g.seq]; ok && l < end {
			end = l
		}
		s.mu.Lock()
		s.addSegment(g)
		s.mu.Unlock()
		p := int64(headerSize)
		var bad error
		var err error
		if foot, fend, ok := footerOf(g); ok && fend <= end {
			// Its whole-footer CRC held, so an entry that does not parse
			// is a bug, reported and treated like a torn tail.
			p, err = s.recoverFooter(g, foot, fend, &r, &records)
			footers++
			goto done
		}
		err = guard(func() error {
			const chunk = 4096 // records applied per lock hold
			for {
				s.mu.Lock()
				for k := 0; k < chunk; k++ {
					body, n, err := frame(g.data[p:end], g.salt)
					if err != nil {
						bad = err
						break
					}
					if n == 0 {
						break
					}
					if err := r.parse(body); err != nil {
						bad = err
						break
					}
					s.apply(&r, g.seq, uint32(p), uint32(n), false)
					p += int64(n)
					records++
				}
				g.end = p
				s.mu.Unlock()
				if bad != nil || p >= end || !s.more(g, p, end) {
					return nil
				}
				select {
				case <-s.stop:
					return errStopped
				default:
				}
			}
		})
	done:
		if errors.Is(err, errStopped) {
			close(s.recovered) // Close came first; waiters give up
			return
		}
		if err != nil {
			bad = err
		}
		if bad != nil {
			torn++
			s.logf("spool: segment %d: dropping corrupt or torn tail at offset %d: %v", g.seq, p, bad)
		}
		s.mu.Lock()
		g.end = p
		g.sealed = true
		s.mu.Unlock()
	}
	// Everything is known: hand the waiting recipients to the wheel.
	s.mu.Lock()
	x := s.x
	for mi := range x.m {
		m := &x.m[mi]
		if m.flags&mUsed == 0 || m.flags&mHeld != 0 {
			continue
		}
		for i := m.rcpt0; i < m.rcpt0+m.nrcpt; i++ {
			rc := &x.r[i]
			if !Status(rc.status).Finished() && rc.flags&(rLinked|rFlight) == 0 {
				x.schedule(i)
			}
		}
	}
	s.recovering = false
	// Every segment, not only the old ones: those written while recovery
	// ran may have finished in that time, when compaction was not queued.
	for _, seq := range s.seqs {
		s.maybeCompact(s.segs[seq])
	}
	for id, ge := range s.grave {
		if !s.segExists(ge.first, ge.last, 0) {
			delete(s.grave, id)
		}
	}
	n := x.nmsgs
	s.mu.Unlock()
	s.logf("spool: recovered %d messages from %d records in %d segments (%d through index footers) in %v (%d torn tails)", n, records, len(segs), footers, time.Since(start).Round(time.Millisecond), torn)
	close(s.recovered)
	s.notify()
	s.kickCompaction()
}

var errStopped = errors.New("spool: recovery stopped by Close")

// recoverFooter applies a sealed segment's records from its index footer,
// which holds them without message content. It returns the data end.
func (s *Spool) recoverFooter(g *segment, foot []byte, end int64, r *rec, records *int) (int64, error) {
	err := guard(func() error {
		const chunk = 4096
		for len(foot) > 0 {
			s.mu.Lock()
			for k := 0; k < chunk && len(foot) > 0; k++ {
				e, n, err := nextEntry(foot)
				if err != nil {
					s.mu.Unlock()
					return err
				}
				if int64(e.off)+int64(e.flen) > end || e.off < headerSize {
					s.mu.Unlock()
					return fmt.Errorf("footer entry at %d+%d beyond data end %d", e.off, e.flen, end)
				}
				if err := r.parse(e.meta); err != nil {
					s.mu.Unlock()
					return err
				}
				r.clen = int(e.clen)
				s.apply(r, g.seq, e.off, e.flen, false)
				*records++
				foot = foot[n:]
			}
			g.end = end
			s.mu.Unlock()
			select {
			case <-s.stop:
				return errStopped
			default:
			}
		}
		return nil
	})
	return end, err
}

type oldSeg struct {
	g *segment
	h segHeader
}

// more reports whether the chunk loop should continue: another frame header
// that is not zero follows.
func (s *Spool) more(g *segment, p, end int64) bool {
	if p+frameHeader > end {
		return false
	}
	b := g.data[p : p+frameHeader]
	return !allZero(b)
}

// openOld opens and maps an existing segment. A file whose header is all
// zeroes was never activated and holds no record: a spare of the segment
// size is kept as one (keepSpare), any other is removed.
func (s *Spool) openOld(fileNo uint32) (*segment, segHeader, error) {
	seq := fileNo
	path := s.dir + "/" + segName(fileNo)
	var h segHeader
	f, err := s.fs.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return nil, h, fmt.Errorf("spool: open segment %d: %w", seq, err)
	}
	hb := make([]byte, headerSize)
	_, rerr := f.ReadAt(hb, 0)
	if rerr == nil {
		h, rerr = parseHeader(hb)
	}
	if rerr == nil && (h.seq == 0 || h.seq >= 1<<32-1) {
		rerr = fmt.Errorf("header has sequence number %d", h.seq)
	}
	if rerr != nil && !allZero(hb) {
		f.Close()
		s.logf("spool: segment file %s: bad header (%v); left in place, not read", path, rerr)
		return nil, h, nil
	}
	size, err := fileSize(f)
	if err == nil && rerr != nil && size != s.opt.SegmentSize {
		// never used, and not of the size segments have now
		f.Close()
		s.fs.Remove(path)
		return nil, h, nil
	}
	if err != nil {
		f.Close()
		return nil, h, fmt.Errorf("spool: size of segment %d: %w", seq, err)
	}
	data, err := f.Map(size)
	if err != nil {
		f.Close()
		return nil, h, fmt.Errorf("spool: map segment %d: %w", seq, err)
	}
	if rerr != nil {
		s.keepSpare(&segment{path: path, f: f, data: data, size: size, end: headerSize})
		return nil, h, nil
	}
	return &segment{seq: uint32(h.seq), path: path, f: f, data: data, size: size, end: headerSize, sealed: true, salt: h.salt}, h, nil
}

// fileSize finds a file's size through ReadAt alone (File has no Stat).
func fileSize(f File) (int64, error) {
	if st, ok := f.(interface{ Stat() (os.FileInfo, error) }); ok {
		fi, err := st.Stat()
		if err != nil {
			return 0, err
		}
		return fi.Size(), nil
	}
	if sz, ok := f.(interface{ Size() int64 }); ok {
		return sz.Size(), nil
	}
	return 0, fmt.Errorf("file has no size")
}
