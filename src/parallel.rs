//! Building large vectors on all cores, and writing while the next block is made.
//!
//! On the machine this is measured on, the first write to a fresh page costs far
//! more than the copying (the host backs guest memory on first touch; see
//! BENCHMARKS.md), so a vector of millions of entries filled by one thread spends
//! most of its time in page faults on that thread. These helpers fill it on all
//! cores instead.

use rayon::prelude::*;

/// The concatenation of `parts` (each turned into `len(part)` entries by `fill`,
/// which receives the part's index, the part, and the slice its entries go to),
/// in part order. The vector is first set to `blank` on all cores, then each
/// part fills its own slice, on all cores.
pub fn concat<P, T>(parts: Vec<P>, blank: T, len: impl Fn(&P) -> usize, fill: impl Fn(usize, P, &mut [T]) + Sync) -> Vec<T>
where
    P: Send,
    T: Clone + Send + Sync,
{
    let total = parts.iter().map(&len).sum();
    let mut out: Vec<T> = Vec::with_capacity(total);
    out.par_extend(rayon::iter::repeat_n(blank, total));
    let mut slots = Vec::with_capacity(parts.len());
    let mut rest = out.as_mut_slice();
    for part in &parts {
        let (slot, tail) = std::mem::take(&mut rest).split_at_mut(len(part));
        slots.push(slot);
        rest = tail;
    }
    parts.into_par_iter().zip(slots).enumerate().for_each(|(i, (part, slot))| fill(i, part, slot));
    out
}

/// Write the blocks `blocks` yields to `w`, in order, on a thread of its own,
/// while the calling thread makes the next block (on all cores, if it likes). A
/// rendezvous hands a block over only once the one before is written: one block
/// is written while the next is made, and no third is held. The writes block on
/// the disk (the large files are written with `O_DIRECT`); made on a pool thread,
/// they held a core the next block waited for (BENCHMARKS.md, 2026-12-04). The
/// first write error stops both sides and is returned.
pub fn write_behind<B: AsRef<[u8]> + Send>(w: &mut (dyn std::io::Write + Send), blocks: impl Iterator<Item = Vec<B>>) -> std::io::Result<()> {
    std::thread::scope(|scope| {
        let (handover, handed) = std::sync::mpsc::sync_channel::<Vec<B>>(0);
        let writer = scope.spawn(move || -> std::io::Result<()> {
            for block in handed {
                block.iter().try_for_each(|part| w.write_all(part.as_ref()))?;
            }
            Ok(())
        });
        for block in blocks {
            // The writer stopped at an error: it is returned below.
            if handover.send(block).is_err() {
                break;
            }
        }
        drop(handover);
        writer.join().expect("the writer thread does not panic")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_are_written_in_order_and_a_write_error_stops_the_making() {
        fn blocks(made: &std::cell::Cell<usize>) -> impl Iterator<Item = Vec<String>> + '_ {
            (0..50).map(move |b| {
                made.set(made.get() + 1);
                (0..b % 4).map(|p| format!("{b}.{p};")).collect()
            })
        }
        let made = std::cell::Cell::new(0);
        let mut out = Vec::new();
        write_behind(&mut out, blocks(&made)).unwrap();
        let expected: String = (0..50).flat_map(|b| (0..b % 4).map(move |p| format!("{b}.{p};"))).collect();
        assert_eq!(String::from_utf8(out).unwrap(), expected);
        assert_eq!(made.get(), 50);

        /// Takes `room` bytes, then fails.
        struct Full {
            room: usize,
        }
        impl std::io::Write for Full {
            fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
                if buf.len() > self.room {
                    return Err(std::io::Error::other("disk full"));
                }
                self.room -= buf.len();
                Ok(buf.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let made = std::cell::Cell::new(0);
        let err = write_behind(&mut Full { room: 20 }, blocks(&made)).unwrap_err();
        assert_eq!(err.to_string(), "disk full");
        // The writer failed within the first blocks: at most two more were made
        // (one handed over while it wrote, one waiting at the rendezvous).
        assert!(made.get() < 10, "{} blocks made after the writer failed", made.get());
    }

    #[test]
    fn parts_are_concatenated_in_order_whatever_their_sizes() {
        let parts: Vec<Vec<u32>> = (0..300).map(|p| (0..(p * 7 % 13)).map(|i| p * 100 + i).collect()).collect();
        let expected: Vec<u32> = parts.iter().flatten().copied().collect();
        let copied = concat(parts.clone(), 0, Vec::len, |_, part, slot| slot.copy_from_slice(&part));
        assert_eq!(copied, expected);
        let indexed = concat(parts, (0, 0), Vec::len, |p, part, slot| {
            for (to, v) in slot.iter_mut().zip(part) {
                *to = (p, v);
            }
        });
        assert_eq!(indexed.iter().map(|x| x.1).collect::<Vec<_>>(), expected);
        assert!(indexed.windows(2).all(|w| w[0].0 <= w[1].0));
        assert!(concat(Vec::<Vec<u8>>::new(), 0, Vec::len, |_, part, slot| slot.copy_from_slice(&part)).is_empty());
    }
}
