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
use crate::reject::{Reason, Refusal, Reject, RejectSpill};
use crate::snapshot::{AccountCard, Snapshot};
use crate::state::{usage_key, ContentDigest, SeenIds, Text, UsageIds, WantedIds, ID_SHARDS};
use crate::spill::{EncodedRows, SpilledRow, UsageSpill};
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
    pub orders: Vec<OrderRecord>,
    pub recharges: Vec<RechargeRecord>,
    pub transfers: Vec<TransferRecord>,
    /// Every reject but usage.csv's as reading decided them, and those of
    /// usage.csv decided once the day was read (`apply_duplicates`).
    pub rejects: Vec<Reject>,
    /// usage.csv's rejects as reading decided them, in file order (beyond the
    /// first thousands, written aside).
    pub usage_rejects: RejectSpill,
    pub counts: BTreeMap<&'static str, FileCounts>,
}

/// The outcome of checking one row.
enum Checked<T> {
    Accepted(T),
    Duplicate,
    Refused(Refusal),
}

/// Read the four files of `dir` (a `days/D` folder; absent files have no rows);
/// the accepted usage rows go to `usage` (which keeps a failure to write them for
/// `UsageSpill::finish`).
pub fn read_day(dir: &Path, ctx: &ReadContext, seen: &mut SeenIds, usage: &mut UsageSpill) -> Result<DayInput, UnusableFile> {
    let mut input = read_day_usage(dir, ctx, seen, usage)?;
    read_day_records(dir, ctx, seen, &mut input)?;
    Ok(input)
}

/// The first part of `read_day`: the usage file, whose accepted rows go to
/// `usage`. Needs none of the order, recharge and transfer ids `seen` remembers.
pub fn read_day_usage(dir: &Path, ctx: &ReadContext, seen: &mut SeenIds, usage: &mut UsageSpill) -> Result<DayInput, UnusableFile> {
    let mut input = DayInput { usage_rejects: RejectSpill::new(USAGE_FILE, usage.dir()), ..DayInput::default() };
    let month = ctx.day.month();
    // Usage ids are remembered for the month of their run and the month after (§4.2).
    seen.usage.retain_days(|d| d.month() >= month.prev());
    seen.usage_files.retain(|d, _| d.month() >= month.prev());

    read_usage(dir, ctx, seen, usage, &mut input)?;
    Ok(input)
}

/// The rest of `read_day`: orders, recharges and transfers, checked against
/// the ids `seen` remembers (which it must hold: `SeenIds::holds_records`).
pub fn read_day_records(dir: &Path, ctx: &ReadContext, seen: &mut SeenIds, input: &mut DayInput) -> Result<(), UnusableFile> {
    read_file(dir, ORDERS_FILE, &ORDER_COLUMNS, "order_id", input, |fields, line, input| {
        Ok(match check_order(fields, line, ctx, seen) {
            Checked::Accepted(order) => {
                input.orders.push(order);
                Checked::Accepted(())
            }
            Checked::Duplicate => Checked::Duplicate,
            Checked::Refused(r) => Checked::Refused(r),
        })
    })?;
    read_file(dir, RECHARGES_FILE, &RECHARGE_COLUMNS, "recharge_id", input, |fields, line, input| {
        Ok(match check_recharge(fields, line, ctx, seen) {
            Checked::Accepted(recharge) => {
                input.recharges.push(recharge);
                Checked::Accepted(())
            }
            Checked::Duplicate => Checked::Duplicate,
            Checked::Refused(r) => Checked::Refused(r),
        })
    })?;
    read_file(dir, TRANSFERS_FILE, &TRANSFER_COLUMNS, "transfer_id", input, |fields, line, input| {
        Ok(match check_transfer(fields, line, ctx, seen) {
            Checked::Accepted(transfer) => {
                input.transfers.push(transfer);
                Checked::Accepted(())
            }
            Checked::Duplicate => Checked::Duplicate,
            Checked::Refused(r) => Checked::Refused(r),
        })
    })
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

/// Usage rows are read and checked in batches of this many. Three batches are in
/// flight at once (`read_usage`); at 32k rows a batch they held ~18 MB more
/// than two did, and took a 10M-row day's peak past 250 MB.
const USAGE_BATCH: usize = 1 << 14;

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
/// bytes), to size the Bloom filters of the day's ids once.
pub fn usage_ids_hint(dir: &Path) -> usize {
    let size = std::fs::metadata(dir.join(USAGE_FILE)).map(|m| m.len()).unwrap_or(0);
    (size / 140) as usize
}

/// The keys (`state::usage_key`) of the digests of the `record_id` of every
/// record of `dir`'s `usage.csv`, for `Store::load_for` to keep only the
/// remembered ids the day can look up: a superset of those `read_usage` looks up
/// (it digests the same field of the same records, and only of those that pass
/// their checks). `None` when the
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
        if let Ok(Some(keys)) = crate::csvread::plain_column(&path, column, |field| usage_key(id_digest(field))) {
            return Some(WantedIds::new(keys));
        }
    }
    let mut keys: Vec<u64> = Vec::with_capacity(usage_ids_hint(dir) + USAGE_BATCH);
    let (mut current, mut next) = (Vec::new(), Vec::new());
    reader.next_batch(&mut current, USAGE_BATCH).ok()?;
    while !current.is_empty() {
        let (more, batch_keys) = rayon::join(
            || reader.next_batch(&mut next, USAGE_BATCH),
            || -> Vec<u64> {
                current
                    .par_iter()
                    .filter_map(|row| match row {
                        RawRow::Record { record, .. } => Some(usage_key(id_digest(Fields::new(record, &indices).get(0)))),
                        RawRow::Bad { .. } => None,
                    })
                    .collect()
            },
        );
        more.ok()?;
        keys.extend(batch_keys);
        std::mem::swap(&mut current, &mut next);
    }
    Some(WantedIds::new(keys))
}

/// Read `usage.csv` in batches, three at a time in flight: while batch i+2 is
/// read, batch i+1's rows are checked (in parallel: a check needs only the row
/// and the reference data) and batch i's ids are looked up (one remembered from
/// an earlier day decides its row; the day's own are noted, their repeats
/// decided once the day is read), its rows classified and handed to the spill,
/// in file order. The checks of the next batch fill the cores the phases of
/// the current one leave idle at their ends (each ends at a barrier).
fn read_usage(dir: &Path, ctx: &ReadContext, seen: &mut SeenIds, usage: &mut UsageSpill, input: &mut DayInput) -> Result<(), UnusableFile> {
    let mut counts = FileCounts::default();
    let Some(mut reader) = RowReader::open(&dir.join(USAGE_FILE), USAGE_FILE, &USAGE_COLUMNS, Some("record_id"))? else {
        input.counts.insert(USAGE_FILE, counts);
        return Ok(());
    };
    counts.present = true;
    // The Bloom filters of the day's ids sized for them up front.
    usage.expect_ids(usage_ids_hint(dir));
    let indices = reader.indices().to_vec();
    let (mut current, mut next, mut after) = (Vec::new(), Vec::new(), Vec::new());
    reader.next_batch(&mut current, USAGE_BATCH)?;
    let (more, mut checks) = rayon::join(|| reader.next_batch(&mut next, USAGE_BATCH), || check_usage_batch(&current, &indices, ctx));
    more?;
    while !current.is_empty() {
        let mut writes = usage.take_writes();
        let (more, (settled, next_checks)) = rayon::join(
            || {
                // The spill's buffers the last batch filled are written here, off
                // the path the batch's checks wait on (`SpillWrites`).
                writes.write();
                reader.next_batch(&mut after, USAGE_BATCH)
            },
            || {
                rayon::join(
                    || settle_usage_batch(&current, checks, &indices, seen, usage, input, &mut counts),
                    || check_usage_batch(&next, &indices, ctx),
                )
            },
        );
        usage.written(writes);
        settled?;
        more?;
        checks = next_checks;
        std::mem::swap(&mut current, &mut next);
        std::mem::swap(&mut next, &mut after);
    }
    input.counts.insert(USAGE_FILE, counts);
    Ok(())
}

/// The checks of a batch's rows that need nothing but the row and the reference
/// data, on all cores (`None` for a row that is not a record).
fn check_usage_batch<'s>(batch: &[RawRow], indices: &[Option<usize>], ctx: &ReadContext<'s>) -> Vec<Option<UsageCheck>> {
    batch
        .par_iter()
        .map_init(RowCache::default, |cache, row| match row {
            RawRow::Record { record, .. } => Some(check_usage(&Fields::new(record, indices), ctx, cache)),
            RawRow::Bad { .. } => None,
        })
        .collect()
}

/// The rest of a batch once its rows are checked (`checks`): duplicates against
/// the remembered ids and the day's, each row's outcome, the accepted rows to
/// the spill, all in file order.
fn settle_usage_batch(
    batch: &[RawRow],
    checks: Vec<Option<UsageCheck>>,
    indices: &[Option<usize>],
    seen: &mut SeenIds,
    usage: &mut UsageSpill,
    input: &mut DayInput,
    counts: &mut FileCounts,
) -> Result<(), UnusableFile> {
    // Duplicates (§4.2), decided per id shard in parallel, in file order within a
    // shard. Each passed row's id, content digest and file line are gathered per
    // shard first, a stretch of the batch per task (read in order, the stretches
    // then joined per shard in order): deciding a shard then reads its own list
    // rather than every 64th row of the batch's checks and rows.
    let gathered: Vec<Vec<Vec<Noted>>> = checks
        .par_chunks(GATHER_ROWS)
        .zip(batch.par_chunks(GATHER_ROWS))
        .enumerate()
        .map(|(c, (checks, rows))| {
            let mut by_shard: Vec<Vec<Noted>> = (0..ID_SHARDS).map(|_| Vec::new()).collect();
            for (j, (check, row)) in checks.iter().zip(rows).enumerate() {
                if let (Some(UsageCheck::Passed { id, content, .. }), RawRow::Record { line, .. }) = (check, row) {
                    by_shard[UsageIds::shard_of(*id)].push(Noted { id: *id, content: *content, line: *line, row: (c * GATHER_ROWS + j) as u32 });
                }
            }
            by_shard
        })
        .collect();
    // An id remembered from an earlier day decides here; any other is taken as the
    // day's first for now, and noted with its row in its shard of the spill:
    // repeats within the day are decided once it is read (`UsageSpill::dedupe_shard`).
    let verdicts: Vec<Vec<(u32, Seen)>> = seen
        .usage
        .remembered_shards()
        .par_iter()
        .zip(usage.id_shards_mut().par_iter_mut())
        .enumerate()
        .map(|(s, (remembered, shard))| {
            let rows: Vec<&Noted> = gathered.iter().flat_map(|stretch| &stretch[s]).collect();
            shard.reserve(rows.len());
            (0..rows.len())
                .map(|k| {
                    // The filter blocks of the ids a few rows on (the remembered
                    // ids' and the day's) are asked for now:
                    // their cache misses overlap this row's (`memory::prefetch`).
                    if let Some(ahead) = rows.get(k + PREFETCH_AHEAD) {
                        remembered.prefetch(ahead.id);
                        shard.prefetch(ahead.id);
                    }
                    let &Noted { id, content, line, row } = rows[k];
                    if let Some(earlier) = remembered.get(id) {
                        return (row, if earlier.content == content { Seen::Same } else { Seen::Different });
                    }
                    let text = || match &batch[row as usize] {
                        RawRow::Record { record, .. } => Fields::new(record, indices).get(0).to_string(),
                        RawRow::Bad { .. } => unreachable!("passed rows are records"),
                    };
                    shard.note(id, content, line, text);
                    (row, Seen::New)
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
    let mut parts: Vec<BatchPart> = checks
        .par_chunks_mut(ROWS_PER_PART)
        .zip(batch.par_chunks(ROWS_PER_PART))
        .zip(seen_as.par_chunks(ROWS_PER_PART))
        .map(|((checks, rows), seen_as)| classify_usage_rows(rows, checks, seen_as, indices, usage))
        .collect();
    // The parts' accepted rows are handed to the spill as they are (joined into
    // one list they were copied, on one core).
    let mut accepted = Vec::with_capacity(parts.len());
    for part in &mut parts {
        counts.rows += part.counts.rows;
        counts.accepted += part.counts.accepted;
        counts.duplicates += part.counts.duplicates;
        counts.rejected += part.counts.rejected;
        // A row refused for its priced amount may turn out a duplicate or a
        // conflict once the day is read (`apply_duplicates`): held, to be revised.
        for reject in part.rejects.drain(..) {
            if reject.message == PRICED_BEYOND_RANGE {
                input.rejects.push(reject);
            } else {
                input.usage_rejects.push(reject);
            }
        }
        accepted.push(&part.accepted);
    }
    // In file order: each part of the spill keeps its rows in file order.
    usage.add_encoded(&accepted);
    Ok(())
}

/// The usage rows found, once the day was read, to repeat an id an earlier row of
/// the day had (`later`: file line, and whether the content is the same; each
/// was taken as its id's first while reading), counted and refused as reading in
/// file order with every earlier id at hand decides them (§4.2, §14): an exact
/// repeat is a duplicate, another a `conflicting_duplicate` reject naming the id
/// (`texts`: the id text of every such row). A row refused while reading because
/// its priced amount left the engine's range is a duplicate or a conflict
/// instead (§14: the duplicate check precedes it). Returns the file lines of the
/// rows that were taken as accepted: their sums must leave their lines.
pub fn apply_duplicates(input: &mut DayInput, later: &[(u64, bool)], texts: &rustc_hash::FxHashMap<u64, String>) -> Result<Vec<u64>, String> {
    if later.is_empty() {
        return Ok(Vec::new());
    }
    let refused: rustc_hash::FxHashMap<u64, usize> = input
        .rejects
        .iter()
        .enumerate()
        .filter(|(_, r)| r.file == USAGE_FILE && r.reason == Reason::BadValue && r.message == PRICED_BEYOND_RANGE)
        .map(|(i, r)| (r.line, i))
        .collect();
    let counts = input.counts.get_mut(USAGE_FILE).expect("usage rows were read");
    let mut accepted_lines = Vec::new();
    let mut dropped = Vec::new();
    for &(line, same) in later {
        let conflict = || -> Result<Reject, String> {
            let id = texts.get(&line).ok_or_else(|| format!("{USAGE_FILE} line {line}: the id of a repeated record was not kept"))?;
            Ok(Reject {
                file: USAGE_FILE,
                line,
                id: id.clone(),
                reason: Reason::ConflictingDuplicate,
                message: format!("{id} was already accepted in {USAGE_FILE} with different content"),
            })
        };
        match refused.get(&line) {
            Some(&i) if same => {
                counts.rejected -= 1;
                counts.duplicates += 1;
                dropped.push(i);
            }
            Some(&i) => input.rejects[i] = conflict()?,
            None => {
                counts.accepted -= 1;
                accepted_lines.push(line);
                if same {
                    counts.duplicates += 1;
                } else {
                    counts.rejected += 1;
                    input.rejects.push(conflict()?);
                }
            }
        }
    }
    if !dropped.is_empty() {
        let dropped: std::collections::BTreeSet<usize> = dropped.into_iter().collect();
        let mut i = 0;
        input.rejects.retain(|_| {
            i += 1;
            !dropped.contains(&(i - 1))
        });
    }
    Ok(accepted_lines)
}

/// Why a usage row whose priced amount leaves the engine's exact range is refused.
const PRICED_BEYOND_RANGE: &str = "the priced amount exceeds the engine's exact range";

/// How many rows ahead the id lookups of a shard prefetch their slots.
const PREFETCH_AHEAD: usize = 8;

/// A passed usage row as its id shard decides it: its id, content digest, file
/// line and place in its batch.
struct Noted {
    id: u128,
    content: u64,
    line: u64,
    row: u32,
}

/// How many rows of a batch a task gathers per id shard (`settle_usage_batch`).
const GATHER_ROWS: usize = 4096;

/// Rows of a batch classified by one task (see `settle_usage_batch`).
const ROWS_PER_PART: usize = 4096;

/// The outcome of a part of a batch: its counts, its rejects in file order, and
/// its accepted rows in file order, encoded for the spill.
struct BatchPart {
    counts: FileCounts,
    rejects: Vec<Reject>,
    accepted: EncodedRows,
}

fn classify_usage_rows(rows: &[RawRow], checks: &mut [Option<UsageCheck>], seen_as: &[Seen], indices: &[Option<usize>], usage: &UsageSpill) -> BatchPart {
    let mut part = BatchPart {
        counts: FileCounts::default(),
        rejects: Vec::new(),
        // Nearly every row is accepted (grown row by row, the list was copied at
        // each doubling: ~0.6% of a 10M-row day's CPU).
        accepted: EncodedRows::with_room(rows.len()),
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
                        usage.encode(&SpilledRow { line, org, part: usage.part_of(&key), key, group }, &mut part.accepted);
                        None
                    }
                    // Reachable only with absurd contract prices: refuse the row rather than round.
                    None => Some(Refusal::new(Reason::BadValue, PRICED_BEYOND_RANGE)),
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
    content_digest_in(fields, &mut [0u8; CONTENT_BYTES])
}

/// Bytes of the fields' text a digest is made from in one call (a longer row's is
/// streamed, `content_digest_long`).
const CONTENT_BYTES: usize = 512;

/// `content_digest`, built in `buffer` (of `CONTENT_BYTES`; what it held is no
/// matter): a usage row's task reuses one, as zeroing a fresh one for each of
/// 10M rows took ~0.5% of the day.
fn content_digest_in(fields: &Fields<'_>, buffer: &mut [u8]) -> u128 {
    // Nearly always: the record's own text with its commas replaced.
    if let Some(len) = fields.unit_separated(buffer) {
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


/// The identity of a usage record id (see `SeenIds`).
fn id_digest(id: impl AsRef<[u8]>) -> u128 {
    xxhash_rust::xxh3::xxh3_128(id.as_ref())
}

/// §4.2: a remembered id with the same content is a duplicate, with other content a conflict.
fn dedupe(remembered: Option<&ContentDigest>, digest: ContentDigest, id: &str, file: &str) -> Option<Checked<()>> {
    match remembered {
        None => None,
        Some(d) if *d == digest => Some(Checked::Duplicate),
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

/// What one task checking usage rows keeps from row to row: the timestamps it
/// parsed, and the last row's product code and account card. A file's rows come
/// grouped by resource (one record per resource per settlement period), so
/// consecutive rows nearly always share both; a hit gives exactly what the
/// lookup would (the text is compared whole, the owner exactly).
#[derive(Default)]
struct RowCache<'s> {
    timestamps: TsCache,
    product: Option<Product>,
    card: Option<(Uin, &'s AccountCard)>,
    /// Where a row's content digest is built (`content_digest_in`).
    content: Vec<u8>,
    /// The bill month of the last row's period, and whether it is closed.
    month: crate::time::MonthOf,
    closed: bool,
}

fn check_usage<'s>(f: &Fields<'_>, ctx: &ReadContext<'s>, cache: &mut RowCache<'s>) -> UsageCheck {
    let mut first = FirstReason(None);
    let timestamps = &mut cache.timestamps;
    let start = timestamp_by(f.get(6), "usage_start", &mut first, |t| Ts::parse_cached(t, timestamps));
    let end = timestamp_by(f.get(7), "usage_end", &mut first, |t| Ts::parse_cached(t, timestamps));
    let quantity = exact8(f.get(8), "quantity", &mut first);
    let unit_price = exact8(f.get(9), "list_unit_price", &mut first);
    let list_amount = exact8(f.get(10), "list_amount", &mut first);
    let record_id = id_ref(f.get(0), "record_id", &mut first);
    let owner = uin(f.get(1), "owner_uin", &mut first);
    id_ref(f.get(2), "resource_id", &mut first);
    let product = match cache.product {
        Some(last) if last.as_str() == f.get(3) => Some(last),
        _ => product(f.get(3), &mut first),
    };
    if product.is_some() {
        cache.product = product;
    }
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
    let (bill_month, changed) = cache.month.month(last_instant);
    if changed {
        cache.closed = (ctx.is_month_closed)(bill_month);
    }
    if cache.closed {
        first.refuse(Reason::MonthClosed, format!("the period is billed in closed month {bill_month}"));
    }
    // The account checks of `account_checks`, with one lookup for them and pricing.
    let card = match cache.card {
        Some((uin, card)) if uin == owner => Some(card),
        _ => ctx.snapshot.card(owner),
    };
    if let Some(card) = card {
        cache.card = Some((owner, card));
    }
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
        content: {
            cache.content.resize(CONTENT_BYTES, 0);
            content_digest_in(f, &mut cache.content) as u64
        },
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
    let digest = ContentDigest(content_digest(f));
    if let Some(outcome) = dedupe(seen.orders.get(order_id.as_str()), digest, &order_id, ORDERS_FILE) {
        return map_dedupe(outcome);
    }
    seen.orders.insert(Text::from(order_id.as_str()), digest);
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
    let digest = ContentDigest(content_digest(f));
    if let Some(outcome) = dedupe(seen.recharges.get(recharge_id.as_str()), digest, &recharge_id, RECHARGES_FILE) {
        return map_dedupe(outcome);
    }
    seen.recharges.insert(Text::from(recharge_id.as_str()), digest);
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
    let digest = ContentDigest(content_digest(f));
    if let Some(outcome) = dedupe(seen.transfers.get(transfer_id.as_str()), digest, &transfer_id, TRANSFERS_FILE) {
        return map_dedupe(outcome);
    }
    seen.transfers.insert(Text::from(transfer_id.as_str()), digest);
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
mod duplicate_tests {
    use super::*;

    #[test]
    fn the_days_later_rows_of_an_id_become_duplicates_and_conflicts_as_read_in_order() {
        let reject = |line: u64, reason: Reason, message: &str| Reject { file: USAGE_FILE, line, id: format!("u{line}"), reason, message: message.into() };
        // Lines 2-4 taken as accepted; 5 and 6 refused for their priced amount; 7 refused
        // before the duplicate check (a bad timestamp); an order's reject beside them.
        let mut input = DayInput {
            rejects: vec![
                reject(5, Reason::BadValue, PRICED_BEYOND_RANGE),
                reject(6, Reason::BadValue, PRICED_BEYOND_RANGE),
                reject(7, Reason::BadTimestamp, "no offset"),
                Reject { file: ORDERS_FILE, line: 2, id: "o1".into(), reason: Reason::BadValue, message: "x".into() },
            ],
            ..DayInput::default()
        };
        input.counts.insert(USAGE_FILE, FileCounts { present: true, rows: 6, accepted: 3, duplicates: 0, rejected: 3 });
        let texts: rustc_hash::FxHashMap<u64, String> = [3, 4, 5, 6, 8].into_iter().map(|l| (l, format!("u{l}"))).collect();
        // 3 repeats its id's first exactly, 4 with other content; so do 5 and 6.
        let later = [(3, true), (4, false), (5, true), (6, false)];
        let lines = apply_duplicates(&mut input, &later, &texts).unwrap();
        assert_eq!(lines, [3, 4], "the rows taken as accepted leave their lines");
        assert_eq!(input.counts[USAGE_FILE], FileCounts { present: true, rows: 6, accepted: 1, duplicates: 2, rejected: 3 });
        let conflict = |line: u64| {
            let id = format!("u{line}");
            Reject { file: USAGE_FILE, line, message: format!("{id} was already accepted in usage.csv with different content"), id, reason: Reason::ConflictingDuplicate }
        };
        // Line 5's reject is gone, line 6's is a conflict now, line 4's is new.
        let mut rejects = input.rejects.clone();
        rejects.sort();
        let order = Reject { file: ORDERS_FILE, line: 2, id: "o1".into(), reason: Reason::BadValue, message: "x".into() };
        assert_eq!(rejects, [order, conflict(4), conflict(6), reject(7, Reason::BadTimestamp, "no offset")]);
        // A later row whose id text was not kept is an internal error, not a guess.
        let mut other = DayInput::default();
        other.counts.insert(USAGE_FILE, FileCounts { present: true, rows: 2, accepted: 2, ..FileCounts::default() });
        assert!(apply_duplicates(&mut other, &[(9, false)], &texts).is_err());
    }
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
        // A reused buffer's earlier bytes are no matter: the digest is the fresh one's.
        let mut reused = vec![0xaa; CONTENT_BYTES];
        for (record, indices) in cases.iter().rev().chain(&cases) {
            let fields = Fields::new(record, indices);
            assert_eq!(content_digest_in(&fields, &mut reused), content_digest_long(&fields), "{:?}", fields.all());
        }
    }
}
