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
use crate::time::Day;

/// One slot: an id's two halves (both 0 = empty; the id 0 itself is kept aside)
/// and its content digest. The day is the table's: 24 bytes, not 32.
#[derive(Clone, Copy, Debug)]
struct Slot {
    low: u64,
    high: u64,
    content: u64,
}

const EMPTY: Slot = Slot { low: 0, high: 0, content: 0 };

impl Slot {
    fn id(&self) -> u128 {
        u128::from(self.high) << 64 | u128::from(self.low)
    }

    fn is_empty(&self) -> bool {
        self.low == 0 && self.high == 0
    }

    fn holds(&self, id: u128) -> bool {
        self.low == id as u64 && self.high == (id >> 64) as u64
    }
}

/// Usage ids of one day with their content digests; see the module.
#[derive(Clone, Debug, Default)]
pub struct DayIds {
    /// Slots (or none), at most 3/4 full; any number of them (the home slot is
    /// found by a multiply, not a mask), so a table sized for a day is not
    /// rounded up to a power of two (at 10M ids that took the tables from 60% to
    /// 75% full and from 537 to ~320 MB).
    slots: Vec<Slot>,
    /// Ids held in `slots`.
    used: usize,
    /// The content digest of the id 0, which cannot be held in a slot.
    zero: Option<u64>,
    /// The day of every id held (set by the first one added): the table is the
    /// day's tier of `state::UsageIds`, which a run fills with its own day's ids.
    day: Option<Day>,
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
        self.slots.len() * 3 / 4
    }

    fn home(&self, id: u128) -> usize {
        // The low half of a digest is uniform: its product with the length,
        // shifted down, is a uniform slot (Lemire's multiply-shift range).
        ((u128::from(id as u64) * self.slots.len() as u128) >> 64) as usize
    }

    fn record(&self, content: u64) -> SeenUsage {
        SeenUsage { day: self.day.expect("a table holding ids has their day"), content }
    }

    /// The record of `id`, if held.
    pub fn get(&self, id: u128) -> Option<SeenUsage> {
        if id == 0 {
            return self.zero.map(|c| self.record(c));
        }
        if self.slots.is_empty() {
            return None;
        }
        let mut i = self.home(id);
        loop {
            let slot = &self.slots[i];
            if slot.holds(id) {
                return Some(self.record(slot.content));
            }
            if slot.is_empty() {
                return None;
            }
            i += 1;
            if i == self.slots.len() {
                i = 0;
            }
        }
    }

    /// The record already held for `id`, or None after adding `seen` for it.
    ///
    /// Panics when `seen` is of another day than the ids held: the table is one
    /// day's, and a run adds only its own day's ids.
    pub fn get_or_insert(&mut self, id: u128, seen: SeenUsage) -> Option<SeenUsage> {
        match self.day {
            None => self.day = Some(seen.day),
            Some(day) => assert_eq!(day, seen.day, "a table of the day's ids holds one day's"),
        }
        if id == 0 {
            return match self.zero {
                Some(held) => Some(self.record(held)),
                None => {
                    self.zero = Some(seen.content);
                    None
                }
            };
        }
        if self.used + 1 > self.capacity() {
            // Geometric growth: a table that was not reserved for the day grows
            // in amortised constant time per id.
            self.grow_to((self.used + 1).max(self.capacity() * 2));
        }
        let mut i = self.home(id);
        loop {
            let slot = &mut self.slots[i];
            if slot.holds(id) {
                let content = slot.content;
                return Some(self.record(content));
            }
            if slot.is_empty() {
                *slot = Slot { low: id as u64, high: (id >> 64) as u64, content: seen.content };
                self.used += 1;
                return None;
            }
            i += 1;
            if i == self.slots.len() {
                i = 0;
            }
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
        let slots = (ids.max(1) * 4).div_ceil(3).max(16);
        let old = std::mem::replace(&mut self.slots, vec![EMPTY; slots]);
        debug_assert!(self.capacity() >= ids);
        self.used = 0;
        for slot in old.into_iter().filter(|s| !s.is_empty()) {
            self.place(slot);
        }
    }

    /// Put a slot's id, not held yet, in its place (a rebuild: no day to check).
    fn place(&mut self, slot: Slot) {
        let mut i = self.home(slot.id());
        while !self.slots[i].is_empty() {
            i += 1;
            if i == self.slots.len() {
                i = 0;
            }
        }
        self.slots[i] = slot;
        self.used += 1;
    }

    /// Every id with its record, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (u128, SeenUsage)> + '_ {
        let zero = self.zero.map(|content| (0u128, self.record(content)));
        zero.into_iter().chain(self.slots.iter().filter(|s| !s.is_empty()).map(|s| (s.id(), self.record(s.content))))
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
        assert_eq!(t.get_or_insert(7, seen(1, 71)), Some(seen(1, 70)), "the first record stays");
        // The id 0 and ids sharing their low half (one home slot) are held too.
        assert_eq!(t.get_or_insert(0, seen(1, 1)), None);
        for k in 1..=1000u128 {
            assert_eq!(t.get_or_insert(k << 64, seen(1, k as u64)), None);
        }
        assert_eq!(t.len(), 1002);
        assert!(t.capacity() >= 1002 && t.slots.len() * 3 / 4 == t.capacity());
        assert!(t.slots.len() < 2 * 1002 * 4 / 3, "grown geometrically, not past twice what it needs");
        assert_eq!(t.get(0), Some(seen(1, 1)));
        assert_eq!(t.get(7), Some(seen(1, 70)));
        assert_eq!(t.get(500 << 64), Some(seen(1, 500)));
        assert_eq!(t.get(1001 << 64), None);
        t.retain(|s| s.content % 2 == 0);
        assert_eq!(t.len(), 501, "the 500 even contents and 70");
        assert_eq!(t.get(0), None);
        assert_eq!(t.get(7), Some(seen(1, 70)));
        assert_eq!(t.get(501 << 64), None);
        assert_eq!(t.get(500 << 64), Some(seen(1, 500)));
    }

    #[test]
    fn a_table_reserved_for_its_ids_is_not_rounded_up_and_does_not_grow() {
        let mut t = DayIds::default();
        t.reserve(100_000);
        let slots = t.slots.len();
        assert_eq!(slots, 133_334, "4/3 of the ids, not the next power of two (262,144)");
        for i in 0..100_000u64 {
            let id = xxhash_rust::xxh3::xxh3_128(&i.to_le_bytes());
            assert_eq!(t.get_or_insert(id, seen(1, i)), None);
        }
        assert_eq!(t.slots.len(), slots);
        assert!((0..100_000u64).all(|i| t.get(xxhash_rust::xxh3::xxh3_128(&i.to_le_bytes())) == Some(seen(1, i))));
        assert!((100_000..110_000u64).all(|i| t.get(xxhash_rust::xxh3::xxh3_128(&i.to_le_bytes())).is_none()));
    }

    #[test]
    #[should_panic(expected = "holds one day's")]
    fn an_id_of_another_day_is_refused() {
        let mut t = DayIds::default();
        t.get_or_insert(7, seen(1, 70));
        t.get_or_insert(8, seen(2, 80));
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
