//! `shopfloor-gateway verify`: re-checks what the gateway stored against what was signed, and
//! the sealed periods against what the store holds now (docs/GATEWAY.md, "Seals and verify").
//!
//! 1. **Batches** of every agent with stored batches in the period (with `--entity`: agents whose
//!    scope shares a subtree with it), walked in seq order with the auditor report's code
//!    ([`crate::report::verify`]): the signature with the agent's registered keys at the batch's
//!    receive time ([`crate::ingest::verify_with_keys`]), the stored body hash, `prev` and seq,
//!    the hash chain, seqs missing although ingest recorded no gap (`missing_batches`: a deleted
//!    batch; recorded gaps are notes), and the agent's last batch named by the store's head
//!    record.
//! 2. **Decoded rows**: every sample, state, reading and link stored for those batches equals a
//!    fresh decode of the signed payload (ingest's own decoder), and no stored row names a batch
//!    that is not stored. A signed row that is gone is a mismatch unless its time is older than
//!    its table's retention (`retention.*_days` of the configuration, counted back from now):
//!    purged rows are counted as a note. Rows are looked up per device over the span of the
//!    signed rows ([`Store::batch_rows`]), so a row added far outside its batch's span is not
//!    looked at.
//! 3. **Seals**: every seal chain (per signing key) whole — document hash, document shape,
//!    trusted key and signature, the stored columns against the signed document, seqs without
//!    holes, `prev` links, versions 1..n each superseding the one before — and, for the latest
//!    version of each sealed day in the period: the stored evidence and manifest against their
//!    sealed hashes, the evidence built again now (every differing JSON path is named with both
//!    values), the manifest built again (missing, added and changed batches), and the
//!    indicators the current engine computes from the sealed evidence against the sealed values.
//!
//! Every mismatch has a stable kind ([`KINDS`]), the object (`batch <agent>/<seq>`,
//! `seal <entity> <day> v<version>`) and what was expected against what is there. The store is
//! only read.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::ExitCode;

use jiff::tz::TimeZone;
use serde::Serialize;
use serde_json::{Value, json};
use shopfloor_core::batch::{self, Body, VerifyingKey};
use shopfloor_store::{
    BatchRef, LinkRow, Ms, ReadingRow, SampleRow, SealFilter, SealRow, StateRow, Store, StoreError,
};

use crate::config::RetentionSection;
use crate::db::Db;
use crate::evidence::{self as ev, LOOKBACK_MS};
use crate::indicators::{self, QueryError, rfc3339};
use crate::ingest::{self, AgentKeys};
use crate::model::Snapshot;
use crate::report::verify::{Walker, examine_chunk, recorded_gaps};
use crate::seal::{self, Manifest, SealDoc, sha256_hex};

/// Batches read per store call.
const CHUNK: i64 = 256;
/// Differing evidence paths listed per seal (all are counted).
const MAX_PATHS: usize = 50;
/// Longest value shown in a detail.
const MAX_SHOWN: usize = 200;

/// Every mismatch kind, with what it means (docs/GATEWAY.md lists the same).
pub const KINDS: &[(&str, &str)] = &[
    ("malformed", "a stored payload no longer opens as a batch"),
    ("agent_mismatch", "a stored payload names another agent"),
    (
        "bad_signature",
        "a stored payload's signature does not verify with the agent's registered keys",
    ),
    (
        "revoked_key",
        "a stored batch is signed with a key revoked since",
    ),
    (
        "expired_key",
        "a stored batch is signed with a retired key, received after its overlap window",
    ),
    ("unknown_agent", "stored batches of an agent not registered"),
    ("bad_key", "the agent's registered key is unusable"),
    ("missing_payload", "a stored batch has no payload to verify"),
    (
        "hash_mismatch",
        "the stored body hash is not the SHA-256 of the stored body",
    ),
    ("prev_mismatch", "the stored prev differs from the body's"),
    ("seq_mismatch", "the stored seq differs from the body's"),
    (
        "chain_break",
        "a batch's prev is not the hash of the stored batch before it",
    ),
    (
        "missing_batches",
        "seqs missing although ingest recorded no gap (deleted)",
    ),
    (
        "row_changed",
        "a stored decoded row differs from the signed payload",
    ),
    (
        "row_missing",
        "a signed row is not stored (and not older than its retention)",
    ),
    (
        "row_added",
        "a stored row that the signed payload does not have",
    ),
    (
        "row_orphan",
        "a stored row names a batch that is not stored",
    ),
    (
        "row_decode",
        "a verified payload that ingest's decoder refuses",
    ),
    (
        "seal_hash_mismatch",
        "a seal's stored hash is not the SHA-256 of its stored document",
    ),
    ("seal_malformed", "a stored seal document does not parse"),
    (
        "seal_untrusted_key",
        "a seal signed with a key that is not trusted",
    ),
    (
        "seal_bad_signature",
        "a seal's signature does not verify over its stored document",
    ),
    (
        "seal_row_mismatch",
        "a seal's stored columns differ from its signed document",
    ),
    (
        "seal_missing",
        "seqs missing in a seal chain (deleted seals)",
    ),
    (
        "seal_chain_break",
        "a seal's prev is not the hash of the signer's seal before it",
    ),
    (
        "seal_version_gap",
        "versions of a sealed day are not 1, 2, …",
    ),
    (
        "seal_supersede_mismatch",
        "a version does not name the version before it, or is not marked superseded by it",
    ),
    (
        "seal_evidence_altered",
        "the stored evidence of a seal is not the sealed one",
    ),
    (
        "seal_manifest_altered",
        "the stored manifest of a seal is not the sealed one",
    ),
    (
        "evidence_changed",
        "the evidence built now differs from the sealed evidence at a JSON path",
    ),
    (
        "manifest_changed",
        "the stored batches of a sealed day differ from the sealed manifest",
    ),
    (
        "indicator_drift",
        "the engine computes another value from the sealed evidence than was sealed",
    ),
];

/// One finding: a mismatch or a note.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// Stable code ([`KINDS`] for mismatches).
    pub kind: String,
    /// What it is about: `batch w1-agent/3`, `agent w1-agent`, `seal p1/e1 2025-03-03 v1`.
    pub object: String,
    /// What was expected and what is there.
    pub detail: String,
}

/// What was checked.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Checked {
    pub agents: u64,
    pub batches: u64,
    pub rows: u64,
    /// Signed rows gone by retention.
    pub purged_rows: u64,
    /// Seal versions whose document, signature and chain were checked.
    pub seal_versions: u64,
    /// Latest seals whose evidence, manifest and indicators were checked.
    pub sealed_days: u64,
}

/// The head of one signer's seal chain (what an auditor can note down to notice, next time,
/// seals removed from its end).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ChainHead {
    pub signer: String,
    pub seq: i64,
    pub hash: String,
}

/// The result of a verification.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Outcome {
    pub mismatches: Vec<Finding>,
    pub notes: Vec<Finding>,
    pub checked: Checked,
    pub seal_chains: Vec<ChainHead>,
}

impl Outcome {
    pub fn passed(&self) -> bool {
        self.mismatches.is_empty()
    }

    fn mismatch(&mut self, kind: &str, object: impl Into<String>, detail: impl Into<String>) {
        self.mismatches.push(Finding {
            kind: kind.to_owned(),
            object: object.into(),
            detail: detail.into(),
        });
    }

    fn note(&mut self, kind: &str, object: impl Into<String>, detail: impl Into<String>) {
        self.notes.push(Finding {
            kind: kind.to_owned(),
            object: object.into(),
            detail: detail.into(),
        });
    }
}

/// What to verify.
#[derive(Debug, Clone)]
pub struct Options {
    /// Only batches of agents whose scope shares a subtree with it, and seals of it and below.
    pub entity: Option<String>,
    /// The period `[from, to)`: batches whose window overlaps it, seals of days overlapping it.
    pub from: Ms,
    pub to: Ms,
    /// Public keys whose seals are accepted.
    pub trusted: Vec<VerifyingKey>,
    /// Retention of the configuration (rows older than it may be gone).
    pub retention: RetentionSection,
    /// The clock the retention is counted back from.
    pub now: Ms,
}

const DAY: Ms = 86_400_000;

fn cutoff(now: Ms, days: u32) -> Option<Ms> {
    (days > 0).then(|| now - Ms::from(days) * DAY)
}

fn shown(v: &str) -> String {
    if v.chars().count() <= MAX_SHOWN {
        v.to_owned()
    } else {
        format!("{}…", v.chars().take(MAX_SHOWN).collect::<String>())
    }
}

/// Runs every check (module documentation).
pub async fn verify(
    db: &Db,
    snap: &Snapshot,
    tz: &TimeZone,
    opts: &Options,
) -> Result<Outcome, QueryError> {
    let mut out = Outcome::default();
    batches(db, snap, tz, opts, &mut out).await?;
    seals(db, snap, tz, opts, &mut out).await?;
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// Batches and their rows.

async fn batches(
    db: &Db,
    snap: &Snapshot,
    tz: &TimeZone,
    opts: &Options,
    out: &mut Outcome,
) -> Result<(), QueryError> {
    let heads: BTreeMap<String, shopfloor_store::AgentHead> = db
        .agent_heads()
        .await?
        .into_iter()
        .map(|h| (h.agent.clone(), h))
        .collect();
    for c in db.chain_ranges(opts.from, opts.to).await? {
        let agent = c.agent.clone();
        let registered = snap.agents.get(&agent);
        if let Some(entity) = &opts.entity {
            match registered {
                Some(a) if a.scope.iter().any(|s| seal::scope_meets(s, entity)) => {}
                _ => continue,
            }
        }
        out.checked.agents += 1;
        let object = format!("agent {agent}");
        let Some(reg) = registered else {
            out.mismatch(
                "unknown_agent",
                object,
                format!(
                    "{} stored batches (seq {}–{}) of an agent not registered at this gateway: \
                     no key to check them with",
                    c.batches, c.first_seq, c.last_seq
                ),
            );
            continue;
        };
        let keys = AgentKeys::of(reg);
        if let Err(e) = &keys.current {
            out.mismatch("bad_key", object, format!("registry: {e}"));
            continue;
        }
        let mut walker = Walker::new(c.first_seq, recorded_gaps(db, &agent).await?);
        let mut lo = (c.first_seq - 1).max(1);
        while lo <= c.last_seq {
            let hi = lo.saturating_add(CHUNK - 1).min(c.last_seq);
            let examined = examine_chunk(db, &agent, &keys, lo, hi).await?;
            let stored: BTreeSet<i64> = examined.iter().map(|e| e.seq).collect();
            let mut bodies: Vec<(i64, Body)> = Vec::new();
            for ex in examined {
                let Some(problems) = walker.step(&ex) else {
                    continue;
                };
                out.checked.batches += 1;
                for (reason, detail) in problems {
                    out.mismatch(reason, format!("batch {agent}/{}", ex.seq), detail);
                }
                if let Some(body) = ex.body {
                    bodies.push((ex.seq, body));
                }
            }
            rows(
                db,
                tz,
                opts,
                &agent,
                (lo.max(c.first_seq), hi),
                &stored,
                bodies,
                out,
            )
            .await?;
            lo = hi + 1;
        }
        for n in walker.notes {
            out.note("chain", object.clone(), n);
        }
        if let Some(h) = heads.get(&agent)
            && h.last_seq > c.last_seq
            && h.last_to > opts.from
            && h.last_to <= opts.to
            && db
                .batches(&agent, h.last_seq, h.last_seq, false)
                .await?
                .is_empty()
        {
            out.mismatch(
                "missing_batches",
                format!("batch {agent}/{}", h.last_seq),
                format!(
                    "seq {} is the agent's last batch by the store's head record, but it is not \
                     in the store (removed after ingest)",
                    h.last_seq
                ),
            );
        }
    }
    Ok(())
}

/// A decoded row, normalised for comparison: the key names it, the value is what may change.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum RowKey {
    Sample {
        device: String,
        point: String,
        t: Ms,
    },
    State {
        device: String,
        from: Ms,
    },
    Reading {
        device: String,
        role: String,
        point: String,
        t: Ms,
    },
    Link {
        device: String,
        t: Ms,
    },
}

/// (value text, the time retention deletes the row by).
type RowValues = Vec<(String, Ms)>;

fn num(v: f64) -> String {
    format!("{v}")
}

fn sample_value(s: &SampleRow) -> String {
    match (&s.num, &s.text, &s.err) {
        (Some(n), _, _) if s.is_bool => format!("{}", *n != 0.0),
        (Some(n), _, _) => num(*n),
        (None, Some(t), _) => format!("{t:?}"),
        (None, None, Some(e)) => format!("error {e:?}"),
        (None, None, None) => "nothing".to_owned(),
    }
}

fn reading_value(r: &ReadingRow) -> String {
    let mut v = num(r.v);
    if let Some(w) = r.width_bits {
        v.push_str(&format!(" (width {w} bits)"));
    }
    if let Some(x) = r.rollover {
        v.push_str(&format!(" (rollover {})", num(x)));
    }
    v
}

#[derive(Debug, Default)]
struct Rows(BTreeMap<RowKey, RowValues>);

impl Rows {
    fn add(&mut self, key: RowKey, value: String, t: Ms) {
        self.0.entry(key).or_default().push((value, t));
    }

    fn sample(&mut self, s: SampleRow) {
        let v = sample_value(&s);
        let key = RowKey::Sample {
            device: s.device,
            point: s.point,
            t: s.t,
        };
        self.add(key, v, s.t);
    }

    fn state(&mut self, s: StateRow) {
        let v = format!("{} until {}", s.state, s.to);
        let key = RowKey::State {
            device: s.device,
            from: s.from,
        };
        self.add(key, v, s.to);
    }

    fn reading(&mut self, r: ReadingRow) {
        let v = reading_value(&r);
        let key = RowKey::Reading {
            device: r.device,
            role: r.role,
            point: r.point,
            t: r.t,
        };
        self.add(key, v, r.t);
    }

    fn link(&mut self, l: LinkRow) {
        let detail = if l.detail.is_empty() {
            String::new()
        } else {
            format!(" ({:?})", l.detail)
        };
        let v = format!("{}{detail}", if l.up { "up" } else { "down" });
        let key = RowKey::Link {
            device: l.device,
            t: l.t,
        };
        self.add(key, v, l.t);
    }
}

/// The per-device spans `[lo, hi]` of rows (states by their end), as `batch_rows` reads them.
fn extend_span(spans: &mut BTreeMap<String, (Ms, Ms)>, device: &str, t: Ms) {
    let e = spans.entry(device.to_owned()).or_insert((t, t));
    e.0 = e.0.min(t);
    e.1 = e.1.max(t);
}

/// Compares the stored rows of one chunk of batches with a fresh decode of their payloads.
#[allow(clippy::too_many_arguments)]
async fn rows(
    db: &Db,
    tz: &TimeZone,
    opts: &Options,
    agent: &str,
    (lo, hi): (i64, i64),
    stored: &BTreeSet<i64>,
    bodies: Vec<(i64, Body)>,
    out: &mut Outcome,
) -> Result<(), QueryError> {
    let mut signed: BTreeMap<i64, Rows> = BTreeMap::new();
    let mut spans: BTreeMap<String, (Ms, Ms)> = BTreeMap::new();
    for (seq, body) in &bodies {
        let (samples, states, readings, links) = match ingest::decode_stored(body) {
            Ok(r) => r,
            Err(r) => {
                out.mismatch(
                    "row_decode",
                    format!("batch {agent}/{seq}"),
                    format!("{} ({})", r.detail, r.reason),
                );
                continue;
            }
        };
        let r = signed.entry(*seq).or_default();
        for x in samples {
            extend_span(&mut spans, &x.device, x.t);
            r.sample(x);
        }
        for x in states {
            extend_span(&mut spans, &x.device, x.to);
            r.state(x);
        }
        for x in readings {
            extend_span(&mut spans, &x.device, x.t);
            r.reading(x);
        }
        for x in links {
            extend_span(&mut spans, &x.device, x.t);
            r.link(x);
        }
    }
    let mut found: BTreeMap<i64, Rows> = BTreeMap::new();
    let mut orphans: BTreeMap<i64, u64> = BTreeMap::new();
    for (device, (a, b)) in &spans {
        let got = db.batch_rows(device, *a, *b).await?;
        let mine = |r: &BatchRef| r.agent == agent && r.seq >= lo && r.seq <= hi;
        let mut keep = |r: &BatchRef| -> Option<i64> {
            if !mine(r) {
                return None;
            }
            if signed.contains_key(&r.seq) {
                Some(r.seq)
            } else {
                if !stored.contains(&r.seq) {
                    *orphans.entry(r.seq).or_default() += 1;
                }
                None
            }
        };
        for (r, x) in got.samples {
            if let Some(seq) = keep(&r) {
                found.entry(seq).or_default().sample(x);
            }
        }
        for (r, x) in got.states {
            if let Some(seq) = keep(&r) {
                found.entry(seq).or_default().state(x);
            }
        }
        for (r, x) in got.readings {
            if let Some(seq) = keep(&r) {
                found.entry(seq).or_default().reading(x);
            }
        }
        for (r, x) in got.links {
            if let Some(seq) = keep(&r) {
                found.entry(seq).or_default().link(x);
            }
        }
    }
    for (seq, n) in orphans {
        out.mismatch(
            "row_orphan",
            format!("batch {agent}/{seq}"),
            format!(
                "{n} stored rows name batch {agent}/{seq}, which is not in the store (its \
                 rows were left when it was removed, or they were added)"
            ),
        );
    }
    let r = &opts.retention;
    let cut = |k: &RowKey| match k {
        RowKey::Sample { .. } => cutoff(opts.now, r.samples_days),
        RowKey::State { .. } => cutoff(opts.now, r.states_days),
        RowKey::Reading { .. } => cutoff(opts.now, r.readings_days),
        RowKey::Link { .. } => cutoff(opts.now, r.links_days),
    };
    let empty = Rows::default();
    for (seq, want) in &signed {
        let got = found.get(seq).unwrap_or(&empty);
        let object = format!("batch {agent}/{seq}");
        let keys: BTreeSet<&RowKey> = want.0.keys().chain(got.0.keys()).collect();
        for key in keys {
            let mut w: Vec<(String, Ms)> = want.0.get(key).cloned().unwrap_or_default();
            let mut g: Vec<(String, Ms)> = got.0.get(key).cloned().unwrap_or_default();
            out.checked.rows += u64::try_from(w.len()).unwrap_or(0);
            // Equal rows cancel out (a multiset: one key may hold several rows).
            w.sort();
            g.sort();
            let mut i = 0;
            while i < w.len() {
                if let Some(j) = g.iter().position(|x| x.0 == w[i].0) {
                    g.remove(j);
                    w.remove(i);
                } else {
                    i += 1;
                }
            }
            let what = describe(key, tz);
            let pairs = w.len().min(g.len());
            for k in 0..pairs {
                out.mismatch(
                    "row_changed",
                    object.clone(),
                    format!("{what}: stored {}, signed {}", g[k].0, w[k].0),
                );
            }
            for (v, t) in &w[pairs..] {
                if cut(key).is_some_and(|c| *t < c) {
                    out.checked.purged_rows += 1;
                } else {
                    out.mismatch(
                        "row_missing",
                        object.clone(),
                        format!("{what}: signed {v}, not in the store"),
                    );
                }
            }
            for (v, _) in &g[pairs..] {
                out.mismatch(
                    "row_added",
                    object.clone(),
                    format!("{what}: stored {v}, not in the signed payload"),
                );
            }
        }
    }
    Ok(())
}

fn describe(key: &RowKey, tz: &TimeZone) -> String {
    match key {
        RowKey::Sample { device, point, t } => {
            format!("sample {device} {point} at {}", rfc3339(*t, tz))
        }
        RowKey::State { device, from } => {
            format!("state of {device} from {}", rfc3339(*from, tz))
        }
        RowKey::Reading {
            device,
            role,
            point,
            t,
        } => format!("reading {device} {role} {point} at {}", rfc3339(*t, tz)),
        RowKey::Link { device, t } => format!("link event of {device} at {}", rfc3339(*t, tz)),
    }
}

// ---------------------------------------------------------------------------------------------
// Seals.

fn seal_object(s: &SealRow, tz: &TimeZone) -> String {
    let day = jiff::Timestamp::from_millisecond(s.from)
        .map(|t| t.to_zoned(tz.clone()).date().to_string())
        .unwrap_or_else(|_| s.from.to_string());
    format!("seal {} {day} v{}", s.entity, s.version)
}

async fn seals(
    db: &Db,
    snap: &Snapshot,
    tz: &TimeZone,
    opts: &Options,
    out: &mut Outcome,
) -> Result<(), QueryError> {
    let trusted: BTreeMap<String, VerifyingKey> = opts
        .trusted
        .iter()
        .map(|k| (batch::public_key_text(k), *k))
        .collect();
    // Every chain, whole: documents, signatures, links, versions.
    let all = db.seals(&SealFilter::default()).await?;
    let mut docs: BTreeMap<String, SealDoc> = BTreeMap::new();
    for s in &all {
        out.checked.seal_versions += 1;
        let object = seal_object(s, tz);
        let actual = sha256_hex(s.doc.as_bytes());
        if actual != s.hash {
            out.mismatch(
                "seal_hash_mismatch",
                object.clone(),
                format!(
                    "stored hash {}, but the stored document's SHA-256 is {actual} (the \
                     document or its hash was changed)",
                    s.hash
                ),
            );
        }
        match trusted.get(s.signer.trim()) {
            None => out.mismatch(
                "seal_untrusted_key",
                object.clone(),
                format!(
                    "signed by {}, which is not this gateway's key, in seal.trusted_keys or \
                     given with --trust-key",
                    s.signer
                ),
            ),
            Some(k) => {
                if !seal::signature_ok(k, s.doc.as_bytes(), &s.sig) {
                    out.mismatch(
                        "seal_bad_signature",
                        object.clone(),
                        format!(
                            "the signature does not verify with {} over the stored document \
                             (the document or the signature was changed)",
                            s.signer
                        ),
                    );
                }
            }
        }
        let doc: SealDoc = match serde_json::from_str(&s.doc) {
            Ok(d) => d,
            Err(e) => {
                out.mismatch(
                    "seal_malformed",
                    object,
                    format!("the stored document is not a {}: {e}", seal::SCHEMA),
                );
                continue;
            }
        };
        let mut differs = |field: &str, column: String, signed: String| {
            if column != signed {
                out.mismatch(
                    "seal_row_mismatch",
                    object.clone(),
                    format!("column {field}: {column}, the signed document says {signed}"),
                );
            }
        };
        differs("signer", s.signer.clone(), doc.signer.clone());
        differs("seq", s.seq.to_string(), doc.seq.to_string());
        differs("prev", s.prev.clone(), doc.prev.clone());
        differs("entity", s.entity.clone(), doc.entity.clone());
        differs("from", s.from.to_string(), doc.from.to_string());
        differs("to", s.to.to_string(), doc.to.to_string());
        differs("version", s.version.to_string(), doc.version.to_string());
        differs(
            "supersedes",
            format!("{:?}", s.supersedes),
            format!("{:?}", doc.supersedes),
        );
        differs(
            "sealed_at",
            s.sealed_at.to_string(),
            doc.sealed_at.to_string(),
        );
        docs.insert(s.hash.clone(), doc);
    }
    let mut by_signer: BTreeMap<&str, Vec<&SealRow>> = BTreeMap::new();
    for s in &all {
        by_signer.entry(&s.signer).or_default().push(s);
    }
    for (signer, mut chain) in by_signer {
        chain.sort_by_key(|s| s.seq);
        let mut expect_seq = 1;
        let mut prev: Option<&SealRow> = None;
        for s in &chain {
            let object = seal_object(s, tz);
            if s.seq > expect_seq {
                let gap = if s.seq - 1 == expect_seq {
                    expect_seq.to_string()
                } else {
                    format!("{expect_seq}–{}", s.seq - 1)
                };
                out.mismatch(
                    "seal_missing",
                    format!("seal chain {signer}"),
                    format!("seals {gap} of the chain are not in the store (deleted)"),
                );
            }
            let want = match prev {
                Some(p) if p.seq == s.seq - 1 => Some(p.hash.clone()),
                _ if s.seq == 1 => Some(batch::ZERO_HASH.to_owned()),
                _ => None,
            };
            if let Some(w) = want
                && w != s.prev
            {
                out.mismatch(
                    "seal_chain_break",
                    object,
                    format!(
                        "prev {} is not the hash of the signer's seal {} ({w})",
                        s.prev,
                        s.seq - 1
                    ),
                );
            }
            expect_seq = s.seq + 1;
            prev = Some(s);
        }
        if let Some(last) = chain.last() {
            out.seal_chains.push(ChainHead {
                signer: signer.to_owned(),
                seq: last.seq,
                hash: last.hash.clone(),
            });
        }
    }
    let mut by_day: BTreeMap<(&str, Ms, Ms), Vec<&SealRow>> = BTreeMap::new();
    for s in &all {
        by_day
            .entry((s.entity.as_str(), s.from, s.to))
            .or_default()
            .push(s);
    }
    for versions in by_day.values_mut() {
        versions.sort_by_key(|s| s.version);
        let mut before: Option<&SealRow> = None;
        for (i, s) in versions.iter().enumerate() {
            let object = seal_object(s, tz);
            let want = i64::try_from(i).unwrap_or(i64::MAX) + 1;
            if s.version != want {
                out.mismatch(
                    "seal_version_gap",
                    object.clone(),
                    format!(
                        "version {}, but the versions before it end at {}",
                        s.version,
                        want - 1
                    ),
                );
            }
            let names = before.map(|b| b.hash.clone());
            if s.supersedes != names {
                out.mismatch(
                    "seal_supersede_mismatch",
                    object.clone(),
                    format!(
                        "supersedes {}, but the version before it is {}",
                        s.supersedes.as_deref().unwrap_or("nothing"),
                        names.as_deref().unwrap_or("none")
                    ),
                );
            }
            let next = versions.get(i + 1).map(|n| n.hash.clone());
            if s.superseded_by != next {
                out.mismatch(
                    "seal_supersede_mismatch",
                    object,
                    format!(
                        "marked superseded by {}, but the version after it is {}",
                        s.superseded_by.as_deref().unwrap_or("nothing"),
                        next.as_deref().unwrap_or("none")
                    ),
                );
            }
            before = Some(s);
        }
    }

    // The latest version of each sealed day in the period: bodies, evidence, manifest,
    // indicators.
    let filter = SealFilter {
        entity: opts
            .entity
            .as_ref()
            .map(|e| shopfloor_store::DeviceFilter { prefix: e.clone() }),
        from: Some(opts.from),
        to: Some(opts.to),
        with_bodies: true,
        ..SealFilter::default()
    };
    let rows = db.seals(&filter).await?;
    let mut latest: BTreeMap<(String, Ms, Ms), SealRow> = BTreeMap::new();
    for s in rows {
        let key = (s.entity.clone(), s.from, s.to);
        match latest.get(&key) {
            Some(l) if l.version >= s.version => {}
            _ => {
                latest.insert(key, s);
            }
        }
    }
    for s in latest.values() {
        let Some(doc) = docs.get(&s.hash) else {
            continue;
        };
        out.checked.sealed_days += 1;
        sealed_day(db, snap, tz, opts, s, doc, out).await?;
    }
    Ok(())
}

fn close(a: f64, b: f64) -> bool {
    a == b || (a - b).abs() <= 1e-9 * a.abs().max(b.abs())
}

fn show_value(v: Option<&Value>) -> String {
    match v {
        None => "(absent)".to_owned(),
        Some(v) => shown(&v.to_string()),
    }
}

/// Every JSON path where `a` and `b` differ, with both values (`None`: absent).
fn diff<'a>(
    path: &str,
    a: Option<&'a Value>,
    b: Option<&'a Value>,
    out: &mut Vec<(String, Option<&'a Value>, Option<&'a Value>)>,
) {
    let join = |k: &str| {
        if path.is_empty() {
            k.to_owned()
        } else {
            format!("{path}.{k}")
        }
    };
    match (a, b) {
        (Some(Value::Object(x)), Some(Value::Object(y))) => {
            let keys: BTreeSet<&String> = x.keys().chain(y.keys()).collect();
            for k in keys {
                diff(&join(k), x.get(k), y.get(k), out);
            }
        }
        (Some(Value::Array(x)), Some(Value::Array(y))) => {
            for i in 0..x.len().max(y.len()) {
                diff(&format!("{path}[{i}]"), x.get(i), y.get(i), out);
            }
        }
        (a, b) if a == b => {}
        (a, b) => out.push((path.to_owned(), a, b)),
    }
}

/// Whether a differing evidence path is explained by retention: the base reading of a meter
/// (`meters[i].readings[0].at`, from minute roll-ups that are purged after
/// `retention.minute_rollups_days`) when the sealed base lies before that cutoff, or the cited
/// chain (`signatures…`) of a period whose batches may be purged by `retention.raw_batches_days`.
fn retention_explains(
    path: &str,
    sealed: Option<&Value>,
    from: Ms,
    to: Ms,
    opts: &Options,
) -> bool {
    let r = &opts.retention;
    if path.starts_with("signatures") {
        return cutoff(opts.now, r.raw_batches_days).is_some_and(|c| from < c);
    }
    let base = path.starts_with("meters[") && path.ends_with("].readings[0].at");
    if !base {
        return false;
    }
    let Some(cut) = cutoff(opts.now, r.minute_rollups_days) else {
        return false;
    };
    let sealed_at = sealed
        .and_then(Value::as_str)
        .and_then(|t| t.parse::<jiff::Timestamp>().ok())
        .map(|t| t.as_millisecond());
    sealed_at.is_some_and(|t| t < cut && t >= from - LOOKBACK_MS && t <= to)
}

#[allow(clippy::too_many_arguments)]
async fn sealed_day(
    db: &Db,
    snap: &Snapshot,
    tz: &TimeZone,
    opts: &Options,
    s: &SealRow,
    doc: &SealDoc,
    out: &mut Outcome,
) -> Result<(), QueryError> {
    let object = seal_object(s, tz);
    let ev_sha = sha256_hex(s.evidence.as_bytes());
    if ev_sha != doc.evidence_sha256 {
        out.mismatch(
            "seal_evidence_altered",
            object.clone(),
            format!(
                "the stored evidence's SHA-256 is {ev_sha}, the seal names {}",
                doc.evidence_sha256
            ),
        );
    }
    let m_sha = sha256_hex(s.manifest.as_bytes());
    if m_sha != doc.manifest_sha256 {
        out.mismatch(
            "seal_manifest_altered",
            object.clone(),
            format!(
                "the stored manifest's SHA-256 is {m_sha}, the seal names {}",
                doc.manifest_sha256
            ),
        );
    }

    // What changed through the gateway since sealing (the sealer makes the next version on its
    // next pass): differences these explain are notes, not mismatches.
    let sealed_m: Manifest = serde_json::from_str(&s.manifest).unwrap_or_default();
    let now_m = seal::manifest(db, snap, &s.entity, s.from, s.to).await?;
    let later = Later::find(db, s, &sealed_m, &now_m).await?;

    // The evidence built now.
    match ev::build(db, snap, tz, &s.entity, s.from, s.to).await {
        Ok(now_ev) => {
            let bytes = seal::evidence_bytes(&now_ev)?;
            if sha256_hex(&bytes) != doc.evidence_sha256 {
                let sealed: Value = serde_json::from_str(&s.evidence).unwrap_or(Value::Null);
                let rebuilt: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
                let mut paths = Vec::new();
                diff("", Some(&sealed), Some(&rebuilt), &mut paths);
                let mut listed = 0usize;
                let mut more = 0usize;
                for (path, a, b) in &paths {
                    let detail = format!(
                        "{}: sealed {}, now {}",
                        if path.is_empty() { "(document)" } else { path },
                        show_value(*a),
                        show_value(*b)
                    );
                    if retention_explains(path, *a, s.from, s.to, opts) {
                        out.note("retention", object.clone(), detail);
                    } else if let Some(why) = later.explains(path) {
                        out.note(
                            "changed_after_seal",
                            object.clone(),
                            format!("{detail} ({why})"),
                        );
                    } else if listed < MAX_PATHS {
                        listed += 1;
                        out.mismatch("evidence_changed", object.clone(), detail);
                    } else {
                        more += 1;
                    }
                }
                if more > 0 {
                    out.mismatch(
                        "evidence_changed",
                        object.clone(),
                        format!("and {more} more differing paths"),
                    );
                }
            }
        }
        Err(QueryError::Store(e)) => return Err(QueryError::Store(e)),
        Err(e) => out.note(
            "not_rebuilt",
            object.clone(),
            format!("the evidence cannot be built now ({e}); the sealed values are not compared"),
        ),
    }

    // The manifest built now.
    let now_text = serde_json::to_vec(&now_m)
        .map_err(|e| StoreError::Corrupt(format!("manifest: cannot encode: {e}")))?;
    if sha256_hex(&now_text) != doc.manifest_sha256 {
        let purged = cutoff(opts.now, opts.retention.raw_batches_days).is_some_and(|c| s.from < c);
        compare_manifests(&object, &sealed_m, &now_m, purged, &later.batches, out);
    }

    // The engine on the sealed evidence.
    match shopfloor_core::parse(&s.evidence) {
        Ok(sealed_ev) => {
            let report = indicators::compute(&sealed_ev)?;
            let now_values = report.values();
            let ids: BTreeSet<&str> = now_values
                .keys()
                .copied()
                .chain(doc.indicators.keys().map(String::as_str))
                .collect();
            for id in ids {
                let sealed = doc.indicators.get(id).copied().flatten();
                let now = now_values.get(id).copied().flatten();
                let same = match (sealed, now) {
                    (Some(a), Some(b)) => close(a, b),
                    (a, b) => {
                        a.is_none()
                            && b.is_none()
                            && doc.indicators.contains_key(id) == now_values.contains_key(id)
                    }
                };
                if !same {
                    let show = |v: Option<f64>, present: bool| match (v, present) {
                        (Some(x), _) => num(x),
                        (None, true) => "null".to_owned(),
                        (None, false) => "(absent)".to_owned(),
                    };
                    out.mismatch(
                        "indicator_drift",
                        object.clone(),
                        format!(
                            "{id}: sealed {}, the engine computes {} from the sealed evidence",
                            show(sealed, doc.indicators.contains_key(id)),
                            show(now, now_values.contains_key(id))
                        ),
                    );
                }
            }
            if doc.engine_version != shopfloor_core::engine::ENGINE_VERSION
                || doc.engine_data_sha256 != seal::engine_data_sha256()
            {
                out.note(
                    "engine",
                    object,
                    format!(
                        "sealed with engine {} (data {}), checked with {} (data {})",
                        doc.engine_version,
                        short(&doc.engine_data_sha256),
                        shopfloor_core::engine::ENGINE_VERSION,
                        short(&seal::engine_data_sha256())
                    ),
                );
            }
        }
        Err(e) => out.mismatch(
            "seal_evidence_altered",
            object,
            format!("the stored evidence is not a valid evidence document: {e}"),
        ),
    }
    Ok(())
}

/// Changes made through the gateway after a seal was made: batches received since (late data)
/// and audited input or registry changes. The sealer makes the next version of the day on its
/// next pass; until then the differences they explain are notes.
#[derive(Debug, Default)]
struct Later {
    /// (agent, seq) stored now, not sealed, received after the seal.
    batches: BTreeSet<(String, i64)>,
    /// An audited input change of the entity (or below it) since the seal.
    inputs: bool,
    /// An audited registry change since the seal.
    registry: bool,
}

impl Later {
    async fn find(
        db: &Db,
        s: &SealRow,
        sealed: &Manifest,
        now: &Manifest,
    ) -> Result<Later, QueryError> {
        let mut later = Later::default();
        for n in &now.agents {
            let had = sealed
                .agents
                .iter()
                .find(|a| a.agent == n.agent)
                .map(|a| runs_to_set(&a.seqs))
                .unwrap_or_default();
            let added: Vec<i64> = runs_to_set(&n.seqs).difference(&had).copied().collect();
            let (Some(lo), Some(hi)) = (added.first(), added.last()) else {
                continue;
            };
            for b in db.batches(&n.agent, *lo, *hi, false).await? {
                if b.received > s.sealed_at && added.binary_search(&b.seq).is_ok() {
                    later.batches.insert((n.agent.clone(), b.seq));
                }
            }
        }
        let entries = db
            .audit(&shopfloor_store::AuditFilter {
                kind_prefix: None,
                item: None,
                since: Some(s.sealed_at),
                limit: 10_000,
            })
            .await?;
        for e in entries {
            if e.kind.starts_with("registry.") {
                later.registry = true;
            } else if e.kind == "inputs"
                && e.item
                    .split_once('@')
                    .is_some_and(|(entity, _)| ev::under_or_self(entity, &s.entity))
            {
                later.inputs = true;
            }
        }
        Ok(later)
    }

    /// Why a differing evidence path may come from a change made after sealing.
    fn explains(&self, path: &str) -> Option<&'static str> {
        if self.registry {
            return Some("the registry changed after sealing; the sealer makes the next version");
        }
        let input_path = path.starts_with("inputs")
            || (path.starts_with("entities[") && path.contains("].inputs"))
            || path.starts_with("meters[");
        if self.inputs && input_path {
            return Some(
                "economic inputs changed after sealing (audited); the sealer makes the next version",
            );
        }
        let data_path = path.starts_with("equipment")
            || path.starts_with("meters")
            || path.starts_with("signatures");
        if !self.batches.is_empty() && data_path {
            return Some("batches received after sealing; the sealer makes the next version");
        }
        None
    }
}

fn short(h: &str) -> &str {
    h.get(..12).unwrap_or(h)
}

fn runs_to_set(runs: &[[i64; 2]]) -> BTreeSet<i64> {
    runs.iter().flat_map(|r| r[0]..=r[1]).collect()
}

fn ranges(seqs: &[i64]) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut i = 0;
    while i < seqs.len() {
        let mut j = i;
        while j + 1 < seqs.len() && seqs[j + 1] == seqs[j] + 1 {
            j += 1;
        }
        parts.push(if i == j {
            seqs[i].to_string()
        } else {
            format!("{}–{}", seqs[i], seqs[j])
        });
        i = j + 1;
    }
    parts.join(", ")
}

fn compare_manifests(
    object: &str,
    sealed: &Manifest,
    now: &Manifest,
    purged: bool,
    late: &BTreeSet<(String, i64)>,
    out: &mut Outcome,
) {
    let agents: BTreeSet<&str> = sealed
        .agents
        .iter()
        .chain(&now.agents)
        .map(|a| a.agent.as_str())
        .collect();
    for agent in agents {
        let s = sealed.agents.iter().find(|a| a.agent == agent);
        let n = now.agents.iter().find(|a| a.agent == agent);
        if s.map(|a| &a.sha256) == n.map(|a| &a.sha256) {
            continue;
        }
        let mut named = false;
        let s_seqs = s.map(|a| runs_to_set(&a.seqs)).unwrap_or_default();
        let n_seqs = n.map(|a| runs_to_set(&a.seqs)).unwrap_or_default();
        let missing: Vec<i64> = s_seqs.difference(&n_seqs).copied().collect();
        let (late_added, added): (Vec<i64>, Vec<i64>) = n_seqs
            .difference(&s_seqs)
            .partition(|q| late.contains(&(agent.to_owned(), **q)));
        if !late_added.is_empty() {
            named = true;
            out.note(
                "changed_after_seal",
                object.to_owned(),
                format!(
                    "agent {agent}: batch seq {} received after sealing (late data; the sealer \
                     makes the next version)",
                    ranges(&late_added)
                ),
            );
        }
        if !missing.is_empty() {
            named = true;
            let detail = format!(
                "agent {agent}: batch seq {} sealed, not in the store now",
                ranges(&missing)
            );
            if purged {
                out.note("retention", object.to_owned(), detail);
            } else {
                out.mismatch("manifest_changed", object.to_owned(), detail);
            }
        }
        if !added.is_empty() {
            named = true;
            out.mismatch(
                "manifest_changed",
                object.to_owned(),
                format!(
                    "agent {agent}: batch seq {} in the store now, not sealed (arrived or was \
                     added after sealing; the sealer makes a new version for late batches)",
                    ranges(&added)
                ),
            );
        }
        let s_blocks: BTreeMap<i64, &String> = s
            .map(|a| a.blocks.iter().map(|(k, v)| (*k, v)).collect())
            .unwrap_or_default();
        let n_blocks: BTreeMap<i64, &String> = n
            .map(|a| a.blocks.iter().map(|(k, v)| (*k, v)).collect())
            .unwrap_or_default();
        for (b, h) in &s_blocks {
            let lo = b * seal::BLOCK;
            let hi = lo + seal::BLOCK - 1;
            let same_seqs = s_seqs.range(lo..=hi).eq(n_seqs.range(lo..=hi));
            if same_seqs && n_blocks.get(b).is_some_and(|x| x != h) {
                named = true;
                out.mismatch(
                    "manifest_changed",
                    object.to_owned(),
                    format!(
                        "agent {agent}: a batch among seq {lo}–{hi} has another body hash than \
                         when sealed (the batch checks name it)"
                    ),
                );
            }
        }
        if !named {
            out.mismatch(
                "manifest_changed",
                object.to_owned(),
                format!("agent {agent}: the stored batches differ from the sealed manifest"),
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Output.

/// The findings as text: one line per finding, then what was checked and the result.
pub fn text(o: &Outcome) -> String {
    let mut s = String::new();
    for f in &o.mismatches {
        s.push_str(&format!("MISMATCH {} {}: {}\n", f.kind, f.object, f.detail));
    }
    for f in &o.notes {
        s.push_str(&format!("note {} {}: {}\n", f.kind, f.object, f.detail));
    }
    for h in &o.seal_chains {
        s.push_str(&format!(
            "seal chain {}: {} seals, head {}\n",
            h.signer, h.seq, h.hash
        ));
    }
    let c = &o.checked;
    s.push_str(&format!(
        "checked: {} agents, {} batches, {} rows ({} gone by retention), {} seal versions, {} \
         sealed days\n",
        c.agents, c.batches, c.rows, c.purged_rows, c.seal_versions, c.sealed_days
    ));
    s.push_str(&format!(
        "result: {} ({} mismatches, {} notes)\n",
        if o.passed() { "PASS" } else { "FAIL" },
        o.mismatches.len(),
        o.notes.len()
    ));
    s
}

/// The findings as JSON (for tools).
pub fn json(o: &Outcome, entity: Option<&str>, from: Ms, to: Ms, tz: &TimeZone) -> Value {
    json!({
        "result": if o.passed() { "pass" } else { "fail" },
        "entity": entity,
        "from": rfc3339(from, tz),
        "to": rfc3339(to, tz),
        "checked": o.checked,
        "mismatches": o.mismatches,
        "notes": o.notes,
        "seal_chains": o.seal_chains,
    })
}

// ---------------------------------------------------------------------------------------------
// The command line.

/// `shopfloor-gateway verify`.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Exit codes: 0 everything verified; 1 any mismatch (each is listed) or a \
                  runtime failure; 2 bad arguments or configuration. docs/GATEWAY.md, \
                  \"Seals and verify\""
)]
pub struct Args {
    /// Gateway configuration file. Default: $SHOPFLOOR_GATEWAY_CONFIG, else ./gateway.toml.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Only this entity: batches of agents whose scope shares a subtree with it, seals of it
    /// and the entities below it.
    #[arg(long, value_name = "ID")]
    pub entity: Option<String>,
    /// Start: RFC 3339 with offset, or a date YYYY-MM-DD (local midnight in gateway.time_zone).
    /// Default: everything stored.
    #[arg(long, value_name = "T", requires = "to")]
    pub from: Option<String>,
    /// End (exclusive), like --from.
    #[arg(long, value_name = "T", requires = "from")]
    pub to: Option<String>,
    /// text (one line per finding) or json.
    #[arg(long, value_name = "FORMAT", default_value = "text")]
    pub format: String,
    /// A public key (ed25519:<base64>) whose seals are trusted, besides this gateway's key and
    /// seal.trusted_keys (repeatable).
    #[arg(long = "trust-key", value_name = "KEY")]
    pub trust_key: Vec<String>,
}

/// `shopfloor-gateway verify ...`: prints the findings; exit 0 (verified), 1 (a mismatch, or a
/// runtime failure), 2 (bad arguments or configuration).
pub fn run(args: &Args) -> ExitCode {
    let json_out = match args.format.as_str() {
        "text" => false,
        "json" => true,
        other => {
            eprintln!("error: format: {other:?} is not text or json");
            return ExitCode::from(2);
        }
    };
    let path = crate::report::config_path(args.config.as_deref());
    let cfg = match crate::cli::config(&path) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let tz = match crate::cli::time_zone(&path, &cfg) {
        Ok(tz) => tz,
        Err(code) => return code,
    };
    let now = jiff::Timestamp::now().as_millisecond();
    let (from, to) = match (&args.from, &args.to) {
        (Some(f), Some(t)) => {
            let period = indicators::parse_time("from", f, &tz).and_then(|from| {
                let to = indicators::parse_time("to", t, &tz)?;
                if to <= from {
                    return Err(QueryError::Bad {
                        field: "to".into(),
                        reason: "must be after from".into(),
                    });
                }
                Ok((from, to))
            });
            match period {
                Ok(p) => p,
                Err(e) => {
                    eprintln!("error: {e}");
                    return ExitCode::from(2);
                }
            }
        }
        _ => (0, now.saturating_add(DAY)),
    };
    if let Some(e) = &args.entity
        && let Err(reason) = crate::registry::check_entity_path(e)
    {
        eprintln!("error: entity: {reason}");
        return ExitCode::from(2);
    }
    let mut trusted = Vec::new();
    for (i, k) in cfg
        .seal
        .trusted_keys
        .iter()
        .chain(&args.trust_key)
        .enumerate()
    {
        match batch::parse_public_key(k) {
            Ok(key) => trusted.push(key),
            Err(e) => {
                let which = if i < cfg.seal.trusted_keys.len() {
                    format!("seal.trusted_keys[{i}]")
                } else {
                    "--trust-key".to_owned()
                };
                eprintln!("error: {which}: {e}");
                return ExitCode::from(2);
            }
        }
    }
    match seal::key::load(&cfg.gateway.data_dir) {
        Ok(Some(k)) => trusted.push(k.verifying_key()),
        Ok(None) => {}
        Err(e) => eprintln!("warning: {e}; only seal.trusted_keys and --trust-key are trusted"),
    }
    let rt = match crate::cli::runtime(false) {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    let opts = Options {
        entity: args.entity.clone(),
        from,
        to,
        trusted,
        retention: cfg.retention.clone(),
        now,
    };
    let result = rt.block_on(async {
        let (db, snap) = crate::cli::stored_registry(&cfg).await?;
        if let Some(e) = &opts.entity
            && !snap.entities.contains_key(e)
        {
            return Ok(Err(QueryError::NotFound(format!("entity {e}"))));
        }
        Ok::<_, String>(verify(&db, &snap, &tz, &opts).await)
    });
    let outcome = match result {
        Ok(Ok(o)) => o,
        Ok(Err(e)) => return crate::cli::query_failed(e, args.entity.as_deref().unwrap_or("")),
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(1);
        }
    };
    if json_out {
        println!("{}", json(&outcome, args.entity.as_deref(), from, to, &tz));
    } else {
        print!("{}", text(&outcome));
    }
    if outcome.passed() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn diffs_name_every_path_with_both_values() {
        let a = json!({"inputs": {"value_added_cny": 50_000_000.0, "employees_avg": 400.0},
                       "meters": [{"id": "m", "readings": [{"at": "x", "value": 0.0}]}],
                       "gone": 1});
        let b = json!({"inputs": {"value_added_cny": 60_000_000.0, "employees_avg": 400.0},
                       "meters": [{"id": "m", "readings": [{"at": "x", "value": 0.0},
                                                          {"at": "y", "value": 2.5}]}]});
        let mut paths = Vec::new();
        diff("", Some(&a), Some(&b), &mut paths);
        let shown: Vec<String> = paths
            .iter()
            .map(|(p, x, y)| format!("{p}: {} / {}", show_value(*x), show_value(*y)))
            .collect();
        assert_eq!(
            shown,
            vec![
                "gone: 1 / (absent)",
                "inputs.value_added_cny: 50000000.0 / 60000000.0",
                "meters[0].readings[1]: (absent) / {\"at\":\"y\",\"value\":2.5}",
            ]
        );
    }

    #[test]
    fn seq_ranges_and_tolerance() {
        assert_eq!(ranges(&[1, 2, 3, 5, 7, 8]), "1–3, 5, 7–8");
        assert_eq!(ranges(&[]), "");
        assert!(close(0.1 + 0.2, 0.3));
        assert!(!close(0.5, 0.6));
        assert!(close(0.0, 0.0));
    }

    #[test]
    fn every_kind_is_documented() {
        let doc = include_str!("../../docs/GATEWAY.md");
        let section = doc.split("## Seals and verify").nth(1).unwrap_or_default();
        for (kind, _) in KINDS {
            assert!(
                section.contains(&format!("`{kind}`")),
                "{kind} is not in docs/GATEWAY.md, Seals and verify"
            );
        }
    }

    #[test]
    fn retention_explains_only_old_base_readings_and_purged_chains() {
        let opts = Options {
            entity: None,
            from: 0,
            to: 1,
            trusted: Vec::new(),
            retention: RetentionSection::default(),
            now: 100 * DAY,
        };
        let old = json!("1970-01-31T00:00:00Z"); // day 30, before the 35-day cutoff (day 65)
        let from = 31 * DAY;
        assert!(retention_explains(
            "meters[0].readings[0].at",
            Some(&old),
            from,
            from + DAY,
            &opts
        ));
        assert!(!retention_explains(
            "meters[0].readings[1].at",
            Some(&old),
            from,
            from + DAY,
            &opts
        ));
        assert!(!retention_explains(
            "meters[0].readings[0].value",
            Some(&json!(0.0)),
            from,
            from + DAY,
            &opts
        ));
        // Raw batches are kept forever by default: a changed chain is never retention.
        assert!(!retention_explains(
            "signatures[0].batches",
            None,
            from,
            from + DAY,
            &opts
        ));
    }
}
