#!/usr/bin/env bash
# Regenerates the Postfix golden files under compat/testdata/postfix/ from a
# real Postfix (Debian's package, installed by scripts/install-test-peers.sh).
#
# It runs a private Postfix instance: its own config_directory, queue and
# data directories in a temp dir, no inet services at all in master.cf (so
# nothing listens on any port), every transport "retry:" so every message
# stays deferred with a known reason. It never touches /etc/postfix or the
# system's queue. Needs root (Postfix's master and postdrop).
#
#   bash compat/testdata/postfix-golden.sh [OUTDIR]   # writes the goldens (takes minutes)
#   KEEP=1 bash compat/testdata/postfix-golden.sh     # leaves the instance running
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
out=${1:-$here/postfix}  # output directory (default: the committed goldens)
mkdir -p "$out"
P=$(mktemp -d /tmp/sluice-pfgolden.XXXXXX)
chmod 755 "$P" # Postfix daemons run as the postfix user
export TZ=UTC
mkdir -p "$P/etc" "$P/spool" "$P/data"
chown postfix "$P/data"
cat >"$P/etc/main.cf" <<CF
compatibility_level = 3.6
config_directory = $P/etc
queue_directory = $P/spool
data_directory = $P/data
mail_owner = postfix
setgid_group = postdrop
myhostname = golden.example
mydomain = golden.example
myorigin = golden.example
mydestination =
inet_interfaces = loopback-only
inet_protocols = ipv4
enable_long_queue_ids = yes
default_transport = retry:golden test deferral
relay_transport = retry:golden test deferral
local_transport = retry:golden test deferral
transport_maps = inline:{ { other.example = retry:4.4.1 other.example is having a bad day } }
maillog_file = $P/maillog
maillog_file_prefixes = $P
syslog_name = postfix-golden
alias_maps =
alias_database =
smtputf8_enable = no
queue_run_delay = 3600s
minimal_backoff_time = 3600s
CF
cat >"$P/etc/master.cf" <<'CF'
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
CF
stop() {
  if [ -z "${KEEP:-}" ]; then
    postfix -c "$P/etc" stop >/dev/null 2>&1 || true
    sleep 1
    rm -rf "$P"
  else
    echo "instance left running: postfix -c $P/etc stop" >&2
  fi
}
trap stop EXIT
# Postfix prints its diagnostics only to a terminal; script(1) gives it one.
script -qec "postfix -c $P/etc start" /dev/null >/dev/null
sleep 1

ids() { postqueue -c "$P/etc" -j | python3 -c '
import json, sys
for l in sys.stdin:
    m = json.loads(l)
    print(m["queue_name"], m["queue_id"])'; }

# The empty queue, before anything is submitted.
postqueue -c "$P/etc" -p >"$out/mailq-empty.txt"

while IFS=$'\t' read -r -u 3 name stdin args; do
  case "$name" in ''|'#'*) continue ;; esac
  before=$(ids | awk '{print $2}' | sort)
  rc=0
  eval "set -- $args"
  script -qec "$(printf '%q ' sendmail -C "$P/etc" "$@") < $here/stdin/$stdin" /dev/null \
    >"$out/$name.err" || rc=$?
  tr -d '\r' <"$out/$name.err" >"$out/$name.err.tmp" && mv "$out/$name.err.tmp" "$out/$name.err"
  echo "$rc" >"$out/$name.rc"
  rm -f "$out/$name.postcat"
  [ "$rc" = 0 ] || continue
  for _ in $(seq 1 50); do
    new=$(comm -13 <(echo "$before") <(ids | awk '$1=="deferred"{print $2}' | sort) | head -1)
    [ -n "$new" ] && break
    sleep 0.2
  done
  if [ -z "$new" ]; then
    # Modes that queue nothing (-q5m, -bh) exit 0 with no message.
    continue
  fi
  postcat -c "$P/etc" -q "$new" >"$out/$name.postcat"
done 3<"$here/invocations.tsv"

# One message on hold for the '!' marker, then the listings.
hold=$(ids | awk '$1=="deferred"{print $2}' | sort | head -1)
script -qec "postsuper -c $P/etc -h $hold" /dev/null | tr -d '\r' >"$out/postsuper-h.txt"
postqueue -c "$P/etc" -p >"$out/mailq.txt"
postqueue -c "$P/etc" -j >"$out/mailq.jsonl"
script -qec "postsuper -c $P/etc -H $hold" /dev/null | tr -d '\r' >"$out/postsuper-H.txt"
script -qec "postsuper -c $P/etc -d ALL deferred" /dev/null | tr -d '\r' >"$out/postsuper-d-all.txt"
script -qec "postsuper -c $P/etc -d NOSUCHIDXXXXXXXX" /dev/null | tr -d '\r' >"$out/postsuper-d-missing.txt" || true
postconf -d mail_version >"$out/VERSION"
