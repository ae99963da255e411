//! Indicators from roll-ups against a real SQLite store: a small plant (park p1, enterprise
//! p1/e1, workshop, line, two machines, one electricity meter, one product) ingested as raw
//! batches and rolled up. At every level the API's numbers equal what `calc` computes from the
//! served evidence file (serialised, parsed back by `shopfloor_core::parse`), and the key
//! figures match hand-computed values.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed test

use std::collections::BTreeMap;

use jiff::Timestamp;
use jiff::tz::TimeZone;
use serde_json::{Value, json};
use shopfloor_core::evidence::Control;
use shopfloor_core::targets::{Scope, Target, TargetComparison};
use shopfloor_gateway::db::Db;
use shopfloor_gateway::indicators::{self, QueryError};
use shopfloor_gateway::metrics::Metrics;
use shopfloor_gateway::model::{Agent, Entity, EntityKind, Product, Snapshot};
use shopfloor_gateway::rollup::{self, HOUR, MINUTE};
use shopfloor_store::{DirtyRange, InputsRecord, Ms, NewBatch, ReadingRow, StateRow, Store};

const M1: &str = "p1/e1/w1/l1/m1";
const M2: &str = "p1/e1/w1/l1/m2";
const POWER: &str = "p1/e1/w1/l1/power";

fn at(s: &str) -> Ms {
    s.parse::<Timestamp>().unwrap().as_millisecond()
}

/// 2026-09-01 08:00 Shanghai time; the period is two hours from there.
fn t0() -> Ms {
    at("2026-09-01T08:00:00+08:00")
}

fn tz() -> TimeZone {
    TimeZone::get("Asia/Shanghai").unwrap()
}

fn entity(id: &str, kind: EntityKind) -> Entity {
    Entity {
        id: id.into(),
        kind,
        name_zh: None,
        name_en: None,
        region: None,
        land_area_m2: None,
        industry_mode: None,
        industry: None,
        coefficient_overrides: BTreeMap::new(),
        certifications: Vec::new(),
        baseline: None,
        equipment_kind: None,
        control: None,
        key_process: None,
        product: None,
        data_points: None,
        carrier: None,
        unit: None,
        renewable: false,
        parent: None,
    }
}

fn snapshot() -> Snapshot {
    let mut park = entity("p1", EntityKind::Park);
    park.region = Some("渝东北".into());
    let mut e1 = entity("p1/e1", EntityKind::Enterprise);
    e1.land_area_m2 = Some(10_000.0);
    let mut m1 = entity(M1, EntityKind::Equipment);
    m1.equipment_kind = Some("cnc".into());
    m1.control = Some(Control::Cnc);
    m1.key_process = Some("machining".into());
    m1.product = Some("shaft".into());
    m1.data_points = Some(4);
    let mut m2 = entity(M2, EntityKind::Equipment);
    m2.equipment_kind = Some("press".into());
    m2.product = Some("shaft".into());
    let mut power = entity(POWER, EntityKind::Meter);
    power.carrier = Some("electricity".into());
    power.unit = Some("kWh".into());
    let entities = [
        park,
        e1,
        entity("p1/e1/w1", EntityKind::Workshop),
        entity("p1/e1/w1/l1", EntityKind::Line),
        m1,
        m2,
        power,
    ];
    Snapshot {
        entities: entities.into_iter().map(|e| (e.id.clone(), e)).collect(),
        agents: [(
            "a1".to_owned(),
            Agent {
                id: "a1".into(),
                public_key: "ed25519:AAAA".into(),
                previous_keys: Vec::new(),
                revoked_keys: Vec::new(),
                scope: vec!["p1/e1/w1".into()],
                revoked: false,
            },
        )]
        .into(),
        products: [(
            "shaft".to_owned(),
            Product {
                id: "shaft".into(),
                name_zh: None,
                name_en: None,
                ideal_cycle_s: 60.0,
                value_added_per_unit_cny: Some(100.0),
            },
        )]
        .into(),
        targets: vec![Target {
            id: "park-energy-intensity".into(),
            indicator: "energy_per_value_added".into(),
            scope: Scope::Park,
            region: Some("渝东北".into()),
            entity: None,
            comparison: TargetComparison::Le,
            value: 0.8,
            unit: "tce/万元".into(),
            year: 2020,
            baseline_year: None,
            binding: None,
            cumulative: None,
            seed: "001:292".into(),
            name_zh: "工业园区单位规模以上工业增加值能耗".into(),
            note: None,
        }],
    }
}

fn state(device: &str, from: Ms, to: Ms, s: &str) -> StateRow {
    StateRow {
        device: device.into(),
        from: t0() + from * MINUTE,
        to: t0() + to * MINUTE,
        state: s.into(),
    }
}

fn reading(device: &str, role: &str, minute: Ms, v: f64) -> ReadingRow {
    ReadingRow {
        device: device.into(),
        role: role.into(),
        point: format!("{role}_reg"),
        t: t0() + minute * MINUTE,
        v,
        width_bits: Some(32),
        rollover: None,
    }
}

/// The plant's two hours, as one batch of agent a1.
fn plant() -> NewBatch {
    let states = vec![
        // m1: producing 60 min, idle 30 min, then nothing (offline) for 30 min.
        state(M1, 0, 60, "producing"),
        state(M1, 60, 90, "idle"),
        // m2: producing 30 min, planned down 30 min, setup 60 min.
        state(M2, 0, 30, "producing"),
        state(M2, 30, 60, "planned_down"),
        state(M2, 60, 120, "setup"),
    ];
    let mut readings = vec![
        // m1: 60 produced, 54 good in the period (the base reading is a minute before it).
        reading(M1, "produced", -1, 100.0),
        reading(M1, "good", -1, 90.0),
        reading(M1, "good", 60, 144.0),
        reading(M1, "good", 90, 144.0),
        // m2: 30 produced, 3 scrap, no good counter.
        reading(M2, "produced", 5, 0.0),
        reading(M2, "produced", 30, 30.0),
        reading(M2, "scrap", 5, 0.0),
        reading(M2, "scrap", 30, 3.0),
    ];
    for k in 1..=6 {
        readings.push(reading(M1, "produced", k * 10, 100.0 + 10.0 * k as f64));
    }
    readings.push(reading(M1, "produced", 90, 160.0));
    // The meter every 15 minutes from 15 min before the period: 25 kWh each.
    for k in 0..=9 {
        readings.push(reading(
            POWER,
            "electricity",
            -15 + 15 * k,
            5_000.0 + 25.0 * k as f64,
        ));
    }
    let mut dirty: BTreeMap<String, (Ms, Ms)> = BTreeMap::new();
    for (d, a, b) in states
        .iter()
        .map(|s| (s.device.clone(), s.from, s.to))
        .chain(readings.iter().map(|r| (r.device.clone(), r.t, r.t + 1)))
    {
        let e = dirty.entry(d).or_insert((a, b));
        *e = (e.0.min(a), e.1.max(b));
    }
    NewBatch {
        agent: "a1".into(),
        seq: 1,
        body_hash: "1".repeat(64),
        prev: "0".repeat(64),
        sealed: t0() + 2 * HOUR,
        from: t0() - 20 * MINUTE,
        to: t0() + 2 * HOUR,
        received: t0() + 2 * HOUR,
        payload: b"{}".to_vec(),
        samples: Vec::new(),
        states,
        readings,
        links: Vec::new(),
        dirty: dirty
            .into_iter()
            .map(|(device, (from, to))| DirtyRange { device, from, to })
            .collect(),
    }
}

async fn setup(dir: &tempfile::TempDir) -> Db {
    let db = Db::open(&format!("sqlite://{}/gw.db", dir.path().display()), None)
        .await
        .unwrap();
    db.ingest(&[plant()]).await.unwrap();
    // September's economic inputs of the enterprise (30 days): 2 h are 1/360 of them.
    let sept = (
        at("2026-09-01T00:00:00+08:00"),
        at("2026-10-01T00:00:00+08:00"),
    );
    db.inputs_put(&InputsRecord {
        entity: "p1/e1".into(),
        from: sept.0,
        to: sept.1,
        version: 1,
        doc: json!({"entity": "p1/e1", "from": "2026-09-01T00:00:00+08:00",
                    "to": "2026-10-01T00:00:00+08:00", "value_added_cny": 720_000.0,
                    "gross_output_cny": 3_600_000.0, "employees_avg": 100.0,
                    "unmetered_water_m3": 7_200.0}),
        at: t0(),
        actor: "test".into(),
        source: "api".into(),
    })
    .await
    .unwrap();
    loop {
        let pass = rollup::run_once(&db, &tz(), 1_000).await.unwrap();
        if pass.ranges == 0 {
            break;
        }
    }
    db
}

fn value(v: &Value, id: &str) -> Option<f64> {
    v["indicators"][id]["value"].as_f64()
}

/// What `calc` prints for the evidence the API serves: serialised, parsed, computed.
fn calc(e: &shopfloor_core::Evidence) -> BTreeMap<String, Option<f64>> {
    let text = serde_json::to_string_pretty(e).unwrap();
    let parsed = shopfloor_core::parse(&text).unwrap();
    shopfloor_core::compute(&parsed)
        .unwrap()
        .values()
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect()
}

#[tokio::test]
async fn the_api_equals_calc_on_the_served_evidence_at_every_level() {
    let dir = tempfile::tempdir().unwrap();
    let db = setup(&dir).await;
    let snap = snapshot();
    let (from, to) = (t0(), t0() + 2 * HOUR);
    for entity in [M1, "p1/e1/w1/l1", "p1/e1/w1", "p1/e1", "p1"] {
        let api = indicators::indicators(&db, &snap, &tz(), entity, from, to)
            .await
            .unwrap();
        let e = indicators::evidence(&db, &snap, &tz(), entity, from, to)
            .await
            .unwrap();
        let want = calc(&e);
        let got = api["indicators"].as_object().unwrap();
        assert_eq!(got.len(), want.len(), "{entity}: same ids");
        for (id, v) in &want {
            assert_eq!(value(&api, id), *v, "{entity}: {id}");
            assert!(
                got[id]["name_en"].as_str().is_some_and(|s| !s.is_empty()),
                "{id}"
            );
            assert_eq!(got[id]["coefficient_set"], "gbt2589-2020");
        }
        assert_eq!(api["entity"], entity);
        assert_eq!(api["from"], "2026-09-01T08:00:00+08:00");
        assert_eq!(api["to"], "2026-09-01T10:00:00+08:00");
        // The signed chain of agent a1 (scope p1/e1/w1) is cited where the scope meets.
        let cited: Vec<&str> = e
            .signatures
            .iter()
            .filter_map(|s| s["agent"].as_str())
            .collect();
        assert_eq!(cited, vec!["a1"], "{entity}");
        assert_eq!(e.signatures[0]["public_key"], "ed25519:AAAA");
        assert_eq!(e.signatures[0]["first_seq"], 1);
    }
}

#[tokio::test]
async fn hand_checked_values() {
    let dir = tempfile::tempdir().unwrap();
    let db = setup(&dir).await;
    let snap = snapshot();
    let (from, to) = (t0(), t0() + 2 * HOUR);
    let get = |entity: &'static str| {
        let db = db.clone();
        let snap = snap.clone();
        async move {
            indicators::indicators(&db, &snap, &tz(), entity, from, to)
                .await
                .unwrap()
        }
    };
    // m1: producing 60 of 120 planned minutes (idle 30, offline 30).
    let m1 = get(M1).await;
    assert_eq!(value(&m1, "availability"), Some(0.5));
    assert_eq!(value(&m1, "produced_qty"), Some(60.0));
    assert_eq!(value(&m1, "good_qty"), Some(54.0));
    assert_eq!(value(&m1, "networked"), Some(1.0));
    assert_eq!(value(&m1, "nc_controlled"), Some(1.0));
    // performance = 60 s × 60 parts / 3600 s of production.
    assert_eq!(value(&m1, "performance"), Some(1.0));
    assert_eq!(m1["indicators"]["availability"]["completeness"], 0.75);
    assert_eq!(
        value(&m1, "electricity_kwh"),
        None,
        "no meter below a machine"
    );

    // Line: availability = (3600 + 1800) / (7200 + 5400); m2's good = 30 − 3 scrap.
    let line = get("p1/e1/w1/l1").await;
    let a = value(&line, "availability").unwrap();
    assert!((a - 5_400.0 / 12_600.0).abs() < 1e-12, "{a}");
    assert_eq!(value(&line, "produced_qty"), Some(90.0));
    assert_eq!(value(&line, "good_qty"), Some(81.0));
    // The meter: 8 readings of +25 kWh inside (from, to]; the base is at `from`.
    assert_eq!(value(&line, "electricity_kwh"), Some(200.0));
    assert_eq!(line["indicators"]["electricity_kwh"]["completeness"], 1.0);

    // Workshop: data points received 2 (m1's produced and good counters) of 4 configured.
    let w = get("p1/e1/w1").await;
    assert_eq!(value(&w, "data_auto_collection_rate"), Some(0.5));
    assert_eq!(value(&w, "equipment_networking_rate"), Some(1.0));
    assert_eq!(value(&w, "digital_equipment_rate"), Some(0.5));

    // Enterprise: September's inputs prorated to 2 of 720 hours; unmetered water as a meter.
    let e = get("p1/e1").await;
    assert_eq!(value(&e, "value_added_cny"), Some(2_000.0));
    assert_eq!(e["value_added_source"], "inputs");
    assert_eq!(value(&e, "electricity_kwh"), Some(200.0));
    assert_eq!(value(&e, "water_m3"), Some(20.0));
    let epv = value(&e, "energy_per_value_added").unwrap();
    assert!((epv - 200.0 * 0.1229 / 1000.0 / 0.2).abs() < 1e-12, "{epv}");

    // Park: the enterprise's inputs come through entities[]; the region's target applies.
    let p = get("p1").await;
    assert_eq!(value(&p, "value_added_cny"), Some(2_000.0));
    assert_eq!(value(&p, "electricity_kwh"), Some(200.0));
    let target = &p["indicators"]["energy_per_value_added"]["target"];
    assert_eq!(target["id"], "park-energy-intensity");
    assert_eq!(target["comparison"], "le");
    assert_eq!(target["met"], true);
    assert_eq!(
        e["indicators"]["energy_per_value_added"]["target"],
        Value::Null
    );
}

#[tokio::test]
async fn series_points_add_up_and_match_their_own_periods() {
    let dir = tempfile::tempdir().unwrap();
    let db = setup(&dir).await;
    let snap = snapshot();
    let (from, to) = (t0(), t0() + 2 * HOUR);
    let s = indicators::series(
        &db,
        &snap,
        &tz(),
        "produced_qty",
        "p1/e1/w1/l1",
        from,
        to,
        "hour",
    )
    .await
    .unwrap();
    let points = s["points"].as_array().unwrap();
    let values: Vec<Option<f64>> = points.iter().map(|p| p["value"].as_f64()).collect();
    // Hour 1: m1 produced 0 (its counters were read), m2's counts are unknown (no reading).
    assert_eq!(values, vec![Some(90.0), Some(0.0)]);
    assert_eq!(points[1]["from"], "2026-09-01T09:00:00+08:00");
    // Each point equals the indicators of its own period, also for the meter's completeness.
    let ms = indicators::series(
        &db,
        &snap,
        &tz(),
        "electricity_kwh",
        "p1/e1/w1/l1",
        from,
        to,
        "minute",
    )
    .await
    .unwrap();
    let mut sum = 0.0;
    for (k, p) in ms["points"].as_array().unwrap().iter().enumerate() {
        let a = from + k as Ms * MINUTE;
        let own = indicators::indicators(&db, &snap, &tz(), "p1/e1/w1/l1", a, a + MINUTE)
            .await
            .unwrap();
        assert_eq!(
            p["value"], own["indicators"]["electricity_kwh"]["value"],
            "minute {k}"
        );
        assert_eq!(
            p["completeness"], own["indicators"]["electricity_kwh"]["completeness"],
            "minute {k}"
        );
        sum += p["value"].as_f64().unwrap_or(0.0);
    }
    assert_eq!(sum, 200.0);
    // A day series in local days: one partial point.
    let d = indicators::series(&db, &snap, &tz(), "availability", M1, from, to, "day")
        .await
        .unwrap();
    assert_eq!(d["points"].as_array().unwrap().len(), 1);
    assert_eq!(d["points"][0]["value"], 0.5);
}

#[tokio::test]
async fn assessments_and_bad_queries() {
    let dir = tempfile::tempdir().unwrap();
    let db = setup(&dir).await;
    let snap = snapshot();
    let tz = tz();
    let (from, to) = (t0(), t0() + 2 * HOUR);
    let a = indicators::assessment(&db, &snap, &tz, "digital_workshop", "p1/e1/w1", from, to)
        .await
        .unwrap();
    let results = a["results"].as_array().unwrap();
    assert!(!results.is_empty());
    assert!(
        results
            .iter()
            .all(|r| r["assessment"] == "digital_workshop")
    );
    let g = indicators::assessment(&db, &snap, &tz, "green_factory", "p1/e1", from, to)
        .await
        .unwrap();
    assert!(
        g["results"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["assessment"] == "green_factory")
    );

    let field = |r: Result<Value, QueryError>| match r {
        Err(QueryError::Bad { field, .. }) => field,
        other => panic!("expected Bad, got {other:?}"),
    };
    assert_eq!(
        field(indicators::assessment(&db, &snap, &tz, "green_factory", "p1/e1/w1", from, to).await),
        "entity"
    );
    assert_eq!(
        field(indicators::assessment(&db, &snap, &tz, "smart_factory", "p1/e1", from, to).await),
        "kind"
    );
    assert_eq!(
        field(indicators::indicators(&db, &snap, &tz, "p1", from + 1, to).await),
        "from"
    );
    assert_eq!(
        field(indicators::indicators(&db, &snap, &tz, "p1", to, from).await),
        "to"
    );
    assert_eq!(
        field(indicators::indicators(&db, &snap, &tz, POWER, from, to).await),
        "entity"
    );
    assert!(matches!(
        indicators::indicators(&db, &snap, &tz, "p9", from, to).await,
        Err(QueryError::NotFound(_))
    ));
    let series = |id: &'static str, step: &'static str, to: Ms| {
        let (db, snap, tz) = (db.clone(), snap.clone(), tz.clone());
        async move { indicators::series(&db, &snap, &tz, id, "p1/e1/w1", from, to, step).await }
    };
    assert_eq!(field(series("oee", "week", to).await), "step");
    assert_eq!(
        field(series("oee", "minute", from + 2 * 24 * HOUR).await),
        "step"
    );
    assert_eq!(field(series("networked", "hour", to).await), "id");
    assert_eq!(field(series("no_such_id", "hour", to).await), "id");
    assert!(series("oee", "minute", from + 1_000 * MINUTE).await.is_ok());

    // Query times: RFC 3339 with offset, or a local date.
    assert_eq!(
        indicators::parse_time("from", "2026-09-01", &tz).unwrap(),
        at("2026-09-01T00:00:00+08:00")
    );
    assert_eq!(
        indicators::parse_time("to", "2026-09-01T08:00:00+08:00", &tz).unwrap(),
        t0()
    );
    for bad in ["2026-09-01T08:00:00", "yesterday", "", "2026-13-01"] {
        assert!(matches!(
            indicators::parse_time("from", bad, &tz),
            Err(QueryError::Bad { field, .. }) if field == "from"
        ));
    }
}

#[tokio::test]
async fn gauges_export_todays_values_of_parks_enterprises_and_workshops() {
    let dir = tempfile::tempdir().unwrap();
    let db = setup(&dir).await;
    let snap = snapshot();
    let metrics = Metrics::new();
    indicators::refresh_gauges(&db, &snap, &tz(), &metrics, 10, t0() + 2 * HOUR + 30_000).await;
    let text = metrics.encode();
    let line = |entity: &str, id: &str| {
        text.lines()
            .find(|l| {
                l.starts_with("shopfloor_indicator{")
                    && l.contains(&format!("indicator=\"{id}\""))
                    && l.contains(&format!("entity=\"{entity}\""))
            })
            .map(|l| l.rsplit(' ').next().unwrap().parse::<f64>().unwrap())
    };
    // Today from local midnight: the two hours and the meter's reading at 08:00 (its base at
    // 07:45 is the first reading of the day).
    assert_eq!(line("p1", "electricity_kwh"), Some(225.0));
    assert_eq!(line("p1/e1/w1", "electricity_kwh"), Some(225.0));
    assert!(line("p1/e1", "availability").is_some());
    assert_eq!(
        line("p1/e1/w1/l1", "electricity_kwh"),
        None,
        "lines are not exported"
    );
    assert!(text.contains("shopfloor_indicator_target{"), "{text}");
    // At most one entity: the park only.
    indicators::refresh_gauges(&db, &snap, &tz(), &metrics, 1, t0() + 2 * HOUR).await;
    let text = metrics.encode();
    assert!(!text.contains("entity=\"p1/e1\""));
    assert!(text.contains("entity=\"p1\""));
}
