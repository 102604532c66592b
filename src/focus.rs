//! FOCUS 1.2 export (FinOps Open Cost and Usage Specification): one row per
//! settled ledger line on the merged bill. The column mapping is documented in
//! docs/FOCUS.md.
//!
//! Invariant: Σ BilledCost of a month's rows = the merged bill's payable total.

use crate::engine::{LedgerLine, LineKind};
use crate::monthly::merged_bill_owner;
use crate::snapshot::Snapshot;
use crate::time::{Month, Ts};
use chrono::{DateTime, Timelike};

pub const PROVIDER_NAME: &str = "Tencent Cloud";
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
    let secs = t.0.div_euclid(1_000_000_000);
    let nanos = t.0.rem_euclid(1_000_000_000) as u32;
    let dt = DateTime::from_timestamp(secs, nanos).expect("instant in range");
    let mut text = dt.format("%Y-%m-%dT%H:%M:%S").to_string();
    if dt.nanosecond() != 0 {
        let frac = format!("{:09}", dt.nanosecond());
        text.push('.');
        text.push_str(frac.trim_end_matches('0'));
    }
    text.push('Z');
    text
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

fn name_or_id(snapshot: &Snapshot, uin: u64) -> String {
    match snapshot.find(uin) {
        Some((_, m)) if !m.name.is_empty() => m.name.clone(),
        _ => uin.to_string(),
    }
}

/// The FOCUS row of a ledger line, or None when the line is not on the merged bill.
pub fn focus_row(snapshot: &Snapshot, line: &LedgerLine) -> Option<Vec<String>> {
    let (org, _) = snapshot.find(line.owner_uin)?;
    merged_bill_owner(org, line)?;
    let (category, description, unit, quantity, (start, end)) = match (line.kind, line.period) {
        (LineKind::Postpaid, Some((cycle, start, end, records))) => (
            "Usage",
            format!("{} {} usage, {} record(s)", line.product, cycle, records),
            "Units",
            line.quantity.map(|q| q.to_string()).unwrap_or_else(|| "0".into()),
            (start, end),
        ),
        (LineKind::Refund, _) => (
            "Credit",
            format!(
                "{} refund of order {} to payer {}",
                line.product,
                line.order.as_ref().map(|o| o.0.as_str()).unwrap_or(""),
                line.responsible_uin
            ),
            "Orders",
            "1".into(),
            (line.charge_time.day().start(), line.charge_time.day().end()),
        ),
        _ => (
            "Purchase",
            format!("{} prepaid order {}", line.product, line.order.as_ref().map(|o| o.0.as_str()).unwrap_or("")),
            "Orders",
            "1".into(),
            (line.charge_time.day().start(), line.charge_time.day().end()),
        ),
    };
    let charge_class = if line.line_id.contains("|late-") { "Correction" } else { "" };
    Some(vec![
        line.payable_amount.to_string(),
        line.responsible_uin.to_string(),
        name_or_id(snapshot, line.responsible_uin),
        CURRENCY.into(),
        utc(line.bill_month.end()),
        utc(line.bill_month.start()),
        category.into(),
        charge_class.into(),
        description,
        utc(end),
        utc(start),
        line.payable_amount.to_string(),
        (line.payable_amount - line.voucher_amount).to_string(),
        line.list_amount.to_string(),
        PROVIDER_NAME.into(),
        PROVIDER_NAME.into(),
        PROVIDER_NAME.into(),
        quantity,
        unit.into(),
        service_category(&line.product).into(),
        line.product.clone(),
        line.owner_uin.to_string(),
        name_or_id(snapshot, line.owner_uin),
    ])
}

/// The FOCUS rows of a day's lines (header first).
pub fn focus_csv<'a>(rows: impl Iterator<Item = &'a Vec<String>>) -> Vec<u8> {
    let mut w = csv::WriterBuilder::new().terminator(csv::Terminator::Any(b'\n')).from_writer(Vec::new());
    w.write_record(FOCUS_COLUMNS).expect("write header");
    for r in rows {
        w.write_record(r).expect("write row");
    }
    w.into_inner().expect("in-memory writer")
}
