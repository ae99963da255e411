//! Auditor reports end to end: a signed plant (a CNC with part counters, an electricity meter
//! and a gas meter under an enterprise with a coefficient override) published over MQTT to a
//! running gateway, economic inputs posted through the API and corrected once; then every
//! format through `GET /api/v1/reports` (auditor) and through the `shopfloor-gateway report`
//! binary: HTML in zh-CN and English, XLSX read back with calamine, CSV read back with the csv
//! crate, JSON = `GET /api/v1/evidence` and `calc` on it; every number equals the API's. The
//! signatures verify (PASS) until a stored payload is altered in the database directly, after
//! which the report names that agent and seq (FAIL) and the command exits 1. Roles and bad
//! parameters. On SQLite always, on PostgreSQL with SHOPFLOOR_TEST_POSTGRES_URL.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::io::{Cursor, Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use calamine::{Data, Reader, Xlsx};
use common::*;
use serde_json::{Value, json};

const MIN: i64 = 60_000;
const PERIOD: &str = "from=2025-03-03T00:00:00Z&to=2025-03-03T02:00:00Z";
const FROM: &str = "2025-03-03T00:00:00Z";
const TO: &str = "2025-03-03T02:00:00Z";
const CNC: &str = "p1/e1/w1/l1/cnc-01";
const M_EL: &str = "p1/e1/w1/m-el";
const M_GAS: &str = "p1/e1/w1/m-gas";

/// 08:00 in Shanghai; the period is two hours from there.
fn t0() -> i64 {
    FROM.parse::<jiff::Timestamp>().unwrap().as_millisecond()
}

const ENTITIES: &str = r#"
[[entity]]
id = "p1"
kind = "park"
name_zh = "测试园区"
name_en = "Test park"
region = "测试区"

[[entity]]
id = "p1/e1"
kind = "enterprise"
name_zh = "绿色机械有限公司"
name_en = "Green Machining Co."
land_area_m2 = 120000.0
coefficient_overrides = { natural_gas_kgce_per_m3 = 1.33 }

[[entity]]
id = "p1/e1/w1"
kind = "workshop"
name_zh = "机加车间"
name_en = "Machining workshop"

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

[[entity]]
id = "p1/e1/w1/m-gas"
kind = "meter"
carrier = "natural_gas"
unit = "m3"
"#;

const TARGETS: &str = r#"
[[target]]
id = "test-output-per-kwh"
indicator = "output_per_kwh"
scope = "enterprise"
comparison = "ge"
value = 30.0
unit = "CNY/kWh"
year = 2025
seed = "test:1"
name_zh = "用电产出"

[[target]]
id = "test-solid-waste"
indicator = "solid_waste_utilization_rate"
scope = "enterprise"
comparison = "ge"
value = 0.85
unit = "ratio"
year = 2025
seed = "test:2"
name_zh = "工业固体废物综合利用率"
"#;

fn write_plant_registry(dir: &Path, public_key: &str) -> (PathBuf, PathBuf) {
    let reg = dir.join("registry");
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
            "[[agent]]\nid = \"{AGENT}\"\npublic_key = \"{public_key}\"\nscope = [\"p1/e1/w1\"]\n"
        ),
    )
    .unwrap();
    let targets = dir.join("targets.toml");
    std::fs::write(&targets, TARGETS).unwrap();
    (reg, targets)
}

/// Batch `j` (0..5): the window `(b[j], b[j+1]]` with b = t0 − 20 min, t0, +30, +60, +90,
/// +120 min. Readings every 5 minutes from t0 − 15 min: +12.5 kWh, +0.75 m³, +10 produced,
/// +9 good each. Producing until t0 + 90 min, then idle.
fn contents(j: usize) -> Value {
    let t0 = t0();
    let b = [
        t0 - 20 * MIN,
        t0,
        t0 + 30 * MIN,
        t0 + 60 * MIN,
        t0 + 90 * MIN,
        t0 + 120 * MIN,
    ];
    let (lo, hi) = (b[j], b[j + 1]);
    let readings = |base: f64, step: f64| -> Vec<Value> {
        (0..=27)
            .map(|i| (t0 - 15 * MIN + i * 5 * MIN, base + step * i as f64))
            .filter(|(t, _)| *t > lo && *t <= hi)
            .map(|(t, v)| json!({"t": t, "v": v}))
            .collect()
    };
    let mut states = Vec::new();
    for (a, z, s) in [
        (t0 - 20 * MIN, t0 + 90 * MIN, "producing"),
        (t0 + 90 * MIN, t0 + 120 * MIN, "idle"),
    ] {
        let (f, t) = (a.max(lo), z.min(hi));
        if f < t {
            states.push(json!({"from": f, "to": t, "state": s}));
        }
    }
    json!({
        "from": lo,
        "to": hi,
        "devices": [
            {"id": CNC, "template": "test-cnc", "states": states, "counters": [
                {"role": "produced", "point": "parts_total", "width_bits": 32, "readings": readings(1000.0, 10.0)},
                {"role": "good", "point": "good_total", "width_bits": 32, "readings": readings(1000.0, 9.0)}
            ]},
            {"id": M_EL, "template": "test-meter", "counters": [
                {"role": "electricity", "point": "energy_total", "readings": readings(10_000.0, 12.5)}
            ]},
            {"id": M_GAS, "template": "test-gas", "counters": [
                {"role": "natural_gas", "point": "volume_total", "readings": readings(500.0, 0.75)}
            ]}
        ]
    })
}

/// GET with the response head: (status, head, body).
fn get_full(addr: SocketAddr, path: &str, token: &str) -> (u16, String, Vec<u8>) {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(120))).unwrap();
    let head = format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n"
    );
    s.write_all(head.as_bytes()).unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let head = String::from_utf8_lossy(&raw[..split]).to_string();
    let status: u16 = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    let mut body = raw[split + 4..].to_vec();
    if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        let mut out = Vec::new();
        let mut b = &body[..];
        loop {
            let eol = b.windows(2).position(|w| w == b"\r\n").unwrap();
            let n =
                usize::from_str_radix(std::str::from_utf8(&b[..eol]).unwrap().trim(), 16).unwrap();
            if n == 0 {
                break;
            }
            out.extend_from_slice(&b[eol + 2..eol + 2 + n]);
            b = &b[eol + 2 + n + 2..];
        }
        body = out;
    }
    (status, head, body)
}

fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

type Values = BTreeMap<String, Option<f64>>;

fn api_values(api: &Value) -> Values {
    api["indicators"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v["value"].as_f64()))
        .collect()
}

fn assert_values(what: &str, want: &Values, got: &Values) {
    assert_eq!(
        want.keys().collect::<Vec<_>>(),
        got.keys().collect::<Vec<_>>(),
        "{what}: the same indicator ids"
    );
    for (id, w) in want {
        match (got[id], *w) {
            // serde_json (without `float_roundtrip`) may read a decimal one ulp off; the
            // report's exact texts parse correctly with `str::parse`.
            (Some(g), Some(w)) => assert!(
                g == w || (g - w).abs() <= 4.0 * f64::EPSILON * w.abs().max(g.abs()),
                "{what}: {id}: {g} ≠ {w}"
            ),
            (g, w) => assert_eq!(g, w, "{what}: {id}"),
        }
    }
}

/// `data-value` of every indicator row of the HTML's indicator section.
fn html_values(html: &str) -> Values {
    let start = html.find("<section id=\"indicators\">").unwrap();
    let end = start + html[start..].find("</section>").unwrap();
    let section = &html[start..end];
    let mut out = Values::new();
    for row in section.split("<tr data-id=\"").skip(1) {
        let id = &row[..row.find('"').unwrap()];
        let row = &row[..row.find("</tr>").unwrap()];
        let v = row.split("data-value=\"").nth(1).unwrap();
        let v = &v[..v.find('"').unwrap()];
        out.insert(
            id.to_owned(),
            (!v.is_empty()).then(|| v.parse::<f64>().unwrap()),
        );
    }
    out
}

fn check_html(html: &str, lang: &str, api: &Value) {
    assert!(html.starts_with("<!DOCTYPE html>"));
    assert!(html.contains(&format!("<html lang=\"{lang}\">")), "{lang}");
    // Self-contained: nothing loaded from anywhere.
    for banned in [
        "http://", "https://", "<script", "<link", "src=", "url(", "@import",
    ] {
        assert!(!html.contains(banned), "the HTML contains {banned}");
    }
    assert!(html.contains("@page { size: A4"));
    let zh = [
        "绿色工厂绩效指标",
        "能源平衡（按能源品种）",
        "经济数据及其审计记录",
        "数据完整性",
        "签名验证",
    ];
    let en = [
        "Green factory performance indicators",
        "Energy balance by carrier",
        "Economic inputs and their audit trail",
        "Data completeness",
        "Signature verification",
    ];
    let (want, not) = if lang == "en" { (en, zh) } else { (zh, en) };
    for h in want {
        assert!(html.contains(h), "{lang}: heading {h}");
    }
    for h in not {
        assert!(!html.contains(&format!(">{h}<")), "{lang}: no heading {h}");
    }
    assert_values(
        &format!("html {lang}"),
        &api_values(api),
        &html_values(html),
    );
    // Green-factory indicators come first.
    let first = html.find("<tr data-id=\"").unwrap();
    assert!(html[first..].starts_with("<tr data-id=\"energy_per_value_added\""));
}

fn xlsx_rows(bytes: &[u8], sheet: &str) -> Vec<Vec<Data>> {
    let mut wb: Xlsx<_> = Xlsx::new(Cursor::new(bytes.to_vec())).unwrap();
    let range = wb.worksheet_range(sheet).unwrap();
    range.rows().map(<[Data]>::to_vec).collect()
}

fn cell_text(d: &Data) -> String {
    match d {
        Data::String(s) => s.clone(),
        Data::Float(f) => f.to_string(),
        Data::Int(i) => i.to_string(),
        Data::Bool(b) => b.to_string(),
        _ => String::new(),
    }
}

fn check_xlsx(bytes: &[u8], api: &Value, verdict: &str) {
    assert!(bytes.starts_with(b"PK"), "a zip file");
    let wb: Xlsx<_> = Xlsx::new(Cursor::new(bytes.to_vec())).unwrap();
    let names = wb.sheet_names();
    for s in [
        "Summary",
        "Indicators",
        "Energy",
        "Inputs",
        "Audit",
        "Signatures",
    ] {
        assert!(names.iter().any(|n| n == s), "sheet {s} in {names:?}");
    }
    let rows = xlsx_rows(bytes, "Indicators");
    let mut got = Values::new();
    for r in &rows[1..] {
        let v = match &r[3] {
            Data::Float(f) => Some(*f),
            Data::Empty => None,
            other => panic!("{:?}: the value is a number cell, not {other:?}", r[0]),
        };
        got.insert(cell_text(&r[0]), v);
    }
    assert_values("xlsx", &api_values(api), &got);
    let summary = xlsx_rows(bytes, "Summary");
    let sig = summary
        .iter()
        .find(|r| cell_text(&r[0]) == "signatures")
        .unwrap();
    assert_eq!(cell_text(&sig[2]), verdict);
}

/// CSV rows (BOM checked and removed).
fn csv_rows(bytes: &[u8]) -> Vec<Vec<String>> {
    assert!(bytes.starts_with(b"\xEF\xBB\xBF"), "UTF-8 byte-order mark");
    let mut rd = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .from_reader(&bytes[3..]);
    rd.records()
        .map(|r| r.unwrap().iter().map(str::to_owned).collect())
        .collect()
}

fn csv_values(rows: &[Vec<String>]) -> Values {
    rows.iter()
        .filter(|r| r[0] == "indicator")
        .map(|r| {
            (
                r[1].clone(),
                (!r[4].is_empty()).then(|| r[4].parse::<f64>().unwrap()),
            )
        })
        .collect()
}

fn check_csv(bytes: &[u8], api: &Value, verdict: &str) -> Vec<Vec<String>> {
    let rows = csv_rows(bytes);
    assert_eq!(rows[0][0], "#summary");
    assert_values("csv", &api_values(api), &csv_values(&rows));
    let sig = rows
        .iter()
        .find(|r| r[0] == "summary" && r[1] == "signatures")
        .unwrap();
    assert_eq!(sig[3], verdict);
    rows
}

/// The enterprise's CSV beyond the indicators: energy balance, inputs and their audit trail,
/// signatures.
fn check_csv_details(rows: &[Vec<String>], api: &Value) {
    let energy: BTreeMap<&str, &Vec<String>> = rows
        .iter()
        .filter(|r| r[0] == "energy")
        .map(|r| (r[1].as_str(), r))
        .collect();
    let el = energy["electricity"];
    let gas = energy["natural_gas"];
    assert_eq!(el[5], "300", "kWh");
    assert_eq!(el[10], "0.1229", "the set's electricity coefficient");
    assert!(el[11].contains("gbt2589-2020"), "{}", el[11]);
    assert_eq!(gas[5], "18", "m³");
    assert_eq!(gas[10], "1.33", "the enterprise's override");
    assert!(gas[11].contains("natural_gas_kgce_per_m3"), "{}", gas[11]);
    let kgce = |r: &Vec<String>| r[12].parse::<f64>().unwrap();
    assert!((kgce(el) - 300.0 * 0.1229).abs() < 1e-9);
    assert!((kgce(gas) - 18.0 * 1.33).abs() < 1e-9);
    let total = api["indicators"]["energy_kgce"]["value"].as_f64().unwrap();
    assert!((kgce(el) + kgce(gas) - total).abs() < 1e-9 * total);
    let co2 = api["indicators"]["co2_kg"]["value"].as_f64().unwrap();
    // Water (the unmetered water of the inputs) is not energy and emits nothing.
    assert_eq!(energy["water"][12], "", "no kgce for water");
    let co2_rows: f64 = energy
        .values()
        .filter_map(|r| r[16].parse::<f64>().ok())
        .sum();
    assert!((co2_rows - co2).abs() < 1e-9 * co2);

    let versions: Vec<&Vec<String>> = rows.iter().filter(|r| r[0] == "input_version").collect();
    assert_eq!(versions.len(), 2, "two versions of the March record");
    assert_eq!(versions[0][4], "1");
    assert_eq!(versions[0][5], "false");
    assert_eq!(versions[1][4], "2");
    assert_eq!(versions[1][5], "true");
    let audit: Vec<&Vec<String>> = rows.iter().filter(|r| r[0] == "audit").collect();
    let corrected = audit
        .iter()
        .find(|r| r[7] == "value_added_cny" && !r[8].is_empty())
        .expect("the correction of the value added");
    assert_eq!(corrected[8], "74400000");
    assert_eq!(corrected[9], "89280000");
    assert_eq!(corrected[6], "2");
    assert!(corrected[2].starts_with("token:"), "{}", corrected[2]);
    let used = rows
        .iter()
        .find(|r| r[0] == "input_used" && r[2] == "value_added_cny")
        .unwrap();
    assert_eq!(
        used[3].parse::<f64>().unwrap(),
        api["indicators"]["value_added_cny"]["value"]
            .as_f64()
            .unwrap()
    );

    let sig: Vec<&Vec<String>> = rows.iter().filter(|r| r[0] == "signature").collect();
    assert_eq!(sig.len(), 1);
    assert_eq!(sig[0][1], AGENT);
    assert_eq!(
        sig[0][5], "2",
        "the period's first batch (seq 1 ends at its start)"
    );
    assert_eq!(sig[0][6], "5");
    assert_eq!(sig[0][8], "4", "checked");
    assert_eq!(sig[0][9], "4", "verified");
}

fn cli() -> std::process::Command {
    std::process::Command::new(env!("CARGO_BIN_EXE_shopfloor-gateway"))
}

/// Runs `report` and returns (exit code, stderr, file bytes).
fn run_report(
    config: &Path,
    entity: &str,
    format: &str,
    lang: &str,
    out: &Path,
    via_env: bool,
) -> (i32, String, Vec<u8>) {
    let mut c = cli();
    c.arg("report");
    if via_env {
        c.env("SHOPFLOOR_GATEWAY_CONFIG", config);
    } else {
        c.arg("--config").arg(config);
    }
    c.args([
        "--entity", entity, "--from", FROM, "--to", TO, "--format", format, "--lang", lang, "--out",
    ])
    .arg(out);
    let o = c.output().unwrap();
    let bytes = std::fs::read(out).unwrap_or_default();
    (
        o.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&o.stderr).into_owned(),
        bytes,
    )
}

async fn tamper(url: &str, agent: &str, seq: i64) {
    let payload: Vec<u8>;
    if url.starts_with("sqlite:") {
        let pool = sqlx::SqlitePool::connect(url).await.unwrap();
        payload = sqlx::query_scalar("SELECT payload FROM batches WHERE agent = ?1 AND seq = ?2")
            .bind(agent)
            .bind(seq)
            .fetch_one(&pool)
            .await
            .unwrap();
        let altered = alter(&payload);
        let n = sqlx::query("UPDATE batches SET payload = ?1 WHERE agent = ?2 AND seq = ?3")
            .bind(altered)
            .bind(agent)
            .bind(seq)
            .execute(&pool)
            .await
            .unwrap()
            .rows_affected();
        assert_eq!(n, 1);
        pool.close().await;
    } else {
        let pool = sqlx::PgPool::connect(url).await.unwrap();
        payload = sqlx::query_scalar("SELECT payload FROM batches WHERE agent = $1 AND seq = $2")
            .bind(agent)
            .bind(seq)
            .fetch_one(&pool)
            .await
            .unwrap();
        let altered = alter(&payload);
        let n = sqlx::query("UPDATE batches SET payload = $1 WHERE agent = $2 AND seq = $3")
            .bind(altered)
            .bind(agent)
            .bind(seq)
            .execute(&pool)
            .await
            .unwrap()
            .rows_affected();
        assert_eq!(n, 1);
        pool.close().await;
    }
}

/// The payload with the machine's state changed (still well-formed JSON).
fn alter(payload: &[u8]) -> Vec<u8> {
    let text = String::from_utf8(payload.to_vec()).unwrap();
    assert!(text.contains("\"producing\""));
    text.replacen("\"producing\"", "\"setup\"", 1).into_bytes()
}

async fn scenario(store: TestStore) {
    let dir = tempfile::tempdir().unwrap();
    let prefix = unique("report");
    let mut signer = Signer::new(AGENT, new_key());
    let (registry, targets) = write_plant_registry(dir.path(), &signer.public_key());
    let broker = Broker::Embedded(free_port());
    let config = write_config(dir.path(), "gw", &store.url, &broker, &prefix, &registry);
    let text = std::fs::read_to_string(&config).unwrap();
    let text = text.replace(
        "[registry]\n",
        &format!("[registry]\ntargets = \"{}\"\n", targets.display()),
    );
    std::fs::write(&config, text).unwrap();
    let gw = start_gateway(&config).await;
    let viewer = token(&gw.db, "viewer").await;
    let engineer = token(&gw.db, "engineer").await;
    let auditor = token(&gw.db, "auditor").await;
    let admin = token(&gw.db, "admin").await;

    let payloads: Vec<Vec<u8>> = (0..5).map(|j| signer.next(contents(j))).collect();
    publish_all(broker.port(), &prefix, AGENT, payloads).await;

    // March's economic inputs (744 hours), then a correction of the value added.
    let inputs = json!({
        "entity": "p1/e1", "from": "2025-03-01T00:00:00+08:00", "to": "2025-04-01T00:00:00+08:00",
        "value_added_cny": 74_400_000.0, "gross_output_cny": 744_000_000.0, "employees_avg": 400.0,
        "solid_waste_generated_t": 100.0, "solid_waste_utilized_t": 80.0, "unmetered_water_m3": 7_440.0
    });
    let post = |token: &str, body: &Value| {
        let (s, b) = http(
            gw.http,
            "POST",
            "/api/v1/inputs",
            Some(token),
            body.to_string().as_bytes(),
        );
        assert!(
            (200..300).contains(&s),
            "inputs: {s} {}",
            String::from_utf8_lossy(&b)
        );
    };
    post(&engineer, &inputs);
    let mut corrected = inputs.clone();
    corrected["value_added_cny"] = json!(89_280_000.0);
    post(&admin, &corrected);

    // Rolled up: the meters' and the counters' totals for the period.
    let q = |entity: &str| format!("entity={entity}&{PERIOD}");
    let indicators = |entity: &str| {
        get_json(
            gw.http,
            &format!("/api/v1/indicators?{}", q(entity)),
            &viewer,
        )
    };
    let mut done = false;
    for _ in 0..240 {
        let v = indicators("p1/e1");
        let val = |id: &str| v["indicators"][id]["value"].as_f64();
        if val("electricity_kwh") == Some(300.0)
            && val("natural_gas_m3") == Some(18.0)
            && val("produced_qty") == Some(240.0)
            && val("good_qty") == Some(216.0)
            && indicators("p1/e1") == v
        {
            done = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(
        done,
        "the batches were not rolled up: {}",
        indicators("p1/e1")
    );
    let api = indicators("p1/e1");
    assert_eq!(
        api["indicators"]["solid_waste_utilization_rate"]["target"]["met"],
        false
    );
    assert_eq!(api["indicators"]["output_per_kwh"]["target"]["met"], true);

    // --- Through the API, as the auditor. ---
    let report = |entity: &str, format: &str, lang: Option<&str>| {
        let lang = lang.map(|l| format!("&lang={l}")).unwrap_or_default();
        let (s, head, body) = get_full(
            gw.http,
            &format!("/api/v1/reports?{}&format={format}{lang}", q(entity)),
            &auditor,
        );
        assert_eq!(
            s,
            200,
            "{entity} {format}: {}",
            String::from_utf8_lossy(&body)
        );
        (head, body)
    };
    let (head, html) = report("p1/e1", "html", None);
    assert_eq!(
        header(&head, "content-type"),
        Some("text/html; charset=utf-8")
    );
    assert_eq!(
        header(&head, "content-disposition"),
        Some("attachment; filename=\"report-p1_e1-20250303T000000Z-20250303T020000Z.html\"")
    );
    let html = String::from_utf8(html).unwrap();
    check_html(&html, "zh-CN", &api);
    assert!(html.contains("绿色机械有限公司"));
    assert!(html.contains("Asia/Shanghai"));
    assert!(html.contains("gbt2589-2020"));
    assert!(html.contains("data-verdict=\"PASS\""), "signatures verify");
    assert!(html.contains("natural_gas_kgce_per_m3"));
    assert!(
        html.contains("89,280,000"),
        "the corrected value in the audit trail"
    );
    let (_, html_en) = report("p1/e1", "html", Some("en"));
    let html_en = String::from_utf8(html_en).unwrap();
    check_html(&html_en, "en", &api);
    // SHOPFLOOR_TEST_REPORT_DIR=DIR keeps samples to look at.
    if let Ok(keep) = std::env::var("SHOPFLOOR_TEST_REPORT_DIR") {
        let keep = Path::new(&keep);
        std::fs::create_dir_all(keep).unwrap();
        std::fs::write(keep.join("report-zh.html"), &html).unwrap();
        std::fs::write(keep.join("report-en.html"), &html_en).unwrap();
        for (f, l) in [("xlsx", "zh-CN"), ("csv", "zh-CN")] {
            std::fs::write(
                keep.join(format!("report.{f}")),
                report("p1/e1", f, Some(l)).1,
            )
            .unwrap();
        }
        std::fs::write(
            keep.join("park-en.html"),
            report("p1", "html", Some("en")).1,
        )
        .unwrap();
    }
    assert!(html_en.contains("Green Machining Co."));

    let (head, xlsx) = report("p1/e1", "xlsx", None);
    assert_eq!(
        header(&head, "content-type"),
        Some("application/vnd.openxmlformats-officedocument.spreadsheetml.sheet")
    );
    check_xlsx(&xlsx, &api, "PASS");

    let (head, csv) = report("p1/e1", "csv", Some("en"));
    assert_eq!(
        header(&head, "content-type"),
        Some("text/csv; charset=utf-8")
    );
    let rows = check_csv(&csv, &api, "PASS");
    check_csv_details(&rows, &api);

    let (head, json_report) = report("p1/e1", "json", None);
    assert_eq!(header(&head, "content-type"), Some("application/json"));
    let (s, evidence) = http(
        gw.http,
        "GET",
        &format!("/api/v1/evidence?{}", q("p1/e1")),
        Some(&auditor),
        b"",
    );
    assert_eq!(s, 200);
    assert_eq!(
        json_report, evidence,
        "json is exactly the evidence document"
    );
    let file = dir.path().join("evidence.json");
    std::fs::write(&file, &json_report).unwrap();
    assert_same_values("p1/e1", &api, &calc(&file));

    // A workshop and a park: the same numbers as their API answers.
    for entity in ["p1/e1/w1", "p1"] {
        let api = indicators(entity);
        let (_, csv) = report(entity, "csv", None);
        check_csv(&csv, &api, "PASS");
        let (_, html) = report(entity, "html", None);
        let html = String::from_utf8(html).unwrap();
        assert_values(entity, &api_values(&api), &html_values(&html));
    }
    let (_, park) = report("p1", "html", Some("en"));
    let park = String::from_utf8(park).unwrap();
    assert!(park.contains("Enterprises of the park"));
    assert!(park.contains("Green Machining Co."));

    // A period without any data: a report all the same, nothing to verify (PASS), no energy.
    for format in ["html", "xlsx", "csv"] {
        let (s, _, body) = get_full(
            gw.http,
            &format!(
                "/api/v1/reports?entity=p1/e1&from=2025-01-01&to=2025-01-02&format={format}&lang=en"
            ),
            &auditor,
        );
        assert_eq!(s, 200, "{format}: {}", String::from_utf8_lossy(&body));
        if format == "html" {
            let html = String::from_utf8(body).unwrap();
            assert!(html.contains("data-verdict=\"PASS\""));
            assert!(html.contains("No signed batches in the period."));
            // The registered meters are listed, without a quantity.
            assert!(html.contains("<tr data-carrier=\"electricity\">"));
        }
    }

    // --- Roles and bad parameters. ---
    for t in [&viewer, &engineer] {
        let (s, body) = http(
            gw.http,
            "GET",
            &format!("/api/v1/reports?{}", q("p1/e1")),
            Some(t),
            b"",
        );
        assert_eq!(s, 403, "{}", String::from_utf8_lossy(&body));
    }
    let (s, _, _) = get_full(
        gw.http,
        &format!("/api/v1/reports?{}&format=xlsx", q("p1/e1")),
        &admin,
    );
    assert_eq!(s, 200, "admins may");
    for (query, field) in [
        (format!("{}&format=pdf", q("p1/e1")), "format"),
        (format!("{}&lang=fr", q("p1/e1")), "lang"),
        (q("P1/E1"), "entity"),
        (q("p1/e1/w1/l1"), "entity"),
        (q(CNC), "entity"),
        (
            "entity=p1/e1&from=2025-03-03T00:00:30Z&to=2025-03-03T02:00:00Z".into(),
            "from",
        ),
        (format!("{}&colour=red", q("p1/e1")), "colour"),
    ] {
        let (s, body) = http(
            gw.http,
            "GET",
            &format!("/api/v1/reports?{query}"),
            Some(&auditor),
            b"",
        );
        let body: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(s, 400, "{query}: {body}");
        let err = body["error"].as_str().unwrap();
        assert!(err.starts_with(field), "{query}: {err}");
    }
    let (s, _) = http(
        gw.http,
        "GET",
        &format!("/api/v1/reports?{}", q("p9")),
        Some(&auditor),
        b"",
    );
    assert_eq!(s, 404);

    // --- The command line, on the same store. ---
    let out = dir.path().join("out");
    std::fs::create_dir_all(&out).unwrap();
    let (code, err, html) = run_report(
        &config,
        "p1/e1",
        "html",
        "zh-CN",
        &out.join("r.html"),
        false,
    );
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("PASS"), "{err}");
    check_html(&String::from_utf8(html).unwrap(), "zh-CN", &api);
    let (code, err, html) =
        run_report(&config, "p1/e1", "html", "en", &out.join("r-en.html"), true);
    assert_eq!(
        code, 0,
        "the configuration from SHOPFLOOR_GATEWAY_CONFIG: {err}"
    );
    check_html(&String::from_utf8(html).unwrap(), "en", &api);
    let (code, err, xlsx) = run_report(
        &config,
        "p1/e1",
        "xlsx",
        "zh-CN",
        &out.join("r.xlsx"),
        false,
    );
    assert_eq!(code, 0, "{err}");
    check_xlsx(&xlsx, &api, "PASS");
    let (code, err, csv) = run_report(&config, "p1/e1", "csv", "zh-CN", &out.join("r.csv"), false);
    assert_eq!(code, 0, "{err}");
    check_csv_details(&check_csv(&csv, &api, "PASS"), &api);
    let (code, err, json_cli) = run_report(
        &config,
        "p1/e1",
        "json",
        "zh-CN",
        &out.join("e.json"),
        false,
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(json_cli, evidence, "the CLI's json is the API's evidence");
    assert_same_values("p1/e1 (cli)", &api, &calc(&out.join("e.json")));
    // Nothing but the report is left in the directory (the temporary file was renamed).
    let names: Vec<String> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(names.iter().all(|n| !n.ends_with(".tmp")), "{names:?}");

    // Bad arguments: exit 2, `field: reason`, nothing written.
    for (args, field) in [
        (vec!["--format", "pdf"], "format:"),
        (vec!["--lang", "fr"], "lang:"),
        (vec!["--entity", "p1/e1/w1/l1"], "entity:"),
        (vec!["--entity", "p9"], "entity:"),
        (vec!["--from", "yesterday"], "from:"),
    ] {
        let mut all: BTreeMap<&str, &str> = [
            ("--entity", "p1/e1"),
            ("--from", FROM),
            ("--to", TO),
            ("--format", "html"),
            ("--lang", "zh-CN"),
        ]
        .into();
        all.insert(args[0], args[1]);
        let target = out.join("bad.html");
        let o = cli()
            .arg("report")
            .arg("--config")
            .arg(&config)
            .args(all.iter().flat_map(|(k, v)| [*k, *v]))
            .arg("--out")
            .arg(&target)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(field), "{args:?}: {err}");
        assert!(!target.exists());
    }
    let o = cli()
        .args(["report", "--config"])
        .arg(dir.path().join("missing.toml"))
        .args([
            "--entity", "p1/e1", "--from", FROM, "--to", TO, "--format", "html", "--out",
        ])
        .arg(out.join("x.html"))
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));

    // --- A stored payload altered in the database: FAIL, naming the agent and the seq. ---
    tamper(&store.url, AGENT, 3).await;
    let (_, html) = report("p1/e1", "html", None);
    let html = String::from_utf8(html).unwrap();
    if let Ok(keep) = std::env::var("SHOPFLOOR_TEST_REPORT_DIR") {
        std::fs::write(Path::new(&keep).join("tampered-zh.html"), &html).unwrap();
    }
    assert!(html.contains("data-verdict=\"FAIL\""));
    for reason in ["bad_signature", "hash_mismatch"] {
        assert!(
            html.contains(&format!(
                "<tr data-agent=\"{AGENT}\" data-seq=\"3\" data-reason=\"{reason}\">"
            )),
            "seq 3: {reason}"
        );
    }
    assert!(
        html.contains(&format!(
            "<tr data-agent=\"{AGENT}\" data-seq=\"4\" data-reason=\"chain_break\">"
        )),
        "seq 4 no longer chains to the altered seq 3"
    );
    let (_, csv) = report("p1/e1", "csv", None);
    let rows = check_csv(&csv, &api, "FAIL");
    let sig = rows.iter().find(|r| r[0] == "signature").unwrap();
    assert_eq!(sig[2], "FAIL");
    assert_eq!(sig[9], "2", "seq 2 and 5 still verify");
    assert!(rows.iter().any(|r| r[0] == "signature_failure"
        && r[1] == AGENT
        && r[2] == "3"
        && r[3] == "bad_signature"));
    let (_, xlsx) = report("p1/e1", "xlsx", None);
    check_xlsx(&xlsx, &api, "FAIL");
    // The command line writes the report and exits 1.
    let target = out.join("tampered.html");
    let (code, err, html) = run_report(&config, "p1/e1", "html", "en", &target, false);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("FAIL"), "{err}");
    let html = String::from_utf8(html).unwrap();
    assert!(html.contains("data-verdict=\"FAIL\""));
    assert!(html.contains(&format!("data-agent=\"{AGENT}\" data-seq=\"3\"")));
    let (code, _, _) = run_report(&config, "p1/e1", "json", "en", &out.join("t.json"), false);
    assert_eq!(code, 1, "json from the command line is verified too");
    // The API's json stays the evidence file alone.
    let (s, _) = http(
        gw.http,
        "GET",
        &format!("/api/v1/reports?{}&format=json", q("p1/e1")),
        Some(&auditor),
        b"",
    );
    assert_eq!(s, 200);

    gw.stop().await;
    store.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reports_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let store = TestStore::sqlite(dir.path()).await;
    scenario(store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reports_postgres() {
    let Some(store) = TestStore::postgres("reports_postgres").await else {
        return;
    };
    scenario(store).await;
}
