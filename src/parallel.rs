//! Building large vectors on all cores.
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

#[cfg(test)]
mod tests {
    use super::*;

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
