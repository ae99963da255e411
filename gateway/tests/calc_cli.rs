//! `shopfloor-gateway calc` as a user runs it: the binary, real files, exit codes.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed test

use std::path::Path;
use std::process::{Command, Output};

use serde_json::Value;
use shopfloor_tests::{close, expected_values, repo_root};

fn calc(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_shopfloor-gateway"))
        .arg("calc")
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn prints_the_documented_values_for_every_worked_example() {
    let dir = repo_root().join("configs/evidence");
    let expected =
        expected_values(&std::fs::read_to_string(dir.join("README.md")).unwrap()).unwrap();
    assert!(expected.len() >= 5);
    for (file, want) in &expected {
        let out = calc(&["--evidence", dir.join(file).to_str().unwrap()]);
        assert!(
            out.status.success(),
            "{file}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        let obj = v.as_object().unwrap();
        assert_eq!(
            obj.keys().collect::<Vec<_>>(),
            vec!["indicators"],
            "{file}: only the contract's key"
        );
        let ind = obj["indicators"].as_object().unwrap();
        assert_eq!(ind.len(), want.len(), "{file}: ids printed vs documented");
        for (id, w) in want {
            let g = &ind[id.as_str()];
            match w {
                None => assert!(g.is_null(), "{file}: {id} = {g}, documented null"),
                Some(w) => assert!(
                    g.as_f64().is_some_and(|g| close(g, *w)),
                    "{file}: {id} = {g}, documented {w}"
                ),
            }
        }
    }
}

#[test]
fn detail_records_units_completeness_and_coefficients() {
    let f = repo_root().join("configs/evidence/workshop-w1.json");
    let out = calc(&["--evidence", f.to_str().unwrap(), "--detail"]);
    assert!(out.status.success());
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["schema"], "shopfloor.result/1");
    assert_eq!(v["coefficients"]["set"], "gbt2589-2020");
    assert_eq!(v["coefficients"]["electricity_basis"], "equivalent");
    assert_eq!(
        v["coefficients"]["overrides"]["natural_gas_kgce_per_m3"],
        1.33
    );
    assert_eq!(v["indicators"]["oee"]["unit"], "ratio");
    let c = v["indicators"]["oee"]["completeness"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&c));
    let rule_sets: Vec<&str> = v["assessments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["rule_set"].as_str().unwrap())
        .collect();
    assert_eq!(rule_sets, vec!["gbt37393-2019", "chongqing"]);
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p.to_str().unwrap().to_owned()
}

#[test]
fn bad_input_exits_2_naming_file_path_and_reason() {
    let dir = std::env::temp_dir().join(format!("shopfloor-calc-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let good =
        std::fs::read_to_string(repo_root().join("configs/evidence/workshop-w1.json")).unwrap();
    let cases = [
        (
            "malformed.json",
            "{\"schema\": ".to_owned(),
            "EOF while parsing",
        ),
        (
            "unknown.json",
            good.replacen("\"entity\"", "\"colour\": 1, \"entity\"", 1),
            "colour: unknown field",
        ),
        (
            "negative.json",
            good.replacen("\"produced\": ", "\"produced\": -", 1),
            "negative count",
        ),
    ];
    for (name, text, reason) in cases {
        let path = write(&dir, name, &text);
        let out = calc(&["--evidence", &path]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{name}: {err}");
        assert!(out.stdout.is_empty(), "{name}: nothing on stdout");
        assert!(err.contains(&path) && err.contains(reason), "{name}: {err}");
    }
    let out = calc(&["--evidence", dir.join("missing.json").to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read"));
    let out = calc(&[]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "missing --evidence is a usage error"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn help_and_version_exit_0() {
    for args in [["--help"], ["--version"]] {
        let out = Command::new(env!("CARGO_BIN_EXE_shopfloor-gateway"))
            .args(args)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(0));
    }
    let out = calc(&["--help"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("--evidence"));
}
