//! Table-driven worked examples: one small case per formula of INDICATORS.md / docs/ENGINE.md,
//! each computed by hand in the comment beside it.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed test

use serde_json::{Value, json};

const FROM: &str = "2026-10-01T08:00:00+08:00";
const TO: &str = "2026-10-01T16:00:00+08:00"; // 8 h = 28 800 s

fn t(hhmm: &str) -> String {
    format!("2026-10-01T{hhmm}:00+08:00")
}

/// One machine: producing 08:00–14:00 (6 h), setup 14:00–14:30, delay 14:30–15:00,
/// planned_down 15:00–15:30, idle 15:30–15:45, nothing 15:45–16:00 (offline 15 min).
/// PBT = 28 800 − 1 800 = 27 000 s; APT = 21 600 s.
/// Products: A ideal 2 s, 8 000 produced, 7 600 good; B ideal 5 s, 1 000 produced, 980 good.
fn machine(id: &str, control: &str, key: Option<&str>, networked: bool) -> Value {
    let mut m = json!({
        "id": id, "kind": "cnc", "control": control, "networked": networked,
        "states": [
            {"from": t("08:00"), "to": t("14:00"), "state": "producing"},
            {"from": t("14:00"), "to": t("14:30"), "state": "setup"},
            {"from": t("14:30"), "to": t("15:00"), "state": "delay"},
            {"from": t("15:00"), "to": t("15:30"), "state": "planned_down"},
            {"from": t("15:30"), "to": t("15:45"), "state": "idle"}
        ],
        "products": [
            {"id": "A", "ideal_cycle_s": 2.0, "produced": 8000, "good": 7600, "value_added_per_unit_cny": 3.0},
            {"id": "B", "ideal_cycle_s": 5.0, "produced": 1000, "good": 980}
        ],
        "data_points": {"configured": 20, "received": 18}
    });
    if let Some(k) = key {
        m["key_process"] = json!(k);
    }
    m
}

fn evidence(entity: &str, equipment: Vec<Value>, meters: Vec<Value>, extra: Value) -> Value {
    let mut v = json!({
        "schema": "shopfloor.evidence/1", "entity": entity,
        "period": {"from": FROM, "to": TO},
        "equipment": equipment, "meters": meters
    });
    if let (Some(o), Some(e)) = (v.as_object_mut(), extra.as_object()) {
        for (k, x) in e {
            o.insert(k.clone(), x.clone());
        }
    }
    v
}

fn eq_level() -> Value {
    evidence(
        "p1/e1/w1/l1/m1",
        vec![machine("p1/e1/w1/l1/m1", "cnc", Some("machining"), true)],
        vec![],
        json!({}),
    )
}

fn meter(id: &str, carrier: &str, unit: &str, consumption: f64) -> Value {
    json!({"id": id, "carrier": carrier, "unit": unit, "consumption": consumption})
}

fn value(ev: &Value, id: &str) -> Option<f64> {
    let r = shopfloor_core::calc(&ev.to_string()).unwrap_or_else(|e| panic!("{e}"));
    r.indicators
        .get(id)
        .unwrap_or_else(|| panic!("{id} not computed"))
        .value
}

fn check(name: &str, ev: &Value, id: &str, want: Option<f64>) {
    let got = value(ev, id);
    let ok = match (got, want) {
        (None, None) => true,
        (Some(g), Some(w)) => (g - w).abs() <= 1e-12 * w.abs().max(1.0),
        _ => false,
    };
    assert!(ok, "{name}: {id} = {got:?}, worked by hand: {want:?}");
}

#[test]
fn equipment_level_formulas() {
    let e = eq_level();
    let rows: &[(&str, &str, Option<f64>)] = &[
        // period 28 800 − planned_down 1 800
        ("PBT", "planned_busy_time_s", Some(27_000.0)),
        ("APT", "actual_production_time_s", Some(21_600.0)),
        // 21 600 / 27 000
        ("availability", "availability", Some(0.8)),
        // (2 × 8 000 + 5 × 1 000) / 21 600 = 21 000 / 21 600
        ("performance", "performance", Some(21_000.0 / 21_600.0)),
        // (7 600 + 980) / 9 000 = 8 580 / 9 000
        ("quality", "quality_rate", Some(8_580.0 / 9_000.0)),
        // (2 × 7 600 + 5 × 980) / 27 000 = 20 100 / 27 000
        ("OEE", "oee", Some(20_100.0 / 27_000.0)),
        // 20 100 / 28 800
        ("TEEP", "teep", Some(20_100.0 / 28_800.0)),
        ("produced", "produced_qty", Some(9_000.0)),
        ("good", "good_qty", Some(8_580.0)),
        ("scrap", "scrap_qty", Some(420.0)),
        // 420 / 9 000
        ("defect rate", "defect_rate", Some(420.0 / 9_000.0)),
        // 7 600 × 3.0 (B has no price)
        ("value added estimate", "value_added_cny", Some(22_800.0)),
        ("networked", "networked", Some(1.0)),
        ("NC", "nc_controlled", Some(1.0)),
        // no meter: no energy figure, not 0
        ("energy without meters", "energy_kgce", None),
        ("electricity without meters", "electricity_kwh", None),
    ];
    for (name, id, want) in rows {
        check(name, &e, id, *want);
    }
}

#[test]
fn performance_is_not_capped_and_zero_denominators_are_null() {
    // Ideal cycle 10 s for A: (10 × 8 000 + 5 × 1 000) / 21 600 = 3.935…, reported as is.
    let mut e = eq_level();
    e["equipment"][0]["products"][0]["ideal_cycle_s"] = json!(10.0);
    check(
        "uncapped performance",
        &e,
        "performance",
        Some(85_000.0 / 21_600.0),
    );
    // The whole period planned down: PBT = 0 → availability and OEE null, not 0.
    let mut e = eq_level();
    e["equipment"][0]["states"] = json!([{"from": FROM, "to": TO, "state": "planned_down"}]);
    check("PBT 0", &e, "availability", None);
    check("PBT 0", &e, "oee", None);
    check("APT 0", &e, "performance", None);
    // Nothing produced: quality and defect rate null.
    let mut e = eq_level();
    e["equipment"][0]["products"] =
        json!([{"id": "A", "ideal_cycle_s": 2.0, "produced": 0, "good": 0}]);
    check("produced 0", &e, "quality_rate", None);
    check("produced 0", &e, "defect_rate", None);
    check("produced 0", &e, "produced_qty", Some(0.0));
}

#[test]
fn energy_and_co2() {
    let meters = vec![
        meter("p1/e1/w1/l1/m1/em", "electricity", "MWh", 2.5), // 2 500 kWh
        meter("p1/e1/w1/l1/m1/gm", "natural_gas", "m3", 100.0),
        meter("p1/e1/w1/l1/m1/wm", "water", "m3", 40.0),
    ];
    let e = evidence(
        "p1/e1/w1/l1/m1",
        vec![machine("p1/e1/w1/l1/m1", "cnc", None, true)],
        meters.clone(),
        json!({}),
    );
    check("MWh → kWh", &e, "electricity_kwh", Some(2_500.0));
    check("water", &e, "water_m3", Some(40.0));
    // 2 500 × 0.1229 + 100 × 1.2143 = 307.25 + 121.43; water is not energy
    check("energy", &e, "energy_kgce", Some(428.68));
    // 428.68 / 8 580 good
    check(
        "energy per unit",
        &e,
        "energy_per_unit_kgce",
        Some(428.68 / 8_580.0),
    );
    // 2 500 × 0.5306 + 100 × 2.1622 = 1 326.5 + 216.22
    check("CO2", &e, "co2_kg", Some(1_542.72));
    // 等价值: 2 500 × 0.3050 + 121.43 = 762.5 + 121.43
    let mut q = e.clone();
    q["coefficients"] = json!({"electricity_basis": "equal_value"});
    check("equal value", &q, "energy_kgce", Some(883.93));
    // Override gas 1.33: 307.25 + 133 = 440.25; carbon-market grid factor 0.5703: 1 425.75 + 216.22
    let mut o = e.clone();
    o["coefficients"] = json!({"overrides": {"natural_gas_kgce_per_m3": 1.33, "electricity_kgco2_per_kwh": 0.5703}});
    check("override kgce", &o, "energy_kgce", Some(440.25));
    check("override CO2", &o, "co2_kg", Some(1_641.97));
    // Meter with readings, CT 50 × PT 1: 1 200.0 → 1 203.5 → 1 210.0 = 10 × 50 = 500 kWh
    let mut r = e.clone();
    r["meters"] = json!([{"id": "p1/e1/w1/l1/m1/em", "carrier": "electricity", "unit": "kWh", "ct_ratio": 50,
        "readings": [{"at": FROM, "value": 1200.0}, {"at": t("12:00"), "value": 1203.5}, {"at": TO, "value": 1210.0}]}]);
    check("CT ratio", &r, "electricity_kwh", Some(500.0));
}

#[test]
fn workshop_formulas() {
    // Four machines: m1 cnc key, m2 manual key, m3 robot not networked, m4 plc key without
    // products (data points 20/18 each → 72/80).
    let mut m4 = machine("p1/e1/w1/l1/m4", "plc", Some("machining"), true);
    m4["products"] = json!([]);
    let eqs = vec![
        machine("p1/e1/w1/l1/m1", "cnc", Some("machining"), true),
        machine("p1/e1/w1/l1/m2", "manual", Some("machining"), true),
        machine("p1/e1/w1/l2/m3", "robot", None, false),
        m4,
    ];
    let base = json!({"baseline": {"good_per_pbt_hour": 1000.0, "defect_rate": 0.05}});
    let w = evidence(
        "p1/e1/w1",
        eqs,
        vec![meter("p1/e1/w1/em", "electricity", "kWh", 10_000.0)],
        base,
    );
    let rows: &[(&str, &str, Option<f64>)] = &[
        // key-process machines m1, m2, m4; NC: m1 (cnc), m4 (plc) → 2/3
        ("NC rate", "key_process_nc_rate", Some(2.0 / 3.0)),
        // NC: m1, m3, m4 of 4
        ("digital equipment", "digital_equipment_rate", Some(0.75)),
        ("networking", "equipment_networking_rate", Some(0.75)),
        (
            "data collection",
            "data_auto_collection_rate",
            Some(72.0 / 80.0),
        ),
        // ratio of sums: availability Σ APT / Σ PBT = 4 × 21 600 / 4 × 27 000
        ("availability", "availability", Some(0.8)),
        // OEE over machines with products (m1–m3): 3 × 20 100 / 3 × 27 000
        ("OEE", "oee", Some(20_100.0 / 27_000.0)),
        // good per PBT hour: 3 × 8 580 / (3 × 7.5 h) = 1 144 → 1 144 / 1 000 − 1
        (
            "efficiency change",
            "production_efficiency_change",
            Some(0.144),
        ),
        // defect rate 420/9 000 = 0.04667 → / 0.05 − 1
        (
            "defect change",
            "defect_rate_change",
            Some((420.0 / 9_000.0) / 0.05 - 1.0),
        ),
        // 10 000 × 0.1229 = 1 229 kgce = 1.229 tce; VA estimate 3 × 22 800 = 68 400 → 6.84 万元
        (
            "energy per value added (estimate)",
            "energy_per_value_added",
            Some(1.229 / 6.84),
        ),
    ];
    for (name, id, want) in rows {
        check(name, &w, id, *want);
    }
    // Process mode: the key process `machining` has a manual machine → not under PLC/DCS: 0/1.
    let mut p = w.clone();
    p["industry_mode"] = json!("process");
    check("process-mode NC rate", &p, "key_process_nc_rate", Some(0.0));
}

fn enterprise(inputs: Value, extra: Value) -> Value {
    let meters = vec![
        meter("p1/e1/em-main", "electricity", "kWh", 400_000.0),
        json!({"id": "p1/e1/w1/em-sub", "carrier": "electricity", "unit": "kWh", "consumption": 150_000.0, "parent": "p1/e1/em-main"}),
        json!({"id": "p1/e1/pv", "carrier": "electricity", "unit": "kWh", "consumption": 100_000.0, "renewable": true}),
        meter("p1/e1/wm", "water", "m3", 2_000.0),
    ];
    let mut e = evidence(
        "p1/e1",
        vec![machine("p1/e1/w1/l1/m1", "cnc", Some("machining"), true)],
        meters,
        extra,
    );
    e["inputs"] = inputs;
    // A whole calendar month: October 2026, 31 of 365 days.
    e["period"] = json!({"from": "2026-10-01T00:00:00+08:00", "to": "2026-11-01T00:00:00+08:00"});
    e["equipment"][0]["states"] = json!([]);
    e
}

#[test]
fn enterprise_formulas() {
    let inputs = json!({"value_added_cny": 2_000_000.0, "gross_output_cny": 9_000_000.0, "employees_avg": 50.0,
        "land_area_m2": 20_000.0, "solid_waste_generated_t": 80.0, "solid_waste_utilized_t": 68.0});
    let e = enterprise(
        inputs,
        json!({"baseline": {"energy_per_value_added": 0.4, "water_per_value_added": 12.0}}),
    );
    // Sub-meter left out: electricity 400 000 + 100 000 (PV) = 500 000 kWh → 61 450 kgce.
    let rows: &[(&str, &str, Option<f64>)] = &[
        ("electricity", "electricity_kwh", Some(500_000.0)),
        ("energy tce", "energy_tce", Some(61.45)),
        // 61.45 tce / 200 万元
        (
            "energy per value added",
            "energy_per_value_added",
            Some(61.45 / 200.0),
        ),
        // 2 000 m³ / 200 万元
        ("water per value added", "water_per_value_added", Some(10.0)),
        // PV emits nothing: 400 000 × 0.5306 = 212 240 kg = 212.24 t / 200 万元
        (
            "CO2 per value added",
            "co2_per_value_added",
            Some(212.24 / 200.0),
        ),
        // 9 000 000 / 500 000 kWh
        ("output per kWh", "output_per_kwh", Some(18.0)),
        // 200 万元 / 50 people / (31/365 year)
        (
            "labour productivity",
            "labor_productivity",
            Some(4.0 * 365.0 / 31.0),
        ),
        ("solid waste", "solid_waste_utilization_rate", Some(0.85)),
        // 0.09 亿元 / 0.02 km²
        ("land output", "land_output_intensity", Some(4.5)),
        // 100 000 × 0.1229 / 61 450
        ("renewable share", "renewable_energy_share", Some(0.2)),
        // 0.30725 / 0.4 − 1; 10 / 12 − 1
        (
            "energy change",
            "energy_per_value_added_change",
            Some(61.45 / 200.0 / 0.4 - 1.0),
        ),
        (
            "water change",
            "water_per_value_added_change",
            Some(10.0 / 12.0 - 1.0),
        ),
        // reported value added wins over the estimate
        ("value added", "value_added_cny", Some(2_000_000.0)),
    ];
    for (name, id, want) in rows {
        check(name, &e, id, *want);
    }
    // Missing inputs: null, never 0 or NaN.
    let e = enterprise(json!({}), json!({}));
    for id in [
        "output_per_kwh",
        "labor_productivity",
        "solid_waste_utilization_rate",
        "land_output_intensity",
        "water_per_value_added_change",
    ] {
        check("missing input", &e, id, None);
    }
    // Without a reported value added, the live estimate: 7 600 × 3.0 CNY.
    check("estimate", &e, "value_added_cny", Some(22_800.0));
}

#[test]
fn park_formulas() {
    // e1: key machines m1 cnc, m2 manual → 1/2. e2: key m3 cnc, m4 cnc, m5 robot, m6 manual → 3/4.
    // Mean of enterprise rates (1/2 + 3/4) / 2 = 0.625; weighted (1 + 3) / (2 + 4) = 2/3.
    let eqs = vec![
        machine("p1/e1/w1/l1/m1", "cnc", Some("k"), true),
        machine("p1/e1/w1/l1/m2", "manual", Some("k"), true),
        machine("p1/e2/w1/l1/m3", "cnc", Some("k"), true),
        machine("p1/e2/w1/l1/m4", "cnc", Some("k"), true),
        machine("p1/e2/w1/l1/m5", "robot", Some("k"), true),
        machine("p1/e2/w1/l1/m6", "manual", Some("k"), true),
    ];
    let meters = vec![
        meter("p1/e1/em", "electricity", "kWh", 100_000.0),
        meter("p1/e2/em", "electricity", "kWh", 300_000.0),
    ];
    let extra = json!({"entities": [
        {"id": "p1/e1", "inputs": {"value_added_cny": 1_000_000.0, "gross_output_cny": 5_000_000.0, "land_area_m2": 10_000.0},
         "certifications": [{"kind": "green_factory", "since": "2024-06-01"}]},
        {"id": "p1/e2", "inputs": {"gross_output_cny": 3_000_000.0, "land_area_m2": 30_000.0},
         "certifications": [{"kind": "green_factory", "since": "2023-01-01", "until": "2026-09-30"}]},
        {"id": "p1/e2/w1", "certifications": [{"kind": "digital_workshop", "since": "2025-03-01"}]}
    ]});
    let p = evidence("p1", eqs, meters, extra);
    // e2 reports no value added, so its live estimate counts: 4 machines × 22 800 CNY = 9.12 万元.
    let rows: &[(&str, &str, Option<f64>)] = &[
        ("NC mean", "key_process_nc_rate", Some(0.625)),
        (
            "NC weighted",
            "key_process_nc_rate_weighted",
            Some(2.0 / 3.0),
        ),
        // (12 290 + 36 870) kgce = 49.16 tce / (100 + 9.12) 万元
        (
            "energy per value added",
            "energy_per_value_added",
            Some(49.16 / 109.12),
        ),
        // (0.05 + 0.03) 亿元 / (0.01 + 0.03) km²
        ("land output", "land_output_intensity", Some(2.0)),
        // e2's certification ended the day before the period: only e1 counts
        ("green factories", "green_factory_count", Some(1.0)),
        ("digital workshops", "digital_workshop_count", Some(1.0)),
        ("smart factories", "smart_factory_count", Some(0.0)),
    ];
    for (name, id, want) in rows {
        check(name, &p, id, *want);
    }
}
