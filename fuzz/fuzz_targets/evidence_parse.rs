//! The evidence file (`shopfloor.evidence/1`) and the engine: `shopfloor_core::evidence::parse`
//! (which validates), `Evidence::validate`, then `shopfloor_core::compute` on every evidence
//! that parses. Never a panic; an evidence from `parse` is valid (validating it again agrees);
//! every indicator the engine returns is finite, with completeness in 0..=1; errors name at
//! least one problem with a reason.
//!
//! Two modes: input starting with `{` (or white space) is the document text; any other input
//! picks one of the worked evidence files of `configs/evidence/` or
//! `seeds/evidence_parse/calendar-dst.json` (first byte) and edits it with the rest
//! (`shopfloor_fuzz::mutate`: extreme numbers, near-valid times, other types, repeated or
//! removed elements), so that many documents parse and reach the engine.

#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use shopfloor_core::{InputError, compute, parse};

const FILES: &[&str] = &[
    include_str!("../../configs/evidence/equipment-cnc-shift.json"),
    include_str!("../../configs/evidence/line-counters.json"),
    include_str!("../../configs/evidence/workshop-w1.json"),
    include_str!("../../configs/evidence/enterprise-e1.json"),
    include_str!("../../configs/evidence/park-p1.json"),
    // Shifts with weekdays and a holiday in Europe/Berlin over the end of summer time.
    include_str!("../seeds/evidence_parse/calendar-dst.json"),
];

fn files() -> &'static [Value] {
    static DOCS: OnceLock<Vec<Value>> = OnceLock::new();
    DOCS.get_or_init(|| {
        FILES
            .iter()
            .filter_map(|f| serde_json::from_str(f).ok())
            .collect()
    })
}

/// The document text: the input itself, or an edited worked example.
fn text(data: &[u8]) -> Option<String> {
    match data.first() {
        None => None,
        Some(b'{' | b' ' | b'\t' | b'\n' | b'\r') => {
            std::str::from_utf8(data).ok().map(str::to_owned)
        }
        Some(&pick) => {
            let docs = files();
            let mut doc = docs.get(usize::from(pick) % docs.len().max(1))?.clone();
            shopfloor_fuzz::mutate(&mut doc, &data[1..]);
            Some(doc.to_string())
        }
    }
}

fn named(e: &InputError) {
    assert!(
        !e.errors.is_empty() && e.errors.iter().all(|f| !f.reason.is_empty()),
        "an error without a reason: {e:?}"
    );
}

fuzz_target!(|data: &[u8]| {
    let Some(text) = text(data) else {
        return;
    };
    let ev = match parse(&text) {
        Ok(ev) => ev,
        Err(e) => {
            named(&e);
            return;
        }
    };
    if let Err(e) = ev.validate() {
        panic!("parse accepted evidence that validate refuses: {e:?}");
    }
    let _ = ev.level();
    let _ = ev.zone_name();
    match compute(&ev) {
        Ok(report) => {
            for (id, i) in &report.indicators {
                assert!(i.value.is_none_or(f64::is_finite), "{id} = {:?}", i.value);
                assert!(
                    (0.0..=1.0).contains(&i.completeness),
                    "{id} completeness {}",
                    i.completeness
                );
            }
            for e in &report.enterprises {
                for (id, i) in &e.indicators {
                    assert!(i.value.is_none_or(f64::is_finite), "{id} = {:?}", i.value);
                }
            }
        }
        Err(e) => named(&e),
    }
});
