package bounce

import (
	"bytes"
	"flag"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/sluicemta/sluice/internal/testutil"
)

var update = flag.Bool("update", false, "rewrite the golden DSNs in testdata/")

var (
	now     = time.Date(2026, 11, 29, 10, 0, 0, 0, time.UTC)
	arrival = time.Date(2026, 11, 28, 22, 30, 15, 0, time.FixedZone("", -5*3600))
	message = []byte("Return-Path: <alice@example.com>\r\nFrom: Alice <alice@example.com>\r\nTo: Bob <bob@example.net>\r\n" +
		"Subject: Quarterly report\r\nMessage-ID: <q3.1@example.com>\r\nDate: Sat, 28 Nov 2026 22:30:10 -0500\r\n" +
		"\r\nHello Bob,\r\n\r\nthe numbers are attached.\r\n-- \r\nAlice\r\n")
)

// dsnCases are the golden DSNs: one per kind of notice and per way of
// returning the content.
func dsnCases() map[string]*Report {
	base := func() *Report {
		return &Report{ReportingMTA: "mail.example.com", QueueID: "4B3F1C2D3E", Sender: "alice@example.com",
			ArrivalDate: arrival, Original: message}
	}
	cases := map[string]*Report{}

	r := base()
	r.Recipients = []RcptReport{{Final: "bob@example.net", Original: "rfc822;Bob@Example.NET", Action: "failed",
		Status: "5.1.1", RemoteMTA: "mx.example.net",
		Diagnostic:  "smtp; 550 5.1.1 <bob@example.net>: Recipient address rejected: User unknown in virtual mailbox table",
		LastAttempt: now.Add(-time.Minute)}}
	cases["failed"] = r

	r = base()
	r.EnvID, r.Ret, r.Postmaster = "Q3-report-0001", "HDRS", "postmaster@example.com"
	r.Recipients = []RcptReport{
		{Final: "carol@example.org", Action: "failed", Status: "5.2.1", RemoteMTA: "gmail-smtp-in.l.google.com",
			Diagnostic:  "550-5.2.1 The email account that you tried to reach is disabled. Learn more at https://support.google.com/mail/?p=DisabledUser a1si2345678qkb.12 - gsmtp",
			LastAttempt: now},
		{Final: "dave@nonexistent.example", Action: "failed", Status: "5.4.4",
			Diagnostic: "X-Sluice; Host or domain name not found. Name service error for name=nonexistent.example type=MX: Host not found"},
	}
	cases["failed-multi-hdrs"] = r

	r = base()
	r.Recipients = []RcptReport{{Final: "erin@example.net", Action: "delayed", Status: "4.7.0",
		RemoteMTA:   "mta5.am0.yahoodns.net",
		Diagnostic:  "smtp; 421 4.7.0 [TSS04] Messages from 192.0.2.1 temporarily deferred due to unexpected volume or user complaints - 4.16.55.1; see https://postmaster.yahooinc.com/error-codes",
		LastAttempt: now.Add(-10 * time.Minute), WillRetryUntil: arrival.Add(108 * time.Hour)}}
	cases["delayed"] = r

	r = base()
	r.Recipients = []RcptReport{{Final: "bob@example.net", Action: "delivered", Status: "2.0.0", RemoteMTA: "mx.example.net",
		Diagnostic: "smtp; 250 2.0.0 Ok: queued as 9A8B7C6D5E", LastAttempt: now}}
	cases["delivered"] = r

	r = base()
	r.Ret, r.MaxReturn = "FULL", 100
	r.Recipients = []RcptReport{{Final: "bob@example.net", Action: "failed", Status: "5.2.2", RemoteMTA: "mx.example.net",
		Diagnostic: "smtp; 552 5.2.2 Mailbox full", LastAttempt: now}}
	cases["failed-capped"] = r

	r = base()
	r.SMTPUTF8, r.Sender = true, "jürgen@exämple.com"
	r.Original = []byte("From: Jürgen <jürgen@exämple.com>\r\nTo: 用户@例子.中国\r\nSubject: Grüße\r\n\r\nGrüße aus Köln\r\n")
	r.Recipients = []RcptReport{{Final: "用户@例子.中国", Original: "utf-8;用户@例子.中国", Action: "failed", Status: "5.1.1",
		RemoteMTA: "mx.例子.中国", Diagnostic: "smtp; 550 5.1.1 用户不存在", LastAttempt: now}}
	cases["smtputf8"] = r

	r = base()
	r.Sender, r.Postmaster = "", "postmaster@example.com"
	r.Original = []byte("From: MAILER-DAEMON@mail.example.com (Mail Delivery System)\r\nTo: <gone@example.org>\r\nSubject: Undelivered Mail Returned to Sender\r\n\r\nbody\r\n")
	r.Recipients = []RcptReport{{Final: "gone@example.org", Action: "failed", Status: "5.1.1", RemoteMTA: "mx.example.org",
		Diagnostic: "smtp; 550 5.1.1 No such user", LastAttempt: now}}
	cases["double-bounce"] = r

	r = base()
	r.Original = []byte("From: alice@example.com\nTo: bob@example.net\nSubject: caf\xc3\xa9\n\nna\xc3\xafve body, bare LF lines\n")
	r.Recipients = []RcptReport{{Final: "bob@example.net", Action: "failed", Status: "5.7.1", RemoteMTA: "mx.example.net",
		Diagnostic: "smtp; 554 5.7.1 Service unavailable;\r\n Client host [192.0.2.1] blocked using zen.spamhaus.org", LastAttempt: now}}
	cases["failed-8bit"] = r

	// sendmail -bv: Postfix's "verify" report, one deliverable and one
	// undeliverable recipient, the headers returned.
	r = base()
	r.Recipients = []RcptReport{
		{Final: "bob@example.net", Action: "deliverable", Status: "2.1.5", RemoteMTA: "mx.example.net",
			Diagnostic: "smtp; 250 2.1.5 Ok", Text: "delivery via mx.example.net[192.0.2.25]:25: 250 2.1.5 Ok"},
		{Final: "nobody@example.net", Action: "undeliverable", Status: "5.1.1", RemoteMTA: "mx.example.net",
			Diagnostic: "smtp; 550 5.1.1 <nobody@example.net>: Recipient address rejected: User unknown",
			Text:       "delivery via mx.example.net[192.0.2.25]:25: host mx.example.net[192.0.2.25] said: 550 5.1.1 <nobody@example.net>: Recipient address rejected: User unknown (in reply to RCPT TO command)"},
	}
	cases["verify"] = r
	return cases
}

func TestBuildGolden(t *testing.T) {
	for name, r := range dsnCases() {
		t.Run(name, func(t *testing.T) {
			got, err := Build(r, now, "")
			if err != nil {
				t.Fatal(err)
			}
			checkWellFormed(t, got)
			path := filepath.Join("testdata", "dsn-"+name+".eml")
			if *update {
				if err := os.WriteFile(path, got, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("%v (run go test -update once)", err)
			}
			if !bytes.Equal(got, want) {
				t.Errorf("Build differs from %s (go test -update rewrites it):\n%s", path, got)
			}
		})
	}
}

// checkWellFormed holds for every DSN: CRLF only, no line over 998 octets.
func checkWellFormed(t *testing.T, b []byte) {
	t.Helper()
	if !bytes.HasSuffix(b, []byte("\r\n")) {
		t.Error("DSN does not end in CRLF")
	}
	for i, line := range bytes.Split(b, []byte("\r\n")) {
		if bytes.ContainsAny(line, "\r\n") {
			t.Fatalf("line %d has a bare CR or LF: %q", i+1, line)
		}
		if len(line) > 998 {
			t.Fatalf("line %d is %d octets long", i+1, len(line))
		}
	}
}

func TestBuildParseRoundTrip(t *testing.T) {
	for name, r := range dsnCases() {
		t.Run(name, func(t *testing.T) {
			b, err := Build(r, now, "<dsn-1@mail.example.com>")
			if err != nil {
				t.Fatal(err)
			}
			got, err := Parse(b)
			if err != nil {
				t.Fatal(err)
			}
			want := expectParsed(r)
			if !reflect.DeepEqual(utcTimes(got), utcTimes(want)) {
				t.Errorf("round trip:\n got %+v\nwant %+v", got, want)
			}
		})
	}
}

// utcTimes puts every time in UTC so that DeepEqual compares instants,
// not zone names.
func utcTimes(r *Report) *Report {
	c := *r
	c.ArrivalDate = c.ArrivalDate.UTC()
	c.Recipients = append([]RcptReport(nil), r.Recipients...)
	for i := range c.Recipients {
		c.Recipients[i].LastAttempt = c.Recipients[i].LastAttempt.UTC()
		c.Recipients[i].WillRetryUntil = c.Recipients[i].WillRetryUntil.UTC()
	}
	return &c
}

// expectParsed is what Parse should read back from Build(r): addresses
// bare, times to the second, the returned content as Build chose it.
func expectParsed(r *Report) *Report {
	w := &Report{ReportingMTA: r.ReportingMTA, QueueID: r.QueueID, EnvID: r.EnvID, Sender: r.Sender,
		SMTPUTF8: r.SMTPUTF8, ArrivalDate: r.ArrivalDate.Truncate(time.Second)}
	if w.Sender == "" {
		w.Sender = r.Postmaster
	}
	failed, verify := false, false
	for _, rc := range r.Recipients {
		verify = verify || strings.EqualFold(rc.Action, "deliverable") || strings.EqualFold(rc.Action, "undeliverable")
		_, final := splitAddr(rc.Final)
		_, orig := splitAddr(rc.Original)
		d := clean(rc.Diagnostic, r.SMTPUTF8)
		if typ, _ := splitType(d); typ == "" {
			d = "smtp; " + d
		}
		x := RcptReport{Final: final, Original: orig, Action: rc.Action, Status: rc.Status,
			RemoteMTA: rc.RemoteMTA, Diagnostic: d, LastAttempt: rc.LastAttempt}
		// Actions are case-insensitive (RFC 3464 2.3.3), as Build treats them.
		if strings.EqualFold(rc.Action, "delayed") {
			x.WillRetryUntil = rc.WillRetryUntil
		}
		failed = failed || strings.EqualFold(rc.Action, "failed")
		w.Recipients = append(w.Recipients, x)
	}
	orig := crlf(r.Original)
	full := strings.EqualFold(r.Ret, "FULL") || (r.Ret == "" && failed)
	if strings.EqualFold(r.Ret, "HDRS") || (r.MaxReturn > 0 && len(orig) > r.MaxReturn) || verify {
		full = false
	}
	if full {
		w.Ret, w.Original = "FULL", orig
	} else {
		w.Ret, w.Original = "HDRS", orig
		if i := bytes.Index(orig, []byte("\r\n\r\n")); i >= 0 {
			w.Original = orig[:i+2]
		}
	}
	return w
}

// TestBuildPythonAccepts has python3's email package, strict about MIME
// structure, read every golden DSN: multipart/report with the right
// report-type, three parts of the right types, a delivery-status part
// that splits into one per-message block plus one per recipient, and no
// defects anywhere.
func TestBuildPythonAccepts(t *testing.T) {
	py := testutil.NeedPython(t)
	const script = `
import email, email.policy, sys
data = open(sys.argv[1], 'rb').read()
m = email.message_from_bytes(data, policy=email.policy.compat32)
assert m.get_content_type() == 'multipart/report', m.get_content_type()
rt = m.get_param('report-type')
parts = m.get_payload()
types = [p.get_content_type() for p in parts]
status = parts[1].get_payload()
if parts[1].get_content_type() == 'message/global-delivery-status':
    # python does not split RFC 6533's global status into blocks (it reads
    # it as one message): cut the raw part out and split it the same way.
    raw = data.split(b'--' + m.get_boundary().encode())[2]
    text = raw.split(b'\r\n\r\n', 1)[1].decode('utf-8').replace('\r\n', '\n')
    status = [email.message_from_string(b) for b in text.strip('\n').split('\n\n')]
blocks = len(status) if isinstance(status, list) else -1
finals = [b['Final-Recipient'] for b in status[1:]] if blocks > 0 else []
defects = [(p.get_content_type(), d) for p in m.walk() for d in p.defects]
print(rt, ' '.join(types), blocks, '|'.join(finals), 'defects=%d' % len(defects))
for d in defects:
    print(d, file=sys.stderr)
`
	for name, r := range dsnCases() {
		t.Run(name, func(t *testing.T) {
			b, err := Build(r, now, "")
			if err != nil {
				t.Fatal(err)
			}
			f := filepath.Join(t.TempDir(), "dsn.eml")
			if err := os.WriteFile(f, b, 0o600); err != nil {
				t.Fatal(err)
			}
			out, err := exec.Command(py, "-c", script, f).CombinedOutput()
			if err != nil {
				t.Fatalf("python: %v\n%s", err, out)
			}
			rt, ds, third := "delivery-status", "message/delivery-status", "message/rfc822"
			if r.SMTPUTF8 {
				rt, ds, third = "global-delivery-status", "message/global-delivery-status", "message/global"
			}
			if e := expectParsed(r); e.Ret == "HDRS" {
				third = "text/rfc822-headers"
				if r.SMTPUTF8 {
					third = "message/global-headers"
				}
			}
			var finals []string
			for _, rc := range r.Recipients {
				finals = append(finals, addrField(clean(rc.Final, true), r.SMTPUTF8))
			}
			want := strings.Join([]string{rt, "text/plain", ds, third, strconv.Itoa(1 + len(r.Recipients)),
				strings.Join(finals, "|"), "defects=0"}, " ")
			if got := strings.TrimSpace(string(out)); got != want {
				t.Errorf("python saw\n %s\nwant\n %s", got, want)
			}
		})
	}
}

func TestBuildErrors(t *testing.T) {
	ok := func() *Report {
		return &Report{ReportingMTA: "mail.example.com", Sender: "a@example.com",
			Recipients: []RcptReport{{Final: "b@example.net", Action: "failed", Status: "5.1.1"}}}
	}
	for name, mod := range map[string]func(r *Report){
		"no reporting MTA": func(r *Report) { r.ReportingMTA = " " },
		"spaced MTA":       func(r *Report) { r.ReportingMTA = "mail example" },
		"no recipients":    func(r *Report) { r.Recipients = nil },
		"bad action":       func(r *Report) { r.Recipients[0].Action = "bounced" },
		"bad status":       func(r *Report) { r.Recipients[0].Status = "550" },
		"no address":       func(r *Report) { r.Recipients[0].Final = "rfc822; <>" },
		"nobody to notify": func(r *Report) { r.Sender = "" },
		"verify and failed mixed": func(r *Report) {
			r.Recipients = append(r.Recipients, RcptReport{Final: "c@example.net", Action: "deliverable", Status: "2.1.5"})
		},
		"failed and verify mixed": func(r *Report) {
			r.Recipients = append([]RcptReport{{Final: "c@example.net", Action: "undeliverable", Status: "4.4.1"}}, r.Recipients...)
		},
	} {
		r := ok()
		if _, err := Build(r, now, ""); err != nil {
			t.Fatalf("%s: the unmodified report fails: %v", name, err)
		}
		mod(r)
		if _, err := Build(r, now, ""); err == nil {
			t.Errorf("%s: Build accepted it", name)
		}
	}
}

// Hostile text in a remote reply must not break the DSN's structure.
func TestBuildSanitizes(t *testing.T) {
	r := &Report{ReportingMTA: "mail.example.com", Sender: "alice@example.com",
		Original: []byte("Subject: x\r\n\r\n--B\r\n"),
		Recipients: []RcptReport{{Final: "bob@example.net\r\nBcc: victim@example.org", Action: "failed", Status: "5.0.0",
			Diagnostic: "550 fine\r\n\r\nFinal-Recipient: rfc822; injected@example.org\r\n--B--\x00" + strings.Repeat("x", 5000),
			RemoteMTA:  "mx.example.net\nAction: delivered"}}}
	b, err := Build(r, now, "")
	if err != nil {
		t.Fatal(err)
	}
	checkWellFormed(t, b)
	p, err := Parse(b)
	if err != nil {
		t.Fatal(err)
	}
	if len(p.Recipients) != 1 || p.Recipients[0].Action != "failed" {
		t.Fatalf("injected fields took effect: %+v", p.Recipients)
	}
	if bytes.Contains(b, []byte("\r\nBcc:")) || bytes.Contains(b, []byte("\r\nFinal-Recipient: rfc822; injected")) {
		t.Error("a header line was injected")
	}
	if len(p.Recipients[0].Diagnostic) > maxField+len("smtp; ") {
		t.Errorf("diagnostic not capped: %d octets", len(p.Recipients[0].Diagnostic))
	}
}

func TestBoundaryAvoidsContent(t *testing.T) {
	r := dsnCases()["failed"]
	first, err := Build(r, now, "")
	if err != nil {
		t.Fatal(err)
	}
	bnd := "--4B3F1C2D3E." // the boundary Build picks for this report
	if !bytes.Contains(first, []byte(bnd)) {
		t.Fatalf("boundary changed; fix this test:\n%s", first)
	}
	// Return a message that quotes the DSN, boundary and all.
	r2 := *r
	r2.Original = append([]byte("Subject: quoted\r\n\r\n"), first...)
	b, err := Build(&r2, now, "")
	if err != nil {
		t.Fatal(err)
	}
	p, err := Parse(b)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(p.Original, crlf(r2.Original)) {
		t.Error("returned message altered: the boundary occurs inside it")
	}
}

func TestCRLF(t *testing.T) {
	for in, want := range map[string]string{
		"":                "\r\n",
		"a":               "a\r\n",
		"a\r\n":           "a\r\n",
		"a\nb\n":          "a\r\nb\r\n",
		"a\rb":            "a\r\nb\r\n",
		"a\r\nb\n\r\nc":   "a\r\nb\r\n\r\nc\r\n",
		"a\r\r\nb":        "a\r\n\r\nb\r\n",
		"x\r\ny\r\nz\r\n": "x\r\ny\r\nz\r\n",
	} {
		if got := string(crlf([]byte(in))); got != want {
			t.Errorf("crlf(%q) = %q, want %q", in, got, want)
		}
	}
}

// TestBuildVerifyReport: a sendmail -bv report reads as Postfix's: its
// subject and text, one "<rcpt>: text" line per recipient, deliverable
// and undeliverable actions, the headers (never the body) returned.
func TestBuildVerifyReport(t *testing.T) {
	r := dsnCases()["verify"]
	r.Ret = "FULL" // a verification report returns the headers whatever was asked
	b, err := Build(r, now, "")
	if err != nil {
		t.Fatal(err)
	}
	checkWellFormed(t, b)
	s := string(b)
	for _, want := range []string{
		"\r\nSubject: Mail Delivery Status Report\r\n",
		"\r\nTo: <alice@example.com>\r\n",
		"This is the mail system at host mail.example.com.\r\n\r\nEnclosed is the mail delivery report that you requested.\r\n\r\n                   The mail system\r\n",
		"\r\n<bob@example.net>: delivery via mx.example.net[192.0.2.25]:25: 250 2.1.5 Ok\r\n",
		"\r\n<nobody@example.net>: delivery via mx.example.net[192.0.2.25]:25: host\r\n    mx.example.net[192.0.2.25] said: 550 5.1.1",
		"Final-Recipient: rfc822; bob@example.net\r\nAction: deliverable\r\nStatus: 2.1.5\r\nRemote-MTA: dns; mx.example.net\r\nDiagnostic-Code: smtp; 250 2.1.5 Ok\r\n",
		"Final-Recipient: rfc822; nobody@example.net\r\nAction: undeliverable\r\nStatus: 5.1.1\r\n",
		"Content-Description: Message Headers\r\nContent-Type: text/rfc822-headers\r\n",
		"Subject: Quarterly report\r\n",
	} {
		if !strings.Contains(s, want) {
			t.Errorf("report lacks %q:\n%s", want, s)
		}
	}
	for _, not := range []string{"the numbers are attached", "For further assistance", "Undelivered"} {
		if strings.Contains(s, not) {
			t.Errorf("report contains %q:\n%s", not, s)
		}
	}
}
