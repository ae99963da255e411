//! The REST API (DESIGN.md §5; every operation in `gateway/openapi.json`, served at
//! `/api/v1/openapi.json`): entities, indicators, series, assessments, evidence, economic
//! inputs, the registry, the audit log, quarantine, agents, tokens, users and dashboard
//! sign-in ([`crate::session`]), plus `/healthz` and `/metrics`.
//!
//! Invariants:
//! - [`ROUTES`] is the single list of operations: the router is built from it, each route's
//!   [`Permission`] is enforced from it (before any parameter is read), and a test checks that
//!   the OpenAPI document lists exactly these (method, path) pairs. Callers are authenticated
//!   by [`auth::authorize_request`] (bearer token, else session cookie + CSRF).
//! - Every write (POST, PUT, DELETE) is audited with its actor (`token:<name>`, `user:<name>`)
//!   by the store, in the transaction of the change; sign-in and sign-out change no data and
//!   are logged instead.
//! - Every request is counted once, in one middleware, by route template (`unmatched` for
//!   paths outside the table) and status: `Metrics::http_request`.
//! - Every error is JSON `{"error": "<field>: <reason>"}` (with `"errors": [...]` when there
//!   are several): 400 bad parameters or documents, 401/403 authentication and roles, 404
//!   unknown routes, entities and items, 405, 409 conflicts, 413 bodies over
//!   `max_body_bytes`, 415 wrong content types, 500 storage failures (logged; the response
//!   says only that storage failed). Unknown query parameters are rejected; nothing a client
//!   sends can panic a handler.
//! - Times in responses are RFC 3339 in the gateway's time zone.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::{DefaultBodyLimit, FromRequestParts, Path, Query, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodFilter, MethodRouter, get, on};
use base64::Engine as _;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use shopfloor_store::{
    AgentHead, AuditEntry, AuditFilter, ChainEvent, Gran, InputsRecord, Ms, QuarantineEntry,
    RegistryItem, Store, StoreError, TokenRow,
};

use crate::auth::{self, AuthError, Permission, Principal, TokenError};
use crate::dashboard;
use crate::db::Db;
use crate::indicators::{self, QueryError};
use crate::inputs::{self, InputsError, Loc};
use crate::metrics::Metrics;
use crate::model::{EconomicInputs, Entity, EntityKind, Role, Snapshot};
use crate::registry::{self, Registry, RegistryError};
use crate::report;
use crate::session::{self, WebAuth};
use crate::users;

/// The OpenAPI 3.1 document of this API.
pub const OPENAPI: &str = include_str!("../openapi.json");

/// `/metrics` content type (OpenMetrics text).
pub const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

const XLSX_MIME: &str = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet";

/// What every handler shares; cheap to clone.
#[derive(Debug, Clone)]
pub struct AppState {
    pub db: Db,
    pub registry: Arc<Registry>,
    pub metrics: Arc<Metrics>,
    /// Time zone of dates without an offset in queries, and of times in responses.
    pub tz: jiff::tz::TimeZone,
    /// Largest accepted request body (bytes); larger gets 413.
    pub max_body_bytes: usize,
    /// Dashboard sign-in: session settings, the login rate limiter, the clock.
    pub web: Arc<WebAuth>,
}

// ---------------------------------------------------------------------------------------------
// The route table
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Verb {
    Get,
    Post,
    Put,
    Delete,
}

impl Verb {
    /// Lower-case, as the keys of an OpenAPI path item.
    pub fn as_str(self) -> &'static str {
        match self {
            Verb::Get => "get",
            Verb::Post => "post",
            Verb::Put => "put",
            Verb::Delete => "delete",
        }
    }

    fn filter(self) -> MethodFilter {
        match self {
            Verb::Get => MethodFilter::GET,
            Verb::Post => MethodFilter::POST,
            Verb::Put => MethodFilter::PUT,
            Verb::Delete => MethodFilter::DELETE,
        }
    }
}

/// The operations (one handler each).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Healthz,
    Metrics,
    OpenApi,
    Entities,
    Indicators,
    Series,
    Assessment,
    Evidence,
    Report,
    Seals,
    InputsPost,
    InputsImport,
    InputsHistory,
    RegistryList,
    RegistryGet,
    RegistryPut,
    RegistryDelete,
    Audit,
    Quarantine,
    Agents,
    TokensList,
    TokensCreate,
    TokensRevoke,
    Session,
    Overview,
    Timeline,
    Live,
    Events,
    Login,
    Logout,
    UsersList,
    UsersCreate,
    UsersUpdate,
}

/// One operation of the API.
#[derive(Debug, Clone, Copy)]
pub struct Route {
    pub verb: Verb,
    /// The path as the OpenAPI document and the metrics label write it (`{id}`).
    pub path: &'static str,
    /// The path as the router matches it (`{*id}` where an id may contain `/`).
    pub pattern: &'static str,
    /// `None`: public.
    pub access: Option<Permission>,
    op: Op,
}

const fn route(
    verb: Verb,
    path: &'static str,
    pattern: &'static str,
    access: Option<Permission>,
    op: Op,
) -> Route {
    Route {
        verb,
        path,
        pattern,
        access,
        op,
    }
}

use Permission as P;
use Verb::{Delete, Get, Post, Put};

/// Every operation of the API.
pub const ROUTES: &[Route] = &[
    route(Get, "/healthz", "/healthz", None, Op::Healthz),
    route(Get, "/metrics", "/metrics", None, Op::Metrics),
    route(
        Get,
        "/api/v1/openapi.json",
        "/api/v1/openapi.json",
        None,
        Op::OpenApi,
    ),
    route(
        Get,
        "/api/v1/entities",
        "/api/v1/entities",
        Some(P::Read),
        Op::Entities,
    ),
    route(
        Get,
        "/api/v1/session",
        "/api/v1/session",
        Some(P::Read),
        Op::Session,
    ),
    route(
        Get,
        "/api/v1/overview",
        "/api/v1/overview",
        Some(P::Read),
        Op::Overview,
    ),
    route(
        Get,
        "/api/v1/timeline",
        "/api/v1/timeline",
        Some(P::Read),
        Op::Timeline,
    ),
    route(Get, "/api/v1/live", "/api/v1/live", Some(P::Read), Op::Live),
    route(
        Get,
        "/api/v1/events",
        "/api/v1/events",
        Some(P::Read),
        Op::Events,
    ),
    route(
        Get,
        "/api/v1/indicators",
        "/api/v1/indicators",
        Some(P::Read),
        Op::Indicators,
    ),
    route(
        Get,
        "/api/v1/indicators/{id}/series",
        "/api/v1/indicators/{id}/series",
        Some(P::Read),
        Op::Series,
    ),
    route(
        Get,
        "/api/v1/assessments/{kind}",
        "/api/v1/assessments/{kind}",
        Some(P::Read),
        Op::Assessment,
    ),
    route(
        Get,
        "/api/v1/evidence",
        "/api/v1/evidence",
        Some(P::Evidence),
        Op::Evidence,
    ),
    route(
        Get,
        "/api/v1/reports",
        "/api/v1/reports",
        Some(P::Evidence),
        Op::Report,
    ),
    route(
        Get,
        "/api/v1/seals",
        "/api/v1/seals",
        Some(P::Evidence),
        Op::Seals,
    ),
    route(
        Post,
        "/api/v1/inputs",
        "/api/v1/inputs",
        Some(P::InputsWrite),
        Op::InputsPost,
    ),
    route(
        Post,
        "/api/v1/inputs/import",
        "/api/v1/inputs/import",
        Some(P::InputsWrite),
        Op::InputsImport,
    ),
    route(
        Get,
        "/api/v1/inputs",
        "/api/v1/inputs",
        Some(P::InputsRead),
        Op::InputsHistory,
    ),
    route(
        Get,
        "/api/v1/registry/{kind}",
        "/api/v1/registry/{kind}",
        Some(P::RegistryRead),
        Op::RegistryList,
    ),
    route(
        Get,
        "/api/v1/registry/{kind}/{id}",
        "/api/v1/registry/{kind}/{*id}",
        Some(P::RegistryRead),
        Op::RegistryGet,
    ),
    route(
        Put,
        "/api/v1/registry/{kind}/{id}",
        "/api/v1/registry/{kind}/{*id}",
        Some(P::RegistryWrite),
        Op::RegistryPut,
    ),
    route(
        Delete,
        "/api/v1/registry/{kind}/{id}",
        "/api/v1/registry/{kind}/{*id}",
        Some(P::RegistryWrite),
        Op::RegistryDelete,
    ),
    route(
        Get,
        "/api/v1/audit",
        "/api/v1/audit",
        Some(P::Audit),
        Op::Audit,
    ),
    route(
        Get,
        "/api/v1/quarantine",
        "/api/v1/quarantine",
        Some(P::Quarantine),
        Op::Quarantine,
    ),
    route(
        Get,
        "/api/v1/agents",
        "/api/v1/agents",
        Some(P::Agents),
        Op::Agents,
    ),
    route(
        Get,
        "/api/v1/tokens",
        "/api/v1/tokens",
        Some(P::Tokens),
        Op::TokensList,
    ),
    route(
        Post,
        "/api/v1/tokens",
        "/api/v1/tokens",
        Some(P::Tokens),
        Op::TokensCreate,
    ),
    route(
        Delete,
        "/api/v1/tokens/{name}",
        "/api/v1/tokens/{name}",
        Some(P::Tokens),
        Op::TokensRevoke,
    ),
    route(Post, "/api/v1/login", "/api/v1/login", None, Op::Login),
    route(
        Post,
        "/api/v1/logout",
        "/api/v1/logout",
        Some(P::Read),
        Op::Logout,
    ),
    route(
        Get,
        "/api/v1/users",
        "/api/v1/users",
        Some(P::Users),
        Op::UsersList,
    ),
    route(
        Post,
        "/api/v1/users",
        "/api/v1/users",
        Some(P::Users),
        Op::UsersCreate,
    ),
    route(
        Put,
        "/api/v1/users/{name}",
        "/api/v1/users/{name}",
        Some(P::Users),
        Op::UsersUpdate,
    ),
];

fn handler(op: Op, f: MethodFilter) -> MethodRouter<AppState> {
    match op {
        Op::Healthz => on(f, healthz),
        Op::Metrics => on(f, metrics),
        Op::OpenApi => on(f, openapi),
        Op::Entities => on(f, entities),
        Op::Indicators => on(f, indicators_get),
        Op::Series => on(f, series),
        Op::Assessment => on(f, assessment),
        Op::Evidence => on(f, evidence),
        Op::Report => on(f, report),
        Op::Seals => on(f, seals),
        Op::InputsPost => on(f, inputs_post),
        Op::InputsImport => on(f, inputs_import),
        Op::InputsHistory => on(f, inputs_history),
        Op::RegistryList => on(f, registry_list),
        Op::RegistryGet => on(f, registry_get),
        Op::RegistryPut => on(f, registry_put),
        Op::RegistryDelete => on(f, registry_delete),
        Op::Audit => on(f, audit),
        Op::Quarantine => on(f, quarantine),
        Op::Agents => on(f, agents),
        Op::TokensList => on(f, tokens_list),
        Op::TokensCreate => on(f, tokens_create),
        Op::TokensRevoke => on(f, tokens_revoke),
        Op::Session => on(f, dashboard::session),
        Op::Overview => on(f, dashboard::overview),
        Op::Timeline => on(f, dashboard::timeline),
        Op::Live => on(f, dashboard::live),
        Op::Events => on(f, dashboard::events),
        Op::Login => on(f, session::login),
        Op::Logout => on(f, session::logout),
        Op::UsersList => on(f, users::list),
        Op::UsersCreate => on(f, users::create),
        Op::UsersUpdate => on(f, users::update),
    }
}

/// The API router (no `GET /`: the dashboard is mounted by the wiring).
pub fn router(state: AppState) -> Router {
    let mut r: Router<AppState> = Router::new();
    for rt in ROUTES {
        let guard = Guard {
            db: state.db.clone(),
            web: state.web.clone(),
            route: rt,
            max_body_bytes: state.max_body_bytes,
        };
        r = r.route(
            rt.pattern,
            handler(rt.op, rt.verb.filter()).layer(middleware::from_fn_with_state(guard, guarded)),
        );
    }
    // The dashboard's page and assets: public (the login page must load without a token).
    r = r
        .route(
            "/",
            get(dashboard::index).layer(middleware::map_response(|mut r: Response| async {
                r.extensions_mut().insert(RouteLabel("/"));
                r
            })),
        )
        .route(
            "/assets/{*file}",
            get(dashboard::asset).layer(middleware::map_response(|mut r: Response| async {
                r.extensions_mut().insert(RouteLabel("/assets/{file}"));
                r
            })),
        );
    r.fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(state.max_body_bytes))
        .layer(middleware::from_fn_with_state(state.metrics.clone(), count))
        .with_state(state)
}

// ---------------------------------------------------------------------------------------------
// Middleware: counting and access
// ---------------------------------------------------------------------------------------------

/// The route template of a response (set by the route's guard), for the request counter.
#[derive(Debug, Clone, Copy)]
struct RouteLabel(&'static str);

/// Label of requests that match no route.
pub const UNMATCHED: &str = "unmatched";

async fn count(State(metrics): State<Arc<Metrics>>, req: Request, next: Next) -> Response {
    let resp = next.run(req).await;
    let route = resp
        .extensions()
        .get::<RouteLabel>()
        .map_or(UNMATCHED, |l| l.0);
    metrics.http_request(route, resp.status().as_u16());
    resp
}

#[derive(Debug, Clone)]
struct Guard {
    db: Db,
    web: Arc<WebAuth>,
    route: &'static Route,
    max_body_bytes: usize,
}

/// Refuses a declared body over the limit before anything reads it, authenticates the caller
/// (bearer token, else the session cookie with CSRF checks) and checks the route's permission
/// before the handler reads anything, and labels the response.
async fn guarded(
    State(g): State<Guard>,
    session::Peer(peer): session::Peer,
    mut req: Request,
    next: Next,
) -> Response {
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    let too_large = declared.is_some_and(|n| n > g.max_body_bytes as u64);
    let mut resp = match g.route.access {
        _ if too_large => ApiError::too_large(g.max_body_bytes).into_response(),
        None => next.run(req).await,
        Some(needs) => {
            let h = req.headers();
            let text = |name: header::HeaderName| h.get(name).and_then(|v| v.to_str().ok());
            let creds = auth::Credentials {
                authorization: h
                    .get(header::AUTHORIZATION)
                    .map(|v| v.to_str().unwrap_or_default()),
                session_cookies: session::session_cookies(h),
                unsafe_method: !matches!(
                    *req.method(),
                    axum::http::Method::GET
                        | axum::http::Method::HEAD
                        | axum::http::Method::OPTIONS
                ),
                origin: text(header::ORIGIN),
                host: g.web.request_host(peer, h),
                csrf: h.get(session::CSRF_HEADER).and_then(|v| v.to_str().ok()),
            };
            match auth::authorize_request(&g.db, &g.web, &creds, needs).await {
                Ok(p) => {
                    req.extensions_mut().insert(p);
                    next.run(req).await
                }
                Err(AuthError::SessionEnded) => {
                    let mut r = ApiError::from(AuthError::SessionEnded).into_response();
                    if let Ok(v) = HeaderValue::from_str(&g.web.clear_cookie()) {
                        r.headers_mut().append(header::SET_COOKIE, v);
                    }
                    r
                }
                Err(e) => ApiError::from(e).into_response(),
            }
        }
    };
    resp.extensions_mut().insert(RouteLabel(g.route.path));
    resp
}

/// The authenticated caller of a guarded route.
#[derive(Debug, Clone)]
pub(crate) struct Caller(pub(crate) Principal);

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        parts
            .extensions
            .get::<Principal>()
            .cloned()
            .map(Caller)
            .ok_or_else(|| {
                tracing::error!(message = "a guarded handler ran without a principal");
                ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal: no caller")
            })
    }
}

async fn not_found() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "path: no such route (the API is described at /api/v1/openapi.json)",
    )
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method: not allowed on this path",
    )
}

// ---------------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------------

/// An error response: `{"error": "...", "errors": [...]}` (the list only when several).
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    messages: Vec<String>,
}

impl ApiError {
    pub(crate) fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            messages: vec![message.into()],
        }
    }

    pub(crate) fn bad(field: &str, reason: impl std::fmt::Display) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, format!("{field}: {reason}"))
    }

    fn many(status: StatusCode, messages: Vec<String>) -> ApiError {
        if messages.is_empty() {
            ApiError::new(status, "body: invalid")
        } else {
            ApiError { status, messages }
        }
    }

    /// A storage failure: logged with its detail, answered generically.
    pub(crate) fn store(e: &dyn std::fmt::Display) -> ApiError {
        tracing::error!(message = "API request failed in storage", error = %e);
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "storage: the request failed; see the gateway log",
        )
    }

    fn too_large(max: usize) -> ApiError {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("body: larger than {max} bytes"),
        )
    }

    pub fn status(&self) -> StatusCode {
        self.status
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body = json!({ "error": self.messages.join("; ") });
        if self.messages.len() > 1 {
            body["errors"] = json!(self.messages);
        }
        let mut resp = (self.status, axum::Json(body)).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            resp.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        resp
    }
}

impl From<AuthError> for ApiError {
    fn from(e: AuthError) -> Self {
        match e {
            AuthError::Missing | AuthError::Invalid | AuthError::SessionEnded => {
                ApiError::new(StatusCode::UNAUTHORIZED, e.to_string())
            }
            AuthError::Forbidden { .. } | AuthError::Csrf(_) => {
                ApiError::new(StatusCode::FORBIDDEN, e.to_string())
            }
            AuthError::Store(e) => ApiError::store(&e),
        }
    }
}

impl From<QueryError> for ApiError {
    fn from(e: QueryError) -> Self {
        match e {
            QueryError::Bad { field, reason } => ApiError::bad(&field, reason),
            QueryError::NotFound(_) => ApiError::new(StatusCode::NOT_FOUND, e.to_string()),
            QueryError::Store(e) => ApiError::store(&e),
        }
    }
}

impl From<RegistryError> for ApiError {
    fn from(e: RegistryError) -> Self {
        match e {
            RegistryError::UnknownKind(_) | RegistryError::NotFound { .. } => {
                ApiError::new(StatusCode::NOT_FOUND, e.to_string())
            }
            RegistryError::Invalid(m) => ApiError::many(StatusCode::BAD_REQUEST, m),
            RegistryError::InUse(_) => ApiError::new(StatusCode::CONFLICT, e.to_string()),
            RegistryError::Store(e) => ApiError::store(&e),
        }
    }
}

impl From<InputsError> for ApiError {
    fn from(e: InputsError) -> Self {
        match e {
            InputsError::Invalid(m) => ApiError::many(StatusCode::BAD_REQUEST, m),
            InputsError::Store(e) => ApiError::store(&e),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        ApiError::store(&e)
    }
}

impl From<TokenError> for ApiError {
    fn from(e: TokenError) -> Self {
        match e {
            TokenError::BadName(_) => ApiError::new(StatusCode::BAD_REQUEST, e.to_string()),
            TokenError::Exists(_) => ApiError::new(StatusCode::CONFLICT, e.to_string()),
            TokenError::Random(_) | TokenError::Store(_) => ApiError::store(&e),
        }
    }
}

impl From<PathRejection> for ApiError {
    fn from(e: PathRejection) -> Self {
        ApiError::bad("path", e.body_text())
    }
}

// ---------------------------------------------------------------------------------------------
// Request helpers
// ---------------------------------------------------------------------------------------------

/// The query parameters of a request, in order.
#[derive(Debug, Clone, Default)]
pub(crate) struct Params(Vec<(String, String)>);

impl<S: Send + Sync> FromRequestParts<S> for Params {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        Query::<Vec<(String, String)>>::try_from_uri(&parts.uri)
            .map(|q| Params(q.0))
            .map_err(|e| ApiError::bad("query", e.body_text()))
    }
}

impl Params {
    /// Rejects parameters not in `allowed` and parameters given twice.
    pub(crate) fn allow(&self, allowed: &[&str]) -> Result<(), ApiError> {
        let mut seen = BTreeSet::new();
        for (k, _) in &self.0 {
            let shown: String = k.chars().take(40).filter(|c| !c.is_control()).collect();
            if !allowed.contains(&k.as_str()) {
                let known = if allowed.is_empty() {
                    "this operation takes none".to_owned()
                } else {
                    format!("known: {}", allowed.join(", "))
                };
                return Err(ApiError::bad(
                    &shown,
                    format!("unknown query parameter ({known})"),
                ));
            }
            if !seen.insert(k.as_str()) {
                return Err(ApiError::bad(&shown, "given more than once"));
            }
        }
        Ok(())
    }

    pub(crate) fn get(&self, k: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.as_str())
            .filter(|v| !v.is_empty())
    }

    pub(crate) fn required(&self, k: &str) -> Result<&str, ApiError> {
        self.get(k).ok_or_else(|| ApiError::bad(k, "required"))
    }

    /// An integer in `[min, max]`, `default` when absent.
    fn int(&self, k: &str, default: i64, min: i64, max: i64) -> Result<i64, ApiError> {
        match self.get(k) {
            None => Ok(default),
            Some(v) => match v.parse::<i64>() {
                Ok(n) if (min..=max).contains(&n) => Ok(n),
                _ => Err(ApiError::bad(
                    k,
                    format!("must be a whole number from {min} to {max}"),
                )),
            },
        }
    }
}

/// The media type of a request (lower case, parameters dropped).
fn media_type(headers: &HeaderMap) -> Option<String> {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.split(';')
                .next()
                .unwrap_or_default()
                .trim()
                .to_ascii_lowercase()
        })
}

fn require_media(headers: &HeaderMap, allowed: &[&str]) -> Result<(), ApiError> {
    match media_type(headers) {
        Some(m) if allowed.contains(&m.as_str()) => Ok(()),
        got => Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!(
                "content-type: expected {}, got {}",
                allowed.join(" or "),
                got.map_or("none".to_owned(), |g| format!(
                    "\"{}\"",
                    g.chars().take(60).collect::<String>()
                ))
            ),
        )),
    }
}

/// The body bytes, or 413 / 400.
pub(crate) fn body_bytes(
    body: Result<Bytes, BytesRejection>,
    max: usize,
) -> Result<Bytes, ApiError> {
    body.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::too_large(max)
        } else {
            ApiError::bad("body", e.body_text())
        }
    })
}

/// A JSON body (content type `application/json`) as a value.
pub(crate) fn json_value(
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
    max: usize,
) -> Result<Value, ApiError> {
    require_media(headers, &["application/json"])?;
    let bytes = body_bytes(body, max)?;
    serde_json::from_slice(&bytes).map_err(|e| ApiError::bad("body", format!("not JSON: {e}")))
}

/// Deserialises a value, naming the path of the first problem (`[2].from`, `role`).
pub(crate) fn typed<T: DeserializeOwned>(v: Value, prefix: &str) -> Result<T, String> {
    serde_path_to_error::deserialize(v).map_err(|e| {
        let path = e.path().to_string();
        let field = match (prefix.is_empty(), path == ".") {
            (true, true) => "body".to_owned(),
            (true, false) => path,
            (false, true) => prefix.to_owned(),
            (false, false) => format!("{prefix}.{path}"),
        };
        format!("{field}: {}", e.into_inner())
    })
}

fn now_ms() -> Ms {
    jiff::Timestamp::now().as_millisecond()
}

/// RFC 3339 with the offset of `tz` (`null` for an instant out of range).
pub(crate) fn time(ms: Ms, tz: &jiff::tz::TimeZone) -> Value {
    match jiff::Timestamp::from_millisecond(ms) {
        Ok(t) => Value::String(t.display_with_offset(tz.to_offset(t)).to_string()),
        Err(_) => Value::Null,
    }
}

/// `entity`, `from`, `to` of an indicator query: a registered entity and `from < to`.
pub(crate) fn period(
    s: &AppState,
    p: &Params,
    snap: &Snapshot,
) -> Result<(String, Ms, Ms), ApiError> {
    let entity = p.required("entity")?;
    registry::check_entity_path(entity).map_err(|r| ApiError::bad("entity", r))?;
    if !snap.entities.contains_key(entity) {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("entity: {entity} is not a registered entity"),
        ));
    }
    let from = indicators::parse_time("from", p.required("from")?, &s.tz)?;
    let to = indicators::parse_time("to", p.required("to")?, &s.tz)?;
    if from >= to {
        return Err(ApiError::bad("to", "must be after from"));
    }
    Ok((entity.to_owned(), from, to))
}

pub(crate) type Body = Result<Bytes, BytesRejection>;
pub(crate) type ApiResult = Result<Response, ApiError>;

pub(crate) fn ok(v: Value) -> ApiResult {
    Ok(axum::Json(v).into_response())
}

pub(crate) fn created(v: Value) -> ApiResult {
    Ok((StatusCode::CREATED, axum::Json(v)).into_response())
}

// ---------------------------------------------------------------------------------------------
// Public
// ---------------------------------------------------------------------------------------------

async fn healthz(State(s): State<AppState>, p: Params) -> ApiResult {
    p.allow(&[])?;
    match s.db.ping().await {
        Ok(()) => ok(json!({"status": "ok", "db": "ok", "backend": s.db.backend()})),
        Err(e) => {
            tracing::error!(message = "health check: database ping failed", error = %e);
            Ok((
                StatusCode::SERVICE_UNAVAILABLE,
                axum::Json(json!({
                    "status": "unavailable", "db": "error", "backend": s.db.backend(),
                    "error": "db: ping failed"
                })),
            )
                .into_response())
        }
    }
}

async fn metrics(State(s): State<AppState>, p: Params) -> ApiResult {
    p.allow(&[])?;
    Ok(([(header::CONTENT_TYPE, OPENMETRICS)], s.metrics.encode()).into_response())
}

async fn openapi(p: Params) -> ApiResult {
    p.allow(&[])?;
    Ok(([(header::CONTENT_TYPE, "application/json")], OPENAPI).into_response())
}

// ---------------------------------------------------------------------------------------------
// Entities, indicators, assessments, evidence
// ---------------------------------------------------------------------------------------------

fn entity_summary(e: &Entity) -> Value {
    let mut v = json!({
        "id": e.id,
        "kind": registry::entity_kind_name(e.kind),
        "parent": registry::parent_of(&e.id),
        "name_zh": e.name_zh,
        "name_en": e.name_en,
    });
    match e.kind {
        EntityKind::Equipment => {
            v["equipment_kind"] = json!(e.equipment_kind);
            v["product"] = json!(e.product);
        }
        EntityKind::Meter => {
            v["carrier"] = json!(e.carrier);
            v["unit"] = json!(e.unit);
        }
        _ => {}
    }
    v
}

fn entity_tree(snap: &Snapshot) -> Vec<Value> {
    let mut children: BTreeMap<&str, Vec<&Entity>> = BTreeMap::new();
    let mut roots = Vec::new();
    for e in snap.entities.values() {
        match registry::parent_of(&e.id).filter(|p| snap.entities.contains_key(*p)) {
            Some(p) => children.entry(p).or_default().push(e),
            None => roots.push(e),
        }
    }
    fn node(e: &Entity, children: &BTreeMap<&str, Vec<&Entity>>) -> Value {
        let mut v = entity_summary(e);
        let kids: Vec<Value> = children
            .get(e.id.as_str())
            .map(|k| k.iter().map(|c| node(c, children)).collect())
            .unwrap_or_default();
        v["children"] = Value::Array(kids);
        v
    }
    roots.iter().map(|e| node(e, &children)).collect()
}

async fn entities(State(s): State<AppState>, p: Params) -> ApiResult {
    p.allow(&["view"])?;
    let snap = s.registry.snapshot();
    match p.get("view").unwrap_or("flat") {
        "flat" => ok(json!({
            "entities": snap.entities.values().map(entity_summary).collect::<Vec<_>>()
        })),
        "tree" => ok(json!({ "entities": entity_tree(&snap) })),
        _ => Err(ApiError::bad("view", "must be flat or tree")),
    }
}

async fn indicators_get(State(s): State<AppState>, p: Params) -> ApiResult {
    p.allow(&["entity", "from", "to"])?;
    let snap = s.registry.snapshot();
    let (entity, from, to) = period(&s, &p, &snap)?;
    ok(indicators::indicators(&s.db, &snap, &s.tz, &entity, from, to).await?)
}

async fn series(
    State(s): State<AppState>,
    path: Result<Path<String>, PathRejection>,
    p: Params,
) -> ApiResult {
    let Path(id) = path?;
    p.allow(&["entity", "from", "to", "step"])?;
    if shopfloor_core::catalog::describe(&id, shopfloor_core::coefficients::DEFAULT_SET).is_none() {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!(
                "id: \"{}\" is not an indicator id",
                id.chars()
                    .take(60)
                    .filter(|c| !c.is_control())
                    .collect::<String>()
            ),
        ));
    }
    let snap = s.registry.snapshot();
    let (entity, from, to) = period(&s, &p, &snap)?;
    let step = p.required("step")?;
    if Gran::parse(step).is_none() {
        return Err(ApiError::bad("step", "must be minute, hour, day or month"));
    }
    ok(indicators::series(&s.db, &snap, &s.tz, &id, &entity, from, to, step).await?)
}

/// Assessment kinds (`/api/v1/assessments/{kind}`).
pub const ASSESSMENTS: [&str; 2] = ["digital_workshop", "green_factory"];

async fn assessment(
    State(s): State<AppState>,
    path: Result<Path<String>, PathRejection>,
    p: Params,
) -> ApiResult {
    let Path(kind) = path?;
    p.allow(&["entity", "from", "to"])?;
    if !ASSESSMENTS.contains(&kind.as_str()) {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("kind: not an assessment; one of {}", ASSESSMENTS.join(", ")),
        ));
    }
    let snap = s.registry.snapshot();
    let (entity, from, to) = period(&s, &p, &snap)?;
    ok(indicators::assessment(&s.db, &snap, &s.tz, &kind, &entity, from, to).await?)
}

async fn evidence(State(s): State<AppState>, p: Params) -> ApiResult {
    p.allow(&["entity", "from", "to"])?;
    let snap = s.registry.snapshot();
    let (entity, from, to) = period(&s, &p, &snap)?;
    let ev = indicators::evidence(&s.db, &snap, &s.tz, &entity, from, to).await?;
    let body = serde_json::to_vec_pretty(&ev).map_err(|e| ApiError::store(&e))?;
    let stamp = |ms: Ms| {
        jiff::Timestamp::from_millisecond(ms)
            .map(|t| t.strftime("%Y%m%dT%H%M%SZ").to_string())
            .unwrap_or_else(|_| ms.to_string())
    };
    // The entity path is `a-z 0-9 _ - /` only (checked above): safe in a header.
    let disposition = format!(
        "attachment; filename=\"evidence-{}-{}-{}.json\"",
        entity.replace('/', "_"),
        stamp(from),
        stamp(to)
    );
    let disposition = HeaderValue::from_str(&disposition)
        .unwrap_or_else(|_| HeaderValue::from_static("attachment"));
    Ok((
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            ),
            (header::CONTENT_DISPOSITION, disposition),
        ],
        body,
    )
        .into_response())
}

/// `GET /api/v1/reports?entity=&from=&to=&format=html|xlsx|csv|json&lang=zh-CN|en`: the
/// auditor's period report (docs/REPORTS.md), as a download.
/// `GET /api/v1/seals?entity=&from=&to=&evidence=true|false`: the seals of sealed days
/// (docs/GATEWAY.md, "Seals and verify"), every version; all parameters optional.
async fn seals(State(s): State<AppState>, p: Params) -> ApiResult {
    p.allow(&["entity", "from", "to", "evidence"])?;
    let entity = p.get("entity");
    if let Some(e) = entity {
        registry::check_entity_path(e).map_err(|r| ApiError::bad("entity", r))?;
        if !s.registry.snapshot().entities.contains_key(e) {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                format!("entity: {e} is not a registered entity"),
            ));
        }
    }
    let from = p
        .get("from")
        .map(|t| indicators::parse_time("from", t, &s.tz))
        .transpose()?;
    let to = p
        .get("to")
        .map(|t| indicators::parse_time("to", t, &s.tz))
        .transpose()?;
    if let (Some(a), Some(b)) = (from, to)
        && a >= b
    {
        return Err(ApiError::bad("to", "must be after from"));
    }
    let evidence = match p.get("evidence") {
        None | Some("false") => false,
        Some("true") => true,
        Some(_) => return Err(ApiError::bad("evidence", "must be true or false")),
    };
    let v = crate::seal::list(&s.db, &s.tz, entity, from, to, evidence)
        .await
        .map_err(|e| ApiError::store(&e))?;
    ok(v)
}

async fn report(State(s): State<AppState>, p: Params) -> ApiResult {
    p.allow(&["entity", "from", "to", "format", "lang"])?;
    let snap = s.registry.snapshot();
    let (entity, from, to) = period(&s, &p, &snap)?;
    let format = match p.get("format") {
        None => report::Format::Html,
        Some(f) => report::Format::parse(f)
            .ok_or_else(|| ApiError::bad("format", "must be one of html, xlsx, csv, json"))?,
    };
    let lang = match p.get("lang") {
        None => report::Lang::ZhCn,
        Some(l) => {
            report::Lang::parse(l).ok_or_else(|| ApiError::bad("lang", "must be zh-CN or en"))?
        }
    };
    let r = report::render(&s.db, &snap, &s.tz, &entity, from, to, format, lang).await?;
    // File names are ASCII (entity paths are `a-z 0-9 _ - /`).
    let disposition = HeaderValue::from_str(&format!("attachment; filename=\"{}\"", r.file_name))
        .unwrap_or_else(|_| HeaderValue::from_static("attachment"));
    Ok((
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static(r.content_type),
            ),
            (header::CONTENT_DISPOSITION, disposition),
        ],
        r.bytes,
    )
        .into_response())
}

// ---------------------------------------------------------------------------------------------
// Economic inputs
// ---------------------------------------------------------------------------------------------

fn inputs_json(r: &InputsRecord, tz: &jiff::tz::TimeZone) -> Value {
    json!({
        "entity": r.entity,
        "from": time(r.from, tz),
        "to": time(r.to, tz),
        "version": r.version,
        "doc": r.doc,
        "at": time(r.at, tz),
        "actor": r.actor,
        "source": r.source,
    })
}

async fn inputs_post(
    State(s): State<AppState>,
    Caller(who): Caller,
    p: Params,
    headers: HeaderMap,
    body: Body,
) -> ApiResult {
    p.allow(&[])?;
    let v = json_value(&headers, body, s.max_body_bytes)?;
    let items: Vec<(Loc, Value)> = match v {
        Value::Array(a) if a.is_empty() => {
            return Err(ApiError::bad("body", "an empty array stores nothing"));
        }
        Value::Array(a) => a
            .into_iter()
            .enumerate()
            .map(|(i, v)| (Loc::Index(i), v))
            .collect(),
        v @ Value::Object(_) => vec![(Loc::Body, v)],
        _ => {
            return Err(ApiError::bad(
                "body",
                "expected an object of economic inputs or an array of them",
            ));
        }
    };
    let mut parsed = Vec::with_capacity(items.len());
    let mut errors = Vec::new();
    for (loc, v) in items {
        let prefix = match &loc {
            Loc::Index(i) => format!("[{i}]"),
            _ => String::new(),
        };
        match typed::<EconomicInputs>(v, &prefix) {
            Ok(i) => parsed.push((loc, i)),
            Err(m) => errors.push(m),
        }
    }
    if !errors.is_empty() {
        return Err(ApiError::many(StatusCode::BAD_REQUEST, errors));
    }
    let snap = s.registry.snapshot();
    let stored = inputs::submit(&s.db, &snap, &parsed, now_ms(), &who.actor(), "api").await?;
    created(json!({
        "source": "api",
        "stored": stored.iter().map(|r| inputs_json(r, &s.tz)).collect::<Vec<_>>()
    }))
}

/// An import's file name: 1–128 printable characters without path separators.
fn check_file_name(name: &str) -> Result<(), ApiError> {
    if name.is_empty()
        || name.chars().count() > 128
        || name
            .chars()
            .any(|c| c.is_control() || c == '/' || c == '\\')
    {
        return Err(ApiError::bad(
            "name",
            "must be a file name of 1–128 printable characters without / or \\",
        ));
    }
    Ok(())
}

async fn inputs_import(
    State(s): State<AppState>,
    Caller(who): Caller,
    p: Params,
    headers: HeaderMap,
    body: Body,
) -> ApiResult {
    p.allow(&["format", "name"])?;
    let format = inputs::Format::parse(p.required("format")?)
        .ok_or_else(|| ApiError::bad("format", "must be csv or xlsx"))?;
    let name = p.required("name")?;
    check_file_name(name)?;
    match format {
        inputs::Format::Csv => require_media(
            &headers,
            &[
                "text/csv",
                "text/plain",
                "application/csv",
                "application/octet-stream",
            ],
        )?,
        inputs::Format::Xlsx => require_media(&headers, &[XLSX_MIME, "application/octet-stream"])?,
    }
    let bytes = body_bytes(body, s.max_body_bytes)?;
    let rows = inputs::parse(format, name, &bytes)?;
    let source = inputs::source(format, name);
    let snap = s.registry.snapshot();
    let stored = inputs::submit(&s.db, &snap, &rows, now_ms(), &who.actor(), &source).await?;
    created(json!({
        "source": source,
        "stored": stored.iter().map(|r| inputs_json(r, &s.tz)).collect::<Vec<_>>()
    }))
}

async fn inputs_history(State(s): State<AppState>, p: Params) -> ApiResult {
    p.allow(&["entity"])?;
    let entity = p.required("entity")?;
    registry::check_entity_path(entity).map_err(|r| ApiError::bad("entity", r))?;
    let records = s.db.inputs_history(entity).await?;
    ok(json!({
        "entity": entity,
        "records": records.iter().map(|r| inputs_json(r, &s.tz)).collect::<Vec<_>>()
    }))
}

// ---------------------------------------------------------------------------------------------
// Registry
// ---------------------------------------------------------------------------------------------

/// A registry id from the path: no control characters (no stored id has one, and PostgreSQL
/// refuses NUL in text), at most 1024 bytes.
fn check_path_id(id: &str) -> Result<(), ApiError> {
    if id.len() > 1024 || id.chars().any(char::is_control) {
        return Err(ApiError::bad(
            "id",
            "must have no control characters and at most 1024 bytes",
        ));
    }
    Ok(())
}

fn item_json(it: &RegistryItem, tz: &jiff::tz::TimeZone) -> Value {
    json!({
        "kind": it.kind,
        "id": it.id,
        "doc": it.doc,
        "updated_at": time(it.updated_at, tz),
        "updated_by": it.updated_by,
    })
}

async fn registry_list(
    State(s): State<AppState>,
    path: Result<Path<String>, PathRejection>,
    p: Params,
) -> ApiResult {
    let Path(kind) = path?;
    p.allow(&[])?;
    let items = s.registry.list(&kind).await?;
    ok(json!({
        "kind": kind,
        "items": items.iter().map(|i| item_json(i, &s.tz)).collect::<Vec<_>>()
    }))
}

async fn registry_get(
    State(s): State<AppState>,
    path: Result<Path<(String, String)>, PathRejection>,
    p: Params,
) -> ApiResult {
    let Path((kind, id)) = path?;
    check_path_id(&id)?;
    p.allow(&[])?;
    let item = s.registry.get(&kind, &id).await?;
    ok(item_json(&item, &s.tz))
}

async fn registry_put(
    State(s): State<AppState>,
    Caller(who): Caller,
    path: Result<Path<(String, String)>, PathRejection>,
    p: Params,
    headers: HeaderMap,
    body: Body,
) -> ApiResult {
    let Path((kind, id)) = path?;
    check_path_id(&id)?;
    p.allow(&[])?;
    if registry::Kind::parse(&kind).is_none() {
        return Err(RegistryError::UnknownKind(kind).into());
    }
    let doc = json_value(&headers, body, s.max_body_bytes)?;
    if !doc.is_object() {
        return Err(ApiError::bad(
            "body",
            "expected a JSON object (the document)",
        ));
    }
    if let Some(doc_id) = doc.get("id").and_then(Value::as_str)
        && doc_id != id
    {
        return Err(ApiError::bad(
            "id",
            format!("the document says \"{doc_id}\", the path \"{id}\""),
        ));
    }
    let change = s.registry.put(&kind, doc, &who.actor()).await?;
    let status = if change.before.is_none() {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((
        status,
        axum::Json(json!({
            "kind": kind, "id": id, "before": change.before, "after": change.after
        })),
    )
        .into_response())
}

async fn registry_delete(
    State(s): State<AppState>,
    Caller(who): Caller,
    path: Result<Path<(String, String)>, PathRejection>,
    p: Params,
) -> ApiResult {
    let Path((kind, id)) = path?;
    check_path_id(&id)?;
    p.allow(&[])?;
    let deleted = s.registry.delete(&kind, &id, &who.actor()).await?;
    ok(json!({ "kind": kind, "id": id, "deleted": deleted }))
}

// ---------------------------------------------------------------------------------------------
// Audit, quarantine, agents
// ---------------------------------------------------------------------------------------------

fn audit_json(a: &AuditEntry, tz: &jiff::tz::TimeZone) -> Value {
    json!({
        "id": a.id,
        "at": time(a.at, tz),
        "actor": a.actor,
        "kind": a.kind,
        "item": a.item,
        "before": a.before,
        "after": a.after,
    })
}

async fn audit(State(s): State<AppState>, p: Params) -> ApiResult {
    p.allow(&["kind", "item", "since", "limit"])?;
    let kind = p.get("kind");
    if let Some(k) = kind
        && (k.len() > 64
            || !k
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b == b'.' || b == b'_'))
    {
        return Err(ApiError::bad(
            "kind",
            "a kind prefix such as registry, registry.entity, inputs or token",
        ));
    }
    let item = p.get("item");
    if let Some(i) = item
        && (i.chars().count() > 200 || i.chars().any(char::is_control))
    {
        return Err(ApiError::bad("item", "at most 200 printable characters"));
    }
    let since = match p.get("since") {
        Some(t) => Some(indicators::parse_time("since", t, &s.tz)?),
        None => None,
    };
    let limit = p.int("limit", 100, 1, 1000)?;
    let entries =
        s.db.audit(&AuditFilter {
            kind_prefix: kind.map(str::to_owned),
            item: item.map(str::to_owned),
            since,
            limit,
        })
        .await?;
    ok(json!({
        "entries": entries.iter().map(|a| audit_json(a, &s.tz)).collect::<Vec<_>>()
    }))
}

fn quarantine_json(q: &QuarantineEntry, tz: &jiff::tz::TimeZone) -> Value {
    let r = &q.row;
    json!({
        "id": q.id,
        "received": time(r.received, tz),
        "topic": r.topic,
        "agent": r.agent,
        "seq": r.seq,
        "reason": r.reason,
        "detail": r.detail,
        "payload_bytes": r.payload.len(),
        "payload_base64": base64::engine::general_purpose::STANDARD.encode(&r.payload),
    })
}

async fn quarantine(State(s): State<AppState>, p: Params) -> ApiResult {
    p.allow(&["before", "limit"])?;
    let before = match p.get("before") {
        None => None,
        Some(_) => Some(p.int("before", 0, 1, i64::MAX)?),
    };
    let limit = p.int("limit", 50, 1, 500)?;
    let entries = s.db.list_quarantine(before, limit).await?;
    ok(json!({
        "entries": entries.iter().map(|q| quarantine_json(q, &s.tz)).collect::<Vec<_>>()
    }))
}

fn head_json(h: &AgentHead, tz: &jiff::tz::TimeZone) -> Value {
    json!({
        "agent": h.agent,
        "batches": h.batches,
        "first_seq": h.first_seq,
        "last_seq": h.last_seq,
        "last_hash": h.last_hash,
        "last_to": time(h.last_to, tz),
        "last_received": time(h.last_received, tz),
        "missing": h.missing,
    })
}

fn chain_json(c: &ChainEvent, tz: &jiff::tz::TimeZone) -> Value {
    json!({
        "agent": c.agent, "seq": c.seq, "at": time(c.at, tz), "kind": c.kind, "detail": c.detail
    })
}

async fn agents(State(s): State<AppState>, p: Params) -> ApiResult {
    p.allow(&[])?;
    let snap = s.registry.snapshot();
    let heads = s.db.agent_heads().await?;
    let events = s.db.chain_events(None, 100).await?;
    let by_agent: BTreeMap<&str, &AgentHead> =
        heads.iter().map(|h| (h.agent.as_str(), h)).collect();
    let registered: Vec<Value> = snap
        .agents
        .values()
        .map(|a| {
            json!({
                "id": a.id,
                "public_key": a.public_key,
                "scope": a.scope,
                "revoked": a.revoked,
                "ingest": by_agent.get(a.id.as_str()).map(|h| head_json(h, &s.tz)),
            })
        })
        .collect();
    let unregistered: Vec<Value> = heads
        .iter()
        .filter(|h| !snap.agents.contains_key(&h.agent))
        .map(|h| head_json(h, &s.tz))
        .collect();
    ok(json!({
        "agents": registered,
        "unregistered": unregistered,
        "chain_events": events.iter().map(|c| chain_json(c, &s.tz)).collect::<Vec<_>>(),
    }))
}

// ---------------------------------------------------------------------------------------------
// Tokens
// ---------------------------------------------------------------------------------------------

fn token_json(t: &TokenRow, tz: &jiff::tz::TimeZone) -> Value {
    json!({
        "name": t.name,
        "role": t.role,
        "created_at": time(t.created_at, tz),
        "created_by": t.created_by,
        "revoked_at": t.revoked_at.map(|ms| time(ms, tz)),
    })
}

async fn tokens_list(State(s): State<AppState>, p: Params) -> ApiResult {
    p.allow(&[])?;
    let tokens = s.db.tokens().await?;
    ok(json!({
        "tokens": tokens.iter().map(|t| token_json(t, &s.tz)).collect::<Vec<_>>()
    }))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NewToken {
    name: String,
    role: String,
}

async fn tokens_create(
    State(s): State<AppState>,
    Caller(who): Caller,
    p: Params,
    headers: HeaderMap,
    body: Body,
) -> ApiResult {
    p.allow(&[])?;
    let v = json_value(&headers, body, s.max_body_bytes)?;
    let req: NewToken = typed(v, "").map_err(|m| ApiError::new(StatusCode::BAD_REQUEST, m))?;
    let role = Role::parse(&req.role)
        .ok_or_else(|| ApiError::bad("role", "must be viewer, engineer, auditor or admin"))?;
    let token = auth::create_token(&s.db, &req.name, role, &who.actor()).await?;
    created(json!({ "name": req.name, "role": role.as_str(), "token": token }))
}

async fn tokens_revoke(
    State(s): State<AppState>,
    Caller(who): Caller,
    path: Result<Path<String>, PathRejection>,
    p: Params,
) -> ApiResult {
    let Path(name) = path?;
    p.allow(&[])?;
    // A name no token can have is not looked up (PostgreSQL refuses NUL in text).
    if auth::check_token_name(&name).is_ok()
        && s.db.token_revoke(&name, &who.actor(), now_ms()).await?
    {
        ok(json!({ "revoked": name }))
    } else {
        Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!(
                "name: no active token named \"{}\"",
                name.chars()
                    .take(64)
                    .filter(|c| !c.is_control())
                    .collect::<String>()
            ),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn route_table_is_consistent() {
        let mut seen = BTreeSet::new();
        for r in ROUTES {
            assert!(
                seen.insert((r.verb.as_str(), r.path)),
                "{} {} twice",
                r.verb.as_str(),
                r.path
            );
            assert_eq!(
                r.path.replace("{*", "{"),
                r.pattern.replace("{*", "{"),
                "{}",
                r.path
            );
            assert!(
                r.path.starts_with("/api/v1/") || r.access.is_none(),
                "{} is public",
                r.path
            );
        }
        // Only the documented operations are public.
        let public: Vec<&str> = ROUTES
            .iter()
            .filter(|r| r.access.is_none())
            .map(|r| r.path)
            .collect();
        assert_eq!(
            public,
            vec![
                "/healthz",
                "/metrics",
                "/api/v1/openapi.json",
                "/api/v1/login"
            ]
        );
        assert!(!ROUTES.iter().any(|r| r.path == "/"));
    }

    #[test]
    fn openapi_is_json() {
        let v: Value = serde_json::from_str(OPENAPI).unwrap();
        assert_eq!(
            v["openapi"].as_str().map(|s| s.starts_with("3.1")),
            Some(true)
        );
    }

    #[test]
    fn params() {
        let p = Params(vec![
            ("entity".into(), "p1".into()),
            ("x".into(), "1".into()),
        ]);
        assert_eq!(
            p.allow(&["entity"]).unwrap_err().messages,
            vec!["x: unknown query parameter (known: entity)"]
        );
        let p = Params(vec![
            ("limit".into(), "5".into()),
            ("limit".into(), "6".into()),
        ]);
        assert_eq!(
            p.allow(&["limit"]).unwrap_err().messages,
            vec!["limit: given more than once"]
        );
        let p = Params(vec![
            ("limit".into(), "0".into()),
            ("entity".into(), String::new()),
        ]);
        assert!(p.int("limit", 1, 1, 10).is_err());
        assert_eq!(
            p.required("entity").unwrap_err().messages,
            vec!["entity: required"]
        );
    }
}
