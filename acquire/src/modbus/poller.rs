//! The bus poller: one task per link (a serial line, or a TCP endpoint with one or more unit
//! ids behind it) that polls its devices on their own intervals.
//!
//! Invariants:
//! - requests on one link are strictly serialised, spaced by the inter-frame pause;
//! - each device keeps an absolute schedule (`due += poll`), so a cycle delayed by another
//!   device's timeout is caught up, not lost; a device more than one period behind skips the
//!   missed cycles instead of bursting;
//! - a device that times out or breaks the link ends its cycle at once (one timeout per cycle,
//!   never one per request) and is then only probed, with one request, on an exponential
//!   backoff: a dead unit id costs the others at most one timeout per backoff period;
//! - a device that answers exceptions is alive: only the affected points report errors;
//! - an exception 02 on a coalesced request teaches the planner a split (see
//!   `shopfloor_devices::plan`), and the device is re-planned before its next cycle.

use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use shopfloor_devices::codec::{self, decode_registers};
use shopfloor_devices::plan::{self, Learned, Learning, ReadRequest};
use shopfloor_devices::template::ModbusDevice;

use super::link::{Data, ExceptionKind, Link, ReadError, Transport};
use crate::backoff::Backoff;
use crate::sample::{Event, LinkState, Outcome, Sample};

/// Settings of one link.
#[derive(Debug, Clone)]
pub struct BusConfig {
    /// Name used in logs (`line-1`, `gw-10.0.0.5`).
    pub name: Arc<str>,
    pub transport: Transport,
    /// Reply timeout of one request.
    pub timeout: Duration,
    pub connect_timeout: Duration,
    /// Pause between the end of one exchange and the next request.
    pub inter_frame: Duration,
    pub backoff_initial: Duration,
    pub backoff_max: Duration,
}

impl BusConfig {
    /// Defaults: 1 s reply timeout, 3 s connect timeout, no extra pause on TCP (the RTU
    /// minimum applies on serial lines), backoff 0.5 s → 30 s.
    pub fn new(name: impl Into<Arc<str>>, transport: Transport) -> Self {
        BusConfig {
            name: name.into(),
            transport,
            timeout: Duration::from_secs(1),
            connect_timeout: Duration::from_secs(3),
            inter_frame: Duration::ZERO,
            backoff_initial: Duration::from_millis(500),
            backoff_max: Duration::from_secs(30),
        }
    }
}

/// One device on a link.
#[derive(Debug, Clone)]
pub struct DeviceConfig {
    /// Device id (entity path).
    pub id: Arc<str>,
    /// Modbus unit id (slave address).
    pub unit: u8,
    pub poll: Duration,
    /// Shared: devices of one template usually resolve to the same points.
    pub device: Arc<ModbusDevice>,
}

struct DevState {
    cfg: DeviceConfig,
    points: Vec<Arc<str>>,
    learned: Learned,
    plan: Vec<ReadRequest>,
    due: Instant,
    /// Set while the device is failing: probe at this time with one request.
    probe_at: Option<Instant>,
    backoff: Backoff,
    up: Option<bool>,
}

impl DevState {
    fn next_time(&self) -> Instant {
        self.probe_at.unwrap_or(self.due)
    }

    fn replan(&mut self) {
        self.plan = plan::plan(
            &self.cfg.device.points,
            &self.cfg.device.limits,
            &self.learned,
        );
    }
}

enum CycleEnd {
    /// At least one request was answered (data or exception).
    Alive,
    /// The device did not answer or broke the link.
    Failed(String),
}

/// Polls every device of one link until `shutdown` becomes true.
pub async fn run_bus(
    bus: BusConfig,
    devices: Vec<DeviceConfig>,
    tx: mpsc::Sender<Event>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut link = Link::new(
        bus.transport.clone(),
        bus.timeout,
        bus.connect_timeout,
        bus.inter_frame,
    );
    let start = Instant::now();
    let mut devs: Vec<DevState> = devices
        .into_iter()
        .map(|cfg| {
            let points = cfg
                .device
                .points
                .iter()
                .map(|p| Arc::<str>::from(p.name.as_str()))
                .collect();
            let mut d = DevState {
                points,
                learned: Learned::default(),
                plan: Vec::new(),
                due: start,
                probe_at: None,
                backoff: Backoff::new(bus.backoff_initial, bus.backoff_max),
                up: None,
                cfg,
            };
            d.replan();
            d
        })
        .collect();
    if devs.is_empty() {
        return;
    }
    let mut link_backoff = Backoff::new(bus.backoff_initial, bus.backoff_max);
    loop {
        if *shutdown.borrow() {
            return;
        }
        // The device whose turn comes first.
        let Some(k) = (0..devs.len()).min_by_key(|&i| devs[i].next_time()) else {
            return;
        };
        let at = devs[k].next_time();
        tokio::select! {
            _ = tokio::time::sleep_until(at) => {}
            _ = shutdown.changed() => continue,
        }
        // A link that cannot be opened is down for every device on it.
        if let Err(e) = link.connect().await {
            let detail = e.to_string();
            tracing::warn!(bus = %bus.name, error = %detail, "modbus link down");
            for d in &mut devs {
                if d.up != Some(false) {
                    d.up = Some(false);
                    send(
                        &tx,
                        Event::Link {
                            device: d.cfg.id.clone(),
                            state: LinkState::Down,
                            detail: detail.clone(),
                        },
                    )
                    .await;
                }
            }
            let wait = link_backoff.next_delay();
            let resume = Instant::now() + wait;
            tokio::select! {
                _ = tokio::time::sleep_until(resume) => {}
                _ = shutdown.changed() => {}
            }
            for d in &mut devs {
                catch_up(d, resume);
            }
            continue;
        }
        link_backoff.reset();
        let d = &mut devs[k];
        let probing = d.probe_at.is_some();
        let end = poll_device(&mut link, d, probing, &tx).await;
        let now = Instant::now();
        match end {
            CycleEnd::Alive => {
                d.backoff.reset();
                if d.probe_at.take().is_some() {
                    // Back from a failure: poll fully right away, then on the schedule.
                    d.due = now;
                } else {
                    d.due += d.cfg.poll;
                }
                if d.up != Some(true) {
                    d.up = Some(true);
                    send(
                        &tx,
                        Event::Link {
                            device: d.cfg.id.clone(),
                            state: LinkState::Up,
                            detail: bus.transport.to_string(),
                        },
                    )
                    .await;
                }
            }
            CycleEnd::Failed(detail) => {
                d.probe_at = Some(now + d.backoff.next_delay());
                if d.up != Some(false) {
                    d.up = Some(false);
                    tracing::warn!(device = %d.cfg.id, error = %detail, "modbus device not answering");
                    send(
                        &tx,
                        Event::Link {
                            device: d.cfg.id.clone(),
                            state: LinkState::Down,
                            detail,
                        },
                    )
                    .await;
                }
            }
        }
        catch_up(d, now);
    }
}

/// Skips cycles more than one period in the past instead of bursting to catch up.
fn catch_up(d: &mut DevState, now: Instant) {
    if d.due + d.cfg.poll < now {
        let behind = now.duration_since(d.due).as_nanos() / d.cfg.poll.as_nanos().max(1);
        d.due += d.cfg.poll * u32::try_from(behind).unwrap_or(u32::MAX);
    }
}

async fn poll_device(
    link: &mut Link,
    d: &mut DevState,
    probe_only: bool,
    tx: &mpsc::Sender<Event>,
) -> CycleEnd {
    let mut alive = false;
    let mut replan = false;
    let plan = std::mem::take(&mut d.plan);
    for req in &plan {
        let t0 = Instant::now();
        let result = link.read(d.cfg.unit, req.table, req.start, req.count).await;
        let rtt = t0.elapsed();
        let received = shopfloor_clock::now();
        let outcome = match &result {
            Ok(_) => Outcome::Ok,
            Err(ReadError::Exception(_)) => Outcome::Exception,
            Err(ReadError::Timeout(_)) => Outcome::Timeout,
            Err(_) => Outcome::LinkError,
        };
        if !matches!(result, Err(ReadError::Connect(_))) {
            send(
                tx,
                Event::Request {
                    device: d.cfg.id.clone(),
                    rtt,
                    outcome,
                },
            )
            .await;
        }
        match result {
            Ok(data) => {
                alive = true;
                let samples = req
                    .points
                    .iter()
                    .map(|&i| sample(d, i, received, decode_point(d, req, i, &data)))
                    .collect();
                send(tx, Event::Samples(samples)).await;
            }
            Err(ReadError::Exception(ExceptionKind::IllegalAddress)) => {
                alive = true;
                match d.learned.on_illegal_address(req, &d.cfg.device.points) {
                    Learning::SplitAt(table, at) => {
                        tracing::info!(device = %d.cfg.id, %table, start = req.start, count = req.count, split_at = at,
                            "illegal data address in a coalesced read: splitting it from now on");
                    }
                    Learning::Unreadable(table, at) => {
                        tracing::warn!(device = %d.cfg.id, %table, address = at, "point answers illegal data address: not read again");
                        let reason = format!(
                            "illegal data address {table} {at}: the device has no such register; not read again"
                        );
                        send(tx, failed(d, req, received, &reason)).await;
                    }
                }
                replan = true;
            }
            Err(ReadError::Exception(e)) => {
                alive = true;
                let reason = format!("device exception {e}");
                send(tx, failed(d, req, received, &reason)).await;
            }
            Err(e) => {
                d.plan = plan;
                if replan {
                    d.replan();
                }
                return CycleEnd::Failed(e.to_string());
            }
        }
        if probe_only {
            break;
        }
    }
    d.plan = plan;
    if replan {
        d.replan();
    }
    if alive || d.plan.is_empty() {
        CycleEnd::Alive
    } else {
        CycleEnd::Failed("no request answered".into())
    }
}

fn decode_point(
    d: &DevState,
    req: &ReadRequest,
    i: usize,
    data: &Data,
) -> Result<shopfloor_devices::Value, String> {
    let Some(p) = d.cfg.device.points.get(i) else {
        return Err("no such point".into());
    };
    let Some(off) = p.layout.address.checked_sub(req.start).map(usize::from) else {
        return Err("point outside its request".into());
    };
    let raw = match data {
        Data::Bits(bits) => bits
            .get(off)
            .map(|&b| codec::decode_bit(b))
            .ok_or_else(|| "reply too short".to_owned())?,
        Data::Registers(regs) => {
            let span = usize::from(p.layout.span());
            let slice = regs
                .get(off..off + span)
                .ok_or_else(|| "reply too short".to_owned())?;
            decode_registers(&p.layout, slice).map_err(|e| e.to_string())?
        }
    };
    Ok(codec::scale(raw, p.scale, p.offset))
}

fn sample(
    d: &DevState,
    i: usize,
    received: Timestamp,
    value: Result<shopfloor_devices::Value, String>,
) -> Sample {
    Sample {
        device: d.cfg.id.clone(),
        point: d.points.get(i).cloned().unwrap_or_else(|| Arc::from("?")),
        source_time: None,
        received,
        value,
    }
}

/// Every point of `req` failed for `reason`: one event.
fn failed(d: &DevState, req: &ReadRequest, received: Timestamp, reason: &str) -> Event {
    Event::Samples(
        req.points
            .iter()
            .map(|&i| sample(d, i, received, Err(reason.to_owned())))
            .collect(),
    )
}

async fn send(tx: &mpsc::Sender<Event>, e: Event) {
    // A closed receiver means the agent is shutting down; nothing to report to.
    let _ = tx.send(e).await;
}
