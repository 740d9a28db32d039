//! Positional I/O: the only way the engine touches a disk or a file.
//!
//! Positional reads and writes (rather than `Read + Seek`) let several threads work on
//! one device without sharing a cursor. Devices, ioctls and paths live in the `disks`
//! crate; here a disk is anything that implements these traits.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::sync::Mutex;

/// Reads at absolute byte offsets.
pub trait ReadAt: Send + Sync {
    /// Fills `buf` from `offset`, or fails (`UnexpectedEof` when the source is shorter).
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()>;
}

/// Writes at absolute byte offsets.
pub trait WriteAt: Send + Sync {
    /// Writes all of `buf` at `offset`.
    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()>;
    /// Makes every write so far durable (fsync for files and block devices).
    fn sync(&self) -> io::Result<()>;
}

impl ReadAt for File {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        FileExt::read_exact_at(self, buf, offset)
    }
}

impl WriteAt for File {
    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        FileExt::write_all_at(self, buf, offset)
    }
    fn sync(&self) -> io::Result<()> {
        self.sync_all()
    }
}

impl<T: ReadAt + ?Sized> ReadAt for &T {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        (**self).read_exact_at(buf, offset)
    }
}

impl<T: WriteAt + ?Sized> WriteAt for &T {
    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        (**self).write_all_at(buf, offset)
    }
    fn sync(&self) -> io::Result<()> {
        (**self).sync()
    }
}

/// Alignment of buffers, offsets and lengths for direct I/O (`O_DIRECT`): a multiple of
/// every logical sector size (512, 4096) and of the usual filesystem block size.
pub const DIRECT_ALIGN: usize = 4096;

/// A file read and written through two descriptors: one opened with `O_DIRECT`, used
/// for reads and writes whose buffer, offset and length are all [`DIRECT_ALIGN`]-aligned,
/// and the plain one for everything else. Direct I/O skips the page cache and its copy:
/// measured in docs/PERFORMANCE.md, it saves most of the kernel time a capture spends
/// reading and a restore spends writing. A direct request the file system refuses
/// (`EINVAL`) is retried through the plain descriptor, so the result never depends on
/// which one served it. `sync` fsyncs the plain descriptor, which makes both durable
/// (fsync flushes the file's or the device's write cache, whichever descriptor wrote).
#[derive(Debug)]
pub struct DirectFile<'a> {
    plain: &'a File,
    direct: Option<File>,
}

impl<'a> DirectFile<'a> {
    /// `direct` is the same file opened with `O_DIRECT` (read-write for writes), or None
    /// to go through the page cache only.
    pub fn new(plain: &'a File, direct: Option<File>) -> Self {
        DirectFile { plain, direct }
    }

    /// True when reads can bypass the page cache.
    pub fn is_direct(&self) -> bool {
        self.direct.is_some()
    }
}

/// True when `buf`, `offset` and the length all sit on [`DIRECT_ALIGN`] boundaries.
fn direct_aligned(buf: &[u8], offset: u64) -> bool {
    let a = DIRECT_ALIGN;
    starts_aligned(buf) && buf.len().is_multiple_of(a) && offset.is_multiple_of(a as u64)
}

/// True when `buf`'s data starts on a [`DIRECT_ALIGN`] boundary.
fn starts_aligned(buf: &[u8]) -> bool {
    (buf.as_ptr() as usize).is_multiple_of(DIRECT_ALIGN)
}

impl ReadAt for DirectFile<'_> {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        if let Some(d) = &self.direct {
            if direct_aligned(buf, offset) {
                match FileExt::read_exact_at(d, buf, offset) {
                    Err(e) if e.raw_os_error() == Some(EINVAL) => {}
                    r => return r,
                }
            }
        }
        FileExt::read_exact_at(self.plain, buf, offset)
    }
}

impl DirectFile<'_> {
    /// [`WriteAt::write_all_at`], saying which descriptor wrote: true for the direct one.
    fn write_all_at_saying(&self, buf: &[u8], offset: u64) -> io::Result<bool> {
        if let Some(d) = &self.direct {
            if direct_aligned(buf, offset) {
                match FileExt::write_all_at(d, buf, offset) {
                    // Refused, or opened read-only (EBADF): the plain descriptor writes it.
                    Err(e) if matches!(e.raw_os_error(), Some(EINVAL | EBADF)) => {}
                    r => return r.map(|()| true),
                }
            }
        }
        FileExt::write_all_at(self.plain, buf, offset).map(|()| false)
    }
}

impl WriteAt for DirectFile<'_> {
    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.write_all_at_saying(buf, offset).map(drop)
    }
    fn sync(&self) -> io::Result<()> {
        self.plain.sync_all()
    }
}

/// An append-only file (a pack) written through one [`DIRECT_ALIGN`]-aligned buffer:
/// each full buffer goes to the file as one direct write, skipping the page-cache copy
/// that was a tenth of a capture's CPU (docs/PERFORMANCE.md); [`Appender::sync`] writes
/// the unaligned tail through the plain descriptor and fsyncs. On a share, where the file
/// system refuses direct I/O, or with `IMPRINT_BUFFERED_IO` set, everything goes through
/// the plain descriptor, as through a `BufWriter`. Dropping it writes what is buffered (as a
/// `BufWriter` does), unless a write failed.
pub struct Appender {
    plain: File,
    direct: Option<File>,
    buf: IoBuf,
    fill: usize,
    on_disk: u64,
    failed: bool,
}

impl Appender {
    /// Appends to `plain` (a new, empty file opened for writing) in writes of `capacity`
    /// bytes (a multiple of [`DIRECT_ALIGN`]).
    pub fn new(plain: File, capacity: usize) -> Self {
        debug_assert!(capacity.is_multiple_of(DIRECT_ALIGN));
        let direct = direct_twin(&plain, true);
        Self::with_direct(plain, capacity, direct)
    }

    /// [`Appender::new`] with the direct descriptor given (None: plain writes only).
    fn with_direct(plain: File, capacity: usize, direct: Option<File>) -> Self {
        Appender {
            plain,
            direct,
            buf: IoBuf::for_overwrite(capacity),
            fill: 0,
            on_disk: 0,
            failed: false,
        }
    }

    /// Appends all of `data`.
    pub fn write_all(&mut self, mut data: &[u8]) -> io::Result<()> {
        while !data.is_empty() {
            let n = (self.buf.len() - self.fill).min(data.len());
            self.buf[self.fill..self.fill + n].copy_from_slice(&data[..n]);
            self.fill += n;
            data = &data[n..];
            if self.fill == self.buf.len() {
                self.write_out()?;
            }
        }
        Ok(())
    }

    fn write_out(&mut self) -> io::Result<()> {
        if self.fill == 0 {
            return Ok(());
        }
        let f = DirectFile {
            plain: &self.plain,
            direct: self.direct.take(),
        };
        let r = f.write_all_at_saying(&self.buf[..self.fill], self.on_disk);
        self.direct = f.direct;
        match r {
            Err(e) => {
                self.failed = true;
                return Err(e);
            }
            // Refused, or unaligned after a sync's tail: the rest goes plain too.
            Ok(false) => self.direct = None,
            Ok(true) => {}
        }
        self.on_disk += self.fill as u64;
        self.fill = 0;
        Ok(())
    }

    /// Writes what is buffered and fsyncs: everything appended so far is durable.
    pub fn sync(&mut self) -> io::Result<()> {
        self.write_out()?;
        self.plain.sync_all()
    }

    /// True while full buffers go to the file as direct writes, so none of it stays in
    /// the page cache (a file system that falls back to a buffered write for a direct
    /// one, as vfat and exFAT do when a file grows, writes it out and drops it at once).
    /// The first write the direct descriptor does not take ends it.
    pub fn is_direct(&self) -> bool {
        self.direct.is_some()
    }

    /// Closes the file without writing what is buffered: for a file about to be deleted.
    pub fn abandon(mut self) {
        self.failed = true;
    }

    /// Bytes written to the file so far (the rest waits in the buffer).
    pub fn on_disk(&self) -> u64 {
        self.on_disk
    }

    /// The file (for advice on its written part).
    pub fn file(&self) -> &File {
        &self.plain
    }
}

/// The store file `plain` opened again with `O_DIRECT` (through `/proc/self/fd`, so the
/// same inode), for writing or reading; None on a share, where the file system refuses
/// it, or with `IMPRINT_BUFFERED_IO` set (docs/CLI.md).
pub fn direct_twin(plain: &File, write: bool) -> Option<File> {
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::OpenOptionsExt;
    if std::env::var_os("IMPRINT_BUFFERED_IO").is_some() || on_a_share(plain) {
        return None;
    }
    std::fs::OpenOptions::new()
        .read(!write)
        .write(write)
        .custom_flags(rustix::fs::OFlags::DIRECT.bits() as i32)
        .open(format!("/proc/self/fd/{}", plain.as_raw_fd()))
        .ok()
}

/// Reads `len` bytes at `offset` of `plain` into a new buffer: through `direct` (its
/// [`direct_twin`]) when given, as the aligned span around them, so no page-cache copy
/// is made; through `plain` when that is None or the kernel refuses the direct read. A
/// file that ends before `offset + len` is `UnexpectedEof`.
pub fn read_span(
    plain: &File,
    direct: Option<&File>,
    offset: u64,
    len: usize,
) -> io::Result<IoBuf> {
    if let Some(d) = direct {
        let a = DIRECT_ALIGN as u64;
        let lo = offset / a * a;
        let skip = (offset - lo) as usize;
        let need = skip + len;
        let mut buf = IoBuf::for_overwrite(need.div_ceil(DIRECT_ALIGN) * DIRECT_ALIGN);
        // Stops at `need`, not at the aligned end, which may pass the end of the file.
        let mut got = 0;
        let r = loop {
            if got >= need {
                break Ok(());
            }
            match FileExt::read_at(d, &mut buf[got..], lo + got as u64) {
                Ok(0) => break Err(io::Error::from(io::ErrorKind::UnexpectedEof)),
                Ok(n) => got += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => break Err(e),
            }
        };
        match r {
            Ok(()) => return Ok(buf.narrow(skip, len)),
            // Refused (or a short read left an unaligned offset): read it plainly.
            Err(e) if e.raw_os_error() == Some(EINVAL) => {}
            Err(e) => return Err(e),
        }
    }
    let mut buf = IoBuf::for_overwrite(len);
    FileExt::read_exact_at(plain, &mut buf, offset)?;
    Ok(buf)
}

/// True when `f` lives on a network or FUSE file system (NFS, SMB, sshfs…). Direct writes
/// there are synchronous round trips to the server, and on SMB the second open of the
/// file can break the first one's lease; packs on shares keep the page cache.
fn on_a_share(f: &File) -> bool {
    const NETWORK: [u32; 5] = [
        0x6969,      // NFS
        0xff53_4d42, // CIFS
        0xfe53_4d42, // SMB2
        0x517b,      // SMB (smbfs)
        0x6573_5546, // FUSE
    ];
    match rustix::fs::fstatfs(f) {
        Ok(st) => NETWORK.contains(&(st.f_type as u32)),
        Err(_) => true,
    }
}

impl std::fmt::Debug for Appender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Appender")
            .field("direct", &self.direct.is_some())
            .field("on_disk", &self.on_disk)
            .field("buffered", &self.fill)
            .finish()
    }
}

impl Drop for Appender {
    fn drop(&mut self) {
        if !self.failed {
            let _ = self.write_out();
        }
    }
}

/// `EINVAL`: what the kernel answers to a direct read it cannot serve.
const EINVAL: i32 = 22;
/// `EBADF`: a write on a descriptor opened read-only.
const EBADF: i32 = 9;

/// A byte buffer whose data starts on a [`DIRECT_ALIGN`] boundary, so a [`DirectFile`]
/// reads straight into it. New buffers are zero-filled. Dropped buffers go back to a
/// small process-wide pool (at most [`POOL_BYTES`]): a capture of a large disk reuses
/// the same few megabytes instead of faulting in fresh pages for every chunk.
pub struct IoBuf {
    raw: Vec<u8>,
    off: usize,
    len: usize,
}

/// Bytes the buffer pool keeps at most.
pub const POOL_BYTES: usize = 64 << 20;

static POOL: Mutex<Vec<Vec<u8>>> = Mutex::new(Vec::new());

fn pool() -> std::sync::MutexGuard<'static, Vec<Vec<u8>>> {
    // The pool only holds spare allocations; a panic elsewhere leaves them usable.
    POOL.lock().unwrap_or_else(|e| e.into_inner())
}

impl IoBuf {
    /// The `len` bytes from `start` of this buffer, without a copy (the result's data no
    /// longer starts on an aligned boundary unless `start` is a multiple of it).
    pub fn narrow(mut self, start: usize, len: usize) -> Self {
        assert!(start + len <= self.len, "narrow past the end");
        self.off += start;
        self.len = len;
        self
    }

    /// This buffer, or a copy of it when its data does not start on a [`DIRECT_ALIGN`]
    /// boundary (after [`IoBuf::narrow`]), so that a [`DirectFile`] writes it directly.
    pub fn into_aligned(self) -> Self {
        if starts_aligned(&self) {
            return self;
        }
        let mut b = Self::for_overwrite(self.len);
        b.copy_from_slice(&self);
        b
    }

    /// A zero-filled buffer of `len` bytes.
    pub fn new(len: usize) -> Self {
        let mut b = Self::for_overwrite(len);
        b.fill(0);
        b
    }

    /// A buffer of `len` bytes that may still hold a previous user's bytes, for a
    /// caller that writes every byte before reading any (saves a memset per chunk).
    pub fn for_overwrite(len: usize) -> Self {
        let need = len + DIRECT_ALIGN;
        // The smallest spare that fits, and none more than twice the need: a small
        // request taking a large spare would make the next large one allocate anew
        // (chunks, 4 MiB group frames and their stored bytes share the pool).
        let reused = {
            let mut p = pool();
            p.iter()
                .enumerate()
                .filter(|(_, v)| (need..=2 * need).contains(&v.capacity()))
                .min_by_key(|(_, v)| v.capacity())
                .map(|(i, _)| i)
                .map(|i| p.swap_remove(i))
        };
        let mut raw = reused.unwrap_or_default();
        // Only a fresh allocation (or growth) is filled here; a reused one keeps its bytes.
        raw.resize(need, 0);
        // align_offset may (in theory) decline; the buffer then just isn't direct-aligned.
        let off = match raw.as_ptr().align_offset(DIRECT_ALIGN) {
            o if o < DIRECT_ALIGN => o,
            _ => 0,
        };
        IoBuf { raw, off, len }
    }
}

impl Drop for IoBuf {
    fn drop(&mut self) {
        let raw = std::mem::take(&mut self.raw);
        let mut p = pool();
        if p.iter().map(Vec::capacity).sum::<usize>() + raw.capacity() <= POOL_BYTES {
            p.push(raw);
        }
    }
}

impl std::ops::Deref for IoBuf {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.raw[self.off..self.off + self.len]
    }
}

impl std::ops::DerefMut for IoBuf {
    fn deref_mut(&mut self) -> &mut [u8] {
        &mut self.raw[self.off..self.off + self.len]
    }
}

impl std::fmt::Debug for IoBuf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "IoBuf({} bytes)", self.len)
    }
}

/// A disk held in memory, for tests and for small table areas.
#[derive(Debug, Default)]
pub struct MemDisk {
    bytes: Mutex<Vec<u8>>,
}

impl MemDisk {
    /// A zero-filled disk of `size` bytes.
    pub fn new(size: usize) -> Self {
        Self::from_vec(vec![0; size])
    }

    /// A disk holding exactly `bytes`.
    pub fn from_vec(bytes: Vec<u8>) -> Self {
        MemDisk {
            bytes: Mutex::new(bytes),
        }
    }

    /// A copy of the disk's content.
    pub fn to_vec(&self) -> Vec<u8> {
        self.lock().clone()
    }

    /// The disk's size in bytes.
    pub fn len(&self) -> u64 {
        self.lock().len() as u64
    }

    /// True for a zero-byte disk.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<u8>> {
        // A poisoned lock only means another test thread panicked; the bytes are intact.
        self.bytes.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn range(len: usize, offset: u64, n: usize) -> io::Result<std::ops::Range<usize>> {
        let start = usize::try_from(offset).map_err(|_| eof())?;
        let end = start.checked_add(n).ok_or_else(eof)?;
        if end > len {
            return Err(eof());
        }
        Ok(start..end)
    }
}

fn eof() -> io::Error {
    io::Error::new(io::ErrorKind::UnexpectedEof, "past the end of the disk")
}

/// Bytes in memory read as a disk (a decoded chunk, for one).
impl ReadAt for [u8] {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        let r = MemDisk::range(self.len(), offset, buf.len())?;
        buf.copy_from_slice(&self[r]);
        Ok(())
    }
}

impl ReadAt for MemDisk {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.lock().as_slice().read_exact_at(buf, offset)
    }
}

impl WriteAt for MemDisk {
    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        let mut bytes = self.lock();
        let r = Self::range(bytes.len(), offset, buf.len())?;
        bytes[r].copy_from_slice(buf);
        Ok(())
    }
    fn sync(&self) -> io::Result<()> {
        Ok(())
    }
}

/// True when every byte of `buf` is zero; the common case for unused space, so it
/// compares 16 bytes at a time.
pub fn is_zero(buf: &[u8]) -> bool {
    let (chunks, rest) = buf.split_at(buf.len() - buf.len() % 16);
    chunks
        .chunks_exact(16)
        .all(|c| u128::from_ne_bytes(c.try_into().unwrap_or([1; 16])) == 0)
        && rest.iter().all(|&b| b == 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memdisk_reads_back_what_was_written_and_refuses_past_end() {
        let d = MemDisk::new(10);
        d.write_all_at(b"abc", 7).unwrap();
        let mut b = [0u8; 3];
        d.read_exact_at(&mut b, 7).unwrap();
        assert_eq!(&b, b"abc");
        assert_eq!(
            d.read_exact_at(&mut b, 8).unwrap_err().kind(),
            io::ErrorKind::UnexpectedEof
        );
        assert!(d.write_all_at(b"abcd", 7).is_err());
    }

    /// The same file opened again with `O_DIRECT` (0o40000 on Linux x86-64 and arm64).
    fn reopen_direct(path: &std::path::Path, write: bool) -> File {
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::OpenOptions::new()
            .read(true)
            .write(write)
            .custom_flags(0o40000)
            .open(path)
            .expect("direct I/O on /var/tmp")
    }

    #[test]
    fn direct_file_writes_aligned_and_unaligned_requests_and_reads_them_back() {
        // /var/tmp is on the machine's root file system, which does direct I/O.
        let dir = tempfile::tempdir_in("/var/tmp").unwrap();
        let path = dir.path().join("disk.img");
        std::fs::write(&path, vec![9u8; 64 << 10]).unwrap();
        let plain = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .unwrap();
        for write in [true, false] {
            // A read-only direct descriptor (as for a capture) makes writes go plain.
            let f = DirectFile::new(&plain, Some(reopen_direct(&path, write)));
            let mut aligned = IoBuf::new(8192);
            aligned.fill(write as u8 + 1);
            f.write_all_at(&aligned, 4096).unwrap();
            f.write_all_at(b"odd", 4097).unwrap();
            // A plain write that dirtied a page, then a direct write over it.
            f.write_all_at(b"cached", 20000).unwrap();
            f.write_all_at(&aligned, 16384).unwrap();
            f.sync().unwrap();
            let on_disk = std::fs::read(&path).unwrap();
            let v = write as u8 + 1;
            assert_eq!(&on_disk[4096..4097], &[v]);
            assert_eq!(&on_disk[4097..4100], b"odd");
            assert!(on_disk[4100..12288].iter().all(|&b| b == v));
            assert!(on_disk[16384..24576].iter().all(|&b| b == v));
            assert!(on_disk[..4096].iter().all(|&b| b == 9));
            let mut back = IoBuf::new(8192);
            f.read_exact_at(&mut back, 16384).unwrap();
            assert!(back.iter().all(|&b| b == v));
        }
    }

    #[test]
    fn appender_writes_every_byte_in_order_with_and_without_direct_io() {
        let dir = tempfile::tempdir_in("/var/tmp").unwrap();
        assert!(!on_a_share(&File::open(dir.path()).unwrap()));
        let mut want = Vec::new();
        for direct in [true, false] {
            for (name, sync) in [("synced", true), ("dropped", false)] {
                let path = dir.path().join(format!("{name}-{direct}"));
                let file = File::create(&path).unwrap();
                let mut a = if direct {
                    // /var/tmp is on the machine's root file system, which does direct I/O.
                    Appender::new(file, 2 * DIRECT_ALIGN)
                } else {
                    Appender::with_direct(file, 2 * DIRECT_ALIGN, None)
                };
                assert_eq!(a.direct.is_some(), direct);
                want.clear();
                // Pieces of odd sizes, some larger than the buffer.
                for (i, n) in [32usize, 64, 5000, 1, 9000, 300, 20000, 7]
                    .iter()
                    .enumerate()
                {
                    let piece: Vec<u8> = (0..*n).map(|j| (i * 31 + j) as u8).collect();
                    a.write_all(&piece).unwrap();
                    want.extend_from_slice(&piece);
                }
                assert!(a.on_disk().is_multiple_of(DIRECT_ALIGN as u64));
                assert!(a.on_disk() < want.len() as u64);
                assert_eq!(a.is_direct(), direct);
                if sync {
                    a.sync().unwrap();
                    assert_eq!(a.on_disk(), want.len() as u64);
                    // The tail went plain, and so does all that follows it.
                    assert!(!a.is_direct());
                    // More after a sync (unaligned from here on) still lands in order.
                    a.write_all(&[0xab; 9000]).unwrap();
                    want.extend_from_slice(&[0xab; 9000]);
                    a.sync().unwrap();
                }
                drop(a);
                assert_eq!(
                    std::fs::read(&path).unwrap(),
                    want,
                    "{name} direct={direct}"
                );
            }
        }
    }

    #[test]
    fn appender_goes_plain_for_good_once_the_direct_descriptor_refuses_a_write() {
        let dir = tempfile::tempdir_in("/var/tmp").unwrap();
        let path = dir.path().join("pack");
        let file = File::create(&path).unwrap();
        // Opened read-only: every direct write is refused (EBADF), as a file system may.
        let refusing = direct_twin(&file, false).expect("direct I/O on /var/tmp");
        let mut a = Appender::with_direct(file, DIRECT_ALIGN, Some(refusing));
        assert!(a.is_direct());
        a.write_all(&[7; DIRECT_ALIGN + 10]).unwrap();
        assert!(
            !a.is_direct(),
            "a refused direct write must end direct writes"
        );
        a.write_all(&[8; DIRECT_ALIGN]).unwrap();
        a.sync().unwrap();
        let mut want = vec![7; DIRECT_ALIGN + 10];
        want.extend_from_slice(&[8; DIRECT_ALIGN]);
        assert_eq!(std::fs::read(&path).unwrap(), want);
    }

    #[test]
    fn an_abandoned_appender_writes_nothing_more() {
        let dir = tempfile::tempdir_in("/var/tmp").unwrap();
        let path = dir.path().join("pack");
        let mut a = Appender::new(File::create(&path).unwrap(), DIRECT_ALIGN);
        a.write_all(&[1; DIRECT_ALIGN + 100]).unwrap();
        a.abandon();
        assert_eq!(std::fs::metadata(&path).unwrap().len(), DIRECT_ALIGN as u64);
    }

    #[test]
    fn read_span_reads_any_span_with_and_without_direct_io_and_refuses_past_the_end() {
        let dir = tempfile::tempdir_in("/var/tmp").unwrap();
        let path = dir.path().join("pack");
        let bytes: Vec<u8> = (0..3 * DIRECT_ALIGN + 1234)
            .map(|i| (i % 253) as u8)
            .collect();
        std::fs::write(&path, &bytes).unwrap();
        let plain = File::open(&path).unwrap();
        let direct = direct_twin(&plain, false);
        assert!(direct.is_some(), "/var/tmp does direct I/O");
        let end = bytes.len();
        let spans = [
            (0, 1),
            (5, 4091),
            (4095, 2),
            (4096, 8192),
            (100, end - 100),
            (end - 7, 7),
        ];
        for d in [direct.as_ref(), None] {
            for (off, len) in spans {
                let got = read_span(&plain, d, off as u64, len).unwrap();
                assert_eq!(
                    &got[..],
                    &bytes[off..off + len],
                    "{off}+{len} direct={}",
                    d.is_some()
                );
                // Aligned again for a direct write, with the same bytes.
                let back = got.into_aligned();
                assert!((back.as_ptr() as usize).is_multiple_of(DIRECT_ALIGN));
                assert_eq!(&back[..], &bytes[off..off + len]);
            }
            let e = read_span(&plain, d, (end - 7) as u64, 8).unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof);
        }
    }

    #[test]
    fn is_zero_sees_a_single_nonzero_byte_anywhere() {
        let mut v = vec![0u8; 1000];
        assert!(is_zero(&v));
        for i in [0, 15, 16, 500, 999] {
            v[i] = 1;
            assert!(!is_zero(&v), "byte {i}");
            v[i] = 0;
        }
        assert!(is_zero(&[]));
    }
}
