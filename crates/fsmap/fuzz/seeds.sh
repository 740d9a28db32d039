#!/usr/bin/env bash
# Makes small real images as seed corpora for the fuzz targets (corpus/<target>/).
set -euo pipefail
cd "$(dirname "$0")"
t=$(mktemp -d); trap 'rm -rf "$t"' EXIT
mk() { # target name size cmd args...
  local target=$1 name=$2 size=$3; shift 3
  mkdir -p "corpus/$target" "corpus/any"
  head -c "$size" /dev/urandom > "$t/$name"
  "$@" "$t/$name" >/dev/null 2>&1
  cp "$t/$name" "corpus/$target/$name"; cp "$t/$name" "corpus/any/$name"
}
mk ext ext4-1k 262144 mkfs.ext4 -q -F -b 1024
mk ext ext2-1k 262144 mkfs.ext2 -q -F -b 1024
mk ext ext3-1k 524288 mkfs.ext3 -q -F -b 1024 -g 1024
mk fat fat12 262144 mkfs.vfat -F 12
mk fat fat16 2500000 mkfs.vfat -F 16 -s 1
mk exfat exfat 4194304 mkfs.exfat
mk ntfs ntfs 2097152 mkntfs -F -Q
mk swap swap 65536 mkswap
