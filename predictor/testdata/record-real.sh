#!/usr/bin/env bash
# Records the real-program traces in testdata/real with pagecast itself: a
# Linux guest (the host's Debian kernel, a busybox initramfs holding the
# program and its shared libraries) under QEMU with TCG, profiled through
# pagecast's TCG plugin in epochs of 100 ms, from boot until the program
# ends. Needs Go (it builds pagecast, and xz's input is the first 3 MB of a
# tar of Go's own src, so it follows the Go version), QEMU
# (qemu-system-x86), busybox-static and the programs below on the host; no
# KVM. The epochs are wall-clock time under TCG, so a faster or less
# loaded host records fewer of them for the same writes (a walk on
# 2026-12-04: the same programs in 317-447 epochs where the committed
# traces have 485-700, their pages the same within 0.15%), and the dirty
# rates, hence the links the simulations pick, scale with it. Run from the
# repository root:
#   predictor/testdata/record-real.sh [NAME...]    (default: all)
# With PARTS=4 it records in epochs of 25 ms instead, into testdata/parts
# (every program but awk and tar, which are imported as they are): scored
# with predict eval --parts 4, epochs of 100 ms whose model is told in
# which quarter of each a page was written.
set -euo pipefail
out=predictor/testdata/real
epoch=100ms
if [ "${PARTS:-1}" != 1 ]; then
	out=predictor/testdata/parts
	epoch=$((100000 / PARTS))us
fi
mkdir -p "$out"
work=$(mktemp -d "${TMPDIR:-/tmp}/pagecast-real-XXXX")
vm= # the VM under way, stopped on any exit (walk 109: a failed profile left it running)
trap '[ -z "$vm" ] || { kill -INT "$vm" 2>/dev/null; wait "$vm" 2>/dev/null; }; rm -rf "$work"' EXIT
go build -o "$work/pagecast" ./cmd/pagecast
go build -o "$work/mkinitramfs" ./predictor/testdata/mkinitramfs
kernel=$(ls /boot/vmlinuz-* | sort -V | tail -1)

# record NAME MEMORY SCRIPT FILE...: boots a guest of MEMORY that runs
# SCRIPT (after its FILEs, see mkinitramfs) and writes $out/NAME.pct.
record() {
	local name=$1 memory=$2 script=$3
	shift 3
	local dir=$work/$name
	mkdir -p "$dir"
	# The guest waits 2 s after boot, runs the program, then stays up
	# until the trace is written.
	printf 'sleep 2\necho workload start\n%s\necho workload end status=$?\n' "$script" >"$dir/command"
	"$work/mkinitramfs" -dir "$dir" -command "$dir/command" -stay "$@" >/dev/null
	"$work/pagecast" --log-level warn vm run --monitor qemu --accel tcg --memory "$memory" \
		--kernel "$kernel" --initrd "$dir/initramfs.cpio.gz" --qmp "unix:$dir/qmp.sock" >"$dir/vm.out" 2>&1 &
	vm=$!
	# From boot: vm run puts qmp.sock in place once the guest is up, and
	# listens at .qmp.sock.booting until then (README, "QEMU guests"; walk
	# 109: profiled from qmp.sock, the traces began after the boot). Up to
	# 120 s: a loaded host's boot took 56 s.
	local sock=
	for _ in $(seq 2400); do
		for s in "$dir/.qmp.sock.booting" "$dir/qmp.sock"; do [ -S "$s" ] && sock=$s && break 2; done
		kill -0 "$vm" 2>/dev/null || break
		sleep 0.05
	done
	if [ -z "$sock" ]; then
		echo "record-real: $name: no QMP socket from vm run" >&2
		tail -5 "$dir/vm.out" >&2
		exit 1
	fi
	"$work/pagecast" --log-level warn profile --qmp "unix:$sock" --epoch "$epoch" --quiet --out "$out/$name.pct" >"$dir/profile.out" 2>&1 &
	local prof=$!
	local serial
	local ended=
	for _ in $(seq 600); do
		serial=$(sed -n 's/^serial console in //p' "$dir/vm.out")
		[ -n "$serial" ] && grep -q '^workload end' "$serial" 2>/dev/null && ended=1 && break
		kill -0 "$prof" 2>/dev/null || break # the profile failed: said below
		sleep 0.5
	done
	kill -INT "$prof" 2>/dev/null || true
	wait "$prof" || { echo "record-real: $name: profile failed:" >&2; tail -3 "$dir/profile.out" >&2; exit 1; }
	if [ -z "$ended" ]; then
		echo "record-real: $name did not end within 5 minutes; $out/$name.pct holds only its start" >&2
		tail -5 "$dir/vm.out" >&2
		exit 1
	fi
	sed -n "/^workload start/,/^workload end/p" "$serial" | tail -5
	kill -INT "$vm"; wait "$vm" || true
	vm=
	cat "$dir/profile.out" | tail -2
	ls -l "$out/$name.pct"
}

want() { [ ${#names[@]} -eq 0 ] || [[ " ${names[*]} " == *" $1 "* ]]; }
names=("$@")

# awk and tar: the traces of ../shared/traces (see its README), imported as
# they are (a TCG emulator's log of a real Linux guest, 256 MiB).
for name in awk tar; do
	if want $name && [ "$out" = predictor/testdata/real ]; then
		if [ -f "../shared/traces/$name.csv.gz" ]; then
			"$work/pagecast" trace import --memory 256M --epoch 100ms --source "../shared/traces/$name.csv.gz" \
				-o "$out/$name.pct" "../shared/traces/$name.csv.gz"
		else
			echo "record-real: no ../shared/traces/$name.csv.gz beside this repository: $out/$name.pct is kept as it is" >&2
		fi
	fi
done

# xz: compress 3 MB of Go's source tree (text) at preset 4, one thread.
if want xz; then
	tar -cf - -C "$(go env GOROOT)" src 2>/dev/null | head -c 3000000 >"$work/data.tar" || true
	record xz 256M 'cp /data.tar /tmp/ && /opt/bin/xz -4 -T1 -c /tmp/data.tar >/tmp/data.tar.xz && ls -l /tmp/data.tar.xz' \
		/opt/bin/xz=/usr/bin/xz /data.tar="$work/data.tar"
fi

# sqlite: a database in tmpfs: insert 150k rows, index them, aggregate,
# update and delete a share, vacuum.
if want sqlite; then
	cat >"$work/load.sql" <<'SQL'
PRAGMA cache_size=-16000;
CREATE TABLE t(id INTEGER PRIMARY KEY, k TEXT, v INTEGER);
WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM c WHERE x<150000)
  INSERT INTO t SELECT x, hex(randomblob(8)), abs(random())%1000 FROM c;
CREATE INDEX tk ON t(k);
SELECT v, count(*), sum(id) FROM t GROUP BY v ORDER BY 2 DESC LIMIT 3;
UPDATE t SET v=v+1 WHERE id%7=0;
DELETE FROM t WHERE v%10=0;
SELECT count(*), sum(length(k)) FROM t WHERE k > 'A';
VACUUM;
SELECT count(*) FROM t;
SQL
	record sqlite 256M '/opt/bin/sqlite3 /tmp/db.sqlite </load.sql' \
		/opt/bin/sqlite3=/usr/bin/sqlite3 /load.sql="$work/load.sql"
fi

# perl: an interpreter building and churning a graph of hashes and arrays:
# 40k records, indexed, sorted, half of them replaced, joined as text.
if want perl; then
	cat >"$work/churn.pl" <<'PL'
my (%by, @all);
for my $i (1..40000) { my $r = {id => $i, name => "n" . ($i * 7919 % 100003), tags => [map { $_ * $i % 97 } 1..4]};
  push @all, $r; push @{$by{$r->{tags}[0]}}, $r; }
my @sorted = sort { $a->{name} cmp $b->{name} } @all;
for my $round (1..3) { for (my $i = $round; $i < @all; $i += 2) { $all[$i] = {id => $i, name => "r$round-$i", tags => [$round, $i % 13]} } }
my $text = join "\n", map { "$_->{id} $_->{name} @{$_->{tags}}" } @all;
my $n = () = $text =~ /r3-\d+7 /g;
print scalar(@sorted), " ", length($text), " $n\n";
PL
	record perl 256M '/opt/bin/perl /churn.pl' /opt/bin/perl=/usr/bin/perl /churn.pl="$work/churn.pl"
fi

# gcc: compile (cc1, -O2, to assembly) a generated C file of 60 functions.
if want gcc; then
	perl -e 'print "struct s { int a[16]; double d; };\n"; for my $f (0..59) { print
		"int f$f(struct s *p, int n) { int t = 0; for (int i = 0; i < n; i++) { switch ((i * $f) % 5) {",
		" case 0: t += p->a[i % 16] * $f; break; case 1: t ^= p->a[(i + $f) % 16]; break;",
		" case 2: p->d += t * 0.5; break; case 3: t -= (int)p->d; break; default: t += i; } }",
		" return t + f", ($f ? $f - 1 : 0), "(p - 1, n / 2); }\n" }' >"$work/gen.c"
	cc1=$(gcc -print-prog-name=cc1)
	record gcc 256M '/usr/bin/gcc -O2 -S -o /tmp/gen.s /gen.c 2>&1 | tail -3; wc -l /tmp/gen.s' \
		/usr/bin/gcc="$(readlink -f /usr/bin/gcc)" "$cc1" /usr/include/stdc-predef.h /gen.c="$work/gen.c"
fi

# node: a JIT-compiled, garbage-collected runtime: objects built, sorted,
# serialised to JSON and parsed back, in rounds.
if want node; then
	cat >"$work/churn.js" <<'JS'
let keep = [];
for (let round = 0; round < 3; round++) {
  const a = [];
  for (let i = 0; i < 15000; i++) a.push({id: i, name: "n" + ((i * 7919) % 100003), tags: [i % 7, i % 11, round]});
  a.sort((x, y) => (x.name < y.name ? -1 : x.name > y.name ? 1 : 0));
  const back = JSON.parse(JSON.stringify(a));
  keep.push(back.filter((o) => o.id % 10 === round));
  if (keep.length > 3) keep.shift();
}
console.log(keep.length, keep[0].length);
JS
	record node 512M '/opt/bin/node /churn.js' /opt/bin/node=/usr/bin/node /churn.js="$work/churn.js"
fi

# zstd and bzip2: two more compressors, recorded after the model was
# chosen, scored once (docs/predictor.md, "A clean check"): 1 MB of Go
# source at zstd level 19, 3 MB at bzip2 -9.
if want zstd || want bzip2; then
	tar -cf - -C "$(go env GOROOT)" src 2>/dev/null | tail -c 3000000 >"$work/data2.tar" || true
fi
if want zstd; then
	record zstd 256M 'head -c 1000000 /data.tar >/tmp/data.tar && /opt/bin/zstd -19 -T1 -c /tmp/data.tar >/tmp/data.tar.zst && ls -l /tmp/data.tar.zst' \
		/opt/bin/zstd=/usr/bin/zstd /data.tar="$work/data2.tar"
fi
if want bzip2; then
	record bzip2 256M 'cp /data.tar /tmp/ && /opt/bin/bzip2 -9 -c /tmp/data.tar >/tmp/data.tar.bz2 && ls -l /tmp/data.tar.bz2' \
		/opt/bin/bzip2=/usr/bin/bzip2 /data.tar="$work/data2.tar"
fi

ls -l "$out"
