"""The CLI's own network store locations inside the boot environment (issue 8): from the
rescue shell, `imprint images smb://10.0.2.4/qemu` and `imprint restore smb://…` mount
QEMU's built-in SMB share (restrict=on, smbd spawned per connection by QEMU, no host port)
with ops::locations (mount(2) of cifs, vers=3.0, guest), and unmount it when done.
"""

import filecmp
import os
import shutil
import subprocess
import time

from harness import DIST, OUT, VM, Skip, check, disk_args, kernel_args
from tests_disks import shell_json

MIB = 1 << 20
SOURCE_SIZE = 32 * MIB


def test_cli_restores_from_smb_location(ctx):
    """`imprint images/restore smb://10.0.2.4/qemu …` in the guest shell: listed, restored
    byte-identical, nothing left mounted under /run/imprint/net."""
    if not ctx.cli_ready():
        raise Skip("target/release/imprint has no restore with --json yet")
    if not shutil.which("smbd") and not os.path.exists("/usr/sbin/smbd"):
        raise Skip("samba (smbd) is not installed")
    work = OUT / "smb-cli-store"
    shutil.rmtree(work, ignore_errors=True)
    share = work / "share"
    share.mkdir(parents=True)
    source = work / "source.img"
    with open(source, "wb") as f:
        for _ in range(SOURCE_SIZE // MIB):
            f.write(os.urandom(MIB))
    exe = str(DIST.parent / "target" / "release" / "imprint")
    r = subprocess.run([exe, "capture", str(source), str(share), "--name", "golden"],
                       capture_output=True, text=True)
    check(r.returncode == 0, f"host capture: {r.stderr[-300:]}")
    os.system(f"chmod -R a+rwX {share}")
    target = work / "target.img"
    with open(target, "wb") as f:
        f.truncate(SOURCE_SIZE)
    net = ["-netdev", f"user,id=n0,restrict=on,smb={share}", "-device", "virtio-net-pci,netdev=n0"]
    args = (kernel_args("imprint.action=shell imprint.console=200x50") + ["-net", "none"] + net
            + disk_args(target, "virtio", "TARGET", "dst"))
    vm = VM("smb-cli", args)
    try:
        vm.wait_for(r"starting a shell", 60)
        time.sleep(1)
        # A static address in QEMU's user network: the shell has no DHCP of its own.
        vm.send("ip link set eth0 up; ip addr add 10.0.2.15/24 dev eth0\n")
        listed = shell_json(vm, "imprint --json images smb://10.0.2.4/qemu", "IMAGES", 60)
        names = [i["name"] for i in listed["store"]["images"]]
        check(names == ["golden"], f"images over SMB: {listed}")
        t0 = time.monotonic()
        res = shell_json(vm, "imprint --json restore smb://10.0.2.4/qemu golden serial:TARGET --yes",
                         "RESTORE", 180)
        took = time.monotonic() - t0
        check(res.get("ok") is True, f"restore over SMB: {res}")
        vm.send("echo MOUNTS-begin; grep -c /run/imprint/net /proc/mounts; echo MOUNTS-end\n")
        m = vm.wait_for(r"MOUNTS-begin\s*\n(\d+)\s*\nMOUNTS-end", 20)
        check(m.group(1) == "0", "a share is still mounted under /run/imprint/net")
        vm.send("sync; poweroff -f\n")
        vm.wait_exit(30)
        vm.assert_no_panic()
    finally:
        vm.stop()
    check(filecmp.cmp(source, target, shallow=False), "the restored disk differs from the source")
    secs = res.get("elapsed_seconds") or 0
    ctx.note(f"listed and restored {SOURCE_SIZE // MIB} MiB over SMB in {secs:.1f} s "
             f"({SOURCE_SIZE / MIB / secs:.1f} MiB/s; {took:.1f} s with mount and unmount); "
             "byte-identical, nothing left mounted" if secs else "restored")


TESTS = [test_cli_restores_from_smb_location]
