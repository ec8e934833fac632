package compat

import (
	"path/filepath"
	"strings"
)

// Mode is what one sendmail-family invocation asks for.
type Mode int

const (
	ModeSubmit    Mode = iota // -bm (default): queue a message read from stdin
	ModeSMTP                  // -bs: speak SMTP on stdin/stdout
	ModeList                  // -bp, mailq: list the queue
	ModeAliases               // -bi, -I, newaliases
	ModeDaemon                // -bd, -bl: start the daemon
	ModeFlush                 // bare -q: flush the queue
	ModeIgnore                // -bh, -bH, -q<interval>: exit 0, as Postfix does
	ModeFlushSite             // -qRsite: postqueue -s site
	ModeFlushID               // -qIid: postqueue -i id
)

var modeNames = [...]string{"submit", "smtp", "list", "aliases", "daemon", "flush", "ignore", "flush-site", "flush-id"}

func (m Mode) String() string {
	if int(m) < len(modeNames) {
		return modeNames[m]
	}
	return "mode?"
}

// Invocation is a parsed sendmail command line.
type Invocation struct {
	Mode Mode

	// Sender is the envelope sender from -f/-r in Postfix's internal form
	// ("" is the null sender when SenderSet); when !SenderSet the caller's
	// login name is used.
	Sender    string
	SenderSet bool
	FullName  string // -F or -oF; used for a From: header only
	Extract   bool   // -t
	// DotEnds: a line of only "." ends the input (no -i/-oi).
	DotEnds bool
	Rcpts   []string // from the arguments, parsed as address lists
	Verbose int      // number of -v
	Verify  bool     // -bv

	Body       string // -B: "8BITMIME" or "7BIT", "" when absent
	DSNNotify  string // -N, as given ("never" or "success,delay,failure" subset)
	DSNRet     string // -R: "full" or "hdrs"
	EnvID      string // -V
	VERP       bool   // -XV
	VERPDelims string // -XVxy: the two delimiters, "" for the default
	RequireTLS string // -O requiretls=yes|no
	SMTPUTF8   string // -O smtputf8=yes|no
	Gateway    bool   // -G: relay submission; do not fix headers
	ConfigPath string // -C
	AliasDB    string // -oA
	FlushSite  string // -qR
	FlushID    string // -qI
	QueueTime  string // -q<digits...>: accepted and ignored

	// Warnings are the messages Postfix logs as warnings and carries on
	// (a bad -N or -R value, a bad -V); Ignored lists ignored options, shown with -v.
	Warnings []string
	Ignored  []string
}

// Command is the program name a shared binary was started as.
type Command string

const (
	CmdSendmail   Command = "sendmail"
	CmdMailq      Command = "mailq"
	CmdNewaliases Command = "newaliases"
	CmdPostqueue  Command = "postqueue"
	CmdPostsuper  Command = "postsuper"
	// CmdPostdrop is the setgid maildrop writer (installed as a copy of
	// the binary with the setgid bit, never as a symlink).
	CmdPostdrop Command = "sluice-postdrop"
)

// CommandFor returns the command argv0 names, by its base name; anything
// unknown is sendmail, as a Postfix sendmail installed under another
// name (e.g. /usr/lib/sendmail, send-mail) behaves.
func CommandFor(argv0 string) Command {
	switch c := Command(filepath.Base(argv0)); c {
	case CmdMailq, CmdNewaliases, CmdPostqueue, CmdPostsuper, CmdPostdrop:
		return c
	}
	return CmdSendmail
}

// sendmailOpts is Postfix's option string: a letter followed by ':' takes
// an argument.
const sendmailOpts = "A:B:C:F:GIL:N:O:R:UV:X:b:ce:f:h:imno:p:r:q:tvx"

func optTakesArg(c byte) (known, arg bool) {
	i := strings.IndexByte(sendmailOpts, c)
	if i < 0 || c == ':' {
		return false, false
	}
	return true, i+1 < len(sendmailOpts) && sendmailOpts[i+1] == ':'
}

// ParseSendmail parses sendmail's arguments (without argv[0]) with
// Postfix's semantics: getopt with '+' (options stop at the first word
// that is not an option, and at "--"), a bare "-q" matched first, the
// ignored options accepted silently, the conflicts Postfix refuses
// refused with EX_USAGE. cmd selects the initial mode (mailq,
// newaliases). The returned error is an *ExitError.
func ParseSendmail(cmd Command, args []string) (*Invocation, error) {
	inv := &Invocation{Mode: ModeSubmit, DotEnds: true}
	switch cmd {
	case CmdMailq:
		inv.Mode = ModeList
	case CmdNewaliases:
		inv.Mode = ModeAliases
	}
	i := 0
	for i < len(args) {
		a := args[i]
		if a == "-q" { // not getopt compatible: -q takes an optional argument
			inv.Mode = ModeFlush
			i++
			continue
		}
		if a == "--" {
			i++
			break
		}
		if len(a) < 2 || a[0] != '-' {
			break
		}
		i++
		// One word may hold several flags ("-ti") and end with an
		// option that takes the rest of the word or the next word.
		for j := 1; j < len(a); j++ {
			c := a[j]
			known, takes := optTakesArg(c)
			if !known {
				return nil, Exitf(ExitUsage, "usage: sendmail [options]")
			}
			var optarg string
			if takes {
				if j+1 < len(a) {
					optarg = a[j+1:]
				} else if i < len(args) {
					optarg = args[i]
					i++
				} else {
					return nil, Exitf(ExitUsage, "usage: sendmail [options]")
				}
				j = len(a)
			}
			if err := inv.apply(c, optarg); err != nil {
				return nil, err
			}
		}
	}
	for _, a := range args[i:] {
		for _, r := range ParseAddressList(a) {
			if r != "" {
				inv.Rcpts = append(inv.Rcpts, r)
			}
		}
	}
	return inv, inv.check(len(args) > i)
}

func (inv *Invocation) apply(c byte, arg string) error {
	switch c {
	case 'n':
		return Exitf(ExitUsage, "-%c option not supported", c)
	case 'B':
		switch arg {
		case "8BITMIME", "7BIT":
			inv.Body = arg
		default:
			return Exitf(ExitUsage, "-B option needs 8BITMIME or 7BIT")
		}
	case 'C':
		inv.ConfigPath = arg
	case 'F':
		inv.FullName = arg
	case 'G':
		inv.Gateway = true
	case 'I':
		inv.Mode = ModeAliases
	case 'N':
		if validNotify(arg) {
			inv.DSNNotify = strings.ToLower(arg)
		} else {
			inv.Warnings = append(inv.Warnings, "bad -N option value -- ignored")
		}
	case 'O':
		k, v, _ := strings.Cut(arg, "=")
		v = strings.ToLower(v)
		switch strings.ToLower(k) {
		case "requiretls":
			if v != "yes" && v != "no" {
				return Exitf(ExitUsage, "bad -O option value: %s", arg)
			}
			inv.RequireTLS = v
		case "smtputf8":
			if v != "yes" && v != "no" {
				return Exitf(ExitUsage, "bad -O option value: %s", arg)
			}
			inv.SMTPUTF8 = v
		default:
			inv.Ignored = append(inv.Ignored, "-O"+arg)
		}
	case 'R':
		switch strings.ToLower(arg) {
		case "full", "hdrs":
			inv.DSNRet = strings.ToLower(arg)
		default:
			inv.Warnings = append(inv.Warnings, "bad -R option value -- ignored")
		}
	case 'V':
		switch {
		case len(arg) > 100:
			inv.Warnings = append(inv.Warnings, "too long -V option value -- ignored")
		case !allPrint(arg):
			inv.Warnings = append(inv.Warnings, "bad syntax in -V option value -- ignored")
		default:
			inv.EnvID = arg
		}
	case 'X':
		if arg == "" || arg[0] != 'V' {
			return Exitf(ExitUsage, "unsupported: -%c%s", c, firstByte(arg))
		}
		d := arg[1:]
		if d != "" && (len(d) != 2 || !strings.ContainsRune(verpFilter, rune(d[0])) || !strings.ContainsRune(verpFilter, rune(d[1]))) {
			return Exitf(ExitUsage, "-V requires two characters from %s", verpFilter)
		}
		inv.VERP, inv.VERPDelims = true, d
	case 'b':
		switch firstByte(arg) {
		case "d", "l":
			inv.Mode = ModeDaemon
		case "h", "H":
			inv.Mode = ModeIgnore
		case "i":
			inv.Mode = ModeAliases
		case "m":
			inv.Mode = ModeSubmit
		case "p":
			inv.Mode = ModeList
		case "s":
			inv.Mode = ModeSMTP
		case "v":
			inv.Verify = true
		default:
			return Exitf(ExitUsage, "unsupported: -%c%s", c, firstByte(arg))
		}
	case 'f', 'r':
		// Postfix keeps the last one given; the address is parsed and its
		// first address taken in internal form.
		inv.Sender, inv.SenderSet = parseSender(arg)
	case 'i':
		inv.DotEnds = false
	case 'o':
		switch firstByte(arg) {
		case "A":
			if len(arg) == 1 {
				return Exitf(ExitUsage, "-oA requires pathname")
			}
			inv.AliasDB = arg[1:]
		case "F":
			if len(arg) == 1 {
				return Exitf(ExitUsage, "-oF requires full name")
			}
			inv.FullName = arg[1:]
		case "f":
			if len(arg) == 1 {
				return Exitf(ExitUsage, "-of requires sender address")
			}
			inv.Sender, inv.SenderSet = parseSender(arg[1:])
		case "i":
			inv.DotEnds = false
		default:
			inv.Ignored = append(inv.Ignored, "-o"+arg)
		}
	case 'q':
		switch {
		case arg != "" && arg[0] >= '0' && arg[0] <= '9':
			inv.QueueTime = arg
		case strings.HasPrefix(arg, "R"):
			if len(arg) == 1 {
				return Exitf(ExitUsage, "specify: -qRsitename")
			}
			inv.FlushSite = arg[1:]
		case strings.HasPrefix(arg, "I"):
			if len(arg) == 1 {
				return Exitf(ExitUsage, "specify: -qIqueueid")
			}
			inv.FlushID = arg[1:]
		default:
			return Exitf(ExitUsage, "-q%s is not implemented", firstByte(arg))
		}
	case 't':
		inv.Extract = true
	case 'v':
		inv.Verbose++
	default:
		// -A -c -e -h -L -m -p -U -x: accepted and ignored, as Postfix does.
		if arg != "" {
			inv.Ignored = append(inv.Ignored, "-"+string(c)+" "+arg)
		} else {
			inv.Ignored = append(inv.Ignored, "-"+string(c))
		}
	}
	return nil
}

// check applies Postfix's cross-option rules in its order.
func (inv *Invocation) check(haveArgs bool) error {
	if inv.Extract && inv.Mode != ModeSubmit {
		return Exitf(ExitUsage, "-t can be used only in delivery mode")
	}
	if inv.FlushSite != "" && inv.Mode != ModeSubmit {
		return Exitf(ExitUsage, "-qR can be used only in delivery mode")
	}
	if inv.FlushID != "" && inv.Mode != ModeSubmit {
		return Exitf(ExitUsage, "-qI can be used only in delivery mode")
	}
	if inv.Verify {
		switch {
		case inv.Extract:
			return Exitf(ExitUsage, "-t option cannot be used with -bv")
		case inv.DSNNotify != "":
			return Exitf(ExitUsage, "-N option cannot be used with -bv")
		case inv.DSNRet != "":
			return Exitf(ExitUsage, "-R option cannot be used with -bv")
		case inv.Verbose == 1:
			return Exitf(ExitUsage, "-v option cannot be used with -bv")
		}
	}
	// -q<interval> without -bd means "run the queue periodically", which
	// only a daemon does: Postfix exits 0 at once.
	if inv.QueueTime != "" && inv.Mode != ModeDaemon {
		inv.Mode = ModeIgnore
		return nil
	}
	switch inv.Mode {
	case ModeSubmit:
		if inv.FlushSite != "" {
			if haveArgs {
				return Exitf(ExitUsage, "flush site requires no recipient")
			}
			inv.Mode = ModeFlushSite
		} else if inv.FlushID != "" {
			if haveArgs {
				return Exitf(ExitUsage, "flush queue_id requires no recipient")
			}
			if err := checkFlushID(inv.FlushID); err != nil {
				return err
			}
			inv.Mode = ModeFlushID
		}
	default:
		if name, ok := noRecipientModes[inv.Mode]; ok && haveArgs {
			return Exitf(ExitUsage, "%s requires no recipient", name)
		}
	}
	return nil
}

// noRecipientModes are the modes that take no recipient arguments, named
// as Postfix's sendmail names them in its usage errors.
var noRecipientModes = map[Mode]string{
	ModeList:    "display queue mode",
	ModeFlush:   "flush queue mode",
	ModeDaemon:  "daemon mode",
	ModeAliases: "alias initialization mode",
	ModeSMTP:    "stand-alone mode",
}

// NoRecipients is the error for a submission without any recipient.
func NoRecipients(extract bool) *ExitError {
	if extract {
		return Exitf(ExitUsage, "No recipient addresses found in message header")
	}
	return Exitf(ExitUsage, "Recipient addresses must be specified on the command line or via the -t option")
}

// verpFilter is Postfix's default verp_delimiter_filter.
const verpFilter = "-=+"

func parseSender(s string) (string, bool) {
	addrs := ParseAddressList(s)
	if len(addrs) == 0 {
		return "", true
	}
	return addrs[0], true
}

func validNotify(s string) bool {
	if strings.EqualFold(s, "never") {
		return true
	}
	if s == "" {
		return false
	}
	for _, w := range strings.Split(s, ",") {
		switch strings.ToLower(strings.TrimSpace(w)) {
		case "success", "delay", "failure":
		default:
			return false
		}
	}
	return true
}

func allPrint(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < 0x20 || s[i] > 0x7e {
			return false
		}
	}
	return true
}

func firstByte(s string) string {
	if s == "" {
		return ""
	}
	return s[:1]
}
