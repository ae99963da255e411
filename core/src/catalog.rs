//! The indicator catalog (INDICATORS.md): stable ids, Chinese and English names, units, and the
//! levels at which each id applies (docs/ENGINE.md §4). Carrier quantities (`electricity_kwh`,
//! …) are added from the coefficient data.
//!
//! Invariant: the engine emits exactly the ids [`ids_for`] lists for a level — no more, no less.

use crate::coefficients;
use crate::path::Level;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Def {
    pub id: &'static str,
    pub name_zh: &'static str,
    pub name_en: &'static str,
    pub unit: &'static str,
    /// Deepest level at which the id applies …
    pub deepest: Level,
    /// … and the highest (smallest depth).
    pub highest: Level,
}

use Level::{Enterprise as N, Equipment as E, Park as P, Workshop as W};

const fn d(
    id: &'static str,
    zh: &'static str,
    en: &'static str,
    unit: &'static str,
    deepest: Level,
    highest: Level,
) -> Def {
    Def {
        id,
        name_zh: zh,
        name_en: en,
        unit,
        deepest,
        highest,
    }
}

/// Every fixed id, in catalog order.
pub const DEFS: &[Def] = &[
    // §2 equipment and line
    d(
        "planned_busy_time_s",
        "计划占用时间",
        "Planned busy time",
        "s",
        E,
        P,
    ),
    d(
        "actual_production_time_s",
        "实际生产时间",
        "Actual production time",
        "s",
        E,
        P,
    ),
    d("availability", "时间开动率", "Availability", "ratio", E, P),
    d("performance", "性能开动率", "Performance", "ratio", E, P),
    d("quality_rate", "合格品率", "Quality rate", "ratio", E, P),
    d(
        "oee",
        "设备综合效率",
        "Overall equipment effectiveness (OEE)",
        "ratio",
        E,
        P,
    ),
    d(
        "teep",
        "完全有效生产率",
        "Total effective equipment performance (TEEP)",
        "ratio",
        E,
        P,
    ),
    d("produced_qty", "产量", "Produced quantity", "count", E, P),
    d("good_qty", "合格品数", "Good quantity", "count", E, P),
    d("scrap_qty", "不合格品数", "Scrap quantity", "count", E, P),
    d("defect_rate", "产品不良品率", "Defect rate", "ratio", E, P),
    d(
        "energy_kgce",
        "综合能耗",
        "Energy consumption",
        "kgce",
        E,
        P,
    ),
    d(
        "energy_per_unit_kgce",
        "单位产品综合能耗",
        "Energy per good unit",
        "kgce/unit",
        E,
        P,
    ),
    d("co2_kg", "二氧化碳排放", "CO₂ emissions", "kgCO₂", E, P),
    d(
        "value_added_cny",
        "工业增加值",
        "Industrial value added",
        "CNY",
        E,
        P,
    ),
    d("networked", "联网", "Networked", "bool", E, E),
    d(
        "nc_controlled",
        "数控",
        "Numerically controlled",
        "bool",
        E,
        E,
    ),
    // §3 workshop
    d(
        "key_process_nc_rate",
        "关键工序数控化率",
        "Key-process NC rate",
        "ratio",
        W,
        P,
    ),
    d(
        "digital_equipment_rate",
        "数字化设备占比",
        "Digital equipment rate",
        "ratio",
        W,
        P,
    ),
    d(
        "equipment_networking_rate",
        "设备联网率",
        "Equipment networking rate",
        "ratio",
        W,
        P,
    ),
    d(
        "data_auto_collection_rate",
        "数据自动采集率",
        "Automatic data collection rate",
        "ratio",
        W,
        P,
    ),
    d(
        "production_efficiency_change",
        "生产效率提高",
        "Production efficiency change vs baseline",
        "ratio",
        W,
        P,
    ),
    d(
        "defect_rate_change",
        "产品不良品率降低",
        "Defect rate change vs baseline",
        "ratio",
        W,
        P,
    ),
    d(
        "energy_per_value_added",
        "单位工业增加值能耗",
        "Energy per value added",
        "tce/万元",
        W,
        P,
    ),
    // §4 enterprise
    d("energy_tce", "综合能耗", "Energy consumption", "tce", N, P),
    d(
        "water_per_value_added",
        "单位工业增加值用水量",
        "Water per value added",
        "m³/万元",
        N,
        P,
    ),
    d(
        "co2_per_value_added",
        "单位工业增加值二氧化碳排放",
        "CO₂ per value added",
        "tCO₂/万元",
        N,
        P,
    ),
    d(
        "output_per_kwh",
        "用电产出",
        "Output per kWh",
        "CNY/kWh",
        N,
        P,
    ),
    d(
        "labor_productivity",
        "全员劳动生产率",
        "Labour productivity",
        "万元/人·年",
        N,
        P,
    ),
    d(
        "solid_waste_utilization_rate",
        "工业固体废物综合利用率",
        "Solid waste utilisation rate",
        "ratio",
        N,
        P,
    ),
    d(
        "land_output_intensity",
        "单位用地面积产值",
        "Land output intensity",
        "亿元/km²",
        N,
        P,
    ),
    d(
        "renewable_energy_share",
        "可再生能源使用比例",
        "Renewable energy share",
        "ratio",
        N,
        P,
    ),
    d(
        "energy_per_value_added_change",
        "单位增加值能耗下降",
        "Energy per value added change vs baseline",
        "ratio",
        N,
        P,
    ),
    d(
        "water_per_value_added_change",
        "单位增加值用水量下降",
        "Water per value added change vs baseline",
        "ratio",
        N,
        P,
    ),
    // §5 park
    d(
        "key_process_nc_rate_weighted",
        "关键工序数控化率(设备加权)",
        "Key-process NC rate, equipment-weighted",
        "ratio",
        P,
        P,
    ),
    d(
        "digital_workshop_count",
        "数字化车间认定数量",
        "Certified digital workshops",
        "count",
        P,
        P,
    ),
    d(
        "smart_factory_count",
        "智能工厂认定数量",
        "Certified smart factories",
        "count",
        P,
        P,
    ),
    d(
        "green_factory_count",
        "绿色工厂认定数量",
        "Certified green factories",
        "count",
        P,
        P,
    ),
];

pub fn def(id: &str) -> Option<&'static Def> {
    DEFS.iter().find(|d| d.id == id)
}

fn applies(def: &Def, level: Level) -> bool {
    level <= def.deepest && level >= def.highest
}

/// Fixed ids that apply at `level`, in catalog order.
pub fn fixed_ids_for(level: Level) -> impl Iterator<Item = &'static Def> {
    DEFS.iter().filter(move |d| applies(d, level))
}

/// A carrier quantity id and its metadata, from the energy coefficient set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CarrierId {
    pub id: String,
    pub carrier: String,
    pub unit: String,
    pub name_zh: String,
    pub name_en: String,
}

pub fn carrier_ids(set: &str) -> Vec<CarrierId> {
    coefficients::energy_set(set)
        .map(|s| {
            s.carriers
                .iter()
                .map(|(k, c)| CarrierId {
                    id: coefficients::carrier_indicator_id(k, &c.unit),
                    carrier: k.clone(),
                    unit: c.unit.clone(),
                    name_zh: c.name_zh.clone(),
                    name_en: c.name_en.clone(),
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Name and unit of any id (fixed or carrier) for reports and dashboards.
pub fn describe(id: &str, set: &str) -> Option<(String, String, String)> {
    if let Some(d) = def(id) {
        return Some((d.name_zh.into(), d.name_en.into(), d.unit.into()));
    }
    carrier_ids(set).into_iter().find(|c| c.id == id).map(|c| {
        (
            format!("{}消耗量", c.name_zh),
            format!("{} consumption", c.name_en),
            c.unit,
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_unique_and_levels_sane() {
        let mut ids: Vec<&str> = DEFS.iter().map(|d| d.id).collect();
        ids.sort_unstable();
        let n = ids.len();
        ids.dedup();
        assert_eq!(ids.len(), n);
        for d in DEFS {
            assert!(d.highest <= d.deepest, "{}", d.id);
        }
        assert!(fixed_ids_for(Level::Equipment).any(|d| d.id == "networked"));
        assert!(!fixed_ids_for(Level::Line).any(|d| d.id == "networked"));
        assert!(fixed_ids_for(Level::Park).any(|d| d.id == "key_process_nc_rate_weighted"));
        assert!(!fixed_ids_for(Level::Enterprise).any(|d| d.id == "green_factory_count"));
    }

    #[test]
    fn carrier_ids_follow_units() {
        let ids: Vec<String> = carrier_ids("gbt2589-2020")
            .into_iter()
            .map(|c| c.id)
            .collect();
        for want in [
            "electricity_kwh",
            "natural_gas_m3",
            "water_m3",
            "steam_t",
            "heat_gj",
            "diesel_t",
        ] {
            assert!(ids.iter().any(|i| i == want), "{want} missing from {ids:?}");
        }
    }
}
