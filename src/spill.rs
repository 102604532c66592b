//! The day's accepted usage rows, partitioned first and grouped later (SPEC §5.3).
//!
//! Reading a day does not sum its usage rows into settlement lines: a 10M-row day
//! has millions of lines, and holding them all was the largest part of reading's
//! memory. Each accepted row is written instead, in a few dozen bytes, to the
//! file of the part of the day's processing order its line falls in: late lines
//! (their period ended before the day) in one part, and each hour of the day cut
//! into `OWNER_RANGES` parts by the owner's UIN (the last hour, which holds the
//! daily and monthly lines too, into `LAST_HOUR_RANGES`). Every line's rows are in one
//! part, the parts follow one another in processing order (a line is processed
//! at its period's last instant, then by owner), and a run of consecutive parts
//! is a run of the day's order (`UsageSpill::runs`, `engine::KeyBound`). The
//! settlement groups one run's rows into lines at a time (`UsageSpill::lines`).
//!
//! The files live in a folder of their own (under `state/`, a dot name, for a
//! day's settlement), written through the page cache and removed when the spill
//! is dropped: a 10M-row day writes ~540 MB there (54 bytes a row), read back once and
//! removed before the kernel would write it to the disk.
//!
//! Invariant: the lines grouped from a part are exactly the sums of its rows
//! (exact, checked), and a part's rows are in file order, so the first row whose
//! sum leaves the exact range is found as reading in file order would find it.

use crate::engine::KeyBound;
use crate::ids::Uin;
use crate::ingest::{GroupKey, UsageGroup, USAGE_FILE};
use crate::money::{Exact8, Rated};
use crate::reference::ContractRef;
use crate::snapshot::Snapshot;
use crate::time::{Cycle, Day, Ts};
use rayon::prelude::*;

use std::path::{Path, PathBuf};

/// Each hour of the day but the last is cut into this many parts by the owner's
/// UIN (at evenly spaced UINs of the snapshot's accounts). A part is never cut
/// into runs (with 16, a 10M-row day's last-hour parts were 200k rows each, and
/// its runs there three times the others).
pub const OWNER_RANGES: usize = 64;

/// The day's last hour is cut into this many parts: it holds the day's daily and
/// monthly lines too, a third of a day's rows (3.3M of a 10M-row day's). With
/// 64 its parts were ~51k rows each, each a run of its own above 32k rows;
/// with 256 they are ~13k, joined into runs of ~32k rows as the other hours'
/// are, and the 10M-row day's peak was ~12 MB lower (BENCHMARKS.md, sixteenth
/// session). A multiple of `OWNER_RANGES`: each of an earlier hour's ranges is
/// `RANGE_STEP` of these.
pub const LAST_HOUR_RANGES: usize = 256;

/// How many of the last hour's owner ranges an earlier hour's range spans.
const RANGE_STEP: usize = LAST_HOUR_RANGES / OWNER_RANGES;
const _: () = assert!(RANGE_STEP * OWNER_RANGES == LAST_HOUR_RANGES);

const NANOS_PER_HOUR: i64 = 3_600_000_000_000;

/// The parts of a day: late lines first, then each hour's owner ranges.
const PARTS: usize = 1 + 23 * OWNER_RANGES + LAST_HOUR_RANGES;

/// Buffered bytes of a part before they are written to its file.
const PART_BUFFER: usize = 16 * 1024;

/// How many written buffers are kept for reuse (`UsageSpill::written`).
const MAX_SPARE: usize = 256;

/// An accepted usage row as the spill keeps it: its file line, organization,
/// line and sums (one record).
pub struct SpilledRow {
    pub line: u64,
    pub org: usize,
    pub key: GroupKey,
    pub group: UsageGroup,
    /// Its part (`UsageSpill::part_of`).
    pub part: usize,
}

/// Accepted rows encoded for the spill (`UsageSpill::encode`), in file order,
/// each stretch of rows of one part noted with it, for `UsageSpill::add_encoded`.
#[derive(Default)]
pub struct EncodedRows {
    bytes: Vec<u8>,
    stretches: Vec<Stretch>,
}

/// Rows of one part one after another in `EncodedRows`: they end at `end`.
struct Stretch {
    part: u32,
    end: u32,
    rows: u64,
}

impl EncodedRows {
    /// Room for `rows` rows of the usual size (a longer one grows it).
    pub fn with_room(rows: usize) -> EncodedRows {
        EncodedRows { bytes: Vec::with_capacity(rows * ROW_BYTES), stretches: Vec::new() }
    }

    /// Stretch `s`'s bytes and rows.
    fn bytes_of(&self, s: usize) -> (&[u8], u64) {
        let start = s.checked_sub(1).map_or(0, |p| self.stretches[p].end as usize);
        let stretch = &self.stretches[s];
        (&self.bytes[start..stretch.end as usize], stretch.rows)
    }
}

/// One part: its blocks in the spill's file and how many rows it has.
struct Part {
    blocks: Blocks,
    rows: u64,
}

/// The spill's one file (`state/.D.rows`), made at its first write (a day refused
/// before any row is accepted makes none): the parts and id shards write their
/// buffers to it as blocks, each at the next free offset, taken when the buffer
/// is full and written then or later (`SpillWrites`), from any thread. One
/// file, not one a part: the 1,600 files a day made and removed held the folder's
/// lock for a tenth of reading's time on later days (ext4 looking for their
/// recently deleted inodes).
struct SpillFile {
    path: PathBuf,
    file: std::sync::OnceLock<std::fs::File>,
    making: std::sync::Mutex<()>,
    end: std::sync::atomic::AtomicU64,
}

impl SpillFile {
    fn get(&self) -> std::io::Result<&std::fs::File> {
        if let Some(file) = self.file.get() {
            return Ok(file);
        }
        let _making = self.making.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(file) = self.file.get() {
            return Ok(file);
        }
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let file = std::fs::OpenOptions::new().read(true).write(true).create(true).truncate(true).open(&self.path)?;
        Ok(self.file.get_or_init(|| file))
    }

    /// Take the next `len` bytes of the file for a block written later (`write_at`).
    fn reserve(&self, len: usize) -> (u64, u32) {
        let len = u32::try_from(len).expect("a block is small");
        (self.end.fetch_add(u64::from(len), std::sync::atomic::Ordering::Relaxed), len)
    }

    fn write_at(&self, bytes: &[u8], at: u64) -> std::io::Result<()> {
        use std::os::unix::fs::FileExt;
        self.get()?.write_all_at(bytes, at)
    }

    /// Write `bytes` at the next free offset; where they went.
    fn append(&self, bytes: &[u8]) -> std::io::Result<(u64, u32)> {
        use std::os::unix::fs::FileExt;
        let file = self.get()?;
        let len = u32::try_from(bytes.len()).expect("a block is small");
        let at = self.end.fetch_add(u64::from(len), std::sync::atomic::Ordering::Relaxed);
        file.write_all_at(bytes, at)?;
        Ok((at, len))
    }
}

/// What a part or an id shard has written: a buffer of `PART_BUFFER` bytes and
/// the blocks of the spill's file it wrote before.
#[derive(Default)]
struct Blocks {
    buffer: Vec<u8>,
    written: Vec<(u64, u32)>,
}

impl Blocks {
    /// The buffer to append to (sized once: it is written once full, after the
    /// batch that filled it, `UsageSpill::add`).
    fn buffer(&mut self) -> &mut Vec<u8> {
        if self.buffer.capacity() == 0 {
            self.buffer.reserve_exact(PART_BUFFER + 256);
        }
        &mut self.buffer
    }

    /// The buffer, with room for `bytes` more (a batch's rows, appended next):
    /// one allocation where a buffer grown row by row was copied at each doubling.
    fn buffer_with_room(&mut self, bytes: usize) -> &mut Vec<u8> {
        if self.buffer.capacity() == 0 {
            self.buffer.reserve_exact(bytes.max(PART_BUFFER + 256));
        } else {
            self.buffer.reserve(bytes);
        }
        &mut self.buffer
    }

    /// Whether the buffer holds `PART_BUFFER` bytes or more (and should be written).
    fn is_full(&self) -> bool {
        self.buffer.len() >= PART_BUFFER
    }

    /// The full buffer, its place in the file taken (and noted as this one's next
    /// block), for `SpillWrites` to write; a spare buffer (or a new one) takes its place.
    fn take_full(&mut self, file: &SpillFile, spare: Option<Vec<u8>>) -> (u64, Vec<u8>) {
        let (at, len) = file.reserve(self.buffer.len());
        self.written.push((at, len));
        let full = std::mem::replace(&mut self.buffer, spare.unwrap_or_default());
        (at, full)
    }

    fn flush(&mut self, file: &SpillFile) -> std::io::Result<()> {
        if !self.buffer.is_empty() {
            self.written.push(file.append(&self.buffer)?);
            self.buffer.clear();
        }
        Ok(())
    }

    /// Everything written; the buffer freed.
    fn finish(&mut self, file: &SpillFile) -> std::io::Result<()> {
        self.flush(file)?;
        self.buffer = Vec::new();
        Ok(())
    }

    /// Every byte written, in order (after `finish`).
    fn read(&self, file: &SpillFile) -> std::io::Result<Vec<u8>> {
        use std::os::unix::fs::FileExt;
        let mut bytes = vec![0u8; self.written.iter().map(|&(_, len)| len as usize).sum()];
        let mut at = 0;
        for &(offset, len) in &self.written {
            file.get()?.read_exact_at(&mut bytes[at..at + len as usize], offset)?;
            at += len as usize;
        }
        Ok(bytes)
    }
}

/// The day's accepted usage rows, by part of the day's processing order.
pub struct UsageSpill {
    file: std::sync::Arc<SpillFile>,
    day: Day,
    /// Where the last hour is cut: a line of an owner below `splits[k]` is in a
    /// range before k + 1; an earlier hour's range k + 1 begins at
    /// `splits[(k + 1) * RANGE_STEP - 1]`.
    splits: Vec<Uin>,
    parts: Vec<Part>,
    /// Every contract's name, by the number a row stores (its position + 1).
    contracts: Vec<ContractRef>,
    contract_numbers: rustc_hash::FxHashMap<usize, u32>,
    /// The day's own usage ids, by id shard (`IdShard`).
    ids: Vec<IdShard>,
    /// The file lines of the rows found to be duplicates once the day was read
    /// (`skip`): their parts' rows are left out of their lines. Bit l of word l / 64.
    skipped: Vec<u64>,
    /// The first failure to write a part.
    failed: Option<String>,
    /// Full buffers whose blocks are taken but not yet written (`take_writes`).
    unwritten: Vec<(u64, Vec<u8>)>,
    /// Buffers written and emptied, for the next full ones' places.
    spare: Vec<Vec<u8>>,
    /// `add_encoded`'s stretches of each part: (chunk, stretch).
    by_part: Vec<Vec<(u32, u32)>>,
}

/// Full buffers of a spill and their places in its file, written by `write` on
/// whichever thread has time (reading writes them while the next batch is read,
/// off the path the checks of a batch wait on), then handed back
/// (`UsageSpill::written`).
pub struct SpillWrites {
    file: std::sync::Arc<SpillFile>,
    blocks: Vec<(u64, Vec<u8>)>,
    failed: Option<std::io::Error>,
}

impl SpillWrites {
    /// Write every block at its place (the first failure is kept, and the rest
    /// left unwritten).
    pub fn write(&mut self) {
        if self.failed.is_some() {
            return;
        }
        for (at, bytes) in &self.blocks {
            if let Err(e) = self.file.write_at(bytes, *at) {
                self.failed = Some(e);
                return;
            }
        }
    }
}

/// Bytes of an entry of an id shard's file: id digest (16), content digest (8),
/// file line (8).
const ID_ENTRY: usize = 32;

/// The day's own usage ids of one id shard (those not remembered from earlier
/// days; `state::UsageIds::shard_of`): blocks of (id, content, file line) entries
/// in file order in the spill's file, through the page cache. Duplicates within the day are
/// decided once it is read (`UsageSpill::dedupe_shard`), by sorting them:
/// holding the day's ids in a table was the largest part of reading's memory
/// (320 MB at 10M rows). Meanwhile a Bloom filter of the ids met so far (~10
/// bits an id) tells which rows may repeat an id, and those keep the id's text,
/// which a conflicting duplicate's reject names.
pub struct IdShard {
    blocks: Blocks,
    rows: u64,
    filter: Vec<[u32; 8]>,
    /// The file line and id text of each row whose id may have been met before.
    suspects: Vec<(u64, String)>,
}

impl IdShard {
    fn new() -> IdShard {
        IdShard { blocks: Blocks::default(), rows: 0, filter: vec![[0; 8]; 1], suspects: Vec::new() }
    }

    /// Ask the processor for the filter block of `id` (a hint, `memory::prefetch`).
    pub fn prefetch(&self, id: u128) {
        crate::memory::prefetch(&self.filter[crate::state::filter_slot(id, self.filter.len()).0]);
    }

    /// Room in the buffer for `rows` more entries (a batch's rows of this shard,
    /// noted next; `Blocks::buffer_with_room`).
    pub fn reserve(&mut self, rows: usize) {
        self.blocks.buffer_with_room(rows * ID_ENTRY);
    }

    /// A row of the day (in file order within the shard) whose id `id` is not
    /// remembered: it is first taken as the id's first, its text (`text`) kept if
    /// the id may have been met before.
    pub fn note(&mut self, id: u128, content: u64, line: u64, text: impl FnOnce() -> String) {
        let (block, bits) = crate::state::filter_slot(id, self.filter.len());
        let words = &mut self.filter[block];
        if words.iter().zip(bits).all(|(w, b)| w & b != 0) {
            self.suspects.push((line, text()));
        }
        for (w, b) in words.iter_mut().zip(bits) {
            *w |= b;
        }
        let buffer = self.blocks.buffer();
        buffer.extend_from_slice(&id.to_le_bytes());
        buffer.extend_from_slice(&content.to_le_bytes());
        buffer.extend_from_slice(&line.to_le_bytes());
        self.rows += 1;
    }
}

/// What deciding the duplicates of one id shard found: the ids first accepted on
/// the day, and every later row of one of them (its file line, and whether its
/// content is the first's).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ShardDuplicates {
    pub firsts: Vec<(u128, crate::state::SeenUsage)>,
    pub later: Vec<(u64, bool)>,
}

/// One organization's settlement lines, in processing order.
pub type Lines = Vec<(GroupKey, UsageGroup)>;

/// A part's lines with their organizations, by organization, then in processing order.
type PartLines = Vec<(usize, GroupKey, UsageGroup)>;

/// A run of the day's processing order: consecutive parts, and where the run ends
/// (None for the last).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Run {
    pub parts: std::ops::Range<usize>,
    pub until: Option<KeyBound>,
}

/// A part's rows sum beyond the engine's exact range: the file line of the first
/// row (in file order) whose line's sum leaves it.
#[derive(Debug, PartialEq, Eq)]
pub struct Overflow(pub u64);

impl Overflow {
    /// The unusable file it makes (the message reading in file order gave).
    pub fn unusable(&self) -> crate::csvread::UnusableFile {
        crate::csvread::UnusableFile {
            file: USAGE_FILE.into(),
            message: format!("line {}: the settlement line's sum exceeds the engine's exact range", self.0),
        }
    }
}

impl UsageSpill {
    /// A spill of day `day`'s rows into the folder `dir`, made anew when the first
    /// rows are written (what a crashed run left there is removed now) and
    /// removed when the spill is dropped.
    /// The folder its file is in: the day's rejected rows beyond the first
    /// thousands are written aside there too (`RejectSpill`).
    pub fn dir(&self) -> Option<std::path::PathBuf> {
        self.file.path.parent().map(Path::to_path_buf)
    }

    pub fn new(path: &Path, day: Day, snapshot: &Snapshot, contracts: &crate::reference::Contracts) -> std::io::Result<UsageSpill> {
        // The file is made when the first rows are written: a day whose input is
        // refused before any row is accepted makes none.
        match std::fs::remove_file(path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        let uins = snapshot.all_uins();
        let splits = (1..LAST_HOUR_RANGES).map(|k| uins.get(k * uins.len() / LAST_HOUR_RANGES).copied().unwrap_or(Uin::MAX)).collect();
        let parts = (0..PARTS).map(|_| Part { blocks: Blocks::default(), rows: 0 }).collect();
        let contracts: Vec<ContractRef> = contracts.names().collect();
        let contract_numbers = contracts.iter().enumerate().map(|(i, c)| (*c as *const _ as usize, i as u32 + 1)).collect();
        let ids = (0..crate::state::ID_SHARDS).map(|_| IdShard::new()).collect();
        let file = std::sync::Arc::new(SpillFile {
            path: path.to_path_buf(),
            file: std::sync::OnceLock::new(),
            making: std::sync::Mutex::new(()),
            end: std::sync::atomic::AtomicU64::new(0),
        });
        Ok(UsageSpill {
            file,
            day,
            splits,
            parts,
            contracts,
            contract_numbers,
            ids,
            skipped: Vec::new(),
            failed: None,
            unwritten: Vec::new(),
            spare: Vec::new(),
            by_part: vec![Vec::new(); PARTS],
        })
    }

    /// The part of a line: 0 for a late line, else its hour's owner range.
    pub fn part_of(&self, key: &GroupKey) -> usize {
        let at = key.period_end().pred();
        if at < self.day.start() {
            return 0;
        }
        let hour = ((at.0 - self.day.start().0) / NANOS_PER_HOUR) as usize;
        debug_assert!(hour < 24, "an accepted line's period ends by the end of the day");
        // Of the last hour's ranges, how many begin at or below the owner (an
        // earlier hour's range k begins where the last hour's k × RANGE_STEP does).
        let fine = self.splits.partition_point(|&s| s <= key.owner_uin);
        if hour < 23 { 1 + hour * OWNER_RANGES + fine / RANGE_STEP } else { 1 + 23 * OWNER_RANGES + fine }
    }

    /// The hour of an in-day part (not 0), and its owner range within the hour.
    fn hour_and_range(part: usize) -> (usize, usize) {
        let p = part - 1;
        if p < 23 * OWNER_RANGES { (p / OWNER_RANGES, p % OWNER_RANGES) } else { (23, p - 23 * OWNER_RANGES) }
    }

    /// The first UIN of owner range `range` (not 0) of `hour`.
    fn range_start(&self, hour: usize, range: usize) -> Uin {
        self.splits[if hour < 23 { range * RANGE_STEP - 1 } else { range - 1 }]
    }

    /// The instant of the lines of an in-day part (not 0).
    fn instant_of(&self, part: usize) -> Ts {
        let hour = Self::hour_and_range(part).0 as i64;
        Ts(self.day.start().0 + (hour + 1) * NANOS_PER_HOUR).pred()
    }

    /// Add rows (each accepted; the chunks, and the rows of each, in file order):
    /// `encode` and `add_encoded` in one.
    pub fn add(&mut self, chunks: &[&[SpilledRow]]) {
        let encoded: Vec<EncodedRows> = chunks
            .iter()
            .map(|rows| {
                let mut encoded = EncodedRows::with_room(rows.len());
                rows.iter().for_each(|row| self.encode(row, &mut encoded));
                encoded
            })
            .collect();
        self.add_encoded(&encoded.iter().collect::<Vec<_>>());
    }

    /// Encode an accepted row for `add_encoded`, after the rows `into` holds (in
    /// file order). Any thread can encode (a batch's rows are encoded where they
    /// are classified, on all cores): a batch's rows fall in a few parts, and
    /// encoded in `add`, part by part, they kept one core busy while the other
    /// waited (~a sixth of reading's time on 2 threads).
    pub fn encode(&self, row: &SpilledRow, into: &mut EncodedRows) {
        debug_assert_eq!(row.part, self.part_of(&row.key));
        encode(row, &self.contract_numbers, &mut into.bytes);
        let (part, end) = (row.part as u32, into.bytes.len() as u32);
        match into.stretches.last_mut() {
            Some(last) if last.part == part => {
                last.end = end;
                last.rows += 1;
            }
            _ => into.stretches.push(Stretch { part, end, rows: 1 }),
        }
    }

    /// Add encoded rows (the chunks in file order), on all cores: each part's
    /// rows are appended in their order, the same bytes as `add` of the rows.
    /// The buffers filled are set aside with their places in the file taken, for
    /// `take_writes`. A failed write is kept for `finish` to report.
    pub fn add_encoded(&mut self, chunks: &[&EncodedRows]) {
        if self.failed.is_some() {
            return;
        }
        // Each stretch's place, by part (the lists are kept from batch to batch).
        for list in &mut self.by_part {
            list.clear();
        }
        for (c, chunk) in chunks.iter().enumerate() {
            for (s, stretch) in chunk.stretches.iter().enumerate() {
                self.by_part[stretch.part as usize].push((c as u32, s as u32));
            }
        }
        self.parts.par_iter_mut().zip(&self.by_part).filter(|(_, stretches)| !stretches.is_empty()).for_each(|(part, stretches)| {
            let bytes_of = |&(c, s): &(u32, u32)| chunks[c as usize].bytes_of(s as usize);
            // A part can take many of a batch's rows (a batch is mostly a few
            // owners'): ~1% of a 10M-row day's CPU was their buffers' doublings.
            let buffer = part.blocks.buffer_with_room(stretches.iter().map(|s| bytes_of(s).0.len()).sum());
            for s in stretches {
                let (bytes, rows) = bytes_of(s);
                buffer.extend_from_slice(bytes);
                part.rows += rows;
            }
        });
        // The full buffers (of parts and of id shards, whose rows were noted
        // before) are written later, by one thread (`SpillWrites`): two threads
        // appending to the one file at once spent a fifth more CPU on the
        // kernel's lock of it, and written here they held up the batch.
        let (file, spare, unwritten) = (&self.file, &mut self.spare, &mut self.unwritten);
        let blocks = self.parts.iter_mut().map(|p| &mut p.blocks).chain(self.ids.iter_mut().map(|s| &mut s.blocks));
        for b in blocks.filter(|b| b.is_full()) {
            unwritten.push(b.take_full(file, spare.pop()));
        }
    }

    /// The full buffers set aside since the last call, to write (`SpillWrites::write`)
    /// and hand back (`written`).
    pub fn take_writes(&mut self) -> SpillWrites {
        SpillWrites { file: self.file.clone(), blocks: std::mem::take(&mut self.unwritten), failed: None }
    }

    /// Buffers written by `SpillWrites::write`: emptied for reuse; a failure is
    /// kept for `finish` to report.
    pub fn written(&mut self, writes: SpillWrites) {
        if let Some(e) = writes.failed {
            if self.failed.is_none() {
                self.failed = Some(self.error(e));
            }
        }
        // Buffers a batch grew past the usual size are freed, and a few hundred
        // kept at most (kept all, 1,100 of them held ~47 MB at 10M rows).
        for (_, mut buffer) in writes.blocks {
            if buffer.capacity() <= PART_BUFFER + 256 && self.spare.len() < MAX_SPARE {
                buffer.clear();
                self.spare.push(buffer);
            }
        }
    }

    fn error(&self, e: std::io::Error) -> String {
        format!("cannot write the day's usage rows aside in {}: {e}", self.file.path.display())
    }

    /// Every row written to its file (before the runs are read); the first
    /// failure to write, if any.
    pub fn finish(&mut self) -> Result<(), String> {
        if !self.unwritten.is_empty() {
            let mut writes = self.take_writes();
            writes.write();
            self.written(writes);
        }
        if let Some(e) = self.failed.take() {
            return Err(e);
        }
        self.spare = Vec::new();
        self.by_part = Vec::new();
        // The buffers are freed (1,600 of them) and the filters too: reading is done.
        let parts = self.parts.iter_mut().map(|p| &mut p.blocks);
        let ids = self.ids.iter_mut().map(|s| {
            s.filter = Vec::new();
            &mut s.blocks
        });
        let mut blocks: Vec<&mut Blocks> = parts.chain(ids).collect();
        let file = &self.file;
        let finished = blocks.par_iter_mut().try_for_each(|b| b.finish(file));
        finished.map_err(|e| self.error(e))
    }

    /// Size the Bloom filters of the day's ids for about `ids` ids (before any is
    /// noted).
    pub fn expect_ids(&mut self, ids: usize) {
        let blocks = (ids * 10 / 256 / self.ids.len()).max(1);
        for shard in &mut self.ids {
            debug_assert_eq!(shard.rows, 0);
            shard.filter = vec![[0; 8]; blocks];
        }
    }

    /// The id shards, for noting the day's ids (`IdShard::note`; what they hold is
    /// written by the next `add`).
    pub fn id_shards_mut(&mut self) -> &mut [IdShard] {
        &mut self.ids
    }

    /// The day's duplicates of id shard `s` (after `finish`): its entries sorted by
    /// id, then file line; the first of an id is the day's, the others repeat it.
    pub fn dedupe_shard(&self, s: usize, day: Day) -> std::io::Result<ShardDuplicates> {
        let shard = &self.ids[s];
        let mut found = ShardDuplicates::default();
        if shard.rows == 0 {
            return Ok(found);
        }
        let bytes = shard.blocks.read(&self.file)?;
        if bytes.len() as u64 != shard.rows * ID_ENTRY as u64 {
            return Err(std::io::Error::other(format!("{}: {} bytes, not {} entries", self.file.path.display(), bytes.len(), shard.rows)));
        }
        let entries: Vec<(u128, u64, u64)> = bytes
            .chunks_exact(ID_ENTRY)
            .map(|e| {
                let id = u128::from_le_bytes(e[..16].try_into().expect("16 bytes"));
                let content = u64::from_le_bytes(e[16..24].try_into().expect("8 bytes"));
                let line = u64::from_le_bytes(e[24..].try_into().expect("8 bytes"));
                (id, line, content)
            })
            .collect();
        drop(bytes);
        let entries = sorted_by_buckets(entries);
        found.firsts.reserve(entries.len());
        let mut first: Option<(u128, u64)> = None;
        for (id, line, content) in entries {
            match first {
                Some((held, held_content)) if held == id => found.later.push((line, content == held_content)),
                _ => {
                    first = Some((id, content));
                    found.firsts.push((id, crate::state::SeenUsage { day, content }));
                }
            }
        }
        Ok(found)
    }

    /// The text of the ids of the rows that may repeat an earlier row's id, by
    /// file line (a later row of an id is always among them).
    pub fn take_suspects(&mut self) -> rustc_hash::FxHashMap<u64, String> {
        self.ids.iter_mut().flat_map(|s| std::mem::take(&mut s.suspects)).collect()
    }

    /// Leave the rows of these file lines out of their lines (rows found to be
    /// duplicates once the day was read; a line with no row here is ignored).
    pub fn skip(&mut self, lines: &[u64]) {
        let Some(&last) = lines.iter().max() else { return };
        let mut bits = vec![0u64; last as usize / 64 + 1];
        for &l in lines {
            bits[l as usize / 64] |= 1 << (l % 64);
        }
        self.skipped = bits;
    }

    fn is_skipped(&self, line: u64) -> bool {
        self.skipped.get(line as usize / 64).is_some_and(|w| w & (1 << (line % 64)) != 0)
    }

    /// How many rows the spill holds.
    pub fn rows(&self) -> u64 {
        self.parts.iter().map(|p| p.rows).sum()
    }

    /// The day's runs: consecutive parts joined until a run holds about `rows`
    /// rows (a part is never cut). The runs depend on the rows and the snapshot
    /// only, never on the thread count.
    pub fn runs(&self, rows: u64) -> Vec<Run> {
        let mut runs = Vec::new();
        let (mut start, mut held) = (0, 0u64);
        for (p, part) in self.parts.iter().enumerate() {
            if part.rows == 0 {
                continue;
            }
            if held > 0 && held + part.rows > rows {
                // Part p begins a new run: at its hour's first instant, or between
                // owners of its hour.
                let (hour, range) = Self::hour_and_range(p);
                let at = self.instant_of(p);
                let until = if range == 0 { KeyBound::at(at) } else { KeyBound::lines_from(at, self.range_start(hour, range)) };
                runs.push(Run { parts: start..p, until: Some(until) });
                (start, held) = (p, 0);
            }
            held += part.rows;
        }
        runs.push(Run { parts: start..PARTS, until: None });
        runs
    }

    /// The settlement lines of `run`, each organization's (of `orgs`) in processing
    /// order (by period end, then key); Err with the first row in file order, in
    /// any part, whose line's sum leaves the exact range.
    pub fn lines(&self, run: &Run, orgs: usize) -> std::io::Result<Result<Vec<Lines>, Overflow>> {
        let grouped: Vec<std::io::Result<Result<PartLines, u64>>> = run.parts.clone().into_par_iter().map(|p| self.group(p)).collect();
        let mut parts = Vec::with_capacity(grouped.len());
        for part in grouped {
            match part? {
                Ok(part) => parts.push(part),
                Err(_) => return Ok(Err(self.first_overflow()?.expect("a part overflowed"))),
            }
        }
        // Where each organization's lines are in each part (a part's are sorted by
        // organization), found by bisection; then each organization's list made on
        // all cores, its parts in order.
        let mut spans: Vec<Vec<(u32, u32, u32)>> = (0..orgs).map(|_| Vec::new()).collect();
        for (p, part) in parts.iter().enumerate() {
            let mut start = 0;
            while start < part.len() {
                let org = part[start].0;
                let end = start + part[start..].partition_point(|l| l.0 == org);
                spans[org].push((p as u32, start as u32, end as u32));
                start = end;
            }
        }
        let lines = spans
            .into_par_iter()
            .map(|spans| {
                let mut lines = Vec::with_capacity(spans.iter().map(|&(_, from, to)| (to - from) as usize).sum());
                for (p, from, to) in spans {
                    lines.extend(parts[p as usize][from as usize..to as usize].iter().map(|(_, key, group)| (key.clone(), group.clone())));
                }
                lines
            })
            .collect();
        Ok(Ok(lines))
    }

    /// The first row in file order, in any part, whose line's sum leaves the exact
    /// range (reading the parts again).
    pub fn first_overflow(&self) -> std::io::Result<Option<Overflow>> {
        let firsts: Vec<std::io::Result<Option<u64>>> = (0..PARTS).into_par_iter().map(|p| Ok(self.group(p)?.err())).collect();
        let mut first: Option<u64> = None;
        for f in firsts {
            if let Some(line) = f? {
                first = Some(first.map_or(line, |l| l.min(line)));
            }
        }
        Ok(first.map(Overflow))
    }

    /// A part's lines, by organization and in processing order; Err with the file
    /// line of its first row whose line's sum leaves the exact range.
    fn group(&self, p: usize) -> std::io::Result<Result<PartLines, u64>> {
        let part = &self.parts[p];
        if part.rows == 0 {
            return Ok(Ok(Vec::new()));
        }
        let bytes = part.blocks.read(&self.file)?;
        let mut at = &bytes[..];
        // A line's key by identity: an interned product is one address.
        let mut index: rustc_hash::FxHashMap<(Uin, usize, Cycle, i64), usize> = Default::default();
        index.reserve(part.rows as usize);
        // Room for a line a row (most lines have one), not grown row by row:
        // the copies of its growth were ~0.5% of a 10M-row day.
        let mut lines: PartLines = Vec::with_capacity(part.rows as usize);
        let mut products = rustc_hash::FxHashMap::default();
        while !at.is_empty() {
            let row = decode(&mut at, &self.contracts, &mut products)
                .ok_or_else(|| std::io::Error::other(format!("{}: a damaged row", self.file.path.display())))?;
            if self.is_skipped(row.line) {
                continue;
            }
            let key = (row.key.owner_uin, crate::ids::address_of(row.key.product), row.key.cycle, row.key.period_start.0);
            match index.get(&key) {
                Some(&i) => {
                    let group = &mut lines[i].2;
                    let added = (|| {
                        let list = group.list.checked_add(row.group.list)?;
                        let priced = group.priced.checked_add(row.group.priced)?;
                        let quantity = group.quantity.0.checked_add(row.group.quantity.0)?;
                        Some((list, priced, quantity))
                    })();
                    let Some((list, priced, quantity)) = added else { return Ok(Err(row.line)) };
                    (group.list, group.priced, group.quantity, group.records) = (list, priced, Exact8(quantity), group.records + 1);
                }
                None => {
                    index.insert(key, lines.len());
                    lines.push((row.org, row.key, row.group));
                }
            }
        }
        drop(index);
        if p == 0 {
            // Late lines end at many instants.
            lines.sort_by_cached_key(|(org, key, _)| (*org, key.period_end(), key.clone()));
        } else {
            // One instant: processing order is the key's. Sorted by a key of
            // integers (the product as its rank among the part's few codes, in
            // their text order), computed once a line, and the lines then moved
            // once each: sorted whole and compared as texts, they took ~1.9% of
            // a 10M-row day's samples, ~0.8 points more than this.
            let mut codes: Vec<(crate::ids::Product, u64)> = products.iter().map(|(&address, &code)| (code, address)).collect();
            codes.sort_unstable();
            let rank: rustc_hash::FxHashMap<u64, u32> = codes.iter().enumerate().map(|(r, &(_, address))| (address, r as u32)).collect();
            sort_instant_lines(&mut lines, |product| rank[&(crate::ids::address_of(product) as u64)], codes.len());
        }
        Ok(Ok(lines))
    }
}

impl Drop for UsageSpill {
    fn drop(&mut self) {
        if self.file.file.get().is_some() {
            let _ = std::fs::remove_file(&self.file.path);
        }
    }
}

/// Lines of one part that is not the late lines' sorted by (organization, owner,
/// product's rank, cycle, period start): `rank` must order products as their
/// codes do, each below `ranks`. In such a part every line ends at one instant, so each cycle has
/// one period start, and the key is packed into one integer (organization 32
/// bits, owner 64, rank 24, cycle 8): the same order with fewer bytes to move
/// and compare (as a tuple it was ~2% of a 10M-row day's samples). Lines that do
/// not fit (a cycle with two starts, an organization or rank beyond its bits)
/// are sorted by the tuple.
fn sort_instant_lines(lines: &mut PartLines, rank: impl Fn(crate::ids::Product) -> u32, ranks: usize) {
    let mut starts = [None; 3];
    let packs = ranks <= 1 << 24
        && lines.iter().all(|(org, key, _)| {
            *org <= u32::MAX as usize && *starts[key.cycle as usize].get_or_insert(key.period_start) == key.period_start
        });
    if packs {
        lines.sort_by_cached_key(|(org, key, _)| {
            (*org as u128) << 96 | u128::from(key.owner_uin) << 32 | u128::from(rank(key.product)) << 8 | key.cycle as u128
        });
    } else {
        lines.sort_by_cached_key(|(org, key, _)| (*org, key.owner_uin, rank(key.product), key.cycle, key.period_start));
    }
}

/// A row's amounts in 8 bytes each when they fit (nearly always), else 16: bit i
/// of the flags byte says amount i takes 16.
fn put_amount(out: &mut Vec<u8>, value: i128, flags: &mut u8, bit: u8) {
    match i64::try_from(value) {
        Ok(v) => out.extend_from_slice(&v.to_le_bytes()),
        Err(_) => {
            *flags |= 1 << bit;
            out.extend_from_slice(&value.to_le_bytes());
        }
    }
}

fn take<const N: usize>(at: &mut &[u8]) -> Option<[u8; N]> {
    let (head, rest) = at.split_first_chunk::<N>()?;
    *at = rest;
    Some(*head)
}

fn get_amount(at: &mut &[u8], flags: u8, bit: u8) -> Option<i128> {
    if flags & (1 << bit) == 0 {
        Some(i128::from(i64::from_le_bytes(take::<8>(at)?)))
    } else {
        Some(i128::from_le_bytes(take::<16>(at)?))
    }
}

/// Bytes of a row `encode` writes when its amounts fit 8 bytes each, as nearly all do.
const ROW_BYTES: usize = 54;

/// A row in 54 bytes (more for an amount beyond 8 bytes): flags, cycle, file
/// line, organization, owner, product (its address), period start, contract (its
/// number, 0 for none), list, priced and quantity.
fn encode(row: &SpilledRow, contracts: &rustc_hash::FxHashMap<usize, u32>, out: &mut Vec<u8>) {
    let SpilledRow { line, org, key, group, .. } = row;
    let flags_at = out.len();
    out.push(0);
    out.push(match key.cycle {
        Cycle::Hourly => 0,
        Cycle::Daily => 1,
        Cycle::Monthly => 2,
    });
    out.extend_from_slice(&line.to_le_bytes());
    out.extend_from_slice(&(*org as u32).to_le_bytes());
    out.extend_from_slice(&key.owner_uin.to_le_bytes());
    out.extend_from_slice(&(crate::ids::address_of(key.product) as u64).to_le_bytes());
    out.extend_from_slice(&key.period_start.0.to_le_bytes());
    let contract = group.contract.map_or(0, |c| contracts[&(c as *const _ as usize)]);
    out.extend_from_slice(&contract.to_le_bytes());
    let mut flags = 0;
    put_amount(out, group.list.to_bits(), &mut flags, 0);
    put_amount(out, group.priced.to_bits(), &mut flags, 1);
    put_amount(out, group.quantity.0, &mut flags, 2);
    out[flags_at] = flags;
}

/// The row `encode` wrote at `at`; None for bytes it did not write. `products`
/// caches the product codes met so far.
fn decode(at: &mut &[u8], contracts: &[ContractRef], products: &mut rustc_hash::FxHashMap<u64, crate::ids::Product>) -> Option<SpilledRow> {
    let [flags, cycle] = take::<2>(at)?;
    let cycle = [Cycle::Hourly, Cycle::Daily, Cycle::Monthly].get(usize::from(cycle)).copied()?;
    let line = u64::from_le_bytes(take(at)?);
    let org = u32::from_le_bytes(take(at)?) as usize;
    let owner_uin = u64::from_le_bytes(take(at)?);
    let address = u64::from_le_bytes(take(at)?);
    let product = match products.get(&address) {
        Some(&p) => p,
        None => {
            let p = crate::ids::product_at(usize::try_from(address).ok()?)?;
            products.insert(address, p);
            p
        }
    };
    let period_start = Ts(i64::from_le_bytes(take(at)?));
    let contract = match u32::from_le_bytes(take(at)?) {
        0 => None,
        n => Some(*contracts.get(n as usize - 1)?),
    };
    let list = Rated::from_bits(get_amount(at, flags, 0)?);
    let priced = Rated::from_bits(get_amount(at, flags, 1)?);
    let quantity = Exact8(get_amount(at, flags, 2)?);
    let key = GroupKey { owner_uin, product, cycle, period_start };
    let part = 0; // not read back: the part is the file's
    Some(SpilledRow { line, org, key, group: UsageGroup { list, priced, records: 1, quantity, contract }, part })
}

/// `entries` sorted, as `sort_unstable` sorts them: counted into buckets by the
/// top bits of their ids (digests, so the buckets are even), then each bucket
/// sorted on its own (4–8 entries; buckets of 16–32 and 8–16 left more to sort).
/// Sorted whole, the id shards' entries took ~3.6% of a 10M-row day's samples;
/// `dedupe_shard` now takes ~1.5 points less.
fn sorted_by_buckets(entries: Vec<(u128, u64, u64)>) -> Vec<(u128, u64, u64)> {
    let n = entries.len();
    let Some(&(first, _, _)) = entries.first() else { return entries };
    // Buckets by the `low` bits below an id shard's (its ids share their top
    // bits): `top` is an id's shard and bucket.
    let low = (n / 4).max(1).ilog2().min(16);
    let bits = crate::state::ID_SHARDS.trailing_zeros() + low;
    let top = |id: u128| (id >> (128 - bits)) as usize;
    let base = top(first) >> low << low;
    let buckets = 1usize << low;
    let mut starts = vec![0usize; buckets + 1];
    for &(id, _, _) in &entries {
        match top(id).checked_sub(base).filter(|&b| b < buckets) {
            Some(b) => starts[b + 1] += 1,
            // Not all of one shard: sorted whole.
            None => {
                let mut entries = entries;
                entries.sort_unstable();
                return entries;
            }
        }
    }
    for b in 0..buckets {
        starts[b + 1] += starts[b];
    }
    let mut out = vec![(0u128, 0u64, 0u64); n];
    let mut next = starts.clone();
    for entry in entries {
        let b = top(entry.0) - base;
        out[next[b]] = entry;
        next[b] += 1;
    }
    for w in starts.windows(2) {
        out[w[0]..w[1]].sort_unstable();
    }
    out
}

#[cfg(test)]
mod tests {
    proptest::proptest! {
        /// Sorted by buckets or whole: the same list, for entries of one id shard
        /// (ids repeated, as a day's duplicates are) and for any others.
        #[test]
        fn entries_sorted_by_buckets_as_sorted_whole(
            shard in 0u128..64,
            low in proptest::collection::vec((0u128..(1u128 << 122), 0u64..1000, 0u64..3), 0..3000),
            repeats in 0usize..50,
            stray in proptest::option::of(0u128..64),
        ) {
            let mut entries: Vec<(u128, u64, u64)> = low.iter().map(|&(id, line, content)| (shard << 122 | id, line, content)).collect();
            let again: Vec<(u128, u64, u64)> = entries.iter().take(repeats).map(|&(id, line, content)| (id, line + 1000, content)).collect();
            entries.extend(again);
            if let Some(other) = stray {
                entries.push((other << 122, 7, 0));
            }
            let mut whole = entries.clone();
            whole.sort_unstable();
            proptest::prop_assert_eq!(sorted_by_buckets(entries), whole);
        }
    }

    proptest::proptest! {
        /// A part's lines sorted with the packed key or the tuple: the order of
        /// the tuple (organization, owner, rank, cycle, period start), whether
        /// each cycle has one start (packed) or not (the tuple's fallback), for
        /// owners and organizations at the ends of their ranges.
        #[test]
        fn instant_lines_sorted_as_by_the_tuple(
            picks in proptest::collection::vec((0usize..4, 0usize..4, 0usize..3, 0usize..3, 0i64..3), 0..200),
            one_start in proptest::bool::ANY,
        ) {
            let orgs = [0usize, 1, 7, u32::MAX as usize];
            let owners = [1u64, 2, 1 << 40, u64::MAX];
            let products: Vec<crate::ids::Product> = ["cdn", "cvm", "cos"].iter().map(|p| crate::ids::intern_product(p)).collect();
            let cycles = [Cycle::Daily, Cycle::Hourly, Cycle::Monthly];
            let group = UsageGroup { list: Rated::ZERO, priced: Rated::ZERO, records: 1, quantity: Exact8(0), contract: None };
            let mut lines: PartLines = picks
                .iter()
                .enumerate()
                .map(|(i, &(o, u, p, c, s))| {
                    let period_start = Ts(if one_start { c as i64 } else { s });
                    (orgs[o], GroupKey { owner_uin: owners[u], product: products[p], cycle: cycles[c], period_start }, UsageGroup { records: i as u64, ..group.clone() })
                })
                .collect();
            // Ranks in the codes' text order: cdn, cos, cvm.
            let rank = |p: crate::ids::Product| ["cdn", "cos", "cvm"].iter().position(|c| *c == p).unwrap() as u32;
            let mut expected = lines.clone();
            expected.sort_by_key(|(org, key, g)| (*org, key.owner_uin, rank(key.product), key.cycle, key.period_start, g.records));
            sort_instant_lines(&mut lines, rank, 3);
            // Equal keys keep their order (the records count their first order).
            proptest::prop_assert_eq!(lines, expected);
        }
    }

    use super::*;
    use crate::reference::{ContractName, Contracts};

    /// One organization of two accounts an owner range (UINs 1, 2, ...): the hours
    /// are cut at UINs 3, 5, 7, ... (every second account).
    fn snapshot() -> Snapshot {
        let members: Vec<String> = (2..=2 * OWNER_RANGES)
            .map(|u| format!(r#"{{"uin":{u},"entity_id":"e1","dept_id":"root","join_mode":"created","joined_at":"2026-01-01T00:00:00+08:00"}}"#))
            .collect();
        let json = format!(
            r#"{{"snapshot_at":"2026-10-01T00:00:00+08:00","orgs":[{{"org_id":"org-1","created_at":"2026-01-01T00:00:00+08:00",
            "management_uin":1,"entities":[{{"entity_id":"e1"}}],"departments":[{{"dept_id":"root","parent_id":null}}],"members":[
            {{"uin":1,"entity_id":"e1","dept_id":"root","join_mode":"management","joined_at":"2026-01-01T00:00:00+08:00"}},{}]}}]}}"#,
            members.join(",")
        );
        Snapshot::from_json(json.as_bytes()).expect("a snapshot")
    }

    fn day() -> Day {
        Day::parse("2026-10-02").unwrap()
    }

    fn row(line: u64, owner: Uin, product: &str, cycle: Cycle, start: &str, list: i128, priced: i128) -> SpilledRow {
        let key = GroupKey { owner_uin: owner, product: intern_product(product), cycle, period_start: Ts::parse(start).unwrap() };
        let group = UsageGroup { list: Rated::from_bits(list), priced: Rated::from_bits(priced), records: 1, quantity: Exact8(line as i128), contract: None };
        SpilledRow { line, org: 0, key, group, part: 0 }
    }

    fn spill(dir: &Path, snapshot: &Snapshot, rows: &mut [SpilledRow]) -> UsageSpill {
        let mut spill = UsageSpill::new(&dir.join("rows"), day(), snapshot, &Contracts::default()).unwrap();
        for r in rows.iter_mut() {
            r.part = spill.part_of(&r.key);
        }
        spill.add(&[&*rows]);
        spill.finish().unwrap();
        spill
    }

    use crate::ids::intern_product;

    #[test]
    fn a_row_comes_back_as_it_was_written_whatever_its_amounts() {
        let name: ContractRef = ContractName::leak(7, "c-7");
        let numbers: rustc_hash::FxHashMap<usize, u32> = [(name as *const _ as usize, 1)].into_iter().collect();
        let mut products = rustc_hash::FxHashMap::default();
        for (cycle, list, priced, quantity, contract) in [
            (Cycle::Hourly, 1, 2, 3, None),
            (Cycle::Daily, i128::MAX, i128::MIN, -1, Some(name)),
            (Cycle::Monthly, i64::MAX as i128 + 1, i64::MIN as i128 - 1, i64::MIN as i128, None),
        ] {
            let mut r = row(u64::MAX, 100000000001, "cvm", cycle, "2026-10-01T00:00:00+08:00", list, priced);
            r.org = 12_345;
            r.group.quantity = Exact8(quantity);
            r.group.contract = contract;
            let mut bytes = Vec::new();
            encode(&r, &numbers, &mut bytes);
            let mut at = &bytes[..];
            let back = decode(&mut at, &[name], &mut products).expect("a row");
            assert!(at.is_empty(), "the whole row is read");
            assert_eq!((back.line, back.org, back.key, back.group), (r.line, r.org, r.key, r.group));
            // A row cut short is no row.
            assert!(decode(&mut &bytes[..bytes.len() - 1], &[name], &mut products).is_none());
        }
    }

    #[test]
    fn each_lines_rows_are_summed_exactly_and_handed_out_in_processing_order() {
        let snapshot = snapshot();
        let dir = tempfile::tempdir().unwrap();
        let mut rows = vec![
            row(2, 9, "cvm", Cycle::Hourly, "2026-10-02T05:00:00+08:00", 7, 5),
            row(3, 4, "cvm", Cycle::Hourly, "2026-10-02T05:00:00+08:00", 1, 1),
            row(4, 9, "cvm", Cycle::Hourly, "2026-10-02T05:00:00+08:00", 10_000_000_000_000_000_000, 3),
            row(5, 4, "cbs", Cycle::Hourly, "2026-10-02T05:00:00+08:00", 2, 2),
            // Late: the day before, ending at two instants.
            row(6, 9, "cvm", Cycle::Daily, "2026-10-01T00:00:00+08:00", 4, 4),
            row(7, 30, "cvm", Cycle::Hourly, "2026-10-01T03:00:00+08:00", 5, 5),
            // The last hour: an hourly and a daily line.
            row(8, 4, "cvm", Cycle::Daily, "2026-10-02T00:00:00+08:00", 6, 6),
            row(9, 4, "cvm", Cycle::Hourly, "2026-10-02T23:00:00+08:00", 8, 8),
        ];
        let spill = spill(dir.path(), &snapshot, &mut rows);
        assert_eq!(spill.rows(), 8);
        let mut all = Vec::new();
        for run in spill.runs(u64::MAX) {
            all.extend(spill.lines(&run, 1).unwrap().unwrap().remove(0));
        }
        let got: Vec<(Uin, &str, Cycle, String, i128, i128, u64)> = all
            .iter()
            .map(|(k, g)| (k.owner_uin, k.product.as_str(), k.cycle, k.period_start.to_string(), g.list.to_bits(), g.priced.to_bits(), g.records))
            .collect();
        let t = |s: &str| Ts::parse(s).unwrap().to_string();
        assert_eq!(
            got,
            [
                (30, "cvm", Cycle::Hourly, t("2026-10-01T03:00:00+08:00"), 5, 5, 1),
                (9, "cvm", Cycle::Daily, t("2026-10-01T00:00:00+08:00"), 4, 4, 1),
                (4, "cbs", Cycle::Hourly, t("2026-10-02T05:00:00+08:00"), 2, 2, 1),
                (4, "cvm", Cycle::Hourly, t("2026-10-02T05:00:00+08:00"), 1, 1, 1),
                (9, "cvm", Cycle::Hourly, t("2026-10-02T05:00:00+08:00"), 10_000_000_000_000_000_007, 8, 2),
                (4, "cvm", Cycle::Daily, t("2026-10-02T00:00:00+08:00"), 6, 6, 1),
                (4, "cvm", Cycle::Hourly, t("2026-10-02T23:00:00+08:00"), 8, 8, 1),
            ]
        );
        // The quantities (here the rows' file lines) are summed too.
        assert_eq!(all[4].1.quantity, Exact8(2 + 4));
        assert!(dir.path().join("rows").exists());
        drop(spill);
        assert!(!dir.path().join("rows").exists(), "the file is removed");
    }

    /// Write a spill's last full buffers, hand them back and finish it.
    fn write_and_finish(spill: &mut UsageSpill, mut writes: SpillWrites) {
        writes.write();
        spill.written(writes);
        spill.finish().unwrap();
    }

    #[test]
    fn rows_added_in_chunks_and_batches_whose_buffers_are_written_late_come_back_in_file_order() {
        let snapshot = snapshot();
        let hours = ["2026-10-02T05:00:00+08:00", "2026-10-02T06:00:00+08:00", "2026-10-02T23:00:00+08:00"];
        // 3,000 rows, each its own line (a product of its own), in three parts:
        // each part fills its buffer several times.
        let make = || -> Vec<SpilledRow> {
            (0..3000u64).map(|l| row(l + 2, [4, 9, 30][l as usize % 3], &format!("p{l}"), Cycle::Hourly, hours[l as usize % 3], l as i128, 1)).collect()
        };
        let (one, batched) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let mut rows = make();
        let whole = spill(one.path(), &snapshot, &mut rows);
        let mut rows = make();
        let mut late = UsageSpill::new(&batched.path().join("rows"), day(), &snapshot, &Contracts::default()).unwrap();
        for r in rows.iter_mut() {
            r.part = late.part_of(&r.key);
        }
        // As reading does: a batch's full buffers are written while the next
        // batch is added.
        let mut pending: Option<SpillWrites> = None;
        for batch in rows.chunks(101) {
            let chunks: Vec<&[SpilledRow]> = batch.chunks(17).collect();
            late.add(&chunks);
            if let Some(mut writes) = pending.take() {
                writes.write();
                late.written(writes);
            }
            pending = Some(late.take_writes());
        }
        write_and_finish(&mut late, pending.unwrap());
        let parts: Vec<usize> = (0..PARTS).filter(|&p| whole.parts[p].rows > 0).collect();
        assert_eq!(parts.len(), 3);
        for p in parts {
            assert!(late.parts[p].blocks.written.len() >= 3, "part {p} was written in several blocks");
            assert_eq!(late.parts[p].blocks.read(&late.file).unwrap(), whole.parts[p].blocks.read(&whole.file).unwrap());
        }
        let lines = |s: &UsageSpill| -> Vec<(Uin, String, Ts, i128)> {
            let all = s.runs(u64::MAX).iter().flat_map(|run| s.lines(run, 1).unwrap().unwrap().remove(0)).collect::<Vec<_>>();
            all.into_iter().map(|(k, g)| (k.owner_uin, k.product.to_string(), k.period_start, g.list.to_bits())).collect()
        };
        assert_eq!(lines(&late), lines(&whole));
        assert_eq!(lines(&late).len(), 3000);
    }

    #[test]
    fn rows_encoded_in_stretches_of_a_part_are_added_as_row_by_row() {
        let snapshot = snapshot();
        let hours = ["2026-10-02T05:00:00+08:00", "2026-10-02T23:00:00+08:00"];
        // Runs of 1 to 4 rows of one part (owner 4 or 30, each hour), 2,000 rows.
        let pattern = [(4, 0), (4, 0), (4, 0), (30, 1), (4, 1), (4, 1), (30, 0), (30, 0), (30, 0), (30, 0)];
        let make = || -> Vec<SpilledRow> {
            (0..2000u64)
                .map(|l| {
                    let (owner, hour) = pattern[l as usize % pattern.len()];
                    row(l + 2, owner, &format!("p{}", l % 7), Cycle::Hourly, hours[hour], l as i128 * 1_000_003, 1)
                })
                .collect()
        };
        let (one_by_one, encoded) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let new = |dir: &Path| UsageSpill::new(&dir.join("rows"), day(), &snapshot, &Contracts::default()).unwrap();
        let (mut single, mut whole) = (new(one_by_one.path()), new(encoded.path()));
        let mut rows = make();
        for r in rows.iter_mut() {
            r.part = single.part_of(&r.key);
        }
        for r in &rows {
            single.add(&[std::slice::from_ref(r)]);
        }
        // Two chunks of encoded rows, the second beginning inside a stretch.
        let (first, second) = rows.split_at(997);
        let chunks: Vec<EncodedRows> = [first, second]
            .iter()
            .map(|rows| {
                let mut e = EncodedRows::with_room(rows.len());
                rows.iter().for_each(|r| whole.encode(r, &mut e));
                e
            })
            .collect();
        let changes = |rows: &[SpilledRow]| 1 + rows.windows(2).filter(|w| w[0].part != w[1].part).count();
        assert_eq!(chunks[0].stretches.len(), changes(first));
        assert_eq!(chunks[1].stretches.len(), changes(second));
        assert_eq!(chunks.iter().map(|c| c.stretches.iter().map(|s| s.rows).sum::<u64>()).sum::<u64>(), 2000);
        whole.add_encoded(&chunks.iter().collect::<Vec<_>>());
        for s in [&mut single, &mut whole] {
            let writes = s.take_writes();
            write_and_finish(s, writes);
        }
        let parts: Vec<usize> = (0..PARTS).filter(|&p| single.parts[p].rows > 0).collect();
        assert_eq!(parts.len(), 4);
        for p in parts {
            assert_eq!(whole.parts[p].rows, single.parts[p].rows);
            assert_eq!(whole.parts[p].blocks.read(&whole.file).unwrap(), single.parts[p].blocks.read(&single.file).unwrap());
        }
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn a_buffer_that_cannot_be_written_late_fails_the_finish_naming_the_file() {
        // The spill's file, made at the first write, is a link to /dev/full (placed
        // after `new` removed what was there): the full buffers written while the
        // next batch is added fail (no space left). The first failure is kept, the
        // other writes skipped, and `finish` reports it with the file's path.
        let snapshot = snapshot();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("rows");
        let hours = ["2026-10-02T05:00:00+08:00", "2026-10-02T06:00:00+08:00", "2026-10-02T23:00:00+08:00"];
        let mut rows: Vec<SpilledRow> =
            (0..3000u64).map(|l| row(l + 2, [4, 9, 30][l as usize % 3], &format!("p{l}"), Cycle::Hourly, hours[l as usize % 3], l as i128, 1)).collect();
        let mut spill = UsageSpill::new(&path, day(), &snapshot, &Contracts::default()).unwrap();
        std::os::unix::fs::symlink("/dev/full", &path).unwrap();
        for r in rows.iter_mut() {
            r.part = spill.part_of(&r.key);
        }
        let mut failed_late = 0;
        for batch in rows.chunks(101) {
            spill.add(&[batch]);
            let mut writes = spill.take_writes();
            writes.write();
            failed_late += usize::from(writes.failed.is_some());
            spill.written(writes);
        }
        assert!(failed_late > 0, "a late write failed");
        assert!(spill.failed.is_some(), "the first late failure is kept for `finish`");
        let message = spill.finish().unwrap_err();
        assert!(message.starts_with(&format!("cannot write the day's usage rows aside in {}: ", path.display())), "{message}");
        assert!(message.contains("No space left on device"), "{message}");
    }

    #[test]
    fn runs_join_parts_and_end_before_an_hour_or_between_owners() {
        let snapshot = snapshot();
        let dir = tempfile::tempdir().unwrap();
        // Hour 5: owners 1 and 2 (range 0), 9 (range 4); hour 7: owner 30 (range 14).
        // A part beginning an hour's first range would end the run before it at
        // the hour's first instant (`KeyBound::at`).
        let mut rows = vec![
            row(2, 1, "cvm", Cycle::Hourly, "2026-10-02T04:00:00+08:00", 1, 1),
            row(3, 2, "cvm", Cycle::Hourly, "2026-10-02T04:00:00+08:00", 1, 1),
            row(4, 9, "cvm", Cycle::Hourly, "2026-10-02T04:00:00+08:00", 1, 1),
            row(5, 30, "cvm", Cycle::Hourly, "2026-10-02T06:00:00+08:00", 1, 1),
        ];
        let spill = spill(dir.path(), &snapshot, &mut rows);
        let r = OWNER_RANGES;
        assert_eq!([rows[0].part, rows[1].part, rows[2].part, rows[3].part], [1 + 4 * r, 1 + 4 * r, 1 + 4 * r + 4, 1 + 6 * r + 14]);
        // One run: everything.
        assert_eq!(spill.runs(4), [Run { parts: 0..PARTS, until: None }]);
        // A part a run, each ending where the next part begins: between the owners
        // of hour 5 (at range 4's first UIN, 9), then at range 14 of hour 7 (29).
        let runs = spill.runs(1);
        let until: Vec<Option<KeyBound>> = runs.iter().map(|r| r.until).collect();
        assert_eq!(until, [Some(KeyBound::lines_from(end_of_hour(5), 9)), Some(KeyBound::lines_from(end_of_hour(7), 29)), None]);
        assert_eq!(runs.iter().map(|r| r.parts.clone()).collect::<Vec<_>>(), [0..rows[2].part, rows[2].part..rows[3].part, rows[3].part..PARTS]);
        assert_eq!(lines_within_their_runs(&spill, &runs), [2, 1, 1]);
    }

    /// How many lines each of `runs` holds (of the first organization), each
    /// line checked to fall before its run's bound and at or after the one before.
    fn lines_within_their_runs(spill: &UsageSpill, runs: &[Run]) -> Vec<usize> {
        let mut counts = Vec::new();
        for (r, run) in runs.iter().enumerate() {
            let lines = spill.lines(run, 1).unwrap().unwrap().remove(0);
            for (key, _) in &lines {
                assert!(run.until.is_none_or(|u| u.is_after_line(key)));
                assert!(r == 0 || !runs[r - 1].until.unwrap().is_after_line(key));
            }
            counts.push(lines.len());
        }
        counts
    }

    /// The instant `hour` hours into the day less a nanosecond: that of the lines
    /// of the hour ending then.
    fn end_of_hour(hour: i64) -> Ts {
        Ts(day().start().0 + hour * NANOS_PER_HOUR).pred()
    }

    /// The last hour is cut `RANGE_STEP` times finer than the others (its daily
    /// and monthly lines make large parts), each earlier hour's range being whole
    /// ranges of it: a run beginning in it ends the one before at its range's
    /// first UIN.
    #[test]
    fn the_last_hour_is_cut_finer_than_the_others() {
        let snapshot = snapshot();
        let dir = tempfile::tempdir().unwrap();
        // 128 accounts (UINs 1 to 128): the last hour's 256 ranges begin at UINs
        // 1, 2, 2, 3, 3, ... (range k at 1 + (k + 1) / 2), an earlier hour's 64 at
        // 1, 3, 5, ...: owner 9 is in range 4 of hour 22 and 17 of the last hour,
        // owner 30 in range 14 and 59.
        let mut rows = vec![
            row(2, 9, "cvm", Cycle::Hourly, "2026-10-02T22:00:00+08:00", 1, 1),
            row(3, 30, "cvm", Cycle::Hourly, "2026-10-02T22:00:00+08:00", 1, 1),
            row(4, 9, "cvm", Cycle::Hourly, "2026-10-02T23:00:00+08:00", 1, 1),
            row(5, 30, "cos", Cycle::Daily, "2026-10-02T00:00:00+08:00", 1, 1),
        ];
        let spill = spill(dir.path(), &snapshot, &mut rows);
        let (r, last) = (OWNER_RANGES, 1 + 23 * OWNER_RANGES);
        assert_eq!([rows[0].part, rows[1].part, rows[2].part, rows[3].part], [1 + 22 * r + 4, 1 + 22 * r + 14, last + 17, last + 59]);
        let runs = spill.runs(1);
        let until: Vec<Option<KeyBound>> = runs.iter().map(|r| r.until).collect();
        assert_eq!(until, [Some(KeyBound::lines_from(end_of_hour(23), 29)), Some(KeyBound::lines_from(end_of_hour(24), 9)), Some(KeyBound::lines_from(end_of_hour(24), 30)), None]);
        let parts: Vec<usize> = rows.iter().map(|r| r.part).collect();
        assert_eq!(runs.iter().map(|r| r.parts.clone()).collect::<Vec<_>>(), [0..parts[1], parts[1]..parts[2], parts[2]..parts[3], parts[3]..PARTS]);
        assert_eq!(lines_within_their_runs(&spill, &runs), [1, 1, 1, 1]);
    }

    #[test]
    fn a_days_repeated_ids_are_its_later_rows_each_compared_with_the_first() {
        let snapshot = snapshot();
        let dir = tempfile::tempdir().unwrap();
        let mut spill = UsageSpill::new(&dir.path().join("rows"), day(), &snapshot, &Contracts::default()).unwrap();
        spill.expect_ids(10);
        // Ids of one shard (the top bits): 5 (lines 2, 7, 9), 3 (line 4), 8 (lines 5, 6).
        let id = |low: u128| (7u128 << 122) | low;
        let shard = crate::state::UsageIds::shard_of(id(0));
        for (low, content, line) in [(5, 50, 2), (3, 30, 4), (8, 80, 5), (8, 80, 6), (5, 51, 7), (5, 50, 9)] {
            spill.id_shards_mut()[shard].note(id(low), content, line, || format!("u-{low}"));
        }
        spill.finish().unwrap();
        let found = spill.dedupe_shard(shard, day()).unwrap();
        let seen = |content| crate::state::SeenUsage { day: day(), content };
        assert_eq!(found.firsts, [(id(3), seen(30)), (id(5), seen(50)), (id(8), seen(80))]);
        // Line 7 differs from line 2 (the first), line 9 does not; line 6 repeats line 5.
        let mut later = found.later;
        later.sort_unstable();
        assert_eq!(later, [(6, true), (7, false), (9, true)]);
        // Every later row kept its id's text (the filter may keep others too).
        let texts = spill.take_suspects();
        for (line, text) in [(6, "u-8"), (7, "u-5"), (9, "u-5")] {
            assert_eq!(texts.get(&line).map(String::as_str), Some(text));
        }
        assert_eq!(spill.dedupe_shard(shard ^ 1, day()).unwrap(), ShardDuplicates::default());
    }

    #[test]
    fn a_sum_beyond_the_exact_range_names_the_first_such_row_in_file_order() {
        let snapshot = snapshot();
        let dir = tempfile::tempdir().unwrap();
        let third = i128::MAX / 3 + 1;
        let mut rows = vec![
            // Line A (hour 1) leaves the range at its third row, file line 9.
            row(2, 4, "cvm", Cycle::Hourly, "2026-10-02T00:00:00+08:00", third, 0),
            row(5, 4, "cvm", Cycle::Hourly, "2026-10-02T00:00:00+08:00", third, 0),
            row(9, 4, "cvm", Cycle::Hourly, "2026-10-02T00:00:00+08:00", third, 0),
            // Line B (hour 6, another run) leaves it earlier, at file line 7: its priced sum.
            row(3, 30, "cos", Cycle::Hourly, "2026-10-02T05:00:00+08:00", 1, i128::MAX),
            row(7, 30, "cos", Cycle::Hourly, "2026-10-02T05:00:00+08:00", 1, 1),
        ];
        let spill = spill(dir.path(), &snapshot, &mut rows);
        let runs = spill.runs(1);
        assert_eq!(runs.len(), 2);
        // The first run meets line A's overflow, and names line B's row, the first in the file.
        assert_eq!(spill.lines(&runs[0], 1).unwrap().unwrap_err(), Overflow(7));
        assert_eq!(spill.first_overflow().unwrap(), Some(Overflow(7)));
        assert_eq!(
            Overflow(7).unusable().to_string(),
            "usage.csv: line 7: the settlement line's sum exceeds the engine's exact range"
        );
    }
}
