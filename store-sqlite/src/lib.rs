//! `shopfloor-store-sqlite`: the gateway's [`Store`] on one SQLite file, the zero-setup default
//! (`sqlite://PATH` under `--data-dir`). Same semantics as the PostgreSQL backend; both run
//! `shopfloor_store::conformance`.
//!
//! # Pragmas, and why
//!
//! - `journal_mode = WAL`: readers never block the writer and the writer never blocks readers,
//!   so API queries and roll-up reads run while batches are ingested. WAL mode is persistent
//!   in the file.
//! - `synchronous = FULL`: every commit is fsynced before [`Store::ingest`] returns. The
//!   gateway acknowledges an MQTT batch only after that commit, so a power cut must not lose
//!   a committed transaction (`NORMAL` in WAL mode may lose the last commits on power loss).
//! - `cache_size` of the writer 64 MiB (SQLite's default is 2 MiB): a group of batches from
//!   many machines touches `(device, point, t)` index pages all over the file (`WRITER_CACHE`).
//! - `busy_timeout = 5 s`: only matters when another process (an operator's `sqlite3` shell, a
//!   backup) holds a lock; our own connections never contend for the write lock (below).
//! - `foreign_keys = ON` (sqlx's default; the schema declares none today) and a statement cache
//!   large enough for every statement of the write path, so each is prepared once per
//!   connection and then only re-bound.
//!
//! # One writer
//!
//! Every write goes through `write`, a pool of exactly one connection that lives as long as
//! the store, and starts its transactions with `BEGIN IMMEDIATE`. Writers therefore queue in
//! the pool (in order, without `SQLITE_BUSY`), and a transaction never has to upgrade a read
//! lock. Reads go through `read`, a few connections with `query_only = ON` (a bug that writes
//! through them fails instead of racing the writer); multi-statement reads that must agree
//! ([`Store::raw_slice`], [`Store::device_buckets`]) run in one read transaction, i.e. one
//! snapshot. Long deletions ([`Store::purge`]) are cut into short write transactions so ingest
//! is never blocked for long.
//!
//! # Ingest cost
//!
//! An ingest call is one transaction and one fsync. Per batch: the batch insert, two index
//! lookups for the chain, the head upsert, one insert per distinct series and per dirty range;
//! samples and readings go 32 rows per statement (`src/sql/insert_*_32.sql`), the remainder
//! and the low-volume tables one re-bound prepared statement per row. The raw tables carry one
//! index each (by device and series, time last) and none on time alone.
//!
//! # Schema invariants (`migrations/0001_init.sql`)
//!
//! - `batches` is keyed by `(agent, seq)`; `INSERT … ON CONFLICT DO NOTHING` makes a second
//!   copy a no-op reported as [`Outcome::Duplicate`]. The payload is stored byte for byte.
//! - A batch, its decoded rows (`samples`, `states`, `readings`, `links`, each naming its
//!   `agent, seq`), its `dirty` ranges, its `chain_events` and its agent's `heads` row are
//!   written in the ingest call's one transaction.
//! - `heads` holds, per agent, the count, first and last seq, and the last batch's hash, `to`
//!   and receive time of the stored batches; ingest keeps it exact and a purge of batches
//!   recomputes it for the agents it touched.
//! - `sample_points` / `reading_series` list every `(device, point)` / `(device, role, point)`
//!   that has rows; they only grow (a purge of samples or readings leaves them), so a
//!   per-device query can seek each series in the time-ordered index instead of scanning the
//!   device's whole history.
//! - Roll-up rows are keyed by `(device, gran, bucket[, role])` and written only by
//!   [`Store::apply_rollups`], which replaces them; nothing adds to them.
//! - `audit` is append-only and written in the same transaction as the registry, input or
//!   token change it records.
//! - Device prefix queries ([`DeviceFilter`]) use ranges, not `LIKE`: `device = p OR
//!   (device >= 'p/' AND device < 'p0')` (`'0'` is the byte after `'/'`), so `p1/e1x` never
//!   matches `p1/e1`. Roll-up queries walk the distinct devices of that key range (a recursive
//!   CTE, one index seek per device) and then seek `(device, gran, bucket)` per device, so
//!   their cost follows the rows returned, not the history kept.
//! - The store never runs `ANALYZE`; where the planner could pick a scan without statistics,
//!   the join order is fixed with `CROSS JOIN` (series table first, then the time index) or
//!   the index is named (`INDEXED BY batches_to`).
//! - The chain check reads `batches` only: an agent all of whose batches were purged starts
//!   again with a gap from seq 1 when it reappears.
//!
//! All SQL goes through sqlx's compile-time checked macros; the offline data is in the
//! workspace's `.sqlx/` (see `sqlx.toml`).

mod admin;
mod ingest;
mod purge;
mod rollups;
mod seal;
mod users;

use std::str::FromStr;
use std::time::Duration;

use shopfloor_store::{
    ActivityBucket, AgentHead, AuditEntry, AuditFilter, ChainEvent, ChainRange, CounterBucket,
    DeviceFilter, DirtyEntry, Gran, InputsRecord, Ms, NewBatch, Outcome, QuarantineEntry,
    QuarantineRow, RawSlice, RegistryItem, Result, Retained, RollupUpdate, SampleRow, SessionRow,
    StateBucket, Store, StoreError, StoredBatch, TokenRow, UserRow, UserUpdate,
};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{Sqlite, Transaction};

/// The schema, embedded at compile time and applied by [`SqliteStore::open`].
static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// Takes the exclusive lock on `<database>.open-lock` (created if missing), waiting for
/// another process that holds it; released when the file is dropped.
fn open_lock(db: &std::path::Path) -> std::io::Result<std::fs::File> {
    let mut name = db.as_os_str().to_owned();
    name.push(".open-lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(std::path::PathBuf::from(name))?;
    file.lock()?;
    Ok(file)
}

/// Read connections: enough for the API, the roll-up worker and a purge scan at once on a
/// small box.
const READERS: u32 = 4;

/// The writer's page cache (`cache_size`, negative: KiB): 64 MiB instead of SQLite's 2 MiB.
/// Samples are indexed by `(device, point, t)`, so a group of batches from many machines
/// touches index pages all over the file; with 2 MiB each was read again from the OS for
/// almost every row (measured at 1,000 agents of 10 machines: docs/BENCHMARKS.md).
const WRITER_CACHE: &str = "-65536";

/// How long a call waits for a connection (the writer may be busy with a large ingest).
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(60);

/// Prepared statements kept per connection (every statement of the write path fits).
const STATEMENT_CACHE: usize = 256;

/// The SQLite store. Cheap to clone (the pools are shared).
#[derive(Debug, Clone)]
pub struct SqliteStore {
    /// Exactly one connection: every write goes through it.
    write: SqlitePool,
    /// Query-only connections.
    read: SqlitePool,
}

impl SqliteStore {
    /// Opens (creating if missing) the database at `url` (`sqlite://PATH` or `sqlite:PATH`),
    /// sets the pragmas of the module docs and runs the migrations. Refuses in-memory
    /// databases (readers and the writer would not share one), a file that is not SQLite, and
    /// an SQLite database of something else.
    pub async fn open(url: &str) -> Result<SqliteStore> {
        let base = SqliteConnectOptions::from_str(url)
            .map_err(|e| StoreError::Db(format!("{url}: not an SQLite URL: {e}")))?;
        let shown = base.get_filename().display().to_string();
        if url.contains(":memory:") || url.contains("mode=memory") {
            return Err(StoreError::Db(format!(
                "{url}: in-memory databases are not supported (the write and read connections \
                 would not share one); give a file path"
            )));
        }
        let base = base
            .busy_timeout(Duration::from_secs(5))
            .statement_cache_capacity(STATEMENT_CACHE)
            .foreign_keys(true);
        let write_opts = base
            .clone()
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .pragma("cache_size", WRITER_CACHE);
        let cannot_open =
            |e: sqlx::Error| StoreError::Db(format!("{shown}: cannot open: {}", describe(&e)));
        // Neither creating a database and switching it to WAL nor sqlx's SQLite migrator is
        // safe against another process doing the same at that moment (the gateway starting
        // while `token add` runs, say): one of them fails with "database is locked" or "table
        // already exists". A lock file beside the database serialises the opens; it is held
        // until the migrations are done (milliseconds, once per open).
        let lock = open_lock(base.get_filename()).map_err(|e| {
            StoreError::Db(format!(
                "{shown}: cannot open: {e} (check that the directory exists and the gateway \
                     may write there)"
            ))
        })?;
        let write = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .idle_timeout(None)
            .max_lifetime(None)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect_with(write_opts)
            .await
            .map_err(cannot_open)?;
        if let Err(e) = check_not_foreign(&write, &shown).await {
            write.close().await;
            return Err(e);
        }
        let migrated = MIGRATOR.run(&write).await;
        drop(lock);
        if let Err(e) = migrated {
            write.close().await;
            return Err(StoreError::Migration(format!("{shown}: {e}")));
        }
        let read_opts = base.pragma("query_only", "ON");
        let read = SqlitePoolOptions::new()
            .max_connections(READERS)
            .min_connections(0)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect_with(read_opts)
            .await;
        let read = match read {
            Ok(read) => read,
            Err(e) => {
                write.close().await;
                return Err(cannot_open(e));
            }
        };
        Ok(SqliteStore { write, read })
    }

    /// Closes every connection (the last one checkpoints the WAL into the database file).
    /// Dropping the store without closing is safe too: every commit is in the file or its WAL.
    pub async fn close(self) {
        self.read.close().await;
        self.write.close().await;
    }

    /// A write transaction on the one writer connection (`BEGIN IMMEDIATE`: the write lock is
    /// taken at once, never upgraded later).
    async fn begin(&self, op: &'static str) -> Result<Transaction<'static, Sqlite>> {
        self.write
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(db(op))
    }

    /// A read transaction (one snapshot) on a query-only connection.
    async fn begin_read(&self, op: &'static str) -> Result<Transaction<'static, Sqlite>> {
        self.read.begin().await.map_err(db(op))
    }
}

/// Refuses an SQLite file that has tables but none of ours: pointing the gateway at another
/// program's database must not add our tables to it.
async fn check_not_foreign(pool: &SqlitePool, shown: &str) -> Result<()> {
    let row = sqlx::query!(
        r#"SELECT COUNT(*) AS "tables!: i64",
                  COALESCE(SUM(name = '_sqlx_migrations'), 0) AS "ours!: i64"
           FROM sqlite_schema WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"#
    )
    .fetch_one(pool)
    .await
    .map_err(|e| StoreError::Db(format!("{shown}: cannot open: {}", describe(&e))))?;
    if row.tables > 0 && row.ours == 0 {
        return Err(StoreError::Db(format!(
            "{shown}: an SQLite database of something else (it has tables but no gateway \
             schema); point the gateway's database elsewhere"
        )));
    }
    Ok(())
}

/// The driver's message, with a hint for the SQLite result codes an operator can act on.
fn describe(e: &sqlx::Error) -> String {
    let hint = match e {
        sqlx::Error::Database(d) => match d.code().as_deref() {
            Some("26") => " (not an SQLite database, or a damaged one)",
            Some("14") => " (check that the directory exists and the gateway may write there)",
            Some("13") => " (disk full)",
            Some("8") => " (read-only file or file system)",
            Some("5") | Some("6") => " (another process holds the database)",
            Some("11") => " (the database file is damaged)",
            _ => "",
        },
        _ => "",
    };
    format!("{e}{hint}")
}

/// Maps a driver error to [`StoreError::Db`], naming the operation.
fn db(op: &'static str) -> impl FnOnce(sqlx::Error) -> StoreError {
    move |e| StoreError::Db(format!("{op}: {}", describe(&e)))
}

/// A JSON document as stored (`TEXT`).
fn json_text(v: &serde_json::Value) -> String {
    v.to_string()
}

/// Parses a stored JSON document; a failure means the file was changed behind our back.
fn json_value(what: &str, text: &str) -> Result<serde_json::Value> {
    serde_json::from_str(text)
        .map_err(|e| StoreError::Corrupt(format!("{what}: stored JSON does not parse: {e}")))
}

/// The bounds of a [`DeviceFilter`]: `(prefix, prefix + "/", prefix + "0")`. A device matches
/// when it equals the prefix or lies in `[prefix/, prefix0)`; every match lies in
/// `[prefix, prefix0)`, the index range the queries scan.
fn bounds(filter: &DeviceFilter) -> (String, String, String) {
    let p = &filter.prefix;
    (p.clone(), format!("{p}/"), format!("{p}0"))
}

impl Store for SqliteStore {
    async fn ingest(&self, batches: &[NewBatch]) -> Result<Vec<Outcome>> {
        ingest::ingest(self, batches).await
    }
    async fn quarantine(&self, rows: &[QuarantineRow]) -> Result<()> {
        ingest::quarantine(self, rows).await
    }
    async fn list_quarantine(
        &self,
        before: Option<i64>,
        limit: i64,
    ) -> Result<Vec<QuarantineEntry>> {
        ingest::list_quarantine(self, before, limit).await
    }
    async fn chain_events(&self, agent: Option<&str>, limit: i64) -> Result<Vec<ChainEvent>> {
        ingest::chain_events(self, agent, limit).await
    }
    async fn agent_heads(&self) -> Result<Vec<AgentHead>> {
        ingest::agent_heads(self).await
    }
    async fn batches(
        &self,
        agent: &str,
        from_seq: i64,
        to_seq: i64,
        with_payload: bool,
    ) -> Result<Vec<StoredBatch>> {
        ingest::batches(self, agent, from_seq, to_seq, with_payload).await
    }
    async fn chain_ranges(&self, from: Ms, to: Ms) -> Result<Vec<ChainRange>> {
        ingest::chain_ranges(self, from, to).await
    }
    async fn samples(
        &self,
        device: &str,
        point: &str,
        from: Ms,
        to: Ms,
        limit: i64,
    ) -> Result<Vec<SampleRow>> {
        ingest::samples(self, device, point, from, to, limit).await
    }
    async fn dirty(&self, limit: i64) -> Result<Vec<DirtyEntry>> {
        rollups::dirty(self, limit).await
    }
    async fn raw_slice(&self, device: &str, from: Ms, to: Ms) -> Result<RawSlice> {
        rollups::raw_slice(self, device, from, to).await
    }
    async fn device_buckets(
        &self,
        device: &str,
        gran: Gran,
        from: Ms,
        to: Ms,
    ) -> Result<(Vec<StateBucket>, Vec<CounterBucket>, Vec<ActivityBucket>)> {
        rollups::device_buckets(self, device, gran, from, to).await
    }
    async fn apply_rollups(&self, update: &RollupUpdate) -> Result<()> {
        rollups::apply_rollups(self, update).await
    }
    async fn state_buckets(
        &self,
        filter: &DeviceFilter,
        gran: Gran,
        from: Ms,
        to: Ms,
    ) -> Result<Vec<StateBucket>> {
        rollups::state_buckets(self, filter, gran, from, to).await
    }
    async fn counter_buckets(
        &self,
        filter: &DeviceFilter,
        gran: Gran,
        from: Ms,
        to: Ms,
    ) -> Result<Vec<CounterBucket>> {
        rollups::counter_buckets(self, filter, gran, from, to).await
    }
    async fn activity_buckets(
        &self,
        filter: &DeviceFilter,
        gran: Gran,
        from: Ms,
        to: Ms,
    ) -> Result<Vec<ActivityBucket>> {
        rollups::activity_buckets(self, filter, gran, from, to).await
    }
    async fn last_readings_before(
        &self,
        filter: &DeviceFilter,
        since: Ms,
        before: Ms,
    ) -> Result<Vec<(String, String, Ms)>> {
        rollups::last_readings_before(self, filter, since, before).await
    }
    async fn lease(&self, name: &str, holder: &str, now: Ms, until: Ms) -> Result<bool> {
        rollups::lease(self, name, holder, now, until).await
    }
    async fn registry_list(&self, kind: &str) -> Result<Vec<RegistryItem>> {
        admin::registry_list(self, kind).await
    }
    async fn registry_get(&self, kind: &str, id: &str) -> Result<Option<RegistryItem>> {
        admin::registry_get(self, kind, id).await
    }
    async fn registry_put(&self, item: &RegistryItem) -> Result<Option<serde_json::Value>> {
        admin::registry_put(self, item).await
    }
    async fn registry_delete(
        &self,
        kind: &str,
        id: &str,
        actor: &str,
        at: Ms,
    ) -> Result<Option<serde_json::Value>> {
        admin::registry_delete(self, kind, id, actor, at).await
    }
    async fn inputs_put(&self, record: &InputsRecord) -> Result<i64> {
        admin::inputs_put(self, record).await
    }
    async fn inputs_current(
        &self,
        filter: &DeviceFilter,
        from: Ms,
        to: Ms,
    ) -> Result<Vec<InputsRecord>> {
        admin::inputs_current(self, filter, from, to).await
    }
    async fn inputs_history(&self, entity: &str) -> Result<Vec<InputsRecord>> {
        admin::inputs_history(self, entity).await
    }
    async fn audit(&self, filter: &AuditFilter) -> Result<Vec<AuditEntry>> {
        admin::audit(self, filter).await
    }
    async fn token_add(&self, token: &TokenRow) -> Result<()> {
        admin::token_add(self, token).await
    }
    async fn token_by_hash(&self, hash: &str) -> Result<Option<TokenRow>> {
        admin::token_by_hash(self, hash).await
    }
    async fn tokens(&self) -> Result<Vec<TokenRow>> {
        admin::tokens(self).await
    }
    async fn token_revoke(&self, name: &str, actor: &str, at: Ms) -> Result<bool> {
        admin::token_revoke(self, name, actor, at).await
    }
    async fn user_add(&self, user: &UserRow) -> Result<bool> {
        users::user_add(self, user).await
    }
    async fn user_get(&self, name: &str) -> Result<Option<UserRow>> {
        users::user_get(self, name).await
    }
    async fn users(&self) -> Result<Vec<UserRow>> {
        users::users(self).await
    }
    async fn user_update(&self, update: &UserUpdate) -> Result<Option<UserRow>> {
        users::user_update(self, update).await
    }
    async fn session_add(&self, session: &SessionRow) -> Result<()> {
        users::session_add(self, session).await
    }
    async fn session_get(&self, id_hash: &str) -> Result<Option<(SessionRow, UserRow)>> {
        users::session_get(self, id_hash).await
    }
    async fn session_touch(&self, id_hash: &str, at: Ms) -> Result<()> {
        users::session_touch(self, id_hash, at).await
    }
    async fn session_delete(&self, id_hash: &str) -> Result<bool> {
        users::session_delete(self, id_hash).await
    }
    async fn sessions_purge(&self, now: Ms, idle_before: Ms) -> Result<u64> {
        users::sessions_purge(self, now, idle_before).await
    }
    async fn seal_put(&self, seal: &shopfloor_store::SealRow) -> Result<()> {
        seal::seal_put(self, seal).await
    }
    async fn seals(
        &self,
        filter: &shopfloor_store::SealFilter,
    ) -> Result<Vec<shopfloor_store::SealRow>> {
        seal::seals(self, filter).await
    }
    async fn seal_head(&self, signer: &str) -> Result<Option<shopfloor_store::SealRow>> {
        seal::seal_head(self, signer).await
    }
    async fn seal_state(&self, name: &str) -> Result<Option<serde_json::Value>> {
        seal::seal_state(self, name).await
    }
    async fn seal_state_put(&self, name: &str, doc: &serde_json::Value, at: Ms) -> Result<()> {
        seal::seal_state_put(self, name, doc, at).await
    }
    async fn batch_rows(
        &self,
        device: &str,
        from: Ms,
        to: Ms,
    ) -> Result<shopfloor_store::BatchRows> {
        seal::batch_rows(self, device, from, to).await
    }
    async fn purge(&self, table: Retained, before: Ms) -> Result<u64> {
        purge::purge(self, table, before).await
    }
    async fn ping(&self) -> Result<()> {
        purge::ping(self).await
    }
}
