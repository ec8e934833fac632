package spool

import (
	"encoding/binary"
	"fmt"
	"hash/crc32"
)

// Index footer. When a segment is sealed, the committer writes after its
// records a footer holding every record without message content (see
// FORMAT.md), and a trailer in the file's last 64 bytes pointing at it.
// Recovery of a sealed segment then reads the footer, not the content.
// A segment without a valid trailer (the active one at a crash, an
// abandoned one, a footer that did not fit) is scanned record by record.

const (
	trailerSize  = 64
	trailerMagic = "SLUFTR01"
	entryHeader  = 20 // u32 record offset, frame length, content length, meta length, meta CRC32C
)

// footerGrowth is an upper bound of what n bytes of records add to the
// footer: the smallest record is about 25 bytes, each costs an entry header.
func footerGrowth(n int64) int64 { return n + n*entryHeader/25 + entryHeader }

// metaSize is what one applied record adds to the footer.
func metaSize(r *rec, flen int) int64 {
	body := flen - frameHeader
	if r.kind == kMessage || r.kind == kCopy {
		return int64(entryHeader + body - len(r.content) - uvarintLen(uint64(len(r.content))) + 1)
	}
	return int64(entryHeader + body)
}

func uvarintLen(v uint64) int {
	var b [binary.MaxVarintLen64]byte
	return binary.PutUvarint(b[:], v)
}

// writeFooter builds and writes g's footer and trailer and makes them
// durable. Run once g is sealed and all its batches are done. Failure only
// costs a slower recovery of g.
func (s *Spool) writeFooter(g *segment) {
	end := g.end
	foot := make([]byte, 0, g.foot)
	var r rec
	err := guard(func() error {
		for p := int64(headerSize); p < end; {
			// These records were just written and synced: their CRCs
			// are not computed again here.
			if end-p < frameHeader {
				return fmt.Errorf("record at %d cut", p)
			}
			l := int64(binary.LittleEndian.Uint32(g.data[p:]))
			if l == 0 || p+frameHeader+l > end {
				return fmt.Errorf("record at %d: bad length %d", p, l)
			}
			body, n := g.data[p+frameHeader:p+frameHeader+l], int(frameHeader+l)
			if err := r.parse(body); err != nil {
				return err
			}
			clen := 0
			meta := body
			if r.kind == kMessage || r.kind == kCopy {
				clen = len(r.content)
				cut := r.contentOff - uvarintLen(uint64(clen))
				meta = append(body[:cut:cut], 0)
			}
			foot = binary.LittleEndian.AppendUint32(foot, uint32(p))
			foot = binary.LittleEndian.AppendUint32(foot, uint32(n))
			foot = binary.LittleEndian.AppendUint32(foot, uint32(clen))
			foot = binary.LittleEndian.AppendUint32(foot, uint32(len(meta)))
			foot = binary.LittleEndian.AppendUint32(foot, crc32.Checksum(meta, castagnoli))
			foot = append(foot, meta...)
			p += int64(n)
		}
		return nil
	})
	if err != nil {
		s.logf("spool: segment %d: no index footer: %v", g.seq, err)
		return
	}
	off := (end + 4095) &^ 4095
	if off+int64(len(foot))+trailerSize > g.size {
		s.logf("spool: segment %d: index footer (%d bytes) does not fit; recovery will scan it", g.seq, len(foot))
		return
	}
	t := make([]byte, trailerSize)
	copy(t, trailerMagic)
	binary.LittleEndian.PutUint64(t[8:], uint64(end))
	binary.LittleEndian.PutUint64(t[16:], uint64(off))
	binary.LittleEndian.PutUint64(t[24:], uint64(len(foot)))
	binary.LittleEndian.PutUint32(t[32:], crc32.Checksum(foot, castagnoli))
	binary.LittleEndian.PutUint32(t[36:], g.salt)
	binary.LittleEndian.PutUint32(t[60:], crc32.Checksum(t[:60], castagnoli))
	if _, err := g.f.WriteAt(foot, off); err != nil {
		s.logf("spool: segment %d: write index footer: %v", g.seq, err)
		return
	}
	// The trailer goes last and alone, so a crash leaves it invalid or
	// pointing at a complete footer.
	if err := g.f.Datasync(); err != nil {
		s.logf("spool: segment %d: sync index footer: %v", g.seq, err)
		return
	}
	if _, err := g.f.WriteAt(t, g.size-trailerSize); err != nil {
		s.logf("spool: segment %d: write trailer: %v", g.seq, err)
		return
	}
	if err := g.f.Datasync(); err != nil {
		s.logf("spool: segment %d: sync trailer: %v", g.seq, err)
	}
}

// footerOf returns g's footer and data end if its trailer is valid.
func footerOf(g *segment) (foot []byte, end int64, ok bool) {
	if g.size < headerSize+trailerSize {
		return nil, 0, false
	}
	t := g.data[g.size-trailerSize:]
	if string(t[:8]) != trailerMagic || crc32.Checksum(t[:60], castagnoli) != binary.LittleEndian.Uint32(t[60:]) {
		return nil, 0, false
	}
	if binary.LittleEndian.Uint32(t[36:]) != g.salt {
		return nil, 0, false // left from the file's use before it was recycled
	}
	end = int64(binary.LittleEndian.Uint64(t[8:]))
	off := int64(binary.LittleEndian.Uint64(t[16:]))
	n := int64(binary.LittleEndian.Uint64(t[24:]))
	if end < headerSize || off < end || n < 0 || off+n > g.size-trailerSize {
		return nil, 0, false
	}
	foot = g.data[off : off+n]
	if crc32.Checksum(foot, castagnoli) != binary.LittleEndian.Uint32(t[32:]) {
		return nil, 0, false
	}
	return foot, end, true
}

// footEntry is one footer entry: where the record is and its body without
// content.
type footEntry struct {
	off, flen, clen uint32
	meta            []byte
}

// nextEntry decodes the entry at the start of b.
func nextEntry(b []byte) (footEntry, int, error) {
	var e footEntry
	if len(b) < entryHeader+8 {
		return e, 0, fmt.Errorf("footer entry cut")
	}
	e.off = binary.LittleEndian.Uint32(b)
	e.flen = binary.LittleEndian.Uint32(b[4:])
	e.clen = binary.LittleEndian.Uint32(b[8:])
	l := binary.LittleEndian.Uint32(b[12:])
	sum := binary.LittleEndian.Uint32(b[16:])
	if uint64(l) > uint64(len(b)-20) {
		return e, 0, fmt.Errorf("footer entry length %d beyond footer", l)
	}
	e.meta = b[20 : 20+l]
	if crc32.Checksum(e.meta, castagnoli) != sum {
		return e, 0, fmt.Errorf("footer entry CRC mismatch")
	}
	return e, 20 + int(l), nil
}
