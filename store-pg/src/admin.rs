//! Registry, economic inputs, API tokens and the audit trail.
//!
//! Invariants:
//! - Every change writes its audit row in the same transaction; an unchanged registry document
//!   writes nothing.
//! - The audited `before` is the document actually replaced, also with concurrent writers
//!   (row lock, or a conflicting insert retried); input versions are consecutive per
//!   `(entity, from, to)` (a unique violation from a concurrent writer is retried).
//! - Tokens are audited with their name, role and hash, never a plaintext token.

use shopfloor_store::*;
use sqlx::{PgConnection, PgPool};

use crate::{Fail, db, filter_bounds, is_unique_violation, limit, parse_json};

/// Appends one audit row.
pub(crate) async fn audit_insert(
    conn: &mut PgConnection,
    at: Ms,
    actor: &str,
    kind: &str,
    item: &str,
    before: &str,
    after: &str,
) -> sqlx::Result<()> {
    sqlx::query!(
        "INSERT INTO audit (at, actor, kind, item, before_doc, after_doc)
         VALUES ($1, $2, $3, $4, $5, $6)",
        at,
        actor,
        kind,
        item,
        before,
        after,
    )
    .execute(conn)
    .await?;
    Ok(())
}

pub(crate) async fn registry_list(pool: &PgPool, kind: &str) -> Result<Vec<RegistryItem>> {
    let rows = sqlx::query!(
        "SELECT kind, id, doc, updated_at, updated_by FROM registry WHERE kind = $1 ORDER BY id",
        kind
    )
    .fetch_all(pool)
    .await
    .map_err(db)?;
    rows.into_iter()
        .map(|r| {
            Ok(RegistryItem {
                doc: parse_json("registry.doc", &r.doc)?,
                kind: r.kind,
                id: r.id,
                updated_at: r.updated_at,
                updated_by: r.updated_by,
            })
        })
        .collect()
}

pub(crate) async fn registry_get(
    pool: &PgPool,
    kind: &str,
    id: &str,
) -> Result<Option<RegistryItem>> {
    let row = sqlx::query!(
        "SELECT kind, id, doc, updated_at, updated_by FROM registry WHERE kind = $1 AND id = $2",
        kind,
        id
    )
    .fetch_optional(pool)
    .await
    .map_err(db)?;
    row.map(|r| {
        Ok(RegistryItem {
            doc: parse_json("registry.doc", &r.doc)?,
            kind: r.kind,
            id: r.id,
            updated_at: r.updated_at,
            updated_by: r.updated_by,
        })
    })
    .transpose()
}

/// Rounds of "no row to lock, and our insert conflicted" before giving up (each means another
/// writer created the item and then deleted it again between two of our statements).
const PUT_ROUNDS: u32 = 5;

pub(crate) async fn registry_put(
    pool: &PgPool,
    item: &RegistryItem,
) -> Result<Option<serde_json::Value>> {
    let doc = item.doc.to_string();
    let kind = format!("registry.{}", item.kind);
    let mut tx = pool.begin().await.map_err(db)?;
    for _ in 0..PUT_ROUNDS {
        let current = sqlx::query_scalar!(
            "SELECT doc FROM registry WHERE kind = $1 AND id = $2 FOR UPDATE",
            item.kind,
            item.id
        )
        .fetch_optional(&mut *tx)
        .await
        .map_err(db)?;
        match current {
            Some(before_text) => {
                let before = parse_json("registry.doc", &before_text)?;
                if before == item.doc {
                    tx.rollback().await.map_err(db)?;
                    return Ok(Some(before));
                }
                sqlx::query!(
                    "UPDATE registry SET doc = $3, updated_at = $4, updated_by = $5
                     WHERE kind = $1 AND id = $2",
                    item.kind,
                    item.id,
                    doc,
                    item.updated_at,
                    item.updated_by,
                )
                .execute(&mut *tx)
                .await
                .map_err(db)?;
                audit_insert(
                    &mut tx,
                    item.updated_at,
                    &item.updated_by,
                    &kind,
                    &item.id,
                    &before_text,
                    &doc,
                )
                .await
                .map_err(db)?;
                tx.commit().await.map_err(db)?;
                return Ok(Some(before));
            }
            None => {
                let inserted = sqlx::query!(
                    "INSERT INTO registry (kind, id, doc, updated_at, updated_by)
                     VALUES ($1, $2, $3, $4, $5)
                     ON CONFLICT (kind, id) DO NOTHING",
                    item.kind,
                    item.id,
                    doc,
                    item.updated_at,
                    item.updated_by,
                )
                .execute(&mut *tx)
                .await
                .map_err(db)?
                .rows_affected();
                if inserted == 1 {
                    audit_insert(
                        &mut tx,
                        item.updated_at,
                        &item.updated_by,
                        &kind,
                        &item.id,
                        "null",
                        &doc,
                    )
                    .await
                    .map_err(db)?;
                    tx.commit().await.map_err(db)?;
                    return Ok(None);
                }
                // Another writer created it meanwhile: lock its row and compare again.
            }
        }
    }
    Err(StoreError::Db(format!(
        "registry {}/{}: concurrent writers kept creating and deleting it",
        item.kind, item.id
    )))
}

pub(crate) async fn registry_delete(
    pool: &PgPool,
    kind: &str,
    id: &str,
    actor: &str,
    at: Ms,
) -> Result<Option<serde_json::Value>> {
    let mut tx = pool.begin().await.map_err(db)?;
    let deleted = sqlx::query_scalar!(
        "DELETE FROM registry WHERE kind = $1 AND id = $2 RETURNING doc",
        kind,
        id
    )
    .fetch_optional(&mut *tx)
    .await
    .map_err(db)?;
    let Some(before_text) = deleted else {
        tx.rollback().await.map_err(db)?;
        return Ok(None);
    };
    let before = parse_json("registry.doc", &before_text)?;
    audit_insert(
        &mut tx,
        at,
        actor,
        &format!("registry.{kind}"),
        id,
        &before_text,
        "null",
    )
    .await
    .map_err(db)?;
    tx.commit().await.map_err(db)?;
    Ok(Some(before))
}

/// Attempts of [`inputs_put`] when concurrent writers take the same version number.
const INPUT_ATTEMPTS: u32 = 5;

pub(crate) async fn inputs_put(pool: &PgPool, record: &InputsRecord) -> Result<i64> {
    let doc = record.doc.to_string();
    let item = format!("{}@{}..{}", record.entity, record.from, record.to);
    let mut attempt = 1;
    loop {
        match try_inputs_put(pool, record, &doc, &item).await {
            Ok(v) => return Ok(v),
            Err(Fail::Sql(e)) if attempt < INPUT_ATTEMPTS && is_unique_violation(&e) => {
                attempt += 1;
            }
            Err(Fail::Sql(e)) => return Err(db(e)),
            Err(Fail::Store(e)) => return Err(e),
        }
    }
}

async fn try_inputs_put(
    pool: &PgPool,
    r: &InputsRecord,
    doc: &str,
    item: &str,
) -> std::result::Result<i64, Fail> {
    let mut tx = pool.begin().await?;
    let current = sqlx::query!(
        "SELECT version, doc FROM inputs
         WHERE entity = $1 AND from_ms = $2 AND to_ms = $3
         ORDER BY version DESC LIMIT 1",
        r.entity,
        r.from,
        r.to
    )
    .fetch_optional(&mut *tx)
    .await?;
    let (version, before) = match current {
        Some(c) => (c.version + 1, c.doc),
        None => (1, "null".to_owned()),
    };
    sqlx::query!(
        "INSERT INTO inputs (entity, from_ms, to_ms, version, doc, at, actor, source)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        r.entity,
        r.from,
        r.to,
        version,
        doc,
        r.at,
        r.actor,
        r.source,
    )
    .execute(&mut *tx)
    .await?;
    audit_insert(&mut tx, r.at, &r.actor, "inputs", item, &before, doc).await?;
    tx.commit().await?;
    Ok(version)
}

pub(crate) async fn inputs_current(
    pool: &PgPool,
    filter: &DeviceFilter,
    from: Ms,
    to: Ms,
) -> Result<Vec<InputsRecord>> {
    let (p, lo, hi) = filter_bounds(filter);
    let rows = sqlx::query!(
        "SELECT DISTINCT ON (entity, from_ms, to_ms)
                entity, from_ms, to_ms, version, doc, at, actor, source
         FROM inputs
         WHERE entity >= $1 AND entity < $3 AND (entity = $1 OR entity >= $2) AND from_ms < $5 AND to_ms > $4
         ORDER BY entity, from_ms, to_ms, version DESC",
        p,
        lo,
        hi,
        from,
        to,
    )
    .fetch_all(pool)
    .await
    .map_err(db)?;
    rows.into_iter()
        .map(|r| {
            Ok(InputsRecord {
                doc: parse_json("inputs.doc", &r.doc)?,
                entity: r.entity,
                from: r.from_ms,
                to: r.to_ms,
                version: r.version,
                at: r.at,
                actor: r.actor,
                source: r.source,
            })
        })
        .collect()
}

pub(crate) async fn inputs_history(pool: &PgPool, entity: &str) -> Result<Vec<InputsRecord>> {
    let rows = sqlx::query!(
        "SELECT entity, from_ms, to_ms, version, doc, at, actor, source
         FROM inputs WHERE entity = $1
         ORDER BY at DESC, id DESC",
        entity
    )
    .fetch_all(pool)
    .await
    .map_err(db)?;
    rows.into_iter()
        .map(|r| {
            Ok(InputsRecord {
                doc: parse_json("inputs.doc", &r.doc)?,
                entity: r.entity,
                from: r.from_ms,
                to: r.to_ms,
                version: r.version,
                at: r.at,
                actor: r.actor,
                source: r.source,
            })
        })
        .collect()
}

pub(crate) async fn audit(pool: &PgPool, f: &AuditFilter) -> Result<Vec<AuditEntry>> {
    let rows = sqlx::query!(
        "SELECT id, at, actor, kind, item, before_doc, after_doc FROM audit
         WHERE ($1::text IS NULL OR starts_with(kind, $1))
           AND ($2::text IS NULL OR item = $2)
           AND ($3::bigint IS NULL OR at >= $3)
         ORDER BY id DESC
         LIMIT $4",
        f.kind_prefix,
        f.item,
        f.since,
        limit(f.limit),
    )
    .fetch_all(pool)
    .await
    .map_err(db)?;
    rows.into_iter()
        .map(|r| {
            Ok(AuditEntry {
                before: parse_json("audit.before_doc", &r.before_doc)?,
                after: parse_json("audit.after_doc", &r.after_doc)?,
                id: r.id,
                at: r.at,
                actor: r.actor,
                kind: r.kind,
                item: r.item,
            })
        })
        .collect()
}

/// What the audit trail records of a token (never the token itself).
fn token_doc(name: &str, role: &str, hash: &str, revoked_at: Option<Ms>) -> String {
    serde_json::json!({"name": name, "role": role, "hash": hash, "revoked_at": revoked_at})
        .to_string()
}

pub(crate) async fn token_add(pool: &PgPool, t: &TokenRow) -> Result<()> {
    let mut tx = pool.begin().await.map_err(db)?;
    sqlx::query!(
        "INSERT INTO tokens (name, role, hash, created_at, created_by, revoked_at)
         VALUES ($1, $2, $3, $4, $5, $6)",
        t.name,
        t.role,
        t.hash,
        t.created_at,
        t.created_by,
        t.revoked_at,
    )
    .execute(&mut *tx)
    .await
    .map_err(db)?;
    let after = token_doc(&t.name, &t.role, &t.hash, t.revoked_at);
    audit_insert(
        &mut tx,
        t.created_at,
        &t.created_by,
        "token",
        &t.name,
        "null",
        &after,
    )
    .await
    .map_err(db)?;
    tx.commit().await.map_err(db)
}

pub(crate) async fn token_by_hash(pool: &PgPool, hash: &str) -> Result<Option<TokenRow>> {
    sqlx::query_as!(
        TokenRow,
        "SELECT name, role, hash, created_at, created_by, revoked_at FROM tokens WHERE hash = $1",
        hash
    )
    .fetch_optional(pool)
    .await
    .map_err(db)
}

pub(crate) async fn tokens(pool: &PgPool) -> Result<Vec<TokenRow>> {
    sqlx::query_as!(
        TokenRow,
        "SELECT name, role, hash, created_at, created_by, revoked_at FROM tokens ORDER BY name"
    )
    .fetch_all(pool)
    .await
    .map_err(db)
}

pub(crate) async fn token_revoke(pool: &PgPool, name: &str, actor: &str, at: Ms) -> Result<bool> {
    let mut tx = pool.begin().await.map_err(db)?;
    let revoked = sqlx::query!(
        "UPDATE tokens SET revoked_at = $2 WHERE name = $1 AND revoked_at IS NULL
         RETURNING role, hash",
        name,
        at
    )
    .fetch_optional(&mut *tx)
    .await
    .map_err(db)?;
    let Some(r) = revoked else {
        tx.rollback().await.map_err(db)?;
        return Ok(false);
    };
    let before = token_doc(name, &r.role, &r.hash, None);
    let after = token_doc(name, &r.role, &r.hash, Some(at));
    audit_insert(&mut tx, at, actor, "token", name, &before, &after)
        .await
        .map_err(db)?;
    tx.commit().await.map_err(db)?;
    Ok(true)
}
