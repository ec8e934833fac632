#!/bin/sh
# Last-level cache misses per insert / pop-due / reschedule cycle of the
# spool's timing wheel (BenchmarkWheel's loop) at 10,000 and 1,000,000
# waiting recipients, counted by callgrind's cache simulation (a 32 MiB
# last level): deterministic, where timings on a shared VM are not.
# Needs valgrind. Takes a few minutes.
set -eu
cd "$(dirname "$0")/.."
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
go test -c -o "$tmp/spool.test" ./spool
cycles=300000
for n in 10000 1000000; do
	# One P and no GC: valgrind cannot run the runtime's rdtscp spin path.
	(cd spool && SLUICE_WHEEL_SIZE=$n GOGC=off GOMAXPROCS=1 \
		valgrind --tool=callgrind --cache-sim=yes --LL=33554432,16,64 \
		--toggle-collect='*wheelCycles*' --callgrind-out-file="$tmp/cg.$n" \
		"$tmp/spool.test" -test.run '^$' -test.bench 'Wheel$' -test.benchtime 1x >"$tmp/log.$n" 2>&1)
	callgrind_annotate --show=Ir,DLmr,DLmw "$tmp/cg.$n" | awk -v n=$n -v c=$cycles '
		/PROGRAM TOTALS/ { gsub(",", ""); printf "%8d recipients: %6.0f instructions, %5.2f LL read misses, %5.2f LL write misses per cycle\n", n, $1/c, $3/c, $5/c }'
	callgrind_annotate --show=DLmr --sort=DLmr "$tmp/cg.$n" | awk '/file:function/ { on = 1; getline; next } on && NF == 0 { exit } on && k++ < 3 { print "           " $0 }'
done
