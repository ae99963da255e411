//! The program runs and its JSON parses: `outbox --quick` (no service, no helper binary) and
//! `ingest` without SHOPFLOOR_TEST_MQTT_URL (a "skipped" row, not a failure); a missing helper
//! binary is an error row naming the build command. No timing is asserted.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;

fn bench() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_shopfloor-bench"));
    c.env_remove("SHOPFLOOR_TEST_MQTT_URL")
        .env_remove("SHOPFLOOR_TEST_POSTGRES_URL")
        .env_remove("SHOPFLOOR_BENCH_SECS")
        .env_remove("SHOPFLOOR_BENCH_BATCHES");
    c
}

#[test]
fn quick_outbox_writes_json_with_finite_figures() {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("out.json");
    let out = bench()
        .args(["ingest", "outbox", "--quick", "--json"])
        .arg(&json)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "shopfloor-bench failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("=== summary"), "{stdout}");
    let doc: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    assert!(doc["run"]["host_cores"].as_u64().unwrap() >= 1);
    assert_eq!(doc["run"]["quick"], true);
    let figures = doc["figures"].as_array().unwrap();
    let outbox: Vec<_> = figures
        .iter()
        .filter(|f| f["scenario"] == "outbox")
        .collect();
    assert!(outbox.len() >= 5, "{figures:?}");
    for f in &outbox {
        assert_eq!(f["status"], "ok", "{f}");
        let v = f["value"].as_f64().unwrap_or(f64::NAN);
        assert!(v.is_finite(), "{f}");
        assert!(f["figure"].as_str().is_some_and(|s| !s.is_empty()), "{f}");
    }
    // Scenarios run in the fixed order whatever the command line says.
    let first_ingest = figures.iter().position(|f| f["scenario"] == "ingest");
    let last_outbox = figures.iter().rposition(|f| f["scenario"] == "outbox");
    assert!(last_outbox < first_ingest, "{figures:?}");
    let ingest = &figures[first_ingest.unwrap()];
    assert_eq!(ingest["status"], "skipped", "{ingest}");
    assert!(
        ingest["note"]
            .as_str()
            .unwrap()
            .contains("SHOPFLOOR_TEST_MQTT_URL")
    );
    assert!(ingest["value"].is_null());
}

#[test]
fn a_missing_helper_binary_names_the_build_command() {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("out.json");
    let out = bench()
        .args(["footprint", "--quick", "--json"])
        .arg(&json)
        .env("SHOPFLOOR_AGENT_BIN", dir.path().join("no-such-agent"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let doc: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    let f = &doc["figures"][0];
    assert_eq!(f["status"], "error", "{f}");
    let note = f["note"].as_str().unwrap();
    assert!(
        note.contains("cargo build") && note.contains("-p shopfloor-agent --bin shopfloor-agent"),
        "{note}"
    );
}
