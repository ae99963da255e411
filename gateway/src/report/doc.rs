//! The content of a report, built once and rendered as HTML, XLSX or CSV: header, indicators
//! (green-factory performance first), assessments, energy balance by carrier, economic inputs
//! with every version and their audit trail, completeness and the signature verification.
//!
//! Numbers are taken, never recomputed: indicator values, units, completeness and targets from
//! the API's own JSON (`indicators::report_json` on the engine's report); per-carrier energy
//! and CO₂ from the engine run on the evidence restricted to that carrier's meters;
//! coefficients from `shopfloor_core::coefficients::resolve`, the function the engine uses.

use std::collections::{BTreeMap, BTreeSet};

use jiff::tz::TimeZone;
use serde::Serialize;
use serde_json::Value;
use sha2::{Digest as _, Sha256};
use shopfloor_core::assessment;
use shopfloor_core::catalog;
use shopfloor_core::coefficients::{self, CoefficientChoice, ElectricityBasis};
use shopfloor_core::engine::Report;
use shopfloor_core::evidence::{Evidence, Inputs, Meter};
use shopfloor_core::path::{Level, ancestor};
use shopfloor_store::{AuditFilter, InputsRecord, Ms, Store as _};

use super::Lang;
use super::text::{self, INPUT_FIELDS};
use super::verify::Verification;
use crate::db::Db;
use crate::evidence::{UNMETERED_WATER, under};
use crate::indicators::{self, QueryError};
use crate::model::{EntityKind, Snapshot};

/// The green-factory performance indicators (INDICATORS.md §4), shown first in this order.
pub(crate) const GREEN: &[&str] = &[
    "energy_per_value_added",
    "water_per_value_added",
    "co2_per_value_added",
    "output_per_kwh",
    "land_output_intensity",
    "renewable_energy_share",
    "solid_waste_utilization_rate",
    "labor_productivity",
    "energy_per_value_added_change",
    "water_per_value_added_change",
];

/// Audit entries read per economic input record.
const AUDIT_LIMIT: i64 = 10_000;

/// An entity with its names.
#[derive(Debug, Clone)]
pub(crate) struct Named {
    pub id: String,
    pub name_zh: Option<String>,
    pub name_en: Option<String>,
    pub level: Option<Level>,
}

impl Named {
    /// The name in `lang`, else the other one, else nothing.
    pub(crate) fn name(&self, lang: Lang) -> Option<&str> {
        let (a, b) = match lang {
            Lang::ZhCn => (&self.name_zh, &self.name_en),
            Lang::En => (&self.name_en, &self.name_zh),
        };
        a.as_deref().or(b.as_deref())
    }
}

/// The report's header.
#[derive(Debug, Clone)]
pub(crate) struct Head {
    pub title: String,
    pub entity: Named,
    pub region: Option<String>,
    /// Park, enterprise above the entity.
    pub parents: Vec<Named>,
    pub from_rfc3339: String,
    pub to_rfc3339: String,
    pub from_local: String,
    pub to_local: String,
    pub time_zone: String,
    pub generated_at: String,
    pub gateway_version: &'static str,
    pub engine_version: String,
    pub coefficient_set: String,
    pub coefficient_set_name: String,
    pub electricity_basis: &'static str,
    pub co2_set: String,
    pub co2_set_name: String,
    /// Overrides in force (`key`, value, whose: the entity's enterprise or `p1/e2`).
    pub overrides: Vec<(String, f64, String)>,
    pub value_added_source: Option<String>,
    pub evidence_sha256: String,
    pub evidence_bytes: usize,
    pub counter_wraps: u32,
    pub counter_resets: u32,
}

/// A plan target shown with an indicator (as `GET /api/v1/indicators` gives it).
#[derive(Debug, Clone)]
pub(crate) struct TargetRow {
    pub id: String,
    pub comparison: String,
    pub value: f64,
    pub year: i64,
    pub met: Option<bool>,
}

/// One indicator, exactly as `GET /api/v1/indicators` gives it.
#[derive(Debug, Clone)]
pub(crate) struct IndRow {
    pub id: String,
    pub name_zh: String,
    pub name_en: String,
    pub value: Option<f64>,
    pub unit: String,
    pub completeness: f64,
    pub target: Option<TargetRow>,
    /// A green-factory performance indicator ([`GREEN`]).
    pub green: bool,
}

impl IndRow {
    pub(crate) fn name(&self, lang: Lang) -> &str {
        lang.t(&self.name_zh, &self.name_en)
    }
}

#[derive(Debug, Clone)]
pub(crate) struct CriterionRow {
    pub id: String,
    pub name_zh: String,
    pub name_en: String,
    pub indicator: String,
    pub unit: String,
    pub comparison: String,
    pub value: Option<f64>,
    pub benchmark: f64,
    pub leading: Option<f64>,
    pub pass: Option<bool>,
    pub tier: Option<String>,
    pub completeness: f64,
}

#[derive(Debug, Clone)]
pub(crate) struct AssessmentRow {
    pub kind: String,
    pub rule_set: String,
    pub rule_set_name_zh: String,
    pub rule_set_name_en: String,
    pub industry: String,
    /// `pass`, `fail` or `incomplete`.
    pub result: String,
    pub criteria: Vec<CriterionRow>,
}

/// A coefficient in force for a carrier: one value, or (a park whose enterprises override it
/// differently) several, listed in `source`.
#[derive(Debug, Clone)]
pub(crate) struct Coef {
    pub value: Option<f64>,
    pub source: String,
}

#[derive(Debug, Clone)]
pub(crate) struct CarrierRow {
    pub carrier: String,
    /// The carrier's indicator id (`electricity_kwh`).
    pub indicator: String,
    pub name_zh: String,
    pub name_en: String,
    pub unit: String,
    pub quantity: Option<f64>,
    pub completeness: f64,
    pub meters: usize,
    pub renewable_meters: usize,
    /// An energy carrier (water is not).
    pub energy: bool,
    pub kgce_per_unit: Option<Coef>,
    pub kgce: Option<f64>,
    /// Share of the entity's `energy_kgce`.
    pub share: Option<f64>,
    pub co2_per_unit: Coef,
    pub co2_kg: Option<f64>,
}

#[derive(Debug, Clone)]
pub(crate) struct Energy {
    pub rows: Vec<CarrierRow>,
    pub total_kgce: Option<f64>,
    pub total_tce: Option<f64>,
    pub total_co2_kg: Option<f64>,
    pub renewable_share: Option<f64>,
    pub sub_meters: usize,
}

/// The inputs the evidence uses for one entity (prorated to the period).
#[derive(Debug, Clone)]
pub(crate) struct UsedInputs {
    pub entity: String,
    pub values: Vec<(&'static str, Option<f64>)>,
}

/// One stored version of one economic input record overlapping the period.
#[derive(Debug, Clone)]
pub(crate) struct InputVersion {
    pub entity: String,
    pub from: Ms,
    pub to: Ms,
    pub version: i64,
    /// The highest version: the one in force.
    pub current: bool,
    pub at: Ms,
    pub actor: String,
    pub source: String,
    pub values: Vec<(String, f64)>,
}

/// One changed field of one audit entry of an input record.
#[derive(Debug, Clone)]
pub(crate) struct AuditRow {
    pub at: Ms,
    pub actor: String,
    pub entity: String,
    pub from: Ms,
    pub to: Ms,
    pub version: Option<i64>,
    /// Empty when the entry changed no value.
    pub field: String,
    pub before: Value,
    pub after: Value,
}

/// Everything a report shows.
#[derive(Debug, Clone)]
pub(crate) struct Doc {
    pub lang: Lang,
    pub tz: TimeZone,
    pub head: Head,
    pub indicators: Vec<IndRow>,
    pub assessments: Vec<AssessmentRow>,
    pub energy: Energy,
    pub inputs_used: Vec<UsedInputs>,
    pub input_versions: Vec<InputVersion>,
    pub audit: Vec<AuditRow>,
    /// Park: its enterprises.
    pub enterprises: Vec<Named>,
    /// `None`: not run.
    pub verification: Option<Verification>,
}

impl Doc {
    pub(crate) fn local(&self, t: Ms) -> String {
        text::local(t, &self.tz)
    }
}

/// What a report is built from.
#[derive(Debug)]
pub(crate) struct Sources<'a> {
    pub entity: &'a str,
    pub level: Level,
    pub from: Ms,
    pub to: Ms,
    pub lang: Lang,
    pub evidence: &'a Evidence,
    /// The evidence as served (its SHA-256 is printed).
    pub evidence_bytes: &'a [u8],
    pub report: &'a Report,
    /// `indicators::report_json` of `report`: the API's answer.
    pub api: &'a Value,
    pub verification: Option<Verification>,
}

fn named(snap: &Snapshot, id: &str) -> Named {
    let e = snap.entities.get(id);
    Named {
        id: id.to_owned(),
        name_zh: e.and_then(|e| e.name_zh.clone()),
        name_en: e.and_then(|e| e.name_en.clone()),
        level: crate::evidence::level(id),
    }
}

/// The serde name of a unit enum (`pass`, `leading`, `ge`, …).
fn serde_name<T: Serialize>(x: &T) -> String {
    match serde_json::to_value(x) {
        Ok(Value::String(s)) => s,
        _ => String::new(),
    }
}

fn head(snap: &Snapshot, tz: &TimeZone, s: &Sources<'_>) -> Head {
    let lang = s.lang;
    let entity = named(snap, s.entity);
    let depth = s.entity.split('/').count();
    let parents: Vec<Named> = (1..depth)
        .filter_map(|d| ancestor(s.entity, d))
        .map(|a| named(snap, a))
        .collect();
    let region = snap
        .entities
        .get(s.entity)
        .and_then(|e| e.region.clone())
        .or_else(|| {
            ancestor(s.entity, 1)
                .and_then(|p| snap.entities.get(p))
                .and_then(|p| p.region.clone())
        });
    let rec = &s.report.coefficients;
    let set_name = coefficients::energy_set(&rec.set)
        .map(|x| lang.t(&x.name_zh, &x.name_en).to_owned())
        .unwrap_or_default();
    let co2_name = coefficients::co2_set(&rec.co2_set)
        .map(|x| lang.t(&x.name_zh, &x.name_en).to_owned())
        .unwrap_or_default();
    let owner = if s.level == Level::Park {
        s.entity.to_owned()
    } else {
        ancestor(s.entity, 2).unwrap_or(s.entity).to_owned()
    };
    let mut overrides: Vec<(String, f64, String)> = rec
        .overrides
        .iter()
        .map(|(k, v)| (k.clone(), *v, owner.clone()))
        .collect();
    for (ent, o) in &rec.enterprise_overrides {
        overrides.extend(o.iter().map(|(k, v)| (k.clone(), *v, ent.clone())));
    }
    let title = match s.level {
        Level::Park => lang.t("园区期间审核报告", "Park period report"),
        Level::Workshop => lang.t("车间期间审核报告", "Workshop period report"),
        _ => lang.t(
            "企业期间审核报告（绿色工厂绩效）",
            "Enterprise period report (green factory performance)",
        ),
    };
    let now = jiff::Timestamp::now().as_millisecond();
    Head {
        title: title.to_owned(),
        entity,
        region,
        parents,
        from_rfc3339: indicators::rfc3339(s.from, tz),
        to_rfc3339: indicators::rfc3339(s.to, tz),
        from_local: text::local(s.from, tz),
        to_local: text::local(s.to, tz),
        time_zone: tz.iana_name().unwrap_or("UTC").to_owned(),
        generated_at: text::local(now, tz),
        gateway_version: env!("CARGO_PKG_VERSION"),
        engine_version: s.report.engine_version.to_owned(),
        coefficient_set: rec.set.clone(),
        coefficient_set_name: set_name,
        electricity_basis: match rec.electricity_basis {
            ElectricityBasis::Equivalent => lang.t("当量值", "calorific equivalent (当量值)"),
            ElectricityBasis::EqualValue => lang.t("等价值", "equal value (等价值)"),
        },
        co2_set: rec.co2_set.clone(),
        co2_set_name: co2_name,
        overrides,
        value_added_source: s.report.value_added_source.map(|v| serde_name(&v)),
        evidence_sha256: hex::encode(Sha256::digest(s.evidence_bytes)),
        evidence_bytes: s.evidence_bytes.len(),
        counter_wraps: s.report.counter_wraps,
        counter_resets: s.report.counter_resets,
    }
}

/// The indicators of the API's JSON: green-factory ones first ([`GREEN`] order), then the
/// catalog's order, then carrier quantities.
pub(crate) fn indicator_rows(api: &Value) -> Vec<IndRow> {
    let Some(map) = api.get("indicators").and_then(Value::as_object) else {
        return Vec::new();
    };
    let rank = |id: &str| -> (usize, usize, String) {
        if let Some(i) = GREEN.iter().position(|g| *g == id) {
            return (0, i, String::new());
        }
        match catalog::DEFS.iter().position(|d| d.id == id) {
            Some(i) => (1, i, String::new()),
            None => (2, 0, id.to_owned()),
        }
    };
    let mut rows: Vec<IndRow> = map
        .iter()
        .map(|(id, v)| {
            let s = |k: &str| v.get(k).and_then(Value::as_str).unwrap_or("").to_owned();
            let target = v
                .get("target")
                .filter(|t| t.is_object())
                .map(|t| TargetRow {
                    id: t.get("id").and_then(Value::as_str).unwrap_or("").to_owned(),
                    comparison: t
                        .get("comparison")
                        .and_then(Value::as_str)
                        .unwrap_or("")
                        .to_owned(),
                    value: t.get("value").and_then(Value::as_f64).unwrap_or(f64::NAN),
                    year: t.get("year").and_then(Value::as_i64).unwrap_or(0),
                    met: t.get("met").and_then(Value::as_bool),
                });
            IndRow {
                id: id.clone(),
                name_zh: s("name_zh"),
                name_en: s("name_en"),
                value: v.get("value").and_then(Value::as_f64),
                unit: s("unit"),
                completeness: v.get("completeness").and_then(Value::as_f64).unwrap_or(0.0),
                target,
                green: GREEN.contains(&id.as_str()),
            }
        })
        .collect();
    rows.sort_by_key(|r| rank(&r.id));
    rows
}

fn assessments(report: &Report, rows: &[IndRow]) -> Vec<AssessmentRow> {
    report
        .assessments
        .iter()
        .map(|a| {
            let rs = assessment::rule_sets(a.assessment)
                .iter()
                .find(|r| r.id == a.rule_set);
            AssessmentRow {
                kind: serde_name(&a.assessment),
                rule_set: a.rule_set.clone(),
                rule_set_name_zh: rs.map(|r| r.name_zh.clone()).unwrap_or_default(),
                rule_set_name_en: rs.map(|r| r.name_en.clone()).unwrap_or_default(),
                industry: a.industry.clone(),
                result: serde_name(&a.result),
                criteria: a
                    .criteria
                    .iter()
                    .map(|c| CriterionRow {
                        id: c.id.clone(),
                        name_zh: c.name_zh.clone(),
                        name_en: c.name_en.clone(),
                        indicator: c.indicator.clone(),
                        unit: rows
                            .iter()
                            .find(|r| r.id == c.indicator)
                            .map(|r| r.unit.clone())
                            .unwrap_or_default(),
                        comparison: serde_name(&c.comparison),
                        value: c.value,
                        benchmark: c.threshold,
                        leading: c.leading,
                        pass: c.pass,
                        tier: c.tier.map(|t| serde_name(&t)),
                        completeness: c.completeness,
                    })
                    .collect(),
            }
        })
        .collect()
}

/// Adds `(value, source)` unless present.
fn push_coef(list: &mut Vec<(f64, String)>, v: f64, source: String) {
    if !list.iter().any(|(x, s)| *x == v && *s == source) {
        list.push((v, source));
    }
}

fn coef(list: Vec<(f64, String)>) -> Coef {
    match list.as_slice() {
        [(v, s)] => Coef {
            value: Some(*v),
            source: s.clone(),
        },
        _ => Coef {
            value: None,
            source: list
                .iter()
                .map(|(v, s)| format!("{} ({s})", text::exact(*v)))
                .collect::<Vec<_>>()
                .join("; "),
        },
    }
}

/// The energy balance: per carrier of the (top-level) meters, the engine's quantity and
/// completeness (the API's carrier indicator), and kgce and CO₂ from the engine run on the
/// evidence restricted to that carrier's meters.
pub(crate) fn energy(lang: Lang, ev: &Evidence, rows: &[IndRow]) -> Result<Energy, QueryError> {
    let value = |id: &str| rows.iter().find(|r| r.id == id).and_then(|r| r.value);
    let choice = ev.coefficients.clone().unwrap_or_default();
    let mut out = Energy {
        rows: Vec::new(),
        total_kgce: value("energy_kgce"),
        total_tce: value("energy_tce"),
        total_co2_kg: value("co2_kg"),
        renewable_share: value("renewable_energy_share"),
        sub_meters: 0,
    };
    let Some(set) = coefficients::energy_set(&choice.set) else {
        return Ok(out);
    };
    let ids: BTreeSet<&str> = ev.meters.iter().map(|m| m.id.as_str()).collect();
    // Sub-meters are left out of every total by the engine: left out here too, so that the
    // restricted evidence never promotes one to a top-level meter.
    let top: Vec<&Meter> = ev
        .meters
        .iter()
        .filter(|m| !m.parent.as_deref().is_some_and(|p| ids.contains(p)))
        .collect();
    out.sub_meters = ev.meters.len() - top.len();
    let carriers: BTreeSet<&str> = top.iter().map(|m| m.carrier.as_str()).collect();
    for carrier in carriers {
        let Some(c) = set.carriers.get(carrier) else {
            continue;
        };
        let meters: Vec<Meter> = top
            .iter()
            .filter(|m| m.carrier == carrier)
            .map(|m| (*m).clone())
            .collect();
        let unit_key = coefficients::unit_suffix(&c.unit);
        let kgce_key = format!("{carrier}_kgce_per_{unit_key}");
        let co2_key = format!("{carrier}_kgco2_per_{unit_key}");
        let mut kgce_list = Vec::new();
        let mut co2_list = Vec::new();
        for m in &meters {
            let ent = ancestor(&m.id, 2);
            let ent_over = ent
                .and_then(|e| ev.facts(e))
                .and_then(|f| f.coefficients.as_ref())
                .map(|o| &o.overrides);
            let Some(r) = coefficients::resolve(&choice, ent_over, carrier) else {
                continue;
            };
            let source = |key: &str, default: String| -> String {
                if ent_over.is_some_and(|o| o.contains_key(key)) {
                    format!(
                        "{} {key} ({})",
                        lang.t("覆盖值", "override"),
                        ent.unwrap_or("")
                    )
                } else if choice.overrides.contains_key(key) {
                    format!("{} {key}", lang.t("覆盖值", "override"))
                } else {
                    default
                }
            };
            if let Some(k) = r.kgce {
                let basis = if carrier == "electricity" {
                    match choice.electricity_basis {
                        ElectricityBasis::Equivalent => lang.t(" 当量值", " equivalent"),
                        ElectricityBasis::EqualValue => lang.t(" 等价值", " equal value"),
                    }
                } else {
                    ""
                };
                push_coef(
                    &mut kgce_list,
                    k,
                    source(&kgce_key, format!("{}{basis}", choice.set)),
                );
            }
            push_coef(
                &mut co2_list,
                r.kgco2,
                source(&co2_key, choice.co2_set.clone()),
            );
        }
        let renewable_meters = meters.iter().filter(|m| m.renewable).count();
        let n = meters.len();
        let restricted = restrict(ev, &choice, meters);
        let sub = indicators::compute(&restricted)?;
        let sub_value = |id: &str| sub.indicators.get(id).and_then(|i| i.value);
        let indicator = coefficients::carrier_indicator_id(carrier, &c.unit);
        let row = rows.iter().find(|r| r.id == indicator);
        let kgce = if c.energy {
            sub_value("energy_kgce")
        } else {
            None
        };
        out.rows.push(CarrierRow {
            carrier: carrier.to_owned(),
            indicator: indicator.clone(),
            name_zh: c.name_zh.clone(),
            name_en: c.name_en.clone(),
            unit: c.unit.clone(),
            quantity: row.and_then(|r| r.value),
            completeness: row.map_or(0.0, |r| r.completeness),
            meters: n,
            renewable_meters,
            energy: c.energy,
            kgce_per_unit: c.energy.then(|| coef(kgce_list)),
            kgce,
            share: match (kgce, out.total_kgce) {
                (Some(k), Some(t)) if t > 0.0 => Some(k / t),
                _ => None,
            },
            co2_per_unit: coef(co2_list),
            co2_kg: sub_value("co2_kg"),
        });
    }
    // Energy carriers by their kgce, largest first; others (water) after.
    out.rows.sort_by(|a, b| {
        b.energy
            .cmp(&a.energy)
            .then_with(|| {
                b.kgce
                    .unwrap_or(-1.0)
                    .partial_cmp(&a.kgce.unwrap_or(-1.0))
                    .unwrap_or(std::cmp::Ordering::Equal)
            })
            .then_with(|| a.carrier.cmp(&b.carrier))
    });
    Ok(out)
}

/// The evidence with only `meters` (no equipment, inputs or signatures): what the engine
/// computes from it is those meters' energy and CO₂ under the same coefficients.
fn restrict(ev: &Evidence, choice: &CoefficientChoice, meters: Vec<Meter>) -> Evidence {
    Evidence {
        schema: ev.schema.clone(),
        entity: ev.entity.clone(),
        period: ev.period,
        calendar: ev.calendar.clone(),
        time_zone: ev.time_zone.clone(),
        coefficients: Some(choice.clone()),
        industry_mode: ev.industry_mode,
        industry: ev.industry.clone(),
        equipment: Vec::new(),
        meters,
        inputs: None,
        baseline: None,
        entities: ev.entities.clone(),
        signatures: Vec::new(),
    }
}

fn input_values(i: Option<&Inputs>, water: Option<f64>) -> Vec<(&'static str, Option<f64>)> {
    INPUT_FIELDS
        .iter()
        .map(|f| {
            let v = match (f.0, i) {
                ("value_added_cny", Some(i)) => i.value_added_cny,
                ("gross_output_cny", Some(i)) => i.gross_output_cny,
                ("employees_avg", Some(i)) => i.employees_avg,
                ("land_area_m2", Some(i)) => i.land_area_m2,
                ("solid_waste_generated_t", Some(i)) => i.solid_waste_generated_t,
                ("solid_waste_utilized_t", Some(i)) => i.solid_waste_utilized_t,
                ("unmetered_water_m3", _) => water,
                _ => None,
            };
            (f.0, v)
        })
        .collect()
}

/// The entities whose economic inputs the evidence uses: the entity itself, or a park's
/// enterprises.
fn input_entities(snap: &Snapshot, entity: &str, level: Level) -> Vec<String> {
    if level == Level::Park {
        snap.entities
            .values()
            .filter(|e| e.kind == EntityKind::Enterprise && under(&e.id, entity))
            .map(|e| e.id.clone())
            .collect()
    } else {
        vec![entity.to_owned()]
    }
}

fn used_inputs(ev: &Evidence, entities: &[String], level: Level) -> Vec<UsedInputs> {
    entities
        .iter()
        .map(|e| {
            let water = ev
                .meters
                .iter()
                .find(|m| m.id == format!("{e}/{UNMETERED_WATER}"))
                .and_then(|m| m.consumption);
            let inputs = if level == Level::Park {
                ev.facts(e).and_then(|f| f.inputs.as_ref())
            } else {
                ev.inputs.as_ref()
            };
            UsedInputs {
                entity: e.clone(),
                values: input_values(inputs, water),
            }
        })
        .collect()
}

fn doc_values(doc: &Value) -> Vec<(String, f64)> {
    let mut out: Vec<(String, f64)> = INPUT_FIELDS
        .iter()
        .filter_map(|f| {
            doc.get(f.0)
                .and_then(Value::as_f64)
                .map(|v| (f.0.to_owned(), v))
        })
        .collect();
    if let Some(o) = doc.as_object() {
        for (k, v) in o {
            if !INPUT_FIELDS.iter().any(|f| f.0 == k)
                && let Some(x) = v.as_f64()
            {
                out.push((k.clone(), x));
            }
        }
    }
    out
}

/// Field-by-field changes of one audit entry (value fields only; `entity`, `from`, `to` are the
/// record's key).
fn changes(before: &Value, after: &Value) -> Vec<(String, Value, Value)> {
    let mut keys: Vec<String> = INPUT_FIELDS.iter().map(|f| f.0.to_owned()).collect();
    for d in [before, after] {
        if let Some(o) = d.as_object() {
            for k in o.keys() {
                if !keys.contains(k) && !matches!(k.as_str(), "entity" | "from" | "to") {
                    keys.push(k.clone());
                }
            }
        }
    }
    keys.into_iter()
        .filter_map(|k| {
            let b = before.get(&k).cloned().unwrap_or(Value::Null);
            let a = after.get(&k).cloned().unwrap_or(Value::Null);
            (b != a).then_some((k, b, a))
        })
        .collect()
}

/// Every version of the input records of `entities` overlapping `[from, to)`, and the audit
/// entries of those records.
async fn input_history(
    db: &Db,
    entities: &[String],
    from: Ms,
    to: Ms,
) -> Result<(Vec<InputVersion>, Vec<AuditRow>), QueryError> {
    let mut versions = Vec::new();
    let mut audit = Vec::new();
    for e in entities {
        let history: Vec<InputsRecord> = db.inputs_history(e).await?;
        let mut by_key: BTreeMap<(Ms, Ms), Vec<InputsRecord>> = BTreeMap::new();
        for r in history {
            if r.from < to && r.to > from {
                by_key.entry((r.from, r.to)).or_default().push(r);
            }
        }
        for ((a, b), mut records) in by_key {
            records.sort_by_key(|r| r.version);
            let current = records.last().map_or(0, |r| r.version);
            let item = format!("{e}@{a}..{b}");
            let mut entries = db
                .audit(&AuditFilter {
                    kind_prefix: Some("inputs".into()),
                    item: Some(item),
                    since: None,
                    limit: AUDIT_LIMIT,
                })
                .await?;
            entries.reverse(); // oldest first
            let mut unused: Vec<&InputsRecord> = records.iter().collect();
            for entry in entries {
                let version = unused
                    .iter()
                    .position(|r| {
                        r.at == entry.at && r.actor == entry.actor && r.doc == entry.after
                    })
                    .map(|i| unused.remove(i).version);
                let row = |field: String, before: Value, after: Value| AuditRow {
                    at: entry.at,
                    actor: entry.actor.clone(),
                    entity: e.clone(),
                    from: a,
                    to: b,
                    version,
                    field,
                    before,
                    after,
                };
                let changed = changes(&entry.before, &entry.after);
                if changed.is_empty() {
                    audit.push(row(String::new(), Value::Null, Value::Null));
                }
                for (field, before, after) in changed {
                    audit.push(row(field, before, after));
                }
            }
            versions.extend(records.iter().map(|r| InputVersion {
                entity: e.clone(),
                from: r.from,
                to: r.to,
                version: r.version,
                current: r.version == current,
                at: r.at,
                actor: r.actor.clone(),
                source: r.source.clone(),
                values: doc_values(&r.doc),
            }));
        }
    }
    Ok((versions, audit))
}

/// Builds the content of a report.
pub(crate) async fn build(
    db: &Db,
    snap: &Snapshot,
    tz: &TimeZone,
    s: Sources<'_>,
) -> Result<Doc, QueryError> {
    let head = head(snap, tz, &s);
    let indicators = indicator_rows(s.api);
    let assessments = assessments(s.report, &indicators);
    let energy = energy(s.lang, s.evidence, &indicators)?;
    let entities = input_entities(snap, s.entity, s.level);
    let inputs_used = used_inputs(s.evidence, &entities, s.level);
    let (input_versions, audit) = input_history(db, &entities, s.from, s.to).await?;
    let enterprises = if s.level == Level::Park {
        entities.iter().map(|e| named(snap, e)).collect()
    } else {
        Vec::new()
    };
    Ok(Doc {
        lang: s.lang,
        tz: tz.clone(),
        head,
        indicators,
        assessments,
        energy,
        inputs_used,
        input_versions,
        audit,
        enterprises,
        verification: s.verification,
    })
}
