//! Restore in coreos-installer's order: the caller has refused bad targets; here the
//! table areas are zeroed first, every other chunk is verified then written, the
//! table areas are written last, then fsync. On failure the table areas are zeroed
//! again so a half-written disk can never boot (DESIGN.md "Restore").
//!
//! Delta restore: before a chunk is written, the target's bytes at that place are read,
//! masked as capture masked the source, and hashed; an equal chunk is not written (nor
//! even read from the store), and of a chunk that differs only the 4 KiB blocks that
//! differ are written. Reading and hashing run on the worker threads, in
//! parallel with other chunks' decompression. A resume marker (FORMAT.md §8) written
//! into the zeroed tail area tells a rerun that this target holds a half-finished
//! restore of this image, so the rerun can be a delta restore that writes only what is
//! missing.

use crate::error::{Error, Result};
use crate::extent::{clip, Extent};
use crate::format::*;
use crate::io::{is_zero, IoBuf, ReadAt, WriteAt, DIRECT_ALIGN};
use crate::pipeline::{read_masked, run};
use crate::sink::{Event, Progress, Sink, Ticker};
use crate::store::{Chunk, Image, Store};
use std::time::Instant;

/// The first MiB: MBR, GPT header and entries, and the boot loader gap.
pub const FIRST_MIB: Extent = Extent::new(0, 1 << 20);

/// A disk that can be read and written at offsets (delta restore reads the target).
pub trait ReadWriteAt: ReadAt + WriteAt {}
impl<T: ReadAt + WriteAt + ?Sized> ReadWriteAt for T {}

/// How to restore.
#[derive(Debug, Clone)]
pub struct RestoreOptions {
    /// Ranges written last (and zeroed first, and zeroed again on failure): the first
    /// MiB and the backup GPT for a whole-disk restore; a partition's first MiB.
    pub deferred: Vec<Extent>,
    /// Only bytes inside this range are written (one partition); None: the whole image.
    pub window: Option<Extent>,
    /// Where the window's first byte goes on the target (one partition restored into a
    /// partition that starts elsewhere); None: at the same offset as on the source.
    pub dest_offset: Option<u64>,
    /// The target is known to read as zeros (a file just created), so all-zero chunks
    /// need no write.
    pub target_is_zeroed: bool,
    /// Skip chunks the target already holds (compared masked, by hash).
    pub delta: bool,
    /// Image offset (inside a deferred range) where the resume marker is kept while the
    /// restore runs; None: no marker.
    pub marker_at: Option<u64>,
    /// Worker threads (0: twice the cores: workers also wait on reads).
    pub threads: usize,
}

impl Default for RestoreOptions {
    fn default() -> Self {
        RestoreOptions {
            deferred: vec![FIRST_MIB],
            window: None,
            dest_offset: None,
            target_is_zeroed: false,
            delta: false,
            marker_at: None,
            threads: 0,
        }
    }
}

/// What a restore did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RestoreReport {
    /// Chunks in the image (within the window).
    pub chunks: u64,
    /// Stored bytes read from the store (compressed).
    pub read_bytes: u64,
    /// Chunks decompressed and hashed.
    pub hashed_chunks: u64,
    /// Chunks written, and their bytes (table-area chunks included).
    pub written_chunks: u64,
    pub written_bytes: u64,
    /// Of the written chunks, those in the table areas (always rewritten).
    pub table_chunks: u64,
    /// All-zero chunks not written because the target already reads as zeros.
    pub skipped_chunks: u64,
    /// Delta: chunks not written because the target already held them.
    pub unchanged_chunks: u64,
    /// Delta: bytes read from the target to compare.
    pub target_read_bytes: u64,
    pub elapsed_ms: u64,
}

/// The resume marker: says "a restore of the image with this root hash is in progress
/// here" (FORMAT.md §8). It is not a partition table or boot sector.
pub fn resume_marker(image: &Image) -> Vec<u8> {
    format!(
        "IMPRINT RESTORE IN PROGRESS\nimage={}\nroot={}\n",
        image.manifest.name, image.manifest.root_hash
    )
    .into_bytes()
}

/// True when `target` carries the resume marker of `image` at `at`.
pub fn has_resume_marker(target: &dyn ReadAt, image: &Image, at: u64) -> bool {
    let want = resume_marker(image);
    let mut got = vec![0u8; want.len()];
    target.read_exact_at(&mut got, at).is_ok() && got == want
}

enum Done {
    /// The target already holds it.
    Unchanged(u64, u64),
    /// Chunk `idx` to write.
    Write {
        idx: u64,
        /// Decoded and verified content; None: all zeros.
        data: Option<Chunk>,
        /// Its size in the store, and the target bytes a delta compare read.
        stored: u64,
        target_read: u64,
        /// Delta: the blocks where the target differs from it (image offsets); only
        /// these are written. None: the whole chunk.
        runs: Option<Vec<Extent>>,
    },
}

/// Restores `image` onto `target`, which holds `target_size` bytes.
pub fn restore(
    store: &Store,
    image: &Image,
    target: &dyn ReadWriteAt,
    target_size: u64,
    opts: &RestoreOptions,
    sink: &mut dyn Sink,
) -> Result<RestoreReport> {
    let started = Instant::now();
    let map = &image.map;
    let window = opts.window.unwrap_or(Extent::new(0, map.disk_size));
    let place = Placement {
        from: window.offset,
        to: opts.dest_offset.unwrap_or(window.offset),
    };
    let need = place.at(window.end());
    if target_size < need {
        return Err(Error::TargetTooSmall {
            need,
            have: target_size,
        });
    }
    let deferred: Vec<Extent> = opts
        .deferred
        .iter()
        .filter_map(|d| d.intersect(&window))
        .collect();
    let marker = opts
        .marker_at
        .filter(|m| {
            deferred
                .iter()
                .any(|d| d.offset <= *m && m + 4096 <= d.end())
        })
        .map(|m| (place.at(m), resume_marker(image)));

    // Zero the table areas before anything else: from here until the very end a power
    // cut leaves a disk with no partition table rather than a half-written bootable one.
    // The marker goes into the zeroed area so a rerun knows to resume.
    sink.event(Event::Phase("clearing partition table areas"));
    let wipe = |target: &dyn ReadWriteAt| -> Result<()> {
        for d in &deferred {
            write_zeros(target, place.extent(*d))?;
        }
        if let Some((at, m)) = &marker {
            target
                .write_all_at(m, *at)
                .map_err(|source| Error::WriteTarget {
                    offset: *at,
                    source,
                })?;
        }
        target
            .sync()
            .map_err(|source| Error::WriteTarget { offset: 0, source })
    };
    wipe(target)?;

    let job = Job {
        store,
        image,
        target,
        window,
        place,
        deferred: &deferred,
        opts,
        marker: marker
            .as_ref()
            .map(|(at, m)| Extent::new(*at, m.len() as u64)),
    };
    match job.run(sink, started) {
        Ok(report) => Ok(report),
        Err(cause) => {
            let wiped = wipe(target).is_ok();
            Err(Error::RestoreAborted {
                at_offset: error_offset(&cause),
                cause: Box::new(cause),
                wiped,
            })
        }
    }
}

struct Job<'a> {
    store: &'a Store,
    image: &'a Image,
    target: &'a dyn ReadWriteAt,
    window: Extent,
    place: Placement,
    deferred: &'a [Extent],
    opts: &'a RestoreOptions,
    marker: Option<Extent>,
}

impl Job<'_> {
    fn run(&self, sink: &mut dyn Sink, started: Instant) -> Result<RestoreReport> {
        let map = &self.image.map;
        let window = self.window;
        let entries: Vec<(u64, ChunkId)> = map
            .entries
            .iter()
            .copied()
            .filter(|(idx, _)| map.chunk_range(*idx).intersect(&window).is_some())
            .collect();
        // Capture's mask, limited to the window: what a delta compare looks at.
        let mask: Vec<Extent> = clip(&map.extents, window).collect();
        let mut report = RestoreReport {
            chunks: entries.len() as u64,
            ..Default::default()
        };
        let mut progress = Progress {
            total_chunks: entries.len() as u64,
            total_bytes: entries
                .iter()
                .filter_map(|(i, _)| map.chunk_range(*i).intersect(&window))
                .map(|e| e.len)
                .sum(),
            ..Default::default()
        };
        sink.event(Event::Phase(if self.opts.delta {
            "comparing and writing target"
        } else {
            "writing target"
        }));
        sink.event(Event::Progress(progress));
        let threads = if self.opts.threads == 0 {
            2 * crate::pipeline::default_threads()
        } else {
            self.opts.threads
        };
        // Chunks that touch a deferred range wait here until every other chunk is written.
        let mut held: Vec<(Extent, Option<Chunk>)> = Vec::new();
        let mut ticker = Ticker::new();
        let entries_ref = &entries;
        let mask = &mask;

        run(
            threads,
            |emit| {
                self.store.batches(entries_ref, |e| e.1, emit);
                Ok(())
            },
            |batch: Vec<(u64, ChunkId)>| self.prepare(&batch, mask),
            |item| {
                for done in item? {
                    self.finish(done, &mut report, &mut progress, &mut held)?;
                    // Once per chunk: the cancel check (and the tests' crash hook)
                    // counts chunks.
                    ticker.tick(sink, progress)?;
                }
                Ok(())
            },
        )?;

        // Everything else is on the target; make it durable before the tables appear.
        sink.event(Event::Phase("writing partition tables"));
        let target = self.target;
        target
            .sync()
            .map_err(|source| Error::WriteTarget { offset: 0, source })?;
        if let Some(m) = self.marker {
            write_zeros(target, m)?;
        }
        // The first deferred range (the disk's or the partition's first MiB) goes last,
        // after a sync of everything else (coreos-installer's order): a power cut before
        // it leaves a disk with no primary table, never a bootable one whose backup GPT
        // or last MiB of data is missing.
        let boot = self.deferred.first().copied();
        let (first, rest): (Vec<_>, Vec<_>) = held
            .into_iter()
            .partition(|(r, _)| boot.is_some_and(|b| b.intersect(r).is_some()));
        for mut group in [rest, first] {
            group.sort_by_key(|(r, _)| r.offset);
            for (range, data) in &group {
                if let Some(part) = range.intersect(&window) {
                    write_chunk(target, self.place, *range, part, data.as_deref())?;
                    report.written_chunks += 1;
                    report.table_chunks += 1;
                    report.written_bytes += part.len;
                }
            }
            target
                .sync()
                .map_err(|source| Error::WriteTarget { offset: 0, source })?;
        }
        progress.written_chunks = report.written_chunks;
        sink.event(Event::Progress(progress));
        report.elapsed_ms = started.elapsed().as_millis() as u64;
        Ok(report)
    }

    /// Consumer side of one chunk: writes it (or holds it for the end, or counts it
    /// unchanged), and counts it.
    fn finish(
        &self,
        done: Done,
        report: &mut RestoreReport,
        progress: &mut Progress,
        held: &mut Vec<(Extent, Option<Chunk>)>,
    ) -> Result<()> {
        let map = &self.image.map;
        let window = self.window;
        let (idx, data, stored, target_read, runs) = match done {
            Done::Unchanged(idx, read) => {
                report.target_read_bytes += read;
                report.unchanged_chunks += 1;
                progress.skipped_chunks += 1;
                progress.done_chunks += 1;
                if let Some(p) = map.chunk_range(idx).intersect(&window) {
                    progress.done_bytes += p.len;
                }
                return Ok(());
            }
            Done::Write {
                idx,
                data,
                stored,
                target_read,
                runs,
            } => (idx, data, stored, target_read, runs),
        };
        let range = map.chunk_range(idx);
        report.read_bytes += stored;
        report.target_read_bytes += target_read;
        if data.is_some() {
            report.hashed_chunks += 1;
        }
        let Some(part) = range.intersect(&window) else {
            return Ok(());
        };
        if self.deferred.iter().any(|d| d.intersect(&part).is_some()) {
            held.push((range, data));
        } else if data.is_none() && self.opts.target_is_zeroed {
            report.skipped_chunks += 1;
            progress.skipped_chunks += 1;
        } else {
            let runs: Vec<Extent> = match runs {
                Some(runs) => runs.iter().filter_map(|r| r.intersect(&part)).collect(),
                None => vec![part],
            };
            for &run in &runs {
                write_chunk(self.target, self.place, range, run, data.as_deref())?;
                report.written_bytes += run.len;
            }
            if runs.is_empty() {
                // It differed only outside the window (one partition restored).
                report.unchanged_chunks += 1;
                progress.skipped_chunks += 1;
            } else {
                report.written_chunks += 1;
                progress.written_chunks += 1;
            }
        }
        progress.done_chunks += 1;
        progress.done_bytes += part.len;
        Ok(())
    }

    /// Worker side of a batch of chunks (one group frame's, or one chunk): the delta
    /// compare of each, then the store read and verify of those that differ.
    fn prepare(&self, batch: &[(u64, ChunkId)], mask: &[Extent]) -> Result<Vec<Done>> {
        let mut compared = Vec::with_capacity(batch.len());
        for &(idx, id) in batch {
            compared.push(self.compare(idx, id, mask)?);
        }
        let wants: Vec<(ChunkId, u64)> = batch
            .iter()
            .zip(&compared)
            .filter(|((_, id), c)| *id != ZERO_ID && !matches!(c, Compared::Same(_)))
            .map(|(&(idx, id), _)| (id, self.image.map.chunk_range(idx).offset))
            .collect();
        let mut read = self.store.read_chunks(&wants).into_iter();
        let mut done = Vec::with_capacity(batch.len());
        for (&(idx, id), c) in batch.iter().zip(compared) {
            let (target_read, on_target) = match c {
                Compared::Same(n) => {
                    done.push(Done::Unchanged(idx, n));
                    continue;
                }
                Compared::Differs(n, old) => (n, old),
            };
            let (data, stored) = if id == ZERO_ID {
                (None, 0)
            } else {
                let Some(r) = read.next() else {
                    unreachable!("one read per chunk that differs")
                };
                let (data, stored) = r?;
                (Some(data), stored)
            };
            let offset = self.image.map.chunk_range(idx).offset;
            let runs = on_target.map(|old| differing_blocks(&old, data.as_deref(), offset));
            done.push(Done::Write {
                idx,
                data,
                stored,
                target_read,
                runs,
            });
        }
        Ok(done)
    }

    /// The delta compare of one chunk: whether the target already holds it (and the
    /// target bytes read). Without delta, or for a table area, it always differs.
    fn compare(&self, idx: u64, id: ChunkId, mask: &[Extent]) -> Result<Compared> {
        let range = self.image.map.chunk_range(idx);
        let deferred = self.deferred.iter().any(|d| d.intersect(&range).is_some());
        if !self.opts.delta || deferred {
            return Ok(Compared::Differs(0, None));
        }
        let shifted = Shifted {
            inner: self.target,
            place: self.place,
        };
        let (buf, n) = read_masked(&shifted, mask, range).map_err(|source| Error::ReadTarget {
            offset: self.place.at(range.offset.max(self.window.offset)),
            source,
        })?;
        let same = if id == ZERO_ID {
            is_zero(&buf)
        } else {
            blake3::hash(&buf).as_bytes() == &id
        };
        Ok(if same {
            Compared::Same(n)
        } else {
            Compared::Differs(n, Some(buf))
        })
    }
}

/// A chunk after the delta compare: the target bytes read, and what the target holds
/// where it differs (None: not compared).
enum Compared {
    Same(u64),
    Differs(u64, Option<IoBuf>),
}

/// The [`DIRECT_ALIGN`]-sized blocks where `old` (a chunk as read from the target,
/// masked) differs from `new` (None: zeros), merged into runs of adjacent blocks, as
/// extents at image offset `base`. A delta restore writes only these: an SSD is spared
/// the rewrite of the unchanged blocks around a changed file.
fn differing_blocks(old: &[u8], new: Option<&[u8]>, base: u64) -> Vec<Extent> {
    let mut runs: Vec<Extent> = Vec::new();
    for (i, block) in old.chunks(DIRECT_ALIGN).enumerate() {
        let at = i * DIRECT_ALIGN;
        let differs = match new {
            Some(new) => block != &new[at..at + block.len()],
            None => !is_zero(block),
        };
        if !differs {
            continue;
        }
        let offset = base + at as u64;
        match runs.last_mut() {
            Some(last) if last.end() == offset => last.len += block.len() as u64,
            _ => runs.push(Extent::new(offset, block.len() as u64)),
        }
    }
    runs
}

/// Maps image offsets inside the window to target offsets.
#[derive(Debug, Clone, Copy)]
struct Placement {
    from: u64,
    to: u64,
}

impl Placement {
    fn at(&self, image_offset: u64) -> u64 {
        image_offset - self.from + self.to
    }
    fn extent(&self, e: Extent) -> Extent {
        Extent::new(self.at(e.offset), e.len)
    }
}

/// The target seen in image coordinates (reads are only made inside the window).
struct Shifted<'a> {
    inner: &'a dyn ReadWriteAt,
    place: Placement,
}

impl ReadAt for Shifted<'_> {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
        self.inner.read_exact_at(buf, self.place.at(offset))
    }
}

/// Writes the part `part` of chunk `range`; `data` None means zeros.
fn write_chunk(
    target: &dyn ReadWriteAt,
    place: Placement,
    range: Extent,
    part: Extent,
    data: Option<&[u8]>,
) -> Result<()> {
    match data {
        Some(d) => {
            let lo = (part.offset - range.offset) as usize;
            let hi = lo + part.len as usize;
            let at = place.at(part.offset);
            target
                .write_all_at(&d[lo..hi], at)
                .map_err(|source| Error::WriteTarget { offset: at, source })
        }
        None => write_zeros(target, place.extent(part)),
    }
}

/// Zeros to write from, page-aligned so a [`crate::io::DirectFile`] writes them directly.
#[repr(C, align(4096))]
struct Zeros([u8; 1 << 20]);
static ZEROS: Zeros = Zeros([0; 1 << 20]);
const _: () = assert!(std::mem::align_of::<Zeros>() == DIRECT_ALIGN);

/// Writes zeros over `e`.
pub fn write_zeros(target: &dyn WriteAt, e: Extent) -> Result<()> {
    let mut off = e.offset;
    while off < e.end() {
        let n = (e.end() - off).min(ZEROS.0.len() as u64) as usize;
        target
            .write_all_at(&ZEROS.0[..n], off)
            .map_err(|source| Error::WriteTarget {
                offset: off,
                source,
            })?;
        off += n as u64;
    }
    Ok(())
}

fn error_offset(e: &Error) -> Option<u64> {
    match e {
        Error::ChunkMissing { offset, .. }
        | Error::ChunkCorrupt { offset, .. }
        | Error::ChunkDigestMismatch { offset, .. }
        | Error::WriteTarget { offset, .. }
        | Error::ReadTarget { offset, .. } => Some(*offset),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capture::{capture, CaptureOptions};
    use crate::io::MemDisk;
    use crate::sink::NullSink;
    use std::sync::Mutex;

    const MIB: u64 = 1 << 20;

    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum Op {
        /// offset, length, all zero
        Write(u64, u64, bool),
        Sync,
    }

    /// A disk that records every write and sync, in order.
    struct Recorder {
        disk: MemDisk,
        ops: Mutex<Vec<Op>>,
    }

    impl ReadAt for Recorder {
        fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
            self.disk.read_exact_at(buf, offset)
        }
    }

    impl WriteAt for Recorder {
        fn write_all_at(&self, buf: &[u8], offset: u64) -> std::io::Result<()> {
            let op = Op::Write(offset, buf.len() as u64, is_zero(buf));
            self.ops.lock().unwrap().push(op);
            self.disk.write_all_at(buf, offset)
        }
        fn sync(&self) -> std::io::Result<()> {
            self.ops.lock().unwrap().push(Op::Sync);
            Ok(())
        }
    }

    /// A store in a temporary directory holding image "d" of `disk`, wholly captured.
    fn stored(disk: &[u8]) -> (tempfile::TempDir, Store, Image) {
        let size = disk.len() as u64;
        let t = tempfile::tempdir().unwrap();
        let store = Store::open_writable(t.path(), 1 << 20).unwrap();
        let mut w = store.writer().unwrap();
        let opts = CaptureOptions {
            name: "d".into(),
            description: String::new(),
            level: 1,
            source: crate::format::SourceDisk {
                path: "mem".into(),
                size,
                logical_sector_size: 512,
                physical_sector_size: 512,
                ..Default::default()
            },
            extents: vec![Extent::new(0, size)],
            partition_table: None,
            partitions: vec![],
            threads: 2,
        };
        capture(
            &mut w,
            &MemDisk::from_vec(disk.to_vec()),
            opts,
            &mut NullSink,
        )
        .unwrap();
        let store = Store::open(t.path()).unwrap();
        let image = store.load_image("d").unwrap();
        (t, store, image)
    }

    #[test]
    fn the_first_mib_is_written_after_everything_else_is_synced() {
        let size = 4 * MIB;
        let disk: Vec<u8> = (0..size).map(|i| (i % 251) as u8 + 1).collect();
        let (_t, store, image) = stored(&disk);
        for delta in [false, true] {
            let target = Recorder {
                disk: MemDisk::new(size as usize),
                ops: Mutex::new(Vec::new()),
            };
            let tail = Extent::new(size - MIB, MIB);
            let opts = RestoreOptions {
                deferred: vec![FIRST_MIB, tail],
                marker_at: Some(tail.offset),
                delta,
                threads: 2,
                ..Default::default()
            };
            restore(&store, &image, &target, size, &opts, &mut NullSink).unwrap();
            assert_eq!(target.disk.to_vec(), disk);
            let ops = target.ops.into_inner().unwrap();
            let in_first = |o: &Op| matches!(o, Op::Write(at, _, false) if *at < MIB);
            let first = ops
                .iter()
                .position(in_first)
                .expect("the first MiB is written");
            assert!(
                ops[first..].iter().all(|o| in_first(o) || *o == Op::Sync),
                "something was written after the first MiB: {ops:?}"
            );
            let last_other = ops[..first]
                .iter()
                .rposition(|o| matches!(o, Op::Write(..)))
                .unwrap();
            assert!(
                ops[last_other..first].contains(&Op::Sync),
                "no sync between the rest of the disk and its first MiB: {ops:?}"
            );
            assert_eq!(ops.last(), Some(&Op::Sync));
        }
    }

    #[test]
    fn differing_blocks_are_whole_blocks_merged_when_adjacent() {
        let b = DIRECT_ALIGN;
        let old = vec![0u8; 5 * b + 100];
        let mut new = old.clone();
        new[7] = 1; // block 0
        new[b + 1] = 1; // block 1, adjacent: one run
        new[3 * b] = 1; // block 3
        new[5 * b + 99] = 1; // the short last block
        let runs = differing_blocks(&old, Some(&new), 1000);
        let b = b as u64;
        assert_eq!(
            runs,
            vec![
                Extent::new(1000, 2 * b),
                Extent::new(1000 + 3 * b, b),
                Extent::new(1000 + 5 * b, 100)
            ]
        );
        assert_eq!(differing_blocks(&new, Some(&new), 0), vec![]);
        // Against zeros: the blocks that are not zero.
        assert_eq!(
            differing_blocks(&new, None, 0),
            runs.iter()
                .map(|r| Extent::new(r.offset - 1000, r.len))
                .collect::<Vec<_>>()
        );
    }

    #[test]
    fn a_delta_restore_writes_only_the_blocks_that_differ() {
        let size = 5 * MIB;
        let disk: Vec<u8> = (0..size).map(|i| (i % 251) as u8 + 1).collect();
        let (_t, store, image) = stored(&disk);
        let mut held = disk.clone();
        let b = DIRECT_ALIGN as u64;
        for at in [MIB + 5, MIB + b + 7, 2 * MIB + 100_000, 4 * MIB - 1] {
            held[at as usize] ^= 0x55;
        }
        let target = Recorder {
            disk: MemDisk::from_vec(held),
            ops: Mutex::new(Vec::new()),
        };
        let opts = RestoreOptions {
            delta: true,
            threads: 2,
            ..Default::default()
        };
        let r = restore(&store, &image, &target, size, &opts, &mut NullSink).unwrap();
        assert_eq!(target.disk.to_vec(), disk);
        let mut writes: Vec<(u64, u64)> = target
            .ops
            .into_inner()
            .unwrap()
            .into_iter()
            .filter_map(|o| match o {
                Op::Write(at, len, _) if at >= MIB => Some((at, len)),
                _ => None,
            })
            .collect();
        writes.sort();
        assert_eq!(
            writes,
            vec![
                (MIB, 2 * b),
                (2 * MIB + 100_000 / b * b, b),
                (4 * MIB - b, b)
            ]
        );
        // The first MiB (always rewritten) and three changed chunks; one unchanged.
        assert_eq!((r.written_chunks, r.unchanged_chunks), (4, 1));
        assert_eq!(r.written_bytes, MIB + 4 * b);
    }
}
