"""The CLI's own network store locations inside the boot environment (issue 8): from the
rescue shell, `imprint images smb://…` / `imprint restore smb://…` mount QEMU's built-in SMB
share (restrict=on, smbd spawned per connection by QEMU, no host port), and `nfs://…` an
export of nfs-ganesha (Debian's nfs-ganesha + nfs-ganesha-vfs) running as a child of the
test on the host's 127.0.0.1, reached through a guestfwd to socat (NFSv4 needs only TCP
2049). ops::locations mounts them with mount(2) (cifs vers=3.0 as guest; nfs4 vers=4.1)
and unmounts them when the command ends.
"""

import filecmp
import os
import shutil
import socket
import subprocess
import time

from harness import DIST, OUT, VM, Skip, check, disk_args, kernel_args
from tests_disks import shell_json

MIB = 1 << 20
SOURCE_SIZE = 32 * MIB


def random_source(work):
    source = work / "source.img"
    with open(source, "wb") as f:
        for _ in range(SOURCE_SIZE // MIB):
            f.write(os.urandom(MIB))
    return source


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def nothing_mounted(vm):
    vm.send("echo MOUNTS-begin; grep -c /run/imprint/net /proc/mounts; echo MOUNTS-end\n")
    m = vm.wait_for(r"MOUNTS-begin\s*\n(\d+)\s*\nMOUNTS-end", 20)
    check(m.group(1) == "0", "a share is still mounted under /run/imprint/net")


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
    source = random_source(work)
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
        nothing_mounted(vm)
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




def test_cli_restores_from_nfs_export(ctx):
    """`imprint images/restore nfs://10.0.2.100/imprint …` in the guest shell against
    nfs-ganesha on the host's loopback: listed, restored byte-identical, unmounted."""
    if not ctx.cli_ready():
        raise Skip("target/release/imprint has no restore with --json yet")
    for tool in ("ganesha.nfsd", "socat"):
        if not shutil.which(tool):
            raise Skip(f"{tool} is not installed (nfs-ganesha, socat)")
    work = OUT / "nfs-cli-store"
    shutil.rmtree(work, ignore_errors=True)
    export = work / "export"
    export.mkdir(parents=True)
    source = random_source(work)
    exe = str(DIST.parent / "target" / "release" / "imprint")
    r = subprocess.run([exe, "capture", str(source), str(export), "--name", "golden"],
                       capture_output=True, text=True)
    check(r.returncode == 0, f"host capture: {r.stderr[-300:]}")
    port = free_port()
    (work / "recov").mkdir()
    (work / "ganesha.conf").write_text(f"""
NFS_CORE_PARAM {{ Protocols = 4; NFS_Port = {port}; Bind_addr = 127.0.0.1;
  Enable_NLM = false; Enable_RQUOTA = false; Enable_UDP = false; }}
NFSV4 {{ Graceless = true; RecoveryBackend = fs_ng; RecoveryRoot = {work}/recov; }}
EXPORT {{ Export_Id = 1; Path = {export}; Pseudo = /imprint; Access_Type = RO;
  Squash = No_Root_Squash; SecType = sys; Protocols = 4; Transports = TCP;
  FSAL {{ Name = VFS; }} }}
""")
    ganesha = subprocess.Popen(["ganesha.nfsd", "-F", "-L", str(work / "ganesha.log"),
                                "-f", str(work / "ganesha.conf"), "-p", str(work / "ganesha.pid")],
                               stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    try:
        for _ in range(200):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.05)
        else:
            raise AssertionError(f"nfs-ganesha did not listen on 127.0.0.1:{port}")
        target = work / "target.img"
        with open(target, "wb") as f:
            f.truncate(SOURCE_SIZE)
        fwd = f"guestfwd=tcp:10.0.2.100:2049-cmd:socat - TCP:127.0.0.1:{port}"
        net = ["-netdev", f"user,id=n0,restrict=on,{fwd}", "-device", "virtio-net-pci,netdev=n0"]
        args = (kernel_args("imprint.action=shell imprint.console=200x50") + ["-net", "none"] + net
                + disk_args(target, "virtio", "TARGET", "dst"))
        vm = VM("nfs-cli", args)
        try:
            vm.wait_for(r"starting a shell", 60)
            time.sleep(1)
            vm.send("ip link set eth0 up; ip addr add 10.0.2.15/24 dev eth0\n")
            listed = shell_json(vm, "imprint --json images nfs://10.0.2.100/imprint", "IMAGES", 90)
            names = [i["name"] for i in listed["store"]["images"]]
            check(names == ["golden"], f"images over NFS: {listed}")
            res = shell_json(vm, "imprint --json restore nfs://10.0.2.100/imprint golden serial:TARGET --yes",
                             "RESTORE", 180)
            check(res.get("ok") is True, f"restore over NFS: {res}")
            nothing_mounted(vm)
            vm.send("sync; poweroff -f\n")
            vm.wait_exit(30)
            vm.assert_no_panic()
        finally:
            vm.stop()
    finally:
        ganesha.kill()
        ganesha.wait()
    check(filecmp.cmp(source, target, shallow=False), "the restored disk differs from the source")
    secs = res.get("elapsed_seconds") or 0
    ctx.note(f"listed and restored {SOURCE_SIZE // MIB} MiB over NFSv4.1 from nfs-ganesha in {secs:.1f} s"
             + (f" ({SOURCE_SIZE / MIB / secs:.1f} MiB/s)" if secs else "") + "; byte-identical, unmounted")




class Smbd:
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
        self.proc = subprocess.Popen(["smbd", "-F", "--no-process-group", "-s", str(conf), "--debug-stdout"],
                                     stdin=subprocess.DEVNULL, stdout=open(work / "smbd.out", "w"),
                                     stderr=subprocess.STDOUT)
        for _ in range(200):
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise AssertionError(f"smbd did not listen: {(work / 'smbd.out').read_text()[-300:]}")

    def stop(self):
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()


def test_cli_smb_password_wrong_right_and_smb1_only(ctx):
    """Against a real smbd with a user and password on the host's loopback (guestfwd): a
    wrong password says "access denied" within seconds; the right one from --password-file
    lists the store; an SMB1-only server gets the SMB1 message."""
    if not ctx.cli_ready():
        raise Skip("target/release/imprint has no images with --json yet")
    for tool in ("smbd", "pdbedit", "socat"):
        if not shutil.which(tool) and not os.path.exists(f"/usr/sbin/{tool}"):
            raise Skip(f"{tool} is not installed (samba, socat)")
    work = OUT / "smb-auth-store"
    shutil.rmtree(work, ignore_errors=True)
    share = work / "share"
    share.mkdir(parents=True)
    source = work / "source.img"
    with open(source, "wb") as f:
        f.write(os.urandom(4 * MIB))
    exe = str(DIST.parent / "target" / "release" / "imprint")
    r = subprocess.run([exe, "capture", str(source), str(share), "--name", "golden"],
                       capture_output=True, text=True)
    check(r.returncode == 0, f"host capture: {r.stderr[-300:]}")
    smb3 = Smbd(work / "smb3", share)
    smb1 = None
    try:
        smb1 = Smbd(work / "smb1", share, max_protocol="NT1")
        fwd = [f"guestfwd=tcp:10.0.2.100:445-cmd:socat - TCP:127.0.0.1:{smb3.port}",
               f"guestfwd=tcp:10.0.2.101:445-cmd:socat - TCP:127.0.0.1:{smb1.port}"]
        net = ["-netdev", f"user,id=n0,restrict=on,{','.join(fwd)}", "-device", "virtio-net-pci,netdev=n0"]
        vm = VM("smb-auth", kernel_args("imprint.action=shell imprint.console=200x50") + ["-net", "none"] + net)
        try:
            vm.wait_for(r"starting a shell", 60)
            time.sleep(1)
            vm.send("ip link set eth0 up; ip addr add 10.0.2.15/24 dev eth0\n")
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


TESTS = [test_cli_restores_from_smb_location, test_cli_restores_from_nfs_export,
         test_cli_smb_password_wrong_right_and_smb1_only]
