//! Plumbing shared by the one-shot commands (`check`, `token add`, `user`, `agents`, `report`,
//! `verify`) and `run`: the configuration, the time zone, a runtime and the store, each failure
//! printed once as `error: …` and turned into the exit code of DESIGN.md §2 (2 for bad input
//! or configuration, 1 for a runtime failure), so every command reports them the same way.

use std::path::Path;
use std::process::ExitCode;

use jiff::tz::TimeZone;

use crate::config::{self, GatewayConfig};
use crate::db::Db;
use crate::indicators::QueryError;
use crate::model::Snapshot;

/// Loads and validates the configuration; every problem is printed (exit 2).
pub(crate) fn config(path: &Path) -> Result<GatewayConfig, ExitCode> {
    config::load(path).map_err(|errors| {
        for e in errors {
            eprintln!("error: {e}");
        }
        ExitCode::from(2)
    })
}

/// The configuration's `gateway.time_zone` (exit 2 if unknown).
pub(crate) fn time_zone(path: &Path, cfg: &GatewayConfig) -> Result<TimeZone, ExitCode> {
    TimeZone::get(&cfg.gateway.time_zone).map_err(|e| {
        eprintln!("error: {}: gateway.time_zone: {e}", path.display());
        ExitCode::from(2)
    })
}

/// A runtime for a command: one thread, or the multi-threaded one of `run` (exit 1).
pub(crate) fn runtime(multi_thread: bool) -> Result<tokio::runtime::Runtime, ExitCode> {
    let mut b = if multi_thread {
        tokio::runtime::Builder::new_multi_thread()
    } else {
        tokio::runtime::Builder::new_current_thread()
    };
    b.enable_all().build().map_err(|e| {
        eprintln!("error: cannot start the runtime: {e}");
        ExitCode::from(1)
    })
}

/// Opens (and migrates) the configured store, creating `gateway.data_dir` first (exit 1).
pub(crate) async fn store(cfg: &GatewayConfig) -> Result<Db, ExitCode> {
    if let Err(e) = std::fs::create_dir_all(&cfg.gateway.data_dir) {
        eprintln!(
            "error: gateway.data_dir {}: {e}",
            cfg.gateway.data_dir.display()
        );
        return Err(ExitCode::from(1));
    }
    Db::open(&cfg.store_url(), cfg.store.max_connections)
        .await
        .map_err(|e| {
            eprintln!("error: store {}: {e}", crate::run::redact(&cfg.store_url()));
            ExitCode::from(1)
        })
}

/// The store and the registry as stored, i.e. as the running gateway holds it (the files are
/// synced into the store by `run`; a read-only command never writes). Errors are messages for
/// exit 1.
pub(crate) async fn stored_registry(cfg: &GatewayConfig) -> Result<(Db, Snapshot), String> {
    let db = Db::open(&cfg.store_url(), cfg.store.max_connections)
        .await
        .map_err(|e| format!("store {}: {e}", crate::run::redact(&cfg.store_url())))?;
    let snap = crate::registry::read_snapshot(&db)
        .await
        .map_err(|e| format!("registry: {e}"))?;
    Ok((db, snap))
}

/// Prints why a query of `entity` failed: exit 2 for bad input or an unknown entity, 1 for the
/// store.
pub(crate) fn query_failed(e: QueryError, entity: &str) -> ExitCode {
    match e {
        e @ QueryError::Bad { .. } => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
        QueryError::NotFound(_) => {
            eprintln!("error: entity: {entity} is not a registered entity");
            ExitCode::from(2)
        }
        e @ QueryError::Store(_) => {
            eprintln!("error: {e}");
            ExitCode::from(1)
        }
    }
}
