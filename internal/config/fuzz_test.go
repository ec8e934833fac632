package config

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// FuzzParse: any input either parses or yields Errors whose every entry
// names the file and a line inside it; nothing panics. Includes read
// nothing from disk here.
func FuzzParse(f *testing.F) {
	for _, seed := range []string{
		"",
		"host-name h.example\n",
		"<source 0/0>\nsmtp-service yes\n</source>\n",
		"domain-macro m a.example,b.example\n<domain $m>\nretry-after 1m,5m\n</domain>\n",
		"<virtual-mta v>\nsmtp-source-host 192.0.2.1 v.example\n<domain *>\nroute [127.0.0.1]:2599\n</domain>\n</virtual-mta>\n",
		"include x.conf\n",
		"<domain *\n</domain\n</source>\n<<>>\n",
		"smtp-max-auth-failure-rate 100/10m\nmax-message-size 10M\n",
		"<acct-file \"|cmd\">\nrecords d,b\n</acct-file>\n",
		"bounce-after 4d12h # c\n\r\n",
		"<virtual-mta a>\n<domain *>\n</global>\nspool x\n",
	} {
		f.Add(seed)
	}
	if src, err := os.ReadFile("testdata/full.conf"); err == nil {
		f.Add(string(src))
	}
	// Nothing touches the disk: a fuzzed "include /*/*" must not walk it.
	noFS := fsys{
		read:     func(string) ([]byte, error) { return nil, os.ErrNotExist },
		glob:     func(string) ([]string, error) { return nil, nil },
		hostname: testFS.hostname,
	}
	f.Fuzz(func(t *testing.T, src string) {
		c, err := parse("f.conf", []byte(src), noFS)
		if err == nil {
			if c == nil {
				t.Fatal("nil config without error")
			}
			// A valid config answers lookups without panicking.
			c.Domain("v", "a.example").Durations("retry-after")
			_ = c.Listeners()
			return
		}
		var es Errors
		if !errors.As(err, &es) || len(es) == 0 {
			t.Fatalf("error is not Errors: %v", err)
		}
		lines := strings.Count(src, "\n") + 1
		for _, e := range es {
			if filepath.Base(e.File) != "f.conf" && !strings.HasSuffix(e.File, ".conf") {
				t.Errorf("error names file %q", e.File)
			}
			if e.File == "f.conf" && (e.Line < 0 || e.Line > lines) {
				t.Errorf("line %d outside 0..%d: %s", e.Line, lines, e)
			}
		}
	})
}
