package spool

import (
	"errors"
	"fmt"
	"io"
	"time"
)

// message builds a Message (Content nil) from a kMessage/kCopy record.
func (r *rec) message() *Message {
	m := &Message{
		ID:       string(r.id[:]),
		Arrival:  time.Unix(0, r.arrival),
		Sender:   string(r.sender),
		Ret:      string(r.ret),
		EnvID:    string(r.envid),
		SMTPUTF8: r.flags&flagSMTPUTF8 != 0,
		Verify:   r.flags&flagVerify != 0,
		Body:     string(r.body),
		JobID:    string(r.jobid),
		VMTA:     string(r.vmta),
		Origin: Origin{Type: string(r.origin[0]), Helo: string(r.origin[1]),
			Addr: string(r.origin[2]), AuthUser: string(r.origin[3])},
	}
	m.Recipients = make([]Recipient, len(r.rcpts))
	for i, v := range r.rcpts {
		m.Recipients[i] = Recipient{Addr: string(v.addr), ORCPT: string(v.orcpt), Notify: Notify(v.notify)}
	}
	return m
}

// reasonAt reads the reason for recipient k from the record ref points at.
// Called with s.mu held (the segment cannot go away meanwhile).
func (s *Spool) reasonAt(ref uint64, k int) string {
	g := s.segs[uint32(ref>>32)]
	if g == nil || g.data == nil {
		return ""
	}
	off := int64(uint32(ref) - 1)
	var out string
	guard(func() error {
		body, _, err := frame(g.data[off:g.end], g.salt)
		if err != nil {
			return err
		}
		var r rec
		if err := r.parse(body); err != nil {
			return err
		}
		switch r.kind {
		case kOutcome:
			out = string(r.st.reason)
		case kCopy, kSnapshot:
			if k < len(r.states) {
				out = string(r.states[k].reason)
			}
		}
		return nil
	})
	return out
}

// view is a message pinned for reading outside s.mu.
type view struct {
	g      *segment
	off    uint32
	end    int64 // g.end when pinned: the committer moves it under s.mu
	states []RcptState
	held   bool
	active bool
	size   int64
	mi     int32
	id     [idLen]byte
}

// pin copies message mi's RAM state and takes a segment reference.
// Called with s.mu held.
func (s *Spool) pin(mi int32) view {
	m := &s.x.m[mi]
	g := s.segs[m.seg]
	v := view{g: g, off: m.off, end: g.end, held: m.flags&mHeld != 0, size: int64(m.size), mi: mi, id: m.id}
	v.g.refs++
	v.states = make([]RcptState, m.nrcpt)
	for k := int32(0); k < m.nrcpt; k++ {
		rc := &s.x.r[m.rcpt0+k]
		st := RcptState{Status: Status(rc.status), Attempts: int(rc.attempts), Active: rc.flags&rFlight != 0}
		if rc.next != 0 && !st.Status.Finished() {
			st.Next = time.Unix(0, rc.next)
		}
		if rc.reason != 0 {
			st.Reason = s.reasonAt(rc.reason, int(k))
		}
		v.active = v.active || st.Active
		v.states[k] = st
	}
	return v
}

// record parses the pinned message's record from the mapping.
func (s *Spool) record(v view, r *rec) error {
	return guard(func() error {
		body, _, err := frame(v.g.data[v.off:v.end], v.g.salt)
		if err != nil {
			// A corrupt record (recovery through a footer does not read
			// content) is found here and the message set aside.
			return fmt.Errorf("spool: message %s: %w: %v", v.id[:], ErrUnreadable, err)
		}
		return r.parse(body)
	})
}

func (s *Spool) pinID(id string) (view, error) {
	bid, err := parseID(id)
	if err != nil {
		return view{}, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	mi, ok := s.lookup(bid)
	if !ok {
		return view{}, fmt.Errorf("spool: %s: %w", id, ErrNotFound)
	}
	return s.pin(mi), nil
}

// Envelope returns a message's envelope (Content nil) and the state of
// each of its recipients.
func (s *Spool) Envelope(id string) (*Message, []RcptState, error) {
	v, err := s.pinID(id)
	if err != nil {
		return nil, nil, err
	}
	defer s.unref(v.g)
	var r rec
	if err := s.record(v, &r); err != nil {
		s.setAside(v, err)
		return nil, nil, err
	}
	return r.message(), v.states, nil
}

// setAside holds a message whose record cannot be read, durably if the
// disk lets us; it stays for the operator.
func (s *Spool) setAside(v view, err error) {
	if !errors.Is(err, ErrUnreadable) {
		return
	}
	s.logf("spool: message %s set aside: %v", v.id[:], err)
	s.mu.Lock()
	mi, ok := s.x.idGet(v.id)
	if ok {
		s.x.m[mi].flags |= mAside
	}
	s.mu.Unlock()
	if ok {
		go s.enqueue(&request{buf: appendSimple(nil, kHold, v.id), reserve: true})
	}
}

// Content returns the message content, backed by the segment mapping.
// The caller must Close it; until then the segment is not unmapped.
func (s *Spool) Content(id string) (*Content, error) {
	v, err := s.pinID(id)
	if err != nil {
		return nil, err
	}
	var r rec
	if err := s.record(v, &r); err != nil {
		s.unref(v.g)
		s.setAside(v, err)
		return nil, err
	}
	start := int(v.off) + frameHeader + r.contentOff
	c := &Content{s: s, v: v, b: v.g.data[start : start+len(r.content) : start+len(r.content)]}
	return c, nil
}

// Walk calls fn for every live message until fn returns false (mailq).
// It holds the lock only while copying one message's RAM state, so
// writers are never stopped.
func (s *Spool) Walk(fn func(info MessageInfo) bool) {
	<-s.recovered
	for mi := int32(0); ; mi++ {
		s.mu.Lock()
		if int(mi) >= len(s.x.m) {
			s.mu.Unlock()
			return
		}
		if s.x.m[mi].flags&mUsed == 0 {
			s.mu.Unlock()
			continue
		}
		v := s.pin(mi)
		s.mu.Unlock()
		var r rec
		err := s.record(v, &r)
		info := MessageInfo{ID: string(v.id[:]), Size: v.size, Held: v.held, Active: v.active}
		if err == nil {
			info.Arrival = time.Unix(0, r.arrival)
			info.Sender = string(r.sender)
			info.Recipients = make([]RcptInfo, len(r.rcpts))
			for k, rv := range r.rcpts {
				info.Recipients[k] = RcptInfo{Addr: string(rv.addr), RcptState: v.states[k]}
			}
		}
		s.unref(v.g)
		if err != nil {
			s.setAside(v, err)
		}
		if !fn(info) {
			return
		}
	}
}

// Content is one message's content in a segment mapping.
type Content struct {
	s      *Spool
	v      view
	b      []byte
	closed bool
}

// Bytes returns the content without copying. Reading it touches the
// mapping: an I/O error under it raises SIGBUS, so read it inside Do or
// through Reader, which turn such a fault into ErrUnreadable.
func (c *Content) Bytes() []byte { return c.b }

// Len is the content size.
func (c *Content) Len() int { return len(c.b) }

// Do calls fn with the content while a memory fault is turned into
// ErrUnreadable (and the message set aside) instead of killing the process.
func (c *Content) Do(fn func(b []byte) error) error {
	err := guard(func() error { return fn(c.b) })
	if errors.Is(err, ErrUnreadable) {
		c.s.setAside(c.v, err)
	}
	return err
}

// Reader returns a fault-safe reader over the content (io.Reader,
// io.ReaderAt, io.WriterTo, io.Seeker); nothing is copied to the heap
// beyond the caller's buffers.
func (c *Content) Reader() io.ReadSeeker { return &contentReader{c: c} }

// Close releases the mapping reference. Bytes must not be used afterwards.
func (c *Content) Close() error {
	if c.closed {
		return nil
	}
	c.closed = true
	c.b = nil
	c.s.unref(c.v.g)
	return nil
}

type contentReader struct {
	c   *Content
	off int64
}

func (r *contentReader) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, errors.New("spool: negative offset")
	}
	if off >= int64(len(r.c.b)) {
		return 0, io.EOF
	}
	var n int
	err := r.c.Do(func(b []byte) error { n = copy(p, b[off:]); return nil })
	if err != nil {
		return 0, err
	}
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

func (r *contentReader) Read(p []byte) (int, error) {
	n, err := r.ReadAt(p, r.off)
	r.off += int64(n)
	if err == io.EOF && n > 0 {
		err = nil
	}
	return n, err
}

func (r *contentReader) Seek(off int64, whence int) (int64, error) {
	switch whence {
	case io.SeekStart:
	case io.SeekCurrent:
		off += r.off
	case io.SeekEnd:
		off += int64(len(r.c.b))
	default:
		return 0, errors.New("spool: bad whence")
	}
	if off < 0 {
		return 0, errors.New("spool: negative position")
	}
	r.off = off
	return off, nil
}

func (r *contentReader) WriteTo(w io.Writer) (int64, error) {
	if r.off >= int64(len(r.c.b)) {
		return 0, nil
	}
	var n int
	err := r.c.Do(func(b []byte) error {
		var err error
		n, err = w.Write(b[r.off:])
		return err
	})
	r.off += int64(n)
	return int64(n), err
}
