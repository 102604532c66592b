//! Reject reasons (SPEC §14) and rejected rows.

use std::fmt;

/// The reasons of SPEC §14, in its order: a row breaking several rules is reported
/// with the first (smallest) one.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub enum Reason {
    BadRow,
    BadTimestamp,
    BadAmountScale,
    BadValue,
    BadOrderAmounts,
    ListAmountMismatch,
    PeriodNotEnded,
    SpansPeriods,
    FutureTime,
    MonthClosed,
    UnknownAccount,
    BeforeOrg,
    ConflictingDuplicate,
    UnknownResource,
    RefundExceedsPaid,
}

impl Reason {
    pub fn code(self) -> &'static str {
        match self {
            Reason::BadRow => "bad_row",
            Reason::BadTimestamp => "bad_timestamp",
            Reason::BadAmountScale => "bad_amount_scale",
            Reason::BadValue => "bad_value",
            Reason::BadOrderAmounts => "bad_order_amounts",
            Reason::ListAmountMismatch => "list_amount_mismatch",
            Reason::PeriodNotEnded => "period_not_ended",
            Reason::SpansPeriods => "spans_periods",
            Reason::FutureTime => "future_time",
            Reason::MonthClosed => "month_closed",
            Reason::UnknownAccount => "unknown_account",
            Reason::BeforeOrg => "before_org",
            Reason::ConflictingDuplicate => "conflicting_duplicate",
            Reason::UnknownResource => "unknown_resource",
            Reason::RefundExceedsPaid => "refund_exceeds_paid",
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

/// A row refused with the first reason it breaks and a message for people.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    pub reason: Reason,
    pub message: String,
}

impl Refusal {
    pub fn new(reason: Reason, message: impl Into<String>) -> Refusal {
        Refusal { reason, message: message.into() }
    }
}

/// One row of `rejects.csv`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Reject {
    pub file: &'static str,
    pub line: u64,
    pub id: String,
    pub reason: Reason,
    pub message: String,
}
