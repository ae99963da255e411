//! The gateway's Prometheus metrics: one `prometheus-client` registry, built once in
//! [`Metrics::new`] and shared (`Arc<Metrics>`) by ingest, MQTT, roll-ups and the API; served as
//! OpenMetrics text by `GET /metrics` ([`Metrics::encode`]).
//!
//! Families (every label has a bounded set of values):
//!
//! | family | type | labels (values) | meaning |
//! |---|---|---|---|
//! | `shopfloor_gateway_batches_total` | counter | `result` (`stored`, `duplicate`, `quarantined`) | batches received, by what became of them (a redelivery of a stored batch is a `duplicate`; a replay of another body under a stored seq counts as `quarantined`) |
//! | `shopfloor_gateway_readings_total` | counter | – | rows stored: raw samples + counter/meter readings + state intervals |
//! | `shopfloor_gateway_quarantined_total` | counter | `reason` (the fixed codes of [`crate::ingest::REASONS`], all pre-registered at 0) | payloads quarantined, by reason |
//! | `shopfloor_gateway_chain_events_total` | counter | `kind` (`gap`, `fork`) | hash-chain anomalies found at ingest |
//! | `shopfloor_gateway_ingest_lag_seconds` | histogram | – | gateway receive time − batch `to`, per stored batch (agent outbox backlog + broker + queue) |
//! | `shopfloor_gateway_commit_seconds` | histogram | – | duration of one successful ingest transaction |
//! | `shopfloor_gateway_commit_batches` | histogram | – | batches in one ingest transaction |
//! | `shopfloor_gateway_commit_failures_total` | counter | – | failed ingest or quarantine transactions (each is retried; nothing is acknowledged before it succeeds) |
//! | `shopfloor_gateway_db_latency_seconds` | histogram | `op` (a fixed name per call site: `ingest`, `quarantine`, `query`, `rollup`, …) | latency of database operations |
//! | `shopfloor_gateway_mqtt_connected` | gauge | – | 1 while the MQTT consumer is connected |
//! | `shopfloor_gateway_mqtt_reconnects_total` | counter | – | connections lost after being established |
//! | `shopfloor_gateway_mqtt_status_invalid_total` | counter | – | agent status messages that are not a JSON object (ignored) |
//! | `shopfloor_mqtt_guard_connections_total` | counter | `outcome` ([`GUARD_OUTCOMES`]: `accepted`, `tls_failed`, `bad_protocol`, `auth_failed`, `not_authorized`, `rate_limited`) | client connections to the embedded broker's guard, by outcome ([`crate::guard`]) |
//! | `shopfloor_mqtt_guard_denied_total` | counter | `action` ([`GUARD_ACTIONS`]: `publish`, `subscribe`, `will`) | requests the guard's ACL refused |
//! | `shopfloor_gateway_rollup_pending` | gauge | – | dirty ranges waiting for the roll-up worker |
//! | `shopfloor_gateway_rollup_buckets_total` | counter | – | roll-up buckets recomputed |
//! | `shopfloor_gateway_seals_total` | counter | `kind` (`new`: a day sealed for the first time, `version`: a later version after late data) | seals made |
//! | `shopfloor_gateway_seal_checks_total` | counter | – | sealed days checked again after late data, input or registry changes |
//! | `shopfloor_gateway_seal_pending` | gauge | – | days due for a seal or a re-check that the last pass left for later |
//! | `shopfloor_gateway_http_requests_total` | counter | `route` (route templates of the API router, never raw paths), `status` (HTTP status code) | API requests |
//! | `shopfloor_http_logins_total` | counter | `outcome` (`ok`, `failed`, `rate_limited`, all pre-registered at 0) | dashboard sign-in attempts (`POST /api/v1/login`) |
//! | `shopfloor_indicator` | gauge (f64) | `indicator` (catalog id), `entity` (entity path, at most `metrics.indicator_entities_max` entities) | latest indicator values (DESIGN.md §5) |
//! | `shopfloor_indicator_target` | gauge (f64) | `indicator`, `entity` | the plan target of that indicator, where one applies |
//!
//! Invariants: every event is counted in one place (the module that handles it calls one
//! method here); labels never carry user input that is not bounded by the configuration or the
//! code (reasons, results and kinds are `&'static str` from fixed sets; an unknown reason is
//! counted as `other`); indicator gauges of an entity are replaced as a set, so an indicator
//! that became null disappears instead of keeping a stale value.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::AtomicU64;
use std::sync::{Mutex, PoisonError};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::ingest::REASONS;

/// Label `result` of `shopfloor_gateway_batches_total`.
pub const RESULT_STORED: &str = "stored";
pub const RESULT_DUPLICATE: &str = "duplicate";
pub const RESULT_QUARANTINED: &str = "quarantined";

/// Label `outcome` of `shopfloor_http_logins_total`.
pub const LOGIN_OK: &str = "ok";
pub const LOGIN_FAILED: &str = "failed";
pub const LOGIN_RATE_LIMITED: &str = "rate_limited";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LoginLabel {
    outcome: &'static str,
}

/// Label `kind` of `shopfloor_gateway_chain_events_total`.
pub const CHAIN_GAP: &str = "gap";
pub const CHAIN_FORK: &str = "fork";

/// Label `kind` of `shopfloor_gateway_seals_total`.
pub const SEAL_NEW: &str = "new";
pub const SEAL_VERSION: &str = "version";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabel {
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabel {
    kind: &'static str,
}

/// Label `outcome` of `shopfloor_mqtt_guard_connections_total`.
pub const GUARD_OUTCOMES: [&str; 6] = [
    "accepted",
    "tls_failed",
    "bad_protocol",
    "auth_failed",
    "not_authorized",
    "rate_limited",
];
/// Label `action` of `shopfloor_mqtt_guard_denied_total`.
pub const GUARD_ACTIONS: [&str; 3] = ["publish", "subscribe", "will"];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabel {
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ActionLabel {
    action: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OpLabel {
    op: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HttpLabels {
    route: String,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct IndicatorLabels {
    indicator: String,
    entity: String,
}

type F64Gauge = Gauge<f64, AtomicU64>;

/// Indicator ids currently exported per entity: (values, targets).
type Exported = BTreeMap<String, (BTreeSet<String>, BTreeSet<String>)>;

/// The gateway's Prometheus registry (OpenMetrics text at `/metrics`).
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    batches: Family<ResultLabel, Counter>,
    readings: Counter,
    quarantined: Family<ReasonLabel, Counter>,
    chain_events: Family<KindLabel, Counter>,
    ingest_lag: Histogram,
    commit_seconds: Histogram,
    commit_batches: Histogram,
    commit_failures: Counter,
    db_latency: Family<OpLabel, Histogram>,
    mqtt_connected: Gauge,
    mqtt_reconnects: Counter,
    mqtt_status_invalid: Counter,
    guard_connections: Family<OutcomeLabel, Counter>,
    guard_denied: Family<ActionLabel, Counter>,
    rollup_pending: Gauge,
    rollup_buckets: Counter,
    seals: Family<KindLabel, Counter>,
    seal_checks: Counter,
    seal_pending: Gauge,
    http_requests: Family<HttpLabels, Counter>,
    logins: Family<LoginLabel, Counter>,
    indicator: Family<IndicatorLabels, F64Gauge>,
    indicator_target: Family<IndicatorLabels, F64Gauge>,
    exported: Mutex<Exported>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

fn latency_buckets() -> impl Iterator<Item = f64> {
    // 0.5 ms … ~16 s.
    exponential_buckets(0.0005, 2.0, 16)
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::default();
        let batches = Family::<ResultLabel, Counter>::default();
        for result in [RESULT_STORED, RESULT_DUPLICATE, RESULT_QUARANTINED] {
            let _ = batches.get_or_create(&ResultLabel { result });
        }
        registry.register(
            "shopfloor_gateway_batches",
            "Batches received, by result (stored, duplicate, quarantined)",
            batches.clone(),
        );
        let readings = Counter::default();
        registry.register(
            "shopfloor_gateway_readings",
            "Rows stored from batches: raw samples, counter and meter readings, state intervals",
            readings.clone(),
        );
        let quarantined = Family::<ReasonLabel, Counter>::default();
        for reason in REASONS {
            let _ = quarantined.get_or_create(&ReasonLabel { reason });
        }
        registry.register(
            "shopfloor_gateway_quarantined",
            "Payloads quarantined, by reason code (docs/PROTOCOL.md)",
            quarantined.clone(),
        );
        let chain_events = Family::<KindLabel, Counter>::default();
        for kind in [CHAIN_GAP, CHAIN_FORK] {
            let _ = chain_events.get_or_create(&KindLabel { kind });
        }
        registry.register(
            "shopfloor_gateway_chain_events",
            "Hash-chain anomalies found at ingest (gap: missing seqs; fork: a neighbour disagrees)",
            chain_events.clone(),
        );
        // 0.1 s … ~5 days.
        let ingest_lag = Histogram::new(exponential_buckets(0.1, 4.0, 12));
        registry.register(
            "shopfloor_gateway_ingest_lag_seconds",
            "Gateway receive time minus the batch window end, per stored batch",
            ingest_lag.clone(),
        );
        let commit_seconds = Histogram::new(latency_buckets());
        registry.register(
            "shopfloor_gateway_commit_seconds",
            "Duration of one successful ingest transaction",
            commit_seconds.clone(),
        );
        let commit_batches = Histogram::new(exponential_buckets(1.0, 2.0, 11));
        registry.register(
            "shopfloor_gateway_commit_batches",
            "Batches per ingest transaction",
            commit_batches.clone(),
        );
        let commit_failures = Counter::default();
        registry.register(
            "shopfloor_gateway_commit_failures",
            "Failed ingest or quarantine transactions (retried; nothing acknowledged before success)",
            commit_failures.clone(),
        );
        let db_latency =
            Family::<OpLabel, Histogram>::new_with_constructor(
                || Histogram::new(latency_buckets()),
            );
        registry.register(
            "shopfloor_gateway_db_latency_seconds",
            "Latency of database operations, by operation",
            db_latency.clone(),
        );
        let mqtt_connected = Gauge::default();
        registry.register(
            "shopfloor_gateway_mqtt_connected",
            "1 while the MQTT consumer is connected to the broker",
            mqtt_connected.clone(),
        );
        let mqtt_reconnects = Counter::default();
        registry.register(
            "shopfloor_gateway_mqtt_reconnects",
            "MQTT connections lost after being established",
            mqtt_reconnects.clone(),
        );
        let mqtt_status_invalid = Counter::default();
        registry.register(
            "shopfloor_gateway_mqtt_status_invalid",
            "Agent status messages that are not a JSON object (ignored)",
            mqtt_status_invalid.clone(),
        );
        let guard_connections = Family::<OutcomeLabel, Counter>::default();
        for outcome in GUARD_OUTCOMES {
            let _ = guard_connections.get_or_create(&OutcomeLabel { outcome });
        }
        registry.register(
            "shopfloor_mqtt_guard_connections",
            "Client connections to the embedded broker's guard, by outcome",
            guard_connections.clone(),
        );
        let guard_denied = Family::<ActionLabel, Counter>::default();
        for action in GUARD_ACTIONS {
            let _ = guard_denied.get_or_create(&ActionLabel { action });
        }
        registry.register(
            "shopfloor_mqtt_guard_denied",
            "Publishes, subscriptions and wills refused by the embedded broker's ACL",
            guard_denied.clone(),
        );
        let rollup_pending = Gauge::default();
        registry.register(
            "shopfloor_gateway_rollup_pending",
            "Dirty ranges waiting for the roll-up worker",
            rollup_pending.clone(),
        );
        let rollup_buckets = Counter::default();
        registry.register(
            "shopfloor_gateway_rollup_buckets",
            "Roll-up buckets recomputed",
            rollup_buckets.clone(),
        );
        let seals = Family::<KindLabel, Counter>::default();
        for kind in [SEAL_NEW, SEAL_VERSION] {
            let _ = seals.get_or_create(&KindLabel { kind });
        }
        registry.register(
            "shopfloor_gateway_seals",
            "Seals made (new: a day sealed first; version: a later version after late data)",
            seals.clone(),
        );
        let seal_checks = Counter::default();
        registry.register(
            "shopfloor_gateway_seal_checks",
            "Sealed days checked again after late data, input or registry changes",
            seal_checks.clone(),
        );
        let seal_pending = Gauge::default();
        registry.register(
            "shopfloor_gateway_seal_pending",
            "Days due for a seal or a re-check left for a later pass",
            seal_pending.clone(),
        );
        let http_requests = Family::<HttpLabels, Counter>::default();
        registry.register(
            "shopfloor_gateway_http_requests",
            "API requests by route template and status code",
            http_requests.clone(),
        );
        let logins = Family::<LoginLabel, Counter>::default();
        for outcome in [LOGIN_OK, LOGIN_FAILED, LOGIN_RATE_LIMITED] {
            let _ = logins.get_or_create(&LoginLabel { outcome });
        }
        registry.register(
            "shopfloor_http_logins",
            "Dashboard sign-in attempts by outcome (ok, failed, rate_limited)",
            logins.clone(),
        );
        let indicator = Family::<IndicatorLabels, F64Gauge>::default();
        registry.register(
            "shopfloor_indicator",
            "Latest indicator value by indicator id and entity path",
            indicator.clone(),
        );
        let indicator_target = Family::<IndicatorLabels, F64Gauge>::default();
        registry.register(
            "shopfloor_indicator_target",
            "Plan target of an indicator for an entity, where one applies",
            indicator_target.clone(),
        );
        Metrics {
            registry,
            batches,
            readings,
            quarantined,
            chain_events,
            ingest_lag,
            commit_seconds,
            commit_batches,
            commit_failures,
            db_latency,
            mqtt_connected,
            mqtt_reconnects,
            mqtt_status_invalid,
            guard_connections,
            guard_denied,
            rollup_pending,
            rollup_buckets,
            seals,
            seal_checks,
            seal_pending,
            http_requests,
            logins,
            indicator,
            indicator_target,
            exported: Mutex::new(BTreeMap::new()),
        }
    }

    /// OpenMetrics text of every family (ends with `# EOF`). Serve with content type
    /// `application/openmetrics-text; version=1.0.0; charset=utf-8`.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if let Err(e) = encode(&mut out, &self.registry) {
            // Writing into a String cannot fail; keep whatever was written.
            tracing::error!(error = %e, "metrics: cannot encode the registry");
        }
        out
    }

    /// Replaces the indicator gauges of `entity`: `shopfloor_indicator{indicator,entity}` for
    /// each value (ids whose value is null are removed) and `shopfloor_indicator_target` for
    /// each target value.
    pub fn set_indicators(
        &self,
        entity: &str,
        values: &[(String, f64)],
        targets: &[(String, f64)],
    ) {
        let mut exported = self.exported.lock().unwrap_or_else(PoisonError::into_inner);
        let (old_values, old_targets) = exported.remove(entity).unwrap_or_default();
        let new_values = replace_set(&self.indicator, entity, &old_values, values);
        let new_targets = replace_set(&self.indicator_target, entity, &old_targets, targets);
        if !new_values.is_empty() || !new_targets.is_empty() {
            exported.insert(entity.to_owned(), (new_values, new_targets));
        }
    }

    /// Removes the indicator gauges of every entity not in `keep`.
    pub fn retain_indicator_entities(&self, keep: &BTreeSet<String>) {
        let mut exported = self.exported.lock().unwrap_or_else(PoisonError::into_inner);
        exported.retain(|entity, (values, targets)| {
            if keep.contains(entity) {
                return true;
            }
            for (family, ids) in [
                (&self.indicator, &*values),
                (&self.indicator_target, &*targets),
            ] {
                for id in ids {
                    family.remove(&IndicatorLabels {
                        indicator: id.clone(),
                        entity: entity.clone(),
                    });
                }
            }
            false
        });
    }

    /// Counts one HTTP request by route template and status code.
    pub fn http_request(&self, route: &str, status: u16) {
        self.http_requests
            .get_or_create(&HttpLabels {
                route: route.to_owned(),
                status,
            })
            .inc();
    }

    /// One sign-in attempt: [`LOGIN_OK`], [`LOGIN_FAILED`] or [`LOGIN_RATE_LIMITED`] (anything
    /// else counts as failed, so the label set stays fixed).
    pub fn login(&self, outcome: &str) {
        let outcome = [LOGIN_OK, LOGIN_RATE_LIMITED]
            .into_iter()
            .find(|o| *o == outcome)
            .unwrap_or(LOGIN_FAILED);
        self.logins.get_or_create(&LoginLabel { outcome }).inc();
    }

    /// Observes the latency of one database operation (`ingest`, `query`, `rollup`, …).
    pub fn db_latency(&self, op: &str, seconds: f64) {
        self.db_latency
            .get_or_create(&OpLabel { op: op.to_owned() })
            .observe(seconds.max(0.0));
    }

    /// Roll-up worker: dirty ranges waiting, and buckets recomputed.
    pub fn rollup_progress(&self, pending: i64, recomputed: u64) {
        self.rollup_pending.set(pending);
        self.rollup_buckets.inc_by(recomputed);
    }

    /// One seal pass of `crate::seal`: seals made (new days, later versions), sealed days
    /// checked again, and what it left for later.
    pub fn seal_progress(&self, new: u64, versions: u64, checked: u64, pending: i64) {
        self.seals
            .get_or_create(&KindLabel { kind: SEAL_NEW })
            .inc_by(new);
        self.seals
            .get_or_create(&KindLabel { kind: SEAL_VERSION })
            .inc_by(versions);
        self.seal_checks.inc_by(checked);
        self.seal_pending.set(pending);
    }

    // --- ingest ---

    /// One batch stored, with its number of rows (samples + readings + states) and its lag
    /// (receive time − window end) in seconds.
    pub fn batch_stored(&self, rows: u64, lag_seconds: f64) {
        self.batches
            .get_or_create(&ResultLabel {
                result: RESULT_STORED,
            })
            .inc();
        self.readings.inc_by(rows);
        self.ingest_lag.observe(lag_seconds.max(0.0));
    }

    /// One redelivery of a stored batch (same body): nothing stored.
    pub fn batch_duplicate(&self) {
        self.batches
            .get_or_create(&ResultLabel {
                result: RESULT_DUPLICATE,
            })
            .inc();
    }

    /// One payload quarantined with a reason code of [`REASONS`] (anything else counts as
    /// `other`, so the label set stays fixed).
    pub fn batch_quarantined(&self, reason: &str) {
        let reason = REASONS
            .iter()
            .copied()
            .find(|r| *r == reason)
            .unwrap_or("other");
        self.batches
            .get_or_create(&ResultLabel {
                result: RESULT_QUARANTINED,
            })
            .inc();
        self.quarantined
            .get_or_create(&ReasonLabel { reason })
            .inc();
    }

    /// One chain anomaly ([`CHAIN_GAP`] or [`CHAIN_FORK`]).
    pub fn chain_event(&self, kind: &'static str) {
        self.chain_events.get_or_create(&KindLabel { kind }).inc();
    }

    /// One successful ingest transaction.
    pub fn commit(&self, seconds: f64, batches: usize) {
        self.commit_seconds.observe(seconds.max(0.0));
        self.commit_batches.observe(batches as f64);
    }

    /// One failed ingest or quarantine transaction.
    pub fn commit_failure(&self) {
        self.commit_failures.inc();
    }

    // --- MQTT ---

    /// The consumer connected (`true`) or lost its connection (`false`).
    pub fn mqtt_connected(&self, connected: bool) {
        self.mqtt_connected.set(i64::from(connected));
    }

    /// An established connection was lost.
    pub fn mqtt_reconnect(&self) {
        self.mqtt_reconnects.inc();
    }

    /// A status message that is not a JSON object.
    pub fn mqtt_status_invalid(&self) {
        self.mqtt_status_invalid.inc();
    }

    // --- MQTT guard (embedded broker) ---

    /// One client connection to the guard ended its login with `outcome` (one of
    /// [`GUARD_OUTCOMES`]; anything else is not counted, so the label set stays fixed).
    pub fn guard_connection(&self, outcome: &str) {
        if let Some(outcome) = GUARD_OUTCOMES.iter().copied().find(|o| *o == outcome) {
            self.guard_connections
                .get_or_create(&OutcomeLabel { outcome })
                .inc();
        }
    }

    /// One request refused by the guard's ACL (`action` one of [`GUARD_ACTIONS`]).
    pub fn guard_denied(&self, action: &str) {
        if let Some(action) = GUARD_ACTIONS.iter().copied().find(|a| *a == action) {
            self.guard_denied
                .get_or_create(&ActionLabel { action })
                .inc();
        }
    }
}

/// Sets `values` for `entity` in `family`, removes ids of `old` that are no longer present or
/// no longer finite; returns the ids now exported.
fn replace_set(
    family: &Family<IndicatorLabels, F64Gauge>,
    entity: &str,
    old: &BTreeSet<String>,
    values: &[(String, f64)],
) -> BTreeSet<String> {
    let mut now = BTreeSet::new();
    for (id, v) in values {
        if v.is_finite() {
            family
                .get_or_create(&IndicatorLabels {
                    indicator: id.clone(),
                    entity: entity.to_owned(),
                })
                .set(*v);
            now.insert(id.clone());
        }
    }
    for id in old.difference(&now) {
        family.remove(&IndicatorLabels {
            indicator: id.clone(),
            entity: entity.to_owned(),
        });
    }
    now
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line<'a>(text: &'a str, prefix: &str) -> Option<&'a str> {
        text.lines().find(|l| l.starts_with(prefix))
    }

    #[test]
    fn families_are_exported_with_fixed_labels_pre_registered() {
        let m = Metrics::new();
        let text = m.encode();
        assert!(text.ends_with("# EOF\n"), "{text}");
        for reason in REASONS {
            let l = format!("shopfloor_gateway_quarantined_total{{reason=\"{reason}\"}} 0");
            assert!(text.contains(&l), "missing {l}");
        }
        for result in ["stored", "duplicate", "quarantined"] {
            let l = format!("shopfloor_gateway_batches_total{{result=\"{result}\"}} 0");
            assert!(text.contains(&l), "missing {l}");
        }
        for kind in ["gap", "fork"] {
            let l = format!("shopfloor_gateway_chain_events_total{{kind=\"{kind}\"}} 0");
            assert!(text.contains(&l), "missing {l}");
        }
        for outcome in ["ok", "failed", "rate_limited"] {
            let l = format!("shopfloor_http_logins_total{{outcome=\"{outcome}\"}} 0");
            assert!(text.contains(&l), "missing {l}");
        }
        for outcome in GUARD_OUTCOMES {
            let l = format!("shopfloor_mqtt_guard_connections_total{{outcome=\"{outcome}\"}} 0");
            assert!(text.contains(&l), "missing {l}");
        }
        for action in GUARD_ACTIONS {
            let l = format!("shopfloor_mqtt_guard_denied_total{{action=\"{action}\"}} 0");
            assert!(text.contains(&l), "missing {l}");
        }
        for name in [
            "shopfloor_gateway_readings_total 0",
            "shopfloor_gateway_commit_failures_total 0",
            "shopfloor_gateway_mqtt_connected 0",
            "shopfloor_gateway_mqtt_reconnects_total 0",
            "shopfloor_gateway_rollup_pending 0",
            "shopfloor_gateway_rollup_buckets_total 0",
            "shopfloor_gateway_ingest_lag_seconds_count 0",
            "shopfloor_gateway_commit_seconds_count 0",
            "shopfloor_gateway_commit_batches_count 0",
        ] {
            assert!(text.contains(name), "missing {name}");
        }
    }

    #[test]
    fn counters_count() {
        let m = Metrics::new();
        m.batch_stored(7, 2.5);
        m.batch_stored(3, -1.0);
        m.batch_duplicate();
        m.batch_quarantined("bad_signature");
        m.batch_quarantined("no such reason");
        m.chain_event(CHAIN_GAP);
        m.commit(0.01, 2);
        m.commit_failure();
        m.db_latency("ingest", 0.002);
        m.mqtt_connected(true);
        m.mqtt_reconnect();
        m.rollup_progress(4, 9);
        m.http_request("/api/v1/entities", 200);
        m.login(LOGIN_OK);
        m.login(LOGIN_RATE_LIMITED);
        m.login("something else");
        let t = m.encode();
        for l in [
            "shopfloor_gateway_batches_total{result=\"stored\"} 2",
            "shopfloor_gateway_batches_total{result=\"duplicate\"} 1",
            "shopfloor_gateway_batches_total{result=\"quarantined\"} 2",
            "shopfloor_gateway_readings_total 10",
            "shopfloor_gateway_quarantined_total{reason=\"bad_signature\"} 1",
            "shopfloor_gateway_quarantined_total{reason=\"other\"} 1",
            "shopfloor_gateway_chain_events_total{kind=\"gap\"} 1",
            "shopfloor_gateway_ingest_lag_seconds_count 2",
            "shopfloor_gateway_commit_batches_count 1",
            "shopfloor_gateway_commit_failures_total 1",
            "shopfloor_gateway_db_latency_seconds_count{op=\"ingest\"} 1",
            "shopfloor_gateway_mqtt_connected 1",
            "shopfloor_gateway_mqtt_reconnects_total 1",
            "shopfloor_gateway_rollup_pending 4",
            "shopfloor_gateway_rollup_buckets_total 9",
            "shopfloor_gateway_http_requests_total{route=\"/api/v1/entities\",status=\"200\"} 1",
            "shopfloor_http_logins_total{outcome=\"ok\"} 1",
            "shopfloor_http_logins_total{outcome=\"failed\"} 1",
            "shopfloor_http_logins_total{outcome=\"rate_limited\"} 1",
        ] {
            assert!(t.contains(l), "missing {l} in\n{t}");
        }
        // The negative lag was observed as 0 (first bucket).
        assert!(
            line(
                &t,
                "shopfloor_gateway_ingest_lag_seconds_bucket{le=\"0.1\"}"
            )
            .is_some_and(|l| l.ends_with(" 1")),
            "{t}"
        );
    }

    #[test]
    fn indicator_sets_are_replaced_and_retained() {
        let m = Metrics::new();
        let v = |id: &str, x: f64| (id.to_owned(), x);
        m.set_indicators("p1/e1", &[v("oee", 0.8), v("nee", 1.5)], &[v("oee", 0.85)]);
        m.set_indicators("p1/e2", &[v("oee", 0.7)], &[]);
        let t = m.encode();
        assert!(t.contains("shopfloor_indicator{indicator=\"oee\",entity=\"p1/e1\"} 0.8"));
        assert!(t.contains("shopfloor_indicator{indicator=\"nee\",entity=\"p1/e1\"} 1.5"));
        assert!(t.contains("shopfloor_indicator_target{indicator=\"oee\",entity=\"p1/e1\"} 0.85"));
        assert!(t.contains("shopfloor_indicator{indicator=\"oee\",entity=\"p1/e2\"} 0.7"));

        // nee became null, the target went away, a NaN is not exported.
        m.set_indicators("p1/e1", &[v("oee", 0.9), v("x", f64::NAN)], &[]);
        let t = m.encode();
        assert!(t.contains("shopfloor_indicator{indicator=\"oee\",entity=\"p1/e1\"} 0.9"));
        assert!(!t.contains("indicator=\"nee\""), "{t}");
        assert!(!t.contains("indicator=\"x\""), "{t}");
        assert!(!t.contains("shopfloor_indicator_target{"), "{t}");

        m.retain_indicator_entities(&BTreeSet::from(["p1/e2".to_owned()]));
        let t = m.encode();
        assert!(!t.contains("entity=\"p1/e1\""), "{t}");
        assert!(t.contains("shopfloor_indicator{indicator=\"oee\",entity=\"p1/e2\"} 0.7"));
    }
}
