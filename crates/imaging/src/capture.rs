//! Capture: read the source's extents chunk by chunk, hash and compress on all cores,
//! store new chunks, commit the image last.

use crate::error::{Error, Result};
use crate::extent::{normalize, total, Extent};
use crate::format::*;
use crate::io::{is_zero, IoBuf, ReadAt};
use crate::pipeline::{chunks_of, read_masked_into, run};
use crate::sink::{Event, Progress, Sink, Ticker};
use crate::store::StoreWriter;
use std::collections::HashMap;
use std::time::Instant;

/// What to capture and how to describe it.
#[derive(Debug, Clone)]
pub struct CaptureOptions {
    pub name: String,
    pub description: String,
    /// zstd level.
    pub level: i32,
    pub source: SourceDisk,
    /// Byte ranges to copy; everything else reads as zeros. Normalized by the engine.
    pub extents: Vec<Extent>,
    pub partition_table: Option<serde_json::Value>,
    pub partitions: Vec<serde_json::Value>,
    /// Worker threads (0: all cores).
    pub threads: usize,
}

/// What a capture did.
#[derive(Debug, Clone, PartialEq)]
pub struct CaptureReport {
    pub manifest: Manifest,
    /// Bytes read from the source.
    pub read_bytes: u64,
    /// Chunks hashed (non-zero).
    pub hashed_chunks: u64,
    /// Chunks that were all zero.
    pub zero_chunks: u64,
    /// Chunks whose content the store already held (deduplicated).
    pub dedup_chunks: u64,
    /// Chunks added to the store and their compressed bytes.
    pub new_chunks: u64,
    pub new_bytes: u64,
    /// Bytes of distinct chunks the image refers to, stored size.
    pub referenced_bytes: u64,
    pub elapsed_ms: u64,
}

enum Hashed {
    Zero(u64),
    Known(u64, ChunkId),
    /// A chunk stored alone: its length and stored bytes.
    New(u64, ChunkId, u32, Payload),
    /// A member of its batch's group frame.
    Grouped(u64, ChunkId),
}

/// A chunk stored alone, as it goes into the pack: compressed, or raw, its bytes left in
/// the batch's buffer (no copy).
enum Payload {
    Packed(Vec<u8>),
    Raw(std::ops::Range<usize>),
}

/// What a worker made of a run of consecutive chunks: each chunk (with its bytes and
/// the bytes read for it), the group frame of its new chunks if they were grouped, and
/// the batch's buffer if chunks are stored raw from it.
struct Batch {
    chunks: Vec<(Hashed, u64, u64)>,
    group: Option<(Vec<Member>, Vec<u8>)>,
    raw: Option<IoBuf>,
}

/// What a group frame of a version 2 store decodes to at most (FORMAT.md §3): new
/// chunks are compressed together up to this, so zstd finds matches across chunk
/// boundaries, as a stream through the disk would (docs/PERFORMANCE.md "Group frames").
pub const GROUP_BYTES: u32 = 4 << 20;

thread_local! {
    /// Each worker's zstd context, made once (a context per chunk costs an allocation
    /// and a table reset every MiB).
    static COMPRESSOR: std::cell::RefCell<Option<(i32, zstd::bulk::Compressor<'static>)>> =
        const { std::cell::RefCell::new(None) };
}

/// Compresses `data` at `level` with this thread's zstd context; None when that does not
/// make it smaller (it is stored raw). `disk_offset` is for the error message.
fn compress(data: &[u8], level: i32, disk_offset: u64) -> Result<Option<Vec<u8>>> {
    let packed = compress_frame(data, level).map_err(|e| Error::Io {
        what: "compressing chunk for",
        path: format!("disk offset {disk_offset}").into(),
        source: e,
    })?;
    Ok((packed.len() < data.len()).then_some(packed))
}

fn compress_frame(data: &[u8], level: i32) -> std::io::Result<Vec<u8>> {
    COMPRESSOR.with(|c| {
        let mut c = c.borrow_mut();
        if c.as_ref().is_none_or(|(l, _)| *l != level) {
            *c = Some((level, zstd::bulk::Compressor::new(level)?));
        }
        match c.as_mut() {
            Some((_, z)) => z.compress(data),
            None => unreachable!("set above"),
        }
    })
}

/// Captures `source` into the store behind `writer`.
pub fn capture(
    writer: &mut StoreWriter<'_>,
    source: &dyn ReadAt,
    opts: CaptureOptions,
    sink: &mut dyn Sink,
) -> Result<CaptureReport> {
    let started = Instant::now();
    validate_name(&opts.name).map_err(|reason| Error::BadName {
        name: opts.name.clone(),
        reason,
    })?;
    writer.check_name_free(&opts.name)?;
    let store = writer.store();
    let chunk_size = store.chunk_size();
    let disk_size = opts.source.size;
    let extents = normalize(opts.extents.clone(), disk_size);
    let indices: Vec<u64> = chunks_of(&extents, chunk_size).collect();
    let mut progress = Progress {
        total_bytes: indices
            .iter()
            .map(|&i| chunk_range(i, chunk_size, disk_size).len)
            .sum(),
        total_chunks: indices.len() as u64,
        ..Default::default()
    };
    sink.event(Event::Phase("reading source"));
    sink.event(Event::Progress(progress));

    let threads = if opts.threads == 0 {
        2 * crate::pipeline::default_threads()
    } else {
        opts.threads
    };
    let level = opts.level;
    // New chunks are grouped within runs of this many (FORMAT.md §3).
    let batch_len = if store.groups() {
        (GROUP_BYTES / chunk_size).max(1) as usize
    } else {
        1
    };
    let ext = &extents;
    let mut entries: Vec<(u64, ChunkId)> = Vec::with_capacity(indices.len());
    let mut referenced: HashMap<ChunkId, ()> = HashMap::new();
    let (mut zero_chunks, mut dedup_chunks, mut read_bytes) = (0u64, 0u64, 0u64);
    let mut ticker = Ticker::new();

    let result = run(
        threads,
        |emit| {
            for batch in indices.chunks(batch_len) {
                if !emit(batch) {
                    break;
                }
            }
            Ok(())
        },
        |batch: &[u64]| -> Result<Batch> {
            // One buffer for the batch: new chunks are moved to its front, so a group
            // frame compresses them without a copy when (as mostly) all are new.
            let cs = chunk_size as usize;
            let mut buf = IoBuf::for_overwrite(batch.len() * cs);
            let mut chunks = Vec::with_capacity(batch.len());
            // New chunks: position in the batch, id, and their bytes at the buffer's front.
            let mut fresh: Vec<(usize, ChunkId, std::ops::Range<usize>)> = Vec::new();
            let mut front = 0;
            for (at, &idx) in batch.iter().enumerate() {
                // Each worker reads its own chunks: several reads in flight keep the
                // device busy while other workers compress.
                let window = chunk_range(idx, chunk_size, disk_size);
                let n = window.len as usize;
                let here = at * cs..at * cs + n;
                let read = read_masked_into(source, ext, window, &mut buf[here.clone()]).map_err(
                    |source| Error::ReadSource {
                        offset: window.offset,
                        source,
                    },
                )?;
                let h = if is_zero(&buf[here.clone()]) {
                    Hashed::Zero(idx)
                } else {
                    let id = *blake3::hash(&buf[here.clone()]).as_bytes();
                    if store.contains(&id) || fresh.iter().any(|f| f.1 == id) {
                        Hashed::Known(idx, id)
                    } else {
                        if here.start != front {
                            buf.copy_within(here, front);
                        }
                        fresh.push((at, id, front..front + n));
                        front += n;
                        Hashed::Grouped(idx, id)
                    }
                };
                chunks.push((h, n as u64, read));
            }
            let mut group = None;
            if fresh.len() > 1 {
                let offset = batch[0] * chunk_size as u64;
                if let Some(mut frame) = compress(&buf[..front], level, offset)? {
                    // It waits in a queue: hold only its bytes, not zstd's bound.
                    frame.shrink_to_fit();
                    let members = fresh.iter().map(|(_, id, r)| (*id, r.len() as u32));
                    group = Some((members.collect(), frame));
                    fresh.clear();
                }
            }
            // A chunk alone is compressed alone; the chunks of a group that did not
            // compress are stored raw.
            let alone = fresh.len() == 1;
            for (at, id, range) in fresh {
                let idx = batch[at];
                let n = range.len() as u32;
                let packed = if alone {
                    compress(&buf[range.clone()], level, idx * chunk_size as u64)?
                } else {
                    None
                };
                let payload = packed.map_or(Payload::Raw(range), Payload::Packed);
                chunks[at].0 = Hashed::New(idx, id, n, payload);
            }
            let raw = chunks
                .iter()
                .any(|c| matches!(c.0, Hashed::New(.., Payload::Raw(_))))
                .then_some(buf);
            Ok(Batch { chunks, group, raw })
        },
        |item| {
            let batch = item?;
            let mut added = match &batch.group {
                Some((members, frame)) => writer.put_group(members, frame)?,
                None => Vec::new(),
            }
            .into_iter();
            for (h, n, read) in batch.chunks {
                read_bytes += read;
                progress.done_chunks += 1;
                progress.done_bytes += n;
                let (idx, id, written) = match h {
                    Hashed::Zero(idx) => {
                        zero_chunks += 1;
                        progress.skipped_chunks += 1;
                        entries.push((idx, ZERO_ID));
                        ticker.tick(sink, progress)?;
                        continue;
                    }
                    Hashed::Known(idx, id) => (idx, id, false),
                    Hashed::New(idx, id, raw_len, payload) => {
                        let (enc, bytes) = match &payload {
                            Payload::Packed(p) => (Encoding::Zstd, &p[..]),
                            Payload::Raw(r) => (
                                Encoding::Raw,
                                &batch.raw.as_deref().unwrap_or(&[])[r.clone()],
                            ),
                        };
                        (idx, id, writer.put(id, enc, raw_len, bytes)?)
                    }
                    Hashed::Grouped(idx, id) => (idx, id, added.next().unwrap_or(false)),
                };
                if written {
                    progress.written_chunks += 1;
                } else {
                    dedup_chunks += 1;
                    progress.skipped_chunks += 1;
                }
                entries.push((idx, id));
                referenced.insert(id, ());
                // Once per chunk: the cancel check (and the tests' crash hook) counts chunks.
                ticker.tick(sink, progress)?;
            }
            Ok(())
        },
    );
    if let Err(e) = result {
        // A full destination makes the open pack useless; anything else keeps it so a
        // rerun reuses its chunks (FORMAT.md §7).
        if is_out_of_space(&e) {
            writer.discard_open_pack();
        } else {
            let _ = writer.seal();
        }
        return Err(e);
    }
    sink.event(Event::Progress(progress));
    sink.event(Event::Phase("committing image"));
    entries.sort_unstable_by_key(|e| e.0);
    let map = ChunkMap {
        chunk_size,
        disk_size,
        extents,
        entries,
    };
    let stored_bytes = writer.stored_bytes(referenced.keys());
    let manifest = Manifest {
        format: "imprint-image".into(),
        format_version: FORMAT_VERSION,
        tool_version: env!("CARGO_PKG_VERSION").into(),
        created: crate::store::now(),
        name: opts.name,
        description: opts.description,
        source: opts.source,
        chunk_size,
        map_file: String::new(),
        stats: CaptureStats {
            captured_bytes: total(&map.extents),
            chunks: map.entries.len() as u64,
            zero_chunks,
            stored_chunks: referenced.len() as u64,
            stored_bytes,
            new_chunks: writer.new_chunks(),
            new_bytes: writer.new_bytes(),
        },
        partition_table: opts.partition_table,
        partitions: opts.partitions,
        root_hash: String::new(),
    };
    let manifest = match writer.commit_image(manifest, &map) {
        Ok(m) => m,
        Err(e) => {
            if is_out_of_space(&e) {
                writer.discard_open_pack();
            }
            return Err(e);
        }
    };
    Ok(CaptureReport {
        read_bytes,
        hashed_chunks: map.entries.len() as u64 - zero_chunks,
        zero_chunks,
        dedup_chunks,
        new_chunks: manifest.stats.new_chunks,
        new_bytes: manifest.stats.new_bytes,
        referenced_bytes: stored_bytes,
        elapsed_ms: started.elapsed().as_millis() as u64,
        manifest,
    })
}

/// True for "no space left on device" and "disk quota exceeded".
pub fn is_out_of_space(e: &Error) -> bool {
    match e {
        Error::Io { source, .. } => matches!(source.raw_os_error(), Some(28) | Some(122)),
        _ => false,
    }
}
