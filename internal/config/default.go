package config

import (
	"fmt"
	"path/filepath"
)

// DefaultConfig returns the config `make run` starts with: SMTP on
// 127.0.0.1:2525, spool, log, accounting and control socket under varDir,
// relaying from 127.0.0.0/8 only, and one <domain *>.
func DefaultConfig(varDir string) string {
	j := func(name string) string { return filepath.Join(varDir, name) }
	return fmt.Sprintf(`# sluice development config, written by sluiced --print-default-config.
# Directives are described in sluice.conf(5).

host-name localhost.localdomain
postmaster postmaster@localhost.localdomain
smtp-listener 127.0.0.1:2525
spool %s
log-file %s
control-socket %s

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
`, j("spool"), j("log/sluice.log"), j("run/control.sock"), j("log/acct.csv"))
}
