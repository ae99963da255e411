//! Signature verification for auditors: for every agent chain an evidence document cites
//! (`signatures[]`: agent, first/last seq and hash), the stored raw batches are loaded with
//! their payloads and checked again, batch by batch:
//!
//! - the payload opens and its signature verifies with one of the agent's **registered** keys
//!   over the exact body bytes, with ingest's own checks ([`ingest::verify_with_keys`]:
//!   `malformed`, `agent_mismatch`, `bad_signature`; the current key, or a key retired by a
//!   rotation for batches received inside its overlap window, `expired_key` after it; a
//!   revoked key is `revoked_key`);
//! - the body's `seq` is the stored seq (`seq_mismatch`), the SHA-256 of the body is the stored
//!   body hash (`hash_mismatch`) and the body's `prev` is the stored `prev` (`prev_mismatch`);
//! - the hash chain: `prev` of each batch is the SHA-256 of the stored body of the batch before
//!   it (`chain_break`), 64 zeros for seq 1; the batch before the cited range is checked as the
//!   first link when it is stored;
//! - seqs missing inside the range are a failure (`missing_batches`) unless ingest recorded the
//!   gap when the next batch arrived (a batch never received is a data gap, not tampering);
//! - the evidence's first and last hashes are the stored ones (`range_mismatch`);
//! - an agent no longer registered, or with an unusable key, fails as a whole (`unknown_agent`,
//!   `bad_key`).
//!
//! What ingest checked against the clock and the agent's scope at reception is not repeated
//! (it depended on that moment's registry and clock). Payloads are read in chunks and verified
//! off the async workers. Nothing is written.
//!
//! [`examine`], [`Walker`] and [`examine_chunk`] are shared with `shopfloor-gateway verify`
//! (`crate::verify`), which walks every stored chain of a period the same way.

use std::collections::BTreeSet;

use serde_json::Value;
use shopfloor_core::batch::{self, Body};
use shopfloor_core::evidence::Evidence;
use shopfloor_store::Store as _;
use shopfloor_store::{StoreError, StoredBatch};

use crate::db::Db;
use crate::indicators::QueryError;
use crate::ingest::{self, AgentKeys};
use crate::model::Snapshot;

/// Stored batches read (with payloads) per store call.
const CHUNK: i64 = 256;
/// Failures listed per agent (all are counted).
pub const MAX_LISTED: usize = 200;

/// One problem found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// The batch; `None` for a problem of the agent as a whole.
    pub seq: Option<i64>,
    /// Stable reason code (module documentation).
    pub reason: String,
    pub detail: String,
}

/// The check of one cited agent chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentCheck {
    pub agent: String,
    /// The registered key the signatures were checked with (empty when not registered).
    pub public_key: String,
    pub revoked: bool,
    pub first_seq: i64,
    pub last_seq: i64,
    pub first_hash: String,
    pub last_hash: String,
    /// Batches the evidence cites for the period.
    pub cited: i64,
    /// Stored batches with `first_seq <= seq <= last_seq` examined.
    pub checked: u64,
    /// Of those, batches without any problem.
    pub ok: u64,
    /// Every problem found (for a batch, or the agent as a whole).
    pub problems: u64,
    /// The first [`MAX_LISTED`] problems.
    pub failures: Vec<Failure>,
    /// Facts that are not failures (revoked since, gaps recorded at ingest, the chain's start).
    pub notes: Vec<String>,
}

impl AgentCheck {
    pub fn passed(&self) -> bool {
        self.problems == 0
    }

    fn fail(&mut self, seq: Option<i64>, reason: &str, detail: String) {
        self.problems += 1;
        if self.failures.len() < MAX_LISTED {
            self.failures.push(Failure {
                seq,
                reason: reason.to_owned(),
                detail,
            });
        }
    }
}

/// The checks of every agent an evidence cites.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Verification {
    pub agents: Vec<AgentCheck>,
}

impl Verification {
    /// PASS: every cited chain checked without a problem (vacuously true without any).
    pub fn passed(&self) -> bool {
        self.agents.iter().all(AgentCheck::passed)
    }
}

/// One cited chain, as the evidence gives it.
#[derive(Debug, Clone)]
struct Cite {
    agent: String,
    public_key: String,
    first_seq: i64,
    first_hash: String,
    last_seq: i64,
    last_hash: String,
    batches: i64,
}

fn cite(v: &Value) -> Option<Cite> {
    Some(Cite {
        agent: v.get("agent")?.as_str()?.to_owned(),
        public_key: v.get("public_key")?.as_str()?.to_owned(),
        first_seq: v.get("first_seq")?.as_i64()?,
        first_hash: v.get("first_hash")?.as_str()?.to_owned(),
        last_seq: v.get("last_seq")?.as_i64()?,
        last_hash: v.get("last_hash")?.as_str()?.to_owned(),
        batches: v.get("batches")?.as_i64()?,
    })
}

/// What the pure check of one stored batch found.
#[derive(Debug)]
pub(crate) struct Examined {
    pub(crate) seq: i64,
    pub(crate) stored_hash: String,
    /// SHA-256 of the body in the stored payload, when it opens.
    pub(crate) body_hash: Option<String>,
    /// `prev` inside the stored payload, when it opens.
    pub(crate) body_prev: Option<String>,
    /// The body, when its signature verified with a registered key.
    pub(crate) body: Option<Body>,
    pub(crate) problems: Vec<(&'static str, String)>,
}

/// Checks one stored batch against the agent's registered keys, as received at its stored
/// receive time (pure).
pub(crate) fn examine(agent: &str, keys: &AgentKeys, b: StoredBatch) -> Examined {
    let mut ex = Examined {
        seq: b.seq,
        stored_hash: b.body_hash.clone(),
        body_hash: None,
        body_prev: None,
        body: None,
        problems: Vec::new(),
    };
    let Some(payload) = b.payload else {
        ex.problems.push((
            "missing_payload",
            "payload: the stored batch has no payload".to_owned(),
        ));
        return ex;
    };
    let mut seq = None;
    match ingest::verify_with_keys(agent, keys, &payload, b.received, &mut seq) {
        Ok((opened, seq, _)) => {
            if seq != b.seq {
                ex.problems.push((
                    "seq_mismatch",
                    format!("body.seq: {seq}, but the batch is stored as seq {}", b.seq),
                ));
            }
            ex.body_hash = Some(opened.body_hash);
            ex.body_prev = Some(opened.body.prev.clone());
            ex.body = Some(opened.body);
        }
        Err(r) => {
            ex.problems.push((r.reason, r.detail));
            // Still follow the chain through a batch whose signature fails.
            if let Ok(opened) = batch::open(&payload) {
                ex.body_hash = Some(opened.body_hash);
                ex.body_prev = Some(opened.body.prev);
            }
        }
    }
    if let Some(h) = &ex.body_hash
        && *h != b.body_hash
    {
        ex.problems.push((
            "hash_mismatch",
            format!(
                "body: its SHA-256 is {h}, the store recorded {} at ingest (payload altered \
                 after ingest)",
                b.body_hash
            ),
        ));
    }
    if let Some(p) = &ex.body_prev
        && *p != b.prev
    {
        ex.problems.push((
            "prev_mismatch",
            format!("body.prev: {p}, the store recorded {} at ingest", b.prev),
        ));
    }
    ex
}

fn seqs(a: i64, b: i64) -> String {
    if a == b {
        a.to_string()
    } else {
        format!("{a}–{b}")
    }
}

/// Re-verifies every chain `evidence.signatures` cites (module documentation).
pub async fn verify(
    db: &Db,
    snap: &Snapshot,
    evidence: &Evidence,
) -> Result<Verification, QueryError> {
    let mut out = Verification::default();
    for (i, v) in evidence.signatures.iter().enumerate() {
        let Some(c) = cite(v) else {
            let mut a = AgentCheck {
                agent: v
                    .get("agent")
                    .and_then(Value::as_str)
                    .unwrap_or("?")
                    .to_owned(),
                public_key: String::new(),
                revoked: false,
                first_seq: 0,
                last_seq: 0,
                first_hash: String::new(),
                last_hash: String::new(),
                cited: 0,
                checked: 0,
                ok: 0,
                problems: 0,
                failures: Vec::new(),
                notes: Vec::new(),
            };
            a.fail(
                None,
                "range_mismatch",
                format!("signatures[{i}]: not a chain range (agent, first/last seq and hash)"),
            );
            out.agents.push(a);
            continue;
        };
        out.agents.push(check_agent(db, snap, c).await?);
    }
    Ok(out)
}

async fn check_agent(db: &Db, snap: &Snapshot, c: Cite) -> Result<AgentCheck, QueryError> {
    let registered = snap.agents.get(&c.agent);
    let mut a = AgentCheck {
        agent: c.agent.clone(),
        public_key: registered.map(|r| r.public_key.clone()).unwrap_or_default(),
        revoked: registered.is_some_and(|r| r.revoked),
        first_seq: c.first_seq,
        last_seq: c.last_seq,
        first_hash: c.first_hash.clone(),
        last_hash: c.last_hash.clone(),
        cited: c.batches,
        checked: 0,
        ok: 0,
        problems: 0,
        failures: Vec::new(),
        notes: Vec::new(),
    };
    let Some(reg) = registered else {
        a.fail(
            None,
            "unknown_agent",
            format!(
                "agent {:?} is not registered at this gateway: no public key to check its \
                 signatures with",
                c.agent
            ),
        );
        return Ok(a);
    };
    let keys = AgentKeys::of(reg);
    if let Err(e) = &keys.current {
        a.fail(None, "bad_key", format!("registry: {e}"));
        return Ok(a);
    }
    if reg.public_key.trim() != c.public_key.trim() {
        a.notes.push(format!(
            "the registered key differs from the evidence's {}; checked with the registered key",
            c.public_key
        ));
    }
    if reg.revoked {
        a.notes.push(
            "the agent is revoked in the registry (its later batches are refused); these were \
             accepted before and are checked with its registered key"
                .to_owned(),
        );
    }
    let mut walker = Walker::new(c.first_seq, recorded_gaps(db, &c.agent).await?);
    let mut first_stored: Option<String> = None;
    let mut last_stored: Option<(i64, String)> = None;
    let mut lo = (c.first_seq - 1).max(1);
    while lo <= c.last_seq {
        let hi = lo.saturating_add(CHUNK - 1).min(c.last_seq);
        for ex in examine_chunk(db, &c.agent, &keys, lo, hi).await? {
            let Some(problems) = walker.step(&ex) else {
                continue;
            };
            a.checked += 1;
            if ex.seq == c.first_seq {
                first_stored = Some(ex.stored_hash.clone());
            }
            last_stored = Some((ex.seq, ex.stored_hash.clone()));
            if problems.is_empty() {
                a.ok += 1;
            }
            for (reason, detail) in problems {
                a.fail(Some(ex.seq), reason, detail);
            }
        }
        lo = hi + 1;
    }
    a.notes.append(&mut walker.notes);
    match first_stored {
        Some(h) if h == c.first_hash => {}
        Some(h) => a.fail(
            Some(c.first_seq),
            "range_mismatch",
            format!(
                "the evidence cites first hash {}, the store holds {h}",
                c.first_hash
            ),
        ),
        None => a.fail(
            Some(c.first_seq),
            "range_mismatch",
            format!(
                "the evidence cites seq {} as the first; it is not stored",
                c.first_seq
            ),
        ),
    }
    match last_stored {
        Some((s, h)) if s == c.last_seq && h == c.last_hash => {}
        Some((s, h)) if s == c.last_seq => a.fail(
            Some(s),
            "range_mismatch",
            format!(
                "the evidence cites last hash {}, the store holds {h}",
                c.last_hash
            ),
        ),
        _ => a.fail(
            Some(c.last_seq),
            "range_mismatch",
            format!(
                "the evidence cites seq {} as the last; it is not stored",
                c.last_seq
            ),
        ),
    }
    let checked = i64::try_from(a.checked).unwrap_or(i64::MAX);
    if checked != c.batches {
        a.notes.push(format!(
            "the evidence counts {} batches in the period; {} are stored from seq {} to {}",
            c.batches, checked, c.first_seq, c.last_seq
        ));
    }
    Ok(a)
}

/// The seqs of `agent` before which ingest recorded a gap (the batch that arrived after
/// missing ones).
pub(crate) async fn recorded_gaps(db: &Db, agent: &str) -> Result<BTreeSet<i64>, QueryError> {
    Ok(db
        .chain_events(Some(agent), 100_000)
        .await?
        .into_iter()
        .filter(|e| e.kind == "gap")
        .map(|e| e.seq)
        .collect())
}

/// The stored batches of `agent` with `lo <= seq <= hi`, read with their payloads and
/// [`examine`]d off the async workers.
pub(crate) async fn examine_chunk(
    db: &Db,
    agent: &str,
    keys: &AgentKeys,
    lo: i64,
    hi: i64,
) -> Result<Vec<Examined>, QueryError> {
    let rows = db.batches(agent, lo, hi, true).await?;
    let (agent, keys) = (agent.to_owned(), keys.clone());
    tokio::task::spawn_blocking(move || {
        rows.into_iter()
            .map(|b| examine(&agent, &keys, b))
            .collect::<Vec<_>>()
    })
    .await
    .map_err(|e| QueryError::Store(StoreError::Db(format!("verification task: {e}"))))
}

/// Follows one agent's hash chain through its stored batches in seq order (the report's check
/// and `shopfloor-gateway verify`). A batch below `first_seq` is only the first link; every
/// later one gets its own problems ([`examine`]) plus the chain's: `chain_break` (its `prev` is
/// not the SHA-256 of the stored body before it; 64 zeros for seq 1) and `missing_batches`
/// (seqs missing before it although ingest recorded no gap: removed after ingest). Gaps ingest
/// recorded, and where the check starts, are [`Walker::notes`].
#[derive(Debug)]
pub(crate) struct Walker {
    first_seq: i64,
    gaps: BTreeSet<i64>,
    /// (seq, SHA-256 of its stored body when it opens) of the batch examined last.
    prev: Option<(i64, Option<String>)>,
    pub(crate) notes: Vec<String>,
}

impl Walker {
    pub(crate) fn new(first_seq: i64, gaps: BTreeSet<i64>) -> Walker {
        Walker {
            first_seq,
            gaps,
            prev: None,
            notes: Vec::new(),
        }
    }

    /// The problems of `ex` (batches must come in increasing seq order); `None` for a batch
    /// before the checked range (only remembered as the first link).
    pub(crate) fn step(&mut self, ex: &Examined) -> Option<Vec<(&'static str, String)>> {
        if ex.seq < self.first_seq {
            self.prev = Some((ex.seq, ex.body_hash.clone()));
            return None;
        }
        let mut problems = ex.problems.clone();
        let expected: Option<Option<String>> = if ex.seq == 1 {
            Some(Some(batch::ZERO_HASH.to_owned()))
        } else {
            match &self.prev {
                Some((ps, h)) if *ps == ex.seq - 1 => Some(h.clone()),
                other => {
                    let after = other.as_ref().map_or(self.first_seq - 1, |p| p.0);
                    if ex.seq > self.first_seq {
                        let (m0, m1) = (after + 1, ex.seq - 1);
                        if self.gaps.contains(&ex.seq) {
                            self.notes.push(format!(
                                "seq {} never received (ingest recorded the gap when seq {} \
                                 arrived): a data gap, the chain is checked on both sides",
                                seqs(m0, m1),
                                ex.seq
                            ));
                        } else {
                            problems.push((
                                "missing_batches",
                                format!(
                                    "seq {} not in the store, and ingest recorded no gap \
                                     before seq {} (removed after ingest)",
                                    seqs(m0, m1),
                                    ex.seq
                                ),
                            ));
                        }
                    } else {
                        self.notes.push(format!(
                            "the chain is checked from seq {} (seq {} is not stored)",
                            ex.seq,
                            ex.seq - 1
                        ));
                    }
                    None
                }
            }
        };
        if let (Some(Some(want)), Some(got)) = (&expected, &ex.body_prev)
            && want != got
        {
            problems.push((
                "chain_break",
                if ex.seq == 1 {
                    format!("body.prev: {got}, but seq 1 must name 64 zeros")
                } else {
                    format!(
                        "body.prev: {got} is not the SHA-256 of the stored body of seq {} \
                         ({want}): seq {} was altered or replaced",
                        ex.seq - 1,
                        ex.seq - 1
                    )
                },
            ));
        }
        self.prev = Some((ex.seq, ex.body_hash.clone()));
        Some(problems)
    }
}
