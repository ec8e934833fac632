#!/bin/sh
# Stop and disable the daemon on removal, not on upgrade: dpkg passes
# "remove", rpm passes the count of versions left (0 on removal).
set -e

case "$1" in
remove | 0) ;;
*) exit 0 ;;
esac
if command -v systemctl >/dev/null 2>&1; then
	systemctl stop sluice.service >/dev/null 2>&1 || true
	systemctl disable sluice.service >/dev/null 2>&1 || true
fi
exit 0
