//! Dashboard users and sessions.
//!
//! Invariants:
//! - Every user change writes its audit row (`user`: name, role, dates; never the password
//!   hash) in the same transaction; a change that changes nothing writes nothing.
//! - [`user_update`] locks the user's row (`FOR UPDATE`), so the audited `before` is the row
//!   actually replaced also with concurrent writers on several replicas.
//! - A new password or disabling deletes the user's sessions in that same transaction.
//! - Sessions are keyed by the SHA-256 of their id; the store never sees an id or a CSRF token.

use shopfloor_store::{Ms, Result, SessionRow, UserRow, UserUpdate};
use sqlx::PgPool;

use crate::admin::audit_insert;
use crate::db;

/// What the audit trail records of a user (never the password hash).
fn user_doc(u: &UserRow) -> String {
    serde_json::json!({
        "name": u.name,
        "role": u.role,
        "created_at": u.created_at,
        "disabled_at": u.disabled_at,
        "password_changed_at": u.password_changed_at,
    })
    .to_string()
}

pub(crate) async fn user_add(pool: &PgPool, u: &UserRow) -> Result<bool> {
    let mut tx = pool.begin().await.map_err(db)?;
    let inserted = sqlx::query!(
        "INSERT INTO users (name, role, password_hash, created_at, created_by, disabled_at,
                            password_changed_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7)
         ON CONFLICT (name) DO NOTHING",
        u.name,
        u.role,
        u.password_hash,
        u.created_at,
        u.created_by,
        u.disabled_at,
        u.password_changed_at,
    )
    .execute(&mut *tx)
    .await
    .map_err(db)?
    .rows_affected();
    if inserted == 0 {
        tx.rollback().await.map_err(db)?;
        return Ok(false);
    }
    audit_insert(
        &mut tx,
        u.created_at,
        &u.created_by,
        "user",
        &u.name,
        "null",
        &user_doc(u),
    )
    .await
    .map_err(db)?;
    tx.commit().await.map_err(db)?;
    Ok(true)
}

pub(crate) async fn user_get(pool: &PgPool, name: &str) -> Result<Option<UserRow>> {
    sqlx::query_as!(
        UserRow,
        "SELECT name, role, password_hash, created_at, created_by, disabled_at,
                password_changed_at
         FROM users WHERE name = $1",
        name
    )
    .fetch_optional(pool)
    .await
    .map_err(db)
}

pub(crate) async fn users(pool: &PgPool) -> Result<Vec<UserRow>> {
    sqlx::query_as!(
        UserRow,
        "SELECT name, role, password_hash, created_at, created_by, disabled_at,
                password_changed_at
         FROM users ORDER BY name"
    )
    .fetch_all(pool)
    .await
    .map_err(db)
}

pub(crate) async fn user_update(pool: &PgPool, u: &UserUpdate) -> Result<Option<UserRow>> {
    let mut tx = pool.begin().await.map_err(db)?;
    let current = sqlx::query_as!(
        UserRow,
        "SELECT name, role, password_hash, created_at, created_by, disabled_at,
                password_changed_at
         FROM users WHERE name = $1 FOR UPDATE",
        u.name
    )
    .fetch_optional(&mut *tx)
    .await
    .map_err(db)?;
    let Some(before) = current else {
        tx.rollback().await.map_err(db)?;
        return Ok(None);
    };
    let after = updated(&before, u);
    if after == before {
        tx.rollback().await.map_err(db)?;
        return Ok(Some(before));
    }
    sqlx::query!(
        "UPDATE users SET role = $2, password_hash = $3, disabled_at = $4,
                          password_changed_at = $5
         WHERE name = $1",
        after.name,
        after.role,
        after.password_hash,
        after.disabled_at,
        after.password_changed_at,
    )
    .execute(&mut *tx)
    .await
    .map_err(db)?;
    if u.password_hash.is_some() || after.disabled_at.is_some() {
        sqlx::query!("DELETE FROM sessions WHERE user_name = $1", after.name)
            .execute(&mut *tx)
            .await
            .map_err(db)?;
    }
    audit_insert(
        &mut tx,
        u.at,
        &u.actor,
        "user",
        &u.name,
        &user_doc(&before),
        &user_doc(&after),
    )
    .await
    .map_err(db)?;
    tx.commit().await.map_err(db)?;
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

pub(crate) async fn session_add(pool: &PgPool, s: &SessionRow) -> Result<()> {
    sqlx::query!(
        "INSERT INTO sessions (id_hash, user_name, created_at, last_seen, expires_at, csrf_hash)
         VALUES ($1, $2, $3, $4, $5, $6)",
        s.id_hash,
        s.user,
        s.created_at,
        s.last_seen,
        s.expires_at,
        s.csrf_hash,
    )
    .execute(pool)
    .await
    .map_err(db)?;
    Ok(())
}

pub(crate) async fn session_get(
    pool: &PgPool,
    id_hash: &str,
) -> Result<Option<(SessionRow, UserRow)>> {
    let row = sqlx::query!(
        r#"SELECT s.id_hash, s.user_name, s.created_at AS s_created_at, s.last_seen,
                  s.expires_at, s.csrf_hash, u.role, u.password_hash,
                  u.created_at AS u_created_at, u.created_by, u.disabled_at,
                  u.password_changed_at
           FROM sessions AS s JOIN users AS u ON u.name = s.user_name
           WHERE s.id_hash = $1"#,
        id_hash
    )
    .fetch_optional(pool)
    .await
    .map_err(db)?;
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

pub(crate) async fn session_touch(pool: &PgPool, id_hash: &str, at: Ms) -> Result<()> {
    sqlx::query!(
        "UPDATE sessions SET last_seen = $2 WHERE id_hash = $1 AND last_seen < $2",
        id_hash,
        at
    )
    .execute(pool)
    .await
    .map_err(db)?;
    Ok(())
}

pub(crate) async fn session_delete(pool: &PgPool, id_hash: &str) -> Result<bool> {
    let n = sqlx::query!("DELETE FROM sessions WHERE id_hash = $1", id_hash)
        .execute(pool)
        .await
        .map_err(db)?
        .rows_affected();
    Ok(n > 0)
}

pub(crate) async fn sessions_purge(pool: &PgPool, now: Ms, idle_before: Ms) -> Result<u64> {
    let n = sqlx::query!(
        "DELETE FROM sessions WHERE expires_at <= $1 OR last_seen < $2",
        now,
        idle_before
    )
    .execute(pool)
    .await
    .map_err(db)?
    .rows_affected();
    Ok(n)
}
