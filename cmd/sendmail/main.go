// Command sendmail is sluice's sendmail(1). The same binary is mailq,
// newaliases, postqueue and postsuper by the name it is started as (the
// Makefile links them); package compat holds all the behaviour.
package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/sluicemta/sluice/compat"
	"github.com/sluicemta/sluice/internal/config"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	env := compat.StdEnv(controlSocket)
	env.Postdrop = postdropPath()
	code := compat.Run(ctx, os.Args, env)
	stop()
	os.Exit(code)
}

// controlSocket finds the daemon's socket: SLUICE_CONTROL_SOCKET, else the
// config's control-socket directive, else compat.DefaultSocket. A config
// the caller may not read (it can name root-only key files) is scanned for
// that one directive instead of being refused: sendmail must work for
// every user.
func controlSocket(configPath string) (string, error) {
	if s := os.Getenv("SLUICE_CONTROL_SOCKET"); s != "" {
		return s, nil
	}
	explicit := configPath != ""
	path := config.Locate(configPath)
	cfg, err := config.Load(path)
	if err == nil {
		if s := cfg.Global().String("control-socket"); s != "" {
			return s, nil
		}
		return compat.DefaultSocket, nil
	}
	if s, serr := scanControlSocket(path); serr == nil {
		if s != "" {
			return s, nil
		}
		return compat.DefaultSocket, nil
	} else if explicit || !errors.Is(serr, fs.ErrNotExist) {
		if errors.Is(serr, fs.ErrPermission) && !explicit {
			return compat.DefaultSocket, nil
		}
		return "", fmt.Errorf("config %s: %w", path, serr)
	}
	return compat.DefaultSocket, nil
}

// scanControlSocket returns the value of a top-level control-socket line.
func scanControlSocket(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	val := ""
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) == 2 && strings.EqualFold(fields[0], "control-socket") {
			val = fields[1]
		}
	}
	return val, sc.Err()
}

// postdropPath finds the setgid maildrop helper: SLUICE_POSTDROP, else
// sluice-postdrop beside this binary, else /usr/sbin/sluice-postdrop.
func postdropPath() string {
	if p := os.Getenv("SLUICE_POSTDROP"); p != "" {
		return p
	}
	var cands []string
	if exe, err := os.Executable(); err == nil {
		cands = append(cands, filepath.Join(filepath.Dir(exe), string(compat.CmdPostdrop)))
	}
	cands = append(cands, "/usr/sbin/"+string(compat.CmdPostdrop))
	for _, c := range cands {
		if st, err := os.Stat(c); err == nil && st.Mode().IsRegular() {
			return c
		}
	}
	return ""
}
