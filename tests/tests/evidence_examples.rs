//! Every worked evidence file under `configs/evidence/` computes exactly the values that its
//! README documents by hand, and lists exactly the ids that apply at its level.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed test

use shopfloor_tests::{close, expected_values, repo_root};

#[test]
fn worked_examples_match_their_documented_values() {
    let dir = repo_root().join("configs/evidence");
    let readme = std::fs::read_to_string(dir.join("README.md")).unwrap();
    let expected = expected_values(&readme).unwrap();
    let mut files: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.ends_with(".json"))
        .collect();
    files.sort();
    assert!(
        files.len() >= 5,
        "expected at least five worked examples, found {files:?}"
    );
    let mut failures = Vec::new();
    for f in &files {
        let want = expected
            .get(f)
            .unwrap_or_else(|| panic!("{f} has no table of expected values in README.md"));
        let text = std::fs::read_to_string(dir.join(f)).unwrap();
        let report = shopfloor_core::calc(&text).unwrap_or_else(|e| panic!("{f}: {e}"));
        let got = report.values();
        for (id, w) in want {
            match (got.get(id.as_str()), w) {
                (None, _) => failures.push(format!("{f}: {id} documented but not computed")),
                (Some(None), None) => {}
                (Some(Some(g)), Some(w)) if close(*g, *w) => {}
                (Some(g), w) => failures.push(format!("{f}: {id}: engine {g:?}, README {w:?}")),
            }
        }
        for id in got.keys() {
            if !want.contains_key(*id) {
                failures.push(format!("{f}: {id} computed but not documented"));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} mismatches:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
