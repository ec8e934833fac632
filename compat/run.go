package compat

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
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
	// Postdrop is the setgid maildrop helper sendmail runs when the
	// daemon is down; "" means no fallback (exit 75).
	Postdrop string
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
	case CmdPostdrop:
		err = runPostdrop(env)
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
	var content []byte
	if inv.Verify {
		content = probeMessage(inv)
	} else if content, err = ReadMessage(env.Stdin, inv.DotEnds, 0); err != nil {
		return err
	}
	if inv.FullName == "" && env.Getenv != nil {
		// As Postfix: $NAME, else the daemon uses the GECOS name.
		inv.FullName = env.Getenv("NAME")
	}
	id, err := c.Submit(ctx, inv, content)
	if err != nil {
		if errors.Is(err, ErrDaemonDown) {
			return postdrop(ctx, env, inv, content, err)
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

// postdrop runs the setgid helper with the request on its stdin; the
// message then waits in the maildrop directory for the daemon.
func postdrop(ctx context.Context, env Env, inv *Invocation, content []byte, cause error) error {
	if env.Postdrop == "" {
		return Exitf(ExitTempFail, "%v; no maildrop helper: message not sent", cause)
	}
	cmd := exec.CommandContext(ctx, env.Postdrop)
	cmd.Stdin = bytes.NewReader(EncodeMaildrop(inv, content))
	cmd.Stdout = env.Stdout
	cmd.Stderr = env.Stderr
	if err := cmd.Run(); err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) && ee.ExitCode() > 0 {
			return &ExitError{Code: ee.ExitCode(), Msg: fmt.Sprintf("%s failed", env.Postdrop), Err: err}
		}
		return Exitf(ExitTempFail, "run %s: %v", env.Postdrop, err)
	}
	return nil
}

// runPostdrop is sluice-postdrop: read one maildrop request from stdin,
// check it parses, and write it into the maildrop directory. It runs
// setgid, so the directory is fixed unless the helper is not setgid
// (tests), when SLUICE_MAILDROP may name another.
func runPostdrop(env Env) error {
	dir := DefaultMaildrop
	if os.Getegid() == os.Getgid() && env.Getenv != nil && env.Getenv("SLUICE_MAILDROP") != "" {
		dir = env.Getenv("SLUICE_MAILDROP")
	}
	data, err := io.ReadAll(io.LimitReader(env.Stdin, defaultMaxSize+maxOverhead+1))
	if err != nil {
		return Exitf(ExitDataErr, "read request: %v", err)
	}
	if len(data) > defaultMaxSize+maxOverhead {
		return Exitf(ExitDataErr, "message file too big")
	}
	if !bytes.HasPrefix(data, []byte(MaildropMagic)) {
		return Exitf(ExitDataErr, "not a maildrop request")
	}
	h := &Handler{}
	req, err := h.readRequest(bufio.NewReader(bytes.NewReader(data[len(MaildropMagic):])))
	if err != nil || req.op != "submit" {
		return Exitf(ExitDataErr, "bad maildrop request: %v", err)
	}
	if _, err := WriteMaildrop(dir, data); err != nil {
		return Exitf(ExitTempFail, "%v", err)
	}
	return nil
}
