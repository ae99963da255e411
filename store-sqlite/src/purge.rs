//! Retention (`purge`) and the health check.
//!
//! Invariants:
//! - A purge is cut into short write transactions of at most [`CHUNK`] rows, so ingest waits
//!   for one chunk at most, never for the whole deletion. Rows are only ever deleted by their
//!   own time column being `< before`; a purge interrupted half-way leaves a consistent store
//!   (each chunk is whole) and the next purge continues.
//! - The raw tables (samples, states, readings, links) have no index on their time column (it
//!   would cost every ingested row an index insert). Their chunks are found by a scan on a
//!   read connection (which never blocks the writer) in rowid order, where the oldest rows
//!   are; the writer then deletes by rowid range, re-checking the time.
//! - Purging batches recomputes the `heads` row of every agent it touched, in the same
//!   transaction.

use std::collections::BTreeSet;

use shopfloor_store::{Gran, Ms, Result, Retained};

use crate::{SqliteStore, db};

/// Rows deleted per write transaction.
const CHUNK: i64 = 5_000;

/// The chunked purge of a raw table: `$scan` (on a read connection) gives the rowid range of
/// the next at most [`CHUNK`] rows older than `before`, `$delete` removes the rows of that
/// range that are still older than `before`.
macro_rules! by_rowid {
    ($store:expr, $before:expr, $op:literal, $scan:tt, $delete:tt) => {{
        let mut total: u64 = 0;
        loop {
            let range = sqlx::query!($scan, $before, CHUNK)
                .fetch_one(&$store.read)
                .await
                .map_err(db($op))?;
            let (Some(lo), Some(hi)) = (range.lo, range.hi) else {
                break;
            };
            let mut tx = $store.begin($op).await?;
            let n = sqlx::query!($delete, lo, hi, $before)
                .execute(&mut *tx)
                .await
                .map_err(db($op))?
                .rows_affected();
            tx.commit().await.map_err(db($op))?;
            total += n;
            // Fewer than a chunk: the scan reached the end of the table. Nothing the scan saw
            // was still there: another purge ran; stop rather than spin (the next purge picks
            // up whatever is left).
            if range.n < CHUNK || n == 0 {
                break;
            }
        }
        Ok(total)
    }};
}

pub(crate) async fn purge(store: &SqliteStore, table: Retained, before: Ms) -> Result<u64> {
    match table {
        Retained::Batches => purge_batches(store, before).await,
        Retained::Quarantine => purge_quarantine(store, before).await,
        Retained::Samples => {
            by_rowid!(
                store,
                before,
                "purge samples",
                r#"SELECT MIN(rowid) AS "lo?: i64", MAX(rowid) AS "hi?: i64", COUNT(*) AS "n!: i64" FROM
                   (SELECT rowid FROM samples WHERE t < ?1 ORDER BY rowid LIMIT ?2)"#,
                "DELETE FROM samples WHERE rowid >= ?1 AND rowid <= ?2 AND t < ?3"
            )
        }
        Retained::States => {
            by_rowid!(
                store,
                before,
                "purge states",
                r#"SELECT MIN(rowid) AS "lo?: i64", MAX(rowid) AS "hi?: i64", COUNT(*) AS "n!: i64" FROM
                   (SELECT rowid FROM states WHERE to_ms < ?1 ORDER BY rowid LIMIT ?2)"#,
                "DELETE FROM states WHERE rowid >= ?1 AND rowid <= ?2 AND to_ms < ?3"
            )
        }
        Retained::Readings => {
            by_rowid!(
                store,
                before,
                "purge readings",
                r#"SELECT MIN(rowid) AS "lo?: i64", MAX(rowid) AS "hi?: i64", COUNT(*) AS "n!: i64" FROM
                   (SELECT rowid FROM readings WHERE t < ?1 ORDER BY rowid LIMIT ?2)"#,
                "DELETE FROM readings WHERE rowid >= ?1 AND rowid <= ?2 AND t < ?3"
            )
        }
        Retained::Links => {
            by_rowid!(
                store,
                before,
                "purge links",
                r#"SELECT MIN(rowid) AS "lo?: i64", MAX(rowid) AS "hi?: i64", COUNT(*) AS "n!: i64" FROM
                   (SELECT rowid FROM links WHERE t < ?1 ORDER BY rowid LIMIT ?2)"#,
                "DELETE FROM links WHERE rowid >= ?1 AND rowid <= ?2 AND t < ?3"
            )
        }
        Retained::Rollups(gran) => purge_rollups(store, gran, before).await,
    }
}

async fn purge_batches(store: &SqliteStore, before: Ms) -> Result<u64> {
    let mut total: u64 = 0;
    loop {
        let mut tx = store.begin("purge batches").await?;
        let agents = sqlx::query_scalar!(
            "DELETE FROM batches WHERE rowid IN
                 (SELECT rowid FROM batches WHERE to_ms < ?1 LIMIT ?2)
             RETURNING agent",
            before,
            CHUNK
        )
        .fetch_all(&mut *tx)
        .await
        .map_err(db("purge batches"))?;
        let n = agents.len() as u64;
        let touched: BTreeSet<String> = agents.into_iter().collect();
        for agent in &touched {
            sqlx::query!("DELETE FROM heads WHERE agent = ?1", agent)
                .execute(&mut *tx)
                .await
                .map_err(db("purge batches: heads"))?;
            sqlx::query!(
                "INSERT INTO heads (agent, batches, first_seq, last_seq, last_hash, last_to,
                                    last_received)
                 SELECT b.agent, g.n, g.lo, g.hi, b.body_hash, b.to_ms, b.received
                 FROM (SELECT COUNT(*) AS n, MIN(seq) AS lo, MAX(seq) AS hi FROM batches
                       WHERE agent = ?1) AS g
                 JOIN batches AS b ON b.agent = ?1 AND b.seq = g.hi",
                agent
            )
            .execute(&mut *tx)
            .await
            .map_err(db("purge batches: heads"))?;
        }
        tx.commit().await.map_err(db("purge batches: commit"))?;
        total += n;
        if n < CHUNK as u64 {
            return Ok(total);
        }
    }
}

async fn purge_quarantine(store: &SqliteStore, before: Ms) -> Result<u64> {
    let mut total: u64 = 0;
    loop {
        let mut tx = store.begin("purge quarantine").await?;
        let n = sqlx::query!(
            "DELETE FROM quarantine WHERE id IN
                 (SELECT id FROM quarantine WHERE received < ?1 LIMIT ?2)",
            before,
            CHUNK
        )
        .execute(&mut *tx)
        .await
        .map_err(db("purge quarantine"))?
        .rows_affected();
        tx.commit().await.map_err(db("purge quarantine: commit"))?;
        total += n;
        if n < CHUNK as u64 {
            return Ok(total);
        }
    }
}

/// Roll-up rows of one granularity: per device (found on a read connection, one index seek
/// each), one transaction deleting its buckets before `before` in the three tables.
async fn purge_rollups(store: &SqliteStore, gran: Gran, before: Ms) -> Result<u64> {
    let g = gran.as_str();
    let mut devices = BTreeSet::new();
    let op = "purge rollups";
    devices.extend(
        sqlx::query_scalar!(
            r#"WITH RECURSIVE d(device) AS (
                   SELECT (SELECT device FROM rollup_states ORDER BY device LIMIT 1)
                   UNION ALL
                   SELECT (SELECT device FROM rollup_states WHERE device > d.device
                           ORDER BY device LIMIT 1)
                   FROM d WHERE d.device IS NOT NULL)
               SELECT device AS "device!" FROM d WHERE device IS NOT NULL"#
        )
        .fetch_all(&store.read)
        .await
        .map_err(db(op))?,
    );
    devices.extend(
        sqlx::query_scalar!(
            r#"WITH RECURSIVE d(device) AS (
                   SELECT (SELECT device FROM rollup_counters ORDER BY device LIMIT 1)
                   UNION ALL
                   SELECT (SELECT device FROM rollup_counters WHERE device > d.device
                           ORDER BY device LIMIT 1)
                   FROM d WHERE d.device IS NOT NULL)
               SELECT device AS "device!" FROM d WHERE device IS NOT NULL"#
        )
        .fetch_all(&store.read)
        .await
        .map_err(db(op))?,
    );
    devices.extend(
        sqlx::query_scalar!(
            r#"WITH RECURSIVE d(device) AS (
                   SELECT (SELECT device FROM rollup_activity ORDER BY device LIMIT 1)
                   UNION ALL
                   SELECT (SELECT device FROM rollup_activity WHERE device > d.device
                           ORDER BY device LIMIT 1)
                   FROM d WHERE d.device IS NOT NULL)
               SELECT device AS "device!" FROM d WHERE device IS NOT NULL"#
        )
        .fetch_all(&store.read)
        .await
        .map_err(db(op))?,
    );
    let mut total: u64 = 0;
    for device in &devices {
        let mut tx = store.begin(op).await?;
        let states = sqlx::query!(
            "DELETE FROM rollup_states WHERE device = ?1 AND gran = ?2 AND bucket < ?3",
            device,
            g,
            before
        )
        .execute(&mut *tx)
        .await
        .map_err(db(op))?
        .rows_affected();
        let counters = sqlx::query!(
            "DELETE FROM rollup_counters WHERE device = ?1 AND gran = ?2 AND bucket < ?3",
            device,
            g,
            before
        )
        .execute(&mut *tx)
        .await
        .map_err(db(op))?
        .rows_affected();
        let activity = sqlx::query!(
            "DELETE FROM rollup_activity WHERE device = ?1 AND gran = ?2 AND bucket < ?3",
            device,
            g,
            before
        )
        .execute(&mut *tx)
        .await
        .map_err(db(op))?
        .rows_affected();
        tx.commit().await.map_err(db(op))?;
        total += states + counters + activity;
    }
    Ok(total)
}

pub(crate) async fn ping(store: &SqliteStore) -> Result<()> {
    sqlx::query_scalar!(r#"SELECT sqlite_version() AS "version!""#)
        .fetch_one(&store.read)
        .await
        .map_err(db("ping"))?;
    Ok(())
}
