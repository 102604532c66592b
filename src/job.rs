//! The jobs behind the commands (SPEC §12, §13): load the input once, settle days
//! in order from the committed state, check the books, publish atomically.
//!
//! Invariant: nothing reaches the output directory until every check of the day
//! has passed; a refused or failed run leaves the output directory as it was.

use crate::engine::{orphan_transfer, Event, EventKey, KeyedLine, LedgerLine, OrgBooks, OrgOutput, PendingEvents, ServiceEvent, TransferRow};
use crate::ids::Uin;
use crate::ingest::{read_day, read_day_records, read_day_usage, DayInput, FileCounts, ReadContext, DAY_FILES, ORDERS_FILE};
use crate::money::Money;
use crate::reference::Reference;
use crate::reject::Reject;
use crate::{focus, reports};
use crate::settlement::VoucherBalance;
use crate::snapshot::Snapshot;
use crate::state::{AccountState, SeenIds, State, STATE_FORMAT};
use crate::store::{Body, OutFile, Store};
use crate::time::{Day, Month};
use rayon::prelude::*;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Why a job did not finish; each maps to an exit code (SPEC §13).
#[derive(Debug, thiserror::Error)]
pub enum Failure {
    /// Unusable input: every problem found (exit 2).
    #[error("unusable input:\n  {}", .0.join("\n  "))]
    Unusable(Vec<String>),
    /// A run the state does not allow (exit 2).
    #[error("refused: {0}")]
    Refused(String),
    /// A broken invariant or an I/O failure (exit 1).
    #[error("internal error: {0}")]
    Internal(String),
}

impl Failure {
    pub fn exit_code(&self) -> i32 {
        match self {
            Failure::Unusable(_) | Failure::Refused(_) => 2,
            Failure::Internal(_) => 1,
        }
    }
}

/// How a job reports progress, and what it writes besides the CSV files.
#[derive(Clone, Copy, Debug, Default)]
pub struct Options {
    pub quiet: bool,
    /// Also write Parquet copies of the ledger, merged bill and FOCUS files.
    pub parquet: bool,
    /// About how many usage rows a run of a day holds (`RUN_ROWS` when None). It
    /// decides only how much is held at once, never an output: the tests settle
    /// days a part of the spill at a time and compare.
    pub run_rows: Option<u64>,
    /// The process exits as soon as the job returns (set by the binary): a daily
    /// run's inputs and its result are then left to the exit, which frees them at
    /// once, rather than freed piece by piece on one core (~20–25 ms of a day of
    /// 100k accounts; BENCHMARKS.md). Off for the tests and any other caller.
    pub exits_after: bool,
}

/// Add `NAME.parquet` beside `NAME.csv` for each named CSV file, when asked to.
fn with_parquet<'a>(mut files: Vec<OutFile<'a>>, names: &[(&'static str, &'static str)], opts: Options) -> Result<Vec<OutFile<'a>>, Failure> {
    if !opts.parquet {
        return Ok(files);
    }
    #[cfg(feature = "parquet")]
    {
        for (csv_name, parquet_name) in names {
            files.push((parquet_name, Body::Derived { from: csv_name, convert: crate::parquet::csv_to_parquet }));
        }
        Ok(files)
    }
    #[cfg(not(feature = "parquet"))]
    {
        let _ = (names, &mut files);
        Err(Failure::Refused("this build has no Parquet support: build with the default `parquet` feature".into()))
    }
}

/// Everything under INPUT that does not change from day to day.
pub struct Inputs {
    pub dir: PathBuf,
    pub snapshot: Snapshot,
    pub reference: Reference,
    /// The folders under `days/`.
    pub days: BTreeSet<Day>,
}

impl Inputs {
    pub fn load(dir: &Path) -> Result<Inputs, Failure> {
        let mut t = Stopwatch::start();
        let snapshot = Snapshot::load(&dir.join("org.json")).map_err(Failure::Unusable)?;
        stage("  snapshot", &mut t);
        let mut problems = Vec::new();
        let reference = match Reference::load(dir, &snapshot) {
            Ok(r) => Some(r),
            Err(p) => {
                problems.extend(p);
                None
            }
        };
        let days = match day_folders(dir) {
            Ok(d) => d,
            Err(p) => {
                problems.extend(p);
                BTreeSet::new()
            }
        };
        match reference {
            Some(reference) if problems.is_empty() => Ok(Inputs { dir: dir.to_path_buf(), snapshot, reference, days }),
            _ => Err(Failure::Unusable(problems)),
        }
    }
}

fn day_folders(dir: &Path) -> Result<BTreeSet<Day>, Vec<String>> {
    let days_dir = dir.join("days");
    let mut days = BTreeSet::new();
    let mut problems = Vec::new();
    let entries = match std::fs::read_dir(&days_dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(days),
        Err(e) => return Err(vec![format!("days/: cannot list: {e}")]),
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().to_string();
        if !entry.path().is_dir() {
            // Only folders are days (SPEC §2); a stray file is not a day and is ignored.
            continue;
        }
        match Day::parse(&name) {
            Some(d) => {
                days.insert(d);
            }
            None => problems.push(format!("days/{name}: not a day folder named YYYY-MM-DD")),
        }
    }
    problems.sort();
    if problems.is_empty() {
        Ok(days)
    } else {
        Err(problems)
    }
}

/// What one settled day produced but the ledger and its FOCUS rows, which are
/// streamed as its lines are settled (`settle_day`).
pub struct DayResult {
    pub state: State,
    /// How many lines the ledger has.
    pub ledger_lines: u64,
    pub events: Vec<ServiceEvent>,
    pub transfers: Vec<TransferRow>,
    /// The rejects of every file by file and line, but those of usage.csv that
    /// reading decided, which are in `usage_rejects` (rejects.csv merges them).
    pub rejects: Vec<Reject>,
    pub usage_rejects: crate::reject::RejectSpill,
    /// What the day appended to each bill month's FOCUS rows, months ascending.
    pub focus_rows: Vec<focus::MonthRows>,
    /// The day's sums ready to fold into the months they reach, and its own
    /// month's self-paid totals (`Store::fold_months`): the month files are
    /// written from them, the month-to-date overview drawn.
    pub month_folds: BTreeMap<Month, crate::monthly::MonthFold>,
}

/// What the books check of a settled day (`DayResult::check`) compares its rows
/// with: the state the day started from, its ledger's sums, its recharges and its
/// files' counts.
pub struct Unchecked {
    base: State,
    ledger: crate::checks::LedgerTotals,
    vouchers: crate::checks::VoucherTotals,
    recharges: Vec<crate::ingest::RechargeRecord>,
    counts: BTreeMap<&'static str, FileCounts>,
}

impl DayResult {
    /// The books check of the day's rows against the state it started from, and
    /// the day's summary (SPEC §11.2) when it passes.
    pub fn check(&self, inputs: &Inputs, day: Day, unchecked: Unchecked) -> Result<serde_json::Value, Failure> {
        let Unchecked { base, ledger, vouchers, recharges, counts } = unchecked;
        let summary = crate::checks::check_and_summarize(day, &base, self, (ledger, vouchers), &recharges, &counts, &inputs.snapshot);
        summary.map_err(Failure::Internal)
    }

    /// How many rows the day rejected, in all its files.
    pub fn rejected_rows(&self) -> u64 {
        self.rejects.len() as u64 + self.usage_rejects.len()
    }

    /// The day's files that need neither the books check nor the month
    /// aggregates (all but the ledger and the voucher usage, streamed as the day
    /// settled, rejects.csv, streamed when the files are written, the
    /// month-to-date overview and the summary), rendered at once, each on
    /// whichever core is free, in the order they are published.
    pub fn small_files(&self, inputs: &Inputs) -> Vec<(&'static str, Vec<u8>)> {
        let render: [(&'static str, &(dyn Fn() -> Vec<u8> + Sync)); 3] = [
            ("events.csv", &|| reports::events_csv(&self.events)),
            ("transfers.csv", &|| reports::transfers_csv(&self.transfers)),
            ("balances.csv", &|| reports::balances_csv(&inputs.snapshot, &self.state.accounts)),
        ];
        render.par_iter().map(|(name, body)| (*name, body())).collect()
    }

    /// rejects.csv, written as it is published: the day's rejects taken out of
    /// the result, usage.csv's read back from where they were written aside.
    pub fn take_rejects_file(&mut self) -> Body<'static> {
        let (rejects, usage) = (std::mem::take(&mut self.rejects), std::mem::take(&mut self.usage_rejects));
        Body::Stream(Box::new(move |w| reports::write_rejects(&rejects, usage, w)))
    }
}

/// The files published beside the ledger, in their order: `small` (`small_files`),
/// rejects.csv, the month-to-date overview's, then the summary.
fn day_files(
    small: Vec<(&'static str, Vec<u8>)>,
    rejects: Body<'static>,
    overview_mtd: Vec<(&'static str, Vec<u8>)>,
    summary: &serde_json::Value,
) -> Vec<OutFile<'static>> {
    let mut summary = serde_json::to_vec_pretty(summary).expect("summary encodes");
    summary.push(b'\n');
    let bytes = |files: Vec<(&'static str, Vec<u8>)>| files.into_iter().map(|(name, bytes)| (name, Body::Bytes(bytes))).collect::<Vec<_>>();
    let mut files = bytes(small);
    files.push(("rejects.csv", rejects));
    files.extend(bytes(overview_mtd));
    files.push(("summary.json", Body::Bytes(summary)));
    files
}

/// The state a first day starts from: opening balances, nothing remembered.
fn fresh_state(inputs: &Inputs, day: Day) -> State {
    State {
        format: STATE_FORMAT,
        day: day.prev(),
        first_day: day,
        closed_months: BTreeSet::new(),
        accounts: BTreeMap::new(),
        vouchers_used: BTreeMap::new(),
        seen: SeenIds::default(),
        refund_bases: BTreeMap::new(),
        transfer_sources: Default::default(),
        months: BTreeMap::new(),
        month_files: BTreeMap::new(),
        focus: BTreeMap::new(),
    }
    .with_opening(inputs)
}

impl State {
    fn with_opening(mut self, inputs: &Inputs) -> State {
        for (&uin, b) in &inputs.reference.balances {
            self.accounts.insert(uin, AccountState { cash: b.cash, gift: b.gift, credit_limit: b.credit_limit, suspended: false });
        }
        self
    }
}

/// A run of the day's ledger, rendered as it was settled: its rows, and the
/// FOCUS rows of its lines on a merged bill.
pub struct RenderedRun {
    pub ledger: Vec<String>,
    pub focus: Vec<focus::FocusPiece>,
    /// Its rows of `voucher_usage.csv`.
    pub vouchers: Vec<u8>,
}

/// A run's rows: rendered for the writers, or in processing order for the small
/// files and the books check.
struct RunRows {
    rendered: RenderedRun,
    events: Vec<ServiceEvent>,
    transfers: Vec<(EventKey, TransferRow)>,
    rejects: Vec<Reject>,
}

/// One organization's day while it is settled run by run.
struct OrgDay<'a> {
    books: OrgBooks<'a>,
    pending: PendingEvents,
    /// The run of its next event; usize::MAX for none.
    next_event_run: usize,
    sums: crate::monthly::LineSumsBuilder,
    totals: crate::checks::LedgerTotals,
}

impl OrgDay<'_> {
    /// The run its next event falls in (the first whose bound is after it).
    fn next_event_run(&mut self, runs: &[crate::spill::Run]) -> usize {
        match self.pending.peek_key() {
            None => usize::MAX,
            Some(key) => runs.partition_point(|run| run.until.as_ref().is_some_and(|u| !u.is_after(key))),
        }
    }
}

/// About how many usage rows a run of the day's processing order holds (about
/// half as many settlement lines): the day is grouped, settled, merged, rendered
/// and handed to the writers a run at a time, so neither its lines nor its ledger
/// lines are ever held at once. Three runs of lines and two of ledger lines and
/// rendered rows are: at 10M usage rows, runs of 64k rows put the day's peak
/// ~30 MiB above runs of 32k, in the same time; runs of 16k or 8k saved little
/// more (BENCHMARKS.md, fifteenth session).
const RUN_ROWS: u64 = 1 << 15;

/// The memory freed by the runs is handed back to the kernel after every this
/// many runs: the month sums, which grow run by run (in the day's last hour by
/// ~24 MiB at 10M usage rows, as its daily and monthly lines bring new keys),
/// otherwise come to sit on top of pages the runs freed and the allocators keep.
/// At 10M usage rows every 8th run lowered the peak from 256,800–267,900 KiB to
/// 240,000–245,100 KiB for ~0.65 s more system time (pages touched again);
/// every 16th to 241,800–248,600 KiB (BENCHMARKS.md, sixteenth session).
const RELEASE_EVERY_RUNS: usize = 8;

/// Settle `day` from `base` (the state after the previous day, or a fresh one),
/// unchecked: its summary is made by `DayResult::check`. The ledger is settled in
/// runs of its processing order, each handed to `emit` rendered (in order, at
/// least one) while the next is settled.
/// The day's own usage ids are written aside to `store` (nothing published) once
/// the rows are read: settling never holds their table.
pub fn settle_day(
    inputs: &Inputs,
    day: Day,
    mut base: State,
    fresh_start: bool,
    store: &Store,
    run_rows: u64,
    emit: &mut dyn FnMut(RenderedRun) -> Result<(), Failure>,
) -> Result<(DayResult, Unchecked), Failure> {
    // What only the new state needs is moved, not copied: the remembered ids (tens
    // of millions late in a month), refund bases and transfer sources. `base` keeps
    // what the books check compares against. The month aggregates are not loaded
    // yet: they are read when the day's sums are folded in.
    debug_assert!(base.months.is_empty(), "a day starts from a state without its month aggregates");
    let mut seen = std::mem::take(&mut base.seen);
    let moved_focus = std::mem::take(&mut base.focus);
    let mut moved_bases = std::mem::take(&mut base.refund_bases);
    let mut moved_sources = std::mem::take(&mut base.transfer_sources);
    // The state file the day starts from, if any: the refund bases and transfer
    // sources are not needed before the books, and are dropped while the usage
    // is read (~20 MB late in a month of 10M-row days), read back from it with
    // the record ids (`Store::read_back`).
    let from = seen.records_from;
    if from.is_some() {
        (moved_bases, moved_sources) = Default::default();
        crate::memory::release_freed_memory();
    }
    let snapshot = &inputs.snapshot;
    let closed = |m: Month| base.is_month_closed(m);
    let ctx = ReadContext { day, snapshot, contracts: &inputs.reference.contracts, is_month_closed: &closed };
    let mut t = Stopwatch::start();
    // The accepted usage rows go aside, by part of the day's processing order
    // (`spill`): reading never holds the day's settlement lines.
    let mut usage = crate::spill::UsageSpill::new(&store.usage_spill_file(day), day, snapshot, &inputs.reference.contracts)
        .map_err(|e| Failure::Internal(format!("cannot make {}: {e}", store.usage_spill_file(day).display())))?;
    // The usage first, without the order, recharge and transfer ids the state
    // remembers (set aside as it was read, `RecordIds`): they are read back for
    // the day's records, and set aside again until the state is written.
    let dir = inputs.dir.join("days").join(day.to_string());
    let unusable = |e: crate::csvread::UnusableFile| Failure::Unusable(vec![format!("days/{day}/{e}")]);
    let mut input = read_day_usage(&dir, &ctx, &mut seen, &mut usage).map_err(unusable)?;
    usage.finish().map_err(Failure::Internal)?;
    // Reading's batches and buffers are gone (the record ids come next; the id
    // shards read back after them are of other sizes).
    crate::memory::release_freed_memory();
    match from {
        Some(from) => (moved_bases, moved_sources) = store.read_back(from, &mut seen).map_err(Failure::Internal)?,
        None => store.hold_records(&mut seen).map_err(Failure::Internal)?,
    }
    read_day_records(&dir, &ctx, &mut seen, &mut input).map_err(unusable)?;
    seen.set_aside_records();
    // Of the transfer sources, only those the day's `out`s name are needed
    // (`TransferSources`): the rest stay in the state file, read again with
    // the record ids before the state is written.
    if let Some(from) = from {
        let named: std::collections::HashSet<&str> = input
            .transfers
            .iter()
            .filter(|t| t.kind == crate::ingest::TransferKind::Out)
            .filter_map(|t| t.source_transfer_id.as_deref())
            .collect();
        moved_sources.set_aside(from, |id| named.contains(id));
        drop(named);
        crate::memory::release_freed_memory();
    }
    stage("read day", &mut t);
    // The day's own usage ids, each shard's sorted from the spill: the first row of
    // an id is the day's, and goes to the day's id file now (published by the
    // commit; the next day reads it); a later one is a duplicate or a conflict,
    // counted or refused now and left out of its line.
    let later = std::sync::Mutex::new(Vec::new());
    let own = |s: usize| -> std::io::Result<Vec<(u128, crate::state::SeenUsage)>> {
        let found = usage.dedupe_shard(s, day)?;
        later.lock().unwrap_or_else(|e| e.into_inner()).extend(found.later);
        Ok(found.firsts)
    };
    let day_ids = store.stage_usage_ids(day, &seen, &own).map_err(Failure::Internal)?;
    let mut later = later.into_inner().unwrap_or_else(|e| e.into_inner());
    later.sort_unstable();
    let skip = crate::ingest::apply_duplicates(&mut input, &later, &usage.take_suspects()).map_err(Failure::Internal)?;
    usage.skip(&skip);
    stage("  ids aside", &mut t);
    let DayInput { orders, recharges, transfers, rejects: read_rejects, usage_rejects, mut counts } = input;

    // Partition the day's records by organization. The settlement lines stay
    // (key, sums) pairs until their organization is settled, which turns them into
    // events: the larger events of all organizations are never held at once.
    let mut events: Vec<Vec<Event>> = (0..snapshot.orgs.len()).map(|_| Vec::new()).collect();
    let org_of = |uin: Uin| snapshot.org_index_of(uin);
    for order in orders {
        let o = org_of(order.owner_uin).expect("accepted order has a known owner");
        events[o].push(Event::order(order));
    }
    let recharge_rows = recharges.clone();
    for r in recharges {
        let o = org_of(r.uin).expect("accepted recharge has a known account");
        events[o].push(Event::recharge(r));
    }
    let mut orphan_transfers = Vec::new();
    for t in transfers {
        match org_of(t.member_uin) {
            Some(o) => events[o].push(Event::transfer(t)),
            None => orphan_transfers.push(orphan_transfer(t)),
        }
    }

    // Books per organization, taken out of the state. The new state's balances
    // and voucher use are copied from `base` only once the runs are settled (held
    // twice through them, they added 7.5 MB to a 10M-row day's peak): the books
    // are built from `base`'s.
    let (accounts, vouchers_used) = (std::mem::take(&mut base.accounts), std::mem::take(&mut base.vouchers_used));
    let mut next = base.clone();
    (base.accounts, base.vouchers_used) = (accounts, vouchers_used);
    next.day = day;
    next.seen = seen;
    next.focus = moved_focus;
    next.refund_bases = moved_bases;
    next.transfer_sources = moved_sources;
    match day_ids {
        0 => next.seen.usage_files.remove(&day),
        n => next.seen.usage_files.insert(day, n),
    };
    // The rest of the day needs only their count.
    next.seen.usage = Default::default();
    crate::memory::release_freed_memory();
    // Accepted `in` transfers by organization, moved out of the state to their
    // organization's books, which hand them back once settled ("books back"):
    // copied, they were held twice through the runs (~15 MB by the end of a
    // month of the generator's days). Those of an organization the snapshot no
    // longer has stay in the state.
    let mut sources_by_org: BTreeMap<crate::state::Text, BTreeMap<crate::state::Text, crate::state::TransferSource>> = BTreeMap::new();
    for (id, source) in next.transfer_sources.take_held() {
        sources_by_org.entry(source.org_id.clone()).or_default().insert(id, source);
    }
    // What each organization takes out of the state, in organization order.
    let taken: Vec<_> = snapshot
        .orgs
        .iter()
        .map(|org| {
            let bases = next.refund_bases.remove(&org.org_id).unwrap_or_default();
            (bases, sources_by_org.remove(org.org_id.as_str()).unwrap_or_default())
        })
        .collect();
    next.transfer_sources.extend(sources_by_org.into_values().flatten());
    // Books per organization, built on all cores.
    let (accounts_before, vouchers_used) = (&base.accounts, &base.vouchers_used);
    let books: Vec<OrgBooks> = snapshot
        .orgs
        .par_iter()
        .enumerate()
        .zip(taken.into_par_iter())
        .map(|((org_index, org), (bases, sources))| {
            let mut accounts = BTreeMap::new();
            let mut fresh = BTreeSet::new();
            for m in &org.members {
                let stored = accounts_before.get(&m.uin).copied();
                if stored.is_none() || fresh_start {
                    fresh.insert(m.uin);
                }
                let zero = AccountState { cash: Money::ZERO, gift: Money::ZERO, credit_limit: Money::ZERO, suspended: false };
                accounts.insert(m.uin, stored.unwrap_or(zero));
            }
            let mut vouchers = BTreeMap::new();
            for m in &org.members {
                if let Some(list) = inputs.reference.vouchers.get(&m.uin) {
                    let balances: Vec<VoucherBalance> = list
                        .iter()
                        .map(|v| {
                            let used = vouchers_used.get(&v.voucher_id).copied().unwrap_or(Money::ZERO);
                            VoucherBalance { voucher: v, remaining: (v.amount - used).max(Money::ZERO) }
                        })
                        .collect();
                    vouchers.insert(m.uin, balances);
                }
            }
            OrgBooks::new(org, org_index, day, accounts, &fresh, vouchers, bases, sources)
        })
        .collect();

    stage("books", &mut t);
    // Organizations never interact: each run's are settled in parallel. A run
    // ends where the next begins in the day's processing order, so each
    // organization settles its events in order against its own books, and the
    // runs' rows, each run's merged by key, follow one another in processing order.
    let runs = usage.runs(run_rows.max(1));
    let mut orgs: Vec<OrgDay> = books
        .into_par_iter()
        .zip(events.into_par_iter())
        .map(|(books, events)| {
            let pending = books.day_events(day, events);
            let mut org = OrgDay { books, pending, next_event_run: 0, sums: Default::default(), totals: Default::default() };
            org.next_event_run = org.next_event_run(&runs);
            org
        })
        .collect();
    stage("  runs", &mut t);
    let mut focus_rows = focus::FocusRows::new(snapshot);
    let (mut service, mut keyed_transfers) = (Vec::new(), Vec::new());
    let mut voucher_totals = crate::checks::VoucherTotals::default();
    let mut rejects = read_rejects;
    let mut processing_rejects = 0u64;
    let reference = &inputs.reference;
    let (runs, usage) = (&runs, &usage);
    // Run r's lines grouped from its parts of the spill; then each organization
    // with a line or an event in it settles them, the others wait for theirs.
    let run_lines = |r: usize| -> Result<Vec<crate::spill::Lines>, Failure> {
        match usage.lines(&runs[r], snapshot.orgs.len()) {
            Ok(Ok(lines)) => Ok(lines),
            Ok(Err(overflow)) => Err(Failure::Unusable(vec![format!("days/{day}/{}", overflow.unusable())])),
            Err(e) => Err(Failure::Internal(format!("cannot read the day's usage rows back: {e}"))),
        }
    };
    let mut settle_run = |r: usize, lines: Vec<crate::spill::Lines>| -> Result<Vec<OrgOutput>, Failure> {
        let until = runs[r].until.as_ref();
        // Only the organizations with a line or an event in the run, gathered
        // first: filtered among all of them, the few of a run of the last hour
        // (one owner range, neighbours in organization order) fell in one of the
        // tasks rayon split the list into, and settled on one core.
        let busy: Vec<(&mut OrgDay, crate::spill::Lines)> =
            orgs.iter_mut().zip(lines).filter(|(org, lines)| org.next_event_run == r || !lines.is_empty()).collect();
        // One organization a task: rayon's own split left a few organizations
        // in one task, settled one after the other on one core while the other
        // had nothing left to take at the run's end (organizations differ
        // widely in size).
        let outputs: Vec<Result<OrgOutput, String>> = busy
            .into_par_iter()
            .with_max_len(1)
            .map(|(org, lines)| {
                let mut out = OrgOutput::default();
                out.ledger.reserve_exact(lines.len());
                let OrgDay { books, pending, .. } = &mut *org;
                books.settle_until(day, snapshot, reference, pending, &lines, until, &mut out).map_err(|e| format!("org {}: {e}", books.org.org_id))?;
                drop(lines);
                org.sums.add(snapshot, out.ledger.iter().map(|k| &k.line));
                out.ledger.iter().for_each(|k| org.totals.add_line(&k.line));
                org.next_event_run = org.next_event_run(runs);
                Ok(out)
            })
            .collect();
        outputs.into_iter().collect::<Result<_, _>>().map_err(Failure::Internal)
    };
    // Run r is merged and rendered while run r + 1 is settled (and run r + 2's
    // lines summed, below).
    let mut render = |outputs: Vec<OrgOutput>| -> Result<RunRows, Failure> {
        let mut ledger_parts = Vec::with_capacity(outputs.len());
        let (mut voucher_parts, mut event_parts) = (Vec::with_capacity(outputs.len()), Vec::with_capacity(outputs.len()));
        let (mut transfers, mut rejects) = (Vec::new(), Vec::new());
        for out in outputs {
            ledger_parts.push(out.ledger);
            voucher_parts.push(out.voucher_usage);
            event_parts.push(out.events);
            transfers.extend(out.transfers);
            rejects.extend(out.rejects);
        }
        let ((ledger, voucher_usage), events) = rayon::join(
            || rayon::join(|| Merged::new(ledger_parts), || merge_in_processing_order(voucher_parts)),
            || merge_in_processing_order(event_parts),
        );
        let rows = ledger.handles();
        let (rendered, focus) = rayon::join(
            || reports::ledger_blocks(day, rows, |h| ledger.get(*h)),
            || focus_rows.add(rows, |h| ledger.get(*h)),
        );
        let focus = focus.map_err(|e| Failure::Internal(format!("cannot write the FOCUS rows: {e}")))?;
        voucher_totals.add(&voucher_usage);
        let vouchers = reports::voucher_usage_rows(&voucher_usage, false);
        Ok(RunRows { rendered: RenderedRun { ledger: rendered, focus, vouchers }, events, transfers, rejects })
    };
    let mut previous: Option<Vec<OrgOutput>> = None;
    // How long the runs were settled and rendered, and how long the writers kept
    // them waiting (ORGSETTLE_TIMINGS).
    let (mut working, mut waiting) = (std::time::Duration::ZERO, std::time::Duration::ZERO);
    // Run r's lines are grouped from the spill while run r - 1 is settled and
    // run r - 2 rendered: a run of one large part (the day's last hour) is
    // grouped on one core, and waited for it held up the settlement.
    let mut lines_ahead: Option<Result<Vec<crate::spill::Lines>, Failure>> = (!runs.is_empty()).then(|| run_lines(0));
    for r in 0..=runs.len() {
        // Run r; then none, to render the last.
        let current = lines_ahead.take().map(|lines| (r, lines));
        let joined = std::time::Instant::now();
        // The grouping of run r + 1 (a part or two, each on one core) begins
        // first; the render and the settlement, split finely, fill the other core
        // around it (begun last, it kept one core busy while the other waited).
        let (ahead, (rows, outputs)) = rayon::join(
            || (r + 1 < runs.len()).then(|| run_lines(r + 1)),
            || {
                rayon::join(
                    || previous.take().map(&mut render).transpose(),
                    || current.map(|(r, lines)| settle_run(r, lines?)).transpose(),
                )
            },
        );
        lines_ahead = ahead;
        if r % RELEASE_EVERY_RUNS == RELEASE_EVERY_RUNS - 1 {
            crate::memory::release_freed_memory();
        }
        working += joined.elapsed();
        let emitted = std::time::Instant::now();
        if let Some(rows) = rows? {
            service.extend(rows.events);
            keyed_transfers.extend(rows.transfers);
            processing_rejects += rows.rejects.len() as u64;
            rejects.extend(rows.rejects);
            emit(rows.rendered)?;
        }
        waiting += emitted.elapsed();
        let Some(outputs) = outputs? else { break };
        previous = Some(outputs);
    }
    if timings_on() {
        eprintln!("timing:   {} runs: settled and rendered {}, waiting on the writers {}", runs.len(), seconds(working), seconds(waiting));
    }
    let (books, sums): (Vec<OrgBooks>, Vec<_>) = orgs
        .into_iter()
        .map(|org| {
            debug_assert!(org.next_event_run == usize::MAX, "every event settled");
            (org.books, (org.sums, org.totals))
        })
        .unzip();
    crate::memory::release_freed_memory();
    stage("settle orgs, render and write the ledger", &mut t);
    // Put the books back into the state.
    (next.accounts, next.vouchers_used) = (base.accounts.clone(), base.vouchers_used.clone());
    for mut b in books {
        next.accounts.extend(b.accounts.iter().map(|(k, v)| (*k, *v)));
        for list in b.vouchers.values() {
            for v in list {
                let used = v.voucher.amount - v.remaining;
                if used.is_positive() {
                    next.vouchers_used.insert(v.voucher.voucher_id.clone(), used);
                }
            }
        }
        // The books go: their bases and sources are moved, not copied.
        if !b.bases.is_empty() {
            next.refund_bases.insert(b.org.org_id.clone(), std::mem::take(&mut b.bases));
        }
        next.transfer_sources.extend(std::mem::take(&mut b.sources));
    }
    stage("  books back", &mut t);
    // The transfers of each run are in processing order already; those of no
    // organization (refused) go in among them.
    keyed_transfers.sort_by(|a, b| a.0.cmp(&b.0));
    let transfer_rows = merge_in_processing_order(vec![orphan_transfers, keyed_transfers]);
    let (sums, totals): (Vec<_>, Vec<_>) = sums.into_iter().unzip();
    if timings_on() {
        let (merged, self_paid) = sums.iter().map(|s| s.sizes()).fold((0, 0), |a, b| (a.0 + b.0, a.1 + b.1));
        eprintln!("timing:   the day's sums: {merged} merged-bill entries, {self_paid} self-paid");
    }
    let totals = crate::checks::LedgerTotals::sum(totals);
    // The day's sums in one list a month, then made ready to fold into the
    // months' files: only now are those files read, a window at a time, and only
    // their self-paid lists kept (`Store::fold_months`).
    let day_sums = crate::monthly::day_sums_by_month(sums, snapshot);
    let changed = day_sums.months();
    let mut month_folds = store.fold_months(&next, day_sums, day.month()).map_err(Failure::Internal)?;
    for month in changed {
        next.month_files.insert(month, day);
    }
    let keep_from = crate::state::months_kept_from(day);
    month_folds.retain(|m, _| *m >= keep_from);
    next.month_files.retain(|m, _| *m >= keep_from);
    // Kept as long as the month's aggregates, so a closed month can be closed again.
    next.focus.retain(|m, _| *m >= keep_from);
    crate::memory::release_freed_memory();
    stage("  month aggregates", &mut t);
    rejects.sort_by(|a, b| (a.file, a.line).cmp(&(b.file, b.line)));
    if let Some(c) = counts.get_mut(ORDERS_FILE) {
        // Orders refused while processing (§8) were accepted when read.
        c.accepted -= processing_rejects;
        c.rejected += processing_rejects;
    }
    let result = DayResult {
        ledger_lines: totals.lines(),
        events: service,
        transfers: transfer_rows,
        rejects,
        usage_rejects,
        focus_rows: focus_rows.finish(),
        state: next,
        month_folds,
    };
    Ok((result, Unchecked { base, ledger: totals, vouchers: voucher_totals, recharges: recharge_rows, counts }))
}

/// Decide the state day `day` starts from (SPEC §12), discarding later days.
fn prepare(inputs: &Inputs, store: &Store, day: Day) -> Result<(State, bool), Failure> {
    let settled = store.settled_days().map_err(Failure::Internal)?;
    let earlier = settled.iter().rfind(|d| **d < day).copied();
    let (base, fresh) = match earlier {
        None => (fresh_state(inputs, day), true),
        Some(prev) if prev == day.prev() => {
            let dir = inputs.dir.join("days").join(day.to_string());
            let wanted = || crate::ingest::usage_ids_of(&dir);
            let next = crate::store::NextDay { day, wanted: &wanted };
            (store.load_for(prev, Some(next)).map_err(Failure::Internal)?, false)
        }
        Some(prev) => {
            return Err(Failure::Refused(format!(
                "day {day} needs the state after {}, but the last settled day before it is {prev}: settle {} first",
                day.prev(),
                prev.next()
            )))
        }
    };
    let mut base = base;
    base.closed_months = store.closed_months().map_err(Failure::Internal)?;
    if let Some(&last_closed) = base.closed_months.last() {
        // The days of a closed month, and the 1st of the next month (whose run fed the
        // close with late records), are never run again: a closed month never changes.
        if day <= last_closed.next().first_day() {
            return Err(Failure::Refused(format!(
                "month {last_closed} is closed: days up to {} cannot be run again",
                last_closed.next().first_day()
            )));
        }
    }
    let later: Vec<Day> = settled.iter().filter(|d| **d > day).copied().collect();
    if !later.is_empty() {
        let names: Vec<String> = later.iter().map(ToString::to_string).collect();
        {
            // Shown even with --quiet: discarding settled days must never be silent.
            eprintln!("warning: re-running {day} discards the later settled days {}", names.join(", "));
        }
        store.discard_after(day).map_err(Failure::Internal)?;
    }
    Ok((base, fresh))
}

/// `orgsettle daily`: settle one day.
pub fn daily(input: &Path, out: &Path, day: Day, opts: Options) -> Result<(), Failure> {
    let mut t = Stopwatch::start();
    let mut inputs = Inputs::load(input)?;
    // A day reads history.csv only for its month-to-date overview, which takes
    // the rows of the day's month alone (the months before are for the closes):
    // the others are checked (a bad row makes the input unusable) and let go.
    // ~11 MB at 100k rows, held until the end of the day otherwise.
    let month = day.month();
    inputs.reference.history.retain(|h| h.month == month);
    inputs.reference.history.shrink_to_fit();
    // What parsing the snapshot freed (~40 MB at 100k accounts) goes back now.
    crate::memory::release_freed_memory();
    stage("load inputs", &mut t);
    let store = Store::new(out);
    store.tidy_after_closes().map_err(Failure::Internal)?;
    let result = settle_and_commit(&inputs, &store, day, opts)?;
    if opts.exits_after {
        // Plain data (the day's writers are joined, its files closed): nothing
        // of it has to run when it goes.
        std::mem::forget(result);
        std::mem::forget(inputs);
    }
    Ok(())
}

/// The process's use of the CPU so far, all threads: user and system time, and
/// page faults that needed no disk (a fresh page's first touch among them).
#[derive(Clone, Copy, Default)]
struct CpuUsage {
    user: std::time::Duration,
    system: std::time::Duration,
    faults: u64,
}

impl CpuUsage {
    fn now() -> CpuUsage {
        // SAFETY: getrusage only writes the struct it is given.
        let usage = unsafe {
            let mut usage: libc::rusage = std::mem::zeroed();
            libc::getrusage(libc::RUSAGE_SELF, &mut usage);
            usage
        };
        let of = |t: libc::timeval| std::time::Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
        CpuUsage { user: of(usage.ru_utime), system: of(usage.ru_stime), faults: usage.ru_minflt as u64 }
    }
}

/// When a stage began: its wall clock and the process's use of the CPU then.
pub(crate) struct Stopwatch {
    wall: std::time::Instant,
    cpu: CpuUsage,
}

impl Stopwatch {
    pub(crate) fn start() -> Stopwatch {
        Stopwatch { wall: std::time::Instant::now(), cpu: if timings_on() { CpuUsage::now() } else { CpuUsage::default() } }
    }
}

pub fn timings_on() -> bool {
    std::env::var_os("ORGSETTLE_TIMINGS").is_some()
}

/// A duration as seconds with three decimals ("1.234 s"), without floating point.
fn seconds(d: std::time::Duration) -> String {
    let ms = d.as_millis();
    format!("{}.{:03} s", ms / 1000, ms % 1000)
}

/// With `ORGSETTLE_TIMINGS` set, print how long each stage took and the CPU time
/// all threads used meanwhile (for profiling: a stage using less CPU than its
/// wall time times the cores is where a second core is lost), its system time
/// and its page faults (fresh pages touched: memory handed back and taken again).
pub(crate) fn stage(name: &str, since: &mut Stopwatch) {
    if timings_on() {
        let (now, then) = (CpuUsage::now(), since.cpu);
        let system = now.system.saturating_sub(then.system);
        let cpu = (now.user + now.system).saturating_sub(then.user + then.system);
        // The resident set after the stage and its peak so far (Linux), to see
        // what holds memory.
        let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
        let field = |name: &str| {
            status.lines().find(|l| l.starts_with(name)).map(|l| l[name.len()..].trim().to_string()).unwrap_or_default()
        };
        eprintln!(
            "timing: {name}: {}, CPU {} (RSS {}, peak {}; system {}, {} page faults)",
            seconds(since.wall.elapsed()),
            seconds(cpu),
            field("VmRSS:"),
            field("VmHWM:"),
            seconds(system),
            now.faults.saturating_sub(then.faults)
        );
    }
    *since = Stopwatch::start();
}

/// What the FOCUS writer of a day receives: the pieces of a run, then what each
/// month received.
enum FocusMessage {
    Pieces(Vec<focus::FocusPiece>),
    Done(Vec<focus::MonthRows>),
}

/// Why a day's settlement stopped handing runs to its writers: one of them failed
/// (its own error is the one reported).
const WRITER_STOPPED: &str = "a writer of the day's files stopped";

/// Settle, publish and commit `day`; the result's state no longer holds the month
/// aggregates (written aside before the day's files).
///
/// The ledger is written into the day's staging folder (`days/.D.staging`,
/// nothing published) and its FOCUS rows appended to their month files as its
/// runs are settled, each by a thread of its own outside the pool, so that both
/// cores settle and render while the disk writes. A day not committed is named by
/// no state, and the rows past a month file's committed length are cut by the
/// next run if this one fails. Day D run again while committed stays committed
/// until its books check: its FOCUS rows are written aside, and appended once D
/// is uncommitted (`Store::apply_focus_aside`).
fn settle_and_commit(inputs: &Inputs, store: &Store, day: Day, opts: Options) -> Result<DayResult, Failure> {
    use std::io::Write;
    let mut t = Stopwatch::start();
    let (base, fresh) = prepare(inputs, store, day)?;
    stage("prepare", &mut t);
    let aside = store.is_committed(day).then_some(day);
    let folders = store.folders_present();
    // The FOCUS lengths D starts from, of the months a day still keeps.
    let mut focus_before = base.focus.clone();
    focus_before.retain(|m, _| *m >= crate::state::months_kept_from(day));
    // Each run is handed over when its writer is free (a rendezvous): the writers
    // hold the run they write, the settlement the run it renders (a queued run on
    // top was ~60 MB more of a 1M-row day's peak).
    let (ledger_to, ledger_from) = std::sync::mpsc::sync_channel::<(Vec<String>, Vec<u8>)>(0);
    let (focus_to, focus_from) = std::sync::mpsc::sync_channel::<FocusMessage>(0);
    let (settled, staging, focus_written) = std::thread::scope(|scope| {
        // Each writer starts with the day's first run: a day refused before it
        // writes nothing.
        // The ledger and the voucher usage, each run's rows appended to each.
        let ledger_writer = scope.spawn(move || -> Result<Option<crate::store::Staging>, String> {
            let Ok(first) = ledger_from.recv() else { return Ok(None) };
            let mut staging = store.stage_day(day)?;
            let written = (|| -> Result<(), String> {
                let mut vouchers = staging.create("voucher_usage.csv")?;
                vouchers.write(&reports::voucher_usage_header())?;
                let stream = |w: &mut (dyn Write + Send)| -> std::io::Result<()> {
                    w.write_all(reports::ledger_header().as_bytes())?;
                    for (blocks, uses) in std::iter::once(first).chain(ledger_from) {
                        blocks.iter().try_for_each(|block| w.write_all(block.as_bytes()))?;
                        vouchers.write(&uses).map_err(std::io::Error::other)?;
                    }
                    Ok(())
                };
                staging.write(vec![("ledger.csv", Body::Stream(Box::new(stream)))])?;
                staging.close(vouchers)
            })();
            match written {
                Ok(()) => Ok(Some(staging)),
                Err(e) => {
                    staging.discard();
                    Err(e)
                }
            }
        });
        let focus_before = &focus_before;
        let focus_writer = scope.spawn(move || -> Result<Option<BTreeMap<Month, crate::state::FocusMonth>>, String> {
            let Ok(first) = focus_from.recv() else { return Ok(None) };
            let write = move |sink: &mut dyn focus::MonthSink| -> std::io::Result<Vec<focus::MonthRows>> {
                for message in std::iter::once(first).chain(focus_from) {
                    match message {
                        FocusMessage::Pieces(pieces) => pieces.into_iter().try_for_each(|piece| focus::apply(piece, sink))?,
                        FocusMessage::Done(months) => return Ok(months),
                    }
                }
                Err(std::io::Error::other("the day stopped before its last FOCUS rows"))
            };
            store.append_focus(focus_before, aside, write).map(Some)
        });
        let mut emit = |run: RenderedRun| -> Result<(), Failure> {
            let stopped = || Failure::Internal(WRITER_STOPPED.into());
            ledger_to.send((run.ledger, run.vouchers)).map_err(|_| stopped())?;
            focus_to.send(FocusMessage::Pieces(run.focus)).map_err(|_| stopped())
        };
        let settled = settle_day(inputs, day, base, fresh, store, opts.run_rows.unwrap_or(RUN_ROWS), &mut emit);
        if let Ok((result, _)) = &settled {
            // A writer that stopped has its own error.
            let _ = focus_to.send(FocusMessage::Done(result.focus_rows.clone()));
        }
        drop((ledger_to, focus_to));
        let staging = ledger_writer.join().expect("the ledger's writer does not panic");
        let focus_written = focus_writer.join().expect("the FOCUS rows' writer does not panic");
        (settled, staging, focus_written)
    });
    // A failed day leaves OUT as it was: its staging folder, its files aside and
    // the FOCUS rows it appended removed (a crash leaves them to the next run).
    let fail = |e: Failure, staging: Option<crate::store::Staging>| {
        if let Some(staging) = staging {
            staging.discard();
        }
        store.discard_staged(day);
        if aside.is_none() {
            let _ = store.undo_focus_rows(&focus_before);
        }
        store.remove_folders_made(folders);
        Err(e)
    };
    let (mut result, unchecked, mut staging, focus_next) = match (settled, staging, focus_written) {
        (Ok((result, unchecked)), Ok(Some(staging)), Ok(Some(focus))) => (result, unchecked, staging, focus),
        (settled, staging, focus) => {
            let writer_error = staging.as_ref().err().or(focus.as_ref().err()).cloned();
            let e = match settled {
                Err(Failure::Internal(m)) if m == WRITER_STOPPED => Failure::Internal(writer_error.unwrap_or(m)),
                Err(e) => e,
                Ok(_) => Failure::Internal(writer_error.unwrap_or_else(|| "a settled day wrote no ledger".into())),
            };
            return fail(e, staging.ok().flatten());
        }
    };
    result.state.focus = focus_next;
    stage("settle", &mut t);
    // The month files the day changed are written aside (state/.D.month-M.bin.tmp,
    // renamed by the commit) while the month-to-date overview (the month of D,
    // every line settled so far) is rendered and the books are checked: nothing
    // is published before the check passes. Then the day's folds (the day's sums,
    // the self-paid totals of its months) are dropped: nothing after needs them.
    // The state (state/.D.json.tmp) is written after them, without the month
    // aggregates (the month files hold them).
    let mut folds = std::mem::take(&mut result.month_folds);
    // The months before the day's own (its late rows': on the 1st of a month,
    // the month before) are written first and their folds dropped: held through
    // the rest of the stage, the month before's self-paid list set the peak of
    // the 1st (250,384–254,452 KiB after a month of 10M-row days; BENCHMARKS.md,
    // eighteenth session). The overview needs the day's own month only.
    let own = folds.remove(&day.month());
    if !folds.is_empty() {
        if let Err(e) = store.stage_month_files(day, &result.state.month_files, &folds) {
            return fail(Failure::Internal(e), Some(staging));
        }
        drop(folds);
        crate::memory::release_freed_memory();
    }
    let folds: BTreeMap<Month, crate::monthly::MonthFold> = own.map(|fold| (day.month(), fold)).into_iter().collect();
    let mtd = || {
        let self_paid = folds.iter().map(|(m, f)| (*m, f.self_paid.as_slice())).collect();
        let mtd = reports::overview_files(&inputs.snapshot, &self_paid, &inputs.reference.history, day.month(), 1, false, reports::OVERVIEW_ORGS_AT_ONCE);
        vec![("overview_mtd_by_member.csv", mtd.by_member), ("overview_mtd_by_product.csv", mtd.by_product)]
    };
    // The month files (one core's work, then a sync) begin first; the overview,
    // the check and the small files share the other core meanwhile (begun after
    // them, the month files kept one core busy alone for ~0.2 s of a 10M-row day).
    let (months_staged, (overview_mtd, (checked, small))) = rayon::join(
        || store.stage_month_files(day, &result.state.month_files, &folds),
        || rayon::join(mtd, || rayon::join(|| result.check(inputs, day, unchecked), || result.small_files(inputs))),
    );
    drop(folds);
    crate::memory::release_freed_memory();
    let summary = match (months_staged, checked) {
        (Ok(()), Ok(summary)) => summary,
        (Err(e), _) => return fail(Failure::Internal(e), Some(staging)),
        (_, Err(e)) => return fail(e, Some(staging)),
    };
    stage("month files aside, the checks and the small files", &mut t);
    // The state is written aside once the folds are gone, with the record ids
    // set aside while the day was read and settled read back (tens of MB late in
    // a month of 10M-row days), while the small files are written.
    let rejects = result.take_rejects_file();
    let state = &mut result.state;
    let (state_staged, written) = rayon::join(
        || store.hold_set_aside(&mut state.seen, &mut state.transfer_sources).and_then(|()| store.stage_state(day, state)),
        || {
            with_parquet(day_files(small, rejects, overview_mtd, &summary), &[("ledger.csv", "ledger.parquet")], opts)
                .and_then(|files| staging.write(files).map_err(Failure::Internal))
        },
    );
    match (state_staged, written) {
        (Ok(()), Ok(())) => {}
        (Err(e), _) => return fail(Failure::Internal(e), Some(staging)),
        (_, Err(e)) => return fail(e, Some(staging)),
    }
    stage("state aside and small files", &mut t);
    if aside.is_some() {
        let months: Vec<Month> = result.focus_rows.iter().map(|m| m.month).collect();
        let applied = store.uncommit_day(day).and_then(|()| store.apply_focus_aside(day, &focus_before, &months));
        if let Err(e) = applied {
            return fail(Failure::Internal(e), Some(staging));
        }
    }
    store.publish_staged_day(day, staging, Vec::new()).map_err(Failure::Internal)?;
    stage("day published", &mut t);
    store.commit_state(day, &result.state).map_err(Failure::Internal)?;
    stage("commit", &mut t);
    if !opts.quiet {
        eprintln!("settled {day}: {} ledger lines, {} events, {} rejected rows", result.ledger_lines, result.events.len(), result.rejected_rows());
    }
    Ok(result)
}

/// `orgsettle run`: every calendar day of the range, in order (SPEC §13).
pub fn run(input: &Path, out: &Path, from: Option<Day>, to: Option<Day>, opts: Options) -> Result<(), Failure> {
    let inputs = Inputs::load(input)?;
    let store = Store::new(out);
    store.tidy_after_closes().map_err(Failure::Internal)?;
    let (Some(first_folder), Some(last_folder)) = (inputs.days.first().copied(), inputs.days.last().copied()) else {
        if from.is_none() || to.is_none() {
            return Err(Failure::Unusable(vec!["days/: no day folders, and no --from/--to range given".into()]));
        }
        return run_range(&inputs, &store, from.unwrap(), to.unwrap(), opts);
    };
    let last = to.unwrap_or(last_folder);
    let first = match from {
        Some(d) => d,
        None => {
            // Continue after the last settled day when there is one inside the range.
            let settled = store.settled_days().map_err(Failure::Internal)?;
            match settled.last() {
                Some(&d) if d >= first_folder && d < last => d.next(),
                Some(&d) if d >= last => {
                    if !opts.quiet {
                        eprintln!("nothing to do: {last} is already settled (use --from to settle days again)");
                    }
                    return Ok(());
                }
                _ => first_folder,
            }
        }
    };
    run_range(&inputs, &store, first, last, opts)
}

fn run_range(inputs: &Inputs, store: &Store, first: Day, last: Day, opts: Options) -> Result<(), Failure> {
    if first > last {
        return Err(Failure::Refused(format!("--from {first} is after --to {last}")));
    }
    let total = (last.0 - first.0).num_days() as u64 + 1;
    let bar = if opts.quiet { indicatif::ProgressBar::hidden() } else { indicatif::ProgressBar::new(total) };
    let mut day = first;
    // A run interrupted between settling the 1st and closing the month before
    // closes it now, before settling anything after it.
    close_pending(inputs, store, opts, &bar)?;
    loop {
        bar.set_message(day.to_string());
        settle_and_commit(inputs, store, day, Options { quiet: true, ..opts })?;
        bar.inc(1);
        close_pending(inputs, store, opts, &bar)?;
        if day == last {
            break;
        }
        day = day.next();
    }
    bar.finish_and_clear();
    if !opts.quiet {
        eprintln!("settled {total} day(s), {first} to {last}, into {}", store.out_dir().display());
    }
    Ok(())
}

/// `orgsettle validate`: every problem of the input, nothing written. Returns the
/// report lines; unusable input is an error.
pub fn validate(input: &Path) -> Result<Vec<String>, Failure> {
    let inputs = Inputs::load(input)?;
    let mut report = Vec::new();
    let Some(&first) = inputs.days.first() else {
        return Ok(report);
    };
    // As a first run over every folder would see them: months before the first
    // folder's month are closed, ids are remembered from folder to folder.
    let first_month = first.month();
    let closed = move |m: Month| m < first_month;
    let mut seen = SeenIds::default();
    let mut problems = Vec::new();
    // The accepted usage rows of a day go aside as a settlement puts them, here in
    // the system's folder for temporary files, to check their lines' sums.
    let spill_file = std::env::temp_dir().join(format!("orgsettle-validate-{}.rows", std::process::id()));
    for &day in &inputs.days {
        let ctx = ReadContext { day, snapshot: &inputs.snapshot, contracts: &inputs.reference.contracts, is_month_closed: &closed };
        let mut usage = crate::spill::UsageSpill::new(&spill_file, day, &inputs.snapshot, &inputs.reference.contracts)
            .map_err(|e| Failure::Internal(format!("cannot make {}: {e}", spill_file.display())))?;
        match read_day(&inputs.dir.join("days").join(day.to_string()), &ctx, &mut seen, &mut usage) {
            Ok(mut input) => {
                usage.finish().map_err(Failure::Internal)?;
                // The day's duplicates decided as a settlement decides them; its ids
                // then remembered for the days after.
                let mut firsts = Vec::new();
                let mut later = Vec::new();
                for s in 0..crate::state::ID_SHARDS {
                    let found = usage.dedupe_shard(s, day).map_err(|e| Failure::Internal(format!("cannot read the day's usage ids back: {e}")))?;
                    firsts.push(found.firsts);
                    later.extend(found.later);
                }
                later.sort_unstable();
                let skip = crate::ingest::apply_duplicates(&mut input, &later, &usage.take_suspects()).map_err(Failure::Internal)?;
                usage.skip(&skip);
                seen.remember_day(day, firsts).map_err(Failure::Internal)?;
                // A conflict found now goes among the usage rows' rejects, in file order.
                let usage_file = crate::ingest::USAGE_FILE;
                let read = std::mem::take(&mut input.usage_rejects).into_rows().map_err(Failure::Internal)?;
                let mut rejects = read.collect::<Result<Vec<_>, _>>().map_err(Failure::Internal)?;
                rejects.append(&mut input.rejects);
                rejects.sort_by_key(|r| if r.file == usage_file { (0, r.line) } else { (1, 0) });
                match usage.first_overflow() {
                    Ok(None) => {}
                    Ok(Some(overflow)) => problems.push(format!("days/{day}/{}", overflow.unusable())),
                    Err(e) => return Err(Failure::Internal(format!("cannot read the day's usage rows back: {e}"))),
                }
                for r in rejects {
                    report.push(format!("days/{day}/{} line {}: {} ({}): {}", r.file, r.line, r.reason, r.id, r.message));
                }
            }
            Err(e) => problems.push(format!("days/{day}/{e}")),
        }
    }
    if problems.is_empty() {
        Ok(report)
    } else {
        Err(Failure::Unusable(problems))
    }
}

/// Counts of a file for the summary, with every day file present as a key.
pub fn all_counts(counts: &BTreeMap<&'static str, FileCounts>) -> BTreeMap<&'static str, FileCounts> {
    DAY_FILES.iter().map(|f| (*f, counts.get(f).copied().unwrap_or_default())).collect()
}

/// `orgsettle close`: close month M after the first day of M+1 is settled (SPEC §11.3).
pub fn close(input: &Path, out: &Path, month: Month, opts: Options) -> Result<(), Failure> {
    let mut t = Stopwatch::start();
    let store = Store::new(out);
    // The inputs and the state's aggregates are read at once: neither needs the
    // other, and each alone leaves a core idle most of the time. Unusable inputs
    // are reported first, as when they were read first.
    let (inputs, loaded) = rayon::join(|| Inputs::load(input), || load_for_close(&store, month));
    let inputs = inputs?;
    stage("close: load inputs and state", &mut t);
    close_loaded(&inputs, &store, month, loaded?, opts)?;
    if !opts.quiet {
        eprintln!("closed {month} into {}", store.month_dir(month).display());
    }
    Ok(())
}

/// What a close of `month` reads of the state (refused until the 1st of the next
/// month is settled).
fn load_for_close(store: &Store, month: Month) -> Result<(crate::state::StateHead, BTreeMap<Month, crate::state::MonthAggregates>), Failure> {
    let settled = store.settled_days().map_err(Failure::Internal)?;
    let needed = month.next().first_day();
    let Some(&last) = settled.last().filter(|d| **d >= needed) else {
        return Err(Failure::Refused(format!("month {month} can be closed once {needed} is settled")));
    };
    store.load_for_close(last, month).map_err(Failure::Internal)
}

fn close_month(inputs: &Inputs, store: &Store, month: Month, opts: Options) -> Result<(), Failure> {
    let mut t = Stopwatch::start();
    let loaded = load_for_close(store, month)?;
    stage("close: load state", &mut t);
    close_loaded(inputs, store, month, loaded, opts)
}

fn close_loaded(
    inputs: &Inputs,
    store: &Store,
    month: Month,
    (state, months): (crate::state::StateHead, BTreeMap<Month, crate::state::MonthAggregates>),
    opts: Options,
) -> Result<(), Failure> {
    let mut t = Stopwatch::start();
    if month < state.first_day.month() {
        return Err(Failure::Refused(format!(
            "month {month} precedes the first processed day {}: it counts as closed and has no lines",
            state.first_day
        )));
    }
    let merged = crate::monthly::merged_bill(&months, month);
    // The month's FOCUS rows were appended to its month file day by day.
    let focus_rows = state.focus.get(&month).copied().unwrap_or_default();
    check_focus_against_merged_bill(month, &focus_rows, &merged)?;
    let overview = reports::overview_files(&inputs.snapshot, &crate::monthly::self_paid_of(&months), &inputs.reference.history, month, 6, true, reports::OVERVIEW_ORGS_AT_ONCE);
    stage("close: overview", &mut t);
    let (snapshot, merged) = (&inputs.snapshot, &merged);
    let focus_body = match focus_rows.len {
        0 => Body::Bytes(focus::header().into_bytes()),
        len => Body::Link(store.focus_for_close(month, len).map_err(Failure::Internal)?),
    };
    let files: Vec<OutFile> = vec![
        ("merged_bill.csv", Body::Stream(Box::new(move |w| reports::write_merged_bill(month, snapshot, merged, w)))),
        ("overview_by_member.csv", Body::Bytes(overview.by_member)),
        ("overview_by_product.csv", Body::Bytes(overview.by_product)),
        ("overview_summary.csv", Body::Bytes(overview.summary)),
        ("focus.csv", focus_body),
    ];
    let files = with_parquet(files, &[("merged_bill.csv", "merged_bill.parquet"), ("focus.csv", "focus.parquet")], opts)?;
    stage("close: reports", &mut t);
    store.commit_month(month, files).map_err(Failure::Internal)?;
    stage("close: write files", &mut t);
    store.tidy_after_closes().map_err(Failure::Internal)?;
    Ok(())
}

/// Σ BilledCost = the merged bill's payable total, and one FOCUS row per merged
/// bill line: the rows' figures were taken as the days' files were written.
fn check_focus_against_merged_bill(
    month: Month,
    focus: &crate::state::FocusMonth,
    merged: &[(&crate::state::BillKey, &crate::state::BillSums)],
) -> Result<(), Failure> {
    let (billed, rows) = (focus.billed, focus.rows);
    let payable: Money = merged.iter().map(|(_, s)| s.payable).sum();
    let lines: u64 = merged.iter().map(|(_, s)| s.lines).sum();
    if billed != payable || lines != rows {
        return Err(Failure::Internal(format!(
            "month {month}: FOCUS BilledCost {billed} over {rows} rows ≠ merged bill payable {payable} over {lines} lines"
        )));
    }
    Ok(())
}

/// Close every month M whose 1st of M+1 is settled and that is not closed yet
/// (months before the first processed day count as closed).
fn close_pending(inputs: &Inputs, store: &Store, opts: Options, bar: &indicatif::ProgressBar) -> Result<(), Failure> {
    let settled = store.settled_days().map_err(Failure::Internal)?;
    let Some(&last) = settled.last() else { return Ok(()) };
    let first_month = store.load_head(last).map_err(Failure::Internal)?.first_day.month();
    let closed = store.closed_months().map_err(Failure::Internal)?;
    let mut month = first_month;
    while month.next().first_day() <= last {
        if !closed.contains(&month) {
            close_month(inputs, store, month, opts)?;
            if !opts.quiet {
                bar.suspend(|| eprintln!("closed {month}"));
            }
        }
        month = month.next();
    }
    Ok(())
}

/// A row of an organization's output with the key of the event that made it.
pub trait Keyed {
    type Row;
    fn key(&self) -> std::borrow::Cow<'_, EventKey>;
    fn row(&self) -> &Self::Row;
    fn into_row(self) -> Self::Row;
}

impl<T> Keyed for (EventKey, T) {
    type Row = T;
    fn key(&self) -> std::borrow::Cow<'_, EventKey> {
        std::borrow::Cow::Borrowed(&self.0)
    }
    fn row(&self) -> &T {
        &self.1
    }
    fn into_row(self) -> T {
        self.1
    }
}

impl Keyed for KeyedLine {
    type Row = LedgerLine;
    fn key(&self) -> std::borrow::Cow<'_, EventKey> {
        KeyedLine::key(self)
    }
    fn row(&self) -> &LedgerLine {
        &self.line
    }
    fn into_row(self) -> LedgerLine {
        self.line
    }
}

/// Rows of several parts (one per organization, each in processing order) in
/// processing order, without moving them: the parts as settled, and the order as
/// (part, position) handles. Rows of one event share a key and stay in their order
/// (ties go to the part, then the position).
pub struct Merged<R> {
    parts: Vec<Vec<R>>,
    order: Vec<(u32, u32)>,
}

impl<R: Keyed + Sync + Send> Merged<R> {
    /// The parts' rows in processing order, by a merge of the parts (each already
    /// in order): no row moves, and nothing is held but the handles. The key space
    /// is cut at pivots sampled from the rows into pieces merged on all cores; the
    /// pivots decide only who does the work, never the order (a sort of the
    /// handles gave the same order and needed 32 bytes a row while sorting).
    pub fn new(parts: Vec<Vec<R>>) -> Merged<R> {
        let total: usize = parts.iter().map(Vec::len).sum();
        let pieces = if total < 1 << 16 { 1 } else { 4 * rayon::current_num_threads() };
        let samples = pivot_samples(&parts, pieces);
        let pivots: Vec<&EventKey> = (1..pieces).map(|j| &*samples[j * samples.len() / pieces]).collect();
        // Piece j holds the rows whose key lies in [pivots[j-1], pivots[j]).
        let bound = |rows: &[R], j: usize| match j {
            0 => 0,
            j if j == pieces => rows.len(),
            j => rows.partition_point(|r| *r.key() < *pivots[j - 1]),
        };
        let runs: Vec<Vec<(u32, u32, u32)>> = (0..pieces)
            .into_par_iter()
            .map(|j| {
                let runs = parts.iter().enumerate().filter_map(|(p, rows)| {
                    let (from, to) = (bound(rows, j), bound(rows, j + 1));
                    (from < to).then_some((p as u32, from as u32, to as u32))
                });
                runs.collect()
            })
            .collect();
        // Each piece merged straight into its place in the order (no piece is held
        // apart and copied after).
        let length = |runs: &Vec<(u32, u32, u32)>| runs.iter().map(|&(_, from, to)| (to - from) as usize).sum();
        let order = crate::parallel::concat(runs, (0, 0), length, |_, runs, slot| merge_runs(&parts, runs, slot));
        debug_assert_eq!(order.len(), total);
        Merged { parts, order }
    }
}

/// About 64 keys a piece, sorted, evenly spaced over the parts' rows taken end to
/// end: piece j of `pieces` is cut at the `j * len / pieces`-th. (Every `step`-th
/// row of each part took only the first row of each of thousands of short parts,
/// the day's earliest rows: nearly all rows fell in the last piece, merged on one
/// core.)
fn pivot_samples<R: Keyed>(parts: &[Vec<R>], pieces: usize) -> Vec<std::borrow::Cow<'_, EventKey>> {
    let total: usize = parts.iter().map(Vec::len).sum();
    let step = (total / (pieces * 64)).max(1);
    let mut samples = Vec::with_capacity(total / step + 1);
    let mut offset = 0;
    for rows in parts {
        let first = (step - offset % step) % step;
        samples.extend(rows.iter().skip(first).step_by(step).map(Keyed::key));
        offset += rows.len();
    }
    samples.sort_unstable();
    samples
}

/// The k-way merge of sorted runs `(part, from, to)` of `parts` into handles in
/// `out` (exactly as long as the runs), by (key, part, position), with a binary
/// heap of the runs' next rows. A run's next row is compared by (time, rank,
/// leading uin) first, kept beside it, so most comparisons touch no row.
fn merge_runs<R: Keyed>(parts: &[Vec<R>], runs: Vec<(u32, u32, u32)>, out: &mut [(u32, u32)]) {
    struct Head {
        prefix: (i64, u8, u64),
        part: u32,
        at: u32,
        to: u32,
    }
    let prefix = |r: &R| {
        let k = r.key();
        let leading = match &k.key {
            crate::engine::KeyPart::Postpaid(g) => g.owner_uin,
            crate::engine::KeyPart::Uin(u) => *u,
            crate::engine::KeyPart::Id(_) => 0,
        };
        (k.time.0, k.rank, leading)
    };
    let row = |h: &Head| &parts[h.part as usize][h.at as usize];
    let less = |a: &Head, b: &Head| {
        a.prefix
            .cmp(&b.prefix)
            .then_with(|| row(a).key().cmp(&row(b).key()))
            .then((a.part, a.at).cmp(&(b.part, b.at)))
            .is_lt()
    };
    assert_eq!(out.len(), runs.iter().map(|&(_, from, to)| (to - from) as usize).sum::<usize>(), "one handle a row");
    let mut written = 0;
    let mut heap: Vec<Head> = runs
        .into_iter()
        .map(|(part, from, to)| Head { prefix: prefix(&parts[part as usize][from as usize]), part, at: from, to })
        .collect();
    let sift_down = |heap: &mut [Head], mut i: usize| loop {
        let (l, r) = (2 * i + 1, 2 * i + 2);
        let mut least = i;
        if l < heap.len() && less(&heap[l], &heap[least]) {
            least = l;
        }
        if r < heap.len() && less(&heap[r], &heap[least]) {
            least = r;
        }
        if least == i {
            break;
        }
        heap.swap(i, least);
        i = least;
    };
    for i in (0..heap.len() / 2).rev() {
        sift_down(&mut heap, i);
    }
    while let Some(top) = heap.first_mut() {
        out[written] = (top.part, top.at);
        written += 1;
        top.at += 1;
        if top.at < top.to {
            top.prefix = prefix(&parts[top.part as usize][top.at as usize]);
        } else {
            heap.swap_remove(0);
        }
        sift_down(&mut heap, 0);
    }
    debug_assert_eq!(written, out.len());
}

impl<R: Keyed> Merged<R> {
    pub fn len(&self) -> usize {
        self.order.len()
    }
    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }
    /// The handles of the rows, in processing order.
    pub fn handles(&self) -> &[(u32, u32)] {
        &self.order
    }
    pub fn get(&self, handle: (u32, u32)) -> &R::Row {
        self.parts[handle.0 as usize][handle.1 as usize].row()
    }
    pub fn iter(&self) -> impl Iterator<Item = &R::Row> {
        self.order.iter().map(|h| self.get(*h))
    }
    /// Every row, in no particular order, on all cores.
    pub fn par_rows(&self) -> impl ParallelIterator<Item = &R::Row>
    where
        R: Sync,
        R::Row: Sync,
    {
        self.parts.par_iter().flat_map_iter(|part| part.iter().map(Keyed::row))
    }
    /// The rows themselves, in processing order (for the small outputs).
    pub fn into_vec(self) -> Vec<R::Row> {
        let mut slots: Vec<Vec<Option<R::Row>>> =
            self.parts.into_iter().map(|rows| rows.into_iter().map(|r| Some(r.into_row())).collect()).collect();
        self.order.into_iter().map(|h| slots[h.0 as usize][h.1 as usize].take().expect("each row is taken once")).collect()
    }
}

fn merge_in_processing_order<T: Sync + Send>(parts: Vec<Vec<(EventKey, T)>>) -> Vec<T> {
    Merged::new(parts).into_vec()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::KeyPart;

    #[test]
    fn stage_times_are_written_in_seconds_to_the_millisecond() {
        use std::time::Duration;
        assert_eq!(seconds(Duration::from_millis(1234)), "1.234 s");
        assert_eq!(seconds(Duration::from_micros(999)), "0.000 s");
        assert_eq!(seconds(Duration::from_millis(62_005)), "62.005 s");
        let usage = CpuUsage::now();
        assert!(usage.user + usage.system > Duration::ZERO, "a running test has used some CPU");
        assert!(usage.faults > 0, "a running test has touched fresh pages");
    }
    use crate::ingest::GroupKey;
    use crate::time::{Cycle, Ts};

    /// Parts as an organization's settle leaves them: each in key order, several
    /// rows of one event sharing a key, keys of each rank of one kind.
    fn parts(n_parts: usize, rows: usize, seed: u64) -> Vec<Vec<(EventKey, u32)>> {
        let mut x = seed;
        let mut next = move |n: u64| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x % n
        };
        let mut parts: Vec<Vec<(EventKey, u32)>> = vec![Vec::new(); n_parts];
        for i in 0..rows {
            let p = (next(n_parts as u64) * next(n_parts as u64) / n_parts as u64) as usize; // skewed sizes
            let time = Ts(next(30) as i64 * 3_600_000_000_000);
            let key = match next(3) {
                0 => EventKey { time, rank: 1, key: KeyPart::Id(format!("t-{}", next(50))) },
                1 => EventKey { time, rank: 2, key: KeyPart::Uin(100 + next(20)) },
                _ => EventKey {
                    time,
                    rank: 5,
                    key: KeyPart::Postpaid(GroupKey {
                        owner_uin: 1000 * p as u64 + next(5),
                        product: crate::ids::intern_product(["cbs", "cvm", "cos"][next(3) as usize]),
                        cycle: Cycle::Hourly,
                        period_start: Ts(time.0 - 3_600_000_000_000 * next(2) as i64),
                    }),
                },
            };
            for _ in 0..1 + next(3) * next(2) {
                parts[p].push((key.clone(), i as u32));
            }
        }
        for part in &mut parts {
            part.sort_by(|a, b| a.0.cmp(&b.0)); // stable: a key's rows keep their order
        }
        parts
    }

    #[test]
    fn the_merge_gives_the_order_of_a_sort_by_key_then_part_then_position() {
        // Below and above the size at which the key space is cut into pieces.
        for (n_parts, rows, seed) in [(1, 10, 1), (7, 0, 2), (7, 300, 3), (300, 5_000, 4), (2_000, 70_000, 5), (50, 120_000, 6)] {
            let parts = parts(n_parts, rows, seed);
            let mut expected: Vec<(u32, u32)> =
                parts.iter().enumerate().flat_map(|(p, rows)| (0..rows.len()).map(move |i| (p as u32, i as u32))).collect();
            expected.sort_by(|a, b| {
                parts[a.0 as usize][a.1 as usize].0.cmp(&parts[b.0 as usize][b.1 as usize].0).then(a.cmp(b))
            });
            let merged = Merged::new(parts.clone());
            assert_eq!(merged.handles(), &expected[..], "{n_parts} parts, {rows} events");
            let rows: Vec<u32> = merged.into_vec();
            assert_eq!(rows, expected.iter().map(|&(p, i)| parts[p as usize][i as usize].1).collect::<Vec<_>>());
        }
    }

    #[test]
    fn the_pivots_cut_many_short_parts_into_pieces_of_about_equal_size() {
        // A day's shape: thousands of organizations, each with a few rows spread
        // over the whole day.
        let parts = parts(4_000, 200_000, 7);
        let total: usize = parts.iter().map(Vec::len).sum();
        let pieces = 8;
        let samples = pivot_samples(&parts, pieces);
        assert!(samples.windows(2).all(|w| w[0] <= w[1]));
        let pivots: Vec<&EventKey> = (1..pieces).map(|j| &*samples[j * samples.len() / pieces]).collect();
        let mut sizes = vec![0usize; pieces];
        for (key, _) in parts.iter().flatten() {
            sizes[pivots.partition_point(|p| *p <= key)] += 1;
        }
        assert_eq!(sizes.iter().sum::<usize>(), total);
        // Keys repeat (30 hours of a few hundred keys), so pieces are not exactly equal.
        for (j, &n) in sizes.iter().enumerate() {
            assert!(n < 2 * total / pieces, "piece {j} holds {n} of {total} rows: {sizes:?}");
        }
    }
}
