#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Agent RSS and CPU when idle and when polling 50 devices.
//!
//! Processes:
//! - `shopfloor-sim` (a separate process): 5 Modbus TCP servers × 10 unit ids, 50 CNC machines
//!   of the built-in template `cnc-modbus-generic` (15 points each), each cycling through
//!   producing, stops, setup and alarms with its own cycle time at simulated time ×10, so
//!   states and part counters change during the run;
//! - this process: an embedded rumqttd broker (MQTT 3.1.1 listener only) and a subscriber
//!   counting the batches the agent publishes;
//! - the `shopfloor-agent` release binary (`run --config`), started twice:
//!   (a) **idle baseline**: the same agent with no device at all (the configuration allows
//!   zero devices), publishing to the broker, metrics on;
//!   (b) **polling**: 50 devices on 5 buses, `poll_ms = 1000`, `batch.interval_s = 5`,
//!   `outbox.fsync = "full"` (the default), publishing to the broker.
//!
//! Each run: start, 5 s warm-up, then a 20 s window. Figures: agent CPU (utime + stime from
//! /proc/<pid>/stat) as % of one core, VmRSS sampled every 250 ms (mean and last), VmHWM
//! (peak RSS since start) from /proc/<pid>/status, readings received by the agent per second
//! (sum of `shopfloor_agent_device_samples_total` on its /metrics, before and after), batches
//! and bytes received by the subscriber, and the ratios (b)/(a). Linux only (reads /proc).
//!
//! Run:
//!   cargo build --profile bench -p shopfloor-sim --bin shopfloor-sim
//!   cargo bench -p shopfloor-agent --bench footprint
//! The simulator is looked up next to the agent binary (target/release/shopfloor-sim), or at
//! SHOPFLOOR_SIM_BIN. SHOPFLOOR_BENCH_SECS changes the 20 s window.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read as _, Write as _};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};

/// The delivery tests' helpers: embedded broker, free ports.
#[path = "../tests/common/mod.rs"]
mod common;
use common::{embedded_broker, free_port};

const SERVERS: usize = 5;
const UNITS: usize = 10;
const DEVICES: usize = SERVERS * UNITS;
const WARMUP: Duration = Duration::from_secs(5);
const PREFIX: &str = "bench";
const AGENT_ID: &str = "bench-footprint";

fn device_id(d: usize) -> String {
    format!("p1/e1/w1/l{}/cnc-{:02}", d / UNITS + 1, d + 1)
}

/// 50 CNC machines behind 5 Modbus TCP servers (unit ids 1..=10).
fn scenario() -> String {
    let mut s = String::from("name = \"footprint\"\ntime_scale = 10\ntick_ms = 100\n");
    for srv in 0..SERVERS {
        s += &format!("[[modbus_tcp]]\nname = \"s{srv}\"\nlisten = \"127.0.0.1:0\"\n");
    }
    for d in 0..DEVICES {
        let (srv, unit) = (d / UNITS, d % UNITS + 1);
        // Different cycle times and phase lengths, so the machines do not move in lockstep.
        let cycle = 20 + (d % 7) * 3;
        let first = 60 + (d % 11) * 15;
        s += &format!(
            r#"[[device]]
name = "cnc-{n:02}"
template = "cnc-modbus-generic"
server = "s{srv}"
unit = {unit}
[device.machine]
cycle_s = {cycle}
scrap_every = 25
phases = [
  {{ state = "producing", for_s = {first} }},
  {{ state = "stopped", for_s = 40 }},
  {{ state = "producing", for_s = 300 }},
  {{ state = "alarm", for_s = 30, alarm_code = 1001 }},
  {{ state = "producing", for_s = 200 }},
  {{ state = "setup", for_s = 90 }},
]
[device.values]
program_number = {prog}
feed_override_pct = 100
spindle_override_pct = 100
last_cycle_time_s = {cycle_ms}
[[device.ramp]]
point = "spindle_speed_rpm"
per_hour = 36000
start = 1000
while_producing = true
[[device.ramp]]
point = "power_on_hours"
per_hour = 10
start = {hours}
"#,
            n = d + 1,
            prog = 1000 + d,
            cycle_ms = cycle * 1000,
            hours = 10_000 + d * 100,
        );
    }
    s
}

fn agent_config(
    data: &Path,
    mqtt_port: u16,
    metrics_port: u16,
    servers: Option<&[SocketAddr]>,
) -> String {
    let mut s = format!(
        r#"[agent]
id = "{AGENT_ID}"
workshop = "p1/e1/w1"
data_dir = "{data}"

[mqtt]
url = "mqtt://127.0.0.1:{mqtt_port}"
topic_prefix = "{PREFIX}"

[batch]
interval_s = 5

[metrics]
listen = "127.0.0.1:{metrics_port}"
"#,
        data = data.display(),
    );
    if let Some(servers) = servers {
        for (srv, a) in servers.iter().enumerate() {
            s += &format!(
                "\n[[bus]]\nname = \"s{srv}\"\nhost = \"127.0.0.1\"\nport = {}\n",
                a.port()
            );
        }
        for d in 0..DEVICES {
            s += &format!(
                "\n[[device]]\nid = \"{}\"\ntemplate = \"cnc-modbus-generic\"\nbus = \"s{}\"\nunit = {}\npoll_ms = 1000\n",
                device_id(d),
                d / UNITS,
                d % UNITS + 1
            );
        }
    }
    s
}

/// CPU seconds (user + system) of a process, from /proc/<pid>/stat.
fn cpu_seconds(pid: u32) -> f64 {
    cpu_seconds_of(&format!("/proc/{pid}/stat"))
}

fn cpu_seconds_of(path: &str) -> f64 {
    let Ok(stat) = std::fs::read_to_string(path) else {
        return f64::NAN;
    };
    let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
        return f64::NAN;
    };
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        f.get(i)
            .and_then(|x| x.parse::<f64>().ok())
            .unwrap_or(f64::NAN)
    };
    (ticks(11) + ticks(12)) / 100.0
}

/// CPU seconds per thread name (tokio workers summed), from /proc/<pid>/task/*/stat.
fn thread_cpu(pid: u32) -> BTreeMap<String, f64> {
    let mut m = BTreeMap::new();
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return m;
    };
    for t in tasks.flatten() {
        let Ok(comm) = std::fs::read_to_string(t.path().join("comm")) else {
            continue;
        };
        let Ok(tid) = t.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let cpu = cpu_seconds_of(&format!("/proc/{pid}/task/{tid}/stat"));
        if cpu.is_finite() {
            *m.entry(comm.trim().to_owned()).or_insert(0.0) += cpu;
        }
    }
    m
}

/// A `kB` field of /proc/<pid>/status (VmRSS, VmHWM), in MiB.
fn status_mib(pid: u32, field: &str) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix(field)?.strip_prefix(':').map(str::to_owned))
        })
        .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

fn wait_listening(port: u16, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

/// Batches (count, bytes) received on `<prefix>/+/batch`.
#[derive(Clone, Default)]
struct Counts {
    batches: Arc<AtomicU64>,
    bytes: Arc<AtomicU64>,
}

impl Counts {
    fn get(&self) -> (u64, u64) {
        (
            self.batches.load(Ordering::Relaxed),
            self.bytes.load(Ordering::Relaxed),
        )
    }
}

fn subscriber(port: u16) -> Counts {
    let counts = Counts::default();
    let mut o = MqttOptions::new("bench-subscriber", "127.0.0.1", port);
    o.set_keep_alive(Duration::from_secs(5))
        .set_max_packet_size(16 << 20, 16 << 20);
    let (client, mut el) = AsyncClient::new(o, 100);
    let c = counts.clone();
    tokio::spawn(async move {
        loop {
            match el.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(_))) => {
                    let _ = client.try_subscribe(format!("{PREFIX}/+/batch"), QoS::AtLeastOnce);
                }
                Ok(Event::Incoming(Packet::Publish(m))) if m.topic.ends_with("/batch") => {
                    c.batches.fetch_add(1, Ordering::Relaxed);
                    c.bytes.fetch_add(m.payload.len() as u64, Ordering::Relaxed);
                }
                Ok(_) => {}
                Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
    });
    counts
}

/// GET /metrics from the agent; the sum of `name` over every label set.
fn metric_sum(port: u16, name: &str) -> f64 {
    let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return f64::NAN;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    let req = "GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n";
    if s.write_all(req.as_bytes()).is_err() {
        return f64::NAN;
    }
    let mut text = String::new();
    let _ = s.read_to_string(&mut text);
    text.lines()
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|r| r.starts_with('{') || r.starts_with(' '))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[derive(Debug, Clone, Default)]
struct Figures {
    /// % of one core per thread name.
    threads: BTreeMap<String, f64>,
    cpu_pct: f64,
    rss_mean_mib: f64,
    rss_last_mib: f64,
    hwm_mib: f64,
    samples_per_s: f64,
    batches: u64,
    batch_kb: f64,
    sim_cpu_pct: f64,
}

fn terminate(child: &mut Child) {
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status();
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
}

async fn run_agent(
    agent_bin: &Path,
    dir: &Path,
    name: &str,
    config: impl Fn(&Path, u16) -> String,
    counts: &Counts,
    secs: f64,
    sim_pid: u32,
) -> Figures {
    let data = dir.join(format!("data-{name}"));
    let metrics_port = free_port();
    let cfg = dir.join(format!("agent-{name}.toml"));
    std::fs::write(&cfg, config(&data, metrics_port)).expect("write the agent config");
    let log = std::fs::File::create(dir.join(format!("agent-{name}.log"))).expect("log file");
    let mut child = Command::new(agent_bin)
        .arg("run")
        .arg("--config")
        .arg(&cfg)
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("start shopfloor-agent");
    let pid = child.id();
    if !wait_listening(metrics_port, Duration::from_secs(20)) {
        terminate(&mut child);
        let log =
            std::fs::read_to_string(dir.join(format!("agent-{name}.log"))).unwrap_or_default();
        panic!("agent ({name}) did not open its metrics port:\n{log}");
    }
    tokio::time::sleep(WARMUP).await;
    let samples_name = "shopfloor_agent_device_samples_total";
    let (cpu0, threads0, sim0, s0, c0, t0) = (
        cpu_seconds(pid),
        thread_cpu(pid),
        cpu_seconds(sim_pid),
        metric_sum(metrics_port, samples_name),
        counts.get(),
        Instant::now(),
    );
    let end = t0 + Duration::from_secs_f64(secs);
    let (mut rss_sum, mut rss_n, mut rss_last) = (0.0, 0u32, f64::NAN);
    while Instant::now() < end {
        let r = status_mib(pid, "VmRSS");
        if r.is_finite() {
            rss_sum += r;
            rss_n += 1;
            rss_last = r;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let elapsed = t0.elapsed().as_secs_f64();
    let (cpu1, threads1, sim1, s1, c1) = (
        cpu_seconds(pid),
        thread_cpu(pid),
        cpu_seconds(sim_pid),
        metric_sum(metrics_port, samples_name),
        counts.get(),
    );
    let hwm = status_mib(pid, "VmHWM");
    assert!(
        matches!(child.try_wait(), Ok(None)),
        "agent ({name}) exited during the run"
    );
    terminate(&mut child);
    let batches = c1.0 - c0.0;
    let threads = threads1
        .iter()
        .map(|(k, v)| {
            let before = threads0.get(k).copied().unwrap_or(0.0);
            (k.clone(), (v - before) / elapsed * 100.0)
        })
        .collect();
    Figures {
        threads,
        cpu_pct: (cpu1 - cpu0) / elapsed * 100.0,
        rss_mean_mib: rss_sum / f64::from(rss_n.max(1)),
        rss_last_mib: rss_last,
        hwm_mib: hwm,
        samples_per_s: (s1 - s0) / elapsed,
        batches,
        batch_kb: if batches > 0 {
            (c1.1 - c0.1) as f64 / batches as f64 / 1e3
        } else {
            0.0
        },
        sim_cpu_pct: (sim1 - sim0) / elapsed * 100.0,
    }
}

fn sim_binary(agent_bin: &Path) -> PathBuf {
    if let Some(p) = std::env::var_os("SHOPFLOOR_SIM_BIN") {
        return PathBuf::from(p);
    }
    let p = agent_bin.with_file_name("shopfloor-sim");
    assert!(
        p.exists(),
        "{} is missing: build it first with `cargo build --profile bench -p shopfloor-sim --bin shopfloor-sim` \
         (or point SHOPFLOOR_SIM_BIN at a shopfloor-sim binary)",
        p.display()
    );
    p
}

fn main() {
    let secs: f64 = std::env::var("SHOPFLOOR_BENCH_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20.0);
    let agent_bin = PathBuf::from(env!("CARGO_BIN_EXE_shopfloor-agent"));
    let sim_bin = sim_binary(&agent_bin);
    let dir = tempfile::Builder::new()
        .prefix("shopfloor-bench-footprint")
        .tempdir()
        .expect("temp dir");
    std::fs::write(dir.path().join("plant.toml"), scenario()).expect("write scenario");
    let mut sim = Command::new(&sim_bin)
        .arg("--scenario")
        .arg(dir.path().join("plant.toml"))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start shopfloor-sim");
    let sim_pid = sim.id();
    let mut servers: Vec<(String, SocketAddr)> = Vec::new();
    if let Some(out) = sim.stdout.take() {
        for line in BufReader::new(out).lines() {
            let Ok(line) = line else { break };
            if line.starts_with("Ctrl-C") {
                break;
            }
            let f: Vec<&str> = line.split_whitespace().collect();
            if let [kind, name, addr] = f.as_slice()
                && *kind == "modbus-tcp"
                && let Ok(a) = addr.parse()
            {
                servers.push(((*name).to_owned(), a));
            }
        }
    }
    servers.sort();
    if servers.len() != SERVERS {
        let _ = sim.kill();
        let _ = sim.wait();
        panic!("simulator started {} of {SERVERS} servers", servers.len());
    }
    let addrs: Vec<SocketAddr> = servers.iter().map(|(_, a)| *a).collect();

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let (idle, busy) = rt.block_on(async {
        let mqtt_port = free_port();
        embedded_broker(mqtt_port);
        let counts = subscriber(mqtt_port);
        let idle = run_agent(
            &agent_bin,
            dir.path(),
            "idle",
            |data, m| agent_config(data, mqtt_port, m, None),
            &counts,
            secs,
            sim_pid,
        )
        .await;
        let busy = run_agent(
            &agent_bin,
            dir.path(),
            "poll50",
            |data, m| agent_config(data, mqtt_port, m, Some(&addrs)),
            &counts,
            secs,
            sim_pid,
        )
        .await;
        (idle, busy)
    });
    let _ = sim.kill();
    let _ = sim.wait();

    println!(
        "shopfloor-agent footprint: (a) idle, no device; (b) {DEVICES} Modbus TCP devices \
         (cnc-modbus-generic, {SERVERS} servers × {UNITS} units), poll 1 s, batch 5 s; \
         {WARMUP:?} warm-up, {secs} s window, {} cores",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!(
        "{:<48} {:>12} {:>12} {:>10}",
        "", "(a) idle", "(b) 50 dev", "(b)/(a)"
    );
    let row = |name: &str, a: f64, b: f64| {
        let ratio = if a > 0.0 {
            format!("{:.2}×", b / a)
        } else {
            "-".to_owned()
        };
        println!("{name:<48} {a:>12.2} {b:>12.2} {ratio:>10}");
    };
    row("agent CPU, % of one core", idle.cpu_pct, busy.cpu_pct);
    row("agent RSS MiB (mean)", idle.rss_mean_mib, busy.rss_mean_mib);
    row("agent RSS MiB (end)", idle.rss_last_mib, busy.rss_last_mib);
    row("agent peak RSS MiB (VmHWM)", idle.hwm_mib, busy.hwm_mib);
    row(
        "readings received per second",
        idle.samples_per_s,
        busy.samples_per_s,
    );
    row(
        "batches received by the subscriber",
        idle.batches as f64,
        busy.batches as f64,
    );
    row("kB per batch received", idle.batch_kb, busy.batch_kb);
    let names: std::collections::BTreeSet<&String> =
        idle.threads.keys().chain(busy.threads.keys()).collect();
    for n in names {
        row(
            &format!("  agent thread {n}, % of one core"),
            idle.threads.get(n).copied().unwrap_or(0.0),
            busy.threads.get(n).copied().unwrap_or(0.0),
        );
    }
    row(
        "simulator CPU, % of one core",
        idle.sim_cpu_pct,
        busy.sim_cpu_pct,
    );
    let fig = |f: &Figures| {
        serde_json::json!({
            "cpu_pct": (f.cpu_pct * 100.0).round() / 100.0,
            "rss_mean_mib": (f.rss_mean_mib * 100.0).round() / 100.0,
            "rss_last_mib": (f.rss_last_mib * 100.0).round() / 100.0,
            "hwm_mib": (f.hwm_mib * 100.0).round() / 100.0,
            "samples_per_s": (f.samples_per_s * 10.0).round() / 10.0,
            "batches": f.batches,
            "batch_kb": (f.batch_kb * 100.0).round() / 100.0,
            "sim_cpu_pct": (f.sim_cpu_pct * 100.0).round() / 100.0,
            "threads_cpu_pct": f.threads.iter().map(|(k, v)| (k.clone(), serde_json::json!((v * 100.0).round() / 100.0))).collect::<serde_json::Map<_, _>>(),
        })
    };
    let line = serde_json::json!({
        "bench": "footprint",
        "devices": DEVICES,
        "window_s": secs,
        "cores": std::thread::available_parallelism().map_or(0, |n| n.get()),
        "idle": fig(&idle),
        "poll50": fig(&busy),
        "cpu_ratio": (busy.cpu_pct / idle.cpu_pct * 100.0).round() / 100.0,
        "rss_ratio": (busy.rss_mean_mib / idle.rss_mean_mib * 100.0).round() / 100.0,
        "hwm_ratio": (busy.hwm_mib / idle.hwm_mib * 100.0).round() / 100.0,
    });
    println!("{line}");
}
