#!/usr/bin/env bash
# Runs every QEMU boot test against dist/ (build it first with ./mkimage.sh) and prints
# `qemu-test: N passed, N failed`; exits non-zero when a test failed.
# Usage: qemu-test/run.sh [-k NAME-PART]
set -euo pipefail
cd "$(dirname "$0")/.."
for t in qemu-system-x86_64 python3; do
  command -v "$t" >/dev/null || { echo "qemu-test: $t not found (see .ci/apt-packages)" >&2; echo "qemu-test: 0 passed, 1 failed"; exit 1; }
done
exec python3 qemu-test/harness.py "$@"
