package spool

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
)

// Frame layout (see FORMAT.md): u32 body length, u32 CRC32C of the body,
// then the body, whose first byte is the record kind.
const frameHeader = 8

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// Record kinds. Values are on disk: never renumber.
const (
	kMessage  = 1 // a new message: envelope, recipients, content
	kCopy     = 2 // a message carried forward by compaction, with its state
	kOutcome  = 3 // one recipient's outcome (delivered, deferred, bounced, expired)
	kAttempt  = 4 // a delivery attempt is starting: attempts and next try
	kHold     = 5
	kRelease  = 6
	kDone     = 7 // tombstone: message finished or deleted
	kSnapshot = 8 // a message's whole state, carried forward by compaction
)

const idLen = 16

var errShort = errors.New("truncated record")

// enc appends record fields.
type enc struct{ b []byte }

func (e *enc) u8(v uint8)        { e.b = append(e.b, v) }
func (e *enc) uv(v uint64)       { e.b = binary.AppendUvarint(e.b, v) }
func (e *enc) i64(v int64)       { e.b = binary.LittleEndian.AppendUint64(e.b, uint64(v)) }
func (e *enc) u32(v uint32)      { e.b = binary.LittleEndian.AppendUint32(e.b, v) }
func (e *enc) str(s string)      { e.uv(uint64(len(s))); e.b = append(e.b, s...) }
func (e *enc) bytes(s []byte)    { e.uv(uint64(len(s))); e.b = append(e.b, s...) }
func (e *enc) id(id [idLen]byte) { e.b = append(e.b, id[:]...) }

// begin reserves a frame header; end fills it in.
func (e *enc) begin(kind uint8) int {
	start := len(e.b)
	e.b = append(e.b, 0, 0, 0, 0, 0, 0, 0, 0, kind)
	return start
}

func (e *enc) end(start int) {
	body := e.b[start+frameHeader:]
	binary.LittleEndian.PutUint32(e.b[start:], uint32(len(body)))
	binary.LittleEndian.PutUint32(e.b[start+4:], crc32.Checksum(body, castagnoli))
}

// dec reads record fields; the first failure sticks in err.
type dec struct {
	b   []byte
	err error
}

func (d *dec) fail() {
	if d.err == nil {
		d.err = errShort
	}
	d.b = nil
}

func (d *dec) u8() uint8 {
	if len(d.b) < 1 {
		d.fail()
		return 0
	}
	v := d.b[0]
	d.b = d.b[1:]
	return v
}

func (d *dec) uv() uint64 {
	v, n := binary.Uvarint(d.b)
	if n <= 0 {
		d.fail()
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *dec) i64() int64 {
	if len(d.b) < 8 {
		d.fail()
		return 0
	}
	v := binary.LittleEndian.Uint64(d.b)
	d.b = d.b[8:]
	return int64(v)
}

func (d *dec) u32() uint32 {
	if len(d.b) < 4 {
		d.fail()
		return 0
	}
	v := binary.LittleEndian.Uint32(d.b)
	d.b = d.b[4:]
	return v
}

func (d *dec) bytes() []byte {
	n := d.uv()
	if d.err != nil || n > uint64(len(d.b)) {
		d.fail()
		return nil
	}
	v := d.b[:n:n]
	d.b = d.b[n:]
	return v
}

func (d *dec) id() (id [idLen]byte) {
	if len(d.b) < idLen {
		d.fail()
		return
	}
	copy(id[:], d.b)
	d.b = d.b[idLen:]
	return
}

// frame checks the frame at the start of b. It returns the body and the
// whole frame length; ok=false with n=0 means clean end of data (zeroes);
// an error means a torn or corrupt frame.
func frame(b []byte, salt uint32) (body []byte, n int, err error) {
	if len(b) < frameHeader {
		if allZero(b) {
			return nil, 0, nil
		}
		return nil, 0, fmt.Errorf("frame header cut at %d bytes", len(b))
	}
	l := binary.LittleEndian.Uint32(b)
	sum := binary.LittleEndian.Uint32(b[4:])
	if l == 0 && sum == 0 {
		return nil, 0, nil
	}
	if l == 0 || uint64(l) > uint64(len(b)-frameHeader) {
		return nil, 0, fmt.Errorf("frame length %d beyond %d bytes left", l, len(b)-frameHeader)
	}
	body = b[frameHeader : frameHeader+int(l)]
	if crc32.Checksum(body, castagnoli)^salt != sum {
		return nil, 0, fmt.Errorf("frame CRC mismatch (length %d)", l)
	}
	return body, frameHeader + int(l), nil
}

func allZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

// rstate is one recipient's persisted state inside kCopy and kSnapshot.
type rstate struct {
	status   uint8
	attempts uint64
	next     int64
	reason   []byte
}

// rcptView is one recipient of a kMessage/kCopy record, as views into it.
type rcptView struct {
	addr, orcpt []byte
	notify      uint8
}

// rec is one decoded record body; byte slices alias the body.
type rec struct {
	kind uint8
	id   [idLen]byte

	// kMessage, kCopy
	arrival                  int64
	flags                    uint8
	sender, ret, envid, body []byte
	jobid, vmta              []byte
	origin                   [4][]byte // type, helo, addr, auth user (flagOrigin)
	rcpts                    []rcptView
	content                  []byte
	clen                     int // content length (a footer entry carries none)
	contentOff               int // offset of content within the body
	held                     bool
	states                   []rstate // kCopy, kSnapshot
	rcpt                     int      // kOutcome, kAttempt
	st                       rstate   // kOutcome, kAttempt
	first, last              uint32   // kDone
}

const (
	flagSMTPUTF8 = 1
	// flagOrigin: four strings (Origin) follow the virtual MTA. Records
	// without it (written before it existed) have no origin.
	flagOrigin = 2
	// flagVerify: an address-verification request (sendmail -bv): the
	// recipients are probed and a report sent; the content is not delivered.
	flagVerify = 4
)

// maxRcpts bounds the recipient count a record may claim, so a corrupt
// count cannot make the decoder allocate without bound.
const maxRcpts = 1 << 20

// parse decodes a frame body into r (reusing r's slices).
func (r *rec) parse(body []byte) error {
	if len(body) == 0 {
		return errShort
	}
	d := dec{b: body[1:]}
	r.kind = body[0]
	r.id = d.id()
	switch r.kind {
	case kMessage, kCopy:
		r.arrival = d.i64()
		r.flags = d.u8()
		r.sender = d.bytes()
		r.ret = d.bytes()
		r.envid = d.bytes()
		r.body = d.bytes()
		r.jobid = d.bytes()
		r.vmta = d.bytes()
		r.origin = [4][]byte{}
		if r.flags&flagOrigin != 0 {
			for i := range r.origin {
				r.origin[i] = d.bytes()
			}
		}
		n := d.uv()
		if d.err != nil || n == 0 || n > maxRcpts || n > uint64(len(d.b)) {
			return fmt.Errorf("record: bad recipient count %d", n)
		}
		r.rcpts = r.rcpts[:0]
		for i := uint64(0); i < n && d.err == nil; i++ {
			var v rcptView
			v.addr = d.bytes()
			v.orcpt = d.bytes()
			v.notify = d.u8()
			r.rcpts = append(r.rcpts, v)
		}
		r.states = r.states[:0]
		if r.kind == kCopy {
			r.held = d.u8() != 0
			r.parseStates(&d, int(n))
		}
		r.content = d.bytes()
		r.clen = len(r.content)
		if d.err == nil {
			r.contentOff = len(body) - len(d.b) - len(r.content)
		}
	case kOutcome, kAttempt:
		r.rcpt = int(d.uv())
		if r.kind == kOutcome {
			r.st.status = d.u8()
		} else {
			r.st.status = uint8(Deferred)
		}
		r.st.attempts = d.uv()
		r.st.next = d.i64()
		r.st.reason = nil
		if r.kind == kOutcome {
			r.st.reason = d.bytes()
			if d.err == nil && r.st.status > uint8(Expired) {
				return fmt.Errorf("record: bad status %d", r.st.status)
			}
		}
		if d.err == nil && r.rcpt >= maxRcpts {
			return fmt.Errorf("record: bad recipient index %d", r.rcpt)
		}
	case kHold, kRelease:
	case kDone:
		r.first = d.u32()
		r.last = d.u32()
	case kSnapshot:
		r.held = d.u8() != 0
		n := d.uv()
		if d.err != nil || n == 0 || n > maxRcpts || n > uint64(len(d.b)) {
			return fmt.Errorf("record: bad recipient count %d", n)
		}
		r.states = r.states[:0]
		r.parseStates(&d, int(n))
	default:
		return fmt.Errorf("record: unknown kind %d", r.kind)
	}
	if d.err != nil {
		return fmt.Errorf("record kind %d: %w", r.kind, d.err)
	}
	if len(d.b) != 0 {
		return fmt.Errorf("record kind %d: %d trailing bytes", r.kind, len(d.b))
	}
	return nil
}

func (r *rec) parseStates(d *dec, n int) {
	for i := 0; i < n && d.err == nil; i++ {
		var s rstate
		s.status = d.u8()
		s.attempts = d.uv()
		s.next = d.i64()
		s.reason = d.bytes()
		if s.status > uint8(Expired) {
			d.err = fmt.Errorf("bad status %d", s.status)
		}
		r.states = append(r.states, s)
	}
}

// appendMessage encodes m as a kMessage frame (or kCopy with states).
func appendMessage(b []byte, kind uint8, id [idLen]byte, m *Message, held bool, states []rstate, content []byte) []byte {
	e := enc{b: b}
	start := e.begin(kind)
	e.id(id)
	e.i64(m.Arrival.UnixNano())
	var fl uint8
	if m.SMTPUTF8 {
		fl |= flagSMTPUTF8
	}
	if m.Origin != (Origin{}) {
		fl |= flagOrigin
	}
	if m.Verify {
		fl |= flagVerify
	}
	e.u8(fl)
	e.str(m.Sender)
	e.str(m.Ret)
	e.str(m.EnvID)
	e.str(m.Body)
	e.str(m.JobID)
	e.str(m.VMTA)
	if fl&flagOrigin != 0 {
		e.str(m.Origin.Type)
		e.str(m.Origin.Helo)
		e.str(m.Origin.Addr)
		e.str(m.Origin.AuthUser)
	}
	e.uv(uint64(len(m.Recipients)))
	for _, r := range m.Recipients {
		e.str(r.Addr)
		e.str(r.ORCPT)
		e.u8(uint8(r.Notify))
	}
	if kind == kCopy {
		if held {
			e.u8(1)
		} else {
			e.u8(0)
		}
		appendStates(&e, states)
	}
	e.bytes(content)
	e.end(start)
	return e.b
}

func appendStates(e *enc, states []rstate) {
	for _, s := range states {
		e.u8(s.status)
		e.uv(s.attempts)
		e.i64(s.next)
		e.bytes(s.reason)
	}
}

func appendOutcome(b []byte, id [idLen]byte, rcpt int, st Status, attempts int, next int64, reason string) []byte {
	e := enc{b: b}
	start := e.begin(kOutcome)
	e.id(id)
	e.uv(uint64(rcpt))
	e.u8(uint8(st))
	e.uv(uint64(attempts))
	e.i64(next)
	e.str(reason)
	e.end(start)
	return e.b
}

func appendAttempt(b []byte, id [idLen]byte, rcpt int, attempts int, next int64) []byte {
	e := enc{b: b}
	start := e.begin(kAttempt)
	e.id(id)
	e.uv(uint64(rcpt))
	e.uv(uint64(attempts))
	e.i64(next)
	e.end(start)
	return e.b
}

func appendSimple(b []byte, kind uint8, id [idLen]byte) []byte {
	e := enc{b: b}
	start := e.begin(kind)
	e.id(id)
	e.end(start)
	return e.b
}

func appendDone(b []byte, id [idLen]byte, first, last uint32) []byte {
	e := enc{b: b}
	start := e.begin(kDone)
	e.id(id)
	e.u32(first)
	e.u32(last)
	e.end(start)
	return e.b
}

func appendSnapshot(b []byte, id [idLen]byte, held bool, states []rstate) []byte {
	e := enc{b: b}
	start := e.begin(kSnapshot)
	e.id(id)
	if held {
		e.u8(1)
	} else {
		e.u8(0)
	}
	e.uv(uint64(len(states)))
	appendStates(&e, states)
	e.end(start)
	return e.b
}
