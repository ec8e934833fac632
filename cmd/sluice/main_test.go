package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sluicemta/sluice/internal/config"
	"golang.org/x/crypto/bcrypt"
)

func runCLI(t *testing.T, stdin string, args ...string) (int, string, string) {
	t.Helper()
	var out, errb bytes.Buffer
	rc := run(args, strings.NewReader(stdin), &out, &errb)
	return rc, out.String(), errb.String()
}

func TestCheckConfig(t *testing.T) {
	d := t.TempDir()
	good := filepath.Join(d, "good.conf")
	bad := filepath.Join(d, "bad.conf")
	for p, src := range map[string]string{
		good: "host-name h.example\n",
		bad:  "host-name h.example\nsync-msg-create no\nhttp-mgmt-port 8080\n",
	} {
		if err := os.WriteFile(p, []byte(src), 0o644); err != nil {
			t.Fatal(err)
		}
	}

	rc, out, errs := runCLI(t, "", "check", "config", good)
	if rc != 0 || out != good+": OK\n" || errs != "" {
		t.Errorf("good: rc=%d out=%q err=%q", rc, out, errs)
	}
	rc, out, errs = runCLI(t, "", "check", "config", bad)
	want := bad + ":2: sync-msg-create no is refused"
	if rc != 78 || out != "" || !strings.HasPrefix(errs, want) ||
		!strings.Contains(errs, bad+":3: PowerMTA directive http-mgmt-port is not supported by sluice\n") {
		t.Errorf("bad: rc=%d out=%q err=%q", rc, out, errs)
	}
	// The file comes from --config, then $SLUICE_CONFIG.
	if rc, _, _ := runCLI(t, "", "--config", good, "check", "config"); rc != 0 {
		t.Errorf("--config good: rc=%d", rc)
	}
	t.Setenv("SLUICE_CONFIG", bad)
	if rc, _, _ := runCLI(t, "", "check", "config"); rc != 78 {
		t.Errorf("SLUICE_CONFIG bad: rc=%d", rc)
	}
	if rc, _, _ := runCLI(t, "", "check", "config", "a", "b"); rc != exitUsage {
		t.Errorf("two files: rc=%d", rc)
	}
}

func TestMan(t *testing.T) {
	rc, out, _ := runCLI(t, "", "man", "sluice.conf")
	var want bytes.Buffer
	if err := config.WriteMan(&want); err != nil {
		t.Fatal(err)
	}
	if rc != 0 || out != want.String() {
		t.Errorf("rc=%d, output differs from config.WriteMan", rc)
	}
}

func TestHashPassword(t *testing.T) {
	rc, out, errs := runCLI(t, "s3cret pass\n", "hash-password")
	if rc != 0 {
		t.Fatalf("rc=%d err=%q", rc, errs)
	}
	h := strings.TrimSpace(out)
	if err := bcrypt.CompareHashAndPassword([]byte(h), []byte("s3cret pass")); err != nil {
		t.Errorf("hash %q does not match: %v", h, err)
	}
	// The hash is accepted by the config it is meant for.
	src := "host-name h.example\n<smtp-user u>\npassword " + h + "\n</smtp-user>\n"
	if _, err := config.Parse("t.conf", []byte(src)); err != nil {
		t.Errorf("config refuses the hash: %v", err)
	}
	if rc, _, _ := runCLI(t, "", "hash-password"); rc != exitData {
		t.Errorf("empty password: rc=%d", rc)
	}
}

func TestDispatch(t *testing.T) {
	if rc, _, errs := runCLI(t, ""); rc != exitUsage || !strings.Contains(errs, "check config [FILE]") {
		t.Errorf("no args: rc=%d err=%q", rc, errs)
	}
	if rc, _, errs := runCLI(t, "", "frobnicate"); rc != exitUsage || !strings.Contains(errs, `unknown command "frobnicate"`) {
		t.Errorf("unknown: rc=%d err=%q", rc, errs)
	}
	if rc, _, _ := runCLI(t, "", "check"); rc != exitUsage {
		t.Errorf("partial verb: rc=%d", rc)
	}
	if rc, _, _ := runCLI(t, "", "--bogus"); rc != exitUsage {
		t.Errorf("bad flag: rc=%d", rc)
	}
}
