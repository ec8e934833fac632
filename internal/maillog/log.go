package maillog

import (
	"fmt"
	"io"
	"os"
	"strconv"
	"sync"
	"time"
)

// Log writes mail log lines to a file or stderr. It is safe for use by
// many goroutines; each line is one write(2) on an O_APPEND file, so lines
// never interleave.
type Log struct {
	path string

	mu   sync.Mutex
	w    io.Writer
	f    *os.File // nil for stderr or a caller's writer
	name string
	host string
	pid  string
	now  func() time.Time
	err  error
	buf  []byte
}

// Open opens path for appending (creating it 0640). "" or "-" means stderr.
func Open(path string) (*Log, error) {
	l := newLog(os.Stderr)
	if path == "" || path == "-" {
		return l, nil
	}
	l.path = path
	if err := l.open(); err != nil {
		return nil, err
	}
	return l, nil
}

// New writes lines to w (tests, or a syslog bridge).
func New(w io.Writer) *Log { return newLog(w) }

func newLog(w io.Writer) *Log {
	host, err := os.Hostname()
	if err != nil || host == "" {
		host = "localhost"
	}
	// syslog shows the short host name.
	for i := 0; i < len(host); i++ {
		if host[i] == '.' {
			host = host[:i]
			break
		}
	}
	return &Log{w: w, name: "sluice", host: host, pid: strconv.Itoa(os.Getpid()), now: time.Now}
}

func (l *Log) open() error {
	f, err := os.OpenFile(l.path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o640)
	if err != nil {
		return fmt.Errorf("maillog: open %s: %w", l.path, err)
	}
	l.f, l.w = f, f
	return nil
}

// SetName changes the syslog name ("sluice"); "postfix" makes the lines
// match unmodified Postfix tools.
func (l *Log) SetName(name string) { l.mu.Lock(); l.name = name; l.mu.Unlock() }

// SetHost changes the host name field (default: the short host name).
func (l *Log) SetHost(host string) { l.mu.Lock(); l.host = host; l.mu.Unlock() }

// SetPID changes the pid field (tests).
func (l *Log) SetPID(pid int) { l.mu.Lock(); l.pid = strconv.Itoa(pid); l.mu.Unlock() }

// SetClock changes the clock (tests).
func (l *Log) SetClock(now func() time.Time) { l.mu.Lock(); l.now = now; l.mu.Unlock() }

// Reopen reopens the file after logrotate moved it; a no-op for stderr.
func (l *Log) Reopen() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.path == "" {
		return nil
	}
	old := l.f
	if err := l.open(); err != nil {
		return err // keep writing to the old file rather than nowhere
	}
	if old != nil {
		old.Close()
	}
	return nil
}

// Close closes the file; later lines are dropped and reported by Err.
func (l *Log) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.f == nil {
		return nil
	}
	err := l.f.Close()
	l.f, l.w = nil, nil
	if err != nil {
		return fmt.Errorf("maillog: close %s: %w", l.path, err)
	}
	return nil
}

// Err returns the first write error since the last call, and clears it.
// Logging must not stop mail, so the line methods do not return errors;
// the daemon checks Err periodically and reports it elsewhere.
func (l *Log) Err() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	err := l.err
	l.err = nil
	return err
}

// Printf writes one line for component (smtp, smtpd, qmgr, cleanup, ...).
func (l *Log) Printf(component, format string, args ...any) {
	l.line(component, fmt.Sprintf(format, args...))
}

// Delivery logs a delivery attempt's outcome for one recipient.
func (l *Log) Delivery(d DeliveryLine) {
	c := d.Component
	if c == "" {
		c = "smtp"
	}
	l.line(c, d.String())
}

// Arrival logs a message entering the queue (qmgr's from= line).
func (l *Log) Arrival(a ArrivalLine) { l.line("qmgr", a.String()) }

// Reject logs a refused SMTP command (smtpd's reject line).
func (l *Log) Reject(r RejectLine) { l.line("smtpd", r.String()) }

// Connect logs "connect from host[ip]".
func (l *Log) Connect(host, ip string) { l.line("smtpd", "connect from "+Client(host, ip)) }

// Disconnect logs "disconnect from host[ip]" with Postfix 3's command
// counts, e.g. "ehlo=1 mail=1 rcpt=1 data=1 quit=1 commands=5" ("" for none).
func (l *Log) Disconnect(host, ip, counts string) {
	s := "disconnect from " + Client(host, ip)
	if counts != "" {
		s += " " + counts
	}
	l.line("smtpd", s)
}

// Received logs smtpd's "QUEUEID: client=host[ip]" line, with the SASL
// user when the client authenticated.
func (l *Log) Received(queueID, host, ip, saslMethod, saslUser string) {
	s := queueID + ": client=" + Client(host, ip)
	if saslUser != "" {
		s += ", sasl_method=" + saslMethod + ", sasl_username=" + saslUser
	}
	l.line("smtpd", s)
}

// MessageID logs cleanup's "QUEUEID: message-id=<...>" line.
func (l *Log) MessageID(queueID, msgID string) {
	l.line("cleanup", queueID+": message-id="+msgID)
}

// Expired logs qmgr's "QUEUEID: from=<s>, status=expired, returned to sender".
func (l *Log) Expired(queueID, from string) {
	l.line("qmgr", queueID+": from=<"+from+">, status=expired, returned to sender")
}

// StatusNotification logs the report a sendmail -bv request (or -v)
// caused, as Postfix's bounce(8) trace service does.
func (l *Log) StatusNotification(queueID, reportID string) {
	l.line("bounce", queueID+": sender delivery status notification: "+reportID)
}

// Removed logs qmgr's "QUEUEID: removed" when a message leaves the queue.
func (l *Log) Removed(queueID string) { l.line("qmgr", queueID+": removed") }

// line writes "Mmm dd hh:mm:ss HOST NAME/COMPONENT[PID]: MSG\n".
func (l *Log) line(component, msg string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.w == nil {
		if l.err == nil {
			l.err = fmt.Errorf("maillog: write to closed log %s", l.path)
		}
		return
	}
	b := l.buf[:0]
	b = l.now().AppendFormat(b, time.Stamp)
	b = append(b, ' ')
	b = append(b, l.host...)
	b = append(b, ' ')
	b = append(b, l.name...)
	b = append(b, '/')
	b = append(b, component...)
	b = append(b, '[')
	b = append(b, l.pid...)
	b = append(b, "]: "...)
	b = append(b, printable(msg)...)
	b = append(b, '\n')
	l.buf = b
	if _, err := l.w.Write(b); err != nil && l.err == nil {
		l.err = fmt.Errorf("maillog: write %s: %w", l.path, err)
	}
}
