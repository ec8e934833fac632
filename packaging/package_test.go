// Package packaging holds the nfpm config, systemd unit, logrotate file and
// maintainer scripts of sluice's .deb and .rpm; its test builds both with
// `make package` and inspects them. The packages are never installed here:
// they would replace this machine's mail setup.
package packaging

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sluicemta/sluice/internal/testutil"
)

const version = "0.0.0"

// entry is one line of `dpkg-deb -c` or of rpm's file list.
type entry struct {
	mode, owner, group, target string
}

// want lists every path the packages must hold, with its mode (as ls prints
// it), owner and group, or the target of a symlink.
var want = map[string]entry{
	"/usr/sbin/sluiced":                    {mode: "-rwxr-xr-x", owner: "root", group: "root"},
	"/usr/sbin/sluice":                     {mode: "-rwxr-xr-x", owner: "root", group: "root"},
	"/usr/sbin/sendmail":                   {mode: "-rwxr-xr-x", owner: "root", group: "root"},
	"/usr/sbin/sluice-postdrop":            {mode: "-rwxr-sr-x", owner: "root", group: "sluicedrop"},
	"/usr/sbin/pmta":                       {target: "/usr/sbin/sluice"},
	"/usr/bin/mailq":                       {target: "/usr/sbin/sendmail"},
	"/usr/bin/newaliases":                  {target: "/usr/sbin/sendmail"},
	"/usr/sbin/postqueue":                  {target: "/usr/sbin/sendmail"},
	"/usr/sbin/postsuper":                  {target: "/usr/sbin/sendmail"},
	"/usr/share/man/man1/sendmail.1.gz":    {mode: "-rw-r--r--", owner: "root", group: "root"},
	"/usr/share/man/man1/mailq.1.gz":       {mode: "-rw-r--r--", owner: "root", group: "root"},
	"/usr/share/man/man1/newaliases.1.gz":  {mode: "-rw-r--r--", owner: "root", group: "root"},
	"/usr/share/man/man1/postqueue.1.gz":   {mode: "-rw-r--r--", owner: "root", group: "root"},
	"/usr/share/man/man1/postsuper.1.gz":   {mode: "-rw-r--r--", owner: "root", group: "root"},
	"/usr/share/man/man5/sluice.conf.5.gz": {mode: "-rw-r--r--", owner: "root", group: "root"},
	"/usr/share/man/man8/sluice.8.gz":      {mode: "-rw-r--r--", owner: "root", group: "root"},
	"/usr/share/man/man8/sluiced.8.gz":     {mode: "-rw-r--r--", owner: "root", group: "root"},
	"/lib/systemd/system/sluice.service":   {mode: "-rw-r--r--", owner: "root", group: "root"},
	"/etc/logrotate.d/sluice":              {mode: "-rw-r--r--", owner: "root", group: "root"},
	"/etc/pmta/config":                     {mode: "-rw-r-----", owner: "root", group: "sluice"},
	// The setgid helper runs with the caller's uid: it must traverse the
	// spool to reach the maildrop, hence 0710 with group sluicedrop.
	"/var/spool/pmta":          {mode: "drwx--x---", owner: "sluice", group: "sluicedrop"},
	"/var/spool/pmta/maildrop": {mode: "drwx-wx--T", owner: "sluice", group: "sluicedrop"},
	"/var/log/pmta":            {mode: "drwxr-x---", owner: "sluice", group: "adm"},
}

// buildPackages runs `make package` in the repository root once per test
// binary and returns the paths of the .deb and the .rpm.
func buildPackages(t *testing.T) (root, deb, rpm string) {
	t.Helper()
	testutil.NeedCommand(t, "dpkg-deb")
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	for _, b := range []string{"sluiced", "sluice", "sendmail", "sluice-postdrop"} {
		if _, err := os.Stat(filepath.Join(root, "bin", b)); err != nil {
			t.Fatalf("bin/%s is missing: run `make build` first (make test does)", b)
		}
	}
	// -o build: package the binaries make test built, never rebuild them
	// here, while other test packages may be running bin/sluiced.
	cmd := exec.Command("make", "-o", "build", "package", "PKG_VERSION="+version)
	cmd.Dir = root
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("make package: %v\n%s", err, out)
	}
	deb = filepath.Join(root, "dist", "sluice_"+version+"_amd64.deb")
	rpm = filepath.Join(root, "dist", "sluice_"+version+"_amd64.rpm")
	for _, p := range []string{deb, rpm} {
		if _, err := os.Stat(p); err != nil {
			t.Fatalf("make package wrote no %s: %v", p, err)
		}
	}
	return root, deb, rpm
}

func run(t *testing.T, name string, args ...string) string {
	t.Helper()
	var stderr bytes.Buffer
	cmd := exec.Command(name, args...)
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, stderr.String())
	}
	return string(out)
}

// parseDebList reads `dpkg-deb -c`: MODE OWNER/GROUP SIZE DATE TIME ./PATH [-> TARGET].
func parseDebList(t *testing.T, out string) map[string]entry {
	got := map[string]entry{}
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		f := strings.Fields(line)
		if len(f) < 6 {
			t.Fatalf("dpkg-deb -c: odd line %q", line)
		}
		og := strings.SplitN(f[1], "/", 2)
		e := entry{mode: f[0], owner: og[0], group: og[len(og)-1]}
		if len(f) == 8 && f[6] == "->" {
			e.target = f[7]
		}
		p := strings.TrimSuffix(strings.TrimPrefix(f[5], "."), "/")
		got[p] = e
	}
	return got
}

// rpmListFormat prints what `rpm -qlpv` does, without its truncation of
// owner and group names to eight characters.
const rpmListFormat = "[%{FILEMODES:perms} %{FILEUSERNAME} %{FILEGROUPNAME} %{FILENAMES} %{FILELINKTOS}\\n]"

// parseRPMList reads rpmListFormat: MODE OWNER GROUP PATH [TARGET].
func parseRPMList(t *testing.T, out string) map[string]entry {
	got := map[string]entry{}
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		f := strings.Fields(line)
		if len(f) < 4 {
			t.Fatalf("rpm file list: odd line %q", line)
		}
		e := entry{mode: f[0], owner: f[1], group: f[2]}
		if len(f) == 5 {
			e.target = f[4]
		}
		got[f[3]] = e
	}
	return got
}

func checkContents(t *testing.T, got map[string]entry) {
	t.Helper()
	for p, w := range want {
		g, ok := got[p]
		switch {
		case !ok:
			t.Errorf("%s: missing", p)
		case w.target != "":
			if !strings.HasPrefix(g.mode, "l") || g.target != w.target {
				t.Errorf("%s: got %s -> %q, want a symlink to %s", p, g.mode, g.target, w.target)
			}
		case g.mode != w.mode || g.owner != w.owner || g.group != w.group:
			t.Errorf("%s: got %s %s:%s, want %s %s:%s", p, g.mode, g.owner, g.group, w.mode, w.owner, w.group)
		}
	}
}

func TestPackages(t *testing.T) {
	root, deb, rpm := buildPackages(t)

	t.Run("deb contents", func(t *testing.T) {
		checkContents(t, parseDebList(t, run(t, "dpkg-deb", "-c", deb)))
	})

	t.Run("deb control", func(t *testing.T) {
		info := run(t, "dpkg-deb", "-I", deb)
		for _, line := range []string{
			"Package: sluice",
			"Version: " + version,
			"Architecture: amd64",
			"Provides: mail-transport-agent",
			"Conflicts: mail-transport-agent",
			"Replaces: mail-transport-agent",
		} {
			if !strings.Contains(info, "\n "+line+"\n") {
				t.Errorf("control lacks %q:\n%s", line, info)
			}
		}
		ctl := t.TempDir()
		run(t, "dpkg-deb", "-e", deb, ctl)
		conffiles, err := os.ReadFile(filepath.Join(ctl, "conffiles"))
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range []string{"/etc/pmta/config", "/etc/logrotate.d/sluice"} {
			if !strings.Contains(string(conffiles), f+"\n") {
				t.Errorf("conffiles lacks %s:\n%s", f, conffiles)
			}
		}
		// dpkg can only chown to accounts that exist at unpack: preinst
		// creates them, postinst re-asserts owners and modes.
		scripts := map[string][]string{
			"preinst": {"groupadd --system sluice", "groupadd --system sluicedrop", "useradd --system --gid sluice"},
			"postinst": {
				"useradd --system --gid sluice",
				"chown sluice:sluicedrop /var/spool/pmta/maildrop",
				"chmod 1730 /var/spool/pmta/maildrop",
				"chown root:sluicedrop /usr/sbin/sluice-postdrop",
				"chmod 2755 /usr/sbin/sluice-postdrop",
				"chown sluice:adm /var/log/pmta",
			},
			"prerm": {"systemctl stop sluice.service"},
		}
		for name, needles := range scripts {
			body, err := os.ReadFile(filepath.Join(ctl, name))
			if err != nil {
				t.Fatalf("%s: %v", name, err)
			}
			for _, n := range needles {
				if !strings.Contains(string(body), n) {
					t.Errorf("%s lacks %q", name, n)
				}
			}
			// The chmod of the setgid helper must follow its chown (chown clears it).
			if name == "postinst" {
				c := strings.Index(string(body), "chown root:sluicedrop /usr/sbin/sluice-postdrop")
				m := strings.Index(string(body), "chmod 2755 /usr/sbin/sluice-postdrop")
				if c < 0 || m < c {
					t.Errorf("postinst: chmod 2755 of sluice-postdrop must come after its chown")
				}
			}
		}
	})

	t.Run("deb files", func(t *testing.T) {
		dir := t.TempDir()
		run(t, "dpkg-deb", "-x", deb, dir)

		unit, err := os.ReadFile(filepath.Join(dir, "lib/systemd/system/sluice.service"))
		if err != nil {
			t.Fatal(err)
		}
		lines := map[string]bool{}
		for _, l := range strings.Split(string(unit), "\n") {
			lines[strings.TrimSpace(l)] = true
		}
		for _, l := range []string{
			"Type=simple",
			"ExecStart=/usr/sbin/sluiced --config /etc/pmta/config",
			"ExecReload=/bin/kill -HUP $MAINPID",
			"User=sluice",
			"AmbientCapabilities=CAP_NET_BIND_SERVICE",
			"NoNewPrivileges=yes",
			"ProtectSystem=strict",
			"ReadWritePaths=/var/spool/pmta /var/log/pmta /run/sluice",
			"RuntimeDirectory=sluice",
			"WantedBy=multi-user.target",
		} {
			if !lines[l] {
				t.Errorf("sluice.service lacks the line %q", l)
			}
		}

		lr, err := os.ReadFile(filepath.Join(dir, "etc/logrotate.d/sluice"))
		if err != nil {
			t.Fatal(err)
		}
		for _, n := range []string{"/var/log/pmta/*.log", "postrotate", "/usr/sbin/sluice reopen-logs"} {
			if !strings.Contains(string(lr), n) {
				t.Errorf("logrotate file lacks %q", n)
			}
		}

		man, err := os.ReadFile(filepath.Join(dir, "usr/share/man/man5/sluice.conf.5.gz"))
		if err != nil {
			t.Fatal(err)
		}
		if len(man) < 2 || man[0] != 0x1f || man[1] != 0x8b {
			t.Errorf("sluice.conf.5.gz is not gzip")
		}

		// The packaged config must be valid and production-shaped.
		conf := filepath.Join(dir, "etc/pmta/config")
		cmd := exec.Command(filepath.Join(root, "bin", "sluiced"), "--check", conf)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("sluiced --check on the packaged config: %v\n%s", err, out)
		}
		body, err := os.ReadFile(conf)
		if err != nil {
			t.Fatal(err)
		}
		for _, l := range []string{
			"spool /var/spool/pmta",
			"maildrop /var/spool/pmta/maildrop",
			"log-file /var/log/pmta/",
			"control-socket /run/sluice/control.sock",
			"run-as-user sluice",
		} {
			if !strings.Contains(string(body), "\n"+l) {
				t.Errorf("packaged config lacks %q", l)
			}
		}
	})

	t.Run("rpm", func(t *testing.T) {
		testutil.NeedCommand(t, "rpm")
		checkContents(t, parseRPMList(t, run(t, "rpm", "-qp", "--queryformat", rpmListFormat, rpm)))
		provides := run(t, "rpm", "-qp", "--provides", rpm)
		for _, p := range []string{"MTA", "smtpdaemon"} {
			if !strings.Contains("\n"+provides, "\n"+p+"\n") {
				t.Errorf("rpm provides lacks %s:\n%s", p, provides)
			}
		}
		cfg := run(t, "rpm", "-qpc", rpm)
		if !strings.Contains(cfg, "/etc/pmta/config\n") {
			t.Errorf("rpm config files lack /etc/pmta/config:\n%s", cfg)
		}
		scripts := run(t, "rpm", "-qp", "--scripts", rpm)
		for _, n := range []string{"useradd --system", "chmod 1730 /var/spool/pmta/maildrop", "chmod 2755 /usr/sbin/sluice-postdrop"} {
			if !strings.Contains(scripts, n) {
				t.Errorf("rpm scripts lack %q", n)
			}
		}
	})
}
