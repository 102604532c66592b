//! Output files (SPEC §11): the only place output columns exist. Each writer
//! takes rows already in their final order and returns the file's bytes, or, for
//! the large files, streams them to a writer a block at a time.
//!
//! Invariant: output is a pure function of the rows; `\n` line endings, amounts
//! with two decimals, columns exactly as SPEC lists them.

use crate::engine::{LedgerLine, ServiceEvent, TransferRow, VoucherUse};
use crate::ids::Uin;
use crate::money::PushText;
use crate::reject::Reject;
use crate::snapshot::Snapshot;
use crate::state::AccountState;
use crate::time::{Day, Ts};
use std::collections::BTreeMap;

fn writer() -> csv::Writer<Vec<u8>> {
    csv::WriterBuilder::new().terminator(csv::Terminator::Any(b'\n')).from_writer(Vec::new())
}

/// Append `text` as one CSV field, quoted when it must be (RFC 4180, and exactly
/// when the csv crate's writer quotes: a comma, a quote, CR or LF).
pub(crate) fn push_field(out: &mut String, text: &str) {
    if !needs_quotes(text) {
        out.put(text);
        return;
    }
    // Quoted, each quote doubled, without a copy of the text.
    out.push('"');
    let mut parts = text.split('"');
    out.put(parts.next().unwrap_or(""));
    for part in parts {
        out.put("\"\"");
        out.put(part);
    }
    out.push('"');
}

pub(crate) fn needs_quotes(text: &str) -> bool {
    text.bytes().any(|b| matches!(b, b',' | b'"' | b'\n' | b'\r'))
}

fn finish(w: csv::Writer<Vec<u8>>) -> Vec<u8> {
    // Writing to memory cannot fail; an error here is a broken invariant.
    w.into_inner().expect("in-memory CSV writer flushes")
}

fn opt<T: ToString>(value: &Option<T>) -> String {
    value.as_ref().map(ToString::to_string).unwrap_or_default()
}

pub const LEDGER_COLUMNS: [&str; 25] = [
    "line_id", "run_day", "charge_time", "bill_month", "kind", "org_id", "owner_uin", "responsible_uin", "product",
    "cycle", "period_start", "period_end", "order_id", "resource_id", "usage_records", "list_amount",
    "discount_amount", "payable_amount", "pricing_uin", "contract_id", "voucher_amount", "cash_amount",
    "gift_amount", "credit_amount", "status",
];

/// `ledger.csv`. Every field is an id, a number, a timestamp or a code, none of
/// which can hold a comma, quote or newline (SPEC §1.3), so rows are written
/// directly, without a CSV quoting pass: this file is the largest output.
pub fn ledger_csv(day: Day, lines: &[LedgerLine]) -> Vec<u8> {
    let mut out = Vec::new();
    write_ledger(day, lines, |l| l, &mut out).expect("writing to memory cannot fail");
    out
}

/// `ledger.csv`, streamed to `w`: `rows` in order, each resolved to its line by `line`.
pub fn write_ledger<'r, T: Sync>(
    day: Day,
    rows: &'r [T],
    line: impl Fn(&'r T) -> &'r LedgerLine + Sync,
    w: &mut (dyn std::io::Write + Send),
) -> std::io::Result<()> {
    write_in_parallel_chunks(&ledger_header(), rows, |chunk, text| ledger_rows(day, ahead(chunk, &line), text), w)
}

/// The header line of `ledger.csv`.
pub fn ledger_header() -> String {
    let mut head = LEDGER_COLUMNS.join(",");
    head.push('\n');
    head
}

/// The ledger rows of `rows` (the next lines of the day in processing order, each
/// resolved to its line by `line`), rendered on all cores in pieces of
/// `RENDER_CHUNK` rows: the same bytes as rendering them one by one.
pub fn ledger_blocks<'r, T: Sync>(day: Day, rows: &'r [T], line: impl Fn(&'r T) -> &'r LedgerLine + Sync) -> Vec<String> {
    use rayon::prelude::*;
    rows.par_chunks(RENDER_CHUNK)
        .map(|chunk| {
            let mut text = String::with_capacity(chunk.len() * 300);
            ledger_rows(day, ahead(chunk, &line), &mut text);
            text
        })
        .collect()
}

/// How many rows a task renders at once: a run's ~18k lines in a few tasks of
/// like size (at 16k rows, a large one and a small one: one core's work).
pub const RENDER_CHUNK: usize = 4 * 1024;

/// How many rows ahead of the one rendered its line is asked for.
const RENDER_PREFETCH_AHEAD: usize = 8;

/// The lines of `rows` in order, each line's memory asked for
/// `RENDER_PREFETCH_AHEAD` rows before it is rendered: in processing order the
/// lines of thousands of organizations alternate, and each is a cache miss.
pub fn ahead<'a, 'r: 'a, T, R: 'r>(rows: &'r [T], line: &'a impl Fn(&'r T) -> &'r R) -> impl Iterator<Item = &'r R> + 'a {
    rows.iter().enumerate().map(move |(i, row)| {
        if let Some(later) = rows.get(i + RENDER_PREFETCH_AHEAD) {
            crate::memory::prefetch_whole(line(later));
        }
        line(row)
    })
}

/// Render rows chunk by chunk on all cores and write the chunks in order after
/// `head`, a block of chunks at a time (memory holds two blocks, not the file);
/// the next block is rendered while the previous one is written (on a thread of
/// its own: `parallel::write_behind`). The bytes are the same as rendering the
/// rows one by one.
pub fn write_in_parallel_chunks<'r, T: Sync>(
    head: &str,
    rows: &'r [T],
    render: impl Fn(&'r [T], &mut String) + Sync,
    w: &mut (dyn std::io::Write + Send),
) -> std::io::Result<()> {
    use rayon::prelude::*;
    const CHUNK: usize = 16 * 1024;
    // Four chunks a block: the ledger and the FOCUS rows are written at once, and
    // two blocks of each (~70 MB in all at 10M rows) are held.
    const BLOCK: usize = 4 * CHUNK;
    let render_block = |block: &'r [T]| -> Vec<String> {
        block
            .par_chunks(CHUNK)
            .map(|chunk| {
                let mut text = String::with_capacity(chunk.len() * 300);
                render(chunk, &mut text);
                text
            })
            .collect()
    };
    w.write_all(head.as_bytes())?;
    crate::parallel::write_behind(w, rows.chunks(BLOCK).map(render_block))
}

/// The text of the last instant written, kept: rows in processing order share
/// their charge time (and, per cycle, their period start) with the rows before.
#[derive(Default)]
pub(crate) struct InstantText {
    at: Option<Ts>,
    text: String,
}

impl InstantText {
    /// The §1.2 text of `t`.
    fn of(&mut self, t: Ts) -> &str {
        self.of_with(t, Ts::write_to)
    }

    /// The text `write` gives `t` (a kept text is `write`'s: one writer a kept text).
    pub(crate) fn of_with(&mut self, t: Ts, write: impl FnOnce(Ts, &mut String)) -> &str {
        if self.at != Some(t) {
            self.text.clear();
            write(t, &mut self.text);
            self.at = Some(t);
        }
        &self.text
    }
}

/// Which kept period start a postpaid line's is compared with: one per cycle.
pub(crate) fn start_slot(line: &LedgerLine) -> usize {
    line.usage().map_or(0, |u| u.cycle as usize)
}

fn ledger_rows<'l>(day: Day, lines: impl Iterator<Item = &'l LedgerLine>, out: &mut String) {
    let run_day = day.to_string();
    let mut numbers = itoa::Buffer::new();
    let mut charge_time = InstantText::default();
    let mut period_start: [InstantText; 3] = Default::default();
    let mut bill_month: (Option<crate::time::PackedMonth>, String) = (None, String::new());
    for l in lines {
        let id_start = out.len();
        l.write_line_id_with(out, |start, out| out.put(period_start[start_slot(l)].of(start)));
        debug_assert!(!out[id_start..].contains([',', '"', '\n']), "ledger fields never need quoting");
        out.push(',');
        out.put(&run_day);
        out.push(',');
        let charged = charge_time.of(l.charge_time);
        out.put(charged);
        out.push(',');
        if bill_month.0 != Some(l.bill_month) {
            bill_month.1.clear();
            l.bill_month.get().write_to(&mut bill_month.1);
            bill_month.0 = Some(l.bill_month);
        }
        out.put(&bill_month.1);
        out.push(',');
        out.put(l.kind.as_str());
        out.push(',');
        out.put(l.org_id);
        out.push(',');
        out.put(numbers.format(l.owner_uin));
        out.push(',');
        out.put(numbers.format(l.responsible_uin));
        out.push(',');
        out.put(l.product);
        out.push(',');
        match l.usage() {
            Some(usage) => {
                out.put(usage.cycle.as_str());
                out.push(',');
                out.put(period_start[start_slot(l)].of(usage.start));
                out.push(',');
                out.put(charge_time.of(l.charge_time));
                out.put(",,,");
                out.put(numbers.format(usage.records));
            }
            None => {
                let (order_id, resource_id) = l.order().map(|o| (o.order_id.as_str(), o.resource_id.as_str())).unwrap_or(("", ""));
                out.put(",,,");
                out.put(order_id);
                out.push(',');
                out.put(resource_id);
                out.push(',');
            }
        }
        for amount in [l.list_amount, l.discount_amount(), l.payable_amount] {
            out.push(',');
            amount.write_to(out);
        }
        match l.contract {
            Some(contract) => {
                out.push(',');
                out.put(numbers.format(contract.owner_uin));
                out.push(',');
                out.put(&contract.contract_id);
            }
            None => out.put(",,"),
        }
        for amount in [l.voucher_amount, l.cash_amount, l.gift_amount, l.credit_amount] {
            out.push(',');
            amount.write_to(out);
        }
        out.push(',');
        out.put(l.status.as_str());
        out.push('\n');
    }
}

const VOUCHER_USAGE_COLUMNS: [&str; 4] = ["line_id", "voucher_id", "voucher_owner_uin", "amount"];

/// The header line of `voucher_usage.csv`.
pub fn voucher_usage_header() -> Vec<u8> {
    voucher_usage_rows(&[], true)
}

/// The rows of `voucher_usage.csv` for `uses` (the next rows of the day, in
/// processing order), quoted as the csv crate quotes; with `header`, its header
/// line first. The day's are rendered a run at a time as it settles.
pub fn voucher_usage_rows(uses: &[VoucherUse], header: bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(uses.len() * 96 + 64);
    let mut w = csv::WriterBuilder::new().terminator(csv::Terminator::Any(b'\n')).from_writer(&mut out);
    let written = (|| -> csv::Result<()> {
        if header {
            w.write_record(VOUCHER_USAGE_COLUMNS)?;
        }
        for u in uses {
            w.write_record([u.line_id.as_str(), &u.voucher_id, &u.voucher_owner_uin.to_string(), &u.amount.to_string()])?;
        }
        w.flush()?;
        Ok(())
    })();
    written.expect("writing to memory cannot fail");
    drop(w);
    out
}

pub fn events_csv(events: &[ServiceEvent]) -> Vec<u8> {
    let mut w = writer();
    w.write_record(["at", "org_id", "uin", "event", "responsible_uin", "trigger"]).expect("write header");
    for e in events {
        w.write_record([
            e.at.to_string().as_str(),
            &e.org_id,
            &e.uin.to_string(),
            if e.shutdown { "shutdown" } else { "reversal" },
            &e.responsible_uin.to_string(),
            e.trigger.as_str(),
        ])
        .expect("write row");
    }
    finish(w)
}

pub fn transfers_csv(rows: &[TransferRow]) -> Vec<u8> {
    let mut w = writer();
    w.write_record(["transfer_id", "kind", "at", "management_uin", "member_uin", "amount", "status", "reason"])
        .expect("write header");
    for t in rows {
        w.write_record([
            t.transfer_id.as_str(),
            t.kind.as_str(),
            &t.at.to_string(),
            &opt(&t.management_uin),
            &t.member_uin.to_string(),
            &t.amount,
            if t.refused.is_some() { "rejected" } else { "accepted" },
            t.refused.unwrap_or(""),
        ])
        .expect("write row");
    }
    finish(w)
}

pub fn balances_csv(snapshot: &Snapshot, accounts: &BTreeMap<Uin, AccountState>) -> Vec<u8> {
    let mut w = writer();
    w.write_record(["uin", "org_id", "cash", "gift", "credit_limit", "in_arrears", "service"]).expect("write header");
    for uin in snapshot.all_uins() {
        let (org, _) = snapshot.find(uin).expect("uin from the snapshot");
        let a = accounts.get(&uin).copied().expect("every snapshot account has a balance");
        w.write_record([
            uin.to_string().as_str(),
            &org.org_id,
            &a.cash.to_string(),
            &a.gift.to_string(),
            &a.credit_limit.to_string(),
            if a.in_arrears() { "true" } else { "false" },
            if a.suspended { "suspended" } else { "running" },
        ])
        .expect("write row");
    }
    finish(w)
}

pub fn rejects_csv(rejects: &[Reject]) -> Vec<u8> {
    let mut out = Vec::new();
    write_rejects(rejects, crate::reject::RejectSpill::default(), &mut out).expect("writing to memory cannot fail");
    out
}

/// rejects.csv, streamed to `w`: `rejects` (sorted by file and line) with the
/// rejects of `usage` (one file's, in line order, as reading decided them:
/// `RejectSpill`) merged in among those of their file by line.
pub fn write_rejects(rejects: &[Reject], usage: crate::reject::RejectSpill, w: &mut (dyn std::io::Write + Send)) -> std::io::Result<()> {
    let file = crate::ingest::USAGE_FILE;
    let before = rejects.partition_point(|r| r.file < file);
    let after = rejects.partition_point(|r| r.file <= file);
    let mut out = csv::WriterBuilder::new().terminator(csv::Terminator::Any(b'\n')).from_writer(w);
    out.write_record(["file", "line", "id", "reason", "message"])?;
    let mut row = |r: &Reject| out.write_record([r.file, &r.line.to_string(), &r.id, r.reason.code(), &r.message]);
    for r in &rejects[..before] {
        row(r)?;
    }
    let mut held = rejects[before..after].iter().peekable();
    for r in usage.into_rows().map_err(std::io::Error::other)? {
        let r = r.map_err(std::io::Error::other)?;
        while let Some(h) = held.next_if(|h| h.line < r.line) {
            row(h)?;
        }
        row(&r)?;
    }
    for r in held.chain(&rejects[after..]) {
        row(r)?;
    }
    out.flush()
}

/// The merged bill, streamed to `w`, its rows rendered in chunks on all cores (same
/// bytes as one writer: every chunk ends with a whole row).
pub fn write_merged_bill(
    month: crate::time::Month,
    snapshot: &Snapshot,
    rows: &[(&crate::state::BillKey, &crate::state::BillSums)],
    w: &mut (dyn std::io::Write + Send),
) -> std::io::Result<()> {
    let mut head = writer();
    head.write_record([
        "bill_month", "org_id", "bill_owner_uin", "member_uin", "member_name", "dept_id", "pay_mode", "product", "kind",
        "lines", "list_amount", "discount_amount", "payable_amount", "voucher_amount", "cash_amount", "gift_amount",
        "credit_amount",
    ])
    .expect("write header");
    let head = String::from_utf8(finish(head)).expect("CSV of UTF-8 text is UTF-8");
    write_in_parallel_chunks(&head, rows, |chunk, text| merged_bill_rows(month, snapshot, chunk, text), w)
}

/// The rows rendered in place (no allocation a field; a member's name and
/// department looked up once for its consecutive rows), quoted as the csv crate
/// quotes (a unit test compares both).
fn merged_bill_rows(
    month: crate::time::Month,
    snapshot: &Snapshot,
    rows: &[(&crate::state::BillKey, &crate::state::BillSums)],
    out: &mut String,
) {
    let month = month.to_string();
    let mut numbers = itoa::Buffer::new();
    let mut last: Option<(Uin, &str, &str)> = None;
    for ((org_id, owner, member, pay_mode, product, kind), s) in rows.iter().map(|(k, s)| (*k, *s)) {
        let (name, dept) = match last {
            Some((uin, name, dept)) if uin == *member => (name, dept),
            _ => {
                let (name, dept) = snapshot.find(*member).map(|(_, m)| (m.name.as_str(), m.dept_id.as_str())).unwrap_or_default();
                last = Some((*member, name, dept));
                (name, dept)
            }
        };
        out.put(&month);
        out.push(',');
        push_field(out, org_id);
        out.push(',');
        out.put(numbers.format(*owner));
        out.push(',');
        out.put(numbers.format(*member));
        for text in [name, dept, pay_mode.as_str(), product.as_str(), kind.as_str()] {
            out.push(',');
            push_field(out, text);
        }
        out.push(',');
        out.put(numbers.format(s.lines));
        for amount in [s.list, s.discount, s.payable, s.voucher, s.cash, s.gift, s.credit] {
            out.push(',');
            amount.write_to(out);
        }
        out.push('\n');
    }
}

/// How many organizations' overview rows `overview_files` holds at once.
pub const OVERVIEW_ORGS_AT_ONCE: usize = 512;

/// The overview files of the organizations of `snapshot` for the `months_back`
/// months ending at `end_month` (`monthly::overview`): by member, by product, and
/// the summary when `with_summary`. Computed and rendered `orgs_at_once`
/// organizations at a time (`OVERVIEW_ORGS_AT_ONCE`), each stretch's rows
/// appended to the files and dropped: a 10M-row day's month-to-date tables held
/// ~50 MB of rows at once, the peak of the day's last stage.
pub fn overview_files(
    snapshot: &crate::snapshot::Snapshot,
    self_paid: &crate::monthly::SelfPaidByMonth,
    history: &[crate::reference::HistoryRow],
    end_month: crate::time::Month,
    months_back: usize,
    with_summary: bool,
    orgs_at_once: usize,
) -> OverviewFiles {
    let index = crate::monthly::history_index(history);
    let mut files = OverviewFiles {
        by_member: overview_by_member_csv(&[]),
        by_product: overview_by_product_csv(&[]),
        summary: overview_summary_csv(&[]),
    };
    for orgs in snapshot.orgs.chunks(orgs_at_once.max(1)) {
        let overview = crate::monthly::overview_of(orgs, self_paid, &index, end_month, months_back, with_summary);
        let (by_member, by_product) = rayon::join(
            || member_overview_rows(headerless(), &overview.by_member),
            || product_overview_rows(headerless(), &overview.by_product),
        );
        files.by_member.extend(by_member);
        files.by_product.extend(by_product);
        files.summary.extend(summary_overview_rows(headerless(), &overview.summary));
    }
    files
}

/// The three overview files, each with its header.
pub struct OverviewFiles {
    pub by_member: Vec<u8>,
    pub by_product: Vec<u8>,
    pub summary: Vec<u8>,
}

/// A writer for rows to append to a file that has its header already.
fn headerless() -> csv::Writer<Vec<u8>> {
    writer()
}

pub fn overview_by_member_csv(rows: &[crate::monthly::OverviewRow]) -> Vec<u8> {
    let mut w = writer();
    w.write_record(["org_id", "month", "member_uin", "member_name", "total", "share", "rank"]).expect("write header");
    member_overview_rows(w, rows)
}

fn member_overview_rows(mut w: csv::Writer<Vec<u8>>, rows: &[crate::monthly::OverviewRow]) -> Vec<u8> {
    for r in rows {
        w.write_record([
            r.org_id.as_str(),
            &r.month.to_string(),
            &r.key,
            r.member_name.as_deref().unwrap_or(""),
            &r.total.to_string(),
            &r.share,
            &r.rank.to_string(),
        ])
        .expect("write row");
    }
    finish(w)
}

pub fn overview_by_product_csv(rows: &[crate::monthly::OverviewRow]) -> Vec<u8> {
    let mut w = writer();
    w.write_record(["org_id", "month", "product", "total", "share", "rank"]).expect("write header");
    product_overview_rows(w, rows)
}

fn product_overview_rows(mut w: csv::Writer<Vec<u8>>, rows: &[crate::monthly::OverviewRow]) -> Vec<u8> {
    for r in rows {
        w.write_record([r.org_id.as_str(), &r.month.to_string(), &r.key, &r.total.to_string(), &r.share, &r.rank.to_string()])
            .expect("write row");
    }
    finish(w)
}

pub fn overview_summary_csv(rows: &[crate::monthly::SummaryRow]) -> Vec<u8> {
    let mut w = writer();
    w.write_record(["org_id", "window_start", "window_end", "months", "total", "monthly_average"]).expect("write header");
    summary_overview_rows(w, rows)
}

fn summary_overview_rows(mut w: csv::Writer<Vec<u8>>, rows: &[crate::monthly::SummaryRow]) -> Vec<u8> {
    for r in rows {
        w.write_record([
            r.org_id.as_str(),
            &r.window_start.to_string(),
            &r.window_end.to_string(),
            &r.months.to_string(),
            &r.total.to_string(),
            &r.monthly_average.to_string(),
        ])
        .expect("write row");
    }
    finish(w)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::money::Money;
    use crate::engine::LineKind;
    use crate::state::{BillKey, BillSums, PayMode, ProductName, Text};

    #[test]
    fn voucher_usage_rendered_a_run_at_a_time_is_the_file_the_csv_crate_writes() {
        let uses: Vec<VoucherUse> = (0..5i64)
            .map(|i| VoucherUse {
                line_id: format!("P|10{i}|cvm|hourly|2026-10-31T0{i}:00:00+08:00"),
                voucher_id: if i == 3 { "v,\"odd\"".into() } else { format!("v-{i}") },
                voucher_owner_uin: 100 + i as u64,
                amount: Money::from_fen(i * 101 - 7),
            })
            .collect();
        let mut pieces = voucher_usage_header();
        pieces.extend(voucher_usage_rows(&uses[..2], false));
        pieces.extend(voucher_usage_rows(&[], false));
        pieces.extend(voucher_usage_rows(&uses[2..], false));
        let mut whole = csv::WriterBuilder::new().terminator(csv::Terminator::Any(b'\n')).from_writer(Vec::new());
        whole.write_record(["line_id", "voucher_id", "voucher_owner_uin", "amount"]).unwrap();
        for u in &uses {
            whole.write_record([u.line_id.as_str(), &u.voucher_id, &u.voucher_owner_uin.to_string(), &u.amount.to_string()]).unwrap();
        }
        let whole = whole.into_inner().unwrap();
        assert_eq!(String::from_utf8(pieces).unwrap(), String::from_utf8(whole).unwrap());
        assert!(voucher_usage_header().ends_with(b"voucher_owner_uin,amount\n"));
    }

    #[test]
    fn ledger_rows_rendered_in_one_run_equal_rows_rendered_one_at_a_time() {
        // Postpaid lines of several cycles sharing and changing their instants, and
        // a late one, as processing order interleaves them.
        use crate::time::Cycle;
        let line = |end: &str, cycle: Cycle, start: &str, late: Option<&str>, fen: i64| {
            LedgerLine::settled_postpaid((100 + fen as u64 % 3, 100), cycle, (start, end), late, fen)
        };
        let lines = [
            line("2026-10-31T00:00:00+08:00", Cycle::Daily, "2026-10-30T00:00:00+08:00", None, 1),
            line("2026-10-31T00:00:00+08:00", Cycle::Hourly, "2026-10-30T23:00:00+08:00", None, 2),
            line("2026-10-31T00:00:00+08:00", Cycle::Daily, "2026-10-30T00:00:00+08:00", None, 3),
            line("2026-10-31T01:00:00+08:00", Cycle::Hourly, "2026-10-31T00:00:00+08:00", None, 4),
            line("2026-10-31T01:00:00+08:00", Cycle::Hourly, "2026-10-31T00:00:00+08:00", Some("2026-10-31"), 5),
            line("2026-10-31T01:00:00.5+08:00", Cycle::Hourly, "2026-10-31T00:00:00.5+08:00", None, 6),
            line("2026-11-01T00:00:00+08:00", Cycle::Monthly, "2026-10-01T00:00:00+08:00", None, 7),
            line("2026-11-01T00:00:00+08:00", Cycle::Hourly, "2026-10-31T23:00:00+08:00", None, 8),
            // The bill month changes and changes back.
            line("2026-11-01T01:00:00+08:00", Cycle::Hourly, "2026-11-01T00:00:00+08:00", None, 9),
            line("2026-11-01T00:00:00+08:00", Cycle::Hourly, "2026-10-31T23:00:00+08:00", None, 10),
        ];
        let day = Day::parse("2026-10-31").expect("a day");
        let mut together = String::new();
        ledger_rows(day, lines.iter(), &mut together);
        let mut one_by_one = String::new();
        for l in &lines {
            ledger_rows(day, std::iter::once(l), &mut one_by_one);
        }
        assert_eq!(together, one_by_one);
        let rows: Vec<&str> = together.lines().collect();
        assert_eq!(rows.len(), lines.len());
        assert!(rows[4].starts_with("P|102|cvm|hourly|2026-10-31T00:00:00+08:00|late-2026-10-31,2026-10-31,2026-10-31T01:00:00+08:00,"));
        assert!(rows[5].contains(",hourly,2026-10-31T00:00:00.5+08:00,2026-10-31T01:00:00.5+08:00,"));
        assert!(rows[6].contains(",monthly,2026-10-01T00:00:00+08:00,2026-11-01T00:00:00+08:00,"));
        assert!(rows[8].contains(",2026-11-01T01:00:00+08:00,2026-11,postpaid,"), "{}", rows[8]);
        assert!(rows[9].contains(",2026-11-01T00:00:00+08:00,2026-10,postpaid,"), "{}", rows[9]);
    }

    #[test]
    fn ledger_blocks_of_several_tasks_join_into_the_rows_rendered_at_once() {
        use crate::time::Cycle;
        let day = Day::parse("2026-10-31").expect("a day");
        let start = crate::time::Ts::parse("2026-10-31T00:00:00+08:00").unwrap();
        // Two and a half render tasks of lines whose instants and amounts vary.
        let n = 2 * RENDER_CHUNK + RENDER_CHUNK / 2 + 3;
        let lines: Vec<LedgerLine> = (0..n as i64)
            .map(|k| {
                let from = crate::time::Ts(start.0 + (k % 24) * 3_600_000_000_000);
                let to = crate::time::Ts(from.0 + 3_600_000_000_000);
                LedgerLine::settled_postpaid((100 + k as u64 % 5, 100), Cycle::Hourly, (&from.to_string(), &to.to_string()), None, k * 7 + 1)
            })
            .collect();
        let blocks = ledger_blocks(day, &lines, |l| l);
        assert_eq!(blocks.len(), 3);
        let mut at_once = String::new();
        ledger_rows(day, lines.iter(), &mut at_once);
        assert_eq!(blocks.concat(), at_once);
        assert_eq!(at_once.lines().count(), n);
        assert!(at_once.lines().nth(n - 1).unwrap().contains(&format!(",{},", Money::from_fen((n as i64 - 1) * 7 + 1))));
    }

    /// The merged bill as the csv crate's writer wrote it before the rows were
    /// rendered in place.
    fn merged_bill_by_csv_writer(month: crate::time::Month, snapshot: &Snapshot, rows: &[(&BillKey, &BillSums)]) -> String {
        let mut w = writer();
        for ((org_id, owner, member, pay_mode, product, kind), s) in rows.iter().map(|(k, s)| (*k, *s)) {
            let (name, dept) = snapshot.find(*member).map(|(_, m)| (m.name.as_str(), m.dept_id.as_str())).unwrap_or_default();
            let numbers = [s.lines.to_string(), s.list.to_string(), s.discount.to_string(), s.payable.to_string(), s.voucher.to_string(),
                s.cash.to_string(), s.gift.to_string(), s.credit.to_string()];
            let mut record = vec![month.to_string(), org_id.to_string(), owner.to_string(), member.to_string(), name.into(), dept.into(),
                pay_mode.as_str().to_string(), product.as_str().to_string(), kind.as_str().to_string()];
            record.extend(numbers);
            w.write_record(&record).unwrap();
        }
        String::from_utf8(finish(w)).unwrap()
    }

    #[test]
    fn merged_bill_rows_are_quoted_and_spelled_as_the_csv_writer_did() {
        let names = ["plain", "", "a,b", "say \"hi\"", "two\nlines", "cr\rhere", "\"", "日本語, ok"];
        let members: String = names
            .iter()
            .enumerate()
            .map(|(i, name)| {
                format!(
                    r#",{{"uin":{},"name":{},"entity_id":"e1","dept_id":"d,1","join_mode":"invited","joined_at":"2026-02-01T00:00:00+08:00","permissions":["merged_bill"]}}"#,
                    10 + i,
                    serde_json::to_string(name).unwrap()
                )
            })
            .collect();
        let json = format!(
            r#"{{"snapshot_at":"2026-11-01T00:00:00+08:00","orgs":[{{"org_id":"org-1","created_at":"2026-01-01T00:00:00+08:00",
            "management_uin":1,"entities":[{{"entity_id":"e1"}}],
            "departments":[{{"dept_id":"root","parent_id":null}},{{"dept_id":"d,1","parent_id":"root"}}],"members":[
            {{"uin":1,"name":"HQ","entity_id":"e1","dept_id":"root","join_mode":"management","joined_at":"2026-01-01T00:00:00+08:00"}}{members}]}}]}}"#
        );
        let snapshot = Snapshot::from_json(json.as_bytes()).unwrap();
        let keys: Vec<BillKey> = (0..names.len() as u64 + 2)
            .flat_map(|i| {
                // Each member twice in a row (the lookup reused), and one account the snapshot lacks.
                let member = if i == names.len() as u64 + 1 { 999 } else { if i == 0 { 1 } else { 9 + i } };
                [("cvm", LineKind::Postpaid), ("cbs", LineKind::Prepaid)].map(|(product, kind)| {
                    (Text::from("org-1"), 1, member, if member == 1 { PayMode::SelfPaid } else { PayMode::Payer }, ProductName::from(product), kind)
                })
            })
            .collect();
        let sums: Vec<BillSums> = (0..keys.len() as i64)
            .map(|i| BillSums {
                lines: i as u64 * 3,
                list: Money::from_fen(1000 * i + 7),
                discount: Money::from_fen(-i),
                payable: Money::from_fen(1000 * i + 7 + i),
                voucher: Money::from_fen(5 - i),
                cash: Money::ZERO,
                gift: Money::from_fen(i * i),
                credit: Money::from_fen(-1000 * i),
            })
            .collect();
        let rows: Vec<(&BillKey, &BillSums)> = keys.iter().zip(&sums).collect();
        let month = crate::time::Month::parse("2026-10").unwrap();
        let mut text = String::new();
        merged_bill_rows(month, &snapshot, &rows, &mut text);
        assert_eq!(text, merged_bill_by_csv_writer(month, &snapshot, &rows));
        assert!(text.contains(",\"say \"\"hi\"\"\",\"d,1\","), "{text}");
    }
}
