//! Dashboard users, password sign-in, sessions, CSRF and the login rate limiter over a real
//! store on a real socket, plus hostile input on both stores:
//!
//! - sign-in: the cookie's attributes, the CSRF token (login answer = `GET /session`), sign-out
//!   ends the session; a wrong password, an unknown user and a disabled user get the same
//!   answer; after 5 failures per address (seen through a trusted proxy's X-Forwarded-For) or
//!   per name: 429 with Retry-After until the window passes (an injected clock, no sleeping);
//!   a success clears the name;
//! - sessions end when idle, at their absolute end, when the user is disabled or its password
//!   changes (API and command line); the event stream ends with them;
//! - passwords are stored as argon2id PHC strings, never as text (the SQLite file is searched);
//!   users are managed through the API (policy errors name the field; audited with the actor)
//!   and the `user` command;
//! - SQL-looking, wildcard, backslash, NUL and very long strings in every kind of parameter
//!   answer 4xx JSON naming the field or an empty result, never 500, and every table keeps its
//!   rows, on SQLite and (with SHOPFLOOR_TEST_POSTGRES_URL) PostgreSQL.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use common::web::{self, Req, Resp};
use serde_json::{Value, json};
use shopfloor_gateway::api::{self, AppState};
use shopfloor_gateway::db::Db;
use shopfloor_gateway::ingest::Trust;
use shopfloor_gateway::metrics::Metrics;
use shopfloor_gateway::model::Role;
use shopfloor_gateway::registry::Registry;
use shopfloor_gateway::session::{self, Cidr, WebAuth};
use shopfloor_gateway::users::{self, Action};
use shopfloor_store::{AuditFilter, NewBatch, Store};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const T0: i64 = 1_790_000_000_000;
const MAX_BODY: usize = 64 * 1024;
const PW: &str = "correct horse battery";

const ENTITIES: &str = r#"
[[entity]]
id = "p1"
kind = "park"

[[entity]]
id = "p1/e1"
kind = "enterprise"

[[entity]]
id = "p1/e1/w1"
kind = "workshop"
"#;

struct Server {
    addr: SocketAddr,
    db: Db,
    web: Arc<WebAuth>,
    clock: Arc<AtomicI64>,
    metrics: Arc<Metrics>,
    admin: String,
    store: Option<common::TestStore>,
    dir: tempfile::TempDir,
}

impl Server {
    fn advance(&self, ms: i64) {
        self.clock.fetch_add(ms, Ordering::SeqCst);
    }

    fn now(&self) -> i64 {
        self.clock.load(Ordering::SeqCst)
    }

    async fn stop(mut self) {
        if let Some(s) = self.store.take() {
            s.cleanup().await;
        }
    }
}

/// A gateway API on `store` (SQLite in the test's directory when `None`), with an injected
/// clock; 127.0.0.1 is a trusted proxy when `proxy`.
async fn start(store: Option<common::TestStore>, proxy: bool) -> Server {
    let dir = tempfile::tempdir().unwrap();
    let url = match &store {
        Some(s) => s.url.clone(),
        None => format!("sqlite://{}", dir.path().join("gw.db").display()),
    };
    let db = Db::open(&url, Some(4)).await.unwrap();
    let reg_dir = dir.path().join("registry");
    std::fs::create_dir_all(&reg_dir).unwrap();
    std::fs::write(reg_dir.join("entities.toml"), ENTITIES).unwrap();
    let registry = Registry::load(db.clone(), Arc::new(Trust::new()))
        .await
        .unwrap();
    registry.sync_files(Some(&reg_dir), None, 0).await.unwrap();
    let clock = Arc::new(AtomicI64::new(T0));
    let c = clock.clone();
    let mut web = WebAuth::default().with_clock(Arc::new(move || c.load(Ordering::SeqCst)));
    if proxy {
        web.trusted_proxies = vec![Cidr::parse("127.0.0.1").unwrap()];
    }
    let web = Arc::new(web);
    let metrics = Arc::new(Metrics::new());
    let state = AppState {
        db: db.clone(),
        registry: Arc::new(registry),
        metrics: metrics.clone(),
        tz: jiff::tz::TimeZone::get("Asia/Shanghai").unwrap(),
        max_body_bytes: MAX_BODY,
        web: web.clone(),
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(
            listener,
            api::router(state).into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await
        .unwrap();
    });
    let admin = shopfloor_gateway::auth::create_token(&db, "admin", Role::Admin, "test")
        .await
        .unwrap();
    Server {
        addr,
        db,
        web,
        clock,
        metrics,
        admin,
        store,
        dir,
    }
}

/// Creates a user the way `shopfloor-gateway user add --password-stdin` does.
async fn add_user(s: &Server, name: &str, role: &str, password: &str) {
    users::run_action(
        &s.db,
        Action::Add {
            name: name.into(),
            role: role.into(),
            password_stdin: true,
        },
        Some(password.into()),
        "cli:test",
        s.now(),
    )
    .await
    .unwrap();
}

// ---------------------------------------------------------------------------------------------
// A small HTTP/1.1 client
// ---------------------------------------------------------------------------------------------

fn req(method: &str, path: impl Into<String>) -> Req {
    web::req(method, path, None)
}

fn login(name: &str, password: &str) -> Req {
    req("POST", "/api/v1/login").json(&json!({"name": name, "password": password}))
}

/// Signs in; returns (session id, CSRF token).
async fn sign_in(s: &Server, name: &str, password: &str) -> (String, String) {
    let r = login(name, password).send(s.addr).await;
    assert_eq!(r.status, 200, "{}", r.text());
    (
        r.session_cookie(),
        r.json()["csrf"].as_str().unwrap().to_owned(),
    )
}

fn metric(s: &Server, line: &str) -> bool {
    s.metrics.encode().lines().any(|l| l == line)
}

// ---------------------------------------------------------------------------------------------
// Sign-in, sessions, CSRF
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn sign_in_session_csrf_and_sign_out() {
    let s = start(None, false).await;
    add_user(&s, "li.wei", "engineer", PW).await;

    let r = login("Li.Wei", PW).send(s.addr).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let body = r.json();
    assert_eq!(body["user"], "li.wei");
    assert_eq!(body["role"], "engineer");
    let expires = jiff::Timestamp::from_millisecond(T0 + 12 * 3_600_000).unwrap();
    assert_eq!(
        body["expires"],
        expires.display_with_offset(jiff::tz::offset(8)).to_string()
    );
    let cookie = r.header("set-cookie").unwrap().to_owned();
    let id = r.session_cookie();
    assert_eq!(
        cookie,
        format!("sf_session={id}; Path=/; HttpOnly; SameSite=Strict; Max-Age=43200")
    );
    assert_eq!(r.header("cache-control"), Some("no-store"));
    let csrf = body["csrf"].as_str().unwrap().to_owned();
    assert_eq!(csrf, session::csrf_token(&id));
    assert!(metric(&s, r#"shopfloor_http_logins_total{outcome="ok"} 1"#));

    // The session endpoint answers the same CSRF token (a page reload has lost it).
    let r = req("GET", "/api/v1/session").cookie(&id).send(s.addr).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["name"], "li.wei");
    assert_eq!(r.json()["kind"], "user");
    assert_eq!(r.json()["csrf"], csrf.as_str());
    // A token's session answer has no CSRF token.
    let r = req("GET", "/api/v1/session")
        .token(&s.admin)
        .send(s.addr)
        .await;
    assert_eq!(r.json()["kind"], "token");
    assert!(r.json().get("csrf").is_none());

    // A write with the cookie needs the token; then it is audited as the user.
    let doc = json!({"entity": "p1/e1", "from": "2026-01-01T00:00:00+08:00",
                     "to": "2026-02-01T00:00:00+08:00", "employees_avg": 12.0});
    let r = req("POST", "/api/v1/inputs")
        .cookie(&id)
        .json(&doc)
        .send(s.addr)
        .await;
    assert_eq!(r.status, 403);
    assert!(r.error().starts_with("csrf: missing"), "{}", r.error());
    let r = req("POST", "/api/v1/inputs")
        .cookie(&id)
        .csrf(&csrf)
        .header("Origin", format!("http://{}", s.addr))
        .json(&doc)
        .send(s.addr)
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(r.json()["stored"][0]["actor"], "user:li.wei");
    // An Authorization header wins over the cookie: a bad token is 401 even with a session.
    let r = req("GET", "/api/v1/entities")
        .cookie(&id)
        .token("sfk_bad")
        .send(s.addr)
        .await;
    assert_eq!(r.status, 401);
    // …and a bearer request needs no CSRF token, even with a cookie beside it.
    let r = req("POST", "/api/v1/inputs")
        .cookie(&id)
        .token(&s.admin)
        .json(&doc)
        .send(s.addr)
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(r.json()["stored"][0]["actor"], "token:admin");

    // A login from another site is refused (login CSRF).
    let r = login("li.wei", PW)
        .header("Origin", "http://evil.example")
        .send(s.addr)
        .await;
    assert_eq!(r.status, 403);
    assert!(r.error().starts_with("csrf: origin"), "{}", r.error());

    // Signing in again from this browser ends its previous session.
    let r = login("li.wei", PW).cookie(&id).send(s.addr).await;
    assert_eq!(r.status, 200);
    let again = r.session_cookie();
    let again_csrf = r.json()["csrf"].as_str().unwrap().to_owned();
    assert_ne!(again, id);
    let r = req("GET", "/api/v1/session").cookie(&id).send(s.addr).await;
    assert_eq!(r.status, 401, "the replaced session ended");
    let (id, csrf) = (again, again_csrf);

    // Sign-out needs the CSRF token too, ends the session and removes the cookie.
    let r = req("POST", "/api/v1/logout").cookie(&id).send(s.addr).await;
    assert_eq!(r.status, 403);
    let r = req("POST", "/api/v1/logout")
        .cookie(&id)
        .csrf(&csrf)
        .send(s.addr)
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["ended"], true);
    assert!(
        r.header("set-cookie")
            .is_some_and(|c| c.starts_with("sf_session=;") && c.contains("Max-Age=0"))
    );
    let r = req("GET", "/api/v1/session").cookie(&id).send(s.addr).await;
    assert_eq!(r.status, 401);
    assert!(
        r.error()
            .starts_with("authorization: the session has ended")
    );
    // A token has no session to end.
    let r = req("POST", "/api/v1/logout")
        .token(&s.admin)
        .send(s.addr)
        .await;
    assert_eq!((r.status, r.json()["ended"].clone()), (200, json!(false)));

    // Only hashes are stored: neither the session id nor the CSRF token.
    assert!(s.db.session_get(&id).await.unwrap().is_none());
    s.stop().await;
}

#[tokio::test]
async fn secure_cookies_when_configured() {
    let mut web = WebAuth::new(&shopfloor_gateway::config::HttpSection {
        secure_cookies: true,
        session_max_s: 3600,
        ..Default::default()
    });
    assert!(web.cookie("X").ends_with("; Max-Age=3600; Secure"));
    web.secure_cookies = false;
    assert!(!web.cookie("X").contains("Secure"));
}

#[tokio::test]
async fn failed_logins_look_alike_and_are_rate_limited() {
    let s = start(None, true).await;
    add_user(&s, "alice", "viewer", PW).await;
    add_user(&s, "bob", "viewer", PW).await;
    add_user(&s, "carol", "viewer", PW).await;
    users::change_user(
        &s.db,
        "carol",
        users::Change {
            disabled: Some(true),
            ..Default::default()
        },
        "test",
        s.now(),
    )
    .await
    .unwrap();

    // A wrong password, an unknown user, a disabled user and a malformed name: one answer.
    let mut answers = Vec::new();
    for (i, (name, pw)) in [
        ("alice", "wrong password!"),
        ("nobody", PW),
        ("carol", PW),
        ("' OR 1=1 --", PW),
    ]
    .into_iter()
    .enumerate()
    {
        let r = login(name, pw)
            .via_ip(&format!("198.51.100.{i}"))
            .send(s.addr)
            .await;
        answers.push((
            r.status,
            r.header("content-type").map(str::to_owned),
            r.body,
        ));
    }
    assert!(answers.iter().all(|a| a == &answers[0]), "{answers:?}");
    assert_eq!(answers[0].0, 401);
    assert_eq!(
        String::from_utf8_lossy(&answers[0].2),
        json!({"error": session::LOGIN_FAILED_MESSAGE}).to_string()
    );

    // Per address: 5 failures from 203.0.113.7 (any names) and that address waits, even
    // with the right password; another address may still sign in.
    let ip = "203.0.113.7";
    for i in 0..5 {
        let r = login(&format!("guess{i}"), "nope nope nope")
            .via_ip(ip)
            .send(s.addr)
            .await;
        assert_eq!(r.status, 401, "attempt {i}");
    }
    let r = login("alice", PW).via_ip(ip).send(s.addr).await;
    assert_eq!(r.status, 429, "{}", r.text());
    assert_eq!(r.header("retry-after"), Some("900"));
    assert_eq!(
        r.error(),
        "login: too many failed attempts; try again in 900 s"
    );
    assert_eq!(
        login("alice", PW)
            .via_ip("203.0.113.8")
            .send(s.addr)
            .await
            .status,
        200
    );

    // Per name: 5 failures for bob from 5 addresses, and bob waits everywhere.
    for i in 0..5 {
        let r = login("bob", "nope nope nope")
            .via_ip(&format!("192.0.2.{i}"))
            .send(s.addr)
            .await;
        assert_eq!(r.status, 401, "attempt {i}");
    }
    s.advance(60_000);
    let r = login("BOB", PW).via_ip("192.0.2.99").send(s.addr).await;
    assert_eq!(r.status, 429);
    assert_eq!(r.header("retry-after"), Some("840"));
    // Once the window has passed, bob may sign in again.
    s.advance(14 * 60_000);
    assert_eq!(
        login("bob", PW)
            .via_ip("192.0.2.99")
            .send(s.addr)
            .await
            .status,
        200
    );
    assert_eq!(login("alice", PW).via_ip(ip).send(s.addr).await.status, 200);

    // A success clears the name's failures: 4, success, 4 more, and no 429.
    for round in 0..2 {
        for i in 0..4 {
            let r = login("alice", "nope nope nope")
                .via_ip(&format!("10.{round}.0.{i}"))
                .send(s.addr)
                .await;
            assert_eq!(r.status, 401);
        }
        let r = login("alice", PW).via_ip("10.9.9.9").send(s.addr).await;
        assert_eq!(r.status, 200, "round {round}: {}", r.text());
    }

    assert!(metric(
        &s,
        r#"shopfloor_http_logins_total{outcome="rate_limited"} 2"#
    ));
    assert!(metric(
        &s,
        r#"shopfloor_http_logins_total{outcome="failed"} 22"#
    ));
    assert!(metric(&s, r#"shopfloor_http_logins_total{outcome="ok"} 5"#));
    s.stop().await;
}

#[tokio::test]
async fn forwarded_addresses_count_only_from_trusted_proxies() {
    // Without trusted proxies every attempt counts for the socket's address (127.0.0.1).
    let s = start(None, false).await;
    add_user(&s, "alice", "viewer", PW).await;
    for i in 0..5 {
        let r = login(&format!("x{i}"), "nope nope nope")
            .via_ip(&format!("198.51.100.{i}"))
            .send(s.addr)
            .await;
        assert_eq!(r.status, 401);
    }
    let r = login("alice", PW)
        .via_ip("198.51.100.200")
        .send(s.addr)
        .await;
    assert_eq!(r.status, 429, "a spoofed X-Forwarded-For is not believed");
    s.stop().await;
}

#[tokio::test]
async fn sessions_end_when_idle_and_at_their_end() {
    let s = start(None, false).await;
    add_user(&s, "li.wei", "viewer", PW).await;
    let session_get = |id: &str| req("GET", "/api/v1/session").cookie(id).send(s.addr);

    // Idle: 30 minutes without a request.
    let (id, _) = sign_in(&s, "li.wei", PW).await;
    s.advance(29 * 60_000);
    assert_eq!(session_get(&id).await.status, 200);
    s.advance(29 * 60_000);
    assert_eq!(
        session_get(&id).await.status,
        200,
        "activity keeps it alive"
    );
    s.advance(30 * 60_000 + 1);
    let r = session_get(&id).await;
    assert_eq!(r.status, 401);
    assert!(
        r.header("set-cookie")
            .is_some_and(|c| c.contains("Max-Age=0"))
    );
    // …and it was deleted on the way.
    assert!(
        s.db.session_get(&session::sha256_hex(&id))
            .await
            .unwrap()
            .is_none()
    );

    // Absolute: 12 hours however active.
    let (id, _) = sign_in(&s, "li.wei", PW).await;
    for _ in 0..47 {
        s.advance(15 * 60_000);
        assert_eq!(session_get(&id).await.status, 200);
    }
    s.advance(15 * 60_000);
    assert_eq!(session_get(&id).await.status, 401, "ended after 12 h");

    // The housekeeping purge removes ended sessions nobody presents again.
    let (kept, _) = sign_in(&s, "li.wei", PW).await;
    let (_idle, _) = sign_in(&s, "li.wei", PW).await;
    s.advance(10 * 60_000);
    assert_eq!(session_get(&kept).await.status, 200);
    s.advance(25 * 60_000);
    let now = s.now();
    let purged = s.db.sessions_purge(now, now - s.web.idle_ms).await.unwrap();
    assert_eq!(purged, 1);
    assert_eq!(session_get(&kept).await.status, 200);
    s.stop().await;
}

#[tokio::test]
async fn disabling_a_user_or_a_new_password_ends_its_sessions() {
    let s = start(None, false).await;
    add_user(&s, "li.wei", "engineer", PW).await;
    add_user(&s, "boss", "admin", PW).await;
    let addr = s.addr;
    let alive = |id: &str| {
        let r = req("GET", "/api/v1/entities").cookie(id);
        async move { r.send(addr).await.status }
    };

    // Disabled through the API by an admin user: its sessions end, sign-in fails alike.
    let (a, _) = sign_in(&s, "li.wei", PW).await;
    let (b, _) = sign_in(&s, "li.wei", PW).await;
    let (boss, boss_csrf) = sign_in(&s, "boss", PW).await;
    // Its event stream is open and then ends with the session.
    let events = req("GET", "/api/v1/events").cookie(&a);
    assert_eq!(events.send(s.addr).await.status, 200);
    let r = req("PUT", "/api/v1/users/li.wei")
        .cookie(&boss)
        .csrf(&boss_csrf)
        .json(&json!({"disabled": true}))
        .send(s.addr)
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.json()["disabled_at"].is_string());
    assert_eq!(alive(&a).await, 401);
    assert_eq!(alive(&b).await, 401);
    assert_eq!(alive(&boss).await, 200, "other users keep theirs");
    let r = login("li.wei", PW).send(s.addr).await;
    assert_eq!(
        (r.status, r.error()),
        (401, session::LOGIN_FAILED_MESSAGE.to_owned())
    );
    // An admin cannot disable or demote itself through its own session.
    let r = req("PUT", "/api/v1/users/boss")
        .cookie(&boss)
        .csrf(&boss_csrf)
        .json(&json!({"disabled": true}))
        .send(s.addr)
        .await;
    assert_eq!(
        (r.status, r.error()),
        (
            400,
            "disabled: you cannot disable the user you are signed in as".to_owned()
        )
    );
    let r = req("PUT", "/api/v1/users/boss")
        .cookie(&boss)
        .csrf(&boss_csrf)
        .json(&json!({"role": "viewer"}))
        .send(s.addr)
        .await;
    assert_eq!(r.status, 400);
    assert!(r.error().starts_with("role: "));

    // Enabled again by the command line: sign-in works, old sessions stay ended.
    users::run_action(
        &s.db,
        Action::Enable {
            name: "li.wei".into(),
        },
        None,
        "cli:test",
        s.now(),
    )
    .await
    .unwrap();
    let (c, _) = sign_in(&s, "li.wei", PW).await;
    assert_eq!(alive(&a).await, 401);

    // A new password (API, token caller): sessions end, the old password no longer works.
    s.advance(1000);
    let new_pw = "a different long password";
    let r = req("PUT", "/api/v1/users/li.wei")
        .token(&s.admin)
        .json(&json!({"password": new_pw}))
        .send(s.addr)
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(alive(&c).await, 401);
    assert_eq!(login("li.wei", PW).send(s.addr).await.status, 401);
    let (d, _) = sign_in(&s, "li.wei", new_pw).await;
    // A new password from the command line (`user passwd --password-stdin`).
    s.advance(1000);
    users::run_action(
        &s.db,
        Action::Passwd {
            name: "li.wei".into(),
            password_stdin: true,
        },
        Some(PW.into()),
        "cli:test",
        s.now(),
    )
    .await
    .unwrap();
    assert_eq!(alive(&d).await, 401);
    sign_in(&s, "li.wei", PW).await;

    // A role change applies to live sessions at once (the role is read with the session).
    let (e, _) = sign_in(&s, "li.wei", PW).await;
    assert_eq!(
        req("GET", "/api/v1/agents")
            .cookie(&e)
            .send(s.addr)
            .await
            .status,
        200
    );
    let r = req("PUT", "/api/v1/users/li.wei")
        .token(&s.admin)
        .json(&json!({"role": "viewer"}))
        .send(s.addr)
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(
        req("GET", "/api/v1/agents")
            .cookie(&e)
            .send(s.addr)
            .await
            .status,
        403
    );

    // Every change is audited with its actor, never with a hash.
    let log =
        s.db.audit(&AuditFilter {
            kind_prefix: Some("user".into()),
            item: Some("li.wei".into()),
            since: None,
            limit: 100,
        })
        .await
        .unwrap();
    let actors: Vec<&str> = log.iter().rev().map(|e| e.actor.as_str()).collect();
    assert_eq!(
        actors,
        vec![
            "cli:test",
            "user:boss",
            "cli:test",
            "token:admin",
            "cli:test",
            "token:admin"
        ]
    );
    let text = serde_json::to_string(
        &log.iter()
            .map(|e| (&e.before, &e.after))
            .collect::<Vec<_>>(),
    )
    .unwrap();
    assert!(!text.contains("argon2"), "{text}");
    s.stop().await;
}

#[tokio::test]
async fn the_event_stream_ends_with_its_session() {
    let s = start(None, false).await;
    add_user(&s, "li.wei", "viewer", PW).await;
    let (id, csrf) = sign_in(&s, "li.wei", PW).await;
    // Open the stream, read its hello, then sign out: the server ends the stream at its next
    // poll (2 s).
    let mut st = tokio::net::TcpStream::connect(s.addr).await.unwrap();
    st.write_all(
        format!(
            "GET /api/v1/events HTTP/1.1\r\nHost: {}\r\nCookie: sf_session={id}\r\n\r\n",
            s.addr
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    let mut buf = vec![0u8; 4096];
    let n = st.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    let r = req("POST", "/api/v1/logout")
        .cookie(&id)
        .csrf(&csrf)
        .send(s.addr)
        .await;
    assert_eq!(r.status, 200);
    let ended = tokio::time::timeout(Duration::from_secs(60), async {
        loop {
            match st.read(&mut buf).await {
                Ok(0) | Err(_) => return true,
                Ok(n) => {
                    // The chunked stream's last chunk also means the end.
                    if buf[..n].windows(5).any(|w| w == b"0\r\n\r\n") {
                        return true;
                    }
                }
            }
        }
    })
    .await;
    assert_eq!(ended, Ok(true), "the stream ended");
    s.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Users
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn users_api_policy_and_storage() {
    let s = start(None, false).await;
    let post = |doc: Value| req("POST", "/api/v1/users").token(&s.admin).json(&doc);

    let r = post(json!({"name": "wang.fang", "role": "auditor", "password": PW}))
        .send(s.addr)
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(r.json()["created_by"], "token:admin");
    assert!(r.json().get("password").is_none());
    // Without a password one is generated and shown once.
    let r = post(json!({"name": "display-1", "role": "viewer"}))
        .send(s.addr)
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
    let generated = r.json()["password"].as_str().unwrap().to_owned();
    assert_eq!(generated.len(), 24);
    sign_in(&s, "display-1", &generated).await;

    for (doc, status, error) in [
        (
            json!({"name": "zhao", "role": "viewer", "password": "short"}),
            400,
            "password: must be at least 12 characters",
        ),
        (
            json!({"name": "operator.one", "role": "viewer", "password": "OPERATOR.ONE"}),
            400,
            "password: must not be the user name",
        ),
        (
            json!({"name": "operator.one2", "role": "viewer", "password": "Operator.One2"}),
            400,
            "password: must not be the user name",
        ),
        (
            json!({"name": "Zhao Lei", "role": "viewer", "password": PW}),
            400,
            "name: may contain a-z, 0-9, '.', '_' and '-' only",
        ),
        (
            json!({"name": "zhao", "role": "root", "password": PW}),
            400,
            "role: must be viewer, engineer, auditor or admin",
        ),
        (
            json!({"name": "wang.fang", "role": "viewer", "password": PW}),
            409,
            "name: a user named \"wang.fang\" exists",
        ),
        (
            json!({"name": "zhao", "role": "viewer", "password": PW, "admin": true}),
            400,
            "admin: unknown field",
        ),
    ] {
        let r = post(doc.clone()).send(s.addr).await;
        assert_eq!(r.status, status, "{doc}: {}", r.text());
        assert!(
            r.error().starts_with(error),
            "{doc}: {} (want {error})",
            r.error()
        );
    }
    for (path, doc, status, error) in [
        (
            "/api/v1/users/wang.fang",
            json!({}),
            400,
            "body: give at least one of",
        ),
        (
            "/api/v1/users/wang.fang",
            json!({"password": "wang.fang"}),
            400,
            "password: must be at least 12",
        ),
        (
            "/api/v1/users/nobody",
            json!({"disabled": true}),
            404,
            "name: no user named \"nobody\"",
        ),
        (
            "/api/v1/users/No%20Body",
            json!({"disabled": true}),
            400,
            "name: may contain",
        ),
        (
            "/api/v1/users/wang.fang",
            json!({"disabled": "yes"}),
            400,
            "disabled: invalid type",
        ),
    ] {
        let r = req("PUT", path)
            .token(&s.admin)
            .json(&doc)
            .send(s.addr)
            .await;
        assert_eq!(r.status, status, "{path} {doc}: {}", r.text());
        assert!(r.error().starts_with(error), "{path} {doc}: {}", r.error());
    }

    // The list shows no hash; the store holds an argon2id PHC string, never the password.
    let r = req("GET", "/api/v1/users")
        .token(&s.admin)
        .send(s.addr)
        .await;
    assert_eq!(r.status, 200);
    let list = r.json();
    let names: Vec<&str> = list["users"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, vec!["display-1", "wang.fang"]);
    assert!(!r.text().contains("argon2") && !r.text().contains(PW));
    let stored = s.db.user_get("wang.fang").await.unwrap().unwrap();
    assert!(
        stored
            .password_hash
            .starts_with("$argon2id$v=19$m=19456,t=2,p=1$")
    );
    // Search the SQLite file (and its WAL) for the password text.
    for f in ["gw.db", "gw.db-wal"] {
        let bytes = std::fs::read(s.dir.path().join(f)).unwrap_or_default();
        for secret in [PW, generated.as_str()] {
            assert!(
                !bytes.windows(secret.len()).any(|w| w == secret.as_bytes()),
                "{f} holds a password"
            );
        }
    }
    // Creation is audited (`user`), with the actor and without the hash.
    let log =
        s.db.audit(&AuditFilter {
            kind_prefix: Some("user".into()),
            item: None,
            since: None,
            limit: 10,
        })
        .await
        .unwrap();
    assert_eq!(log.len(), 2);
    assert!(
        log.iter()
            .all(|e| e.actor == "token:admin" && e.before.is_null())
    );
    assert_eq!(log[1].after["role"], "auditor");
    assert!(log[1].after.get("password_hash").is_none());
    s.stop().await;
}

#[tokio::test]
async fn user_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("gw.toml");
    std::fs::write(
        &config,
        format!(
            "[gateway]\nid = \"cli\"\ndata_dir = \"{}\"\n",
            dir.path().join("data").display()
        ),
    )
    .unwrap();
    let run = |args: &[&str], stdin: &str| {
        use std::io::Write as _;
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_shopfloor-gateway"))
            .arg("user")
            .args(args)
            .arg("--config")
            .arg(&config)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(stdin.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, out, err) = run(
        &[
            "add",
            "--name",
            "ops",
            "--role",
            "admin",
            "--password-stdin",
        ],
        &format!("{PW}\n"),
    );
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(out, "", "a password from stdin is not printed");
    let (code, out, err) = run(&["add", "--name", "wall", "--role", "viewer"], "");
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(out.trim().len(), 24, "the generated password, once: {out}");
    assert!(err.contains("shown only once"), "{err}");
    let (code, _, err) = run(
        &["add", "--name", "x", "--role", "viewer", "--password-stdin"],
        "x\n",
    );
    assert_eq!(code, Some(2));
    assert!(
        err.contains("password: must be at least 12 characters"),
        "{err}"
    );
    let (code, _, err) = run(
        &[
            "add",
            "--name",
            "ops",
            "--role",
            "viewer",
            "--password-stdin",
        ],
        &format!("{PW}\n"),
    );
    assert_eq!(code, Some(2));
    assert!(err.contains("name: a user named \"ops\" exists"), "{err}");
    let (code, _, err) = run(&["disable", "--name", "wall"], "");
    assert_eq!(code, Some(0), "{err}");
    let (code, out, _) = run(&["passwd", "--name", "ops"], "");
    assert_eq!(code, Some(0));
    assert_eq!(out.trim().len(), 24);
    let (code, _, err) = run(&["disable", "--name", "ghost"], "");
    assert_eq!(code, Some(2));
    assert!(err.contains("name: no user named \"ghost\""), "{err}");
    let (code, out, _) = run(&["list"], "");
    assert_eq!(code, Some(0));
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 3, "{out}");
    assert!(lines[1].starts_with("ops\tadmin\tactive\t"), "{out}");
    assert!(
        lines[2].starts_with("wall\tviewer\tdisabled since "),
        "{out}"
    );
    assert!(!out.contains("argon2"));
}

// ---------------------------------------------------------------------------------------------
// Hostile input on both stores
// ---------------------------------------------------------------------------------------------

/// Rows per table, read with plain SQL beside the gateway.
async fn table_rows(s: &Server) -> Vec<(String, i64)> {
    const TABLES: [&str; 8] = [
        "batches",
        "registry",
        "audit",
        "inputs",
        "tokens",
        "users",
        "sessions",
        "quarantine",
    ];
    let mut out = Vec::new();
    match &s.db {
        Db::Sqlite(_) => {
            let url = format!("sqlite://{}?mode=ro", s.dir.path().join("gw.db").display());
            let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
            for t in TABLES {
                let n: i64 =
                    sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT COUNT(*) FROM {t}")))
                        .fetch_one(&pool)
                        .await
                        .unwrap();
                out.push((t.to_owned(), n));
            }
            pool.close().await;
        }
        Db::Postgres(pg) => {
            for t in TABLES {
                let n: i64 =
                    sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT COUNT(*) FROM {t}")))
                        .fetch_one(pg.pool())
                        .await
                        .unwrap();
                out.push((t.to_owned(), n));
            }
        }
    }
    out
}

/// A stored batch row, so `batches` is not empty.
fn batch() -> NewBatch {
    NewBatch {
        agent: "w1-agent".into(),
        seq: 1,
        body_hash: "ab".repeat(32),
        prev: "0".repeat(64),
        sealed: T0,
        from: T0 - 60_000,
        to: T0,
        received: T0,
        payload: b"{}".to_vec(),
        samples: Vec::new(),
        states: Vec::new(),
        readings: Vec::new(),
        links: Vec::new(),
        dirty: Vec::new(),
    }
}

fn enc(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

async fn hostile_input(s: Server) {
    add_user(&s, "li.wei", "admin", PW).await;
    let (cookie, csrf) = sign_in(&s, "li.wei", PW).await;
    s.db.ingest(&[batch()]).await.unwrap();
    let r = req("POST", "/api/v1/inputs")
        .token(&s.admin)
        .json(&json!({"entity": "p1/e1", "from": "2026-01-01T00:00:00Z",
                      "to": "2026-02-01T00:00:00Z", "employees_avg": 1}))
        .send(s.addr)
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
    let before = table_rows(&s).await;
    assert!(
        before.iter().all(|(t, n)| *n > 0 || t == "quarantine"),
        "{before:?}"
    );

    let long = "x".repeat(8000);
    let strings = [
        "' OR 1=1 --",
        "'; DROP TABLE batches; --",
        "\"; DELETE FROM users; --",
        "%",
        "_",
        "p1%",
        "p1/_1",
        "\\",
        "p1\\'",
        "p1\u{0}",
        "\u{0}",
        long.as_str(),
    ];
    let admin = s.admin.clone();
    for raw in strings {
        let v = enc(raw);
        let shown = raw.chars().take(30).collect::<String>();
        let gets = [
            (
                format!("/api/v1/indicators?entity={v}&from=2026-01-01&to=2026-01-02"),
                "entity",
            ),
            (
                format!("/api/v1/evidence?entity={v}&from=2026-01-01&to=2026-01-02"),
                "entity",
            ),
            (
                format!("/api/v1/overview?entity=p1&from={v}&to=2026-01-02"),
                "from",
            ),
            (
                format!("/api/v1/timeline?entity=p1/e1&from=2026-01-01&to={v}"),
                "to",
            ),
            (format!("/api/v1/live?entity={v}"), "entity"),
            (format!("/api/v1/inputs?entity={v}"), "entity"),
            (
                format!(
                    "/api/v1/indicators/{v}/series?entity=p1&from=2026-01-01&to=2026-01-02&step=day"
                ),
                "id",
            ),
            (
                format!("/api/v1/assessments/{v}?entity=p1/e1&from=2026-01-01&to=2026-01-02"),
                "kind",
            ),
            (format!("/api/v1/registry/{v}"), "kind"),
            (format!("/api/v1/registry/entity/{v}"), "id"),
            (format!("/api/v1/registry/agent/{v}"), "id"),
            (format!("/api/v1/audit?kind={v}"), "kind"),
            (format!("/api/v1/audit?item={v}"), "item"),
            (format!("/api/v1/audit?since={v}"), "since"),
            (format!("/api/v1/quarantine?before={v}"), "before"),
            (format!("/api/v1/entities?view={v}"), "view"),
            (
                format!("/api/v1/reports?entity=p1/e1&from=2026-01-01&to=2026-01-02&format={v}"),
                "format",
            ),
        ];
        for (path, field) in &gets {
            let r = req("GET", path.clone()).token(&admin).send(s.addr).await;
            check_answer(&r, field, &format!("GET {path} ({shown})"));
        }
        // `_` is a fine name for a token, a user or a park: no creating writes with it.
        let creates = raw != "_";
        let writes = [
            req("DELETE", format!("/api/v1/tokens/{v}")).token(&admin),
            req("DELETE", format!("/api/v1/registry/entity/{v}")).token(&admin),
            req("DELETE", format!("/api/v1/registry/product/{v}")).token(&admin),
            req("PUT", format!("/api/v1/registry/entity/{v}"))
                .token(&admin)
                .json(&json!({"id": raw, "kind": "park"})),
            req("POST", "/api/v1/tokens")
                .token(&admin)
                .json(&json!({"name": raw, "role": "viewer"})),
            req("POST", "/api/v1/users")
                .token(&admin)
                .json(&json!({"name": raw, "role": "viewer", "password": PW})),
            req("PUT", format!("/api/v1/users/{v}"))
                .token(&admin)
                .json(&json!({"disabled": true})),
            req("POST", "/api/v1/inputs")
                .cookie(&cookie)
                .csrf(&csrf)
                .json(&json!({"entity": raw, "from": "2026-01-01T00:00:00Z",
                              "to": "2026-02-01T00:00:00Z", "employees_avg": 1})),
            req("POST", format!("/api/v1/inputs/import?format=csv&name={v}"))
                .token(&admin)
                .header("Content-Type", "text/csv"),
            // Logins with hostile names (and passwords): the one failed answer.
            login(raw, raw).via_ip("192.0.2.1"),
            login("li.wei", raw),
        ];
        for (i, w) in writes.into_iter().enumerate() {
            if !creates && (3..=5).contains(&i) {
                continue;
            }
            let what = format!(
                "{} {} ({shown})",
                w.method,
                w.path.chars().take(80).collect::<String>()
            );
            let r = w.send(s.addr).await;
            assert!(
                (400..500).contains(&r.status),
                "{what}: {} {}",
                r.status,
                r.text()
            );
            let e = r.error();
            assert!(e.contains(':') && !e.starts_with("storage"), "{what}: {e}");
        }
        // The limiter must not lock the test's own sign-ins out: clear by waiting.
        s.advance(16 * 60_000);
    }
    // Every table still holds what it held (sessions: the one of li.wei; users; audit: none
    // of the refused writes wrote an entry).
    let after = table_rows(&s).await;
    assert_eq!(after, before);
    // And everything still works.
    let r = req("GET", "/api/v1/session")
        .cookie(&cookie)
        .send(s.addr)
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let r = req("GET", "/api/v1/entities")
        .token(&admin)
        .send(s.addr)
        .await;
    assert_eq!(r.json()["entities"].as_array().unwrap().len(), 3);
    s.stop().await;
}

/// A hostile value: a 4xx JSON error naming a field, or an empty result; never a 5xx.
fn check_answer(r: &Resp, field: &str, what: &str) {
    assert!(r.status < 500, "{what}: {} {}", r.status, r.text());
    if r.status == 200 {
        let v = r.json();
        let empty = v
            .as_object()
            .unwrap()
            .values()
            .any(|x| x.as_array().is_some_and(Vec::is_empty));
        assert!(empty, "{what}: {}", r.text());
    } else {
        assert!((400..500).contains(&r.status), "{what}: {}", r.status);
        let e = r.error();
        assert!(
            e.starts_with(&format!("{field}: ")) || e.starts_with("path: "),
            "{what}: {e}"
        );
    }
}

#[tokio::test]
async fn hostile_input_on_sqlite() {
    hostile_input(start(None, true).await).await;
}

#[tokio::test]
async fn hostile_input_on_postgres() {
    let Some(store) = common::TestStore::postgres("hostile_input_on_postgres").await else {
        return;
    };
    hostile_input(start(Some(store), true).await).await;
}
