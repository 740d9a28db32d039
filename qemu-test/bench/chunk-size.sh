#!/usr/bin/env bash
# Measures the chunk size choice (docs/ARCHITECTURE.md "Chunk size"): for 256 KiB, 1 MiB
# and 4 MiB chunks, the store size, capture and restore time of a generated disk, and
# what a second capture adds after ~5% of the files changed. A benchmark, not a test.
# Needs root (loop-mounts the ext4 partition it made to change files).
set -euo pipefail
cd "$(dirname "$0")/../.."
. qemu-test/bench/lib.sh
cargo build --release -q -p cli
B=$PWD/target/release/imprint
W=$(mktemp -d /var/tmp/imprint-chunkbench.XXXXXX)
LOOP=""
cleanup() { [ -n "$LOOP" ] && { umount "$W/mnt" 2>/dev/null || true; losetup -d "$LOOP" || true; }; rm -rf "$W"; }
trap cleanup EXIT

# Version 1: 1 GiB GPT disk, 16 MiB FAT-type ESP (left empty), ext4 root with real files.
truncate -s 1G "$W/v1.img"
sgdisk -n 1:2048:+16M -t 1:ef00 -n 2:0:0 -t 2:8300 "$W/v1.img" >/dev/null
mkdir -p "$W/root"
cp -a /usr/share/doc /usr/share/locale /usr/bin "$W/root/" 2>/dev/null || true
prng root $((64 << 20)) > "$W/root/incompressible.bin"
start=$(( (2048 + 16*2048) * 512 ))
size=$(( $(stat -c %s "$W/v1.img") - start - 34*512 ))
truncate -s "$size" "$W/p2.img"
mkfs.ext4 -q -F -d "$W/root" "$W/p2.img"
dd if="$W/p2.img" of="$W/v1.img" bs=1M seek=$((start / 1048576)) conv=notrunc status=none
rm -f "$W/p2.img"

# Version 2: about 5% of the files rewritten, deleted or added.
cp --sparse=always "$W/v1.img" "$W/v2.img"
mkdir -p "$W/mnt"
LOOP=$(losetup -f --show -o "$start" --sizelimit "$size" "$W/v2.img")
mount "$LOOP" "$W/mnt"
total=$(find "$W/mnt" -type f | wc -l)
n=$(change_files "$W/mnt" 4096)
umount "$W/mnt"; losetup -d "$LOOP"; LOOP=""
echo "changed $n of $total files"

now() { date +%s.%N; }
printf '%-8s %12s %10s %10s %14s\n' chunk store_MiB capture_s restore_s v2_added_MiB
for cs in 262144 1048576 4194304; do
  rm -rf "$W/store" "$W/out.img"
  sync; echo 3 > /proc/sys/vm/drop_caches
  t0=$(now); "$B" capture "$W/v1.img" "$W/store" --name v1 --chunk-size "$cs" 2>/dev/null; t1=$(now)
  s1=$(du -sb "$W/store" | cut -f1)
  sync; echo 3 > /proc/sys/vm/drop_caches
  t2=$(now); "$B" restore "$W/store" v1 "$W/out.img" --yes 2>/dev/null; sync; t3=$(now)
  "$B" capture "$W/v2.img" "$W/store" --name v2 2>/dev/null
  s2=$(du -sb "$W/store" | cut -f1)
  printf '%-8s %12.1f %10.2f %10.2f %14.1f\n' "$((cs / 1024))K" "$(echo "$s1/1048576" | bc -l)" \
    "$(echo "$t1-$t0" | bc -l)" "$(echo "$t3-$t2" | bc -l)" "$(echo "($s2-$s1)/1048576" | bc -l)"
done
