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

impl ReadAt for MemDisk {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        let bytes = self.lock();
        let r = Self::range(bytes.len(), offset, buf.len())?;
        buf.copy_from_slice(&bytes[r]);
        Ok(())
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
