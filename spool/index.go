package spool

import (
	"bytes"
	"math"
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
	rSeen                  // compactSlot's mark, clear between its calls
)

type rcpt struct {
	next     int64  // wall-clock next try, UnixNano; 0 = now
	reason   uint64 // record holding the reason: seg<<32 | off+1; 0 = none
	prev, nx int32  // ready list: doubly linked circular list through a sentinel
	msg      int32
	queue    int32
	attempts uint32
	status   uint8
	flags    uint8
	wslot    uint16 // wheel slot, while rWheel is set
}

type queue struct {
	key    QueueKey
	ready  int32 // sentinel of the ready list
	inRing bool
	st     QueueStats
}

// Timing wheel. Level 0 has wSlots slots of one tick and rolls: it holds
// every time in the next wSlots ticks (73 minutes), slot t mod wSlots, so
// a recipient deferred by less than that is placed once and never moved.
// Level 1 rolls the same way over epochs of wSlots ticks (2.3 years);
// anything later waits in an overflow slot. A level-1 slot moves down
// when its epoch starts, the overflow when the epoch number wraps.
// Insert, unlink and pop-due are O(1) whatever the queue size.
//
// A slot is an array of recipient numbers, not a linked list: inserting
// appends, and unlinking only clears the recipient's own flag and counts
// the slot down (its entry goes stale and is skipped when the slot is
// drained), so no operation touches another recipient's memory. With a
// million waiting recipients those neighbours are cache misses; the array
// is read in order, and only the recipients actually due are touched.
const (
	tickShift = 28 // one tick = 2^28 ns = 268 ms
	wBits     = 14
	wSlots    = 1 << wBits
	wMask     = wSlots - 1
	l1Base    = wSlots
	ovflSlot  = 2 * wSlots
	nWheel    = 2*wSlots + 1
)

// rcpt.wslot must hold every slot number.
const _ = uint16(nWheel - 1)

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

	cur          int64               // wheel position in ticks
	slots        [nWheel][]int32     // entries; stale ones are skipped
	live         [nWheel]int32       // recipients whose slot this is
	bits0, bits1 [wSlots / 64]uint64 // slots with live recipients
	// earliest next in each level-1 slot and (last) the overflow, when ok
	l1min   [wSlots + 1]int64
	l1ok    [wSlots + 1]bool
	waiting int    // recipients in the wheel
	warm    uint32 // see drainSlot

	nmsgs, nrcpts, nheld int
	bytes                int64
}

func newIndex(now int64) *index {
	x := &index{
		rfree: make(map[int32][]int32),
		qidx:  make(map[string]map[string]int32),
		cur:   now >> tickShift,
	}
	x.r = make([]rcpt, 0, 1024)
	return x
}

func (x *index) allocRcpts(n int32) int32 {
	if l := x.rfree[n]; len(l) > 0 {
		i := l[len(l)-1]
		x.rfree[n] = l[:len(l)-1]
		return i
	}
	i := int32(len(x.r))
	x.r = grow(x.r, int(n))
	return i
}

// grow extends s by n zero elements, doubling the capacity when it must
// grow: append's own growth of large slices (1.25x) would copy a
// million-entry slab a dozen times more, each time with the committer
// holding the index lock.
func grow[T any](s []T, n int) []T {
	if len(s)+n > cap(s) {
		ns := make([]T, len(s), max(2*cap(s), len(s)+n, 1024))
		copy(ns, s)
		s = ns
	}
	s = s[:len(s)+n]
	clear(s[len(s)-n:])
	return s
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
	x.m = grow(x.m, 1)
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

// toFlight marks recipient i handed out. It is account(i, -1), the flag,
// account(i, 1) without reading the message's size, which both would
// add and take away: at a million recipients that read is a cache miss
// on every pop.
func (x *index) toFlight(i int32) {
	r := &x.r[i]
	if r.flags&rFlight == 0 && !Status(r.status).Finished() {
		q := &x.queues[r.queue].st
		if Status(r.status) == Deferred {
			q.Deferred--
		}
		q.Active++
	}
	r.flags |= rFlight
}

func (x *index) unlink(i int32) {
	r := &x.r[i]
	if r.flags&rLinked == 0 {
		return
	}
	if r.flags&rWheel == 0 {
		x.unlinkRaw(i)
		return
	}
	r.flags &^= rLinked | rWheel
	x.waiting--
	k := int32(r.wslot)
	if k >= l1Base && x.l1min[k-l1Base] == r.next {
		x.l1ok[k-l1Base] = false
	}
	x.live[k]--
	if x.live[k] == 0 {
		x.slots[k] = x.slots[k][:0] // every entry left is stale
		x.clearSlotBit(k)
	} else if len(x.slots[k]) > 64 && len(x.slots[k]) > 4*int(x.live[k]) {
		x.compactSlot(k) // bound the stale entries of a slot that never empties
	}
}

// current reports whether entry i of slot k is where recipient i waits:
// entries left behind by an unlink, or by a move to another slot, are not.
// A recipient may have two current entries in one slot (unlinked and put
// back); whoever takes one clears rWheel, so the other is then skipped.
func (x *index) current(i, k int32) bool {
	r := &x.r[i]
	return r.flags&rWheel != 0 && int32(r.wslot) == k
}

// compactSlot drops the stale entries of slot k. Amortized over the
// unlinks that made them, it costs O(1) each.
func (x *index) compactSlot(k int32) {
	es := x.slots[k]
	n := 0
	for _, i := range es {
		if x.current(i, k) && x.r[i].flags&rSeen == 0 {
			x.r[i].flags |= rSeen // a second entry is a duplicate
			es[n] = i
			n++
		}
	}
	for _, i := range es[:n] {
		x.r[i].flags &^= rSeen
	}
	x.slots[k] = es[:n]
}

func (x *index) clearSlotBit(k int32) {
	switch {
	case k < l1Base:
		x.bits0[k/64] &^= 1 << (k % 64)
	case k < ovflSlot:
		k -= l1Base
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

// wheelInsert places recipient i, due at tick t >= x.cur.
func (x *index) wheelInsert(i int32, t int64) {
	var slot int32
	if t-x.cur < wSlots {
		k := int32(t & wMask)
		slot = k
		x.bits0[k/64] |= 1 << (k % 64)
	} else {
		k := int32(wSlots) // the overflow
		if t>>wBits-x.cur>>wBits < wSlots {
			k = int32((t >> wBits) & wMask)
			x.bits1[k/64] |= 1 << (k % 64)
		}
		slot = l1Base + k
		if next := x.r[i].next; x.live[slot] == 0 {
			x.l1min[k], x.l1ok[k] = next, true
		} else if x.l1ok[k] && next < x.l1min[k] {
			x.l1min[k] = next
		}
	}
	x.slots[slot] = append(x.slots[slot], i)
	x.live[slot]++
	r := &x.r[i]
	r.wslot = uint16(slot)
	r.flags |= rLinked | rWheel
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

// drainSlot moves every recipient of a wheel slot out: to the ready
// lists, or (redo) back through schedule, which may put it in the same
// slot; so every recipient is taken out before any is placed again.
func (x *index) drainSlot(k int32, redo bool) {
	if x.live[k] == 0 {
		return
	}
	es := x.slots[k]
	x.slots[k], x.live[k] = nil, 0
	x.clearSlotBit(k)
	n := 0
	var warm uint32
	for _, i := range es {
		if x.current(i, k) {
			x.r[i].flags &^= rLinked | rWheel
			x.waiting--
			es[n] = i
			n++
			if !redo {
				// Read each due recipient's message now, while the
				// loads for the whole slot can overlap: PopDue's
				// caller and the accounting read it next, one at a
				// time, and at a million queued each would be a
				// cache miss. (Measured: BenchmarkWheel at 1M.)
				warm += x.m[x.r[i].msg].size
			}
		}
	}
	x.warm = warm // kept so the reads are not optimized away
	for _, i := range es[:n] {
		if redo {
			x.schedule(i)
		} else {
			x.makeReady(i)
		}
	}
	if x.slots[k] == nil {
		x.slots[k] = es[:0] // keep the array for the slot's next turn
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
// to one tick (268 ms) past its time; in exchange no call rescans a slot.
func (x *index) advance(now int64) {
	target := now >> tickShift
	if target < x.cur {
		x.rewind(target)
		return
	}
	for x.cur < target {
		next := (x.cur>>wBits + 1) << wBits // the next epoch's first tick
		if target < next {
			x.drain0(int(x.cur&wMask), int(target&wMask))
			x.cur = target
			return
		}
		x.drain0(int(x.cur&wMask), wSlots)
		x.cur = next
		e := next >> wBits
		if e&wMask == 0 {
			x.drainSlot(ovflSlot, true) // later than level 1 reached before
		}
		x.drainSlot(l1Base+int32(e&wMask), true) // now within level 0
	}
}

// rewind handles a clock that went back (a stepped clock, or a caller's
// fake clock behind the wall clock the index started from): every waiting
// and ready recipient is placed again relative to the new position. O(n),
// and only when time goes backwards across a tick.
func (x *index) rewind(target int64) {
	var all []int32
	for k := int32(0); k < nWheel; k++ {
		for _, i := range x.slots[k] {
			if x.current(i, k) {
				x.r[i].flags &^= rLinked | rWheel
				all = append(all, i)
			}
		}
		x.slots[k], x.live[k] = x.slots[k][:0], 0
	}
	for q := range x.queues {
		sent := x.queues[q].ready
		for i := x.r[sent].nx; i != sent; {
			nx := x.r[i].nx
			x.r[i].prev, x.r[i].nx = i, i
			x.r[i].flags &^= rLinked
			all = append(all, i)
			i = nx
		}
		x.r[sent].nx, x.r[sent].prev = sent, sent
		x.queues[q].inRing = false
	}
	x.ring = x.ring[:0]
	x.bits0, x.bits1 = [wSlots / 64]uint64{}, [wSlots / 64]uint64{}
	x.l1ok = [wSlots + 1]bool{}
	x.waiting = 0
	x.cur = target
	for _, i := range all {
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
// slots the earliest time in them. The levels overlap in time (level 0
// rolls into epochs whose level-1 slot still holds older entries), so the
// earliest of all three is taken.
func (x *index) nextDue() (int64, bool) {
	for _, q := range x.ring {
		if x.r[x.queues[q].ready].nx != x.queues[q].ready {
			return 0, true
		}
	}
	if x.waiting == 0 {
		return 0, false
	}
	best := int64(math.MaxInt64)
	c := int(x.cur & wMask)
	k := nextBit(x.bits0[:], c, wSlots)
	if k < 0 {
		k = nextBit(x.bits0[:], 0, c)
	}
	if k >= 0 {
		// the slot's tick is released when it has passed
		best = (x.cur + int64((k-c)&wMask) + 1) << tickShift
	}
	e := int((x.cur >> wBits) & wMask)
	k = nextBit(x.bits1[:], e, wSlots)
	if k < 0 {
		k = nextBit(x.bits1[:], 0, e)
	}
	if k >= 0 {
		best = min(best, x.slotMin(k))
	}
	if x.live[ovflSlot] > 0 {
		best = min(best, x.slotMin(wSlots))
	}
	return best, true
}

// slotMin is the earliest next in level-1 slot k (wSlots: the overflow).
func (x *index) slotMin(k int) int64 {
	if !x.l1ok[k] {
		x.l1min[k], x.l1ok[k] = x.minIn(l1Base+int32(k)), true
	}
	return x.l1min[k]
}

// minIn scans one wheel slot for its earliest next.
func (x *index) minIn(k int32) int64 {
	min := int64(-1)
	for _, i := range x.slots[k] {
		if x.current(i, k) && (min < 0 || x.r[i].next < min) {
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
		x.unlinkRaw(i)
		x.toFlight(i)
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
