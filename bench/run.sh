#!/usr/bin/env bash
# End-to-end throughput: Postfix's smtp-source (20 sessions, 2 KiB
# messages) into sluiced, which relays everything to Postfix's smtp-sink.
# Runs for DURATION seconds (default 60) and prints accepted and delivered
# messages per second, counted from sluiced's own log lines.
#
#   bash bench/run.sh            # 60 s
#   DURATION=20 bash bench/run.sh
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${DURATION:-60}
SESSIONS=${SESSIONS:-20}
SIZE=${SIZE:-2048}

for c in smtp-source smtp-sink; do
  command -v "$c" >/dev/null || [ -x "/usr/sbin/$c" ] || { echo "bench: $c missing (make test-peers)" >&2; exit 1; }
done
[ -x bin/sluiced ] || { echo "bench: bin/sluiced missing (make build)" >&2; exit 1; }

work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

freeport() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
in_port=$(freeport)
sink_port=$(freeport)

cat >"$work/sluice.conf" <<CONF
host-name bench.sluice.test
smtp-listener 127.0.0.1:$in_port
spool $work/spool
log-file $work/log/sluice.log
control-socket $work/control.sock
run-as-user $(id -un)
<source 127.0.0.0/8>
    always-allow-relaying yes
</source>
<acct-file $work/log/acct.csv>
    records d,b
</acct-file>
<domain *>
    route [127.0.0.1]:$sink_port
    max-smtp-out 20
</domain>
CONF

/usr/sbin/smtp-sink -u "$(id -un)" "127.0.0.1:$sink_port" 256 >/dev/null 2>&1 &
pids+=($!)
bin/sluiced --config "$work/sluice.conf" 2>"$work/stderr" &
pids+=($!)
for _ in $(seq 50); do
  (exec 3<>"/dev/tcp/127.0.0.1/$in_port") 2>/dev/null && break
  sleep 0.1
done

/usr/sbin/smtp-source -s "$SESSIONS" -l "$SIZE" -m 100000000 -f bench@sender.test -t r@rcpt.test "127.0.0.1:$in_port" >/dev/null 2>&1 &
src=$!
pids+=($src)
start=$(date +%s.%N)
sleep "$DURATION"
kill "$src" 2>/dev/null || true
end=$(date +%s.%N)
accepted=$(grep -c '(queue active)' "$work/log/sluice.log" || true)
sleep 2
delivered_at_stop=$(grep -c 'status=sent' "$work/log/sluice.log" || true)
elapsed=$(python3 -c "print($end-$start)")
python3 - "$accepted" "$delivered_at_stop" "$elapsed" "$SESSIONS" "$SIZE" <<'PY'
import sys
acc, dlv, el, s, size = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3]), sys.argv[4], sys.argv[5]
print(f"bench: smtp-source {s} sessions x {size} B -> sluiced -> smtp-sink for {el:.1f} s")
print(f"bench: accepted {acc} ({acc/el:.0f} msg/s), delivered {dlv} ({dlv/el:.0f} msg/s, counted 2 s after the load stopped)")
PY
