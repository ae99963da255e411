//! Energy-conversion and emission coefficients as versioned data (`configs/coefficients/`,
//! compiled in), the choice an evidence file makes, overrides, and unit conversion.
//!
//! Invariant: a coefficient value used in a result is always traceable to (set id, basis,
//! emission-set id, override key); [`CoefficientRecord`] is attached to every result.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use serde::{Deserialize, Serialize};

use crate::error::Errors;

pub const DEFAULT_SET: &str = "gbt2589-2020";
pub const DEFAULT_CO2_SET: &str = "cn-co2-2023";

const ENERGY_SETS: &[&str] = &[include_str!("../../configs/coefficients/gbt2589-2020.toml")];
const CO2_SETS: &[&str] = &[include_str!("../../configs/coefficients/cn-co2-2023.toml")];

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct EnergySet {
    pub id: String,
    pub name_zh: String,
    pub name_en: String,
    pub carriers: BTreeMap<String, Carrier>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Carrier {
    pub name_zh: String,
    pub name_en: String,
    /// Canonical unit; the carrier's indicator id is `<carrier>_<unit lower-case>`.
    pub unit: String,
    #[serde(default)]
    pub kgce_per_unit: Option<f64>,
    #[serde(default)]
    pub kgce_per_unit_equal_value: Option<f64>,
    #[serde(default = "yes")]
    pub energy: bool,
    pub label: String,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Co2Set {
    pub id: String,
    pub name_zh: String,
    pub name_en: String,
    /// kgCO₂ per canonical unit of each carrier.
    pub factors: BTreeMap<String, f64>,
}

struct Registry {
    energy: Vec<EnergySet>,
    co2: Vec<Co2Set>,
}

fn registry() -> &'static Result<Registry, String> {
    static R: OnceLock<Result<Registry, String>> = OnceLock::new();
    R.get_or_init(|| {
        let energy = ENERGY_SETS
            .iter()
            .map(|s| {
                toml::from_str::<EnergySet>(s).map_err(|e| format!("energy coefficient set: {e}"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let co2 = CO2_SETS
            .iter()
            .map(|s| toml::from_str::<Co2Set>(s).map_err(|e| format!("CO2 factor set: {e}")))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Registry { energy, co2 })
    })
}

/// Checks the compiled-in coefficient data (a test asserts this is `Ok`).
pub fn check_data() -> Result<(), String> {
    let r = registry().as_ref().map_err(Clone::clone)?;
    for set in &r.energy {
        for (id, c) in &set.carriers {
            if c.energy && c.kgce_per_unit.is_none_or(|v| !(v.is_finite() && v > 0.0)) {
                return Err(format!(
                    "{}: energy carrier {id} needs a positive kgce_per_unit",
                    set.id
                ));
            }
            if canonical_unit(&c.unit).is_none() {
                return Err(format!(
                    "{}: carrier {id} has unsupported unit {}",
                    set.id, c.unit
                ));
            }
            for co2 in &r.co2 {
                if !co2.factors.contains_key(id) {
                    return Err(format!(
                        "{}: no CO2 factor for carrier {id} of {}",
                        co2.id, set.id
                    ));
                }
            }
        }
    }
    Ok(())
}

pub fn energy_set(id: &str) -> Option<&'static EnergySet> {
    registry().as_ref().ok()?.energy.iter().find(|s| s.id == id)
}

pub fn co2_set(id: &str) -> Option<&'static Co2Set> {
    registry().as_ref().ok()?.co2.iter().find(|s| s.id == id)
}

pub fn energy_set_ids() -> Vec<&'static str> {
    registry()
        .as_ref()
        .map(|r| r.energy.iter().map(|s| s.id.as_str()).collect())
        .unwrap_or_default()
}

pub fn co2_set_ids() -> Vec<&'static str> {
    registry()
        .as_ref()
        .map(|r| r.co2.iter().map(|s| s.id.as_str()).collect())
        .unwrap_or_default()
}

/// Electricity basis: 当量值 (calorific equivalent, default) or 等价值 (primary-energy equal value).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ElectricityBasis {
    #[default]
    Equivalent,
    EqualValue,
}

/// The coefficient choice of an evidence file (`coefficients` object).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CoefficientChoice {
    #[serde(default = "default_set")]
    pub set: String,
    #[serde(default)]
    pub electricity_basis: ElectricityBasis,
    #[serde(default = "default_co2_set")]
    pub co2_set: String,
    #[serde(default)]
    pub overrides: BTreeMap<String, f64>,
}

fn default_set() -> String {
    DEFAULT_SET.into()
}
fn default_co2_set() -> String {
    DEFAULT_CO2_SET.into()
}

impl Default for CoefficientChoice {
    fn default() -> Self {
        Self {
            set: default_set(),
            electricity_basis: ElectricityBasis::default(),
            co2_set: default_co2_set(),
            overrides: BTreeMap::new(),
        }
    }
}

impl CoefficientChoice {
    pub(crate) fn validate(&self, path: &str, errs: &mut Errors) {
        if energy_set(&self.set).is_none() {
            errs.push(
                format!("{path}.set"),
                format!(
                    "unknown coefficient set \"{}\" (known: {})",
                    self.set,
                    energy_set_ids().join(", ")
                ),
            );
        }
        if co2_set(&self.co2_set).is_none() {
            errs.push(
                format!("{path}.co2_set"),
                format!(
                    "unknown CO2 factor set \"{}\" (known: {})",
                    self.co2_set,
                    co2_set_ids().join(", ")
                ),
            );
        }
        validate_overrides(self, &self.overrides, &format!("{path}.overrides"), errs);
    }
}

/// Override keys: `<carrier>_kgce_per_<unit>` and `<carrier>_kgco2_per_<unit>`.
pub(crate) fn validate_overrides(
    choice: &CoefficientChoice,
    overrides: &BTreeMap<String, f64>,
    path: &str,
    errs: &mut Errors,
) {
    let Some(set) = energy_set(&choice.set) else {
        return;
    };
    for (k, v) in overrides {
        match parse_override_key(set, k) {
            None => errs.push(
                format!("{path}.{k}"),
                "unknown override key; expected <carrier>_kgce_per_<unit> or <carrier>_kgco2_per_<unit>, e.g. natural_gas_kgce_per_m3".to_string(),
            ),
            Some((carrier, OverrideKind::Kgce)) if !set.carriers.get(carrier).is_some_and(|c| c.energy) => {
                errs.push(format!("{path}.{k}"), format!("{carrier} is not an energy carrier; it has no kgce coefficient"))
            }
            Some((_, kind)) => {
                let positive = kind == OverrideKind::Kgce;
                if !v.is_finite() || *v < 0.0 || (positive && *v == 0.0) {
                    errs.push(format!("{path}.{k}"), format!("must be a {} finite number, got {v}", if positive { "positive" } else { "non-negative" }));
                }
            }
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OverrideKind {
    Kgce,
    Kgco2,
}

fn parse_override_key<'a>(set: &'a EnergySet, key: &str) -> Option<(&'a str, OverrideKind)> {
    set.carriers.iter().find_map(|(id, c)| {
        let unit = unit_suffix(&c.unit);
        if key == format!("{id}_kgce_per_{unit}") {
            Some((id.as_str(), OverrideKind::Kgce))
        } else if key == format!("{id}_kgco2_per_{unit}") {
            Some((id.as_str(), OverrideKind::Kgco2))
        } else {
            None
        }
    })
}

/// Lower-case unit as used in ids and override keys (`kWh` → `kwh`, `m3` → `m3`).
pub fn unit_suffix(unit: &str) -> String {
    unit.to_ascii_lowercase().replace('³', "3")
}

/// The indicator id of a carrier's physical quantity, e.g. `electricity_kwh`.
pub fn carrier_indicator_id(carrier: &str, carrier_unit: &str) -> String {
    format!("{carrier}_{}", unit_suffix(carrier_unit))
}

fn canonical_unit(unit: &str) -> Option<(&'static str, f64)> {
    let u = unit.trim().to_ascii_lowercase().replace('³', "3");
    Some(match u.as_str() {
        "wh" => ("kwh", 1e-3),
        "kwh" => ("kwh", 1.0),
        "mwh" => ("kwh", 1e3),
        "m3" | "nm3" => ("m3", 1.0),
        "kg" => ("t", 1e-3),
        "t" => ("t", 1.0),
        "mj" => ("gj", 1e-3),
        "gj" => ("gj", 1.0),
        _ => return None,
    })
}

/// Factor that converts a quantity in `from` into `to`, if they measure the same thing.
pub fn unit_factor(from: &str, to: &str) -> Option<f64> {
    let (a, fa) = canonical_unit(from)?;
    let (b, fb) = canonical_unit(to)?;
    (a == b).then_some(fa / fb)
}

/// Coefficients in force for one meter: kgce and kgCO₂ per canonical unit.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Resolved {
    /// `None` for carriers that are not energy (water).
    pub kgce: Option<f64>,
    pub kgco2: f64,
}

/// Resolves the coefficients of `carrier` under `choice`, with enterprise overrides taking
/// precedence over the document's. `None` when the set or carrier is unknown (validation
/// reports that before the engine runs).
pub fn resolve(
    choice: &CoefficientChoice,
    enterprise_overrides: Option<&BTreeMap<String, f64>>,
    carrier: &str,
) -> Option<Resolved> {
    let set = energy_set(&choice.set)?;
    let co2 = co2_set(&choice.co2_set)?;
    let c = set.carriers.get(carrier)?;
    let unit = unit_suffix(&c.unit);
    let lookup = |key: String| {
        enterprise_overrides
            .and_then(|o| o.get(&key))
            .or_else(|| choice.overrides.get(&key))
            .copied()
    };
    let kgce = if c.energy {
        let base = match (carrier, choice.electricity_basis) {
            ("electricity", ElectricityBasis::EqualValue) => {
                c.kgce_per_unit_equal_value.or(c.kgce_per_unit)
            }
            _ => c.kgce_per_unit,
        };
        lookup(format!("{carrier}_kgce_per_{unit}")).or(base)
    } else {
        None
    };
    let kgco2 = lookup(format!("{carrier}_kgco2_per_{unit}"))
        .or_else(|| co2.factors.get(carrier).copied())?;
    Some(Resolved { kgce, kgco2 })
}

/// What a result was computed with: recorded with every result.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CoefficientRecord {
    pub set: String,
    pub electricity_basis: ElectricityBasis,
    pub co2_set: String,
    /// Overrides of the document.
    pub overrides: BTreeMap<String, f64>,
    /// Overrides per enterprise that apply to meters in this result.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub enterprise_overrides: BTreeMap<String, BTreeMap<String, f64>>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compiled_in_data_is_consistent() {
        check_data().unwrap();
        let set = energy_set(DEFAULT_SET).unwrap();
        assert_eq!(set.carriers["electricity"].kgce_per_unit, Some(0.1229));
        assert!(!set.carriers["water"].energy);
    }

    #[test]
    fn resolution_order_is_enterprise_then_document_then_set() {
        let mut choice = CoefficientChoice::default();
        assert_eq!(
            resolve(&choice, None, "natural_gas").unwrap().kgce,
            Some(1.2143)
        );
        choice
            .overrides
            .insert("natural_gas_kgce_per_m3".into(), 1.33);
        assert_eq!(
            resolve(&choice, None, "natural_gas").unwrap().kgce,
            Some(1.33)
        );
        let ent: BTreeMap<String, f64> = [("natural_gas_kgce_per_m3".to_string(), 1.25)].into();
        assert_eq!(
            resolve(&choice, Some(&ent), "natural_gas").unwrap().kgce,
            Some(1.25)
        );
        assert_eq!(resolve(&choice, None, "water").unwrap().kgce, None);
        choice.electricity_basis = ElectricityBasis::EqualValue;
        assert_eq!(
            resolve(&choice, None, "electricity").unwrap().kgce,
            Some(0.3050)
        );
        assert_eq!(resolve(&choice, None, "electricity").unwrap().kgco2, 0.5306);
    }

    #[test]
    fn units_convert_only_within_a_dimension() {
        assert_eq!(unit_factor("MWh", "kWh"), Some(1000.0));
        assert_eq!(unit_factor("kg", "t"), Some(0.001));
        assert_eq!(unit_factor("m³", "m3"), Some(1.0));
        assert_eq!(unit_factor("MJ", "GJ"), Some(0.001));
        assert_eq!(unit_factor("kWh", "m3"), None);
        assert_eq!(unit_factor("L", "t"), None);
    }

    #[test]
    fn override_keys_are_checked() {
        let choice = CoefficientChoice::default();
        let mut errs = Errors::default();
        let o: BTreeMap<String, f64> = [
            ("natural_gas_kgce_per_m3".to_string(), 1.3),
            ("electricity_kgco2_per_kwh".to_string(), 0.5703),
            ("water_kgce_per_m3".to_string(), 0.1),
            ("gas_kgce".to_string(), 1.0),
            ("diesel_kgce_per_t".to_string(), -1.0),
        ]
        .into();
        validate_overrides(&choice, &o, "coefficients.overrides", &mut errs);
        let paths: Vec<&str> = errs.0.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(
            paths,
            vec![
                "coefficients.overrides.diesel_kgce_per_t",
                "coefficients.overrides.gas_kgce",
                "coefficients.overrides.water_kgce_per_m3"
            ]
        );
    }
}
