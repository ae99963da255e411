//! The REST API over a real SQLite store, on a real socket: the role × route matrix, iterated
//! over `api::ROUTES` so a new route is covered by itself (401 without credentials, with an
//! unknown, a malformed or a revoked token and with an unknown session cookie; 403 below the
//! route's role; 2xx with it; the same with a dashboard session cookie, where POST, PUT and
//! DELETE also need the session's CSRF token and a same-site origin; every write audited with
//! its actor), bad input of every kind (parameters, JSON, content types, oversized bodies with
//! and without Content-Length on every POST and PUT route, SQL-looking strings) answered with
//! JSON errors and the database intact, audited registry changes, versioned and audited
//! economic inputs (JSON, CSV, XLSX; all or nothing), and the OpenAPI document listing exactly
//! the router's operations. Sign-in, sessions and users in depth: `tests/auth.rs`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "common/web.rs"]
mod web;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, OnceLock};

use serde_json::{Value, json};
use shopfloor_gateway::api::{self, AppState, ROUTES, Verb};
use shopfloor_gateway::auth::{self, Permission};
use shopfloor_gateway::db::Db;
use shopfloor_gateway::ingest::Trust;
use shopfloor_gateway::metrics::Metrics;
use shopfloor_gateway::model::Role;
use shopfloor_gateway::registry::Registry;
use shopfloor_gateway::session::{self, WebAuth};
use shopfloor_gateway::users;
use shopfloor_store::{AuditFilter, Store, UserRow};
use web::{Req, Resp, req};

const ROLES: [Role; 4] = [Role::Viewer, Role::Engineer, Role::Auditor, Role::Admin];
const MAX_BODY: usize = 64 * 1024;
const PERIOD: &str = "from=2026-01-01T00:00:00Z&to=2026-01-02T00:00:00Z";

const ENTITIES: &str = r#"
[[entity]]
id = "p1"
kind = "park"
name_zh = "测试园区"
name_en = "Test park"

[[entity]]
id = "p1/e1"
kind = "enterprise"
name_en = "Enterprise 1"

[[entity]]
id = "p1/e1/w1"
kind = "workshop"

[[entity]]
id = "p1/e1/w1/l1"
kind = "line"

[[entity]]
id = "p1/e1/w1/l1/cnc-01"
kind = "equipment"
equipment_kind = "cnc"
control = "cnc"
key_process = "machining"
product = "shaft-a"

[[entity]]
id = "p1/e1/w1/m-01"
kind = "meter"
carrier = "electricity"
unit = "kWh"
"#;

const PRODUCTS: &str = r#"
[[product]]
id = "shaft-a"
ideal_cycle_s = 25.0

[[product]]
id = "spare"
ideal_cycle_s = 10.0
"#;

/// The password of the user `matrix` (the login route's example).
const PASSWORD: &str = "matrix password 1";

/// One argon2id hash of [`PASSWORD`] for every server of this test binary (hashing costs).
async fn password_hash() -> String {
    static HASH: OnceLock<String> = OnceLock::new();
    if let Some(h) = HASH.get() {
        return h.clone();
    }
    let h = users::hash_password(PASSWORD.into()).await.unwrap();
    HASH.get_or_init(|| h).clone()
}

struct Server {
    addr: SocketAddr,
    db: Db,
    web: Arc<WebAuth>,
    tokens: BTreeMap<&'static str, String>,
    revoked: String,
    _dir: tempfile::TempDir,
}

impl Server {
    fn token(&self, role: Role) -> &str {
        &self.tokens[role.as_str()]
    }

    /// A new session of the user of `role` (`u-<role>`): (cookie value, CSRF token).
    async fn session(&self, role: Role) -> (String, String) {
        let (id, _) = session::create(&self.db, &self.web, &format!("u-{}", role.as_str()))
            .await
            .unwrap();
        let csrf = session::csrf_token(&id);
        (id, csrf)
    }
}

fn user(name: &str, role: Role, hash: &str) -> UserRow {
    UserRow {
        name: name.into(),
        role: role.as_str().into(),
        password_hash: hash.into(),
        created_at: 1,
        created_by: "test".into(),
        disabled_at: None,
        password_changed_at: 1,
    }
}

async fn start() -> Server {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(
        &format!("sqlite://{}", dir.path().join("gw.db").display()),
        None,
    )
    .await
    .unwrap();
    let reg_dir = dir.path().join("registry");
    std::fs::create_dir_all(&reg_dir).unwrap();
    std::fs::write(reg_dir.join("entities.toml"), ENTITIES).unwrap();
    std::fs::write(reg_dir.join("products.toml"), PRODUCTS).unwrap();
    let key = shopfloor_core::batch::SigningKey::from_bytes(&[9u8; 32]);
    std::fs::write(
        reg_dir.join("agents.toml"),
        format!(
            "[[agent]]\nid = \"w1-agent\"\npublic_key = \"{}\"\nscope = [\"p1/e1/w1\"]\n",
            shopfloor_core::batch::public_key_text(&key.verifying_key())
        ),
    )
    .unwrap();
    let registry = Registry::load(db.clone(), Arc::new(Trust::new()))
        .await
        .unwrap();
    registry.sync_files(Some(&reg_dir), None, 0).await.unwrap();
    let state = AppState {
        db: db.clone(),
        registry: Arc::new(registry),
        metrics: Arc::new(Metrics::new()),
        tz: jiff::tz::TimeZone::get("Asia/Shanghai").unwrap(),
        max_body_bytes: MAX_BODY,
        web: Arc::new(WebAuth::default()),
    };
    let web = state.web.clone();
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
    // Users: one per role (their sessions are made directly, without the cost of a login),
    // `matrix` for the login example, `matrix-victim` for the user change example.
    let hash = password_hash().await;
    for role in ROLES {
        assert!(
            db.user_add(&user(&format!("u-{}", role.as_str()), role, &hash))
                .await
                .unwrap()
        );
    }
    assert!(
        db.user_add(&user("matrix", Role::Viewer, &hash))
            .await
            .unwrap()
    );
    assert!(
        db.user_add(&user("matrix-victim", Role::Viewer, &hash))
            .await
            .unwrap()
    );
    let mut tokens = BTreeMap::new();
    for role in ROLES {
        let t = auth::create_token(&db, role.as_str(), role, "test")
            .await
            .unwrap();
        tokens.insert(role.as_str(), t);
    }
    let revoked = auth::create_token(&db, "gone", Role::Admin, "test")
        .await
        .unwrap();
    assert!(db.token_revoke("gone", "test", 1).await.unwrap());
    Server {
        addr,
        db,
        web,
        tokens,
        revoked,
        _dir: dir,
    }
}

async fn get(s: &Server, path: &str, role: Role) -> Resp {
    req("GET", path, Some(s.token(role))).send(s.addr).await
}

// ---------------------------------------------------------------------------------------------
// The matrix
// ---------------------------------------------------------------------------------------------

/// A valid request for each route (the same for every role).
fn example(route: &api::Route) -> Req {
    let method = match route.verb {
        Verb::Get => "GET",
        Verb::Post => "POST",
        Verb::Put => "PUT",
        Verb::Delete => "DELETE",
    };
    let inputs = json!({"entity": "p1/e1", "from": "2026-01-01T00:00:00+08:00", "to": "2026-02-01T00:00:00+08:00",
                        "value_added_cny": 1000000.0});
    let r = |path: String| req(method, path, None);
    match (route.verb, route.path) {
        (Verb::Get, "/api/v1/indicators") | (Verb::Get, "/api/v1/evidence") => {
            r(format!("{}?entity=p1/e1/w1&{PERIOD}", route.path))
        }
        (Verb::Get, "/api/v1/reports") => r(format!("{}?entity=p1/e1&{PERIOD}", route.path)),
        (Verb::Get, "/api/v1/overview") => r(format!("{}?entity=p1/e1&{PERIOD}", route.path)),
        (Verb::Get, "/api/v1/timeline") => r(format!(
            "{}?entity=p1/e1/w1&from=2026-01-01T00:00:00%2B08:00&to=2026-01-02T00:00:00%2B08:00",
            route.path
        )),
        (Verb::Get, "/api/v1/live") => r("/api/v1/live?entity=p1/e1/w1/l1/cnc-01".into()),
        (_, "/api/v1/indicators/{id}/series") => {
            r(format!("/api/v1/indicators/oee/series?entity=p1/e1/w1&{PERIOD}&step=hour"))
        }
        (_, "/api/v1/assessments/{kind}") => {
            r(format!("/api/v1/assessments/digital_workshop?entity=p1/e1/w1&{PERIOD}"))
        }
        (Verb::Post, "/api/v1/inputs") => r(route.path.into()).json(&inputs),
        (Verb::Get, "/api/v1/inputs") => r("/api/v1/inputs?entity=p1/e1".into()),
        (_, "/api/v1/inputs/import") => r("/api/v1/inputs/import?format=csv&name=matrix.csv".into()).body(
            "text/csv",
            b"entity,from,to,employees_avg\np1/e1,2026-03-01T00:00:00+08:00,2026-04-01T00:00:00+08:00,400\n",
        ),
        (_, "/api/v1/registry/{kind}") => r("/api/v1/registry/entity".into()),
        (Verb::Get, "/api/v1/registry/{kind}/{id}") => r("/api/v1/registry/entity/p1/e1/w1".into()),
        (Verb::Put, "/api/v1/registry/{kind}/{id}") => r("/api/v1/registry/entity/p1/e1/w1/l1".into())
            .json(&json!({"id": "p1/e1/w1/l1", "kind": "line", "name_en": "Line 1"})),
        (Verb::Delete, "/api/v1/registry/{kind}/{id}") => r("/api/v1/registry/product/spare".into()),
        (Verb::Post, "/api/v1/tokens") => r(route.path.into()).json(&json!({"name": "made-by-matrix", "role": "viewer"})),
        (Verb::Delete, "/api/v1/tokens/{name}") => r("/api/v1/tokens/victim".into()),
        (Verb::Post, "/api/v1/login") => r(route.path.into()).json(&json!({"name": "matrix", "password": PASSWORD})),
        (Verb::Post, "/api/v1/logout") => r(route.path.into()),
        (Verb::Post, "/api/v1/users") => r(route.path.into())
            .json(&json!({"name": "made-by-matrix", "role": "viewer", "password": "a long enough password"})),
        (Verb::Put, "/api/v1/users/{name}") => r("/api/v1/users/matrix-victim".into()).json(&json!({"role": "auditor"})),
        (Verb::Get, p) => {
            assert!(!p.contains('{'), "no example for {p}");
            r(p.into())
        }
        (v, p) => panic!("no example for {v:?} {p}"),
    }
}

/// The roles the OpenAPI document and the role table give a route.
fn roles_of(access: Option<Permission>) -> Vec<Role> {
    access.map_or(ROLES.to_vec(), |p| p.roles())
}

/// Whether a route changes data, so it must be audited (signing in and out changes none).
fn is_write(route: &api::Route) -> bool {
    route.verb != Verb::Get && !matches!(route.path, "/api/v1/login" | "/api/v1/logout")
}

/// The id and actor of the newest audit entry.
async fn newest_audit(db: &Db) -> (i64, String) {
    let e = db
        .audit(&AuditFilter {
            kind_prefix: None,
            item: None,
            since: None,
            limit: 1,
        })
        .await
        .unwrap();
    e.first()
        .map_or((0, String::new()), |e| (e.id, e.actor.clone()))
}

/// After a successful write: it was audited with `actor` (`must`: it has to be; a repeated
/// write that changes nothing, such as the same registry document again, writes no entry).
async fn assert_audited(s: &Server, before: i64, must: bool, actor: &str, what: &str) {
    let (id, newest) = newest_audit(&s.db).await;
    if must {
        assert!(id > before, "{what}: no audit entry");
    }
    if id > before {
        assert_eq!(newest, actor, "{what}: audited actor");
    }
}

#[tokio::test]
async fn every_route_checks_tokens_sessions_and_roles() {
    let s = start().await;
    let victim = auth::create_token(&s.db, "victim", Role::Viewer, "test")
        .await
        .unwrap();
    let unknown = format!("sfk_{}", "A".repeat(43));
    let unknown_session = session::new_session_id().unwrap();
    let origin = format!("http://{}", s.addr);
    let mut audited_once = BTreeSet::new();
    for route in ROUTES {
        let what = format!("{:?} {}", route.verb, route.path);
        let Some(needs) = route.access else {
            let resp = example(route).send(s.addr).await;
            assert_eq!(resp.status, 200, "{what} is public: {}", resp.text());
            continue;
        };
        for bad in [
            None,
            Some(unknown.as_str()),
            Some("sfk_x'--"),
            Some(s.revoked.as_str()),
        ] {
            let mut r = example(route);
            r.token = bad.map(str::to_owned);
            let resp = r.send(s.addr).await;
            assert_eq!(resp.status, 401, "{what} with {bad:?}: {}", resp.text());
            assert!(
                resp.error().starts_with("authorization: "),
                "{what}: {}",
                resp.text()
            );
            assert_eq!(resp.header("www-authenticate"), Some("Bearer"));
        }
        // Unknown and malformed session cookies: 401, and the cookie is removed.
        for cookie in [unknown_session.clone(), "x'; DROP TABLE sessions;--".into()] {
            let mut r = example(route);
            r.cookie = Some(cookie);
            r.csrf = Some("whatever".into());
            let resp = r.send(s.addr).await;
            assert_eq!(
                resp.status,
                401,
                "{what} with a bad cookie: {}",
                resp.text()
            );
            assert!(
                resp.error()
                    .starts_with("authorization: the session has ended"),
                "{what}: {}",
                resp.text()
            );
            assert!(
                resp.header("set-cookie")
                    .is_some_and(|c| c.starts_with("sf_session=;") && c.contains("Max-Age=0")),
                "{what}: {resp:?}"
            );
        }
        let unsafe_method = route.verb != Verb::Get;
        for role in ROLES {
            let allowed = auth::allows(role, needs);
            let as_role = format!("{what} as {}", role.as_str());
            let role_error = |who: &str| {
                let roles: Vec<&str> = needs.roles().iter().map(|r| r.as_str()).collect();
                format!(
                    "role: requires {}; this {who}'s role is {}",
                    roles.join(" or "),
                    role.as_str()
                )
            };

            // A bearer token.
            let (before, _) = newest_audit(&s.db).await;
            let mut r = example(route);
            r.token = Some(s.token(role).to_owned());
            let resp = r.send(s.addr).await;
            if allowed {
                assert!(
                    (200..300).contains(&resp.status),
                    "{as_role} (token): {} {}",
                    resp.status,
                    resp.text()
                );
                if is_write(route) {
                    let first = audited_once.insert(what.clone());
                    let every = route.path.starts_with("/api/v1/inputs");
                    let actor = format!("token:{}", role.as_str());
                    assert_audited(&s, before, first || every, &actor, &as_role).await;
                }
            } else {
                assert_eq!(resp.status, 403, "{as_role} (token): {}", resp.text());
                assert_eq!(resp.error(), role_error("token"));
            }

            // A session cookie (a fresh session: the logout route ends it).
            let (cookie, csrf) = s.session(role).await;
            if unsafe_method {
                let (_, other_csrf) = s.session(role).await;
                for (sent_csrf, sent_origin, want) in [
                    (None, None, "csrf: missing x-csrf-token header"),
                    (
                        Some("forged".to_owned()),
                        None,
                        "csrf: x-csrf-token does not match this session",
                    ),
                    (
                        Some(other_csrf),
                        None,
                        "csrf: x-csrf-token does not match this session",
                    ),
                    (
                        Some(csrf.clone()),
                        Some("http://evil.example".to_owned()),
                        "csrf: origin \"http://evil.example\" is not this site",
                    ),
                ] {
                    let mut r = example(route);
                    r.cookie = Some(cookie.clone());
                    r.csrf = sent_csrf;
                    r.origin = sent_origin;
                    let resp = r.send(s.addr).await;
                    assert_eq!(resp.status, 403, "{as_role} (cookie): {}", resp.text());
                    assert!(
                        resp.error().starts_with(want),
                        "{as_role} (cookie): {} (want {want})",
                        resp.error()
                    );
                }
            }
            let (before, _) = newest_audit(&s.db).await;
            let mut r = example(route);
            r.cookie = Some(cookie.clone());
            if unsafe_method {
                r.csrf = Some(csrf.clone());
                r.origin = Some(origin.clone());
            }
            let resp = r.send(s.addr).await;
            if allowed {
                if unsafe_method {
                    // A repeated write may meet what the first one did (409, 404).
                    assert!(
                        resp.status < 500 && resp.status != 401 && resp.status != 403,
                        "{as_role} (cookie): {} {}",
                        resp.status,
                        resp.text()
                    );
                } else {
                    assert!(
                        (200..300).contains(&resp.status),
                        "{as_role} (cookie): {} {}",
                        resp.status,
                        resp.text()
                    );
                }
                if is_write(route) && (200..300).contains(&resp.status) {
                    let every = route.path.starts_with("/api/v1/inputs");
                    let actor = format!("user:u-{}", role.as_str());
                    assert_audited(&s, before, every, &actor, &as_role).await;
                }
            } else {
                assert_eq!(resp.status, 403, "{as_role} (cookie): {}", resp.text());
                assert_eq!(resp.error(), role_error("user"));
            }
        }
    }
    // Every write route was audited at least once.
    let writes: BTreeSet<String> = ROUTES
        .iter()
        .filter(|r| is_write(r))
        .map(|r| format!("{:?} {}", r.verb, r.path))
        .collect();
    assert_eq!(audited_once, writes);
    // The write routes did their work: the spare product is gone, the victim's token revoked.
    assert!(
        s.db.registry_get("product", "spare")
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(
        req("GET", "/api/v1/entities", Some(&victim))
            .send(s.addr)
            .await
            .status,
        401
    );
    assert_eq!(get(&s, "/api/v1/entities", Role::Viewer).await.status, 200);
    assert_eq!(
        s.db.user_get("matrix-victim").await.unwrap().unwrap().role,
        "auditor"
    );
}

/// A body over `http.max_body_bytes` on every POST and PUT route: 413 with a JSON error,
/// declared (Content-Length) or not (chunked), and the gateway answers afterwards.
#[tokio::test]
async fn oversized_bodies_on_every_write_route() {
    let s = start().await;
    let admin = s.token(Role::Admin);
    let big = vec![b'x'; MAX_BODY + 1];
    let mut seen = 0;
    for route in ROUTES
        .iter()
        .filter(|r| matches!(r.verb, Verb::Post | Verb::Put))
    {
        let what = format!("{:?} {}", route.verb, route.path);
        for chunked in [false, true] {
            let mut r = example(route);
            if route.access.is_some() {
                r.token = Some(admin.to_owned());
            }
            r.content_type = r.content_type.or(Some("application/json".into()));
            r.body = big.clone();
            r.chunked = chunked;
            let resp = r.send(s.addr).await;
            assert_eq!(
                (resp.status, resp.error()),
                (413, format!("body: larger than {MAX_BODY} bytes")),
                "{what} (chunked: {chunked})"
            );
            let health = req("GET", "/healthz", None).send(s.addr).await;
            assert_eq!(health.status, 200, "{what}: the gateway still answers");
        }
        seen += 1;
    }
    assert!(seen >= 7, "{seen} write routes");
    // Nothing was stored or changed.
    assert!(s.db.inputs_history("p1/e1").await.unwrap().is_empty());
    assert!(s.db.user_get("made-by-matrix").await.unwrap().is_none());
}

#[tokio::test]
async fn public_routes() {
    let s = start().await;
    let r = req("GET", "/healthz", None).send(s.addr).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["status"], "ok");
    assert_eq!(r.json()["backend"], "sqlite");
    let r = req("GET", "/metrics", None).send(s.addr).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some(api::OPENMETRICS));
    let r = req("GET", "/api/v1/openapi.json", None).send(s.addr).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["openapi"], "3.1.0");
    // The dashboard page and its assets are public (the sign-in page loads without a token),
    // with a content security policy; unknown assets, routes and methods are JSON errors.
    let r = req("GET", "/", None).send(s.addr).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("text/html; charset=utf-8"));
    assert!(
        r.header("content-security-policy")
            .is_some_and(|c| c.contains("script-src 'self'"))
    );
    let r = req("GET", "/assets/vendor/echarts.min.js", None)
        .send(s.addr)
        .await;
    assert_eq!(r.status, 200);
    let r = req("GET", "/assets/../Cargo.toml", None).send(s.addr).await;
    assert_eq!(r.status, 404);
    let r = req("GET", "/assets/nothing.js", None).send(s.addr).await;
    assert_eq!(r.status, 404);
    assert!(r.error().starts_with("file: no such dashboard asset"));
    let r = req("GET", "/api/v1/nothing", Some(s.token(Role::Admin)))
        .send(s.addr)
        .await;
    assert_eq!(r.status, 404);
    let r = req("PATCH", "/api/v1/entities", Some(s.token(Role::Admin)))
        .send(s.addr)
        .await;
    assert_eq!(r.status, 405);
    assert_eq!(r.error(), "method: not allowed on this path");
    let r = req("GET", "/healthz?verbose=1", None).send(s.addr).await;
    assert_eq!(r.status, 400);
    assert_eq!(
        r.error(),
        "verbose: unknown query parameter (this operation takes none)"
    );
}

#[tokio::test]
async fn every_request_is_counted_by_route_template() {
    let s = start().await;
    assert_eq!(get(&s, "/api/v1/entities", Role::Viewer).await.status, 200);
    assert_eq!(get(&s, "/api/v1/entities", Role::Viewer).await.status, 200);
    assert_eq!(
        req("GET", "/api/v1/entities", None)
            .send(s.addr)
            .await
            .status,
        401
    );
    assert_eq!(get(&s, "/api/v1/evidence", Role::Viewer).await.status, 403);
    assert_eq!(
        get(&s, "/api/v1/registry/entity/p1/e1", Role::Auditor)
            .await
            .status,
        200
    );
    assert_eq!(
        get(&s, "/api/v1/no/such/thing", Role::Admin).await.status,
        404
    );
    let mut big = req("POST", "/api/v1/inputs", Some(s.token(Role::Engineer)));
    big.declare_only = Some(MAX_BODY * 2);
    assert_eq!(big.send(s.addr).await.status, 413);
    let text = req("GET", "/metrics", None).send(s.addr).await.text();
    for line in [
        r#"shopfloor_gateway_http_requests_total{route="/api/v1/entities",status="200"} 2"#,
        r#"shopfloor_gateway_http_requests_total{route="/api/v1/entities",status="401"} 1"#,
        r#"shopfloor_gateway_http_requests_total{route="/api/v1/evidence",status="403"} 1"#,
        r#"shopfloor_gateway_http_requests_total{route="/api/v1/registry/{kind}/{id}",status="200"} 1"#,
        r#"shopfloor_gateway_http_requests_total{route="unmatched",status="404"} 1"#,
        r#"shopfloor_gateway_http_requests_total{route="/api/v1/inputs",status="413"} 1"#,
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "{line} missing from:\n{text}"
        );
    }
    assert!(!text.contains("p1/e1\""), "raw paths are never labels");
}

#[tokio::test]
async fn entities_flat_and_tree() {
    let s = start().await;
    let r = get(&s, "/api/v1/entities", Role::Viewer).await;
    assert_eq!(r.status, 200);
    let flat = r.json()["entities"].as_array().unwrap().clone();
    assert_eq!(flat.len(), 6);
    assert_eq!(
        flat[0],
        json!({"id": "p1", "kind": "park", "parent": null, "name_zh": "测试园区", "name_en": "Test park"})
    );
    let cnc = flat
        .iter()
        .find(|e| e["id"] == "p1/e1/w1/l1/cnc-01")
        .unwrap();
    assert_eq!(cnc["kind"], "equipment");
    assert_eq!(cnc["parent"], "p1/e1/w1/l1");
    assert_eq!(cnc["product"], "shaft-a");
    let r = get(&s, "/api/v1/entities?view=tree", Role::Viewer).await;
    let tree = r.json()["entities"].clone();
    assert_eq!(tree.as_array().unwrap().len(), 1);
    let w1 = &tree[0]["children"][0]["children"][0];
    assert_eq!(w1["id"], "p1/e1/w1");
    let kids: Vec<&str> = w1["children"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_str().unwrap())
        .collect();
    assert_eq!(kids, vec!["p1/e1/w1/l1", "p1/e1/w1/m-01"]);
    assert_eq!(w1["children"][0]["children"][0]["id"], "p1/e1/w1/l1/cnc-01");
    let r = get(&s, "/api/v1/entities?view=graph", Role::Viewer).await;
    assert_eq!(
        (r.status, r.error()),
        (400, "view: must be flat or tree".to_owned())
    );
}

// ---------------------------------------------------------------------------------------------
// Bad input
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn bad_parameters_and_bodies_are_json_4xx() {
    let s = start().await;
    let v = Role::Viewer;
    let cases: Vec<(String, u16, &str)> = vec![
        (
            format!("/api/v1/indicators?{PERIOD}"),
            400,
            "entity: required",
        ),
        (
            format!("/api/v1/indicators?entity=&{PERIOD}"),
            400,
            "entity: required",
        ),
        (
            "/api/v1/indicators?entity=p1/e1".into(),
            400,
            "from: required",
        ),
        (
            format!("/api/v1/indicators?entity=p1/e1&{PERIOD}&colour=red"),
            400,
            "colour: unknown query parameter (known: entity, from, to)",
        ),
        (
            format!("/api/v1/indicators?entity=p1/e1&entity=p1&{PERIOD}"),
            400,
            "entity: given more than once",
        ),
        (
            format!("/api/v1/indicators?entity=P1/E1&{PERIOD}"),
            400,
            "entity: \"P1/E1\": segments are made of a-z, 0-9, _ and -",
        ),
        (
            format!("/api/v1/indicators?entity=p1/e9&{PERIOD}"),
            404,
            "entity: p1/e9 is not a registered entity",
        ),
        (
            "/api/v1/indicators?entity=p1/e1&from=yesterday&to=2026-01-01T00:00:00Z".into(),
            400,
            "from: ",
        ),
        (
            "/api/v1/indicators?entity=p1/e1&from=2026-01-02T00:00:00Z&to=2026-01-01T00:00:00Z"
                .into(),
            400,
            "to: must be after from",
        ),
        (
            format!("/api/v1/indicators/oee/series?entity=p1/e1&{PERIOD}"),
            400,
            "step: required",
        ),
        (
            format!("/api/v1/indicators/oee/series?entity=p1/e1&{PERIOD}&step=week"),
            400,
            "step: must be minute, hour, day or month",
        ),
        (
            format!("/api/v1/indicators/not_an_indicator/series?entity=p1/e1&{PERIOD}&step=day"),
            404,
            "id: \"not_an_indicator\" is not an indicator id",
        ),
        (
            format!("/api/v1/assessments/smart_city?entity=p1/e1&{PERIOD}"),
            404,
            "kind: not an assessment; one of digital_workshop, green_factory",
        ),
        ("/api/v1/inputs".into(), 400, "entity: required"),
    ];
    for (path, status, start_of_error) in &cases {
        let role = if path.starts_with("/api/v1/inputs") {
            Role::Auditor
        } else {
            v
        };
        let r = get(&s, path, role).await;
        assert_eq!(r.status, *status, "{path}: {}", r.text());
        assert!(
            r.error().starts_with(start_of_error),
            "{path}: {} (want {start_of_error})",
            r.error()
        );
    }
    let a = Role::Auditor;
    for (path, error) in [
        (
            "/api/v1/audit?limit=0",
            "limit: must be a whole number from 1 to 1000",
        ),
        (
            "/api/v1/audit?limit=ten",
            "limit: must be a whole number from 1 to 1000",
        ),
        (
            "/api/v1/audit?kind=Registry;DROP",
            "kind: a kind prefix such as registry, registry.entity, inputs or token",
        ),
        (
            "/api/v1/quarantine?before=-1",
            "before: must be a whole number from 1 to 9223372036854775807",
        ),
        (
            "/api/v1/quarantine?limit=100000",
            "limit: must be a whole number from 1 to 500",
        ),
    ] {
        let r = get(&s, path, a).await;
        assert_eq!((r.status, r.error()), (400, error.to_owned()), "{path}");
    }

    let e = s.token(Role::Engineer);
    // Malformed JSON, wrong shapes, unknown fields, wrong content types.
    let r = req("POST", "/api/v1/inputs", Some(e))
        .body("application/json", b"{\"entity\": ")
        .send(s.addr)
        .await;
    assert_eq!(r.status, 400);
    assert!(r.error().starts_with("body: not JSON: "), "{}", r.error());
    let r = req("POST", "/api/v1/inputs", Some(e))
        .json(&json!("p1/e1"))
        .send(s.addr)
        .await;
    assert_eq!(
        (r.status, r.error()),
        (
            400,
            "body: expected an object of economic inputs or an array of them".to_owned()
        )
    );
    let r = req("POST", "/api/v1/inputs", Some(e))
        .json(&json!([]))
        .send(s.addr)
        .await;
    assert_eq!(
        (r.status, r.error()),
        (400, "body: an empty array stores nothing".to_owned())
    );
    let r = req("POST", "/api/v1/inputs", Some(e))
        .json(&json!({"entity": "p1/e1", "from": "2026-01-01T00:00:00Z", "to": "2026-02-01T00:00:00Z", "colour": 1}))
        .send(s.addr)
        .await;
    assert_eq!(r.status, 400);
    assert!(
        r.error().contains("unknown field `colour`"),
        "{}",
        r.error()
    );
    let r = req("POST", "/api/v1/inputs", Some(e))
        .json(&json!([{"entity": "p1/e1", "from": "2026-01-01T00:00:00Z", "to": "2026-02-01T00:00:00Z", "employees_avg": 1},
                      {"entity": "p1/e1", "from": "2026-01-01T00:00:00Z", "to": "2026-02-01T00:00:00Z", "employees_avg": "many"}]))
        .send(s.addr)
        .await;
    assert_eq!(r.status, 400);
    assert!(
        r.error().starts_with("[1].employees_avg: invalid type"),
        "{}",
        r.error()
    );
    let r = req("POST", "/api/v1/inputs", Some(e))
        .body("text/plain", b"{}")
        .send(s.addr)
        .await;
    assert_eq!(
        (r.status, r.error()),
        (
            415,
            "content-type: expected application/json, got \"text/plain\"".to_owned()
        )
    );
    let r = req("POST", "/api/v1/inputs", Some(e)).send(s.addr).await;
    assert_eq!(
        (r.status, r.error()),
        (
            415,
            "content-type: expected application/json, got none".to_owned()
        )
    );
    let r = req(
        "POST",
        "/api/v1/inputs/import?format=xlsx&name=a.xlsx",
        Some(e),
    )
    .body("text/csv", b"x")
    .send(s.addr)
    .await;
    assert_eq!(r.status, 415);
    let r = req(
        "POST",
        "/api/v1/inputs/import?format=ods&name=a.ods",
        Some(e),
    )
    .body("text/csv", b"x")
    .send(s.addr)
    .await;
    assert_eq!(
        (r.status, r.error()),
        (400, "format: must be csv or xlsx".to_owned())
    );
    let r = req(
        "POST",
        "/api/v1/inputs/import?format=csv&name=../../etc/passwd",
        Some(e),
    )
    .body("text/csv", b"x")
    .send(s.addr)
    .await;
    assert_eq!(r.status, 400);
    assert!(r.error().starts_with("name: "));
    // Oversized bodies: refused before they are read.
    let mut r = req("POST", "/api/v1/inputs", Some(e));
    r.content_type = Some("application/json".into());
    r.declare_only = Some(MAX_BODY + 1);
    let r = r.send(s.addr).await;
    assert_eq!(
        (r.status, r.error()),
        (413, format!("body: larger than {MAX_BODY} bytes"))
    );
    // Nothing of the above was stored.
    assert!(s.db.inputs_history("p1/e1").await.unwrap().is_empty());
}

#[tokio::test]
async fn sql_looking_strings_change_nothing() {
    let s = start().await;
    let admin = s.token(Role::Admin);
    let before = s.db.registry_list("entity").await.unwrap().len();
    let injections = [
        "p1'%3B%20DROP%20TABLE%20registry%3B--",
        "p1%27%20OR%20%271%27%3D%271",
        "p1%22%29%3B%20DELETE%20FROM%20tokens%3B--",
    ];
    for inj in injections {
        let r = get(
            &s,
            &format!("/api/v1/indicators?entity={inj}&{PERIOD}"),
            Role::Viewer,
        )
        .await;
        assert_eq!(r.status, 400, "{inj}: {}", r.text());
        assert!(r.error().starts_with("entity: "));
        let r = get(&s, &format!("/api/v1/inputs?entity={inj}"), Role::Auditor).await;
        assert_eq!(r.status, 400, "{inj}");
        let r = get(&s, &format!("/api/v1/registry/entity/{inj}"), Role::Auditor).await;
        assert_eq!(r.status, 404, "{inj}: {}", r.text());
        let r = get(&s, &format!("/api/v1/registry/{inj}"), Role::Auditor).await;
        assert_eq!(r.status, 404, "{inj}: {}", r.text());
        assert!(r.error().starts_with("kind: "));
        let r = req(
            "DELETE",
            format!("/api/v1/registry/entity/{inj}"),
            Some(admin),
        )
        .send(s.addr)
        .await;
        assert_eq!(r.status, 404, "{inj}: {}", r.text());
        let r = req("DELETE", format!("/api/v1/tokens/{inj}"), Some(admin))
            .send(s.addr)
            .await;
        assert_eq!(r.status, 404, "{inj}: {}", r.text());
        let r = get(&s, &format!("/api/v1/audit?item={inj}"), Role::Auditor).await;
        assert_eq!(r.status, 200, "{inj}: {}", r.text());
        assert_eq!(r.json()["entries"], json!([]));
        let r = req("PUT", format!("/api/v1/registry/entity/{inj}"), Some(admin))
            .json(&json!({"id": "p1'; DROP TABLE registry;--", "kind": "enterprise"}))
            .send(s.addr)
            .await;
        assert_eq!(r.status, 400, "{inj}: {}", r.text());
    }
    // The database is intact and every token still works.
    assert_eq!(s.db.registry_list("entity").await.unwrap().len(), before);
    assert_eq!(s.db.tokens().await.unwrap().len(), 5);
    for role in ROLES {
        assert_eq!(get(&s, "/api/v1/entities", role).await.status, 200);
    }
}

// ---------------------------------------------------------------------------------------------
// Registry through the API
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn registry_changes_are_validated_and_audited() {
    let s = start().await;
    let admin = s.token(Role::Admin);
    let put = |path: &str, doc: Value| req("PUT", path.to_owned(), Some(admin)).json(&doc);

    // Create: 201, before null.
    let r = put(
        "/api/v1/registry/entity/p1/e1/w1/l2",
        json!({"id": "p1/e1/w1/l2", "kind": "line", "name_zh": "二号线"}),
    )
    .send(s.addr)
    .await;
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(r.json()["before"], Value::Null);
    // Replace: 200 with before and after.
    let r = put(
        "/api/v1/registry/entity/p1/e1/w1/l2",
        json!({"id": "p1/e1/w1/l2", "kind": "line", "name_zh": "二号线", "name_en": "Line 2"}),
    )
    .send(s.addr)
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.json()["before"],
        json!({"id": "p1/e1/w1/l2", "kind": "line", "name_zh": "二号线"})
    );
    assert_eq!(r.json()["after"]["name_en"], "Line 2");
    // Read back, and see it in the entity list.
    let r = get(&s, "/api/v1/registry/entity/p1/e1/w1/l2", Role::Engineer).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["doc"]["name_en"], "Line 2");
    assert_eq!(r.json()["updated_by"], "token:admin");
    let r = get(&s, "/api/v1/entities", Role::Viewer).await;
    assert!(
        r.json()["entities"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["id"] == "p1/e1/w1/l2")
    );
    let items = get(&s, "/api/v1/registry/product", Role::Auditor)
        .await
        .json();
    let ids: Vec<&str> = items["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, vec!["shaft-a", "spare"]);

    // Invalid documents: the field and the reason.
    let r = put("/api/v1/registry/entity/p1/e1/w1/l9/x", json!({"id": "p1/e1/w1/l9/x", "kind": "equipment", "equipment_kind": "cnc", "control": "cnc"}))
        .send(s.addr)
        .await;
    assert_eq!(
        (r.status, r.error()),
        (400, "id: parent p1/e1/w1/l9 is not an entity".to_owned())
    );
    let r = put(
        "/api/v1/registry/entity/p1/e1/w1/l3",
        json!({"id": "p1/e1/w1/l4", "kind": "line"}),
    )
    .send(s.addr)
    .await;
    assert_eq!(
        (r.status, r.error()),
        (
            400,
            "id: the document says \"p1/e1/w1/l4\", the path \"p1/e1/w1/l3\"".to_owned()
        )
    );
    let r = put(
        "/api/v1/registry/product/x",
        json!({"id": "x", "ideal_cycle_s": 0}),
    )
    .send(s.addr)
    .await;
    assert_eq!(
        (r.status, r.error()),
        (
            400,
            "ideal_cycle_s: must be a finite number > 0, got 0".to_owned()
        )
    );
    let r = put("/api/v1/registry/product/x", json!({"id": "x"}))
        .send(s.addr)
        .await;
    assert_eq!(r.status, 400);
    assert!(
        r.error().starts_with("body: missing field `ideal_cycle_s`"),
        "{}",
        r.error()
    );
    let r = put("/api/v1/registry/widget/x", json!({"id": "x"}))
        .send(s.addr)
        .await;
    assert_eq!(r.status, 404);
    let r = put("/api/v1/registry/product/x", json!([1]))
        .send(s.addr)
        .await;
    assert_eq!(
        (r.status, r.error()),
        (
            400,
            "body: expected a JSON object (the document)".to_owned()
        )
    );
    // Two problems: both reported.
    let r = put(
        "/api/v1/registry/agent/a2",
        json!({"id": "a2", "public_key": "ed25519:AAAA", "scope": ["p9"]}),
    )
    .send(s.addr)
    .await;
    assert_eq!(r.status, 400);
    assert_eq!(
        r.json()["errors"],
        json!([
            "public_key: must be 32 bytes, got 3",
            "scope[0]: p9 is not an entity"
        ])
    );

    // Delete: refused while referenced, then allowed; audited.
    let r = req("DELETE", "/api/v1/registry/entity/p1/e1/w1", Some(admin))
        .send(s.addr)
        .await;
    assert_eq!(r.status, 409);
    assert!(r.error().contains("has children"), "{}", r.error());
    let r = req("DELETE", "/api/v1/registry/product/shaft-a", Some(admin))
        .send(s.addr)
        .await;
    assert_eq!(r.status, 409);
    let r = req("DELETE", "/api/v1/registry/entity/p1/e1/w1/l2", Some(admin))
        .send(s.addr)
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["deleted"]["name_en"], "Line 2");
    let r = req("DELETE", "/api/v1/registry/entity/p1/e1/w1/l2", Some(admin))
        .send(s.addr)
        .await;
    assert_eq!(r.status, 404);

    // The audit log: create, replace, delete with before and after, by the token's name.
    let r = get(
        &s,
        "/api/v1/audit?kind=registry.entity&item=p1/e1/w1/l2",
        Role::Auditor,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let entries = r.json()["entries"].as_array().unwrap().clone();
    assert_eq!(entries.len(), 3, "{entries:#?}");
    assert!(
        entries
            .iter()
            .all(|e| e["actor"] == "token:admin" && e["kind"] == "registry.entity")
    );
    // Newest first.
    assert_eq!(entries[0]["after"], Value::Null);
    assert_eq!(entries[0]["before"]["name_en"], "Line 2");
    assert_eq!(entries[1]["before"]["name_en"], Value::Null);
    assert_eq!(entries[1]["after"]["name_en"], "Line 2");
    assert_eq!(entries[2]["before"], Value::Null);
    let limited = get(&s, "/api/v1/audit?kind=registry&limit=1", Role::Auditor).await;
    assert_eq!(limited.json()["entries"].as_array().unwrap().len(), 1);
}

// ---------------------------------------------------------------------------------------------
// Economic inputs
// ---------------------------------------------------------------------------------------------

fn data(name: &str) -> Vec<u8> {
    std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/data")
            .join(name),
    )
    .unwrap()
}

#[tokio::test]
async fn inputs_are_versioned_audited_and_all_or_nothing() {
    let s = start().await;
    let e = s.token(Role::Engineer);
    let jan = json!({"entity": "p1/e1", "from": "2026-01-01T00:00:00+08:00", "to": "2026-02-01T00:00:00+08:00",
                     "value_added_cny": 40000000.0, "employees_avg": 420.0});
    let r = req("POST", "/api/v1/inputs", Some(e))
        .json(&jan)
        .send(s.addr)
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
    let stored = &r.json()["stored"][0];
    assert_eq!(stored["version"], 1);
    assert_eq!(stored["source"], "api");
    assert_eq!(stored["actor"], "token:engineer");
    assert_eq!(stored["from"], "2026-01-01T00:00:00+08:00");
    // A correction: version 2 of the same period.
    let mut corrected = jan.clone();
    corrected["value_added_cny"] = json!(41000000.0);
    let r = req("POST", "/api/v1/inputs", Some(e))
        .json(&json!([corrected]))
        .send(s.addr)
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(r.json()["stored"][0]["version"], 2);
    // Validation against the registry.
    for (doc, error) in [
        (
            json!({"entity": "p1/e1/w1/l1", "from": "2026-01-01T00:00:00Z", "to": "2026-02-01T00:00:00Z", "value_added_cny": 1}),
            "entity: p1/e1/w1/l1 is a line; economic inputs belong to an enterprise or a workshop",
        ),
        (
            json!({"entity": "p1/e1", "from": "2026-01-01T00:00:00Z", "to": "2026-02-01T00:00:00Z"}),
            "body: at least one value is required (value_added_cny, gross_output_cny, employees_avg, land_area_m2, solid_waste_generated_t, solid_waste_utilized_t, unmetered_water_m3)",
        ),
        (
            json!({"entity": "p1/e1", "from": "2026-01-01", "to": "2026-02-01T00:00:00Z", "employees_avg": 1}),
            "from: \"2026-01-01\" is not an RFC 3339 time with an offset (e.g. 2026-01-01T00:00:00+08:00)",
        ),
    ] {
        let r = req("POST", "/api/v1/inputs", Some(e))
            .json(&doc)
            .send(s.addr)
            .await;
        assert_eq!((r.status, r.error()), (400, error.to_owned()));
    }
    // One bad element of an array: nothing stored.
    let r = req("POST", "/api/v1/inputs", Some(e))
        .json(&json!([jan, {"entity": "p1/e1", "from": "2026-03-01T00:00:00Z", "to": "2026-02-01T00:00:00Z", "employees_avg": 1}]))
        .send(s.addr)
        .await;
    assert_eq!(
        (r.status, r.error()),
        (400, "[1].to: must be after from".to_owned())
    );
    assert_eq!(s.db.inputs_history("p1/e1").await.unwrap().len(), 2);

    // CSV: any column order, empty cells absent; one bad row and nothing is stored.
    let bad_csv = "to,entity,from,gross_output_cny,unmetered_water_m3\n\
                   2026-03-01T00:00:00+08:00,p1/e1,2026-02-01T00:00:00+08:00,180000000,\n\
                   2026-03-01T00:00:00+08:00,p1/e1/w1,2026-02-01T00:00:00+08:00,-5,12\n";
    let r = req(
        "POST",
        "/api/v1/inputs/import?format=csv&name=feb.csv",
        Some(e),
    )
    .body("text/csv", bad_csv.as_bytes())
    .send(s.addr)
    .await;
    assert_eq!(
        (r.status, r.error()),
        (
            400,
            "feb.csv: row 3: gross_output_cny: must be ≥ 0, got -5".to_owned()
        )
    );
    assert_eq!(s.db.inputs_history("p1/e1").await.unwrap().len(), 2);
    let r = req(
        "POST",
        "/api/v1/inputs/import?format=csv&name=feb.csv",
        Some(e),
    )
    .body("text/csv", b"entity,from,to,colour\np1/e1,a,b,red\n")
    .send(s.addr)
    .await;
    assert_eq!(r.status, 400);
    assert!(
        r.error()
            .starts_with("feb.csv: row 1: colour: unknown column"),
        "{}",
        r.error()
    );
    let good_csv = bad_csv.replace(",-5,", ",5000000,");
    let r = req(
        "POST",
        "/api/v1/inputs/import?format=csv&name=feb.csv",
        Some(e),
    )
    .body("text/csv", good_csv.as_bytes())
    .send(s.addr)
    .await;
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(r.json()["source"], "csv:feb.csv");
    let stored = r.json()["stored"].clone();
    assert_eq!(stored.as_array().unwrap().len(), 2);
    assert_eq!(
        stored[0]["doc"],
        json!({"entity": "p1/e1", "from": "2026-02-01T00:00:00+08:00", "to": "2026-03-01T00:00:00+08:00", "gross_output_cny": 180000000.0})
    );
    assert_eq!(stored[1]["doc"]["unmetered_water_m3"], 12.0);

    // XLSX: the fixture's first sheet; a bad workbook stores nothing.
    let xlsx = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet";
    let r = req(
        "POST",
        "/api/v1/inputs/import?format=xlsx&name=inputs-bad.xlsx",
        Some(e),
    )
    .body(xlsx, &data("inputs-bad.xlsx"))
    .send(s.addr)
    .await;
    assert_eq!(r.status, 400, "{}", r.text());
    let errors: Vec<String> = r.json()["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        errors,
        vec![
            "inputs-bad.xlsx: row 4: to: a date cell; write the time as RFC 3339 text with an offset (e.g. 2026-01-01T00:00:00+08:00)",
            "inputs-bad.xlsx: row 4: employees_avg: a boolean (true), expected a number or text",
            "inputs-bad.xlsx: row 5: value_added_cny: cell error #DIV/0!",
        ]
    );
    let before = s.db.inputs_history("p1/e1").await.unwrap().len();
    let r = req(
        "POST",
        "/api/v1/inputs/import?format=xlsx&name=inputs.xlsx",
        Some(e),
    )
    .body(xlsx, &data("inputs.xlsx"))
    .send(s.addr)
    .await;
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(r.json()["source"], "xlsx:inputs.xlsx");
    let stored = r.json()["stored"].clone();
    assert_eq!(stored[0]["doc"]["value_added_cny"], 41000000.0);
    assert_eq!(stored[0]["doc"]["employees_avg"], 420.5);
    assert_eq!(stored[0]["doc"]["solid_waste_utilized_t"], 270.0);
    assert_eq!(
        stored[0]["version"], 3,
        "January of p1/e1 for the third time"
    );
    assert_eq!(stored[1]["doc"]["value_added_cny"], 1250000.5);
    assert_eq!(stored[1]["doc"]["unmetered_water_m3"], 812.0);
    assert_eq!(
        s.db.inputs_history("p1/e1").await.unwrap().len(),
        before + 1
    );
    let r = req(
        "POST",
        "/api/v1/inputs/import?format=xlsx&name=x.xlsx",
        Some(e),
    )
    .body(xlsx, b"not a workbook")
    .send(s.addr)
    .await;
    assert_eq!(r.status, 400);
    assert!(
        r.error()
            .starts_with("x.xlsx: not a readable XLSX workbook"),
        "{}",
        r.error()
    );

    // History: every version, newest first.
    let r = get(&s, "/api/v1/inputs?entity=p1/e1", Role::Auditor).await;
    assert_eq!(r.status, 200);
    let recs = r.json()["records"].as_array().unwrap().clone();
    let jan_versions: Vec<(i64, &str)> = recs
        .iter()
        .filter(|x| x["from"] == "2026-01-01T00:00:00+08:00")
        .map(|x| {
            (
                x["version"].as_i64().unwrap(),
                x["source"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        jan_versions,
        vec![(3, "xlsx:inputs.xlsx"), (2, "api"), (1, "api")]
    );
    // Each stored version is audited.
    let audit =
        s.db.audit(&AuditFilter {
            kind_prefix: Some("inputs".into()),
            item: None,
            since: None,
            limit: 100,
        })
        .await
        .unwrap();
    assert_eq!(audit.len(), 6, "{audit:#?}");
    assert!(audit.iter().all(|a| a.actor == "token:engineer"));
}

// ---------------------------------------------------------------------------------------------
// Tokens
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn tokens_are_shown_once_and_revocable() {
    let s = start().await;
    let admin = s.token(Role::Admin);
    let r = req("POST", "/api/v1/tokens", Some(admin))
        .json(&json!({"name": "ci", "role": "auditor"}))
        .send(s.addr)
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
    let token = r.json()["token"].as_str().unwrap().to_owned();
    assert!(token.starts_with("sfk_") && token.len() == 47);
    assert_eq!(get_with(&s, "/api/v1/audit", &token).await.status, 200);
    let r = req("POST", "/api/v1/tokens", Some(admin))
        .json(&json!({"name": "ci", "role": "auditor"}))
        .send(s.addr)
        .await;
    assert_eq!(r.status, 409);
    let r = req("POST", "/api/v1/tokens", Some(admin))
        .json(&json!({"name": "x", "role": "root"}))
        .send(s.addr)
        .await;
    assert_eq!(
        (r.status, r.error()),
        (
            400,
            "role: must be viewer, engineer, auditor or admin".to_owned()
        )
    );
    let r = req("POST", "/api/v1/tokens", Some(admin))
        .json(&json!({"name": "a b", "role": "viewer"}))
        .send(s.addr)
        .await;
    assert_eq!(r.status, 400);
    let r = req("POST", "/api/v1/tokens", Some(admin))
        .json(&json!({"name": "y", "role": "viewer", "expires": 1}))
        .send(s.addr)
        .await;
    assert_eq!(r.status, 400);
    // The list never shows tokens or hashes.
    let r = get(&s, "/api/v1/tokens", Role::Admin).await;
    let text = r.text();
    assert!(!text.contains(&token) && !text.contains(&auth::hash_token(&token)));
    assert!(
        r.json()["tokens"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["name"] == "ci" && t["role"] == "auditor")
    );
    // Revoked: 401 from then on; revoking again is 404.
    let r = req("DELETE", "/api/v1/tokens/ci", Some(admin))
        .send(s.addr)
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(get_with(&s, "/api/v1/audit", &token).await.status, 401);
    let r = req("DELETE", "/api/v1/tokens/ci", Some(admin))
        .send(s.addr)
        .await;
    assert_eq!(r.status, 404);
    // Creation and revocation are audited, without the token.
    let r = get(&s, "/api/v1/audit?kind=token", Role::Auditor).await;
    let text = r.text();
    assert!(!text.contains(&token));
    assert!(
        r.json()["entries"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["item"] == "ci")
            .count()
            >= 2,
        "{text}"
    );
}

async fn get_with(s: &Server, path: &str, token: &str) -> Resp {
    req("GET", path, Some(token)).send(s.addr).await
}

// ---------------------------------------------------------------------------------------------
// OpenAPI
// ---------------------------------------------------------------------------------------------

#[test]
fn openapi_lists_exactly_the_routes_with_their_roles() {
    let doc: Value = serde_json::from_str(api::OPENAPI).unwrap();
    assert_eq!(doc["openapi"], "3.1.0");
    let mut documented = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            documented.insert((method.clone(), path.clone()));
            let route = ROUTES
                .iter()
                .find(|r| r.verb.as_str() == method && r.path == path)
                .unwrap_or_else(|| panic!("{method} {path} is documented but not routed"));
            let want: Vec<&str> = match route.access {
                None => Vec::new(),
                Some(_) => roles_of(route.access).iter().map(|r| r.as_str()).collect(),
            };
            let got: Vec<&str> = op["x-roles"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_str().unwrap())
                .collect();
            assert_eq!(got, want, "{method} {path}: x-roles");
            let desc = op["description"].as_str().unwrap();
            if route.access.is_some() {
                assert!(
                    desc.contains(&format!("Roles: {}.", want.join(", "))),
                    "{method} {path}: {desc}"
                );
                assert_eq!(op["security"], json!([{"bearer": []}]), "{method} {path}");
                assert!(
                    op["responses"]["401"].is_object() && op["responses"]["403"].is_object(),
                    "{method} {path}"
                );
            } else {
                assert_eq!(op["security"], json!([]), "{method} {path}");
            }
            // Every path parameter is declared.
            let params: BTreeSet<String> = op["parameters"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .map(|p| {
                            let p = match p.get("$ref").and_then(Value::as_str) {
                                Some(r) => {
                                    &doc["components"]["parameters"][r.rsplit('/').next().unwrap()]
                                }
                                None => p,
                            };
                            format!(
                                "{}:{}",
                                p["in"].as_str().unwrap(),
                                p["name"].as_str().unwrap()
                            )
                        })
                        .collect()
                })
                .unwrap_or_default();
            for seg in path.split('/').filter(|s| s.starts_with('{')) {
                let name = seg.trim_matches(|c| c == '{' || c == '}');
                assert!(
                    params.contains(&format!("path:{name}")),
                    "{method} {path}: path parameter {name}"
                );
            }
            assert!(
                op["responses"]["400"].is_object() || route.access.is_none(),
                "{method} {path}"
            );
        }
    }
    let routed: BTreeSet<(String, String)> = ROUTES
        .iter()
        .map(|r| (r.verb.as_str().to_owned(), r.path.to_owned()))
        .collect();
    assert_eq!(documented, routed);
    // Every $ref resolves.
    fn refs<'a>(v: &'a Value, out: &mut Vec<&'a str>) {
        match v {
            Value::Object(m) => {
                if let Some(Value::String(r)) = m.get("$ref") {
                    out.push(r);
                }
                m.values().for_each(|x| refs(x, out));
            }
            Value::Array(a) => a.iter().for_each(|x| refs(x, out)),
            _ => {}
        }
    }
    let mut all = Vec::new();
    refs(&doc, &mut all);
    for r in all {
        let mut at = &doc;
        for part in r.trim_start_matches("#/").split('/') {
            at = &at[part];
        }
        assert!(!at.is_null(), "dangling {r}");
    }
}
