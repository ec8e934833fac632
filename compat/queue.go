package compat

import (
	"bufio"
	"fmt"
	"io"
	"strconv"
	"time"
	"unicode/utf8"
)

// QueueEntry is one queued message as mailq and postqueue -j show it. It
// is the neutral form the daemon's spool index is converted to; nothing
// here knows how the spool stores it.
type QueueEntry struct {
	ID      string
	Queue   string // "deferred", "active", "hold", "incoming", "maildrop"; "" derives it from Held/Active
	Arrival time.Time
	Size    int64 // message content size in bytes
	Sender  string
	Held    bool
	Active  bool
	Expire  bool // forced to expire (postsuper -e)
	Rcpts   []QueueRcpt
}

// QueueRcpt is one undelivered recipient.
type QueueRcpt struct {
	Addr   string
	Orig   string // original address, shown by -j only when it differs from Addr
	Reason string // last delay reason, without the DSN status code
}

// QueueName returns the Postfix queue name Entry is listed under.
func (e *QueueEntry) QueueName() string {
	switch {
	case e.Queue != "":
		return e.Queue
	case e.Held:
		return "hold"
	case e.Active:
		return "active"
	}
	return "deferred"
}

func (e *QueueEntry) marker() byte {
	if e.Expire {
		return '#'
	}
	switch e.QueueName() {
	case "active":
		return '*'
	case "hold":
		return '!'
	}
	return ' '
}

// The long-queue-id layout of Postfix's showq_compat.c.
const (
	mailqHeading = "----Queue ID----- --Size-- ---Arrival Time---- --Sender/Recipient------\n"
	mailqEmpty   = "Mail queue is empty\n"
	rcptIndent   = "                                               " // "%-17s %8s %-19s " of empty strings
	reasonWidth  = 76
)

// MailqWriter writes Postfix's mailq/postqueue -p listing one entry at a
// time, so a daemon can stream a large queue without holding it. Call
// Close at the end for the trailer (or "Mail queue is empty").
type MailqWriter struct {
	w     *bufio.Writer
	n     int64
	bytes int64
	buf   []byte
	loc   *time.Location
}

// NewMailqWriter returns a writer showing arrival times in loc (nil: the
// local zone, as Postfix's asctime(localtime()) does).
func NewMailqWriter(w io.Writer, loc *time.Location) *MailqWriter {
	if loc == nil {
		loc = time.Local
	}
	return &MailqWriter{w: bufio.NewWriterSize(w, 64<<10), loc: loc}
}

// Write adds one message.
func (m *MailqWriter) Write(e *QueueEntry) error {
	b := m.buf[:0]
	if m.n == 0 {
		b = append(b, mailqHeading...)
	}
	m.n++
	m.bytes += e.Size
	// "%-17s %8ld %19.19s %s\n": id with its status character appended.
	start := len(b)
	b = append(b, e.ID...)
	b = append(b, e.marker())
	for len(b)-start < 17 {
		b = append(b, ' ')
	}
	b = append(b, ' ')
	b = appendPadLeft(b, strconv.FormatInt(e.Size, 10), 8)
	b = append(b, ' ')
	// asctime() cut to 19 characters: "Sun Nov 29 10:41:22".
	b = e.Arrival.In(m.loc).AppendFormat(b, "Mon Jan _2 15:04:05")
	b = append(b, ' ')
	if e.Sender == "" {
		b = append(b, "MAILER-DAEMON"...)
	} else {
		b = append(b, e.Sender...)
	}
	b = append(b, '\n')
	prev := ""
	for _, r := range e.Rcpts {
		// The reason is printed above the recipients it applies to, once
		// per run of recipients sharing it.
		if r.Reason != "" && r.Reason != prev {
			for i := len(r.Reason); i < reasonWidth; i++ {
				b = append(b, ' ')
			}
			b = append(b, '(')
			b = append(b, r.Reason...)
			b = append(b, ")\n"...)
			prev = r.Reason
		}
		b = append(b, rcptIndent...)
		b = append(b, r.Addr...)
		b = append(b, '\n')
	}
	b = append(b, '\n')
	m.buf = b
	_, err := m.w.Write(b)
	return err
}

// Close writes the trailer and flushes.
func (m *MailqWriter) Close() error {
	if m.n == 0 {
		m.w.WriteString(mailqEmpty)
	} else {
		s := "s"
		if m.n == 1 {
			s = ""
		}
		fmt.Fprintf(m.w, "-- %d Kbytes in %d Request%s.\n", m.bytes/1024, m.n, s)
	}
	return m.w.Flush()
}

func appendPadLeft(b []byte, s string, width int) []byte {
	for i := len(s); i < width; i++ {
		b = append(b, ' ')
	}
	return append(b, s...)
}

// WriteMailq writes entries as Postfix's mailq does (long queue ids).
func WriteMailq(w io.Writer, entries []QueueEntry, loc *time.Location) error {
	m := NewMailqWriter(w, loc)
	for i := range entries {
		if err := m.Write(&entries[i]); err != nil {
			return fmt.Errorf("compat: write mailq: %w", err)
		}
	}
	if err := m.Close(); err != nil {
		return fmt.Errorf("compat: write mailq: %w", err)
	}
	return nil
}

// AppendJSON appends e as one line of postqueue -j output, with Postfix's
// member order and spacing.
func AppendJSON(b []byte, e *QueueEntry) []byte {
	b = append(b, `{"queue_name": `...)
	b = appendJSONString(b, e.QueueName())
	b = append(b, `, "queue_id": `...)
	b = appendJSONString(b, e.ID)
	b = append(b, `, "arrival_time": `...)
	b = strconv.AppendInt(b, e.Arrival.Unix(), 10)
	b = append(b, `, "message_size": `...)
	b = strconv.AppendInt(b, e.Size, 10)
	b = append(b, `, "forced_expire": `...)
	b = strconv.AppendBool(b, e.Expire)
	b = append(b, `, "sender": `...)
	b = appendJSONString(b, e.Sender)
	b = append(b, `, "recipients": [`...)
	for i, r := range e.Rcpts {
		if i > 0 {
			b = append(b, ", "...)
		}
		b = append(b, `{"address": `...)
		b = appendJSONString(b, r.Addr)
		if r.Orig != "" && r.Orig != r.Addr {
			b = append(b, `, "orig_address": `...)
			b = appendJSONString(b, r.Orig)
		}
		if r.Reason != "" {
			b = append(b, `, "delay_reason": `...)
			b = appendJSONString(b, r.Reason)
		}
		b = append(b, '}')
	}
	return append(b, "]}\n"...)
}

// WriteJSON writes entries as postqueue -j does: one object per line.
func WriteJSON(w io.Writer, entries []QueueEntry) error {
	bw := bufio.NewWriterSize(w, 64<<10)
	var b []byte
	for i := range entries {
		b = AppendJSON(b[:0], &entries[i])
		if _, err := bw.Write(b); err != nil {
			return fmt.Errorf("compat: write queue json: %w", err)
		}
	}
	if err := bw.Flush(); err != nil {
		return fmt.Errorf("compat: write queue json: %w", err)
	}
	return nil
}

// appendJSONString quotes s as Postfix's quote_for_json does: the short
// escapes for " \ and the usual controls, \u00XX for other controls,
// other bytes as they are (invalid UTF-8 becomes U+FFFD so the line stays
// valid JSON).
func appendJSONString(b []byte, s string) []byte {
	b = append(b, '"')
	for i := 0; i < len(s); {
		c := s[i]
		if c >= 0x80 {
			r, n := utf8.DecodeRuneInString(s[i:])
			if r == utf8.RuneError && n == 1 {
				b = append(b, "\ufffd"...)
			} else {
				b = append(b, s[i:i+n]...)
			}
			i += n
			continue
		}
		switch c {
		case '"':
			b = append(b, `\"`...)
		case '\\':
			b = append(b, `\\`...)
		case '\b':
			b = append(b, `\b`...)
		case '\f':
			b = append(b, `\f`...)
		case '\n':
			b = append(b, `\n`...)
		case '\r':
			b = append(b, `\r`...)
		case '\t':
			b = append(b, `\t`...)
		default:
			if c < 0x20 || c == 0x7f {
				b = append(b, fmt.Sprintf(`\u%04X`, c)...)
			} else {
				b = append(b, c)
			}
		}
		i++
	}
	return append(b, '"')
}
