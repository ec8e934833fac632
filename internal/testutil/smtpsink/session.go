package smtpsink

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"encoding/base64"
	"fmt"
	"io"
	"net"
	"net/textproto"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// maxLine bounds a command line (RFC 5321 §4.5.3.1.4 says 512; we are lax
// because clients under test may send long parameters).
const maxLine = 4096

type session struct {
	s    *Sink
	c    net.Conn
	br   *bufio.Reader
	bw   *bufio.Writer
	info *Conn
	ext  Ext

	helo     string
	esmtp    bool
	tls      *TLSInfo
	authUser string
	refused  bool // greeting was not 2xx: only QUIT is served
	left     bool // counted out of the concurrency figures
	msg      *Message
}

func newSession(s *Sink, c net.Conn, info *Conn) *session {
	return &session{
		s:    s,
		c:    c,
		br:   bufio.NewReaderSize(c, maxLine+2),
		bw:   bufio.NewWriter(c),
		info: info,
		ext:  s.opts.ext(),
	}
}

// leave counts the connection out of the open ones before its last reply
// goes out: a client that reconnects as soon as it reads 221 or 421 must
// not look like one connection too many.
func (ss *session) leave() {
	if ss.left {
		return
	}
	ss.left = true
	ss.s.mu.Lock()
	ss.s.active--
	ss.s.mu.Unlock()
}

func (ss *session) logf(format string, args ...any) {
	line := fmt.Sprintf(format, args...)
	ss.s.mu.Lock()
	ss.info.Log = append(ss.info.Log, line)
	ss.s.mu.Unlock()
}

// flush writes pending replies; it counts a round trip when there was
// something to write.
func (ss *session) flush() error {
	if ss.bw.Buffered() == 0 {
		return nil
	}
	ss.s.mu.Lock()
	ss.info.RoundTrips++
	ss.s.mu.Unlock()
	return ss.bw.Flush()
}

// write sends one (possibly multi-line) reply without flushing. Lines may
// carry their own "550-"/"550 " prefix or none; the first line's code is
// used for all.
func (ss *session) write(reply string) {
	lines := strings.Split(strings.TrimRight(reply, "\r\n"), "\n")
	code := lines[0]
	if len(code) > 3 {
		code = code[:3]
	}
	for i, l := range lines {
		l = strings.TrimRight(l, "\r")
		if strings.HasPrefix(l, code) && (len(l) == 3 || l[3] == ' ' || l[3] == '-') {
			l = strings.TrimPrefix(l[3:], " ")
			l = strings.TrimPrefix(l, "-")
		}
		sep := " "
		if i < len(lines)-1 {
			sep = "-"
		}
		full := code + sep + l
		ss.logf("S: %s", full)
		ss.bw.WriteString(full + "\r\n")
	}
}

// answer picks and sends the reply for a stage. It returns the reply sent
// and false when the connection must end (Close, CloseAt, or a 421).
func (ss *session) answer(st Stage, arg, def string) (string, bool) {
	return ss.send(st, ss.pick(st, arg, def))
}

// pick chooses the reply for a stage: Func, CloseAt, scripts, default.
func (ss *session) pick(st Stage, arg, def string) string {
	o := &ss.s.opts
	reply := ""
	if o.Func != nil {
		reply = o.Func(Call{Stage: st, Arg: arg, Conn: ss.info.ID, Msg: ss.msg})
	}
	if reply == "" && o.CloseAt == st {
		reply = Close
	}
	if reply == "" {
		ss.s.mu.Lock()
		if st == StageRcpt {
			reply = ss.s.rcptRep[normAddr(arg)]
		}
		if reply == "" {
			reply = ss.s.replies[st]
		}
		ss.s.mu.Unlock()
	}
	if reply == "" {
		reply = def
	}
	return reply
}

// send writes a picked reply (after any delay) and flushes when no more
// input is pipelined.
func (ss *session) send(st Stage, reply string) (string, bool) {
	if reply == Close {
		ss.logf("S: <close at %s>", st)
		ss.leave()
		ss.bw.Flush()
		return "", false
	}
	if d := ss.s.opts.Delays[st]; d > 0 {
		time.Sleep(d)
	}
	if strings.HasPrefix(reply, "421") || st == StageQuit {
		ss.leave()
	}
	ss.write(reply)
	if strings.HasPrefix(reply, "421") {
		ss.flush()
		return reply, false
	}
	// Flush only when the client has nothing more pipelined: that is what
	// makes the round-trip count meaningful.
	if !ss.pending() {
		if err := ss.flush(); err != nil {
			return reply, false
		}
	}
	return reply, true
}

// must sends a protocol error reply that scripts cannot override.
func (ss *session) must(reply string) bool {
	ss.write(reply)
	if !ss.pending() {
		return ss.flush() == nil
	}
	return true
}

// pending reports whether a whole command line is already buffered. A
// partial line does not count: its sender may be waiting for our reply.
func (ss *session) pending() bool {
	n := ss.br.Buffered()
	if n == 0 {
		return false
	}
	b, _ := ss.br.Peek(n)
	return bytes.IndexByte(b, '\n') >= 0
}

func (ss *session) readLine() (string, error) {
	ss.c.SetReadDeadline(time.Now().Add(ss.s.opts.IdleTimeout))
	var buf []byte
	tooLong := false
	for {
		chunk, err := ss.br.ReadSlice('\n')
		if !tooLong {
			if len(buf)+len(chunk) > maxLine+2 {
				tooLong, buf = true, nil
			} else {
				buf = append(buf, chunk...)
			}
		}
		if err == bufio.ErrBufferFull {
			continue
		}
		if err != nil {
			return "", err
		}
		break
	}
	if tooLong {
		return "", errLineTooLong
	}
	return strings.TrimRight(string(buf), "\r\n"), nil
}

var errLineTooLong = fmt.Errorf("line too long")

func (ss *session) serve() {
	greet := fmt.Sprintf("220 %s ESMTP smtpsink", ss.s.opts.Hostname)
	reply, ok := ss.answer(StageGreeting, "", greet)
	ss.flush() // the client waits for the greeting whatever it is
	if !ok {
		return
	}
	ss.refused = reply[0] != '2'
	ss.s.mu.Lock()
	ss.info.RoundTrips = 0 // the greeting is not a reply to a command
	ss.s.mu.Unlock()
	for {
		line, err := ss.readLine()
		if err == errLineTooLong {
			if !ss.must("500 5.5.2 line too long") {
				return
			}
			continue
		}
		if err != nil {
			ss.flush()
			return
		}
		if !ss.command(line) {
			ss.flush()
			return
		}
	}
}

// command handles one command line; false ends the connection.
func (ss *session) command(line string) bool {
	verb, arg, _ := strings.Cut(line, " ")
	verb = strings.ToUpper(verb)
	if verb == "AUTH" {
		ss.logf("C: AUTH %s", strings.Fields(arg + " x")[0])
	} else {
		ss.logf("C: %s", line)
	}
	if ss.refused && verb != "QUIT" {
		return ss.must("503 5.5.1 no service here")
	}
	switch verb {
	case "EHLO", "HELO":
		return ss.cmdHelo(verb, strings.TrimSpace(arg))
	case "STARTTLS":
		return ss.cmdStartTLS(arg)
	case "AUTH":
		return ss.cmdAuth(arg)
	case "MAIL":
		return ss.cmdMail(arg)
	case "RCPT":
		return ss.cmdRcpt(arg)
	case "DATA":
		return ss.cmdData(arg)
	case "BDAT":
		return ss.cmdBdat(arg)
	case "RSET":
		ss.msg = nil
		_, ok := ss.answer(StageRset, "", "250 2.0.0 Ok")
		return ok
	case "NOOP":
		return ss.must("250 2.0.0 Ok")
	case "VRFY":
		return ss.must("252 2.0.0 Cannot VRFY user")
	case "QUIT":
		ss.answer(StageQuit, "", "221 2.0.0 Bye")
		ss.flush()
		return false
	}
	return ss.must("500 5.5.2 command not recognized")
}

func (ss *session) cmdHelo(verb, arg string) bool {
	if arg == "" {
		return ss.must("501 5.5.4 " + verb + " needs a domain")
	}
	ss.msg = nil
	host := ss.s.opts.Hostname
	def := "250 " + host
	if verb == "EHLO" {
		lines := []string{"250-" + host}
		add := func(e Ext, kw string) {
			if ss.ext&e != 0 {
				lines = append(lines, "250-"+kw)
			}
		}
		add(Pipelining, "PIPELINING")
		if ss.ext&Size != 0 {
			if ss.s.opts.MaxSize > 0 {
				lines = append(lines, "250-SIZE "+strconv.FormatInt(ss.s.opts.MaxSize, 10))
			} else {
				lines = append(lines, "250-SIZE")
			}
		}
		add(EightBitMIME, "8BITMIME")
		add(SMTPUTF8, "SMTPUTF8")
		add(DSN, "DSN")
		add(Chunking, "CHUNKING")
		add(EnhancedStatusCodes, "ENHANCEDSTATUSCODES")
		if ss.tls == nil {
			add(StartTLS, "STARTTLS")
		}
		if ss.authUser == "" {
			add(Auth, "AUTH PLAIN LOGIN")
		}
		lines[len(lines)-1] = "250 " + lines[len(lines)-1][4:]
		def = strings.Join(lines, "\n")
	}
	reply, ok := ss.answer(StageHelo, arg, def)
	if ok && reply[0] == '2' {
		ss.helo = arg
		ss.esmtp = verb == "EHLO"
		ss.s.mu.Lock()
		ss.info.Helo = arg
		ss.s.mu.Unlock()
	}
	return ok
}

func (ss *session) cmdStartTLS(arg string) bool {
	if ss.ext&StartTLS == 0 || !ss.esmtp {
		return ss.must("502 5.5.1 STARTTLS not available")
	}
	if ss.tls != nil {
		return ss.must("503 5.5.1 TLS already active")
	}
	if arg != "" {
		return ss.must("501 5.5.4 no parameters allowed")
	}
	// Anything the client pipelined after STARTTLS must not be trusted
	// (CVE-2011-0411): note it and throw it away.
	if n := ss.br.Buffered(); n > 0 {
		ss.br.Discard(n)
		ss.logf("S: <discarded %d bytes pipelined after STARTTLS>", n)
	}
	reply, ok := ss.answer(StageStartTLS, "", "220 2.0.0 Ready to start TLS")
	if !ok || reply[0] != '2' {
		return ok
	}
	if err := ss.flush(); err != nil {
		return false
	}
	tc := tls.Server(ss.c, ss.s.tlsConf)
	tc.SetDeadline(time.Now().Add(ss.s.opts.IdleTimeout))
	if err := tc.Handshake(); err != nil {
		ss.logf("S: <TLS handshake failed: %v>", err)
		return false
	}
	tc.SetDeadline(time.Time{})
	st := tc.ConnectionState()
	ss.tls = &TLSInfo{Version: st.Version, CipherSuite: st.CipherSuite, ServerName: st.ServerName}
	ss.c = tc
	ss.br = bufio.NewReaderSize(tc, maxLine+2)
	ss.bw = bufio.NewWriter(tc)
	// RFC 3207 §4.2: forget everything learned before TLS.
	ss.helo, ss.esmtp, ss.msg, ss.authUser = "", false, nil, ""
	ss.s.mu.Lock()
	t := *ss.tls
	ss.info.TLS = &t
	ss.s.mu.Unlock()
	return true
}

func (ss *session) cmdAuth(arg string) bool {
	if ss.ext&Auth == 0 || !ss.esmtp {
		return ss.must("502 5.5.1 AUTH not available")
	}
	if ss.authUser != "" {
		return ss.must("503 5.5.1 already authenticated")
	}
	if ss.msg != nil {
		return ss.must("503 5.5.1 AUTH not allowed during a transaction")
	}
	fields := strings.Fields(arg)
	if len(fields) == 0 || len(fields) > 2 {
		return ss.must("501 5.5.4 syntax: AUTH mechanism [initial-response]")
	}
	mech := strings.ToUpper(fields[0])
	ir := ""
	if len(fields) == 2 {
		ir = fields[1]
	}
	// challenge sends a 334 and reads the client's base64 answer.
	challenge := func(prompt string) (string, bool, bool) {
		ss.write("334 " + prompt)
		if ss.flush() != nil {
			return "", false, false
		}
		line, err := ss.readLine()
		if err != nil {
			return "", false, false
		}
		if line == "*" {
			return "", false, true
		}
		b, err := base64.StdEncoding.DecodeString(line)
		if err != nil {
			return "", false, true
		}
		return string(b), true, true
	}
	var user, pass string
	switch mech {
	case "PLAIN":
		var resp string
		if ir != "" && ir != "=" {
			b, err := base64.StdEncoding.DecodeString(ir)
			if err != nil {
				return ss.must("501 5.5.2 bad base64")
			}
			resp = string(b)
		} else if ir == "" {
			r, good, alive := challenge("")
			if !alive {
				return false
			}
			if !good {
				return ss.must("501 5.7.0 authentication cancelled")
			}
			resp = r
		}
		parts := strings.Split(resp, "\x00")
		if len(parts) != 3 {
			return ss.must("501 5.5.2 bad PLAIN response")
		}
		user, pass = parts[1], parts[2]
	case "LOGIN":
		if ir != "" {
			b, err := base64.StdEncoding.DecodeString(ir)
			if err != nil {
				return ss.must("501 5.5.2 bad base64")
			}
			user = string(b)
		} else {
			u, good, alive := challenge("VXNlcm5hbWU6")
			if !alive {
				return false
			}
			if !good {
				return ss.must("501 5.7.0 authentication cancelled")
			}
			user = u
		}
		p, good, alive := challenge("UGFzc3dvcmQ6")
		if !alive {
			return false
		}
		if !good {
			return ss.must("501 5.7.0 authentication cancelled")
		}
		pass = p
	default:
		return ss.must("504 5.5.4 mechanism not supported")
	}
	def := "535 5.7.8 authentication credentials invalid"
	if user == ss.s.opts.AuthUser && pass == ss.s.opts.AuthPass {
		def = "235 2.7.0 authentication successful"
	}
	reply, ok := ss.answer(StageAuth, user, def)
	if ok && reply[0] == '2' {
		ss.authUser = user
		ss.s.mu.Lock()
		ss.info.AuthUser = user
		ss.s.mu.Unlock()
	}
	return ok
}

// parsePath splits "<addr> PARAM PARAM" after "FROM:" or "TO:".
func parsePath(s string) (addr string, params []string, ok bool) {
	s = strings.TrimLeft(s, " ")
	if !strings.HasPrefix(s, "<") {
		return "", nil, false
	}
	inQuote := false
	end := -1
	for i := 1; i < len(s); i++ {
		switch {
		case s[i] == '\\' && inQuote:
			i++
		case s[i] == '"':
			inQuote = !inQuote
		case s[i] == '>' && !inQuote:
			end = i
		}
		if end >= 0 {
			break
		}
	}
	if end < 0 {
		return "", nil, false
	}
	addr = s[1:end]
	// A source route (<@a,@b:user@c>) is accepted and ignored (RFC 5321 §4.1.1.3).
	if strings.HasPrefix(addr, "@") {
		if _, after, found := strings.Cut(addr, ":"); found {
			addr = after
		}
	}
	rest := s[end+1:]
	if rest != "" && rest[0] != ' ' {
		return "", nil, false
	}
	return addr, strings.Fields(rest), true
}

func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= 0x80 {
			return false
		}
	}
	return true
}

// checkParams refuses parameters of extensions the sink did not advertise.
func (ss *session) checkParams(params []string, mail bool) string {
	for _, p := range params {
		k, v, _ := strings.Cut(p, "=")
		k = strings.ToUpper(k)
		var need Ext
		switch {
		case mail && k == "SIZE":
			need = Size
			n, err := strconv.ParseInt(v, 10, 64)
			if err != nil || n < 0 {
				return "501 5.5.4 bad SIZE"
			}
			if ss.s.opts.MaxSize > 0 && n > ss.s.opts.MaxSize {
				return "552 5.3.4 message size exceeds fixed limit"
			}
		case mail && k == "BODY":
			need = EightBitMIME
			if u := strings.ToUpper(v); u != "7BIT" && u != "8BITMIME" {
				return "555 5.5.4 unsupported BODY"
			}
		case mail && k == "SMTPUTF8":
			need = SMTPUTF8
		case mail && (k == "RET" || k == "ENVID"):
			need = DSN
		case mail && k == "AUTH":
			need = Auth
		case !mail && (k == "NOTIFY" || k == "ORCPT"):
			need = DSN
		default:
			return "555 5.5.4 unsupported parameter " + k
		}
		if ss.ext&need == 0 {
			return "555 5.5.4 parameter " + k + " not advertised"
		}
	}
	return ""
}

func hasParam(params []string, key string) bool {
	for _, p := range params {
		k, _, _ := strings.Cut(p, "=")
		if strings.EqualFold(k, key) {
			return true
		}
	}
	return false
}

func (ss *session) cmdMail(arg string) bool {
	if ss.helo == "" {
		return ss.must("503 5.5.1 send EHLO first")
	}
	if ss.msg != nil {
		return ss.must("503 5.5.1 nested MAIL command")
	}
	if len(arg) < 5 || !strings.EqualFold(arg[:5], "FROM:") {
		return ss.must("501 5.5.4 syntax: MAIL FROM:<address>")
	}
	addr, params, ok := parsePath(arg[5:])
	if !ok {
		return ss.must("501 5.1.7 bad sender address syntax")
	}
	if ss.s.opts.RequireTLS && ss.tls == nil {
		return ss.must("530 5.7.0 must issue a STARTTLS command first")
	}
	if ss.s.opts.RequireAuth && ss.authUser == "" {
		return ss.must("530 5.7.0 authentication required")
	}
	if e := ss.checkParams(params, true); e != "" {
		return ss.must(e)
	}
	if !isASCII(addr) && (ss.ext&SMTPUTF8 == 0 || !hasParam(params, "SMTPUTF8")) {
		return ss.must("553 5.6.7 non-ASCII address needs SMTPUTF8")
	}
	if !utf8.ValidString(addr) {
		return ss.must("553 5.6.7 address is not UTF-8")
	}
	m := &Message{
		Conn:       ss.info.ID,
		PeerIP:     ss.info.PeerIP,
		LocalAddr:  ss.info.LocalAddr,
		Helo:       ss.helo,
		ESMTP:      ss.esmtp,
		AuthUser:   ss.authUser,
		From:       addr,
		FromParams: params,
	}
	if ss.tls != nil {
		t := *ss.tls
		m.TLS = &t
	}
	ss.msg = m
	reply, ok := ss.answer(StageMail, addr, "250 2.1.0 Ok")
	if !ok || reply[0] != '2' {
		ss.msg = nil
	}
	return ok
}

func (ss *session) cmdRcpt(arg string) bool {
	if ss.msg == nil {
		return ss.must("503 5.5.1 need MAIL command")
	}
	if len(arg) < 3 || !strings.EqualFold(arg[:3], "TO:") {
		return ss.must("501 5.5.4 syntax: RCPT TO:<address>")
	}
	addr, params, ok := parsePath(arg[3:])
	if !ok || addr == "" {
		return ss.must("501 5.1.3 bad recipient address syntax")
	}
	if e := ss.checkParams(params, false); e != "" {
		return ss.must(e)
	}
	if !isASCII(addr) && !hasParam(ss.msg.FromParams, "SMTPUTF8") {
		return ss.must("553 5.6.7 non-ASCII address needs SMTPUTF8")
	}
	reply, ok := ss.answer(StageRcpt, addr, "250 2.1.5 Ok")
	if reply != "" {
		ss.msg.Rcpts = append(ss.msg.Rcpts, Rcpt{Addr: addr, Params: params, Reply: firstLine(reply)})
	}
	return ok
}

func firstLine(s string) string {
	l, _, _ := strings.Cut(s, "\n")
	return strings.TrimRight(l, "\r")
}

func (ss *session) hasRcpt() bool {
	if ss.msg == nil {
		return false
	}
	for _, r := range ss.msg.Rcpts {
		if r.Accepted() {
			return true
		}
	}
	return false
}

func (ss *session) cmdData(arg string) bool {
	if arg != "" {
		return ss.must("501 5.5.4 no parameters allowed")
	}
	if ss.msg == nil {
		return ss.must("503 5.5.1 need MAIL command")
	}
	if !ss.hasRcpt() {
		return ss.must("554 5.5.1 no valid recipients")
	}
	if ss.msg.Bdat {
		return ss.must("503 5.5.1 DATA after BDAT")
	}
	reply, ok := ss.answer(StageData, "", "354 End data with <CR><LF>.<CR><LF>")
	if !ok {
		return false
	}
	if reply[0] != '3' {
		ss.msg = nil
		return true
	}
	if ss.flush() != nil { // the client waits for 354 whatever is buffered
		return false
	}
	m := ss.msg
	prevCRLF := true
	for {
		ss.c.SetReadDeadline(time.Now().Add(ss.s.opts.IdleTimeout))
		line, err := ss.br.ReadBytes('\n')
		if err != nil {
			ss.logf("S: <connection lost in DATA: %v>", err)
			return false
		}
		// Only CRLF.CRLF ends the content: "\n.\r\n" is the smuggling
		// shape and must be recorded as content, not as an end.
		if prevCRLF && string(line) == ".\r\n" {
			break
		}
		m.Raw = append(m.Raw, line...)
		crlf := bytes.HasSuffix(line, []byte("\r\n"))
		if !crlf {
			m.BareLF = true
		}
		if prevCRLF && line[0] == '.' {
			line = line[1:]
		}
		m.Data = append(m.Data, line...)
		prevCRLF = crlf
	}
	ss.logf("C: <%d octets of content>", len(m.Data))
	return ss.endContent()
}

func (ss *session) cmdBdat(arg string) bool {
	f := strings.Fields(arg)
	if len(f) == 0 || len(f) > 2 || (len(f) == 2 && !strings.EqualFold(f[1], "LAST")) {
		return ss.must("501 5.5.4 syntax: BDAT size [LAST]")
	}
	n, err := strconv.ParseInt(f[0], 10, 64)
	if err != nil || n < 0 {
		return ss.must("501 5.5.4 bad chunk size")
	}
	last := len(f) == 2
	ss.c.SetReadDeadline(time.Now().Add(ss.s.opts.IdleTimeout))
	// The chunk is read even when refused: RFC 3030 §2 says the octets
	// follow the command regardless.
	var chunk bytes.Buffer
	if _, err := io.CopyN(&chunk, ss.br, n); err != nil {
		ss.logf("S: <connection lost in BDAT: %v>", err)
		return false
	}
	ss.logf("C: <%d octets of chunk>", n)
	if ss.ext&Chunking == 0 {
		return ss.must("502 5.5.1 BDAT not available")
	}
	if ss.msg == nil {
		return ss.must("503 5.5.1 need MAIL command")
	}
	if !ss.hasRcpt() {
		return ss.must("554 5.5.1 no valid recipients")
	}
	ss.msg.Bdat = true
	ss.msg.Chunks++
	ss.msg.Data = append(ss.msg.Data, chunk.Bytes()...)
	if !last {
		_, ok := ss.answer(StageBdat, "", fmt.Sprintf("250 2.0.0 %d octets received", n))
		return ok
	}
	return ss.endContent()
}

// endContent answers the end of DATA or BDAT LAST and records the message.
func (ss *session) endContent() bool {
	m := ss.msg
	m.MessageID = messageID(m.Data)
	m.ID = ss.s.newMsgID()
	def := "250 2.0.0 Ok: queued as " + m.ID
	if max := ss.s.opts.MaxSize; max > 0 && int64(len(m.Data)) > max {
		def = "552 5.3.4 message size exceeds fixed limit"
	}
	reply := ss.pick(StageAfterData, "", def)
	if reply != Close {
		m.Reply = firstLine(reply)
	}
	m.Arrived = time.Now()
	ss.msg = nil
	// Recorded before the reply goes out, so a client that has its 250
	// always finds the message in Messages().
	ss.s.record(m, ss.info)
	_, ok := ss.send(StageAfterData, reply)
	return ok
}

// messageID reads the Message-ID header from the content, if any.
func messageID(data []byte) string {
	r := textproto.NewReader(bufio.NewReader(bytes.NewReader(data)))
	h, _ := r.ReadMIMEHeader() // a partial header is still worth searching
	return strings.TrimSpace(h.Get("Message-Id"))
}

func normAddr(a string) string {
	return strings.ToLower(strings.Trim(strings.TrimSpace(a), "<>"))
}
