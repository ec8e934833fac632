// Command fakesluiced stands in for bin/sluiced in sluicetest's own tests:
// it reads smtp-listener from --config, greets on it, and exits on SIGTERM.
package main

import (
	"bufio"
	"flag"
	"fmt"
	"net"
	"os"
	"os/signal"
	"strings"
	"syscall"
)

func main() {
	config := flag.String("config", "", "config file")
	flag.Parse()
	if os.Getenv("FAKE_FAIL") != "" {
		fmt.Fprintf(os.Stderr, "%s:1: fake failure\n", *config)
		os.Exit(78)
	}
	f, err := os.Open(*config)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(78)
	}
	var addr string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "smtp-listener "); ok {
			addr = v
		}
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(75)
	}
	fmt.Fprintf(os.Stderr, "fake: listening on %s pid %d\n", addr, os.Getpid())
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGHUP)
	go func() {
		for s := range sigs {
			fmt.Fprintf(os.Stderr, "fake: got %v\n", s)
			if s == syscall.SIGTERM {
				os.Exit(0)
			}
		}
	}()
	for {
		c, err := ln.Accept()
		if err != nil {
			os.Exit(1)
		}
		fmt.Fprintf(c, "220 fake ESMTP\r\n")
		c.Close()
	}
}
