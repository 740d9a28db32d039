//! What of a disk to capture: the partition-table areas in full, each partition's used
//! blocks as its filesystem's own metadata says (`fsmap`), unknown partitions whole.
//! Also what the manifest records about the table and each partition (FORMAT.md §5.2).

use disks::table::{
    other_sector_sizes, read_table, say_counted_otherwise, table_areas, PartitionTable, TableKind,
};
use fsmap::{Method, Slice};
use imaging::{Event, Extent, Sink};
use serde::{Deserialize, Serialize};
use std::fs::File;

/// How a partition was captured.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Captured {
    /// Only the blocks its filesystem marks used.
    UsedBlocks,
    /// Every byte (all-zero chunks elided), because no parser vouched for less.
    Whole,
}

/// A partition as the manifest records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionRecord {
    #[serde(flatten)]
    pub part: disks::table::Partition,
    /// `ext4`, `fat32`, `ntfs`, ... or null when unrecognized.
    pub filesystem: Option<String>,
    pub label: Option<String>,
    pub uuid: Option<String>,
    /// Bytes the capture reads for this partition.
    pub used_bytes: u64,
    pub captured: Captured,
    /// Why it was captured whole.
    pub reason: Option<String>,
}

/// The capture plan of a disk.
#[derive(Debug, Clone, Default)]
pub struct Layout {
    pub extents: Vec<Extent>,
    pub table: Option<serde_json::Value>,
    pub partitions: Vec<serde_json::Value>,
    /// The sector size the partition table counts in, when it is not the device's (a
    /// table written for 512-byte sectors read through a 4 KiB USB adapter): the disk's
    /// own, which the image records (`disks::table::read_table`).
    pub table_sector_size: Option<u32>,
}

/// Plans the capture of a disk of `size` bytes with `sector_size`-byte logical sectors.
/// Never fails: anything it cannot read is captured whole, with a warning saying why.
pub fn plan(disk: &File, size: u64, sector_size: u32, sink: &mut dyn Sink) -> Layout {
    let table = match read_counted_table(disk, size, sector_size) {
        Ok(t) => t,
        Err(e) => {
            sink.event(Event::Warning(format!(
                "the partition table cannot be read ({e}); capturing the whole disk"
            )));
            return whole(size);
        }
    };
    for w in &table.warnings {
        sink.event(Event::Warning(w.clone()));
    }
    if table.kind == TableKind::None {
        // No table: a filesystem on the whole disk ("superfloppy"), or unknown content.
        let (extents, rec) = partition_extents(disk, 0, size, None, sink);
        let mut layout = Layout {
            extents,
            ..Default::default()
        };
        if rec.filesystem.is_some() {
            layout.partitions = vec![serde_json::to_value(&rec).unwrap_or_default()];
        }
        return layout;
    }
    let mut extents: Vec<Extent> = table_areas(&table, size)
        .into_iter()
        .map(|(o, l, _)| Extent::new(o, l))
        .collect();
    let mut partitions = Vec::new();
    for p in &table.partitions {
        let (ext, rec) = partition_extents(disk, p.start, p.size, Some(p.clone()), sink);
        extents.extend(ext);
        partitions.push(serde_json::to_value(&rec).unwrap_or_default());
    }
    Layout {
        extents,
        table: serde_json::to_value(&table).ok(),
        partitions,
        table_sector_size: (table.sector_size != sector_size).then_some(table.sector_size),
    }
}

/// The partition table, read with the device's `sector_size`, or an MBR read with the
/// other common sector size (512 or 4096 bytes) when only that size puts file systems
/// where its partitions are, with a warning. An MBR, unlike a GPT (which
/// `disks::table::read_table` checks itself), carries no sign of its sector size; the
/// file systems where it points are the sign. That is a disk partitioned inside a USB
/// enclosure that presents 4 KiB sectors and then connected directly (or the reverse):
/// read with the device's size, every partition points at the wrong bytes.
pub(crate) fn read_counted_table(
    disk: &File,
    size: u64,
    sector_size: u32,
) -> Result<PartitionTable, disks::table::TableError> {
    let mut reader = disk;
    let mine = read_table(&mut reader, size, sector_size);
    match &mine {
        Ok(t) if t.kind == TableKind::Mbr && file_systems(disk, t) == 0 => {}
        // Unreadable with the device's size: perhaps an MBR of the other size.
        Err(_) => {}
        _ => return mine,
    }
    for alt in other_sector_sizes(sector_size) {
        let Ok(mut t) = read_table(&mut reader, size, alt) else {
            continue;
        };
        if t.kind != TableKind::Mbr || file_systems(disk, &t) == 0 {
            continue;
        }
        say_counted_otherwise(
            &mut t,
            sector_size,
            " (its partitions hold file systems only so)",
        );
        return Ok(t);
    }
    mine
}

/// How many of `t`'s partitions hold a file system fsmap recognizes.
fn file_systems(disk: &File, t: &PartitionTable) -> usize {
    t.partitions
        .iter()
        .filter(|p| {
            matches!(
                fsmap::detect(&Slice::new(disk, p.start, p.size), p.size),
                Ok(Some(_))
            )
        })
        .count()
}

fn whole(size: u64) -> Layout {
    Layout {
        extents: vec![Extent::new(0, size)],
        ..Default::default()
    }
}

/// The extents (disk offsets) to capture for one partition, and its manifest record.
fn partition_extents(
    disk: &File,
    start: u64,
    len: u64,
    part: Option<disks::table::Partition>,
    sink: &mut dyn Sink,
) -> (Vec<Extent>, PartitionRecord) {
    let label = part
        .as_ref()
        .map(|p| format!("partition {}", p.index))
        .unwrap_or_else(|| "the disk".into());
    let slice = Slice::new(disk, start, len);
    let map = fsmap::used_map(&slice, len);
    let part = part.unwrap_or(disks::table::Partition {
        index: 0,
        start,
        size: len,
        type_id: String::new(),
        type_name: "whole disk".into(),
        part_guid: None,
        name: None,
        attributes: 0,
        bootable: false,
        logical: false,
    });
    match map {
        Ok(m) => {
            let (captured, reason) = match &m.method {
                Method::UsedBlocks => (Captured::UsedBlocks, None),
                Method::Whole { reason } => {
                    sink.event(Event::Warning(format!(
                        "{label} is captured whole: {reason}"
                    )));
                    (Captured::Whole, Some(reason.clone()))
                }
            };
            let extents = m
                .extents
                .iter()
                .map(|e| Extent::new(start + e.offset, e.len))
                .collect();
            let rec = PartitionRecord {
                part,
                filesystem: m.fs.as_ref().map(|f| f.kind.name().to_string()),
                label: m.fs.as_ref().and_then(|f| f.label.clone()),
                uuid: m.fs.as_ref().and_then(|f| f.uuid.clone()),
                used_bytes: m.used_bytes,
                captured,
                reason,
            };
            (extents, rec)
        }
        Err(e) => {
            let reason = format!("reading its metadata failed: {e}");
            sink.event(Event::Warning(format!(
                "{label} is captured whole: {reason}"
            )));
            let rec = PartitionRecord {
                part,
                filesystem: None,
                label: None,
                uuid: None,
                used_bytes: len,
                captured: Captured::Whole,
                reason: Some(reason),
            };
            (vec![Extent::new(start, len)], rec)
        }
    }
}

/// The partition table recorded in a manifest, if any.
pub fn recorded_table(m: &imaging::Manifest) -> Option<PartitionTable> {
    m.partition_table
        .as_ref()
        .and_then(|v| serde_json::from_value(v.clone()).ok())
}

/// The partitions recorded in a manifest.
pub fn recorded_partitions(m: &imaging::Manifest) -> Vec<PartitionRecord> {
    m.partitions
        .iter()
        .filter_map(|v| serde_json::from_value(v.clone()).ok())
        .collect()
}
