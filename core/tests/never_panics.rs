//! DESIGN.md §7: bad input gets a clear error and never crashes a process. Any field of a real
//! evidence file replaced by any JSON value, or the text cut anywhere: `calc` returns a result
//! or an error naming a field, and never panics (a panic fails the property).

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed test

use proptest::prelude::*;
use serde_json::{Value, json};

const FILES: &[&str] = &[
    include_str!("../../configs/evidence/equipment-cnc-shift.json"),
    include_str!("../../configs/evidence/line-counters.json"),
    include_str!("../../configs/evidence/workshop-w1.json"),
    include_str!("../../configs/evidence/enterprise-e1.json"),
    include_str!("../../configs/evidence/park-p1.json"),
];

/// Every JSON pointer in a document.
fn pointers(v: &Value, at: String, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            for (k, x) in m {
                pointers(x, format!("{at}/{k}"), out);
            }
        }
        Value::Array(a) => {
            for (i, x) in a.iter().enumerate() {
                pointers(x, format!("{at}/{i}"), out);
            }
        }
        _ => {}
    }
    out.push(at);
}

fn hostile() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<u64>().prop_map(|n| json!(n)),
        prop_oneof![
            Just(-0.0),
            Just(1e308),
            Just(-1e308),
            Just(5e-324),
            Just(0.5),
            Just(-1.0)
        ]
        .prop_map(|f: f64| json!(f)),
        prop_oneof![
            Just("-009999-01-01T00:00:00Z"),
            Just("9999-12-31T23:59:59.999999999+14:00"),
            Just("2026-10-01T08:00:00+08:00"),
            Just("2026-02-30"),
            Just("24:00"),
            Just("p1/e1//x"),
            Just(""),
            Just("producing"),
            Just("electricity"),
            Just("Asia/Shanghai"),
        ]
        .prop_map(|s| json!(s)),
        "[a-z/_:0-9-]{0,12}".prop_map(|s| json!(s)),
        Just(json!([])),
        Just(json!({})),
        Just(json!([{"at": "2026-10-01T08:00:00+08:00", "value": 1e308}])),
    ]
}

fn check(text: &str) -> Result<(), TestCaseError> {
    match shopfloor_core::calc(text) {
        Ok(r) => {
            for (id, i) in &r.indicators {
                prop_assert!(i.value.is_none_or(f64::is_finite), "{id} not finite");
            }
        }
        Err(e) => {
            prop_assert!(!e.errors.is_empty() && e.errors.iter().all(|f| !f.reason.is_empty()))
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn any_field_replaced_by_any_value_never_panics(
        file in 0..FILES.len(),
        picks in prop::collection::vec((any::<prop::sample::Index>(), hostile()), 1..4),
    ) {
        let mut doc: Value = serde_json::from_str(FILES[file]).unwrap();
        for (idx, value) in picks {
            let mut ptrs = Vec::new();
            pointers(&doc, String::new(), &mut ptrs);
            let p = idx.get(&ptrs).clone();
            if p.is_empty() {
                doc = value;
            } else if let Some(slot) = doc.pointer_mut(&p) {
                *slot = value;
            }
        }
        check(&doc.to_string())?;
    }

    #[test]
    fn truncated_text_never_panics(file in 0..FILES.len(), cut in any::<prop::sample::Index>()) {
        let text = FILES[file];
        let mut at = cut.index(text.len() + 1);
        while !text.is_char_boundary(at) {
            at -= 1;
        }
        check(&text[..at])?;
    }
}
