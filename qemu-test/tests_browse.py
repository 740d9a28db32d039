"""Browsing images inside the boot environment (issue 9): FAT32, exFAT and NTFS, which the
host kernel cannot mount but the boot environment's 6.12 kernel can (vfat, exfat, ntfs3),
from the CLI (test 1) and from the text UI's image browser (test 2).

The host builds a GPT disk with a FAT32 (mtools), an exFAT (exfat-fuse), an NTFS
(ntfs-3g) and an NTFS marked dirty (as Windows leaves it) partition holding the same real files, among them a deep directory, and records
every file's sha256 and mtime. One boot captures that disk into the USB stick's IMPRINT
store over the kernel command line and then opens the rescue shell (imprint.then=shell),
where the test, per partition: `imprint mount`s it, lists the deep directory, checksums
every file, `imprint umount`s it, then `imprint extract`s the deep directory and checksums
the tree. The host compares everything with its own list. The store's files are
checksummed before and after, and no mount, loop device or FUSE directory may be left.
"""

import hashlib
import os
import re
import shutil
import struct
import subprocess
import time

from harness import DIST, OUT, USB_HOST, VM, Skip, check, disk_args, kernel_args
from tests_capture import sh
from tests_disks import json_objects

MIB = 1 << 20
DISK_SIZE = 120 * MIB
# (partition number, GPT name, start, size, filesystem as the manifest names it)
PARTS = [
    (1, "fat32", 1 * MIB, 48 * MIB, "fat32"),
    (2, "exfat", 49 * MIB, 24 * MIB, "exfat"),
    (3, "ntfs", 73 * MIB, 24 * MIB, "ntfs"),
    # NTFS that Windows left dirty ("scheduled for check"): the volume's dirty flag set;
    # ntfs3 mounts it read-only as it is (measured), so it gets every check the others do.
    (4, "ntfsdirty", 97 * MIB, 16 * MIB, "ntfs-dirty"),
]
DEEP = "deep/a/b/c/d/e/f/g/h"
STORE = "/run/imprint/store"


def make_tree(work):
    """The files every partition gets: {relative path: (sha256, mtime)}. Contents are
    random (chunks cannot dedupe across partitions); mtimes are even seconds in the past
    so FAT's 2-second resolution keeps them exactly."""
    tree = work / "tree"
    shutil.rmtree(tree, ignore_errors=True)
    files = {
        "readme.txt": b"Files to get back without restoring the disk.\n",
        "docs/My Notes.txt": b"a name with a space\n" * 50,
        "docs/report.pdf": os.urandom(300 * 1024 + 17),
        "data/blob.bin": os.urandom(3 * MIB + 4321),
        "deep/a/b/mid.bin": os.urandom(64 * 1024),
        f"{DEEP}/leaf.txt": b"the bottom of the deep directory\n",
        f"{DEEP}/one.bin": os.urandom(200 * 1024 + 3),
        f"{DEEP}/two.txt": b"two\n" * 1000,
        f"{DEEP}/empty.dat": b"",
    }
    out = {}
    base = 1_700_000_000
    for i, (rel, data) in enumerate(sorted(files.items())):
        p = tree / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
        mtime = base + 2 * 86400 * i
        os.utime(p, (mtime, mtime))
        out[rel] = (hashlib.sha256(data).hexdigest(), mtime)
    return tree, out


def fill_with_fuse(cmd, img, mnt, tree):
    """Mounts IMG on the host with a FUSE driver running in the foreground, copies TREE
    in keeping mtimes, unmounts and waits for the driver to finish writing."""
    mnt.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen(cmd + [str(img), str(mnt)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        for _ in range(100):
            if os.path.ismount(mnt):
                break
            if proc.poll() is not None:
                raise AssertionError(f"{cmd[0]} exited: {proc.stdout.read().decode()[-300:]}")
            time.sleep(0.1)
        else:
            raise AssertionError(f"{cmd[0]} did not mount {img}")
        sh("cp", "-r", "--preserve=timestamps", f"{tree}/.", str(mnt))
    finally:
        if os.path.ismount(mnt):
            subprocess.run(["fusermount", "-u", str(mnt)])
        proc.wait(30)
    check(proc.returncode == 0, f"{cmd[0]} ended with {proc.returncode}")


def set_ntfs_dirty(img):
    """Sets VOLUME_IS_DIRTY (0x0001) in $Volume's $VOLUME_INFORMATION, in $MFT and in
    $MFTMirr (record 3 is mirrored), undoing and redoing the record's update-sequence
    fixups; what Windows does when it schedules a check (or crashed)."""
    with open(img, "r+b") as f:
        boot = f.read(512)
        bps, spc = struct.unpack_from("<H", boot, 11)[0], boot[13]
        cluster = bps * spc
        cpr = struct.unpack_from("<b", boot, 64)[0]
        rec_size = cluster * cpr if cpr > 0 else 1 << -cpr
        for lcn_at in (48, 56):  # $MFT, $MFTMirr
            off = struct.unpack_from("<q", boot, lcn_at)[0] * cluster + 3 * rec_size
            f.seek(off)
            r = bytearray(f.read(rec_size))
            check(r[:4] == b"FILE", f"{img}: no MFT record 3 at {off}")
            usa_off, usa_n = struct.unpack_from("<HH", r, 4)
            usn = bytes(r[usa_off:usa_off + 2])
            for i in range(usa_n - 1):
                end = (i + 1) * bps - 2
                r[end:end + 2] = r[usa_off + 2 + 2 * i:usa_off + 4 + 2 * i]
            a = struct.unpack_from("<H", r, 20)[0]
            while struct.unpack_from("<I", r, a)[0] != 0x70:
                check(struct.unpack_from("<I", r, a)[0] != 0xFFFFFFFF, f"{img}: no $VOLUME_INFORMATION")
                a += struct.unpack_from("<I", r, a + 4)[0]
            at = a + struct.unpack_from("<H", r, a + 20)[0] + 10
            struct.pack_into("<H", r, at, struct.unpack_from("<H", r, at)[0] | 0x0001)
            for i in range(usa_n - 1):
                end = (i + 1) * bps - 2
                r[usa_off + 2 + 2 * i:usa_off + 4 + 2 * i] = r[end:end + 2]
                r[end:end + 2] = usn
            f.seek(off)
            f.write(r)


def make_disk(work, tree):
    """The GPT disk with the four filesystems, each made in its own file and copied in."""
    imgs = {}
    env = dict(os.environ, MTOOLS_SKIP_CHECK="1")
    for n, name, start, size, fs in PARTS:
        img = work / f"{name}.img"
        if img.exists():
            img.unlink()
        if fs == "fat32":
            sh("mkfs.vfat", "-F", "32", "-s", "1", "-n", "FATPART", "-C", str(img), str(size // 1024))
            sh("mcopy", "-s", "-m", "-i", str(img), *[str(p) for p in sorted(tree.iterdir())], "::/", env=env)
            sh("fsck.vfat", "-n", str(img))
        elif fs == "exfat":
            with open(img, "wb") as f:
                f.truncate(size)
            sh("mkfs.exfat", "-L", "EXPART", str(img))
            # As root, fuse-exfat mounts with `blkdev` and wants a block device: a loop
            # device of our own, detached by name. -d: stay in the foreground, so the
            # unmount is known to be complete.
            dev = sh("losetup", "-f", "--show", str(img)).strip()
            try:
                fill_with_fuse(["mount.exfat-fuse", "-d"], dev, work / "mnt-exfat", tree)
            finally:
                sh("losetup", "-d", dev)
            sh("fsck.exfat", "-n", str(img))
        else:
            with open(img, "wb") as f:
                f.truncate(size)
            label = "NTFSPART" if fs == "ntfs" else "DIRTY"
            sh("mkntfs", "-F", "-Q", "-L", label, str(img))
            fill_with_fuse(["ntfs-3g", "-o", "no_detach"], img, work / "mnt-ntfs", tree)
            if fs == "ntfs-dirty":
                set_ntfs_dirty(img)
                # ntfsinfo (read-only) refuses a volume marked dirty with this message.
                r = subprocess.run(["ntfsinfo", "-m", str(img)], capture_output=True, text=True)
                check("scheduled for check" in r.stdout + r.stderr,
                      f"the NTFS volume is not dirty: ntfsinfo says {(r.stdout + r.stderr).strip()[-200:]!r}")
        imgs[n] = img
    disk = work / "source.img"
    if disk.exists():
        disk.unlink()
    with open(disk, "wb") as f:
        f.truncate(DISK_SIZE)
    args = []
    for n, name, start, size, _ in PARTS:
        args += [f"-n{n}:{start // 512}:+{size // 1024}K", f"-t{n}:0700", f"-c{n}:{name}"]
    sh("sgdisk", *args, str(disk))
    for n, _, start, _, _ in PARTS:
        sh("dd", f"if={imgs[n]}", f"of={disk}", "bs=1M", f"seek={start // MIB}", "conv=notrunc,sparse",
           "status=none")
    sh("sgdisk", "-v", str(disk))
    return disk


class Shell:
    """The rescue shell on the serial console: runs one command, returns its output."""

    def __init__(self, vm):
        self.vm = vm
        self.n = 0

    def run(self, command, timeout=60):
        self.n += 1
        tag = f"R{self.n}"
        start = len(self.vm.text())
        # Quotes split the markers in the echoed command line, not in the output.
        self.vm.send(f"echo BE''GIN{tag}; {command}; echo EN''D{tag} $?\n")
        rx = re.compile(rf"\nBEGIN{tag}\r?\n([\s\S]*?)END{tag} (\d+)")
        deadline = time.monotonic() + timeout
        while True:
            m = rx.search(self.vm.text()[start:])
            if m:
                return m.group(1).replace("\r", ""), int(m.group(2))
            if time.monotonic() > deadline or self.vm.proc.poll() is not None:
                raise AssertionError(f"no end of {command!r} within {timeout} s; tail: {self.vm.tail()}")
            time.sleep(0.1)

    def ok(self, command, timeout=60):
        out, rc = self.run(command, timeout)
        check(rc == 0, f"`{command}` exited {rc}: {out[-600:]}")
        return out


def prepare(ctx, name):
    """Skips without the tools; else a fresh work directory OUT/NAME with the tree, the
    four-filesystem disk and a copy of the USB stick: (work, files, source, stick)."""
    if not ctx.cli_ready():
        raise Skip("target/release/imprint has no capture with --json yet")
    for tool in ("mount.exfat-fuse", "ntfs-3g", "mkntfs", "mkfs.exfat", "mcopy", "fusermount", "debugfs"):
        if not shutil.which(tool) and not os.path.exists(f"/sbin/{tool}"):
            raise Skip(f"{tool} is not installed (.ci/apt-packages: exfat-fuse, ntfs-3g, exfatprogs, "
                       "mtools, fuse3, e2fsprogs)")
    work = OUT / name
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    tree, files = make_tree(work)
    source = make_disk(work, tree)
    stick = work / "stick.img"
    sh("cp", "--sparse=always", str(DIST / "imprint-usb.img"), str(stick))
    return work, files, source, stick


def sums(out, prefix):
    """{path relative to PREFIX: sha256} from `sha256sum` lines."""
    got = {}
    for line in out.splitlines():
        m = re.match(r"([0-9a-f]{64})  (.*)$", line)
        if m and m.group(2).startswith(prefix):
            got[m.group(2)[len(prefix):]] = m.group(1)
    return got


def mtimes(out, prefix):
    got = {}
    for line in out.splitlines():
        m = re.match(r"(\d+) (.*)$", line)
        if m and m.group(2).startswith(prefix):
            got[m.group(2)[len(prefix):]] = int(m.group(1))
    return got


def test_browse_fat32_exfat_ntfs_in_guest(ctx):
    """(issue 9) one boot: capture a GPT disk with FAT32, exFAT, NTFS and dirty NTFS partitions to the
    IMPRINT store; mount each, list the deep directory, every checksum matches the host's;
    extract the deep directory with timestamps; umount; store unchanged, nothing left."""
    work, files, source, stick = prepare(ctx, "browse-fs-disks")
    args = kernel_args("imprint.action=capture imprint.image=multi imprint.disk=serial:SRC-DISK "
                       "imprint.then=shell imprint.onerror=poweroff imprint.console=200x50")
    args += ["-net", "none"] + USB_HOST + disk_args(stick, "usb", "IMPRINT-STICK", "st")
    args += disk_args(source, "virtio", "SRC-DISK", "src", snapshot=True)
    vm = VM("browse-fs", args)
    problems = []
    fetched = {}
    try:
        vm.wait_for(r'\{"type":"imprint-job"[^\n]*\n', 180)  # the whole line
        job = vm.json_lines("imprint-job")[0]
        check(job["ok"] is True, f"capture failed: {job}")
        vm.wait_for(r"starting a shell|rescue shell", 20)
        time.sleep(1)
        sh_ = Shell(vm)
        t0 = time.monotonic()
        store_sum = "find {s} -type f | sort | xargs sha256sum | sha256sum".format(s=STORE)
        before = sh_.ok(store_sum).split()[0]
        for n, name, _, _, fs in PARTS:
            mp = f"/mnt/p{n}"
            # imprint mount serves in the foreground until umount: run it in the background
            # and wait for its "mounted" JSON line in a log.
            sh_.ok(f"mkdir -p {mp}; {{ imprint --json mount {STORE} multi {mp} --partition {n} "
                   f">/tmp/mount{n}.log 2>&1 & }}")
            mounted = sh_.ok(f"i=0; until grep -q '\"mounted\"' /tmp/mount{n}.log || [ $i -gt 300 ]; do "
                             f"i=$((i+1)); usleep 100000; done; cat /tmp/mount{n}.log; "
                             f"grep ' {mp} ' /proc/mounts", 60)
            kind = {"fat32": "vfat", "exfat": "exfat", "ntfs": "ntfs3", "ntfs-dirty": "ntfs3"}[fs]
            if not re.search(rf"^/dev/loop\d+ {mp} {kind} ro[, ]", mounted, re.M):
                problems.append(f"p{n}: not mounted read-only as {kind}: {mounted.strip()}")
            listing = sh_.ok(f"ls -1 {mp}/{DEEP}")
            want = sorted(p.split("/")[-1] for p in files if p.startswith(DEEP + "/"))
            if sorted(listing.split()) != want:
                problems.append(f"p{n} ({fs}): {DEEP} lists {listing.split()}, want {want}")
            got = sums(sh_.ok(f"find {mp} -type f -exec sha256sum {{}} \\;"), f"{mp}/")
            # Filesystem-internal files the tools make (System Volume Information) aside.
            got = {k: v for k, v in got.items() if not k.startswith(("System Volume Information", "$"))}
            want_sums = {k: v[0] for k, v in files.items()}
            if got != want_sums:
                diff = sorted(set(got.items()) ^ set(want_sums.items()))
                problems.append(f"p{n} ({fs}): checksums differ: {diff[:4]}")
            sh_.ok(f"imprint umount {mp}", 60)
            out = sh_.ok(f"wait; cat /tmp/mount{n}.log")
            ends = [e["data"] for e in json_objects(out) if e.get("type") == "result"]
            if not (ends and ends[-1].get("ok") is True and ends[-1].get("command") == "mount"):
                problems.append(f"p{n}: imprint mount did not end with an ok result: {out[-300:]}")
            else:
                fetched[n] = ends[-1].get("chunks_fetched")

            dest = f"/tmp/ex{n}"
            sh_.ok(f"imprint extract {STORE} multi --partition {n} /deep --to {dest} >/dev/null", 120)
            tree_out = sh_.ok(f"cd {dest} && find . -type f -exec sha256sum {{}} \\; && "
                              f"find . -type f -exec stat -c '%Y %n' {{}} \\;; cd /")
            deep = {k: v for k, v in files.items() if k.startswith("deep/")}
            got = sums(tree_out, "./")
            if got != {k: v[0] for k, v in deep.items()}:
                problems.append(f"p{n} ({fs}): extracted /deep differs: {sorted(set(got) ^ set(deep))[:4]} "
                                f"or contents")
            times = mtimes(tree_out, "./")
            bad = [k for k, (_, t) in deep.items() if times.get(k) != t]
            if bad:
                problems.append(f"p{n} ({fs}): extract lost the mtime of {bad[:3]} "
                                f"({[times.get(k) for k in bad[:3]]} vs {[deep[k][1] for k in bad[:3]]})")
        after = sh_.ok(store_sum).split()[0]
        if after != before:
            problems.append("the store's files changed while browsing")
        left = sh_.run("grep -E 'fuse|/dev/loop|/mnt/p|/run/imprint/(fuse|private)' /proc/mounts; "
                       "losetup -a; find /run/imprint/mounts /run/imprint/fuse /run/imprint/private -mindepth 1 2>/dev/null")[0]
        if left.strip():
            problems.append(f"left behind: {left.strip()}")
        ctx.note(f"capture {job.get('seconds')} s; four partitions browsed in "
                 f"{time.monotonic() - t0:.0f} s (chunks read per mount {fetched}); whole boot {vm.elapsed():.0f} s")
        vm.send("poweroff -f\n")
        vm.wait_exit(30)
        vm.assert_no_panic()
    finally:
        vm.stop()
    check(not problems, "; ".join(problems))
    ctx.note(f"{len(files)} files x 4 filesystems (one NTFS marked dirty) match by sha256; extract kept mtimes; store unchanged; "
             "no mount, loop or FUSE left")


def dest_disk(work):
    """A 64 MiB GPT disk with one empty ext4 partition labelled DEST (from 1 MiB)."""
    disk = work / "dest.img"
    part = work / "dest.ext4"
    for f in (disk, part):
        if f.exists():
            f.unlink()
    with open(disk, "wb") as f:
        f.truncate(64 * MIB)
    sh("sgdisk", "-n1:2048:+48M", "-t1:8300", "-c1:dest", str(disk))
    sh("mkfs.ext4", "-q", "-F", "-L", "DEST", str(part), "48M")
    sh("dd", f"if={part}", f"of={disk}", "bs=1M", "seek=1", "conv=notrunc,sparse", "status=none")
    part.unlink()
    return disk


def test_tui_browser_copies_a_file_to_another_disk(ctx):
    """(issue 9) one boot: capture the FAT32/exFAT/NTFS disk over the command line, then in
    the text UI over the serial console: b, the store, the image, partition 1 (FAT32),
    into docs/, mark report.pdf, c, the DEST disk's ext4 partition (mounted for the copy);
    QEMU is then quit like a pulled plug, and the host finds the file with its bytes and
    mtime on that disk, e2fsck -fn clean."""
    from tests_tui import ENTER, TuiVM
    work, files, source, stick = prepare(ctx, "browse-tui-disks")
    dest = dest_disk(work)
    args = kernel_args("imprint.action=capture imprint.image=multi imprint.disk=serial:SRC-DISK "
                       "imprint.then=menu imprint.onerror=poweroff")
    args += ["-net", "none"] + USB_HOST + disk_args(stick, "usb", "IMPRINT-STICK", "st")
    args += disk_args(source, "virtio", "SRC-DISK", "src", snapshot=True)
    args += disk_args(dest, "virtio", "DEST-DISK", "dst")
    vm = TuiVM("browse-tui", args)
    try:
        vm.wait_for(r'\{"type":"imprint-job"[^\n]*\n', 180)  # the whole line
        job = vm.json_lines("imprint-job")[0]
        check(job["ok"] is True, f"capture failed: {job}")
        vm.wait_screen(r"Home[\s\S]*multi", 60, "home with the captured image")
        t0 = time.monotonic()
        vm.keys("b")
        vm.wait_screen(r"Browse 1/4", 10)
        vm.keys(ENTER)
        vm.wait_screen(r"Browse 2/4[\s\S]*multi", 10)
        vm.keys(ENTER)
        t = vm.wait_screen(r"Browse 3/4[\s\S]*#3 ntfs", 10)
        check('#1 fat32 "FATPART"' in t and '#2 exfat "EXPART"' in t, f"partition list:\n{t}")
        vm.keys(ENTER)  # partition 1: FAT32, mounted read-only
        t = vm.wait_screen(r"Browse 4/4[\s\S]*readme\.txt", 30, "the FAT32 root listed")
        check(re.search(r"docs/\s+<dir>", t) and re.search(r"deep/\s+<dir>", t), f"root listing:\n{t}")
        vm.select_row("docs/")
        vm.keys(ENTER)
        vm.wait_screen(r": /docs[\s\S]*report\.pdf", 10, "/docs listed")
        vm.select_row("report.pdf")
        vm.keys(" ")
        vm.wait_screen(r"\[1 marked\][\s\S]*\[x\] report\.pdf", 10, "report.pdf marked")
        vm.keys("c")
        vm.wait_screen(r"Copy 1 item to where\?[\s\S]*DEST", 15, "destinations with the DEST disk")
        t = vm.update()
        check("IMPRINTBOOT" not in t, f"the boot partition is offered as a destination:\n{t}")
        vm.select_row('"DEST"')
        vm.keys(ENTER)
        res = vm.wait_screen(r"Result[\s\S]*(SUCCESS|FAILED|REFUSED)", 60, "copy result")
        check("SUCCESS" in res and re.search(r"Copied 1 item\(s\) into multi-part1", res),
              f"copy result:\n{res}")
        check(re.search(r"1 files \([0-9.]+ kB\)", res), f"copy result has no figures:\n{res}")
        ctx.note(f"browse to copied {time.monotonic() - t0:.1f} s")
        vm.keys(ENTER)
        vm.wait_screen(r"Browse 4/4[\s\S]*: /docs", 10, "back to the file list")
        vm.keys("q")
        vm.wait_screen(r"Home", 10)
        vm.assert_no_panic()
    finally:
        # Pulled like a plug (HMP quit): SUCCESS must mean the copy is on the disk,
        # flushed and unmounted, which the host checks next.
        vm.stop()
    part = work / "dest-after.ext4"
    sh("dd", f"if={dest}", f"of={part}", "bs=1M", "skip=1", "count=48", "status=none")
    r = subprocess.run(["e2fsck", "-fn", str(part)], capture_output=True, text=True)
    check(r.returncode == 0, f"e2fsck -fn of the DEST partition: {r.stdout[-300:]}")
    data = subprocess.run(["debugfs", "-R", "cat /multi-part1/report.pdf", str(part)],
                          capture_output=True).stdout
    want_sum, want_mtime = files["docs/report.pdf"]
    check(hashlib.sha256(data).hexdigest() == want_sum,
          f"/multi-part1/report.pdf on DEST differs ({len(data)} bytes)")
    st = subprocess.run(["debugfs", "-R", "stat /multi-part1/report.pdf", str(part)],
                        capture_output=True, text=True).stdout
    m = re.search(r"mtime: (0x[0-9a-f]+)", st)
    check(m and int(m.group(1), 16) == want_mtime, f"mtime not kept: {st[:300]}")
    listing = subprocess.run(["debugfs", "-R", "ls -l /multi-part1", str(part)],
                             capture_output=True, text=True).stdout
    check("readme.txt" not in listing, f"more than the marked file was copied: {listing}")
    ctx.note("host: report.pdf on the DEST disk, sha256 and mtime match, e2fsck -fn clean")


TESTS = [test_browse_fat32_exfat_ntfs_in_guest, test_tui_browser_copies_a_file_to_another_disk]
