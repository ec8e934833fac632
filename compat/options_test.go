package compat

import (
	"reflect"
	"strings"
	"testing"
)

func TestParseSendmail(t *testing.T) {
	tests := []struct {
		name    string
		cmd     Command
		args    string
		code    int // expected exit code of the error, 0 for none
		mode    Mode
		check   func(*Invocation) bool
		errFrag string
	}{
		{name: "plain", args: "bob@example.net", mode: ModeSubmit,
			check: func(i *Invocation) bool {
				return reflect.DeepEqual(i.Rcpts, []string{"bob@example.net"}) && i.DotEnds && !i.SenderSet
			}},
		{name: "address list args", args: "a@x,|Name <b@y>|c@z", mode: ModeSubmit,
			check: func(i *Invocation) bool { return reflect.DeepEqual(i.Rcpts, []string{"a@x", "b@y", "c@z"}) }},
		{name: "cron isc", args: "-FCronDaemon|-odi|-oem|-oi|-t", mode: ModeSubmit,
			check: func(i *Invocation) bool {
				return i.Extract && !i.DotEnds && i.FullName == "CronDaemon" && len(i.Rcpts) == 0
			}},
		{name: "cronie", args: "-FCronDaemon|-i|-odi|-oem|-oi|-t|-f|user", mode: ModeSubmit,
			check: func(i *Invocation) bool { return i.Extract && i.Sender == "user" && i.SenderSet }},
		{name: "debian cron", args: "-FCronDaemon|-i|-B8BITMIME|-oem|user", mode: ModeSubmit,
			check: func(i *Invocation) bool { return i.Body == "8BITMIME" && reflect.DeepEqual(i.Rcpts, []string{"user"}) }},
		{name: "php", args: "-t|-i|-fwww@example.org", mode: ModeSubmit,
			check: func(i *Invocation) bool { return i.Sender == "www@example.org" }},
		{name: "git", args: "-f|x@y|-i|a@b|c@d", mode: ModeSubmit,
			check: func(i *Invocation) bool { return i.Sender == "x@y" && len(i.Rcpts) == 2 }},
		{name: "mailx", args: "-i|-v|-F|Full Name|-f|me@x|--|-notanoption@x", mode: ModeSubmit,
			check: func(i *Invocation) bool {
				return i.Verbose == 1 && i.FullName == "Full Name" && reflect.DeepEqual(i.Rcpts, []string{"-notanoption@x"})
			}},
		{name: "options stop at first word", args: "a@b|-t", mode: ModeSubmit,
			check: func(i *Invocation) bool { return !i.Extract && reflect.DeepEqual(i.Rcpts, []string{"a@b", "-t"}) }},
		{name: "grouped flags", args: "-ti", mode: ModeSubmit,
			check: func(i *Invocation) bool { return i.Extract && !i.DotEnds }},
		{name: "null sender", args: "-f|<>|a@b", mode: ModeSubmit,
			check: func(i *Invocation) bool { return i.SenderSet && i.Sender == "" }},
		{name: "sender with name", args: "-r|Joe <joe@x>|a@b", mode: ModeSubmit,
			check: func(i *Invocation) bool { return i.Sender == "joe@x" }},
		{name: "last -f wins", args: "-f|a@x|-f|b@x|c@d", mode: ModeSubmit,
			check: func(i *Invocation) bool { return i.Sender == "b@x" }},
		{name: "ignored options", args: "-oem|-odb|-o7|-c|-em|-h|10|-L|lab|-m|-p|smtp|-U|-x|-Am|-Ac|a@b", mode: ModeSubmit,
			check: func(i *Invocation) bool { return len(i.Ignored) > 5 && len(i.Rcpts) == 1 }},
		{name: "dsn options", args: "-N|success,delay|-R|hdrs|-V|env-1|a@b", mode: ModeSubmit,
			check: func(i *Invocation) bool {
				return i.DSNNotify == "success,delay" && i.DSNRet == "hdrs" && i.EnvID == "env-1"
			}},
		{name: "bad -N warns", args: "-N|bogus|a@b", mode: ModeSubmit,
			check: func(i *Invocation) bool { return i.DSNNotify == "" && len(i.Warnings) == 1 }},
		{name: "bad -R warns", args: "-R|foo|a@b", mode: ModeSubmit,
			check: func(i *Invocation) bool { return len(i.Warnings) == 1 }},
		{name: "verp", args: "-XV|a@b", mode: ModeSubmit, check: func(i *Invocation) bool { return i.VERP }},
		{name: "verp delims", args: "-XV+=|a@b", mode: ModeSubmit, check: func(i *Invocation) bool { return i.VERPDelims == "+=" }},
		{name: "smtputf8", args: "-O|smtputf8=yes|a@b", mode: ModeSubmit, check: func(i *Invocation) bool { return i.SMTPUTF8 == "yes" }},
		{name: "config", args: "-C|/etc/x.conf|a@b", mode: ModeSubmit, check: func(i *Invocation) bool { return i.ConfigPath == "/etc/x.conf" }},
		{name: "gateway", args: "-G|a@b", mode: ModeSubmit, check: func(i *Invocation) bool { return i.Gateway }},
		{name: "-bm", args: "-bm|a@b", mode: ModeSubmit},
		{name: "-bs", args: "-bs", mode: ModeSMTP},
		{name: "-bp", args: "-bp", mode: ModeList},
		{name: "mailq", cmd: CmdMailq, args: "", mode: ModeList},
		{name: "newaliases", cmd: CmdNewaliases, args: "", mode: ModeAliases},
		{name: "-bi", args: "-bi", mode: ModeAliases},
		{name: "-I", args: "-I", mode: ModeAliases},
		{name: "-oA", args: "-bi|-oA/etc/aliases", mode: ModeAliases, check: func(i *Invocation) bool { return i.AliasDB == "/etc/aliases" }},
		{name: "-bd", args: "-bd", mode: ModeDaemon},
		{name: "-bd -q5m", args: "-bd|-q5m", mode: ModeDaemon},
		{name: "-bl", args: "-bl", mode: ModeDaemon},
		{name: "-bh", args: "-bh", mode: ModeIgnore},
		{name: "-bH", args: "-bH", mode: ModeIgnore},
		{name: "-q", args: "-q", mode: ModeFlush},
		{name: "-q5m", args: "-q5m", mode: ModeIgnore},
		{name: "-qR", args: "-qRexample.com", mode: ModeFlushSite, check: func(i *Invocation) bool { return i.FlushSite == "example.com" }},
		{name: "-qI", args: "-qI4jckGV1dtNz1SGLS", mode: ModeFlushID, check: func(i *Invocation) bool { return i.FlushID == "4jckGV1dtNz1SGLS" }},
		{name: "-qI bad id", args: "-qI../x", code: ExitUsage, errFrag: "Cannot flush queue ID - invalid name"},
		{name: "-bv", args: "-bv|a@b", mode: ModeSubmit, check: func(i *Invocation) bool { return i.Verify }},

		{name: "-n refused", args: "-n|a@b", code: ExitUsage, errFrag: "-n option not supported"},
		{name: "-B bad", args: "-B9BIT|a@b", code: ExitUsage, errFrag: "-B option needs"},
		{name: "-X bad", args: "-Xfoo|a@b", code: ExitUsage, errFrag: "unsupported: -Xf"},
		{name: "-XV bad delims", args: "-XVab|a@b", code: ExitUsage},
		{name: "-bz", args: "-bz", code: ExitUsage, errFrag: "unsupported: -bz"},
		{name: "-Z unknown", args: "-Z", code: ExitUsage},
		{name: "missing arg", args: "-f", code: ExitUsage},
		{name: "-bv -t", args: "-bv|-t", code: ExitUsage, errFrag: "-t option cannot be used with -bv"},
		{name: "-bv -N", args: "-bv|-Nnever|a@b", code: ExitUsage},
		{name: "-bv -v", args: "-bv|-v|a@b", code: ExitUsage},
		{name: "-bp with rcpt", args: "-bp|a@b", code: ExitUsage, errFrag: "display queue mode requires no recipient"},
		{name: "-q with rcpt", args: "-q|a@b", code: ExitUsage},
		{name: "-bs with rcpt", args: "-bs|a@b", code: ExitUsage},
		{name: "-bi with rcpt", args: "-bi|a@b", code: ExitUsage},
		{name: "-bd with rcpt", args: "-bd|a@b", code: ExitUsage},
		{name: "-t in list mode", args: "-bp|-t", code: ExitUsage, errFrag: "-t can be used only in delivery mode"},
		{name: "-qR with rcpt", args: "-qRx|a@b", code: ExitUsage},
		{name: "-qX", args: "-qX", code: ExitUsage},
		{name: "-qR empty", args: "-qR", code: ExitUsage},
		{name: "-O bad", args: "-O|smtputf8=maybe|a@b", code: ExitUsage},
		{name: "-oA empty", args: "-oA", code: ExitUsage},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var args []string
			if tt.args != "" {
				args = strings.Split(tt.args, "|")
			}
			cmd := tt.cmd
			if cmd == "" {
				cmd = CmdSendmail
			}
			inv, err := ParseSendmail(cmd, args)
			if got := ExitCode(err); got != tt.code {
				t.Fatalf("exit code %d (%v), want %d", got, err, tt.code)
			}
			if err != nil {
				if tt.errFrag != "" && !strings.Contains(err.Error(), tt.errFrag) {
					t.Errorf("error %q lacks %q", err, tt.errFrag)
				}
				return
			}
			if inv.Mode != tt.mode {
				t.Errorf("mode %v, want %v", inv.Mode, tt.mode)
			}
			if tt.check != nil && !tt.check(inv) {
				t.Errorf("check failed: %+v", inv)
			}
		})
	}
}

func TestCommandFor(t *testing.T) {
	for in, want := range map[string]Command{
		"/usr/sbin/sendmail": CmdSendmail, "mailq": CmdMailq, "/usr/bin/newaliases": CmdNewaliases,
		"bin/postqueue": CmdPostqueue, "postsuper": CmdPostsuper, "/usr/lib/sendmail": CmdSendmail, "send-mail": CmdSendmail,
	} {
		if got := CommandFor(in); got != want {
			t.Errorf("CommandFor(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestParseAddressList(t *testing.T) {
	tests := []struct {
		in   string
		want []string
	}{
		{"a@b", []string{"a@b"}},
		{"a@b, c@d", []string{"a@b", "c@d"}},
		{"Name <a@b>", []string{"a@b"}},
		{`"Last, First" <a@b>, c@d`, []string{"a@b", "c@d"}},
		{"a@b (comment, with comma)", []string{"a@b"}},
		{"root", []string{"root"}},
		{"<>", []string{""}},
		{"undisclosed-recipients:;", nil},
		{"team: a@b, c@d;, e@f", []string{"a@b", "c@d", "e@f"}},
		{`"john doe"@example.com`, []string{"john doe@example.com"}},
		{"<@relay.example:user@dom>", []string{"user@dom"}},
		{"user@[IPv6:::1]", []string{"user@[IPv6:::1]"}},
		{"", nil},
		{" , ,", nil},
		{"a @ b", []string{"a@b"}},
	}
	for _, tt := range tests {
		if got := ParseAddressList(tt.in); !reflect.DeepEqual(got, tt.want) {
			t.Errorf("ParseAddressList(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func FuzzParseAddressList(f *testing.F) {
	for _, s := range []string{"a@b", `"x, y" <a@b>, (c) d@e`, "g: a@b;", "<@r:u@d>", "u@[1.2.3.4]", "((", `"\`} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		for _, a := range ParseAddressList(s) {
			if strings.ContainsAny(a, "<>") && !strings.Contains(s, `"`) && !strings.Contains(s, "[") {
				t.Errorf("address %q from %q holds a delimiter", a, s)
			}
		}
	})
}

func FuzzParseSendmail(f *testing.F) {
	for _, s := range []string{"-t -i", "-f x -i a b", "-bp", "-q", "-qRx", "-XV+=", "-- -x", "-oAfoo -bi", "-N never"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		inv, err := ParseSendmail(CmdSendmail, strings.Fields(s))
		if err != nil {
			if c := ExitCode(err); c != ExitUsage {
				t.Fatalf("error %v has exit %d", err, c)
			}
			return
		}
		if inv.Mode != ModeSubmit && inv.Mode != ModeIgnore && inv.Mode != ModeDaemon && len(inv.Rcpts) > 0 {
			t.Fatalf("mode %v with recipients %q", inv.Mode, inv.Rcpts)
		}
	})
}
