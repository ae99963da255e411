//! (being written)
#![allow(clippy::unused_async)]

use shopfloor_store::*;

#[derive(Debug, Clone)]
pub struct SqliteStore {}

fn pending(what: &str) -> StoreError {
    StoreError::Db(format!("{what}: not yet written"))
}

impl SqliteStore {
    /// Opens (creating if missing) the database at `url` (`sqlite://PATH`), WAL mode, and runs
    /// the migrations.
    pub async fn open(url: &str) -> Result<Self> {
        let _ = url;
        Err(pending("open"))
    }
}

impl Store for SqliteStore {
    async fn ingest(&self, _batches: &[NewBatch]) -> Result<Vec<Outcome>> {
        Err(pending("ingest"))
    }
    async fn quarantine(&self, _rows: &[QuarantineRow]) -> Result<()> {
        Err(pending("quarantine"))
    }
    async fn list_quarantine(
        &self,
        _before: Option<i64>,
        _limit: i64,
    ) -> Result<Vec<QuarantineEntry>> {
        Err(pending("list_quarantine"))
    }
    async fn chain_events(&self, _agent: Option<&str>, _limit: i64) -> Result<Vec<ChainEvent>> {
        Err(pending("chain_events"))
    }
    async fn agent_heads(&self) -> Result<Vec<AgentHead>> {
        Err(pending("agent_heads"))
    }
    async fn batches(
        &self,
        _agent: &str,
        _from_seq: i64,
        _to_seq: i64,
        _with_payload: bool,
    ) -> Result<Vec<StoredBatch>> {
        Err(pending("batches"))
    }
    async fn chain_ranges(&self, _from: Ms, _to: Ms) -> Result<Vec<ChainRange>> {
        Err(pending("chain_ranges"))
    }
    async fn samples(
        &self,
        _device: &str,
        _point: &str,
        _from: Ms,
        _to: Ms,
        _limit: i64,
    ) -> Result<Vec<SampleRow>> {
        Err(pending("samples"))
    }
    async fn dirty(&self, _limit: i64) -> Result<Vec<DirtyEntry>> {
        Err(pending("dirty"))
    }
    async fn raw_slice(&self, _device: &str, _from: Ms, _to: Ms) -> Result<RawSlice> {
        Err(pending("raw_slice"))
    }
    async fn device_buckets(
        &self,
        _device: &str,
        _gran: Gran,
        _from: Ms,
        _to: Ms,
    ) -> Result<(Vec<StateBucket>, Vec<CounterBucket>, Vec<ActivityBucket>)> {
        Err(pending("device_buckets"))
    }
    async fn apply_rollups(&self, _update: &RollupUpdate) -> Result<()> {
        Err(pending("apply_rollups"))
    }
    async fn state_buckets(
        &self,
        _filter: &DeviceFilter,
        _gran: Gran,
        _from: Ms,
        _to: Ms,
    ) -> Result<Vec<StateBucket>> {
        Err(pending("state_buckets"))
    }
    async fn counter_buckets(
        &self,
        _filter: &DeviceFilter,
        _gran: Gran,
        _from: Ms,
        _to: Ms,
    ) -> Result<Vec<CounterBucket>> {
        Err(pending("counter_buckets"))
    }
    async fn activity_buckets(
        &self,
        _filter: &DeviceFilter,
        _gran: Gran,
        _from: Ms,
        _to: Ms,
    ) -> Result<Vec<ActivityBucket>> {
        Err(pending("activity_buckets"))
    }
    async fn last_readings_before(
        &self,
        _filter: &DeviceFilter,
        _since: Ms,
        _before: Ms,
    ) -> Result<Vec<(String, String, Ms)>> {
        Err(pending("last_readings_before"))
    }
    async fn lease(&self, _name: &str, _holder: &str, _now: Ms, _until: Ms) -> Result<bool> {
        Err(pending("lease"))
    }
    async fn registry_list(&self, _kind: &str) -> Result<Vec<RegistryItem>> {
        Err(pending("registry_list"))
    }
    async fn registry_get(&self, _kind: &str, _id: &str) -> Result<Option<RegistryItem>> {
        Err(pending("registry_get"))
    }
    async fn registry_put(&self, _item: &RegistryItem) -> Result<Option<serde_json::Value>> {
        Err(pending("registry_put"))
    }
    async fn registry_delete(
        &self,
        _kind: &str,
        _id: &str,
        _actor: &str,
        _at: Ms,
    ) -> Result<Option<serde_json::Value>> {
        Err(pending("registry_delete"))
    }
    async fn inputs_put(&self, _record: &InputsRecord) -> Result<i64> {
        Err(pending("inputs_put"))
    }
    async fn inputs_current(
        &self,
        _filter: &DeviceFilter,
        _from: Ms,
        _to: Ms,
    ) -> Result<Vec<InputsRecord>> {
        Err(pending("inputs_current"))
    }
    async fn inputs_history(&self, _entity: &str) -> Result<Vec<InputsRecord>> {
        Err(pending("inputs_history"))
    }
    async fn audit(&self, _filter: &AuditFilter) -> Result<Vec<AuditEntry>> {
        Err(pending("audit"))
    }
    async fn token_add(&self, _token: &TokenRow) -> Result<()> {
        Err(pending("token_add"))
    }
    async fn token_by_hash(&self, _hash: &str) -> Result<Option<TokenRow>> {
        Err(pending("token_by_hash"))
    }
    async fn tokens(&self) -> Result<Vec<TokenRow>> {
        Err(pending("tokens"))
    }
    async fn token_revoke(&self, _name: &str, _actor: &str, _at: Ms) -> Result<bool> {
        Err(pending("token_revoke"))
    }
    async fn purge(&self, _table: Retained, _before: Ms) -> Result<u64> {
        Err(pending("purge"))
    }
    async fn ping(&self) -> Result<()> {
        Err(pending("ping"))
    }
}
