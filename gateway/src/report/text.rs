//! Labels and number formats shared by the renderings (zh-CN and English).

use jiff::tz::TimeZone;
use serde_json::Number;
use shopfloor_core::path::Level;
use shopfloor_store::Ms;

use super::Lang;

/// The economic input fields, in the order of `model::EconomicInputs`, with their labels.
pub(crate) const INPUT_FIELDS: &[(&str, &str, &str, &str)] = &[
    (
        "value_added_cny",
        "工业增加值",
        "Industrial value added",
        "CNY",
    ),
    ("gross_output_cny", "工业总产值", "Gross output", "CNY"),
    (
        "employees_avg",
        "平均从业人数",
        "Average employees",
        "persons",
    ),
    ("land_area_m2", "用地面积", "Land area", "m²"),
    (
        "solid_waste_generated_t",
        "一般工业固体废物产生量",
        "Solid waste generated",
        "t",
    ),
    (
        "solid_waste_utilized_t",
        "一般工业固体废物综合利用量",
        "Solid waste utilised",
        "t",
    ),
    (
        "unmetered_water_m3",
        "无计量取水量",
        "Unmetered water",
        "m³",
    ),
];

/// Label and unit of an input field (the field name itself when unknown).
pub(crate) fn input_label(lang: Lang, field: &str) -> (String, &'static str) {
    INPUT_FIELDS
        .iter()
        .find(|f| f.0 == field)
        .map_or((field.to_owned(), ""), |f| {
            (lang.t(f.1, f.2).to_owned(), f.3)
        })
}

pub(crate) fn level(lang: Lang, l: Level) -> &'static str {
    match l {
        Level::Park => lang.t("园区", "park"),
        Level::Enterprise => lang.t("企业", "enterprise"),
        Level::Workshop => lang.t("车间", "workshop"),
        Level::Line => lang.t("产线", "line"),
        Level::Equipment => lang.t("设备", "equipment"),
    }
}

/// `≥`, `≤`, or the change comparisons (`Δ ≤`) of plan targets and assessment criteria.
pub(crate) fn comparison(c: &str) -> &'static str {
    match c {
        "ge" => "≥",
        "le" => "≤",
        "change_le" => "Δ ≤",
        "change_ge" => "Δ ≥",
        _ => "?",
    }
}

pub(crate) fn met(lang: Lang, m: Option<bool>) -> &'static str {
    match m {
        Some(true) => lang.t("达标", "met"),
        Some(false) => lang.t("未达标", "not met"),
        None => lang.t("无法判定", "unknown"),
    }
}

/// A number as JSON and `calc` print it: whole numbers as integers, everything else as the
/// shortest decimal that reads back to the same f64. The exact value in CSV and in the HTML's
/// `data-value` attributes.
pub(crate) fn exact(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 9.0e15 {
        #[allow(clippy::cast_possible_truncation)]
        return (v as i64).to_string();
    }
    Number::from_f64(v).map_or_else(String::new, |n| n.to_string())
}

/// Thousands separators for the integer part of a decimal text.
fn group(text: &str) -> String {
    let (sign, rest) = match text.strip_prefix('-') {
        Some(r) => ("-", r),
        None => ("", text),
    };
    let (int, frac) = match rest.split_once('.') {
        Some((i, f)) => (i, Some(f)),
        None => (rest, None),
    };
    let mut out = String::with_capacity(text.len() + int.len() / 3);
    let n = int.len();
    for (i, c) in int.chars().enumerate() {
        if i > 0 && (n - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    match frac {
        Some(f) => format!("{sign}{out}.{f}"),
        None => format!("{sign}{out}"),
    }
}

fn trim_zeros(s: String) -> String {
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_owned()
    } else {
        s
    }
}

/// A number for reading: ratios as percentages, counts whole, others with 4 to 6 significant
/// digits and thousands separators. Exact values are in the XLSX, CSV and JSON files.
pub(crate) fn human(v: f64, unit: &str) -> String {
    if !v.is_finite() {
        return "—".into();
    }
    match unit {
        "ratio" => format!("{} %", trim_zeros(format!("{:.2}", v * 100.0))),
        "bool" => if v != 0.0 { "✓" } else { "✗" }.into(),
        "count" => group(&format!("{v:.0}")),
        _ => plain(v),
    }
}

/// A number without a unit rule (coefficients, quantities).
pub(crate) fn plain(v: f64) -> String {
    if v == 0.0 {
        return "0".into();
    }
    let a = v.abs();
    let decimals = if a >= 1000.0 {
        2
    } else if a >= 1.0 {
        4
    } else {
        // Six significant digits below 1.
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let lead = (-a.log10()).floor().max(0.0) as usize;
        (lead + 6).min(12)
    };
    group(&trim_zeros(format!("{v:.decimals$}")))
}

pub(crate) fn percent(v: f64) -> String {
    format!("{} %", trim_zeros(format!("{:.1}", v * 100.0)))
}

/// `2026-09-01 08:00:00 +08:00` in the gateway's zone.
pub(crate) fn local(t: Ms, tz: &TimeZone) -> String {
    match jiff::Timestamp::from_millisecond(t) {
        Ok(ts) => ts
            .to_zoned(tz.clone())
            .strftime("%Y-%m-%d %H:%M:%S %:z")
            .to_string(),
        Err(_) => t.to_string(),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn numbers_read_well_and_exactly() {
        assert_eq!(exact(25_200.0), "25200");
        assert_eq!(exact(0.1), "0.1");
        assert_eq!(human(0.8534, "ratio"), "85.34 %");
        assert_eq!(human(1.0, "ratio"), "100 %");
        assert_eq!(human(1_234_567.0, "count"), "1,234,567");
        assert_eq!(human(1_234_567.891, "CNY"), "1,234,567.89");
        assert_eq!(human(-1_234.5, "CNY"), "-1,234.5");
        assert_eq!(plain(0.1229), "0.1229");
        assert_eq!(plain(0.000_123_456_789), "0.000123457");
        assert_eq!(plain(12.345_678), "12.3457");
        assert_eq!(percent(0.5), "50 %");
    }
}
