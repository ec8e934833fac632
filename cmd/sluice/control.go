package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/sluicemta/sluice/compat"
	"github.com/sluicemta/sluice/internal/config"
)

// adminOp makes a verb that sends one field-less admin operation to the
// running daemon over the control socket (compat/PROTOCOL.md), e.g.
// "clear-dnscache" (PowerMTA's `pmta clear dnscache`) or "reopen-logs"
// (for logrotate: reopen the log and accounting files, nothing else).
func adminOp(op, usage, done string) func(e *env) int {
	return func(e *env) int {
		if len(e.args) != 0 {
			fmt.Fprintln(e.stderr, "usage: sluice "+usage)
			return exitUsage
		}
		sock := controlSocket(e)
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		code, text, err := controlOp(ctx, sock, op)
		if err != nil {
			fmt.Fprintf(e.stderr, "sluice: %s: %v\n", usage, err)
			return exitTempFail
		}
		if code != 0 {
			fmt.Fprintf(e.stderr, "sluice: %s: %s\n", usage, text)
			return code
		}
		if text == "" {
			text = done
		}
		fmt.Fprintln(e.stdout, text)
		return exitOK
	}
}

// controlSocket is SLUICE_CONTROL_SOCKET, else the config's
// control-socket, else the default.
func controlSocket(e *env) string {
	if s := os.Getenv("SLUICE_CONTROL_SOCKET"); s != "" {
		return s
	}
	if cfg, err := config.Load(config.Locate(e.configFlag)); err == nil {
		if s := cfg.Global().String("control-socket"); s != "" {
			return s
		}
	}
	return compat.DefaultSocket
}

// controlOp sends a request with only an op and returns the status.
func controlOp(ctx context.Context, sock, op string) (int, string, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, "unix", sock)
	if err != nil {
		return 0, "", fmt.Errorf("is sluiced running? %w", err)
	}
	defer c.Close()
	if dl, ok := ctx.Deadline(); ok {
		c.SetDeadline(dl)
	}
	w := bufio.NewWriter(c)
	fmt.Fprintf(w, "%sop %d\n%s\nend 0\n\n", compat.Hello, len(op), op)
	if err := w.Flush(); err != nil {
		return 0, "", fmt.Errorf("send request: %w", err)
	}
	r := bufio.NewReader(c)
	for {
		tag, payload, err := readFrame(r)
		if err != nil {
			return 0, "", fmt.Errorf("read reply: %w", err)
		}
		if tag != "status" {
			continue // data/line frames: none expected for this op
		}
		codeStr, text, _ := strings.Cut(string(payload), " ")
		code, err := strconv.Atoi(codeStr)
		if err != nil || code < 0 || code > 255 {
			return 0, "", fmt.Errorf("read reply: bad status %q", payload)
		}
		return code, text, nil
	}
}

// readFrame reads "<tag> <len>\n<payload>\n", payloads up to 1 MiB.
func readFrame(r *bufio.Reader) (string, []byte, error) {
	line, err := r.ReadString('\n')
	if err != nil {
		return "", nil, err
	}
	if len(line) > 64 {
		return "", nil, fmt.Errorf("frame header too long")
	}
	tag, ns, ok := strings.Cut(strings.TrimSuffix(line, "\n"), " ")
	n, err := strconv.Atoi(ns)
	if !ok || err != nil || n < 0 || n > 1<<20 {
		return "", nil, fmt.Errorf("bad frame header %q", line)
	}
	p := make([]byte, n+1)
	if _, err := io.ReadFull(r, p); err != nil {
		return "", nil, err
	}
	if p[n] != '\n' {
		return "", nil, fmt.Errorf("%s frame not terminated", tag)
	}
	return tag, p[:n], nil
}
