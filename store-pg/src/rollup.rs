//! Roll-ups (dirty queue, raw slices, buckets), leases and retention.
//!
//! Invariants:
//! - [`apply_rollups`] is one transaction: the dirty ids are deleted, the cleared ranges emptied
//!   and the given buckets upserted together (a crash leaves the dirty entries queued, so the
//!   work is redone, and redoing it gives the same rows).
//! - Per-series lookups (the reading before/after a window, "any sample in the window") walk
//!   the distinct series of a device with a loose index scan (recursive CTE over the btree), so
//!   their cost grows with the number of series, not with the device's history.
//! - Purging batches keeps `heads` exact: per agent, under the agent's ingest lock, in its own
//!   short transaction.

use std::collections::HashSet;

use shopfloor_store::*;
use sqlx::PgPool;

use crate::ingest::lock_agents;
use crate::{Fail, db, filter_bounds, limit, with_retries};

pub(crate) async fn dirty(pool: &PgPool, n: i64) -> Result<Vec<DirtyEntry>> {
    let rows = sqlx::query!(
        "SELECT id, device, from_ms, to_ms FROM dirty ORDER BY id LIMIT $1",
        limit(n)
    )
    .fetch_all(pool)
    .await
    .map_err(db)?;
    Ok(rows
        .into_iter()
        .map(|r| DirtyEntry {
            id: r.id,
            range: DirtyRange {
                device: r.device,
                from: r.from_ms,
                to: r.to_ms,
            },
        })
        .collect())
}

pub(crate) async fn raw_slice(pool: &PgPool, device: &str, from: Ms, to: Ms) -> Result<RawSlice> {
    // One snapshot for the three reads, so they agree with each other.
    let mut tx = pool.begin().await.map_err(db)?;
    sqlx::query!("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        .execute(&mut *tx)
        .await
        .map_err(db)?;

    let states = sqlx::query_as!(
        StateRow,
        r#"SELECT device, from_ms AS "from", to_ms AS "to", state FROM states
           WHERE device = $1 AND to_ms > $2 AND from_ms < $3
           ORDER BY from_ms, to_ms"#,
        device,
        from,
        to,
    )
    .fetch_all(&mut *tx)
    .await
    .map_err(db)?;

    let readings = sqlx::query!(
        r#"WITH RECURSIVE series AS (
               (SELECT role, point FROM readings WHERE device = $1 ORDER BY role, point LIMIT 1)
               UNION ALL
               SELECT nxt.role, nxt.point
               FROM series, LATERAL (
                   SELECT r.role, r.point FROM readings r
                   WHERE r.device = $1 AND (r.role, r.point) > (series.role, series.point)
                   ORDER BY r.role, r.point LIMIT 1
               ) nxt
           )
           SELECT s.role AS "role!", s.point AS "point!", x.t AS "t!", x.v AS "v!",
                  x.width_bits AS "width_bits?", x.rollover AS "rollover?"
           FROM series s
           CROSS JOIN LATERAL (
               (SELECT t, v, width_bits, rollover FROM readings
                WHERE device = $1 AND role = s.role AND point = s.point AND t < $2
                ORDER BY t DESC LIMIT 1)
               UNION ALL
               (SELECT t, v, width_bits, rollover FROM readings
                WHERE device = $1 AND role = s.role AND point = s.point AND t >= $2 AND t < $3)
               UNION ALL
               (SELECT t, v, width_bits, rollover FROM readings
                WHERE device = $1 AND role = s.role AND point = s.point AND t >= $3
                ORDER BY t LIMIT 1)
           ) x
           ORDER BY s.role, s.point, x.t"#,
        device,
        from,
        to,
    )
    .fetch_all(&mut *tx)
    .await
    .map_err(db)?;

    let readings: Vec<ReadingRow> = readings
        .into_iter()
        .map(|r| ReadingRow {
            device: device.to_owned(),
            role: r.role,
            point: r.point,
            t: r.t,
            v: r.v,
            width_bits: r.width_bits,
            rollover: r.rollover,
        })
        .collect();

    // Samples per (minute, point): the device's points by index skipping, then one range
    // scan per point; link events per minute.
    let activity: Vec<MinuteActivity> = sqlx::query!(
        r#"WITH RECURSIVE pts AS (
               (SELECT point FROM samples WHERE device = $1 ORDER BY point LIMIT 1)
               UNION ALL
               SELECT nxt.point
               FROM pts, LATERAL (
                   SELECT s.point FROM samples s
                   WHERE s.device = $1 AND s.point > pts.point
                   ORDER BY s.point LIMIT 1
               ) nxt
           )
           SELECT (x.t / 60000) * 60000 AS "minute!", pts.point AS "point!", COUNT(*) AS "count!"
           FROM pts
           JOIN samples x ON x.device = $1 AND x.point = pts.point AND x.t >= $2 AND x.t < $3
           GROUP BY 1, 2
           UNION ALL
           SELECT (t / 60000) * 60000, ''::text, COUNT(*) FROM links
           WHERE device = $1 AND t >= $2 AND t < $3
           GROUP BY 1
           ORDER BY 1, 2"#,
        device,
        from,
        to,
    )
    .fetch_all(&mut *tx)
    .await
    .map_err(db)?
    .into_iter()
    .map(|r| MinuteActivity {
        minute: r.minute,
        point: r.point,
        count: r.count,
    })
    .collect();
    let any_data = !states.is_empty()
        || !activity.is_empty()
        || readings.iter().any(|r| (from..to).contains(&r.t));

    tx.commit().await.map_err(db)?;
    Ok(RawSlice {
        states,
        readings,
        activity,
        any_data,
    })
}

pub(crate) async fn device_buckets(
    pool: &PgPool,
    device: &str,
    gran: Gran,
    from: Ms,
    to: Ms,
) -> Result<(Vec<StateBucket>, Vec<CounterBucket>, Vec<ActivityBucket>)> {
    let g = gran.as_str();
    let mut tx = pool.begin().await.map_err(db)?;
    sqlx::query!("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        .execute(&mut *tx)
        .await
        .map_err(db)?;
    let states = sqlx::query!(
        "SELECT device, bucket, producing, setup, delay, idle, planned_down, offline
         FROM rollup_states
         WHERE device = $1 AND gran = $2 AND bucket >= $3 AND bucket < $4
         ORDER BY bucket",
        device,
        g,
        from,
        to,
    )
    .fetch_all(&mut *tx)
    .await
    .map_err(db)?
    .into_iter()
    .map(|r| StateBucket {
        device: r.device,
        gran,
        bucket: r.bucket,
        producing: r.producing,
        setup: r.setup,
        delay: r.delay,
        idle: r.idle,
        planned_down: r.planned_down,
        offline: r.offline,
    })
    .collect();
    let counters = sqlx::query!(
        "SELECT device, role, bucket, delta, first_t, last_t, readings, wraps, resets
         FROM rollup_counters
         WHERE device = $1 AND gran = $2 AND bucket >= $3 AND bucket < $4
         ORDER BY bucket, role",
        device,
        g,
        from,
        to,
    )
    .fetch_all(&mut *tx)
    .await
    .map_err(db)?
    .into_iter()
    .map(|r| CounterBucket {
        device: r.device,
        role: r.role,
        gran,
        bucket: r.bucket,
        delta: r.delta,
        first_t: r.first_t,
        last_t: r.last_t,
        readings: r.readings,
        wraps: r.wraps,
        resets: r.resets,
    })
    .collect();
    let activity = sqlx::query!(
        "SELECT device, bucket, samples, points FROM rollup_activity
         WHERE device = $1 AND gran = $2 AND bucket >= $3 AND bucket < $4
         ORDER BY bucket",
        device,
        g,
        from,
        to,
    )
    .fetch_all(&mut *tx)
    .await
    .map_err(db)?
    .into_iter()
    .map(|r| ActivityBucket {
        device: r.device,
        gran,
        bucket: r.bucket,
        samples: r.samples,
        points: r.points,
    })
    .collect();
    tx.commit().await.map_err(db)?;
    Ok((states, counters, activity))
}

/// Keeps the last of several items with the same key (an `ON CONFLICT DO UPDATE` statement may
/// not touch one row twice), in their original order.
fn last_per_key<'a, T, K: std::hash::Hash + Eq>(
    items: &'a [T],
    key: impl Fn(&'a T) -> K,
) -> Vec<&'a T> {
    let mut seen = HashSet::new();
    let mut out: Vec<&T> = items.iter().rev().filter(|i| seen.insert(key(i))).collect();
    out.reverse();
    out
}

pub(crate) async fn apply_rollups(pool: &PgPool, update: &RollupUpdate) -> Result<()> {
    with_retries("apply_rollups", || try_apply_rollups(pool, update)).await
}

async fn try_apply_rollups(pool: &PgPool, u: &RollupUpdate) -> std::result::Result<(), Fail> {
    let mut tx = pool.begin().await?;
    if !u.done.is_empty() {
        sqlx::query!("DELETE FROM dirty WHERE id = ANY($1::bigint[])", &u.done)
            .execute(&mut *tx)
            .await?;
    }
    if !u.cleared.is_empty() {
        let device: Vec<&str> = u.cleared.iter().map(|c| c.0.as_str()).collect();
        let gran: Vec<&str> = u.cleared.iter().map(|c| c.1.as_str()).collect();
        let from: Vec<i64> = u.cleared.iter().map(|c| c.2).collect();
        let to: Vec<i64> = u.cleared.iter().map(|c| c.3).collect();
        sqlx::query!(
            "DELETE FROM rollup_states r
             USING UNNEST($1::text[], $2::text[], $3::bigint[], $4::bigint[]) AS c(device, gran, f, t)
             WHERE r.device = c.device AND r.gran = c.gran AND r.bucket >= c.f AND r.bucket < c.t",
            &device as &[&str],
            &gran as &[&str],
            &from,
            &to,
        )
        .execute(&mut *tx)
        .await?;
        sqlx::query!(
            "DELETE FROM rollup_counters r
             USING UNNEST($1::text[], $2::text[], $3::bigint[], $4::bigint[]) AS c(device, gran, f, t)
             WHERE r.device = c.device AND r.gran = c.gran AND r.bucket >= c.f AND r.bucket < c.t",
            &device as &[&str],
            &gran as &[&str],
            &from,
            &to,
        )
        .execute(&mut *tx)
        .await?;
        sqlx::query!(
            "DELETE FROM rollup_activity r
             USING UNNEST($1::text[], $2::text[], $3::bigint[], $4::bigint[]) AS c(device, gran, f, t)
             WHERE r.device = c.device AND r.gran = c.gran AND r.bucket >= c.f AND r.bucket < c.t",
            &device as &[&str],
            &gran as &[&str],
            &from,
            &to,
        )
        .execute(&mut *tx)
        .await?;
    }
    if !u.states.is_empty() {
        let rows = last_per_key(&u.states, |s| (s.device.as_str(), s.gran, s.bucket));
        sqlx::query!(
            "INSERT INTO rollup_states
                 (device, gran, bucket, producing, setup, delay, idle, planned_down, offline)
             SELECT * FROM UNNEST($1::text[], $2::text[], $3::bigint[], $4::bigint[], $5::bigint[],
                                  $6::bigint[], $7::bigint[], $8::bigint[], $9::bigint[])
             ON CONFLICT (device, gran, bucket) DO UPDATE SET
                 producing = EXCLUDED.producing, setup = EXCLUDED.setup, delay = EXCLUDED.delay,
                 idle = EXCLUDED.idle, planned_down = EXCLUDED.planned_down,
                 offline = EXCLUDED.offline",
            &rows.iter().map(|s| s.device.as_str()).collect::<Vec<_>>() as &[&str],
            &rows.iter().map(|s| s.gran.as_str()).collect::<Vec<_>>() as &[&str],
            &rows.iter().map(|s| s.bucket).collect::<Vec<_>>(),
            &rows.iter().map(|s| s.producing).collect::<Vec<_>>(),
            &rows.iter().map(|s| s.setup).collect::<Vec<_>>(),
            &rows.iter().map(|s| s.delay).collect::<Vec<_>>(),
            &rows.iter().map(|s| s.idle).collect::<Vec<_>>(),
            &rows.iter().map(|s| s.planned_down).collect::<Vec<_>>(),
            &rows.iter().map(|s| s.offline).collect::<Vec<_>>(),
        )
        .execute(&mut *tx)
        .await?;
    }
    if !u.counters.is_empty() {
        let rows = last_per_key(&u.counters, |c| {
            (c.device.as_str(), c.role.as_str(), c.gran, c.bucket)
        });
        sqlx::query!(
            "INSERT INTO rollup_counters
                 (device, role, gran, bucket, delta, first_t, last_t, readings, wraps, resets)
             SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::bigint[], $5::float8[],
                                  $6::bigint[], $7::bigint[], $8::bigint[], $9::bigint[],
                                  $10::bigint[])
             ON CONFLICT (device, role, gran, bucket) DO UPDATE SET
                 delta = EXCLUDED.delta, first_t = EXCLUDED.first_t, last_t = EXCLUDED.last_t,
                 readings = EXCLUDED.readings, wraps = EXCLUDED.wraps, resets = EXCLUDED.resets",
            &rows.iter().map(|c| c.device.as_str()).collect::<Vec<_>>() as &[&str],
            &rows.iter().map(|c| c.role.as_str()).collect::<Vec<_>>() as &[&str],
            &rows.iter().map(|c| c.gran.as_str()).collect::<Vec<_>>() as &[&str],
            &rows.iter().map(|c| c.bucket).collect::<Vec<_>>(),
            &rows.iter().map(|c| c.delta).collect::<Vec<_>>(),
            &rows.iter().map(|c| c.first_t).collect::<Vec<_>>(),
            &rows.iter().map(|c| c.last_t).collect::<Vec<_>>(),
            &rows.iter().map(|c| c.readings).collect::<Vec<_>>(),
            &rows.iter().map(|c| c.wraps).collect::<Vec<_>>(),
            &rows.iter().map(|c| c.resets).collect::<Vec<_>>(),
        )
        .execute(&mut *tx)
        .await?;
    }
    if !u.activity.is_empty() {
        let rows = last_per_key(&u.activity, |a| (a.device.as_str(), a.gran, a.bucket));
        sqlx::query!(
            "INSERT INTO rollup_activity (device, gran, bucket, samples, points)
             SELECT * FROM UNNEST($1::text[], $2::text[], $3::bigint[], $4::bigint[], $5::bigint[])
             ON CONFLICT (device, gran, bucket) DO UPDATE SET
                 samples = EXCLUDED.samples, points = EXCLUDED.points",
            &rows.iter().map(|a| a.device.as_str()).collect::<Vec<_>>() as &[&str],
            &rows.iter().map(|a| a.gran.as_str()).collect::<Vec<_>>() as &[&str],
            &rows.iter().map(|a| a.bucket).collect::<Vec<_>>(),
            &rows.iter().map(|a| a.samples).collect::<Vec<_>>(),
            &rows.iter().map(|a| a.points).collect::<Vec<_>>(),
        )
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    Ok(())
}

pub(crate) async fn state_buckets(
    pool: &PgPool,
    filter: &DeviceFilter,
    gran: Gran,
    from: Ms,
    to: Ms,
) -> Result<Vec<StateBucket>> {
    let (p, lo, hi) = filter_bounds(filter);
    let rows = sqlx::query!(
        "SELECT device, bucket, producing, setup, delay, idle, planned_down, offline
         FROM rollup_states
         WHERE device >= $1 AND device < $3 AND (device = $1 OR device >= $2)
           AND gran = $4 AND bucket >= $5 AND bucket < $6
         ORDER BY device, bucket",
        p,
        lo,
        hi,
        gran.as_str(),
        from,
        to,
    )
    .fetch_all(pool)
    .await
    .map_err(db)?;
    Ok(rows
        .into_iter()
        .map(|r| StateBucket {
            device: r.device,
            gran,
            bucket: r.bucket,
            producing: r.producing,
            setup: r.setup,
            delay: r.delay,
            idle: r.idle,
            planned_down: r.planned_down,
            offline: r.offline,
        })
        .collect())
}

pub(crate) async fn counter_buckets(
    pool: &PgPool,
    filter: &DeviceFilter,
    gran: Gran,
    from: Ms,
    to: Ms,
) -> Result<Vec<CounterBucket>> {
    let (p, lo, hi) = filter_bounds(filter);
    let rows = sqlx::query!(
        "SELECT device, role, bucket, delta, first_t, last_t, readings, wraps, resets
         FROM rollup_counters
         WHERE device >= $1 AND device < $3 AND (device = $1 OR device >= $2)
           AND gran = $4 AND bucket >= $5 AND bucket < $6
         ORDER BY device, bucket, role",
        p,
        lo,
        hi,
        gran.as_str(),
        from,
        to,
    )
    .fetch_all(pool)
    .await
    .map_err(db)?;
    Ok(rows
        .into_iter()
        .map(|r| CounterBucket {
            device: r.device,
            role: r.role,
            gran,
            bucket: r.bucket,
            delta: r.delta,
            first_t: r.first_t,
            last_t: r.last_t,
            readings: r.readings,
            wraps: r.wraps,
            resets: r.resets,
        })
        .collect())
}

pub(crate) async fn activity_buckets(
    pool: &PgPool,
    filter: &DeviceFilter,
    gran: Gran,
    from: Ms,
    to: Ms,
) -> Result<Vec<ActivityBucket>> {
    let (p, lo, hi) = filter_bounds(filter);
    let rows = sqlx::query!(
        "SELECT device, bucket, samples, points FROM rollup_activity
         WHERE device >= $1 AND device < $3 AND (device = $1 OR device >= $2)
           AND gran = $4 AND bucket >= $5 AND bucket < $6
         ORDER BY device, bucket",
        p,
        lo,
        hi,
        gran.as_str(),
        from,
        to,
    )
    .fetch_all(pool)
    .await
    .map_err(db)?;
    Ok(rows
        .into_iter()
        .map(|r| ActivityBucket {
            device: r.device,
            gran,
            bucket: r.bucket,
            samples: r.samples,
            points: r.points,
        })
        .collect())
}

pub(crate) async fn last_readings_before(
    pool: &PgPool,
    filter: &DeviceFilter,
    since: Ms,
    before: Ms,
) -> Result<Vec<(String, String, Ms)>> {
    let (p, lo, hi) = filter_bounds(filter);
    let rows = sqlx::query!(
        r#"SELECT device, role, max(last_t) AS "last_t!" FROM rollup_counters
           WHERE device >= $1 AND device < $3 AND (device = $1 OR device >= $2)
             AND gran = $4 AND bucket >= $5 AND bucket < $6
           GROUP BY device, role
           ORDER BY device, role"#,
        p,
        lo,
        hi,
        Gran::Minute.as_str(),
        since,
        before,
    )
    .fetch_all(pool)
    .await
    .map_err(db)?;
    Ok(rows
        .into_iter()
        .map(|r| (r.device, r.role, r.last_t))
        .collect())
}

pub(crate) async fn lease(
    pool: &PgPool,
    name: &str,
    holder: &str,
    now: Ms,
    until: Ms,
) -> Result<bool> {
    // A row comes back only if it was inserted or updated, i.e. the lease is ours now.
    let row = sqlx::query_scalar!(
        "INSERT INTO leases (name, holder, until_ms) VALUES ($1, $2, $4)
         ON CONFLICT (name) DO UPDATE SET holder = EXCLUDED.holder, until_ms = EXCLUDED.until_ms
         WHERE leases.until_ms <= $3 OR leases.holder = EXCLUDED.holder
         RETURNING holder",
        name,
        holder,
        now,
        until,
    )
    .fetch_optional(pool)
    .await
    .map_err(db)?;
    Ok(row.is_some())
}

pub(crate) async fn purge(pool: &PgPool, table: Retained, before: Ms) -> Result<u64> {
    let done = match table {
        Retained::Batches => return purge_batches(pool, before).await,
        Retained::Samples => sqlx::query!("DELETE FROM samples WHERE t < $1", before)
            .execute(pool)
            .await
            .map_err(db)?
            .rows_affected(),
        Retained::States => sqlx::query!("DELETE FROM states WHERE to_ms < $1", before)
            .execute(pool)
            .await
            .map_err(db)?
            .rows_affected(),
        Retained::Readings => sqlx::query!("DELETE FROM readings WHERE t < $1", before)
            .execute(pool)
            .await
            .map_err(db)?
            .rows_affected(),
        Retained::Links => sqlx::query!("DELETE FROM links WHERE t < $1", before)
            .execute(pool)
            .await
            .map_err(db)?
            .rows_affected(),
        Retained::Quarantine => sqlx::query!("DELETE FROM quarantine WHERE received < $1", before)
            .execute(pool)
            .await
            .map_err(db)?
            .rows_affected(),
        Retained::Rollups(gran) => {
            let g = gran.as_str();
            let mut tx = pool.begin().await.map_err(db)?;
            let mut n = 0;
            n += sqlx::query!(
                "DELETE FROM rollup_states WHERE gran = $1 AND bucket < $2",
                g,
                before
            )
            .execute(&mut *tx)
            .await
            .map_err(db)?
            .rows_affected();
            n += sqlx::query!(
                "DELETE FROM rollup_counters WHERE gran = $1 AND bucket < $2",
                g,
                before
            )
            .execute(&mut *tx)
            .await
            .map_err(db)?
            .rows_affected();
            n += sqlx::query!(
                "DELETE FROM rollup_activity WHERE gran = $1 AND bucket < $2",
                g,
                before
            )
            .execute(&mut *tx)
            .await
            .map_err(db)?
            .rows_affected();
            tx.commit().await.map_err(db)?;
            n
        }
    };
    Ok(done)
}

/// Deletes batches with `to_ms < before`, agent by agent: each agent in its own transaction
/// holding that agent's ingest lock (and no other, so it cannot deadlock with ingest), so its
/// `heads` row is recomputed from exactly the batches that remain.
async fn purge_batches(pool: &PgPool, before: Ms) -> Result<u64> {
    let agents = sqlx::query_scalar!(
        "SELECT DISTINCT agent FROM batches WHERE to_ms < $1 ORDER BY agent",
        before
    )
    .fetch_all(pool)
    .await
    .map_err(db)?;
    let mut total = 0;
    for agent in &agents {
        total += with_retries("purge", || purge_agent(pool, agent, before)).await?;
    }
    Ok(total)
}

async fn purge_agent(pool: &PgPool, agent: &str, before: Ms) -> std::result::Result<u64, Fail> {
    let mut tx = pool.begin().await?;
    lock_agents(&mut tx, &[agent]).await?;
    let n = sqlx::query!(
        "DELETE FROM batches WHERE agent = $1 AND to_ms < $2",
        agent,
        before
    )
    .execute(&mut *tx)
    .await?
    .rows_affected();
    if n > 0 {
        let updated = sqlx::query!(
            "WITH agg AS (
                 SELECT count(*) AS n, min(seq) AS first_seq, max(seq) AS last_seq
                 FROM batches WHERE agent = $1
             )
             UPDATE heads h SET batches = agg.n, first_seq = agg.first_seq,
                 last_seq = agg.last_seq, last_hash = b.body_hash, last_to = b.to_ms,
                 last_received = b.received
             FROM agg JOIN batches b ON b.agent = $1 AND b.seq = agg.last_seq
             WHERE h.agent = $1",
            agent
        )
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if updated == 0 {
            // No batch of the agent is left.
            sqlx::query!("DELETE FROM heads WHERE agent = $1", agent)
                .execute(&mut *tx)
                .await?;
        }
    }
    tx.commit().await?;
    Ok(n)
}
