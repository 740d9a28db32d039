"""(f) The text UI end to end, keyboard only: power on, capture, restore, power off.

One boot (direct kernel) with a small real system on an AHCI disk, the USB stick image
(its exFAT IMPRINT partition is the store) and a blank NVMe disk. imprint-init runs
`imprint tui` on tty1 and on the serial console. The test types into the serial console
only: capture the AHCI disk into the store, restore it onto the NVMe disk with the typed
confirmation (a wrong word first), then power off from Tools. The screen is read by
replaying the serial output (ANSI) into an 80x25 grid, so assertions are on the text a
technician sees. tty1's TUI is driven with HMP `sendkey` for the VGA screenshots (home,
restore confirmation, progress); a rescue shell opened from the serial TUI reads
/dev/vcs1 to be sure what each screenshot shows and freezes tty1's TUI (SIGSTOP) on its
progress screen. The host then checks the NVMe disk: sgdisk -v, e2fsck -fn, fsck.vfat -n
and file checksums, as tests_capture does.

UPDATE_SCREENSHOTS=1 also copies the PNGs to docs/screenshots/.
"""

import codecs
import hashlib
import os
import re
import shutil
import time

from harness import DIST, OUT, TOP, USB_HOST, VM, Skip, TestFailure, check, disk_args, kernel_args
from tests_capture import SRC_SIZE, check_restored_system, make_source_system, sh

COLS, ROWS = 80, 25
KEY_GAP = 0.15
ENTER, ESC, DOWN = "\r", "\x1b", "\x1b[B"


class Screen:
    """Just enough of a VT100 to replay ratatui's output: cursor moves, clears, text.
    Colours are dropped; every full frame seen is kept for "did it ever show X"."""

    def __init__(self):
        self.dec = codecs.getincrementaldecoder("utf-8")("replace")
        self.grid = [[" "] * COLS for _ in range(ROWS)]
        self.row = self.col = 0
        self.pending = ""
        self.seen = []

    def text(self):
        return "\n".join("".join(r).rstrip() for r in self.grid)

    def _clear(self):
        self.grid = [[" "] * COLS for _ in range(ROWS)]

    def feed(self, data):
        s = self.pending + self.dec.decode(data)
        self.pending = ""
        i, n = 0, len(s)
        while i < n:
            c = s[i]
            if c == "\x1b":
                if i + 1 >= n:
                    self.pending = s[i:]
                    break
                if s[i + 1] != "[":
                    i += 2
                    continue
                m = re.compile(r"\[([0-9;?]*)([@-~])").match(s, i + 1)
                if not m:
                    self.pending = s[i:]
                    break
                params, final = m.group(1), m.group(2)
                nums = [int(p) if p.isdigit() else 0 for p in params.lstrip("?").split(";")] if params else []
                if final == "H":
                    self.row = max(1, nums[0] if nums else 1) - 1
                    self.col = max(1, nums[1] if len(nums) > 1 else 1) - 1
                elif final == "J" and (nums[:1] == [2] or nums[:1] == [3]):
                    self._clear()
                elif final == "K":
                    if 0 <= self.row < ROWS:
                        for x in range(self.col, COLS):
                            self.grid[self.row][x] = " "
                elif final in "hl" and params.startswith("?1049"):
                    self._clear()
                i = m.end()
                continue
            if c == "\r":
                self.col = 0
            elif c == "\n":
                self.row = min(self.row + 1, ROWS - 1)
            elif c >= " ":
                if 0 <= self.row < ROWS and 0 <= self.col < COLS:
                    self.grid[self.row][self.col] = c
                self.col += 1
            i += 1
        t = self.text()
        if not self.seen or self.seen[-1] != t:
            self.seen.append(t)


class TuiVM(VM):
    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.screen = Screen()
        self.fed = 0
        self.last_bytes = b""

    def update(self):
        data = self.log.read_bytes()
        if len(data) > self.fed:
            self.screen.feed(data[self.fed:])
            self.fed = len(data)
            self.last_bytes = data[-8:]
        return self.screen.text()

    def wait_screen(self, pattern, timeout, what=None):
        """Waits until `pattern` is on screen, then until the frame that drew it has fully
        arrived (the serial line carries a frame in pieces: the title can be there while
        the body is still on its way); returns the screen text."""
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while True:
            t = self.update()
            if rx.search(t):
                return self.settled(rx, t)
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise TestFailure(f"{self.name}: {what or pattern} not on screen within {timeout} s; screen:\n{t}")
            time.sleep(0.2)

    def settled(self, rx, t, limit=2.0):
        """Reads on until the last frame has fully arrived (ratatui ends every frame by
        hiding or placing the cursor: ESC[?25l or ESC[?25h), at most `limit` s; returns
        the newest screen `rx` still matches."""
        end = time.monotonic() + limit
        while not self.frame_done() and time.monotonic() < end:
            time.sleep(0.05)
            now = self.update()
            if rx.search(now):
                t = now
        return t

    def frame_done(self):
        return self.last_bytes.endswith((b"\x1b[?25l", b"\x1b[?25h"))

    def keys(self, *keys):
        for k in keys:
            self.send(k)
            time.sleep(KEY_GAP)

    def select_row(self, needle, max_moves=12):
        """Presses Down until the selected row (`|>`) holds `needle`; returns the moves."""
        for moves in range(max_moves):
            t = self.update()
            if any(l.startswith("|>") and needle in l for l in t.splitlines()):
                return moves
            self.keys(DOWN)
            time.sleep(0.4)
        raise TestFailure(f"{needle} never selected; screen:\n{self.update()}")

    def power_off_from_tools(self):
        """On the Tools screen: Power off, answer yes, wait for the guest to stop cleanly."""
        self.wait_screen(r"Tools", 15)
        self.select_row("Power off")
        self.keys(ENTER)
        self.wait_screen(r"y yes", 10, "power-off question")
        self.keys("y")
        self.wait_for(r"imprint: powering off", 30)
        self.wait_exit(30)
        self.assert_no_panic()

    def vga_keys(self, *names):
        for n in names:
            self.monitor(f"sendkey {n}")

    def shell(self, command, timeout=20):
        """Runs a command in the rescue shell on the serial console; returns its output."""
        tag = f"@{int(time.monotonic() * 1000) % 100000}"
        start = len(self.text())
        # Quotes split the marker in the echoed command line, not in the output.
        self.send(f"{command}; echo EN''D{tag}\n")
        self.wait_for_after(start, rf"END{tag}\s", timeout)
        out = self.text()[start:]
        return out[: out.rfind(f"END{tag}")]

    def wait_for_after(self, offset, pattern, timeout):
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if rx.search(self.text()[offset:]):
                return
            time.sleep(0.1)
        raise TestFailure(f"{self.name}: no /{pattern}/ within {timeout} s; tail: {self.tail()}")


def vcs1(vm):
    """tty1's screen text, read in the guest."""
    out = vm.shell(f"head -c {COLS * ROWS} /dev/vcs1 | fold -w {COLS}")
    return out


def ever_seen(vm, *patterns):
    vm.update()
    return [t for t in vm.screen.seen if all(re.search(p, t) for p in patterns)]


def test_tui_capture_then_restore_over_serial(ctx):
    """(f) keyboard-only capture and restore in the TUI over the serial console; screens
    checked; VGA screenshots of home, confirmation and progress; host checks the disk."""
    work = OUT / "tui-disks"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    source, esp_files, root_files = make_source_system(work)
    stick = work / "stick.img"
    sh("cp", "--sparse=always", str(DIST / "imprint-usb.img"), str(stick))
    target = work / "nvme.img"
    with open(target, "wb") as f:
        f.truncate(SRC_SIZE)
    src_sum = hashlib.sha256(source.read_bytes()).hexdigest()
    args = kernel_args("") + ["-net", "none"] + USB_HOST
    args += disk_args(stick, "usb", "IMPRINT-STICK", "st")
    args += disk_args(source, "ahci", "SRC-DISK", "src")
    args += disk_args(target, "nvme", "NEW-NVME", "dst")
    vm = TuiVM("tui", args)
    shots = vm.dir / "screenshots"
    shots.mkdir()
    t0 = time.monotonic()
    try:
        vm.wait_for(r"imprint: ready in", 40)
        vm.wait_for(r"boot medium \S+ \(\S+\) protected", 10)
        vm.wait_screen(r"(?=[\s\S]*Home)(?=[\s\S]*SRC-DISK)(?=[\s\S]*NEW-NVME)[\s\S]*/run/imprint/store", 30,
                       "home screen")
        ctx.note(f"home on serial at {vm.elapsed():.1f} s")

        # --- capture ------------------------------------------------------------------
        vm.keys("c")
        vm.wait_screen(r"Capture 1/5", 10)
        src_moves = vm.select_row("SRC-DISK")
        vm.keys(ENTER)
        vm.wait_screen(r"Capture 2/5", 10)
        vm.keys(ENTER)
        vm.wait_screen(r"Capture 3/5", 10)
        vm.keys(*"golden", ENTER)
        vm.wait_screen(r"Capture 4/5", 10)
        vm.keys(*"tui test", ENTER)
        vm.wait_screen(r"Capture 5/5", 10)
        t_cap = time.monotonic()
        vm.keys(ENTER)
        vm.wait_screen(r"Result[\s\S]*Captured \"golden\"", 120, "capture result")
        ctx.note(f"capture {time.monotonic() - t_cap:.1f} s")
        check(ever_seen(vm, r"Capturing /dev/\w+ into /run/imprint/store", r"Phase:\s+\S",
                        r"Done:\s+[0-9.]+ \w*B of [0-9.]+ \w*B", r"Rate:\s+.*average", r"ETA"),
              "the capture's progress screen (phase, bytes, rate, ETA) was never shown")
        res = vm.update()
        check("SUCCESS" in res and re.search(r"Read [0-9.]+ \w?B of a 268\.4 MB disk", res),
              f"capture result screen:\n{res}")
        check(hashlib.sha256(source.read_bytes()).hexdigest() == src_sum, "capture changed the source disk")

        # --- restore ------------------------------------------------------------------
        vm.keys(ENTER)
        vm.wait_screen(r"Home[\s\S]*golden", 15, "home with the new image")
        vm.keys("r")
        vm.wait_screen(r"Restore 1/5", 10)
        vm.keys(ENTER)
        vm.wait_screen(r"Restore 2/5[\s\S]*golden", 10)
        vm.keys(ENTER)
        vm.wait_screen(r"Restore 3/5", 10)
        vm.wait_screen(r"Restore 3/5(?![\s\S]*checking\.\.\.)", 30, "target checks")
        t = vm.update()
        check(re.search(r"IMPRINT-STICK[^\n]*\n\|\s+REFUSED: [\s\S]*image store", t), f"the store's stick is not refused:\n{t}")
        dst_moves = vm.select_row("NEW-NVME")
        vm.keys(ENTER)
        vm.wait_screen(r"Restore 4/5: options", 10)
        vm.keys(ENTER)
        t = vm.wait_screen(r"Restore 5/5: CONFIRM[\s\S]*type the LAST 4 CHARACTERS", 30)
        check("NEW-NVME" in t and "type the LAST 4 CHARACTERS" in t and "THIS DISK WILL BE ERASED" in t,
              f"confirmation screen:\n{t}")
        vm.keys(*"XXXX", ENTER)
        vm.wait_screen(r"does not match", 10, "wrong word refused")
        check("Restore 5/5" in vm.update(), "a wrong word left the confirmation screen")
        vm.keys(*["\x7f"] * 4)
        vm.keys(*"nvme")
        vm.wait_screen(r"Matches\. Press Enter", 10)
        t_res = time.monotonic()
        vm.keys(ENTER)
        res = vm.wait_screen(r"Result[\s\S]*(SUCCESS|FAILED)", 180, "restore result")
        ctx.note(f"restore {time.monotonic() - t_res:.1f} s")
        check(re.search(r"Restored \"golden\" onto /dev/nvme0n1", res) and "SUCCESS" in res,
              f"restore result screen:\n{res}")
        check(re.search(r"Wrote [0-9.]+ \w?B in \d+ chunks", res), f"restore result has no figures:\n{res}")
        check(ever_seen(vm, r"Restoring \"golden\" onto /dev/nvme0n1", r"Phase:\s+\S", r"Done:\s+[0-9.]+ \w*B of",
                        r"Rate:\s+.*average", r"Chunks:\s+\d+ of \d+ done"),
              "the restore's progress screen was never shown")

        # --- tty1: screenshots, checked through a rescue shell on the serial console ---
        vm.keys(ENTER)
        vm.wait_screen(r"Home", 10)
        vm.keys("t")
        vm.wait_screen(r"Tools", 10)
        vm.keys(ENTER)
        vm.wait_for(r"Imprint rescue shell", 10)
        time.sleep(1)
        out = vcs1(vm)
        check("Home" in out and "golden" in out, f"tty1 does not show the home screen with the image:\n{out}")
        vm.monitor(f"screendump {shots / 'home.png'} -f png")

        vm.vga_keys("r", "ret", "ret")
        time.sleep(3)  # target checks
        vm.vga_keys(*["down"] * dst_moves, "ret", "ret")
        deadline = time.monotonic() + 30
        while "CONFIRM" not in (out := vcs1(vm)) and time.monotonic() < deadline:
            time.sleep(1)
        check("CONFIRM" in out and "NEW-NVME" in out, f"tty1 did not reach the confirmation:\n{out}")
        vm.monitor(f"screendump {shots / 'restore-confirm.png'} -f png")
        vm.vga_keys("esc", "esc", "esc", "esc", "esc")

        # Freeze tty1's TUI on its progress screen (a verify of the image) for the shot.
        pid = vm.shell("for p in /proc/[0-9]*; do set -- $(cat $p/stat 2>/dev/null); "
                       "[ \"$7\" = 1025 ] && grep -q tui $p/cmdline && echo PID=${p#/proc/}; done")
        m = re.search(r"PID=(\d+)", pid)
        check(m, f"no TUI process on tty1: {pid!r}")
        tpid = m.group(1)
        # Stopped once some bytes are done (or the job ended, which the check reports).
        vm.send(f"(until grep -q 'Done: *[1-9]' /dev/vcs1 || grep -q Result /dev/vcs1; do usleep 5000; done; "
                f"kill -STOP {tpid}; echo FRO''ZEN) &\n")
        time.sleep(0.5)
        # Verify > compare a disk with the image > the restored NVMe disk.
        vm.vga_keys("v", "ret", "ret", "down", "ret", *["down"] * dst_moves, "ret")
        vm.wait_for(r"FROZEN", 60)
        out = vcs1(vm)
        check(re.search(r"Comparing /dev/nvme0n1 with image", out) and re.search(r"Done: +[1-9]", out),
              f"tty1 progress screen:\n{out}")
        vm.monitor(f"screendump {shots / 'progress.png'} -f png")
        vm.shell(f"kill -CONT {tpid}")
        vm.send("exit\n")

        # --- power off from the TUI -----------------------------------------------------
        vm.power_off_from_tools()
        ctx.note(f"boot to power-off {vm.elapsed():.1f} s (source row +{src_moves}, target row +{dst_moves})")
    finally:
        vm.stop()

    for name in ("home", "restore-confirm", "progress"):
        png = shots / f"{name}.png"
        check(png.exists() and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", f"screenshot {name}.png missing")
    if os.environ.get("UPDATE_SCREENSHOTS"):
        dest = TOP / "docs" / "screenshots"
        dest.mkdir(parents=True, exist_ok=True)
        for png in shots.glob("*.png"):
            shutil.copy(png, dest / png.name)

    # --- the restored disk, on the host ---------------------------------------------------
    check_restored_system(work, target, esp_files, root_files)
    ctx.note(f"host: sgdisk -v, e2fsck -fn, fsck.vfat -n clean, {len(esp_files) + len(root_files)} files match; "
             f"total {time.monotonic() - t0:.0f} s")


def make_store_stick(work):
    """A 64 MiB GPT stick whose one ext4 partition (label STORES) holds a store in its
    imprint/ folder with one image, "hotimg", captured on the host."""
    exe = TOP / "target" / "release" / "imprint"
    if not exe.exists():
        raise Skip("target/release/imprint is missing")
    small = work / "small.img"
    small.write_bytes(bytes((i // 512) % 13 for i in range(4 << 20)))
    content = work / "stick-content"
    shutil.rmtree(content, ignore_errors=True)
    content.mkdir()
    sh(str(exe), "capture", str(small), str(content / "imprint"), "--name", "hotimg")
    part = work / "stick-part.ext4"
    sh("mkfs.ext4", "-q", "-F", "-L", "STORES", "-d", str(content), str(part), "62M")
    stick = work / "store-stick.img"
    with open(stick, "wb") as f:
        f.truncate(64 << 20)
    sh("sgdisk", "-n", "1:2048:+62M", "-c", "1:stores", str(stick))
    sh("dd", f"if={part}", f"of={stick}", "bs=1M", "seek=1", "conv=notrunc,sparse", "status=none")
    return stick


def test_tui_lists_a_store_on_a_hotplugged_stick(ctx):
    """(issue 6) a USB stick holding a store, plugged in after boot through the QEMU
    monitor: the home screen lists its store and image within seconds (mounted read-only
    under /run/imprint/disks), the restore wizard offers it, and pulling the stick
    removes it from the screen and unmounts it."""
    work = OUT / "tui-hotplug-disks"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    stick = make_store_stick(work)
    boot = work / "boot.img"
    sh("cp", "--sparse=always", str(DIST / "imprint-usb.img"), str(boot))
    args = kernel_args("") + ["-net", "none"] + USB_HOST
    args += disk_args(boot, "usb", "IMPRINT-STICK", "st")
    vm = TuiVM("tui-hotplug", args)
    try:
        vm.wait_for(r"imprint: ready in", 40)
        vm.wait_screen(r"Home[\s\S]*/run/imprint/store", 30, "home screen")
        check("hotimg" not in vm.update(), "the image is listed before the stick is plugged in")
        t0 = time.monotonic()
        vm.monitor(f"drive_add 0 if=none,id=hp,file={stick},format=raw")
        vm.monitor("device_add usb-storage,bus=xhci.0,drive=hp,id=hpdev,serial=STORE-STICK")
        t = vm.wait_screen(r'sd\w+ ext4 "STORES" \(/dev/sd\w+\) /imprint: 1 image[^\n]*\n[^\n]*hotimg', 40,
                           "the stick's store and image on the home screen")
        shown = time.monotonic() - t0
        # The disk list shows the mount on its next refresh (every 2 s).
        vm.wait_screen(r"sd\w+\s+\d+\.\d MB ext4\s+\"STORES\"\s+mounted /run/imprint/disks", 10,
                       "the stick's partition marked mounted under /run/imprint/disks")
        vm.keys("r")
        t = vm.wait_screen(r"Restore 1/5", 10)
        check(re.search(r'"STORES" \(/dev/sd\w+\) /imprint: 1 image', t), f"the restore wizard does not offer it:\n{t}")
        vm.keys(ESC)
        vm.wait_screen(r"Home", 10)
        t1 = time.monotonic()
        vm.monitor("device_del hpdev")
        deadline = time.monotonic() + 30
        while "hotimg" in vm.update() and time.monotonic() < deadline:
            time.sleep(0.5)
        t = vm.update()
        check("hotimg" not in t and "STORES" not in t, f"the store is still listed after the stick was pulled:\n{t}")
        ctx.note(f"stick's store on the home screen {shown:.1f} s after device_add; "
                 f"gone {time.monotonic() - t1:.1f} s after device_del")
        vm.keys("t")
        vm.power_off_from_tools()
    finally:
        vm.stop()


def test_tui_adds_an_smb_store_and_restores_from_it(ctx):
    """(issues 6, 8) QEMU's built-in SMB share (`-netdev user,smb=DIR`) added from the TUI
    with keystrokes only and no network set up by hand: the form shows the address DHCP
    gave (the TUI brings the network up itself), "Add network store" (n), a wrong share
    name first ("share not found" on the form), then the right one; the home screen lists
    its image; a restore from it onto a blank virtio disk, checked byte for byte on the
    host."""
    from tests_http import need_tools, random_store

    need_tools("smbd")
    work = OUT / "tui-smb-disks"
    source, share = random_store(work, 32, "share")
    os.system(f"chmod -R a+rwX {share}")
    target = work / "target.img"
    with open(target, "wb") as f:
        f.truncate(32 << 20)
    boot = work / "boot.img"
    sh("cp", "--sparse=always", str(DIST / "imprint-usb.img"), str(boot))
    net = ["-netdev", f"user,id=n0,restrict=on,smb={share}", "-device", "virtio-net-pci,netdev=n0"]
    args = kernel_args("") + ["-net", "none"] + net + USB_HOST
    args += disk_args(boot, "usb", "IMPRINT-STICK", "st") + disk_args(target, "virtio", "TARGET", "dst")
    vm = TuiVM("tui-smb", args)
    try:
        vm.wait_for(r"imprint: ready in", 40)
        vm.wait_screen(r"Home[\s\S]*/run/imprint/store", 30, "home screen")
        t_home = time.monotonic()
        # Nobody configures the network: the TUI brings it up at start (DHCP from QEMU's
        # user network) and the form says which interface has which address.
        vm.keys("n")
        vm.wait_screen(r"Add a network store", 10)
        t = vm.wait_screen(r"network: eth0 10\.0\.2\.15/24", 60, "the network line on the form")
        ctx.note(f"form shows network: eth0 10.0.2.15/24 {time.monotonic() - t_home:.1f} s after home")
        vm.keys(DOWN, *"10.0.2.4", ENTER, *"nosuch", ENTER, ENTER, ENTER)
        t = vm.wait_screen(r"Not connected: [\s\S]*(not found|denied|unreachable)", 60, "the wrong share refused")
        check("share not found" in t.replace("|\n|", " "), f"a missing share is not named as such:\n{t}")
        ctx.note("wrong share: " + " ".join(l.strip("| ") for l in t.splitlines() if "Not connected" in l))
        vm.keys("\x1b[A", "\x1b[A", *["\x7f"] * 6, *"qemu", ENTER, ENTER)
        vm.wait_screen(r"Share/dir:\s*qemu\b", 10)
        t0 = time.monotonic()
        vm.keys(ENTER)
        t = vm.wait_screen(r"smb://10\.0\.2\.4/qemu: 1 image[^\n]*\n[^\n]*golden", 60,
                           "the SMB store and its image on the home screen")
        ctx.note(f"SMB store listed {time.monotonic() - t0:.1f} s after Enter")

        vm.keys("r")
        t = vm.wait_screen(r"Restore 1/5", 10)
        check("smb://10.0.2.4/qemu" in t, f"the restore wizard does not offer the share:\n{t}")
        vm.select_row("smb://10.0.2.4/qemu")
        vm.keys(ENTER)
        vm.wait_screen(r"Restore 2/5[\s\S]*golden", 10)
        vm.keys(ENTER)
        vm.wait_screen(r"Restore 3/5(?![\s\S]*checking\.\.\.)", 30, "target checks")
        vm.select_row("TARGET")
        vm.keys(ENTER)
        vm.wait_screen(r"Restore 4/5: options", 10)
        vm.keys(ENTER)
        vm.wait_screen(r"Restore 5/5: CONFIRM", 30)
        vm.keys(*"RGET")
        vm.wait_screen(r"Matches\. Press Enter", 10)
        t_res = time.monotonic()
        vm.keys(ENTER)
        res = vm.wait_screen(r"Result[\s\S]*(SUCCESS|FAILED)", 300, "restore result")
        check("SUCCESS" in res, f"restore from SMB:\n{res}")
        ctx.note(f"restore of 32 MiB from SMB {time.monotonic() - t_res:.1f} s")
        vm.keys(ENTER)
        vm.wait_screen(r"Home", 10)
        vm.keys("t")
        vm.power_off_from_tools()
    finally:
        vm.stop()
    check(target.read_bytes() == source.read_bytes(), "the disk restored from SMB differs from the source")

def test_tui_lists_the_smb_store_named_at_boot_and_captures_into_it(ctx):
    """(issues 6, 8) Menu mode with `imprint.store=smb://10.0.2.100/store` on the kernel
    command line and the user and password only in IMPRINT:/imprint/credentials: a real
    smbd with user root / password s3cret on the host's loopback (guestfwd). With no
    keystroke the TUI's home screen lists the share (as smb://root@…) and its image; a
    capture into it from the wizard ends with a headline naming the smb:// address, not
    the mount directory; the host finds the new image in the share. The password is in
    neither the console output, the rescue shell's environment, nor any process's argv."""
    from tests_http import guestfwd_net, imprint_partition, need_tools, random_store
    from tests_netstores import Smbd

    need_tools("smbd", "pdbedit", "socat", "mkfs.vfat", "mcopy")
    work = OUT / "tui-smb-boot-disks"
    source, share = random_store(work, 8, "share")
    files = imprint_partition(work / "imprint-files.img",
                              {"/imprint/credentials": b"user=root\npassword=s3cret\n"})
    disk = work / "disk.img"
    with open(disk, "wb") as f:
        for i in range(16):
            f.write(bytes([i]) * (1 << 20))
    smbd = Smbd(work / "smbd", share)
    try:
        args = kernel_args("imprint.store=smb://10.0.2.100/store") + guestfwd_net("10.0.2.100:445", smbd.port)
        args += disk_args(files, "virtio", "IMPRINT-FILES", "fl") + disk_args(disk, "ahci", "SRC-DISK", "src")
        vm = TuiVM("tui-smb-boot", args)
        try:
            vm.wait_for(r"imprint: ready in", 40)
            t0 = time.monotonic()
            vm.wait_screen(r"smb://root@10\.0\.2\.100/store: 1 image[^\n]*\n[^\n]*golden", 90,
                           "the store named at boot and its image on the home screen")
            ctx.note(f"SMB store from the command line listed {time.monotonic() - t0:.1f} s after ready")

            vm.keys("c")
            vm.wait_screen(r"Capture 1/5", 10)
            vm.select_row("SRC-DISK")
            vm.keys(ENTER)
            vm.wait_screen(r"Capture 2/5", 10)
            vm.select_row("smb://root@10.0.2.100/store")
            vm.keys(ENTER)
            vm.wait_screen(r"Capture 3/5", 10)
            vm.keys(*"second", ENTER)
            vm.wait_screen(r"Capture 4/5", 10)
            vm.keys(ENTER)
            vm.wait_screen(r"Capture 5/5", 20)
            vm.keys(ENTER)
            res = vm.wait_screen(r"Result[\s\S]*(SUCCESS|FAILED)", 180, "capture result")
            flat = res.replace("|\n|", " ")
            check("SUCCESS" in res, f"capture into the SMB store:\n{res}")
            check('Captured "second" into smb://root@10.0.2.100/store' in flat,
                  f"the headline does not name the share:\n{res}")
            check("/run/imprint/net" not in res, f"the result names the mount directory:\n{res}")
            vm.keys(ENTER)
            vm.wait_screen(r"smb://root@10\.0\.2\.100/store: 2 images", 30, "home with the new image")
            # The rescue shell, a child of the TUI, does not inherit the password, and no
            # process has it on its command line.
            vm.keys("t")
            vm.wait_screen(r"Tools", 10)
            vm.keys(ENTER)
            vm.wait_for(r"Imprint rescue shell", 10)
            time.sleep(1)
            out = vm.shell("echo ENV=$(env | grep -c IMPRINT_STORE_PASSWORD) "
                           "ARGV=$(cat /proc/[0-9]*/cmdline | tr '\\0' ' ' | grep -c s3cre[t])")
            m = re.search(r"ENV=(\d+) ARGV=(\d+)", out)
            check(m and m.groups() == ("0", "0"), f"the password reaches the shell's environment or argv: {out!r}")
            vm.send("exit\n")
            vm.power_off_from_tools()
            log = vm.log.read_bytes()
        finally:
            vm.stop()
    finally:
        smbd.stop()
    check(b"s3cret" not in log, "the password is in the console output")
    check(any(p.name.startswith("second") for p in (share / "images").iterdir()),
          f"no image 'second' in the share: {sorted(p.name for p in (share / 'images').iterdir())}")


def test_tui_form_says_no_cable_then_finds_the_network_when_plugged_in(ctx):
    """(issue 8) A NIC whose cable is out (HMP `set_link off` before the guest probes it):
    the "Add network store" form says "no network: no cable on any wired port (eth0)";
    with the cable back (`set_link on`) opening the form again brings the network up and
    shows the address QEMU's DHCP gave. No shell, no command typed."""
    net = ["-netdev", "user,id=n0,restrict=on", "-device", "virtio-net-pci,netdev=n0"]
    vm = TuiVM("tui-no-cable", kernel_args("") + ["-net", "none"] + net)
    try:
        vm.monitor("set_link n0 off")
        vm.wait_for(r"imprint: ready in", 40)
        vm.wait_screen(r"Home", 30, "home screen")
        vm.keys("n")
        vm.wait_screen(r"Add a network store", 10)
        t = vm.wait_screen(r"no network: no cable on any wired port \(eth0\)", 30, "the no-cable line")
        ctx.note(" ".join(l.strip("| ") for l in t.splitlines() if "no network" in l))
        vm.keys(ESC)
        vm.wait_screen(r"Home", 10)
        vm.monitor("set_link n0 on")
        t0 = time.monotonic()
        vm.keys("n")
        vm.wait_screen(r"network: eth0 10\.0\.2\.15/24", 60, "the network after plugging the cable in")
        ctx.note(f"network: eth0 10.0.2.15/24 {time.monotonic() - t0:.1f} s after the form opened with the cable in")
        vm.keys(ESC)
        vm.wait_screen(r"Home", 10)
        vm.keys("t")
        vm.power_off_from_tools()
    finally:
        vm.stop()


TESTS = [test_tui_capture_then_restore_over_serial, test_tui_lists_a_store_on_a_hotplugged_stick,
         test_tui_adds_an_smb_store_and_restores_from_it,
         test_tui_lists_the_smb_store_named_at_boot_and_captures_into_it,
         test_tui_form_says_no_cable_then_finds_the_network_when_plugged_in]
