//! Ingest of verified batches, the quarantine, and reads of the raw data and the hash chain.
//!
//! Invariants:
//! - One call of [`ingest`] is one write transaction: every batch of the call, with its rows,
//!   dirty ranges, chain events and head update, commits together or not at all.
//! - A batch whose `(agent, seq)` is stored already (also earlier in the same call) writes
//!   nothing: not its rows, not a chain event.
//! - The chain check of a batch sees every batch committed before and every batch stored
//!   earlier in the same call; it records a `gap` and/or a `fork` chain event exactly when the
//!   outcome is not [`Chain::Linked`] (a batch that opens a gap *and* disagrees with its stored
//!   successor records both).

use std::collections::BTreeSet;

use shopfloor_store::{
    AgentHead, Chain, ChainEvent, ChainRange, Ms, NewBatch, Outcome, QuarantineEntry,
    QuarantineRow, Result, SampleRow, StoreError, StoredBatch,
};
use sqlx::SqliteConnection;

use crate::{SqliteStore, db};

/// `prev` of seq 1: 64 zeros.
const ZERO_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

pub(crate) async fn ingest(store: &SqliteStore, batches: &[NewBatch]) -> Result<Vec<Outcome>> {
    if batches.is_empty() {
        return Ok(Vec::new());
    }
    let mut tx = store.begin("ingest").await?;
    let mut outcomes = Vec::with_capacity(batches.len());
    for batch in batches {
        let outcome = ingest_one(&mut tx, batch).await.map_err(|e| match e {
            IngestError::Db(e) => db("ingest")(e),
            IngestError::Store(e) => e,
        })?;
        outcomes.push(outcome);
    }
    tx.commit().await.map_err(db("ingest: commit"))?;
    Ok(outcomes)
}

/// A driver error (mapped once, with the operation name) or a store error.
enum IngestError {
    Db(sqlx::Error),
    Store(StoreError),
}

impl From<sqlx::Error> for IngestError {
    fn from(e: sqlx::Error) -> Self {
        IngestError::Db(e)
    }
}

async fn ingest_one(
    conn: &mut SqliteConnection,
    b: &NewBatch,
) -> std::result::Result<Outcome, IngestError> {
    let inserted = sqlx::query!(
        "INSERT INTO batches (agent, seq, body_hash, prev, sealed, from_ms, to_ms, received, payload)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
         ON CONFLICT (agent, seq) DO NOTHING",
        b.agent,
        b.seq,
        b.body_hash,
        b.prev,
        b.sealed,
        b.from,
        b.to,
        b.received,
        b.payload,
    )
    .execute(&mut *conn)
    .await?
    .rows_affected();
    if inserted == 0 {
        let stored = sqlx::query_scalar!(
            "SELECT body_hash FROM batches WHERE agent = ?1 AND seq = ?2",
            b.agent,
            b.seq
        )
        .fetch_optional(&mut *conn)
        .await?;
        let Some(stored) = stored else {
            return Err(IngestError::Store(StoreError::Corrupt(format!(
                "batch {} seq {}: insert conflicted but no stored row",
                b.agent, b.seq
            ))));
        };
        return Ok(Outcome::Duplicate {
            same_hash: stored == b.body_hash,
        });
    }

    let (chain, events) = check_chain(conn, b).await?;
    for (kind, detail) in &events {
        sqlx::query!(
            "INSERT INTO chain_events (agent, seq, at, kind, detail) VALUES (?1, ?2, ?3, ?4, ?5)",
            b.agent,
            b.seq,
            b.received,
            kind,
            detail
        )
        .execute(&mut *conn)
        .await?;
    }

    // In an UPDATE every right-hand side sees the old row, so the CASEs compare with the old
    // last_seq.
    sqlx::query!(
        "INSERT INTO heads (agent, batches, first_seq, last_seq, last_hash, last_to, last_received)
         VALUES (?1, 1, ?2, ?2, ?3, ?4, ?5)
         ON CONFLICT (agent) DO UPDATE SET
             batches = batches + 1,
             first_seq = MIN(first_seq, excluded.first_seq),
             last_seq = MAX(last_seq, excluded.last_seq),
             last_hash = CASE WHEN excluded.last_seq > last_seq THEN excluded.last_hash ELSE last_hash END,
             last_to = CASE WHEN excluded.last_seq > last_seq THEN excluded.last_to ELSE last_to END,
             last_received = CASE WHEN excluded.last_seq > last_seq
                                  THEN excluded.last_received ELSE last_received END",
        b.agent,
        b.seq,
        b.body_hash,
        b.to,
        b.received
    )
    .execute(&mut *conn)
    .await?;

    insert_rows(conn, b).await?;
    Ok(Outcome::Stored { chain })
}

/// The batch's place in its agent's chain, and the chain events to record (`kind`, `detail`).
async fn check_chain(
    conn: &mut SqliteConnection,
    b: &NewBatch,
) -> std::result::Result<(Chain, Vec<(&'static str, String)>), IngestError> {
    let mut forks = Vec::new();
    let mut gap = None;
    if b.seq <= 1 {
        if b.prev != ZERO_HASH {
            forks.push(format!(
                "seq {} names prev {} instead of the zero hash",
                b.seq, b.prev
            ));
        }
    } else {
        let below = sqlx::query!(
            "SELECT seq, body_hash FROM batches WHERE agent = ?1 AND seq < ?2
             ORDER BY seq DESC LIMIT 1",
            b.agent,
            b.seq
        )
        .fetch_optional(&mut *conn)
        .await?;
        match below {
            Some(p) if p.seq == b.seq - 1 => {
                if p.body_hash != b.prev {
                    forks.push(format!(
                        "prev {} differs from the stored hash {} of seq {}",
                        b.prev, p.body_hash, p.seq
                    ));
                }
            }
            Some(p) => gap = Some(p.seq + 1),
            None => gap = Some(1),
        }
    }
    let next_seq = b.seq + 1;
    let next_prev = sqlx::query_scalar!(
        "SELECT prev FROM batches WHERE agent = ?1 AND seq = ?2",
        b.agent,
        next_seq
    )
    .fetch_optional(&mut *conn)
    .await?;
    if let Some(next_prev) = next_prev
        && next_prev != b.body_hash
    {
        forks.push(format!(
            "the stored seq {next_seq} names prev {next_prev}, not this batch's hash {}",
            b.body_hash
        ));
    }

    let mut events = Vec::new();
    if let Some(missing_from) = gap {
        events.push((
            "gap",
            format!("seq {}..={} missing", missing_from, b.seq - 1),
        ));
    }
    let chain = if forks.is_empty() {
        match gap {
            Some(missing_from) => Chain::Gap { missing_from },
            None => Chain::Linked,
        }
    } else {
        let detail = forks.join("; ");
        events.push(("fork", detail.clone()));
        Chain::Fork { detail }
    };
    Ok((chain, events))
}

/// Rows per multi-row INSERT of samples and readings (`src/sql/insert_*_32.sql`).
const CHUNK: usize = 32;

/// One checked 32-row INSERT (`$file`, columns `$col…` of each row, then the batch's agent
/// and seq) over the chunk `$rows`, which must hold exactly [`CHUNK`] rows.
macro_rules! insert_32 {
    ($file:literal, $conn:ident, $rows:ident, $b:ident; $($col:ident),+) => {
        insert_32!(@rows $file, $conn, $rows, $b, [$($col),+];
            0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 21 22 23 24 25 26 27 28 29 30 31)
    };
    (@rows $file:literal, $conn:ident, $rows:ident, $b:ident, $cols:tt; $($i:literal)+) => {
        insert_32!(@args $file, $conn, []; $( [$rows, $i, $b, $cols] )+)
    };
    // Expands one row's arguments at a time (nested repetitions of different depths cannot
    // share one transcriber).
    (@args $file:literal, $conn:ident, [$($done:tt)*]; [$rows:ident, $i:literal, $b:ident, [$($col:ident),+]] $($rest:tt)*) => {
        insert_32!(@args $file, $conn, [$($done)* $($rows[$i].$col,)+ $b.agent, $b.seq,]; $($rest)*)
    };
    (@args $file:literal, $conn:ident, [$($done:tt)*];) => {
        sqlx::query_file!($file, $($done)*).execute(&mut *$conn).await?
    };
}

/// Rows per multi-row statement of [`insert_many`] (at most 9 columns: 2,304 parameters).
const MANY: usize = 256;

/// Inserts `rows` with one multi-row `INSERT … VALUES (…), (…)` per [`MANY`] rows (`head` is
/// the statement up to `VALUES`, `tail` what follows the rows, e.g. an `ON CONFLICT` clause).
/// One statement per row cost one round trip to sqlx's SQLite worker thread each: with 1,000
/// agents of 10 machines that was about 50,000 statements a second, the store's bottleneck
/// (docs/BENCHMARKS.md). Statements are prepared once per connection and size, like the rest.
async fn insert_many<'r, T>(
    conn: &mut SqliteConnection,
    head: &'static str,
    tail: &'static str,
    rows: &'r [T],
    mut bind: impl FnMut(sqlx::query_builder::Separated<'_, sqlx::Sqlite, &'static str>, &'r T),
) -> std::result::Result<(), sqlx::Error> {
    for chunk in rows.chunks(MANY) {
        let mut q = sqlx::QueryBuilder::<sqlx::Sqlite>::new(head);
        q.push_values(chunk, &mut bind);
        q.push(tail);
        q.build().execute(&mut *conn).await?;
    }
    Ok(())
}

/// The decoded rows, the series they belong to, and the dirty ranges of one batch. Samples
/// and readings (the bulk of a batch) go 32 rows per checked statement and the rest in one
/// multi-row statement per table ([`insert_many`]); every statement is prepared once per
/// connection and re-bound.
async fn insert_rows(
    conn: &mut SqliteConnection,
    b: &NewBatch,
) -> std::result::Result<(), sqlx::Error> {
    let mut chunks = b.samples.chunks_exact(CHUNK);
    for c in &mut chunks {
        insert_32!(
            "src/sql/insert_samples_32.sql", conn, c, b;
            device, point, t, num, is_bool, text, err
        );
    }
    insert_many(
        conn,
        "INSERT INTO samples (device, point, t, num, is_bool, text, err, agent, seq) ",
        "",
        chunks.remainder(),
        |mut q, s| {
            q.push_bind(&s.device)
                .push_bind(&s.point)
                .push_bind(s.t)
                .push_bind(s.num)
                .push_bind(s.is_bool)
                .push_bind(&s.text)
                .push_bind(&s.err)
                .push_bind(&b.agent)
                .push_bind(b.seq);
        },
    )
    .await?;
    let points: Vec<(&str, &str)> = b
        .samples
        .iter()
        .map(|s| (s.device.as_str(), s.point.as_str()))
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    insert_many(
        conn,
        "INSERT INTO sample_points (device, point) ",
        " ON CONFLICT (device, point) DO NOTHING",
        &points,
        |mut q, (device, point)| {
            q.push_bind(*device).push_bind(*point);
        },
    )
    .await?;
    insert_many(
        conn,
        "INSERT INTO states (device, from_ms, to_ms, state, agent, seq) ",
        "",
        &b.states,
        |mut q, s| {
            q.push_bind(&s.device)
                .push_bind(s.from)
                .push_bind(s.to)
                .push_bind(&s.state)
                .push_bind(&b.agent)
                .push_bind(b.seq);
        },
    )
    .await?;
    let mut chunks = b.readings.chunks_exact(CHUNK);
    for c in &mut chunks {
        insert_32!(
            "src/sql/insert_readings_32.sql", conn, c, b;
            device, role, point, t, v, width_bits, rollover
        );
    }
    insert_many(
        conn,
        "INSERT INTO readings (device, role, point, t, v, width_bits, rollover, agent, seq) ",
        "",
        chunks.remainder(),
        |mut q, r| {
            q.push_bind(&r.device)
                .push_bind(&r.role)
                .push_bind(&r.point)
                .push_bind(r.t)
                .push_bind(r.v)
                .push_bind(r.width_bits)
                .push_bind(r.rollover)
                .push_bind(&b.agent)
                .push_bind(b.seq);
        },
    )
    .await?;
    let series: Vec<(&str, &str, &str)> = b
        .readings
        .iter()
        .map(|r| (r.device.as_str(), r.role.as_str(), r.point.as_str()))
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    insert_many(
        conn,
        "INSERT INTO reading_series (device, role, point) ",
        " ON CONFLICT (device, role, point) DO NOTHING",
        &series,
        |mut q, (device, role, point)| {
            q.push_bind(*device).push_bind(*role).push_bind(*point);
        },
    )
    .await?;
    for l in &b.links {
        sqlx::query!(
            "INSERT INTO links (device, t, up, detail, agent, seq) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            l.device,
            l.t,
            l.up,
            l.detail,
            b.agent,
            b.seq
        )
        .execute(&mut *conn)
        .await?;
    }
    for d in &b.dirty {
        sqlx::query!(
            "INSERT INTO dirty (device, from_ms, to_ms) VALUES (?1, ?2, ?3)",
            d.device,
            d.from,
            d.to
        )
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

pub(crate) async fn quarantine(store: &SqliteStore, rows: &[QuarantineRow]) -> Result<()> {
    if rows.is_empty() {
        return Ok(());
    }
    let mut tx = store.begin("quarantine").await?;
    for r in rows {
        sqlx::query!(
            "INSERT INTO quarantine (received, topic, agent, seq, reason, detail, payload)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            r.received,
            r.topic,
            r.agent,
            r.seq,
            r.reason,
            r.detail,
            r.payload
        )
        .execute(&mut *tx)
        .await
        .map_err(db("quarantine"))?;
    }
    tx.commit().await.map_err(db("quarantine: commit"))
}

pub(crate) async fn list_quarantine(
    store: &SqliteStore,
    before: Option<i64>,
    limit: i64,
) -> Result<Vec<QuarantineEntry>> {
    let rows = sqlx::query!(
        "SELECT id, received, topic, agent, seq, reason, detail, payload FROM quarantine
         WHERE id < COALESCE(?1, 9223372036854775807)
         ORDER BY id DESC LIMIT ?2",
        before,
        limit
    )
    .fetch_all(&store.read)
    .await
    .map_err(db("list_quarantine"))?;
    Ok(rows
        .into_iter()
        .map(|r| QuarantineEntry {
            id: r.id,
            row: QuarantineRow {
                received: r.received,
                topic: r.topic,
                agent: r.agent,
                seq: r.seq,
                reason: r.reason,
                detail: r.detail,
                payload: r.payload,
            },
        })
        .collect())
}

pub(crate) async fn chain_events(
    store: &SqliteStore,
    agent: Option<&str>,
    limit: i64,
) -> Result<Vec<ChainEvent>> {
    let rows =
        match agent {
            Some(agent) => {
                sqlx::query_as!(
                    ChainEvent,
                    "SELECT agent, seq, at, kind, detail FROM chain_events WHERE agent = ?1
             ORDER BY id DESC LIMIT ?2",
                    agent,
                    limit
                )
                .fetch_all(&store.read)
                .await
            }
            None => sqlx::query_as!(
                ChainEvent,
                "SELECT agent, seq, at, kind, detail FROM chain_events ORDER BY id DESC LIMIT ?1",
                limit
            )
            .fetch_all(&store.read)
            .await,
        };
    rows.map_err(db("chain_events"))
}

pub(crate) async fn agent_heads(store: &SqliteStore) -> Result<Vec<AgentHead>> {
    sqlx::query_as!(
        AgentHead,
        r#"SELECT agent, batches, first_seq, last_seq, last_hash, last_to, last_received,
                  last_seq - first_seq + 1 - batches AS "missing!: i64"
           FROM heads ORDER BY agent COLLATE BINARY"#
    )
    .fetch_all(&store.read)
    .await
    .map_err(db("agent_heads"))
}

pub(crate) async fn batches(
    store: &SqliteStore,
    agent: &str,
    from_seq: i64,
    to_seq: i64,
    with_payload: bool,
) -> Result<Vec<StoredBatch>> {
    let rows = if with_payload {
        sqlx::query_as!(
            StoredBatch,
            r#"SELECT agent, seq, body_hash, prev, sealed, from_ms AS "from", to_ms AS "to",
                      received, payload AS "payload?"
               FROM batches WHERE agent = ?1 AND seq >= ?2 AND seq <= ?3 ORDER BY seq"#,
            agent,
            from_seq,
            to_seq
        )
        .fetch_all(&store.read)
        .await
    } else {
        sqlx::query_as!(
            StoredBatch,
            r#"SELECT agent, seq, body_hash, prev, sealed, from_ms AS "from", to_ms AS "to",
                      received, NULL AS "payload?: Vec<u8>"
               FROM batches WHERE agent = ?1 AND seq >= ?2 AND seq <= ?3 ORDER BY seq"#,
            agent,
            from_seq,
            to_seq
        )
        .fetch_all(&store.read)
        .await
    };
    rows.map_err(db("batches"))
}

pub(crate) async fn chain_ranges(store: &SqliteStore, from: Ms, to: Ms) -> Result<Vec<ChainRange>> {
    sqlx::query_as!(
        ChainRange,
        r#"SELECT g.agent AS "agent!", g.lo AS "first_seq!: i64", f.body_hash AS first_hash,
                  g.hi AS "last_seq!: i64", l.body_hash AS last_hash, g.n AS "batches!: i64"
           FROM (SELECT agent, MIN(seq) AS lo, MAX(seq) AS hi, COUNT(*) AS n
                 FROM batches INDEXED BY batches_to WHERE to_ms > ?1 AND from_ms < ?2 GROUP BY agent) AS g
           JOIN batches AS f ON f.agent = g.agent AND f.seq = g.lo
           JOIN batches AS l ON l.agent = g.agent AND l.seq = g.hi
           ORDER BY g.agent"#,
        from,
        to
    )
    .fetch_all(&store.read)
    .await
    .map_err(db("chain_ranges"))
}

pub(crate) async fn samples(
    store: &SqliteStore,
    device: &str,
    point: &str,
    from: Ms,
    to: Ms,
    limit: i64,
) -> Result<Vec<SampleRow>> {
    sqlx::query_as!(
        SampleRow,
        "SELECT device, point, t, num, is_bool, text, err FROM samples
         WHERE device = ?1 AND point = ?2 AND t >= ?3 AND t < ?4 ORDER BY t LIMIT ?5",
        device,
        point,
        from,
        to,
        limit
    )
    .fetch_all(&store.read)
    .await
    .map_err(db("samples"))
}
