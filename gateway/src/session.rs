//! Dashboard sessions: password sign-in (`POST /api/v1/login`), the session cookie, CSRF
//! protection, sign-out (`POST /api/v1/logout`) and the login rate limiter.
//!
//! - Signing in checks the password ([`crate::users::verify_password`], argon2id) and creates a
//!   session: 32 random bytes (OS randomness) in unpadded base64url, sent once as the cookie
//!   `sf_session` (`HttpOnly; SameSite=Strict; Path=/`, `Secure` with `http.secure_cookies`).
//!   The store keeps only its SHA-256, the user, the creation, last-seen and expiry times and
//!   the SHA-256 of its CSRF token.
//! - The CSRF token is derived from the session id ([`csrf_token`]: SHA-256 of a fixed label
//!   and the id), so `GET /api/v1/session` can hand it out again after a page reload without
//!   the store keeping it; knowing it does not reveal the id.
//!
//! Invariants:
//! - A session ends at `created + http.session_max_s`, after `http.session_idle_s` without a
//!   request, on sign-out, and when its user is disabled or changes password (the store
//!   deletes the user's sessions in the same transaction). An ended session found on lookup is
//!   deleted; the housekeeping task purges the rest hourly.
//! - A cookie-authenticated POST, PUT or DELETE needs `X-CSRF-Token` equal to the session's
//!   token (compared as SHA-256 hashes in constant time) and, when an `Origin` header is
//!   present, the same host as the request: else 403 `csrf: …`.
//! - Answers to a wrong password and to an unknown (or disabled) user are byte-identical, and
//!   an unknown user is verified against a dummy hash of the same cost, so neither the answer
//!   nor its timing tells whether a user exists.
//! - The limiter ([`LoginLimiter`]) lives in memory, per process: after
//!   [`MAX_FAILURES`] failed logins within [`WINDOW_MS`] from one client address (IPv6: one
//!   /64) or for one user name, further attempts for that address or name get 429 with
//!   `Retry-After` until the oldest of those failures leaves the window; a successful login
//!   clears its name's failures. An attempt counts as failed from its start (taken back on
//!   success), so parallel attempts cannot pass the limit. Its memory is bounded
//!   ([`LIMITER_KEYS`] keys, oldest evicted).
//! - The client address is the socket's peer; `X-Forwarded-For` is honoured only when the peer
//!   is one of `http.trusted_proxies`.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex, PoisonError};

use axum::extract::{ConnectInfo, FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Deserialize;
use serde_json::json;
use sha2::{Digest, Sha256};
use shopfloor_store::{Ms, SessionRow, Store as _, StoreError};

use crate::api::{
    ApiError, ApiResult, AppState, Body, Caller, Params, body_bytes, json_value, time, typed,
};
use crate::auth::{AuthError, Principal, Via};
use crate::config::HttpSection;
use crate::db::Db;
use crate::metrics::{LOGIN_FAILED, LOGIN_OK, LOGIN_RATE_LIMITED};
use crate::model::Role;
use crate::users;

/// The session cookie's name.
pub const COOKIE: &str = "sf_session";
/// The CSRF header (case-insensitive, as every HTTP header).
pub const CSRF_HEADER: &str = "x-csrf-token";
/// Random bytes per session id.
const ID_BYTES: usize = 32;
/// Length of a session id's text (unpadded base64url of 32 bytes).
const ID_LEN: usize = 43;
/// `last_seen` is written at most this often per session (a write per request would queue
/// every dashboard request behind ingest on SQLite's one writer); the idle timeout is exact to
/// within this.
pub const TOUCH_EVERY_MS: Ms = 60_000;

/// Failed logins per address or name within [`WINDOW_MS`] before further attempts get 429.
pub const MAX_FAILURES: usize = 5;
/// The limiter's window: 15 minutes.
pub const WINDOW_MS: Ms = 15 * 60_000;
/// Most addresses and names the limiter remembers (the oldest are evicted beyond).
pub const LIMITER_KEYS: usize = 10_000;

/// The answer to every failed login (unknown user, wrong password, disabled user).
pub const LOGIN_FAILED_MESSAGE: &str = "login: unknown user name or wrong password";

/// A source of the current time (ms), replaceable in tests.
pub type Clock = Arc<dyn Fn() -> Ms + Send + Sync>;

/// The web sign-in settings and state of one gateway process.
pub struct WebAuth {
    /// `http.session_idle_s` in ms.
    pub idle_ms: Ms,
    /// `http.session_max_s` in ms.
    pub max_ms: Ms,
    /// Mark the cookie `Secure` (`http.secure_cookies`).
    pub secure_cookies: bool,
    /// Peers whose `X-Forwarded-For` and `X-Forwarded-Host` are believed.
    pub trusted_proxies: Vec<Cidr>,
    pub limiter: LoginLimiter,
    clock: Clock,
}

impl fmt::Debug for WebAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebAuth")
            .field("idle_ms", &self.idle_ms)
            .field("max_ms", &self.max_ms)
            .field("secure_cookies", &self.secure_cookies)
            .field("trusted_proxies", &self.trusted_proxies)
            .finish_non_exhaustive()
    }
}

impl Default for WebAuth {
    /// The defaults of `[http]` (docs/GATEWAY.md), with the system clock.
    fn default() -> Self {
        WebAuth {
            idle_ms: crate::config::DEFAULT_SESSION_IDLE_S as Ms * 1000,
            max_ms: crate::config::DEFAULT_SESSION_MAX_S as Ms * 1000,
            secure_cookies: false,
            trusted_proxies: Vec::new(),
            limiter: LoginLimiter::new(MAX_FAILURES, WINDOW_MS, LIMITER_KEYS),
            clock: Arc::new(|| jiff::Timestamp::now().as_millisecond()),
        }
    }
}

impl WebAuth {
    /// From a validated `[http]` section (an unparsable proxy entry was refused by
    /// `config::validate`; here it is skipped).
    pub fn new(http: &HttpSection) -> WebAuth {
        WebAuth {
            idle_ms: Ms::try_from(http.session_idle_s)
                .unwrap_or(Ms::MAX / 2000)
                .saturating_mul(1000),
            max_ms: Ms::try_from(http.session_max_s)
                .unwrap_or(Ms::MAX / 2000)
                .saturating_mul(1000),
            secure_cookies: http.secure_cookies,
            trusted_proxies: http
                .trusted_proxies
                .iter()
                .filter_map(|p| Cidr::parse(p).ok())
                .collect(),
            ..WebAuth::default()
        }
    }

    /// The same settings with another clock (tests).
    pub fn with_clock(mut self, clock: Clock) -> WebAuth {
        self.clock = clock;
        self
    }

    /// The current time (ms).
    pub fn now(&self) -> Ms {
        (self.clock)()
    }

    fn is_trusted(&self, peer: Option<IpAddr>) -> bool {
        peer.is_some_and(|p| self.trusted_proxies.iter().any(|c| c.contains(p)))
    }

    /// The client's address: the peer, or (from a trusted proxy) the last `X-Forwarded-For`
    /// entry that is not itself a trusted proxy.
    pub fn client_ip(&self, peer: Option<IpAddr>, headers: &HeaderMap) -> Option<IpAddr> {
        client_ip(peer, headers, &self.trusted_proxies)
    }

    /// The host the client addressed: `X-Forwarded-Host` from a trusted proxy, else `Host`.
    pub fn request_host<'a>(
        &self,
        peer: Option<IpAddr>,
        headers: &'a HeaderMap,
    ) -> Option<&'a str> {
        let host = |name: &str| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(|v| v.split(',').next().unwrap_or_default().trim())
        };
        if self.is_trusted(peer)
            && let Some(h) = host("x-forwarded-host")
        {
            return Some(h);
        }
        host("host")
    }

    /// `Set-Cookie` value of a new session.
    pub fn cookie(&self, id: &str) -> String {
        format!(
            "{COOKIE}={id}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}{}",
            self.max_ms / 1000,
            if self.secure_cookies { "; Secure" } else { "" }
        )
    }

    /// `Set-Cookie` value that removes the cookie.
    pub fn clear_cookie(&self) -> String {
        format!(
            "{COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0{}",
            if self.secure_cookies { "; Secure" } else { "" }
        )
    }
}

// ---------------------------------------------------------------------------------------------
// Ids, tokens, cookies
// ---------------------------------------------------------------------------------------------

/// SHA-256, 64 lowercase hex.
pub fn sha256_hex(text: &str) -> String {
    hex::encode(Sha256::digest(text.as_bytes()))
}

/// A new random session id.
pub fn new_session_id() -> Result<String, getrandom::Error> {
    let mut bytes = [0u8; ID_BYTES];
    getrandom::getrandom(&mut bytes)?;
    Ok(URL_SAFE_NO_PAD.encode(bytes))
}

/// Whether `text` has the shape of a session id (checked before any lookup).
pub fn looks_like_session_id(text: &str) -> bool {
    text.len() == ID_LEN
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// The CSRF token of a session: SHA-256 of a fixed label and the session id, unpadded
/// base64url. Only who holds the id (the cookie is `HttpOnly`) or the login answer can know it.
pub fn csrf_token(session_id: &str) -> String {
    let mut h = Sha256::new();
    h.update(b"shopfloor csrf v1\0");
    h.update(session_id.as_bytes());
    URL_SAFE_NO_PAD.encode(h.finalize())
}

/// The values of every cookie named `name` in `Cookie` header values (`a=1; b=2`).
pub fn cookie_values<'a>(
    headers: impl IntoIterator<Item = &'a str>,
    name: &'a str,
) -> Vec<&'a str> {
    headers
        .into_iter()
        .flat_map(|h| h.split(';'))
        .filter_map(|pair| pair.split_once('='))
        .filter(|(k, _)| k.trim() == name)
        .map(|(_, v)| v.trim().trim_matches('"'))
        .collect()
}

/// The `sf_session` cookies of a request.
pub fn session_cookies(headers: &HeaderMap) -> Vec<&str> {
    cookie_values(
        headers
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok()),
        COOKIE,
    )
}

/// Equality of two byte strings in time independent of where they differ.
pub fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

/// The `X-CSRF-Token` against the session's stored hash.
pub fn check_csrf(sent: Option<&str>, csrf_hash: &str) -> Result<(), String> {
    let Some(sent) = sent else {
        return Err(format!(
            "missing {CSRF_HEADER} header (a signed-in browser sends the token from POST \
             /api/v1/login or GET /api/v1/session)"
        ));
    };
    if ct_eq(sha256_hex(sent.trim()).as_bytes(), csrf_hash.as_bytes()) {
        Ok(())
    } else {
        Err(format!("{CSRF_HEADER} does not match this session"))
    }
}

/// An `Origin` header, when present, must name the host the request was sent to.
pub fn check_origin(origin: Option<&str>, host: Option<&str>) -> Result<(), String> {
    let Some(origin) = origin else {
        return Ok(());
    };
    let authority = origin
        .split_once("://")
        .map(|(_, rest)| rest.trim_end_matches('/'));
    match (authority, host) {
        (Some(a), Some(h)) if !a.is_empty() && a.eq_ignore_ascii_case(h.trim()) => Ok(()),
        _ => Err(format!(
            "origin {:?} is not this site; cross-site requests are refused",
            origin.chars().take(100).collect::<String>()
        )),
    }
}

// ---------------------------------------------------------------------------------------------
// Session lookup
// ---------------------------------------------------------------------------------------------

/// Whether a stored session is still alive at `now`.
fn alive(web: &WebAuth, s: &SessionRow, user: &shopfloor_store::UserRow, now: Ms) -> bool {
    now < s.expires_at
        && now - s.last_seen <= web.idle_ms
        && user.disabled_at.is_none()
        && user.password_changed_at <= s.created_at
}

/// The principal of a session cookie and the session's CSRF hash; an ended session is
/// deleted on the way.
pub async fn authenticate(
    db: &Db,
    web: &WebAuth,
    cookies: &[&str],
) -> Result<(Principal, String), AuthError> {
    let Some(id) = cookies.iter().copied().find(|c| looks_like_session_id(c)) else {
        return Err(AuthError::SessionEnded);
    };
    let id_hash = sha256_hex(id);
    let Some((s, user)) = db.session_get(&id_hash).await.map_err(AuthError::Store)? else {
        return Err(AuthError::SessionEnded);
    };
    let now = web.now();
    if !alive(web, &s, &user, now) {
        if let Err(e) = db.session_delete(&id_hash).await {
            tracing::warn!(error = %e, "cannot delete an ended session");
        }
        return Err(AuthError::SessionEnded);
    }
    if now - s.last_seen >= TOUCH_EVERY_MS
        && let Err(e) = db.session_touch(&id_hash, now).await
    {
        // The request is served; the session may end a minute early at worst.
        tracing::warn!(error = %e, "cannot record session activity");
    }
    let role = Role::parse(&user.role).ok_or_else(|| {
        AuthError::Store(StoreError::Corrupt(format!(
            "user {} has unknown role {:?}",
            user.name, user.role
        )))
    })?;
    Ok((
        Principal {
            name: user.name,
            role,
            via: Via::Session {
                id_hash,
                csrf: csrf_token(id),
            },
        },
        s.csrf_hash,
    ))
}

/// Whether the session with this id hash is still alive (the event stream ends when not).
pub async fn still_alive(db: &Db, web: &WebAuth, id_hash: &str) -> Result<bool, StoreError> {
    Ok(db
        .session_get(id_hash)
        .await?
        .is_some_and(|(s, u)| alive(web, &s, &u, web.now())))
}

/// Creates a session for `user`; returns the session id (the cookie) and the row stored.
pub async fn create(db: &Db, web: &WebAuth, user: &str) -> Result<(String, SessionRow), ApiError> {
    let id = new_session_id().map_err(|e| ApiError::store(&e))?;
    let now = web.now();
    let row = SessionRow {
        id_hash: sha256_hex(&id),
        user: user.to_owned(),
        created_at: now,
        last_seen: now,
        expires_at: now.saturating_add(web.max_ms),
        csrf_hash: sha256_hex(&csrf_token(&id)),
    };
    db.session_add(&row).await?;
    Ok((id, row))
}

// ---------------------------------------------------------------------------------------------
// Client address
// ---------------------------------------------------------------------------------------------

/// An address or a network (`10.0.0.0/8`, `fd00::/8`, `192.0.2.7`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    net: IpAddr,
    bits: u8,
}

impl Cidr {
    pub fn parse(text: &str) -> Result<Cidr, String> {
        let (addr, bits) = match text.trim().split_once('/') {
            Some((a, b)) => (a, Some(b)),
            None => (text.trim(), None),
        };
        let net: IpAddr = addr
            .parse()
            .map_err(|_| format!("{text:?} is not an IP address or network (a.b.c.d/n)"))?;
        let max = if net.is_ipv4() { 32 } else { 128 };
        let bits = match bits {
            None => max,
            Some(b) => b
                .parse::<u8>()
                .ok()
                .filter(|b| *b <= max)
                .ok_or_else(|| format!("{text:?}: the prefix length must be 0–{max}"))?,
        };
        Ok(Cidr { net, bits })
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.net, ip.to_canonical()) {
            (IpAddr::V4(n), IpAddr::V4(a)) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(self.bits)).unwrap_or(0);
                u32::from(n) & mask == u32::from(a) & mask
            }
            (IpAddr::V6(n), IpAddr::V6(a)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.bits))
                    .unwrap_or(0);
                u128::from(n) & mask == u128::from(a) & mask
            }
            _ => false,
        }
    }
}

/// See [`WebAuth::client_ip`].
pub fn client_ip(peer: Option<IpAddr>, headers: &HeaderMap, trusted: &[Cidr]) -> Option<IpAddr> {
    let peer = peer.map(|p| p.to_canonical());
    let is_trusted = |ip: IpAddr| trusted.iter().any(|c| c.contains(ip));
    let p = peer?;
    if !is_trusted(p) {
        return Some(p);
    }
    let mut client = p;
    let hops: Vec<&str> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .collect();
    for hop in hops.iter().rev() {
        match hop.trim().parse::<IpAddr>() {
            Ok(ip) => {
                client = ip.to_canonical();
                if !is_trusted(client) {
                    break;
                }
            }
            Err(_) => break,
        }
    }
    Some(client)
}

/// The socket peer of a request (absent when the router is served without connect info).
#[derive(Debug, Clone, Copy)]
pub struct Peer(pub Option<IpAddr>);

impl<S: Send + Sync> FromRequestParts<S> for Peer {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(Peer(
            parts
                .extensions
                .get::<ConnectInfo<SocketAddr>>()
                .map(|c| c.0.ip()),
        ))
    }
}

// ---------------------------------------------------------------------------------------------
// The login rate limiter
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Key {
    /// An IPv4 address, or the /64 of an IPv6 one (`None`: unknown peer).
    Ip(Option<IpAddr>),
    /// A user name as typed, lower-cased and cut to 64 characters.
    Name(String),
}

impl Key {
    fn ip(ip: Option<IpAddr>) -> Key {
        Key::Ip(ip.map(|ip| match ip.to_canonical() {
            IpAddr::V6(v6) => {
                let net = u128::from(v6) & (u128::MAX << 64);
                IpAddr::V6(Ipv6Addr::from(net))
            }
            v4 => v4,
        }))
    }

    fn name(name: &str) -> Key {
        Key::Name(name.chars().take(64).collect::<String>().to_lowercase())
    }
}

/// Failed logins per client address and per user name in a sliding window (in memory, per
/// process; see the module docs).
#[derive(Debug)]
pub struct LoginLimiter {
    max_failures: usize,
    window_ms: Ms,
    max_keys: usize,
    failures: Mutex<HashMap<Key, VecDeque<Ms>>>,
}

impl LoginLimiter {
    pub fn new(max_failures: usize, window_ms: Ms, max_keys: usize) -> LoginLimiter {
        LoginLimiter {
            max_failures: max_failures.max(1),
            window_ms,
            max_keys: max_keys.max(2),
            failures: Mutex::new(HashMap::new()),
        }
    }

    /// How long (ms) attempts from `ip` or for `name` must wait at `now`; `None`: they may try.
    pub fn check(&self, ip: Option<IpAddr>, name: &str, now: Ms) -> Option<Ms> {
        let map = self.failures.lock().unwrap_or_else(PoisonError::into_inner);
        self.wait(&map, ip, name, now)
    }

    fn wait(
        &self,
        map: &HashMap<Key, VecDeque<Ms>>,
        ip: Option<IpAddr>,
        name: &str,
        now: Ms,
    ) -> Option<Ms> {
        [Key::ip(ip), Key::name(name)]
            .iter()
            .filter_map(|k| map.get(k))
            .filter_map(|times| {
                let recent: Vec<Ms> = times
                    .iter()
                    .copied()
                    .filter(|t| now - t < self.window_ms)
                    .collect();
                (recent.len() >= self.max_failures)
                    .then(|| recent[recent.len() - self.max_failures] + self.window_ms - now)
            })
            .max()
    }

    /// One login attempt, atomically: `Some(wait)` when `ip` or `name` must wait; else the
    /// attempt is counted as failed at once (so parallel attempts cannot pass the limit while
    /// their passwords are being checked) and `None` is returned. A successful attempt is then
    /// taken back with [`LoginLimiter::succeeded`].
    pub fn attempt(&self, ip: Option<IpAddr>, name: &str, now: Ms) -> Option<Ms> {
        let mut map = self.failures.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(wait) = self.wait(&map, ip, name, now) {
            return Some(wait);
        }
        self.record(&mut map, ip, name, now);
        None
    }

    /// Records a failed login from `ip` for `name`.
    pub fn failed(&self, ip: Option<IpAddr>, name: &str, now: Ms) {
        let mut map = self.failures.lock().unwrap_or_else(PoisonError::into_inner);
        self.record(&mut map, ip, name, now);
    }

    fn record(
        &self,
        map: &mut HashMap<Key, VecDeque<Ms>>,
        ip: Option<IpAddr>,
        name: &str,
        now: Ms,
    ) {
        for key in [Key::ip(ip), Key::name(name)] {
            if !map.contains_key(&key) && map.len() >= self.max_keys {
                self.evict(map, now);
            }
            let times = map.entry(key).or_default();
            times.push_back(now);
            while times.len() > self.max_failures
                || times.front().is_some_and(|t| now - t >= self.window_ms)
            {
                times.pop_front();
            }
        }
    }

    /// The attempt of [`LoginLimiter::attempt`] at `at` succeeded: it is no failure of `ip`,
    /// and the failures of `name` are forgotten (the address's other failures are not).
    pub fn succeeded(&self, ip: Option<IpAddr>, name: &str, at: Ms) {
        let mut map = self.failures.lock().unwrap_or_else(PoisonError::into_inner);
        map.remove(&Key::name(name));
        let key = Key::ip(ip);
        if let Some(times) = map.get_mut(&key) {
            if let Some(i) = times.iter().rposition(|t| *t == at) {
                times.remove(i);
            }
            if times.is_empty() {
                map.remove(&key);
            }
        }
    }

    /// Keys remembered (tests, metrics).
    pub fn len(&self) -> usize {
        self.failures
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Drops keys whose failures left the window; if still full, the key with the oldest
    /// latest failure.
    fn evict(&self, map: &mut HashMap<Key, VecDeque<Ms>>, now: Ms) {
        map.retain(|_, t| t.back().is_some_and(|last| now - last < self.window_ms));
        while map.len() >= self.max_keys {
            let oldest = map
                .iter()
                .min_by_key(|(_, t)| t.back().copied().unwrap_or(Ms::MIN))
                .map(|(k, _)| k.clone());
            match oldest {
                Some(k) => {
                    map.remove(&k);
                }
                None => break,
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Handlers
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Login {
    name: String,
    password: String,
}

fn with_cookie(mut resp: Response, cookie: &str) -> Response {
    if let Ok(v) = HeaderValue::from_str(cookie) {
        resp.headers_mut().append(header::SET_COOKIE, v);
    }
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

/// `POST /api/v1/login` `{"name", "password"}`: sets the session cookie and answers
/// `{"user", "role", "csrf", "expires"}`.
pub(crate) async fn login(
    State(s): State<AppState>,
    Peer(peer): Peer,
    p: Params,
    headers: HeaderMap,
    body: Body,
) -> ApiResult {
    p.allow(&[])?;
    let web = &s.web;
    // A login from another site would sign the browser in as someone else (login CSRF).
    check_origin(
        headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()),
        web.request_host(peer, &headers),
    )
    .map_err(|e| ApiError::from(AuthError::Csrf(e)))?;
    let v = json_value(&headers, body, s.max_body_bytes)?;
    let req: Login = typed(v, "").map_err(|m| ApiError::new(StatusCode::BAD_REQUEST, m))?;
    let ip = web.client_ip(peer, &headers);
    let now = web.now();
    if let Some(wait) = web.limiter.attempt(ip, &req.name, now) {
        s.metrics.login(LOGIN_RATE_LIMITED);
        let secs = (wait + 999) / 1000;
        tracing::warn!(ip = ?ip, user = %shown(&req.name), "login: rate limited");
        let mut resp = ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            format!("login: too many failed attempts; try again in {secs} s"),
        )
        .into_response();
        if let Ok(v) = HeaderValue::from_str(&secs.max(1).to_string()) {
            resp.headers_mut().insert(header::RETRY_AFTER, v);
        }
        return Ok(resp);
    }
    let name = req.name.to_ascii_lowercase();
    let user = if users::check_user_name(&name).is_ok() {
        s.db.user_get(&name).await?
    } else {
        None
    };
    let hash = user.as_ref().map(|u| u.password_hash.clone());
    let verified = users::verify_password(hash, req.password).await;
    let user = user.filter(|u| verified && u.disabled_at.is_none());
    let Some(user) = user else {
        // Counted as failed by `attempt` already.
        s.metrics.login(LOGIN_FAILED);
        tracing::info!(ip = ?ip, user = %shown(&req.name), "login failed");
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            LOGIN_FAILED_MESSAGE,
        ));
    };
    let role = Role::parse(&user.role).ok_or_else(|| {
        ApiError::store(&format!(
            "user {} has unknown role {:?}",
            user.name, user.role
        ))
    })?;
    web.limiter.succeeded(ip, &req.name, now);
    // The browser's previous session (its cookie is replaced now) ends here.
    for old in session_cookies(&headers)
        .into_iter()
        .filter(|c| looks_like_session_id(c))
    {
        s.db.session_delete(&sha256_hex(old)).await?;
    }
    let (id, row) = create(&s.db, web, &user.name).await?;
    s.metrics.login(LOGIN_OK);
    tracing::info!(ip = ?ip, user = %user.name, "login");
    let resp = axum::Json(json!({
        "user": user.name,
        "role": role.as_str(),
        "csrf": csrf_token(&id),
        "expires": time(row.expires_at, &s.tz),
    }))
    .into_response();
    Ok(with_cookie(resp, &web.cookie(&id)))
}

/// A user name from a request, safe for a log line.
fn shown(name: &str) -> String {
    name.chars()
        .take(64)
        .filter(|c| !c.is_control())
        .collect::<String>()
}

/// `POST /api/v1/logout`: ends the caller's session (a token caller has none) and removes the
/// cookie.
pub(crate) async fn logout(
    State(s): State<AppState>,
    Caller(who): Caller,
    p: Params,
    body: Body,
) -> ApiResult {
    p.allow(&[])?;
    // Nothing is read from the body, but an oversized one is refused like everywhere.
    body_bytes(body, s.max_body_bytes)?;
    let ended = match &who.via {
        Via::Session { id_hash, .. } => s.db.session_delete(id_hash).await?,
        Via::Token => false,
    };
    if ended {
        tracing::info!(user = %who.name, "logout");
    }
    let resp = axum::Json(json!({ "ended": ended })).into_response();
    Ok(with_cookie(resp, &s.web.clear_cookie()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    #[test]
    fn ids_tokens_and_cookies() {
        let a = new_session_id().unwrap();
        let b = new_session_id().unwrap();
        assert_ne!(a, b);
        assert!(looks_like_session_id(&a), "{a}");
        assert!(!looks_like_session_id(&a[1..]));
        assert!(!looks_like_session_id(&format!("{}'", &a[1..])));
        let c = csrf_token(&a);
        assert_eq!(c, csrf_token(&a), "derived, so a reload gets it again");
        assert_ne!(c, csrf_token(&b));
        assert_eq!(c.len(), 43);
        assert!(!c.contains(&a) && sha256_hex(&a) != sha256_hex(&c));

        let v = cookie_values(
            [
                "lang=en; sf_session=abc ; other=\"x\"",
                "sf_session=\"def\"",
            ],
            COOKIE,
        );
        assert_eq!(v, vec!["abc", "def"]);
        assert!(cookie_values(["sf_sessionx=1; xsf_session=2", ""], COOKIE).is_empty());
        assert_eq!(cookie_values(["a=1;sf_session=="], COOKIE), vec!["="]);
        let mut h = HeaderMap::new();
        h.append(header::COOKIE, HeaderValue::from_static("a=1"));
        h.append(header::COOKIE, HeaderValue::from_static("sf_session=zz"));
        assert_eq!(session_cookies(&h), vec!["zz"]);

        let web = WebAuth::default();
        assert_eq!(
            web.cookie("ID"),
            "sf_session=ID; Path=/; HttpOnly; SameSite=Strict; Max-Age=43200"
        );
        let secure = WebAuth {
            secure_cookies: true,
            ..WebAuth::default()
        };
        assert!(secure.cookie("ID").ends_with("; Secure"));
        assert!(secure.clear_cookie().contains("Max-Age=0"));
    }

    #[test]
    fn csrf_comparison() {
        assert!(ct_eq(b"abc", b"abc"));
        assert!(!ct_eq(b"abc", b"abd"));
        assert!(!ct_eq(b"abc", b"ab"));
        assert!(ct_eq(b"", b""));
        let token = csrf_token("some-session-id");
        let stored = sha256_hex(&token);
        assert_eq!(check_csrf(Some(&token), &stored), Ok(()));
        assert_eq!(check_csrf(Some(&format!(" {token} ")), &stored), Ok(()));
        assert!(
            check_csrf(None, &stored)
                .unwrap_err()
                .starts_with("missing x-csrf-token header")
        );
        assert_eq!(
            check_csrf(Some("forged"), &stored).unwrap_err(),
            "x-csrf-token does not match this session"
        );
        // The stored hash itself is not the token.
        assert!(check_csrf(Some(&stored), &stored).is_err());
    }

    #[test]
    fn origins() {
        let host = Some("gw.plant.local:8080");
        assert!(check_origin(None, host).is_ok());
        assert!(check_origin(Some("http://gw.plant.local:8080"), host).is_ok());
        assert!(check_origin(Some("https://GW.plant.local:8080/"), host).is_ok());
        assert!(check_origin(Some("http://evil.example"), host).is_err());
        assert!(check_origin(Some("http://gw.plant.local"), host).is_err());
        assert!(check_origin(Some("null"), host).is_err());
        assert!(check_origin(Some("http://gw.plant.local:8080"), None).is_err());
    }

    #[test]
    fn networks_and_client_addresses() {
        let n = Cidr::parse("10.0.0.0/8").unwrap();
        assert!(n.contains("10.9.8.7".parse().unwrap()));
        assert!(n.contains("::ffff:10.1.1.1".parse().unwrap()));
        assert!(!n.contains("11.0.0.1".parse().unwrap()));
        assert!(
            Cidr::parse("0.0.0.0/0")
                .unwrap()
                .contains("8.8.8.8".parse().unwrap())
        );
        assert!(
            Cidr::parse("fd00::/8")
                .unwrap()
                .contains("fd12::1".parse().unwrap())
        );
        assert!(
            Cidr::parse("192.0.2.7")
                .unwrap()
                .contains("192.0.2.7".parse().unwrap())
        );
        assert!(Cidr::parse("10.0.0.0/33").is_err());
        assert!(Cidr::parse("proxy.local").is_err());

        let proxy: IpAddr = "10.0.0.2".parse().unwrap();
        let client: IpAddr = "198.51.100.9".parse().unwrap();
        let mut h = HeaderMap::new();
        h.insert(
            "x-forwarded-for",
            HeaderValue::from_static("203.0.113.1, 198.51.100.9, 10.0.0.3"),
        );
        // Not trusted: the header is ignored.
        assert_eq!(client_ip(Some(proxy), &h, &[]), Some(proxy));
        assert_eq!(client_ip(Some(client), &h, &[n]), Some(client));
        // Trusted: the last hop that is not a proxy (a spoofed first entry is not believed).
        assert_eq!(client_ip(Some(proxy), &h, &[n]), Some(client));
        h.insert("x-forwarded-for", HeaderValue::from_static("garbage"));
        assert_eq!(client_ip(Some(proxy), &h, &[n]), Some(proxy));
        assert_eq!(client_ip(None, &h, &[n]), None);
    }

    #[test]
    fn limiter_with_an_injected_clock() {
        let l = LoginLimiter::new(5, WINDOW_MS, 100);
        let ip = Some(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)));
        let other = Some(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 2)));
        let t0: Ms = 1_000_000;
        for i in 0..4 {
            l.failed(ip, "alice", t0 + i * 1000);
            assert_eq!(l.check(ip, "alice", t0 + i * 1000), None, "{i}");
        }
        l.failed(ip, "alice", t0 + 4000);
        // Five failures: the address and the name wait until the first leaves the window.
        assert_eq!(l.check(ip, "bob", t0 + 5000), Some(WINDOW_MS - 5000));
        assert_eq!(l.check(other, "ALICE", t0 + 5000), Some(WINDOW_MS - 5000));
        assert_eq!(l.check(other, "bob", t0 + 5000), None);
        // Once the first failure is out of the window, one more attempt is allowed.
        assert_eq!(l.check(ip, "alice", t0 + WINDOW_MS - 1), Some(1));
        assert_eq!(l.check(ip, "alice", t0 + WINDOW_MS), None);
        l.failed(ip, "alice", t0 + WINDOW_MS);
        assert_eq!(l.check(ip, "alice", t0 + WINDOW_MS), Some(1000));
        // A success clears the name, not the address's other failures.
        l.succeeded(ip, "Alice", t0);
        assert_eq!(l.check(other, "alice", t0 + WINDOW_MS), None);
        assert!(l.check(ip, "carol", t0 + WINDOW_MS).is_some());
        // IPv6 addresses count per /64.
        let a: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
        for i in 0..5 {
            l.failed(Some(a), &format!("u{i}"), t0);
        }
        assert!(l.check(Some(b), "nobody", t0).is_some());
        assert!(
            l.check(Some("2001:db8:1:3::1".parse().unwrap()), "nobody", t0)
                .is_none()
        );
    }

    #[test]
    fn parallel_attempts_count_before_their_result() {
        let l = LoginLimiter::new(5, WINDOW_MS, 100);
        let ip = Some(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)));
        // Five attempts in flight at once: the sixth waits, before any password is checked.
        for i in 0..5 {
            assert_eq!(l.attempt(ip, &format!("u{i}"), 1000), None, "{i}");
        }
        assert_eq!(l.attempt(ip, "u9", 1000), Some(WINDOW_MS));
        // One of them succeeds: it is taken back, so one more attempt may start.
        l.succeeded(ip, "u2", 1000);
        assert_eq!(l.attempt(ip, "u9", 1001), None);
        assert!(l.attempt(ip, "u9", 1002).is_some());
        // A success of an address with no other failures leaves nothing behind.
        let lone = Some(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 77)));
        assert_eq!(l.attempt(lone, "ok", 5), None);
        let keys = l.len();
        l.succeeded(lone, "ok", 5);
        assert_eq!(l.len(), keys - 2);
    }

    #[test]
    fn limiter_memory_is_bounded() {
        let l = LoginLimiter::new(5, WINDOW_MS, 50);
        for i in 0..1000u32 {
            let ip = IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i));
            l.failed(Some(ip), &format!("user{i}"), Ms::from(i));
            assert!(l.len() <= 50, "{}", l.len());
        }
        // The newest are kept.
        let last = IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + 999));
        for _ in 0..4 {
            l.failed(Some(last), "x", 1000);
        }
        assert!(l.check(Some(last), "y", 1000).is_some());
        // Long after the window everything can go.
        l.failed(None, "late", 10 * WINDOW_MS);
        assert!(l.len() <= 50);
    }
}
