package compat

import (
	"os"
	"reflect"
	"strings"
	"testing"
)

func TestParsePostqueue(t *testing.T) {
	tests := []struct {
		args string
		mode PostqueueMode
		arg  string
		bad  bool
		frag string // expected in the error; default the usage text
	}{
		{args: "-p", mode: PostqueueList},
		{args: "-j", mode: PostqueueJSON},
		{args: "-f", mode: PostqueueFlush},
		{args: "-i|4jckGV1dtNz1SGLS", mode: PostqueueID, arg: "4jckGV1dtNz1SGLS"},
		{args: "-sexample.com", mode: PostqueueSite, arg: "example.com"},
		{args: "-c|/etc/pmta|-p", mode: PostqueueList},
		{args: "", bad: true},
		{args: "-p|-j", bad: true},
		{args: "-x", bad: true},
		{args: "-i", bad: true},
		{args: "-i|../etc", bad: true, frag: "Cannot flush queue ID - invalid name"},
		{args: "-p|extra", bad: true},
	}
	for _, tt := range tests {
		var args []string
		if tt.args != "" {
			args = strings.Split(tt.args, "|")
		}
		pa, err := ParsePostqueue(args)
		if tt.bad {
			frag := tt.frag
			if frag == "" {
				frag = PostqueueUsage
			}
			if ExitCode(err) != ExitUsage || !strings.Contains(err.Error(), frag) {
				t.Errorf("%q: err %v, want usage", tt.args, err)
			}
			continue
		}
		if err != nil || pa.Mode != tt.mode || pa.Arg != tt.arg {
			t.Errorf("%q: got %+v, %v", tt.args, pa, err)
		}
	}
}

func TestParsePostsuper(t *testing.T) {
	id1, id2 := "4jckGV1dtNz1SGLS", "4jckJg6hlRz1SH1R"
	pa, err := ParsePostsuper([]string{"-d", id1, "-h" + id2, "-d", "ALL", "deferred", "hold"})
	if err != nil {
		t.Fatal(err)
	}
	want := []PostsuperOp{{ActDelete, []string{id1}}, {ActHold, []string{id2}}, {ActDelete, []string{"ALL"}}}
	if !reflect.DeepEqual(pa.Ops, want) || !reflect.DeepEqual(pa.Queues, []string{"deferred", "hold"}) {
		t.Fatalf("got %+v", pa)
	}
	if !pa.Ops[2].All() || pa.Ops[0].All() {
		t.Error("All()")
	}

	pa, err = ParsePostsuper([]string{"-r", "-"})
	if err != nil || !pa.NeedsStdin() {
		t.Fatalf("stdin: %+v %v", pa, err)
	}
	if err := pa.ExpandStdin(strings.NewReader(id1 + "*  123 Sun ...\n\n" + id2 + "\n")); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(pa.Ops[0].IDs, []string{id1, id2}) {
		t.Fatalf("stdin ids %q", pa.Ops[0].IDs)
	}
	pa, _ = ParsePostsuper([]string{"-d", "-"})
	if err := pa.ExpandStdin(strings.NewReader("../../etc/passwd\n")); ExitCode(err) != ExitUsage {
		t.Fatalf("bad stdin id accepted: %v", err)
	}

	pa, err = ParsePostsuper([]string{"-f", id1})
	if err != nil || len(pa.Ops) != 2 || pa.Ops[0].Action != ActExpire || pa.Ops[1].Action != ActRelease {
		t.Fatalf("-f: %+v %v", pa, err)
	}

	for _, bad := range [][]string{{"-d"}, {"-d", "../x"}, {"-x"}, {"-d", id1, "nosuchqueue"}, {"-d", "all"}} {
		if _, err := ParsePostsuper(bad); ExitCode(err) != ExitUsage {
			t.Errorf("%q: err %v, want usage", bad, err)
		}
	}
}

// TestPostsuperLinesMatchPostfix compares the lines with those a real
// postsuper printed (testdata/postfix/postsuper-*.txt).
func TestPostsuperLinesMatchPostfix(t *testing.T) {
	read := func(name string) string {
		b, err := os.ReadFile("testdata/postfix/" + name)
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	hold := strings.Fields(read("postsuper-h.txt"))[1]
	hold = strings.TrimSuffix(hold, ":")
	line := func(s string) string { return "postsuper: " + s + "\n" }
	if got, want := line(hold+": "+ActHold.Done())+line(ActHold.Total(1)), read("postsuper-h.txt"); got != want {
		t.Errorf("-h: got %q want %q", got, want)
	}
	if got, want := line(hold+": "+ActRelease.Done())+line(ActRelease.Total(1)), read("postsuper-H.txt"); got != want {
		t.Errorf("-H: got %q want %q", got, want)
	}
	if got, want := line(ActDelete.Total(0)), read("postsuper-d-missing.txt"); got != want {
		t.Errorf("-d missing: got %q want %q", got, want)
	}
	// -d ALL deleted every message of the listing golden.
	if got := line(ActDelete.Total(len(loadPostfixQueue(t)))); got != read("postsuper-d-all.txt") {
		t.Errorf("-d ALL: got %q", got)
	}
	if ActRequeue.Total(2) != "Requeued: 2 messages" || ActDelete.Done() != "removed" || ActExpire.Total(1) != "Force-expired: 1 message" {
		t.Error("requeue/delete wording")
	}
}
