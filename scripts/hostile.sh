#!/usr/bin/env bash
# hostile.sh — issue 16's acceptance 1: every crafted input gets one line of
# error or a correct answer in under a second with a peak RSS under 200 MB.
# Builds pagecast, writes the inputs (the small ones are testdata/hostile,
# the large ones are built by the trace tests) and runs each command under
# /usr/bin/time -v. Prints one row per command; exits 1 if any is over.
set -uo pipefail
cd "$(dirname "$0")/.."
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
go build -o "$dir/pagecast" ./cmd/pagecast || exit 1
go test ./trace -run TestHostileFiles -hostile.write "$dir" >/dev/null || exit 1
pc="$dir/pagecast"
fail=0
check() { # check NAME ARGS...: run, report seconds, peak RSS and the last line of output
	local name=$1; shift
	/usr/bin/time -v -o "$dir/time" "$pc" "$@" >"$dir/out" 2>&1
	local rc=$?
	local rss secs
	rss=$(awk -F': ' '/Maximum resident set size/ {print int($2/1024)}' "$dir/time")
	secs=$(awk -F': ' '/Elapsed \(wall clock\)/ {n=split($2,a,":"); s=0; for(i=1;i<=n;i++) s=s*60+a[i]; print s}' "$dir/time")
	local verdict=ok
	if (( rss >= 200 )) || awk "BEGIN{exit !($secs >= 1)}"; then verdict=OVER; fail=1; fi
	printf '%-4s %-40s exit %d  %5.2f s  %4d MB  %s\n' "$verdict" "$name" "$rc" "$secs" "$rss" "$(grep -v '^\s*$' "$dir/out" | tail -1 | cut -c1-110)"
}
for f in header-2p50-page1 header-16eib header-1tib header-64mib-page1 index-gap-2p63 index-gap-2p32 index-gap-1e8; do
	check "predict eval $f" predict eval "$dir/$f.pct"
done
check "trace info header-1tib" trace info "$dir/header-1tib.pct"
check "trace info index-gap-2p32" trace info "$dir/index-gap-2p32.pct"
check "trace info page-beyond" trace info "$dir/page-beyond.pct"
check "trace info damage-false-markers-16mib" trace info "$dir/damage-false-markers-16mib.pct"
check "trace info sparse-5m-pages" trace info "$dir/sparse-5m-pages.pct"
check "trace import csv-gaps" trace import --memory 1G --epoch 100ms -o "$dir/gaps.pct" "$dir/csv-gaps.csv"
check "predict eval csv-gaps" predict eval --memory 1G "$dir/csv-gaps.csv"
check "predict eval csv-bom" predict eval --memory 1G --warmup 0 "$dir/csv-bom.csv"
check "predict eval --memory 100000G" predict eval --memory 100000G --warmup 0 "$dir/csv-bom.csv"
check "predict eval --page-size 1" predict eval --memory 64M --page-size 1 "$dir/csv-bom.csv"
check "predict serve --speed 1e9" predict serve --trace "$dir/header-1tib.pct" --speed 1e9
check "predict serve --speed NaN" predict serve --trace "$dir/header-1tib.pct" --speed NaN
check "predict serve 16 EiB" predict serve --trace "$dir/header-16eib.pct"
# predict serve on the 1 TiB header: time to serve, then SIGTERM.
"$pc" predict serve --trace "$dir/header-1tib.pct" --listen 127.0.0.1:0 >"$dir/serve" 2>&1 &
pid=$!
start=$(date +%s.%N)
until grep -q serving "$dir/serve" 2>/dev/null; do sleep 0.02; done
ready=$(awk "BEGIN{print $(date +%s.%N) - $start}")
rss=$(awk '/VmHWM/ {print int($2/1024)}' /proc/$pid/status)
kill -TERM $pid; wait $pid; rc=$?
verdict=ok; if (( rss >= 200 )) || awk "BEGIN{exit !($ready >= 1)}"; then verdict=OVER; fail=1; fi
printf '%-4s %-40s exit %d  %5.2f s  %4d MB  %s\n' "$verdict" "predict serve header-1tib (to serving)" "$rc" "$ready" "$rss" "then SIGTERM"
exit $fail
