"""Disk discovery inside QEMU (issue 4): one disk on every bus QEMU offers, listed by
`imprint disks --json` with the bus, serial and model the disks crate derives; a USB disk
hot-added and removed through the HMP monitor is reported by `imprint watch-disks --json`.
"""

import json
import re
import time

from harness import OUT, USB_HOST, VM, blank_disk, check, kernel_args

MIB = 1 << 20

# (QEMU device arguments, serial, the bus name `imprint disks` uses (disks::discover::Bus),
# the model QEMU reports, or None where QEMU sets none: virtio-blk has no model).
BUSES = [
    ("virtio-blk-pci,drive=d1,serial=VBLK-SER-1", "VBLK-SER-1", "virtio", None),
    ("scsi-hd,bus=scsi0.0,drive=d2,serial=VSCSI-SER-2", "VSCSI-SER-2", "scsi", "QEMU HARDDISK"),
    ("ide-hd,bus=ide.0,drive=d3,serial=SATA-SER-3,model=ProtoSATA", "SATA-SER-3", "sata", "ProtoSATA"),
    ("nvme,drive=d4,serial=NVME-SER-4", "NVME-SER-4", "nvme", "QEMU NVMe Ctrl"),
    ("usb-storage,bus=xhci.0,drive=d5,serial=USB-SER-5", "USB-SER-5", "usb", "QEMU HARDDISK"),
]


def shell_json(vm, command, marker, timeout=30):
    """Runs COMMAND in the guest shell and returns the JSON result line it prints
    between two markers (so an earlier command's output can never match)."""
    vm.send(f"echo {marker}-begin; {command}; echo {marker}-end\n")
    m = vm.wait_for(rf"\n{marker}-begin\s*\n([\s\S]*?)\n{marker}-end", timeout)
    for v in json_objects(m.group(1)):
        if v.get("type") == "result":
            return v["data"]
    raise AssertionError(f"no JSON result from {command!r}: {m.group(1)[-300:]}")


def json_objects(text):
    """Every JSON object printed on a line of TEXT. The CLI's serde_json writes keys in
    order `{"type":...,"data":...}` (docs/CLI.md), so a line is found by its first brace."""
    out = []
    for line in text.splitlines():
        i = line.find("{")
        if i < 0:
            continue
        try:
            v = json.loads(line[i:].strip())
        except ValueError:
            continue
        if isinstance(v, dict):
            out.append(v)
    return out


def events(vm, type_):
    return [e["data"] for e in json_objects(vm.text()) if e.get("type") == type_]


def test_disks_every_bus_and_usb_hotplug(ctx):
    """(issue 4) `imprint disks --json` names the bus, serial and model of a virtio-blk,
    virtio-scsi, AHCI, NVMe and USB disk; `imprint watch-disks --json` reports a USB disk
    hot-added from the monitor within a few seconds, and its removal."""
    d = OUT / "disks-bus-images"
    d.mkdir(parents=True, exist_ok=True)
    args = kernel_args("imprint.action=shell imprint.console=200x50") + ["-net", "none"] + USB_HOST
    args += ["-device", "virtio-scsi-pci,id=scsi0"]
    for i, (dev, _, _, _) in enumerate(BUSES, 1):
        img = blank_disk(d / f"bus{i}.img", (32 + 8 * i) * MIB)
        args += ["-drive", f"if=none,id=d{i},file={img},format=raw", "-device", dev]
    hot = blank_disk(d / "hotplug.img", 48 * MIB)
    vm = VM("disks-bus", args)
    try:
        vm.wait_for(r"starting a shell", 60)
        time.sleep(1)
        data = shell_json(vm, "imprint disks --json", "DISKS")
        listed = {x.get("serial"): x for x in data["disks"]}
        problems = []
        for _, serial, bus, model in BUSES:
            x = listed.get(serial)
            if x is None:
                problems.append(f"{serial} ({bus}) not listed; serials seen: {sorted(map(str, listed))}")
                continue
            if x["bus"] != bus:
                problems.append(f"{serial}: bus {x['bus']!r}, want {bus!r}")
            if model is not None and x.get("model") != model:
                problems.append(f"{serial}: model {x.get('model')!r}, want {model!r}")
            if x["source"] != "udev":
                problems.append(f"{serial}: properties from {x['source']!r}, not udev")
        check(not problems, "imprint disks --json: " + "; ".join(problems))
        ctx.note("disks --json: " + ", ".join(f"{listed[s]['node']}={b}/{s}" for _, s, b, _ in BUSES))

        vm.send("imprint watch-disks --json &\n")
        w = vm.wait_for(r'\{"type":"watching","data":\{"monitor":"([^"]+)"\}\}', 20)
        check(w.group(1) == "udev", f"watch-disks uses {w.group(1)}, want the udev monitor")
        time.sleep(0.5)
        t0 = time.monotonic()
        vm.monitor(f"drive_add 0 if=none,id=hp,file={hot},format=raw")
        vm.monitor("device_add usb-storage,bus=xhci.0,drive=hp,id=hpdev,serial=HOTPLUG-1")
        # The whole line, not just its start: under TCG the serial console delivers a long
        # JSON line in pieces, and parsing a half-received one finds no event.
        vm.wait_for(r'"type":"disk-added"[^\n]*HOTPLUG-1[^\n]*\n', 20)
        added_after = time.monotonic() - t0
        added = [e for e in events(vm, "disk-added") if e.get("serial") == "HOTPLUG-1"]
        check(len(added) == 1, f"expected one disk-added event for HOTPLUG-1, got {added}")
        a = added[0]
        check(a["bus"] == "usb" and a["size"] == 48 * MIB,
              f"hot-added disk reported as bus {a['bus']!r}, {a['size']} bytes")
        check(added_after < 8, f"the added event came {added_after:.1f} s after device_add (limit 8 s)")

        t1 = time.monotonic()
        vm.monitor("device_del hpdev")
        node = re.escape(json.dumps(a["node"]))
        vm.wait_for(rf'\{{"type":"disk-removed","data":\{{"node":{node}\}}\}}', 20)
        removed_after = time.monotonic() - t1
        ctx.note(f"hotplug {a['node']} HOTPLUG-1: added event {added_after:.1f} s after device_add, "
                 f"removed event {removed_after:.1f} s after device_del")

        # The disk list agrees after the removal (the monitor's view is not the only one).
        data = shell_json(vm, "imprint disks --json", "AFTER")
        check("HOTPLUG-1" not in {x.get("serial") for x in data["disks"]},
              "HOTPLUG-1 still listed by imprint disks after device_del")
        vm.send("kill %1; poweroff -f\n")
        vm.assert_no_panic()
    finally:
        vm.stop()


TESTS = [test_disks_every_bus_and_usb_hotplug]
