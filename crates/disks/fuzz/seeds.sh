#!/usr/bin/env bash
# Makes small real partition tables as seeds for the fuzz target (corpus/table/): GPT
# and MBR with an extended partition and logicals, from sfdisk and sgdisk (hybrid MBR),
# with 512- and 4096-byte sectors. Each disk is a few dozen KiB so libFuzzer stays fast.
set -euo pipefail
cd "$(dirname "$0")"
mkdir -p corpus/table
t=$(mktemp -d)
loop=
cleanup() { if [ -n "$loop" ]; then losetup -d "$loop"; fi; rm -rf "$t"; }
trap cleanup EXIT
mk() { # name size-in-bytes sfdisk-script
  truncate -s "$2" "$t/$1"
  printf '%b' "$3" | sfdisk --no-reread --no-tell-kernel -q "$t/$1" >/dev/null
  cp "$t/$1" "corpus/table/$1"
}
# 4096-byte logical sectors exist only on a device: a loop device made with
# --sector-size (root), detached by name on exit.
mk4k() { # name size-in-bytes sfdisk-script
  truncate -s "$2" "$t/$1"
  loop=$(losetup -f --show --sector-size 4096 "$t/$1")
  printf '%b' "$3" | sfdisk --no-reread --no-tell-kernel -q "$loop" >/dev/null
  losetup -d "$loop"; loop=
  cp "$t/$1" "corpus/table/$1"
}
mk gpt 131072 'label: gpt\nfirst-lba: 34\nstart=40, size=64, type=U\nstart=104, size=64, type=L\nstart=168, size=32, type=S\n'
mk gpt-full 65536 'label: gpt\nfirst-lba: 34\nstart=34, size=60\n'
mk mbr 65536 'label: dos\nstart=1, size=15, type=83\nstart=16, size=16, type=7\n'
mk mbr-logicals 131072 'label: dos\nstart=1, size=31, type=83\nstart=32, size=200, type=5\nstart=34, size=30, type=6\nstart=66, size=30, type=1\nstart=98, size=60, type=83\n'
mk mbr-boot 65536 'label: dos\nstart=8, size=100, type=c, bootable\nstart=108, size=12, type=f\nstart=110, size=10, type=82\n'
mk4k gpt-4k 262144 'label: gpt\nfirst-lba: 6\nstart=6, size=20, type=L\nstart=26, size=20, type=L\n'
mk4k mbr-4k 131072 'label: dos\nstart=1, size=10, type=83\nstart=11, size=20, type=5\nstart=12, size=8, type=83\nstart=21, size=9, type=b\n'
# Hybrid MBR: GPT partitions 1 and 2 also listed in the MBR.
cp corpus/table/gpt "$t/hybrid"
sgdisk -h 1:2 "$t/hybrid" >/dev/null
cp "$t/hybrid" corpus/table/hybrid
# Damaged primary GPT: the parser must fall back to the backup.
cp corpus/table/gpt "$t/bad-primary"
printf 'XXXXXXXX' | dd of="$t/bad-primary" bs=1 seek=512 conv=notrunc status=none
cp "$t/bad-primary" corpus/table/bad-primary
if [ "$(id -u)" != 0 ]; then echo "(4096-byte seeds need root for losetup)" >&2; fi
ls -l corpus/table
