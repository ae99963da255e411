//! `shopfloor-store`: what the gateway stores, as plain rows, and the [`Store`] trait that both
//! backends implement (`shopfloor-store-sqlite`, `shopfloor-store-pg`). No SQL here: each backend
//! writes its own dialect with compile-time checked queries (docs/ARCHITECTURE.md).
//!
//! Invariants every backend keeps (checked by the [`conformance`] suite that both run):
//! - [`Store::ingest`] is one transaction per call: a batch's raw payload, its decoded rows, its
//!   dirty ranges and its chain events commit together or not at all. `(agent, seq)` is unique:
//!   a second copy is reported as [`Outcome::Duplicate`] and changes nothing, also when two
//!   gateway replicas insert it concurrently.
//! - Raw payloads are stored verbatim (the exact bytes received, signature included).
//! - Roll-up rows are replaced, never accumulated: [`Store::apply_rollups`] upserts whole buckets,
//!   so recomputing a bucket twice gives the same row.
//! - Registry, input, token and user changes write their audit row in the same transaction.
//! - A seal is stored together with the superseding of its previous version in one transaction
//!   ([`Store::seal_put`]); `superseded_by` is the only seal column ever updated, and seal
//!   documents, evidence and manifests are returned byte for byte.
//! - Times are integer milliseconds since the Unix epoch (UTC), [`Ms`].

use std::future::Future;

#[cfg(feature = "conformance")]
pub mod conformance;

/// Milliseconds since 1970-01-01T00:00:00Z.
pub type Ms = i64;

/// Errors from a backend. `Db` carries the driver's message; nothing here is user input, so no
/// field names: callers add context.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database: {0}")]
    Db(String),
    #[error("migration: {0}")]
    Migration(String),
    #[error("stored data is inconsistent: {0}")]
    Corrupt(String),
}

pub type Result<T> = std::result::Result<T, StoreError>;

// ---------------------------------------------------------------------------------------------
// Ingest
// ---------------------------------------------------------------------------------------------

/// One verified batch with its decoded rows, ready to commit.
#[derive(Debug, Clone, PartialEq)]
pub struct NewBatch {
    pub agent: String,
    pub seq: i64,
    /// SHA-256 of the body bytes, 64 lowercase hex.
    pub body_hash: String,
    /// The body's `prev` (hash of the previous batch's body), 64 lowercase hex.
    pub prev: String,
    pub sealed: Ms,
    pub from: Ms,
    pub to: Ms,
    /// When the gateway received it.
    pub received: Ms,
    /// The MQTT payload exactly as received (`{"body":…,"sig":"…"}`).
    pub payload: Vec<u8>,
    pub samples: Vec<SampleRow>,
    pub states: Vec<StateRow>,
    pub readings: Vec<ReadingRow>,
    pub links: Vec<LinkRow>,
    /// Time ranges of devices whose roll-ups this batch changes.
    pub dirty: Vec<DirtyRange>,
}

/// A raw sample. Exactly one of `num`, `text`, `err` is set (bools are stored as 0/1 in `num`
/// with `is_bool`).
#[derive(Debug, Clone, PartialEq)]
pub struct SampleRow {
    pub device: String,
    pub point: String,
    pub t: Ms,
    pub num: Option<f64>,
    pub is_bool: bool,
    pub text: Option<String>,
    pub err: Option<String>,
}

/// A closed machine-state interval `[from, to)`.
#[derive(Debug, Clone, PartialEq)]
pub struct StateRow {
    pub device: String,
    pub from: Ms,
    pub to: Ms,
    /// ISO 22400-2 state name (`producing`, `setup`, `delay`, `idle`, `planned_down`, `offline`).
    pub state: String,
}

/// One raw register reading of a part counter (role `produced`/`good`/`scrap`) or a meter
/// (role = carrier).
#[derive(Debug, Clone, PartialEq)]
pub struct ReadingRow {
    pub device: String,
    pub role: String,
    pub point: String,
    pub t: Ms,
    pub v: f64,
    pub width_bits: Option<i32>,
    pub rollover: Option<f64>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct LinkRow {
    pub device: String,
    pub t: Ms,
    pub up: bool,
    pub detail: String,
}

/// `[from, to)` of `device` needs its roll-ups recomputed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirtyRange {
    pub device: String,
    pub from: Ms,
    pub to: Ms,
}

/// How a stored batch links to its neighbours in its agent's hash chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Chain {
    /// `prev` equals the stored hash of `seq - 1` (or seq 1 with the zero hash), and the stored
    /// `seq + 1`, if any, names this batch's hash.
    Linked,
    /// `seq - 1` is not stored (yet): batches `missing_from..seq` are missing.
    Gap { missing_from: i64 },
    /// A neighbour disagrees: `detail` says which (`prev` differs from the stored hash of
    /// seq - 1, or the stored seq + 1 names another hash).
    Fork { detail: String },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Stored {
        chain: Chain,
    },
    /// `(agent, seq)` was already stored; nothing changed. `same_hash` tells whether the stored
    /// copy has the same body hash (a redelivery) or not (a replay of another body: a fork).
    Duplicate {
        same_hash: bool,
    },
}

/// A payload that failed verification: kept for inspection, never used as data.
#[derive(Debug, Clone, PartialEq)]
pub struct QuarantineRow {
    pub received: Ms,
    pub topic: String,
    /// The agent named by the topic or the body, when one could be read.
    pub agent: Option<String>,
    pub seq: Option<i64>,
    /// Stable reason code (`bad_signature`, `unknown_agent`, `malformed`, …; docs/PROTOCOL.md).
    pub reason: String,
    /// Human-readable detail naming the field and the reason.
    pub detail: String,
    /// At most the first 64 KiB of the payload.
    pub payload: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct QuarantineEntry {
    pub id: i64,
    pub row: QuarantineRow,
}

/// A chain anomaly recorded at ingest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainEvent {
    pub agent: String,
    pub seq: i64,
    pub at: Ms,
    /// `gap` or `fork`.
    pub kind: String,
    pub detail: String,
}

/// Per-agent ingest state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentHead {
    pub agent: String,
    pub batches: i64,
    pub first_seq: i64,
    pub last_seq: i64,
    pub last_hash: String,
    pub last_to: Ms,
    pub last_received: Ms,
    /// Number of seq values between first and last that are not stored.
    pub missing: i64,
}

/// Stored batch metadata (and, when asked, the payload), for audit and `verify`.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredBatch {
    pub agent: String,
    pub seq: i64,
    pub body_hash: String,
    pub prev: String,
    pub sealed: Ms,
    pub from: Ms,
    pub to: Ms,
    pub received: Ms,
    pub payload: Option<Vec<u8>>,
}

/// The first and last stored batch of one agent whose window overlaps a period: what evidence
/// cites so an auditor can walk the hash chain between them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainRange {
    pub agent: String,
    pub first_seq: i64,
    pub first_hash: String,
    pub last_seq: i64,
    pub last_hash: String,
    pub batches: i64,
}

// ---------------------------------------------------------------------------------------------
// Roll-ups
// ---------------------------------------------------------------------------------------------

/// Roll-up granularity. Minute and hour buckets start at multiples of 60 000 / 3 600 000 ms;
/// day and month buckets start at local midnight in the gateway's time zone (computed by the
/// gateway, stored as instants).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Gran {
    Minute,
    Hour,
    Day,
    Month,
}

impl Gran {
    pub const ALL: [Gran; 4] = [Gran::Minute, Gran::Hour, Gran::Day, Gran::Month];

    /// Stable name stored in the `gran` column.
    pub fn as_str(self) -> &'static str {
        match self {
            Gran::Minute => "minute",
            Gran::Hour => "hour",
            Gran::Day => "day",
            Gran::Month => "month",
        }
    }

    pub fn parse(s: &str) -> Option<Gran> {
        Gran::ALL.into_iter().find(|g| g.as_str() == s)
    }
}

/// A queued dirty range (with its row id, to delete it once applied).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirtyEntry {
    pub id: i64,
    pub range: DirtyRange,
}

/// Everything stored for one device that a roll-up of `[from, to)` needs.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RawSlice {
    /// State intervals overlapping `[from, to)`, ordered by `from`.
    pub states: Vec<StateRow>,
    /// Readings with `from <= t < to`, plus, per (role, point), the last reading before `from`
    /// and the first reading at or after `to`; ordered by (role, point, t).
    pub readings: Vec<ReadingRow>,
    /// Samples and link events of the device with `from <= t < to`, counted per minute and
    /// point (`""` for link events), ordered by (minute, point): the roll-up's activity.
    pub activity: Vec<MinuteActivity>,
    /// Whether any sample, state, reading or link of the device lies in `[from, to)`.
    pub any_data: bool,
}

/// How many samples of one point (or, with point `""`, link events) a device delivered in one
/// minute.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MinuteActivity {
    /// Minute start (a multiple of 60 000 ms).
    pub minute: Ms,
    pub point: String,
    pub count: i64,
}

/// Milliseconds per state in one bucket of one device (time no interval covers is not here;
/// it is offline by the engine's rule).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateBucket {
    pub device: String,
    pub gran: Gran,
    pub bucket: Ms,
    pub producing: i64,
    pub setup: i64,
    pub delay: i64,
    pub idle: i64,
    pub planned_down: i64,
    pub offline: i64,
}

/// Counter or meter deltas (engine rules: wraps, resets; attributed to the later reading) of
/// one device and role in one bucket, with the times of its first and last reading.
#[derive(Debug, Clone, PartialEq)]
pub struct CounterBucket {
    pub device: String,
    pub role: String,
    pub gran: Gran,
    pub bucket: Ms,
    pub delta: f64,
    pub first_t: Ms,
    pub last_t: Ms,
    pub readings: i64,
    pub wraps: i64,
    pub resets: i64,
}

/// Which devices had any data in a bucket (for `networked` and data completeness).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActivityBucket {
    pub device: String,
    pub gran: Gran,
    pub bucket: Ms,
    /// Samples, state intervals, readings and link events of the device in the bucket.
    pub samples: i64,
    /// Distinct points that delivered a sample or reading in the bucket (coarser buckets: the
    /// maximum over their parts).
    pub points: i64,
}

/// One recomputation: replace these buckets (all rows of each `(device, gran, bucket)` named in
/// `cleared` are deleted first, so a bucket that lost its data disappears) and delete the dirty
/// entries `done`, in one transaction.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RollupUpdate {
    pub done: Vec<i64>,
    /// `(device, gran, from, to)`: bucket starts in `[from, to)` of that device and granularity
    /// are replaced by the rows below.
    pub cleared: Vec<(String, Gran, Ms, Ms)>,
    pub states: Vec<StateBucket>,
    pub counters: Vec<CounterBucket>,
    pub activity: Vec<ActivityBucket>,
}

/// Selects devices by entity path: `prefix` itself and everything below it (`prefix/…`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceFilter {
    pub prefix: String,
}

// ---------------------------------------------------------------------------------------------
// Seals (tamper evidence; the gateway's `seal` and `verify` modules)
// ---------------------------------------------------------------------------------------------

/// One version of the seal of an entity's period. The store keeps the signed document and what
/// it names as text and never interprets them; `superseded_by` is the only column ever changed
/// (by [`Store::seal_put`] of the next version) and is not part of the signed document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SealRow {
    /// SHA-256 of `doc` (64 lowercase hex): the seal's id.
    pub hash: String,
    /// Public key of the gateway that signed it (`ed25519:<base64>`).
    pub signer: String,
    /// 1, 2, … per signer: one seal chain per gateway key.
    pub seq: i64,
    /// Hash of the signer's previous seal (64 zeros for seq 1).
    pub prev: String,
    pub entity: String,
    /// The sealed period `[from, to)`.
    pub from: Ms,
    pub to: Ms,
    /// 1, 2, … per (entity, from, to).
    pub version: i64,
    /// Hash of the version this one replaces (`None` for version 1).
    pub supersedes: Option<String>,
    /// Hash of the version that replaced this one (`None` while it is the latest).
    pub superseded_by: Option<String>,
    pub sealed_at: Ms,
    /// The seal document (JSON text) exactly as signed.
    pub doc: String,
    /// Ed25519 signature over the bytes of `doc` (standard base64).
    pub sig: String,
    /// The batch manifest (JSON text); empty when not asked for ([`SealFilter::with_bodies`]).
    pub manifest: String,
    /// The evidence document (JSON text); empty when not asked for.
    pub evidence: String,
}

/// Which seals [`Store::seals`] returns.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SealFilter {
    /// Seals of this entity and the entities below it.
    pub entity: Option<DeviceFilter>,
    /// Seals whose period overlaps `[from, to)` (either bound may be open).
    pub from: Option<Ms>,
    pub to: Option<Ms>,
    /// Seals of one signer.
    pub signer: Option<String>,
    /// Only versions not superseded (`superseded_by` empty).
    pub latest_only: bool,
    /// With `manifest` and `evidence` (they can be large).
    pub with_bodies: bool,
}

/// The batch (agent, seq) a decoded row was stored from.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct BatchRef {
    pub agent: String,
    pub seq: i64,
}

/// Decoded rows of one device as stored, each with the batch it came from
/// ([`Store::batch_rows`]).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct BatchRows {
    pub samples: Vec<(BatchRef, SampleRow)>,
    pub states: Vec<(BatchRef, StateRow)>,
    pub readings: Vec<(BatchRef, ReadingRow)>,
    pub links: Vec<(BatchRef, LinkRow)>,
}

// ---------------------------------------------------------------------------------------------
// Registry, inputs, tokens, audit
// ---------------------------------------------------------------------------------------------

/// A registry item (kind `entity`, `agent`, `product`, `target`): its JSON document as validated
/// by the gateway. The store does not interpret `doc`.
#[derive(Debug, Clone, PartialEq)]
pub struct RegistryItem {
    pub kind: String,
    pub id: String,
    pub doc: serde_json::Value,
    pub updated_at: Ms,
    pub updated_by: String,
}

/// Who changed what, when, with the before and after documents (`null` for none).
#[derive(Debug, Clone, PartialEq)]
pub struct AuditEntry {
    pub id: i64,
    pub at: Ms,
    pub actor: String,
    /// `registry.entity`, `registry.agent`, `inputs`, `token`, …
    pub kind: String,
    pub item: String,
    pub before: serde_json::Value,
    pub after: serde_json::Value,
}

#[derive(Debug, Clone, PartialEq)]
pub struct AuditFilter {
    pub kind_prefix: Option<String>,
    pub item: Option<String>,
    pub since: Option<Ms>,
    pub limit: i64,
}

/// Economic inputs of one entity for one period, one version. `doc` holds the fields
/// (validated by the gateway).
#[derive(Debug, Clone, PartialEq)]
pub struct InputsRecord {
    pub entity: String,
    pub from: Ms,
    pub to: Ms,
    /// 1, 2, … per (entity, from, to); the highest is current.
    pub version: i64,
    pub doc: serde_json::Value,
    pub at: Ms,
    pub actor: String,
    /// Where it came from: `api`, `csv:<file>`, `xlsx:<file>`.
    pub source: String,
}

/// An API token (only its SHA-256 hash is stored).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRow {
    pub name: String,
    pub role: String,
    /// SHA-256 of the token, 64 lowercase hex.
    pub hash: String,
    pub created_at: Ms,
    pub created_by: String,
    pub revoked_at: Option<Ms>,
}

/// A dashboard user. Only an argon2id hash of the password is stored (a PHC string); the
/// store never sees a password and never writes the hash into the audit trail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserRow {
    pub name: String,
    pub role: String,
    /// PHC string (`$argon2id$v=19$m=…,t=…,p=…$salt$hash`).
    pub password_hash: String,
    pub created_at: Ms,
    pub created_by: String,
    pub disabled_at: Option<Ms>,
    pub password_changed_at: Ms,
}

/// A change of one user ([`Store::user_update`]); `None` fields stay as they are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserUpdate {
    pub name: String,
    pub role: Option<String>,
    /// A new password hash (PHC string); sets `password_changed_at` to `at`.
    pub password_hash: Option<String>,
    /// `Some(true)` disables (keeping an earlier `disabled_at`), `Some(false)` enables.
    pub disabled: Option<bool>,
    pub actor: String,
    pub at: Ms,
}

/// A dashboard session. Only SHA-256 hashes of the session id (the cookie) and of its CSRF
/// token are stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionRow {
    /// SHA-256 of the session id, 64 lowercase hex.
    pub id_hash: String,
    pub user: String,
    pub created_at: Ms,
    pub last_seen: Ms,
    /// Absolute end of the session.
    pub expires_at: Ms,
    /// SHA-256 of the session's CSRF token, 64 lowercase hex.
    pub csrf_hash: String,
}

/// Tables with a retention period.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retained {
    /// Raw batch payloads (and their batch rows).
    Batches,
    Samples,
    States,
    Readings,
    Links,
    Quarantine,
    Rollups(Gran),
}

/// The storage interface. Both backends implement every method; see the crate docs for the
/// invariants.
pub trait Store: Send + Sync {
    // --- ingest ---

    /// Commits the batches in one transaction, in order, and returns one outcome per batch. A
    /// duplicate `(agent, seq)` (also one earlier in the same call) is skipped, not an error.
    /// Chain checks see batches stored earlier in the same call. Writes a [`ChainEvent`] for a
    /// gap or fork, and queues the batches' dirty ranges.
    fn ingest(&self, batches: &[NewBatch]) -> impl Future<Output = Result<Vec<Outcome>>> + Send;
    fn quarantine(&self, rows: &[QuarantineRow]) -> impl Future<Output = Result<()>> + Send;
    /// Newest first, `id < before` when given.
    fn list_quarantine(
        &self,
        before: Option<i64>,
        limit: i64,
    ) -> impl Future<Output = Result<Vec<QuarantineEntry>>> + Send;
    /// Newest first, of one agent or all.
    fn chain_events(
        &self,
        agent: Option<&str>,
        limit: i64,
    ) -> impl Future<Output = Result<Vec<ChainEvent>>> + Send;
    fn agent_heads(&self) -> impl Future<Output = Result<Vec<AgentHead>>> + Send;
    /// Batches of one agent with `from_seq <= seq <= to_seq`, ordered by seq.
    fn batches(
        &self,
        agent: &str,
        from_seq: i64,
        to_seq: i64,
        with_payload: bool,
    ) -> impl Future<Output = Result<Vec<StoredBatch>>> + Send;
    /// Per agent, the first and last batch whose window `(from, to]` overlaps `(from, to]`.
    fn chain_ranges(
        &self,
        from: Ms,
        to: Ms,
    ) -> impl Future<Output = Result<Vec<ChainRange>>> + Send;
    /// Raw samples of one device point with `from <= t < to`, ordered by t, at most `limit`.
    fn samples(
        &self,
        device: &str,
        point: &str,
        from: Ms,
        to: Ms,
        limit: i64,
    ) -> impl Future<Output = Result<Vec<SampleRow>>> + Send;

    // --- roll-ups ---

    /// Oldest first.
    fn dirty(&self, limit: i64) -> impl Future<Output = Result<Vec<DirtyEntry>>> + Send;
    fn raw_slice(
        &self,
        device: &str,
        from: Ms,
        to: Ms,
    ) -> impl Future<Output = Result<RawSlice>> + Send;
    /// Minute (or coarser) buckets of one device in `[from, to)`, to cascade to the next
    /// granularity.
    fn device_buckets(
        &self,
        device: &str,
        gran: Gran,
        from: Ms,
        to: Ms,
    ) -> impl Future<Output = Result<(Vec<StateBucket>, Vec<CounterBucket>, Vec<ActivityBucket>)>> + Send;
    fn apply_rollups(&self, update: &RollupUpdate) -> impl Future<Output = Result<()>> + Send;
    /// Buckets of every device matching `filter` with bucket start in `[from, to)`.
    fn state_buckets(
        &self,
        filter: &DeviceFilter,
        gran: Gran,
        from: Ms,
        to: Ms,
    ) -> impl Future<Output = Result<Vec<StateBucket>>> + Send;
    fn counter_buckets(
        &self,
        filter: &DeviceFilter,
        gran: Gran,
        from: Ms,
        to: Ms,
    ) -> impl Future<Output = Result<Vec<CounterBucket>>> + Send;
    fn activity_buckets(
        &self,
        filter: &DeviceFilter,
        gran: Gran,
        from: Ms,
        to: Ms,
    ) -> impl Future<Output = Result<Vec<ActivityBucket>>> + Send;
    /// Per (device, role) matching `filter`: the latest `last_t` of a minute bucket in
    /// `[since, before)` (the base reading of a counter for a period starting at `before`).
    fn last_readings_before(
        &self,
        filter: &DeviceFilter,
        since: Ms,
        before: Ms,
    ) -> impl Future<Output = Result<Vec<(String, String, Ms)>>> + Send;
    /// Takes or renews a lease named `name` for `holder` until `until` if it is free, expired
    /// (`until` of the current holder ≤ `now`) or already held by `holder`. Only the lease
    /// holder runs the roll-up worker when several gateways share one database.
    fn lease(
        &self,
        name: &str,
        holder: &str,
        now: Ms,
        until: Ms,
    ) -> impl Future<Output = Result<bool>> + Send;

    // --- seals (tamper evidence) ---

    /// Stores a seal and, when it supersedes a stored version, sets that version's
    /// `superseded_by` to this seal's hash, in one transaction. A second seal with the same
    /// hash, (signer, seq) or (entity, from, to, version) is an error and writes nothing.
    fn seal_put(&self, seal: &SealRow) -> impl Future<Output = Result<()>> + Send;
    /// Seals matching `filter`, ordered by (entity, from, to, version).
    fn seals(&self, filter: &SealFilter) -> impl Future<Output = Result<Vec<SealRow>>> + Send;
    /// The seal with the highest seq of `signer` (without bodies), if any.
    fn seal_head(&self, signer: &str) -> impl Future<Output = Result<Option<SealRow>>> + Send;
    /// A named state document of the sealer (JSON), if stored.
    fn seal_state(
        &self,
        name: &str,
    ) -> impl Future<Output = Result<Option<serde_json::Value>>> + Send;
    /// Inserts or replaces a named state document of the sealer.
    fn seal_state_put(
        &self,
        name: &str,
        doc: &serde_json::Value,
        at: Ms,
    ) -> impl Future<Output = Result<()>> + Send;
    /// The decoded rows of `device` whose time lies in `[from, to]` (samples, readings, links:
    /// `t`; states: their end), each with the batch it was stored from: what `verify` compares
    /// with a fresh decode of those batches' signed payloads. Read through the per-device
    /// indexes (there is no index by batch: it would cost every ingested row); ordered by batch,
    /// then time.
    fn batch_rows(
        &self,
        device: &str,
        from: Ms,
        to: Ms,
    ) -> impl Future<Output = Result<BatchRows>> + Send;

    // --- registry, inputs, tokens, audit ---

    fn registry_list(&self, kind: &str) -> impl Future<Output = Result<Vec<RegistryItem>>> + Send;
    fn registry_get(
        &self,
        kind: &str,
        id: &str,
    ) -> impl Future<Output = Result<Option<RegistryItem>>> + Send;
    /// Inserts or replaces, writing an audit entry `registry.<kind>` with before and after, in
    /// one transaction. Returns the previous document. An unchanged document writes nothing.
    fn registry_put(
        &self,
        item: &RegistryItem,
    ) -> impl Future<Output = Result<Option<serde_json::Value>>> + Send;
    /// Deletes with an audit entry; returns the deleted document.
    fn registry_delete(
        &self,
        kind: &str,
        id: &str,
        actor: &str,
        at: Ms,
    ) -> impl Future<Output = Result<Option<serde_json::Value>>> + Send;
    /// Stores a new version (previous version + 1) with an audit entry `inputs`; returns it.
    fn inputs_put(&self, record: &InputsRecord) -> impl Future<Output = Result<i64>> + Send;
    /// Current (highest) version of every record of entities matching `filter` whose period
    /// overlaps `[from, to)`.
    fn inputs_current(
        &self,
        filter: &DeviceFilter,
        from: Ms,
        to: Ms,
    ) -> impl Future<Output = Result<Vec<InputsRecord>>> + Send;
    /// Every version of one entity's records, newest first.
    fn inputs_history(
        &self,
        entity: &str,
    ) -> impl Future<Output = Result<Vec<InputsRecord>>> + Send;
    fn audit(&self, filter: &AuditFilter) -> impl Future<Output = Result<Vec<AuditEntry>>> + Send;
    /// Adds a token (audited as `token`, with the hash, never the token).
    fn token_add(&self, token: &TokenRow) -> impl Future<Output = Result<()>> + Send;
    fn token_by_hash(&self, hash: &str) -> impl Future<Output = Result<Option<TokenRow>>> + Send;
    fn tokens(&self) -> impl Future<Output = Result<Vec<TokenRow>>> + Send;
    /// Revokes by name (audited); false when no such active token.
    fn token_revoke(
        &self,
        name: &str,
        actor: &str,
        at: Ms,
    ) -> impl Future<Output = Result<bool>> + Send;

    // --- dashboard users and sessions ---

    /// Adds a user, audited as `user` (name, role, dates; never the password hash) in the same
    /// transaction. False (and nothing written) when a user of that name exists.
    fn user_add(&self, user: &UserRow) -> impl Future<Output = Result<bool>> + Send;
    fn user_get(&self, name: &str) -> impl Future<Output = Result<Option<UserRow>>> + Send;
    /// Every user, ordered by name.
    fn users(&self) -> impl Future<Output = Result<Vec<UserRow>>> + Send;
    /// Applies `update` with an audit entry `user` in one transaction; a new password or
    /// disabling also deletes the user's sessions in that transaction. Returns the user as it
    /// is now (`None`: no such user). A change that changes nothing writes nothing.
    fn user_update(
        &self,
        update: &UserUpdate,
    ) -> impl Future<Output = Result<Option<UserRow>>> + Send;
    /// Stores a new session (not audited: signing in is no data change).
    fn session_add(&self, session: &SessionRow) -> impl Future<Output = Result<()>> + Send;
    /// The session with this id hash and its user, in one read.
    fn session_get(
        &self,
        id_hash: &str,
    ) -> impl Future<Output = Result<Option<(SessionRow, UserRow)>>> + Send;
    /// Moves `last_seen` forward to `at` (never back).
    fn session_touch(&self, id_hash: &str, at: Ms) -> impl Future<Output = Result<()>> + Send;
    /// Deletes one session; false when there was none.
    fn session_delete(&self, id_hash: &str) -> impl Future<Output = Result<bool>> + Send;
    /// Deletes sessions with `expires_at <= now` or `last_seen < idle_before`; returns the
    /// count.
    fn sessions_purge(&self, now: Ms, idle_before: Ms) -> impl Future<Output = Result<u64>> + Send;

    // --- housekeeping ---

    /// Deletes rows of `table` older than `before` (by their time column); returns the count.
    fn purge(&self, table: Retained, before: Ms) -> impl Future<Output = Result<u64>> + Send;
    /// A trivial round trip (health checks, latency metrics).
    fn ping(&self) -> impl Future<Output = Result<()>> + Send;
}
