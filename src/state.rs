//! The engine's own state between runs (SPEC §12): balances, service states,
//! voucher use, remembered ids, refund bases and transfer sources.
//!
//! Invariant: a state file is written whole (aside, then renamed) and names the
//! day it follows; `state/D.json` existing means day D is settled and committed.

use crate::ids::Uin;
use crate::money::Money;
use crate::time::{Day, Month};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// Bumped whenever the layout changes incompatibly.
pub const STATE_FORMAT: u32 = 2;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountState {
    pub cash: Money,
    pub gift: Money,
    pub credit_limit: Money,
    pub suspended: bool,
}

impl AccountState {
    pub fn in_arrears(&self) -> bool {
        self.cash < -self.credit_limit
    }
}

/// A remembered usage record: the month of the run that accepted it (ids are kept
/// for that month and the next) and the digest of its content.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SeenUsage {
    pub month: Month,
    pub content: u128,
}

/// Ids of accepted rows with a digest of their content (§4.2 duplicates).
///
/// Usage record ids, millions a day, are kept by the xxh3-128 digest of the id
/// text (two ids collide with probability ~n²/2^129) and stored beside the state
/// in a compact binary file (`state/D.usage-ids`), not in its JSON.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeenIds {
    #[serde(skip)]
    pub usage: UsageIds,
    /// How many usage ids the binary file beside the state holds (checked on load).
    pub usage_count: u64,
    pub orders: BTreeMap<String, String>,
    pub recharges: BTreeMap<String, String>,
    pub transfers: BTreeMap<String, String>,
}

/// How many shards usage ids are kept in.
pub const ID_SHARDS: usize = 64;

/// Remembered usage ids in `ID_SHARDS` tables by the top bits of the id digest:
/// the shards are checked and written in parallel, and the concatenation of the
/// sorted shards is sorted by digest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UsageIds {
    shards: Vec<rustc_hash::FxHashMap<u128, SeenUsage>>,
}

impl Default for UsageIds {
    fn default() -> UsageIds {
        UsageIds { shards: (0..ID_SHARDS).map(|_| Default::default()).collect() }
    }
}

impl UsageIds {
    pub fn shard_of(id: u128) -> usize {
        (id >> (128 - ID_SHARDS.trailing_zeros())) as usize
    }
    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| s.len()).sum()
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    pub fn get(&self, id: u128) -> Option<&SeenUsage> {
        self.shards[Self::shard_of(id)].get(&id)
    }
    pub fn insert(&mut self, id: u128, seen: SeenUsage) {
        self.shards[Self::shard_of(id)].insert(id, seen);
    }
    pub fn retain(&mut self, keep: impl Fn(&SeenUsage) -> bool + Sync) {
        use rayon::prelude::*;
        self.shards.par_iter_mut().for_each(|s| s.retain(|_, v| keep(v)));
    }
    /// Make room for about `additional` more ids.
    pub fn reserve(&mut self, additional: usize) {
        for s in &mut self.shards {
            s.reserve(additional / ID_SHARDS + 1);
        }
    }
    pub fn shards_mut(&mut self) -> &mut [rustc_hash::FxHashMap<u128, SeenUsage>] {
        &mut self.shards
    }
}

/// The FOCUS rows of one bill month in a day's `focus_lines.csv`: a day's rows are
/// in processing order, whose time decides the bill month, so each month's rows
/// are one byte range.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FocusPart {
    pub day: Day,
    pub offset: u64,
    pub len: u64,
    pub rows: u64,
    /// Σ BilledCost of the rows.
    pub billed: Money,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransferSource {
    pub org_id: String,
    pub member_uin: Uin,
    pub amount: Money,
    /// What accepted `out` transfers have already returned from it.
    pub drawn: Money,
}

/// Refund bases of one organization: resource → payer → basis (§8).
pub type Bases = BTreeMap<String, BTreeMap<Uin, Money>>;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    pub format: u32,
    /// The last settled day.
    pub day: Day,
    /// The first day ever processed: months before its month count as closed.
    pub first_day: Day,
    /// Closed months, read from the output directory for each run (not stored: a
    /// close happens after the day it follows was committed).
    #[serde(skip)]
    pub closed_months: BTreeSet<Month>,
    pub accounts: BTreeMap<Uin, AccountState>,
    pub vouchers_used: BTreeMap<String, Money>,
    pub seen: SeenIds,
    pub refund_bases: BTreeMap<String, Bases>,
    pub transfer_sources: BTreeMap<String, TransferSource>,
    /// Per bill month: merged-bill sums and self-paid totals (SPEC §11.3), so a
    /// close reads aggregates, never raw days.
    pub months: BTreeMap<Month, MonthAggregates>,
    /// Where the FOCUS rows of each month not yet closed are, so the close copies
    /// bytes instead of reading rows.
    pub focus_parts: BTreeMap<Month, Vec<FocusPart>>,
}

/// One merged-bill row's sums (SPEC §11.3).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BillSums {
    pub lines: u64,
    pub list: Money,
    pub discount: Money,
    pub payable: Money,
    pub voucher: Money,
    pub cash: Money,
    pub gift: Money,
    pub credit: Money,
}

/// (org_id, bill_owner_uin, member_uin, pay_mode, product, kind): the merged-bill key.
pub type BillKey = (String, Uin, Uin, String, String, String);
/// (org_id, member_uin, product): the self-paid key.
pub type SelfPaidKey = (String, Uin, String);

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MonthAggregates {
    #[serde(with = "as_pairs")]
    pub merged: BTreeMap<BillKey, BillSums>,
    /// Self-paid totals that pass the line rules of §11.3 (the joined-in-month rule
    /// is applied when the overview is drawn).
    #[serde(with = "as_pairs")]
    pub self_paid: BTreeMap<SelfPaidKey, Money>,
}

/// JSON object keys must be strings: store maps with tuple keys as [key, value] pairs.
mod as_pairs {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};
    use std::collections::BTreeMap;

    pub fn serialize<K: Serialize, V: Serialize, S: Serializer>(map: &BTreeMap<K, V>, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(map.iter())
    }
    pub fn deserialize<'de, K: Deserialize<'de> + Ord, V: Deserialize<'de>, D: Deserializer<'de>>(
        d: D,
    ) -> Result<BTreeMap<K, V>, D::Error> {
        let pairs: Vec<(K, V)> = Vec::deserialize(d)?;
        Ok(pairs.into_iter().collect())
    }
}

impl State {
    pub fn is_month_closed(&self, month: Month) -> bool {
        month < self.first_day.month() || self.closed_months.contains(&month)
    }
}

impl Default for Month {
    fn default() -> Month {
        Month { year: 1970, month: 1 }
    }
}

macro_rules! serde_as_string {
    ($t:ty, $parse:expr, $what:literal) => {
        impl Serialize for $t {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.to_string())
            }
        }
        impl<'de> Deserialize<'de> for $t {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<$t, D::Error> {
                let text = String::deserialize(d)?;
                $parse(&text).ok_or_else(|| serde::de::Error::custom(format!("bad {} {text:?}", $what)))
            }
        }
    };
}

serde_as_string!(Day, Day::parse, "day");
serde_as_string!(Month, Month::parse, "month");

impl SeenIds {
    /// The binary form of the usage ids: sorted by id digest, 36 bytes each
    /// (id digest, content digest, year, month), little-endian.
    pub fn encode_usage(&self) -> Vec<u8> {
        use rayon::prelude::*;
        let parts: Vec<Vec<u8>> = self
            .usage
            .shards
            .par_iter()
            .map(|shard| {
                let mut entries: Vec<(&u128, &SeenUsage)> = shard.iter().collect();
                entries.sort_unstable_by_key(|e| *e.0);
                let mut out = Vec::with_capacity(entries.len() * 36);
                for (id, seen) in entries {
                    out.extend_from_slice(&id.to_le_bytes());
                    out.extend_from_slice(&seen.content.to_le_bytes());
                    out.extend_from_slice(&(seen.month.year as u16).to_le_bytes());
                    out.extend_from_slice(&(seen.month.month as u16).to_le_bytes());
                }
                out
            })
            .collect();
        parts.concat()
    }

    pub fn decode_usage(&mut self, bytes: &[u8]) -> Result<(), String> {
        use rayon::prelude::*;
        if bytes.len() % 36 != 0 || (bytes.len() / 36) as u64 != self.usage_count {
            return Err(format!("usage id file holds {} bytes, expected {} entries", bytes.len(), self.usage_count));
        }
        let entries: Vec<&[u8]> = bytes.chunks_exact(36).collect();
        let id_of = |c: &[u8]| u128::from_le_bytes(c[0..16].try_into().expect("16 bytes"));
        if entries.windows(2).any(|w| id_of(w[0]) >= id_of(w[1])) {
            return Err("usage id file is not sorted by id".into());
        }
        // Sorted by id, so each shard's entries are one run.
        let bounds: Vec<usize> =
            (0..=ID_SHARDS).map(|s| entries.partition_point(|c| UsageIds::shard_of(id_of(c)) < s)).collect();
        self.usage.shards = (0..ID_SHARDS)
            .into_par_iter()
            .map(|s| {
                entries[bounds[s]..bounds[s + 1]]
                    .iter()
                    .map(|c| {
                        let content = u128::from_le_bytes(c[16..32].try_into().expect("16 bytes"));
                        let year = u16::from_le_bytes([c[32], c[33]]) as i32;
                        let month = u16::from_le_bytes([c[34], c[35]]) as u32;
                        (id_of(c), SeenUsage { month: Month { year, month }, content })
                    })
                    .collect()
            })
            .collect();
        Ok(())
    }
}
