//! The MQTT consumer against the embedded broker (rumqttd on a free port) and against Mosquitto
//! (`SHOPFLOOR_TEST_MQTT_URL`, e.g. `mqtt://127.0.0.1:1883`): signed batches published by an
//! agent-like client arrive as deliveries, are stored and acknowledged; a batch whose commit
//! was not done when the consumer died is redelivered to the restarted consumer (same client
//! id) and stored exactly once; retained status messages are kept per agent.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::io::Write as _;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use shopfloor_core::batch::{self, Contents, CounterReadings, DeviceData, Sealed, ZERO_HASH};
use shopfloor_gateway::config::{self, GatewayConfig};
use shopfloor_gateway::db::Db;
use shopfloor_gateway::ingest::{self, Delivery, Trust};
use shopfloor_gateway::metrics::Metrics;
use shopfloor_gateway::model::{Agent, Snapshot};
use shopfloor_gateway::mqtt::{self, MqttHandle};
use shopfloor_store::Store as _;
use tokio::sync::{mpsc, watch};

const WAIT: Duration = Duration::from_secs(30);

fn unique(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{prefix}-{}-{nanos}", std::process::id())
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The shared broker of the test environment, or `None` (the test prints why it skips).
fn external_broker(test: &str) -> Option<String> {
    match std::env::var("SHOPFLOOR_TEST_MQTT_URL") {
        Ok(u) if !u.is_empty() => Some(u),
        _ => {
            let _ = writeln!(
                std::io::stderr(),
                "skipped: {test} needs SHOPFLOOR_TEST_MQTT_URL"
            );
            None
        }
    }
}

// --- keys and batches (ed25519-dalek is reached through the agent's identity module) ---

fn with_key<T>(
    seed: u8,
    f: impl FnOnce(&dyn Fn(Contents, &str, u64, &str, i64) -> Sealed, String) -> T,
) -> T {
    let dir = tempfile::tempdir().unwrap();
    let path = shopfloor_agent::identity::key_path(dir.path());
    let text = format!(
        "{}\n{}\n",
        shopfloor_agent::identity::KEY_HEADER,
        BASE64.encode([seed; 32])
    );
    std::fs::write(&path, text).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    let key = shopfloor_agent::identity::load(dir.path()).unwrap();
    let public = batch::public_key_text(&key.verifying_key());
    let sealer = |c: Contents, agent: &str, seq: u64, prev: &str, sealed: i64| {
        batch::seal(c, agent, seq, prev, sealed, &key).unwrap()
    };
    f(&sealer, public)
}

fn now_ms() -> i64 {
    jiff::Timestamp::now().as_millisecond()
}

/// `n` chained batches of `agent` (seed 1), one meter reading each, ending now.
fn chain(agent: &str, n: u64) -> (Vec<Sealed>, String) {
    with_key(1, |seal, public| {
        let now = now_ms();
        let mut prev = ZERO_HASH.to_owned();
        let mut out = Vec::new();
        for seq in 1..=n {
            let to = now - (n - seq) as i64 * 10_000 - 1000;
            let c = Contents {
                from: to - 10_000,
                to,
                devices: vec![DeviceData {
                    id: "p1/e1/w1/m-01".to_owned(),
                    template: "eastron-sdm630".to_owned(),
                    samples: vec![],
                    summaries: vec![],
                    states: vec![],
                    counters: vec![CounterReadings {
                        role: "electricity".to_owned(),
                        point: "energy_import_kwh".to_owned(),
                        width_bits: None,
                        rollover: None,
                        readings: vec![batch::Reading {
                            t: to,
                            v: 1000.0 + seq as f64,
                        }],
                    }],
                    links: vec![],
                    dropped: None,
                }],
            };
            let s = seal(c, agent, seq, &prev, to + 500);
            prev = s.body_hash.clone();
            out.push(s);
        }
        (out, public)
    })
}

fn trust(agent: &str, public_key: String) -> Arc<Trust> {
    let mut agents = BTreeMap::new();
    agents.insert(
        agent.to_owned(),
        Agent {
            id: agent.to_owned(),
            public_key,
            previous_keys: Vec::new(),
            revoked_keys: Vec::new(),
            scope: vec!["p1/e1".to_owned()],
            revoked: false,
        },
    );
    let t = Trust::new();
    assert!(
        t.replace(Arc::new(Snapshot {
            agents,
            ..Snapshot::default()
        }))
        .is_empty()
    );
    Arc::new(t)
}

// --- configuration ---

fn gateway_config(dir: &Path, id: &str, mqtt: &str) -> GatewayConfig {
    let path = dir.join(format!("{id}.toml"));
    let text = format!(
        "[gateway]\nid = \"{id}\"\ndata_dir = \"{}\"\n\n[mqtt]\n{mqtt}\nkeep_alive_s = 5\n\n[ingest]\ncommit_wait_ms = 5\nmax_payload_bytes = 65536\n",
        dir.display()
    );
    std::fs::write(&path, text).unwrap();
    config::load(&path).unwrap_or_else(|e| panic!("{e:?}"))
}

fn embedded_config(dir: &Path, id: &str, port: u16, prefix: &str) -> GatewayConfig {
    gateway_config(
        dir,
        id,
        &format!("embedded = true\nlisten = \"127.0.0.1:{port}\"\ntopic_prefix = \"{prefix}\""),
    )
}

fn external_config(dir: &Path, id: &str, url: &str, prefix: &str, group: &str) -> GatewayConfig {
    gateway_config(
        dir,
        id,
        &format!(
            "embedded = false\nurl = \"{url}\"\ntopic_prefix = \"{prefix}\"\nshared_group = \"{group}\""
        ),
    )
}

fn broker_addr(cfg: &GatewayConfig) -> (String, u16) {
    if cfg.mqtt.embedded {
        (cfg.mqtt.listen.ip().to_string(), cfg.mqtt.listen.port())
    } else {
        let u = mqtt::parse_url(cfg.mqtt.url.as_deref().unwrap()).unwrap();
        (u.host, u.port)
    }
}

// --- an agent-like publisher ---

struct Publisher {
    client: AsyncClient,
    acked: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Publisher {
    fn start(host: &str, port: u16) -> Publisher {
        let mut o = MqttOptions::new(unique("test-agent"), host, port);
        o.set_keep_alive(Duration::from_secs(5))
            .set_max_packet_size(1 << 20, 1 << 20);
        let (client, mut el) = AsyncClient::new(o, 100);
        let acked = Arc::new(AtomicUsize::new(0));
        let a = acked.clone();
        let task = tokio::spawn(async move {
            loop {
                match el.poll().await {
                    Ok(Event::Incoming(Packet::PubAck(_))) => {
                        a.fetch_add(1, Ordering::SeqCst);
                    }
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                }
            }
        });
        Publisher {
            client,
            acked,
            task,
        }
    }

    async fn publish(&self, topic: &str, payload: Vec<u8>, retain: bool) {
        self.client
            .publish(topic, QoS::AtLeastOnce, retain, payload)
            .await
            .unwrap();
    }

    /// Waits until the broker acknowledged `n` publishes.
    async fn wait_acked(&self, n: usize) {
        let deadline = tokio::time::Instant::now() + WAIT;
        while self.acked.load(Ordering::SeqCst) < n {
            assert!(
                tokio::time::Instant::now() < deadline,
                "broker did not acknowledge"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Publisher {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Removes a persistent session from the broker (connect with a clean session).
async fn wipe_session(host: &str, port: u16, client_id: &str) {
    let mut o = MqttOptions::new(client_id, host, port);
    o.set_keep_alive(Duration::from_secs(5))
        .set_clean_session(true);
    let (client, mut el) = AsyncClient::new(o, 10);
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match el.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(_))) => {
                    let _ = client.try_disconnect();
                }
                Ok(Event::Outgoing(rumqttc::Outgoing::Disconnect)) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await;
}

/// The seqs of `agent` stored in `db`.
async fn stored_seqs(db: &Db, agent: &str) -> Vec<i64> {
    db.batches(agent, 1, i64::MAX, false)
        .await
        .unwrap()
        .iter()
        .map(|b| b.seq)
        .collect()
}

async fn wait_stored(db: &Db, agent: &str, seqs: &[i64]) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let now = stored_seqs(db, agent).await;
        if now == seqs {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for seqs {seqs:?} to be stored (have {now:?})"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !f() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn next(rx: &mut mpsc::Receiver<Delivery>) -> Delivery {
    tokio::time::timeout(WAIT, rx.recv())
        .await
        .expect("no delivery")
        .expect("consumer stopped")
}

async fn consumer(
    cfg: &GatewayConfig,
    metrics: &Arc<Metrics>,
) -> (MqttHandle, mpsc::Receiver<Delivery>, watch::Sender<bool>) {
    let (tx, rx) = mpsc::channel(16);
    let (stop_tx, stop_rx) = watch::channel(false);
    let h = mqtt::start(cfg, tx, metrics.clone(), stop_rx)
        .await
        .unwrap();
    let mut w = h.connected_watch();
    tokio::time::timeout(WAIT, w.wait_for(|c| *c))
        .await
        .expect("consumer did not connect")
        .unwrap();
    (h, rx, stop_tx)
}

/// The whole scenario on one broker:
/// 1. batches published by an agent arrive as deliveries and are stored and acknowledged by
///    the ingest loop;
/// 2. a batch received by a consumer that dies before its commit is redelivered to the
///    restarted consumer (same client id) and stored exactly once;
/// 3. retained status messages are kept per agent; invalid ones are counted.
async fn scenario(cfg: GatewayConfig) {
    let prefix = cfg.mqtt.topic_prefix.clone();
    let (host, port) = broker_addr(&cfg);
    let agent = "a1";
    let (batches, public) = chain(agent, 4);
    let trust = trust(agent, public);
    let topic = format!("{prefix}/{agent}/batch");
    let status_topic = format!("{prefix}/{agent}/status");
    let publisher = Publisher::start(&host, port);

    // A retained birth message published before the gateway is there.
    let birth =
        serde_json::json!({"agent": agent, "status": "online", "at": 1, "version": "0.1.0"});
    publisher
        .publish(&status_topic, birth.to_string().into_bytes(), true)
        .await;
    publisher.wait_acked(1).await;

    // --- 1. deliveries are stored and acknowledged ---
    let metrics = Arc::new(Metrics::new());
    let db = Db::open(&cfg.store_url(), None).await.unwrap();
    let (h, rx, stop) = consumer(&cfg, &metrics).await;
    let ingest_task = tokio::spawn(ingest::run(
        db.clone(),
        trust.clone(),
        metrics.clone(),
        cfg.ingest.clone(),
        prefix.clone(),
        rx,
    ));
    wait_until("the retained status", || !h.agent_status().is_empty()).await;
    assert_eq!(h.agent_status(), vec![(agent.to_owned(), birth.clone())]);

    publisher
        .publish(&topic, batches[0].payload.clone(), false)
        .await;
    publisher
        .publish(&topic, batches[1].payload.clone(), false)
        .await;
    wait_stored(&db, agent, &[1, 2]).await;

    // Status: an invalid one is counted and ignored; clearing the retained message forgets it.
    publisher
        .publish(&status_topic, b"not json".to_vec(), false)
        .await;
    wait_until("the invalid status counted", || {
        metrics
            .encode()
            .contains("shopfloor_gateway_mqtt_status_invalid_total 1")
    })
    .await;
    assert_eq!(h.agent_status(), vec![(agent.to_owned(), birth.clone())]);
    publisher.publish(&status_topic, Vec::new(), true).await;
    wait_until("the cleared status", || h.agent_status().is_empty()).await;

    // Clean stop; the ingest loop ends when the consumer is gone.
    stop.send(true).unwrap();
    h.join().await;
    ingest_task.await.unwrap();

    // --- 2. a consumer dies before the commit: the broker redelivers ---
    let (h, mut rx, _stop) = consumer(&cfg, &metrics).await;
    publisher
        .publish(&topic, batches[2].payload.clone(), false)
        .await;
    let d = next(&mut rx).await;
    assert_eq!(d.topic, topic);
    assert_eq!(d.payload, batches[2].payload);
    // Never committed, never acknowledged: the consumer dies (no DISCONNECT).
    drop(d);
    h.abort();
    drop(rx);

    let (h, rx, stop) = consumer(&cfg, &metrics).await;
    let ingest_task = tokio::spawn(ingest::run(
        db.clone(),
        trust.clone(),
        metrics.clone(),
        cfg.ingest.clone(),
        prefix.clone(),
        rx,
    ));
    // Redelivered to the new consumer, committed, acknowledged.
    wait_stored(&db, agent, &[1, 2, 3]).await;
    publisher
        .publish(&topic, batches[3].payload.clone(), false)
        .await;
    wait_stored(&db, agent, &[1, 2, 3, 4]).await;
    let heads = db.agent_heads().await.unwrap();
    assert_eq!(heads.len(), 1);
    assert_eq!(
        (heads[0].batches, heads[0].last_seq, heads[0].missing),
        (4, 4, 0)
    );
    assert_eq!(heads[0].last_hash, batches[3].body_hash);
    assert!(db.list_quarantine(None, 10).await.unwrap().is_empty());

    // Acknowledged: a further restart gets no redelivery of seqs 1–4 before a new message.
    stop.send(true).unwrap();
    h.join().await;
    ingest_task.await.unwrap();
    let (h, mut rx, stop) = consumer(&cfg, &metrics).await;
    let marker = format!("{prefix}/marker/batch");
    publisher.publish(&marker, b"marker".to_vec(), false).await;
    let d = next(&mut rx).await;
    assert_eq!(d.topic, marker, "an acknowledged batch was delivered again");
    d.ack.send();
    stop.send(true).unwrap();
    h.join().await;

    // Each batch was stored exactly once (another copy would have counted as a duplicate).
    let t = metrics.encode();
    assert!(
        t.contains("shopfloor_gateway_batches_total{result=\"stored\"} 4"),
        "{t}"
    );
    assert!(
        t.contains("shopfloor_gateway_batches_total{result=\"quarantined\"} 0"),
        "{t}"
    );
    assert!(t.contains("shopfloor_gateway_mqtt_connected 0"), "{t}");

    wipe_session(&host, port, &mqtt::client_id(&cfg.gateway.id)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumer_on_the_embedded_broker() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let cfg = embedded_config(dir.path(), &unique("gw"), port, &unique("t/ingest"));
    shopfloor_gateway::broker::start(&cfg).unwrap();
    scenario(cfg).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumer_on_mosquitto_with_a_shared_subscription() {
    let Some(url) = external_broker("consumer_on_mosquitto_with_a_shared_subscription") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let cfg = external_config(
        dir.path(),
        &unique("gw"),
        &url,
        &unique("t/ingest"),
        &unique("g"),
    );
    scenario(cfg).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumer_on_mosquitto_without_a_shared_subscription() {
    let Some(url) = external_broker("consumer_on_mosquitto_without_a_shared_subscription") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let cfg = external_config(dir.path(), &unique("gw"), &url, &unique("t/ingest"), "");
    scenario(cfg).await;
}

#[test]
fn embedded_broker_reports_a_taken_port() {
    let dir = tempfile::tempdir().unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr: SocketAddr = taken.local_addr().unwrap();
    let cfg = embedded_config(dir.path(), "gw", addr.port(), "t");
    let e = shopfloor_gateway::broker::start(&cfg).unwrap_err();
    assert!(e.starts_with("mqtt.listen:"), "{e}");
    assert!(e.contains(&addr.to_string()), "{e}");
}

#[tokio::test]
async fn bad_consumer_settings_name_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let (tx, _rx) = mpsc::channel(1);
    let (_stop, stop_rx) = watch::channel(false);
    let metrics = Arc::new(Metrics::new());
    let missing = dir.path().join("missing.pem");
    let cases = [
        (
            "embedded = false\nurl = \"mqtts://broker.invalid\"".to_owned(),
            "mqtt.ca_file:",
        ),
        (
            format!(
                "embedded = false\nurl = \"mqtts://broker.invalid\"\nca_file = \"{}\"",
                missing.display()
            ),
            "mqtt.ca_file:",
        ),
        (
            format!(
                "embedded = false\nurl = \"mqtt://broker.invalid\"\nusername = \"gw\"\npassword_file = \"{}\"",
                missing.display()
            ),
            "mqtt.password_file:",
        ),
    ];
    for (mqtt_section, field) in cases {
        let cfg = gateway_config(dir.path(), "gw", &mqtt_section);
        let e = mqtt::start(&cfg, tx.clone(), metrics.clone(), stop_rx.clone())
            .await
            .unwrap_err();
        assert!(e.starts_with(field), "{mqtt_section}: {e}");
    }
    // An empty CA file.
    let empty = dir.path().join("empty.pem");
    std::fs::write(&empty, "").unwrap();
    let cfg = gateway_config(
        dir.path(),
        "gw",
        &format!(
            "embedded = false\nurl = \"mqtts://broker.invalid\"\nca_file = \"{}\"",
            empty.display()
        ),
    );
    let e = mqtt::start(&cfg, tx, metrics, stop_rx).await.unwrap_err();
    assert!(e.contains("no PEM certificate"), "{e}");
}
