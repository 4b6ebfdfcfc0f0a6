#!/usr/bin/env bash
# Run a command as on a machine without KVM: in a private mount namespace
# whose /dev lacks the kvm node (the rest is bound from the real /dev).
# Needs root (unshare -m). For example:
#   scripts/without-kvm.sh make test
#   scripts/without-kvm.sh make demo
set -euo pipefail
if [ $# -eq 0 ]; then
  echo "usage: $0 command [args...]" >&2
  exit 2
fi
exec unshare -m --propagation private bash -c '
set -e
real=/run/pagecast-real-dev # one empty directory, mounted on only inside each namespace
mkdir -p "$real"
mount --rbind /dev "$real"
mount -t tmpfs -o mode=755 none /dev
for n in null zero full random urandom tty ptmx kmsg net/tun fuse; do
  [ -e "$real/$n" ] || continue
  mkdir -p "/dev/$(dirname $n)"
  touch "/dev/$n"
  mount --bind "$real/$n" "/dev/$n"
done
mkdir -p /dev/pts /dev/shm /dev/mqueue
mount --rbind "$real/pts" /dev/pts
mount --rbind "$real/shm" /dev/shm
ln -s /proc/self/fd /dev/fd
ln -s /proc/self/fd/0 /dev/stdin
ln -s /proc/self/fd/1 /dev/stdout
ln -s /proc/self/fd/2 /dev/stderr
exec "$@"
' without-kvm "$@"
