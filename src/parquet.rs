//! Parquet copies of output CSV files (`--format parquet`), written with polars.
//!
//! Each Parquet file is built from the CSV bytes orgsettle already produced, so the
//! two can never disagree: amounts become Decimal(38, 2) (quantities Decimal(38, 8)),
//! times UTC timestamps in nanoseconds, days Date, counts and UINs Int64; an empty
//! CSV field is null.

use crate::money::{Exact8, Money};
use crate::time::{Day, Ts};
use polars::prelude::*;

/// The type of one column.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Text,
    Int,
    Money,
    Quantity,
    Timestamp,
    Date,
}

fn kind_of(column: &str) -> Kind {
    match column {
        "run_day" => Kind::Date,
        "charge_time" | "period_start" | "period_end" | "BillingPeriodStart" | "BillingPeriodEnd"
        | "ChargePeriodStart" | "ChargePeriodEnd" => Kind::Timestamp,
        "owner_uin" | "responsible_uin" | "pricing_uin" | "usage_records" | "bill_owner_uin" | "member_uin" | "lines"
        | "BillingAccountId" | "SubAccountId" => Kind::Int,
        "PricingQuantity" => Kind::Quantity,
        c if c.ends_with("_amount") || c.ends_with("Cost") => Kind::Money,
        _ => Kind::Text,
    }
}

/// The column types of a CSV header, as orgsettle's files use them.
pub fn kinds(header: &[String]) -> Vec<Kind> {
    header.iter().map(|c| kind_of(c)).collect()
}

fn bad(column: &str, text: &str) -> PolarsError {
    PolarsError::ComputeError(format!("column {column}: {text:?} does not fit its type").into())
}

fn timestamp_text(text: &str) -> Option<Ts> {
    Ts::parse(text)
}

/// Convert an orgsettle CSV file to Parquet.
pub fn csv_to_parquet(csv_bytes: &[u8]) -> Result<Vec<u8>, String> {
    build(csv_bytes).map_err(|e| format!("parquet: {e}"))
}

fn build(csv_bytes: &[u8]) -> PolarsResult<Vec<u8>> {
    let mut reader = csv::Reader::from_reader(csv_bytes);
    let header: Vec<String> = reader.headers().map_err(|e| bad("header", &e.to_string()))?.iter().map(String::from).collect();
    let records: Vec<csv::StringRecord> =
        reader.records().collect::<Result<_, _>>().map_err(|e| bad("row", &e.to_string()))?;
    let mut columns: Vec<Column> = Vec::with_capacity(header.len());
    for (i, (name, kind)) in header.iter().zip(kinds(&header)).enumerate() {
        let texts = records.iter().map(|r| r.get(i).unwrap_or("")).map(|t| (!t.is_empty()).then_some(t));
        let name = PlSmallStr::from(name.as_str());
        let series = match kind {
            Kind::Text => Series::new(name, texts.collect::<Vec<Option<&str>>>()),
            Kind::Int => {
                let values: Vec<Option<i64>> = texts.map(|t| t.map(|t| t.parse::<i64>().map_err(|_| bad(&header[i], t))).transpose()).collect::<Result<_, _>>()?;
                Series::new(name, values)
            }
            Kind::Money | Kind::Quantity => {
                let (scale, values): (usize, Vec<Option<i128>>) = if kind == Kind::Money {
                    (2, texts.map(|t| t.map(|t| Money::parse(t).map(|m| i128::from(m.fen())).map_err(|_| bad(&header[i], t))).transpose()).collect::<Result<_, _>>()?)
                } else {
                    (8, texts.map(|t| t.map(|t| Exact8::parse(t).map(|q| q.0).map_err(|_| bad(&header[i], t))).transpose()).collect::<Result<_, _>>()?)
                };
                Int128Chunked::from_iter_options(name, values.into_iter()).into_decimal(38, scale)?.into_series()
            }
            Kind::Timestamp => {
                let values: Vec<Option<i64>> = texts
                    .map(|t| t.map(|t| timestamp_text(t).or_else(|| Ts::parse(&t.replace('Z', "+00:00"))).map(|ts| ts.0).ok_or_else(|| bad(&header[i], t))).transpose())
                    .collect::<Result<_, _>>()?;
                Series::new(name, values).into_datetime(TimeUnit::Nanoseconds, Some(TimeZone::UTC))
            }
            Kind::Date => {
                let epoch = chrono::NaiveDate::from_ymd_opt(1970, 1, 1).expect("epoch");
                let values: Vec<Option<i32>> = texts
                    .map(|t| t.map(|t| Day::parse(t).map(|d| (d.0 - epoch).num_days() as i32).ok_or_else(|| bad(&header[i], t))).transpose())
                    .collect::<Result<_, _>>()?;
                Series::new(name, values).into_date()
            }
        };
        columns.push(series.into_column());
    }
    let mut frame = DataFrame::new(records.len(), columns)?;
    let mut out = Vec::new();
    ParquetWriter::new(&mut out).finish(&mut frame)?;
    Ok(out)
}

/// Read a Parquet file back as CSV-style text cells (for tests and checks): decimals
/// with their scale, timestamps as orgsettle writes them, null as "".
pub fn parquet_to_cells(bytes: &[u8]) -> Result<(Vec<String>, Vec<Vec<String>>), String> {
    let frame = ParquetReader::new(std::io::Cursor::new(bytes.to_vec())).finish().map_err(|e| e.to_string())?;
    let header: Vec<String> = frame.get_column_names().iter().map(|n| n.to_string()).collect();
    let mut rows = vec![Vec::with_capacity(header.len()); frame.height()];
    for column in frame.columns() {
        let series = column.as_materialized_series();
        for (r, row) in rows.iter_mut().enumerate() {
            let value = series.get(r).map_err(|e| e.to_string())?;
            row.push(cell(&value));
        }
    }
    Ok((header, rows))
}

fn cell(value: &AnyValue) -> String {
    match value {
        AnyValue::Null => String::new(),
        AnyValue::String(s) => s.to_string(),
        AnyValue::StringOwned(s) => s.to_string(),
        AnyValue::Int64(v) => v.to_string(),
        AnyValue::Int32(v) => v.to_string(),
        AnyValue::Decimal(v, _precision, scale) => {
            let unit = 10i128.pow(*scale as u32);
            let sign = if *v < 0 { "-" } else { "" };
            format!("{sign}{}.{:0width$}", v.abs() / unit, v.abs() % unit, width = *scale)
        }
        AnyValue::Datetime(ns, TimeUnit::Nanoseconds, _) => Ts(*ns).to_string(),
        AnyValue::Date(days) => {
            let epoch = chrono::NaiveDate::from_ymd_opt(1970, 1, 1).expect("epoch");
            Day(epoch + chrono::Days::new(*days as u64)).to_string()
        }
        other => other.to_string(),
    }
}
