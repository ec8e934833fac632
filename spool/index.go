package spool

import (
	"bytes"
	"math/bits"
)

// The in-RAM index. Messages and recipients live in two slabs of small
// fixed-size structs addressed by int32, so a million queued recipients
// cost a few allocations, not millions, and the GC has no pointers to
// chase. Addresses, reasons and the rest of the envelope stay on disk and
// are read back through the segment mapping when asked for.

const (
	mUsed  = 1 << iota // slot holds a live message
	mHeld              // held by Hold or set aside
	mAside             // content unreadable; held for the operator
)

type msg struct {
	id    [idLen]byte
	size  uint32 // content bytes
	seg   uint32 // segment and offset of the record holding the content
	off   uint32
	first uint32 // oldest segment that may still hold a record of this content
	rcpt0 int32  // first recipient in the recipient slab
	nrcpt int32
	left  int32 // unfinished recipients
	flags uint8
}

const (
	rLinked    = 1 << iota // in a wheel slot or a ready list
	rFlight                // handed out by PopDue or marked by Attempt
	rSentinel              // list head, not a recipient
	rWheel                 // linked in a wheel slot (else a ready list)
	rAttempted             // an Attempt record counted the current try
)

type rcpt struct {
	next     int64  // wall-clock next try, UnixNano; 0 = now
	reason   uint64 // record holding the reason: seg<<32 | off+1; 0 = none
	prev, nx int32  // doubly linked circular list through sentinels
	msg      int32
	queue    int32
	attempts uint32
	status   uint8
	flags    uint8
}

type queue struct {
	key    QueueKey
	ready  int32 // sentinel of the ready list
	inRing bool
	st     QueueStats
}

// Timing wheel: level 0 has wSlots slots of one tick, level 1 wSlots slots
// of one epoch (wSlots ticks); later times wait in an overflow list and
// are cascaded down when the wheel reaches them. Insert, unlink and
// pop-due are O(1) whatever the queue size.
const (
	tickShift = 26 // one tick = 2^26 ns = 67 ms
	wBits     = 12
	wSlots    = 1 << wBits
	wMask     = wSlots - 1
	l1Base    = wSlots
	ovflSent  = 2 * wSlots
	nWheel    = 2*wSlots + 1
)

type index struct {
	m     []msg
	mfree []int32
	ids   idTable

	r     []rcpt
	rfree map[int32][]int32 // free recipient ranges by length

	queues []queue
	qidx   map[string]map[string]int32 // vmta -> domain -> queue
	ring   []int32                     // queues with a non-empty ready list
	ringAt int

	cur          int64 // wheel position in ticks
	bits0, bits1 [wSlots / 64]uint64
	l1min        [wSlots]int64 // earliest next in each level-1 slot, when l1ok
	l1ok         [wSlots]bool
	waiting      int // recipients in the wheel

	nmsgs, nrcpts, nheld int
	bytes                int64
}

func newIndex(now int64) *index {
	x := &index{
		rfree: make(map[int32][]int32),
		qidx:  make(map[string]map[string]int32),
		cur:   now >> tickShift,
	}
	x.r = make([]rcpt, nWheel, nWheel+1024)
	for i := range x.r {
		x.r[i] = rcpt{prev: int32(i), nx: int32(i), flags: rSentinel}
	}
	return x
}

func (x *index) allocRcpts(n int32) int32 {
	if l := x.rfree[n]; len(l) > 0 {
		i := l[len(l)-1]
		x.rfree[n] = l[:len(l)-1]
		return i
	}
	i := int32(len(x.r))
	for k := int32(0); k < n; k++ {
		x.r = append(x.r, rcpt{})
	}
	return i
}

func (x *index) freeRcpts(i, n int32) {
	for k := i; k < i+n; k++ {
		x.r[k] = rcpt{}
	}
	x.rfree[n] = append(x.rfree[n], i)
}

func (x *index) allocMsg() int32 {
	if n := len(x.mfree); n > 0 {
		i := x.mfree[n-1]
		x.mfree = x.mfree[:n-1]
		return i
	}
	x.m = append(x.m, msg{})
	return int32(len(x.m) - 1)
}

// queueFor interns (vmta, domain of addr); the domain is lower-cased.
func (x *index) queueFor(vmta, addr []byte) int32 {
	dom := addr
	if at := bytes.LastIndexByte(addr, '@'); at >= 0 {
		dom = addr[at+1:]
	} else {
		dom = nil
	}
	var lower [256]byte
	if len(dom) <= len(lower) && hasUpper(dom) {
		n := copy(lower[:], dom)
		for i := 0; i < n; i++ {
			if c := lower[i]; 'A' <= c && c <= 'Z' {
				lower[i] = c + 'a' - 'A'
			}
		}
		dom = lower[:n]
	} else if hasUpper(dom) {
		dom = bytes.ToLower(dom)
	}
	dm, ok := x.qidx[string(vmta)]
	if !ok {
		dm = make(map[string]int32)
		x.qidx[string(vmta)] = dm
	}
	if q, ok := dm[string(dom)]; ok {
		return q
	}
	q := int32(len(x.queues))
	sent := x.allocRcpts(1)
	x.r[sent] = rcpt{prev: sent, nx: sent, flags: rSentinel}
	x.queues = append(x.queues, queue{key: QueueKey{VMTA: string(vmta), Domain: string(dom)}, ready: sent})
	dm[string(dom)] = q
	return q
}

func hasUpper(b []byte) bool {
	for _, c := range b {
		if 'A' <= c && c <= 'Z' {
			return true
		}
	}
	return false
}

// account adds (sign=1) or removes (sign=-1) recipient i from its queue's
// and the totals' counts; call it around every state change.
func (x *index) account(i int32, sign int) {
	r := &x.r[i]
	if Status(r.status).Finished() {
		return
	}
	q := &x.queues[r.queue].st
	q.Recipients += sign
	q.Bytes += int64(sign) * int64(x.m[r.msg].size)
	if r.flags&rFlight != 0 {
		q.Active += sign
	} else if Status(r.status) == Deferred {
		q.Deferred += sign
	}
	x.nrcpts += sign
}

func (x *index) unlink(i int32) {
	r := &x.r[i]
	if r.flags&rLinked == 0 {
		return
	}
	p, n := r.prev, r.nx
	wheel := r.flags&rWheel != 0
	x.unlinkRaw(i)
	if wheel {
		x.waiting--
		if t := r.next >> tickShift; t>>wBits != x.cur>>wBits && t>>(2*wBits) == x.cur>>(2*wBits) {
			if k := (t >> wBits) & wMask; x.l1min[k] == r.next {
				x.l1ok[k] = false
			}
		}
		if p < nWheel && x.r[p].nx == p {
			x.clearSlotBit(p)
		} else if n < nWheel && x.r[n].nx == n {
			x.clearSlotBit(n)
		}
	}
}

func (x *index) clearSlotBit(sent int32) {
	switch {
	case sent < l1Base:
		x.bits0[sent/64] &^= 1 << (sent % 64)
	case sent < ovflSent:
		k := sent - l1Base
		x.bits1[k/64] &^= 1 << (k % 64)
	}
}

func (x *index) pushBack(sent, i int32) {
	t := x.r[sent].prev
	x.r[i].prev, x.r[i].nx = t, sent
	x.r[t].nx = i
	x.r[sent].prev = i
	x.r[i].flags |= rLinked
}

// schedule puts a waiting recipient where PopDue will find it: its queue's
// ready list if due by the wheel position, else the wheel.
func (x *index) schedule(i int32) {
	r := &x.r[i]
	t := r.next >> tickShift
	if r.next == 0 || t < x.cur {
		x.makeReady(i)
		return
	}
	x.wheelInsert(i, t)
}

func (x *index) wheelInsert(i int32, t int64) {
	var sent int32
	switch {
	case t>>wBits == x.cur>>wBits:
		k := int32(t & wMask)
		sent = k
		x.bits0[k/64] |= 1 << (k % 64)
	case t>>(2*wBits) == x.cur>>(2*wBits):
		k := int32((t >> wBits) & wMask)
		sent = l1Base + k
		if x.r[sent].nx == sent {
			x.l1min[k], x.l1ok[k] = x.r[i].next, true
		} else if x.l1ok[k] && x.r[i].next < x.l1min[k] {
			x.l1min[k] = x.r[i].next
		}
		x.bits1[k/64] |= 1 << (k % 64)
	default:
		sent = ovflSent
	}
	x.pushBack(sent, i)
	x.r[i].flags |= rWheel
	x.waiting++
}

func (x *index) makeReady(i int32) {
	q := &x.queues[x.r[i].queue]
	x.pushBack(q.ready, i)
	if !q.inRing {
		q.inRing = true
		x.ring = append(x.ring, x.r[i].queue)
	}
}

// drainSlot moves every member of a wheel list out: to the ready lists,
// or (redo) back through schedule, which may put it in the same list, so
// the list is detached first.
func (x *index) drainSlot(sent int32, redo bool) {
	first, last := x.r[sent].nx, x.r[sent].prev
	if first == sent {
		return
	}
	x.r[sent].nx, x.r[sent].prev = sent, sent
	x.clearSlotBit(sent)
	for i := first; ; {
		nx := x.r[i].nx
		x.r[i].prev, x.r[i].nx = i, i
		x.r[i].flags &^= rLinked | rWheel
		x.waiting--
		if redo {
			x.schedule(i)
		} else {
			x.makeReady(i)
		}
		if i == last {
			break
		}
		i = nx
	}
}

func (x *index) unlinkRaw(i int32) {
	r := &x.r[i]
	p, n := r.prev, r.nx
	x.r[p].nx = n
	x.r[n].prev = p
	r.prev, r.nx = i, i
	r.flags &^= rLinked | rWheel
}

// advance moves the wheel to now, turning due recipients ready. A tick's
// slot is released once the tick has passed, so a recipient may wait up
// to one tick (67 ms) past its time; in exchange no call rescans a slot.
func (x *index) advance(now int64) {
	target := now >> tickShift
	if target < x.cur {
		x.rewind(target)
		return
	}
	for x.cur < target {
		e := x.cur >> wBits
		if e == target>>wBits {
			x.drain0(int(x.cur&wMask), int(target&wMask))
			x.cur = target
			break
		}
		x.drain0(int(x.cur&wMask), wSlots)
		ne := e + 1
		if ne&wMask == 0 {
			x.cur = ne << wBits
			x.drainSlot(ovflSent, true)
			x.drainSlot(l1Base, true)
			continue
		}
		limit := ne | wMask
		if te := target >> wBits; te < limit {
			limit = te
		}
		if k := nextBit(x.bits1[:], int(ne&wMask), int(limit&wMask)+1); k >= 0 {
			ne = (ne &^ wMask) | int64(k)
		} else {
			ne = limit
		}
		x.cur = ne << wBits
		x.drainSlot(l1Base+int32(ne&wMask), true)
	}
}

// rewind handles a clock that went back (a stepped clock, or a caller's
// fake clock behind the wall clock the index started from): every waiting
// and ready recipient is placed again relative to the new position. O(n),
// and only when time goes backwards across a tick.
func (x *index) rewind(target int64) {
	var all []int32
	take := func(sent int32) {
		for i := x.r[sent].nx; i != sent; {
			nx := x.r[i].nx
			all = append(all, i)
			i = nx
		}
		x.r[sent].nx, x.r[sent].prev = sent, sent
	}
	for k := int32(0); k < nWheel; k++ {
		take(k)
	}
	for q := range x.queues {
		take(x.queues[q].ready)
		x.queues[q].inRing = false
	}
	x.ring = x.ring[:0]
	x.bits0, x.bits1 = [wSlots / 64]uint64{}, [wSlots / 64]uint64{}
	x.l1ok = [wSlots]bool{}
	x.waiting = 0
	x.cur = target
	for _, i := range all {
		x.r[i].prev, x.r[i].nx = i, i
		x.r[i].flags &^= rLinked | rWheel
		x.schedule(i)
	}
}

func (x *index) drain0(from, to int) {
	for {
		k := nextBit(x.bits0[:], from, to)
		if k < 0 {
			return
		}
		x.drainSlot(int32(k), false)
		from = k + 1
	}
}

// nextBit returns the first set bit in [from, to), or -1.
func nextBit(bm []uint64, from, to int) int {
	for from < to {
		w := bm[from/64] >> (from % 64)
		if w != 0 {
			k := from + bits.TrailingZeros64(w)
			if k < to {
				return k
			}
			return -1
		}
		from = (from/64 + 1) * 64
	}
	return -1
}

// nextDue returns when PopDue will next find something, and whether there
// is anything waiting: for a level-0 slot the end of its tick, for later
// slots the earliest time in them.
func (x *index) nextDue() (int64, bool) {
	for _, q := range x.ring {
		if x.r[x.queues[q].ready].nx != x.queues[q].ready {
			return 0, true
		}
	}
	if x.waiting == 0 {
		return 0, false
	}
	c := int(x.cur & wMask)
	if k := nextBit(x.bits0[:], c, wSlots); k >= 0 {
		if k == c {
			// the current tick is released when it has passed
			return (x.cur + 1) << tickShift, true
		}
		return (x.cur&^wMask + int64(k) + 1) << tickShift, true
	}
	e := x.cur >> wBits
	if k := nextBit(x.bits1[:], int(e&wMask)+1, wSlots); k >= 0 {
		if !x.l1ok[k] {
			x.l1min[k], x.l1ok[k] = x.minIn(l1Base+int32(k)), true
		}
		return x.l1min[k], true
	}
	return x.minIn(ovflSent), true
}

// minIn scans one wheel list for its earliest next.
func (x *index) minIn(sent int32) int64 {
	min := int64(-1)
	for i := x.r[sent].nx; i != sent; i = x.r[i].nx {
		if min < 0 || x.r[i].next < min {
			min = x.r[i].next
		}
	}
	return min
}

// popReady takes up to max ready recipients from queue q.
func (x *index) popReady(q int32, max int, out []int32) []int32 {
	sent := x.queues[q].ready
	for len(out) < max {
		i := x.r[sent].nx
		if i == sent {
			break
		}
		x.account(i, -1)
		x.unlinkRaw(i)
		x.r[i].flags |= rFlight
		x.account(i, 1)
		out = append(out, i)
	}
	return out
}

// popDue takes up to max due recipients, one queue after another in turn.
func (x *index) popDue(now int64, max int, out []int32) []int32 {
	x.advance(now)
	for len(out) < max && len(x.ring) > 0 {
		progress := false
		for n := len(x.ring); n > 0 && len(out) < max; n-- {
			if x.ringAt >= len(x.ring) {
				x.ringAt = 0
			}
			q := x.ring[x.ringAt]
			before := len(out)
			out = x.popReady(q, before+1, out)
			if len(out) > before {
				progress = true
			}
			if x.r[x.queues[q].ready].nx == x.queues[q].ready {
				x.queues[q].inRing = false
				x.ring[x.ringAt] = x.ring[len(x.ring)-1]
				x.ring = x.ring[:len(x.ring)-1]
				continue
			}
			x.ringAt++
		}
		if !progress {
			break
		}
	}
	return out
}
