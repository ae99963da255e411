//! Verified ingest: MQTT deliveries → checked, decoded batches → one store transaction →
//! acknowledgements. The wire format and the verification steps are in docs/PROTOCOL.md
//! ("How a gateway verifies a batch", "Gateway verification and quarantine").
//!
//! - [`Trust`]: the agents the gateway accepts batches from (parsed public key, scopes, revoked
//!   flag), rebuilt from the registry snapshot and swapped atomically;
//! - [`check`]: pure verification and decoding of one payload into a [`NewBatch`] or a
//!   [`QuarantineRow`] with a stable reason code ([`REASONS`]);
//! - [`run`]: the ingest loop: groups deliveries, commits the good ones with one
//!   `Store::ingest` call and the bad ones with `Store::quarantine`, then acknowledges; the
//!   next group is checked while the previous one commits.
//!
//! Invariants:
//! - nothing is acknowledged before the transaction(s) holding it committed: stored batches,
//!   duplicates and quarantined payloads alike are acknowledged only after both the ingest and
//!   the quarantine transaction of their group succeeded; a failed commit is retried with
//!   backoff (the same group, nothing acknowledged meanwhile), so a crash at any point makes
//!   the broker redeliver and the store's `(agent, seq)` dedupe drops the copy;
//! - acknowledgements are sent in the order the deliveries arrived (MQTT 3.1.1 §4.6);
//! - a payload is stored as data only if every check passed: registered, not revoked agent,
//!   well-formed body, topic agent = body agent, valid signature with the registered key,
//!   devices inside the agent's scopes, times plausible. Everything else is quarantined with
//!   the field path and the reason, counted, and never used as data;
//! - [`check`] is pure (no I/O, no clock: the receive time is passed in) and never panics;
//! - a replay of another body under a stored `(agent, seq)` leaves the stored batch as it is
//!   and quarantines the replayed copy (`replayed_seq`).

use std::collections::{BTreeMap, VecDeque};
use std::future::Future;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, Instant};

use futures_util::StreamExt as _;
use futures_util::stream::FuturesOrdered;
use shopfloor_core::batch::{self, BatchError, Body, SampleValue, VerifyingKey};
use shopfloor_store::{
    Chain, DirtyRange, LinkRow, Ms, NewBatch, Outcome, QuarantineRow, ReadingRow, SampleRow,
    StateRow, Store,
};
use tokio::sync::mpsc;

use crate::config::IngestSection;
use crate::db::Db;
use crate::metrics::{CHAIN_FORK, CHAIN_GAP, Metrics};
use crate::model::{Agent, Snapshot};

// --- reason codes (docs/PROTOCOL.md, "Gateway verification and quarantine") ---

/// The topic is not `<prefix>/<agent>/batch`.
pub const BAD_TOPIC: &str = "bad_topic";
/// The payload is larger than `ingest.max_payload_bytes`.
pub const TOO_LARGE: &str = "too_large";
/// No agent with the topic's id is registered (or its registered key is unusable).
pub const UNKNOWN_AGENT: &str = "unknown_agent";
/// The agent is registered but revoked.
pub const REVOKED_AGENT: &str = "revoked_agent";
/// The payload is not a well-formed `shopfloor.batch/1` batch.
pub const MALFORMED: &str = "malformed";
/// `body.agent` differs from the agent named by the topic.
pub const AGENT_MISMATCH: &str = "agent_mismatch";
/// The signature does not verify with the agent's registered key.
pub const BAD_SIGNATURE: &str = "bad_signature";
/// A device outside the agent's registered scopes.
pub const DEVICE_OUT_OF_SCOPE: &str = "device_out_of_scope";
/// Sealed, or carrying times, further in the future than `ingest.max_future_s`.
pub const CLOCK_SKEW: &str = "clock_skew";
/// Another body under an `(agent, seq)` that is already stored.
pub const REPLAYED_SEQ: &str = "replayed_seq";
/// Signed with a key the registry lists as revoked for this agent.
pub const REVOKED_KEY: &str = "revoked_key";
/// Signed with a key retired by a rotation, received after its overlap window ended.
pub const EXPIRED_KEY: &str = "expired_key";

/// Every reason code, in the order of the checks (metrics pre-register them).
pub const REASONS: [&str; 12] = [
    BAD_TOPIC,
    TOO_LARGE,
    UNKNOWN_AGENT,
    REVOKED_AGENT,
    MALFORMED,
    AGENT_MISMATCH,
    REVOKED_KEY,
    EXPIRED_KEY,
    BAD_SIGNATURE,
    DEVICE_OUT_OF_SCOPE,
    CLOCK_SKEW,
    REPLAYED_SEQ,
];

/// A quarantine row keeps at most this many bytes of the payload.
pub const QUARANTINE_PAYLOAD_MAX: usize = 64 * 1024;

// --- trust ---

/// The keys of one registered agent: the current one, those retired by a rotation with the
/// end of their overlap window, and the revoked ones.
#[derive(Debug, Clone)]
pub struct AgentKeys {
    /// The registered key; `Err` names why it is unusable.
    pub current: Result<VerifyingKey, String>,
    /// Retired keys and the instant (ms) from which batches received are no longer accepted.
    pub previous: Vec<(VerifyingKey, Ms)>,
    /// Revoked keys: never accepted.
    pub revoked: Vec<VerifyingKey>,
}

/// Which registered key verified a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyUsed {
    Current,
    /// A key retired by a rotation, inside its overlap window.
    Previous,
}

impl AgentKeys {
    /// The keys of `agent`. Unparseable retired or revoked keys are skipped (the registry
    /// refuses them when written); an unparseable current key makes the agent untrusted.
    pub fn of(agent: &Agent) -> AgentKeys {
        let current = batch::parse_public_key(&agent.public_key).map_err(|e| {
            let why = match e {
                BatchError::BadKey(why) => why,
                other => other.to_string(),
            };
            format!("agent {:?}: public_key: {why}", agent.id)
        });
        let previous = agent
            .previous_keys
            .iter()
            .filter_map(|k| {
                let key = batch::parse_public_key(&k.public_key).ok()?;
                let until = k.until.parse::<jiff::Timestamp>().ok()?.as_millisecond();
                Some((key, until))
            })
            .collect();
        let revoked = agent
            .revoked_keys
            .iter()
            .filter_map(|k| batch::parse_public_key(k).ok())
            .collect();
        AgentKeys {
            current,
            previous,
            revoked,
        }
    }

    /// Finds the key that signed `opened` for a batch received at `received`: the current key,
    /// or a retired key inside its overlap window. A revoked key ([`REVOKED_KEY`]), a retired key
    /// after its window ([`EXPIRED_KEY`]) and no matching key ([`BAD_SIGNATURE`]) are refused
    /// with the detail naming the key. Revocation wins over everything else.
    pub fn check(
        &self,
        agent: &str,
        opened: &batch::Opened,
        received: Ms,
    ) -> Result<KeyUsed, Reject> {
        for k in &self.revoked {
            if opened.verify(k).is_ok() {
                return Err(reject(
                    REVOKED_KEY,
                    format!(
                        "sig: signed with {}, a key revoked for agent {agent:?} (the batch is \
                         kept in quarantine, never as data)",
                        batch::public_key_text(k)
                    ),
                ));
            }
        }
        let current = self.current.as_ref().map_err(|e| {
            reject(
                UNKNOWN_AGENT,
                format!("registry: {e} (the agent is not trusted until its key is fixed)"),
            )
        })?;
        if opened.verify(current).is_ok() {
            return Ok(KeyUsed::Current);
        }
        for (k, until) in &self.previous {
            if opened.verify(k).is_ok() {
                if received < *until {
                    return Ok(KeyUsed::Previous);
                }
                return Err(reject(
                    EXPIRED_KEY,
                    format!(
                        "sig: signed with {}, the key agent {agent:?} had before a rotation, \
                         accepted for batches received until {}; received {}",
                        batch::public_key_text(k),
                        show_ms(*until),
                        show_ms(received)
                    ),
                ));
            }
        }
        Err(reject(
            BAD_SIGNATURE,
            format!(
                "sig: the signature does not verify with the public key registered for agent \
                 {agent:?} (forged, altered, or signed with another key)"
            ),
        ))
    }
}

fn show_ms(ms: Ms) -> String {
    jiff::Timestamp::from_millisecond(ms)
        .map(|t| t.to_string())
        .unwrap_or_else(|_| ms.to_string())
}

/// One registered agent as ingest sees it.
struct TrustedAgent {
    keys: AgentKeys,
    /// Entity paths whose devices the agent may report.
    scope: Vec<String>,
    revoked: bool,
}

/// The agents the gateway trusts (keys and scopes), replaced whenever the registry changes.
/// Readers take a consistent snapshot (`Arc`) and never block a [`Trust::replace`] for longer
/// than a pointer copy.
#[derive(Default)]
pub struct Trust {
    agents: RwLock<Arc<BTreeMap<String, TrustedAgent>>>,
}

impl std::fmt::Debug for Trust {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let agents = self.current();
        f.debug_struct("Trust")
            .field("agents", &agents.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl Trust {
    pub fn new() -> Trust {
        Trust::default()
    }

    /// Replaces the trusted agents with those of `snapshot`. Returns one message per agent whose
    /// key cannot be parsed (that agent is then not trusted).
    pub fn replace(&self, snapshot: Arc<Snapshot>) -> Vec<String> {
        let mut problems = Vec::new();
        let mut agents = BTreeMap::new();
        for (id, agent) in &snapshot.agents {
            let keys = AgentKeys::of(agent);
            if let Err(msg) = &keys.current {
                problems.push(msg.clone());
            }
            agents.insert(
                id.clone(),
                TrustedAgent {
                    keys,
                    scope: agent.scope.clone(),
                    revoked: agent.revoked,
                },
            );
        }
        let mut slot = self.agents.write().unwrap_or_else(PoisonError::into_inner);
        *slot = Arc::new(agents);
        problems
    }

    fn current(&self) -> Arc<BTreeMap<String, TrustedAgent>> {
        self.agents
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

/// Whether `device` is `scope` itself or below it (`scope/…`).
fn in_scope(device: &str, scope: &str) -> bool {
    let scope = scope.trim_end_matches('/');
    device == scope
        || (device.len() > scope.len()
            && device.starts_with(scope)
            && device.as_bytes().get(scope.len()) == Some(&b'/'))
}

// --- check ---

/// The agent segment of `<prefix>/<agent>/batch`, if `topic` has that shape.
pub fn topic_agent<'t>(prefix: &str, topic: &'t str) -> Option<&'t str> {
    let rest = topic.strip_prefix(prefix)?.strip_prefix('/')?;
    let agent = rest.strip_suffix("/batch")?;
    if agent.is_empty() || agent.contains('/') {
        return None;
    }
    Some(agent)
}

/// Why a payload is refused: a reason code of [`REASONS`] and the detail naming the field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reject {
    pub reason: &'static str,
    pub detail: String,
}

fn reject(reason: &'static str, detail: impl Into<String>) -> Reject {
    Reject {
        reason,
        detail: detail.into(),
    }
}

fn malformed_from(e: &BatchError) -> Reject {
    match e {
        BatchError::Malformed(fe) if fe.path.is_empty() => {
            reject(MALFORMED, format!("payload: {}", fe.reason))
        }
        other => reject(MALFORMED, other.to_string()),
    }
}

/// Verifies and decodes one payload received on `topic` at `received`: the checks of
/// docs/PROTOCOL.md ("Gateway verification and quarantine") in their order. `Ok` is ready for
/// `Store::ingest`; `Err` is the quarantine row (reason code of [`REASONS`], detail naming the
/// field and the reason, at most [`QUARANTINE_PAYLOAD_MAX`] bytes of the payload). Pure.
#[allow(clippy::result_large_err)] // Both sides are moved into a store call right away.
pub fn check(
    trust: &Trust,
    cfg: &IngestSection,
    prefix: &str,
    topic: &str,
    payload: &[u8],
    received: Ms,
) -> Result<NewBatch, QuarantineRow> {
    let agent = topic_agent(prefix, topic);
    let mut seq = None;
    let result = check_inner(
        trust, cfg, agent, topic, prefix, payload, received, &mut seq,
    );
    result.map_err(|r| QuarantineRow {
        received,
        topic: topic.to_owned(),
        agent: agent.map(str::to_owned),
        seq,
        reason: r.reason.to_owned(),
        detail: r.detail,
        payload: payload[..payload.len().min(QUARANTINE_PAYLOAD_MAX)].to_vec(),
    })
}

#[allow(clippy::too_many_arguments)]
fn check_inner(
    trust: &Trust,
    cfg: &IngestSection,
    agent: Option<&str>,
    topic: &str,
    prefix: &str,
    payload: &[u8],
    received: Ms,
    seq_out: &mut Option<i64>,
) -> Result<NewBatch, Reject> {
    let agent = agent.ok_or_else(|| {
        reject(
            BAD_TOPIC,
            format!("topic: {topic:?} is not {prefix}/<agent>/batch"),
        )
    })?;
    if payload.len() > cfg.max_payload_bytes {
        return Err(reject(
            TOO_LARGE,
            format!(
                "payload: {} bytes, more than ingest.max_payload_bytes = {}",
                payload.len(),
                cfg.max_payload_bytes
            ),
        ));
    }
    let agents = trust.current();
    let trusted = agents.get(agent).ok_or_else(|| {
        reject(
            UNKNOWN_AGENT,
            format!("topic: agent {agent:?} is not registered at this gateway"),
        )
    })?;
    if trusted.revoked {
        return Err(reject(
            REVOKED_AGENT,
            format!("topic: agent {agent:?} is revoked in the registry"),
        ));
    }
    if let Err(e) = &trusted.keys.current {
        return Err(reject(
            UNKNOWN_AGENT,
            format!("registry: {e} (the agent is not trusted until its key is fixed)"),
        ));
    }
    let (opened, seq) = open_for(agent, payload, seq_out)?;
    trusted.keys.check(agent, &opened, received)?;

    let body = &opened.body;
    for (i, d) in body.devices.iter().enumerate() {
        if !trusted.scope.iter().any(|s| in_scope(&d.id, s)) {
            return Err(reject(
                DEVICE_OUT_OF_SCOPE,
                format!(
                    "body.devices[{i}].id: device {:?} is outside the scopes of agent {agent:?} \
                     ({})",
                    d.id,
                    if trusted.scope.is_empty() {
                        "none registered".to_owned()
                    } else {
                        trusted.scope.join(", ")
                    }
                ),
            ));
        }
    }

    let max_future_ms = i64::try_from(cfg.max_future_s.saturating_mul(1000)).unwrap_or(i64::MAX);
    let limit = received.saturating_add(max_future_ms);
    let times = TimeCheck {
        limit,
        received,
        max_future_s: cfg.max_future_s,
    };
    times.check("body.sealed", body.sealed)?;
    times.check("body.from", body.from)?;
    times.check("body.to", body.to)?;

    let rows = decode(body, &times)?;
    Ok(NewBatch {
        agent: agent.to_owned(),
        seq,
        body_hash: opened.body_hash.clone(),
        prev: body.prev.clone(),
        sealed: body.sealed,
        from: body.from,
        to: body.to,
        received,
        payload: payload.to_vec(),
        samples: rows.samples,
        states: rows.states,
        readings: rows.readings,
        links: rows.links,
        dirty: rows.dirty,
    })
}

/// The signature checks of [`check`] on one payload of `agent`, in its order: the batch opens
/// (shape, [`batch::open`]), its `seq` fits an `i64` (stored in `*seq_out` as soon as it is
/// known), `body.agent` is `agent`, and the signature verifies with `key` over the exact body
/// bytes. Returns the opened batch and its seq, or the reason code ([`MALFORMED`],
/// [`AGENT_MISMATCH`], [`BAD_SIGNATURE`]) and the detail that ingest would quarantine it with.
/// Shared by ingest and the auditor's report, which re-verifies stored payloads. Pure.
pub fn verify_signed(
    agent: &str,
    key: &VerifyingKey,
    payload: &[u8],
    seq_out: &mut Option<i64>,
) -> Result<(batch::Opened, i64), Reject> {
    let (opened, seq) = open_for(agent, payload, seq_out)?;
    opened.verify(key).map_err(|_| {
        reject(
            BAD_SIGNATURE,
            format!(
                "sig: the signature does not verify with the public key registered for agent \
                 {agent:?} (forged, altered, or signed with another key)"
            ),
        )
    })?;
    Ok((opened, seq))
}

/// [`verify_signed`] against all the keys of an agent ([`AgentKeys::check`]) for a batch
/// received at `received`.
pub fn verify_with_keys(
    agent: &str,
    keys: &AgentKeys,
    payload: &[u8],
    received: Ms,
    seq_out: &mut Option<i64>,
) -> Result<(batch::Opened, i64, KeyUsed), Reject> {
    let (opened, seq) = open_for(agent, payload, seq_out)?;
    let used = keys.check(agent, &opened, received)?;
    Ok((opened, seq, used))
}

/// The shape checks before any signature: the batch opens, its seq fits an `i64` (stored in
/// `*seq_out` as soon as it is known), and `body.agent` is `agent`.
fn open_for(
    agent: &str,
    payload: &[u8],
    seq_out: &mut Option<i64>,
) -> Result<(batch::Opened, i64), Reject> {
    let opened = batch::open(payload).map_err(|e| malformed_from(&e))?;
    let seq = i64::try_from(opened.body.seq).map_err(|_| {
        reject(
            MALFORMED,
            format!("body.seq: {} is larger than 2^63 - 1", opened.body.seq),
        )
    })?;
    *seq_out = Some(seq);
    if opened.body.agent != agent {
        return Err(reject(
            AGENT_MISMATCH,
            format!(
                "body.agent: {:?} differs from the topic's agent {agent:?}",
                opened.body.agent
            ),
        ));
    }
    Ok((opened, seq))
}

/// Plausible times: not before 1970 (roll-ups need calendar dates), not further ahead of the
/// gateway's clock than `ingest.max_future_s`.
struct TimeCheck {
    limit: Ms,
    received: Ms,
    max_future_s: u64,
}

impl TimeCheck {
    fn check(&self, path: &str, t: Ms) -> Result<(), Reject> {
        if t < 0 {
            return Err(reject(
                MALFORMED,
                format!("{path}: {t} is before 1970-01-01 (ms since the Unix epoch expected)"),
            ));
        }
        if t > self.limit {
            return Err(reject(
                CLOCK_SKEW,
                format!(
                    "{path}: {t} is {} s ahead of the gateway's clock ({}); at most \
                     ingest.max_future_s = {} s is accepted (check the agent's or the device's \
                     clock)",
                    (t - self.received) / 1000,
                    self.received,
                    self.max_future_s
                ),
            ));
        }
        Ok(())
    }
}

#[derive(Default)]
struct Rows {
    samples: Vec<SampleRow>,
    states: Vec<StateRow>,
    readings: Vec<ReadingRow>,
    links: Vec<LinkRow>,
    dirty: Vec<DirtyRange>,
}

/// `[lo, hi)` over everything a device delivered.
#[derive(Default)]
struct Span(Option<(Ms, Ms)>);

impl Span {
    fn add(&mut self, from: Ms, to_exclusive: Ms) {
        let to = to_exclusive.max(from.saturating_add(1));
        self.0 = Some(match self.0 {
            None => (from, to),
            Some((lo, hi)) => (lo.min(from), hi.max(to)),
        });
    }
}

fn state_name(s: shopfloor_core::evidence::State) -> &'static str {
    use shopfloor_core::evidence::State;
    match s {
        State::Producing => "producing",
        State::Setup => "setup",
        State::Delay => "delay",
        State::Idle => "idle",
        State::PlannedDown => "planned_down",
        State::Offline => "offline",
    }
}

/// The rows ingest stores for a body: samples, states, readings, links.
pub(crate) type StoredRows = (Vec<SampleRow>, Vec<StateRow>, Vec<ReadingRow>, Vec<LinkRow>);

/// The rows ingest stored for a batch it accepted, decoded again from its signed body (the
/// clock check, which depended on the receive time, is left out): what `verify` compares the
/// stored rows with.
pub(crate) fn decode_stored(body: &Body) -> Result<StoredRows, Reject> {
    let times = TimeCheck {
        limit: Ms::MAX,
        received: Ms::MAX,
        max_future_s: 0,
    };
    let r = decode(body, &times)?;
    Ok((r.samples, r.states, r.readings, r.links))
}

/// Decodes the body into store rows and dirty ranges, checking what `batch::open` leaves to
/// the gateway: one of `v`/`err` per sample, non-empty names, counter metadata, times.
fn decode(body: &Body, times: &TimeCheck) -> Result<Rows, Reject> {
    let mut rows = Rows::default();
    for (i, d) in body.devices.iter().enumerate() {
        let dp = format!("body.devices[{i}]");
        let mut span = Span::default();
        for (j, ps) in d.samples.iter().enumerate() {
            let pp = format!("{dp}.samples[{j}]");
            if ps.point.is_empty() {
                return Err(reject(MALFORMED, format!("{pp}.point: must not be empty")));
            }
            for (k, s) in ps.samples.iter().enumerate() {
                let sp = format!("{pp}.samples[{k}]");
                times.check(&format!("{sp}.t"), s.t)?;
                let (num, is_bool, text, err) = match (&s.v, &s.err) {
                    (Some(_), Some(_)) => {
                        return Err(reject(
                            MALFORMED,
                            format!("{sp}: has both v and err (exactly one is allowed)"),
                        ));
                    }
                    (None, None) => {
                        return Err(reject(
                            MALFORMED,
                            format!("{sp}: has neither v nor err (exactly one is required)"),
                        ));
                    }
                    (None, Some(e)) => (None, false, None, Some(e.clone())),
                    (Some(v), None) => match v {
                        SampleValue::Bool(b) => (Some(f64::from(u8::from(*b))), true, None, None),
                        SampleValue::Int(n) => (Some(*n as f64), false, None, None),
                        SampleValue::UInt(n) => (Some(*n as f64), false, None, None),
                        SampleValue::Float(x) => (Some(*x), false, None, None),
                        SampleValue::Text(t) => (None, false, Some(t.clone()), None),
                    },
                };
                span.add(s.t, s.t.saturating_add(1));
                rows.samples.push(SampleRow {
                    device: d.id.clone(),
                    point: ps.point.clone(),
                    t: s.t,
                    num,
                    is_bool,
                    text,
                    err,
                });
            }
        }
        for (j, s) in d.states.iter().enumerate() {
            let sp = format!("{dp}.states[{j}]");
            times.check(&format!("{sp}.from"), s.from)?;
            times.check(&format!("{sp}.to"), s.to)?;
            span.add(s.from, s.to);
            rows.states.push(StateRow {
                device: d.id.clone(),
                from: s.from,
                to: s.to,
                state: state_name(s.state).to_owned(),
            });
        }
        for (j, c) in d.counters.iter().enumerate() {
            let cp = format!("{dp}.counters[{j}]");
            if c.role.is_empty() {
                return Err(reject(MALFORMED, format!("{cp}.role: must not be empty")));
            }
            if c.point.is_empty() {
                return Err(reject(MALFORMED, format!("{cp}.point: must not be empty")));
            }
            if let Some(w) = c.width_bits
                && !(1..=64).contains(&w)
            {
                return Err(reject(
                    MALFORMED,
                    format!("{cp}.width_bits: {w} is not a register width (1 to 64)"),
                ));
            }
            if let Some(r) = c.rollover
                && r <= 0.0
            {
                return Err(reject(
                    MALFORMED,
                    format!("{cp}.rollover: {r} must be greater than 0"),
                ));
            }
            for (k, r) in c.readings.iter().enumerate() {
                times.check(&format!("{cp}.readings[{k}].t"), r.t)?;
                span.add(r.t, r.t.saturating_add(1));
                rows.readings.push(ReadingRow {
                    device: d.id.clone(),
                    role: c.role.clone(),
                    point: c.point.clone(),
                    t: r.t,
                    v: r.v,
                    width_bits: c.width_bits.map(i32::from),
                    rollover: c.rollover,
                });
            }
        }
        for (j, l) in d.links.iter().enumerate() {
            times.check(&format!("{dp}.links[{j}].t"), l.t)?;
            span.add(l.t, l.t.saturating_add(1));
            rows.links.push(LinkRow {
                device: d.id.clone(),
                t: l.t,
                up: l.up,
                detail: l.detail.clone(),
            });
        }
        if let Some((from, to)) = span.0 {
            rows.dirty.push(DirtyRange {
                device: d.id.clone(),
                from,
                to,
            });
        }
    }
    Ok(rows)
}

// --- the ingest loop ---

/// Acknowledges one delivery to whoever delivered it (the MQTT consumer sends the PUBACK).
/// Dropping it without [`Ack::send`] acknowledges nothing: the broker redelivers.
pub struct Ack(Option<Box<dyn FnOnce() + Send>>);

impl Ack {
    pub fn new(f: impl FnOnce() + Send + 'static) -> Ack {
        Ack(Some(Box::new(f)))
    }

    /// An acknowledgement that does nothing (deliveries that need none).
    pub fn none() -> Ack {
        Ack(None)
    }

    pub fn send(mut self) {
        if let Some(f) = self.0.take() {
            f();
        }
    }
}

impl std::fmt::Debug for Ack {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() { "Ack" } else { "Ack(none)" })
    }
}

/// One received message on its way to the store.
#[derive(Debug)]
pub struct Delivery {
    pub topic: String,
    pub payload: Vec<u8>,
    /// Gateway clock at reception (ms since the Unix epoch).
    pub received: Ms,
    pub ack: Ack,
}

/// The two store calls the ingest loop makes (implemented by every [`Store`]; tests can put a
/// failing store in front).
pub trait IngestStore: Send + Sync {
    fn commit_batches(
        &self,
        batches: &[NewBatch],
    ) -> impl Future<Output = shopfloor_store::Result<Vec<Outcome>>> + Send;
    fn commit_quarantine(
        &self,
        rows: &[QuarantineRow],
    ) -> impl Future<Output = shopfloor_store::Result<()>> + Send;
}

impl<S: Store> IngestStore for S {
    fn commit_batches(
        &self,
        batches: &[NewBatch],
    ) -> impl Future<Output = shopfloor_store::Result<Vec<Outcome>>> + Send {
        Store::ingest(self, batches)
    }
    fn commit_quarantine(
        &self,
        rows: &[QuarantineRow],
    ) -> impl Future<Output = shopfloor_store::Result<()>> + Send {
        Store::quarantine(self, rows)
    }
}

/// Retry delays after a failed commit: 100 ms doubling to 10 s.
const RETRY_MIN: Duration = Duration::from_millis(100);
const RETRY_MAX: Duration = Duration::from_secs(10);

/// The ingest loop: runs until every sender of `rx` is dropped (after committing and
/// acknowledging what was received). Groups up to `cfg.max_batches_per_commit` deliveries, or
/// what arrived within `cfg.commit_wait_ms` of the first; checks each ([`check`]), commits the
/// good ones with one `ingest` call and the bad ones with one `quarantine` call, and only then
/// acknowledges the whole group in arrival order. A failed commit is logged, counted and
/// retried with backoff; the group stays unacknowledged until it succeeds.
pub async fn run(
    db: Db,
    trust: Arc<Trust>,
    metrics: Arc<Metrics>,
    cfg: IngestSection,
    prefix: String,
    rx: mpsc::Receiver<Delivery>,
) {
    let mut cfg = cfg;
    cfg.commits_in_flight = Some(cfg.commits_in_flight.unwrap_or(match db {
        Db::Postgres(_) => 2,
        Db::Sqlite(_) => 1,
    }));
    run_with(&db, trust, metrics, cfg, prefix, rx).await;
}

/// [`run`] on any [`IngestStore`].
pub async fn run_with<S: IngestStore>(
    store: &S,
    trust: Arc<Trust>,
    metrics: Arc<Metrics>,
    cfg: IngestSection,
    prefix: String,
    mut rx: mpsc::Receiver<Delivery>,
) {
    let max = cfg.max_batches_per_commit.max(1);
    let depth = cfg.commits_in_flight.unwrap_or(1).max(1);
    let wait = Duration::from_millis(cfg.commit_wait_ms);
    let prefix: Arc<str> = Arc::from(prefix);
    let cfg = Arc::new(cfg);
    // Two stages: the next group is collected and checked (CPU: parsing, signatures) while the
    // store commits the previous one (I/O). One checked group waits at most; groups are
    // committed and acknowledged in the order they were received.
    let (checked_tx, mut checked_rx) = mpsc::channel::<Checked>(1);
    let collect_and_check = {
        let metrics = metrics.clone();
        async move {
            loop {
                let Some(first) = rx.recv().await else {
                    return;
                };
                let mut group = vec![first];
                let deadline = tokio::time::Instant::now() + wait;
                let mut closed = false;
                while group.len() < max {
                    match rx.try_recv() {
                        Ok(d) => {
                            group.push(d);
                            continue;
                        }
                        Err(mpsc::error::TryRecvError::Disconnected) => {
                            closed = true;
                            break;
                        }
                        Err(mpsc::error::TryRecvError::Empty) => {}
                    }
                    match tokio::time::timeout_at(deadline, rx.recv()).await {
                        Ok(Some(d)) => group.push(d),
                        Ok(None) => {
                            closed = true;
                            break;
                        }
                        Err(_) => break,
                    }
                }
                if let Some(checked) = check_group(&trust, &metrics, &cfg, &prefix, group).await
                    && checked_tx.send(checked).await.is_err()
                {
                    return;
                }
                if closed {
                    return;
                }
            }
        }
    };
    // Up to `commits_in_flight` groups are committed at once, on their own connections; a
    // group waits while one of its agents is in an earlier group still in flight, so each
    // agent's batches are stored in arrival order and the store ends up as after committing
    // the groups one by one (what a group writes is keyed by its agents or only appended).
    // Groups finish in arrival order: acknowledgements keep the order MQTT requires.
    let commit = async {
        let mut in_flight = FuturesOrdered::new();
        let mut agents_in_flight: VecDeque<Vec<String>> = VecDeque::new();
        let mut open = true;
        loop {
            tokio::select! {
                biased;
                Some(stored) = in_flight.next(), if !in_flight.is_empty() => {
                    agents_in_flight.pop_front();
                    finish_group(&metrics, stored);
                }
                checked = checked_rx.recv(), if open && in_flight.len() < depth => {
                    let Some(checked) = checked else {
                        open = false;
                        continue;
                    };
                    let agents = checked.agents();
                    while agents_in_flight
                        .iter()
                        .any(|busy| busy.iter().any(|a| agents.binary_search(a).is_ok()))
                    {
                        let Some(stored) = in_flight.next().await else { break };
                        agents_in_flight.pop_front();
                        finish_group(&metrics, stored);
                    }
                    agents_in_flight.push_back(agents);
                    in_flight.push_back(store_group(store, &metrics, checked));
                }
                else => break,
            }
        }
    };
    tokio::join!(collect_and_check, commit);
}

/// A group of deliveries after [`check`]: what to store, what to quarantine, what to
/// acknowledge once both are committed.
struct Checked {
    acks: Vec<Ack>,
    batches: Vec<NewBatch>,
    topics: Vec<String>,
    quarantine: Vec<QuarantineRow>,
}

/// Checks one group off the async workers. `None` if checking failed (the group is then left
/// unacknowledged: the broker redelivers after a reconnect).
async fn check_group(
    trust: &Arc<Trust>,
    metrics: &Metrics,
    cfg: &Arc<IngestSection>,
    prefix: &Arc<str>,
    group: Vec<Delivery>,
) -> Option<Checked> {
    let mut acks = Vec::with_capacity(group.len());
    let mut inputs = Vec::with_capacity(group.len());
    for d in group {
        acks.push(d.ack);
        inputs.push((d.topic, d.payload, d.received));
    }
    // Parsing and signature checks are CPU work: keep them off the async workers.
    let (t, c, p) = (trust.clone(), cfg.clone(), prefix.clone());
    let checked = tokio::task::spawn_blocking(move || {
        inputs
            .into_iter()
            .map(|(topic, payload, received)| {
                let r = check(&t, &c, &p, &topic, &payload, received);
                (topic, r)
            })
            .collect::<Vec<_>>()
    })
    .await;
    let checked = match checked {
        Ok(c) => c,
        Err(e) => {
            // `check` never panics; if it did, leave the group unacknowledged (the broker
            // redelivers after a reconnect) rather than lose or invent anything.
            tracing::error!(error = %e, "ingest: checking a group of deliveries failed; not acknowledged");
            metrics.commit_failure();
            return None;
        }
    };
    let mut out = Checked {
        acks,
        batches: Vec::new(),
        topics: Vec::new(),
        quarantine: Vec::new(),
    };
    for (topic, r) in checked {
        match r {
            Ok(b) => {
                out.batches.push(b);
                out.topics.push(topic);
            }
            Err(q) => out.quarantine.push(q),
        }
    }
    Some(out)
}

/// Commits one checked group (retrying until it succeeds), then acknowledges it.
impl Checked {
    /// The agents of the group's batches, sorted and unique.
    fn agents(&self) -> Vec<String> {
        let mut v: Vec<String> = self.batches.iter().map(|b| b.agent.clone()).collect();
        v.sort_unstable();
        v.dedup();
        v
    }
}

/// A group after its commit, waiting for its turn to be acknowledged.
struct Stored {
    acks: Vec<Ack>,
    batches: Vec<NewBatch>,
    outcomes: Vec<Outcome>,
    quarantine: Vec<QuarantineRow>,
}

/// Commits one group's batches and quarantine rows (retrying until they are stored).
async fn store_group<S: IngestStore>(store: &S, metrics: &Metrics, group: Checked) -> Stored {
    let Checked {
        acks,
        batches,
        topics,
        mut quarantine,
    } = group;
    let mut outcomes = Vec::new();
    if !batches.is_empty() {
        let (o, seconds) = retry(metrics, "ingest", || store.commit_batches(&batches)).await;
        metrics.commit(seconds, batches.len());
        if o.len() != batches.len() {
            tracing::error!(
                batches = batches.len(),
                outcomes = o.len(),
                "ingest: the store returned a different number of outcomes than batches"
            );
        }
        outcomes = o;
    }
    // Replays of another body under a stored seq: quarantine a copy, keep the stored one.
    for ((b, topic), outcome) in batches.iter().zip(&topics).zip(&outcomes) {
        if matches!(outcome, Outcome::Duplicate { same_hash: false }) {
            quarantine.push(QuarantineRow {
                received: b.received,
                topic: topic.clone(),
                agent: Some(b.agent.clone()),
                seq: Some(b.seq),
                reason: REPLAYED_SEQ.to_owned(),
                detail: format!(
                    "body.seq: seq {} of agent {:?} is already stored with another body; this \
                     body (hash {}) is a replay or a second chain under the same key; the \
                     stored batch is kept",
                    b.seq, b.agent, b.body_hash
                ),
                payload: b.payload[..b.payload.len().min(QUARANTINE_PAYLOAD_MAX)].to_vec(),
            });
        }
    }
    if !quarantine.is_empty() {
        retry(metrics, "quarantine", || {
            store.commit_quarantine(&quarantine)
        })
        .await;
    }
    Stored {
        acks,
        batches,
        outcomes,
        quarantine,
    }
}

/// Acknowledges a committed group, in arrival order, and counts what it stored.
fn finish_group(metrics: &Metrics, group: Stored) {
    let Stored {
        acks,
        batches,
        outcomes,
        quarantine,
    } = group;
    for ack in acks {
        ack.send();
    }

    for (b, outcome) in batches.iter().zip(&outcomes) {
        match outcome {
            Outcome::Stored { chain } => {
                let rows = (b.samples.len() + b.readings.len() + b.states.len()) as u64;
                let lag = (b.received - b.to) as f64 / 1000.0;
                metrics.batch_stored(rows, lag);
                match chain {
                    Chain::Linked => {}
                    Chain::Gap { missing_from } => {
                        metrics.chain_event(CHAIN_GAP);
                        tracing::info!(agent = %b.agent, seq = b.seq, missing_from, "chain gap: earlier batches not (yet) received");
                    }
                    Chain::Fork { detail } => {
                        metrics.chain_event(CHAIN_FORK);
                        tracing::warn!(agent = %b.agent, seq = b.seq, %detail, "chain fork: stored flagged");
                    }
                }
            }
            Outcome::Duplicate { same_hash: true } => metrics.batch_duplicate(),
            // Counted with the quarantine rows below.
            Outcome::Duplicate { same_hash: false } => {}
        }
    }
    for q in &quarantine {
        metrics.batch_quarantined(&q.reason);
        tracing::warn!(
            reason = %q.reason,
            agent = q.agent.as_deref().unwrap_or("-"),
            seq = q.seq.unwrap_or(0),
            topic = %q.topic,
            detail = %q.detail,
            "payload quarantined"
        );
    }
}

/// Runs `op` until it succeeds, backing off between attempts; observes its latency. Returns the
/// result and the duration of the successful attempt.
async fn retry<T, F, Fut>(metrics: &Metrics, op: &'static str, mut f: F) -> (T, f64)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = shopfloor_store::Result<T>>,
{
    let mut delay = RETRY_MIN;
    let mut attempt: u32 = 1;
    loop {
        let started = Instant::now();
        let r = f().await;
        let seconds = started.elapsed().as_secs_f64();
        metrics.db_latency(op, seconds);
        match r {
            Ok(v) => {
                if attempt > 1 {
                    tracing::info!(op, attempt, "ingest: commit succeeded after retrying");
                }
                return (v, seconds);
            }
            Err(e) => {
                metrics.commit_failure();
                tracing::error!(op, attempt, error = %e, retry_in_ms = delay.as_millis() as u64, "ingest: commit failed; nothing acknowledged, retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(RETRY_MAX);
                attempt = attempt.saturating_add(1);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topics_name_one_agent() {
        let p = "shopfloor/v1";
        assert_eq!(topic_agent(p, "shopfloor/v1/a1/batch"), Some("a1"));
        assert_eq!(topic_agent(p, "shopfloor/v1//batch"), None);
        assert_eq!(topic_agent(p, "shopfloor/v1/a/b/batch"), None);
        assert_eq!(topic_agent(p, "shopfloor/v1/a1/status"), None);
        assert_eq!(topic_agent(p, "shopfloor/v1a1/batch"), None);
        assert_eq!(topic_agent(p, "shopfloor/v2/a1/batch"), None);
    }

    #[test]
    fn scopes_are_whole_segments() {
        assert!(in_scope("p1/e1/w1/l1/cnc-01", "p1/e1/w1"));
        assert!(in_scope("p1/e1/w1/l1/cnc-01", "p1/e1/w1/"));
        assert!(in_scope("p1/e1/w1", "p1/e1/w1"));
        assert!(!in_scope("p1/e1/w1x/cnc", "p1/e1/w1"));
        assert!(!in_scope("p1/e1", "p1/e1/w1"));
        assert!(!in_scope("p1/e1/w1", ""));
    }

    #[test]
    fn every_reason_is_documented() {
        let doc = include_str!("../../docs/PROTOCOL.md");
        let section = doc
            .split("## Gateway verification and quarantine")
            .nth(1)
            .unwrap_or_default();
        for r in REASONS {
            assert!(
                section.contains(&format!("| `{r}` |")),
                "{r} is not in docs/PROTOCOL.md"
            );
        }
    }

    #[test]
    fn time_spans_are_never_empty() {
        let mut s = Span::default();
        s.add(10, 10);
        assert_eq!(s.0, Some((10, 11)));
        s.add(5, 7);
        assert_eq!(s.0, Some((5, 11)));
        s.add(i64::MAX, i64::MAX);
        assert_eq!(s.0, Some((5, i64::MAX)));
    }
}
