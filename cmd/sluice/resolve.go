package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/sluicemta/sluice/internal/config"
	"github.com/sluicemta/sluice/internal/resolve"
)

const (
	exitNoHost   = 68 // EX_NOHOST: the domain does not exist or takes no mail
	exitTempFail = 75 // EX_TEMPFAIL
	exitConfig   = 78
)

// resolveDomain shows where mail for a domain would go, as the daemon
// resolves it (PowerMTA's `pmta resolve [--connect] DOMAIN`): the MX hosts
// in the order they would be tried and their addresses; --connect also
// reads each address's SMTP greeting.
func resolveDomain(e *env) int {
	fset := flag.NewFlagSet("resolve", flag.ContinueOnError)
	fset.SetOutput(e.stderr)
	connect := fset.Bool("connect", false, "connect to each address and show its greeting")
	server := fset.String("server", "", "DNS server HOST[:PORT] (default: dns-server of the config, else /etc/resolv.conf)")
	port := fset.Int("port", 25, "port for --connect")
	if err := fset.Parse(e.args); err != nil || fset.NArg() != 1 {
		fmt.Fprintln(e.stderr, "usage: sluice resolve [--connect] [--server HOST[:PORT]] [--port N] DOMAIN")
		return exitUsage
	}
	var servers []string
	if *server != "" {
		servers = []string{*server}
	} else {
		path := config.Locate(e.configFlag)
		if _, err := os.Stat(path); errors.Is(err, fs.ErrNotExist) && e.configFlag == "" {
			// No config at the default place: the system resolvers.
		} else if cfg, err := config.Load(path); err != nil {
			fmt.Fprintf(e.stderr, "sluice: resolve: %v\n", err)
			return exitConfig
		} else {
			servers = cfg.Global().Strings("dns-server")
		}
	}
	r := resolve.New(resolve.Options{Servers: servers, TempFailTTL: -1})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	return printRoute(ctx, e.stdout, r, fset.Arg(0), *connect, *port)
}

func printRoute(ctx context.Context, w io.Writer, r *resolve.Resolver, domain string, connect bool, port int) int {
	ascii, err := resolve.ToASCII(domain)
	if err != nil {
		fmt.Fprintf(w, "%s: %v\n", domain, err)
		return exitNoHost
	}
	if ascii != strings.ToLower(strings.TrimSuffix(domain, ".")) {
		fmt.Fprintf(w, "%s is %s\n", domain, ascii)
	}
	type host struct {
		name string
		pref int // -1: the domain itself (no MX)
	}
	var hosts []host
	mxs, err := r.MX(ctx, ascii)
	switch {
	case err == nil:
		for _, mx := range mxs {
			hosts = append(hosts, host{mx.Host, int(mx.Pref)})
		}
	case errors.Is(err, resolve.ErrNoMX):
		fmt.Fprintf(w, "%s has no MX records; mail goes to its own addresses\n", ascii)
		hosts = []host{{ascii, -1}}
	case errors.Is(err, resolve.ErrNullMX):
		fmt.Fprintf(w, "%s publishes a null MX (RFC 7505): it accepts no mail; recipients bounce with 5.1.10\n", ascii)
		return exitNoHost
	case errors.Is(err, resolve.ErrNXDomain):
		fmt.Fprintf(w, "%s does not exist (NXDOMAIN): recipients bounce with 5.1.2\n", ascii)
		return exitNoHost
	default:
		fmt.Fprintf(w, "%s: %v: delivery is deferred (retry-after-dns-error)\n", ascii, err)
		return exitTempFail
	}
	rc, usable := exitOK, 0
	for _, h := range hosts {
		label := "MX " + strconv.Itoa(h.pref) + " " + h.name
		if h.pref < 0 {
			label = "A/AAAA " + h.name
		}
		addrs, err := r.Addrs(ctx, h.name)
		if err != nil {
			fmt.Fprintf(w, "%s: %v\n", label, err)
			if errors.Is(err, resolve.ErrTemporary) {
				rc = exitTempFail
			}
			continue
		}
		usable++
		strs := make([]string, len(addrs))
		for i, a := range addrs {
			strs[i] = a.String()
		}
		fmt.Fprintf(w, "%s: %s\n", label, strings.Join(strs, " "))
		if !connect {
			continue
		}
		for _, a := range addrs {
			fmt.Fprintf(w, "  %s\n", greeting(ctx, net.JoinHostPort(a.String(), strconv.Itoa(port))))
		}
	}
	if usable == 0 && rc == exitOK {
		if hosts[0].pref < 0 {
			return exitNoHost // no MX and no address: recipients bounce (5.4.4)
		}
		return exitTempFail
	}
	return rc
}

// greeting dials addr and returns its first reply line, or the failure.
func greeting(ctx context.Context, addr string) string {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return addr + ": " + err.Error()
	}
	defer c.Close()
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	line, err := bufio.NewReader(io.LimitReader(c, 1024)).ReadString('\n')
	if err != nil && line == "" {
		return addr + ": no greeting: " + err.Error()
	}
	c.Write([]byte("QUIT\r\n"))
	return addr + ": " + strings.TrimRight(line, "\r\n")
}
