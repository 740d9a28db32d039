//! The image store: a plain directory of immutable files (FORMAT.md §2).
//!
//! ```text
//! STORE/imprint-store.json      what this directory is (§2)
//! STORE/lock                    writers hold an exclusive lock on it
//! STORE/packs/<id>.pack         chunk records, append-only while open, sealed at ≤ 1 GiB (§3)
//! STORE/packs/<id>.idx          written when its pack is sealed (§4)
//! STORE/images/NAME.json        an image's manifest, committed last (§5)
//! STORE/images/NAME.<h>.map     its chunk map (§6)
//! STORE/{packs,images}/index.list  file lists for readers without directory listings (§9)
//! ```
//!
//! Readers go through a [`Backend`] (a local directory or an HTTP server); writers
//! need a local directory (a mounted network share is one).

use crate::backend::{is_http, Backend, HttpBackend, LocalBackend, INDEX_LIST};
use crate::error::{Error, Result};
use crate::format::*;
use crate::io::{Appender, IoBuf};
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, HashSet};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

pub const STORE_FILE: &str = "imprint-store.json";

thread_local! {
    /// Each thread's zstd decoding context, made once (not once per chunk).
    static DECOMPRESSOR: std::cell::RefCell<Option<zstd::bulk::Decompressor<'static>>> =
        const { std::cell::RefCell::new(None) };
}

/// Decodes the zstd frame `src` into `dst`; returns the decoded length. A frame that
/// decodes to more than `dst` holds is an error.
fn decompress(src: &[u8], dst: &mut [u8]) -> io::Result<usize> {
    DECOMPRESSOR.with(|d| {
        let mut d = d.borrow_mut();
        if d.is_none() {
            *d = Some(zstd::bulk::Decompressor::new()?);
        }
        match d.as_mut() {
            Some(z) => z.decompress_to_buffer(src, dst),
            None => unreachable!("set above"),
        }
    })
}

/// `imprint-store.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoreConfig {
    pub format: String,
    pub version: u32,
    pub chunk_size: u32,
    pub created: String,
}

/// Where a stored chunk lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Location {
    pub pack: u32,
    pub offset: u64,
    pub stored_len: u32,
    pub raw_len: u32,
    pub encoding: Encoding,
    /// A group member's offset in what its frame decodes to (FORMAT.md §3).
    pub skip: u32,
}

impl Location {
    /// The group frame this chunk is decoded from, if it is a group member: chunks
    /// with the same key are decoded together.
    pub fn frame(&self) -> Option<FrameKey> {
        (self.encoding == Encoding::Group).then_some((self.pack, self.offset))
    }
}

/// An image loaded and checked: manifest, map, root hash.
#[derive(Debug, Clone)]
pub struct Image {
    pub manifest: Manifest,
    pub map: ChunkMap,
}

/// An open store: its configuration and the index of every sealed pack.
#[derive(Debug)]
pub struct Store {
    /// The directory for a local store; the URL (for messages only) for an HTTP one.
    root: PathBuf,
    backend: Box<dyn Backend>,
    config: StoreConfig,
    packs: Vec<String>,
    /// Sealed length of each pack, from its index.
    pack_lens: Vec<u64>,
    index: HashMap<ChunkId, Location>,
    /// The writer lock, held by a store opened with [`Store::open_writable`].
    lock: Option<File>,
    /// The group frames [`Store::read_chunk`] decoded last, newest first: a file read
    /// chunk by chunk (the browser) decodes each frame once, not once per member.
    recent: std::sync::Mutex<Vec<(FrameKey, Frame)>>,
}

/// A decoded and verified chunk: a buffer of its own, or its bytes inside a decoded group
/// frame that the frame's other members share (no copy). Either way page-aligned, so a
/// restore writes it with direct I/O.
#[derive(Debug)]
pub enum Chunk {
    Own(IoBuf),
    InFrame(std::sync::Arc<IoBuf>, std::ops::Range<usize>),
}

impl Chunk {
    /// The chunk in a buffer of its own (copied out of a shared frame), for a caller
    /// that keeps chunks a while and should not keep whole frames alive for them.
    pub fn into_own(self) -> IoBuf {
        match self {
            Chunk::Own(b) => b,
            Chunk::InFrame(..) => {
                let mut b = IoBuf::for_overwrite(self.len());
                b.copy_from_slice(&self);
                b
            }
        }
    }
}

impl std::ops::Deref for Chunk {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            Chunk::Own(b) => b,
            Chunk::InFrame(f, r) => &f[r.clone()],
        }
    }
}

/// A group frame: its pack and offset ([`Location::frame`]).
pub type FrameKey = (u32, u64);

/// A decoded group frame, shared by the members taken from it.
type Frame = std::sync::Arc<IoBuf>;

/// Frames [`Store::read_chunk`] keeps decoded.
const RECENT_FRAMES: usize = 2;

/// Checks decoded bytes hash to the chunk's id: nothing unverified leaves the store.
fn check_id(id: &ChunkId, disk_offset: u64, raw: &[u8]) -> Result<()> {
    let actual = *blake3::hash(raw).as_bytes();
    if &actual != id {
        return Err(Error::ChunkDigestMismatch {
            offset: disk_offset,
            expected: *id,
            actual,
        });
    }
    Ok(())
}

fn now_rfc3339() -> String {
    humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string()
}

/// Writes `bytes` to `dir/name` through a temporary file, fsync and rename, then
/// fsyncs the directory, so a crash leaves either the old state or the new file whole.
pub(crate) fn write_atomic(dir: &Path, name: &str, bytes: &[u8]) -> Result<()> {
    let tmp = dir.join(format!(".{name}.tmp"));
    let dst = dir.join(name);
    let mut f = File::create(&tmp).map_err(|e| Error::io("creating", &tmp, e))?;
    f.write_all(bytes).and_then(|_| f.sync_all()).map_err(|e| {
        let _ = fs::remove_file(&tmp);
        Error::io("writing", &tmp, e)
    })?;
    drop(f);
    fs::rename(&tmp, &dst).map_err(|e| Error::io("renaming into place", &dst, e))?;
    sync_dir(dir)
}

fn sync_dir(dir: &Path) -> Result<()> {
    // Some filesystems (FAT over FUSE, SMB) refuse fsync on a directory; the rename
    // itself is what must be durable and they order it anyway.
    match File::open(dir).and_then(|d| d.sync_all()) {
        Ok(()) => Ok(()),
        Err(e) if e.raw_os_error() == Some(22 /* EINVAL */) => Ok(()),
        Err(e) => Err(Error::io("syncing directory", dir, e)),
    }
}

impl Store {
    /// Opens an existing store for reading. Packs that have no index (a capture still
    /// running, or one that died) are not visible; committed images never need them.
    pub fn open(root: &Path) -> Result<Store> {
        Store::open_backend(root.into(), Box::new(LocalBackend::new(root)))
    }

    /// Opens a store for reading from a directory path or an `http(s)://` URL of the
    /// directory that holds `imprint-store.json` (FORMAT.md §9).
    pub fn open_location(location: &str) -> Result<Store> {
        if is_http(location) {
            let b = HttpBackend::new(location)
                .map_err(|e| Error::io("opening store", PathBuf::from(location), e))?;
            Store::open_backend(PathBuf::from(b.describe()), Box::new(b))
        } else {
            Store::open(Path::new(location))
        }
    }

    /// True when this store is read through HTTP (and so can never be written).
    pub fn is_remote(&self) -> bool {
        is_http(&self.backend.describe())
    }

    fn open_backend(root: PathBuf, backend: Box<dyn Backend>) -> Result<Store> {
        let remote = is_http(&backend.describe());
        let cfg_path = root.join(STORE_FILE);
        let bytes = match backend.read(STORE_FILE) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound && remote => {
                return Err(Error::NotAStore {
                    path: root,
                    reason: format!("the server has no {STORE_FILE} there: {e}"),
                });
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let reason = if root.is_dir() {
                    format!("it has no {STORE_FILE}")
                } else if root.exists() {
                    "it is not a directory".to_string()
                } else {
                    "it does not exist".to_string()
                };
                return Err(Error::NotAStore { path: root, reason });
            }
            Err(e) => return Err(Error::io("reading", cfg_path, e)),
        };
        let value: serde_json::Value =
            serde_json::from_slice(&bytes).map_err(|e| Error::StoreConfig {
                path: cfg_path.clone(),
                reason: e.to_string(),
            })?;
        if value.get("format").and_then(|v| v.as_str()) != Some("imprint-store") {
            return Err(Error::NotAStore {
                path: root,
                reason: format!("{STORE_FILE} does not describe an imprint store"),
            });
        }
        let version = value.get("version").and_then(|v| v.as_u64()).unwrap_or(0);
        if !(MIN_STORE_VERSION as u64..=STORE_VERSION as u64).contains(&version) {
            return Err(Error::StoreVersion {
                path: root,
                found: version,
                supported: STORE_VERSION,
            });
        }
        let config: StoreConfig =
            serde_json::from_value(value).map_err(|e| Error::StoreConfig {
                path: cfg_path.clone(),
                reason: e.to_string(),
            })?;
        check_chunk_size(config.chunk_size, &cfg_path)?;
        let mut store = Store {
            root,
            backend,
            config,
            packs: Vec::new(),
            pack_lens: Vec::new(),
            index: HashMap::new(),
            lock: None,
            recent: Default::default(),
        };
        store.load_indexes()?;
        Ok(store)
    }

    /// Creates a store in `root`, which must be missing or an empty directory.
    pub fn create(root: &Path, chunk_size: u32) -> Result<Store> {
        check_chunk_size(chunk_size, &root.join(STORE_FILE))?;
        match fs::read_dir(root) {
            Ok(mut entries) => {
                if entries.next().is_some() {
                    return Err(Error::NotAStore {
                        path: root.into(),
                        reason: format!(
                            "it has no {STORE_FILE} and is not empty; use an empty or new directory for a new store"
                        ),
                    });
                }
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                fs::create_dir_all(root).map_err(|e| Error::io("creating store", root, e))?
            }
            Err(e) => return Err(Error::io("reading", root, e)),
        }
        for d in ["packs", "images"] {
            let p = root.join(d);
            fs::create_dir_all(&p).map_err(|e| Error::io("creating", &p, e))?;
        }
        let config = StoreConfig {
            format: "imprint-store".into(),
            version: STORE_VERSION,
            chunk_size,
            created: now_rfc3339(),
        };
        let bytes = serde_json::to_vec_pretty(&config).unwrap_or_default();
        write_atomic(root, STORE_FILE, &bytes)?;
        Store::open(root)
    }

    /// Opens the store at `root`, creating it when `root` is missing or empty.
    pub fn open_or_create(root: &Path, chunk_size: u32) -> Result<Store> {
        if root.join(STORE_FILE).exists() {
            Store::open(root)
        } else {
            Store::create(root, chunk_size)
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn config(&self) -> &StoreConfig {
        &self.config
    }

    pub fn chunk_size(&self) -> u32 {
        self.config.chunk_size
    }

    /// True when captures may write group records (FORMAT.md §3): the store is version
    /// 2 or later. A version 1 store stays readable by the Imprint that made it.
    pub fn groups(&self) -> bool {
        self.config.version >= GROUP_STORE_VERSION
    }

    fn packs_dir(&self) -> PathBuf {
        self.root.join("packs")
    }

    fn images_dir(&self) -> PathBuf {
        self.root.join("images")
    }

    fn display(&self) -> String {
        self.backend.describe()
    }

    /// Bytes of all sealed packs.
    pub fn pack_bytes(&self) -> u64 {
        self.pack_lens.iter().sum()
    }

    /// Lists `dir` of the store through the backend.
    fn list(&self, dir: &str) -> Result<Vec<String>> {
        self.backend
            .list(dir)
            .map_err(|e| Error::io("listing", self.root.join(dir), e))
    }

    fn load_indexes(&mut self) -> Result<()> {
        let dir = self.packs_dir();
        let mut names: Vec<String> = self
            .list("packs")?
            .into_iter()
            .filter_map(|n| n.strip_suffix(".idx").map(str::to_string))
            .filter(|n| !n.starts_with('.'))
            .collect();
        names.sort();
        for name in names {
            let p = dir.join(format!("{name}.idx"));
            let bytes = self
                .backend
                .read(&format!("packs/{name}.idx"))
                .map_err(|e| Error::io("reading pack index", &p, e))?;
            let (entries, len) = decode_index(&bytes).map_err(|reason| Error::StoreConfig {
                path: p.clone(),
                reason,
            })?;
            self.add_pack(name, &entries, len);
        }
        Ok(())
    }

    fn add_pack(&mut self, name: String, entries: &[IndexEntry], len: u64) {
        let pack = self.packs.len() as u32;
        self.packs.push(name);
        self.pack_lens.push(len);
        for e in entries {
            self.index.entry(e.id).or_insert(Location {
                pack,
                offset: e.offset,
                stored_len: e.stored_len,
                raw_len: e.raw_len,
                encoding: e.encoding,
                skip: e.skip,
            });
        }
    }

    /// True when the store holds this chunk.
    pub fn contains(&self, id: &ChunkId) -> bool {
        self.index.contains_key(id)
    }

    pub fn location(&self, id: &ChunkId) -> Option<Location> {
        self.index.get(id).copied()
    }

    /// Number of distinct chunks in sealed packs.
    pub fn chunk_count(&self) -> usize {
        self.index.len()
    }

    /// `packs/<id>.pack`, relative to the store.
    fn pack_rel(&self, pack: u32) -> String {
        let name = self
            .packs
            .get(pack as usize)
            .map(String::as_str)
            .unwrap_or("?");
        format!("packs/{name}.pack")
    }

    fn pack_path(&self, pack: u32) -> PathBuf {
        self.root.join(self.pack_rel(pack))
    }

    /// Reads a chunk's stored (still encoded) bytes. `disk_offset` is for messages.
    fn read_stored(&self, id: &ChunkId, disk_offset: u64) -> Result<(Location, IoBuf)> {
        let loc = self.location(id).ok_or(Error::ChunkMissing {
            id: *id,
            offset: disk_offset,
        })?;
        let rel = self.pack_rel(loc.pack);
        let buf = self
            .backend
            .read_span(&rel, loc.offset, loc.stored_len as usize)
            .map_err(|e| match e.kind() {
                io::ErrorKind::UnexpectedEof => {
                    self.corrupt(id, disk_offset, &loc, "the pack file is truncated".into())
                }
                io::ErrorKind::InvalidData => self.corrupt(id, disk_offset, &loc, e.to_string()),
                // Not the store's fault (a server that went away, a disk error):
                // say which file could not be read.
                _ => Error::io("reading pack", self.pack_path(loc.pack), e),
            })?;
        Ok((loc, buf))
    }

    /// Decodes stored bytes and checks they hash to `id`; nothing unverified leaves here.
    /// The result is a page-aligned [`IoBuf`], so a restore can write it with direct I/O.
    fn decode(
        &self,
        id: &ChunkId,
        disk_offset: u64,
        loc: &Location,
        stored: IoBuf,
    ) -> Result<Chunk> {
        let (raw, decoded) = match loc.encoding {
            Encoding::Raw => {
                let n = stored.len();
                // A direct read of the pack may have left it off the page boundary.
                (stored.into_aligned(), n)
            }
            Encoding::Zstd => {
                // Every byte the frame decodes to is written; a shorter frame fails below.
                let mut out = IoBuf::for_overwrite(loc.raw_len as usize);
                let n = decompress(&stored, &mut out)
                    .map_err(|e| self.corrupt(id, disk_offset, loc, format!("zstd: {e}")))?;
                (out, n)
            }
            Encoding::Group => {
                let frame = self.decode_frame(id, disk_offset, loc, &stored)?;
                return self.member(id, disk_offset, loc, &Frame::new(frame));
            }
        };
        if decoded != loc.raw_len as usize {
            return Err(self.corrupt(
                id,
                disk_offset,
                loc,
                format!("decoded to {decoded} bytes, expected {}", loc.raw_len),
            ));
        }
        check_id(id, disk_offset, &raw)?;
        Ok(Chunk::Own(raw))
    }

    /// Decodes a whole group frame (FORMAT.md §3): the size its header declares, at most
    /// [`MAX_GROUP_RAW`], and at least enough for the member `loc`.
    fn decode_frame(
        &self,
        id: &ChunkId,
        disk_offset: u64,
        loc: &Location,
        stored: &[u8],
    ) -> Result<IoBuf> {
        let corrupt = |reason: String| self.corrupt(id, disk_offset, loc, reason);
        let size = match zstd::zstd_safe::get_frame_content_size(stored) {
            Ok(Some(n)) if n <= MAX_GROUP_RAW => n as usize,
            Ok(Some(n)) => return Err(corrupt(format!("group frame of {n} bytes"))),
            Ok(None) | Err(_) => {
                return Err(corrupt("group frame without a valid header".into()));
            }
        };
        let mut out = IoBuf::for_overwrite(size);
        let n = decompress(stored, &mut out).map_err(|e| corrupt(format!("zstd: {e}")))?;
        if n != size {
            return Err(corrupt(format!(
                "group decoded to {n} bytes, expected {size}"
            )));
        }
        Ok(out)
    }

    /// Member `loc` of its decoded group frame, checked to hash to `id`.
    fn member(
        &self,
        id: &ChunkId,
        disk_offset: u64,
        loc: &Location,
        frame: &Frame,
    ) -> Result<Chunk> {
        let range = loc.skip as usize..(loc.skip as usize + loc.raw_len as usize);
        let Some(bytes) = frame.get(range.clone()) else {
            return Err(self.corrupt(
                id,
                disk_offset,
                loc,
                format!(
                    "group decoded to {} bytes, too few for this chunk",
                    frame.len()
                ),
            ));
        };
        check_id(id, disk_offset, bytes)?;
        Ok(Chunk::InFrame(frame.clone(), range))
    }

    /// Reads and decodes the group frame that holds chunk `id`; returns it and the stored
    /// bytes read.
    fn read_frame(&self, id: &ChunkId, disk_offset: u64) -> Result<(Frame, u64)> {
        let (loc, stored) = self.read_stored(id, disk_offset)?;
        let frame = self.decode_frame(id, disk_offset, &loc, &stored)?;
        Ok((Frame::new(frame), stored.len() as u64))
    }

    /// The location and frame of a chunk stored as a group member.
    fn member_of_frame(&self, id: &ChunkId) -> Option<(Location, FrameKey)> {
        self.location(id).and_then(|l| Some((l, l.frame()?)))
    }

    /// Reads, decodes and verifies one chunk.
    pub fn read_chunk(&self, id: &ChunkId, disk_offset: u64) -> Result<Chunk> {
        let Some((loc, frame)) = self.member_of_frame(id) else {
            let (loc, stored) = self.read_stored(id, disk_offset)?;
            return self.decode(id, disk_offset, &loc, stored);
        };
        let cached = self
            .recent
            .lock()
            .ok()
            .and_then(|r| r.iter().find(|(k, _)| *k == frame).map(|(_, f)| f.clone()));
        let decoded = match cached {
            Some(f) => f,
            None => {
                let (f, _) = self.read_frame(id, disk_offset)?;
                if let Ok(mut r) = self.recent.lock() {
                    r.insert(0, (frame, f.clone()));
                    r.truncate(RECENT_FRAMES);
                }
                f
            }
        };
        self.member(id, disk_offset, &loc, &decoded)
    }

    /// Cuts `items` (chunks, in the order a job goes through them) into batches for
    /// [`crate::pipeline::run`]'s workers, handing each to `emit` until it returns false.
    /// The chunks of one group frame go into one batch, with any all-zero chunks
    /// between them (nothing to read), so a worker reads and decodes the frame once
    /// ([`Store::read_chunks`]) and workers decode different frames at the same time.
    /// Every other chunk is a batch of its own, so a batch holds at most one frame's
    /// bytes.
    pub fn batches<T: Copy>(
        &self,
        items: &[T],
        id: impl Fn(&T) -> ChunkId,
        emit: &dyn Fn(Vec<T>) -> bool,
    ) {
        const MAX_BATCH: usize = 64;
        let mut batch: Vec<T> = Vec::new();
        let mut frame = None;
        for item in items {
            let loc = self.location(&id(item));
            let key = loc.and_then(|l| l.frame());
            // A chunk stored alone, or one of another frame, starts a batch of its own.
            let apart = loc.is_some() && key != frame;
            if !batch.is_empty() && (frame.is_none() || apart || batch.len() >= MAX_BATCH) {
                if !emit(std::mem::take(&mut batch)) {
                    return;
                }
                frame = None;
            }
            if frame.is_none() {
                frame = key;
            }
            batch.push(*item);
        }
        if !batch.is_empty() {
            emit(batch);
        }
    }

    /// Reads, decodes and verifies several chunks (id and disk offset each), reading
    /// and decoding each group frame among them once. Returns each chunk, or its
    /// error, in order, with the stored bytes read for it (a frame's are counted on the
    /// first of its members).
    pub fn read_chunks(&self, wants: &[(ChunkId, u64)]) -> Vec<Result<(Chunk, u64)>> {
        let mut frames: Vec<(FrameKey, Result<Frame>)> = Vec::new();
        wants
            .iter()
            .map(|(id, off)| {
                let Some((loc, key)) = self.member_of_frame(id) else {
                    let (loc, stored) = self.read_stored(id, *off)?;
                    let n = stored.len() as u64;
                    return Ok((self.decode(id, *off, &loc, stored)?, n));
                };
                let mut read = 0;
                if !frames.iter().any(|(k, _)| *k == key) {
                    let frame = self.read_frame(id, *off).map(|(frame, n)| {
                        read = n;
                        frame
                    });
                    frames.push((key, frame));
                }
                match frames.iter().find(|(k, _)| *k == key) {
                    Some((_, Ok(frame))) => Ok((self.member(id, *off, &loc, frame)?, read)),
                    // Each member says the frame's failure at its own offset.
                    _ => {
                        let (loc, stored) = self.read_stored(id, *off)?;
                        Ok((self.decode(id, *off, &loc, stored)?, 0))
                    }
                }
            })
            .collect()
    }

    fn corrupt(&self, id: &ChunkId, offset: u64, loc: &Location, reason: String) -> Error {
        Error::ChunkCorrupt {
            id: *id,
            offset,
            pack: self.pack_path(loc.pack).display().to_string(),
            pack_offset: loc.offset,
            reason,
        }
    }

    // ---- images ----

    /// Names of committed images (those whose manifest exists), sorted.
    pub fn image_names(&self) -> Result<Vec<String>> {
        let mut v: Vec<String> = self
            .list("images")?
            .into_iter()
            .filter(|n| !n.starts_with('.'))
            .filter_map(|n| n.strip_suffix(".json").map(str::to_string))
            .collect();
        v.sort();
        Ok(v)
    }

    /// Loads an image and checks everything that can be checked without reading chunks:
    /// name, format version, manifest shape, map checksum and structure, root hash.
    pub fn load_image(&self, name: &str) -> Result<Image> {
        validate_name(name).map_err(|reason| Error::BadName {
            name: name.into(),
            reason,
        })?;
        let p = self.images_dir().join(format!("{name}.json"));
        let bytes = match self.backend.read(&format!("images/{name}.json")) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(Error::ImageNotFound {
                    name: name.into(),
                    store: self.display(),
                })
            }
            Err(e) => return Err(Error::io("reading manifest", p, e)),
        };
        let malformed = |reason: String| Error::ManifestMalformed {
            name: name.into(),
            reason,
        };
        let value: serde_json::Value =
            serde_json::from_slice(&bytes).map_err(|e| malformed(e.to_string()))?;
        if value.get("format").and_then(|v| v.as_str()) != Some("imprint-image") {
            return Err(malformed("\"format\" is not \"imprint-image\"".into()));
        }
        let version = value
            .get("format_version")
            .and_then(|v| v.as_u64())
            .ok_or_else(|| malformed("no \"format_version\"".into()))?;
        if version != FORMAT_VERSION as u64 {
            return Err(Error::FormatVersion {
                name: name.into(),
                found: version,
                supported: FORMAT_VERSION,
            });
        }
        let manifest: Manifest =
            serde_json::from_value(value).map_err(|e| malformed(e.to_string()))?;
        if manifest.name != name {
            return Err(malformed(format!("it names itself {:?}", manifest.name)));
        }
        if manifest.map_file.contains(['/', '\\']) || manifest.map_file.starts_with('.') {
            return Err(malformed("map_file is not a plain file name".into()));
        }
        let map_err = |reason: String| Error::MapCorrupt {
            name: name.into(),
            reason,
        };
        let mp = self.images_dir().join(&manifest.map_file);
        let map_bytes = self
            .backend
            .read(&format!("images/{}", manifest.map_file))
            .map_err(|e| map_err(format!("{}: {e}", mp.display())))?;
        let map = ChunkMap::decode(&map_bytes).map_err(map_err)?;
        let actual = manifest.compute_root_hash(&map_bytes);
        if actual != manifest.root_hash {
            return Err(Error::RootHashMismatch {
                name: name.into(),
                expected: manifest.root_hash.clone(),
                actual,
            });
        }
        if map.chunk_size != manifest.chunk_size
            || map.disk_size != manifest.source.size
            || map.chunk_size != self.config.chunk_size
        {
            return Err(map_err(format!(
                "chunk size {} / disk size {} disagree with the manifest ({} / {}) or the store (chunk size {})",
                map.chunk_size, map.disk_size, manifest.chunk_size, manifest.source.size, self.config.chunk_size
            )));
        }
        Ok(Image { manifest, map })
    }

    /// Opens (creating when `root` is missing or empty) a store for capture: takes the
    /// writer lock, then recovers the packs of captures that died.
    pub fn open_writable(root: &Path, chunk_size: u32) -> Result<Store> {
        if is_http(&root.to_string_lossy()) {
            return Err(Error::ReadOnlyStore {
                store: root.display().to_string(),
            });
        }
        let mut store = Store::open_or_create(root, chunk_size)?;
        let lock_path = root.join("lock");
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| Error::io("opening store lock", &lock_path, e))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => {
                return Err(Error::StoreBusy { store: root.into() })
            }
            // Some network filesystems cannot lock; a second writer there still only
            // adds packs of its own and never touches ours.
            Err(fs::TryLockError::Error(e)) if e.kind() == io::ErrorKind::Unsupported => {}
            Err(fs::TryLockError::Error(e)) => {
                return Err(Error::io("locking store", &lock_path, e))
            }
        }
        store.lock = Some(lock);
        store.recover_orphan_packs()?;
        // A store written by an older imprint, or one copied in by hand, gets its lists.
        store.write_list("packs")?;
        store.write_list("images")?;
        Ok(store)
    }

    /// A writer for one capture. The store must have been opened with [`Store::open_writable`].
    /// Chunks it adds become visible to this `Store` value only when reopened.
    pub fn writer(&self) -> Result<StoreWriter<'_>> {
        if self.lock.is_none() {
            return Err(Error::ReadOnlyStore {
                store: self.display(),
            });
        }
        Ok(StoreWriter {
            store: self,
            pack: None,
            session: HashMap::new(),
            records: 0,
            new_bytes: 0,
        })
    }

    /// Under the writer lock, a pack without an index belongs to a capture that died.
    /// Its intact records are kept (a rerun reuses them) and the pack is sealed.
    fn recover_orphan_packs(&mut self) -> Result<()> {
        let dir = self.packs_dir();
        let all = list_dir(&dir)?;
        let orphans: Vec<String> = all
            .iter()
            .filter(|n| !n.starts_with('.'))
            .filter_map(|n| n.strip_suffix(".pack"))
            .filter(|n| !all.contains(&format!("{n}.idx")))
            .map(str::to_string)
            .collect();
        for name in orphans {
            let p = dir.join(format!("{name}.pack"));
            let (entries, good_len) = scan_pack(&p)?;
            if entries.is_empty() {
                fs::remove_file(&p).map_err(|e| Error::io("removing empty pack", &p, e))?;
                continue;
            }
            let f = OpenOptions::new()
                .write(true)
                .open(&p)
                .map_err(|e| Error::io("opening pack", &p, e))?;
            f.set_len(good_len)
                .and_then(|_| f.sync_all())
                .map_err(|e| Error::io("truncating pack to its intact records", &p, e))?;
            write_atomic(
                &dir,
                &format!("{name}.idx"),
                &encode_index(&entries, good_len, self.config.version),
            )?;
            self.add_pack(name, &entries, good_len);
        }
        Ok(())
    }

    /// Rewrites `dir/index.list` from the directory itself (FORMAT.md §9): the sealed
    /// packs' `.idx` files, or the committed images' `.json` manifests, sorted, one a line.
    fn write_list(&self, dir: &str) -> Result<()> {
        let suffix = if dir == "packs" { ".idx" } else { ".json" };
        let path = self.root.join(dir);
        let mut names: Vec<String> = list_dir(&path)?
            .into_iter()
            .filter(|n| !n.starts_with('.') && n.ends_with(suffix))
            .collect();
        names.sort();
        let mut text = String::new();
        for n in names {
            text.push_str(&n);
            text.push('\n');
        }
        write_atomic(&path, INDEX_LIST, text.as_bytes())
    }
}

/// Reads a pack record by record, keeping each record whose header is intact and whose
/// payload decodes to its id; stops at the first that is not. Returns the kept entries
/// and the length of the intact prefix.
fn scan_pack(p: &Path) -> Result<(Vec<IndexEntry>, u64)> {
    let f = File::open(p).map_err(|e| Error::io("opening pack", p, e))?;
    let len = f
        .metadata()
        .map_err(|e| Error::io("reading pack size", p, e))?
        .len();
    let mut entries = Vec::new();
    let mut hdr = [0u8; PACK_HEADER_LEN as usize];
    if len < PACK_HEADER_LEN || f.read_exact_at(&mut hdr, 0).is_err() || &hdr[..8] != PACK_MAGIC {
        return Ok((entries, 0));
    }
    let mut pos = PACK_HEADER_LEN;
    let mut seen = HashSet::new();
    loop {
        let mut h = [0u8; RECORD_HEADER_LEN];
        if pos + RECORD_HEADER_LEN as u64 > len || f.read_exact_at(&mut h, pos).is_err() {
            break;
        }
        let Ok(rec) = RecordHeader::decode(&h) else {
            break;
        };
        let start = pos + RECORD_HEADER_LEN as u64;
        let end = start + rec.stored_len as u64;
        if end > len {
            break;
        }
        let mut payload = vec![0u8; rec.stored_len as usize];
        if f.read_exact_at(&mut payload, start).is_err() {
            break;
        }
        let kept = match rec.encoding {
            Encoding::Raw => scan_single(&rec, start, &payload),
            Encoding::Zstd => zstd::bulk::decompress(&payload, rec.raw_len as usize)
                .ok()
                .and_then(|raw| scan_single(&rec, start, &raw)),
            Encoding::Group => scan_group(&rec, start, &payload),
        };
        let Some(kept) = kept else {
            break;
        };
        entries.extend(kept.into_iter().filter(|e| seen.insert(e.id)));
        pos = end;
    }
    let good_len = if entries.is_empty() { 0 } else { pos };
    Ok((entries, good_len))
}

/// The index entry of a single-chunk record found by [`scan_pack`], if its payload
/// decoded to `raw` hashes to its id.
fn scan_single(rec: &RecordHeader, start: u64, raw: &[u8]) -> Option<Vec<IndexEntry>> {
    (blake3::hash(raw).as_bytes() == &rec.id).then(|| {
        vec![IndexEntry {
            id: rec.id,
            offset: start,
            stored_len: rec.stored_len,
            raw_len: rec.raw_len,
            encoding: rec.encoding,
            skip: 0,
        }]
    })
}

/// The index entries of a group record found by [`scan_pack`] (FORMAT.md §3), if its
/// member table matches the header's id and every member decodes to its id.
fn scan_group(rec: &RecordHeader, start: u64, payload: &[u8]) -> Option<Vec<IndexEntry>> {
    let (members, table) = decode_members(payload).ok()?;
    if blake3::hash(&payload[..table]).as_bytes() != &rec.id || rec.raw_len as u64 > MAX_GROUP_RAW {
        return None;
    }
    let raw = zstd::bulk::decompress(&payload[table..], rec.raw_len as usize).ok()?;
    let mut skip = 0usize;
    let mut entries = Vec::with_capacity(members.len());
    for (id, len) in members {
        let chunk = raw.get(skip..skip + len as usize)?;
        if blake3::hash(chunk).as_bytes() != &id {
            return None;
        }
        entries.push(IndexEntry {
            id,
            offset: start + table as u64,
            stored_len: (payload.len() - table) as u32,
            raw_len: len,
            encoding: Encoding::Group,
            skip: skip as u32,
        });
        skip += len as usize;
    }
    (skip == raw.len()).then_some(entries)
}

/// A store's chunk size must be a power of two in 4 KiB..64 MiB (FORMAT.md §2).
fn check_chunk_size(chunk_size: u32, cfg_path: &Path) -> Result<()> {
    if chunk_size.is_power_of_two() && (4096..=1 << 26).contains(&chunk_size) {
        return Ok(());
    }
    Err(Error::StoreConfig {
        path: cfg_path.into(),
        reason: format!("chunk size {chunk_size} is not a power of two in 4 KiB..64 MiB"),
    })
}

fn list_dir(dir: &Path) -> Result<Vec<String>> {
    let rd = match fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io("listing", dir, e)),
    };
    let mut v = Vec::new();
    for e in rd {
        let e = e.map_err(|e| Error::io("listing", dir, e))?;
        if let Some(n) = e.file_name().to_str() {
            v.push(n.to_string());
        }
    }
    Ok(v)
}

fn random_id() -> [u8; 16] {
    // Unique enough to never collide between writers: time, pid and a hash of both.
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let mut h = blake3::Hasher::new();
    h.update(&t.to_le_bytes());
    h.update(&std::process::id().to_le_bytes());
    h.update(&(&t as *const u128 as usize).to_le_bytes());
    arr(&h.finalize().as_bytes()[..16])
}

struct OpenPack {
    name: String,
    path: PathBuf,
    file: Appender,
    len: u64,
    /// Bytes of the pack handed to early writeback so far ([`OpenPack::write_back`]).
    written_back: u64,
    entries: Vec<IndexEntry>,
}

/// How many new pack bytes start an early writeback.
const WRITEBACK_STEP: u64 = 32 << 20;

impl OpenPack {
    /// Starts writing the pack's newest bytes to the disk now, while the capture goes on,
    /// and drops the pages written back earlier from the page cache. Without it the whole
    /// pack waits in memory (a few GiB of RAM hold it below the kernel's dirty limits)
    /// and [`StoreWriter::seal`]'s fsync writes it all while nothing else runs: 0.7 s of
    /// a 7 s capture (docs/PERFORMANCE.md). `POSIX_FADV_DONTNEED` starts writeback of
    /// dirty pages without waiting, and drops clean ones; it is advice, so an error (a
    /// file system without it) changes nothing and the fsync still makes it durable.
    fn write_back(&mut self) {
        let on_disk = self.file.on_disk();
        if self.file.is_direct() || on_disk < self.written_back + WRITEBACK_STEP {
            return;
        }
        let from = self.written_back.saturating_sub(2 * WRITEBACK_STEP);
        let _ = rustix::fs::fadvise(
            self.file.file(),
            from,
            std::num::NonZeroU64::new(on_disk - from),
            rustix::fs::Advice::DontNeed,
        );
        self.written_back = on_disk;
    }
}

/// The store while a capture writes to it: holds the writer lock, the open pack, and
/// the ids added in this session.
pub struct StoreWriter<'a> {
    store: &'a Store,
    pack: Option<OpenPack>,
    /// Ids added in this session, with the number of the record that holds them (one
    /// group record holds several) and its stored length.
    session: HashMap<ChunkId, (u64, u32)>,
    /// Records written in this session.
    records: u64,
    new_bytes: u64,
}

impl std::fmt::Debug for StoreWriter<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreWriter")
            .field("store", &self.store.root)
            .field("new_chunks", &self.session.len())
            .finish()
    }
}

impl<'a> StoreWriter<'a> {
    pub fn store(&self) -> &'a Store {
        self.store
    }

    /// True when the chunk is stored already or was added in this session.
    pub fn has(&self, id: &ChunkId) -> bool {
        self.session.contains_key(id) || self.store.contains(id)
    }

    /// Stored bytes of the given distinct chunks, in the store or added in this session,
    /// counting a group record's bytes once however many of its members are given.
    pub fn stored_bytes<'b>(&self, ids: impl Iterator<Item = &'b ChunkId>) -> u64 {
        let mut records = HashSet::new();
        ids.filter_map(|id| match self.session.get(id) {
            Some(&(record, len)) => Some(((u32::MAX, record), len)),
            None => self
                .store
                .location(id)
                .map(|l| ((l.pack, l.offset), l.stored_len)),
        })
        .filter(|(record, _)| records.insert(*record))
        .map(|(_, len)| u64::from(len))
        .sum()
    }

    /// Compressed bytes added so far.
    pub fn new_bytes(&self) -> u64 {
        self.new_bytes
    }

    /// Chunks added so far.
    pub fn new_chunks(&self) -> u64 {
        self.session.len() as u64
    }

    /// Appends one encoded chunk unless it is already stored. Returns true if written.
    pub fn put(
        &mut self,
        id: ChunkId,
        encoding: Encoding,
        raw_len: u32,
        payload: &[u8],
    ) -> Result<bool> {
        if self.has(&id) {
            return Ok(false);
        }
        let header = RecordHeader {
            encoding,
            stored_len: payload.len() as u32,
            raw_len,
            id,
        };
        let at = self.append(&header, &[payload])?;
        self.index(IndexEntry {
            id,
            offset: at,
            stored_len: payload.len() as u32,
            raw_len,
            encoding,
            skip: 0,
        });
        Ok(true)
    }

    /// Appends a group record (FORMAT.md §3): `frame` is one zstd frame of the members'
    /// bytes, back to back, in order. Members already stored get no index entry; when
    /// all are, nothing is written. Returns, per member, whether it was added.
    pub fn put_group(&mut self, members: &[Member], frame: &[u8]) -> Result<Vec<bool>> {
        let added: Vec<bool> = members.iter().map(|(id, _)| !self.has(id)).collect();
        if !added.contains(&true) {
            return Ok(added);
        }
        let table = encode_members(members);
        let header = RecordHeader {
            encoding: Encoding::Group,
            stored_len: (table.len() + frame.len()) as u32,
            raw_len: members.iter().map(|(_, n)| n).sum(),
            id: *blake3::hash(&table).as_bytes(),
        };
        let at = self.append(&header, &[&table, frame])?;
        let mut skip = 0;
        for (&(id, raw_len), &new) in members.iter().zip(&added) {
            if new {
                self.index(IndexEntry {
                    id,
                    offset: at + table.len() as u64,
                    stored_len: frame.len() as u32,
                    raw_len,
                    encoding: Encoding::Group,
                    skip,
                });
            }
            skip += raw_len;
        }
        Ok(added)
    }

    /// Writes one record (its header, then the payload's parts) to the open pack,
    /// sealing a full one and opening a new one first. Returns the payload's offset.
    fn append(&mut self, header: &RecordHeader, payload: &[&[u8]]) -> Result<u64> {
        let len: u64 = payload.iter().map(|p| p.len() as u64).sum();
        let rec_len = RECORD_HEADER_LEN as u64 + len;
        if self
            .pack
            .as_ref()
            .is_some_and(|p| p.len + rec_len > MAX_PACK_BYTES)
        {
            self.seal()?;
        }
        if self.pack.is_none() {
            self.pack = Some(self.new_pack()?);
        }
        let Some(pack) = self.pack.as_mut() else {
            unreachable!("a pack was just opened")
        };
        let mut r = pack.file.write_all(&header.encode());
        for part in payload {
            r = r.and_then(|_| pack.file.write_all(part));
        }
        if let Err(e) = r {
            return Err(Error::io("writing pack", &pack.path, e));
        }
        let at = pack.len + RECORD_HEADER_LEN as u64;
        pack.len += rec_len;
        pack.write_back();
        self.records += 1;
        self.new_bytes += len;
        Ok(at)
    }

    /// Records a chunk of the record [`StoreWriter::append`] just wrote.
    fn index(&mut self, entry: IndexEntry) {
        self.session
            .insert(entry.id, (self.records, entry.stored_len));
        if let Some(pack) = self.pack.as_mut() {
            pack.entries.push(entry);
        }
    }

    fn new_pack(&self) -> Result<OpenPack> {
        let id = random_id();
        let name = crate::error::hex(&id);
        let path = self.store.packs_dir().join(format!("{name}.pack"));
        let f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(|e| Error::io("creating pack", &path, e))?;
        let mut file = Appender::new(f, 4 << 20);
        file.write_all(&pack_header(&id, self.store.config.version))
            .map_err(|e| Error::io("writing pack", &path, e))?;
        Ok(OpenPack {
            name,
            path,
            file,
            len: PACK_HEADER_LEN,
            written_back: 0,
            entries: Vec::new(),
        })
    }

    /// Flushes and fsyncs the open pack and commits its index. After this every chunk
    /// written so far is durable and visible to readers.
    pub fn seal(&mut self) -> Result<()> {
        let Some(mut pack) = self.pack.take() else {
            return Ok(());
        };
        pack.file
            .sync()
            .map_err(|e| Error::io("syncing pack", &pack.path, e))?;
        let idx = encode_index(&pack.entries, pack.len, self.store.config.version);
        write_atomic(&self.store.packs_dir(), &format!("{}.idx", pack.name), &idx)?;
        self.store.write_list("packs")
    }

    /// Drops the open pack after a failure that makes it useless (a full disk): the
    /// chunks are lost, the space comes back. Other failures keep it for recovery.
    pub fn discard_open_pack(&mut self) {
        if let Some(pack) = self.pack.take() {
            pack.file.abandon();
            let _ = fs::remove_file(&pack.path);
        }
    }

    /// Commits an image: seals packs, writes the map, then the manifest last (FORMAT.md §7).
    pub fn commit_image(&mut self, mut manifest: Manifest, map: &ChunkMap) -> Result<Manifest> {
        validate_name(&manifest.name).map_err(|reason| Error::BadName {
            name: manifest.name.clone(),
            reason,
        })?;
        self.check_name_free(&manifest.name)?;
        self.seal()?;
        let map_bytes = map.encode();
        let map_hash = crate::error::hex(&blake3::hash(&map_bytes).as_bytes()[..8]);
        manifest.map_file = format!("{}.{map_hash}.map", manifest.name);
        manifest.root_hash = manifest.compute_root_hash(&map_bytes);
        let dir = self.store.images_dir();
        write_atomic(&dir, &manifest.map_file, &map_bytes)?;
        let json = serde_json::to_vec_pretty(&manifest).unwrap_or_default();
        write_atomic(&dir, &format!("{}.json", manifest.name), &json)?;
        self.store.write_list("images")?;
        Ok(manifest)
    }

    /// Refuses a name already used, compared without case because FAT, exFAT, NTFS and
    /// SMB shares treat `Lab` and `lab` as one file.
    pub fn check_name_free(&self, name: &str) -> Result<()> {
        let lower = name.to_lowercase();
        if let Some(existing) = self
            .store
            .image_names()?
            .into_iter()
            .find(|n| n.to_lowercase() == lower)
        {
            return Err(Error::ImageExists {
                existing,
                store: self.store.display(),
            });
        }
        Ok(())
    }
}

pub(crate) fn now() -> String {
    now_rfc3339()
}
