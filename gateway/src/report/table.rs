//! The report as one CSV file (UTF-8 with a byte-order mark, so that Excel opens Chinese text
//! correctly; CRLF line ends). Sections follow each other; every section starts with a header
//! row whose first cell is `#<section>` and names the columns, and each of its rows starts with
//! `<section>`. Numbers are written exactly (the API's JSON numbers), empty means none. Column
//! names are stable and English; only the summary's `label` column follows the language.
//! Layout: docs/REPORTS.md.

use super::doc::Doc;
use super::text::{INPUT_FIELDS, exact, input_label};
use crate::indicators::rfc3339;

/// UTF-8 byte-order mark.
const BOM: &[u8] = b"\xEF\xBB\xBF";

fn n(v: Option<f64>) -> String {
    v.map(exact).unwrap_or_default()
}

fn b(v: Option<bool>) -> String {
    v.map(|x| x.to_string()).unwrap_or_default()
}

fn json(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::Null => String::new(),
        serde_json::Value::Number(x) => x.as_f64().map(exact).unwrap_or_else(|| x.to_string()),
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// The CSV bytes.
pub(crate) fn render(d: &Doc) -> Result<Vec<u8>, csv::Error> {
    let l = d.lang;
    let h = &d.head;
    let tz = &d.tz;
    let mut w = csv::WriterBuilder::new()
        .flexible(true)
        .terminator(csv::Terminator::CRLF)
        .from_writer(BOM.to_vec());

    let verdict = match &d.verification {
        None => "NOT CHECKED",
        Some(v) if v.passed() => "PASS",
        Some(_) => "FAIL",
    };
    w.write_record(["#summary", "key", "label", "value"])?;
    let mut kv = |k: &str, label: &str, v: String| w.write_record(["summary", k, label, &v]);
    kv("title", l.t("报告", "Report"), h.title.clone())?;
    kv("entity", l.t("实体编号", "Entity"), h.entity.id.clone())?;
    kv(
        "name_zh",
        l.t("中文名称", "Name (zh)"),
        h.entity.name_zh.clone().unwrap_or_default(),
    )?;
    kv(
        "name_en",
        l.t("英文名称", "Name (en)"),
        h.entity.name_en.clone().unwrap_or_default(),
    )?;
    kv(
        "level",
        l.t("层级", "Level"),
        h.entity.level.map_or("", |x| x.as_str()).to_owned(),
    )?;
    for p in &h.parents {
        kv(
            p.level.map_or("parent", |x| x.as_str()),
            l.t("所属", "Part of"),
            p.id.clone(),
        )?;
    }
    kv(
        "region",
        l.t("地区", "Region"),
        h.region.clone().unwrap_or_default(),
    )?;
    kv(
        "from",
        l.t("起始（含）", "From (included)"),
        h.from_rfc3339.clone(),
    )?;
    kv(
        "to",
        l.t("截止（不含）", "To (excluded)"),
        h.to_rfc3339.clone(),
    )?;
    kv("time_zone", l.t("时区", "Time zone"), h.time_zone.clone())?;
    kv(
        "generated_at",
        l.t("生成时间", "Generated at"),
        h.generated_at.clone(),
    )?;
    kv(
        "gateway_version",
        l.t("网关版本", "Gateway version"),
        h.gateway_version.to_owned(),
    )?;
    kv(
        "engine_version",
        l.t("计算引擎版本", "Engine version"),
        h.engine_version.clone(),
    )?;
    kv(
        "coefficient_set",
        l.t("折标系数集", "Coefficient set"),
        h.coefficient_set.clone(),
    )?;
    kv(
        "electricity_basis",
        l.t("电力折标方法", "Electricity basis"),
        h.electricity_basis.to_owned(),
    )?;
    kv(
        "co2_set",
        l.t("二氧化碳排放因子集", "CO₂ factor set"),
        h.co2_set.clone(),
    )?;
    for (k, v, whose) in &h.overrides {
        kv(
            &format!("override.{k}"),
            &format!("{} ({whose})", l.t("系数覆盖值", "Coefficient override")),
            exact(*v),
        )?;
    }
    kv(
        "value_added_source",
        l.t("工业增加值来源", "Value added source"),
        h.value_added_source.clone().unwrap_or_default(),
    )?;
    kv(
        "evidence_sha256",
        l.t("证据文件 SHA-256", "Evidence SHA-256"),
        h.evidence_sha256.clone(),
    )?;
    kv(
        "signatures",
        l.t("签名验证", "Signatures"),
        verdict.to_owned(),
    )?;
    for a in &d.assessments {
        kv(
            &format!("assessment.{}", a.rule_set),
            l.t("评价结果", "Assessment"),
            a.result.clone(),
        )?;
    }

    w.write_record([
        "#indicator",
        "id",
        "name_zh",
        "name_en",
        "value",
        "unit",
        "completeness",
        "group",
        "target_id",
        "comparison",
        "target",
        "target_year",
        "met",
    ])?;
    for i in &d.indicators {
        let tg = i.target.as_ref();
        w.write_record([
            "indicator",
            &i.id,
            &i.name_zh,
            &i.name_en,
            &n(i.value),
            &i.unit,
            &exact(i.completeness),
            if i.green { "green" } else { "other" },
            &tg.map(|x| x.id.clone()).unwrap_or_default(),
            &tg.map(|x| x.comparison.clone()).unwrap_or_default(),
            &n(tg.map(|x| x.value)),
            &tg.map(|x| x.year.to_string()).unwrap_or_default(),
            &b(tg.and_then(|x| x.met)),
        ])?;
    }

    if !d.assessments.is_empty() {
        w.write_record([
            "#assessment",
            "rule_set",
            "criterion",
            "name_zh",
            "name_en",
            "indicator",
            "value",
            "comparison",
            "benchmark",
            "leading",
            "pass",
            "tier",
            "completeness",
        ])?;
        for a in &d.assessments {
            for c in &a.criteria {
                w.write_record([
                    "assessment",
                    &a.rule_set,
                    &c.id,
                    &c.name_zh,
                    &c.name_en,
                    &c.indicator,
                    &n(c.value),
                    &c.comparison,
                    &exact(c.benchmark),
                    &n(c.leading),
                    &b(c.pass),
                    c.tier.as_deref().unwrap_or(""),
                    &exact(c.completeness),
                ])?;
            }
        }
    }

    let e = &d.energy;
    w.write_record([
        "#energy",
        "carrier",
        "indicator",
        "name_zh",
        "name_en",
        "quantity",
        "unit",
        "completeness",
        "meters",
        "renewable_meters",
        "kgce_per_unit",
        "kgce_source",
        "kgce",
        "share",
        "kgco2_per_unit",
        "co2_source",
        "co2_kg",
    ])?;
    for c in &e.rows {
        let (kv, ks) = c
            .kgce_per_unit
            .as_ref()
            .map_or((String::new(), String::new()), |k| {
                (n(k.value), k.source.clone())
            });
        w.write_record([
            "energy",
            &c.carrier,
            &c.indicator,
            &c.name_zh,
            &c.name_en,
            &n(c.quantity),
            &c.unit,
            &exact(c.completeness),
            &c.meters.to_string(),
            &c.renewable_meters.to_string(),
            &kv,
            &ks,
            &n(c.kgce),
            &n(c.share),
            &n(c.co2_per_unit.value),
            &c.co2_per_unit.source,
            &n(c.co2_kg),
        ])?;
    }
    w.write_record(["#energy_total", "id", "value", "unit"])?;
    for (id, v, unit) in [
        ("energy_kgce", e.total_kgce, "kgce"),
        ("energy_tce", e.total_tce, "tce"),
        ("co2_kg", e.total_co2_kg, "kgCO₂"),
        ("renewable_energy_share", e.renewable_share, "ratio"),
    ] {
        w.write_record(["energy_total", id, &n(v), unit])?;
    }

    w.write_record(["#input_used", "entity", "field", "value", "unit"])?;
    for u in &d.inputs_used {
        for (field, v) in &u.values {
            let unit = input_label(l, field).1;
            w.write_record(["input_used", &u.entity, field, &n(*v), unit])?;
        }
    }
    let mut head = vec![
        "#input_version",
        "entity",
        "from",
        "to",
        "version",
        "current",
        "at",
        "actor",
        "source",
    ];
    head.extend(INPUT_FIELDS.iter().map(|f| f.0));
    w.write_record(&head)?;
    for v in &d.input_versions {
        let mut row = vec![
            "input_version".to_owned(),
            v.entity.clone(),
            rfc3339(v.from, tz),
            rfc3339(v.to, tz),
            v.version.to_string(),
            v.current.to_string(),
            rfc3339(v.at, tz),
            v.actor.clone(),
            v.source.clone(),
        ];
        row.extend(
            INPUT_FIELDS
                .iter()
                .map(|f| n(v.values.iter().find(|(k, _)| k == f.0).map(|(_, x)| *x))),
        );
        w.write_record(&row)?;
    }

    w.write_record([
        "#audit", "at", "actor", "entity", "from", "to", "version", "field", "before", "after",
    ])?;
    for a in &d.audit {
        w.write_record([
            "audit",
            &rfc3339(a.at, tz),
            &a.actor,
            &a.entity,
            &rfc3339(a.from, tz),
            &rfc3339(a.to, tz),
            &a.version.map(|v| v.to_string()).unwrap_or_default(),
            &a.field,
            &json(&a.before),
            &json(&a.after),
        ])?;
    }

    w.write_record([
        "#signature",
        "agent",
        "result",
        "public_key",
        "revoked",
        "first_seq",
        "last_seq",
        "cited",
        "checked",
        "verified",
        "problems",
        "first_hash",
        "last_hash",
    ])?;
    let agents = d.verification.as_ref().map_or(&[][..], |v| &v.agents[..]);
    for a in agents {
        w.write_record([
            "signature",
            &a.agent,
            if a.passed() { "PASS" } else { "FAIL" },
            &a.public_key,
            &a.revoked.to_string(),
            &a.first_seq.to_string(),
            &a.last_seq.to_string(),
            &a.cited.to_string(),
            &a.checked.to_string(),
            &a.ok.to_string(),
            &a.problems.to_string(),
            &a.first_hash,
            &a.last_hash,
        ])?;
    }
    w.write_record(["#signature_failure", "agent", "seq", "reason", "detail"])?;
    for a in agents {
        for f in &a.failures {
            w.write_record([
                "signature_failure",
                &a.agent,
                &f.seq.map(|s| s.to_string()).unwrap_or_default(),
                &f.reason,
                &f.detail,
            ])?;
        }
    }
    w.write_record(["#signature_note", "agent", "note"])?;
    for a in agents {
        for note in &a.notes {
            w.write_record(["signature_note", &a.agent, note])?;
        }
    }
    if !d.enterprises.is_empty() {
        w.write_record(["#enterprise", "id", "name_zh", "name_en"])?;
        for e in &d.enterprises {
            w.write_record([
                "enterprise",
                &e.id,
                e.name_zh.as_deref().unwrap_or(""),
                e.name_en.as_deref().unwrap_or(""),
            ])?;
        }
    }
    w.into_inner().map_err(|e| csv::Error::from(e.into_error()))
}
