package milter

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/sluicemta/sluice/internal/testutil"
)

// startOpenDKIM runs a real OpenDKIM in signing mode on a unix socket in
// a temp dir and returns the socket and the DNS TXT record of its key.
func startOpenDKIM(t *testing.T, canon string) (socket, txt string) {
	t.Helper()
	bin := testutil.NeedCommand(t, "opendkim")
	genkey := testutil.NeedCommand(t, "opendkim-genkey")
	dir := t.TempDir()
	if out, err := exec.Command(genkey, "-D", dir, "-d", "example.org", "-s", "sel", "-b", "1024").CombinedOutput(); err != nil {
		t.Fatalf("opendkim-genkey: %v\n%s", err, out)
	}
	rec, err := os.ReadFile(filepath.Join(dir, "sel.txt"))
	if err != nil {
		t.Fatal(err)
	}
	// sel._domainkey IN TXT ( "v=DKIM1; ..." "p=..." ) ; comment
	for _, m := range regexp.MustCompile(`"([^"]*)"`).FindAllStringSubmatch(string(rec), -1) {
		txt += m[1]
	}
	sock := filepath.Join(dir, "odk.sock")
	conf := filepath.Join(dir, "opendkim.conf")
	err = os.WriteFile(conf, []byte(strings.Join([]string{
		"Domain example.org",
		"Selector sel",
		"KeyFile " + filepath.Join(dir, "sel.private"),
		"Socket local:" + sock,
		"Mode s",
		"Canonicalization " + canon,
		"Syslog no",
		"InternalHosts 127.0.0.1",
		"RequireSafeKeys no", // the temp dir lives under world-writable /tmp
		"PidFile " + filepath.Join(dir, "pid"),
		"",
	}, "\n")), 0o644)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "-x", conf, "-f")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
	})
	for i := 0; ; i++ {
		if _, err := os.Stat(sock); err == nil {
			break
		}
		if i > 100 {
			t.Fatalf("opendkim did not create %s: %s", sock, stderr.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	return "unix:" + sock, txt
}

// dkimVerify checks msg with python3-dkim, answering the key lookup itself.
func dkimVerify(t *testing.T, msg []byte, txt string) bool {
	t.Helper()
	py := testutil.NeedPython(t)
	f := filepath.Join(t.TempDir(), "msg.eml")
	if err := os.WriteFile(f, msg, 0o644); err != nil {
		t.Fatal(err)
	}
	script := `
import sys, dkim
txt = sys.argv[2].encode()
def dnsfunc(name, timeout=5):
    return txt if name in (b"sel._domainkey.example.org.", b"sel._domainkey.example.org") else None
ok = dkim.verify(open(sys.argv[1], "rb").read(), dnsfunc=dnsfunc)
print("PASS" if ok else "FAIL")
`
	out, err := exec.Command(py, "-c", script, f, txt).CombinedOutput()
	if err != nil {
		t.Fatalf("python3 dkim: %v\n%s", err, out)
	}
	return strings.TrimSpace(string(out)) == "PASS"
}

func render(h []HeaderField, body []byte) []byte {
	var b bytes.Buffer
	for _, f := range h {
		b.WriteString(f.Name + ":" + f.Value + "\r\n")
	}
	b.WriteString("\r\n")
	b.Write(body)
	return b.Bytes()
}

var dkimHeader = []HeaderField{
	{Name: "Received", Value: " from localhost by mta.test (sluice) id Q1; Sun, 29 Nov 2026 10:00:00 +0000", Hidden: true},
	{Name: "From", Value: " Alice <alice@example.org>"},
	{Name: "To", Value: " bob@example.net"},
	// Folded, with runs of spaces and a tab: simple canonicalisation signs these bytes.
	{Name: "Subject", Value: " a  folded\r\n\tsubject   line "},
	{Name: "Date", Value: " Sun, 29 Nov 2026 10:00:00 +0000"},
	{Name: "Message-ID", Value: " <q1@example.org>"},
}

const dkimBody = "Hello Bob,\r\n\r\ntrailing spaces here   \r\n.dot line\r\n"

func TestOpenDKIMSigns(t *testing.T) {
	for _, canon := range []string{"simple/simple", "relaxed/relaxed"} {
		t.Run(canon, func(t *testing.T) {
			sock, txt := startOpenDKIM(t, canon)
			c := mustChain(t, Config{Name: "opendkim", Socket: sock, CommandTimeout: 10 * time.Second, ContentTimeout: 10 * time.Second})
			ctx := context.Background()
			res, err := c.Filter(ctx, LocalConnInfo(), "alice@example.org", []Recipient{{Addr: "bob@example.net"}},
				dkimHeader, strings.NewReader(dkimBody))
			if err != nil {
				t.Fatal(err)
			}
			if res.Decision.Verdict != Continue {
				t.Fatalf("decision %+v", res.Decision)
			}
			var sig *HeaderField
			for i := range res.Header {
				if strings.EqualFold(res.Header[i].Name, "DKIM-Signature") {
					sig = &res.Header[i]
				}
			}
			if sig == nil {
				t.Fatalf("no DKIM-Signature added: %+v", res.Header)
			}
			if !strings.Contains(sig.Value, "c="+canon) && canon != "simple/simple" {
				t.Errorf("signature %q lacks c=%s", sig.Value, canon)
			}
			msg := render(res.Header, []byte(dkimBody))
			t.Logf("signed:\n%s", msg)
			if !dkimVerify(t, msg, txt) {
				t.Fatalf("signature does not verify:\n%s", msg)
			}
			// Control: the verifier does notice a changed header, so the
			// pass above means the milter saw the raw bytes we deliver.
			if canon == "simple/simple" {
				tampered := bytes.Replace(msg, []byte("a  folded\r\n\tsubject"), []byte("a folded\r\n\tsubject"), 1)
				if dkimVerify(t, tampered, txt) {
					t.Fatal("tampered message verifies; the check proves nothing")
				}
			}
		})
	}
}

// TestOpenDKIMOverSMTPSession signs two messages in one SMTP session, the
// second after an RSET, over one milter connection.
func TestOpenDKIMOverSMTPSession(t *testing.T) {
	sock, txt := startOpenDKIM(t, "simple/simple")
	c := mustChain(t, Config{Name: "opendkim", Socket: sock, CommandTimeout: 10 * time.Second, ContentTimeout: 10 * time.Second})
	s, d := c.Begin(context.Background(), ConnInfo{Hostname: "localhost", Addr: "127.0.0.1", Port: 40000, Helo: "client.test"})
	defer s.Close()
	if d.Verdict != Continue {
		t.Fatal(d)
	}
	for i, abortFirst := range []bool{false, true} {
		if abortFirst {
			s.Mail("x@example.org", nil)
			s.Abort() // RSET
		}
		s.SetMacro("i", "Q"+string(rune('1'+i)))
		if d := s.Mail("alice@example.org", []string{"BODY=8BITMIME"}); d.Verdict != Continue {
			t.Fatal(d)
		}
		if d := s.Rcpt("bob@example.net", nil); d.Verdict != Continue {
			t.Fatal(d)
		}
		if d := s.Data(); d.Verdict != Continue {
			t.Fatal(d)
		}
		res, err := s.Message(dkimHeader, strings.NewReader(dkimBody))
		if err != nil || res.Decision.Verdict != Continue {
			t.Fatal(res.Decision, err)
		}
		if !dkimVerify(t, render(res.Header, []byte(dkimBody)), txt) {
			t.Fatalf("message %d: signature does not verify", i+1)
		}
	}
}
