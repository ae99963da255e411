//! Seals (tamper evidence) and the decoded rows of batches for `verify` (migration
//! `0002_seals.sql`).
//!
//! Invariants:
//! - [`seal_put`] inserts the seal and marks the version it supersedes in one write transaction;
//!   if the superseded version is not stored, or was superseded already, nothing is written.
//! - `superseded_by` is the only column ever updated; the signed document, signature, evidence
//!   and manifest are stored and returned byte for byte.
//! - [`batch_rows`] reads through the per-device indexes (and `sample_points` /
//!   `reading_series`), in one read transaction (one snapshot).

use shopfloor_store::{
    BatchRef, BatchRows, LinkRow, Ms, ReadingRow, Result, SampleRow, SealFilter, SealRow, StateRow,
    StoreError,
};

use crate::{SqliteStore, bounds, db, json_text, json_value};

pub(crate) async fn seal_put(store: &SqliteStore, s: &SealRow) -> Result<()> {
    let mut tx = store.begin("seal_put").await?;
    sqlx::query!(
        "INSERT INTO seals (hash, signer, seq, prev, entity, from_ms, to_ms, version, supersedes,
                            superseded_by, sealed_at, doc, sig, manifest, evidence)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15)",
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
        s.evidence
    )
    .execute(&mut *tx)
    .await
    .map_err(db("seal_put"))?;
    if let Some(old) = &s.supersedes {
        let n = sqlx::query!(
            "UPDATE seals SET superseded_by = ?1 WHERE hash = ?2 AND superseded_by IS NULL",
            s.hash,
            old
        )
        .execute(&mut *tx)
        .await
        .map_err(db("seal_put: supersede"))?
        .rows_affected();
        if n != 1 {
            // Dropping the transaction rolls the insert back.
            return Err(StoreError::Corrupt(format!(
                "seal_put: the seal {old} to supersede is not stored or is superseded already"
            )));
        }
    }
    tx.commit().await.map_err(db("seal_put: commit"))
}

pub(crate) async fn seals(store: &SqliteStore, f: &SealFilter) -> Result<Vec<SealRow>> {
    let (p, lo, hi) = match &f.entity {
        Some(e) => {
            let (p, lo, hi) = bounds(e);
            (Some(p), Some(lo), Some(hi))
        }
        None => (None, None, None),
    };
    let bodies = f.with_bodies;
    let latest = f.latest_only;
    sqlx::query_as!(
        SealRow,
        r#"SELECT hash, signer, seq, prev, entity, from_ms AS "from", to_ms AS "to", version,
                  supersedes, superseded_by, sealed_at, doc, sig,
                  CASE WHEN ?7 THEN manifest ELSE '' END AS "manifest!: String",
                  CASE WHEN ?7 THEN evidence ELSE '' END AS "evidence!: String"
           FROM seals
           WHERE (?1 IS NULL OR entity = ?1 OR (entity >= ?2 AND entity < ?3))
                 AND (?4 IS NULL OR to_ms > ?4) AND (?5 IS NULL OR from_ms < ?5)
                 AND (?6 IS NULL OR signer = ?6)
                 AND (NOT ?8 OR superseded_by IS NULL)
           ORDER BY entity, from_ms, to_ms, version"#,
        p,
        lo,
        hi,
        f.from,
        f.to,
        f.signer,
        bodies,
        latest
    )
    .fetch_all(&store.read)
    .await
    .map_err(db("seals"))
}

pub(crate) async fn seal_head(store: &SqliteStore, signer: &str) -> Result<Option<SealRow>> {
    sqlx::query_as!(
        SealRow,
        r#"SELECT hash, signer, seq, prev, entity, from_ms AS "from", to_ms AS "to", version,
                  supersedes, superseded_by, sealed_at, doc, sig,
                  '' AS "manifest!: String", '' AS "evidence!: String"
           FROM seals WHERE signer = ?1 ORDER BY seq DESC LIMIT 1"#,
        signer
    )
    .fetch_optional(&store.read)
    .await
    .map_err(db("seal_head"))
}

pub(crate) async fn seal_state(
    store: &SqliteStore,
    name: &str,
) -> Result<Option<serde_json::Value>> {
    let doc = sqlx::query_scalar!("SELECT doc FROM seal_state WHERE name = ?1", name)
        .fetch_optional(&store.read)
        .await
        .map_err(db("seal_state"))?;
    doc.map(|d| json_value(&format!("seal_state {name}"), &d))
        .transpose()
}

pub(crate) async fn seal_state_put(
    store: &SqliteStore,
    name: &str,
    doc: &serde_json::Value,
    at: Ms,
) -> Result<()> {
    let text = json_text(doc);
    let mut tx = store.begin("seal_state_put").await?;
    sqlx::query!(
        "INSERT INTO seal_state (name, doc, updated_at) VALUES (?1, ?2, ?3)
         ON CONFLICT (name) DO UPDATE SET doc = excluded.doc, updated_at = excluded.updated_at",
        name,
        text,
        at
    )
    .execute(&mut *tx)
    .await
    .map_err(db("seal_state_put"))?;
    tx.commit().await.map_err(db("seal_state_put: commit"))
}

fn batch(agent: String, seq: i64) -> BatchRef {
    BatchRef { agent, seq }
}

pub(crate) async fn batch_rows(
    store: &SqliteStore,
    device: &str,
    from: Ms,
    to: Ms,
) -> Result<BatchRows> {
    let mut tx = store.begin_read("batch_rows").await?;
    let samples = sqlx::query!(
        r#"SELECT s.agent AS "agent!", s.seq AS "seq!: i64", s.point AS "point!", s.t AS "t!: i64",
                  s.num AS "num?: f64", s.is_bool AS "is_bool!: bool", s.text AS "text?",
                  s.err AS "err?"
           FROM sample_points AS p
           CROSS JOIN samples AS s ON s.device = p.device AND s.point = p.point
                AND s.t >= ?2 AND s.t <= ?3
           WHERE p.device = ?1
           ORDER BY 1, 2, 4, 3"#,
        device,
        from,
        to
    )
    .fetch_all(&mut *tx)
    .await
    .map_err(db("batch_rows: samples"))?
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
        r#"SELECT agent, seq, from_ms, to_ms, state FROM states
           WHERE device = ?1 AND to_ms >= ?2 AND to_ms <= ?3
           ORDER BY agent, seq, to_ms"#,
        device,
        from,
        to
    )
    .fetch_all(&mut *tx)
    .await
    .map_err(db("batch_rows: states"))?
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
        r#"SELECT r.agent AS "agent!", r.seq AS "seq!: i64", r.role AS "role!", r.point AS "point!",
                  r.t AS "t!: i64", r.v AS "v!: f64", r.width_bits AS "width_bits?: i32",
                  r.rollover AS "rollover?: f64"
           FROM reading_series AS s
           CROSS JOIN readings AS r ON r.device = s.device AND r.role = s.role
                AND r.point = s.point AND r.t >= ?2 AND r.t <= ?3
           WHERE s.device = ?1
           ORDER BY 1, 2, 5, 3, 4"#,
        device,
        from,
        to
    )
    .fetch_all(&mut *tx)
    .await
    .map_err(db("batch_rows: readings"))?
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
        r#"SELECT agent, seq, t, up AS "up!: bool", detail FROM links
           WHERE device = ?1 AND t >= ?2 AND t <= ?3
           ORDER BY agent, seq, t"#,
        device,
        from,
        to
    )
    .fetch_all(&mut *tx)
    .await
    .map_err(db("batch_rows: links"))?
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
    tx.commit().await.map_err(db("batch_rows"))?;
    Ok(BatchRows {
        samples,
        states,
        readings,
        links,
    })
}
