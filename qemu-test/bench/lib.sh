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
