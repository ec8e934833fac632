package milter

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"time"
)

// fstate is one milter's state within an SMTP session, as Postfix's milter8.c.
type fstate uint8

const (
	fsClosed    fstate = iota // not connected yet, or given up after an error
	fsEnvelope                // connected; events flow
	fsAcceptCon               // accepted the connection: no more events this session
	fsAcceptMsg               // accepted the message: no more events this transaction
	fsRejectCon               // rejected the connection: sticky reply for every event
	fsError                   // failed: default action for every event until a retry
)

// filter is the client side of one milter connection.
type filter struct {
	cfg  Config
	log  *slog.Logger
	dial func(ctx context.Context, network, addr string) (net.Conn, error) // nil: net.Dialer

	mu   sync.Mutex // guards nc against interrupt from the ctx goroutine
	nc   net.Conn
	br   *bufio.Reader
	wbuf []byte

	version int
	actions uint32 // negotiated SMFIF_*
	events  uint32 // negotiated SMFIP_*
	npMask  uint32 // events the negotiated version cannot receive
	macros  map[Stage][]string

	state     fstate
	sticky    Decision // answer while in fsRejectCon or fsError
	skipEvent byte     // SMFIR_SKIP: drop further events of this type
	inMessage bool     // MAIL sent and the message not finished: ABORT needed
	earlyHold string   // quarantine asked for before end of body
	chunk     []byte   // body chunk buffer
	timeout   time.Duration
}

// failKind separates I/O trouble from a milter that asks for nonsense:
// Postfix answers them differently (milter8_comm_error, milter8_conf_error).
type failKind uint8

const (
	commError failKind = iota
	confError
)

// fail closes the connection and makes the default action the milter's
// answer until the next transaction retries it.
func (f *filter) fail(kind failKind, err error) Decision {
	f.log.Warn("milter failed; applying default action", "milter", f.cfg.Name,
		"default_action", f.cfg.DefaultAction.String(), "err", err)
	f.close()
	f.state = fsError
	f.inMessage = false
	var d Decision
	switch f.cfg.DefaultAction {
	case ActionAccept:
		d = Decision{}
	case ActionQuarantine:
		d = Decision{Verdict: verdictHold, Text: "default_action"}
	case ActionReject:
		if kind == confError {
			d = Decision{Verdict: Tempfail, Code: 451, Enhanced: "4.3.5", Text: "Server configuration problem - try again later"}
		} else {
			d = Decision{Verdict: Reject, Code: 550, Enhanced: "5.5.0", Text: "Service unavailable"}
		}
	default:
		if kind == confError {
			d = Decision{Verdict: Tempfail, Code: 451, Enhanced: "4.3.5", Text: "Server configuration problem - try again later"}
		} else {
			d = Decision{Verdict: Tempfail, Code: 451, Enhanced: "4.7.1", Text: "Service unavailable - try again later"}
		}
	}
	d.Milter = f.cfg.Name
	f.sticky = d
	return d
}

func (f *filter) close() {
	f.mu.Lock()
	if f.nc != nil {
		f.nc.Close()
		f.nc = nil
	}
	f.mu.Unlock()
	f.br = nil
	f.wbuf = f.wbuf[:0]
}

// interrupt closes the socket from another goroutine so a blocked read
// returns; the owning goroutine then fails the milter as usual.
func (f *filter) interrupt() {
	f.mu.Lock()
	if f.nc != nil {
		f.nc.Close()
	}
	f.mu.Unlock()
}

// open dials and negotiates. On failure the filter is in fsError.
func (f *filter) open(ctx context.Context) (ok bool) {
	network, addr, _ := ParseSocket(f.cfg.Socket) // checked by NewChain
	dctx, cancel := context.WithTimeout(ctx, f.cfg.ConnectTimeout)
	defer cancel()
	dial := f.dial
	if dial == nil {
		dial = (&net.Dialer{}).DialContext
	}
	nc, err := dial(dctx, network, addr)
	if err != nil {
		f.fail(commError, fmt.Errorf("connect to %s: %w", f.cfg.Socket, err))
		return false
	}
	f.mu.Lock()
	f.nc = nc
	f.mu.Unlock()
	f.br = bufio.NewReaderSize(nc, 8192)
	f.timeout = f.cfg.CommandTimeout
	f.skipEvent = 0
	f.inMessage = false

	offered := protoMask(f.cfg.Protocol)
	var b [12]byte
	binary.BigEndian.PutUint32(b[0:], uint32(f.cfg.Protocol))
	binary.BigEndian.PutUint32(b[4:], allActions)
	binary.BigEndian.PutUint32(b[8:], offered)
	f.wbuf = appendPacket(f.wbuf[:0], cmdOptneg, b[:])
	p, err := f.roundTrip()
	if err != nil {
		f.fail(commError, fmt.Errorf("negotiate: %w", err))
		return false
	}
	if p.cmd != cmdOptneg {
		f.fail(commError, fmt.Errorf("%w: reply %q to OPTNEG", errProtocol, p.cmd))
		return false
	}
	n, err := parseOptneg(p.data)
	if err != nil {
		f.fail(commError, err)
		return false
	}
	switch {
	case n.version > uint32(f.cfg.Protocol):
		f.fail(commError, fmt.Errorf("%w: milter protocol version %d above offered %d", errProtocol, n.version, f.cfg.Protocol))
		return false
	case n.version < 2:
		f.fail(commError, fmt.Errorf("%w: milter protocol version %d below 2", errProtocol, n.version))
		return false
	case n.actions&^allActions != 0:
		f.fail(commError, fmt.Errorf("%w: milter action mask 0x%x not within offered 0x%x", errProtocol, n.actions, allActions))
		return false
	case n.protocol&pKnown&^offered != 0:
		// A step we did not offer (an NR_* flag, say) would leave us
		// waiting for replies that never come; refuse it up front.
		f.fail(commError, fmt.Errorf("%w: milter protocol mask 0x%x not within offered 0x%x", errProtocol, n.protocol, offered))
		return false
	}
	if n.actions == 0 {
		n.actions = v1Actions
	}
	f.version = int(n.version)
	f.actions = n.actions
	f.events = n.protocol & pKnown
	f.npMask = noSendMask &^ protoMask(min(f.version, f.cfg.Protocol))
	f.macros = make(map[Stage][]string, len(f.cfg.Macros))
	for st, names := range f.cfg.Macros {
		f.macros[st] = names
	}
	for st, names := range n.macros {
		// Postfix takes the lists whether or not SETSYMLIST was asked for.
		f.macros[st] = names
	}
	f.state = fsEnvelope
	f.sticky = Decision{}
	f.log.Debug("milter negotiated", "milter", f.cfg.Name, "version", f.version,
		"actions", fmt.Sprintf("0x%x", f.actions), "events", fmt.Sprintf("0x%x", f.events))
	return true
}

// flush writes the pending packets.
func (f *filter) flush() error {
	if len(f.wbuf) == 0 {
		return nil
	}
	if err := f.nc.SetWriteDeadline(time.Now().Add(f.timeout)); err != nil {
		return err
	}
	_, err := f.nc.Write(f.wbuf)
	f.wbuf = f.wbuf[:0]
	return err
}

func (f *filter) recv() (packet, error) {
	if err := f.nc.SetReadDeadline(time.Now().Add(f.timeout)); err != nil {
		return packet{}, err
	}
	return readPacket(f.br)
}

func (f *filter) roundTrip() (packet, error) {
	if err := f.flush(); err != nil {
		return packet{}, err
	}
	return f.recv()
}

// macroPacket queues the macros of a stage for event cmd, if any have values.
func (f *filter) queueMacros(cmd byte, st Stage, lookup func(string) (string, bool)) {
	names := f.macros[st]
	if len(names) == 0 || lookup == nil {
		return
	}
	var kv []string
	for _, n := range names {
		if v, ok := lookup(n); ok {
			kv = append(kv, n, v)
		}
	}
	if len(kv) == 0 {
		return // a milter that needs nothing is sent nothing
	}
	f.wbuf = appendPacket(f.wbuf, cmdMacro, []byte{cmd}, cstrings(kv...))
}

// event is one MTA→milter command. It mirrors milter8_event: send the
// stage's macros (also when the milter asked not to get the event itself),
// send the event unless the milter opted out, and read the reply unless
// the milter negotiated not to send one. ed collects end-of-body edits.
type event struct {
	cmd    byte
	noFlag uint32 // SMFIP_NO* for this event; 0 = always sent
	nrFlag uint32 // SMFIP_NR_* for this event
	stage  Stage
	macros bool // send this stage's macros
	// content events (header, eoh, body) get no macros when the milter
	// opted out of them; envelope events get them regardless, as in Postfix.
	content bool
	data    []byte
}

func (f *filter) event(ev event, lookup func(string) (string, bool), ed *edits) Decision {
	if f.state == fsError || f.state == fsRejectCon || f.nc == nil {
		return f.sticky
	}
	if ev.noFlag&f.npMask != 0 {
		return Decision{} // the negotiated version has no such event
	}
	if f.skipEvent != 0 {
		if f.skipEvent == ev.cmd {
			return Decision{}
		}
		f.skipEvent = 0
	}
	if ev.noFlag&f.events != 0 && ev.content {
		return Decision{}
	}
	if ev.macros {
		f.queueMacros(ev.cmd, ev.stage, lookup)
	}
	if ev.noFlag&f.events != 0 {
		if err := f.flushIfLarge(); err != nil {
			return f.fail(commError, fmt.Errorf("send macros for %s: %w", cmdName(ev.cmd), err))
		}
		return Decision{}
	}
	f.wbuf = appendPacket(f.wbuf, ev.cmd, ev.data)
	if ev.nrFlag != 0 && f.events&ev.nrFlag != 0 {
		if err := f.flushIfLarge(); err != nil {
			return f.fail(commError, fmt.Errorf("send %s: %w", cmdName(ev.cmd), err))
		}
		return Decision{}
	}
	if err := f.flush(); err != nil {
		return f.fail(commError, fmt.Errorf("send %s: %w", cmdName(ev.cmd), err))
	}
	return f.replies(ev.cmd, ed)
}

// flushIfLarge bounds the write buffer when no reply forces a flush (NR_HDR).
func (f *filter) flushIfLarge() error {
	if len(f.wbuf) >= 64<<10 {
		return f.flush()
	}
	return nil
}

// replies reads until a final reply. Modifications are legal only after
// end of body, and only those the milter negotiated.
func (f *filter) replies(cmd byte, ed *edits) Decision {
	inConnect := cmd == cmdConnect || cmd == cmdHelo
	for {
		p, err := f.recv()
		if err != nil {
			return f.fail(commError, fmt.Errorf("read reply to %s: %w", cmdName(cmd), err))
		}
		r, err := parseReply(p)
		if err != nil {
			return f.fail(commError, fmt.Errorf("reply to %s: %w", cmdName(cmd), err))
		}
		switch r.code {
		case repProgress:
			continue
		case repContinue:
			return Decision{}
		case repAccept:
			if inConnect {
				// Accepted for the whole connection; libmilter expects
				// the socket to go away (Postfix's LIBMILTER_AUTO_DISCONNECT).
				f.close()
				f.state = fsAcceptCon
			} else {
				f.state = fsAcceptMsg
			}
			return Decision{}
		case repDiscard:
			if inConnect {
				f.log.Warn("milter: DISCARD is not allowed at connect or helo; ignored", "milter", f.cfg.Name)
				return Decision{}
			}
			f.state = fsAcceptMsg
			return Decision{Verdict: Discard, Milter: f.cfg.Name}
		case repReject:
			return f.final(inConnect, Decision{Verdict: Reject, Code: 550, Enhanced: "5.7.1", Text: "Command rejected"})
		case repTempfail:
			return f.final(inConnect, Decision{Verdict: Tempfail, Code: 451, Enhanced: "4.7.1", Text: "Service unavailable - try again later"})
		case repReplyCode:
			d, err := parseSMTPReply(r.text)
			if err != nil {
				return f.fail(confError, fmt.Errorf("reply to %s: %w", cmdName(cmd), err))
			}
			return f.final(inConnect, d)
		case repShutdown, repConnFail:
			f.close()
			f.state = fsRejectCon
			f.sticky = Decision{Verdict: Shutdown, Code: 421, Enhanced: "4.7.0", Text: "Server closing connection", Milter: f.cfg.Name}
			return f.sticky
		case repSkip:
			f.skipEvent = cmd
			return Decision{}
		case repQuarantine:
			if f.actions&actQuarantine == 0 {
				return f.fail(confError, fmt.Errorf("%w: quarantine without the QUARANTINE action", errProtocol))
			}
			reason := r.text
			if len(reason) > 100 {
				reason = reason[:100] // as Postfix
			}
			if ed != nil {
				ed.hold = reason
			} else {
				f.pendingHold(reason)
			}
			continue
		}
		if cmd != cmdEOB || ed == nil {
			return f.fail(commError, fmt.Errorf("%w: modification %q after %s", errProtocol, r.code, cmdName(cmd)))
		}
		if err := ed.add(r, f.actions, f.events&pHdrLeadSpc != 0); err != nil {
			return f.fail(confError, err)
		}
	}
}

// pendingHold records a quarantine asked for before end of body; the
// Session picks it up (Postfix keeps it as the milter's def_reply).
func (f *filter) pendingHold(reason string) { f.earlyHold = reason }

// final applies a reject/tempfail/custom reply; at connect or helo it
// sticks for the rest of the connection, as in Postfix.
func (f *filter) final(inConnect bool, d Decision) Decision {
	d.Milter = f.cfg.Name
	if inConnect {
		f.close()
		f.state = fsRejectCon
		f.sticky = d
	}
	return d
}

// abort ends an open transaction (SMFIC_ABORT).
func (f *filter) abort() {
	if f.nc == nil || !f.inMessage {
		if f.state == fsAcceptMsg {
			f.state = fsEnvelope
		}
		return
	}
	f.inMessage = false
	f.skipEvent = 0
	f.earlyHold = ""
	f.wbuf = appendPacket(f.wbuf, cmdAbort)
	if err := f.flush(); err != nil {
		f.fail(commError, fmt.Errorf("send ABORT: %w", err))
		return
	}
	if f.state == fsAcceptMsg {
		f.state = fsEnvelope
	}
}

// quit ends the session politely.
func (f *filter) quit() {
	if f.nc != nil && (f.state == fsEnvelope || f.state == fsAcceptMsg) {
		f.wbuf = appendPacket(f.wbuf, cmdQuit)
		_ = f.flush() // the milter may already be gone; nothing to decide
	}
	f.close()
	f.state = fsClosed
}

func cmdName(c byte) string {
	switch c {
	case cmdConnect:
		return "CONNECT"
	case cmdHelo:
		return "HELO"
	case cmdMail:
		return "MAIL"
	case cmdRcpt:
		return "RCPT"
	case cmdData:
		return "DATA"
	case cmdUnknown:
		return "UNKNOWN"
	case cmdHeader:
		return "HEADER"
	case cmdEOH:
		return "EOH"
	case cmdBody:
		return "BODY"
	case cmdEOB:
		return "EOB"
	case cmdOptneg:
		return "OPTNEG"
	}
	return fmt.Sprintf("%q", c)
}

// sendBody streams body to the milter in chunks of at most ChunkSize.
func (f *filter) sendBody(body io.Reader, lookup func(string) (string, bool)) (Decision, error) {
	if f.chunk == nil {
		f.chunk = make([]byte, ChunkSize) // kept: one per milter per session
	}
	buf := f.chunk
	for {
		n, rerr := io.ReadFull(body, buf)
		if n > 0 {
			d := f.event(event{cmd: cmdBody, noFlag: pNoBody, nrFlag: pNRBody, stage: StageEOM, macros: true, content: true, data: buf[:n]}, lookup, nil)
			if d.Verdict != Continue || f.state != fsEnvelope {
				return d, nil
			}
			if f.skipEvent == cmdBody {
				return Decision{}, nil
			}
		}
		if rerr == io.EOF || errors.Is(rerr, io.ErrUnexpectedEOF) {
			return Decision{}, nil
		}
		if rerr != nil {
			return Decision{}, fmt.Errorf("milter: read message body: %w", rerr)
		}
	}
}

// headerData formats one header for SMFIC_HEADER: the value as stored,
// folded lines joined by LF as Sendmail and Postfix send them, and one
// leading space removed unless the milter asked for HDR_LEADSPC.
func (f *filter) headerData(h HeaderField) []byte {
	v := strings.ReplaceAll(h.Value, "\r\n", "\n")
	if f.events&pHdrLeadSpc == 0 {
		v = strings.TrimPrefix(v, " ")
	}
	return cstrings(h.Name, v)
}
