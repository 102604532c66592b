//! Property tests over whole scenarios: small random organizations and days.
//! `PROPTEST_CASES=N cargo test --release properties` runs more cases (default 24).

use crate::common::*;
use proptest::prelude::*;
use std::collections::BTreeMap;
use std::fmt::Write as _;

/// A small deterministic generator, so a failing case is one seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len() as u64) as usize]
    }
    fn money(&mut self, max_fen: u64) -> String {
        let fen = self.below(max_fen);
        format!("{}.{:02}", fen / 100, fen % 100)
    }
}

const DAYS: [&str; 3] = ["2026-10-30", "2026-10-31", "2026-11-01"];

/// Input files of a random scenario: path → content.
fn scenario_files(seed: u64) -> BTreeMap<String, String> {
    let mut r = Rng(seed | 1);
    let mut files = BTreeMap::new();
    let mut orgs = Vec::new();
    let mut accounts = Vec::new();
    let mut contracts = String::from("contract_id,owner_uin,product,cycle,kind,value,valid_from,valid_to\n");
    let mut balances = String::from("uin,cash,gift,credit_limit\n");
    let mut vouchers = String::from("voucher_id,owner_uin,kind,amount,valid_from,valid_to,products,scope,min_charge\n");
    for o in 1..=1 + r.below(2) {
        let m = o * 1000;
        let admin = m + 1;
        let mut members = vec![format!(
            r#"{{"uin":{m},"entity_id":"e","dept_id":"root","join_mode":"management","joined_at":"2026-01-01T00:00:00+08:00"}}"#
        )];
        members.push(format!(
            r#"{{"uin":{admin},"entity_id":"e","dept_id":"root","join_mode":"created","joined_at":"2026-01-01T00:00:00+08:00","permissions":["merged_bill"]}}"#
        ));
        accounts.extend([m, admin]);
        for k in 0..1 + r.below(4) {
            let uin = m + 2 + k;
            accounts.push(uin);
            let mut perms = Vec::new();
            for p in ["fund_transfer", "discount_inheritance", "merged_bill"] {
                if r.chance(50) {
                    perms.push(format!("\"{p}\""));
                }
            }
            let joined = if r.chance(15) { "2026-10-31T06:00:00+08:00" } else { "2026-02-01T00:00:00+08:00" };
            let mut periods = Vec::new();
            if r.chance(60) {
                let payer = if r.chance(50) { admin } else { m };
                let from = r.pick(&["2026-03-01T00:00:00+08:00", "2026-10-30T10:30:00+08:00", "2026-10-31T00:00:00+08:00"]);
                let to = r.pick(&["null", "\"2026-10-31T12:00:00+08:00\"", "\"2026-11-01T00:00:00+08:00\""]);
                if joined <= from {
                    periods.push(format!(r#"{{"payer_uin":{payer},"from":"{from}","to":{to}}}"#));
                }
            }
            members.push(format!(
                r#"{{"uin":{uin},"entity_id":"e","dept_id":"root","join_mode":"invited","joined_at":"{joined}","permissions":[{}],"payer_periods":[{}]}}"#,
                perms.join(","),
                periods.join(",")
            ));
        }
        orgs.push(format!(
            r#"{{"org_id":"org-{o}","created_at":"2026-01-01T00:00:00+08:00","management_uin":{m},
            "entities":[{{"entity_id":"e","admin_uin":{admin}}}],"departments":[{{"dept_id":"root"}}],"members":[{}]}}"#,
            members.join(",")
        ));
        writeln!(contracts, "c{m}h,{m},cvm,hourly,discount,0.{},2026-01-01T00:00:00+08:00,", 5 + r.below(5)).unwrap();
        writeln!(contracts, "c{admin}h,{admin},cvm,hourly,tiered,0:0.5|3:0.25,2026-01-01T00:00:00+08:00,").unwrap();
        writeln!(contracts, "c{m}p,{m},cbs,prepaid,fixed_price,{},2026-01-01T00:00:00+08:00,", r.money(3000)).unwrap();
        writeln!(contracts, "c{admin}p,{admin},cbs,prepaid,discount,0.75,2026-01-01T00:00:00+08:00,").unwrap();
    }
    for &uin in &accounts {
        if r.chance(80) {
            writeln!(balances, "{uin},{},{},{}", r.money(5000), r.money(500), r.money(2000)).unwrap();
        }
        if r.chance(40) {
            let scope = r.pick(&["all", "postpaid", "prepaid"]);
            let products = r.pick(&["", "cvm", "cbs|cvm"]);
            let valid_to = r.pick(&["2026-10-31T00:00:00+08:00", "2027-01-01T00:00:00+08:00"]);
            writeln!(vouchers, "v{uin},{uin},voucher,{},2026-10-01T00:00:00+08:00,{valid_to},{products},{scope},", r.money(2000).replace("0.00", "1.00")).unwrap();
        }
    }
    files.insert("org.json".into(), format!(r#"{{"snapshot_at":"2026-10-30T00:00:00+08:00","orgs":[{}]}}"#, orgs.join(",")));
    files.insert("contracts.csv".into(), contracts);
    files.insert("balances.csv".into(), balances);
    files.insert("vouchers.csv".into(), vouchers);

    let mut next_id: u64 = 0;
    for (d, day) in DAYS.iter().enumerate() {
        let mut usage = String::from(USAGE_HEADER);
        let mut orders = String::from(ORDERS_HEADER);
        let mut recharges = String::from("recharge_id,uin,at,amount\n");
        let mut transfers = String::from("transfer_id,kind,member_uin,at,amount,source_transfer_id\n");
        for _ in 0..r.below(25) {
            next_id += 1;
            let owner = accounts[r.below(accounts.len() as u64) as usize];
            let late = d > 0 && r.chance(10);
            let on = if late { DAYS[d - 1] } else { day };
            let hour = r.below(24);
            let (cycle, start, end) = if r.chance(75) {
                ("hourly", format!("{on}T{hour:02}:00:00+08:00"), format!("{on}T{hour:02}:59:00+08:00"))
            } else {
                ("daily", format!("{on}T00:00:00+08:00"), format!("{on}T12:00:00+08:00"))
            };
            let q = 1 + r.below(9);
            let price = r.below(999) + 1;
            let product = r.pick(&["cvm", "cvm", "cdn"]);
            // list_amount exactly q × 0.ppp.
            let amount = q * price;
            let list = format!("{}.{:03}", amount / 1000, amount % 1000);
            writeln!(usage, "u{next_id},{owner},i{owner},{product},r1,{cycle},{start},{end},{q},0.{price:03},{list}").unwrap();
        }
        for _ in 0..r.below(6) {
            next_id += 1;
            let owner = accounts[r.below(accounts.len() as u64) as usize];
            let at = format!("{day}T{:02}:{:02}:00+08:00", r.below(24), r.below(60));
            let resource = format!("res{}", r.below(4));
            if r.chance(70) {
                writeln!(orders, "o{next_id},{owner},{resource},cbs,new,{at},{},", r.money(5000)).unwrap();
            } else {
                writeln!(orders, "o{next_id},{owner},{resource},cbs,refund,{at},,{}", r.money(3000).replace("0.00", "0.01")).unwrap();
            }
        }
        for _ in 0..r.below(3) {
            next_id += 1;
            let uin = accounts[r.below(accounts.len() as u64) as usize];
            writeln!(recharges, "rc{next_id},{uin},{day}T{:02}:00:00+08:00,{}", r.below(24), r.money(3000).replace("0.00", "0.01")).unwrap();
        }
        for _ in 0..r.below(4) {
            next_id += 1;
            let member = accounts[r.below(accounts.len() as u64) as usize];
            let at = format!("{day}T{:02}:00:00+08:00", r.below(24));
            if r.chance(60) {
                writeln!(transfers, "t{next_id},in,{member},{at},{},", r.money(2000)).unwrap();
            } else {
                writeln!(transfers, "t{next_id},out,{member},{at},{},t{}", r.money(1000), next_id.saturating_sub(1 + r.below(3))).unwrap();
            }
        }
        for (name, text) in [("usage.csv", usage), ("orders.csv", orders), ("recharges.csv", recharges), ("transfers.csv", transfers)] {
            files.insert(format!("days/{day}/{name}"), text);
        }
    }
    files
}

fn write_input(files: &BTreeMap<String, String>, shuffle_seed: Option<u64>) -> Scenario {
    let s = Scenario::new();
    for (path, text) in files {
        let text = match shuffle_seed {
            Some(seed) if path.starts_with("days/") => {
                let mut lines: Vec<&str> = text.lines().collect();
                let mut r = Rng(seed | 1);
                for i in (2..lines.len()).rev() {
                    let j = 1 + r.below(i as u64) as usize;
                    lines.swap(i, j);
                }
                lines.join("\n") + "\n"
            }
            _ => text.clone(),
        };
        s.file(path, &text);
    }
    s
}

/// rejects.csv without line numbers, as a sorted list (row order changes lines).
fn rejects_without_lines(tree: &BTreeMap<String, Vec<u8>>) -> BTreeMap<String, Vec<String>> {
    tree.iter()
        .filter(|(k, _)| k.ends_with("rejects.csv"))
        .map(|(k, v)| {
            let mut rows: Vec<String> = String::from_utf8_lossy(v)
                .lines()
                .skip(1)
                .map(|l| {
                    let f: Vec<&str> = l.splitn(5, ',').collect();
                    format!("{},{},{}", f[0], f[2], f[3])
                })
                .collect();
            rows.sort();
            (k.clone(), rows)
        })
        .collect()
}

fn outputs(s: &Scenario) -> BTreeMap<String, Vec<u8>> {
    tree(&s.out())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn whole_scenarios_are_deterministic_and_conserve_money(seed in any::<u64>()) {
        let files = scenario_files(seed);
        let base = write_input(&files, None);
        let pool = |n| rayon::ThreadPoolBuilder::new().num_threads(n).build().unwrap();
        pool(2).install(|| base.run()).unwrap();
        let reference = outputs(&base);
        if std::env::var_os("ORGSETTLE_SHOW").is_some() { for d in DAYS { eprintln!("{}", String::from_utf8_lossy(&reference[&format!("days/{d}/summary.json")]).replace(char::is_whitespace, "")); } }
        prop_assert!(reference.contains_key("months/2026-10/merged_bill.csv"));

        // 1 thread gives the same bytes.
        let one = write_input(&files, None);
        pool(1).install(|| one.run()).unwrap();
        prop_assert!(outputs(&one) == reference, "1 thread differs from 2");

        // Day by day equals one run over the range.
        // Reruns of any day (here the second, then the last) give the same bytes.
        let daily = write_input(&files, None);
        for d in DAYS {
            daily.daily(d).unwrap();
        }
        daily.daily(DAYS[1]).unwrap();
        daily.daily(DAYS[2]).unwrap();
        daily.daily(DAYS[2]).unwrap();
        orgsettle::job::close(&daily.input(), &daily.out(), orgsettle::time::Month::parse("2026-10").unwrap(), quiet()).unwrap();
        prop_assert!(outputs(&daily) == reference, "daily runs and reruns differ from one run");

        // Shuffled rows: the same files, but rejects name other lines.
        let shuffled = write_input(&files, Some(seed.rotate_left(17)));
        shuffled.run().unwrap();
        let got = outputs(&shuffled);
        for (name, bytes) in &reference {
            if !name.ends_with("rejects.csv") {
                prop_assert!(got.get(name) == Some(bytes), "{} differs after shuffling rows", name);
            }
        }
        prop_assert_eq!(rejects_without_lines(&got), rejects_without_lines(&reference));

        // Conservation, recomputed from the outputs: closing cash = opening cash +
        // accepted recharges + transfers − cash and credit parts of lines.
        let mut cash: BTreeMap<u64, i64> = BTreeMap::new();
        for line in files["balances.csv"].lines().skip(1) {
            let f: Vec<&str> = line.split(',').collect();
            cash.insert(f[0].parse().unwrap(), orgsettle::money::Money::parse(f[1]).unwrap().fen());
        }
        for d in DAYS {
            let summary: serde_json::Value = serde_json::from_slice(&reference[&format!("days/{d}/summary.json")]).unwrap();
            prop_assert_eq!(&summary["cash_check"]["passed"], &serde_json::Value::Bool(true));
            let rejected: Vec<String> = String::from_utf8_lossy(&reference[&format!("days/{d}/rejects.csv")])
                .lines().filter(|l| l.starts_with("recharges.csv,")).map(|l| l.split(',').nth(2).unwrap().to_string()).collect();
            for line in files[&format!("days/{d}/recharges.csv")].lines().skip(1) {
                let f: Vec<&str> = line.split(',').collect();
                if !rejected.iter().any(|id| id == f[0]) {
                    *cash.entry(f[1].parse().unwrap()).or_default() += orgsettle::money::Money::parse(f[3]).unwrap().fen();
                }
            }
            for line in String::from_utf8_lossy(&reference[&format!("days/{d}/transfers.csv")]).lines().skip(1) {
                let f: Vec<&str> = line.split(',').collect();
                if f[6] == "accepted" {
                    let amount = orgsettle::money::Money::parse(f[5]).unwrap().fen();
                    let (from, to): (u64, u64) = if f[1] == "in" { (f[3].parse().unwrap(), f[4].parse().unwrap()) } else { (f[4].parse().unwrap(), f[3].parse().unwrap()) };
                    *cash.entry(from).or_default() -= amount;
                    *cash.entry(to).or_default() += amount;
                }
            }
            let ledger = String::from_utf8_lossy(&reference[&format!("days/{d}/ledger.csv")]).to_string();
            for row in ledger.lines().skip(1) {
                let field = |c| field(LEDGER_HEADER, row, c);
                let paid = orgsettle::money::Money::parse(field("cash_amount")).unwrap().fen()
                    + orgsettle::money::Money::parse(field("credit_amount")).unwrap().fen();
                *cash.entry(field("responsible_uin").parse().unwrap()).or_default() -= paid;
                let parts: i64 = ["voucher_amount", "cash_amount", "gift_amount", "credit_amount"].iter()
                    .map(|c| orgsettle::money::Money::parse(field(c)).unwrap().fen()).sum();
                if field("status") == "settled" {
                    prop_assert_eq!(parts, orgsettle::money::Money::parse(field("payable_amount")).unwrap().fen());
                }
            }
        }
        for row in String::from_utf8_lossy(&reference["days/2026-11-01/balances.csv"]).lines().skip(1) {
            let f: Vec<&str> = row.split(',').collect();
            let uin: u64 = f[0].parse().unwrap();
            prop_assert_eq!(orgsettle::money::Money::parse(f[2]).unwrap().fen(), cash.get(&uin).copied().unwrap_or(0), "cash of {}", uin);
        }
    }
}
