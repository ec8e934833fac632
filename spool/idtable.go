package spool

import "encoding/binary"

// idTable maps queue ids to message slots. It is open addressing with
// linear probing over int32 slots (message index+1; 0 = empty), and the
// keys stay in the message slab, so an entry costs 4-10 bytes instead of a
// Go map's ~32.
type idTable struct {
	slots []int32
	n     int
}

func hashID(id *[idLen]byte) uint64 {
	// Half of an id is its arrival time: mix every byte in.
	h := binary.LittleEndian.Uint64(id[:8])*0x9E3779B97F4A7C15 ^ binary.LittleEndian.Uint64(id[8:])
	h ^= h >> 29
	h *= 0xBF58476D1CE4E5B9
	h ^= h >> 32
	return h
}

func (x *index) idGet(id [idLen]byte) (int32, bool) {
	t := &x.ids
	if len(t.slots) == 0 {
		return 0, false
	}
	mask := uint64(len(t.slots) - 1)
	for i := hashID(&id) & mask; ; i = (i + 1) & mask {
		v := t.slots[i]
		if v == 0 {
			return 0, false
		}
		if x.m[v-1].id == id {
			return v - 1, true
		}
	}
}

func (x *index) idPut(id [idLen]byte, mi int32) {
	t := &x.ids
	if (t.n+1)*8 > len(t.slots)*7 {
		x.idGrow()
	}
	mask := uint64(len(t.slots) - 1)
	for i := hashID(&id) & mask; ; i = (i + 1) & mask {
		v := t.slots[i]
		if v == 0 {
			t.slots[i] = mi + 1
			t.n++
			return
		}
		if x.m[v-1].id == id {
			t.slots[i] = mi + 1
			return
		}
	}
}

func (x *index) idGrow() {
	t := &x.ids
	old := t.slots
	size := 1024
	for size*7 < (t.n+1)*8*2 {
		size *= 2
	}
	t.slots = make([]int32, size)
	mask := uint64(size - 1)
	for _, v := range old {
		if v == 0 {
			continue
		}
		i := hashID(&x.m[v-1].id) & mask
		for t.slots[i] != 0 {
			i = (i + 1) & mask
		}
		t.slots[i] = v
	}
}

// idDel removes id; the message slot must still hold the id.
func (x *index) idDel(id [idLen]byte) {
	t := &x.ids
	if len(t.slots) == 0 {
		return
	}
	mask := uint64(len(t.slots) - 1)
	i := hashID(&id) & mask
	for {
		v := t.slots[i]
		if v == 0 {
			return
		}
		if x.m[v-1].id == id {
			break
		}
		i = (i + 1) & mask
	}
	// Backward-shift deletion keeps every probe chain unbroken.
	for j := i; ; {
		j = (j + 1) & mask
		v := t.slots[j]
		if v == 0 {
			t.slots[i] = 0
			t.n--
			return
		}
		k := hashID(&x.m[v-1].id) & mask
		if (j > i && (k <= i || k > j)) || (j < i && k <= i && k > j) {
			t.slots[i] = v
			i = j
		}
	}
}
