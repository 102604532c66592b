//! `orgsettle gen`: a deterministic synthetic input directory for a seed, at any
//! scale, exercising every rule (SPEC §13). It streams: a day's usage rows are
//! written as they are drawn, so memory grows with accounts, not rows.
//!
//! Shape: organization sizes are skewed (a few large, many small); each account
//! owns resources in proportion to a skewed weight; a resource pushes one record per
//! settlement period, ~70% of rows hourly, ~25% daily, ~5% monthly (monthly rows only
//! on a month's last day, when the month has ended); payer periods start and end
//! mid-month; a small share of rows are late, duplicated or malformed.

use crate::time::{Day, Ts};
use std::fmt::Write as _;
use std::fs::{self, File};
use std::io::{BufWriter, Write};
use std::path::Path;

/// What to generate.
#[derive(Clone, Debug)]
pub struct GenOptions {
    pub orgs: u64,
    pub accounts: u64,
    pub days: u64,
    pub usage_per_day: u64,
    pub seed: u64,
    pub start: Day,
}

/// SplitMix64: small, fast, and the same everywhere.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            0
        } else {
            self.next() % n
        }
    }
    fn chance(&mut self, per_million: u64) -> bool {
        self.below(1_000_000) < per_million
    }
}

const PRODUCTS: [(&str, u64); 6] = [("cvm", 12_000), ("cbs", 3_500), ("cos", 800), ("cdn", 450), ("cdb", 9_000), ("clb", 2_000)];
const REGIONS: [&str; 4] = ["ap-guangzhou", "ap-shanghai", "ap-beijing", "ap-hongkong"];

struct Account {
    uin: u64,
    /// Cumulative resource weight, for drawing owners.
    weight: u64,
}

fn ts(t: Ts) -> String {
    t.to_string()
}

/// Write the whole input directory.
pub fn generate(out: &Path, o: &GenOptions) -> std::io::Result<GenSummary> {
    let mut rng = Rng(o.seed ^ 0x5EED);
    fs::create_dir_all(out.join("days"))?;
    let orgs = o.orgs.max(1);
    let accounts_total = o.accounts.max(orgs * 2);
    let created = Day::parse("2026-01-01").expect("date").start();
    let first = o.start.start();
    let month_start = o.start.month().start();

    // Organization sizes: everyone gets 2 (management + admin), the rest by a skewed draw.
    let mut sizes = vec![2u64; orgs as usize];
    for _ in 0..accounts_total - orgs * 2 {
        let a = rng.below(orgs);
        let b = rng.below(orgs);
        sizes[a.min(b) as usize] += 1; // min of two draws: skewed toward small indices
    }

    let mut snapshot = String::with_capacity(accounts_total as usize * 300);
    snapshot.push_str(&format!("{{\"snapshot_at\":\"{}\",\"inheritance_blacklist\":[\"cdn\"],\"orgs\":[", ts(first)));
    let mut contracts = BufWriter::new(File::create(out.join("contracts.csv"))?);
    writeln!(contracts, "contract_id,owner_uin,product,cycle,kind,value,valid_from,valid_to")?;
    let mut balances = BufWriter::new(File::create(out.join("balances.csv"))?);
    writeln!(balances, "uin,cash,gift,credit_limit")?;
    let mut vouchers = BufWriter::new(File::create(out.join("vouchers.csv"))?);
    writeln!(vouchers, "voucher_id,owner_uin,kind,amount,valid_from,valid_to,products,scope,min_charge")?;

    let mut accounts: Vec<Account> = Vec::with_capacity(accounts_total as usize);
    let mut payers: Vec<(u64, u64)> = Vec::new(); // (member, payer) with fund_transfer members
    let mut self_pay_transfer: Vec<(u64, u64)> = Vec::new(); // (member, management)
    let mut cumulative = 0u64;
    let mut uin = 100_000_000_000u64;
    for (oi, &size) in sizes.iter().enumerate() {
        let org = oi as u64;
        let m = uin + 1;
        let admin = uin + 2;
        uin += size + 1;
        if oi > 0 {
            snapshot.push(',');
        }
        let _ = write!(
            snapshot,
            "{{\"org_id\":\"org-{org:06}\",\"created_at\":\"{}\",\"management_uin\":{m},\"entities\":[{{\"entity_id\":\"e1\",\"name\":\"Entity {org}\",\"admin_uin\":{admin}}}],\"departments\":[{{\"dept_id\":\"root\",\"name\":\"Root\"}},{{\"dept_id\":\"d1\",\"parent_id\":\"root\"}}],\"members\":[",
            ts(created)
        );
        let _ = write!(snapshot, "{{\"uin\":{m},\"name\":\"hq-{org}\",\"entity_id\":\"e1\",\"dept_id\":\"root\",\"join_mode\":\"management\",\"joined_at\":\"{}\"}}", ts(created));
        let _ = write!(snapshot, ",{{\"uin\":{admin},\"name\":\"finance-{org}\",\"entity_id\":\"e1\",\"dept_id\":\"root\",\"join_mode\":\"created\",\"joined_at\":\"{}\",\"permissions\":[\"merged_bill\"]}}", ts(created));
        for k in 0..size {
            let account = m + k;
            if k >= 2 {
                let mut perms = vec!["\"merged_bill\""];
                let inherits = rng.chance(400_000);
                if inherits {
                    perms.push("\"discount_inheritance\"");
                }
                let transfer = rng.chance(300_000);
                if transfer {
                    perms.push("\"fund_transfer\"");
                }
                // Payer periods: most from long ago; some start or end inside the days generated.
                let mut period = String::new();
                let roll = rng.below(10);
                if roll < 4 {
                    let payer = if rng.chance(500_000) { admin } else { m };
                    let (from, to) = match roll {
                        0 | 1 => (created.0 + 86_400_000_000_000, None),
                        2 => (created.0 + 86_400_000_000_000, Some(first.0 + (rng.below(o.days.max(1) * 24) as i64) * 3_600_000_000_000 + 1_800_000_000_000)),
                        _ => (first.0 + (rng.below(o.days.max(1) * 24) as i64) * 3_600_000_000_000, None),
                    };
                    period = match to {
                        None => format!("{{\"payer_uin\":{payer},\"from\":\"{}\"}}", ts(Ts(from))),
                        Some(to) => format!("{{\"payer_uin\":{payer},\"from\":\"{}\",\"to\":\"{}\"}}", ts(Ts(from)), ts(Ts(to))),
                    };
                    if transfer {
                        payers.push((account, payer));
                    }
                } else if transfer {
                    self_pay_transfer.push((account, m));
                }
                let _ = write!(
                    snapshot,
                    ",{{\"uin\":{account},\"name\":\"member-{account}\",\"entity_id\":\"e1\",\"dept_id\":\"d1\",\"join_mode\":\"invited\",\"joined_at\":\"{}\",\"permissions\":[{}],\"payer_periods\":[{period}]}}",
                    ts(Ts(created.0 + 3_600_000_000_000)),
                    perms.join(",")
                );
            }
            // Resource weight: heavy-tailed.
            let w = 1 + rng.below(4) * rng.below(4) * rng.below(8);
            cumulative += w;
            accounts.push(Account { uin: account, weight: cumulative });
            let cash = rng.below(200_000);
            writeln!(balances, "{account},{}.{:02},{}.00,{}.00", cash / 100, cash % 100, rng.below(50), rng.below(3) * 500)?;
            if rng.chance(100_000) {
                writeln!(
                    vouchers,
                    "v-{account},{account},voucher,{}.00,{},{},,all,",
                    10 + rng.below(200),
                    ts(month_start),
                    ts(Day(o.start.0 + chrono::Days::new(o.days + 30)).start())
                )?;
            }
        }
        snapshot.push_str("]}");
        // Contracts of the management account and the admin: every kind.
        writeln!(contracts, "c-{m}-cvm-h,{m},cvm,hourly,discount,0.{},{},", 70 + rng.below(25), ts(created))?;
        writeln!(contracts, "c-{m}-cbs-p,{m},cbs,prepaid,fixed_price,{}.00,{},", 50 + rng.below(50), ts(created))?;
        writeln!(contracts, "c-{admin}-cvm-h,{admin},cvm,hourly,discount,0.{},{},", 60 + rng.below(30), ts(created))?;
        writeln!(contracts, "c-{admin}-cos-d,{admin},cos,daily,tiered,0:0.008|1000:0.006|10000:0.004,{},", ts(created))?;
        writeln!(contracts, "c-{admin}-cdb-h,{admin},cdb,hourly,unit_price,0.08,{},", ts(created))?;
        writeln!(contracts, "c-{admin}-cvm-p,{admin},cvm,prepaid,discount,0.85,{},", ts(created))?;
    }
    snapshot.push_str("]}\n");
    fs::write(out.join("org.json"), snapshot)?;
    contracts.flush()?;
    balances.flush()?;
    vouchers.flush()?;

    let mut summary = GenSummary::default();
    for d in 0..o.days {
        let day = Day(o.start.0 + chrono::Days::new(d));
        let dir = out.join("days").join(day.to_string());
        fs::create_dir_all(&dir)?;
        summary.usage_rows += write_usage(&dir, day, d, o, &accounts, &mut rng)?;
        write_orders(&dir, day, d, &accounts, &mut rng, o)?;
        write_money_moves(&dir, day, d, &accounts, &payers, &self_pay_transfer, &mut rng)?;
    }
    summary.accounts = accounts.len() as u64;
    summary.orgs = orgs;
    Ok(summary)
}

#[derive(Debug, Default)]
pub struct GenSummary {
    pub orgs: u64,
    pub accounts: u64,
    pub usage_rows: u64,
}

fn pick_owner<'a>(accounts: &'a [Account], rng: &mut Rng) -> &'a Account {
    let total = accounts.last().map_or(1, |a| a.weight);
    let x = rng.below(total);
    let i = accounts.partition_point(|a| a.weight <= x);
    &accounts[i.min(accounts.len() - 1)]
}

/// Usage rows of one day: resources push one record per period.
fn write_usage(dir: &Path, day: Day, d: u64, o: &GenOptions, accounts: &[Account], rng: &mut Rng) -> std::io::Result<u64> {
    let mut w = BufWriter::with_capacity(1 << 20, File::create(dir.join("usage.csv"))?);
    w.write_all(b"record_id,owner_uin,resource_id,product,region,cycle,usage_start,usage_end,quantity,list_unit_price,list_amount\n")?;
    let month_end = day.next().start() == day.month().end();
    let target = o.usage_per_day;
    let monthly_rows = if month_end { target / 20 } else { 0 };
    let daily_rows = target / 4 + (target / 20 - monthly_rows);
    let hourly_rows = target - daily_rows - monthly_rows;
    let hourly_resources = hourly_rows.div_ceil(24);
    let mut written = 0u64;
    let mut line = String::with_capacity(256);
    let mut row = |w: &mut BufWriter<File>, rng: &mut Rng, cycle: &str, start: Ts, end: Ts, owner: &Account, res: u64, n: u64| -> std::io::Result<()> {
        let (product, price) = PRODUCTS[(res % PRODUCTS.len() as u64) as usize];
        let region = REGIONS[(owner.uin % 4) as usize];
        // quantity in thousandths × price in 1e-5 gives list_amount exactly at 1e-8.
        let q = 1 + rng.below(5_000);
        let p = price + rng.below(50);
        let amount = q * p;
        line.clear();
        let malformed = rng.chance(500);
        let _ = write!(
            line,
            "u{d}-{n},{},res-{}-{res},{product},{region},{cycle},{},{},{}.{:03},{}.{:05},{}.{:08}",
            owner.uin,
            owner.uin,
            if malformed { "2026-13-45T00:00:00".to_string() } else { ts(start) },
            ts(end),
            q / 1000,
            q % 1000,
            p / 100_000,
            p % 100_000,
            amount / 100_000_000,
            amount % 100_000_000
        );
        line.push('\n');
        w.write_all(line.as_bytes())?;
        if rng.chance(1_000) {
            w.write_all(line.as_bytes())?; // an upstream retry: an exact duplicate
        }
        Ok(())
    };
    let hour = 3_600_000_000_000i64;
    for r in 0..hourly_resources {
        let owner = pick_owner(accounts, rng);
        let res = rng.below(8);
        for h in 0..24 {
            if written >= hourly_rows {
                break;
            }
            let late = d > 0 && rng.chance(5_000);
            let base = if late { day.start().0 - 24 * hour } else { day.start().0 };
            let start = Ts(base + h * hour);
            row(&mut w, rng, "hourly", start, Ts(start.0 + hour), owner, res, r * 24 + h as u64)?;
            written += 1;
        }
    }
    for r in 0..daily_rows {
        let owner = pick_owner(accounts, rng);
        let res = 10 + rng.below(8);
        row(&mut w, rng, "daily", day.start(), day.end(), owner, res, 10_000_000_000 + r)?;
        written += 1;
    }
    for r in 0..monthly_rows {
        let owner = pick_owner(accounts, rng);
        let res = 20 + rng.below(8);
        row(&mut w, rng, "monthly", day.month().start(), day.month().end(), owner, res, 20_000_000_000 + r)?;
        written += 1;
    }
    w.flush()?;
    Ok(written)
}

fn write_orders(dir: &Path, day: Day, d: u64, accounts: &[Account], rng: &mut Rng, o: &GenOptions) -> std::io::Result<()> {
    let mut w = BufWriter::new(File::create(dir.join("orders.csv"))?);
    writeln!(w, "order_id,owner_uin,resource_id,product,action,created_at,list_amount,refund_amount")?;
    let n = (o.usage_per_day / 1000).max(4);
    for i in 0..n {
        let owner = pick_owner(accounts, rng);
        let at = Ts(day.start().0 + rng.below(20 * 3600) as i64 * 1_000_000_000);
        let product = if rng.chance(500_000) { "cvm" } else { "cbs" };
        let resource = format!("pre-{}-{}", owner.uin, rng.below(3));
        writeln!(w, "o{d}-{i},{},{resource},{product},new,{},{}.{:02},", owner.uin, ts(at), 20 + rng.below(500), rng.below(100))?;
        if rng.chance(150_000) {
            let later = Ts(at.0 + 3_600_000_000_000);
            writeln!(w, "o{d}-{i}-r,{},{resource},{product},refund,{},,{}.00", owner.uin, ts(later), 1 + rng.below(20))?;
        }
    }
    w.flush()
}

#[allow(clippy::too_many_arguments)]
fn write_money_moves(
    dir: &Path,
    day: Day,
    d: u64,
    accounts: &[Account],
    payers: &[(u64, u64)],
    self_pay: &[(u64, u64)],
    rng: &mut Rng,
) -> std::io::Result<()> {
    let mut r = BufWriter::new(File::create(dir.join("recharges.csv"))?);
    writeln!(r, "recharge_id,uin,at,amount")?;
    for i in 0..(accounts.len() as u64 / 50).max(2) {
        let a = &accounts[rng.below(accounts.len() as u64) as usize];
        let at = Ts(day.start().0 + rng.below(86_000) as i64 * 1_000_000_000);
        writeln!(r, "rc{d}-{i},{},{},{}.00", a.uin, ts(at), 10 + rng.below(500))?;
    }
    r.flush()?;
    let mut t = BufWriter::new(File::create(dir.join("transfers.csv"))?);
    writeln!(t, "transfer_id,kind,member_uin,at,amount,source_transfer_id")?;
    for (i, (member, _)) in self_pay.iter().chain(payers.iter()).enumerate() {
        if !rng.chance(200_000) {
            continue;
        }
        let at = Ts(day.start().0 + (3600 + rng.below(40_000)) as i64 * 1_000_000_000);
        writeln!(t, "t{d}-{i},in,{member},{},{}.00,", ts(at), 5 + rng.below(100))?;
        if rng.chance(300_000) {
            let later = Ts(at.0 + 3_600_000_000_000);
            writeln!(t, "t{d}-{i}-o,out,{member},{},{}.00,t{d}-{i}", ts(later), 1 + rng.below(10))?;
        }
    }
    t.flush()
}
