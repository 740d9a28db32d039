# Shared by the benchmarks (sourced, not run): what makes their generated disks the same
# from run to run and machine to machine of one kind.

# prng SEED BYTES: BYTES of incompressible data that depend only on SEED (AES-128-CTR
# over zeros, keyed from SEED), where /dev/urandom would make every generated disk
# different. Over 1 GB/s with AES-NI, faster than /dev/urandom.
prng() {
  openssl enc -aes-128-ctr -nosalt -pbkdf2 -pass "pass:$1" -in /dev/zero 2>/dev/null \
    | head -c "$2" || true  # head's early exit: SIGPIPE upstream
}

# Fixed identities and clocks for the tools that would otherwise pick random or current
# ones: disk and partition GUIDs (sgdisk), file system UUIDs and hash seeds (mkfs.ext4,
# mkswap), FAT volume ids (mkfs.vfat --invariant) and e2fsprogs' own timestamps.
BENCH_UUID=5e1f0c4a-7d3b-4c2e-9a61-0b8d2f6e4a17
export E2FSPROGS_FAKE_TIME=1767225600   # 2026-01-01 00:00 UTC

# change_files DIR BYTES: turns a file tree into its "version 2": of the files under DIR
# in sorted order, every 20th in turn gets BYTES of seeded data appended, is deleted, or
# is copied beside itself as NAME.new (about 5% of the files changed, deleted or added).
# Prints how many files it changed.
change_files() {
  local n=0 f
  # sort reads all of find's output before the first change, so the list is fixed.
  while read -r f; do
    case $((n % 3)) in
      0) prng "v2-$n" "$2" >> "$f" ;;
      1) rm -f "$f" ;;
      2) cp "$f" "$f.new" ;;
    esac
    n=$((n + 1))
  done < <(find "$1" -type f | sort | awk 'NR % 20 == 0')
  echo "$n"
}
