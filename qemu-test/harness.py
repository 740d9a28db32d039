#!/usr/bin/env python3
"""QEMU boot tests for the Imprint boot environment (dist/ from ./mkimage.sh).

Every VM runs under TCG (KVM does not work on these machines) with its serial console on a
socket chardev that also logs to qemu-test/out/NAME/serial.log, and its HMP monitor on a
socket. Tests read the log, type into the serial console, and check results on the host.
Run through qemu-test/run.sh; `-k PATTERN` selects tests by name.
"""

import argparse
import json
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

# tests_capture imports `harness`; make that this very module (not a second copy with its
# own TestFailure class) when run as a script.
sys.modules.setdefault("harness", sys.modules[__name__])

TOP = Path(__file__).resolve().parent.parent
DIST = TOP / "dist"
OUT = TOP / "qemu-test" / "out"
OVMF_CODE = Path("/usr/share/OVMF/OVMF_CODE_4M.fd")
OVMF_VARS = Path("/usr/share/OVMF/OVMF_VARS_4M.fd")
OVMF_CODE_SB = Path("/usr/share/OVMF/OVMF_CODE_4M.secboot.fd")
OVMF_VARS_MS = Path("/usr/share/OVMF/OVMF_VARS_4M.ms.fd")
# panic=1 + -no-reboot: a crashed PID 1 ends QEMU in about a second instead of hanging.
BASE_CMDLINE = "console=tty1 console=ttyS0 quiet cryptomgr.notests panic=1"
READY = re.compile(r"imprint: ready in ([0-9.]+) s")


class TestFailure(Exception):
    pass


def check(cond, msg):
    if not cond:
        raise TestFailure(msg)


class VM:
    """One QEMU process with a logged serial console and a monitor socket."""

    def __init__(self, name, args, firmware="seabios", machine="q35", mem=1024):
        self.name = name
        self.dir = OUT / name
        shutil.rmtree(self.dir, ignore_errors=True)
        self.dir.mkdir(parents=True)
        self.log = self.dir / "serial.log"
        self.serial_sock = self.dir / "serial.sock"
        self.mon_sock = self.dir / "monitor.sock"
        cmd = ["qemu-system-x86_64", "-accel", "tcg", "-m", str(mem), "-smp", "1",
               "-no-reboot", "-display", "none", "-vga", "std",
               # wait=on: QEMU starts the guest only once our reader is connected, so the
               # log (written by the reader, not by QEMU's logfile=, which duplicates bytes
               # when the socket is momentarily full) misses nothing.
               "-chardev", f"socket,id=s0,path={self.serial_sock},server=on,wait=on",
               "-serial", "chardev:s0",
               "-monitor", f"unix:{self.mon_sock},server=on,wait=off"]
        if firmware == "seabios":
            cmd += ["-machine", machine]
        else:
            code, vars_src = (OVMF_CODE_SB, OVMF_VARS_MS) if firmware == "ovmf-sb" else (OVMF_CODE, OVMF_VARS)
            vars_copy = self.dir / "OVMF_VARS.fd"
            shutil.copy(vars_src, vars_copy)
            cmd += ["-machine", "q35,smm=on" if firmware == "ovmf-sb" else "q35"]
            if firmware == "ovmf-sb":
                cmd += ["-global", "driver=cfi.pflash01,property=secure,value=on"]
            cmd += ["-drive", f"if=pflash,format=raw,unit=0,readonly=on,file={code}",
                    "-drive", f"if=pflash,format=raw,unit=1,file={vars_copy}"]
        cmd += args
        (self.dir / "cmd").write_text(" ".join(cmd) + "\n")
        self.started = time.monotonic()
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL,
                                     stdout=open(self.dir / "qemu.out", "w"), stderr=subprocess.STDOUT)
        self._serial = None
        self._connect_serial()

    def _connect_serial(self):
        """Connects to the serial socket and copies it to serial.log in a thread: QEMU
        writes the console byte by byte, and an unread unix socket fills after ~250 bytes
        (each byte is one skb), stalling the guest's UART."""
        deadline = time.monotonic() + 10
        while True:
            try:
                s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                s.connect(str(self.serial_sock))
                break
            except OSError:
                s.close()
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    return
                time.sleep(0.02)
        self._serial = s

        log = open(self.log, "ab", buffering=0)

        def drain():
            try:
                while True:
                    data = s.recv(65536)
                    if not data:
                        break
                    log.write(data)
            except OSError:
                pass
            finally:
                log.close()

        threading.Thread(target=drain, daemon=True).start()

    def text(self):
        try:
            return self.log.read_bytes().decode("utf-8", "replace")
        except FileNotFoundError:
            return ""

    def wait_for(self, pattern, timeout):
        """Waits for a regex in the serial log; returns the match."""
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            m = rx.search(self.text())
            if m:
                return m
            if self.proc.poll() is not None:
                m = rx.search(self.text())
                if m:
                    return m
                raise TestFailure(f"{self.name}: QEMU exited ({self.proc.returncode}) before /{pattern}/; "
                                  f"tail: {self.tail()}")
            time.sleep(0.1)
        raise TestFailure(f"{self.name}: no /{pattern}/ within {timeout} s; tail: {self.tail()}")

    def tail(self, n=6):
        lines = [l for l in self.text().splitlines() if l.strip()]
        return " | ".join(lines[-n:])

    def send(self, data):
        """Types into the serial console."""
        check(self._serial is not None, f"{self.name}: serial console socket not connected")
        self._serial.sendall(data.encode())

    def monitor(self, command):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(5)
        # Right after start QEMU may not have made the monitor's socket yet (it sets up
        # the serial socket first): retry for a few seconds rather than fail the test.
        deadline = time.monotonic() + 10
        while True:
            try:
                s.connect(str(self.mon_sock))
                break
            except (FileNotFoundError, ConnectionRefusedError):
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    raise
                time.sleep(0.1)
        s.sendall((command + "\n").encode())
        time.sleep(0.3)
        try:
            s.recv(65536)
        except (socket.timeout, OSError):
            pass
        s.close()

    def wait_exit(self, timeout):
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise TestFailure(f"{self.name}: QEMU still running after {timeout} s; tail: {self.tail()}")
        return time.monotonic() - self.started

    def stop(self):
        if self.proc.poll() is None:
            try:
                self.monitor("quit")
                self.proc.wait(5)
            except Exception:
                self.proc.kill()
                self.proc.wait()
        if self._serial:
            self._serial.close()

    def elapsed(self):
        return time.monotonic() - self.started

    def json_lines(self, type_=None):
        out = []
        for line in self.text().splitlines():
            line = line.strip()
            i = line.find('{"type"')
            if i < 0:
                continue
            try:
                v = json.loads(line[i:])
            except ValueError:
                continue
            if type_ is None or v.get("type") == type_:
                out.append(v)
        return out

    def assert_no_panic(self):
        t = self.text()
        check("Kernel panic" not in t, f"{self.name}: kernel panic: {self.tail()}")
        check("internal error" not in t, f"{self.name}: init reported an internal error: {self.tail()}")


def kernel_args(cmdline):
    return ["-kernel", str(DIST / "vmlinuz"), "-initrd", str(DIST / "initrd.img"),
            "-append", f"{BASE_CMDLINE} {cmdline}".strip()]


def blank_disk(path, size):
    path = Path(path)
    if path.exists():
        path.unlink()
    with open(path, "wb") as f:
        f.truncate(size)
    return path


def disk_args(path, kind, serial, id_, snapshot=False, extra=""):
    """-drive/-device arguments for a raw disk on virtio, ahci, nvme or usb."""
    snap = ",snapshot=on" if snapshot else ""
    a = ["-drive", f"if=none,id={id_},file={path},format=raw{snap}"]
    if kind == "virtio":
        a += ["-device", f"virtio-blk-pci,drive={id_},serial={serial}{extra}"]
    elif kind == "ahci":  # q35 has an AHCI controller built in (bus ide.N)
        a += ["-device", f"ide-hd,bus=ide.{extra or 0},drive={id_},serial={serial}"]
    elif kind == "nvme":
        a += ["-device", f"nvme,drive={id_},serial={serial}"]
    elif kind == "usb":
        a += ["-device", f"usb-storage,bus=xhci.0,drive={id_},serial={serial}{extra}"]
    return a


USB_HOST = ["-device", "qemu-xhci,id=xhci"]


# --- tests -------------------------------------------------------------------------------

def test_direct_boot_ready(ctx):
    """(a) -kernel/-initrd with disks on virtio, AHCI, NVMe and USB: ready < 15 s, all
    four disks listed; the text UI on the serial console powers the machine off."""
    d = OUT / "disks"
    d.mkdir(parents=True, exist_ok=True)
    args = kernel_args("imprint.console=100x30") + ["-net", "none"] + USB_HOST
    args += disk_args(blank_disk(d / "v.img", 64 << 20), "virtio", "VD-SER-1", "d0")
    args += disk_args(blank_disk(d / "s.img", 96 << 20), "ahci", "SATA-SER-2", "d1")
    args += disk_args(blank_disk(d / "n.img", 128 << 20), "nvme", "NVME-SER-3", "d2")
    args += disk_args(blank_disk(d / "u.img", 160 << 20), "usb", "USB-SER-4", "d3")
    vm = VM("direct-boot", args)
    try:
        m = vm.wait_for(READY.pattern, 30)
        wall = vm.elapsed()
        ctx.note(f"wall to 'imprint: ready' {wall:.1f} s (init's own count {m.group(1)} s)")
        text = vm.text()
        # sda/sdb order depends on which driver probes first; match bus and serial.
        for bus, serial in [("virtio", "VD-SER-1"), ("ata", "SATA-SER-2"), ("nvme", "NVME-SER-3"), ("usb", "USB-SER-4")]:
            check(re.search(rf"/dev/\w+\s+[0-9.]+ MiB\s+{bus}\s.*serial \S*{serial}", text),
                  f"{bus} disk {serial} not listed")
        check("4 disks" in text, "ready line does not count 4 disks")
        check(wall < 15, f"ready after {wall:.1f} s (limit 15 s)")
        # The text UI (imprint tui) on the serial console: home, Tools > Rescue shell.
        vm.wait_for(r"Imprint [0-9.]+  \|  Home[\s\S]*/dev/nvme0n1", 30)
        vm.send("t")
        vm.wait_for(r"Rescue", 10)  # Tools (ratatui skips unchanged cells: match words)
        vm.send("\r")
        vm.wait_for(r"Imprint rescue shell", 10)
        time.sleep(1)
        # The shell owns the serial console and sees the size from imprint.console=.
        vm.send("stty size; echo shell-$((6*7))\n")
        m = vm.wait_for(r"(\d+) (\d+)\s+shell-42", 10)
        check((m.group(1), m.group(2)) == ("30", "100"), f"serial window size {m.group(1)}x{m.group(2)} rows x cols, want 30x100")
        # The coldplug replays one subsystem event (module/block): 60-block.rules must
        # still have turned on media-change polling (card readers, optical drives).
        vm.send("echo poll-$(cat /sys/module/block/parameters/events_dfl_poll_msecs)\n")
        m = vm.wait_for(r"\npoll-(\d*)", 10)
        check(m.group(1) == "2000", f"block events_dfl_poll_msecs is {m.group(1)!r}, want 2000 (60-block.rules)")
        vm.send("exit\n")
        vm.wait_for(r"shell-42[\s\S]*Power", 10)
        for key in ["\x1b[B"] * 4 + ["\r"]:  # Tools > Power off
            vm.send(key)
            time.sleep(0.2)
        vm.wait_for(r"shell-42[\s\S]*Power[\s\S]*yes", 10)
        vm.send("y")
        vm.wait_for("imprint: powering off", 10)
        vm.wait_exit(15)
        vm.assert_no_panic()
    finally:
        vm.stop()


def usb_boot(ctx, name, firmware):
    machine = "pc" if firmware == "seabios" else "q35"
    args = ["-net", "none"] + USB_HOST
    args += ["-drive", f"if=none,id=boot,file={DIST / 'imprint-usb.img'},format=raw,snapshot=on",
             "-device", "usb-storage,bus=xhci.0,drive=boot,bootindex=0,serial=IMPRINT-STICK"]
    vm = VM(name, args, firmware=firmware, machine=machine)
    try:
        vm.wait_for(READY.pattern, 90)
        ctx.note(f"wall to ready {vm.elapsed():.1f} s")
        text = vm.text()
        want = {"seabios": "firmware BIOS", "ovmf": "firmware UEFI", "ovmf-sb": "firmware UEFI, Secure Boot on"}[firmware]
        check(want in text, f"start-up line does not say {want!r}")
        check(re.search(r"sda2\s.*exfat\s+IMPRINT", text), "store partition (exfat IMPRINT) not listed")
        vm.assert_no_panic()
    finally:
        vm.stop()


def test_usb_seabios(ctx):
    """(b) the USB image boots to ready under SeaBIOS (syslinux)."""
    usb_boot(ctx, "usb-seabios", "seabios")


def test_usb_ovmf(ctx):
    """(b) the USB image boots to ready under OVMF (shim + GRUB)."""
    usb_boot(ctx, "usb-ovmf", "ovmf")


def test_usb_ovmf_secure_boot(ctx):
    """(b) the USB image boots to ready under OVMF with Secure Boot enforced."""
    usb_boot(ctx, "usb-ovmf-secboot", "ovmf-sb")


def test_pxe_tftp(ctx):
    """(c) PXE: iPXE ROM + QEMU's TFTP server + dist/pxe/boot.ipxe reach ready."""
    args = ["-netdev", f"user,id=n0,restrict=on,tftp={DIST / 'pxe'},bootfile=boot.ipxe",
            "-device", "virtio-net-pci,netdev=n0,bootindex=0"]
    vm = VM("pxe-tftp", args, machine="pc")
    try:
        vm.wait_for(READY.pattern, 90)
        ctx.note(f"wall to ready {vm.elapsed():.1f} s")
        vm.assert_no_panic()
    finally:
        vm.stop()


def bad_cmdline(ctx, name, cmdline, expect, extra=None):
    args = kernel_args(cmdline + " imprint.onerror=poweroff") + ["-net", "none"] + (extra or [])
    vm = VM(name, args)
    try:
        vm.wait_for("imprint: powering off", 60)
        vm.wait_exit(20)
        vm.assert_no_panic()
        jobs = vm.json_lines("imprint-job")
        check(len(jobs) == 1, f"expected one imprint-job line, got {len(jobs)}")
        j = jobs[0]
        check(j["ok"] is False and j["exit_code"] != 0, f"job not reported as failed: {j}")
        check(j["error"] and re.search(expect, j["error"]), f"error {j['error']!r} does not match /{expect}/")
        check(re.search(expect, vm.text().split('{"type":"imprint-job"')[0]),
              "the error is not printed as a clear message before the JSON line")
        ctx.note(f"error: {j['error']}")
    finally:
        vm.stop()


def test_bad_action(ctx):
    """(d) an unknown action ends with a message and a JSON error, no panic."""
    bad_cmdline(ctx, "bad-action", "imprint.action=destroy", r"unknown action")


def test_bad_selector(ctx):
    """(d) a disk selector matching nothing ends with a message listing the disks."""
    d = OUT / "disks"
    d.mkdir(parents=True, exist_ok=True)
    extra = disk_args(blank_disk(d / "bad-sel.img", 32 << 20), "virtio", "ONLY-DISK", "d0")
    extra += USB_HOST + ["-drive", f"if=none,id=st,file={DIST / 'imprint-usb.img'},format=raw,snapshot=on",
                         "-device", "usb-storage,bus=xhci.0,drive=st,serial=STICK"]
    bad_cmdline(ctx, "bad-selector",
                "imprint.action=restore imprint.image=lab imprint.disk=serial:NO-SUCH-DISK imprint.wait=3",
                r"(?s)no disk matches.*ONLY-DISK", extra)


def test_missing_store(ctx):
    """(d) a store that is not there ends with a clear error after the wait."""
    bad_cmdline(ctx, "missing-store",
                "imprint.action=verify imprint.image=lab imprint.store=label:NOSTORE imprint.wait=2",
                r"imprint.store=label:NOSTORE: no such filesystem|imprint is missing")


def test_empty_store(ctx):
    """(d) restoring from a stick whose store holds no image yet fails cleanly."""
    if not ctx.cli_ready():
        raise Skip("the imprint CLI has no working restore yet")
    d = OUT / "disks"
    d.mkdir(parents=True, exist_ok=True)
    extra = disk_args(blank_disk(d / "missing-image.img", 32 << 20), "virtio", "TARGET", "d0")
    extra += USB_HOST + ["-drive", f"if=none,id=st,file={DIST / 'imprint-usb.img'},format=raw,snapshot=on",
                         "-device", "usb-storage,bus=xhci.0,drive=st,serial=STICK"]
    bad_cmdline(ctx, "empty-store",
                "imprint.action=restore imprint.image=no-such-image imprint.disk=serial:TARGET",
                r"not an Imprint store|no image", extra)


class Skip(Exception):
    pass


class Context:
    def __init__(self):
        self.notes = []
        self._cli = None

    def note(self, msg):
        self.notes.append(msg)

    def cli_ready(self):
        """Whether the CLI's capture and restore exist (checked on the host build)."""
        if self._cli is None:
            exe = TOP / "target" / "release" / "imprint"
            ok = exe.exists()
            for sub in ("capture", "restore"):
                if ok:
                    r = subprocess.run([str(exe), sub, "--help"], capture_output=True, text=True)
                    ok = r.returncode == 0 and "--json" in r.stdout
            self._cli = ok
        return self._cli


TESTS = [test_direct_boot_ready, test_usb_seabios, test_usb_ovmf, test_usb_ovmf_secure_boot,
         test_pxe_tftp, test_bad_action, test_bad_selector, test_missing_store, test_empty_store]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-k", default="", help="run only tests whose name contains this")
    opts = ap.parse_args()
    for f in ("vmlinuz", "initrd.img", "imprint-usb.img", "pxe/boot.ipxe"):
        if not (DIST / f).exists():
            print(f"qemu-test: dist/{f} is missing; run ./mkimage.sh first", file=sys.stderr)
            print("qemu-test: 0 passed, 1 failed")
            return 1
    OUT.mkdir(parents=True, exist_ok=True)
    passed = failed = 0
    t0 = time.monotonic()
    # Every qemu-test/tests_*.py module adds its TESTS list, in file-name order.
    import importlib
    tests = list(TESTS)
    for mod in sorted(Path(__file__).parent.glob("tests_*.py")):
        tests += importlib.import_module(mod.stem).TESTS
    for t in tests:
        name = t.__name__[len("test_"):]
        if opts.k not in name:
            continue
        ctx = Context()
        start = time.monotonic()
        try:
            t(ctx)
            passed += 1
            status = "PASS"
        except Skip as e:
            status = f"SKIP ({e})"
        except TestFailure as e:
            failed += 1
            status = f"FAIL: {e}"
        except Exception as e:  # a harness bug is a failure too, never a crash
            failed += 1
            status = f"FAIL (harness): {type(e).__name__}: {e}"
        notes = "; ".join(ctx.notes)
        print(f"{status.split(':')[0]:4} {name} ({time.monotonic() - start:.1f} s)"
              + (f" - {notes}" if notes else "")
              + (f"\n     {status}" if status.startswith(("FAIL", "SKIP")) else ""), flush=True)
    print(f"qemu-test: total wall {time.monotonic() - t0:.0f} s; logs in qemu-test/out/", flush=True)
    print(f"qemu-test: {passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
