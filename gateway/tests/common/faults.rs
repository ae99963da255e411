//! The fault suite's harness: one chain of real processes, in-process simulator →
//! `shopfloor-agent` binary → private Mosquitto (persistent) → `shopfloor-gateway` binary →
//! store, plus the faults (a cuttable proxy, a private PostgreSQL cluster, a small tmpfs, a
//! libfaketime clock) and the accounting every scenario ends with ([`Chain::finish`]).
//!
//! Every process, mount and cluster is owned by a guard that removes it when dropped, also when
//! a scenario panics. Prerequisites that are missing skip a scenario with a notice, except when
//! `CI=true`, where they fail it ([`require`]).
#![allow(dead_code, unreachable_pub, clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use serde_json::{Value, json};
use shopfloor_agent::outbox::{Fsync, Outbox, OutboxConfig};
use shopfloor_core::batch;
use shopfloor_gateway::db::Db;
use shopfloor_store::Store;

use crate::common::agent::{self, Proxy};
use crate::common::{AGENT, Broker, free_port, unique, write_config, write_registry};

// ---------------------------------------------------------------------------------------------
// Serialisation, skipping, binaries

static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// One scenario at a time: they are timing-sensitive and the CI machine has 2 cores. (An async
/// lock: each scenario holds it across its awaits; a panicking scenario releases it.)
pub async fn serial() -> tokio::sync::MutexGuard<'static, ()> {
    SERIAL.lock().await
}

pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

/// `Ok(())` when the prerequisite is there; otherwise a "skipped" notice and `false`, or a
/// failure when `CI=true` (the suite is mandatory there).
pub fn require(test: &str, check: Result<(), String>) -> bool {
    match check {
        Ok(()) => true,
        Err(why) => {
            assert!(!in_ci(), "{test}: {why} (required when CI=true)");
            let _ = writeln!(std::io::stderr(), "skipped: {test}: {why}");
            false
        }
    }
}

pub fn have_mosquitto() -> Result<(), String> {
    mosquitto_bin()
        .map(|_| ())
        .ok_or_else(|| "no mosquitto binary (apt-get install mosquitto)".to_owned())
}

/// `target/<profile>`: the directory of the workspace's binaries.
fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    exe.parent().and_then(Path::parent).unwrap().to_owned()
}

fn newest(dir: &Path) -> SystemTime {
    let mut t = SystemTime::UNIX_EPOCH;
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            let m = if p.is_dir() {
                newest(&p)
            } else {
                e.metadata()
                    .and_then(|m| m.modified())
                    .unwrap_or(SystemTime::UNIX_EPOCH)
            };
            t = t.max(m);
        }
    }
    t
}

/// The `shopfloor-agent` binary next to this test's binaries, built (debug) when it is missing
/// or older than its sources (`cargo test -p shopfloor-gateway` does not build it).
pub fn agent_binary() -> PathBuf {
    static BUILT: Mutex<bool> = Mutex::new(false);
    let path = bin_dir().join(format!("shopfloor-agent{}", std::env::consts::EXE_SUFFIX));
    let root = shopfloor_tests::repo_root();
    let mut inputs = vec![root.join("Cargo.lock")];
    for krate in [
        "core", "keyfile", "clock", "devices", "acquire", "agent", "sim",
    ] {
        inputs.push(root.join(krate).join("src"));
        inputs.push(root.join(krate).join("Cargo.toml"));
    }
    inputs.push(root.join("configs").join("devices"));
    let sources = inputs
        .iter()
        .map(|p| match std::fs::metadata(p) {
            Ok(m) if m.is_dir() => newest(p),
            Ok(m) => m.modified().unwrap_or(SystemTime::UNIX_EPOCH),
            Err(_) => SystemTime::UNIX_EPOCH,
        })
        .max()
        .unwrap();
    let fresh = std::fs::metadata(&path)
        .and_then(|m| m.modified())
        .is_ok_and(|t| t >= sources);
    let mut built = BUILT.lock().unwrap_or_else(PoisonError::into_inner);
    if !fresh && !*built {
        let _ = writeln!(
            std::io::stderr(),
            "building shopfloor-agent (missing or older than its sources)"
        );
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let o = Command::new(cargo)
            .current_dir(&root)
            .args([
                "build",
                "--locked",
                "-p",
                "shopfloor-agent",
                "--bin",
                "shopfloor-agent",
            ])
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "cargo build shopfloor-agent: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        *built = true;
    }
    assert!(path.is_file(), "{} missing", path.display());
    path
}

/// Where the JSON reports go: `target/fault-suite/`.
pub fn report_dir() -> PathBuf {
    let d = bin_dir()
        .parent()
        .map_or_else(std::env::temp_dir, Path::to_owned)
        .join("fault-suite");
    std::fs::create_dir_all(&d).unwrap();
    d
}

// ---------------------------------------------------------------------------------------------
// Processes

/// A child process, SIGKILLed when dropped; its stderr goes to `log`.
pub struct Proc {
    pub name: String,
    child: Option<Child>,
    pub log: PathBuf,
}

impl Proc {
    pub fn spawn(name: &str, mut cmd: Command, log: &Path) -> Proc {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .unwrap();
        let child = cmd
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {name}: {e}"));
        Proc {
            name: name.to_owned(),
            child: Some(child),
            log: log.to_owned(),
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// `None` while running, the exit status once it ended (on its own or killed).
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.as_mut().and_then(|c| c.try_wait().unwrap())
    }

    /// Panics (with the end of its log) when the process ended on its own.
    pub fn assert_alive(&mut self, when: &str) {
        if let Some(st) = self.exited() {
            panic!(
                "{} exited ({st}) {when}; end of its log:\n{}",
                self.name,
                self.log_tail(40)
            );
        }
    }

    pub fn sigkill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM, then waits up to `limit`; the exit status (SIGKILL and panic after `limit`).
    pub fn sigterm(&mut self, limit: Duration) -> ExitStatus {
        let mut c = self.child.take().expect("running");
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(c.id().to_string())
            .status();
        let deadline = Instant::now() + limit;
        loop {
            if let Some(st) = c.try_wait().unwrap() {
                return st;
            }
            if Instant::now() > deadline {
                let _ = c.kill();
                let _ = c.wait();
                panic!("{} did not stop within {limit:?} of SIGTERM", self.name);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let v: Vec<&str> = text.lines().collect();
        v[v.len().saturating_sub(lines)..].join("\n")
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.sigkill();
    }
}

// ---------------------------------------------------------------------------------------------
// Metrics

/// `GET path` over HTTP/1.0 (no chunking), the body; `None` when nothing answers.
pub fn http_get(port: u16, path: &str) -> Option<String> {
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").as_bytes())
        .ok()?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).ok()?;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n")?;
    head.starts_with("HTTP/1.").then(|| body.to_owned())
}

/// Every sample line of the OpenMetrics text: `name{labels}` → value.
pub fn parse_metrics(text: &str) -> BTreeMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (k, v) = l.rsplit_once(' ')?;
            Some((k.to_owned(), v.trim().parse().ok()?))
        })
        .collect()
}

pub fn get(m: &BTreeMap<String, f64>, key: &str) -> f64 {
    m.get(key).copied().unwrap_or(0.0)
}

// ---------------------------------------------------------------------------------------------
// The chain's processes

/// The agent binary with its data directory and metrics listener.
pub struct AgentProc {
    pub proc: Proc,
    pub metrics_port: u16,
    pub data: PathBuf,
    pub config: PathBuf,
}

impl AgentProc {
    pub fn metrics(&self) -> Option<BTreeMap<String, f64>> {
        http_get(self.metrics_port, "/metrics").map(|t| parse_metrics(&t))
    }

    /// One metric (0 when absent); panics when the agent does not answer.
    pub fn metric(&self, name: &str) -> f64 {
        let m = self
            .metrics()
            .unwrap_or_else(|| panic!("the agent's /metrics does not answer"));
        get(&m, name)
    }
}

/// Families of the gateway's metrics the report uses.
const GATEWAY_FAMILIES: [&str; 5] = [
    "shopfloor_gateway_batches_total",
    "shopfloor_gateway_quarantined_total",
    "shopfloor_gateway_chain_events_total",
    "shopfloor_gateway_commit_failures_total",
    "shopfloor_gateway_mqtt_reconnects_total",
];

/// The gateway binary, restartable; its counters are summed over its incarnations (each
/// incarnation's last scrape, taken just before a kill).
pub struct GatewayProc {
    pub proc: Option<Proc>,
    pub config: PathBuf,
    pub http_port: u16,
    log: PathBuf,
    base: BTreeMap<String, f64>,
    last: BTreeMap<String, f64>,
    pub starts: u32,
}

impl GatewayProc {
    pub fn start(&mut self) {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_shopfloor-gateway"));
        cmd.args(["run", "--config"])
            .arg(&self.config)
            .env("RUST_LOG", "warn");
        self.proc = Some(Proc::spawn("shopfloor-gateway", cmd, &self.log));
        self.starts += 1;
    }

    pub fn scrape(&mut self) -> bool {
        let Some(text) = http_get(self.http_port, "/metrics") else {
            return false;
        };
        self.last = parse_metrics(&text)
            .into_iter()
            .filter(|(k, _)| GATEWAY_FAMILIES.iter().any(|f| k.starts_with(f)))
            .collect();
        true
    }

    /// Scrapes, then SIGKILLs (the counters of this incarnation are kept in the totals).
    pub fn sigkill(&mut self) {
        self.scrape();
        if let Some(mut p) = self.proc.take() {
            p.sigkill();
        }
        for (k, v) in std::mem::take(&mut self.last) {
            *self.base.entry(k).or_default() += v;
        }
    }

    pub fn assert_alive(&mut self, when: &str) {
        self.proc
            .as_mut()
            .expect("the gateway runs")
            .assert_alive(when);
    }

    /// Counters over all incarnations (call [`GatewayProc::scrape`] first).
    pub fn totals(&self) -> BTreeMap<String, f64> {
        let mut t = self.base.clone();
        for (k, v) in &self.last {
            *t.entry(k.clone()).or_default() += v;
        }
        t
    }

    pub fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let v: Vec<&str> = text.lines().collect();
        v[v.len().saturating_sub(lines)..].join("\n")
    }
}

// ---------------------------------------------------------------------------------------------
// A private Mosquitto

/// A private Mosquitto process on `port` with persistence, as deploy/mosquitto configures it
/// (sessions saved on a clean stop and restored on start, unbounded session queues). Unlike
/// `agent::Mosquitto` it stays root when started by root (`user root`): Mosquitto otherwise
/// drops to the `mosquitto` user, cannot write its persistence file into a root-owned 0700
/// temporary directory, and silently restarts with no sessions at all.
pub struct Mosquitto {
    child: Option<Child>,
    pub port: u16,
    conf: PathBuf,
    dir: tempfile::TempDir,
}

impl Mosquitto {
    pub fn start(port: u16) -> Mosquitto {
        assert!(mosquitto_bin().is_some(), "the mosquitto binary");
        let dir = tempfile::tempdir().unwrap();
        let conf = dir.path().join("mosquitto.conf");
        std::fs::write(
            &conf,
            format!(
                "user root\nlistener {port} 127.0.0.1\nallow_anonymous true\n\
                 max_inflight_messages 100\nmax_queued_messages 0\nmax_queued_bytes 0\n\
                 max_packet_size 16842752\npersistence true\npersistence_location {}/\n\
                 log_dest file {}/mosquitto.log\nlog_type error\nlog_type warning\n",
                dir.path().display(),
                dir.path().display()
            ),
        )
        .unwrap();
        let mut m = Mosquitto {
            child: None,
            port,
            conf,
            dir,
        };
        m.restart();
        m
    }

    /// Starts the process (again).
    pub fn restart(&mut self) {
        let child = Command::new(mosquitto_bin().unwrap())
            .arg("-c")
            .arg(&self.conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        self.child = Some(child);
        agent::wait_listening(self.port);
    }

    /// Clean stop (SIGTERM): Mosquitto writes its sessions to disk.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(c.id().to_string())
                .status();
            let _ = c.wait();
        }
    }

    /// Whether the persistence file holds `text` (e.g. a client id or a topic filter).
    pub fn persisted(&self, text: &str) -> bool {
        std::fs::read(self.dir.path().join("mosquitto.db"))
            .is_ok_and(|b| b.windows(text.len()).any(|w| w == text.as_bytes()))
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn mosquitto_bin() -> Option<&'static str> {
    [
        "/usr/sbin/mosquitto",
        "/usr/bin/mosquitto",
        "/usr/local/sbin/mosquitto",
    ]
    .into_iter()
    .find(|p| Path::new(p).exists())
}

// ---------------------------------------------------------------------------------------------
// Private PostgreSQL cluster

/// `/usr/lib/postgresql/<newest>/bin`, `runuser` and the `postgres` user, or why not.
pub fn pg_bin() -> Result<PathBuf, String> {
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .map_err(|_| "no /usr/lib/postgresql (apt-get install postgresql)".to_owned())?
        .flatten()
        .filter_map(|e| {
            let v: u32 = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            (bin.join("initdb").exists() && bin.join("pg_ctl").exists()).then_some((v, bin))
        })
        .collect();
    versions.sort();
    let bin = versions
        .pop()
        .map(|(_, b)| b)
        .ok_or_else(|| "no initdb/pg_ctl under /usr/lib/postgresql/*/bin".to_owned())?;
    let ok = |c: &mut Command| c.output().is_ok_and(|o| o.status.success());
    if !ok(Command::new("runuser").args(["-u", "postgres", "--", "true"])) {
        return Err("cannot run as the postgres user (runuser -u postgres; needs root)".into());
    }
    Ok(bin)
}

/// A PostgreSQL cluster of this test only (never the shared server): `initdb` into a temporary
/// directory, listening on 127.0.0.1:`port` only (no Unix socket), trust authentication. Stopped
/// (immediate) and removed when dropped.
pub struct PgCluster {
    bin: PathBuf,
    root: PathBuf,
    data: PathBuf,
    pub port: u16,
    _dir: tempfile::TempDir,
}

impl PgCluster {
    fn pg(&self, tool: &str, args: &[&str]) -> std::process::Output {
        Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(self.bin.join(tool))
            .args(args)
            .current_dir(&self.root)
            .output()
            .unwrap()
    }

    pub fn start(bin: PathBuf) -> PgCluster {
        let dir = tempfile::tempdir().unwrap();
        // The postgres user must reach its directory.
        std::fs::set_permissions(
            dir.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )
        .unwrap();
        let root = dir.path().join("pg");
        std::fs::create_dir(&root).unwrap();
        let st = Command::new("chown")
            .args(["postgres:postgres"])
            .arg(&root)
            .status()
            .unwrap();
        assert!(st.success(), "chown postgres {}", root.display());
        let data = root.join("data");
        let c = PgCluster {
            bin,
            data: data.clone(),
            root,
            port: free_port(),
            _dir: dir,
        };
        let d = data.to_str().unwrap();
        let o = c.pg(
            "initdb",
            &["-D", d, "-A", "trust", "-U", "postgres", "-E", "UTF8", "-N"],
        );
        assert!(
            o.status.success(),
            "initdb: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        let mut conf = std::fs::OpenOptions::new()
            .append(true)
            .open(data.join("postgresql.conf"))
            .unwrap();
        writeln!(
            conf,
            "\nlisten_addresses = '127.0.0.1'\nport = {}\nunix_socket_directories = ''\nmax_connections = 40\nshared_buffers = 32MB",
            c.port
        )
        .unwrap();
        c.ctl(&["start"]);
        c
    }

    fn ctl(&self, action: &[&str]) {
        let log = self.root.join("postgres.log");
        let mut args = vec![
            "-D",
            self.data.to_str().unwrap(),
            "-l",
            log.to_str().unwrap(),
            "-w",
            "-t",
            "60",
        ];
        args.extend_from_slice(action);
        let o = self.pg("pg_ctl", &args);
        assert!(
            o.status.success(),
            "pg_ctl {action:?}: {}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
    }

    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// `pg_ctl restart -m immediate`: the server dies without a checkpoint (a crash) and
    /// starts again with crash recovery.
    pub fn crash_restart(&self) {
        self.ctl(&["-m", "immediate", "restart"]);
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        let _ = self.pg(
            "pg_ctl",
            &[
                "-D",
                self.data.to_str().unwrap_or_default(),
                "-m",
                "immediate",
                "-w",
                "stop",
            ],
        );
    }
}

// ---------------------------------------------------------------------------------------------
// A small tmpfs

/// A tmpfs of `size` mounted on a temporary directory; unmounted when dropped.
pub struct Tmpfs {
    pub path: PathBuf,
    _dir: tempfile::TempDir,
}

impl Tmpfs {
    pub fn mount(size: &str) -> Result<Tmpfs, String> {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let o = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size},mode=0700")])
            .arg("tmpfs")
            .arg(dir.path())
            .output()
            .map_err(|e| format!("mount: {e}"))?;
        if !o.status.success() {
            return Err(format!(
                "cannot mount a tmpfs (root or CAP_SYS_ADMIN needed): {}",
                String::from_utf8_lossy(&o.stderr).trim()
            ));
        }
        Ok(Tmpfs {
            path: dir.path().to_owned(),
            _dir: dir,
        })
    }

    /// Fills the file system with `file` until a write fails with ENOSPC; returns the bytes
    /// written.
    pub fn fill(&self, file: &Path) -> u64 {
        let mut f = std::fs::File::create(file).unwrap();
        let chunk = vec![0x5a_u8; 4096];
        let mut n = 0u64;
        loop {
            match f.write(&chunk) {
                Ok(0) => break,
                Ok(k) => n += k as u64,
                Err(e) if e.raw_os_error() == Some(28) => break, // ENOSPC
                Err(e) => panic!("filler: {e}"),
            }
        }
        // The last bytes, one at a time.
        while let Ok(1) = f.write(&[0x5a]) {
            n += 1;
        }
        let _ = f.sync_all();
        n
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let ok = Command::new("umount")
            .arg(&self.path)
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            let _ = Command::new("umount").arg("-l").arg(&self.path).status();
        }
    }
}

// ---------------------------------------------------------------------------------------------
// libfaketime

/// libfaketime (the multi-threaded variant when present), or why not.
pub fn faketime_lib() -> Result<PathBuf, String> {
    [
        "/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1",
        "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1",
        "/usr/lib/aarch64-linux-gnu/faketime/libfaketimeMT.so.1",
        "/usr/lib/aarch64-linux-gnu/faketime/libfaketime.so.1",
        "/usr/lib/faketime/libfaketimeMT.so.1",
        "/usr/lib/faketime/libfaketime.so.1",
    ]
    .iter()
    .map(PathBuf::from)
    .find(|p| p.exists())
    .ok_or_else(|| "no libfaketime (apt-get install faketime)".to_owned())
}

/// The wall clock of one process, set through the file libfaketime reads on every call.
pub struct FakeClock {
    pub file: PathBuf,
    pub lib: PathBuf,
}

impl FakeClock {
    pub fn new(dir: &Path, lib: PathBuf) -> FakeClock {
        let c = FakeClock {
            file: dir.join("faketime.rc"),
            lib,
        };
        c.set("+0");
        c
    }

    /// A relative offset such as `-7200` or `+30` (seconds; libfaketime's format), written
    /// atomically.
    pub fn set(&self, offset: &str) {
        let tmp = self.file.with_extension("tmp");
        std::fs::write(&tmp, format!("{offset}\n")).unwrap();
        std::fs::rename(&tmp, &self.file).unwrap();
    }

    /// The environment that puts a process on this clock. Monotonic time (timeouts, timers)
    /// stays real.
    pub fn env(&self) -> Vec<(String, String)> {
        vec![
            ("LD_PRELOAD".into(), self.lib.display().to_string()),
            (
                "FAKETIME_TIMESTAMP_FILE".into(),
                self.file.display().to_string(),
            ),
            ("FAKETIME_NO_CACHE".into(), "1".into()),
            ("FAKETIME_DONT_FAKE_MONOTONIC".into(), "1".into()),
            ("NO_FAKE_STAT".into(), "1".into()),
        ]
    }
}

// ---------------------------------------------------------------------------------------------
// The chain

/// How a scenario wants its chain.
#[derive(Default)]
pub struct ChainOpts {
    /// The agent's data directory (default: in the chain's directory).
    pub agent_data: Option<PathBuf>,
    /// Extra environment of the agent process.
    pub agent_env: Vec<(String, String)>,
    /// The gateway's store (default: SQLite in the chain's directory).
    pub store_url: Option<String>,
    /// The agent reaches the broker through a cuttable proxy.
    pub via_proxy: bool,
    /// `ingest.max_future_s` of the gateway (default: the gateway's).
    pub max_future_s: Option<u64>,
    /// `mqtt.shared_group` of the gateway (default: `""`, the gateway's default, a plain
    /// subscription; a name: a shared subscription `$share/<name>/…`).
    pub shared_group: Option<String>,
    /// `batch.max_samples` of the agent: a window is cut early at this many raw samples
    /// (more batches per second than `batch.interval_s = 1` alone).
    pub max_samples: Option<u32>,
}

/// Simulator → agent binary → private Mosquitto → gateway binary → store.
/// Fields drop in order: processes first, then the broker, then the directory.
pub struct Chain {
    pub agent: AgentProc,
    pub gateway: GatewayProc,
    pub db: Db,
    pub proxy: Option<Proxy>,
    pub broker: Mosquitto,
    pub plant: Option<shopfloor_sim::Plant>,
    pub store_url: String,
    pub started: Instant,
    pub dir: tempfile::TempDir,
}

/// Stored-batch counts the scenarios poll: (distinct batches stored, highest seq stored).
pub async fn head(db: &Db) -> Option<(i64, i64)> {
    let heads = db.agent_heads().await.ok()?;
    Some(
        heads
            .iter()
            .find(|h| h.agent == AGENT)
            .map_or((0, 0), |h| (h.batches, h.last_seq)),
    )
}

impl Chain {
    pub async fn start(opts: ChainOpts) -> Chain {
        let agent_bin = agent_binary();
        let started = Instant::now();
        let dir = tempfile::tempdir().unwrap();
        let broker = Mosquitto::start(free_port());
        let proxy = if opts.via_proxy {
            Some(Proxy::start(([127, 0, 0, 1], broker.port).into()).await)
        } else {
            None
        };
        let plant = agent::start_plant().await;
        let prefix = unique("faults");

        // Agent: key first (the gateway's registry trusts it), then its configuration.
        let data = opts
            .agent_data
            .clone()
            .unwrap_or_else(|| dir.path().join("agent-data"));
        let key = shopfloor_agent::identity::load_or_create(&data).unwrap();
        let pk = batch::public_key_text(&key.verifying_key());
        let metrics_port = free_port();
        let mqtt_port = proxy.as_ref().map_or(broker.port, |p| p.port);
        let text = agent::agent_config(
            &data,
            plant.tcp_addr("gw").unwrap(),
            mqtt_port,
            &prefix,
            AGENT,
        )
        .replace(
            "listen = \"off\"",
            &format!("listen = \"127.0.0.1:{metrics_port}\""),
        )
        .replace(
            "heartbeat_s = 60",
            &opts.max_samples.map_or("heartbeat_s = 60".to_owned(), |n| {
                format!("heartbeat_s = 60\nmax_samples = {n}")
            }),
        );
        let agent_cfg = dir.path().join("agent.toml");
        std::fs::write(&agent_cfg, text).unwrap();

        // Gateway: registry, configuration with a known HTTP port, its store.
        let registry = write_registry(dir.path(), &pk);
        let store_url = opts
            .store_url
            .clone()
            .unwrap_or_else(|| format!("sqlite://{}", dir.path().join("gateway.db").display()));
        let broker_cfg = Broker::External {
            port: broker.port,
            group: opts.shared_group.clone().unwrap_or_default(),
        };
        let gw_cfg = write_config(
            dir.path(),
            "gw",
            &store_url,
            &broker_cfg,
            &prefix,
            &registry,
        );
        let http_port = free_port();
        let mut text = std::fs::read_to_string(&gw_cfg).unwrap().replace(
            "listen = \"127.0.0.1:0\"",
            &format!("listen = \"127.0.0.1:{http_port}\""),
        );
        if let Some(s) = opts.max_future_s {
            text = text.replace(
                "commit_wait_ms = 10",
                &format!("commit_wait_ms = 10\nmax_future_s = {s}"),
            );
        }
        std::fs::write(&gw_cfg, text).unwrap();

        let mut gateway = GatewayProc {
            proc: None,
            config: gw_cfg,
            http_port,
            log: dir.path().join("gateway.log"),
            base: BTreeMap::new(),
            last: BTreeMap::new(),
            starts: 0,
        };
        gateway.start();
        let db = open_store(&store_url, &mut gateway).await;
        // Subscribed before the agent publishes anything.
        let deadline = Instant::now() + Duration::from_secs(60);
        while http_get(http_port, "/metrics")
            .is_none_or(|t| !t.contains("shopfloor_gateway_mqtt_connected 1"))
        {
            gateway.assert_alive("while starting");
            assert!(Instant::now() < deadline, "the gateway never connected");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }

        let mut cmd = Command::new(agent_bin);
        cmd.args(["run", "--config"])
            .arg(&agent_cfg)
            .env("RUST_LOG", "warn");
        for (k, v) in &opts.agent_env {
            cmd.env(k, v);
        }
        let agent = AgentProc {
            proc: Proc::spawn("shopfloor-agent", cmd, &dir.path().join("agent.log")),
            metrics_port,
            data,
            config: agent_cfg,
        };
        Chain {
            agent,
            gateway,
            db,
            proxy,
            broker,
            plant: Some(plant),
            store_url,
            started,
            dir,
        }
    }

    /// Waits until the gateway stored `n` batches (the chain is flowing).
    pub async fn wait_stored(&mut self, n: i64, limit: Duration) {
        let deadline = Instant::now() + limit;
        loop {
            if head(&self.db).await.is_some_and(|(b, _)| b >= n) {
                return;
            }
            self.agent.proc.assert_alive("before the fault");
            self.gateway.assert_alive("before the fault");
            assert!(
                Instant::now() < deadline,
                "fewer than {n} batches stored after {limit:?}\nagent:\n{}\ngateway:\n{}",
                self.agent.proc.log_tail(20),
                self.gateway.log_tail(20)
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Sleeps `d` while checking every 200 ms that neither process ended on its own.
    pub async fn hold(&mut self, d: Duration, what: &str) {
        let until = Instant::now() + d;
        while Instant::now() < until {
            self.agent.proc.assert_alive(what);
            if let Some(p) = self.gateway.proc.as_mut() {
                p.assert_alive(what);
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Heals and accounts: stops the simulator (no new batches), waits until the agent's
    /// outbox is empty and the gateway holds (stored or quarantined) every sealed seq, stops the
    /// agent with SIGTERM, and compares the agent's outbox, the agent's and the gateway's
    /// counters and the store. Asserts DESIGN.md §7 (see [`Report::assert_promises`]).
    pub async fn finish(mut self, scenario: &str, expected_quarantine: &[&str]) -> Report {
        if let Some(p) = self.plant.take() {
            p.stop().await;
        }
        // 1. The agent's outbox drains (everything sealed acknowledged, nothing waiting).
        let deadline = Instant::now() + Duration::from_secs(120);
        let agent_metrics = loop {
            self.agent.proc.assert_alive("while draining");
            self.gateway.assert_alive("while draining");
            let m = self.agent.metrics();
            if let Some(m) = &m
                && get(m, "shopfloor_agent_outbox_batches") == 0.0
                && get(m, "shopfloor_agent_memory_batches") == 0.0
            {
                // Still so 1.5 s later: no batch cut and sealed in between.
                tokio::time::sleep(Duration::from_millis(1500)).await;
                if let Some(m2) = self.agent.metrics()
                    && get(&m2, "shopfloor_agent_outbox_batches") == 0.0
                    && get(&m2, "shopfloor_agent_memory_batches") == 0.0
                    && get(&m2, "shopfloor_agent_batches_sealed_total")
                        == get(m, "shopfloor_agent_batches_sealed_total")
                {
                    break m2;
                }
            }
            assert!(
                Instant::now() < deadline,
                "{scenario}: the agent's outbox did not drain: {:?}\nagent log:\n{}",
                m.map(|m| (
                    get(&m, "shopfloor_agent_outbox_batches"),
                    get(&m, "shopfloor_agent_outbox_sealed"),
                    get(&m, "shopfloor_agent_memory_batches")
                )),
                self.agent.proc.log_tail(30)
            );
            tokio::time::sleep(Duration::from_millis(300)).await;
        };
        let sealed_metric = get(&agent_metrics, "shopfloor_agent_batches_sealed_total") as u64;

        // 2. The agent never crashed and stops cleanly.
        self.agent.proc.assert_alive("at the end");
        let status = self.agent.proc.sigterm(Duration::from_secs(20));
        assert!(
            status.success(),
            "{scenario}: the agent exited with {status} on SIGTERM\n{}",
            self.agent.proc.log_tail(30)
        );
        let _ = std::fs::copy(
            &self.agent.proc.log,
            report_dir().join(format!("{scenario}.agent.log")),
        );
        let outbox = Outbox::open(OutboxConfig {
            path: self.agent.data.join("outbox.db"),
            budget_bytes: 1 << 30,
            fsync: Fsync::Normal,
        })
        .await
        .unwrap();
        let ostats = outbox.stats().await.unwrap();
        let in_outbox: BTreeSet<u64> = outbox
            .unacked(0, 1_000_000)
            .await
            .unwrap()
            .into_iter()
            .map(|s| s.seq)
            .collect();
        outbox.close().await;
        let sent = ostats.last_seq;
        assert_eq!(
            sent, sealed_metric,
            "{scenario}: the outbox's chain head and the agent's batches_sealed differ"
        );

        // 3. The gateway has every sealed seq (stored or quarantined).
        let deadline = Instant::now() + Duration::from_secs(60);
        let (stored, quarantined) = loop {
            self.gateway.assert_alive("while accounting");
            let stored = self.db.batches(AGENT, 1, i64::MAX, true).await;
            let q = self.db.list_quarantine(None, 100_000).await;
            if let (Ok(stored), Ok(q)) = (stored, q) {
                let q: Vec<_> = q
                    .into_iter()
                    .filter(|e| e.row.agent.as_deref() == Some(AGENT))
                    .collect();
                let have: BTreeSet<u64> = stored
                    .iter()
                    .map(|b| b.seq as u64)
                    .chain(q.iter().filter_map(|e| e.row.seq.map(|s| s as u64)))
                    .chain(in_outbox.iter().copied())
                    .collect();
                if (1..=sent).all(|s| have.contains(&s)) || Instant::now() > deadline {
                    break (stored, q);
                }
            }
            assert!(Instant::now() < deadline, "{scenario}: store unreachable");
            tokio::time::sleep(Duration::from_millis(300)).await;
        };
        self.gateway.assert_alive("at the end");
        assert!(self.gateway.scrape(), "the gateway's /metrics answers");
        let _ = std::fs::copy(
            &self.gateway.log,
            report_dir().join(format!("{scenario}.gateway.log")),
        );
        let gw = self.gateway.totals();

        // 4. Accounting.
        let stored_seqs: BTreeSet<u64> = stored.iter().map(|b| b.seq as u64).collect();
        let mut q_seqs: BTreeMap<u64, String> = BTreeMap::new();
        let mut payloads: BTreeMap<u64, Vec<u8>> = BTreeMap::new();
        for b in &stored {
            payloads.insert(b.seq as u64, b.payload.clone().unwrap_or_default());
        }
        // Quarantined batches sealed while the agent's clock was right (their seal time is not
        // after the gateway's receive time): only their window still lay ahead.
        let mut q_sealed_in_time = 0u64;
        for e in &quarantined {
            if let Some(s) = e.row.seq {
                if batch::open(&e.row.payload).is_ok_and(|o| o.body.sealed <= e.row.received) {
                    q_sealed_in_time += 1;
                }
                q_seqs.insert(s as u64, e.row.reason.clone());
                payloads
                    .entry(s as u64)
                    .or_insert_with(|| e.row.payload.clone());
            }
        }
        let lost: Vec<u64> = (1..=sent)
            .filter(|s| {
                !stored_seqs.contains(s) && !q_seqs.contains_key(s) && !in_outbox.contains(s)
            })
            .collect();
        let both: Vec<u64> = stored_seqs
            .iter()
            .filter(|s| q_seqs.contains_key(s))
            .copied()
            .collect();
        let beyond: Vec<u64> = stored_seqs.iter().filter(|s| **s > sent).copied().collect();

        // Rows: every stored batch's raw samples are in the store exactly once.
        let mut per_point: BTreeMap<(String, String), usize> = BTreeMap::new();
        let mut windows_gaps = 0u64;
        let mut window_backwards = 0u64;
        let mut zero_windows = 0u64;
        let mut chain_breaks = 0u64;
        let mut prev: Option<(u64, i64, String)> = None;
        for (seq, p) in &payloads {
            let Ok(o) = batch::open(p) else {
                panic!("{scenario}: seq {seq}: the stored or quarantined payload does not open");
            };
            assert_eq!(o.body.seq, *seq);
            if o.body.from > o.body.to {
                window_backwards += 1;
            }
            if o.body.from == o.body.to {
                zero_windows += 1;
            }
            if let Some((pseq, pto, phash)) = &prev {
                if *pseq + 1 == *seq {
                    if o.body.from != *pto {
                        windows_gaps += 1;
                    }
                    if o.body.prev != *phash {
                        chain_breaks += 1;
                    }
                } else {
                    chain_breaks += 1;
                }
            }
            prev = Some((*seq, o.body.to, o.body_hash.clone()));
            if stored_seqs.contains(seq) {
                for d in &o.body.devices {
                    for ps in &d.samples {
                        *per_point
                            .entry((d.id.clone(), ps.point.clone()))
                            .or_default() += ps.samples.len();
                    }
                }
            }
        }
        let mut rows_extra = 0i64;
        let mut rows_missing = 0i64;
        let mut samples_signed = 0usize;
        for ((device, point), n) in &per_point {
            let rows = self
                .db
                .samples(device, point, 0, i64::MAX, 10_000_000)
                .await
                .unwrap()
                .len();
            samples_signed += n;
            let diff = rows as i64 - *n as i64;
            if diff > 0 {
                rows_extra += diff;
            } else {
                rows_missing -= diff;
            }
        }

        let a = |k: &str| get(&agent_metrics, k) as u64;
        let g = |k: &str| get(&gw, k) as u64;
        let mut quarantine_by_reason: BTreeMap<String, u64> = BTreeMap::new();
        for (k, v) in &gw {
            if let Some(r) = k
                .strip_prefix("shopfloor_gateway_quarantined_total{reason=\"")
                .and_then(|r| r.strip_suffix("\"}"))
                && *v > 0.0
            {
                quarantine_by_reason.insert(r.to_owned(), *v as u64);
            }
        }
        let mut drops = BTreeMap::new();
        for k in [
            "shopfloor_agent_outbox_dropped_samples_total",
            "shopfloor_agent_outbox_dropped_batches_total",
            "shopfloor_agent_memory_dropped_samples_total",
            "shopfloor_agent_memory_dropped_batches_total",
            "shopfloor_agent_outbox_write_errors_total",
            "shopfloor_agent_batches_rejected_total",
            "shopfloor_agent_events_out_of_order_total",
        ] {
            drops.insert(k.to_owned(), a(k));
        }
        for (r, n) in &quarantine_by_reason {
            drops.insert(
                format!("shopfloor_gateway_quarantined_total{{reason=\"{r}\"}}"),
                *n,
            );
        }
        drops.insert(
            "shopfloor_gateway_chain_events_total{kind=\"gap\"}".into(),
            g("shopfloor_gateway_chain_events_total{kind=\"gap\"}"),
        );
        drops.insert(
            "shopfloor_gateway_commit_failures_total".into(),
            g("shopfloor_gateway_commit_failures_total"),
        );

        let report = Report {
            scenario: scenario.to_owned(),
            cut: a("shopfloor_agent_batches_cut_total"),
            sent,
            stored: stored_seqs.len() as u64,
            quarantined: q_seqs.len() as u64,
            quarantine_reasons: q_seqs.values().cloned().collect(),
            quarantined_sealed_in_time: q_sealed_in_time,
            in_outbox: in_outbox.len() as u64,
            redelivered_discarded: g("shopfloor_gateway_batches_total{result=\"duplicate\"}"),
            stored_twice: rows_extra as u64,
            rows_missing: rows_missing as u64,
            samples_signed: samples_signed as u64,
            lost,
            stored_and_quarantined: both,
            stored_beyond_sent: beyond,
            window_gaps: windows_gaps,
            window_backwards,
            zero_windows,
            chain_breaks,
            outbox_dropped_batches_file: ostats.dropped_batches,
            outbox_dropped_samples_file: ostats.dropped_samples,
            drops,
            gateway_starts: self.gateway.starts,
            wall_s: self.started.elapsed().as_secs_f64(),
            expected_quarantine: expected_quarantine
                .iter()
                .map(|s| (*s).to_owned())
                .collect(),
        };
        report.print();
        report
    }
}

async fn open_store(url: &str, gateway: &mut GatewayProc) -> Db {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        // The gateway creates and migrates the store; open it once that is done.
        if let Ok(db) = Db::open(url, Some(2)).await
            && db.ping().await.is_ok()
            && db.agent_heads().await.is_ok()
        {
            return db;
        }
        gateway.assert_alive("while creating its store");
        assert!(Instant::now() < deadline, "the store never opened: {url}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// One scenario's figures.
#[derive(Debug)]
pub struct Report {
    pub scenario: String,
    /// Batch windows the agent cut (each one is sealed, or counted as dropped).
    pub cut: u64,
    /// Batches sealed by the agent: seqs 1..=sent.
    pub sent: u64,
    /// Distinct seqs stored by the gateway.
    pub stored: u64,
    /// Distinct seqs the gateway quarantined (kept, not data).
    pub quarantined: u64,
    pub quarantine_reasons: BTreeSet<String>,
    /// Quarantined seqs sealed when the agent's clock was right again (seal time not after the
    /// gateway's receive time).
    pub quarantined_sealed_in_time: u64,
    /// Sealed seqs still in the agent's outbox at the end (not acknowledged; sent again at the
    /// next start).
    pub in_outbox: u64,
    /// Redeliveries the gateway recognised and discarded (`batches_total{result="duplicate"}`).
    pub redelivered_discarded: u64,
    /// Sample rows stored beyond the signed payloads' samples (a batch stored twice).
    pub stored_twice: u64,
    /// Sample rows of stored payloads that are not in the store.
    pub rows_missing: u64,
    pub samples_signed: u64,
    /// Sealed seqs neither stored, quarantined nor kept in the outbox.
    pub lost: Vec<u64>,
    pub stored_and_quarantined: Vec<u64>,
    pub stored_beyond_sent: Vec<u64>,
    /// Consecutive seqs whose windows do not tile (`from` ≠ previous `to`).
    pub window_gaps: u64,
    pub window_backwards: u64,
    /// Batches whose window is empty (`from` = `to`: the agent's clock was behind the end of
    /// the previous window).
    pub zero_windows: u64,
    /// Consecutive seqs whose `prev` does not link, or missing seqs in the delivered chain.
    pub chain_breaks: u64,
    pub outbox_dropped_batches_file: u64,
    pub outbox_dropped_samples_file: u64,
    /// Forced-drop counters (agent and gateway), by metric name.
    pub drops: BTreeMap<String, u64>,
    pub gateway_starts: u32,
    pub wall_s: f64,
    pub expected_quarantine: BTreeSet<String>,
}

impl Report {
    pub fn drop_count(&self, name: &str) -> u64 {
        self.drops.get(name).copied().unwrap_or(0)
    }

    pub fn json(&self) -> Value {
        json!({
            "scenario": self.scenario,
            "cut": self.cut,
            "sent": self.sent,
            "stored": self.stored,
            "quarantined": self.quarantined,
            "quarantine_reasons": self.quarantine_reasons,
            "quarantined_sealed_in_time": self.quarantined_sealed_in_time,
            "still_in_outbox": self.in_outbox,
            "redelivered_discarded": self.redelivered_discarded,
            "stored_twice": self.stored_twice,
            "rows_missing": self.rows_missing,
            "samples_signed_and_stored": self.samples_signed,
            "lost": self.lost.len(),
            "lost_seqs": self.lost,
            "window_gaps": self.window_gaps,
            "zero_length_windows": self.zero_windows,
            "chain_breaks": self.chain_breaks,
            "forced_drops": self.drops,
            "gateway_starts": self.gateway_starts,
            "wall_s": (self.wall_s * 10.0).round() / 10.0,
        })
    }

    pub fn print(&self) {
        let drops: Vec<String> = self
            .drops
            .iter()
            .filter(|(_, v)| **v > 0)
            .map(|(k, v)| format!("{}={v}", k.trim_start_matches("shopfloor_")))
            .collect();
        let line = format!(
            "fault-suite {}: sent {} stored {} quarantined {} redelivered-discarded {} stored-twice {} lost {} | forced drops: {} | wall {:.1} s",
            self.scenario,
            self.sent,
            self.stored,
            self.quarantined,
            self.redelivered_discarded,
            self.stored_twice,
            self.lost.len(),
            if drops.is_empty() {
                "none".to_owned()
            } else {
                drops.join(", ")
            },
            self.wall_s
        );
        let path = report_dir().join(format!("{}.json", self.scenario));
        std::fs::write(&path, serde_json::to_vec_pretty(&self.json()).unwrap()).unwrap();
        let _ = writeln!(std::io::stderr(), "{line}\n  report: {}", path.display());
    }

    /// DESIGN.md §7: nothing acknowledged is lost, nothing is stored twice, the chain is
    /// complete, and every drop observed is counted.
    pub fn assert_promises(&self) {
        let s = &self.scenario;
        assert!(self.sent > 0, "{s}: nothing was sent");
        assert!(self.lost.is_empty(), "{s}: lost seqs {:?}", self.lost);
        assert_eq!(self.stored_twice, 0, "{s}: sample rows stored twice");
        assert_eq!(
            self.rows_missing, 0,
            "{s}: sample rows of stored batches missing"
        );
        assert!(
            self.stored_and_quarantined.is_empty(),
            "{s}: seqs both stored and quarantined: {:?}",
            self.stored_and_quarantined
        );
        assert!(
            self.stored_beyond_sent.is_empty(),
            "{s}: seqs stored beyond the agent's chain head: {:?}",
            self.stored_beyond_sent
        );
        assert_eq!(
            self.in_outbox, 0,
            "{s}: sealed batches left unacknowledged in the outbox"
        );
        assert_eq!(
            self.stored + self.quarantined,
            self.sent,
            "{s}: 1..=sent is not covered by stored and quarantined seqs"
        );
        assert_eq!(self.chain_breaks, 0, "{s}: the hash chain does not link");
        assert_eq!(
            self.window_backwards, 0,
            "{s}: a window ends before it starts"
        );
        // Every batch cut was sealed or counted as dropped, and every window gap is such a
        // counted drop (a batch dropped before it was sealed).
        let dropped_batches = self.drop_count("shopfloor_agent_outbox_dropped_batches_total")
            + self.drop_count("shopfloor_agent_memory_dropped_batches_total")
            + self.drop_count("shopfloor_agent_batches_rejected_total");
        assert_eq!(
            self.cut,
            self.sent + dropped_batches,
            "{s}: batches cut = sealed + counted drops does not hold"
        );
        assert!(
            self.window_gaps <= dropped_batches,
            "{s}: {} window gaps but {dropped_batches} batches counted as dropped",
            self.window_gaps
        );
        // Quarantine: only the expected reasons, each seq counted by the gateway.
        for r in &self.quarantine_reasons {
            assert!(
                self.expected_quarantine.contains(r),
                "{s}: unexpected quarantine reason {r}"
            );
        }
        let counted: u64 = self
            .drops
            .iter()
            .filter(|(k, _)| k.starts_with("shopfloor_gateway_quarantined_total"))
            .map(|(_, v)| *v)
            .sum();
        assert!(
            counted >= self.quarantined,
            "{s}: {} quarantined seqs but the gateway counted {counted}",
            self.quarantined
        );
        // The outbox file's drop totals are on /metrics.
        assert_eq!(
            self.drop_count("shopfloor_agent_outbox_dropped_batches_total"),
            self.outbox_dropped_batches_file,
            "{s}: outbox dropped batches: file and /metrics differ"
        );
        assert_eq!(
            self.drop_count("shopfloor_agent_outbox_dropped_samples_total"),
            self.outbox_dropped_samples_file,
            "{s}: outbox dropped samples: file and /metrics differ"
        );
    }
}
