"""Local stores on the other filesystems a technician's stick or USB disk carries
(DESIGN.md: FAT32, exFAT, ext4, NTFS; exFAT is the boot stick's own store, tested by
tests_capture.py). The boot environment's kernel drivers (vfat, ntfs3) hold the store:
packs are appended with O_DIRECT where the filesystem takes it (vfat falls back to
buffered writes when a write extends a file) and read back with O_DIRECT spans
(docs/ARCHITECTURE.md "Pack writes skip the page cache too"), so capture, verify, restore and verify --against run
through both drivers, and the host then checks the restored disks and the sticks'
filesystems.
"""

import shutil
import subprocess

from harness import OUT, USB_HOST, Skip, blank_disk, check, disk_args
from tests_capture import SRC_SIZE, check_restored_system, make_source_system, sh
from tests_disks import shell_json
from tests_http import need_tools
from tests_netstores import shell_vm

MIB = 1 << 20
# Over 4 MiB of random data, so each pack fills the 4 MiB append buffer several times.
BLOB_MIB = 20
STICK_SIZE = 96 * MIB
STICKS = [  # (kernel filesystem type, mount options, label, USB serial, restore target's serial)
    # The options imprint-init mounts a store with (crates/init/src/job.rs): Debian's
    # default FAT iocharset is ascii, whose nls module the initramfs lacks.
    ("vfat", "iocharset=utf8", "FATSTORE", "FAT-STICK", "TARGET-FAT"),
    ("ntfs3", "defaults", "NTFSSTORE", "NTFS-STICK", "TARGET-NTFS"),
]


def make_stick(work, fstype, label):
    img = blank_disk(work / f"{label}.img", STICK_SIZE)
    if fstype == "vfat":
        sh("mkfs.vfat", "-F", "32", "-n", label, str(img))
    else:
        sh("mkntfs", "-F", "-Q", "-L", label, str(img))
    return img


def stick_fsck(fstype, img):
    """The host's read-only check of a stick's filesystem after the guest wrote a store."""
    cmd = ["fsck.vfat", "-n", str(img)] if fstype == "vfat" else ["ntfsfix", "-n", str(img)]
    r = subprocess.run(cmd, capture_output=True, text=True)
    return None if r.returncode == 0 else f"{cmd[0]} exit {r.returncode}: {(r.stdout + r.stderr).strip()[-300:]}"


def test_stores_on_fat32_and_ntfs_capture_verify_restore(ctx):
    """A store on a FAT32 and on an NTFS stick, mounted by the guest's vfat and ntfs3: capture,
    verify, restore onto a blank disk and verify --against it; the host proves each restored
    disk (sgdisk -v, e2fsck -fn, fsck.vfat -n, file checksums) and each stick's filesystem."""
    if not ctx.cli_ready():
        raise Skip("target/release/imprint has no capture/restore with --json yet")
    need_tools("mkfs.vfat", "mkntfs", "ntfsfix", "fsck.vfat", "e2fsck", "debugfs", "mcopy", "sgdisk")
    work = OUT / "fs-stores-disks"  # OUT / "fs-stores" is the VM's own directory
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    source, esp_files, root_files = make_source_system(work, blob_mib=BLOB_MIB)
    args = USB_HOST + disk_args(source, "ahci", "SRC-DISK", "src")
    sticks, targets = {}, {}
    for i, (fstype, _, label, serial, target) in enumerate(STICKS):
        sticks[label] = make_stick(work, fstype, label)
        targets[label] = blank_disk(work / f"{target}.img", SRC_SIZE)
        args += disk_args(sticks[label], "usb", serial, f"st{i}")
        args += disk_args(targets[label], "virtio", target, f"t{i}")

    vm = shell_vm("fs-stores", args)
    try:
        for fstype, opts, label, _, target in STICKS:
            mnt = f"/mnt/{label}"
            vm.send(f"mkdir -p {mnt}; mount -t {fstype} -o {opts} /dev/disk/by-label/{label} {mnt}; "
                    f"echo MOUNTED-{label}-$?\n")
            m = vm.wait_for(rf"MOUNTED-{label}-(\d+)", 30)
            check(m.group(1) == "0", f"the guest could not mount the {fstype} stick: {vm.text()[-500:]}")
            store = f"{mnt}/imprint-store"
            res = shell_json(vm, f"imprint --json capture serial:SRC-DISK {store} --name golden", "CAPTURE", 180)
            check(res.get("ok") is True and res.get("new_bytes", 0) > BLOB_MIB * MIB,
                  f"capture into the {fstype} store: {res}")
            new_bytes = res["new_bytes"]
            res = shell_json(vm, f"imprint --json verify {store} golden", "VERIFY", 120)
            check(res.get("ok") is True, f"verify of the {fstype} store: {res}")
            res = shell_json(vm, f"imprint --json restore {store} golden serial:{target} --yes", "RESTORE", 180)
            check(res.get("ok") is True and res.get("written_bytes", 0) > BLOB_MIB * MIB,
                  f"restore from the {fstype} store: {res}")
            res = shell_json(vm, f"imprint --json verify {store} golden --against serial:{target}", "AGAINST", 120)
            check(res.get("ok") is True, f"verify --against after the restore from the {fstype} store: {res}")
            vm.send(f"umount {mnt}; echo UNMOUNTED-{label}-$?\n")
            m = vm.wait_for(rf"UNMOUNTED-{label}-(\d+)", 30)
            check(m.group(1) == "0", f"the {fstype} stick did not unmount: {vm.text()[-300:]}")
            ctx.note(f"{fstype} store: {new_bytes} bytes stored, verified, restored, verified against the disk")
        vm.send("sync; poweroff -f\n")
        vm.wait_exit(30)
        vm.assert_no_panic()
    finally:
        vm.stop()

    problems = []
    for fstype, _, label, _, _ in STICKS:
        if p := stick_fsck(fstype, sticks[label]):
            problems.append(f"{label}: {p}")
    check(not problems, "store filesystems: " + "; ".join(problems))
    for _, _, label, _, _ in STICKS:
        check_restored_system(work, targets[label], esp_files, root_files)
    ctx.note(f"host: both sticks' filesystems clean; both restored disks pass sgdisk -v, e2fsck -fn, "
             f"fsck.vfat -n and {len(esp_files) + len(root_files)} file checksums")


TESTS = [test_stores_on_fat32_and_ntfs_capture_verify_restore]
