//! From acquisition events to batch [`Contents`]: report by exception, states, counters,
//! meter readings, summaries and link changes, cut into windows.
//!
//! Invariants:
//! - every received reading is counted in its point's [`Summary`] (count, errors, first, last,
//!   min, max), reported or not, so a window stays computable after its raw samples are
//!   dropped; a summary the samples imply exactly (every reading reported) is left out of the
//!   batch and restored before samples are dropped ([`DeviceData::omit_implied_summaries`]);
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

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use shopfloor_acquire::{Event, LinkState};
use shopfloor_core::batch::{
    Contents, CounterReadings, DeviceData, LinkChange, Millis, PointSamples, Reading, Sample,
    SampleValue, StateSpan, Tally,
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

impl PipelineStats {
    /// Counts what a state or counter tracker refused: an event older than its clock, or a
    /// value its rules cannot use.
    fn count_tracker(&mut self, r: Result<(), shopfloor_devices::signals::SignalError>) {
        match r {
            Ok(()) => {}
            Err(shopfloor_devices::signals::SignalError::OutOfOrder { .. }) => {
                self.out_of_order += 1
            }
            Err(_) => self.invalid_signals += 1,
        }
    }
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
    v.as_f64()
}

#[derive(Debug, Clone)]
struct PointAcc {
    /// The point's absolute deadband (0: every change is reported).
    deadband: f64,
    /// Last reported value (or error) and its time.
    last: Option<(Result<SampleValue, String>, Millis)>,
    samples: Vec<Sample>,
    /// Every reading of the window (named at the cut).
    tally: Tally,
}

impl PointAcc {
    fn new(deadband: f64) -> PointAcc {
        PointAcc {
            deadband,
            last: None,
            samples: Vec::new(),
            tally: Tally::default(),
        }
    }
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
    /// Keyed by name; hashed, as a search tree compared names several times per reading
    /// (the pipeline's largest cost at 100,000 tags/s); sorted at the cut.
    points: HashMap<Arc<str>, PointAcc>,
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
            points: HashMap::new(),
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
        let with_samples = self
            .points
            .values()
            .filter(|p| !p.samples.is_empty())
            .count();
        let mut samples = Vec::with_capacity(with_samples);
        let mut summaries = Vec::with_capacity(self.points.len());
        let mut points: Vec<(&Arc<str>, &mut PointAcc)> = self.points.iter_mut().collect();
        points.sort_unstable_by(|a, b| a.0.cmp(b.0));
        for (name, p) in points {
            if !p.samples.is_empty() {
                samples.push(PointSamples {
                    point: name.to_string(),
                    samples: std::mem::take(&mut p.samples),
                });
            }
            if p.tally.count() > 0 {
                summaries.push(p.tally.summary(name.to_string()));
                p.tally = Tally::default();
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

/// One reading of a known device: summary, report by exception, trackers.
fn handle_sample(
    dev: &mut DeviceAcc,
    s: &shopfloor_acquire::Sample,
    cfg: &PipelineConfig,
    stats: &mut PipelineStats,
    pending: &mut usize,
) {
    stats.readings += 1;
    let t_src = millis(s.source_time.unwrap_or(s.received));
    let value = match &s.value {
        Ok(v) => sample_value(v),
        Err(e) => Err(e.clone()),
    };
    if value.is_err() {
        stats.read_errors += 1;
    }
    // The point's accumulator, created (with its deadband) at its first reading; found
    // without cloning the name afterwards.
    if !dev.points.contains_key(&*s.point) {
        let deadband = dev.spec.deadbands.get(&*s.point).copied().unwrap_or(0.0);
        dev.points.insert(s.point.clone(), PointAcc::new(deadband));
    }
    let Some(p) = dev.points.get_mut(&*s.point) else {
        return;
    };
    let deadband = p.deadband;
    p.tally.record(t_src, value.as_ref().ok());
    let report = match &p.last {
        None => true,
        Some((last, at)) => {
            let silent =
                t_src < *at || Duration::from_millis((t_src - *at).unsigned_abs()) >= cfg.heartbeat;
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
        stats.reported += 1;
        *pending += 1;
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
        stats.count_tracker(tr.update(s.received, &s.point, v));
    }
    if let Some(tr) = &mut dev.counters {
        stats.count_tracker(tr.update(s.received, &s.point, v));
    }
    if let Some((m, _)) = &dev.spec.meter
        && *s.point == *m.point
    {
        match v.as_f64().filter(|x| x.is_finite() && *x >= 0.0) {
            Some(x) => dev.meter.add(Reading {
                t: millis(s.received),
                v: x,
            }),
            None => stats.invalid_signals += 1,
        }
    }
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
            Event::Sample(_) | Event::Samples(_) => {
                // A Samples event is one device's: look it up once, again only if the
                // device changes within the event.
                let mut dev: Option<&mut DeviceAcc> = None;
                for s in ev.samples() {
                    if dev.as_ref().is_none_or(|d| d.spec.id != s.device) {
                        dev = self.devices.get_mut(&s.device);
                    }
                    let Some(d) = dev.as_deref_mut() else {
                        self.stats.unknown_device += 1;
                        continue;
                    };
                    handle_sample(d, s, &self.cfg, &mut self.stats, &mut self.pending_samples);
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
    /// `None` when no device has anything; the window then stays open until the next cut.
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
        self.pending_samples = 0;
        if out.is_empty() {
            // Nothing to seal: the window stays open, so the next batch's window starts where
            // the last batch's ended and an agent's windows tile time (PROTOCOL.md).
            return None;
        }
        let from = self.window_from;
        self.window_from = to;
        for d in out.values_mut() {
            d.omit_implied_summaries();
        }
        Some(Contents {
            from,
            to,
            devices: out.into_values().collect(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shopfloor_acquire::Sample as Reading0;

    const T0: i64 = 1_790_000_000_000;

    fn at(ms: i64) -> Timestamp {
        Timestamp::from_millisecond(T0 + ms).unwrap()
    }

    fn spec(id: &str, deadbands: &[(&str, f64)]) -> DeviceSpec {
        DeviceSpec {
            id: Arc::from(id),
            template: "t".to_owned(),
            deadbands: deadbands.iter().map(|(p, d)| (p.to_string(), *d)).collect(),
            states: None,
            counters: None,
            meter: None,
        }
    }

    fn pipeline(specs: Vec<DeviceSpec>) -> Pipeline {
        Pipeline::new(
            PipelineConfig {
                heartbeat: Duration::from_secs(10),
                max_samples: 1000,
            },
            specs,
            at(0),
        )
        .unwrap()
    }

    fn reading(device: &str, point: &str, ms: i64, value: Result<Value, &str>) -> Reading0 {
        Reading0 {
            device: Arc::from(device),
            point: Arc::from(point),
            source_time: None,
            received: at(ms),
            value: value.map_err(str::to_owned),
        }
    }

    fn device<'a>(c: &'a Contents, id: &str) -> &'a DeviceData {
        c.devices.iter().find(|d| d.id == id).unwrap()
    }

    fn reported(d: &DeviceData, point: &str) -> Vec<(i64, Option<SampleValue>)> {
        d.samples
            .iter()
            .find(|p| p.point == point)
            .map(|p| p.samples.iter().map(|s| (s.t - T0, s.v.clone())).collect())
            .unwrap_or_default()
    }

    /// Report by exception with deadbands and heartbeat; every reading in the summary; a
    /// summary the samples imply is left out; one event may carry several devices' readings.
    #[test]
    fn reports_by_exception_and_summarises_every_reading() {
        let mut p = pipeline(vec![spec("a", &[("slow", 1.0)]), spec("b", &[])]);
        let mut batch = Vec::new();
        for (k, v) in [10.0, 10.5, 11.5, 11.6, 11.6].into_iter().enumerate() {
            let ms = 1000 * k as i64;
            batch.push(reading("a", "slow", ms, Ok(Value::Float(v))));
            batch.push(reading("a", "fast", ms, Ok(Value::Float(v))));
        }
        batch.push(reading("b", "x", 0, Ok(Value::Int(1))));
        batch.push(reading("b", "x", 1000, Err("timeout")));
        batch.push(reading("b", "x", 2000, Err("timeout")));
        batch.push(reading("b", "x", 3000, Ok(Value::Text("O1234".into()))));
        batch.push(reading("nobody", "x", 0, Ok(Value::Int(1))));
        p.handle(&Event::Samples(batch), at(5000));
        // Heartbeat: unchanged for 10 s, reported again.
        p.handle(
            &Event::Sample(reading("a", "slow", 14_000, Ok(Value::Float(11.6)))),
            at(14_000),
        );
        let st = p.stats();
        assert_eq!((st.readings, st.read_errors, st.unknown_device), (15, 2, 1));
        let c = p.cut(at(15_000)).unwrap();
        assert_eq!((c.from, c.to), (T0, T0 + 15_000));
        let a = device(&c, "a");
        let f = |v| Some(SampleValue::Float(v));
        assert_eq!(
            reported(a, "slow"),
            vec![(0, f(10.0)), (2000, f(11.5)), (14_000, f(11.6))]
        );
        assert_eq!(
            reported(a, "fast"),
            vec![
                (0, f(10.0)),
                (1000, f(10.5)),
                (2000, f(11.5)),
                (3000, f(11.6))
            ]
        );
        // "slow" and "fast" had unreported readings: both summaries stay, over all readings.
        let names: Vec<&str> = a.summaries.iter().map(|s| s.point.as_str()).collect();
        assert_eq!(names, ["fast", "slow"]);
        let slow = &a.summaries[1];
        assert_eq!((slow.count, slow.errors), (6, 0));
        assert_eq!((slow.min, slow.max), (Some(10.0), Some(11.6)));
        assert_eq!(slow.last.map(|r| r.t - T0), Some(14_000));
        // Every reading of b/x was reported (the second timeout repeats the first error and
        // is not): the summary stays; text is not an error.
        let b = device(&c, "b");
        assert_eq!(
            reported(b, "x"),
            vec![
                (0, Some(SampleValue::Int(1))),
                (1000, None),
                (3000, Some(SampleValue::Text("O1234".into())))
            ]
        );
        assert_eq!((b.summaries[0].count, b.summaries[0].errors), (4, 2));

        // Next window: every reading reported, so the summary is implied and left out.
        p.handle(
            &Event::Samples(vec![
                reading("b", "x", 16_000, Ok(Value::Int(2))),
                reading("b", "x", 17_000, Ok(Value::Int(3))),
            ]),
            at(17_000),
        );
        let c = p.cut(at(20_000)).unwrap();
        let b = device(&c, "b");
        assert_eq!(reported(b, "x").len(), 2);
        assert!(b.summaries.is_empty(), "{:?}", b.summaries);
        let mut stripped = c.clone();
        stripped.strip_samples();
        let s = &device(&stripped, "b").summaries[0];
        assert_eq!((s.count, s.min, s.max), (2, Some(2.0), Some(3.0)));
        assert!(p.cut(at(25_000)).is_none());
    }

    /// A cut with nothing to seal keeps the window open: consecutive batches tile time even
    /// when an early cut (window full) took everything just before the timer's cut.
    #[test]
    fn windows_tile_time_across_empty_cuts() {
        let mut p = pipeline(vec![spec("a", &[])]);
        p.handle(
            &Event::Sample(reading("a", "x", 1000, Ok(Value::Int(1)))),
            at(1000),
        );
        let first = p.cut(at(2000)).unwrap();
        assert_eq!((first.from, first.to), (T0, T0 + 2000));
        assert!(p.cut(at(3000)).is_none());
        assert!(p.cut(at(4000)).is_none());
        p.handle(
            &Event::Sample(reading("a", "x", 4500, Ok(Value::Int(2)))),
            at(4500),
        );
        let next = p.cut(at(5000)).unwrap();
        assert_eq!((next.from, next.to), (first.to, T0 + 5000));
    }
}
