package compat

import (
	"bufio"
	"bytes"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// invocation is one row of testdata/invocations.tsv.
type invocation struct {
	name, stdin string
	args        []string
}

func loadInvocations(t *testing.T) []invocation {
	t.Helper()
	f, err := os.Open("testdata/invocations.tsv")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []invocation
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		parts := strings.SplitN(line, "\t", 3)
		for len(parts) < 3 {
			parts = append(parts, "")
		}
		out = append(out, invocation{name: parts[0], stdin: parts[1], args: shellWords(parts[2])})
	}
	return out
}

// shellWords splits the simple shell words the table uses: blanks
// separate, single quotes group.
func shellWords(s string) []string {
	var out []string
	var cur strings.Builder
	in, quoted := false, false
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '\'':
			quoted = !quoted
			in = true
		case (c == ' ' || c == '\t') && !quoted:
			if in {
				out = append(out, cur.String())
				cur.Reset()
				in = false
			}
		default:
			cur.WriteByte(c)
			in = true
		}
	}
	if in {
		out = append(out, cur.String())
	}
	return out
}

// postcatFile is what the differential test compares from a postcat dump.
type postcatFile struct {
	id, sender, fullName string
	arrival              time.Time
	rcpts                []string
	content              string // MESSAGE CONTENTS, LF line ends
}

func parsePostcat(t *testing.T, b []byte) *postcatFile {
	t.Helper()
	pf := &postcatFile{}
	section := ""
	var content strings.Builder
	for _, line := range strings.SplitAfter(string(b), "\n") {
		if strings.HasPrefix(line, "*** ") {
			f := strings.Fields(line)
			section = f[1]
			if section == "ENVELOPE" {
				pf.id = filepath.Base(f[3])
			}
			continue
		}
		switch section {
		case "MESSAGE":
			content.WriteString(line)
		case "ENVELOPE", "HEADER":
			k, v, _ := strings.Cut(strings.TrimSuffix(line, "\n"), ": ")
			v = strings.TrimSpace(v)
			switch k {
			case "sender":
				pf.sender = v
			case "sender_fullname":
				pf.fullName = v
			case "recipient":
				pf.rcpts = append(pf.rcpts, v)
			case "message_arrival_time":
				at, err := time.ParseInLocation("Mon Jan _2 15:04:05 2006", v, time.UTC)
				if err != nil {
					t.Fatalf("arrival %q: %v", v, err)
				}
				pf.arrival = at
			}
		}
	}
	pf.content = content.String()
	return pf
}

// dropReceived removes the first header field (our Received: differs from
// Postfix's on purpose: it names sluice and the login).
func dropReceived(s string) string {
	if !strings.HasPrefix(s, "Received:") {
		return s
	}
	i := strings.Index(s, "\n")
	for i >= 0 && i+1 < len(s) && (s[i+1] == ' ' || s[i+1] == '\t') {
		j := strings.Index(s[i+1:], "\n")
		if j < 0 {
			return ""
		}
		i += 1 + j
	}
	return s[i+1:]
}

// TestPostfixDifferential replays every invocation Postfix's sendmail was
// given (testdata/invocations.tsv) through sluice's sendmail logic and
// compares the exit code, envelope and message with Postfix's queue file
// (testdata/postfix/NAME.postcat). Postfix 3.7 exits 75 for usage errors
// where sluice exits 64, as current Postfix does: those match.
func TestPostfixDifferential(t *testing.T) {
	for _, inv := range loadInvocations(t) {
		t.Run(inv.name, func(t *testing.T) {
			rcb, err := os.ReadFile("testdata/postfix/" + inv.name + ".rc")
			if err != nil {
				t.Fatalf("no golden for %s (run testdata/postfix-golden.sh): %v", inv.name, err)
			}
			wantRC := strings.TrimSpace(string(rcb))
			stdin, err := os.ReadFile("testdata/stdin/" + inv.stdin)
			if err != nil {
				t.Fatal(err)
			}
			golden, gerr := os.ReadFile("testdata/postfix/" + inv.name + ".postcat")
			var pf *postcatFile
			if gerr == nil {
				pf = parsePostcat(t, golden)
			}

			code, prep := runInvocation(t, inv, stdin, pf)
			switch {
			case wantRC == "75" && code == ExitUsage:
			case wantRC != itoa(code):
				t.Fatalf("exit %d, Postfix %s", code, wantRC)
			}
			if pf == nil {
				if prep != nil {
					t.Fatalf("sluice queued a message Postfix did not")
				}
				return
			}
			if prep == nil {
				t.Fatalf("Postfix queued a message, sluice did not")
			}
			if prep.Sender != pf.sender {
				t.Errorf("sender %q, Postfix %q", prep.Sender, pf.sender)
			}
			if strings.Join(prep.Rcpts, ",") != strings.Join(pf.rcpts, ",") {
				t.Errorf("recipients %q, Postfix %q", prep.Rcpts, pf.rcpts)
			}
			got := dropReceived(strings.ReplaceAll(string(prep.Content), "\r\n", "\n"))
			want := dropReceived(pf.content)
			if got != want {
				t.Errorf("message differs\n--- sluice\n%s--- Postfix\n%s", got, want)
			}
		})
	}
}

func itoa(n int) string { return strconv.Itoa(n) }

// runInvocation does what sluice's sendmail and daemon do for inv, with
// the golden's identity (root, GECOS "root", myorigin golden.example).
func runInvocation(t *testing.T, inv invocation, stdin []byte, pf *postcatFile) (int, *Prepared) {
	t.Helper()
	si, err := ParseSendmail(CmdSendmail, inv.args)
	if err != nil {
		return ExitCode(err), nil
	}
	if si.Mode != ModeSubmit {
		if si.Mode == ModeIgnore {
			return 0, nil
		}
		t.Fatalf("mode %v not replayable", si.Mode)
	}
	content, err := ReadMessage(bytes.NewReader(stdin), si.DotEnds, 0)
	if err != nil {
		return ExitCode(err), nil
	}
	p := PrepareParams{Sender: "root", FullName: "root", Rcpts: si.Rcpts, Extract: si.Extract,
		Origin: "golden.example", Hostname: "golden.example", QueueID: "XXXXXXXXXXXXXXXX", Login: "root",
		Now: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	if si.SenderSet {
		p.Sender = si.Sender
	}
	if si.FullName != "" {
		p.FullName = si.FullName
	}
	if pf != nil {
		p.QueueID, p.Now = pf.id, pf.arrival
	}
	prep, err := Prepare(content, p)
	if err != nil {
		return ExitCode(err), nil
	}
	return 0, prep
}
