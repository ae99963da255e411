#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The conformance suite must fail on a wrong store: each test wraps the real SQLite store in
//! one deliberate bug and expects the suite to panic at the check that names it.

use shopfloor_store::*;
use shopfloor_store_sqlite::SqliteStore;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Bug {
    /// Reports every stored batch as Linked.
    GapsLookLinked,
    /// Forgets the `cleared` ranges.
    IgnoresCleared,
    /// Adds state buckets to the stored ones instead of replacing them.
    Accumulates,
    /// Drops the readings around the window.
    SliceWithoutNeighbours,
    /// Matches the prefix as a plain string prefix (`p1/e1` also matches `p1/e1x/…`).
    StringPrefix,
    /// Audits an unchanged registry put.
    AuditsUnchangedPut,
    /// Counts nothing when purging.
    PurgeCountsZero,
    /// Returns superseded seal versions as if they were the latest.
    SealLatestIgnored,
}

#[derive(Debug)]
struct Buggy {
    inner: SqliteStore,
    bug: Bug,
}

impl Buggy {
    /// For [`Bug::StringPrefix`]: the filter one segment up, then a plain string-prefix match.
    fn widen(&self, filter: &DeviceFilter) -> (DeviceFilter, String) {
        let p = filter.prefix.clone();
        if self.bug != Bug::StringPrefix {
            return (filter.clone(), String::new());
        }
        let parent = p.rsplit_once('/').map_or(p.as_str(), |(a, _)| a).to_owned();
        (DeviceFilter { prefix: parent }, p)
    }
}

impl Store for Buggy {
    async fn ingest(&self, batches: &[NewBatch]) -> Result<Vec<Outcome>> {
        let out = self.inner.ingest(batches).await?;
        if self.bug == Bug::GapsLookLinked {
            return Ok(out
                .into_iter()
                .map(|o| match o {
                    Outcome::Stored { .. } => Outcome::Stored {
                        chain: Chain::Linked,
                    },
                    d => d,
                })
                .collect());
        }
        Ok(out)
    }
    async fn quarantine(&self, rows: &[QuarantineRow]) -> Result<()> {
        self.inner.quarantine(rows).await
    }
    async fn list_quarantine(
        &self,
        before: Option<i64>,
        limit: i64,
    ) -> Result<Vec<QuarantineEntry>> {
        self.inner.list_quarantine(before, limit).await
    }
    async fn chain_events(&self, agent: Option<&str>, limit: i64) -> Result<Vec<ChainEvent>> {
        self.inner.chain_events(agent, limit).await
    }
    async fn agent_heads(&self) -> Result<Vec<AgentHead>> {
        self.inner.agent_heads().await
    }
    async fn batches(
        &self,
        agent: &str,
        from_seq: i64,
        to_seq: i64,
        with_payload: bool,
    ) -> Result<Vec<StoredBatch>> {
        self.inner
            .batches(agent, from_seq, to_seq, with_payload)
            .await
    }
    async fn chain_ranges(&self, from: Ms, to: Ms) -> Result<Vec<ChainRange>> {
        self.inner.chain_ranges(from, to).await
    }
    async fn samples(
        &self,
        device: &str,
        point: &str,
        from: Ms,
        to: Ms,
        limit: i64,
    ) -> Result<Vec<SampleRow>> {
        self.inner.samples(device, point, from, to, limit).await
    }
    async fn dirty(&self, limit: i64) -> Result<Vec<DirtyEntry>> {
        self.inner.dirty(limit).await
    }
    async fn raw_slice(&self, device: &str, from: Ms, to: Ms) -> Result<RawSlice> {
        let mut slice = self.inner.raw_slice(device, from, to).await?;
        if self.bug == Bug::SliceWithoutNeighbours {
            slice.readings.retain(|r| r.t >= from && r.t < to);
        }
        Ok(slice)
    }
    async fn device_buckets(
        &self,
        device: &str,
        gran: Gran,
        from: Ms,
        to: Ms,
    ) -> Result<(Vec<StateBucket>, Vec<CounterBucket>, Vec<ActivityBucket>)> {
        self.inner.device_buckets(device, gran, from, to).await
    }
    async fn apply_rollups(&self, update: &RollupUpdate) -> Result<()> {
        if self.bug == Bug::IgnoresCleared {
            let mut u = update.clone();
            u.cleared.clear();
            return self.inner.apply_rollups(&u).await;
        }
        if self.bug == Bug::Accumulates {
            let mut u = update.clone();
            u.cleared.clear();
            for s in &mut u.states {
                let (old, _, _) = self
                    .inner
                    .device_buckets(&s.device, s.gran, s.bucket, s.bucket + 1)
                    .await?;
                if let Some(o) = old.first() {
                    s.producing += o.producing;
                    s.idle += o.idle;
                }
            }
            return self.inner.apply_rollups(&u).await;
        }
        self.inner.apply_rollups(update).await
    }
    async fn state_buckets(
        &self,
        filter: &DeviceFilter,
        gran: Gran,
        from: Ms,
        to: Ms,
    ) -> Result<Vec<StateBucket>> {
        let (f, p) = self.widen(filter);
        let mut v = self.inner.state_buckets(&f, gran, from, to).await?;
        v.retain(|b| b.device.starts_with(&p));
        Ok(v)
    }
    async fn counter_buckets(
        &self,
        filter: &DeviceFilter,
        gran: Gran,
        from: Ms,
        to: Ms,
    ) -> Result<Vec<CounterBucket>> {
        let (f, p) = self.widen(filter);
        let mut v = self.inner.counter_buckets(&f, gran, from, to).await?;
        v.retain(|b| b.device.starts_with(&p));
        Ok(v)
    }
    async fn activity_buckets(
        &self,
        filter: &DeviceFilter,
        gran: Gran,
        from: Ms,
        to: Ms,
    ) -> Result<Vec<ActivityBucket>> {
        let (f, p) = self.widen(filter);
        let mut v = self.inner.activity_buckets(&f, gran, from, to).await?;
        v.retain(|b| b.device.starts_with(&p));
        Ok(v)
    }
    async fn last_readings_before(
        &self,
        filter: &DeviceFilter,
        since: Ms,
        before: Ms,
    ) -> Result<Vec<(String, String, Ms)>> {
        self.inner.last_readings_before(filter, since, before).await
    }
    async fn lease(&self, name: &str, holder: &str, now: Ms, until: Ms) -> Result<bool> {
        self.inner.lease(name, holder, now, until).await
    }
    async fn registry_list(&self, kind: &str) -> Result<Vec<RegistryItem>> {
        self.inner.registry_list(kind).await
    }
    async fn registry_get(&self, kind: &str, id: &str) -> Result<Option<RegistryItem>> {
        self.inner.registry_get(kind, id).await
    }
    async fn registry_put(&self, item: &RegistryItem) -> Result<Option<serde_json::Value>> {
        let before = self.inner.registry_get(&item.kind, &item.id).await?;
        if self.bug == Bug::AuditsUnchangedPut
            && let Some(b) = before
            && b.doc == item.doc
        {
            // Touch the item so the audit trail gets an entry although nothing changed.
            self.inner
                .registry_put(&RegistryItem {
                    doc: serde_json::json!({"touched": true}),
                    ..item.clone()
                })
                .await?;
            self.inner.registry_put(item).await?;
            return Ok(Some(b.doc));
        }
        self.inner.registry_put(item).await
    }
    async fn registry_delete(
        &self,
        kind: &str,
        id: &str,
        actor: &str,
        at: Ms,
    ) -> Result<Option<serde_json::Value>> {
        self.inner.registry_delete(kind, id, actor, at).await
    }
    async fn inputs_put(&self, record: &InputsRecord) -> Result<i64> {
        self.inner.inputs_put(record).await
    }
    async fn inputs_current(
        &self,
        filter: &DeviceFilter,
        from: Ms,
        to: Ms,
    ) -> Result<Vec<InputsRecord>> {
        self.inner.inputs_current(filter, from, to).await
    }
    async fn inputs_history(&self, entity: &str) -> Result<Vec<InputsRecord>> {
        self.inner.inputs_history(entity).await
    }
    async fn audit(&self, filter: &AuditFilter) -> Result<Vec<AuditEntry>> {
        self.inner.audit(filter).await
    }
    async fn token_add(&self, token: &TokenRow) -> Result<()> {
        self.inner.token_add(token).await
    }
    async fn token_by_hash(&self, hash: &str) -> Result<Option<TokenRow>> {
        self.inner.token_by_hash(hash).await
    }
    async fn tokens(&self) -> Result<Vec<TokenRow>> {
        self.inner.tokens().await
    }
    async fn token_revoke(&self, name: &str, actor: &str, at: Ms) -> Result<bool> {
        self.inner.token_revoke(name, actor, at).await
    }
    async fn user_add(&self, user: &UserRow) -> Result<bool> {
        self.inner.user_add(user).await
    }
    async fn user_get(&self, name: &str) -> Result<Option<UserRow>> {
        self.inner.user_get(name).await
    }
    async fn users(&self) -> Result<Vec<UserRow>> {
        self.inner.users().await
    }
    async fn user_update(&self, update: &UserUpdate) -> Result<Option<UserRow>> {
        self.inner.user_update(update).await
    }
    async fn session_add(&self, session: &SessionRow) -> Result<()> {
        self.inner.session_add(session).await
    }
    async fn session_get(&self, id_hash: &str) -> Result<Option<(SessionRow, UserRow)>> {
        self.inner.session_get(id_hash).await
    }
    async fn session_touch(&self, id_hash: &str, at: Ms) -> Result<()> {
        self.inner.session_touch(id_hash, at).await
    }
    async fn session_delete(&self, id_hash: &str) -> Result<bool> {
        self.inner.session_delete(id_hash).await
    }
    async fn sessions_purge(&self, now: Ms, idle_before: Ms) -> Result<u64> {
        self.inner.sessions_purge(now, idle_before).await
    }
    async fn seal_put(&self, seal: &SealRow) -> Result<()> {
        self.inner.seal_put(seal).await
    }
    async fn seals(&self, filter: &SealFilter) -> Result<Vec<SealRow>> {
        if self.bug == Bug::SealLatestIgnored {
            let all = SealFilter {
                latest_only: false,
                ..filter.clone()
            };
            return self.inner.seals(&all).await;
        }
        self.inner.seals(filter).await
    }
    async fn seal_head(&self, signer: &str) -> Result<Option<SealRow>> {
        self.inner.seal_head(signer).await
    }
    async fn seal_state(&self, name: &str) -> Result<Option<serde_json::Value>> {
        self.inner.seal_state(name).await
    }
    async fn seal_state_put(&self, name: &str, doc: &serde_json::Value, at: Ms) -> Result<()> {
        self.inner.seal_state_put(name, doc, at).await
    }
    async fn batch_rows(&self, device: &str, from: Ms, to: Ms) -> Result<BatchRows> {
        self.inner.batch_rows(device, from, to).await
    }
    async fn purge(&self, table: Retained, before: Ms) -> Result<u64> {
        let n = self.inner.purge(table, before).await?;
        Ok(if self.bug == Bug::PurgeCountsZero {
            0
        } else {
            n
        })
    }
    async fn ping(&self) -> Result<()> {
        self.inner.ping().await
    }
}

async fn run_with(bug: Bug) {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("gateway.db").display());
    let store = Buggy {
        inner: SqliteStore::open(&url).await.unwrap(),
        bug,
    };
    shopfloor_store::conformance::run(&store).await;
}

#[tokio::test]
#[should_panic(expected = "conformance: ingest: seq 5 after 3 is Gap{missing_from: 4}")]
async fn catches_a_gap_reported_as_linked() {
    run_with(Bug::GapsLookLinked).await;
}

#[tokio::test]
#[should_panic(expected = "conformance: rollups: cleared state buckets without new data disappear")]
async fn catches_ignored_cleared_ranges() {
    run_with(Bug::IgnoresCleared).await;
}

#[tokio::test]
#[should_panic(
    expected = "conformance: rollups: applying the same update twice gives the same rows"
)]
async fn catches_accumulated_buckets() {
    run_with(Bug::Accumulates).await;
}

#[tokio::test]
#[should_panic(expected = "conformance: raw_slice: readings in the window plus the one before")]
async fn catches_a_slice_without_neighbours() {
    run_with(Bug::SliceWithoutNeighbours).await;
}

#[tokio::test]
#[should_panic(expected = "conformance: rollups: buckets of prefix `p1/e1` (minute)")]
async fn catches_a_string_prefix_match() {
    run_with(Bug::StringPrefix).await;
}

#[tokio::test]
#[should_panic(expected = "conformance: registry: an unchanged put writes no audit entry")]
async fn catches_an_audited_unchanged_put() {
    run_with(Bug::AuditsUnchangedPut).await;
}

#[tokio::test]
#[should_panic(expected = "conformance: purge: samples deleted by t < before, counted")]
async fn catches_a_wrong_purge_count() {
    run_with(Bug::PurgeCountsZero).await;
}

#[tokio::test]
#[should_panic(expected = "conformance: seals: latest only, without bodies")]
async fn catches_superseded_seals_listed_as_latest() {
    run_with(Bug::SealLatestIgnored).await;
}
