#!/bin/sh
# Make sure the accounts exist (preinstall may have been skipped, e.g. by
# an unpack-only tool), then give the directories and the maildrop helper
# the owners and modes of docs/privilege.md. chown clears setgid bits, so
# every chmod comes after its chown.
set -e

nologin=/usr/sbin/nologin
[ -x "$nologin" ] || nologin=/sbin/nologin

getent group sluice >/dev/null 2>&1 || groupadd --system sluice
getent group sluicedrop >/dev/null 2>&1 || groupadd --system sluicedrop
getent group adm >/dev/null 2>&1 || groupadd --system adm
if ! getent passwd sluice >/dev/null 2>&1; then
	useradd --system --gid sluice --home-dir /var/spool/pmta --no-create-home \
		--shell "$nologin" --comment "sluice mail transfer agent" sluice
fi

# The spool: the daemon's alone, but the setgid helper (caller's uid, group
# sluicedrop) must traverse it to reach the maildrop.
chown sluice:sluicedrop /var/spool/pmta
chmod 0710 /var/spool/pmta
# Maildrop: sluicedrop may create files, only the daemon may list them, and
# nobody may remove another's file (sticky).
chown sluice:sluicedrop /var/spool/pmta/maildrop
chmod 1730 /var/spool/pmta/maildrop
chown sluice:adm /var/log/pmta
chmod 0750 /var/log/pmta
chown root:sluicedrop /usr/sbin/sluice-postdrop
chmod 2755 /usr/sbin/sluice-postdrop
# The config may hold secrets (auth, keys' paths): root writes, sluice reads.
chown root:sluice /etc/pmta/config
chmod 0640 /etc/pmta/config

if [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then
	systemctl daemon-reload >/dev/null 2>&1 || true
	# Enabled, not started: set host-name in /etc/pmta/config first, then
	# `systemctl start sluice`. An upgrade restarts a running daemon.
	systemctl enable sluice.service >/dev/null 2>&1 || true
	systemctl try-restart sluice.service >/dev/null 2>&1 || true
fi
exit 0
