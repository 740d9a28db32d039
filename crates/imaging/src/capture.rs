//! Capture: read the source's extents chunk by chunk, hash and compress on all cores,
//! store new chunks, commit the image last.

use crate::error::{Error, Result};
use crate::extent::{normalize, total, Extent};
use crate::format::*;
use crate::io::{is_zero, IoBuf, ReadAt};
use crate::pipeline::{chunks_of, read_masked, run};
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
    New(u64, ChunkId, Encoding, u32, Payload),
}

/// A new chunk's bytes as they go into the pack: compressed, or the read buffer itself.
enum Payload {
    Packed(Vec<u8>),
    Raw(IoBuf),
}

impl std::ops::Deref for Payload {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            Payload::Packed(v) => v,
            Payload::Raw(b) => b,
        }
    }
}

thread_local! {
    /// Each worker's zstd context, made once (a context per chunk costs an allocation
    /// and a table reset every MiB).
    static COMPRESSOR: std::cell::RefCell<Option<(i32, zstd::bulk::Compressor<'static>)>> =
        const { std::cell::RefCell::new(None) };
}

/// Compresses `data` at `level` with this thread's zstd context.
fn compress(data: &[u8], level: i32) -> std::io::Result<Vec<u8>> {
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
    let ext = &extents;
    let mut entries: Vec<(u64, ChunkId)> = Vec::with_capacity(indices.len());
    let mut referenced: HashMap<ChunkId, ()> = HashMap::new();
    let (mut zero_chunks, mut dedup_chunks, mut read_bytes) = (0u64, 0u64, 0u64);
    let mut ticker = Ticker::new();

    let result = run(
        threads,
        |emit| {
            for &idx in &indices {
                if !emit(idx) {
                    break;
                }
            }
            Ok(())
        },
        |idx: u64| -> Result<(Hashed, u64, u64)> {
            // Each worker reads its own chunk: several reads in flight keep the device
            // busy while other workers compress.
            let window = chunk_range(idx, chunk_size, disk_size);
            let (buf, read) =
                read_masked(source, ext, window).map_err(|source| Error::ReadSource {
                    offset: window.offset,
                    source,
                })?;
            let n = buf.len() as u64;
            if is_zero(&buf) {
                return Ok((Hashed::Zero(idx), n, read));
            }
            let id = *blake3::hash(&buf).as_bytes();
            if store.contains(&id) {
                return Ok((Hashed::Known(idx, id), n, read));
            }
            let compressed = compress(&buf, level).map_err(|e| Error::Io {
                what: "compressing chunk for",
                path: format!("disk offset {}", idx * chunk_size as u64).into(),
                source: e,
            })?;
            Ok(if compressed.len() < buf.len() {
                (
                    Hashed::New(
                        idx,
                        id,
                        Encoding::Zstd,
                        n as u32,
                        Payload::Packed(compressed),
                    ),
                    n,
                    read,
                )
            } else {
                (
                    Hashed::New(idx, id, Encoding::Raw, n as u32, Payload::Raw(buf)),
                    n,
                    read,
                )
            })
        },
        |item| {
            let (h, n, read) = item?;
            read_bytes += read;
            match h {
                Hashed::Zero(idx) => {
                    zero_chunks += 1;
                    progress.skipped_chunks += 1;
                    entries.push((idx, ZERO_ID));
                }
                Hashed::Known(idx, id) => {
                    dedup_chunks += 1;
                    progress.skipped_chunks += 1;
                    entries.push((idx, id));
                    referenced.insert(id, ());
                }
                Hashed::New(idx, id, enc, raw_len, payload) => {
                    if writer.put(id, enc, raw_len, &payload)? {
                        progress.written_chunks += 1;
                    } else {
                        dedup_chunks += 1;
                        progress.skipped_chunks += 1;
                    }
                    entries.push((idx, id));
                    referenced.insert(id, ());
                }
            }
            progress.done_chunks += 1;
            progress.done_bytes += n;
            ticker.tick(sink, progress)
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
    let stored_bytes: u64 = referenced
        .keys()
        .filter_map(|id| writer.stored_len(id))
        .map(u64::from)
        .sum();
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
