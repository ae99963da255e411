//! The registry: entities (park → enterprise → workshop → line → equipment, and meters), agents,
//! products and plan targets, loaded from `configs/registry/*.toml` and the targets file, edited
//! through the API, stored as audited JSON documents (`shopfloor_store::RegistryItem`).
//!
//! File layout (docs/GATEWAY.md, "Registry, inputs and API"): `<dir>/entities.toml` with
//! `[[entity]]` tables ([`Entity`]), `<dir>/agents.toml` with `[[agent]]` ([`Agent`]),
//! `<dir>/products.toml` with `[[product]]` ([`Product`]); a missing file holds no items. Plan
//! targets come from the targets file (`shopfloor_core::targets::parse`).
//!
//! Invariants:
//! - Every change is validated against the whole registry it produces (the stored items with
//!   the change applied) before anything is written: paths are `a-z 0-9 _ -` segments whose
//!   depth matches the kind, every parent exists and has the kind of the level above, ids are
//!   unique, references (products, sub-meter parents, agent scopes) resolve, meter carriers and
//!   units are ones the engine converts, numbers are finite and ≥ 0 (`ideal_cycle_s` > 0), and
//!   agent keys parse. Problems the change did not cause (a stored item that was already
//!   invalid under older rules) are not blamed on it.
//! - Files never delete: items only in the database (added through the API) are kept, items in
//!   the files replace stored ones of the same id; an unchanged item writes nothing (the store
//!   skips it), a changed one writes one audit entry with actor `file:<path>`.
//! - An entity with children, or one that an agent scope or a sub-meter names, cannot be
//!   deleted; neither can a product an equipment makes.
//! - After every change the snapshot is rebuilt from the database and handed to
//!   [`Trust::replace`]; readers always see a complete, consistent [`Snapshot`]. Changes from
//!   this process are serialised, so validation and write see the same registry.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::Path;
use std::sync::{Arc, RwLock};

use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use shopfloor_core::targets::{Target, TargetComparison};
use shopfloor_core::{batch, catalog, coefficients};
use shopfloor_store::{Ms, RegistryItem, Store, StoreError};

use crate::config::ConfigError;
use crate::db::Db;
use crate::ingest::Trust;
use crate::model::{
    Agent, Entity, EntityKind, KIND_AGENT, KIND_ENTITY, KIND_PRODUCT, KIND_TARGET, Product,
    Snapshot,
};

/// The `file` of errors about items stored in the database (not in any file).
pub const STORED: &str = "database";

/// Longest path segment, product id or equipment kind.
const MAX_SEGMENT: usize = 64;
/// Longest display name or free-text attribute.
const MAX_TEXT: usize = 200;

// ---------------------------------------------------------------------------------------------
// Kinds and errors
// ---------------------------------------------------------------------------------------------

/// The four kinds of registry items (the `kind` column of the store, the `{kind}` of the API).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    Entity,
    Agent,
    Product,
    Target,
}

impl Kind {
    pub const ALL: [Kind; 4] = [Kind::Entity, Kind::Agent, Kind::Product, Kind::Target];

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Entity => KIND_ENTITY,
            Kind::Agent => KIND_AGENT,
            Kind::Product => KIND_PRODUCT,
            Kind::Target => KIND_TARGET,
        }
    }

    pub fn parse(s: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a registry change was refused.
#[derive(Debug)]
pub enum RegistryError {
    /// The kind is not one of [`Kind::ALL`].
    UnknownKind(String),
    /// The document or the registry it would produce is invalid: `field: reason` messages
    /// (fields of other items are named `<kind> "<id>".<field>`).
    Invalid(Vec<String>),
    NotFound {
        kind: Kind,
        id: String,
    },
    /// A delete that would leave references dangling.
    InUse(String),
    Store(StoreError),
}

impl fmt::Display for RegistryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RegistryError::UnknownKind(k) => write!(
                f,
                "kind: \"{k}\" is not a registry kind (entity, agent, product, target)"
            ),
            RegistryError::Invalid(msgs) => f.write_str(&msgs.join("; ")),
            RegistryError::NotFound { kind, id } => write!(f, "id: no {kind} \"{id}\""),
            RegistryError::InUse(why) => write!(f, "id: {why}"),
            RegistryError::Store(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for RegistryError {}

impl From<StoreError> for RegistryError {
    fn from(e: StoreError) -> Self {
        RegistryError::Store(e)
    }
}

/// What [`Registry::sync_files`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SyncReport {
    /// Items that were not stored before.
    pub added: usize,
    /// Items whose stored document differed (one audit entry each).
    pub changed: usize,
    /// Items identical to the stored ones (nothing written).
    pub unchanged: usize,
    /// Stored items that are in no file (kept).
    pub kept: usize,
}

/// A stored change: the document before (`None` for a new item) and the one now stored.
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    pub before: Option<Value>,
    pub after: Value,
}

// ---------------------------------------------------------------------------------------------
// Paths
// ---------------------------------------------------------------------------------------------

/// Checks an entity path (`p1/e1/w1/l1/cnc-01`): 1 to 5 segments of 1–64 characters
/// `a-z 0-9 _ -`. Returns the depth.
pub fn check_entity_path(path: &str) -> Result<usize, String> {
    if path.is_empty() {
        return Err("must not be empty".into());
    }
    let mut depth = 0;
    for seg in path.split('/') {
        depth += 1;
        check_segment(seg).map_err(|r| format!("\"{}\": {r}", shown(path)))?;
    }
    if depth > 5 {
        return Err(format!(
            "\"{}\" has {depth} segments; at most 5 (park/enterprise/workshop/line/equipment)",
            shown(path)
        ));
    }
    Ok(depth)
}

/// One id segment: 1–64 of `a-z 0-9 _ -`.
fn check_segment(seg: &str) -> Result<(), String> {
    if seg.is_empty() {
        return Err("empty path segment".into());
    }
    if seg.len() > MAX_SEGMENT {
        return Err(format!("segment longer than {MAX_SEGMENT} characters"));
    }
    if !seg
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
    {
        return Err("segments are made of a-z, 0-9, _ and -".into());
    }
    Ok(())
}

/// The text of a rejected value, shortened and without control characters, for messages.
fn shown(s: &str) -> String {
    let mut out: String = s.chars().take(80).filter(|c| !c.is_control()).collect();
    if s.chars().count() > 80 {
        out.push('…');
    }
    out
}

/// The parent path of `path` (`None` for a park).
pub fn parent_of(path: &str) -> Option<&str> {
    path.rfind('/').map(|i| &path[..i])
}

/// The entity kind that lives at `depth` (meters excepted).
fn level_kind(depth: usize) -> Option<EntityKind> {
    Some(match depth {
        1 => EntityKind::Park,
        2 => EntityKind::Enterprise,
        3 => EntityKind::Workshop,
        4 => EntityKind::Line,
        5 => EntityKind::Equipment,
        _ => return None,
    })
}

pub fn entity_kind_name(kind: EntityKind) -> &'static str {
    match kind {
        EntityKind::Park => "park",
        EntityKind::Enterprise => "enterprise",
        EntityKind::Workshop => "workshop",
        EntityKind::Line => "line",
        EntityKind::Equipment => "equipment",
        EntityKind::Meter => "meter",
    }
}

fn article(kind: EntityKind) -> &'static str {
    match kind {
        EntityKind::Enterprise | EntityKind::Equipment => "an",
        _ => "a",
    }
}

// ---------------------------------------------------------------------------------------------
// Validation
// ---------------------------------------------------------------------------------------------

/// Where an item under validation comes from; decides how its problems are reported.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Origin {
    /// `table[index]` of a file (`entity[3]`).
    File {
        file: String,
        table: &'static str,
        index: usize,
    },
    /// Already stored (and not replaced by the change).
    Stored,
    /// The document of an API request.
    Submitted,
}

#[derive(Debug, Clone)]
struct Slot<T> {
    origin: Origin,
    item: T,
}

/// A registry as it would be after a change, with each item's origin.
#[derive(Debug, Default)]
struct Draft {
    entities: Vec<Slot<Entity>>,
    agents: Vec<Slot<Agent>>,
    products: Vec<Slot<Product>>,
    targets: Vec<Slot<Target>>,
}

impl Draft {
    fn stored(snap: &Snapshot) -> Draft {
        fn slots<'a, T: Clone + 'a>(items: impl Iterator<Item = &'a T>) -> Vec<Slot<T>> {
            items
                .map(|item| Slot {
                    origin: Origin::Stored,
                    item: item.clone(),
                })
                .collect()
        }
        Draft {
            entities: slots(snap.entities.values()),
            agents: slots(snap.agents.values()),
            products: slots(snap.products.values()),
            targets: slots(snap.targets.iter()),
        }
    }
}

/// Replaces the stored items that `incoming` redefines (same id) and appends `incoming`.
fn overlay<T>(list: &mut Vec<Slot<T>>, incoming: Vec<Slot<T>>, id: impl Fn(&T) -> &str) {
    let ids: BTreeSet<String> = incoming.iter().map(|s| id(&s.item).to_owned()).collect();
    list.retain(|s| s.origin != Origin::Stored || !ids.contains(id(&s.item)));
    list.extend(incoming);
}

/// One problem: which item, which field (relative to the item), why.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Issue {
    origin: Origin,
    kind: Kind,
    id: String,
    field: String,
    reason: String,
}

impl Issue {
    fn to_config_error(&self) -> ConfigError {
        match &self.origin {
            Origin::File { file, table, index } => ConfigError {
                file: file.clone(),
                path: join_field(&format!("{table}[{index}]"), &self.field),
                reason: self.reason.clone(),
            },
            Origin::Stored | Origin::Submitted => ConfigError {
                file: STORED.into(),
                path: join_field(&format!("{} \"{}\"", self.kind, self.id), &self.field),
                reason: self.reason.clone(),
            },
        }
    }

    /// `field: reason` for an API response (other items are named by kind and id).
    fn to_message(&self) -> String {
        match &self.origin {
            Origin::Submitted => {
                let field = if self.field.is_empty() {
                    "body"
                } else {
                    &self.field
                };
                format!("{field}: {}", self.reason)
            }
            _ => {
                let e = self.to_config_error();
                format!("{}: {}", e.path, e.reason)
            }
        }
    }

    /// Identity of a problem of a stored item, to tell old problems from new ones.
    fn key(&self) -> (Kind, String, String, String) {
        (
            self.kind,
            self.id.clone(),
            self.field.clone(),
            self.reason.clone(),
        )
    }
}

fn join_field(prefix: &str, field: &str) -> String {
    if field.is_empty() {
        prefix.to_owned()
    } else if field.starts_with('[') {
        format!("{prefix}{field}")
    } else {
        format!("{prefix}.{field}")
    }
}

#[derive(Default)]
struct Issues(Vec<Issue>);

impl Issues {
    fn push(
        &mut self,
        origin: &Origin,
        kind: Kind,
        id: &str,
        field: impl Into<String>,
        reason: impl Into<String>,
    ) {
        self.0.push(Issue {
            origin: origin.clone(),
            kind,
            id: id.to_owned(),
            field: field.into(),
            reason: reason.into(),
        });
    }
}

fn finite_ge0(v: f64) -> Result<(), String> {
    if !v.is_finite() {
        Err(format!("must be a finite number, got {v}"))
    } else if v < 0.0 {
        Err(format!("must be ≥ 0, got {v}"))
    } else {
        Ok(())
    }
}

fn text(v: &str) -> Result<(), String> {
    if v.trim().is_empty() {
        Err("must not be blank (leave it out instead)".into())
    } else if v.chars().count() > MAX_TEXT {
        Err(format!("longer than {MAX_TEXT} characters"))
    } else if v.chars().any(char::is_control) {
        Err("must not contain control characters".into())
    } else {
        Ok(())
    }
}

/// A date `YYYY-MM-DD` or an RFC 3339 time with offset.
fn date_or_time(v: &str) -> Result<(), String> {
    if v.parse::<jiff::civil::Date>().is_ok() || v.parse::<jiff::Timestamp>().is_ok() {
        Ok(())
    } else {
        Err(format!(
            "\"{}\" is neither a date (YYYY-MM-DD) nor an RFC 3339 time with offset",
            shown(v)
        ))
    }
}

/// Validates a whole draft registry; problems in file order, then stored items.
fn validate(d: &Draft) -> Vec<Issue> {
    let mut out = Issues::default();
    let products = unique_ids(&d.products, Kind::Product, |p| &p.id, &mut out);
    let entities = unique_ids(&d.entities, Kind::Entity, |e| &e.id, &mut out);
    unique_ids(&d.agents, Kind::Agent, |a| &a.id, &mut out);
    unique_ids(&d.targets, Kind::Target, |t| &t.id, &mut out);
    let kinds: BTreeMap<&str, EntityKind> = entities
        .iter()
        .map(|(id, i)| (*id, d.entities[*i].item.kind))
        .collect();
    let meters: BTreeMap<&str, &Entity> = entities
        .iter()
        .map(|(id, i)| (*id, &d.entities[*i].item))
        .filter(|(_, e)| e.kind == EntityKind::Meter)
        .collect();
    for s in &d.products {
        check_product(s, &mut out);
    }
    for s in &d.entities {
        check_entity(s, &kinds, &products, &meters, &mut out);
    }
    for s in &d.agents {
        check_agent(s, &kinds, &mut out);
    }
    for s in &d.targets {
        for (field, reason) in check_target(&s.item) {
            out.push(&s.origin, Kind::Target, &s.item.id, field, reason);
        }
    }
    let mut issues = out.0;
    issues.sort_by(|a, b| a.origin.cmp(&b.origin));
    issues
}

/// Index of the first item of each id; later duplicates are problems.
fn unique_ids<'a, T>(
    list: &'a [Slot<T>],
    kind: Kind,
    id: impl Fn(&T) -> &str,
    out: &mut Issues,
) -> BTreeMap<&'a str, usize> {
    let mut seen: BTreeMap<&str, usize> = BTreeMap::new();
    for (i, s) in list.iter().enumerate() {
        let this = id(&s.item);
        if let Some(&first) = seen.get(this) {
            let other = match &list[first].origin {
                Origin::File { file, table, index } => format!(" (also {file}: {table}[{index}])"),
                _ => String::new(),
            };
            out.push(
                &s.origin,
                kind,
                this,
                "id",
                format!("duplicate id \"{}\"{other}", shown(this)),
            );
        } else {
            seen.insert(this, i);
        }
    }
    seen
}

fn check_product(s: &Slot<Product>, out: &mut Issues) {
    let p = &s.item;
    let mut bad = |field: &str, r: String| out.push(&s.origin, Kind::Product, &p.id, field, r);
    if let Err(r) = check_segment(&p.id) {
        bad("id", format!("\"{}\": {r}", shown(&p.id)));
    }
    if !(p.ideal_cycle_s.is_finite() && p.ideal_cycle_s > 0.0) {
        bad(
            "ideal_cycle_s",
            format!("must be a finite number > 0, got {}", p.ideal_cycle_s),
        );
    }
    if let Some(Err(r)) = p.value_added_per_unit_cny.map(finite_ge0) {
        bad("value_added_per_unit_cny", r);
    }
    for (field, v) in [("name_zh", &p.name_zh), ("name_en", &p.name_en)] {
        if let Some(Err(r)) = v.as_deref().map(text) {
            bad(field, r);
        }
    }
}

/// Which kinds may carry each optional entity attribute.
fn attribute_kinds(e: &Entity) -> Vec<(&'static str, bool, &'static [EntityKind])> {
    use EntityKind::*;
    const TOP: &[EntityKind] = &[Park, Enterprise];
    const ENT: &[EntityKind] = &[Enterprise];
    const CERT: &[EntityKind] = &[Enterprise, Workshop];
    const BASE: &[EntityKind] = &[Park, Enterprise, Workshop];
    const EQ: &[EntityKind] = &[Equipment];
    const MET: &[EntityKind] = &[Meter];
    vec![
        ("region", e.region.is_some(), TOP),
        ("land_area_m2", e.land_area_m2.is_some(), ENT),
        ("industry_mode", e.industry_mode.is_some(), ENT),
        ("industry", e.industry.is_some(), ENT),
        (
            "coefficient_overrides",
            !e.coefficient_overrides.is_empty(),
            ENT,
        ),
        ("certifications", !e.certifications.is_empty(), CERT),
        ("baseline", e.baseline.is_some(), BASE),
        ("equipment_kind", e.equipment_kind.is_some(), EQ),
        ("control", e.control.is_some(), EQ),
        ("key_process", e.key_process.is_some(), EQ),
        ("product", e.product.is_some(), EQ),
        ("data_points", e.data_points.is_some(), EQ),
        ("carrier", e.carrier.is_some(), MET),
        ("unit", e.unit.is_some(), MET),
        ("renewable", e.renewable, MET),
        ("parent", e.parent.is_some(), MET),
    ]
}

fn kinds_list(kinds: &[EntityKind]) -> String {
    let names: Vec<&str> = kinds.iter().map(|k| entity_kind_name(*k)).collect();
    match names.as_slice() {
        [one] => format!("{one} entities"),
        [init @ .., last] => format!("{} and {last} entities", init.join(", ")),
        [] => String::new(),
    }
}

fn check_entity(
    s: &Slot<Entity>,
    kinds: &BTreeMap<&str, EntityKind>,
    products: &BTreeMap<&str, usize>,
    meters: &BTreeMap<&str, &Entity>,
    out: &mut Issues,
) {
    let e = &s.item;
    let mut bad = |field: &str, r: String| out.push(&s.origin, Kind::Entity, &e.id, field, r);
    let kind_name = entity_kind_name(e.kind);

    // Path, depth, parent.
    match check_entity_path(&e.id) {
        Err(r) => bad("id", r),
        Ok(depth) => {
            let depth_ok = match e.kind {
                EntityKind::Meter => (3..=5).contains(&depth),
                k => level_kind(depth) == Some(k),
            };
            if !depth_ok {
                let want = match e.kind {
                    EntityKind::Park => "1 segment",
                    EntityKind::Enterprise => "2 segments",
                    EntityKind::Workshop => "3 segments",
                    EntityKind::Line => "4 segments",
                    EntityKind::Equipment => "5 segments",
                    EntityKind::Meter => "3 to 5 segments (under an enterprise, workshop or line)",
                };
                bad(
                    "kind",
                    format!(
                        "{} {kind_name} has a path of {want}; \"{}\" has {depth}",
                        capitalised(article(e.kind)),
                        e.id
                    ),
                );
            } else if let Some(parent) = parent_of(&e.id) {
                let want = level_kind(depth - 1);
                match kinds.get(parent) {
                    None => bad("id", format!("parent {parent} is not an entity")),
                    Some(&pk) if Some(pk) != want => bad(
                        "id",
                        format!(
                            "parent {parent} is {} {}, not {} {}",
                            article(pk),
                            entity_kind_name(pk),
                            want.map_or("a", article),
                            want.map_or("level above", entity_kind_name)
                        ),
                    ),
                    Some(_) => {}
                }
            }
        }
    }

    // Attributes that only some kinds carry.
    for (field, set, allowed) in attribute_kinds(e) {
        if set && !allowed.contains(&e.kind) {
            bad(
                field,
                format!(
                    "only {} have it, this is {} {kind_name}",
                    kinds_list(allowed),
                    article(e.kind)
                ),
            );
        }
    }

    for (field, v) in [
        ("name_zh", &e.name_zh),
        ("name_en", &e.name_en),
        ("region", &e.region),
        ("industry", &e.industry),
        ("key_process", &e.key_process),
    ] {
        if let Some(Err(r)) = v.as_deref().map(text) {
            bad(field, r);
        }
    }
    if let Some(Err(r)) = e.land_area_m2.map(finite_ge0) {
        bad("land_area_m2", r);
    }
    if let Some(b) = &e.baseline {
        for (field, v) in [
            ("good_per_pbt_hour", b.good_per_pbt_hour),
            ("defect_rate", b.defect_rate),
            ("energy_per_value_added", b.energy_per_value_added),
            ("water_per_value_added", b.water_per_value_added),
        ] {
            if let Some(Err(r)) = v.map(finite_ge0) {
                bad(&format!("baseline.{field}"), r);
            }
        }
        if let Some(Err(r)) = b.label.as_deref().map(text) {
            bad("baseline.label", r);
        }
    }
    for (i, c) in e.certifications.iter().enumerate() {
        if let Err(r) = date_or_time(&c.since) {
            bad(&format!("certifications[{i}].since"), r);
        }
        if let Some(Err(r)) = c.until.as_deref().map(date_or_time) {
            bad(&format!("certifications[{i}].until"), r);
        }
    }
    for (k, v) in &e.coefficient_overrides {
        if let Err(r) = check_override(k, *v) {
            bad(&format!("coefficient_overrides.{k}"), r);
        }
    }

    match e.kind {
        EntityKind::Equipment => {
            match &e.equipment_kind {
                None => bad(
                    "equipment_kind",
                    "required for equipment (cnc, robot, press, …)".into(),
                ),
                Some(k) => {
                    if let Err(r) = check_segment(k) {
                        bad("equipment_kind", format!("\"{}\": {r}", shown(k)));
                    }
                }
            }
            if e.control.is_none() {
                bad(
                    "control",
                    "required for equipment: cnc, plc, dcs, robot or manual".into(),
                );
            }
            if let Some(p) = &e.product
                && !products.contains_key(p.as_str())
            {
                bad("product", format!("\"{}\" is not a product", shown(p)));
            }
        }
        EntityKind::Meter => check_meter(e, meters, &mut bad),
        _ => {}
    }
}

fn capitalised(s: &str) -> String {
    let mut c = s.chars();
    c.next()
        .map(|f| f.to_uppercase().chain(c).collect())
        .unwrap_or_default()
}

/// The carriers of the default coefficient set (what the engine converts).
fn carrier(id: &str) -> Option<&'static coefficients::Carrier> {
    coefficients::energy_set(coefficients::DEFAULT_SET).and_then(|s| s.carriers.get(id))
}

fn carrier_names() -> String {
    coefficients::energy_set(coefficients::DEFAULT_SET)
        .map(|s| s.carriers.keys().cloned().collect::<Vec<_>>().join(", "))
        .unwrap_or_default()
}

fn check_meter(e: &Entity, meters: &BTreeMap<&str, &Entity>, bad: &mut impl FnMut(&str, String)) {
    let known = match &e.carrier {
        None => {
            bad(
                "carrier",
                format!("required for a meter: one of {}", carrier_names()),
            );
            None
        }
        Some(c) => match carrier(c) {
            None => {
                bad(
                    "carrier",
                    format!(
                        "\"{}\" is not a known carrier (known: {})",
                        shown(c),
                        carrier_names()
                    ),
                );
                None
            }
            Some(k) => Some(k),
        },
    };
    match (&e.unit, known) {
        (None, _) => bad(
            "unit",
            "required for a meter: the unit of its readings (e.g. kWh, Wh, m3, t, GJ)".into(),
        ),
        (Some(u), Some(k)) if coefficients::unit_factor(u, &k.unit).is_none() => bad(
            "unit",
            format!(
                "\"{}\" cannot be converted to {} (the unit of {})",
                shown(u),
                k.unit,
                e.carrier.as_deref().unwrap_or_default()
            ),
        ),
        _ => {}
    }
    let Some(parent) = &e.parent else { return };
    if parent == &e.id {
        bad("parent", "a meter cannot be its own parent".into());
        return;
    }
    let Some(p) = meters.get(parent.as_str()) else {
        bad("parent", format!("\"{}\" is not a meter", shown(parent)));
        return;
    };
    if p.carrier != e.carrier {
        bad(
            "parent",
            format!(
                "{parent} measures {}, this meter {}: a sub-meter measures its parent's carrier",
                p.carrier.as_deref().unwrap_or("nothing"),
                e.carrier.as_deref().unwrap_or("nothing")
            ),
        );
    }
    // A chain of parents must end: follow it at most as many steps as there are meters.
    let mut at = p;
    for _ in 0..meters.len() {
        match at.parent.as_deref().and_then(|q| meters.get(q)) {
            Some(next) if next.id == e.id => {
                bad(
                    "parent",
                    format!("the chain of parent meters from {parent} comes back here"),
                );
                return;
            }
            Some(next) => at = next,
            None => return,
        }
    }
}

/// Coefficient override keys `<carrier>_kgce_per_<unit>` (energy carriers, > 0) and
/// `<carrier>_kgco2_per_<unit>` (≥ 0), as the engine reads them.
fn check_override(key: &str, v: f64) -> Result<(), String> {
    let set = coefficients::energy_set(coefficients::DEFAULT_SET)
        .ok_or_else(|| "the coefficient data is missing".to_owned())?;
    let found = set.carriers.iter().find_map(|(id, c)| {
        let unit = coefficients::unit_suffix(&c.unit);
        if key == format!("{id}_kgce_per_{unit}") {
            Some((c, true))
        } else if key == format!("{id}_kgco2_per_{unit}") {
            Some((c, false))
        } else {
            None
        }
    });
    match found {
        None => Err(
            "unknown override key; expected <carrier>_kgce_per_<unit> or \
             <carrier>_kgco2_per_<unit>, e.g. natural_gas_kgce_per_m3"
                .into(),
        ),
        Some((c, true)) if !c.energy => {
            Err("not an energy carrier: it has no kgce coefficient".into())
        }
        Some((_, true)) if !(v.is_finite() && v > 0.0) => {
            Err(format!("must be a finite number > 0, got {v}"))
        }
        Some(_) => finite_ge0(v),
    }
}

fn check_agent(s: &Slot<Agent>, kinds: &BTreeMap<&str, EntityKind>, out: &mut Issues) {
    let a = &s.item;
    let mut bad = |field: &str, r: String| out.push(&s.origin, Kind::Agent, &a.id, field, r);
    if let Err(r) = batch::check_agent_id(&a.id) {
        bad("id", r);
    } else if a.id.len() > MAX_SEGMENT {
        bad("id", format!("longer than {MAX_SEGMENT} characters"));
    }
    let key_err = |e: batch::BatchError| match e {
        batch::BatchError::BadKey(r) => r,
        e => e.to_string(),
    };
    let current = batch::parse_public_key(&a.public_key);
    if let Err(e) = &current {
        bad("public_key", key_err(e.clone()));
    }
    let mut seen = BTreeSet::new();
    if let Ok(k) = &current {
        seen.insert(k.to_bytes());
    }
    for (i, k) in a.previous_keys.iter().enumerate() {
        match batch::parse_public_key(&k.public_key) {
            Ok(key) => {
                if !seen.insert(key.to_bytes()) {
                    bad(
                        &format!("previous_keys[{i}].public_key"),
                        "listed twice, or equal to the current public_key".into(),
                    );
                }
            }
            Err(e) => bad(&format!("previous_keys[{i}].public_key"), key_err(e)),
        }
        if let Err(e) = k.until.parse::<jiff::Timestamp>() {
            bad(
                &format!("previous_keys[{i}].until"),
                format!(
                    "{} is not an RFC 3339 instant with offset ({e})",
                    shown(&k.until)
                ),
            );
        }
    }
    for (i, k) in a.revoked_keys.iter().enumerate() {
        match batch::parse_public_key(k) {
            Ok(key) => {
                if current
                    .as_ref()
                    .is_ok_and(|c| c.to_bytes() == key.to_bytes())
                {
                    bad(
                        &format!("revoked_keys[{i}]"),
                        "is the current public_key: rotate to a new key first (shopfloor-gateway \
                         agents rotate --revoke-old)"
                            .into(),
                    );
                }
            }
            Err(e) => bad(&format!("revoked_keys[{i}]"), key_err(e)),
        }
    }
    if a.scope.is_empty() {
        bad(
            "scope",
            "name at least one entity whose devices the agent reports".into(),
        );
    }
    for (i, p) in a.scope.iter().enumerate() {
        if !kinds.contains_key(p.as_str()) {
            bad(
                &format!("scope[{i}]"),
                format!("{} is not an entity", shown(p)),
            );
        }
    }
}

/// The rules `shopfloor_core::targets::parse` applies to each target, for one target that
/// arrives through the API (as JSON, not as a TOML file).
fn check_target(t: &Target) -> Vec<(&'static str, String)> {
    let mut out = Vec::new();
    if t.id.trim().is_empty() || t.id.len() > MAX_SEGMENT || t.id.chars().any(char::is_control) {
        out.push((
            "id",
            format!("must be 1–{MAX_SEGMENT} printable characters"),
        ));
    }
    match catalog::def(&t.indicator) {
        None => out.push((
            "indicator",
            format!("\"{}\" is not a catalog indicator id", shown(&t.indicator)),
        )),
        Some(d) if d.unit != t.unit => out.push((
            "unit",
            format!(
                "\"{}\" is not the unit of {} ({})",
                shown(&t.unit),
                t.indicator,
                d.unit
            ),
        )),
        Some(_) => {}
    }
    let change = matches!(
        t.comparison,
        TargetComparison::ChangeLe | TargetComparison::ChangeGe
    );
    match (change, t.baseline_year) {
        (true, None) => out.push((
            "baseline_year",
            "a change target needs its baseline year".into(),
        )),
        (false, Some(_)) => out.push((
            "baseline_year",
            "only change targets have a baseline year".into(),
        )),
        (true, Some(b)) if b >= t.year => {
            out.push(("baseline_year", "must be before the target year".into()))
        }
        _ => {}
    }
    if !t.value.is_finite() {
        out.push(("value", "must be a finite number".into()));
    }
    if t.seed.trim().is_empty() {
        out.push(("seed", "every target cites its seed line".into()));
    }
    out
}

/// Problems of `after` that are not already problems of `before` (stored items judged by
/// newer rules are not blamed on the change), as located errors.
fn new_issues(before: &Draft, after: &Draft) -> Vec<Issue> {
    let old: BTreeSet<_> = validate(before)
        .into_iter()
        .filter(|i| i.origin == Origin::Stored)
        .map(|i| i.key())
        .collect();
    validate(after)
        .into_iter()
        .filter(|i| i.origin != Origin::Stored || !old.contains(&i.key()))
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Files
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct EntitiesFile {
    #[serde(default)]
    entity: Vec<Entity>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AgentsFile {
    #[serde(default)]
    agent: Vec<Agent>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ProductsFile {
    #[serde(default)]
    product: Vec<Product>,
}

pub const ENTITIES_FILE: &str = "entities.toml";
pub const AGENTS_FILE: &str = "agents.toml";
pub const PRODUCTS_FILE: &str = "products.toml";

/// Reads a file of the registry directory; a missing file is `None`.
fn read_optional(path: &Path, file: &str) -> Result<Option<String>, ConfigError> {
    match std::fs::read_to_string(path) {
        Ok(t) => Ok(Some(t)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(ConfigError {
            file: file.into(),
            path: String::new(),
            reason: format!("cannot read {}: {e}", path.display()),
        }),
    }
}

/// Parses TOML into `T`, naming the field path of the first problem.
fn parse_toml<T: DeserializeOwned>(text: &str, file: &str) -> Result<T, ConfigError> {
    let err = |path: String, reason: String| ConfigError {
        file: file.into(),
        path,
        reason,
    };
    let de = toml::de::Deserializer::parse(text).map_err(|e| err(String::new(), e.to_string()))?;
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let path = if path == "." { String::new() } else { path };
        err(path, e.into_inner().message().to_owned())
    })
}

/// The items of the registry files, each with its origin.
#[derive(Debug, Default)]
struct FileItems {
    entities: Vec<Slot<Entity>>,
    agents: Vec<Slot<Agent>>,
    products: Vec<Slot<Product>>,
    targets: Vec<Slot<Target>>,
    /// The actor of each item's change: `file:<path>`.
    actors: BTreeMap<(Kind, String), String>,
}

fn read_files(dir: Option<&Path>, targets: Option<&Path>) -> Result<FileItems, Vec<ConfigError>> {
    let mut items = FileItems::default();
    let mut errors = Vec::new();
    fn slots<T>(list: Vec<T>, file: &str, table: &'static str) -> Vec<Slot<T>> {
        list.into_iter()
            .enumerate()
            .map(|(index, item)| Slot {
                origin: Origin::File {
                    file: file.into(),
                    table,
                    index,
                },
                item,
            })
            .collect()
    }
    if let Some(dir) = dir {
        if !dir.is_dir() {
            return Err(vec![ConfigError {
                file: dir.display().to_string(),
                path: String::new(),
                reason: "registry directory does not exist".into(),
            }]);
        }
        let path = dir.join(ENTITIES_FILE);
        match read_optional(&path, ENTITIES_FILE).and_then(|t| {
            t.map(|t| parse_toml::<EntitiesFile>(&t, ENTITIES_FILE))
                .transpose()
        }) {
            Ok(Some(f)) => {
                for e in &f.entity {
                    items
                        .actors
                        .insert((Kind::Entity, e.id.clone()), actor_of(&path));
                }
                items.entities = slots(f.entity, ENTITIES_FILE, "entity");
            }
            Ok(None) => {}
            Err(e) => errors.push(e),
        }
        let path = dir.join(AGENTS_FILE);
        match read_optional(&path, AGENTS_FILE).and_then(|t| {
            t.map(|t| parse_toml::<AgentsFile>(&t, AGENTS_FILE))
                .transpose()
        }) {
            Ok(Some(f)) => {
                for a in &f.agent {
                    items
                        .actors
                        .insert((Kind::Agent, a.id.clone()), actor_of(&path));
                }
                items.agents = slots(f.agent, AGENTS_FILE, "agent");
            }
            Ok(None) => {}
            Err(e) => errors.push(e),
        }
        let path = dir.join(PRODUCTS_FILE);
        match read_optional(&path, PRODUCTS_FILE).and_then(|t| {
            t.map(|t| parse_toml::<ProductsFile>(&t, PRODUCTS_FILE))
                .transpose()
        }) {
            Ok(Some(f)) => {
                for p in &f.product {
                    items
                        .actors
                        .insert((Kind::Product, p.id.clone()), actor_of(&path));
                }
                items.products = slots(f.product, PRODUCTS_FILE, "product");
            }
            Ok(None) => {}
            Err(e) => errors.push(e),
        }
    }
    if let Some(path) = targets {
        let file = path.file_name().map_or_else(
            || path.display().to_string(),
            |n| n.to_string_lossy().into_owned(),
        );
        match std::fs::read_to_string(path) {
            Err(e) => errors.push(ConfigError {
                file: file.clone(),
                path: String::new(),
                reason: format!("cannot read {}: {e}", path.display()),
            }),
            Ok(t) => match shopfloor_core::targets::parse(&t) {
                Ok(list) => {
                    for t in &list {
                        items
                            .actors
                            .insert((Kind::Target, t.id.clone()), actor_of(path));
                    }
                    items.targets = slots(list, &file, "target");
                }
                Err(e) => errors.extend(e.errors.into_iter().map(|fe| ConfigError {
                    file: file.clone(),
                    path: fe.path,
                    reason: fe.reason,
                })),
            },
        }
    }
    if errors.is_empty() {
        Ok(items)
    } else {
        Err(errors)
    }
}

fn actor_of(path: &Path) -> String {
    format!("file:{}", path.display())
}

/// Validates the registry files on their own (as against an empty database) and returns the
/// registry they describe: what `sync_files` would accept on a fresh gateway.
pub fn check_files(
    dir: Option<&Path>,
    targets: Option<&Path>,
) -> Result<Snapshot, Vec<ConfigError>> {
    let files = read_files(dir, targets)?;
    let draft = Draft {
        entities: files.entities,
        agents: files.agents,
        products: files.products,
        targets: files.targets,
    };
    let issues = validate(&draft);
    if !issues.is_empty() {
        return Err(issues.iter().map(Issue::to_config_error).collect());
    }
    let mut targets: Vec<Target> = draft.targets.into_iter().map(|s| s.item).collect();
    targets.sort_by(|a, b| a.id.cmp(&b.id));
    Ok(Snapshot {
        entities: draft
            .entities
            .into_iter()
            .map(|s| (s.item.id.clone(), s.item))
            .collect(),
        agents: draft
            .agents
            .into_iter()
            .map(|s| (s.item.id.clone(), s.item))
            .collect(),
        products: draft
            .products
            .into_iter()
            .map(|s| (s.item.id.clone(), s.item))
            .collect(),
        targets,
    })
}

// ---------------------------------------------------------------------------------------------
// The registry
// ---------------------------------------------------------------------------------------------

/// The registry of one gateway: the store, the current snapshot and the agents' trust.
#[derive(Debug)]
pub struct Registry {
    db: Db,
    current: RwLock<Arc<Snapshot>>,
    trust: Arc<Trust>,
    /// Serialises changes from this process (validate, write, rebuild as one step).
    writes: tokio::sync::Mutex<()>,
}

/// Reads every stored item into a snapshot. A document that no longer parses is reported as
/// corrupt data (it was validated when written).
pub async fn read_snapshot(db: &Db) -> Result<Snapshot, StoreError> {
    fn docs<T: DeserializeOwned>(
        items: Vec<RegistryItem>,
        id: impl Fn(&T) -> &str,
    ) -> Result<Vec<T>, StoreError> {
        items
            .into_iter()
            .map(|it| {
                let t: T = serde_json::from_value(it.doc).map_err(|e| {
                    StoreError::Corrupt(format!("registry {} \"{}\": {e}", it.kind, it.id))
                })?;
                if id(&t) != it.id {
                    return Err(StoreError::Corrupt(format!(
                        "registry {} \"{}\": its document names id \"{}\"",
                        it.kind,
                        it.id,
                        id(&t)
                    )));
                }
                Ok(t)
            })
            .collect()
    }
    let entities: Vec<Entity> = docs(db.registry_list(KIND_ENTITY).await?, |e: &Entity| &e.id)?;
    let agents: Vec<Agent> = docs(db.registry_list(KIND_AGENT).await?, |a: &Agent| &a.id)?;
    let products: Vec<Product> = docs(db.registry_list(KIND_PRODUCT).await?, |p: &Product| &p.id)?;
    let mut targets: Vec<Target> = docs(db.registry_list(KIND_TARGET).await?, |t: &Target| &t.id)?;
    targets.sort_by(|a, b| a.id.cmp(&b.id));
    Ok(Snapshot {
        entities: entities.into_iter().map(|e| (e.id.clone(), e)).collect(),
        agents: agents.into_iter().map(|a| (a.id.clone(), a)).collect(),
        products: products.into_iter().map(|p| (p.id.clone(), p)).collect(),
        targets,
    })
}

fn now_ms() -> Ms {
    jiff::Timestamp::now().as_millisecond()
}

/// The JSON document stored for an item (its canonical serialisation).
fn to_doc<T: serde::Serialize>(item: &T) -> Result<Value, StoreError> {
    serde_json::to_value(item)
        .map_err(|e| StoreError::Corrupt(format!("cannot encode a registry document: {e}")))
}

impl Registry {
    /// Loads the stored registry and hands it to `trust`.
    pub async fn load(db: Db, trust: Arc<Trust>) -> Result<Registry, StoreError> {
        let snap = Arc::new(read_snapshot(&db).await?);
        for msg in trust.replace(snap.clone()) {
            tracing::warn!(message = "agent not trusted", detail = %msg);
        }
        Ok(Registry {
            db,
            current: RwLock::new(snap),
            trust,
            writes: tokio::sync::Mutex::new(()),
        })
    }

    /// The current registry (a consistent snapshot; cheap to clone).
    pub fn snapshot(&self) -> Arc<Snapshot> {
        match self.current.read() {
            Ok(g) => g.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Re-reads the stored registry (after changes by another gateway replica, or after a
    /// failed rebuild) and hands it to the trust.
    pub async fn reload(&self) -> Result<(), StoreError> {
        let snap = Arc::new(read_snapshot(&self.db).await?);
        self.install(snap);
        Ok(())
    }

    /// Re-reads the stored registry and installs it only if it differs from the current one
    /// (changes by `shopfloor-gateway agents …`, or by another replica). Returns whether it
    /// changed.
    pub async fn refresh(&self) -> Result<bool, StoreError> {
        let snap = read_snapshot(&self.db).await?;
        let current = self.snapshot();
        if format!("{snap:?}") == format!("{current:?}") {
            return Ok(false);
        }
        self.install(Arc::new(snap));
        Ok(true)
    }

    fn install(&self, snap: Arc<Snapshot>) {
        for msg in self.trust.replace(snap.clone()) {
            tracing::warn!(message = "agent not trusted", detail = %msg);
        }
        match self.current.write() {
            Ok(mut g) => *g = snap,
            Err(poisoned) => *poisoned.into_inner() = snap,
        }
    }

    /// Validates the registry files (`dir`: entities, agents, products; `targets`: the targets
    /// file) together with the stored items, then upserts every file item (actor
    /// `file:<path>`). Items only in the database are kept. Nothing is written when any file
    /// has a problem; every problem is reported as `file: path: reason`.
    pub async fn sync_files(
        &self,
        dir: Option<&Path>,
        targets: Option<&Path>,
        at: Ms,
    ) -> Result<SyncReport, Vec<ConfigError>> {
        let files = read_files(dir, targets)?;
        let store_err = |e: StoreError| {
            vec![ConfigError {
                file: STORED.into(),
                path: String::new(),
                reason: e.to_string(),
            }]
        };
        let _guard = self.writes.lock().await;
        let stored = read_snapshot(&self.db).await.map_err(store_err)?;
        let before = Draft::stored(&stored);
        let mut after = Draft::stored(&stored);
        overlay(&mut after.entities, files.entities.clone(), |e| &e.id);
        overlay(&mut after.agents, files.agents.clone(), |a| &a.id);
        overlay(&mut after.products, files.products.clone(), |p| &p.id);
        overlay(&mut after.targets, files.targets.clone(), |t| &t.id);
        let issues = new_issues(&before, &after);
        if !issues.is_empty() {
            return Err(issues.iter().map(Issue::to_config_error).collect());
        }

        let mut report = SyncReport::default();
        let mut docs: Vec<(Kind, String, Value)> = Vec::new();
        // Products and parents first, so a reader of the store never sees a dangling reference
        // for long; each put is its own transaction.
        for s in &files.products {
            docs.push((
                Kind::Product,
                s.item.id.clone(),
                to_doc(&s.item).map_err(store_err)?,
            ));
        }
        let mut entities: Vec<&Slot<Entity>> = files.entities.iter().collect();
        entities.sort_by_key(|s| s.item.id.matches('/').count());
        for s in entities {
            docs.push((
                Kind::Entity,
                s.item.id.clone(),
                to_doc(&s.item).map_err(store_err)?,
            ));
        }
        for s in &files.agents {
            docs.push((
                Kind::Agent,
                s.item.id.clone(),
                to_doc(&s.item).map_err(store_err)?,
            ));
        }
        for s in &files.targets {
            docs.push((
                Kind::Target,
                s.item.id.clone(),
                to_doc(&s.item).map_err(store_err)?,
            ));
        }
        let in_files: BTreeSet<(Kind, String)> =
            docs.iter().map(|(k, id, _)| (*k, id.clone())).collect();
        report.kept = stored
            .entities
            .keys()
            .filter(|id| !in_files.contains(&(Kind::Entity, (*id).clone())))
            .count()
            + stored
                .agents
                .keys()
                .filter(|id| !in_files.contains(&(Kind::Agent, (*id).clone())))
                .count()
            + stored
                .products
                .keys()
                .filter(|id| !in_files.contains(&(Kind::Product, (*id).clone())))
                .count()
            + stored
                .targets
                .iter()
                .filter(|t| !in_files.contains(&(Kind::Target, t.id.clone())))
                .count();
        let mut result = Ok(());
        for (kind, id, doc) in docs {
            let actor = files
                .actors
                .get(&(kind, id.clone()))
                .cloned()
                .unwrap_or_else(|| "file:".into());
            let item = RegistryItem {
                kind: kind.as_str().into(),
                id,
                doc: doc.clone(),
                updated_at: at,
                updated_by: actor,
            };
            match self.db.registry_put(&item).await {
                Ok(None) => report.added += 1,
                Ok(Some(prev)) if prev == doc => report.unchanged += 1,
                Ok(Some(_)) => report.changed += 1,
                Err(e) => {
                    result = Err(e);
                    break;
                }
            }
        }
        // Whatever was written is installed, also after a failed write.
        let rebuilt = read_snapshot(&self.db).await;
        if let Ok(snap) = &rebuilt {
            self.install(Arc::new(snap.clone()));
        }
        result.map_err(store_err)?;
        rebuilt.map_err(store_err)?;
        Ok(report)
    }

    /// Validates `doc` as an item of `kind` in the context of the current registry and stores
    /// it (audited with `actor`). Returns the previous and the stored document.
    pub async fn put(&self, kind: &str, doc: Value, actor: &str) -> Result<Change, RegistryError> {
        let kind = Kind::parse(kind).ok_or_else(|| RegistryError::UnknownKind(kind.into()))?;
        let _guard = self.writes.lock().await;
        let stored = read_snapshot(&self.db).await?;
        let before = Draft::stored(&stored);
        let mut after = Draft::stored(&stored);
        let (id, canonical) = match kind {
            Kind::Entity => {
                let e: Entity = parse_doc(doc)?;
                let out = (e.id.clone(), to_doc(&e)?);
                overlay(&mut after.entities, vec![submitted(e)], |e| &e.id);
                out
            }
            Kind::Agent => {
                let a: Agent = parse_doc(doc)?;
                let out = (a.id.clone(), to_doc(&a)?);
                overlay(&mut after.agents, vec![submitted(a)], |a| &a.id);
                out
            }
            Kind::Product => {
                let p: Product = parse_doc(doc)?;
                let out = (p.id.clone(), to_doc(&p)?);
                overlay(&mut after.products, vec![submitted(p)], |p| &p.id);
                out
            }
            Kind::Target => {
                let t: Target = parse_doc(doc)?;
                let out = (t.id.clone(), to_doc(&t)?);
                overlay(&mut after.targets, vec![submitted(t)], |t| &t.id);
                out
            }
        };
        let issues = new_issues(&before, &after);
        if !issues.is_empty() {
            return Err(RegistryError::Invalid(
                issues.iter().map(Issue::to_message).collect(),
            ));
        }
        let item = RegistryItem {
            kind: kind.as_str().into(),
            id,
            doc: canonical.clone(),
            updated_at: now_ms(),
            updated_by: actor.into(),
        };
        let before = self.db.registry_put(&item).await?;
        self.install(Arc::new(read_snapshot(&self.db).await?));
        Ok(Change {
            before,
            after: canonical,
        })
    }

    /// Deletes one item (audited with `actor`) unless something refers to it. Returns the
    /// deleted document.
    pub async fn delete(&self, kind: &str, id: &str, actor: &str) -> Result<Value, RegistryError> {
        let kind = Kind::parse(kind).ok_or_else(|| RegistryError::UnknownKind(kind.into()))?;
        let _guard = self.writes.lock().await;
        let stored = read_snapshot(&self.db).await?;
        let exists = match kind {
            Kind::Entity => stored.entities.contains_key(id),
            Kind::Agent => stored.agents.contains_key(id),
            Kind::Product => stored.products.contains_key(id),
            Kind::Target => stored.targets.iter().any(|t| t.id == id),
        };
        if !exists {
            return Err(RegistryError::NotFound {
                kind,
                id: id.into(),
            });
        }
        if let Some(why) = references(&stored, kind, id) {
            return Err(RegistryError::InUse(why));
        }
        let deleted = self
            .db
            .registry_delete(kind.as_str(), id, actor, now_ms())
            .await?;
        self.install(Arc::new(read_snapshot(&self.db).await?));
        deleted.ok_or_else(|| RegistryError::NotFound {
            kind,
            id: id.into(),
        })
    }

    /// Every stored item of `kind`, ordered by id.
    pub async fn list(&self, kind: &str) -> Result<Vec<RegistryItem>, RegistryError> {
        let kind = Kind::parse(kind).ok_or_else(|| RegistryError::UnknownKind(kind.into()))?;
        let mut items = self.db.registry_list(kind.as_str()).await?;
        items.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(items)
    }

    /// One stored item.
    pub async fn get(&self, kind: &str, id: &str) -> Result<RegistryItem, RegistryError> {
        let kind = Kind::parse(kind).ok_or_else(|| RegistryError::UnknownKind(kind.into()))?;
        self.db
            .registry_get(kind.as_str(), id)
            .await?
            .ok_or_else(|| RegistryError::NotFound {
                kind,
                id: id.into(),
            })
    }
}

fn submitted<T>(item: T) -> Slot<T> {
    Slot {
        origin: Origin::Submitted,
        item,
    }
}

/// Parses an API document into its type, naming the field of the first problem.
fn parse_doc<T: DeserializeOwned>(doc: Value) -> Result<T, RegistryError> {
    serde_path_to_error::deserialize(doc).map_err(|e| {
        let path = e.path().to_string();
        let field = if path == "." { "body".to_owned() } else { path };
        RegistryError::Invalid(vec![format!("{field}: {}", e.into_inner())])
    })
}

/// Why `kind`/`id` cannot be deleted, if something refers to it.
fn references(snap: &Snapshot, kind: Kind, id: &str) -> Option<String> {
    match kind {
        Kind::Entity => {
            let below = format!("{id}/");
            if let Some(child) = snap.entities.keys().find(|k| k.starts_with(&below)) {
                return Some(format!(
                    "entity {id} has children (e.g. {child}); delete them first"
                ));
            }
            if let Some(a) = snap
                .agents
                .values()
                .find(|a| a.scope.iter().any(|s| s == id))
            {
                return Some(format!("agent {} has {id} in its scope", a.id));
            }
            if let Some(m) = snap
                .entities
                .values()
                .find(|e| e.parent.as_deref() == Some(id))
            {
                return Some(format!("meter {} is a sub-meter of {id}", m.id));
            }
            None
        }
        Kind::Product => snap
            .entities
            .values()
            .find(|e| e.product.as_deref() == Some(id))
            .map(|e| format!("equipment {} makes product {id}", e.id)),
        Kind::Agent | Kind::Target => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entity(id: &str, kind: EntityKind) -> Entity {
        serde_json::from_value(serde_json::json!({"id": id, "kind": entity_kind_name(kind)}))
            .unwrap()
    }

    fn draft(entities: Vec<Entity>) -> Draft {
        Draft {
            entities: entities
                .into_iter()
                .enumerate()
                .map(|(index, item)| Slot {
                    origin: Origin::File {
                        file: ENTITIES_FILE.into(),
                        table: "entity",
                        index,
                    },
                    item,
                })
                .collect(),
            ..Draft::default()
        }
    }

    fn messages(d: &Draft) -> Vec<String> {
        validate(d)
            .iter()
            .map(|i| i.to_config_error().to_string())
            .collect()
    }

    #[test]
    fn paths() {
        assert_eq!(check_entity_path("p1/e1/w1"), Ok(3));
        assert!(check_entity_path("").is_err());
        assert!(check_entity_path("p1//e1").is_err());
        assert!(check_entity_path("P1").is_err());
        assert!(check_entity_path("p1/e1'; DROP TABLE x;--").is_err());
        assert!(check_entity_path("a/b/c/d/e/f").is_err());
        assert_eq!(parent_of("p1/e1"), Some("p1"));
        assert_eq!(parent_of("p1"), None);
    }

    #[test]
    fn tree_rules() {
        let mut meter = entity("p1/e1/w1/m1", EntityKind::Meter);
        meter.carrier = Some("electricity".into());
        meter.unit = Some("Wh".into());
        let d = draft(vec![
            entity("p1", EntityKind::Park),
            entity("p1/e1", EntityKind::Enterprise),
            entity("p1/e1/w1", EntityKind::Workshop),
            meter,
            entity("p1/e1/w1/m1/x", EntityKind::Equipment),
            entity("p1/e9/w1", EntityKind::Workshop),
            entity("p1/e1/w1", EntityKind::Line),
        ]);
        let m = messages(&d);
        assert!(
            m.contains(
                &"entities.toml: entity[4].id: parent p1/e1/w1/m1 is a meter, not a line"
                    .to_owned()
            ),
            "{m:?}"
        );
        assert!(
            m.contains(&"entities.toml: entity[5].id: parent p1/e9 is not an entity".to_owned()),
            "{m:?}"
        );
        assert!(
            m.iter()
                .any(|x| x.starts_with("entities.toml: entity[6].id: duplicate id \"p1/e1/w1\"")),
            "{m:?}"
        );
        assert!(m.contains(&"entities.toml: entity[6].kind: A line has a path of 4 segments; \"p1/e1/w1\" has 3".to_owned()), "{m:?}");
        // Equipment without its kind and control.
        assert!(m.contains(&"entities.toml: entity[4].control: required for equipment: cnc, plc, dcs, robot or manual".to_owned()), "{m:?}");
    }

    #[test]
    fn overrides() {
        assert!(check_override("natural_gas_kgce_per_m3", 1.2).is_ok());
        assert!(check_override("electricity_kgco2_per_kwh", 0.0).is_ok());
        assert!(check_override("electricity_kgce_per_kwh", 0.0).is_err());
        assert!(check_override("water_kgce_per_m3", 1.0).is_err());
        assert!(check_override("nonsense", 1.0).is_err());
        assert!(check_override("natural_gas_kgco2_per_m3", f64::NAN).is_err());
    }

    #[test]
    fn target_rules_match_core() {
        let t: Target = serde_json::from_value(serde_json::json!({
            "id": "t", "indicator": "key_process_nc_rate", "scope": "region", "comparison": "ge",
            "value": 0.55, "unit": "ratio", "year": 2020, "seed": "001:131", "name_zh": "x"
        }))
        .unwrap();
        assert!(check_target(&t).is_empty());
        let mut bad = t.clone();
        bad.unit = "%".into();
        bad.comparison = TargetComparison::ChangeLe;
        let fields: Vec<&str> = check_target(&bad).iter().map(|(f, _)| *f).collect();
        assert_eq!(fields, vec!["unit", "baseline_year"]);
    }
}
