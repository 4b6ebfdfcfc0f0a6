#!/usr/bin/env bash
# dashboard-pictures.sh — the README's dashboard pictures from a real run,
# without Grafana: a Prometheus (Debian package prometheus) on loopback
# scrapes pagecast profile of a 128 MiB QEMU guest (TCG where there is no KVM),
# pagecast predict serve --replay of the trace it recorded, and pagecast
# migrate --metrics of the guest; then pagecast report renders every panel
# of every dashboard as PNG into OUT, each dashboard over the time its
# processes ran. Without OUT, the README's pictures in dashboards/pictures
# are refreshed. About a minute.
# Usage: scripts/dashboard-pictures.sh [OUT]
set -euo pipefail
cd "$(dirname "$0")/.."
dir=$(mktemp -d)
out=${1:-$dir/all}
pids=()
cleanup() {
	for p in "${pids[@]}"; do kill -INT "$p" 2>/dev/null || true; done
	wait 2>/dev/null || true
	rm -rf "$dir"
}
trap cleanup EXIT
go build -o "$dir/pagecast" ./cmd/pagecast
pc="$dir/pagecast"
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
prom=127.0.0.1:$(port) profile=127.0.0.1:$(port) serve=127.0.0.1:$(port) migrate=127.0.0.1:$(port) incoming=127.0.0.1:$(port)
cp dashboards/rules.yml "$dir/rules.yml"
cat >"$dir/prometheus.yml" <<CFG
global:
  scrape_interval: 1s
  evaluation_interval: 1s
rule_files: [$dir/rules.yml]
scrape_configs:
  - job_name: pagecast-profile
    static_configs: [{targets: ['$profile']}]
  - job_name: pagecast-predict
    static_configs: [{targets: ['$serve']}]
  - job_name: pagecast-migrate
    static_configs: [{targets: ['$migrate']}]
CFG
prometheus --config.file="$dir/prometheus.yml" --storage.tsdb.path="$dir/tsdb" --web.listen-address="$prom" --log.level=warn &
pids+=($!)
"$pc" --log-level warn vm run --monitor qemu --memory 128M --workload hotset:hot=1024,p=0.95,delay=25000 --qmp "unix:$dir/src.sock" >"$dir/src.log" &
pids+=($!)
"$pc" --log-level warn vm run --monitor qemu --memory 128M --incoming "tcp:$incoming" --qmp "unix:$dir/dst.sock" >"$dir/dst.log" &
pids+=($!)
until grep -q "guest up" "$dir/src.log"; do sleep 0.2; done
iso() { date -u -d "@$1" +%Y-%m-%dT%H:%M:%SZ; }
t0=$(date +%s)
"$pc" --log-level warn profile --qmp "unix:$dir/src.sock" --duration 20s --epoch 500ms --out "$dir/hotset.pct" --metrics "$profile" --quiet
s0=$(date +%s)
"$pc" --log-level warn predict serve --trace "$dir/hotset.pct" --replay --listen "$serve" >/dev/null &
pids+=($!)
sleep 10
m0=$(date +%s)
"$pc" --log-level warn migrate --qmp "unix:$dir/src.sock" --to "tcp:$incoming" --mode predictive --profile "$dir/hotset.pct" \
	--bandwidth 24MiB/s --metrics "$migrate" --name hotset --quiet
m1=$(date +%s)
sleep 10
t1=$(date +%s)
report() { # report DASHBOARD FROM TO
	"$pc" report --prometheus "http://$prom" --dashboard "$1" --from "$(iso "$2")" --to "$(iso "$3")" --step 1s --scrape-interval 1s --out "$out"
}
report dirtying "$((s0 - 1))" "$t1" # its profiler row has data from t0 to s0 only
report profiler-health "$t0" "$m0"
report migrations "$((m0 - 2))" "$((m1 + 3))"
if [ -z "${1:-}" ]; then
	for f in dirtying-predicted-vs-actual-dirty-pages-per-epoch dirtying-where-in-memory-it-dirties migrations-status \
		migrations-data-sent-and-remaining migrations-dirty-rate-against-link-rate migrations-expected-vs-actual-downtime \
		profiler-health-recorded-writes-per-second; do
		cp "$out/$f.png" dashboards/pictures/
	done
	echo "README pictures refreshed in dashboards/pictures"
fi
