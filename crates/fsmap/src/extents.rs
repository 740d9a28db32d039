//! Collects used ranges into a sorted, merged, bounded list.

use crate::Extent;

/// Most extents a map holds. A hostile or badly fragmented filesystem could otherwise
/// make the list as long as the partition has blocks; past this many, neighbouring
/// extents are merged across small gaps (claiming more is safe, claiming less is not).
pub const MAX_EXTENTS: usize = 1 << 22;

/// Used ranges of a partition of `size` bytes.
#[derive(Debug)]
pub(crate) struct ExtentList {
    v: Vec<Extent>,
    size: u64,
    cap: usize,
    /// Extents are rounded out to multiples of this once the cap has been hit.
    grain: u64,
}

impl ExtentList {
    pub fn new(size: u64) -> Self {
        Self::with_cap(size, MAX_EXTENTS)
    }

    pub fn with_cap(size: u64, cap: usize) -> Self {
        ExtentList {
            v: Vec::new(),
            size,
            cap: cap.max(4),
            grain: 1,
        }
    }

    /// Adds `[off, off + len)`, clipped to the partition. Parsers check ranges against
    /// the partition before adding them; the clip only keeps the output's promise.
    pub fn add(&mut self, off: u64, len: u64) {
        let end = off.saturating_add(len).min(self.size);
        if off >= end {
            return;
        }
        let (off, end) = self.round(off, end);
        if let Some(last) = self.v.last_mut() {
            // Bitmap scans add in ascending order: extend in place when touching.
            if off >= last.offset && off <= last.end() {
                last.len = last.len.max(end - last.offset);
                return;
            }
        }
        self.v.push(Extent {
            offset: off,
            len: end - off,
        });
        if self.v.len() >= self.cap {
            self.compact();
        }
    }

    fn round(&self, off: u64, end: u64) -> (u64, u64) {
        if self.grain == 1 {
            return (off, end);
        }
        let off = off - off % self.grain;
        let end = end
            .checked_next_multiple_of(self.grain)
            .unwrap_or(self.size)
            .min(self.size);
        (off, end)
    }

    /// Sorts and merges; while still over half the cap, doubles the grain and merges again.
    fn compact(&mut self) {
        self.sort_merge();
        while self.v.len() > self.cap / 2 {
            self.grain = self.grain.saturating_mul(2);
            for i in 0..self.v.len() {
                let e = self.v[i];
                let (off, end) = self.round(e.offset, e.end());
                self.v[i] = Extent {
                    offset: off,
                    len: end - off,
                };
            }
            self.sort_merge();
        }
    }

    fn sort_merge(&mut self) {
        self.v.sort_unstable();
        let mut out: Vec<Extent> = Vec::with_capacity(self.v.len());
        for e in self.v.drain(..) {
            match out.last_mut() {
                Some(last) if e.offset <= last.end() => {
                    last.len = last.len.max(e.end() - last.offset);
                }
                _ => out.push(e),
            }
        }
        self.v = out;
    }

    pub fn finish(mut self) -> Vec<Extent> {
        self.sort_merge();
        self.v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(offset: u64, len: u64) -> Extent {
        Extent { offset, len }
    }

    #[test]
    fn merges_touching_and_overlapping_in_any_order() {
        let mut l = ExtentList::new(100);
        l.add(50, 10);
        l.add(0, 10);
        l.add(10, 5);
        l.add(55, 20);
        l.add(90, 50);
        assert_eq!(l.finish(), vec![e(0, 15), e(50, 25), e(90, 10)]);
    }

    #[test]
    fn drops_empty_and_out_of_range() {
        let mut l = ExtentList::new(100);
        l.add(100, 10);
        l.add(5, 0);
        l.add(u64::MAX, u64::MAX);
        assert_eq!(l.finish(), vec![]);
    }

    #[test]
    fn fragmentation_past_the_cap_coarsens_but_covers_everything() {
        let mut l = ExtentList::with_cap(1 << 20, 64);
        let mut want = Vec::new();
        for i in 0..10_000u64 {
            l.add(i * 64, 1);
            want.push(i * 64);
        }
        let got = l.finish();
        assert!(got.len() <= 64, "{} extents", got.len());
        for w in want {
            assert!(got.iter().any(|x| x.offset <= w && w < x.end()), "{w} lost");
        }
        assert!(got.iter().all(|x| x.end() <= 1 << 20));
    }
}
