//! One scenario per rule, with exact amounts (SPEC §4–§10, §14).

use crate::common::*;
use orgsettle::job::Failure;

const PAYER_MEMBER: &str = r#",{"uin":3,"entity_id":"e1","dept_id":"root","join_mode":"created","joined_at":"2026-01-01T00:00:00+08:00",
    "permissions":["discount_inheritance","fund_transfer"],
    "payer_periods":[{"payer_uin":2,"from":"2026-10-01T00:00:00+08:00","to":"2026-10-01T10:30:00+08:00"}]}"#;

fn payer_scenario() -> Scenario {
    let s = Scenario::new();
    s.file("org.json", &org_json(PAYER_MEMBER));
    s.file("balances.csv", "uin,cash,gift,credit_limit\n1,100.00,0,0\n2,10.00,0,0\n3,50.00,0,0\n");
    s
}

/// `payer_scenario` with member 3 allowed fund transfers, and the members `more`
/// (JSON objects, each after a comma).
fn fund_transfer_scenario(more: &str) -> Scenario {
    let s = payer_scenario();
    let member3 = r#",{"uin":3,"entity_id":"e1","dept_id":"root","join_mode":"created","joined_at":"2026-01-01T00:00:00+08:00",
            "permissions":["fund_transfer"]}"#;
    s.file("org.json", &org_json(&format!("{member3}{more}")));
    s
}

/// `contracts.csv` with its header and `rows`.
fn contracts(rows: &[&str]) -> String {
    let mut text = String::from("contract_id,owner_uin,product,cycle,kind,value,valid_from,valid_to\n");
    for row in rows {
        text.push_str(row);
        text.push('\n');
    }
    text
}

#[test]
fn the_member_pays_its_last_period_and_the_payer_the_ones_before() {
    let s = payer_scenario();
    s.file(
        "days/2026-10-01/usage.csv",
        &format!(
            "{USAGE_HEADER}\
u1,3,i,cvm,r,hourly,2026-10-01T09:00:00+08:00,2026-10-01T10:00:00+08:00,1,4,4
u2,3,i,cvm,r,hourly,2026-10-01T10:00:00+08:00,2026-10-01T11:00:00+08:00,1,4,4
"
        ),
    );
    s.run().unwrap();
    assert_eq!(
        ledger_cols(&s, "2026-10-01", &["period_start", "responsible_uin", "cash_amount"]),
        ["2026-10-01T09:00:00+08:00/2/4.00", "2026-10-01T10:00:00+08:00/3/4.00"]
    );
}

#[test]
fn refund_splits_by_payer_basis_with_the_spec_example() {
    let s = payer_scenario();
    s.file(
        "days/2026-10-01/orders.csv",
        &format!(
            "{ORDERS_HEADER}\
o1,3,res,cbs,new,2026-10-01T09:00:00+08:00,8,
o2,3,res,cbs,renew,2026-10-01T11:00:00+08:00,2,
o3,3,res,cbs,refund,2026-10-01T12:00:00+08:00,,3.00
"
        ),
    );
    s.run().unwrap();
    // o1 paid by payer 2 (8.00), o2 by member 3 (2.00): 3.00 back → 0.60 to 3, 2.40 to 2.
    assert_eq!(
        ledger_cols(&s, "2026-10-01", &["line_id", "responsible_uin", "payable_amount", "cash_amount"]),
        ["O|o1/2/8.00/8.00", "O|o2/3/2.00/2.00", "R|o3|2/2/-2.40/-2.40", "R|o3|3/3/-0.60/-0.60"]
    );
    assert!(s.read("days/2026-10-01/balances.csv").contains("\n2,o1,4.40,"));
}

#[test]
fn spec_section_8_example_exact() {
    let shares = orgsettle::refunds::allocate_largest_remainder(
        orgsettle::money::Money::parse("30.00").unwrap(),
        &[(200, orgsettle::money::Money::parse("80.00").unwrap()), (100, orgsettle::money::Money::parse("20.00").unwrap())],
    );
    let text: Vec<String> = shares.iter().map(|(u, m)| format!("{u}:{m}")).collect();
    assert_eq!(text, ["100:6.00", "200:24.00"]);
}

#[test]
fn a_prepaid_order_that_would_go_into_arrears_fails_and_moves_nothing() {
    let s = Scenario::new();
    s.file("org.json", &org_json(""));
    s.file("balances.csv", "uin,cash,gift,credit_limit\n2,10.00,1.00,5.00\n");
    s.file(
        "vouchers.csv",
        "voucher_id,owner_uin,kind,amount,valid_from,valid_to,products,scope,min_charge\n\
v1,2,voucher,2.00,2026-01-01T00:00:00+08:00,2027-01-01T00:00:00+08:00,,prepaid,\n",
    );
    s.file(
        "days/2026-10-01/orders.csv",
        &format!(
            "{ORDERS_HEADER}\
o1,2,res,cbs,new,2026-10-01T09:00:00+08:00,18.01,
o2,2,res,cbs,new,2026-10-01T10:00:00+08:00,18.00,
"
        ),
    );
    s.run().unwrap();
    // o1: 2.00 voucher + 10.00 cash + 1.00 gift leaves 5.01 credit > limit 5.00: fails.
    // o2: 2.00 + 10.00 + 1.00 + 5.00 credit, exactly at the limit: settles.
    assert_eq!(
        ledger_cols(&s, "2026-10-01", &["line_id", "payable_amount", "voucher_amount", "cash_amount", "gift_amount", "credit_amount", "status"]),
        ["O|o1/18.01/0.00/0.00/0.00/0.00/payment_failed", "O|o2/18.00/2.00/10.00/1.00/5.00/settled"]
    );
    assert_eq!(s.rows("days/2026-10-01/voucher_usage.csv"), ["O|o2,v1,2,2.00"]);
}

#[test]
fn inheritance_takes_the_payers_contract_and_list_when_cycles_differ() {
    let s = payer_scenario();
    s.file(
        "contracts.csv",
        &contracts(&[
            "c2,2,cvm,hourly,discount,0.5,2026-01-01T00:00:00+08:00,",
            "c1,1,cvm,hourly,discount,0.9,2026-01-01T00:00:00+08:00,",
            "c3,3,cvm,daily,discount,0.1,2026-01-01T00:00:00+08:00,",
            "c3b,3,cdn,hourly,unit_price,0.01,2026-01-01T00:00:00+08:00,",
        ]),
    );
    s.file(
        "days/2026-10-01/usage.csv",
        &format!(
            "{USAGE_HEADER}\
u1,3,i,cvm,r,hourly,2026-10-01T09:00:00+08:00,2026-10-01T10:00:00+08:00,1,3.33,3.33
u2,3,i,cvm,r,hourly,2026-10-01T11:00:00+08:00,2026-10-01T12:00:00+08:00,1,3.33,3.33
u3,3,i,cvm,r,daily,2026-10-01T00:00:00+08:00,2026-10-01T01:00:00+08:00,1,10,10
u4,3,i,cdn,r,hourly,2026-10-01T09:00:00+08:00,2026-10-01T10:00:00+08:00,100,0.2,20
"
        ),
    );
    s.run().unwrap();
    assert_eq!(
        ledger_cols(&s, "2026-10-01", &["line_id", "list_amount", "payable_amount", "pricing_uin", "contract_id"]),
        [
            // In the payer period: the payer's contract, 3.33 × 0.5 = 1.665 → 1.67.
            "P|3|cdn|hourly|2026-10-01T09:00:00+08:00/20.00/1.00/3/c3b",
            "P|3|cvm|hourly|2026-10-01T09:00:00+08:00/3.33/1.67/2/c2",
            // After it: the management account's, 3.33 × 0.9 = 2.997 → 3.00.
            "P|3|cvm|hourly|2026-10-01T11:00:00+08:00/3.33/3.00/1/c1",
            // Daily: the source has no daily contract, and its own no longer applies.
            "P|3|cvm|daily|2026-10-01T00:00:00+08:00/10.00/0.00/10.00//",
        ]
        .map(|r| r.replace("/10.00/0.00/10.00//", "/10.00/10.00//"))
    );
}

#[test]
fn a_payer_in_arrears_shuts_down_every_member_it_pays_for() {
    let s = Scenario::new();
    s.file(
        "org.json",
        &org_json(
            r#",{"uin":3,"entity_id":"e1","dept_id":"root","join_mode":"created","joined_at":"2026-01-01T00:00:00+08:00",
            "payer_periods":[{"payer_uin":2,"from":"2026-01-01T00:00:00+08:00"}]},
            {"uin":4,"entity_id":"e1","dept_id":"root","join_mode":"created","joined_at":"2026-01-01T00:00:00+08:00",
            "payer_periods":[{"payer_uin":2,"from":"2026-01-01T00:00:00+08:00"}]}"#,
        ),
    );
    s.file("balances.csv", "uin,cash,gift,credit_limit\n2,1.00,0,0\n");
    s.file("days/2026-10-01/usage.csv", &format!("{USAGE_HEADER}u1,4,i,cvm,r,hourly,2026-10-01T09:00:00+08:00,2026-10-01T10:00:00+08:00,1,3,3\n"));
    s.file("days/2026-10-01/recharges.csv", "recharge_id,uin,at,amount\nr1,2,2026-10-01T12:00:00+08:00,2\n");
    s.run().unwrap();
    assert_eq!(
        s.rows("days/2026-10-01/events.csv"),
        [
            "2026-10-01T10:00:00+08:00,o1,2,shutdown,2,charge",
            "2026-10-01T10:00:00+08:00,o1,3,shutdown,2,charge",
            "2026-10-01T10:00:00+08:00,o1,4,shutdown,2,charge",
            "2026-10-01T12:00:00+08:00,o1,2,reversal,2,recharge",
            "2026-10-01T12:00:00+08:00,o1,3,reversal,2,recharge",
            "2026-10-01T12:00:00+08:00,o1,4,reversal,2,recharge",
        ]
    );
}

/// Order, recharge and transfer ids are set aside while a day reads its usage
/// and settles, and read back from the state it started from: an id accepted on
/// day 1 is still known on day 3 (through day 2's state), and one first accepted
/// on day 2 is written into day 2's state beside them.
#[test]
fn record_ids_of_earlier_days_are_remembered_through_every_state() {
    let s = fund_transfer_scenario("");
    let order = |id: &str, at: &str, amount: &str| format!("{id},3,res-{id},cbs,new,2026-10-{at}T09:00:00+08:00,{amount},\n");
    let recharge = |id: &str, at: &str, amount: &str| format!("{id},2,2026-10-{at}T12:00:00+08:00,{amount}\n");
    let transfer = |id: &str, at: &str, amount: &str| format!("{id},in,3,2026-10-{at}T01:00:00+08:00,{amount},\n");
    let day = |d: &str, orders: &[String], recharges: &[String], transfers: &[String]| {
        s.file(&format!("days/2026-10-{d}/orders.csv"), &format!("{ORDERS_HEADER}{}", orders.concat()));
        s.file(&format!("days/2026-10-{d}/recharges.csv"), &format!("recharge_id,uin,at,amount\n{}", recharges.concat()));
        s.file(&format!("days/2026-10-{d}/transfers.csv"), &format!("transfer_id,kind,member_uin,at,amount,source_transfer_id\n{}", transfers.concat()));
    };
    day("01", &[order("o1", "01", "8")], &[recharge("r1", "01", "2")], &[transfer("t1", "01", "5")]);
    // Day 2: day 1's rows again (duplicates), r1 changed (a conflict), and new ids.
    day(
        "02",
        &[order("o1", "01", "8"), order("o2", "02", "3")],
        &[recharge("r1", "01", "2.50"), recharge("r2", "02", "1")],
        &[transfer("t1", "01", "5"), transfer("t2", "02", "4")],
    );
    // Day 3: day 2's new ids again (duplicates), day 1's changed (conflicts).
    day(
        "03",
        &[order("o2", "02", "3"), order("o1", "01", "9")],
        &[recharge("r2", "02", "1"), recharge("r1", "01", "3")],
        &[transfer("t2", "02", "4"), transfer("t1", "01", "6")],
    );
    s.run().unwrap();
    let counts = |d: &str, file: &str| {
        let summary: serde_json::Value = serde_json::from_str(&s.read(&format!("days/2026-10-{d}/summary.json"))).unwrap();
        let f = &summary["files"][file];
        [&f["accepted"], &f["duplicates"], &f["rejected"]].map(|v| v.as_u64().unwrap())
    };
    for file in ["orders.csv", "recharges.csv", "transfers.csv"] {
        assert_eq!(counts("01", file), [1, 0, 0], "{file}");
        assert_eq!(counts("03", file), [0, 1, 1], "{file}");
    }
    assert_eq!(counts("02", "orders.csv"), [1, 1, 0]);
    assert_eq!(counts("02", "recharges.csv"), [1, 0, 1]);
    assert_eq!(counts("02", "transfers.csv"), [1, 1, 0]);
    assert_eq!(reject_heads(&s, "2026-10-02"), ["recharges.csv,2,r1,conflicting_duplicate"]);
    assert_eq!(
        reject_heads(&s, "2026-10-03"),
        ["orders.csv,3,o1,conflicting_duplicate", "recharges.csv,3,r1,conflicting_duplicate", "transfers.csv,3,t1,conflicting_duplicate"]
    );
    // Day 3's state holds every id once, in id order.
    let state = s.read("state/2026-10-03.json");
    for (kind, ids) in [("orders", ["o1", "o2"]), ("recharges", ["r1", "r2"]), ("transfers", ["t1", "t2"])] {
        let map = &state[state.find(&format!("\"{kind}\":{{")).unwrap()..];
        let map = &map[..map.find('}').unwrap()];
        let held: Vec<&str> = map.split('"').skip(3).step_by(4).collect();
        assert_eq!(held, ids, "{kind}: {map}");
    }
}

#[test]
fn transfers_are_judged_in_the_listed_order() {
    let s = fund_transfer_scenario(
        r#",{"uin":4,"entity_id":"e1","dept_id":"root","join_mode":"created","joined_at":"2026-01-01T00:00:00+08:00"}"#,
    );
    s.file(
        "days/2026-10-01/transfers.csv",
        "transfer_id,kind,member_uin,at,amount,source_transfer_id\n\
t1,in,3,2026-10-01T01:00:00+08:00,60,\n\
t2,in,1,2026-10-01T02:00:00+08:00,1,\n\
t3,in,4,2026-10-01T03:00:00+08:00,1,\n\
t4,in,3,2026-10-01T04:00:00+08:00,0.001,\n\
t5,in,3,2026-10-01T05:00:00+08:00,41,\n\
t6,out,3,2026-10-01T06:00:00+08:00,10,t9\n\
t7,out,3,2026-10-01T07:00:00+08:00,60.01,t1\n\
t8,out,3,2026-10-01T08:00:00+08:00,59,t1\n\
t9,out,3,2026-10-01T09:00:00+08:00,2,t1\n\
t10,in,77,2026-10-01T10:00:00+08:00,1,\n",
    );
    s.run().unwrap();
    let reasons: Vec<String> = s
        .rows("days/2026-10-01/transfers.csv")
        .iter()
        .map(|r| {
            let f: Vec<&str> = r.split(',').collect();
            format!("{}:{}:{}", f[0], f[5], if f[7].is_empty() { f[6] } else { f[7] })
        })
        .collect();
    assert_eq!(
        reasons,
        [
            "t1:60.00:accepted",
            "t2:1.00:unknown_member",
            "t3:1.00:no_permission",
            "t4:0.001:bad_amount",
            "t5:41.00:insufficient_cash",
            "t6:10.00:unknown_source",
            "t7:60.01:exceeds_source",
            "t8:59.00:accepted",
            "t9:2.00:exceeds_source",
            "t10:1.00:unknown_member",
        ]
    );
    assert!(s.read("days/2026-10-01/balances.csv").contains("\n1,o1,99.00,"));
}

#[test]
fn transfer_sources_a_day_does_not_name_are_kept_for_the_days_after() {
    // A day holds only the sources its `out`s name, the others set aside in
    // the state file it starts from (`TransferSources`): those it did not name
    // must come back whole, and those it drew from must keep what it drew.
    let s = fund_transfer_scenario("");
    let header = "transfer_id,kind,member_uin,at,amount,source_transfer_id\n";
    s.file(
        "days/2026-10-01/transfers.csv",
        &format!(
            "{header}t1,in,3,2026-10-01T01:00:00+08:00,10,\n\
t2,in,3,2026-10-01T02:00:00+08:00,20,\n\
t3,in,3,2026-10-01T03:00:00+08:00,30,\n"
        ),
    );
    s.file("days/2026-10-02/transfers.csv", &format!("{header}t4,out,3,2026-10-02T01:00:00+08:00,5,t1\n"));
    s.file(
        "days/2026-10-03/transfers.csv",
        &format!(
            "{header}t5,out,3,2026-10-03T01:00:00+08:00,20,t2\n\
t6,out,3,2026-10-03T02:00:00+08:00,6,t1\n\
t7,out,3,2026-10-03T03:00:00+08:00,5,t1\n\
t8,out,3,2026-10-03T04:00:00+08:00,30.01,t3\n\
t9,out,3,2026-10-03T05:00:00+08:00,1,t4\n"
        ),
    );
    for d in ["2026-10-01", "2026-10-02", "2026-10-03"] {
        s.daily(d).unwrap();
    }
    let outcomes = |d: &str| -> Vec<String> {
        s.rows(&format!("days/{d}/transfers.csv"))
            .iter()
            .map(|r| {
                let f: Vec<&str> = r.split(',').collect();
                format!("{}:{}:{}", f[0], f[5], if f[7].is_empty() { f[6] } else { f[7] })
            })
            .collect()
    };
    assert_eq!(outcomes("2026-10-02"), ["t4:5.00:accepted"]);
    assert_eq!(
        outcomes("2026-10-03"),
        ["t5:20.00:accepted", "t6:6.00:exceeds_source", "t7:5.00:accepted", "t8:30.01:exceeds_source", "t9:1.00:unknown_source"]
    );
    // Every source in each day's state, with what was drawn from it so far.
    let sources = |d: &str| -> String {
        let state = s.read(&format!("state/{d}.json"));
        let map = &state[state.find("\"transfer_sources\":").unwrap()..];
        map[..map.find("}}").unwrap() + 2].to_string()
    };
    let source = |id: &str, amount: &str, drawn: &str| {
        format!(r#""{id}":{{"org_id":"o1","member_uin":3,"amount":"{amount}","drawn":"{drawn}"}}"#)
    };
    let all = |drawn: [&str; 3]| {
        format!(
            "\"transfer_sources\":{{{},{},{}}}",
            source("t1", "10.00", drawn[0]),
            source("t2", "20.00", drawn[1]),
            source("t3", "30.00", drawn[2])
        )
    };
    assert_eq!(sources("2026-10-01"), all(["0.00", "0.00", "0.00"]));
    assert_eq!(sources("2026-10-02"), all(["5.00", "0.00", "0.00"]));
    assert_eq!(sources("2026-10-03"), all(["10.00", "20.00", "0.00"]));
    // The management account: 100 - 60 + 5 + 25.
    assert!(s.read("days/2026-10-03/balances.csv").contains("\n1,o1,70.00,"), "{}", s.read("days/2026-10-03/balances.csv"));
}

#[test]
fn rejects_report_the_first_reason_in_spec_order_with_file_and_line() {
    let s = payer_scenario();
    s.file(
        "days/2026-10-02/usage.csv",
        &format!(
            "{USAGE_HEADER}\
a,3,i,CVM,r,hourly,2026-10-01T09:00:00+08:00,2026-10-01T10:00:00+08:00,1.000000001,1,1

b,3,i,cvm,r,weekly,2026-10-01T09:00:00+08:00,2026-10-01T10:00:00+08:00,1,1,1
c,3,i,cvm,r,hourly,2026-10-01T09:00:00+08:00,2026-10-01T10:00:00+08:00,1,1,2
d,3,i,cvm,r,hourly,2026-10-03T00:00:00+08:00,2026-10-03T01:00:00+08:00,1,1,1
e,3,i,cvm,r,hourly,2026-10-01T09:00:00+08:00,2026-10-01T10:30:00+08:00,1,1,1
f,3,i,cvm,r,hourly,2026-09-30T09:00:00+08:00,2026-09-30T10:00:00+08:00,1,1,1
g,9,i,cvm,r,hourly,2026-10-01T09:00:00+08:00,2026-10-01T10:00:00+08:00,1,1,1
h,3,i,cvm,r,hourly,2026-10-01T09:00:00,2026-10-01T10:00:00+08:00,-1,1,1
"
        ),
    );
    s.file("days/2026-10-01/usage.csv", USAGE_HEADER);
    s.run().unwrap();
    assert_eq!(
        reject_heads(&s, "2026-10-02"),
        [
            "usage.csv,2,a,bad_amount_scale",
            "usage.csv,4,b,bad_value",
            "usage.csv,5,c,list_amount_mismatch",
            "usage.csv,6,d,period_not_ended",
            "usage.csv,7,e,spans_periods",
            "usage.csv,8,f,month_closed",
            "usage.csv,9,g,unknown_account",
            "usage.csv,10,h,bad_timestamp",
        ]
    );
}

#[test]
fn consecutive_rows_are_checked_alone_whatever_the_row_before() {
    // Rows checked one after another keep the last product and account found
    // (`RowCache`): a bad product or an unknown owner right after good ones, and
    // good ones right after them, are each judged on their own. Enough rows that
    // each checking task meets many in a row.
    let s = payer_scenario();
    let row = |id: String, owner: u64, product: &str| {
        format!("{id},{owner},i,{product},r,hourly,2026-10-01T09:00:00+08:00,2026-10-01T10:00:00+08:00,1,1,1\n")
    };
    let mut usage = String::from(USAGE_HEADER);
    for k in 0..1000 {
        for (letter, owner, product) in [("a", 3, "cvm"), ("b", 3, "CVM"), ("c", 3, "cvm"), ("d", 9, "cvm"), ("e", 3, "cvm"), ("f", 3, "cvm!")] {
            usage.push_str(&row(format!("{letter}{k}"), owner, product));
        }
    }
    s.file("days/2026-10-01/usage.csv", USAGE_HEADER);
    s.file("days/2026-10-02/usage.csv", &usage);
    s.run().unwrap();
    let rejects = reject_heads(&s, "2026-10-02");
    assert_eq!(rejects.len(), 3000);
    assert_eq!(rejects[..3], ["usage.csv,3,b0,bad_value", "usage.csv,5,d0,unknown_account", "usage.csv,7,f0,bad_value"]);
    assert_eq!(rejects[2997..], ["usage.csv,5997,b999,bad_value", "usage.csv,5999,d999,unknown_account", "usage.csv,6001,f999,bad_value"]);
    let summary: serde_json::Value = serde_json::from_str(&s.read("days/2026-10-02/summary.json")).unwrap();
    assert_eq!(summary["files"]["usage.csv"]["accepted"].as_u64(), Some(3000));
}

#[test]
fn duplicates_are_counted_and_conflicts_rejected_across_days() {
    let s = payer_scenario();
    let row = "u1,3,i,cvm,r,hourly,2026-10-01T09:00:00+08:00,2026-10-01T10:00:00+08:00,1,4,4\n";
    s.file("days/2026-10-01/usage.csv", &format!("{USAGE_HEADER}{row}{row}"));
    s.file("days/2026-10-02/usage.csv", &format!("{USAGE_HEADER}{row}{}", row.replace(",1,4,4", ",2,4,8")));
    s.run().unwrap();
    assert_eq!(s.rows("days/2026-10-01/ledger.csv").len(), 1);
    assert!(s.rows("days/2026-10-02/ledger.csv").is_empty());
    let summary: serde_json::Value = serde_json::from_str(&s.read("days/2026-10-02/summary.json")).unwrap();
    assert_eq!(summary["files"]["usage.csv"]["duplicates"], 1);
    assert_eq!(summary["files"]["usage.csv"]["rejected"], 1);
    assert_eq!(s.rows("days/2026-10-02/rejects.csv")[0].split(',').nth(3), Some("conflicting_duplicate"));
}

#[test]
fn an_id_repeated_thousands_of_rows_later_in_one_batch_is_decided_in_file_order() {
    // Reading gathers a batch's ids per id shard a stretch of 4,096 rows at a
    // time; an id's rows in different stretches must still be met in file order.
    let s = payer_scenario();
    let row = |id: u32, amount: u32| {
        format!("u{id},3,i,cvm,r,hourly,2026-10-01T09:00:00+08:00,2026-10-01T10:00:00+08:00,1,{amount},{amount}\n")
    };
    let mut rows: String = (1..=9_000).map(|id| row(id, 1)).collect();
    // Thousands of rows on: u5 again (a duplicate) and u10 changed (a conflict).
    rows.push_str(&row(5, 1));
    rows.push_str(&row(10, 2));
    s.file("days/2026-10-01/usage.csv", &format!("{USAGE_HEADER}{rows}"));
    s.run().unwrap();
    let summary: serde_json::Value = serde_json::from_str(&s.read("days/2026-10-01/summary.json")).unwrap();
    let usage = &summary["files"]["usage.csv"];
    assert_eq!((usage["accepted"].as_u64(), usage["duplicates"].as_u64(), usage["rejected"].as_u64()), (Some(9_000), Some(1), Some(1)));
    // The file's first u10 is the day's; the later one, on line 9,003, is refused.
    assert_eq!(reject_heads(&s, "2026-10-01"), ["usage.csv,9003,u10,conflicting_duplicate"]);
    let cols = ["usage_records", "list_amount", "payable_amount", "responsible_uin"];
    assert_eq!(ledger_cols(&s, "2026-10-01", &cols), ["9000/9000.00/9000.00/2"]);
}

#[test]
fn repeats_and_bad_rows_in_batches_read_at_once_are_decided_in_file_order() {
    // Reading has three batches of 16,384 rows in flight: one read, the next
    // checked, the one before decided and spilled. Batches begin at lines 2,
    // 16,386, 32,770 and 49,154. Ids first met in one batch and repeated in the
    // next (checked while the first is decided) or two on, a bad row, and a
    // repeat within a batch must come out as reading the file in order
    // decides them.
    let s = payer_scenario();
    let row = |id: u32, amount: u32| {
        format!("u{id},3,i,cvm,r,hourly,2026-10-01T09:00:00+08:00,2026-10-01T10:00:00+08:00,1,{amount},{amount}\n")
    };
    let mut rows: Vec<String> = (1..=50_000).map(|id| row(id, 1)).collect();
    // (file line, row): the row at index i is on line i + 2.
    let specials = [
        (16_386, row(7, 1)),                                   // a duplicate of line 8, a batch on
        (16_387, row(8, 2)),                                   // a conflict with line 9
        (32_770, row(50_001, 1).replace(",1,1,1", ",-1,1,1")), // bad_value: a negative quantity
        (49_154, row(20_000, 1)),                              // a duplicate two batches on
        (49_155, row(40_000, 3)),                              // a conflict with the batch before
        (49_156, row(50_002, 1)),
        (49_157, row(50_002, 1)), // a duplicate within the batch
    ];
    for (line, text) in &specials {
        rows.insert(line - 2, text.clone());
    }
    s.file("days/2026-10-01/usage.csv", &format!("{USAGE_HEADER}{}", rows.concat()));
    s.run().unwrap();
    let summary: serde_json::Value = serde_json::from_str(&s.read("days/2026-10-01/summary.json")).unwrap();
    let usage = &summary["files"]["usage.csv"];
    assert_eq!(
        (usage["rows"].as_u64(), usage["accepted"].as_u64(), usage["duplicates"].as_u64(), usage["rejected"].as_u64()),
        (Some(50_007), Some(50_001), Some(3), Some(3))
    );
    assert_eq!(
        reject_heads(&s, "2026-10-01"),
        ["usage.csv,16387,u8,conflicting_duplicate", "usage.csv,32770,u50001,bad_value", "usage.csv,49155,u40000,conflicting_duplicate"]
    );
    // The 50,001 accepted rows of 1.00: one line of one period.
    let cols = ["usage_records", "list_amount", "payable_amount", "responsible_uin"];
    assert_eq!(ledger_cols(&s, "2026-10-01", &cols), ["50001/50001.00/50001.00/2"]);
}

#[test]
fn a_day_loads_only_the_remembered_ids_it_looks_up_and_still_finds_its_duplicates() {
    use orgsettle::store::{NextDay, Store};
    let s = payer_scenario();
    let row = |id: u32, amount: u32| {
        format!("u{id},3,i,cvm,r,hourly,2026-10-01T09:00:00+08:00,2026-10-01T10:00:00+08:00,1,{amount},{amount}\n")
    };
    let first: String = (1..=20).map(|id| row(id, 1)).collect();
    s.file("days/2026-10-01/usage.csv", &format!("{USAGE_HEADER}{first}"));
    // u3 again (a duplicate), u7 changed (a conflict), u9 refused before its id is
    // looked up (a negative quantity), u100 new.
    let bad_u9 = row(9, 1).replace(",1,1,1", ",-1,1,1");
    // With CRLF line ends: split into lines all the same, each less its CR.
    let second = format!("{USAGE_HEADER}{}{}{bad_u9}{}", row(3, 1), row(7, 2), row(100, 1)).replace('\n', "\r\n");
    s.file("days/2026-10-02/usage.csv", &second);
    // Day 3's file quotes an id: it is read by the CSV reader, not split into lines.
    s.file("days/2026-10-03/usage.csv", &format!("{USAGE_HEADER}{}{}", row(12, 1).replacen("u12", "\"u12\"", 1), row(100, 1)));
    s.run().unwrap();
    let summary = |d: &str| -> serde_json::Value { serde_json::from_str(&s.read(&format!("days/{d}/summary.json"))).unwrap() };
    let usage = |d: &str| summary(d)["files"]["usage.csv"].clone();
    assert_eq!((usage("2026-10-01")["accepted"].as_u64(), usage("2026-10-01")["duplicates"].as_u64()), (Some(20), Some(0)));
    assert_eq!(
        (usage("2026-10-02")["accepted"].as_u64(), usage("2026-10-02")["duplicates"].as_u64(), usage("2026-10-02")["rejected"].as_u64()),
        (Some(1), Some(1), Some(2))
    );
    assert_eq!(reject_heads(&s, "2026-10-02"), ["usage.csv,3,u7,conflicting_duplicate", "usage.csv,4,u9,bad_value"]);
    // Day 1's twenty rows of 1.00 sum to one line of one period; day 2 settles
    // u100 alone; day 3 settles nothing (the payer, 2, pays each).
    let cols = ["usage_records", "list_amount", "payable_amount", "responsible_uin"];
    assert_eq!(ledger_cols(&s, "2026-10-01", &cols), ["20/20.00/20.00/2"]);
    assert_eq!(ledger_cols(&s, "2026-10-02", &cols), ["1/1.00/1.00/2"]);
    assert!(s.rows("days/2026-10-03/ledger.csv").is_empty());
    // Day 3 meets u12 of day 1 and u100 of day 2, each read from its day's file.
    assert_eq!((usage("2026-10-03")["accepted"].as_u64(), usage("2026-10-03")["duplicates"].as_u64()), (Some(0), Some(2)));

    // What day 2 loaded of day 1's 20 ids: the three its file holds.
    let store = Store::new(&s.out());
    let dir = s.input().join("days/2026-10-02");
    let wanted = || orgsettle::ingest::usage_ids_of(&dir);
    let as_day2 = store.load_for(day("2026-10-01"), Some(NextDay { day: day("2026-10-02"), wanted: &wanted })).unwrap();
    assert_eq!(as_day2.seen.usage.len(), 3);
    let keep_all = || None;
    let all = store.load_for(day("2026-10-01"), Some(NextDay { day: day("2026-10-02"), wanted: &keep_all })).unwrap();
    assert_eq!(all.seen.usage.len(), 20);
    // The states still count every id of each file, whatever a day kept of them.
    let after_day2 = store.load(day("2026-10-02")).unwrap();
    let files: Vec<(String, u64)> = after_day2.seen.usage_files.iter().map(|(d, n)| (d.to_string(), *n)).collect();
    assert_eq!(files, [("2026-10-01".to_string(), 20), ("2026-10-02".to_string(), 1)]);
    let dir3 = s.input().join("days/2026-10-03");
    let wanted3 = || orgsettle::ingest::usage_ids_of(&dir3);
    let as_day3 = store.load_for(day("2026-10-02"), Some(NextDay { day: day("2026-10-03"), wanted: &wanted3 })).unwrap();
    assert_eq!(as_day3.seen.usage.len(), 2, "u12 and u100");
    // A day with no usage file loads none of them.
    let nothing = s.input().join("days/2026-10-09");
    let wanted_none = || orgsettle::ingest::usage_ids_of(&nothing);
    let as_empty = store.load_for(day("2026-10-02"), Some(NextDay { day: day("2026-10-03"), wanted: &wanted_none })).unwrap();
    assert_eq!(as_empty.seen.usage.len(), 0);

    // Each file is per id shard a key column (the top 8 bytes of each id's
    // digest) and the rest of each entry (20 bytes: the digest's low 8, its
    // content's digest and its day), then the 64 shards' counts; one written
    // before the key columns, the entries alone (the digest's 16 bytes, then
    // the rest), is read the same.
    let ids_file = |d: &str| s.out().join(format!("state/{d}.usage-ids"));
    let keyed: Vec<Vec<u8>> = ["2026-10-01", "2026-10-02"].map(|d| std::fs::read(ids_file(d)).unwrap()).into();
    assert_eq!(keyed.iter().map(Vec::len).collect::<Vec<_>>(), [20 * 28 + 512, 28 + 512]);
    for (d, file) in ["2026-10-01", "2026-10-02"].iter().zip(&keyed) {
        let (shards, trailer) = file.split_at(file.len() - 512);
        let mut entries = Vec::new();
        let mut at = 0;
        for count in trailer.chunks_exact(8).map(|c| u64::from_le_bytes(c.try_into().unwrap()) as usize) {
            let (keys, rests) = shards[at..at + count * 28].split_at(count * 8);
            for (key, rest) in keys.chunks_exact(8).zip(rests.chunks_exact(20)) {
                entries.extend_from_slice(&rest[..8]);
                entries.extend_from_slice(key);
                entries.extend_from_slice(&rest[8..]);
            }
            at += count * 28;
        }
        std::fs::write(ids_file(d), entries).unwrap();
    }
    let old_form = store.load_for(day("2026-10-02"), Some(NextDay { day: day("2026-10-03"), wanted: &wanted3 })).unwrap();
    assert_eq!((old_form.seen.usage.len(), old_form.seen.usage), (2, as_day3.seen.usage.clone()));
    let old_form_all = store.load(day("2026-10-02")).unwrap();
    assert_eq!(old_form_all.seen.usage, after_day2.seen.usage);
    for (d, file) in ["2026-10-01", "2026-10-02"].iter().zip(&keyed) {
        std::fs::write(ids_file(d), file).unwrap();
    }

    // Damaged id files are refused, the first in day order named, whether the
    // files are decoded on all cores (a day's ids wanted) or one at a time.
    for d in ["2026-10-01", "2026-10-02"] {
        let bytes = std::fs::read(ids_file(d)).unwrap();
        std::fs::write(ids_file(d), &bytes[..bytes.len() - 1]).unwrap();
    }
    let refused = format!("{}: usage id file holds 1071 bytes, expected 20 entries", ids_file("2026-10-01").display());
    let with_wanted = store.load_for(day("2026-10-02"), Some(NextDay { day: day("2026-10-03"), wanted: &wanted3 }));
    assert_eq!(with_wanted.err(), Some(refused.clone()));
    let keeping_all = store.load_for(day("2026-10-02"), Some(NextDay { day: day("2026-10-03"), wanted: &keep_all }));
    assert_eq!(keeping_all.err(), Some(refused));
}

#[test]
fn ambiguous_contracts_make_the_input_unusable() {
    let s = payer_scenario();
    s.file(
        "contracts.csv",
        &contracts(&[
            "k1,2,cvm,hourly,discount,0.5,2026-01-01T00:00:00+08:00,2026-06-01T00:00:00+08:00",
            "k2,2,cvm,hourly,discount,0.6,2026-05-01T00:00:00+08:00,",
            "k3,2,cvm,prepaid,tiered,0:1,2026-05-01T00:00:00+08:00,",
        ]),
    );
    s.file("days/2026-10-01/usage.csv", USAGE_HEADER);
    let err = s.run().unwrap_err();
    let Failure::Unusable(problems) = &err else { panic!("{err}") };
    assert!(problems.iter().any(|p| p.contains("k1 and k2") && p.contains("ambiguous")), "{problems:?}");
    assert!(problems.iter().any(|p| p.contains("line 4") && p.contains("postpaid cycles only")), "{problems:?}");
    assert!(!s.out().exists(), "nothing is written");
}

#[test]
fn a_repeated_or_malformed_contract_id_is_named_with_its_line() {
    let s = payer_scenario();
    s.file(
        "contracts.csv",
        &contracts(&[
            "k1,2,cvm,hourly,discount,0.5,2026-01-01T00:00:00+08:00,",
            "k2,2,cdn,hourly,discount,0.6,2026-01-01T00:00:00+08:00,",
            "k1,2,cos,hourly,discount,0.7,2026-01-01T00:00:00+08:00,",
            "k 4,2,cbs,hourly,discount,0.7,2026-01-01T00:00:00+08:00,",
            "k2,999,cbs,hourly,discount,0.7,2026-01-01T00:00:00+08:00,",
        ]),
    );
    s.file("days/2026-10-01/usage.csv", USAGE_HEADER);
    let err = s.run().unwrap_err();
    let Failure::Unusable(problems) = &err else { panic!("{err}") };
    assert_eq!(
        problems,
        &[
            "contracts.csv line 4: contract_id k1 already appears on line 2",
            "contracts.csv line 5: contract_id \"k 4\" is not a valid id",
            "contracts.csv line 6: owner_uin 999 is not an account of the snapshot",
        ]
    );
}

#[test]
fn vouchers_follow_the_spec_order_and_carry_over() {
    let s = Scenario::new();
    s.file("org.json", &org_json(""));
    s.file(
        "vouchers.csv",
        "voucher_id,owner_uin,kind,amount,valid_from,valid_to,products,scope,min_charge\n\
vb,2,voucher,3.00,2026-01-01T00:00:00+08:00,2027-01-01T00:00:00+08:00,,all,\n\
va,2,cash_coupon,9.00,2026-01-01T00:00:00+08:00,2027-01-01T00:00:00+08:00,,postpaid,\n\
vc,2,voucher,1.00,2026-01-01T00:00:00+08:00,2026-10-01T12:00:00+08:00,cvm,postpaid,\n\
vd,2,voucher,50.00,2026-01-01T00:00:00+08:00,2027-01-01T00:00:00+08:00,,all,100\n",
    );
    s.file("days/2026-10-01/usage.csv", &format!("{USAGE_HEADER}u1,2,i,cvm,r,hourly,2026-10-01T09:00:00+08:00,2026-10-01T10:00:00+08:00,1,11.5,11.5\n"));
    s.file("days/2026-10-02/usage.csv", &format!("{USAGE_HEADER}u2,2,i,cos,r,daily,2026-10-02T00:00:00+08:00,2026-10-02T10:00:00+08:00,1,4,4\n"));
    s.run().unwrap();
    // vc expires first; then va (deducts 9) before vb (3); vd needs a 100.00 line.
    assert_eq!(
        s.rows("days/2026-10-01/voucher_usage.csv"),
        [
            "P|2|cvm|hourly|2026-10-01T09:00:00+08:00,vc,2,1.00",
            "P|2|cvm|hourly|2026-10-01T09:00:00+08:00,va,2,9.00",
            "P|2|cvm|hourly|2026-10-01T09:00:00+08:00,vb,2,1.50",
        ]
    );
    // The next day vb has 1.50 left; the rest is credit.
    assert_eq!(ledger_cols(&s, "2026-10-02", &["voucher_amount", "credit_amount"]), ["1.50/2.50"]);
}

#[test]
fn order_and_recharge_rejects() {
    let s = payer_scenario();
    s.file(
        "days/2026-10-01/orders.csv",
        &format!(
            "{ORDERS_HEADER}\
o1,3,res,cbs,new,2026-10-02T00:00:00+08:00,5,
o2,3,res,cbs,refund,2026-10-01T01:00:00+08:00,5,5
o3,3,res,cbs,new,2025-12-31T23:59:59+08:00,5,
o4,3,res,cbs,sell,2026-10-01T01:00:00+08:00,5,
o5,3,res,cbs,new,2026-10-01T01:00:00+08:00,5.123456789,1.001
"
        ),
    );
    s.file(
        "days/2026-10-01/recharges.csv",
        "recharge_id,uin,at,amount\nr1,3,2026-10-01T01:00:00+08:00,0\nr2,3,2026-09-30T01:00:00+08:00,1\n",
    );
    s.run().unwrap();
    assert_eq!(
        reject_heads(&s, "2026-10-01"),
        [
            "orders.csv,2,o1,future_time",
            "orders.csv,3,o2,bad_order_amounts",
            // Before 2026-10 (the first day's month) is closed, which comes before before_org.
            "orders.csv,4,o3,month_closed",
            "orders.csv,5,o4,bad_value",
            "orders.csv,6,o5,bad_amount_scale",
            "recharges.csv,2,r1,bad_value",
            "recharges.csv,3,r2,month_closed",
        ]
    );
}

#[test]
fn before_org_is_checked_against_the_orgs_creation() {
    let s = Scenario::new();
    s.file("org.json", &org_json("").replace(r#""created_at":"2026-01-01T00:00:00+08:00""#, r#""created_at":"2026-10-01T12:00:00+08:00""#)
        .replace(r#""joined_at":"2026-01-01T00:00:00+08:00""#, r#""joined_at":"2026-10-01T12:00:00+08:00""#));
    s.file("days/2026-10-01/recharges.csv", "recharge_id,uin,at,amount\nr1,2,2026-10-01T11:59:59+08:00,1\nr2,2,2026-10-01T12:00:00+08:00,1\n");
    s.run().unwrap();
    assert_eq!(s.rows("days/2026-10-01/rejects.csv").len(), 1);
    assert!(s.rows("days/2026-10-01/rejects.csv")[0].starts_with("recharges.csv,2,r1,before_org,"));
    assert!(s.read("days/2026-10-01/balances.csv").contains("\n2,o1,1.00,"));
}

#[test]
fn a_day_of_thousands_of_rejected_rows_reports_each_in_file_order() {
    // Beyond the first 4,096, a day's rejected usage rows are written aside as
    // reading decides them and merged back into rejects.csv by line, with those
    // decided once the day is read (a conflict) among them; orders' rejects come
    // first. Nothing is left in the output folder of what was written aside.
    let s = payer_scenario();
    let row = |id: u32, amount: u32| {
        format!("u{id},3,i,cvm,r,hourly,2026-10-01T09:00:00+08:00,2026-10-01T10:00:00+08:00,1,{amount},{amount}\n")
    };
    // Rows u1..u9000, the even ones a negative quantity (bad_value: the 4,096th
    // is on line 8,193); on line 8,500, among those written aside, u1 again with
    // other content (a conflict, decided once the day is read).
    let mut rows: Vec<String> = (1..=9_000).map(|id| if id % 2 == 0 { row(id, 1).replace(",1,1,1", ",-1,1,1") } else { row(id, 1) }).collect();
    rows.insert(8_500 - 2, row(1, 2));
    s.file("days/2026-10-01/usage.csv", &format!("{USAGE_HEADER}{}", rows.concat()));
    s.file("days/2026-10-01/orders.csv", &format!("{ORDERS_HEADER}o1,3,r3,cbs,new,2026-10-01T12:00:00+08:00,,5.00\n"));
    s.run().unwrap();
    let heads = reject_heads(&s, "2026-10-01");
    let mut want = vec!["orders.csv,2,o1,bad_order_amounts".to_string()];
    let line = |id: u32| if id + 1 < 8_500 { id + 1 } else { id + 2 };
    want.extend((1..=9_000).filter(|id| id % 2 == 0 && line(*id) < 8_500).map(|id| format!("usage.csv,{},u{id},bad_value", line(id))));
    want.push("usage.csv,8500,u1,conflicting_duplicate".to_string());
    want.extend((1..=9_000).filter(|id| id % 2 == 0 && line(*id) > 8_500).map(|id| format!("usage.csv,{},u{id},bad_value", line(id))));
    assert_eq!(heads.len(), 4_502);
    assert_eq!(heads, want);
    let summary: serde_json::Value = serde_json::from_str(&s.read("days/2026-10-01/summary.json")).unwrap();
    assert_eq!(summary["rejects"], 4_502);
    assert_eq!(summary["files"]["usage.csv"]["rejected"], 4_501);
    let state: Vec<String> = std::fs::read_dir(s.out().join("state")).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).filter(|n| n.starts_with('.')).collect();
    assert!(state.is_empty(), "left in state/: {state:?}");
}
