"""The CLI's own network store locations inside the boot environment (issue 8): from the
rescue shell, `imprint images smb://…` / `imprint restore smb://…` mount QEMU's built-in SMB
share (restrict=on, smbd spawned per connection by QEMU, no host port), and `nfs://…` an
export of nfs-ganesha (Debian's nfs-ganesha + nfs-ganesha-vfs) running as a child of the
test on the host's 127.0.0.1, reached through a guestfwd to socat (NFSv4 needs only TCP
2049). ops::locations mounts them with mount(2) (cifs vers=3.0 as guest; nfs4 vers=4.1)
and unmounts them when the command ends.
"""

import filecmp
import hashlib
import os
import re
import shutil
import subprocess
import time

from harness import OUT, VM, Skip, blank_disk, check, disk_args, kernel_args
from tests_capture import SRC_SIZE, job_boot, make_source_system, partition_offsets, sh
from tests_disks import shell_json
from tests_http import Server, free_port, guestfwd_net, imprint_partition, need_tools, random_store

MIB = 1 << 20
SOURCE_SIZE = 32 * MIB


def nothing_mounted(vm):
    vm.send("echo MOUNTS-begin; grep -c /run/imprint/net /proc/mounts; echo MOUNTS-end\n")
    m = vm.wait_for(r"MOUNTS-begin\s*\n(\d+)\s*\nMOUNTS-end", 20)
    check(m.group(1) == "0", "a share is still mounted under /run/imprint/net")


def shell_vm(name, extra_args):
    """Boots into the rescue shell with QEMU args `extra_args` (network and disks) and gives
    eth0 QEMU's usual guest address: the shell has no DHCP of its own."""
    vm = VM(name, kernel_args("imprint.action=shell imprint.console=200x50") + ["-net", "none"]
            + extra_args)
    try:
        vm.wait_for(r"starting a shell", 60)
        time.sleep(1)
        vm.send("ip link set eth0 up; ip addr add 10.0.2.15/24 dev eth0\n")
    except BaseException:
        vm.stop()
        raise
    return vm


def restore_golden(vm, url, what, list_timeout):
    """In `vm`'s shell: the store at `url` lists exactly the image "golden", which restores
    onto serial:TARGET; nothing stays mounted; the guest powers off cleanly. Returns the
    restore's JSON result and its wall time in seconds."""
    listed = shell_json(vm, f"imprint --json images {url}", "IMAGES", list_timeout)
    names = [i["name"] for i in listed["store"]["images"]]
    check(names == ["golden"], f"images over {what}: {listed}")
    t0 = time.monotonic()
    res = shell_json(vm, f"imprint --json restore {url} golden serial:TARGET --yes", "RESTORE", 180)
    took = time.monotonic() - t0
    check(res.get("ok") is True, f"restore over {what}: {res}")
    nothing_mounted(vm)
    vm.send("sync; poweroff -f\n")
    vm.wait_exit(30)
    vm.assert_no_panic()
    return res, took


def test_cli_restores_from_smb_location(ctx):
    """`imprint images/restore smb://10.0.2.4/qemu …` in the guest shell: listed, restored
    byte-identical, nothing left mounted under /run/imprint/net."""
    if not ctx.cli_ready():
        raise Skip("target/release/imprint has no restore with --json yet")
    need_tools("smbd")
    work = OUT / "smb-cli-store"
    source, share = random_store(work, SOURCE_SIZE // MIB, "share")
    os.system(f"chmod -R a+rwX {share}")
    target = blank_disk(work / "target.img", SOURCE_SIZE)
    net = ["-netdev", f"user,id=n0,restrict=on,smb={share}", "-device", "virtio-net-pci,netdev=n0"]
    vm = shell_vm("smb-cli", net + disk_args(target, "virtio", "TARGET", "dst"))
    try:
        res, took = restore_golden(vm, "smb://10.0.2.4/qemu", "SMB", 60)
    finally:
        vm.stop()
    check(filecmp.cmp(source, target, shallow=False), "the restored disk differs from the source")
    secs = res.get("elapsed_seconds") or 0
    ctx.note(f"listed and restored {SOURCE_SIZE // MIB} MiB over SMB in {secs:.1f} s "
             f"({SOURCE_SIZE / MIB / secs:.1f} MiB/s; {took:.1f} s with mount and unmount); "
             "byte-identical, nothing left mounted" if secs else "restored")




class Ganesha(Server):
    """nfs-ganesha (NFSv4 only, TCP) on the host's 127.0.0.1 exporting `export` read-only
    as /imprint, config, logs and recovery state under `work`."""

    def __init__(self, work, export):
        self.port = free_port()
        (work / "recov").mkdir(exist_ok=True)
        (work / "ganesha.conf").write_text(f"""
NFS_CORE_PARAM {{ Protocols = 4; NFS_Port = {self.port}; Bind_addr = 127.0.0.1;
  Enable_NLM = false; Enable_RQUOTA = false; Enable_UDP = false; }}
NFSV4 {{ Graceless = true; RecoveryBackend = fs_ng; RecoveryRoot = {work}/recov; }}
EXPORT {{ Export_Id = 1; Path = {export}; Pseudo = /imprint; Access_Type = RO;
  Squash = No_Root_Squash; SecType = sys; Protocols = 4; Transports = TCP;
  FSAL {{ Name = VFS; }} }}
""")
        self.start(["ganesha.nfsd", "-F", "-L", str(work / "ganesha.log"), "-f", str(work / "ganesha.conf"),
                    "-p", str(work / "ganesha.pid")],
                   lambda: f"nfs-ganesha did not listen on 127.0.0.1:{self.port}")


def test_cli_restores_from_nfs_export(ctx):
    """`imprint images/restore nfs://10.0.2.100/imprint …` in the guest shell against
    nfs-ganesha on the host's loopback: listed, restored byte-identical, unmounted."""
    if not ctx.cli_ready():
        raise Skip("target/release/imprint has no restore with --json yet")
    need_tools("ganesha.nfsd", "socat")
    work = OUT / "nfs-cli-store"
    source, export = random_store(work, SOURCE_SIZE // MIB, "export")
    ganesha = Ganesha(work, export)
    port = ganesha.port
    try:
        target = blank_disk(work / "target.img", SOURCE_SIZE)
        net = guestfwd_net("10.0.2.100:2049", port)
        vm = shell_vm("nfs-cli", net + disk_args(target, "virtio", "TARGET", "dst"))
        try:
            res, _ = restore_golden(vm, "nfs://10.0.2.100/imprint", "NFS", 90)
        finally:
            vm.stop()
    finally:
        ganesha.stop()
    check(filecmp.cmp(source, target, shallow=False), "the restored disk differs from the source")
    secs = res.get("elapsed_seconds") or 0
    ctx.note(f"listed and restored {SOURCE_SIZE // MIB} MiB over NFSv4.1 from nfs-ganesha in {secs:.1f} s"
             + (f" ({SOURCE_SIZE / MIB / secs:.1f} MiB/s)" if secs else "") + "; byte-identical, unmounted")




class Smbd(Server):
    """A real Samba smbd on the host's 127.0.0.1 with a user `root` (password `s3cret`) in
    a private passdb, in the foreground, everything under `work`; `max_protocol` makes an
    SMB1-only server."""

    def __init__(self, work, share, max_protocol=None):
        self.port = free_port()
        for d in ("private", "lock", "state", "cache", "pid", "ncalrpc"):
            (work / d).mkdir(parents=True, exist_ok=True)
        extra = f"  server min protocol = NT1\n  server max protocol = {max_protocol}\n" if max_protocol else ""
        conf = work / "smb.conf"
        conf.write_text(
            "[global]\n  interfaces = 127.0.0.1\n  bind interfaces only = yes\n"
            f"  smb ports = {self.port}\n"
            + "".join(f"  {d.replace('_', ' ')} directory = {work}/{d}\n" for d in ("lock", "state", "cache", "pid"))
            + f"  private dir = {work}/private\n  ncalrpc dir = {work}/ncalrpc\n"
            f"  log file = {work}/log.smbd\n  passdb backend = tdbsam:{work}/passdb.tdb\n"
            "  security = user\n  map to guest = Never\n  load printers = no\n  disable spoolss = yes\n"
            + extra + f"[store]\n  path = {share}\n  read only = no\n  force user = root\n")
        subprocess.run(["pdbedit", "-s", str(conf), "-a", "-u", "root", "-t"], input="s3cret\ns3cret\n",
                       capture_output=True, text=True, check=True)
        self.start(["smbd", "-F", "--no-process-group", "-s", str(conf), "--debug-stdout"],
                   lambda: f"smbd did not listen: {(work / 'smbd.out').read_text()[-300:]}",
                   stdout=open(work / "smbd.out", "w"))


def test_cli_smb_password_wrong_right_and_smb1_only(ctx):
    """Against a real smbd with a user and password on the host's loopback (guestfwd): a
    wrong password says "access denied" within seconds; the right one from --password-file
    lists the store; an SMB1-only server gets the SMB1 message."""
    if not ctx.cli_ready():
        raise Skip("target/release/imprint has no images with --json yet")
    need_tools("smbd", "pdbedit", "socat")
    work = OUT / "smb-auth-store"
    _, share = random_store(work, 4, "share")
    smb3 = Smbd(work / "smb3", share)
    smb1 = None
    try:
        smb1 = Smbd(work / "smb1", share, max_protocol="NT1")
        net = guestfwd_net("10.0.2.100:445", smb3.port,
                           f",guestfwd=tcp:10.0.2.101:445-cmd:socat - TCP:127.0.0.1:{smb1.port}")
        vm = shell_vm("smb-auth", net)
        try:
            t0 = time.monotonic()
            bad = shell_json(vm, "IMPRINT_STORE_PASSWORD=wrong imprint --json images smb://root@10.0.2.100/store",
                             "WRONG", 60)
            wrong_s = time.monotonic() - t0
            check(bad.get("ok") is False and "access denied" in bad.get("error", ""), f"wrong password: {bad}")
            check("wrong" not in bad.get("error", "").replace("wrong user", ""), f"password echoed: {bad}")
            check(wrong_s < 15, f"wrong password took {wrong_s:.1f} s")
            vm.send("echo s3cret > /tmp/pw\n")
            good = shell_json(vm, "imprint --json --password-file /tmp/pw images smb://root@10.0.2.100/store",
                              "RIGHT", 60)
            names = [i["name"] for i in good.get("store", {}).get("images", [])]
            check(names == ["golden"], f"right password: {good}")
            old = shell_json(vm, "imprint --json --password-file /tmp/pw images smb://root@10.0.2.101/store",
                             "SMB1", 60)
            check(old.get("ok") is False and "SMB1" in old.get("error", ""), f"SMB1-only server: {old}")
            nothing_mounted(vm)
            vm.send("poweroff -f\n")
            vm.wait_exit(30)
            vm.assert_no_panic()
        finally:
            vm.stop()
    finally:
        smb3.stop()
        if smb1:
            smb1.stop()
    ctx.note(f"wrong password: access denied in {wrong_s:.1f} s; --password-file lists the store; "
             f"SMB1-only server: {old.get('error', '')[-90:]}")


def test_boot_nfs_store_dhcp_on_every_wired_link(ctx):
    """imprint.store=nfs://… on the kernel command line with three NICs: the first has no
    link (set_link off), the second gets a DHCP lease on a network without the server
    (10.0.3.0/24), only the third reaches nfs-ganesha. init brings every link up, runs DHCP
    on the two with a link at once, mounts the export through ops::locations and restores."""
    if not ctx.cli_ready():
        raise Skip("target/release/imprint has no restore with --json yet")
    need_tools("ganesha.nfsd", "socat")
    work = OUT / "nfs-boot-store"
    source, export = random_store(work, SOURCE_SIZE // MIB, "export")
    target = blank_disk(work / "target.img", SOURCE_SIZE)
    ganesha = Ganesha(work, export)
    try:
        fwd = f"guestfwd=tcp:10.0.2.100:2049-cmd:socat - TCP:127.0.0.1:{ganesha.port}"
        nets = []
        for i, netdev in enumerate(["user,id=n0,restrict=on", "user,id=n1,restrict=on,net=10.0.3.0/24",
                                    f"user,id=n2,restrict=on,{fwd}"]):
            nets += ["-netdev", netdev, "-device", f"virtio-net-pci,netdev=n{i},mac=52:54:00:12:34:{0x10 + i:02x}"]
        cmdline = ("imprint.action=restore imprint.store=nfs://10.0.2.100/imprint imprint.image=golden "
                   "imprint.disk=serial:TARGET imprint.then=poweroff imprint.onerror=poweroff")
        vm = VM("nfs-boot-3nics", kernel_args(cmdline) + ["-net", "none"] + nets
                + disk_args(target, "virtio", "TARGET", "dst"))
        try:
            # Before the guest's kernel has even probed the NIC.
            vm.monitor("set_link n0 off")
            vm.wait_for("imprint: powering off", 240)
            vm.wait_exit(30)
            vm.assert_no_panic()
            jobs = vm.json_lines("imprint-job")
            text = vm.text()
        finally:
            vm.stop()
    finally:
        ganesha.stop()
    check(len(jobs) == 1 and jobs[0]["ok"] is True, f"restore from nfs:// failed: {jobs} | {vm.tail()}")
    check(jobs[0]["store"] == "nfs://10.0.2.100/imprint", f"store reported as {jobs[0]['store']!r}")
    no_link = re.findall(r"network: (\w+): no link", text)
    leases = re.findall(r"network: (\w+) has (\S+) \(DHCP\)", text)
    check(len(no_link) == 1, f"want one interface without a link, log says {no_link}")
    check(sorted(a.rsplit(".", 1)[0] for _, a in leases) == ["10.0.2", "10.0.3"],
          f"want DHCP leases on 10.0.2.x and 10.0.3.x, got {leases}")
    check("unmounted nfs://10.0.2.100/imprint" in text, "the export was not reported unmounted")
    check(filecmp.cmp(source, target, shallow=False), "the restored disk differs from the source")
    res = jobs[0].get("result") or {}
    ctx.note(f"{no_link[0]} without link skipped; leases {leases}; {SOURCE_SIZE // MIB} MiB restored from "
             f"nfs:// in {res.get('elapsed_seconds')} s, byte-identical")


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(MIB), b""):
            h.update(block)
    return h.hexdigest()


def test_boot_smb_capture_then_restore_same_share(ctx):
    """One SMB share (a real smbd with user root / password s3cret on the host's loopback,
    guestfwd): boot 1 captures disk A (GPT, FAT32 ESP, ext4) with the user and password
    from IMPRINT:/imprint/credentials; boot 2 restores onto blank disk B from the same
    share with imprint.store.password=. The host checks B: GPT (sgdisk -v, same
    partitions), e2fsck -fn, fsck.vfat -n, file checksums, and B equal to A byte for byte.
    The password appears in neither boot's console log nor in any file of the store."""
    if not ctx.cli_ready():
        raise Skip("target/release/imprint has no capture/restore with --json yet")
    need_tools("smbd", "pdbedit", "socat", "mkfs.vfat", "mcopy", "sgdisk", "e2fsck", "fsck.vfat", "debugfs")
    work = OUT / "smb-roundtrip"
    shutil.rmtree(work, ignore_errors=True)
    share = work / "share"
    share.mkdir(parents=True)
    disk_a, _, root_files = make_source_system(work)
    a_sum = sha256(disk_a)
    files = imprint_partition(work / "imprint-files.img",
                              {"/imprint/credentials": b"# the lab share\nuser=root\npassword=s3cret\n"})
    disk_b = blank_disk(work / "disk-b.img", SRC_SIZE)
    smbd = Smbd(work / "smbd", share)
    try:
        net = guestfwd_net("10.0.2.100:445", smbd.port)
        cap, cap_wall, vm1 = job_boot(
            "smb-roundtrip-capture", "imprint.action=capture imprint.store=smb://10.0.2.100/store "
            "imprint.image=roundtrip imprint.disk=serial:DISK-A",
            net + disk_args(disk_a, "ahci", "DISK-A", "a") + disk_args(files, "virtio", "IMPRINT-FILES", "fl"))
        check(cap["ok"] is True, f"capture to SMB failed: {cap} | {vm1.tail()}")
        res, res_wall, vm2 = job_boot(
            "smb-roundtrip-restore", "imprint.action=restore imprint.store=smb://root@10.0.2.100/store "
            "imprint.store.password=s3cret imprint.image=roundtrip imprint.disk=serial:DISK-B",
            net + disk_args(disk_b, "nvme", "DISK-B", "b"))
        check(res["ok"] is True, f"restore from SMB failed: {res} | {vm2.tail()}")
    finally:
        smbd.stop()
    log1, log2 = vm1.text(), vm2.text()
    check("store credentials read from IMPRINT:/imprint/credentials (user root)" in log1,
          "boot 1 did not read the credentials file")
    for name, log in (("capture", log1), ("restore", log2)):
        check("s3cret" not in log, f"the password is in the {name} boot's console log")
        check("unmounted smb://" in log, f"the {name} boot did not report the share unmounted")
    check(cap["store"] == "smb://10.0.2.100/store", f"store reported as {cap['store']!r}")
    leaked = [str(f) for f in share.rglob("*") if f.is_file() and b"s3cret" in f.read_bytes()]
    check(not leaked, f"the password is in the store (manifest?): {leaked}")
    check(sha256(disk_a) == a_sum, "capture changed disk A")
    problems = []
    v = subprocess.run(["sgdisk", "-v", str(disk_b)], capture_output=True, text=True).stdout
    if "No problems found" not in v:
        problems.append("sgdisk -v: " + " ".join(v.split())[:300])
    parts = partition_offsets(disk_b)
    if parts != partition_offsets(disk_a):
        problems.append(f"partitions differ: A {partition_offsets(disk_a)}, B {parts}")
    else:
        (esp_start, esp_size), (root_start, root_size) = parts[:2]
        root = work / "b-root.ext4"
        esp = work / "b-esp.vfat"
        sh("dd", f"if={disk_b}", f"of={root}", "bs=1M", f"skip={root_start // MIB}",
           f"count={root_size // MIB}", "status=none")
        sh("dd", f"if={disk_b}", f"of={esp}", "bs=1M", f"skip={esp_start // MIB}",
           f"count={esp_size // MIB}", "status=none")
        for tool in (["e2fsck", "-fn", str(root)], ["fsck.vfat", "-n", str(esp)]):
            r = subprocess.run(tool, capture_output=True, text=True)
            if r.returncode != 0:
                problems.append(f"{tool[0]} exit {r.returncode}: {r.stdout.strip()[-200:]}")
        for path, digest in root_files.items():
            data = subprocess.run(["debugfs", "-R", f"cat {path}", str(root)], capture_output=True).stdout
            if hashlib.sha256(data).hexdigest() != digest:
                problems.append(f"root file {path} differs on B")
    if sha256(disk_b) != a_sum:
        problems.append("disk B is not byte-identical to disk A")
    check(not problems, "disk B: " + "; ".join(problems))
    ctx.note(f"capture boot {cap_wall:.1f} s (credentials file), restore boot {res_wall:.1f} s "
             f"(imprint.store.password=), {(res.get('result') or {}).get('written_bytes')} bytes written; "
             f"B: sgdisk -v, e2fsck, fsck.vfat clean, {len(root_files)} files match, B == A; "
             "password in neither log")


def test_boot_smb_wrong_password_says_access_denied(ctx):
    """imprint.store=smb://… with a wrong password in IMPRINT:/imprint/credentials: the job
    stops with "access denied" within seconds, and the password is not in the console log."""
    need_tools("smbd", "pdbedit", "socat", "mkfs.vfat", "mcopy")
    work = OUT / "smb-wrong-password-store"
    _, share = random_store(work, 4, "share")
    files = imprint_partition(work / "imprint-files.img",
                              {"/imprint/credentials": b"user=root\npassword=Wr0ng-pa55\n"})
    smbd = Smbd(work / "smbd", share)
    try:
        job, wall, vm = job_boot(
            "smb-boot-wrong-password", "imprint.action=verify imprint.store=smb://10.0.2.100/store "
            "imprint.image=golden", guestfwd_net("10.0.2.100:445", smbd.port)
            + disk_args(files, "virtio", "IMPRINT-FILES", "fl"), timeout=120)
    finally:
        smbd.stop()
    error = job.get("error") or ""
    check(job["ok"] is False and "access denied" in error, f"wrong password: {job}")
    check("Wr0ng-pa55" not in vm.text(), "the password is in the console log")
    check(job["seconds"] < 15, f"access denied after {job['seconds']} s")
    ctx.note(f"{error[:140]!r} after {job['seconds']:.1f} s of job time; password not in the log")


TESTS = [test_cli_restores_from_smb_location, test_cli_restores_from_nfs_export,
         test_cli_smb_password_wrong_right_and_smb1_only, test_boot_nfs_store_dhcp_on_every_wired_link,
         test_boot_smb_capture_then_restore_same_share, test_boot_smb_wrong_password_says_access_denied]
