package daemon

import (
	"bytes"
	"context"
	"slices"
	"testing"
	"time"

	"github.com/sluicemta/sluice/internal/config"
	"github.com/sluicemta/sluice/internal/smtpd"
	"github.com/sluicemta/sluice/internal/testutil/milterpeers"
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
	sock, key := milterpeers.StartOpenDKIM(t, milterpeers.OpenDKIMOptions{})
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
	if !milterpeers.DKIMVerify(t, out.Content, key) {
		t.Fatalf("signature does not verify:\n%s", out.Content)
	}
	if milterpeers.DKIMVerify(t, bytes.Replace(out.Content, []byte("a  local"), []byte("a local"), 1), key) {
		t.Fatal("tampered message verifies")
	}
	// No chain: the message passes unchanged.
	if same, err := filterLocal(context.Background(), nil, "mx.test", "Q2", in, true); err != nil || !bytes.Equal(same.Content, in.Content) {
		t.Fatalf("without milters: %v", err)
	}
}
