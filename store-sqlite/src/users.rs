//! Dashboard users and sessions.
//!
//! Invariants:
//! - Every user change writes its audit row (`user`: name, role, dates; never the password
//!   hash) in the same write transaction; a change that changes nothing writes nothing.
//! - A new password or disabling deletes the user's sessions in that same transaction, so no
//!   request can be served on an old session after the change commits.
//! - Sessions are keyed by the SHA-256 of their id; the store never sees an id or a CSRF token.

use serde_json::{Value, json};
use shopfloor_store::{Ms, Result, SessionRow, UserRow, UserUpdate};

use crate::admin::write_audit;
use crate::{SqliteStore, db};

/// What the audit trail records of a user (never the password hash).
fn user_doc(u: &UserRow) -> Value {
    json!({
        "name": u.name,
        "role": u.role,
        "created_at": u.created_at,
        "disabled_at": u.disabled_at,
        "password_changed_at": u.password_changed_at,
    })
}

pub(crate) async fn user_add(store: &SqliteStore, u: &UserRow) -> Result<bool> {
    let mut tx = store.begin("user_add").await?;
    let inserted = sqlx::query!(
        "INSERT INTO users (name, role, password_hash, created_at, created_by, disabled_at,
                            password_changed_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
         ON CONFLICT (name) DO NOTHING",
        u.name,
        u.role,
        u.password_hash,
        u.created_at,
        u.created_by,
        u.disabled_at,
        u.password_changed_at
    )
    .execute(&mut *tx)
    .await
    .map_err(db("user_add"))?
    .rows_affected();
    if inserted == 0 {
        tx.rollback().await.map_err(db("user_add: rollback"))?;
        return Ok(false);
    }
    write_audit(
        &mut tx,
        u.created_at,
        &u.created_by,
        "user",
        &u.name,
        &Value::Null,
        &user_doc(u),
    )
    .await
    .map_err(db("user_add: audit"))?;
    tx.commit().await.map_err(db("user_add: commit"))?;
    Ok(true)
}

pub(crate) async fn user_get(store: &SqliteStore, name: &str) -> Result<Option<UserRow>> {
    sqlx::query_as!(
        UserRow,
        "SELECT name, role, password_hash, created_at, created_by, disabled_at,
                password_changed_at
         FROM users WHERE name = ?1",
        name
    )
    .fetch_optional(&store.read)
    .await
    .map_err(db("user_get"))
}

pub(crate) async fn users(store: &SqliteStore) -> Result<Vec<UserRow>> {
    sqlx::query_as!(
        UserRow,
        "SELECT name, role, password_hash, created_at, created_by, disabled_at,
                password_changed_at
         FROM users ORDER BY name COLLATE BINARY"
    )
    .fetch_all(&store.read)
    .await
    .map_err(db("users"))
}

pub(crate) async fn user_update(store: &SqliteStore, u: &UserUpdate) -> Result<Option<UserRow>> {
    let mut tx = store.begin("user_update").await?;
    let current = sqlx::query_as!(
        UserRow,
        "SELECT name, role, password_hash, created_at, created_by, disabled_at,
                password_changed_at
         FROM users WHERE name = ?1",
        u.name
    )
    .fetch_optional(&mut *tx)
    .await
    .map_err(db("user_update"))?;
    let Some(before) = current else {
        tx.rollback().await.map_err(db("user_update: rollback"))?;
        return Ok(None);
    };
    let after = updated(&before, u);
    if after == before {
        tx.rollback().await.map_err(db("user_update: rollback"))?;
        return Ok(Some(before));
    }
    let end_sessions = u.password_hash.is_some() || after.disabled_at.is_some();
    let result: std::result::Result<(), sqlx::Error> = async {
        sqlx::query!(
            "UPDATE users SET role = ?2, password_hash = ?3, disabled_at = ?4,
                              password_changed_at = ?5
             WHERE name = ?1",
            after.name,
            after.role,
            after.password_hash,
            after.disabled_at,
            after.password_changed_at
        )
        .execute(&mut *tx)
        .await?;
        if end_sessions {
            sqlx::query!("DELETE FROM sessions WHERE user_name = ?1", after.name)
                .execute(&mut *tx)
                .await?;
        }
        write_audit(
            &mut tx,
            u.at,
            &u.actor,
            "user",
            &u.name,
            &user_doc(&before),
            &user_doc(&after),
        )
        .await
    }
    .await;
    result.map_err(db("user_update"))?;
    tx.commit().await.map_err(db("user_update: commit"))?;
    Ok(Some(after))
}

/// The user after `u` (the same semantics on both backends).
fn updated(before: &UserRow, u: &UserUpdate) -> UserRow {
    let mut after = before.clone();
    if let Some(role) = &u.role {
        after.role = role.clone();
    }
    if let Some(hash) = &u.password_hash {
        after.password_hash = hash.clone();
        after.password_changed_at = u.at;
    }
    match u.disabled {
        Some(true) => after.disabled_at = before.disabled_at.or(Some(u.at)),
        Some(false) => after.disabled_at = None,
        None => {}
    }
    after
}

pub(crate) async fn session_add(store: &SqliteStore, s: &SessionRow) -> Result<()> {
    let mut tx = store.begin("session_add").await?;
    sqlx::query!(
        "INSERT INTO sessions (id_hash, user_name, created_at, last_seen, expires_at, csrf_hash)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        s.id_hash,
        s.user,
        s.created_at,
        s.last_seen,
        s.expires_at,
        s.csrf_hash
    )
    .execute(&mut *tx)
    .await
    .map_err(db("session_add"))?;
    tx.commit().await.map_err(db("session_add: commit"))
}

pub(crate) async fn session_get(
    store: &SqliteStore,
    id_hash: &str,
) -> Result<Option<(SessionRow, UserRow)>> {
    let row = sqlx::query!(
        r#"SELECT s.id_hash AS "id_hash!", s.user_name AS "user_name!",
                  s.created_at AS "s_created_at!: i64", s.last_seen AS "last_seen!: i64",
                  s.expires_at AS "expires_at!: i64", s.csrf_hash AS "csrf_hash!",
                  u.role AS "role!", u.password_hash AS "password_hash!",
                  u.created_at AS "u_created_at!: i64", u.created_by AS "created_by!",
                  u.disabled_at AS "disabled_at?: i64",
                  u.password_changed_at AS "password_changed_at!: i64"
           FROM sessions AS s JOIN users AS u ON u.name = s.user_name
           WHERE s.id_hash = ?1"#,
        id_hash
    )
    .fetch_optional(&store.read)
    .await
    .map_err(db("session_get"))?;
    Ok(row.map(|r| {
        (
            SessionRow {
                id_hash: r.id_hash,
                user: r.user_name.clone(),
                created_at: r.s_created_at,
                last_seen: r.last_seen,
                expires_at: r.expires_at,
                csrf_hash: r.csrf_hash,
            },
            UserRow {
                name: r.user_name,
                role: r.role,
                password_hash: r.password_hash,
                created_at: r.u_created_at,
                created_by: r.created_by,
                disabled_at: r.disabled_at,
                password_changed_at: r.password_changed_at,
            },
        )
    }))
}

pub(crate) async fn session_touch(store: &SqliteStore, id_hash: &str, at: Ms) -> Result<()> {
    let mut tx = store.begin("session_touch").await?;
    sqlx::query!(
        "UPDATE sessions SET last_seen = ?2 WHERE id_hash = ?1 AND last_seen < ?2",
        id_hash,
        at
    )
    .execute(&mut *tx)
    .await
    .map_err(db("session_touch"))?;
    tx.commit().await.map_err(db("session_touch: commit"))
}

pub(crate) async fn session_delete(store: &SqliteStore, id_hash: &str) -> Result<bool> {
    let mut tx = store.begin("session_delete").await?;
    let n = sqlx::query!("DELETE FROM sessions WHERE id_hash = ?1", id_hash)
        .execute(&mut *tx)
        .await
        .map_err(db("session_delete"))?
        .rows_affected();
    tx.commit().await.map_err(db("session_delete: commit"))?;
    Ok(n > 0)
}

pub(crate) async fn sessions_purge(store: &SqliteStore, now: Ms, idle_before: Ms) -> Result<u64> {
    let mut tx = store.begin("sessions_purge").await?;
    let n = sqlx::query!(
        "DELETE FROM sessions WHERE expires_at <= ?1 OR last_seen < ?2",
        now,
        idle_before
    )
    .execute(&mut *tx)
    .await
    .map_err(db("sessions_purge"))?
    .rows_affected();
    tx.commit().await.map_err(db("sessions_purge: commit"))?;
    Ok(n)
}
