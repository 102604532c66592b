//! The output directory on disk (SPEC §11, §12): committed days, versioned state
//! files and atomic publication.
//!
//! Invariant: `state/D.json` is written last, by rename; it is the mark that day D
//! is committed. A `days/D/` folder without its state file is an interrupted run
//! and is replaced by the next run of D. Nothing is ever written in place but
//! the FOCUS month files `state/focus-M.csv`, which are only appended to: the
//! committed state records their length, and every run first cuts them back to it.

use crate::focus::{self, MonthRows, MonthSink};
use crate::monthly::{DayMonthSums, MonthFold};
use crate::state::{FocusMonth, MonthAggregates, ReadBack, RefundBases, RememberedRecords, SeenIds, SeenWithoutRecords, SetAside, State, StateHead, TransferSources, WantedIds, STATE_FORMAT};
use crate::time::{Day, Month};
use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

pub struct Store {
    out: PathBuf,
}

/// The contents of one published file.
pub enum Body<'a> {
    Bytes(Vec<u8>),
    /// Written by the function, streamed to disk (the large outputs).
    Stream(StreamBody<'a>),
    /// Converted from the bytes of another file of the same folder, written before it
    /// (the Parquet copies).
    Derived { from: &'static str, convert: fn(&[u8]) -> Result<Vec<u8>, String> },
    /// A file outside the folder, published as it is (hard-linked: no byte is
    /// copied). It must never change afterwards.
    Link(PathBuf),
}

/// What writes a streamed file (sent to the thread that publishes the folder).
pub type StreamBody<'a> = Box<dyn FnOnce(&mut (dyn Write + Send)) -> std::io::Result<()> + Send + 'a>;

/// A published file: its name and contents.
pub type OutFile<'a> = (&'static str, Body<'a>);

/// Crash testing: with `ORGSETTLE_CRASH_AT=N` the process aborts at its N-th write
/// step (file created, file written, rename, removal), as a `kill -9` there would.
/// Off unless the variable is set; costs one relaxed atomic add per step.
fn failpoint(step: &str) {
    use std::sync::atomic::{AtomicU64, Ordering};
    static STEPS: AtomicU64 = AtomicU64::new(0);
    static TARGET: std::sync::OnceLock<Option<u64>> = std::sync::OnceLock::new();
    let target = *TARGET.get_or_init(|| std::env::var("ORGSETTLE_CRASH_AT").ok().and_then(|v| v.parse().ok()));
    if let Some(target) = target {
        let n = STEPS.fetch_add(1, Ordering::Relaxed) + 1;
        if n == target {
            eprintln!("orgsettle: crash test: aborting at write step {n} ({step})");
            std::process::abort();
        }
    }
}

fn io_error(what: &str, path: &Path, e: std::io::Error) -> String {
    format!("{what} {}: {e}", path.display())
}

/// What a day that starts from a state needs of it (`Store::load_for`).
pub struct NextDay<'a> {
    pub day: Day,
    /// The usage ids the day can look up (`ingest::usage_ids_of`), gathered while
    /// the state is parsed and used only if it remembers some; `None` keeps every
    /// remembered id.
    pub wanted: &'a (dyn Fn() -> Option<WantedIds> + Sync),
}

impl Store {
    pub fn new(out: &Path) -> Store {
        Store { out: out.to_path_buf() }
    }

    fn state_dir(&self) -> PathBuf {
        self.out.join("state")
    }
    pub fn day_dir(&self, day: Day) -> PathBuf {
        self.out.join("days").join(day.to_string())
    }
    fn state_file(&self, day: Day) -> PathBuf {
        self.state_dir().join(format!("{day}.json"))
    }
    fn usage_ids_file(&self, day: Day) -> PathBuf {
        self.state_dir().join(format!("{day}.usage-ids"))
    }

    /// Days whose state is committed, ascending.
    pub fn settled_days(&self) -> Result<BTreeSet<Day>, String> {
        Ok(entry_names(&self.state_dir())?
            .iter()
            .filter_map(|name| name.strip_suffix(".json").and_then(Day::parse))
            .collect())
    }

    fn month_file(&self, day: Day, month: Month) -> PathBuf {
        self.state_dir().join(format!("{day}.month-{month}.bin"))
    }

    /// The whole state after `day`: the JSON, every month's aggregates and the
    /// remembered usage ids (read while the aggregates are decoded).
    pub fn load(&self, day: Day) -> Result<State, String> {
        self.load_for(day, None)
    }

    /// The state after `day`; with `Some(next)`, as day `next.day` starts from it:
    /// no month aggregates (the day reads those it adds to once it is settled,
    /// `fold_months`), and only the usage ids it still remembers (§4.2: those
    /// of its month and the month before), of those only the ones `next.wanted`
    /// gives (the ids its usage file holds), into arrays sized once for them
    /// (tables grown file by file doubled several times, and the memory of each
    /// outgrown table stayed with the process: 3.6 GB resident after loading a
    /// month of 1M-row days; BENCHMARKS.md).
    pub fn load_for(&self, day: Day, next: Option<NextDay<'_>>) -> Result<State, String> {
        // The state's JSON (one core; 30 MB by the end of a month of 1M-row days)
        // is parsed while the day's usage ids are gathered (all cores): neither
        // needs the other. They are dropped unused if the state remembers no ids.
        let (state, mut gathered) = rayon::join(
            || {
                if next.is_some() {
                    // The record ids are set aside (`RecordIds`): skipped, not built.
                    self.read_state_json(day, |s: &State<SeenWithoutRecords>| (s.format, s.day)).map(|s| s.with_records_from(day))
                } else {
                    self.load_json(day).map(|s| State { seen: SeenIds { records_from: Some(day), ..s.seen }, ..s })
                }
            },
            || next.as_ref().map(|next| (next.wanted)()),
        );
        let mut state = state?;
        let mut wanted_ids = None;
        if let Some(next) = &next {
            let from = next.day.month().prev();
            state.seen.usage_files.retain(|d, _| d.month() >= from);
        }
        let days: Vec<Day> = state.seen.usage_files.keys().copied().collect();
        // Each id file is decoded as it is read, a block at a time (holding them
        // all until the end was 870 MB more after a month of 1M-row days), after the
        // day's own ids are known (`next.wanted`).
        let mut seen = std::mem::take(&mut state.seen);
        // A day reads no month's aggregates here (see `fold_months`).
        let (months, ids) = rayon::join(
            || if next.is_some() { Ok(BTreeMap::new()) } else { self.read_months(&state.month_files, |_| true) },
            || -> Result<(), String> {
                if days.is_empty() {
                    return Ok(());
                }
                // Room for every remembered id, unless only the day's are kept: those
                // are few (the rows sent again), and arrays sized for the day's rows
                // would be as large as the day's own tables.
                if let Some(gathered) = gathered.take() {
                    wanted_ids = gathered;
                    if wanted_ids.is_none() {
                        seen.reserve_remembered(seen.usage_files.values().sum::<u64>() as usize);
                    }
                }
                let open = |d: Day| -> Result<(fs::File, u64, PathBuf), String> {
                    let path = self.usage_ids_file(d);
                    let file = fs::File::open(&path).map_err(|e| io_error("cannot read", &path, e))?;
                    let len = file.metadata().map_err(|e| io_error("cannot read", &path, e))?.len();
                    Ok((file, len, path))
                };
                match &wanted_ids {
                    // What each file keeps is small: the files are decoded on all
                    // cores, the first failure in day order reported.
                    Some(wanted) => {
                        use rayon::prelude::*;
                        let kept: Vec<Result<_, String>> = days
                            .par_iter()
                            .map(|&d| {
                                let (file, len, path) = open(d)?;
                                seen.decode_kept(d, file, len, wanted).map_err(|e| format!("{}: {e}", path.display()))
                            })
                            .collect();
                        for k in kept {
                            seen.add_kept(k?);
                        }
                    }
                    // Every id kept: one file at a time.
                    None => {
                        for &d in &days {
                            let (file, len, path) = open(d)?;
                            seen.decode_usage_from(d, file, len, None).map_err(|e| format!("{}: {e}", path.display()))?;
                        }
                    }
                }
                Ok(())
            },
        );
        state.months = months?;
        ids?;
        // The day's ids (160 MB at 10M rows) and what reading them freed go back
        // before the day is read.
        if wanted_ids.take().is_some() {
            crate::memory::release_freed_memory();
        }
        seen.finish_decoding().map_err(|e| format!("{}: {e}", self.state_dir().display()))?;
        state.seen = seen;
        Ok(state)
    }

    /// The day's sums `sums` made ready to fold into the months they reach
    /// (`monthly::plan_fold`), with `also` (the day's own month, for its
    /// month-to-date overview) among them, with no sums if the day has none for
    /// it. A month's aggregates so far are read from the file `state` names for
    /// it when the month is open to the day: not closed (`state.closed_months`)
    /// nor before the first day; other months start anew. The months the day
    /// does not add to stay in their files unread (up to seven months are kept
    /// for the closes). Read only now, once the day is settled (read with the
    /// state, they sat under the whole day: ~110 MB by the end of a month of
    /// 1M-row days), each file a window at a time, on all cores; of each, only
    /// the self-paid list is kept.
    pub fn fold_months(&self, state: &State, sums: DayMonthSums, also: Month) -> Result<BTreeMap<Month, MonthFold>, String> {
        use rayon::prelude::*;
        let open = |m: Month| m >= state.first_day.month() && !state.closed_months.contains(&m);
        let DayMonthSums { mut merged, mut self_paid } = sums;
        let months: BTreeSet<Month> = merged.keys().chain(self_paid.keys()).copied().chain(std::iter::once(also)).collect();
        let work: Vec<_> = months
            .into_iter()
            .map(|m| {
                let base = state.month_files.get(&m).copied().filter(|_| open(m));
                (m, base, merged.remove(&m).unwrap_or_default(), self_paid.remove(&m).unwrap_or_default())
            })
            .collect();
        work.into_par_iter()
            .map(|(month, base, merged, self_paid)| {
                let path = base.map(|d| self.month_file(d, month));
                let file = match &path {
                    Some(path) => Some(fs::File::open(path).map_err(|e| io_error("cannot read", path, e))?),
                    None => None,
                };
                let fold = crate::monthly::plan_fold(file, merged, self_paid);
                let fold = fold.map_err(|e| format!("{}: {e}", path.as_deref().unwrap_or(Path::new("")).display()))?;
                Ok((month, MonthFold { base, ..fold }))
            })
            .collect()
    }

    /// What a close of `month` needs of the state after `day`: the JSON and the
    /// aggregates of `month` and the five months before it (no usage ids).
    pub fn load_for_close(&self, day: Day, month: Month) -> Result<(StateHead, BTreeMap<Month, MonthAggregates>), String> {
        let head = self.load_head(day)?;
        let first = (0..5).fold(month, |m, _| m.prev());
        let months = self.read_months(&head.month_files, |m| (first..=month).contains(&m))?;
        Ok((head, months))
    }

    /// The state's head only (see `StateHead`): what deciding which months to close needs.
    pub fn load_head(&self, day: Day) -> Result<StateHead, String> {
        self.read_state_json(day, |h: &StateHead| (h.format, h.day))
    }

    /// The aggregates of the months that `wanted` picks, read on all cores, each
    /// file a window at a time (`state::read_month`).
    fn read_months(&self, month_files: &BTreeMap<Month, Day>, wanted: impl Fn(Month) -> bool) -> Result<BTreeMap<Month, MonthAggregates>, String> {
        use rayon::prelude::*;
        let files: Vec<(Month, Day)> = month_files.iter().filter(|(m, _)| wanted(**m)).map(|(m, d)| (*m, *d)).collect();
        files
            .into_par_iter()
            .map(|(month, d)| {
                let path = self.month_file(d, month);
                let file = fs::File::open(&path).map_err(|e| io_error("cannot read", &path, e))?;
                let aggregates = crate::state::read_month(file).map_err(|e| format!("{}: {e}", path.display()))?;
                Ok((month, aggregates))
            })
            .collect()
    }

    /// The state's JSON only: no month aggregates, no usage ids.
    fn load_json(&self, day: Day) -> Result<State, String> {
        self.read_state_json(day, |s: &State| (s.format, s.day))
    }

    /// The record ids earlier days accepted, set aside in `seen`
    /// (`SeenIds::set_aside_records`), read again from the state file that holds
    /// them; nothing to do when they are held.
    pub fn hold_records(&self, seen: &mut SeenIds) -> Result<(), String> {
        if seen.holds_records() {
            return Ok(());
        }
        let day = seen.records_from.expect("record ids are set aside only when a state file holds them");
        #[derive(serde::Deserialize)]
        struct Records {
            format: u32,
            day: Day,
            seen: RememberedRecords,
        }
        let read: Records = self.read_state_json(day, |r: &Records| (r.format, r.day))?;
        seen.hold_records(read.seen).map_err(|e| format!("state {}: {e}", self.state_file(day).display()))
    }

    /// What a day set aside while it read and settled, held again before its
    /// state is written: the record ids (`hold_records`) and the transfer
    /// sources its `out`s did not name (`TransferSources::set_aside`), from one
    /// read of the state file that holds both.
    pub fn hold_set_aside(&self, seen: &mut SeenIds, sources: &mut TransferSources) -> Result<(), String> {
        let Some(day) = sources.rest_from() else {
            return self.hold_records(seen);
        };
        if !seen.holds_records() && seen.records_from != Some(day) {
            return Err(format!("record ids set aside from the state of {:?}, transfer sources from that of {day}", seen.records_from));
        }
        let read: SetAside = self.read_state_json(day, |r: &SetAside| (r.format, r.day))?;
        if !seen.holds_records() {
            seen.hold_records(read.seen).map_err(|e| format!("state {}: {e}", self.state_file(day).display()))?;
        }
        sources.hold_rest(read.transfer_sources);
        Ok(())
    }

    /// The refund bases and transfer sources of the state after `from`, read
    /// again, with the record ids set aside in `seen` held again (one read of
    /// the file): what a day dropped while its usage was read.
    pub fn read_back(&self, from: Day, seen: &mut SeenIds) -> Result<(RefundBases, TransferSources), String> {
        let back: ReadBack = self.read_state_json(from, |b: &ReadBack| (b.format, b.day))?;
        if !seen.holds_records() {
            seen.hold_records(back.seen).map_err(|e| format!("state {}: {e}", self.state_file(from).display()))?;
        }
        Ok((back.refund_bases, back.transfer_sources))
    }

    /// `state/D.json` read as `T`, whose (format, day) `stamp` gives are checked.
    /// Streamed: the text (tens of MB late in a month of 10M-row days) is not held
    /// beside what is built of it.
    fn read_state_json<T: serde::de::DeserializeOwned>(&self, day: Day, stamp: impl Fn(&T) -> (u32, Day)) -> Result<T, String> {
        let path = self.state_file(day);
        let file = fs::File::open(&path).map_err(|e| io_error("cannot read state", &path, e))?;
        let value: T = serde_json::from_reader(std::io::BufReader::with_capacity(1 << 16, file)).map_err(|e| {
            if e.is_io() {
                io_error("cannot read state", &path, e.into())
            } else {
                format!("state {} is unreadable: {e}", path.display())
            }
        })?;
        let (format, found) = stamp(&value);
        check_format(&path, format, found, day)?;
        Ok(value)
    }

    /// Remove the committed days after `day`, newest first (state before outputs, so
    /// an interruption leaves a consistent prefix of committed days).
    pub fn discard_after(&self, day: Day) -> Result<Vec<Day>, String> {
        let later: Vec<Day> = self.settled_days()?.into_iter().filter(|d| *d > day).rev().collect();
        for d in &later {
            let state = self.state_file(*d);
            failpoint("remove later state");
            fs::remove_file(&state).map_err(|e| io_error("cannot remove", &state, e))?;
            let _ = fs::remove_file(self.usage_ids_file(*d));
            self.remove_month_files(|day, _| day == *d)?;
            remove_dir_if_present(&self.day_dir(*d))?;
        }
        Ok(later)
    }

    /// Whether `state/D.json` exists: day D is settled.
    pub fn is_committed(&self, day: Day) -> bool {
        self.state_file(day).exists()
    }

    /// A fresh staging folder for day `day`'s files (`days/.D.staging`): what is
    /// written there is published by `publish_staged_day`, or removed by
    /// `Staging::discard`; a crash leaves it to the next run, which starts it anew.
    /// Writing there changes nothing a reader or the next run sees, so it needs no
    /// uncommit, and may start before the day's books are checked.
    pub fn stage_day(&self, day: Day) -> Result<Staging, String> {
        Staging::new(&self.out.join("days"), &day.to_string())
    }

    /// Publish day `day`'s files into `days/D/`: `files` written into `staging`
    /// beside what it holds, D uncommitted, and the folder renamed in. Day D stays
    /// uncommitted until `commit_state`; a crash at any point leaves the previous
    /// state usable.
    pub fn publish_staged_day(&self, day: Day, mut staging: Staging, files: Vec<OutFile<'_>>) -> Result<(), String> {
        staging.write(files)?;
        self.uncommit_day(day)?;
        staging.publish()
    }

    /// Uncommit D: from here until the state is renamed in, D is not settled. The
    /// first step of publishing D (`publish_staged_day` does it too); a caller that
    /// appends D's FOCUS rows while D's folder is published does it before both,
    /// so no state still names D while its FOCUS rows change.
    pub fn uncommit_day(&self, day: Day) -> Result<(), String> {
        let days = self.out.join("days");
        fs::create_dir_all(&days).map_err(|e| io_error("cannot create", &days, e))?;
        fs::create_dir_all(self.state_dir()).map_err(|e| io_error("cannot create", &self.state_dir(), e))?;
        let state_path = self.state_file(day);
        if state_path.exists() {
            failpoint("uncommit day");
            fs::remove_file(&state_path).map_err(|e| io_error("cannot remove", &state_path, e))?;
        }
        Ok(())
    }

    fn staged_usage_ids(&self, day: Day) -> PathBuf {
        self.state_dir().join(format!(".{day}.usage-ids.tmp"))
    }

    /// Write the usage ids first accepted on `day` aside (`state/.D.usage-ids.tmp`,
    /// synced), as soon as the day's rows are read: the settlement then runs
    /// without their table (at 10M rows a sixth of the day's memory). Nothing is
    /// published: `commit_state` renames the file, and a run that fails before
    /// removes it (`discard_staged_usage_ids`); a crash leaves only a dot file.
    /// The day's own ids of shard s are `own(s)` (`SeenIds::write_usage_with`);
    /// returns how many ids the file holds (none: no file is left).
    pub fn stage_usage_ids(
        &self,
        day: Day,
        seen: &crate::state::SeenIds,
        own: &(dyn Fn(usize) -> std::io::Result<Vec<(u128, crate::state::SeenUsage)>> + Sync),
    ) -> Result<u64, String> {
        fs::create_dir_all(self.state_dir()).map_err(|e| io_error("cannot create", &self.state_dir(), e))?;
        let ids_tmp = self.staged_usage_ids(day);
        failpoint("create file");
        let file = fs::File::create(&ids_tmp).map_err(|e| io_error("cannot create", &ids_tmp, e))?;
        let mut out = DirectWriter::new(file, 0);
        let count = seen.write_usage_with(day, own, &mut out).map_err(|e| io_error("cannot write", &ids_tmp, e))?;
        let file = out.finish().map_err(|e| io_error("cannot write", &ids_tmp, e))?;
        if count == 0 {
            drop(file);
            return remove_if_present(&ids_tmp).map(|()| 0);
        }
        file.sync_all().map_err(|e| io_error("cannot sync", &ids_tmp, e))?;
        Ok(count)
    }

    fn staged_month_file(&self, day: Day, month: Month) -> PathBuf {
        self.state_dir().join(format!(".{day}.month-{month}.bin.tmp"))
    }

    /// Which of OUT, OUT/days and OUT/state exist: a run that fails removes those
    /// it made (`remove_folders_made`), so that a refused input leaves no folder.
    pub fn folders_present(&self) -> [bool; 3] {
        [self.out.exists(), self.out.join("days").exists(), self.state_dir().exists()]
    }

    /// Remove the folders of OUT, OUT/days and OUT/state that `before` says did not
    /// exist, each only if it is empty.
    pub fn remove_folders_made(&self, before: [bool; 3]) {
        for (present, dir) in before.iter().zip([self.out.clone(), self.out.join("days"), self.state_dir()]).rev() {
            if !present {
                let _ = fs::remove_dir(dir);
            }
        }
    }

    /// Where day `day`'s accepted usage rows and own ids are put aside while it is
    /// settled (`spill`): the file `state/.D.rows`, removed when the day is done,
    /// and by the next run of D after a crash.
    pub fn usage_spill_file(&self, day: Day) -> PathBuf {
        self.state_dir().join(format!(".{day}.rows"))
    }

    /// Write the aggregates of each month day `day` changed aside
    /// (`state/.D.month-M.bin.tmp`, synced), once they are final; `commit_state`
    /// renames them. Nothing is published; a crash leaves only dot files.
    /// `month_files` is the state's; `folds` are the day's (`fold_months`), or
    /// some of them: each month's file so far read again as its new one is
    /// written (`monthly::write_folded_month`). A month the day changed whose
    /// fold is not given is not written here (`commit_state` refuses a changed
    /// month not staged).
    pub fn stage_month_files(&self, day: Day, month_files: &BTreeMap<Month, Day>, folds: &BTreeMap<Month, MonthFold>) -> Result<(), String> {
        use rayon::prelude::*;
        fs::create_dir_all(self.state_dir()).map_err(|e| io_error("cannot create", &self.state_dir(), e))?;
        let changed: Vec<(Month, &MonthFold)> =
            month_files.iter().filter(|(_, d)| **d == day).filter_map(|(m, _)| Some((*m, folds.get(m)?))).collect();
        // Each month streamed to its file, on all cores.
        changed.into_par_iter().try_for_each(|(month, fold)| {
            let base = fold.base.map(|d| self.month_file(d, month));
            let source = match &base {
                Some(path) => Some(fs::File::open(path).map_err(|e| io_error("cannot read", path, e))?),
                None => None,
            };
            let path = self.staged_month_file(day, month);
            failpoint("create file");
            let file = fs::File::create(&path).map_err(|e| io_error("cannot create", &path, e))?;
            let mut w = std::io::BufWriter::with_capacity(1 << 20, file);
            crate::monthly::write_folded_month(source, fold, &mut w).map_err(|e| format!("{}: {e}", path.display()))?;
            failpoint("write file");
            let file = w.into_inner().map_err(|e| io_error("cannot write", &path, e.into_error()))?;
            file.sync_all().map_err(|e| io_error("cannot sync", &path, e))
        })
    }

    fn staged_state(&self, day: Day) -> PathBuf {
        self.state_dir().join(format!(".{day}.json.tmp"))
    }

    /// Write day `day`'s state aside (`state/.D.json.tmp`, synced), once it is
    /// final: it may be written while the day's books are checked and its files
    /// published, since nothing reads it until `commit_state` renames it in, the
    /// day's commit. A crash leaves only a dot file.
    ///
    /// The JSON is streamed to the file (encoded whole, 30 MB by the end of a month
    /// of 1M-row days, grown by doubling, it was on the peak of the day's last stage).
    pub fn stage_state(&self, day: Day, state: &State) -> Result<(), String> {
        fs::create_dir_all(self.state_dir()).map_err(|e| io_error("cannot create", &self.state_dir(), e))?;
        let path = self.staged_state(day);
        failpoint("create file");
        let file = fs::File::create(&path).map_err(|e| io_error("cannot create", &path, e))?;
        let mut w = std::io::BufWriter::with_capacity(1 << 20, file);
        serde_json::to_writer(&mut w, state).map_err(|e| {
            if e.is_io() {
                io_error("cannot write", &path, e.into())
            } else {
                format!("cannot encode state: {e}")
            }
        })?;
        failpoint("write file");
        let file = w.into_inner().map_err(|e| io_error("cannot write", &path, e.into_error()))?;
        file.sync_all().map_err(|e| io_error("cannot sync", &path, e))
    }

    /// Remove what `stage_usage_ids`, `stage_month_files` and `stage_state` wrote
    /// for a day that is not committed.
    pub fn discard_staged(&self, day: Day) {
        let _ = fs::remove_file(self.staged_usage_ids(day));
        let _ = fs::remove_file(self.staged_state(day));
        let _ = fs::remove_file(self.usage_spill_file(day));
        if let Ok(names) = entry_names(&self.state_dir()) {
            let prefix = format!(".{day}.month-");
            for name in names.iter().filter(|n| n.starts_with(&prefix) && n.ends_with(".bin.tmp")) {
                let _ = fs::remove_file(self.state_dir().join(name));
            }
            let prefix = format!(".{day}.focus-");
            for name in names.iter().filter(|n| n.starts_with(&prefix) && n.ends_with(".tmp")) {
                let _ = fs::remove_file(self.state_dir().join(name));
            }
        }
    }

    /// Commit day `day` (after `publish_staged_day` and `stage_state`): the usage
    /// ids and the month files first (written aside, renamed here); the state file,
    /// renamed last, commits the day and records how many ids its companion holds.
    pub fn commit_state(&self, day: Day, state: &State) -> Result<(), String> {
        if state.seen.usage_files.contains_key(&day) {
            let ids_tmp = self.staged_usage_ids(day);
            if !ids_tmp.exists() {
                return Err(format!("{}: the day's usage ids were not staged", ids_tmp.display()));
            }
            failpoint("publish usage ids");
            fs::rename(&ids_tmp, self.usage_ids_file(day)).map_err(|e| io_error("cannot publish", &ids_tmp, e))?;
        } else {
            // An earlier run of D may have left ids D no longer has.
            remove_if_present(&self.usage_ids_file(day))?;
        }
        // The months the day changed (staged by `stage_month_files`), renamed; files
        // an earlier run of D left for months this one did not change are removed.
        for month in state.month_files.iter().filter(|(_, d)| **d == day).map(|(m, _)| *m) {
            let tmp = self.staged_month_file(day, month);
            if !tmp.exists() {
                return Err(format!("{}: the day's month aggregates were not staged", tmp.display()));
            }
            failpoint("publish month aggregates");
            let path = self.month_file(day, month);
            fs::rename(&tmp, &path).map_err(|e| io_error("cannot publish", &path, e))?;
        }
        self.remove_month_files(|d, m| d == day && state.month_files.get(&m) != Some(&day))?;
        let tmp = self.staged_state(day);
        if !tmp.exists() {
            return Err(format!("{}: the day's state was not staged", tmp.display()));
        }
        failpoint("commit state");
        let state_path = self.state_file(day);
        fs::rename(&tmp, &state_path).map_err(|e| io_error("cannot publish", &state_path, e))?;
        sync_dir(&self.state_dir())?;
        Ok(())
    }

    /// Remove the states of the days before `day` (the 1st of a month after a
    /// close): once a month is closed none of its days can be run again, so no later
    /// run starts from their states. Their usage-id files stay while a later state
    /// still lists them (ids are remembered for their month and the next).
    pub fn prune_states_before(&self, day: Day) -> Result<(), String> {
        for d in self.settled_days()?.into_iter().filter(|d| *d < day) {
            remove_if_present(&self.state_file(d))?;
        }
        let keep_ids_from = day.month().prev();
        for name in entry_names(&self.state_dir())? {
            if let Some(d) = name.strip_suffix(".usage-ids").and_then(Day::parse) {
                if d.month() < keep_ids_from {
                    remove_if_present(&self.usage_ids_file(d))?;
                }
            }
        }
        // Month aggregates written before `day`: a later state can list only the
        // newest file of each month, and no month before those the state after
        // `day` keeps.
        let files = self.month_files()?;
        let newest: BTreeMap<Month, Day> = files.iter().filter(|(d, _)| *d < day).map(|(d, m)| (*m, *d)).collect();
        let keep_from = crate::state::months_kept_from(day);
        self.remove_month_files(|d, m| d < day && (m < keep_from || newest.get(&m) != Some(&d)))
    }

    /// The month aggregate files there are, as (day written, month), ascending.
    fn month_files(&self) -> Result<Vec<(Day, Month)>, String> {
        let mut files: Vec<(Day, Month)> = entry_names(&self.state_dir())?
            .iter()
            .filter_map(|name| {
                let (day, rest) = name.split_once(".month-")?;
                Some((Day::parse(day)?, Month::parse(rest.strip_suffix(".bin")?)?))
            })
            .collect();
        files.sort();
        Ok(files)
    }

    fn remove_month_files(&self, remove: impl Fn(Day, Month) -> bool) -> Result<(), String> {
        for (d, m) in self.month_files()? {
            if remove(d, m) {
                remove_if_present(&self.month_file(d, m))?;
            }
        }
        Ok(())
    }

    fn focus_file(&self, month: Month) -> PathBuf {
        self.state_dir().join(format!("focus-{month}.csv"))
    }

    /// Append a day's FOCUS rows to the month files (`write` streams them into the
    /// sink). First every month file is cut back to the length `committed` records
    /// (bytes past it come from a run that did not commit); files of closed months
    /// and of months `committed` does not know are removed. Returns the lengths to
    /// commit with the day; the files are synced.
    ///
    /// With `aside` (day D run again while committed, whose rows the month files
    /// hold), nothing of the month files changes: the rows go to
    /// `state/.D.focus-M.tmp`, one file a month, which `apply_focus_aside` appends
    /// once D is uncommitted.
    pub fn append_focus(
        &self,
        committed: &BTreeMap<Month, FocusMonth>,
        aside: Option<Day>,
        write: impl FnOnce(&mut dyn MonthSink) -> std::io::Result<Vec<MonthRows>>,
    ) -> Result<BTreeMap<Month, FocusMonth>, String> {
        let closed = self.closed_months()?;
        fs::create_dir_all(self.state_dir()).map_err(|e| io_error("cannot create", &self.state_dir(), e))?;
        if aside.is_none() {
            self.cut_back_focus_files(committed, &closed)?;
        }
        let mut sink = FocusSink { store: self, committed, closed: &closed, aside, open: None, done: Vec::new() };
        let appended = write(&mut sink).map_err(|e| format!("cannot write the FOCUS rows: {e}"))?;
        let files = sink.finish()?;
        let mut syncing = Vec::new();
        for (path, file) in files {
            syncing.push((path, std::thread::spawn(move || file.sync_all())));
        }
        for (path, sync) in syncing {
            sync.join().expect("a sync thread does not panic").map_err(|e| io_error("cannot sync", &path, e))?;
        }
        sync_dir(&self.state_dir())?;
        let mut next = committed.clone();
        for a in appended {
            let f = next.entry(a.month).or_default();
            if f.len == 0 {
                f.len = focus::header().len() as u64;
            }
            f.len += a.len;
            f.rows += a.rows;
            f.billed += a.billed;
        }
        Ok(next)
    }

    /// Every FOCUS month file cut back to the length `committed` records; files of
    /// closed months and of months `committed` does not know removed.
    fn cut_back_focus_files(&self, committed: &BTreeMap<Month, FocusMonth>, closed: &BTreeSet<Month>) -> Result<(), String> {
        if !self.state_dir().exists() {
            return Ok(());
        }
        for name in entry_names(&self.state_dir())? {
            let Some(month) = name.strip_prefix("focus-").and_then(|n| n.strip_suffix(".csv")).and_then(Month::parse) else {
                continue;
            };
            let path = self.focus_file(month);
            match committed.get(&month).filter(|_| !closed.contains(&month)) {
                Some(f) => cut_back(&path, f.len)?,
                // A closed month's file is published (hard-linked) already.
                None => {
                    failpoint("remove focus file");
                    remove_if_present(&path)?;
                }
            }
        }
        Ok(())
    }

    /// After a failed run that appended FOCUS rows: every month file cut back to
    /// the lengths `committed` records, and a file it does not know removed.
    pub fn undo_focus_rows(&self, committed: &BTreeMap<Month, FocusMonth>) -> Result<(), String> {
        let closed = self.closed_months()?;
        self.cut_back_focus_files(committed, &closed)
    }

    fn focus_aside_file(&self, day: Day, month: Month) -> PathBuf {
        self.state_dir().join(format!(".{day}.focus-{month}.tmp"))
    }

    /// The FOCUS rows `append_focus` wrote aside for day `day` (`months`: the months
    /// it wrote), appended to their month files, cut back to `committed` first (as
    /// `append_focus` does), then synced; the files aside removed. Day D must be
    /// uncommitted: its rows in the month files change.
    pub fn apply_focus_aside(&self, day: Day, committed: &BTreeMap<Month, FocusMonth>, months: &[Month]) -> Result<(), String> {
        let closed = self.closed_months()?;
        self.cut_back_focus_files(committed, &closed)?;
        for &month in months {
            let (aside, path) = (self.focus_aside_file(day, month), self.focus_file(month));
            let mut rows = fs::File::open(&aside).map_err(|e| io_error("cannot open", &aside, e))?;
            let opened = match committed.get(&month).filter(|f| f.len > 0) {
                // Cut back to `len` already: appended after it.
                Some(_) => fs::OpenOptions::new().append(true).open(&path),
                None => fs::File::create(&path).and_then(|mut f| f.write_all(focus::header().as_bytes()).map(|()| f)),
            };
            let mut file = opened.map_err(|e| io_error("cannot open", &path, e))?;
            failpoint("write file");
            std::io::copy(&mut rows, &mut file).map_err(|e| io_error("cannot write", &path, e))?;
            file.sync_all().map_err(|e| io_error("cannot sync", &path, e))?;
            remove_if_present(&aside)?;
        }
        sync_dir(&self.state_dir())
    }

    /// The FOCUS month file to publish as `months/M/focus.csv` at a close, exactly
    /// `len` bytes long: `state/focus-M.csv` (cut back to `len`), or when a close
    /// already moved it, the published file itself.
    pub fn focus_for_close(&self, month: Month, len: u64) -> Result<PathBuf, String> {
        let path = self.focus_file(month);
        if path.exists() {
            cut_back(&path, len)?;
            return Ok(path);
        }
        let published = self.month_dir(month).join("focus.csv");
        let found = fs::metadata(&published).map_err(|e| io_error("cannot find the FOCUS rows of", &published, e))?.len();
        if found != len {
            return Err(format!("{} holds {found} bytes, the state records {len}", published.display()));
        }
        Ok(published)
    }

    /// What a published close leaves to remove, removed (again, after a crash):
    /// the states of the days before the 1st of the month after the last closed one,
    /// and the FOCUS month files of closed months. Cheap when there is nothing.
    pub fn tidy_after_closes(&self) -> Result<(), String> {
        let closed = self.closed_months()?;
        let Some(&last) = closed.last() else { return Ok(()) };
        for month in closed {
            if self.focus_file(month).exists() {
                self.remove_focus_file(month)?;
            }
        }
        self.prune_states_before(last.next().first_day())
    }

    /// After a close is published: its month file lives on as `months/M/focus.csv`.
    pub fn remove_focus_file(&self, month: Month) -> Result<(), String> {
        failpoint("remove focus file");
        remove_if_present(&self.focus_file(month))
    }

    pub fn out_dir(&self) -> &Path {
        &self.out
    }

    pub fn month_dir(&self, month: Month) -> PathBuf {
        self.out.join("months").join(month.to_string())
    }

    /// Months with a published close (`months/M/`).
    pub fn closed_months(&self) -> Result<BTreeSet<Month>, String> {
        Ok(entry_names(&self.out.join("months"))?.iter().filter_map(|name| Month::parse(name)).collect())
    }

    /// Publish a month's close: its files written aside, then renamed into `months/M/`.
    pub fn commit_month(&self, month: Month, files: Vec<OutFile<'_>>) -> Result<(), String> {
        let months = self.out.join("months");
        fs::create_dir_all(&months).map_err(|e| io_error("cannot create", &months, e))?;
        publish_dir(&months, &month.to_string(), files)
    }
}

/// Write `files` into `parent/.NAME.staging`, then swap it in as `parent/NAME`.
fn publish_dir(parent: &Path, name: &str, files: Vec<OutFile<'_>>) -> Result<(), String> {
    let mut staging = Staging::new(parent, name)?;
    staging.write(files)?;
    staging.publish()
}

/// A folder `parent/.NAME.staging` being filled, published as `parent/NAME` by
/// renaming it (the folder it replaces moved aside first, then removed). Each
/// file is synced on its own thread while the next one is written; all are
/// synced before the folder is renamed in.
pub struct Staging {
    parent: PathBuf,
    name: String,
    dir: PathBuf,
    syncing: Vec<(PathBuf, std::thread::JoinHandle<std::io::Result<()>>)>,
}

impl Staging {
    /// An empty staging folder (what a crashed run left there is removed).
    fn new(parent: &Path, name: &str) -> Result<Staging, String> {
        fs::create_dir_all(parent).map_err(|e| io_error("cannot create", parent, e))?;
        let dir = parent.join(format!(".{name}.staging"));
        remove_dir_if_present(&dir)?;
        fs::create_dir(&dir).map_err(|e| io_error("cannot create", &dir, e))?;
        Ok(Staging { parent: parent.to_path_buf(), name: name.to_string(), dir, syncing: Vec::new() })
    }

    /// Write `files` into the folder (a derived file reads its source from there).
    pub fn write(&mut self, files: Vec<OutFile<'_>>) -> Result<(), String> {
        for (file, body) in files {
            let path = self.dir.join(file);
            let written = match body {
                Body::Bytes(bytes) => write_unsynced(&path, &bytes)?,
                Body::Stream(write) => write_streamed(&path, write)?,
                Body::Link(source) => write_linked(&path, &source)?,
                Body::Derived { from, convert } => {
                    let source = self.dir.join(from);
                    let bytes = fs::read(&source).map_err(|e| io_error("cannot read", &source, e))?;
                    write_unsynced(&path, &convert(&bytes).map_err(|e| format!("{file}: {e}"))?)?
                }
            };
            self.syncing.push((path, std::thread::spawn(move || written.sync_all())));
        }
        Ok(())
    }

    /// A file of the folder written a piece at a time (`StagedFile::write`), beside
    /// what `write` streams; `close` ends it.
    pub fn create(&self, file: &str) -> Result<StagedFile, String> {
        let path = self.dir.join(file);
        failpoint("create file");
        let out = fs::File::create(&path).map_err(|e| io_error("cannot create", &path, e))?;
        Ok(StagedFile { out: std::io::BufWriter::with_capacity(1 << 20, out), path })
    }

    /// The file written to its end, synced with the folder's others.
    pub fn close(&mut self, file: StagedFile) -> Result<(), String> {
        let StagedFile { out, path } = file;
        let written = out.into_inner().map_err(|e| io_error("cannot write", &path, e.into_error()))?;
        failpoint("write file");
        self.syncing.push((path, std::thread::spawn(move || written.sync_all())));
        Ok(())
    }

    fn publish(self) -> Result<(), String> {
        let Staging { parent, name, dir, syncing } = self;
        for (path, sync) in syncing {
            sync.join().expect("a sync thread does not panic").map_err(|e| io_error("cannot sync", &path, e))?;
        }
        sync_dir(&dir)?;
        let target = parent.join(&name);
        let old = parent.join(format!(".{name}.old"));
        remove_dir_if_present(&old)?;
        if target.exists() {
            failpoint("move old aside");
            fs::rename(&target, &old).map_err(|e| io_error("cannot move aside", &target, e))?;
        }
        failpoint("publish folder");
        fs::rename(&dir, &target).map_err(|e| io_error("cannot publish", &target, e))?;
        sync_dir(&parent)?;
        remove_dir_if_present(&old)
    }

    /// Remove the folder and what was written in it (for a day that fails).
    pub fn discard(self) {
        for (_, sync) in self.syncing {
            let _ = sync.join();
        }
        let _ = remove_dir_if_present(&self.dir);
    }
}

/// A file of a staging folder being written (`Staging::create`).
pub struct StagedFile {
    out: std::io::BufWriter<fs::File>,
    path: PathBuf,
}

impl StagedFile {
    pub fn write(&mut self, bytes: &[u8]) -> Result<(), String> {
        self.out.write_all(bytes).map_err(|e| io_error("cannot write", &self.path, e))
    }
}

/// The names in a folder; none when it does not exist.
fn entry_names(dir: &Path) -> Result<Vec<String>, String> {
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io_error("cannot list", dir, e)),
    };
    entries
        .map(|entry| entry.map(|e| e.file_name().to_string_lossy().into_owned()).map_err(|e| io_error("cannot list", dir, e)))
        .collect()
}

fn remove_if_present(path: &Path) -> Result<(), String> {
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_error("cannot remove", path, e)),
    }
}

fn remove_dir_if_present(path: &Path) -> Result<(), String> {
    match fs::remove_dir_all(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_error("cannot remove", path, e)),
    }
}
/// Write a file; the caller syncs it.
fn write_unsynced(path: &Path, bytes: &[u8]) -> Result<fs::File, String> {
    failpoint("create file");
    let mut f = fs::File::create(path).map_err(|e| io_error("cannot create", path, e))?;
    // Half a file, then the rest: a crash in between leaves a truncated staging file.
    let half = bytes.len() / 2;
    f.write_all(&bytes[..half]).map_err(|e| io_error("cannot write", path, e))?;
    failpoint("write file");
    f.write_all(&bytes[half..]).map_err(|e| io_error("cannot write", path, e))?;
    Ok(f)
}

/// Publish `source` as `path` by a hard link (a copy if the file system refuses
/// one); the caller syncs it.
fn write_linked(path: &Path, source: &Path) -> Result<fs::File, String> {
    failpoint("create file");
    if fs::hard_link(source, path).is_err() {
        fs::copy(source, path).map_err(|e| io_error("cannot copy", source, e))?;
    }
    fs::File::open(path).map_err(|e| io_error("cannot open", path, e))
}

/// Stream a file through a buffer (the caller syncs it); the "write file"
/// failpoint fires once the first buffer has reached the file (a crash there
/// leaves it truncated).
fn write_streamed(path: &Path, write: StreamBody<'_>) -> Result<fs::File, String> {
    failpoint("create file");
    let file = fs::File::create(path).map_err(|e| io_error("cannot create", path, e))?;
    let mut out = DirectWriter::new(file, 0);
    write(&mut out).map_err(|e| io_error("cannot write", path, e))?;
    out.finish().map_err(|e| io_error("cannot write", path, e))
}

fn sync_dir(path: &Path) -> Result<(), String> {
    fs::File::open(path).and_then(|f| f.sync_all()).map_err(|e| io_error("cannot sync", path, e))
}

fn check_format(path: &Path, format: u32, found: Day, day: Day) -> Result<(), String> {
    if format != STATE_FORMAT || found != day {
        return Err(format!("state {} has format {format} for day {found}, expected format {STATE_FORMAT} for {day}", path.display()));
    }
    Ok(())
}

/// Cut a FOCUS month file back to its committed length.
fn cut_back(path: &Path, len: u64) -> Result<(), String> {
    let found = fs::metadata(path).map_err(|e| io_error("cannot read", path, e))?.len();
    if found < len {
        return Err(format!("{} holds {found} bytes, the state records {len}: it was changed outside orgsettle", path.display()));
    }
    if found > len {
        failpoint("cut back focus file");
        let f = fs::OpenOptions::new().write(true).open(path).map_err(|e| io_error("cannot open", path, e))?;
        f.set_len(len).map_err(|e| io_error("cannot truncate", path, e))?;
        f.sync_all().map_err(|e| io_error("cannot sync", path, e))?;
    }
    Ok(())
}

/// The month files a day appends to, one open at a time (months come in order).
struct FocusSink<'a> {
    store: &'a Store,
    committed: &'a BTreeMap<Month, FocusMonth>,
    closed: &'a BTreeSet<Month>,
    /// The day whose rows go aside (`Store::append_focus`).
    aside: Option<Day>,
    open: Option<(PathBuf, DirectWriter)>,
    done: Vec<(PathBuf, fs::File)>,
}

impl FocusSink<'_> {
    fn close_open(&mut self) -> std::io::Result<()> {
        if let Some((path, w)) = self.open.take() {
            let file = w.finish()?;
            // Rows past the committed length, not yet synced: a crash here is cut back.
            failpoint("write file");
            self.done.push((path, file));
        }
        Ok(())
    }
    fn finish(mut self) -> Result<Vec<(PathBuf, fs::File)>, String> {
        self.close_open().map_err(|e| format!("cannot write the FOCUS rows: {e}"))?;
        Ok(self.done)
    }
}

impl Write for FocusSink<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match &mut self.open {
            Some((_, w)) => w.write(buf),
            None => Err(std::io::Error::other("FOCUS rows written before their month")),
        }
    }
    fn flush(&mut self) -> std::io::Result<()> {
        match &mut self.open {
            Some((_, w)) => w.flush(),
            None => Ok(()),
        }
    }
}

impl MonthSink for FocusSink<'_> {
    fn begin(&mut self, month: Month) -> std::io::Result<()> {
        self.close_open()?;
        if self.closed.contains(&month) {
            return Err(std::io::Error::other(format!("month {month} is closed")));
        }
        failpoint("create file");
        if let Some(day) = self.aside {
            let path = self.store.focus_aside_file(day, month);
            self.open = Some((path.clone(), DirectWriter::new(fs::File::create(&path)?, 0)));
            return Ok(());
        }
        let path = self.store.focus_file(month);
        let (file, end) = match self.committed.get(&month).filter(|f| f.len > 0) {
            // Cut back to `len` already: written after it (at explicit offsets, so
            // not opened for appending).
            Some(f) => (fs::OpenOptions::new().write(true).open(&path)?, f.len),
            None => {
                let mut f = fs::File::create(&path)?;
                f.write_all(focus::header().as_bytes())?;
                (f, focus::header().len() as u64)
            }
        };
        self.open = Some((path, DirectWriter::new(file, end)));
        Ok(())
    }
}

/// Writes a large file from an aligned buffer with `O_DIRECT` (Linux), so its
/// bytes go from this buffer to the disk without passing through the page cache.
/// On this project's VM, copying 2.4 GB of a 10M-row day's output into freshly
/// allocated page-cache pages cost several seconds of system time
/// (`copy_folio_from_iter_atomic`, 15% of a profile); direct writes of the same
/// bytes cost a tenth of it (BENCHMARKS.md). The unaligned head (up to the next
/// 4 KiB boundary of an appended file) and tail are written through the page
/// cache; where the file system refuses `O_DIRECT` everything is. Bytes are
/// written at explicit offsets from `offset` on. The caller syncs the file.
///
/// Crash testing: the second block written passes the "write file" failpoint (a
/// crash there leaves the file part written), as the buffered writer did.
struct DirectWriter {
    file: fs::File,
    /// Where `buffer[..len]` goes in the file.
    offset: u64,
    buffer: Vec<Block>,
    len: usize,
    /// `O_DIRECT` is set on the file now / may be set.
    direct: bool,
    can_direct: bool,
    blocks_written: u64,
}

/// The alignment `O_DIRECT` needs of memory, offsets and lengths (4 KiB covers
/// 512-byte and 4 KiB sectors).
const DIRECT_ALIGN: usize = 4096;
/// The buffer: whole blocks, so full buffers are written directly.
const DIRECT_BUFFER: usize = 1 << 20;

#[repr(C, align(4096))]
#[derive(Clone, Copy)]
struct Block([u8; DIRECT_ALIGN]);

impl DirectWriter {
    fn new(file: fs::File, offset: u64) -> DirectWriter {
        let buffer = vec![Block([0; DIRECT_ALIGN]); DIRECT_BUFFER / DIRECT_ALIGN];
        DirectWriter { file, offset, buffer, len: 0, direct: false, can_direct: cfg!(target_os = "linux"), blocks_written: 0 }
    }

    fn bytes(&mut self) -> &mut [u8] {
        // SAFETY: `Block` is a plain byte array without padding (size = alignment
        // = 4096), so the vector's storage is `len × 4096` initialised bytes.
        unsafe { std::slice::from_raw_parts_mut(self.buffer.as_mut_ptr().cast::<u8>(), self.buffer.len() * DIRECT_ALIGN) }
    }

    fn write_at(&self, n: usize, offset: u64) -> std::io::Result<()> {
        use std::os::unix::fs::FileExt;
        // SAFETY: as in `bytes`.
        let data = unsafe { std::slice::from_raw_parts(self.buffer.as_ptr().cast::<u8>(), n.min(self.buffer.len() * DIRECT_ALIGN)) };
        self.file.write_all_at(data, offset)
    }

    /// How many bytes the buffer takes before it is written: up to the next
    /// aligned offset while the file offset is unaligned, else the whole buffer.
    fn limit(&self) -> usize {
        match (self.offset % DIRECT_ALIGN as u64) as usize {
            0 => DIRECT_BUFFER,
            r => DIRECT_ALIGN - r,
        }
    }

    /// Write `buffer[..n]` at `offset`, directly when it is aligned.
    fn write_block(&mut self, n: usize) -> std::io::Result<()> {
        if self.blocks_written == 1 {
            failpoint("write file");
        }
        self.blocks_written += 1;
        let aligned = self.offset.is_multiple_of(DIRECT_ALIGN as u64) && n.is_multiple_of(DIRECT_ALIGN);
        self.set_direct(aligned && self.can_direct);
        match self.write_at(n, self.offset) {
            // A file system that takes O_DIRECT at open but not for this write.
            Err(e) if self.direct && e.raw_os_error() == Some(libc::EINVAL) => {
                self.can_direct = false;
                self.set_direct(false);
                self.write_at(n, self.offset)?;
            }
            other => other?,
        }
        self.offset += n as u64;
        Ok(())
    }

    /// Turn `O_DIRECT` on or off; a file system that refuses it is written
    /// through the page cache.
    fn set_direct(&mut self, on: bool) {
        #[cfg(target_os = "linux")]
        if on != self.direct {
            use std::os::fd::AsRawFd;
            let fd = self.file.as_raw_fd();
            // SAFETY: fcntl on a descriptor this writer owns, changing only its status flags.
            let ok = unsafe {
                let flags = libc::fcntl(fd, libc::F_GETFL);
                let wanted = if on { flags | libc::O_DIRECT } else { flags & !libc::O_DIRECT };
                flags >= 0 && libc::fcntl(fd, libc::F_SETFL, wanted) == 0
            };
            if ok {
                self.direct = on;
            } else if on {
                self.can_direct = false;
            }
        }
        #[cfg(not(target_os = "linux"))]
        let _ = on;
    }

    /// Write what is buffered (the aligned part directly, the tail through the
    /// page cache) and hand the file back.
    fn finish(mut self) -> std::io::Result<fs::File> {
        let tail = if self.offset.is_multiple_of(DIRECT_ALIGN as u64) { self.len % DIRECT_ALIGN } else { self.len };
        let body = self.len - tail;
        if body > 0 {
            self.write_block(body)?;
            self.bytes().copy_within(body..body + tail, 0);
        }
        self.len = tail;
        self.can_direct = false;
        if tail > 0 {
            self.write_block(tail)?;
        }
        self.set_direct(false);
        Ok(self.file)
    }
}

impl Write for DirectWriter {
    fn write(&mut self, mut data: &[u8]) -> std::io::Result<usize> {
        let total = data.len();
        while !data.is_empty() {
            let limit = self.limit();
            let n = (limit - self.len).min(data.len());
            let at = self.len;
            self.bytes()[at..at + n].copy_from_slice(&data[..n]);
            self.len += n;
            data = &data[n..];
            if self.len == limit {
                self.write_block(limit)?;
                self.len = 0;
            }
        }
        Ok(total)
    }
    /// Buffered bytes are written by `finish` (a partial block cannot be written
    /// directly); the file is synced by the caller.
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Bytes that differ at every offset, so a block written at a wrong place shows.
    fn pattern(n: usize, seed: u8) -> Vec<u8> {
        (0..n).map(|i| (i as u64 * 31 + u64::from(seed) + (i as u64 >> 12)) as u8).collect()
    }

    #[test]
    fn discarding_a_days_staged_files_removes_them_and_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::new(dir.path());
        let state = dir.path().join("state");
        fs::create_dir_all(&state).unwrap();
        let day = Day::parse("2026-10-31").unwrap();
        let names = [
            ".2026-10-31.usage-ids.tmp",
            ".2026-10-31.month-2026-10.bin.tmp",
            ".2026-10-31.month-2026-09.bin.tmp",
            ".2026-10-30.month-2026-10.bin.tmp",
            ".2026-10-30.usage-ids.tmp",
            ".2026-10-31.json.tmp",
            ".2026-10-30.json.tmp",
            "2026-10-31.month-2026-10.bin",
            "2026-10-30.json",
        ];
        for name in names {
            fs::write(state.join(name), name).unwrap();
        }
        store.discard_staged(day);
        let mut left = entry_names(&state).unwrap();
        left.sort();
        assert_eq!(
            left,
            [".2026-10-30.json.tmp", ".2026-10-30.month-2026-10.bin.tmp", ".2026-10-30.usage-ids.tmp", "2026-10-30.json", "2026-10-31.month-2026-10.bin"]
        );
    }

    #[test]
    fn the_direct_writer_writes_every_byte_in_place_from_any_offset() {
        let dir = tempfile::tempdir().unwrap();
        let sizes = [0, 1, 4095, 4096, 4097, DIRECT_BUFFER - 1, DIRECT_BUFFER, DIRECT_BUFFER + 1, 3 * DIRECT_BUFFER + 12_345];
        // Existing lengths: a new file, a header, an aligned file, an unaligned one.
        for existing in [0usize, 57, 8192, 10_000] {
            for (k, &size) in sizes.iter().enumerate() {
                let path = dir.path().join(format!("f-{existing}-{size}"));
                let head = pattern(existing, 1);
                fs::write(&path, &head).unwrap();
                let file = fs::OpenOptions::new().write(true).open(&path).unwrap();
                let mut w = DirectWriter::new(file, existing as u64);
                let body = pattern(size, k as u8 + 2);
                // Writes of uneven sizes, across block and buffer boundaries.
                let mut rest = &body[..];
                let mut step = 1;
                while !rest.is_empty() {
                    let n = step.min(rest.len());
                    w.write_all(&rest[..n]).unwrap();
                    rest = &rest[n..];
                    step = step * 7 % 300_007 + 1;
                }
                let file = w.finish().unwrap();
                file.sync_all().unwrap();
                drop(file);
                let mut expected = head.clone();
                expected.extend_from_slice(&body);
                assert_eq!(fs::read(&path).unwrap(), expected, "existing {existing}, size {size}");
            }
        }
    }
}
