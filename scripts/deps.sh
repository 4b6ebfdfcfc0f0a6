#!/usr/bin/env bash
# deps.sh — install the Debian packages a make target needs, if missing.
#
#   scripts/deps.sh demo   what `make demo` needs: QEMU where there is no /dev/kvm
#   scripts/deps.sh test   what `make test` and .ci/run need: QEMU, the C and eBPF
#                          tool chains, Prometheus, a Debian kernel and busybox
#
# Idempotent: packages already present are not touched, and nothing runs
# apt-get when all are. It installs as root, or through sudo where that
# works without a password; otherwise it names what is missing and what
# goes without it, and exits 0 so the target still runs (a test that needs
# a missing package skips and says which).
set -euo pipefail

what=${1:-test}
case $what in
demo)
	packages=()
	# Without /dev/kvm the demo runs its guest under QEMU's TCG.
	[ -c /dev/kvm ] || packages+=(qemu-system-x86)
	;;
test)
	packages=(
		qemu-system-x86   # the reference monitor: same guest image, QMP, migration baseline; TCG without KVM
		gcc-multilib      # gcc -m32 for the guest image (make guest)
		clang llvm libbpf-dev bpftool # eBPF programs (make generate)
		prometheus        # promtool and a real Prometheus for dashboard checks
		busybox-static    # the initramfs of the real Linux guest, built at test time
		linux-image-amd64 # the real Linux guest's kernel (/boot/vmlinuz-*) for QEMU
	)
	;;
*)
	echo "usage: $0 demo|test" >&2
	exit 2
	;;
esac

missing=()
for p in "${packages[@]}"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
((${#missing[@]})) || exit 0

if ! command -v apt-get >/dev/null; then
	echo "deps: missing ${missing[*]}, and no apt-get here to install them: install them by hand (Debian's names)" >&2
	exit 0
fi
log=${TMPDIR:-/tmp}/pagecast-deps.log
sudo=""
if [ "$(id -u)" -ne 0 ]; then
	if ! sudo -n true 2>/dev/null; then
		echo "deps: missing ${missing[*]}; run as root, or: sudo apt-get install ${missing[*]}" >&2
		echo "deps: going on without them (tests that need them skip and say why)" >&2
		exit 0
	fi
	sudo=sudo
fi
echo "deps: installing ${missing[*]} (make $what needs them; apt's output in $log)" >&2
# env, not a prefix: sudo drops the caller's environment. The kernel's
# postinst builds an initrd, unattended.
if ! { $sudo apt-get update -qq && $sudo env DEBIAN_FRONTEND=noninteractive \
	apt-get install -y -qq --no-install-recommends "${missing[@]}"; } >"$log" 2>&1; then
	tail -20 "$log" >&2
	echo "deps: apt-get failed installing ${missing[*]}; the whole output is in $log" >&2
	exit 1
fi
echo "deps: installed ${missing[*]}" >&2
