package main

import (
	"bufio"
	"io"
	"net"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// fakeControl answers one request per connection with status, after
// checking the request is exactly what PROTOCOL.md frames.
func fakeControl(t *testing.T, status string) (string, <-chan string) {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "control.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	got := make(chan string, 4)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			r := bufio.NewReader(c)
			var req strings.Builder
			for !strings.HasSuffix(req.String(), "end 0\n\n") {
				b, err := r.ReadByte()
				if err != nil {
					break
				}
				req.WriteByte(b)
			}
			got <- req.String()
			io.WriteString(c, "line 3\nabc\n")
			io.WriteString(c, "status "+strconv.Itoa(len(status))+"\n"+status+"\n")
			c.Close()
		}
	}()
	return sock, got
}

func TestClearDNSCache(t *testing.T) {
	sock, got := fakeControl(t, "0 cleared 12 entries")
	t.Setenv("SLUICE_CONTROL_SOCKET", sock)
	rc, out, errs := runCLI(t, "", "clear", "dnscache")
	if rc != 0 || out != "cleared 12 entries\n" {
		t.Fatalf("rc %d out %q err %q", rc, out, errs)
	}
	if req := <-got; req != "sluice-compat/1\nop 14\nclear-dnscache\nend 0\n\n" {
		t.Errorf("request %q", req)
	}

	// A daemon that does not know the op (or refuses a non-admin) says so.
	sock, _ = fakeControl(t, `64 unknown operation "clear-dnscache"`)
	t.Setenv("SLUICE_CONTROL_SOCKET", sock)
	rc, _, errs = runCLI(t, "", "clear", "dnscache")
	if rc != 64 || !strings.Contains(errs, "unknown operation") {
		t.Errorf("rc %d err %q", rc, errs)
	}

	t.Setenv("SLUICE_CONTROL_SOCKET", filepath.Join(t.TempDir(), "none.sock"))
	rc, _, errs = runCLI(t, "", "clear", "dnscache")
	if rc != exitTempFail || !strings.Contains(errs, "is sluiced running?") {
		t.Errorf("no daemon: rc %d err %q", rc, errs)
	}
}
