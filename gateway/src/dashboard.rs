//! The web dashboard: its embedded assets (`GET /`, `GET /assets/{file}`, no file is read from
//! disk or the internet at run time) and the read-only API operations that only the dashboard
//! needs (`session`, `overview`, `timeline`, `live`, `events`). The operations are
//! rows of [`crate::api::ROUTES`] like every other, so the role guard, the request counter and
//! the OpenAPI document cover them.
//!
//! Invariants: every page of the dashboard is served from the binary with a strict
//! Content-Security-Policy (scripts and styles from this origin only, no inline script); the
//! dashboard signs in with a user name and password ([`crate::session`]): its only credential
//! is the `HttpOnly` session cookie, which scripts cannot read, and it sends the session's
//! CSRF token (kept in memory, never in storage) on every POST, PUT and DELETE. An event
//! stream ends when its session ends.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use shopfloor_core::evidence::State as MachineState;
use shopfloor_store::{Ms, Store as _};

use crate::api::{ApiError, ApiResult, AppState, Caller, Params, ok, period};
use crate::auth::{self, Permission, Via};
use crate::evidence as ev;
use crate::indicators;
use crate::model::EntityKind;
use crate::report;
use crate::session;

// ---------------------------------------------------------------------------------------------
// Assets
// ---------------------------------------------------------------------------------------------

/// One embedded file.
#[derive(Debug)]
pub struct Asset {
    pub name: &'static str,
    pub content_type: &'static str,
    pub bytes: &'static [u8],
}

macro_rules! asset {
    ($name:literal, $ct:literal) => {
        Asset {
            name: $name,
            content_type: $ct,
            bytes: include_bytes!(concat!("../assets/", $name)),
        }
    };
}

/// Every file the dashboard loads (ECharts is vendored: `assets/vendor/`).
pub const ASSETS: &[Asset] = &[
    asset!("index.html", "text/html; charset=utf-8"),
    asset!("app.js", "text/javascript; charset=utf-8"),
    asset!("i18n.js", "text/javascript; charset=utf-8"),
    asset!("app.css", "text/css; charset=utf-8"),
    asset!("favicon.svg", "image/svg+xml"),
    asset!("vendor/echarts.min.js", "text/javascript; charset=utf-8"),
];

/// Scripts, styles, images and connections from this origin only; no inline script, no
/// framing. Inline styles are allowed: ECharts writes `style` attributes into its tooltips.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; \
                   connect-src 'self'; font-src 'self'; base-uri 'none'; form-action 'self'; \
                   frame-ancestors 'none'";

fn asset_response(a: &Asset) -> Response {
    let etag = concat!("\"", env!("CARGO_PKG_VERSION"), "\"");
    (
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static(a.content_type),
            ),
            (
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static(CSP),
            ),
            (
                header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            ),
            (
                header::REFERRER_POLICY,
                HeaderValue::from_static("no-referrer"),
            ),
            (header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY")),
            // Assets change with the binary: revalidate, cheap with the version as ETag.
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
            (header::ETAG, HeaderValue::from_static(etag)),
        ],
        a.bytes,
    )
        .into_response()
}

fn find_asset(name: &str) -> Option<&'static Asset> {
    ASSETS.iter().find(|a| a.name == name)
}

/// `GET /`: the dashboard's single page.
pub(crate) async fn index() -> Response {
    match find_asset("index.html") {
        Some(a) => asset_response(a),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

/// `GET /assets/{*file}`.
pub(crate) async fn asset(Path(file): Path<String>) -> Response {
    match find_asset(&file) {
        Some(a) => asset_response(a),
        None => {
            ApiError::new(StatusCode::NOT_FOUND, "file: no such dashboard asset").into_response()
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Session
// ---------------------------------------------------------------------------------------------

/// `GET /api/v1/session`: who the caller is (`kind` `token` or `user`) and what it may do (the
/// dashboard shows only the actions the role allows; the API enforces them regardless); for a
/// cookie session also its CSRF token (after a page reload the script has lost it).
pub(crate) async fn session(Caller(p): Caller, params: Params) -> ApiResult {
    params.allow(&[])?;
    let permissions: Vec<Value> = Permission::ALL
        .iter()
        .filter(|x| auth::allows(p.role, **x))
        .map(|x| json!(x.as_str()))
        .collect();
    let mut out = json!({
        "name": p.name,
        "kind": p.kind(),
        "role": p.role.as_str(),
        "permissions": permissions,
        "clock": data_clock(),
    });
    if let Via::Session { csrf, .. } = &p.via {
        out["csrf"] = json!(csrf);
    }
    ok(out)
}

// ---------------------------------------------------------------------------------------------
// Overview
// ---------------------------------------------------------------------------------------------

fn state_name(s: MachineState) -> &'static str {
    match s {
        MachineState::Producing => "producing",
        MachineState::Setup => "setup",
        MachineState::Delay => "delay",
        MachineState::Idle => "idle",
        MachineState::PlannedDown => "planned_down",
        MachineState::Offline => "offline",
    }
}

/// Regional plan targets apply to parks (the city's figure is over its enterprises), but a park
/// operator compares every enterprise with them: an enterprise indicator without a target of
/// its own gets the park's, marked `"from": <park>`, with `met` judged on the enterprise's value.
fn inherit_targets(child: &mut Value, park: &Value, park_id: &str) {
    let Some(inds) = child.get("indicators").and_then(Value::as_object).cloned() else {
        return;
    };
    for (id, ind) in &inds {
        if !ind.get("target").is_some_and(Value::is_null) {
            continue;
        }
        let Some(t) = park["indicators"][id]["target"].as_object() else {
            continue;
        };
        let mut t = t.clone();
        let cmp = t.get("comparison").and_then(Value::as_str).unwrap_or("");
        let goal = t.get("value").and_then(Value::as_f64);
        let actual = if cmp.starts_with("change") {
            inds.get(&format!("{id}_change"))
                .and_then(|c| c["value"].as_f64())
        } else {
            ind["value"].as_f64()
        };
        let met = match (actual, goal) {
            (Some(a), Some(g)) if a.is_finite() => Some(match cmp {
                "le" | "change_le" => a <= g,
                _ => a >= g,
            }),
            _ => None,
        };
        t.insert("met".into(), json!(met));
        t.insert("from".into(), json!(park_id));
        child["indicators"][id]["target"] = Value::Object(t);
    }
}

/// `GET /api/v1/overview?entity=&from=&to=`: what an entity page shows, from one evidence
/// build and one engine run (so every figure equals `GET /api/v1/indicators`): the entity's
/// indicators; at park level each enterprise's indicators; below it, per equipment the
/// seconds in each state (the loss breakdown) and its key-process and control facts (the NC
/// rate's list), and per carrier the energy balance of the auditor's report (`report::doc`).
pub(crate) async fn overview(State(s): State<AppState>, p: Params) -> ApiResult {
    p.allow(&["entity", "from", "to"])?;
    let snap = s.registry.snapshot();
    let (entity, from, to) = period(&s, &p, &snap)?;
    let e = ev::build(&s.db, &snap, &s.tz, &entity, from, to).await?;
    let report = indicators::compute(&e)?;
    let main = indicators::report_json(&snap, &s.tz, &entity, from, to, &report);
    let children: Vec<Value> = report
        .enterprises
        .iter()
        .map(|r| {
            let mut v = indicators::report_json(&snap, &s.tz, &r.entity, from, to, r);
            inherit_targets(&mut v, &main, &entity);
            v
        })
        .collect();
    let is_park = snap
        .entities
        .get(&entity)
        .is_some_and(|x| x.kind == EntityKind::Park);
    let mut equipment = Vec::new();
    let mut totals: BTreeMap<&'static str, f64> = BTreeMap::new();
    if !is_park {
        let period_s = (to - from) as f64 / 1000.0;
        for q in &e.equipment {
            let mut states: BTreeMap<&'static str, f64> = BTreeMap::new();
            let mut covered = 0.0;
            for iv in &q.states {
                let secs = iv.to.duration_since(iv.from).as_secs_f64().max(0.0);
                covered += secs;
                *states.entry(state_name(iv.state)).or_default() += secs;
            }
            // Time no interval covers is offline (the engine's rule).
            *states.entry("offline").or_default() += (period_s - covered).max(0.0);
            for (k, v) in &states {
                *totals.entry(k).or_default() += v;
            }
            let reg = snap.entities.get(&q.id);
            equipment.push(json!({
                "id": q.id,
                "name_zh": reg.and_then(|r| r.name_zh.clone()),
                "name_en": reg.and_then(|r| r.name_en.clone()),
                "kind": q.kind,
                "control": q.control,
                "key_process": q.key_process,
                "networked": q.networked,
                "states_s": states,
            }));
        }
    }
    // The energy balance of the auditor's report: the same rows, coefficients and sources.
    let rows = report::doc::indicator_rows(&main);
    let energy = report::doc::energy(report::Lang::ZhCn, &e, &rows)?;
    let carriers: Vec<Value> = energy
        .rows
        .iter()
        .filter(|c| c.quantity.is_some())
        .map(|c| {
            json!({
                "carrier": c.carrier,
                "indicator": c.indicator,
                "name_zh": c.name_zh,
                "name_en": c.name_en,
                "unit": c.unit,
                "consumption": c.quantity,
                "kgce_per_unit": c.kgce_per_unit.as_ref().and_then(|k| k.value),
                "kgce": c.kgce,
                "share": c.share,
            })
        })
        .collect();
    ok(json!({
        "entity": entity,
        "indicators": main,
        "enterprises": children,
        "equipment": equipment,
        "state_totals_s": totals,
        "carriers": carriers,
    }))
}

// ---------------------------------------------------------------------------------------------
// Timeline and live equipment
// ---------------------------------------------------------------------------------------------

/// Longest period of a timeline (raw intervals are kept for the minute retention only).
const TIMELINE_MAX_MS: Ms = 7 * 86_400_000;
/// Most equipment on one timeline.
const TIMELINE_MAX_EQUIPMENT: usize = 100;

/// `GET /api/v1/timeline?entity=&from=&to=`: the raw state intervals of the entity's equipment
/// (at most 100, ordered by id) clipped to a period of at most 7 days.
pub(crate) async fn timeline(State(s): State<AppState>, p: Params) -> ApiResult {
    p.allow(&["entity", "from", "to"])?;
    let snap = s.registry.snapshot();
    let (entity, from, to) = period(&s, &p, &snap)?;
    if to - from > TIMELINE_MAX_MS {
        return Err(ApiError::bad("to", "a timeline covers at most 7 days"));
    }
    let ids: Vec<&String> = snap
        .entities
        .values()
        .filter(|e| e.kind == EntityKind::Equipment && ev::under_or_self(&e.id, &entity))
        .map(|e| &e.id)
        .collect();
    let truncated = ids.len() > TIMELINE_MAX_EQUIPMENT;
    let mut rows = Vec::new();
    for id in ids.into_iter().take(TIMELINE_MAX_EQUIPMENT) {
        let slice =
            s.db.raw_slice(id, from, to)
                .await
                .map_err(|e| ApiError::store(&e))?;
        let intervals: Vec<Value> = slice
            .states
            .iter()
            .filter(|r| r.to > from && r.from < to)
            .map(|r| json!([r.from.max(from), r.to.min(to), r.state]))
            .collect();
        let reg = snap.entities.get(id.as_str());
        rows.push(json!({
            "id": id,
            "name_zh": reg.and_then(|r| r.name_zh.clone()),
            "name_en": reg.and_then(|r| r.name_en.clone()),
            "intervals": intervals,
        }));
    }
    ok(json!({
        "entity": entity,
        "from": from,
        "to": to,
        "truncated": truncated,
        "equipment": rows,
    }))
}

/// The data clock for the page: `now_ms` and the rate it advances at (1 unless the demo's
/// simulated clock is still catching up), so "today" and "now" on the page are the data's.
fn data_clock() -> Value {
    let now = shopfloor_clock::now();
    let speed = match shopfloor_clock::simulated() {
        Some(c) if now < jiff::Timestamp::now() => c.speed(),
        _ => 1.0,
    };
    json!({"now_ms": now.as_millisecond(), "speed": speed})
}

/// The data's clock (simulated in the demo, else real time), as ingest stamps receptions.
fn now_ms() -> Ms {
    shopfloor_clock::now_ms()
}

/// Samples points shown on the equipment page.
const LIVE_MAX_POINTS: usize = 40;

/// `GET /api/v1/live?entity=`: the equipment's last hour: its latest state interval,
/// counters and meters (last reading and change over the hour), the latest sample of each
/// point, and the health of its link and of the agents that report it.
pub(crate) async fn live(State(s): State<AppState>, p: Params) -> ApiResult {
    p.allow(&["entity"])?;
    let snap = s.registry.snapshot();
    let id = p.required("entity")?.to_owned();
    crate::registry::check_entity_path(&id).map_err(|r| ApiError::bad("entity", r))?;
    match snap.entities.get(&id) {
        Some(e) if e.kind == EntityKind::Equipment => {}
        Some(_) => return Err(ApiError::bad("entity", "is not an equipment entity")),
        None => {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                format!("entity: {id} is not a registered entity"),
            ));
        }
    }
    let now = now_ms();
    let from = now - 3_600_000;
    let slice =
        s.db.raw_slice(&id, from, now + 60_000)
            .await
            .map_err(|e| ApiError::store(&e))?;
    let state = slice
        .states
        .iter()
        .max_by_key(|r| (r.to, r.from))
        .map(|r| json!({"state": r.state, "from": r.from, "to": r.to}));
    // Readings are ordered by (role, point, t): the first and last in the hour per series.
    let mut series: BTreeMap<(&str, &str), (f64, f64, Ms)> = BTreeMap::new();
    for r in slice.readings.iter().filter(|r| r.t >= from) {
        series
            .entry((r.role.as_str(), r.point.as_str()))
            .and_modify(|x| {
                x.1 = r.v;
                x.2 = r.t;
            })
            .or_insert((r.v, r.v, r.t));
    }
    let counters: Vec<Value> = series
        .iter()
        .map(|((role, point), (first, last, t))| {
            json!({"role": role, "point": point, "value": last, "t": t, "change_1h": last - first})
        })
        .collect();
    let mut points: Vec<&str> = Vec::new();
    let mut link_events = 0_i64;
    let mut last_minute: Option<Ms> = None;
    for a in &slice.activity {
        last_minute = Some(last_minute.map_or(a.minute, |m: Ms| m.max(a.minute)));
        if a.point.is_empty() {
            link_events += a.count;
        } else if !points.contains(&a.point.as_str()) {
            points.push(&a.point);
        }
    }
    points.sort_unstable();
    let mut samples = Vec::new();
    for point in points.iter().take(LIVE_MAX_POINTS) {
        // The last sample: newest minute of this point first, then its last row.
        let recent = slice
            .activity
            .iter()
            .filter(|a| a.point == *point)
            .map(|a| a.minute)
            .max()
            .unwrap_or(from);
        let rows =
            s.db.samples(&id, point, recent, now + 60_000, 10_000)
                .await
                .map_err(|e| ApiError::store(&e))?;
        if let Some(r) = rows.last() {
            samples.push(json!({
                "point": r.point,
                "t": r.t,
                "value": r.num,
                "is_bool": r.is_bool,
                "text": r.text,
                "error": r.err,
            }));
        }
    }
    let heads = s.db.agent_heads().await.map_err(|e| ApiError::store(&e))?;
    let agents: Vec<Value> = snap
        .agents
        .values()
        .filter(|a| a.scope.iter().any(|sc| ev::under_or_self(&id, sc)))
        .map(|a| {
            let h = heads.iter().find(|h| h.agent == a.id);
            json!({
                "id": a.id,
                "revoked": a.revoked,
                "batches": h.map(|h| h.batches),
                "last_seq": h.map(|h| h.last_seq),
                "last_received": h.map(|h| h.last_received),
                "last_window_end": h.map(|h| h.last_to),
                "missing": h.map(|h| h.missing),
            })
        })
        .collect();
    ok(json!({
        "id": id,
        "now": now,
        "state": state,
        "counters": counters,
        "samples": samples,
        "link": {
            "events_1h": link_events,
            "last_data_minute": last_minute,
            "points_1h": points.len(),
        },
        "agents": agents,
    }))
}

// ---------------------------------------------------------------------------------------------
// Live updates
// ---------------------------------------------------------------------------------------------

/// How often the event stream looks for new batches.
const EVENTS_POLL: Duration = Duration::from_secs(2);
/// What an event stream watches.
struct Watch {
    db: crate::db::Db,
    web: std::sync::Arc<crate::session::WebAuth>,
    /// The SHA-256 of the stream's session id, for a cookie session (checked at every poll:
    /// one primary-key read).
    session: Option<String>,
}

/// `GET /api/v1/events`: Server-Sent Events. An `ingest` event whenever newly stored batches
/// appear (any replica's: the stream watches the database, not this process), with the number
/// of batches and the newest receive time; the dashboard then refreshes what it shows.
pub(crate) async fn events(
    State(s): State<AppState>,
    Caller(who): Caller,
    p: Params,
) -> Result<Response, ApiError> {
    p.allow(&[])?;
    let watch = Watch {
        db: s.db.clone(),
        web: s.web.clone(),
        session: match who.via {
            Via::Session { id_hash, .. } => Some(id_hash),
            Via::Token => None,
        },
    };
    let stream = futures_util::stream::unfold((watch, None::<(i64, Ms)>), |(w, seen)| async move {
        let mut seen = seen;
        let db = w.db.clone();
        loop {
            // A cookie session's stream ends with the session (sign-out, expiry, a disabled
            // user, a new password); the dashboard then finds itself signed out.
            if let Some(id_hash) = &w.session
                && !session::still_alive(&w.db, &w.web, id_hash)
                    .await
                    .unwrap_or(true)
            {
                return None;
            }
            let now = match db.agent_heads().await {
                Ok(h) => Some((
                    h.iter().map(|x| x.batches).sum::<i64>(),
                    h.iter().map(|x| x.last_received).max().unwrap_or(0),
                )),
                Err(e) => {
                    tracing::warn!(message = "event stream: cannot read agent heads", error = %e);
                    None
                }
            };
            if let Some(n) = now
                && seen != Some(n)
            {
                let first = seen.is_none();
                seen = Some(n);
                let ev = Event::default()
                    .event(if first { "hello" } else { "ingest" })
                    .data(json!({"batches": n.0, "last_received": n.1}).to_string());
                return Some((Ok::<Event, Infallible>(ev), (w, seen)));
            }
            tokio::time::sleep(EVENTS_POLL).await;
        }
    });
    Ok(Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response())
}
