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
}

type queue struct {
	key    QueueKey
	ready  int32 // sentinel of the ready list
	inRing bool
	st     QueueStats
}

// Timing wheel: four levels of 256 slots, as in a hierarchical timer
// wheel. Level 0 holds the ticks of the current block of 256 ticks
// (68.7 s), one slot per tick; level 1 the blocks of the current page of
// 256 blocks (4.9 hours), one slot per block; level 2 one slot per page
// (52 days); level 3 (36 years); anything later waits in an overflow slot.
// Where a recipient's entry is follows from its tick and the wheel's
// position alone (slotOf): when the position enters a higher slot's span,
// that slot is cascaded down. Insert, unlink and pop-due are O(1)
// whatever the queue size; an entry moves down at most three times.
//
// Cache misses, not steps, are what grow with the queue, and this shape
// keeps them down. A random insert lands in one of 1,024 slots whose
// array ends stay in cache (a flat wheel of 16,384 slots missed on every
// insert at a million queued); an entry carries its tick, so a cascade
// reads the arrays in order and touches no recipient; only the final
// drain reads the recipients that fall due, which their delivery does
// anyway.
//
// A slot is an array, not a linked list: inserting appends, and
// unlinking only clears the recipient's own flag and counts the slot
// down (its entry goes stale and is skipped when the slot is drained), so
// no operation touches another recipient's memory.
const (
	tickShift = 28 // one tick = 2^28 ns = 268 ms
	lvBits    = 8
	lvSlots   = 1 << lvBits
	lvMask    = lvSlots - 1
	nLevels   = 4
	ovflSlot  = nLevels * lvSlots
	nWheel    = ovflSlot + 1
	// A drained slot keeps its array for its next turn up to this many
	// entries; bigger ones (a level-1 slot at a million queued) go back
	// to the heap rather than stay allocated for hours.
	keepCap = 1024
)

// wentry is a wheel entry: a recipient and the low 32 bits of its tick,
// which with the wheel's position give the whole tick below the overflow.
type wentry struct {
	i int32
	t uint32
}

// tickOf is the whole tick of entry e, in a slot below the overflow.
func (x *index) tickOf(e wentry) int64 { return x.cur&^(1<<32-1) | int64(e.t) }

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

	cur   int64            // wheel position in ticks
	slots [nWheel][]wentry // entries; stale ones are skipped
	// live counts the recipients whose entry is in the slot, plus stale
	// entries a cascade carried down (it does not read recipients to
	// tell): zero means the slot holds nobody.
	live [nWheel]int32
	bits [nLevels * lvSlots / 64]uint64 // slots with live > 0
	// earliest tick in each slot above level 0, when minOK: a lower
	// bound, as stale entries count
	minT    [nWheel]int64
	minOK   [nWheel]bool
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
	t := r.next >> tickShift
	k := x.slotOf(t)
	if x.minOK[k] && x.minT[k] == t {
		x.minOK[k] = false
	}
	x.live[k]--
	if x.live[k] == 0 {
		x.emptySlot(k, x.slots[k]) // every entry left is stale
	} else if len(x.slots[k]) > 64 && len(x.slots[k]) > 4*int(x.live[k]) {
		x.compactSlot(k) // bound the stale entries of a slot that does not drain for long
	}
}

// slotOf returns the slot that holds tick t >= x.cur: the level is set by
// the highest 8-bit digit in which t differs from the position.
func (x *index) slotOf(t int64) int32 {
	d := bits.Len64(uint64(t ^ x.cur))
	if d == 0 {
		return int32(t & lvMask)
	}
	l := (d - 1) / lvBits
	if l >= nLevels {
		return ovflSlot
	}
	return int32(l*lvSlots) + int32(t>>(l*lvBits))&lvMask
}

// current reports whether an entry of recipient i in slot k is where it
// waits: entries left behind by an unlink are not. A recipient may have
// two current entries in one slot (unlinked and put back); whoever takes
// one clears rWheel, so the other is then skipped.
func (x *index) current(i, k int32) bool {
	r := &x.r[i]
	return r.flags&rWheel != 0 && x.slotOf(r.next>>tickShift) == k
}

// compactSlot drops the stale entries of slot k. Amortized over the
// unlinks that made them, it costs O(1) each.
func (x *index) compactSlot(k int32) {
	es := x.slots[k]
	n := 0
	for _, e := range es {
		if x.current(e.i, k) && x.r[e.i].flags&rSeen == 0 {
			x.r[e.i].flags |= rSeen // a second entry is a duplicate
			es[n] = e
			n++
		}
	}
	for _, e := range es[:n] {
		x.r[e.i].flags &^= rSeen
	}
	if n == 0 {
		x.emptySlot(k, es) // the count was all stale entries a cascade carried
		return
	}
	x.slots[k] = es[:n]
	x.live[k] = int32(n)
	x.minOK[k] = false
}

func (x *index) clearSlotBit(k int32) {
	if k < ovflSlot {
		x.bits[k/64] &^= 1 << (k % 64)
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
	x.place(i, t)
	r.flags |= rLinked | rWheel
	x.waiting++
}

// place appends an entry for recipient i, due at tick t >= x.cur.
func (x *index) place(i int32, t int64) {
	k := x.slotOf(t)
	x.slots[k] = append(x.slots[k], wentry{i, uint32(t)})
	if k >= lvSlots {
		if x.live[k] == 0 {
			x.minT[k], x.minOK[k] = t, true
		} else if x.minOK[k] && t < x.minT[k] {
			x.minT[k] = t
		}
	}
	if x.live[k] == 0 && k < ovflSlot {
		x.bits[k/64] |= 1 << (k % 64)
	}
	x.live[k]++
}

func (x *index) makeReady(i int32) {
	q := &x.queues[x.r[i].queue]
	x.pushBack(q.ready, i)
	if !q.inRing {
		q.inRing = true
		x.ring = append(x.ring, x.r[i].queue)
	}
}

// emptySlot forgets slot k's entries, keeping a small array for the
// slot's next turn.
func (x *index) emptySlot(k int32, es []wentry) {
	if cap(es) <= keepCap {
		x.slots[k] = es[:0]
	} else {
		x.slots[k] = nil
	}
	x.live[k] = 0
	x.minOK[k] = false
	x.clearSlotBit(k)
}

// drainSlot makes ready every recipient of level-0 slot k, whose tick has
// passed.
func (x *index) drainSlot(k int32) {
	es := x.slots[k]
	x.slots[k] = nil
	tick := x.cur&^lvMask + int64(k)
	// Two short loops whose loads do not depend on one another, so that
	// with a million queued the cache misses on the recipients, then on
	// their messages, overlap instead of following one another.
	n := 0
	for _, e := range es {
		if r := &x.r[e.i]; r.flags&rWheel != 0 && r.next>>tickShift == tick {
			r.flags &^= rLinked | rWheel
			es[n] = e
			n++
		}
	}
	x.waiting -= n
	// PopDue's caller and the accounting read each due recipient's
	// message next, one at a time; read them all now.
	var warm uint32
	for _, e := range es[:n] {
		warm += x.m[x.r[e.i].msg].size
	}
	x.warm = warm // kept so the reads are not optimized away
	for _, e := range es[:n] {
		x.makeReady(e.i)
	}
	x.emptySlot(k, es)
}

// cascade moves the entries of slot k, whose span the position has just
// entered, to the lower levels. Stale entries move too: telling them
// apart would read every recipient.
func (x *index) cascade(k int32) {
	es := x.slots[k]
	x.slots[k] = nil
	for _, e := range es {
		x.place(e.i, x.tickOf(e))
	}
	x.emptySlot(k, es)
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
// Time runs from one non-empty slot to the next, so a long jump costs
// nothing for the empty spans it crosses.
func (x *index) advance(now int64) {
	target := now >> tickShift
	if target < x.cur {
		x.rewind(target)
		return
	}
	for {
		x.drain0(target)
		b := x.nextBoundary()
		if b > target {
			x.cur = target
			return
		}
		x.crossTo(b)
	}
}

// drain0 drains the level-0 slots of the ticks before target.
func (x *index) drain0(target int64) {
	to := lvSlots
	if d := target - x.cur&^lvMask; d < lvSlots {
		to = int(d)
	}
	for from := int(x.cur & lvMask); ; {
		k := nextBit(x.bits[:lvSlots/64], from, to)
		if k < 0 {
			return
		}
		x.drainSlot(int32(k))
		from = k + 1
	}
}

// nextBoundary returns the first tick at which the position enters a
// non-empty slot above level 0 (or the overflow's next 2^32-tick page),
// math.MaxInt64 if none. Slots of lower levels come before those of
// higher ones, so the lowest non-empty level decides.
func (x *index) nextBoundary() int64 {
	for l := 1; l < nLevels; l++ {
		sh := l * lvBits
		w := x.bits[l*lvSlots/64 : (l+1)*lvSlots/64]
		if s := nextBit(w, int(x.cur>>sh)&lvMask, lvSlots); s >= 0 {
			return x.cur>>(sh+lvBits)<<(sh+lvBits) | int64(s)<<sh
		}
	}
	if x.live[ovflSlot] > 0 {
		return (x.cur>>32 + 1) << 32
	}
	return math.MaxInt64
}

// crossTo moves the position to tick b, the start of a non-empty slot's
// span, and cascades that slot: the one of the highest level whose span
// starts at b. (The slots of lower levels starting there are their
// levels' first, never ahead of the position: empty.)
func (x *index) crossTo(b int64) {
	var again []int32
	if b&(1<<32-1) == 0 {
		// The overflow's entries hold no tick bits worth trusting: its
		// recipients are read and placed again.
		es := x.slots[ovflSlot]
		x.slots[ovflSlot] = nil
		for _, e := range es {
			if x.current(e.i, ovflSlot) {
				x.r[e.i].flags &^= rLinked | rWheel
				x.waiting--
				again = append(again, e.i)
			}
		}
		x.emptySlot(ovflSlot, es)
	}
	x.cur = b
	for _, i := range again {
		x.schedule(i)
	}
	for l := nLevels - 1; l >= 1; l-- {
		if sh := l * lvBits; b&(1<<sh-1) == 0 {
			x.cascade(int32(l*lvSlots) + int32(b>>sh)&lvMask)
			return
		}
	}
}

// rewind handles a clock that went back (a stepped clock, or a caller's
// fake clock behind the wall clock the index started from): every waiting
// and ready recipient is placed again relative to the new position. O(n),
// and only when time goes backwards across a tick.
func (x *index) rewind(target int64) {
	var all []int32
	for k := int32(0); k < nWheel; k++ {
		for _, e := range x.slots[k] {
			if x.current(e.i, k) {
				x.r[e.i].flags &^= rLinked | rWheel
				all = append(all, e.i)
			}
		}
		x.emptySlot(k, x.slots[k])
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
	x.waiting = 0
	x.cur = target
	for _, i := range all {
		x.schedule(i)
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
// is anything waiting: the end of the earliest waiting tick, or earlier
// when stale entries make a slot look non-empty.
func (x *index) nextDue() (int64, bool) {
	for _, q := range x.ring {
		if x.r[x.queues[q].ready].nx != x.queues[q].ready {
			return 0, true
		}
	}
	if x.waiting == 0 {
		return 0, false
	}
	if k := nextBit(x.bits[:lvSlots/64], int(x.cur&lvMask), lvSlots); k >= 0 {
		return (x.cur&^lvMask + int64(k) + 1) << tickShift, true
	}
	for l := 1; l < nLevels; l++ {
		w := x.bits[l*lvSlots/64 : (l+1)*lvSlots/64]
		if s := nextBit(w, int(x.cur>>(l*lvBits))&lvMask, lvSlots); s >= 0 {
			return (x.slotMin(int32(l*lvSlots+s)) + 1) << tickShift, true
		}
	}
	if x.live[ovflSlot] == 0 {
		return 0, false // not reached: waiting counts entries a slot holds
	}
	return (x.slotMin(ovflSlot) + 1) << tickShift, true
}

// slotMin is the earliest tick in slot k above level 0.
func (x *index) slotMin(k int32) int64 {
	if x.minOK[k] {
		return x.minT[k]
	}
	lo := int64(math.MaxInt64)
	for _, e := range x.slots[k] {
		t := x.tickOf(e)
		if k == ovflSlot {
			if !x.current(e.i, k) {
				continue
			}
			t = x.r[e.i].next >> tickShift
		}
		lo = min(lo, t)
	}
	x.minT[k], x.minOK[k] = lo, true
	return lo
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
