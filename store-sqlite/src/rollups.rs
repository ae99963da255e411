//! The roll-up side: the dirty queue, raw slices for recomputation, bucket writes and reads,
//! and the worker lease.
//!
//! Invariants:
//! - [`apply_rollups`] is one write transaction: dirty ids deleted, cleared ranges deleted in
//!   all three roll-up tables, rows upserted. Applying the same update twice leaves the same
//!   rows (upserts replace, never add).
//! - Prefix queries first walk the distinct devices in the prefix's key range (one index seek
//!   per device), then seek `(device, gran, bucket)` for each: the cost follows the devices
//!   and buckets returned, not the table's history.
//! - Bucket lists are ordered by device, then bucket (then role for counters).
//! - A raw slice's `any_data` is true when a sample, reading or link event of the device has
//!   `from <= t < to`, or one of its state intervals overlaps `[from, to)`.

use shopfloor_store::{
    ActivityBucket, CounterBucket, DeviceFilter, DirtyEntry, DirtyRange, Gran, MinuteActivity, Ms,
    RawSlice, ReadingRow, Result, RollupUpdate, StateBucket, StateRow,
};

use crate::{SqliteStore, bounds, db};

pub(crate) async fn dirty(store: &SqliteStore, limit: i64) -> Result<Vec<DirtyEntry>> {
    let rows = sqlx::query!(
        "SELECT id, device, from_ms, to_ms FROM dirty ORDER BY id LIMIT ?1",
        limit
    )
    .fetch_all(&store.read)
    .await
    .map_err(db("dirty"))?;
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

pub(crate) async fn raw_slice(
    store: &SqliteStore,
    device: &str,
    from: Ms,
    to: Ms,
) -> Result<RawSlice> {
    let mut tx = store.begin_read("raw_slice").await?;
    let states = sqlx::query_as!(
        StateRow,
        r#"SELECT device, from_ms AS "from", to_ms AS "to", state FROM states
           WHERE device = ?1 AND to_ms > ?2 AND from_ms < ?3 ORDER BY from_ms, to_ms"#,
        device,
        from,
        to
    )
    .fetch_all(&mut *tx)
    .await
    .map_err(db("raw_slice: states"))?;
    // Per series (reading_series): the readings in the window, the last one before it and the
    // first one at or after its end; each part is a seek in readings_series.
    let readings = sqlx::query!(
        r#"SELECT r.role AS "role!", r.point AS "point!", r.t AS "t!: i64", r.v AS "v!: f64",
                  r.width_bits AS "width_bits?: i32", r.rollover AS "rollover?: f64"
           FROM reading_series AS s
           CROSS JOIN readings AS r ON r.device = s.device AND r.role = s.role AND r.point = s.point
                AND r.t >= ?2 AND r.t < ?3
           WHERE s.device = ?1
           UNION ALL
           SELECT r.role, r.point, r.t, r.v, r.width_bits, r.rollover
           FROM reading_series AS s
           CROSS JOIN readings AS r ON r.rowid = (
                SELECT x.rowid FROM readings AS x
                WHERE x.device = s.device AND x.role = s.role AND x.point = s.point AND x.t < ?2
                ORDER BY x.t DESC LIMIT 1)
           WHERE s.device = ?1
           UNION ALL
           SELECT r.role, r.point, r.t, r.v, r.width_bits, r.rollover
           FROM reading_series AS s
           CROSS JOIN readings AS r ON r.rowid = (
                SELECT x.rowid FROM readings AS x
                WHERE x.device = s.device AND x.role = s.role AND x.point = s.point AND x.t >= ?3
                ORDER BY x.t LIMIT 1)
           WHERE s.device = ?1
           ORDER BY 1, 2, 3"#,
        device,
        from,
        to
    )
    .fetch_all(&mut *tx)
    .await
    .map_err(db("raw_slice: readings"))?;
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
    // Samples per (minute, point), each series a seek in samples via sample_points, and link
    // events per minute.
    let activity: Vec<MinuteActivity> = sqlx::query!(
        r#"SELECT (s.t / 60000) * 60000 AS "minute!: i64", s.point AS "point!", COUNT(*) AS "count!: i64"
           FROM sample_points AS p
           CROSS JOIN samples AS s ON s.device = p.device AND s.point = p.point
                AND s.t >= ?2 AND s.t < ?3
           WHERE p.device = ?1
           GROUP BY 1, 2
           UNION ALL
           SELECT (t / 60000) * 60000, '', COUNT(*) FROM links
           WHERE device = ?1 AND t >= ?2 AND t < ?3
           GROUP BY 1
           ORDER BY 1, 2"#,
        device,
        from,
        to
    )
    .fetch_all(&mut *tx)
    .await
    .map_err(db("raw_slice: activity"))?
    .into_iter()
    .map(|r| MinuteActivity { minute: r.minute, point: r.point, count: r.count })
    .collect();
    let any_data = !states.is_empty()
        || !activity.is_empty()
        || readings.iter().any(|r| r.t >= from && r.t < to);
    tx.commit().await.map_err(db("raw_slice"))?;
    Ok(RawSlice {
        states,
        readings,
        activity,
        any_data,
    })
}

pub(crate) async fn device_buckets(
    store: &SqliteStore,
    device: &str,
    gran: Gran,
    from: Ms,
    to: Ms,
) -> Result<(Vec<StateBucket>, Vec<CounterBucket>, Vec<ActivityBucket>)> {
    let g = gran.as_str();
    let mut tx = store.begin_read("device_buckets").await?;
    let states = sqlx::query!(
        "SELECT device, bucket, producing, setup, delay, idle, planned_down, offline
         FROM rollup_states WHERE device = ?1 AND gran = ?2 AND bucket >= ?3 AND bucket < ?4
         ORDER BY bucket",
        device,
        g,
        from,
        to
    )
    .fetch_all(&mut *tx)
    .await
    .map_err(db("device_buckets: states"))?;
    let counters = sqlx::query!(
        "SELECT device, role, bucket, delta, first_t, last_t, readings, wraps, resets
         FROM rollup_counters WHERE device = ?1 AND gran = ?2 AND bucket >= ?3 AND bucket < ?4
         ORDER BY bucket, role",
        device,
        g,
        from,
        to
    )
    .fetch_all(&mut *tx)
    .await
    .map_err(db("device_buckets: counters"))?;
    let activity = sqlx::query!(
        "SELECT device, bucket, samples, points
         FROM rollup_activity WHERE device = ?1 AND gran = ?2 AND bucket >= ?3 AND bucket < ?4
         ORDER BY bucket",
        device,
        g,
        from,
        to
    )
    .fetch_all(&mut *tx)
    .await
    .map_err(db("device_buckets: activity"))?;
    tx.commit().await.map_err(db("device_buckets"))?;
    Ok((
        states
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
            .collect(),
        counters
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
            .collect(),
        activity
            .into_iter()
            .map(|r| ActivityBucket {
                device: r.device,
                gran,
                bucket: r.bucket,
                samples: r.samples,
                points: r.points,
            })
            .collect(),
    ))
}

pub(crate) async fn apply_rollups(store: &SqliteStore, u: &RollupUpdate) -> Result<()> {
    let mut tx = store.begin("apply_rollups").await?;
    let e = db("apply_rollups");
    let result: std::result::Result<(), sqlx::Error> = async {
        for id in &u.done {
            sqlx::query!("DELETE FROM dirty WHERE id = ?1", id)
                .execute(&mut *tx)
                .await?;
        }
        for (device, gran, from, to) in &u.cleared {
            let g = gran.as_str();
            sqlx::query!(
                "DELETE FROM rollup_states
                 WHERE device = ?1 AND gran = ?2 AND bucket >= ?3 AND bucket < ?4",
                device,
                g,
                from,
                to
            )
            .execute(&mut *tx)
            .await?;
            sqlx::query!(
                "DELETE FROM rollup_counters
                 WHERE device = ?1 AND gran = ?2 AND bucket >= ?3 AND bucket < ?4",
                device,
                g,
                from,
                to
            )
            .execute(&mut *tx)
            .await?;
            sqlx::query!(
                "DELETE FROM rollup_activity
                 WHERE device = ?1 AND gran = ?2 AND bucket >= ?3 AND bucket < ?4",
                device,
                g,
                from,
                to
            )
            .execute(&mut *tx)
            .await?;
        }
        for s in &u.states {
            let g = s.gran.as_str();
            sqlx::query!(
                "INSERT INTO rollup_states
                     (device, gran, bucket, producing, setup, delay, idle, planned_down, offline)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
                 ON CONFLICT (device, gran, bucket) DO UPDATE SET
                     producing = excluded.producing, setup = excluded.setup,
                     delay = excluded.delay, idle = excluded.idle,
                     planned_down = excluded.planned_down, offline = excluded.offline",
                s.device,
                g,
                s.bucket,
                s.producing,
                s.setup,
                s.delay,
                s.idle,
                s.planned_down,
                s.offline
            )
            .execute(&mut *tx)
            .await?;
        }
        for c in &u.counters {
            let g = c.gran.as_str();
            sqlx::query!(
                "INSERT INTO rollup_counters
                     (device, role, gran, bucket, delta, first_t, last_t, readings, wraps, resets)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)
                 ON CONFLICT (device, gran, bucket, role) DO UPDATE SET
                     delta = excluded.delta, first_t = excluded.first_t,
                     last_t = excluded.last_t, readings = excluded.readings,
                     wraps = excluded.wraps, resets = excluded.resets",
                c.device,
                c.role,
                g,
                c.bucket,
                c.delta,
                c.first_t,
                c.last_t,
                c.readings,
                c.wraps,
                c.resets
            )
            .execute(&mut *tx)
            .await?;
        }
        for a in &u.activity {
            let g = a.gran.as_str();
            sqlx::query!(
                "INSERT INTO rollup_activity (device, gran, bucket, samples, points)
                 VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT (device, gran, bucket) DO UPDATE SET
                     samples = excluded.samples, points = excluded.points",
                a.device,
                g,
                a.bucket,
                a.samples,
                a.points
            )
            .execute(&mut *tx)
            .await?;
        }
        Ok(())
    }
    .await;
    result.map_err(e)?;
    tx.commit().await.map_err(db("apply_rollups: commit"))
}

pub(crate) async fn state_buckets(
    store: &SqliteStore,
    filter: &DeviceFilter,
    gran: Gran,
    from: Ms,
    to: Ms,
) -> Result<Vec<StateBucket>> {
    let (p, lo, hi) = bounds(filter);
    let g = gran.as_str();
    let rows = sqlx::query!(
        r#"WITH RECURSIVE d(device) AS (
               SELECT (SELECT device FROM rollup_states WHERE device >= ?1 AND device < ?3
                       ORDER BY device LIMIT 1)
               UNION ALL
               SELECT (SELECT device FROM rollup_states WHERE device > d.device AND device < ?3
                       ORDER BY device LIMIT 1)
               FROM d WHERE d.device IS NOT NULL)
           SELECT r.device AS "device!", r.bucket AS "bucket!: i64",
                  r.producing AS "producing!: i64", r.setup AS "setup!: i64",
                  r.delay AS "delay!: i64", r.idle AS "idle!: i64",
                  r.planned_down AS "planned_down!: i64", r.offline AS "offline!: i64"
           FROM d CROSS JOIN rollup_states AS r ON r.device = d.device
           WHERE (d.device = ?1 OR d.device >= ?2)
                 AND r.gran = ?4 AND r.bucket >= ?5 AND r.bucket < ?6
           ORDER BY r.device, r.bucket"#,
        p,
        lo,
        hi,
        g,
        from,
        to
    )
    .fetch_all(&store.read)
    .await
    .map_err(db("state_buckets"))?;
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
    store: &SqliteStore,
    filter: &DeviceFilter,
    gran: Gran,
    from: Ms,
    to: Ms,
) -> Result<Vec<CounterBucket>> {
    let (p, lo, hi) = bounds(filter);
    let g = gran.as_str();
    let rows = sqlx::query!(
        r#"WITH RECURSIVE d(device) AS (
               SELECT (SELECT device FROM rollup_counters WHERE device >= ?1 AND device < ?3
                       ORDER BY device LIMIT 1)
               UNION ALL
               SELECT (SELECT device FROM rollup_counters WHERE device > d.device AND device < ?3
                       ORDER BY device LIMIT 1)
               FROM d WHERE d.device IS NOT NULL)
           SELECT r.device AS "device!", r.role AS "role!", r.bucket AS "bucket!: i64",
                  r.delta AS "delta!: f64", r.first_t AS "first_t!: i64",
                  r.last_t AS "last_t!: i64", r.readings AS "readings!: i64",
                  r.wraps AS "wraps!: i64", r.resets AS "resets!: i64"
           FROM d CROSS JOIN rollup_counters AS r ON r.device = d.device
           WHERE (d.device = ?1 OR d.device >= ?2)
                 AND r.gran = ?4 AND r.bucket >= ?5 AND r.bucket < ?6
           ORDER BY r.device, r.bucket, r.role"#,
        p,
        lo,
        hi,
        g,
        from,
        to
    )
    .fetch_all(&store.read)
    .await
    .map_err(db("counter_buckets"))?;
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
    store: &SqliteStore,
    filter: &DeviceFilter,
    gran: Gran,
    from: Ms,
    to: Ms,
) -> Result<Vec<ActivityBucket>> {
    let (p, lo, hi) = bounds(filter);
    let g = gran.as_str();
    let rows = sqlx::query!(
        r#"WITH RECURSIVE d(device) AS (
               SELECT (SELECT device FROM rollup_activity WHERE device >= ?1 AND device < ?3
                       ORDER BY device LIMIT 1)
               UNION ALL
               SELECT (SELECT device FROM rollup_activity WHERE device > d.device AND device < ?3
                       ORDER BY device LIMIT 1)
               FROM d WHERE d.device IS NOT NULL)
           SELECT r.device AS "device!", r.bucket AS "bucket!: i64",
                  r.samples AS "samples!: i64", r.points AS "points!: i64"
           FROM d CROSS JOIN rollup_activity AS r ON r.device = d.device
           WHERE (d.device = ?1 OR d.device >= ?2)
                 AND r.gran = ?4 AND r.bucket >= ?5 AND r.bucket < ?6
           ORDER BY r.device, r.bucket"#,
        p,
        lo,
        hi,
        g,
        from,
        to
    )
    .fetch_all(&store.read)
    .await
    .map_err(db("activity_buckets"))?;
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
    store: &SqliteStore,
    filter: &DeviceFilter,
    since: Ms,
    before: Ms,
) -> Result<Vec<(String, String, Ms)>> {
    let (p, lo, hi) = bounds(filter);
    let g = Gran::Minute.as_str();
    let rows = sqlx::query!(
        r#"WITH RECURSIVE d(device) AS (
               SELECT (SELECT device FROM rollup_counters WHERE device >= ?1 AND device < ?3
                       ORDER BY device LIMIT 1)
               UNION ALL
               SELECT (SELECT device FROM rollup_counters WHERE device > d.device AND device < ?3
                       ORDER BY device LIMIT 1)
               FROM d WHERE d.device IS NOT NULL)
           SELECT r.device AS "device!", r.role AS "role!", MAX(r.last_t) AS "last_t!: i64"
           FROM d CROSS JOIN rollup_counters AS r ON r.device = d.device
           WHERE (d.device = ?1 OR d.device >= ?2)
                 AND r.gran = ?4 AND r.bucket >= ?5 AND r.bucket < ?6
           GROUP BY r.device, r.role
           ORDER BY r.device, r.role"#,
        p,
        lo,
        hi,
        g,
        since,
        before
    )
    .fetch_all(&store.read)
    .await
    .map_err(db("last_readings_before"))?;
    Ok(rows
        .into_iter()
        .map(|r| (r.device, r.role, r.last_t))
        .collect())
}

pub(crate) async fn lease(
    store: &SqliteStore,
    name: &str,
    holder: &str,
    now: Ms,
    until: Ms,
) -> Result<bool> {
    let mut tx = store.begin("lease").await?;
    let taken = sqlx::query!(
        "INSERT INTO leases (name, holder, until_ms) VALUES (?1, ?2, ?4)
         ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, until_ms = excluded.until_ms
         WHERE leases.holder = excluded.holder OR leases.until_ms <= ?3",
        name,
        holder,
        now,
        until
    )
    .execute(&mut *tx)
    .await
    .map_err(db("lease"))?
    .rows_affected();
    tx.commit().await.map_err(db("lease: commit"))?;
    Ok(taken == 1)
}
