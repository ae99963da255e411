//! `shopfloor-store-pg`: the gateway's [`Store`] on PostgreSQL, for parks that outgrow one
//! machine and run several gateway replicas against one database.
//!
//! Every statement goes through sqlx's compile-time checked macros; the offline query data is
//! checked in at the workspace's `.sqlx/` (the macros read `SHOPFLOOR_PG_BUILD_URL` when it is set,
//! see `store-pg/sqlx.toml`). The schema is `migrations/0001_init.sql`, embedded and applied by
//! [`PgStore::connect`].
//!
//! # Schema invariants
//!
//! - Times are `BIGINT` milliseconds since the Unix epoch (UTC), the same integers as the wire
//!   format and the SQLite backend; nothing is converted.
//! - `batches` has one row per `(agent, seq)` (primary key) holding the payload verbatim. A batch's
//!   samples, states, readings, links, dirty ranges, chain events and its agent's `heads` row are
//!   written in the same transaction as its `batches` row, or not at all; rows of a duplicate
//!   are never written.
//! - `heads` holds, per agent, the count, first and last seq, and the last batch's hash, `to`
//!   and receive time: ingest keeps it exact, and a purge of batches recomputes it per agent
//!   under that agent's ingest lock.
//! - No `CHECK` constraints on ingested data (the gateway validates batches; a failing
//!   constraint would abort the whole call and every redelivery of it).
//! - Device and entity path columns use `COLLATE "C"`: byte order, so the [`DeviceFilter`] prefix
//!   test is written as one range, `device >= p AND device < p || '0'`, which an index can scan,
//!   plus the exact test `(device = p OR device >= p || '/')` as a filter on it (a bare `OR` of
//!   the two was planned as a sequential scan of the whole table), and sorts the same on every
//!   server whatever its locale. Roll-up reads also have `(gran, bucket, device)` indexes, so a
//!   park's period is one range scan per table.
//! - Roll-up rows are keyed by `(device, [role,] gran, bucket)` and only ever replaced, whole, by
//!   [`Store::apply_rollups`]; if one update names the same key twice, the last row wins.
//! - JSON documents (registry, audit, inputs) are stored as the exact JSON text the gateway
//!   wrote (`TEXT`, not `JSONB`): the store never interprets them, and what is read back is what
//!   was written. Audit `before`/`after` hold `null` for "none".
//! - Registry, input and token changes write their audit row in the same transaction.
//!
//! # Concurrency (several gateway replicas on one database)
//!
//! - Ingest is one transaction per call (READ COMMITTED). It first takes a transaction-scoped
//!   advisory lock per agent of the call (in agent order), so the batches of one agent are
//!   committed by one replica at a time: the duplicate check (`INSERT … ON CONFLICT (agent, seq)
//!   DO NOTHING`, then the stored body hash) and the chain check see every batch other replicas
//!   committed before, and two replicas receiving the same batch store it exactly once (the
//!   other gets [`Outcome::Duplicate`]). Batches of different agents are ingested in parallel.
//!   Should PostgreSQL still report a deadlock or serialization failure, the whole call is
//!   retried (a few times) from the start, which is safe because nothing was committed.
//! - [`Store::lease`] is one atomic `INSERT … ON CONFLICT DO UPDATE … WHERE`: of two replicas
//!   racing for a free lease exactly one gets it.
//! - [`Store::registry_put`] locks the item's row (`SELECT … FOR UPDATE`, or a conflicting insert
//!   retried), so the audited `before` is always the document actually replaced.
//!   [`Store::inputs_put`] takes `max(version) + 1` and retries its transaction on a unique
//!   violation, so concurrent writers get distinct, consecutive versions.
//! - Migrations run under sqlx's session advisory lock (taken before the migrations table is even
//!   created), so replicas starting together apply them once and the others wait, then find
//!   nothing to do. They run on a one-connection pool of their own that is closed afterwards,
//!   which releases the lock even if a migration failed.
//! - Reads that combine several statements ([`Store::raw_slice`], [`Store::device_buckets`]) run
//!   in one read-only REPEATABLE READ transaction, so they see one snapshot.
//! - A chain check can only see committed batches: with the per-agent lock it sees all of them,
//!   so a [`Chain::Gap`] means the predecessor had not been committed by anyone yet (it closes
//!   when that batch arrives, e.g. via another replica of a shared subscription).
//!
//! # TLS
//!
//! TLS is chosen by the URL, as with libpq: `sslmode=disable|prefer|require|verify-ca|verify-full`
//! (default `prefer`: TLS if the server offers it, without certificate checks), with
//! `sslrootcert=…` (and `sslcert`/`sslkey` for client certificates). The driver is built with
//! rustls (ring) and the webpki root certificates. Use `verify-full` on any network that is not
//! the database host itself. Error messages name `host:port/database`, never the password.

mod admin;
mod ingest;
mod rollup;
pub mod scratch;
mod seal;
mod users;

use std::str::FromStr;
use std::time::Duration;

use shopfloor_store::*;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};

/// The embedded schema migrations (`store-pg/migrations`).
static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// How long [`PgStore::connect`] waits for the server (and, later, any query waits for a free
/// pooled connection) before giving up with an error.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The PostgreSQL store: a connection pool. Cheap to clone (the pool is shared).
#[derive(Debug, Clone)]
pub struct PgStore {
    pool: PgPool,
}

impl PgStore {
    /// Connects to `url` (`postgres://user[:password]@host[:port]/database[?sslmode=…]`) with a
    /// pool of at most `max_connections`, and runs the migrations. Fails with a clear error after
    /// [`DEFAULT_CONNECT_TIMEOUT`] if the server cannot be reached.
    pub async fn connect(url: &str, max_connections: u32) -> Result<Self> {
        Self::connect_with_timeout(url, max_connections, DEFAULT_CONNECT_TIMEOUT).await
    }

    /// [`PgStore::connect`] with an explicit timeout for reaching the server (also the longest
    /// time a query waits for a free connection of the pool).
    pub async fn connect_with_timeout(
        url: &str,
        max_connections: u32,
        timeout: Duration,
    ) -> Result<Self> {
        if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
            return Err(StoreError::Db(
                "invalid PostgreSQL URL: must start with postgres:// or postgresql://".to_owned(),
            ));
        }
        let options = PgConnectOptions::from_str(url)
            .map_err(|e| StoreError::Db(format!("invalid PostgreSQL URL: {e}")))?;
        let target = describe(&options);
        let pool = PgPoolOptions::new()
            .max_connections(max_connections.max(1))
            .acquire_timeout(timeout)
            .connect_with(options.clone())
            .await
            .map_err(|e| match e {
                sqlx::Error::PoolTimedOut => StoreError::Db(format!(
                    "cannot connect to PostgreSQL at {target}: no connection within {} s",
                    timeout.as_secs_f64()
                )),
                e => StoreError::Db(format!("cannot connect to PostgreSQL at {target}: {e}")),
            })?;
        migrate(&options, timeout).await?;
        Ok(PgStore { pool })
    }

    /// The underlying pool (for tools and tests that need plain SQL).
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Closes every connection of the pool; later calls fail.
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// `host:port/database` for error messages (never the password).
fn describe(options: &PgConnectOptions) -> String {
    format!(
        "{}:{}/{}",
        options.get_host(),
        options.get_port(),
        options.get_database().unwrap_or("(default database)")
    )
}

/// Runs the migrations through a one-connection pool of their own that is closed afterwards:
/// sqlx's migrator holds a session advisory lock while it works and does not release it when a
/// migration fails; closing the session always does.
async fn migrate(options: &PgConnectOptions, timeout: Duration) -> Result<()> {
    let pool = PgPoolOptions::new()
        .max_connections(1)
        .acquire_timeout(timeout)
        .connect_with(options.clone())
        .await
        .map_err(|e| StoreError::Db(format!("connection for migrations: {e}")))?;
    let outcome = MIGRATOR.run(&pool).await;
    pool.close().await;
    outcome.map_err(|e| StoreError::Migration(e.to_string()))
}

/// The driver's error as a [`StoreError::Db`].
pub(crate) fn db(e: sqlx::Error) -> StoreError {
    StoreError::Db(e.to_string())
}

/// A stored JSON document that does not parse.
pub(crate) fn parse_json(what: &str, text: &str) -> Result<serde_json::Value> {
    serde_json::from_str(text).map_err(|e| StoreError::Corrupt(format!("{what}: {e}")))
}

/// Bounds of the [`DeviceFilter`] range: `(prefix, lower, upper)`; a device matches when it
/// equals `prefix` or lies in `[lower, upper)`. `prefix/…` sorts between `prefix/` and `prefix0`
/// (`'0'` follows `'/'` in byte order), so `p1/e1x` never matches `p1/e1`.
pub(crate) fn filter_bounds(filter: &DeviceFilter) -> (String, String, String) {
    let p = &filter.prefix;
    (p.clone(), format!("{p}/"), format!("{p}0"))
}

/// Whether PostgreSQL asks for the transaction to be retried (deadlock, serialization failure).
pub(crate) fn is_retryable(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Database(d) => matches!(d.code().as_deref(), Some("40P01" | "40001")),
        _ => false,
    }
}

/// Whether the error is a unique violation.
pub(crate) fn is_unique_violation(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Database(d) => d.code().as_deref() == Some("23505"),
        _ => false,
    }
}

/// Why a transaction attempt failed: a driver error (maybe worth a retry) or our own verdict.
pub(crate) enum Fail {
    Sql(sqlx::Error),
    Store(StoreError),
}

impl From<sqlx::Error> for Fail {
    fn from(e: sqlx::Error) -> Self {
        Fail::Sql(e)
    }
}

/// Attempts per transaction that PostgreSQL asks to retry (deadlock, serialization failure).
const MAX_ATTEMPTS: u32 = 5;

/// Runs `attempt` (one whole transaction) until it succeeds, fails for a reason other than a
/// deadlock or serialization failure, or [`MAX_ATTEMPTS`] are used up.
pub(crate) async fn with_retries<T, F, Fut>(what: &str, mut attempt: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = std::result::Result<T, Fail>>,
{
    let mut n = 1;
    loop {
        match attempt().await {
            Ok(v) => return Ok(v),
            Err(Fail::Sql(e)) if n < MAX_ATTEMPTS && is_retryable(&e) => {
                tracing::debug!(what, attempt = n, error = %e, "retrying transaction");
                n += 1;
            }
            Err(Fail::Sql(e)) => return Err(db(e)),
            Err(Fail::Store(e)) => return Err(e),
        }
    }
}

/// A negative limit is treated as 0 (PostgreSQL rejects it).
pub(crate) fn limit(n: i64) -> i64 {
    n.max(0)
}

impl Store for PgStore {
    async fn ingest(&self, batches: &[NewBatch]) -> Result<Vec<Outcome>> {
        ingest::ingest(&self.pool, batches).await
    }
    async fn quarantine(&self, rows: &[QuarantineRow]) -> Result<()> {
        ingest::quarantine(&self.pool, rows).await
    }
    async fn list_quarantine(
        &self,
        before: Option<i64>,
        limit: i64,
    ) -> Result<Vec<QuarantineEntry>> {
        ingest::list_quarantine(&self.pool, before, limit).await
    }
    async fn chain_events(&self, agent: Option<&str>, limit: i64) -> Result<Vec<ChainEvent>> {
        ingest::chain_events(&self.pool, agent, limit).await
    }
    async fn agent_heads(&self) -> Result<Vec<AgentHead>> {
        ingest::agent_heads(&self.pool).await
    }
    async fn batches(
        &self,
        agent: &str,
        from_seq: i64,
        to_seq: i64,
        with_payload: bool,
    ) -> Result<Vec<StoredBatch>> {
        ingest::batches(&self.pool, agent, from_seq, to_seq, with_payload).await
    }
    async fn chain_ranges(&self, from: Ms, to: Ms) -> Result<Vec<ChainRange>> {
        ingest::chain_ranges(&self.pool, from, to).await
    }
    async fn samples(
        &self,
        device: &str,
        point: &str,
        from: Ms,
        to: Ms,
        limit: i64,
    ) -> Result<Vec<SampleRow>> {
        ingest::samples(&self.pool, device, point, from, to, limit).await
    }
    async fn dirty(&self, limit: i64) -> Result<Vec<DirtyEntry>> {
        rollup::dirty(&self.pool, limit).await
    }
    async fn raw_slice(&self, device: &str, from: Ms, to: Ms) -> Result<RawSlice> {
        rollup::raw_slice(&self.pool, device, from, to).await
    }
    async fn device_buckets(
        &self,
        device: &str,
        gran: Gran,
        from: Ms,
        to: Ms,
    ) -> Result<(Vec<StateBucket>, Vec<CounterBucket>, Vec<ActivityBucket>)> {
        rollup::device_buckets(&self.pool, device, gran, from, to).await
    }
    async fn apply_rollups(&self, update: &RollupUpdate) -> Result<()> {
        rollup::apply_rollups(&self.pool, update).await
    }
    async fn state_buckets(
        &self,
        filter: &DeviceFilter,
        gran: Gran,
        from: Ms,
        to: Ms,
    ) -> Result<Vec<StateBucket>> {
        rollup::state_buckets(&self.pool, filter, gran, from, to).await
    }
    async fn counter_buckets(
        &self,
        filter: &DeviceFilter,
        gran: Gran,
        from: Ms,
        to: Ms,
    ) -> Result<Vec<CounterBucket>> {
        rollup::counter_buckets(&self.pool, filter, gran, from, to).await
    }
    async fn activity_buckets(
        &self,
        filter: &DeviceFilter,
        gran: Gran,
        from: Ms,
        to: Ms,
    ) -> Result<Vec<ActivityBucket>> {
        rollup::activity_buckets(&self.pool, filter, gran, from, to).await
    }
    async fn last_readings_before(
        &self,
        filter: &DeviceFilter,
        since: Ms,
        before: Ms,
    ) -> Result<Vec<(String, String, Ms)>> {
        rollup::last_readings_before(&self.pool, filter, since, before).await
    }
    async fn lease(&self, name: &str, holder: &str, now: Ms, until: Ms) -> Result<bool> {
        rollup::lease(&self.pool, name, holder, now, until).await
    }
    async fn registry_list(&self, kind: &str) -> Result<Vec<RegistryItem>> {
        admin::registry_list(&self.pool, kind).await
    }
    async fn registry_get(&self, kind: &str, id: &str) -> Result<Option<RegistryItem>> {
        admin::registry_get(&self.pool, kind, id).await
    }
    async fn registry_put(&self, item: &RegistryItem) -> Result<Option<serde_json::Value>> {
        admin::registry_put(&self.pool, item).await
    }
    async fn registry_delete(
        &self,
        kind: &str,
        id: &str,
        actor: &str,
        at: Ms,
    ) -> Result<Option<serde_json::Value>> {
        admin::registry_delete(&self.pool, kind, id, actor, at).await
    }
    async fn inputs_put(&self, record: &InputsRecord) -> Result<i64> {
        admin::inputs_put(&self.pool, record).await
    }
    async fn inputs_current(
        &self,
        filter: &DeviceFilter,
        from: Ms,
        to: Ms,
    ) -> Result<Vec<InputsRecord>> {
        admin::inputs_current(&self.pool, filter, from, to).await
    }
    async fn inputs_history(&self, entity: &str) -> Result<Vec<InputsRecord>> {
        admin::inputs_history(&self.pool, entity).await
    }
    async fn audit(&self, filter: &AuditFilter) -> Result<Vec<AuditEntry>> {
        admin::audit(&self.pool, filter).await
    }
    async fn token_add(&self, token: &TokenRow) -> Result<()> {
        admin::token_add(&self.pool, token).await
    }
    async fn token_by_hash(&self, hash: &str) -> Result<Option<TokenRow>> {
        admin::token_by_hash(&self.pool, hash).await
    }
    async fn tokens(&self) -> Result<Vec<TokenRow>> {
        admin::tokens(&self.pool).await
    }
    async fn token_revoke(&self, name: &str, actor: &str, at: Ms) -> Result<bool> {
        admin::token_revoke(&self.pool, name, actor, at).await
    }
    async fn user_add(&self, user: &UserRow) -> Result<bool> {
        users::user_add(&self.pool, user).await
    }
    async fn user_get(&self, name: &str) -> Result<Option<UserRow>> {
        users::user_get(&self.pool, name).await
    }
    async fn users(&self) -> Result<Vec<UserRow>> {
        users::users(&self.pool).await
    }
    async fn user_update(&self, update: &UserUpdate) -> Result<Option<UserRow>> {
        users::user_update(&self.pool, update).await
    }
    async fn session_add(&self, session: &SessionRow) -> Result<()> {
        users::session_add(&self.pool, session).await
    }
    async fn session_get(&self, id_hash: &str) -> Result<Option<(SessionRow, UserRow)>> {
        users::session_get(&self.pool, id_hash).await
    }
    async fn session_touch(&self, id_hash: &str, at: Ms) -> Result<()> {
        users::session_touch(&self.pool, id_hash, at).await
    }
    async fn session_delete(&self, id_hash: &str) -> Result<bool> {
        users::session_delete(&self.pool, id_hash).await
    }
    async fn sessions_purge(&self, now: Ms, idle_before: Ms) -> Result<u64> {
        users::sessions_purge(&self.pool, now, idle_before).await
    }
    async fn seal_put(&self, seal: &SealRow) -> Result<()> {
        seal::seal_put(&self.pool, seal).await
    }
    async fn seals(&self, filter: &SealFilter) -> Result<Vec<SealRow>> {
        seal::seals(&self.pool, filter).await
    }
    async fn seal_head(&self, signer: &str) -> Result<Option<SealRow>> {
        seal::seal_head(&self.pool, signer).await
    }
    async fn seal_state(&self, name: &str) -> Result<Option<serde_json::Value>> {
        seal::seal_state(&self.pool, name).await
    }
    async fn seal_state_put(&self, name: &str, doc: &serde_json::Value, at: Ms) -> Result<()> {
        seal::seal_state_put(&self.pool, name, doc, at).await
    }
    async fn batch_rows(&self, device: &str, from: Ms, to: Ms) -> Result<BatchRows> {
        seal::batch_rows(&self.pool, device, from, to).await
    }
    async fn purge(&self, table: Retained, before: Ms) -> Result<u64> {
        rollup::purge(&self.pool, table, before).await
    }
    async fn ping(&self) -> Result<()> {
        sqlx::query_scalar!(r#"SELECT 1 AS "one!""#)
            .fetch_one(&self.pool)
            .await
            .map_err(db)?;
        Ok(())
    }
}
