//! The evidence file `shopfloor.evidence/1` (DESIGN.md §3, docs/ENGINE.md §1): types, parsing
//! with JSON paths in every error, and semantic validation.
//!
//! Invariant: an [`Evidence`] returned by [`parse`] has passed [`Evidence::validate`]; the engine
//! relies on sorted-able, non-overlapping, in-range data and never re-checks it.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use jiff::Timestamp;
use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::{Deserialize, Serialize};

use crate::calendar::Calendar;
use crate::coefficients::{self, CoefficientChoice};
use crate::error::{Errors, InputError};
use crate::path::{EntityPath, Level};

pub const SCHEMA: &str = "shopfloor.evidence/1";

/// The longest period one evidence file may cover. It bounds the work (a shift calendar makes a
/// window per shift and day) so that no file or API query can exhaust the machine; ten years
/// hold a five-year plan with its baseline.
pub const MAX_PERIOD_DAYS: i64 = 3_653;
const MAX_PERIOD_S: f64 = (MAX_PERIOD_DAYS * 86_400) as f64;

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Evidence {
    pub schema: String,
    pub entity: String,
    pub period: Period,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub calendar: Option<Calendar>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_zone: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub coefficients: Option<CoefficientChoice>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub industry_mode: Option<IndustryMode>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub industry: Option<String>,
    pub equipment: Vec<Equipment>,
    #[serde(default)]
    pub meters: Vec<Meter>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inputs: Option<Inputs>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub baseline: Option<Baseline>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub entities: Vec<EntityFacts>,
    #[serde(default)]
    pub signatures: Vec<serde_json::Value>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Period {
    pub from: Timestamp,
    pub to: Timestamp,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum IndustryMode {
    #[default]
    Discrete,
    Process,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Control {
    Cnc,
    Plc,
    Dcs,
    Robot,
    Manual,
}

impl Control {
    /// Digital (numerically controlled) equipment: INDICATORS.md §2 `nc_controlled`.
    pub fn is_nc(self) -> bool {
        !matches!(self, Control::Manual)
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Equipment {
    pub id: String,
    pub kind: String,
    pub control: Control,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_process: Option<String>,
    pub networked: bool,
    #[serde(default)]
    pub states: Vec<StateInterval>,
    #[serde(default)]
    pub products: Vec<Product>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_points: Option<DataPoints>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct StateInterval {
    pub from: Timestamp,
    pub to: Timestamp,
    pub state: State,
}

/// Machine states of the ISO 22400-2 time model (INDICATORS.md §2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    Producing,
    Setup,
    Delay,
    Idle,
    PlannedDown,
    Offline,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Product {
    pub id: String,
    pub ideal_cycle_s: f64,
    pub produced: Quantity,
    pub good: Quantity,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value_added_per_unit_cny: Option<f64>,
}

#[derive(Debug, Clone, Copy, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DataPoints {
    pub configured: u64,
    pub received: u64,
}

/// A count given either as a number for the period or as raw counter readings.
#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub enum Quantity {
    Count(u64),
    Counter(Counter),
}

/// Raw readings of a cumulative register (part counter or meter), docs/ENGINE.md §2.4.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Counter {
    pub readings: Vec<Reading>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub width_bits: Option<u8>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollover: Option<f64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub replaced_at: Vec<Replacement>,
}

/// A borrowed view of a cumulative register, whether it is a part counter or a meter: what
/// [`crate::counter::Deltas`] and validation work on.
#[derive(Debug, Clone, Copy)]
pub struct Register<'a> {
    pub readings: &'a [Reading],
    pub width_bits: Option<u8>,
    pub rollover: Option<f64>,
    pub replaced_at: &'a [Replacement],
}

impl Counter {
    pub fn register(&self) -> Register<'_> {
        Register {
            readings: &self.readings,
            width_bits: self.width_bits,
            rollover: self.rollover,
            replaced_at: &self.replaced_at,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Reading {
    pub at: Timestamp,
    pub value: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Replacement {
    pub at: Timestamp,
    pub old_final: f64,
    pub new_initial: f64,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Meter {
    pub id: String,
    pub carrier: String,
    pub unit: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consumption: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub readings: Option<Vec<Reading>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollover: Option<f64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub replaced_at: Vec<Replacement>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ct_ratio: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pt_ratio: Option<f64>,
    #[serde(default)]
    pub renewable: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<String>,
}

impl Meter {
    /// The meter's readings as a register (no width: meters wrap at `rollover`).
    pub fn register(&self) -> Option<Register<'_>> {
        self.readings.as_deref().map(|readings| Register {
            readings,
            width_bits: None,
            rollover: self.rollover,
            replaced_at: &self.replaced_at,
        })
    }

    pub fn multiplier(&self) -> f64 {
        self.ct_ratio.unwrap_or(1.0) * self.pt_ratio.unwrap_or(1.0)
    }
}

/// Economic inputs of one entity (INDICATORS.md §4), each optional.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Inputs {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value_added_cny: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gross_output_cny: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub employees_avg: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub land_area_m2: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub solid_waste_generated_t: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub solid_waste_utilized_t: Option<f64>,
}

impl Inputs {
    fn fields(&self) -> [(&'static str, Option<f64>); 6] {
        [
            ("value_added_cny", self.value_added_cny),
            ("gross_output_cny", self.gross_output_cny),
            ("employees_avg", self.employees_avg),
            ("land_area_m2", self.land_area_m2),
            ("solid_waste_generated_t", self.solid_waste_generated_t),
            ("solid_waste_utilized_t", self.solid_waste_utilized_t),
        ]
    }
}

/// Comparison values for the `_change` indicators.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Baseline {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub good_per_pbt_hour: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub defect_rate: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub energy_per_value_added: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub water_per_value_added: Option<f64>,
}

impl Baseline {
    fn fields(&self) -> [(&'static str, Option<f64>); 4] {
        [
            ("good_per_pbt_hour", self.good_per_pbt_hour),
            ("defect_rate", self.defect_rate),
            ("energy_per_value_added", self.energy_per_value_added),
            ("water_per_value_added", self.water_per_value_added),
        ]
    }
}

/// Facts about an entity below the evidence's own (an enterprise of a park, a workshop).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct EntityFacts {
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub industry_mode: Option<IndustryMode>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub industry: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub coefficients: Option<OverridesOnly>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inputs: Option<Inputs>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub baseline: Option<Baseline>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub certifications: Vec<Certification>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct OverridesOnly {
    #[serde(default)]
    pub overrides: BTreeMap<String, f64>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Certification {
    pub kind: CertificationKind,
    /// A date (`YYYY-MM-DD`, start of that day in the evidence's time zone) or an RFC 3339 time.
    pub since: String,
    /// Last day in force (inclusive) or an RFC 3339 end time; absent: still in force.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CertificationKind {
    DigitalWorkshop,
    SmartFactory,
    GreenFactory,
}

// ---------------------------------------------------------------------------------------------
// Quantity: a number, or a counter object. Hand-written so a negative or fractional count gets a
// clear message at its own path.

impl<'de> Deserialize<'de> for Quantity {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Quantity;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a count (whole number ≥ 0) or a counter object {readings, width_bits?, rollover?, replaced_at?}")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Quantity, E> {
                Ok(Quantity::Count(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Quantity, E> {
                u64::try_from(v)
                    .map(Quantity::Count)
                    .map_err(|_| E::custom(format!("negative count {v}: counts must be ≥ 0")))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Quantity, E> {
                if v < 0.0 {
                    Err(E::custom(format!("negative count {v}: counts must be ≥ 0")))
                } else if v.fract() != 0.0 || v > 9.007_199_254_740_992e15 {
                    Err(E::custom(format!("count {v} is not a whole number")))
                } else {
                    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
                    Ok(Quantity::Count(v as u64))
                }
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Quantity, A::Error> {
                Counter::deserialize(de::value::MapAccessDeserializer::new(map))
                    .map(Quantity::Counter)
            }
        }
        d.deserialize_any(V)
    }
}

// ---------------------------------------------------------------------------------------------
// Parsing and validation.

/// Parses and validates an evidence document. Errors name the JSON path and the reason.
pub fn parse(json: &str) -> Result<Evidence, InputError> {
    let de = &mut serde_json::Deserializer::from_str(json);
    let ev: Evidence = serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let path = if path == "." { String::new() } else { path };
        InputError::one(path, clean_serde_message(&e.inner().to_string()))
    })?;
    ev.validate()?;
    Ok(ev)
}

/// serde_json appends " at line L column C"; keep it (it helps find the spot) but make the
/// common messages read naturally.
fn clean_serde_message(msg: &str) -> String {
    msg.replace(
        "unknown field",
        "unknown field (not part of shopfloor.evidence/1)",
    )
}

fn check_number(errs: &mut Errors, path: &str, v: f64, min_exclusive: Option<f64>) {
    if !v.is_finite() {
        errs.push(path, "must be a finite number");
    } else if let Some(m) = min_exclusive {
        if v <= m {
            errs.push(path, format!("must be greater than {m}, got {v}"));
        }
    } else if v < 0.0 {
        errs.push(path, format!("must not be negative, got {v}"));
    }
}

impl Evidence {
    pub fn path(&self) -> Result<EntityPath, InputError> {
        EntityPath::parse(&self.entity).map_err(|r| InputError::one("entity", r))
    }

    pub fn level(&self) -> Option<Level> {
        EntityPath::parse(&self.entity).ok().map(|p| p.level())
    }

    /// Every semantic rule of docs/ENGINE.md §1; reports all problems found.
    pub fn validate(&self) -> Result<(), InputError> {
        let mut errs = Errors::default();
        if self.schema != SCHEMA {
            errs.push(
                "schema",
                format!("must be \"{SCHEMA}\", got \"{}\"", self.schema),
            );
        }
        let entity = match EntityPath::parse(&self.entity) {
            Ok(p) => Some(p),
            Err(r) => {
                errs.push("entity", r);
                None
            }
        };
        if self.period.to <= self.period.from {
            errs.push(
                "period.to",
                format!(
                    "must be after period.from ({} ≤ {})",
                    self.period.to, self.period.from
                ),
            );
        } else if crate::calendar::secs(self.period.from, self.period.to) > MAX_PERIOD_S {
            errs.push(
                "period.to",
                format!(
                    "a period spans at most {MAX_PERIOD_DAYS} days (10 years); split a longer span into periods and roll them up"
                ),
            );
        }
        if let Some(tz) = &self.time_zone {
            if let Err(r) = crate::calendar::zone(tz) {
                errs.push("time_zone", r);
            } else if let Some(cal) = self.calendar.as_ref().filter(|c| c.time_zone != *tz) {
                errs.push(
                    "time_zone",
                    format!(
                        "\"{tz}\" contradicts calendar.time_zone \"{}\"",
                        cal.time_zone
                    ),
                );
            }
        }
        if let Some(cal) = &self.calendar {
            cal.validate("calendar", &mut errs);
        }
        if let Some(c) = &self.coefficients {
            c.validate("coefficients", &mut errs);
        }
        if let Some(ind) = &self.industry
            && ind.trim().is_empty()
        {
            errs.push("industry", "must not be empty");
        }
        self.validate_equipment(entity.as_ref(), &mut errs);
        self.validate_meters(entity.as_ref(), &mut errs);
        if let Some(inputs) = &self.inputs {
            if entity.as_ref().is_some_and(|e| e.level() == Level::Park) {
                errs.push(
                    "inputs",
                    "a park has no economic inputs of its own: give each enterprise's inputs under entities[].inputs",
                );
            }
            validate_inputs(inputs, "inputs", &mut errs);
        }
        if let Some(b) = &self.baseline {
            validate_baseline(b, "baseline", &mut errs);
        }
        self.validate_entities(entity.as_ref(), &mut errs);
        errs.into_result()
    }

    fn validate_equipment(&self, entity: Option<&EntityPath>, errs: &mut Errors) {
        let mut seen = BTreeSet::new();
        for (i, eq) in self.equipment.iter().enumerate() {
            let p = format!("equipment[{i}]");
            match EntityPath::parse(&eq.id) {
                Err(r) => errs.push(format!("{p}.id"), r),
                Ok(id) => {
                    if let Some(ent) = entity {
                        let ok = if ent.level() == Level::Equipment {
                            id == *ent
                        } else {
                            ent.contains_strictly(&id)
                        };
                        if !ok {
                            errs.push(
                                format!("{p}.id"),
                                format!("\"{}\" is not equipment of entity \"{}\"", eq.id, ent),
                            );
                        } else if id.depth() < 3 {
                            errs.push(format!("{p}.id"), "equipment must sit at least at workshop depth (park/enterprise/workshop/...)");
                        }
                    }
                }
            }
            if !seen.insert(eq.id.as_str()) {
                errs.push(
                    format!("{p}.id"),
                    format!("duplicate equipment id \"{}\"", eq.id),
                );
            }
            if eq.kind.trim().is_empty() {
                errs.push(format!("{p}.kind"), "must not be empty");
            }
            if eq
                .key_process
                .as_deref()
                .is_some_and(|k| k.trim().is_empty())
            {
                errs.push(
                    format!("{p}.key_process"),
                    "must not be empty when present (omit it for no key process)",
                );
            }
            for (j, s) in eq.states.iter().enumerate() {
                if s.to < s.from {
                    errs.push(
                        format!("{p}.states[{j}].to"),
                        format!("interval ends before it starts ({} < {})", s.to, s.from),
                    );
                }
            }
            // Overlaps, reported once per pair of neighbours after sorting.
            let mut order: Vec<usize> = (0..eq.states.len())
                .filter(|&j| eq.states[j].to > eq.states[j].from)
                .collect();
            order.sort_by_key(|&j| (eq.states[j].from, eq.states[j].to));
            for w in order.windows(2) {
                let (a, b) = (&eq.states[w[0]], &eq.states[w[1]]);
                if b.from < a.to {
                    errs.push(
                        format!("{p}.states[{}]", w[1]),
                        format!(
                            "overlaps states[{}] ({}..{}): a machine is in one state at a time",
                            w[0], a.from, a.to
                        ),
                    );
                }
            }
            let mut products = BTreeSet::new();
            for (j, pr) in eq.products.iter().enumerate() {
                let pp = format!("{p}.products[{j}]");
                if pr.id.trim().is_empty() {
                    errs.push(format!("{pp}.id"), "must not be empty");
                }
                if !products.insert(pr.id.as_str()) {
                    errs.push(
                        format!("{pp}.id"),
                        format!("duplicate product id \"{}\" on this equipment", pr.id),
                    );
                }
                check_number(
                    errs,
                    &format!("{pp}.ideal_cycle_s"),
                    pr.ideal_cycle_s,
                    Some(0.0),
                );
                if let Some(v) = pr.value_added_per_unit_cny {
                    check_number(errs, &format!("{pp}.value_added_per_unit_cny"), v, None);
                }
                for (name, q) in [("produced", &pr.produced), ("good", &pr.good)] {
                    if let Quantity::Counter(c) = q {
                        c.register().validate(&format!("{pp}.{name}"), errs);
                    }
                }
                if let (Quantity::Count(prod), Quantity::Count(good)) = (&pr.produced, &pr.good)
                    && good > prod
                {
                    errs.push(
                        format!("{pp}.good"),
                        format!("good ({good}) exceeds produced ({prod})"),
                    );
                }
            }
            if let Some(dp) = eq.data_points
                && dp.received > dp.configured
            {
                errs.push(
                    format!("{p}.data_points.received"),
                    format!(
                        "received ({}) exceeds configured ({})",
                        dp.received, dp.configured
                    ),
                );
            }
        }
    }

    fn validate_meters(&self, entity: Option<&EntityPath>, errs: &mut Errors) {
        let choice = self.coefficients.clone().unwrap_or_default();
        let set = coefficients::energy_set(&choice.set);
        let mut seen = BTreeSet::new();
        for (i, m) in self.meters.iter().enumerate() {
            let p = format!("meters[{i}]");
            if m.id.trim().is_empty() {
                errs.push(format!("{p}.id"), "must not be empty");
            } else if m.id.contains('/') {
                match (EntityPath::parse_meter(&m.id), entity) {
                    (Err(r), _) => errs.push(format!("{p}.id"), r),
                    (Ok(id), Some(ent)) if !ent.contains_strictly(&id) => errs.push(
                        format!("{p}.id"),
                        format!("\"{}\" is not below entity \"{}\"", m.id, ent),
                    ),
                    _ => {}
                }
            }
            if !seen.insert(m.id.as_str()) {
                errs.push(
                    format!("{p}.id"),
                    format!("duplicate meter id \"{}\"", m.id),
                );
            }
            if let Some(set) = set {
                match set.carriers.get(&m.carrier) {
                    None => errs.push(
                        format!("{p}.carrier"),
                        format!(
                            "unknown carrier \"{}\" (known: {})",
                            m.carrier,
                            set.carriers.keys().cloned().collect::<Vec<_>>().join(", ")
                        ),
                    ),
                    Some(c) => {
                        if coefficients::unit_factor(&m.unit, &c.unit).is_none() {
                            errs.push(
                                format!("{p}.unit"),
                                format!(
                                    "unit \"{}\" cannot be converted to {} for carrier {}",
                                    m.unit, c.unit, m.carrier
                                ),
                            );
                        }
                    }
                }
            }
            match (&m.consumption, &m.readings) {
                (Some(v), None) => check_number(errs, &format!("{p}.consumption"), *v, None),
                (None, Some(_)) => {
                    if let Some(r) = m.register() {
                        r.validate(&p, errs);
                    }
                }
                (Some(_), Some(_)) => {
                    errs.push(p.clone(), "give either consumption or readings, not both")
                }
                (None, None) => errs.push(p.clone(), "needs consumption or readings"),
            }
            if m.consumption.is_some() && (m.rollover.is_some() || !m.replaced_at.is_empty()) {
                errs.push(p.clone(), "rollover and replaced_at apply to readings only");
            }
            for (name, v) in [("ct_ratio", m.ct_ratio), ("pt_ratio", m.pt_ratio)] {
                if let Some(v) = v {
                    check_number(errs, &format!("{p}.{name}"), v, Some(0.0));
                }
            }
            if m.parent.as_deref() == Some(m.id.as_str()) {
                errs.push(format!("{p}.parent"), "a meter cannot be its own parent");
            }
        }
        for (i, m) in self.meters.iter().enumerate() {
            let parent = m
                .parent
                .as_deref()
                .and_then(|p| self.meters.iter().find(|o| o.id == p));
            if let Some(parent) = parent.filter(|p| p.carrier != m.carrier) {
                errs.push(
                    format!("meters[{i}].parent"),
                    format!(
                        "a {} sub-meter cannot sit below {} meter \"{}\"",
                        m.carrier, parent.carrier, parent.id
                    ),
                );
            }
        }
        // Parent chains must not loop (a loop would drop every meter in it from the totals).
        let parents: BTreeMap<&str, &str> = self
            .meters
            .iter()
            .filter_map(|m| m.parent.as_deref().map(|pa| (m.id.as_str(), pa)))
            .collect();
        for (i, m) in self.meters.iter().enumerate() {
            let mut cur = m.id.as_str();
            for _ in 0..=self.meters.len() {
                match parents.get(cur) {
                    Some(&next) if next == m.id && cur != m.id => {
                        errs.push(
                            format!("meters[{i}].parent"),
                            "parent chain loops back to this meter",
                        );
                        break;
                    }
                    Some(&next) => cur = next,
                    None => break,
                }
            }
        }
    }

    fn validate_entities(&self, entity: Option<&EntityPath>, errs: &mut Errors) {
        let mut seen = BTreeSet::new();
        for (i, e) in self.entities.iter().enumerate() {
            let p = format!("entities[{i}]");
            match (EntityPath::parse(&e.id), entity) {
                (Err(r), _) => errs.push(format!("{p}.id"), r),
                (Ok(id), Some(ent)) if !ent.contains_strictly(&id) => errs.push(
                    format!("{p}.id"),
                    format!("\"{}\" is not below entity \"{}\"; facts of the entity itself go at top level", e.id, ent),
                ),
                _ => {}
            }
            if !seen.insert(e.id.as_str()) {
                errs.push(format!("{p}.id"), format!("duplicate entity \"{}\"", e.id));
            }
            if let Some(inputs) = &e.inputs {
                validate_inputs(inputs, &format!("{p}.inputs"), errs);
            }
            if let Some(b) = &e.baseline {
                validate_baseline(b, &format!("{p}.baseline"), errs);
            }
            if let Some(o) = &e.coefficients {
                let choice = self.coefficients.clone().unwrap_or_default();
                coefficients::validate_overrides(
                    &choice,
                    &o.overrides,
                    &format!("{p}.coefficients.overrides"),
                    errs,
                );
            }
            if e.industry.as_deref().is_some_and(|s| s.trim().is_empty()) {
                errs.push(format!("{p}.industry"), "must not be empty");
            }
            let tz = self.zone_name();
            for (j, c) in e.certifications.iter().enumerate() {
                let cp = format!("{p}.certifications[{j}]");
                let since = crate::calendar::instant(&c.since, tz, false);
                if let Err(r) = &since {
                    errs.push(format!("{cp}.since"), r.clone());
                }
                if let Some(u) = &c.until {
                    match (crate::calendar::instant(u, tz, true), &since) {
                        (Err(r), _) => errs.push(format!("{cp}.until"), r),
                        (Ok(u), Ok(s)) if u <= *s => {
                            errs.push(format!("{cp}.until"), "ends before it starts")
                        }
                        _ => {}
                    }
                }
            }
        }
    }

    /// The IANA time zone for calendar arithmetic.
    pub fn zone_name(&self) -> &str {
        self.calendar
            .as_ref()
            .map(|c| c.time_zone.as_str())
            .or(self.time_zone.as_deref())
            .unwrap_or(crate::calendar::DEFAULT_ZONE)
    }

    /// Facts recorded for a sub-entity, if any.
    pub fn facts(&self, id: &str) -> Option<&EntityFacts> {
        self.entities.iter().find(|e| e.id == id)
    }
}

fn validate_inputs(inputs: &Inputs, path: &str, errs: &mut Errors) {
    for (name, v) in inputs.fields() {
        if let Some(v) = v {
            check_number(errs, &format!("{path}.{name}"), v, None);
        }
    }
    if let (Some(g), Some(u)) = (
        inputs.solid_waste_generated_t,
        inputs.solid_waste_utilized_t,
    ) {
        // Utilisation may draw on stock of earlier years (NBS definition), so utilized > generated
        // is legal; it is flagged only when it is absurd.
        if g > 0.0 && u > 10.0 * g {
            errs.push(
                format!("{path}.solid_waste_utilized_t"),
                format!("{u} t utilised is more than ten times the {g} t generated"),
            );
        }
    }
}

fn validate_baseline(b: &Baseline, path: &str, errs: &mut Errors) {
    for (name, v) in b.fields() {
        if let Some(v) = v {
            check_number(errs, &format!("{path}.{name}"), v, None);
        }
    }
}

impl Register<'_> {
    pub(crate) fn validate(&self, path: &str, errs: &mut Errors) {
        if let Some(w) = self.width_bits {
            if ![16, 32, 64].contains(&w) {
                errs.push(
                    format!("{path}.width_bits"),
                    format!("must be 16, 32 or 64, got {w}"),
                );
            }
            if self.rollover.is_some() {
                errs.push(
                    format!("{path}.rollover"),
                    "give width_bits or rollover, not both",
                );
            }
        }
        if let Some(r) = self.rollover {
            check_number(errs, &format!("{path}.rollover"), r, Some(0.0));
        }
        for (k, r) in self.readings.iter().enumerate() {
            check_number(errs, &format!("{path}.readings[{k}].value"), r.value, None);
        }
        let mut sorted: Vec<usize> = (0..self.readings.len()).collect();
        sorted.sort_by_key(|&k| self.readings[k].at);
        for w in sorted.windows(2) {
            let (a, b) = (&self.readings[w[0]], &self.readings[w[1]]);
            if a.at == b.at && a.value.to_bits() != b.value.to_bits() {
                errs.push(
                    format!("{path}.readings[{}]", w[1]),
                    format!(
                        "two readings at {} with different values ({} and {})",
                        a.at, a.value, b.value
                    ),
                );
            }
        }
        for (k, rep) in self.replaced_at.iter().enumerate() {
            let rp = format!("{path}.replaced_at[{k}]");
            check_number(errs, &format!("{rp}.old_final"), rep.old_final, None);
            check_number(errs, &format!("{rp}.new_initial"), rep.new_initial, None);
            if self.readings.iter().any(|r| r.at == rep.at) {
                errs.push(
                    format!("{rp}.at"),
                    "a reading at the replacement instant is ambiguous: use old_final/new_initial",
                );
            }
            if self.replaced_at[..k].iter().any(|o| o.at == rep.at) {
                errs.push(format!("{rp}.at"), "two replacements at the same instant");
            }
        }
    }
}
