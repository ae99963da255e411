//! The two concrete stores behind one enum (docs/ARCHITECTURE.md): SQLite, the zero-setup
//! default, and PostgreSQL for several replicas. Enum dispatch, no `dyn`: every method of
//! [`Store`] forwards to the backend.

use shopfloor_store::*;
use shopfloor_store_pg::PgStore;
use shopfloor_store_sqlite::SqliteStore;

#[derive(Debug, Clone)]
pub enum Db {
    Sqlite(SqliteStore),
    Postgres(PgStore),
}

impl Db {
    /// Opens the store named by `url` (`sqlite:…` or `postgres://…`) and runs its migrations.
    pub async fn open(url: &str, max_connections: Option<u32>) -> Result<Db> {
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Ok(Db::Postgres(
                PgStore::connect(url, max_connections.unwrap_or(8)).await?,
            ))
        } else {
            Ok(Db::Sqlite(SqliteStore::open(url).await?))
        }
    }

    /// `sqlite` or `postgres` (metrics label, logs).
    pub fn backend(&self) -> &'static str {
        match self {
            Db::Sqlite(_) => "sqlite",
            Db::Postgres(_) => "postgres",
        }
    }
}

macro_rules! dispatch {
    ($self:ident, $m:ident($($a:expr),*)) => {
        match $self {
            Db::Sqlite(s) => s.$m($($a),*).await,
            Db::Postgres(s) => s.$m($($a),*).await,
        }
    };
}

impl Store for Db {
    async fn ingest(&self, batches: &[NewBatch]) -> Result<Vec<Outcome>> {
        dispatch!(self, ingest(batches))
    }
    async fn quarantine(&self, rows: &[QuarantineRow]) -> Result<()> {
        dispatch!(self, quarantine(rows))
    }
    async fn list_quarantine(
        &self,
        before: Option<i64>,
        limit: i64,
    ) -> Result<Vec<QuarantineEntry>> {
        dispatch!(self, list_quarantine(before, limit))
    }
    async fn chain_events(&self, agent: Option<&str>, limit: i64) -> Result<Vec<ChainEvent>> {
        dispatch!(self, chain_events(agent, limit))
    }
    async fn agent_heads(&self) -> Result<Vec<AgentHead>> {
        dispatch!(self, agent_heads())
    }
    async fn batches(
        &self,
        agent: &str,
        from_seq: i64,
        to_seq: i64,
        with_payload: bool,
    ) -> Result<Vec<StoredBatch>> {
        dispatch!(self, batches(agent, from_seq, to_seq, with_payload))
    }
    async fn chain_ranges(&self, from: Ms, to: Ms) -> Result<Vec<ChainRange>> {
        dispatch!(self, chain_ranges(from, to))
    }
    async fn samples(
        &self,
        device: &str,
        point: &str,
        from: Ms,
        to: Ms,
        limit: i64,
    ) -> Result<Vec<SampleRow>> {
        dispatch!(self, samples(device, point, from, to, limit))
    }
    async fn dirty(&self, limit: i64) -> Result<Vec<DirtyEntry>> {
        dispatch!(self, dirty(limit))
    }
    async fn raw_slice(&self, device: &str, from: Ms, to: Ms) -> Result<RawSlice> {
        dispatch!(self, raw_slice(device, from, to))
    }
    async fn device_buckets(
        &self,
        device: &str,
        gran: Gran,
        from: Ms,
        to: Ms,
    ) -> Result<(Vec<StateBucket>, Vec<CounterBucket>, Vec<ActivityBucket>)> {
        dispatch!(self, device_buckets(device, gran, from, to))
    }
    async fn apply_rollups(&self, update: &RollupUpdate) -> Result<()> {
        dispatch!(self, apply_rollups(update))
    }
    async fn state_buckets(
        &self,
        filter: &DeviceFilter,
        gran: Gran,
        from: Ms,
        to: Ms,
    ) -> Result<Vec<StateBucket>> {
        dispatch!(self, state_buckets(filter, gran, from, to))
    }
    async fn counter_buckets(
        &self,
        filter: &DeviceFilter,
        gran: Gran,
        from: Ms,
        to: Ms,
    ) -> Result<Vec<CounterBucket>> {
        dispatch!(self, counter_buckets(filter, gran, from, to))
    }
    async fn activity_buckets(
        &self,
        filter: &DeviceFilter,
        gran: Gran,
        from: Ms,
        to: Ms,
    ) -> Result<Vec<ActivityBucket>> {
        dispatch!(self, activity_buckets(filter, gran, from, to))
    }
    async fn last_readings_before(
        &self,
        filter: &DeviceFilter,
        since: Ms,
        before: Ms,
    ) -> Result<Vec<(String, String, Ms)>> {
        dispatch!(self, last_readings_before(filter, since, before))
    }
    async fn lease(&self, name: &str, holder: &str, now: Ms, until: Ms) -> Result<bool> {
        dispatch!(self, lease(name, holder, now, until))
    }
    async fn registry_list(&self, kind: &str) -> Result<Vec<RegistryItem>> {
        dispatch!(self, registry_list(kind))
    }
    async fn registry_get(&self, kind: &str, id: &str) -> Result<Option<RegistryItem>> {
        dispatch!(self, registry_get(kind, id))
    }
    async fn registry_put(&self, item: &RegistryItem) -> Result<Option<serde_json::Value>> {
        dispatch!(self, registry_put(item))
    }
    async fn registry_delete(
        &self,
        kind: &str,
        id: &str,
        actor: &str,
        at: Ms,
    ) -> Result<Option<serde_json::Value>> {
        dispatch!(self, registry_delete(kind, id, actor, at))
    }
    async fn inputs_put(&self, record: &InputsRecord) -> Result<i64> {
        dispatch!(self, inputs_put(record))
    }
    async fn inputs_current(
        &self,
        filter: &DeviceFilter,
        from: Ms,
        to: Ms,
    ) -> Result<Vec<InputsRecord>> {
        dispatch!(self, inputs_current(filter, from, to))
    }
    async fn inputs_history(&self, entity: &str) -> Result<Vec<InputsRecord>> {
        dispatch!(self, inputs_history(entity))
    }
    async fn audit(&self, filter: &AuditFilter) -> Result<Vec<AuditEntry>> {
        dispatch!(self, audit(filter))
    }
    async fn token_add(&self, token: &TokenRow) -> Result<()> {
        dispatch!(self, token_add(token))
    }
    async fn token_by_hash(&self, hash: &str) -> Result<Option<TokenRow>> {
        dispatch!(self, token_by_hash(hash))
    }
    async fn tokens(&self) -> Result<Vec<TokenRow>> {
        dispatch!(self, tokens())
    }
    async fn token_revoke(&self, name: &str, actor: &str, at: Ms) -> Result<bool> {
        dispatch!(self, token_revoke(name, actor, at))
    }
    async fn user_add(&self, user: &UserRow) -> Result<bool> {
        dispatch!(self, user_add(user))
    }
    async fn user_get(&self, name: &str) -> Result<Option<UserRow>> {
        dispatch!(self, user_get(name))
    }
    async fn users(&self) -> Result<Vec<UserRow>> {
        dispatch!(self, users())
    }
    async fn user_update(&self, update: &UserUpdate) -> Result<Option<UserRow>> {
        dispatch!(self, user_update(update))
    }
    async fn session_add(&self, session: &SessionRow) -> Result<()> {
        dispatch!(self, session_add(session))
    }
    async fn session_get(&self, id_hash: &str) -> Result<Option<(SessionRow, UserRow)>> {
        dispatch!(self, session_get(id_hash))
    }
    async fn session_touch(&self, id_hash: &str, at: Ms) -> Result<()> {
        dispatch!(self, session_touch(id_hash, at))
    }
    async fn session_delete(&self, id_hash: &str) -> Result<bool> {
        dispatch!(self, session_delete(id_hash))
    }
    async fn sessions_purge(&self, now: Ms, idle_before: Ms) -> Result<u64> {
        dispatch!(self, sessions_purge(now, idle_before))
    }
    async fn seal_put(&self, seal: &SealRow) -> Result<()> {
        dispatch!(self, seal_put(seal))
    }
    async fn seals(&self, filter: &SealFilter) -> Result<Vec<SealRow>> {
        dispatch!(self, seals(filter))
    }
    async fn seal_head(&self, signer: &str) -> Result<Option<SealRow>> {
        dispatch!(self, seal_head(signer))
    }
    async fn seal_state(&self, name: &str) -> Result<Option<serde_json::Value>> {
        dispatch!(self, seal_state(name))
    }
    async fn seal_state_put(&self, name: &str, doc: &serde_json::Value, at: Ms) -> Result<()> {
        dispatch!(self, seal_state_put(name, doc, at))
    }
    async fn batch_rows(&self, device: &str, from: Ms, to: Ms) -> Result<BatchRows> {
        dispatch!(self, batch_rows(device, from, to))
    }
    async fn purge(&self, table: Retained, before: Ms) -> Result<u64> {
        dispatch!(self, purge(table, before))
    }
    async fn ping(&self) -> Result<()> {
        dispatch!(self, ping())
    }
}
