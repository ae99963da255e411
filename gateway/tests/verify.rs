//! Tamper evidence end to end: a small enterprise (a CNC with a part counter and a spindle
//! sample, an electricity meter) delivers signed batches over two days; they are checked and
//! stored with ingest's own code, rolled up, and the two days are sealed with an injected
//! clock. `verify` (the function and the `shopfloor-gateway verify` binary) then finds nothing.
//! Behind the gateway's back, with plain SQL on the database: (a) a sample value is changed,
//! (b) an economic input value, (c) a batch and its rows are deleted, (d) a sealed indicator
//! value is edited in a seal. `verify` names each change and the binary exits 1. On SQLite
//! always, on PostgreSQL with SHOPFLOOR_TEST_POSTGRES_URL.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use common::*;
use jiff::tz::TimeZone;
use serde_json::{Value, json};
use shopfloor_gateway::config;
use shopfloor_gateway::db::Db;
use shopfloor_gateway::ingest::{self, Trust};
use shopfloor_gateway::registry::Registry;
use shopfloor_gateway::rollup;
use shopfloor_gateway::seal::{self, SealDoc, Sealer};
use shopfloor_gateway::verify::{self, Finding, Options, Outcome};
use shopfloor_store::{InputsRecord, Ms, Store};

const MIN: Ms = 60_000;
const HOUR: Ms = 3_600_000;
const DAY: Ms = 86_400_000;
const CNC: &str = "p1/e1/w1/l1/cnc-01";
const METER: &str = "p1/e1/w1/m-el";

const ENTITIES: &str = r#"
[[entity]]
id = "p1"
kind = "park"
name_en = "Test park"

[[entity]]
id = "p1/e1"
kind = "enterprise"
name_en = "Enterprise 1"
land_area_m2 = 50000.0

[[entity]]
id = "p1/e1/w1"
kind = "workshop"

[[entity]]
id = "p1/e1/w1/l1"
kind = "line"

[[entity]]
id = "p1/e1/w1/l1/cnc-01"
kind = "equipment"
equipment_kind = "cnc"
control = "cnc"
key_process = "machining"
product = "shaft-a"

[[entity]]
id = "p1/e1/w1/m-el"
kind = "meter"
carrier = "electricity"
unit = "kWh"
"#;

fn tz() -> TimeZone {
    TimeZone::get("Asia/Shanghai").unwrap()
}

/// Local midnight five days ago: recent, so nothing is older than any retention.
fn day0() -> Ms {
    let today = jiff::Timestamp::now().to_zoned(tz()).date();
    let d = today.checked_sub(jiff::Span::new().days(5)).unwrap();
    d.to_zoned(tz())
        .unwrap()
        .start_of_day()
        .unwrap()
        .timestamp()
        .as_millisecond()
}

fn date(t: Ms) -> String {
    jiff::Timestamp::from_millisecond(t)
        .unwrap()
        .to_zoned(tz())
        .date()
        .to_string()
}

/// Batch `j` (0..6): days 0 and 1, 08:00–09:00, 09:00–10:00, 10:00–11:00 local.
fn contents(j: i64) -> Value {
    batch_at(j / 3, j % 3, j)
}

/// The `j`-th batch of the agent, over hour `8 + slot` of day `day`.
fn batch_at(day: i64, slot: i64, j: i64) -> Value {
    let from = day0() + day * DAY + (8 + slot) * HOUR;
    let to = from + HOUR;
    let mut cnc = json!({
        "id": CNC, "template": "test-cnc",
        "samples": [{"point": "spindle_speed", "samples": [{"t": from + 30 * MIN, "v": 1200.0 + j as f64}]}],
        "states": [{"from": from, "to": to, "state": "producing"}],
        "counters": [{"role": "produced", "point": "parts_total", "width_bits": 32, "readings": [
            {"t": from + 30 * MIN, "v": 100.0 + 10.0 * j as f64},
            {"t": to, "v": 105.0 + 10.0 * j as f64}
        ]}]
    });
    if j == 0 {
        cnc["links"] = json!([{"t": from + MIN, "up": true, "detail": "connected"}]);
    }
    json!({
        "from": from,
        "to": to,
        "devices": [
            cnc,
            {"id": METER, "template": "test-meter", "counters": [
                {"role": "electricity", "point": "energy_total", "readings": [{"t": to, "v": 1000.0 + 50.0 * j as f64}]}
            ]}
        ]
    })
}

struct Plant {
    _dir: tempfile::TempDir,
    config: PathBuf,
    db: Db,
    registry: Arc<Registry>,
    trust: Arc<Trust>,
    signer: Signer,
    sealer: Sealer,
    prefix: String,
    trusted: ed25519_dalek::VerifyingKey,
}

/// When the test's sealer sealed the two days (an injected clock).
fn sealed_at() -> Ms {
    day0() + 2 * DAY + 2 * HOUR
}

async fn plant(store: &TestStore) -> Plant {
    let dir = tempfile::tempdir().unwrap();
    let mut signer = Signer::new(AGENT, new_key());
    let reg = dir.path().join("registry");
    std::fs::create_dir_all(&reg).unwrap();
    std::fs::write(reg.join("entities.toml"), ENTITIES).unwrap();
    std::fs::write(
        reg.join("products.toml"),
        "[[product]]\nid = \"shaft-a\"\nideal_cycle_s = 25.0\nvalue_added_per_unit_cny = 12.5\n",
    )
    .unwrap();
    std::fs::write(
        reg.join("agents.toml"),
        format!(
            "[[agent]]\nid = \"{AGENT}\"\npublic_key = \"{}\"\nscope = [\"p1/e1/w1\"]\n",
            signer.public_key()
        ),
    )
    .unwrap();
    let prefix = unique("verify");
    let config = write_config(
        dir.path(),
        "gw",
        &store.url,
        &Broker::Embedded(free_port()),
        &prefix,
        &reg,
    );
    let cfg = config::load(&config).unwrap();
    let db = Db::open(&store.url, None).await.unwrap();
    let trust = Arc::new(Trust::new());
    let registry = Arc::new(Registry::load(db.clone(), trust.clone()).await.unwrap());
    registry.sync_files(Some(&reg), None, day0()).await.unwrap();

    // Six signed batches, checked and decoded by ingest itself.
    let topic = format!("{prefix}/{AGENT}/batch");
    let mut batches = Vec::new();
    for j in 0..6 {
        let payload = signer.next(contents(j));
        let to = contents(j)["to"].as_i64().unwrap();
        let b = ingest::check(&trust, &cfg.ingest, &prefix, &topic, &payload, to + 1_000)
            .unwrap_or_else(|q| panic!("batch {j} quarantined: {} {}", q.reason, q.detail));
        batches.push(b);
    }
    db.ingest(&batches).await.unwrap();
    // Economic inputs of a 30-day period around the two days.
    let (from, to) = (day0() - 10 * DAY, day0() + 20 * DAY);
    db.inputs_put(&InputsRecord {
        entity: "p1/e1".into(),
        from,
        to,
        version: 1,
        doc: json!({"entity": "p1/e1", "from": from, "to": to,
                    "value_added_cny": 50_000_000.0, "employees_avg": 120.0}),
        at: day0(),
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

    // Both days sealed, two hours after the second day's end (an injected clock).
    let key = seal::key::load_or_create(&cfg.gateway.data_dir).unwrap();
    let trusted = key.verifying_key();
    let mut sealer = Sealer::new(key, cfg.seal.after_s);
    let snap = registry.snapshot();
    let p = sealer.pass(&db, &snap, &tz(), sealed_at()).await.unwrap();
    assert_eq!(p.sealed.len(), 6, "{p:?}");
    Plant {
        _dir: dir,
        config,
        db,
        registry,
        trust,
        signer,
        sealer,
        prefix,
        trusted,
    }
}

async fn run_verify(p: &Plant) -> Outcome {
    let cfg = config::load(&p.config).unwrap();
    let opts = Options {
        entity: None,
        from: 0,
        to: jiff::Timestamp::now().as_millisecond() + DAY,
        trusted: vec![p.trusted],
        retention: cfg.retention.clone(),
        now: jiff::Timestamp::now().as_millisecond(),
    };
    verify::verify(&p.db, &p.registry.snapshot(), &tz(), &opts)
        .await
        .unwrap()
}

fn binary(config: &Path, extra: &[&str]) -> (i32, String, String) {
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_shopfloor-gateway"))
        .arg("verify")
        .arg("--config")
        .arg(config)
        .args(extra)
        .output()
        .unwrap();
    (
        o.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

/// Runs one statement with `$1…` parameters (text or integers) on the test's database.
async fn sql(url: &str, statement: &str, args: &[Value]) -> u64 {
    if url.starts_with("sqlite:") {
        let pool = sqlx::SqlitePool::connect(url).await.unwrap();
        let mut q = sqlx::query(sqlx::AssertSqlSafe(statement.to_owned()));
        for a in args {
            q = match a {
                Value::String(s) => q.bind(s.clone()),
                v => q.bind(v.as_i64().unwrap()),
            };
        }
        let n = q.execute(&pool).await.unwrap().rows_affected();
        pool.close().await;
        n
    } else {
        let pool = sqlx::PgPool::connect(url).await.unwrap();
        let mut q = sqlx::query(sqlx::AssertSqlSafe(statement.to_owned()));
        for a in args {
            q = match a {
                Value::String(s) => q.bind(s.clone()),
                v => q.bind(v.as_i64().unwrap()),
            };
        }
        let n = q.execute(&pool).await.unwrap().rows_affected();
        pool.close().await;
        n
    }
}

fn has(o: &Outcome, kind: &str, object: &str, detail: &str) -> bool {
    o.mismatches
        .iter()
        .any(|f: &Finding| f.kind == kind && f.object == object && f.detail.contains(detail))
}

async fn scenario(store: TestStore) {
    let mut p = plant(&store).await;
    let url = store.url.clone();

    // Untouched: nothing to report, from the function and from the binary.
    let o = run_verify(&p).await;
    assert!(o.passed(), "{}", verify::text(&o));
    assert!(o.notes.is_empty(), "{}", verify::text(&o));
    assert_eq!(o.checked.batches, 6);
    assert_eq!(o.checked.sealed_days, 6);
    assert_eq!(o.checked.seal_versions, 6);
    assert!(o.checked.rows >= 6 * 4, "{:?}", o.checked);
    assert_eq!(o.seal_chains.len(), 1);
    assert_eq!(o.seal_chains[0].seq, 6);
    let (code, out, err) = binary(&p.config, &[]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.contains("result: PASS (0 mismatches"), "{out}");
    // The API's listing of the seals (GET /api/v1/seals).
    let listed = seal::list(&p.db, &tz(), Some("p1/e1"), None, None, false)
        .await
        .unwrap();
    assert_eq!(listed["seals"].as_array().unwrap().len(), 4, "{listed}");
    assert!(listed["seals"][0]["evidence"].is_null());
    assert_eq!(listed["seals"][0]["version"], 1);

    // Late data: a batch for day 1 (11:00–12:00) received after the seal. Until the sealer's
    // next pass the differences it explains are notes; then day 1 has a version 2.
    let cfg = config::load(&p.config).unwrap();
    let payload = p.signer.next(batch_at(1, 3, 6));
    let topic = format!("{}/{AGENT}/batch", p.prefix);
    let late = ingest::check(
        &p.trust,
        &cfg.ingest,
        &p.prefix,
        &topic,
        &payload,
        sealed_at() + HOUR,
    )
    .unwrap_or_else(|q| panic!("late batch quarantined: {} {}", q.reason, q.detail));
    p.db.ingest(&[late]).await.unwrap();
    loop {
        if rollup::run_once(&p.db, &tz(), 1_000).await.unwrap().ranges == 0 {
            break;
        }
    }
    let o = run_verify(&p).await;
    assert!(o.passed(), "{}", verify::text(&o));
    assert!(
        o.notes.iter().any(|n| n.kind == "changed_after_seal"
            && n.detail.contains("batch seq 7 received after sealing")),
        "{}",
        verify::text(&o)
    );
    let snap = p.registry.snapshot();
    let pass = p
        .sealer
        .pass(&p.db, &snap, &tz(), sealed_at() + 2 * HOUR)
        .await
        .unwrap();
    let mut versions: Vec<(String, i64)> = pass
        .versions
        .iter()
        .map(|(e, from, v)| (format!("{e} {}", date(*from)), *v))
        .collect();
    versions.sort();
    let d1 = date(day0() + DAY);
    assert_eq!(
        versions,
        vec![
            (format!("p1 {d1}"), 2),
            (format!("p1/e1 {d1}"), 2),
            (format!("p1/e1/w1 {d1}"), 2)
        ],
        "{pass:?}"
    );
    let o = run_verify(&p).await;
    assert!(o.passed() && o.notes.is_empty(), "{}", verify::text(&o));
    assert_eq!(o.checked.seal_versions, 9);
    assert_eq!(o.seal_chains[0].seq, 9);

    let d0 = date(day0());
    // (a) a sample value of batch 2.
    let n = sql(
        &url,
        "UPDATE samples SET num = 9999 WHERE agent = $1 AND seq = $2 AND point = 'spindle_speed'",
        &[json!(AGENT), json!(2)],
    )
    .await;
    assert_eq!(n, 1);
    // (b) the value added of the enterprise's input record.
    let n = sql(
        &url,
        "UPDATE inputs SET doc = replace(doc, '50000000.0', '60000000.0') WHERE entity = 'p1/e1'",
        &[],
    )
    .await;
    assert_eq!(n, 1);
    // (c) batch 5 (day 1, 09:00–10:00) and its rows.
    for table in ["batches", "samples", "states", "readings", "links"] {
        sql(
            &url,
            &format!("DELETE FROM {table} WHERE agent = $1 AND seq = $2"),
            &[json!(AGENT), json!(5)],
        )
        .await;
    }
    // (d) the sealed electricity in the workshop's seal of day 0.
    let rows =
        p.db.seals(&shopfloor_store::SealFilter {
            entity: Some(shopfloor_store::DeviceFilter {
                prefix: "p1/e1/w1".into(),
            }),
            from: Some(day0()),
            to: Some(day0() + DAY),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(rows.len(), 1);
    let mut doc: SealDoc = serde_json::from_str(&rows[0].doc).unwrap();
    let sealed_kwh = doc.indicators["electricity_kwh"].unwrap_or_else(|| panic!("{doc:?}"));
    // Meter readings at 09:00, 10:00 and 11:00, 50 kWh apart.
    assert_eq!(sealed_kwh, 100.0);
    doc.indicators
        .insert("electricity_kwh".into(), Some(sealed_kwh + 25.0));
    let edited = String::from_utf8(doc.canonical().unwrap()).unwrap();
    let n = sql(
        &url,
        "UPDATE seals SET doc = $1 WHERE hash = $2",
        &[json!(edited), json!(rows[0].hash)],
    )
    .await;
    assert_eq!(n, 1);

    let o = run_verify(&p).await;
    let report = verify::text(&o);
    assert!(!o.passed());
    // (a) the sample: batch, device, point, both values.
    assert!(
        has(
            &o,
            "row_changed",
            &format!("batch {AGENT}/2"),
            &format!("sample {CNC} spindle_speed at ")
        ),
        "{report}"
    );
    assert!(
        has(
            &o,
            "row_changed",
            &format!("batch {AGENT}/2"),
            "stored 9999, signed 1201"
        ),
        "{report}"
    );
    // (b) the input, by its JSON path in the evidence of the enterprise and of the park.
    for day in [format!("{d0} v1"), format!("{d1} v2")] {
        assert!(
            has(
                &o,
                "evidence_changed",
                &format!("seal p1/e1 {day}"),
                "inputs.value_added_cny: sealed 1666666.6666666667, now 2000000.0"
            ),
            "{report}"
        );
        assert!(
            has(
                &o,
                "evidence_changed",
                &format!("seal p1 {day}"),
                "entities[0].inputs.value_added_cny: sealed"
            ),
            "{report}"
        );
    }
    // (c) the deleted batch: the chain, the seal's manifest and the cited chain.
    assert!(
        has(
            &o,
            "missing_batches",
            &format!("batch {AGENT}/6"),
            "seq 5 not in the store"
        ),
        "{report}"
    );
    assert!(
        has(
            &o,
            "manifest_changed",
            &format!("seal p1/e1/w1 {d1} v2"),
            &format!("agent {AGENT}: batch seq 5 sealed, not in the store now")
        ),
        "{report}"
    );
    assert!(
        has(
            &o,
            "evidence_changed",
            &format!("seal p1/e1/w1 {d1} v2"),
            "signatures[0].batches: sealed 4, now 3"
        ),
        "{report}"
    );
    // (d) the edited seal: its hash, its signature and the indicator.
    let seal_w1 = format!("seal p1/e1/w1 {d0} v1");
    for (kind, detail) in [
        ("seal_hash_mismatch", "stored hash"),
        ("seal_bad_signature", "does not verify"),
        (
            "indicator_drift",
            "electricity_kwh: sealed 125, the engine computes 100 from the sealed evidence",
        ),
    ] {
        assert!(has(&o, kind, &seal_w1, detail), "{kind}: {report}");
    }
    // Nothing else was touched: the workshop's day-0 evidence and its batches are as sealed.
    assert!(
        !o.mismatches
            .iter()
            .any(|f| f.object == seal_w1 && f.kind == "evidence_changed"),
        "{report}"
    );

    // The binary: exit 1, every finding on stdout; JSON for tools.
    let (code, out, err) = binary(&p.config, &[]);
    assert_eq!(code, 1, "{out}\n{err}");
    assert!(out.contains("MISMATCH row_changed batch "), "{out}");
    assert!(out.contains("result: FAIL ("), "{out}");
    let (code, out, _) = binary(
        &p.config,
        &[
            "--entity",
            "p1/e1/w1",
            "--from",
            &d0,
            "--to",
            &date(day0() + 2 * DAY),
            "--format",
            "json",
        ],
    );
    assert_eq!(code, 1);
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["result"], "fail");
    let kinds: Vec<&str> = v["mismatches"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["kind"].as_str().unwrap())
        .collect();
    assert!(
        kinds.contains(&"row_changed") && kinds.contains(&"indicator_drift"),
        "{out}"
    );
    // Bad arguments: exit 2.
    let (code, _, err) = binary(&p.config, &["--format", "pdf"]);
    assert_eq!(code, 2, "{err}");
    let (code, _, err) = binary(&p.config, &["--entity", "p9"]);
    assert_eq!(code, 2, "{err}");
    let (code, _, err) = binary(&p.config, &["--from", &d0]);
    assert_eq!(code, 2, "{err}");

    p.db.ping().await.unwrap();
    drop(p);
    store.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_names_every_change_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let store = TestStore::sqlite(dir.path()).await;
    scenario(store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_names_every_change_postgres() {
    let Some(store) = TestStore::postgres("verify_names_every_change_postgres").await else {
        return;
    };
    scenario(store).await;
}
