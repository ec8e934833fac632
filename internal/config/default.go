package config

import (
	"fmt"
	"os/user"
	"path/filepath"
)

// DefaultConfig returns the config `make run` starts with: SMTP on
// 127.0.0.1:2525, spool, log, accounting and control socket under varDir,
// relaying from 127.0.0.0/8 only, and one <domain *>.
//
// It runs as the user who asked for it: a development daemon must not
// depend on a `sluice` account existing.
func DefaultConfig(varDir string) string {
	j := func(name string) string { return filepath.Join(varDir, name) }
	runAs := "sluice"
	if u, err := user.Current(); err == nil {
		runAs = u.Username
	}
	return fmt.Sprintf(`# sluice development config, written by sluiced --print-default-config.
# Directives are described in sluice.conf(5).

host-name localhost.localdomain
postmaster postmaster@localhost.localdomain
smtp-listener 127.0.0.1:2525
spool %s
log-file %s
control-socket %s
run-as-user %s

# Loopback clients may relay; everyone else may only send to relay-domain.
<source 127.0.0.0/8>
    always-allow-relaying yes
    smtp-service yes
</source>

<source 0/0>
    always-allow-relaying no
    smtp-service yes
</source>

<acct-file %s>
    records d,b
</acct-file>

<domain *>
    max-smtp-out 20
    retry-after 10m
    bounce-after 4d12h
</domain>
`, j("spool"), j("log/sluice.log"), j("run/control.sock"), runAs, j("log/acct.csv"))
}
