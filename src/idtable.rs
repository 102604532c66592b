//! The table of one id shard's usage ids accepted by the run (the day's tier of
//! `state::UsageIds`).
//!
//! Reading a day looks up and adds every row's id in a table of the day's ids
//! (hundreds of MB at 10M rows): each lookup is a cache miss, and with two cores
//! both missing, the lookups took half as long again as on one core alone
//! (BENCHMARKS.md). So the table is open addressing with linear probing, indexed
//! by the id itself (ids are xxh3-128 digests: their low bits are already
//! uniform), and [`DayIds::prefetch`] lets the caller ask for an id's slot a few
//! rows ahead, so the misses of a run of lookups overlap instead of queueing.

use crate::state::SeenUsage;

/// One slot: an id (0 = empty; the id 0 itself is kept aside) and its record.
#[derive(Clone, Copy, Debug)]
struct Slot {
    id: u128,
    seen: SeenUsage,
}

const EMPTY: Slot = Slot { id: 0, seen: SeenUsage { day: crate::time::Day(chrono::NaiveDate::MIN), content: 0 } };

/// Usage ids with their records; see the module.
#[derive(Clone, Debug, Default)]
pub struct DayIds {
    /// A power of two slots (or none), at most 3/4 full.
    slots: Vec<Slot>,
    /// Ids held in `slots`.
    used: usize,
    /// The record of the id 0, which cannot be held in a slot.
    zero: Option<SeenUsage>,
}

impl DayIds {
    pub fn len(&self) -> usize {
        self.used + usize::from(self.zero.is_some())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// How many ids the table holds without growing.
    pub fn capacity(&self) -> usize {
        self.slots.len() / 4 * 3
    }

    fn home(&self, id: u128) -> usize {
        (id as u64 as usize) & (self.slots.len() - 1)
    }

    /// The record of `id`, if held.
    pub fn get(&self, id: u128) -> Option<SeenUsage> {
        if id == 0 {
            return self.zero;
        }
        if self.slots.is_empty() {
            return None;
        }
        let mask = self.slots.len() - 1;
        let mut i = self.home(id);
        loop {
            let slot = &self.slots[i];
            if slot.id == id {
                return Some(slot.seen);
            }
            if slot.id == 0 {
                return None;
            }
            i = (i + 1) & mask;
        }
    }

    /// The record already held for `id`, or None after adding `seen` for it.
    pub fn get_or_insert(&mut self, id: u128, seen: SeenUsage) -> Option<SeenUsage> {
        if id == 0 {
            return match self.zero {
                Some(held) => Some(held),
                None => {
                    self.zero = Some(seen);
                    None
                }
            };
        }
        if self.used + 1 > self.capacity() {
            self.grow_to(self.used + 1);
        }
        let mask = self.slots.len() - 1;
        let mut i = self.home(id);
        loop {
            let slot = &mut self.slots[i];
            if slot.id == id {
                return Some(slot.seen);
            }
            if slot.id == 0 {
                *slot = Slot { id, seen };
                self.used += 1;
                return None;
            }
            i = (i + 1) & mask;
        }
    }

    /// Ask the processor for `id`'s home slot (a hint: never faults, changes nothing).
    #[inline]
    pub fn prefetch(&self, id: u128) {
        if self.slots.is_empty() {
            return;
        }
        prefetch(&self.slots[self.home(id)]);
    }

    /// Room for `additional` more ids without growing.
    pub fn reserve(&mut self, additional: usize) {
        let wanted = self.used + additional;
        if wanted > self.capacity() {
            self.grow_to(wanted);
        }
    }

    /// Rebuild with enough slots for `ids` ids at most 3/4 full.
    fn grow_to(&mut self, ids: usize) {
        let slots = (ids.max(1) * 4).div_ceil(3).next_power_of_two().max(16);
        let old = std::mem::replace(&mut self.slots, vec![EMPTY; slots]);
        self.used = 0;
        let zero = self.zero.take();
        for slot in old.into_iter().filter(|s| s.id != 0) {
            self.get_or_insert(slot.id, slot.seen);
        }
        self.zero = zero;
    }

    /// Every id with its record, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (u128, SeenUsage)> + '_ {
        let zero = self.zero.map(|seen| (0u128, seen));
        zero.into_iter().chain(self.slots.iter().filter(|s| s.id != 0).map(|s| (s.id, s.seen)))
    }

    /// Keep the ids whose record `keep` keeps (rebuilds the table).
    pub fn retain(&mut self, keep: impl Fn(&SeenUsage) -> bool) {
        let kept: Vec<(u128, SeenUsage)> = self.iter().filter(|(_, seen)| keep(seen)).collect();
        let slots = self.slots.len();
        *self = DayIds::default();
        if slots > 0 {
            self.slots = vec![EMPTY; slots];
        }
        for (id, seen) in kept {
            self.get_or_insert(id, seen);
        }
    }
}

/// Ask the processor to bring `value` into the cache (a hint: it reads nothing the
/// program sees and never faults).
#[inline]
pub fn prefetch<T>(value: &T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: `_mm_prefetch` only hints the cache; the address is of a live value.
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(std::ptr::from_ref(value).cast::<i8>());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = value;
}

/// Ask for every cache line `value` spans (a hint, as `prefetch`).
#[inline]
pub fn prefetch_whole<T>(value: &T) {
    let start = std::ptr::from_ref(value).cast::<u8>();
    for offset in (0..std::mem::size_of::<T>()).step_by(64) {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `_mm_prefetch` only hints the cache and never faults; the address
        // lies inside a live value (`wrapping_add` stays within its bytes).
        unsafe {
            std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(start.wrapping_add(offset).cast::<i8>());
        }
        #[cfg(not(target_arch = "x86_64"))]
        let _ = (start, offset);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::time::Day;
    use proptest::prelude::*;
    use std::collections::HashMap;

    fn seen(day: u32, content: u64) -> SeenUsage {
        SeenUsage { day: Day(chrono::NaiveDate::from_ymd_opt(2026, 10, day).expect("a day of October")), content }
    }

    #[test]
    fn an_id_is_added_once_and_found_after_the_table_grows() {
        let mut t = DayIds::default();
        assert_eq!(t.get(7), None);
        assert_eq!(t.get_or_insert(7, seen(1, 70)), None);
        assert_eq!(t.get_or_insert(7, seen(2, 71)), Some(seen(1, 70)), "the first record stays");
        // The id 0 and ids sharing low bits (one home slot) are held too.
        assert_eq!(t.get_or_insert(0, seen(3, 1)), None);
        for k in 1..=1000u128 {
            assert_eq!(t.get_or_insert(k << 64, seen(4, k as u64)), None);
        }
        assert_eq!(t.len(), 1002);
        assert!(t.capacity() >= 1002 && t.slots.len().is_power_of_two());
        assert_eq!(t.get(0), Some(seen(3, 1)));
        assert_eq!(t.get(7), Some(seen(1, 70)));
        assert_eq!(t.get(500 << 64), Some(seen(4, 500)));
        assert_eq!(t.get(1001 << 64), None);
        t.retain(|s| s.content % 2 == 0);
        assert_eq!(t.len(), 501, "the 500 even contents and 70");
        assert_eq!(t.get(0), None);
        assert_eq!(t.get(7), Some(seen(1, 70)));
        assert_eq!(t.get(501 << 64), None);
        assert_eq!(t.get(500 << 64), Some(seen(4, 500)));
    }

    proptest! {
        /// The table answers as a map that keeps each id's first record.
        #[test]
        fn the_table_keeps_the_first_record_of_each_id_as_a_map_does(
            ops in prop::collection::vec((0u128..64, 0u64..4, 0u64..1000), 0..600),
            reserve in 0usize..100,
        ) {
            let mut t = DayIds::default();
            t.reserve(reserve);
            let mut map: HashMap<u128, SeenUsage> = HashMap::new();
            for (small, high, content) in ops {
                // Ids that collide in their low bits as often as they differ.
                let id = small | (u128::from(high) << 100);
                let expected = map.get(&id).copied();
                if expected.is_none() {
                    map.insert(id, seen(1, content));
                }
                prop_assert_eq!(t.get_or_insert(id, seen(1, content)), expected);
            }
            prop_assert_eq!(t.len(), map.len());
            let mut held: Vec<(u128, SeenUsage)> = t.iter().collect();
            held.sort_by_key(|e| e.0);
            let mut wanted: Vec<(u128, SeenUsage)> = map.into_iter().collect();
            wanted.sort_by_key(|e| e.0);
            prop_assert_eq!(held, wanted);
        }
    }
}
