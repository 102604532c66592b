//! The monthly close and reports (SPEC §11.2–§11.4), with exact figures.

use crate::common::*;
use orgsettle::time::Month;

fn monthly_scenario() -> Scenario {
    let s = Scenario::new();
    let member = |uin: u64, joined: &str, extra: &str| {
        format!(r#"{{"uin":{uin},"name":"m{uin}","entity_id":"e1","dept_id":"root","join_mode":"invited","joined_at":"{joined}"{extra}}}"#)
    };
    let members = [
        member(1, "2026-08-15T10:00:00+08:00", r#","join_mode":"management""#).replace(r#""join_mode":"invited","#, ""),
        member(2, "2026-08-15T10:00:00+08:00", r#","permissions":["merged_bill"]"#),
        member(3, "2026-10-02T00:00:00+08:00", r#","permissions":["merged_bill"]"#),
        member(4, "2026-08-20T00:00:00+08:00", ""),
        member(5, "2026-08-20T00:00:00+08:00", r#","payer_periods":[{"payer_uin":2,"from":"2026-09-01T00:00:00+08:00"}]"#),
    ];
    s.file(
        "org.json",
        &format!(
            r#"{{"snapshot_at":"2026-11-01T00:00:00+08:00","orgs":[{{"org_id":"o1","created_at":"2026-08-15T10:00:00+08:00",
            "management_uin":1,"entities":[{{"entity_id":"e1","admin_uin":2}}],"departments":[{{"dept_id":"root"}}],
            "members":[{}]}}]}}"#,
            members.join(",")
        ),
    );
    s.file("balances.csv", "uin,cash,gift,credit_limit\n4,100.00,0,0\n");
    s.file("history.csv", "org_id,month,member_uin,product,total\no1,2026-09,2,cvm,12.34\no1,2026-08,1,cos,1.00\n");
    s.file("days/2026-10-01/orders.csv", &format!("{ORDERS_HEADER}o1,4,r4,cbs,new,2026-10-01T12:00:00+08:00,50,\n"));
    s.file(
        "days/2026-10-02/usage.csv",
        &format!(
            "{USAGE_HEADER}\
a,1,i,cvm,r,daily,2026-10-01T00:00:00+08:00,2026-10-02T00:00:00+08:00,1,10,10
b,2,i,cos,r,daily,2026-10-01T00:00:00+08:00,2026-10-02T00:00:00+08:00,1,10,10
c,3,i,cvm,r,hourly,2026-10-02T05:00:00+08:00,2026-10-02T06:00:00+08:00,1,7,7
d,5,i,cvm,r,daily,2026-10-01T00:00:00+08:00,2026-10-02T00:00:00+08:00,1,5,5
"
        ),
    );
    s.file("days/2026-10-02/orders.csv", &format!("{ORDERS_HEADER}o2,4,r4,cbs,refund,2026-10-02T08:00:00+08:00,,20\n"));
    s.file("days/2026-11-01/recharges.csv", "recharge_id,uin,at,amount\n");
    s
}

#[test]
fn merged_bill_routes_payer_and_self_paid_lines() {
    let s = monthly_scenario();
    s.run().unwrap();
    assert_eq!(
        s.rows("months/2026-10/merged_bill.csv"),
        [
            "2026-10,o1,1,1,m1,root,self,cvm,postpaid,1,10.00,0.00,10.00,0.00,0.00,0.00,10.00",
            "2026-10,o1,1,2,m2,root,self,cos,postpaid,1,10.00,0.00,10.00,0.00,0.00,0.00,10.00",
            "2026-10,o1,1,3,m3,root,self,cvm,postpaid,1,7.00,0.00,7.00,0.00,0.00,0.00,7.00",
            "2026-10,o1,2,5,m5,root,payer,cvm,postpaid,1,5.00,0.00,5.00,0.00,0.00,0.00,5.00",
        ]
    );
}

#[test]
fn overview_cuts_joined_in_month_members_and_months_before_creation() {
    let s = monthly_scenario();
    s.run().unwrap();
    // Member 3 joined on 10-02, after October's first instant: left out of October.
    // Member 4's 50.00 order less its 20.00 refund: 30.00. 1 and 2 tie at 10.00: smaller uin first.
    assert_eq!(
        s.rows("months/2026-10/overview_by_member.csv"),
        [
            "o1,2026-08,1,m1,1.00,1.0000,1",
            "o1,2026-09,2,m2,12.34,1.0000,1",
            "o1,2026-10,4,m4,30.00,0.6000,1",
            "o1,2026-10,1,m1,10.00,0.2000,2",
            "o1,2026-10,2,m2,10.00,0.2000,3",
        ]
    );
    assert_eq!(
        s.rows("months/2026-10/overview_by_product.csv"),
        [
            "o1,2026-08,cos,1.00,1.0000,1",
            "o1,2026-09,cvm,12.34,1.0000,1",
            "o1,2026-10,cbs,30.00,0.6000,1",
            "o1,2026-10,cos,10.00,0.2000,2",
            "o1,2026-10,cvm,10.00,0.2000,3",
        ]
    );
    // The org was created in August: the window is 2026-08 … 2026-10, 3 months; 63.34 / 3 = 21.113… → 21.11.
    assert_eq!(s.rows("months/2026-10/overview_summary.csv"), ["o1,2026-08,2026-10,3,63.34,21.11"]);
}

#[test]
fn month_to_date_overview_in_every_day() {
    let s = monthly_scenario();
    s.run().unwrap();
    assert_eq!(s.rows("days/2026-10-01/overview_mtd_by_member.csv"), ["o1,2026-10,4,m4,50.00,1.0000,1"]);
    assert_eq!(s.rows("days/2026-10-02/overview_mtd_by_product.csv").len(), 3);
    // Days with no sums of their own still draw the month so far, from its file.
    for file in ["overview_mtd_by_member.csv", "overview_mtd_by_product.csv"] {
        for later in ["2026-10-03", "2026-10-31"] {
            assert_eq!(s.rows(&format!("days/{later}/{file}")), s.rows(&format!("days/2026-10-02/{file}")), "{later} {file}");
        }
    }
    assert!(s.rows("days/2026-11-01/overview_mtd_by_member.csv").is_empty());
}

#[test]
fn focus_has_the_mandatory_columns_and_reconciles_with_the_merged_bill() {
    let s = monthly_scenario();
    s.run().unwrap();
    let mut reader = csv::Reader::from_path(s.out().join("months/2026-10/focus.csv")).unwrap();
    let header: Vec<String> = reader.headers().unwrap().iter().map(String::from).collect();
    assert_eq!(header, orgsettle::focus::FOCUS_COLUMNS);
    let rows: Vec<Vec<String>> = reader.records().map(|r| r.unwrap().iter().map(String::from).collect()).collect();
    for row in &rows {
        for (i, column) in header.iter().enumerate() {
            if column != "ChargeClass" {
                assert!(!row[i].is_empty(), "{column} is empty in {row:?}");
            }
        }
    }
    assert_eq!(rows.len(), 4);
    let billed: i64 = rows.iter().map(|r| orgsettle::money::Money::parse(&r[0]).unwrap().fen()).sum();
    assert_eq!(billed, 3200, "10.00 + 10.00 + 7.00 + 5.00");
    let payer_row = rows.iter().find(|r| r[21] == "5").unwrap();
    assert_eq!((&*payer_row[1], &*payer_row[6], &*payer_row[5]), ("2", "Usage", "2026-09-30T16:00:00Z"));
}

#[test]
fn close_needs_the_first_day_of_the_next_month() {
    let s = monthly_scenario();
    orgsettle::job::run(&s.input(), &s.out(), None, Some(day("2026-10-31")), quiet()).unwrap();
    assert!(!s.out().join("months/2026-10").exists());
    let err = orgsettle::job::close(&s.input(), &s.out(), Month::parse("2026-10").unwrap(), quiet()).unwrap_err();
    assert!(err.to_string().contains("once 2026-11-01 is settled"), "{err}");
    s.daily("2026-11-01").unwrap();
    orgsettle::job::close(&s.input(), &s.out(), Month::parse("2026-10").unwrap(), quiet()).unwrap();
    assert_eq!(s.rows("months/2026-10/overview_summary.csv"), ["o1,2026-08,2026-10,3,63.34,21.11"]);
}

#[test]
fn a_days_month_to_date_overview_takes_the_history_rows_of_its_month_as_given() {
    // history.csv is meant for the months before the first day's; a row given for
    // the day's own month is still taken as given (§11.4), in that day's
    // month-to-date overview, and the rows of other months are not.
    let s = monthly_scenario();
    s.file("history.csv", "org_id,month,member_uin,product,total\no1,2026-09,2,cvm,12.34\no1,2026-10,4,cos,2.50\no1,2026-10,2,cvm,1.00\n");
    s.daily("2026-10-01").unwrap();
    // Member 4's order of 50.00 on the day, and its 2.50 of history.
    assert_eq!(s.rows("days/2026-10-01/overview_mtd_by_member.csv"), ["o1,2026-10,4,m4,52.50,0.9813,1", "o1,2026-10,2,m2,1.00,0.0187,2"]);
    assert_eq!(
        s.rows("days/2026-10-01/overview_mtd_by_product.csv"),
        ["o1,2026-10,cbs,50.00,0.9346,1", "o1,2026-10,cos,2.50,0.0467,2", "o1,2026-10,cvm,1.00,0.0187,3"]
    );
}
