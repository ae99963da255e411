//! Indicators, series and assessments of the API, and the indicator gauges of `/metrics`: every
//! number comes from [`shopfloor_core::compute`] on an evidence document built from the
//! roll-ups ([`crate::evidence`]), the same document `GET /api/v1/evidence` serves, so
//! `shopfloor-gateway calc` on it prints the same numbers (docs/GATEWAY.md).
//!
//! Invariants:
//! - query input is checked before any store read; bad input is [`QueryError::Bad`] naming the
//!   field, never a panic; an unknown entity is [`QueryError::NotFound`];
//! - periods are minute-aligned, non-empty and at most the engine's longest period; a series
//!   has at most [`MAX_POINTS`] points, each computed from its own evidence (one bucket read
//!   serves all points);
//! - a target is shown with the indicator it names; `change_*` targets are judged on the
//!   indicator's `_change` id (relative change vs the baseline) and exported as gauges under it.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use jiff::Timestamp;
use jiff::tz::TimeZone;
use serde_json::{Map, Number, Value, json};
use shopfloor_core::assessment::Kind;
use shopfloor_core::catalog;
use shopfloor_core::engine::{self, Report};
use shopfloor_core::path::{Level, ancestor};
use shopfloor_core::targets::{Scope, Target, TargetComparison};
use shopfloor_store::{DeviceFilter, Gran, Ms, Store, StoreError};

use crate::db::Db;
use crate::evidence::{self as ev, SeriesBases, Sources};
use crate::metrics::Metrics;
use crate::model::{EntityKind, Snapshot};
use crate::rollup::{self, HOUR, MINUTE, Tile};

/// Most points a series may have.
pub const MAX_POINTS: usize = 1_000;

/// Why a query cannot be answered. `Bad` and `NotFound` are the caller's fault (HTTP 400 /
/// 404); `Store` is ours (500).
#[derive(Debug)]
pub enum QueryError {
    Bad { field: String, reason: String },
    NotFound(String),
    Store(StoreError),
}

impl fmt::Display for QueryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            QueryError::Bad { field, reason } => write!(f, "{field}: {reason}"),
            QueryError::NotFound(what) => write!(f, "{what}: not found"),
            QueryError::Store(e) => write!(f, "{e}"),
        }
    }
}

impl From<StoreError> for QueryError {
    fn from(e: StoreError) -> Self {
        QueryError::Store(e)
    }
}

fn bad(field: &str, reason: impl Into<String>) -> QueryError {
    QueryError::Bad {
        field: field.to_owned(),
        reason: reason.into(),
    }
}

/// Parses a query time: RFC 3339 with offset, or a date `YYYY-MM-DD` (local midnight in `tz`).
pub fn parse_time(field: &str, text: &str, tz: &TimeZone) -> Result<Ms, QueryError> {
    let text = text.trim();
    if text.is_empty() {
        return Err(bad(field, "must not be empty"));
    }
    if let Ok(t) = text.parse::<Timestamp>() {
        return Ok(t.as_millisecond());
    }
    if text.len() == 10
        && let Ok(d) = text.parse::<jiff::civil::Date>()
    {
        return d
            .to_zoned(tz.clone())
            .and_then(|z| z.start_of_day())
            .map(|z| z.timestamp().as_millisecond())
            .map_err(|e| bad(field, format!("{text:?}: {e}")));
    }
    Err(bad(
        field,
        format!(
            "{text:?} is neither an RFC 3339 time with offset (2026-10-01T08:00:00+08:00) nor a date YYYY-MM-DD"
        ),
    ))
}

/// RFC 3339 with the offset of `tz` at that instant.
pub fn rfc3339(t: Ms, tz: &TimeZone) -> String {
    match Timestamp::from_millisecond(t) {
        Ok(ts) => ts.display_with_offset(tz.to_offset(ts)).to_string(),
        Err(_) => t.to_string(),
    }
}

/// Whole numbers as integers (`25200`), like `calc`; everything else as the shortest decimal
/// that reads back to the same f64.
fn number(v: Option<f64>) -> Value {
    match v {
        None => Value::Null,
        Some(x) if x.fract() == 0.0 && x.abs() < 9.0e15 =>
        {
            #[allow(clippy::cast_possible_truncation)]
            Value::Number(Number::from(x as i64))
        }
        Some(x) => Number::from_f64(x).map_or(Value::Null, Value::Number),
    }
}

pub(crate) fn compute(e: &shopfloor_core::Evidence) -> Result<Report, QueryError> {
    engine::compute(e).map_err(|err| {
        QueryError::Store(StoreError::Corrupt(format!(
            "the engine rejected the evidence of {}: {err}",
            e.entity
        )))
    })
}

// ---------------------------------------------------------------------------------------------
// Targets.

fn year_of(t: Ms, tz: &TimeZone) -> Option<i16> {
    Timestamp::from_millisecond(t)
        .ok()
        .map(|ts| ts.to_zoned(tz.clone()).year())
}

/// Whether a target applies to `entity` (scope, region, named entity).
fn applies(snap: &Snapshot, t: &Target, entity: &str) -> bool {
    let Some(e) = snap.entities.get(entity) else {
        return false;
    };
    let park = ancestor(entity, 1).and_then(|p| snap.entities.get(p));
    let region_ok = match &t.region {
        None => true,
        Some(r) => {
            e.region.as_deref() == Some(r.as_str())
                || park.is_some_and(|p| p.region.as_deref() == Some(r.as_str()))
        }
    };
    let entity_ok = match &t.entity {
        None => true,
        Some(n) => e.id == *n || e.name_zh.as_deref() == Some(n) || e.name_en.as_deref() == Some(n),
    };
    let level_ok = match t.scope {
        Scope::Park | Scope::Region => e.kind == EntityKind::Park,
        Scope::Enterprise => e.kind == EntityKind::Enterprise,
    };
    level_ok && region_ok && entity_ok
}

/// The target of `indicator` for `entity` in the period ending at `to`: among the applicable
/// ones, the earliest whose year is not before the period's year, else the latest; ties by id.
pub fn target_for<'a>(
    snap: &'a Snapshot,
    tz: &TimeZone,
    entity: &str,
    indicator: &str,
    to: Ms,
) -> Option<&'a Target> {
    let year = i32::from(year_of(to - 1, tz)?);
    let mut cands: Vec<&Target> = snap
        .targets
        .iter()
        .filter(|t| t.indicator == indicator && applies(snap, t, entity))
        .collect();
    cands.sort_by(|a, b| {
        let key = |t: &Target| (t.year < year, if t.year < year { -t.year } else { t.year });
        key(a).cmp(&key(b)).then_with(|| a.id.cmp(&b.id))
    });
    cands.first().copied()
}

fn is_change(t: &Target) -> bool {
    matches!(
        t.comparison,
        TargetComparison::ChangeLe | TargetComparison::ChangeGe
    )
}

/// Whether the report meets the target: on the indicator itself, or for a change target on its
/// `_change` id; null when that value is unknown.
fn met(t: &Target, report: &Report) -> Option<bool> {
    let id = if is_change(t) {
        format!("{}_change", t.indicator)
    } else {
        t.indicator.clone()
    };
    report
        .indicators
        .get(&id)
        .and_then(|i| i.value)
        .and_then(|v| t.is_met(v))
}

fn comparison(t: &Target) -> &'static str {
    match t.comparison {
        TargetComparison::Ge => "ge",
        TargetComparison::Le => "le",
        TargetComparison::ChangeLe => "change_le",
        TargetComparison::ChangeGe => "change_ge",
    }
}

// ---------------------------------------------------------------------------------------------
// Queries.

pub(crate) fn report_json(
    snap: &Snapshot,
    tz: &TimeZone,
    entity: &str,
    from: Ms,
    to: Ms,
    report: &Report,
) -> Value {
    let set = report.coefficients.set.as_str();
    let mut inds = Map::new();
    for (id, ind) in &report.indicators {
        let (name_zh, name_en) = catalog::describe(id, set)
            .map(|(zh, en, _)| (zh, en))
            .unwrap_or_default();
        let target = target_for(snap, tz, entity, id, to).map_or(Value::Null, |t| {
            json!({
                "id": t.id,
                "comparison": comparison(t),
                "value": t.value,
                "year": t.year,
                "met": met(t, report),
            })
        });
        inds.insert(
            id.clone(),
            json!({
                "value": number(ind.value),
                "unit": ind.unit,
                "completeness": ind.completeness,
                "name_zh": name_zh,
                "name_en": name_en,
                "coefficient_set": set,
                "target": target,
            }),
        );
    }
    json!({
        "entity": entity,
        "level": report.level,
        "from": rfc3339(from, tz),
        "to": rfc3339(to, tz),
        "engine_version": report.engine_version,
        "coefficients": report.coefficients,
        "value_added_source": report.value_added_source,
        "indicators": Value::Object(inds),
    })
}

/// `GET /api/v1/indicators`: every indicator of `entity` over `[from, to)` as JSON.
pub async fn indicators(
    db: &Db,
    snap: &Snapshot,
    tz: &TimeZone,
    entity: &str,
    from: Ms,
    to: Ms,
) -> Result<serde_json::Value, QueryError> {
    let e = ev::build(db, snap, tz, entity, from, to).await?;
    let report = compute(&e)?;
    Ok(report_json(snap, tz, entity, from, to, &report))
}

/// Point boundaries of a series: `[from, to)` cut at every step boundary (minutes and hours on
/// whole UTC minutes and hours, days and months at local midnight in `tz`); the first and last
/// point may be partial.
pub fn steps(from: Ms, to: Ms, step: &str, tz: &TimeZone) -> Result<Vec<(Ms, Ms)>, QueryError> {
    let next = |t: Ms| -> Option<Ms> {
        match step {
            "minute" => Some(rollup::floor_minute(t) + MINUTE),
            "hour" => Some(rollup::floor_hour(t) + HOUR),
            "day" => rollup::next_day_start(t, tz),
            _ => rollup::next_month_start(t, tz),
        }
    };
    if !matches!(step, "minute" | "hour" | "day" | "month") {
        return Err(bad("step", "must be minute, hour, day or month"));
    }
    let too_many = || {
        bad(
            "step",
            format!("more than {MAX_POINTS} points; choose a coarser step or a shorter period"),
        )
    };
    let estimate = match step {
        "minute" => (to - from) / MINUTE,
        "hour" => (to - from) / HOUR,
        _ => 0,
    };
    if usize::try_from(estimate).unwrap_or(usize::MAX) > MAX_POINTS {
        return Err(too_many());
    }
    let mut out = Vec::new();
    let mut a = from;
    while a < to {
        let b = next(a)
            .ok_or_else(|| bad("to", "out of the supported range"))?
            .min(to);
        out.push((a, b));
        if out.len() > MAX_POINTS {
            return Err(too_many());
        }
        a = b;
    }
    Ok(out)
}

/// `GET /api/v1/indicators/<id>/series`: one value per step (`minute`, `hour`, `day`, `month`).
#[allow(clippy::too_many_arguments)]
pub async fn series(
    db: &Db,
    snap: &Snapshot,
    tz: &TimeZone,
    id: &str,
    entity: &str,
    from: Ms,
    to: Ms,
    step: &str,
) -> Result<serde_json::Value, QueryError> {
    ev::check_period(from, to)?;
    ev::lookup(snap, entity)?;
    let level = ev::level(entity).ok_or_else(|| bad("entity", "not an entity path"))?;
    let set = shopfloor_core::coefficients::DEFAULT_SET;
    let known = match catalog::def(id) {
        Some(d) => {
            if !catalog::fixed_ids_for(level).any(|x| x.id == d.id) {
                return Err(bad(
                    "id",
                    format!("{id} is not an indicator of the {} level", level.as_str()),
                ));
            }
            true
        }
        None => catalog::carrier_ids(set).iter().any(|c| c.id == id),
    };
    if !known {
        return Err(bad("id", format!("{id} is not a catalog indicator id")));
    }
    let points = steps(from, to, step, tz)?;
    let mut tiles_of: Vec<Vec<Tile>> = Vec::with_capacity(points.len());
    for &(a, b) in &points {
        tiles_of.push(rollup::tile(a, b, tz, Gran::Month).map_err(|r| bad("from", r))?);
    }
    let all: Vec<Tile> = tiles_of.iter().flatten().copied().collect();
    let rows = ev::fetch(db, entity, &all).await?;
    let initial = ev::bases(db, entity, from).await?;
    let filter = DeviceFilter {
        prefix: entity.to_owned(),
    };
    let inputs = db.inputs_current(&filter, from, to).await?;
    let mut bases = SeriesBases::new(initial, &rows);
    let (name_zh, name_en, unit) = catalog::describe(id, set).unwrap_or_default();
    let mut out = Vec::with_capacity(points.len());
    for (&(a, b), tiles) in points.iter().zip(&tiles_of) {
        let base = bases.at(a);
        let src = Sources {
            rows: &rows,
            bases: &base,
            inputs: &inputs,
            chains: &[],
        };
        let e = ev::assemble(snap, tz, entity, a, b, tiles, &src)?;
        let report = compute(&e)?;
        let ind = report.indicators.get(id);
        out.push(json!({
            "from": rfc3339(a, tz),
            "to": rfc3339(b, tz),
            "value": number(ind.and_then(|i| i.value)),
            "completeness": ind.map_or(0.0, |i| i.completeness),
        }));
    }
    Ok(json!({
        "indicator": id,
        "entity": entity,
        "level": level,
        "step": step,
        "unit": unit,
        "name_zh": name_zh,
        "name_en": name_en,
        "from": rfc3339(from, tz),
        "to": rfc3339(to, tz),
        "points": out,
    }))
}

/// `GET /api/v1/assessments/<kind>`: `digital_workshop` or `green_factory`.
pub async fn assessment(
    db: &Db,
    snap: &Snapshot,
    tz: &TimeZone,
    kind: &str,
    entity: &str,
    from: Ms,
    to: Ms,
) -> Result<serde_json::Value, QueryError> {
    let (k, want) = match Kind::parse(kind) {
        Some(Kind::DigitalWorkshop) => (Kind::DigitalWorkshop, Level::Workshop),
        Some(Kind::GreenFactory) => (Kind::GreenFactory, Level::Enterprise),
        None => {
            return Err(bad(
                "kind",
                format!("{kind:?} is not an assessment (digital_workshop, green_factory)"),
            ));
        }
    };
    ev::lookup(snap, entity)?;
    let level = ev::level(entity).ok_or_else(|| bad("entity", "not an entity path"))?;
    if level != want {
        return Err(bad(
            "entity",
            format!(
                "{kind} assesses a {}, and {entity} is a {}",
                want.as_str(),
                level.as_str()
            ),
        ));
    }
    let e = ev::build(db, snap, tz, entity, from, to).await?;
    let report = compute(&e)?;
    let results: Vec<_> = report
        .assessments
        .iter()
        .filter(|a| a.assessment == k)
        .collect();
    Ok(json!({
        "assessment": kind,
        "entity": entity,
        "level": level,
        "from": rfc3339(from, tz),
        "to": rfc3339(to, tz),
        "engine_version": report.engine_version,
        "industry": e.industry.as_deref().unwrap_or(shopfloor_core::assessment::DEFAULT_INDUSTRY),
        "results": results,
    }))
}

/// `GET /api/v1/evidence`: the evidence document (serialised `shopfloor.evidence/1`).
pub async fn evidence(
    db: &Db,
    snap: &Snapshot,
    tz: &TimeZone,
    entity: &str,
    from: Ms,
    to: Ms,
) -> Result<shopfloor_core::Evidence, QueryError> {
    ev::build(db, snap, tz, entity, from, to).await
}

// ---------------------------------------------------------------------------------------------
// Gauges.

/// The entities whose gauges are exported: parks, then enterprises, then workshops, each in id
/// order, at most `max`.
pub fn gauge_entities(snap: &Snapshot, max: usize) -> Vec<String> {
    [
        EntityKind::Park,
        EntityKind::Enterprise,
        EntityKind::Workshop,
    ]
    .into_iter()
    .flat_map(|k| {
        snap.entities
            .values()
            .filter(move |e| e.kind == k)
            .map(|e| e.id.clone())
    })
    .take(max)
    .collect()
}

/// `(indicator id, value)` pairs of one entity's gauges.
pub type Gauges = Vec<(String, f64)>;

/// The gauge values of a report: every id with a value, and the target values (change targets
/// under the `_change` id, where the comparison is meaningful).
pub fn gauge_values(
    snap: &Snapshot,
    tz: &TimeZone,
    entity: &str,
    to: Ms,
    report: &Report,
) -> (Gauges, Gauges) {
    let values: Gauges = report
        .indicators
        .iter()
        .filter_map(|(id, i)| i.value.map(|v| (id.clone(), v)))
        .collect();
    let mut targets: BTreeMap<String, f64> = BTreeMap::new();
    for id in report.indicators.keys() {
        if let Some(t) = target_for(snap, tz, entity, id, to) {
            let gauge = if is_change(t) {
                format!("{id}_change")
            } else {
                id.clone()
            };
            if report.indicators.contains_key(&gauge) {
                targets.entry(gauge).or_insert(t.value);
            }
        }
    }
    (values, targets.into_iter().collect())
}

/// Recomputes today's indicators (local midnight in `tz` → `now`, on a whole minute) of the
/// parks, enterprises and workshops (at most `max_entities`, parks first) and replaces their
/// gauges: every indicator id of the entity's level that has a value, plus targets. The
/// buckets of each park are read once for all its entities. An entity that fails is logged
/// and its gauges are removed; entities no longer selected lose theirs.
pub async fn refresh_gauges(
    db: &Db,
    snap: &Snapshot,
    tz: &TimeZone,
    metrics: &Metrics,
    max_entities: usize,
    now: Ms,
) {
    let to = rollup::floor_minute(now);
    let Some(from) = rollup::day_start(to, tz) else {
        tracing::warn!(now, "indicator gauges: time out of range");
        return;
    };
    let selected = gauge_entities(snap, max_entities);
    let keep: BTreeSet<String> = selected.iter().cloned().collect();
    metrics.retain_indicator_entities(&keep);
    if from >= to {
        // The first minute of the day: nothing to compute yet; the gauges keep yesterday's.
        return;
    }
    let mut by_park: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for id in &selected {
        if let Some(p) = ancestor(id, 1) {
            by_park.entry(p).or_default().push(id);
        }
    }
    for (park, entities) in by_park {
        let read = park_sources(db, tz, park, from, to).await;
        for entity in entities {
            let result = match &read {
                Ok((tiles, rows, bases, inputs)) => {
                    let src = Sources {
                        rows,
                        bases,
                        inputs,
                        chains: &[],
                    };
                    ev::assemble(snap, tz, entity, from, to, tiles, &src).and_then(|e| compute(&e))
                }
                Err(e) => Err(QueryError::Store(StoreError::Db(e.to_string()))),
            };
            match result {
                Ok(report) => {
                    let (values, targets) = gauge_values(snap, tz, entity, to, &report);
                    metrics.set_indicators(entity, &values, &targets);
                }
                Err(e) => {
                    tracing::warn!(entity, error = %e, "indicator gauges not refreshed");
                    metrics.set_indicators(entity, &[], &[]);
                }
            }
        }
    }
}

type ParkSources = (
    Vec<Tile>,
    rollup::Buckets,
    BTreeMap<(String, String), Ms>,
    Vec<shopfloor_store::InputsRecord>,
);

async fn park_sources(
    db: &Db,
    tz: &TimeZone,
    park: &str,
    from: Ms,
    to: Ms,
) -> Result<ParkSources, StoreError> {
    let tiles = rollup::tile(from, to, tz, Gran::Month).map_err(StoreError::Corrupt)?;
    let rows = ev::fetch(db, park, &tiles).await?;
    let bases = ev::bases(db, park, from).await?;
    let filter = DeviceFilter {
        prefix: park.to_owned(),
    };
    let inputs = db.inputs_current(&filter, from, to).await?;
    Ok((tiles, rows, bases, inputs))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::model::Entity;

    fn tz() -> TimeZone {
        TimeZone::get("Asia/Shanghai").unwrap()
    }

    fn at(s: &str) -> Ms {
        s.parse::<Timestamp>().unwrap().as_millisecond()
    }

    fn target(id: &str, scope: Scope, region: Option<&str>, year: i32) -> Target {
        Target {
            id: id.into(),
            indicator: "output_per_kwh".into(),
            scope,
            region: region.map(Into::into),
            entity: None,
            comparison: TargetComparison::Ge,
            value: 30.0,
            unit: "CNY/kWh".into(),
            year,
            baseline_year: None,
            binding: None,
            cumulative: None,
            seed: "x".into(),
            name_zh: "x".into(),
            note: None,
        }
    }

    fn snap(targets: Vec<Target>) -> Snapshot {
        let e: Entity = serde_json::from_value(serde_json::json!({
            "id": "p1", "kind": "park", "region": "渝西"
        }))
        .unwrap();
        let ent: Entity =
            serde_json::from_value(serde_json::json!({"id": "p1/e1", "kind": "enterprise"}))
                .unwrap();
        Snapshot {
            entities: [(e.id.clone(), e), (ent.id.clone(), ent)].into(),
            targets,
            ..Snapshot::default()
        }
    }

    #[test]
    fn the_next_target_year_wins_else_the_latest() {
        let s = snap(vec![
            target("r2015", Scope::Region, Some("渝西"), 2015),
            target("r2025", Scope::Region, Some("渝西"), 2025),
            target("r2020", Scope::Region, Some("渝西"), 2020),
            target("other", Scope::Region, Some("渝东南"), 2021),
            target("ent", Scope::Enterprise, None, 2021),
        ]);
        let to = at("2021-01-01T00:00:00+08:00"); // the period's last instant is in 2020
        let id =
            |e: &str, to: Ms| target_for(&s, &tz(), e, "output_per_kwh", to).map(|t| t.id.clone());
        assert_eq!(id("p1", to), Some("r2020".into()));
        assert_eq!(
            id("p1", at("2023-06-01T00:00:00+08:00")),
            Some("r2025".into())
        );
        assert_eq!(
            id("p1", at("2030-06-01T00:00:00+08:00")),
            Some("r2025".into())
        );
        // Enterprise targets apply to enterprises (through the park's region when they name one).
        assert_eq!(id("p1/e1", to), Some("ent".into()));
        assert_eq!(target_for(&s, &tz(), "p1", "oee", to), None);
    }

    #[test]
    fn series_steps_follow_local_days_and_months() {
        let tz = tz();
        let from = at("2026-01-30T12:00:00+08:00");
        let to = at("2026-03-01T00:00:00+08:00");
        let months = steps(from, to, "month", &tz).unwrap();
        assert_eq!(
            months,
            vec![
                (from, at("2026-02-01T00:00:00+08:00")),
                (at("2026-02-01T00:00:00+08:00"), to)
            ]
        );
        let days = steps(from, to, "day", &tz).unwrap();
        assert_eq!(
            days.len(),
            30,
            "half of Jan 30, Jan 31, 28 days of February"
        );
        assert_eq!(days[0], (from, at("2026-01-31T00:00:00+08:00")));
        assert_eq!(
            steps(from, from + 90 * MINUTE, "hour", &tz).unwrap().len(),
            2
        );
        assert!(matches!(
            steps(from, from + 1_001 * MINUTE, "minute", &tz),
            Err(QueryError::Bad { field, .. }) if field == "step"
        ));
        assert_eq!(
            steps(from, from + 1_000 * MINUTE, "minute", &tz)
                .unwrap()
                .len(),
            1_000
        );
        assert!(matches!(
            steps(from, to, "week", &tz),
            Err(QueryError::Bad { field, .. }) if field == "step"
        ));
    }

    #[test]
    fn numbers_print_like_calc() {
        assert_eq!(number(Some(25_200.0)).to_string(), "25200");
        assert_eq!(number(Some(0.5)).to_string(), "0.5");
        assert_eq!(number(None), Value::Null);
        assert_eq!(
            rfc3339(at("2026-09-01T00:00:00Z"), &tz()),
            "2026-09-01T08:00:00+08:00"
        );
    }
}
