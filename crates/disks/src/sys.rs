//! Every `unsafe` call of this crate: the block-layer ioctls and `fallocate`.
//!
//! The request numbers are the `_IO`/`_IOR` encodings from the kernel's
//! `include/uapi/linux/fs.h`; `libc` does not export them.
#![allow(unsafe_code)]

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;

/// `_IOR(0x12, 114, size_t)`: device size in bytes, as a `u64`.
const BLKGETSIZE64: libc::c_ulong = 0x8008_1272;
/// `_IO(0x12, 104)`: logical sector size, as an `int`.
const BLKSSZGET: libc::c_ulong = 0x1268;
/// `_IO(0x12, 123)`: physical sector size, as an `unsigned int`.
const BLKPBSZGET: libc::c_ulong = 0x127b;
/// `_IO(0x12, 95)`: re-read the partition table.
const BLKRRPART: libc::c_ulong = 0x125f;
/// `_IO(0x12, 119)`: discard a byte range given as `u64[2] = {start, len}`.
const BLKDISCARD: libc::c_ulong = 0x1277;

fn check(ret: libc::c_int) -> io::Result<()> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Size of the block device behind `file`, in bytes (`BLKGETSIZE64`).
pub(crate) fn blk_get_size64(file: &File) -> io::Result<u64> {
    let mut size: u64 = 0;
    // SAFETY: BLKGETSIZE64 writes one u64 through the pointer, which points to a
    // live, writable u64 on our stack; the fd is open for the whole call.
    check(unsafe { libc::ioctl(file.as_raw_fd(), BLKGETSIZE64, &mut size as *mut u64) })?;
    Ok(size)
}

/// Logical sector size of the block device behind `file` (`BLKSSZGET`).
pub(crate) fn blk_ssz_get(file: &File) -> io::Result<u32> {
    let mut size: libc::c_int = 0;
    // SAFETY: BLKSSZGET writes one int through the pointer, which points to a
    // live, writable c_int on our stack; the fd is open for the whole call.
    check(unsafe { libc::ioctl(file.as_raw_fd(), BLKSSZGET, &mut size as *mut libc::c_int) })?;
    u32::try_from(size).map_err(|_| io::Error::from(io::ErrorKind::InvalidData))
}

/// Physical sector size of the block device behind `file` (`BLKPBSZGET`).
pub(crate) fn blk_pbsz_get(file: &File) -> io::Result<u32> {
    let mut size: libc::c_uint = 0;
    // SAFETY: BLKPBSZGET writes one unsigned int through the pointer, which
    // points to a live, writable c_uint on our stack; the fd is open.
    check(unsafe { libc::ioctl(file.as_raw_fd(), BLKPBSZGET, &mut size as *mut libc::c_uint) })?;
    Ok(size)
}

/// Ask the kernel to re-read the partition table (`BLKRRPART`).
pub(crate) fn blk_rr_part(file: &File) -> io::Result<()> {
    // SAFETY: BLKRRPART takes no argument and touches no user memory.
    check(unsafe { libc::ioctl(file.as_raw_fd(), BLKRRPART) })
}

/// Discard `len` bytes at `start` (`BLKDISCARD`); both must be sector-aligned.
pub(crate) fn blk_discard(file: &File, start: u64, len: u64) -> io::Result<()> {
    let range: [u64; 2] = [start, len];
    // SAFETY: BLKDISCARD reads two u64 through the pointer, which points to a
    // live array of two u64 on our stack; the fd is open for the whole call.
    check(unsafe { libc::ioctl(file.as_raw_fd(), BLKDISCARD, range.as_ptr()) })
}

/// Deallocate a byte range of a regular file, keeping its size
/// (`fallocate(FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE)`): the file-backed
/// counterpart of a discard; the range then reads back as zeros.
pub(crate) fn punch_hole(file: &File, start: u64, len: u64) -> io::Result<()> {
    let start =
        libc::off_t::try_from(start).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    let len =
        libc::off_t::try_from(len).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: fallocate only reads its integer arguments; the fd is open.
    check(unsafe {
        libc::fallocate(
            file.as_raw_fd(),
            libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
            start,
            len,
        )
    })
}

/// Waits up to `timeout_ms` for `fd` to become readable (`poll(2)`).
pub(crate) fn poll_readable(fd: std::os::fd::RawFd, timeout_ms: i32) -> io::Result<bool> {
    let mut pfd = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd on our stack, count 1; poll only writes `revents`.
    let n = unsafe { libc::poll(&mut pfd, 1, timeout_ms) };
    if n < 0 {
        let e = io::Error::last_os_error();
        if e.kind() == io::ErrorKind::Interrupted {
            return Ok(false);
        }
        return Err(e);
    }
    Ok(n > 0 && pfd.revents & libc::POLLIN != 0)
}
