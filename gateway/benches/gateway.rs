//! Gateway benchmarks (docs/BENCHMARKS.md, "Gateway"). Run:
//!
//! ```text
//! SHOPFLOOR_TEST_POSTGRES_URL=postgres://postgres@127.0.0.1:5432/test \
//! SHOPFLOOR_TEST_MQTT_URL=mqtt://127.0.0.1:1883 \
//!   cargo bench -p shopfloor-gateway --bench gateway [-- ingest|latency|api]
//! ```
//!
//! - `ingest`: A synthetic agents publish pre-signed batches through Mosquitto as fast as the
//!   broker acknowledges them; a gateway (in this process) verifies, decodes and commits them.
//!   Sustained rate = stored readings / time from the first publish to the last commit, for
//!   SQLite and PostgreSQL. Baseline in the same process: a subscriber that only counts the
//!   same messages (the broker and publishers' ceiling).
//! - `latency`: the same path at a fixed offered load; per batch, the time from publish until
//!   the batch is visible in the store (polled every 2 ms): p50, p99.
//! - `api`: a park of 20 enterprises × 50 machines with a year of roll-ups (hour, day and month
//!   buckets), then `GET /api/v1/indicators` for the park, one enterprise and one machine over
//!   the year, p50/p95 over repeated requests; baseline: the engine alone (`calc`'s work) on
//!   the park's exported evidence.
#![allow(clippy::unwrap_used, clippy::expect_used, unreachable_pub, dead_code)]

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::{Value, json};
use shopfloor_store::Store;

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

/// One agent's batch `i`: `devices` CNCs with `samples` spindle samples each, a state
/// interval, a part counter reading; readings = devices × (samples + 2).
fn contents(agent: usize, base: i64, i: i64, devices: usize, samples: usize) -> Value {
    let from = base + i * 1000;
    let to = from + 1000;
    let devs: Vec<Value> = (0..devices)
        .map(|d| {
            let s: Vec<Value> = (0..samples)
                .map(|k| json!({"t": from + 1 + k as i64 * (999 / samples as i64).max(1), "v": (k + d) as f64 * 1.5}))
                .collect();
            json!({"id": format!("p1/e1/w1/a{agent:03}/m{d:02}"), "template": "cnc-modbus-generic",
                   "samples": [{"point": "spindle_speed", "samples": s}],
                   "states": [{"from": from, "to": to, "state": "producing"}],
                   "counters": [{"role": "produced", "point": "part_count", "width_bits": 32,
                                 "readings": [{"t": to, "v": (i + 1) as f64}]}]})
        })
        .collect();
    json!({"from": from, "to": to, "devices": devs})
}

struct Load {
    agents: usize,
    batches: usize,
    devices: usize,
    samples: usize,
}

impl Load {
    fn readings_per_batch(&self) -> usize {
        self.devices * (self.samples + 2)
    }
}

/// Registry with `agents` agents, each allowed `p1/e1/w1/aNNN`.
fn registry(dir: &std::path::Path, signers: &[Signer]) -> std::path::PathBuf {
    let reg = dir.join("registry");
    std::fs::create_dir_all(&reg).unwrap();
    let mut e = String::from(
        "[[entity]]\nid = \"p1\"\nkind = \"park\"\n[[entity]]\nid = \"p1/e1\"\nkind = \"enterprise\"\n[[entity]]\nid = \"p1/e1/w1\"\nkind = \"workshop\"\n",
    );
    let mut a = String::new();
    for (i, s) in signers.iter().enumerate() {
        e.push_str(&format!(
            "[[entity]]\nid = \"p1/e1/w1/a{i:03}\"\nkind = \"line\"\n"
        ));
        a.push_str(&format!(
            "[[agent]]\nid = \"{}\"\npublic_key = \"{}\"\nscope = [\"p1/e1/w1/a{i:03}\"]\n",
            s.agent,
            s.public_key()
        ));
    }
    std::fs::write(reg.join("entities.toml"), e).unwrap();
    std::fs::write(reg.join("agents.toml"), a).unwrap();
    std::fs::write(reg.join("products.toml"), "").unwrap();
    reg
}

async fn stored(db: &shopfloor_gateway::db::Db) -> i64 {
    db.agent_heads()
        .await
        .unwrap()
        .iter()
        .map(|h| h.batches)
        .sum()
}

/// Publishes every agent's payloads concurrently (one client per agent).
async fn publish(port: u16, prefix: &str, per_agent: PerAgent) {
    let tasks: Vec<_> = per_agent
        .into_iter()
        .map(|(agent, payloads)| {
            let prefix = prefix.to_owned();
            tokio::spawn(async move { publish_all(port, &prefix, &agent, payloads).await })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
}

/// Counts messages on `<prefix>/+/batch` without storing them: the broker's ceiling.
async fn baseline(port: u16, load: &Load) -> f64 {
    use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
    let prefix = unique("bench-base");
    let mut opts = MqttOptions::new(unique("count"), "127.0.0.1", port);
    opts.set_max_packet_size(16 << 20, 16 << 20);
    let (client, mut el) = AsyncClient::new(opts, 64);
    client
        .subscribe(format!("{prefix}/+/batch"), QoS::AtLeastOnce)
        .await
        .unwrap();
    loop {
        if let Ok(Event::Incoming(Packet::SubAck(_))) = el.poll().await {
            break;
        }
    }
    let total = load.agents * load.batches;
    let per_agent = make_payloads(load, 0).1;
    let t0 = Instant::now();
    let publisher = tokio::spawn({
        let prefix = prefix.clone();
        async move { publish(port, &prefix, per_agent).await }
    });
    let mut got = 0;
    while got < total {
        if let Ok(Event::Incoming(Packet::Publish(_))) = el.poll().await {
            got += 1;
        }
    }
    let secs = t0.elapsed().as_secs_f64();
    publisher.await.unwrap();
    (total * load.readings_per_batch()) as f64 / secs
}

/// Each agent's id and its signed payloads, in seq order.
type PerAgent = Vec<(String, Vec<Vec<u8>>)>;

fn make_payloads(load: &Load, offset_h: i64) -> (Vec<Signer>, PerAgent) {
    let base = minute(now_ms()) - 3_600_000 * (offset_h + 1);
    let mut signers: Vec<Signer> = (0..load.agents)
        .map(|i| Signer::new(&format!("bench-{i:03}"), new_key()))
        .collect();
    let per_agent = signers
        .iter_mut()
        .enumerate()
        .map(|(i, s)| {
            let p = (0..load.batches as i64)
                .map(|b| s.next(contents(i, base, b, load.devices, load.samples)))
                .collect();
            (s.agent.clone(), p)
        })
        .collect();
    (signers, per_agent)
}

async fn ingest(backend: &str, store_url: &str, port: u16, load: &Load) -> (f64, f64) {
    let dir = tempfile::tempdir().unwrap();
    let prefix = unique("bench");
    let (signers, per_agent) = make_payloads(load, 2);
    let reg = registry(dir.path(), &signers);
    let broker = Broker::External {
        port,
        group: String::new(),
    };
    let gw = start_gateway(&write_config(
        dir.path(),
        "gw-bench",
        store_url,
        &broker,
        &prefix,
        &reg,
    ))
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let total = (load.agents * load.batches) as i64;
    let t0 = Instant::now();
    let publisher = tokio::spawn({
        let prefix = prefix.clone();
        async move { publish(port, &prefix, per_agent).await }
    });
    while stored(&gw.db).await < total {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let secs = t0.elapsed().as_secs_f64();
    publisher.await.unwrap();
    let rate = (total as usize * load.readings_per_batch()) as f64 / secs;
    eprintln!("  {backend}: {total} batches in {secs:.2} s");
    gw.stop().await;
    (rate, secs)
}

async fn latency(
    store_url: &str,
    port: u16,
    agents: usize,
    per_second: usize,
    seconds: usize,
) -> (f64, f64) {
    let dir = tempfile::tempdir().unwrap();
    let prefix = unique("bench-lat");
    let load = Load {
        agents,
        batches: per_second * seconds / agents,
        devices: 10,
        samples: 20,
    };
    let (signers, per_agent) = make_payloads(&load, 4);
    let reg = registry(dir.path(), &signers);
    let broker = Broker::External {
        port,
        group: String::new(),
    };
    let gw = start_gateway(&write_config(
        dir.path(),
        "gw-lat",
        store_url,
        &broker,
        &prefix,
        &reg,
    ))
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    use rumqttc::{AsyncClient, MqttOptions, QoS};
    let mut opts = MqttOptions::new(unique("latpub"), "127.0.0.1", port);
    opts.set_max_packet_size(16 << 20, 16 << 20);
    opts.set_inflight(1000);
    let (client, mut el) = AsyncClient::new(opts, 10_000);
    tokio::spawn(async move { while el.poll().await.is_ok() {} });
    // Interleave the agents' batches in time order, at the offered rate.
    let mut queue: Vec<(String, usize, Vec<u8>)> = Vec::new();
    for (agent, ps) in per_agent {
        for (i, p) in ps.into_iter().enumerate() {
            queue.push((agent.clone(), i, p));
        }
    }
    queue.sort_by_key(|(a, i, _)| (*i, a.clone()));
    let interval = Duration::from_secs_f64(1.0 / per_second as f64);
    let sent: std::sync::Arc<std::sync::Mutex<Vec<(String, i64, Instant)>>> = Default::default();
    let sender = {
        let sent = sent.clone();
        tokio::spawn(async move {
            let start = Instant::now();
            for (k, (agent, i, p)) in queue.into_iter().enumerate() {
                let due = start + interval * k as u32;
                tokio::time::sleep_until(due.into()).await;
                sent.lock()
                    .unwrap()
                    .push((agent.clone(), i as i64 + 1, Instant::now()));
                client
                    .publish(
                        format!("{prefix}/{agent}/batch"),
                        QoS::AtLeastOnce,
                        false,
                        p,
                    )
                    .await
                    .unwrap();
            }
        })
    };
    // Poll the heads; a batch is visible when its agent's last seq reaches it.
    let total = (load.agents * load.batches) as i64;
    let mut seen: std::collections::HashMap<String, i64> = Default::default();
    let mut lat = Vec::new();
    while seen.values().sum::<i64>() < total {
        let now = Instant::now();
        for h in gw.db.agent_heads().await.unwrap() {
            let before = seen.insert(h.agent.clone(), h.last_seq).unwrap_or(0);
            if h.last_seq > before {
                for (agent, seq, at) in sent.lock().unwrap().iter() {
                    if *agent == h.agent && *seq > before && *seq <= h.last_seq {
                        lat.push(now.duration_since(*at).as_secs_f64() * 1000.0);
                    }
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    sender.await.unwrap();
    gw.stop().await;
    lat.sort_by(f64::total_cmp);
    (pct(&lat, 0.5), pct(&lat, 0.99))
}

const ENTERPRISES: usize = 20;
const MACHINES: usize = 50;

/// A year of hour, day and month buckets for every machine of the park (months at local
/// midnight, UTC+8), with the same columns the roll-up worker writes. Generated in SQL (one
/// statement per table and enterprise): 27 million rows through `Store::apply_rollups`, one
/// statement per row on SQLite, would take far longer than the measurement.
async fn populate_park(store_url: &str, year_from: i64) {
    let mut buckets = Vec::new();
    for h in 0..8760_i64 {
        buckets.push(("hour", year_from + h * 3_600_000, 3_600_000_i64));
    }
    for d in 0..365_i64 {
        buckets.push(("day", year_from + d * 86_400_000, 86_400_000));
    }
    let mut b = year_from;
    for d in [31_i64, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31] {
        buckets.push(("month", b, d * 86_400_000));
        b += d * 86_400_000;
    }
    let values: Vec<String> = buckets
        .iter()
        .map(|(g, b, l)| format!("('{g}',{b},{l})"))
        .collect();
    let values = values.join(",");
    let tables = [
        "INSERT INTO rollup_states
             (device, gran, bucket, producing, setup, delay, idle, planned_down, offline)
         SELECT d.device, b.gran, b.bucket, b.len * 7 / 10, b.len / 20, b.len / 20, b.len / 10,
                b.len / 20, 0
         FROM d CROSS JOIN b",
        "INSERT INTO rollup_counters
             (device, role, gran, bucket, delta, first_t, last_t, readings, wraps, resets)
         SELECT d.device, 'produced', b.gran, b.bucket, CAST(b.len / 40000 AS DOUBLE PRECISION),
                b.bucket + 1000, b.bucket + b.len - 1000, b.len / 60000, 0, 0
         FROM d CROSS JOIN b",
        "INSERT INTO rollup_activity (device, gran, bucket, samples, points)
         SELECT d.device, b.gran, b.bucket, 60, 5 FROM d CROSS JOIN b",
    ];
    let statements: Vec<String> = (0..ENTERPRISES)
        .flat_map(|e| {
            let devices: Vec<String> = (0..MACHINES)
                .map(|m| format!("('p1/e{e:02}/w1/l1/m{m:02}')"))
                .collect();
            let with = format!(
                "WITH b(gran, bucket, len) AS (VALUES {values}), d(device) AS (VALUES {})\n",
                devices.join(",")
            );
            tables.iter().map(move |t| format!("{with}{t}"))
        })
        .collect();
    if let Some(path) = store_url.strip_prefix("sqlite://") {
        use sqlx::Connection;
        let mut c = sqlx::SqliteConnection::connect(&format!("sqlite://{path}"))
            .await
            .unwrap();
        for s in &statements {
            sqlx::raw_sql(sqlx::AssertSqlSafe(s.clone()))
                .execute(&mut c)
                .await
                .unwrap();
        }
        c.close().await.unwrap();
    } else {
        use sqlx::Connection;
        let mut c = sqlx::PgConnection::connect(store_url).await.unwrap();
        for s in &statements {
            sqlx::raw_sql(sqlx::AssertSqlSafe(s.clone()))
                .execute(&mut c)
                .await
                .unwrap();
        }
        sqlx::raw_sql("ANALYZE").execute(&mut c).await.unwrap();
        c.close().await.unwrap();
    }
}

fn park_registry(dir: &std::path::Path) -> std::path::PathBuf {
    let reg = dir.join("registry");
    std::fs::create_dir_all(&reg).unwrap();
    let mut e = String::from("[[entity]]\nid = \"p1\"\nkind = \"park\"\n");
    for en in 0..ENTERPRISES {
        e.push_str(&format!(
            "[[entity]]\nid = \"p1/e{en:02}\"\nkind = \"enterprise\"\n[[entity]]\nid = \"p1/e{en:02}/w1\"\nkind = \"workshop\"\n[[entity]]\nid = \"p1/e{en:02}/w1/l1\"\nkind = \"line\"\n"
        ));
        for m in 0..MACHINES {
            e.push_str(&format!(
                "[[entity]]\nid = \"p1/e{en:02}/w1/l1/m{m:02}\"\nkind = \"equipment\"\nequipment_kind = \"cnc\"\ncontrol = \"cnc\"\nkey_process = \"machining\"\nproduct = \"part\"\n"
            ));
        }
    }
    std::fs::write(reg.join("entities.toml"), e).unwrap();
    std::fs::write(reg.join("agents.toml"), "").unwrap();
    std::fs::write(
        reg.join("products.toml"),
        "[[product]]\nid = \"part\"\nideal_cycle_s = 30.0\nvalue_added_per_unit_cny = 10.0\n",
    )
    .unwrap();
    reg
}

async fn api(backend: &str, store_url: &str) -> Vec<(String, f64, f64)> {
    let dir = tempfile::tempdir().unwrap();
    let reg = park_registry(dir.path());
    let broker = Broker::Embedded(free_port());
    let gw = start_gateway(&write_config(
        dir.path(),
        "gw-api",
        store_url,
        &broker,
        &unique("api"),
        &reg,
    ))
    .await;
    let token = token(&gw.db, "auditor").await;
    // 2025-01-01T00:00:00+08:00
    let year_from = 1_735_660_800_000_i64;
    let year_to = year_from + 365 * 86_400_000;
    let t0 = Instant::now();
    populate_park(store_url, year_from).await;
    eprintln!(
        "  {backend}: populated a park-year of roll-ups in {:.1} s",
        t0.elapsed().as_secs_f64()
    );
    let mut out = Vec::new();
    let year = ("2025-01-01T00:00:00%2B08:00", "2026-01-01T00:00:00%2B08:00");
    // Not month-aligned: the evidence tiles hours, days and months.
    let ragged = ("2025-01-01T09:00:00%2B08:00", "2025-12-31T17:00:00%2B08:00");
    for (label, entity, (from, to)) in [
        ("park year", "p1", year),
        ("park year, hour-aligned ends", "p1", ragged),
        ("enterprise year", "p1/e07", year),
        ("machine year", "p1/e07/w1/l1/m13", year),
    ] {
        let path = format!("/api/v1/indicators?entity={entity}&from={from}&to={to}");
        let mut times = Vec::new();
        for k in 0..22 {
            let t = Instant::now();
            let (status, body) = http(gw.http, "GET", &path, Some(&token), b"");
            let ms = t.elapsed().as_secs_f64() * 1000.0;
            assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
            if k >= 2 {
                times.push(ms); // the first two warm caches
            }
        }
        times.sort_by(f64::total_cmp);
        out.push((label.to_owned(), pct(&times, 0.5), pct(&times, 0.95)));
    }
    // Baseline: the engine alone on the park's evidence.
    let (status, evidence) = http(
        gw.http,
        "GET",
        "/api/v1/evidence?entity=p1&from=2025-01-01T00:00:00%2B08:00&to=2026-01-01T00:00:00%2B08:00",
        Some(&token),
        b"",
    );
    assert_eq!(status, 200);
    let text = String::from_utf8(evidence).unwrap();
    let mut times = Vec::new();
    for _ in 0..20 {
        let t = Instant::now();
        let r = shopfloor_core::calc(&text).unwrap();
        times.push(t.elapsed().as_secs_f64() * 1000.0);
        assert!(r.indicators.contains_key("oee"));
    }
    times.sort_by(f64::total_cmp);
    out.push((
        "engine only (park year)".into(),
        pct(&times, 0.5),
        pct(&times, 0.95),
    ));
    let _ = year_to;
    gw.stop().await;
    out
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let what = std::env::args()
        .nth(1)
        .filter(|a| !a.starts_with('-'))
        .unwrap_or_else(|| "all".into());
    let pg = env("SHOPFLOOR_TEST_POSTGRES_URL");
    let mqtt = env("SHOPFLOOR_TEST_MQTT_URL").map(|_| mosquitto("bench").unwrap_or(1883));
    let mut report = serde_json::Map::new();
    if matches!(what.as_str(), "all" | "ingest") {
        let Some(port) = mqtt else {
            eprintln!("ingest needs SHOPFLOOR_TEST_MQTT_URL");
            return;
        };
        let load = Load {
            agents: 20,
            batches: 50,
            devices: 10,
            samples: 20,
        };
        println!(
            "== ingest: {} agents × {} batches × {} readings",
            load.agents,
            load.batches,
            load.readings_per_batch()
        );
        let base = baseline(port, &load).await;
        println!("baseline (broker only, no storage): {base:.0} readings/s");
        report.insert("ingest_baseline_readings_per_s".into(), json!(base));
        let dir = tempfile::tempdir().unwrap();
        let sqlite_url = format!("sqlite://{}", dir.path().join("bench.db").display());
        let (r, _) = ingest("sqlite", &sqlite_url, port, &load).await;
        println!("sqlite: {r:.0} readings/s ({:.2}× baseline)", r / base);
        report.insert("ingest_sqlite_readings_per_s".into(), json!(r));
        if let Some(pg) = &pg {
            let scratch = shopfloor_store_pg::scratch::ScratchDb::create(pg, "sf_bench")
                .await
                .unwrap();
            let (r, _) = ingest("postgres", scratch.url(), port, &load).await;
            println!("postgres: {r:.0} readings/s ({:.2}× baseline)", r / base);
            report.insert("ingest_postgres_readings_per_s".into(), json!(r));
            scratch.drop_db().await.unwrap();
        }
    }
    if matches!(what.as_str(), "all" | "latency") {
        let Some(port) = mqtt else { return };
        println!("== latency: 50 agents, 100 batches/s offered (220 readings each), 20 s");
        let dir = tempfile::tempdir().unwrap();
        let sqlite_url = format!("sqlite://{}", dir.path().join("lat.db").display());
        let (p50, p99) = latency(&sqlite_url, port, 50, 100, 20).await;
        println!("sqlite: publish → stored p50 {p50:.1} ms, p99 {p99:.1} ms");
        report.insert("latency_sqlite_ms".into(), json!({"p50": p50, "p99": p99}));
        if let Some(pg) = &pg {
            let scratch = shopfloor_store_pg::scratch::ScratchDb::create(pg, "sf_bench")
                .await
                .unwrap();
            let (p50, p99) = latency(scratch.url(), port, 50, 100, 20).await;
            println!("postgres: publish → stored p50 {p50:.1} ms, p99 {p99:.1} ms");
            report.insert(
                "latency_postgres_ms".into(),
                json!({"p50": p50, "p99": p99}),
            );
            scratch.drop_db().await.unwrap();
        }
    }
    if matches!(what.as_str(), "all" | "api") {
        println!(
            "== api: park of {ENTERPRISES} enterprises × {MACHINES} machines, one year of roll-ups"
        );
        let dir = tempfile::tempdir().unwrap();
        let sqlite_url = format!("sqlite://{}", dir.path().join("api.db").display());
        let mut backends = vec![("sqlite", sqlite_url, None)];
        if let Some(pg) = &pg {
            let scratch = shopfloor_store_pg::scratch::ScratchDb::create(pg, "sf_bench")
                .await
                .unwrap();
            backends.push(("postgres", scratch.url().to_owned(), Some(scratch)));
        }
        for (name, url, scratch) in backends {
            for (label, p50, p95) in api(name, &url).await {
                println!("{name}: {label}: p50 {p50:.1} ms, p95 {p95:.1} ms");
                report.insert(
                    format!("api_{name}_{}", label.replace([' ', ','], "_")),
                    json!({"p50_ms": p50, "p95_ms": p95}),
                );
            }
            if let Some(s) = scratch {
                s.drop_db().await.unwrap();
            }
        }
    }
    println!(
        "{}",
        serde_json::to_string_pretty(&Value::Object(report)).unwrap()
    );
}
