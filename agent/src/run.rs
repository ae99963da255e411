//! `shopfloor-agent run`: wires drivers → pipeline → outbox → publisher, live indicators and
//! metrics, and reloads device changes on SIGHUP or when the file changes.
//!
//! Order of things:
//! - the configuration is loaded and validated completely before anything starts (exit 2);
//! - the key, the outbox and the metrics listener are opened next (exit 1 on failure);
//! - drivers, publisher and the main loop run until SIGINT/SIGTERM; then the drivers stop, the
//!   events already received are cut into a last batch, which is made durable, and the
//!   publisher sends the retained `offline` status. Whatever is not acknowledged stays in the
//!   outbox for the next start.
//!
//! Reload: device, bus, product and indicator settings, `batch.max_samples` and
//! `batch.heartbeat_s` are applied without a restart and without losing buffered data (see
//! `pipeline`); drivers whose settings did not change keep running. Changes to `[agent]`,
//! `[mqtt]`, `[outbox]`, `[metrics]` and `batch.interval_s` are reported and need a restart. An invalid new file is rejected (every error logged, counted) and the
//! running configuration stays.

use std::collections::{BTreeMap, VecDeque};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use shopfloor_acquire::Event;
use shopfloor_core::batch::{Contents, Reading};
use tokio::sync::{Notify, mpsc, watch};
use tokio::task::JoinHandle;

use crate::config::{self, AgentConfig, DeviceDef};
use crate::live::{Live, LiveEquipment, LiveMeter, LiveProduct, LiveSetup, LiveShift};
use crate::metrics::{Health, IndicatorLabels, Metrics, ResultLabels};
use crate::mqtt::{Publisher, PublisherState};
use crate::outbox::{Fsync, Outbox, OutboxConfig};
use crate::pipeline::{DeviceSpec, Pipeline, PipelineConfig};

/// Why the agent could not start or stopped on its own.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("{0}")]
    Setup(String),
}

/// `shopfloor-agent run --config FILE`.
pub fn main(path: &Path) -> ExitCode {
    let cfg = match config::load(path) {
        Ok(c) => c,
        Err(errors) => {
            eprintln!("{errors}");
            return ExitCode::from(2);
        }
    };
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    rt.block_on(async move {
        let (stop, stop_rx) = watch::channel(false);
        tokio::spawn(async move {
            wait_for_stop_signal().await;
            let _ = stop.send(true);
        });
        match run(cfg, stop_rx).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::from(1)
            }
        }
    })
}

async fn wait_for_stop_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}

/// A stream of reload requests: SIGHUP (unix) or a change of the file's modification time or
/// size (checked every 2 s, so editors that replace the file are seen too).
fn spawn_reload_watch(path: PathBuf, tx: mpsc::UnboundedSender<&'static str>) -> JoinHandle<()> {
    tokio::spawn(async move {
        let stamp = |p: &Path| -> Option<(SystemTime, u64)> {
            let m = std::fs::metadata(p).ok()?;
            Some((m.modified().ok()?, m.len()))
        };
        let mut last = stamp(&path);
        #[cfg(unix)]
        let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
        let mut tick = tokio::time::interval(Duration::from_secs(2));
        loop {
            #[cfg(unix)]
            let hup_fut = async {
                match hup.as_mut() {
                    Some(h) => {
                        h.recv().await;
                    }
                    None => std::future::pending::<()>().await,
                }
            };
            #[cfg(not(unix))]
            let hup_fut = std::future::pending::<()>();
            tokio::select! {
                _ = hup_fut => {
                    if tx.send("SIGHUP").is_err() { return; }
                }
                _ = tick.tick() => {
                    let now = stamp(&path);
                    if now.is_some() && now != last {
                        last = now;
                        if tx.send("file changed").is_err() { return; }
                    }
                }
            }
        }
    })
}

fn device_spec(d: &DeviceDef) -> DeviceSpec {
    DeviceSpec {
        id: Arc::from(d.id.as_str()),
        template: d.template.id.clone(),
        deadbands: d.deadbands.clone(),
        states: d.states.clone(),
        counters: d.counters.clone(),
        meter: d
            .meter
            .clone()
            .map(|m| (m, d.carrier.clone().unwrap_or_else(|| "electricity".into()))),
    }
}

fn pipeline_config(cfg: &AgentConfig) -> PipelineConfig {
    PipelineConfig {
        heartbeat: cfg.batch.heartbeat,
        max_samples: cfg.batch.max_samples,
    }
}

fn live_setup(cfg: &AgentConfig) -> Result<LiveSetup, String> {
    let tz = jiff::tz::TimeZone::get(&cfg.agent.time_zone)
        .map_err(|e| format!("agent.time_zone: {e}"))?;
    let product = |id: &Option<String>| {
        id.as_ref().and_then(|id| {
            cfg.products
                .iter()
                .find(|p| &p.id == id)
                .map(|p| LiveProduct {
                    id: p.id.clone(),
                    ideal_cycle_s: p.ideal_cycle_s,
                    value_added_per_unit_cny: p.value_added_per_unit_cny,
                })
        })
    };
    let mut equipment = Vec::new();
    let mut meters = Vec::new();
    for d in &cfg.devices {
        if let Some(m) = &d.meter {
            let unit = d
                .points
                .iter()
                .find(|p| p.name == m.point)
                .and_then(|p| p.unit.clone())
                .unwrap_or_default();
            meters.push(LiveMeter {
                id: d.id.clone(),
                carrier: d.carrier.clone().unwrap_or_else(|| "electricity".into()),
                unit,
            });
        } else {
            equipment.push(LiveEquipment {
                id: d.id.clone(),
                kind: d.kind.clone(),
                control: d.control.clone(),
                key_process: d.key_process.clone(),
                networked: d.networked,
                product: product(&d.product),
            });
        }
    }
    Ok(LiveSetup {
        workshop: cfg.agent.workshop.clone(),
        time_zone: tz,
        equipment,
        meters,
        rolling: cfg.indicators.rolling.clone(),
        shifts: cfg
            .indicators
            .shifts
            .iter()
            .map(|s| LiveShift {
                name: s.name.clone(),
                start: s.start,
                hours: s.hours,
            })
            .collect(),
    })
}

/// Starts one driver task with its stop switch.
type Starter = Box<dyn FnOnce(watch::Receiver<bool>) -> JoinHandle<()>>;

/// The running drivers, keyed by their settings, so a reload restarts only what changed.
struct Drivers {
    tx: mpsc::Sender<Event>,
    running: BTreeMap<SettingsKey, (watch::Sender<bool>, JoinHandle<()>)>,
}

/// What identifies a driver's settings: the SHA-256 of their `Debug` text, hashed as it is
/// written and never held (the text of a 200-point device is about 65 kB; keeping it for 100
/// devices cost 6.5 MB of the agent's memory).
type SettingsKey = [u8; 32];

fn settings_key(settings: std::fmt::Arguments<'_>) -> SettingsKey {
    use sha2::Digest as _;
    struct Hasher(sha2::Sha256);
    impl std::fmt::Write for Hasher {
        fn write_str(&mut self, s: &str) -> std::fmt::Result {
            self.0.update(s.as_bytes());
            Ok(())
        }
    }
    let mut h = Hasher(sha2::Sha256::new());
    // Writing into a hasher cannot fail.
    let _ = std::fmt::write(&mut h, settings);
    h.0.finalize().into()
}

impl Drivers {
    fn apply(&mut self, cfg: &AgentConfig) {
        let acq = cfg.acquisition();
        let mut wanted: BTreeMap<SettingsKey, Starter> = BTreeMap::new();
        for (bus, devices) in acq.modbus {
            let key = settings_key(format_args!("modbus {bus:?} {devices:?}"));
            let tx = self.tx.clone();
            wanted.insert(
                key,
                Box::new(move |stop| {
                    tokio::spawn(shopfloor_acquire::modbus::run_bus(bus, devices, tx, stop))
                }),
            );
        }
        for (id, ua, device) in acq.opcua {
            let key = settings_key(format_args!("opcua {id} {ua:?} {device:?}"));
            let tx = self.tx.clone();
            wanted.insert(
                key,
                Box::new(move |stop| {
                    tokio::spawn(shopfloor_acquire::opcua::run_device(
                        id, ua, device, tx, stop,
                    ))
                }),
            );
        }
        let old = std::mem::take(&mut self.running);
        for (key, (stop, task)) in old {
            if wanted.contains_key(&key) {
                self.running.insert(key, (stop, task));
            } else {
                let _ = stop.send(true);
                // The task ends on its own; nothing waits for it here.
                drop(task);
            }
        }
        for (key, start) in wanted {
            if self.running.contains_key(&key) {
                continue;
            }
            let (stop, stop_rx) = watch::channel(false);
            let task = start(stop_rx);
            self.running.insert(key, (stop, task));
        }
    }

    async fn stop_all(&mut self) {
        for (stop, _) in self.running.values() {
            let _ = stop.send(true);
        }
        for (_, (_, task)) in std::mem::take(&mut self.running) {
            let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
        }
    }
}

fn restart_needed(old: &AgentConfig, new: &AgentConfig) -> Vec<&'static str> {
    let mut v = Vec::new();
    if format!("{:?}", old.agent) != format!("{:?}", new.agent) {
        v.push("[agent]");
    }
    if format!("{:?}", old.mqtt) != format!("{:?}", new.mqtt) {
        v.push("[mqtt]");
    }
    if format!("{:?}", old.outbox) != format!("{:?}", new.outbox) {
        v.push("[outbox]");
    }
    if format!("{:?}", old.metrics) != format!("{:?}", new.metrics) {
        v.push("[metrics]");
    }
    if old.batch.interval != new.batch.interval {
        v.push("batch.interval_s");
    }
    v
}

fn feed_live(live: &mut Live, c: &Contents) {
    for d in &c.devices {
        if !d.states.is_empty() {
            live.record_states(&d.id, &d.states);
        }
        for cr in &d.counters {
            match cr.role.as_str() {
                "produced" | "good" | "scrap" => {
                    for r in &cr.readings {
                        live.record_counter(&d.id, &cr.role, *r, cr.width_bits);
                    }
                }
                _ => {
                    for r in &cr.readings {
                        live.record_meter(&d.id, Reading { t: r.t, v: r.v });
                    }
                }
            }
        }
    }
}

/// Runs the agent until `shutdown` turns true.
pub async fn run(cfg: AgentConfig, mut shutdown: watch::Receiver<bool>) -> Result<(), RunError> {
    let setup = |e: String| RunError::Setup(e);
    std::fs::create_dir_all(&cfg.agent.data_dir).map_err(|e| {
        setup(format!(
            "agent.data_dir {}: {e}",
            cfg.agent.data_dir.display()
        ))
    })?;
    let key =
        crate::identity::load_or_create(&cfg.agent.data_dir).map_err(|e| setup(e.to_string()))?;
    let public_key = shopfloor_core::batch::public_key_text(&key.verifying_key());
    let fsync: Fsync = cfg
        .outbox
        .fsync
        .parse()
        .map_err(|e| setup(format!("outbox.fsync: {e}")))?;
    let outbox = Arc::new(
        Outbox::open(OutboxConfig {
            path: cfg.agent.data_dir.join("outbox.db"),
            budget_bytes: cfg.outbox.budget_bytes,
            fsync,
        })
        .await
        .map_err(|e| setup(e.to_string()))?,
    );
    let metrics = Arc::new(Metrics::new());
    let (health_tx, health_rx) = watch::channel(Health::default());
    let mut tasks: Vec<JoinHandle<()>> = Vec::new();
    if let Some(addr) = cfg.metrics.listen {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| setup(format!("metrics.listen {addr}: {e}")))?;
        let (m, h, s) = (metrics.clone(), health_rx.clone(), shutdown.clone());
        tasks.push(tokio::spawn(async move {
            if let Err(e) = crate::metrics::serve(listener, m, h, s).await {
                tracing::error!(error = %e, "metrics server stopped");
            }
        }));
    }
    tracing::info!(agent = %cfg.agent.id, %public_key, devices = cfg.devices.len(), "agent starting");

    // Publisher.
    let wake = Arc::new(Notify::new());
    let (pub_state_tx, pub_state_rx) = watch::channel(PublisherState::default());
    let (pub_stop, pub_stop_rx) = watch::channel(false);
    let publisher = Publisher {
        cfg: cfg.mqtt.clone(),
        agent: cfg.agent.id.clone(),
        key,
        public_key,
        outbox: outbox.clone(),
        metrics: metrics.clone(),
        wake: wake.clone(),
        state: pub_state_tx,
    };
    let pub_task = tokio::spawn(async move {
        if let Err(e) = publisher.run(pub_stop_rx).await {
            tracing::error!(error = %e, "publisher stopped");
        }
    });

    // Pipeline, live indicators, drivers.
    let now = shopfloor_clock::now();
    let mut pipeline = Pipeline::new(
        pipeline_config(&cfg),
        cfg.devices.iter().map(device_spec).collect(),
        now,
    )
    .map_err(setup)?;
    let mut live = Live::new(live_setup(&cfg).map_err(setup)?).map_err(setup)?;
    // Bounded in events: a Modbus event carries one request's points (up to 125 registers'
    // worth), so 4,096 events hold up to a few hundred thousand readings, seconds of the
    // largest plant, before the drivers wait.
    let (ev_tx, mut ev_rx) = mpsc::channel::<Event>(4_096);
    let mut drivers = Drivers {
        tx: ev_tx,
        running: BTreeMap::new(),
    };
    // OPC UA devices share one certificate store: create the certificate before they start.
    if let Some((_, ua, _)) = cfg.acquisition().opcua.first()
        && let Err(e) = shopfloor_acquire::opcua::prepare_certificate(ua).await
    {
        tracing::warn!(error = %e, "OPC UA: cannot prepare the agent certificate");
    }
    drivers.apply(&cfg);
    let (reload_tx, mut reload_rx) = mpsc::unbounded_channel();
    let reload_task = spawn_reload_watch(cfg.file.clone(), reload_tx);

    let mut cfg = cfg;
    let mut unpushed: Unpushed = VecDeque::new();
    let mut cut_timer = tokio::time::interval(cfg.batch.interval);
    cut_timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    cut_timer.tick().await;
    let mut stats_timer = tokio::time::interval(Duration::from_secs(1));
    stats_timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut outbox_error: Option<String> = None;
    let mut last_stats = pipeline.stats();

    loop {
        let mut cut_now = false;
        tokio::select! {
            ev = ev_rx.recv() => {
                if let Some(ev) = ev {
                    metrics.observe(&ev);
                    pipeline.handle(&ev, shopfloor_clock::now());
                    cut_now = pipeline.full();
                }
            }
            _ = cut_timer.tick() => cut_now = true,
            _ = stats_timer.tick() => {
                let now_ms = shopfloor_clock::now().as_millisecond();
                let st = pipeline.stats();
                metrics.samples_reported.inc_by(st.reported - last_stats.reported);
                metrics.out_of_order.inc_by(st.out_of_order - last_stats.out_of_order);
                metrics.invalid_signals.inc_by(st.invalid_signals - last_stats.invalid_signals);
                last_stats = st;
                let stats = outbox.stats().await;
                let mut h = Health {
                    devices: cfg.devices.len(),
                    mqtt_connected: pub_state_rx.borrow().connected,
                    ..Health::default()
                };
                match stats {
                    Ok(s) => {
                        metrics.set_outbox(&s, now_ms);
                        h.outbox_batches = s.batches;
                    }
                    Err(e) => h.reasons.push(format!("outbox: {e}")),
                }
                if let Some(e) = &outbox_error {
                    h.reasons.push(format!("outbox: {e}"));
                }
                if !h.mqtt_connected {
                    let why = pub_state_rx.borrow().last_error.clone().unwrap_or_else(|| "connecting".into());
                    h.reasons.push(format!("mqtt: not connected ({why})"));
                }
                let up = cfg
                    .devices
                    .iter()
                    .filter(|d| {
                        metrics
                            .link_up
                            .get_or_create(&crate::metrics::DeviceLabels { device: d.id.clone() })
                            .get()
                            == 1
                    })
                    .count();
                h.devices_up = up;
                if up < h.devices {
                    h.reasons.push(format!("devices: {} of {} down", h.devices - up, h.devices));
                }
                h.status = if h.reasons.is_empty() { "ok".into() } else { "degraded".into() };
                let _ = health_tx.send(h);
            }
            r = reload_rx.recv() => {
                if let Some(why) = r {
                    reload(&mut cfg, why, &mut pipeline, &mut live, &mut drivers, &metrics);
                }
            }
            _ = shutdown.changed() => break,
        }
        if cut_now {
            let now = shopfloor_clock::now();
            if let Some(c) = pipeline.cut(now) {
                metrics.batches_cut.inc();
                feed_live(&mut live, &c);
                unpushed.push_back((c, None));
            }
            for (id, open) in pipeline.open_states() {
                live.set_open_state(&id, open);
            }
            publish_live(&live, &metrics, now.as_millisecond());
            outbox_error = push_all(&outbox, &mut unpushed, &metrics).await;
            wake.notify_one();
            // The batch's buffers are freed: give their pages back (src/alloc.rs).
            crate::alloc::release();
        }
    }

    // Shutdown: stop the drivers, take what they delivered, make it durable.
    tracing::info!("agent stopping");
    reload_task.abort();
    drivers.stop_all().await;
    drop(drivers);
    while let Ok(ev) = ev_rx.try_recv() {
        metrics.observe(&ev);
        pipeline.handle(&ev, shopfloor_clock::now());
    }
    if let Some(c) = pipeline.cut(shopfloor_clock::now()) {
        unpushed.push_back((c, None));
    }
    if let Some(e) = push_all(&outbox, &mut unpushed, &metrics).await {
        tracing::error!(error = %e, lost = unpushed.len(), "outbox: the last batches could not be stored");
    }
    let _ = pub_stop.send(true);
    let _ = pub_task.await;
    for t in tasks {
        let _ = tokio::time::timeout(Duration::from_secs(2), t).await;
    }
    Ok(())
}

/// Bound of the batches held in memory while the outbox cannot be written (disk full, I/O
/// errors), in bytes of their JSON encoding (what the outbox would store). Beyond it the
/// outbox's budget policy applies to them: the raw samples of the oldest batch that still has
/// some are dropped first, then, as a last resort, the oldest batches; both are counted
/// (`memory_dropped_samples`, `memory_dropped_batches`).
const MEMORY_BUDGET_BYTES: u64 = 16 << 20;

/// Contents cut but not yet stored in the outbox, oldest first, with their encoded size once
/// it was needed (only while the outbox fails).
type Unpushed = VecDeque<(Contents, Option<u64>)>;

/// Pushes buffered contents in order; on failure keeps them for the next attempt (within
/// [`MEMORY_BUDGET_BYTES`]) and returns the error.
async fn push_all(outbox: &Outbox, unpushed: &mut Unpushed, metrics: &Metrics) -> Option<String> {
    let mut error = None;
    while let Some((c, _)) = unpushed.front() {
        match outbox.push(c).await {
            Ok(_) => {
                unpushed.pop_front();
            }
            Err(e) if e.is_permanent() => {
                // Contents the outbox refuses (they would never pass the gateway either):
                // dropped, logged with the reason and counted, so later batches are not
                // blocked behind them.
                metrics.batches_rejected.inc();
                tracing::error!(error = %e, "outbox refused a batch; dropped");
                unpushed.pop_front();
            }
            Err(e) => {
                metrics.outbox_write_errors.inc();
                let (samples, batches) = bound_memory(unpushed, MEMORY_BUDGET_BYTES);
                metrics.memory_dropped_samples.inc_by(samples);
                metrics.memory_dropped_batches.inc_by(batches);
                if samples > 0 || batches > 0 {
                    tracing::error!(
                        samples,
                        batches,
                        "batches waiting in memory reached their bound; oldest raw samples, then oldest batches dropped"
                    );
                }
                tracing::error!(error = %e, buffered = unpushed.len(), "outbox write failed; keeping the batch in memory");
                error = Some(e.to_string());
                break;
            }
        }
    }
    metrics
        .memory_batches
        .set(i64::try_from(unpushed.len()).unwrap_or(i64::MAX));
    error
}

/// Keeps the buffered contents within `budget` bytes of JSON as the outbox's budget policy
/// does on disk: strip the raw samples of the oldest contents that still have some (summaries,
/// states, counters and links stay, `dropped.samples` records it), then drop the oldest
/// contents. Returns (raw samples dropped, batches dropped).
fn bound_memory(unpushed: &mut Unpushed, budget: u64) -> (u64, u64) {
    let mut total: u64 = unpushed
        .iter_mut()
        .map(|(c, n)| *n.get_or_insert_with(|| encoded_len(c)))
        .sum();
    let (mut samples, mut batches) = (0u64, 0u64);
    while total > budget {
        if let Some((c, n)) = unpushed.iter_mut().find(|(c, _)| c.sample_count() > 0) {
            samples += c.strip_samples();
            let new = encoded_len(c);
            total = total.saturating_sub(n.unwrap_or(0)) + new;
            *n = Some(new);
            continue;
        }
        let Some((c, n)) = unpushed.pop_front() else {
            break;
        };
        samples += c.sample_count();
        total = total.saturating_sub(n.unwrap_or(0));
        batches += 1;
    }
    (samples, batches)
}

/// Bytes of the JSON encoding of `c`, without building it.
fn encoded_len(c: &Contents) -> u64 {
    struct Count(u64);
    impl std::io::Write for Count {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0 += b.len() as u64;
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut n = Count(0);
    // Contents always encode (the outbox stores the same encoding).
    let _ = serde_json::to_writer(&mut n, c);
    n.0
}

fn publish_live(live: &Live, metrics: &Metrics, now_ms: i64) {
    for w in live.compute(now_ms) {
        for e in &w.entities {
            for i in &e.indicators {
                let g = metrics.indicator.get_or_create(&IndicatorLabels {
                    indicator: i.id.clone(),
                    entity: e.entity.clone(),
                    window: w.name.clone(),
                });
                g.set(i.value.unwrap_or(f64::NAN));
            }
        }
    }
}

fn reload(
    cfg: &mut AgentConfig,
    why: &str,
    pipeline: &mut Pipeline,
    live: &mut Live,
    drivers: &mut Drivers,
    metrics: &Metrics,
) {
    let label = |r: &str| ResultLabels { result: r.into() };
    let new = match config::load(&cfg.file) {
        Ok(c) => c,
        Err(errors) => {
            tracing::error!(
                reason = why,
                "configuration reload rejected; the running configuration stays:\n{errors}"
            );
            metrics
                .config_reloads
                .get_or_create(&label("rejected"))
                .inc();
            return;
        }
    };
    let setup = match live_setup(&new) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(reason = why, error = %e, "configuration reload rejected");
            metrics
                .config_reloads
                .get_or_create(&label("rejected"))
                .inc();
            return;
        }
    };
    if let Err(e) = pipeline.reconfigure(
        pipeline_config(&new),
        new.devices.iter().map(device_spec).collect(),
    ) {
        tracing::error!(reason = why, error = %e, "configuration reload rejected");
        metrics
            .config_reloads
            .get_or_create(&label("rejected"))
            .inc();
        return;
    }
    live.reconfigure(setup);
    drivers.apply(&new);
    let restart = restart_needed(cfg, &new);
    if !restart.is_empty() {
        tracing::warn!(
            sections = ?restart,
            "configuration reloaded; changes to these sections take effect after a restart"
        );
    }
    tracing::info!(
        reason = why,
        devices = new.devices.len(),
        "configuration reloaded"
    );
    metrics
        .config_reloads
        .get_or_create(&label("applied"))
        .inc();
    *cfg = new;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn contents(i: i64, samples: usize) -> Contents {
        let s: Vec<serde_json::Value> = (0..samples)
            .map(|k| serde_json::json!({"t": i * 1000 + k as i64, "v": 1.5}))
            .collect();
        serde_json::from_value(serde_json::json!({
            "from": i * 1000, "to": i * 1000 + 1000,
            "devices": [{"id": "p1/e1/w1/m-01", "template": "eastron-sdm630",
                         "samples": [{"point": "power_total_w", "samples": s}],
                         "counters": [{"role": "electricity", "point": "energy_import_kwh",
                                       "readings": [{"t": i * 1000 + 1000, "v": 1.0}]}]}]
        }))
        .unwrap()
    }

    #[test]
    fn memory_bound_strips_oldest_samples_first_then_drops_oldest_batches() {
        let mut q: Unpushed = (0..10).map(|i| (contents(i, 100), None)).collect();
        let len = |i: i64| encoded_len(&contents(i, 100));
        let stripped = |i: i64| {
            let mut c = contents(i, 100);
            c.strip_samples();
            encoded_len(&c)
        };
        let full: u64 = (0..10).map(len).sum();
        // Within the bound: nothing changes.
        assert_eq!(bound_memory(&mut q, full), (0, 0));
        // Room for all but the raw samples of the two oldest: exactly those go.
        let budget = full - len(0) - len(1) + stripped(0) + stripped(1);
        assert_eq!(bound_memory(&mut q, budget), (200, 0));
        assert_eq!(q.len(), 10);
        assert_eq!(q[0].0.sample_count(), 0);
        assert_eq!(q[1].0.sample_count(), 0);
        assert_eq!(q[2].0.sample_count(), 100);
        assert_eq!(q[0].0.devices[0].dropped.map(|d| d.samples), Some(100));
        // Room for the three newest without samples: every sample goes, then the oldest
        // batches; meter readings stay in what is kept.
        let budget = stripped(7) + stripped(8) + stripped(9);
        assert_eq!(bound_memory(&mut q, budget), (800, 7));
        assert_eq!(q.len(), 3);
        assert_eq!(q[0].0.from, 7000, "the newest batches are kept");
        assert!(q.iter().all(|(c, _)| !c.devices[0].counters.is_empty()));
    }
}
