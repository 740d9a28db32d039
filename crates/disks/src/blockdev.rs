//! Opening a restore target or a capture source, and the block-layer queries
//! and commands that restore needs (size, sector sizes, discard, re-read the
//! partition table). A regular file stands in for a disk everywhere, so tests
//! and raw-image export run the same code.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::ops::Range;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use crate::sys;
use crate::usage::{DevNum, SysRoot};

/// What went wrong with a block device or image file; each variant names the
/// step that failed and the path it failed on.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path}: no such device or file")]
    NotFound { path: PathBuf },
    #[error(
        "{path} is in use (the kernel refused an exclusive open: it is mounted, \
         a swap area, or held by another device or program); unmount it or stop what uses it"
    )]
    Busy { path: PathBuf },
    #[error("opening {path}: {source}")]
    Open { path: PathBuf, source: io::Error },
    #[error("reading the metadata of {path}: {source}")]
    Stat { path: PathBuf, source: io::Error },
    #[error("{path} is neither a block device nor a regular file")]
    NotBlockOrFile { path: PathBuf },
    #[error("reading the size of {path} (BLKGETSIZE64): {source}")]
    GetSize { path: PathBuf, source: io::Error },
    #[error("reading the logical sector size of {path} (BLKSSZGET): {source}")]
    GetLogicalSectorSize { path: PathBuf, source: io::Error },
    #[error("reading the physical sector size of {path} (BLKPBSZGET): {source}")]
    GetPhysicalSectorSize { path: PathBuf, source: io::Error },
    #[error("re-reading the partition table of {path} (BLKRRPART): {source}")]
    RereadPartitionTable { path: PathBuf, source: io::Error },
    #[error("discarding bytes {start}..{end} of {path}: {source}")]
    Discard {
        path: PathBuf,
        start: u64,
        end: u64,
        source: io::Error,
    },
    #[error("flushing {path} to stable storage (fsync): {source}")]
    Sync { path: PathBuf, source: io::Error },
}

/// An open block device or regular image file. Implements `Read`, `Write`
/// and `Seek` by delegating to the file; [`Target::file`] gives positional I/O
/// (`FileExt::read_at`/`write_at`).
#[derive(Debug)]
pub struct Target {
    file: File,
    path: PathBuf,
    is_block_device: bool,
    writable: bool,
}

/// Opens `path` for writing: a block device with `O_EXCL`, or an existing
/// regular file.
///
/// On a block device `O_EXCL` makes the kernel refuse the open with `EBUSY`
/// while the device (or, for a whole disk, any of its partitions) is mounted,
/// used as swap or claimed by device-mapper/md, and it keeps others from
/// claiming it while we hold it (see `blkdev_get_by_dev`, block/bdev.c). It is
/// a second guard behind [`crate::interlock::check_write_target`], not a
/// replacement: it knows nothing of the image store or boot medium.
///
/// A regular file is never created here: a mistyped `/dev/sdx` would otherwise
/// silently become a file in devtmpfs. Create image files explicitly.
pub fn open_target(path: &Path) -> Result<Target, Error> {
    let is_block_device = kind_of(path)?;
    let mut opts = OpenOptions::new();
    opts.read(true).write(true);
    if is_block_device {
        opts.custom_flags(libc::O_EXCL);
    }
    let file = opts.open(path).map_err(|source| open_error(path, source))?;
    Ok(Target {
        file,
        path: path.to_owned(),
        is_block_device,
        writable: true,
    })
}

/// Opens `path` (a block device or regular file) read-only, for capture or
/// verify. No `O_EXCL`: reading a disk others use is allowed (the caller warns).
pub fn open_source(path: &Path) -> Result<Target, Error> {
    let is_block_device = kind_of(path)?;
    let file = File::open(path).map_err(|source| open_error(path, source))?;
    Ok(Target {
        file,
        path: path.to_owned(),
        is_block_device,
        writable: false,
    })
}

/// `Ok(true)` for a block device, `Ok(false)` for a regular file.
fn kind_of(path: &Path) -> Result<bool, Error> {
    let meta = std::fs::metadata(path).map_err(|source| {
        if source.kind() == io::ErrorKind::NotFound {
            Error::NotFound {
                path: path.to_owned(),
            }
        } else {
            Error::Stat {
                path: path.to_owned(),
                source,
            }
        }
    })?;
    let ft = meta.file_type();
    if ft.is_block_device() {
        Ok(true)
    } else if ft.is_file() {
        Ok(false)
    } else {
        Err(Error::NotBlockOrFile {
            path: path.to_owned(),
        })
    }
}

fn open_error(path: &Path, source: io::Error) -> Error {
    match source.raw_os_error() {
        Some(libc::EBUSY) => Error::Busy {
            path: path.to_owned(),
        },
        Some(libc::ENOENT) | Some(libc::ENXIO) => Error::NotFound {
            path: path.to_owned(),
        },
        _ => Error::Open {
            path: path.to_owned(),
            source,
        },
    }
}

impl Target {
    /// The path this was opened from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// True for a block device, false for a regular file.
    pub fn is_block_device(&self) -> bool {
        self.is_block_device
    }

    /// True when opened with [`open_target`].
    pub fn is_writable(&self) -> bool {
        self.writable
    }

    /// The open file, for positional I/O (`std::os::unix::fs::FileExt`).
    pub fn file(&self) -> &File {
        &self.file
    }

    /// The same file opened again with `O_DIRECT` (through `/proc/self/fd`, so it is
    /// the very inode this `Target` holds; read-write when the `Target` is writable),
    /// for reads and writes that skip the page cache; None where the file system or kernel does not support
    /// direct I/O (tmpfs, for one), or when `IMPRINT_BUFFERED_IO` is set (docs/CLI.md:
    /// for a device that misbehaves with direct I/O, and for measuring it). Opening it
    /// never takes an `O_EXCL` claim.
    pub fn open_direct(&self) -> Option<File> {
        use std::os::fd::AsRawFd;
        if std::env::var_os("IMPRINT_BUFFERED_IO").is_some() {
            return None;
        }
        OpenOptions::new()
            .read(true)
            .write(self.writable)
            .custom_flags(libc::O_DIRECT)
            .open(format!("/proc/self/fd/{}", self.file.as_raw_fd()))
            .ok()
    }

    /// Gives up the wrapper; for a block device this keeps the `O_EXCL` claim
    /// for as long as the returned `File` lives.
    pub fn into_file(self) -> File {
        self.file
    }

    /// Size in bytes: `BLKGETSIZE64` for a device, the length for a file.
    pub fn size(&self) -> Result<u64, Error> {
        if self.is_block_device {
            sys::blk_get_size64(&self.file).map_err(|source| Error::GetSize {
                path: self.path.clone(),
                source,
            })
        } else {
            self.file
                .metadata()
                .map(|m| m.len())
                .map_err(|source| Error::Stat {
                    path: self.path.clone(),
                    source,
                })
        }
    }

    /// Logical sector size (`BLKSSZGET`): the unit of LBAs in the partition
    /// table. A regular file is taken as 512, what `sgdisk`, `sfdisk` and
    /// QEMU assume for a raw image.
    pub fn logical_sector_size(&self) -> Result<u32, Error> {
        if self.is_block_device {
            sys::blk_ssz_get(&self.file).map_err(|source| Error::GetLogicalSectorSize {
                path: self.path.clone(),
                source,
            })
        } else {
            Ok(512)
        }
    }

    /// Physical sector size (`BLKPBSZGET`); 512 for a regular file.
    pub fn physical_sector_size(&self) -> Result<u32, Error> {
        if self.is_block_device {
            sys::blk_pbsz_get(&self.file).map_err(|source| Error::GetPhysicalSectorSize {
                path: self.path.clone(),
                source,
            })
        } else {
            Ok(512)
        }
    }

    /// Asks the kernel to re-read the partition table (`BLKRRPART`) so the
    /// partition nodes match what restore just wrote; a no-op for a file.
    ///
    /// A kernel without partition parsers (see shared/notes/host-kernel.md)
    /// accepts the call and creates no partitions; it fails with `EBUSY` while
    /// a partition is in use, and with `EINVAL` on loop devices without
    /// `LO_FLAGS_PARTSCAN`.
    pub fn reread_partition_table(&self) -> Result<(), Error> {
        if !self.is_block_device {
            return Ok(());
        }
        match sys::blk_rr_part(&self.file) {
            // A loop device set up without partition scanning (`losetup` without
            // `-P`) refuses with EINVAL: the kernel keeps no partitions of it, so
            // there is nothing to re-read. Unless some were added by hand (`partx
            // -a`): those are stale now, and the caller's warning says so.
            Err(e)
                if e.raw_os_error() == Some(libc::EINVAL) && self.is_loop_without_partitions() =>
            {
                Ok(())
            }
            r => r.map_err(|source| Error::RereadPartitionTable {
                path: self.path.clone(),
                source,
            }),
        }
    }

    /// A loop device set up without partition scanning (sysfs `loop/partscan`
    /// is 0) that holds no partitions (none added by hand).
    fn is_loop_without_partitions(&self) -> bool {
        use std::os::unix::fs::MetadataExt;
        let root = SysRoot::live();
        let Ok(dev) = self
            .file
            .metadata()
            .and_then(|m| root.block_dev(DevNum::from_dev_t(m.rdev())))
        else {
            return false;
        };
        std::fs::read_to_string(dev.sysfs.join("loop/partscan")).is_ok_and(|v| v.trim() == "0")
            && root.partitions(&dev).is_ok_and(|p| p.is_empty())
    }

    /// Discards a byte range (`BLKDISCARD`; both ends must be multiples of the
    /// logical sector size). On a regular file it punches a hole instead, which
    /// also reads back as zeros. Devices without discard support fail with
    /// `EOPNOTSUPP`: callers treat discard as an optimisation and go on.
    pub fn discard(&self, range: Range<u64>) -> Result<(), Error> {
        if range.end <= range.start {
            return Ok(());
        }
        let len = range.end - range.start;
        let res = if self.is_block_device {
            sys::blk_discard(&self.file, range.start, len)
        } else {
            sys::punch_hole(&self.file, range.start, len)
        };
        res.map_err(|source| Error::Discard {
            path: self.path.clone(),
            start: range.start,
            end: range.end,
            source,
        })
    }

    /// Flushes written data to stable storage (`fsync`).
    pub fn sync(&self) -> Result<(), Error> {
        self.file.sync_all().map_err(|source| Error::Sync {
            path: self.path.clone(),
            source,
        })
    }
}

impl Read for Target {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.file.read(buf)
    }
}

impl Write for Target {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.file.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

impl Seek for Target {
    fn seek(&mut self, pos: SeekFrom) -> io::Result<u64> {
        self.file.seek(pos)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::FileExt;

    #[test]
    fn open_direct_reads_the_same_file_past_the_page_cache() {
        // /var/tmp is on the machine's root file system, which does direct I/O (tmpfs,
        // which may back /tmp, does not).
        let dir = tempfile::tempdir_in("/var/tmp").unwrap();
        let path = dir.path().join("disk.img");
        let data: Vec<u8> = (0..16384u32).map(|i| (i % 251) as u8).collect();
        std::fs::write(&path, &data).unwrap();
        let t = open_source(&path).unwrap();
        let d = t.open_direct().expect("direct I/O on /var/tmp");
        // An aligned buffer: a page-aligned slice of a larger one.
        let mut raw = vec![0u8; 3 * 4096];
        let off = raw.as_ptr().align_offset(4096);
        let buf = &mut raw[off..off + 8192];
        d.read_exact_at(buf, 4096).unwrap();
        assert_eq!(buf, &data[4096..12288]);
        // Direct I/O refuses unaligned requests: proof the flag is really set.
        let mut odd = [0u8; 100];
        let e = d.read_exact_at(&mut odd, 7).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EINVAL));
    }

    #[test]
    fn regular_file_target_reports_length_and_512_sectors() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("disk.img");
        let f = File::create(&path).unwrap();
        f.set_len(8 << 20).unwrap();
        let t = open_target(&path).unwrap();
        assert!(!t.is_block_device());
        assert_eq!(t.size().unwrap(), 8 << 20);
        assert_eq!(t.logical_sector_size().unwrap(), 512);
        assert_eq!(t.physical_sector_size().unwrap(), 512);
        t.reread_partition_table().unwrap();
    }

    #[test]
    fn discard_on_a_file_reads_back_zeros() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("disk.img");
        std::fs::write(&path, vec![0xaa; 1 << 20]).unwrap();
        let t = open_target(&path).unwrap();
        t.discard(4096..8192).unwrap();
        let mut buf = vec![0; 3 * 4096];
        t.file().read_exact_at(&mut buf, 0).unwrap();
        assert!(buf[..4096].iter().all(|&b| b == 0xaa));
        assert!(buf[4096..8192].iter().all(|&b| b == 0));
        assert!(buf[8192..].iter().all(|&b| b == 0xaa));
    }

    #[test]
    fn missing_target_is_not_created() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sdx");
        assert!(matches!(open_target(&path), Err(Error::NotFound { .. })));
        assert!(!path.exists());
    }

    #[test]
    fn directory_is_neither_device_nor_file() {
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(
            open_source(dir.path()),
            Err(Error::NotBlockOrFile { .. })
        ));
    }
}
