#!/usr/bin/env bash
# Records the guest-workload traces in this folder with pagecast itself:
# a 16 MiB pagecast VM per workload, profiled with eBPF for 60 epochs of
# 250 ms. Needs root and /dev/kvm. Run from the repository root:
#   predictor/testdata/record.sh
set -euo pipefail
bin=$(mktemp -d)/pagecast
go build -o "$bin" ./cmd/pagecast
out=predictor/testdata
declare -A workloads=(
	[hotset]="hotset:hot=256,p=0.9,delay=100"
	[zipf]="zipf:delay=100"
	[phased]="phased:hot=256,p=0.9,period=5000,delay=100"
	[sweep]="sweep:delay=200"
	[uniform]="uniform:delay=200"
)
for name in "${!workloads[@]}"; do
	sock=$(mktemp -u /tmp/pagecast-rec-XXXX.sock)
	"$bin" --log-level warn vm run --monitor pagecast --memory 16M --workload "${workloads[$name]}" --qmp "unix:$sock" &
	vm=$!
	for _ in $(seq 100); do [ -S "$sock" ] && break; sleep 0.05; done
	sleep 0.5
	"$bin" --log-level warn profile --qmp "unix:$sock" --epoch 250ms --duration 15.1s --quiet --out "$out/$name.pct"
	kill -INT "$vm"; wait "$vm" || true
done
ls -l "$out"/*.pct
