package milter

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"strings"
)

// Commands the MTA sends (SMFIC_*).
const (
	cmdAbort   = 'A'
	cmdBody    = 'B'
	cmdConnect = 'C'
	cmdMacro   = 'D'
	cmdEOB     = 'E'
	cmdHelo    = 'H'
	cmdQuitNC  = 'K'
	cmdHeader  = 'L'
	cmdMail    = 'M'
	cmdEOH     = 'N'
	cmdOptneg  = 'O'
	cmdQuit    = 'Q'
	cmdRcpt    = 'R'
	cmdData    = 'T'
	cmdUnknown = 'U'
)

// Replies the milter sends (SMFIR_*).
const (
	repAddRcpt    = '+'
	repDelRcpt    = '-'
	repAddRcptPar = '2'
	repShutdown   = '4'
	repAccept     = 'a'
	repReplBody   = 'b'
	repContinue   = 'c'
	repDiscard    = 'd'
	repChgFrom    = 'e'
	repConnFail   = 'f'
	repAddHeader  = 'h'
	repInsHeader  = 'i'
	repSetSymList = 'l'
	repChgHeader  = 'm'
	repProgress   = 'p'
	repQuarantine = 'q'
	repReject     = 'r'
	repSkip       = 's'
	repTempfail   = 't'
	repReplyCode  = 'y'
)

// Actions a milter may ask for (SMFIF_*).
const (
	actAddHdrs    = 1 << 0
	actChgBody    = 1 << 1
	actAddRcpt    = 1 << 2
	actDelRcpt    = 1 << 3
	actChgHdrs    = 1 << 4
	actQuarantine = 1 << 5
	actChgFrom    = 1 << 6
	actAddRcptPar = 1 << 7
	actSetSymList = 1 << 8

	// allActions is what sluice offers, as Postfix does, at every version.
	allActions = 0x1ff
	// v1Actions is what a milter that answers with a zero mask gets (libmilter's SMFI_V1_ACTS).
	v1Actions = actAddHdrs | actChgBody | actAddRcpt | actDelRcpt
)

// Protocol steps (SMFIP_*).
const (
	pNoConnect  = 1 << 0
	pNoHelo     = 1 << 1
	pNoMail     = 1 << 2
	pNoRcpt     = 1 << 3
	pNoBody     = 1 << 4
	pNoHdrs     = 1 << 5
	pNoEOH      = 1 << 6
	pNRHdr      = 1 << 7
	pNoUnknown  = 1 << 8
	pNoData     = 1 << 9
	pSkip       = 1 << 10
	pRcptRej    = 1 << 11
	pNRConn     = 1 << 12
	pNRHelo     = 1 << 13
	pNRMail     = 1 << 14
	pNRRcpt     = 1 << 15
	pNRData     = 1 << 16
	pNRUnkn     = 1 << 17
	pNREOH      = 1 << 18
	pNRBody     = 1 << 19
	pHdrLeadSpc = 1 << 20

	// pKnown is every step defined up to version 6; other bits (SMFIP_MDS_*) are ignored.
	pKnown = 1<<21 - 1

	protoMaskV2 = pNoConnect | pNoHelo | pNoMail | pNoRcpt | pNoBody | pNoHdrs | pNoEOH
	protoMaskV3 = protoMaskV2 | pNoUnknown
	protoMaskV4 = protoMaskV3 | pNoData
	protoMaskV6 = protoMaskV4 | pSkip | pRcptRej | pNRHdr | pNRConn | pNRHelo |
		pNRMail | pNRRcpt | pNRData | pNRUnkn | pNREOH | pNRBody | pHdrLeadSpc

	// noSendMask is every event a version may lack; see eventMask.
	noSendMask = protoMaskV2 | pNoUnknown | pNoData
)

// protoMask returns the protocol steps defined at version v (Postfix's milter8_event_masks).
func protoMask(v int) uint32 {
	switch {
	case v >= 6:
		return protoMaskV6
	case v >= 4:
		return protoMaskV4
	case v == 3:
		return protoMaskV3
	default:
		return protoMaskV2
	}
}

// ChunkSize is the largest body chunk sent to a milter (MILTER_CHUNK_SIZE).
const ChunkSize = 65535

// maxPacket bounds a packet from a milter. Postfix allows INT_MAX/2; a
// body replacement is sent in chunks, so 64 MiB is generous.
const maxPacket = 64 << 20

var errProtocol = errors.New("milter protocol error")

// packet is one frame in either direction.
type packet struct {
	cmd  byte
	data []byte
}

// readPacket reads one frame. It never allocates more than it has read,
// so a hostile length prefix costs nothing.
func readPacket(r io.Reader) (packet, error) {
	var hdr [4]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return packet{}, fmt.Errorf("read packet length: %w", err)
	}
	n := binary.BigEndian.Uint32(hdr[:])
	if n < 1 {
		return packet{}, fmt.Errorf("%w: zero packet length", errProtocol)
	}
	if n > maxPacket {
		return packet{}, fmt.Errorf("%w: packet length %d exceeds %d", errProtocol, n, maxPacket)
	}
	var buf bytes.Buffer
	got, err := io.CopyN(&buf, r, int64(n))
	if err != nil {
		return packet{}, fmt.Errorf("read packet of %d bytes (got %d): %w", n, got, err)
	}
	b := buf.Bytes()
	return packet{cmd: b[0], data: b[1:]}, nil
}

// appendPacket frames cmd and data onto dst.
func appendPacket(dst []byte, cmd byte, data ...[]byte) []byte {
	n := 1
	for _, d := range data {
		n += len(d)
	}
	dst = binary.BigEndian.AppendUint32(dst, uint32(n))
	dst = append(dst, cmd)
	for _, d := range data {
		dst = append(dst, d...)
	}
	return dst
}

// cstrings encodes NUL-terminated strings.
func cstrings(ss ...string) []byte {
	n := 0
	for _, s := range ss {
		n += len(s) + 1
	}
	b := make([]byte, 0, n)
	for _, s := range ss {
		b = append(b, s...)
		b = append(b, 0)
	}
	return b
}

// negotiation is a milter's answer to OPTNEG.
type negotiation struct {
	version  uint32
	actions  uint32
	protocol uint32
	// macros overrides the macro list of a stage (SMFIM_* code), from SETSYMLIST.
	macros map[Stage][]string
}

// parseOptneg decodes the OPTNEG reply: three uint32 then optional
// (uint32 stage, NUL-terminated space-separated names) pairs.
func parseOptneg(data []byte) (negotiation, error) {
	var n negotiation
	if len(data) < 12 {
		return n, fmt.Errorf("%w: OPTNEG reply of %d bytes", errProtocol, len(data))
	}
	n.version = binary.BigEndian.Uint32(data[0:])
	n.actions = binary.BigEndian.Uint32(data[4:])
	n.protocol = binary.BigEndian.Uint32(data[8:])
	rest := data[12:]
	for len(rest) > 0 {
		if len(rest) < 5 {
			return n, fmt.Errorf("%w: truncated macro list in OPTNEG", errProtocol)
		}
		st := Stage(binary.BigEndian.Uint32(rest))
		rest = rest[4:]
		i := bytes.IndexByte(rest, 0)
		if i < 0 {
			return n, fmt.Errorf("%w: macro list without NUL in OPTNEG", errProtocol)
		}
		names := strings.Fields(strings.ReplaceAll(string(rest[:i]), ",", " "))
		rest = rest[i+1:]
		if st > StageEOH {
			continue // Postfix ignores unknown macro types too
		}
		if n.macros == nil {
			n.macros = make(map[Stage][]string)
		}
		n.macros[st] = names
	}
	return n, nil
}

// reply is one decoded packet from a milter after an event.
type reply struct {
	code  byte
	text  string // y: SMTP reply; q: reason
	index uint32 // m, i
	name  string // h, m, i
	value string // h, m, i
	addr  string // e, +, 2, -
	args  string // e, 2: ESMTP arguments, space-separated, as libmilter sends them
	body  []byte // b
}

// parseReply decodes a reply packet, checking its shape the way Postfix's
// milter8_event does: no stray bytes, NUL-terminated strings.
func parseReply(p packet) (reply, error) {
	r := reply{code: p.cmd}
	d := p.data
	noData := func() (reply, error) {
		if len(d) != 0 {
			return r, fmt.Errorf("%w: reply %q followed by %d data bytes", errProtocol, p.cmd, len(d))
		}
		return r, nil
	}
	switch p.cmd {
	case repAccept, repContinue, repDiscard, repReject, repTempfail, repSkip,
		repProgress, repShutdown, repConnFail:
		return noData()
	case repReplyCode:
		s := string(d)
		s = strings.TrimSuffix(s, "\x00")
		if strings.IndexByte(s, 0) >= 0 {
			return r, fmt.Errorf("%w: NUL inside reply code text", errProtocol)
		}
		r.text = s
		return r, nil
	case repQuarantine:
		r.text = strings.TrimRight(string(d), "\x00")
		return r, nil
	case repReplBody:
		r.body = d
		return r, nil
	case repAddHeader:
		ss, err := splitStrings(d, 2, 2)
		if err != nil {
			return r, err
		}
		r.name, r.value = ss[0], ss[1]
		return r, nil
	case repChgHeader, repInsHeader:
		if len(d) < 4 {
			return r, fmt.Errorf("%w: header edit of %d bytes", errProtocol, len(d))
		}
		r.index = binary.BigEndian.Uint32(d)
		ss, err := splitStrings(d[4:], 2, 2)
		if err != nil {
			return r, err
		}
		r.name, r.value = ss[0], ss[1]
		return r, nil
	case repChgFrom, repAddRcptPar:
		ss, err := splitStrings(d, 1, 2)
		if err != nil {
			return r, err
		}
		r.addr = ss[0]
		if len(ss) == 2 {
			r.args = ss[1]
		}
		return r, nil
	case repAddRcpt, repDelRcpt:
		ss, err := splitStrings(d, 1, 1)
		if err != nil {
			return r, err
		}
		r.addr = ss[0]
		return r, nil
	}
	return r, fmt.Errorf("%w: unknown reply code 0x%02x", errProtocol, p.cmd)
}

// splitStrings splits NUL-terminated strings; the count must lie in [min, max].
func splitStrings(d []byte, min, max int) ([]string, error) {
	var ss []string
	for len(d) > 0 {
		i := bytes.IndexByte(d, 0)
		if i < 0 {
			return nil, fmt.Errorf("%w: string without NUL terminator", errProtocol)
		}
		ss = append(ss, string(d[:i]))
		d = d[i+1:]
	}
	if len(ss) < min || len(ss) > max {
		return nil, fmt.Errorf("%w: %d strings where %d..%d expected", errProtocol, len(ss), min, max)
	}
	return ss, nil
}

// parseSMTPReply validates a SMFIR_REPLYCODE text as Postfix's
// milter8_valid_smtp_reply does (4xx/5xx lines "ddd-" then "ddd ", CRLF
// between them, an enhanced code if present of the same class), and
// undoes Sendmail's format escaping: "%%" is "%", a lone "%" is dropped.
func parseSMTPReply(s string) (Decision, error) {
	var d Decision
	if s == "" {
		return d, fmt.Errorf("%w: empty reply text", errProtocol)
	}
	lines := strings.Split(s, "\r\n")
	first := lines[0]
	for i, ln := range lines {
		final := i == len(lines)-1
		if strings.ContainsAny(ln, "\r\n") {
			return d, fmt.Errorf("%w: bare CR or LF in reply %q", errProtocol, s)
		}
		sep := byte('-')
		if final {
			sep = ' '
		}
		if len(ln) < 4 || (ln[0] != '4' && ln[0] != '5') || !isDigit(ln[1]) || !isDigit(ln[2]) ||
			ln[3] != sep || (len(ln) > 4 && isDigit(ln[4]) && ln[4] != ln[0]) {
			return d, fmt.Errorf("%w: malformed reply %q", errProtocol, s)
		}
		if i == 0 {
			d.Code = int(ln[0]-'0')*100 + int(ln[1]-'0')*10 + int(ln[2]-'0')
		} else if ln[:3] != first[:3] {
			return d, fmt.Errorf("%w: mixed reply codes in %q", errProtocol, s)
		}
		lines[i] = unpercent(ln[4:])
	}
	if e, _, ok := strings.Cut(lines[0], " "); ok && isEnhanced(e) {
		d.Enhanced = e
	} else if isEnhanced(lines[0]) {
		d.Enhanced = lines[0]
	}
	if d.Enhanced != "" {
		for i, ln := range lines {
			if rest, ok := strings.CutPrefix(ln, d.Enhanced); ok && (rest == "" || rest[0] == ' ') {
				lines[i] = strings.TrimPrefix(rest, " ")
			}
		}
	}
	d.Text = strings.Join(lines, "\n")
	if d.Code/100 == 4 {
		d.Verdict = Tempfail
	} else {
		d.Verdict = Reject
	}
	return d, nil
}

func isDigit(c byte) bool { return c >= '0' && c <= '9' }

// isEnhanced reports whether s is an RFC 3463 status code (class.subject.detail).
func isEnhanced(s string) bool {
	parts := strings.Split(s, ".")
	if len(parts) != 3 || len(parts[0]) != 1 || (parts[0] != "2" && parts[0] != "4" && parts[0] != "5") {
		return false
	}
	for _, p := range parts[1:] {
		if len(p) < 1 || len(p) > 3 {
			return false
		}
		for i := 0; i < len(p); i++ {
			if !isDigit(p[i]) {
				return false
			}
		}
	}
	return true
}

func unpercent(s string) string {
	if strings.IndexByte(s, '%') < 0 {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] != '%' {
			b.WriteByte(s[i])
			continue
		}
		if i+1 < len(s) && s[i+1] == '%' {
			b.WriteByte('%')
			i++
		}
	}
	return b.String()
}
