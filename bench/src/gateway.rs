//! Gateway benchmarks (docs/BENCHMARKS.md, "Gateway"). Run:
//!
//! ```text
//! SHOPFLOOR_TEST_POSTGRES_URL=postgres://postgres@127.0.0.1:5432/test \
//! SHOPFLOOR_TEST_MQTT_URL=mqtt://127.0.0.1:1883 \
//!   shopfloor-bench ingest latency api
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

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use shopfloor_core::batch::{self, Contents};
use shopfloor_store::Store;

use crate::Ctx;
use crate::util::{Figure, Status, Target, env_str, free_port, runtime, unique};

// ---------------------------------------------------------------------------------------
// Helpers (the gateway tests' helpers this program needs, gateway/tests/common/mod.rs)

/// How the gateway reaches MQTT.
#[derive(Debug, Clone)]
enum Broker {
    /// The gateway's embedded broker on this port.
    Embedded(u16),
    /// An external broker (Mosquitto) on this port, with this shared-subscription group.
    External { port: u16, group: String },
}

/// A private Mosquitto for the gateway scenarios, stopped when dropped. Configured as
/// deploy/mosquitto/ recommends for the gateway's broker: unbounded session queues
/// (`max_queued_messages 0`). The machine's shared Mosquitto keeps the default of 1,000 queued
/// messages per client and drops the rest ("Outgoing messages are being dropped"), so a
/// sustained run through it measures the drop, not the gateway.
struct PrivateBroker {
    child: std::process::Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Drop for PrivateBroker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts [`PrivateBroker`] when SHOPFLOOR_TEST_MQTT_URL says the machine has Mosquitto (the
/// same gate as the tests'); `None` without it or without the binary.
fn mosquitto() -> Option<PrivateBroker> {
    env_str("SHOPFLOOR_TEST_MQTT_URL")?;
    let bin = [
        "/usr/sbin/mosquitto",
        "/usr/bin/mosquitto",
        "/usr/local/sbin/mosquitto",
    ]
    .into_iter()
    .find(|p| Path::new(p).exists())?;
    let dir = tempfile::tempdir().ok()?;
    let port = free_port();
    let conf = dir.path().join("mosquitto.conf");
    std::fs::write(
        &conf,
        format!(
            "listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n\
             max_queued_messages 0\nmax_inflight_messages 100\nmessage_size_limit 16777216\n\
             max_connections -1\n"
        ),
    )
    .ok()?;
    let child = std::process::Command::new(bin)
        .arg("-c")
        .arg(&conf)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .ok()?;
    let broker = PrivateBroker {
        child,
        port,
        _dir: dir,
    };
    for _ in 0..100 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Some(broker);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    None
}

/// Writes a gateway configuration into `dir/<id>.toml`.
fn write_config(
    dir: &Path,
    id: &str,
    store_url: &str,
    broker: &Broker,
    prefix: &str,
    registry: &Path,
) -> PathBuf {
    let mqtt = match broker {
        Broker::Embedded(port) => {
            format!("embedded = true\nlisten = \"127.0.0.1:{port}\"\nshared_group = \"\"\n")
        }
        Broker::External { port, group } => format!(
            "embedded = false\nurl = \"mqtt://127.0.0.1:{port}\"\nshared_group = \"{group}\"\nkeep_alive_s = 5\n"
        ),
    };
    // A unique replica id: the shared Mosquitto keeps persistent sessions by client id.
    let replica = unique(id).replace(|c: char| !c.is_ascii_alphanumeric() && c != '-', "-");
    let replica = &replica[replica.len().saturating_sub(64)..];
    let text = format!(
        r#"
[gateway]
id = "{replica}"
data_dir = "{data}"

[store]
url = "{store_url}"

[mqtt]
{mqtt}topic_prefix = "{prefix}"

[http]
listen = "127.0.0.1:0"

[registry]
dir = "{registry}"

[ingest]
commit_wait_ms = 10

[metrics]
indicator_refresh_s = 2
"#,
        data = dir.join(format!("data-{id}")).display(),
        registry = registry.display(),
    );
    let path = dir.join(format!("{id}.toml"));
    std::fs::write(&path, text).unwrap();
    path
}

/// Starts a gateway in this process.
async fn start_gateway(config: &Path) -> shopfloor_gateway::run::Running {
    // The gateway's logs on stderr (`RUST_LOG`, default warn: the tables stay readable).
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
    let cfg = shopfloor_gateway::config::load(config).unwrap();
    shopfloor_gateway::run::start(cfg).await.unwrap()
}

/// Creates an API token with `role` directly in the store.
async fn token(db: &shopfloor_gateway::db::Db, role: &str) -> String {
    let role = shopfloor_gateway::model::Role::parse(role).unwrap();
    shopfloor_gateway::auth::create_token(db, &unique("bench"), role, "bench")
        .await
        .unwrap()
}

/// A minimal HTTP/1.1 client: one request per connection. Returns (status, body).
fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: &[u8],
) -> (u16, Vec<u8>) {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).unwrap();
    s.write_all(body).unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a response head");
    let head = String::from_utf8_lossy(&raw[..split]).to_string();
    let status: u16 = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    let mut body = raw[split + 4..].to_vec();
    if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        body = dechunk(&body);
    }
    (status, body)
}

fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let Some(eol) = b.windows(2).position(|w| w == b"\r\n") else {
            return out;
        };
        let n = usize::from_str_radix(std::str::from_utf8(&b[..eol]).unwrap().trim(), 16).unwrap();
        if n == 0 {
            return out;
        }
        out.extend_from_slice(&b[eol + 2..eol + 2 + n]);
        b = &b[eol + 2 + n + 2..];
    }
}

/// Plays an agent: seals consecutive batches with its key.
struct Signer {
    agent: String,
    key: batch::SigningKey,
    seq: u64,
    prev: String,
}

impl Signer {
    fn new(agent: &str, key: batch::SigningKey) -> Signer {
        Signer {
            agent: agent.into(),
            key,
            seq: 0,
            prev: batch::ZERO_HASH.into(),
        }
    }

    fn public_key(&self) -> String {
        batch::public_key_text(&self.key.verifying_key())
    }

    /// Seals `contents` (JSON of `shopfloor_core::batch::Contents`) as the next batch.
    fn next(&mut self, contents: Value) -> Vec<u8> {
        let contents: Contents = serde_json::from_value(contents).unwrap();
        self.seq += 1;
        let sealed = batch::seal(
            contents.clone(),
            &self.agent,
            self.seq,
            &self.prev,
            contents.to,
            &self.key,
        )
        .unwrap();
        self.prev = sealed.body_hash;
        sealed.payload
    }
}

/// A fresh Ed25519 key from OS randomness (as the agent makes one).
fn new_key() -> batch::SigningKey {
    let dir = tempfile::tempdir().unwrap();
    shopfloor_agent::identity::load_or_create(dir.path()).unwrap()
}

/// Publishes payloads with QoS 1 to `<prefix>/<agent>/batch` and waits until the broker
/// acknowledged each.
async fn publish_all(port: u16, prefix: &str, agent: &str, payloads: Vec<Vec<u8>>) {
    use rumqttc::{AsyncClient, Event, MqttOptions, Outgoing, Packet, QoS};
    let mut opts = MqttOptions::new(unique("pub"), "127.0.0.1", port);
    opts.set_max_packet_size(16 << 20, 16 << 20);
    opts.set_keep_alive(Duration::from_secs(5));
    let (client, mut el) = AsyncClient::new(opts, 64);
    let n = payloads.len();
    let topic = format!("{prefix}/{agent}/batch");
    let sender = tokio::spawn(async move {
        for p in payloads {
            client
                .publish(topic.clone(), QoS::AtLeastOnce, false, p)
                .await
                .unwrap();
        }
        client
    });
    let mut acked = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    while acked < n {
        let ev = tokio::time::timeout_at(deadline, el.poll())
            .await
            .expect("publish timed out");
        match ev {
            Ok(Event::Incoming(Packet::PubAck(_))) => acked += 1,
            Ok(Event::Outgoing(Outgoing::Publish(_)) | _) => {}
            Err(e) => {
                eprintln!("publisher: {e}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
    let client = sender.await.unwrap();
    let _ = client.disconnect().await;
    let _ = tokio::time::timeout(Duration::from_secs(2), el.poll()).await;
}

/// Floor of `ms` to the minute.
fn minute(ms: i64) -> i64 {
    ms - ms.rem_euclid(60_000)
}

fn now_ms() -> i64 {
    jiff::Timestamp::now().as_millisecond()
}

// ---------------------------------------------------------------------------------------
// The benchmarks

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

/// How often the latency scenario reads the agents' heads. Each read returns one row per agent
/// (1,000 here); read every 5 ms, it competed with the ingest it measured.
const POLL: Duration = Duration::from_millis(50);

/// Publish → visible at a fleet's nominal load: `agents` agents, each its own MQTT connection
/// (as real agents have), each publishing one pre-signed batch every `interval_s` seconds,
/// their phases spread evenly over the interval, for `seconds`. A batch is visible when its
/// agent's stored head reaches it (heads polled every [`POLL`]). Returns (p50, p99, max) in ms and
/// the number of batches measured.
async fn latency(
    store_url: &str,
    port: u16,
    agents: usize,
    interval_s: u64,
    seconds: u64,
) -> (f64, f64, f64, usize) {
    use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
    use std::collections::HashMap;
    use std::sync::{Arc, Mutex};

    let dir = tempfile::tempdir().unwrap();
    let prefix = unique("bench-lat");
    let load = Load {
        agents,
        batches: (seconds / interval_s).max(1) as usize,
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

    // Connect every agent first (a fleet is connected before the measurement starts).
    let mut clients = Vec::with_capacity(agents);
    for (agent, _) in &per_agent {
        let mut opts = MqttOptions::new(format!("{prefix}-{agent}"), "127.0.0.1", port);
        opts.set_max_packet_size(16 << 20, 16 << 20);
        opts.set_keep_alive(Duration::from_secs(30));
        let (client, mut el) = AsyncClient::new(opts, 16);
        let (up_tx, up_rx) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(async move {
            let mut up = Some(up_tx);
            loop {
                match el.poll().await {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        if let Some(tx) = up.take() {
                            let _ = tx.send(());
                        }
                    }
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                }
            }
        });
        clients.push((client, up_rx));
    }
    let mut ready = Vec::with_capacity(agents);
    for (client, up) in clients {
        tokio::time::timeout(Duration::from_secs(60), up)
            .await
            .expect("an agent connection timed out")
            .unwrap();
        ready.push(client);
    }

    // Each agent publishes its batches on its own schedule: phase k/agents of the interval.
    let sent: Arc<Mutex<HashMap<(String, i64), Instant>>> = Default::default();
    let start = Instant::now() + Duration::from_millis(200);
    let interval = Duration::from_secs(interval_s);
    let mut senders = Vec::with_capacity(agents);
    for (k, ((agent, payloads), client)) in per_agent.into_iter().zip(ready).enumerate() {
        let sent = sent.clone();
        let topic = format!("{prefix}/{agent}/batch");
        let phase = interval.mul_f64(k as f64 / agents as f64);
        senders.push(tokio::spawn(async move {
            for (i, p) in payloads.into_iter().enumerate() {
                let due = start + phase + interval * i as u32;
                tokio::time::sleep_until(due.into()).await;
                sent.lock()
                    .unwrap()
                    .insert((agent.clone(), i as i64 + 1), Instant::now());
                // try_publish: an agent never blocks on a full request queue.
                if client
                    .try_publish(topic.clone(), QoS::AtLeastOnce, false, p)
                    .is_err()
                {
                    eprintln!("latency: request queue of {agent} full");
                }
            }
            client
        }));
    }

    let total = (load.agents * load.batches) as i64;
    let mut seen: HashMap<String, i64> = HashMap::new();
    let mut lat = Vec::with_capacity(total as usize);
    let deadline = Instant::now() + Duration::from_secs(seconds + 120);
    while (lat.len() as i64) < total && Instant::now() < deadline {
        let heads = gw.db.agent_heads().await.unwrap();
        let now = Instant::now();
        {
            let sent = sent.lock().unwrap();
            for h in heads {
                let before = seen.get(&h.agent).copied().unwrap_or(0);
                if h.last_seq > before {
                    for seq in before + 1..=h.last_seq {
                        if let Some(at) = sent.get(&(h.agent.clone(), seq)) {
                            lat.push(now.duration_since(*at).as_secs_f64() * 1000.0);
                        }
                    }
                    seen.insert(h.agent, h.last_seq);
                }
            }
        }
        tokio::time::sleep(POLL).await;
    }
    for s in senders {
        let client = s.await.unwrap();
        let _ = client.try_disconnect();
    }
    gw.stop().await;
    let n = lat.len();
    lat.sort_by(f64::total_cmp);
    (
        pct(&lat, 0.5),
        pct(&lat, 0.99),
        lat.last().copied().unwrap_or(f64::NAN),
        n,
    )
}

/// A park of `enterprises` × `machines` (20 × 50 in the full run).
#[derive(Debug, Clone, Copy)]
struct Park {
    enterprises: usize,
    machines: usize,
}

/// A year of hour, day and month buckets for every machine of the park (months at local
/// midnight, UTC+8), with the same columns the roll-up worker writes. Generated in SQL (one
/// statement per table and enterprise): 27 million rows through `Store::apply_rollups`, one
/// statement per row on SQLite, would take far longer than the measurement.
async fn populate_park(park: Park, store_url: &str, year_from: i64) {
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
    let statements: Vec<String> = (0..park.enterprises)
        .flat_map(|e| {
            let devices: Vec<String> = (0..park.machines)
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

fn park_registry(park: Park, dir: &std::path::Path) -> std::path::PathBuf {
    let reg = dir.join("registry");
    std::fs::create_dir_all(&reg).unwrap();
    let mut e = String::from("[[entity]]\nid = \"p1\"\nkind = \"park\"\n");
    for en in 0..park.enterprises {
        e.push_str(&format!(
            "[[entity]]\nid = \"p1/e{en:02}\"\nkind = \"enterprise\"\n[[entity]]\nid = \"p1/e{en:02}/w1\"\nkind = \"workshop\"\n[[entity]]\nid = \"p1/e{en:02}/w1/l1\"\nkind = \"line\"\n"
        ));
        for m in 0..park.machines {
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

async fn api(park: Park, backend: &str, store_url: &str) -> Vec<(String, f64, f64)> {
    let dir = tempfile::tempdir().unwrap();
    let reg = park_registry(park, dir.path());
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
    populate_park(park, store_url, year_from).await;
    eprintln!(
        "  {backend}: populated a park-year of roll-ups in {:.1} s",
        t0.elapsed().as_secs_f64()
    );
    let mut out = Vec::new();
    let year = ("2025-01-01T00:00:00%2B08:00", "2026-01-01T00:00:00%2B08:00");
    // Not month-aligned: the evidence tiles hours, days and months.
    let ragged = ("2025-01-01T09:00:00%2B08:00", "2025-12-31T17:00:00%2B08:00");
    // Enterprise 7 and its machine 13 (the last ones of a smaller park).
    let (e, m) = (park.enterprises.min(8) - 1, park.machines.min(14) - 1);
    let enterprise = format!("p1/e{e:02}");
    let machine = format!("p1/e{e:02}/w1/l1/m{m:02}");
    for (label, entity, (from, to)) in [
        ("park year", "p1", year),
        ("park year, hour-aligned ends", "p1", ragged),
        ("enterprise year", enterprise.as_str(), year),
        ("machine year", machine.as_str(), year),
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

const SKIP_MQTT: &str = "skipped: set SHOPFLOOR_TEST_MQTT_URL (and install mosquitto)";
const SKIP_PG: &str = "skipped: set SHOPFLOOR_TEST_POSTGRES_URL";

/// `ingest`: SQLite and PostgreSQL against the counting subscriber.
pub(crate) fn ingest_main(ctx: &Ctx) -> Result<Vec<Figure>, String> {
    const S: &str = "ingest";
    let Some(broker) = mosquitto() else {
        return Ok(vec![Figure::not_run(
            S,
            "ingest",
            Status::Skipped,
            SKIP_MQTT,
        )]);
    };
    let port = broker.port;
    let pg = env_str("SHOPFLOOR_TEST_POSTGRES_URL");
    let load = if ctx.quick {
        Load {
            agents: 2,
            batches: 10,
            devices: 10,
            samples: 20,
        }
    } else {
        // 10,000 batches, 2.2 million readings: about half a minute per store, so the rate is
        // a sustained one (group commits, checkpoints and index growth included).
        Load {
            agents: 20,
            batches: 500,
            devices: 10,
            samples: 20,
        }
    };
    let rt = runtime(Some(2))?;
    rt.block_on(async {
        let mut report = serde_json::Map::new();
        let mut figures = Vec::new();
        println!(
            "== ingest: {} agents × {} batches × {} readings",
            load.agents,
            load.batches,
            load.readings_per_batch()
        );
        let base = baseline(port, &load).await;
        println!("baseline (broker only, no storage): {base:.0} readings/s");
        report.insert("ingest_baseline_readings_per_s".into(), json!(base));
        let note = format!(
            "{} agents × {} batches × {} readings; baseline: a subscriber that only counts",
            load.agents,
            load.batches,
            load.readings_per_batch()
        );
        let dir = tempfile::tempdir().unwrap();
        let sqlite_url = format!("sqlite://{}", dir.path().join("bench.db").display());
        let (r, _) = ingest("sqlite", &sqlite_url, port, &load).await;
        println!("sqlite: {r:.0} readings/s ({:.2}× baseline)", r / base);
        report.insert("ingest_sqlite_readings_per_s".into(), json!(r));
        figures.push(
            Figure::new(S, "gateway into SQLite", r, "readings/s")
                .baseline(base)
                .target(Target::at_least(50_000.0, "≥ 50000 readings/s"))
                .note(note.clone()),
        );
        if let Some(pg) = &pg {
            let scratch = shopfloor_store_pg::scratch::ScratchDb::create(pg, "sf_bench")
                .await
                .unwrap();
            let (r, _) = ingest("postgres", scratch.url(), port, &load).await;
            println!("postgres: {r:.0} readings/s ({:.2}× baseline)", r / base);
            report.insert("ingest_postgres_readings_per_s".into(), json!(r));
            scratch.drop_db().await.unwrap();
            figures.push(
                Figure::new(S, "gateway into PostgreSQL", r, "readings/s")
                    .baseline(base)
                    .target(Target::at_least(100_000.0, "≥ 100000 readings/s"))
                    .note(note),
            );
        } else {
            figures.push(Figure::not_run(
                S,
                "gateway into PostgreSQL",
                Status::Skipped,
                SKIP_PG,
            ));
        }
        println!("{}", Value::Object(report));
        Ok(figures)
    })
}

/// `latency`: publish → visible at the nominal load of 1,000 agents (each one batch every 5 s,
/// the agent's default `batch.interval_s`), SQLite and PostgreSQL.
pub(crate) fn latency_main(ctx: &Ctx) -> Result<Vec<Figure>, String> {
    const S: &str = "latency";
    let Some(broker) = mosquitto() else {
        return Ok(vec![Figure::not_run(
            S,
            "latency",
            Status::Skipped,
            SKIP_MQTT,
        )]);
    };
    let port = broker.port;
    let pg = env_str("SHOPFLOOR_TEST_POSTGRES_URL");
    let (agents, interval_s, seconds) = if ctx.quick { (20, 1, 3) } else { (1000, 5, 60) };
    let rt = runtime(Some(2))?;
    rt.block_on(async {
        let mut report = serde_json::Map::new();
        let mut figures = Vec::new();
        let per_second = agents as f64 / interval_s as f64;
        let note = format!(
            "{agents} agents (one MQTT connection each), one batch each every {interval_s} s \
             ({per_second:.0} batches/s, {:.0} readings/s), {seconds} s",
            per_second * 220.0
        );
        println!("== latency: {note}");
        let mut push = |backend: &str, (p50, p99, max, n): (f64, f64, f64, usize)| {
            println!(
                "{backend}: publish → visible p50 {p50:.1} ms, p99 {p99:.1} ms, max {max:.1} ms \
                 ({n} batches)"
            );
            report.insert(
                format!("latency_{}_ms", backend.to_lowercase()),
                json!({"p50": p50, "p99": p99, "max": max, "batches": n}),
            );
            figures.push(
                Figure::new(
                    S,
                    &format!("publish → visible in {backend}, p50"),
                    p50,
                    "ms",
                )
                .note(note.clone()),
            );
            figures.push(
                Figure::new(
                    S,
                    &format!("publish → visible in {backend}, p99"),
                    p99,
                    "ms",
                )
                .target(Target::below(1000.0, "p99 < 1000 ms"))
                .note(note.clone()),
            );
        };
        let dir = tempfile::tempdir().unwrap();
        let sqlite_url = format!("sqlite://{}", dir.path().join("lat.db").display());
        push(
            "SQLite",
            latency(&sqlite_url, port, agents, interval_s, seconds).await,
        );
        if let Some(pg) = &pg {
            let scratch = shopfloor_store_pg::scratch::ScratchDb::create(pg, "sf_bench")
                .await
                .unwrap();
            let r = latency(scratch.url(), port, agents, interval_s, seconds).await;
            scratch.drop_db().await.unwrap();
            push("PostgreSQL", r);
        } else {
            figures.push(Figure::not_run(
                S,
                "publish → visible in PostgreSQL",
                Status::Skipped,
                SKIP_PG,
            ));
        }
        println!("{}", Value::Object(report));
        Ok(figures)
    })
}

/// `api`: the park-year query and smaller ones, against the engine alone.
pub(crate) fn api_main(ctx: &Ctx) -> Result<Vec<Figure>, String> {
    const S: &str = "api";
    let park = if ctx.quick {
        Park {
            enterprises: 2,
            machines: 5,
        }
    } else {
        Park {
            enterprises: 20,
            machines: 50,
        }
    };
    let pg = env_str("SHOPFLOOR_TEST_POSTGRES_URL");
    let rt = runtime(Some(2))?;
    rt.block_on(async {
        let mut report = serde_json::Map::new();
        let mut figures = Vec::new();
        println!(
            "== api: park of {} enterprises × {} machines, one year of roll-ups",
            park.enterprises, park.machines
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
            let results = api(park, name, &url).await;
            let engine = results
                .iter()
                .find(|(l, _, _)| l.starts_with("engine only"))
                .map_or((f64::NAN, f64::NAN), |(_, a, b)| (*a, *b));
            let store = if name == "sqlite" {
                "SQLite"
            } else {
                "PostgreSQL"
            };
            for (label, p50, p95) in results {
                println!("{name}: {label}: p50 {p50:.1} ms, p95 {p95:.1} ms");
                report.insert(
                    format!("api_{name}_{}", label.replace([' ', ','], "_")),
                    json!({"p50_ms": p50, "p95_ms": p95}),
                );
                let is_engine = label.starts_with("engine only");
                let mut f50 = Figure::new(S, &format!("{store}: {label}, p50"), p50, "ms");
                let mut f95 = Figure::new(S, &format!("{store}: {label}, p95"), p95, "ms");
                if !is_engine {
                    let note = "baseline: the engine alone on the park-year evidence";
                    f50 = f50.baseline(engine.0).note(note);
                    f95 = f95.baseline(engine.1).note(note);
                }
                if label == "park year" {
                    f95 = f95.target(Target::below(100.0, "p95 < 100 ms"));
                }
                figures.push(f50);
                figures.push(f95);
            }
            if let Some(s) = scratch {
                s.drop_db().await.unwrap();
            }
        }
        if pg.is_none() {
            figures.push(Figure::not_run(S, "PostgreSQL", Status::Skipped, SKIP_PG));
        }
        println!("{}", Value::Object(report));
        Ok(figures)
    })
}
