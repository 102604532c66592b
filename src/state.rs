//! The engine's own state between runs (SPEC §12): balances, service states,
//! voucher use, remembered ids, refund bases and transfer sources.
//!
//! Invariant: a state file is written whole (aside, then renamed) and names the
//! day it follows; `state/D.json` existing means day D is settled and committed.

use crate::engine::LineKind;
use crate::ids::Uin;
use crate::money::Money;
use crate::time::{Day, Month};
use chrono::Datelike;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// Bumped whenever the layout changes incompatibly.
pub const STATE_FORMAT: u32 = 5;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountState {
    pub cash: Money,
    pub gift: Money,
    pub credit_limit: Money,
    pub suspended: bool,
}

impl AccountState {
    pub fn in_arrears(&self) -> bool {
        self.cash < -self.credit_limit
    }
}

/// A remembered usage record: the day of the run that accepted it (ids are kept
/// for that day's month and the next) and the digest of its content.
///
/// The content digest is 64 bits (the low half of xxh3-128): it is only ever
/// compared with rows of the same id, so a changed row goes unnoticed with
/// probability 2^-64; the id digest stays 128 bits, since it must tell apart every
/// id of two months. 32 bytes an entry in the table instead of 48 (10M ids a day:
/// 270 MB less).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SeenUsage {
    pub day: Day,
    pub content: u64,
}

/// Bytes of one entry of a usage-id file of the older form, the entries alone: id
/// digest (16), content digest (8), day (4).
const USAGE_ENTRY: usize = 28;

/// Bytes of one id's key in a key column: the top 64 bits of its digest.
const USAGE_KEY: usize = 8;

/// Bytes of the rest of an entry beside its key: the digest's low 64 bits (8), the
/// content digest (8), the day (4). With its key, as many bytes as an entry of the
/// older form.
const USAGE_REST: usize = 20;

/// Bytes of the trailer of a usage-id file: how many ids each id shard holds.
const USAGE_TRAILER: usize = ID_SHARDS * 8;

/// Entries of a usage-id file a read may skip between two it needs, and still
/// read them in one piece (a page's worth).
const USAGE_GAP: u64 = 4096 / USAGE_REST as u64;

/// The key of an id in a usage-id file's key column, and in `WantedIds`: the top
/// 64 bits of its digest.
pub fn usage_key(id: u128) -> u64 {
    (id >> 64) as u64
}

/// Ids of accepted rows with a digest of their content (§4.2 duplicates).
///
/// Usage record ids, millions a day, are kept by the xxh3-128 digest of the id
/// text (two ids collide with probability ~n²/2^129) and stored beside the states
/// in compact binary files, not in the JSON: `state/D.usage-ids` holds the ids first
/// accepted on day D, and a state lists the days whose files make up what it
/// remembers. A day writes only its own ids, however many earlier days remember.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeenIds {
    #[serde(skip)]
    pub usage: UsageIds,
    /// The days whose `state/D.usage-ids` files hold the remembered usage ids, with
    /// how many each holds (checked on load).
    pub usage_files: BTreeMap<Day, u64>,
    /// Order, recharge and transfer ids (inline up to 24 bytes) with the digest
    /// of their content: a month of 1M-row days remembers ~290k of them, which
    /// as pairs of strings took ~130 bytes each.
    pub orders: RecordIds,
    pub recharges: RecordIds,
    pub transfers: RecordIds,
    /// The day whose state file (`state/D.json`) holds the record ids remembered
    /// before these were loaded: a day sets them aside while it reads its usage
    /// and settles (`RecordIds`), and reads them from there again.
    #[serde(skip)]
    pub records_from: Option<Day>,
}

impl SeenIds {
    /// The order, recharge and transfer ids earlier days accepted dropped from
    /// memory (what this state added since it was loaded stays), when there is a
    /// state file to read them from again (`records_from`); with none they stay.
    pub fn set_aside_records(&mut self) {
        if self.records_from.is_some() {
            for r in [&mut self.orders, &mut self.recharges, &mut self.transfers] {
                r.remembered = None;
            }
        }
    }

    /// Whether the record ids earlier days accepted are held (not set aside).
    pub fn holds_records(&self) -> bool {
        [&self.orders, &self.recharges, &self.transfers].iter().all(|r| r.remembered.is_some())
    }

    /// The record ids earlier days accepted, as read from the state file named
    /// by `records_from`, held again beside what was added since.
    pub fn hold_records(&mut self, remembered: RememberedRecords) -> Result<(), String> {
        for (r, remembered) in [(&mut self.orders, remembered.orders), (&mut self.recharges, remembered.recharges), (&mut self.transfers, remembered.transfers)] {
            if let Some(id) = r.added.keys().find(|id| find_record(&remembered, id).is_ok()) {
                return Err(format!("record id {id} was accepted again while its earlier acceptance was set aside"));
            }
            r.remembered = Some(remembered);
        }
        Ok(())
    }
}

/// Ids of one kind of record (orders, recharges or transfers), remembered for
/// good (§4.2), with the digest of their content: those accepted before the
/// state was loaded (`remembered`) and those accepted since (`added`), written
/// as one map in id order.
///
/// A day holds the remembered ones only while it checks its orders, recharges
/// and transfers and while it writes its state: late in a month of 10M-row days
/// they are ~600k ids, which sat on the peak of reading the day's usage and of
/// settling it (`SeenIds::set_aside_records`; BENCHMARKS.md, eighteenth
/// session). They are a list sorted by id, 40 bytes an id (a tree built from the
/// JSON took the list it was built from, a sort's scratch and its nodes at once:
/// ~65 MB for 600k ids).
#[derive(Clone, Debug)]
pub struct RecordIds {
    /// Sorted by id, each once; `None` while set aside.
    remembered: Option<SortedRecords>,
    added: BTreeMap<Text, ContentDigest>,
}

/// Record ids with their content digests, sorted by id, each once.
pub type SortedRecords = Vec<(Text, ContentDigest)>;

/// Where `id` is in `records` (`Ok`), or would be.
fn find_record(records: &SortedRecords, id: &str) -> Result<usize, usize> {
    records.binary_search_by(|(held, _)| held.as_str().cmp(id))
}

/// None remembered (and none set aside).
impl Default for RecordIds {
    fn default() -> RecordIds {
        RecordIds { remembered: Some(Vec::new()), added: BTreeMap::new() }
    }
}

impl RecordIds {
    const SET_ASIDE: &'static str = "record ids earlier days accepted are held (SeenIds::hold_records) before records are checked or written";

    /// The content digest `id` was accepted with, if it was.
    pub fn get(&self, id: &str) -> Option<&ContentDigest> {
        let remembered = self.remembered.as_ref().expect(Self::SET_ASIDE);
        self.added.get(id).or_else(|| find_record(remembered, id).ok().map(|at| &remembered[at].1))
    }

    /// Remember `id`, which is not remembered yet.
    pub fn insert(&mut self, id: Text, digest: ContentDigest) {
        debug_assert!(self.get(&id).is_none(), "{id} is remembered already");
        self.added.insert(id, digest);
    }

    /// The ids held: every one, or those added since the others were set aside.
    pub fn len(&self) -> usize {
        self.remembered.as_ref().map_or(0, Vec::len) + self.added.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every id with its digest, in id order (the remembered ones must be held).
    pub fn iter(&self) -> impl Iterator<Item = (&Text, &ContentDigest)> {
        let mut remembered = self.remembered.as_ref().expect(Self::SET_ASIDE).iter().map(|(id, digest)| (id, digest)).peekable();
        let mut added = self.added.iter().peekable();
        std::iter::from_fn(move || match (remembered.peek(), added.peek()) {
            (Some(r), Some(a)) if r.0 < a.0 => remembered.next(),
            (Some(_), Some(_)) | (None, _) => added.next(),
            (Some(_), None) => remembered.next(),
        })
    }
}

/// Two sets of record ids are equal when both hold the same ids, or both have
/// theirs set aside and added the same since.
impl PartialEq for RecordIds {
    fn eq(&self, other: &RecordIds) -> bool {
        match (self.remembered.is_some(), other.remembered.is_some()) {
            (true, true) => self.iter().eq(other.iter()),
            (false, false) => self.added == other.added,
            _ => false,
        }
    }
}

impl Eq for RecordIds {}

impl Serialize for RecordIds {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if self.remembered.is_none() {
            return Err(serde::ser::Error::custom(Self::SET_ASIDE));
        }
        serializer.collect_map(self.iter())
    }
}

impl<'de> Deserialize<'de> for RecordIds {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<RecordIds, D::Error> {
        Ok(RecordIds { remembered: Some(sorted_records(d)?), added: BTreeMap::new() })
    }
}

/// The record ids a state file holds, read on their own (`Store::hold_records`).
#[derive(Debug, Default, Deserialize)]
pub struct RememberedRecords {
    #[serde(deserialize_with = "sorted_records")]
    pub orders: SortedRecords,
    #[serde(deserialize_with = "sorted_records")]
    pub recharges: SortedRecords,
    #[serde(deserialize_with = "sorted_records")]
    pub transfers: SortedRecords,
}

/// A JSON map of record ids as a list sorted by id: pushed as read (a state
/// writes them in order, which is checked as they come), sorted only when
/// they come out of order; an id given twice keeps its last digest, as a map
/// keeps its last value.
fn sorted_records<'de, D: serde::Deserializer<'de>>(d: D) -> Result<SortedRecords, D::Error> {
    struct Records;
    impl<'de> serde::de::Visitor<'de> for Records {
        type Value = SortedRecords;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a map")
        }
        fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<SortedRecords, A::Error> {
            let mut records: SortedRecords = Vec::with_capacity(map.size_hint().unwrap_or(0).min(1 << 16));
            let mut in_order = true;
            while let Some((id, digest)) = map.next_entry::<Text, ContentDigest>()? {
                in_order &= records.last().is_none_or(|(last, _)| *last < id);
                records.push((id, digest));
            }
            if !in_order {
                // Stable: of an id given twice, the last is last; keep it.
                records.sort_by(|a, b| a.0.cmp(&b.0));
                let mut kept: SortedRecords = Vec::with_capacity(records.len());
                for record in records {
                    match kept.last_mut() {
                        Some(last) if last.0 == record.0 => *last = record,
                        _ => kept.push(record),
                    }
                }
                records = kept;
            }
            records.shrink_to_fit();
            Ok(records)
        }
    }
    d.deserialize_map(Records)
}

/// Refund bases by organization.
pub type RefundBases = BTreeMap<String, Bases>;
/// Accepted `in` transfers by transfer id (§9): what an `out` may return.
///
/// Every accepted `in` stays a possible source for good, ~5k more a day at the
/// generator's 10M usage rows, ~100k by the end of a month (~10 MB held), yet a
/// day's `out` transfers name a few thousand. So a day that starts from a state
/// file holds only the sources its `out`s name and those it accepts, the rest
/// set aside in that file (`set_aside`), and holds them again before its state
/// is written (`hold_rest`, `Store::hold_set_aside`): held through the runs they
/// set the peak of the last days of a month of 10M-row days (BENCHMARKS.md,
/// twenty-second session). A state whose sources are set aside cannot be
/// written.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TransferSources {
    held: BTreeMap<Text, TransferSource>,
    /// The day whose state file holds the sources not held, if any are set aside.
    rest_from: Option<Day>,
}

impl TransferSources {
    const SET_ASIDE: &'static str = "transfer sources set aside are held (Store::hold_set_aside) before the state is written";

    /// Keep only the sources `keep` names, the rest being in the state file of
    /// day `from`, which the held ones were read from.
    pub fn set_aside(&mut self, from: Day, keep: impl Fn(&str) -> bool) {
        debug_assert!(self.rest_from.is_none_or(|d| d == from), "sources set aside from two state files");
        self.held.retain(|id, _| keep(id.as_str()));
        self.rest_from = Some(from);
    }

    /// The day whose state file holds the sources set aside, if any are.
    pub fn rest_from(&self) -> Option<Day> {
        self.rest_from
    }

    /// The sources set aside, as read from their state file, held again beside
    /// the held ones, which are newer (drawn since, or accepted since).
    pub fn hold_rest(&mut self, rest: BTreeMap<Text, TransferSource>) {
        for (id, source) in rest {
            self.held.entry(id).or_insert(source);
        }
        self.rest_from = None;
    }

    /// The held sources, moved out (any set aside stay set aside).
    pub fn take_held(&mut self) -> BTreeMap<Text, TransferSource> {
        std::mem::take(&mut self.held)
    }
}

impl std::ops::Deref for TransferSources {
    type Target = BTreeMap<Text, TransferSource>;
    fn deref(&self) -> &Self::Target {
        &self.held
    }
}

impl Extend<(Text, TransferSource)> for TransferSources {
    fn extend<I: IntoIterator<Item = (Text, TransferSource)>>(&mut self, sources: I) {
        self.held.extend(sources);
    }
}

impl FromIterator<(Text, TransferSource)> for TransferSources {
    fn from_iter<I: IntoIterator<Item = (Text, TransferSource)>>(sources: I) -> Self {
        TransferSources { held: sources.into_iter().collect(), rest_from: None }
    }
}

impl Serialize for TransferSources {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if self.rest_from.is_some() {
            return Err(serde::ser::Error::custom(Self::SET_ASIDE));
        }
        self.held.serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for TransferSources {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<TransferSources, D::Error> {
        Ok(TransferSources { held: sorted_map(d)?, rest_from: None })
    }
}

/// What a day reads back of the state it started from once its usage is read
/// (`Store::read_back`): the record ids set aside, and the refund bases and
/// transfer sources, dropped while the usage was read (~20 MB late in a month
/// of 10M-row days, not needed before the books are built).
#[derive(Debug, Deserialize)]
pub struct ReadBack {
    pub format: u32,
    pub day: Day,
    pub seen: RememberedRecords,
    #[serde(deserialize_with = "sorted_map")]
    pub refund_bases: RefundBases,
    pub transfer_sources: TransferSources,
}

/// What a day set aside while it read and settled, read again from the state
/// file that holds it before the day's state is written (`Store::hold_set_aside`).
#[derive(Debug, Deserialize)]
pub struct SetAside {
    pub format: u32,
    pub day: Day,
    pub seen: RememberedRecords,
    #[serde(deserialize_with = "sorted_map")]
    pub transfer_sources: BTreeMap<Text, TransferSource>,
}

/// What a day starting from a state reads of its `seen` at first: the record
/// ids are skipped (set aside: `RecordIds`).
#[derive(Debug, Deserialize)]
pub struct SeenWithoutRecords {
    pub usage_files: BTreeMap<Day, u64>,
}

/// The xxh3-128 digest of a record's content (§4.2: "identical content"), held
/// in 16 bytes and written in the state as 32 lowercase hex digits (what the
/// state always held); anything else there is refused when the state is read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ContentDigest(pub u128);

impl Serialize for ContentDigest {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(&format_args!("{:032x}", self.0))
    }
}

impl<'de> Deserialize<'de> for ContentDigest {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<ContentDigest, D::Error> {
        struct Hex;
        impl serde::de::Visitor<'_> for Hex {
            type Value = ContentDigest;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a content digest of 32 lowercase hex digits")
            }
            fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<ContentDigest, E> {
                let hex = text.len() == 32 && text.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
                match u128::from_str_radix(text, 16) {
                    Ok(digest) if hex => Ok(ContentDigest(digest)),
                    _ => Err(E::invalid_value(serde::de::Unexpected::Str(text), &self)),
                }
            }
        }
        deserializer.deserialize_str(Hex)
    }
}

/// How many shards usage ids are kept in.
pub const ID_SHARDS: usize = 64;

/// Usage ids in `ID_SHARDS` shards by the top bits of the id digest: the shards
/// are checked and written in parallel, and the concatenation of the sorted
/// shards is sorted by digest.
///
/// The ids of earlier days (read from their files) are `remembered`: per shard a
/// sorted array, 28 bytes an id with no empty slots, found through an index of
/// where each prefix of the digest starts, behind a Bloom filter; they never
/// change during a run. A day keeps of them only those its usage file holds
/// (`WantedIds`). A day's own ids are not held: they are noted in the spill and
/// decided once it is read (`spill::IdShard`). Holding every remembered id in
/// hash tables took ~70 bytes an id at their usual load (two months of 10M-row
/// days would not fit in this machine's memory; BENCHMARKS.md), and the day's own
/// ids in tables ~32 (320 MB at 10M rows).
#[derive(Clone, Debug)]
pub struct UsageIds {
    remembered: Vec<RememberedShard>,
    /// The days whose ids are in `remembered` (a day not listed has none there).
    remembered_days: std::collections::BTreeSet<Day>,
}

/// `entries` (of one id shard: their ids share the shard's top bits) sorted by id.
/// Ids are uniform digests, so one counting pass on the 16 bits below the shard's
/// spreads them into buckets of a few ids each, which are then sorted on their own
/// (a comparison sort of a 10M-row day's 64 shards took 0.28 s of CPU). Entries
/// that do not share their top bits, or too few to pay for the buckets, are sorted
/// by comparison.
fn sorted_by_id<V: Copy>(mut entries: Vec<(u128, V)>) -> Vec<(u128, V)> {
    const BITS: u32 = 16;
    let shift = 128 - ID_SHARDS.trailing_zeros() - BITS;
    let shard_of = |id: u128| id >> (shift + BITS);
    let Some(first) = entries.first().map(|e| shard_of(e.0)) else { return entries };
    if entries.len() < 1 << 12 || entries.iter().any(|e| shard_of(e.0) != first) {
        entries.sort_unstable_by_key(|e| e.0);
        return entries;
    }
    let bucket = |id: u128| (id >> shift) as usize & ((1 << BITS) - 1);
    let mut starts = vec![0usize; (1 << BITS) + 1];
    for e in &entries {
        starts[bucket(e.0) + 1] += 1;
    }
    for i in 1..starts.len() {
        starts[i] += starts[i - 1];
    }
    let mut next = starts.clone();
    let mut out = vec![entries[0]; entries.len()];
    for e in &entries {
        let b = bucket(e.0);
        out[next[b]] = *e;
        next[b] += 1;
    }
    for b in 0..1 << BITS {
        out[starts[b]..starts[b + 1]].sort_unstable_by_key(|e| e.0);
    }
    out
}

/// One remembered id; packed: 28 bytes, not 32.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(C, packed(4))]
struct RememberedId {
    id: u128,
    content: u64,
    day: Day,
}

/// The remembered ids of one shard, sorted by id once all files are read.
#[derive(Clone, Debug, Default)]
pub struct RememberedShard {
    ids: Vec<RememberedId>,
    /// Bits of the digest below the shard's that `starts` is indexed by.
    bits: u32,
    /// `starts[p]..starts[p + 1]`: the ids whose next `bits` bits are `p`.
    starts: Vec<u32>,
    /// A split-block Bloom filter of the ids (as Parquet's: 256-bit blocks, eight
    /// bits set in one block an id, ~10 bits an id): most ids looked up are new,
    /// and the filter turns them away with one cache line read instead of the
    /// index and a binary search (reading a day took 40% longer with 90M ids
    /// remembered; BENCHMARKS.md).
    filter: Vec<[u32; 8]>,
}

/// The salts of Parquet's split-block Bloom filter.
const FILTER_SALT: [u32; 8] = [0x47b6137b, 0x44974d91, 0x8824ad5b, 0xa2b7289d, 0x705495c7, 0x2df1424b, 0x9efc4947, 0x5c6bfb31];

/// The block of `id` among `blocks` and the bits it sets there. The id is a
/// digest: its low 64 bits serve as the hash (the shard and the index use its
/// top bits).
pub(crate) fn filter_slot(id: u128, blocks: usize) -> (usize, [u32; 8]) {
    let hash = id as u64;
    let block = (((hash >> 32) * blocks as u64) >> 32) as usize;
    let key = hash as u32;
    (block, std::array::from_fn(|i| 1u32 << (key.wrapping_mul(FILTER_SALT[i]) >> 27)))
}

impl RememberedShard {
    fn prefix(&self, id: u128) -> usize {
        if self.bits == 0 {
            0
        } else {
            ((id << ID_SHARDS.trailing_zeros()) >> (128 - self.bits)) as usize
        }
    }

    /// Sort the ids, refuse an id held twice, and index them.
    fn finish(&mut self) -> Result<(), String> {
        // The files are sorted runs: a stable sort merges them (an unstable one sorted
        // them again).
        self.ids.sort_by_key(|e| e.id);
        if self.ids.windows(2).any(|w| w[0].id == w[1].id) {
            return Err("the usage id files repeat an id".into());
        }
        // About eight ids a prefix, at most 2^16 prefixes.
        self.bits = ((self.ids.len() / 8).max(1).ilog2() + 1).min(16);
        let mut starts = vec![0u32; (1 << self.bits) + 1];
        for e in &self.ids {
            starts[self.prefix(e.id) + 1] += 1;
        }
        for p in 1..starts.len() {
            starts[p] += starts[p - 1];
        }
        self.starts = starts;
        let blocks = (self.ids.len() * 10 / 256).max(1);
        self.filter = vec![[0u32; 8]; blocks];
        for e in &self.ids {
            let (block, bits) = filter_slot(e.id, blocks);
            for (word, bit) in self.filter[block].iter_mut().zip(bits) {
                *word |= bit;
            }
        }
        Ok(())
    }

    /// Ask the processor for the filter block of `id` (a hint, `memory::prefetch`).
    pub fn prefetch(&self, id: u128) {
        if self.filter.is_empty() {
            return;
        }
        crate::memory::prefetch(&self.filter[filter_slot(id, self.filter.len()).0]);
    }

    /// False when `id` is surely not remembered.
    fn may_hold(&self, id: u128) -> bool {
        let (block, bits) = filter_slot(id, self.filter.len());
        self.filter[block].iter().zip(bits).all(|(word, bit)| word & bit != 0)
    }

    /// The remembered record of `id`, if any.
    pub fn get(&self, id: u128) -> Option<SeenUsage> {
        if self.ids.is_empty() {
            return None;
        }
        assert!(!self.starts.is_empty(), "remembered usage ids are indexed (finish_decoding) before they are looked up");
        if !self.may_hold(id) {
            return None;
        }
        let p = self.prefix(id);
        let run = &self.ids[self.starts[p] as usize..self.starts[p + 1] as usize];
        run.binary_search_by_key(&id, |e| e.id).ok().map(|i| SeenUsage { day: run[i].day, content: run[i].content })
    }
}

/// The usage ids a day can look up, by key: the top 64 bits of the digest of
/// every `record_id` of its `usage.csv` (`usage_key`), sorted, with an index of
/// where each prefix of the keys starts. The ids of earlier days are decoded
/// through it and only those whose key it holds are kept: a month of 10M-row days
/// remembers 300M ids (8 GB at 28 bytes an id, 10.8 GB resident on the 1st of the
/// next month), of which a day meets its own few re-sent ones. Keys, not whole
/// digests, since a superset of the ids the day looks up serves as well (an id
/// kept that the day does not look up is never found): 80 MB at 10M rows instead
/// of 160, gathered in parts and then put together (twice as much while they
/// were, the peak of a late 10M-row day), and the chance that an id of another
/// day shares a key with one of the day's is ~n·m/2^64.
#[derive(Clone, Debug)]
pub struct WantedIds {
    keys: Vec<u64>,
    /// Top bits of the key that `starts` is indexed by (about four keys a prefix).
    bits: u32,
    /// `starts[p]..starts[p + 1]`: the keys whose top `bits` bits are `p`.
    starts: Vec<u32>,
    /// A bit for each value of the top `filter_bits` bits of a key, set when a
    /// wanted key has it (16 to 32 bits a key, at most 16 MB: 13 bits a key at
    /// 10M): most keys of a usage-id file's key column, read in order, are
    /// turned away by one bit read in order and a branch that rarely goes the
    /// other way (`holds_key`).
    filter: Vec<u64>,
    filter_bits: u32,
}

impl WantedIds {
    /// The wanted ids of `keys` (`usage_key` of each id's digest; in any order,
    /// any key any number of times).
    pub fn new(mut keys: Vec<u64>) -> WantedIds {
        use rayon::slice::ParallelSliceMut;
        keys.par_sort_unstable();
        keys.dedup();
        assert!(keys.len() < u32::MAX as usize, "a day's usage ids are indexed by u32");
        let bits = ((keys.len() / 4).max(1).ilog2() + 1).min(26);
        let mut starts = vec![0u32; (1 << bits) + 1];
        for &key in &keys {
            starts[(key >> (64 - bits)) as usize + 1] += 1;
        }
        for p in 1..starts.len() {
            starts[p] += starts[p - 1];
        }
        let filter_bits = (keys.len().max(1).ilog2() + 5).clamp(12, 27);
        let mut filter = vec![0u64; 1 << (filter_bits - 6)];
        for &key in &keys {
            let bit = key >> (64 - filter_bits);
            filter[(bit >> 6) as usize] |= 1 << (bit & 63);
        }
        WantedIds { keys, bits, starts, filter, filter_bits }
    }

    /// How many distinct keys are wanted.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Whether an id with `key` (the top 64 bits of its digest) is wanted. Keys
    /// asked for in ascending order read the filter and the index in order (no
    /// cache miss of their own).
    pub fn holds_key(&self, key: u64) -> bool {
        let bit = key >> (64 - self.filter_bits);
        if self.filter[(bit >> 6) as usize] & (1 << (bit & 63)) == 0 {
            return false;
        }
        let p = (key >> (64 - self.bits)) as usize;
        self.keys[self.starts[p] as usize..self.starts[p + 1] as usize].contains(&key)
    }

    /// Whether `id` is wanted: whether an id with its key is.
    pub fn holds(&self, id: u128) -> bool {
        self.holds_key(usage_key(id))
    }
}

/// What `SeenIds::decode_kept` kept of one usage id file.
pub struct KeptIds {
    day: Day,
    ids: Vec<RememberedId>,
}

/// Check the `len` bytes of `day`'s usage id file read from `input` (its size,
/// order and days), a block at a time, and hand each entry whose id `keep` keeps
/// to `add`.
fn decode_usage_entries(
    day: Day,
    expected: u64,
    mut input: impl std::io::Read,
    len: u64,
    keep: impl Fn(u128) -> bool,
    mut add: impl FnMut(RememberedId),
) -> Result<(), String> {
    if !len.is_multiple_of(USAGE_ENTRY as u64) || len / USAGE_ENTRY as u64 != expected {
        return Err(format!("usage id file holds {len} bytes, expected {expected} entries"));
    }
    let day_number = day.0.num_days_from_ce();
    const BLOCK: usize = 4096;
    let mut block = vec![0u8; USAGE_ENTRY * BLOCK];
    let (mut left, mut previous) = (expected, None::<u128>);
    while left > 0 {
        let n = left.min(BLOCK as u64) as usize;
        let bytes = &mut block[..n * USAGE_ENTRY];
        input.read_exact(bytes).map_err(|e| format!("cannot read the usage id file: {e}"))?;
        for c in bytes.chunks_exact(USAGE_ENTRY) {
            let id = u128::from_le_bytes(c[0..16].try_into().expect("16 bytes"));
            let entry = checked_entry(day, day_number, id, &c[16..], &mut previous)?;
            if keep(id) {
                add(entry);
            }
        }
        left -= n as u64;
    }
    Ok(())
}

/// The entry of `id` in `day`'s usage id file (whose day number is `day_number`),
/// its content digest and day the 12 bytes of `tail`, checked: its id is above
/// `previous` (then it becomes `previous`), and its day is `day`.
fn checked_entry(day: Day, day_number: i32, id: u128, tail: &[u8], previous: &mut Option<u128>) -> Result<RememberedId, String> {
    if previous.is_some_and(|p| p >= id) {
        return Err("usage id file is not sorted by id".into());
    }
    *previous = Some(id);
    let content = u64::from_le_bytes(tail[0..8].try_into().expect("8 bytes"));
    let stored = i32::from_le_bytes(tail[8..12].try_into().expect("4 bytes"));
    if stored != day_number {
        return Err(format!("usage id file of {day} holds an id of another day ({stored})"));
    }
    Ok(RememberedId { id, content, day })
}

/// Check `day`'s usage id file of `expected` entries (its `len` bytes, read from
/// `input`) and hand each entry whose id `wanted` holds (`WantedIds::holds`;
/// every entry, without it) to `add`, in id order. The file is in either form `SeenIds::write_usage_with`
/// has written, told apart by its length: the entries alone (28 bytes each, every
/// one read and checked), or per id shard a key column and then the rest of each
/// entry, with the shards' counts at the end (28 bytes an id and 512: only the
/// keys are read in full, and of the rests those whose key a wanted id has).
fn decode_usage_file(
    day: Day,
    expected: u64,
    input: impl std::io::Read + std::io::Seek,
    len: u64,
    wanted: Option<&WantedIds>,
    add: impl FnMut(RememberedId),
) -> Result<(), String> {
    let keyed = expected.checked_mul((USAGE_KEY + USAGE_REST) as u64).and_then(|n| n.checked_add(USAGE_TRAILER as u64));
    if expected > 0 && keyed == Some(len) {
        decode_keyed_usage_entries(day, expected, input, len, wanted, add)
    } else {
        decode_usage_entries(day, expected, input, len, |id| wanted.is_none_or(|w| w.holds(id)), add)
    }
}

/// `decode_usage_file` for a file with key columns: per shard, its keys are read
/// and checked (each shard's own, ascending) and looked up among the wanted ones
/// (`WantedIds::holds_key`); the rests of the entries whose key is wanted (every
/// entry's, without `wanted`) are read, a few pages at a time, checked (ids
/// ascending, of `day`) and handed to `add`.
/// An entry not read is checked only as far as its key is.
fn decode_keyed_usage_entries(
    day: Day,
    expected: u64,
    mut input: impl std::io::Read + std::io::Seek,
    len: u64,
    wanted: Option<&WantedIds>,
    mut add: impl FnMut(RememberedId),
) -> Result<(), String> {
    use std::io::SeekFrom;
    let failed = |e: std::io::Error| format!("cannot read the usage id file: {e}");
    input.seek(SeekFrom::Start(len - USAGE_TRAILER as u64)).map_err(failed)?;
    let mut trailer = [0u8; USAGE_TRAILER];
    input.read_exact(&mut trailer).map_err(failed)?;
    let counts: Vec<u64> = trailer.chunks_exact(8).map(|c| u64::from_le_bytes(c.try_into().expect("8 bytes"))).collect();
    if counts.iter().try_fold(0u64, |sum, &c| sum.checked_add(c)) != Some(expected) {
        return Err(format!("usage id file's shards do not hold the {expected} entries expected"));
    }
    let day_number = day.0.num_days_from_ce();
    const BLOCK: u64 = 4096;
    let mut block = vec![0u8; USAGE_REST * BLOCK as usize];
    // The entries to read of a shard: index and key.
    let mut needed: Vec<(u64, u64)> = Vec::new();
    let mut previous = None::<u128>;
    let mut shard_start = 0u64;
    for (s, &count) in counts.iter().enumerate() {
        input.seek(SeekFrom::Start(shard_start)).map_err(failed)?;
        let mut last_key = None::<u64>;
        needed.clear();
        let mut index = 0u64;
        while index < count {
            let n = (count - index).min(BLOCK) as usize;
            let keys = &mut block[..n * USAGE_KEY];
            input.read_exact(keys).map_err(failed)?;
            for c in keys.chunks_exact(USAGE_KEY) {
                let key = u64::from_le_bytes(c.try_into().expect("8 bytes"));
                if (key >> (64 - ID_SHARDS.trailing_zeros())) as usize != s || last_key.is_some_and(|k| k > key) {
                    return Err("usage id file is not sorted by id".into());
                }
                last_key = Some(key);
                if wanted.is_none_or(|w| w.holds_key(key)) {
                    needed.push((index, key));
                }
                index += 1;
            }
        }
        let rests_start = shard_start + count * USAGE_KEY as u64;
        let mut from = 0;
        while from < needed.len() {
            // Entries close together are read in one piece, at most a block.
            let first = needed[from].0;
            let mut to = from + 1;
            while to < needed.len() && needed[to].0 - needed[to - 1].0 <= USAGE_GAP && needed[to].0 - first < BLOCK {
                to += 1;
            }
            let span = (needed[to - 1].0 - first + 1) as usize;
            input.seek(SeekFrom::Start(rests_start + first * USAGE_REST as u64)).map_err(failed)?;
            let bytes = &mut block[..span * USAGE_REST];
            input.read_exact(bytes).map_err(failed)?;
            for &(index, key) in &needed[from..to] {
                let c = &bytes[(index - first) as usize * USAGE_REST..][..USAGE_REST];
                let id = u128::from(key) << 64 | u128::from(u64::from_le_bytes(c[0..8].try_into().expect("8 bytes")));
                add(checked_entry(day, day_number, id, &c[8..], &mut previous)?);
            }
            from = to;
        }
        shard_start = rests_start + count * USAGE_REST as u64;
    }
    Ok(())
}

/// Room for one shard's part of `total` ids: its share and four standard
/// deviations more (ids are digests, spread evenly by their top bits), so that no
/// shard outgrows it.
fn shard_room(total: usize) -> usize {
    let share = total / ID_SHARDS;
    share + 4 * share.isqrt() + 16
}

impl Default for UsageIds {
    fn default() -> UsageIds {
        UsageIds {
            remembered: (0..ID_SHARDS).map(|_| Default::default()).collect(),
            remembered_days: Default::default(),
        }
    }
}

/// Equal when they hold the same ids with the same records.
impl PartialEq for UsageIds {
    fn eq(&self, other: &UsageIds) -> bool {
        self.len() == other.len() && self.entries().all(|(id, seen)| other.get(id) == Some(seen))
    }
}

impl Eq for UsageIds {}

impl UsageIds {
    pub fn shard_of(id: u128) -> usize {
        (id >> (128 - ID_SHARDS.trailing_zeros())) as usize
    }
    pub fn len(&self) -> usize {
        self.remembered.iter().map(|s| s.ids.len()).sum::<usize>()
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// The record of `id`, if remembered (after `SeenIds::finish_decoding`).
    pub fn get(&self, id: u128) -> Option<SeenUsage> {
        self.remembered[Self::shard_of(id)].get(id)
    }
    /// Every id with its record.
    fn entries(&self) -> impl Iterator<Item = (u128, SeenUsage)> + '_ {
        self.remembered.iter().flat_map(|s| s.ids.iter().map(|e| (e.id, SeenUsage { day: e.day, content: e.content })))
    }
    /// Remember an id that is not held yet (as read from `seen.day`'s file; for
    /// tests, which then call `SeenIds::finish_decoding`).
    pub fn insert(&mut self, id: u128, seen: SeenUsage) {
        self.remembered[Self::shard_of(id)].ids.push(RememberedId { id, content: seen.content, day: seen.day });
        self.remembered_days.insert(seen.day);
    }
    /// Keep the ids first accepted on the days `keep` keeps.
    pub fn retain_days(&mut self, keep: impl Fn(Day) -> bool + Sync) {
        use rayon::prelude::*;
        if self.remembered_days.iter().all(|&d| keep(d)) {
            return;
        }
        self.remembered_days.retain(|&d| keep(d));
        self.remembered.par_iter_mut().for_each(|s| {
            s.ids.retain(|e| keep(e.day));
            s.finish().expect("a subset of distinct ids is distinct");
        });
    }
    /// Each shard's remembered ids.
    pub fn remembered_shards(&self) -> &[RememberedShard] {
        &self.remembered
    }
}

/// The FOCUS rows of one bill month so far: they are appended day by day to
/// `state/focus-M.csv` (header first), and `len` is the committed length of that
/// file: bytes past it come from a run that did not commit and are cut off.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FocusMonth {
    pub len: u64,
    pub rows: u64,
    /// Σ BilledCost of the rows.
    pub billed: Money,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransferSource {
    /// Inline text, as the ids they are kept under (~75k by the end of a month
    /// of 1M-row days, each copied out to its organization and back every day).
    pub org_id: Text,
    pub member_uin: Uin,
    pub amount: Money,
    /// What accepted `out` transfers have already returned from it.
    pub drawn: Money,
}

/// Refund bases of one organization: resource → payer → basis (§8), each map a
/// sorted vector. Nearly every resource has one payer: as `BTreeMap`s each
/// resource took ~300 bytes (a 192-byte tree node for its one payer, its key on
/// the heap, its share of the organization's nodes), ~64 bytes now; the bases
/// grow by ~6k resources a day at 10M usage rows, the state's largest growth
/// (BENCHMARKS.md, eighteenth session). Written as the same JSON maps.
pub type Bases = VecMap<Text, PayerBases>;
/// The bases of one resource's payers, by payer UIN.
pub type PayerBases = VecMap<Uin, Money>;

/// A map held as a vector sorted by key (`litemap::LiteMap`), for many small
/// maps: written as a JSON map even when empty (`LiteMap` writes an empty map as
/// a list), read from a map in any order (sorted as read; a key given twice
/// keeps its last value, as a `BTreeMap` does).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(transparent, bound(deserialize = "K: Deserialize<'de> + Ord, V: Deserialize<'de>"))]
pub struct VecMap<K, V>(litemap::LiteMap<K, V>);

impl<K, V> Default for VecMap<K, V> {
    fn default() -> Self {
        VecMap(litemap::LiteMap::new())
    }
}

impl<K, V> std::ops::Deref for VecMap<K, V> {
    type Target = litemap::LiteMap<K, V>;
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl<K, V> std::ops::DerefMut for VecMap<K, V> {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.0
    }
}

impl<K: Serialize, V: Serialize> Serialize for VecMap<K, V> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_map(self.0.iter())
    }
}

/// A state as written after a day. `S` is what it holds of the ids it remembers:
/// `SeenIds` (all of them) but as a day first reads the state it starts from
/// (`SeenWithoutRecords`, `State::with_records_from`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct State<S = SeenIds> {
    pub format: u32,
    /// The last settled day.
    pub day: Day,
    /// The first day ever processed: months before its month count as closed.
    pub first_day: Day,
    /// Closed months, read from the output directory for each run (not stored: a
    /// close happens after the day it follows was committed).
    #[serde(skip)]
    pub closed_months: BTreeSet<Month>,
    #[serde(deserialize_with = "sorted_map")]
    pub accounts: BTreeMap<Uin, AccountState>,
    #[serde(deserialize_with = "sorted_map")]
    pub vouchers_used: BTreeMap<String, Money>,
    pub seen: S,
    #[serde(deserialize_with = "sorted_map")]
    pub refund_bases: BTreeMap<String, Bases>,
    pub transfer_sources: TransferSources,
    /// Per bill month: merged-bill sums and self-paid totals (SPEC §11.3), so a
    /// close reads aggregates, never raw days. Kept in binary files beside the
    /// state (`state/D.month-M.bin`, listed in `month_files`), not in the JSON.
    #[serde(skip)]
    pub months: BTreeMap<Month, MonthAggregates>,
    /// For each month in `months`, the day whose `state/D.month-M.bin` holds its
    /// aggregates: a day writes only the months its lines changed.
    pub month_files: BTreeMap<Month, Day>,
    /// The FOCUS rows of each month kept (see `FocusMonth`), so the close neither
    /// reads nor copies rows.
    pub focus: BTreeMap<Month, FocusMonth>,
}

impl State<SeenWithoutRecords> {
    /// The state with its record ids set aside, to be read from `state/D.json`
    /// for `from` = D when they are needed (`SeenIds::records_from`).
    pub fn with_records_from(self, from: Day) -> State {
        let set_aside = || RecordIds { remembered: None, added: BTreeMap::new() };
        State {
            format: self.format,
            day: self.day,
            first_day: self.first_day,
            closed_months: self.closed_months,
            accounts: self.accounts,
            vouchers_used: self.vouchers_used,
            seen: SeenIds {
                usage: UsageIds::default(),
                usage_files: self.seen.usage_files,
                orders: set_aside(),
                recharges: set_aside(),
                transfers: set_aside(),
                records_from: Some(from),
            },
            refund_bases: self.refund_bases,
            transfer_sources: self.transfer_sources,
            months: self.months,
            month_files: self.month_files,
            focus: self.focus,
        }
    }
}

/// One merged-bill row's sums (SPEC §11.3).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(into = "BillSumsRow", from = "BillSumsRow")]
pub struct BillSums {
    pub lines: u64,
    pub list: Money,
    pub discount: Money,
    pub payable: Money,
    pub voucher: Money,
    pub cash: Money,
    pub gift: Money,
    pub credit: Money,
}

/// How the state stores `BillSums`: a row [lines, list, discount, payable, voucher,
/// cash, gift, credit] without field names (a state holds hundreds of thousands).
type BillSumsRow = (u64, Money, Money, Money, Money, Money, Money, Money);

impl From<BillSums> for BillSumsRow {
    fn from(s: BillSums) -> BillSumsRow {
        (s.lines, s.list, s.discount, s.payable, s.voucher, s.cash, s.gift, s.credit)
    }
}

impl From<BillSumsRow> for BillSums {
    fn from((lines, list, discount, payable, voucher, cash, gift, credit): BillSumsRow) -> BillSums {
        BillSums { lines, list, discount, payable, voucher, cash, gift, credit }
    }
}

/// Short key text (ids, codes): kept inline, without a heap allocation, up to 24
/// bytes; ordered as `str`.
pub type Text = compact_str::CompactString;
/// (org_id, bill_owner_uin, member_uin, pay_mode, product, kind): the merged-bill
/// key. The pay mode and the kind are a byte each, ordered and stored as their
/// texts (as inline text they were 24 bytes each: a month's list of 627k entries
/// after a month of 1M-row days, and the day's new list beside it, were the
/// peak of a later day's fold at 10M rows).
pub type BillKey = (Text, Uin, Uin, PayMode, ProductName, LineKind);

/// A merged-bill row's pay mode (§11.3): `payer` (its bill owner pays as the
/// member's payer) or `self` (the managing account's bill, for a member that pays
/// for itself). Ordered as its text. (The default is a placeholder, for lists
/// merged in place: `monthly::merge_lacking`.)
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PayMode {
    #[default]
    Payer,
    SelfPaid,
}

impl PayMode {
    pub fn as_str(self) -> &'static str {
        match self {
            PayMode::Payer => "payer",
            PayMode::SelfPaid => "self",
        }
    }
    pub fn parse(text: &str) -> Option<PayMode> {
        [PayMode::Payer, PayMode::SelfPaid].into_iter().find(|m| m.as_str() == text)
    }
}
/// (org_id, member_uin, product): the self-paid key.
pub type SelfPaidKey = (Text, Uin, ProductName);

/// A product code in the month aggregates' keys: the interned code
/// (`ids::intern_product`, 8 bytes, not inline text of 24), compared, ordered and
/// stored as its text, interned again as it is read.
#[derive(Clone, Copy)]
pub struct ProductName(pub crate::ids::Product);

impl ProductName {
    pub fn as_str(&self) -> &'static str {
        self.0.as_str()
    }
    /// Any text is a product code here (the input's rules checked it).
    pub fn parse(text: &str) -> Option<ProductName> {
        Some(ProductName::from(text))
    }
}

impl From<&str> for ProductName {
    fn from(code: &str) -> ProductName {
        ProductName(crate::ids::intern_product(code))
    }
}

/// An empty code: a placeholder, for lists merged in place (`monthly::merge_lacking`).
impl Default for ProductName {
    fn default() -> ProductName {
        static EMPTY: String = String::new();
        ProductName(&EMPTY)
    }
}

impl PartialEq for ProductName {
    fn eq(&self, other: &ProductName) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Eq for ProductName {}

impl PartialOrd for ProductName {
    fn partial_cmp(&self, other: &ProductName) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for ProductName {
    fn cmp(&self, other: &ProductName) -> std::cmp::Ordering {
        self.as_str().cmp(other.as_str())
    }
}

impl std::hash::Hash for ProductName {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.as_str().hash(state)
    }
}

impl std::fmt::Debug for ProductName {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        self.as_str().fmt(f)
    }
}



/// A month's aggregates as sorted lists (keys ascending and distinct): a day
/// merges its sorted sums into them in one pass, and a close reads them in order.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MonthAggregates {
    #[serde(deserialize_with = "exact_vec")]
    pub merged: Vec<(BillKey, BillSums)>,
    /// Self-paid totals that pass the line rules of §11.3 (the joined-in-month rule
    /// is applied when the overview is drawn).
    #[serde(deserialize_with = "exact_vec")]
    pub self_paid: Vec<(SelfPaidKey, Money)>,
}

/// A map read from the state's JSON, whose objects a `BTreeMap` wrote in key
/// order: its entries gathered, then built at once (`BTreeMap::from_iter` sorts
/// them, one pass when they are in order, and builds the tree bottom up).
/// Inserted one at a time, each key was compared down the tree (about a fifth of
/// the samples while the 31st of a month of 1M-row days loaded its state) and
/// the nodes were left part full. A key given twice keeps its last value, as
/// inserting did.
fn sorted_map<'de, K, V, D>(d: D) -> Result<BTreeMap<K, V>, D::Error>
where
    K: Deserialize<'de> + Ord,
    V: Deserialize<'de>,
    D: serde::Deserializer<'de>,
{
    struct Entries<K, V>(std::marker::PhantomData<(K, V)>);
    impl<'de, K: Deserialize<'de>, V: Deserialize<'de>> serde::de::Visitor<'de> for Entries<K, V> {
        type Value = Vec<(K, V)>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a map")
        }
        fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Vec<(K, V)>, A::Error> {
            let mut entries = Vec::with_capacity(map.size_hint().unwrap_or(0).min(1 << 16));
            while let Some(entry) = map.next_entry()? {
                entries.push(entry);
            }
            Ok(entries)
        }
    }
    Ok(d.deserialize_map(Entries(std::marker::PhantomData))?.into_iter().collect())
}

/// A list whose length the file states, allocated once (serde's own Vec grows
/// by doubling past 1 MiB: a quarter of a close's memory). A corrupt length cannot
/// reserve more than 2^22 entries up front.
fn exact_vec<'de, T: Deserialize<'de>, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<T>, D::Error> {
    struct Exact<T>(std::marker::PhantomData<T>);
    impl<'de, T: Deserialize<'de>> serde::de::Visitor<'de> for Exact<T> {
        type Value = Vec<T>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a list")
        }
        fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<T>, A::Error> {
            let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(1 << 22));
            while let Some(item) = seq.next_element()? {
                out.push(item);
            }
            Ok(out)
        }
    }
    d.deserialize_seq(Exact(std::marker::PhantomData))
}

/// What a close needs of a state's JSON: the rest (balances, remembered ids,
/// transfer sources, tens of MB late in a month) is skipped, not built.
#[derive(Clone, Debug, Deserialize)]
pub struct StateHead {
    pub format: u32,
    pub day: Day,
    pub first_day: Day,
    pub month_files: BTreeMap<Month, Day>,
    pub focus: BTreeMap<Month, FocusMonth>,
}

/// The oldest month whose aggregates the state after `day` keeps: a close of M
/// needs M−5…M, and the oldest close still to come is that of the month before.
pub fn months_kept_from(day: Day) -> Month {
    (0..6).fold(day.month().prev(), |m, _| m.prev())
}

/// A month's aggregates as stored in `state/D.month-M.bin` (postcard: varints,
/// amounts in fen).
pub fn encode_month(aggregates: &MonthAggregates) -> Vec<u8> {
    postcard::to_allocvec(aggregates).expect("month aggregates encode")
}

/// `encode_month` streamed to `w` (the bytes are the same; none is held: a 10M-row
/// day's month is 31 MB).
pub fn write_month(aggregates: &MonthAggregates, w: impl std::io::Write) -> std::io::Result<()> {
    write_value(w, aggregates)
}

pub fn decode_month(bytes: &[u8]) -> Result<MonthAggregates, String> {
    read_month(bytes)
}

/// A month file read from `source` a window of `MonthReader::WINDOW` bytes at a
/// time: the file is never held whole (read whole, its bytes sat beside the
/// lists decoded from them, 42 MB on the 30th of a month of 1M-row days, at the
/// peak of a later day's fold).
pub fn read_month(source: impl std::io::Read) -> Result<MonthAggregates, String> {
    // A month file is the two lists one after the other (a struct's fields, in
    // order, as `write_month` writes them), each its length then its entries.
    read_month_in_windows(source, MonthReader::<()>::WINDOW)
}

fn read_month_in_windows(source: impl std::io::Read, window: usize) -> Result<MonthAggregates, String> {
    let mut r = MonthReader::with_window(source, window);
    let merged = r.sorted_list(0)?;
    let self_paid = r.sorted_list(0)?;
    r.at_end()?;
    Ok(MonthAggregates { merged, self_paid })
}

/// One value of a month file (a list's length, an entry, or a whole list)
/// written to `w` as `write_month` writes it within a month.
pub fn write_value<T: Serialize + ?Sized>(w: impl std::io::Write, value: &T) -> std::io::Result<()> {
    postcard::to_io(value, w).map(|_| ()).map_err(|e| match e {
        postcard::Error::SerializeBufferFull => std::io::Error::other("month aggregates: write failed"),
        e => std::io::Error::other(format!("month aggregates: {e}")),
    })
}

/// A month file's values decoded one at a time from a window of its bytes,
/// refilled from the source as the values use it up. A value is decoded from
/// the window's unread bytes; one the window cuts off is decoded again once the
/// window is refilled (postcard reports it as an unexpected end).
pub struct MonthReader<R> {
    source: R,
    window: Vec<u8>,
    /// The unread bytes are `window[at..end]`; the last value decoded was
    /// `window[last..at]`.
    at: usize,
    end: usize,
    last: usize,
    /// The source has no more bytes.
    drained: bool,
}

impl<R> MonthReader<R> {
    /// Far longer than any entry (a few dozen bytes): an entry that does not fit
    /// is refused as unreadable.
    const WINDOW: usize = 1 << 20;
}

impl<R: std::io::Read> MonthReader<R> {
    /// A reader of the month file `source`, from its start.
    pub fn new(source: R) -> MonthReader<R> {
        MonthReader::with_window(source, Self::WINDOW)
    }

    fn with_window(source: R, window: usize) -> MonthReader<R> {
        MonthReader { source, window: vec![0; window], at: 0, end: 0, last: 0, drained: false }
    }

    fn next<T: serde::de::DeserializeOwned>(&mut self) -> Result<T, String> {
        loop {
            match postcard::take_from_bytes::<T>(&self.window[self.at..self.end]) {
                Ok((value, rest)) => {
                    (self.last, self.at) = (self.at, self.end - rest.len());
                    return Ok(value);
                }
                Err(postcard::Error::DeserializeUnexpectedEnd) if !self.drained && (self.at > 0 || self.end < self.window.len()) => self.refill()?,
                Err(e) => return Err(format!("unreadable month aggregates: {e}")),
            }
        }
    }

    /// The unread bytes moved to the window's front, the rest of it read.
    fn refill(&mut self) -> Result<(), String> {
        self.window.copy_within(self.at..self.end, 0);
        (self.end, self.at, self.last) = (self.end - self.at, 0, 0);
        while self.end < self.window.len() {
            match self.source.read(&mut self.window[self.end..]) {
                Ok(0) => {
                    self.drained = true;
                    break;
                }
                Ok(n) => self.end += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(format!("cannot read month aggregates: {e}")),
            }
        }
        Ok(())
    }

    /// The length of the list that begins here (its entries follow).
    pub fn list_len(&mut self) -> Result<u64, String> {
        self.next()
    }

    /// The list entry that begins here.
    pub fn entry<T: serde::de::DeserializeOwned>(&mut self) -> Result<T, String> {
        self.next()
    }

    /// The bytes of the value last decoded, as the file holds them.
    pub fn last_bytes(&self) -> &[u8] {
        &self.window[self.last..self.at]
    }

    /// The list that begins here (its length, then its entries), checked to
    /// ascend strictly by key, allocated with room for `room` more entries.
    pub fn sorted_list<K: serde::de::DeserializeOwned + Ord, V: serde::de::DeserializeOwned>(&mut self, room: usize) -> Result<Vec<(K, V)>, String> {
        let len = self.list_len()?;
        // A length is not trusted for more than the room it asks up front.
        let mut out = Vec::with_capacity((len as usize).min(1 << 22) + room);
        for _ in 0..len {
            let entry: (K, V) = self.entry()?;
            if out.last().is_some_and(|(last, _): &(K, V)| *last >= entry.0) {
                return Err("month aggregates out of key order".into());
            }
            out.push(entry);
        }
        Ok(out)
    }

    /// Refused unless the file ends here (the source read to its end).
    pub fn at_end(&mut self) -> Result<(), String> {
        let mut left = (self.end - self.at) as u64;
        while !self.drained {
            (self.at, self.end, self.last) = (0, 0, 0);
            self.refill()?;
            left += self.end as u64;
        }
        match left {
            0 => Ok(()),
            n => Err(format!("unreadable month aggregates: {n} bytes after the end")),
        }
    }
}

impl State {
    pub fn is_month_closed(&self, month: Month) -> bool {
        month < self.first_day.month() || self.closed_months.contains(&month)
    }
}

impl Default for Month {
    fn default() -> Month {
        Month { year: 1970, month: 1 }
    }
}

macro_rules! serde_as_string {
    ($t:ty, $parse:expr, $what:literal) => {
        impl Serialize for $t {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.to_string())
            }
        }
        impl<'de> Deserialize<'de> for $t {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<$t, D::Error> {
                let text = String::deserialize(d)?;
                $parse(&text).ok_or_else(|| serde::de::Error::custom(format!("bad {} {text:?}", $what)))
            }
        }
    };
}

serde_as_string!(Day, Day::parse, "day");
serde_as_string!(Month, Month::parse, "month");

/// Serialize and deserialize a type of a few values as its text (`as_str`,
/// `parse`), read without an allocation where the format lends the text.
macro_rules! serde_as_name {
    ($t:ty, $parse:expr, $what:literal) => {
        impl Serialize for $t {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }
        impl<'de> Deserialize<'de> for $t {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<$t, D::Error> {
                struct Name;
                impl serde::de::Visitor<'_> for Name {
                    type Value = $t;
                    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                        write!(f, "a {}", $what)
                    }
                    fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<$t, E> {
                        $parse(text).ok_or_else(|| E::custom(format!("bad {} {text:?}", $what)))
                    }
                }
                d.deserialize_str(Name)
            }
        }
    };
}

serde_as_name!(PayMode, PayMode::parse, "pay mode");
serde_as_name!(LineKind, LineKind::parse, "line kind");
serde_as_name!(ProductName, ProductName::parse, "product code");

impl SeenIds {
    /// The binary form of the usage ids first accepted on `day`, sorted by id
    /// digest, little-endian: for each id shard in turn, the key column (the top 64
    /// bits of each id's digest, 8 bytes an id), then the rest of each entry (20
    /// bytes: the digest's low 64 bits, the content digest, the day as days since
    /// 0001-01-01); then how many ids each shard holds (64 × 8 bytes). A later day reads the keys and only the
    /// entries whose key its own ids have (`decode_usage_file`). Files written
    /// before the key columns, the entries alone, are read as well. No ids, no
    /// bytes.
    pub fn encode_usage_of(&self, day: Day) -> Vec<u8> {
        let mut out = Vec::new();
        self.write_usage_of(day, &mut out).expect("writing to memory does not fail");
        out
    }

    /// `encode_usage_of` streamed to `w`, two shards at a time (encoded on both
    /// cores while the two before are written, on a thread of its own): memory
    /// holds a sixteenth of the file, not all of it twice (eight at a time put ~40
    /// MB on the peak of a 10M-row day, which this is written at).
    pub fn write_usage_of(&self, day: Day, w: &mut (dyn std::io::Write + Send)) -> std::io::Result<u64> {
        self.write_usage_with(day, &|_| Ok(Vec::new()), w)
    }

    /// `day`'s usage-id file streamed to `w` as `write_usage_of` writes it, the
    /// day's own ids of shard s given by `own(s)` (in any order) rather than taken
    /// from the tables; returns how many ids it holds.
    pub fn write_usage_with(
        &self,
        day: Day,
        own: &(dyn Fn(usize) -> std::io::Result<Vec<(u128, SeenUsage)>> + Sync),
        w: &mut (dyn std::io::Write + Send),
    ) -> std::io::Result<u64> {
        use rayon::prelude::*;
        // Two shards at a time are encoded on all cores while the two before
        // them are written.
        let in_remembered = self.usage.remembered_days.contains(&day);
        let counts: [std::sync::atomic::AtomicU64; ID_SHARDS] = std::array::from_fn(|_| Default::default());
        let failed: std::sync::Mutex<Option<std::io::Error>> = std::sync::Mutex::new(None);
        let encode = |group: &[usize]| -> Vec<Vec<u8>> {
            group
                .par_iter()
                .map(|&s| {
                    let mut entries = match own(s) {
                        Ok(entries) => entries,
                        Err(e) => {
                            failed.lock().unwrap_or_else(|e| e.into_inner()).get_or_insert(e);
                            return Vec::new();
                        }
                    };
                    if in_remembered {
                        let of_day = self.usage.remembered[s].ids.iter().filter(|e| { e.day } == day);
                        entries.extend(of_day.map(|e| (e.id, SeenUsage { day: e.day, content: e.content })));
                    }
                    let entries = sorted_by_id(entries);
                    counts[s].store(entries.len() as u64, std::sync::atomic::Ordering::Relaxed);
                    let mut out = Vec::with_capacity(entries.len() * (USAGE_KEY + USAGE_REST));
                    for &(id, _) in &entries {
                        out.extend_from_slice(&usage_key(id).to_le_bytes());
                    }
                    for (id, seen) in entries {
                        out.extend_from_slice(&(id as u64).to_le_bytes());
                        out.extend_from_slice(&seen.content.to_le_bytes());
                        out.extend_from_slice(&seen.day.0.num_days_from_ce().to_le_bytes());
                    }
                    out
                })
                .collect()
        };
        let shards: Vec<usize> = (0..ID_SHARDS).collect();
        crate::parallel::write_behind(w, shards.chunks(2).map(encode))?;
        if let Some(e) = failed.into_inner().unwrap_or_else(|e| e.into_inner()) {
            return Err(e);
        }
        let counts = counts.map(|c| c.into_inner());
        let count = counts.iter().sum();
        if count > 0 {
            let trailer: Vec<u8> = counts.iter().flat_map(|c| c.to_le_bytes()).collect();
            w.write_all(&trailer)?;
        }
        Ok(count)
    }

    /// Remember the ids first accepted on `day` (by shard) as if read from its file
    /// (`validate`, which keeps what it reads in memory from day to day).
    pub fn remember_day(&mut self, day: Day, ids: Vec<Vec<(u128, SeenUsage)>>) -> Result<(), String> {
        let mut count = 0u64;
        for (s, shard) in ids.into_iter().enumerate() {
            count += shard.len() as u64;
            self.usage.remembered[s].ids.extend(shard.into_iter().map(|(id, v)| RememberedId { id, content: v.content, day: v.day }));
        }
        if count > 0 {
            self.usage_files.insert(day, count);
            self.usage.remembered_days.insert(day);
        }
        self.finish_decoding()
    }

    /// How many remembered ids were first accepted on `day`.
    pub fn usage_count_of(&self, day: Day) -> u64 {
        use rayon::prelude::*;
        if !self.usage.remembered_days.contains(&day) {
            return 0;
        }
        self.usage.remembered.par_iter().map(|s| s.ids.iter().filter(|e| { e.day } == day).count() as u64).sum()
    }

    /// Add the ids of `day`'s file (as `encode_usage_of` wrote it) to the
    /// remembered ones; `finish_decoding` follows the last file.
    pub fn decode_usage_of(&mut self, day: Day, bytes: &[u8]) -> Result<(), String> {
        self.decode_usage_from(day, std::io::Cursor::new(bytes), bytes.len() as u64, None)
    }

    /// `decode_usage_of`, reading the file's `len` bytes from `input` a block at a
    /// time: neither the file nor a list of its entries is held (at 10M ids a
    /// day, 280 and 160 MB whose pages the process kept). With `wanted`, only the
    /// ids it holds are kept (`decode_usage_file`: of a file with key columns,
    /// only the entries they may be are read).
    pub fn decode_usage_from(
        &mut self,
        day: Day,
        input: impl std::io::Read + std::io::Seek,
        len: u64,
        wanted: Option<&WantedIds>,
    ) -> Result<(), String> {
        let expected = self.usage_files.get(&day).copied().unwrap_or(0);
        let remembered = &mut self.usage.remembered;
        decode_usage_file(day, expected, input, len, wanted, |e| remembered[UsageIds::shard_of(e.id)].ids.push(e))?;
        self.usage.remembered_days.insert(day);
        Ok(())
    }

    /// The ids of `day`'s file that `wanted` holds, checked as `decode_usage_from`
    /// checks them, for `add_kept`: files are decoded this way on all cores (one
    /// core took ~4 s for the 300M ids of a month of 10M-row days), since what
    /// each keeps is small.
    pub fn decode_kept(&self, day: Day, input: impl std::io::Read + std::io::Seek, len: u64, wanted: &WantedIds) -> Result<KeptIds, String> {
        let expected = self.usage_files.get(&day).copied().unwrap_or(0);
        let mut ids = Vec::new();
        decode_usage_file(day, expected, input, len, Some(wanted), |e| ids.push(e))?;
        Ok(KeptIds { day, ids })
    }

    /// Add what `decode_kept` kept of a file, files in the order `decode_usage_from`
    /// would have read them.
    pub fn add_kept(&mut self, kept: KeptIds) {
        for e in kept.ids {
            self.usage.remembered[UsageIds::shard_of(e.id)].ids.push(e);
        }
        self.usage.remembered_days.insert(kept.day);
    }

    /// Make room for `total` remembered ids before their files are decoded (see
    /// `shard_room`).
    pub fn reserve_remembered(&mut self, total: usize) {
        let room = shard_room(total);
        for s in &mut self.usage.remembered {
            s.ids.reserve(room.saturating_sub(s.ids.len()));
        }
    }

    /// After the last `decode_usage_of`: sort and index the remembered ids, and
    /// refuse an id that two files hold (of those kept: with `WantedIds`, an id
    /// that two files hold and the day does not look up goes unnoticed, and harms
    /// nothing).
    pub fn finish_decoding(&mut self) -> Result<(), String> {
        use rayon::prelude::*;
        self.usage.remembered.par_iter_mut().try_for_each(|s| s.finish())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_built_at_once_equal_maps_inserted_one_by_one_whatever_the_key_order() {
        #[derive(Debug, Deserialize)]
        struct Both {
            #[serde(deserialize_with = "sorted_map")]
            built: BTreeMap<Uin, Money>,
            inserted: BTreeMap<Uin, Money>,
        }
        // In order, out of order (numbers written as text sort otherwise), a key
        // given twice (the last value kept), and empty.
        for map in [r#"{"9":"1.00","10":"2.00","100":"3.00"}"#, r#"{"100":"3.00","9":"1.00","10":"2.00","9":"4.50"}"#, "{}"] {
            let both: Both = serde_json::from_str(&format!(r#"{{"built":{map},"inserted":{map}}}"#)).unwrap();
            assert_eq!(both.built, both.inserted, "{map}");
        }
        let twice: Both = serde_json::from_str(r#"{"built":{"9":"1.00","9":"4.50"},"inserted":{}}"#).unwrap();
        assert_eq!(twice.built, BTreeMap::from([(9, Money::from_fen(450))]));
        assert!(serde_json::from_str::<Both>(r#"{"built":[1],"inserted":{}}"#).unwrap_err().to_string().contains("expected a map"));
    }

    #[test]
    fn refund_bases_are_read_and_written_as_the_nested_maps_they_replaced() {
        type AsMaps = BTreeMap<String, BTreeMap<String, BTreeMap<Uin, Money>>>;
        #[derive(Debug, Deserialize)]
        struct Bases2 {
            #[serde(deserialize_with = "sorted_map")]
            refund_bases: BTreeMap<String, Bases>,
        }
        // Resources and payers in order and out of it (UINs written as text sort
        // otherwise), a payer given twice (the last basis kept, as a map kept it),
        // a resource id too long to be held inline, an organization without bases.
        let long = "r-".repeat(20);
        let json = format!(
            r#"{{"refund_bases":{{"org-2":{{"res-b":{{"100":"3.00","9":"1.00"}},"res-a":{{"7":"0.01"}},"{long}":{{"5":"2.50","5":"4.00"}}}},"org-1":{{}}}}}}"#
        );
        let compact: Bases2 = serde_json::from_str(&json).unwrap();
        let maps: AsMaps = serde_json::from_str::<BTreeMap<String, AsMaps>>(&json).unwrap().remove("refund_bases").unwrap();
        let written = serde_json::to_string(&compact.refund_bases).unwrap();
        assert_eq!(written, serde_json::to_string(&maps).unwrap());
        assert_eq!(
            written,
            format!(r#"{{"org-1":{{}},"org-2":{{"{long}":{{"5":"4.00"}},"res-a":{{"7":"0.01"}},"res-b":{{"9":"1.00","100":"3.00"}}}}}}"#)
        );
        let org = &compact.refund_bases["org-2"];
        assert_eq!(org.get("res-b").unwrap().iter().map(|(&p, &b)| (p, b)).collect::<Vec<_>>(), [
            (9, Money::from_fen(100)),
            (100, Money::from_fen(300))
        ]);
        assert_eq!(org.get(long.as_str()).unwrap().get(&5), Some(&Money::from_fen(400)));
        assert!(serde_json::from_str::<Bases2>(r#"{"refund_bases":{"org-1":{"res":{"x":"1.00"}}}}"#).is_err());
    }

    #[test]
    fn transfer_sources_set_aside_cannot_be_written_and_come_back_under_the_held_ones() {
        let source = |amount: i64, drawn: i64| TransferSource {
            org_id: Text::from("o1"),
            member_uin: 3,
            amount: Money::from_fen(amount),
            drawn: Money::from_fen(drawn),
        };
        let file: BTreeMap<Text, TransferSource> = [("t1", source(100, 0)), ("t2", source(200, 50)), ("t3", source(300, 0))]
            .into_iter()
            .map(|(id, s)| (Text::from(id), s))
            .collect();
        let mut sources: TransferSources = serde_json::from_str(&serde_json::to_string(&file).unwrap()).unwrap();
        assert_eq!((sources.len(), sources.rest_from()), (3, None));
        let from = Day::parse("2026-10-01").unwrap();
        sources.set_aside(from, |id| id == "t2");
        assert_eq!((sources.keys().map(Text::as_str).collect::<Vec<_>>(), sources.rest_from()), (vec!["t2"], Some(from)));
        // Drawn from and added to while the rest is aside, moved out and back.
        let mut held = sources.take_held();
        held.get_mut("t2").unwrap().drawn = Money::from_fen(150);
        held.insert(Text::from("t4"), source(400, 0));
        sources.extend(held);
        assert!(serde_json::to_string(&sources).unwrap_err().to_string().contains("Store::hold_set_aside"));
        sources.hold_rest(file.clone());
        assert_eq!(sources.rest_from(), None);
        let mut expected = file;
        expected.get_mut("t2").unwrap().drawn = Money::from_fen(150);
        expected.insert(Text::from("t4"), source(400, 0));
        assert_eq!(serde_json::to_string(&sources).unwrap(), serde_json::to_string(&expected).unwrap());
    }

    #[test]
    fn record_ids_set_aside_and_held_again_are_written_as_one_map_in_id_order() {
        let digest = |n: u128| ContentDigest(n);
        let mut seen: SeenIds = serde_json::from_str(r#"{"usage_files":{},"orders":{"o2":"00000000000000000000000000000002","o4":"00000000000000000000000000000004"},"recharges":{},"transfers":{}}"#).unwrap();
        seen.records_from = Some(Day::parse("2026-10-01").unwrap());
        let remembered = || RememberedRecords { orders: seen_orders(&[("o2", 2), ("o4", 4)]), ..Default::default() };
        // Ids before, between and after the remembered ones, accepted.
        for (id, n) in [("o5", 5), ("o1", 1), ("o3", 3)] {
            assert_eq!(seen.orders.get(id), None);
            seen.orders.insert(Text::from(id), digest(n));
        }
        seen.recharges.insert(Text::from("r1"), digest(7));
        assert_eq!((seen.orders.len(), seen.orders.get("o4"), seen.orders.get("o3")), (5, Some(&digest(4)), Some(&digest(3))));
        seen.set_aside_records();
        assert!(!seen.holds_records());
        assert_eq!(seen.orders.len(), 3);
        assert!(serde_json::to_string(&seen).unwrap_err().to_string().contains("SeenIds::hold_records"));
        seen.hold_records(remembered()).unwrap();
        assert!(seen.holds_records());
        assert_eq!((seen.orders.len(), seen.orders.get("o4"), seen.orders.get("o6")), (5, Some(&digest(4)), None));
        // Written as the map of every id would be.
        let every: BTreeMap<&str, ContentDigest> = (1..=5).map(|n| (["o1", "o2", "o3", "o4", "o5"][n - 1], digest(n as u128))).collect();
        let written = serde_json::to_string(&seen).unwrap();
        assert_eq!(
            written,
            format!(
                r#"{{"usage_files":{{}},"orders":{},"recharges":{{"r1":"{:032x}"}},"transfers":{{}}}}"#,
                serde_json::to_string(&every).unwrap(),
                7
            )
        );
        // Equal to the same ids read back, all remembered; not once set aside.
        let mut read: SeenIds = serde_json::from_str(&written).unwrap();
        read.records_from = seen.records_from;
        assert_eq!(read, seen);
        read.set_aside_records();
        assert_ne!(read, seen);
        // Without a state file to read them from, they stay.
        let mut fresh = SeenIds::default();
        fresh.orders.insert(Text::from("o1"), digest(1));
        fresh.set_aside_records();
        assert!(fresh.holds_records());
        // An id accepted while the file that is read back holds it: refused.
        seen.orders.insert(Text::from("o6"), digest(6));
        seen.set_aside_records();
        let mut holding_o6 = remembered();
        holding_o6.orders.push((Text::from("o6"), digest(6)));
        let err = seen.hold_records(holding_o6).unwrap_err();
        assert!(err.contains("record id o6 was accepted again"), "{err}");
    }

    fn seen_orders(ids: &[(&str, u128)]) -> SortedRecords {
        ids.iter().map(|&(id, n)| (Text::from(id), ContentDigest(n))).collect()
    }

    #[test]
    fn record_ids_are_read_into_a_sorted_list_as_a_map_would_hold_them() {
        let d = |n: u32| format!("{n:032x}");
        // In order, out of order (o10 sorts before o9), an id given twice (the
        // last digest kept), and empty.
        for map in [
            format!(r#"{{"o1":"{}","o10":"{}","o9":"{}"}}"#, d(1), d(2), d(3)),
            format!(r#"{{"o9":"{}","o1":"{}","o10":"{}","o9":"{}","o1":"{}"}}"#, d(7), d(1), d(2), d(3), d(8)),
            "{}".to_string(),
        ] {
            let json = format!(r#"{{"orders":{map},"recharges":{{}},"transfers":{{}}}}"#);
            let read: RememberedRecords = serde_json::from_str(&json).unwrap();
            let as_map: BTreeMap<Text, ContentDigest> = serde_json::from_str(&map).unwrap();
            assert_eq!(read.orders, as_map.into_iter().collect::<SortedRecords>(), "{map}");
            let ids: RecordIds = serde_json::from_str(&map).unwrap();
            assert_eq!(serde_json::to_string(&ids).unwrap(), serde_json::to_string(&read.orders.iter().cloned().collect::<BTreeMap<_, _>>()).unwrap());
        }
        let twice: RememberedRecords = serde_json::from_str(&format!(r#"{{"orders":{{"o9":"{}","o1":"{}","o9":"{}"}},"recharges":{{}},"transfers":{{}}}}"#, d(7), d(1), d(3))).unwrap();
        assert_eq!(twice.orders, seen_orders(&[("o1", 1), ("o9", 3)]));
        assert!(serde_json::from_str::<RememberedRecords>(r#"{"orders":[],"recharges":{},"transfers":{}}"#).is_err());
    }

    #[test]
    fn content_digests_are_written_as_32_hex_digits_and_anything_else_is_refused() {
        let digest = ContentDigest(0x0123_4567_89ab_cdef_0011_2233_4455_6677);
        let json = serde_json::to_string(&digest).unwrap();
        assert_eq!(json, "\"0123456789abcdef0011223344556677\"");
        assert_eq!(serde_json::from_str::<ContentDigest>(&json).unwrap(), digest);
        assert_eq!(serde_json::to_string(&ContentDigest(5)).unwrap(), "\"00000000000000000000000000000005\"");
        for bad in [
            "\"0123456789ABCDEF0011223344556677\"",
            "\"+123456789abcdef0011223344556677\"",
            "\"0123456789abcdef00112233445566778\"",
            "\"123\"",
            "5",
        ] {
            let err = serde_json::from_str::<ContentDigest>(bad).unwrap_err().to_string();
            assert!(err.contains("32 lowercase hex digits") || err.contains("invalid type"), "{bad}: {err}");
        }
    }

    proptest::proptest! {
        /// Sorting a shard's entries by buckets gives the order of a comparison sort.
        #[test]
        fn a_shards_ids_sorted_by_buckets_are_sorted_as_by_comparison(
            shard in 0u128..64,
            lows in proptest::collection::vec(proptest::prelude::any::<u128>(), 0..9_000),
            crowded in proptest::prelude::any::<bool>(),
            strays in 0usize..3,
        ) {
            // Ids of one shard (top 6 bits), uniform below, or crowded into a few
            // buckets; a stray from another shard now and then.
            let mut entries: Vec<(u128, u32)> = lows
                .iter()
                .enumerate()
                .map(|(i, &low)| {
                    let below = if crowded { low & 0xff } else { low >> 6 };
                    ((shard << 122) | below, i as u32)
                })
                .collect();
            for k in 0..strays.min(entries.len()) {
                entries[k].0 ^= 1 << 127;
            }
            let mut expected = entries.clone();
            expected.sort_by_key(|e| e.0);
            let got = sorted_by_id(entries);
            // Ids may repeat (crowded): compare the ids, then each id's records as sets.
            proptest::prop_assert_eq!(got.iter().map(|e| e.0).collect::<Vec<_>>(), expected.iter().map(|e| e.0).collect::<Vec<_>>());
            let mut got_all = got.clone();
            got_all.sort();
            let mut expected_all = expected.clone();
            expected_all.sort();
            proptest::prop_assert_eq!(got_all, expected_all);
        }
    }

    #[test]
    fn the_filter_keeps_every_remembered_id_and_turns_most_others_away() {
        let day = Day(chrono::NaiveDate::from_ymd_opt(2026, 10, 1).unwrap());
        // Ids of shard 0 (a shard holds only its own).
        let digest = |i: u64| xxhash_rust::xxh3::xxh3_128(&i.to_le_bytes()) >> ID_SHARDS.trailing_zeros();
        let mut shard = RememberedShard {
            ids: (0..100_000u64).map(|i| RememberedId { id: digest(i), content: i, day }).collect(),
            ..RememberedShard::default()
        };
        shard.finish().unwrap();
        assert!((0..100_000u64).all(|i| shard.may_hold(digest(i)) && shard.get(digest(i)).map(|s| s.content) == Some(i)));
        let passed = (100_000..200_000u64).filter(|&i| shard.may_hold(digest(i))).count();
        assert!(passed < 3_000, "{passed} of 100,000 new ids passed the filter");
        assert!((100_000..200_000u64).all(|i| shard.get(digest(i)).is_none()));
    }

    #[test]
    fn month_aggregates_round_trip_through_their_binary_file_to_the_fen() {
        let m = |text: &str| Money::parse(text).unwrap();
        let mut a = MonthAggregates::default();
        let sums = BillSums {
            lines: 3,
            list: m("123456789012345.67"),
            discount: m("-0.01"),
            payable: m("-99999999999999.99"),
            voucher: m("0.00"),
            cash: m("7.10"),
            gift: m("0.05"),
            credit: m("1.00"),
        };
        // "org,\"2" sorts before "org-1" (',' < '-').
        a.merged.push((("org,\"2".into(), 1, 2, PayMode::SelfPaid, "cos".into(), LineKind::Refund), BillSums::default()));
        a.merged.push((("org-1".into(), 100000000001, 100000000002, PayMode::Payer, "cvm".into(), LineKind::Postpaid), sums.clone()));
        a.self_paid.push((("org-1".into(), 100000000002, "cvm".into()), m("-12.34")));
        let bytes = encode_month(&a);
        let mut streamed = Vec::new();
        write_month(&a, &mut streamed).unwrap();
        assert_eq!(streamed, bytes, "streamed and encoded at once alike");
        let back = decode_month(&bytes).unwrap();
        assert_eq!(back, a);
        assert!(decode_month(&[bytes.as_slice(), &[0]].concat()).unwrap_err().contains("1 bytes after the end"));
        assert_eq!(back.merged[1].1.payable.to_string(), "-99999999999999.99");
        assert_eq!(back.merged[1].1.list.to_string(), "123456789012345.67");
        let mut swapped = a.clone();
        swapped.merged.swap(0, 1);
        assert!(decode_month(&encode_month(&swapped)).unwrap_err().contains("out of key order"));
        // The JSON still spells amounts as text.
        assert_eq!(serde_json::to_string(&m("-0.01")).unwrap(), "\"-0.01\"");
        assert!(decode_month(&bytes[..bytes.len() - 1]).is_err(), "a cut file is refused");
    }

    /// A source that hands out at most `.1` bytes a read.
    struct Trickle<'b>(&'b [u8], usize);

    impl std::io::Read for Trickle<'_> {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            let n = buf.len().min(self.1).min(self.0.len());
            buf[..n].copy_from_slice(&self.0[..n]);
            self.0 = &self.0[n..];
            Ok(n)
        }
    }

    #[test]
    fn a_month_file_read_a_window_at_a_time_is_decoded_whole_wherever_the_windows_cut_it() {
        let m = |fen: i64| Money::from_fen(fen);
        let mut a = MonthAggregates::default();
        for i in 0..300u64 {
            let sums = BillSums { lines: i, list: m(i as i64 * 1_000_003), cash: m(-(i as i64)), ..BillSums::default() };
            let key = (format!("org-{i:04}").into(), 100_000_000_000 + i, 200_000_000_000 + i * 7, PayMode::Payer, "cvm".into(), LineKind::Postpaid);
            a.merged.push((key, sums));
        }
        for i in 0..50u64 {
            a.self_paid.push(((format!("org-{i:04}").into(), 100_000_000_000 + i, "cos".into()), m(i as i64 * 99)));
        }
        let bytes = encode_month(&a);
        // Windows from just over the longest entry up to more than the file, and
        // sources handing out 1, 7 or all bytes a read: every cut of an entry,
        // a length or the end is met.
        for window in [64, 65, 97, 256, 4096, bytes.len(), 1 << 20] {
            for trickle in [1, 7, usize::MAX] {
                let back = read_month_in_windows(Trickle(&bytes, trickle), window).unwrap();
                assert_eq!(back, a, "window {window}, {trickle} bytes a read");
                let longer = [bytes.as_slice(), &[0, 0, 0]].concat();
                let err = read_month_in_windows(Trickle(&longer, trickle), window).unwrap_err();
                assert!(err.contains("3 bytes after the end"), "{err}");
                let err = read_month_in_windows(Trickle(&bytes[..bytes.len() - 3], trickle), window).unwrap_err();
                assert!(err.contains("unreadable month aggregates"), "{err}");
            }
        }
        // An entry longer than the window is refused, not read forever.
        let err = read_month_in_windows(bytes.as_slice(), 16).unwrap_err();
        assert!(err.contains("unreadable month aggregates"), "{err}");
    }

    #[test]
    fn pay_modes_kinds_and_products_are_ordered_and_stored_as_their_texts() {
        // Ordered as their texts, so that a month's merged-bill list keeps the
        // order it had when they were text.
        let modes = [PayMode::Payer, PayMode::SelfPaid];
        let kinds = [LineKind::Postpaid, LineKind::Prepaid, LineKind::Refund];
        for a in modes {
            for b in modes {
                assert_eq!(a.cmp(&b), a.as_str().cmp(b.as_str()), "{a:?} {b:?}");
            }
            // Stored as the text: a month file's bytes are those of the text.
            assert_eq!(postcard::to_allocvec(&a).unwrap(), postcard::to_allocvec(a.as_str()).unwrap());
            assert_eq!(postcard::from_bytes::<PayMode>(&postcard::to_allocvec(a.as_str()).unwrap()).unwrap(), a);
            assert_eq!(serde_json::to_string(&a).unwrap(), format!("\"{}\"", a.as_str()));
        }
        for a in kinds {
            for b in kinds {
                assert_eq!(a.cmp(&b), a.as_str().cmp(b.as_str()), "{a:?} {b:?}");
            }
            assert_eq!(postcard::to_allocvec(&a).unwrap(), postcard::to_allocvec(a.as_str()).unwrap());
            assert_eq!(postcard::from_bytes::<LineKind>(&postcard::to_allocvec(a.as_str()).unwrap()).unwrap(), a);
        }
        // Any other text is refused.
        for bad in ["Payer", "self ", "", "postpaid"] {
            assert!(postcard::from_bytes::<PayMode>(&postcard::to_allocvec(bad).unwrap()).is_err(), "{bad}");
        }
        assert!(serde_json::from_str::<LineKind>("\"payer\"").unwrap_err().to_string().contains("bad line kind \"payer\""));
        // Product codes: interned, compared and ordered by their texts, stored as them.
        let codes = ["cbs", "cdn", "cvm", "cvm-gpu", "z", "cos,\"x"];
        for a in codes {
            let product = ProductName::from(a);
            assert_eq!(product.as_str(), a);
            assert_eq!(postcard::to_allocvec(&product).unwrap(), postcard::to_allocvec(a).unwrap());
            let read: ProductName = postcard::from_bytes(&postcard::to_allocvec(a).unwrap()).unwrap();
            assert!(std::ptr::eq(read.0, product.0), "read back as the interned code");
            for b in codes {
                assert_eq!(product.cmp(&ProductName::from(b)), a.cmp(b), "{a} {b}");
                assert_eq!(product == ProductName::from(b), a == b);
            }
        }
        assert_eq!(ProductName::default().as_str(), "");
    }

    #[test]
    fn usage_ids_round_trip_through_per_day_files() {
        let (d1, d2) = (Day::parse("2026-10-31").unwrap(), Day::parse("2026-11-01").unwrap());
        // d1's ids remembered (read from the file of a run of d1), d2's added.
        let ids_of = |day: Day| {
            (0..1000u128).filter(move |i| (i % 3 == 0) == (day == d1)).map(move |i| {
                let id = i.wrapping_mul(0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c835);
                (id, SeenUsage { day, content: (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15) })
            })
        };
        let mut run_of_d1 = SeenIds::default();
        ids_of(d1).for_each(|(id, seen)| run_of_d1.usage.insert(id, seen));
        let mut seen = SeenIds { usage_files: [(d1, run_of_d1.usage_count_of(d1))].into(), ..Default::default() };
        seen.decode_usage_of(d1, &run_of_d1.encode_usage_of(d1)).unwrap();
        seen.finish_decoding().unwrap();
        ids_of(d2).for_each(|(id, s)| seen.usage.insert(id, s));
        seen.finish_decoding().unwrap();
        seen.usage_files.insert(d2, seen.usage_count_of(d2));
        assert_eq!(seen.usage_files[&d1], 334);
        let mut loaded = SeenIds { usage_files: seen.usage_files.clone(), ..Default::default() };
        for d in [d1, d2] {
            loaded.decode_usage_of(d, &seen.encode_usage_of(d)).unwrap();
        }
        loaded.finish_decoding().unwrap();
        assert_eq!(loaded, seen);
        // Read back, files written from them are the same, and each id is found
        // with its record.
        for d in [d1, d2] {
            assert_eq!(loaded.encode_usage_of(d), seen.encode_usage_of(d));
            assert_eq!(loaded.usage_count_of(d), seen.usage_files[&d]);
        }
        for i in 0..1000u128 {
            let id = i.wrapping_mul(0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c835);
            assert_eq!(loaded.usage.get(id), seen.usage.get(id));
            assert!(loaded.usage.get(id.wrapping_add(1)).is_none());
        }
        // Forgetting a day's ids keeps the others findable.
        loaded.usage.retain_days(|d| d == d2);
        assert_eq!(loaded.usage.len() as u64, seen.usage_files[&d2]);
        for i in (1..1000u128).filter(|i| i % 3 != 0) {
            let id = i.wrapping_mul(0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c835);
            assert_eq!(loaded.usage.get(id).map(|s| s.day), Some(d2));
        }
        // Either form: a file out of id order, two files that hold one id, a file
        // that does not hold the listed number of ids or holds another day's are
        // refused, and both forms hold the same ids.
        let keyed = seen.encode_usage_of(d1);
        assert_eq!(keyed.len(), 334 * 28 + 512, "as many bytes an id as the entries alone, and the shards' counts");
        let old = entries_only(&keyed);
        assert_eq!(old.len(), 334 * USAGE_ENTRY);
        let mut swapped = old.clone();
        let (first, rest) = swapped.split_at_mut(USAGE_ENTRY);
        first.swap_with_slice(&mut rest[..USAGE_ENTRY]);
        let mut keys_swapped = keyed.clone();
        let (keys, _, count) = keyed_layout(&keyed).unwrap()[0];
        assert!(count >= 2 && keyed[keys..keys + 8] != keyed[keys + 8..keys + 16], "shard 0 holds two keys");
        let (first, rest) = keys_swapped[keys..].split_at_mut(USAGE_KEY);
        first.swap_with_slice(&mut rest[..USAGE_KEY]);
        let mut same_ids_as_d2 = old.clone();
        for entry in same_ids_as_d2.chunks_exact_mut(USAGE_ENTRY) {
            entry[24..28].copy_from_slice(&d2.0.num_days_from_ce().to_le_bytes());
        }
        let keyed_as_d2 = with_day(&keyed, d2);
        for (file, unsorted, as_d2) in [(&old, &swapped, &same_ids_as_d2), (&keyed, &keys_swapped, &keyed_as_d2)] {
            let mut refused = SeenIds { usage_files: [(d1, 334)].into(), ..Default::default() };
            assert!(refused.decode_usage_of(d1, unsorted).unwrap_err().contains("not sorted"));
            let mut twice = SeenIds { usage_files: [(d1, 334), (d2, 334)].into(), ..Default::default() };
            twice.decode_usage_of(d1, file).unwrap();
            twice.decode_usage_of(d2, as_d2).unwrap();
            assert!(twice.finish_decoding().unwrap_err().contains("repeat an id"));
            let mut short = SeenIds { usage_files: [(d1, 335)].into(), ..Default::default() };
            assert!(short.decode_usage_of(d1, file).unwrap_err().contains("expected 335 entries"));
            let mut wrong_day = SeenIds { usage_files: [(d2, 334)].into(), ..Default::default() };
            assert!(wrong_day.decode_usage_of(d2, file).unwrap_err().contains("another day"));
            let mut read = SeenIds { usage_files: [(d1, 334)].into(), ..Default::default() };
            read.decode_usage_of(d1, file).unwrap();
            read.finish_decoding().unwrap();
            assert_eq!(read.encode_usage_of(d1), keyed);
        }
        // Shard counts that are not the file's are refused.
        let mut miscounted = keyed.clone();
        let last_shard = miscounted.len() - 8;
        miscounted[last_shard] ^= 1;
        let mut refused = SeenIds { usage_files: [(d1, 334)].into(), ..Default::default() };
        assert!(refused.decode_usage_of(d1, &miscounted).unwrap_err().contains("do not hold the 334 entries"));
    }

    /// Where each shard's keys and rests begin in a usage-id file with key columns,
    /// and how many ids it holds; `None` for a file of the older form.
    fn keyed_layout(file: &[u8]) -> Option<Vec<(usize, usize, usize)>> {
        let (shards, trailer) = file.split_at_checked(file.len().checked_sub(USAGE_TRAILER)?)?;
        let counts: Vec<usize> = trailer.chunks_exact(8).map(|c| u64::from_le_bytes(c.try_into().unwrap()) as usize).collect();
        let ids = counts.iter().try_fold(0usize, |sum, &c| sum.checked_add(c))?;
        if ids.checked_mul(USAGE_KEY + USAGE_REST)? != shards.len() {
            return None;
        }
        let mut at = 0;
        Some(
            counts
                .into_iter()
                .map(|count| {
                    let shard = (at, at + count * USAGE_KEY, count);
                    at += count * (USAGE_KEY + USAGE_REST);
                    shard
                })
                .collect(),
        )
    }

    /// A usage-id file with key columns in the older form, the entries alone.
    fn entries_only(file: &[u8]) -> Vec<u8> {
        let Some(layout) = keyed_layout(file) else { return file.to_vec() };
        let mut out = Vec::new();
        for (keys, rests, count) in layout {
            for i in 0..count {
                let (key, rest) = (&file[keys + i * USAGE_KEY..][..USAGE_KEY], &file[rests + i * USAGE_REST..][..USAGE_REST]);
                out.extend_from_slice(&rest[..8]);
                out.extend_from_slice(key);
                out.extend_from_slice(&rest[8..]);
            }
        }
        out
    }

    /// A usage-id file with key columns whose every entry is of `day`.
    fn with_day(file: &[u8], day: Day) -> Vec<u8> {
        let mut out = file.to_vec();
        for (_, rests, count) in keyed_layout(file).unwrap() {
            for i in 0..count {
                out[rests + i * USAGE_REST + 16..][..4].copy_from_slice(&day.0.num_days_from_ce().to_le_bytes());
            }
        }
        out
    }

    proptest::proptest! {
        /// Decoded through `WantedIds`, a file keeps exactly the ids whose key a
        /// wanted id has (the ids both hold, and any other of such a key), with
        /// their records, in either form.
        #[test]
        fn a_file_decoded_through_the_wanted_ids_keeps_exactly_those_it_holds(
            held in proptest::collection::btree_set(proptest::prelude::any::<u128>(), 0..600),
            others in proptest::collection::vec(proptest::prelude::any::<u128>(), 0..600),
            share in 0usize..=4,
            crowded in proptest::prelude::any::<bool>(),
        ) {
            let day = Day::parse("2026-10-31").unwrap();
            // Crowded ids share their top bits, so that runs of the index are long
            // and keys repeat.
            let squeeze = |id: u128| if crowded { id >> 50 } else { id };
            let held: BTreeSet<u128> = held.into_iter().map(squeeze).collect();
            let mut run = SeenIds::default();
            for &id in &held {
                run.usage.insert(id, SeenUsage { day, content: id as u64 ^ 7 });
            }
            // Every `share`-th held id is wanted, with other ids, some twice, and
            // some that differ from a held id in their lowest bit only (the same key).
            let mut wanted: Vec<u128> = held.iter().copied().enumerate().filter(|(i, _)| share > 0 && i % share == 0).map(|(_, id)| id).collect();
            wanted.extend(others.iter().map(|&id| squeeze(id)));
            wanted.extend(others.iter().take(5).map(|&id| squeeze(id)));
            wanted.extend(held.iter().skip(1).step_by(7).map(|&id| id ^ 1));
            let wanted_keys: BTreeSet<u64> = wanted.iter().map(|&id| usage_key(id)).collect();
            let wanted_ids: BTreeSet<u128> = wanted.iter().copied().collect();
            let wanted = WantedIds::new(wanted.iter().map(|&id| usage_key(id)).collect());
            proptest::prop_assert_eq!(wanted.len(), wanted_keys.len());
            for &id in held.iter().chain(&others).chain(&wanted_ids) {
                let id = squeeze(id);
                for id in [id, id.wrapping_add(1), id.wrapping_add(1 << 64), id.wrapping_sub(1 << 64)] {
                    proptest::prop_assert_eq!(wanted.holds(id), wanted_keys.contains(&usage_key(id)));
                }
            }
            let keyed = run.encode_usage_of(day);
            let decode = |file: &[u8]| {
                let mut loaded = SeenIds { usage_files: [(day, held.len() as u64)].into(), ..Default::default() };
                loaded.decode_usage_from(day, std::io::Cursor::new(file), file.len() as u64, Some(&wanted)).unwrap();
                loaded.finish_decoding().unwrap();
                loaded
            };
            let loaded = decode(&keyed);
            // The older form (the entries alone) keeps the same.
            proptest::prop_assert_eq!(&decode(&entries_only(&keyed)), &loaded);
            // Decoded apart and added, the same.
            for file in [keyed.clone(), entries_only(&keyed)] {
                let mut apart = SeenIds { usage_files: loaded.usage_files.clone(), ..Default::default() };
                let kept = apart.decode_kept(day, std::io::Cursor::new(&file[..]), file.len() as u64, &wanted).unwrap();
                apart.add_kept(kept);
                apart.finish_decoding().unwrap();
                proptest::prop_assert_eq!(&apart, &loaded);
            }
            let file = entries_only(&keyed);
            let kept: Vec<u128> = held.iter().copied().filter(|&id| wanted_keys.contains(&usage_key(id))).collect();
            proptest::prop_assert_eq!(loaded.usage.len(), kept.len());
            for &id in &held {
                let expected = wanted_keys.contains(&usage_key(id)).then_some(SeenUsage { day, content: id as u64 ^ 7 });
                proptest::prop_assert_eq!(loaded.usage.get(id), expected);
                // Every held id that is wanted is kept.
                proptest::prop_assert!(!wanted_ids.contains(&id) || loaded.usage.get(id).is_some());
            }
            if held.len() >= 2 {
                let mut swapped = file.clone();
                let (first, rest) = swapped.split_at_mut(USAGE_ENTRY);
                first.swap_with_slice(&mut rest[..USAGE_ENTRY]);
                let mut unsorted = SeenIds { usage_files: [(day, held.len() as u64)].into(), ..Default::default() };
                let empty = WantedIds::new(Vec::new());
                // The entries alone are all read, wanted or not.
                let refused = unsorted.decode_usage_from(day, std::io::Cursor::new(&swapped[..]), swapped.len() as u64, Some(&empty));
                proptest::prop_assert!(refused.unwrap_err().contains("not sorted"));
                let refused = unsorted.decode_kept(day, std::io::Cursor::new(&swapped[..]), swapped.len() as u64, &empty).err();
                proptest::prop_assert!(refused.is_some_and(|e| e.contains("not sorted")));
                // With key columns, every key is read: two keys out of order are
                // refused, wanted or not.
                let layout = keyed_layout(&keyed).unwrap();
                let two_keys = layout.iter().find(|s| s.2 >= 2).map(|s| s.0).filter(|&k| keyed[k..k + 8] != keyed[k + 8..k + 16]);
                if let Some(keys) = two_keys {
                    let mut swapped = keyed.clone();
                    let (first, rest) = swapped[keys..].split_at_mut(USAGE_KEY);
                    first.swap_with_slice(&mut rest[..USAGE_KEY]);
                    let refused = unsorted.decode_kept(day, std::io::Cursor::new(&swapped[..]), swapped.len() as u64, &empty).err();
                    proptest::prop_assert!(refused.is_some_and(|e| e.contains("not sorted")));
                }
                // The rest of an entry is read only when a wanted id has its key:
                // another day in the last one is found when every id is wanted.
                let &(_, rests, count) = layout.iter().find(|s| s.2 >= 1).unwrap();
                let mut other_day = keyed.clone();
                other_day[rests + (count - 1) * USAGE_REST + 16] ^= 1;
                let refused = unsorted.decode_usage_from(day, std::io::Cursor::new(&other_day[..]), other_day.len() as u64, None).err();
                proptest::prop_assert!(refused.is_some_and(|e| e.contains("another day")));
                let unread = unsorted.decode_kept(day, std::io::Cursor::new(&other_day[..]), other_day.len() as u64, &empty);
                proptest::prop_assert!(unread.is_ok());
            }
        }
    }
}
