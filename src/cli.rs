//! Command-line arguments (SPEC §13), turned into validated values once.

use crate::time::{Day, Month};

fn parse_month(text: &str) -> Result<Month, String> {
    Month::parse(text).ok_or_else(|| format!("{text:?} is not a month YYYY-MM"))
}
use clap::{Parser, Subcommand};
use std::path::PathBuf;

fn parse_day(text: &str) -> Result<Day, String> {
    Day::parse(text).ok_or_else(|| format!("{text:?} is not a date YYYY-MM-DD"))
}

#[derive(Parser, Debug)]
#[command(name = "orgsettle", version, about = "Billing and payer settlement for multi-account organizations")]
pub struct Cli {
    /// Silence progress on stderr.
    #[arg(long, global = true)]
    pub quiet: bool,
    /// Worker threads for settling organizations in parallel (default: all cores).
    #[arg(long, global = true)]
    pub threads: Option<usize>,
    /// Output formats: `csv` (always written) and `parquet` (Parquet copies of the
    /// ledger, merged bill and FOCUS files), comma separated.
    #[arg(long, global = true, value_delimiter = ',', default_value = "csv")]
    pub format: Vec<Format>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Csv,
    Parquet,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Settle one day (the nightly T+1 job).
    Daily {
        #[arg(long)]
        input: PathBuf,
        #[arg(long)]
        out: PathBuf,
        /// The day to settle, YYYY-MM-DD.
        #[arg(long, value_parser = parse_day)]
        date: Day,
    },
    /// Settle every calendar day of a range in order, continuing from the state in OUT.
    Run {
        #[arg(long)]
        input: PathBuf,
        #[arg(long)]
        out: PathBuf,
        /// First day (default: the day after the last settled one, or the first folder).
        #[arg(long, value_parser = parse_day)]
        from: Option<Day>,
        /// Last day (default: the last folder under INPUT/days).
        #[arg(long, value_parser = parse_day)]
        to: Option<Day>,
    },
    /// Close a month: merged bill, six-month overview and FOCUS export (day 2 of the next month).
    Close {
        #[arg(long)]
        input: PathBuf,
        #[arg(long)]
        out: PathBuf,
        /// The month to close, YYYY-MM.
        #[arg(long, value_parser = parse_month)]
        month: Month,
    },
    /// Write a deterministic synthetic input directory for a seed, at any scale.
    Gen {
        #[arg(long)]
        out: PathBuf,
        #[arg(long, default_value_t = 10)]
        orgs: u64,
        /// Accounts in all (at least 2 per organization); default 10 per organization.
        #[arg(long)]
        accounts: Option<u64>,
        #[arg(long, default_value_t = 1)]
        days: u64,
        #[arg(long, default_value_t = 10_000)]
        usage_per_day: u64,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// The first day (monthly rows appear on a month's last day).
        #[arg(long, value_parser = parse_day, default_value = "2026-10-31")]
        start: Day,
    },
    /// Check the snapshot, the reference files, the day folders and every row; write nothing.
    Validate {
        #[arg(long)]
        input: PathBuf,
    },
}
