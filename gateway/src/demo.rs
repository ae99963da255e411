//! `shopfloor-gateway demo`: the whole product on loopback in one process. A simulated park
//! ([`plant`]: 2 enterprises, 3 workshops, CNCs over Modbus and OPC UA, robots over OPC UA,
//! electricity, gas and water meters over Modbus) served by the real simulator servers
//! (tokio-modbus, async-opcua), one real agent per workshop reading them and publishing signed
//! batches to this gateway's embedded broker, SQLite under `--data-dir`, the dashboard, the API
//! and `/metrics`.
//!
//! Invariants:
//! - everything it runs is the product's own code with the configuration files it writes under
//!   `<data-dir>/config/`; those files are what a real deployment would have (the scenario
//!   also runs under `shopfloor-sim`, the agent files under `shopfloor-agent run`);
//! - `--speed N` installs a simulated clock ([`shopfloor_clock`]) that starts at the local
//!   midnight of yesterday and runs N × until it reaches real time, then goes on as real time:
//!   data never lies in the future, and a whole closed day is there to report and seal;
//! - simulated time never repeats in one data directory: how far it got is kept in
//!   `<data-dir>/demo.toml` (while running, [`RESERVE`] ahead, so also after a crash) and a
//!   restart goes on from there, so no reading is stamped twice;
//! - a default port that is taken is replaced by a free one (and said so); a port given on the
//!   command line that is taken is an error;
//! - Ctrl-C (or SIGTERM) stops the agents first (their last window made durable), then the
//!   gateway, then the plant; exit 0.

pub(crate) mod plant;

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use jiff::tz::TimeZone;
use jiff::{Timestamp, ToSpan, Zoned};
use tokio::sync::watch;

use crate::model::Role;

/// The demo's time zone (the plants are in Chongqing).
const TIME_ZONE: &str = "Asia/Shanghai";
const DEFAULT_HTTP_PORT: u16 = 8080;
const DEFAULT_MQTT_PORT: u16 = 1883;
/// Dashboard users, one per role; they share the password printed at start.
const USERS: [(&str, Role); 4] = [
    ("admin", Role::Admin),
    ("engineer", Role::Engineer),
    ("auditor", Role::Auditor),
    ("viewer", Role::Viewer),
];

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Port of the dashboard, API and /metrics on 127.0.0.1 [default: 8080, or a free port
    /// when 8080 is taken].
    #[arg(long)]
    pub port: Option<u16>,
    /// Port of the embedded MQTT broker on 127.0.0.1 [default: 1883, or a free port when 1883
    /// is taken].
    #[arg(long)]
    pub mqtt_port: Option<u16>,
    /// Directory for the SQLite database, keys, agent outboxes and the generated configuration
    /// [default: a new directory under the system's temporary directory]. Give the same
    /// directory again to continue a demo.
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Simulated time runs N times faster than real time, starting at yesterday's local
    /// midnight, until it has caught up with real time (×600: a day in 2.4 minutes). 1: real
    /// time from now.
    #[arg(long, default_value_t = 1.0, value_name = "N")]
    pub speed: f64,
}

/// What the demo keeps between runs in `<data-dir>/demo.toml`.
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct State {
    /// Simulated time 0 of the plant: a local midnight.
    epoch: Timestamp,
    /// How far simulated time got.
    reached: Timestamp,
    /// The calendar years whose economic inputs were recorded.
    #[serde(default)]
    inputs_years: Vec<i16>,
}

/// A demo that cannot start: exit 2 for bad arguments, 1 otherwise.
#[derive(Debug)]
enum Failure {
    Usage(String),
    Runtime(String),
}

impl Failure {
    fn exit(self) -> ExitCode {
        match self {
            Failure::Usage(m) => {
                eprintln!("error: {m}");
                ExitCode::from(2)
            }
            Failure::Runtime(m) => {
                eprintln!("error: {m}");
                ExitCode::from(1)
            }
        }
    }
}

/// `shopfloor-gateway demo`.
pub fn main(args: Args) -> ExitCode {
    if !args.speed.is_finite() || !(1.0..=shopfloor_clock::MAX_SPEED).contains(&args.speed) {
        return Failure::Usage(format!(
            "--speed: {} is not a number between 1 and {}",
            args.speed,
            shopfloor_clock::MAX_SPEED
        ))
        .exit();
    }
    init_logging();
    let rt = match crate::cli::runtime(true) {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    match rt.block_on(run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => f.exit(),
    }
}

/// Logs to stderr at `warn` unless `RUST_LOG` says otherwise: the demo's own output is the
/// summary on stdout.
fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new("warn,opcua_client=error,rumqttd=off")
    });
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

/// A port on 127.0.0.1: the one asked for (an error when taken), else the default, else a free
/// one. Returns the port and a note when the default was taken.
fn pick_port(
    asked: Option<u16>,
    default: u16,
    what: &str,
    flag: &str,
) -> Result<(u16, Option<String>), Failure> {
    let free = |p: u16| TcpListener::bind(("127.0.0.1", p)).map(|l| l.local_addr());
    match asked {
        Some(0) => {
            let a = free(0)
                .and_then(|a| a)
                .map_err(|e| Failure::Runtime(format!("{flag}: no free port: {e}")))?;
            Ok((a.port(), None))
        }
        Some(p) => match free(p) {
            Ok(_) => Ok((p, None)),
            Err(e) => Err(Failure::Runtime(format!(
                "{flag}: 127.0.0.1:{p} is not available ({e}); choose another port, or leave \
                 {flag} out to get a free one"
            ))),
        },
        None => match free(default) {
            Ok(_) => Ok((default, None)),
            Err(_) => {
                let a = free(0)
                    .and_then(|a| a)
                    .map_err(|e| Failure::Runtime(format!("{flag}: no free port: {e}")))?;
                Ok((
                    a.port(),
                    Some(format!(
                        "port {default} ({what}) is taken on 127.0.0.1; using {} instead ({flag} \
                         chooses)",
                        a.port()
                    )),
                ))
            }
        },
    }
}

/// The data directory: the one given (created when missing) or a new one under the temporary
/// directory.
fn data_dir(asked: Option<PathBuf>) -> Result<PathBuf, Failure> {
    if let Some(d) = asked {
        std::fs::create_dir_all(&d)
            .map_err(|e| Failure::Runtime(format!("--data-dir {}: {e}", d.display())))?;
        return std::path::absolute(&d)
            .map_err(|e| Failure::Runtime(format!("--data-dir {}: {e}", d.display())));
    }
    let stamp = Zoned::now().strftime("%Y%m%d-%H%M%S").to_string();
    let base = std::env::temp_dir();
    for n in 0..100 {
        let name = if n == 0 {
            format!("shopfloor-demo-{stamp}")
        } else {
            format!("shopfloor-demo-{stamp}-{n}")
        };
        let d = base.join(name);
        match std::fs::create_dir(&d) {
            Ok(()) => return Ok(d),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(Failure::Runtime(format!("{}: {e}", d.display()))),
        }
    }
    Err(Failure::Runtime(format!(
        "no new directory could be made under {}",
        base.display()
    )))
}

fn write(path: &Path, text: &str) -> Result<(), Failure> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)
            .map_err(|e| Failure::Runtime(format!("{}: {e}", parent.display())))?;
    }
    std::fs::write(path, text).map_err(|e| Failure::Runtime(format!("{}: {e}", path.display())))
}

fn load_state(path: &Path) -> Result<Option<State>, Failure> {
    match std::fs::read_to_string(path) {
        Ok(text) => toml::from_str(&text)
            .map(Some)
            .map_err(|e| Failure::Usage(format!("{}: {e}", path.display()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Failure::Runtime(format!("{}: {e}", path.display()))),
    }
}

fn save_state(path: &Path, state: &State) -> Result<(), Failure> {
    let years: Vec<String> = state.inputs_years.iter().map(ToString::to_string).collect();
    let body = format!(
        "epoch = \"{}\"\nreached = \"{}\"\ninputs_years = [{}]\n",
        state.epoch,
        state.reached,
        years.join(", ")
    );
    let text = format!(
        "# Shopfloor demo: simulated time 0 of the plant (a local midnight) and how far simulated\n\
         # time got (while the demo runs, a little ahead); a restart goes on from `reached`, so no\n\
         # reading is stamped twice.\n{body}"
    );
    let tmp = path.with_extension("toml.tmp");
    write(&tmp, &text)?;
    std::fs::rename(&tmp, path).map_err(|e| Failure::Runtime(format!("{}: {e}", path.display())))
}

/// Local midnight `days` days before the day of `t`.
fn midnight(t: Timestamp, tz: &TimeZone, days: i64) -> Result<Timestamp, Failure> {
    let err = |e: jiff::Error| Failure::Runtime(format!("local midnight: {e}"));
    let day = t.to_zoned(tz.clone()).date();
    let day = day.checked_sub(days.days()).map_err(err)?;
    Ok(day.to_zoned(tz.clone()).map_err(err)?.timestamp())
}

fn local(t: Timestamp, tz: &TimeZone) -> String {
    t.to_zoned(tz.clone())
        .strftime("%Y-%m-%d %H:%M (%:z)")
        .to_string()
}

async fn run(args: Args) -> Result<(), Failure> {
    let tz = TimeZone::get(TIME_ZONE).map_err(|e| Failure::Runtime(e.to_string()))?;
    let (http_port, http_note) = pick_port(args.port, DEFAULT_HTTP_PORT, "dashboard", "--port")?;
    let (mqtt_port, mqtt_note) =
        pick_port(args.mqtt_port, DEFAULT_MQTT_PORT, "MQTT", "--mqtt-port")?;
    let dir = data_dir(args.data_dir.clone())?;
    let cfg_dir = dir.join("config");

    // Simulated time: never before what an earlier run reached.
    let state_path = dir.join("demo.toml");
    let real = Timestamp::now();
    let earlier = load_state(&state_path)?;
    let start = if args.speed > 1.0 {
        midnight(real, &tz, 1)?
    } else {
        real
    };
    let start = match &earlier {
        Some(s) => start.max(s.reached).min(real),
        None => start,
    };
    let mut state = match earlier {
        Some(s) => State {
            reached: start,
            ..s
        },
        None => State {
            epoch: midnight(start, &tz, 0)?,
            reached: start,
            inputs_years: Vec::new(),
        },
    };
    let clock = shopfloor_clock::Simulated::new(real, start, args.speed)
        .map_err(|e| Failure::Usage(format!("--speed: {e}")))?;
    shopfloor_clock::install(clock).map_err(|e| Failure::Runtime(e.to_string()))?;
    state.reached = reserve(clock);
    save_state(&state_path, &state)?;

    // Keys first: the registry trusts each agent's public key.
    let mut keys = Vec::new();
    for w in plant::WORKSHOPS {
        let key = shopfloor_agent::identity::load_or_create(&dir.join("agents").join(w.agent))
            .map_err(|e| Failure::Runtime(format!("agent {}: {e}", w.agent)))?;
        keys.push((
            w.agent,
            shopfloor_core::batch::public_key_text(&key.verifying_key()),
        ));
    }
    let registry = cfg_dir.join("registry");
    write(&registry.join("entities.toml"), &plant::entities_toml())?;
    write(&registry.join("products.toml"), &plant::products_toml())?;
    write(&registry.join("agents.toml"), &plant::agents_toml(&keys))?;
    write(
        &cfg_dir.join("targets.toml"),
        include_str!("../../configs/targets.toml"),
    )?;
    let gateway_toml = cfg_dir.join("gateway.toml");
    write(&gateway_toml, &gateway_config(&dir, http_port, mqtt_port))?;
    let scenario_path = cfg_dir.join("plant.toml");
    write(&scenario_path, &plant::scenario_toml())?;

    // The plant.
    let loaded = shopfloor_sim::Scenario::load(&scenario_path)
        .map_err(|e| Failure::Runtime(format!("{}: {e}", scenario_path.display())))?;
    let sim = shopfloor_sim::Plant::start(
        loaded,
        shopfloor_sim::StartOptions {
            pki_dir: Some(dir.join("sim-pki")),
            epoch: Some(state.epoch),
        },
    )
    .await
    .map_err(|e| Failure::Runtime(format!("simulated plant: {e}")))?;

    // The gateway: store migrated, broker and HTTP listening.
    let cfg = crate::config::load(&gateway_toml).map_err(|errs| {
        Failure::Runtime(
            errs.iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("; "),
        )
    })?;
    let gw = match crate::run::start(cfg).await {
        Ok(g) => g,
        Err(e) => {
            sim.stop().await;
            return Err(Failure::Runtime(format!("gateway: {e}")));
        }
    };
    let setup = async {
        let password = users(&gw.db).await?;
        let token = crate::auth::create_token(
            &gw.db,
            &format!("demo-{}", Timestamp::now().as_second()),
            Role::Admin,
            "demo",
        )
        .await
        .map_err(|e| Failure::Runtime(format!("API token: {e}")))?;
        inputs(&gw, &cfg_dir, &tz, &mut state).await?;
        save_state(&state_path, &state)?;
        Ok::<_, Failure>((password, token))
    };
    let (password, token) = match setup.await {
        Ok(v) => v,
        Err(e) => {
            gw.stop().await;
            sim.stop().await;
            return Err(e);
        }
    };

    // One agent per workshop.
    let (stop_agents, stop_rx) = watch::channel(false);
    let mut agents = Vec::new();
    let mut agent_error = None;
    for w in plant::WORKSHOPS {
        let Some(ep) = plant::endpoints(w, &sim) else {
            agent_error = Some(format!("agent {}: its servers did not start", w.agent));
            break;
        };
        let path = cfg_dir.join(format!("{}.toml", w.agent));
        let text = plant::agent_toml(w, &dir.join("agents").join(w.agent), mqtt_port, &ep);
        write(&path, &text)?;
        match shopfloor_agent::config::load(&path) {
            Ok(cfg) => {
                let rx = stop_rx.clone();
                let name = w.agent;
                agents.push(tokio::spawn(async move {
                    if let Err(e) = shopfloor_agent::run::run(cfg, rx).await {
                        tracing::error!(agent = name, error = %e, "agent stopped");
                    }
                }));
            }
            Err(e) => {
                agent_error = Some(format!("{}: {e}", path.display()));
                break;
            }
        }
    }

    let http = gw.http;
    // Installed before the summary says "Ctrl-C stops".
    let stop = crate::run::wait_for_signal();
    if agent_error.is_none() {
        summary(&Summary {
            dir: &dir,
            http,
            mqtt_port,
            notes: [http_note, mqtt_note].into_iter().flatten().collect(),
            clock,
            tz: &tz,
            password: &password,
            token: &token,
            plant: &sim,
        });
        watch_clock(stop, &state_path, &mut state, clock, &tz).await;
    }

    // Stop: agents (their last window made durable), the gateway, then the plant.
    let _ = stop_agents.send(true);
    for a in agents {
        let _ = tokio::time::timeout(Duration::from_secs(15), a).await;
    }
    gw.stop().await;
    sim.stop().await;
    state.reached = shopfloor_clock::now();
    save_state(&state_path, &state)?;
    if let Some(e) = agent_error {
        return Err(Failure::Runtime(e));
    }
    println!(
        "stopped. The data stays in {}; `shopfloor-gateway demo --data-dir {}` goes on from \
         {}.",
        dir.display(),
        dir.display(),
        local(state.reached, &tz)
    );
    Ok(())
}

fn gateway_config(dir: &Path, http_port: u16, mqtt_port: u16) -> String {
    format!(
        "# Shopfloor demo gateway (docs/GATEWAY.md); written by `shopfloor-gateway demo`.\n\
         # Other commands take it too, e.g.\n\
         #   shopfloor-gateway verify --config {cfg}\n\
         #   shopfloor-gateway report --config {cfg} --entity p1 --from ... --to ...\n\
         [gateway]\nid = \"demo\"\ndata_dir = {data:?}\ntime_zone = \"{TIME_ZONE}\"\n\n\
         [mqtt]\nembedded = true\nlisten = \"127.0.0.1:{mqtt_port}\"\nshared_group = \"\"\n\n\
         [http]\nlisten = \"127.0.0.1:{http_port}\"\n\n\
         [registry]\ndir = \"registry\"\ntargets = \"targets.toml\"\n\n\
         [ingest]\ncommit_wait_ms = 20\n\n\
         [seal]\nenabled = true\nafter_s = 300\n\n\
         [metrics]\nindicator_refresh_s = 10\n",
        cfg = dir.join("config").join("gateway.toml").display(),
        data = dir.join("gateway").display().to_string(),
    )
}

/// Creates the demo users (or gives them a new password) and returns the password.
async fn users(db: &crate::db::Db) -> Result<String, Failure> {
    use shopfloor_store::Store as _;
    let password =
        crate::users::generate_password().map_err(|e| Failure::Runtime(e.to_string()))?;
    let now = Timestamp::now().as_millisecond();
    for (name, role) in USERS {
        let exists = db
            .user_get(name)
            .await
            .map_err(|e| Failure::Runtime(format!("user {name}: {e}")))?
            .is_some();
        let done = if exists {
            crate::users::change_user(
                db,
                name,
                crate::users::Change {
                    role: Some(role.as_str().into()),
                    password: Some(password.clone()),
                    disabled: Some(false),
                },
                "demo",
                now,
            )
            .await
            .map(|_| ())
        } else {
            crate::users::create_user(db, name, role, Some(password.clone()), "demo", now)
                .await
                .map(|_| ())
        };
        done.map_err(|e| Failure::Runtime(format!("user {name}: {e}")))?;
    }
    Ok(password)
}

/// Records the enterprises' economic inputs for the years simulated time covers (once per
/// year and data directory), through the same import as `POST /api/v1/inputs/import`.
async fn inputs(
    gw: &crate::run::Running,
    cfg_dir: &Path,
    tz: &TimeZone,
    state: &mut State,
) -> Result<(), Failure> {
    let first = state.epoch.to_zoned(tz.clone()).year();
    let last = Timestamp::now().to_zoned(tz.clone()).year();
    for year in first..=last {
        if state.inputs_years.contains(&year) {
            continue;
        }
        let name = format!("inputs-{year}.csv");
        let csv = plant::inputs_csv(year);
        write(&cfg_dir.join(&name), &csv)?;
        let rows = crate::inputs::parse_csv(&name, csv.as_bytes())
            .map_err(|e| Failure::Runtime(format!("economic inputs: {e}")))?;
        let snap = gw.registry.snapshot();
        crate::inputs::submit(
            &gw.db,
            &snap,
            &rows,
            Timestamp::now().as_millisecond(),
            "demo",
            &format!("csv:{name}"),
        )
        .await
        .map_err(|e| Failure::Runtime(format!("economic inputs: {e}")))?;
        state.inputs_years.push(year);
    }
    Ok(())
}

struct Summary<'a> {
    dir: &'a Path,
    http: SocketAddr,
    mqtt_port: u16,
    notes: Vec<String>,
    clock: shopfloor_clock::Simulated,
    tz: &'a TimeZone,
    password: &'a str,
    token: &'a str,
    plant: &'a shopfloor_sim::Plant,
}

fn summary(s: &Summary<'_>) {
    let (enterprises, workshops, machines, manual, meters) = plant::counts();
    let mut out = String::new();
    use std::fmt::Write as _;
    let _ = writeln!(out, "Shopfloor demo / 演示 ({})", env!("CARGO_PKG_VERSION"));
    for n in &s.notes {
        let _ = writeln!(out, "  note: {n}");
    }
    let _ = writeln!(
        out,
        "  plant      {enterprises} enterprises, {workshops} workshops, {machines} machines read \
         over Modbus TCP and OPC UA (+{manual} manual), {meters} meters; {} Modbus gateways, {} \
         OPC UA servers",
        s.plant.tcp.len(),
        s.plant.opcua.len()
    );
    let _ = writeln!(
        out,
        "  agents     {} (one per workshop), embedded MQTT broker on 127.0.0.1:{}",
        plant::WORKSHOPS.len(),
        s.mqtt_port
    );
    if s.clock.speed() > 1.0 {
        let _ = writeln!(
            out,
            "  time       simulated ×{} from {}; real time again at {}",
            s.clock.speed(),
            local(s.clock.start(), s.tz),
            local(s.clock.caught_up_at(), s.tz)
        );
    } else {
        let _ = writeln!(
            out,
            "  time       real time from {} (--speed 600 simulates from yesterday's midnight)",
            local(s.clock.start(), s.tz)
        );
    }
    let _ = writeln!(out, "  data       {}", s.dir.display());
    let _ = writeln!(out, "  config     {}", s.dir.join("config").display());
    let _ = writeln!(out);
    let _ = writeln!(out, "  dashboard  http://{}/", s.http);
    let _ = writeln!(
        out,
        "  sign in    admin, engineer, auditor or viewer; password {}",
        s.password
    );
    let _ = writeln!(out, "  API token  {} (admin)", s.token);
    // The park's indicators: yesterday (whole once simulated) with --speed, else today so far.
    let day = midnight(s.clock.start(), s.tz, 0);
    let period = day.ok().and_then(|from| {
        let to = if s.clock.speed() > 1.0 {
            from.checked_add(24.hours()).ok()?
        } else {
            Timestamp::from_second(Timestamp::now().as_second() / 60 * 60).ok()?
        };
        let q = |t: Timestamp| {
            t.to_zoned(s.tz.clone())
                .strftime("%Y-%m-%dT%H:%M:%S%:z")
                .to_string()
                .replace('+', "%2B")
        };
        Some(format!("&from={}&to={}", q(from), q(to)))
    });
    let _ = writeln!(
        out,
        "  try        curl -H 'Authorization: Bearer {}' 'http://{}/api/v1/indicators?entity=p1{}'",
        s.token,
        s.http,
        period.unwrap_or_default()
    );
    let _ = writeln!(out, "  metrics    http://{}/metrics", s.http);
    let _ = writeln!(out);
    let _ = writeln!(out, "Ctrl-C stops.");
    print!("{out}");
}

/// Until Ctrl-C or SIGTERM: notes progress while simulated time catches up and keeps
/// `reached` in the state file.
async fn watch_clock(
    stop: impl std::future::Future<Output = ()>,
    state_path: &Path,
    state: &mut State,
    clock: shopfloor_clock::Simulated,
    tz: &TimeZone,
) {
    tokio::pin!(stop);
    let mut every = tokio::time::interval(Duration::from_secs(1));
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    every.tick().await;
    let mut caught_up = clock.speed() <= 1.0;
    let mut ticks = 0u64;
    loop {
        tokio::select! {
            _ = &mut stop => return,
            _ = every.tick() => {}
        }
        state.reached = reserve(clock);
        if let Err(Failure::Runtime(e) | Failure::Usage(e)) = save_state(state_path, state) {
            tracing::warn!(error = %e, "demo state not saved");
        }
        ticks += 1;
        if caught_up || !ticks.is_multiple_of(15) {
            continue;
        }
        let now = shopfloor_clock::now();
        if now >= Timestamp::now().checked_sub(1.second()).unwrap_or(now) {
            caught_up = true;
            println!(
                "simulated time has caught up with real time: {}",
                local(now, tz)
            );
        } else {
            println!("simulated time {}", local(now, tz));
        }
    }
}

/// While the demo runs, `reached` is kept this far (real time) ahead of the clock, so that a
/// restart after a crash or SIGKILL starts after anything the agents may have stamped: simulated
/// time then skips a little (shown as offline time), but never repeats.
const RESERVE: Duration = Duration::from_secs(10);

/// What the clock will read [`RESERVE`] from now.
fn reserve(clock: shopfloor_clock::Simulated) -> Timestamp {
    let later = Timestamp::now()
        .checked_add(RESERVE)
        .unwrap_or(Timestamp::MAX);
    clock.at(later)
}
