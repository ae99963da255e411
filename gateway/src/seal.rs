//! Seals: tamper evidence for computed periods (docs/GATEWAY.md, "Seals and verify").
//!
//! Every closed local day (`gateway.time_zone`) of every registry workshop, enterprise and park
//! is sealed once its end is `seal.after_s` in the past and no roll-up work (dirty range) of a
//! device under the entity starts before the day's end. A seal is a signed document
//! ([`SealDoc`]) naming:
//!
//! - the SHA-256 of the day's evidence document, byte for byte as `GET /api/v1/evidence` serves
//!   it (economic inputs, coefficient set and overrides included), which is stored with it;
//! - the SHA-256 of the day's batch manifest ([`Manifest`]: per agent whose scope shares a
//!   subtree with the entity, the seqs and body hashes of its stored batches whose window
//!   overlaps the day), stored with it;
//! - the engine version, a SHA-256 of the coefficient and assessment data the engine compiles
//!   in ([`engine_data_sha256`]), the coefficient set, and every indicator value the engine
//!   computes from that evidence;
//! - the previous seal of the same key (one hash chain per gateway key: `seq`, `prev`), the
//!   version of the (entity, day) and the version it supersedes, when and why it was made.
//!
//! The document is signed with the gateway's Ed25519 key (`<data_dir>/gateway.key`, [`key`]).
//!
//! Invariants:
//! - the signature and the seal's hash cover the exact document bytes stored (canonical
//!   `serde_json::to_vec` of [`SealDoc`], fields in declaration order); nothing is re-serialised
//!   to check them;
//! - only the holder of the roll-up lease ([`crate::rollup::LEASE`]) seals, so replicas never
//!   race; versions of one (entity, day) are 1, 2, …, a later one made only when the evidence
//!   or the manifest built now differs from the latest seal's (late batches, changed inputs,
//!   registry changes); the earlier version stays, marked superseded;
//! - a pass is a pure function of the store, the registry snapshot and the `now` it is given
//!   (tests inject the clock); what it has seen of the batches and the audit trail between
//!   passes is kept in the store (`seal_state`), so a restart or a lease moving to another
//!   replica loses no re-check.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use ed25519_dalek::{Signature, Signer as _, SigningKey, VerifyingKey};
use jiff::tz::TimeZone;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use shopfloor_core::batch;
use shopfloor_store::{AgentHead, AuditFilter, Ms, SealFilter, SealRow, Store, StoreError};
use tokio::sync::watch;

use crate::db::Db;
use crate::evidence::{self as ev, under, under_or_self};
use crate::indicators::{self, QueryError};
use crate::metrics::Metrics;
use crate::model::{EntityKind, Snapshot};
use crate::registry::Registry;
use crate::rollup::{self, DIRTY_LIMIT, MINUTE};

pub mod key;

/// `schema` of a seal document.
pub const SCHEMA: &str = "shopfloor.seal/1";
/// Name of the sealer's state document in the store.
pub const STATE: &str = "sealer";
/// Seals (evidence builds) at most per pass; the rest waits for the next pass.
pub const MAX_PER_PASS: usize = 100;
/// Audit entries are looked at from the previous pass's start minus this (writers stamp their
/// own time; a margin covers a clock step or a slow transaction).
const AUDIT_MARGIN: Ms = 10 * MINUTE;
/// At most this many audit entries per pass; more: every sealed day is checked again.
const AUDIT_LIMIT: i64 = 10_000;
/// Batches read per store call when looking at new batches.
const CHUNK: i64 = 256;
/// The roll-up lease's length (as `rollup` takes it); renewed during a pass.
const LEASE_MS: Ms = 20_000;
const RENEW: Duration = Duration::from_secs(5);
/// Pause between passes, and after a pass that left work for the next one.
const IDLE: Duration = Duration::from_secs(60);
const BUSY: Duration = Duration::from_secs(2);

// ---------------------------------------------------------------------------------------------
// Documents.

/// The signed seal document (`shopfloor.seal/1`). Canonical bytes: `serde_json::to_vec` of this
/// struct (fields in this order, no whitespace, floats in their shortest round-trip form).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SealDoc {
    pub schema: String,
    /// Public key of the signing gateway (`ed25519:<base64>`).
    pub signer: String,
    /// 1, 2, … per signer.
    pub seq: i64,
    /// SHA-256 of the signer's previous seal document (64 zeros for seq 1).
    pub prev: String,
    pub entity: String,
    /// The day `[from, to)` (local midnights), ms.
    pub from: Ms,
    pub to: Ms,
    /// 1, 2, … per (entity, from, to).
    pub version: i64,
    /// The hash of the version this one replaces.
    pub supersedes: Option<String>,
    /// Why this version was made (`closed day`, or what changed since the previous version).
    pub reason: String,
    pub sealed_at: Ms,
    /// shopfloor-core's version.
    pub engine_version: String,
    /// [`engine_data_sha256`] of the engine that computed `indicators`.
    pub engine_data_sha256: String,
    /// The coefficient set the engine used (`gbt2589-2020`); overrides are in the evidence.
    pub coefficient_set: String,
    /// SHA-256 of the evidence document (the bytes `GET /api/v1/evidence` serves).
    pub evidence_sha256: String,
    /// SHA-256 of the manifest text ([`Manifest`], `serde_json::to_vec`).
    pub manifest_sha256: String,
    /// Every indicator the engine computes from the evidence (null: unknown).
    pub indicators: BTreeMap<String, Option<f64>>,
}

impl SealDoc {
    /// The canonical bytes that are hashed, signed and stored.
    pub fn canonical(&self) -> Result<Vec<u8>, StoreError> {
        serde_json::to_vec(self)
            .map_err(|e| StoreError::Corrupt(format!("seal document: cannot encode: {e}")))
    }
}

/// The stored batches a seal covers, per agent.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub agents: Vec<AgentManifest>,
}

/// One agent's batches of a sealed period: the seqs (as runs), the SHA-256 over every
/// `<seq> <body_hash>\n` line in seq order, and the same per block of [`BLOCK`] seqs (16 hex
/// digits, to name which part changed; the batch checks of `verify` name the batch).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentManifest {
    pub agent: String,
    pub batches: i64,
    /// Runs `[first, last]` of the seqs present.
    pub seqs: Vec<[i64; 2]>,
    pub sha256: String,
    /// `(seq / BLOCK, digest)` of every block with a batch.
    pub blocks: Vec<(i64, String)>,
}

/// Seqs per manifest block.
pub const BLOCK: i64 = 64;

/// Lowercase hex SHA-256.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// SHA-256 of the data the engine compiles in and computes with: every energy coefficient set,
/// every CO₂ factor set and the assessment rule sets, as the engine parsed them (JSON in their
/// sets' order). A coefficient or rule changed in a new build changes it.
pub fn engine_data_sha256() -> String {
    use shopfloor_core::assessment::{Kind, rule_sets};
    use shopfloor_core::coefficients::{co2_set, co2_set_ids, energy_set, energy_set_ids};
    let data = serde_json::json!({
        "energy": energy_set_ids().into_iter().map(|id| (id, energy_set(id))).collect::<Vec<_>>(),
        "co2": co2_set_ids().into_iter().map(|id| (id, co2_set(id))).collect::<Vec<_>>(),
        "digital_workshop": rule_sets(Kind::DigitalWorkshop),
        "green_factory": rule_sets(Kind::GreenFactory),
    });
    sha256_hex(data.to_string().as_bytes())
}

/// The evidence document's bytes exactly as `GET /api/v1/evidence` serves them.
pub fn evidence_bytes(e: &shopfloor_core::Evidence) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec_pretty(e)
        .map_err(|err| StoreError::Corrupt(format!("evidence: cannot encode: {err}")))
}

/// Whether an agent's scope entry and the entity share a subtree (the evidence's rule for
/// `signatures`).
pub fn scope_meets(scope: &str, entity: &str) -> bool {
    under_or_self(entity, scope) || under(scope, entity)
}

/// The manifest of `entity` over `[from, to)`: the stored batches, whose window overlaps the
/// period, of every registered agent whose scope shares a subtree with the entity (an agent
/// scoped above the entity counts with all its batches, as the evidence cites it).
pub async fn manifest(
    db: &Db,
    snap: &Snapshot,
    entity: &str,
    from: Ms,
    to: Ms,
) -> Result<Manifest, StoreError> {
    let mut out = Manifest::default();
    for c in db.chain_ranges(from, to).await? {
        let Some(agent) = snap.agents.get(&c.agent) else {
            continue;
        };
        if !agent.scope.iter().any(|s| scope_meets(s, entity)) {
            continue;
        }
        let mut lines: Vec<(i64, String)> = Vec::new();
        let mut lo = c.first_seq;
        while lo <= c.last_seq {
            let hi = lo.saturating_add(CHUNK * 16 - 1).min(c.last_seq);
            for b in db.batches(&c.agent, lo, hi, false).await? {
                if b.to > from && b.from < to {
                    lines.push((b.seq, b.body_hash));
                }
            }
            lo = hi.saturating_add(1);
        }
        out.agents.push(agent_manifest(&c.agent, &lines));
    }
    Ok(out)
}

/// One agent's manifest from its `(seq, body_hash)` lines in seq order.
pub fn agent_manifest(agent: &str, lines: &[(i64, String)]) -> AgentManifest {
    let mut all = Sha256::new();
    let mut seqs: Vec<[i64; 2]> = Vec::new();
    let mut blocks: Vec<(i64, String)> = Vec::new();
    let mut block: Option<(i64, Sha256)> = None;
    for (seq, hash) in lines {
        let line = format!("{seq} {hash}\n");
        all.update(line.as_bytes());
        match seqs.last_mut() {
            Some(run) if run[1] + 1 == *seq => run[1] = *seq,
            _ => seqs.push([*seq, *seq]),
        }
        let b = seq.div_euclid(BLOCK);
        match &mut block {
            Some((n, h)) if *n == b => h.update(line.as_bytes()),
            _ => {
                if let Some((n, h)) = block.take() {
                    blocks.push((n, hex::encode(&h.finalize()[..8])));
                }
                let mut h = Sha256::new();
                h.update(line.as_bytes());
                block = Some((b, h));
            }
        }
    }
    if let Some((n, h)) = block {
        blocks.push((n, hex::encode(&h.finalize()[..8])));
    }
    AgentManifest {
        agent: agent.to_owned(),
        batches: i64::try_from(lines.len()).unwrap_or(i64::MAX),
        seqs,
        sha256: hex::encode(all.finalize()),
        blocks,
    }
}

/// Signs the canonical document bytes (standard base64 of the 64-byte signature).
pub fn sign(key: &SigningKey, doc: &[u8]) -> String {
    BASE64.encode(key.sign(doc).to_bytes())
}

/// Whether `sig` (standard base64) is `key`'s signature over `doc` (strict verification).
pub fn signature_ok(key: &VerifyingKey, doc: &[u8], sig: &str) -> bool {
    let Ok(bytes) = BASE64.decode(sig.trim()) else {
        return false;
    };
    let Ok(bytes) = <[u8; 64]>::try_from(bytes.as_slice()) else {
        return false;
    };
    key.verify_strict(doc, &Signature::from_bytes(&bytes))
        .is_ok()
}

/// Whether a registry entity of this kind is sealed.
pub fn sealed_kind(kind: EntityKind) -> bool {
    matches!(
        kind,
        EntityKind::Park | EntityKind::Enterprise | EntityKind::Workshop
    )
}

/// At most this many seals per `GET /api/v1/seals` answer.
pub const LIST_MAX: usize = 1_000;

/// `GET /api/v1/seals`: the seals of `entity` (and below) whose day overlaps `[from, to)`
/// (every version, oldest first per day), without the evidence unless `with_evidence`.
pub async fn list(
    db: &Db,
    tz: &TimeZone,
    entity: Option<&str>,
    from: Option<Ms>,
    to: Option<Ms>,
    with_evidence: bool,
) -> Result<serde_json::Value, StoreError> {
    let rows = db
        .seals(&SealFilter {
            entity: entity.map(|e| shopfloor_store::DeviceFilter {
                prefix: e.to_owned(),
            }),
            from,
            to,
            with_bodies: with_evidence,
            ..SealFilter::default()
        })
        .await?;
    let truncated = rows.len() > LIST_MAX;
    let seals: Vec<serde_json::Value> = rows
        .iter()
        .take(LIST_MAX)
        .map(|r| {
            let doc: Option<SealDoc> = serde_json::from_str(&r.doc).ok();
            let mut v = serde_json::json!({
                "entity": r.entity,
                "from": indicators::rfc3339(r.from, tz),
                "to": indicators::rfc3339(r.to, tz),
                "version": r.version,
                "hash": r.hash,
                "signer": r.signer,
                "seq": r.seq,
                "prev": r.prev,
                "supersedes": r.supersedes,
                "superseded_by": r.superseded_by,
                "sealed_at": indicators::rfc3339(r.sealed_at, tz),
                "reason": doc.as_ref().map(|d| d.reason.clone()),
                "engine_version": doc.as_ref().map(|d| d.engine_version.clone()),
                "coefficient_set": doc.as_ref().map(|d| d.coefficient_set.clone()),
                "evidence_sha256": doc.as_ref().map(|d| d.evidence_sha256.clone()),
                "manifest_sha256": doc.as_ref().map(|d| d.manifest_sha256.clone()),
                "indicators": doc.as_ref().map(|d| d.indicators.clone()),
                "document": r.doc,
                "signature": r.sig,
            });
            if with_evidence {
                v["evidence"] = serde_json::from_str(&r.evidence)
                    .unwrap_or(serde_json::Value::String(r.evidence.clone()));
            }
            v
        })
        .collect();
    Ok(serde_json::json!({"seals": seals, "truncated": truncated}))
}

// ---------------------------------------------------------------------------------------------
// The sealer.

/// What the sealer keeps in the store between passes.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct State {
    /// Agent → (batches, first seq, last seq) at the start of the last pass.
    heads: BTreeMap<String, (i64, i64, i64)>,
    /// Start of the last pass.
    at: Ms,
    /// Audit entries already looked at (those within the margin).
    audit_seen: BTreeSet<i64>,
    /// Sealed (entity, day start) to check again.
    pending: BTreeSet<(String, Ms)>,
}

/// The latest version of one sealed (entity, day), as far as the sealer needs it.
#[derive(Debug, Clone)]
struct Latest {
    hash: String,
    version: i64,
    evidence_sha256: String,
    manifest_sha256: String,
}

/// What one pass did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PassReport {
    /// Days sealed for the first time: (entity, from, version 1).
    pub sealed: Vec<(String, Ms)>,
    /// Later versions made: (entity, from, version).
    pub versions: Vec<(String, Ms, i64)>,
    /// Sealed days checked again (whether or not a new version was needed).
    pub checked: u64,
    /// Days due or waiting for a re-check that were left for a later pass (roll-up work
    /// pending on them, or the pass's limit reached).
    pub left: u64,
    /// The roll-up queue was full: nothing was sealed.
    pub busy: bool,
}

/// The sealer of one gateway key. It caches the latest seals (loaded from the store on the
/// first pass and after [`Sealer::invalidate`]).
#[derive(Debug)]
pub struct Sealer {
    key: SigningKey,
    signer: String,
    after_ms: Ms,
    loaded: bool,
    latest: BTreeMap<(String, Ms), Latest>,
    /// This key's chain head (seq, hash).
    head: Option<(i64, String)>,
    /// (agent, first seq) → the first stored batch's window start.
    first_from: BTreeMap<(String, i64), Ms>,
    engine_data: String,
}

impl Sealer {
    pub fn new(key: SigningKey, after_s: u64) -> Sealer {
        let signer = batch::public_key_text(&key.verifying_key());
        Sealer {
            key,
            signer,
            after_ms: Ms::try_from(after_s.saturating_mul(1000)).unwrap_or(Ms::MAX),
            loaded: false,
            latest: BTreeMap::new(),
            head: None,
            first_from: BTreeMap::new(),
            engine_data: engine_data_sha256(),
        }
    }

    /// The public key text of the seals this sealer makes.
    pub fn signer(&self) -> &str {
        &self.signer
    }

    /// Forgets the cached seals (after a failed pass or a lost lease: another replica may have
    /// sealed meanwhile); the next pass reloads them.
    pub fn invalidate(&mut self) {
        self.loaded = false;
        self.latest.clear();
        self.head = None;
    }

    async fn load(&mut self, db: &Db) -> Result<(), StoreError> {
        if self.loaded {
            return Ok(());
        }
        let rows = db
            .seals(&SealFilter {
                latest_only: true,
                ..SealFilter::default()
            })
            .await?;
        self.latest.clear();
        for r in rows {
            match serde_json::from_str::<SealDoc>(&r.doc) {
                Ok(d) => {
                    self.latest.insert(
                        (r.entity.clone(), r.from),
                        Latest {
                            hash: r.hash,
                            version: r.version,
                            evidence_sha256: d.evidence_sha256,
                            manifest_sha256: d.manifest_sha256,
                        },
                    );
                }
                // A document that no longer parses is a finding for `verify`; sealing anew
                // makes the next version with what the store holds now.
                Err(e) => {
                    tracing::warn!(entity = %r.entity, from = r.from, error = %e, "seal: a stored seal document does not parse; the day will be sealed again");
                    self.latest.insert(
                        (r.entity.clone(), r.from),
                        Latest {
                            hash: r.hash,
                            version: r.version,
                            evidence_sha256: String::new(),
                            manifest_sha256: String::new(),
                        },
                    );
                }
            }
        }
        self.head = db.seal_head(&self.signer).await?.map(|h| (h.seq, h.hash));
        self.loaded = true;
        Ok(())
    }

    /// One pass at `now`: notes what changed since the last pass (new batches, input and
    /// registry changes), then checks sealed days that may have changed and seals closed days
    /// that are due, at most [`MAX_PER_PASS`] of them. The caller holds the roll-up lease.
    pub async fn pass(
        &mut self,
        db: &Db,
        snap: &Snapshot,
        tz: &TimeZone,
        now: Ms,
    ) -> Result<PassReport, StoreError> {
        let mut report = PassReport::default();
        let dirty = db.dirty(DIRTY_LIMIT).await?;
        if i64::try_from(dirty.len()).unwrap_or(i64::MAX) >= DIRTY_LIMIT {
            report.busy = true;
            return Ok(report);
        }
        self.load(db).await?;
        let heads = db.agent_heads().await?;
        let mut state = match db.seal_state(STATE).await? {
            Some(v) => match serde_json::from_value::<State>(v) {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "seal: the stored sealer state does not parse; checking every sealed day again");
                    self.fresh_state(&heads, now, true)
                }
            },
            None => self.fresh_state(&heads, now, !self.latest.is_empty()),
        };

        // What changed since the last pass.
        let spans = self.new_spans(db, &heads, &state).await?;
        for (device, lo, hi) in &spans {
            self.mark_device(tz, device, *lo, *hi, &mut state.pending);
        }
        let since = state.at - AUDIT_MARGIN;
        let entries = db
            .audit(&AuditFilter {
                kind_prefix: None,
                item: None,
                since: Some(since),
                limit: AUDIT_LIMIT,
            })
            .await?;
        let mut sweep = i64::try_from(entries.len()).unwrap_or(i64::MAX) >= AUDIT_LIMIT;
        for e in &entries {
            if state.audit_seen.contains(&e.id) {
                continue;
            }
            if e.kind == "inputs" {
                match parse_inputs_item(&e.item) {
                    Some((entity, from, to)) => {
                        self.mark_entity(tz, entity, from, to, &mut state.pending)
                    }
                    None => sweep = true,
                }
            } else if let Some(kind) = e.kind.strip_prefix("registry.") {
                // The evidence is built from the current registry: a change can alter any
                // sealed day of the entities it touches.
                let touched: Box<dyn Fn(&str) -> bool> = match kind {
                    // Plan targets are not part of the evidence.
                    "target" => continue,
                    // An entity: itself, the entities above it (their evidence lists it) and
                    // below it (they take an enterprise's overrides and industry).
                    "entity" => {
                        let item = e.item.clone();
                        Box::new(move |s: &str| under_or_self(s, &item) || under(&item, s))
                    }
                    // An agent: the entities its old or new scope shares a subtree with.
                    "agent" => {
                        let scopes: Vec<String> = [&e.before, &e.after]
                            .into_iter()
                            .filter_map(|d| d.get("scope").and_then(|v| v.as_array()))
                            .flatten()
                            .filter_map(|v| v.as_str().map(str::to_owned))
                            .collect();
                        Box::new(move |s: &str| scopes.iter().any(|sc| scope_meets(sc, s)))
                    }
                    _ => Box::new(|_: &str| true),
                };
                state.pending.extend(
                    self.latest
                        .keys()
                        .filter(|(entity, _)| touched(entity))
                        .cloned(),
                );
            }
        }
        if sweep {
            state.pending.extend(self.latest.keys().cloned());
        }
        state.audit_seen = entries
            .iter()
            .filter(|e| e.at >= now - AUDIT_MARGIN)
            .map(|e| e.id)
            .collect();
        state.heads = heads
            .iter()
            .map(|h| (h.agent.clone(), (h.batches, h.first_seq, h.last_seq)))
            .collect();
        state.at = now;

        // Days due: every closed day from the first day with data of each entity's agents.
        let starts = self.first_days(db, snap, &heads).await?;
        let mut due: Vec<(Ms, String)> = Vec::new();
        for (entity, start) in &starts {
            let mut d = rollup::day_start(*start, tz).unwrap_or(*start);
            while let Some(e) = rollup::next_day_start(d, tz) {
                if e.saturating_add(self.after_ms) > now {
                    break;
                }
                if !self.latest.contains_key(&(entity.clone(), d)) {
                    due.push((d, entity.clone()));
                }
                d = e;
            }
        }
        due.sort();
        let mut work: Vec<(String, Ms)> = state.pending.iter().cloned().collect();
        work.sort_by(|a, b| (a.1, &a.0).cmp(&(b.1, &b.0)));
        work.extend(due.into_iter().map(|(d, e)| (e, d)));

        let mut builds = 0usize;
        for (entity, from) in work {
            let sealed = self.latest.contains_key(&(entity.clone(), from));
            if !snap
                .entities
                .get(&entity)
                .is_some_and(|e| sealed_kind(e.kind))
            {
                // No longer a sealed entity: its seals stay, nothing more is done.
                state.pending.remove(&(entity, from));
                continue;
            }
            let Some(to) = rollup::next_day_start(from, tz) else {
                state.pending.remove(&(entity, from));
                continue;
            };
            if dirty
                .iter()
                .any(|d| under_or_self(&d.range.device, &entity) && d.range.from < to)
            {
                report.left += 1;
                continue;
            }
            if builds >= MAX_PER_PASS {
                report.left += 1;
                continue;
            }
            builds += 1;
            if sealed {
                report.checked += 1;
            }
            match self.seal_day(db, snap, tz, &entity, from, to, now).await {
                Ok(Some(1)) => report.sealed.push((entity.clone(), from)),
                Ok(Some(version)) => report.versions.push((entity.clone(), from, version)),
                Ok(None) => {}
                Err(QueryError::Store(e)) => return Err(e),
                Err(e) => {
                    tracing::warn!(entity = %entity, from, error = %e, "seal: the day cannot be sealed");
                }
            }
            state.pending.remove(&(entity, from));
        }
        let doc = serde_json::to_value(&state)
            .map_err(|e| StoreError::Corrupt(format!("sealer state: cannot encode: {e}")))?;
        db.seal_state_put(STATE, &doc, now).await?;
        Ok(report)
    }

    fn fresh_state(&self, heads: &[AgentHead], now: Ms, sweep: bool) -> State {
        State {
            heads: heads
                .iter()
                .map(|h| (h.agent.clone(), (h.batches, h.first_seq, h.last_seq)))
                .collect(),
            at: now,
            audit_seen: BTreeSet::new(),
            pending: if sweep {
                self.latest.keys().cloned().collect()
            } else {
                BTreeSet::new()
            },
        }
    }

    /// Per device, the time span `[lo, hi]` of everything in the batches stored since the last
    /// pass: the new seqs above each agent's previous head, and, when an agent's count grew by
    /// more than that (gaps filled) or its first seq moved, the batches received since the last
    /// pass.
    async fn new_spans(
        &self,
        db: &Db,
        heads: &[AgentHead],
        state: &State,
    ) -> Result<Vec<(String, Ms, Ms)>, StoreError> {
        let mut out = Vec::new();
        for h in heads {
            let now = (h.batches, h.first_seq, h.last_seq);
            let old = state.heads.get(&h.agent).copied();
            if old == Some(now) {
                continue;
            }
            let mut seqs: Vec<i64> = Vec::new();
            let mut ranges: Vec<(i64, i64)> = Vec::new();
            match old {
                None => ranges.push((h.first_seq, h.last_seq)),
                Some((n, first, last)) => {
                    if h.last_seq > last {
                        ranges.push((last + 1, h.last_seq));
                    }
                    let above = (h.last_seq - last).max(0);
                    if h.first_seq != first || h.batches - n > above {
                        let since = state.at - AUDIT_MARGIN;
                        let top = last.min(h.last_seq);
                        let mut lo = h.first_seq;
                        while lo <= top {
                            let hi = lo.saturating_add(CHUNK * 16 - 1).min(top);
                            seqs.extend(
                                db.batches(&h.agent, lo, hi, false)
                                    .await?
                                    .into_iter()
                                    .filter(|b| b.received >= since)
                                    .map(|b| b.seq),
                            );
                            lo = hi.saturating_add(1);
                        }
                    }
                }
            }
            for s in seqs {
                ranges.push((s, s));
            }
            for (lo, hi) in ranges {
                let mut a = lo;
                while a <= hi {
                    let b = a.saturating_add(CHUNK - 1).min(hi);
                    for stored in db.batches(&h.agent, a, b, true).await? {
                        if let Some(p) = stored.payload {
                            out.extend(spans(&p));
                        }
                    }
                    a = b.saturating_add(1);
                }
            }
        }
        Ok(out)
    }

    /// Marks the sealed days of the entities above `device` that `[lo, hi]` touches (and the
    /// day after, whose first counter delta depends on the last reading before it).
    fn mark_device(
        &self,
        tz: &TimeZone,
        device: &str,
        lo: Ms,
        hi: Ms,
        pending: &mut BTreeSet<(String, Ms)>,
    ) {
        for depth in 1..=3 {
            if let Some(entity) = shopfloor_core::path::ancestor(device, depth)
                && entity != device
            {
                let end = rollup::next_day_start(hi, tz)
                    .and_then(|d| rollup::next_day_start(d, tz))
                    .unwrap_or(hi);
                self.mark_days(tz, entity, lo, end, pending);
            }
        }
    }

    /// Marks the sealed days of `entity` and the entities above it overlapping `[from, to)`.
    fn mark_entity(
        &self,
        tz: &TimeZone,
        entity: &str,
        from: Ms,
        to: Ms,
        pending: &mut BTreeSet<(String, Ms)>,
    ) {
        let segments = entity.split('/').count();
        for depth in 1..=segments.min(3) {
            if let Some(e) = shopfloor_core::path::ancestor(entity, depth) {
                self.mark_days(tz, e, from, to, pending);
            }
        }
    }

    fn mark_days(
        &self,
        tz: &TimeZone,
        entity: &str,
        from: Ms,
        to: Ms,
        pending: &mut BTreeSet<(String, Ms)>,
    ) {
        let Some(mut d) = rollup::day_start(from, tz) else {
            return;
        };
        while d < to.max(from.saturating_add(1)) {
            let key = (entity.to_owned(), d);
            if self.latest.contains_key(&key) {
                pending.insert(key);
            }
            match rollup::next_day_start(d, tz) {
                Some(n) => d = n,
                None => return,
            }
        }
    }

    /// Per sealed entity of the registry, the start of the first stored batch of the agents
    /// whose scope shares a subtree with it (entities without such batches are not sealed).
    async fn first_days(
        &mut self,
        db: &Db,
        snap: &Snapshot,
        heads: &[AgentHead],
    ) -> Result<BTreeMap<String, Ms>, StoreError> {
        let mut first: BTreeMap<&str, Ms> = BTreeMap::new();
        for h in heads {
            let key = (h.agent.clone(), h.first_seq);
            let from = match self.first_from.get(&key) {
                Some(f) => *f,
                None => {
                    let Some(b) = db
                        .batches(&h.agent, h.first_seq, h.first_seq, false)
                        .await?
                        .into_iter()
                        .next()
                    else {
                        continue;
                    };
                    self.first_from.insert(key, b.from);
                    b.from
                }
            };
            first.insert(&h.agent, from);
        }
        let mut out = BTreeMap::new();
        for e in snap.entities.values().filter(|e| sealed_kind(e.kind)) {
            let start = snap
                .agents
                .values()
                .filter(|a| a.scope.iter().any(|s| scope_meets(s, &e.id)))
                .filter_map(|a| first.get(a.id.as_str()).copied())
                .min();
            if let Some(s) = start {
                out.insert(e.id.clone(), s);
            }
        }
        Ok(out)
    }

    /// Builds the day's evidence and manifest; seals them when the day is not sealed yet or
    /// they differ from the latest seal's. Returns the version made, if any.
    #[allow(clippy::too_many_arguments)]
    async fn seal_day(
        &mut self,
        db: &Db,
        snap: &Snapshot,
        tz: &TimeZone,
        entity: &str,
        from: Ms,
        to: Ms,
        now: Ms,
    ) -> Result<Option<i64>, QueryError> {
        let evidence = ev::build(db, snap, tz, entity, from, to).await?;
        let ev_text = evidence_bytes(&evidence)?;
        let ev_sha = sha256_hex(&ev_text);
        let manifest = manifest(db, snap, entity, from, to).await?;
        let m_text = serde_json::to_vec(&manifest)
            .map_err(|e| StoreError::Corrupt(format!("manifest: cannot encode: {e}")))?;
        let m_sha = sha256_hex(&m_text);
        let latest = self.latest.get(&(entity.to_owned(), from));
        let (version, supersedes, reason) = match latest {
            None => (1, None, "closed day".to_owned()),
            Some(l) if l.evidence_sha256 == ev_sha && l.manifest_sha256 == m_sha => {
                return Ok(None);
            }
            Some(l) => {
                let mut what = Vec::new();
                if l.evidence_sha256 != ev_sha {
                    what.push("the evidence");
                }
                if l.manifest_sha256 != m_sha {
                    what.push("the stored batches");
                }
                (
                    l.version + 1,
                    Some(l.hash.clone()),
                    format!(
                        "{} changed since version {} (late batches, changed inputs or \
                         registry)",
                        what.join(" and "),
                        l.version
                    ),
                )
            }
        };
        let report = indicators::compute(&evidence)?;
        let (seq, prev) = match &self.head {
            Some((s, h)) => (s + 1, h.clone()),
            None => (1, batch::ZERO_HASH.to_owned()),
        };
        let doc = SealDoc {
            schema: SCHEMA.to_owned(),
            signer: self.signer.clone(),
            seq,
            prev: prev.clone(),
            entity: entity.to_owned(),
            from,
            to,
            version,
            supersedes: supersedes.clone(),
            reason: reason.clone(),
            sealed_at: now,
            engine_version: shopfloor_core::engine::ENGINE_VERSION.to_owned(),
            engine_data_sha256: self.engine_data.clone(),
            coefficient_set: report.coefficients.set.clone(),
            evidence_sha256: ev_sha.clone(),
            manifest_sha256: m_sha.clone(),
            indicators: report
                .values()
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v))
                .collect(),
        };
        let bytes = doc.canonical()?;
        let text = String::from_utf8(bytes)
            .map_err(|e| StoreError::Corrupt(format!("seal document: not UTF-8: {e}")))?;
        let hash = sha256_hex(text.as_bytes());
        let row = SealRow {
            hash: hash.clone(),
            signer: self.signer.clone(),
            seq,
            prev,
            entity: entity.to_owned(),
            from,
            to,
            version,
            supersedes,
            superseded_by: None,
            sealed_at: now,
            sig: sign(&self.key, text.as_bytes()),
            doc: text,
            manifest: String::from_utf8_lossy(&m_text).into_owned(),
            evidence: String::from_utf8_lossy(&ev_text).into_owned(),
        };
        if let Err(e) = db.seal_put(&row).await {
            // Another replica may have sealed meanwhile: reload before the next try.
            self.invalidate();
            return Err(e.into());
        }
        tracing::info!(entity, from, version, seq, hash = %hash, %reason, "sealed");
        self.head = Some((seq, hash.clone()));
        self.latest.insert(
            (entity.to_owned(), from),
            Latest {
                hash,
                version,
                evidence_sha256: ev_sha,
                manifest_sha256: m_sha,
            },
        );
        Ok(Some(version))
    }
}

/// `entity@from..to` (the audit item of an input record).
fn parse_inputs_item(item: &str) -> Option<(&str, Ms, Ms)> {
    let (entity, period) = item.split_once('@')?;
    let (a, b) = period.split_once("..")?;
    Some((entity, a.parse().ok()?, b.parse().ok()?))
}

/// Per device of a payload, the span `[lo, hi]` of its samples, states, readings and links
/// (what ingest queues as dirty ranges). A payload that does not open has none.
pub fn spans(payload: &[u8]) -> Vec<(String, Ms, Ms)> {
    let Ok(opened) = batch::open(payload) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for d in &opened.body.devices {
        let mut span: Option<(Ms, Ms)> = None;
        let mut add = |a: Ms, b: Ms| {
            span = Some(match span {
                None => (a, b),
                Some((lo, hi)) => (lo.min(a), hi.max(b)),
            });
        };
        for ps in &d.samples {
            for s in &ps.samples {
                add(s.t, s.t);
            }
        }
        for s in &d.states {
            add(s.from, s.to);
        }
        for c in &d.counters {
            for r in &c.readings {
                add(r.t, r.t);
            }
        }
        for l in &d.links {
            add(l.t, l.t);
        }
        if let Some((lo, hi)) = span {
            out.push((d.id.clone(), lo, hi));
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// The worker.

fn now_ms() -> Ms {
    jiff::Timestamp::now().as_millisecond()
}

/// Renews the roll-up lease every [`RENEW`] while a pass runs; returns when another holder has
/// it.
async fn keep_lease(db: &Db, holder: &str) {
    loop {
        tokio::time::sleep(RENEW).await;
        let now = now_ms();
        match db.lease(rollup::LEASE, holder, now, now + LEASE_MS).await {
            Ok(true) => {}
            Ok(false) => return,
            Err(e) => tracing::warn!(error = %e, "seal: store error while renewing the lease"),
        }
    }
}

/// The sealer worker: a pass every minute (at once again while work is left) while this
/// replica holds the roll-up lease ([`crate::rollup::LEASE`]). Store errors are logged and the
/// pass is retried later. Returns when `shutdown` turns true.
pub async fn run(
    db: Db,
    registry: Arc<Registry>,
    metrics: Arc<Metrics>,
    holder: String,
    tz: TimeZone,
    mut sealer: Sealer,
    mut shutdown: watch::Receiver<bool>,
) {
    tracing::info!(signer = %sealer.signer(), "sealer started");
    let mut held = false;
    loop {
        if *shutdown.borrow() {
            return;
        }
        let now = now_ms();
        let mut pause = IDLE;
        match db.lease(rollup::LEASE, &holder, now, now + LEASE_MS).await {
            Ok(true) => {
                if !held {
                    sealer.invalidate();
                    held = true;
                }
                let snap = registry.snapshot();
                tokio::select! {
                    r = sealer.pass(&db, &snap, &tz, shopfloor_clock::now_ms()) => match r {
                        Ok(p) => {
                            metrics.seal_progress(
                                p.sealed.len() as u64,
                                p.versions.len() as u64,
                                p.checked,
                                i64::try_from(p.left).unwrap_or(i64::MAX),
                            );
                            if p.busy || p.left > 0 {
                                pause = BUSY;
                            }
                            if !p.sealed.is_empty() || !p.versions.is_empty() {
                                tracing::info!(new = p.sealed.len(), versions = p.versions.len(), checked = p.checked, left = p.left, "seal pass");
                            }
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "seal pass failed; retrying");
                            sealer.invalidate();
                            pause = BUSY;
                        }
                    },
                    () = keep_lease(&db, &holder) => {
                        tracing::warn!(holder = %holder, "seal: lease lost during a pass; pass abandoned");
                        held = false;
                        sealer.invalidate();
                    }
                }
            }
            Ok(false) => held = false,
            Err(e) => tracing::warn!(error = %e, "seal: lease: store error"),
        }
        tokio::select! {
            () = tokio::time::sleep(pause) => {}
            r = shutdown.changed() => {
                if r.is_err() {
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests;
