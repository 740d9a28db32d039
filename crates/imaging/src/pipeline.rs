//! One producer thread, a pool of workers, and a consumer on the caller's thread,
//! joined by bounded channels so memory stays bounded whatever the disk size.

use crate::error::Result;
use crate::extent::{clip, Extent};
use crate::io::{IoBuf, ReadAt, DIRECT_ALIGN};
use crossbeam_channel::bounded;

/// Threads for CPU work: all cores.
pub fn default_threads() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2)
}

/// Runs `produce` on its own thread (it hands items to `emit`, which returns false
/// once the job is stopping), `work` on `threads` threads, and `consume` here. Results
/// arrive in any order. The first error from `consume` or `produce` stops everything.
pub fn run<I, O, P, W, C>(threads: usize, produce: P, work: W, mut consume: C) -> Result<()>
where
    I: Send,
    O: Send,
    P: FnOnce(&dyn Fn(I) -> bool) -> Result<()> + Send,
    W: Fn(I) -> O + Sync,
    C: FnMut(O) -> Result<()>,
{
    let threads = threads.max(1);
    std::thread::scope(|s| {
        let (tx_in, rx_in) = bounded::<I>(threads * 2);
        let (tx_out, rx_out) = bounded::<O>(threads * 2);
        let producer = s.spawn(move || produce(&|item| tx_in.send(item).is_ok()));
        let work = &work;
        for _ in 0..threads {
            let rx = rx_in.clone();
            let tx = tx_out.clone();
            s.spawn(move || {
                for item in rx {
                    if tx.send(work(item)).is_err() {
                        break;
                    }
                }
            });
        }
        drop(rx_in);
        drop(tx_out);
        let mut result = Ok(());
        for o in rx_out.iter() {
            if let Err(e) = consume(o) {
                result = Err(e);
                break;
            }
        }
        // Dropping the receiver makes blocked workers, then the producer, give up.
        drop(rx_out);
        let produced = producer
            .join()
            .unwrap_or_else(|p| std::panic::resume_unwind(p));
        result.and(produced)
    })
}

/// Reads chunk `window` of `src` as capture sees it: bytes inside `extents` from the
/// source, every other byte zero. One read spans the first to the last covered byte
/// (large reads beat many small ones), widened to [`DIRECT_ALIGN`] boundaries inside the
/// window so a [`crate::io::DirectFile`] serves it without the page cache; then
/// everything outside the extents is zeroed. Returns the chunk and the bytes of the span.
pub fn read_masked(
    src: &dyn ReadAt,
    extents: &[Extent],
    window: Extent,
) -> std::io::Result<(IoBuf, u64)> {
    // Every byte is either read or zeroed below.
    let mut buf = IoBuf::for_overwrite(window.len as usize);
    let n = read_masked_into(src, extents, window, &mut buf)?;
    Ok((buf, n))
}

/// [`read_masked`] into `buf` (`window.len` bytes, [`DIRECT_ALIGN`]-aligned for direct
/// reads); returns the bytes of the span read.
pub fn read_masked_into(
    src: &dyn ReadAt,
    extents: &[Extent],
    window: Extent,
    buf: &mut [u8],
) -> std::io::Result<u64> {
    let pieces: Vec<Extent> = clip(extents, window).collect();
    let (Some(first), Some(last)) = (pieces.first(), pieces.last()) else {
        buf.fill(0);
        return Ok(0);
    };
    let lo = (first.offset - window.offset) as usize;
    let hi = (last.end() - window.offset) as usize;
    let a = DIRECT_ALIGN;
    let (lo_a, hi_a) = (lo / a * a, hi.div_ceil(a).saturating_mul(a).min(buf.len()));
    let widened = (lo_a, hi_a) != (lo, hi)
        && src
            .read_exact_at(&mut buf[lo_a..hi_a], window.offset + lo_a as u64)
            .is_ok();
    if !widened {
        // Exactly the span: the widened read may pass the end of a smaller target.
        src.read_exact_at(&mut buf[lo..hi], first.offset)?;
    }
    let mut pos = 0;
    for p in &pieces {
        let start = (p.offset - window.offset) as usize;
        buf[pos..start].fill(0);
        pos = (p.end() - window.offset) as usize;
    }
    buf[pos..].fill(0);
    Ok((hi - lo) as u64)
}

/// The chunk indices that intersect normalized `extents`, in order.
pub fn chunks_of(extents: &[Extent], chunk_size: u32) -> impl Iterator<Item = u64> + '_ {
    let cs = chunk_size as u64;
    let mut next = 0u64;
    extents.iter().flat_map(move |e| {
        let first = (e.offset / cs).max(next);
        let last = (e.end() - 1) / cs;
        next = last + 1;
        first..=last
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::MemDisk;

    #[test]
    fn read_masked_zeroes_everything_outside_the_extents() {
        let d = MemDisk::from_vec((0..32u8).map(|x| x + 1).collect());
        let ext = [Extent::new(2, 3), Extent::new(10, 2), Extent::new(20, 20)];
        let (buf, n) = read_masked(&d, &ext, Extent::new(0, 16)).unwrap();
        assert_eq!(*buf, [0, 0, 3, 4, 5, 0, 0, 0, 0, 0, 11, 12, 0, 0, 0, 0]);
        assert_eq!(n, 10);
        let (buf, _) = read_masked(&d, &ext, Extent::new(16, 16)).unwrap();
        assert_eq!(&buf[..4], &[0, 0, 0, 0]);
        assert_eq!(buf[4], 21);
    }

    #[test]
    fn read_masked_zeroes_what_a_reused_buffer_held() {
        let d = MemDisk::from_vec(vec![7u8; 64]);
        for _ in 0..8 {
            // Dirty buffers of the same size go back to the pool, for read_masked to reuse.
            let mut junk: Vec<IoBuf> = (0..4).map(|_| IoBuf::new(64)).collect();
            junk.iter_mut().for_each(|b| b.fill(0xff));
            drop(junk);
            let (buf, _) = read_masked(&d, &[Extent::new(8, 8)], Extent::new(0, 64)).unwrap();
            assert!(buf[..8].iter().all(|&b| b == 0));
            assert!(buf[8..16].iter().all(|&b| b == 7));
            assert!(buf[16..].iter().all(|&b| b == 0));
            let (none, n) = read_masked(&d, &[Extent::new(100, 8)], Extent::new(0, 64)).unwrap();
            assert!(none.iter().all(|&b| b == 0) && n == 0);
        }
    }

    #[test]
    fn read_masked_reads_just_the_span_when_the_widened_read_fails() {
        // A target smaller than the window: the aligned read would pass its end.
        let d = MemDisk::from_vec((0..20u8).map(|x| x + 1).collect());
        let (buf, n) = read_masked(&d, &[Extent::new(2, 3)], Extent::new(0, 32)).unwrap();
        assert_eq!(&buf[..6], &[0, 0, 3, 4, 5, 0]);
        assert!(buf[6..].iter().all(|&b| b == 0));
        assert_eq!(n, 3);
    }

    #[test]
    fn chunks_of_lists_each_touched_chunk_once() {
        let ext = [
            Extent::new(0, 10),
            Extent::new(15, 2),
            Extent::new(4096, 8192),
        ];
        let v: Vec<u64> = chunks_of(&ext, 4096).collect();
        assert_eq!(v, vec![0, 1, 2]);
    }

    #[test]
    fn a_consumer_error_stops_the_producer() {
        let r = run(
            2,
            |emit| {
                for i in 0..1_000_000u64 {
                    if !emit(i) {
                        return Ok(());
                    }
                }
                panic!("the producer was not stopped");
            },
            |i| i,
            |i| {
                if i > 10 {
                    Err(crate::Error::Cancelled)
                } else {
                    Ok(())
                }
            },
        );
        assert!(matches!(r, Err(crate::Error::Cancelled)));
    }
}
