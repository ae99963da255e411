//! The backend-independent conformance suite: every backend's tests call [`run`] on a fresh,
//! empty store, so both dialects keep the invariants of the crate docs.
//!
//! The suite uses realistic data (a line with two CNC machines, a sub-meter, a robot, agents
//! with hash chains) and checks results exactly. It never depends on an order the trait does
//! not promise: where a method does not specify one, results are sorted before comparison.
//! Each check panics with a message naming it (`conformance: <section>: <check>`).

use crate::{
    ActivityBucket, AuditEntry, AuditFilter, Chain, CounterBucket, DeviceFilter, DirtyRange, Gran,
    InputsRecord, LinkRow, MinuteActivity, Ms, NewBatch, Outcome, QuarantineRow, ReadingRow,
    RegistryItem, Retained, RollupUpdate, SampleRow, StateBucket, StateRow, Store, TokenRow,
};
use serde_json::json;

mod seal;
mod users;

/// Runs every check against `store`, which must be empty. Panics with a message naming the
/// failed check.
pub async fn run<S: Store>(store: &S) {
    ok(store.ping().await, "ping");
    empty(store).await;
    let stored = ingest_and_chain(store).await;
    raw_reads(store).await;
    quarantine(store).await;
    let rollups = rollups(store).await;
    raw_slices(store).await;
    lease(store).await;
    registry(store).await;
    inputs(store).await;
    tokens(store).await;
    audit_filters(store).await;
    purge(store, &stored, &rollups).await;
    seal::run(store).await;
    users::run(store).await;
    ok(store.ping().await, "ping at the end");
}

// ---------------------------------------------------------------------------------------------
// Data
// ---------------------------------------------------------------------------------------------

/// An hour boundary (2026-09-21T14:00:00Z).
const T0: Ms = 1_789_999_200_000;
const SEC: Ms = 1_000;
const MIN: Ms = 60_000;
const HOUR: Ms = 3_600_000;

const A: &str = "line1-agent";
const B: &str = "line2-agent";
const C: &str = "line3-agent";
const D: &str = "line4-agent";
const E: &str = "press-agent";

const CNC1: &str = "p1/e1/w1/l1/cnc-01";
/// A sub-meter below CNC1 (a sixth path segment): matches CNC1's prefix.
const METER: &str = "p1/e1/w1/l1/cnc-01/m1";
/// Sorts between `CNC1` and `CNC1/…` ('-' < '/'), yet is not below CNC1.
const SIBLING: &str = "p1/e1/w1/l1/cnc-01-b";
const CNC2: &str = "p1/e1/w1/l1/cnc-02";
const ROBOT: &str = "p1/e1/w2/l1/robot-01";
/// Another enterprise whose id starts with `e1`: must not match the prefix `p1/e1`.
const OTHER: &str = "p1/e1x/w1/l1/cnc-09";
/// A press with a large batch (bulk insert paths).
const PRESS: &str = "p1/e2/w1/l1/press-01";

const ZERO: &str = "0000000000000000000000000000000000000000000000000000000000000000";

fn ok<T, E: std::fmt::Display>(r: Result<T, E>, check: &str) -> T {
    match r {
        Ok(v) => v,
        Err(e) => panic!("conformance: {check}: unexpected error: {e}"),
    }
}

fn check(cond: bool, check: &str) {
    assert!(cond, "conformance: {check}");
}

fn same<T: PartialEq + std::fmt::Debug>(got: T, want: T, check: &str) {
    assert_eq!(got, want, "conformance: {check}");
}

fn prefix(p: &str) -> DeviceFilter {
    DeviceFilter {
        prefix: p.to_owned(),
    }
}

/// A 64-hex body hash, distinct per (agent number, seq, variant).
fn hash(agent: u8, seq: i64, variant: u8) -> String {
    format!("{agent:02x}{variant:02x}{seq:060x}")
}

/// A payload as an MQTT client delivers it: not canonical JSON, non-ASCII, a trailing newline.
/// The store must return these bytes exactly.
fn payload(agent: &str, seq: i64) -> Vec<u8> {
    format!(
        "{{\"body\":{{\"schema\":\"shopfloor.batch/1\",\"agent\":\"{agent}\",\"seq\":{seq},\
         \"note\":\"Werkstück ✓ 工件\"}} ,\n \"sig\":\"c2lnbmF0dXJl{seq}==\"}}\n"
    )
    .into_bytes()
}

fn sample_num(device: &str, point: &str, t: Ms, v: f64) -> SampleRow {
    SampleRow {
        device: device.to_owned(),
        point: point.to_owned(),
        t,
        num: Some(v),
        is_bool: false,
        text: None,
        err: None,
    }
}

fn state(device: &str, from: Ms, to: Ms, s: &str) -> StateRow {
    StateRow {
        device: device.to_owned(),
        from,
        to,
        state: s.to_owned(),
    }
}

fn reading(
    device: &str,
    role: &str,
    point: &str,
    t: Ms,
    v: f64,
    width_bits: Option<i32>,
    rollover: Option<f64>,
) -> ReadingRow {
    ReadingRow {
        device: device.to_owned(),
        role: role.to_owned(),
        point: point.to_owned(),
        t,
        v,
        width_bits,
        rollover,
    }
}

/// Agent A's batch `seq` (1..=5): window `[T0 + (seq-1)·10 min, T0 + seq·10 min)`, received
/// half a second after its end; body hash `hash(1, seq, 0)`, linked to `seq - 1`.
fn batch_a(seq: i64) -> NewBatch {
    let w0 = T0 + (seq - 1) * 10 * MIN;
    let w1 = w0 + 10 * MIN;
    let mut samples: Vec<SampleRow> = (0..10)
        .map(|k| {
            sample_num(
                CNC1,
                "spindle_load",
                w0 + k * MIN + 500,
                40.0 + k as f64 * 0.25 + seq as f64,
            )
        })
        .collect();
    let states = match seq {
        1 => vec![
            state(CNC1, w0, w0 + 7 * MIN, "producing"),
            state(CNC1, w0 + 7 * MIN, w1, "idle"),
        ],
        2 => vec![
            state(CNC1, w0, w0 + 5 * MIN, "producing"),
            state(CNC1, w0 + 5 * MIN, w1, "setup"),
        ],
        3 => vec![state(CNC1, w0, w1, "producing")],
        4 => vec![
            state(CNC1, w0, w0 + 2 * MIN, "delay"),
            state(CNC1, w0 + 2 * MIN, w1, "producing"),
        ],
        _ => vec![state(CNC1, w0, w1, "planned_down")],
    };
    // A 16-bit part counter read every 2 minutes, wrapping in batch 1.
    let mut readings: Vec<ReadingRow> = (0..5)
        .map(|j| {
            let n = (seq - 1) * 5 + j;
            let v = ((65_520 + n * 4) % 65_536) as f64;
            reading(
                CNC1,
                "produced",
                "part_count",
                w0 + j * 2 * MIN,
                v,
                Some(16),
                None,
            )
        })
        .collect();
    readings.push(reading(
        METER,
        "electricity",
        "energy",
        w0 + 5 * MIN,
        1_000.5 + seq as f64 * 10.25,
        None,
        Some(1_000_000.0),
    ));
    let mut links = Vec::new();
    let mut dirty = vec![DirtyRange {
        device: CNC1.to_owned(),
        from: w0,
        to: w1,
    }];
    if seq == 1 {
        samples.push(SampleRow {
            device: CNC1.to_owned(),
            point: "door_open".to_owned(),
            t: w0 + 30 * SEC,
            num: Some(1.0),
            is_bool: true,
            text: None,
            err: None,
        });
        samples.push(SampleRow {
            device: CNC1.to_owned(),
            point: "program".to_owned(),
            t: w0 + 45 * SEC,
            num: None,
            is_bool: false,
            text: Some("O1234 (shaft-a)".to_owned()),
            err: None,
        });
        samples.push(SampleRow {
            device: CNC1.to_owned(),
            point: "spindle_load".to_owned(),
            t: w0 + 5 * MIN + 750,
            num: None,
            is_bool: false,
            text: None,
            err: Some("exception 02 (illegal data address)".to_owned()),
        });
        samples.push(sample_num(CNC2, "coolant_temp", w0 + 2 * MIN, 21.5));
        readings.push(reading(
            CNC1,
            "good",
            "good_count",
            w0 + MIN,
            7.0,
            None,
            None,
        ));
        readings.push(reading(
            CNC1,
            "good",
            "good_count",
            w0 + 9 * MIN,
            11.0,
            None,
            None,
        ));
        links.push(LinkRow {
            device: CNC1.to_owned(),
            t: w0 + SEC,
            up: true,
            detail: String::new(),
        });
        links.push(LinkRow {
            device: ROBOT.to_owned(),
            t: w0 + 3 * MIN,
            up: false,
            detail: "timeout after 1500 ms".to_owned(),
        });
        dirty.push(DirtyRange {
            device: CNC2.to_owned(),
            from: w0,
            to: w1,
        });
    }
    NewBatch {
        agent: A.to_owned(),
        seq,
        body_hash: hash(1, seq, 0),
        prev: if seq == 1 {
            ZERO.to_owned()
        } else {
            hash(1, seq - 1, 0)
        },
        sealed: w1 + 100,
        from: w0,
        to: w1,
        received: w1 + 500,
        payload: payload(A, seq),
        samples,
        states,
        readings,
        links,
        dirty,
    }
}

/// A small batch of another agent, two hours after T0 (outside A's windows), with one sample
/// of the other enterprise's machine.
fn batch_other(agent: &str, n: u8, seq: i64, body_hash: String, prev: String) -> NewBatch {
    let w0 = T0 + 2 * HOUR + (i64::from(n) * 10 + seq) * MIN;
    NewBatch {
        agent: agent.to_owned(),
        seq,
        body_hash,
        prev,
        sealed: w0 + MIN + 100,
        from: w0,
        to: w0 + MIN,
        received: w0 + MIN + 500,
        payload: payload(agent, seq),
        samples: vec![sample_num(OTHER, "spindle_load", w0 + SEC, 12.0)],
        states: Vec::new(),
        readings: Vec::new(),
        links: Vec::new(),
        dirty: Vec::new(),
    }
}

/// A large batch (more rows than one bulk statement of a backend is likely to take), four
/// hours after T0: every sample kind and every optional reading field.
fn batch_large() -> NewBatch {
    let w0 = T0 + 4 * HOUR;
    let samples = (0..150)
        .map(|k| {
            let t = w0 + k * SEC;
            match k % 4 {
                0 => sample_num(PRESS, "force_kn", t, 120.0 + k as f64 / 8.0),
                1 => SampleRow {
                    device: PRESS.to_owned(),
                    point: "guard_closed".to_owned(),
                    t,
                    num: Some((k % 2) as f64),
                    is_bool: true,
                    text: None,
                    err: None,
                },
                2 => SampleRow {
                    device: PRESS.to_owned(),
                    point: "die".to_owned(),
                    t,
                    num: None,
                    is_bool: false,
                    text: Some(format!("die-{k} «Ω»")),
                    err: None,
                },
                _ => SampleRow {
                    device: PRESS.to_owned(),
                    point: "force_kn".to_owned(),
                    t,
                    num: None,
                    is_bool: false,
                    text: None,
                    err: Some(format!("timeout #{k}")),
                },
            }
        })
        .collect();
    let readings = (0..150)
        .map(|k| {
            let t = w0 + k * SEC;
            if k % 3 == 0 {
                reading(
                    PRESS,
                    "electricity",
                    "kwh",
                    t,
                    1e6 - 75.0 + k as f64 * 0.5,
                    None,
                    Some(1e6),
                )
            } else {
                reading(
                    PRESS,
                    "produced",
                    "strokes",
                    t,
                    (k * 7) as f64,
                    Some(32),
                    None,
                )
            }
        })
        .collect();
    NewBatch {
        agent: E.to_owned(),
        seq: 1,
        body_hash: hash(5, 1, 0),
        prev: ZERO.to_owned(),
        sealed: w0 + 150 * SEC + 100,
        from: w0,
        to: w0 + 150 * SEC,
        received: w0 + 150 * SEC + 500,
        payload: payload(E, 1),
        samples,
        states: vec![state(PRESS, w0, w0 + 150 * SEC, "producing")],
        readings,
        links: Vec::new(),
        dirty: Vec::new(),
    }
}

fn linked() -> Outcome {
    Outcome::Stored {
        chain: Chain::Linked,
    }
}

// ---------------------------------------------------------------------------------------------
// Sections
// ---------------------------------------------------------------------------------------------

async fn empty<S: Store>(store: &S) {
    same(
        ok(store.agent_heads().await, "empty: agent_heads").len(),
        0,
        "empty: no agent heads",
    );
    same(
        ok(store.dirty(10).await, "empty: dirty").len(),
        0,
        "empty: no dirty ranges",
    );
    same(
        ok(store.ingest(&[]).await, "empty: ingest of nothing"),
        Vec::new(),
        "empty: ingest of nothing returns no outcomes",
    );
}

/// Ingest, dedupe and the chain checks. Returns every batch that was stored (for the purge
/// expectations).
async fn ingest_and_chain<S: Store>(store: &S) -> Vec<NewBatch> {
    let (a1, a2, a3, a4, a5) = (batch_a(1), batch_a(2), batch_a(3), batch_a(4), batch_a(5));
    let out = ok(
        store.ingest(&[a1.clone(), a2.clone(), a3.clone()]).await,
        "ingest: chain of 3",
    );
    same(
        out,
        vec![linked(), linked(), linked()],
        "ingest: a chain of 3 batches is Linked",
    );

    let samples_before = ok(
        store
            .samples(CNC1, "spindle_load", T0, T0 + HOUR, 1_000)
            .await,
        "ingest: samples",
    )
    .len();
    same(
        samples_before,
        31,
        "ingest: 30 numeric samples and one error sample of spindle_load",
    );

    same(
        ok(
            store.ingest(std::slice::from_ref(&a2)).await,
            "ingest: redelivery",
        ),
        vec![Outcome::Duplicate { same_hash: true }],
        "ingest: a redelivered batch is Duplicate{same_hash: true}",
    );
    let mut replay = batch_a(2);
    replay.body_hash = hash(1, 2, 9);
    replay.payload = b"another body".to_vec();
    same(
        ok(store.ingest(&[replay]).await, "ingest: replay"),
        vec![Outcome::Duplicate { same_hash: false }],
        "ingest: the same seq with another body hash is Duplicate{same_hash: false}",
    );
    same(
        ok(
            store
                .samples(CNC1, "spindle_load", T0, T0 + HOUR, 1_000)
                .await,
            "ingest: samples",
        )
        .len(),
        samples_before,
        "ingest: duplicates store no rows",
    );
    let stored_a2 = ok(store.batches(A, 2, 2, true).await, "ingest: batches");
    same(
        stored_a2.first().map(|b| b.body_hash.clone()),
        Some(a2.body_hash.clone()),
        "ingest: a duplicate with another hash does not replace the stored batch",
    );

    // A gap: seq 5 after 3.
    same(
        ok(store.ingest(std::slice::from_ref(&a5)).await, "ingest: gap"),
        vec![Outcome::Stored {
            chain: Chain::Gap { missing_from: 4 },
        }],
        "ingest: seq 5 after 3 is Gap{missing_from: 4}",
    );
    let events = ok(
        store.chain_events(Some(A), 10).await,
        "ingest: chain_events",
    );
    same(events.len(), 1, "ingest: one chain event for agent A");
    same(
        (
            events[0].agent.as_str(),
            events[0].seq,
            events[0].at,
            events[0].kind.as_str(),
        ),
        (A, 5, a5.received, "gap"),
        "ingest: the gap is recorded as a `gap` event at the batch's receive time",
    );
    check(
        !events[0].detail.is_empty(),
        "ingest: a chain event has a detail",
    );

    let heads = ok(store.agent_heads().await, "ingest: agent_heads");
    same(heads.len(), 1, "ingest: one agent head");
    let h = &heads[0];
    same(
        (
            h.agent.as_str(),
            h.batches,
            h.first_seq,
            h.last_seq,
            h.last_hash.as_str(),
            h.last_to,
            h.last_received,
            h.missing,
        ),
        (A, 4, 1, 5, a5.body_hash.as_str(), a5.to, a5.received, 1),
        "ingest: agent head after the gap (4 batches, 1..=5, one missing)",
    );

    // Duplicate within one call; a fork on `prev`.
    let b1 = batch_other(B, 2, 1, hash(2, 1, 0), ZERO.to_owned());
    same(
        ok(
            store.ingest(&[b1.clone(), b1.clone()]).await,
            "ingest: twice in one call",
        ),
        vec![linked(), Outcome::Duplicate { same_hash: true }],
        "ingest: the second copy in the same call is Duplicate{same_hash: true}",
    );
    let b2 = batch_other(B, 2, 2, hash(2, 2, 0), hash(2, 1, 7));
    let out = ok(
        store.ingest(std::slice::from_ref(&b2)).await,
        "ingest: fork",
    );
    check(
        matches!(out.as_slice(), [Outcome::Stored { chain: Chain::Fork { detail } }] if !detail.is_empty()),
        "ingest: prev differing from the stored hash of seq - 1 is Fork",
    );

    // A fork named by the stored successor: C2 arrives first (a gap from 1), then a C1 whose
    // hash is not the one C2 names.
    let c2 = batch_other(C, 3, 2, hash(3, 2, 0), hash(3, 1, 0));
    same(
        ok(
            store.ingest(std::slice::from_ref(&c2)).await,
            "ingest: gap from 1",
        ),
        vec![Outcome::Stored {
            chain: Chain::Gap { missing_from: 1 },
        }],
        "ingest: a first batch with seq 2 is Gap{missing_from: 1}",
    );
    let c1 = batch_other(C, 3, 1, hash(3, 1, 5), ZERO.to_owned());
    let out = ok(
        store.ingest(std::slice::from_ref(&c1)).await,
        "ingest: successor fork",
    );
    check(
        matches!(
            out.as_slice(),
            [Outcome::Stored {
                chain: Chain::Fork { .. }
            }]
        ),
        "ingest: a batch whose stored seq + 1 names another hash is Fork",
    );
    // Seq 1 must name the zero hash.
    let d1 = batch_other(D, 4, 1, hash(4, 1, 0), hash(4, 0, 3));
    let out = ok(
        store.ingest(std::slice::from_ref(&d1)).await,
        "ingest: seq 1 fork",
    );
    check(
        matches!(
            out.as_slice(),
            [Outcome::Stored {
                chain: Chain::Fork { .. }
            }]
        ),
        "ingest: seq 1 with a non-zero prev is Fork",
    );

    // A large batch: every row back exactly.
    let large = batch_large();
    same(
        ok(
            store.ingest(std::slice::from_ref(&large)).await,
            "ingest: large batch",
        ),
        vec![linked()],
        "ingest: a large batch is stored",
    );
    let mut points: Vec<&str> = large.samples.iter().map(|s| s.point.as_str()).collect();
    points.sort_unstable();
    points.dedup();
    for point in points {
        let mut want: Vec<SampleRow> = large
            .samples
            .iter()
            .filter(|s| s.point == point)
            .cloned()
            .collect();
        want.sort_by_key(|s| s.t);
        same(
            ok(
                store
                    .samples(PRESS, point, large.from, large.to, 1_000)
                    .await,
                "ingest: large batch samples",
            ),
            want,
            &format!("ingest: every sample of `{point}` of a large batch round-trips"),
        );
    }
    let mut want = large.readings.clone();
    want.sort_by(|x, y| (&x.role, &x.point, x.t).cmp(&(&y.role, &y.point, y.t)));
    same(
        ok(
            store.raw_slice(PRESS, large.from, large.to).await,
            "ingest: large batch readings",
        )
        .readings,
        want,
        "ingest: every reading of a large batch round-trips",
    );

    // The missing seq 4 arrives and links both ways.
    same(
        ok(
            store.ingest(std::slice::from_ref(&a4)).await,
            "ingest: gap filled",
        ),
        vec![linked()],
        "ingest: the missing batch between two stored ones is Linked",
    );

    let events = ok(
        store.chain_events(None, 100).await,
        "ingest: all chain events",
    );
    let got: Vec<(&str, i64, &str)> = events
        .iter()
        .map(|e| (e.agent.as_str(), e.seq, e.kind.as_str()))
        .collect();
    same(
        got,
        vec![
            (D, 1, "fork"),
            (C, 1, "fork"),
            (C, 2, "gap"),
            (B, 2, "fork"),
            (A, 5, "gap"),
        ],
        "ingest: chain events, newest first",
    );
    same(
        ok(
            store.chain_events(None, 2).await,
            "ingest: chain events limit",
        )
        .len(),
        2,
        "ingest: chain_events honours its limit",
    );

    let mut heads = ok(store.agent_heads().await, "ingest: agent_heads");
    heads.sort_by(|x, y| x.agent.cmp(&y.agent));
    let got: Vec<(&str, i64, i64, i64, i64)> = heads
        .iter()
        .map(|h| {
            (
                h.agent.as_str(),
                h.batches,
                h.first_seq,
                h.last_seq,
                h.missing,
            )
        })
        .collect();
    same(
        got,
        vec![
            (A, 5, 1, 5, 0),
            (B, 2, 1, 2, 0),
            (C, 2, 1, 2, 0),
            (D, 1, 1, 1, 0),
            (E, 1, 1, 1, 0),
        ],
        "ingest: agent heads (count, first, last, missing) after the gap closed",
    );
    vec![a1, a2, a3, a5, b1, b2, c2, c1, d1, large, a4]
}

async fn raw_reads<S: Store>(store: &S) {
    // Payloads verbatim, ordered by seq, range inclusive.
    let got = ok(store.batches(A, 2, 4, true).await, "reads: batches");
    same(
        got.iter().map(|b| b.seq).collect::<Vec<_>>(),
        vec![2, 3, 4],
        "reads: batches(from_seq..=to_seq) ordered by seq",
    );
    for b in &got {
        same(
            b.payload.as_deref(),
            Some(payload(A, b.seq).as_slice()),
            "reads: batches returns the payload bytes verbatim",
        );
        let want = batch_a(b.seq);
        same(
            (
                b.agent.as_str(),
                b.body_hash.as_str(),
                b.prev.as_str(),
                b.sealed,
                b.from,
                b.to,
                b.received,
            ),
            (
                A,
                want.body_hash.as_str(),
                want.prev.as_str(),
                want.sealed,
                want.from,
                want.to,
                want.received,
            ),
            "reads: batch metadata round-trips",
        );
    }
    let bare = ok(
        store.batches(A, 1, 5, false).await,
        "reads: batches without payload",
    );
    same(bare.len(), 5, "reads: five batches of A");
    check(
        bare.iter().all(|b| b.payload.is_none()),
        "reads: with_payload = false returns no payload",
    );
    same(
        ok(
            store.batches("nobody", 1, 5, true).await,
            "reads: unknown agent",
        )
        .len(),
        0,
        "reads: no batches of an unknown agent",
    );

    // chain_ranges: windows (from, to] overlapping the period (from, to].
    let ranges = ok(
        store.chain_ranges(T0 + 5 * MIN, T0 + 25 * MIN).await,
        "reads: chain_ranges",
    );
    same(
        ranges.len(),
        1,
        "reads: chain_ranges finds one agent in A's hour",
    );
    let r = &ranges[0];
    same(
        (
            r.agent.as_str(),
            r.first_seq,
            r.first_hash.clone(),
            r.last_seq,
            r.last_hash.clone(),
            r.batches,
        ),
        (A, 1, hash(1, 1, 0), 3, hash(1, 3, 0), 3),
        "reads: chain_ranges names the first and last overlapping batch and the count",
    );
    let ranges = ok(
        store.chain_ranges(T0 + 10 * MIN, T0 + 20 * MIN).await,
        "reads: chain_ranges",
    );
    same(
        ranges
            .iter()
            .map(|r| (r.agent.as_str(), r.first_seq, r.last_seq, r.batches))
            .collect::<Vec<_>>(),
        vec![(A, 2, 2, 1)],
        "reads: chain_ranges excludes windows that only touch the period's ends",
    );
    let mut ranges = ok(
        store.chain_ranges(T0, T0 + 3 * HOUR).await,
        "reads: chain_ranges",
    );
    ranges.sort_by(|x, y| x.agent.cmp(&y.agent));
    same(
        ranges
            .iter()
            .map(|r| (r.agent.as_str(), r.first_seq, r.last_seq, r.batches))
            .collect::<Vec<_>>(),
        vec![(A, 1, 5, 5), (B, 1, 2, 2), (C, 1, 2, 2), (D, 1, 1, 1)],
        "reads: chain_ranges per agent",
    );
    let ranges = ok(
        store
            .chain_ranges(T0 + 4 * HOUR + MIN, T0 + 4 * HOUR + 2 * MIN)
            .await,
        "reads: chain_ranges",
    );
    same(
        ranges
            .iter()
            .map(|r| (r.agent.as_str(), r.first_seq, r.last_seq, r.batches))
            .collect::<Vec<_>>(),
        vec![(E, 1, 1, 1)],
        "reads: chain_ranges of a period inside one batch's window",
    );

    // samples: one point, [from, to), ordered by t, limited.
    let got = ok(
        store
            .samples(CNC1, "spindle_load", T0 + 2 * MIN, T0 + 6 * MIN, 100)
            .await,
        "reads: samples",
    );
    let want: Vec<SampleRow> = {
        let mut all: Vec<SampleRow> = batch_a(1)
            .samples
            .into_iter()
            .filter(|s| s.point == "spindle_load" && s.t >= T0 + 2 * MIN && s.t < T0 + 6 * MIN)
            .collect();
        all.sort_by_key(|s| s.t);
        all
    };
    same(
        got,
        want,
        "reads: samples of one point in [from, to), by t, error sample included",
    );
    let got = ok(
        store.samples(CNC1, "spindle_load", T0, T0 + HOUR, 2).await,
        "reads: samples limit",
    );
    same(
        got.iter().map(|s| s.t).collect::<Vec<_>>(),
        vec![T0 + 500, T0 + MIN + 500],
        "reads: samples honours its limit (earliest first)",
    );
    let got = ok(
        store.samples(CNC1, "door_open", T0, T0 + HOUR, 10).await,
        "reads: bool",
    );
    same(
        got,
        vec![SampleRow {
            device: CNC1.to_owned(),
            point: "door_open".to_owned(),
            t: T0 + 30 * SEC,
            num: Some(1.0),
            is_bool: true,
            text: None,
            err: None,
        }],
        "reads: a bool sample round-trips",
    );
    let got = ok(
        store.samples(CNC1, "program", T0, T0 + HOUR, 10).await,
        "reads: text",
    );
    same(
        got.first().and_then(|s| s.text.clone()),
        Some("O1234 (shaft-a)".to_owned()),
        "reads: a text sample round-trips",
    );
}

async fn quarantine<S: Store>(store: &S) {
    let rows = [
        QuarantineRow {
            received: T0 + 100,
            topic: "shopfloor/v1/rogue/batch".to_owned(),
            agent: Some("rogue".to_owned()),
            seq: Some(7),
            reason: "unknown_agent".to_owned(),
            detail: "agent `rogue` is not registered".to_owned(),
            payload: b"{\"body\":{}}".to_vec(),
        },
        QuarantineRow {
            received: T0 + 200,
            topic: "shopfloor/v1/line1-agent/batch".to_owned(),
            agent: None,
            seq: None,
            reason: "malformed".to_owned(),
            detail: "body: expected an object".to_owned(),
            payload: vec![0, 159, 146, 150, 255, b'\n'],
        },
        QuarantineRow {
            received: T0 + 2 * HOUR,
            topic: "shopfloor/v1/line1-agent/batch".to_owned(),
            agent: Some(A.to_owned()),
            seq: Some(3),
            reason: "bad_signature".to_owned(),
            detail: "sig: does not verify".to_owned(),
            payload: payload(A, 3),
        },
    ];
    ok(store.quarantine(&rows[..2]).await, "quarantine: insert");
    ok(store.quarantine(&rows[2..]).await, "quarantine: insert");
    ok(store.quarantine(&[]).await, "quarantine: insert nothing");
    let got = ok(store.list_quarantine(None, 10).await, "quarantine: list");
    same(
        got.iter().map(|e| e.row.clone()).collect::<Vec<_>>(),
        vec![rows[2].clone(), rows[1].clone(), rows[0].clone()],
        "quarantine: listed newest first, rows verbatim",
    );
    check(
        got.windows(2).all(|w| w[0].id > w[1].id),
        "quarantine: ids decrease in the listing",
    );
    let older = ok(
        store.list_quarantine(Some(got[1].id), 10).await,
        "quarantine: list before",
    );
    same(
        older.iter().map(|e| e.id).collect::<Vec<_>>(),
        vec![got[2].id],
        "quarantine: `before` lists ids below it",
    );
    same(
        ok(store.list_quarantine(None, 1).await, "quarantine: limit")
            .iter()
            .map(|e| e.id)
            .collect::<Vec<_>>(),
        vec![got[0].id],
        "quarantine: limit keeps the newest",
    );
}

/// The roll-up rows the suite leaves in the store (for the purge expectations).
struct Rollups {
    states: Vec<StateBucket>,
    counters: Vec<CounterBucket>,
    activity: Vec<ActivityBucket>,
}

fn sb(device: &str, gran: Gran, bucket: Ms, producing: i64, idle: i64) -> StateBucket {
    StateBucket {
        device: device.to_owned(),
        gran,
        bucket,
        producing,
        setup: 0,
        delay: 0,
        idle,
        planned_down: 0,
        offline: 60_000 - producing - idle,
    }
}

fn cb(device: &str, role: &str, gran: Gran, bucket: Ms, delta: f64, last_t: Ms) -> CounterBucket {
    CounterBucket {
        device: device.to_owned(),
        role: role.to_owned(),
        gran,
        bucket,
        delta,
        first_t: bucket,
        last_t,
        readings: 2,
        wraps: i64::from(delta > 100.0),
        resets: 0,
    }
}

fn ab(device: &str, gran: Gran, bucket: Ms, samples: i64, points: i64) -> ActivityBucket {
    ActivityBucket {
        device: device.to_owned(),
        gran,
        bucket,
        samples,
        points,
    }
}

fn sorted_states(mut v: Vec<StateBucket>) -> Vec<StateBucket> {
    v.sort_by(|x, y| (&x.device, x.gran, x.bucket).cmp(&(&y.device, y.gran, y.bucket)));
    v
}

fn sorted_counters(mut v: Vec<CounterBucket>) -> Vec<CounterBucket> {
    v.sort_by(|x, y| {
        (&x.device, &x.role, x.gran, x.bucket).cmp(&(&y.device, &y.role, y.gran, y.bucket))
    });
    v
}

fn sorted_activity(mut v: Vec<ActivityBucket>) -> Vec<ActivityBucket> {
    v.sort_by(|x, y| (&x.device, x.gran, x.bucket).cmp(&(&y.device, y.gran, y.bucket)));
    v
}

async fn rollups<S: Store>(store: &S) -> Rollups {
    use Gran::{Hour, Minute};

    // The dirty queue: every stored batch's ranges, oldest first.
    let dirty = ok(store.dirty(100).await, "rollups: dirty");
    let want: Vec<DirtyRange> = [1, 2, 3, 5, 4]
        .into_iter()
        .flat_map(|seq| batch_a(seq).dirty)
        .collect();
    same(
        dirty.iter().map(|d| d.range.clone()).collect::<Vec<_>>(),
        want,
        "rollups: dirty lists the stored batches' ranges oldest first (duplicates add none)",
    );
    same(
        ok(store.dirty(2).await, "rollups: dirty limit").len(),
        2,
        "rollups: dirty honours its limit",
    );

    // First recomputation: minute buckets 0..=10 of CNC1 (10 is outside the cleared range),
    // the meter, the sibling, CNC2, the other enterprise, and hour buckets of CNC1.
    let mut states: Vec<StateBucket> = (0..=10)
        .map(|k| {
            if k < 7 {
                sb(CNC1, Minute, T0 + k * MIN, 60_000, 0)
            } else {
                sb(CNC1, Minute, T0 + k * MIN, 0, 60_000)
            }
        })
        .collect();
    states.push(sb(SIBLING, Minute, T0, 30_000, 0));
    states.push(sb(OTHER, Minute, T0, 60_000, 0));
    states.push(sb(CNC1, Hour, T0, 2_000_000, 400_000));
    let mut counters: Vec<CounterBucket> = (0..=5)
        .map(|j| {
            cb(
                CNC1,
                "produced",
                Minute,
                T0 + j * 2 * MIN,
                4.0,
                T0 + j * 2 * MIN,
            )
        })
        .collect();
    counters.push(cb(
        METER,
        "electricity",
        Minute,
        T0 + 5 * MIN,
        10.25,
        T0 + 5 * MIN,
    ));
    counters.push(cb(
        OTHER,
        "produced",
        Minute,
        T0 + 3 * MIN,
        3.0,
        T0 + 3 * MIN + 30 * SEC,
    ));
    counters.push(cb(SIBLING, "produced", Minute, T0, 1.0, T0 + 10 * SEC));
    counters.push(cb(CNC1, "produced", Hour, T0, 100.0, T0 + 50 * MIN));
    counters.push(cb(CNC1, "good", Minute, T0 + MIN, 7.0, T0 + MIN));
    let mut activity: Vec<ActivityBucket> = (0..=10)
        .map(|k| ab(CNC1, Minute, T0 + k * MIN, 3, 2))
        .collect();
    activity.push(ab(CNC2, Minute, T0 + 2 * MIN, 1, 1));
    activity.push(ab(OTHER, Minute, T0, 1, 1));
    activity.push(ab(CNC1, Hour, T0, 180, 5));
    let done: Vec<i64> = dirty.iter().take(3).map(|d| d.id).collect();
    let update = RollupUpdate {
        done: done.clone(),
        cleared: vec![(CNC1.to_owned(), Minute, T0, T0 + 10 * MIN)],
        states: states.clone(),
        counters: counters.clone(),
        activity: activity.clone(),
    };
    ok(store.apply_rollups(&update).await, "rollups: apply");
    let left = ok(store.dirty(100).await, "rollups: dirty after apply");
    same(
        left.iter().map(|d| d.id).collect::<Vec<_>>(),
        dirty.iter().skip(3).map(|d| d.id).collect::<Vec<_>>(),
        "rollups: apply_rollups deletes the done dirty ids (and only those)",
    );

    let first = ok(
        store.device_buckets(CNC1, Minute, T0, T0 + HOUR).await,
        "rollups: device_buckets",
    );
    ok(store.apply_rollups(&update).await, "rollups: apply again");
    let second = ok(
        store.device_buckets(CNC1, Minute, T0, T0 + HOUR).await,
        "rollups: device_buckets",
    );
    same(
        (
            sorted_states(first.0.clone()),
            sorted_counters(first.1.clone()),
            sorted_activity(first.2.clone()),
        ),
        (
            sorted_states(second.0),
            sorted_counters(second.1),
            sorted_activity(second.2),
        ),
        "rollups: applying the same update twice gives the same rows (replaced, not added)",
    );
    same(
        sorted_states(first.0),
        sorted_states(
            states
                .iter()
                .filter(|s| s.device == CNC1 && s.gran == Minute)
                .cloned()
                .collect(),
        ),
        "rollups: device_buckets returns the device's own state buckets of the granularity",
    );
    same(
        sorted_counters(first.1),
        sorted_counters(
            counters
                .iter()
                .filter(|c| c.device == CNC1 && c.gran == Minute)
                .cloned()
                .collect(),
        ),
        "rollups: device_buckets returns the device's own counter buckets (not its meter's)",
    );
    same(
        sorted_activity(first.2),
        sorted_activity(
            activity
                .iter()
                .filter(|a| a.device == CNC1 && a.gran == Minute)
                .cloned()
                .collect(),
        ),
        "rollups: device_buckets returns the device's own activity buckets",
    );

    // Second recomputation of CNC1's first ten minutes: only buckets 0..5 keep data; the
    // others in the cleared range must disappear, everything else stays.
    let new_states: Vec<StateBucket> = (0..5)
        .map(|k| sb(CNC1, Minute, T0 + k * MIN, 45_000, 15_000))
        .collect();
    let new_counters: Vec<CounterBucket> = (0..3)
        .map(|j| {
            cb(
                CNC1,
                "produced",
                Minute,
                T0 + j * 2 * MIN,
                8.0,
                T0 + j * 2 * MIN + 30 * SEC,
            )
        })
        .collect();
    let new_activity: Vec<ActivityBucket> = (0..5)
        .map(|k| ab(CNC1, Minute, T0 + k * MIN, 4, 3))
        .collect();
    let update = RollupUpdate {
        done: Vec::new(),
        cleared: vec![(CNC1.to_owned(), Minute, T0, T0 + 10 * MIN)],
        states: new_states.clone(),
        counters: new_counters.clone(),
        activity: new_activity.clone(),
    };
    ok(
        store.apply_rollups(&update).await,
        "rollups: apply a recomputation",
    );
    let in_cleared = |device: &str, gran: Gran, bucket: Ms| {
        device == CNC1 && gran == Minute && (T0..T0 + 10 * MIN).contains(&bucket)
    };
    states.retain(|s| !in_cleared(&s.device, s.gran, s.bucket));
    states.extend(new_states);
    counters.retain(|c| !in_cleared(&c.device, c.gran, c.bucket));
    counters.extend(new_counters);
    activity.retain(|a| !in_cleared(&a.device, a.gran, a.bucket));
    activity.extend(new_activity);

    let got = ok(
        store.device_buckets(CNC1, Minute, T0, T0 + HOUR).await,
        "rollups: device_buckets after recomputation",
    );
    let mine = |d: &str, g: Gran| d == CNC1 && g == Minute;
    same(
        sorted_states(got.0),
        sorted_states(
            states
                .iter()
                .filter(|s| mine(&s.device, s.gran))
                .cloned()
                .collect(),
        ),
        "rollups: cleared state buckets without new data disappear; bucket 10 stays",
    );
    same(
        sorted_counters(got.1),
        sorted_counters(
            counters
                .iter()
                .filter(|c| mine(&c.device, c.gran))
                .cloned()
                .collect(),
        ),
        "rollups: cleared counter buckets (all roles) are replaced",
    );
    same(
        sorted_activity(got.2),
        sorted_activity(
            activity
                .iter()
                .filter(|a| mine(&a.device, a.gran))
                .cloned()
                .collect(),
        ),
        "rollups: cleared activity buckets are replaced",
    );

    // Prefix queries.
    let range = |b: Ms, from: Ms, to: Ms| b >= from && b < to;
    let under = |d: &str, p: &str| d == p || d.starts_with(&format!("{p}/"));
    for (p, gran, from, to) in [
        ("p1/e1", Minute, T0, T0 + HOUR),
        (CNC1, Minute, T0, T0 + HOUR),
        (CNC1, Minute, T0 + MIN, T0 + 3 * MIN),
        ("p1", Minute, T0, T0 + HOUR),
        ("p1/e1", Hour, T0, T0 + HOUR),
        ("p1/e1x", Minute, T0, T0 + HOUR),
        ("p2", Minute, T0, T0 + HOUR),
    ] {
        let what = format!(
            "rollups: buckets of prefix `{p}` ({}) in [{from}, {to})",
            gran.as_str()
        );
        let got = ok(store.state_buckets(&prefix(p), gran, from, to).await, &what);
        same(
            sorted_states(got),
            sorted_states(
                states
                    .iter()
                    .filter(|s| under(&s.device, p) && s.gran == gran && range(s.bucket, from, to))
                    .cloned()
                    .collect(),
            ),
            &format!("{what}: state_buckets"),
        );
        let got = ok(
            store.counter_buckets(&prefix(p), gran, from, to).await,
            &what,
        );
        same(
            sorted_counters(got),
            sorted_counters(
                counters
                    .iter()
                    .filter(|c| under(&c.device, p) && c.gran == gran && range(c.bucket, from, to))
                    .cloned()
                    .collect(),
            ),
            &format!("{what}: counter_buckets"),
        );
        let got = ok(
            store.activity_buckets(&prefix(p), gran, from, to).await,
            &what,
        );
        same(
            sorted_activity(got),
            sorted_activity(
                activity
                    .iter()
                    .filter(|a| under(&a.device, p) && a.gran == gran && range(a.bucket, from, to))
                    .cloned()
                    .collect(),
            ),
            &format!("{what}: activity_buckets"),
        );
    }
    // The filter itself, spelled out: `p1/e1` has CNC1, its sibling and its meter, never the
    // `p1/e1x` enterprise; CNC1's prefix has its meter, never the sibling `cnc-01-b`.
    let devices = |v: Vec<StateBucket>| {
        let mut d: Vec<String> = v.into_iter().map(|s| s.device).collect();
        d.dedup();
        d.sort();
        d.dedup();
        d
    };
    same(
        devices(ok(
            store
                .state_buckets(&prefix("p1/e1"), Minute, T0, T0 + HOUR)
                .await,
            "rollups: prefix p1/e1",
        )),
        vec![CNC1.to_owned(), SIBLING.to_owned()],
        "rollups: prefix `p1/e1` matches its devices and not `p1/e1x/…`",
    );
    let mut meter_devices: Vec<String> = ok(
        store
            .counter_buckets(&prefix(CNC1), Minute, T0, T0 + HOUR)
            .await,
        "rollups: prefix of a machine",
    )
    .into_iter()
    .map(|c| c.device)
    .collect();
    meter_devices.sort();
    meter_devices.dedup();
    same(
        meter_devices,
        vec![CNC1.to_owned(), METER.to_owned()],
        "rollups: a machine's prefix matches its sub-meter, not `cnc-01-b`",
    );

    // last_readings_before: minute buckets only, bucket in [since, before).
    let mut got = ok(
        store
            .last_readings_before(&prefix(CNC1), T0, T0 + 6 * MIN)
            .await,
        "rollups: last_readings_before",
    );
    got.sort();
    same(
        got,
        vec![
            (
                CNC1.to_owned(),
                "produced".to_owned(),
                T0 + 4 * MIN + 30 * SEC,
            ),
            (METER.to_owned(), "electricity".to_owned(), T0 + 5 * MIN),
        ],
        "rollups: last_readings_before gives the latest last_t per (device, role) of minute \
         buckets (the cleared `good` buckets are gone, hour buckets ignored)",
    );
    let mut got = ok(
        store
            .last_readings_before(&prefix("p1/e1"), T0 + 2 * MIN, T0 + 5 * MIN)
            .await,
        "rollups: last_readings_before",
    );
    got.sort();
    same(
        got,
        vec![(
            CNC1.to_owned(),
            "produced".to_owned(),
            T0 + 4 * MIN + 30 * SEC,
        )],
        "rollups: last_readings_before honours since and before (and ignores p1/e1x)",
    );

    Rollups {
        states,
        counters,
        activity,
    }
}

async fn raw_slices<S: Store>(store: &S) {
    // Window [T0+10m, T0+20m): batch 2's data, the readings around it.
    let from = T0 + 10 * MIN;
    let to = T0 + 20 * MIN;
    let slice = ok(store.raw_slice(CNC1, from, to).await, "raw_slice");
    same(
        slice.states,
        vec![
            state(CNC1, from, from + 5 * MIN, "producing"),
            state(CNC1, from + 5 * MIN, to, "setup"),
        ],
        "raw_slice: states overlapping the window, by from (touching ends excluded)",
    );
    let all: Vec<ReadingRow> = [1, 2, 3, 4, 5]
        .into_iter()
        .flat_map(|seq| batch_a(seq).readings)
        .filter(|r| r.device == CNC1)
        .collect();
    let mut want: Vec<ReadingRow> = Vec::new();
    let mut series: Vec<(String, String)> = all
        .iter()
        .map(|r| (r.role.clone(), r.point.clone()))
        .collect();
    series.sort();
    series.dedup();
    for (role, point) in &series {
        let mut s: Vec<&ReadingRow> = all
            .iter()
            .filter(|r| &r.role == role && &r.point == point)
            .collect();
        s.sort_by_key(|r| r.t);
        if let Some(before) = s.iter().rfind(|r| r.t < from) {
            want.push((*before).clone());
        }
        want.extend(
            s.iter()
                .filter(|r| r.t >= from && r.t < to)
                .map(|r| (*r).clone()),
        );
        if let Some(after) = s.iter().find(|r| r.t >= to) {
            want.push((*after).clone());
        }
    }
    same(
        slice.readings,
        want,
        "raw_slice: readings in the window plus the one before and the one at/after the end \
         per (role, point), ordered by (role, point, t)",
    );
    check(
        slice.any_data,
        "raw_slice: any_data with data in the window",
    );
    let mut counts: std::collections::BTreeMap<(Ms, String), i64> = Default::default();
    for b in [1, 2, 3, 4, 5].into_iter().map(batch_a) {
        let samples = b
            .samples
            .iter()
            .filter(|x| x.device == CNC1)
            .map(|x| (x.t, x.point.clone()));
        let links = b
            .links
            .iter()
            .filter(|x| x.device == CNC1)
            .map(|x| (x.t, String::new()));
        for (t, point) in samples.chain(links).filter(|(t, _)| (from..to).contains(t)) {
            *counts.entry((t - t.rem_euclid(60_000), point)).or_default() += 1;
        }
    }
    let want: Vec<MinuteActivity> = counts
        .into_iter()
        .map(|((minute, point), count)| MinuteActivity {
            minute,
            point,
            count,
        })
        .collect();
    check(
        !want.is_empty(),
        "raw_slice: the fixture has samples in the window",
    );
    same(
        slice.activity,
        want,
        "raw_slice: samples and link events per (minute, point), ordered by (minute, point)",
    );

    // Partially overlapping states at both ends.
    let slice = ok(
        store.raw_slice(CNC1, T0 + 12 * MIN, T0 + 22 * MIN).await,
        "raw_slice",
    );
    same(
        slice.states,
        vec![
            state(CNC1, T0 + 10 * MIN, T0 + 15 * MIN, "producing"),
            state(CNC1, T0 + 15 * MIN, T0 + 20 * MIN, "setup"),
            state(CNC1, T0 + 20 * MIN, T0 + 30 * MIN, "producing"),
        ],
        "raw_slice: states reaching into the window from either side",
    );

    // The meter: one series.
    let slice = ok(
        store.raw_slice(METER, T0, T0 + 10 * MIN).await,
        "raw_slice: meter",
    );
    same(
        slice.readings,
        vec![
            batch_a(1)
                .readings
                .into_iter()
                .find(|r| r.device == METER)
                .unwrap_or_else(|| panic!("conformance: raw_slice: test data has a meter reading")),
            batch_a(2)
                .readings
                .into_iter()
                .find(|r| r.device == METER)
                .unwrap_or_else(|| panic!("conformance: raw_slice: test data has a meter reading")),
        ],
        "raw_slice: a meter's readings (rollover kept) and the next one after the window",
    );
    same(slice.states, Vec::new(), "raw_slice: a meter has no states");

    // any_data from samples only, from links only, and none.
    check(
        ok(store.raw_slice(CNC2, T0, T0 + 10 * MIN).await, "raw_slice").any_data,
        "raw_slice: any_data from a sample alone",
    );
    check(
        !ok(
            store.raw_slice(CNC2, T0 + 10 * MIN, T0 + 20 * MIN).await,
            "raw_slice",
        )
        .any_data,
        "raw_slice: no any_data without rows in the window",
    );
    check(
        ok(store.raw_slice(ROBOT, T0, T0 + 10 * MIN).await, "raw_slice").any_data,
        "raw_slice: any_data from a link event alone",
    );
    let empty = ok(
        store.raw_slice(ROBOT, T0 + 10 * MIN, T0 + 20 * MIN).await,
        "raw_slice",
    );
    check(
        !empty.any_data && empty.states.is_empty() && empty.readings.is_empty(),
        "raw_slice: nothing for a window without data",
    );
    // A window with no reading inside still gets the neighbours (the counter's base).
    let gap = ok(
        store
            .raw_slice(CNC1, T0 + 9 * MIN, T0 + 9 * MIN + 30 * SEC)
            .await,
        "raw_slice",
    );
    same(
        gap.readings
            .iter()
            .map(|r| (r.role.as_str(), r.t))
            .collect::<Vec<_>>(),
        vec![
            ("good", T0 + MIN),
            ("good", T0 + 9 * MIN),
            ("produced", T0 + 8 * MIN),
            ("produced", T0 + 10 * MIN),
        ],
        "raw_slice: neighbours of an empty window (a reading at `from` is inside)",
    );
}

async fn lease<S: Store>(store: &S) {
    let l = "lease";
    check(
        ok(store.lease("rollup", "gw-a", 1_000, 2_000).await, l),
        "lease: a free lease is taken",
    );
    check(
        !ok(store.lease("rollup", "gw-b", 1_500, 2_500).await, l),
        "lease: a lease held by another is refused",
    );
    check(
        ok(store.lease("rollup", "gw-a", 1_500, 3_000).await, l),
        "lease: the holder renews",
    );
    check(
        !ok(store.lease("rollup", "gw-b", 2_999, 4_000).await, l),
        "lease: the renewal extended the lease",
    );
    check(
        ok(store.lease("other", "gw-b", 2_999, 4_000).await, l),
        "lease: leases of other names are independent",
    );
    check(
        ok(store.lease("rollup", "gw-b", 3_000, 5_000).await, l),
        "lease: an expired lease (until <= now) is taken over",
    );
    check(
        !ok(store.lease("rollup", "gw-a", 3_100, 6_000).await, l),
        "lease: the previous holder is refused after a takeover",
    );
}

fn entity_doc(name: &str, kind: &str) -> serde_json::Value {
    json!({"name": name, "kind": kind, "control": "cnc", "key_process": "machining",
           "products": [{"id": "shaft-a", "ideal_cycle_s": 1.0}]})
}

async fn last_audit<S: Store>(store: &S, check_name: &str) -> Vec<AuditEntry> {
    ok(
        store
            .audit(&AuditFilter {
                kind_prefix: None,
                item: None,
                since: None,
                limit: 1_000,
            })
            .await,
        check_name,
    )
}

async fn registry<S: Store>(store: &S) {
    let item = RegistryItem {
        kind: "entity".to_owned(),
        id: CNC1.to_owned(),
        doc: entity_doc("CNC 01", "cnc"),
        updated_at: T0 + 10 * SEC,
        updated_by: "alice".to_owned(),
    };
    let audits = last_audit(store, "registry: audit").await.len();
    same(
        ok(store.registry_put(&item).await, "registry: put"),
        None,
        "registry: a new item has no previous document",
    );
    same(
        ok(store.registry_get("entity", CNC1).await, "registry: get"),
        Some(item.clone()),
        "registry: get returns the item",
    );
    let log = last_audit(store, "registry: audit").await;
    same(
        log.len(),
        audits + 1,
        "registry: put writes one audit entry",
    );
    same(
        (
            log[0].at,
            log[0].actor.as_str(),
            log[0].kind.as_str(),
            log[0].item.as_str(),
            log[0].before.clone(),
            log[0].after.clone(),
        ),
        (
            item.updated_at,
            "alice",
            "registry.entity",
            CNC1,
            serde_json::Value::Null,
            item.doc.clone(),
        ),
        "registry: the audit entry of a new item (before null, after the doc)",
    );

    // Unchanged: nothing written, the previous document returned.
    let mut again = item.clone();
    again.updated_at = T0 + 20 * SEC;
    again.updated_by = "bob".to_owned();
    same(
        ok(store.registry_put(&again).await, "registry: put unchanged"),
        Some(item.doc.clone()),
        "registry: an unchanged put returns the document",
    );
    same(
        last_audit(store, "registry: audit").await.len(),
        audits + 1,
        "registry: an unchanged put writes no audit entry",
    );
    same(
        ok(store.registry_get("entity", CNC1).await, "registry: get"),
        Some(item.clone()),
        "registry: an unchanged put changes nothing (updated_at/by kept)",
    );

    let mut changed = item.clone();
    changed.doc = entity_doc("CNC 01 (rebuilt)", "cnc");
    changed.updated_at = T0 + 30 * SEC;
    changed.updated_by = "bob".to_owned();
    same(
        ok(store.registry_put(&changed).await, "registry: put changed"),
        Some(item.doc.clone()),
        "registry: a replacing put returns the previous document",
    );
    let log = last_audit(store, "registry: audit").await;
    same(
        (
            log[0].actor.as_str(),
            log[0].before.clone(),
            log[0].after.clone(),
        ),
        ("bob", item.doc.clone(), changed.doc.clone()),
        "registry: the audit entry of a change has before and after",
    );

    let agent_item = RegistryItem {
        kind: "agent".to_owned(),
        id: A.to_owned(),
        doc: json!({"public_key": "MCowBQYDK2VwAyEA", "entities": ["p1/e1/w1"]}),
        updated_at: T0 + 40 * SEC,
        updated_by: "alice".to_owned(),
    };
    ok(store.registry_put(&agent_item).await, "registry: put agent");
    let second = RegistryItem {
        kind: "entity".to_owned(),
        id: CNC2.to_owned(),
        doc: entity_doc("CNC 02", "cnc"),
        updated_at: T0 + 50 * SEC,
        updated_by: "alice".to_owned(),
    };
    ok(store.registry_put(&second).await, "registry: put second");
    let mut list = ok(store.registry_list("entity").await, "registry: list");
    list.sort_by(|x, y| x.id.cmp(&y.id));
    same(
        list,
        vec![changed.clone(), second.clone()],
        "registry: list returns the items of one kind",
    );
    same(
        ok(store.registry_list("agent").await, "registry: list agents"),
        vec![agent_item],
        "registry: kinds are separate",
    );

    let before = last_audit(store, "registry: audit").await.len();
    same(
        ok(
            store
                .registry_delete("entity", CNC2, "carol", T0 + 60 * SEC)
                .await,
            "registry: delete",
        ),
        Some(second.doc.clone()),
        "registry: delete returns the deleted document",
    );
    let log = last_audit(store, "registry: audit").await;
    same(
        log.len(),
        before + 1,
        "registry: delete writes one audit entry",
    );
    same(
        (
            log[0].at,
            log[0].actor.as_str(),
            log[0].kind.as_str(),
            log[0].item.as_str(),
            log[0].before.clone(),
            log[0].after.clone(),
        ),
        (
            T0 + 60 * SEC,
            "carol",
            "registry.entity",
            CNC2,
            second.doc.clone(),
            serde_json::Value::Null,
        ),
        "registry: the audit entry of a delete (after null)",
    );
    same(
        ok(
            store.registry_get("entity", CNC2).await,
            "registry: get deleted",
        ),
        None,
        "registry: a deleted item is gone",
    );
    same(
        ok(
            store
                .registry_delete("entity", CNC2, "carol", T0 + 70 * SEC)
                .await,
            "registry: delete again",
        ),
        None,
        "registry: deleting a missing item returns None",
    );
    same(
        last_audit(store, "registry: audit").await.len(),
        before + 1,
        "registry: deleting a missing item writes no audit entry",
    );
}

fn inputs_record(entity: &str, from: Ms, to: Ms, at: Ms, value_added: f64) -> InputsRecord {
    InputsRecord {
        entity: entity.to_owned(),
        from,
        to,
        version: 0,
        doc: json!({"value_added_cny": value_added, "employees_avg": 420}),
        at,
        actor: "finance".to_owned(),
        source: "csv:inputs-2026.csv".to_owned(),
    }
}

async fn inputs<S: Store>(store: &S) {
    // 2026-01-01T00:00Z and 2027-01-01T00:00Z, and the first half of 2027.
    let y0: Ms = 1_767_225_600_000;
    let y1: Ms = 1_798_761_600_000;
    let y1h: Ms = y1 + 181 * 24 * HOUR;
    let e = "p1/e1";
    let r1 = inputs_record(e, y0, y1, T0 + HOUR, 50_000_000.0);
    let r2 = inputs_record(e, y0, y1, T0 + 2 * HOUR, 51_000_000.0);
    let r3 = inputs_record(e, y1, y1h, T0 + 3 * HOUR, 26_000_000.0);
    let rx = inputs_record("p1/e1x", y0, y1, T0 + 4 * HOUR, 9_000_000.0);
    same(
        ok(store.inputs_put(&r1).await, "inputs: put"),
        1,
        "inputs: the first version is 1",
    );
    same(
        ok(store.inputs_put(&r2).await, "inputs: put"),
        2,
        "inputs: the next version is 2",
    );
    same(
        ok(store.inputs_put(&r3).await, "inputs: put"),
        1,
        "inputs: versions count per (entity, from, to)",
    );
    same(
        ok(store.inputs_put(&rx).await, "inputs: put"),
        1,
        "inputs: versions count per entity",
    );
    let v = |r: &InputsRecord, version: i64| InputsRecord {
        version,
        ..r.clone()
    };

    let log = ok(
        store
            .audit(&AuditFilter {
                kind_prefix: Some("inputs".to_owned()),
                item: Some(format!("{e}@{y0}..{y1}")),
                since: None,
                limit: 10,
            })
            .await,
        "inputs: audit",
    );
    same(
        log.iter()
            .map(|a| {
                (
                    a.at,
                    a.actor.as_str(),
                    a.kind.as_str(),
                    a.before.clone(),
                    a.after.clone(),
                )
            })
            .collect::<Vec<_>>(),
        vec![
            (r2.at, "finance", "inputs", r1.doc.clone(), r2.doc.clone()),
            (
                r1.at,
                "finance",
                "inputs",
                serde_json::Value::Null,
                r1.doc.clone(),
            ),
        ],
        "inputs: each version is audited (item `<entity>@<from>..<to>`, before = previous version)",
    );

    let mut current = ok(
        store.inputs_current(&prefix(e), y0, y1h).await,
        "inputs: current",
    );
    current.sort_by_key(|r| r.from);
    same(
        current,
        vec![v(&r2, 2), v(&r3, 1)],
        "inputs: current gives the highest version per period of the prefix (not p1/e1x)",
    );
    same(
        ok(
            store.inputs_current(&prefix(e), y1, y1 + HOUR).await,
            "inputs: current",
        ),
        vec![v(&r3, 1)],
        "inputs: current gives only periods overlapping [from, to)",
    );
    same(
        ok(
            store.inputs_current(&prefix("p1/e1/w1"), y0, y1h).await,
            "inputs: current",
        ),
        Vec::new(),
        "inputs: an entity above the prefix does not match it",
    );
    same(
        ok(store.inputs_history(e).await, "inputs: history"),
        vec![v(&r3, 1), v(&r2, 2), v(&r1, 1)],
        "inputs: history lists every version, newest first",
    );
}

async fn tokens<S: Store>(store: &S) {
    let admin = TokenRow {
        name: "ops-admin".to_owned(),
        role: "admin".to_owned(),
        hash: hash(0xAA, 1, 0),
        created_at: T0 + 5 * HOUR,
        created_by: "setup".to_owned(),
        revoked_at: None,
    };
    let viewer = TokenRow {
        name: "dashboard".to_owned(),
        role: "viewer".to_owned(),
        hash: hash(0xBB, 2, 0),
        created_at: T0 + 5 * HOUR + SEC,
        created_by: "ops-admin".to_owned(),
        revoked_at: None,
    };
    ok(store.token_add(&admin).await, "tokens: add");
    ok(store.token_add(&viewer).await, "tokens: add");
    let log = ok(
        store
            .audit(&AuditFilter {
                kind_prefix: Some("token".to_owned()),
                item: None,
                since: None,
                limit: 10,
            })
            .await,
        "tokens: audit",
    );
    same(log.len(), 2, "tokens: each add is audited");
    let entry = &log[1];
    same(
        (
            entry.at,
            entry.actor.as_str(),
            entry.kind.as_str(),
            entry.item.as_str(),
            entry.before.clone(),
            entry.after.get("name").cloned(),
            entry.after.get("role").cloned(),
            entry.after.get("hash").cloned(),
        ),
        (
            admin.created_at,
            "setup",
            "token",
            "ops-admin",
            serde_json::Value::Null,
            Some(json!("ops-admin")),
            Some(json!("admin")),
            Some(json!(admin.hash)),
        ),
        "tokens: the audit entry of an add names the token's name, role and hash",
    );

    let mut dup = admin.clone();
    dup.hash = hash(0xCC, 3, 0);
    check(
        store.token_add(&dup).await.is_err(),
        "tokens: adding a second token with an existing name fails",
    );
    same(
        ok(
            store
                .audit(&AuditFilter {
                    kind_prefix: Some("token".to_owned()),
                    item: None,
                    since: None,
                    limit: 10,
                })
                .await,
            "tokens: audit",
        )
        .len(),
        2,
        "tokens: a failed add writes no audit entry",
    );

    same(
        ok(store.token_by_hash(&admin.hash).await, "tokens: by hash"),
        Some(admin.clone()),
        "tokens: token_by_hash finds the token",
    );
    same(
        ok(
            store.token_by_hash(&hash(0xDD, 4, 0)).await,
            "tokens: by hash",
        ),
        None,
        "tokens: an unknown hash finds nothing",
    );
    let mut all = ok(store.tokens().await, "tokens: list");
    all.sort_by(|x, y| x.name.cmp(&y.name));
    same(all, vec![viewer.clone(), admin.clone()], "tokens: list");

    let at = T0 + 6 * HOUR;
    check(
        ok(
            store.token_revoke("dashboard", "ops-admin", at).await,
            "tokens: revoke",
        ),
        "tokens: revoking an active token returns true",
    );
    same(
        ok(store.token_by_hash(&viewer.hash).await, "tokens: by hash").and_then(|t| t.revoked_at),
        Some(at),
        "tokens: a revoked token keeps its row with revoked_at",
    );
    let log = ok(
        store
            .audit(&AuditFilter {
                kind_prefix: Some("token".to_owned()),
                item: Some("dashboard".to_owned()),
                since: None,
                limit: 10,
            })
            .await,
        "tokens: audit",
    );
    same(log.len(), 2, "tokens: the revocation is audited");
    same(
        (
            log[0].at,
            log[0].actor.as_str(),
            log[0].kind.as_str(),
            log[0].after.get("hash").cloned(),
        ),
        (at, "ops-admin", "token", Some(json!(viewer.hash))),
        "tokens: the revocation's audit entry names the hash",
    );
    check(
        !ok(
            store.token_revoke("dashboard", "ops-admin", at + 1).await,
            "tokens: revoke again",
        ),
        "tokens: revoking a revoked token returns false",
    );
    check(
        !ok(
            store.token_revoke("nobody", "ops-admin", at).await,
            "tokens: revoke unknown",
        ),
        "tokens: revoking an unknown token returns false",
    );
    same(
        ok(
            store
                .audit(&AuditFilter {
                    kind_prefix: Some("token".to_owned()),
                    item: None,
                    since: None,
                    limit: 10,
                })
                .await,
            "tokens: audit",
        )
        .len(),
        3,
        "tokens: a refused revocation writes no audit entry",
    );
}

async fn audit_filters<S: Store>(store: &S) {
    let all = last_audit(store, "audit: all").await;
    check(
        all.windows(2).all(|w| w[0].id > w[1].id),
        "audit: newest first (ids decrease)",
    );
    // registry: CNC1 added and changed, the agent, CNC2 added and deleted; inputs: 4;
    // tokens: 2 added, 1 revoked.
    same(all.len(), 12, "audit: every change wrote exactly one entry");
    let registry = ok(
        store
            .audit(&AuditFilter {
                kind_prefix: Some("registry.".to_owned()),
                item: None,
                since: None,
                limit: 100,
            })
            .await,
        "audit: by kind prefix",
    );
    same(
        registry.len(),
        5,
        "audit: kind_prefix `registry.` selects the registry entries",
    );
    check(
        registry.iter().all(|a| a.kind.starts_with("registry.")),
        "audit: kind_prefix selects only matching kinds",
    );
    let since = ok(
        store
            .audit(&AuditFilter {
                kind_prefix: None,
                item: None,
                since: Some(T0 + 5 * HOUR),
                limit: 100,
            })
            .await,
        "audit: since",
    );
    same(
        since.len(),
        3,
        "audit: since keeps entries at or after it (the token entries)",
    );
    same(
        ok(
            store
                .audit(&AuditFilter {
                    kind_prefix: None,
                    item: Some(CNC1.to_owned()),
                    since: None,
                    limit: 2,
                })
                .await,
            "audit: item + limit",
        )
        .iter()
        .map(|a| a.id)
        .collect::<Vec<_>>(),
        all.iter()
            .filter(|a| a.item == CNC1)
            .take(2)
            .map(|a| a.id)
            .collect::<Vec<_>>(),
        "audit: item and limit keep the newest entries of that item",
    );
}

async fn purge<S: Store>(store: &S, stored: &[NewBatch], rollups: &Rollups) {
    let cut = T0 + 10 * MIN;
    let count = |n: usize| n as u64;
    let samples = stored
        .iter()
        .flat_map(|b| &b.samples)
        .filter(|s| s.t < cut)
        .count();
    same(
        ok(store.purge(Retained::Samples, cut).await, "purge: samples"),
        count(samples),
        "purge: samples deleted by t < before, counted",
    );
    check(
        ok(
            store
                .samples(CNC1, "spindle_load", T0, T0 + HOUR, 1_000)
                .await,
            "purge: samples",
        )
        .iter()
        .all(|s| s.t >= cut),
        "purge: no sample older than the cut is left",
    );
    same(
        ok(
            store
                .samples(CNC1, "spindle_load", T0, T0 + HOUR, 1_000)
                .await,
            "purge: samples",
        )
        .len(),
        40,
        "purge: newer samples are kept",
    );
    let states = stored
        .iter()
        .flat_map(|b| &b.states)
        .filter(|s| s.to < cut)
        .count();
    same(
        ok(store.purge(Retained::States, cut).await, "purge: states"),
        count(states),
        "purge: states deleted by to < before",
    );
    same(
        ok(store.raw_slice(CNC1, T0, cut).await, "purge: states").states,
        vec![state(CNC1, T0 + 7 * MIN, cut, "idle")],
        "purge: a state ending at the cut is kept",
    );
    let readings = stored
        .iter()
        .flat_map(|b| &b.readings)
        .filter(|r| r.t < cut)
        .count();
    same(
        ok(
            store.purge(Retained::Readings, cut).await,
            "purge: readings",
        ),
        count(readings),
        "purge: readings deleted by t < before",
    );
    let links = stored
        .iter()
        .flat_map(|b| &b.links)
        .filter(|l| l.t < cut)
        .count();
    same(
        ok(store.purge(Retained::Links, cut).await, "purge: links"),
        count(links),
        "purge: links deleted by t < before",
    );
    check(
        !ok(store.raw_slice(ROBOT, T0, cut).await, "purge: links").any_data,
        "purge: a purged link is gone",
    );
    same(
        ok(
            store.purge(Retained::Quarantine, T0 + HOUR).await,
            "purge: quarantine",
        ),
        2,
        "purge: quarantine deleted by received < before",
    );
    same(
        ok(store.list_quarantine(None, 10).await, "purge: quarantine").len(),
        1,
        "purge: newer quarantine rows are kept",
    );

    let batches = stored.iter().filter(|b| b.to < T0 + 20 * MIN).count();
    same(
        ok(
            store.purge(Retained::Batches, T0 + 20 * MIN).await,
            "purge: batches",
        ),
        count(batches),
        "purge: batches deleted by to < before",
    );
    same(
        ok(store.batches(A, 1, 5, false).await, "purge: batches")
            .iter()
            .map(|b| b.seq)
            .collect::<Vec<_>>(),
        vec![2, 3, 4, 5],
        "purge: batch 1 (to = T0+10m) is gone, batch 2 (to = the cut) stays",
    );
    let heads = ok(store.agent_heads().await, "purge: agent_heads");
    let a = heads.iter().find(|h| h.agent == A);
    same(
        a.map(|h| (h.batches, h.first_seq, h.last_seq, h.missing)),
        Some((4, 2, 5, 0)),
        "purge: agent heads follow the purged batches",
    );

    let mcut = T0 + 3 * MIN;
    let minute_rows = rollups
        .states
        .iter()
        .filter(|s| s.gran == Gran::Minute && s.bucket < mcut)
        .count()
        + rollups
            .counters
            .iter()
            .filter(|c| c.gran == Gran::Minute && c.bucket < mcut)
            .count()
        + rollups
            .activity
            .iter()
            .filter(|a| a.gran == Gran::Minute && a.bucket < mcut)
            .count();
    same(
        ok(
            store.purge(Retained::Rollups(Gran::Minute), mcut).await,
            "purge: rollups",
        ),
        count(minute_rows),
        "purge: minute roll-ups deleted by bucket < before in all three tables",
    );
    let (st, co, ac) = ok(
        store
            .device_buckets(CNC1, Gran::Minute, T0, T0 + HOUR)
            .await,
        "purge: rollups",
    );
    check(
        st.iter().all(|s| s.bucket >= mcut)
            && co.iter().all(|c| c.bucket >= mcut)
            && ac.iter().all(|a| a.bucket >= mcut),
        "purge: no minute bucket before the cut is left",
    );
    check(
        !st.is_empty() && !ac.is_empty(),
        "purge: minute buckets after the cut are kept",
    );
    same(
        ok(
            store
                .state_buckets(&prefix(CNC1), Gran::Hour, T0, T0 + HOUR)
                .await,
            "purge: rollups",
        )
        .len(),
        1,
        "purge: a minute purge keeps the hour buckets",
    );

    for (table, before, what) in [
        (Retained::Samples, cut, "samples"),
        (Retained::States, cut, "states"),
        (Retained::Readings, cut, "readings"),
        (Retained::Links, cut, "links"),
        (Retained::Quarantine, T0 + HOUR, "quarantine"),
        (Retained::Batches, T0 + 20 * MIN, "batches"),
        (Retained::Rollups(Gran::Minute), mcut, "minute roll-ups"),
    ] {
        same(
            ok(store.purge(table, before).await, "purge: again"),
            0,
            &format!("purge: purging {what} again deletes nothing"),
        );
    }
}
