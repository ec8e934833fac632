#!/bin/sh
# Create sluice's accounts before the files are unpacked, so dpkg and rpm
# give the packaged files their owners by name (a missing name would fall
# back to root: a setgid-root sluice-postdrop). Idempotent.
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
exit 0
