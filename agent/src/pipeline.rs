//! From acquisition events to batch [`Contents`]: report by exception, states, counters,
//! meter readings, summaries and link changes, cut into windows.
//!
//! Invariants:
//! - every received reading is counted in its point's [`Summary`] (count, errors, first, last,
//!   min, max), reported or not, so a window stays computable after its raw samples are
//!   dropped;
//! - a reading is *reported* (kept as a raw sample) when it is the point's first, when the
//!   value moves beyond the point's absolute deadband from the last reported value (0: any
//!   change), when it turns from value to error or back or the error changes, or when the
//!   point has not been reported for `heartbeat` (maximum silence);
//! - state intervals come from [`StateTracker::drain_closed`]: final, contiguous, in order;
//!   counter and meter readings keep every change and the last reading of each window, which
//!   is all the engine's delta logic needs;
//! - tracker clocks use the agent's receive time (monotonic per device unless the system clock
//!   is set back: such events are counted as `out_of_order` and skipped by the trackers; the
//!   samples themselves are still reported); raw samples carry the device's source time where
//!   the protocol has one;
//! - on reconfiguration a changed or removed device's data so far goes out with the next cut,
//!   nothing buffered is lost.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use shopfloor_acquire::{Event, LinkState};
use shopfloor_core::batch::{
    Contents, CounterReadings, DeviceData, LinkChange, Millis, PointSamples, Reading, Sample,
    SampleValue, StateSpan, Summary,
};
use shopfloor_devices::Value;
use shopfloor_devices::signals::{CounterRules, CounterTracker, StateRules, StateTracker};
use shopfloor_devices::template::MeterRules;

/// What the pipeline needs to know about one device.
#[derive(Debug, Clone, PartialEq)]
pub struct DeviceSpec {
    /// Entity path.
    pub id: Arc<str>,
    /// Template id.
    pub template: String,
    /// Absolute deadband per point (points not listed: 0, every change is reported).
    pub deadbands: BTreeMap<String, f64>,
    pub states: Option<StateRules>,
    pub counters: Option<CounterRules>,
    /// Meter accounting register and its carrier.
    pub meter: Option<(MeterRules, String)>,
}

/// Reporting settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PipelineConfig {
    /// Maximum silence of a point: reported at least this often while it delivers readings.
    pub heartbeat: Duration,
    /// Raw samples after which a window should be cut early.
    pub max_samples: usize,
}

/// Running totals, for metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PipelineStats {
    pub readings: u64,
    pub reported: u64,
    pub read_errors: u64,
    /// Events older than the tracker's clock (system clock set back), skipped by trackers.
    pub out_of_order: u64,
    /// Values the state or counter rules could not use (recorded as offline / skipped).
    pub invalid_signals: u64,
    /// Events for devices the pipeline does not know (a reload in flight).
    pub unknown_device: u64,
}

pub fn millis(t: Timestamp) -> Millis {
    t.as_millisecond()
}

fn sample_value(v: &Value) -> Result<SampleValue, String> {
    Ok(match v {
        Value::Bool(b) => SampleValue::Bool(*b),
        Value::Int(i) => SampleValue::Int(*i),
        Value::UInt(u) => SampleValue::UInt(*u),
        Value::Float(f) if f.is_finite() => SampleValue::Float(*f),
        Value::Float(_) => return Err("not a finite number (not available)".into()),
        Value::Text(s) => SampleValue::Text(s.clone()),
    })
}

fn numeric(v: &SampleValue) -> Option<f64> {
    match v {
        SampleValue::Bool(b) => Some(if *b { 1.0 } else { 0.0 }),
        SampleValue::Int(i) => Some(*i as f64),
        SampleValue::UInt(u) => Some(*u as f64),
        SampleValue::Float(f) => Some(*f),
        SampleValue::Text(_) => None,
    }
}

#[derive(Debug, Clone, Default)]
struct SummaryAcc {
    count: u64,
    errors: u64,
    first: Option<Reading>,
    last: Option<Reading>,
    min: Option<f64>,
    max: Option<f64>,
}

impl SummaryAcc {
    fn add(&mut self, t: Millis, v: Option<f64>) {
        self.count += 1;
        let Some(v) = v else {
            self.errors += 1;
            return;
        };
        let r = Reading { t, v };
        self.first.get_or_insert(r);
        self.last = Some(r);
        self.min = Some(self.min.map_or(v, |m| m.min(v)));
        self.max = Some(self.max.map_or(v, |m| m.max(v)));
    }
}

#[derive(Debug, Clone, Default)]
struct PointAcc {
    /// Last reported value (or error) and its time.
    last: Option<(Result<SampleValue, String>, Millis)>,
    samples: Vec<Sample>,
    summary: SummaryAcc,
}

/// Thinned readings of one cumulative register in the current window.
#[derive(Debug, Clone, Default)]
struct Thinned {
    kept: Vec<Reading>,
    /// The latest reading when it repeats the last kept value (kept at the cut).
    tail: Option<Reading>,
}

impl Thinned {
    fn add(&mut self, r: Reading) {
        match self.kept.last() {
            Some(k) if k.v.to_bits() == r.v.to_bits() => self.tail = Some(r),
            _ => {
                self.kept.push(r);
                self.tail = None;
            }
        }
    }

    fn take(&mut self) -> Vec<Reading> {
        let mut out = std::mem::take(&mut self.kept);
        if let Some(t) = self.tail.take() {
            out.push(t);
        }
        out
    }
}

#[derive(Debug, Clone)]
struct DeviceAcc {
    spec: DeviceSpec,
    points: BTreeMap<Arc<str>, PointAcc>,
    states: Option<StateTracker>,
    counters: Option<CounterTracker>,
    meter: Thinned,
    spans: Vec<StateSpan>,
    links: Vec<LinkChange>,
}

impl DeviceAcc {
    fn new(spec: DeviceSpec) -> Result<DeviceAcc, String> {
        let states = match &spec.states {
            Some(r) => Some(
                StateTracker::new(r.clone()).map_err(|e| format!("{}: states: {e}", spec.id))?,
            ),
            None => None,
        };
        let counters = match &spec.counters {
            Some(r) => Some(
                CounterTracker::new(r.clone())
                    .map_err(|e| format!("{}: counters: {e}", spec.id))?,
            ),
            None => None,
        };
        Ok(DeviceAcc {
            spec,
            points: BTreeMap::new(),
            states,
            counters,
            meter: Thinned::default(),
            spans: Vec::new(),
            links: Vec::new(),
        })
    }

    fn drain_spans(&mut self) {
        if let Some(tr) = &mut self.states {
            self.spans
                .extend(tr.drain_closed().into_iter().map(|i| StateSpan {
                    from: millis(i.from),
                    to: millis(i.to),
                    state: i.state,
                }));
        }
    }

    /// Everything accumulated since the last cut, or `None` when there is nothing.
    fn cut(&mut self) -> Option<DeviceData> {
        self.drain_spans();
        let mut samples = Vec::new();
        let mut summaries = Vec::new();
        for (name, p) in &mut self.points {
            if !p.samples.is_empty() {
                samples.push(PointSamples {
                    point: name.to_string(),
                    samples: std::mem::take(&mut p.samples),
                });
            }
            let s = std::mem::take(&mut p.summary);
            if s.count > 0 {
                summaries.push(Summary {
                    point: name.to_string(),
                    count: s.count,
                    errors: s.errors,
                    first: s.first,
                    last: s.last,
                    min: s.min,
                    max: s.max,
                });
            }
        }
        let mut counters = Vec::new();
        if let Some(tr) = &mut self.counters {
            let drained = tr.drain();
            for (role, c) in [
                ("produced", drained.produced),
                ("good", drained.good),
                ("scrap", drained.scrap),
            ] {
                let Some(c) = c else { continue };
                let point = tr
                    .rules()
                    .roles()
                    .into_iter()
                    .find(|(r, _)| r.name() == role)
                    .map_or_else(|| format!("derived:{role}"), |(_, p)| p.to_string());
                let mut thin = Thinned::default();
                for r in &c.readings {
                    thin.add(Reading {
                        t: millis(r.at),
                        v: r.value,
                    });
                }
                let readings = thin.take();
                if !readings.is_empty() {
                    counters.push(CounterReadings {
                        role: role.to_string(),
                        point,
                        width_bits: c.width_bits,
                        rollover: None,
                        readings,
                    });
                }
            }
        }
        if let Some((m, carrier)) = &self.spec.meter {
            let readings = self.meter.take();
            if !readings.is_empty() {
                counters.push(CounterReadings {
                    role: carrier.clone(),
                    point: m.point.clone(),
                    width_bits: None,
                    rollover: m.rollover,
                    readings,
                });
            }
        }
        let states = std::mem::take(&mut self.spans);
        let links = std::mem::take(&mut self.links);
        if samples.is_empty()
            && summaries.is_empty()
            && states.is_empty()
            && counters.is_empty()
            && links.is_empty()
        {
            return None;
        }
        Some(DeviceData {
            id: self.spec.id.to_string(),
            template: self.spec.template.clone(),
            samples,
            summaries,
            states,
            counters,
            links,
            dropped: None,
        })
    }
}

/// Appends `b` to `a` (same device, `b` later).
fn merge(a: &mut DeviceData, b: DeviceData) {
    for ps in b.samples {
        match a.samples.iter_mut().find(|x| x.point == ps.point) {
            Some(x) => x.samples.extend(ps.samples),
            None => a.samples.push(ps),
        }
    }
    a.samples.sort_by(|x, y| x.point.cmp(&y.point));
    for s in b.summaries {
        match a.summaries.iter_mut().find(|x| x.point == s.point) {
            Some(x) => {
                x.count += s.count;
                x.errors += s.errors;
                x.first = x.first.or(s.first);
                x.last = s.last.or(x.last);
                x.min = match (x.min, s.min) {
                    (Some(p), Some(q)) => Some(p.min(q)),
                    (p, q) => p.or(q),
                };
                x.max = match (x.max, s.max) {
                    (Some(p), Some(q)) => Some(p.max(q)),
                    (p, q) => p.or(q),
                };
            }
            None => a.summaries.push(s),
        }
    }
    a.summaries.sort_by(|x, y| x.point.cmp(&y.point));
    a.states.extend(b.states);
    for c in b.counters {
        match a
            .counters
            .iter_mut()
            .find(|x| x.role == c.role && x.point == c.point)
        {
            Some(x) => x.readings.extend(c.readings),
            None => a.counters.push(c),
        }
    }
    a.links.extend(b.links);
}

/// The agent's data path between the drivers and the outbox.
#[derive(Debug)]
pub struct Pipeline {
    cfg: PipelineConfig,
    devices: BTreeMap<Arc<str>, DeviceAcc>,
    /// Devices removed or changed by a reload, flushed with the next cut.
    retired: Vec<DeviceAcc>,
    window_from: Millis,
    pending_samples: usize,
    stats: PipelineStats,
}

impl Pipeline {
    /// A pipeline whose first window starts at `now`. Errors name the device.
    pub fn new(
        cfg: PipelineConfig,
        specs: Vec<DeviceSpec>,
        now: Timestamp,
    ) -> Result<Pipeline, String> {
        let mut devices = BTreeMap::new();
        for s in specs {
            let id = s.id.clone();
            if devices.insert(id.clone(), DeviceAcc::new(s)?).is_some() {
                return Err(format!("{id}: two devices with this id"));
            }
        }
        Ok(Pipeline {
            cfg,
            devices,
            retired: Vec::new(),
            window_from: millis(now),
            pending_samples: 0,
            stats: PipelineStats::default(),
        })
    }

    /// Applies a new device list: unchanged devices keep everything (report-by-exception
    /// memory, trackers, open state); changed and removed ones hand their data so far to the
    /// next cut and (if still configured) start afresh.
    pub fn reconfigure(
        &mut self,
        cfg: PipelineConfig,
        specs: Vec<DeviceSpec>,
    ) -> Result<(), String> {
        let mut next = BTreeMap::new();
        for s in specs {
            let id = s.id.clone();
            let acc = match self.devices.remove(&id) {
                Some(old) if old.spec == s => old,
                Some(old) => {
                    self.retired.push(old);
                    DeviceAcc::new(s)?
                }
                None => DeviceAcc::new(s)?,
            };
            if next.insert(id.clone(), acc).is_some() {
                return Err(format!("{id}: two devices with this id"));
            }
        }
        self.retired
            .extend(std::mem::take(&mut self.devices).into_values());
        self.devices = next;
        self.cfg = cfg;
        Ok(())
    }

    pub fn stats(&self) -> PipelineStats {
        self.stats
    }

    /// Raw samples waiting for the next cut.
    pub fn pending_samples(&self) -> usize {
        self.pending_samples
    }

    /// True when the window holds `max_samples` raw samples and should be cut now.
    pub fn full(&self) -> bool {
        self.pending_samples >= self.cfg.max_samples
    }

    /// Takes one driver event. `now` is the agent's clock for link events.
    pub fn handle(&mut self, ev: &Event, now: Timestamp) {
        match ev {
            Event::Sample(s) => {
                let Some(dev) = self.devices.get_mut(&s.device) else {
                    self.stats.unknown_device += 1;
                    return;
                };
                self.stats.readings += 1;
                let t_src = millis(s.source_time.unwrap_or(s.received));
                let value = match &s.value {
                    Ok(v) => sample_value(v),
                    Err(e) => Err(e.clone()),
                };
                if value.is_err() {
                    self.stats.read_errors += 1;
                }
                let deadband = dev.spec.deadbands.get(&*s.point).copied().unwrap_or(0.0);
                let p = dev.points.entry(s.point.clone()).or_default();
                p.summary.add(t_src, value.as_ref().ok().and_then(numeric));
                let report = match &p.last {
                    None => true,
                    Some((last, at)) => {
                        let silent = t_src < *at
                            || Duration::from_millis((t_src - *at).unsigned_abs())
                                >= self.cfg.heartbeat;
                        silent
                            || match (last, &value) {
                                (Ok(a), Ok(b)) => match (numeric(a), numeric(b)) {
                                    (Some(x), Some(y))
                                        if !matches!(a, SampleValue::Text(_))
                                            && !matches!(b, SampleValue::Text(_)) =>
                                    {
                                        if deadband > 0.0 {
                                            (y - x).abs() > deadband
                                        } else {
                                            x.to_bits() != y.to_bits() || a != b
                                        }
                                    }
                                    _ => a != b,
                                },
                                (Err(a), Err(b)) => a != b,
                                _ => true,
                            }
                    }
                };
                if report {
                    self.stats.reported += 1;
                    self.pending_samples += 1;
                    p.samples.push(match &value {
                        Ok(v) => Sample {
                            t: t_src,
                            v: Some(v.clone()),
                            err: None,
                        },
                        Err(e) => Sample {
                            t: t_src,
                            v: None,
                            err: Some(e.clone()),
                        },
                    });
                    p.last = Some((value.clone(), t_src));
                }
                // Trackers run on the receive clock.
                let Ok(v) = &s.value else { return };
                if let Some(tr) = &mut dev.states {
                    match tr.update(s.received, &s.point, v) {
                        Ok(()) => {}
                        Err(shopfloor_devices::signals::SignalError::OutOfOrder { .. }) => {
                            self.stats.out_of_order += 1
                        }
                        Err(_) => self.stats.invalid_signals += 1,
                    }
                }
                if let Some(tr) = &mut dev.counters {
                    match tr.update(s.received, &s.point, v) {
                        Ok(()) => {}
                        Err(shopfloor_devices::signals::SignalError::OutOfOrder { .. }) => {
                            self.stats.out_of_order += 1
                        }
                        Err(_) => self.stats.invalid_signals += 1,
                    }
                }
                if let Some((m, _)) = &dev.spec.meter
                    && *s.point == *m.point
                {
                    match v.as_f64().filter(|x| x.is_finite() && *x >= 0.0) {
                        Some(x) => dev.meter.add(Reading {
                            t: millis(s.received),
                            v: x,
                        }),
                        None => self.stats.invalid_signals += 1,
                    }
                }
            }
            Event::Link {
                device,
                state,
                detail,
            } => {
                let Some(dev) = self.devices.get_mut(device) else {
                    self.stats.unknown_device += 1;
                    return;
                };
                let up = *state == LinkState::Up;
                dev.links.push(LinkChange {
                    t: millis(now),
                    up,
                    detail: detail.clone(),
                });
                if let Some(tr) = &mut dev.states {
                    let r = if up {
                        tr.link_up(now)
                    } else {
                        tr.link_down(now)
                    };
                    if r.is_err() {
                        self.stats.out_of_order += 1;
                    }
                }
            }
            Event::Request { .. } => {}
        }
    }

    /// The current (still open) state interval of each device with state rules, up to its
    /// last event: for live indicators.
    pub fn open_states(&self) -> Vec<(Arc<str>, Option<StateSpan>)> {
        self.devices
            .iter()
            .filter_map(|(id, d)| {
                let tr = d.states.as_ref()?;
                Some((
                    id.clone(),
                    tr.current().map(|i| StateSpan {
                        from: millis(i.from),
                        to: millis(i.to),
                        state: i.state,
                    }),
                ))
            })
            .collect()
    }

    /// Cuts the window `(previous cut, now]`: every device's data so far, devices in id order.
    /// `None` when no device has anything (the window still moves on).
    pub fn cut(&mut self, now: Timestamp) -> Option<Contents> {
        let to = millis(now).max(self.window_from);
        let mut out: BTreeMap<String, DeviceData> = BTreeMap::new();
        for mut acc in std::mem::take(&mut self.retired) {
            if let Some(d) = acc.cut() {
                match out.get_mut(&d.id) {
                    Some(x) => merge(x, d),
                    None => {
                        out.insert(d.id.clone(), d);
                    }
                }
            }
        }
        for acc in self.devices.values_mut() {
            if let Some(d) = acc.cut() {
                match out.get_mut(&d.id) {
                    Some(x) => merge(x, d),
                    None => {
                        out.insert(d.id.clone(), d);
                    }
                }
            }
        }
        let from = self.window_from;
        self.window_from = to;
        self.pending_samples = 0;
        if out.is_empty() {
            return None;
        }
        Some(Contents {
            from,
            to,
            devices: out.into_values().collect(),
        })
    }
}
