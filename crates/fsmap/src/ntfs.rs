//! NTFS from `$Bitmap`, found through `$MFT`.
//!
//! NTFS has no official public specification; layouts follow the Linux-NTFS project's
//! "NTFS Documentation" (Richard Russon, Yuval Fledel: "Boot sector", "File record",
//! "Attribute - $DATA", "Data runs", "Fixup") and ntfs-3g's layout.h, which mkntfs and
//! ntfsclone are built on.

use crate::ext::add_bitmap;
use crate::extents::ExtentList;
use crate::util::{bad, ensure, le16, le32, le64, mul, utf16_label, Dev, Fail, MAX_READ};
use crate::{FsInfo, FsKind};

/// Fixups protect each 512-byte stride of a record, whatever the sector size
/// (layout.h NTFS_BLOCK_SIZE).
const FIXUP_STRIDE: usize = 512;

const AT_ATTRIBUTE_LIST: u32 = 0x20;
const AT_VOLUME_NAME: u32 = 0x60;
const AT_VOLUME_INFORMATION: u32 = 0x70;
const AT_DATA: u32 = 0x80;
const AT_END: u32 = 0xFFFF_FFFF;

/// One data run: `len` clusters at `lcn`, or a hole (`lcn == None`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Run {
    lcn: Option<u64>,
    len: u64,
}

pub(crate) struct BootSector {
    pub info: FsInfo,
    bps: u64,
    cluster: u64,
    total_sectors: u64,
    clusters: u64,
    mft_mirr_lcn: u64,
    record_size: u64,
    /// `$MFT`'s own data runs, or why they could not be read.
    mft: Result<Vec<Run>, String>,
}

/// An unnamed `$DATA` (or other) attribute's value: resident bytes or runs.
enum Value {
    Resident(Vec<u8>),
    NonResident { runs: Vec<Run>, data_size: u64 },
}

pub(crate) fn probe(dev: &Dev) -> Result<Option<BootSector>, Fail> {
    let Some(b) = dev.peek(0, 512)? else {
        return Ok(None);
    };
    if &b[3..11] != b"NTFS    " {
        return Ok(None);
    }
    ensure!(le16(&b, 510) == 0xAA55, "boot signature missing");
    let bps = u64::from(le16(&b, 0x0B));
    ensure!(
        bps.is_power_of_two() && (256..=4096).contains(&bps),
        "{bps} bytes per sector"
    );
    // Boot sector 0x0D: above 0x80 the value is a negative power of two (large clusters).
    let spc_raw = b[0x0D];
    let spc = if spc_raw <= 0x80 {
        u64::from(spc_raw)
    } else {
        let shift = 256 - u32::from(spc_raw);
        ensure!(shift <= 20, "sectors-per-cluster code {spc_raw:#x}");
        1u64 << shift
    };
    ensure!(spc.is_power_of_two(), "{spc} sectors per cluster");
    let cluster = bps * spc;
    ensure!(cluster <= 2 << 20, "{cluster}-byte clusters");
    let total_sectors = le64(&b, 0x28);
    let fs_bytes = mul(total_sectors, bps, "volume size")?;
    ensure!(
        total_sectors > 0 && fs_bytes <= dev.size,
        "volume of {total_sectors} sectors does not fit the {}-byte partition",
        dev.size
    );
    let clusters = total_sectors / spc;
    let mft_lcn = le64(&b, 0x30);
    let mft_mirr_lcn = le64(&b, 0x38);
    ensure!(
        mft_lcn < clusters && mft_mirr_lcn < clusters,
        "$MFT at cluster {mft_lcn} or $MFTMirr at {mft_mirr_lcn} outside {clusters} clusters"
    );
    // 0x40: positive = clusters per record, negative = log2 of bytes.
    let rec_raw = b[0x40] as i8;
    let record_size = if rec_raw > 0 {
        u64::from(rec_raw as u8) * cluster
    } else {
        let shift = u32::from(rec_raw.unsigned_abs());
        ensure!(shift <= 16, "MFT record size code {rec_raw}");
        1u64 << shift
    };
    ensure!(
        record_size.is_power_of_two() && (FIXUP_STRIDE as u64..=64 << 10).contains(&record_size),
        "MFT record size {record_size}"
    );
    let serial = le64(&b, 0x48);
    let mut bs = BootSector {
        info: FsInfo {
            kind: FsKind::Ntfs,
            label: None,
            uuid: Some(format!("{serial:016X}")),
            block_size: cluster as u32,
        },
        bps,
        cluster,
        total_sectors,
        clusters,
        mft_mirr_lcn,
        record_size,
        mft: Err(String::new()),
    };
    bs.mft = match bs.read_mft_runs(dev, mft_lcn) {
        Ok(runs) => Ok(runs),
        Err(Fail::Bad(r)) => Err(r),
        Err(Fail::Io(e)) => return Err(Fail::Io(e)),
    };
    if let Ok(runs) = &bs.mft {
        // $Volume is record 3; its $VOLUME_NAME is the label (a failure here only
        // loses the label; `used` reads record 3 again and reports it).
        if let Ok(rec) = bs.record(dev, runs, 3) {
            if let Ok(Some(Value::Resident(v))) = bs.attribute(&rec, AT_VOLUME_NAME) {
                bs.info.label = utf16_label(&v, v.len() / 2);
            }
        }
    }
    Ok(Some(bs))
}

impl BootSector {
    /// Record 0 sits at the boot sector's `$MFT` cluster; its unnamed `$DATA` maps the
    /// rest of the MFT.
    fn read_mft_runs(&self, dev: &Dev, mft_lcn: u64) -> Result<Vec<Run>, Fail> {
        let raw = dev.read(
            mft_lcn * self.cluster,
            self.record_size as usize,
            "$MFT record 0",
        )?;
        let rec = self.fixup(raw, 0)?;
        ensure!(
            self.find_attr(&rec, AT_ATTRIBUTE_LIST)?.is_none(),
            "$MFT has an attribute list (very fragmented MFT); not supported"
        );
        match self.attribute(&rec, AT_DATA)? {
            Some(Value::NonResident { runs, data_size }) => {
                ensure!(
                    runs.first().and_then(|r| r.lcn) == Some(mft_lcn),
                    "$MFT's data does not start at the boot sector's $MFT cluster"
                );
                ensure!(runs.iter().all(|r| r.lcn.is_some()), "$MFT has a hole");
                let mapped: u64 = runs.iter().map(|r| r.len).sum();
                ensure!(
                    data_size >= 16 * self.record_size && data_size <= mapped * self.cluster,
                    "$MFT data size {data_size}"
                );
                Ok(runs)
            }
            _ => bad!("$MFT has no non-resident $DATA"),
        }
    }

    /// Reads MFT record `n` through the MFT's runs and applies its fixups.
    fn record(&self, dev: &Dev, mft: &[Run], n: u64) -> Result<Vec<u8>, Fail> {
        let raw = self.read_runs(dev, mft, n * self.record_size, self.record_size as usize)?;
        self.fixup(raw, n)
    }

    /// Bytes `[off, off + len)` of a non-resident value (`len` ≤ MAX_READ).
    fn read_runs(&self, dev: &Dev, runs: &[Run], off: u64, len: usize) -> Result<Vec<u8>, Fail> {
        let mut out = Vec::with_capacity(len);
        let mut run_start = 0u64; // byte offset of the current run in the value
        for r in runs {
            let run_bytes = r.len.saturating_mul(self.cluster);
            let want = off + out.len() as u64;
            if out.len() == len {
                break;
            }
            if want < run_start.saturating_add(run_bytes) {
                let inside = want - run_start;
                let n = (run_bytes - inside).min((len - out.len()) as u64) as usize;
                match r.lcn {
                    Some(lcn) => {
                        out.extend(dev.read(lcn * self.cluster + inside, n, "MFT data")?)
                    }
                    None => out.resize(out.len() + n, 0),
                }
            }
            run_start = run_start.saturating_add(run_bytes);
        }
        ensure!(out.len() == len, "read at {off} runs past the mapped data");
        Ok(out)
    }

    /// "Fixup": the last two bytes of every 512-byte stride were replaced by the update
    /// sequence number on write; check each and put the saved bytes back. A mismatch
    /// means a torn write.
    fn fixup(&self, mut rec: Vec<u8>, n: u64) -> Result<Vec<u8>, Fail> {
        ensure!(&rec[0..4] == b"FILE", "MFT record {n} has no FILE magic");
        let usa_ofs = usize::from(le16(&rec, 4));
        let usa_count = usize::from(le16(&rec, 6));
        let strides = rec.len() / FIXUP_STRIDE;
        ensure!(
            usa_count == strides + 1 && usa_ofs % 2 == 0 && usa_ofs + 2 * usa_count <= rec.len(),
            "MFT record {n}: update sequence array ({usa_count} at {usa_ofs}) does not fit"
        );
        let usn = le16(&rec, usa_ofs);
        for i in 1..usa_count {
            let end = i * FIXUP_STRIDE - 2;
            ensure!(
                le16(&rec, end) == usn,
                "MFT record {n}: fixup {i} does not match (torn write)"
            );
            let saved = usa_ofs + 2 * i;
            rec.copy_within(saved..saved + 2, end);
        }
        ensure!(le16(&rec, 0x16) & 1 != 0, "MFT record {n} is not in use");
        Ok(rec)
    }

    /// Offset of the first unnamed attribute of `ty` in a fixed-up record.
    fn find_attr(&self, rec: &[u8], ty: u32) -> Result<Option<usize>, Fail> {
        let used = (le32(rec, 0x18) as usize).min(rec.len());
        let mut at = usize::from(le16(rec, 0x14));
        // Each attribute is at least 16 bytes, so this walks at most used/16 of them.
        loop {
            ensure!(at + 8 <= used, "attribute list runs past the record");
            let t = le32(rec, at);
            if t == AT_END {
                return Ok(None);
            }
            let len = le32(rec, at + 4) as usize;
            ensure!(
                len >= 16 && len & 7 == 0 && at + len <= used,
                "attribute of length {len} at {at}"
            );
            if t == ty && rec[at + 9] == 0 {
                return Ok(Some(at));
            }
            at += len;
        }
    }

    /// "Attribute header": resident value bytes, or decoded runs of a non-resident one.
    fn attribute(&self, rec: &[u8], ty: u32) -> Result<Option<Value>, Fail> {
        let Some(at) = self.find_attr(rec, ty)? else {
            return Ok(None);
        };
        let len = le32(rec, at + 4) as usize;
        let a = &rec[at..at + len];
        if a[8] == 0 {
            ensure!(len >= 0x18, "resident attribute too short");
            let vlen = le32(a, 0x10) as usize;
            let voff = usize::from(le16(a, 0x14));
            ensure!(
                voff.checked_add(vlen).is_some_and(|e| e <= len),
                "resident value outside its attribute"
            );
            return Ok(Some(Value::Resident(a[voff..voff + vlen].to_vec())));
        }
        ensure!(len >= 0x40, "non-resident attribute too short");
        let lowest = le64(a, 0x10);
        let highest = le64(a, 0x18);
        ensure!(
            lowest == 0,
            "attribute starts at VCN {lowest} (split over records)"
        );
        let runs = self.decode_runs(a, usize::from(le16(a, 0x20)), highest)?;
        Ok(Some(Value::NonResident {
            runs,
            data_size: le64(a, 0x30),
        }))
    }

    /// "Data runs": a header byte (low nibble: length size, high nibble: offset size),
    /// the length, then the LCN as a signed delta from the previous run's; 0 ends.
    fn decode_runs(&self, a: &[u8], mut at: usize, highest_vcn: u64) -> Result<Vec<Run>, Fail> {
        let mut runs = Vec::new();
        let mut vcn = 0u64;
        let mut lcn = 0i64;
        // Every run takes at least two bytes of the attribute, so this ends.
        loop {
            ensure!(at < a.len(), "data runs run past their attribute");
            let h = a[at];
            if h == 0 {
                break;
            }
            let ls = usize::from(h & 0xF);
            let os = usize::from(h >> 4);
            ensure!((1..=8).contains(&ls) && os <= 8, "data run header {h:#x}");
            ensure!(at + 1 + ls + os <= a.len(), "data run past its attribute");
            let len = le_uint(&a[at + 1..at + 1 + ls]);
            ensure!(len > 0, "zero-length data run");
            let lcn_here = if os == 0 {
                None
            } else {
                let delta = le_int(&a[at + 1 + ls..at + 1 + ls + os]);
                lcn = match lcn.checked_add(delta) {
                    Some(l) if l >= 0 => l,
                    _ => bad!("data run LCN goes negative or overflows"),
                };
                let l = lcn as u64;
                ensure!(
                    l.checked_add(len).is_some_and(|e| e <= self.clusters),
                    "data run {l}+{len} past the {} clusters of the volume",
                    self.clusters
                );
                Some(l)
            };
            runs.push(Run { lcn: lcn_here, len });
            vcn = match vcn.checked_add(len) {
                Some(v) if v <= highest_vcn.saturating_add(1) => v,
                _ => bad!("data runs map more than VCN 0..={highest_vcn}"),
            };
            at += 1 + ls + os;
        }
        ensure!(
            vcn == highest_vcn.saturating_add(1),
            "data runs map {vcn} clusters, attribute says {}",
            highest_vcn.saturating_add(1)
        );
        Ok(runs)
    }

    fn add_runs(&self, list: &mut ExtentList, runs: &[Run]) {
        for r in runs {
            if let Some(lcn) = r.lcn {
                list.add(lcn * self.cluster, r.len * self.cluster);
            }
        }
    }

    pub fn used(&self, dev: &Dev) -> Result<ExtentList, Fail> {
        let mft = match &self.mft {
            Ok(r) => r,
            Err(reason) => bad!("{reason}"),
        };
        let mut list = ExtentList::new(dev.size);
        // $Boot (the boot sector and its code) is cluster 0 onward, and the backup boot
        // sector is the sector after the volume, i.e. the end of the partition.
        list.add(0, self.bps);
        list.add(self.total_sectors * self.bps, self.bps);
        list.add(dev.size.saturating_sub(self.bps), self.bps);
        self.add_runs(&mut list, mft);

        // $MFTMirr (record 1): its runs, and at least the boot sector's mirror cluster.
        let mirr = self.record(dev, mft, 1)?;
        if let Some(Value::NonResident { runs, .. }) = self.attribute(&mirr, AT_DATA)? {
            self.add_runs(&mut list, &runs);
        }
        let mirr_bytes = (4 * self.record_size).max(self.cluster);
        ensure!(
            (self.mft_mirr_lcn * self.cluster).saturating_add(mirr_bytes)
                <= self.clusters * self.cluster,
            "$MFTMirr runs past the volume"
        );
        list.add(self.mft_mirr_lcn * self.cluster, mirr_bytes);

        // $Volume (record 3): a dirty volume's $Bitmap may not match its files.
        let vol = self.record(dev, mft, 3)?;
        if let Some(Value::Resident(v)) = self.attribute(&vol, AT_VOLUME_INFORMATION)? {
            ensure!(v.len() >= 12, "$VOLUME_INFORMATION too short");
            ensure!(
                le16(&v, 0x0A) & 1 == 0,
                "volume is marked dirty (run chkdsk); $Bitmap may be stale"
            );
        } else {
            bad!("$Volume has no $VOLUME_INFORMATION");
        }

        // $Bitmap (record 6): one bit per cluster, LSB first.
        let bm = self.record(dev, mft, 6)?;
        ensure!(
            self.find_attr(&bm, AT_ATTRIBUTE_LIST)?.is_none(),
            "$Bitmap has an attribute list; not supported"
        );
        let need = self.clusters.div_ceil(8);
        match self.attribute(&bm, AT_DATA)? {
            Some(Value::Resident(v)) => {
                ensure!(
                    v.len() as u64 >= need,
                    "$Bitmap of {} bytes, need {need}",
                    v.len()
                );
                add_bitmap(&mut list, &v, self.clusters, 0, self.cluster);
            }
            Some(Value::NonResident { runs, data_size }) => {
                ensure!(
                    data_size >= need,
                    "$Bitmap of {data_size} bytes, need {need}"
                );
                ensure!(runs.iter().all(|r| r.lcn.is_some()), "$Bitmap has a hole");
                self.add_runs(&mut list, &runs);
                let mut byte = 0u64;
                while byte < need {
                    let len = (need - byte).min(MAX_READ as u64);
                    let buf = self.read_runs(dev, &runs, byte, len as usize)?;
                    let nbits = (len * 8).min(self.clusters - byte * 8);
                    add_bitmap(
                        &mut list,
                        &buf,
                        nbits,
                        byte * 8 * self.cluster,
                        self.cluster,
                    );
                    byte += len;
                }
            }
            None => bad!("$Bitmap has no $DATA"),
        }
        Ok(list)
    }
}

fn le_uint(b: &[u8]) -> u64 {
    b.iter()
        .rev()
        .fold(0u64, |acc, &x| (acc << 8) | u64::from(x))
}

/// Little-endian two's-complement of 1..=8 bytes.
fn le_int(b: &[u8]) -> i64 {
    let v = le_uint(b);
    let bits = 8 * b.len() as u32;
    if bits < 64 && v >> (bits - 1) & 1 == 1 {
        (v | (!0u64 << bits)) as i64
    } else {
        v as i64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_offsets_are_signed_little_endian() {
        assert_eq!(le_int(&[0xFF]), -1);
        assert_eq!(le_int(&[0x00, 0x80]), -32768);
        assert_eq!(le_int(&[0x34, 0x12]), 0x1234);
        assert_eq!(le_uint(&[0x34, 0x12, 0x00]), 0x1234);
    }
}
