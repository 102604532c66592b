//! Reading a day's input files (SPEC §4.2, §4.3, §7.4, §9): the only place input
//! columns exist. Each row is checked in the order of §14; an accepted row becomes
//! a typed record, a refused one a `Reject` with its file, line, id and reason.
//!
//! Usage records are priced and grouped into settlement lines as they are read
//! (§5.3), so memory holds the day's lines, not its rows. They are read in batches:
//! a batch is checked on all cores while the next one is read, duplicates are
//! decided per id shard in file order, and lines are grouped per organization shard.

use crate::csvread::{read_rows, Columns, Fields, RawRow, Row, RowReader, UnusableFile};
use crate::ids::{intern_product, is_valid_id, is_valid_product, parse_uin, Product, Uin};
use crate::money::{Exact8, Money, NumberError, PlainDecimal, Rated};
use crate::pricing::{choose_contract_by_card, price_usage};
use crate::reference::{ContractCycle, Contracts};
use crate::reject::{Reason, Refusal, Reject};
use crate::snapshot::Snapshot;
use crate::state::{SeenIds, SeenUsage, UsageIds, WantedIds, ID_SHARDS};
use crate::time::{Cycle, Day, Month, Ts, TsCache};
use std::collections::BTreeMap;
use rayon::prelude::*;
use std::path::Path;

pub const USAGE_FILE: &str = "usage.csv";
pub const ORDERS_FILE: &str = "orders.csv";
pub const RECHARGES_FILE: &str = "recharges.csv";
pub const TRANSFERS_FILE: &str = "transfers.csv";
pub const DAY_FILES: [&str; 4] = [USAGE_FILE, ORDERS_FILE, RECHARGES_FILE, TRANSFERS_FILE];

/// What the reading of a day needs to know besides the rows.
pub struct ReadContext<'a> {
    pub day: Day,
    pub snapshot: &'a Snapshot,
    pub contracts: &'a Contracts,
    pub is_month_closed: &'a (dyn Fn(Month) -> bool + Sync),
}

/// Counts of one input file for `summary.json`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct FileCounts {
    pub present: bool,
    pub rows: u64,
    pub accepted: u64,
    pub duplicates: u64,
    pub rejected: u64,
}

/// A settlement line's identity (SPEC §5.3); its derived order is the §4.4 key.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct GroupKey {
    pub owner_uin: Uin,
    pub product: Product,
    pub cycle: Cycle,
    pub period_start: Ts,
}

impl GroupKey {
    /// The end of the line's period (exclusive).
    pub fn period_end(&self) -> Ts {
        self.cycle.period_containing(self.period_start).1
    }
}

/// The accepted usage records of one settlement line, summed exactly.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UsageGroup {
    pub list: Rated,
    pub priced: Rated,
    pub records: u64,
    /// The sum of the records' quantities (FOCUS PricingQuantity).
    pub quantity: Exact8,
    /// The contract that priced it; None = list.
    pub contract: Option<crate::reference::ContractRef>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OrderAction {
    New,
    Renew,
    Upgrade,
    Downgrade,
    Refund,
}

impl OrderAction {
    fn parse(text: &str) -> Option<OrderAction> {
        Some(match text {
            "new" => OrderAction::New,
            "renew" => OrderAction::Renew,
            "upgrade" => OrderAction::Upgrade,
            "downgrade" => OrderAction::Downgrade,
            "refund" => OrderAction::Refund,
            _ => return None,
        })
    }
    pub fn is_charge(self) -> bool {
        matches!(self, OrderAction::New | OrderAction::Renew | OrderAction::Upgrade)
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OrderRecord {
    pub line: u64,
    pub order_id: String,
    pub owner_uin: Uin,
    pub resource_id: String,
    pub product: Product,
    pub action: OrderAction,
    pub created_at: Ts,
    /// Charges only.
    pub list_amount: Option<Exact8>,
    /// Money back only.
    pub refund_amount: Option<Money>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RechargeRecord {
    pub line: u64,
    pub recharge_id: String,
    pub uin: Uin,
    pub at: Ts,
    pub amount: Money,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TransferKind {
    In,
    Out,
}

impl TransferKind {
    pub fn as_str(self) -> &'static str {
        match self {
            TransferKind::In => "in",
            TransferKind::Out => "out",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TransferRecord {
    pub line: u64,
    pub transfer_id: String,
    pub kind: TransferKind,
    pub member_uin: Uin,
    pub at: Ts,
    /// The amount as written (a number, maybe not a whole number of fen).
    pub amount_text: String,
    /// The amount when it is a whole number of fen.
    pub amount: Option<Money>,
    pub source_transfer_id: Option<String>,
}

/// Everything read from one day's folder.
#[derive(Debug, Default)]
pub struct DayInput {
    pub usage: UsageShards,
    pub orders: Vec<OrderRecord>,
    pub recharges: Vec<RechargeRecord>,
    pub transfers: Vec<TransferRecord>,
    pub rejects: Vec<Reject>,
    pub counts: BTreeMap<&'static str, FileCounts>,
}

/// The outcome of checking one row.
enum Checked<T> {
    Accepted(T),
    Duplicate,
    Refused(Refusal),
}

/// Read the four files of `dir` (a `days/D` folder; absent files have no rows).
pub fn read_day(dir: &Path, ctx: &ReadContext, seen: &mut SeenIds) -> Result<DayInput, UnusableFile> {
    let mut input = DayInput::default();
    let month = ctx.day.month();
    // Usage ids are remembered for the month of their run and the month after (§4.2).
    seen.usage.retain_days(|d| d.month() >= month.prev());
    seen.usage_files.retain(|d, _| d.month() >= month.prev());

    read_usage(dir, ctx, seen, &mut input)?;
    read_file(dir, ORDERS_FILE, &ORDER_COLUMNS, "order_id", &mut input, |fields, line, input| {
        Ok(match check_order(fields, line, ctx, seen) {
            Checked::Accepted(order) => {
                input.orders.push(order);
                Checked::Accepted(())
            }
            Checked::Duplicate => Checked::Duplicate,
            Checked::Refused(r) => Checked::Refused(r),
        })
    })?;
    read_file(dir, RECHARGES_FILE, &RECHARGE_COLUMNS, "recharge_id", &mut input, |fields, line, input| {
        Ok(match check_recharge(fields, line, ctx, seen) {
            Checked::Accepted(recharge) => {
                input.recharges.push(recharge);
                Checked::Accepted(())
            }
            Checked::Duplicate => Checked::Duplicate,
            Checked::Refused(r) => Checked::Refused(r),
        })
    })?;
    read_file(dir, TRANSFERS_FILE, &TRANSFER_COLUMNS, "transfer_id", &mut input, |fields, line, input| {
        Ok(match check_transfer(fields, line, ctx, seen) {
            Checked::Accepted(transfer) => {
                input.transfers.push(transfer);
                Checked::Accepted(())
            }
            Checked::Duplicate => Checked::Duplicate,
            Checked::Refused(r) => Checked::Refused(r),
        })
    })?;
    Ok(input)
}

type RowHandler<'h> = dyn FnMut(&Fields<'_>, u64, &mut DayInput) -> Result<Checked<()>, UnusableFile> + 'h;

fn read_file(
    dir: &Path,
    file: &'static str,
    columns: &Columns,
    id_column: &str,
    input: &mut DayInput,
    mut handle: impl FnMut(&Fields<'_>, u64, &mut DayInput) -> Result<Checked<()>, UnusableFile>,
) -> Result<(), UnusableFile> {
    let handle: &mut RowHandler = &mut handle;
    let mut counts = FileCounts::default();
    let mut failure = None;
    let present = read_rows(&dir.join(file), file, columns, Some(id_column), |row| {
        if failure.is_some() {
            return;
        }
        counts.rows += 1;
        match row {
            Row::Bad { line, id, message } => {
                counts.rejected += 1;
                input.rejects.push(Reject { file, line, id, reason: Reason::BadRow, message });
            }
            Row::Fields { line, fields } => match handle(&fields, line, input) {
                Ok(Checked::Accepted(())) => counts.accepted += 1,
                Ok(Checked::Duplicate) => counts.duplicates += 1,
                Ok(Checked::Refused(r)) => {
                    counts.rejected += 1;
                    input.rejects.push(Reject { file, line, id: fields.get(0).to_string(), reason: r.reason, message: r.message });
                }
                Err(e) => failure = Some(e),
            },
        }
    })?;
    if let Some(e) = failure {
        return Err(e);
    }
    counts.present = present;
    input.counts.insert(file, counts);
    Ok(())
}

/// Usage rows are read and checked in batches of this many.
const USAGE_BATCH: usize = 1 << 16;

/// Settlement lines are kept in this many shards, by organization index: shards
/// are grouped in parallel, and each shard's table is small enough for the cache.
pub const USAGE_SHARDS: usize = 64;

/// The day's settlement lines (§5.3), shard `o % USAGE_SHARDS` holding organization `o`'s.
pub type UsageShards = Vec<LineShard>;

/// Lines are kept in segments of this many (384 KiB): nothing is copied as a shard
/// grows, and a shard's slack is at most one segment.
const LINE_SEGMENT: usize = 1 << 12;

/// The settlement lines of the organizations of one shard, in the order first seen,
/// in segments of `LINE_SEGMENT` lines, found through a table of their positions
/// (8 bytes a slot). A table of the lines themselves took ~230 bytes a line at its
/// usual load and was copied whole at each growth; a list per organization grown
/// by doubling held ~200 MB of slack at 10M rows (both in BENCHMARKS.md).
/// `lists_by_organization` hands each organization its lines once reading is done.
///
/// The table is open addressing with linear probing, a power of two slots at most
/// 3/4 full, each 0 (empty) or the top 32 bits of the line key's hash (its tag,
/// whose low bits pick the home slot) above the line's position + 1: a probe
/// compares tags and reads a line only when they match. `add_all` prefetches the
/// slot of a record some rows ahead and the line it will find there nearer on, so
/// the cache misses of a batch overlap (see `idtable`).
#[derive(Debug, Default)]
pub struct LineShard {
    slots: Vec<u64>,
    segments: Vec<Vec<(GroupKey, UsageGroup)>>,
    /// Each line's `organization / USAGE_SHARDS`, by position.
    org_of: Vec<u32>,
}

/// How many records ahead `LineShard::add_all` prefetches a slot; a line is
/// prefetched half as far ahead.
const LINE_PREFETCH_AHEAD: usize = 16;

impl LineShard {
    fn key_tag(key: &GroupKey) -> u32 {
        use std::hash::BuildHasher;
        (rustc_hash::FxBuildHasher.hash_one(key) >> 32) as u32
    }

    fn line(segments: &[Vec<(GroupKey, UsageGroup)>], position: u32) -> &(GroupKey, UsageGroup) {
        let p = position as usize;
        &segments[p / LINE_SEGMENT][p % LINE_SEGMENT]
    }

    fn home(&self, tag: u32) -> usize {
        tag as usize & (self.slots.len() - 1)
    }

    /// Add records (organization / USAGE_SHARDS, line, sums, file line) in order;
    /// the file line of the first whose sum leaves the exact range, if any (the
    /// records after it are not added).
    fn add_all(&mut self, records: &[&AcceptedUsage]) -> Option<u64> {
        let tags: Vec<u32> = records.iter().map(|r| Self::key_tag(&r.1)).collect();
        let near = LINE_PREFETCH_AHEAD / 2;
        for (k, record) in records.iter().enumerate() {
            if !self.slots.is_empty() {
                if let Some(&tag) = tags.get(k + LINE_PREFETCH_AHEAD) {
                    crate::idtable::prefetch(&self.slots[self.home(tag)]);
                }
                if let Some(&tag) = tags.get(k + near) {
                    if let Some(position) = self.first_match(tag) {
                        crate::idtable::prefetch(Self::line(&self.segments, position));
                    }
                }
            }
            let (local, key, group, line) = record;
            if self.add_tagged(tags[k], *local, key.clone(), group.clone()).is_err() {
                return Some(*line);
            }
        }
        None
    }

    /// The position in the first slot from `tag`'s home with that tag, if any
    /// before an empty slot (for prefetching: it may be another key's line).
    fn first_match(&self, tag: u32) -> Option<u32> {
        let mask = self.slots.len() - 1;
        let mut i = self.home(tag);
        loop {
            match self.slots[i] {
                0 => return None,
                slot if (slot >> 32) as u32 == tag => return Some(slot as u32 - 1),
                _ => i = (i + 1) & mask,
            }
        }
    }

    /// Add one record's sums to its line; Err when a sum leaves the exact range.
    #[cfg(test)]
    fn add(&mut self, local: usize, key: GroupKey, part: UsageGroup) -> Result<(), ()> {
        self.add_tagged(Self::key_tag(&key), local, key, part)
    }

    fn add_tagged(&mut self, tag: u32, local: usize, key: GroupKey, part: UsageGroup) -> Result<(), ()> {
        if (self.org_of.len() + 1) * 4 > self.slots.len() * 3 {
            self.grow();
        }
        let mask = self.slots.len() - 1;
        let mut i = self.home(tag);
        loop {
            let slot = self.slots[i];
            if slot == 0 {
                break;
            }
            if (slot >> 32) as u32 == tag && Self::line(&self.segments, slot as u32 - 1).0 == key {
                let p = (slot as u32 - 1) as usize;
                let group = &mut self.segments[p / LINE_SEGMENT][p % LINE_SEGMENT].1;
                group.list = group.list.checked_add(part.list).ok_or(())?;
                group.priced = group.priced.checked_add(part.priced).ok_or(())?;
                group.records += 1;
                group.quantity = Exact8(group.quantity.0.checked_add(part.quantity.0).ok_or(())?);
                return Ok(());
            }
            i = (i + 1) & mask;
        }
        let position = u32::try_from(self.org_of.len()).ok().filter(|&p| p < u32::MAX).expect("fewer than 2^32 - 1 lines in a shard");
        let segments = &mut self.segments;
        match segments.last_mut() {
            Some(last) if last.len() < LINE_SEGMENT => last.push((key, part)),
            // The first segment grows as small shards need; the others are
            // made full size.
            _ => {
                let mut segment = if segments.is_empty() { Vec::new() } else { Vec::with_capacity(LINE_SEGMENT) };
                segment.push((key, part));
                segments.push(segment);
            }
        }
        self.org_of.push(u32::try_from(local).expect("organization index fits"));
        self.slots[i] = (u64::from(tag) << 32) | u64::from(position + 1);
        Ok(())
    }

    /// Twice the slots (16 at first), the lines placed again by their tags.
    fn grow(&mut self) {
        let slots = (self.slots.len() * 2).max(16);
        let old = std::mem::replace(&mut self.slots, vec![0; slots]);
        let mask = self.slots.len() - 1;
        for slot in old.into_iter().filter(|&s| s != 0) {
            let mut i = self.home((slot >> 32) as u32);
            while self.slots[i] != 0 {
                i = (i + 1) & mask;
            }
            self.slots[i] = slot;
        }
    }

    /// The positions of the shard's lines grouped by organization (each group in
    /// the order first seen), and where each `organization / USAGE_SHARDS`'s group
    /// starts (one more start than organizations with lines or before them).
    fn positions_by_organization(&self) -> (Vec<u32>, Vec<u32>) {
        let locals = self.org_of.iter().max().map_or(0, |&m| m as usize + 1);
        let mut starts = vec![0u32; locals + 1];
        for &o in &self.org_of {
            starts[o as usize + 1] += 1;
        }
        for i in 1..starts.len() {
            starts[i] += starts[i - 1];
        }
        let mut next = starts.clone();
        let mut positions = vec![0u32; self.org_of.len()];
        for (p, &o) in self.org_of.iter().enumerate() {
            positions[next[o as usize] as usize] = p as u32;
            next[o as usize] += 1;
        }
        (positions, starts)
    }

    /// Drop the table that finds a line by its key (once no record is added):
    /// the lines and their organizations stay.
    pub fn drop_table(&mut self) {
        self.slots = Vec::new();
    }

    /// How many lines the shard holds.
    pub fn len(&self) -> usize {
        self.org_of.len()
    }

    pub fn is_empty(&self) -> bool {
        self.org_of.is_empty()
    }
}

/// Each of the `orgs` organizations' lines (in processing order: by period end,
/// then key, as `OrgBooks::settle_until` takes them) in a list of
/// exactly their length, made on all cores a run of organizations at a time in
/// organization order: the settlement, which goes in that order too, frees whole
/// pages as it goes, and its ledger lines reuse them (lists allocated as they grew
/// shared pages with other organizations' lists, and none of that memory could be
/// reused until the end; BENCHMARKS.md). The lines are copied: the caller drops the
/// shards after.
pub fn lists_by_organization(shards: &[LineShard], orgs: usize) -> Vec<Vec<(GroupKey, UsageGroup)>> {
    use rayon::prelude::*;
    assert_eq!(shards.len(), USAGE_SHARDS, "one shard per organization residue");
    let index: Vec<(Vec<u32>, Vec<u32>)> = shards.par_iter().map(LineShard::positions_by_organization).collect();
    (0..orgs)
        .into_par_iter()
        .with_max_len(64)
        .map(|o| {
            let (shard, local) = (&shards[o % USAGE_SHARDS], o / USAGE_SHARDS);
            let (positions, starts) = &index[o % USAGE_SHARDS];
            match (starts.get(local), starts.get(local + 1)) {
                (Some(&from), Some(&to)) => {
                    // In processing order: by period end (computed once a line), then key.
                    let line = |p: u32| LineShard::line(&shard.segments, p);
                    let mut order: Vec<(Ts, u32)> = positions[from as usize..to as usize].iter().map(|&p| (line(p).0.period_end(), p)).collect();
                    order.sort_unstable_by(|a, b| a.0.cmp(&b.0).then_with(|| line(a.1).0.cmp(&line(b.1).0)));
                    order.iter().map(|&(_, p)| line(p).clone()).collect()
                }
                _ => Vec::new(),
            }
        })
        .collect()
}

/// How a usage id compares with the ids remembered before it.
#[derive(Clone, Copy)]
enum Seen {
    New,
    Same,
    Different,
}

/// A usage row after the checks that need nothing but the row and the reference
/// data; what remains is the duplicate check, which needs the rows before it.
enum UsageCheck {
    Refused(Refusal),
    Passed {
        id: u128,
        /// The low 64 bits of the content digest (see `SeenUsage`).
        content: u64,
        org: usize,
        key: GroupKey,
        /// None when the priced amount is outside the engine's exact range.
        group: Option<UsageGroup>,
    },
}

/// About how many usage ids the day folder `dir` brings (rows are about 140
/// bytes), to size the id tables once.
pub fn usage_ids_hint(dir: &Path) -> usize {
    let size = std::fs::metadata(dir.join(USAGE_FILE)).map(|m| m.len()).unwrap_or(0);
    (size / 140) as usize
}

/// The digests of the `record_id` of every record of `dir`'s `usage.csv`, for
/// `Store::load_for` to keep only the remembered ids the day can look up: a
/// superset of those `read_usage` looks up (it digests the same field of the
/// same records, and only of those that pass their checks). `None` when the
/// file cannot be read through: its reading will say why, and until then every
/// id is kept.
pub fn usage_ids_of(dir: &Path) -> Option<WantedIds> {
    let path = dir.join(USAGE_FILE);
    let mut reader = match RowReader::open(&path, USAGE_FILE, &USAGE_COLUMNS, Some("record_id")) {
        Ok(Some(reader)) => reader,
        Ok(None) => return Some(WantedIds::new(Vec::new())),
        Err(_) => return None,
    };
    let indices = reader.indices().to_vec();
    // A file with no quote and no CR (CRLF line ends aside) is split into lines
    // on all cores (the reader took 1.3 s for 10M rows, on one core); any other
    // by the reader, its batches read while the previous one is digested.
    if let Some(column) = indices[0] {
        if let Ok(Some(ids)) = crate::csvread::plain_column(&path, column, |field| id_digest(field)) {
            return Some(WantedIds::new(ids));
        }
    }
    let mut ids: Vec<u128> = Vec::with_capacity(usage_ids_hint(dir) + USAGE_BATCH);
    let (mut current, mut next) = (Vec::new(), Vec::new());
    reader.next_batch(&mut current, USAGE_BATCH).ok()?;
    while !current.is_empty() {
        let (more, digests) = rayon::join(
            || reader.next_batch(&mut next, USAGE_BATCH),
            || -> Vec<u128> {
                current
                    .par_iter()
                    .filter_map(|row| match row {
                        RawRow::Record { record, .. } => Some(id_digest(Fields::new(record, &indices).get(0))),
                        RawRow::Bad { .. } => None,
                    })
                    .collect()
            },
        );
        more.ok()?;
        ids.extend(digests);
        std::mem::swap(&mut current, &mut next);
    }
    Some(WantedIds::new(ids))
}

/// Read `usage.csv`: batches are read while the previous one is checked, rows are
/// checked in parallel, duplicates are decided in file order, and lines are
/// grouped by organization shard in parallel.
fn read_usage(dir: &Path, ctx: &ReadContext, seen: &mut SeenIds, input: &mut DayInput) -> Result<(), UnusableFile> {
    let mut counts = FileCounts::default();
    input.usage = (0..USAGE_SHARDS).map(|_| LineShard::default()).collect();
    let Some(mut reader) = RowReader::open(&dir.join(USAGE_FILE), USAGE_FILE, &USAGE_COLUMNS, Some("record_id"))? else {
        input.counts.insert(USAGE_FILE, counts);
        return Ok(());
    };
    counts.present = true;
    // Room for the day's ids up front: no rehashing (none at all when the state
    // was loaded with `Store::load_for`, which made room for them already).
    seen.usage.reserve(usage_ids_hint(dir));
    let indices = reader.indices().to_vec();
    let (mut current, mut next) = (Vec::new(), Vec::new());
    reader.next_batch(&mut current, USAGE_BATCH)?;
    while !current.is_empty() {
        let (more, settled) = rayon::join(
            || reader.next_batch(&mut next, USAGE_BATCH),
            || settle_usage_batch(&current, &indices, ctx, seen, input, &mut counts),
        );
        settled?;
        more?;
        std::mem::swap(&mut current, &mut next);
    }
    input.counts.insert(USAGE_FILE, counts);
    Ok(())
}

fn settle_usage_batch(
    batch: &[RawRow],
    indices: &[Option<usize>],
    ctx: &ReadContext,
    seen: &mut SeenIds,
    input: &mut DayInput,
    counts: &mut FileCounts,
) -> Result<(), UnusableFile> {
    let checks: Vec<Option<UsageCheck>> = batch
        .par_iter()
        .map_init(TsCache::default, |cache, row| match row {
            RawRow::Record { record, .. } => Some(check_usage(&Fields::new(record, indices), ctx, cache)),
            RawRow::Bad { .. } => None,
        })
        .collect();
    // Duplicates (§4.2), decided per id shard in parallel, in file order within a shard.
    let mut by_shard: Vec<Vec<u32>> = (0..ID_SHARDS).map(|_| Vec::new()).collect();
    for (i, check) in checks.iter().enumerate() {
        if let Some(UsageCheck::Passed { id, .. }) = check {
            by_shard[UsageIds::shard_of(*id)].push(i as u32);
        }
    }
    let verdicts: Vec<Vec<(u32, Seen)>> = seen
        .usage
        .shards_mut()
        .into_par_iter()
        .zip(by_shard)
        .map(|((remembered, shard), rows)| {
            let id_of = |i: u32| match &checks[i as usize] {
                Some(UsageCheck::Passed { id, content, .. }) => (*id, *content),
                _ => unreachable!("passed rows"),
            };
            (0..rows.len())
                .map(|k| {
                    // The slots of the ids a few rows on are asked for now: their
                    // cache misses overlap this row's (see `idtable`).
                    if let Some(&ahead) = rows.get(k + PREFETCH_AHEAD) {
                        let (id, _) = id_of(ahead);
                        shard.prefetch(id);
                        remembered.prefetch(id);
                    }
                    let i = rows[k];
                    let (id, content) = id_of(i);
                    if let Some(earlier) = remembered.get(id) {
                        return (i, if earlier.content == content { Seen::Same } else { Seen::Different });
                    }
                    let verdict = match shard.get_or_insert(id, SeenUsage { day: ctx.day, content }) {
                        None => Seen::New,
                        Some(held) if held.content == content => Seen::Same,
                        Some(_) => Seen::Different,
                    };
                    (i, verdict)
                })
                .collect()
        })
        .collect();
    let mut seen_as = vec![Seen::New; checks.len()];
    for (i, verdict) in verdicts.into_iter().flatten() {
        seen_as[i as usize] = verdict;
    }

    // Each row's outcome, a part of the batch per task on all cores; the parts are
    // joined in file order (this loop alone was a fifth of reading when serial).
    let mut checks = checks;
    let parts: Vec<BatchPart> = checks
        .par_chunks_mut(ROWS_PER_PART)
        .zip(batch.par_chunks(ROWS_PER_PART))
        .zip(seen_as.par_chunks(ROWS_PER_PART))
        .map(|((checks, rows), seen_as)| classify_usage_rows(rows, checks, seen_as, indices))
        .collect();
    let mut by_shard: Vec<Vec<Vec<AcceptedUsage>>> = (0..USAGE_SHARDS).map(|_| Vec::with_capacity(parts.len())).collect();
    for part in parts {
        counts.rows += part.counts.rows;
        counts.accepted += part.counts.accepted;
        counts.duplicates += part.counts.duplicates;
        counts.rejected += part.counts.rejected;
        input.rejects.extend(part.rejects);
        for (shard, rows) in by_shard.iter_mut().zip(part.accepted) {
            shard.push(rows);
        }
    }
    // Each shard in line order; the first overflowing line (in file order) is reported.
    let overflow = input
        .usage
        .par_iter_mut()
        .zip(by_shard)
        .filter_map(|(shard, parts)| {
            let records: Vec<&AcceptedUsage> = parts.iter().flatten().collect();
            shard.add_all(&records)
        })
        .min();
    match overflow {
        None => Ok(()),
        Some(line) => Err(UnusableFile {
            file: USAGE_FILE.into(),
            message: format!("line {line}: the settlement line's sum exceeds the engine's exact range"),
        }),
    }
}

/// How many rows ahead the id lookups of a shard prefetch their slots.
const PREFETCH_AHEAD: usize = 8;

/// Rows of a batch classified by one task (see `settle_usage_batch`).
const ROWS_PER_PART: usize = 4096;

/// An accepted usage row: (organization / USAGE_SHARDS, line, sums, file line).
type AcceptedUsage = (usize, GroupKey, UsageGroup, u64);

/// The outcome of a part of a batch: its counts, its rejects in file order, and
/// its accepted rows by line shard in file order.
struct BatchPart {
    counts: FileCounts,
    rejects: Vec<Reject>,
    accepted: Vec<Vec<AcceptedUsage>>,
}

fn classify_usage_rows(rows: &[RawRow], checks: &mut [Option<UsageCheck>], seen_as: &[Seen], indices: &[Option<usize>]) -> BatchPart {
    let mut part = BatchPart {
        counts: FileCounts::default(),
        rejects: Vec::new(),
        accepted: (0..USAGE_SHARDS).map(|_| Vec::new()).collect(),
    };
    let counts = &mut part.counts;
    for ((row, check), seen_as) in rows.iter().zip(checks.iter_mut()).zip(seen_as) {
        counts.rows += 1;
        let (line, record) = match row {
            RawRow::Bad { line, id, message } => {
                counts.rejected += 1;
                let reject = Reject { file: USAGE_FILE, line: *line, id: id.clone(), reason: Reason::BadRow, message: message.clone() };
                part.rejects.push(reject);
                continue;
            }
            RawRow::Record { line, record } => (*line, record),
        };
        // The record's id is read only for a reject: an accepted row's record is
        // not touched again here (it is cold by now: a cache miss a row).
        let record_id = || Fields::new(record, indices).get(0);
        let refusal = match check.take().expect("records are checked") {
            UsageCheck::Refused(r) => Some(r),
            UsageCheck::Passed { org, key, group, .. } => match seen_as {
                Seen::Same => {
                    counts.duplicates += 1;
                    continue;
                }
                Seen::Different => Some(Refusal::new(
                    Reason::ConflictingDuplicate,
                    format!("{} was already accepted in {USAGE_FILE} with different content", record_id()),
                )),
                Seen::New => match group {
                    Some(group) => {
                        part.accepted[org % USAGE_SHARDS].push((org / USAGE_SHARDS, key, group, line));
                        None
                    }
                    // Reachable only with absurd contract prices: refuse the row rather than round.
                    None => Some(Refusal::new(Reason::BadValue, "the priced amount exceeds the engine's exact range")),
                },
            },
        };
        match refusal {
            Some(r) => {
                counts.rejected += 1;
                part.rejects.push(Reject { file: USAGE_FILE, line, id: record_id().to_string(), reason: r.reason, message: r.message });
            }
            None => counts.accepted += 1,
        }
    }
    part
}

/// Digest of the §-defined columns' text, for "identical content": xxh3-128 of
/// the fields in SPEC order, each followed by 0x1f. Built in one buffer and hashed
/// in one call (the same digest as feeding the pieces one by one, much faster).
fn content_digest(fields: &Fields<'_>) -> u128 {
    let mut buffer = [0u8; 512];
    // Nearly always: the record's own text with its commas replaced.
    if let Some(len) = fields.unit_separated(&mut buffer) {
        return xxhash_rust::xxh3::xxh3_128(&buffer[..len]);
    }
    let mut used = 0;
    for i in 0..fields.len() {
        let field = fields.get(i).as_bytes();
        if used + field.len() + 1 > buffer.len() {
            return content_digest_long(fields);
        }
        buffer[used..used + field.len()].copy_from_slice(field);
        buffer[used + field.len()] = 0x1f;
        used += field.len() + 1;
    }
    xxhash_rust::xxh3::xxh3_128(&buffer[..used])
}

fn content_digest_long(fields: &Fields<'_>) -> u128 {
    let mut hasher = xxhash_rust::xxh3::Xxh3::new();
    for i in 0..fields.len() {
        hasher.update(fields.get(i).as_bytes());
        hasher.update(&[0x1f]);
    }
    hasher.digest128()
}

fn content_digest_text(fields: &Fields<'_>) -> String {
    format!("{:032x}", content_digest(fields))
}

/// The identity of a usage record id (see `SeenIds`).
fn id_digest(id: impl AsRef<[u8]>) -> u128 {
    xxhash_rust::xxh3::xxh3_128(id.as_ref())
}

/// §4.2: a remembered id with the same content is a duplicate, with other content a conflict.
fn dedupe(remembered: Option<&String>, digest: &str, id: &str, file: &str) -> Option<Checked<()>> {
    match remembered {
        None => None,
        Some(d) if d == digest => Some(Checked::Duplicate),
        Some(_) => Some(Checked::Refused(Refusal::new(
            Reason::ConflictingDuplicate,
            format!("{id} was already accepted in {file} with different content"),
        ))),
    }
}

/// Collects the first refusal in §14 order while a row's checks run in passes.
struct FirstReason(Option<Refusal>);

impl FirstReason {
    fn refuse(&mut self, reason: Reason, message: impl Into<String>) {
        if self.0.as_ref().is_none_or(|r| reason < r.reason) {
            self.0 = Some(Refusal::new(reason, message));
        }
    }
    fn take(&mut self) -> Option<Refusal> {
        self.0.take()
    }
}

fn timestamp(text: &str, column: &str, first: &mut FirstReason) -> Option<Ts> {
    timestamp_by(text, column, first, Ts::parse)
}

/// `timestamp`, read by `parse` (`Ts::parse`, or its cached form).
fn timestamp_by(text: &str, column: &str, first: &mut FirstReason, parse: impl FnOnce(&str) -> Option<Ts>) -> Option<Ts> {
    if text.is_empty() {
        first.refuse(Reason::BadValue, format!("{column} is empty"));
        return None;
    }
    let parsed = parse(text);
    if parsed.is_none() {
        first.refuse(Reason::BadTimestamp, format!("{column} {text:?} is not RFC 3339 with an offset"));
    }
    parsed
}

/// An 8-digit field (§1.1): scale → `bad_amount_scale`, syntax or range → `bad_value`.
fn exact8(text: &str, column: &str, first: &mut FirstReason) -> Option<Exact8> {
    if text.is_empty() {
        first.refuse(Reason::BadValue, format!("{column} is empty"));
        return None;
    }
    match Exact8::parse(text) {
        Ok(v) => Some(v),
        Err(NumberError::Scale) => {
            first.refuse(Reason::BadAmountScale, format!("{column} {text:?} has more than 8 fractional digits"));
            None
        }
        Err(e) => {
            first.refuse(Reason::BadValue, format!("{column} {text:?}: {e}"));
            None
        }
    }
}

/// A ledger-amount field: not a whole number of fen → `bad_amount_scale`.
fn ledger_amount(text: &str, column: &str, first: &mut FirstReason) -> Option<Money> {
    if text.is_empty() {
        first.refuse(Reason::BadValue, format!("{column} is empty"));
        return None;
    }
    match Money::parse(text) {
        Ok(v) => Some(v),
        Err(NumberError::Scale) => {
            first.refuse(Reason::BadAmountScale, format!("{column} {text:?} is not a whole number of fen"));
            None
        }
        Err(e) => {
            first.refuse(Reason::BadValue, format!("{column} {text:?}: {e}"));
            None
        }
    }
}

fn id(text: &str, column: &str, first: &mut FirstReason) -> Option<String> {
    id_ref(text, column, first).map(str::to_string)
}

/// `id` without copying the text (the usage path reads millions of rows).
fn id_ref<'t>(text: &'t str, column: &str, first: &mut FirstReason) -> Option<&'t str> {
    if is_valid_id(text) {
        Some(text)
    } else if text.is_empty() {
        first.refuse(Reason::BadValue, format!("{column} is empty"));
        None
    } else {
        first.refuse(Reason::BadValue, format!("{column} {text:?} is not an id of 1-64 characters [A-Za-z0-9._:-]"));
        None
    }
}

fn uin(text: &str, column: &str, first: &mut FirstReason) -> Option<Uin> {
    let parsed = parse_uin(text);
    if text.is_empty() {
        first.refuse(Reason::BadValue, format!("{column} is empty"));
    } else if parsed.is_none() {
        first.refuse(Reason::BadValue, format!("{column} {text:?} is not a UIN"));
    }
    parsed
}

fn product(text: &str, first: &mut FirstReason) -> Option<Product> {
    if is_valid_product(text) {
        Some(intern_product(text))
    } else {
        first.refuse(Reason::BadValue, format!("product {text:?} is not a product code [a-z0-9_-]{{1,32}}"));
        None
    }
}

/// The account's org must exist and have been created by `t` (reasons 11, 12).
fn account_checks(snapshot: &Snapshot, uin: Uin, column: &str, t: Ts, what: &str, first: &mut FirstReason) {
    match snapshot.find(uin) {
        None => first.refuse(Reason::UnknownAccount, format!("{column} {uin} is not an account of the snapshot")),
        Some((org, _)) if t < org.created_at => first.refuse(
            Reason::BeforeOrg,
            format!("{what} {t} is before org {} was created ({})", org.org_id, org.created_at),
        ),
        Some(_) => {}
    }
}

fn closed_and_future(ctx: &ReadContext, t: Ts, column: &str, first: &mut FirstReason) {
    if t >= ctx.day.end() {
        first.refuse(Reason::FutureTime, format!("{column} {t} is after the end of {}", ctx.day));
    }
    if (ctx.is_month_closed)(t.month()) {
        first.refuse(Reason::MonthClosed, format!("{column} {t} falls in closed month {}", t.month()));
    }
}

const USAGE_COLUMNS: Columns = Columns {
    required: &[
        "record_id", "owner_uin", "resource_id", "product", "region", "cycle", "usage_start", "usage_end",
        "quantity", "list_unit_price", "list_amount",
    ],
    optional: &[],
};

fn check_usage(f: &Fields<'_>, ctx: &ReadContext, timestamps: &mut TsCache) -> UsageCheck {
    let mut first = FirstReason(None);
    let start = timestamp_by(f.get(6), "usage_start", &mut first, |t| Ts::parse_cached(t, timestamps));
    let end = timestamp_by(f.get(7), "usage_end", &mut first, |t| Ts::parse_cached(t, timestamps));
    let quantity = exact8(f.get(8), "quantity", &mut first);
    let unit_price = exact8(f.get(9), "list_unit_price", &mut first);
    let list_amount = exact8(f.get(10), "list_amount", &mut first);
    let record_id = id_ref(f.get(0), "record_id", &mut first);
    let owner = uin(f.get(1), "owner_uin", &mut first);
    id_ref(f.get(2), "resource_id", &mut first);
    let product = product(f.get(3), &mut first);
    let region = f.get(4);
    if region.is_empty() || region.chars().count() > 32 {
        first.refuse(Reason::BadValue, format!("region {region:?} must have 1 to 32 characters"));
    }
    let cycle = Cycle::parse(f.get(5));
    if cycle.is_none() {
        first.refuse(Reason::BadValue, format!("cycle {:?} is not hourly, daily or monthly", f.get(5)));
    }
    for (value, column) in [(quantity, "quantity"), (unit_price, "list_unit_price"), (list_amount, "list_amount")] {
        if value.is_some_and(|v| v.is_negative()) {
            first.refuse(Reason::BadValue, format!("{column} is negative"));
        }
    }
    if let (Some(s), Some(e)) = (start, end) {
        if s >= e {
            first.refuse(Reason::BadValue, "usage_start is not before usage_end");
        }
    }
    if let Some(refusal) = first.take() {
        return UsageCheck::Refused(refusal);
    }
    let (record_id, owner, product, cycle, start, end) = (
        record_id.expect("checked"),
        owner.expect("checked"),
        product.expect("checked"),
        cycle.expect("checked"),
        start.expect("checked"),
        end.expect("checked"),
    );
    let (quantity, unit_price, list_amount) =
        (quantity.expect("checked"), unit_price.expect("checked"), list_amount.expect("checked"));

    let rated = Rated::product(quantity, unit_price).map(Rated::round_to_exact8_half_away_from_zero);
    if rated != Some(list_amount) {
        let expected = rated.map_or("out of range".to_string(), |r| r.to_string());
        first.refuse(
            Reason::ListAmountMismatch,
            format!("list_amount {list_amount} is not quantity × list_unit_price = {expected}"),
        );
    }
    let (period_start, period_end) = cycle.period_containing(start);
    let last_instant = period_end.pred();
    if period_end > ctx.day.end() {
        first.refuse(Reason::PeriodNotEnded, format!("the {cycle} period ending {period_end} has not ended by the end of {}", ctx.day));
    }
    if end > period_end {
        first.refuse(Reason::SpansPeriods, format!("usage_end {end} is beyond the end of its {cycle} period ({period_end})"));
    }
    if (ctx.is_month_closed)(last_instant.month()) {
        first.refuse(Reason::MonthClosed, format!("the period is billed in closed month {}", last_instant.month()));
    }
    // The account checks of `account_checks`, with one lookup for them and pricing.
    let card = ctx.snapshot.card(owner);
    match card {
        None => first.refuse(Reason::UnknownAccount, format!("owner_uin {owner} is not an account of the snapshot")),
        Some(c) if last_instant < c.org_created_at => {
            let org = &ctx.snapshot.orgs[c.org as usize];
            first.refuse(
                Reason::BeforeOrg,
                format!("the period's last instant {last_instant} is before org {} was created ({})", org.org_id, org.created_at),
            )
        }
        Some(_) => {}
    }
    if let Some(refusal) = first.take() {
        return UsageCheck::Refused(refusal);
    }

    let card = card.expect("account checked");
    let org_index = card.org as usize;
    let contract = choose_contract_by_card(
        ctx.snapshot,
        ctx.contracts,
        owner,
        card,
        || &ctx.snapshot.orgs[org_index].members[card.member as usize],
        product,
        ContractCycle::Postpaid(cycle),
        last_instant,
        period_start,
    );
    let group = price_usage(contract, quantity, list_amount).map(|priced| UsageGroup {
        list: Rated::from_exact8(list_amount),
        priced,
        records: 1,
        quantity,
        contract: contract.map(|c| c.name),
    });
    UsageCheck::Passed {
        id: id_digest(record_id),
        content: content_digest(f) as u64,
        org: org_index,
        key: GroupKey { owner_uin: owner, product, cycle, period_start },
        group,
    }
}

const ORDER_COLUMNS: Columns = Columns {
    required: &["order_id", "owner_uin", "resource_id", "product", "action", "created_at"],
    optional: &["list_amount", "refund_amount"],
};

fn check_order(f: &Fields<'_>, line: u64, ctx: &ReadContext, seen: &mut SeenIds) -> Checked<OrderRecord> {
    let mut first = FirstReason(None);
    let created_at = timestamp(f.get(5), "created_at", &mut first);
    let list_text = f.get(6);
    let refund_text = f.get(7);
    let list_amount = (!list_text.is_empty()).then(|| exact8(list_text, "list_amount", &mut first)).flatten();
    let refund_amount = (!refund_text.is_empty()).then(|| ledger_amount(refund_text, "refund_amount", &mut first)).flatten();
    let order_id = id(f.get(0), "order_id", &mut first);
    let owner = uin(f.get(1), "owner_uin", &mut first);
    let resource_id = id(f.get(2), "resource_id", &mut first);
    let product = product(f.get(3), &mut first);
    let action = OrderAction::parse(f.get(4));
    if action.is_none() {
        first.refuse(Reason::BadValue, format!("action {:?} is not new, renew, upgrade, downgrade or refund", f.get(4)));
    }
    if list_amount.is_some_and(|v| v.is_negative()) {
        first.refuse(Reason::BadValue, "list_amount is negative");
    }
    if refund_amount.is_some_and(|v| !v.is_positive()) {
        first.refuse(Reason::BadValue, "refund_amount is not positive");
    }
    if let Some(action) = action {
        let ok = if action.is_charge() {
            !list_text.is_empty() && refund_text.is_empty()
        } else {
            !refund_text.is_empty() && list_text.is_empty()
        };
        if !ok {
            first.refuse(
                Reason::BadOrderAmounts,
                if action.is_charge() {
                    "a charge order needs list_amount and no refund_amount"
                } else {
                    "a money-back order needs refund_amount and no list_amount"
                },
            );
        }
    }
    if let Some(t) = created_at {
        closed_and_future(ctx, t, "created_at", &mut first);
        if let Some(owner) = owner {
            account_checks(ctx.snapshot, owner, "owner_uin", t, "created_at", &mut first);
        }
    }
    if let Some(refusal) = first.take() {
        return Checked::Refused(refusal);
    }
    let order_id = order_id.expect("checked");
    let digest = content_digest_text(f);
    if let Some(outcome) = dedupe(seen.orders.get(&order_id), &digest, &order_id, ORDERS_FILE) {
        return map_dedupe(outcome);
    }
    seen.orders.insert(order_id.clone(), digest);
    Checked::Accepted(OrderRecord {
        line,
        order_id,
        owner_uin: owner.expect("checked"),
        resource_id: resource_id.expect("checked"),
        product: product.expect("checked"),
        action: action.expect("checked"),
        created_at: created_at.expect("checked"),
        list_amount,
        refund_amount,
    })
}

fn map_dedupe<T>(outcome: Checked<()>) -> Checked<T> {
    match outcome {
        Checked::Duplicate => Checked::Duplicate,
        Checked::Refused(r) => Checked::Refused(r),
        Checked::Accepted(()) => unreachable!("dedupe never accepts"),
    }
}

const RECHARGE_COLUMNS: Columns = Columns { required: &["recharge_id", "uin", "at", "amount"], optional: &[] };

fn check_recharge(f: &Fields<'_>, line: u64, ctx: &ReadContext, seen: &mut SeenIds) -> Checked<RechargeRecord> {
    let mut first = FirstReason(None);
    let at = timestamp(f.get(2), "at", &mut first);
    let amount = ledger_amount(f.get(3), "amount", &mut first);
    let recharge_id = id(f.get(0), "recharge_id", &mut first);
    let account = uin(f.get(1), "uin", &mut first);
    if amount.is_some_and(|a| !a.is_positive()) {
        first.refuse(Reason::BadValue, "amount is not positive");
    }
    if let Some(t) = at {
        closed_and_future(ctx, t, "at", &mut first);
        if let Some(account) = account {
            account_checks(ctx.snapshot, account, "uin", t, "at", &mut first);
        }
    }
    if let Some(refusal) = first.take() {
        return Checked::Refused(refusal);
    }
    let recharge_id = recharge_id.expect("checked");
    let digest = content_digest_text(f);
    if let Some(outcome) = dedupe(seen.recharges.get(&recharge_id), &digest, &recharge_id, RECHARGES_FILE) {
        return map_dedupe(outcome);
    }
    seen.recharges.insert(recharge_id.clone(), digest);
    Checked::Accepted(RechargeRecord {
        line,
        recharge_id,
        uin: account.expect("checked"),
        at: at.expect("checked"),
        amount: amount.expect("checked"),
    })
}

const TRANSFER_COLUMNS: Columns = Columns {
    required: &["transfer_id", "kind", "member_uin", "at", "amount"],
    optional: &["source_transfer_id"],
};

fn check_transfer(f: &Fields<'_>, line: u64, ctx: &ReadContext, seen: &mut SeenIds) -> Checked<TransferRecord> {
    let mut first = FirstReason(None);
    let at = timestamp(f.get(3), "at", &mut first);
    let transfer_id = id(f.get(0), "transfer_id", &mut first);
    let kind = match f.get(1) {
        "in" => Some(TransferKind::In),
        "out" => Some(TransferKind::Out),
        other => {
            first.refuse(Reason::BadValue, format!("kind {other:?} is neither in nor out"));
            None
        }
    };
    let member = uin(f.get(2), "member_uin", &mut first);
    // Reason 3 does not apply to transfers (§9): any plain decimal is judged later.
    let amount_text = f.get(4);
    match PlainDecimal::parse(amount_text) {
        // A number with too many decimals is still a number: judged `bad_amount` by §9.
        Ok(_) | Err(NumberError::Scale) => {}
        Err(e) => first.refuse(Reason::BadValue, format!("amount {amount_text:?}: {e}")),
    }
    let source = f.get(5);
    if !source.is_empty() && !is_valid_id(source) {
        first.refuse(Reason::BadValue, format!("source_transfer_id {source:?} is not a valid id"));
    }
    if let Some(t) = at {
        closed_and_future(ctx, t, "at", &mut first);
    }
    if let Some(refusal) = first.take() {
        return Checked::Refused(refusal);
    }
    let transfer_id = transfer_id.expect("checked");
    let digest = content_digest_text(f);
    if let Some(outcome) = dedupe(seen.transfers.get(&transfer_id), &digest, &transfer_id, TRANSFERS_FILE) {
        return map_dedupe(outcome);
    }
    seen.transfers.insert(transfer_id.clone(), digest);
    Checked::Accepted(TransferRecord {
        line,
        transfer_id,
        kind: kind.expect("checked"),
        member_uin: member.expect("checked"),
        at: at.expect("checked"),
        amount_text: amount_text.to_string(),
        amount: Money::parse(amount_text).ok(),
        source_transfer_id: (!source.is_empty()).then(|| source.to_string()),
    })
}

#[cfg(test)]
mod digest_tests {
    use super::*;
    use crate::csvread::TextRecord;

    #[test]
    fn one_shot_content_digest_equals_the_streamed_one() {
        let short = TextRecord::of(&["u-1", "100000000001", "r-1", "cvm", "ap-guangzhou", "hourly"]);
        let long_field = "x".repeat(600);
        let long = TextRecord::of(&["u-2", long_field.as_str(), "r"]);
        for record in [&short, &long] {
            let indices: Vec<Option<usize>> = (0..record.len()).map(Some).collect();
            let fields = Fields::new(record, &indices);
            assert_eq!(content_digest(&fields), content_digest_long(&fields));
        }
        // The record's own text with its commas replaced, or the fields one by
        // one (a comma inside a field, other columns, an absent column): the same digest.
        let quoted = TextRecord::of(&["u-3", "a,b", "r", ""]);
        let cases: [(&TextRecord, Vec<Option<usize>>); 5] = [
            (&short, (0..6).map(Some).collect()),
            (&quoted, (0..4).map(Some).collect()),
            (&short, vec![Some(1), Some(0), Some(2), Some(3), Some(4), Some(5)]),
            (&short, vec![Some(0), Some(1), Some(2)]),
            (&quoted, vec![Some(0), Some(1), Some(2), Some(3), None]),
        ];
        for (record, indices) in &cases {
            let fields = Fields::new(record, indices);
            assert_eq!(content_digest(&fields), content_digest_long(&fields), "{:?}", fields.all());
        }
        assert!(Fields::new(&short, &cases[0].1).unit_separated(&mut [0u8; 512]).is_some());
        assert!(Fields::new(&quoted, &cases[1].1).unit_separated(&mut [0u8; 512]).is_none());
        assert!(Fields::new(&short, &cases[2].1).unit_separated(&mut [0u8; 512]).is_none());
        // Field boundaries count: "ab","c" and "a","bc" differ.
        let (a, b) = (TextRecord::of(&["ab", "c"]), TextRecord::of(&["a", "bc"]));
        let indices = [Some(0), Some(1)];
        assert_ne!(content_digest(&Fields::new(&a, &indices)), content_digest(&Fields::new(&b, &indices)));
    }
}

#[cfg(test)]
mod line_tests {
    use super::*;

    fn key(owner_uin: Uin, product: &str, hour: i64) -> GroupKey {
        let start = Ts::parse("2026-11-01T00:00:00+08:00").unwrap();
        GroupKey { owner_uin, product: intern_product(product), cycle: Cycle::Hourly, period_start: Ts(start.0 + hour * 3_600_000_000_000) }
    }

    fn part(list: &str, quantity: &str) -> UsageGroup {
        let list = Exact8::parse(list).unwrap();
        UsageGroup { list: Rated::from_exact8(list), priced: Rated::from_exact8(list), records: 1, quantity: Exact8::parse(quantity).unwrap(), contract: None }
    }

    fn shards() -> Vec<LineShard> {
        (0..USAGE_SHARDS).map(|_| LineShard::default()).collect()
    }

    #[test]
    fn records_are_summed_into_one_line_per_key_in_their_organizations_list() {
        let mut shards = shards();
        // Shard 1 holds organizations 1, 65, 129, ...: locals 0, 1, 2.
        shards[1].add(2, key(100000000011, "cvm", 0), part("1.25", "2")).unwrap();
        shards[1].add(0, key(100000000001, "cvm", 0), part("0.10", "1")).unwrap();
        shards[1].add(2, key(100000000011, "cvm", 1), part("3", "1")).unwrap();
        shards[1].add(2, key(100000000011, "cvm", 0), part("0.00000001", "0.5")).unwrap();
        shards[3].add(0, key(100000000003, "cos", 0), part("7", "7")).unwrap();
        assert_eq!(shards[1].len(), 3);
        let orgs = lists_by_organization(&shards, 200);
        assert_eq!(orgs.len(), 200);
        let sizes: Vec<(usize, usize)> = orgs.iter().enumerate().filter(|(_, l)| !l.is_empty()).map(|(o, l)| (o, l.len())).collect();
        assert_eq!(sizes, [(1, 1), (3, 1), (129, 2)]);
        assert!(orgs.iter().all(|l| l.capacity() == l.len()), "exact lists");
        // In processing order (here also the order first seen); the first line holds
        // both of its records, exactly.
        let (first_key, first) = &orgs[129][0];
        assert_eq!(*first_key, key(100000000011, "cvm", 0));
        assert_eq!(first.records, 2);
        assert_eq!(first.list, Rated::from_exact8(Exact8::parse("1.25000001").unwrap()));
        assert_eq!(first.quantity, Exact8::parse("2.5").unwrap());
        assert_eq!(orgs[129][1].0, key(100000000011, "cvm", 1));
        assert_eq!(orgs[1][0].1.list, Rated::from_exact8(Exact8::parse("0.10").unwrap()));
    }

    #[test]
    fn lines_beyond_one_segment_are_each_found_and_handed_back_in_order() {
        let mut shards = shards();
        let n = 3 * LINE_SEGMENT as i64 + 5;
        // Two organizations of shard 0 (0 and 64) interleaved, every line added twice.
        for round in 0..2 {
            for h in 0..n {
                let (local, uin) = if h % 3 == 0 { (1, 100000000064) } else { (0, 100000000001) };
                shards[0].add(local, key(uin, "cvm", h), part(if round == 0 { "1" } else { "0.5" }, "1")).unwrap();
            }
        }
        assert_eq!(shards[0].len(), n as usize);
        assert_eq!(shards[0].segments.len(), 4);
        let orgs = lists_by_organization(&shards, 65);
        let expect = |uin: Uin, every: &dyn Fn(i64) -> bool| -> Vec<GroupKey> { (0..n).filter(|h| every(*h)).map(|h| key(uin, "cvm", h)).collect() };
        let keys = |o: usize| -> Vec<GroupKey> { orgs[o].iter().map(|(k, _)| k.clone()).collect() };
        assert_eq!(keys(64), expect(100000000064, &|h| h % 3 == 0));
        assert_eq!(keys(0), expect(100000000001, &|h| h % 3 != 0));
        let one_and_a_half = Rated::from_exact8(Exact8::parse("1.5").unwrap());
        assert!(orgs[0].iter().chain(&orgs[64]).all(|(_, g)| g.records == 2 && g.list == one_and_a_half));
    }

    #[test]
    fn records_added_in_a_run_give_the_lines_of_adding_them_one_by_one_and_stop_at_an_overflow() {
        // Enough lines for the table to grow several times while prefetching ahead,
        // each line met three times, in an order that mixes them.
        let records: Vec<AcceptedUsage> = (0..3 * 5000u64)
            .map(|i| {
                let line = (i * 7919) % 5000;
                ((line % 3) as usize, key(100000000000 + line % 97, "cvm", (line / 97) as i64), part("0.01", "1"), i + 2)
            })
            .collect();
        let refs: Vec<&AcceptedUsage> = records.iter().collect();
        let (mut in_a_run, mut one_by_one) = (LineShard::default(), LineShard::default());
        assert_eq!(in_a_run.add_all(&refs), None);
        for (local, k, group, _) in &records {
            one_by_one.add(*local, k.clone(), group.clone()).unwrap();
        }
        assert_eq!(in_a_run.len(), 5000);
        assert!(in_a_run.slots.len() >= 5000 * 4 / 3 && in_a_run.slots.len().is_power_of_two());
        let lines = |s: &LineShard| s.segments.concat();
        assert_eq!(lines(&in_a_run), lines(&one_by_one));
        assert_eq!(in_a_run.org_of, one_by_one.org_of);
        assert!(lines(&in_a_run).iter().all(|(_, g)| g.records == 3));

        // The record that overflows is reported by its file line; none after it is added.
        let huge = UsageGroup { list: Rated::from_exact8(Exact8(i128::MAX / 300_000_000)), ..part("1", "1") };
        let mut run: Vec<AcceptedUsage> = (0..4).map(|i| (0, key(100000000001, "cos", 0), huge.clone(), 10 + i)).collect();
        run.push((0, key(100000000002, "cos", 0), part("1", "1"), 20));
        let mut shard = LineShard::default();
        assert_eq!(shard.add_all(&run.iter().collect::<Vec<_>>()), Some(13));
        assert_eq!(shard.len(), 1);
        assert_eq!(shard.segments[0][0].1.records, 3);
    }

    #[test]
    fn two_keys_with_one_tag_are_two_lines() {
        // Two keys whose hashes share their top 32 bits, found by a birthday search
        // over keys of scattered owners and hours.
        let scattered = |i: u64| {
            let x = xxhash_rust::xxh3::xxh3_64(&i.to_le_bytes());
            key(100000000000 + x % 1_000_000_000, "cvm", ((x >> 40) % 10_000) as i64)
        };
        let mut by_tag = std::collections::HashMap::new();
        let (a, b) = (0..1_000_000u64)
            .find_map(|i| by_tag.insert(LineShard::key_tag(&scattered(i)), i).map(|earlier| (scattered(earlier), scattered(i))))
            .expect("a shared tag among a million keys");
        assert_ne!(a, b);
        let mut shard = LineShard::default();
        for (k, list) in [(&a, "1"), (&b, "2"), (&a, "3"), (&b, "4")] {
            shard.add(0, k.clone(), part(list, "1")).unwrap();
        }
        assert_eq!(shard.len(), 2);
        let lists: Vec<(GroupKey, Rated)> = shard.segments[0].iter().map(|(k, g)| (k.clone(), g.list)).collect();
        let rated = |t: &str| Rated::from_exact8(Exact8::parse(t).unwrap());
        assert_eq!(lists, [(a, rated("4")), (b, rated("6"))]);
    }

    #[test]
    fn a_sum_beyond_the_exact_range_is_an_error_not_a_wrapped_amount() {
        let mut shard = LineShard::default();
        // A third of what a rated amount can hold: the fourth record cannot be added.
        let huge = UsageGroup { list: Rated::from_exact8(Exact8(i128::MAX / 300_000_000)), ..part("1", "1") };
        for _ in 0..3 {
            assert_eq!(shard.add(0, key(100000000001, "cos", 0), huge.clone()), Ok(()));
        }
        assert_eq!(shard.add(0, key(100000000001, "cos", 0), huge.clone()), Err(()));
    }
}
