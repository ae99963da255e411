//! The roll-up worker against a real SQLite store: raw rows ingested as batches, one pass, the
//! buckets of every granularity; late data recomputes exactly the buckets it touches.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed test

use jiff::Timestamp;
use jiff::tz::TimeZone;
use shopfloor_gateway::db::Db;
use shopfloor_gateway::rollup::{self as worker, HOUR, MINUTE};
use shopfloor_store::{
    ActivityBucket, CounterBucket, DirtyRange, Gran, Ms, NewBatch, ReadingRow, StateBucket,
    StateRow, Store,
};

const EQ: &str = "p1/e1/w1/l1/m1";
const METER: &str = "p1/e1/w1/l1/power";

fn at(s: &str) -> Ms {
    s.parse::<Timestamp>().unwrap().as_millisecond()
}

/// 2026-09-01 08:00 in Shanghai: local midnight is 16:00 UTC, on a whole hour.
fn t0() -> Ms {
    at("2026-09-01T08:00:00+08:00")
}

fn tz() -> TimeZone {
    TimeZone::get("Asia/Shanghai").unwrap()
}

async fn open(dir: &tempfile::TempDir) -> Db {
    let url = format!("sqlite://{}/gw.db", dir.path().display());
    Db::open(&url, None).await.unwrap()
}

fn state(device: &str, from: Ms, to: Ms, s: &str) -> StateRow {
    StateRow {
        device: device.into(),
        from,
        to,
        state: s.into(),
    }
}

fn reading(device: &str, role: &str, t: Ms, v: f64) -> ReadingRow {
    ReadingRow {
        device: device.into(),
        role: role.into(),
        point: format!("{role}_reg"),
        t,
        v,
        width_bits: None,
        rollover: None,
    }
}

fn hash(seq: i64) -> String {
    if seq == 0 {
        "0".repeat(64)
    } else {
        format!("{seq:064x}")
    }
}

/// A batch of one agent with the dirty ranges of its rows (what ingest derives).
fn batch(seq: i64, states: Vec<StateRow>, readings: Vec<ReadingRow>) -> NewBatch {
    let mut span: std::collections::BTreeMap<String, (Ms, Ms)> = Default::default();
    for s in &states {
        let e = span.entry(s.device.clone()).or_insert((s.from, s.to));
        *e = (e.0.min(s.from), e.1.max(s.to));
    }
    for r in &readings {
        let e = span.entry(r.device.clone()).or_insert((r.t, r.t + 1));
        *e = (e.0.min(r.t), e.1.max(r.t + 1));
    }
    let from = span.values().map(|s| s.0).min().unwrap_or(0);
    let to = span.values().map(|s| s.1).max().unwrap_or(0);
    NewBatch {
        agent: "a1".into(),
        seq,
        body_hash: hash(seq),
        prev: hash(seq - 1),
        sealed: to,
        from,
        to,
        received: to,
        payload: format!("{{\"seq\":{seq}}}").into_bytes(),
        samples: Vec::new(),
        states,
        readings,
        links: Vec::new(),
        dirty: span
            .into_iter()
            .map(|(device, (from, to))| DirtyRange { device, from, to })
            .collect(),
    }
}

async fn drain(db: &Db) -> u64 {
    let mut written = 0;
    loop {
        let pass = worker::run_once(db, &tz(), 1_000).await.unwrap();
        written += pass.buckets;
        if pass.ranges == 0 {
            return written;
        }
    }
}

type Rows = (Vec<StateBucket>, Vec<CounterBucket>, Vec<ActivityBucket>);

async fn rows(db: &Db, device: &str, gran: Gran, from: Ms, to: Ms) -> Rows {
    db.device_buckets(device, gran, from, to).await.unwrap()
}

/// Two hours of a machine (producing, a gap, idle) with a part counter every 5 minutes, and an
/// electricity meter read every minute.
fn first_batch() -> NewBatch {
    let t0 = t0();
    let mut readings = Vec::new();
    for k in 0..24 {
        readings.push(reading(
            EQ,
            "produced",
            t0 + 30_000 + k * 5 * MINUTE,
            (k * 10) as f64,
        ));
    }
    for k in 0..=120 {
        readings.push(reading(
            METER,
            "electricity",
            t0 + k * MINUTE,
            (1000 + k * 2) as f64,
        ));
    }
    batch(
        1,
        vec![
            state(EQ, t0, t0 + 10 * MINUTE, "producing"),
            // 10..20 min: nothing (filled by a late batch)
            state(EQ, t0 + 20 * MINUTE, t0 + 90 * MINUTE, "producing"),
            state(EQ, t0 + 90 * MINUTE, t0 + 120 * MINUTE, "idle"),
        ],
        readings,
    )
}

#[tokio::test]
async fn one_pass_builds_every_granularity() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(&dir).await;
    db.ingest(&[first_batch()]).await.unwrap();
    assert!(drain(&db).await > 0);
    let t0 = t0();

    // Minutes: states clipped to minutes, the counter's deltas in the minute of the later
    // reading.
    let (s, c, a) = rows(&db, EQ, Gran::Minute, t0, t0 + 2 * HOUR).await;
    assert_eq!(s.len(), 110, "120 minutes minus the 10-minute gap");
    assert!(s.iter().all(|b| b.producing + b.idle == MINUTE));
    let produced: Vec<&CounterBucket> = c.iter().filter(|b| b.role == "produced").collect();
    assert_eq!(produced.len(), 24);
    assert_eq!(
        produced[0].delta, 0.0,
        "the first reading has no predecessor"
    );
    assert!(
        produced[1..]
            .iter()
            .all(|b| b.delta == 10.0 && b.readings == 1)
    );
    assert_eq!(produced[1].bucket, t0 + 5 * MINUTE);
    // Activity: the 110 minutes with a state, and the 2 minutes of the gap with a reading.
    assert_eq!(a.len(), 112);

    // The meter: 121 readings, one per minute; the reading at t0 + k min belongs to minute
    // k − 1; the last one (t0 + 120 min) to the last minute of the range.
    let (_, m, _) = rows(&db, METER, Gran::Minute, t0 - MINUTE, t0 + 2 * HOUR).await;
    assert_eq!(m.len(), 121);
    assert_eq!(m[0].bucket, t0 - MINUTE);
    assert!(m[1..].iter().all(|b| b.delta == 2.0));

    // Hours from minutes.
    let (s, c, _) = rows(&db, EQ, Gran::Hour, t0, t0 + 2 * HOUR).await;
    assert_eq!(s.len(), 2);
    assert_eq!((s[0].producing, s[0].idle), (50 * MINUTE, 0));
    assert_eq!((s[1].producing, s[1].idle), (30 * MINUTE, 30 * MINUTE));
    let c: Vec<&CounterBucket> = c.iter().filter(|b| b.role == "produced").collect();
    assert_eq!((c[0].delta, c[0].readings), (110.0, 12));
    assert_eq!((c[1].delta, c[1].readings), (120.0, 12));
    assert_eq!(c[0].first_t, t0 + 30_000);
    let (_, m, _) = rows(&db, METER, Gran::Hour, t0, t0 + 2 * HOUR).await;
    assert_eq!(m.iter().map(|b| b.delta).sum::<f64>(), 240.0);

    // Day and month at local midnight, equal to the sum of the hours.
    let day = worker::day_start(t0, &tz()).unwrap();
    assert_eq!(day, at("2026-09-01T00:00:00+08:00"));
    let (s, c, a) = rows(&db, EQ, Gran::Day, day, day + 24 * HOUR).await;
    assert_eq!(s.len(), 1);
    assert_eq!(
        (s[0].bucket, s[0].producing, s[0].idle),
        (day, 80 * MINUTE, 30 * MINUTE)
    );
    assert_eq!(
        c.iter().find(|b| b.role == "produced").unwrap().delta,
        230.0
    );
    assert_eq!(a[0].samples, 110 + 24);
    let month = worker::month_start(t0, &tz()).unwrap();
    let (s, c, _) = rows(&db, EQ, Gran::Month, month, month + 1).await;
    assert_eq!((s[0].producing, s[0].idle), (80 * MINUTE, 30 * MINUTE));
    assert_eq!(
        c.iter().find(|b| b.role == "produced").unwrap().delta,
        230.0
    );

    // A second pass over the same data (re-queued) writes the same rows.
    let before_hours = rows(&db, EQ, Gran::Hour, t0, t0 + 2 * HOUR).await;
    let before_minutes = rows(&db, EQ, Gran::Minute, t0, t0 + 2 * HOUR).await;
    let mut requeue = batch(2, Vec::new(), Vec::new());
    requeue.dirty = vec![DirtyRange {
        device: EQ.into(),
        from: t0,
        to: t0 + 2 * HOUR,
    }];
    db.ingest(&[requeue]).await.unwrap();
    drain(&db).await;
    assert_eq!(
        rows(&db, EQ, Gran::Hour, t0, t0 + 2 * HOUR).await,
        before_hours
    );
    assert_eq!(
        rows(&db, EQ, Gran::Minute, t0, t0 + 2 * HOUR).await,
        before_minutes
    );
}

#[tokio::test]
async fn late_data_recomputes_only_what_it_touches() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(&dir).await;
    let t0 = t0();
    db.ingest(&[first_batch()]).await.unwrap();
    drain(&db).await;
    let day = worker::day_start(t0, &tz()).unwrap();
    let month = worker::month_start(t0, &tz()).unwrap();
    let minutes_before = rows(&db, EQ, Gran::Minute, t0, t0 + 2 * HOUR).await;
    let hour1_before = rows(&db, EQ, Gran::Hour, t0 + HOUR, t0 + 2 * HOUR).await;
    let meter_before = rows(&db, METER, Gran::Hour, t0, t0 + 2 * HOUR).await;

    // The gap of the first hour arrives late: idle 10..20 min, and a counter reading in it.
    let late = batch(
        2,
        vec![state(EQ, t0 + 10 * MINUTE, t0 + 20 * MINUTE, "idle")],
        vec![reading(EQ, "produced", t0 + 12 * MINUTE + 15_000, 25.0)],
    );
    db.ingest(&[late]).await.unwrap();
    drain(&db).await;

    // The first hour now holds the idle time; the counter reading split one delta in two.
    let (s, c, _) = rows(&db, EQ, Gran::Hour, t0, t0 + HOUR).await;
    assert_eq!((s[0].producing, s[0].idle), (50 * MINUTE, 10 * MINUTE));
    let c = c.iter().find(|b| b.role == "produced").unwrap();
    assert_eq!((c.delta, c.readings), (110.0, 13));
    // Minutes: the gap's 10 minutes are new; of the old ones only the minute of the reading
    // after the late one changed (its delta 10 became 5).
    let minutes_after = rows(&db, EQ, Gran::Minute, t0, t0 + 2 * HOUR).await;
    assert_eq!(minutes_after.0.len(), 120);
    let old: Vec<&StateBucket> = minutes_after
        .0
        .iter()
        .filter(|b| b.bucket < t0 + 10 * MINUTE || b.bucket >= t0 + 20 * MINUTE)
        .collect();
    assert_eq!(old, minutes_before.0.iter().collect::<Vec<_>>());
    let changed: Vec<(Ms, f64)> = minutes_after
        .1
        .iter()
        .filter(|b| !minutes_before.1.contains(b))
        .map(|b| ((b.bucket - t0) / MINUTE, b.delta))
        .collect();
    assert_eq!(changed, vec![(12, 5.0), (15, 5.0)]);
    // The second hour and the meter are unchanged; day and month recomputed.
    assert_eq!(
        rows(&db, EQ, Gran::Hour, t0 + HOUR, t0 + 2 * HOUR).await,
        hour1_before
    );
    assert_eq!(
        rows(&db, METER, Gran::Hour, t0, t0 + 2 * HOUR).await,
        meter_before
    );
    let (s, _, _) = rows(&db, EQ, Gran::Day, day, day + 24 * HOUR).await;
    assert_eq!((s[0].producing, s[0].idle), (80 * MINUTE, 40 * MINUTE));
    let (s, _, _) = rows(&db, EQ, Gran::Month, month, month + 1).await;
    assert_eq!((s[0].producing, s[0].idle), (80 * MINUTE, 40 * MINUTE));
}

#[tokio::test]
async fn an_hour_whose_minutes_were_purged_is_recomputed_from_raw() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(&dir).await;
    let t0 = t0();
    db.ingest(&[first_batch()]).await.unwrap();
    drain(&db).await;
    let hour0 = rows(&db, EQ, Gran::Hour, t0, t0 + HOUR).await;
    // Retention drops the minute buckets; then one late reading arrives for that hour.
    db.purge(
        shopfloor_store::Retained::Rollups(Gran::Minute),
        t0 + 3 * HOUR,
    )
    .await
    .unwrap();
    let late = batch(
        2,
        Vec::new(),
        vec![reading(EQ, "produced", t0 + 40 * MINUTE + 10_000, 75.0)],
    );
    db.ingest(&[late]).await.unwrap();
    drain(&db).await;
    let (s, c, _) = rows(&db, EQ, Gran::Hour, t0, t0 + HOUR).await;
    assert_eq!(s, hour0.0, "the hour kept all of its state time");
    let c = c.iter().find(|b| b.role == "produced").unwrap();
    let was = hour0.1.iter().find(|b| b.role == "produced").unwrap();
    assert_eq!((c.delta, c.readings), (was.delta, was.readings + 1));
}

#[tokio::test]
async fn the_worker_takes_the_lease_rolls_up_and_stops_on_shutdown() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(&dir).await;
    db.ingest(&[first_batch()]).await.unwrap();
    let metrics = std::sync::Arc::new(shopfloor_gateway::metrics::Metrics::new());
    let (stop, stop_rx) = tokio::sync::watch::channel(false);
    let task = tokio::spawn(worker::run(
        db.clone(),
        metrics.clone(),
        "gw-a".into(),
        tz(),
        stop_rx,
    ));
    // Wait (bounded) until the queue is empty.
    let mut drained = false;
    for _ in 0..300 {
        if db.dirty(10).await.unwrap().is_empty() {
            drained = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(drained, "the worker did not drain the dirty queue");
    let (s, _, _) = rows(&db, EQ, Gran::Hour, t0(), t0() + 2 * HOUR).await;
    assert_eq!(s.len(), 2);
    // The worker holds the lease: another holder cannot take it now.
    let now = Timestamp::now().as_millisecond();
    assert!(
        !db.lease(worker::LEASE, "gw-b", now, now + 1_000)
            .await
            .unwrap()
    );
    stop.send(true).unwrap();
    tokio::time::timeout(std::time::Duration::from_secs(30), task)
        .await
        .expect("the worker stops on shutdown")
        .unwrap();
    assert!(
        metrics.encode().contains("rollup"),
        "roll-up metrics are reported"
    );
}
