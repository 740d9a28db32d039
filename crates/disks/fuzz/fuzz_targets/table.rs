//! Fuzzes `disks::table`: the input is a whole disk. `read_table` with 512- and
//! 4096-byte sectors must return a table or an error, never panic or hang; a table it
//! returns must lie inside the disk with no overlapping partitions, and so must its
//! table areas. `relocate_gpt` then fits it to a smaller and a larger disk, as restore
//! does, and what it writes must read back. Seeds in corpus/table come from real
//! tables (fuzz/seeds.sh).
#![no_main]

use disks::table::{read_table, relocate_gpt, table_areas, TableKind};
use std::io::Cursor;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let size = data.len() as u64;
    for ss in [512u32, 4096] {
        let Ok(t) = read_table(&mut Cursor::new(data), size, ss) else {
            continue;
        };
        let mut parts: Vec<_> = t.partitions.iter().map(|p| (p.start, p.end())).collect();
        parts.sort();
        for w in parts.windows(2) {
            assert!(w[0].1 <= w[1].0, "overlapping partitions accepted");
        }
        assert!(parts.iter().all(|&(s, e)| s < e && e <= size));
        for (offset, len, what) in table_areas(&t, size) {
            assert!(offset + len <= size, "{what} past the end of the disk");
        }
        if t.kind == TableKind::None {
            continue;
        }
        let last = parts.last().map_or(0, |p| p.1);
        for new_size in [last + 64 * u64::from(ss), size + 8 * u64::from(ss)] {
            let mut disk = Cursor::new(data.to_vec());
            disk.get_mut().resize(new_size.max(size) as usize, 0);
            if relocate_gpt(&mut disk, size, new_size, ss, true).is_ok() {
                let back = read_table(&mut Cursor::new(disk.get_ref()), new_size, ss)
                    .expect("a relocated table reads back");
                assert_eq!(back.kind, t.kind);
                assert_eq!(back.partitions.len(), t.partitions.len());
            }
        }
    }
});
