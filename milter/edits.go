package milter

import (
	"bytes"
	"fmt"
	"strings"
)

// HeaderField is one message header exactly as stored: Name is the text
// before the colon, Value everything after it up to (not including) the
// final CRLF, with its leading space and any folding CRLFs kept. Raw
// values matter: a DKIM signer with simple canonicalisation signs bytes.
type HeaderField struct {
	Name  string
	Value string
	// Hidden marks sluice's own Received: header. As in Postfix it is not
	// shown to milters and change/delete indexes skip it, but insert
	// indexes count it (index 0 inserts above it).
	Hidden bool
}

// Recipient is an envelope recipient with its ESMTP parameters.
type Recipient struct {
	Addr string
	Args []string
}

// hdrEdit is one header request from a milter, kept in arrival order.
type hdrEdit struct {
	op    byte // repAddHeader, repChgHeader, repInsHeader
	index uint32
	name  string
	value string // stored form: leading space added, CRLF folding
}

// edits collects one milter's end-of-body requests. They are applied only
// when the milter finished its reply, so a milter that dies half way does
// not leave half its edits behind.
type edits struct {
	hold     string
	hdrs     []hdrEdit
	body     []byte
	bodySet  bool
	from     string
	fromArgs string
	fromSet  bool
	addRcpt  []Recipient
	del      []string
}

// add validates r against the negotiated actions and records it.
func (e *edits) add(r reply, actions uint32, leadSpc bool) error {
	need := map[byte]uint32{
		repAddHeader: actAddHdrs, repInsHeader: actAddHdrs, repChgHeader: actChgHdrs,
		repReplBody: actChgBody, repAddRcpt: actAddRcpt, repAddRcptPar: actAddRcptPar,
		repDelRcpt: actDelRcpt, repChgFrom: actChgFrom,
	}[r.code]
	if need == 0 {
		return fmt.Errorf("%w: unexpected reply %q at end of body", errProtocol, r.code)
	}
	if actions&need == 0 {
		return fmt.Errorf("%w: request %q without negotiating action 0x%x", errProtocol, r.code, need)
	}
	space := " "
	if leadSpc {
		space = ""
	}
	switch r.code {
	case repAddHeader, repInsHeader, repChgHeader:
		if r.name == "" || strings.ContainsAny(r.name, ": \t\r\n") {
			return fmt.Errorf("%w: bad header name %q", errProtocol, r.name)
		}
		v := ""
		if r.value != "" || r.code != repChgHeader {
			v = space + toCRLF(r.value)
		}
		e.hdrs = append(e.hdrs, hdrEdit{op: r.code, index: r.index, name: r.name, value: v})
	case repReplBody:
		e.body = append(e.body, r.body...)
		e.bodySet = true
	case repChgFrom:
		e.from, e.fromArgs, e.fromSet = stripBrackets(r.addr), r.args, true
	case repAddRcpt, repAddRcptPar:
		e.addRcpt = append(e.addRcpt, Recipient{Addr: stripBrackets(r.addr), Args: strings.Fields(r.args)})
	case repDelRcpt:
		e.del = append(e.del, stripBrackets(r.addr))
	}
	return nil
}

// applyHeaders applies header requests the way Postfix's cleanup does:
//   - add (h) appends after the last header;
//   - change (m) counts only headers of that name, from 1 (0 means 1),
//     skipping hidden ones; an empty value deletes; a missing header with a
//     value is appended;
//   - insert (i) counts every header including hidden ones: index 0 is the
//     very top, past the end appends.
func applyHeaders(h []HeaderField, eds []hdrEdit) []HeaderField {
	for _, e := range eds {
		switch e.op {
		case repAddHeader:
			h = append(h, HeaderField{Name: e.name, Value: e.value})
		case repInsHeader:
			pos := int(min(e.index, uint32(len(h))))
			h = append(h, HeaderField{})
			copy(h[pos+1:], h[pos:])
			h[pos] = HeaderField{Name: e.name, Value: e.value}
		case repChgHeader:
			want := max(e.index, 1)
			at := -1
			for i, f := range h {
				if f.Hidden || !strings.EqualFold(f.Name, e.name) {
					continue
				}
				if want--; want == 0 {
					at = i
					break
				}
			}
			switch {
			case at >= 0 && e.value == "":
				h = append(h[:at], h[at+1:]...)
			case at >= 0:
				h[at] = HeaderField{Name: e.name, Value: e.value}
			case e.value != "":
				h = append(h, HeaderField{Name: e.name, Value: e.value})
			}
		}
	}
	return h
}

// toCRLF turns LF line ends (the milter's form) into CRLF; existing CRLF stays.
func toCRLF(s string) string {
	if !strings.Contains(s, "\n") {
		return s
	}
	s = strings.ReplaceAll(s, "\r\n", "\n")
	return strings.ReplaceAll(s, "\n", "\r\n")
}

// normalizeBody makes a replacement body CRLF throughout and ends its last
// line, as Postfix's record-based rewrite does.
func normalizeBody(b []byte) []byte {
	if len(b) == 0 {
		return b
	}
	b = bytes.ReplaceAll(b, []byte("\r\n"), []byte("\n"))
	b = bytes.ReplaceAll(b, []byte("\n"), []byte("\r\n"))
	if !bytes.HasSuffix(b, []byte("\r\n")) {
		b = append(b, '\r', '\n')
	}
	return b
}

func stripBrackets(a string) string {
	a = strings.TrimSpace(a)
	if len(a) >= 2 && a[0] == '<' && a[len(a)-1] == '>' {
		return a[1 : len(a)-1]
	}
	return a
}
