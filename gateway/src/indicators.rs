//! (being written: indicators helper) Agreed interface below; bodies to come.

use std::fmt;

use jiff::tz::TimeZone;
use shopfloor_store::{Ms, StoreError};

use crate::db::Db;
use crate::model::Snapshot;

/// Why a query cannot be answered. `Bad` and `NotFound` are the caller's fault (HTTP 400 /
/// 404); `Store` is ours (500).
#[derive(Debug)]
pub enum QueryError {
    Bad { field: String, reason: String },
    NotFound(String),
    Store(StoreError),
}

impl fmt::Display for QueryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            QueryError::Bad { field, reason } => write!(f, "{field}: {reason}"),
            QueryError::NotFound(what) => write!(f, "{what}: not found"),
            QueryError::Store(e) => write!(f, "{e}"),
        }
    }
}

impl From<StoreError> for QueryError {
    fn from(e: StoreError) -> Self {
        QueryError::Store(e)
    }
}

/// Parses a query time: RFC 3339 with offset, or a date `YYYY-MM-DD` (local midnight in `tz`).
pub fn parse_time(field: &str, text: &str, tz: &TimeZone) -> Result<Ms, QueryError> {
    let _ = tz;
    Err(QueryError::Bad { field: field.into(), reason: format!("cannot parse {text:?} yet") })
}

/// `GET /api/v1/indicators`: every indicator of `entity` over `[from, to)` as JSON.
pub async fn indicators(
    db: &Db,
    snap: &Snapshot,
    tz: &TimeZone,
    entity: &str,
    from: Ms,
    to: Ms,
) -> Result<serde_json::Value, QueryError> {
    let _ = (db, snap, tz, entity, from, to);
    Err(QueryError::NotFound(entity.into()))
}

/// `GET /api/v1/indicators/<id>/series`: one value per step (`minute`, `hour`, `day`, `month`).
#[allow(clippy::too_many_arguments)]
pub async fn series(
    db: &Db,
    snap: &Snapshot,
    tz: &TimeZone,
    id: &str,
    entity: &str,
    from: Ms,
    to: Ms,
    step: &str,
) -> Result<serde_json::Value, QueryError> {
    let _ = (db, snap, tz, id, entity, from, to, step);
    Err(QueryError::NotFound(entity.into()))
}

/// `GET /api/v1/assessments/<kind>`: `digital_workshop` or `green_factory`.
pub async fn assessment(
    db: &Db,
    snap: &Snapshot,
    tz: &TimeZone,
    kind: &str,
    entity: &str,
    from: Ms,
    to: Ms,
) -> Result<serde_json::Value, QueryError> {
    let _ = (db, snap, tz, kind, entity, from, to);
    Err(QueryError::NotFound(entity.into()))
}

/// `GET /api/v1/evidence`: the evidence document (serialised `shopfloor.evidence/1`).
pub async fn evidence(
    db: &Db,
    snap: &Snapshot,
    tz: &TimeZone,
    entity: &str,
    from: Ms,
    to: Ms,
) -> Result<shopfloor_core::Evidence, QueryError> {
    let _ = (db, snap, tz, entity, from, to);
    Err(QueryError::NotFound(entity.into()))
}
