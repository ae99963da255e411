//! What every scenario shares: figures and targets, /proc readers, the helper binaries
//! (`shopfloor-sim`, `shopfloor-agent`) and their processes, an embedded broker, the agent's
//! `/metrics`, and the measuring loop around one agent process. Linux only (reads /proc).

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read as _, Write as _};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};

// ---------------------------------------------------------------------------------------
// Figures

/// Whether a figure was measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Status {
    Ok,
    /// A prerequisite the caller chose not to provide (a service URL): not a failure.
    Skipped,
    /// The scenario could not run or failed (missing binary, panic).
    Error,
}

impl Status {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Skipped => "skipped",
            Status::Error => "error",
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum Op {
    AtLeast,
    AtMost,
    Below,
}

/// An issue-9 target, checked in the figure's own unit.
#[derive(Debug, Clone)]
pub(crate) struct Target {
    text: String,
    op: Op,
    limit: f64,
}

impl Target {
    /// `value ≥ limit`.
    pub(crate) fn at_least(limit: f64, text: &str) -> Target {
        Target {
            text: text.to_owned(),
            op: Op::AtLeast,
            limit,
        }
    }
    /// `value ≤ limit`.
    pub(crate) fn at_most(limit: f64, text: &str) -> Target {
        Target {
            text: text.to_owned(),
            op: Op::AtMost,
            limit,
        }
    }
    /// `value < limit`.
    pub(crate) fn below(limit: f64, text: &str) -> Target {
        Target {
            text: text.to_owned(),
            op: Op::Below,
            limit,
        }
    }
    pub(crate) fn text(&self) -> &str {
        &self.text
    }
    /// `None` when the value is not a number.
    pub(crate) fn met(&self, value: f64) -> Option<bool> {
        if !value.is_finite() {
            return None;
        }
        Some(match self.op {
            Op::AtLeast => value >= self.limit,
            Op::AtMost => value <= self.limit,
            Op::Below => value < self.limit,
        })
    }
}

/// 30 MB (the RSS target) in MiB, the unit the RSS figures are given in.
pub(crate) const MB30_IN_MIB: f64 = 30e6 / 1_048_576.0;

/// One row of the summary: a figure of a scenario, with its baseline from the same run.
#[derive(Debug, Clone)]
pub(crate) struct Figure {
    pub(crate) scenario: String,
    pub(crate) name: String,
    pub(crate) value: f64,
    pub(crate) unit: String,
    pub(crate) baseline: Option<f64>,
    pub(crate) target: Option<Target>,
    pub(crate) status: Status,
    pub(crate) note: Option<String>,
}

impl Figure {
    pub(crate) fn new(scenario: &str, name: &str, value: f64, unit: &str) -> Figure {
        Figure {
            scenario: scenario.to_owned(),
            name: name.to_owned(),
            value,
            unit: unit.to_owned(),
            baseline: None,
            target: None,
            status: Status::Ok,
            note: None,
        }
    }
    /// The same quantity for the baseline, measured in the same process and run.
    pub(crate) fn baseline(mut self, b: f64) -> Figure {
        self.baseline = Some(b);
        self
    }
    pub(crate) fn target(mut self, t: Target) -> Figure {
        self.target = Some(t);
        self
    }
    pub(crate) fn note(mut self, n: impl Into<String>) -> Figure {
        self.note = Some(n.into());
        self
    }
    /// A row saying why a scenario (or a part of it) did not run.
    pub(crate) fn not_run(
        scenario: &str,
        what: &str,
        status: Status,
        why: impl Into<String>,
    ) -> Figure {
        let mut f = Figure::new(scenario, what, f64::NAN, "");
        f.status = status;
        f.note = Some(why.into());
        f
    }
    pub(crate) fn ratio(&self) -> Option<f64> {
        let b = self.baseline?;
        let r = self.value / b;
        (b != 0.0 && r.is_finite()).then_some(r)
    }
    pub(crate) fn met(&self) -> Option<bool> {
        self.target.as_ref()?.met(self.value)
    }
    pub(crate) fn json(&self) -> FigureJson<'_> {
        let num = |x: f64| x.is_finite().then(|| round_sig(x));
        FigureJson {
            scenario: &self.scenario,
            figure: &self.name,
            value: num(self.value),
            unit: &self.unit,
            baseline: self.baseline.and_then(num),
            ratio: self.ratio().and_then(num),
            target: self.target.as_ref().map(Target::text),
            met: self.met(),
            status: self.status.as_str(),
            note: self.note.as_deref(),
        }
    }
}

/// A figure in the JSON file, fields in this order; numbers that are not finite are null.
#[derive(Debug, serde::Serialize)]
pub(crate) struct FigureJson<'a> {
    scenario: &'a str,
    figure: &'a str,
    value: Option<f64>,
    unit: &'a str,
    baseline: Option<f64>,
    ratio: Option<f64>,
    target: Option<&'a str>,
    met: Option<bool>,
    status: &'static str,
    note: Option<&'a str>,
}

/// Rounds to 6 significant digits (enough for any figure here, short in the JSON).
fn round_sig(x: f64) -> f64 {
    if x == 0.0 || !x.is_finite() {
        return x;
    }
    let digits = 6 - 1 - x.abs().log10().floor() as i32;
    let f = 10f64.powi(digits.clamp(-12, 12));
    (x * f).round() / f
}

/// A number for a table cell: thousands separated, decimals by magnitude.
pub(crate) fn fmt_num(x: f64) -> String {
    if !x.is_finite() {
        return "-".to_owned();
    }
    let decimals = match x.abs() {
        a if a >= 1000.0 => 0,
        a if a >= 10.0 => 1,
        a if a >= 0.1 => 2,
        0.0 => 0,
        _ => 4,
    };
    let s = format!("{:.*}", decimals, x.abs());
    let (int, frac) = s.split_once('.').map_or((s.as_str(), ""), |(i, f)| (i, f));
    let mut grouped = String::new();
    for (i, c) in int.chars().enumerate() {
        if i > 0 && (int.len() - i).is_multiple_of(3) {
            grouped.push(',');
        }
        grouped.push(c);
    }
    let sign = if x < 0.0 { "-" } else { "" };
    if frac.is_empty() {
        format!("{sign}{grouped}")
    } else {
        format!("{sign}{grouped}.{frac}")
    }
}

// ---------------------------------------------------------------------------------------
// Sizes and knobs

/// A number from the environment (`SHOPFLOOR_BENCH_SECS`, `SHOPFLOOR_BENCH_BATCHES`).
pub(crate) fn env_f64(name: &str) -> Option<f64> {
    std::env::var(name).ok().and_then(|s| s.trim().parse().ok())
}

/// A non-empty environment variable.
pub(crate) fn env_str(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

/// The measuring window: `SHOPFLOOR_BENCH_SECS`, else `quick` or `full` seconds.
pub(crate) fn window_secs(quick: bool, quick_s: f64, full_s: f64) -> f64 {
    env_f64("SHOPFLOOR_BENCH_SECS").unwrap_or(if quick { quick_s } else { full_s })
}

pub(crate) fn cores() -> usize {
    std::thread::available_parallelism().map_or(0, |n| n.get())
}

/// The 1, 5 and 15 minute load averages, from /proc/loadavg.
pub(crate) fn loadavg() -> Option<[f64; 3]> {
    let s = std::fs::read_to_string("/proc/loadavg").ok()?;
    let mut it = s.split_whitespace().map(|x| x.parse::<f64>().ok());
    Some([it.next()??, it.next()??, it.next()??])
}

// ---------------------------------------------------------------------------------------
// /proc

/// CPU seconds (user + system) of a process (`"self"` or a pid), from /proc/<pid>/stat.
pub(crate) fn cpu_seconds(pid: &str) -> f64 {
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
pub(crate) fn thread_cpu(pid: u32) -> BTreeMap<String, f64> {
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

/// A `kB` field of /proc/<pid>/status (VmRSS, VmHWM), in MiB; `pid` may be `"self"`.
pub(crate) fn status_mib(pid: &str, field: &str) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix(field)?.strip_prefix(':').map(str::to_owned))
        })
        .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

/// Resident set size of a process in MiB.
pub(crate) fn rss_mib(pid: &str) -> f64 {
    status_mib(pid, "VmRSS")
}

// ---------------------------------------------------------------------------------------
// Helper binaries and processes

/// A helper binary the scenarios run as a separate process.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Helper {
    pub(crate) bin: &'static str,
    pub(crate) package: &'static str,
    pub(crate) env: &'static str,
}

pub(crate) const SIM: Helper = Helper {
    bin: "shopfloor-sim",
    package: "shopfloor-sim",
    env: "SHOPFLOOR_SIM_BIN",
};

pub(crate) const AGENT: Helper = Helper {
    bin: "shopfloor-agent",
    package: "shopfloor-agent",
    env: "SHOPFLOOR_AGENT_BIN",
};

impl Helper {
    /// The binary: `$ENV` if set, else next to this program (`target/release/`, or its parent
    /// when this program runs from `deps/`). The error names the build command.
    pub(crate) fn locate(&self) -> Result<PathBuf, String> {
        if let Some(p) = std::env::var_os(self.env) {
            let p = PathBuf::from(p);
            return if p.is_file() {
                Ok(p)
            } else {
                Err(format!(
                    "{} is set to {}, which is not a file; build the binary with `{}`",
                    self.env,
                    p.display(),
                    self.build_command(None)
                ))
            };
        }
        let exe = std::env::current_exe().map_err(|e| format!("current executable: {e}"))?;
        let dir = exe.parent().map(Path::to_path_buf).unwrap_or_default();
        let mut candidates = vec![dir.join(self.bin)];
        if dir.file_name().is_some_and(|n| n == "deps")
            && let Some(up) = dir.parent()
        {
            candidates.push(up.join(self.bin));
        }
        if let Some(p) = candidates.iter().find(|p| p.is_file()) {
            return Ok(p.clone());
        }
        Err(format!(
            "{} is missing: build it with `{}` (or set {} to a {} binary)",
            candidates[0].display(),
            self.build_command(Some(&dir)),
            self.env,
            self.bin
        ))
    }

    /// `cargo build [--release] -p … --bin …`, matching the profile directory of `dir`.
    fn build_command(&self, dir: Option<&Path>) -> String {
        let mut profile = "--release ";
        if let Some(d) = dir {
            let d = if d.file_name().is_some_and(|n| n == "deps") {
                d.parent().unwrap_or(d)
            } else {
                d
            };
            if d.file_name().is_some_and(|n| n == "debug") {
                profile = "";
            }
        }
        format!(
            "cargo build {profile}-p {} --bin {}",
            self.package, self.bin
        )
    }
}

/// A child process killed (SIGTERM, then SIGKILL) when dropped, also when a scenario panics.
#[derive(Debug)]
pub(crate) struct Proc {
    child: Child,
    /// Where its stderr goes.
    pub(crate) log: Option<PathBuf>,
}

impl Proc {
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }
    pub(crate) fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
    pub(crate) fn log_text(&self) -> String {
        self.log
            .as_ref()
            .and_then(|p| std::fs::read_to_string(p).ok())
            .unwrap_or_default()
    }
    /// SIGTERM, up to 10 s for a clean exit, then SIGKILL.
    pub(crate) fn terminate(&mut self) {
        if !self.running() {
            return;
        }
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if !self.running() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.terminate();
    }
}

/// The simulator with its servers: (kind, name, address) as it printed them.
#[derive(Debug)]
pub(crate) struct Sim {
    pub(crate) proc: Proc,
    pub(crate) servers: Vec<(String, String, String)>,
}

impl Sim {
    pub(crate) fn pid(&self) -> u32 {
        self.proc.pid()
    }
    /// Addresses of the servers of `kind` (`modbus-tcp`, `opcua`), sorted by server name.
    pub(crate) fn addrs(&self, kind: &str) -> Vec<String> {
        let mut v: Vec<&(String, String, String)> =
            self.servers.iter().filter(|(k, _, _)| k == kind).collect();
        v.sort_by(|a, b| a.1.cmp(&b.1));
        v.into_iter().map(|(_, _, a)| a.clone()).collect()
    }
    /// Modbus TCP server addresses, sorted by server name.
    pub(crate) fn modbus(&self) -> Result<Vec<SocketAddr>, String> {
        self.addrs("modbus-tcp")
            .iter()
            .map(|a| a.parse().map_err(|e| format!("simulator address {a}: {e}")))
            .collect()
    }
}

/// Starts `shopfloor-sim --scenario <file> <extra>` and reads its server list. Fails unless
/// `expect` servers came up.
pub(crate) fn start_sim(scenario: &Path, extra: &[&str], expect: usize) -> Result<Sim, String> {
    let bin = SIM.locate()?;
    let dir = scenario.parent().unwrap_or(Path::new("."));
    let log = dir.join("sim.log");
    let err = std::fs::File::create(&log).map_err(|e| format!("{}: {e}", log.display()))?;
    let mut child = Command::new(&bin)
        .arg("--scenario")
        .arg(scenario)
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(err)
        .spawn()
        .map_err(|e| format!("start {}: {e}", bin.display()))?;
    let out = child.stdout.take();
    let proc = Proc {
        child,
        log: Some(log),
    };
    let mut servers = Vec::new();
    if let Some(out) = out {
        for line in BufReader::new(out).lines() {
            let Ok(line) = line else { break };
            if line.starts_with("Ctrl-C") {
                break;
            }
            let f: Vec<&str> = line.split_whitespace().collect();
            if let [kind, name, addr] = f.as_slice() {
                servers.push(((*kind).to_owned(), (*name).to_owned(), (*addr).to_owned()));
            }
        }
    }
    if servers.len() != expect {
        return Err(format!(
            "the simulator started {} of {expect} servers: {}",
            servers.len(),
            proc.log_text().trim()
        ));
    }
    Ok(Sim { proc, servers })
}

/// A free TCP port on loopback (bound and released).
pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_or(0, |a| a.port())
}

/// A unique name for topics, schemas and files of one run.
pub(crate) fn unique(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!("{prefix}-{}-{nanos}", std::process::id())
}

pub(crate) fn wait_listening(port: u16, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

/// The `[agent]`, `[mqtt]`, `[batch]` and `[metrics]` sections every agent scenario runs
/// with (5 s batches, everything else at its default); `templates` sets
/// `agent.templates_dir`. The scenarios append their devices.
pub(crate) fn agent_head(
    agent_id: &str,
    data: &Path,
    templates: Option<&Path>,
    mqtt_port: u16,
    prefix: &str,
    metrics_port: u16,
) -> String {
    let templates = templates
        .map(|t| format!("templates_dir = \"{}\"\n", t.display()))
        .unwrap_or_default();
    format!(
        r#"[agent]
id = "{agent_id}"
workshop = "p1/e1/w1"
data_dir = "{data}"
{templates}
[mqtt]
url = "mqtt://127.0.0.1:{mqtt_port}"
topic_prefix = "{prefix}"

[batch]
interval_s = 5

[metrics]
listen = "127.0.0.1:{metrics_port}"
"#,
        data = data.display(),
    )
}

/// Starts rumqttd on `port` (MQTT 3.1.1 listener only) on its own thread. rumqttd has no
/// shutdown: the broker lives until this process exits.
pub(crate) fn embedded_broker(port: u16) -> Result<(), String> {
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
    let config: rumqttd::Config =
        toml::from_str(&toml).map_err(|e| format!("broker config: {e}"))?;
    std::thread::spawn(move || {
        let mut broker = rumqttd::Broker::new(config);
        let _ = broker.start();
    });
    if wait_listening(port, Duration::from_secs(10)) {
        Ok(())
    } else {
        Err(format!("the embedded broker does not listen on {port}"))
    }
}

/// Batches (count, bytes) received on `<prefix>/+/batch`.
#[derive(Debug, Clone, Default)]
pub(crate) struct Counts {
    batches: Arc<AtomicU64>,
    bytes: Arc<AtomicU64>,
}

impl Counts {
    pub(crate) fn get(&self) -> (u64, u64) {
        (
            self.batches.load(Ordering::Relaxed),
            self.bytes.load(Ordering::Relaxed),
        )
    }
}

/// A subscriber counting batches on `<prefix>/+/batch` (needs a tokio runtime).
pub(crate) fn subscriber(port: u16, prefix: &str) -> Counts {
    let counts = Counts::default();
    let mut o = MqttOptions::new(unique("bench-subscriber"), "127.0.0.1", port);
    o.set_keep_alive(Duration::from_secs(5))
        .set_max_packet_size(16 << 20, 16 << 20);
    let (client, mut el) = AsyncClient::new(o, 100);
    let c = counts.clone();
    let filter = format!("{prefix}/+/batch");
    tokio::spawn(async move {
        loop {
            match el.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(_))) => {
                    let _ = client.try_subscribe(filter.clone(), QoS::AtLeastOnce);
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

/// GET /metrics from the agent: the text, or `None`.
pub(crate) fn metrics_text(port: u16) -> Option<String> {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    let req = "GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n";
    s.write_all(req.as_bytes()).ok()?;
    let mut text = String::new();
    let _ = s.read_to_string(&mut text);
    Some(text)
}

/// The sum of metric `name` over every label set, in `/metrics` text.
pub(crate) fn metric_sum(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|r| r.starts_with('{') || r.starts_with(' '))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

// ---------------------------------------------------------------------------------------
// One agent process, measured

/// The agent counters read before and after the window (sums over labels).
pub(crate) const AGENT_COUNTERS: [&str; 6] = [
    "shopfloor_agent_device_samples_total",
    "shopfloor_agent_samples_reported_total",
    "shopfloor_agent_device_read_errors_total",
    "shopfloor_agent_batches_published_total",
    "shopfloor_agent_published_bytes_total",
    "shopfloor_agent_outbox_dropped_samples_total",
];

/// What one measured agent run gives.
#[derive(Debug, Clone, Default)]
pub(crate) struct AgentFigures {
    /// % of one core per thread name.
    pub(crate) threads: BTreeMap<String, f64>,
    pub(crate) cpu_pct: f64,
    pub(crate) rss_mean_mib: f64,
    pub(crate) rss_last_mib: f64,
    pub(crate) hwm_mib: f64,
    /// Per second over the window, for each of [`AGENT_COUNTERS`].
    pub(crate) rates: BTreeMap<&'static str, f64>,
    pub(crate) batches: u64,
    pub(crate) batch_kb: f64,
    pub(crate) sim_cpu_pct: f64,
}

impl AgentFigures {
    pub(crate) fn rate(&self, counter: &str) -> f64 {
        self.rates.get(counter).copied().unwrap_or(f64::NAN)
    }
    /// Readings the agent received per second (`device_samples`).
    pub(crate) fn samples_per_s(&self) -> f64 {
        self.rate("shopfloor_agent_device_samples_total")
    }
}

/// One agent process: its configuration (given the data directory and the metrics port),
/// a warm-up and a measuring window.
#[derive(Debug)]
pub(crate) struct AgentRun<'a> {
    pub(crate) bin: &'a Path,
    pub(crate) dir: &'a Path,
    pub(crate) name: &'a str,
    pub(crate) warmup: Duration,
    pub(crate) secs: f64,
    pub(crate) sim_pid: Option<u32>,
    pub(crate) counts: Option<&'a Counts>,
}

impl AgentRun<'_> {
    /// Starts the agent, waits for its metrics port, warms up, measures, stops it.
    pub(crate) async fn run(
        &self,
        config: impl Fn(&Path, u16) -> String,
    ) -> Result<AgentFigures, String> {
        let name = self.name;
        let data = self.dir.join(format!("data-{name}"));
        let metrics_port = free_port();
        let cfg = self.dir.join(format!("agent-{name}.toml"));
        std::fs::write(&cfg, config(&data, metrics_port))
            .map_err(|e| format!("{}: {e}", cfg.display()))?;
        let log_path = self.dir.join(format!("agent-{name}.log"));
        let log =
            std::fs::File::create(&log_path).map_err(|e| format!("{}: {e}", log_path.display()))?;
        let child = Command::new(self.bin)
            .arg("run")
            .arg("--config")
            .arg(&cfg)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(|e| format!("start {}: {e}", self.bin.display()))?;
        let mut agent = Proc {
            child,
            log: Some(log_path),
        };
        let pid = agent.pid();
        if !wait_listening(metrics_port, Duration::from_secs(20)) {
            agent.terminate();
            return Err(format!(
                "agent ({name}) did not open its metrics port:\n{}",
                agent.log_text()
            ));
        }
        tokio::time::sleep(self.warmup).await;
        let sim_cpu = || {
            self.sim_pid
                .map_or(f64::NAN, |p| cpu_seconds(&p.to_string()))
        };
        let counters = || {
            let text = metrics_text(metrics_port).unwrap_or_default();
            AGENT_COUNTERS.map(|c| metric_sum(&text, c))
        };
        let counts = || self.counts.map_or((0, 0), Counts::get);
        let pid_s = pid.to_string();
        let (cpu0, threads0, sim0, m0, c0, t0) = (
            cpu_seconds(&pid_s),
            thread_cpu(pid),
            sim_cpu(),
            counters(),
            counts(),
            Instant::now(),
        );
        let end = t0 + Duration::from_secs_f64(self.secs);
        let (mut rss_sum, mut rss_n, mut rss_last) = (0.0, 0u32, f64::NAN);
        while Instant::now() < end {
            let r = rss_mib(&pid_s);
            if r.is_finite() {
                rss_sum += r;
                rss_n += 1;
                rss_last = r;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        let elapsed = t0.elapsed().as_secs_f64();
        let (cpu1, threads1, sim1, m1, c1) = (
            cpu_seconds(&pid_s),
            thread_cpu(pid),
            sim_cpu(),
            counters(),
            counts(),
        );
        let hwm = status_mib(&pid_s, "VmHWM");
        if !agent.running() {
            return Err(format!(
                "agent ({name}) exited during the run:\n{}",
                agent.log_text()
            ));
        }
        agent.terminate();
        let batches = c1.0 - c0.0;
        let threads = threads1
            .iter()
            .map(|(k, v)| {
                let before = threads0.get(k).copied().unwrap_or(0.0);
                (k.clone(), (v - before) / elapsed * 100.0)
            })
            .collect();
        let rates = AGENT_COUNTERS
            .iter()
            .zip(m0.iter().zip(m1.iter()))
            .map(|(c, (a, b))| (*c, (b - a) / elapsed))
            .collect();
        Ok(AgentFigures {
            threads,
            cpu_pct: (cpu1 - cpu0) / elapsed * 100.0,
            rss_mean_mib: rss_sum / f64::from(rss_n.max(1)),
            rss_last_mib: rss_last,
            hwm_mib: hwm,
            rates,
            batches,
            batch_kb: if batches > 0 {
                (c1.1 - c0.1) as f64 / batches as f64 / 1e3
            } else {
                0.0
            },
            sim_cpu_pct: (sim1 - sim0) / elapsed * 100.0,
        })
    }
}

/// A multi-threaded runtime for one scenario.
pub(crate) fn runtime(workers: Option<usize>) -> Result<tokio::runtime::Runtime, String> {
    let mut b = tokio::runtime::Builder::new_multi_thread();
    if let Some(w) = workers {
        b.worker_threads(w);
    }
    b.enable_all().build().map_err(|e| format!("runtime: {e}"))
}

/// A temporary directory for one scenario.
pub(crate) fn tempdir(prefix: &str) -> Result<tempfile::TempDir, String> {
    tempfile::Builder::new()
        .prefix(prefix)
        .tempdir()
        .map_err(|e| format!("temp dir: {e}"))
}

/// Writes a file, naming it in the error.
pub(crate) fn write(path: &Path, text: &str) -> Result<(), String> {
    std::fs::write(path, text).map_err(|e| format!("{}: {e}", path.display()))
}

/// Least squares line through `(x, y)`: (slope, intercept).
pub(crate) fn least_squares(points: &[(f64, f64)]) -> (f64, f64) {
    let n = points.len() as f64;
    if points.len() < 2 {
        return (f64::NAN, f64::NAN);
    }
    let mx = points.iter().map(|p| p.0).sum::<f64>() / n;
    let my = points.iter().map(|p| p.1).sum::<f64>() / n;
    let sxy: f64 = points.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum();
    let sxx: f64 = points.iter().map(|p| (p.0 - mx).powi(2)).sum();
    let slope = sxy / sxx;
    (slope, my - slope * mx)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_formatted_by_magnitude() {
        assert_eq!(fmt_num(634_221.4), "634,221");
        assert_eq!(fmt_num(13.74), "13.7");
        assert_eq!(fmt_num(1.5), "1.50");
        assert_eq!(fmt_num(-1234.0), "-1,234");
        assert_eq!(fmt_num(f64::NAN), "-");
        assert_eq!(fmt_num(0.0), "0");
    }

    #[test]
    fn least_squares_finds_the_line() {
        let (s, i) = least_squares(&[(0.0, 1.0), (1.0, 3.0), (2.0, 5.0)]);
        assert!((s - 2.0).abs() < 1e-12 && (i - 1.0).abs() < 1e-12);
    }

    #[test]
    fn targets_and_ratios() {
        let f = Figure::new("s", "x", 50.0, "u")
            .baseline(100.0)
            .target(Target::at_most(40.0, "≤ 40 u"));
        assert_eq!(f.ratio(), Some(0.5));
        assert_eq!(f.met(), Some(false));
        assert_eq!(Target::below(1.0, "").met(f64::NAN), None);
        assert_eq!(round_sig(123_456_789.0), 123_457_000.0);
    }
}
