//! Shared helpers of the gateway's end-to-end tests: a gateway configuration and registry for
//! the agent tests' simulated plant, the gateway started in-process or as its binary, a
//! PostgreSQL scratch database, a signer that plays an agent, a tiny HTTP client, and `calc`.
#![allow(dead_code, unreachable_pub, clippy::unwrap_used, clippy::expect_used)]

#[path = "../../../agent/tests/common/mod.rs"]
pub mod agent;
pub mod web;

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;
use shopfloor_core::batch::{self, Contents};

#[allow(unused_imports)]
pub use agent::{free_port, unique, wait_until};

pub const AGENT: &str = "w1-agent";

/// Which store a test runs on.
#[derive(Debug, Clone)]
pub enum Backend {
    Sqlite,
    /// A scratch database on the shared server (dropped by [`Store::cleanup`]).
    Postgres(String),
}

/// The store of one test: a SQLite file in the test's directory or a scratch PostgreSQL
/// database.
pub struct TestStore {
    pub url: String,
    scratch: Option<shopfloor_store_pg::scratch::ScratchDb>,
}

impl TestStore {
    pub async fn sqlite(dir: &Path) -> TestStore {
        TestStore {
            url: format!("sqlite://{}", dir.join("gateway.db").display()),
            scratch: None,
        }
    }

    /// A scratch database, or `None` (with the skip notice) without SHOPFLOOR_TEST_POSTGRES_URL.
    pub async fn postgres(test: &str) -> Option<TestStore> {
        let Ok(server) = std::env::var("SHOPFLOOR_TEST_POSTGRES_URL") else {
            let _ = writeln!(
                std::io::stderr(),
                "skipped: {test} needs SHOPFLOOR_TEST_POSTGRES_URL"
            );
            return None;
        };
        let scratch = shopfloor_store_pg::scratch::ScratchDb::create(&server, "sf_gw")
            .await
            .unwrap();
        Some(TestStore {
            url: scratch.url().to_owned(),
            scratch: Some(scratch),
        })
    }

    pub async fn cleanup(self) {
        if let Some(s) = self.scratch {
            s.drop_db().await.unwrap();
        }
    }
}

/// The shared Mosquitto's port, or `None` (with the skip notice) without SHOPFLOOR_TEST_MQTT_URL.
pub fn mosquitto(test: &str) -> Option<u16> {
    let Ok(url) = std::env::var("SHOPFLOOR_TEST_MQTT_URL") else {
        let _ = writeln!(
            std::io::stderr(),
            "skipped: {test} needs SHOPFLOOR_TEST_MQTT_URL"
        );
        return None;
    };
    let port = url
        .rsplit(':')
        .next()
        .and_then(|p| p.trim_end_matches('/').parse().ok());
    Some(port.unwrap_or(1883))
}

/// How the gateway reaches MQTT in a test.
#[derive(Debug, Clone)]
pub enum Broker {
    /// The gateway's embedded broker on this port.
    Embedded(u16),
    /// An external broker (Mosquitto) on this port, with this shared-subscription group.
    External { port: u16, group: String },
}

impl Broker {
    pub fn port(&self) -> u16 {
        match self {
            Broker::Embedded(p) | Broker::External { port: p, .. } => *p,
        }
    }
}

/// Writes the registry of the test plant (agent tests' PLANT: one CNC and one meter) into
/// `dir/registry`, trusting `public_key` for agent `AGENT`.
pub fn write_registry(dir: &Path, public_key: &str) -> PathBuf {
    let reg = dir.join("registry");
    std::fs::create_dir_all(&reg).unwrap();
    std::fs::write(
        reg.join("entities.toml"),
        r#"
[[entity]]
id = "p1"
kind = "park"
name_zh = "测试园区"
name_en = "Test park"

[[entity]]
id = "p1/e1"
kind = "enterprise"
name_en = "Enterprise 1"
land_area_m2 = 120000.0

[[entity]]
id = "p1/e1/w1"
kind = "workshop"
name_en = "Workshop 1"

[[entity]]
id = "p1/e1/w1/l1"
kind = "line"

[[entity]]
id = "p1/e1/w1/l1/cnc-01"
kind = "equipment"
equipment_kind = "cnc"
control = "cnc"
key_process = "machining"
product = "shaft-a"

[[entity]]
id = "p1/e1/w1/m-01"
kind = "meter"
carrier = "electricity"
unit = "kWh"
"#,
    )
    .unwrap();
    std::fs::write(
        reg.join("products.toml"),
        "[[product]]\nid = \"shaft-a\"\nideal_cycle_s = 25.0\nvalue_added_per_unit_cny = 12.5\n",
    )
    .unwrap();
    std::fs::write(
        reg.join("agents.toml"),
        format!(
            "[[agent]]\nid = \"{AGENT}\"\npublic_key = \"{public_key}\"\nscope = [\"p1/e1/w1\"]\n"
        ),
    )
    .unwrap();
    reg
}

/// Writes a gateway configuration into `dir/gateway.toml`.
pub fn write_config(
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
pub async fn start_gateway(config: &Path) -> shopfloor_gateway::run::Running {
    // The gateway's logs, shown for failed tests only (`RUST_LOG`, default info).
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_test_writer()
        .try_init();
    let cfg = shopfloor_gateway::config::load(config).unwrap();
    shopfloor_gateway::run::start(cfg).await.unwrap()
}

/// Creates an API token with `role` directly in the store.
pub async fn token(db: &shopfloor_gateway::db::Db, role: &str) -> String {
    let role = shopfloor_gateway::model::Role::parse(role).unwrap();
    shopfloor_gateway::auth::create_token(db, &unique("test"), role, "test")
        .await
        .unwrap()
}

/// A minimal HTTP/1.1 client: one request per connection. Returns (status, body).
pub fn http(
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

/// GET returning JSON; panics on a non-200 status with the body.
pub fn get_json(addr: SocketAddr, path: &str, token: &str) -> Value {
    let (status, body) = http(addr, "GET", path, Some(token), b"");
    assert_eq!(
        status,
        200,
        "GET {path}: {}",
        String::from_utf8_lossy(&body)
    );
    serde_json::from_slice(&body).unwrap()
}

/// Runs `shopfloor-gateway calc --evidence FILE` and returns its `indicators` object.
pub fn calc(evidence: &Path) -> serde_json::Map<String, Value> {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_shopfloor-gateway"))
        .args(["calc", "--evidence"])
        .arg(evidence)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "calc failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    v["indicators"].as_object().unwrap().clone()
}

/// Asserts that the API's indicator values equal calc's, id by id (same ids, both null or
/// equal within 1e-9 relative).
pub fn assert_same_values(entity: &str, api: &Value, calc: &serde_json::Map<String, Value>) {
    let api = api["indicators"].as_object().expect("indicators object");
    let api_ids: Vec<&String> = api.keys().collect();
    let calc_ids: Vec<&String> = calc.keys().collect();
    assert_eq!(api_ids, calc_ids, "{entity}: indicator ids differ");
    for (id, v) in api {
        let a = v["value"].as_f64();
        let c = calc[id].as_f64();
        match (a, c) {
            (None, None) => {}
            (Some(a), Some(c)) => {
                assert!(
                    (a - c).abs() <= 1e-9 * a.abs().max(1.0),
                    "{entity} {id}: api {a} calc {c}"
                )
            }
            _ => panic!("{entity} {id}: api {a:?} calc {c:?}"),
        }
    }
}

/// Plays an agent: seals consecutive batches with its key.
pub struct Signer {
    pub agent: String,
    key: shopfloor_core::batch::SigningKey,
    pub seq: u64,
    prev: String,
}

impl Signer {
    pub fn new(agent: &str, key: shopfloor_core::batch::SigningKey) -> Signer {
        Signer {
            agent: agent.into(),
            key,
            seq: 0,
            prev: batch::ZERO_HASH.into(),
        }
    }

    pub fn public_key(&self) -> String {
        batch::public_key_text(&self.key.verifying_key())
    }

    /// Signs the following batches with `key`, continuing the chain (what an agent does after
    /// `shopfloor-agent key activate`, or an attacker holding an old key).
    pub fn set_key(&mut self, key: shopfloor_core::batch::SigningKey) {
        self.key = key;
    }

    /// Seals `contents` (JSON of `shopfloor_core::batch::Contents`) as the next batch.
    pub fn next(&mut self, contents: Value) -> Vec<u8> {
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
pub fn new_key() -> shopfloor_core::batch::SigningKey {
    let dir = tempfile::tempdir().unwrap();
    shopfloor_agent::identity::load_or_create(dir.path()).unwrap()
}

/// Publishes payloads with QoS 1 to `<prefix>/<agent>/batch` and waits until the broker
/// acknowledged each.
pub async fn publish_all(port: u16, prefix: &str, agent: &str, payloads: Vec<Vec<u8>>) {
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
pub fn minute(ms: i64) -> i64 {
    ms - ms.rem_euclid(60_000)
}

pub fn now_ms() -> i64 {
    jiff::Timestamp::now().as_millisecond()
}

/// RFC 3339 (UTC) of `ms`, URL-safe (`Z`, no `+`).
pub fn rfc3339(ms: i64) -> String {
    jiff::Timestamp::from_millisecond(ms).unwrap().to_string()
}
