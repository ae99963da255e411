//! (being written: ingest helper) Gateway metrics. Agreed interface below; bodies to come.

use std::collections::BTreeSet;

/// The gateway's Prometheus registry (OpenMetrics text at `/metrics`).
#[derive(Debug, Default)]
pub struct Metrics {}

impl Metrics {
    pub fn new() -> Metrics {
        Metrics {}
    }
    /// OpenMetrics text of every family.
    pub fn encode(&self) -> String {
        String::new()
    }
    /// Replaces the indicator gauges of `entity`: `shopfloor_indicator{indicator,entity}` for
    /// each value (ids whose value is null are removed) and `shopfloor_indicator_target` for
    /// each target value.
    pub fn set_indicators(&self, entity: &str, values: &[(String, f64)], targets: &[(String, f64)]) {
        let _ = (entity, values, targets);
    }
    /// Removes the indicator gauges of every entity not in `keep`.
    pub fn retain_indicator_entities(&self, keep: &BTreeSet<String>) {
        let _ = keep;
    }
    /// Counts one HTTP request by route template and status code.
    pub fn http_request(&self, route: &str, status: u16) {
        let _ = (route, status);
    }
    /// Observes the latency of one database operation (`ingest`, `query`, `rollup`, …).
    pub fn db_latency(&self, op: &str, seconds: f64) {
        let _ = (op, seconds);
    }
    /// Roll-up worker: dirty ranges waiting, and buckets recomputed.
    pub fn rollup_progress(&self, pending: i64, recomputed: u64) {
        let _ = (pending, recomputed);
    }
}
