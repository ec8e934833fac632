package config

import (
	"bytes"
	"os"
	"strings"
	"testing"
)

// TestManListsEveryDirective: the generated page documents every row of
// the table and every block kind.
func TestManListsEveryDirective(t *testing.T) {
	var b bytes.Buffer
	if err := WriteMan(&b); err != nil {
		t.Fatal(err)
	}
	page := b.String()
	for _, d := range Directives {
		if !strings.Contains(page, "\n.BI "+roff(d.Name)+" ") {
			t.Errorf("sluice.conf(5) does not list %s", d.Name)
		}
	}
	for _, k := range Blocks[1:] {
		if !strings.Contains(page, "\n.SH "+roff(strings.ToUpper("<"+k.Kind+" "))) {
			t.Errorf("sluice.conf(5) has no section for <%s>", k.Kind)
		}
	}
	for _, n := range []string{"include", "domain-macro"} {
		if !strings.Contains(page, "\n.BI "+roff(n)+" ") {
			t.Errorf("sluice.conf(5) does not describe %s", n)
		}
	}
	if strings.Count(page, "\n.BI max\\-rcpt\\-per\\-message ") != 2 {
		t.Error("max-rcpt-per-message should appear under <source> and <domain>")
	}
}

// TestManInRepoIsCurrent: man/sluice.conf.5 is the generated text, so it
// cannot go stale. Regenerate with `make man` (or `go run ./cmd/sluice man
// sluice.conf > man/sluice.conf.5`).
func TestManInRepoIsCurrent(t *testing.T) {
	var b bytes.Buffer
	if err := WriteMan(&b); err != nil {
		t.Fatal(err)
	}
	inRepo, err := os.ReadFile("../../man/sluice.conf.5")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(inRepo, b.Bytes()) {
		t.Error("man/sluice.conf.5 is stale; run: go run ./cmd/sluice man sluice.conf > man/sluice.conf.5")
	}
}
