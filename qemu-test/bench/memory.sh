#!/usr/bin/env bash
# Peak memory of capture and restore against disk size (issue "Speed": under 256 MiB and
# not growing with the disk). Builds sparse GPT disks of 4 GiB and 16 GiB (or the sizes
# given), each with an ext4 filesystem over the whole disk holding the same ~600 MiB of
# real and random files, then captures and restores each under GNU time and prints the
# peak RSS. A benchmark, not a test: it asserts nothing. Runs as any user: image files in
# /var/tmp, removed at the end.
#
#   qemu-test/bench/memory.sh [SIZE_GIB ...]
set -euo pipefail
cd "$(dirname "$0")/../.."
. qemu-test/bench/lib.sh
SIZES=("$@"); [ ${#SIZES[@]} -gt 0 ] || SIZES=(4 16)
for t in sgdisk mkfs.ext4 /usr/bin/time; do
  command -v "$t" >/dev/null || { echo "memory: $t is missing (apt-get install gdisk e2fsprogs time)" >&2; exit 1; }
done
cargo build --release -q -p cli
B=$PWD/target/release/imprint
W=$(mktemp -d /var/tmp/imprint-memory.XXXXXX)
trap 'rm -rf "$W"' EXIT
mkdir -p "$W/files"
prng random $((200 << 20)) > "$W/files/random.bin"
# One name per inode: Mesa's DRI drivers are a dozen hard links to one 20 MB file, which
# tar stores once (counting each link had left 64 MiB of files instead of 400).
find /usr/lib/x86_64-linux-gnu /usr/share/doc -xdev -type f -printf '%i %s %p\n' 2>/dev/null \
  | sort -k3 | awk -v max=$((400 * 1048576)) '!seen[$1]++ { s += $2; if (s > max) exit; sub(/^[0-9]+ [0-9]+ /, ""); print }' > "$W/list" || true
tar -cf - -T "$W/list" 2>/dev/null | tar -xf - -C "$W/files"
echo "memory: every disk holds the same $(du -sm "$W/files" | cut -f1) MiB of files"
printf '%-8s %-8s %10s %10s %12s\n' disk job wall_s cpu_s peak_MiB
for g in "${SIZES[@]}"; do
  d=$W/disk-$g.img
  truncate -s "${g}G" "$d"
  sgdisk -n 1:2048:0 -t 1:8300 "$d" >/dev/null
  off=$((2048 * 512)); len=$(( $(stat -c %s "$d") - off - 34 * 512 ))
  truncate -s "$len" "$W/p1"
  mkfs.ext4 -q -F -d "$W/files" "$W/p1"
  dd if="$W/p1" of="$d" bs=1M seek=1 conv=notrunc,sparse status=none; rm -f "$W/p1"
  for job in capture restore; do
    case $job in
      capture) cmd=("$B" capture "$d" "$W/store" --name "d$g") ;;
      restore) cmd=("$B" restore "$W/store" "d$g" "$W/out.img" --yes) ;;
    esac
    /usr/bin/time -f "%e %U %S %M" -o "$W/time" "${cmd[@]}" >/dev/null 2>"$W/err" || { cat "$W/err" >&2; exit 1; }
    read -r wall user sys rss < "$W/time"
    printf '%-8s %-8s %10s %10s %12.1f\n' "${g}GiB" "$job" "$wall" "$(echo "$user + $sys" | bc)" "$(echo "$rss / 1024" | bc -l)"
  done
  rm -rf "$W/store" "$W/out.img" "$d"
done
