"""Delta reimaging and resumable restores inside QEMU (issue 7), checked on the host.

The host builds a GPT disk with an ext4 root holding 192 MiB of incompressible files
(image A), changes about 5% of it with debugfs (image B), captures both with the host's
`imprint` into a store directory and packs that directory into an ext4 filesystem labelled
IMPRINT on a USB disk (init mounts any filesystem with that label; this host's kernel
cannot write the stick's exFAT). The host keeps the store directory, so it can verify
every restored disk with `imprint verify STORE NAME --against DISK`.
"""

import hashlib
import json
import re
import shutil
import struct
import subprocess
import time

from harness import OUT, TOP, USB_HOST, VM, Skip, TestFailure, blank_disk, check, disk_args, kernel_args
from tests_capture import job_boot, sh

MIB = 1 << 20
ROOT_START, ROOT_SIZE = 1 * MIB, 256 * MIB
DISK_SIZE = 288 * MIB
FILES, FILE_SIZE = 48, 4 * MIB           # 192 MiB of random data
CHANGED = ["f07.bin", "f23.bin"]         # rewritten in B (8 MiB) ...
ADDED = ("new.bin", 1 * MIB)             # ... plus one new file and a changed hostname: ~5%
EXE = TOP / "target" / "release" / "imprint"
WORK = OUT / "delta-work"

_fixture = {}


def imprint(*args, ok=(0,)):
    r = subprocess.run([str(EXE), *map(str, args), "--json"], capture_output=True, text=True)
    if r.returncode not in ok:
        raise TestFailure(f"host: imprint {' '.join(map(str, args))}: exit {r.returncode}: "
                          f"{(r.stdout + r.stderr).strip()[-400:]}")
    res = [json.loads(l)["data"] for l in r.stdout.splitlines() if l.startswith("{") and '"result"' in l]
    return res[-1] if res else None


def fixture(ctx):
    """Builds (once per run) the source disks A and B, the store directory with both
    images and the USB store disk. Returns a dict of paths and figures."""
    if _fixture:
        return _fixture
    if not EXE.exists():
        raise Skip("target/release/imprint is missing")
    t0 = time.monotonic()
    shutil.rmtree(WORK, ignore_errors=True)
    WORK.mkdir(parents=True)
    rootdir = WORK / "rootfs"
    (rootdir / "data").mkdir(parents=True)
    (rootdir / "etc").mkdir()
    (rootdir / "etc/hostname").write_text("lab-pc-a\n")
    with open("/dev/urandom", "rb") as rnd:
        for i in range(FILES):
            (rootdir / "data" / f"f{i:02}.bin").write_bytes(rnd.read(FILE_SIZE))
    root_a = WORK / "root-a.ext4"
    sh("mkfs.ext4", "-q", "-F", "-L", "lab-root", "-d", str(rootdir), str(root_a), f"{ROOT_SIZE // 1024}k")

    # B: the same filesystem with files rewritten in place by debugfs (as an update would).
    root_b = WORK / "root-b.ext4"
    shutil.copy(root_a, root_b)
    cmds = ["cd /data"]
    with open("/dev/urandom", "rb") as rnd:
        for name in CHANGED:
            (WORK / name).write_bytes(rnd.read(FILE_SIZE))
            cmds += [f"rm {name}", f"write {WORK / name} {name}"]
        (WORK / ADDED[0]).write_bytes(rnd.read(ADDED[1]))
    (WORK / "hostname").write_text("lab-pc-b\n")
    cmds += [f"write {WORK / ADDED[0]} {ADDED[0]}", "cd /etc", "rm hostname", f"write {WORK / 'hostname'} hostname"]
    (WORK / "debugfs.cmds").write_text("\n".join(cmds) + "\n")
    sh("debugfs", "-w", "-f", str(WORK / "debugfs.cmds"), str(root_b))
    sh("e2fsck", "-fn", str(root_b))

    disks = {}
    for name, root in (("a", root_a), ("b", root_b)):
        disk = blank_disk(WORK / f"source-{name}.img", DISK_SIZE)
        sh("sgdisk", f"-n1:{ROOT_START // 512}:+{ROOT_SIZE // 1024}K", "-t1:8300", "-c1:root", str(disk))
        sh("dd", f"if={root}", f"of={disk}", "bs=1M", f"seek={ROOT_START // MIB}", "conv=notrunc,sparse",
           "status=none")
        disks[name] = disk

    store = WORK / "store"
    cap_a = imprint("capture", disks["a"], store, "--name", "A")
    cap_b = imprint("capture", disks["b"], store, "--name", "B")
    store_disk = WORK / "store-disk.img"
    if store_disk.exists():
        store_disk.unlink()
    sh("mkfs.ext4", "-q", "-F", "-L", "IMPRINT", "-d", str(store), str(store_disk), "320M")
    _fixture.update(a=disks["a"], b=disks["b"], root_a=root_a, root_b=root_b, store=store,
                    store_disk=store_disk, cap_a=cap_a, cap_b=cap_b)
    ctx.note(f"host fixture {time.monotonic() - t0:.1f} s (A: {cap_a['chunks']} chunks, "
             f"B adds {cap_b['new_chunks']} new chunks = {cap_b['new_bytes'] // 1024} KiB)")
    return _fixture


def chunk_ids(store, name):
    """{chunk index: id} from an image's chunk map (docs/FORMAT.md §6)."""
    images = store / "images"
    map_file = images / json.loads((images / f"{name}.json").read_text())["map_file"]
    b = map_file.read_bytes()
    check(b[:8] == b"IMPRMAP1", f"{map_file.name}: not a chunk map")
    e, n = struct.unpack_from("<QQ", b, 24)
    at = 40 + 16 * e
    return {struct.unpack_from("<Q", b, at + 40 * i)[0]: b[at + 40 * i + 8:at + 40 * i + 40] for i in range(n)}


def store_usb(fx):
    # snapshot=on: the guest mounts the store read-only anyway; this keeps the file pristine.
    return USB_HOST + disk_args(fx["store_disk"], "usb", "IMPRINT-STORE", "st", snapshot=True)


def check_restored(fx, target, name, root_files_from):
    """Host proofs for a restored disk: verify --against, sgdisk -v, e2fsck -fn, files."""
    problems = []
    r = subprocess.run([str(EXE), "verify", str(fx["store"]), name, "--against", str(target), "--json"],
                       capture_output=True, text=True)
    if r.returncode != 0:
        problems.append(f"imprint verify {name} --against: exit {r.returncode}: {r.stdout.strip()[-300:]}")
    v = subprocess.run(["sgdisk", "-v", str(target)], capture_output=True, text=True).stdout
    if "No problems found" not in v:
        problems.append("sgdisk -v: " + " ".join(v.split())[:200])
    part = target.with_suffix(".root.ext4")
    sh("dd", f"if={target}", f"of={part}", "bs=1M", f"skip={ROOT_START // MIB}", f"count={ROOT_SIZE // MIB}",
       "status=none")
    r = subprocess.run(["e2fsck", "-fn", str(part)], capture_output=True, text=True)
    if r.returncode != 0:
        problems.append(f"e2fsck -fn exit {r.returncode}: {r.stdout.strip()[-200:]}")
    for f in ["/etc/hostname", *(f"/data/{n}" for n in CHANGED), "/data/f00.bin", "/data/f47.bin"]:
        want = subprocess.run(["debugfs", "-R", f"cat {f}", str(root_files_from)], capture_output=True).stdout
        got = subprocess.run(["debugfs", "-R", f"cat {f}", str(part)], capture_output=True).stdout
        if hashlib.sha256(want).digest() != hashlib.sha256(got).digest() or not want:
            problems.append(f"{f} differs from image {name}'s")
    part.unlink()
    check(not problems, f"restored disk {target.name}: " + "; ".join(problems))


def test_delta_reimage_unattended(ctx):
    """(issue 7) a disk holding image A is reimaged with B, unattended: a delta restore that
    rewrites only the changed chunks, reports what it skipped, and ends verified."""
    fx = fixture(ctx)
    # The disk as last week's reimage left it: A restored (by the host's CLI, same code).
    target = WORK / "delta-target.img"
    blank_disk(target, DISK_SIZE)
    imprint("restore", fx["store"], "A", target, "--yes", "--force")
    # What a delta restore of B onto A must write, measured on the host on a copy.
    host_copy = WORK / "delta-host-copy.img"
    sh("cp", "--sparse=always", str(target), str(host_copy))
    host = imprint("restore", fx["store"], "B", host_copy, "--yes", "--force")

    job, wall, _ = job_boot(
        "delta-reimage", "imprint.action=restore imprint.image=B imprint.disk=serial:LAB-DISK imprint.force=1",
        store_usb(fx) + disk_args(target, "nvme", "LAB-DISK", "dst"))
    check(job["ok"] is True and job["exit_code"] == 0, f"delta reimage failed: {job}")
    res = job["result"]
    check(res.get("delta") is True, f"not a delta restore: delta={res.get('delta')} ({res.get('delta_reason')})")
    chunks, written, unchanged = res["chunks"], res["written_chunks"], res["unchanged_chunks"]
    check(unchanged > 0, f"no chunk skipped as unchanged: {res}")
    check(written * 5 < chunks, f"wrote {written} of {chunks} chunks: not much less than a full restore")
    check((written, unchanged, res["written_bytes"]) ==
          (host["written_chunks"], host["unchanged_chunks"], host["written_bytes"]),
          f"guest wrote {written} chunks ({res['written_bytes']} bytes) and kept {unchanged}; the "
          f"host's delta restore of the same change wrote {host['written_chunks']} "
          f"({host['written_bytes']} bytes) and kept {host['unchanged_chunks']}")
    check(sh("cmp", str(target), str(host_copy)) == "", "guest and host delta restores differ")
    # Chunks whose content differs between A and B, from the two chunk maps; the table
    # areas (first and last MiB) are always rewritten, so they are counted apart.
    ids_a, ids_b = chunk_ids(fx["store"], "A"), chunk_ids(fx["store"], "B")
    last = DISK_SIZE // MIB - 1
    differ = {i for i in ids_b if ids_a.get(i) != ids_b[i]} - {0, last}
    check(written - res["table_chunks"] == len(differ),
          f"wrote {written - res['table_chunks']} data chunks, but {len(differ)} differ between A and B")
    check_restored(fx, target, "B", fx["root_b"])
    skipped = unchanged * (1 << 20)
    ctx.note(f"delta reimage boot {wall:.1f} s (job {job['seconds']:.1f} s, restore "
             f"{res['elapsed_seconds']:.1f} s): {chunks} chunks, wrote {written} "
             f"({res['written_bytes'] // 1024} KiB: the differing blocks of {len(differ)} chunks + {res['table_chunks']} table chunks), skipped {unchanged} unchanged "
             f"(~{skipped // MIB} MiB), {res['skipped_chunks']} empty; target read {res['target_read_bytes'] // MIB} MiB; "
             f"same counts and bytes as the host's delta restore; verified on the host")


PROGRESS = re.compile(r'"type":"progress","data":\{[^\n]*"done_bytes":([1-9][0-9]*)')


def test_delta_power_cut_mid_restore_resumes(ctx):
    """(issue 7) QEMU quits mid-restore (a power cut); the half-written disk does not boot
    (first MiB zero); booting again with the same command line resumes and ends verified."""
    fx = fixture(ctx)
    # The target held another system (a GPT of another layout: its first MiB could boot),
    # so the restore is a full one and must make the disk unbootable before writing data.
    target = blank_disk(WORK / "cut-target.img", DISK_SIZE)
    sh("sgdisk", "-n1:2048:+100M", "-t1:ef00", "-n2:0:0", "-t2:8300", str(target))
    with open(target, "rb") as f:
        check(f.read(MIB) != bytes(MIB), "the prepared target has no partition table")
    cmdline = ("imprint.action=restore imprint.image=A imprint.disk=serial:CUT-DISK imprint.force=1 "
               "imprint.then=poweroff imprint.onerror=poweroff")
    disks = store_usb(fx) + disk_args(target, "virtio", "CUT-DISK", "dst")
    # Writes to the target are throttled to 16 MiB/s so the restore is still running when
    # the power is cut, however fast or loaded the host is.
    disks = [a + ",throttling.bps-write=16777216" if a.startswith("if=none,id=dst,") else a
             for a in disks]
    vm = VM("power-cut-1", kernel_args(cmdline) + ["-net", "none"] + disks)
    try:
        vm.wait_for(PROGRESS.pattern, 180)
        # Let it write a little more, then pull the plug.
        time.sleep(0.5)
        done = [int(m.group(1)) for m in PROGRESS.finditer(vm.text())]
        check('"type":"imprint-job"' not in vm.text(), "the restore finished before the power cut")
        vm.monitor("quit")
        vm.wait_exit(15)
        cut_at = vm.elapsed()
    finally:
        vm.stop()
    with open(target, "rb") as f:
        first = f.read(MIB)
        f.seek(DISK_SIZE - MIB)
        last = f.read(MIB)
    check(first == bytes(MIB), "the first MiB of the interrupted target is not all zeros (it could boot)")
    # docs/FORMAT.md §8: the marker is written and synced before any data chunk.
    check(b"IMPRINT RESTORE IN PROGRESS\nimage=A\n" in last, "no resume marker in the last MiB after the cut")
    ctx.note(f"power cut at {cut_at:.1f} s after {max(done) // MIB} MiB of progress; first MiB zero; "
             "resume marker in the last MiB")

    job, wall, _ = job_boot("power-cut-2", cmdline.replace(" imprint.then=poweroff imprint.onerror=poweroff", ""),
                            disks)
    check(job["ok"] is True and job["exit_code"] == 0, f"the restore after the power cut failed: {job}")
    res = job["result"]
    check(res.get("delta") is True and "resum" in (res.get("delta_reason") or ""),
          f"the rerun did not resume: delta={res.get('delta')} ({res.get('delta_reason')})")
    check_restored(fx, target, "A", fx["root_a"])
    ctx.note(f"rerun boot {wall:.1f} s: {res['written_chunks']} chunks written, {res['unchanged_chunks']} "
             f"already there; verified on the host (verify --against, sgdisk -v, e2fsck -fn, files)")


TESTS = [test_delta_reimage_unattended, test_delta_power_cut_mid_restore_resumes]
