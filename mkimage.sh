#!/usr/bin/env bash
# Builds the Imprint boot environment (docs/BOOT.md):
#   dist/vmlinuz, dist/initrd.img   kernel + initramfs (QEMU -kernel/-initrd, PXE)
#   dist/imprint-usb.img            USB stick image: MBR, FAT32 boot partition (syslinux for
#                                   BIOS, shim + signed GRUB for UEFI/Secure Boot), exFAT
#                                   image store labelled IMPRINT
#   dist/pxe/                       vmlinuz, initrd.img, boot.ipxe
# Downloads (the pinned kernel, udev) are cached under build/; rerunning is safe and only
# rebuilds the outputs. Installs nothing: the host packages come from .ci/apt-packages.
#
# Usage: ./mkimage.sh [--initrd-only]
#   IMPRINT_USB_MB=1024   size of the USB image in MiB (the store gets what the boot
#                         partition leaves)
#   IMPRINT_BIN_DIR=DIR   take imprint-init and imprint from DIR instead of building them
set -euo pipefail
cd "$(dirname "$0")"
TOP=$PWD

# The kernel is pinned so builds are reproducible: bump both together.
KPKG=linux-image-6.12.95+deb12-amd64
KDEBVER=6.12.95-1~bpo12+1
KVER=6.12.95+deb12-amd64

BUILD=$TOP/build
DIST=$TOP/dist
ROOT=$BUILD/initramfs-root
KROOT=$BUILD/kernel
UROOT=$BUILD/udev-root
USB_MB=${IMPRINT_USB_MB:-1024}
BOOT_MB=192
MAX_INITRD_MIB=40
# Kernel command lines: the last console= is /dev/console, where the menu runs. Status
# lines and job results go to every console either way.
# cryptomgr.notests: skip the kernel crypto self-tests (about 1 s of a TCG boot; Imprint's
# image checks are its own BLAKE3 in user space, docs/BOOT.md "Boot time").
CMDLINE="console=ttyS0,115200 console=tty1 quiet cryptomgr.notests"
CMDLINE_SERIAL="console=tty1 console=ttyS0,115200 quiet cryptomgr.notests"

INITRD_ONLY=0
for a in "$@"; do
  case "$a" in
    --initrd-only) INITRD_ONLY=1 ;;
    -h|--help) sed -n '2,16p' "$0"; exit 0 ;;
    *) echo "mkimage: unknown argument: $a" >&2; exit 2 ;;
  esac
done

say() { echo "mkimage: $*" >&2; }
die() { echo "mkimage: error: $*" >&2; exit 1; }

# --- tools -------------------------------------------------------------------------------
need_tool() { # TOOL PACKAGE
  command -v "$1" >/dev/null 2>&1 || PATH=$PATH:/usr/sbin:/sbin command -v "$1" >/dev/null 2>&1 ||
    missing+=" $1 (package $2)"
}
need_file() { # FILE PACKAGE
  [ -e "$1" ] || missing+=" $1 (package $2)"
}
export PATH=$PATH:/usr/sbin:/sbin
missing=""
need_tool apt-get apt; need_tool dpkg-deb dpkg; need_tool cargo rustup
need_tool depmod kmod; need_tool modprobe kmod; need_tool cpio cpio; need_tool zstd zstd
need_tool lz4 lz4
need_tool xz xz-utils; need_tool ldd libc-bin; need_tool strip binutils; need_tool readelf binutils
need_file /bin/busybox busybox-static
if [ "$INITRD_ONLY" = 0 ]; then
  need_tool sfdisk fdisk; need_tool mkfs.vfat dosfstools; need_tool mkfs.exfat exfatprogs
  need_tool mcopy mtools; need_tool mmd mtools; need_tool syslinux syslinux
  need_file /usr/lib/syslinux/mbr/mbr.bin syslinux-common
  need_file /usr/lib/shim/shimx64.efi.signed shim-signed
  need_file /usr/lib/grub/x86_64-efi-signed/grubx64.efi.signed grub-efi-amd64-signed
fi
[ -z "$missing" ] || die "missing tools:$missing; install them with: bash .ci/setup"
if readelf -l /bin/busybox 2>/dev/null | grep -q 'INTERP'; then
  die "/bin/busybox is dynamically linked; install busybox-static"
fi

# --- downloads (cached) ------------------------------------------------------------------
# A private apt configuration, so the host's sources and package lists stay untouched. The
# mirror is the one the host already uses.
mirror=$(sed -n 's/^URIs:[[:space:]]*\(http[^ ]*\/debian\)\/*$/\1/p' /etc/apt/sources.list.d/debian.sources 2>/dev/null | head -n1)
[ -n "$mirror" ] || mirror=$(sed -n 's/^deb[[:space:]]\+\(\[[^]]*\][[:space:]]\+\)\?\(http[^ ]*\/debian\)\/\?[[:space:]]\+bookworm[[:space:]].*/\2/p' /etc/apt/sources.list 2>/dev/null | head -n1)
[ -n "$mirror" ] || die "cannot find the Debian mirror in /etc/apt/sources.list.d/debian.sources"
mkdir -p "$BUILD/apt/lists/partial" "$BUILD/apt/cache/archives/partial" "$BUILD/debs" "$DIST"
keyring=/usr/share/keyrings/debian-archive-keyring.gpg
{
  echo "deb [signed-by=$keyring] $mirror bookworm-backports main"
  echo "deb [signed-by=$keyring] $mirror bookworm main"
  echo "deb [signed-by=$keyring] $mirror bookworm-updates main"
  echo "deb [signed-by=$keyring] ${mirror%/debian}/debian-security bookworm-security main"
} > "$BUILD/apt/sources.list"
APT=(-o "Dir::Etc::SourceList=$BUILD/apt/sources.list" -o Dir::Etc::SourceParts=/dev/null
     -o "Dir::State::Lists=$BUILD/apt/lists" -o "Dir::Cache=$BUILD/apt/cache" -q)
apt_updated=0
apt_download() { # PACKAGE[=VERSION]
  if [ "$apt_updated" = 0 ]; then
    apt-get "${APT[@]}" update >/dev/null || die "apt-get update (private lists under build/apt) failed"
    apt_updated=1
  fi
  (cd "$BUILD/debs" && apt-get "${APT[@]}" download "$1" 2>&1 | grep -v 'unsandboxed' >&2) ||
    die "apt-get download $1 failed"
}
kdeb=$(ls "$BUILD"/debs/"${KPKG}_${KDEBVER/\~/%7e}"_amd64.deb "$BUILD"/debs/"${KPKG}_${KDEBVER}"_amd64.deb 2>/dev/null | head -n1 || true)
if [ -z "$kdeb" ]; then
  say "downloading $KPKG=$KDEBVER (~106 MB)"
  apt_download "$KPKG=$KDEBVER"
  kdeb=$(ls "$BUILD"/debs/"${KPKG}"_*_amd64.deb | head -n1)
fi
udeb=$(ls "$BUILD"/debs/udev_*_amd64.deb 2>/dev/null | head -n1 || true)
if [ -z "$udeb" ]; then
  say "downloading udev"
  apt_download udev
  udeb=$(ls "$BUILD"/debs/udev_*_amd64.deb | head -n1)
fi

cadeb=$(ls "$BUILD"/debs/ca-certificates_*_all.deb 2>/dev/null | head -n1 || true)
if [ -z "$cadeb" ]; then
  say "downloading ca-certificates"
  apt_download ca-certificates
  cadeb=$(ls "$BUILD"/debs/ca-certificates_*_all.deb | head -n1)
fi

if [ ! -e "$KROOT/.done-$KVER" ]; then
  say "extracting $(basename "$kdeb") and running depmod"
  rm -rf "$KROOT"; mkdir -p "$KROOT"
  dpkg-deb -x "$kdeb" "$KROOT"
  depmod -b "$KROOT" "$KVER"
  touch "$KROOT/.done-$KVER"
fi
if [ ! -e "$UROOT/.done" ]; then
  rm -rf "$UROOT"; mkdir -p "$UROOT"
  dpkg-deb -x "$udeb" "$UROOT"
  touch "$UROOT/.done"
fi

# --- our binaries ------------------------------------------------------------------------
have_cli=1
if [ -n "${IMPRINT_BIN_DIR:-}" ]; then
  BIN_DIR=$IMPRINT_BIN_DIR
  [ -x "$BIN_DIR/imprint-init" ] || die "$BIN_DIR/imprint-init is missing"
  [ -x "$BIN_DIR/imprint" ] || have_cli=0
else
  say "building imprint-init and imprint (cargo build --release)"
  cargo build --release -p init >&2 || die "cargo build -p init failed"
  if ! cargo build --release -p cli >&2; then
    say "WARNING: cargo build -p cli failed; the initramfs will have no imprint CLI (jobs will report it missing)"
    have_cli=0
  fi
  TARGET_DIR=$(cargo metadata --format-version 1 --no-deps 2>/dev/null | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
  BIN_DIR=${TARGET_DIR:-$TOP/target}/release
fi

# --- stage the initramfs -----------------------------------------------------------------
say "staging the initramfs in build/initramfs-root"
rm -rf "$ROOT"
mkdir -p "$ROOT"/usr/{bin,sbin,lib,lib64} "$ROOT"/{dev,proc,sys,run,tmp,root,mnt,etc,var}
# Merged /usr, like Debian 12: one copy of each file whatever path a tool uses.
ln -s usr/bin "$ROOT/bin"; ln -s usr/sbin "$ROOT/sbin"
ln -s usr/lib "$ROOT/lib"; ln -s usr/lib64 "$ROOT/lib64"
ln -s /run "$ROOT/var/run"
cp -a initramfs/rootfs/. "$ROOT/"

strip_install() { # SRC DEST
  install -D -m 0755 "$1" "$2"
  strip --strip-debug "$2"
}
strip_install "$BIN_DIR/imprint-init" "$ROOT/init"
if [ "$have_cli" = 1 ] && [ -x "$BIN_DIR/imprint" ]; then
  strip_install "$BIN_DIR/imprint" "$ROOT/usr/bin/imprint"
else
  say "WARNING: no imprint CLI in the initramfs"
fi

# busybox: the rescue shell, mount, ip, udhcpc, modprobe (the kernel's request_module
# helper, /proc/sys/kernel/modprobe = /sbin/modprobe) and the usual tools.
install -m 0755 /bin/busybox "$ROOT/usr/bin/busybox"
/bin/busybox --list-full | while read -r applet; do
  case "$applet" in *init|linuxrc) continue ;; esac
  dest="$ROOT/$applet"
  [ -e "$dest" ] || [ -L "$dest" ] || { mkdir -p "$(dirname "$dest")"; ln -s /usr/bin/busybox "$dest"; }
done

# Tools the jobs run, ahead of busybox on PATH (/usr/sbin:/usr/bin first): util-linux
# losetup/mount/umount (busybox's losetup has no --sizelimit or --show; `imprint mount`
# and `--grow-last` need them), e2fsck + resize2fs to grow ext2/3/4, ntfsresize for NTFS.
for t in /usr/sbin/losetup /usr/bin/mount /usr/bin/umount /usr/sbin/e2fsck /usr/sbin/resize2fs /usr/sbin/ntfsresize; do
  [ -x "$t" ] || die "$t is missing (packages util-linux, mount, e2fsprogs, ntfs-3g)"
  install -D -m 0755 "$t" "$ROOT$t"
done

# udev: udevadm is also systemd-udevd (one binary in systemd 252), the ID helpers, rules.
install -D -m 0755 "$UROOT/bin/udevadm" "$ROOT/usr/bin/udevadm"
mkdir -p "$ROOT/usr/lib/systemd" "$ROOT/usr/lib/udev/rules.d" "$ROOT/etc/udev"
ln -sf /usr/bin/udevadm "$ROOT/usr/lib/systemd/systemd-udevd"
for h in ata_id scsi_id cdrom_id; do install -m 0755 "$UROOT/lib/udev/$h" "$ROOT/usr/lib/udev/$h"; done
grep -v '^\s*#' initramfs/udev-rules.list | while read -r r; do
  [ -n "$r" ] || continue
  install -m 0644 "$UROOT/lib/udev/rules.d/$r" "$ROOT/usr/lib/udev/rules.d/$r"
done
[ -e "$UROOT/etc/udev/udev.conf" ] && install -m 0644 "$UROOT/etc/udev/udev.conf" "$ROOT/etc/udev/udev.conf"

# CA certificates for https:// stores: Debian's ca-certificates (Mozilla's list), joined
# into the one bundle file rustls-native-certs looks for, as update-ca-certificates would.
CAROOT=$BUILD/ca-root
rm -rf "$CAROOT"; mkdir -p "$CAROOT"
dpkg-deb -x "$cadeb" "$CAROOT"
mkdir -p "$ROOT/etc/ssl/certs"
ncas=0
for crt in $(cd "$CAROOT/usr/share/ca-certificates" && find . -name '*.crt' | LC_ALL=C sort); do
  sed -e '$a\' "$CAROOT/usr/share/ca-certificates/$crt" >> "$ROOT/etc/ssl/certs/ca-certificates.crt"
  ncas=$((ncas + 1))
done
[ "$ncas" -gt 50 ] || die "only $ncas CA certificates in $(basename "$cadeb")"
say "$ncas CA certificates from $(basename "$cadeb")"

# Shared libraries: the transitive DT_NEEDED closure of every dynamic ELF we ship,
# resolved by the host's loader (like dracut). The binaries were built against this
# host's glibc, so its libraries are the right ones.
elfs=()
while IFS= read -r -d '' f; do
  if [ ! -L "$f" ] && head -c 4 "$f" 2>/dev/null | grep -q $'\x7fELF'; then elfs+=("$f"); fi
done < <(find "$ROOT" -type f -print0)
libs=$(for f in "${elfs[@]}"; do
  ldd "$f" 2>/dev/null | awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }' || true
  if ldd "$f" 2>&1 | grep -q 'not found'; then echo "MISSING:$f"; fi
done | sort -u)
if echo "$libs" | grep -q '^MISSING:'; then
  die "unresolved shared libraries for: $(echo "$libs" | sed -n 's/^MISSING://p' | tr '\n' ' ')"
fi
for lib in $libs; do
  dest="$ROOT$lib"
  [ -e "$dest" ] || install -D -m 0755 "$(readlink -f "$lib")" "$dest"
done

# Kernel modules: the list plus dependencies and softdeps, decompressed (the cpio is
# compressed as a whole, which packs better; signatures live inside the .ko and survive).
MODSRC=$KROOT/lib/modules/$KVER
MODDST=$ROOT/usr/lib/modules/$KVER
mkdir -p "$MODDST"
mods=$(grep -v '^\s*#' initramfs/modules.list | tr -s ' \t' '\n' | grep -v '^$')
kos=""
for m in $mods; do
  out=$(modprobe -d "$KROOT" -S "$KVER" --show-depends "$m" 2>&1) ||
    die "module $m is not in kernel $KVER: $out"
  kos+=$(echo "$out" | awk '$1 == "insmod" { print $2 }')$'\n'
done
nmods=0
for ko in $(echo "$kos" | grep -v '^$' | sort -u); do
  rel=${ko#"$MODSRC"/}
  dest="$MODDST/${rel%.xz}"
  mkdir -p "$(dirname "$dest")"
  case "$ko" in
    *.xz) xz -dc "$ko" > "$dest" ;;
    *.zst) zstd -qdc "$ko" > "$dest" ;;
    *) cp "$ko" "$dest" ;;
  esac
  nmods=$((nmods + 1))
done
for f in modules.order modules.builtin modules.builtin.modinfo; do
  [ -e "$MODSRC/$f" ] && cp "$MODSRC/$f" "$MODDST/"
done
depmod -b "$ROOT" "$KVER"
say "$nmods kernel modules"

# --- pack --------------------------------------------------------------------------------
# LZ4 (legacy frame, the kernel's format): 55% larger than zstd -19, and the kernel
# unpacks it in well under half the time (0.8-1.0 s instead of 2.0-2.5 s under TCG; docs/BOOT.md
# "Boot time").
say "packing dist/initrd.img (lz4 -12)"
(cd "$ROOT" && find . | LC_ALL=C sort | cpio -o -H newc -R 0:0 --quiet | lz4 -l -12 -q -f - "$DIST/initrd.img.tmp")
mv "$DIST/initrd.img.tmp" "$DIST/initrd.img"
cp "$KROOT/boot/vmlinuz-$KVER" "$DIST/vmlinuz"
initrd_bytes=$(stat -c %s "$DIST/initrd.img")
staged=$(du -sb "$ROOT" | cut -f1)
echo "mkimage: dist/initrd.img: $initrd_bytes bytes ($(( initrd_bytes / 1048576 )) MiB; staged $(( staged / 1048576 )) MiB)"
[ "$initrd_bytes" -lt $(( MAX_INITRD_MIB * 1048576 )) ] || die "initrd.img is over $MAX_INITRD_MIB MiB"

mkdir -p "$DIST/pxe"
cp "$DIST/vmlinuz" "$DIST/initrd.img" "$DIST/pxe/"
sed "s|@CMDLINE@|$CMDLINE|" initramfs/boot/boot.ipxe > "$DIST/pxe/boot.ipxe"

[ "$INITRD_ONLY" = 1 ] && exit 0

# --- USB image ---------------------------------------------------------------------------
# Built without mounting anything (the host kernel has no vfat): each filesystem is made in
# its own file, filled with mtools, then copied into the disk image at its offset.
say "building dist/imprint-usb.img (${USB_MB} MiB)"
[ "$USB_MB" -ge $(( BOOT_MB + 64 )) ] || die "IMPRINT_USB_MB must be at least $(( BOOT_MB + 64 ))"
W=$BUILD/usb
rm -rf "$W"; mkdir -p "$W"
export MTOOLS_SKIP_CHECK=1
boot_start=2048
boot_sectors=$(( BOOT_MB * 2048 ))
store_start=$(( boot_start + boot_sectors ))
store_sectors=$(( USB_MB * 2048 - store_start ))

subst() { sed -e "s|@CMDLINE@|$CMDLINE|" -e "s|@CMDLINE_SERIAL@|$CMDLINE_SERIAL|" "$1"; }
subst initramfs/boot/syslinux.cfg > "$W/syslinux.cfg"
subst initramfs/boot/grub.cfg > "$W/grub.cfg"

mkfs.vfat -F 32 -n IMPRINTBOOT -h "$boot_start" -C "$W/boot.fat" $(( BOOT_MB * 1024 )) >/dev/null
P="$W/boot.fat"
mmd -i "$P" ::/boot ::/EFI ::/EFI/BOOT ::/EFI/debian
mcopy -i "$P" "$DIST/vmlinuz" ::/boot/vmlinuz
mcopy -i "$P" "$DIST/initrd.img" ::/boot/initrd.img
mcopy -i "$P" "$W/syslinux.cfg" ::/syslinux.cfg
# UEFI with or without Secure Boot: Microsoft-signed shim -> Debian-signed GRUB ->
# Debian-signed kernel (notes 4.2). shim loads grubx64.efi from its own directory.
mcopy -i "$P" /usr/lib/shim/shimx64.efi.signed ::/EFI/BOOT/BOOTX64.EFI
mcopy -i "$P" /usr/lib/grub/x86_64-efi-signed/grubx64.efi.signed ::/EFI/BOOT/grubx64.efi
[ -e /usr/lib/shim/mmx64.efi.signed ] && mcopy -i "$P" /usr/lib/shim/mmx64.efi.signed ::/EFI/BOOT/mmx64.efi
mcopy -i "$P" "$W/grub.cfg" ::/EFI/debian/grub.cfg
mcopy -i "$P" "$W/grub.cfg" ::/EFI/BOOT/grub.cfg
syslinux --install "$P"

truncate -s $(( store_sectors * 512 )) "$W/store.exfat"
mkfs.exfat -L IMPRINT "$W/store.exfat" >/dev/null

rm -f "$W/usb.img"
truncate -s $(( USB_MB * 1048576 )) "$W/usb.img"
printf 'label: dos\nstart=%d, size=%d, type=c, bootable\nstart=%d, size=%d, type=7\n' \
  "$boot_start" "$boot_sectors" "$store_start" "$store_sectors" | sfdisk -q "$W/usb.img"
dd if="$W/boot.fat" of="$W/usb.img" bs=1M seek=1 conv=notrunc,sparse status=none
dd if="$W/store.exfat" of="$W/usb.img" bs=512 seek="$store_start" conv=notrunc,sparse status=none
dd if=/usr/lib/syslinux/mbr/mbr.bin of="$W/usb.img" bs=440 count=1 conv=notrunc status=none
mv "$W/usb.img" "$DIST/imprint-usb.img"
rm -f "$W/boot.fat" "$W/store.exfat"
echo "mkimage: dist/imprint-usb.img: $USB_MB MiB (boot FAT32 $BOOT_MB MiB, store exFAT IMPRINT $(( store_sectors / 2048 )) MiB)"
echo "mkimage: done: dist/vmlinuz dist/initrd.img dist/imprint-usb.img dist/pxe/"
