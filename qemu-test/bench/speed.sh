#!/usr/bin/env bash
# Speed benchmark (issue "Speed"): Imprint against the tools people use today, on the same
# generated disk, in one run, interleaved (A B C A B C ...) so the machine's drift cancels.
# A benchmark, not a test: it prints medians and ratios and writes them as JSON; it asserts
# nothing. Needs root (drops the page cache, loop-mounts ext4 to change files) and the
# packages partclone, zstd, casync, time (GNU time), gdisk, dosfstools, mtools, e2fsprogs.
#
#   qemu-test/bench/speed.sh [--size-gib N] [--rounds N] [--json FILE] [--bin IMPRINT] [--dir DIR]
#                            [--generate-only]
#
# --bin runs a given imprint binary instead of building target/release/imprint.
# --dir keeps the generated disks in DIR (not removed at the end) and reuses them when DIR
# already holds them, so repeated runs skip the minutes of generation. --generate-only
# (with --dir) makes the disks and stops.
set -euo pipefail
cd "$(dirname "$0")/../.."
. qemu-test/bench/lib.sh
SIZE_GIB=4
ROUNDS=3
JSON_OUT=qemu-test/out/speed.json
B=
KEEP=
GEN_ONLY=
while [ $# -gt 0 ]; do
  case $1 in
    --size-gib) SIZE_GIB=$2; shift 2 ;;
    --rounds) ROUNDS=$2; shift 2 ;;
    --json) JSON_OUT=$2; shift 2 ;;
    --bin) B=$(realpath "$2"); shift 2 ;;
    --dir) KEEP=$2; shift 2 ;;
    --generate-only) GEN_ONLY=1; shift ;;
    *) echo "usage: $0 [--size-gib N] [--rounds N] [--json FILE] [--bin IMPRINT] [--dir DIR] [--generate-only]" >&2; exit 2 ;;
  esac
done
[ -z "$GEN_ONLY" ] || [ -n "$KEEP" ] || { echo "speed: --generate-only needs --dir (where to keep the disks)" >&2; exit 2; }
for t in partclone.extfs partclone.vfat zstd casync /usr/bin/time sgdisk mkfs.vfat mcopy mkfs.ext4 mkswap bc; do
  command -v "$t" >/dev/null || { echo "speed: $t is missing (apt-get install partclone zstd casync time gdisk dosfstools mtools e2fsprogs bc)" >&2; exit 1; }
done
if [ -z "$B" ] && [ -z "$GEN_ONLY" ]; then
  cargo build --release -q -p cli
  B=$PWD/target/release/imprint
fi
if [ -n "$KEEP" ]; then mkdir -p "$KEEP"; W=$(realpath "$KEEP"); else W=$(mktemp -d /var/tmp/imprint-speed.XXXXXX); fi
# What a run writes, at most (measured at 4 GiB: ~21 GB): the two disks, three restored
# disks, the stores, partclone's and dd's images and casync's store, about 5× the disk
# size. A file system that fills up kills a job half-way; say so before starting.
NEED_KIB=$(( (5 * SIZE_GIB + 2) << 20 ))
HAVE_KIB=$(( $(df --output=avail -k "$W" | tail -1) + $(du -sk "$W" | cut -f1) ))
if [ "$HAVE_KIB" -lt "$NEED_KIB" ]; then
  echo "speed: $W has $((HAVE_KIB >> 20)) GiB free (counting this run's old files), a ${SIZE_GIB} GiB run needs about $((NEED_KIB >> 20)) GiB; free space or pass --dir on a larger file system" >&2
  [ -n "$KEEP" ] || rmdir "$W"
  exit 1
fi
LOOP=""
SRC=""
# What a run makes besides the disks (removed at the end, and before a run in a kept
# --dir, where a killed run may have left them).
clear_outputs() { rm -rf "$W/store" "$W/store2" "$W/pc" "$W/castore" "$W/mnt" "$W"/*.zst "$W"/out*.img "$W"/t.img "$W"/*.caibx "$W/err" "$W/time"; }
cleanup() {
  if [ -n "$LOOP" ]; then umount "$W/mnt" 2>/dev/null || true; losetup -d "$LOOP" || true; fi
  if [ -n "$SRC" ]; then losetup -d "$SRC" || true; fi
  if [ -n "$KEEP" ]; then
    clear_outputs
  else
    rm -rf "$W"
  fi
}
trap cleanup EXIT
export MTOOLS_SKIP_CHECK=1
MIB=1048576

# ---- the disk: GPT; 256 MiB FAT32 ESP with ~100 MB of files; ext4 root with ~1.5 GB of
# real files (system directories + incompressible data); 512 MiB swap; 256 MiB unformatted
# partition of random data; free space everywhere full of stale random data. Reproducible:
# the same bytes from run to run on the same machine (the random data is seeded, the GUIDs,
# UUIDs and tools' timestamps fixed; the real files are this machine's, chosen in sorted
# order), except the file systems' timestamps that come from the clock (the root's inode
# change times, version 2's changes), a few bytes that do not change what is measured.
DISK=$W/v1.img
part_off() { sgdisk -i "$1" "$DISK" | awk '/First sector/ {printf "%.0f\n", $3 * 512}'; }
part_len() { sgdisk -i "$1" "$DISK" | awk '/Partition size/ {printf "%.0f\n", $3 * 512}'; }
if [ -f "$W/generated-${SIZE_GIB}g" ]; then
  echo "speed: reusing the ${SIZE_GIB} GiB disks in $W"
  P1=$(part_off 1); P2=$(part_off 2); L1=$(part_len 1); L2=$(part_len 2)
else
echo "speed: generating a ${SIZE_GIB} GiB disk in $W"
rm -f "$W"/generated-*
prng stale $((SIZE_GIB * 1024 * MIB)) > "$DISK"   # stale data everywhere
ESP_MB=256; SWAP_MB=512; RAW_MB=256
ROOT_MB=$((SIZE_GIB * 1024 - ESP_MB - SWAP_MB - RAW_MB - 4))
sgdisk -n 1:2048:+${ESP_MB}M -t 1:ef00 -n 2:0:+${ROOT_MB}M -t 2:8300 \
       -n 3:0:+${SWAP_MB}M -t 3:8200 -n 4:0:+${RAW_MB}M -t 4:8300 -U "$BENCH_UUID" \
       -u "1:${BENCH_UUID%?}1" -u "2:${BENCH_UUID%?}2" -u "3:${BENCH_UUID%?}3" -u "4:${BENCH_UUID%?}4" \
       "$DISK" >/dev/null
P1=$(part_off 1); P2=$(part_off 2); P3=$(part_off 3)
L1=$(part_len 1); L2=$(part_len 2); L3=$(part_len 3)
# ESP: mkfs over stale data inside the disk file (mkfs.vfat -C wants a new file, so build it
# in a separate file that starts as the stale bytes).
dd if="$DISK" of="$W/p1" bs=1M skip=$((P1 / MIB)) count=$((L1 / MIB)) status=none
mkfs.vfat -F 32 -n ESP --invariant "$W/p1" >/dev/null
mkdir -p "$W/esp/EFI" "$W/esp/docs"
# ~60 MB of real files in a few hundred of the larger ones (mtools is slow per file).
find /usr/lib/x86_64-linux-gnu /usr/share -xdev -type f -size +100k -printf '%s %p\n' 2>/dev/null \
  | sort -k2 | awk -v max=$((60 * MIB)) '{ s += $1; if (s > max) exit; sub(/^[0-9]+ /, ""); print }' \
  | while read -r f; do cp "$f" "$W/esp/docs/$(echo "$f" | tr / _)"; done || true  # awk's early exit: SIGPIPE upstream
prng esp $((40 * MIB)) > "$W/esp/EFI/random.bin"
mcopy -s -m -i "$W/p1" "$W/esp/EFI" "$W/esp/docs" :: 2>/dev/null
rm -rf "$W/esp"
dd if="$W/p1" of="$DISK" bs=1M seek=$((P1 / MIB)) conv=notrunc status=none; rm -f "$W/p1"
# Root: real files + incompressible data, made with mkfs.ext4 -d over stale data.
mkdir -p "$W/root"
RANDOM_MB=$(( ROOT_MB / 5 > 300 ? 300 : ROOT_MB / 5 ))
FILES_MB=$(( ROOT_MB * 7 / 10 - RANDOM_MB ))
prng root $((RANDOM_MB * MIB)) > "$W/root/incompressible.bin"
# Real files, up to the budget, from system directories (sorted, so runs are reproducible
# on the same machine). One name per inode: tar stores hard links once, so counting each
# name (Mesa's drivers are a dozen links to one file) would fill less than the budget.
find /usr/lib/x86_64-linux-gnu /usr/share/doc /usr/share/locale /usr/bin -xdev -type f -printf '%i %s %p\n' 2>/dev/null \
  | sort -k3 | awk -v max=$((FILES_MB * MIB)) '!seen[$1]++ { s += $2; if (s > max) exit; sub(/^[0-9]+ [0-9]+ /, ""); print }' > "$W/files.list" || true
tar -cf - -T "$W/files.list" 2>/dev/null | tar -xf - -C "$W/root"
dd if="$DISK" of="$W/p2" bs=1M skip=$((P2 / MIB)) count=$((L2 / MIB)) status=none
mkfs.ext4 -q -F -L root -U "$BENCH_UUID" -E hash_seed="$BENCH_UUID" -d "$W/root" "$W/p2"
dd if="$W/p2" of="$DISK" bs=1M seek=$((P2 / MIB)) conv=notrunc status=none; rm -f "$W/p2"
dd if="$DISK" of="$W/p3" bs=1M skip=$((P3 / MIB)) count=$((L3 / MIB)) status=none
chmod 600 "$W/p3"   # mkswap warns about a swap file others can read
mkswap -L swap -U "$BENCH_UUID" "$W/p3" >/dev/null
dd if="$W/p3" of="$DISK" bs=1M seek=$((P3 / MIB)) conv=notrunc status=none; rm -f "$W/p3"
rm -rf "$W/root"

# ---- version 2: about 5% of the root's files changed, added or deleted.
cp "$DISK" "$W/v2.img"
mkdir -p "$W/mnt"
LOOP=$(losetup -f --show -o "$P2" --sizelimit "$L2" "$W/v2.img")
mount "$LOOP" "$W/mnt"
change_files "$W/mnt" 8192 >/dev/null
umount "$W/mnt"; losetup -d "$LOOP"; LOOP=""
[ -z "$KEEP" ] || touch "$W/generated-${SIZE_GIB}g"
fi
[ -z "$GEN_ONLY" ] || exit 0

# ---- the runs
drop() { sync; echo 3 > /proc/sys/vm/drop_caches; }
declare -A WALL CPU RSS SIZE
# quiet CMD...: runs CMD without its output, which it shows (and stops the run) only if
# CMD fails.
quiet() { "$@" >"$W/err" 2>&1 || { cat "$W/err" >&2; echo "speed: failed: $*" >&2; exit 1; }; }
# Drops caches, runs CMD under GNU time, records wall, cpu and peak RSS.
# run NAME CMD [SETUP]: SETUP (untimed, e.g. putting version 1 on the delta target) runs
# before the cache is dropped.
run() {
  local name=$1 cmd=$2 setup=${3:-}
  [ -z "$setup" ] || $setup   # a function and its words, e.g. "empty out.img"
  drop
  # GNU time runs programs, not shell functions: run the job in a bash that has them.
  quiet /usr/bin/time -f "%e %U %S %M" -o "$W/time" bash -c "$cmd"
  read -r wall user sys rss < "$W/time"
  WALL[$name]+="$wall "
  CPU[$name]+="$(printf %.2f "$(echo "$user + $sys" | bc)") "
  RSS[$name]+="$rss "
}
# Every job reads or writes block devices, as on a real machine: loop devices with direct
# I/O to their file (losetup --direct-io=on), so each request reaches the machine's disk
# once, as on a real disk, instead of also passing through the image file's page cache
# (a second copy a real disk does not have). Captures: Imprint and dd read the whole disk
# through one read-only loop device, partclone each filesystem through its own. Restores
# write a loop device over an empty file of the disk's size. Every job ends with its
# output on disk (Imprint fsyncs its packs before committing; the others run sync).
lo() { losetup -f --show --direct-io=on "$@"; }
# on_loop FILE CMD...: runs CMD with a loop device over FILE as its last argument, then
# sync, detaches the device, and returns CMD's status (so a failed job stops the run).
on_loop() { local f=$1 d rc=0; shift; d=$(lo "$f"); "$@" "$d" || rc=$?; sync; losetup -d "$d"; return $rc; }
# unzstd_to FILE DEVICE: zstd -d | dd.
unzstd_to() { zstd -d -q -c "$1" | dd of="$2" bs=4M status=none; }
cap_imprint() { rm -rf "$W/store"; "$B" capture "$SRC" "$W/store" --name v1; }
cap_partclone() {
  rm -rf "$W/pc"; mkdir "$W/pc"
  local p
  # partclone reads devices or files; give it each filesystem through a read-only loop.
  p=$(lo -r -o "$P1" --sizelimit "$L1" "$DISK")
  partclone.vfat -c -q -s "$p" -o - 2>/dev/null | zstd -T0 -3 -q > "$W/pc/p1.pc.zst"; losetup -d "$p"
  p=$(lo -r -o "$P2" --sizelimit "$L2" "$DISK")
  partclone.extfs -c -q -s "$p" -o - 2>/dev/null | zstd -T0 -3 -q > "$W/pc/p2.pc.zst"; losetup -d "$p"
  # The unformatted partition and the tables: raw, as Clonezilla does.
  dd if="$DISK" bs=1M skip=$(( $(part_off 4) / MIB )) count=$(( $(part_len 4) / MIB )) status=none | zstd -T0 -3 -q > "$W/pc/p4.raw.zst"
  dd if="$DISK" bs=1M count=1 status=none | zstd -T0 -3 -q > "$W/pc/mbr-gpt.zst"
  sync
}
cap_dd() { dd if="$SRC" bs=4M status=none | zstd -T0 -3 -q > "$W/dd.zst"; sync; }
# A restore's target: a loop device over a new empty file of the disk's size, made (and
# the last run's file deleted) outside the timing.
empty() { rm -f "$W/$1"; truncate -s "$(stat -c %s "$DISK")" "$W/$1"; }
res_imprint() { on_loop "$W/out.img" "$B" restore --yes "$W/store" v1; }
res_partclone() {
  local d p
  d=$(lo "$W/out.img")
  zstd -d -q -c "$W/pc/mbr-gpt.zst" | dd of="$d" status=none
  p=$(lo -o "$P1" --sizelimit "$L1" "$W/out.img")
  zstd -d -q -c "$W/pc/p1.pc.zst" | partclone.vfat -r -q -s - -o "$p" 2>/dev/null; losetup -d "$p"
  p=$(lo -o "$P2" --sizelimit "$L2" "$W/out.img")
  zstd -d -q -c "$W/pc/p2.pc.zst" | partclone.extfs -r -q -s - -o "$p" 2>/dev/null; losetup -d "$p"
  zstd -d -q -c "$W/pc/p4.raw.zst" | dd of="$d" bs=1M seek=$(( $(part_off 4) / MIB )) status=none
  sync; losetup -d "$d"
}
res_dd() { on_loop "$W/out.img" unzstd_to "$W/dd.zst"; }
# The delta target starts as a restored version 1; the full restore's as an empty file;
# all through a loop device. casync extracts onto the same target in place, which is its
# own seed (`--seed-output`, on by default): like Imprint, it reads the disk it rewrites.
# (Extracting to a new file with the target as `--seed`, as runs before 2026-11-22 did,
# took about 18% longer here: 71.5 against 60.8 s, one run each.)
v1_target() { cp "$W/out-v1.img" "$W/t.img"; }
delta_imprint() { on_loop "$W/t.img" "$B" restore --yes --force "$W/store2" v2; }
casync_onto() { casync extract --store="$W/castore" "$W/v2.caibx" "$1"; }
delta_casync() { on_loop "$W/t.img" casync_onto; }
full_imprint() { on_loop "$W/t.img" "$B" restore --yes --full --force "$W/store2" v2; }

export -f lo on_loop unzstd_to casync_onto part_off part_len cap_imprint cap_partclone cap_dd res_imprint res_partclone res_dd \
  delta_imprint delta_casync full_imprint
SRC=$(lo -r "$DISK")
export B W DISK SRC MIB P1 P2 L1 L2

# Stores used by the delta runs (made once, not timed).
clear_outputs
quiet "$B" capture "$DISK" "$W/store2" --name v1
quiet "$B" capture "$W/v2.img" "$W/store2" --name v2
quiet "$B" restore "$W/store2" v1 "$W/out-v1.img" --yes
quiet casync make --store="$W/castore" "$W/v2.caibx" "$W/v2.img"

echo "speed: $ROUNDS interleaved rounds"
for r in $(seq "$ROUNDS"); do
  run cap_imprint cap_imprint; run cap_partclone cap_partclone; run cap_dd cap_dd
  run res_imprint res_imprint "empty out.img"; run res_partclone res_partclone "empty out.img"; run res_dd res_dd "empty out.img"
  run delta_imprint delta_imprint v1_target; run delta_casync delta_casync v1_target
  run full_imprint full_imprint "empty t.img"
  echo "speed: round $r done"
done
SIZE[imprint]=$(du -sb "$W/store/packs" | cut -f1)
SIZE[partclone]=$(du -cb "$W/pc"/* | tail -1 | cut -f1)
SIZE[dd]=$(stat -c %s "$W/dd.zst")

median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
declare -A MED CMED RMED
printf '\n%-16s %9s %9s %10s\n' job wall_s cpu_s peak_MiB
for k in cap_imprint cap_partclone cap_dd res_imprint res_partclone res_dd delta_imprint delta_casync full_imprint; do
  MED[$k]=$(echo "${WALL[$k]}" | median)
  CMED[$k]=$(echo "${CPU[$k]}" | median); RMED[$k]=$(echo "${RSS[$k]}" | median)
  printf '%-16s %9.2f %9.2f %10.1f\n' "$k" "${MED[$k]}" "${CMED[$k]}" "$(echo "${RMED[$k]} / 1024" | bc -l)"
done
ratio() { printf %.2f "$(echo "scale=4; $1 / $2" | bc -l)"; }
printf '\nimage size: imprint %s MiB, partclone+zstd %s MiB, dd+zstd %s MiB\n' \
  $((SIZE[imprint] / MIB)) $((SIZE[partclone] / MIB)) $((SIZE[dd] / MIB))
echo "capture: partclone+zstd / imprint = $(ratio "${MED[cap_partclone]}" "${MED[cap_imprint]}")x (target >= 2.5x); dd+zstd / imprint = $(ratio "${MED[cap_dd]}" "${MED[cap_imprint]}")x"
echo "restore: partclone / imprint = $(ratio "${MED[res_partclone]}" "${MED[res_imprint]}")x (target >= 4x); zstd -d|dd / imprint = $(ratio "${MED[res_dd]}" "${MED[res_imprint]}")x (target > 1x)"
echo "delta:   casync extract onto v1 / imprint delta = $(ratio "${MED[delta_casync]}" "${MED[delta_imprint]}")x (target >= 20x); imprint full / imprint delta = $(ratio "${MED[full_imprint]}" "${MED[delta_imprint]}")x (target >= 3x)"
mkdir -p "$(dirname "$JSON_OUT")"
{
  echo "{\"disk_gib\": $SIZE_GIB, \"rounds\": $ROUNDS, \"machine\": \"$(nproc) cores, $(free -g | awk '/Mem:/ {print $2}') GiB\","
  echo " \"image_bytes\": {\"imprint\": ${SIZE[imprint]}, \"partclone_zstd\": ${SIZE[partclone]}, \"dd_zstd\": ${SIZE[dd]}},"
  echo " \"jobs\": {"
  first=1
  for k in "${!MED[@]}"; do
    [ $first = 1 ] || echo ","; first=0
    printf '  "%s": {"median_wall_s": %s, "median_cpu_s": %s, "median_peak_rss_kib": %s, "wall_s": [%s]}' "$k" "${MED[$k]}" "${CMED[$k]}" "${RMED[$k]}" "$(echo ${WALL[$k]} | tr ' ' ',')"
  done
  echo; echo " },"
  printf ' "ratios": {"capture_vs_partclone": %s, "capture_vs_dd": %s, "restore_vs_partclone": %s, "restore_vs_dd": %s, "delta_vs_casync": %s, "full_vs_delta": %s}\n' \
    "$(ratio "${MED[cap_partclone]}" "${MED[cap_imprint]}")" "$(ratio "${MED[cap_dd]}" "${MED[cap_imprint]}")" \
    "$(ratio "${MED[res_partclone]}" "${MED[res_imprint]}")" "$(ratio "${MED[res_dd]}" "${MED[res_imprint]}")" \
    "$(ratio "${MED[delta_casync]}" "${MED[delta_imprint]}")" "$(ratio "${MED[full_imprint]}" "${MED[delta_imprint]}")"
  echo "}"
} > "$JSON_OUT"
echo "speed: JSON in $JSON_OUT"
