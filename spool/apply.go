package spool

// apply folds one durable record into the index. The committer calls it
// after each fdatasync and recovery calls it for every old record, so the
// index after a restart is the index before it. live=false (recovery)
// leaves recipients unlinked; recovery schedules them all at its end.
// Called with s.mu held; reports whether something became due now.
func (s *Spool) apply(r *rec, seq, off, flen uint32, live bool) bool {
	x := s.x
	mi, exists := x.idGet(r.id)
	switch r.kind {
	case kMessage, kCopy:
		if exists {
			m := &x.m[mi]
			if r.kind == kMessage || int(m.nrcpt) != len(r.rcpts) {
				return false // a duplicate; the first one stands
			}
			// A copy made by compaction: the content now lives here.
			if g := s.segs[m.seg]; g != nil {
				g.live -= int64(s.frameLen(g, m.off))
			}
			m.seg, m.off = seq, off
			if seq < m.first {
				m.first = seq
			}
			s.segs[seq].live += int64(flen)
			if !live {
				s.setStates(mi, r, seq, off)
			} else {
				s.repointReasons(mi, r, seq, off)
			}
			return false
		}
		if _, dead := s.grave[r.id]; dead && r.kind == kMessage {
			return false
		}
		mi = x.allocMsg()
		n := int32(len(r.rcpts))
		m := &x.m[mi]
		*m = msg{
			id:    r.id,
			size:  uint32(len(r.content)),
			seg:   seq,
			off:   off,
			first: seq,
			nrcpt: n,
			left:  n,
			flags: mUsed,
		}
		m.rcpt0 = x.allocRcpts(n)
		for k := int32(0); k < n; k++ {
			i := m.rcpt0 + k
			x.r[i] = rcpt{prev: i, nx: i, msg: mi, queue: x.queueFor(r.vmta, r.rcpts[k].addr)}
			x.account(i, 1)
		}
		x.idPut(r.id, mi)
		x.nmsgs++
		x.bytes += int64(m.size)
		s.segs[seq].live += int64(flen)
		if r.kind == kCopy {
			s.setStates(mi, r, seq, off)
			if x.m[mi].left == 0 {
				s.finish(mi)
				return false
			}
		}
		if live {
			for k := int32(0); k < n; k++ {
				x.schedule(m.rcpt0 + k)
			}
			return true
		}
		return false
	}
	if !exists {
		if r.kind == kDone {
			s.bury(r.id, r.first, r.last)
		}
		return false
	}
	m := &x.m[mi]
	switch r.kind {
	case kOutcome, kAttempt:
		if r.rcpt >= int(m.nrcpt) {
			return false
		}
		i := m.rcpt0 + int32(r.rcpt)
		rc := &x.r[i]
		if Status(rc.status).Finished() {
			return false
		}
		x.account(i, -1)
		x.unlink(i)
		rc.attempts = uint32(r.st.attempts)
		rc.next = r.st.next
		if r.kind == kAttempt {
			rc.flags |= rAttempted
			if live {
				rc.flags |= rFlight
			}
			if rc.status == uint8(Queued) {
				rc.status = uint8(Deferred)
			}
			x.account(i, 1)
			return false
		}
		rc.flags &^= rFlight | rAttempted
		rc.status = r.st.status
		if len(r.st.reason) > 0 {
			rc.reason = uint64(seq)<<32 | uint64(off) + 1
		} else {
			rc.reason = 0
		}
		if Status(rc.status).Finished() {
			rc.next = 0
			x.m[mi].left--
			if x.m[mi].left == 0 {
				s.finish(mi)
			}
			return false
		}
		x.account(i, 1)
		if live && m.flags&mHeld == 0 {
			x.schedule(i)
		}
		return false
	case kHold:
		if m.flags&mHeld == 0 {
			m.flags |= mHeld
			x.nheld++
			for i := m.rcpt0; i < m.rcpt0+m.nrcpt; i++ {
				if x.r[i].flags&rFlight == 0 {
					x.unlink(i)
				}
			}
		}
		return false
	case kRelease:
		if m.flags&mHeld != 0 {
			m.flags &^= mHeld | mAside
			x.nheld--
		}
		woke := false
		for i := m.rcpt0; i < m.rcpt0+m.nrcpt; i++ {
			rc := &x.r[i]
			if Status(rc.status).Finished() || rc.flags&rFlight != 0 {
				continue
			}
			x.unlink(i)
			rc.next = 0
			if live {
				x.schedule(i)
				woke = true
			}
		}
		return woke
	case kDone:
		first := m.first
		if r.first < first {
			first = r.first
		}
		last := m.seg
		if r.last > last {
			last = r.last
		}
		s.finish(mi)
		s.bury(r.id, first, last)
		return false
	case kSnapshot:
		if int(m.nrcpt) != len(r.states) {
			return false
		}
		if !live {
			s.setStates(mi, r, seq, off)
			if x.m[mi].left == 0 {
				s.finish(mi)
			}
			return false
		}
		// At run time the snapshot was taken from this very index: only
		// the reasons move, as the records they were in may go away.
		s.repointReasons(mi, r, seq, off)
		return false
	}
	return false
}

// setStates replaces a message's persisted state with a snapshot (kCopy,
// kSnapshot records); only recovery needs it.
func (s *Spool) setStates(mi int32, r *rec, seq, off uint32) {
	x := s.x
	m := &x.m[mi]
	if r.held && m.flags&mHeld == 0 {
		m.flags |= mHeld
		x.nheld++
	} else if !r.held && m.flags&mHeld != 0 {
		m.flags &^= mHeld
		x.nheld--
	}
	left := int32(0)
	for k := int32(0); k < m.nrcpt; k++ {
		i := m.rcpt0 + k
		rc := &x.r[i]
		st := r.states[k]
		x.account(i, -1)
		x.unlink(i)
		rc.status = st.status
		rc.attempts = uint32(st.attempts)
		rc.next = st.next
		rc.flags &^= rFlight | rAttempted
		rc.reason = 0
		if len(st.reason) > 0 {
			rc.reason = uint64(seq)<<32 | uint64(off) + 1
		}
		if !Status(rc.status).Finished() {
			left++
		}
		x.account(i, 1)
	}
	m.left = left
}

// repointReasons makes recipients' reasons refer to a snapshot that
// carries them (kCopy, kSnapshot), so the older records may be dropped.
func (s *Spool) repointReasons(mi int32, r *rec, seq, off uint32) {
	m := &s.x.m[mi]
	for k := int32(0); k < m.nrcpt && int(k) < len(r.states); k++ {
		rc := &s.x.r[m.rcpt0+k]
		if len(r.states[k].reason) > 0 {
			rc.reason = uint64(seq)<<32 | uint64(off) + 1
		} else if rc.reason != 0 && rc.reason>>32 != uint64(seq) {
			rc.reason = 0
		}
	}
}

// finish drops a message whose recipients are all finished (or deleted).
func (s *Spool) finish(mi int32) {
	x := s.x
	m := &x.m[mi]
	for i := m.rcpt0; i < m.rcpt0+m.nrcpt; i++ {
		x.account(i, -1)
		x.unlink(i)
	}
	x.freeRcpts(m.rcpt0, m.nrcpt)
	if g := s.segs[m.seg]; g != nil {
		g.live -= int64(s.frameLen(g, m.off))
		s.maybeCompact(g)
	}
	s.bury(m.id, m.first, m.seg)
	if m.flags&mHeld != 0 {
		x.nheld--
	}
	x.idDel(m.id)
	x.nmsgs--
	x.bytes -= int64(m.size)
	*m = msg{}
	x.mfree = append(x.mfree, mi)
}

// bury remembers a finished message while a segment that may hold its
// content exists, so compaction carries its tombstone forward.
func (s *Spool) bury(id [idLen]byte, first, last uint32) {
	if !s.segExists(first, last, 0) {
		return
	}
	if g, ok := s.grave[id]; ok {
		first, last = min(first, g.first), max(last, g.last)
	}
	s.grave[id] = graveEnt{first, last}
}

// segExists reports whether a segment numbered in [first, last] other than
// except exists.
func (s *Spool) segExists(first, last, except uint32) bool {
	i := sortSearch(s.seqs, first)
	for ; i < len(s.seqs) && s.seqs[i] <= last; i++ {
		if s.seqs[i] != except {
			return true
		}
	}
	return false
}

func sortSearch(a []uint32, v uint32) int {
	lo, hi := 0, len(a)
	for lo < hi {
		h := int(uint(lo+hi) >> 1)
		if a[h] < v {
			lo = h + 1
		} else {
			hi = h
		}
	}
	return lo
}

// frameLen reads the length of the frame at off in g.
func (s *Spool) frameLen(g *segment, off uint32) uint32 {
	if g.data == nil || int64(off)+frameHeader > int64(len(g.data)) {
		return 0
	}
	b := g.data[off:]
	return frameHeader + (uint32(b[0]) | uint32(b[1])<<8 | uint32(b[2])<<16 | uint32(b[3])<<24)
}
