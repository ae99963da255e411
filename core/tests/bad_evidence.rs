//! Bad evidence gets a clear error naming the JSON path and the reason (issue 2: at least ten
//! kinds). Each case edits one valid document.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed test

use serde_json::{Value, json};

fn valid() -> Value {
    json!({
        "schema": "shopfloor.evidence/1",
        "entity": "p1/e1/w1",
        "period": {"from": "2026-10-01T08:00:00+08:00", "to": "2026-10-01T16:00:00+08:00"},
        "equipment": [{
            "id": "p1/e1/w1/l1/cnc-01", "kind": "cnc", "control": "cnc", "key_process": "machining",
            "networked": true,
            "states": [
                {"from": "2026-10-01T08:00:00+08:00", "to": "2026-10-01T10:00:00+08:00", "state": "producing"},
                {"from": "2026-10-01T10:00:00+08:00", "to": "2026-10-01T11:00:00+08:00", "state": "idle"}
            ],
            "products": [{"id": "shaft-a", "ideal_cycle_s": 1.0, "produced": 100, "good": 90}]
        }],
        "meters": [{"id": "m1", "carrier": "electricity", "unit": "kWh", "consumption": 1000.0}],
        "inputs": {"value_added_cny": 50000}
    })
}

/// Applies `edit`, parses, and returns every "path: reason" line.
fn errors(edit: impl FnOnce(&mut Value)) -> Vec<String> {
    let mut v = valid();
    edit(&mut v);
    match shopfloor_core::parse(&v.to_string()) {
        Ok(_) => vec![],
        Err(e) => e.errors.iter().map(ToString::to_string).collect(),
    }
}

fn expect(name: &str, got: &[String], path: &str, reason: &str) {
    assert!(
        got.iter()
            .any(|e| e.starts_with(&format!("{path}: ")) && e.contains(reason)),
        "{name}: expected an error at `{path}` containing `{reason}`, got {got:#?}"
    );
}

#[test]
fn the_base_document_is_valid() {
    assert_eq!(errors(|_| {}), Vec::<String>::new());
}

#[test]
fn every_kind_of_bad_input_names_its_path_and_reason() {
    type Edit = fn(&mut Value);
    let cases: &[(&str, Edit, &str, &str)] = &[
        (
            "unknown top-level field",
            |v| v["colour"] = json!("red"),
            "colour",
            "unknown field",
        ),
        (
            "unknown nested field",
            |v| v["equipment"][0]["products"][0]["weight"] = json!(3),
            "equipment[0].products[0].weight",
            "unknown field",
        ),
        (
            "negative count",
            |v| v["equipment"][0]["products"][0]["produced"] = json!(-5),
            "equipment[0].products[0].produced",
            "negative count -5",
        ),
        (
            "fractional count",
            |v| v["equipment"][0]["products"][0]["good"] = json!(2.5),
            "equipment[0].products[0].good",
            "not a whole number",
        ),
        (
            "interval ends before it starts",
            |v| v["equipment"][0]["states"][1]["to"] = json!("2026-10-01T09:30:00+08:00"),
            "equipment[0].states[1].to",
            "ends before it starts",
        ),
        (
            "overlapping intervals",
            |v| v["equipment"][0]["states"][1]["from"] = json!("2026-10-01T09:00:00+08:00"),
            "equipment[0].states[1]",
            "overlaps states[0]",
        ),
        (
            "unknown state",
            |v| v["equipment"][0]["states"][0]["state"] = json!("running"),
            "equipment[0].states[0].state",
            "unknown variant `running`",
        ),
        (
            "period ends before it starts",
            |v| v["period"]["to"] = json!("2026-10-01T07:00:00+08:00"),
            "period.to",
            "must be after period.from",
        ),
        (
            "time without an offset",
            |v| v["period"]["from"] = json!("2026-10-01 08:00"),
            "period.from",
            "",
        ),
        (
            "wrong schema",
            |v| v["schema"] = json!("shopfloor.evidence/2"),
            "schema",
            "must be \"shopfloor.evidence/1\"",
        ),
        (
            "good above produced",
            |v| v["equipment"][0]["products"][0]["good"] = json!(101),
            "equipment[0].products[0].good",
            "exceeds produced",
        ),
        (
            "zero ideal cycle",
            |v| v["equipment"][0]["products"][0]["ideal_cycle_s"] = json!(0),
            "equipment[0].products[0].ideal_cycle_s",
            "must be greater than 0",
        ),
        (
            "equipment outside the entity",
            |v| v["equipment"][0]["id"] = json!("p1/e2/w1/l1/cnc-01"),
            "equipment[0].id",
            "is not equipment of entity",
        ),
        (
            "duplicate equipment",
            |v| {
                let e = v["equipment"][0].clone();
                v["equipment"].as_array_mut().unwrap().push(e)
            },
            "equipment[1].id",
            "duplicate equipment id",
        ),
        (
            "unknown control",
            |v| v["equipment"][0]["control"] = json!("hydraulic"),
            "equipment[0].control",
            "unknown variant `hydraulic`",
        ),
        (
            "unknown carrier",
            |v| v["meters"][0]["carrier"] = json!("unobtainium"),
            "meters[0].carrier",
            "unknown carrier",
        ),
        (
            "unit of another dimension",
            |v| v["meters"][0]["unit"] = json!("m3"),
            "meters[0].unit",
            "cannot be converted to kWh",
        ),
        (
            "negative consumption",
            |v| v["meters"][0]["consumption"] = json!(-1.0),
            "meters[0].consumption",
            "must not be negative",
        ),
        (
            "meter without data",
            |v| {
                v["meters"][0]
                    .as_object_mut()
                    .unwrap()
                    .remove("consumption");
            },
            "meters[0]",
            "needs consumption or readings",
        ),
        (
            "two readings at one instant",
            |v| v["meters"][0] = json!({"id": "m1", "carrier": "electricity", "unit": "kWh", "readings": [{"at": "2026-10-01T08:00:00+08:00", "value": 1.0}, {"at": "2026-10-01T08:00:00+08:00", "value": 2.0}]}),
            "meters[0].readings[1]",
            "two readings at",
        ),
        (
            "odd register width",
            |v| {
                v["equipment"][0]["products"][0]["produced"] =
                    json!({"readings": [], "width_bits": 12})
            },
            "equipment[0].products[0].produced.width_bits",
            "must be 16, 32 or 64",
        ),
        (
            "unknown coefficient set",
            |v| v["coefficients"] = json!({"set": "gbt2589-1999"}),
            "coefficients.set",
            "unknown coefficient set",
        ),
        (
            "unknown override",
            |v| v["coefficients"] = json!({"overrides": {"gas_kgce": 1.0}}),
            "coefficients.overrides.gas_kgce",
            "unknown override key",
        ),
        (
            "inputs at park level",
            |v| {
                v["entity"] = json!("p1");
            },
            "inputs",
            "a park has no economic inputs",
        ),
        (
            "bad entity path",
            |v| v["entity"] = json!("p1//w1"),
            "entity",
            "empty segment",
        ),
        (
            "unknown time zone",
            |v| v["calendar"] = json!({"time_zone": "Asia/Chongqing_", "shifts": [{"name": "A", "start": "08:00", "end": "16:00"}]}),
            "calendar.time_zone",
            "unknown time zone",
        ),
        (
            "bad shift time",
            |v| v["calendar"] = json!({"shifts": [{"name": "A", "start": "8:00", "end": "16:00"}]}),
            "calendar.shifts[0].start",
            "not a local time HH:MM",
        ),
        (
            "data points above configured",
            |v| v["equipment"][0]["data_points"] = json!({"configured": 10, "received": 11}),
            "equipment[0].data_points.received",
            "exceeds configured",
        ),
        (
            "sub-meter of another carrier",
            |v| {
                v["meters"].as_array_mut().unwrap().push(json!({"id": "m2", "carrier": "water", "unit": "m3", "consumption": 1.0, "parent": "m1"}))
            },
            "meters[1].parent",
            "cannot sit below electricity meter",
        ),
        (
            "certification ending before it starts",
            |v| v["entities"] = json!([{"id": "p1/e1/w1/l1", "certifications": [{"kind": "digital_workshop", "since": "2026-01-01", "until": "2025-01-01"}]}]),
            "entities[0].certifications[0].until",
            "ends before it starts",
        ),
    ];
    assert!(cases.len() >= 10);
    // Bounded work: no evidence may make the engine build millions of shift windows.
    let bounded: &[(&str, Edit, &str, &str)] = &[
        (
            "period of ten thousand years",
            |v| v["period"]["from"] = json!("0001-01-01T00:00:00Z"),
            "period.to",
            "a period spans at most 3653 days",
        ),
        (
            "hundreds of shifts a day",
            |v| {
                let shifts: Vec<Value> = (0..100)
                    .map(|i| json!({"name": format!("s{i}"), "start": "08:00", "end": "09:00"}))
                    .collect();
                v["calendar"] = json!({"shifts": shifts});
            },
            "calendar.shifts",
            "at most 32 shifts a day",
        ),
    ];
    for (name, edit, path, reason) in bounded {
        expect(name, &errors(edit), path, reason);
    }
    // Ten years exactly is still fine.
    assert_eq!(
        errors(|v| v["period"] =
            json!({"from": "2016-01-01T00:00:00+08:00", "to": "2026-01-01T00:00:00+08:00"})),
        Vec::<String>::new()
    );
    for (name, edit, path, reason) in cases {
        let got = errors(edit);
        expect(name, &got, path, reason);
    }
}

#[test]
fn malformed_json_says_where() {
    let e = shopfloor_core::parse("{\"schema\": \"shopfloor.evidence/1\", ").unwrap_err();
    assert!(e.to_string().contains("line 1 column"), "{e}");
    let e = shopfloor_core::parse("[]").unwrap_err();
    assert!(e.to_string().contains("expected struct Evidence"), "{e}");
}

#[test]
fn validation_reports_every_problem_at_once() {
    let got = errors(|v| {
        v["schema"] = json!("x");
        v["meters"][0]["consumption"] = json!(-1.0);
        v["equipment"][0]["products"][0]["good"] = json!(1000);
    });
    assert_eq!(got.len(), 3, "{got:#?}");
}
