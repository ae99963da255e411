//! Live indicators at the agent: OEE and its factors, quantities, energy by carrier, energy per
//! unit, the value-added estimate and energy per value added, per equipment and for the agent's
//! workshop, over rolling windows ending now and over the shift that contains now.
//!
//! There is no indicator mathematics here. This module keeps a bounded in-memory history of what
//! the pipeline observed (closed and open state intervals, part counter readings, meter readings)
//! and, on demand, turns each window into `shopfloor.evidence/1` values that it hands to the
//! shared engine ([`shopfloor_core::engine::compute`]), the code the gateway runs on the same
//! data. The engine computes only the evidence's own entity, so every window gets one
//! evidence for the workshop and one per equipment (equipment at depth 5; a machine placed
//! directly below a workshop has no equipment-level evidence and appears in the workshop only).
//!
//! What goes into an evidence (docs/ENGINE.md §1–2):
//! - period `[from, to)` = the window; the shift calendar of the setup (if any) in the agent's
//!   time zone, so time outside shifts is planned down exactly as at the gateway;
//! - states: the closed intervals and the open one that overlap the window, clipped to it. Time
//!   no interval covers is offline (the engine's rule);
//! - part counters and meters: the readings with `from < t ≤ to` plus the last reading at or
//!   before `from` (the base reading, docs/ENGINE.md §2.4 rules 4 and 6), so a delta across the
//!   window start belongs to exactly one side and completeness is measured from the base;
//! - `networked`: the configured flag, and only when the machine delivered data in the window
//!   (a state other than offline, or a counter reading);
//! - the product's counters come from the pipeline with roles `produced` and `good` (the
//!   device's counter tracker derives a missing one from `scrap`; `scrap` itself is not kept).
//!   Without a `good` series the good count is an empty counter: the engine then treats the
//!   product's counts as unknown (null performance, quality, OEE; lower completeness) instead of
//!   guessing. When the two registers, read at slightly different instants, give more good than
//!   produced parts in a window (by the engine's own attribution), the good count of that window
//!   is the produced counter: the engine would otherwise reject the whole evidence.
//!
//! Memory: each series keeps at most the longest window (plus a margin) of history, pruned by
//! [`Live::prune`] and, so that memory stays bounded even if nobody calls it, automatically on
//! every record relative to that series' newest time (with twice the horizon, which tolerates
//! device clocks running ahead); every series is also capped at [`SERIES_CAP`] entries.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Duration;

use jiff::civil::Weekday;
use jiff::tz::TimeZone;
use jiff::{Timestamp, ToSpan};
use serde::Serialize;
use shopfloor_core::batch::{Millis, Reading, StateSpan};
use shopfloor_core::calendar::{Calendar, Shift};
use shopfloor_core::counter::Deltas;
use shopfloor_core::evidence::{
    self, Control, Counter, Equipment, Evidence, Meter, Period, Product, Quantity, State,
    StateInterval,
};
use shopfloor_core::path::EntityPath;

/// Most entries (state intervals or readings) kept per series, whatever the windows: the last
/// guard of the memory bound (the oldest entries go first).
pub const SERIES_CAP: usize = 1 << 19;

/// Longest rolling window accepted.
pub const MAX_ROLLING: Duration = Duration::from_secs(31 * 86_400);

/// History kept beyond the longest window.
const MARGIN_MS: i64 = 5 * 60 * 1000;

/// A shift lasts at most 24 h of local time, 25 real hours across a DST change.
const DST_SLACK_MS: i64 = 3_600_000;

/// What the live indicators are computed for.
#[derive(Debug, Clone)]
pub struct LiveSetup {
    /// Entity path of the agent's workshop (or line); every device lies below it.
    pub workshop: String,
    /// The agent's time zone: shift windows are local times in it. Must be an IANA zone when
    /// there are shifts (the evidence's calendar names it).
    pub time_zone: TimeZone,
    pub equipment: Vec<LiveEquipment>,
    pub meters: Vec<LiveMeter>,
    /// Rolling windows ending now (`rolling_60m` for 60 minutes).
    pub rolling: Vec<Duration>,
    /// Shifts; the one containing now gives the window `shift_<name>` from its start to now.
    pub shifts: Vec<LiveShift>,
}

#[derive(Debug, Clone)]
pub struct LiveEquipment {
    /// Entity path (the device id).
    pub id: String,
    pub kind: String,
    /// `cnc`, `plc`, `dcs`, `robot` or `manual`; none means manual (not numerically controlled).
    pub control: Option<String>,
    pub key_process: Option<String>,
    /// The equipment is connected to the agent; it counts as networked in a window only if it
    /// also delivered data in that window.
    pub networked: bool,
    /// The product being made (its counters are the device's `produced` and `good` counters).
    pub product: Option<LiveProduct>,
}

#[derive(Debug, Clone)]
pub struct LiveProduct {
    pub id: String,
    pub ideal_cycle_s: f64,
    pub value_added_per_unit_cny: Option<f64>,
}

#[derive(Debug, Clone)]
pub struct LiveMeter {
    /// Entity path; in the agent a meter is a device. A meter below an equipment's path
    /// (`…/cnc-01/main`) also counts for that equipment.
    pub id: String,
    /// Carrier key of the coefficient set (`electricity`, `natural_gas`, `water`, …).
    pub carrier: String,
    /// Unit of the readings, convertible to the carrier's unit (`kWh`, `Wh`, `MWh`, `m3`, …).
    pub unit: String,
}

#[derive(Debug, Clone)]
pub struct LiveShift {
    pub name: String,
    /// Local start time (whole minutes).
    pub start: jiff::civil::Time,
    /// Length, 0 < hours ≤ 24, rounded to whole minutes (the calendar's resolution).
    pub hours: f64,
}

/// Indicators of one window.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LiveWindow {
    /// `rolling_60m`, `rolling_90s`, …, or `shift_<name>`.
    pub name: String,
    pub from_ms: Millis,
    pub to_ms: Millis,
    /// The workshop first, then each equipment in id order.
    pub entities: Vec<LiveEntity>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LiveEntity {
    pub entity: String,
    /// Every id the engine emits at the entity's level, in id order. Empty if the engine
    /// rejected the evidence (logged).
    pub indicators: Vec<LiveIndicator>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LiveIndicator {
    /// Catalog id (`oee`, `electricity_kwh`, …).
    pub id: String,
    /// Null when the engine has no value (zero denominator, missing input).
    pub value: Option<f64>,
    pub unit: String,
    /// Share of the expected data that was present, 0..=1.
    pub completeness: Option<f64>,
}

// ---------------------------------------------------------------------------------------------
// The setup, checked and prepared once.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Equipment(usize),
    Meter(usize),
}

#[derive(Debug, Clone)]
struct Prepared {
    /// Device id → what it is.
    roles: BTreeMap<String, Role>,
    /// Indices into `setup.equipment`, in id order.
    equipment_order: Vec<usize>,
    /// Per equipment (setup order): its control.
    controls: Vec<Control>,
    /// Per equipment (setup order): it has an equipment-level evidence (depth 5).
    own_report: Vec<bool>,
    /// Per equipment (setup order): meters (setup indices) below its path.
    meters_of: Vec<Vec<usize>>,
    /// All shifts, for the evidence.
    calendar: Option<Calendar>,
    /// One single-shift definition per setup shift, and the zone name.
    shifts: Vec<(String, Shift)>,
    zone: Option<String>,
    /// (window name, length).
    rolling: Vec<(String, i64)>,
    /// History needed by the longest window, plus the margin.
    horizon_ms: i64,
}

fn parse_control(s: Option<&str>) -> Option<Control> {
    Some(match s.map(|s| s.trim().to_ascii_lowercase()).as_deref() {
        None | Some("manual") => Control::Manual,
        Some("cnc") => Control::Cnc,
        Some("plc") => Control::Plc,
        Some("dcs") => Control::Dcs,
        Some("robot") => Control::Robot,
        Some(_) => return None,
    })
}

fn window_name(ms: i64) -> String {
    if ms % 60_000 == 0 {
        format!("rolling_{}m", ms / 60_000)
    } else if ms % 1000 == 0 {
        format!("rolling_{}s", ms / 1000)
    } else {
        format!("rolling_{ms}ms")
    }
}

fn hm(minutes: i64) -> String {
    let m = minutes.rem_euclid(1440);
    format!("{:02}:{:02}", m / 60, m % 60)
}

fn prepare(setup: &LiveSetup) -> Result<Prepared, String> {
    let mut errs: Vec<String> = Vec::new();
    let workshop = match EntityPath::parse(&setup.workshop) {
        Ok(w) => Some(w),
        Err(r) => {
            errs.push(format!("workshop: {r}"));
            None
        }
    };
    let mut roles = BTreeMap::new();
    let mut controls = Vec::with_capacity(setup.equipment.len());
    let mut own_report = Vec::with_capacity(setup.equipment.len());
    let mut eq_paths = Vec::with_capacity(setup.equipment.len());
    for (i, e) in setup.equipment.iter().enumerate() {
        let control = parse_control(e.control.as_deref()).unwrap_or_else(|| {
            errs.push(format!(
                "equipment[{i}].control: \"{}\" is not one of cnc, plc, dcs, robot, manual",
                e.control.as_deref().unwrap_or_default()
            ));
            Control::Manual
        });
        controls.push(control);
        let path = EntityPath::parse(&e.id).ok();
        own_report.push(path.as_ref().is_some_and(|p| p.depth() == 5));
        eq_paths.push(path);
        if roles.insert(e.id.clone(), Role::Equipment(i)).is_some() {
            errs.push(format!("equipment[{i}].id: duplicate id \"{}\"", e.id));
        }
    }
    let mut meters_of = vec![Vec::new(); setup.equipment.len()];
    for (j, m) in setup.meters.iter().enumerate() {
        match roles.insert(m.id.clone(), Role::Meter(j)) {
            Some(Role::Equipment(_)) => errs.push(format!(
                "meters[{j}].id: \"{}\" is also an equipment id; give the meter its own path (e.g. \"{}/main\")",
                m.id, m.id
            )),
            Some(Role::Meter(_)) => {
                errs.push(format!("meters[{j}].id: duplicate meter id \"{}\"", m.id))
            }
            None => {}
        }
        if let Ok(mp) = EntityPath::parse_meter(&m.id) {
            for (i, ep) in eq_paths.iter().enumerate() {
                if ep.as_ref().is_some_and(|ep| ep.contains_strictly(&mp)) {
                    meters_of[i].push(j);
                }
            }
        }
    }
    if let Some(w) = &workshop {
        for (i, ep) in eq_paths.iter().enumerate() {
            if ep.as_ref().is_some_and(|ep| !w.contains_strictly(ep)) {
                errs.push(format!(
                    "equipment[{i}].id: \"{}\" is not below the workshop \"{w}\"",
                    setup.equipment[i].id
                ));
            }
        }
    }

    let mut rolling = Vec::new();
    let mut names = BTreeSet::new();
    for (k, d) in setup.rolling.iter().enumerate() {
        let ms = i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
        if ms <= 0 || *d > MAX_ROLLING {
            errs.push(format!(
                "rolling[{k}]: must be at least 1 ms and at most {} days (got {d:?})",
                MAX_ROLLING.as_secs() / 86_400
            ));
            continue;
        }
        let name = window_name(ms);
        if !names.insert(name.clone()) {
            errs.push(format!("rolling[{k}]: {name} is listed twice"));
            continue;
        }
        rolling.push((name, ms));
    }

    let zone = setup.time_zone.iana_name().map(str::to_owned);
    if !setup.shifts.is_empty() && zone.is_none() {
        errs.push(
            "time_zone: shifts need an IANA time zone (e.g. Asia/Shanghai), not a fixed offset"
                .to_owned(),
        );
    }
    let mut shifts = Vec::new();
    let mut longest_shift_ms = 0i64;
    let mut shift_names = BTreeSet::new();
    for (k, s) in setup.shifts.iter().enumerate() {
        if s.name.trim().is_empty() {
            errs.push(format!("shifts[{k}].name: must not be empty"));
        } else if !shift_names.insert(s.name.as_str()) {
            errs.push(format!("shifts[{k}].name: duplicate shift \"{}\"", s.name));
        }
        if s.start.second() != 0 || s.start.subsec_nanosecond() != 0 {
            errs.push(format!(
                "shifts[{k}].start: {} is not a whole minute",
                s.start
            ));
        }
        let minutes = (s.hours * 60.0).round();
        if !(s.hours.is_finite() && s.hours > 0.0 && s.hours <= 24.0 && minutes >= 1.0) {
            errs.push(format!(
                "shifts[{k}].hours: must be > 0 and ≤ 24 (got {})",
                s.hours
            ));
            continue;
        }
        let minutes = minutes as i64;
        longest_shift_ms = longest_shift_ms.max(minutes * 60_000);
        let start = i64::from(s.start.hour()) * 60 + i64::from(s.start.minute());
        shifts.push((
            s.name.clone(),
            Shift {
                name: s.name.clone(),
                start: hm(start),
                end: hm(start + minutes),
            },
        ));
    }
    let calendar = match (&zone, shifts.is_empty()) {
        (Some(z), false) => Some(Calendar {
            time_zone: z.clone(),
            shifts: shifts.iter().map(|(_, s)| s.clone()).collect(),
            weekdays: None,
            holidays: Vec::new(),
        }),
        _ => None,
    };
    let longest_rolling = rolling.iter().map(|r| r.1).max().unwrap_or(0);
    let longest_shift = if shifts.is_empty() {
        0
    } else {
        longest_shift_ms + DST_SLACK_MS
    };
    let mut order: Vec<usize> = (0..setup.equipment.len()).collect();
    order.sort_by(|&a, &b| setup.equipment[a].id.cmp(&setup.equipment[b].id));
    let prep = Prepared {
        roles,
        equipment_order: order,
        controls,
        own_report,
        meters_of,
        calendar,
        shifts,
        zone,
        rolling,
        horizon_ms: longest_rolling.max(longest_shift) + MARGIN_MS,
    };

    // Everything else (paths, kinds, carriers, units, ideal cycles, prices, the calendar) is
    // checked by the evidence's own validation, on an evidence of the whole setup.
    if errs.is_empty() {
        let from = Timestamp::UNIX_EPOCH;
        let to = Timestamp::from_second(3600).unwrap_or(Timestamp::MAX);
        let history = BTreeMap::new();
        let ev = evidence_of(
            setup,
            &prep,
            &history,
            setup.workshop.clone(),
            (from, to),
            (0..setup.equipment.len()).collect(),
            (0..setup.meters.len()).collect(),
        );
        if let Err(e) = ev.validate() {
            errs.extend(e.errors.iter().map(ToString::to_string));
        }
    }
    if errs.is_empty() {
        Ok(prep)
    } else {
        Err(format!("live indicators: {}", errs.join("; ")))
    }
}

// ---------------------------------------------------------------------------------------------
// History.

/// Readings of one cumulative register, in time order.
#[derive(Debug, Default)]
struct Series {
    readings: VecDeque<Reading>,
    width_bits: Option<u8>,
}

fn ts(ms: Millis) -> Option<Timestamp> {
    Timestamp::from_millisecond(ms).ok()
}

impl Series {
    /// Appends a reading; out-of-order, non-finite or negative readings are dropped, and a
    /// second reading at the same instant replaces the first.
    fn push(&mut self, r: Reading) -> bool {
        if !(r.v.is_finite() && r.v >= 0.0) || ts(r.t).is_none() {
            return false;
        }
        match self.readings.back_mut() {
            Some(last) if r.t < last.t => return false,
            Some(last) if r.t == last.t => last.v = r.v,
            _ => self.readings.push_back(r),
        }
        if self.readings.len() > SERIES_CAP {
            self.readings.pop_front();
        }
        true
    }

    /// Drops readings before `cutoff`, keeping the last one at or before it (the base of a
    /// window starting there).
    fn prune(&mut self, cutoff: Millis) {
        let keep_from = self
            .readings
            .partition_point(|r| r.t <= cutoff)
            .saturating_sub(1);
        self.readings.drain(..keep_from);
    }

    /// The base reading (last at or before `from`) and the readings in `(from, to]`.
    fn window(&self, from: Millis, to: Millis) -> Vec<evidence::Reading> {
        let lo = self
            .readings
            .partition_point(|r| r.t <= from)
            .saturating_sub(1);
        let hi = self.readings.partition_point(|r| r.t <= to).max(lo);
        self.readings
            .range(lo..hi)
            .filter_map(|r| {
                Some(evidence::Reading {
                    at: ts(r.t)?,
                    value: r.v,
                })
            })
            .collect()
    }

    /// A reading in `(from, to]`: the device delivered data.
    fn delivered(&self, from: Millis, to: Millis) -> bool {
        let i = self.readings.partition_point(|r| r.t <= from);
        self.readings.get(i).is_some_and(|r| r.t <= to)
    }
}

#[derive(Debug, Default)]
struct States {
    /// Closed intervals, in order, not overlapping.
    closed: VecDeque<StateSpan>,
    /// The current interval (its end is the time of the device's last event).
    open: Option<StateSpan>,
}

impl States {
    fn push(&mut self, s: StateSpan) {
        if ts(s.from).is_none() || ts(s.to).is_none() {
            return;
        }
        // Intervals arrive in order; an overlap with the previous one is cut off.
        let from = self.closed.back().map_or(s.from, |l| s.from.max(l.to));
        if from >= s.to {
            return;
        }
        self.closed.push_back(StateSpan { from, ..s });
        if self.closed.len() > SERIES_CAP {
            self.closed.pop_front();
        }
    }

    fn prune(&mut self, cutoff: Millis) {
        let n = self.closed.partition_point(|s| s.to <= cutoff);
        self.closed.drain(..n);
        if self.open.is_some_and(|o| o.to <= cutoff) {
            self.open = None;
        }
    }

    /// Intervals overlapping `[from, to)`, clipped to it.
    fn window(&self, from: Millis, to: Millis) -> Vec<StateSpan> {
        let first = self.closed.partition_point(|s| s.to <= from);
        let mut out: Vec<StateSpan> = self
            .closed
            .range(first..)
            .take_while(|s| s.from < to)
            .copied()
            .collect();
        if let Some(o) = self.open {
            let start = self.closed.back().map_or(o.from, |l| o.from.max(l.to));
            out.push(StateSpan { from: start, ..o });
        }
        out.into_iter()
            .map(|s| StateSpan {
                from: s.from.max(from),
                to: s.to.min(to),
                state: s.state,
            })
            .filter(|s| s.from < s.to)
            .collect()
    }
}

#[derive(Debug, Default)]
struct DeviceHistory {
    states: States,
    /// Part counters by role (`produced`, `good`).
    counters: BTreeMap<String, Series>,
    /// Meter readings.
    meter: Series,
}

impl DeviceHistory {
    fn prune(&mut self, cutoff: Millis) {
        self.states.prune(cutoff);
        for c in self.counters.values_mut() {
            c.prune(cutoff);
        }
        self.meter.prune(cutoff);
    }

    fn len(&self) -> usize {
        self.states.closed.len()
            + usize::from(self.states.open.is_some())
            + self
                .counters
                .values()
                .map(|c| c.readings.len())
                .sum::<usize>()
            + self.meter.readings.len()
    }
}

// ---------------------------------------------------------------------------------------------
// Evidence building.

fn counter(series: Option<&Series>, from: Millis, to: Millis) -> Counter {
    series.map_or_else(Counter::default, |s| Counter {
        readings: s.window(from, to),
        width_bits: s.width_bits,
        ..Counter::default()
    })
}

fn equipment_of(
    e: &LiveEquipment,
    control: Control,
    h: Option<&DeviceHistory>,
    (from, to): (Millis, Millis),
    (from_ts, to_ts): (Timestamp, Timestamp),
) -> Equipment {
    let spans = h.map(|h| h.states.window(from, to)).unwrap_or_default();
    let delivered = spans.iter().any(|s| s.state != State::Offline)
        || h.is_some_and(|h| h.counters.values().any(|c| c.delivered(from, to)));
    let states = spans
        .iter()
        .filter_map(|s| {
            Some(StateInterval {
                from: ts(s.from)?,
                to: ts(s.to)?,
                state: s.state,
            })
        })
        .collect();
    let products = e
        .product
        .iter()
        .map(|p| {
            let produced = counter(h.and_then(|h| h.counters.get("produced")), from, to);
            let mut good = counter(h.and_then(|h| h.counters.get("good")), from, to);
            // Two registers read at slightly different instants can disagree by a part at a
            // window edge; more good than produced parts would make the engine reject the whole
            // evidence, so the good count is then capped by the produced counter (the engine's
            // own attribution decides).
            let attributed =
                |c: &Counter| Deltas::new(c.register()).attributed(from_ts, to_ts).value;
            if let (Some(np), Some(ng)) = (attributed(&produced), attributed(&good))
                && ng > np
            {
                good = produced.clone();
            }
            Product {
                id: p.id.clone(),
                ideal_cycle_s: p.ideal_cycle_s,
                produced: Quantity::Counter(produced),
                good: Quantity::Counter(good),
                value_added_per_unit_cny: p.value_added_per_unit_cny,
            }
        })
        .collect();
    Equipment {
        id: e.id.clone(),
        kind: e.kind.clone(),
        control,
        key_process: e.key_process.clone(),
        networked: e.networked && delivered,
        states,
        products,
        data_points: None,
    }
}

fn meter_of(m: &LiveMeter, h: Option<&DeviceHistory>, from: Millis, to: Millis) -> Meter {
    Meter {
        id: m.id.clone(),
        carrier: m.carrier.clone(),
        unit: m.unit.clone(),
        consumption: None,
        readings: Some(h.map(|h| h.meter.window(from, to)).unwrap_or_default()),
        rollover: None,
        replaced_at: Vec::new(),
        ct_ratio: None,
        pt_ratio: None,
        renewable: false,
        parent: None,
    }
}

/// The evidence of `entity` over `[from, to)` with the given equipment and meters (indices into
/// the setup).
fn evidence_of(
    setup: &LiveSetup,
    prep: &Prepared,
    history: &BTreeMap<String, DeviceHistory>,
    entity: String,
    (from_ts, to_ts): (Timestamp, Timestamp),
    equipment: Vec<usize>,
    meters: Vec<usize>,
) -> Evidence {
    let (from, to) = (from_ts.as_millisecond(), to_ts.as_millisecond());
    Evidence {
        schema: evidence::SCHEMA.to_owned(),
        entity,
        period: Period {
            from: from_ts,
            to: to_ts,
        },
        calendar: prep.calendar.clone(),
        time_zone: None,
        coefficients: None,
        industry_mode: None,
        industry: None,
        equipment: equipment
            .into_iter()
            .map(|i| {
                let e = &setup.equipment[i];
                equipment_of(
                    e,
                    prep.controls[i],
                    history.get(&e.id),
                    (from, to),
                    (from_ts, to_ts),
                )
            })
            .collect(),
        meters: meters
            .into_iter()
            .map(|j| {
                let m = &setup.meters[j];
                meter_of(m, history.get(&m.id), from, to)
            })
            .collect(),
        inputs: None,
        baseline: None,
        entities: Vec::new(),
        signatures: Vec::new(),
    }
}

fn run_engine(ev: &Evidence) -> LiveEntity {
    let result = ev
        .validate()
        .and_then(|()| shopfloor_core::engine::compute(ev));
    let indicators = match result {
        Ok(report) => report
            .indicators
            .into_iter()
            .map(|(id, i)| LiveIndicator {
                id,
                value: i.value,
                unit: i.unit,
                completeness: Some(i.completeness),
            })
            .collect(),
        Err(e) => {
            tracing::warn!(entity = %ev.entity, error = %e, "live indicators: the engine rejected the window's evidence");
            Vec::new()
        }
    };
    LiveEntity {
        entity: ev.entity.clone(),
        indicators,
    }
}

fn weekday_key(w: Weekday) -> &'static str {
    match w {
        Weekday::Monday => "mon",
        Weekday::Tuesday => "tue",
        Weekday::Wednesday => "wed",
        Weekday::Thursday => "thu",
        Weekday::Friday => "fri",
        Weekday::Saturday => "sat",
        Weekday::Sunday => "sun",
    }
}

// ---------------------------------------------------------------------------------------------

/// Live indicators: the history and the setup.
#[derive(Debug)]
pub struct Live {
    setup: LiveSetup,
    prep: Prepared,
    devices: BTreeMap<String, DeviceHistory>,
}

impl Live {
    /// Checks the setup (paths, controls, carriers and units, ideal cycles, windows, shifts;
    /// every problem in one message) and starts with an empty history.
    pub fn new(setup: LiveSetup) -> Result<Live, String> {
        let prep = prepare(&setup)?;
        Ok(Live {
            setup,
            prep,
            devices: BTreeMap::new(),
        })
    }

    /// Checks a setup without building anything (what [`Live::new`] and
    /// [`Live::reconfigure`] check).
    pub fn check(setup: &LiveSetup) -> Result<(), String> {
        prepare(setup).map(|_| ())
    }

    /// Hot reload: the history of devices that remain (same id, same kind: equipment or meter)
    /// is kept, the rest is dropped. An invalid setup is logged and the running one stays
    /// (check it first with [`Live::check`] to reject a reload).
    pub fn reconfigure(&mut self, setup: LiveSetup) {
        let prep = match prepare(&setup) {
            Ok(p) => p,
            Err(e) => {
                tracing::error!(error = %e, "live indicators: new setup rejected; the running one stays");
                return;
            }
        };
        let old = &self.prep.roles;
        self.devices.retain(|id, _| {
            matches!(
                (old.get(id), prep.roles.get(id)),
                (Some(Role::Equipment(_)), Some(Role::Equipment(_)))
                    | (Some(Role::Meter(_)), Some(Role::Meter(_)))
            )
        });
        self.setup = setup;
        self.prep = prep;
    }

    /// The setup in force.
    pub fn setup(&self) -> &LiveSetup {
        &self.setup
    }

    /// History kept before the oldest window start: the longest window plus a margin.
    pub fn horizon(&self) -> Duration {
        Duration::from_millis(u64::try_from(self.prep.horizon_ms).unwrap_or(0))
    }

    /// Entries held (state intervals, open states, readings) over all devices.
    pub fn retained(&self) -> usize {
        self.devices.values().map(DeviceHistory::len).sum()
    }

    fn equipment_history(&mut self, device: &str) -> Option<&mut DeviceHistory> {
        match self.prep.roles.get(device) {
            Some(Role::Equipment(_)) => Some(self.devices.entry(device.to_owned()).or_default()),
            _ => None,
        }
    }

    /// Closed state intervals of an equipment, in time order (others are ignored).
    pub fn record_states(&mut self, device: &str, spans: &[StateSpan]) {
        let auto = 2 * self.prep.horizon_ms;
        let Some(h) = self.equipment_history(device) else {
            return;
        };
        for s in spans {
            h.states.push(*s);
        }
        if let Some(last) = spans.last() {
            h.states.prune(last.to.saturating_sub(auto));
        }
    }

    /// The current, still-open interval of an equipment (its `to` is the time of the device's
    /// last event); replaces the previous one. `None` clears it.
    pub fn set_open_state(&mut self, device: &str, open: Option<StateSpan>) {
        if let Some(h) = self.equipment_history(device) {
            h.states.open = open.filter(|o| ts(o.from).is_some() && ts(o.to).is_some());
        }
    }

    /// A reading of an equipment's part counter. Roles `produced` and `good` are kept; `scrap`
    /// is not needed (the device's counter tracker derives `good` or `produced` from it).
    pub fn record_counter(
        &mut self,
        device: &str,
        role: &str,
        reading: Reading,
        width_bits: Option<u8>,
    ) {
        if !matches!(role, "produced" | "good") {
            return;
        }
        let auto = 2 * self.prep.horizon_ms;
        let Some(h) = self.equipment_history(device) else {
            return;
        };
        let s = h.counters.entry(role.to_owned()).or_default();
        s.width_bits = width_bits.filter(|w| matches!(w, 16 | 32 | 64));
        if s.push(reading) {
            s.prune(reading.t.saturating_sub(auto));
        }
    }

    /// A reading of a meter device (cumulative register in the meter's unit).
    pub fn record_meter(&mut self, device: &str, reading: Reading) {
        if !matches!(self.prep.roles.get(device), Some(Role::Meter(_))) {
            return;
        }
        let auto = 2 * self.prep.horizon_ms;
        let s = &mut self.devices.entry(device.to_owned()).or_default().meter;
        if s.push(reading) {
            s.prune(reading.t.saturating_sub(auto));
        }
    }

    /// Drops history that no window ending at `now_ms` or later can need.
    pub fn prune(&mut self, now_ms: Millis) {
        let cutoff = now_ms.saturating_sub(self.prep.horizon_ms);
        for h in self.devices.values_mut() {
            h.prune(cutoff);
        }
    }

    /// The windows at `now_ms`: each rolling window `[now − length, now]`, then, per shift that
    /// contains now, `[shift start, now]`. Each has the workshop's indicators and each
    /// equipment's.
    pub fn compute(&self, now_ms: Millis) -> Vec<LiveWindow> {
        let Some(now) = ts(now_ms) else {
            return Vec::new();
        };
        let mut windows: Vec<(String, Millis)> = self
            .prep
            .rolling
            .iter()
            .map(|(name, len)| (name.clone(), now_ms.saturating_sub(*len)))
            .collect();
        for (name, shift) in &self.prep.shifts {
            if let Some(start) = self.shift_start(shift, now) {
                windows.push((format!("shift_{name}"), start.as_millisecond()));
            }
        }
        windows
            .into_iter()
            .filter_map(|(name, from_ms)| {
                let from = ts(from_ms)?;
                (from < now).then(|| self.window(name, from, now))
            })
            .collect()
    }

    /// Start of the occurrence of `shift` that contains `now`, from the core calendar: one
    /// single-shift calendar per candidate start day (today, and the two days before for shifts
    /// running past midnight), each limited to that day's weekday so that back-to-back days of
    /// a 24-hour shift are not merged into one window.
    fn shift_start(&self, shift: &Shift, now: Timestamp) -> Option<Timestamp> {
        let zone = self.prep.zone.as_ref()?;
        let today = now.to_zoned(self.setup.time_zone.clone()).date();
        let (lo, hi) = (
            now.checked_sub(72.hours()).ok()?,
            now.checked_add(72.hours()).ok()?,
        );
        let mut best: Option<Timestamp> = None;
        for back in 0..3i64 {
            let Ok(day) = today.checked_sub(back.days()) else {
                continue;
            };
            let cal = Calendar {
                time_zone: zone.clone(),
                shifts: vec![shift.clone()],
                weekdays: Some(vec![weekday_key(day.weekday()).to_owned()]),
                holidays: Vec::new(),
            };
            for w in cal.shift_windows(lo, hi) {
                if w.start <= now && now < w.end && best.is_none_or(|b| w.start > b) {
                    best = Some(w.start);
                }
            }
        }
        best
    }

    fn window(&self, name: String, from: Timestamp, to: Timestamp) -> LiveWindow {
        let (setup, prep) = (&self.setup, &self.prep);
        let mut entities = Vec::with_capacity(1 + setup.equipment.len());
        let workshop = evidence_of(
            setup,
            prep,
            &self.devices,
            setup.workshop.clone(),
            (from, to),
            prep.equipment_order.clone(),
            (0..setup.meters.len()).collect(),
        );
        entities.push(run_engine(&workshop));
        // Equipment level: the same equipment and meter entries, one evidence each.
        for (k, &i) in prep.equipment_order.iter().enumerate() {
            if !prep.own_report[i] {
                continue;
            }
            let ev = Evidence {
                entity: setup.equipment[i].id.clone(),
                equipment: vec![workshop.equipment[k].clone()],
                meters: prep.meters_of[i]
                    .iter()
                    .map(|&j| workshop.meters[j].clone())
                    .collect(),
                ..empty_like(&workshop)
            };
            entities.push(run_engine(&ev));
        }
        LiveWindow {
            name,
            from_ms: from.as_millisecond(),
            to_ms: to.as_millisecond(),
            entities,
        }
    }
}

/// An evidence with `ev`'s header and no equipment or meters.
fn empty_like(ev: &Evidence) -> Evidence {
    Evidence {
        schema: ev.schema.clone(),
        entity: ev.entity.clone(),
        period: ev.period,
        calendar: ev.calendar.clone(),
        time_zone: ev.time_zone.clone(),
        coefficients: ev.coefficients.clone(),
        industry_mode: ev.industry_mode,
        industry: ev.industry.clone(),
        equipment: Vec::new(),
        meters: Vec::new(),
        inputs: ev.inputs.clone(),
        baseline: ev.baseline.clone(),
        entities: Vec::new(),
        signatures: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rd(t: Millis, v: f64) -> Reading {
        Reading { t, v }
    }

    #[test]
    fn series_window_is_the_base_reading_plus_the_readings_in_from_to() {
        let mut s = Series::default();
        for (t, v) in [(10, 1.0), (20, 2.0), (30, 3.0), (40, 4.0)] {
            assert!(s.push(rd(t, v)));
        }
        let at = |w: Vec<evidence::Reading>| -> Vec<i64> {
            w.iter().map(|r| r.at.as_millisecond()).collect()
        };
        // (20, 35]: base 20 (at the start), then 30.
        assert_eq!(at(s.window(20, 35)), vec![20, 30]);
        // (25, 40]: base 20, then 30, 40.
        assert_eq!(at(s.window(25, 40)), vec![20, 30, 40]);
        // Before every reading: no base, the first inside.
        assert_eq!(at(s.window(0, 15)), vec![10]);
        assert!(s.delivered(25, 30) && !s.delivered(30, 39) && !s.delivered(40, 50));
        // Same instant replaces, older is dropped.
        assert!(s.push(rd(40, 4.5)) && !s.push(rd(39, 9.0)));
        assert_eq!(s.readings.back().map(|r| r.v), Some(4.5));
        // Pruning keeps the base of a window starting at the cutoff.
        s.prune(35);
        assert_eq!(at(s.window(35, 40)), vec![30, 40]);
        assert_eq!(s.readings.len(), 2);
    }

    #[test]
    fn states_are_cut_at_overlaps_and_clipped_to_the_window() {
        let mut st = States::default();
        let sp = |from, to, state| StateSpan { from, to, state };
        st.push(sp(0, 10, State::Producing));
        st.push(sp(5, 20, State::Idle)); // overlaps: starts at 10
        st.push(sp(15, 18, State::Delay)); // inside the previous one: dropped
        st.open = Some(sp(18, 30, State::Setup)); // starts before the last closed end: at 20
        assert_eq!(
            st.window(5, 25),
            vec![
                sp(5, 10, State::Producing),
                sp(10, 20, State::Idle),
                sp(20, 25, State::Setup)
            ]
        );
        st.prune(20);
        assert!(st.closed.is_empty() && st.open.is_some());
    }

    #[test]
    fn window_names() {
        assert_eq!(window_name(3_600_000), "rolling_60m");
        assert_eq!(window_name(90_000), "rolling_90s");
        assert_eq!(window_name(1500), "rolling_1500ms");
        assert_eq!(hm(8 * 60 + 8 * 60), "16:00");
        assert_eq!(hm(20 * 60 + 12 * 60), "08:00");
    }
}
