//! Ingest of verified batches (with duplicate and hash-chain checks), the quarantine, and the
//! read side of raw data (batches, chain events, agent heads, samples).
//!
//! Invariants:
//! - One transaction per [`ingest`] call; per agent of the call a transaction-scoped advisory
//!   lock (class [`LOCK_CLASS`], key `hashtext(agent)`) is taken first, in agent order, so
//!   ingests of one agent are serialised across replicas and every check below sees all
//!   batches committed before.
//! - A batch row, its `heads` update, its decoded rows, its dirty ranges and its chain event are
//!   written in that one transaction; a duplicate `(agent, seq)` writes nothing.
//! - Decoded rows of all batches of a call go in with one `UNNEST` insert per table.

use shopfloor_store::*;
use sqlx::{PgConnection, PgPool};

use crate::{Fail, db, limit, with_retries};

/// The `prev` of seq 1.
pub(crate) const ZERO_HASH: &str =
    "0000000000000000000000000000000000000000000000000000000000000000";

/// Advisory lock class (first key of the two-key form) of the per-agent ingest lock. The
/// two-key lock space does not overlap the one-key space that sqlx's migrator uses.
pub(crate) const LOCK_CLASS: i32 = 0x5346_0001;

/// Takes the per-agent ingest locks of `agents` (sorted, deduplicated by the caller).
pub(crate) async fn lock_agents(conn: &mut PgConnection, agents: &[&str]) -> sqlx::Result<()> {
    for agent in agents {
        sqlx::query!(
            "SELECT pg_advisory_xact_lock($1, hashtext($2))",
            LOCK_CLASS,
            agent
        )
        .fetch_one(&mut *conn)
        .await?;
    }
    Ok(())
}

pub(crate) async fn ingest(pool: &PgPool, batches: &[NewBatch]) -> Result<Vec<Outcome>> {
    if batches.is_empty() {
        return Ok(Vec::new());
    }
    with_retries("ingest", || try_ingest(pool, batches)).await
}

/// The decoded rows of the stored batches of one call, as columns for `UNNEST`.
#[derive(Default)]
struct Columns<'a> {
    s_device: Vec<&'a str>,
    s_point: Vec<&'a str>,
    s_t: Vec<i64>,
    s_num: Vec<Option<f64>>,
    s_is_bool: Vec<bool>,
    s_text: Vec<Option<&'a str>>,
    s_err: Vec<Option<&'a str>>,
    s_agent: Vec<&'a str>,
    s_seq: Vec<i64>,

    st_device: Vec<&'a str>,
    st_from: Vec<i64>,
    st_to: Vec<i64>,
    st_state: Vec<&'a str>,
    st_agent: Vec<&'a str>,
    st_seq: Vec<i64>,

    r_device: Vec<&'a str>,
    r_role: Vec<&'a str>,
    r_point: Vec<&'a str>,
    r_t: Vec<i64>,
    r_v: Vec<f64>,
    r_width: Vec<Option<i32>>,
    r_rollover: Vec<Option<f64>>,
    r_agent: Vec<&'a str>,
    r_seq: Vec<i64>,

    l_device: Vec<&'a str>,
    l_t: Vec<i64>,
    l_up: Vec<bool>,
    l_detail: Vec<&'a str>,
    l_agent: Vec<&'a str>,
    l_seq: Vec<i64>,

    d_device: Vec<&'a str>,
    d_from: Vec<i64>,
    d_to: Vec<i64>,

    e_agent: Vec<&'a str>,
    e_seq: Vec<i64>,
    e_at: Vec<i64>,
    e_kind: Vec<&'static str>,
    e_detail: Vec<String>,
}

impl<'a> Columns<'a> {
    fn add(&mut self, b: &'a NewBatch) {
        let (agent, seq) = (b.agent.as_str(), b.seq);
        for s in &b.samples {
            self.s_device.push(&s.device);
            self.s_point.push(&s.point);
            self.s_t.push(s.t);
            self.s_num.push(s.num);
            self.s_is_bool.push(s.is_bool);
            self.s_text.push(s.text.as_deref());
            self.s_err.push(s.err.as_deref());
            self.s_agent.push(agent);
            self.s_seq.push(seq);
        }
        for s in &b.states {
            self.st_device.push(&s.device);
            self.st_from.push(s.from);
            self.st_to.push(s.to);
            self.st_state.push(&s.state);
            self.st_agent.push(agent);
            self.st_seq.push(seq);
        }
        for r in &b.readings {
            self.r_device.push(&r.device);
            self.r_role.push(&r.role);
            self.r_point.push(&r.point);
            self.r_t.push(r.t);
            self.r_v.push(r.v);
            self.r_width.push(r.width_bits);
            self.r_rollover.push(r.rollover);
            self.r_agent.push(agent);
            self.r_seq.push(seq);
        }
        for l in &b.links {
            self.l_device.push(&l.device);
            self.l_t.push(l.t);
            self.l_up.push(l.up);
            self.l_detail.push(&l.detail);
            self.l_agent.push(agent);
            self.l_seq.push(seq);
        }
        for d in &b.dirty {
            self.d_device.push(&d.device);
            self.d_from.push(d.from);
            self.d_to.push(d.to);
        }
    }

    fn event(&mut self, b: &'a NewBatch, kind: &'static str, detail: String) {
        self.e_agent.push(&b.agent);
        self.e_seq.push(b.seq);
        self.e_at.push(b.received);
        self.e_kind.push(kind);
        self.e_detail.push(detail);
    }
}

/// The chain verdict for a newly stored batch, from its stored neighbours, and the chain events
/// to record (`kind`, `detail`): a `gap` and/or a `fork` exactly when the verdict is not
/// [`Chain::Linked`] (a batch that opens a gap *and* disagrees with its stored successor is a
/// fork and records both).
fn chain_of(
    b: &NewBatch,
    prev_hash: Option<&str>,
    next_prev: Option<&str>,
    below: Option<i64>,
) -> (Chain, Vec<(&'static str, String)>) {
    let mut forks = Vec::new();
    let mut gap = None;
    if b.seq <= 1 {
        if b.prev != ZERO_HASH {
            forks.push(format!(
                "seq {} has prev {}, not the zero hash",
                b.seq, b.prev
            ));
        }
    } else {
        match prev_hash {
            Some(h) if h != b.prev => forks.push(format!(
                "prev {} differs from the stored hash {h} of seq {}",
                b.prev,
                b.seq - 1
            )),
            Some(_) => {}
            None => gap = Some(below.map_or(1, |s| s + 1)),
        }
    }
    if let Some(p) = next_prev
        && p != b.body_hash
    {
        forks.push(format!(
            "stored seq {} names prev {p}, not this batch's hash {}",
            b.seq + 1,
            b.body_hash
        ));
    }
    let mut events = Vec::new();
    if let Some(missing_from) = gap {
        events.push(("gap", format!("seq {missing_from}..={} missing", b.seq - 1)));
    }
    let chain = if !forks.is_empty() {
        let detail = forks.join("; ");
        events.push(("fork", detail.clone()));
        Chain::Fork { detail }
    } else if let Some(missing_from) = gap {
        Chain::Gap { missing_from }
    } else {
        Chain::Linked
    };
    (chain, events)
}

async fn try_ingest(
    pool: &PgPool,
    batches: &[NewBatch],
) -> std::result::Result<Vec<Outcome>, Fail> {
    let mut tx = pool.begin().await?;
    let mut agents: Vec<&str> = batches.iter().map(|b| b.agent.as_str()).collect();
    agents.sort_unstable();
    agents.dedup();
    lock_agents(&mut tx, &agents).await?;

    let mut outcomes = Vec::with_capacity(batches.len());
    let mut cols = Columns::default();
    for b in batches {
        // One round trip: insert (or not), update the agent's head, and read the neighbours.
        // The SELECT part sees the snapshot taken before the insert (never this batch itself).
        let r = sqlx::query!(
            r#"
WITH ins AS (
    INSERT INTO batches (agent, seq, body_hash, prev, sealed, from_ms, to_ms, received, payload)
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
    ON CONFLICT (agent, seq) DO NOTHING
    RETURNING agent, seq, body_hash, to_ms, received
), head AS (
    INSERT INTO heads AS h (agent, batches, first_seq, last_seq, last_hash, last_to, last_received)
    SELECT agent, 1, seq, seq, body_hash, to_ms, received FROM ins
    ON CONFLICT (agent) DO UPDATE SET
        batches = h.batches + 1,
        first_seq = LEAST(h.first_seq, EXCLUDED.first_seq),
        last_seq = GREATEST(h.last_seq, EXCLUDED.last_seq),
        last_hash = CASE WHEN EXCLUDED.last_seq > h.last_seq
                         THEN EXCLUDED.last_hash ELSE h.last_hash END,
        last_to = CASE WHEN EXCLUDED.last_seq > h.last_seq
                       THEN EXCLUDED.last_to ELSE h.last_to END,
        last_received = CASE WHEN EXCLUDED.last_seq > h.last_seq
                             THEN EXCLUDED.last_received ELSE h.last_received END
    RETURNING 1
)
SELECT
    EXISTS (SELECT 1 FROM ins) AS "inserted!",
    (SELECT body_hash FROM batches WHERE agent = $1 AND seq = $2) AS existing,
    (SELECT body_hash FROM batches WHERE agent = $1 AND seq = $2 - 1) AS prev_hash,
    (SELECT prev FROM batches WHERE agent = $1 AND seq = $2 + 1) AS next_prev,
    (SELECT max(seq) FROM batches WHERE agent = $1 AND seq < $2) AS below
"#,
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
        .fetch_one(&mut *tx)
        .await?;

        if !r.inserted {
            let stored = match r.existing {
                Some(h) => Some(h),
                // Committed by another writer after this statement's snapshot was taken.
                None => {
                    sqlx::query_scalar!(
                        "SELECT body_hash FROM batches WHERE agent = $1 AND seq = $2",
                        b.agent,
                        b.seq
                    )
                    .fetch_optional(&mut *tx)
                    .await?
                }
            };
            let Some(stored) = stored else {
                return Err(Fail::Store(StoreError::Corrupt(format!(
                    "batch {} seq {} conflicts with a stored batch that cannot be read",
                    b.agent, b.seq
                ))));
            };
            outcomes.push(Outcome::Duplicate {
                same_hash: stored == b.body_hash,
            });
            continue;
        }

        let (chain, events) = chain_of(b, r.prev_hash.as_deref(), r.next_prev.as_deref(), r.below);
        for (kind, detail) in events {
            cols.event(b, kind, detail);
        }
        cols.add(b);
        outcomes.push(Outcome::Stored { chain });
    }

    insert_rows(&mut tx, &cols).await?;
    tx.commit().await?;
    Ok(outcomes)
}

/// One `UNNEST` insert per non-empty table.
async fn insert_rows(conn: &mut PgConnection, c: &Columns<'_>) -> sqlx::Result<()> {
    if !c.s_t.is_empty() {
        sqlx::query!(
            "INSERT INTO samples (device, point, t, num, is_bool, text, err, agent, seq)
             SELECT * FROM UNNEST($1::text[], $2::text[], $3::bigint[], $4::float8[],
                                  $5::bool[], $6::text[], $7::text[], $8::text[], $9::bigint[])",
            &c.s_device as &[&str],
            &c.s_point as &[&str],
            &c.s_t,
            &c.s_num as &[Option<f64>],
            &c.s_is_bool,
            &c.s_text as &[Option<&str>],
            &c.s_err as &[Option<&str>],
            &c.s_agent as &[&str],
            &c.s_seq,
        )
        .execute(&mut *conn)
        .await?;
    }
    if !c.st_from.is_empty() {
        sqlx::query!(
            "INSERT INTO states (device, from_ms, to_ms, state, agent, seq)
             SELECT * FROM UNNEST($1::text[], $2::bigint[], $3::bigint[], $4::text[],
                                  $5::text[], $6::bigint[])",
            &c.st_device as &[&str],
            &c.st_from,
            &c.st_to,
            &c.st_state as &[&str],
            &c.st_agent as &[&str],
            &c.st_seq,
        )
        .execute(&mut *conn)
        .await?;
    }
    if !c.r_t.is_empty() {
        sqlx::query!(
            "INSERT INTO readings (device, role, point, t, v, width_bits, rollover, agent, seq)
             SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::bigint[], $5::float8[],
                                  $6::int4[], $7::float8[], $8::text[], $9::bigint[])",
            &c.r_device as &[&str],
            &c.r_role as &[&str],
            &c.r_point as &[&str],
            &c.r_t,
            &c.r_v,
            &c.r_width as &[Option<i32>],
            &c.r_rollover as &[Option<f64>],
            &c.r_agent as &[&str],
            &c.r_seq,
        )
        .execute(&mut *conn)
        .await?;
    }
    if !c.l_t.is_empty() {
        sqlx::query!(
            "INSERT INTO links (device, t, up, detail, agent, seq)
             SELECT * FROM UNNEST($1::text[], $2::bigint[], $3::bool[], $4::text[],
                                  $5::text[], $6::bigint[])",
            &c.l_device as &[&str],
            &c.l_t,
            &c.l_up,
            &c.l_detail as &[&str],
            &c.l_agent as &[&str],
            &c.l_seq,
        )
        .execute(&mut *conn)
        .await?;
    }
    if !c.d_from.is_empty() {
        sqlx::query!(
            "INSERT INTO dirty (device, from_ms, to_ms)
             SELECT * FROM UNNEST($1::text[], $2::bigint[], $3::bigint[])",
            &c.d_device as &[&str],
            &c.d_from,
            &c.d_to,
        )
        .execute(&mut *conn)
        .await?;
    }
    if !c.e_seq.is_empty() {
        sqlx::query!(
            "INSERT INTO chain_events (agent, seq, at, kind, detail)
             SELECT * FROM UNNEST($1::text[], $2::bigint[], $3::bigint[], $4::text[], $5::text[])",
            &c.e_agent as &[&str],
            &c.e_seq,
            &c.e_at,
            &c.e_kind as &[&str],
            &c.e_detail,
        )
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

pub(crate) async fn quarantine(pool: &PgPool, rows: &[QuarantineRow]) -> Result<()> {
    if rows.is_empty() {
        return Ok(());
    }
    let mut tx = pool.begin().await.map_err(db)?;
    for r in rows {
        sqlx::query!(
            "INSERT INTO quarantine (received, topic, agent, seq, reason, detail, payload)
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
            r.received,
            r.topic,
            r.agent,
            r.seq,
            r.reason,
            r.detail,
            r.payload,
        )
        .execute(&mut *tx)
        .await
        .map_err(db)?;
    }
    tx.commit().await.map_err(db)
}

pub(crate) async fn list_quarantine(
    pool: &PgPool,
    before: Option<i64>,
    n: i64,
) -> Result<Vec<QuarantineEntry>> {
    let rows = sqlx::query!(
        "SELECT id, received, topic, agent, seq, reason, detail, payload FROM quarantine
         WHERE ($1::bigint IS NULL OR id < $1)
         ORDER BY id DESC
         LIMIT $2",
        before,
        limit(n),
    )
    .fetch_all(pool)
    .await
    .map_err(db)?;
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
    pool: &PgPool,
    agent: Option<&str>,
    n: i64,
) -> Result<Vec<ChainEvent>> {
    sqlx::query_as!(
        ChainEvent,
        "SELECT agent, seq, at, kind, detail FROM chain_events
         WHERE ($1::text IS NULL OR agent = $1)
         ORDER BY id DESC
         LIMIT $2",
        agent,
        limit(n),
    )
    .fetch_all(pool)
    .await
    .map_err(db)
}

pub(crate) async fn agent_heads(pool: &PgPool) -> Result<Vec<AgentHead>> {
    let rows = sqlx::query!(
        "SELECT agent, batches, first_seq, last_seq, last_hash, last_to, last_received
         FROM heads ORDER BY agent"
    )
    .fetch_all(pool)
    .await
    .map_err(db)?;
    Ok(rows
        .into_iter()
        .map(|r| AgentHead {
            missing: (r.last_seq - r.first_seq + 1 - r.batches).max(0),
            agent: r.agent,
            batches: r.batches,
            first_seq: r.first_seq,
            last_seq: r.last_seq,
            last_hash: r.last_hash,
            last_to: r.last_to,
            last_received: r.last_received,
        })
        .collect())
}

pub(crate) async fn batches(
    pool: &PgPool,
    agent: &str,
    from_seq: i64,
    to_seq: i64,
    with_payload: bool,
) -> Result<Vec<StoredBatch>> {
    sqlx::query_as!(
        StoredBatch,
        r#"SELECT agent, seq, body_hash, prev, sealed, from_ms AS "from", to_ms AS "to", received,
                  CASE WHEN $4 THEN payload END AS payload
           FROM batches
           WHERE agent = $1 AND seq >= $2 AND seq <= $3
           ORDER BY seq"#,
        agent,
        from_seq,
        to_seq,
        with_payload,
    )
    .fetch_all(pool)
    .await
    .map_err(db)
}

pub(crate) async fn chain_ranges(pool: &PgPool, from: Ms, to: Ms) -> Result<Vec<ChainRange>> {
    sqlx::query_as!(
        ChainRange,
        r#"WITH sel AS (
               SELECT agent, seq, body_hash FROM batches WHERE from_ms < $2 AND to_ms > $1
           ), per AS (
               SELECT agent, min(seq) AS first_seq, max(seq) AS last_seq, count(*) AS n
               FROM sel GROUP BY agent
           )
           SELECT per.agent AS "agent!", per.first_seq AS "first_seq!", f.body_hash AS "first_hash!",
                  per.last_seq AS "last_seq!", l.body_hash AS "last_hash!", per.n AS "batches!"
           FROM per
           JOIN sel f ON f.agent = per.agent AND f.seq = per.first_seq
           JOIN sel l ON l.agent = per.agent AND l.seq = per.last_seq
           ORDER BY per.agent"#,
        from,
        to,
    )
    .fetch_all(pool)
    .await
    .map_err(db)
}

pub(crate) async fn samples(
    pool: &PgPool,
    device: &str,
    point: &str,
    from: Ms,
    to: Ms,
    n: i64,
) -> Result<Vec<SampleRow>> {
    sqlx::query_as!(
        SampleRow,
        "SELECT device, point, t, num, is_bool, text, err FROM samples
         WHERE device = $1 AND point = $2 AND t >= $3 AND t < $4
         ORDER BY t
         LIMIT $5",
        device,
        point,
        from,
        to,
        limit(n),
    )
    .fetch_all(pool)
    .await
    .map_err(db)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(seq: i64, prev: &str, hash: &str) -> NewBatch {
        NewBatch {
            agent: "a".into(),
            seq,
            body_hash: hash.into(),
            prev: prev.into(),
            sealed: 0,
            from: 0,
            to: 0,
            received: 0,
            payload: Vec::new(),
            samples: Vec::new(),
            states: Vec::new(),
            readings: Vec::new(),
            links: Vec::new(),
            dirty: Vec::new(),
        }
    }

    #[test]
    fn chain_verdicts() {
        let linked = |c: (Chain, Vec<(&str, String)>)| c.0 == Chain::Linked && c.1.is_empty();
        let kinds = |c: &(Chain, Vec<(&'static str, String)>)| -> Vec<&'static str> {
            c.1.iter().map(|e| e.0).collect()
        };
        assert!(linked(chain_of(
            &batch(1, ZERO_HASH, "h1"),
            None,
            None,
            None
        )));
        assert!(linked(chain_of(
            &batch(2, "h1", "h2"),
            Some("h1"),
            Some("h2"),
            Some(1)
        )));

        let c = chain_of(&batch(1, "h0", "h1"), None, None, None);
        assert!(matches!(c.0, Chain::Fork { .. }), "{c:?}");
        assert_eq!(kinds(&c), ["fork"]);

        let c = chain_of(&batch(2, "h1", "h2"), Some("x"), None, Some(1));
        assert!(
            matches!(&c.0, Chain::Fork { detail } if detail.contains("seq 1")),
            "{c:?}"
        );
        assert_eq!(kinds(&c), ["fork"]);

        let c = chain_of(&batch(2, "h1", "h2"), Some("h1"), Some("x"), Some(1));
        assert!(
            matches!(&c.0, Chain::Fork { detail } if detail.contains("seq 3")),
            "{c:?}"
        );

        let c = chain_of(&batch(5, "h4", "h5"), None, None, Some(2));
        assert_eq!(c.0, Chain::Gap { missing_from: 3 });
        assert_eq!(c.1, [("gap", "seq 3..=4 missing".to_owned())]);

        let c = chain_of(&batch(5, "h4", "h5"), None, None, None);
        assert_eq!(c.0, Chain::Gap { missing_from: 1 });

        // A fork with the stored successor outranks a gap below; both are recorded.
        let c = chain_of(&batch(5, "h4", "h5"), None, Some("x"), None);
        assert!(matches!(c.0, Chain::Fork { .. }), "{c:?}");
        assert_eq!(kinds(&c), ["gap", "fork"]);
    }
}
