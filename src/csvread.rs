//! Reading input CSV files: columns by header name, physical line numbers, `bad_row`.
//!
//! SPEC §1.4. This is the only place that touches raw CSV bytes; callers receive
//! each data row as its fields, in the order they asked for columns, or as a
//! `bad_row` with its line.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{BufReader, Read};
use std::path::Path;

/// Physical line numbers. The csv crate's own line counter skips blank lines and
/// miscounts CRLF files, and a record's byte position is where the previous record's
/// terminator ended, not where the record starts. So this wrapper notes where each
/// `\r` and `\n` passes; a record really starts at the first byte after its
/// reported position that is neither, and its line is 1 + the `\n`s before that.
#[derive(Default)]
struct NewlineLog {
    bytes_seen: u64,
    /// Offsets of `\r` (false) and `\n` (true) not yet passed.
    pending: VecDeque<(u64, bool)>,
    newlines_before: u64,
}

struct CountingReader<R> {
    inner: R,
    log: NewlineLog,
}

impl<R: Read> Read for CountingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        let log = &mut self.log;
        let base = log.bytes_seen;
        for i in memchr::memchr2_iter(b'\n', b'\r', &buf[..n]) {
            log.pending.push_back((base + i as u64, buf[i] == b'\n'));
        }
        log.bytes_seen += n as u64;
        Ok(n)
    }
}

impl NewlineLog {
    /// The physical line of the record the csv crate reports at `offset`;
    /// offsets must not decrease.
    fn line_of(&mut self, offset: u64) -> u64 {
        while let Some(&(at, is_newline)) = self.pending.front() {
            if at >= offset {
                break;
            }
            self.pending.pop_front();
            self.newlines_before += u64::from(is_newline);
        }
        // Line terminators and blank lines between the previous record and this one.
        let mut next = offset;
        while let Some(&(at, is_newline)) = self.pending.front() {
            if at != next {
                break;
            }
            self.pending.pop_front();
            self.newlines_before += u64::from(is_newline);
            next += 1;
        }
        self.newlines_before + 1
    }
}

/// What a file needs: its required and optional column names.
pub struct Columns<'a> {
    pub required: &'a [&'a str],
    pub optional: &'a [&'a str],
}

/// A file that cannot be used at all (exit 2).
#[derive(Debug, thiserror::Error)]
#[error("{file}: {message}")]
pub struct UnusableFile {
    pub file: String,
    pub message: String,
}

/// The fields of one good row: required columns, then optional ones, in the order
/// asked for; an absent optional column reads as "".
pub struct Fields<'a> {
    record: &'a csv::StringRecord,
    indices: &'a [Option<usize>],
}

impl<'a> Fields<'a> {
    pub fn new(record: &'a csv::StringRecord, indices: &'a [Option<usize>]) -> Fields<'a> {
        Fields { record, indices }
    }
    pub fn get(&self, column: usize) -> &'a str {
        // Every field was checked to be UTF-8 before a `Fields` is handed out.
        self.indices[column].map(|i| &self.record[i]).unwrap_or("")
    }
    /// How many columns were asked for.
    pub fn len(&self) -> usize {
        self.indices.len()
    }
    pub fn is_empty(&self) -> bool {
        self.indices.is_empty()
    }
    /// Every field, as `get` gives them.
    pub fn all(&self) -> Vec<&'a str> {
        (0..self.indices.len()).map(|i| self.get(i)).collect()
    }
}

/// One data row: either its fields, or a `bad_row`.
pub enum Row<'a> {
    Fields { line: u64, fields: Fields<'a> },
    Bad { line: u64, id: String, message: String },
}

/// Read `path` (None when the file does not exist) and call `on_row` for each
/// data row. `id_column` names the column whose text identifies a row in rejects.
pub fn read_rows(
    path: &Path,
    label: &str,
    columns: &Columns,
    id_column: Option<&str>,
    mut on_row: impl FnMut(Row<'_>),
) -> Result<bool, UnusableFile> {
    let unusable = |message: String| UnusableFile { file: label.to_string(), message };
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(unusable(format!("cannot open {}: {e}", path.display()))),
    };
    read_rows_from(BufReader::with_capacity(1 << 20, file), label, columns, id_column, &mut on_row)?;
    Ok(true)
}

pub fn read_rows_from<R: Read>(
    input: R,
    label: &str,
    columns: &Columns,
    id_column: Option<&str>,
    on_row: &mut dyn FnMut(Row<'_>),
) -> Result<(), UnusableFile> {
    let mut reader = RowReader::new(input, label, columns, id_column)?;
    let mut batch = Vec::new();
    while reader.next_batch(&mut batch, 4096)? {
        for row in &batch {
            on_row(match row {
                RawRow::Record { line, record } => Row::Fields { line: *line, fields: reader.fields(record) },
                RawRow::Bad { line, id, message } => Row::Bad { line: *line, id: id.clone(), message: message.clone() },
            });
        }
    }
    Ok(())
}

/// A data row read but not yet looked at: a UTF-8 record of the header's width, or
/// a `bad_row`.
pub enum RawRow {
    Record { line: u64, record: csv::StringRecord },
    Bad { line: u64, id: String, message: String },
}

/// Reads a file's data rows in batches (so they can be checked in parallel while
/// the next batch is read). The header has been read and checked on creation.
pub struct RowReader<R: Read> {
    reader: csv::Reader<CountingReader<R>>,
    label: String,
    header: Vec<String>,
    indices: Vec<Option<usize>>,
    id_index: Option<usize>,
    /// Record buffers of the previous batch, reused.
    spare: Vec<csv::ByteRecord>,
}

impl RowReader<BufReader<File>> {
    /// Open `path`; None when the file does not exist.
    pub fn open(path: &Path, label: &str, columns: &Columns, id_column: Option<&str>) -> Result<Option<Self>, UnusableFile> {
        let file = match File::open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(UnusableFile { file: label.to_string(), message: format!("cannot open {}: {e}", path.display()) }),
        };
        RowReader::new(BufReader::with_capacity(1 << 20, file), label, columns, id_column).map(Some)
    }
}

impl<R: Read> RowReader<R> {
    pub fn new(input: R, label: &str, columns: &Columns, id_column: Option<&str>) -> Result<Self, UnusableFile> {
        let unusable = |message: String| UnusableFile { file: label.to_string(), message };
        let counting = CountingReader { inner: input, log: NewlineLog::default() };
        let mut reader = csv::ReaderBuilder::new().has_headers(false).flexible(true).from_reader(counting);
        let mut record = csv::ByteRecord::new();
        let header_read = reader
            .read_byte_record(&mut record)
            .map_err(|e| unusable(format!("cannot read the header row: {e}")))?;
        if !header_read {
            return Err(unusable("the file is empty: it has no header row".into()));
        }
        let mut header: Vec<String> = Vec::with_capacity(record.len());
        for (i, field) in record.iter().enumerate() {
            let mut name = std::str::from_utf8(field)
                .map_err(|_| unusable(format!("header column {} is not valid UTF-8", i + 1)))?
                .to_string();
            if i == 0 {
                // A leading UTF-8 byte-order mark is not part of the first name.
                if let Some(stripped) = name.strip_prefix('\u{feff}') {
                    name = stripped.to_string();
                }
            }
            header.push(name);
        }
        let find = |name: &str| -> Result<Option<usize>, UnusableFile> {
            let hits: Vec<usize> = header.iter().enumerate().filter(|(_, h)| *h == name).map(|(i, _)| i).collect();
            match hits.len() {
                0 => Ok(None),
                1 => Ok(Some(hits[0])),
                _ => Err(unusable(format!("column {name:?} appears {} times in the header", hits.len()))),
            }
        };
        let mut indices: Vec<Option<usize>> = Vec::new();
        let mut missing = Vec::new();
        for name in columns.required {
            let idx = find(name)?;
            if idx.is_none() {
                missing.push(*name);
            }
            indices.push(idx);
        }
        if !missing.is_empty() {
            return Err(unusable(format!("required column(s) missing from the header: {}", missing.join(", "))));
        }
        for name in columns.optional {
            indices.push(find(name)?);
        }
        let id_index = id_column.and_then(|c| header.iter().position(|h| h == c));
        Ok(RowReader { reader, label: label.to_string(), header, indices, id_index, spare: Vec::new() })
    }

    /// The fields of a record of this file, in the order the columns were asked for.
    pub fn fields<'r>(&'r self, record: &'r csv::StringRecord) -> Fields<'r> {
        Fields { record, indices: &self.indices }
    }

    /// The column positions `fields` uses (to build `Fields` on other threads).
    pub fn indices(&self) -> &[Option<usize>] {
        &self.indices
    }

    fn line_of(&mut self, position: Option<&csv::Position>) -> u64 {
        match position {
            Some(p) => self.reader.get_mut().log.line_of(p.byte()),
            None => 0,
        }
    }

    /// Replace `batch` with up to `max` next rows; false once the file is done.
    pub fn next_batch(&mut self, batch: &mut Vec<RawRow>, max: usize) -> Result<bool, UnusableFile> {
        for row in batch.drain(..) {
            if let RawRow::Record { record, .. } = row {
                self.spare.push(record.into_byte_record());
            }
        }
        let width = self.header.len();
        while batch.len() < max {
            // A new record starts with room for a usual row: grown from nothing
            // it was reallocated ~10 times (1.2% of a 1M-row day's instructions).
            let mut record = self.spare.pop().unwrap_or_else(|| csv::ByteRecord::with_capacity(256, width));
            match self.reader.read_byte_record(&mut record) {
                Ok(false) => break,
                Ok(true) => {}
                Err(e) => {
                    let line = self.line_of(e.position());
                    if matches!(e.kind(), csv::ErrorKind::Io(_)) {
                        return Err(UnusableFile { file: self.label.clone(), message: format!("read error near line {line}: {e}") });
                    }
                    let message = format!("the CSV reader cannot parse the row: {e}");
                    batch.push(RawRow::Bad { line, id: String::new(), message });
                    self.spare.push(record);
                    continue;
                }
            }
            let line = self.line_of(record.position());
            if record.len() != width {
                let message = format!("the row has {} fields, the header has {width}", record.len());
                batch.push(RawRow::Bad { line, id: row_id(&record, self.id_index), message });
                self.spare.push(record);
                continue;
            }
            // One UTF-8 check of the whole record.
            match csv::StringRecord::from_byte_record(record) {
                Ok(text) => batch.push(RawRow::Record { line, record: text }),
                Err(e) => {
                    let record = e.into_byte_record();
                    let bad = record.iter().position(|f| std::str::from_utf8(f).is_err()).unwrap_or(0);
                    let message = format!("field {:?} is not valid UTF-8", self.header[bad]);
                    batch.push(RawRow::Bad { line, id: row_id(&record, self.id_index), message });
                    self.spare.push(record);
                }
            }
        }
        Ok(!batch.is_empty())
    }
}

/// The id of a broken row, when its id column holds a valid id.
fn row_id(record: &csv::ByteRecord, id_index: Option<usize>) -> String {
    id_index
        .and_then(|i| record.get(i))
        .and_then(|b| std::str::from_utf8(b).ok())
        .filter(|text| crate::ids::is_valid_id(text))
        .unwrap_or("")
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn collect(text: &[u8]) -> Result<Vec<String>, UnusableFile> {
        let mut out = Vec::new();
        let cols = Columns { required: &["a", "b"], optional: &["c"] };
        read_rows_from(text, "t.csv", &cols, Some("a"), &mut |row| match row {
            Row::Fields { line, fields } => out.push(format!("{line}:{}", fields.all().join("/"))),
            Row::Bad { line, id, message } => out.push(format!("{line}:bad:{id}:{message}")),
        })?;
        Ok(out)
    }

    #[test]
    fn bom_crlf_blank_lines_and_quotes() {
        let rows = collect(b"\xef\xbb\xbfb,a\r\n1,2\r\n\r\n\"x,y\",3\r\n").unwrap();
        assert_eq!(rows, vec!["2:2/1/", "4:3/x,y/"]);
    }

    #[test]
    fn wrong_width_and_bad_utf8_are_bad_rows() {
        let rows = collect(b"a,b\n1\n2,\xff\n3,4\n").unwrap();
        assert_eq!(rows[0], "2:bad:1:the row has 1 fields, the header has 2");
        assert_eq!(rows[1], "3:bad:2:field \"b\" is not valid UTF-8");
        assert_eq!(rows[2], "4:3/4/");
    }

    #[test]
    fn missing_or_repeated_columns_make_the_file_unusable() {
        assert!(collect(b"a\n1\n").unwrap_err().message.contains("missing"));
        assert!(collect(b"a,b,a\n1,2,3\n").unwrap_err().message.contains("appears 2 times"));
        assert!(collect(b"").unwrap_err().message.contains("empty"));
    }
}
