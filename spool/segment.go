package spool

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"os"
	"strconv"
	"strings"
)

// Segment header (see FORMAT.md).
const (
	headerSize  = 64
	freeSuffix  = ".free" // a removed segment's file, until reused
	segMagic    = "SLUSEG\x00\x01"
	segSuffix   = ".seg"
	defaultSize = 64 << 20
)

type segment struct {
	seq     uint32
	path    string
	f       File
	data    []byte // read-only shared mapping of the whole file
	size    int64
	end     int64  // end of valid records
	live    int64  // bytes of content records of live messages stored here
	refs    int32  // open Content and readers
	foot    int64  // size of the index footer its records will need
	sealed  bool   // no more appends
	queued  bool   // waiting for compaction
	removed bool   // file removed; unmap when refs drop to 0
	salt    uint32 // XORed into every frame CRC (header); 0 in old segments
}

type segHeader struct {
	seq        uint64
	abandonSeq uint64 // a segment whose writing failed: trust it only up to abandonLen
	abandonLen uint64
	created    int64
	salt       uint32 // frame CRCs are XORed with it
}

func (h segHeader) encode() []byte {
	b := make([]byte, headerSize)
	copy(b, segMagic)
	binary.LittleEndian.PutUint64(b[8:], h.seq)
	binary.LittleEndian.PutUint64(b[16:], h.abandonSeq)
	binary.LittleEndian.PutUint64(b[24:], h.abandonLen)
	binary.LittleEndian.PutUint64(b[32:], uint64(h.created))
	binary.LittleEndian.PutUint32(b[40:], h.salt)
	binary.LittleEndian.PutUint32(b[60:], crc32.Checksum(b[:60], castagnoli))
	return b
}

func parseHeader(b []byte) (segHeader, error) {
	var h segHeader
	if len(b) < headerSize {
		return h, fmt.Errorf("header cut at %d bytes", len(b))
	}
	if string(b[:8]) != segMagic {
		return h, fmt.Errorf("bad magic %q", b[:8])
	}
	if crc32.Checksum(b[:60], castagnoli) != binary.LittleEndian.Uint32(b[60:]) {
		return h, fmt.Errorf("header CRC mismatch")
	}
	h.seq = binary.LittleEndian.Uint64(b[8:])
	h.abandonSeq = binary.LittleEndian.Uint64(b[16:])
	h.abandonLen = binary.LittleEndian.Uint64(b[24:])
	h.created = int64(binary.LittleEndian.Uint64(b[32:]))
	h.salt = binary.LittleEndian.Uint32(b[40:])
	return h, nil
}

// Segment files are named by a creation number; their order is the
// sequence number in the header, given when the segment becomes active.
func segName(fileNo uint32) string { return fmt.Sprintf("%016x%s", fileNo, segSuffix) }

func parseSegName(name string) (uint32, bool) {
	if !strings.HasSuffix(name, segSuffix) || len(name) != 16+len(segSuffix) {
		return 0, false
	}
	v, err := strconv.ParseUint(name[:16], 16, 32)
	return uint32(v), err == nil
}

// createSegment makes a new preallocated, zeroed segment file and makes
// its directory entry durable. The header is written when it goes active.
func (s *Spool) createSegment(fileNo uint32) (*segment, error) {
	seq := fileNo // for messages only; the order number comes at roll
	path := s.dir + "/" + segName(fileNo)
	f, err := s.fs.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return nil, fmt.Errorf("spool: create segment file %d: %w", seq, err)
	}
	fail := func(err error) (*segment, error) {
		f.Close()
		s.fs.Remove(path)
		return nil, err
	}
	if err := f.Allocate(s.opt.SegmentSize); err != nil {
		if isNoSpace(err) {
			return fail(fmt.Errorf("spool: allocate segment file %d: %w (%v)", seq, ErrNoSpace, err))
		}
		return fail(fmt.Errorf("spool: allocate segment file %d: %w", seq, err))
	}
	if z, ok := f.(zeroFiller); ok {
		if err := z.zeroFill(s.opt.SegmentSize); err != nil {
			return fail(fmt.Errorf("spool: zero segment %d: %w", seq, err))
		}
	}
	data, err := f.Map(s.opt.SegmentSize)
	if err != nil {
		return fail(fmt.Errorf("spool: map segment %d: %w", seq, err))
	}
	if err := s.fs.SyncDir(s.dir); err != nil {
		f.Unmap(data)
		return fail(fmt.Errorf("spool: sync directory for segment %d: %w", seq, err))
	}
	return &segment{path: path, f: f, data: data, size: s.opt.SegmentSize, end: headerSize}, nil
}

// releaseSegment drops a removed segment with no readers: its file goes
// to the preparer to be reused (recycle), or is closed and deleted.
func (s *Spool) releaseSegment(g *segment) {
	select {
	case s.recycleCh <- g:
	default:
		s.dropFile(g)
	}
}

// dropFile unmaps and closes a segment's file and deletes it.
func (s *Spool) dropFile(g *segment) {
	closeFile(g)
	s.fs.Remove(g.path)
}

// closeFile unmaps and closes a segment's file.
func closeFile(g *segment) error {
	var err error
	if g.data != nil {
		err = g.f.Unmap(g.data)
		g.data = nil
	}
	return errors.Join(err, g.f.Close())
}

// keepSpare takes a file found at start with an all-zero header (a spare
// made ahead of need, or a reused file readied, by an earlier run) as the
// spare or into the pool of reused files, as the preparer would have left
// it; beyond those, it is removed. Its old frames, if any, stay hidden by
// the salt of its next life (FORMAT.md).
func (s *Spool) keepSpare(g *segment) {
	s.spareMu.Lock()
	defer s.spareMu.Unlock()
	switch {
	case s.spare == nil:
		s.spare = g
	case len(s.recycled) < maxRecycled:
		s.recycled = append(s.recycled, g)
	default:
		s.dropFile(g)
	}
}

// maxRecycled bounds the files of removed segments kept for reuse.
const maxRecycled = 4

// recycle readies the file of a removed segment for reuse as a spare, so
// that a busy spool writes its data once instead of zero-filling every new
// segment first. Header and trailer are zeroed and made durable before
// the file is renamed back among the segments: until then it is a ".free"
// file, deleted at start, and after it a never-activated spare, which a
// restart keeps as one (keepSpare). Its old frames stay; the salt of its
// next life rejects them, and each batch's zero end mark hides them.
func (s *Spool) recycle(g *segment) {
	s.spareMu.Lock()
	full := len(s.recycled) >= maxRecycled
	s.spareMu.Unlock()
	if full || g.size != s.opt.SegmentSize || !strings.HasSuffix(g.path, freeSuffix) {
		s.dropFile(g)
		return
	}
	zero := make([]byte, max(headerSize, trailerSize))
	_, err := g.f.WriteAt(zero[:headerSize], 0)
	if err == nil {
		_, err = g.f.WriteAt(zero[:trailerSize], g.size-trailerSize)
	}
	if err == nil {
		err = g.f.Datasync()
	}
	path := s.dir + "/" + segName(s.newFileNo())
	if err == nil {
		err = s.fs.Rename(g.path, path)
	}
	if err == nil {
		g.path = path
		err = s.fs.SyncDir(s.dir)
	}
	if err != nil {
		s.logf("spool: reuse segment file %s: %v; deleting it", g.path, err)
		s.dropFile(g)
		return
	}
	*g = segment{path: path, f: g.f, data: g.data, size: g.size, end: headerSize}
	s.spareMu.Lock()
	s.recycled = append(s.recycled, g)
	s.reused++
	s.spareMu.Unlock()
}
