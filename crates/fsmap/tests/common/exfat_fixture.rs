//! Adds files to a freshly made exFAT image. exfatprogs has no copy-in tool and the
//! host kernel has no exFAT driver, so this writes the directory entry sets by the
//! spec (§7.4 File, §7.6 Stream Extension, §7.7 File Name, §6.3.3 SetChecksum,
//! §7.6.4 NameHash) and marks the clusters in the allocation bitmap. fsck.exfat then
//! checks the result, so a mistake here fails the test instead of hiding.
//!
//! Even-numbered files are contiguous with NoFatChain; odd-numbered ones take every
//! other free cluster and are linked through the FAT, so both kinds of allocation are
//! covered. Names must be upper-case ASCII (the up-case table is then the identity).

use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;
use std::path::Path;

pub struct Placed {
    pub name: String,
    pub data: Vec<u8>,
    /// Byte offsets of the file's clusters, in order.
    pub clusters: Vec<u64>,
    pub cluster_size: u64,
}

fn le32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
}

pub fn add_files(img: &Path, files: &[(String, Vec<u8>)]) -> Vec<Placed> {
    let f = OpenOptions::new().read(true).write(true).open(img).unwrap();
    let mut boot = [0u8; 512];
    f.read_exact_at(&mut boot, 0).unwrap();
    let bps = 1u64 << boot[0x6C];
    let cluster = bps << boot[0x6D];
    let fat_off = u64::from(le32(&boot, 0x50)) * bps;
    let heap = u64::from(le32(&boot, 0x58)) * bps;
    let count = u64::from(le32(&boot, 0x5C));
    let root = u64::from(le32(&boot, 0x60));
    let at = |c: u64| heap + (c - 2) * cluster;

    let mut dir = vec![0u8; cluster as usize];
    f.read_exact_at(&mut dir, at(root)).unwrap();
    let bm_entry = dir
        .chunks_exact(32)
        .find(|e| e[0] == 0x81)
        .expect("bitmap entry");
    let bm_first = u64::from(le32(bm_entry, 20));
    let bm_len = u64::from_le_bytes(bm_entry[24..32].try_into().unwrap());
    assert!(
        bm_len <= cluster,
        "fixture handles a one-cluster bitmap only"
    );
    let mut bitmap = vec![0u8; bm_len as usize];
    f.read_exact_at(&mut bitmap, at(bm_first)).unwrap();
    let mut free_end = dir
        .chunks_exact(32)
        .position(|e| e[0] == 0)
        .expect("room in root")
        * 32;

    let is_used = |bm: &[u8], c: u64| bm[((c - 2) / 8) as usize] >> ((c - 2) % 8) & 1 == 1;
    let mut next = 2u64;
    let mut placed = Vec::new();
    for (i, (name, data)) in files.iter().enumerate() {
        let n = (data.len() as u64).div_ceil(cluster);
        let chained = i % 2 == 1;
        let mut clusters = Vec::new();
        while (clusters.len() as u64) < n {
            assert!(next < count + 2, "exFAT fixture image full");
            if !is_used(&bitmap, next) {
                clusters.push(next);
                // A chained file skips a cluster after each one it takes.
                if chained {
                    next += 1;
                }
            } else if !chained && !clusters.is_empty() {
                // Contiguous files restart after a used cluster.
                clusters.clear();
            }
            next += 1;
        }
        for (k, &c) in clusters.iter().enumerate() {
            bitmap[((c - 2) / 8) as usize] |= 1 << ((c - 2) % 8);
            let start = k * cluster as usize;
            let end = (start + cluster as usize).min(data.len());
            let mut buf = vec![0u8; cluster as usize];
            buf[..end - start].copy_from_slice(&data[start..end]);
            f.write_all_at(&buf, at(c)).unwrap();
            if chained {
                let nextc = clusters.get(k + 1).map_or(0xFFFF_FFFF, |&x| x as u32);
                f.write_all_at(&nextc.to_le_bytes(), fat_off + c * 4)
                    .unwrap();
            }
        }

        let units: Vec<u16> = name.encode_utf16().collect();
        assert!(name.chars().all(|c| !c.is_ascii_lowercase()) && units.len() <= 30);
        let name_entries = units.len().div_ceil(15);
        let mut set = vec![0u8; 32 * (2 + name_entries)];
        set[0] = 0x85;
        set[1] = (1 + name_entries) as u8;
        set[4] = 0x20; // archive
        let stamp: u32 = (1 << 16) | (1 << 21); // 1980-01-01 00:00:00
        for off in [8, 12, 16] {
            set[off..off + 4].copy_from_slice(&stamp.to_le_bytes());
        }
        let s = &mut set[32..64];
        s[0] = 0xC0;
        // AllocationPossible, plus NoFatChain for contiguous files.
        s[1] = if chained || data.is_empty() {
            0x01
        } else {
            0x03
        };
        s[3] = units.len() as u8;
        let mut hash = 0u16;
        for u in &units {
            for b in u.to_le_bytes() {
                hash = hash.rotate_right(1).wrapping_add(u16::from(b));
            }
        }
        s[4..6].copy_from_slice(&hash.to_le_bytes());
        s[8..16].copy_from_slice(&(data.len() as u64).to_le_bytes());
        let first = clusters.first().map_or(0, |&c| c as u32);
        s[20..24].copy_from_slice(&first.to_le_bytes());
        s[24..32].copy_from_slice(&(data.len() as u64).to_le_bytes());
        for (k, chunk) in units.chunks(15).enumerate() {
            let e = &mut set[64 + 32 * k..96 + 32 * k];
            e[0] = 0xC1;
            for (j, u) in chunk.iter().enumerate() {
                e[2 + 2 * j..4 + 2 * j].copy_from_slice(&u.to_le_bytes());
            }
        }
        let mut sum = 0u16;
        for (j, &b) in set.iter().enumerate() {
            if j == 2 || j == 3 {
                continue;
            }
            sum = sum.rotate_right(1).wrapping_add(u16::from(b));
        }
        set[2..4].copy_from_slice(&sum.to_le_bytes());
        assert!(
            free_end + set.len() <= dir.len(),
            "root directory cluster full"
        );
        dir[free_end..free_end + set.len()].copy_from_slice(&set);
        free_end += set.len();

        placed.push(Placed {
            name: name.clone(),
            data: data.clone(),
            clusters: clusters.iter().map(|&c| at(c)).collect(),
            cluster_size: cluster,
        });
    }
    f.write_all_at(&dir, at(root)).unwrap();
    f.write_all_at(&bitmap, at(bm_first)).unwrap();
    placed
}
