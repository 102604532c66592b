//! Reading input CSV files: columns by header name, physical line numbers, `bad_row`.
//!
//! SPEC §1.4. This is the only place that touches raw CSV bytes; callers receive
//! each data row as its fields, in the order they asked for columns, or as a
//! `bad_row` with its line.

use std::fs::File;
use std::io::Read;
use std::path::Path;

/// The records of a CSV file with their physical lines, as the csv crate reads
/// them (its default dialect: `,`, `"` quotes doubled inside quotes, `\r`, `\n`
/// or `\r\n` ending a record, blank lines skipped, a leading UTF-8 BOM dropped),
/// read faster: a line with no `"` and no `\r` is split at its commas here, which
/// is exactly what the csv crate's parser (csv_core) makes of it; any other
/// record, and the header, is handed to csv_core itself. csv_core was a tenth of
/// a 1M-row day's instructions, ~2,100 a usage row (`fast_records_are_the_csv_crates`
/// compares both on random files full of quotes, CRs and blank lines).
///
/// A record's line is 1 + the `\n`s before its first byte (the csv crate's own
/// line counter skips blank lines and miscounts CRLF files).
struct RecordSource<R> {
    inner: R,
    buf: Vec<u8>,
    /// The unread bytes are `buf[pos..end]`.
    pos: usize,
    end: usize,
    eof: bool,
    /// The bytes up to `scanned` were looked at for `"` and `\r`: `special` is
    /// the first at or after `pos`, or `scanned` when there is none before it.
    special: usize,
    scanned: usize,
    /// `\n`s before `pos`.
    newlines: u64,
    /// Whether the header was read (it always goes through csv_core, which drops the BOM).
    started: bool,
    core: csv_core::Reader,
    out: Vec<u8>,
    ends: Vec<usize>,
}

const SOURCE_BUFFER: usize = 1 << 20;

impl<R: Read> RecordSource<R> {
    fn new(inner: R) -> RecordSource<R> {
        RecordSource::with_buffer(inner, SOURCE_BUFFER)
    }

    fn with_buffer(inner: R, size: usize) -> RecordSource<R> {
        RecordSource {
            inner,
            buf: vec![0; size.max(1)],
            pos: 0,
            end: 0,
            eof: false,
            special: 0,
            scanned: 0,
            newlines: 0,
            started: false,
            core: csv_core::Reader::new(),
            out: vec![0; 1024],
            ends: vec![0; 64],
        }
    }

    /// The line a read error is reported near.
    fn line(&self) -> u64 {
        self.newlines + 1
    }

    /// Read more bytes after the unread ones (the buffer grows when they fill it);
    /// false at the end of the input.
    fn fill(&mut self) -> std::io::Result<bool> {
        if self.eof {
            return Ok(false);
        }
        self.forget_passed_special();
        self.buf.copy_within(self.pos..self.end, 0);
        self.end -= self.pos;
        self.special -= self.pos;
        self.scanned -= self.pos;
        self.pos = 0;
        if self.end == self.buf.len() {
            self.buf.resize(self.buf.len() * 2, 0);
        }
        let n = loop {
            match self.inner.read(&mut self.buf[self.end..]) {
                Ok(n) => break n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        };
        self.end += n;
        self.eof = n == 0;
        Ok(n > 0)
    }

    /// The next record into `record`, with its line; None after the last.
    fn next(&mut self, record: &mut RawRecord) -> std::io::Result<Option<u64>> {
        if !self.started {
            self.started = true;
            // csv_core drops a BOM only from its first input, and only when the
            // input holds it whole; an input that was nothing but the BOM would
            // then read as the end: so it first gets more than the BOM, if the
            // file has more.
            while self.end - self.pos <= 3 && self.fill()? {}
            return self.by_csv_core(record);
        }
        loop {
            if self.pos == self.end && !self.fill()? {
                return Ok(None);
            }
            // Blank lines and the ends of CRLF terminators: csv_core skips them
            // before a record too.
            match self.buf[self.pos] {
                b'\n' => {
                    self.pos += 1;
                    self.newlines += 1;
                    continue;
                }
                b'\r' => {
                    self.pos += 1;
                    continue;
                }
                _ => {}
            }
            let Some(at) = memchr::memchr(b'\n', &self.buf[self.pos..self.end]) else {
                if self.fill()? {
                    continue;
                }
                // The last line, with no terminator.
                return self.line_or_csv_core(self.end, record);
            };
            return self.line_or_csv_core(self.pos + at, record);
        }
    }

    /// The record of the line `buf[pos..line_end]`: split here when it has no
    /// `"` or `\r`, else by csv_core (a quoted field can run over lines).
    fn line_or_csv_core(&mut self, line_end: usize, record: &mut RawRecord) -> std::io::Result<Option<u64>> {
        self.forget_passed_special();
        if self.special == self.scanned && self.scanned < line_end {
            let from = self.scanned;
            self.special = memchr::memchr2(b'"', b'\r', &self.buf[from..self.end]).map_or(self.end, |i| from + i);
            self.scanned = self.end;
        }
        if self.special < line_end {
            return self.by_csv_core(record);
        }
        let line = &self.buf[self.pos..line_end];
        let len = record_length(line.len())?;
        record.clear();
        record.bytes.extend_from_slice(line);
        record.ascii = split_at_commas(&record.bytes, &mut record.bounds);
        debug_assert_eq!(record.bounds.last().map(|b| b.1), Some(len));
        let number = self.newlines + 1;
        if line_end < self.end {
            self.pos = line_end + 1;
            self.newlines += 1;
        } else {
            self.pos = line_end;
        }
        Ok(Some(number))
    }

    /// csv_core read past the special byte found: look again from `pos`.
    fn forget_passed_special(&mut self) {
        if self.special < self.pos {
            self.special = self.pos;
            self.scanned = self.pos;
        }
    }

    /// The next record as csv_core reads it, from `pos`: the file's start (the
    /// header) or a record's first byte (the line is then the one `pos` is on).
    fn by_csv_core(&mut self, record: &mut RawRecord) -> std::io::Result<Option<u64>> {
        use csv_core::ReadRecordResult::*;
        let line = self.newlines + 1;
        let (mut outlen, mut endlen) = (0, 0);
        loop {
            if self.pos == self.end {
                // At the end of the input csv_core is given no bytes: it then
                // ends the last record or reports the end.
                self.fill()?;
            }
            let input = &self.buf[self.pos..self.end];
            let (result, nin, nout, nend) = self.core.read_record(input, &mut self.out[outlen..], &mut self.ends[endlen..]);
            self.newlines += memchr::memchr_iter(b'\n', &input[..nin]).count() as u64;
            self.pos += nin;
            outlen += nout;
            endlen += nend;
            match result {
                InputEmpty => {}
                OutputFull => {
                    let len = self.out.len();
                    self.out.resize(len * 2, 0);
                }
                OutputEndsFull => {
                    let len = self.ends.len();
                    self.ends.resize(len * 2, 0);
                }
                Record => {
                    // The fields with a comma between each two, as in a line split
                    // here: the UTF-8 check of the whole is then each field's (end
                    // to end, two broken fields could make one valid character).
                    record_length(outlen + endlen)?;
                    record.clear();
                    let mut from = 0;
                    for &to in &self.ends[..endlen] {
                        record.push_after_comma(&self.out[from..to]);
                        from = to;
                    }
                    return Ok(Some(line));
                }
                End => return Ok(None),
            }
        }
    }
}

/// A record's length as a field bound (records of 4 GiB or more are refused).
fn record_length(len: usize) -> std::io::Result<u32> {
    u32::try_from(len).map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidData, "a record of 4 GiB or more"))
}

/// The fields of a line with no quotes: the ranges between its commas, found 16
/// bytes at a time with SSE2 (part of every x86-64 processor): one comparison
/// and two byte masks give the commas and the bytes beyond ASCII, and a line's
/// last bytes are the top of the 16 that end it. True when every byte of the
/// line is ASCII. Lines shorter than 16 bytes, and other processors, go 8 bytes
/// at a time (`split_at_commas_by_words`).
#[cfg(target_arch = "x86_64")]
fn split_at_commas(line: &[u8], bounds: &mut Vec<(u32, u32)>) -> bool {
    use std::arch::x86_64::{_mm_cmpeq_epi8, _mm_loadu_si128, _mm_movemask_epi8, _mm_set1_epi8};
    let len = line.len();
    if len < 16 {
        return split_at_commas_by_words(line, bounds);
    }
    // SAFETY (of each intrinsic's call): SSE2 is enabled on every x86-64 target.
    let commas = unsafe { _mm_set1_epi8(b',' as i8) };
    // The commas and the bytes beyond ASCII among the 16 bytes from `at`, as bits.
    let masks = |at: usize| {
        assert!(at + 16 <= len);
        // SAFETY: SSE2 as above; the 16 bytes from `at` lie inside `line`
        // (asserted above), and the load needs no alignment.
        unsafe {
            let bytes = _mm_loadu_si128(line.as_ptr().add(at).cast());
            (_mm_movemask_epi8(_mm_cmpeq_epi8(bytes, commas)) as u32, _mm_movemask_epi8(bytes) as u32)
        }
    };
    let mut from = 0u32;
    let mut push_fields = |mut commas: u32, at: usize| {
        while commas != 0 {
            let comma = at as u32 + commas.trailing_zeros();
            bounds.push((from, comma));
            from = comma + 1;
            commas &= commas - 1;
        }
    };
    let (mut at, mut high_bits) = (0, 0);
    while at + 16 <= len {
        let (commas, high) = masks(at);
        push_fields(commas, at);
        high_bits |= high;
        at += 16;
    }
    if at < len {
        // The last `len - at` bytes, the top of the 16 that end the line.
        let shift = 16 - (len - at);
        let (commas, high) = masks(len - 16);
        push_fields(commas >> shift, at);
        high_bits |= high >> shift;
    }
    bounds.push((from, len as u32));
    high_bits == 0
}

#[cfg(not(target_arch = "x86_64"))]
fn split_at_commas(line: &[u8], bounds: &mut Vec<(u32, u32)>) -> bool {
    split_at_commas_by_words(line, bounds)
}

/// `split_at_commas` 8 bytes at a time (a byte equal to `,` is a zero byte of
/// the word XOR `,`s, found exactly, without the borrow of the usual trick);
/// ASCII seen in the same words.
fn split_at_commas_by_words(line: &[u8], bounds: &mut Vec<(u32, u32)>) -> bool {
    const COMMAS: u64 = u64::from_ne_bytes([b','; 8]);
    const LOW7: u64 = 0x7f7f_7f7f_7f7f_7f7f;
    let mut from = 0u32;
    let mut words = line.chunks_exact(8);
    let mut at = 0u32;
    let mut high_bits = 0u64;
    for word in &mut words {
        let w = u64::from_le_bytes(word.try_into().expect("8 bytes"));
        high_bits |= w;
        let x = w ^ COMMAS;
        // The high bit of each byte set exactly where that byte of x is zero.
        let mut zeros = !(((x & LOW7) + LOW7) | x | LOW7);
        while zeros != 0 {
            let comma = at + zeros.trailing_zeros() / 8;
            bounds.push((from, comma));
            from = comma + 1;
            zeros &= zeros - 1;
        }
        at += 8;
    }
    for &b in words.remainder() {
        high_bits |= u64::from(b);
        if b == b',' {
            bounds.push((from, at));
            from = at + 1;
        }
        at += 1;
    }
    bounds.push((from, at));
    high_bits & 0x8080_8080_8080_8080 == 0
}

/// A record as read: its bytes and each field's range in them. A line split at
/// its commas keeps them (fields are the bytes between), a record csv_core read
/// holds its unquoted fields end to end; either way a field is never copied alone
/// (building a `csv::ByteRecord` field by field cost ~60 instructions a field).
#[derive(Default)]
pub struct RawRecord {
    bytes: Vec<u8>,
    bounds: Vec<(u32, u32)>,
    /// No field holds a comma: the commas in `bytes` are the separators.
    plain: bool,
    /// Every byte is ASCII (known from splitting the line; false when not known).
    ascii: bool,
}

impl RawRecord {
    /// Add a field, after a comma when it is not the first (the layout every
    /// record has: see `TextRecord`).
    fn push_after_comma(&mut self, field: &[u8]) {
        if !self.bounds.is_empty() {
            self.bytes.push(b',');
        }
        let start = self.bytes.len() as u32;
        self.bytes.extend_from_slice(field);
        self.bounds.push((start, self.bytes.len() as u32));
        self.plain &= memchr::memchr(b',', field).is_none();
    }
    pub fn len(&self) -> usize {
        self.bounds.len()
    }
    pub fn is_empty(&self) -> bool {
        self.bounds.is_empty()
    }
    pub fn get(&self, i: usize) -> Option<&[u8]> {
        self.bounds.get(i).map(|&(from, to)| &self.bytes[from as usize..to as usize])
    }
    pub fn iter(&self) -> impl Iterator<Item = &[u8]> {
        self.bounds.iter().map(|&(from, to)| &self.bytes[from as usize..to as usize])
    }
    fn clear(&mut self) {
        self.bytes.clear();
        self.bounds.clear();
        self.plain = true;
        self.ascii = false;
    }
}

/// A record whose every field is UTF-8 (checked once, over all its bytes: its
/// fields are always separated by commas, and a comma is never part of a
/// multi-byte character, so that is each field's check).
pub struct TextRecord {
    text: String,
    bounds: Vec<(u32, u32)>,
    plain: bool,
}

impl TextRecord {
    pub fn len(&self) -> usize {
        self.bounds.len()
    }
    pub fn is_empty(&self) -> bool {
        self.bounds.is_empty()
    }
    /// Field `i` (panics beyond the record's width, which readers check first).
    #[inline]
    pub fn field(&self, i: usize) -> &str {
        let (from, to) = self.bounds[i];
        &self.text[from as usize..to as usize]
    }
    fn into_raw(self) -> RawRecord {
        RawRecord { bytes: self.text.into_bytes(), bounds: self.bounds, plain: self.plain, ascii: false }
    }
    fn from_raw(raw: RawRecord) -> Result<TextRecord, RawRecord> {
        if raw.ascii {
            debug_assert!(raw.bytes.is_ascii());
            // SAFETY: `ascii` is set only by `split_at_commas` having seen no byte
            // with its high bit set in exactly these bytes, and ASCII is UTF-8
            // (the serial reader's UTF-8 check was ~240 instructions a row).
            let text = unsafe { String::from_utf8_unchecked(raw.bytes) };
            return Ok(TextRecord { text, bounds: raw.bounds, plain: raw.plain });
        }
        match String::from_utf8(raw.bytes) {
            Ok(text) => Ok(TextRecord { text, bounds: raw.bounds, plain: raw.plain }),
            Err(e) => Err(RawRecord { bytes: e.into_bytes(), bounds: raw.bounds, plain: raw.plain, ascii: false }),
        }
    }
    /// A record of these fields, laid out as a reader lays them out (for tests
    /// of the code that reads records).
    pub fn of(fields: &[&str]) -> TextRecord {
        let mut raw = RawRecord::default();
        raw.clear();
        for field in fields {
            raw.push_after_comma(field.as_bytes());
        }
        TextRecord::from_raw(raw).unwrap_or_else(|_| unreachable!("fields given as text"))
    }

    /// The fields, each followed by 0x1f, into `out` (for a content digest),
    /// when that is this record's text with its commas replaced: the fields
    /// asked for are the record's own in order, and no field holds a comma. None
    /// when not, or when `out` is too short.
    fn unit_separated(&self, indices: &[Option<usize>], out: &mut [u8]) -> Option<usize> {
        let whole = indices.len() == self.bounds.len() && indices.iter().enumerate().all(|(i, &c)| c == Some(i));
        let len = self.text.len() + 1;
        if !whole || !self.plain || len > out.len() {
            return None;
        }
        out[..len - 1].copy_from_slice(self.text.as_bytes());
        // The fields are comma-separated in the text: each one's end is where
        // its 0x1f goes (the last one's is the byte past the text).
        for &(_, end) in &self.bounds {
            out[end as usize] = 0x1f;
        }
        Some(len)
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
    record: &'a TextRecord,
    indices: &'a [Option<usize>],
}

impl<'a> Fields<'a> {
    pub fn new(record: &'a TextRecord, indices: &'a [Option<usize>]) -> Fields<'a> {
        Fields { record, indices }
    }
    #[inline]
    pub fn get(&self, column: usize) -> &'a str {
        // Every field was checked to be UTF-8 before a `Fields` is handed out.
        self.indices[column].map(|i| self.record.field(i)).unwrap_or("")
    }
    /// How many columns were asked for.
    pub fn len(&self) -> usize {
        self.indices.len()
    }
    pub fn is_empty(&self) -> bool {
        self.indices.is_empty()
    }
    /// See `TextRecord::unit_separated`.
    pub fn unit_separated(&self, out: &mut [u8]) -> Option<usize> {
        self.record.unit_separated(self.indices, out)
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
    read_rows_from(file, label, columns, id_column, &mut on_row)?;
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
    Record { line: u64, record: TextRecord },
    Bad { line: u64, id: String, message: String },
}

/// Reads a file's data rows in batches (so they can be checked in parallel while
/// the next batch is read). The header has been read and checked on creation.
pub struct RowReader<R: Read> {
    source: RecordSource<R>,
    label: String,
    header: Vec<String>,
    indices: Vec<Option<usize>>,
    id_index: Option<usize>,
    /// Record buffers of the previous batch, reused.
    spare: Vec<RawRecord>,
}

impl RowReader<File> {
    /// Open `path`; None when the file does not exist.
    pub fn open(path: &Path, label: &str, columns: &Columns, id_column: Option<&str>) -> Result<Option<Self>, UnusableFile> {
        let file = match File::open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(UnusableFile { file: label.to_string(), message: format!("cannot open {}: {e}", path.display()) }),
        };
        RowReader::new(file, label, columns, id_column).map(Some)
    }
}

impl<R: Read> RowReader<R> {
    pub fn new(input: R, label: &str, columns: &Columns, id_column: Option<&str>) -> Result<Self, UnusableFile> {
        let unusable = |message: String| UnusableFile { file: label.to_string(), message };
        let mut source = RecordSource::new(input);
        let mut record = RawRecord::default();
        let header_read = source.next(&mut record).map_err(|e| unusable(format!("cannot read the header row: {e}")))?;
        if header_read.is_none() {
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
        Ok(RowReader { source, label: label.to_string(), header, indices, id_index, spare: Vec::new() })
    }

    /// The fields of a record of this file, in the order the columns were asked for.
    pub fn fields<'r>(&'r self, record: &'r TextRecord) -> Fields<'r> {
        Fields { record, indices: &self.indices }
    }

    /// The column positions `fields` uses (to build `Fields` on other threads).
    pub fn indices(&self) -> &[Option<usize>] {
        &self.indices
    }

    /// Replace `batch` with up to `max` next rows; false once the file is done.
    pub fn next_batch(&mut self, batch: &mut Vec<RawRow>, max: usize) -> Result<bool, UnusableFile> {
        for row in batch.drain(..) {
            if let RawRow::Record { record, .. } = row {
                self.spare.push(record.into_raw());
            }
        }
        let width = self.header.len();
        while batch.len() < max {
            // A new record starts with room for a usual row: grown from nothing
            // it was reallocated ~10 times (1.2% of a 1M-row day's instructions).
            let mut record =
                self.spare.pop().unwrap_or_else(|| RawRecord { bytes: Vec::with_capacity(256), bounds: Vec::with_capacity(width), plain: true, ascii: false });
            // The csv dialect read here never fails to parse (csv_core prefers a
            // parse to none): what can fail is reading the file.
            let line = match self.source.next(&mut record) {
                Ok(None) => break,
                Ok(Some(line)) => line,
                Err(e) => {
                    let line = self.source.line();
                    return Err(UnusableFile { file: self.label.clone(), message: format!("read error near line {line}: {e}") });
                }
            };
            if record.len() != width {
                let message = format!("the row has {} fields, the header has {width}", record.len());
                batch.push(RawRow::Bad { line, id: row_id(&record, self.id_index), message });
                self.spare.push(record);
                continue;
            }
            // One UTF-8 check of the whole record.
            match TextRecord::from_raw(record) {
                Ok(text) => batch.push(RawRow::Record { line, record: text }),
                Err(record) => {
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

/// Field `column` of every line after the first of the file at `path`, each
/// passed through `each`, read in pieces on all cores; `None` when a data line
/// holds a `"`, or a `\r` other than one ending it (then a line is not always a
/// record: read the file with `RowReader`). Without them every record is one line
/// (less its CR) split at its commas, as the csv crate reads it, so the result holds the field of every record after
/// the header, and more: that of a blank line, of a line of another width, of
/// bad UTF-8 (fit for a superset, such as the ids a day can look up).
pub fn plain_column<T: Send>(path: &Path, column: usize, each: impl Fn(&[u8]) -> T + Sync) -> std::io::Result<Option<Vec<T>>> {
    use std::os::unix::fs::FileExt;
    let file = File::open(path)?;
    let len = file.metadata()?.len();
    plain_column_of(len, &|buf, at| file.read_exact_at(buf, at), column, PLAIN_PIECE, &each)
}

/// Bytes of the file each task of `plain_column` reads (the lines that start in them).
const PLAIN_PIECE: u64 = 4 << 20;

/// How many bytes of `plain_column`'s parts are copied between two releases of
/// their memory.
const PLAIN_RELEASE_BYTES: usize = 8 << 20;

/// `plain_column` over `len` bytes read by `read_at(buffer, offset)`.
fn plain_column_of<T: Send>(
    len: u64,
    read_at: &(dyn Fn(&mut [u8], u64) -> std::io::Result<()> + Sync),
    column: usize,
    piece: u64,
    each: &(dyn Fn(&[u8]) -> T + Sync),
) -> std::io::Result<Option<Vec<T>>> {
    use rayon::prelude::*;
    let pieces = len.div_ceil(piece);
    let parts: Vec<Option<Vec<T>>> = (0..pieces)
        .into_par_iter()
        .map_init(Vec::new, |buf, k| plain_piece(len, read_at, k * piece, ((k + 1) * piece).min(len), column, buf, each))
        .collect::<std::io::Result<_>>()?;
    let Some(parts) = parts.into_iter().collect::<Option<Vec<Vec<T>>>>() else { return Ok(None) };
    // Sized once: grown by doubling, its outgrown copies stayed resident (+350 MB
    // at 10M rows). The parts' memory is handed back as they are copied (kept,
    // it sat beside the whole column: +80 MB at 10M rows, the peak of a later
    // day of a month of 10M-row days).
    let mut out = Vec::with_capacity(parts.iter().map(Vec::len).sum());
    let mut copied = 0;
    for part in parts {
        copied += std::mem::size_of_val(part.as_slice());
        out.extend(part);
        if copied >= PLAIN_RELEASE_BYTES {
            crate::memory::release_freed_large_blocks();
            copied = 0;
        }
    }
    Ok(Some(out))
}

/// The lines of `plain_column_of` that start in `start..end` (a line starts at
/// the first byte after a `\n`; the first line, the header's, is not one of them).
fn plain_piece<T>(
    len: u64,
    read_at: &(dyn Fn(&mut [u8], u64) -> std::io::Result<()> + Sync),
    start: u64,
    end: u64,
    column: usize,
    buf: &mut Vec<u8>,
    each: &(dyn Fn(&[u8]) -> T + Sync),
) -> std::io::Result<Option<Vec<T>>> {
    // From the byte before the piece: a `\n` there starts a line at `start`.
    let from = start.saturating_sub(1);
    buf.resize((end - from) as usize, 0);
    read_at(buf, from)?;
    let Some(first) = memchr::memchr(b'\n', buf) else { return Ok(Some(Vec::new())) };
    let mut at = first + 1;
    let mut out = Vec::new();
    while from + (at as u64) < end {
        // The line's end, read past the piece when the line goes on.
        let line_end = loop {
            if let Some(i) = memchr::memchr(b'\n', &buf[at..]) {
                break at + i;
            }
            let have = from + buf.len() as u64;
            if have == len {
                break buf.len();
            }
            let more = (len - have).min(1 << 16) as usize;
            let old = buf.len();
            buf.resize(old + more, 0);
            read_at(&mut buf[old..], have)?;
        };
        // A CR right before the line's end is part of its terminator (CRLF).
        let line = buf[at..line_end].strip_suffix(b"\r").unwrap_or(&buf[at..line_end]);
        if memchr::memchr2(b'"', b'\r', line).is_some() {
            return Ok(None);
        }
        let mut fields = line.split(|&b| b == b',');
        if let Some(field) = fields.nth(column) {
            out.push(each(field));
        }
        at = line_end + 1;
    }
    Ok(Some(out))
}

/// The id of a broken row, when its id column holds a valid id.
fn row_id(record: &RawRecord, id_index: Option<usize>) -> String {
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
    use std::collections::VecDeque;

    fn collect(text: &[u8]) -> Result<Vec<String>, UnusableFile> {
        let mut out = Vec::new();
        let cols = Columns { required: &["a", "b"], optional: &["c"] };
        read_rows_from(text, "t.csv", &cols, Some("a"), &mut |row| match row {
            Row::Fields { line, fields } => out.push(format!("{line}:{}", fields.all().join("/"))),
            Row::Bad { line, id, message } => out.push(format!("{line}:bad:{id}:{message}")),
        })?;
        Ok(out)
    }

    /// The reading `RecordSource` replaced, kept as its oracle: physical line numbers. The csv crate's own line counter skips blank lines and
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


    /// Every record with its line, as the csv crate and `NewlineLog` read them.
    fn by_the_csv_crate(bytes: &[u8]) -> Vec<(u64, Vec<Vec<u8>>)> {
        let counting = CountingReader { inner: bytes, log: NewlineLog::default() };
        let mut reader = csv::ReaderBuilder::new().has_headers(false).flexible(true).from_reader(counting);
        let mut record = csv::ByteRecord::new();
        let mut rows = Vec::new();
        while reader.read_byte_record(&mut record).expect("in-memory input") {
            let offset = record.position().expect("a read record has a position").byte();
            let line = reader.get_mut().log.line_of(offset);
            rows.push((line, record.iter().map(<[u8]>::to_vec).collect()));
        }
        // The header's line is not reported: only its fields are compared.
        if let Some(first) = rows.first_mut() {
            first.0 = 0;
        }
        rows
    }

    /// A reader handing out at most `step` bytes a call (refills mid-record).
    struct Trickle<'a> {
        bytes: &'a [u8],
        step: usize,
    }

    impl Read for Trickle<'_> {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            let n = self.step.min(buf.len()).min(self.bytes.len());
            buf[..n].copy_from_slice(&self.bytes[..n]);
            self.bytes = &self.bytes[n..];
            Ok(n)
        }
    }

    fn by_the_source(bytes: &[u8], step: usize, buffer: usize) -> Vec<(u64, Vec<Vec<u8>>)> {
        let mut source = RecordSource::with_buffer(Trickle { bytes, step }, buffer);
        let mut record = RawRecord::default();
        let mut rows = Vec::new();
        while let Some(line) = source.next(&mut record).expect("in-memory input") {
            rows.push((if rows.is_empty() { 0 } else { line }, record.iter().map(<[u8]>::to_vec).collect()));
        }
        rows
    }

    proptest::proptest! {
        /// Quotes, CRs, blank lines, a BOM, a missing last terminator, any split of
        /// the input between reads and any buffer size: the records and their
        /// lines are the csv crate's.
        #[test]
        fn fast_records_are_the_csv_crates(
            pieces in proptest::collection::vec(proptest::sample::select(vec![
                &b"a"[..], b"bc", b",", b"\"", b"\"\"", b"\r", b"\n", b"\r\n", b" ", b"\xef\xbb\xbf", b"\xff", b"x,y,z\n",
            ]), 0..60),
            step in 1usize..40,
            buffer in 1usize..64,
        ) {
            let bytes: Vec<u8> = pieces.concat();
            proptest::prop_assert_eq!(by_the_source(&bytes, step, buffer), by_the_csv_crate(&bytes));
            proptest::prop_assert_eq!(by_the_source(&bytes, 1 << 20, SOURCE_BUFFER), by_the_csv_crate(&bytes));
        }
    }

    proptest::proptest! {
        /// The word-at-a-time split is the plain one, at every length and place
        /// of a comma (bytes that differ from `,` in one bit included).
        #[test]
        fn commas_found_a_word_at_a_time_are_every_comma(
            line in proptest::collection::vec(proptest::sample::select(vec![b',', b'a', 0xac, 0x2d, 0x2c ^ 0x01, 0x00, 0xff]), 0..70),
        ) {
            let mut bounds = Vec::new();
            let ascii = split_at_commas(&line, &mut bounds);
            proptest::prop_assert_eq!(ascii, line.is_ascii());
            let fields: Vec<&[u8]> = bounds.iter().map(|&(a, b)| &line[a as usize..b as usize]).collect();
            let plain: Vec<&[u8]> = line.split(|&b| b == b',').collect();
            proptest::prop_assert_eq!(fields, plain);
        }
    }

    proptest::proptest! {
        /// A record's unit-separated text, when it has one, is its fields, each
        /// followed by 0x1f, however the record was read (split at its commas or
        /// parsed by csv_core) and whatever the split of the input between reads.
        #[test]
        fn unit_separated_text_is_the_fields_each_followed_by_0x1f(
            pieces in proptest::collection::vec(proptest::sample::select(vec![
                &b"a"[..], b"bc", b",", b"\"", b"\"\"", b"\r", b"\n", b"\r\n", b"\x1f", b"\xc3\xa9", b"x,y,z\n",
            ]), 0..60),
            step in 1usize..40,
        ) {
            let bytes: Vec<u8> = pieces.concat();
            let mut source = RecordSource::with_buffer(Trickle { bytes: &bytes, step }, SOURCE_BUFFER);
            let mut record = RawRecord::default();
            while source.next(&mut record).expect("in-memory input").is_some() {
                let fields: Vec<Vec<u8>> = record.iter().map(<[u8]>::to_vec).collect();
                let Ok(text) = TextRecord::from_raw(std::mem::take(&mut record)) else { continue };
                let indices: Vec<Option<usize>> = (0..text.len()).map(Some).collect();
                let mut out = [0u8; 512];
                if let Some(len) = text.unit_separated(&indices, &mut out) {
                    let expected: Vec<u8> = fields.iter().flat_map(|f| f.iter().copied().chain([0x1f])).collect();
                    proptest::prop_assert_eq!(&out[..len], &expected[..]);
                } else {
                    proptest::prop_assert!(fields.iter().any(|f| f.contains(&b',')), "a record of fields without commas has its text");
                }
            }
        }
    }

    proptest::proptest! {
        /// Read in pieces of any size, a column of a file with no `"` and no `\r`
        /// holds that field of every record the csv crate reads after the header,
        /// in order, and of nothing else but blank lines and lines of other widths;
        /// a file with either is refused.
        #[test]
        fn a_plain_column_is_the_csv_crates_field_of_every_record(
            pieces in proptest::collection::vec(proptest::sample::select(vec![
                &b"a"[..], b"bc", b",", b",", b"\n", b"\n", b"\n\n", b"\xef\xbb\xbf", b"\xff", b"x,y,z\n", b"\"", b"\r", b"\r\n", b"\r\n",
            ]), 0..80),
            column in 0usize..3,
            piece in 1u64..24,
        ) {
            let bytes: Vec<u8> = pieces.concat();
            let read_at = |buf: &mut [u8], at: u64| {
                buf.copy_from_slice(&bytes[at as usize..at as usize + buf.len()]);
                Ok(())
            };
            let got = plain_column_of(bytes.len() as u64, &read_at, column, piece, &|f: &[u8]| f.to_vec()).unwrap();
            let data_start = memchr::memchr(b'\n', &bytes).map_or(bytes.len(), |i| i + 1);
            // By lines, each less one CR at its end: what the scan must give.
            let lines: Vec<&[u8]> = if data_start == bytes.len() {
                Vec::new()
            } else {
                bytes[data_start..]
                    .strip_suffix(b"\n")
                    .unwrap_or(&bytes[data_start..])
                    .split(|&b| b == b'\n')
                    .map(|l| l.strip_suffix(b"\r").unwrap_or(l))
                    .collect()
            };
            if lines.iter().any(|l| l.contains(&b'"') || l.contains(&b'\r')) {
                proptest::prop_assert_eq!(got, None);
            } else {
                let expected: Vec<Vec<u8>> =
                    lines.iter().filter_map(|l| l.split(|&b| b == b',').nth(column).map(<[u8]>::to_vec)).collect();
                let got = got.expect("plain");
                proptest::prop_assert_eq!(&got, &expected);
                // Every record of the csv crate after the header is among them, in order.
                let header = bytes[..data_start].strip_suffix(b"\r\n").unwrap_or(&bytes[..data_start]);
                if !header.contains(&b'"') && !header.contains(&b'\r') {
                    let records = by_the_csv_crate(&bytes);
                    let mut rest = got.iter();
                    for (_, record) in records.iter().skip(1) {
                        if let Some(field) = record.get(column) {
                            proptest::prop_assert!(rest.any(|g| g == field), "{:?} missing", field);
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn one_byte_beyond_ascii_anywhere_in_a_line_is_seen() {
        // The flag lets a line be taken as text unchecked: every position of a
        // word and of the tail must count.
        for len in 1..=27 {
            let plain = vec![b'a'; len];
            assert!(split_at_commas(&plain, &mut Vec::new()), "{len}");
            for at in 0..len {
                for high in [0x80, 0xc3, 0xff] {
                    let mut line = plain.clone();
                    line[at] = high;
                    assert!(!split_at_commas(&line, &mut Vec::new()), "{len} {at} {high:#x}");
                }
            }
        }
    }

    #[test]
    fn fast_and_csv_core_records_interleave_with_their_lines() {
        let text = b"\xef\xbb\xbfh1,h2\r\nplain,row\n\"quoted\nover lines\",x\n\nafter,blank\ra,b\rlast,\"no end";
        let rows = by_the_source(text, 3, 8);
        assert_eq!(rows, by_the_csv_crate(text));
        let lines: Vec<u64> = rows.iter().map(|r| r.0).collect();
        assert_eq!(lines, vec![0, 2, 3, 6, 6, 6]);
        assert_eq!(rows[2].1, vec![b"quoted\nover lines".to_vec(), b"x".to_vec()]);
        assert_eq!(rows[5].1, vec![b"last".to_vec(), b"no end".to_vec()]);
    }

    #[test]
    fn bom_crlf_blank_lines_and_quotes() {
        let rows = collect(b"\xef\xbb\xbfb,a\r\n1,2\r\n\r\n\"x,y\",3\r\n").unwrap();
        assert_eq!(rows, vec!["2:2/1/", "4:3/x,y/"]);
    }

    #[test]
    fn a_character_split_over_two_quoted_fields_is_bad_utf8() {
        // "\xe4" and "\xb8\xad" are each broken; end to end they are "中".
        let rows = collect(b"a,b\n\"\xe4\",\"\xb8\xad\"\n\"\xe4\xb8\xad\",x\n").unwrap();
        assert_eq!(rows, vec!["2:bad::field \"a\" is not valid UTF-8", "3:中/x/"]);
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
