#!/usr/bin/env bash
# Installs the real peers the tests talk to (Postfix's smtp-source/smtp-sink,
# swaks, OpenDKIM, rspamd, python3-dkim, bsd-mailx) from Debian's packages.
#
# Their daemons must never start on this machine's system ports, so a
# policy-rc.d refusing every start is in place for the duration of the
# install. Postfix is preseeded to "No configuration". Idempotent: when every
# package is present it only checks and exits.
set -euo pipefail

PACKAGES=(
  postfix            # smtp-source, smtp-sink, postcat, differential tests
  swaks              # scripted SMTP client
  opendkim           # DKIM signing milter
  opendkim-tools     # opendkim-genkey
  python3-dkim       # dkim.verify / dkim.arc_verify with a DNS hook
  python3-dnspython
  rspamd             # ARC-sealing milter
  bsd-mailx          # a real sendmail caller
  faketime
  libnet-ssleay-perl # swaks --tls
  rpm                # rpm -qlpv on the built package (packaging test)
)

missing=()
for p in "${PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
    missing+=("$p")
  fi
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "test peers: all installed"
  exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
  echo "test peers missing (${missing[*]}) and not root: cannot install" >&2
  exit 1
fi

echo "test peers: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
policy=/usr/sbin/policy-rc.d
had_policy=0
if [ -e "$policy" ]; then had_policy=1; cp -p "$policy" "$policy.sluice-save"; fi
printf '#!/bin/sh\n# installed by sluice install-test-peers: keep daemons stopped\nexit 101\n' >"$policy"
chmod 755 "$policy"
restore() {
  if [ "$had_policy" = 1 ]; then mv -f "$policy.sluice-save" "$policy"; else rm -f "$policy"; fi
}
trap restore EXIT

echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
apt_opts=(-y -q -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold --no-install-recommends)
if ! apt-get install "${apt_opts[@]}" "${missing[@]}"; then
  apt-get update -q
  apt-get install "${apt_opts[@]}" "${missing[@]}"
fi

# Belt and braces: nothing we installed may be left listening.
for svc in postfix opendkim rspamd redis-server; do
  if command -v systemctl >/dev/null 2>&1; then systemctl stop "$svc" >/dev/null 2>&1 || true; fi
  if [ -x "/etc/init.d/$svc" ]; then "/etc/init.d/$svc" stop >/dev/null 2>&1 || true; fi
done
echo "test peers: done"
