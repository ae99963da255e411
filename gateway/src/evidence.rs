//! Evidence files (`shopfloor.evidence/1`) built from the roll-ups, for one entity and period
//! (docs/GATEWAY.md, "Roll-ups and evidence"). The API serves them as the auditor's file and
//! computes its own indicators from the very same document, so `shopfloor-gateway calc` on a
//! served file prints the API's numbers.
//!
//! Invariants:
//! - the period `[from, to)` is minute-aligned and tiled with the coarsest whole buckets
//!   ([`rollup::tile`]); every figure is a sum over exactly these tiles, and the tiles'
//!   counter attribution `(start, end]` tiles the engine's `(from, to]`.
//! - states: per tile, one interval per non-zero state laid end to end from the tile's start
//!   (producing, setup, delay, idle, planned_down); stored `offline` time and time nothing
//!   covers stay uncovered, which the engine counts as offline. No calendar is sent, so the
//!   engine's result depends only on the totals per state, which are exactly the stored ones.
//! - part counts are counts (Σ deltas of the tiles, rounded to whole parts); good counts never
//!   exceed produced counts; an unknown count (no counter bucket in the period) is an empty
//!   counter, which the engine reports as unknown rather than 0.
//! - meters carry the readings of a virtual cumulative register (0 at the base reading, then
//!   the running sum of deltas at each tile's last reading), so consumption and the engine's
//!   completeness rule come out as from raw readings.
//! - every document returned has passed [`Evidence::validate`].

use std::collections::BTreeMap;

use jiff::tz::TimeZone;
use serde_json::{Value, json};
use shopfloor_core::coefficients::CoefficientChoice;
use shopfloor_core::evidence::{
    self, Control, Counter, DataPoints, EntityFacts, Equipment, Evidence, Inputs, Meter,
    OverridesOnly, Period, Product, Quantity, Reading, State, StateInterval,
};
use shopfloor_core::path::{EntityPath, Level, ancestor};
use shopfloor_store::{ChainRange, DeviceFilter, Gran, InputsRecord, Ms, Store, StoreError};

use crate::db::Db;
use crate::indicators::QueryError;
use crate::model::{Entity, EntityKind, Snapshot};
use crate::rollup::{self, Buckets, MINUTE, Tile};

/// How far back the base reading of a meter is looked for (the minute roll-ups' default
/// retention).
pub const LOOKBACK_MS: Ms = 35 * 86_400_000;

/// Part of the meter id given to unmetered water from economic inputs. A registry path segment
/// cannot contain `.`, so it never collides with a registered meter.
pub const UNMETERED_WATER: &str = "inputs.unmetered_water";

const MAX_PERIOD_MS: Ms = evidence::MAX_PERIOD_DAYS * 86_400_000;

fn bad(field: &str, reason: impl Into<String>) -> QueryError {
    QueryError::Bad {
        field: field.to_owned(),
        reason: reason.into(),
    }
}

fn corrupt(reason: impl Into<String>) -> QueryError {
    QueryError::Store(StoreError::Corrupt(reason.into()))
}

/// `id` lies strictly below `entity` in the path tree.
pub fn under(id: &str, entity: &str) -> bool {
    id.len() > entity.len() && id.starts_with(entity) && id.as_bytes()[entity.len()] == b'/'
}

/// `id` is `entity` or lies below it.
pub fn under_or_self(id: &str, entity: &str) -> bool {
    id == entity || under(id, entity)
}

/// The period rules of every query: minute-aligned, non-empty, at most the engine's longest.
pub fn check_period(from: Ms, to: Ms) -> Result<(), QueryError> {
    if from % MINUTE != 0 {
        return Err(bad("from", "must be on a whole minute"));
    }
    if to % MINUTE != 0 {
        return Err(bad("to", "must be on a whole minute"));
    }
    if to <= from {
        return Err(bad("to", "must be after from"));
    }
    if to - from > MAX_PERIOD_MS {
        return Err(bad(
            "to",
            format!(
                "a period spans at most {} days; split it",
                evidence::MAX_PERIOD_DAYS
            ),
        ));
    }
    Ok(())
}

/// The registry entity a query names: it must exist, and not be a meter (a meter's readings
/// count in the entity above it).
pub fn lookup<'a>(snap: &'a Snapshot, entity: &str) -> Result<&'a Entity, QueryError> {
    let e = snap
        .entities
        .get(entity)
        .ok_or_else(|| QueryError::NotFound(format!("entity {entity}")))?;
    if e.kind == EntityKind::Meter {
        return Err(bad(
            "entity",
            format!("{entity} is a meter; ask for the entity it belongs to"),
        ));
    }
    if EntityPath::parse(entity).is_err() {
        return Err(bad("entity", format!("{entity} is not an entity path")));
    }
    Ok(e)
}

pub fn level(entity: &str) -> Option<Level> {
    EntityPath::parse(entity).ok().map(|p| p.level())
}

fn filter(prefix: &str) -> DeviceFilter {
    DeviceFilter {
        prefix: prefix.to_owned(),
    }
}

// ---------------------------------------------------------------------------------------------
// Store reads.

/// The state, counter and activity buckets of every device below `prefix` for the tiles
/// (sorted by start): one read per kind and run of same-granularity tiles.
pub async fn fetch(db: &Db, prefix: &str, tiles: &[Tile]) -> Result<Buckets, StoreError> {
    let f = filter(prefix);
    let mut out = Buckets::default();
    for run in rollup::runs(tiles) {
        // The three kinds are independent reads: on separate pooled connections they overlap
        // (a park-year query on SQLite spends most of its time fetching rows).
        let (s, c, a) = tokio::try_join!(
            db.state_buckets(&f, run.gran, run.start, run.end),
            db.counter_buckets(&f, run.gran, run.start, run.end),
            db.activity_buckets(&f, run.gran, run.start, run.end),
        )?;
        out.extend(Buckets::from_rows(s, c, a));
    }
    Ok(out)
}

/// Per (device, role) below `prefix`: the last reading time of the latest minute bucket in the
/// lookback before `from`.
pub async fn bases(
    db: &Db,
    prefix: &str,
    from: Ms,
) -> Result<BTreeMap<(String, String), Ms>, StoreError> {
    let rows = db
        .last_readings_before(&filter(prefix), from - LOOKBACK_MS, from)
        .await?;
    Ok(rows.into_iter().map(|(d, r, t)| ((d, r), t)).collect())
}

/// Builds the evidence of `entity` over `[from, to)` from the roll-ups, the registry and the
/// economic inputs, validated.
pub async fn build(
    db: &Db,
    snap: &Snapshot,
    tz: &TimeZone,
    entity: &str,
    from: Ms,
    to: Ms,
) -> Result<Evidence, QueryError> {
    check_period(from, to)?;
    lookup(snap, entity)?;
    let tiles = rollup::tile(from, to, tz, Gran::Month).map_err(|r| bad("from", r))?;
    let scope = filter(entity);
    let (rows, bases, inputs, chains) = tokio::try_join!(
        fetch(db, entity, &tiles),
        bases(db, entity, from),
        db.inputs_current(&scope, from, to),
        db.chain_ranges(from, to),
    )?;
    let src = Sources {
        rows: &rows,
        bases: &bases,
        inputs: &inputs,
        chains: &chains,
    };
    assemble(snap, tz, entity, from, to, &tiles, &src)
}

// ---------------------------------------------------------------------------------------------
// Assembly (pure).

/// What an evidence is assembled from.
#[derive(Debug, Clone, Copy)]
pub struct Sources<'a> {
    /// Buckets of (at least) the devices below the entity for (at least) the tiles.
    pub rows: &'a Buckets,
    /// (device, role) → time of the base reading before the period, if any.
    pub bases: &'a BTreeMap<(String, String), Ms>,
    /// Current economic input records overlapping the period (of the entity and below).
    pub inputs: &'a [InputsRecord],
    /// Chain ranges of the period (all agents; filtered by scope here).
    pub chains: &'a [ChainRange],
}

fn instant(t: Ms) -> Result<jiff::Timestamp, QueryError> {
    rollup::ts(t).ok_or_else(|| corrupt(format!("instant {t} ms is out of range")))
}

const LAID: [State; 5] = [
    State::Producing,
    State::Setup,
    State::Delay,
    State::Idle,
    State::PlannedDown,
];

/// The state intervals of one device: per tile, the stored totals laid end to end from the
/// tile's start; neighbours of one state are joined.
fn states(rows: &Buckets, device: &str, tiles: &[Tile]) -> Result<Vec<StateInterval>, QueryError> {
    let mut out: Vec<(Ms, Ms, State)> = Vec::new();
    for t in tiles {
        let Some(b) = rows.states.get(&(device.to_owned(), t.gran, t.start)) else {
            continue;
        };
        let fields = rollup::state_fields(b);
        let mut c = t.start;
        for (state, ms) in LAID.iter().zip(fields) {
            if ms <= 0 {
                continue;
            }
            let e = c.saturating_add(ms).min(t.end);
            if e <= c {
                continue;
            }
            match out.last_mut() {
                Some(last) if last.1 == c && last.2 == *state => last.1 = e,
                _ => out.push((c, e, *state)),
            }
            c = e;
        }
    }
    out.into_iter()
        .map(|(a, b, state)| {
            Ok(StateInterval {
                from: instant(a)?,
                to: instant(b)?,
                state,
            })
        })
        .collect()
}

/// The counter buckets of one (device, role) for the tiles, in time order.
fn counter_rows<'a>(
    rows: &'a Buckets,
    device: &str,
    role: &str,
    tiles: &[Tile],
) -> Vec<&'a shopfloor_store::CounterBucket> {
    tiles
        .iter()
        .filter_map(|t| {
            rows.counters
                .get(&(device.to_owned(), t.gran, t.start, role.to_owned()))
        })
        .collect()
}

/// Σ delta of one (device, role) over the tiles as whole parts; `None` when no bucket has it.
fn count(rows: &Buckets, device: &str, role: &str, tiles: &[Tile]) -> Option<u64> {
    let b = counter_rows(rows, device, role, tiles);
    if b.is_empty() {
        return None;
    }
    let sum: f64 = b.iter().map(|c| c.delta).sum();
    let whole = sum.round().clamp(0.0, 9.007_199_254_740_992e15);
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    Some(whole as u64)
}

/// The produced and good quantities of one machine's product (see the module docs).
fn quantities(rows: &Buckets, device: &str, tiles: &[Tile]) -> (Quantity, Quantity) {
    let unknown = || Quantity::Counter(Counter::default());
    let produced = count(rows, device, "produced", tiles);
    let good = count(rows, device, "good", tiles);
    let scrap = count(rows, device, "scrap", tiles);
    let Some(p) = produced else {
        return (unknown(), unknown());
    };
    let good = match (good, scrap) {
        (Some(g), _) => Quantity::Count(g.min(p)),
        (None, Some(s)) => Quantity::Count(p - s.min(p)),
        (None, None) => unknown(),
    };
    (Quantity::Count(p), good)
}

/// Readings of the virtual cumulative register of one (device, role): 0 at the base reading
/// (or, without one, at the first reading in the period — at `from` when that first bucket's
/// delta proves an earlier reading existed), then the running sum of deltas (negative deltas,
/// from a register counting down, taken as 0) at each tile's last reading.
fn register(
    rows: &Buckets,
    device: &str,
    role: &str,
    tiles: &[Tile],
    base: Option<Ms>,
    from: Ms,
) -> Result<Vec<Reading>, QueryError> {
    let buckets = counter_rows(rows, device, role, tiles);
    let mut pts: Vec<(Ms, f64)> = Vec::with_capacity(buckets.len() + 1);
    match (base, buckets.first()) {
        (Some(b), _) => pts.push((b, 0.0)),
        (None, Some(first)) => {
            if first.first_t < first.last_t || first.delta <= 0.0 {
                pts.push((first.first_t, 0.0));
            } else {
                pts.push((from, 0.0));
            }
        }
        (None, None) => {}
    }
    let mut cum = 0.0;
    for b in buckets {
        cum += b.delta.max(0.0);
        match pts.last() {
            Some(&(t, v)) if t >= b.last_t => {
                if t == b.last_t && v != cum {
                    return Err(corrupt(format!(
                        "counter buckets of {device} ({role}) overlap at {t} ms"
                    )));
                }
            }
            _ => pts.push((b.last_t, cum)),
        }
    }
    pts.into_iter()
        .map(|(t, value)| {
            Ok(Reading {
                at: instant(t)?,
                value,
            })
        })
        .collect()
}

fn activity(rows: &Buckets, device: &str, tiles: &[Tile]) -> (bool, i64) {
    let mut any = false;
    let mut points = 0;
    for t in tiles {
        if let Some(a) = rows.activity.get(&(device.to_owned(), t.gran, t.start)) {
            any |= a.samples > 0 || a.points > 0;
            points = points.max(a.points);
        }
    }
    (any, points)
}

fn equipment(
    snap: &Snapshot,
    e: &Entity,
    rows: &Buckets,
    tiles: &[Tile],
) -> Result<Equipment, QueryError> {
    let (networked, points) = activity(rows, &e.id, tiles);
    let products = match e.product.as_deref().and_then(|p| snap.products.get(p)) {
        Some(p) => {
            let (produced, good) = quantities(rows, &e.id, tiles);
            vec![Product {
                id: p.id.clone(),
                ideal_cycle_s: p.ideal_cycle_s,
                produced,
                good,
                value_added_per_unit_cny: p.value_added_per_unit_cny,
            }]
        }
        None => Vec::new(),
    };
    Ok(Equipment {
        id: e.id.clone(),
        kind: e
            .equipment_kind
            .clone()
            .unwrap_or_else(|| "equipment".to_owned()),
        control: e.control.unwrap_or(Control::Manual),
        key_process: e.key_process.clone(),
        networked,
        states: states(rows, &e.id, tiles)?,
        products,
        data_points: e.data_points.map(|configured| DataPoints {
            configured,
            received: u64::try_from(points).unwrap_or(0).min(configured),
        }),
    })
}

fn meter(
    e: &Entity,
    rows: &Buckets,
    tiles: &[Tile],
    bases: &BTreeMap<(String, String), Ms>,
    from: Ms,
) -> Result<Option<Meter>, QueryError> {
    let Some(carrier) = e.carrier.clone() else {
        tracing::warn!(meter = %e.id, "meter without a carrier left out of the evidence");
        return Ok(None);
    };
    let unit = match e.unit.clone() {
        Some(u) => u,
        None => {
            let set =
                shopfloor_core::coefficients::energy_set(shopfloor_core::coefficients::DEFAULT_SET);
            match set.and_then(|s| s.carriers.get(&carrier)) {
                Some(c) => c.unit.clone(),
                None => {
                    tracing::warn!(meter = %e.id, "meter of an unknown carrier left out");
                    return Ok(None);
                }
            }
        }
    };
    let base = bases.get(&(e.id.clone(), carrier.clone())).copied();
    let readings = register(rows, &e.id, &carrier, tiles, base, from)?;
    Ok(Some(Meter {
        id: e.id.clone(),
        carrier,
        unit,
        consumption: None,
        readings: Some(readings),
        rollover: None,
        replaced_at: Vec::new(),
        ct_ratio: None,
        pt_ratio: None,
        renewable: e.renewable,
        parent: e.parent.clone(),
    }))
}

// --- economic inputs -------------------------------------------------------------------------

fn field(r: &InputsRecord, name: &str) -> Option<f64> {
    r.doc
        .get(name)
        .and_then(Value::as_f64)
        .filter(|v| v.is_finite())
}

/// Milliseconds of `[a, b)` that no range of `covered` (sorted, merged) covers.
fn uncovered(covered: &[(Ms, Ms)], a: Ms, b: Ms) -> Ms {
    let mut free = b - a;
    for &(x, y) in covered {
        let (s, e) = (x.max(a), y.min(b));
        if s < e {
            free -= e - s;
        }
    }
    free
}

/// Records in the order they take precedence: shorter periods first (a month's figures win
/// over the part of a year's figures that covers the same time), then by start.
fn by_precedence<'a>(records: &[&'a InputsRecord]) -> Vec<&'a InputsRecord> {
    let mut v: Vec<&InputsRecord> = records.iter().copied().filter(|r| r.to > r.from).collect();
    v.sort_by_key(|r| (r.to - r.from, r.from, r.to));
    v
}

/// A flow field over `[from, to)`: each record's value prorated by the share of its period
/// that falls in `[from, to)` and is not covered by a record of higher precedence.
pub fn prorated(records: &[&InputsRecord], name: &str, from: Ms, to: Ms) -> Option<f64> {
    let mut covered: Vec<(Ms, Ms)> = Vec::new();
    let mut sum: Option<f64> = None;
    for r in by_precedence(records) {
        let Some(v) = field(r, name) else { continue };
        let (a, b) = (r.from.max(from), r.to.min(to));
        if a >= b {
            continue;
        }
        let free = uncovered(&covered, a, b);
        if free <= 0 {
            continue;
        }
        sum = Some(sum.unwrap_or(0.0) + v * free as f64 / (r.to - r.from) as f64);
        covered.push((a, b));
        rollup::merge(&mut covered);
    }
    sum
}

/// A stock averaged over time: the records' values weighted by the time of `[from, to)` each
/// one covers (precedence as for flows); time no record covers is left out.
pub fn time_weighted(records: &[&InputsRecord], name: &str, from: Ms, to: Ms) -> Option<f64> {
    let mut covered: Vec<(Ms, Ms)> = Vec::new();
    let (mut num, mut den) = (0.0, 0i64);
    for r in by_precedence(records) {
        let Some(v) = field(r, name) else { continue };
        let (a, b) = (r.from.max(from), r.to.min(to));
        if a >= b {
            continue;
        }
        let free = uncovered(&covered, a, b);
        if free <= 0 {
            continue;
        }
        num += v * free as f64;
        den += free;
        covered.push((a, b));
        rollup::merge(&mut covered);
    }
    (den > 0).then(|| num / den as f64)
}

/// The latest value of a field: the record ending last (then the newest version).
fn latest(records: &[&InputsRecord], name: &str) -> Option<f64> {
    records
        .iter()
        .filter_map(|r| field(r, name).map(|v| ((r.to, r.from, r.version, r.at), v)))
        .max_by(|a, b| a.0.cmp(&b.0))
        .map(|(_, v)| v)
}

/// The inputs of one entity over `[from, to)` and its unmetered water (m³).
fn inputs_of(
    records: &[&InputsRecord],
    registry_land: Option<f64>,
    from: Ms,
    to: Ms,
) -> (Option<Inputs>, Option<f64>) {
    let i = Inputs {
        value_added_cny: prorated(records, "value_added_cny", from, to),
        gross_output_cny: prorated(records, "gross_output_cny", from, to),
        employees_avg: time_weighted(records, "employees_avg", from, to),
        land_area_m2: latest(records, "land_area_m2").or(registry_land),
        solid_waste_generated_t: prorated(records, "solid_waste_generated_t", from, to),
        solid_waste_utilized_t: prorated(records, "solid_waste_utilized_t", from, to),
    };
    let water = prorated(records, "unmetered_water_m3", from, to);
    let inputs = (i != Inputs::default()).then_some(i);
    (inputs, water)
}

fn unmetered_water(owner: &str, m3: f64) -> Meter {
    Meter {
        id: format!("{owner}/{UNMETERED_WATER}"),
        carrier: "water".to_owned(),
        unit: "m3".to_owned(),
        consumption: Some(m3),
        readings: None,
        rollover: None,
        replaced_at: Vec::new(),
        ct_ratio: None,
        pt_ratio: None,
        renewable: false,
        parent: None,
    }
}

fn overrides(e: Option<&Entity>) -> BTreeMap<String, f64> {
    e.map(|e| e.coefficient_overrides.clone())
        .unwrap_or_default()
}

/// Whether an agent's scope entry and the entity share a subtree.
fn scope_meets(scope: &str, entity: &str) -> bool {
    under_or_self(entity, scope) || under(scope, entity)
}

/// The evidence of `entity` over `[from, to)` (minute-aligned) tiled by `tiles`, from the
/// sources; validated. `entity` must be a registry entity other than a meter.
pub fn assemble(
    snap: &Snapshot,
    tz: &TimeZone,
    entity: &str,
    from: Ms,
    to: Ms,
    tiles: &[Tile],
    src: &Sources<'_>,
) -> Result<Evidence, QueryError> {
    let me = lookup(snap, entity)?;
    let lvl = level(entity).ok_or_else(|| bad("entity", "not an entity path"))?;
    // The enterprise a lower entity belongs to: mode, industry and coefficient overrides.
    let owner = if lvl == Level::Park {
        Some(me)
    } else {
        ancestor(entity, 2).and_then(|a| snap.entities.get(a))
    };

    let mut equipment_list = Vec::new();
    let mut meters = Vec::new();
    for e in snap.entities.values() {
        match e.kind {
            EntityKind::Equipment if under_or_self(&e.id, entity) => {
                equipment_list.push(equipment(snap, e, src.rows, tiles)?);
            }
            EntityKind::Meter if under(&e.id, entity) => {
                if let Some(m) = meter(e, src.rows, tiles, src.bases, from)? {
                    meters.push(m);
                }
            }
            _ => {}
        }
    }

    let records_of =
        |id: &str| -> Vec<&InputsRecord> { src.inputs.iter().filter(|r| r.entity == id).collect() };
    let mut inputs = None;
    let mut entities = Vec::new();
    if lvl == Level::Park {
        for e in snap.entities.values().filter(|e| under(&e.id, entity)) {
            let is_enterprise = e.kind == EntityKind::Enterprise;
            if !is_enterprise && e.certifications.is_empty() {
                continue;
            }
            let mut facts = EntityFacts {
                id: e.id.clone(),
                industry_mode: None,
                industry: None,
                coefficients: None,
                inputs: None,
                baseline: None,
                certifications: e.certifications.clone(),
            };
            if is_enterprise {
                let (i, water) = inputs_of(&records_of(&e.id), e.land_area_m2, from, to);
                if let Some(w) = water {
                    meters.push(unmetered_water(&e.id, w));
                }
                facts.industry_mode = e.industry_mode;
                facts.industry = e.industry.clone();
                facts.coefficients = (!e.coefficient_overrides.is_empty()).then(|| OverridesOnly {
                    overrides: e.coefficient_overrides.clone(),
                });
                facts.inputs = i;
                facts.baseline = e.baseline.clone();
            }
            entities.push(facts);
        }
    } else {
        let (i, water) = inputs_of(&records_of(entity), me.land_area_m2, from, to);
        if let Some(w) = water {
            meters.push(unmetered_water(entity, w));
        }
        inputs = i;
    }

    let signatures: Vec<Value> = src
        .chains
        .iter()
        .filter_map(|c| {
            let agent = snap.agents.get(&c.agent)?;
            agent.scope.iter().any(|s| scope_meets(s, entity)).then(|| {
                json!({
                    "agent": c.agent,
                    "public_key": agent.public_key,
                    "first_seq": c.first_seq,
                    "first_hash": c.first_hash,
                    "last_seq": c.last_seq,
                    "last_hash": c.last_hash,
                    "batches": c.batches,
                })
            })
        })
        .collect();

    let ev = Evidence {
        schema: evidence::SCHEMA.to_owned(),
        entity: entity.to_owned(),
        period: Period {
            from: instant(from)?,
            to: instant(to)?,
        },
        calendar: None,
        time_zone: tz.iana_name().map(str::to_owned),
        coefficients: Some(CoefficientChoice {
            overrides: overrides(owner),
            ..CoefficientChoice::default()
        }),
        industry_mode: owner.and_then(|o| o.industry_mode),
        industry: owner.and_then(|o| o.industry.clone()),
        equipment: equipment_list,
        meters,
        inputs,
        baseline: me.baseline.clone(),
        entities,
        signatures,
    };
    ev.validate().map_err(|e| {
        corrupt(format!(
            "the evidence built for {entity} does not validate: {}",
            e.errors
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("; ")
        ))
    })?;
    Ok(ev)
}

/// Base readings for the points of a series, without a store read per point: the bases before
/// the series' start, advanced through the counter buckets read for the series (a bucket's
/// last reading is before a point's start exactly when the bucket is), keeping the lookback
/// window of [`bases`].
#[derive(Debug, Clone, Default)]
pub struct SeriesBases {
    latest: BTreeMap<(String, String), Ms>,
    /// Last reading of every bucket read, by time.
    pending: Vec<(Ms, (String, String))>,
    next: usize,
}

impl SeriesBases {
    pub fn new(initial: BTreeMap<(String, String), Ms>, rows: &Buckets) -> SeriesBases {
        let mut pending: Vec<(Ms, (String, String))> = rows
            .counters
            .values()
            .map(|c| (c.last_t, (c.device.clone(), c.role.clone())))
            .collect();
        pending.sort();
        SeriesBases {
            latest: initial,
            pending,
            next: 0,
        }
    }

    /// The bases for a period starting at `from`; calls must come with increasing `from`.
    pub fn at(&mut self, from: Ms) -> BTreeMap<(String, String), Ms> {
        while let Some((t, key)) = self.pending.get(self.next) {
            if *t > from {
                break;
            }
            let e = self.latest.entry(key.clone()).or_insert(*t);
            *e = (*e).max(*t);
            self.next += 1;
        }
        let since = from - LOOKBACK_MS;
        self.latest
            .iter()
            .filter(|&(_, &t)| t <= from && rollup::reading_minute(t) >= since)
            .map(|(k, &t)| (k.clone(), t))
            .collect()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use shopfloor_store::{CounterBucket, StateBucket};

    const D: &str = "p1/e1/w1/l1/m1";
    const T0: Ms = 1_788_220_800_000; // 2026-09-01T00:00:00Z, a whole hour

    fn tile(gran: Gran, start: Ms, len: Ms) -> Tile {
        Tile {
            gran,
            start,
            end: start + len,
        }
    }

    fn counter(role: &str, start: Ms, delta: f64, first: Ms, last: Ms) -> CounterBucket {
        CounterBucket {
            device: D.into(),
            role: role.into(),
            gran: Gran::Minute,
            bucket: start,
            delta,
            first_t: first,
            last_t: last,
            readings: 1,
            wraps: 0,
            resets: 0,
        }
    }

    fn ms(r: &[Reading]) -> Vec<(Ms, f64)> {
        r.iter().map(|r| (r.at.as_millisecond(), r.value)).collect()
    }

    #[test]
    fn states_are_laid_end_to_end_and_joined() {
        let b = |start: Ms, p: i64, i: i64, off: i64| StateBucket {
            device: D.into(),
            gran: Gran::Minute,
            bucket: start,
            producing: p,
            setup: 0,
            delay: 0,
            idle: i,
            planned_down: 0,
            offline: off,
        };
        let rows = Buckets::from_rows(
            vec![
                b(T0, 30_000, 20_000, 10_000),
                b(T0 + MINUTE, 60_000, 0, 0),
                b(T0 + 2 * MINUTE, 60_000, 0, 0),
            ],
            Vec::new(),
            Vec::new(),
        );
        let tiles: Vec<Tile> = (0..3)
            .map(|k| tile(Gran::Minute, T0 + k * MINUTE, MINUTE))
            .collect();
        let s = states(&rows, D, &tiles).unwrap();
        let got: Vec<(Ms, Ms, State)> = s
            .iter()
            .map(|i| {
                (
                    i.from.as_millisecond() - T0,
                    i.to.as_millisecond() - T0,
                    i.state,
                )
            })
            .collect();
        assert_eq!(
            got,
            vec![
                (0, 30_000, State::Producing),
                (30_000, 50_000, State::Idle),
                // offline 50..60 s stays uncovered; the two full minutes join.
                (60_000, 180_000, State::Producing),
            ]
        );
    }

    #[test]
    fn the_virtual_register_starts_at_the_base() {
        let tiles = [
            tile(Gran::Minute, T0, MINUTE),
            tile(Gran::Minute, T0 + MINUTE, MINUTE),
        ];
        let rows = Buckets::from_rows(
            Vec::new(),
            vec![
                counter("electricity", T0, 5.0, T0 + 10_000, T0 + 50_000),
                counter("electricity", T0 + MINUTE, -2.0, T0 + 70_000, T0 + 70_000),
            ],
            Vec::new(),
        );
        // With a base before the period: 0 there, then the running sum (a negative delta is 0).
        let r = register(&rows, D, "electricity", &tiles, Some(T0 - 5_000), T0).unwrap();
        assert_eq!(
            ms(&r),
            vec![(T0 - 5_000, 0.0), (T0 + 50_000, 5.0), (T0 + 70_000, 5.0)]
        );
        // Without one: the first reading in the period.
        let r = register(&rows, D, "electricity", &tiles, None, T0).unwrap();
        assert_eq!(ms(&r)[0], (T0 + 10_000, 0.0));
        // A single first reading with a delta proves an earlier one: the base is `from`.
        let rows = Buckets::from_rows(
            Vec::new(),
            vec![counter("electricity", T0, 5.0, T0 + 30_000, T0 + 30_000)],
            Vec::new(),
        );
        let r = register(&rows, D, "electricity", &tiles, None, T0).unwrap();
        assert_eq!(ms(&r), vec![(T0, 0.0), (T0 + 30_000, 5.0)]);
        // Nothing at all: no readings (the engine then reports null with completeness 0).
        assert!(
            register(&rows, D, "water", &tiles, None, T0)
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn part_counts_good_and_scrap() {
        let tiles = [tile(Gran::Hour, T0, 3_600_000)];
        let hour = |role: &str, delta: f64| CounterBucket {
            gran: Gran::Hour,
            ..counter(role, T0, delta, T0 + 1, T0 + 2)
        };
        let q = |rows: Vec<CounterBucket>| {
            let b = Buckets::from_rows(Vec::new(), rows, Vec::new());
            match quantities(&b, D, &tiles) {
                (Quantity::Count(p), Quantity::Count(g)) => Some((p, g)),
                (Quantity::Count(p), Quantity::Counter(c)) if c.readings.is_empty() => {
                    Some((p, u64::MAX))
                }
                _ => None,
            }
        };
        assert_eq!(
            q(vec![hour("produced", 10.0), hour("good", 9.0)]),
            Some((10, 9))
        );
        // Good read a moment later than produced: capped.
        assert_eq!(
            q(vec![hour("produced", 10.0), hour("good", 11.0)]),
            Some((10, 10))
        );
        assert_eq!(
            q(vec![hour("produced", 10.0), hour("scrap", 3.0)]),
            Some((10, 7))
        );
        // No good and no scrap counter: good is unknown (an empty counter).
        assert_eq!(q(vec![hour("produced", 10.0)]), Some((10, u64::MAX)));
        // No produced counter at all: both unknown.
        assert_eq!(q(vec![hour("good", 4.0)]), None);
    }

    fn record(from: Ms, to: Ms, doc: Value) -> InputsRecord {
        InputsRecord {
            entity: "p1/e1".into(),
            from,
            to,
            version: 1,
            doc,
            at: 0,
            actor: "t".into(),
            source: "api".into(),
        }
    }

    #[test]
    fn inputs_are_prorated_without_counting_overlaps_twice() {
        const DAY: Ms = 86_400_000;
        // A 30-day record of 3000 and, inside it, a 10-day record of 2000 for days 10..20.
        let month = record(
            T0,
            T0 + 30 * DAY,
            json!({"value_added_cny": 3000.0, "employees_avg": 100.0, "land_area_m2": 5.0}),
        );
        let part = record(
            T0 + 10 * DAY,
            T0 + 20 * DAY,
            json!({"value_added_cny": 2000.0, "employees_avg": 130.0}),
        );
        let recs = [&month, &part];
        // Days 0..20: 10 days of the month record (1000) + the part record (2000).
        let v = prorated(&recs, "value_added_cny", T0, T0 + 20 * DAY).unwrap();
        assert!((v - 3000.0).abs() < 1e-9, "{v}");
        // Days 15..25: half of the part (1000) + days 20..25 of the month (500).
        let v = prorated(&recs, "value_added_cny", T0 + 15 * DAY, T0 + 25 * DAY).unwrap();
        assert!((v - 1500.0).abs() < 1e-9, "{v}");
        // Employees over days 0..20: 100 for 10 days, 130 for 10 days.
        let e = time_weighted(&recs, "employees_avg", T0, T0 + 20 * DAY).unwrap();
        assert!((e - 115.0).abs() < 1e-9, "{e}");
        assert_eq!(prorated(&recs, "gross_output_cny", T0, T0 + DAY), None);
        assert_eq!(latest(&recs, "land_area_m2"), Some(5.0));
        // Outside every record: nothing.
        assert_eq!(prorated(&recs, "value_added_cny", T0 - DAY, T0), None);
        let (i, water) = inputs_of(&recs, Some(9.0), T0, T0 + DAY);
        let i = i.unwrap();
        assert_eq!(i.land_area_m2, Some(5.0));
        assert!((i.value_added_cny.unwrap() - 100.0).abs() < 1e-9);
        assert_eq!(water, None);
        let (i, _) = inputs_of(&[], Some(9.0), T0, T0 + DAY);
        assert_eq!(
            i.unwrap().land_area_m2,
            Some(9.0),
            "the registry's land area"
        );
        assert_eq!(inputs_of(&[], None, T0, T0 + DAY).0, None);
    }

    #[test]
    fn series_bases_keep_the_lookback() {
        let rows = Buckets::from_rows(
            Vec::new(),
            vec![
                counter("electricity", T0, 1.0, T0 + 5_000, T0 + 20_000),
                counter(
                    "electricity",
                    T0 + MINUTE,
                    1.0,
                    T0 + 65_000,
                    T0 + MINUTE * 2,
                ),
            ],
            Vec::new(),
        );
        let key = (D.to_owned(), "electricity".to_owned());
        let initial: BTreeMap<_, _> = [(key.clone(), T0 - 1_000)].into();
        let mut b = SeriesBases::new(initial, &rows);
        assert_eq!(b.at(T0).get(&key), Some(&(T0 - 1_000)));
        assert_eq!(b.at(T0 + MINUTE).get(&key), Some(&(T0 + 20_000)));
        // A reading exactly at the point's start is its base.
        assert_eq!(b.at(T0 + 2 * MINUTE).get(&key), Some(&(T0 + 2 * MINUTE)));
        // Beyond the lookback the base is gone, as for a standalone query.
        assert_eq!(b.at(T0 + 2 * MINUTE + LOOKBACK_MS + MINUTE).get(&key), None);
    }

    #[test]
    fn periods_and_paths() {
        assert!(check_period(T0, T0 + MINUTE).is_ok());
        for (from, to, field) in [
            (T0 + 1, T0 + MINUTE, "from"),
            (T0, T0 + 1, "to"),
            (T0, T0, "to"),
            (T0, T0 + MAX_PERIOD_MS + MINUTE, "to"),
        ] {
            match check_period(from, to) {
                Err(QueryError::Bad { field: f, .. }) => assert_eq!(f, field),
                other => panic!("{other:?}"),
            }
        }
        assert!(under("p1/e1", "p1"));
        assert!(!under("p10/e1", "p1"));
        assert!(!under("p1", "p1"));
        assert!(under_or_self("p1", "p1"));
        assert!(scope_meets("p1/e1/w1", "p1"));
        assert!(scope_meets("p1/e1", "p1/e1/w1/l1"));
        assert!(!scope_meets("p1/e2", "p1/e1"));
    }
}
