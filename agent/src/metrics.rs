//! `/metrics` (OpenMetrics, prometheus-client) and `/healthz` on the configured local address.
//!
//! One [`Metrics`] is built in `run` and shared; every event is counted in one place: driver
//! events in [`Metrics::observe`], outbox figures in [`Metrics::set_outbox`], the publisher in
//! `mqtt`. Label cardinality is bounded by the configuration: per device (entity path), per
//! device × outcome (4), per indicator × entity × window for live indicators.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use shopfloor_acquire::{Event, LinkState, Outcome};
use tokio::sync::watch;

use crate::outbox::OutboxStats;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DeviceLabels {
    pub device: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub device: String,
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct IndicatorLabels {
    pub indicator: String,
    pub entity: String,
    pub window: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    pub result: String,
}

type FGauge = Gauge<f64, AtomicU64>;

/// Every metric of the agent.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    pub link_up: Family<DeviceLabels, Gauge>,
    pub rtt_seconds: Family<DeviceLabels, FGauge>,
    pub requests: Family<RequestLabels, Counter>,
    pub samples: Family<DeviceLabels, Counter>,
    pub read_errors: Family<DeviceLabels, Counter>,
    pub samples_reported: Counter,
    pub out_of_order: Counter,
    pub invalid_signals: Counter,
    pub outbox_batches: Gauge,
    pub outbox_sealed: Gauge,
    pub outbox_bytes: Gauge,
    pub outbox_oldest_age_seconds: FGauge,
    pub outbox_dropped_samples: Counter,
    pub outbox_dropped_batches: Counter,
    pub outbox_write_errors: Counter,
    pub memory_batches: Gauge,
    pub memory_dropped_samples: Counter,
    pub memory_dropped_batches: Counter,
    pub batches_rejected: Counter,
    pub batches_cut: Counter,
    pub batches_sealed: Counter,
    pub batches_published: Counter,
    pub batches_acked: Counter,
    pub published_bytes: Counter,
    pub publish_latency: Histogram,
    pub mqtt_connected: Gauge,
    pub mqtt_reconnects: Counter,
    pub config_reloads: Family<ResultLabels, Counter>,
    pub indicator: Family<IndicatorLabels, FGauge>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut r = Registry::with_prefix("shopfloor_agent");
        let m = Metrics {
            link_up: Family::default(),
            rtt_seconds: Family::default(),
            requests: Family::default(),
            samples: Family::default(),
            read_errors: Family::default(),
            samples_reported: Counter::default(),
            out_of_order: Counter::default(),
            invalid_signals: Counter::default(),
            outbox_batches: Gauge::default(),
            outbox_sealed: Gauge::default(),
            outbox_bytes: Gauge::default(),
            outbox_oldest_age_seconds: FGauge::default(),
            outbox_dropped_samples: Counter::default(),
            outbox_dropped_batches: Counter::default(),
            outbox_write_errors: Counter::default(),
            memory_batches: Gauge::default(),
            memory_dropped_samples: Counter::default(),
            memory_dropped_batches: Counter::default(),
            batches_rejected: Counter::default(),
            batches_cut: Counter::default(),
            batches_sealed: Counter::default(),
            batches_published: Counter::default(),
            batches_acked: Counter::default(),
            published_bytes: Counter::default(),
            publish_latency: Histogram::new(exponential_buckets(0.001, 2.0, 16)),
            mqtt_connected: Gauge::default(),
            mqtt_reconnects: Counter::default(),
            config_reloads: Family::default(),
            indicator: Family::default(),
            registry: Registry::default(),
        };
        r.register(
            "device_link_up",
            "1 while the device link is up, 0 while down",
            m.link_up.clone(),
        );
        r.register(
            "device_rtt_seconds",
            "Round trip of the device's last request",
            m.rtt_seconds.clone(),
        );
        r.register(
            "device_requests",
            "Device requests by outcome (ok, exception, timeout, link_error)",
            m.requests.clone(),
        );
        r.register(
            "device_samples",
            "Readings received from the device",
            m.samples.clone(),
        );
        r.register(
            "device_read_errors",
            "Readings that carried an error instead of a value",
            m.read_errors.clone(),
        );
        r.register(
            "samples_reported",
            "Readings kept as raw samples (report by exception and heartbeat)",
            m.samples_reported.clone(),
        );
        r.register(
            "events_out_of_order",
            "Events older than the device's last one (clock set back), skipped by state and counter tracking",
            m.out_of_order.clone(),
        );
        r.register(
            "invalid_signals",
            "Values the state, counter or meter rules could not use",
            m.invalid_signals.clone(),
        );
        r.register(
            "outbox_batches",
            "Batches in the outbox (waiting or in flight)",
            m.outbox_batches.clone(),
        );
        r.register(
            "outbox_sealed",
            "Sealed batches in the outbox not yet acknowledged",
            m.outbox_sealed.clone(),
        );
        r.register(
            "outbox_bytes",
            "Bytes of batch data in the outbox",
            m.outbox_bytes.clone(),
        );
        r.register(
            "outbox_oldest_age_seconds",
            "Age of the oldest batch in the outbox",
            m.outbox_oldest_age_seconds.clone(),
        );
        r.register(
            "outbox_dropped_samples",
            "Raw samples dropped to stay within the disk budget (summaries, states and counters kept)",
            m.outbox_dropped_samples.clone(),
        );
        r.register(
            "outbox_dropped_batches",
            "Whole unsent batches dropped as a last resort to stay within the disk budget",
            m.outbox_dropped_batches.clone(),
        );
        r.register(
            "outbox_write_errors",
            "Failed writes to the outbox (data kept in memory and retried)",
            m.outbox_write_errors.clone(),
        );
        r.register(
            "memory_batches",
            "Batches held in memory because the outbox could not be written (disk full, I/O error)",
            m.memory_batches.clone(),
        );
        r.register(
            "memory_dropped_samples",
            "Raw samples dropped from batches held in memory, to stay within their memory bound",
            m.memory_dropped_samples.clone(),
        );
        r.register(
            "memory_dropped_batches",
            "Whole batches held in memory dropped as a last resort to stay within their memory bound",
            m.memory_dropped_batches.clone(),
        );
        r.register("batches_cut", "Batch windows cut", m.batches_cut.clone());
        r.register(
            "batches_sealed",
            "Batches sealed (seq assigned and signed)",
            m.batches_sealed.clone(),
        );
        r.register(
            "batches_published",
            "Batch publications (replays included)",
            m.batches_published.clone(),
        );
        r.register(
            "batches_acked",
            "Batches acknowledged by the broker (PUBACK) and deleted from the outbox",
            m.batches_acked.clone(),
        );
        r.register(
            "published_bytes",
            "Batch bytes published",
            m.published_bytes.clone(),
        );
        r.register(
            "publish_latency_seconds",
            "From submission to PUBACK",
            m.publish_latency.clone(),
        );
        r.register(
            "mqtt_connected",
            "1 while connected to the broker",
            m.mqtt_connected.clone(),
        );
        r.register(
            "mqtt_reconnects",
            "Connections to the broker lost",
            m.mqtt_reconnects.clone(),
        );
        r.register(
            "config_reloads",
            "Configuration reloads by result (applied, rejected)",
            m.config_reloads.clone(),
        );
        r.register(
            "indicator",
            "Live indicators (shared engine) per entity and window",
            m.indicator.clone(),
        );
        Metrics { registry: r, ..m }
    }

    /// Counts one driver event.
    pub fn observe(&self, ev: &Event) {
        match ev {
            Event::Sample(_) | Event::Samples(_) => {
                // One label per device run (a Modbus request's points come as one event).
                for run in ev.samples().chunk_by(|a, b| a.device == b.device) {
                    let Some(first) = run.first() else { continue };
                    let l = DeviceLabels {
                        device: first.device.to_string(),
                    };
                    self.samples.get_or_create(&l).inc_by(run.len() as u64);
                    let errors = run.iter().filter(|s| s.value.is_err()).count();
                    if errors > 0 {
                        self.read_errors.get_or_create(&l).inc_by(errors as u64);
                    }
                }
            }
            Event::Link { device, state, .. } => {
                self.link_up
                    .get_or_create(&DeviceLabels {
                        device: device.to_string(),
                    })
                    .set(i64::from(*state == LinkState::Up));
            }
            Event::Request {
                device,
                rtt,
                outcome,
            } => {
                let device = device.to_string();
                if *outcome != Outcome::Timeout {
                    self.rtt_seconds
                        .get_or_create(&DeviceLabels {
                            device: device.clone(),
                        })
                        .set(rtt.as_secs_f64());
                }
                let outcome = match outcome {
                    Outcome::Ok => "ok",
                    Outcome::Exception => "exception",
                    Outcome::Timeout => "timeout",
                    Outcome::LinkError => "link_error",
                };
                self.requests
                    .get_or_create(&RequestLabels {
                        device,
                        outcome: outcome.into(),
                    })
                    .inc();
            }
        }
    }

    /// Outbox gauges and the drop counters (totals from the outbox, monotonic).
    pub fn set_outbox(&self, s: &OutboxStats, now_ms: i64) {
        self.outbox_batches.set(s.batches as i64);
        self.outbox_sealed.set(s.sealed as i64);
        self.outbox_bytes.set(s.bytes as i64);
        self.outbox_oldest_age_seconds.set(
            s.oldest_created_ms
                .map_or(0.0, |t| ((now_ms - t).max(0) as f64) / 1000.0),
        );
        let ds = self.outbox_dropped_samples.get();
        if s.dropped_samples > ds {
            self.outbox_dropped_samples.inc_by(s.dropped_samples - ds);
        }
        let db = self.outbox_dropped_batches.get();
        if s.dropped_batches > db {
            self.outbox_dropped_batches.inc_by(s.dropped_batches - db);
        }
    }

    /// OpenMetrics text.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

/// What `/healthz` reports.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Health {
    /// `ok`, or `degraded` with the reasons.
    pub status: String,
    pub reasons: Vec<String>,
    pub mqtt_connected: bool,
    pub devices_up: usize,
    pub devices: usize,
    pub outbox_batches: u64,
}

#[derive(Clone)]
struct AppState {
    metrics: Arc<Metrics>,
    health: watch::Receiver<Health>,
}

async fn metrics_handler(State(s): State<AppState>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        s.metrics.encode(),
    )
}

async fn health_handler(State(s): State<AppState>) -> impl IntoResponse {
    let h = s.health.borrow().clone();
    // Degraded (broker away, devices down) is still alive: 200. Only an outbox that cannot
    // be written is unhealthy, because then data is at risk.
    let code = if h.reasons.iter().any(|r| r.starts_with("outbox")) {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    };
    (code, axum::Json(h))
}

/// Serves `/metrics` and `/healthz` on `listener` until `shutdown`.
pub async fn serve(
    listener: tokio::net::TcpListener,
    metrics: Arc<Metrics>,
    health: watch::Receiver<Health>,
    mut shutdown: watch::Receiver<bool>,
) -> std::io::Result<()> {
    let app = Router::new()
        .route("/metrics", get(metrics_handler))
        .route("/healthz", get(health_handler))
        .with_state(AppState { metrics, health });
    axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            let _ = shutdown.changed().await;
        })
        .await
}
