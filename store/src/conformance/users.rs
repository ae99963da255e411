//! Conformance of dashboard users and sessions: [`Store::user_add`], [`Store::user_get`],
//! [`Store::users`], [`Store::user_update`] (audited in the same transaction, never with the
//! password hash; a new password or disabling deletes the user's sessions) and the session
//! methods. Runs after the other sections and only adds `user` audit entries.

use super::{HOUR, MIN, T0, check, ok, same};
use crate::{AuditFilter, SessionRow, Store, UserRow, UserUpdate};
use serde_json::json;

fn user(name: &str, role: &str, at: i64) -> UserRow {
    UserRow {
        name: name.to_owned(),
        role: role.to_owned(),
        password_hash: format!("$argon2id$v=19$m=19456,t=2,p=1$c2FsdA${name}"),
        created_at: at,
        created_by: "cli:ops".to_owned(),
        disabled_at: None,
        password_changed_at: at,
    }
}

fn session(n: u8, user: &str, at: i64) -> SessionRow {
    SessionRow {
        id_hash: format!("{n:02x}").repeat(32),
        user: user.to_owned(),
        created_at: at,
        last_seen: at,
        expires_at: at + 12 * HOUR,
        csrf_hash: format!("c{n:x}").repeat(32),
    }
}

async fn user_audit<S: Store>(store: &S) -> Vec<crate::AuditEntry> {
    ok(
        store
            .audit(&AuditFilter {
                kind_prefix: Some("user".to_owned()),
                item: None,
                since: None,
                limit: 100,
            })
            .await,
        "users: audit",
    )
}

pub(super) async fn run<S: Store>(store: &S) {
    let t = T0 + 20 * HOUR;
    let li = user("li.wei", "engineer", t);
    let wang = user("wang.fang", "viewer", t + MIN);
    check(ok(store.user_add(&li).await, "users: add"), "users: add");
    check(ok(store.user_add(&wang).await, "users: add"), "users: add");
    let mut dup = li.clone();
    dup.role = "admin".to_owned();
    check(
        !ok(store.user_add(&dup).await, "users: add twice"),
        "users: adding an existing name returns false",
    );
    same(
        ok(store.user_get("li.wei").await, "users: get"),
        Some(li.clone()),
        "users: get returns the stored row (the second add changed nothing)",
    );
    same(
        ok(store.user_get("LI.WEI").await, "users: get"),
        None,
        "users: names are exact",
    );
    same(
        ok(store.users().await, "users: list"),
        vec![li.clone(), wang.clone()],
        "users: listed by name",
    );
    let log = user_audit(store).await;
    same(
        log.len(),
        2,
        "users: each add is audited, the refused one not",
    );
    same(
        (
            log[1].actor.as_str(),
            log[1].item.as_str(),
            log[1].before.clone(),
            log[1].after.clone(),
        ),
        (
            "cli:ops",
            "li.wei",
            serde_json::Value::Null,
            json!({"name": "li.wei", "role": "engineer", "created_at": t,
                   "disabled_at": null, "password_changed_at": t}),
        ),
        "users: the audit entry of an add has no password hash",
    );

    // Sessions.
    for (n, u) in [(1, "li.wei"), (2, "li.wei"), (3, "wang.fang")] {
        ok(
            store.session_add(&session(n, u, t + HOUR)).await,
            "sessions: add",
        );
    }
    let s1 = session(1, "li.wei", t + HOUR);
    same(
        ok(store.session_get(&s1.id_hash).await, "sessions: get"),
        Some((s1.clone(), li.clone())),
        "sessions: get returns the session with its user",
    );
    same(
        ok(store.session_get(&"ee".repeat(32)).await, "sessions: get"),
        None,
        "sessions: an unknown hash finds nothing",
    );
    ok(
        store.session_touch(&s1.id_hash, t + 2 * HOUR).await,
        "sessions: touch",
    );
    ok(
        store.session_touch(&s1.id_hash, t + HOUR + MIN).await,
        "sessions: touch",
    );
    same(
        ok(store.session_get(&s1.id_hash).await, "sessions: get").map(|(s, _)| s.last_seen),
        Some(t + 2 * HOUR),
        "sessions: touch moves last_seen forward, never back",
    );

    // A role change keeps sessions; a new password ends them, audited without the hash.
    let changed = ok(
        store
            .user_update(&UserUpdate {
                name: "li.wei".to_owned(),
                role: Some("auditor".to_owned()),
                password_hash: None,
                disabled: None,
                actor: "user:boss".to_owned(),
                at: t + 3 * HOUR,
            })
            .await,
        "users: update",
    );
    same(
        changed.map(|u| u.role),
        Some("auditor".to_owned()),
        "users: role changed",
    );
    check(
        ok(store.session_get(&s1.id_hash).await, "sessions: get").is_some(),
        "sessions: a role change keeps the sessions",
    );
    let unchanged = ok(
        store
            .user_update(&UserUpdate {
                name: "li.wei".to_owned(),
                role: Some("auditor".to_owned()),
                password_hash: None,
                disabled: Some(false),
                actor: "user:boss".to_owned(),
                at: t + 3 * HOUR,
            })
            .await,
        "users: update",
    );
    check(
        unchanged.is_some(),
        "users: an unchanged update finds the user",
    );
    same(
        user_audit(store).await.len(),
        3,
        "users: an update that changes nothing writes no audit entry",
    );
    let after = ok(
        store
            .user_update(&UserUpdate {
                name: "li.wei".to_owned(),
                role: None,
                password_hash: Some("$argon2id$new".to_owned()),
                disabled: None,
                actor: "token:admin".to_owned(),
                at: t + 4 * HOUR,
            })
            .await,
        "users: update",
    )
    .unwrap_or_else(|| panic!("conformance: users: update finds the user"));
    same(
        (after.password_hash.as_str(), after.password_changed_at),
        ("$argon2id$new", t + 4 * HOUR),
        "users: a new password is stored with its time",
    );
    for n in [1, 2] {
        same(
            ok(
                store.session_get(&session(n, "li.wei", 0).id_hash).await,
                "sessions: get",
            ),
            None,
            "sessions: a new password ends the user's sessions",
        );
    }
    check(
        ok(
            store.session_get(&session(3, "wang.fang", 0).id_hash).await,
            "sessions: get",
        )
        .is_some(),
        "sessions: other users keep theirs",
    );
    let log = user_audit(store).await;
    same(log.len(), 4, "users: each change is audited");
    same(
        (log[0].actor.as_str(), log[0].after.get("password_hash")),
        ("token:admin", None),
        "users: a password change is audited without the hash",
    );

    // Disabling ends sessions; enabling keeps `disabled_at` out; unknown users are None.
    let s4 = session(4, "wang.fang", t + 5 * HOUR);
    ok(store.session_add(&s4).await, "sessions: add");
    let disabled = ok(
        store
            .user_update(&UserUpdate {
                name: "wang.fang".to_owned(),
                role: None,
                password_hash: None,
                disabled: Some(true),
                actor: "token:admin".to_owned(),
                at: t + 6 * HOUR,
            })
            .await,
        "users: disable",
    );
    same(
        disabled.and_then(|u| u.disabled_at),
        Some(t + 6 * HOUR),
        "users: disabled_at set",
    );
    same(
        ok(store.session_get(&s4.id_hash).await, "sessions: get"),
        None,
        "sessions: disabling ends the user's sessions",
    );
    let enabled = ok(
        store
            .user_update(&UserUpdate {
                name: "wang.fang".to_owned(),
                role: None,
                password_hash: None,
                disabled: Some(false),
                actor: "token:admin".to_owned(),
                at: t + 7 * HOUR,
            })
            .await,
        "users: enable",
    );
    same(
        enabled.map(|u| u.disabled_at),
        Some(None),
        "users: enabling clears disabled_at",
    );
    same(
        ok(
            store
                .user_update(&UserUpdate {
                    name: "nobody".to_owned(),
                    role: Some("admin".to_owned()),
                    password_hash: None,
                    disabled: None,
                    actor: "token:admin".to_owned(),
                    at: t,
                })
                .await,
            "users: update unknown",
        ),
        None,
        "users: updating an unknown user returns None",
    );
    same(user_audit(store).await.len(), 6, "users: audited");

    // Delete and purge.
    let s5 = session(5, "wang.fang", t + 8 * HOUR);
    let s6 = session(6, "wang.fang", t + 8 * HOUR);
    let mut s7 = session(7, "wang.fang", t);
    s7.last_seen = t + 9 * HOUR;
    for s in [&s5, &s6, &s7] {
        ok(store.session_add(s).await, "sessions: add");
    }
    check(
        ok(store.session_delete(&s5.id_hash).await, "sessions: delete"),
        "sessions: delete returns true",
    );
    check(
        !ok(store.session_delete(&s5.id_hash).await, "sessions: delete"),
        "sessions: deleting again returns false",
    );
    // At t + 12 h: s7 (created at t) has expired; s6 was last seen at t + 8 h, idle since.
    let purged = ok(
        store
            .sessions_purge(t + 12 * HOUR, t + 8 * HOUR + MIN)
            .await,
        "sessions: purge",
    );
    same(
        purged,
        2,
        "sessions: purge deletes the expired and the idle ones",
    );
    check(
        ok(store.session_get(&s6.id_hash).await, "sessions: get").is_none()
            && ok(store.session_get(&s7.id_hash).await, "sessions: get").is_none(),
        "sessions: purged",
    );
}
