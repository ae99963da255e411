//! The outbox: the agent's durable, bounded store-and-forward queue of batches (SQLite).
//!
//! **Why SQLite.** The outbox needs atomic multi-row updates (seal a batch *and* advance the
//! chain head; strip one batch *and* count it), durability with a choice of fsync policy, crash
//! recovery that needs no code of ours, and a file a plant engineer can inspect with the
//! `sqlite3` shell. SQLite in WAL mode gives all of that in one file, with one writer and no
//! server; it is bundled (no system library), already in the tree through sqlx (which the
//! gateway uses too), and its recovery after power loss is tested far beyond what a hand-written
//! append-only log would be. Batches are few (one per interval) and small, so its throughput is
//! not a concern.
//!
//! **Seal on send.** The pipeline [`Outbox::push`]es unsigned [`Contents`] every batch
//! interval; they are committed (and, with [`Fsync::Full`], fsynced) when `push` returns.
//! Sealing (seq, prev, signature) happens in [`Outbox::seal_next`], when the publisher takes
//! the oldest unsealed batch for its first publication, in the same transaction that stores the
//! sealed payload and advances the chain head (`last_seq`, `last_hash`). Sealed rows never
//! change again and are deleted only by [`Outbox::ack`] (PUBACK). So the budget policy can
//! rewrite unsealed contents without breaking any signature or the chain, and seq numbers
//! have no gaps: a batch dropped by the budget was never sealed.
//!
//! **Budget policy** (also in `docs/PROTOCOL.md` § Outbox). Each row's `bytes` is the stored
//! size of its contents JSON (unsealed) or of its payload (sealed). After each push, in the
//! push's transaction, while the total of `bytes` exceeds `budget_bytes`:
//! 1. strip the raw samples of the oldest unsealed row that still has any
//!    ([`Contents::strip_samples`]: summaries, states, counters and link changes stay, and each
//!    device records `dropped.samples`), adding them to `dropped_samples`;
//! 2. once no unsealed row has raw samples, delete the oldest unsealed row entirely, adding it to
//!    `dropped_batches` (its states and counters are lost: the last resort; the gateway sees
//!    the hole as a gap between one batch's `to` and the next one's `from`);
//! 3. sealed rows are never touched: if only sealed rows are left the push succeeds over budget
//!    (the publisher bounds them by sealing only within its in-flight window).
//!
//! The row just pushed is treated like the others (being newest, it is stripped last and
//! deleted last). Every drop is counted in `meta` (totals ever) and in the [`PushReport`].
//! An unsealed row whose stored contents no longer parse or validate (disk corruption) is
//! deleted and counted as a dropped batch, logged at error level, so one bad row can never
//! block the queue.
//!
//! **Memory.** The statements that bind or read a batch's contents or payload are not kept
//! prepared (`persistent(false)`): a cached SQLite statement keeps its last bound blob and its
//! last row's values until it runs again, which held two copies of the largest batch (about
//! 9 MiB at 100,000 tags/s) for the agent's whole life. `push` sizes its encoding buffer from
//! the previous batch, so the buffer does not double past the batch's size.
//!
//! **Schema** (migration 1, applied by an embedded `sqlx::migrate::Migrator`; the applied
//! version is recorded in `_sqlx_migrations`):
//! `batches(id INTEGER PRIMARY KEY AUTOINCREMENT, created_ms, from_ms, to_ms, samples, bytes,
//! seq UNIQUE NULL, hash NULL, contents BLOB NULL, payload BLOB NULL)`: unsealed rows have
//! `contents` (JSON of `Contents`) and no seq; sealed rows have `seq`, `hash` (body hash) and
//! `payload`, and `contents` is NULL. The blobs are the last columns so that scans for sizes
//! and ids never read them. Migration 3 adds `contents_sha256 BLOB NULL`: the SHA-256 of an
//! unsealed row's `contents`, written with them; [`Outbox::seal_next`] checks it and splices
//! the stored bytes into the body ([`batch::seal_encoded`]) instead of decoding them again (a
//! mismatch is damage: the row is dropped and counted; rows without a hash are decoded and
//! checked as before). `meta(key PRIMARY KEY, value)` holds `last_seq`, `last_hash`,
//! `dropped_samples`, `dropped_batches` and `agent` (the agent id of the chain, set at the
//! first seal; sealing for another id is refused, as it would break the chain).
//!
//! The file is opened with one connection (one writer), `journal_mode=WAL`, `busy_timeout`
//! 5 s, `synchronous=FULL` or `NORMAL` per [`Fsync`]. `bytes` counts batch data only; SQLite's
//! pages, indexes and WAL (up to about 4 MiB between checkpoints) come on top, and freed pages
//! are reused, not returned to the file system. A connection left inside a transaction by a
//! failed write (a full disk: SQLite rolls back on its own, sqlx's ROLLBACK then fails) is
//! closed when it returns to the pool and replaced, so the outbox works again as soon as there
//! is space (`gateway/tests/faults.rs`, `agent_disk_full`).

use std::fmt;
use std::io::{self, Read as _};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use ed25519_dalek::SigningKey;
use serde::{Deserialize, Serialize};
use sqlx::Row as _;
use sqlx::migrate::{MigrateError, Migration, MigrationType, Migrator};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{Connection as _, SqlSafeStr as _, Sqlite, Transaction};

use shopfloor_core::batch::{self, BatchError, Contents, Millis, Sealed};

/// When a committed batch is on the disk itself, not only in the OS page cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Fsync {
    /// `synchronous=FULL`: every commit is fsynced; a batch `push` returned for survives a
    /// power cut. The default.
    #[default]
    Full,
    /// `synchronous=NORMAL` (WAL): survives a crash or SIGKILL of the agent; a power cut may
    /// lose the last commits before the next checkpoint. Fewer writes on weak flash storage.
    Normal,
}

impl FromStr for Fsync {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "full" => Ok(Self::Full),
            "normal" => Ok(Self::Normal),
            _ => Err(format!("must be \"full\" or \"normal\" (got {s:?})")),
        }
    }
}

impl fmt::Display for Fsync {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Full => "full",
            Self::Normal => "normal",
        })
    }
}

/// Where the outbox lives and how it behaves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxConfig {
    /// The SQLite file, e.g. `<data_dir>/outbox.db`. Its directory is created (mode 0700) if
    /// missing.
    pub path: PathBuf,
    /// Bound on the stored batch data (see the module documentation).
    pub budget_bytes: u64,
    pub fsync: Fsync,
}

/// What one push did to stay within the budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PushReport {
    /// Row id of the pushed batch (ids only grow; the row may already have been dropped when
    /// the budget is smaller than one batch).
    pub id: i64,
    /// Raw samples removed by this push's budget enforcement (stripped, or in dropped batches).
    pub stripped_samples: u64,
    /// Unsealed batches deleted entirely by this push's budget enforcement.
    pub dropped_batches: u64,
}

/// A snapshot of the outbox.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct OutboxStats {
    /// Rows stored (unsealed and sealed-but-unacknowledged).
    pub batches: u64,
    /// Sealed rows (published at least once, not acknowledged yet).
    pub sealed: u64,
    /// Sum of the rows' stored sizes (what the budget bounds).
    pub bytes: u64,
    /// When the oldest stored row was pushed.
    pub oldest_created_ms: Option<Millis>,
    /// Seq of the last sealed batch (0 before the first).
    pub last_seq: u64,
    /// Raw samples ever dropped by the budget policy.
    pub dropped_samples: u64,
    /// Batches ever dropped by the budget policy (or found corrupt).
    pub dropped_batches: u64,
}

/// An outbox error; every one names the file.
#[derive(Debug, thiserror::Error)]
pub enum OutboxError {
    /// The file cannot be opened as an outbox.
    #[error("outbox {}: cannot open: {reason}", path.display())]
    Open { path: PathBuf, reason: String },
    /// A database operation failed.
    #[error("outbox {}: {action}: {}", path.display(), describe(error))]
    Db {
        path: PathBuf,
        action: &'static str,
        error: sqlx::Error,
    },
    /// Stored data is not what the outbox wrote.
    #[error("outbox {}: {what}", path.display())]
    Corrupt { path: PathBuf, what: String },
    /// Contents refused on push, or a batch that cannot be sealed.
    #[error("outbox {}: {context}: {error}", path.display())]
    Batch {
        path: PathBuf,
        context: String,
        error: BatchError,
    },
}

impl OutboxError {
    /// Whether retrying the same call can never succeed: contents refused by
    /// [`Outbox::push`] (they fail [`batch::check_contents`]: a bug upstream, drop them and
    /// log), or a batch [`Outbox::seal_next`] cannot seal (agent id refused). Database errors
    /// (disk full, locked, I/O) are transient.
    pub fn is_permanent(&self) -> bool {
        matches!(self, Self::Batch { .. })
    }
}

/// The sqlx error, with a hint for the SQLite result codes a plant engineer can act on.
fn describe(e: &sqlx::Error) -> String {
    let hint = match e {
        sqlx::Error::Database(db) => match db.code().as_deref() {
            Some("26") => " (not an SQLite database, or a damaged one)",
            Some("14") => " (check that the directory exists and the agent may write there)",
            Some("13") => " (disk full)",
            Some("8") => " (read-only file or file system)",
            Some("5") | Some("6") => {
                " (another process holds the database: only one agent per data directory)"
            }
            Some("11") => " (the database file is damaged)",
            _ => "",
        },
        _ => "",
    };
    format!("{e}{hint}")
}

const MIGRATION_1: &str = "
CREATE TABLE batches (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    created_ms  INTEGER NOT NULL,
    from_ms     INTEGER NOT NULL,
    to_ms       INTEGER NOT NULL,
    samples     INTEGER NOT NULL,
    bytes       INTEGER NOT NULL,
    seq         INTEGER UNIQUE,
    hash        TEXT,
    contents    BLOB,
    payload     BLOB,
    CHECK ((seq IS NULL) = (payload IS NULL)),
    CHECK ((seq IS NULL) = (hash IS NULL)),
    CHECK ((seq IS NULL) = (contents IS NOT NULL))
);
CREATE INDEX batches_unsealed ON batches (id) WHERE seq IS NULL;
CREATE INDEX batches_unsealed_samples ON batches (id) WHERE seq IS NULL AND samples > 0;
CREATE TABLE meta (
    key   TEXT PRIMARY KEY NOT NULL,
    value
);
INSERT INTO meta (key, value) VALUES
    ('last_seq', 0),
    ('last_hash', '0000000000000000000000000000000000000000000000000000000000000000'),
    ('dropped_samples', 0),
    ('dropped_batches', 0);
";

/// The budget check sums `bytes` on every push: without this covering index that sum reads the
/// first page of every row (17 ms at a one-hour backlog of 3,600 batches, measured), with it
/// only the index (0.14 ms).
const MIGRATION_2: &str = "CREATE INDEX batches_bytes ON batches (bytes);";

/// The SHA-256 of each unsealed row's `contents`, written with them: sealing checks it and then
/// splices the stored encoding into the body ([`batch::seal_encoded`]) instead of decoding and
/// encoding it again, which was half of the agent's CPU at 100,000 tags/s (`docs/BENCHMARKS.md`).
/// Rows stored before this migration have none and are sealed the old way.
const MIGRATION_3: &str = "ALTER TABLE batches ADD COLUMN contents_sha256 BLOB;";

const SQLITE_HEADER: &[u8; 16] = b"SQLite format 3\0";

/// The durable queue. Cheap to clone (one shared connection); all methods are async and
/// serialised on that connection.
#[derive(Debug, Clone)]
pub struct Outbox {
    pool: SqlitePool,
    path: PathBuf,
    budget: u64,
    /// Encoded size of the last pushed contents: the next encoding buffer's size hint.
    last_encoded: Arc<AtomicUsize>,
}

/// Opens (creating if missing) the outbox file, applies the schema and checks the chain head.
/// Refuses, naming the file and the reason: a directory, a file the agent may not read and
/// write, a file that is not SQLite, an SQLite database of something else (tables but no
/// outbox schema), a schema from a newer agent.
pub async fn open(cfg: OutboxConfig) -> Result<Outbox, OutboxError> {
    Outbox::open(cfg).await
}

impl Outbox {
    /// See [`open`].
    pub async fn open(cfg: OutboxConfig) -> Result<Self, OutboxError> {
        let path = cfg.path;
        precheck(&path).map_err(|reason| OutboxError::Open {
            path: path.clone(),
            reason,
        })?;
        let opts = SqliteConnectOptions::new()
            .filename(&path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(match cfg.fsync {
                Fsync::Full => SqliteSynchronous::Full,
                Fsync::Normal => SqliteSynchronous::Normal,
            })
            .busy_timeout(Duration::from_secs(5))
            // 512 KiB of page cache instead of SQLite's 2 MiB: rows are written once and
            // read once, in order, so a larger cache only keeps the overflow pages of batches
            // already sealed or sent.
            .pragma("cache_size", "-512");
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .idle_timeout(None)
            .max_lifetime(None)
            // When a write fails on a full disk (or an I/O error), SQLite may roll the
            // transaction back on its own; sqlx's ROLLBACK then fails and would leave the
            // connection marked as inside a transaction for good, refusing every later
            // `BEGIN IMMEDIATE` until a restart. Such a connection is closed when it comes
            // back to the pool, and the next call opens a fresh one.
            .after_release(|conn, _| {
                let healthy = !conn.is_in_transaction();
                Box::pin(async move { Ok(healthy) })
            })
            .connect_with(opts)
            .await
            .map_err(|e| OutboxError::Open {
                path: path.clone(),
                reason: describe(&e),
            })?;
        // An SQLite database of something else: refuse rather than add our tables to it.
        let foreign: Result<(i64, i64), sqlx::Error> = sqlx::query_as(
            "SELECT COUNT(*), COUNT(*) FILTER (WHERE name = '_sqlx_migrations') \
             FROM sqlite_schema WHERE type = 'table' AND name NOT LIKE 'sqlite_%'",
        )
        .fetch_one(&pool)
        .await;
        match foreign {
            Ok((tables, ours)) if tables > 0 && ours == 0 => {
                pool.close().await;
                return Err(OutboxError::Open {
                    path,
                    reason: "an SQLite database, but not an outbox (it has other tables); \
                             point the outbox elsewhere"
                        .to_owned(),
                });
            }
            Ok(_) => {}
            Err(e) => {
                pool.close().await;
                return Err(OutboxError::Open {
                    path,
                    reason: describe(&e),
                });
            }
        }
        let migrator = Migrator::with_migrations(vec![
            Migration::new(
                1,
                "outbox".into(),
                MigrationType::Simple,
                MIGRATION_1.into_sql_str(),
                false,
            ),
            Migration::new(
                2,
                "outbox size index".into(),
                MigrationType::Simple,
                MIGRATION_2.into_sql_str(),
                false,
            ),
            Migration::new(
                3,
                "contents hash".into(),
                MigrationType::Simple,
                MIGRATION_3.into_sql_str(),
                false,
            ),
        ]);
        if let Err(e) = migrator.run(&pool).await {
            pool.close().await;
            let hint = match e {
                MigrateError::VersionMissing(_) => " (written by a newer agent?)",
                MigrateError::VersionMismatch(_) => " (not an outbox of this agent version)",
                _ => "",
            };
            return Err(OutboxError::Open {
                path,
                reason: format!("schema: {e}{hint}"),
            });
        }
        let outbox = Self {
            pool,
            path,
            budget: cfg.budget_bytes,
            last_encoded: Arc::new(AtomicUsize::new(0)),
        };
        // Fail now, not at the first seal, if the chain head is damaged.
        outbox.chain_head().await?;
        Ok(outbox)
    }

    /// The SQLite file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The budget this outbox enforces.
    pub fn budget_bytes(&self) -> u64 {
        self.budget
    }

    /// Closes the connection (checkpointing the WAL). Dropping the outbox without closing is
    /// safe too: every committed batch is in the file or its WAL.
    pub async fn close(self) {
        self.pool.close().await;
    }

    fn db(&self, action: &'static str) -> impl FnOnce(sqlx::Error) -> OutboxError + '_ {
        move |error| OutboxError::Db {
            path: self.path.clone(),
            action,
            error,
        }
    }

    fn corrupt(&self, what: impl Into<String>) -> OutboxError {
        OutboxError::Corrupt {
            path: self.path.clone(),
            what: what.into(),
        }
    }

    async fn begin(&self) -> Result<Transaction<'static, Sqlite>, OutboxError> {
        // IMMEDIATE: take the write lock at once (no deferred-upgrade SQLITE_BUSY).
        self.pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(self.db("begin a transaction"))
    }

    /// Stores `contents` (validated with [`batch::check_contents`]: contents that could never
    /// be sealed are refused here, where the bug is), then enforces the budget. Durable when it
    /// returns.
    pub async fn push(&self, contents: &Contents) -> Result<PushReport, OutboxError> {
        batch::check_contents(contents).map_err(|error| OutboxError::Batch {
            path: self.path.clone(),
            context: "refused contents".to_owned(),
            error,
        })?;
        // Sized from the last batch (an eighth more): growing by doubling from empty left a
        // buffer up to twice the batch's size.
        let hint = self.last_encoded.load(Ordering::Relaxed);
        let mut json = Vec::with_capacity(hint + hint / 8);
        serde_json::to_writer(&mut json, contents)
            .map_err(|e| self.corrupt(format!("cannot encode contents: {e}")))?;
        self.last_encoded.store(json.len(), Ordering::Relaxed);
        let samples = to_i64(contents.sample_count());
        let mut tx = self.begin().await?;
        let hash = sha256(&json);
        let row = sqlx::query(
            "INSERT INTO batches (created_ms, from_ms, to_ms, samples, bytes, contents, \
             contents_sha256) VALUES (?, ?, ?, ?, ?, ?, ?) RETURNING id",
        )
        .persistent(false)
        .bind(now_ms())
        .bind(contents.from)
        .bind(contents.to)
        .bind(samples)
        .bind(to_i64(json.len() as u64))
        .bind(json)
        .bind(hash.to_vec())
        .fetch_one(&mut *tx)
        .await
        .map_err(self.db("store a batch"))?;
        let id: i64 = row.try_get(0).map_err(self.db("store a batch"))?;
        let (stripped_samples, dropped_batches) = self.enforce_budget(&mut tx).await?;
        tx.commit().await.map_err(self.db("commit a batch"))?;
        Ok(PushReport {
            id,
            stripped_samples,
            dropped_batches,
        })
    }

    /// The budget policy (module documentation), inside the push's transaction. Returns
    /// (samples dropped, batches dropped).
    async fn enforce_budget(
        &self,
        tx: &mut Transaction<'static, Sqlite>,
    ) -> Result<(u64, u64), OutboxError> {
        let mut total: i64 = sqlx::query_scalar("SELECT COALESCE(SUM(bytes), 0) FROM batches")
            .fetch_one(&mut **tx)
            .await
            .map_err(self.db("sum stored sizes"))?;
        let budget = to_i64(self.budget);
        let (mut samples_dropped, mut batches_dropped) = (0u64, 0u64);
        while total > budget {
            // 1. Strip the raw samples of the oldest unsealed row that still has some.
            let row = sqlx::query(
                "SELECT id, bytes, contents FROM batches \
                 WHERE seq IS NULL AND samples > 0 ORDER BY id LIMIT 1",
            )
            .persistent(false)
            .fetch_optional(&mut **tx)
            .await
            .map_err(self.db("find a batch to strip"))?;
            if let Some(row) = row {
                let id: i64 = row.try_get(0).map_err(self.db("read a batch"))?;
                let bytes: i64 = row.try_get(1).map_err(self.db("read a batch"))?;
                let json: Vec<u8> = row.try_get(2).map_err(self.db("read a batch"))?;
                match serde_json::from_slice::<Contents>(&json) {
                    Ok(mut c) => {
                        let n = c.strip_samples();
                        let json = serde_json::to_vec(&c)
                            .map_err(|e| self.corrupt(format!("cannot encode contents: {e}")))?;
                        let new_bytes = to_i64(json.len() as u64);
                        let hash = sha256(&json);
                        sqlx::query(
                            "UPDATE batches SET contents = ?, contents_sha256 = ?, samples = 0, \
                             bytes = ? WHERE id = ?",
                        )
                        .persistent(false)
                        .bind(json)
                        .bind(hash.to_vec())
                        .bind(new_bytes)
                        .bind(id)
                        .execute(&mut **tx)
                        .await
                        .map_err(self.db("strip a batch"))?;
                        total += new_bytes - bytes;
                        samples_dropped += n;
                        tracing::debug!(
                            outbox = %self.path.display(), id, samples = n,
                            "budget: raw samples stripped"
                        );
                    }
                    Err(e) => {
                        let (s, b) = self
                            .drop_row(tx, id, &format!("contents unreadable: {e}"))
                            .await?;
                        total -= b;
                        samples_dropped += s;
                        batches_dropped += 1;
                    }
                }
                continue;
            }
            // 2. Last resort: drop the oldest unsealed row.
            let id: Option<i64> =
                sqlx::query_scalar("SELECT id FROM batches WHERE seq IS NULL ORDER BY id LIMIT 1")
                    .fetch_optional(&mut **tx)
                    .await
                    .map_err(self.db("find a batch to drop"))?;
            let Some(id) = id else {
                // 3. Only sealed rows left: never touched.
                tracing::warn!(
                    outbox = %self.path.display(), total, budget,
                    "budget exceeded by sealed, unacknowledged batches alone"
                );
                break;
            };
            let (s, b) = self
                .drop_row(
                    tx,
                    id,
                    "over the disk budget with no raw samples left to drop",
                )
                .await?;
            total -= b;
            samples_dropped += s;
            batches_dropped += 1;
        }
        self.count_drops(tx, samples_dropped, batches_dropped)
            .await?;
        Ok((samples_dropped, batches_dropped))
    }

    /// Deletes one unsealed row; returns its (samples, bytes).
    async fn drop_row(
        &self,
        tx: &mut Transaction<'static, Sqlite>,
        id: i64,
        why: &str,
    ) -> Result<(u64, i64), OutboxError> {
        let row = sqlx::query(
            "DELETE FROM batches WHERE id = ? AND seq IS NULL \
             RETURNING samples, bytes, from_ms, to_ms",
        )
        .bind(id)
        .fetch_optional(&mut **tx)
        .await
        .map_err(self.db("drop a batch"))?;
        let Some(row) = row else {
            return Ok((0, 0));
        };
        let samples: i64 = row.try_get(0).map_err(self.db("drop a batch"))?;
        let bytes: i64 = row.try_get(1).map_err(self.db("drop a batch"))?;
        let from: i64 = row.try_get(2).map_err(self.db("drop a batch"))?;
        let to: i64 = row.try_get(3).map_err(self.db("drop a batch"))?;
        tracing::error!(
            outbox = %self.path.display(), id, from, to, samples,
            "batch dropped: {why}; its states and counters are lost"
        );
        Ok((u64::try_from(samples).unwrap_or(0), bytes))
    }

    async fn count_drops(
        &self,
        tx: &mut Transaction<'static, Sqlite>,
        samples: u64,
        batches: u64,
    ) -> Result<(), OutboxError> {
        if samples == 0 && batches == 0 {
            return Ok(());
        }
        for (key, n) in [("dropped_samples", samples), ("dropped_batches", batches)] {
            sqlx::query("UPDATE meta SET value = value + ? WHERE key = ?")
                .bind(to_i64(n))
                .bind(key)
                .execute(&mut **tx)
                .await
                .map_err(self.db("count dropped data"))?;
        }
        Ok(())
    }

    /// Seals the oldest unsealed batch (lowest id) for its first publication: seq = last_seq +
    /// 1, prev = last_hash, signed with `key`, sealed at `now`; stores the payload, clears the
    /// contents and advances the chain head, in one transaction. `None` when nothing is
    /// waiting. Refuses (error, nothing changed) to seal for an agent id other than the one
    /// the chain was started with.
    pub async fn seal_next(
        &self,
        agent: &str,
        key: &SigningKey,
        now: Millis,
    ) -> Result<Option<Sealed>, OutboxError> {
        // The publisher asks often, mostly when nothing waits: answer that with a read on the
        // partial index instead of taking the write lock.
        let waiting: bool =
            sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM batches WHERE seq IS NULL)")
                .fetch_one(&self.pool)
                .await
                .map_err(self.db("find the next batch to seal"))?;
        if !waiting {
            return Ok(None);
        }
        let mut tx = self.begin().await?;
        let mut dropped = (0u64, 0u64);
        let sealed = loop {
            let row = sqlx::query(
                "SELECT id, contents, contents_sha256 FROM batches WHERE seq IS NULL \
                 ORDER BY id LIMIT 1",
            )
            .persistent(false)
            .fetch_optional(&mut *tx)
            .await
            .map_err(self.db("find the next batch to seal"))?;
            let Some(row) = row else {
                break None;
            };
            let id: i64 = row.try_get(0).map_err(self.db("read a batch"))?;
            let json: Vec<u8> = row.try_get(1).map_err(self.db("read a batch"))?;
            let hash: Option<Vec<u8>> = row.try_get(2).map_err(self.db("read a batch"))?;
            // The stored bytes are the ones `push` checked when their hash still matches:
            // seal them as they are. Rows of an older outbox have no hash and are decoded
            // and checked again; a mismatch is damage on disk.
            let stored = match hash {
                Some(h) if h.as_slice() == sha256(&json).as_slice() => Ok(Stored::Checked(json)),
                Some(_) => Err("contents changed on disk (SHA-256 mismatch)".to_owned()),
                None => match serde_json::from_slice::<Contents>(&json) {
                    Ok(c) => match batch::check_contents(&c) {
                        Ok(()) => Ok(Stored::Decoded(c)),
                        Err(e) => Err(format!("stored contents invalid: {e}")),
                    },
                    Err(e) => Err(format!("contents unreadable: {e}")),
                },
            };
            let stored = match stored {
                Ok(s) => s,
                Err(why) => {
                    let (s, _) = self.drop_row(&mut tx, id, &why).await?;
                    dropped = (dropped.0 + s, dropped.1 + 1);
                    continue;
                }
            };
            let (last_seq, last_hash) = self.head(&mut tx).await?;
            self.claim_agent(&mut tx, agent, last_seq).await?;
            let seq = last_seq + 1;
            let sealed = match stored {
                Stored::Checked(json) => {
                    batch::seal_encoded(&json, agent, seq, &last_hash, now, key)
                }
                Stored::Decoded(c) => batch::seal(c, agent, seq, &last_hash, now, key),
            }
            .map_err(|error| OutboxError::Batch {
                path: self.path.clone(),
                context: format!("cannot seal batch {id} as seq {seq}"),
                error,
            })?;
            sqlx::query(
                "UPDATE batches SET seq = ?, hash = ?, payload = ?, contents = NULL, bytes = ? \
                 WHERE id = ? AND seq IS NULL",
            )
            .persistent(false)
            .bind(to_i64(seq))
            .bind(&sealed.body_hash)
            .bind(&sealed.payload)
            .bind(to_i64(sealed.payload.len() as u64))
            .bind(id)
            .execute(&mut *tx)
            .await
            .map_err(self.db("store a sealed batch"))?;
            sqlx::query("UPDATE meta SET value = ? WHERE key = 'last_seq'")
                .bind(to_i64(seq))
                .execute(&mut *tx)
                .await
                .map_err(self.db("advance the chain head"))?;
            sqlx::query("UPDATE meta SET value = ? WHERE key = 'last_hash'")
                .bind(&sealed.body_hash)
                .execute(&mut *tx)
                .await
                .map_err(self.db("advance the chain head"))?;
            break Some(sealed);
        };
        self.count_drops(&mut tx, dropped.0, dropped.1).await?;
        tx.commit()
            .await
            .map_err(self.db("commit a sealed batch"))?;
        Ok(sealed)
    }

    /// Records the agent id at the first seal; refuses another one afterwards.
    async fn claim_agent(
        &self,
        tx: &mut Transaction<'static, Sqlite>,
        agent: &str,
        last_seq: u64,
    ) -> Result<(), OutboxError> {
        let stored: Option<String> =
            sqlx::query_scalar("SELECT CAST(value AS TEXT) FROM meta WHERE key = 'agent'")
                .fetch_optional(&mut **tx)
                .await
                .map_err(self.db("read the agent id"))?;
        match stored {
            Some(s) if s == agent => Ok(()),
            Some(s) => Err(OutboxError::Batch {
                path: self.path.clone(),
                context: format!(
                    "this outbox holds the chain of agent {s:?} (up to seq {last_seq}); refusing \
                     to continue it as agent {agent:?}: give the renamed agent its own data \
                     directory"
                ),
                error: BatchError::Malformed(shopfloor_core::FieldError::new(
                    "body.agent",
                    "differs from the chain's agent",
                )),
            }),
            None => {
                sqlx::query("INSERT INTO meta (key, value) VALUES ('agent', ?)")
                    .bind(agent)
                    .execute(&mut **tx)
                    .await
                    .map_err(self.db("record the agent id"))?;
                Ok(())
            }
        }
    }

    async fn head(
        &self,
        tx: &mut Transaction<'static, Sqlite>,
    ) -> Result<(u64, String), OutboxError> {
        let rows =
            sqlx::query("SELECT key, value FROM meta WHERE key IN ('last_seq', 'last_hash')")
                .fetch_all(&mut **tx)
                .await
                .map_err(self.db("read the chain head"))?;
        self.parse_head(&rows)
    }

    fn parse_head(&self, rows: &[sqlx::sqlite::SqliteRow]) -> Result<(u64, String), OutboxError> {
        let (mut seq, mut hash) = (None, None);
        for row in rows {
            let key: String = row.try_get(0).map_err(self.db("read the chain head"))?;
            match key.as_str() {
                "last_seq" => {
                    let v: i64 = row
                        .try_get(1)
                        .map_err(|_| self.corrupt("meta.last_seq is not an integer"))?;
                    seq =
                        Some(u64::try_from(v).map_err(|_| {
                            self.corrupt(format!("meta.last_seq is negative ({v})"))
                        })?);
                }
                "last_hash" => {
                    let v: String = row
                        .try_get(1)
                        .map_err(|_| self.corrupt("meta.last_hash is not text"))?;
                    if v.len() != 64 || !v.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
                        return Err(self.corrupt("meta.last_hash is not 64 lowercase hex digits"));
                    }
                    hash = Some(v);
                }
                _ => {}
            }
        }
        match (seq, hash) {
            (Some(s), Some(h)) => Ok((s, h)),
            _ => Err(self.corrupt("meta lacks last_seq or last_hash (chain head)")),
        }
    }

    /// The chain head: (seq of the last sealed batch, its body hash); `(0, ZERO_HASH)` before
    /// the first seal.
    pub async fn chain_head(&self) -> Result<(u64, String), OutboxError> {
        let rows =
            sqlx::query("SELECT key, value FROM meta WHERE key IN ('last_seq', 'last_hash')")
                .fetch_all(&self.pool)
                .await
                .map_err(self.db("read the chain head"))?;
        self.parse_head(&rows)
    }

    /// Sealed, not yet acknowledged batches with seq > `after_seq`, ascending, at most
    /// `limit`: what the publisher (re)sends, in order, after a restart or reconnect.
    pub async fn unacked(&self, after_seq: u64, limit: usize) -> Result<Vec<Sealed>, OutboxError> {
        let rows = sqlx::query(
            "SELECT seq, payload, hash FROM batches WHERE seq > ? ORDER BY seq LIMIT ?",
        )
        .persistent(false)
        .bind(to_i64(after_seq))
        .bind(to_i64(limit as u64))
        .fetch_all(&self.pool)
        .await
        .map_err(self.db("read unacknowledged batches"))?;
        rows.iter()
            .map(|row| {
                let seq: i64 = row.try_get(0).map_err(self.db("read a sealed batch"))?;
                let payload: Vec<u8> = row.try_get(1).map_err(self.db("read a sealed batch"))?;
                let body_hash: String = row.try_get(2).map_err(self.db("read a sealed batch"))?;
                Ok(Sealed {
                    seq: u64::try_from(seq)
                        .map_err(|_| self.corrupt(format!("negative seq {seq}")))?,
                    payload,
                    body_hash,
                })
            })
            .collect()
    }

    /// The gateway acknowledged `seq` (PUBACK after its commit): the sealed row is deleted.
    /// Idempotent; unknown seqs are ignored.
    pub async fn ack(&self, seq: u64) -> Result<(), OutboxError> {
        sqlx::query("DELETE FROM batches WHERE seq = ?")
            .bind(to_i64(seq))
            .execute(&self.pool)
            .await
            .map_err(self.db("delete an acknowledged batch"))?;
        Ok(())
    }

    /// Counts, sizes and the totals ever dropped.
    pub async fn stats(&self) -> Result<OutboxStats, OutboxError> {
        let row = sqlx::query(
            "SELECT COUNT(*), COUNT(seq), COALESCE(SUM(bytes), 0), MIN(created_ms), \
             (SELECT value FROM meta WHERE key = 'last_seq'), \
             (SELECT value FROM meta WHERE key = 'dropped_samples'), \
             (SELECT value FROM meta WHERE key = 'dropped_batches') \
             FROM batches",
        )
        .fetch_one(&self.pool)
        .await
        .map_err(self.db("read statistics"))?;
        let get = |i: usize| -> Result<u64, OutboxError> {
            let v: i64 = row.try_get(i).map_err(self.db("read statistics"))?;
            u64::try_from(v).map_err(|_| self.corrupt(format!("negative count {v}")))
        };
        Ok(OutboxStats {
            batches: get(0)?,
            sealed: get(1)?,
            bytes: get(2)?,
            oldest_created_ms: row.try_get(3).map_err(self.db("read statistics"))?,
            last_seq: get(4)?,
            dropped_samples: get(5)?,
            dropped_batches: get(6)?,
        })
    }
}

/// Checks what can be checked before SQLite sees the file, for clear messages: the directory
/// (created, mode 0700, if missing), a directory in the file's place, permissions, and the
/// SQLite header of a non-empty file.
fn precheck(path: &Path) -> Result<(), String> {
    match std::fs::metadata(path) {
        Ok(meta) => {
            if meta.is_dir() {
                return Err("is a directory, not a file".to_owned());
            }
            let mut f = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(path)
                .map_err(|e| io_reason(&e))?;
            let mut head = Vec::with_capacity(16);
            (&mut f)
                .take(16)
                .read_to_end(&mut head)
                .map_err(|e| io_reason(&e))?;
            if !head.is_empty() && head.as_slice() != SQLITE_HEADER {
                return Err(
                    "not an SQLite database (the file does not start with the SQLite header); \
                     move it away or point the outbox elsewhere"
                        .to_owned(),
                );
            }
            Ok(())
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) else {
                return Ok(());
            };
            let mut b = std::fs::DirBuilder::new();
            b.recursive(true);
            #[cfg(unix)]
            {
                use std::os::unix::fs::DirBuilderExt as _;
                b.mode(0o700);
            }
            b.create(dir).map_err(|e| {
                format!(
                    "cannot create directory {}: {}",
                    dir.display(),
                    io_reason(&e)
                )
            })
        }
        Err(e) => Err(io_reason(&e)),
    }
}

fn io_reason(e: &io::Error) -> String {
    match e.kind() {
        io::ErrorKind::PermissionDenied => {
            format!("permission denied ({e}): the agent must be able to read and write it")
        }
        _ => e.to_string(),
    }
}

/// An unsealed row's contents as [`Outbox::seal_next`] found them, when they can be sealed
/// (damaged ones are dropped and counted there).
enum Stored {
    /// The bytes `push` checked (their SHA-256 matches).
    Checked(Vec<u8>),
    /// Decoded and checked again (a row without a hash).
    Decoded(Contents),
}

fn sha256(bytes: &[u8]) -> [u8; 32] {
    use sha2::Digest as _;
    sha2::Sha256::digest(bytes).into()
}

fn to_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn now_ms() -> Millis {
    shopfloor_clock::now_ms()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fsync_parses_and_prints() {
        assert_eq!("full".parse::<Fsync>(), Ok(Fsync::Full));
        assert_eq!("normal".parse::<Fsync>(), Ok(Fsync::Normal));
        assert!("FULL".parse::<Fsync>().is_err());
        assert_eq!(Fsync::Normal.to_string(), "normal");
        assert_eq!(serde_json::to_string(&Fsync::Full).unwrap(), "\"full\"");
        assert_eq!(
            serde_json::from_str::<Fsync>("\"normal\"").unwrap(),
            Fsync::Normal
        );
        assert_eq!(Fsync::default(), Fsync::Full);
    }
}
