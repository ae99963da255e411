#![allow(clippy::unwrap_used, clippy::expect_used)]
//! No acknowledged reading is lost: broker outages and restarts (embedded rumqttd everywhere,
//! real Mosquitto where available and always in CI), SIGKILL of the agent while it publishes,
//! and a full disk budget. Every test plays the gateway with a [`common::Collector`] and checks
//! the chain the gateway would check: signatures, seq 1..=n without gaps, first arrivals in
//! order, prev links, windows without gaps.

mod common;

use std::io::Write as _;
use std::path::Path;
use std::time::Duration;

use common::*;
use shopfloor_agent::outbox::{Fsync, Outbox, OutboxConfig};
use tokio::sync::watch;

/// Consecutive windows must tile time: each batch starts where the previous one ended.
fn assert_windows_contiguous(report: &ChainReport) {
    let mut last_to = None;
    for (seq, b) in &report.batches {
        if let Some(t) = last_to {
            assert_eq!(
                b.from, t,
                "seq {seq}: window does not start where the previous ended"
            );
        }
        last_to = Some(b.to);
    }
}

async fn outbox_stats(data_dir: &Path) -> shopfloor_agent::outbox::OutboxStats {
    let o = Outbox::open(OutboxConfig {
        path: data_dir.join("outbox.db"),
        budget_bytes: 1 << 30,
        fsync: Fsync::Normal,
    })
    .await
    .unwrap();
    o.stats().await.unwrap()
}

/// Seqs still waiting in the outbox (sealed, not acknowledged).
async fn outbox_unacked(data_dir: &Path) -> Vec<u64> {
    let o = Outbox::open(OutboxConfig {
        path: data_dir.join("outbox.db"),
        budget_bytes: 1 << 30,
        fsync: Fsync::Normal,
    })
    .await
    .unwrap();
    o.unacked(0, 100_000)
        .await
        .unwrap()
        .into_iter()
        .map(|s| s.seq)
        .collect()
}

/// A data directory with the agent's key, and a config file for the test plant.
struct AgentFiles {
    dir: tempfile::TempDir,
    data: std::path::PathBuf,
    /// The agent's public key (`ed25519:…`).
    pk: String,
    cfg: std::path::PathBuf,
    /// The config file's text.
    text: String,
}

fn agent_files(
    plant: &shopfloor_sim::Plant,
    mqtt_port: u16,
    prefix: &str,
    agent_id: &str,
) -> AgentFiles {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let pk = public_key(&data);
    let text = agent_config(
        &data,
        plant.tcp_addr("gw").unwrap(),
        mqtt_port,
        prefix,
        agent_id,
    );
    let cfg = write_config(dir.path(), &text);
    AgentFiles {
        dir,
        data,
        pk,
        cfg,
        text,
    }
}

fn write_config(dir: &Path, text: &str) -> std::path::PathBuf {
    let p = dir.join("agent.toml");
    std::fs::write(&p, text).unwrap();
    p
}

/// Runs the agent in process; returns its stop switch and task.
fn start_agent(
    config: &Path,
) -> (
    watch::Sender<bool>,
    tokio::task::JoinHandle<Result<(), shopfloor_agent::run::RunError>>,
) {
    let cfg = shopfloor_agent::config::load(config).unwrap_or_else(|e| panic!("{e}"));
    let (stop, stop_rx) = watch::channel(false);
    let task = tokio::spawn(shopfloor_agent::run::run(cfg, stop_rx));
    (stop, task)
}

fn public_key(data_dir: &Path) -> String {
    let key = shopfloor_agent::identity::load_or_create(data_dir).unwrap();
    shopfloor_core::batch::public_key_text(&key.verifying_key())
}

/// All seqs up to the chain head are either received or still in the outbox, and nothing
/// received is missing from the chain.
async fn assert_nothing_lost(data_dir: &Path, report: &ChainReport) {
    let stats = outbox_stats(data_dir).await;
    let unacked = outbox_unacked(data_dir).await;
    let received: Vec<u64> = report.batches.keys().copied().collect();
    for seq in 1..=stats.last_seq {
        assert!(
            received.contains(&seq) || unacked.contains(&seq),
            "seq {seq} was sealed but neither received nor kept in the outbox"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_broker_outage_then_restart_loses_nothing() {
    let plant = start_plant().await;
    let port_a = free_port();
    embedded_broker(port_a);
    let proxy = Proxy::start(([127, 0, 0, 1], port_a).into()).await;
    let prefix = unique("t-outage");
    let collector_a = Collector::start(port_a, &prefix);
    let AgentFiles {
        dir: _dir,
        data,
        pk,
        cfg,
        ..
    } = agent_files(&plant, proxy.port, &prefix, "agent-outage");
    let (stop, task) = start_agent(&cfg);
    wait_until(Duration::from_secs(30), "three batches", || {
        collector_a.count() >= 3
    })
    .await;

    // The broker goes away: acquisition goes on, batches pile up in the outbox.
    proxy.cut();
    let before = collector_a.count();
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(
        collector_a.count() <= before + 1,
        "published while the broker was away"
    );

    // A different broker comes back (a restart without persistence: no session).
    let port_b = free_port();
    embedded_broker(port_b);
    let collector_b = Collector::start(port_b, &prefix);
    tokio::time::sleep(Duration::from_millis(500)).await;
    proxy.set_upstream(([127, 0, 0, 1], port_b).into());
    proxy.restore();
    let n_after_outage = before + 8;
    wait_until(Duration::from_secs(60), "the backlog to drain", || {
        collector_a.count() + collector_b.count() >= n_after_outage
    })
    .await;
    let _ = stop.send(true);
    task.await.unwrap().unwrap();

    let mut all = collector_a.all();
    all.extend(collector_b.all());
    let report = check_chain(&all, &pk);
    assert_windows_contiguous(&report);
    assert_nothing_lost(&data, &report).await;
    let with_states = report
        .batches
        .values()
        .flat_map(|b| &b.devices)
        .filter(|d| !d.states.is_empty())
        .count();
    assert!(with_states > 0, "no state intervals delivered");
    eprintln!(
        "outage: {} batches, {} duplicates dropped by seq",
        report.batches.len(),
        report.duplicates
    );
    plant.stop().await;
}

/// The broker of CI is the machine's Mosquitto; a restart needs a private one (the same binary).
fn mosquitto_required() -> bool {
    std::env::var_os("SHOPFLOOR_TEST_MQTT_URL").is_some()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mosquitto_restart_loses_nothing() {
    let port = free_port();
    let Some(mut broker) = Mosquitto::start(port, true) else {
        assert!(
            !mosquitto_required(),
            "SHOPFLOOR_TEST_MQTT_URL is set (CI) but no mosquitto binary was found"
        );
        let _ = writeln!(
            std::io::stderr(),
            "SKIPPED mosquitto_restart_loses_nothing: no mosquitto binary on this machine"
        );
        return;
    };
    let plant = start_plant().await;
    let prefix = unique("t-restart");
    let collector = Collector::start(port, &prefix);
    let AgentFiles {
        dir: _dir,
        data,
        pk,
        cfg,
        ..
    } = agent_files(&plant, port, &prefix, "agent-restart");
    let (stop, task) = start_agent(&cfg);
    wait_until(Duration::from_secs(30), "three batches", || {
        collector.count() >= 3
    })
    .await;
    // Stop Mosquitto (SIGTERM: it saves its sessions), wait, start it again on the same port.
    broker.stop();
    tokio::time::sleep(Duration::from_secs(4)).await;
    let before = collector.count();
    broker.restart();
    wait_until(Duration::from_secs(60), "the backlog to drain", || {
        collector.count() >= before + 6
    })
    .await;
    let _ = stop.send(true);
    task.await.unwrap().unwrap();
    let report = check_chain(&collector.all(), &pk);
    assert_windows_contiguous(&report);
    assert_nothing_lost(&data, &report).await;
    plant.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mosquitto_outage_loses_nothing() {
    let Some(url) = std::env::var("SHOPFLOOR_TEST_MQTT_URL").ok() else {
        let _ = writeln!(
            std::io::stderr(),
            "SKIPPED mosquitto_outage_loses_nothing: set SHOPFLOOR_TEST_MQTT_URL (e.g. mqtt://127.0.0.1:1883) to run it against Mosquitto"
        );
        return;
    };
    let hostport = url.trim_start_matches("mqtt://").trim_end_matches('/');
    let addr: std::net::SocketAddr = hostport.parse().expect("SHOPFLOOR_TEST_MQTT_URL host:port");
    let plant = start_plant().await;
    let proxy = Proxy::start(addr).await;
    let prefix = unique("t-mosq-outage");
    let collector = Collector::start(addr.port(), &prefix);
    let agent_id = unique("agent-mosq");
    let AgentFiles {
        dir: _dir,
        data,
        pk,
        cfg,
        ..
    } = agent_files(&plant, proxy.port, &prefix, &agent_id);
    let (stop, task) = start_agent(&cfg);
    wait_until(Duration::from_secs(30), "three batches", || {
        collector.count() >= 3
    })
    .await;
    proxy.cut();
    tokio::time::sleep(Duration::from_secs(5)).await;
    let before = collector.count();
    proxy.restore();
    wait_until(Duration::from_secs(60), "the backlog to drain", || {
        collector.count() >= before + 6
    })
    .await;
    let _ = stop.send(true);
    task.await.unwrap().unwrap();
    let report = check_chain(&collector.all(), &pk);
    assert_windows_contiguous(&report);
    assert_nothing_lost(&data, &report).await;
    // Leave nothing behind on the shared broker: clear the retained status.
    plant.stop().await;
    clear_retained(addr.port(), &format!("{prefix}/{agent_id}/status")).await;
}

async fn clear_retained(port: u16, topic: &str) {
    let mut o = rumqttc::MqttOptions::new(unique("cleaner"), "127.0.0.1", port);
    o.set_keep_alive(Duration::from_secs(5));
    let (c, mut el) = rumqttc::AsyncClient::new(o, 10);
    c.publish(topic, rumqttc::QoS::AtLeastOnce, true, Vec::new())
        .await
        .unwrap();
    let _ = tokio::time::timeout(Duration::from_secs(3), async {
        loop {
            if let Ok(rumqttc::Event::Incoming(rumqttc::Packet::PubAck(_))) = el.poll().await {
                break;
            }
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_while_publishing_loses_nothing_and_the_chain_continues() {
    let plant = start_plant().await;
    let port = free_port();
    embedded_broker(port);
    let proxy = Proxy::start(([127, 0, 0, 1], port).into()).await;
    let prefix = unique("t-kill");
    let collector = Collector::start(port, &prefix);
    let AgentFiles {
        dir: _dir,
        data,
        pk,
        cfg,
        ..
    } = agent_files(&plant, proxy.port, &prefix, "agent-kill");
    let spawn = || {
        std::process::Command::new(env!("CARGO_BIN_EXE_shopfloor-agent"))
            .arg("run")
            .arg("--config")
            .arg(&cfg)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap()
    };
    let mut agent = spawn();
    wait_until(Duration::from_secs(30), "two batches", || {
        collector.count() >= 2
    })
    .await;
    // Build a backlog, then kill the agent while it drains it.
    proxy.cut();
    tokio::time::sleep(Duration::from_secs(4)).await;
    proxy.restore();
    let before = collector.count();
    wait_until(Duration::from_secs(30), "the drain to start", || {
        collector.count() > before
    })
    .await;
    agent.kill().unwrap(); // SIGKILL
    agent.wait().unwrap();
    let seq_before_kill = collector.count();
    let mut agent = spawn();
    wait_until(Duration::from_secs(60), "batches after the restart", || {
        collector.count() >= seq_before_kill + 5
    })
    .await;
    // Stop cleanly (SIGTERM).
    std::process::Command::new("kill")
        .arg("-TERM")
        .arg(agent.id().to_string())
        .status()
        .unwrap();
    agent.wait().unwrap();
    // Windows are not contiguous across the kill: readings still in memory (at most one batch
    // interval, never acknowledged to anyone) die with the process; everything durable arrives.
    let report = check_chain(&collector.all(), &pk);
    assert_nothing_lost(&data, &report).await;
    assert!(report.batches.len() >= 7);
    plant.stop().await;
}

/// GET `path` from a local HTTP server: the body.
async fn http_get(port: u16, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    s.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    out.split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default()
}

/// The value of an unlabelled metric in OpenMetrics text.
fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|r| r.strip_prefix(' ')))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no metric {name} in\n{text}"))
}

/// Two meters, every point ramping, so the agent produces raw samples fast.
fn busy_plant() -> String {
    let points = [
        "voltage_l1_v",
        "voltage_l2_v",
        "voltage_l3_v",
        "current_l1_a",
        "current_l2_a",
        "current_l3_a",
        "power_l1_w",
        "power_l2_w",
        "power_l3_w",
        "power_total_w",
        "apparent_power_total_va",
        "reactive_power_total_var",
        "frequency_hz",
        "energy_import_kwh",
        "energy_export_kwh",
        "reactive_energy_import_kvarh",
        "reactive_energy_export_kvarh",
        "power_demand_w",
        "power_demand_max_w",
        "energy_total_kwh",
        "reactive_energy_total_kvarh",
    ];
    let mut s = String::from(
        "name = \"busy\"\ntime_scale = 60\ntick_ms = 10\n[[modbus_tcp]]\nname = \"gw\"\nlisten = \"127.0.0.1:0\"\n",
    );
    for (unit, name) in [(1, "meter-a"), (2, "meter-b")] {
        s += &format!(
            "[[device]]\nname = \"{name}\"\ntemplate = \"eastron-sdm630\"\nserver = \"gw\"\nunit = {unit}\n"
        );
        for (i, p) in points.iter().enumerate() {
            s += &format!(
                "[[device.ramp]]\npoint = \"{p}\"\nper_hour = {}\nstart = 100\n",
                50 + i
            );
        }
    }
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_budget_drops_oldest_raw_samples_keeps_the_rest_and_counts() {
    let loaded =
        shopfloor_sim::Scenario::from_str(&busy_plant(), "busy.toml", Path::new(".")).unwrap();
    let plant = shopfloor_sim::Plant::start(loaded, shopfloor_sim::StartOptions::default())
        .await
        .unwrap();
    let port = free_port();
    embedded_broker(port);
    let proxy = Proxy::start(([127, 0, 0, 1], port).into()).await;
    proxy.cut();
    let prefix = unique("t-budget");
    let collector = Collector::start(port, &prefix);
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let pk = public_key(&data);
    let metrics_port = free_port();
    let cfg_text = format!(
        r#"
[agent]
id = "agent-budget"
workshop = "p1/e1/w1"
data_dir = "{data}"
[mqtt]
url = "mqtt://127.0.0.1:{mqtt}"
topic_prefix = "{prefix}"
keep_alive_s = 5
reconnect_min_ms = 100
reconnect_max_ms = 500
[batch]
interval_s = 1
heartbeat_s = 60
[outbox]
budget_mb = 1
fsync = "normal"
[metrics]
listen = "127.0.0.1:{metrics_port}"
[[bus]]
name = "gw"
host = "127.0.0.1"
port = {plant_port}
[[device]]
id = "p1/e1/w1/meter-a"
template = "eastron-sdm630"
bus = "gw"
unit = 1
poll_ms = 20
[[device]]
id = "p1/e1/w1/meter-b"
template = "eastron-sdm630"
bus = "gw"
unit = 2
poll_ms = 20
"#,
        data = data.display(),
        mqtt = proxy.port,
        plant_port = plant.tcp_addr("gw").unwrap().port(),
    );
    let cfg = write_config(dir.path(), &cfg_text);
    let (stop, task) = start_agent(&cfg);

    // The broker is away from the start: the outbox fills until the budget bites.
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    let text = loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let text = http_get(metrics_port, "/metrics").await;
        if metric(&text, "shopfloor_agent_outbox_dropped_samples_total") > 0.0 {
            break text;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the budget never bit:\n{text}"
        );
    };
    // A second later the stripping has settled at the budget.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let text2 = http_get(metrics_port, "/metrics").await;
    let bytes = metric(&text2, "shopfloor_agent_outbox_bytes");
    assert!(
        bytes <= (1 << 20) as f64 * 1.05,
        "outbox holds {bytes} bytes over a 1 MiB budget"
    );
    assert_eq!(
        metric(&text, "shopfloor_agent_outbox_dropped_batches_total"),
        0.0
    );
    let health = http_get(metrics_port, "/healthz").await;
    assert!(health.contains("\"mqtt_connected\":false"), "{health}");

    // The broker comes back: everything left is delivered, stripped batches included.
    proxy.restore();
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    let final_text = loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let t = http_get(metrics_port, "/metrics").await;
        if metric(&t, "shopfloor_agent_outbox_batches") == 0.0
            || (metric(&t, "shopfloor_agent_outbox_batches") <= 1.0
                && metric(&t, "shopfloor_agent_outbox_sealed") == 0.0)
        {
            break t;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "backlog not drained:\n{t}"
        );
    };
    let dropped_metric = metric(&final_text, "shopfloor_agent_outbox_dropped_samples_total");
    let _ = stop.send(true);
    task.await.unwrap().unwrap();

    let report = check_chain(&collector.all(), &pk);
    assert_windows_contiguous(&report);
    assert_nothing_lost(&data, &report).await;
    let mut stripped = 0;
    let mut dropped_in_batches = 0u64;
    for b in report.batches.values() {
        for d in &b.devices {
            if let Some(x) = d.dropped {
                dropped_in_batches += x.samples;
                stripped += 1;
                assert!(d.samples.is_empty(), "a stripped device kept raw samples");
                assert!(!d.summaries.is_empty(), "summaries must survive stripping");
                assert!(
                    d.counters
                        .iter()
                        .any(|c| c.role == "electricity" && !c.readings.is_empty()),
                    "meter readings must survive stripping"
                );
            }
        }
    }
    assert!(stripped > 0, "no delivered batch was stripped");
    // Oldest first: once a batch still has raw samples, no later batch was stripped.
    let mut seen_full = false;
    for b in report.batches.values() {
        let was_stripped = b.devices.iter().any(|d| d.dropped.is_some());
        if !was_stripped {
            seen_full = true;
        }
        assert!(
            !(seen_full && was_stripped),
            "a newer batch was stripped before an older one"
        );
    }
    assert_eq!(
        dropped_in_batches as f64, dropped_metric,
        "dropped samples in the batches and on /metrics differ"
    );
    eprintln!(
        "budget: {} batches, {stripped} device entries stripped, {dropped_in_batches} raw samples dropped",
        report.batches.len()
    );
    plant.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_applies_device_changes_and_rejects_a_bad_file_without_losing_data() {
    let plant = start_plant().await;
    let port = free_port();
    embedded_broker(port);
    let prefix = unique("t-reload");
    let collector = Collector::start(port, &prefix);
    let AgentFiles {
        dir: _dir,
        data,
        pk,
        cfg,
        text: full,
    } = agent_files(&plant, port, &prefix, "agent-reload");
    // First without the meter.
    let (cnc_only, _) = full.split_at(full.find("[[device]]\nid = \"p1/e1/w1/m-01\"").unwrap());
    std::fs::write(&cfg, cnc_only).unwrap();
    let (stop, task) = start_agent(&cfg);
    wait_until(Duration::from_secs(30), "three batches", || {
        collector.count() >= 3
    })
    .await;

    let has_meter = |c: &Collector| {
        c.all().iter().any(|p| {
            shopfloor_core::batch::open(p)
                .unwrap()
                .body
                .devices
                .iter()
                .any(|d| d.id == "p1/e1/w1/m-01")
        })
    };
    assert!(!has_meter(&collector));
    // Add the meter by editing the file: applied without a restart.
    std::fs::write(&cfg, &full).unwrap();
    wait_until(Duration::from_secs(30), "the added meter's data", || {
        has_meter(&collector)
    })
    .await;
    // A broken file is rejected; the running configuration goes on.
    std::fs::write(&cfg, full.replace("unit = 2", "unit = 999")).unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let n = collector.count();
    wait_until(
        Duration::from_secs(20),
        "batches after the rejected reload",
        || collector.count() >= n + 2,
    )
    .await;
    let _ = stop.send(true);
    task.await.unwrap().unwrap();

    let report = check_chain(&collector.all(), &pk);
    assert_windows_contiguous(&report);
    assert_nothing_lost(&data, &report).await;
    // The CNC never stopped reporting: every batch after the first carries its data.
    for (seq, b) in report.batches.iter().skip(1) {
        assert!(
            b.devices.iter().any(|d| d.id == "p1/e1/w1/l1/cnc-01"),
            "seq {seq} lacks the CNC"
        );
    }
    let last = report.batches.values().last().unwrap();
    assert!(
        last.devices.iter().any(|d| d.id == "p1/e1/w1/m-01"),
        "the meter stopped after the rejected reload"
    );
    plant.stop().await;
}
