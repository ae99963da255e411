//! Seal documents (canonical bytes, signatures, manifests) and the sealer against a real SQLite
//! store: one seal chain, no seal before a day is due or while its roll-ups are pending, a new
//! version after late data, nothing new when nothing changed.

use super::*;
use crate::model::{Agent, Entity};
use serde_json::json;
use shopfloor_store::{DirtyRange, NewBatch};

const DAY: Ms = 86_400_000;
const HOUR: Ms = 3_600_000;

fn key(n: u8) -> SigningKey {
    SigningKey::from_bytes(&[n; 32])
}

fn doc() -> SealDoc {
    SealDoc {
        schema: SCHEMA.to_owned(),
        signer: batch::public_key_text(&key(1).verifying_key()),
        seq: 2,
        prev: "ab".repeat(32),
        entity: "p1/e1".to_owned(),
        from: 1_788_192_000_000,
        to: 1_788_278_400_000,
        version: 1,
        supersedes: None,
        reason: "closed day".to_owned(),
        sealed_at: 1_788_282_000_000,
        engine_version: "0.1.0".to_owned(),
        engine_data_sha256: "cd".repeat(32),
        coefficient_set: "gbt2589-2020".to_owned(),
        evidence_sha256: "ef".repeat(32),
        manifest_sha256: "01".repeat(32),
        indicators: [
            ("oee".to_owned(), Some(0.625)),
            ("energy_kgce".to_owned(), Some(12.0)),
            ("value_added_cny".to_owned(), None),
        ]
        .into(),
    }
}

#[test]
fn canonical_bytes_are_stable() {
    let d = doc();
    let a = d.canonical().unwrap();
    let text = String::from_utf8(a.clone()).unwrap();
    // Field order of the struct, no whitespace, indicators sorted by id, whole floats with .0,
    // unknown values null.
    let want = format!(
        "{{\"schema\":\"shopfloor.seal/1\",\"signer\":\"{}\",\"seq\":2,\"prev\":\"{}\",\
         \"entity\":\"p1/e1\",\"from\":1788192000000,\"to\":1788278400000,\"version\":1,\
         \"supersedes\":null,\"reason\":\"closed day\",\"sealed_at\":1788282000000,\
         \"engine_version\":\"0.1.0\",\"engine_data_sha256\":\"{}\",\
         \"coefficient_set\":\"gbt2589-2020\",\"evidence_sha256\":\"{}\",\
         \"manifest_sha256\":\"{}\",\"indicators\":{{\"energy_kgce\":12.0,\"oee\":0.625,\
         \"value_added_cny\":null}}}}",
        d.signer,
        "ab".repeat(32),
        "cd".repeat(32),
        "ef".repeat(32),
        "01".repeat(32)
    );
    assert_eq!(text, want);
    // Parsing and encoding again gives the same bytes (what verify relies on: it never
    // re-encodes, but a seal read back is the seal written).
    let back: SealDoc = serde_json::from_slice(&a).unwrap();
    assert_eq!(back, d);
    assert_eq!(back.canonical().unwrap(), a);
    // Unknown fields are refused.
    let extra = text.replacen("{", "{\"extra\":1,", 1);
    assert!(serde_json::from_str::<SealDoc>(&extra).is_err());
    assert_eq!(sha256_hex(b"abc").len(), 64);
    assert_eq!(engine_data_sha256(), engine_data_sha256());
}

#[test]
fn signatures_cover_the_exact_bytes() {
    let bytes = doc().canonical().unwrap();
    let sig = sign(&key(1), &bytes);
    let pk = key(1).verifying_key();
    assert!(signature_ok(&pk, &bytes, &sig));
    let mut altered = bytes.clone();
    let i = altered.len() / 2;
    altered[i] ^= 1;
    assert!(!signature_ok(&pk, &altered, &sig), "an altered document");
    assert!(
        !signature_ok(&key(2).verifying_key(), &bytes, &sig),
        "another key"
    );
    assert!(!signature_ok(&pk, &bytes, "not base64!"));
    assert!(!signature_ok(&pk, &bytes, "AAAA"));
}

#[test]
fn manifests_name_runs_and_blocks() {
    let h = |n: i64| format!("{n:064x}");
    let lines: Vec<(i64, String)> = (1..=70).chain(72..=75).map(|s| (s, h(s))).collect();
    let m = agent_manifest("a1", &lines);
    assert_eq!(m.batches, 74);
    assert_eq!(m.seqs, vec![[1, 70], [72, 75]]);
    assert_eq!(m.blocks.iter().map(|b| b.0).collect::<Vec<_>>(), vec![0, 1]);
    // One changed body hash: the whole digest and its block change, the other block does not.
    let mut changed = lines.clone();
    changed[3].1 = h(999);
    let c = agent_manifest("a1", &changed);
    assert_ne!(c.sha256, m.sha256);
    assert_ne!(c.blocks[0], m.blocks[0]);
    assert_eq!(c.blocks[1], m.blocks[1]);
    assert_eq!(agent_manifest("a1", &lines), m, "deterministic");
}

#[test]
fn spans_cover_every_row_of_a_device() {
    let p = payload(1, batch::ZERO_HASH, T0 + 8 * HOUR, T0 + 9 * HOUR, 3.0);
    let s = spans(&p.0);
    assert_eq!(
        s,
        vec![(M1.to_owned(), T0 + 8 * HOUR - 30 * MINUTE, T0 + 9 * HOUR)]
    );
    assert!(spans(b"{}").is_empty());
}

// --- the sealer on a store ---

const M1: &str = "p1/e1/w1/l1/m1";
/// 2026-09-01T00:00:00+08:00: local midnight in Shanghai.
const T0: Ms = 1_788_192_000_000;

fn tz() -> TimeZone {
    TimeZone::get("Asia/Shanghai").unwrap()
}

fn entity(v: serde_json::Value) -> (String, Entity) {
    let e: Entity = serde_json::from_value(v).unwrap();
    (e.id.clone(), e)
}

fn snapshot() -> Snapshot {
    Snapshot {
        entities: [
            entity(json!({"id": "p1", "kind": "park"})),
            entity(json!({"id": "p1/e1", "kind": "enterprise"})),
            entity(json!({"id": "p1/e1/w1", "kind": "workshop"})),
            entity(json!({"id": "p1/e1/w1/l1", "kind": "line"})),
            entity(
                json!({"id": M1, "kind": "equipment", "equipment_kind": "cnc",
                          "control": "cnc"}),
            ),
        ]
        .into(),
        agents: [(
            "a1".to_owned(),
            serde_json::from_value::<Agent>(json!({
                "id": "a1",
                "public_key": batch::public_key_text(&key(9).verifying_key()),
                "scope": ["p1/e1/w1"]
            }))
            .unwrap(),
        )]
        .into(),
        products: BTreeMap::new(),
        targets: Vec::new(),
    }
}

/// A signed batch of agent a1 over `(from, to]`: the machine producing from 30 minutes before
/// `from` to `to`, and a spindle sample of `value`. Returns the batch as ingest stores it.
fn payload(seq: u64, prev: &str, from: Ms, to: Ms, value: f64) -> (Vec<u8>, NewBatch) {
    let contents: batch::Contents = serde_json::from_value(json!({
        "from": from,
        "to": to,
        "devices": [{"id": M1, "template": "t", "samples": [
            {"point": "spindle", "samples": [{"t": from + MINUTE, "v": value}]}
        ], "states": [{"from": from - 30 * MINUTE, "to": to, "state": "producing"}]}]
    }))
    .unwrap();
    let sealed = batch::seal(contents, "a1", seq, prev, to, &key(9)).unwrap();
    let opened = batch::open(&sealed.payload).unwrap();
    let (samples, states, readings, links) = crate::ingest::decode_stored(&opened.body).unwrap();
    let dirty = spans(&sealed.payload)
        .into_iter()
        .map(|(device, from, to)| DirtyRange {
            device,
            from,
            to: to + 1,
        })
        .collect();
    let b = NewBatch {
        agent: "a1".to_owned(),
        seq: i64::try_from(seq).unwrap(),
        body_hash: sealed.body_hash.clone(),
        prev: prev.to_owned(),
        sealed: to,
        from,
        to,
        received: to + 1_000,
        payload: sealed.payload.clone(),
        samples,
        states,
        readings,
        links,
        dirty,
    };
    (sealed.payload, b)
}

async fn rolled_up(db: &Db) {
    loop {
        let pass = rollup::run_once(db, &tz(), 1_000).await.unwrap();
        if pass.ranges == 0 {
            return;
        }
    }
}

async fn all_seals(db: &Db) -> Vec<SealRow> {
    let mut v = db.seals(&SealFilter::default()).await.unwrap();
    v.sort_by_key(|s| s.seq);
    v
}

#[tokio::test]
async fn the_sealer_chains_versions_and_waits_for_late_data() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(&format!("sqlite://{}/gw.db", dir.path().display()), None)
        .await
        .unwrap();
    let snap = snapshot();
    let (_, b1) = payload(1, batch::ZERO_HASH, T0 + 8 * HOUR, T0 + 9 * HOUR, 3.0);
    let (_, b2) = payload(2, &b1.body_hash, T0 + 9 * HOUR, T0 + 10 * HOUR, 4.0);
    db.ingest(&[b1.clone(), b2.clone()]).await.unwrap();
    rolled_up(&db).await;

    let mut sealer = Sealer::new(key(1), 3600);
    // Before the day's end + after_s: nothing is due.
    let p = sealer
        .pass(&db, &snap, &tz(), T0 + DAY + 30 * MINUTE)
        .await
        .unwrap();
    assert!(p.sealed.is_empty(), "{p:?}");
    // Due: the park, the enterprise and the workshop of the agent's scope, in one chain.
    let now = T0 + DAY + 2 * HOUR;
    let p = sealer.pass(&db, &snap, &tz(), now).await.unwrap();
    let mut sealed: Vec<&str> = p.sealed.iter().map(|(e, _)| e.as_str()).collect();
    sealed.sort_unstable();
    assert_eq!(sealed, vec!["p1", "p1/e1", "p1/e1/w1"], "{p:?}");
    assert!(p.sealed.iter().all(|(_, from)| *from == T0));
    let seals = all_seals(&db).await;
    assert_eq!(seals.len(), 3);
    let pk = key(1).verifying_key();
    let mut prev = batch::ZERO_HASH.to_owned();
    for (i, s) in seals.iter().enumerate() {
        assert_eq!(s.seq, i64::try_from(i).unwrap() + 1);
        assert_eq!(s.prev, prev, "the chain");
        assert_eq!(s.hash, sha256_hex(s.doc.as_bytes()));
        assert!(signature_ok(&pk, s.doc.as_bytes(), &s.sig));
        let d: SealDoc = serde_json::from_str(&s.doc).unwrap();
        assert_eq!((d.version, d.from, d.to), (1, T0, T0 + DAY));
        assert_eq!(d.signer, sealer.signer());
        prev = s.hash.clone();
    }
    let w1 = seals.iter().find(|s| s.entity == "p1/e1/w1").unwrap();
    let d: SealDoc = serde_json::from_str(&w1.doc).unwrap();
    // Two hours producing (and the half hour before 08:00 of the first span).
    assert_eq!(
        d.indicators
            .get("actual_production_time_s")
            .copied()
            .flatten(),
        Some(2.5 * 3600.0)
    );
    let stored = db
        .seals(&SealFilter {
            entity: Some(shopfloor_store::DeviceFilter {
                prefix: "p1/e1/w1".into(),
            }),
            with_bodies: true,
            ..SealFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(sha256_hex(stored[0].evidence.as_bytes()), d.evidence_sha256);
    assert_eq!(sha256_hex(stored[0].manifest.as_bytes()), d.manifest_sha256);
    let m: Manifest = serde_json::from_str(&stored[0].manifest).unwrap();
    assert_eq!(m.agents.len(), 1);
    assert_eq!(m.agents[0].seqs, vec![[1, 2]]);

    // Nothing changed: nothing new.
    let p = sealer.pass(&db, &snap, &tz(), now + MINUTE).await.unwrap();
    assert!(p.sealed.is_empty() && p.versions.is_empty(), "{p:?}");

    // A late batch for the sealed day: while its roll-ups are pending, the day waits.
    let (_, b3) = payload(3, &b2.body_hash, T0 + 10 * HOUR, T0 + 11 * HOUR, 5.0);
    db.ingest(&[b3]).await.unwrap();
    let p = sealer
        .pass(&db, &snap, &tz(), now + 2 * MINUTE)
        .await
        .unwrap();
    assert!(p.versions.is_empty(), "{p:?}");
    assert!(p.left >= 3, "{p:?}");
    rolled_up(&db).await;
    // A fresh sealer (a restart) still knows the day must be checked again.
    let mut sealer = Sealer::new(key(1), 3600);
    let p = sealer
        .pass(&db, &snap, &tz(), now + 3 * MINUTE)
        .await
        .unwrap();
    let mut versions: Vec<(&str, i64)> = p
        .versions
        .iter()
        .map(|(e, _, v)| (e.as_str(), *v))
        .collect();
    versions.sort_unstable();
    assert_eq!(
        versions,
        vec![("p1", 2), ("p1/e1", 2), ("p1/e1/w1", 2)],
        "{p:?}"
    );
    let seals = all_seals(&db).await;
    assert_eq!(seals.len(), 6);
    for pair in seals.windows(2) {
        assert_eq!(pair[1].prev, pair[0].hash, "one chain across passes");
    }
    for s in &seals[..3] {
        let next = seals[3..].iter().find(|n| n.entity == s.entity).unwrap();
        assert_eq!(s.superseded_by.as_deref(), Some(next.hash.as_str()));
        assert_eq!(next.supersedes.as_deref(), Some(s.hash.as_str()));
        let d: SealDoc = serde_json::from_str(&next.doc).unwrap();
        assert!(d.reason.contains("changed since version 1"), "{}", d.reason);
    }
    let latest = db
        .seals(&SealFilter {
            latest_only: true,
            ..SealFilter::default()
        })
        .await
        .unwrap();
    assert!(latest.iter().all(|s| s.version == 2));
    let p = sealer
        .pass(&db, &snap, &tz(), now + 4 * MINUTE)
        .await
        .unwrap();
    assert!(p.sealed.is_empty() && p.versions.is_empty(), "{p:?}");

    // A plan target is not part of the evidence: nothing is checked again.
    let item = |kind: &str, id: &str, doc: serde_json::Value| shopfloor_store::RegistryItem {
        kind: kind.into(),
        id: id.into(),
        doc,
        updated_at: now + 5 * MINUTE,
        updated_by: "test".into(),
    };
    db.registry_put(&item("target", "t1", json!({"id": "t1"})))
        .await
        .unwrap();
    let p = sealer
        .pass(&db, &snap, &tz(), now + 6 * MINUTE)
        .await
        .unwrap();
    assert_eq!(p.checked, 0, "{p:?}");
    // A new machine in the workshop: the evidence of the entities above it lists it.
    let m2 = json!({"id": "p1/e1/w1/l1/m2", "kind": "equipment", "equipment_kind": "press",
                    "control": "manual"});
    db.registry_put(&item("entity", "p1/e1/w1/l1/m2", m2.clone()))
        .await
        .unwrap();
    let mut snap2 = snapshot();
    let (id, e) = entity(m2);
    snap2.entities.insert(id, e);
    let p = sealer
        .pass(&db, &snap2, &tz(), now + 7 * MINUTE)
        .await
        .unwrap();
    assert_eq!(p.checked, 3, "{p:?}");
    let mut versions: Vec<(&str, i64)> = p
        .versions
        .iter()
        .map(|(e, _, v)| (e.as_str(), *v))
        .collect();
    versions.sort_unstable();
    assert_eq!(versions, vec![("p1", 3), ("p1/e1", 3), ("p1/e1/w1", 3)]);
}

#[test]
fn seal_work_is_counted() {
    let m = Metrics::new();
    let text = m.encode();
    for line in [
        "shopfloor_gateway_seals_total{kind=\"new\"} 0",
        "shopfloor_gateway_seals_total{kind=\"version\"} 0",
        "shopfloor_gateway_seal_checks_total 0",
        "shopfloor_gateway_seal_pending 0",
    ] {
        assert!(text.contains(line), "missing {line}");
    }
    m.seal_progress(3, 1, 4, 2);
    let text = m.encode();
    for line in [
        "shopfloor_gateway_seals_total{kind=\"new\"} 3",
        "shopfloor_gateway_seals_total{kind=\"version\"} 1",
        "shopfloor_gateway_seal_checks_total 4",
        "shopfloor_gateway_seal_pending 2",
    ] {
        assert!(text.contains(line), "missing {line}");
    }
}
