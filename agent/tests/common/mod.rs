//! Shared helpers of the agent's delivery tests: an embedded broker (rumqttd, MQTT 3.1.1
//! only), a private Mosquitto process, a cuttable TCP proxy in front of a broker, a collector
//! that plays the gateway's part (subscribe, keep every payload), the chain check, and a small
//! simulated plant.
#![allow(dead_code, unreachable_pub)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use shopfloor_core::batch;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// A free TCP port on loopback (bound and released; good enough for tests).
pub fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// A unique name for topics, schemas and files of one test.
pub fn unique(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{prefix}-{}-{nanos}", std::process::id())
}

/// Starts rumqttd on `port` (v4 listener only) on its own thread. rumqttd has no shutdown:
/// the broker lives until the test process exits, so a "restart" is a new broker on a new
/// port behind the same [`Proxy`].
pub fn embedded_broker(port: u16) {
    let toml = format!(
        r#"
        id = 0
        [router]
        id = 0
        max_connections = 100
        max_outgoing_packet_count = 200
        max_segment_size = 104857600
        max_segment_count = 10
        [v4.1]
        name = "v4-1"
        listen = "127.0.0.1:{port}"
        next_connection_delay_ms = 1
          [v4.1.connections]
          connection_timeout_ms = 5000
          max_payload_size = 16777216
          max_inflight_count = 100
          dynamic_filters = true
        "#
    );
    let config: rumqttd::Config = toml::from_str(&toml).unwrap();
    std::thread::spawn(move || {
        let mut broker = rumqttd::Broker::new(config);
        let _ = broker.start();
    });
    wait_listening(port);
}

pub fn wait_listening(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("nothing listens on port {port}");
}

/// A private Mosquitto process (the real broker) on `port`. With `persistent`, it saves its
/// sessions on a clean stop and restores them on start, as a production broker should.
pub struct Mosquitto {
    child: Option<std::process::Child>,
    pub port: u16,
    bin: &'static str,
    conf: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl Mosquitto {
    /// `None` when the mosquitto binary is not installed.
    pub fn start(port: u16, persistent: bool) -> Option<Mosquitto> {
        let bin = [
            "/usr/sbin/mosquitto",
            "/usr/bin/mosquitto",
            "/usr/local/sbin/mosquitto",
        ]
        .into_iter()
        .find(|p| Path::new(p).exists())?;
        let dir = tempfile::tempdir().unwrap();
        let conf = dir.path().join("mosquitto.conf");
        let mut text = format!(
            // max_queued_messages 0: a persistent session's queue is unbounded (Mosquitto's
            // default of 1000 drops QoS 1 messages for a subscriber that is away longer), as
            // deploy/ recommends for the gateway's broker.
            "listener {port} 127.0.0.1\nallow_anonymous true\nmax_inflight_messages 100\nmax_queued_messages 0\nmessage_size_limit 16777216\n"
        );
        if persistent {
            text += &format!(
                "persistence true\npersistence_location {}/\n",
                dir.path().display()
            );
        } else {
            text += "persistence false\n";
        }
        std::fs::write(&conf, text).unwrap();
        let mut m = Mosquitto {
            child: None,
            port,
            bin,
            conf,
            _dir: dir,
        };
        m.restart();
        Some(m)
    }

    /// Starts the process again (after [`Mosquitto::stop`] or [`Mosquitto::kill`]).
    pub fn restart(&mut self) {
        let child = std::process::Command::new(self.bin)
            .arg("-c")
            .arg(&self.conf)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        self.child = Some(child);
        wait_listening(self.port);
    }

    /// Clean stop (SIGTERM): a persistent broker writes its sessions to disk.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = std::process::Command::new("kill")
                .arg("-TERM")
                .arg(c.id().to_string())
                .status();
            let _ = c.wait();
        }
    }

    /// SIGKILL.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A TCP proxy whose upstream can be cut (every connection closed, new ones refused) and
/// changed: what an agent sees of a broker outage or a restarted broker.
#[derive(Clone)]
pub struct Proxy {
    pub port: u16,
    ctl: watch::Sender<(bool, SocketAddr)>,
}

impl Proxy {
    pub async fn start(upstream: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (ctl, rx) = watch::channel((true, upstream));
        tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    return;
                };
                let (open, up) = *rx.borrow();
                if !open {
                    drop(client);
                    continue;
                }
                let mut rx = rx.clone();
                tokio::spawn(async move {
                    let Ok(server) = TcpStream::connect(up).await else {
                        return;
                    };
                    let (mut cr, mut cw) = client.into_split();
                    let (mut sr, mut sw) = server.into_split();
                    tokio::select! {
                        _ = tokio::io::copy(&mut cr, &mut sw) => {}
                        _ = tokio::io::copy(&mut sr, &mut cw) => {}
                        _ = async { loop {
                            if rx.changed().await.is_err() { break; }
                            let (open, now) = *rx.borrow();
                            if !open || now != up { break; }
                        } } => {}
                    }
                });
            }
        });
        Proxy { port, ctl }
    }

    pub fn cut(&self) {
        self.ctl.send_modify(|c| c.0 = false);
    }

    pub fn restore(&self) {
        self.ctl.send_modify(|c| c.0 = true);
    }

    pub fn set_upstream(&self, addr: SocketAddr) {
        self.ctl.send_modify(|c| c.1 = addr);
    }
}

/// Plays the gateway: subscribes to `<prefix>/+/batch` with a persistent session and keeps
/// every payload in arrival order (duplicates included).
#[derive(Clone)]
pub struct Collector {
    pub payloads: Arc<Mutex<Vec<Vec<u8>>>>,
    /// Status messages: (retained flag, payload).
    pub status: Arc<Mutex<Vec<Status>>>,
}

pub type Status = (bool, Vec<u8>);

impl Collector {
    pub fn start(port: u16, prefix: &str) -> Collector {
        let payloads = Arc::new(Mutex::new(Vec::new()));
        let status = Arc::new(Mutex::new(Vec::new()));
        let mut o = MqttOptions::new(unique("collector"), "127.0.0.1", port);
        o.set_keep_alive(Duration::from_secs(5))
            .set_clean_session(false)
            .set_max_packet_size(16 << 20, 16 << 20);
        let (client, mut el) = AsyncClient::new(o, 100);
        let batch_filter = format!("{prefix}/+/batch");
        let status_filter = format!("{prefix}/+/status");
        let (p, s) = (payloads.clone(), status.clone());
        tokio::spawn(async move {
            loop {
                match el.poll().await {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        let _ = client.try_subscribe(batch_filter.clone(), QoS::AtLeastOnce);
                        let _ = client.try_subscribe(status_filter.clone(), QoS::AtLeastOnce);
                    }
                    Ok(Event::Incoming(Packet::Publish(m))) => {
                        if m.topic.ends_with("/batch") {
                            p.lock().unwrap().push(m.payload.to_vec());
                        } else {
                            s.lock().unwrap().push((m.retain, m.payload.to_vec()));
                        }
                    }
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
                }
            }
        });
        Collector { payloads, status }
    }

    pub fn count(&self) -> usize {
        self.payloads.lock().unwrap().len()
    }

    pub fn all(&self) -> Vec<Vec<u8>> {
        self.payloads.lock().unwrap().clone()
    }
}

/// What the gateway would conclude from the payloads received.
#[derive(Debug)]
pub struct ChainReport {
    /// Distinct batches, by seq.
    pub batches: BTreeMap<u64, batch::Body>,
    pub duplicates: usize,
}

/// Opens and verifies every payload (signature with `public_key`), dedupes by seq, and checks
/// that the distinct seqs are 1..=n without a gap, that first arrivals are in seq order, and
/// that every `prev` is the hash of the previous body. Panics with the reason otherwise.
pub fn check_chain(payloads: &[Vec<u8>], public_key: &str) -> ChainReport {
    let key = batch::parse_public_key(public_key).unwrap();
    let mut batches: BTreeMap<u64, (batch::Body, String)> = BTreeMap::new();
    let mut duplicates = 0;
    let mut first_arrivals = Vec::new();
    for p in payloads {
        let opened = batch::open(p).unwrap_or_else(|e| panic!("payload does not open: {e}"));
        opened
            .verify(&key)
            .unwrap_or_else(|e| panic!("seq {}: {e}", opened.body.seq));
        let seq = opened.body.seq;
        if let Some((b, h)) = batches.get(&seq) {
            assert_eq!(
                h, &opened.body_hash,
                "seq {seq} arrived twice with different bodies"
            );
            assert_eq!(b, &opened.body);
            duplicates += 1;
        } else {
            first_arrivals.push(seq);
            batches.insert(seq, (opened.body.clone(), opened.body_hash.clone()));
        }
    }
    let mut sorted = first_arrivals.clone();
    sorted.sort_unstable();
    assert_eq!(first_arrivals, sorted, "batches first arrived out of order");
    let n = batches.len() as u64;
    let seqs: Vec<u64> = batches.keys().copied().collect();
    assert_eq!(seqs, (1..=n).collect::<Vec<_>>(), "gap in seqs");
    let mut prev = batch::ZERO_HASH.to_string();
    for (seq, (b, h)) in &batches {
        assert_eq!(
            b.prev, prev,
            "seq {seq}: prev does not link to the previous body"
        );
        prev = h.clone();
    }
    ChainReport {
        batches: batches.into_iter().map(|(k, (b, _))| (k, b)).collect(),
        duplicates,
    }
}

/// Waits until `f` is true or panics after `limit` with `what`.
pub async fn wait_until(limit: Duration, what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A small plant on one Modbus TCP server: a CNC (unit 1) cycling through production, stops
/// and setups, and an electricity meter (unit 2), simulated time ×60.
pub const PLANT: &str = r#"
name = "agent test plant"
time_scale = 60
tick_ms = 100

[[modbus_tcp]]
name = "gw"
listen = "127.0.0.1:0"

[[device]]
name = "cnc-01"
template = "cnc-modbus-generic"
server = "gw"
unit = 1
[device.machine]
cycle_s = 30
scrap_every = 10
phases = [
  { state = "producing", for_s = 600 },
  { state = "stopped", for_s = 60 },
  { state = "producing", for_s = 600 },
  { state = "setup", for_s = 300 },
]

[[device]]
name = "meter-01"
template = "eastron-sdm630"
server = "gw"
unit = 2
[[device.ramp]]
point = "energy_import_kwh"
per_hour = 25.0
start = 1000
"#;

pub async fn start_plant() -> shopfloor_sim::Plant {
    let loaded = shopfloor_sim::Scenario::from_str(PLANT, "plant.toml", Path::new(".")).unwrap();
    shopfloor_sim::Plant::start(loaded, shopfloor_sim::StartOptions::default())
        .await
        .unwrap()
}

/// An agent configuration for the test plant.
pub fn agent_config(
    data_dir: &Path,
    plant: SocketAddr,
    mqtt_port: u16,
    prefix: &str,
    agent_id: &str,
) -> String {
    format!(
        r#"
[agent]
id = "{agent_id}"
workshop = "p1/e1/w1"
data_dir = "{data}"

[mqtt]
url = "mqtt://127.0.0.1:{mqtt_port}"
topic_prefix = "{prefix}"
keep_alive_s = 5
reconnect_min_ms = 100
reconnect_max_ms = 1000

[batch]
interval_s = 1
heartbeat_s = 60


[metrics]
listen = "off"

[[product]]
id = "shaft-a"
ideal_cycle_s = 25.0
value_added_per_unit_cny = 12.5

[[bus]]
name = "gw"
host = "127.0.0.1"
port = {port}
timeout_ms = 500

[[device]]
id = "p1/e1/w1/l1/cnc-01"
template = "cnc-modbus-generic"
bus = "gw"
unit = 1
poll_ms = 200
product = "shaft-a"
key_process = "machining"

[[device]]
id = "p1/e1/w1/m-01"
template = "eastron-sdm630"
bus = "gw"
unit = 2
poll_ms = 200
"#,
        data = data_dir.display(),
        port = plant.port(),
    )
}
