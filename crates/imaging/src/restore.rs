//! Restore in coreos-installer's order: the caller has refused bad targets; here the
//! table areas are zeroed first, every other chunk is verified then written, the
//! table areas are written last, then fsync. On failure the table areas are zeroed
//! again so a half-written disk can never boot (DESIGN.md "Restore").

use crate::error::{Error, Result};
use crate::extent::Extent;
use crate::format::*;
use crate::io::WriteAt;
use crate::pipeline::run;
use crate::sink::{Event, Progress, Sink};
use crate::store::{Image, Location, Store};
use std::time::Instant;

/// The first MiB: MBR, GPT header and entries, and the boot loader gap.
pub const FIRST_MIB: Extent = Extent::new(0, 1 << 20);

/// How to restore.
#[derive(Debug, Clone)]
pub struct RestoreOptions {
    /// Ranges written last (and zeroed first, and zeroed again on failure): the first
    /// MiB and the backup GPT for a whole-disk restore; nothing for one partition.
    pub deferred: Vec<Extent>,
    /// Only bytes inside this range are written (one partition); None: the whole image.
    pub window: Option<Extent>,
    /// Where the window's first byte goes on the target (one partition restored into a
    /// partition that starts elsewhere); None: at the same offset as on the source.
    pub dest_offset: Option<u64>,
    /// The target is known to read as zeros (a file just created), so all-zero chunks
    /// need no write.
    pub target_is_zeroed: bool,
    /// Worker threads (0: all cores).
    pub threads: usize,
}

impl Default for RestoreOptions {
    fn default() -> Self {
        RestoreOptions {
            deferred: vec![FIRST_MIB],
            window: None,
            dest_offset: None,
            target_is_zeroed: false,
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
    pub written_chunks: u64,
    pub written_bytes: u64,
    /// All-zero chunks not written because the target already reads as zeros.
    pub skipped_chunks: u64,
    pub elapsed_ms: u64,
}

enum Work {
    Zero(u64),
    Stored(u64, ChunkId, Location, Vec<u8>),
}

/// Restores `image` onto `target`, which holds `target_size` bytes.
pub fn restore(
    store: &Store,
    image: &Image,
    target: &dyn WriteAt,
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

    // Zero the table areas before anything else: from here until the very end a power
    // cut leaves a disk with no partition table rather than a half-written bootable one.
    sink.event(Event::Phase("clearing partition table areas"));
    let wipe = |target: &dyn WriteAt| -> Result<()> {
        for d in &deferred {
            write_zeros(target, place.extent(*d))?;
        }
        target
            .sync()
            .map_err(|source| Error::WriteTarget { offset: 0, source })
    };
    wipe(target)?;

    let outcome = restore_chunks(
        store, image, target, window, place, &deferred, opts, sink, started,
    );
    match outcome {
        Ok(report) => Ok(report),
        Err(Error::Cancelled) => {
            let wiped = wipe(target).is_ok();
            Err(Error::RestoreAborted {
                at_offset: None,
                cause: Box::new(Error::Cancelled),
                wiped,
            })
        }
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

#[allow(clippy::too_many_arguments)]
fn restore_chunks(
    store: &Store,
    image: &Image,
    target: &dyn WriteAt,
    window: Extent,
    place: Placement,
    deferred: &[Extent],
    opts: &RestoreOptions,
    sink: &mut dyn Sink,
    started: Instant,
) -> Result<RestoreReport> {
    let map = &image.map;
    let entries: Vec<(u64, ChunkId)> = map
        .entries
        .iter()
        .copied()
        .filter(|(idx, _)| map.chunk_range(*idx).intersect(&window).is_some())
        .collect();
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
    sink.event(Event::Phase("writing target"));
    sink.event(Event::Progress(progress));
    let threads = if opts.threads == 0 {
        crate::pipeline::default_threads()
    } else {
        opts.threads
    };
    // Chunks that touch a deferred range wait here until every other chunk is written.
    let mut held: Vec<(Extent, Option<Vec<u8>>)> = Vec::new();
    let mut last_report = Instant::now();
    let entries_ref = &entries;

    run(
        threads,
        |emit| {
            for &(idx, id) in entries_ref {
                let item = if id == ZERO_ID {
                    Ok(Work::Zero(idx))
                } else {
                    let offset = map.chunk_range(idx).offset;
                    store
                        .read_stored(&id, offset)
                        .map(|(loc, bytes)| Work::Stored(idx, id, loc, bytes))
                };
                let failed = item.is_err();
                if !emit(item) || failed {
                    break;
                }
            }
            Ok(())
        },
        |item: Result<Work>| -> Result<(u64, Option<Vec<u8>>, u64)> {
            match item? {
                Work::Zero(idx) => Ok((idx, None, 0)),
                Work::Stored(idx, id, loc, bytes) => {
                    let offset = map.chunk_range(idx).offset;
                    let n = bytes.len() as u64;
                    store
                        .decode(&id, offset, &loc, bytes)
                        .map(|d| (idx, Some(d), n))
                }
            }
        },
        |item| {
            let (idx, data, stored) = item?;
            let range = map.chunk_range(idx);
            report.read_bytes += stored;
            if data.is_some() {
                report.hashed_chunks += 1;
            }
            let Some(part) = range.intersect(&window) else {
                return Ok(());
            };
            if deferred.iter().any(|d| d.intersect(&part).is_some()) {
                held.push((range, data));
            } else if data.is_none() && opts.target_is_zeroed {
                report.skipped_chunks += 1;
                progress.skipped_chunks += 1;
            } else {
                write_chunk(target, place, range, part, data.as_deref())?;
                report.written_chunks += 1;
                report.written_bytes += part.len;
                progress.written_chunks += 1;
            }
            progress.done_chunks += 1;
            progress.done_bytes += part.len;
            if last_report.elapsed().as_millis() >= 200 {
                last_report = Instant::now();
                sink.event(Event::Progress(progress));
            }
            if sink.cancelled() {
                return Err(Error::Cancelled);
            }
            Ok(())
        },
    )?;

    // Everything else is on the target; make it durable before the tables appear.
    sink.event(Event::Phase("writing partition tables"));
    target
        .sync()
        .map_err(|source| Error::WriteTarget { offset: 0, source })?;
    held.sort_by_key(|(r, _)| r.offset);
    for (range, data) in &held {
        if let Some(part) = range.intersect(&window) {
            write_chunk(target, place, *range, part, data.as_deref())?;
            report.written_chunks += 1;
            report.written_bytes += part.len;
        }
    }
    target
        .sync()
        .map_err(|source| Error::WriteTarget { offset: 0, source })?;
    progress.written_chunks = report.written_chunks;
    sink.event(Event::Progress(progress));
    report.elapsed_ms = started.elapsed().as_millis() as u64;
    Ok(report)
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

/// Writes the part `part` of chunk `range`; `data` None means zeros.
fn write_chunk(
    target: &dyn WriteAt,
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

static ZEROS: [u8; 1 << 16] = [0; 1 << 16];

fn write_zeros(target: &dyn WriteAt, e: Extent) -> Result<()> {
    let mut off = e.offset;
    while off < e.end() {
        let n = (e.end() - off).min(ZEROS.len() as u64) as usize;
        target
            .write_all_at(&ZEROS[..n], off)
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
        | Error::WriteTarget { offset, .. } => Some(*offset),
        _ => None,
    }
}
