//! One organization's day (SPEC §4.4, §6–§10): the day's records become events,
//! processed strictly by (time, rank, key). Pure: no files, no clock, no environment;
//! the caller hands in the books and receives the day's rows.
//!
//! Invariants: every settled line has payable = voucher + cash + gift + credit and
//! discount = list − payable; refund shares sum to the refund; a prepaid order
//! never takes its payer into arrears; service events are emitted exactly when an
//! account's state flips.

use crate::ids::{Product, Uin};
use crate::ingest::{GroupKey, OrderRecord, RechargeRecord, TransferKind, TransferRecord, UsageGroup, ORDERS_FILE};
use crate::money::{Exact8, Money, Rated};
use crate::pricing::{choose_contract, price_order};
use crate::reference::{ContractCycle, Reference};
use crate::refunds::allocate_largest_remainder;
use crate::reject::{Reason, Reject};
use crate::settlement::{apply_payment, plan_payment, prepaid_can_settle, LineTiming, Payment, VoucherBalance};
use crate::snapshot::{Member, Org, Snapshot};
use crate::state::{AccountState, Bases, Text, TransferSource};
use crate::time::{Cycle, Day, PackedMonth, Ts};
use std::collections::{BTreeMap, BTreeSet};

/// The §4.4 key part of an event; only keys of one rank are ever compared.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum KeyPart {
    Id(String),
    Uin(Uin),
    Postpaid(GroupKey),
}

/// The rank of postpaid usage events among the events of one instant (§4.4).
const POSTPAID_RANK: u8 = 5;

/// Processing order: time, then rank, then key. Unique across organizations, so it
/// also orders the merged output files.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct EventKey {
    pub time: Ts,
    pub rank: u8,
    pub key: KeyPart,
}

pub enum EventBody {
    Recharge(RechargeRecord),
    Transfer(TransferRecord),
    Snapshot(Uin),
    ChargeOrder(OrderRecord),
    MoneyBack(OrderRecord),
    Postpaid(GroupKey, UsageGroup),
}

pub struct Event {
    pub key: EventKey,
    pub body: EventBody,
}

impl Event {
    pub fn recharge(r: RechargeRecord) -> Event {
        Event { key: EventKey { time: r.at, rank: 0, key: KeyPart::Id(r.recharge_id.clone()) }, body: EventBody::Recharge(r) }
    }
    pub fn transfer(t: TransferRecord) -> Event {
        Event { key: EventKey { time: t.at, rank: 1, key: KeyPart::Id(t.transfer_id.clone()) }, body: EventBody::Transfer(t) }
    }
    pub fn snapshot(at: Ts, uin: Uin) -> Event {
        Event { key: EventKey { time: at, rank: 2, key: KeyPart::Uin(uin) }, body: EventBody::Snapshot(uin) }
    }
    pub fn order(o: OrderRecord) -> Event {
        let charge = o.action.is_charge();
        let key = EventKey { time: o.created_at, rank: if charge { 3 } else { 4 }, key: KeyPart::Id(o.order_id.clone()) };
        Event { key, body: if charge { EventBody::ChargeOrder(o) } else { EventBody::MoneyBack(o) } }
    }
    pub fn postpaid(key: GroupKey, group: UsageGroup) -> Event {
        Event { key: Event::postpaid_key(&key), body: EventBody::Postpaid(key, group) }
    }

    /// The processing key of a settlement line's event.
    pub fn postpaid_key(key: &GroupKey) -> EventKey {
        EventKey { time: key.period_end().pred(), rank: POSTPAID_RANK, key: KeyPart::Postpaid(key.clone()) }
    }
}

/// Ordered as its text (the merged bill's keys are). (The default is a
/// placeholder, for lists merged in place: `monthly::merge_lacking`.)
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum LineKind {
    #[default]
    Postpaid,
    Prepaid,
    Refund,
}

impl LineKind {
    pub fn as_str(self) -> &'static str {
        match self {
            LineKind::Postpaid => "postpaid",
            LineKind::Prepaid => "prepaid",
            LineKind::Refund => "refund",
        }
    }
    pub fn parse(text: &str) -> Option<LineKind> {
        [LineKind::Postpaid, LineKind::Prepaid, LineKind::Refund].into_iter().find(|k| k.as_str() == text)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LineStatus {
    Settled,
    PaymentFailed,
}

impl LineStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            LineStatus::Settled => "settled",
            LineStatus::PaymentFailed => "payment_failed",
        }
    }
}

/// What only a postpaid line has: its settlement period, which starts at `start`
/// and ends at the line's `charge_time`, how many usage records it sums and their
/// summed quantity, and the run day when the line is late (one field instead of
/// four: millions of lines a day). Its id is spelled from these and the line's
/// own fields (`P|owner|product|cycle|period_start`, plus `|late-D` for a late
/// line), so it is not stored as text.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PostpaidUsage {
    pub cycle: Cycle,
    /// The run day, for a line settled after its period's day (SPEC §11.1).
    pub late: Option<Day>,
    pub start: Ts,
    pub records: u64,
    pub quantity: Exact8,
}

/// A postpaid line's id (`P|owner|product|cycle|period_start`, plus `|late-D`
/// for a late line; SPEC §11.1), its period start written by `write_start`.
fn write_postpaid_line_id(out: &mut String, owner: Uin, product: &str, cycle: Cycle, late: Option<Day>, write_start: impl FnOnce(&mut String)) {
    out.push_str("P|");
    out.push_str(itoa::Buffer::new().format(owner));
    out.push('|');
    out.push_str(product);
    out.push('|');
    out.push_str(cycle.as_str());
    out.push('|');
    write_start(out);
    if let Some(day) = late {
        out.push_str("|late-");
        out.push_str(&day.to_string());
    }
}

/// What only an order's line (a prepaid line or a refund share) has: its id, the
/// order and resource ids, and the key of the event that made it (a postpaid
/// line's key is read from the line itself). Boxed: millions of postpaid lines a
/// day carry none.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OrderPart {
    pub line_id: String,
    pub order_id: String,
    pub resource_id: String,
    pub key: EventKey,
}

/// What a ledger line has of its own kind: a postpaid line's period (it ends at
/// `charge_time`), records and quantity, or an order's part. One field, not two
/// options: 8 bytes of each line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LineDetail {
    Postpaid(PostpaidUsage),
    Order(Box<OrderPart>),
}

/// An organization's id as its ledger lines name it: one copy made per
/// organization and snapshot, never freed (a thin pointer: 8 bytes a line where a
/// shared `Arc<str>` took 16).
pub type OrgName = &'static String;

/// One row of `ledger.csv` (SPEC §11.1).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LedgerLine {
    pub charge_time: Ts,
    pub bill_month: PackedMonth,
    pub kind: LineKind,
    pub org_id: OrgName,
    pub owner_uin: Uin,
    pub responsible_uin: Uin,
    pub product: Product,
    /// The period of a postpaid line, or the order of a prepaid or refund line.
    pub detail: LineDetail,
    pub list_amount: Money,
    pub payable_amount: Money,
    /// The contract that priced the line (its pricing UIN and id); None = list.
    pub contract: Option<crate::reference::ContractRef>,
    pub voucher_amount: Money,
    pub cash_amount: Money,
    pub gift_amount: Money,
    pub credit_amount: Money,
    pub status: LineStatus,
    /// Where the owner is in the snapshot: (organization index, member index).
    /// The FOCUS rows read the owner's member through it, checking that it
    /// names the owner (a probe of the account index a row, which missed the
    /// cache, was ~2% of a 10M-row day).
    pub place: (u32, u32),
}

impl LedgerLine {
    /// A settled postpaid line of org-1 paid in cash, `fen` fen of one record, for
    /// the tests of what renders lines.
    #[cfg(test)]
    pub(crate) fn settled_postpaid(
        (owner_uin, responsible_uin): (Uin, Uin),
        cycle: crate::time::Cycle,
        (start, end): (&str, &str),
        late: Option<&str>,
        fen: i64,
    ) -> LedgerLine {
        let org: OrgName = Box::leak(Box::new("org-1".to_string()));
        let at = |text: &str| Ts::parse(text).expect("an instant");
        LedgerLine {
            charge_time: at(end),
            bill_month: at(end).pred().month().into(),
            kind: LineKind::Postpaid,
            org_id: org,
            owner_uin,
            responsible_uin,
            product: crate::ids::intern_product("cvm"),
            detail: LineDetail::Postpaid(PostpaidUsage {
                cycle,
                late: late.map(|d| crate::time::Day::parse(d).expect("a day")),
                start: at(start),
                records: 1,
                quantity: crate::money::Exact8::parse("1").expect("a quantity"),
            }),
            list_amount: Money::from_fen(fen),
            payable_amount: Money::from_fen(fen),
            contract: None,
            voucher_amount: Money::ZERO,
            cash_amount: Money::from_fen(fen),
            gift_amount: Money::ZERO,
            credit_amount: Money::ZERO,
            status: LineStatus::Settled,
            place: (u32::MAX, u32::MAX),
        }
    }

    /// Append the line's id.
    pub fn write_line_id(&self, out: &mut String) {
        self.write_line_id_with(out, |start, out| start.write_to(out));
    }

    /// Append the line's id, its period start (postpaid lines) written by
    /// `write_start` (the ledger keeps the text of the last one).
    pub fn write_line_id_with(&self, out: &mut String, write_start: impl FnOnce(Ts, &mut String)) {
        match &self.detail {
            &LineDetail::Postpaid(PostpaidUsage { cycle, start, late, .. }) => {
                write_postpaid_line_id(out, self.owner_uin, self.product, cycle, late, |out| write_start(start, out));
            }
            LineDetail::Order(order) => out.push_str(&order.line_id),
        }
    }

    pub fn line_id_text(&self) -> String {
        let mut text = String::with_capacity(64);
        self.write_line_id(&mut text);
        text
    }

    /// A postpaid line's period, records and quantity.
    pub fn usage(&self) -> Option<PostpaidUsage> {
        match &self.detail {
            LineDetail::Postpaid(usage) => Some(*usage),
            LineDetail::Order(_) => None,
        }
    }

    /// A prepaid or refund line's order part.
    pub fn order(&self) -> Option<&OrderPart> {
        match &self.detail {
            LineDetail::Order(order) => Some(order),
            LineDetail::Postpaid(_) => None,
        }
    }

    /// `discount_amount`: list − payable on every line (§11.1), so derived, not
    /// stored (8 bytes of each of a day's millions of lines).
    pub fn discount_amount(&self) -> Money {
        self.list_amount - self.payable_amount
    }

    /// A postpaid line settled after its period's day (FOCUS `Correction`).
    pub fn is_late(&self) -> bool {
        self.usage().is_some_and(|u| u.late.is_some())
    }

    /// The §11.1 row invariants; a violation is an internal error.
    pub fn check(&self) -> Result<(), String> {
        let parts = self.voucher_amount + self.cash_amount + self.gift_amount + self.credit_amount;
        if self.status == LineStatus::Settled && parts != self.payable_amount {
            return Err(format!("line {}: payable {} ≠ voucher + cash + gift + credit {}", self.line_id_text(), self.payable_amount, parts));
        }
        if self.status == LineStatus::PaymentFailed && !parts.is_zero() {
            return Err(format!("line {}: a failed payment moved money", self.line_id_text()));
        }
        Ok(())
    }
}

/// One row of `voucher_usage.csv`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VoucherUse {
    pub line_id: String,
    pub voucher_id: String,
    pub voucher_owner_uin: Uin,
    pub amount: Money,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Trigger {
    Charge,
    Refund,
    Recharge,
    Transfer,
    PayerStart,
    PayerEnd,
}

impl Trigger {
    pub fn as_str(self) -> &'static str {
        match self {
            Trigger::Charge => "charge",
            Trigger::Refund => "refund",
            Trigger::Recharge => "recharge",
            Trigger::Transfer => "transfer",
            Trigger::PayerStart => "payer_start",
            Trigger::PayerEnd => "payer_end",
        }
    }
}

/// One row of `events.csv` (SPEC §10).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceEvent {
    pub at: Ts,
    pub org_id: String,
    pub uin: Uin,
    /// true = shutdown, false = reversal.
    pub shutdown: bool,
    pub responsible_uin: Uin,
    pub trigger: Trigger,
}

/// One row of `transfers.csv` (SPEC §9, §11.2).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TransferRow {
    pub transfer_id: String,
    pub kind: TransferKind,
    pub at: Ts,
    pub management_uin: Option<Uin>,
    pub member_uin: Uin,
    /// Two decimals when a whole number of fen, else as written.
    pub amount: String,
    /// None = accepted, else the §9 reason.
    pub refused: Option<&'static str>,
    /// The accepted amount (for control totals).
    pub moved: Option<Money>,
}

/// A ledger line with the key of the event that made it. A postpaid line's key is
/// read from the line itself (period end, owner, product, cycle, period start):
/// such lines are nearly all of a day's, and storing their keys took 56 bytes
/// each. Any other line's key is stored in its `OrderPart`.
#[derive(Debug)]
pub struct KeyedLine {
    pub line: LedgerLine,
}

impl KeyedLine {
    pub fn new(key: &EventKey, line: LedgerLine) -> KeyedLine {
        match line.order() {
            Some(order) => assert!(&order.key == key, "an order line's stored key is its event's"),
            None => assert!(Self::derived(&line).as_ref() == Some(key), "a postpaid line's key is its event's"),
        }
        KeyedLine { line }
    }

    fn derived(line: &LedgerLine) -> Option<EventKey> {
        let usage = line.usage()?;
        let group = GroupKey { owner_uin: line.owner_uin, product: line.product, cycle: usage.cycle, period_start: usage.start };
        Some(EventKey { time: line.charge_time.pred(), rank: POSTPAID_RANK, key: KeyPart::Postpaid(group) })
    }

    pub fn key(&self) -> std::borrow::Cow<'_, EventKey> {
        match self.line.order() {
            Some(order) => std::borrow::Cow::Borrowed(&order.key),
            None => std::borrow::Cow::Owned(Self::derived(&self.line).expect("a line without an order is postpaid")),
        }
    }
}

/// Everything one organization's day produced, each row with its event's key.
#[derive(Default, Debug)]
pub struct OrgOutput {
    pub ledger: Vec<KeyedLine>,
    pub voucher_usage: Vec<(EventKey, VoucherUse)>,
    pub events: Vec<(EventKey, ServiceEvent)>,
    pub transfers: Vec<(EventKey, TransferRow)>,
    pub rejects: Vec<Reject>,
}

/// Where a run of the day's processing order ends: an event belongs before it
/// when its (time, rank, owner) is smaller, the owner being a postpaid line's
/// (the first field of its group key) and 0 for any other event. Runs cut only at
/// (t, 0, 0), before every event of instant t, or at (t, POSTPAID_RANK, owner),
/// between the lines of one instant, so no two events of one key fall on both
/// sides.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct KeyBound {
    pub time: Ts,
    pub rank: u8,
    pub owner: Uin,
}

impl KeyBound {
    /// Before every event of instant `time`.
    pub fn at(time: Ts) -> KeyBound {
        KeyBound { time, rank: 0, owner: 0 }
    }

    /// Before the settlement lines of instant `time` owned by `owner` or a larger UIN.
    pub fn lines_from(time: Ts, owner: Uin) -> KeyBound {
        KeyBound { time, rank: POSTPAID_RANK, owner }
    }

    /// Whether the settlement line of `key` comes before this bound (as
    /// `is_after(&Event::postpaid_key(key))`, without making the key).
    pub fn is_after_line(&self, key: &GroupKey) -> bool {
        self.is_after_line_at(key.period_end().pred(), key.owner_uin)
    }

    /// Whether a settlement line of `owner` processed at `at` comes before this bound.
    pub fn is_after_line_at(&self, at: Ts, owner: Uin) -> bool {
        (at, POSTPAID_RANK, owner) < (self.time, self.rank, self.owner)
    }

    /// Whether `key` comes before this bound.
    pub fn is_after(&self, key: &EventKey) -> bool {
        let owner = match &key.key {
            KeyPart::Postpaid(group) => group.owner_uin,
            _ => 0,
        };
        (key.time, key.rank, owner) < (self.time, self.rank, self.owner)
    }
}

/// An organization's events of the day not settled yet, in processing order
/// (`OrgBooks::day_events`).
pub struct PendingEvents {
    events: std::iter::Peekable<std::vec::IntoIter<Event>>,
}

impl PendingEvents {
    /// The key of the next event, if any is waiting.
    pub fn peek_key(&mut self) -> Option<&EventKey> {
        self.events.peek().map(|e| &e.key)
    }
}

/// The books of one organization while its day is settled.
pub struct OrgBooks<'a> {
    pub org: &'a Org,
    /// The org id shared by the org's ledger lines.
    org_id: OrgName,
    pub accounts: BTreeMap<Uin, AccountState>,
    pub vouchers: BTreeMap<Uin, Vec<VoucherBalance<'a>>>,
    pub bases: Bases,
    pub sources: BTreeMap<Text, TransferSource>,
    /// Each member's payer as of the events processed so far (drives service
    /// state); a member paying for itself has no entry (an entry of every member
    /// was ~4 MB of a 10M-row day's books).
    current_payer: BTreeMap<Uin, Uin>,
    paid_by: BTreeMap<Uin, BTreeSet<Uin>>,
    /// `reevaluate`'s list of accounts, kept between its calls (one a line: a
    /// list made anew each time was ~6M allocations of a 10M-row day).
    candidates: Vec<Uin>,
    /// The bill month of the last postpaid line's last instant.
    months: crate::time::MonthOf,
    /// This organization's index in the snapshot.
    org_index: u32,
}

impl<'a> OrgBooks<'a> {
    /// `accounts` holds every member; `fresh` lists those with no stored service
    /// state, whose state is derived from their balances without an event (§10).
    /// `org_index` is the organization's index in the snapshot.
    #[allow(clippy::too_many_arguments)] // the parts of an organization's state, each a different thing
    pub fn new(
        org: &'a Org,
        org_index: usize,
        day: Day,
        accounts: BTreeMap<Uin, AccountState>,
        fresh: &BTreeSet<Uin>,
        vouchers: BTreeMap<Uin, Vec<VoucherBalance<'a>>>,
        bases: Bases,
        sources: BTreeMap<Text, TransferSource>,
    ) -> OrgBooks<'a> {
        // The day starts from the payer relations in force just before its 00:00.
        let before = day.start().pred();
        let mut books = OrgBooks {
            org,
            org_id: org.name,
            accounts,
            vouchers,
            bases,
            sources,
            current_payer: BTreeMap::new(),
            paid_by: BTreeMap::new(),
            candidates: Vec::new(),
            months: Default::default(),
            org_index: u32::try_from(org_index).expect("fewer than 2^32 organizations"),
        };
        for m in &org.members {
            books.set_payer(m.uin, m.payer_at(before));
        }
        for &uin in fresh {
            let responsible = books.responsible(uin);
            let arrears = books.accounts[&responsible].in_arrears();
            books.accounts.get_mut(&uin).expect("fresh account present").suspended = arrears;
        }
        books
    }

    fn set_payer(&mut self, uin: Uin, payer: Option<Uin>) {
        let old = match payer {
            Some(p) => self.current_payer.insert(uin, p),
            None => self.current_payer.remove(&uin),
        };
        if let Some(old) = old {
            if let Some(set) = self.paid_by.get_mut(&old) {
                set.remove(&uin);
            }
        }
        if let Some(p) = payer {
            self.paid_by.entry(p).or_default().insert(uin);
        }
    }

    fn responsible(&self, uin: Uin) -> Uin {
        self.current_payer.get(&uin).copied().unwrap_or(uin)
    }

    /// The organization's events of `day` but its settlement lines (`events`, any
    /// kind, plus the instants its payer relations change), in processing order,
    /// for `settle_until`.
    pub fn day_events(&self, day: Day, mut events: Vec<Event>) -> PendingEvents {
        for (&(at, uin), ()) in self.org.snapshot_instants().range((day.start(), 0)..(day.end(), 0)) {
            events.push(Event::snapshot(at, uin));
        }
        // Keys are unique (§4.4), so an unstable sort gives the one order.
        events.sort_unstable_by(|a, b| a.key.cmp(&b.key));
        PendingEvents { events: events.into_iter().peekable() }
    }

    /// Settle the organization's events that come before `until` in processing
    /// order (all of them when None): those of `pending` and the settlement
    /// `lines`, each line one postpaid event, which must be exactly its lines
    /// before `until` not settled yet, in processing order (`Event::postpaid_key`,
    /// that is by period end, then group key). The rows go to `out`. A day settled
    /// in several runs of its order, each ending where the next begins, gives the
    /// rows of one run over all of it: the events are processed in the same order
    /// against the same books. A line becomes an event (200 bytes) only when its
    /// turn comes.
    #[allow(clippy::too_many_arguments)]
    pub fn settle_until(
        &mut self,
        day: Day,
        snapshot: &Snapshot,
        reference: &Reference,
        pending: &mut PendingEvents,
        lines: &[(GroupKey, UsageGroup)],
        until: Option<&KeyBound>,
        out: &mut OrgOutput,
    ) -> Result<(), String> {
        debug_assert!(lines.windows(2).all(|w| Event::postpaid_key(&w[0].0) < Event::postpaid_key(&w[1].0)), "lines in processing order");
        debug_assert!(lines.iter().all(|(k, _)| until.is_none_or(|u| u.is_after(&Event::postpaid_key(k)))), "lines before the bound");
        let events = &mut pending.events;
        let mut ordered = lines.iter().peekable();
        loop {
            let next_event = events.peek().filter(|e| until.is_none_or(|u| u.is_after(&e.key)));
            let line_first = match (next_event, ordered.peek()) {
                (None, None) => break,
                (Some(_), None) => false,
                (None, Some(_)) => true,
                (Some(event), Some((group_key, _))) => Event::postpaid_key(group_key) < event.key,
            };
            let event = match line_first {
                true => ordered.next().map(|(group_key, group)| Event::postpaid(group_key.clone(), group.clone())),
                false => events.next(),
            }
            .expect("peeked");
            let key = event.key;
            match event.body {
                EventBody::Recharge(r) => {
                    self.account(r.uin).cash += r.amount;
                    self.reevaluate(&[r.uin], &key, r.at, Trigger::Recharge, out);
                }
                EventBody::Transfer(t) => self.transfer(t, &key, out),
                EventBody::Snapshot(uin) => {
                    let member = self.org.member(uin).expect("snapshot instants come from members");
                    let payer = member.payer_at(key.time);
                    self.set_payer(uin, payer);
                    let trigger = if payer.is_some() { Trigger::PayerStart } else { Trigger::PayerEnd };
                    self.reevaluate(&[uin], &key, key.time, trigger, out);
                }
                EventBody::ChargeOrder(o) => self.charge_order(o, day, snapshot, reference, &key, out)?,
                EventBody::MoneyBack(o) => self.money_back(o, day, &key, out)?,
                EventBody::Postpaid(group_key, group) => self.postpaid(group_key, group, day, &key, out)?,
            }
        }
        Ok(())
    }

    /// A member of this organization and its place in the snapshot.
    fn member_and_place(&self, uin: Uin) -> (&'a Member, (u32, u32)) {
        let org: &'a Org = self.org;
        let m = org.members.binary_search_by_key(&uin, |m| m.uin).expect("owner belongs to this org");
        (&org.members[m], (self.org_index, m as u32))
    }

    fn account(&mut self, uin: Uin) -> &mut AccountState {
        self.accounts.get_mut(&uin).expect("every member of the org has books")
    }

    /// Re-evaluate the service state of every account an event may have changed:
    /// the accounts whose balance moved and those they currently pay for (§10).
    fn reevaluate(&mut self, moved: &[Uin], key: &EventKey, at: Ts, trigger: Trigger, out: &mut OrgOutput) {
        let mut candidates = std::mem::take(&mut self.candidates);
        candidates.clear();
        candidates.extend_from_slice(moved);
        for uin in moved {
            if let Some(members) = self.paid_by.get(uin) {
                candidates.extend(members.iter().copied());
            }
        }
        candidates.sort_unstable();
        candidates.dedup();
        for &uin in &candidates {
            let responsible = self.responsible(uin);
            let arrears = self.accounts[&responsible].in_arrears();
            let account = self.account(uin);
            if account.suspended != arrears {
                account.suspended = arrears;
                out.events.push((
                    key.clone(),
                    ServiceEvent { at, org_id: self.org.org_id.clone(), uin, shutdown: arrears, responsible_uin: responsible, trigger },
                ));
            }
        }
        self.candidates = candidates;
    }

    fn pay(&mut self, responsible: Uin, amount: Money, product: &str, timing: LineTiming) -> Payment {
        let empty = Vec::new();
        let vouchers = self.vouchers.get(&responsible).unwrap_or(&empty);
        plan_payment(amount, &self.accounts[&responsible], vouchers, product, timing)
    }

    fn commit_payment(&mut self, responsible: Uin, payment: &Payment, line_id: impl Fn() -> String, key: &EventKey, out: &mut OrgOutput) {
        let account = self.accounts.get_mut(&responsible).expect("responsible account has books");
        let mut none = Vec::new();
        let vouchers = self.vouchers.get_mut(&responsible).unwrap_or(&mut none);
        apply_payment(payment, account, vouchers);
        for &(index, amount) in &payment.voucher_uses {
            out.voucher_usage.push((
                key.clone(),
                VoucherUse {
                    line_id: line_id(),
                    voucher_id: vouchers[index].voucher.voucher_id.clone(),
                    voucher_owner_uin: responsible,
                    amount,
                },
            ));
        }
    }

    fn postpaid(&mut self, gk: GroupKey, group: UsageGroup, day: Day, key: &EventKey, out: &mut OrgOutput) -> Result<(), String> {
        let period_end = gk.period_end();
        let last_instant = period_end.pred();
        let (owner, place) = self.member_and_place(gk.owner_uin);
        // The payer in effect at the period's last instant pays; the member pays its last period (§6).
        let responsible = owner.payer_at(last_instant).unwrap_or(owner.uin);
        let list = group.list.round_to_money_half_away_from_zero();
        let payable = group.priced.round_to_money_half_away_from_zero();
        let late = (period_end <= day.start()).then_some(day);
        // Spelled for each voucher it uses (its voucher usage rows name it).
        let line_id = || {
            let mut text = String::with_capacity(64);
            write_postpaid_line_id(&mut text, gk.owner_uin, gk.product, gk.cycle, late, |out| gk.period_start.write_to(out));
            text
        };
        let timing = LineTiming::Postpaid { period_start: gk.period_start, period_end };
        let payment = self.pay(responsible, payable, gk.product, timing);
        self.commit_payment(responsible, &payment, line_id, key, out);
        let line = LedgerLine {
            charge_time: period_end,
            bill_month: self.months.month(last_instant).0.into(),
            kind: LineKind::Postpaid,
            org_id: self.org_id,
            owner_uin: gk.owner_uin,
            responsible_uin: responsible,
            product: gk.product,
            detail: LineDetail::Postpaid(PostpaidUsage { cycle: gk.cycle, late, start: gk.period_start, records: group.records, quantity: group.quantity }),
            list_amount: list,
            payable_amount: payable,
            contract: group.contract,
            voucher_amount: payment.voucher,
            cash_amount: payment.cash,
            gift_amount: payment.gift,
            credit_amount: payment.credit,
            status: LineStatus::Settled,
            place,
        };
        line.check()?;
        out.ledger.push(KeyedLine::new(key, line));
        self.reevaluate(&[responsible], key, period_end, Trigger::Charge, out);
        Ok(())
    }

    fn charge_order(
        &mut self,
        o: OrderRecord,
        _day: Day,
        snapshot: &Snapshot,
        reference: &Reference,
        key: &EventKey,
        out: &mut OrgOutput,
    ) -> Result<(), String> {
        let (owner, place) = self.member_and_place(o.owner_uin);
        let responsible = owner.payer_at(o.created_at).unwrap_or(owner.uin);
        let list_amount = o.list_amount.unwrap_or(Exact8::ZERO);
        let contract =
            choose_contract(snapshot, &reference.contracts, self.org, owner, o.product, ContractCycle::Prepaid, o.created_at, o.created_at);
        let priced = price_order(contract, list_amount).ok_or_else(|| format!("order {}: priced amount out of range", o.order_id))?;
        let list = Rated::from_exact8(list_amount).round_to_money_half_away_from_zero();
        let payable = priced.round_to_money_half_away_from_zero();
        let line_id = format!("O|{}", o.order_id);
        let payment = self.pay(responsible, payable, o.product, LineTiming::Prepaid { created_at: o.created_at });
        let settles = prepaid_can_settle(&payment, &self.accounts[&responsible]);
        let payment = if settles {
            self.commit_payment(responsible, &payment, || line_id.clone(), key, out);
            *self.bases.entry(Text::from(o.resource_id.as_str())).or_default().entry(responsible).or_default() += payable;
            payment
        } else {
            Payment::default()
        };
        let line = LedgerLine {
            charge_time: o.created_at,
            bill_month: o.created_at.month().into(),
            kind: LineKind::Prepaid,
            org_id: self.org_id,
            owner_uin: o.owner_uin,
            responsible_uin: responsible,
            product: o.product,
            detail: LineDetail::Order(Box::new(OrderPart { line_id, order_id: o.order_id.clone(), resource_id: o.resource_id.clone(), key: key.clone() })),
            list_amount: list,
            payable_amount: payable,
            contract: contract.map(|c| c.name),
            voucher_amount: payment.voucher,
            cash_amount: payment.cash,
            gift_amount: payment.gift,
            credit_amount: payment.credit,
            status: if settles { LineStatus::Settled } else { LineStatus::PaymentFailed },
            place,
        };
        line.check()?;
        out.ledger.push(KeyedLine::new(key, line));
        if settles {
            self.reevaluate(&[responsible], key, o.created_at, Trigger::Charge, out);
        }
        Ok(())
    }

    fn money_back(&mut self, o: OrderRecord, _day: Day, key: &EventKey, out: &mut OrgOutput) -> Result<(), String> {
        let refund = o.refund_amount.expect("money-back orders carry refund_amount");
        let reject = |reason: Reason, message: String| Reject { file: ORDERS_FILE, line: o.line, id: o.order_id.clone(), reason, message };
        let Some(resource) = self.bases.get_mut(o.resource_id.as_str()) else {
            out.rejects.push(reject(Reason::UnknownResource, format!("resource {} has no settled charge order", o.resource_id)));
            return Ok(());
        };
        let bases: Vec<(Uin, Money)> = resource.iter().filter(|(_, b)| b.is_positive()).map(|(&p, &b)| (p, b)).collect();
        let total: Money = bases.iter().map(|b| b.1).sum();
        if refund > total {
            out.rejects.push(reject(
                Reason::RefundExceedsPaid,
                format!("refund {refund} exceeds what payers of resource {} have left to refund ({total})", o.resource_id),
            ));
            return Ok(());
        }
        let shares = allocate_largest_remainder(refund, &bases);
        for &(payer, share) in &shares {
            let basis = resource.get_mut(&payer).expect("share of a payer with a basis");
            assert!(share <= *basis, "refund share exceeds the payer's basis");
            *basis -= share;
        }
        let (_, place) = self.member_and_place(o.owner_uin);
        let mut payers = Vec::new();
        for (payer, share) in shares {
            self.account(payer).cash += share;
            payers.push(payer);
            let line = LedgerLine {
                charge_time: o.created_at,
                bill_month: o.created_at.month().into(),
                kind: LineKind::Refund,
                org_id: self.org_id,
                owner_uin: o.owner_uin,
                responsible_uin: payer,
                product: o.product,
                detail: LineDetail::Order(Box::new(OrderPart {
                    line_id: format!("R|{}|{}", o.order_id, payer),
                    order_id: o.order_id.clone(),
                    resource_id: o.resource_id.clone(),
                    key: key.clone(),
                })),
                list_amount: -share,
                payable_amount: -share,
                contract: None,
                voucher_amount: Money::ZERO,
                cash_amount: -share,
                gift_amount: Money::ZERO,
                credit_amount: Money::ZERO,
                status: LineStatus::Settled,
                place,
            };
            line.check()?;
            out.ledger.push(KeyedLine::new(key, line));
        }
        self.reevaluate(&payers, key, o.created_at, Trigger::Refund, out);
        Ok(())
    }

    fn transfer(&mut self, t: TransferRecord, key: &EventKey, out: &mut OrgOutput) {
        let management = self.org.management_uin;
        let refusal = self.transfer_refusal(&t);
        let amount = t.amount.unwrap_or(Money::ZERO);
        let row = TransferRow {
            transfer_id: t.transfer_id.clone(),
            kind: t.kind,
            at: t.at,
            management_uin: Some(management),
            member_uin: t.member_uin,
            amount: t.amount.map_or_else(|| t.amount_text.clone(), |m| m.to_string()),
            refused: refusal,
            moved: refusal.is_none().then_some(amount),
        };
        out.transfers.push((key.clone(), row));
        if refusal.is_some() {
            return;
        }
        match t.kind {
            TransferKind::In => {
                self.account(management).cash -= amount;
                self.account(t.member_uin).cash += amount;
                self.sources.insert(
                    Text::from(t.transfer_id.as_str()),
                    TransferSource { org_id: Text::from(self.org.org_id.as_str()), member_uin: t.member_uin, amount, drawn: Money::ZERO },
                );
            }
            TransferKind::Out => {
                self.account(t.member_uin).cash -= amount;
                self.account(management).cash += amount;
                let source = t.source_transfer_id.as_ref().and_then(|s| self.sources.get_mut(s.as_str())).expect("source checked");
                source.drawn += amount;
            }
        }
        self.reevaluate(&[management, t.member_uin], key, t.at, Trigger::Transfer, out);
    }

    /// The first §9 rule the transfer breaks, in the listed order.
    fn transfer_refusal(&self, t: &TransferRecord) -> Option<&'static str> {
        let member = match self.org.member(t.member_uin) {
            Some(m) if m.uin != self.org.management_uin && m.is_member_at(t.at) => m,
            _ => return Some("unknown_member"),
        };
        if !member.permissions.fund_transfer {
            return Some("no_permission");
        }
        if member.payer_at(t.at).is_some() {
            return Some("not_self_pay");
        }
        let amount = match t.amount {
            Some(a) if a.is_positive() => a,
            _ => return Some("bad_amount"),
        };
        let from = match t.kind {
            TransferKind::In => self.org.management_uin,
            TransferKind::Out => t.member_uin,
        };
        if self.accounts[&from].cash < amount {
            return Some("insufficient_cash");
        }
        if t.kind == TransferKind::Out {
            let source = t.source_transfer_id.as_ref().and_then(|s| self.sources.get(s.as_str()));
            let Some(source) = source.filter(|s| s.member_uin == t.member_uin) else {
                return Some("unknown_source");
            };
            if amount > source.amount - source.drawn {
                return Some("exceeds_source");
            }
        }
        None
    }
}

/// A transfer whose member belongs to no organization of the snapshot (§9 `unknown_member`).
pub fn orphan_transfer(t: TransferRecord) -> (EventKey, TransferRow) {
    let key = Event::transfer(t.clone()).key;
    let row = TransferRow {
        transfer_id: t.transfer_id,
        kind: t.kind,
        at: t.at,
        management_uin: None,
        member_uin: t.member_uin,
        amount: t.amount.map_or(t.amount_text, |m| m.to_string()),
        refused: Some("unknown_member"),
        moved: None,
    };
    (key, row)
}
