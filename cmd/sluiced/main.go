// Command sluiced is the sluice mail transfer agent daemon. It runs in the
// foreground; see sluiced(8).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"

	"github.com/sluicemta/sluice/internal/config"
	"github.com/sluicemta/sluice/internal/daemon"
)

// version is set at build time (-ldflags "-X main.version=...").
var version = "dev"

func main() {
	var (
		configFlag  = flag.String("config", "", "config file (default $SLUICE_CONFIG, else /etc/pmta/config)")
		check       = flag.String("check", "", "validate `FILE` and exit: 0 valid, 78 invalid")
		printConfig = flag.Bool("print-default-config", false, "print the embedded default config and exit")
		varDir      = flag.String("var-dir", "./var", "with --print-default-config: directory for spool, logs and accounting")
		showVersion = flag.Bool("version", false, "print the version and exit")
	)
	flag.Usage = func() {
		fmt.Fprintf(os.Stderr, "usage: sluiced [--config FILE] | --check FILE | --print-default-config [--var-dir DIR] | --version\n")
		flag.PrintDefaults()
	}
	flag.Parse()
	if flag.NArg() > 0 {
		flag.Usage()
		os.Exit(64)
	}
	switch {
	case *showVersion:
		fmt.Println("sluiced", version)
		return
	case *check != "":
		os.Exit(config.Check(*check, os.Stderr))
	case *printConfig:
		fmt.Print(config.DefaultConfig(*varDir))
		return
	}
	path := config.Locate(*configFlag)
	if err := daemon.Run(context.Background(), daemon.Options{ConfigPath: path, Stderr: os.Stderr}); err != nil {
		fmt.Fprintf(os.Stderr, "sluiced: %v\n", err)
		var ce *daemon.ConfigError
		if errors.As(err, &ce) {
			os.Exit(78)
		}
		os.Exit(75)
	}
}
