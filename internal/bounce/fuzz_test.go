package bounce

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// FuzzParse feeds hostile DSNs to Parse: it must not panic, must keep its
// caps, and whatever it returns must be buildable into a DSN that parses
// back to as many recipients.
func FuzzParse(f *testing.F) {
	files, _ := filepath.Glob(filepath.Join("testdata", "*.eml"))
	for _, name := range files {
		b, err := os.ReadFile(name)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte("Content-Type: message/delivery-status\r\n\r\nFinal-Recipient: rfc822; a@b\r\nAction: failed\r\nStatus: 5.0.0\r\n"))
	f.Fuzz(func(t *testing.T, msg []byte) {
		r, err := Parse(msg)
		if err != nil {
			return
		}
		if len(r.Recipients) > maxRecipients {
			t.Fatalf("%d recipients kept", len(r.Recipients))
		}
		for _, rc := range r.Recipients {
			if rc.Status != "" && !ValidStatus(rc.Status) {
				t.Fatalf("invalid status %q returned", rc.Status)
			}
		}
		r.Postmaster = "postmaster@example.com"
		out, err := Build(r, time.Unix(1764410400, 0), "")
		if err != nil {
			return // e.g. an action Build does not know
		}
		back, err := Parse(out)
		if err != nil {
			t.Fatalf("Build output does not parse: %v\n%s", err, out)
		}
		if len(back.Recipients) != len(r.Recipients) {
			t.Fatalf("recipients %d -> %d", len(r.Recipients), len(back.Recipients))
		}
	})
}

// FuzzBuild builds DSNs from fuzzed fields: whenever Build accepts them the
// output must be well-formed and parse back to the same recipient, action,
// status, addresses, diagnostic and returned content.
func FuzzBuild(f *testing.F) {
	for _, r := range dsnCases() {
		rc := r.Recipients[0]
		f.Add(r.ReportingMTA, r.QueueID, r.EnvID, r.Sender, rc.Final, rc.Original, rc.Action, rc.Status,
			rc.RemoteMTA, rc.Diagnostic, r.Original, r.Ret, r.SMTPUTF8, r.MaxReturn)
	}
	f.Add("h", "", "", "a@b", "utf-8; j\\x{FC}rgen@b", "", "delayed", "4.4.7", "", "", []byte("x"), "", false, 0)
	f.Add("h", "--", "", "<>", "x@y", "", "expanded", "2.0.0", "dns; a", "--h", []byte("\n\n--\r"), "HDRS", true, 1)
	f.Add("h", "Q", "", "a@b", "x@y", "", "Undeliverable", "4.4.1", "", "X-Sluice; 451 4.4.1 connect to x[1.2.3.4]:25: refused", []byte("S: x\r\n\r\nbody\r\n"), "FULL", false, 0)
	f.Fuzz(func(t *testing.T, host, qid, envid, sender, final, orig, action, status, remote, diag string,
		original []byte, ret string, global bool, maxReturn int) {
		r := &Report{ReportingMTA: host, QueueID: qid, EnvID: envid, Sender: sender, Postmaster: "postmaster",
			Ret: ret, Original: original, SMTPUTF8: global, MaxReturn: maxReturn,
			Recipients: []RcptReport{{Final: final, Original: orig, Action: action, Status: status,
				RemoteMTA: remote, Diagnostic: diag}}}
		now := time.Unix(1764410400, 0)
		b, err := Build(r, now, "")
		if err != nil {
			return
		}
		noContent := *r
		noContent.Original = nil
		bare, err := Build(&noContent, now, "")
		if err != nil {
			t.Fatalf("Build fails without content only: %v", err)
		}
		checkWellFormed(t, bare)
		if !bytes.HasSuffix(b, []byte("\r\n")) || bytes.Contains(bytes.ReplaceAll(b, []byte("\r\n"), nil), []byte("\n")) {
			t.Fatalf("bare LF in output:\n%q", b)
		}
		p, err := Parse(b)
		if err != nil {
			t.Fatalf("Build output does not parse: %v\n%s", err, b)
		}
		if len(p.Recipients) != 1 {
			t.Fatalf("%d recipients parsed back:\n%s", len(p.Recipients), b)
		}
		g := p.Recipients[0]
		if g.Action != strings.ToLower(action) || g.Status != status || p.SMTPUTF8 != global {
			t.Fatalf("got action %q status %q global %v", g.Action, g.Status, p.SMTPUTF8)
		}
		if want := parseAddr(addrField(clean(final, true), global)); g.Final != want {
			t.Fatalf("final %q, want %q", g.Final, want)
		}
		if o := clean(orig, true); o != "" {
			if want := parseAddr(addrField(o, global)); g.Original != want {
				t.Fatalf("original %q, want %q", g.Original, want)
			}
		}
		if d := clean(diag, global); d != "" {
			if typ, _ := splitType(d); typ == "" {
				d = "smtp; " + d
			}
			if g.Diagnostic != d {
				t.Fatalf("diagnostic %q, want %q", g.Diagnostic, d)
			}
		}
		if len(original) > 0 {
			w := expectParsed(r)
			if p.Ret != w.Ret || !bytes.Equal(p.Original, w.Original) {
				t.Fatalf("returned %s %q, want %s %q", p.Ret, p.Original, w.Ret, w.Original)
			}
		}
	})
}
