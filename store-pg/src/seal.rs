//! Seals (tamper evidence) and the decoded rows of batches for `verify` (migration
//! `0002_seals.sql`); same semantics as the SQLite backend.
//!
//! Invariants:
//! - [`seal_put`] inserts the seal and marks the version it supersedes in one transaction; if
//!   the superseded version is not stored, or was superseded already (a concurrent sealer),
//!   nothing is written. The unique indexes on (signer, seq) and (entity, from, to, version)
//!   refuse a second seal of either.
//! - `superseded_by` is the only column ever updated; documents are TEXT, returned byte for
//!   byte.
//! - [`batch_rows`] reads in one read-only REPEATABLE READ transaction (one snapshot), through
//!   the per-device indexes (points and series found by index skipping, as `raw_slice` does).

use shopfloor_store::*;
use sqlx::PgPool;

use crate::{db, filter_bounds, parse_json};

pub(crate) async fn seal_put(pool: &PgPool, s: &SealRow) -> Result<()> {
    let mut tx = pool.begin().await.map_err(db)?;
    sqlx::query!(
        "INSERT INTO seals (hash, signer, seq, prev, entity, from_ms, to_ms, version, supersedes,
                            superseded_by, sealed_at, doc, sig, manifest, evidence)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)",
        s.hash,
        s.signer,
        s.seq,
        s.prev,
        s.entity,
        s.from,
        s.to,
        s.version,
        s.supersedes,
        s.superseded_by,
        s.sealed_at,
        s.doc,
        s.sig,
        s.manifest,
        s.evidence,
    )
    .execute(&mut *tx)
    .await
    .map_err(db)?;
    if let Some(old) = &s.supersedes {
        let n = sqlx::query!(
            "UPDATE seals SET superseded_by = $1 WHERE hash = $2 AND superseded_by IS NULL",
            s.hash,
            old,
        )
        .execute(&mut *tx)
        .await
        .map_err(db)?
        .rows_affected();
        if n != 1 {
            // Dropping the transaction rolls the insert back.
            return Err(StoreError::Corrupt(format!(
                "seal_put: the seal {old} to supersede is not stored or is superseded already"
            )));
        }
    }
    tx.commit().await.map_err(db)
}

pub(crate) async fn seals(pool: &PgPool, f: &SealFilter) -> Result<Vec<SealRow>> {
    let (p, lo, hi) = match &f.entity {
        Some(e) => {
            let (p, lo, hi) = filter_bounds(e);
            (Some(p), Some(lo), Some(hi))
        }
        None => (None, None, None),
    };
    sqlx::query_as!(
        SealRow,
        r#"SELECT hash, signer, seq, prev, entity, from_ms AS "from", to_ms AS "to", version,
                  supersedes, superseded_by, sealed_at, doc, sig,
                  CASE WHEN $7 THEN manifest ELSE '' END AS "manifest!",
                  CASE WHEN $7 THEN evidence ELSE '' END AS "evidence!"
           FROM seals
           WHERE ($1::text IS NULL OR entity = $1 OR (entity >= $2 AND entity < $3))
                 AND ($4::bigint IS NULL OR to_ms > $4) AND ($5::bigint IS NULL OR from_ms < $5)
                 AND ($6::text IS NULL OR signer = $6)
                 AND (NOT $8 OR superseded_by IS NULL)
           ORDER BY entity, from_ms, to_ms, version"#,
        p,
        lo,
        hi,
        f.from,
        f.to,
        f.signer,
        f.with_bodies,
        f.latest_only,
    )
    .fetch_all(pool)
    .await
    .map_err(db)
}

pub(crate) async fn seal_head(pool: &PgPool, signer: &str) -> Result<Option<SealRow>> {
    sqlx::query_as!(
        SealRow,
        r#"SELECT hash, signer, seq, prev, entity, from_ms AS "from", to_ms AS "to", version,
                  supersedes, superseded_by, sealed_at, doc, sig,
                  '' AS "manifest!", '' AS "evidence!"
           FROM seals WHERE signer = $1 ORDER BY seq DESC LIMIT 1"#,
        signer
    )
    .fetch_optional(pool)
    .await
    .map_err(db)
}

pub(crate) async fn seal_state(pool: &PgPool, name: &str) -> Result<Option<serde_json::Value>> {
    let doc = sqlx::query_scalar!("SELECT doc FROM seal_state WHERE name = $1", name)
        .fetch_optional(pool)
        .await
        .map_err(db)?;
    doc.map(|d| parse_json(&format!("seal_state {name}"), &d))
        .transpose()
}

pub(crate) async fn seal_state_put(
    pool: &PgPool,
    name: &str,
    doc: &serde_json::Value,
    at: Ms,
) -> Result<()> {
    let text = doc.to_string();
    sqlx::query!(
        "INSERT INTO seal_state (name, doc, updated_at) VALUES ($1, $2, $3)
         ON CONFLICT (name) DO UPDATE SET doc = EXCLUDED.doc, updated_at = EXCLUDED.updated_at",
        name,
        text,
        at,
    )
    .execute(pool)
    .await
    .map_err(db)?;
    Ok(())
}

fn batch(agent: String, seq: i64) -> BatchRef {
    BatchRef { agent, seq }
}

pub(crate) async fn batch_rows(pool: &PgPool, device: &str, from: Ms, to: Ms) -> Result<BatchRows> {
    let mut tx = pool.begin().await.map_err(db)?;
    sqlx::query!("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        .execute(&mut *tx)
        .await
        .map_err(db)?;
    let samples = sqlx::query!(
        r#"WITH RECURSIVE pts AS (
               (SELECT point FROM samples WHERE device = $1 ORDER BY point LIMIT 1)
               UNION ALL
               SELECT nxt.point
               FROM pts, LATERAL (
                   SELECT s.point FROM samples s
                   WHERE s.device = $1 AND s.point > pts.point
                   ORDER BY s.point LIMIT 1
               ) nxt
           )
           SELECT s.agent AS "agent!", s.seq AS "seq!", s.point AS "point!", s.t AS "t!",
                  s.num AS "num?", s.is_bool AS "is_bool!", s.text AS "text?", s.err AS "err?"
           FROM pts
           CROSS JOIN LATERAL (
               SELECT agent, seq, point, t, num, is_bool, text, err FROM samples
               WHERE device = $1 AND point = pts.point AND t >= $2 AND t <= $3
           ) s
           ORDER BY 1, 2, 4, 3"#,
        device,
        from,
        to,
    )
    .fetch_all(&mut *tx)
    .await
    .map_err(db)?
    .into_iter()
    .map(|r| {
        (
            batch(r.agent, r.seq),
            SampleRow {
                device: device.to_owned(),
                point: r.point,
                t: r.t,
                num: r.num,
                is_bool: r.is_bool,
                text: r.text,
                err: r.err,
            },
        )
    })
    .collect();
    let states = sqlx::query!(
        "SELECT agent, seq, from_ms, to_ms, state FROM states
         WHERE device = $1 AND to_ms >= $2 AND to_ms <= $3
         ORDER BY agent, seq, to_ms",
        device,
        from,
        to,
    )
    .fetch_all(&mut *tx)
    .await
    .map_err(db)?
    .into_iter()
    .map(|r| {
        (
            batch(r.agent, r.seq),
            StateRow {
                device: device.to_owned(),
                from: r.from_ms,
                to: r.to_ms,
                state: r.state,
            },
        )
    })
    .collect();
    let readings = sqlx::query!(
        r#"WITH RECURSIVE series AS (
               (SELECT role, point FROM readings WHERE device = $1 ORDER BY role, point LIMIT 1)
               UNION ALL
               SELECT nxt.role, nxt.point
               FROM series, LATERAL (
                   SELECT r.role, r.point FROM readings r
                   WHERE r.device = $1 AND (r.role, r.point) > (series.role, series.point)
                   ORDER BY r.role, r.point LIMIT 1
               ) nxt
           )
           SELECT x.agent AS "agent!", x.seq AS "seq!", s.role AS "role!", s.point AS "point!",
                  x.t AS "t!", x.v AS "v!", x.width_bits AS "width_bits?",
                  x.rollover AS "rollover?"
           FROM series s
           CROSS JOIN LATERAL (
               SELECT agent, seq, t, v, width_bits, rollover FROM readings
               WHERE device = $1 AND role = s.role AND point = s.point AND t >= $2 AND t <= $3
           ) x
           ORDER BY 1, 2, 5, 3, 4"#,
        device,
        from,
        to,
    )
    .fetch_all(&mut *tx)
    .await
    .map_err(db)?
    .into_iter()
    .map(|r| {
        (
            batch(r.agent, r.seq),
            ReadingRow {
                device: device.to_owned(),
                role: r.role,
                point: r.point,
                t: r.t,
                v: r.v,
                width_bits: r.width_bits,
                rollover: r.rollover,
            },
        )
    })
    .collect();
    let links = sqlx::query!(
        "SELECT agent, seq, t, up, detail FROM links
         WHERE device = $1 AND t >= $2 AND t <= $3
         ORDER BY agent, seq, t",
        device,
        from,
        to,
    )
    .fetch_all(&mut *tx)
    .await
    .map_err(db)?
    .into_iter()
    .map(|r| {
        (
            batch(r.agent, r.seq),
            LinkRow {
                device: device.to_owned(),
                t: r.t,
                up: r.up,
                detail: r.detail,
            },
        )
    })
    .collect();
    tx.commit().await.map_err(db)?;
    Ok(BatchRows {
        samples,
        states,
        readings,
        links,
    })
}
