//! Plan targets (规划目标) as data (`configs/targets.toml`, INDICATORS.md §5): indicator id,
//! scope, comparison, value, year and seed reference, so dashboards show value vs target.
//!
//! Invariant: a loaded target names a catalog indicator in that indicator's unit, and a
//! `change_*` target always has a baseline year.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use crate::catalog;
use crate::error::{Errors, InputError};

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct File {
    target: Vec<Target>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    Park,
    Enterprise,
    /// All parks with the target's `region`, or the whole city when it has none.
    Region,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TargetComparison {
    Ge,
    Le,
    /// The relative change vs the baseline year must be at most `value` (e.g. −0.16).
    ChangeLe,
    /// The relative change vs the baseline year must be at least `value`.
    ChangeGe,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Target {
    pub id: String,
    pub indicator: String,
    pub scope: Scope,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entity: Option<String>,
    pub comparison: TargetComparison,
    pub value: f64,
    pub unit: String,
    pub year: i32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub baseline_year: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub binding: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cumulative: Option<bool>,
    pub seed: String,
    pub name_zh: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

impl Target {
    /// Whether `actual` meets the target. For `change_*` targets `actual` is the relative
    /// change vs the baseline year (e.g. −0.18 for 18 % lower).
    pub fn is_met(&self, actual: f64) -> Option<bool> {
        actual.is_finite().then_some(match self.comparison {
            TargetComparison::Ge | TargetComparison::ChangeGe => actual >= self.value,
            TargetComparison::Le | TargetComparison::ChangeLe => actual <= self.value,
        })
    }
}

/// Parses and validates a targets document (TOML).
pub fn parse(toml_text: &str) -> Result<Vec<Target>, InputError> {
    let f: File = toml::from_str(toml_text).map_err(|e| {
        let span = e
            .span()
            .map(|s| format!(" (byte {})", s.start))
            .unwrap_or_default();
        InputError::one("", format!("{}{span}", e.message()))
    })?;
    let mut errs = Errors::default();
    let mut ids = BTreeSet::new();
    for (i, t) in f.target.iter().enumerate() {
        let p = format!("target[{i}]");
        if !ids.insert(t.id.as_str()) {
            errs.push(
                format!("{p}.id"),
                format!("duplicate target id \"{}\"", t.id),
            );
        }
        match catalog::def(&t.indicator) {
            None => errs.push(
                format!("{p}.indicator"),
                format!("\"{}\" is not a catalog indicator id", t.indicator),
            ),
            Some(d) if d.unit != t.unit => errs.push(
                format!("{p}.unit"),
                format!(
                    "\"{}\" is not the unit of {} ({})",
                    t.unit, t.indicator, d.unit
                ),
            ),
            Some(_) => {}
        }
        let change = matches!(
            t.comparison,
            TargetComparison::ChangeLe | TargetComparison::ChangeGe
        );
        match (change, t.baseline_year) {
            (true, None) => errs.push(
                format!("{p}.baseline_year"),
                "a change target needs its baseline year",
            ),
            (false, Some(_)) => errs.push(
                format!("{p}.baseline_year"),
                "only change targets have a baseline year",
            ),
            (true, Some(b)) if b >= t.year => errs.push(
                format!("{p}.baseline_year"),
                "must be before the target year",
            ),
            _ => {}
        }
        if !t.value.is_finite() {
            errs.push(format!("{p}.value"), "must be a finite number");
        }
        if t.seed.trim().is_empty() {
            errs.push(format!("{p}.seed"), "every target cites its seed line");
        }
    }
    errs.into_result()?;
    Ok(f.target)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ONE: &str = r#"
[[target]]
id = "nc"
indicator = "key_process_nc_rate"
scope = "region"
comparison = "ge"
value = 0.55
unit = "ratio"
year = 2020
seed = "001:131"
name_zh = "关键工序数控化率"
"#;

    #[test]
    fn parses_and_evaluates() {
        let t = parse(ONE).unwrap();
        assert_eq!(t[0].is_met(0.56), Some(true));
        assert_eq!(t[0].is_met(0.5), Some(false));
        assert_eq!(t[0].is_met(f64::NAN), None);
    }

    #[test]
    fn rejects_wrong_unit_and_missing_baseline() {
        let bad = ONE
            .replace("unit = \"ratio\"", "unit = \"%\"")
            .replace("comparison = \"ge\"", "comparison = \"change_le\"");
        let e = parse(&bad).unwrap_err();
        let paths: Vec<&str> = e.errors.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(paths, vec!["target[0].unit", "target[0].baseline_year"]);
        assert!(parse(&ONE.replace("scope", "scop")).is_err());
    }
}
