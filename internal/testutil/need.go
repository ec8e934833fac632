// Package testutil holds helpers every test in sluice shares.
package testutil

import (
	"os"
	"os/exec"
	"testing"
)

// InCI reports whether the tests run under CI, where a missing test peer is
// a failure rather than a reason to skip.
func InCI() bool { return os.Getenv("CI") == "true" }

// NeedCommand returns the path of an external program a test talks to
// (swaks, smtp-sink, opendkim, ...). Outside CI a missing program skips the
// test; under CI it fails it, so a broken install never hides as a skip.
func NeedCommand(t testing.TB, name string) string {
	t.Helper()
	path, err := exec.LookPath(name)
	if err == nil {
		return path
	}
	for _, dir := range []string{"/usr/sbin", "/usr/bin", "/usr/lib/postfix/sbin"} {
		p := dir + "/" + name
		if st, err := os.Stat(p); err == nil && st.Mode()&0o111 != 0 {
			return p
		}
	}
	if InCI() {
		t.Fatalf("test peer %q is not installed (run `make test-peers`)", name)
	}
	t.Skipf("test peer %q is not installed; `make test-peers` installs it", name)
	return ""
}

// NeedPython returns a python3 that has the Debian python3-* modules
// (python3-dkim, python3-dnspython): /usr/bin/python3, not a pyenv one.
func NeedPython(t testing.TB) string {
	t.Helper()
	const p = "/usr/bin/python3"
	if _, err := os.Stat(p); err != nil {
		if InCI() {
			t.Fatalf("%s is missing", p)
		}
		t.Skipf("%s is missing", p)
	}
	return p
}
