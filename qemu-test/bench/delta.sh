#!/usr/bin/env bash
# Delta restore benchmark (issue 7; docs/ARCHITECTURE.md "Delta restore"). A benchmark,
# not a test: CI does not run it.
#
# Makes a 1 GiB GPT disk with one ext4 partition holding real files (/usr/share/doc,
# /usr/share/locale, /usr/bin, 64 MiB of random data), and version 2 of it with ~5% of
# the files rewritten, deleted or added. Then, in one run, interleaved over ROUNDS rounds
# with the page cache dropped before each measurement, times writing v2 onto a disk that
# holds v1, three ways:
#   full    imprint restore --full (writes every captured chunk)
#   delta   imprint restore (compares the target with the image, writes what differs)
#   casync  casync extract --seed=v1.img onto a copy of v1 (Debian's casync, 64 KiB
#           content-defined chunks over the raw disk)
# and two floors: `same`, a delta restore of v2 onto a disk that already holds v2 (it only
# reads and hashes the target), and `read`, reading that whole disk with cat (the target's
# read speed). Every time includes a final `sync`. Prints each run, medians and ratios.
#
# Needs root (loop mount to change files, drop_caches) and: apt-get install casync gdisk
# e2fsprogs bc.   Usage: qemu-test/bench/delta.sh [ROUNDS]   (default 3)
set -euo pipefail
ROUNDS=${1:-3}
cd "$(dirname "$0")/../.."
. qemu-test/bench/lib.sh
command -v casync >/dev/null || { echo "casync is missing: apt-get install casync" >&2; exit 2; }
cargo build --release -q -p cli
W=$(mktemp -d /var/tmp/imprint-deltabench.XXXXXX)
# A private copy: a rebuild in the shared target directory must not change what is timed.
cp target/release/imprint "$W/imprint"
B=$W/imprint
LOOP=""
cleanup() {
  if [ -n "$LOOP" ]; then umount "$W/mnt" 2>/dev/null || true; losetup -d "$LOOP" || true; fi
  rm -rf "$W"
}
trap cleanup EXIT

# ---- version 1: GPT, one ext4 partition from 1 MiB to 1 MiB before the end ----
truncate -s 1G "$W/v1.img"
start=$((2048 * 512))
size=$(( $(stat -c %s "$W/v1.img") - 2 * 1048576 ))
# No -q: `sgdisk -q` writes nothing to image files (shared/notes/host-kernel.md).
sgdisk -n 1:2048:$(( (start + size) / 512 - 1 )) -t 1:8300 "$W/v1.img" >/dev/null
mkdir -p "$W/root"
cp -a /usr/share/doc /usr/share/locale /usr/bin "$W/root/" 2>/dev/null || true
prng root $((64 << 20)) > "$W/root/incompressible.bin"
mkfs.ext4 -q -F -b 4096 -E offset=$start -d "$W/root" "$W/v1.img" $((size / 4096))
rm -rf "$W/root"

# ---- version 2: ~5% of the files rewritten, deleted or added ----
cp --sparse=always "$W/v1.img" "$W/v2.img"
mkdir -p "$W/mnt"
LOOP=$(losetup -f --show -o "$start" --sizelimit "$size" "$W/v2.img")
mount "$LOOP" "$W/mnt"
total=$(find "$W/mnt" -type f | wc -l)
n=$(change_files "$W/mnt" 4096)
# One large file changed in place in its middle.
prng middle $((2 << 20)) | dd of="$W/mnt/incompressible.bin" bs=1M seek=20 count=2 iflag=fullblock conv=notrunc status=none
umount "$W/mnt"; losetup -d "$LOOP"; LOOP=""
echo "v2: changed $n of $total files (1/3 appended to, 1/3 deleted, 1/3 copied) + 2 MiB inside a 64 MiB file"

# ---- stores: Imprint (v1 then v2, incremental) and casync (v2) ----
"$B" capture "$W/v1.img" "$W/store" --name v1 2>/dev/null
"$B" info "$W/store" v1 | tail -1   # the ext4 partition must say "used blocks"
"$B" --json capture "$W/v2.img" "$W/store" --name v2 | tail -1 > "$W/cap2.json"
echo "imprint capture v2: $(cat "$W/cap2.json")"
casync make --store="$W/castore" "$W/v2.caibx" "$W/v2.img" >/dev/null
# The disk holding v1 as Imprint leaves it (a restore of v1); casync's seed is the raw v1.
"$B" restore "$W/store" v1 "$W/held-v1.img" --yes 2>/dev/null
"$B" restore "$W/store" v2 "$W/held-v2.img" --yes 2>/dev/null

now() { date +%s.%N; }
drop() { sync; echo 3 > /proc/sys/vm/drop_caches; }
# Each method starts from a disk holding v1 (copied, not timed).
run_full() {
  cp --sparse=always "$W/held-v1.img" "$W/t.img"; drop
  t0=$(now); "$B" --json restore "$W/store" v2 "$W/t.img" --yes --force --full | tail -1 > "$W/last.json"; sync; t1=$(now)
}
run_delta() {
  cp --sparse=always "$W/held-v1.img" "$W/t.img"; drop
  t0=$(now); "$B" --json restore "$W/store" v2 "$W/t.img" --yes --force | tail -1 > "$W/last.json"; sync; t1=$(now)
}
run_same() {
  cp --sparse=always "$W/held-v2.img" "$W/t.img"; drop
  t0=$(now); "$B" --json restore "$W/store" v2 "$W/t.img" --yes --force | tail -1 > "$W/last.json"; sync; t1=$(now)
}
run_read() {
  cp --sparse=always "$W/held-v2.img" "$W/t.img"; drop
  t0=$(now); cat "$W/t.img" > /dev/null; t1=$(now)
}
run_casync() {
  cp --sparse=always "$W/v1.img" "$W/t.img"; drop
  # --seed-output=no: casync's implicit seed, the output being overwritten, fails with
  # "Stale file handle"; the explicit seed is v1 itself.
  t0=$(now); casync extract --seed-output=no --store="$W/castore" --seed="$W/v1.img" "$W/v2.caibx" "$W/t.img"; sync; t1=$(now)
}
check() {
  case $1 in
    read) ;;
    casync) cmp -s "$W/t.img" "$W/v2.img" || { echo "casync output differs from v2" >&2; exit 1; } ;;
    *) "$B" verify "$W/store" v2 --against "$W/t.img" 2>/dev/null || { echo "$1: target does not match v2" >&2; exit 1; } ;;
  esac
}

declare -A times
for r in $(seq 1 "$ROUNDS"); do
  for m in full delta casync same read; do
    "run_$m"
    s=$(echo "$t1 - $t0" | bc -l)
    times[$m]="${times[$m]:-} $s"
    extra=""
    case $m in full|delta|same) extra=$(python3 -c 'import json,sys; d=json.load(open(sys.argv[1]))["data"]; print("written %d chunks (%d table), unchanged %d, read %.0f MiB from the target, %.1f MiB from the store" % (d["written_chunks"], d["table_chunks"], d["unchanged_chunks"], d["target_read_bytes"]/2**20, d["read_bytes"]/2**20))' "$W/last.json") ;; *) extra="" ;; esac
    printf 'round %d %-7s %7.2f s  %s\n' "$r" "$m" "$s" "$extra"
    [ "$r" = 1 ] && check "$m"
  done
done

median() { printf '%s\n' $1 | sort -n | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }
mf=$(median "${times[full]}"); md=$(median "${times[delta]}"); mc=$(median "${times[casync]}")
ms=$(median "${times[same]}"); mr=$(median "${times[read]}")
echo
printf 'median of %d: full %.2f s, delta %.2f s, casync --seed %.2f s; unchanged disk %.2f s, reading the disk %.2f s\n' \
  "$ROUNDS" "$mf" "$md" "$mc" "$ms" "$mr"
printf 'delta / full   = %.2f\n' "$(echo "$md / $mf" | bc -l)"
printf 'delta / casync = %.2f\n' "$(echo "$md / $mc" | bc -l)"
printf 'full / casync  = %.2f\n' "$(echo "$mf / $mc" | bc -l)"
printf 'same / read    = %.2f\n' "$(echo "$ms / $mr" | bc -l)"
