//! Delivery promises of the gateway (DESIGN.md §4, §7) with synthetic agents:
//! - two replicas on one PostgreSQL behind a Mosquitto shared subscription store every batch
//!   exactly once;
//! - a gateway SIGKILLed during ingest and restarted loses nothing and doubles nothing (SQLite
//!   and PostgreSQL, external Mosquitto: its persistent session keeps unacknowledged batches);
//! - late data (a batch delivered after newer ones) recomputes the roll-ups of the minute and
//!   hour it falls in, and nothing else.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::*;
use serde_json::{Value, json};
use shopfloor_store::Store;

const CNC: &str = "p1/e1/w1/l1/cnc-01";
const METER: &str = "p1/e1/w1/m-01";
const SAMPLES_PER_BATCH: usize = 5;

/// Batch `i` (0-based) of a synthetic agent: a one-second window starting at `base + i s`,
/// five spindle samples, the CNC producing for the whole second, one part counted, one meter
/// reading.
fn contents(base: i64, i: i64) -> Value {
    let from = base + i * 1000;
    let to = from + 1000;
    let samples: Vec<Value> = (0..SAMPLES_PER_BATCH as i64)
        .map(|k| json!({"t": from + 1 + k * 200, "v": 1000.0 + (i + k) as f64}))
        .collect();
    json!({
        "from": from, "to": to,
        "devices": [
            {"id": CNC, "template": "cnc-modbus-generic",
             "samples": [{"point": "spindle_speed", "samples": samples}],
             "states": [{"from": from, "to": to, "state": "producing"}],
             "counters": [{"role": "produced", "point": "part_count", "width_bits": 32,
                           "readings": [{"t": to, "v": (i + 1) as f64}]}]},
            {"id": METER, "template": "eastron-sdm630",
             "counters": [{"role": "electricity", "point": "energy_import_kwh",
                           "readings": [{"t": to, "v": 1000.0 + i as f64 * 0.5}]}]}
        ]
    })
}

async fn wait_stored(db: &shopfloor_gateway::db::Db, n: i64, limit: Duration) {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let heads = db.agent_heads().await.unwrap();
        let stored = heads
            .iter()
            .find(|h| h.agent == AGENT)
            .map_or(0, |h| h.batches);
        if stored >= n {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "only {stored} of {n} batches stored"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Every batch 1..=n stored once, no gap, no doubled sample.
async fn assert_exactly_once(db: &shopfloor_gateway::db::Db, n: i64, base: i64) {
    let heads = db.agent_heads().await.unwrap();
    let h = heads.iter().find(|h| h.agent == AGENT).unwrap();
    assert_eq!(
        (h.batches, h.first_seq, h.last_seq, h.missing),
        (n, 1, n, 0),
        "{h:?}"
    );
    let samples = db
        .samples(
            CNC,
            "spindle_speed",
            base,
            base + n * 1000 + 1000,
            1_000_000,
        )
        .await
        .unwrap();
    assert_eq!(
        samples.len(),
        n as usize * SAMPLES_PER_BATCH,
        "samples stored exactly once"
    );
}

fn metric(text: &str, name_and_labels: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(name_and_labels))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_replicas_on_a_shared_subscription_store_every_batch_once() {
    let test = "two_replicas_on_a_shared_subscription_store_every_batch_once";
    let Some(port) = mosquitto(test) else { return };
    let Some(store) = TestStore::postgres(test).await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let prefix = unique("replicas");
    let mut signer = Signer::new(AGENT, new_key());
    let registry = write_registry(dir.path(), &signer.public_key());
    let broker = Broker::External {
        port,
        group: unique("sf"),
    };
    let a = start_gateway(&write_config(
        dir.path(),
        "gw-a",
        &store.url,
        &broker,
        &prefix,
        &registry,
    ))
    .await;
    let b = start_gateway(&write_config(
        dir.path(),
        "gw-b",
        &store.url,
        &broker,
        &prefix,
        &registry,
    ))
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await; // both subscribed

    let n = 400;
    let base = minute(now_ms()) - 3_600_000;
    let payloads: Vec<Vec<u8>> = (0..n).map(|i| signer.next(contents(base, i))).collect();
    publish_all(port, &prefix, AGENT, payloads).await;
    wait_stored(&a.db, n, Duration::from_secs(120)).await;
    assert_exactly_once(&a.db, n, base).await;

    let stored_a = metric(
        &a.metrics.encode(),
        "shopfloor_gateway_batches_total{result=\"stored\"}",
    );
    let stored_b = metric(
        &b.metrics.encode(),
        "shopfloor_gateway_batches_total{result=\"stored\"}",
    );
    eprintln!("replica a stored {stored_a}, replica b stored {stored_b}");
    assert_eq!(
        stored_a + stored_b,
        n as f64,
        "each batch stored by exactly one replica"
    );
    assert!(
        stored_a > 0.0 && stored_b > 0.0,
        "the shared subscription split the load"
    );
    a.stop().await;
    b.stop().await;
    store.cleanup().await;
}

/// A child process killed when dropped, so a failing test leaves no gateway behind.
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs the gateway binary, SIGKILLs it while a publisher is sending, restarts it. The broker
/// is a private Mosquitto with persistence and an unbounded session queue, as deploy/
/// configures it: the shared one keeps Mosquitto's default of at most 1,000 queued messages per
/// offline session and drops the rest, which no gateway can undo.
async fn sigkill_during_ingest(store: TestStore, _shared_port: u16) {
    let broker = agent::Mosquitto::start(free_port(), true).expect("the mosquitto binary");
    let port = broker.port;
    let dir = tempfile::tempdir().unwrap();
    let prefix = unique("kill");
    let mut signer = Signer::new(AGENT, new_key());
    let registry = write_registry(dir.path(), &signer.public_key());
    let broker = Broker::External {
        port,
        group: unique("sf"),
    };
    let config = write_config(dir.path(), "gw-k", &store.url, &broker, &prefix, &registry);
    let spawn = || {
        std::process::Command::new(env!("CARGO_BIN_EXE_shopfloor-gateway"))
            .args(["run", "--config"])
            .arg(&config)
            .env("RUST_LOG", "warn")
            .spawn()
            .map(Child)
            .unwrap()
    };
    let mut child = spawn();
    let db = {
        let mut tries = 0;
        loop {
            // The gateway creates and migrates the store; open it once it exists.
            match shopfloor_gateway::db::Db::open(&store.url, Some(2)).await {
                Ok(db) if db.ping().await.is_ok() => break db,
                _ if tries < 100 => {
                    tries += 1;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => panic!("store: {e}"),
                Ok(_) => panic!("store does not answer"),
            }
        }
    };
    tokio::time::sleep(Duration::from_secs(1)).await; // subscribed

    let n = 1500;
    let base = minute(now_ms()) - 7_200_000;
    let payloads: Vec<Vec<u8>> = (0..n).map(|i| signer.next(contents(base, i))).collect();
    let publisher = tokio::spawn({
        let prefix = prefix.clone();
        async move { publish_all(port, &prefix, AGENT, payloads).await }
    });
    wait_stored(&db, 200, Duration::from_secs(120)).await;
    child.0.kill().unwrap(); // SIGKILL
    child.0.wait().unwrap();
    let at_kill = db.agent_heads().await.unwrap()[0].batches;
    eprintln!("killed the gateway with {at_kill} of {n} batches stored");
    assert!(at_kill < n, "the kill happened during ingest");
    let _child = spawn();
    publisher.await.unwrap();
    wait_stored(&db, n, Duration::from_secs(180)).await;
    assert_exactly_once(&db, n, base).await;
    drop(_child);
    store.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigkill_during_ingest_sqlite() {
    let Some(port) = mosquitto("sigkill_during_ingest_sqlite") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    sigkill_during_ingest(TestStore::sqlite(dir.path()).await, port).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigkill_during_ingest_postgres() {
    let test = "sigkill_during_ingest_postgres";
    let Some(port) = mosquitto(test) else { return };
    let Some(store) = TestStore::postgres(test).await else {
        return;
    };
    sigkill_during_ingest(store, port).await;
}

/// APT of `entity` over `[from, to)` through the API.
fn apt(
    gw: &shopfloor_gateway::run::Running,
    token: &str,
    entity: &str,
    from: i64,
    to: i64,
) -> Option<f64> {
    let v = get_json(
        gw.http,
        &format!(
            "/api/v1/indicators?entity={entity}&from={}&to={}",
            rfc3339(from),
            rfc3339(to)
        ),
        token,
    );
    v["indicators"]["actual_production_time_s"]["value"].as_f64()
}

async fn late_data(store: TestStore, broker: Broker) {
    let dir = tempfile::tempdir().unwrap();
    let prefix = unique("late");
    let mut signer = Signer::new(AGENT, new_key());
    let registry = write_registry(dir.path(), &signer.public_key());
    let gw = start_gateway(&write_config(
        dir.path(),
        "gw-l",
        &store.url,
        &broker,
        &prefix,
        &registry,
    ))
    .await;
    let viewer = token(&gw.db, "viewer").await;
    let hour = {
        let now = now_ms();
        now - now.rem_euclid(3_600_000) - 2 * 3_600_000
    };
    // Minutes 0, 1 and 2 of the hour, producing for the first 30 s of each. Batch 2 arrives
    // last, as from an agent whose outbox delivered it late.
    let batch = |from: i64| {
        json!({"from": from, "to": from + 60_000, "devices": [
            {"id": CNC, "template": "cnc-modbus-generic",
             "states": [{"from": from, "to": from + 30_000, "state": "producing"},
                        {"from": from + 30_000, "to": from + 60_000, "state": "idle"}]}]})
    };
    let p1 = signer.next(batch(hour));
    let p2 = signer.next(batch(hour + 60_000));
    let p3 = signer.next(batch(hour + 120_000));
    publish_all(broker.port(), &prefix, AGENT, vec![p1, p3]).await;
    let hour_end = hour + 3_600_000;
    let two_hours = hour - 3_600_000;
    wait_until(
        Duration::from_secs(30),
        "the hour rolled up without batch 2",
        || apt(&gw, &viewer, CNC, hour, hour_end) == Some(60.0),
    )
    .await;
    assert_eq!(
        apt(&gw, &viewer, CNC, hour + 60_000, hour + 120_000),
        Some(0.0)
    );
    let heads = gw.db.agent_heads().await.unwrap();
    assert_eq!(heads[0].missing, 1, "the gap is visible: {heads:?}");

    publish_all(broker.port(), &prefix, AGENT, vec![p2]).await;
    wait_until(Duration::from_secs(30), "the late batch rolled up", || {
        apt(&gw, &viewer, CNC, hour, hour_end) == Some(90.0)
    })
    .await;
    // Its minute, the hour and a window over two hours (hour buckets) all see it; the
    // neighbouring minutes are unchanged.
    assert_eq!(
        apt(&gw, &viewer, CNC, hour + 60_000, hour + 120_000),
        Some(30.0)
    );
    assert_eq!(apt(&gw, &viewer, CNC, two_hours, hour_end), Some(90.0));
    assert_eq!(apt(&gw, &viewer, CNC, hour, hour + 60_000), Some(30.0));
    assert_eq!(
        apt(&gw, &viewer, CNC, hour + 120_000, hour + 180_000),
        Some(30.0)
    );
    let heads = gw.db.agent_heads().await.unwrap();
    assert_eq!(heads[0].missing, 0, "the gap is filled: {heads:?}");
    gw.stop().await;
    store.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn late_data_recomputes_rollups_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    late_data(
        TestStore::sqlite(dir.path()).await,
        Broker::Embedded(free_port()),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn late_data_recomputes_rollups_postgres() {
    let test = "late_data_recomputes_rollups_postgres";
    let Some(port) = mosquitto(test) else { return };
    let Some(store) = TestStore::postgres(test).await else {
        return;
    };
    late_data(
        store,
        Broker::External {
            port,
            group: unique("sf"),
        },
    )
    .await;
}
