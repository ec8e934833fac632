package daemon

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/sluicemta/sluice/internal/config"
	"github.com/sluicemta/sluice/internal/smtpd"
	"github.com/sluicemta/sluice/internal/testutil"
	"github.com/sluicemta/sluice/milter"
	"github.com/sluicemta/sluice/spool"
)

func parse(t *testing.T, src string) *config.Config {
	t.Helper()
	cfg, err := config.Parse("t.conf", []byte("host-name mx.test\n"+src))
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

// The config's macro defaults are exactly Postfix's (milter.DefaultMacros).
func TestMilterConfigDefaults(t *testing.T) {
	cfg := parse(t, "<milter m>\n socket unix:/x\n</milter>\n")
	mc, err := milterConfig(cfg.Milter("m"))
	if err != nil {
		t.Fatal(err)
	}
	want := milter.DefaultMacros()
	if len(mc.Macros) != len(want) {
		t.Fatalf("%d stages, want %d", len(mc.Macros), len(want))
	}
	for st, names := range want {
		if !slices.Equal(mc.Macros[st], names) {
			t.Errorf("%v macros %q, want %q", st, mc.Macros[st], names)
		}
	}
	if mc.DefaultAction != milter.ActionTempfail || mc.ConnectTimeout != milter.DefaultConnectTimeout ||
		mc.CommandTimeout != milter.DefaultCommandTimeout || mc.ContentTimeout != milter.DefaultContentTimeout || mc.Protocol != 6 {
		t.Errorf("config %+v", mc)
	}
}

func TestMilterConfigValues(t *testing.T) {
	cfg := parse(t, `<milter m>
 socket inet:127.0.0.1:8891
 default-action quarantine
 connect-timeout 1s
 command-timeout 2s
 content-timeout 3s
 protocol 2
 connect-macros none
 eom-macros i,{msg_id}
</milter>
`)
	mc, err := milterConfig(cfg.Milter("m"))
	if err != nil {
		t.Fatal(err)
	}
	if mc.Socket != "inet:127.0.0.1:8891" || mc.DefaultAction != milter.ActionQuarantine || mc.ConnectTimeout != time.Second ||
		mc.CommandTimeout != 2*time.Second || mc.ContentTimeout != 3*time.Second || mc.Protocol != 2 {
		t.Errorf("config %+v", mc)
	}
	if l := mc.Macros[milter.StageConnect]; l == nil || len(l) != 0 {
		t.Errorf("connect macros %q, want an empty (not default) list", l)
	}
	if l := mc.Macros[milter.StageEOM]; !slices.Equal(l, []string{"i", "{msg_id}"}) {
		t.Errorf("eom macros %q", l)
	}
	if err := checkMilters(cfg); err != nil {
		t.Error(err)
	}
	chains := newMilterChains(cfg, nil)
	c1, err := chains.chain([]string{"m"})
	if err != nil || c1 == nil || c1.Len() != 1 {
		t.Fatalf("chain %v %v", c1, err)
	}
	if c2, _ := chains.chain([]string{"m"}); c2 != c1 {
		t.Error("chain not reused")
	}
	if c, err := chains.chain(nil); c != nil || err != nil {
		t.Errorf("empty chain %v %v", c, err)
	}
	if _, err := chains.chain([]string{"ghost"}); err == nil {
		t.Error("unknown milter accepted")
	}
}

func TestFilterResultMapping(t *testing.T) {
	res := milter.Result{
		Decision:   milter.Decision{Verdict: milter.Shutdown, Code: 421, Enhanced: "4.7.0", Text: "bye"},
		Quarantine: "q",
		Header:     []milter.HeaderField{{Name: "Received", Value: " x", Hidden: true}, {Name: "A", Value: " 1"}},
		Recipients: []milter.Recipient{{Addr: "a@x.test"}},
		Deleted:    []string{"b@x.test"},
	}
	fr := filterResult(res)
	if fr.Reply.Code != 421 || fr.Hold != "q" || !fr.RecipientsChanged || len(fr.Recipients) != 1 || !fr.Header[0].Hidden || fr.Header[1].Name != "A" {
		t.Errorf("%+v", fr)
	}
	if r := filterReply(milter.Decision{Verdict: milter.Discard}); r.Code != 0 {
		t.Errorf("discard as a command reply: %+v", r)
	}
	if r := filterReply(milter.Decision{Verdict: milter.Tempfail, Code: 451, Enhanced: "4.7.1", Text: "t"}); r.Code != 451 || r.Enhanced != "4.7.1" {
		t.Errorf("tempfail %+v", r)
	}
}

// TestFilterLocalOpenDKIM runs a sendmail-style message through a real
// OpenDKIM as a non-smtpd milter and checks the signature.
func TestFilterLocalOpenDKIM(t *testing.T) {
	sock, txt := startOpenDKIM(t)
	cfg := parse(t, "<milter odk>\n socket "+sock+"\n command-timeout 10s\n content-timeout 10s\n</milter>\nnon-smtpd-milters odk\n")
	ch, err := newMilterChains(cfg, nil).chain(cfg.Global().Strings("non-smtpd-milters"))
	if err != nil {
		t.Fatal(err)
	}
	recv := "Received: by mx.test (sluice, from userid 1000)\r\n\tid Q1; Sun, 29 Nov 2026 10:00:00 +0000\r\n"
	msg := recv + "From: Alice <alice@example.org>\r\nTo: bob@example.net\r\nSubject: a  local\r\n\tmessage\r\nDate: Sun, 29 Nov 2026 10:00:00 +0000\r\n\r\nfrom cron\r\n"
	in := LocalFiltered{Sender: "alice@example.org", Recipients: []spool.Recipient{{Addr: "bob@example.net", Notify: spool.Notify(smtpd.NotifyFailure)}}, Content: []byte(msg)}
	out, err := filterLocal(context.Background(), ch, "mx.test", "Q1", in, true)
	if err != nil {
		t.Fatal(err)
	}
	if out.Reply.Code != 0 || out.Discard || out.Hold != "" || out.Sender != "alice@example.org" || !slices.Equal(out.Recipients, in.Recipients) {
		t.Fatalf("result %+v", out)
	}
	if !bytes.Contains(out.Content, []byte("DKIM-Signature:")) || !bytes.Contains(out.Content, []byte(recv)) {
		t.Fatalf("content:\n%s", out.Content)
	}
	if !dkimVerify(t, out.Content, txt) {
		t.Fatalf("signature does not verify:\n%s", out.Content)
	}
	if dkimVerify(t, bytes.Replace(out.Content, []byte("a  local"), []byte("a local"), 1), txt) {
		t.Fatal("tampered message verifies")
	}
	// No chain: the message passes unchanged.
	if same, err := filterLocal(context.Background(), nil, "mx.test", "Q2", in, true); err != nil || !bytes.Equal(same.Content, in.Content) {
		t.Fatalf("without milters: %v", err)
	}
}

func startOpenDKIM(t *testing.T) (socket, txt string) {
	t.Helper()
	bin := testutil.NeedCommand(t, "opendkim")
	genkey := testutil.NeedCommand(t, "opendkim-genkey")
	dir, err := os.MkdirTemp("", "odk")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if out, err := exec.Command(genkey, "-D", dir, "-d", "example.org", "-s", "sel", "-b", "1024").CombinedOutput(); err != nil {
		t.Fatalf("opendkim-genkey: %v\n%s", err, out)
	}
	rec, err := os.ReadFile(filepath.Join(dir, "sel.txt"))
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range regexp.MustCompile(`"([^"]*)"`).FindAllStringSubmatch(string(rec), -1) {
		txt += m[1]
	}
	sock := filepath.Join(dir, "odk.sock")
	conf := filepath.Join(dir, "opendkim.conf")
	if err := os.WriteFile(conf, []byte(strings.Join([]string{
		"Domain example.org", "Selector sel", "KeyFile " + filepath.Join(dir, "sel.private"),
		"Socket local:" + sock, "Mode s", "Canonicalization simple/simple", "Syslog no",
		"InternalHosts 127.0.0.1", "RequireSafeKeys no", "PidFile " + filepath.Join(dir, "pid"), "",
	}, "\n")), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "-x", conf, "-f")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	for i := 0; ; i++ {
		if _, err := os.Stat(sock); err == nil {
			return "unix:" + sock, txt
		}
		if i > 100 {
			t.Fatalf("opendkim did not create %s: %s", sock, stderr.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

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
print("PASS" if dkim.verify(open(sys.argv[1], "rb").read(), dnsfunc=dnsfunc) else "FAIL")
`
	out, err := exec.Command(py, "-c", script, f, txt).CombinedOutput()
	if err != nil {
		t.Fatalf("python3 dkim: %v\n%s", err, out)
	}
	return strings.TrimSpace(string(out)) == "PASS"
}
