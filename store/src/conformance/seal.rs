//! Conformance of the tamper-evidence methods: [`Store::batch_rows`] (the decoded rows of
//! batches, with the batch each came from) and the seals ([`Store::seal_put`],
//! [`Store::seals`], [`Store::seal_head`], [`Store::seal_state`]). Runs on its own agent,
//! devices and entities (`p9/…`), so it does not disturb the other sections' data.

use super::{HOUR, MIN, T0, ZERO, check, ok, same};
use crate::{
    BatchRef, DeviceFilter, DirtyRange, LinkRow, NewBatch, Outcome, ReadingRow, SampleRow,
    SealFilter, SealRow, StateRow, Store,
};
use serde_json::json;

const AGENT: &str = "seal-agent";
const DEV: &str = "p9/e1/w1/l1/m1";
/// Sorts between `DEV` and `DEV/…`: never one of `DEV`'s rows.
const SIBLING: &str = "p9/e1/w1/l1/m1-b";

fn h(seq: i64) -> String {
    format!("5e{seq:062x}")
}

fn sample(device: &str, point: &str, t: i64) -> SampleRow {
    SampleRow {
        device: device.to_owned(),
        point: point.to_owned(),
        t,
        num: Some(1.5),
        is_bool: false,
        text: None,
        err: None,
    }
}

/// Batch `seq` of the section's agent: every kind of row of `DEV` and one sample of `SIBLING`.
fn batch(seq: i64) -> NewBatch {
    let from = T0 + (seq - 1) * 10 * MIN;
    let to = from + 10 * MIN;
    let mut flag = sample(DEV, "door", from + MIN);
    flag.num = Some(1.0);
    flag.is_bool = true;
    let mut text = sample(DEV, "program", from + MIN);
    text.num = None;
    text.text = Some("O1000 ✓".to_owned());
    let mut failed = sample(DEV, "speed", from + 2 * MIN);
    failed.num = None;
    failed.err = Some("exception 02".to_owned());
    NewBatch {
        agent: AGENT.to_owned(),
        seq,
        body_hash: h(seq),
        prev: if seq == 1 {
            ZERO.to_owned()
        } else {
            h(seq - 1)
        },
        sealed: to,
        from,
        to,
        received: to + 1_000,
        payload: format!("{{\"body\":{{\"seq\":{seq}}},\"sig\":\"x\"}}").into_bytes(),
        samples: vec![
            sample(DEV, "speed", from + MIN),
            flag,
            text,
            failed,
            sample(SIBLING, "speed", from + MIN),
        ],
        states: vec![StateRow {
            device: DEV.to_owned(),
            from: from - HOUR,
            to,
            state: "producing".to_owned(),
        }],
        readings: vec![ReadingRow {
            device: DEV.to_owned(),
            role: "electricity".to_owned(),
            point: "energy".to_owned(),
            t: to,
            v: 100.0 + seq as f64,
            width_bits: None,
            rollover: Some(1e6),
        }],
        links: vec![LinkRow {
            device: DEV.to_owned(),
            t: from + 3 * MIN,
            up: seq % 2 == 0,
            detail: "reconnected".to_owned(),
        }],
        dirty: vec![DirtyRange {
            device: DEV.to_owned(),
            from: from - HOUR,
            to,
        }],
    }
}

fn seal(signer: &str, seq: i64, entity: &str, day: i64, version: i64) -> SealRow {
    let from = T0 + day * 24 * HOUR;
    SealRow {
        hash: format!("{:02x}{seq:02x}{version:02x}{day:058x}", signer.len()),
        signer: signer.to_owned(),
        seq,
        prev: ZERO.to_owned(),
        entity: entity.to_owned(),
        from,
        to: from + 24 * HOUR,
        version,
        supersedes: None,
        superseded_by: None,
        sealed_at: from + 25 * HOUR,
        doc: format!("{{\"entity\":\"{entity}\",\"note\":\"封存 ✓\"}}\n"),
        sig: "c2ln".to_owned(),
        manifest: format!("{{\"agents\": [ ], \"day\": {day}}}"),
        evidence: format!("{{\n  \"entity\": \"{entity}\"\n}}"),
    }
}

fn bare(mut s: SealRow) -> SealRow {
    s.manifest.clear();
    s.evidence.clear();
    s
}

pub(super) async fn run<S: Store>(store: &S) {
    rows(store).await;
    seals(store).await;
    state(store).await;
}

async fn rows<S: Store>(store: &S) {
    let batches = [batch(1), batch(2)];
    let outcomes = ok(store.ingest(&batches).await, "seal: ingest");
    check(
        outcomes.iter().all(|o| matches!(o, Outcome::Stored { .. })),
        "seal: the section's batches are stored",
    );
    let all = ok(
        store.batch_rows(DEV, T0 - HOUR, T0 + HOUR).await,
        "batch_rows",
    );
    let of = |seq: i64| BatchRef {
        agent: AGENT.to_owned(),
        seq,
    };
    for b in &batches {
        let mut samples: Vec<SampleRow> = all
            .samples
            .iter()
            .filter(|(r, _)| *r == of(b.seq))
            .map(|(_, s)| s.clone())
            .collect();
        samples.sort_by(|a, b| (a.t, &a.point).cmp(&(b.t, &b.point)));
        let mut want: Vec<SampleRow> = b
            .samples
            .iter()
            .filter(|s| s.device == DEV)
            .cloned()
            .collect();
        want.sort_by(|a, b| (a.t, &a.point).cmp(&(b.t, &b.point)));
        same(
            samples,
            want,
            "batch_rows: every sample of the device, value, flag, text and error as stored, \
             with its batch (never a sibling device's)",
        );
        let states: Vec<&StateRow> = all
            .states
            .iter()
            .filter(|(r, _)| *r == of(b.seq))
            .map(|(_, s)| s)
            .collect();
        same(
            states,
            b.states.iter().collect(),
            "batch_rows: states with their batch",
        );
        let readings: Vec<&ReadingRow> = all
            .readings
            .iter()
            .filter(|(r, _)| *r == of(b.seq))
            .map(|(_, s)| s)
            .collect();
        same(
            readings,
            b.readings.iter().collect(),
            "batch_rows: readings (width, rollover) with their batch",
        );
        let links: Vec<&LinkRow> = all
            .links
            .iter()
            .filter(|(r, _)| *r == of(b.seq))
            .map(|(_, s)| s)
            .collect();
        same(
            links,
            b.links.iter().collect(),
            "batch_rows: links with their batch",
        );
    }
    same(
        all.samples.len() + all.states.len() + all.readings.len() + all.links.len(),
        2 * (4 + 1 + 1 + 1),
        "batch_rows: nothing else",
    );
    // Bounds are inclusive: states by their end, the rest by their time.
    let b2 = &batches[1];
    let edge = ok(
        store.batch_rows(DEV, b2.to, b2.to).await,
        "batch_rows: one instant",
    );
    same(
        (
            edge.samples.len(),
            edge.states.len(),
            edge.readings.len(),
            edge.links.len(),
        ),
        (0, 1, 1, 0),
        "batch_rows: [from, to] includes rows exactly at both ends (a state by its end)",
    );
    let none = ok(
        store
            .batch_rows("p9/e1/w1/l1/none", T0 - HOUR, T0 + HOUR)
            .await,
        "batch_rows: unknown device",
    );
    check(
        none.samples.is_empty()
            && none.states.is_empty()
            && none.readings.is_empty()
            && none.links.is_empty(),
        "batch_rows: an unknown device has no rows",
    );
}

async fn seals<S: Store>(store: &S) {
    const K1: &str = "ed25519:key-one";
    const K2: &str = "ed25519:key-two-longer";
    same(
        ok(store.seal_head(K1).await, "seal_head: none"),
        None,
        "seal_head: no seal yet",
    );
    let v1 = seal(K1, 1, "p9/e1", 0, 1);
    ok(store.seal_put(&v1).await, "seal_put: v1");
    let mut w1 = seal(K1, 2, "p9/e1/w1", 0, 1);
    w1.prev = v1.hash.clone();
    ok(store.seal_put(&w1).await, "seal_put: workshop");
    let mut other = seal(K2, 1, "p9/e1x", 0, 1);
    other.prev = ZERO.to_owned();
    ok(store.seal_put(&other).await, "seal_put: another signer");
    same(
        ok(store.seal_head(K1).await, "seal_head"),
        Some(bare(w1.clone())),
        "seal_head: the signer's highest seq, without bodies",
    );

    // A second seal under a taken (signer, seq), or of a taken (entity, period, version): an
    // error that writes nothing.
    let mut dup = seal(K1, 2, "p9/e1", 1, 1);
    dup.hash = "d1".repeat(32);
    check(
        store.seal_put(&dup).await.is_err(),
        "seal_put: a taken (signer, seq) is refused",
    );
    let mut dup = seal(K1, 3, "p9/e1", 0, 1);
    dup.hash = "d2".repeat(32);
    check(
        store.seal_put(&dup).await.is_err(),
        "seal_put: a taken (entity, from, to, version) is refused",
    );
    // Superseding a seal that is not stored: refused, and the new row is not kept.
    let mut orphan = seal(K1, 3, "p9/e1", 0, 2);
    orphan.supersedes = Some("ab".repeat(32));
    check(
        store.seal_put(&orphan).await.is_err(),
        "seal_put: superseding an unknown seal is refused",
    );
    same(
        ok(store.seal_head(K1).await, "seal_head after refusals").map(|s| s.seq),
        Some(2),
        "seal_put: a refused seal writes nothing",
    );

    // Version 2 supersedes version 1 in the same transaction.
    let mut v2 = seal(K1, 3, "p9/e1", 0, 2);
    v2.prev = w1.hash.clone();
    v2.supersedes = Some(v1.hash.clone());
    ok(store.seal_put(&v2).await, "seal_put: v2");
    let mut v3 = seal(K1, 4, "p9/e1", 0, 3);
    v3.supersedes = Some(v1.hash.clone());
    check(
        store.seal_put(&v3).await.is_err(),
        "seal_put: a version already superseded cannot be superseded again",
    );

    let all = ok(
        store
            .seals(&SealFilter {
                with_bodies: true,
                ..SealFilter::default()
            })
            .await,
        "seals: all",
    );
    let mut v1_now = v1.clone();
    v1_now.superseded_by = Some(v2.hash.clone());
    same(
        all.clone(),
        vec![v1_now.clone(), v2.clone(), w1.clone(), other.clone()],
        "seals: every seal, bodies byte for byte, ordered by entity, period, version; the \
         superseded version names its successor",
    );
    let latest = ok(
        store
            .seals(&SealFilter {
                latest_only: true,
                ..SealFilter::default()
            })
            .await,
        "seals: latest",
    );
    same(
        latest,
        vec![bare(v2.clone()), bare(w1.clone()), bare(other.clone())],
        "seals: latest only, without bodies",
    );
    let under = ok(
        store
            .seals(&SealFilter {
                entity: Some(DeviceFilter {
                    prefix: "p9/e1".to_owned(),
                }),
                ..SealFilter::default()
            })
            .await,
        "seals: entity",
    );
    same(
        under.iter().map(|s| s.hash.clone()).collect::<Vec<_>>(),
        vec![v1.hash.clone(), v2.hash.clone(), w1.hash.clone()],
        "seals: an entity and the entities below it (p9/e1x is not below p9/e1)",
    );
    let day = 24 * HOUR;
    for (from, to, n, what) in [
        (Some(T0), Some(T0 + day), 4, "the sealed day"),
        (Some(T0 + day), None, 0, "from the day's end on"),
        (None, Some(T0), 0, "up to the day's start"),
        (
            Some(T0 + day - 1),
            Some(T0 + 2 * day),
            4,
            "the day's last ms",
        ),
    ] {
        same(
            ok(
                store
                    .seals(&SealFilter {
                        from,
                        to,
                        ..SealFilter::default()
                    })
                    .await,
                "seals: period",
            )
            .len(),
            n,
            &format!("seals: periods overlap [from, to): {what}"),
        );
    }
    same(
        ok(
            store
                .seals(&SealFilter {
                    signer: Some(K2.to_owned()),
                    ..SealFilter::default()
                })
                .await,
            "seals: signer",
        ),
        vec![bare(other)],
        "seals: one signer",
    );
}

async fn state<S: Store>(store: &S) {
    same(
        ok(store.seal_state("sealer").await, "seal_state: none"),
        None,
        "seal_state: nothing stored yet",
    );
    let a = json!({"heads": {"a": [1, 1, 1]}, "pending": [["p9/e1", T0]], "note": "状态"});
    ok(
        store.seal_state_put("sealer", &a, T0).await,
        "seal_state_put",
    );
    same(
        ok(store.seal_state("sealer").await, "seal_state"),
        Some(a),
        "seal_state: the document as put",
    );
    let b = json!({"heads": {}, "pending": []});
    ok(
        store.seal_state_put("sealer", &b, T0 + MIN).await,
        "seal_state_put: replace",
    );
    same(
        ok(store.seal_state("sealer").await, "seal_state: replaced"),
        Some(b),
        "seal_state: a second put replaces the document",
    );
    same(
        ok(store.seal_state("other").await, "seal_state: other name"),
        None,
        "seal_state: documents are per name",
    );
}
