//! Assessments `digital_workshop` and `green_factory` (INDICATORS.md §3–4): rule sets with
//! thresholds held as data (`configs/assessments/`, compiled in), evaluated criterion by
//! criterion against computed indicators.
//!
//! Invariant: a criterion whose value is unknown never passes or fails (pass = null), and an
//! assessment with such a criterion is `incomplete` unless another criterion already fails.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use serde::{Deserialize, Serialize};

use crate::catalog;
use crate::engine::Indicator;

pub const DEFAULT_INDUSTRY: &str = "general";

const FILES: &[&str] = &[
    include_str!("../../configs/assessments/digital_workshop.toml"),
    include_str!("../../configs/assessments/green_factory.toml"),
];

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    DigitalWorkshop,
    GreenFactory,
}

impl Kind {
    pub fn parse(s: &str) -> Option<Kind> {
        match s {
            "digital_workshop" => Some(Kind::DigitalWorkshop),
            "green_factory" => Some(Kind::GreenFactory),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Comparison {
    Ge,
    Le,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct File {
    assessment: Kind,
    rule_set: Vec<RuleSet>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RuleSet {
    pub id: String,
    pub name_zh: String,
    pub name_en: String,
    pub source: String,
    pub criterion: Vec<Criterion>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Criterion {
    pub id: String,
    #[serde(default)]
    pub group_zh: Option<String>,
    pub name_zh: String,
    pub name_en: String,
    pub indicator: String,
    pub comparison: Comparison,
    pub thresholds: BTreeMap<String, Thresholds>,
}

#[derive(Debug, Clone, Copy, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Thresholds {
    pub benchmark: f64,
    #[serde(default)]
    pub leading: Option<f64>,
}

type RuleFiles = Result<Vec<(Kind, Vec<RuleSet>)>, String>;

fn files() -> &'static RuleFiles {
    static F: OnceLock<RuleFiles> = OnceLock::new();
    F.get_or_init(|| {
        FILES
            .iter()
            .map(|s| {
                toml::from_str::<File>(s)
                    .map(|f| (f.assessment, f.rule_set))
                    .map_err(|e| format!("assessment rules: {e}"))
            })
            .collect()
    })
}

/// Rule sets of an assessment, in file order.
pub fn rule_sets(kind: Kind) -> &'static [RuleSet] {
    match files() {
        Ok(f) => f
            .iter()
            .find(|(k, _)| *k == kind)
            .map_or(&[], |(_, r)| r.as_slice()),
        Err(_) => &[],
    }
}

/// Checks the compiled-in rule data: parses, every indicator exists, ids unique, a `general`
/// threshold for every criterion, leading values on the right side of the benchmark.
pub fn check_data() -> Result<(), String> {
    let f = files().as_ref().map_err(Clone::clone)?;
    for (_, sets) in f {
        for rs in sets {
            let mut ids = std::collections::BTreeSet::new();
            for c in &rs.criterion {
                if !ids.insert(&c.id) {
                    return Err(format!("{}: duplicate criterion {}", rs.id, c.id));
                }
                if catalog::def(&c.indicator).is_none() {
                    return Err(format!(
                        "{}/{}: unknown indicator {}",
                        rs.id, c.id, c.indicator
                    ));
                }
                if !c.thresholds.contains_key(DEFAULT_INDUSTRY) {
                    return Err(format!("{}/{}: no `general` thresholds", rs.id, c.id));
                }
                for (ind, t) in &c.thresholds {
                    let ok = match (c.comparison, t.leading) {
                        (_, None) => true,
                        (Comparison::Ge, Some(l)) => l >= t.benchmark,
                        (Comparison::Le, Some(l)) => l <= t.benchmark,
                    };
                    if !ok || !t.benchmark.is_finite() {
                        return Err(format!(
                            "{}/{}/{ind}: leading value is less demanding than the benchmark",
                            rs.id, c.id
                        ));
                    }
                }
            }
        }
    }
    Ok(())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Tier {
    Leading,
    Benchmark,
    Below,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Pass,
    Fail,
    Incomplete,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CriterionResult {
    pub id: String,
    pub name_zh: String,
    pub name_en: String,
    pub indicator: String,
    pub comparison: Comparison,
    pub value: Option<f64>,
    pub threshold: f64,
    pub leading: Option<f64>,
    pub pass: Option<bool>,
    pub tier: Option<Tier>,
    pub completeness: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AssessmentResult {
    pub assessment: Kind,
    pub rule_set: String,
    pub industry: String,
    pub result: Outcome,
    pub criteria: Vec<CriterionResult>,
}

fn meets(cmp: Comparison, v: f64, t: f64) -> bool {
    match cmp {
        Comparison::Ge => v >= t,
        Comparison::Le => v <= t,
    }
}

/// Evaluates one rule set for `industry` (falling back to `general`) against indicators.
pub fn evaluate(
    kind: Kind,
    rs: &RuleSet,
    industry: &str,
    ind: &BTreeMap<String, Indicator>,
) -> AssessmentResult {
    let criteria: Vec<CriterionResult> = rs
        .criterion
        .iter()
        .filter_map(|c| {
            let t = c
                .thresholds
                .get(industry)
                .or_else(|| c.thresholds.get(DEFAULT_INDUSTRY))?;
            let (value, completeness) = ind
                .get(&c.indicator)
                .map_or((None, 0.0), |i| (i.value, i.completeness));
            let pass = value.map(|v| meets(c.comparison, v, t.benchmark));
            let tier = value.map(|v| match t.leading {
                Some(l) if meets(c.comparison, v, l) => Tier::Leading,
                _ if meets(c.comparison, v, t.benchmark) => Tier::Benchmark,
                _ => Tier::Below,
            });
            Some(CriterionResult {
                id: c.id.clone(),
                name_zh: c.name_zh.clone(),
                name_en: c.name_en.clone(),
                indicator: c.indicator.clone(),
                comparison: c.comparison,
                value,
                threshold: t.benchmark,
                leading: t.leading,
                pass,
                tier,
                completeness,
            })
        })
        .collect();
    let result = if criteria.iter().any(|c| c.pass == Some(false)) {
        Outcome::Fail
    } else if criteria.iter().all(|c| c.pass == Some(true)) {
        Outcome::Pass
    } else {
        Outcome::Incomplete
    };
    AssessmentResult {
        assessment: kind,
        rule_set: rs.id.clone(),
        industry: industry.to_owned(),
        result,
        criteria,
    }
}

/// Every rule set of an assessment.
pub fn evaluate_all(
    kind: Kind,
    industry: &str,
    ind: &BTreeMap<String, Indicator>,
) -> Vec<AssessmentResult> {
    rule_sets(kind)
        .iter()
        .map(|rs| evaluate(kind, rs, industry, ind))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ind(pairs: &[(&str, Option<f64>)]) -> BTreeMap<String, Indicator> {
        pairs
            .iter()
            .map(|(k, v)| {
                (
                    k.to_string(),
                    Indicator {
                        value: *v,
                        unit: "ratio".into(),
                        completeness: 1.0,
                    },
                )
            })
            .collect()
    }

    #[test]
    fn compiled_rules_are_valid() {
        check_data().unwrap();
        assert_eq!(rule_sets(Kind::DigitalWorkshop).len(), 2);
        assert_eq!(rule_sets(Kind::GreenFactory).len(), 2);
    }

    #[test]
    fn digital_workshop_thresholds_differ_between_rule_sets() {
        // 60 % digital equipment, 95 % data collection: passes Chongqing (≥ 50 %), fails
        // GB/T 37393 (≥ 70 %).
        let i = ind(&[
            ("digital_equipment_rate", Some(0.6)),
            ("data_auto_collection_rate", Some(0.95)),
        ]);
        let r = evaluate_all(Kind::DigitalWorkshop, "general", &i);
        let by: BTreeMap<&str, Outcome> =
            r.iter().map(|a| (a.rule_set.as_str(), a.result)).collect();
        assert_eq!(by["gbt37393-2019"], Outcome::Fail);
        assert_eq!(by["chongqing"], Outcome::Pass);
        let c = &r[0].criteria[0];
        assert_eq!(
            (c.value, c.threshold, c.pass, c.tier),
            (Some(0.6), 0.70, Some(false), Some(Tier::Below))
        );
    }

    #[test]
    fn unknown_values_make_an_assessment_incomplete_not_failed() {
        let i = ind(&[
            ("digital_equipment_rate", Some(0.8)),
            ("data_auto_collection_rate", None),
        ]);
        let r = evaluate(
            Kind::DigitalWorkshop,
            &rule_sets(Kind::DigitalWorkshop)[0],
            "general",
            &i,
        );
        assert_eq!(r.result, Outcome::Incomplete);
        assert_eq!(r.criteria[1].pass, None);
    }

    #[test]
    fn leading_tier_for_lower_is_better() {
        let i = ind(&[("energy_per_value_added", Some(0.3))]);
        let rs = &rule_sets(Kind::GreenFactory)[0];
        let r = evaluate(Kind::GreenFactory, rs, "machinery", &i);
        let c = r
            .criteria
            .iter()
            .find(|c| c.id == "energy_intensity")
            .unwrap();
        assert_eq!((c.pass, c.tier), (Some(true), Some(Tier::Leading)));
        assert_eq!(r.industry, "machinery");
    }
}
