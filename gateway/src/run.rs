//! Wiring: `shopfloor-gateway run`. Order matters and is an invariant: the configuration and
//! the registry files are validated completely before anything binds or connects; the store
//! is opened and migrated before the broker or the HTTP port accept anyone; the MQTT consumer
//! starts last, so no batch arrives before the ingest loop can commit it. Shutdown (SIGINT,
//! SIGTERM) stops the consumer first (unacknowledged batches stay with the broker), then the
//! ingest loop commits what it holds, then the roll-up worker and HTTP stop.

use std::net::SocketAddr;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use jiff::tz::TimeZone;
use shopfloor_store::{Gran, Ms, Retained, Store};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::config::GatewayConfig;
use crate::db::Db;
use crate::ingest::Trust;
use crate::metrics::Metrics;
use crate::registry::Registry;

/// Why the gateway could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// Bad configuration or registry files (exit 2).
    #[error("{0}")]
    Config(String),
    /// Anything at run time (exit 1).
    #[error("{0}")]
    Runtime(String),
}

/// A started gateway (in this process): its addresses and a way to stop it.
#[derive(Debug)]
pub struct Running {
    /// Where the HTTP API listens (the configured address, with the real port when it was 0).
    pub http: SocketAddr,
    pub db: Db,
    pub metrics: Arc<Metrics>,
    pub registry: Arc<Registry>,
    shutdown: watch::Sender<bool>,
    mqtt: Option<crate::mqtt::MqttHandle>,
    tasks: Vec<JoinHandle<()>>,
}

impl Running {
    /// Stops everything and waits (at most 10 s) for the tasks to finish.
    pub async fn stop(self) {
        let _ = self.shutdown.send(true);
        if let Some(m) = self.mqtt
            && tokio::time::timeout(Duration::from_secs(10), m.join())
                .await
                .is_err()
        {
            tracing::warn!("mqtt consumer did not stop in time");
        }
        for t in self.tasks {
            let _ = tokio::time::timeout(Duration::from_secs(10), t).await;
        }
    }
}

/// How often a running gateway re-reads the stored registry, so changes made by the `agents`
/// command or another replica (a revoked key, say) take effect without a restart.
pub const REGISTRY_REFRESH: Duration = Duration::from_secs(5);

pub(crate) fn now_ms() -> Ms {
    jiff::Timestamp::now().as_millisecond()
}

/// `shopfloor-gateway run --config FILE`.
pub fn main(path: &Path) -> ExitCode {
    let cfg = match crate::cli::config(path) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let rt = match crate::cli::runtime(true) {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    rt.block_on(async move {
        // Installed first: Ctrl-C during start-up stops the gateway once it is up.
        let stop = wait_for_signal();
        let running = match start(cfg).await {
            Ok(r) => r,
            Err(RunError::Config(e)) => {
                eprintln!("error: {e}");
                return ExitCode::from(2);
            }
            Err(RunError::Runtime(e)) => {
                eprintln!("error: {e}");
                return ExitCode::from(1);
            }
        };
        tracing::info!(http = %running.http, "gateway running");
        stop.await;
        tracing::info!("stopping");
        running.stop().await;
        ExitCode::SUCCESS
    })
}

/// Ctrl-C or SIGTERM. The handlers are installed when this is called, not when the future is
/// first polled, so a signal that arrives in between is not lost (nor kills the process).
pub(crate) fn wait_for_signal() -> impl std::future::Future<Output = ()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let int = signal(SignalKind::interrupt());
        let term = signal(SignalKind::terminate());
        async move {
            match (int, term) {
                (Ok(mut int), Ok(mut term)) => {
                    tokio::select! {
                        _ = int.recv() => {}
                        _ = term.recv() => {}
                    }
                }
                _ => {
                    let _ = tokio::signal::ctrl_c().await;
                }
            }
        }
    }
    #[cfg(not(unix))]
    {
        let ctrl_c = tokio::signal::windows::ctrl_c();
        async move {
            match ctrl_c {
                Ok(mut c) => {
                    let _ = c.recv().await;
                }
                Err(_) => {
                    let _ = tokio::signal::ctrl_c().await;
                }
            }
        }
    }
}

/// Starts every part of the gateway in this process.
pub async fn start(cfg: GatewayConfig) -> Result<Running, RunError> {
    let cfg = Arc::new(cfg);
    let tz = TimeZone::get(&cfg.gateway.time_zone)
        .map_err(|e| RunError::Config(format!("gateway.time_zone: {e}")))?;
    std::fs::create_dir_all(&cfg.gateway.data_dir).map_err(|e| {
        RunError::Runtime(format!(
            "gateway.data_dir {}: {e}",
            cfg.gateway.data_dir.display()
        ))
    })?;
    // The seal key (created once) before anything binds: a key that cannot be used stops here.
    let sealer = if cfg.seal.enabled {
        let key = crate::seal::key::load_or_create(&cfg.gateway.data_dir)
            .map_err(|e| RunError::Runtime(e.to_string()))?;
        Some(crate::seal::Sealer::new(key, cfg.seal.after_s))
    } else {
        None
    };
    let db = Db::open(&cfg.store_url(), cfg.store.max_connections)
        .await
        .map_err(|e| RunError::Runtime(format!("store {}: {e}", redact(&cfg.store_url()))))?;
    let metrics = Arc::new(Metrics::new());
    let trust = Arc::new(Trust::new());
    let registry = Arc::new(
        Registry::load(db.clone(), trust.clone())
            .await
            .map_err(|e| RunError::Runtime(format!("registry: {e}")))?,
    );
    if cfg.registry.dir.is_some() || cfg.registry.targets.is_some() {
        registry
            .sync_files(
                cfg.registry.dir.as_deref(),
                cfg.registry.targets.as_deref(),
                now_ms(),
            )
            .await
            .map_err(|errors| {
                RunError::Config(
                    errors
                        .iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join("\n"),
                )
            })?;
    }

    let (shutdown, shutdown_rx) = watch::channel(false);
    let mut tasks = Vec::new();

    // HTTP first: health and metrics are visible while the rest starts.
    let listener = tokio::net::TcpListener::bind(cfg.http.listen)
        .await
        .map_err(|e| RunError::Runtime(format!("http.listen {}: {e}", cfg.http.listen)))?;
    let http = listener
        .local_addr()
        .map_err(|e| RunError::Runtime(format!("http.listen: {e}")))?;
    let state = crate::api::AppState {
        db: db.clone(),
        registry: registry.clone(),
        metrics: metrics.clone(),
        tz: tz.clone(),
        max_body_bytes: cfg.http.max_body_bytes,
        web: Arc::new(crate::session::WebAuth::new(&cfg.http)),
    };
    // With the peer's address: the login rate limiter counts per client.
    let app = crate::api::router(state).into_make_service_with_connect_info::<SocketAddr>();
    let mut http_stop = shutdown_rx.clone();
    tasks.push(tokio::spawn(async move {
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = http_stop.wait_for(|s| *s).await;
            })
            .await;
        if let Err(e) = served {
            tracing::error!(error = %e, "http server stopped");
        }
    }));

    // Roll-ups (only the lease holder works when replicas share a database).
    tasks.push(tokio::spawn(crate::rollup::run(
        db.clone(),
        metrics.clone(),
        cfg.gateway.id.clone(),
        tz.clone(),
        shutdown_rx.clone(),
    )));

    // Seals of closed days (the roll-up lease holder only; docs/GATEWAY.md).
    if let Some(sealer) = sealer {
        tasks.push(tokio::spawn(crate::seal::run(
            db.clone(),
            registry.clone(),
            metrics.clone(),
            cfg.gateway.id.clone(),
            tz.clone(),
            sealer,
            shutdown_rx.clone(),
        )));
    }

    // Registry changes made outside this process.
    tasks.push(tokio::spawn(refresh_registry(
        registry.clone(),
        shutdown_rx.clone(),
    )));

    // Indicator gauges and retention.
    tasks.push(tokio::spawn(housekeeping(
        db.clone(),
        registry.clone(),
        metrics.clone(),
        tz.clone(),
        cfg.clone(),
        shutdown_rx.clone(),
    )));

    // The embedded broker, then the ingest loop, then the consumer.
    if cfg.mqtt.embedded {
        // start() probes the port for up to 10 s: off the async workers.
        #[cfg(feature = "embedded-broker")]
        {
            let (c, m) = (cfg.clone(), metrics.clone());
            tokio::task::spawn_blocking(move || crate::broker::start_with_metrics(&c, m))
                .await
                .map_err(|e| RunError::Runtime(format!("embedded broker: {e}")))?
                .map_err(RunError::Runtime)?;
        }
        #[cfg(not(feature = "embedded-broker"))]
        return Err(RunError::Config(
            "mqtt.embedded: this build has no embedded broker; set an external mqtt.url".into(),
        ));
    }
    let (tx, rx) = mpsc::channel(cfg.ingest.max_batches_per_commit.saturating_mul(4));
    tasks.push(tokio::spawn(crate::ingest::run(
        db.clone(),
        trust.clone(),
        metrics.clone(),
        cfg.ingest.clone(),
        cfg.mqtt.topic_prefix.clone(),
        rx,
    )));
    let consumer = crate::mqtt::start(&cfg, tx, metrics.clone(), shutdown_rx.clone())
        .await
        .map_err(RunError::Runtime)?;

    Ok(Running {
        http,
        db,
        metrics,
        registry,
        shutdown,
        mqtt: Some(consumer),
        tasks,
    })
}

/// Re-reads the registry every [`REGISTRY_REFRESH`].
async fn refresh_registry(registry: Arc<Registry>, mut shutdown: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(REGISTRY_REFRESH) => {}
            _ = shutdown.wait_for(|s| *s) => return,
        }
        match registry.refresh().await {
            Ok(true) => tracing::info!("registry changed in the store: reloaded"),
            Ok(false) => {}
            Err(e) => tracing::warn!(error = %e, "registry refresh failed"),
        }
    }
}

/// Indicator gauges every `metrics.indicator_refresh_s`, retention once an hour.
async fn housekeeping(
    db: Db,
    registry: Arc<Registry>,
    metrics: Arc<Metrics>,
    tz: TimeZone,
    cfg: Arc<GatewayConfig>,
    mut shutdown: watch::Receiver<bool>,
) {
    let refresh = Duration::from_secs(cfg.metrics.indicator_refresh_s);
    let mut last_purge: Option<Ms> = None;
    loop {
        // The data's clock (simulated in the demo), like ingest's receive time.
        let now = shopfloor_clock::now_ms();
        let snap = registry.snapshot();
        crate::indicators::refresh_gauges(
            &db,
            &snap,
            &tz,
            &metrics,
            cfg.metrics.indicator_entities_max,
            now,
        )
        .await;
        if last_purge.is_none_or(|t| now - t >= 3_600_000) {
            purge(&db, &cfg, now).await;
            last_purge = Some(now);
        }
        tokio::select! {
            _ = tokio::time::sleep(refresh) => {}
            _ = shutdown.wait_for(|s| *s) => return,
        }
    }
}

/// Deletes what is older than each table's retention.
async fn purge(db: &Db, cfg: &GatewayConfig, now: Ms) {
    let r = &cfg.retention;
    let day: Ms = 86_400_000;
    for (table, days) in [
        (Retained::Batches, r.raw_batches_days),
        (Retained::Samples, r.samples_days),
        (Retained::States, r.states_days),
        (Retained::Readings, r.readings_days),
        (Retained::Links, r.links_days),
        (Retained::Quarantine, r.quarantine_days),
        (Retained::Rollups(Gran::Minute), r.minute_rollups_days),
        (Retained::Rollups(Gran::Hour), r.hour_rollups_days),
    ] {
        if days == 0 {
            continue;
        }
        match db.purge(table, now - Ms::from(days) * day).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(?table, rows = n, "retention: purged"),
            Err(e) => tracing::warn!(?table, error = %e, "retention: purge failed"),
        }
    }
    // Dashboard sessions past their lifetime or idle timeout (also deleted when presented).
    let idle_ms = Ms::try_from(cfg.http.session_idle_s).unwrap_or(Ms::MAX / 2000) * 1000;
    match db.sessions_purge(now, now - idle_ms).await {
        Ok(0) => {}
        Ok(n) => tracing::info!(sessions = n, "ended sessions purged"),
        Err(e) => tracing::warn!(error = %e, "session purge failed"),
    }
}

/// A database URL without its password, for messages.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let creds = &url[s + 3..at];
            match creds.find(':') {
                Some(c) => format!("{}{}:***{}", &url[..s + 3], &creds[..c], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

/// Logs to stderr, filtered by `RUST_LOG` (default `info`).
pub fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

/// `shopfloor-gateway check --config FILE`: the configuration and its registry files, without
/// opening the store or binding anything. Exit 0 valid, 2 invalid.
pub fn check(path: &Path) -> ExitCode {
    let cfg = match crate::cli::config(path) {
        Ok(c) => c,
        Err(code) => return code,
    };
    match crate::registry::check_files(cfg.registry.dir.as_deref(), cfg.registry.targets.as_deref())
    {
        Ok(snap) => {
            println!(
                "{}: ok ({} entities, {} agents, {} products, {} targets)",
                path.display(),
                snap.entities.len(),
                snap.agents.len(),
                snap.products.len(),
                snap.targets.len()
            );
            ExitCode::SUCCESS
        }
        Err(errors) => {
            for e in errors {
                eprintln!("error: {e}");
            }
            ExitCode::from(2)
        }
    }
}

/// `shopfloor-gateway token add`: creates a token in the configured store and prints it once.
pub fn token_add(path: &Path, name: &str, role: &str) -> ExitCode {
    let cfg = match crate::cli::config(path) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let Some(role) = crate::model::Role::parse(role) else {
        eprintln!("error: --role: {role:?} is not one of viewer, engineer, auditor, admin");
        return ExitCode::from(2);
    };
    let rt = match crate::cli::runtime(false) {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    rt.block_on(async move {
        let db = match crate::cli::store(&cfg).await {
            Ok(db) => db,
            Err(code) => return code,
        };
        let actor = format!("cli:{}", whoami());
        match crate::auth::create_token(&db, name, role, &actor).await {
            Ok(token) => {
                println!("{token}");
                eprintln!(
                    "token {name:?} ({}) created; it is shown only once",
                    role.as_str()
                );
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::from(2)
            }
        }
    })
}

pub(crate) fn whoami() -> String {
    std::env::var("USER")
        .or_else(|_| std::env::var("USERNAME"))
        .unwrap_or_else(|_| "unknown".into())
}
