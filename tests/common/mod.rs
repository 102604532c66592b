//! Helpers: build an input directory from text, run the jobs, read outputs.
#![allow(dead_code)]

use orgsettle::job::{self, Options};
use orgsettle::time::Day;
use std::path::{Path, PathBuf};

pub fn day(text: &str) -> Day {
    Day::parse(text).expect("test day")
}

pub fn quiet() -> Options {
    Options { quiet: true, ..Options::default() }
}

/// An input directory under a temp dir, written file by file.
pub struct Scenario {
    pub dir: tempfile::TempDir,
}

impl Scenario {
    pub fn new() -> Scenario {
        Scenario { dir: tempfile::tempdir().expect("tempdir") }
    }
    pub fn input(&self) -> PathBuf {
        self.dir.path().join("in")
    }
    pub fn out(&self) -> PathBuf {
        self.dir.path().join("out")
    }
    pub fn file(&self, rel: &str, text: &str) -> &Scenario {
        let path = self.input().join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text.trim_start()).unwrap();
        self
    }
    pub fn run(&self) -> Result<(), job::Failure> {
        job::run(&self.input(), &self.out(), None, None, quiet())
    }
    pub fn daily(&self, d: &str) -> Result<(), job::Failure> {
        job::daily(&self.input(), &self.out(), day(d), quiet())
    }
    pub fn read(&self, rel: &str) -> String {
        read(&self.out().join(rel))
    }
    /// The rows of an output CSV after its header.
    pub fn rows(&self, rel: &str) -> Vec<String> {
        self.read(rel).lines().skip(1).map(str::to_string).collect()
    }
}

pub fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

/// One org: management 1, payer-admin 2 of entity e1, members as given (JSON objects).
pub fn org_json(extra_members: &str) -> String {
    format!(
        r#"{{"snapshot_at":"2026-11-01T00:00:00+08:00","inheritance_blacklist":["cdn"],"orgs":[{{"org_id":"o1",
        "created_at":"2026-01-01T00:00:00+08:00","management_uin":1,
        "entities":[{{"entity_id":"e1","name":"E1","admin_uin":2}}],
        "departments":[{{"dept_id":"root","name":"Root","parent_id":null}}],"members":[
        {{"uin":1,"entity_id":"e1","dept_id":"root","join_mode":"management","joined_at":"2026-01-01T00:00:00+08:00"}},
        {{"uin":2,"entity_id":"e1","dept_id":"root","join_mode":"created","joined_at":"2026-01-01T00:00:00+08:00"}}
        {extra_members}]}}]}}"#
    )
}

pub const USAGE_HEADER: &str =
    "record_id,owner_uin,resource_id,product,region,cycle,usage_start,usage_end,quantity,list_unit_price,list_amount\n";
pub const ORDERS_HEADER: &str = "order_id,owner_uin,resource_id,product,action,created_at,list_amount,refund_amount\n";
pub const LEDGER_HEADER: &str = "line_id,run_day,charge_time,bill_month,kind,org_id,owner_uin,responsible_uin,product,cycle,period_start,period_end,order_id,resource_id,usage_records,list_amount,discount_amount,payable_amount,pricing_uin,contract_id,voucher_amount,cash_amount,gift_amount,credit_amount,status";

/// A field of an unquoted CSV row by column name.
pub fn field<'a>(header: &str, row: &'a str, column: &str) -> &'a str {
    let i = header.split(',').position(|c| c == column).unwrap_or_else(|| panic!("no column {column}"));
    row.split(',').nth(i).unwrap_or("")
}

/// Selected columns of every ledger row of a day, joined by '/'.
pub fn ledger_cols(s: &Scenario, d: &str, columns: &[&str]) -> Vec<String> {
    s.rows(&format!("days/{d}/ledger.csv"))
        .iter()
        .map(|row| columns.iter().map(|c| field(LEDGER_HEADER, row, c)).collect::<Vec<_>>().join("/"))
        .collect()
}

/// Every file under `dir` with its bytes, keyed by relative path.
pub fn tree(dir: &Path) -> std::collections::BTreeMap<String, Vec<u8>> {
    let mut out = std::collections::BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let p = entry.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.insert(p.strip_prefix(dir).unwrap().display().to_string(), std::fs::read(&p).unwrap());
            }
        }
    }
    out
}

/// `file,line,id,reason` of every row of a day's rejects.csv.
pub fn reject_heads(s: &Scenario, d: &str) -> Vec<String> {
    s.rows(&format!("days/{d}/rejects.csv")).iter().map(|r| r.split(',').take(4).collect::<Vec<_>>().join(",")).collect()
}
