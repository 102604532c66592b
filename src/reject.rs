//! Reject reasons (SPEC §14) and rejected rows.

use std::fmt;

/// The reasons of SPEC §14, in its order: a row breaking several rules is reported
/// with the first (smallest) one.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub enum Reason {
    BadRow,
    BadTimestamp,
    BadAmountScale,
    BadValue,
    BadOrderAmounts,
    ListAmountMismatch,
    PeriodNotEnded,
    SpansPeriods,
    FutureTime,
    MonthClosed,
    UnknownAccount,
    BeforeOrg,
    ConflictingDuplicate,
    UnknownResource,
    RefundExceedsPaid,
}

impl Reason {
    /// Every reason, in SPEC §14's order (`ALL[r as usize] == r`).
    pub const ALL: [Reason; 15] = [
        Reason::BadRow,
        Reason::BadTimestamp,
        Reason::BadAmountScale,
        Reason::BadValue,
        Reason::BadOrderAmounts,
        Reason::ListAmountMismatch,
        Reason::PeriodNotEnded,
        Reason::SpansPeriods,
        Reason::FutureTime,
        Reason::MonthClosed,
        Reason::UnknownAccount,
        Reason::BeforeOrg,
        Reason::ConflictingDuplicate,
        Reason::UnknownResource,
        Reason::RefundExceedsPaid,
    ];

    pub fn code(self) -> &'static str {
        match self {
            Reason::BadRow => "bad_row",
            Reason::BadTimestamp => "bad_timestamp",
            Reason::BadAmountScale => "bad_amount_scale",
            Reason::BadValue => "bad_value",
            Reason::BadOrderAmounts => "bad_order_amounts",
            Reason::ListAmountMismatch => "list_amount_mismatch",
            Reason::PeriodNotEnded => "period_not_ended",
            Reason::SpansPeriods => "spans_periods",
            Reason::FutureTime => "future_time",
            Reason::MonthClosed => "month_closed",
            Reason::UnknownAccount => "unknown_account",
            Reason::BeforeOrg => "before_org",
            Reason::ConflictingDuplicate => "conflicting_duplicate",
            Reason::UnknownResource => "unknown_resource",
            Reason::RefundExceedsPaid => "refund_exceeds_paid",
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

/// A row refused with the first reason it breaks and a message for people.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    pub reason: Reason,
    pub message: String,
}

impl Refusal {
    pub fn new(reason: Reason, message: impl Into<String>) -> Refusal {
        Refusal { reason, message: message.into() }
    }
}

/// One row of `rejects.csv`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Reject {
    pub file: &'static str,
    pub line: u64,
    pub id: String,
    pub reason: Reason,
    pub message: String,
}

/// A day's usage rejects in file order as reading decides them: the first
/// `HELD` in memory, the rest written aside to an unnamed file in the output's
/// state folder (gone when the spill is dropped, or when the process ends,
/// however it ends). A rejected row held in memory cost ~300 bytes (its id and
/// message as strings) until rejects.csv was written: a day whose upstream sent
/// a million malformed rows held ~300 MB more. Read back once, in order
/// (`into_rows`), to be merged with the rejects still held elsewhere.
#[derive(Debug, Default)]
pub struct RejectSpill {
    file_name: &'static str,
    /// Where the rows beyond `HELD` go; none: all are held.
    dir: Option<std::path::PathBuf>,
    held: Vec<Reject>,
    aside: Option<std::io::BufWriter<std::fs::File>>,
    written: u64,
    /// The first failure to write one aside: the day fails with it.
    failed: Option<String>,
}

/// How many rejects a spill holds in memory before it writes them aside.
const HELD: usize = 4096;

impl RejectSpill {
    /// The rejects of `file_name`, written aside in `dir` beyond the first `HELD`.
    pub fn new(file_name: &'static str, dir: Option<std::path::PathBuf>) -> RejectSpill {
        RejectSpill { file_name, dir, ..RejectSpill::default() }
    }

    /// How many rejects it has.
    pub fn len(&self) -> u64 {
        self.held.len() as u64 + self.written
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Add the next reject of the file (each after the one before in the file).
    pub fn push(&mut self, reject: Reject) {
        debug_assert_eq!(reject.file, self.file_name);
        let Some(dir) = self.dir.as_ref().filter(|_| self.held.len() >= HELD) else {
            self.held.push(reject);
            return;
        };
        if self.failed.is_some() {
            return;
        }
        if self.aside.is_none() {
            match std::fs::create_dir_all(dir).and_then(|()| tempfile::tempfile_in(dir)) {
                Ok(file) => self.aside = Some(std::io::BufWriter::with_capacity(1 << 16, file)),
                Err(e) => {
                    self.failed = Some(format!("cannot write the day's rejected rows aside in {}: {e}", dir.display()));
                    return;
                }
            }
        }
        let aside = self.aside.as_mut().expect("made just above");
        let mut record = Vec::with_capacity(17 + reject.id.len() + reject.message.len());
        record.extend_from_slice(&reject.line.to_le_bytes());
        record.push(reject.reason as u8);
        for text in [&reject.id, &reject.message] {
            record.extend_from_slice(&(text.len() as u32).to_le_bytes());
            record.extend_from_slice(text.as_bytes());
        }
        match std::io::Write::write_all(aside, &record) {
            Ok(()) => self.written += 1,
            Err(e) => self.failed = Some(format!("cannot write the day's rejected rows aside: {e}")),
        }
    }

    /// Every reject, in the order they came.
    pub fn into_rows(self) -> Result<impl Iterator<Item = Result<Reject, String>>, String> {
        use std::io::{Read, Seek};
        if let Some(failed) = self.failed {
            return Err(failed);
        }
        let file_name = self.file_name;
        let reader = match self.aside {
            None => None,
            Some(aside) => {
                let mut file = aside.into_inner().map_err(|e| format!("cannot write the day's rejected rows aside: {}", e.error()))?;
                file.seek(std::io::SeekFrom::Start(0)).map_err(|e| format!("cannot read the day's rejected rows back: {e}"))?;
                Some(std::io::BufReader::with_capacity(1 << 16, file))
            }
        };
        let mut left = self.written;
        let mut reader = reader;
        let back = std::iter::from_fn(move || {
            if left == 0 {
                return None;
            }
            left -= 1;
            let reader = reader.as_mut().expect("rows were written aside");
            let mut read = || -> std::io::Result<Reject> {
                let mut head = [0u8; 9];
                reader.read_exact(&mut head)?;
                let line = u64::from_le_bytes(head[..8].try_into().expect("8 bytes"));
                let reason = Reason::ALL.get(head[8] as usize).copied().ok_or_else(|| std::io::Error::other("unknown reason"))?;
                let mut texts = [String::new(), String::new()];
                for text in &mut texts {
                    let mut len = [0u8; 4];
                    reader.read_exact(&mut len)?;
                    let mut bytes = vec![0u8; u32::from_le_bytes(len) as usize];
                    reader.read_exact(&mut bytes)?;
                    *text = String::from_utf8(bytes).map_err(std::io::Error::other)?;
                }
                let [id, message] = texts;
                Ok(Reject { file: file_name, line, id, reason, message })
            };
            Some(read().map_err(|e| format!("cannot read the day's rejected rows back: {e}")))
        });
        Ok(self.held.into_iter().map(Ok).chain(back))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_written_aside_come_back_whole_and_in_order_and_leave_no_file() {
        let dir = tempfile::tempdir().unwrap();
        let mut spill = RejectSpill::new("usage.csv", Some(dir.path().to_path_buf()));
        let reject = |i: u64| Reject {
            file: "usage.csv",
            line: 2 + 3 * i,
            id: if i.is_multiple_of(7) { String::new() } else { format!("u{i},\"x\"") },
            reason: Reason::ALL[(i % 15) as usize],
            message: format!("row {i}: 值 {}\nend", "a".repeat((i % 300) as usize)),
        };
        let n = 3 * HELD as u64 + 5;
        for i in 0..n {
            spill.push(reject(i));
        }
        assert_eq!(spill.len(), n);
        // The file written aside has no name: the folder shows nothing.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
        let back: Vec<Reject> = spill.into_rows().unwrap().collect::<Result<_, _>>().unwrap();
        assert_eq!(back, (0..n).map(reject).collect::<Vec<_>>());
        // Without a folder every reject is held.
        let mut held = RejectSpill::new("usage.csv", None);
        for i in 0..HELD as u64 + 1 {
            held.push(reject(i));
        }
        assert_eq!(held.into_rows().unwrap().count(), HELD + 1);
    }

    #[test]
    fn every_reason_is_at_its_place_in_all() {
        for (i, r) in Reason::ALL.iter().enumerate() {
            assert_eq!(*r as usize, i, "{r}");
        }
    }
}
