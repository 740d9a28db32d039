//! Bounds-checked reads and little helpers every parser shares.

use std::io;

use crate::ReadAt;

/// Why a parser stopped: an I/O error (reported to the caller) or metadata it will
/// not vouch for (turned into a whole-partition capture with this reason).
#[derive(Debug, thiserror::Error)]
pub(crate) enum Fail {
    #[error(transparent)]
    Io(#[from] io::Error),
    #[error("{0}")]
    Bad(String),
}

/// Returns `Err(Fail::Bad(..))` from the enclosing function.
macro_rules! bad {
    ($($arg:tt)*) => { return Err($crate::util::Fail::Bad(format!($($arg)*))) };
}

/// `bad!` unless the condition holds.
macro_rules! ensure {
    ($cond:expr, $($arg:tt)*) => { if !$cond { bad!($($arg)*); } };
}

pub(crate) use {bad, ensure};

/// Largest single metadata read. Bitmaps and FATs are streamed in pieces this size,
/// so memory stays bounded whatever sizes the metadata claims.
pub(crate) const MAX_READ: usize = 1 << 20;

/// A partition: a reader and the size the caller vouches for.
pub(crate) struct Dev<'a> {
    r: &'a dyn ReadAt,
    pub size: u64,
}

impl<'a> Dev<'a> {
    pub fn new(r: &'a dyn ReadAt, size: u64) -> Self {
        Dev { r, size }
    }

    /// Reads `len` bytes at `off`; a range outside the partition is metadata pointing
    /// somewhere it must not, so it is `Fail::Bad`, not an I/O error.
    pub fn read(&self, off: u64, len: usize, what: &str) -> Result<Vec<u8>, Fail> {
        ensure!(len <= MAX_READ, "{what}: read of {len} bytes is too large");
        ensure!(
            self.contains(off, len as u64),
            "{what} at byte {off} (+{len}) lies outside the {}-byte partition",
            self.size
        );
        let mut buf = vec![0u8; len];
        self.r.read_exact_at(&mut buf, off)?;
        Ok(buf)
    }

    /// Like [`Dev::read`], but a range outside the partition simply is not there:
    /// for probing signatures on partitions that may be too small to hold them.
    pub fn peek(&self, off: u64, len: usize) -> Result<Option<Vec<u8>>, Fail> {
        if !self.contains(off, len as u64) {
            return Ok(None);
        }
        self.read(off, len, "signature").map(Some)
    }

    pub fn contains(&self, off: u64, len: u64) -> bool {
        off.checked_add(len).is_some_and(|end| end <= self.size)
    }
}

pub(crate) fn le16(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

pub(crate) fn le32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

pub(crate) fn le64(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

/// `a * b`, or `Fail::Bad` naming what overflowed.
pub(crate) fn mul(a: u64, b: u64, what: &str) -> Result<u64, Fail> {
    match a.checked_mul(b) {
        Some(v) => Ok(v),
        None => bad!("{what} overflows ({a} * {b})"),
    }
}

pub(crate) fn add(a: u64, b: u64, what: &str) -> Result<u64, Fail> {
    match a.checked_add(b) {
        Some(v) => Ok(v),
        None => bad!("{what} overflows ({a} + {b})"),
    }
}

/// Lower-case 8-4-4-4-12 form of a 16-byte UUID, as blkid prints it.
pub(crate) fn uuid_string(b: &[u8]) -> Option<String> {
    if b.iter().all(|&x| x == 0) {
        return None;
    }
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    Some(format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    ))
}

/// A NUL-padded byte label; `None` when empty.
pub(crate) fn latin_label(b: &[u8]) -> Option<String> {
    let end = b.iter().position(|&x| x == 0).unwrap_or(b.len());
    let s = String::from_utf8_lossy(&b[..end]).trim_end().to_string();
    (!s.is_empty()).then_some(s)
}

/// A UTF-16LE label of `units` code units; `None` when empty.
pub(crate) fn utf16_label(b: &[u8], units: usize) -> Option<String> {
    let units: Vec<u16> = b
        .chunks_exact(2)
        .take(units)
        .map(|c| u16::from_le_bytes([c[0], c[1]]))
        .take_while(|&u| u != 0)
        .collect();
    let s = String::from_utf16_lossy(&units);
    (!s.is_empty()).then_some(s)
}
