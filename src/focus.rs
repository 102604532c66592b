//! FOCUS 1.2 export (FinOps Open Cost and Usage Specification): one row per
//! settled ledger line on the merged bill. The column mapping is documented in
//! docs/FOCUS.md.
//!
//! Invariant: Σ BilledCost of a month's rows = the merged bill's payable total.

use crate::engine::{LedgerLine, LineKind};
use crate::money::PushText;
use crate::monthly::{merged_bill_owner, merged_bill_owner_of};
use crate::snapshot::{Member, Snapshot};
use crate::money::Money;
use crate::time::{Month, Ts};

macro_rules! provider_name {
    () => {
        "Tencent Cloud"
    };
}
pub const PROVIDER_NAME: &str = provider_name!();
/// ProviderName, PublisherName and InvoiceIssuerName, each followed by a comma.
const PROVIDER_NAMES: &str = concat!(provider_name!(), ",", provider_name!(), ",", provider_name!(), ",");
pub const CURRENCY: &str = "CNY";

pub const FOCUS_COLUMNS: [&str; 23] = [
    "BilledCost", "BillingAccountId", "BillingAccountName", "BillingCurrency", "BillingPeriodEnd",
    "BillingPeriodStart", "ChargeCategory", "ChargeClass", "ChargeDescription", "ChargePeriodEnd",
    "ChargePeriodStart", "ContractedCost", "EffectiveCost", "ListCost", "InvoiceIssuerName", "ProviderName",
    "PublisherName", "PricingQuantity", "PricingUnit", "ServiceCategory", "ServiceName", "SubAccountId",
    "SubAccountName",
];
/// Position of BillingPeriodStart, by which a month's rows are picked.
pub const BILLING_PERIOD_START: usize = 5;

/// FOCUS date-times are ISO 8601 in UTC.
pub fn utc(t: Ts) -> String {
    let mut out = String::with_capacity(24);
    write_utc(t, &mut out);
    out
}

/// The UTC form is the Beijing form shifted by 8 hours, with `Z`.
fn write_utc(t: Ts, out: &mut String) {
    let start = out.len();
    Ts(t.0 - 8 * 3_600_000_000_000).write_to(out);
    out.truncate(out.len() - "+08:00".len());
    out.push('Z');
    debug_assert!(out[start..].ends_with('Z'));
}

pub fn month_start_utc(month: Month) -> String {
    utc(month.start())
}

/// FOCUS 1.2 service categories for the product codes orgsettle knows of.
fn service_category(product: &str) -> &'static str {
    match product {
        "cvm" | "lighthouse" | "scf" | "tke" | "batch" | "gpu" => "Compute",
        "cbs" | "cos" | "cfs" | "archive" => "Storage",
        "cdn" | "eo" | "clb" | "vpc" | "dns" | "ecdn" => "Networking",
        "cdb" | "mysql" | "redis" | "mongodb" | "postgres" | "tdsql" => "Databases",
        _ => "Other",
    }
}

/// Append the account's name (the uin when it has none) as a CSV field.
fn push_name(out: &mut String, member: Option<&Member>, uin: u64) {
    match member {
        Some(m) if m.name_needs_quotes => push_field(out, &m.name),
        Some(m) if !m.name.is_empty() => out.put(&m.name),
        _ => out.put(itoa::Buffer::new().format(uin)),
    }
}

use crate::reports::{needs_quotes, push_field};

/// Is the line on its organization's merged bill (and so a FOCUS row)?
pub fn on_merged_bill(snapshot: &Snapshot, line: &LedgerLine) -> bool {
    snapshot.find(line.owner_uin).is_some_and(|(org, _)| merged_bill_owner(org, line).is_some())
}

/// The text of the instants a run of rows shares: its bill month's bounds, and
/// the last charge period written (consecutive rows in processing order mostly
/// share it).
#[derive(Default)]
struct Instants {
    /// The bill month, and its end and start as written (",end,start,").
    month: Option<(Month, String)>,
    /// The last period start written per cycle (orders' days in the fourth), and
    /// the last end written for usage and for orders: in processing order a
    /// run of rows shares its charge time, and per cycle its start, while
    /// cycles and kinds alternate (a kept pair of both hit 71% of rows, these nearly all).
    starts: [crate::reports::InstantText; 4],
    ends: [crate::reports::InstantText; 2],
    /// The last owner looked up, with its (organization, member) indices:
    /// consecutive rows are mostly one owner's products.
    owner: Option<(crate::ids::Uin, usize, usize)>,
}

/// Append the FOCUS row of a ledger line to `out` (with its newline); false, and
/// nothing appended, when the line is not on the merged bill.
pub fn write_focus_row(out: &mut String, snapshot: &Snapshot, line: &LedgerLine) -> bool {
    write_row(out, snapshot, line, &mut Instants::default())
}

fn write_row(out: &mut String, snapshot: &Snapshot, line: &LedgerLine, instants: &mut Instants) -> bool {
    let location = match instants.owner {
        Some((uin, o, m)) if uin == line.owner_uin => Some((o, m)),
        _ => snapshot.locate_at(line.owner_uin, line.place),
    };
    let Some((o, m)) = location else {
        return false;
    };
    instants.owner = Some((line.owner_uin, o, m));
    let (org, owner) = (&snapshot.orgs[o], &snapshot.orgs[o].members[m]);
    if merged_bill_owner_of(org, line, || Some(owner)).is_none() {
        return false;
    }
    let mut number = itoa::Buffer::new();
    let order_id = line.order().map(|o| o.order_id.as_str()).unwrap_or("");
    let (category, unit, start, end, slots) = match (line.kind, line.usage()) {
        (LineKind::Postpaid, Some(usage)) => ("Usage", "Units", usage.start, line.charge_time, (usage.cycle as usize, 0)),
        (LineKind::Refund, _) => ("Credit", "Orders", line.charge_time.day().start(), line.charge_time.day().end(), (3, 1)),
        _ => ("Purchase", "Orders", line.charge_time.day().start(), line.charge_time.day().end(), (3, 1)),
    };
    if instants.month.as_ref().is_none_or(|m| m.0 != line.bill_month.get()) {
        let month = line.bill_month.get();
        instants.month = Some((month, format!(",{},{},", utc(month.end()), utc(month.start()))));
    }
    let (_, month_bounds) = instants.month.as_ref().expect("set above");
    let period_end = instants.ends[slots.1].of_with(end, write_utc);
    let period_start = instants.starts[slots.0].of_with(start, write_utc);
    line.payable_amount.write_to(out);
    out.push(',');
    out.put(number.format(line.responsible_uin));
    out.push(',');
    let responsible = if line.responsible_uin == line.owner_uin { Some(owner) } else { snapshot.find(line.responsible_uin).map(|(_, m)| m) };
    push_name(out, responsible, line.responsible_uin);
    out.put(",CNY");
    out.put(month_bounds);
    out.put(category);
    out.push(',');
    out.put(if line.is_late() { "Correction" } else { "" });
    out.push(',');
    // The description, written in place: its parts are product codes, cycles,
    // ids and numbers, which never need quotes; quoted anyway if one did.
    let description = out.len();
    out.put(line.product);
    match (line.kind, line.usage()) {
        (LineKind::Postpaid, Some(usage)) => {
            out.push(' ');
            out.put(usage.cycle.as_str());
            out.put(" usage, ");
            out.put(number.format(usage.records));
            out.put(" record(s)");
        }
        (LineKind::Refund, _) => {
            out.put(" refund of order ");
            out.put(order_id);
            out.put(" to payer ");
            out.put(number.format(line.responsible_uin));
        }
        _ => {
            out.put(" prepaid order ");
            out.put(order_id);
        }
    }
    // It has a comma (", 3 record(s)"), so it is quoted, in place when it has no
    // quote to double (never, from these parts).
    if needs_quotes(&out[description..]) {
        if out[description..].contains('"') {
            let text = out.split_off(description);
            push_field(out, &text);
        } else {
            out.insert(description, '"');
            out.push('"');
        }
    }
    out.push(',');
    out.put(period_end);
    out.push(',');
    out.put(period_start);
    out.push(',');
    line.payable_amount.write_to(out);
    out.push(',');
    (line.payable_amount - line.voucher_amount).write_to(out);
    out.push(',');
    line.list_amount.write_to(out);
    out.push(',');
    out.put(PROVIDER_NAMES);
    match (line.kind, line.usage()) {
        (LineKind::Postpaid, Some(usage)) => usage.quantity.write_to(out),
        (LineKind::Postpaid, None) => out.push('0'),
        _ => out.push('1'),
    }
    out.push(',');
    out.put(unit);
    out.push(',');
    out.put(service_category(line.product));
    out.push(',');
    out.put(line.product);
    out.push(',');
    out.put(number.format(line.owner_uin));
    out.push(',');
    push_name(out, Some(owner), line.owner_uin);
    out.push('\n');
    true
}

/// Where a day's FOCUS rows go: one file per bill month, `begin` called before the
/// rows of each month (months ascending).
pub trait MonthSink: std::io::Write + Send {
    fn begin(&mut self, month: Month) -> std::io::Result<()>;
}

/// What a day appended to one bill month's FOCUS rows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MonthRows {
    pub month: Month,
    /// Bytes written (the rows only: the sink writes a new file's header).
    pub len: u64,
    pub rows: u64,
    pub billed: Money,
}

/// The FOCUS header line.
pub fn header() -> String {
    let mut head = FOCUS_COLUMNS.join(",");
    head.push('\n');
    head
}

/// What a run of a day's FOCUS rows becomes in the month files: a month begun
/// (the rows after it are its own), or rows of the month begun last, rendered.
#[derive(Debug)]
pub enum FocusPiece {
    Begin(Month),
    Rows(Vec<String>),
}

/// Hand `piece` to `sink`.
pub fn apply(piece: FocusPiece, sink: &mut dyn MonthSink) -> std::io::Result<()> {
    match piece {
        FocusPiece::Begin(month) => sink.begin(month),
        FocusPiece::Rows(texts) => texts.iter().try_for_each(|text| sink.write_all(text.as_bytes())),
    }
}

/// The FOCUS rows of a day's lines on the merged bill, made from the lines in
/// processing order a run at a time (`add`), so that the day's lines are never
/// held at once. The processing time decides the bill month, so each month's
/// rows are contiguous; a month none of whose lines is on a merged bill gets no
/// file. `finish` tells what each month received, months ascending.
pub struct FocusRows<'s> {
    snapshot: &'s Snapshot,
    /// The month of the last run, and whether it was begun.
    current: Option<(Month, bool)>,
    months: Vec<MonthRows>,
}

impl<'s> FocusRows<'s> {
    pub fn new(snapshot: &'s Snapshot) -> FocusRows<'s> {
        FocusRows { snapshot, current: None, months: Vec::new() }
    }

    /// The pieces of `rows`, the next lines of the day in processing order (each
    /// resolved to its line by `line`), rendered on all cores.
    pub fn add<'r, T: Sync>(&mut self, rows: &'r [T], line: impl Fn(&'r T) -> &'r LedgerLine + Sync) -> std::io::Result<Vec<FocusPiece>> {
        use rayon::prelude::*;
        // As `reports::RENDER_CHUNK`: a run's rows in a few tasks of like size.
        const CHUNK: usize = 4 * 1024;
        let snapshot = self.snapshot;
        let not_contiguous = |month: Month| std::io::Error::other(format!("FOCUS rows of {month} are not contiguous in processing order"));
        let mut pieces = Vec::new();
        let mut start = 0;
        while start < rows.len() {
            let month = line(&rows[start]).bill_month.get();
            match self.current {
                // The month of the last run goes on (a run of a month ends where
                // this call's rows do).
                Some((previous, _)) if previous == month && start == 0 => {}
                // A guard only: the bisection below ends each run before a row of
                // a later month, so a run never starts at a month already written; a
                // row out of order is inside a run and caught as it is rendered.
                Some((previous, _)) if previous >= month => return Err(not_contiguous(month)),
                _ => self.current = Some((month, false)),
            }
            // Bill months ascend in processing order, so a month's run ends where
            // the first row of a later month is (found by bisection: a scan touched
            // every line, one core's cache miss at a time).
            let (mut end, mut beyond) = (start + 1, rows.len());
            while end < beyond {
                let mid = end + (beyond - end) / 2;
                if line(&rows[mid]).bill_month.get() <= month {
                    end = mid + 1;
                } else {
                    beyond = mid;
                }
            }
            let run: &'r [T] = &rows[start..end];
            start = end;
            let begun = &mut self.current.as_mut().expect("set above").1;
            if !*begun {
                if !run.par_iter().any(|row| on_merged_bill(snapshot, line(row))) {
                    continue;
                }
                *begun = true;
                pieces.push(FocusPiece::Begin(month));
                self.months.push(MonthRows { month, len: 0, rows: 0, billed: Money::ZERO });
            }
            let line = &line;
            let rendered: Vec<(String, u64, Money, bool)> = run
                .par_chunks(CHUNK)
                .map(|chunk| {
                    let mut text = String::with_capacity(chunk.len() * 300);
                    let mut instants = Instants::default();
                    let (mut count, mut billed, mut strays) = (0u64, Money::ZERO, false);
                    for line in crate::reports::ahead(chunk, line) {
                        strays |= line.bill_month.get() != month;
                        if write_row(&mut text, snapshot, line, &mut instants) {
                            count += 1;
                            billed += line.payable_amount;
                        }
                    }
                    (text, count, billed, strays)
                })
                .collect();
            if rendered.iter().any(|r| r.3) {
                return Err(not_contiguous(month));
            }
            let sums = self.months.last_mut().expect("begun above");
            let mut texts = Vec::with_capacity(rendered.len());
            for (text, count, billed, _) in rendered {
                sums.len += text.len() as u64;
                sums.rows += count;
                sums.billed += billed;
                texts.push(text);
            }
            pieces.push(FocusPiece::Rows(texts));
        }
        Ok(pieces)
    }

    /// What each month received, months ascending.
    pub fn finish(self) -> Vec<MonthRows> {
        self.months
    }
}

/// The FOCUS rows of a day's lines on the merged bill, `rows` in processing order
/// (each resolved to its line by `line`), written to `sink` month by month at
/// once (`FocusRows` for the same a run at a time); returns what each month
/// received, months ascending.
pub fn write_focus_rows<'r, T: Sync>(
    snapshot: &Snapshot,
    rows: &'r [T],
    line: impl Fn(&'r T) -> &'r LedgerLine + Sync,
    sink: &mut dyn MonthSink,
) -> std::io::Result<Vec<MonthRows>> {
    let mut focus = FocusRows::new(snapshot);
    for piece in focus.add(rows, line)? {
        apply(piece, sink)?;
    }
    Ok(focus.finish())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::time::Cycle;

    /// A sink that records which months were begun and what each received.
    #[derive(Default)]
    struct Months(Vec<(Month, Vec<u8>)>);

    impl std::io::Write for Months {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.last_mut().expect("a month begun before its rows").1.extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl MonthSink for Months {
        fn begin(&mut self, month: Month) -> std::io::Result<()> {
            self.0.push((month, Vec::new()));
            Ok(())
        }
    }

    fn snapshot() -> Snapshot {
        let json = r#"{"snapshot_at":"2026-11-01T00:00:00+08:00","orgs":[{"org_id":"org-1","created_at":"2026-01-01T00:00:00+08:00",
            "management_uin":1,"entities":[{"entity_id":"e1"}],"departments":[{"dept_id":"root","parent_id":null}],"members":[
            {"uin":1,"name":"HQ","entity_id":"e1","dept_id":"root","join_mode":"management","joined_at":"2026-01-01T00:00:00+08:00"}]}]}"#;
        Snapshot::from_json(json.as_bytes()).expect("a snapshot")
    }

    /// The management account's settled hourly line for the hour ending at `end`.
    fn line(end: &str, fen: i64) -> LedgerLine {
        let (start, _) = Cycle::Hourly.period_containing(Ts::parse(end).expect("an instant").pred());
        LedgerLine::settled_postpaid((1, 1), Cycle::Hourly, (&start.to_string(), end), None, fen)
    }

    /// A line's place is taken only when it names the line's owner: a place
    /// left unknown, or naming another member or none, gives the owner's row
    /// all the same.
    #[test]
    fn a_line_is_rendered_for_its_owner_whatever_place_it_names() {
        let json = r#"{"snapshot_at":"2026-11-01T00:00:00+08:00","orgs":[{"org_id":"org-1","created_at":"2026-01-01T00:00:00+08:00",
            "management_uin":1,"entities":[{"entity_id":"e1"}],"departments":[{"dept_id":"root","parent_id":null}],"members":[
            {"uin":1,"name":"HQ","entity_id":"e1","dept_id":"root","join_mode":"management","joined_at":"2026-01-01T00:00:00+08:00"},
            {"uin":2,"name":"Shop","entity_id":"e1","dept_id":"root","join_mode":"created","joined_at":"2026-01-01T00:00:00+08:00"}]}]}"#;
        let snapshot = Snapshot::from_json(json.as_bytes()).expect("a snapshot");
        // Member 2's line, paid by the management account.
        let base = LedgerLine::settled_postpaid((2, 1), Cycle::Hourly, ("2026-11-01T00:00:00+08:00", "2026-11-01T01:00:00+08:00"), None, 5);
        let render = |place: (u32, u32)| {
            let line = LedgerLine { place, ..base.clone() };
            let mut text = String::new();
            assert!(write_focus_row(&mut text, &snapshot, &line), "{place:?}");
            text
        };
        let expected = render((0, 1));
        assert!(expected.contains(",1,HQ,") && expected.trim_end().ends_with(",2,Shop"), "{expected}");
        for place in [(u32::MAX, u32::MAX), (0, 0), (1, 1), (0, 2)] {
            assert_eq!(render(place), expected, "{place:?}");
        }
    }

    const OCT_A: &str = "2026-10-31T23:00:00+08:00";
    const OCT_B: &str = "2026-11-01T00:00:00+08:00"; // the hour 23:00–24:00 of Oct 31
    const NOV: &str = "2026-11-01T01:00:00+08:00";

    #[test]
    fn each_month_gets_its_own_rows_and_sums() {
        let snapshot = snapshot();
        let lines = [line(OCT_A, 100), line(OCT_B, 20), line(NOV, 3)];
        let mut sink = Months::default();
        let months = write_focus_rows(&snapshot, &lines, |l| l, &mut sink).expect("contiguous months");
        let (oct, nov) = (Month::parse("2026-10").unwrap(), Month::parse("2026-11").unwrap());
        assert_eq!(sink.0.iter().map(|(m, _)| *m).collect::<Vec<_>>(), [oct, nov]);
        let rendered = |ls: &[LedgerLine]| {
            let mut text = String::new();
            for l in ls {
                assert!(write_focus_row(&mut text, &snapshot, l));
            }
            text.into_bytes()
        };
        assert_eq!(sink.0[0].1, rendered(&lines[..2]));
        assert_eq!(sink.0[1].1, rendered(&lines[2..]));
        assert_eq!(
            months,
            [
                MonthRows { month: oct, len: sink.0[0].1.len() as u64, rows: 2, billed: Money::from_fen(120) },
                MonthRows { month: nov, len: sink.0[1].1.len() as u64, rows: 1, billed: Money::from_fen(3) },
            ]
        );
    }

    #[test]
    fn rows_of_several_render_tasks_are_each_months_rows_in_order_with_exact_sums() {
        // 9,000 hours of October then 5,000 of November (the month changes
        // inside a render task of 4k rows), each line's amount its own: the
        // months' bytes are their rows rendered one by one, the sums exact.
        let snapshot = snapshot();
        let oct_start = Ts::parse("2026-10-01T00:00:00+08:00").unwrap();
        let hour = |k: i64| Ts(oct_start.0 + (k % 744 + 1) * 3_600_000_000_000).to_string();
        let nov_hour = |k: i64| Ts(oct_start.0 + (744 + k % 720 + 1) * 3_600_000_000_000).to_string();
        let mut lines: Vec<LedgerLine> = (0..9000).map(|k| line(&hour(k), 1 + k % 97)).collect();
        lines.extend((0..5000).map(|k| line(&nov_hour(k), 1 + k % 89)));
        let mut sink = Months::default();
        let months = write_focus_rows(&snapshot, &lines, |l| l, &mut sink).expect("contiguous months");
        let rendered = |ls: &[LedgerLine]| {
            let mut text = String::new();
            for l in ls {
                assert!(write_focus_row(&mut text, &snapshot, l));
            }
            text.into_bytes()
        };
        let (oct, nov) = (Month::parse("2026-10").unwrap(), Month::parse("2026-11").unwrap());
        assert_eq!(sink.0.iter().map(|(m, _)| *m).collect::<Vec<_>>(), [oct, nov]);
        assert_eq!(sink.0[0].1, rendered(&lines[..9000]));
        assert_eq!(sink.0[1].1, rendered(&lines[9000..]));
        let fen = |n: i64, m: i64| (0..n).map(|k| 1 + k % m).sum::<i64>();
        assert_eq!(
            months,
            [
                MonthRows { month: oct, len: sink.0[0].1.len() as u64, rows: 9000, billed: Money::from_fen(fen(9000, 97)) },
                MonthRows { month: nov, len: sink.0[1].1.len() as u64, rows: 5000, billed: Money::from_fen(fen(5000, 89)) },
            ]
        );
        assert_eq!((fen(9000, 97), fen(5000, 89)), (440_202, 224_416));
    }

    #[test]
    fn kept_period_texts_are_each_rows_own_when_cycles_alternate() {
        let snapshot = snapshot();
        let day_start = "2026-11-01T00:00:00+08:00";
        let hourly = |end: &str| line(end, 5);
        let daily = |end: &str| LedgerLine::settled_postpaid((1, 1), Cycle::Daily, (day_start, end), None, 7);
        let (h1, h2) = ("2026-11-01T01:00:00+08:00", "2026-11-01T02:00:00+08:00");
        // Same ends with different starts, and the same start with different ends.
        let lines = [hourly(h1), daily(h1), hourly(h1), daily(h2), hourly(h2), hourly(h2), daily(h2)];
        let mut sink = Months::default();
        write_focus_rows(&snapshot, &lines, |l| l, &mut sink).expect("one month");
        let mut alone = String::new();
        for l in &lines {
            assert!(write_focus_row(&mut alone, &snapshot, l));
        }
        assert_eq!(String::from_utf8(sink.0[0].1.clone()).unwrap(), alone);
        let rows: Vec<&str> = alone.lines().collect();
        assert!(rows[3].contains(",2026-10-31T18:00:00Z,2026-10-31T16:00:00Z,"), "{}", rows[3]);
        assert!(rows[4].contains(",2026-10-31T18:00:00Z,2026-10-31T17:00:00Z,"), "{}", rows[4]);
    }

    #[test]
    fn a_name_with_a_comma_or_quote_is_quoted_and_a_plain_one_is_not() {
        for (name, field) in [("HQ", ",HQ\n"), (r#"HQ, \"East\""#, r#","HQ, ""East""""#), ("", ",1\n")] {
            let json = format!(
                r#"{{"snapshot_at":"2026-11-01T00:00:00+08:00","orgs":[{{"org_id":"org-1","created_at":"2026-01-01T00:00:00+08:00",
                "management_uin":1,"entities":[{{"entity_id":"e1"}}],"departments":[{{"dept_id":"root","parent_id":null}}],"members":[
                {{"uin":1,"name":"{name}","entity_id":"e1","dept_id":"root","join_mode":"management","joined_at":"2026-01-01T00:00:00+08:00"}}]}}]}}"#
            );
            let snapshot = Snapshot::from_json(json.as_bytes()).expect("a snapshot");
            let mut row = String::new();
            assert!(write_focus_row(&mut row, &snapshot, &line(NOV, 3)));
            let expected = if field.ends_with('\n') { field.to_string() } else { format!("{field}\n") };
            assert!(row.ends_with(&format!(",cvm,1{expected}")), "{name:?}: {row}");
            let record = csv::ReaderBuilder::new().has_headers(false).from_reader(row.as_bytes()).records().next().unwrap().unwrap();
            let want = if name.is_empty() { "1".to_string() } else { name.replace("\\\"", "\"") };
            assert_eq!(&record[record.len() - 1], want);
            assert_eq!(&record[2], want);
        }
    }

    #[test]
    fn a_month_met_again_after_a_later_one_is_refused() {
        let snapshot = snapshot();
        // A month's run, found by bisection, ends before a row of a later month,
        // so a row out of order is inside a run and caught as the run is
        // rendered: a later month inside October's run, and October inside
        // November's.
        let inside = [line(OCT_A, 1), line(NOV, 2), line(OCT_B, 3)];
        let after = [line(NOV, 2), line(OCT_A, 1)];
        for lines in [&inside[..], &after[..]] {
            let error = write_focus_rows(&snapshot, lines, |l| l, &mut Months::default()).expect_err("months out of order");
            assert!(error.to_string().contains("are not contiguous in processing order"), "{error}");
        }
    }
}
