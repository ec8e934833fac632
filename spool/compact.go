package spool

import (
	"errors"
	"fmt"
	"runtime/debug"
)

// Compaction. A sealed segment whose live content is under half of what it
// holds is rewritten: live messages stored in it are copied forward with
// their whole state (kCopy); live messages stored elsewhere that have
// state records in it get a kSnapshot; finished messages whose content
// may still sit in another segment get their tombstone (kDone) carried.
// Only when those are durable is the segment removed. All three kinds are
// encoded by the committer at the head of a batch, from an index that
// reflects every earlier record, so nothing is resurrected or lost.

// compactChunk is about how much compaction carries forward in a batch
// of its own, or with little else (commitBatch).
const compactChunk = 64 << 10

// maybeCompact queues g for compaction when it is mostly dead. Called with
// s.mu held.
func (s *Spool) maybeCompact(g *segment) {
	if !g.sealed || g.queued || g.removed || s.recovering || s.opt.noCompact {
		return
	}
	used := g.end - headerSize
	if g.live*2 > used {
		return
	}
	g.queued = true
	s.compactQ = append(s.compactQ, g.seq)
}

func (s *Spool) kickCompaction() {
	s.mu.Lock()
	n := len(s.compactQ)
	s.mu.Unlock()
	if n > 0 {
		select {
		case s.compactCh <- struct{}{}:
		default:
		}
	}
}

func (s *Spool) compactor() {
	defer s.wg.Done()
	select {
	case <-s.recovered:
	case <-s.stop:
		return
	}
	for {
		s.mu.Lock()
		var seq uint32
		if len(s.compactQ) > 0 {
			seq = s.compactQ[0]
			s.compactQ = s.compactQ[1:]
		}
		s.mu.Unlock()
		if seq == 0 {
			select {
			case <-s.compactCh:
				continue
			case <-s.stop:
				return
			}
		}
		if err := s.compact(seq); err != nil {
			if !errors.Is(err, ErrClosed) {
				s.logf("%v", err)
			}
			s.mu.Lock()
			if g := s.segs[seq]; g != nil {
				g.queued = false
			}
			s.mu.Unlock()
		}
		select {
		case <-s.stop:
			return
		default:
		}
	}
}

// compact rewrites what is still needed from segment seq and removes it.
func (s *Spool) compact(seq uint32) error {
	s.mu.Lock()
	g := s.segs[seq]
	if g == nil || g.removed || g == s.active {
		s.mu.Unlock()
		return nil
	}
	g.refs++
	end := g.end
	s.mu.Unlock()
	defer s.unref(g)

	// Which messages does this segment speak of, in order of appearance?
	var ids [][idLen]byte
	seen := make(map[[idLen]byte]bool)
	err := guard(func() error {
		for p := int64(headerSize); p < end; {
			body, n, err := frame(g.data[p:end], g.salt)
			if err != nil || n == 0 {
				return fmt.Errorf("spool: compact segment %d: record at %d: %v", seq, p, err)
			}
			if len(body) > idLen {
				var id [idLen]byte
				copy(id[:], body[1:])
				if !seen[id] {
					seen[id] = true
					ids = append(ids, id)
				}
			}
			p += int64(n)
		}
		return nil
	})
	if err != nil {
		return err
	}
	// Carry forward in small chunks, one at a time. Each rides in a batch
	// with the client appends of the moment, which wait for its bytes to
	// reach the disk, and it is encoded under the index lock: a chunk of
	// megabytes stalled appends and lookups for tens of milliseconds.
	var buf []byte
	for len(ids) > 0 {
		var consumed int
		r := &request{buf: buf, reserve: true, build: func(s *Spool, b []byte, limit int) ([]byte, error) {
			consumed = 0
			for _, id := range ids {
				if len(b) >= limit {
					break
				}
				var err error
				if b, err = s.carry(b, id, seq); err != nil {
					return nil, err
				}
				consumed++
			}
			return b, nil
		}}
		if err := s.enqueue(r); err != nil {
			return fmt.Errorf("spool: compact segment %d: %w", seq, err)
		}
		ids = ids[consumed:]
		buf = r.buf[:0] // written out: the next chunk reuses it
	}
	return s.removeSegment(g)
}

// carry appends what must survive segment seq about message id. Called by
// the committer with s.mu held.
func (s *Spool) carry(b []byte, id [idLen]byte, seq uint32) ([]byte, error) {
	if mi, ok := s.x.idGet(id); ok {
		m := &s.x.m[mi]
		if m.seg == seq {
			return s.appendCopy(b, mi)
		}
		if m.seg > seq {
			return b, nil // its copy in a newer segment holds its whole state
		}
		return appendSnapshot(b, id, m.flags&mHeld != 0, s.states(mi)), nil
	}
	if ge, ok := s.grave[id]; ok && s.segExists(ge.first, ge.last, seq) {
		return appendDone(b, id, ge.first, ge.last), nil
	}
	return b, nil
}

// states returns message mi's persisted per-recipient state, reasons read
// back from their records.
func (s *Spool) states(mi int32) []rstate {
	m := &s.x.m[mi]
	out := make([]rstate, m.nrcpt)
	for k := int32(0); k < m.nrcpt; k++ {
		rc := &s.x.r[m.rcpt0+k]
		out[k] = rstate{status: rc.status, attempts: uint64(rc.attempts), next: rc.next}
		if rc.reason != 0 {
			out[k].reason = []byte(s.reasonAt(rc.reason, int(k)))
		}
	}
	return out
}

// appendCopy re-encodes message mi with its state. Called with s.mu held.
func (s *Spool) appendCopy(b []byte, mi int32) ([]byte, error) {
	m := &s.x.m[mi]
	g := s.segs[m.seg]
	var out []byte
	err := guard(func() error {
		body, _, err := frame(g.data[m.off:g.end], g.salt)
		if err != nil {
			return err
		}
		var r rec
		if err := r.parse(body); err != nil {
			return err
		}
		msg := r.message()
		out = appendMessage(b, kCopy, m.id, msg, m.flags&mHeld != 0, s.states(mi), r.content)
		return nil
	})
	if err != nil {
		// The content cannot be read: keep the segment (the copy is not
		// made) and set the message aside for the operator.
		return nil, fmt.Errorf("spool: compact: message %s unreadable in segment %d, segment kept: %w", m.id[:], m.seg, err)
	}
	return out, nil
}

// removeSegment deletes a compacted segment's file and makes that durable.
func (s *Spool) removeSegment(g *segment) error {
	s.mu.Lock()
	if g.live > 0 {
		// Something new landed here meanwhile (cannot happen for a sealed
		// segment, but never delete live content).
		g.queued = false
		s.mu.Unlock()
		return fmt.Errorf("spool: compact segment %d: %d live bytes remain", g.seq, g.live)
	}
	delete(s.segs, g.seq)
	i := sortSearch(s.seqs, g.seq)
	s.seqs = append(s.seqs[:i], s.seqs[i+1:]...)
	g.removed = true
	// Tombstones whose segments are all gone are no longer needed.
	for id, ge := range s.grave {
		if !s.segExists(ge.first, ge.last, 0) {
			delete(s.grave, id)
		}
	}
	s.mu.Unlock()
	// Renamed, not deleted: the file may be reused (recycle) once the
	// last reader is gone. Under its new name it is no segment.
	free := g.path + freeSuffix
	if err := s.fs.Rename(g.path, free); err != nil {
		return fmt.Errorf("spool: remove segment %d: %w", g.seq, err)
	}
	s.mu.Lock()
	g.path = free
	s.mu.Unlock()
	if err := s.fs.SyncDir(s.dir); err != nil {
		return fmt.Errorf("spool: sync directory after removing segment %d: %w", g.seq, err)
	}
	return nil
}

// unref drops a reader's reference; the last one out of a removed
// segment unmaps it.
func (s *Spool) unref(g *segment) {
	s.mu.Lock()
	g.refs--
	release := g.removed && g.refs == 0
	s.mu.Unlock()
	if release {
		s.releaseSegment(g)
	}
}

// guard runs fn with memory faults (SIGBUS from an I/O error under a
// mapping) turned into an error instead of a crash.
func guard(fn func() error) (err error) {
	old := debug.SetPanicOnFault(true)
	defer func() {
		debug.SetPanicOnFault(old)
		if v := recover(); v != nil {
			if _, ok := v.(interface{ Addr() uintptr }); ok {
				err = fmt.Errorf("%w: %v", ErrUnreadable, v)
				return
			}
			panic(v)
		}
	}()
	return fn()
}
