// Command sluice is the admin CLI (also installed as pmta). It is thin:
// each verb is one entry of the verbs table calling a package API.
package main

import (
	"bufio"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/sluicemta/sluice/internal/config"
	"golang.org/x/crypto/bcrypt"
)

// Exit statuses (sysexits.h).
const (
	exitOK    = 0
	exitUsage = 64
	exitData  = 65
	exitSoft  = 70
)

// env is what a verb gets: its arguments, streams and global flags.
type env struct {
	args       []string
	stdin      io.Reader
	stdout     io.Writer
	stderr     io.Writer
	configFlag string
}

type verb struct {
	words []string // e.g. {"check", "config"}
	usage string   // arguments after the words
	help  string
	run   func(e *env) int
}

// verbs is the dispatch table; the longest matching word sequence wins.
// Add a verb by adding a row.
var verbs = []verb{
	{[]string{"check", "config"}, "[FILE]", "validate a config file (default: --config, $SLUICE_CONFIG, /etc/pmta/config)", checkConfig},
	{[]string{"man", "sluice.conf"}, "", "print sluice.conf(5) in roff, generated from the directive table", manConf},
	{[]string{"hash-password"}, "", "read a password from stdin, print its bcrypt hash for <smtp-user> password", hashPassword},
	{[]string{"resolve"}, "[--connect] DOMAIN", "show the MX hosts and addresses mail for DOMAIN goes to", resolveDomain},
	{[]string{"clear", "dnscache"}, "", "make the running daemon forget its cached DNS answers", adminOp("clear-dnscache", "clear dnscache", "DNS cache cleared")},
	{[]string{"reopen-logs"}, "", "make the running daemon reopen its log and accounting files (for logrotate)", adminOp("reopen-logs", "reopen-logs", "logs reopened")},
}

func main() {
	os.Exit(run(os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}

func run(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("sluice", flag.ContinueOnError)
	fs.SetOutput(stderr)
	e := &env{stdin: stdin, stdout: stdout, stderr: stderr}
	fs.StringVar(&e.configFlag, "config", "", "config file (default $SLUICE_CONFIG, else "+config.DefaultPath+")")
	fs.Usage = func() { usage(stderr, fs) }
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return exitOK
		}
		return exitUsage
	}
	v, rest := match(fs.Args())
	if v == nil {
		if fs.NArg() > 0 {
			fmt.Fprintf(stderr, "sluice: unknown command %q\n", strings.Join(fs.Args(), " "))
		}
		usage(stderr, fs)
		return exitUsage
	}
	e.args = rest
	return v.run(e)
}

func match(args []string) (*verb, []string) {
	var best *verb
	for i := range verbs {
		v := &verbs[i]
		if len(v.words) > len(args) || (best != nil && len(v.words) <= len(best.words)) {
			continue
		}
		ok := true
		for j, w := range v.words {
			if args[j] != w {
				ok = false
				break
			}
		}
		if ok {
			best = v
		}
	}
	if best == nil {
		return nil, nil
	}
	return best, args[len(best.words):]
}

func usage(w io.Writer, fs *flag.FlagSet) {
	fmt.Fprintln(w, "usage: sluice [--config FILE] COMMAND [ARGS]")
	fmt.Fprintln(w, "commands:")
	for _, v := range verbs {
		fmt.Fprintf(w, "  %-28s %s\n", strings.TrimSpace(strings.Join(v.words, " ")+" "+v.usage), v.help)
	}
	fmt.Fprintln(w, "flags:")
	fs.PrintDefaults()
}

func checkConfig(e *env) int {
	if len(e.args) > 1 {
		fmt.Fprintln(e.stderr, "usage: sluice check config [FILE]")
		return exitUsage
	}
	path := e.configFlag
	if len(e.args) == 1 {
		path = e.args[0]
	}
	path = config.Locate(path)
	rc := config.Check(path, e.stderr)
	if rc == 0 {
		fmt.Fprintf(e.stdout, "%s: OK\n", path)
	}
	return rc
}

func manConf(e *env) int {
	if len(e.args) != 0 {
		fmt.Fprintln(e.stderr, "usage: sluice man sluice.conf")
		return exitUsage
	}
	if err := config.WriteMan(e.stdout); err != nil {
		fmt.Fprintf(e.stderr, "sluice: man: %v\n", err)
		return exitSoft
	}
	return exitOK
}

// hashPassword reads one line (the password) from stdin so it never shows
// in ps or shell history.
func hashPassword(e *env) int {
	if len(e.args) != 0 {
		fmt.Fprintln(e.stderr, "usage: sluice hash-password < password-file")
		return exitUsage
	}
	line, err := bufio.NewReader(e.stdin).ReadString('\n')
	if err != nil && !errors.Is(err, io.EOF) {
		fmt.Fprintf(e.stderr, "sluice: hash-password: read stdin: %v\n", err)
		return exitSoft
	}
	pw := strings.TrimRight(line, "\r\n")
	if pw == "" {
		fmt.Fprintln(e.stderr, "sluice: hash-password: empty password on stdin")
		return exitData
	}
	h, err := bcrypt.GenerateFromPassword([]byte(pw), bcrypt.DefaultCost)
	if err != nil {
		fmt.Fprintf(e.stderr, "sluice: hash-password: %v\n", err)
		return exitData
	}
	fmt.Fprintln(e.stdout, string(h))
	return exitOK
}
