"""(e) Unattended capture and restore through the kernel command line, checked on the host.

Boot 1 captures a small real system (GPT, FAT32 ESP, ext4 root with files) from an AHCI disk
into the IMPRINT store of a USB stick image; boot 2 restores it onto a blank, larger NVMe
disk. The host then proves the result with sgdisk -v, e2fsck -fn, fsck.vfat -n and file
checksums read back with debugfs and mtools.
"""

import hashlib
import os
import re
import shutil
import subprocess

from harness import (DIST, OUT, USB_HOST, VM, Skip, bad_cmdline, check, disk_args, kernel_args)

MIB = 1 << 20
ESP_START, ESP_SIZE = 1 * MIB, 64 * MIB
ROOT_START, ROOT_SIZE = 65 * MIB, 160 * MIB
SRC_SIZE = 256 * MIB
VERIFY_AFTER_GROW_MUST_MATCH = True
DST_SIZE = 512 * MIB


def sh(*cmd, **kw):
    r = subprocess.run(cmd, capture_output=True, text=True, **kw)
    if r.returncode != 0:
        raise AssertionError(f"{' '.join(map(str, cmd))} failed ({r.returncode}): {r.stderr.strip() or r.stdout.strip()}")
    return r.stdout


def make_source_system(work, blob_mib=3):
    """A 256 MiB GPT disk: 64 MiB FAT32 ESP + 160 MiB ext4 root made with real tools, the
    root holding a random file of about `blob_mib` MiB.
    Returns (disk path, {path: sha256} for ESP files, {path: sha256} for root files)."""
    rootdir = work / "rootfs"
    shutil.rmtree(rootdir, ignore_errors=True)
    (rootdir / "etc").mkdir(parents=True)
    (rootdir / "usr/lib").mkdir(parents=True)
    (rootdir / "etc/hostname").write_text("golden-pc\n")
    (rootdir / "etc/os-release").write_text('NAME="Imprint test system"\nVERSION_ID="1"\n')
    rnd = os.urandom
    (rootdir / "usr/lib/blob.bin").write_bytes(rnd(blob_mib * MIB + 12345))
    (rootdir / "usr/lib/text.txt").write_text("imprint " * 100000)
    os.symlink("../etc/hostname", rootdir / "usr/hostname-link")
    root_files = {f"/{p.relative_to(rootdir)}": hashlib.sha256(p.read_bytes()).hexdigest()
                  for p in rootdir.rglob("*") if p.is_file() and not p.is_symlink()}

    root_img = work / "root.ext4"
    if root_img.exists():
        root_img.unlink()
    sh("mkfs.ext4", "-q", "-F", "-L", "golden-root", "-d", str(rootdir), str(root_img), f"{ROOT_SIZE // 1024}k")

    esp_img = work / "esp.vfat"
    if esp_img.exists():
        esp_img.unlink()
    sh("mkfs.vfat", "-F", "32", "-s", "1", "-n", "ESP", "-C", str(esp_img), str(ESP_SIZE // 1024))
    env = dict(os.environ, MTOOLS_SKIP_CHECK="1")
    sh("mmd", "-i", str(esp_img), "::/EFI", "::/EFI/BOOT", env=env)
    esp_files = {}
    for name, data in [("/EFI/BOOT/BOOTX64.EFI", rnd(700 * 1024)), ("/EFI/BOOT/grub.cfg", b"set timeout=5\n"),
                       ("/README.TXT", b"ESP of the Imprint test system\n")]:
        tmp = work / "esp-file"
        tmp.write_bytes(data)
        sh("mcopy", "-i", str(esp_img), str(tmp), f"::{name}", env=env)
        esp_files[name] = hashlib.sha256(data).hexdigest()

    disk = work / "source.img"
    if disk.exists():
        disk.unlink()
    with open(disk, "wb") as f:
        f.truncate(SRC_SIZE)
    # sgdisk -q writes nothing to image files (notes: host-kernel.md); drop its output instead.
    sh("sgdisk", f"-n1:{ESP_START // 512}:+{ESP_SIZE // 1024}K", "-t1:ef00", "-c1:EFI system",
       f"-n2:{ROOT_START // 512}:+{ROOT_SIZE // 1024}K", "-t2:8300", "-c2:root", str(disk))
    for img, off in ((esp_img, ESP_START), (root_img, ROOT_START)):
        sh("dd", f"if={img}", f"of={disk}", "bs=1M", f"seek={off // MIB}", "conv=notrunc,sparse", "status=none")
    sh("sgdisk", "-v", str(disk))
    return disk, esp_files, root_files


def job_boot(name, cmdline, disks, timeout=240):
    vm = VM(name, kernel_args(cmdline + " imprint.then=poweroff imprint.onerror=poweroff") + ["-net", "none"] + disks)
    try:
        vm.wait_for("imprint: powering off", timeout)
        wall = vm.wait_exit(30)
        vm.assert_no_panic()
        jobs = vm.json_lines("imprint-job")
        check(len(jobs) == 1, f"{name}: expected one imprint-job line, got {len(jobs)}")
        return jobs[0], wall, vm
    finally:
        vm.stop()


def partition_offsets(disk):
    """(start, size) in bytes of each partition, from sgdisk -p."""
    out = sh("sgdisk", "-p", str(disk))
    parts = []
    for line in out.splitlines():
        m = re.match(r"\s+(\d+)\s+(\d+)\s+(\d+)\s", line)
        if m:
            start, end = int(m.group(2)), int(m.group(3))
            parts.append((start * 512, (end - start + 1) * 512))
    return parts


def check_restored_system(work, target, esp_files, root_files):
    """The host's own proofs that `target` holds the system of make_source_system: sgdisk -v,
    the ESP and root where they were, e2fsck -fn, fsck.vfat -n, every file's checksum."""
    # Every problem is collected so one run reports them all.
    problems = []
    v = subprocess.run(["sgdisk", "-v", str(target)], capture_output=True, text=True).stdout
    if "No problems found" not in v:
        problems.append("sgdisk -v: " + " ".join(v.split())[:300])
    parts = partition_offsets(target)
    if len(parts) < 2 or parts[0] != (ESP_START, ESP_SIZE) or parts[1][0] != ROOT_START:
        raise AssertionError(f"partitions moved or missing: {parts}; problems so far: {problems}")

    def fsck_copy(name, start, size, fsck):
        """Copies a partition of `target` out to a file and runs `fsck` (read-only) on it."""
        copy = work / name
        sh("dd", f"if={target}", f"of={copy}", "bs=1M", f"skip={start // MIB}", f"count={size // MIB}",
           "status=none")
        r = subprocess.run([*fsck, str(copy)], capture_output=True, text=True)
        if r.returncode != 0:
            problems.append(f"{' '.join(fsck)} exit {r.returncode}: {r.stdout.strip()[-200:]}")
        return copy

    root_copy = fsck_copy("restored-root.ext4", ROOT_START, parts[1][1], ["e2fsck", "-fn"])
    esp_copy = fsck_copy("restored-esp.vfat", ESP_START, ESP_SIZE, ["fsck.vfat", "-n"])
    env = dict(os.environ, MTOOLS_SKIP_CHECK="1")
    for name, digest in esp_files.items():
        data = subprocess.run(["mcopy", "-i", str(esp_copy), f"::{name}", "-"], capture_output=True, env=env).stdout
        if hashlib.sha256(data).hexdigest() != digest:
            problems.append(f"ESP file {name} differs after restore")
    for name, digest in root_files.items():
        data = subprocess.run(["debugfs", "-R", f"cat {name}", str(root_copy)], capture_output=True).stdout
        if hashlib.sha256(data).hexdigest() != digest:
            problems.append(f"root file {name} differs after restore")
    check(not problems, "restored disk: " + "; ".join(problems))


def test_capture_then_restore_to_larger_nvme(ctx):
    """(e) capture a real GPT/ESP/ext4 disk over the kernel command line, restore it onto a
    larger blank NVMe disk, prove it with fsck and checksums."""
    if not ctx.cli_ready():
        raise Skip("target/release/imprint has no capture/restore with --json yet")
    work = OUT / "capture-restore"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    source, esp_files, root_files = make_source_system(work)
    stick = work / "stick.img"
    sh("cp", "--sparse=always", str(DIST / "imprint-usb.img"), str(stick))
    usb = USB_HOST + disk_args(stick, "usb", "IMPRINT-STICK", "st")

    src_sum = hashlib.sha256(source.read_bytes()).hexdigest()
    job, wall, _ = job_boot(
        "capture", 'imprint.action=capture imprint.image=golden imprint.disk=serial:SRC-DISK '
        'imprint.description="test system"', usb + disk_args(source, "ahci", "SRC-DISK", "src"))
    check(job["ok"] is True and job["exit_code"] == 0, f"capture failed: {job}")
    res = job.get("result") or {}
    check(res.get("disk_bytes") == SRC_SIZE, f"capture result has no byte counts: {res}")
    check(hashlib.sha256(source.read_bytes()).hexdigest() == src_sum, "capture changed the source disk")
    ctx.note(f"capture boot {wall:.1f} s, new_bytes {res.get('new_bytes')}")

    target = work / "nvme.img"
    with open(target, "wb") as f:
        f.truncate(DST_SIZE)
    job, wall, _ = job_boot(
        "restore", "imprint.action=restore imprint.image=golden imprint.disk=serial:NEW-NVME",
        usb + disk_args(target, "nvme", "NEW-NVME", "dst"))
    check(job["ok"] is True and job["exit_code"] == 0, f"restore failed: {job}")
    res = job.get("result") or {}
    check(isinstance(res.get("written_bytes"), int) and res["written_bytes"] > 0,
          f"restore result has no byte counts: {res}")
    ctx.note(f"restore boot {wall:.1f} s, written_bytes {res['written_bytes']}")

    check_restored_system(work, target, esp_files, root_files)
    ctx.note(f"sgdisk -v, e2fsck -fn, fsck.vfat -n clean; {len(esp_files) + len(root_files)} files match")

    # The restored disk verified against the image from the command line. The job itself
    # must always end cleanly with a JSON report; whether a disk whose GPT was relocated to
    # a larger size counts as "matching" is the CLI's call. Known issue (reported to the
    # CLI/ops owners): it reports the MBR/GPT chunks as a mismatch (exit 3). Flip
    # VERIFY_AFTER_GROW_MUST_MATCH once fixed.
    job, wall, _ = job_boot(
        "verify", "imprint.action=verify imprint.image=golden imprint.disk=serial:NEW-NVME",
        usb + disk_args(target, "nvme", "NEW-NVME", "dst"))
    check(job["exit_code"] in (0, 3), f"verify --against did not run: {job}")
    if VERIFY_AFTER_GROW_MUST_MATCH:
        check(job["ok"] is True, f"verify --against failed: {job}")
    ctx.note(f"verify --against boot {wall:.1f} s: "
             + ("match" if job["ok"] else f"KNOWN ISSUE exit {job['exit_code']}: {job['error']}"))


def test_missing_image(ctx):
    """(d) restoring an image the store does not have ends with the CLI's error, as JSON."""
    stick = OUT / "capture-restore" / "stick.img"
    if not ctx.cli_ready() or not stick.exists():
        raise Skip("needs the store written by capture_then_restore_to_larger_nvme")
    target = OUT / "capture-restore" / "missing-image-target.img"
    with open(target, "wb") as f:
        f.truncate(64 * MIB)
    extra = USB_HOST + disk_args(stick, "usb", "IMPRINT-STICK", "st", snapshot=True)
    extra += disk_args(target, "virtio", "TARGET", "d0")
    bad_cmdline(ctx, "missing-image",
                "imprint.action=restore imprint.image=no-such-image imprint.disk=serial:TARGET",
                r"no image named .no-such-image.", extra)


TESTS = [test_capture_then_restore_to_larger_nvme, test_missing_image]


def test_capture_to_smb_share(ctx):
    """Network store: DHCP, then capture straight onto an SMB share (QEMU's built-in smbd,
    restrict=on); the host reads the store back with the CLI and verifies the image."""
    if not ctx.cli_ready():
        raise Skip("target/release/imprint has no capture with --json yet")
    if not shutil.which("smbd") and not os.path.exists("/usr/sbin/smbd"):
        raise Skip("samba (smbd) is not installed")
    work = OUT / "smb-store"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    share = work / "share"
    share.mkdir()
    os.chmod(share, 0o777)
    source, _, _ = make_source_system(work)
    net = ["-netdev", f"user,id=n0,restrict=on,smb={share}", "-device", "virtio-net-pci,netdev=n0"]
    job, wall, vm = job_boot(
        "smb-capture", "imprint.action=capture imprint.store=smb://10.0.2.4/qemu imprint.image=netcap "
        "imprint.disk=serial:SRC-DISK", net + disk_args(source, "virtio", "SRC-DISK", "src"))
    check(job["ok"] is True, f"capture to SMB failed: {job}")
    check(job["store"] == "smb://10.0.2.4/qemu", f"store reported as {job['store']!r}")
    exe = str(DIST.parent / "target" / "release" / "imprint")
    images = sh(exe, "images", str(share), "--json")
    check("netcap" in images, f"host does not see image netcap in the share: {images[-300:]}")
    r = subprocess.run([exe, "verify", str(share), "netcap", "--against", str(source), "--json"],
                       capture_output=True, text=True)
    check(r.returncode == 0, f"host verify of the SMB-captured image against the source: exit {r.returncode}: {r.stdout[-300:]}")
    ctx.note(f"capture over SMB boot {wall:.1f} s; host verify --against source ok")


TESTS.append(test_capture_to_smb_share)
