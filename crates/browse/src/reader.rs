//! Positional reads of an image's disk address space (FORMAT.md §6), straight from the
//! store: a read fetches, decodes and verifies only the chunks it touches.

use imaging::format::{ChunkId, ZERO_ID};
use imaging::{Image, Store};
use std::collections::VecDeque;
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// Decoded chunks kept in memory. 16 × 1 MiB covers the kernel's readahead window and
/// the metadata a filesystem walks back and forth (superblock, group descriptors, inode
/// tables of a directory) without holding much memory.
pub const DEFAULT_CACHE_CHUNKS: usize = 16;

/// A read-only view of an image as the disk it was captured from. Chunks that are all
/// zero or were not captured (unused blocks) read as zeros; every stored chunk is
/// checked against its BLAKE3 id before a byte of it is returned.
#[derive(Debug)]
pub struct ImageReader {
    store: Arc<Store>,
    entries: Vec<(u64, ChunkId)>,
    chunk_size: u64,
    size: u64,
    cache: Mutex<VecDeque<(u64, Arc<imaging::io::IoBuf>)>>,
    cache_chunks: usize,
    fetched: AtomicU64,
}

impl ImageReader {
    pub fn new(store: Arc<Store>, image: &Image) -> Self {
        Self::with_cache(store, image, DEFAULT_CACHE_CHUNKS)
    }

    /// A reader that keeps at most `cache_chunks` decoded chunks (at least one).
    pub fn with_cache(store: Arc<Store>, image: &Image, cache_chunks: usize) -> Self {
        ImageReader {
            store,
            entries: image.map.entries.clone(),
            chunk_size: image.map.chunk_size as u64,
            size: image.map.disk_size,
            cache: Mutex::new(VecDeque::new()),
            cache_chunks: cache_chunks.max(1),
            fetched: AtomicU64::new(0),
        }
    }

    /// The disk's size in bytes.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Chunks read from the store and decoded so far (cache misses on stored chunks).
    pub fn chunks_fetched(&self) -> u64 {
        self.fetched.load(Ordering::Relaxed)
    }

    /// The id of chunk `idx`, or `None` when it reads as zeros.
    pub fn chunk_id(&self, idx: u64) -> Option<&ChunkId> {
        let i = self.entries.binary_search_by_key(&idx, |e| e.0).ok()?;
        let id = &self.entries[i].1;
        (id != &ZERO_ID).then_some(id)
    }

    /// Indices of the chunks that hold stored (non-zero) data, ascending.
    pub fn stored_chunks(&self) -> impl Iterator<Item = u64> + '_ {
        self.entries
            .iter()
            .filter(|(_, id)| id != &ZERO_ID)
            .map(|(i, _)| *i)
    }

    /// The chunk size in bytes.
    pub fn chunk_size(&self) -> u64 {
        self.chunk_size
    }

    /// The decoded content of chunk `idx`, or `None` when it reads as zeros.
    pub fn chunk(&self, idx: u64) -> imaging::Result<Option<Arc<imaging::io::IoBuf>>> {
        let Some(id) = self.chunk_id(idx) else {
            return Ok(None);
        };
        {
            let mut c = self.cache.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(pos) = c.iter().position(|(i, _)| *i == idx) {
                let hit = c.remove(pos).expect("position is in range");
                let data = hit.1.clone();
                c.push_front(hit);
                return Ok(Some(data));
            }
        }
        // Decode outside the lock: two threads may race on one chunk, which only costs
        // a second decode.
        // A chunk of its own: the cache must not hold whole group frames alive.
        let data = Arc::new(self.store.read_chunk(id, idx * self.chunk_size)?.into_own());
        self.fetched.fetch_add(1, Ordering::Relaxed);
        let mut c = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        if !c.iter().any(|(i, _)| *i == idx) {
            c.push_front((idx, data.clone()));
            c.truncate(self.cache_chunks);
        }
        Ok(Some(data))
    }

    /// Reads up to `buf.len()` bytes at `offset`; fewer only at the end of the disk.
    pub fn read_at(&self, buf: &mut [u8], offset: u64) -> imaging::Result<usize> {
        if offset >= self.size {
            return Ok(0);
        }
        let n = (buf.len() as u64).min(self.size - offset) as usize;
        let mut done = 0;
        while done < n {
            let pos = offset + done as u64;
            let idx = pos / self.chunk_size;
            let within = (pos % self.chunk_size) as usize;
            let take = (n - done).min(self.chunk_size as usize - within);
            let out = &mut buf[done..done + take];
            match self.chunk(idx)? {
                None => out.fill(0),
                Some(data) => {
                    // A chunk's content may be shorter than the chunk size only at the
                    // disk's end; anything past it reads as zeros.
                    let avail = data.len().saturating_sub(within).min(take);
                    out[..avail].copy_from_slice(&data[within..within + avail]);
                    out[avail..].fill(0);
                }
            }
            done += take;
        }
        Ok(n)
    }
}

impl imaging::ReadAt for ImageReader {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        let n = self.read_at(buf, offset).map_err(io::Error::other)?;
        if n < buf.len() {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!(
                    "read past the end of the image's disk ({} bytes)",
                    self.size
                ),
            ));
        }
        Ok(())
    }
}

/// A window `[start, start + size)` of an image's disk: the whole disk or one partition.
#[derive(Debug, Clone)]
pub struct View {
    pub reader: Arc<ImageReader>,
    pub start: u64,
    pub size: u64,
}

impl View {
    pub fn whole(reader: Arc<ImageReader>) -> Self {
        let size = reader.size();
        View {
            reader,
            start: 0,
            size,
        }
    }

    /// Reads up to `buf.len()` bytes at `offset` inside the window; fewer at its end.
    pub fn read_at(&self, buf: &mut [u8], offset: u64) -> imaging::Result<usize> {
        if offset >= self.size {
            return Ok(0);
        }
        let n = (buf.len() as u64).min(self.size - offset) as usize;
        self.reader.read_at(&mut buf[..n], self.start + offset)
    }
}
