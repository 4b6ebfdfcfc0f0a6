#!/usr/bin/env bash
# qemu-new-tests.sh — make test's last pass: the tests where pagecast meets
# QEMU's differences, run again on a newer QEMU than the system's (QEMU
# 10.0 from bookworm-backports beside Debian 12's 7.2; scripts/qemu-new.sh
# fetches it into DIR). They find qemu-system-x86_64 on PATH, which this
# puts DIR's first on. go test -json goes to stdout, for testsummary;
# where the newer QEMU cannot be had, stderr says so and nothing runs.
#
#   scripts/qemu-new-tests.sh DIR [GO]
set -uo pipefail

dir=${1:?usage: $0 DIR [GO]}
go=${2:-go}
errf=$(mktemp)
trap 'rm -f "$errf"' EXIT
if ! bin=$(scripts/qemu-new.sh "$dir" 2>"$errf"); then
	cat "$errf" >&2
	# Said as a skipped test, which testsummary counts as one wanting
	# QEMU, not only on stderr: a green run without it is thinner.
	why=$(tail -1 "$errf" | tr -d '"\\' | tr -cd '[:print:]')
	for e in '"Action":"start"' \
		'"Action":"output","Test":"TestOnNewerQEMU","Output":"needs QEMU 10.0 beside the system'"'"'s (scripts/qemu-new.sh): '"$why"'\n"' \
		'"Action":"skip","Test":"TestOnNewerQEMU"' '"Action":"skip"'; do
		echo "{\"Package\":\"qemu-new\",$e}"
	done
	exit 0
fi
cat "$errf" >&2
export PATH=$bin:$PATH
echo "make test: last pass on $(qemu-system-x86_64 --version | head -1), from $bin" >&2
status=0
# The plugin (its API version), its addresses above 4 GiB, pagecast's
# engine on pc and Linux guests, a memfd source refused for it, QEMU's own migration keeping a TCG
# guest's writes (9.0's fix) and engine auto taking it for a destination
# listening itself, -incoming's status before a stream, the demo, profiles.
"$go" test -json -count=1 -timeout 10m ./tcg/ || status=1
"$go" test -json -count=1 -timeout 10m -run '^(TestDirtyLogHighMemory|TestEngine|TestEngineLinux|TestAttach)$' ./qemuguest/ || status=1
"$go" test -json -count=1 -timeout 10m \
	-run '^(TestQEMUMigrationKeepsWritesTCG|TestMigrateQEMU|TestDemoQEMU|TestProfileTCG|TestIncomingQEMU.*|TestLinuxVCPUs|TestMigrateMemfdSource|TestReceiveHandStartedQEMU|TestEngineFollowsDestination|TestQEMUToReceiverAuto)$' ./cmd/pagecast/ || status=1
exit $status
