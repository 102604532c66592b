//! Month aggregates and the monthly reports (SPEC §11.3, §11.4): the merged bill
//! (合并出账), the six-month finance overview and its month-to-date view.
//! No files: a month's aggregates are read and written as the byte streams the
//! store opens.
//!
//! Invariant: a close is a function of the aggregates kept in the state and of
//! `history.csv`; it never reads raw days, so closing twice gives the same files.

use crate::engine::{LedgerLine, LineKind, LineStatus};
use crate::ids::Uin;
use crate::money::Money;
use crate::reference::HistoryRow;
use crate::snapshot::{Member, Org, Snapshot};
use crate::state::{BillKey, BillSums, MonthAggregates, PayMode, ProductName, SelfPaidKey, Text};
use crate::time::{Month, Ts};
use std::collections::BTreeMap;

/// Where a settled line goes on the merged bill: (bill owner, pay mode), or None.
pub fn merged_bill_owner(org: &Org, line: &LedgerLine) -> Option<(Uin, &'static str)> {
    merged_bill_owner_of(org, line, || org.member(line.owner_uin))
}

/// `merged_bill_owner`, with the line's owner (the member of `org` it is, if
/// any) given by `owner` (asked only when needed): for callers that know it.
pub fn merged_bill_owner_of<'o>(org: &Org, line: &LedgerLine, owner: impl FnOnce() -> Option<&'o Member>) -> Option<(Uin, &'static str)> {
    if line.status != LineStatus::Settled {
        return None;
    }
    if line.responsible_uin != line.owner_uin {
        return Some((line.responsible_uin, "payer"));
    }
    let owner = owner()?;
    (owner.uin == org.management_uin || owner.permissions.merged_bill).then_some((org.management_uin, "self"))
}

/// The instant a line was processed at: its period's last instant, or `created_at`.
pub fn processing_time(line: &LedgerLine) -> Ts {
    match (line.kind, line.usage()) {
        (LineKind::Postpaid, Some(_)) => line.charge_time.pred(),
        _ => line.charge_time,
    }
}

/// Does this line count as the owner's self-paid data (SPEC §11.3)?
pub fn is_self_paid(org: &Org, line: &LedgerLine) -> bool {
    is_self_paid_of(org, line, || org.member(line.owner_uin))
}

/// `is_self_paid`, with the line's owner given by `owner` (as for
/// `merged_bill_owner_of`).
fn is_self_paid_of<'o>(org: &Org, line: &LedgerLine, owner: impl FnOnce() -> Option<&'o Member>) -> bool {
    if line.status != LineStatus::Settled || line.responsible_uin != line.owner_uin {
        return false;
    }
    let t = processing_time(line);
    t >= org.created_at && owner().is_some_and(|m| m.is_member_at(t))
}

/// A merged-bill entry's sums while a day is summed: only settled lines reach
/// the merged bill, and a settled line's payable is its voucher, cash, gift and
/// credit parts (`LedgerLine::check`) and its discount the list amount less the
/// payable (`LedgerLine::discount_amount`), so both are derived once, when the
/// day's sums become the month's (`BillSums`): 48 bytes an entry where
/// `BillSums` takes 64 (a 10M-row day has ~460k entries, held until it is
/// settled).
#[derive(Clone, Copy, Default)]
struct DaySums {
    lines: u64,
    list: Money,
    voucher: Money,
    cash: Money,
    gift: Money,
    credit: Money,
}

impl DaySums {
    fn of(line: &LedgerLine) -> DaySums {
        debug_assert_eq!(line.status, LineStatus::Settled, "only settled lines reach the merged bill");
        debug_assert_eq!(line.voucher_amount + line.cash_amount + line.gift_amount + line.credit_amount, line.payable_amount);
        DaySums {
            lines: 1,
            list: line.list_amount,
            voucher: line.voucher_amount,
            cash: line.cash_amount,
            gift: line.gift_amount,
            credit: line.credit_amount,
        }
    }

    fn add(&mut self, more: DaySums) {
        self.lines += more.lines;
        self.list += more.list;
        self.voucher += more.voucher;
        self.cash += more.cash;
        self.gift += more.gift;
        self.credit += more.credit;
    }

    fn bill_sums(self) -> BillSums {
        let payable = self.voucher + self.cash + self.gift + self.credit;
        BillSums {
            lines: self.lines,
            list: self.list,
            discount: self.list - payable,
            payable,
            voucher: self.voucher,
            cash: self.cash,
            gift: self.gift,
            credit: self.credit,
        }
    }
}

fn add_sums(sums: &mut BillSums, more: &BillSums) {
    sums.lines += more.lines;
    sums.list += more.list;
    sums.discount += more.discount;
    sums.payable += more.payable;
    sums.voucher += more.voucher;
    sums.cash += more.cash;
    sums.gift += more.gift;
    sums.credit += more.credit;
}


impl LineSumsBuilder {
    /// How many merged-bill and self-paid entries it holds.
    pub fn sizes(&self) -> (usize, usize) {
        (self.merged.len(), self.self_paid.len())
    }
}

/// A product code by its interned address (one address a code): compared as one
/// word (ordered by address: the sums' order within a day, never an output's).
#[derive(Clone, Copy)]
struct ByAddress(crate::ids::Product);

impl PartialOrd for ByAddress {
    fn partial_cmp(&self, other: &ByAddress) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for ByAddress {
    fn cmp(&self, other: &ByAddress) -> std::cmp::Ordering {
        crate::ids::address_of(self.0).cmp(&crate::ids::address_of(other.0))
    }
}

impl PartialEq for ByAddress {
    fn eq(&self, other: &ByAddress) -> bool {
        std::ptr::eq(self.0, other.0)
    }
}

impl Eq for ByAddress {}

/// A merged-bill key while a day is summed: (bill month, organization index,
/// bill owner, the member's index in its organization, paid by a payer, product,
/// kind): 32 bytes where the key of texts took 88 (a 10M-row day has ~460k of
/// them, held until it is settled; the member's UIN made it 40).
type MergedSumKey = (crate::time::PackedMonth, u32, Uin, u32, bool, ByAddress, LineKind);
const _: () = assert!(std::mem::size_of::<(MergedSumKey, DaySums)>() == 80);

/// A self-paid key while a day is summed: (bill month, organization index,
/// member, product).
type SelfPaidSumKey = (crate::time::PackedMonth, u32, Uin, ByAddress);

/// The `LineSums` of ledger lines added a run of them at a time (one
/// organization's, as its runs settle): sorted lists, to which a run's entries,
/// sorted, are added in one forward pass (`add_run`), the keys it brings merged
/// in once. A day's keys nearly all
/// come in its first hour; hash tables of them held 97 MB at 10M usage rows
/// (2026-12-06), the lists about half of that.
#[derive(Default)]
pub struct LineSumsBuilder {
    merged: Vec<(MergedSumKey, DaySums)>,
    self_paid: Vec<(SelfPaidSumKey, Money)>,
}

impl LineSumsBuilder {
    /// Add `lines` (each of an account of `snapshot`).
    pub fn add<'l>(&mut self, snapshot: &Snapshot, lines: impl Iterator<Item = &'l LedgerLine>) {
        RUN_SCRATCH.with_borrow_mut(|scratch| self.add_with(snapshot, lines, scratch));
    }

    fn add_with<'l>(&mut self, snapshot: &Snapshot, lines: impl Iterator<Item = &'l LedgerLine>, scratch: &mut RunScratch) {
        let RunScratch { merged: run_merged, self_paid: run_self_paid, merged_lacking, self_paid_lacking } = scratch;
        // The last owner located, with its (organization, member) indices:
        // consecutive lines are mostly one owner's products, and a lookup of the
        // account index is a cache miss (as in the FOCUS rows).
        let mut last: Option<(Uin, usize, usize)> = None;
        for line in lines {
            // The line's place in the snapshot, checked (a probe of the account
            // index missed the cache about once a line: a quarter of this
            // function's time at 10M usage rows).
            let located = match last {
                Some((uin, o, m)) if uin == line.owner_uin => Some((o, m)),
                _ => snapshot.locate_at(line.owner_uin, line.place),
            };
            let Some((o, m)) = located else { continue };
            last = Some((line.owner_uin, o, m));
            let org = &snapshot.orgs[o];
            let owner = || Some(&org.members[m]);
            if let Some((bill_owner, pay_mode)) = merged_bill_owner_of(org, line, owner) {
                let key = (line.bill_month, o as u32, bill_owner, m as u32, pay_mode == "payer", ByAddress(line.product), line.kind);
                run_merged.push((key, DaySums::of(line)));
            }
            if is_self_paid_of(org, line, owner) {
                run_self_paid.push(((line.bill_month, o as u32, line.owner_uin, ByAddress(line.product)), line.payable_amount));
            }
        }
        add_run(&mut self.merged, run_merged, merged_lacking, DaySums::add);
        add_run(&mut self.self_paid, run_self_paid, self_paid_lacking, |a, b| *a += b);
    }

    /// The sums with the keys of the month aggregates, month by month (months
    /// ascending), each month's entries sorted by key.
    #[allow(clippy::type_complexity)]
    fn owned(self, snapshot: &Snapshot) -> (Vec<(Month, Vec<(BillKey, BillSums)>)>, Vec<(Month, Vec<(SelfPaidKey, Money)>)>) {
        let org_id = |o: u32| Text::from(snapshot.orgs[o as usize].org_id.as_str());
        let merged = by_month(self.merged.into_iter().map(|((month, o, bill_owner, m, payer, product, kind), sums)| {
            let pay_mode = if payer { PayMode::Payer } else { PayMode::SelfPaid };
            let member = snapshot.orgs[o as usize].members[m as usize].uin;
            (month, ((org_id(o), bill_owner, member, pay_mode, ProductName(product.0), kind), sums.bill_sums()))
        }));
        let self_paid = by_month(
            self.self_paid.into_iter().map(|((month, o, member, product), total)| (month, ((org_id(o), member, ProductName(product.0)), total))),
        );
        (merged, self_paid)
    }
}

/// The lists a thread reuses for the runs it adds to builders
/// (`LineSumsBuilder::add`): a run's entries and the keys its builder lacks.
/// Allocated and freed for each organization's run (~1.7M a 10M-row day), they
/// took ~0.5% of the day in the allocator.
#[derive(Default)]
struct RunScratch {
    merged: Vec<(MergedSumKey, DaySums)>,
    self_paid: Vec<(SelfPaidSumKey, Money)>,
    merged_lacking: Vec<(MergedSumKey, DaySums)>,
    self_paid_lacking: Vec<(SelfPaidSumKey, Money)>,
}

thread_local! {
    static RUN_SCRATCH: std::cell::RefCell<RunScratch> = std::cell::RefCell::default();
}

/// Entries that come month by month (a builder's lists are sorted by month first)
/// put in one list a month, each sorted by key: within a month a builder's order
/// (its organization's index, the pay mode as a flag, the product's address) is
/// not the key's.
fn by_month<K: Ord, V>(entries: impl Iterator<Item = (crate::time::PackedMonth, (K, V))>) -> Vec<(Month, Vec<(K, V)>)> {
    let mut out: Vec<(crate::time::PackedMonth, Vec<(K, V)>)> = Vec::new();
    for (month, entry) in entries {
        match out.last_mut() {
            Some((m, list)) if *m == month => list.push(entry),
            _ => out.push((month, vec![entry])),
        }
    }
    out.into_iter()
        .map(|(month, mut list)| {
            list.sort_unstable_by(|a, b| a.0.cmp(&b.0));
            (month.get(), list)
        })
        .collect()
}

/// `parts` appended to `list` in their order, each copied on whichever core is
/// free into its own stretch of the list's spare room (which must hold them all).
fn append_in_parallel<T: Send>(list: &mut Vec<T>, parts: Vec<Vec<T>>) {
    use rayon::prelude::*;
    let total: usize = parts.iter().map(Vec::len).sum();
    assert!(list.capacity() - list.len() >= total, "room for every part");
    let mut spare = &mut list.spare_capacity_mut()[..total];
    let mut stretches = Vec::with_capacity(parts.len());
    for part in &parts {
        let (stretch, rest) = spare.split_at_mut(part.len());
        stretches.push(stretch);
        spare = rest;
    }
    stretches.into_par_iter().zip(parts).for_each(|(stretch, part)| {
        for (slot, entry) in stretch.iter_mut().zip(part) {
            slot.write(entry);
        }
    });
    // SAFETY: the stretches cover the first `total` spare slots exactly, and each
    // was written in full above by its part, of the same length (a panic there
    // leaves the length as it was: the entries written are leaked, not read).
    unsafe { list.set_len(list.len() + total) };
}

/// Whether `list`'s keys ascend strictly, checked on all cores.
fn strictly_ascending<K: Ord + Sync, V: Sync>(list: &[(K, V)]) -> bool {
    use rayon::prelude::*;
    list.par_windows(2).all(|w| w[0].0 < w[1].0)
}

/// The day's sums of each month they reach, with the keys of the month
/// aggregates, each list sorted by key (`day_sums_by_month`).
#[derive(Default)]
pub struct DayMonthSums {
    pub merged: BTreeMap<Month, Vec<(BillKey, BillSums)>>,
    pub self_paid: BTreeMap<Month, Vec<(SelfPaidKey, Money)>>,
}

impl DayMonthSums {
    /// The months the day has sums for.
    pub fn months(&self) -> std::collections::BTreeSet<Month> {
        let merged = self.merged.iter().filter(|(_, l)| !l.is_empty()).map(|(m, _)| *m);
        merged.chain(self.self_paid.iter().filter(|(_, l)| !l.is_empty()).map(|(m, _)| *m)).collect()
    }
}

/// The day's sums (one builder per organization) in one list a month with owned
/// keys, a few hundred organizations' at a time, each builder freed as its
/// entries join (the day's sums are never held twice beside the new lists):
/// each builder's entries sorted by key on its own, then appended in builder
/// order on all cores, which leaves the list sorted when the builders come in
/// organization order (checked; sorted whole otherwise). Sums are exact: the
/// order they are added in does not change them.
pub fn day_sums_by_month(builders: Vec<LineSumsBuilder>, snapshot: &Snapshot) -> DayMonthSums {
    use rayon::prelude::*;
    const AT_A_TIME: usize = 256;
    // The memory of the builders folded so far is handed back every few chunks
    // (`memory::release_freed_memory`): the new lists, one large block each, can
    // reuse none of it, and kept it sat on top of them, the day's peak (10M usage
    // rows: ~440 MB, ~20 MB above the settlement's).
    const RELEASE_EVERY: usize = 4;
    // Each month's new lists sized once (grown by doubling they were twice the
    // size at times, the day's peak).
    let counts = builders
        .par_iter()
        .map(|b| {
            let mut counts: BTreeMap<Month, (usize, usize)> = BTreeMap::new();
            b.merged.iter().for_each(|(k, _)| counts.entry(k.0.get()).or_default().0 += 1);
            b.self_paid.iter().for_each(|(k, _)| counts.entry(k.0.get()).or_default().1 += 1);
            counts
        })
        .reduce(BTreeMap::new, |mut a, b| {
            for (m, (x, y)) in b {
                let c = a.entry(m).or_default();
                (c.0, c.1) = (c.0 + x, c.1 + y);
            }
            a
        });
    let mut sums = DayMonthSums {
        merged: counts.iter().map(|(m, c)| (*m, Vec::with_capacity(c.0))).collect(),
        self_paid: counts.iter().map(|(m, c)| (*m, Vec::with_capacity(c.1))).collect(),
    };
    let mut builders = builders.into_iter();
    let mut chunks = 0;
    loop {
        let chunk: Vec<LineSumsBuilder> = builders.by_ref().take(AT_A_TIME).collect();
        if chunk.is_empty() {
            break;
        }
        // Each builder's entries converted and sorted on whichever core is free,
        // then each month's appended to its list, in organization order, on all
        // cores (one after another on one core they were a fifth of the fold).
        let owned: Vec<_> = chunk.into_par_iter().map(|b| b.owned(snapshot)).collect();
        let mut merged_parts: BTreeMap<Month, Vec<Vec<(BillKey, BillSums)>>> = BTreeMap::new();
        let mut self_paid_parts: BTreeMap<Month, Vec<Vec<(SelfPaidKey, Money)>>> = BTreeMap::new();
        for (m, p) in owned {
            for (month, list) in m {
                merged_parts.entry(month).or_default().push(list);
            }
            for (month, list) in p {
                self_paid_parts.entry(month).or_default().push(list);
            }
        }
        for (month, parts) in merged_parts {
            append_in_parallel(sums.merged.entry(month).or_default(), parts);
        }
        for (month, parts) in self_paid_parts {
            append_in_parallel(sums.self_paid.entry(month).or_default(), parts);
        }
        chunks += 1;
        if chunks % RELEASE_EVERY == 0 {
            crate::memory::release_freed_memory();
        }
    }
    // The builders come in organization order, and a key begins with the
    // organization: each builder's entries sorted, a month's list is too, which
    // is checked (a list that is not is sorted whole, as it was before).
    for new in sums.merged.values_mut() {
        if !strictly_ascending(new) {
            new.par_sort_unstable_by(|a, b| a.0.cmp(&b.0));
        }
    }
    for new in sums.self_paid.values_mut() {
        if !strictly_ascending(new) {
            new.par_sort_unstable_by(|a, b| a.0.cmp(&b.0));
        }
    }
    sums
}

/// The day's sums of one month, ready to be folded into the month's aggregates
/// as the month's new file is written (`write_folded_month`): the month's
/// merged-bill list is never held (627k entries, ~75 MB, after a month of
/// 1M-row days; held, with the day's new list beside it, it was the peak of a
/// later day), its self-paid totals are, folded (the month-to-date overview reads
/// them).
#[derive(Debug, Default)]
pub struct MonthFold {
    /// The day whose file holds the month's aggregates so far (set by the
    /// store), or none.
    pub base: Option<crate::time::Day>,
    /// The day's merged-bill sums of the month, sorted by key.
    pub merged: Vec<(BillKey, BillSums)>,
    /// The length of the month's merged-bill list once they are added.
    pub merged_len: u64,
    /// The month's self-paid totals with the day's added, sorted by key.
    pub self_paid: Vec<(SelfPaidKey, Money)>,
}

/// The fold of a month's day sums `merged` and `self_paid` (sorted by key) into
/// the month's aggregates so far, read from `month` (a month file's bytes, or
/// none for a month without aggregates yet): its merged-bill list walked without
/// being kept, to count the keys it lacks; its self-paid list read with room for
/// the day's and the day's added (in place where it had the key). Refused if the
/// file is unreadable or out of key order.
pub fn plan_fold(
    month: Option<impl std::io::Read>,
    merged: Vec<(BillKey, BillSums)>,
    self_paid: Vec<(SelfPaidKey, Money)>,
) -> Result<MonthFold, String> {
    let Some(month) = month else {
        return Ok(MonthFold { base: None, merged_len: merged.len() as u64, merged, self_paid });
    };
    let mut r = crate::state::MonthReader::new(month);
    let old_len = r.list_len()?;
    let (mut met, mut at) = (0u64, 0);
    let mut last: Option<BillKey> = None;
    for _ in 0..old_len {
        let (key, _): (BillKey, BillSums) = r.entry()?;
        if last.is_some_and(|last| last >= key) {
            return Err("month aggregates out of key order".into());
        }
        while merged.get(at).is_some_and(|(k, _)| *k < key) {
            at += 1;
        }
        if merged.get(at).is_some_and(|(k, _)| *k == key) {
            (met, at) = (met + 1, at + 1);
        }
        last = Some(key);
    }
    let mut month_self_paid = r.sorted_list(self_paid.len())?;
    r.at_end()?;
    add_sorted(&mut month_self_paid, self_paid, |a, b| *a += b);
    Ok(MonthFold { base: None, merged_len: old_len + merged.len() as u64 - met, merged, self_paid: month_self_paid })
}

/// The month's new aggregates written to `out` as `state::write_month` writes a
/// month: its merged-bill list read again from `month` (as `plan_fold` read it)
/// with `fold.merged` added, entry by entry, then `fold.self_paid`.
pub fn write_folded_month(month: Option<impl std::io::Read>, fold: &MonthFold, mut out: impl std::io::Write) -> Result<(), String> {
    use crate::state::write_value;
    let write_error = |e: std::io::Error| format!("cannot write month aggregates: {e}");
    write_value(&mut out, &fold.merged_len).map_err(write_error)?;
    let mut new = fold.merged.iter().peekable();
    let mut written = 0u64;
    if let Some(month) = month {
        let mut r = crate::state::MonthReader::new(month);
        for _ in 0..r.list_len()? {
            let (key, mut sums): (BillKey, BillSums) = r.entry()?;
            while let Some(entry) = new.next_if(|(k, _)| *k < key) {
                write_value(&mut out, entry).map_err(write_error)?;
                written += 1;
            }
            match new.next_if(|(k, _)| *k == key) {
                Some((_, more)) => {
                    add_sums(&mut sums, more);
                    write_value(&mut out, &(key, sums)).map_err(write_error)?;
                }
                // An entry the day does not add to is copied as the file holds it
                // (postcard's encoding of a value is the one: written again, its
                // bytes are the same).
                None => out.write_all(r.last_bytes()).map_err(write_error)?,
            }
            written += 1;
        }
    }
    for entry in new {
        write_value(&mut out, entry).map_err(write_error)?;
        written += 1;
    }
    if written != fold.merged_len {
        return Err(format!("month aggregates changed while folded: {written} merged-bill entries, {} counted", fold.merged_len));
    }
    write_value(&mut out, &fold.self_paid).map_err(write_error)
}

/// A run's entries (in any order, keys repeated) added to sorted, distinct
/// `list`: sorted, then found in one forward pass (galloping from the last key
/// found: the list is cold when an organization's lines come, and a bisection
/// for each line waited on a cache miss at each step), values of equal keys
/// combined, and the keys the list lacks merged in once.
fn add_run<K: Ord, V>(list: &mut Vec<(K, V)>, run: &mut Vec<(K, V)>, lacking: &mut Vec<(K, V)>, combine: impl Fn(&mut V, V)) {
    // Sums of whole fen: the order entries of a key are combined in is no matter.
    run.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    lacking.clear();
    let mut at = 0;
    for (k, v) in run.drain(..) {
        at = first_not_below(list, at, &k);
        match (list.get_mut(at), lacking.last_mut()) {
            (Some((old, sums)), _) if *old == k => combine(sums, v),
            (_, Some((last, sums))) if *last == k => combine(sums, v),
            _ => lacking.push((k, v)),
        }
    }
    if !lacking.is_empty() {
        *list = merge_sorted(std::mem::take(list), lacking.drain(..), |_, _| unreachable!("the keys are lacking"));
    }
}

/// The first position at or after `from` of sorted `list` whose key is not
/// below `key` (all before `from` are below it): steps of 1, 2, 4, ... ahead,
/// then a bisection within the last step.
fn first_not_below<K: Ord, V>(list: &[(K, V)], from: usize, key: &K) -> usize {
    let rest = &list[from..];
    let (mut below, mut step) = (0, 1);
    while step <= rest.len() && rest[step - 1].0 < *key {
        below = step;
        step *= 2;
    }
    from + below + rest[below..step.min(rest.len())].partition_point(|(k, _)| k < key)
}

/// Sorted, distinct `new` entries added to sorted, distinct `list` (values of equal
/// keys combined into the list's, in place). A list with nothing yet takes `new`
/// whole; otherwise the keys it lacks are merged in place (`merge_lacking`).
fn add_sorted<K: Ord + Default, V: Default>(list: &mut Vec<(K, V)>, new: Vec<(K, V)>, combine: impl Fn(&mut V, V)) {
    if list.is_empty() {
        *list = new;
        return;
    }
    let mut lacking = Vec::new();
    let mut at = 0;
    for (k, v) in new {
        while list.get(at).is_some_and(|(old, _)| *old < k) {
            at += 1;
        }
        match list.get_mut(at) {
            Some((old, sums)) if *old == k => combine(sums, v),
            _ => lacking.push((k, v)),
        }
    }
    merge_lacking(list, lacking);
}

/// Sorted `lacking` entries, whose keys sorted `list` lacks, merged into it in
/// place from the back: the list grows by their number (into its spare room: a
/// month's self-paid list is read with room for the day's entries,
/// `MonthReader::sorted_list`; a merge into a new list held the month twice),
/// and each entry above the next lacking key moves once, to its place.
fn merge_lacking<K: Ord + Default, V: Default>(list: &mut Vec<(K, V)>, mut lacking: Vec<(K, V)>) {
    // list[..at] is not moved yet, list[to..] is in place, list[at..to] holds
    // placeholders: one for each lacking entry not yet placed.
    let mut at = list.len();
    list.resize_with(list.len() + lacking.len(), Default::default);
    let mut to = list.len();
    while let Some(entry) = lacking.pop() {
        while at > 0 && list[at - 1].0 > entry.0 {
            at -= 1;
            to -= 1;
            list.swap(at, to);
        }
        to -= 1;
        list[to] = entry;
    }
    debug_assert_eq!(at, to, "every placeholder replaced");
}

/// Sorted, distinct `old` with sorted, distinct `new` entries added (values of
/// equal keys combined).
fn merge_sorted<K: Ord, V>(old: Vec<(K, V)>, new: impl Iterator<Item = (K, V)>, combine: impl Fn(&mut V, V)) -> Vec<(K, V)> {
    let mut out = Vec::with_capacity(old.len() + new.size_hint().0);
    let mut old = old.into_iter().peekable();
    let mut new = new.peekable();
    loop {
        let take_new = match (old.peek(), new.peek()) {
            (None, None) => break,
            (Some(_), None) => false,
            (None, Some(_)) => true,
            (Some((a, _)), Some((b, _))) => match a.cmp(b) {
                std::cmp::Ordering::Less => false,
                std::cmp::Ordering::Greater => true,
                std::cmp::Ordering::Equal => {
                    let (k, mut v) = old.next().expect("peeked");
                    combine(&mut v, new.next().expect("peeked").1);
                    out.push((k, v));
                    continue;
                }
            },
        };
        out.push(if take_new { new.next() } else { old.next() }.expect("peeked"));
    }
    out
}

/// One row of `overview_by_member.csv` or `overview_by_product.csv`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OverviewRow {
    pub org_id: String,
    pub month: Month,
    /// The member uin (by member) or the product code (by product).
    pub key: String,
    pub member_name: Option<String>,
    pub total: Money,
    /// total / org total, 4 decimals half away from zero, as text.
    pub share: String,
    pub rank: u64,
}

/// One row of `overview_summary.csv`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SummaryRow {
    pub org_id: String,
    pub window_start: Month,
    pub window_end: Month,
    pub months: u64,
    pub total: Money,
    pub monthly_average: Money,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Overview {
    pub by_member: Vec<OverviewRow>,
    pub by_product: Vec<OverviewRow>,
    pub summary: Vec<SummaryRow>,
}

/// numerator / denominator rounded half away from zero to `digits` decimals, as text.
fn ratio_half_away_from_zero(numerator: i128, denominator: i128, digits: u32) -> String {
    if denominator == 0 {
        return format!("0.{}", "0".repeat(digits as usize));
    }
    let scale = 10i128.pow(digits);
    let n = numerator * scale;
    let mut q = n / denominator;
    let r = n % denominator;
    if 2 * r.abs() >= denominator.abs() {
        q += if (n < 0) != (denominator < 0) { -1 } else { 1 };
    }
    let sign = if q < 0 { "-" } else { "" };
    let q = q.abs();
    format!("{sign}{}.{:0width$}", q / scale, q % scale, width = digits as usize)
}

/// The months of the six-month window ending at `month`, without those before the
/// org's creation month.
pub fn window(org: &Org, month: Month) -> Vec<Month> {
    let created = org.created_at.month();
    let mut months = Vec::new();
    let mut m = month;
    for _ in 0..6 {
        if m >= created {
            months.push(m);
        }
        m = m.prev();
    }
    months.reverse();
    months
}

/// The self-paid data of one org and month: (member, product) → total, after the
/// joined-in-month rule for engine data; history rows as given. Keys borrow their
/// product codes (a `String` a key was most of the overview's time).
fn month_data<'a>(
    org: &Org,
    month: Month,
    self_paid: &SelfPaidByMonth<'a>,
    history: &BTreeMap<(&str, Month), Vec<&'a HistoryRow>>,
) -> BTreeMap<(Uin, &'a str), Money> {
    let mut data: BTreeMap<(Uin, &'a str), Money> = BTreeMap::new();
    if let Some(totals) = self_paid.get(&month) {
        // Keys sort by org first: read only this org's range.
        let from = totals.partition_point(|((org_id, _, _), _)| org_id.as_str() < org.org_id.as_str());
        for ((org_id, member, product), total) in &totals[from..] {
            if *org_id != org.org_id {
                break;
            }
            let joined_late = org
                .member(*member)
                .is_some_and(|m| m.uin != org.management_uin && m.joined_at > month.start());
            if !joined_late {
                *data.entry((*member, product.as_str())).or_default() += *total;
            }
        }
    }
    for h in history.get(&(org.org_id.as_str(), month)).into_iter().flatten() {
        *data.entry((h.member_uin, h.product.as_str())).or_default() += h.total;
    }
    data
}

/// One org's rows of one month: by total descending, then by key ascending (a
/// member's UIN numerically, a product's code as text), each with its share of
/// the org's total and its rank; `name` gives a row's member name.
fn ranked<K: Ord + std::fmt::Display>(org: &Org, month: Month, totals: BTreeMap<K, Money>, name: impl Fn(&K) -> Option<String>) -> Vec<OverviewRow> {
    let org_total: Money = totals.values().copied().sum();
    let mut rows: Vec<(K, Money)> = totals.into_iter().collect();
    rows.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    rows.into_iter()
        .enumerate()
        .map(|(i, (key, total))| OverviewRow {
            org_id: org.org_id.clone(),
            month,
            member_name: name(&key),
            key: key.to_string(),
            total,
            share: ratio_half_away_from_zero(i128::from(total.fen()), i128::from(org_total.fen()), 4),
            rank: i as u64 + 1,
        })
        .collect()
}

/// The self-paid totals of each month (`MonthAggregates::self_paid`): all the
/// overview reads of the month aggregates.
pub type SelfPaidByMonth<'a> = BTreeMap<Month, &'a [(SelfPaidKey, Money)]>;

/// The self-paid totals of each of `aggregates`' months.
pub fn self_paid_of(aggregates: &BTreeMap<Month, MonthAggregates>) -> SelfPaidByMonth<'_> {
    aggregates.iter().map(|(m, a)| (*m, a.self_paid.as_slice())).collect()
}

/// The history rows by (organization, month), for `overview_of`.
pub type HistoryIndex<'h> = BTreeMap<(&'h str, Month), Vec<&'h HistoryRow>>;

/// `history` indexed by (organization, month).
pub fn history_index(history: &[HistoryRow]) -> HistoryIndex<'_> {
    let mut index: HistoryIndex = BTreeMap::new();
    for h in history {
        index.entry((h.org_id.as_str(), h.month)).or_default().push(h);
    }
    index
}

/// The overview tables of `months` for every org (the six-month window, or the one
/// month of a month-to-date view), and a summary row per org when `with_summary`.
pub fn overview(
    snapshot: &Snapshot,
    self_paid: &SelfPaidByMonth,
    history: &[HistoryRow],
    end_month: Month,
    months_back: usize,
    with_summary: bool,
) -> Overview {
    overview_of(&snapshot.orgs, self_paid, &history_index(history), end_month, months_back, with_summary)
}

/// `overview` of the organizations `orgs` only (consecutive organizations of a
/// snapshot give consecutive stretches of its tables: `reports::overview_files`).
pub fn overview_of(
    orgs: &[Org],
    self_paid: &SelfPaidByMonth,
    history_by_org: &HistoryIndex,
    end_month: Month,
    months_back: usize,
    with_summary: bool,
) -> Overview {
    use rayon::prelude::*;
    // Each org's tables on whichever core is free, joined in org order.
    let per_org: Vec<Overview> = orgs
        .par_iter()
        .map(|org| {
            let mut out = Overview::default();
            let mut months = window(org, end_month);
            if months.len() > months_back {
                months.drain(..months.len() - months_back);
            }
            let mut window_total = Money::ZERO;
            for &month in &months {
                let data = month_data(org, month, self_paid, history_by_org);
                let mut by_member: BTreeMap<Uin, Money> = BTreeMap::new();
                let mut by_product: BTreeMap<&str, Money> = BTreeMap::new();
                for ((member, product), total) in data {
                    *by_member.entry(member).or_default() += total;
                    *by_product.entry(product).or_default() += total;
                    window_total += total;
                }
                let name = |member: &Uin| Some(org.member(*member).map(|m| m.name.clone()).unwrap_or_default());
                out.by_member.extend(ranked(org, month, by_member, name));
                out.by_product.extend(ranked(org, month, by_product, |_| None));
            }
            if with_summary && !months.is_empty() {
                let n = months.len() as i128;
                let average = ratio_half_away_from_zero(i128::from(window_total.fen()), n * 100, 2);
                out.summary.push(SummaryRow {
                    org_id: org.org_id.clone(),
                    window_start: months[0],
                    window_end: *months.last().expect("non-empty"),
                    months: months.len() as u64,
                    total: window_total,
                    monthly_average: Money::parse(&average).expect("a two-decimal ratio"),
                });
            }
            out
        })
        .collect();
    let mut out = Overview::default();
    for part in per_org {
        out.by_member.extend(part.by_member);
        out.by_product.extend(part.by_product);
        out.summary.extend(part.summary);
    }
    // Sorted by org, month, rank: orgs are in org_id order and months ascend.
    out
}

/// The merged bill of `month`: rows in key order.
pub fn merged_bill(aggregates: &BTreeMap<Month, MonthAggregates>, month: Month) -> Vec<(&crate::state::BillKey, &BillSums)> {
    aggregates.get(&month).map(|a| a.merged.iter().map(|(k, v)| (k, v)).collect()).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The merged-bill and self-paid keys by their texts, to compare sums with.
    type CheapBillKey<'a> = (Month, &'a str, Uin, Uin, &'a str, &'a str, &'a str);
    type SelfPaidCheapKey<'a> = (Month, &'a str, Uin, &'a str);

    /// Two organizations: org-a (10 managing, 11 with the merged bill, 12
    /// without) and org-b (20 managing, 21 paid for by 20 in October), and 60
    /// lines of theirs in an order that alternates the organizations, two
    /// products and two months, one line not settled.
    fn two_organizations_and_their_lines() -> (Snapshot, Vec<LedgerLine>) {
        let member = |uin: u64, mode: &str, permissions: &str, payer: &str| {
            format!(
                r#"{{"uin":{uin},"entity_id":"e","dept_id":"root","join_mode":"{mode}","joined_at":"2026-01-01T00:00:00+08:00","permissions":[{permissions}],"payer_periods":[{payer}]}}"#
            )
        };
        let org = |id: &str, manager: u64, members: &[String]| {
            format!(
                r#"{{"org_id":"{id}","created_at":"2026-01-01T00:00:00+08:00","management_uin":{manager},"entities":[{{"entity_id":"e"}}],"departments":[{{"dept_id":"root"}}],"members":[{}]}}"#,
                members.join(",")
            )
        };
        let json = format!(
            r#"{{"snapshot_at":"2026-10-01T00:00:00+08:00","orgs":[{},{}]}}"#,
            org("org-a", 10, &[member(10, "management", "", ""), member(11, "invited", r#""merged_bill""#, ""), member(12, "invited", "", "")]),
            org(
                "org-b",
                20,
                &[
                    member(20, "management", "", ""),
                    member(21, "invited", "", r#"{"payer_uin":20,"from":"2026-10-01T00:00:00+08:00","to":"2026-11-01T00:00:00+08:00"}"#)
                ]
            ),
        );
        let snapshot = Snapshot::from_json(json.as_bytes()).unwrap();
        let (cvm, cdn) = (crate::ids::intern_product("cvm"), crate::ids::intern_product("cdn"));
        let mut lines = Vec::new();
        for i in 0..60u64 {
            let owner = [10, 20, 11, 21, 12, 10, 21][(i % 7) as usize];
            let payer = if owner == 21 && i % 3 != 0 { 20 } else { owner };
            let hour = if i % 5 == 0 { ("2026-11-01T03:00:00+08:00", "2026-11-01T04:00:00+08:00") } else { ("2026-10-31T03:00:00+08:00", "2026-10-31T04:00:00+08:00") };
            let mut line = LedgerLine::settled_postpaid((owner, payer), crate::time::Cycle::Hourly, hour, None, 100 + i as i64);
            line.product = if i % 4 == 0 { cdn } else { cvm };
            if i == 13 {
                line.status = LineStatus::PaymentFailed;
            }
            lines.push(line);
        }
        (snapshot, lines)
    }

    /// The sums by their text keys, as one lookup of the account index a line
    /// finds them.
    #[allow(clippy::type_complexity)]
    fn expected_sums<'a>(snapshot: &'a Snapshot, lines: &'a [LedgerLine]) -> (BTreeMap<CheapBillKey<'a>, (u64, Money)>, BTreeMap<SelfPaidCheapKey<'a>, Money>) {
        let mut merged: BTreeMap<CheapBillKey<'_>, (u64, Money)> = BTreeMap::new();
        let mut self_paid: BTreeMap<SelfPaidCheapKey<'_>, Money> = BTreeMap::new();
        for line in lines {
            let (org, _) = snapshot.find(line.owner_uin).unwrap();
            let month = line.bill_month.get();
            if let Some((bill_owner, mode)) = merged_bill_owner(org, line) {
                let key = (month, org.org_id.as_str(), bill_owner, line.owner_uin, mode, line.product.as_str(), line.kind.as_str());
                let entry = merged.entry(key).or_insert((0, Money::ZERO));
                *entry = (entry.0 + 1, entry.1 + line.payable_amount);
            }
            if is_self_paid(org, line) {
                *self_paid.entry((month, org.org_id.as_str(), line.owner_uin, line.product.as_str())).or_insert(Money::ZERO) += line.payable_amount;
            }
        }
        (merged, self_paid)
    }

    #[test]
    fn lines_of_organizations_interleaved_are_summed_under_their_own() {
        let (snapshot, lines) = two_organizations_and_their_lines();
        // What the sums must be, by the text keys.
        let (merged, self_paid) = expected_sums(&snapshot, &lines);
        // The lines added at once, and a run of them at a time (keys met again in
        // later runs, and new ones among them).
        let mut all_merged = Vec::new();
        for run in [60, 1, 2, 7] {
            let mut sums = LineSumsBuilder::default();
            lines.chunks(run).for_each(|run| sums.add(&snapshot, run.iter()));
            let (owned_merged, owned_self_paid) = sums.owned(&snapshot);
            // Month by month, each month's entries in key order.
            for (months, keys) in [
                (owned_merged.iter().map(|(m, _)| *m).collect::<Vec<_>>(), owned_merged.iter().all(|(_, l)| l.windows(2).all(|w| w[0].0 < w[1].0))),
                (owned_self_paid.iter().map(|(m, _)| *m).collect(), owned_self_paid.iter().all(|(_, l)| l.windows(2).all(|w| w[0].0 < w[1].0))),
            ] {
                assert!(months.windows(2).all(|w| w[0] < w[1]) && keys, "runs of {run} lines");
            }
            let got_merged: Vec<_> = owned_merged
                .iter()
                .flat_map(|(m, list)| list.iter().map(move |(k, s)| (*m, k, s)))
                .map(|(m, (o, b, u, mode, p, k), s)| ((m, o.as_str(), *b, *u, mode.as_str(), p.as_str(), k.as_str()), (s.lines, s.payable)))
                .collect();
            let got_self_paid: Vec<_> =
                owned_self_paid.iter().flat_map(|(m, list)| list.iter().map(move |((o, u, p), t)| ((*m, o.as_str(), *u, p.as_str()), *t))).collect();
            assert_eq!(got_merged, merged.clone().into_iter().collect::<Vec<_>>(), "runs of {run} lines");
            assert_eq!(got_self_paid, self_paid.clone().into_iter().collect::<Vec<_>>(), "runs of {run} lines");
            // Every sum, not only the two compared above.
            let every: Vec<_> = owned_merged
                .into_iter()
                .flat_map(|(m, list)| list.into_iter().map(move |(k, s)| (m, k, s.lines, s.list, s.discount, s.payable, s.voucher, s.cash, s.gift, s.credit)))
                .collect();
            all_merged.push(every);
        }
        assert!(all_merged.windows(2).all(|w| w[0] == w[1]));
        let got_merged: Vec<_> = merged.into_iter().collect();
        // One entry spelled out: org-b's 21, paid for by 20 in October, for cvm.
        let october = crate::time::Day::parse("2026-10-31").unwrap().month();
        let key = (october, "org-b", 20, 21, "payer", "cvm", "postpaid");
        let paid_by_20: Vec<u64> = (0..60).filter(|i| [10, 20, 11, 21, 12, 10, 21][i % 7] == 21 && i % 3 != 0 && i % 5 != 0 && i % 4 != 0).map(|i| 100 + i as u64).collect();
        assert_eq!(paid_by_20, [113, 117, 131, 134, 138, 141, 159]);
        // Line 13 was not settled: six lines, 8.20.
        assert_eq!(got_merged.iter().find(|(k, _)| *k == key).map(|(_, v)| *v), Some((6, Money::from_fen(820))));
    }

    /// A fold's sums by their text keys: (lines, payable in fen) of each
    /// merged-bill entry, the total of each self-paid one.
    #[allow(clippy::type_complexity)]
    fn by_text(months: &BTreeMap<Month, MonthAggregates>) -> (Vec<(CheapBillKey<'_>, (u64, i64))>, Vec<(SelfPaidCheapKey<'_>, Money)>) {
        let merged = months
            .iter()
            .flat_map(|(m, a)| a.merged.iter().map(move |(k, s)| (*m, k, s)))
            .map(|(m, (o, b, u, mode, p, k), s)| ((m, o.as_str(), *b, *u, mode.as_str(), p.as_str(), k.as_str()), (s.lines, s.payable.fen())))
            .collect();
        let self_paid = months.iter().flat_map(|(m, a)| a.self_paid.iter().map(move |((o, u, p), t)| ((*m, o.as_str(), *u, p.as_str()), *t))).collect();
        (merged, self_paid)
    }

    /// The day's sums of `builders` folded into the months `old` holds as a day
    /// folds them (`plan_fold`, then `write_folded_month`), each month's old and
    /// new file in memory; the new files decoded, and the months that changed.
    fn fold_through_files(
        builders: Vec<LineSumsBuilder>,
        snapshot: &Snapshot,
        old: &BTreeMap<Month, MonthAggregates>,
    ) -> (BTreeMap<Month, MonthAggregates>, std::collections::BTreeSet<Month>) {
        let sums = day_sums_by_month(builders, snapshot);
        let changed = sums.months();
        let DayMonthSums { mut merged, mut self_paid } = sums;
        let mut folded = BTreeMap::new();
        for month in changed.iter().chain(old.keys()).copied().collect::<std::collections::BTreeSet<_>>() {
            let before = old.get(&month).map(crate::state::encode_month);
            let (merged, self_paid) = (merged.remove(&month).unwrap_or_default(), self_paid.remove(&month).unwrap_or_default());
            let fold = plan_fold(before.as_deref(), merged, self_paid).unwrap();
            let mut after = Vec::new();
            write_folded_month(before.as_deref(), &fold, &mut after).unwrap();
            let month_after = crate::state::decode_month(&after).unwrap();
            assert_eq!(month_after.merged.len() as u64, fold.merged_len);
            assert_eq!(month_after.self_paid, fold.self_paid, "the fold holds the month's self-paid totals as written");
            folded.insert(month, month_after);
        }
        (folded, changed)
    }

    #[test]
    fn the_days_sums_fold_into_the_months_in_key_order_whatever_the_builders_order() {
        let (snapshot, lines) = two_organizations_and_their_lines();
        let (merged, self_paid) = expected_sums(&snapshot, &lines);
        let builder = |org: &str| {
            let mut b = LineSumsBuilder::default();
            b.add(&snapshot, lines.iter().filter(|l| snapshot.find(l.owner_uin).unwrap().0.org_id == org));
            b
        };
        let every = || {
            let mut b = LineSumsBuilder::default();
            b.add(&snapshot, lines.iter());
            b
        };
        let expected_merged: Vec<_> = merged.iter().map(|(k, (n, t))| (*k, (*n, t.fen()))).collect();
        let expected_self_paid: Vec<_> = self_paid.into_iter().collect();
        let mut first = None;
        // In organization order (each builder's entries sorted, the lists are), out
        // of it (the lists sorted whole), one builder of both, and an empty one.
        for (case, builders) in [
            ("in order", vec![builder("org-a"), builder("org-b")]),
            ("reversed", vec![builder("org-b"), builder("org-a")]),
            ("one builder", vec![every()]),
            ("with an empty one", vec![builder("org-a"), LineSumsBuilder::default(), builder("org-b")]),
        ] {
            let (months, changed) = fold_through_files(builders, &snapshot, &BTreeMap::new());
            assert_eq!(changed.len(), 2, "{case}");
            assert!(months.values().all(|a| a.merged.windows(2).all(|w| w[0].0 < w[1].0) && a.self_paid.windows(2).all(|w| w[0].0 < w[1].0)), "{case}");
            assert_eq!(by_text(&months), (expected_merged.clone(), expected_self_paid.clone()), "{case}");
            first.get_or_insert(months);
        }
        // Folded again into what the first fold made (read from its files, as a
        // later day reads them): every key met, each sum doubled, none added.
        let first = first.unwrap();
        let again = fold_through_files(vec![builder("org-b"), builder("org-a")], &snapshot, &first).0;
        let doubled_merged: Vec<_> = expected_merged.iter().map(|(k, (n, t))| (*k, (2 * n, 2 * t))).collect();
        let doubled_self_paid: Vec<_> = expected_self_paid.iter().map(|(k, t)| (*k, *t + *t)).collect();
        assert_eq!(by_text(&again), (doubled_merged, doubled_self_paid));
    }

    /// The overview files made a few organizations at a time
    /// (`reports::overview_files`) are the whole tables rendered at once, with
    /// history rows among the months' sums.
    #[test]
    fn overview_files_made_a_few_organizations_at_a_time_are_the_whole_tables() {
        let (snapshot, lines) = two_organizations_and_their_lines();
        let mut sums = LineSumsBuilder::default();
        sums.add(&snapshot, lines.iter());
        let (months, _) = fold_through_files(vec![sums], &snapshot, &BTreeMap::new());
        let months = self_paid_of(&months);
        let november = crate::time::Day::parse("2026-11-01").unwrap().month();
        let history = [HistoryRow { org_id: "org-b".into(), month: november.prev().prev(), member_uin: 21, product: "cdn".into(), total: Money::from_fen(1234) }];
        for (months_back, with_summary, rows) in [(6, true, (11, 8)), (1, false, (5, 3))] {
            let whole = overview(&snapshot, &months, &history, november, months_back, with_summary);
            assert_eq!((whole.by_member.len(), whole.by_product.len()), rows, "{months_back}");
            assert!(["org-a", "org-b"].iter().all(|o| whole.by_member.iter().any(|r| r.org_id == *o)), "{months_back}");
            assert_eq!(whole.summary.len(), if with_summary { 2 } else { 0 });
            let expected = (
                crate::reports::overview_by_member_csv(&whole.by_member),
                crate::reports::overview_by_product_csv(&whole.by_product),
                crate::reports::overview_summary_csv(&whole.summary),
            );
            for at_once in [1, 2, crate::reports::OVERVIEW_ORGS_AT_ONCE] {
                let files = crate::reports::overview_files(&snapshot, &months, &history, november, months_back, with_summary, at_once);
                assert_eq!((files.by_member, files.by_product, files.summary), expected, "{months_back} months, {at_once} at once");
            }
        }
    }

    /// A merged-bill key of organization `o`, member `u`.
    fn key(o: u64, u: u64) -> BillKey {
        (format!("org-{o:05}").into(), u, u + 1, PayMode::Payer, ProductName(crate::ids::intern_product("cvm")), LineKind::Postpaid)
    }

    fn sums(fen: i64) -> BillSums {
        BillSums { lines: 1, list: Money::from_fen(fen), payable: Money::from_fen(-fen), ..BillSums::default() }
    }

    #[test]
    fn a_month_file_folded_as_it_is_copied_is_the_month_folded_in_memory() {
        // A month of 40,000 entries (over a megabyte: more than one window of the
        // reader), and day sums that meet some of its keys and bring new ones
        // before its first, among its own and after its last.
        let month = MonthAggregates {
            merged: (0..40_000u64).map(|i| (key(2 * i + 1, i), sums(i as i64))).collect(),
            self_paid: (0..5_000u64).map(|i| ((format!("org-{:05}", 2 * i + 1).into(), i, ProductName(crate::ids::intern_product("cos"))), Money::from_fen(7))).collect(),
        };
        let new_merged: Vec<_> = [0u64, 1, 2, 3, 777, 20_000, 39_999, 40_000, 40_001, 50_000]
            .iter()
            .map(|&o| if o < 40_000 && o % 2 == 1 { (key(o, o / 2), sums(1000)) } else { (key(o, 9), sums(5)) })
            .collect();
        let new_self_paid = vec![
            (("org-00000".into(), 1, ProductName(crate::ids::intern_product("cos"))), Money::from_fen(1)),
            (("org-00003".into(), 1, ProductName(crate::ids::intern_product("cos"))), Money::from_fen(2)),
        ];
        let mut expected = month.clone();
        add_sorted(&mut expected.merged, new_merged.clone(), |a, b| add_sums(a, &b));
        add_sorted(&mut expected.self_paid, new_self_paid.clone(), |a, b| *a += b);
        let before = crate::state::encode_month(&month);
        let fold = plan_fold(Some(before.as_slice()), new_merged.clone(), new_self_paid.clone()).unwrap();
        assert_eq!(fold.merged_len, 40_000 + 6, "four keys met, six new");
        let mut after = Vec::new();
        write_folded_month(Some(before.as_slice()), &fold, &mut after).unwrap();
        assert_eq!(after, crate::state::encode_month(&expected), "byte for byte the month folded in memory");
        assert_eq!(crate::state::decode_month(&after).unwrap().merged[1], (key(1, 0), BillSums { lines: 2, list: Money::from_fen(1000), payable: Money::from_fen(-1000), ..BillSums::default() }));
        // A month with no file yet is the day's sums.
        let fresh = plan_fold(None::<&[u8]>, new_merged.clone(), new_self_paid.clone()).unwrap();
        let mut first = Vec::new();
        write_folded_month(None::<&[u8]>, &fresh, &mut first).unwrap();
        assert_eq!(first, crate::state::encode_month(&MonthAggregates { merged: new_merged.clone(), self_paid: new_self_paid.clone() }));
        // A file out of key order, cut short or with bytes after its end is refused
        // when the fold is planned; one that changed before it is copied, then.
        let mut swapped = month.clone();
        swapped.merged.swap(10, 11);
        let err = plan_fold(Some(crate::state::encode_month(&swapped).as_slice()), new_merged.clone(), Vec::new()).unwrap_err();
        assert!(err.contains("out of key order"), "{err}");
        assert!(plan_fold(Some(&before[..before.len() - 1]), new_merged.clone(), Vec::new()).is_err());
        let err = plan_fold(Some([before.as_slice(), &[0]].concat().as_slice()), new_merged.clone(), Vec::new()).unwrap_err();
        assert!(err.contains("1 bytes after the end"), "{err}");
        let mut shorter = month.clone();
        shorter.merged.pop();
        let err = write_folded_month(Some(crate::state::encode_month(&shorter).as_slice()), &fold, &mut Vec::new()).unwrap_err();
        assert!(err.contains("changed while folded"), "{err}");
    }

    #[test]
    fn sums_are_added_in_place_and_lacking_keys_merged_in_order() {
        let mut list: Vec<(u32, i64)> = Vec::new();
        add_sorted(&mut list, vec![(3, 30), (5, 50)], |a, b| *a += b);
        assert_eq!(list, [(3, 30), (5, 50)]);
        add_sorted(&mut list, vec![(1, 1), (3, 3), (4, 4), (5, 5), (9, 9)], |a, b| *a += b);
        assert_eq!(list, [(1, 1), (3, 33), (4, 4), (5, 55), (9, 9)]);
        add_sorted(&mut list, vec![(3, -33)], |a, b| *a += b);
        assert_eq!(list, [(1, 1), (3, 0), (4, 4), (5, 55), (9, 9)]);
        add_sorted(&mut list, Vec::new(), |a, b| *a += b);
        assert_eq!(list.len(), 5);
    }

    #[test]
    fn lacking_keys_are_merged_into_the_lists_room_without_moving_it() {
        let mut list: Vec<(u32, i64)> = Vec::with_capacity(8);
        list.extend([(2, 2), (4, 4), (6, 6)]);
        let at = list.as_ptr();
        add_sorted(&mut list, vec![(1, 1), (4, 40), (5, 5), (7, 7)], |a, b| *a += b);
        assert_eq!(list, [(1, 1), (2, 2), (4, 44), (5, 5), (6, 6), (7, 7)]);
        assert_eq!(list.as_ptr(), at, "merged within the room the list had");
    }

    proptest::proptest! {
        /// Any month and any day's sums: the month's new file, folded as it is
        /// copied, is byte for byte the month folded in memory and written whole.
        #[test]
        fn a_month_folded_through_its_file_is_the_month_summed_by_key(
            old in proptest::collection::btree_map((0u64..60, 0u64..4), -100_000i64..100_000, 0..150),
            new in proptest::collection::btree_map((0u64..60, 0u64..4), -100_000i64..100_000, 0..80),
            old_paid in proptest::collection::btree_map(0u64..50, -999i64..999, 0..40),
            new_paid in proptest::collection::btree_map(0u64..50, -999i64..999, 0..40),
            has_file: bool,
        ) {
            let merged = |m: &BTreeMap<(u64, u64), i64>| -> Vec<(BillKey, BillSums)> { m.iter().map(|(&(o, u), &fen)| (key(o, u), sums(fen))).collect() };
            let cos = ProductName(crate::ids::intern_product("cos"));
            let paid = |m: &BTreeMap<u64, i64>| -> Vec<(SelfPaidKey, Money)> { m.iter().map(|(&u, &fen)| (("org-1".into(), u, cos), Money::from_fen(fen))).collect() };
            let month = if has_file { MonthAggregates { merged: merged(&old), self_paid: paid(&old_paid) } } else { MonthAggregates::default() };
            let mut expected = month.clone();
            add_sorted(&mut expected.merged, merged(&new), |a, b| add_sums(a, &b));
            add_sorted(&mut expected.self_paid, paid(&new_paid), |a, b| *a += b);
            let before = has_file.then(|| crate::state::encode_month(&month));
            let fold = plan_fold(before.as_deref(), merged(&new), paid(&new_paid)).unwrap();
            let mut after = Vec::new();
            write_folded_month(before.as_deref(), &fold, &mut after).unwrap();
            proptest::prop_assert_eq!(after, crate::state::encode_month(&expected));
        }

        #[test]
        fn adding_sorted_entries_equals_summing_them_by_key(
            old in proptest::collection::btree_map(0u16..400, -1000i64..1000, 0..80),
            new in proptest::collection::btree_map(0u16..400, -1000i64..1000, 0..80),
        ) {
            let mut expected = old.clone();
            for (k, v) in &new {
                *expected.entry(*k).or_default() += v;
            }
            let mut list: Vec<(u16, i64)> = old.into_iter().collect();
            add_sorted(&mut list, new.into_iter().collect(), |a, b| *a += b);
            proptest::prop_assert_eq!(list, expected.into_iter().collect::<Vec<_>>());
        }

        #[test]
        fn adding_a_run_in_any_order_equals_summing_it_by_key(
            old in proptest::collection::btree_map(0u16..2000, -1000i64..1000, 0..300),
            run in proptest::collection::vec((0u16..2000, -1000i64..1000), 0..120),
            repeats in 0usize..4,
        ) {
            // Keys repeated within the run, a few or many against a short or long list
            // (the search gallops over long stretches).
            let run: Vec<(u16, i64)> = run.iter().chain(run.iter().take(repeats * 10)).copied().collect();
            let mut expected = old.clone();
            for (k, v) in &run {
                *expected.entry(*k).or_default() += v;
            }
            let mut list: Vec<(u16, i64)> = old.into_iter().collect();
            // The lists are reused: each holds entries of an earlier run.
            let (mut run, mut lacking) = (run, vec![(0, 0); 3]);
            add_run(&mut list, &mut run, &mut lacking, |a, b| *a += b);
            proptest::prop_assert!(run.is_empty());
            proptest::prop_assert_eq!(list, expected.into_iter().collect::<Vec<_>>());
        }
    }

    #[test]
    fn the_first_key_not_below_is_found_from_any_start_before_it() {
        let list: Vec<(u32, ())> = [1, 3, 3, 5, 8, 13, 21, 34, 55, 89].iter().map(|k| (*k, ())).collect();
        for key in 0..100 {
            let expected = list.partition_point(|(k, _)| *k < key);
            for from in 0..=expected {
                assert_eq!(first_not_below(&list, from, &key), expected, "key {key} from {from}");
            }
        }
        assert_eq!(first_not_below::<u32, ()>(&[], 0, &7), 0);
    }

    #[test]
    fn ties_rank_members_by_uin_as_a_number_and_products_by_code() {
        let (snapshot, _) = two_organizations_and_their_lines();
        let org = &snapshot.orgs[0];
        let october = crate::time::Day::parse("2026-10-31").unwrap().month();
        let fen = Money::from_fen;
        // 9 and 10 tie: as text "10" would come first.
        let members = BTreeMap::from([(10, fen(500)), (9, fen(500)), (11, fen(250)), (12, fen(-100))]);
        let rows = ranked(org, october, members, |m: &Uin| Some(format!("m{m}")));
        let got: Vec<_> = rows.iter().map(|r| (r.key.as_str(), r.member_name.as_deref(), r.total, r.share.as_str(), r.rank)).collect();
        assert_eq!(
            got,
            [
                ("9", Some("m9"), fen(500), "0.4348", 1),
                ("10", Some("m10"), fen(500), "0.4348", 2),
                ("11", Some("m11"), fen(250), "0.2174", 3),
                ("12", Some("m12"), fen(-100), "-0.0870", 4)
            ]
        );
        assert!(rows.iter().all(|r| r.org_id == "org-a" && r.month == october));
        let products = BTreeMap::from([("cvm", fen(100)), ("cbs", fen(100)), ("cdn", fen(300))]);
        let rows = ranked(org, october, products, |_| None);
        let got: Vec<_> = rows.iter().map(|r| (r.key.as_str(), r.member_name.clone(), r.share.as_str(), r.rank)).collect();
        assert_eq!(got, [("cdn", None, "0.6000", 1), ("cbs", None, "0.2000", 2), ("cvm", None, "0.2000", 3)]);
    }

    #[test]
    fn shares_round_half_away_from_zero() {
        assert_eq!(ratio_half_away_from_zero(1, 3, 4), "0.3333");
        assert_eq!(ratio_half_away_from_zero(2, 3, 4), "0.6667");
        assert_eq!(ratio_half_away_from_zero(-1, 8, 4), "-0.1250");
        assert_eq!(ratio_half_away_from_zero(1, 20000, 4), "0.0001");
        assert_eq!(ratio_half_away_from_zero(-1, 20000, 4), "-0.0001");
        assert_eq!(ratio_half_away_from_zero(5, 0, 4), "0.0000");
        assert_eq!(ratio_half_away_from_zero(3, -2, 4), "-1.5000");
        // A monthly average: 100.01 over 3 months = 33.336… → 33.34.
        assert_eq!(ratio_half_away_from_zero(10001, 300, 2), "33.34");
    }
}
