#!/usr/bin/env bash
# qemu-new.sh — bring a newer QEMU beside the system's, for the tests that
# run pagecast on a second QEMU (make test's last pass).
#
#   scripts/qemu-new.sh DIR   prints DIR/bin, where qemu-system-x86_64 is
#
# Debian 12's QEMU is 7.2; Debian 13's, and bookworm-backports', 10.0.
# Between them QEMU changed what pagecast meets: the TCG plugin's API
# (9.0 loads no plugin of version 1), the address a store's page is named
# by (8.2), and its own migration under TCG (9.0 no longer loses writes).
# This fetches qemu-system-x86 and the packages of its data from
# bookworm-backports with apt-get download, through a sources list and
# state of its own in DIR (the system's apt and dpkg are not touched, and
# need not be root), and unpacks them into DIR with dpkg-deb. The libraries
# it links are Debian 12's, which the system's QEMU brings. Debian's QEMU
# looks for its option ROMs in /usr/share/qemu, the system's (7.2's: review
# 112 found QEMU 10 loading 7.2's kvmvapic.bin), so DIR/bin/qemu-system-x86_64
# runs it with -L DIR/usr/share/qemu first; its BIOS is the system's
# seabios, in /usr/share/seabios, after that.
#
# Idempotent: a DIR that has the binary already is printed as it is. It
# exits 1 with the reason on stderr where the packages cannot be had (no
# network, no apt-get): the caller goes on without the second QEMU.
set -euo pipefail

dir=${1:?usage: $0 DIR}
suite=bookworm-backports
bin=$dir/bin
# wrap writes DIR/bin/qemu-system-x86_64: exec keeps the pid, as pagecast
# expects of the QEMU it started; bash, whose %q quoting it reads.
wrap() {
	mkdir -p "$bin"
	printf '#!/bin/bash\nexec %q -L %q "$@"\n' "$dir/usr/bin/qemu-system-x86_64" "$dir/usr/share/qemu" >"$bin/qemu-system-x86_64.new"
	chmod +x "$bin/qemu-system-x86_64.new"
	mv "$bin/qemu-system-x86_64.new" "$bin/qemu-system-x86_64"
}
if [ -x "$bin/qemu-system-x86_64" ] && "$bin/qemu-system-x86_64" --version >/dev/null 2>&1; then
	echo "$bin"
	exit 0
fi
# Unpacked by an earlier version of this script, without the wrapper.
if [ -x "$dir/usr/bin/qemu-system-x86_64" ] && "$dir/usr/bin/qemu-system-x86_64" --version >/dev/null 2>&1; then
	wrap
	echo "$bin"
	exit 0
fi
for tool in apt-get dpkg-deb; do
	command -v "$tool" >/dev/null || { echo "qemu-new: no $tool here" >&2; exit 1; }
done
keyring=/usr/share/keyrings/debian-archive-keyring.gpg
[ -r "$keyring" ] || { echo "qemu-new: no $keyring to check Debian's signatures with" >&2; exit 1; }

apt=$dir/.apt
mkdir -p "$apt/lists/partial" "$apt/archives/partial" "$apt/debs"
echo "deb [signed-by=$keyring] http://deb.debian.org/debian $suite main" >"$apt/sources.list"
: >"$apt/status"
opts=(-o "Dir::Etc::SourceList=$apt/sources.list" -o "Dir::Etc::SourceParts=/dev/null"
	-o "Dir::State::Lists=$apt/lists" -o "Dir::State::Status=$apt/status"
	-o "Dir::Cache=$apt" -o "Dir::Cache::Archives=$apt/archives"
	-o "Debug::NoLocking=1" -o "APT::Sandbox::User=root" -qq)
log=$apt/log
# --error-on=any: without it an update that reached nothing exits 0, and
# the download after it says only that it cannot find the package.
if ! apt-get "${opts[@]}" --error-on=any update >"$log" 2>&1; then
	tail -5 "$log" >&2
	echo "qemu-new: apt-get update from $suite failed (the whole output is in $log)" >&2
	exit 1
fi
# qemu-system-x86 and its data, at one version (an older download's
# packages, left by a failed try, are not unpacked with them).
rm -f "$apt"/debs/*.deb
if ! (cd "$apt/debs" && apt-get "${opts[@]}" download \
	"qemu-system-x86/$suite" "qemu-system-common/$suite" "qemu-system-data/$suite") >>"$log" 2>&1; then
	tail -5 "$log" >&2
	echo "qemu-new: apt-get download from $suite failed (the whole output is in $log)" >&2
	exit 1
fi
for deb in "$apt"/debs/*.deb; do
	dpkg-deb -x "$deb" "$dir"
done
wrap
if ! out=$("$bin/qemu-system-x86_64" --version 2>&1); then
	echo "qemu-new: the unpacked QEMU does not run here: $out" >&2
	exit 1
fi
echo "qemu-new: ${out%%$'\n'*} in $bin" >&2
echo "$bin"
