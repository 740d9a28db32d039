"""HTTP store (issue 8): an unattended restore reads a store served by nginx on the host's
loopback. The guest reaches it only through a QEMU guestfwd (restrict=on): 10.0.2.100:80 in
the guest is `socat - TCP:127.0.0.1:PORT` on the host, so all traffic stays on 127.0.0.1
(shared/notes/boot-environment.md section 3). The source is 96 MiB of random bytes with no
partition table (captured whole, nothing compresses), so the restore's rate is the HTTP
path's. The host checks the restored disk byte for byte, with `imprint verify --against`,
and that nginx answered range requests (206).
"""

import filecmp
import os
import shutil
import socket
import subprocess
import time

from harness import DIST, OUT, VM, Skip, check, disk_args, kernel_args
from tests_capture import job_boot, sh

MIB = 1 << 20
SOURCE_SIZE = 96 * MIB


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Nginx:
    """nginx in the foreground with its config, pid file and logs in `work`."""

    def __init__(self, work, www, limit_rate=None):
        self.work, self.port = work, free_port()
        limit = f" limit_rate {limit_rate};" if limit_rate else ""
        (work / "nginx.conf").write_text(
            "daemon off;\nmaster_process off;\nworker_processes 1;\n"
            f"pid {work}/nginx.pid;\nerror_log {work}/error.log;\n"
            "events { worker_connections 256; }\n"
            f"http {{\n access_log {work}/access.log;\n client_body_temp_path {work}/body;\n"
            f" proxy_temp_path {work}/proxy;\n fastcgi_temp_path {work}/fastcgi;\n"
            f" uwsgi_temp_path {work}/uwsgi;\n scgi_temp_path {work}/scgi;\n"
            f" server {{ listen 127.0.0.1:{self.port}; root {www};{limit} }}\n}}\n")
        self.proc = subprocess.Popen(["nginx", "-c", str(work / "nginx.conf"), "-p", str(work)],
                                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        for _ in range(200):
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                time.sleep(0.025)
        self.stop()
        raise AssertionError(f"nginx did not start: {(work / 'error.log').read_text()[-300:]}")

    def stop(self):
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()

    def access_log(self):
        p = self.work / "access.log"
        return p.read_text() if p.exists() else ""


def test_restore_from_http_store(ctx):
    """Restore over HTTP (nginx on 127.0.0.1, guestfwd + socat, restrict=on), verified on
    the host; the guest got its address by DHCP because the store is a URL."""
    if not ctx.cli_ready():
        raise Skip("target/release/imprint has no restore with --json yet")
    for tool in ("nginx", "socat"):
        if not shutil.which(tool) and not shutil.which(f"/usr/sbin/{tool}"):
            raise Skip(f"{tool} is not installed")
    work = OUT / "http-store"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    www = work / "www"
    www.mkdir()
    source = work / "source.img"
    with open(source, "wb") as f:
        for _ in range(SOURCE_SIZE // MIB):
            f.write(os.urandom(MIB))
    exe = str(DIST.parent / "target" / "release" / "imprint")
    sh(exe, "capture", str(source), str(www / "store"), "--name", "golden", "--json")
    target = work / "target.img"
    with open(target, "wb") as f:
        f.truncate(source.stat().st_size)
    nginx = Nginx(work, www)
    try:
        fwd = f"guestfwd=tcp:10.0.2.100:80-cmd:socat - TCP:127.0.0.1:{nginx.port}"
        net = ["-netdev", f"user,id=n0,restrict=on,{fwd}", "-device", "virtio-net-pci,netdev=n0"]
        job, wall, _ = job_boot(
            "http-restore", "imprint.action=restore imprint.store=http://10.0.2.100/store/ "
            "imprint.image=golden imprint.disk=serial:TARGET",
            net + disk_args(target, "virtio", "TARGET", "dst"))
        log = nginx.access_log()
    finally:
        nginx.stop()
    check(job["ok"] is True, f"restore from HTTP failed: {job}")
    check(job["store"] == "http://10.0.2.100/store/", f"store reported as {job['store']!r}")
    ranged = sum(1 for line in log.splitlines() if '.pack HTTP/1.1" 206 ' in line)
    check(ranged > 0, f"no range reads of packs in nginx's log: {log[-500:]}")
    r = subprocess.run([exe, "verify", str(www / "store"), "golden", "--against", str(target), "--json"],
                       capture_output=True, text=True)
    check(r.returncode == 0, f"host verify --against the restored disk: exit {r.returncode}: {r.stdout[-300:]}")
    check(filecmp.cmp(source, target, shallow=False), "the restored disk differs from the source")
    result = job.get("result") or {}
    read = result.get("read_bytes", 0)
    secs = result.get("elapsed_seconds") or 0
    rate = f", {read / MIB / secs:.1f} MiB/s" if secs else ""
    ctx.note(f"restore over HTTP boot {wall:.1f} s; {read / MIB:.1f} MiB read from the store in "
             f"{secs:.1f} s{rate}; {ranged} range reads; byte-identical, host verify --against ok")


def test_nginx_stopped_mid_restore_then_rerun_resumes(ctx):
    """nginx (rate-limited so the restore lasts) is killed once the guest has fetched a few
    chunks: the job fails after its retries with the first MiB zeroed (unbootable); a second
    boot with nginx back resumes the same restore (delta) and the disk ends byte-identical."""
    if not ctx.cli_ready():
        raise Skip("target/release/imprint has no restore with --json yet")
    for tool in ("nginx", "socat"):
        if not shutil.which(tool) and not shutil.which(f"/usr/sbin/{tool}"):
            raise Skip(f"{tool} is not installed")
    work = OUT / "http-fault-store"
    shutil.rmtree(work, ignore_errors=True)
    www = work / "www"
    www.mkdir(parents=True)
    source = work / "source.img"
    with open(source, "wb") as f:
        for _ in range(48):
            f.write(os.urandom(MIB))
    exe = str(DIST.parent / "target" / "release" / "imprint")
    sh(exe, "capture", str(source), str(www / "store"), "--name", "golden", "--json")
    target = work / "target.img"
    with open(target, "wb") as f:
        f.truncate(source.stat().st_size)
    cmdline = ("imprint.action=restore imprint.store=http://10.0.2.100/store/ imprint.image=golden "
               "imprint.disk=serial:TARGET imprint.then=poweroff imprint.onerror=poweroff")

    def boot(name, nginx):
        fwd = f"guestfwd=tcp:10.0.2.100:80-cmd:socat - TCP:127.0.0.1:{nginx.port}"
        return VM(name, kernel_args(cmdline) + ["-net", "none", "-netdev", f"user,id=n0,restrict=on,{fwd}",
                                                "-device", "virtio-net-pci,netdev=n0"]
                  + disk_args(target, "virtio", "TARGET", "dst"))

    nginx = Nginx(work, www, limit_rate="2m")
    vm = boot("http-fault-1", nginx)
    try:
        t0 = time.monotonic()
        while log_206(nginx) < 8:
            check(time.monotonic() - t0 < 120, "the guest never fetched chunks")
            time.sleep(0.1)
        nginx.stop()
        vm.wait_for("imprint: powering off", 120)
        vm.wait_exit(30)
        vm.assert_no_panic()
        jobs = vm.json_lines("imprint-job")
    finally:
        vm.stop()
        nginx.stop()
    check(len(jobs) == 1 and jobs[0]["ok"] is False, f"restore without a server: {jobs}")
    with open(target, "rb") as f:
        check(f.read(MIB) == bytes(MIB), "the first MiB is not zeroed after the failed restore")
    first_error = jobs[0].get("error", "")

    (work / "again").mkdir()
    nginx = Nginx(work / "again", www)
    vm = boot("http-fault-2", nginx)
    try:
        vm.wait_for("imprint: powering off", 180)
        vm.wait_exit(30)
        vm.assert_no_panic()
        jobs = vm.json_lines("imprint-job")
    finally:
        vm.stop()
        nginx.stop()
    check(len(jobs) == 1 and jobs[0]["ok"] is True, f"rerun: {jobs}")
    res = jobs[0].get("result") or {}
    check(res.get("delta") is True, f"the rerun did not resume (delta): {res}")
    check(filecmp.cmp(source, target, shallow=False), "the disk differs from the source after the rerun")
    ctx.note(f"stopped nginx after 8 chunks: failed with {first_error[:160]!r}, first MiB zero; rerun: "
             f"{res.get('unchanged_chunks')} chunks unchanged, {res.get('written_chunks')} written, byte-identical")


def log_206(nginx):
    return sum(1 for line in nginx.access_log().splitlines() if '.pack HTTP/1.1" 206 ' in line)


TESTS = [test_restore_from_http_store, test_nginx_stopped_mid_restore_then_rerun_resumes]
