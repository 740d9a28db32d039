//! Verify an image (every stored chunk decodes to its id, root hash holds) or a disk
//! against an image (every captured chunk of the disk, masked as capture masked it,
//! hashes to the image's id).

use crate::error::{Error, Result};
use crate::extent::{clip, normalize, Extent};
use crate::format::*;
use crate::io::{is_zero, IoBuf, ReadAt};
use crate::pipeline::{read_masked, run};
use crate::sink::{Event, Progress, Sink, Ticker};
use crate::store::{Chunk, Image, Store};
use std::collections::HashSet;
use std::time::Instant;

/// What a verification found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VerifyReport {
    pub chunks: u64,
    /// Bytes read (stored bytes for an image, disk bytes for --against).
    pub read_bytes: u64,
    pub elapsed_ms: u64,
}

/// Most failures listed in a warning each; the rest are counted.
const MAX_LISTED: u64 = 20;

/// Checks every distinct stored chunk of `image` decodes to its id. The root hash was
/// checked when the image was loaded. Reports every damaged chunk as a warning, then
/// fails with the count and the first.
pub fn verify_image(
    store: &Store,
    image: &Image,
    threads: usize,
    sink: &mut dyn Sink,
) -> Result<VerifyReport> {
    let started = Instant::now();
    let map = &image.map;
    let mut seen = HashSet::new();
    let todo: Vec<(u64, ChunkId)> = map
        .entries
        .iter()
        .copied()
        .filter(|(_, id)| *id != ZERO_ID && seen.insert(*id))
        .collect();
    let mut progress = Progress {
        total_chunks: todo.len() as u64,
        total_bytes: todo
            .iter()
            .map(|(_, id)| store.location(id).map_or(0, |l| l.raw_len as u64))
            .sum(),
        ..Default::default()
    };
    sink.event(Event::Phase("verifying image"));
    sink.event(Event::Progress(progress));
    let mut report = VerifyReport {
        chunks: todo.len() as u64,
        ..Default::default()
    };
    let (mut bad, mut first): (u64, Option<Error>) = (0, None);
    let todo_ref = &todo;
    let mut ticker = Ticker::new();
    run(
        pick(threads),
        |emit| {
            store.batches(todo_ref, |e| e.1, emit);
            Ok(())
        },
        |batch: Vec<(u64, ChunkId)>| -> Vec<(u64, Result<()>)> {
            let wants: Vec<(ChunkId, u64)> = batch
                .iter()
                .map(|&(idx, id)| (id, map.chunk_range(idx).offset))
                .collect();
            store
                .read_chunks(&wants)
                .into_iter()
                .map(|r| match r {
                    Ok((_, n)) => (n, Ok(())),
                    Err(e) => (0, Err(e)),
                })
                .collect()
        },
        |results| {
            for (n, r) in results {
                report.read_bytes += n;
                progress.done_chunks += 1;
                progress.done_bytes += map.chunk_size as u64;
                if let Err(e) = r {
                    bad += 1;
                    if bad <= MAX_LISTED {
                        sink.event(Event::Warning(e.to_string()));
                    }
                    first.get_or_insert(e);
                }
                ticker.tick(sink, progress)?;
            }
            Ok(())
        },
    )?;
    progress.done_bytes = progress.total_bytes;
    sink.event(Event::Progress(progress));
    report.elapsed_ms = started.elapsed().as_millis() as u64;
    match first {
        None => Ok(report),
        Some(first) => Err(Error::ImageDamaged {
            name: image.manifest.name.clone(),
            count: bad,
            first: Box::new(first),
        }),
    }
}

/// Compares `disk` with `image`: each chunk of the map is read from the disk, masked
/// to the captured extents, and hashed. Chunks outside the image are not compared.
pub fn verify_against(
    image: &Image,
    disk: &dyn ReadAt,
    disk_size: u64,
    threads: usize,
    sink: &mut dyn Sink,
) -> Result<VerifyReport> {
    verify_against_excluding(None, image, disk, disk_size, &[], threads, sink)
}

/// Like [`verify_against`], but bytes inside `exclude` (and past the disk's end) are
/// not compared: a table relocated for a disk of another size, a grown partition. A
/// chunk that is only partly compared cannot be checked by its id, so its content is
/// read from `store`, masked the same way on both sides, and compared byte for byte.
pub fn verify_against_excluding(
    store: Option<&Store>,
    image: &Image,
    disk: &dyn ReadAt,
    disk_size: u64,
    exclude: &[Extent],
    threads: usize,
    sink: &mut dyn Sink,
) -> Result<VerifyReport> {
    let started = Instant::now();
    let map = &image.map;
    if disk_size < map.disk_size && (store.is_none() || exclude.is_empty()) {
        return Err(Error::TargetTooSmall {
            need: map.disk_size,
            have: disk_size,
        });
    }
    let mut holes: Vec<Extent> = exclude.to_vec();
    if disk_size < map.disk_size {
        holes.push(Extent::new(disk_size, map.disk_size - disk_size));
    }
    let compared = subtract(&map.extents, &normalize(holes, map.disk_size));
    let mut progress = Progress {
        total_chunks: map.entries.len() as u64,
        total_bytes: map
            .entries
            .iter()
            .map(|(i, _)| map.chunk_range(*i).len)
            .sum(),
        ..Default::default()
    };
    sink.event(Event::Phase("comparing disk with image"));
    sink.event(Event::Progress(progress));
    let mut report = VerifyReport {
        chunks: map.entries.len() as u64,
        ..Default::default()
    };
    let (mut bad, mut first_offset) = (0u64, None::<u64>);
    let mut ticker = Ticker::new();
    let compared = &compared;
    run(
        pick(threads),
        |emit| {
            for &(idx, id) in &map.entries {
                if !emit((idx, id)) {
                    break;
                }
            }
            Ok(())
        },
        |(idx, id): (u64, ChunkId)| -> Result<(u64, u64, bool)> {
            let window = map.chunk_range(idx);
            let read_err = |source| Error::ReadTarget {
                offset: window.offset,
                source,
            };
            let whole: Vec<Extent> = clip(&map.extents, window).collect();
            let part: Vec<Extent> = clip(compared, window).collect();
            let (buf, n) = read_masked(disk, &part, window).map_err(read_err)?;
            if part == whole {
                let same = if id == ZERO_ID {
                    is_zero(&buf)
                } else {
                    blake3::hash(&buf).as_bytes() == &id
                };
                return Ok((window.offset, n, same));
            }
            if part.is_empty() {
                return Ok((window.offset, 0, true));
            }
            let want = match (store, id == ZERO_ID) {
                (_, true) => Chunk::Own(IoBuf::new(window.len as usize)),
                (Some(s), false) => s.read_chunk(&id, window.offset)?,
                (None, false) => unreachable!("exclusions need the store"),
            };
            // The image's chunk seen through the same mask, placed at the window.
            let img = ChunkAt(&want, window.offset);
            let (want, _) = read_masked(&img, &part, window).map_err(read_err)?;
            Ok((window.offset, n, *want == *buf))
        },
        |item| {
            let (off, n, same) = item?;
            report.read_bytes += n;
            progress.done_chunks += 1;
            progress.done_bytes += map.chunk_size as u64;
            if !same {
                bad += 1;
                if bad <= MAX_LISTED {
                    sink.event(Event::Warning(format!(
                        "disk differs from the image in the chunk at offset {off}"
                    )));
                }
                first_offset = Some(first_offset.map_or(off, |f| f.min(off)));
            }
            ticker.tick(sink, progress)
        },
    )?;
    progress.done_bytes = progress.total_bytes;
    sink.event(Event::Progress(progress));
    report.elapsed_ms = started.elapsed().as_millis() as u64;
    match first_offset {
        None => Ok(report),
        Some(first_offset) => Err(Error::DiskMismatch {
            count: bad,
            first_offset,
        }),
    }
}

/// One chunk's bytes, read at disk offsets from `.1` on.
struct ChunkAt<'a>(&'a [u8], u64);

impl ReadAt for ChunkAt<'_> {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
        self.0.read_exact_at(buf, offset - self.1)
    }
}

/// `a` minus `b`, both normalized.
fn subtract(a: &[Extent], b: &[Extent]) -> Vec<Extent> {
    let mut out = Vec::new();
    for e in a {
        let mut pos = e.offset;
        for h in clip(b, *e) {
            if h.offset > pos {
                out.push(Extent::new(pos, h.offset - pos));
            }
            pos = h.end();
        }
        if pos < e.end() {
            out.push(Extent::new(pos, e.end() - pos));
        }
    }
    out
}

fn pick(threads: usize) -> usize {
    if threads == 0 {
        crate::pipeline::default_threads()
    } else {
        threads
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subtract_cuts_holes_out_of_extents() {
        let a = [Extent::new(0, 100), Extent::new(200, 100)];
        let b = [Extent::new(50, 10), Extent::new(90, 150)];
        assert_eq!(
            subtract(&a, &b),
            vec![
                Extent::new(0, 50),
                Extent::new(60, 30),
                Extent::new(240, 60)
            ]
        );
    }
}
