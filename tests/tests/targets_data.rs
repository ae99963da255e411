//! `configs/targets.toml`: every plan target loads, names a catalog indicator in its unit, and
//! cites seed lines that exist.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed test

use shopfloor_core::targets::{self, Scope, TargetComparison};
use shopfloor_tests::repo_root;

fn load() -> Vec<targets::Target> {
    let text = std::fs::read_to_string(repo_root().join("configs/targets.toml")).unwrap();
    targets::parse(&text).unwrap_or_else(|e| panic!("configs/targets.toml: {e}"))
}

#[test]
fn the_plan_targets_load_and_include_the_headline_ones() {
    let t = load();
    assert!(t.len() >= 25, "{} targets", t.len());
    let has = |ind: &str, cmp: TargetComparison, value: f64, year: i32| {
        t.iter().any(|x| {
            x.indicator == ind
                && x.comparison == cmp
                && (x.value - value).abs() < 1e-9
                && x.year == year
        })
    };
    // INDICATORS.md and seed_indicators.md §2 headline targets.
    assert!(has("key_process_nc_rate", TargetComparison::Ge, 0.55, 2020));
    assert!(has("key_process_nc_rate", TargetComparison::Ge, 0.65, 2025));
    assert!(has(
        "energy_per_value_added",
        TargetComparison::Le,
        0.8,
        2020
    ));
    assert!(has(
        "energy_per_value_added",
        TargetComparison::Le,
        1.0,
        2020
    ));
    assert!(
        has(
            "energy_per_value_added_change",
            TargetComparison::ChangeLe,
            -0.16,
            2025
        ) || has(
            "energy_per_value_added",
            TargetComparison::ChangeLe,
            -0.16,
            2025
        )
    );
    assert!(has(
        "land_output_intensity",
        TargetComparison::Ge,
        150.0,
        2020
    ));
    assert!(has("labor_productivity", TargetComparison::Ge, 40.0, 2025));
    assert!(has(
        "solid_waste_utilization_rate",
        TargetComparison::Ge,
        0.85,
        2020
    ));
    assert!(has("output_per_kwh", TargetComparison::Ge, 30.0, 2015));
    assert!(has(
        "green_factory_count",
        TargetComparison::Ge,
        300.0,
        2025
    ));
    assert!(
        t.iter()
            .all(|x| matches!(x.scope, Scope::Park | Scope::Enterprise | Scope::Region))
    );
}

#[test]
fn seed_references_point_at_existing_lines() {
    let t = load();
    let seeds = repo_root().join("../shared/seeds");
    let files: Vec<(String, usize)> = match std::fs::read_dir(&seeds) {
        Ok(d) => d
            .filter_map(|e| {
                let e = e.ok()?;
                let name = e.file_name().into_string().ok()?;
                let lines = std::fs::read_to_string(e.path()).ok()?.lines().count();
                Some((name[..3].to_owned(), lines))
            })
            .collect(),
        Err(_) => {
            eprintln!(
                "SKIPPED: seed line check (../shared/seeds not present); formats are still checked"
            );
            Vec::new()
        }
    };
    for x in &t {
        for r in x.seed.split(',').map(str::trim) {
            let (file, line) = r
                .split_once(':')
                .unwrap_or_else(|| panic!("{}: seed `{r}` is not FILE:LINE", x.id));
            let line: usize = line
                .split(['–', '-'])
                .next()
                .unwrap()
                .parse()
                .unwrap_or_else(|_| panic!("{}: seed `{r}`", x.id));
            assert!(
                file.len() == 3 && file.chars().all(|c| c.is_ascii_digit()),
                "{}: seed `{r}`",
                x.id
            );
            if let Some((_, n)) = files.iter().find(|(f, _)| f == file) {
                assert!(
                    line >= 1 && line <= *n,
                    "{}: seed {r} is past the end of {file} ({n} lines)",
                    x.id
                );
            } else if !files.is_empty() {
                panic!("{}: seed file {file} does not exist", x.id);
            }
        }
    }
}
