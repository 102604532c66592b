//! The organization snapshot (`org.json`, SPEC §3) and its validation (§3.1).
//!
//! Invariant: a `Snapshot` that exists has passed every rule of §3.1; code
//! downstream relies on that (one management account, payers in the same entity,
//! periods inside membership) and never re-checks it.

use crate::ids::{is_valid_id, is_valid_product, is_valid_uin, Uin};
use crate::time::Ts;
use serde::Deserialize;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;

#[derive(Deserialize)]
struct RawSnapshot {
    snapshot_at: String,
    #[serde(default)]
    inheritance_blacklist: Vec<String>,
    orgs: Vec<RawOrg>,
}

/// `RawSnapshot` with each organization's text found but not yet parsed.
#[derive(Deserialize)]
struct RawShell<'a> {
    snapshot_at: String,
    #[serde(default)]
    inheritance_blacklist: Vec<String>,
    #[serde(borrow)]
    orgs: Vec<&'a serde_json::value::RawValue>,
}

/// `org.json` parsed, its organizations on all cores (the serial parse was half
/// of loading a snapshot of 100k accounts). A file that does not parse is parsed
/// again in one piece, for the error to name its place in the whole file.
fn parse_raw(bytes: &[u8]) -> Result<RawSnapshot, serde_json::Error> {
    use rayon::prelude::*;
    let parsed = serde_json::from_slice::<RawShell>(bytes).and_then(|shell| {
        let orgs = shell.orgs.par_iter().map(|org| serde_json::from_str::<RawOrg>(org.get())).collect::<Result<Vec<_>, _>>()?;
        Ok(RawSnapshot { snapshot_at: shell.snapshot_at, inheritance_blacklist: shell.inheritance_blacklist, orgs })
    });
    parsed.or_else(|_| serde_json::from_slice::<RawSnapshot>(bytes))
}

#[derive(Deserialize)]
struct RawOrg {
    org_id: String,
    created_at: String,
    management_uin: u64,
    entities: Vec<RawEntity>,
    departments: Vec<RawDepartment>,
    members: Vec<RawMember>,
}

#[derive(Deserialize)]
struct RawEntity {
    entity_id: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    admin_uin: Option<u64>,
}

#[derive(Deserialize)]
struct RawDepartment {
    dept_id: String,
    #[serde(default)]
    #[allow(dead_code)]
    name: String,
    #[serde(default)]
    parent_id: Option<String>,
}

#[derive(Deserialize)]
struct RawMember {
    uin: u64,
    #[serde(default)]
    name: String,
    entity_id: String,
    dept_id: String,
    join_mode: String,
    joined_at: String,
    #[serde(default)]
    left_at: Option<String>,
    #[serde(default)]
    permissions: Vec<String>,
    #[serde(default)]
    has_account_level_discount: bool,
    #[serde(default)]
    payer_periods: Vec<RawPayerPeriod>,
}

#[derive(Deserialize)]
struct RawPayerPeriod {
    payer_uin: u64,
    from: String,
    #[serde(default)]
    to: Option<String>,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum JoinMode {
    Management,
    Created,
    Invited,
}

#[derive(Clone, Copy, Default, Debug)]
pub struct Permissions {
    pub fund_transfer: bool,
    pub invoice: bool,
    pub merged_bill: bool,
    pub discount_inheritance: bool,
    pub cost_analysis: bool,
}

#[derive(Clone, Debug)]
pub struct PayerPeriod {
    pub payer_uin: Uin,
    pub from: Ts,
    /// Exclusive; `None` = open-ended.
    pub to: Option<Ts>,
}

impl PayerPeriod {
    pub fn contains(&self, t: Ts) -> bool {
        self.from <= t && self.to.is_none_or(|to| t < to)
    }
}

#[derive(Clone, Debug)]
pub struct Member {
    pub uin: Uin,
    pub name: String,
    /// Whether `name` is quoted as a CSV field (known once: every FOCUS row
    /// writes two names, and scanning each was ~140 instructions).
    pub name_needs_quotes: bool,
    pub entity_id: String,
    pub dept_id: String,
    pub join_mode: JoinMode,
    pub joined_at: Ts,
    pub left_at: Option<Ts>,
    pub permissions: Permissions,
    pub has_account_level_discount: bool,
    pub payer_periods: Vec<PayerPeriod>,
}

impl Member {
    pub fn is_member_at(&self, t: Ts) -> bool {
        self.joined_at <= t && self.left_at.is_none_or(|left| t < left)
    }
    /// The payer in effect at `t` (unified-payer mode), if any.
    pub fn payer_at(&self, t: Ts) -> Option<Uin> {
        self.payer_periods.iter().find(|p| p.contains(t)).map(|p| p.payer_uin)
    }
}

#[derive(Clone, Debug)]
pub struct Entity {
    pub entity_id: String,
    pub name: String,
    pub admin_uin: Option<Uin>,
}

#[derive(Clone, Debug)]
pub struct Department {
    pub dept_id: String,
    pub parent_id: Option<String>,
}

#[derive(Clone, Debug)]
pub struct Org {
    pub org_id: String,
    /// The same id as its ledger lines name it (a copy made once, never freed).
    pub name: crate::engine::OrgName,
    pub created_at: Ts,
    pub management_uin: Uin,
    pub entities: Vec<Entity>,
    pub departments: Vec<Department>,
    /// Sorted by uin.
    pub members: Vec<Member>,
}

impl Org {
    pub fn member(&self, uin: Uin) -> Option<&Member> {
        self.members.binary_search_by_key(&uin, |m| m.uin).ok().map(|i| &self.members[i])
    }

    /// The instants at which some member's payer relation or membership changes,
    /// each with the accounts it changes (SPEC §4.4, rank 2).
    pub fn snapshot_instants(&self) -> BTreeMap<(Ts, Uin), ()> {
        let mut out = BTreeMap::new();
        for m in &self.members {
            out.insert((m.joined_at, m.uin), ());
            if let Some(left) = m.left_at {
                out.insert((left, m.uin), ());
            }
            for p in &m.payer_periods {
                out.insert((p.from, m.uin), ());
                if let Some(to) = p.to {
                    out.insert((to, m.uin), ());
                }
            }
        }
        out
    }
}

#[derive(Clone, Debug)]
pub struct Snapshot {
    pub snapshot_at: Ts,
    pub inheritance_blacklist: BTreeSet<String>,
    /// Sorted by org_id.
    pub orgs: Vec<Org>,
    /// uin → the account's card (where it is, and what checking and pricing a
    /// usage row needs of it).
    account_index: rustc_hash::FxHashMap<Uin, AccountCard>,
}

/// An account's place in the snapshot with what checking and pricing one of its
/// usage rows reads of its organization and member, copied beside it in the index:
/// a row's lookup then lands on one slot, not on the index, the organization and
/// the member struct, each a cache miss of its own at 10M rows (they were a tenth
/// of reading's time in a profile).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AccountCard {
    /// Index into `Snapshot::orgs`.
    pub org: u32,
    /// Index into that org's `members`.
    pub member: u32,
    pub org_created_at: Ts,
    pub management_uin: Uin,
    pub joined_at: Ts,
    pub discount_inheritance: bool,
}

impl Snapshot {
    pub fn load(path: &Path) -> Result<Snapshot, Vec<String>> {
        let text = std::fs::read(path).map_err(|e| vec![format!("org.json: cannot read {}: {e}", path.display())])?;
        Snapshot::from_json(&text)
    }

    pub fn from_json(bytes: &[u8]) -> Result<Snapshot, Vec<String>> {
        let raw = parse_raw(bytes).map_err(|e| vec![format!("org.json: {e}")])?;
        let snapshot = convert(raw)?;
        let problems = validate(&snapshot);
        if problems.is_empty() {
            Ok(snapshot)
        } else {
            Err(problems)
        }
    }

    pub fn find(&self, uin: Uin) -> Option<(&Org, &Member)> {
        self.locate(uin).map(|(o, m)| (&self.orgs[o], &self.orgs[o].members[m]))
    }

    /// (organization index, member index) of an account.
    pub fn locate(&self, uin: Uin) -> Option<(usize, usize)> {
        self.account_index.get(&uin).map(|c| (c.org as usize, c.member as usize))
    }

    /// `locate`, for a place that may already say it (organization, member
    /// index; a ledger line's): taken when it names `uin`'s member, read from
    /// the account index otherwise.
    pub fn locate_at(&self, uin: Uin, place: (u32, u32)) -> Option<(usize, usize)> {
        let (o, m) = (place.0 as usize, place.1 as usize);
        let named = self.orgs.get(o).and_then(|org| org.members.get(m)).is_some_and(|member| member.uin == uin);
        if named {
            Some((o, m))
        } else {
            self.locate(uin)
        }
    }

    /// The account's card (see `AccountCard`).
    pub fn card(&self, uin: Uin) -> Option<&AccountCard> {
        self.account_index.get(&uin)
    }

    pub fn org_index_of(&self, uin: Uin) -> Option<usize> {
        self.account_index.get(&uin).map(|c| c.org as usize)
    }

    /// Every account of the snapshot, by uin.
    pub fn all_uins(&self) -> Vec<Uin> {
        let mut v: Vec<Uin> = self.account_index.keys().copied().collect();
        v.sort_unstable();
        v
    }
}

/// `text` as a timestamp; a problem naming `what` when it is not one.
fn parse_ts(problems: &mut Vec<String>, what: &str, text: &str) -> Ts {
    Ts::parse(text).unwrap_or_else(|| {
        problems.push(format!("org.json: {what}: {text:?} is not an RFC 3339 timestamp with an offset"));
        Ts(0)
    })
}

/// One organization of `org.json`, with the problems of its timestamps and of
/// its other fields.
fn convert_org(o: RawOrg) -> (Org, Vec<String>, Vec<String>) {
    let mut ts_problems = Vec::new();
    let mut ts = |what: &str, text: &str| parse_ts(&mut ts_problems, what, text);
    let org_id = o.org_id;
    let created_at = ts(&format!("org {org_id}: created_at"), &o.created_at);
    let mut problems = Vec::new();
    let mut ms = Vec::with_capacity(o.members.len());
    for m in o.members {
        let who = format!("org {org_id}: member {}", m.uin);
        let joined_at = ts(&format!("{who}: joined_at"), &m.joined_at);
        let left_at = m.left_at.as_deref().map(|t| ts(&format!("{who}: left_at"), t));
        let payer_periods = m
            .payer_periods
            .iter()
            .map(|p| PayerPeriod {
                payer_uin: p.payer_uin,
                from: ts(&format!("{who}: payer period from"), &p.from),
                to: p.to.as_deref().map(|t| ts(&format!("{who}: payer period to"), t)),
            })
            .collect();
        let join_mode = match m.join_mode.as_str() {
            "management" => JoinMode::Management,
            "created" => JoinMode::Created,
            "invited" => JoinMode::Invited,
            other => {
                problems.push(format!("org {org_id}: member {}: unknown join_mode {other:?}", m.uin));
                JoinMode::Invited
            }
        };
        let mut permissions = Permissions::default();
        for p in &m.permissions {
            match p.as_str() {
                "fund_transfer" => permissions.fund_transfer = true,
                "invoice" => permissions.invoice = true,
                "merged_bill" => permissions.merged_bill = true,
                "discount_inheritance" => permissions.discount_inheritance = true,
                "cost_analysis" => permissions.cost_analysis = true,
                other => problems.push(format!("org {org_id}: member {}: unknown permission {other:?}", m.uin)),
            }
        }
        ms.push(Member {
            uin: m.uin,
            name_needs_quotes: crate::reports::needs_quotes(&m.name),
            name: m.name,
            entity_id: m.entity_id,
            dept_id: m.dept_id,
            join_mode,
            joined_at,
            left_at,
            permissions,
            has_account_level_discount: m.has_account_level_discount,
            payer_periods,
        });
    }
    ms.sort_by_key(|m| m.uin);
    let org = Org {
        name: Box::leak(Box::new(org_id.clone())),
        org_id,
        created_at,
        management_uin: o.management_uin,
        entities: o.entities.into_iter().map(|e| Entity { entity_id: e.entity_id, name: e.name, admin_uin: e.admin_uin }).collect(),
        departments: o.departments.into_iter().map(|d| Department { dept_id: d.dept_id, parent_id: d.parent_id }).collect(),
        members: ms,
    };
    (org, ts_problems, problems)
}

fn convert(raw: RawSnapshot) -> Result<Snapshot, Vec<String>> {
    use rayon::prelude::*;
    let mut problems = Vec::new();
    let snapshot_at = parse_ts(&mut problems, "snapshot_at", &raw.snapshot_at);
    // Each organization converted on its own core. The problems keep the order of
    // one pass: every timestamp problem, in organization order, then every other.
    let converted: Vec<(Org, Vec<String>, Vec<String>)> = raw.orgs.into_par_iter().map(convert_org).collect();
    let mut others = Vec::new();
    let mut converted: Vec<Org> = converted
        .into_iter()
        .map(|(org, ts, other)| {
            problems.extend(ts);
            others.extend(other);
            org
        })
        .collect();
    problems.extend(others);
    for product in &raw.inheritance_blacklist {
        if !is_valid_product(product) {
            problems.push(format!("org.json: inheritance_blacklist: {product:?} is not a product code"));
        }
    }
    if !problems.is_empty() {
        return Err(problems);
    }
    converted.par_sort_by(|a, b| a.org_id.cmp(&b.org_id));
    let mut account_index = rustc_hash::FxHashMap::default();
    for (oi, org) in converted.iter().enumerate() {
        for (mi, m) in org.members.iter().enumerate() {
            // Duplicates are reported by validate(); keep the first here.
            let card = AccountCard {
                org: u32::try_from(oi).expect("fewer than 2^32 orgs"),
                member: u32::try_from(mi).expect("fewer than 2^32 members"),
                org_created_at: org.created_at,
                management_uin: org.management_uin,
                joined_at: m.joined_at,
                discount_inheritance: m.permissions.discount_inheritance,
            };
            account_index.entry(m.uin).or_insert(card);
        }
    }
    Ok(Snapshot {
        snapshot_at,
        inheritance_blacklist: raw.inheritance_blacklist.into_iter().collect(),
        orgs: converted,
        account_index,
    })
}

fn overlaps(a_from: Ts, a_to: Option<Ts>, b_from: Ts, b_to: Option<Ts>) -> bool {
    a_to.is_none_or(|t| b_from < t) && b_to.is_none_or(|t| a_from < t)
}

/// Every violation of §3.1, each naming the org, the account(s) and the rule: those
/// across organizations first, then each organization's, in organization order.
/// The two are checked at once (the first is one pass over every account).
pub fn validate(s: &Snapshot) -> Vec<String> {
    use rayon::prelude::*;
    let (mut problems, per_org) = rayon::join(|| validate_across_orgs(s), || s.orgs.par_iter().map(validate_org).collect::<Vec<_>>());
    problems.extend(per_org.into_iter().flatten());
    problems
}

/// The rules of §3.1 that look across organizations: ids and UINs valid and unique.
fn validate_across_orgs(s: &Snapshot) -> Vec<String> {
    let mut problems = Vec::new();
    let mut p = |org: &str, msg: String| problems.push(format!("org {org}: {msg}"));

    // Rule 1: unique UINs across the snapshot.
    let mut seen: BTreeMap<Uin, &str> = BTreeMap::new();
    let mut org_ids = BTreeSet::new();
    for org in &s.orgs {
        if !is_valid_id(&org.org_id) {
            p(&org.org_id, "org_id is not a valid id (rule 1.3)".into());
        }
        if !org_ids.insert(org.org_id.as_str()) {
            p(&org.org_id, "org_id appears twice".into());
        }
        for m in &org.members {
            if !is_valid_uin(m.uin) {
                p(&org.org_id, format!("uin {} is not a positive integer below 2^63", m.uin));
            }
            if let Some(first) = seen.insert(m.uin, &org.org_id) {
                p(&org.org_id, format!("uin {} is listed twice (also in org {first}) (rule 3.1.1: UINs are unique)", m.uin));
            }
        }
    }
    problems
}

/// The rules of §3.1 within one organization, in the order they are reported.
fn validate_org(org: &Org) -> Vec<String> {
    let mut problems = Vec::new();
    let mut p = |org: &str, msg: String| problems.push(format!("org {org}: {msg}"));
    {
        let o = org.org_id.as_str();
        let by_uin: HashMap<Uin, &Member> = org.members.iter().map(|m| (m.uin, m)).collect();
        let entities: HashMap<&str, &Entity> = org.entities.iter().map(|e| (e.entity_id.as_str(), e)).collect();

        // Rule 1: one management account, and it is management_uin.
        let managers: Vec<&Member> = org.members.iter().filter(|m| m.join_mode == JoinMode::Management).collect();
        if managers.len() != 1 {
            p(o, format!("has {} members with join_mode \"management\", needs exactly 1 (rule 3.1.1)", managers.len()));
        }
        match by_uin.get(&org.management_uin) {
            None => p(o, format!("management_uin {} is not among its members (rule 3.1.1)", org.management_uin)),
            Some(m) => {
                if m.join_mode != JoinMode::Management {
                    p(o, format!("management account {} does not have join_mode \"management\" (rule 3.1.1)", m.uin));
                }
                if m.joined_at != org.created_at {
                    p(o, format!("management account {} joined_at differs from the org's created_at (rule 3.1.1)", m.uin));
                }
                if !m.payer_periods.is_empty() {
                    p(o, format!("management account {} has payer periods (rule 3.1.1)", m.uin));
                }
                // Rule 7, first half.
                if m.permissions.discount_inheritance {
                    p(o, format!("management account {} has discount_inheritance (rule 3.1.7)", m.uin));
                }
            }
        }
        for m in &managers {
            if m.uin != org.management_uin {
                p(o, format!("member {} has join_mode \"management\" but is not management_uin (rule 3.1.1)", m.uin));
            }
        }

        // Rule 2: one tree per org, single root, at most 5 levels.
        let mut depts: HashMap<&str, Option<&str>> = HashMap::new();
        for d in &org.departments {
            if depts.insert(d.dept_id.as_str(), d.parent_id.as_deref()).is_some() {
                p(o, format!("department {} is listed twice (rule 3.1.2)", d.dept_id));
            }
        }
        let roots: Vec<&str> = org.departments.iter().filter(|d| d.parent_id.is_none()).map(|d| d.dept_id.as_str()).collect();
        if roots.len() != 1 {
            p(o, format!("has {} root departments, needs exactly 1 (rule 3.1.2)", roots.len()));
        }
        for d in &org.departments {
            let mut level = 1;
            let mut current = d.parent_id.as_deref();
            let mut visited = BTreeSet::from([d.dept_id.as_str()]);
            while let Some(parent) = current {
                if !visited.insert(parent) {
                    p(o, format!("department {} is in a cycle of parents (rule 3.1.2)", d.dept_id));
                    break;
                }
                match depts.get(parent) {
                    None => {
                        p(o, format!("department {} has unknown parent {parent} (rule 3.1.2)", d.dept_id));
                        break;
                    }
                    Some(next) => {
                        level += 1;
                        current = *next;
                    }
                }
            }
            if level > 5 {
                p(o, format!("department {} is at level {level}, deeper than 5 (rule 3.1.2)", d.dept_id));
            }
        }

        for e in &org.entities {
            // Rule 8: an entity's admin is a member of that entity.
            if let Some(admin) = e.admin_uin {
                match by_uin.get(&admin) {
                    None => p(o, format!("entity {}: admin_uin {admin} is not a member of the org (rule 3.1.8)", e.entity_id)),
                    Some(m) if m.entity_id != e.entity_id => p(
                        o,
                        format!("entity {}: admin_uin {admin} belongs to entity {} (rule 3.1.8)", e.entity_id, m.entity_id),
                    ),
                    _ => {}
                }
            }
        }

        for m in &org.members {
            let who = format!("member {}", m.uin);
            if !depts.contains_key(m.dept_id.as_str()) {
                p(o, format!("{who}: dept_id {} does not exist (rule 3.1.2)", m.dept_id));
            }
            if !entities.contains_key(m.entity_id.as_str()) {
                p(o, format!("{who}: entity_id {} does not exist (rule 3.1.3)", m.entity_id));
            }
            if m.joined_at < org.created_at {
                p(o, format!("{who}: joined_at is before the org's created_at (rule 3.1.3)"));
            }
            if m.left_at.is_some_and(|l| l <= m.joined_at) {
                p(o, format!("{who}: left_at is not after joined_at (rule 3.1.3)"));
            }
            check_payer_periods(org, m, &by_uin, &entities, &mut |msg| p(o, format!("{who}: {msg}")));
        }

        // Rule 7, second half: a payer of an inheriting member never inherits itself.
        for m in &org.members {
            if !m.permissions.discount_inheritance {
                continue;
            }
            for period in &m.payer_periods {
                if let Some(payer) = by_uin.get(&period.payer_uin) {
                    if payer.permissions.discount_inheritance {
                        p(
                            o,
                            format!(
                                "member {}: payer {} has discount_inheritance, but inheritance is one level deep (rule 3.1.7)",
                                m.uin, payer.uin
                            ),
                        );
                    }
                }
            }
        }
    }
    problems
}

fn check_payer_periods(
    org: &Org,
    m: &Member,
    by_uin: &HashMap<Uin, &Member>,
    entities: &HashMap<&str, &Entity>,
    p: &mut dyn FnMut(String),
) {
    for (i, period) in m.payer_periods.iter().enumerate() {
        let payer = period.payer_uin;
        let what = format!("payer period {} (payer {payer})", i + 1);
        if period.to.is_some_and(|to| to <= period.from) {
            p(format!("{what}: from is not before to (rule 3.1.4)"));
        }
        for other in &m.payer_periods[i + 1..] {
            if overlaps(period.from, period.to, other.from, other.to) {
                p(format!("{what} overlaps a later payer period (rule 3.1.4)"));
            }
        }
        let inside = period.from >= m.joined_at
            && match (m.left_at, period.to) {
                (None, _) => true,
                (Some(_), None) => false,
                (Some(left), Some(to)) => to <= left,
            };
        if !inside {
            p(format!("{what} does not lie inside the membership (rule 3.1.4)"));
        }
        if payer == m.uin {
            p(format!("{what}: a member cannot pay for itself (rule 3.1.5)"));
            continue;
        }
        let entity_admin = entities.get(m.entity_id.as_str()).and_then(|e| e.admin_uin);
        if payer != org.management_uin && Some(payer) != entity_admin {
            p(format!("{what}: the payer is neither the management account nor the admin of entity {} (rule 3.1.5)", m.entity_id));
        }
        match by_uin.get(&payer) {
            None => p(format!("{what}: the payer is not a member of the org (rule 3.1.5)")),
            Some(pm) => {
                if pm.entity_id != m.entity_id {
                    p(format!(
                        "{what}: the payer belongs to entity {}, the member to {} (rule 3.1.5)",
                        pm.entity_id, m.entity_id
                    ));
                }
                let covers = pm.joined_at <= period.from
                    && match (pm.left_at, period.to) {
                        (None, _) => true,
                        (Some(_), None) => false,
                        (Some(left), Some(to)) => to <= left,
                    };
                if !covers {
                    p(format!("{what}: the payer is not a member of the org for the whole period (rule 3.1.5)"));
                }
                if pm.payer_periods.iter().any(|pp| overlaps(pp.from, pp.to, period.from, period.to)) {
                    p(format!("{what}: the payer is itself paid for during the period (rule 3.1.5)"));
                }
                if pm.has_account_level_discount {
                    p(format!("{what}: the payer has an account-level discount (rule 3.1.6)"));
                }
            }
        }
        if m.has_account_level_discount {
            p(format!("{what}: the member has an account-level discount and cannot be paid for (rule 3.1.6)"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_accounts_card_repeats_its_org_and_member() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/demo/org.json");
        let snapshot = Snapshot::load(&path).expect("the demo snapshot loads");
        let mut accounts = 0;
        for (o, org) in snapshot.orgs.iter().enumerate() {
            for (m, member) in org.members.iter().enumerate() {
                let card = snapshot.card(member.uin).expect("every member has a card");
                assert_eq!((card.org as usize, card.member as usize), (o, m));
                assert_eq!(snapshot.locate(member.uin), Some((o, m)));
                assert_eq!((card.org_created_at, card.management_uin), (org.created_at, org.management_uin));
                assert_eq!((card.joined_at, card.discount_inheritance), (member.joined_at, member.permissions.discount_inheritance));
                accounts += 1;
            }
        }
        assert_eq!(accounts, snapshot.all_uins().len());
        assert_eq!(accounts, 9, "the demo org's members");
        assert!(snapshot.card(0).is_none());
    }

    fn org_json(members: &str) -> String {
        format!(
            r#"{{"snapshot_at":"2026-11-01T00:00:00+08:00","orgs":[{{"org_id":"org-1","created_at":"2026-01-01T00:00:00+08:00",
            "management_uin":1,"entities":[{{"entity_id":"e1","admin_uin":2}},{{"entity_id":"e2"}}],
            "departments":[{{"dept_id":"root","parent_id":null}}],"members":[
            {{"uin":1,"entity_id":"e1","dept_id":"root","join_mode":"management","joined_at":"2026-01-01T00:00:00+08:00"}},
            {{"uin":2,"entity_id":"e1","dept_id":"root","join_mode":"created","joined_at":"2026-01-01T00:00:00+08:00"}}
            {members}]}}]}}"#
        )
    }

    /// An organization `id` with management account `base` and a member
    /// `base + 1` of the given join mode, joined_at, permission and department.
    fn org(id: &str, base: u64, mode: &str, joined: &str, permission: &str, dept: &str) -> String {
        format!(
            r#"{{"org_id":"{id}","created_at":"2026-01-01T00:00:00+08:00","management_uin":{base},
            "entities":[{{"entity_id":"e1"}}],"departments":[{{"dept_id":"root"}}],"members":[
            {{"uin":{base},"entity_id":"e1","dept_id":"root","join_mode":"management","joined_at":"2026-01-01T00:00:00+08:00"}},
            {{"uin":{},"entity_id":"e1","dept_id":"{dept}","join_mode":"{mode}","joined_at":"{joined}","permissions":["{permission}"]}}]}}"#,
            base + 1
        )
    }

    fn snapshot_of(orgs: &[String]) -> String {
        format!(r#"{{"snapshot_at":"2026-11-01T00:00:00+08:00","orgs":[{}]}}"#, orgs.join(",\n"))
    }

    #[test]
    fn problems_are_reported_in_one_order_whatever_the_cores() {
        let ok_joined = "2026-02-01T00:00:00+08:00";
        // Organizations are converted on all cores: every timestamp problem comes
        // first, then the others, each in the file's order of organizations.
        let json = snapshot_of(&[
            org("org-b", 10, "boss", ok_joined, "invoice", "root"),
            org("org-a", 20, "invited", "yesterday", "invoice", "root"),
            org("org-c", 30, "invited", ok_joined, "everything", "root"),
        ]);
        assert_eq!(
            Snapshot::from_json(json.as_bytes()).unwrap_err(),
            [
                r#"org.json: org org-a: member 21: joined_at: "yesterday" is not an RFC 3339 timestamp with an offset"#,
                r#"org org-b: member 11: unknown join_mode "boss""#,
                r#"org org-c: member 31: unknown permission "everything""#,
            ]
        );
        // The rules of §3.1 are checked on all cores too: the cross-organization
        // rule first, then each organization's, in org_id order.
        let json = snapshot_of(&[
            org("org-z", 10, "invited", ok_joined, "invoice", "nowhere"),
            org("org-y", 11, "invited", ok_joined, "invoice", "elsewhere"),
        ]);
        assert_eq!(
            Snapshot::from_json(json.as_bytes()).unwrap_err(),
            [
                "org org-z: uin 11 is listed twice (also in org org-y) (rule 3.1.1: UINs are unique)",
                "org org-y: member 12: dept_id elsewhere does not exist (rule 3.1.2)",
                "org org-z: member 11: dept_id nowhere does not exist (rule 3.1.2)",
            ]
        );
    }

    #[test]
    fn a_malformed_organization_is_named_by_its_place_in_the_whole_file() {
        let ok_joined = "2026-02-01T00:00:00+08:00";
        let good = org("org-a", 10, "invited", ok_joined, "invoice", "root");
        let bad = org("org-b", 20, "invited", ok_joined, "invoice", "root").replace(r#""uin":21,"#, r#""uin":"21","#);
        let json = snapshot_of(&[good.clone(), good.replace("org-a", "org-c").replace(":10", ":40").replace(":11", ":41"), bad]);
        let problems = Snapshot::from_json(json.as_bytes()).unwrap_err();
        // The third organization starts on line 9 of the file; its member 21 on line 12.
        assert_eq!(problems, [r#"org.json: invalid type: string "21", expected u64 at line 12 column 23"#]);
        let whole = serde_json::from_slice::<RawSnapshot>(json.as_bytes()).err().expect("the file does not parse");
        assert_eq!(problems, [format!("org.json: {whole}")]);
    }

    #[test]
    fn a_valid_snapshot_loads() {
        let s = Snapshot::from_json(org_json("").as_bytes()).unwrap();
        assert_eq!(s.orgs[0].members.len(), 2);
        assert_eq!(s.find(2).unwrap().0.org_id, "org-1");
    }

    #[test]
    fn payer_of_another_entity_is_refused() {
        let m = r#",{"uin":3,"entity_id":"e2","dept_id":"root","join_mode":"invited","joined_at":"2026-02-01T00:00:00+08:00",
            "payer_periods":[{"payer_uin":2,"from":"2026-03-01T00:00:00+08:00"}]}"#;
        let problems = Snapshot::from_json(org_json(m).as_bytes()).unwrap_err();
        assert!(problems.iter().any(|p| p.contains("member 3") && p.contains("neither the management account")), "{problems:?}");
        assert!(problems.iter().any(|p| p.contains("member 3") && p.contains("belongs to entity e1")), "{problems:?}");
    }

    #[test]
    fn department_cycles_and_unknown_departments_are_refused() {
        let json = org_json(r#",{"uin":3,"entity_id":"e1","dept_id":"nowhere","join_mode":"invited","joined_at":"2026-02-01T00:00:00+08:00"}"#)
            .replace(r#"{"dept_id":"root","parent_id":null}"#, r#"{"dept_id":"root","parent_id":null},{"dept_id":"a","parent_id":"b"},{"dept_id":"b","parent_id":"a"}"#);
        let problems = Snapshot::from_json(json.as_bytes()).unwrap_err();
        assert!(problems.iter().any(|p| p.contains("department a is in a cycle")), "{problems:?}");
        assert!(problems.iter().any(|p| p.contains("member 3: dept_id nowhere does not exist")), "{problems:?}");
    }
}
