//! Byte extents: what capture copies and what restore may write.

use serde::{Deserialize, Serialize};

/// A byte range `[offset, offset + len)` on a disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Extent {
    /// First byte.
    pub offset: u64,
    /// Length in bytes.
    pub len: u64,
}

impl Extent {
    /// The extent `[offset, offset + len)`.
    pub const fn new(offset: u64, len: u64) -> Self {
        Extent { offset, len }
    }

    /// One past the last byte (saturating, so hostile input cannot overflow).
    pub fn end(&self) -> u64 {
        self.offset.saturating_add(self.len)
    }

    /// The overlap of two extents, if any.
    pub fn intersect(&self, other: &Extent) -> Option<Extent> {
        let start = self.offset.max(other.offset);
        let end = self.end().min(other.end());
        (start < end).then(|| Extent::new(start, end - start))
    }
}

/// Sorts, clips to `[0, size)`, drops empty extents and merges touching ones.
pub fn normalize(mut extents: Vec<Extent>, size: u64) -> Vec<Extent> {
    extents.retain(|e| e.len > 0 && e.offset < size);
    extents.sort();
    let mut out: Vec<Extent> = Vec::with_capacity(extents.len());
    for e in extents {
        let e = Extent::new(e.offset, e.end().min(size) - e.offset);
        match out.last_mut() {
            Some(last) if e.offset <= last.end() => {
                let end = last.end().max(e.end());
                last.len = end - last.offset;
            }
            _ => out.push(e),
        }
    }
    out
}

/// Total bytes covered by normalized extents.
pub fn total(extents: &[Extent]) -> u64 {
    extents.iter().map(|e| e.len).sum()
}

/// The parts of normalized `extents` that fall inside `window`, in order.
/// `extents` must be normalized; this finds the first candidate by binary search.
pub fn clip<'a>(extents: &'a [Extent], window: Extent) -> impl Iterator<Item = Extent> + 'a {
    let first = extents.partition_point(|e| e.end() <= window.offset);
    extents[first..]
        .iter()
        .take_while(move |e| e.offset < window.end())
        .filter_map(move |e| e.intersect(&window))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalize_sorts_merges_and_clips() {
        let v = normalize(
            vec![
                Extent::new(50, 10),
                Extent::new(0, 10),
                Extent::new(5, 10),
                Extent::new(15, 5),
                Extent::new(95, 100),
                Extent::new(200, 5),
                Extent::new(30, 0),
            ],
            100,
        );
        assert_eq!(
            v,
            vec![Extent::new(0, 20), Extent::new(50, 10), Extent::new(95, 5)]
        );
        assert_eq!(total(&v), 35);
    }

    #[test]
    fn clip_returns_only_the_parts_inside_the_window() {
        let v = vec![Extent::new(0, 10), Extent::new(20, 10), Extent::new(40, 10)];
        let c: Vec<_> = clip(&v, Extent::new(5, 20)).collect();
        assert_eq!(c, vec![Extent::new(5, 5), Extent::new(20, 5)]);
        assert_eq!(clip(&v, Extent::new(10, 10)).count(), 0);
    }

    #[test]
    fn hostile_extents_do_not_overflow() {
        let v = normalize(vec![Extent::new(u64::MAX - 1, u64::MAX)], u64::MAX);
        assert_eq!(v, vec![Extent::new(u64::MAX - 1, 1)]);
    }
}
