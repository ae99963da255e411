//! Registry, economic inputs, API tokens and the audit trail.
//!
//! Invariants:
//! - Every change writes its audit row in the same write transaction; a call that changes
//!   nothing (an unchanged registry document, deleting or revoking what is not there) writes
//!   no audit row.
//! - Audit rows of tokens carry the name, role and hash, never a token.
//! - Input versions of one `(entity, from, to)` are 1, 2, 3, … in insertion order; the value is
//!   computed inside the write transaction, so two puts never get the same version.

use serde_json::{Value, json};
use shopfloor_store::{
    AuditEntry, AuditFilter, DeviceFilter, InputsRecord, Ms, RegistryItem, Result, TokenRow,
};
use sqlx::SqliteConnection;

use crate::{SqliteStore, bounds, db, json_text, json_value};

/// Appends one audit row on the transaction's connection.
pub(crate) async fn write_audit(
    conn: &mut SqliteConnection,
    at: Ms,
    actor: &str,
    kind: &str,
    item: &str,
    before: &Value,
    after: &Value,
) -> std::result::Result<(), sqlx::Error> {
    let before = json_text(before);
    let after = json_text(after);
    sqlx::query!(
        "INSERT INTO audit (at, actor, kind, item, before_doc, after_doc)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        at,
        actor,
        kind,
        item,
        before,
        after
    )
    .execute(&mut *conn)
    .await?;
    Ok(())
}

pub(crate) async fn registry_list(store: &SqliteStore, kind: &str) -> Result<Vec<RegistryItem>> {
    let rows = sqlx::query!(
        "SELECT kind, id, doc, updated_at, updated_by FROM registry WHERE kind = ?1 ORDER BY id",
        kind
    )
    .fetch_all(&store.read)
    .await
    .map_err(db("registry_list"))?;
    rows.into_iter()
        .map(|r| {
            let doc = json_value(&format!("registry {}/{}", r.kind, r.id), &r.doc)?;
            Ok(RegistryItem {
                kind: r.kind,
                id: r.id,
                doc,
                updated_at: r.updated_at,
                updated_by: r.updated_by,
            })
        })
        .collect()
}

pub(crate) async fn registry_get(
    store: &SqliteStore,
    kind: &str,
    id: &str,
) -> Result<Option<RegistryItem>> {
    let row = sqlx::query!(
        "SELECT kind, id, doc, updated_at, updated_by FROM registry WHERE kind = ?1 AND id = ?2",
        kind,
        id
    )
    .fetch_optional(&store.read)
    .await
    .map_err(db("registry_get"))?;
    row.map(|r| {
        let doc = json_value(&format!("registry {}/{}", r.kind, r.id), &r.doc)?;
        Ok(RegistryItem {
            kind: r.kind,
            id: r.id,
            doc,
            updated_at: r.updated_at,
            updated_by: r.updated_by,
        })
    })
    .transpose()
}

pub(crate) async fn registry_put(
    store: &SqliteStore,
    item: &RegistryItem,
) -> Result<Option<Value>> {
    let mut tx = store.begin("registry_put").await?;
    let e = db("registry_put");
    let stored = sqlx::query_scalar!(
        "SELECT doc FROM registry WHERE kind = ?1 AND id = ?2",
        item.kind,
        item.id
    )
    .fetch_optional(&mut *tx)
    .await
    .map_err(db("registry_put"))?;
    let before = stored
        .map(|text| json_value(&format!("registry {}/{}", item.kind, item.id), &text))
        .transpose()?;
    if before.as_ref() == Some(&item.doc) {
        // Unchanged: nothing to write, nothing to audit.
        tx.rollback().await.map_err(db("registry_put: rollback"))?;
        return Ok(before);
    }
    let doc = json_text(&item.doc);
    let kind = format!("registry.{}", item.kind);
    let result: std::result::Result<(), sqlx::Error> = async {
        sqlx::query!(
            "INSERT INTO registry (kind, id, doc, updated_at, updated_by) VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT (kind, id) DO UPDATE SET
                 doc = excluded.doc, updated_at = excluded.updated_at,
                 updated_by = excluded.updated_by",
            item.kind,
            item.id,
            doc,
            item.updated_at,
            item.updated_by
        )
        .execute(&mut *tx)
        .await?;
        write_audit(
            &mut tx,
            item.updated_at,
            &item.updated_by,
            &kind,
            &item.id,
            before.as_ref().unwrap_or(&Value::Null),
            &item.doc,
        )
        .await
    }
    .await;
    result.map_err(e)?;
    tx.commit().await.map_err(db("registry_put: commit"))?;
    Ok(before)
}

pub(crate) async fn registry_delete(
    store: &SqliteStore,
    kind: &str,
    id: &str,
    actor: &str,
    at: Ms,
) -> Result<Option<Value>> {
    let mut tx = store.begin("registry_delete").await?;
    let deleted = sqlx::query_scalar!(
        "DELETE FROM registry WHERE kind = ?1 AND id = ?2 RETURNING doc",
        kind,
        id
    )
    .fetch_optional(&mut *tx)
    .await
    .map_err(db("registry_delete"))?;
    let Some(text) = deleted else {
        tx.rollback()
            .await
            .map_err(db("registry_delete: rollback"))?;
        return Ok(None);
    };
    let before = json_value(&format!("registry {kind}/{id}"), &text)?;
    write_audit(
        &mut tx,
        at,
        actor,
        &format!("registry.{kind}"),
        id,
        &before,
        &Value::Null,
    )
    .await
    .map_err(db("registry_delete: audit"))?;
    tx.commit().await.map_err(db("registry_delete: commit"))?;
    Ok(Some(before))
}

pub(crate) async fn inputs_put(store: &SqliteStore, r: &InputsRecord) -> Result<i64> {
    let mut tx = store.begin("inputs_put").await?;
    let previous = sqlx::query!(
        "SELECT version, doc FROM inputs WHERE entity = ?1 AND from_ms = ?2 AND to_ms = ?3
         ORDER BY version DESC LIMIT 1",
        r.entity,
        r.from,
        r.to
    )
    .fetch_optional(&mut *tx)
    .await
    .map_err(db("inputs_put"))?;
    let item = format!("{}@{}..{}", r.entity, r.from, r.to);
    let (version, before) = match previous {
        Some(p) => (
            p.version + 1,
            json_value(&format!("inputs {item}"), &p.doc)?,
        ),
        None => (1, Value::Null),
    };
    let doc = json_text(&r.doc);
    let result: std::result::Result<(), sqlx::Error> = async {
        sqlx::query!(
            "INSERT INTO inputs (entity, from_ms, to_ms, version, doc, at, actor, source)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            r.entity,
            r.from,
            r.to,
            version,
            doc,
            r.at,
            r.actor,
            r.source
        )
        .execute(&mut *tx)
        .await?;
        write_audit(&mut tx, r.at, &r.actor, "inputs", &item, &before, &r.doc).await
    }
    .await;
    result.map_err(db("inputs_put"))?;
    tx.commit().await.map_err(db("inputs_put: commit"))?;
    Ok(version)
}

pub(crate) async fn inputs_current(
    store: &SqliteStore,
    filter: &DeviceFilter,
    from: Ms,
    to: Ms,
) -> Result<Vec<InputsRecord>> {
    let (p, lo, hi) = bounds(filter);
    let rows = sqlx::query!(
        r#"SELECT i.entity AS "entity!", i.from_ms AS "from_ms!: i64", i.to_ms AS "to_ms!: i64",
                  i.version AS "version!: i64", i.doc AS "doc!", i.at AS "at!: i64",
                  i.actor AS "actor!", i.source AS "source!"
           FROM inputs AS i
           WHERE i.entity >= ?1 AND i.entity < ?3 AND (i.entity = ?1 OR i.entity >= ?2)
                 AND i.from_ms < ?5 AND i.to_ms > ?4
                 AND i.version = (SELECT MAX(j.version) FROM inputs AS j
                                  WHERE j.entity = i.entity AND j.from_ms = i.from_ms
                                        AND j.to_ms = i.to_ms)
           ORDER BY i.entity, i.from_ms, i.to_ms"#,
        p,
        lo,
        hi,
        from,
        to
    )
    .fetch_all(&store.read)
    .await
    .map_err(db("inputs_current"))?;
    rows.into_iter()
        .map(|r| {
            let doc = json_value(&format!("inputs {}", r.entity), &r.doc)?;
            Ok(InputsRecord {
                entity: r.entity,
                from: r.from_ms,
                to: r.to_ms,
                version: r.version,
                doc,
                at: r.at,
                actor: r.actor,
                source: r.source,
            })
        })
        .collect()
}

pub(crate) async fn inputs_history(store: &SqliteStore, entity: &str) -> Result<Vec<InputsRecord>> {
    let rows = sqlx::query!(
        "SELECT entity, from_ms, to_ms, version, doc, at, actor, source FROM inputs
         WHERE entity = ?1 ORDER BY at DESC, rowid DESC",
        entity
    )
    .fetch_all(&store.read)
    .await
    .map_err(db("inputs_history"))?;
    rows.into_iter()
        .map(|r| {
            let doc = json_value(&format!("inputs {}", r.entity), &r.doc)?;
            Ok(InputsRecord {
                entity: r.entity,
                from: r.from_ms,
                to: r.to_ms,
                version: r.version,
                doc,
                at: r.at,
                actor: r.actor,
                source: r.source,
            })
        })
        .collect()
}

pub(crate) async fn audit(store: &SqliteStore, f: &AuditFilter) -> Result<Vec<AuditEntry>> {
    let rows = sqlx::query!(
        "SELECT id, at, actor, kind, item, before_doc, after_doc FROM audit
         WHERE (?1 IS NULL OR substr(kind, 1, length(?1)) = ?1)
               AND (?2 IS NULL OR item = ?2)
               AND (?3 IS NULL OR at >= ?3)
         ORDER BY id DESC LIMIT ?4",
        f.kind_prefix,
        f.item,
        f.since,
        f.limit
    )
    .fetch_all(&store.read)
    .await
    .map_err(db("audit"))?;
    rows.into_iter()
        .map(|r| {
            let what = format!("audit {}", r.id);
            Ok(AuditEntry {
                id: r.id,
                at: r.at,
                actor: r.actor,
                kind: r.kind,
                item: r.item,
                before: json_value(&what, &r.before_doc)?,
                after: json_value(&what, &r.after_doc)?,
            })
        })
        .collect()
}

/// What the audit trail records of a token: never the token, only its hash.
fn token_doc(name: &str, role: &str, hash: &str, revoked_at: Option<Ms>) -> Value {
    json!({"name": name, "role": role, "hash": hash, "revoked_at": revoked_at})
}

pub(crate) async fn token_add(store: &SqliteStore, t: &TokenRow) -> Result<()> {
    let mut tx = store.begin("token_add").await?;
    let after = token_doc(&t.name, &t.role, &t.hash, t.revoked_at);
    let result: std::result::Result<(), sqlx::Error> = async {
        sqlx::query!(
            "INSERT INTO tokens (name, role, hash, created_at, created_by, revoked_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            t.name,
            t.role,
            t.hash,
            t.created_at,
            t.created_by,
            t.revoked_at
        )
        .execute(&mut *tx)
        .await?;
        write_audit(
            &mut tx,
            t.created_at,
            &t.created_by,
            "token",
            &t.name,
            &Value::Null,
            &after,
        )
        .await
    }
    .await;
    result.map_err(db("token_add"))?;
    tx.commit().await.map_err(db("token_add: commit"))
}

pub(crate) async fn token_by_hash(store: &SqliteStore, hash: &str) -> Result<Option<TokenRow>> {
    sqlx::query_as!(
        TokenRow,
        "SELECT name, role, hash, created_at, created_by, revoked_at FROM tokens WHERE hash = ?1",
        hash
    )
    .fetch_optional(&store.read)
    .await
    .map_err(db("token_by_hash"))
}

pub(crate) async fn tokens(store: &SqliteStore) -> Result<Vec<TokenRow>> {
    sqlx::query_as!(
        TokenRow,
        "SELECT name, role, hash, created_at, created_by, revoked_at FROM tokens ORDER BY name COLLATE BINARY"
    )
    .fetch_all(&store.read)
    .await
    .map_err(db("tokens"))
}

pub(crate) async fn token_revoke(
    store: &SqliteStore,
    name: &str,
    actor: &str,
    at: Ms,
) -> Result<bool> {
    let mut tx = store.begin("token_revoke").await?;
    let revoked = sqlx::query!(
        "UPDATE tokens SET revoked_at = ?2 WHERE name = ?1 AND revoked_at IS NULL
         RETURNING role, hash",
        name,
        at
    )
    .fetch_optional(&mut *tx)
    .await
    .map_err(db("token_revoke"))?;
    let Some(r) = revoked else {
        tx.rollback().await.map_err(db("token_revoke: rollback"))?;
        return Ok(false);
    };
    let before = token_doc(name, &r.role, &r.hash, None);
    let after = token_doc(name, &r.role, &r.hash, Some(at));
    write_audit(&mut tx, at, actor, "token", name, &before, &after)
        .await
        .map_err(db("token_revoke: audit"))?;
    tx.commit().await.map_err(db("token_revoke: commit"))?;
    Ok(true)
}
