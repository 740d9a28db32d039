//! Signatures we recognise only to label a partition that is captured whole:
//! encrypted or volume-manager containers, and filesystems without a parser yet.
//! Offsets follow util-linux libblkid's probers (superblocks/luks.c, lvm.c,
//! bitlocker.c, xfs.c, btrfs.c).

use crate::util::{latin_label, le32, uuid_string, Dev, Fail};
use crate::{FsInfo, FsKind};

pub(crate) fn probe_container(dev: &Dev) -> Result<Option<FsInfo>, Fail> {
    if let Some(h) = dev.peek(0, 512)? {
        // LUKS1 and LUKS2 share the first fields: magic, version, then (LUKS2) a label
        // at 24 and, in both, the UUID as 40 bytes of text at 168.
        if &h[0..6] == b"LUKS\xba\xbe" {
            let version = u16::from_be_bytes([h[6], h[7]]);
            return Ok(Some(FsInfo {
                kind: FsKind::Luks,
                label: if version == 2 {
                    latin_label(&h[24..72])
                } else {
                    None
                },
                uuid: latin_label(&h[168..208]),
                block_size: 512,
            }));
        }
        if &h[3..11] == b"-FVE-FS-" {
            return Ok(Some(FsInfo {
                kind: FsKind::BitLocker,
                label: None,
                uuid: None,
                block_size: 512,
            }));
        }
    }
    // The LVM2 label may sit in any of the first four sectors.
    for sector in 0..4u64 {
        let Some(s) = dev.peek(sector * 512, 512)? else {
            break;
        };
        if &s[0..8] == b"LABELONE" && &s[24..32] == b"LVM2 001" {
            let pvh = le32(&s, 20) as usize;
            let uuid = s.get(pvh..pvh + 32).map(|u| {
                // blkid prints the 32-character PV UUID in 6-4-4-4-4-4-6 groups.
                let u = String::from_utf8_lossy(u).to_string();
                let mut out = String::new();
                let mut at = 0;
                for (i, n) in [6, 4, 4, 4, 4, 4, 6].into_iter().enumerate() {
                    if i > 0 {
                        out.push('-');
                    }
                    out.push_str(u.get(at..at + n).unwrap_or(""));
                    at += n;
                }
                out
            });
            return Ok(Some(FsInfo {
                kind: FsKind::Lvm,
                label: None,
                uuid,
                block_size: 512,
            }));
        }
    }
    Ok(None)
}

pub(crate) fn probe_fs(dev: &Dev) -> Result<Option<FsInfo>, Fail> {
    if let Some(h) = dev.peek(0, 512)? {
        if &h[0..4] == b"XFSB" {
            return Ok(Some(FsInfo {
                kind: FsKind::Xfs,
                label: latin_label(&h[108..120]),
                uuid: uuid_string(&h[32..48]),
                block_size: u32::from_be_bytes([h[4], h[5], h[6], h[7]]),
            }));
        }
    }
    // btrfs's primary superblock is at 64 KiB; the magic is at offset 0x40 inside it.
    if let Some(sb) = dev.peek(0x10000, 4096)? {
        if &sb[0x40..0x48] == b"_BHRfS_M" {
            return Ok(Some(FsInfo {
                kind: FsKind::Btrfs,
                label: latin_label(&sb[0x12b..0x22b]),
                uuid: uuid_string(&sb[0x20..0x30]),
                block_size: le32(&sb, 0x90),
            }));
        }
    }
    Ok(None)
}
