package compat

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
)

// Env is what Run needs from the process: its streams, its environment,
// and how to find the daemon's control socket.
type Env struct {
	Stdin          io.Reader
	Stdout, Stderr io.Writer
	Getenv         func(string) string
	// Socket returns the control socket for a config path ("" means the
	// default location: SLUICE_CONFIG, else /etc/pmta/config). cmd/sendmail
	// reads the config's control-socket directive here.
	Socket func(configPath string) (string, error)
}

// Run executes one sendmail-family command as argv[0] names it and
// returns the process exit status. cmd/sendmail's main is this call.
func Run(ctx context.Context, argv []string, env Env) int {
	if len(argv) == 0 {
		argv = []string{"sendmail"}
	}
	cmd := CommandFor(argv[0])
	name := filepath.Base(argv[0])
	if cmd != CmdSendmail {
		name = string(cmd)
	}
	var err error
	switch cmd {
	case CmdPostqueue:
		err = runPostqueue(ctx, argv[1:], env)
	case CmdPostsuper:
		err = runPostsuper(ctx, argv[1:], env)
	default:
		err = runSendmail(ctx, cmd, argv[1:], env)
	}
	if err != nil {
		fmt.Fprintf(env.Stderr, "%s: fatal: %v\n", name, err)
	}
	return ExitCode(err)
}

func client(env Env, configPath string) (*Client, error) {
	sock, err := env.Socket(configPath)
	if err != nil {
		return nil, &ExitError{Code: ExitConfig, Msg: err.Error(), Err: err}
	}
	return &Client{Socket: sock}, nil
}

func runSendmail(ctx context.Context, cmd Command, args []string, env Env) error {
	inv, err := ParseSendmail(cmd, args)
	if err != nil {
		return err
	}
	for _, w := range inv.Warnings {
		fmt.Fprintf(env.Stderr, "sendmail: warning: %s\n", w)
	}
	if inv.Verbose > 1 {
		for _, o := range inv.Ignored {
			fmt.Fprintf(env.Stderr, "sendmail: %s option ignored\n", o)
		}
	}
	switch inv.Mode {
	case ModeIgnore:
		return nil
	case ModeAliases:
		// sluice has no local alias database yet; package scripts call
		// newaliases after install and must not fail.
		fmt.Fprintf(env.Stderr, "newaliases: warning: sluice has no local alias database: nothing to rebuild\n")
		return nil
	case ModeDaemon:
		return Exitf(ExitUnavailable, "-bd: sluice is started by its service manager (systemctl start sluice), not by sendmail")
	}
	c, err := client(env, inv.ConfigPath)
	if err != nil {
		return err
	}
	switch inv.Mode {
	case ModeList:
		return c.List(ctx, 'p', env.Stdout)
	case ModeFlush:
		return c.Flush(ctx, "", "")
	case ModeFlushSite:
		return c.Flush(ctx, inv.FlushSite, "")
	case ModeFlushID:
		return c.Flush(ctx, "", inv.FlushID)
	case ModeSMTP:
		return c.SMTP(ctx, env.Stdin, env.Stdout)
	}
	content, err := ReadMessage(env.Stdin, inv.DotEnds, 0)
	if err != nil {
		return err
	}
	if inv.FullName == "" && env.Getenv != nil {
		// As Postfix: $NAME, else the daemon uses the GECOS name.
		inv.FullName = env.Getenv("NAME")
	}
	id, err := c.Submit(ctx, inv, content)
	if err != nil {
		if errors.Is(err, ErrDaemonDown) {
			return Exitf(ExitTempFail, "%v; message not sent (no maildrop fallback yet)", err)
		}
		return err
	}
	if inv.Verbose > 0 {
		fmt.Fprintf(env.Stderr, "sendmail: queued as %s\n", id)
	}
	return nil
}

func runPostqueue(ctx context.Context, args []string, env Env) error {
	pa, err := ParsePostqueue(args)
	if err != nil {
		return err
	}
	c, err := client(env, pa.ConfigDir)
	if err != nil {
		return err
	}
	switch pa.Mode {
	case PostqueueList, PostqueueJSON:
		return c.List(ctx, byte(pa.Mode), env.Stdout)
	case PostqueueFlush:
		return c.Flush(ctx, "", "")
	case PostqueueSite:
		return c.Flush(ctx, pa.Arg, "")
	default:
		return c.Flush(ctx, "", pa.Arg)
	}
}

func runPostsuper(ctx context.Context, args []string, env Env) error {
	pa, err := ParsePostsuper(args)
	if err != nil {
		return err
	}
	if err := pa.ExpandStdin(env.Stdin); err != nil {
		return err
	}
	if len(pa.Ops) == 0 {
		return nil
	}
	c, err := client(env, pa.ConfigDir)
	if err != nil {
		return err
	}
	var first error
	for _, op := range pa.Ops {
		err := c.Postsuper(ctx, op, pa.Queues, func(line string) {
			fmt.Fprintf(env.Stderr, "postsuper: %s\n", line)
		})
		if err != nil && first == nil {
			first = err
		}
		if ExitCode(err) == ExitNoPerm || errors.Is(err, ErrDaemonDown) {
			break
		}
	}
	return first
}

// StdEnv is the Env of the running process with the given socket resolver.
func StdEnv(socket func(string) (string, error)) Env {
	return Env{Stdin: os.Stdin, Stdout: os.Stdout, Stderr: os.Stderr, Getenv: os.Getenv, Socket: socket}
}
