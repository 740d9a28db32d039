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

from pathlib import Path

from harness import DIST, OUT, VM, Skip, blank_disk, check, disk_args, kernel_args
from tests_capture import job_boot, sh

MIB = 1 << 20
SOURCE_SIZE = 96 * MIB


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """A server run by a test on the host's 127.0.0.1 (`self.port`), killed by stop()."""

    def start(self, cmd, what, stdout=subprocess.DEVNULL):
        """Starts `cmd` and waits (10 s at most) until the port accepts connections; else
        stops it and fails with `what()`."""
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=stdout, stderr=subprocess.STDOUT)
        for _ in range(200):
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise AssertionError(what())

    def stop(self):
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()


def need_tools(*tools):
    for tool in tools:
        if not shutil.which(tool) and not os.path.exists(f"/usr/sbin/{tool}"):
            raise Skip(f"{tool} is not installed")


def random_store(work, mib, store="www/store"):
    """`mib` MiB of random bytes in WORK/source.img (WORK emptied first), captured by the
    host CLI as image `golden` into WORK/`store`. Returns (source, store directory)."""
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    source = work / "source.img"
    with open(source, "wb") as f:
        for _ in range(mib):
            f.write(os.urandom(MIB))
    exe = str(DIST.parent / "target" / "release" / "imprint")
    sh(exe, "capture", str(source), str(work / store), "--name", "golden", "--json")
    return source, work / store


def guestfwd_net(guest, port, extra=""):
    """One virtio NIC on a QEMU user network (restrict=on) where GUEST ("ADDR:PORT") is
    forwarded to 127.0.0.1:PORT on the host by socat (notes §3)."""
    return ["-netdev", f"user,id=n0,restrict=on,guestfwd=tcp:{guest}-cmd:socat - TCP:127.0.0.1:{port}{extra}",
            "-device", "virtio-net-pci,netdev=n0"]


class Nginx(Server):
    """nginx in the foreground with its config, pid file and logs in `work`."""

    def __init__(self, work, www, limit_rate=None, tls=None):
        """`tls` = (certificate chain file, key file): HTTPS instead of HTTP."""
        self.work, self.port = work, free_port()
        limit = f" limit_rate {limit_rate};" if limit_rate else ""
        if tls:
            limit += f" ssl_certificate {tls[0]}; ssl_certificate_key {tls[1]};"
        (work / "nginx.conf").write_text(
            "daemon off;\nmaster_process off;\nworker_processes 1;\n"
            f"pid {work}/nginx.pid;\nerror_log {work}/error.log;\n"
            "events { worker_connections 256; }\n"
            f"http {{\n access_log {work}/access.log;\n client_body_temp_path {work}/body;\n"
            f" proxy_temp_path {work}/proxy;\n fastcgi_temp_path {work}/fastcgi;\n"
            f" uwsgi_temp_path {work}/uwsgi;\n scgi_temp_path {work}/scgi;\n"
            f" server {{ listen 127.0.0.1:{self.port}{' ssl' if tls else ''}; root {www};{limit} }}\n}}\n")
        self.start(["nginx", "-c", str(work / "nginx.conf"), "-p", str(work)],
                   lambda: f"nginx did not start: {(work / 'error.log').read_text()[-300:]}")

    def access_log(self):
        p = self.work / "access.log"
        return p.read_text() if p.exists() else ""


def test_restore_from_http_store(ctx):
    """Restore over HTTP (nginx on 127.0.0.1, guestfwd + socat, restrict=on), verified on
    the host; the guest got its address by DHCP because the store is a URL."""
    if not ctx.cli_ready():
        raise Skip("target/release/imprint has no restore with --json yet")
    need_tools("nginx", "socat")
    work = OUT / "http-store"
    source, store = random_store(work, SOURCE_SIZE // MIB)
    www = store.parent
    exe = str(DIST.parent / "target" / "release" / "imprint")
    target = work / "target.img"
    with open(target, "wb") as f:
        f.truncate(source.stat().st_size)
    nginx = Nginx(work, www)
    try:
        net = guestfwd_net("10.0.2.100:80", nginx.port)
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
    need_tools("nginx", "socat")
    work = OUT / "http-fault-store"
    source, store = random_store(work, 48)
    www = store.parent
    target = work / "target.img"
    with open(target, "wb") as f:
        f.truncate(source.stat().st_size)
    cmdline = ("imprint.action=restore imprint.store=http://10.0.2.100/store/ imprint.image=golden "
               "imprint.disk=serial:TARGET imprint.then=poweroff imprint.onerror=poweroff")

    def boot(name, nginx):
        return VM(name, kernel_args(cmdline) + ["-net", "none"] + guestfwd_net("10.0.2.100:80", nginx.port)
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


def test_ca_certificates_in_the_initramfs(ctx):
    """The initramfs carries Debian's CA bundle where rustls-native-certs looks for it."""
    listing = subprocess.run(f"lz4 -dc {DIST / 'initrd.img'} | cpio -i --to-stdout "
                             "etc/ssl/certs/ca-certificates.crt 2>/dev/null",
                             shell=True, capture_output=True).stdout.decode("ascii", "replace")
    n = listing.count("-----BEGIN CERTIFICATE-----")
    check(n > 100, f"etc/ssl/certs/ca-certificates.crt in dist/initrd.img has {n} certificates")
    ctx.note(f"{n} CA certificates in /etc/ssl/certs/ca-certificates.crt")


def make_test_ca(work):
    """A self-signed test CA and a server certificate it signed for IP 10.0.2.100 (the
    guestfwd address). Returns (ca.pem, server chain, server key)."""
    ca_key, ca, key, csr, crt = (work / n for n in ("ca.key", "ca.pem", "server.key", "server.csr", "server.pem"))
    sh("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(ca_key), "-out", str(ca),
       "-days", "2", "-subj", "/CN=Imprint test CA", "-addext", "basicConstraints=critical,CA:TRUE",
       "-addext", "keyUsage=critical,keyCertSign,cRLSign")
    sh("openssl", "req", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(csr),
       "-subj", "/CN=10.0.2.100")
    ext = work / "server.ext"
    ext.write_text("subjectAltName=IP:10.0.2.100\nbasicConstraints=CA:FALSE\n"
                   "keyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n")
    sh("openssl", "x509", "-req", "-in", str(csr), "-CA", str(ca), "-CAkey", str(ca_key), "-CAcreateserial",
       "-out", str(crt), "-days", "2", "-extfile", str(ext))
    return ca, crt, key


def imprint_partition(path, files):
    """A FAT disk labelled IMPRINT (no partition table) holding `files` {"/imprint/x": bytes},
    made with mtools (the host cannot mount FAT)."""
    if path.exists():
        path.unlink()
    sh("mkfs.vfat", "-n", "IMPRINT", "-C", str(path), str(16 * 1024))
    env = dict(os.environ, MTOOLS_SKIP_CHECK="1")
    dirs = sorted({str(Path(name).parent) for name in files} - {"/"})
    for d in dirs:
        sh("mmd", "-D", "s", "-i", str(path), f"::{d}", env=env)
    for name, data in files.items():
        tmp = path.with_suffix(".file")
        tmp.write_bytes(data)
        sh("mcopy", "-o", "-i", str(path), str(tmp), f"::{name}", env=env)
        tmp.unlink()
    return path


def test_https_store_with_ca_from_imprint_partition(ctx):
    """Restore from https:// (nginx with a certificate from a test CA made here with openssl)
    with a static address (imprint.net=): refused without the CA, then trusted through
    imprint.store.ca= naming a file on the IMPRINT partition; byte-identical."""
    if not ctx.cli_ready():
        raise Skip("target/release/imprint has no restore with --json yet")
    need_tools("nginx", "socat", "openssl", "mkfs.vfat", "mcopy")
    work = OUT / "https-store"
    source, store = random_store(work, 16)
    www = store.parent
    ca, crt, key = make_test_ca(work)
    files = imprint_partition(work / "imprint-files.img", {"/imprint/lab-ca.pem": ca.read_bytes()})
    target = work / "target.img"
    nginx = Nginx(work, www, tls=(crt, key))
    base = ("imprint.action=restore imprint.store=https://10.0.2.100/store/ imprint.image=golden "
            "imprint.disk=serial:TARGET imprint.net=eth0:10.0.2.20/24")
    try:
        net = guestfwd_net("10.0.2.100:443", nginx.port)
        disks = disk_args(files, "virtio", "IMPRINT-FILES", "fl")
        blank_disk(target, source.stat().st_size)
        refused, _, _ = job_boot("https-no-ca", base, net + disks + disk_args(target, "virtio", "TARGET", "dst"))
        job, wall, vm = job_boot("https-ca", base + " imprint.store.ca=/imprint/lab-ca.pem",
                                 net + disks + disk_args(target, "virtio", "TARGET", "dst"))
        log = nginx.access_log()
    finally:
        nginx.stop()
    check(refused["ok"] is False and "certificate" in (refused.get("error") or "").lower(),
          f"without the CA the restore was not refused for the certificate: {refused}")
    check(job["ok"] is True, f"restore from HTTPS with the CA failed: {job}")
    text = vm.text()
    check("eth0 has 10.0.2.20/24 (static)" in text, "no static address line in the log")
    check("DHCP" not in text.split("imprint-job")[0], "DHCP ran although imprint.net= set a static address")
    check("trusting the CA certificate IMPRINT:/imprint/lab-ca.pem" in text, "the CA file was not announced")
    ranged = sum(1 for line in log.splitlines() if '.pack HTTP/1.1" 206 ' in line)
    check(ranged > 0, f"no range reads of packs in nginx's log: {log[-500:]}")
    check(filecmp.cmp(source, target, shallow=False), "the restored disk differs from the source")
    ctx.note(f"without the CA: {refused.get('error', '')[:120]!r}; with imprint.store.ca=: restored "
             f"16 MiB over HTTPS (static 10.0.2.20/24), boot {wall:.1f} s, {ranged} range reads, byte-identical")


TESTS = [test_restore_from_http_store, test_nginx_stopped_mid_restore_then_rerun_resumes,
         test_ca_certificates_in_the_initramfs, test_https_store_with_ca_from_imprint_partition]
