//! The indicator engine: evidence → indicators for the evidence's level (docs/ENGINE.md).
//!
//! Invariants:
//! - every roll-up is a ratio of sums: [`Sums`] are additive, and every ratio is computed from
//!   them at the end, never averaged (the one exception, the park's `key_process_nc_rate`, is
//!   the mean of enterprise rates by definition);
//! - no NaN or infinity leaves the engine: every value passes [`finite`], a zero denominator or
//!   a missing input gives `None`;
//! - results do not depend on the order of anything in the evidence.

use std::collections::{BTreeMap, BTreeSet};

use jiff::Timestamp;
use serde::Serialize;

use crate::assessment::{self, AssessmentResult};
use crate::calendar::{self, Window};
use crate::catalog;
use crate::coefficients::{self, CoefficientChoice, CoefficientRecord};
use crate::counter::Deltas;
use crate::error::InputError;
use crate::evidence::{
    Baseline, CertificationKind, Control, Equipment, Evidence, IndustryMode, Inputs, Meter, Period,
    Quantity,
};
use crate::path::{Level, ancestor};
use crate::timemodel::{self, Buckets};

/// Version of the engine, recorded with every result (and sealed with computed periods).
pub const ENGINE_VERSION: &str = env!("CARGO_PKG_VERSION");

/// One indicator value with its unit and the completeness of the data behind it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Indicator {
    pub value: Option<f64>,
    pub unit: String,
    /// Share of the expected data that was present, 0..=1.
    pub completeness: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ValueAddedSource {
    /// Reported economic input (`inputs.value_added_cny`).
    Inputs,
    /// Live estimate Σ good × value added per unit.
    Estimate,
}

/// Everything computed for one entity and period.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    pub entity: String,
    pub level: Level,
    pub period: Period,
    pub engine_version: &'static str,
    pub coefficients: CoefficientRecord,
    pub value_added_source: Option<ValueAddedSource>,
    pub indicators: BTreeMap<String, Indicator>,
    /// Decreases of counters and meters taken as register wraps, and as resets to zero.
    pub counter_wraps: u32,
    pub counter_resets: u32,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub assessments: Vec<AssessmentResult>,
    /// Park level: the report of each enterprise.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub enterprises: Vec<Report>,
}

impl Report {
    /// The `{"<id>": number|null}` map that `shopfloor-gateway calc` prints.
    pub fn values(&self) -> BTreeMap<&str, Option<f64>> {
        self.indicators
            .iter()
            .map(|(k, v)| (k.as_str(), v.value))
            .collect()
    }
}

/// Finite or nothing: the last gate before a number leaves the engine.
fn finite(v: f64) -> Option<f64> {
    v.is_finite().then_some(v)
}

fn ratio(num: Option<f64>, den: Option<f64>) -> Option<f64> {
    match (num, den) {
        (Some(n), Some(d)) if d != 0.0 => finite(n / d),
        _ => None,
    }
}

// ---------------------------------------------------------------------------------------------
// Additive sums over equipment and meters.

#[derive(Debug, Clone, Copy, Default)]
struct CarrierSum {
    qty: f64,
    completeness_sum: f64,
    meters: u32,
    known: u32,
}

#[derive(Debug, Clone, Default)]
struct Sums {
    time_all: Buckets,
    time_prod: Buckets,
    ideal_produced: f64,
    ideal_good: f64,
    produced: f64,
    good: f64,
    qty_completeness_sum: f64,
    products: u32,
    products_known: u32,
    va_estimate: f64,
    good_priced: f64,
    priced_products: u32,
    equipment: u32,
    nc: u32,
    networked: u32,
    dp_configured: u64,
    dp_received: u64,
    dp_reported: bool,
    kp_equipment: u32,
    kp_equipment_nc: u32,
    /// key process → every machine under PLC/DCS (process-industry definition).
    kp_processes: BTreeMap<String, bool>,
    carriers: BTreeMap<String, CarrierSum>,
    kgce: f64,
    kgce_renewable: f64,
    co2: f64,
    energy_meters: u32,
    energy_known: u32,
    energy_completeness_sum: f64,
    wraps: u32,
    resets: u32,
    /// The single machine of equipment-level evidence.
    single: Option<(bool, bool)>,
}

impl Sums {
    fn qty_completeness(&self) -> f64 {
        if self.products == 0 {
            1.0
        } else {
            self.qty_completeness_sum / f64::from(self.products)
        }
    }
    fn energy_completeness(&self) -> f64 {
        if self.energy_meters == 0 {
            0.0
        } else {
            self.energy_completeness_sum / f64::from(self.energy_meters)
        }
    }
    fn energy_kgce(&self) -> Option<f64> {
        (self.energy_known > 0).then_some(self.kgce)
    }
    /// CO₂ comes from energy carriers only (water emits nothing).
    fn co2_kg(&self) -> Option<f64> {
        (self.energy_known > 0).then_some(self.co2)
    }
    fn carrier(&self, id: &str) -> (Option<f64>, f64) {
        match self.carriers.get(id) {
            Some(c) if c.known > 0 => (Some(c.qty), c.completeness_sum / f64::from(c.meters)),
            Some(c) => (None, c.completeness_sum / f64::from(c.meters.max(1))),
            None => (None, 0.0),
        }
    }
    fn produced(&self) -> Option<f64> {
        (self.products_known > 0).then_some(self.produced)
    }
    fn good(&self) -> Option<f64> {
        (self.products_known > 0).then_some(self.good)
    }
    /// Σ good × value added per unit, when at least one product has a price; its completeness
    /// is the share of good parts that had a price, times the count completeness.
    fn va_estimate(&self) -> (Option<f64>, f64) {
        if self.priced_products == 0 {
            return (None, 0.0);
        }
        let share = if self.good > 0.0 {
            self.good_priced / self.good
        } else {
            1.0
        };
        (Some(self.va_estimate), share * self.qty_completeness())
    }
    fn key_process_fraction(&self, mode: IndustryMode) -> (f64, f64) {
        match mode {
            IndustryMode::Discrete => (
                f64::from(self.kp_equipment_nc),
                f64::from(self.kp_equipment),
            ),
            IndustryMode::Process => {
                let controlled = self.kp_processes.values().filter(|&&c| c).count();
                (controlled as f64, self.kp_processes.len() as f64)
            }
        }
    }
}

/// What the engine needs besides the evidence's raw lists.
struct Ctx<'a> {
    ev: &'a Evidence,
    choice: CoefficientChoice,
    planned: Option<Vec<Window>>,
    windows: Vec<Window>,
}

impl Ctx<'_> {
    fn overrides_for(&self, id: &str) -> Option<&BTreeMap<String, f64>> {
        let ent = ancestor(id, 2)?;
        self.ev
            .facts(ent)
            .and_then(|f| f.coefficients.as_ref())
            .map(|c| &c.overrides)
    }
}

fn quantity(q: &Quantity, p: Period, wraps: &mut u32, resets: &mut u32) -> (Option<f64>, f64) {
    match q {
        Quantity::Count(n) => (Some(*n as f64), 1.0),
        Quantity::Counter(c) => {
            let d = Deltas::new(c.register());
            *wraps += d.wraps;
            *resets += d.resets;
            let a = d.attributed(p.from, p.to);
            (a.value, a.completeness)
        }
    }
}

fn add_equipment(
    s: &mut Sums,
    ctx: &Ctx<'_>,
    idx: usize,
    eq: &Equipment,
) -> Result<(), InputError> {
    let p = ctx.ev.period;
    let mut states = eq.states.clone();
    timemodel::sort_states(&mut states);
    let mut b = Buckets::default();
    for w in &ctx.windows {
        b += timemodel::buckets(&states, w.start, w.end, ctx.planned.as_deref());
    }
    s.time_all += b;
    s.equipment += 1;
    s.nc += u32::from(eq.control.is_nc());
    s.networked += u32::from(eq.networked);
    s.single = Some((eq.networked, eq.control.is_nc()));
    if let Some(dp) = eq.data_points {
        s.dp_configured += dp.configured;
        s.dp_received += dp.received;
        s.dp_reported = true;
    }
    if let Some(kp) = &eq.key_process {
        s.kp_equipment += 1;
        s.kp_equipment_nc += u32::from(eq.control.is_nc());
        let under_pcs = matches!(eq.control, Control::Plc | Control::Dcs);
        let e = s.kp_processes.entry(kp.clone()).or_insert(true);
        *e &= under_pcs;
    }
    if eq.products.is_empty() {
        return Ok(());
    }
    s.time_prod += b;
    let mut products: Vec<(usize, &crate::evidence::Product)> =
        eq.products.iter().enumerate().collect();
    products.sort_by(|a, b| a.1.id.cmp(&b.1.id));
    for (j, pr) in products {
        s.products += 1;
        let (produced, c1) = quantity(&pr.produced, p, &mut s.wraps, &mut s.resets);
        let (good, c2) = quantity(&pr.good, p, &mut s.wraps, &mut s.resets);
        let (Some(produced), Some(good)) = (produced, good) else {
            continue;
        };
        if good > produced {
            return Err(InputError::one(
                format!("equipment[{idx}].products[{j}].good"),
                format!(
                    "the counters give {good} good parts but only {produced} produced in the period"
                ),
            ));
        }
        s.products_known += 1;
        s.qty_completeness_sum += c1.min(c2);
        s.produced += produced;
        s.good += good;
        s.ideal_produced += pr.ideal_cycle_s * produced;
        s.ideal_good += pr.ideal_cycle_s * good;
        if let Some(price) = pr.value_added_per_unit_cny {
            s.priced_products += 1;
            s.va_estimate += good * price;
            s.good_priced += good;
        }
    }
    Ok(())
}

fn add_meter(s: &mut Sums, ctx: &Ctx<'_>, m: &Meter) {
    let Some(set) = coefficients::energy_set(&ctx.choice.set) else {
        return;
    };
    let Some(carrier) = set.carriers.get(&m.carrier) else {
        return;
    };
    let Some(coef) = coefficients::resolve(&ctx.choice, ctx.overrides_for(&m.id), &m.carrier)
    else {
        return;
    };
    let factor = coefficients::unit_factor(&m.unit, &carrier.unit).unwrap_or(1.0);
    let (qty, completeness) = match (&m.consumption, m.register()) {
        (Some(v), _) => (Some(*v), 1.0),
        (None, Some(register)) => {
            let d = Deltas::new(register);
            s.wraps += d.wraps;
            s.resets += d.resets;
            let a = d.attributed(ctx.ev.period.from, ctx.ev.period.to);
            (a.value, a.completeness)
        }
        (None, None) => (None, 0.0),
    };
    let qty = qty.map(|q| q * m.multiplier() * factor);
    let id = coefficients::carrier_indicator_id(&m.carrier, &carrier.unit);
    let cs = s.carriers.entry(id).or_default();
    cs.meters += 1;
    cs.completeness_sum += completeness;
    if let Some(q) = qty {
        cs.known += 1;
        cs.qty += q;
        if !m.renewable {
            s.co2 += q * coef.kgco2;
        }
    }
    if let Some(kgce) = coef.kgce {
        s.energy_meters += 1;
        s.energy_completeness_sum += completeness;
        if let Some(q) = qty {
            s.energy_known += 1;
            s.kgce += q * kgce;
            if m.renewable {
                s.kgce_renewable += q * kgce;
            }
        }
    }
}

/// Sums over the equipment and meters whose id passes `keep`.
fn sums(ctx: &Ctx<'_>, keep: &dyn Fn(&str) -> bool) -> Result<Sums, InputError> {
    // Canonical order (ids are unique): floating-point sums then do not depend on the order of
    // the evidence's lists, to the last bit.
    let mut s = Sums::default();
    let mut eq: Vec<(usize, &Equipment)> = ctx.ev.equipment.iter().enumerate().collect();
    eq.sort_by(|a, b| a.1.id.cmp(&b.1.id));
    for (i, e) in eq {
        if keep(&e.id) {
            add_equipment(&mut s, ctx, i, e)?;
        }
    }
    let ids: BTreeSet<&str> = ctx.ev.meters.iter().map(|m| m.id.as_str()).collect();
    let mut meters: Vec<&Meter> = ctx.ev.meters.iter().collect();
    meters.sort_by(|a, b| a.id.cmp(&b.id));
    for m in meters {
        let sub_meter = m.parent.as_deref().is_some_and(|p| ids.contains(p));
        if keep(&m.id) && !sub_meter {
            add_meter(&mut s, ctx, m);
        }
    }
    Ok(s)
}

// ---------------------------------------------------------------------------------------------
// From sums to indicators.

/// A ratio known as numerator and denominator, so that a park can sum them over enterprises.
#[derive(Debug, Clone, Copy)]
struct Frac {
    num: Option<f64>,
    den: Option<f64>,
    completeness: f64,
}

impl Frac {
    fn new(num: (Option<f64>, f64), den: (Option<f64>, f64)) -> Frac {
        Frac {
            num: num.0,
            den: den.0,
            completeness: num.1.min(den.1),
        }
    }
    fn value(&self) -> Option<f64> {
        ratio(self.num, self.den)
    }
    fn reporting(&self) -> bool {
        self.num.is_some_and(f64::is_finite) && self.den.is_some_and(|d| d.is_finite() && d > 0.0)
    }
}

/// Value added of a scope: the reported input, else the live estimate.
fn value_added(s: &Sums, inputs: Option<&Inputs>) -> (Option<f64>, f64, Option<ValueAddedSource>) {
    if let Some(v) = inputs.and_then(|i| i.value_added_cny) {
        return (Some(v), 1.0, Some(ValueAddedSource::Inputs));
    }
    match s.va_estimate() {
        (Some(v), c) => (Some(v), c, Some(ValueAddedSource::Estimate)),
        (None, _) => (None, 0.0, None),
    }
}

fn economic_fracs(
    s: &Sums,
    inputs: Option<&Inputs>,
    years: Option<f64>,
) -> [(&'static str, Frac); 8] {
    let input = |f: fn(&Inputs) -> Option<f64>| -> (Option<f64>, f64) {
        match inputs.and_then(f) {
            Some(v) => (Some(v), 1.0),
            None => (None, 0.0),
        }
    };
    let (va, va_c, _) = value_added(s, inputs);
    let va_wan = (va.map(|v| v / 1e4), va_c);
    let energy_c = s.energy_completeness();
    let tce = (s.energy_kgce().map(|k| k / 1000.0), energy_c);
    let water = s.carrier("water_m3");
    let co2_t = (s.co2_kg().map(|c| c / 1000.0), energy_c);
    let kwh = s.carrier("electricity_kwh");
    let gross = input(|i| i.gross_output_cny);
    let employee_years = match (inputs.and_then(|i| i.employees_avg), years) {
        (Some(e), Some(y)) => (Some(e * y), 1.0),
        _ => (None, 0.0),
    };
    let land_km2 = input(|i| i.land_area_m2.map(|a| a / 1e6));
    let renewable = (s.energy_kgce().map(|_| s.kgce_renewable), energy_c);
    let kgce = (s.energy_kgce(), energy_c);
    [
        ("energy_per_value_added", Frac::new(tce, va_wan)),
        ("water_per_value_added", Frac::new(water, va_wan)),
        ("co2_per_value_added", Frac::new(co2_t, va_wan)),
        ("output_per_kwh", Frac::new(gross, kwh)),
        ("labor_productivity", Frac::new(va_wan, employee_years)),
        (
            "solid_waste_utilization_rate",
            Frac::new(
                input(|i| i.solid_waste_utilized_t),
                input(|i| i.solid_waste_generated_t),
            ),
        ),
        (
            "land_output_intensity",
            Frac::new((gross.0.map(|g| g / 1e8), gross.1), land_km2),
        ),
        ("renewable_energy_share", Frac::new(renewable, kgce)),
    ]
}

fn change(now: Option<f64>, base: Option<f64>) -> Option<f64> {
    ratio(now, base).and_then(|r| finite(r - 1.0))
}

struct Scope<'a> {
    level: Level,
    sums: Sums,
    inputs: Option<&'a Inputs>,
    baseline: Option<&'a Baseline>,
    mode: IndustryMode,
    industry: &'a str,
    set: &'a str,
    carriers_present: &'a BTreeSet<String>,
    years: Option<f64>,
}

type Map = BTreeMap<String, Indicator>;

fn put(map: &mut Map, id: &str, value: Option<f64>, completeness: f64, set: &str) {
    let unit = catalog::describe(id, set).map(|d| d.2).unwrap_or_default();
    let value = value.and_then(finite);
    let completeness = if completeness.is_finite() {
        completeness.clamp(0.0, 1.0)
    } else {
        0.0
    };
    map.insert(
        id.to_owned(),
        Indicator {
            value,
            unit,
            completeness,
        },
    );
}

/// Indicators of one scope at its level (for a park, the economic ids are replaced afterwards
/// by the sums over enterprises).
fn scope_indicators(sc: &Scope<'_>) -> Map {
    let s = &sc.sums;
    let mut m = Map::new();
    let set = sc.set;
    let secs = |ns: i128| ns as f64 / 1e9;
    let t_all = s.time_all;
    let t_prod = s.time_prod;
    let tc_all = t_all.completeness();
    let tc_prod = t_prod.completeness();
    let qc = s.qty_completeness();
    let has_equipment = s.equipment > 0;
    let time = |v: f64| has_equipment.then_some(v);

    put(
        &mut m,
        "planned_busy_time_s",
        time(secs(t_all.pbt())),
        tc_all,
        set,
    );
    put(
        &mut m,
        "actual_production_time_s",
        time(secs(t_all.producing)),
        tc_all,
        set,
    );
    put(
        &mut m,
        "availability",
        ratio(time(secs(t_all.producing)), Some(secs(t_all.pbt()))),
        tc_all,
        set,
    );
    let with_products = s.products_known > 0;
    let pv = |v: f64| with_products.then_some(v);
    put(
        &mut m,
        "performance",
        ratio(pv(s.ideal_produced), Some(secs(t_prod.producing))),
        tc_prod.min(qc),
        set,
    );
    put(
        &mut m,
        "quality_rate",
        ratio(s.good(), s.produced()),
        qc,
        set,
    );
    put(
        &mut m,
        "oee",
        ratio(pv(s.ideal_good), Some(secs(t_prod.pbt()))),
        tc_prod.min(qc),
        set,
    );
    put(
        &mut m,
        "teep",
        ratio(pv(s.ideal_good), Some(secs(t_prod.total()))),
        tc_prod.min(qc),
        set,
    );
    put(&mut m, "produced_qty", s.produced(), qc, set);
    put(&mut m, "good_qty", s.good(), qc, set);
    put(
        &mut m,
        "scrap_qty",
        s.produced().zip(s.good()).map(|(p, g)| p - g),
        qc,
        set,
    );
    let defect_rate = ratio(s.produced().zip(s.good()).map(|(p, g)| p - g), s.produced());
    put(&mut m, "defect_rate", defect_rate, qc, set);
    let ec = s.energy_completeness();
    put(&mut m, "energy_kgce", s.energy_kgce(), ec, set);
    put(
        &mut m,
        "energy_per_unit_kgce",
        ratio(s.energy_kgce(), s.good()),
        ec.min(qc),
        set,
    );
    put(&mut m, "co2_kg", s.co2_kg(), ec, set);
    let (va, va_c, _) = value_added(s, sc.inputs);
    put(&mut m, "value_added_cny", va, va_c, set);
    if sc.level == Level::Equipment {
        let (net, nc) = s.single.map_or((None, None), |(n, c)| {
            (Some(f64::from(u8::from(n))), Some(f64::from(u8::from(c))))
        });
        put(&mut m, "networked", net, 1.0, set);
        put(&mut m, "nc_controlled", nc, 1.0, set);
    }
    for id in sc.carriers_present {
        let (v, c) = s.carrier(id);
        put(&mut m, id, v, c, set);
    }

    if sc.level <= Level::Workshop {
        let (kn, kd) = s.key_process_fraction(sc.mode);
        put(
            &mut m,
            "key_process_nc_rate",
            ratio(Some(kn), Some(kd)),
            1.0,
            set,
        );
        let n = f64::from(s.equipment);
        put(
            &mut m,
            "digital_equipment_rate",
            ratio(Some(f64::from(s.nc)), Some(n)),
            1.0,
            set,
        );
        put(
            &mut m,
            "equipment_networking_rate",
            ratio(Some(f64::from(s.networked)), Some(n)),
            1.0,
            set,
        );
        let dp = s.dp_reported.then_some(s.dp_received as f64);
        put(
            &mut m,
            "data_auto_collection_rate",
            ratio(dp, Some(s.dp_configured as f64)),
            1.0,
            set,
        );
        let good_per_hour = ratio(s.good(), Some(secs(t_prod.pbt()) / 3600.0));
        let base = sc.baseline;
        put(
            &mut m,
            "production_efficiency_change",
            change(good_per_hour, base.and_then(|b| b.good_per_pbt_hour)),
            tc_prod.min(qc),
            set,
        );
        put(
            &mut m,
            "defect_rate_change",
            change(defect_rate, base.and_then(|b| b.defect_rate)),
            qc,
            set,
        );
        for (id, f) in economic_fracs(s, sc.inputs, sc.years) {
            // Workshops show energy per value added; the other pairs start at enterprise level.
            if sc.level <= Level::Enterprise || id == "energy_per_value_added" {
                put(&mut m, id, f.value(), f.completeness, set);
            }
        }
        if sc.level <= Level::Enterprise {
            put(
                &mut m,
                "energy_tce",
                s.energy_kgce().map(|k| k / 1000.0),
                ec,
                set,
            );
            add_changes(&mut m, base, set);
        }
    }
    m
}

fn add_changes(m: &mut Map, base: Option<&Baseline>, set: &str) {
    for (id, of, b) in [
        (
            "energy_per_value_added_change",
            "energy_per_value_added",
            base.and_then(|b| b.energy_per_value_added),
        ),
        (
            "water_per_value_added_change",
            "water_per_value_added",
            base.and_then(|b| b.water_per_value_added),
        ),
    ] {
        let (now, c) = m.get(of).map_or((None, 0.0), |i| (i.value, i.completeness));
        put(m, id, change(now, b), c, set);
    }
}

// ---------------------------------------------------------------------------------------------

fn record(ev: &Evidence, choice: &CoefficientChoice) -> CoefficientRecord {
    CoefficientRecord {
        set: choice.set.clone(),
        electricity_basis: choice.electricity_basis,
        co2_set: choice.co2_set.clone(),
        overrides: choice.overrides.clone(),
        enterprise_overrides: ev
            .entities
            .iter()
            .filter_map(|e| {
                e.coefficients
                    .as_ref()
                    .filter(|c| !c.overrides.is_empty())
                    .map(|c| (e.id.clone(), c.overrides.clone()))
            })
            .collect(),
    }
}

/// Computes every indicator of the evidence's entity at its level. The evidence must come from
/// [`crate::evidence::parse`] (or have passed `validate`).
pub fn compute(ev: &Evidence) -> Result<Report, InputError> {
    let entity = ev.path()?;
    let level = entity.level();
    let choice = ev.coefficients.clone().unwrap_or_default();
    let period = ev.period;
    let planned = ev
        .calendar
        .as_ref()
        .map(|c| c.shift_windows(period.from, period.to));
    let windows = calendar::split_period(ev.calendar.as_ref(), period.from, period.to);
    let ctx = Ctx {
        ev,
        choice,
        planned,
        windows,
    };
    let set = ctx.choice.set.as_str();
    let years = calendar::years_covered(period.from, period.to, ev.zone_name());
    let mut carriers_present: BTreeSet<String> =
        ["electricity_kwh".to_owned(), "water_m3".to_owned()].into();
    if let Some(es) = coefficients::energy_set(set) {
        for m in &ev.meters {
            if let Some(c) = es.carriers.get(&m.carrier) {
                carriers_present.insert(coefficients::carrier_indicator_id(&m.carrier, &c.unit));
            }
        }
    }
    let mode = ev.industry_mode.unwrap_or_default();
    let industry = ev
        .industry
        .as_deref()
        .unwrap_or(assessment::DEFAULT_INDUSTRY);

    let scope = Scope {
        level,
        sums: sums(&ctx, &|_| true)?,
        inputs: if level == Level::Park {
            None
        } else {
            ev.inputs.as_ref()
        },
        baseline: ev.baseline.as_ref(),
        mode,
        industry,
        set,
        carriers_present: &carriers_present,
        years,
    };
    let mut indicators = scope_indicators(&scope);
    let enterprises = if level == Level::Park {
        park_rollup(&ctx, &scope, &mut indicators)?
    } else {
        Vec::new()
    };
    Ok(report(
        &ctx,
        ev.entity.clone(),
        &scope,
        indicators,
        enterprises,
    ))
}

/// The report of one scope: the same shape and the same assessment rule for the evidence's
/// entity and for each enterprise of a park.
fn report(
    ctx: &Ctx<'_>,
    entity: String,
    sc: &Scope<'_>,
    indicators: Map,
    enterprises: Vec<Report>,
) -> Report {
    let kind = match sc.level {
        Level::Workshop => Some(assessment::Kind::DigitalWorkshop),
        Level::Enterprise => Some(assessment::Kind::GreenFactory),
        _ => None,
    };
    Report {
        entity,
        level: sc.level,
        period: ctx.ev.period,
        engine_version: ENGINE_VERSION,
        coefficients: record(ctx.ev, &ctx.choice),
        value_added_source: if sc.level == Level::Park {
            None
        } else {
            value_added(&sc.sums, sc.inputs).2
        },
        assessments: kind
            .map(|k| assessment::evaluate_all(k, sc.industry, &indicators))
            .unwrap_or_default(),
        counter_wraps: sc.sums.wraps,
        counter_resets: sc.sums.resets,
        indicators,
        enterprises,
    }
}

/// Enterprises of a park: the second path segment of everything in the evidence.
fn enterprise_names(ev: &Evidence) -> BTreeSet<String> {
    ev.equipment
        .iter()
        .map(|e| e.id.as_str())
        .chain(ev.meters.iter().map(|m| m.id.as_str()))
        .chain(ev.entities.iter().map(|e| e.id.as_str()))
        .filter(|id| id.contains('/'))
        .filter_map(|id| ancestor(id, 2).map(str::to_owned))
        .collect()
}

/// Park level (docs/ENGINE.md §3.3): each enterprise's report, and the park's economic ratios as
/// sums over the enterprises that report both sides, the NC rate as the mean of enterprise
/// rates, the weighted NC rate and the certification counts, written into `park`.
fn park_rollup(ctx: &Ctx<'_>, sc: &Scope<'_>, park: &mut Map) -> Result<Vec<Report>, InputError> {
    #[derive(Default)]
    struct Acc {
        num: f64,
        den: f64,
        completeness: f64,
        reporting: u32,
    }
    let set = sc.set;
    let names = enterprise_names(ctx.ev);
    // The pairs' ids come from the one function that defines them.
    let mut acc: BTreeMap<&'static str, Acc> = economic_fracs(&Sums::default(), None, None)
        .into_iter()
        .map(|(id, _)| (id, Acc::default()))
        .collect();
    let mut value_added_acc = Acc::default();
    let mut nc_rates = Vec::new();
    let (mut kp_nc, mut kp_all) = (0u32, 0u32);
    let mut reports = Vec::with_capacity(names.len());
    for name in &names {
        let prefix = format!("{name}/");
        let facts = ctx.ev.facts(name);
        let sub = Scope {
            level: Level::Enterprise,
            sums: sums(ctx, &|id: &str| id.starts_with(&prefix))?,
            inputs: facts.and_then(|f| f.inputs.as_ref()),
            baseline: facts.and_then(|f| f.baseline.as_ref()),
            mode: facts.and_then(|f| f.industry_mode).unwrap_or(sc.mode),
            industry: facts
                .and_then(|f| f.industry.as_deref())
                .unwrap_or(sc.industry),
            set,
            carriers_present: sc.carriers_present,
            years: sc.years,
        };
        for (id, f) in economic_fracs(&sub.sums, sub.inputs, sub.years) {
            if let (Some(a), true) = (acc.get_mut(id), f.reporting()) {
                a.num += f.num.unwrap_or(0.0);
                a.den += f.den.unwrap_or(0.0);
                a.completeness += f.completeness;
                a.reporting += 1;
            }
        }
        if let (Some(v), c, _) = value_added(&sub.sums, sub.inputs) {
            value_added_acc.num += v;
            value_added_acc.completeness += c;
            value_added_acc.reporting += 1;
        }
        // Weighted: machines in every mode (INDICATORS.md §5, "equipment-weighted").
        kp_nc += sub.sums.kp_equipment_nc;
        kp_all += sub.sums.kp_equipment;
        let (n, d) = sub.sums.key_process_fraction(sub.mode);
        if let Some(r) = ratio(Some(n), Some(d)) {
            nc_rates.push(r);
        }
        let indicators = scope_indicators(&sub);
        reports.push(report(ctx, name.clone(), &sub, indicators, Vec::new()));
    }
    let n = names.len() as f64;
    let share = |x: f64| if n > 0.0 { x / n } else { 0.0 };
    for (id, a) in &acc {
        let v = if a.reporting > 0 {
            ratio(Some(a.num), Some(a.den))
        } else {
            None
        };
        put(park, id, v, share(a.completeness), set);
    }
    let va = (value_added_acc.reporting > 0).then_some(value_added_acc.num);
    put(
        park,
        "value_added_cny",
        va,
        share(value_added_acc.completeness),
        set,
    );
    add_changes(park, sc.baseline, set);
    let mean = (!nc_rates.is_empty()).then(|| nc_rates.iter().sum::<f64>() / nc_rates.len() as f64);
    put(
        park,
        "key_process_nc_rate",
        mean,
        share(nc_rates.len() as f64),
        set,
    );
    put(
        park,
        "key_process_nc_rate_weighted",
        ratio(Some(f64::from(kp_nc)), Some(f64::from(kp_all))),
        1.0,
        set,
    );
    for (id, kind) in [
        ("digital_workshop_count", CertificationKind::DigitalWorkshop),
        ("smart_factory_count", CertificationKind::SmartFactory),
        ("green_factory_count", CertificationKind::GreenFactory),
    ] {
        put(
            park,
            id,
            Some(certified(ctx.ev, kind, ctx.ev.period.to) as f64),
            1.0,
            set,
        );
    }
    Ok(reports)
}

/// Entities holding a certification of `kind` in force at `at`.
fn certified(ev: &Evidence, kind: CertificationKind, at: Timestamp) -> usize {
    let tz = ev.zone_name();
    ev.entities
        .iter()
        .filter(|e| {
            e.certifications.iter().any(|c| {
                let since = calendar::instant(&c.since, tz, false);
                let until = c.until.as_deref().map(|u| calendar::instant(u, tz, true));
                c.kind == kind
                    && since.is_ok_and(|s| s < at)
                    && until.is_none_or(|u| u.is_ok_and(|u| at <= u))
            })
        })
        .count()
}
