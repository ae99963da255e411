//! The printable report: one self-contained HTML page (inline CSS for screen and A4 print, no
//! script, no font, image or style sheet from anywhere). Every number shown rounded carries its
//! exact value in a `data-value` attribute (the API's and `calc`'s number).

use std::fmt::Write as _;

use serde_json::Value;

use super::doc::{Coef, Doc, IndRow};
use super::text::{self, comparison, exact, human, input_label, percent, plain};
use super::{Lang, verify};

const CSS: &str = r#"
@page { size: A4; margin: 16mm 14mm 18mm 14mm; }
@page { @bottom-right { content: counter(page) " / " counter(pages); font-size: 8pt; color: #555; } }
* { box-sizing: border-box; }
html { -webkit-print-color-adjust: exact; print-color-adjust: exact; }
body { font-family: "Noto Sans CJK SC", "Source Han Sans SC", "PingFang SC", "Microsoft YaHei",
       "SimHei", "Helvetica Neue", Arial, sans-serif; font-size: 9.5pt; line-height: 1.4;
       color: #111; background: #fff; margin: 0 auto; max-width: 182mm; }
h1 { font-size: 16pt; margin: 0 0 1mm; }
.subtitle { color: #444; margin: 0 0 4mm; }
h2 { font-size: 12pt; margin: 7mm 0 2mm; padding-bottom: 1mm; border-bottom: 1.2pt solid #222;
     break-after: avoid; page-break-after: avoid; }
h3 { font-size: 10.5pt; margin: 4mm 0 1.5mm; break-after: avoid; page-break-after: avoid; }
table { width: 100%; border-collapse: collapse; margin: 1mm 0 3mm; font-size: 8.5pt; }
table.meta { font-size: 9pt; }
th, td { border: 0.5pt solid #999; padding: 0.8mm 1.4mm; text-align: left; vertical-align: top; }
th { background: #ececec; font-weight: 600; }
thead { display: table-header-group; }
tr { break-inside: avoid; page-break-inside: avoid; }
td.num { text-align: right; white-space: nowrap; font-variant-numeric: tabular-nums; }
th.num { text-align: right; }
td.id { overflow-wrap: anywhere; }
table.inputs-used td.id, table.versions td.id { white-space: nowrap; overflow-wrap: normal; }
td.agent { font-family: "DejaVu Sans Mono", "Consolas", "Menlo", monospace; font-size: 8pt; white-space: nowrap; }
tr.sub td { border-top: none; color: #444; font-size: 7.5pt; }
tr.total td { font-weight: 600; background: #f6f6f6; }
table.meta th { width: 30%; background: #f4f4f4; font-weight: 500; }
.alt { display: block; color: #666; font-size: 8pt; }
.src { display: block; color: #666; font-size: 7.5pt; white-space: normal; overflow-wrap: anywhere; }
table.indicators td.id, table.completeness td.id { width: 24%; overflow-wrap: anywhere; }
table.energy, table.audit, table.versions { font-size: 8pt; }
.id, .mono { font-family: "DejaVu Sans Mono", "Consolas", "Menlo", monospace; font-size: 8pt; }
.mono { word-break: break-all; }
.muted { color: #666; }
.pass { color: #0a6b2d; font-weight: 700; }
.fail { color: #b00020; font-weight: 700; }
.warn { color: #8a5a00; }
.verdict { border: 1.5pt solid; padding: 2mm 3mm; margin: 2mm 0 3mm; font-size: 11pt; }
.verdict.pass { border-color: #0a6b2d; }
.verdict.fail { border-color: #b00020; }
.summary { display: flex; gap: 3mm; margin: 2mm 0 1mm; }
.summary div { flex: 1; border: 0.5pt solid #999; padding: 1.5mm 2mm; }
.summary b { display: block; font-size: 11pt; }
ul.notes { margin: 1mm 0 3mm; padding-left: 5mm; }
.sign { width: 100%; margin-top: 12mm; }
.sign td { border: none; padding: 8mm 2mm 0; width: 33%; }
.sign span { display: block; border-top: 0.5pt solid #333; padding-top: 1mm; }
footer { margin-top: 6mm; color: #555; font-size: 8pt; }
@media screen { body { padding: 12mm 10mm; } }
"#;

/// HTML-escapes text.
fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

const DASH: &str = "—";

/// A numeric cell: the rounded number, the exact value in `data-value`.
fn num(v: Option<f64>, unit: &str) -> String {
    match v {
        Some(x) => format!(
            "<td class=\"num\" data-value=\"{}\">{}</td>",
            exact(x),
            esc(&human(x, unit))
        ),
        None => format!("<td class=\"num\" data-value=\"\">{DASH}</td>"),
    }
}

/// A coefficient cell: the value (exact in `data-value`), its source below.
fn coef_cell(c: Option<&Coef>) -> String {
    match c {
        None => format!("<td class=\"num\" data-value=\"\">{DASH}</td>"),
        Some(c) => format!(
            "<td class=\"num\" data-value=\"{}\">{}<span class=\"src\">{}</span></td>",
            c.value.map(exact).unwrap_or_default(),
            c.value.map_or_else(|| DASH.to_owned(), |v| esc(&plain(v))),
            esc(&c.source)
        ),
    }
}

fn both(lang: Lang, zh: &str, en: &str) -> String {
    let (a, b) = match lang {
        Lang::ZhCn => (zh, en),
        Lang::En => (en, zh),
    };
    if b.is_empty() || a == b {
        esc(a)
    } else {
        format!("{}<span class=\"alt\">{}</span>", esc(a), esc(b))
    }
}

fn json_text(v: &Value) -> String {
    match v {
        Value::Null => DASH.to_owned(),
        Value::Number(n) => n.as_f64().map_or_else(|| n.to_string(), plain),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

struct Sections {
    n: usize,
}

impl Sections {
    fn next(&mut self) -> usize {
        self.n += 1;
        self.n
    }
}

/// A sub-section heading in the report's language.
fn h3(out: &mut String, l: Lang, zh: &str, en: &str) {
    let _ = write!(out, "<h3>{}</h3>", esc(l.t(zh, en)));
}

/// The line shown where a section has no rows.
fn none(out: &mut String, l: Lang) {
    let _ = write!(
        out,
        "<p class=\"muted\">{}</p>",
        esc(l.t("无记录。", "None."))
    );
}

fn meta_row(out: &mut String, label: &str, value: &str) {
    let _ = write!(out, "<tr><th>{}</th><td>{value}</td></tr>", esc(label));
}

fn header(out: &mut String, d: &Doc) {
    let l = d.lang;
    let h = &d.head;
    let _ = write!(out, "<header><h1>{}</h1>", esc(&h.title));
    let _ = write!(
        out,
        "<p class=\"subtitle\">{} · {} {} → {}</p>",
        esc(&h.entity.id),
        esc(l.t("期间", "period")),
        esc(&h.from_local),
        esc(&h.to_local)
    );
    out.push_str("<table class=\"meta\"><tbody>");
    meta_row(
        out,
        l.t("实体编号", "Entity"),
        &format!("<span class=\"id\">{}</span>", esc(&h.entity.id)),
    );
    let names = [h.entity.name_zh.as_deref(), h.entity.name_en.as_deref()]
        .into_iter()
        .flatten()
        .map(esc)
        .collect::<Vec<_>>()
        .join(" / ");
    meta_row(
        out,
        l.t("名称", "Name"),
        if names.is_empty() { DASH } else { &names },
    );
    if let Some(level) = h.entity.level {
        meta_row(
            out,
            l.t("层级", "Level"),
            esc(text::level(l, level)).as_str(),
        );
    }
    for p in &h.parents {
        let label = match p.level {
            Some(level) => text::level(l, level),
            None => "",
        };
        let name = p
            .name(l)
            .map(|n| format!(" {}", esc(n)))
            .unwrap_or_default();
        meta_row(
            out,
            &format!("{}{}", l.t("所属", "Part of "), label),
            &format!("<span class=\"id\">{}</span>{name}", esc(&p.id)),
        );
    }
    if let Some(r) = &h.region {
        meta_row(out, l.t("地区", "Region"), &esc(r));
    }
    meta_row(
        out,
        l.t("报告期", "Period"),
        &format!(
            "{} → {} <span class=\"muted\">({} {}; {})</span>",
            esc(&h.from_local),
            esc(&h.to_local),
            esc(l.t("时区", "time zone")),
            esc(&h.time_zone),
            esc(l.t("起点含、终点不含", "start included, end excluded"))
        ),
    );
    meta_row(out, l.t("生成时间", "Generated at"), &esc(&h.generated_at));
    meta_row(
        out,
        l.t("网关 / 计算引擎版本", "Gateway / engine version"),
        &format!(
            "shopfloor-gateway {} / shopfloor-core {}",
            esc(h.gateway_version),
            esc(&h.engine_version)
        ),
    );
    meta_row(
        out,
        l.t("折标系数集", "Coefficient set"),
        &format!(
            "<span class=\"id\">{}</span> {} · {} {}",
            esc(&h.coefficient_set),
            esc(&h.coefficient_set_name),
            esc(l.t("电力折标", "electricity")),
            esc(h.electricity_basis)
        ),
    );
    meta_row(
        out,
        l.t("二氧化碳排放因子集", "CO₂ factor set"),
        &format!(
            "<span class=\"id\">{}</span> {}",
            esc(&h.co2_set),
            esc(&h.co2_set_name)
        ),
    );
    if !h.overrides.is_empty() {
        let list = h
            .overrides
            .iter()
            .map(|(k, v, whose)| {
                format!(
                    "<span class=\"id\">{}</span> = {} ({})",
                    esc(k),
                    esc(&exact(*v)),
                    esc(whose)
                )
            })
            .collect::<Vec<_>>()
            .join("<br>");
        meta_row(out, l.t("系数覆盖值", "Coefficient overrides"), &list);
    }
    if let Some(s) = &h.value_added_source {
        let what = match s.as_str() {
            "inputs" => l.t("经济数据（填报）", "economic inputs (reported)"),
            "estimate" => l.t("按产品单位增加值估算", "estimate from product value added"),
            other => other,
        };
        meta_row(out, l.t("工业增加值来源", "Value added source"), &esc(what));
    }
    meta_row(
        out,
        l.t("证据文件 SHA-256", "Evidence file SHA-256"),
        &format!(
            "<span class=\"mono\">{}</span> <span class=\"muted\">({} {}, shopfloor.evidence/1)</span>",
            esc(&h.evidence_sha256),
            h.evidence_bytes,
            esc(l.t("字节", "bytes"))
        ),
    );
    if h.counter_wraps > 0 || h.counter_resets > 0 {
        meta_row(
            out,
            l.t("计数器回绕 / 复位", "Counter wraps / resets"),
            &format!("{} / {}", h.counter_wraps, h.counter_resets),
        );
    }
    out.push_str("</tbody></table>");
    summary(out, d);
    out.push_str("</header>");
}

fn verdict_text(d: &Doc) -> (&'static str, String) {
    let l = d.lang;
    match &d.verification {
        None => ("", l.t("未验证", "not checked").to_owned()),
        Some(v) if v.passed() => ("pass", format!("{} PASS", l.t("通过", "passed"))),
        Some(_) => ("fail", format!("{} FAIL", l.t("不通过", "failed"))),
    }
}

fn summary(out: &mut String, d: &Doc) {
    let l = d.lang;
    let with_target: Vec<&IndRow> = d.indicators.iter().filter(|r| r.target.is_some()).collect();
    let met = with_target
        .iter()
        .filter(|r| r.target.as_ref().and_then(|t| t.met) == Some(true))
        .count();
    let complete = d
        .indicators
        .iter()
        .filter(|r| r.value.is_some() && r.completeness >= 1.0)
        .count();
    let (class, verdict) = verdict_text(d);
    out.push_str("<div class=\"summary\">");
    let _ = write!(
        out,
        "<div>{}<b class=\"{class}\">{}</b></div>",
        esc(l.t("签名验证", "Signatures")),
        esc(&verdict)
    );
    let _ = write!(
        out,
        "<div>{}<b>{met} / {}</b></div>",
        esc(l.t("规划目标达标", "Plan targets met")),
        with_target.len()
    );
    let _ = write!(
        out,
        "<div>{}<b>{complete} / {}</b></div>",
        esc(l.t("数据完整的指标", "Indicators with complete data")),
        d.indicators.len()
    );
    for a in &d.assessments {
        let (class, r) = match a.result.as_str() {
            "pass" => ("pass", l.t("通过", "pass")),
            "fail" => ("fail", l.t("未通过", "fail")),
            _ => ("warn", l.t("数据不全", "incomplete")),
        };
        let _ = write!(
            out,
            "<div>{} <span class=\"id\">{}</span><b class=\"{class}\">{}</b></div>",
            esc(l.t("评价", "Assessment")),
            esc(&a.rule_set),
            esc(r)
        );
    }
    out.push_str("</div>");
}

fn indicator_table(out: &mut String, d: &Doc, rows: &[&IndRow]) {
    let l = d.lang;
    let _ = write!(
        out,
        "<table class=\"indicators\"><thead><tr><th>{}</th><th>{}</th><th class=\"num\">{}</th>\
         <th>{}</th><th class=\"num\">{}</th><th>{}</th><th>{}</th></tr></thead><tbody>",
        esc(l.t("指标编号", "Id")),
        esc(l.t("指标名称", "Indicator")),
        esc(l.t("数值", "Value")),
        esc(l.t("单位", "Unit")),
        esc(l.t("完整性", "Completeness")),
        esc(l.t("规划目标", "Target")),
        esc(l.t("判定", "Result"))
    );
    for r in rows {
        let unit = if r.unit == "ratio" {
            "%"
        } else {
            r.unit.as_str()
        };
        let (target, verdict) = match &r.target {
            None => (DASH.to_owned(), DASH.to_owned()),
            Some(t) => {
                let shown = if t.comparison.starts_with("change") || r.unit == "ratio" {
                    human(t.value, "ratio")
                } else {
                    plain(t.value)
                };
                let class = match t.met {
                    Some(true) => "pass",
                    Some(false) => "fail",
                    None => "muted",
                };
                (
                    format!(
                        "{} {} <span class=\"muted\">({} · <span class=\"id\">{}</span>)</span>",
                        esc(comparison(&t.comparison)),
                        esc(&shown),
                        t.year,
                        esc(&t.id)
                    ),
                    format!(
                        "<span class=\"{class}\">{}</span>",
                        esc(text::met(l, t.met))
                    ),
                )
            }
        };
        let _ = write!(
            out,
            "<tr data-id=\"{id}\"><td class=\"id\">{id}</td><td>{}</td>{}<td>{}</td>\
             <td class=\"num\" data-completeness=\"{}\">{}</td><td>{target}</td><td>{verdict}</td></tr>",
            both(l, &r.name_zh, &r.name_en),
            num(r.value, &r.unit),
            esc(unit),
            exact(r.completeness),
            esc(&percent(r.completeness)),
            id = esc(&r.id),
        );
    }
    out.push_str("</tbody></table>");
}

fn indicators(out: &mut String, d: &Doc, s: &mut Sections) {
    let l = d.lang;
    let _ = write!(
        out,
        "<section id=\"indicators\"><h2>{} {}</h2>",
        s.next(),
        esc(l.t("绩效指标", "Performance indicators"))
    );
    let green: Vec<&IndRow> = d.indicators.iter().filter(|r| r.green).collect();
    let rest: Vec<&IndRow> = d.indicators.iter().filter(|r| !r.green).collect();
    if !green.is_empty() {
        let _ = write!(
            out,
            "<h3>{}</h3>",
            esc(l.t("绿色工厂绩效指标", "Green factory performance indicators"))
        );
        indicator_table(out, d, &green);
    }
    let _ = write!(
        out,
        "<h3>{}</h3>",
        esc(if green.is_empty() {
            l.t("指标", "Indicators")
        } else {
            l.t("其他指标", "Other indicators")
        })
    );
    indicator_table(out, d, &rest);
    let _ = write!(
        out,
        "<p class=\"muted\">{}</p></section>",
        esc(l.t(
            "数值按计算引擎对证据文件的计算结果列示（显示时已舍入，精确值见 XLSX/CSV/JSON）；比率以百分数显示；完整性为计算所依据数据的覆盖比例。",
            "Values are the engine's results on the evidence file (rounded for display; exact values in the XLSX, CSV and JSON files); ratios shown as percentages; completeness is the share of the expected data that was present."
        ))
    );
}

fn assessments(out: &mut String, d: &Doc, s: &mut Sections) {
    if d.assessments.is_empty() {
        return;
    }
    let l = d.lang;
    let _ = write!(
        out,
        "<section id=\"assessments\"><h2>{} {}</h2>",
        s.next(),
        esc(l.t("评价", "Assessments"))
    );
    for a in &d.assessments {
        let kind = match a.kind.as_str() {
            "green_factory" => l.t("绿色工厂评价（绩效）", "Green factory (performance)"),
            "digital_workshop" => l.t("数字化车间评估", "Digital workshop"),
            other => other,
        };
        let (class, r) = match a.result.as_str() {
            "pass" => ("pass", l.t("通过", "pass")),
            "fail" => ("fail", l.t("未通过", "fail")),
            _ => ("warn", l.t("数据不全", "incomplete")),
        };
        let _ = write!(
            out,
            "<h3>{} · {} <span class=\"id\">{}</span> · {} <span class=\"id\">{}</span> · <span class=\"{class}\">{}</span></h3>",
            esc(kind),
            esc(l.t(&a.rule_set_name_zh, &a.rule_set_name_en)),
            esc(&a.rule_set),
            esc(l.t("行业", "industry")),
            esc(&a.industry),
            esc(r)
        );
        let _ = write!(
            out,
            "<table><thead><tr><th>{}</th><th>{}</th><th class=\"num\">{}</th><th>{}</th>\
             <th class=\"num\">{}</th><th class=\"num\">{}</th><th>{}</th><th class=\"num\">{}</th></tr></thead><tbody>",
            esc(l.t("评价项", "Criterion")),
            esc(l.t("指标", "Indicator")),
            esc(l.t("数值", "Value")),
            esc(l.t("比较", "Rule")),
            esc(l.t("基准值", "Benchmark")),
            esc(l.t("引领值", "Leading")),
            esc(l.t("结果", "Result")),
            esc(l.t("完整性", "Completeness"))
        );
        for c in &a.criteria {
            let result = match (c.pass, c.tier.as_deref()) {
                (Some(true), Some("leading")) => {
                    format!(
                        "<span class=\"pass\">{}</span>",
                        esc(l.t("引领", "leading"))
                    )
                }
                (Some(true), _) => format!(
                    "<span class=\"pass\">{}</span>",
                    esc(l.t("达到基准", "benchmark met"))
                ),
                (Some(false), _) => format!(
                    "<span class=\"fail\">{}</span>",
                    esc(l.t("未达基准", "below benchmark"))
                ),
                (None, _) => format!(
                    "<span class=\"muted\">{}</span>",
                    esc(l.t("无法判定", "unknown"))
                ),
            };
            let _ = write!(
                out,
                "<tr data-criterion=\"{}\"><td>{}</td><td class=\"id\">{}</td>{}<td>{}</td>{}{}<td>{result}</td><td class=\"num\">{}</td></tr>",
                esc(&c.id),
                both(l, &c.name_zh, &c.name_en),
                esc(&c.indicator),
                num(c.value, &c.unit),
                esc(comparison(&c.comparison)),
                num(Some(c.benchmark), &c.unit),
                num(c.leading, &c.unit),
                esc(&percent(c.completeness))
            );
        }
        out.push_str("</tbody></table>");
    }
    out.push_str("</section>");
}

fn energy(out: &mut String, d: &Doc, s: &mut Sections) {
    let l = d.lang;
    let e = &d.energy;
    let _ = write!(
        out,
        "<section id=\"energy\"><h2>{} {}</h2>",
        s.next(),
        esc(l.t("能源平衡（按能源品种）", "Energy balance by carrier"))
    );
    if e.rows.is_empty() {
        let _ = write!(
            out,
            "<p class=\"muted\">{}</p></section>",
            esc(l.t(
                "本期没有计量数据。",
                "No metered consumption in the period."
            ))
        );
        return;
    }
    let _ = write!(
        out,
        "<table class=\"energy\"><thead><tr><th>{}</th><th class=\"num\">{}</th><th>{}</th>\
         <th class=\"num\">{}</th><th class=\"num\">{}</th><th class=\"num\">{}</th>\
         <th class=\"num\">{}</th><th class=\"num\">{}</th><th class=\"num\">{}</th>\
         <th class=\"num\">{}</th></tr></thead><tbody>",
        esc(l.t("能源品种", "Carrier")),
        esc(l.t("实物量", "Quantity")),
        esc(l.t("单位", "Unit")),
        esc(l.t("完整性", "Complete")),
        esc(l.t("计量表", "Meters")),
        esc(l.t("折标系数 kgce/单位 · 来源", "kgce per unit · source")),
        esc(l.t("折标准煤 kgce", "kgce")),
        esc(l.t("占综合能耗", "Share")),
        esc(l.t("CO₂ 因子 kg/单位 · 来源", "kg CO₂ per unit · source")),
        esc(l.t("CO₂ 排放 kg", "kg CO₂"))
    );
    for r in &e.rows {
        let meters = if r.renewable_meters > 0 {
            format!(
                "{} ({} {})",
                r.meters,
                r.renewable_meters,
                l.t("可再生", "renewable")
            )
        } else {
            r.meters.to_string()
        };
        let _ = write!(
            out,
            "<tr data-carrier=\"{}\"><td>{}<span class=\"alt id\">{}</span></td>{}<td>{}</td>\
             <td class=\"num\">{}</td><td class=\"num\">{}</td>{}{}{}{}{}</tr>",
            esc(&r.carrier),
            esc(l.t(&r.name_zh, &r.name_en)),
            esc(&r.indicator),
            num(r.quantity, &r.unit),
            esc(&r.unit),
            esc(&percent(r.completeness)),
            esc(&meters),
            coef_cell(r.kgce_per_unit.as_ref()),
            num(r.kgce, "kgce"),
            num(r.share, "ratio"),
            coef_cell(Some(&r.co2_per_unit)),
            num(r.co2_kg, "kg"),
        );
    }
    let tce = e
        .total_tce
        .map(|t| format!(" = {} tce", plain(t)))
        .unwrap_or_default();
    let _ = write!(
        out,
        "<tr class=\"total\"><td colspan=\"6\">{}{}</td>{}<td class=\"num\">100 %</td><td></td>{}</tr>",
        esc(l.t("综合能耗合计", "Total energy consumption")),
        esc(&tce),
        num(e.total_kgce, "kgce"),
        num(e.total_co2_kg, "kg")
    );
    out.push_str("</tbody></table><ul class=\"notes\">");
    if let Some(r) = e.renewable_share {
        let _ = write!(
            out,
            "<li>{}: {}</li>",
            esc(l.t("可再生能源使用比例", "Renewable energy share")),
            esc(&human(r, "ratio"))
        );
    }
    if e.sub_meters > 0 {
        let _ = write!(
            out,
            "<li>{}: {}</li>",
            esc(l.t(
                "分表（其上级表已计量）不计入合计",
                "Sub-meters (their parent meter counts) left out of the totals"
            )),
            e.sub_meters
        );
    }
    let _ = write!(
        out,
        "<li>{}</li></ul></section>",
        esc(l.t(
            "折标准煤量与二氧化碳排放量由计算引擎按所列系数计算（可再生能源不计排放；水不是能源）；系数取自所列系数集，企业覆盖值优先。",
            "kgce and CO₂ are the engine's results with the coefficients listed (renewable sources emit none; water is not energy); coefficients come from the sets named, enterprise overrides first."
        ))
    );
}

fn input_cell(v: &Value) -> String {
    match v {
        Value::Number(n) => match n.as_f64() {
            Some(x) => format!(
                "<td class=\"num\" data-value=\"{}\">{}</td>",
                exact(x),
                esc(&plain(x))
            ),
            None => format!("<td class=\"num\">{}</td>", esc(&n.to_string())),
        },
        other => format!("<td class=\"num\">{}</td>", esc(&json_text(other))),
    }
}

fn inputs(out: &mut String, d: &Doc, s: &mut Sections) {
    let l = d.lang;
    let _ = write!(
        out,
        "<section id=\"inputs\"><h2>{} {}</h2>",
        s.next(),
        esc(l.t(
            "经济数据及其审计记录",
            "Economic inputs and their audit trail"
        ))
    );
    // Values used.
    let _ = write!(
        out,
        "<h3>{}</h3><table class=\"inputs-used\"><thead><tr><th>{}</th>",
        esc(l.t(
            "本期采用值（按期间折算）",
            "Values used for the period (prorated)"
        )),
        esc(l.t("实体", "Entity"))
    );
    for f in text::INPUT_FIELDS {
        let (label, unit) = input_label(l, f.0);
        let _ = write!(
            out,
            "<th class=\"num\">{} ({})</th>",
            esc(&label),
            esc(unit)
        );
    }
    out.push_str("</tr></thead><tbody>");
    for u in &d.inputs_used {
        let _ = write!(out, "<tr><td class=\"id\">{}</td>", esc(&u.entity));
        for (_, v) in &u.values {
            out.push_str(&num(*v, ""));
        }
        out.push_str("</tr>");
    }
    out.push_str("</tbody></table>");

    // Versions.
    h3(
        out,
        l,
        "与本期重叠的经济数据记录（全部版本）",
        "Input records overlapping the period (every version)",
    );
    if d.input_versions.is_empty() {
        none(out, l);
    } else {
        let _ = write!(
            out,
            "<table class=\"versions\"><thead><tr><th>{}</th><th>{}</th><th class=\"num\">{}</th>\
             <th>{}</th><th>{}</th><th>{}</th></tr></thead><tbody>",
            esc(l.t("实体", "Entity")),
            esc(l.t("记录期间", "Record period")),
            esc(l.t("版本", "Version")),
            esc(l.t("提交时间 / 提交人 / 来源", "Submitted / by / source")),
            esc(l.t("数值", "Values")),
            esc(l.t("状态", "Status"))
        );
        for v in &d.input_versions {
            let values = v
                .values
                .iter()
                .map(|(k, x)| {
                    let (label, unit) = input_label(l, k);
                    format!(
                        "{}: <span data-value=\"{}\">{}</span> {}",
                        esc(&label),
                        exact(*x),
                        esc(&plain(*x)),
                        esc(unit)
                    )
                })
                .collect::<Vec<_>>()
                .join("<br>");
            let _ = write!(
                out,
                "<tr><td class=\"id\">{}</td><td>{} →<br>{}</td><td class=\"num\">{}</td><td>{}<br>{}<br><span class=\"id\">{}</span></td><td>{values}</td><td>{}</td></tr>",
                esc(&v.entity),
                esc(&d.local(v.from)),
                esc(&d.local(v.to)),
                v.version,
                esc(&d.local(v.at)),
                esc(&v.actor),
                esc(&v.source),
                if v.current {
                    format!("<b>{}</b>", esc(l.t("现行", "current")))
                } else {
                    format!(
                        "<span class=\"muted\">{}</span>",
                        esc(l.t("已被替代", "superseded"))
                    )
                }
            );
        }
        out.push_str("</tbody></table>");
    }

    // Audit trail.
    h3(
        out,
        l,
        "审计记录（修改人、时间、修改前后）",
        "Audit trail (who, when, before → after)",
    );
    if d.audit.is_empty() {
        none(out, l);
    } else {
        let _ = write!(
            out,
            "<table class=\"audit\"><thead><tr><th>{}</th><th>{}</th><th>{}</th><th class=\"num\">{}</th>\
             <th>{}</th><th class=\"num\">{}</th><th class=\"num\">{}</th></tr></thead><tbody>",
            esc(l.t("时间", "When")),
            esc(l.t("操作人", "Who")),
            esc(l.t("记录", "Record")),
            esc(l.t("版本", "Version")),
            esc(l.t("字段", "Field")),
            esc(l.t("修改前", "Before")),
            esc(l.t("修改后", "After"))
        );
        for a in &d.audit {
            let field = if a.field.is_empty() {
                l.t("（数值未变）", "(no value changed)").to_owned()
            } else {
                input_label(l, &a.field).0
            };
            let _ = write!(
                out,
                "<tr><td>{}</td><td>{}</td><td><span class=\"id\">{}</span><span class=\"alt\">{} → {}</span></td><td class=\"num\">{}</td><td>{}</td>{}{}</tr>",
                esc(&d.local(a.at)),
                esc(&a.actor),
                esc(&a.entity),
                esc(&d.local(a.from)),
                esc(&d.local(a.to)),
                a.version.map_or_else(|| DASH.to_owned(), |v| v.to_string()),
                esc(&field),
                input_cell(&a.before),
                input_cell(&a.after)
            );
        }
        out.push_str("</tbody></table>");
    }
    out.push_str("</section>");
}

fn completeness(out: &mut String, d: &Doc, s: &mut Sections) {
    let l = d.lang;
    let _ = write!(
        out,
        "<section id=\"completeness\"><h2>{} {}</h2>",
        s.next(),
        esc(l.t("数据完整性", "Data completeness"))
    );
    let total = d.indicators.len();
    let missing: Vec<&IndRow> = d.indicators.iter().filter(|r| r.value.is_none()).collect();
    let partial: Vec<&IndRow> = d
        .indicators
        .iter()
        .filter(|r| r.value.is_some() && r.completeness < 1.0)
        .collect();
    let _ = write!(
        out,
        "<p>{}: {total} · {}: {} · {}: {} · {}: {}</p>",
        esc(l.t("指标数", "Indicators")),
        esc(l.t("数据完整", "complete")),
        total - missing.len() - partial.len(),
        esc(l.t("数据不完整", "partial")),
        partial.len(),
        esc(l.t("无数值", "no value")),
        missing.len()
    );
    if !partial.is_empty() || !missing.is_empty() {
        let _ = write!(
            out,
            "<table class=\"completeness\"><thead><tr><th>{}</th><th>{}</th><th class=\"num\">{}</th><th>{}</th></tr></thead><tbody>",
            esc(l.t("指标编号", "Id")),
            esc(l.t("指标名称", "Indicator")),
            esc(l.t("完整性", "Completeness")),
            esc(l.t("说明", "Note"))
        );
        for r in partial.iter().chain(missing.iter()) {
            let note = if r.value.is_none() && r.id.ends_with("_change") {
                l.t(
                    "无数值：未配置基准期或基准值缺失",
                    "no value: no baseline configured, or its value missing",
                )
            } else if r.value.is_none() {
                l.t(
                    "无数值：缺少数据或分母为零",
                    "no value: data missing or a zero denominator",
                )
            } else {
                l.t(
                    "部分期间或部分数据点缺失",
                    "part of the period or of the data points missing",
                )
            };
            let _ = write!(
                out,
                "<tr data-id=\"{id}\"><td class=\"id\">{id}</td><td>{}</td><td class=\"num\">{}</td><td>{}</td></tr>",
                esc(r.name(l)),
                esc(&percent(r.completeness)),
                esc(note),
                id = esc(&r.id)
            );
        }
        out.push_str("</tbody></table>");
    }
    out.push_str("</section>");
}

fn reason_label(l: Lang, reason: &str) -> &str {
    match reason {
        "bad_signature" => l.t("签名无效", "signature does not verify"),
        "malformed" => l.t("格式错误", "malformed payload"),
        "agent_mismatch" => l.t("采集端不符", "agent mismatch"),
        "hash_mismatch" => l.t("内容哈希不符", "body hash mismatch"),
        "prev_mismatch" => l.t("前序哈希不符", "prev mismatch"),
        "seq_mismatch" => l.t("序号不符", "seq mismatch"),
        "chain_break" => l.t("哈希链断裂", "hash chain broken"),
        "missing_batches" => l.t("批次缺失", "batches missing"),
        "missing_payload" => l.t("原始数据缺失", "payload missing"),
        "range_mismatch" => l.t("范围不符", "range mismatch"),
        "unknown_agent" => l.t("采集端未登记", "agent not registered"),
        "bad_key" => l.t("公钥无效", "unusable key"),
        other => other,
    }
}

fn signatures(out: &mut String, d: &Doc, s: &mut Sections) {
    let l = d.lang;
    let _ = write!(
        out,
        "<section id=\"signatures\"><h2>{} {}</h2>",
        s.next(),
        esc(l.t("签名验证", "Signature verification"))
    );
    let Some(v) = &d.verification else {
        let _ = write!(
            out,
            "<p class=\"muted\">{}</p></section>",
            esc(l.t("未执行。", "Not run."))
        );
        return;
    };
    let (class, verdict) = verdict_text(d);
    let _ = write!(
        out,
        "<p class=\"verdict {class}\" data-verdict=\"{}\">{}: {}</p>",
        if v.passed() { "PASS" } else { "FAIL" },
        esc(l.t("验证结果", "Result")),
        esc(&verdict)
    );
    let _ = write!(
        out,
        "<p>{}</p>",
        esc(l.t(
            "逐批重新验证证据文件所引用的原始数据批次：以登记的采集端公钥验证 Ed25519 签名，核对内容哈希与存储记录一致，核对每批的 prev 等于前一批内容的 SHA-256（哈希链）。",
            "Each stored raw batch the evidence cites is verified again: the Ed25519 signature with the agent's registered public key, the body hash against the one recorded at ingest, and the hash chain (each batch's prev is the SHA-256 of the previous batch's body)."
        ))
    );
    if v.agents.is_empty() {
        let _ = write!(
            out,
            "<p class=\"muted\">{}</p></section>",
            esc(l.t("本期没有签名数据批次。", "No signed batches in the period."))
        );
        return;
    }
    let _ = write!(
        out,
        "<table class=\"signatures\"><thead><tr><th>{}</th><th>{}</th><th class=\"num\">{}</th>\
         <th class=\"num\">{}</th><th class=\"num\">{}</th><th class=\"num\">{}</th><th>{}</th></tr></thead><tbody>",
        esc(l.t("采集端", "Agent")),
        esc(l.t("批次序号范围", "Seq range")),
        esc(l.t("证据引用", "Cited")),
        esc(l.t("已检查", "Checked")),
        esc(l.t("通过", "Verified")),
        esc(l.t("问题", "Problems")),
        esc(l.t("结果", "Result"))
    );
    for a in &v.agents {
        let result = if a.passed() {
            "<span class=\"pass\">PASS</span>"
        } else {
            "<span class=\"fail\">FAIL</span>"
        };
        let _ = write!(
            out,
            "<tr data-agent=\"{agent}\"><td class=\"agent\">{agent}{}</td><td>{} – {}</td>\
             <td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td>{result}</td></tr>\
             <tr class=\"sub\"><td colspan=\"7\" class=\"mono\">{}: {}<br>{} {}: {}<br>{} {}: {}</td></tr>",
            if a.revoked {
                format!(
                    " <span class=\"warn\">({})</span>",
                    esc(l.t("已吊销", "revoked"))
                )
            } else {
                String::new()
            },
            a.first_seq,
            a.last_seq,
            a.cited,
            a.checked,
            a.ok,
            a.problems,
            esc(l.t("登记公钥", "registered key")),
            esc(&a.public_key),
            esc(l.t("起始批次哈希", "first batch hash")),
            a.first_seq,
            esc(&a.first_hash),
            esc(l.t("截止批次哈希", "last batch hash")),
            a.last_seq,
            esc(&a.last_hash),
            agent = esc(&a.agent),
        );
    }
    out.push_str("</tbody></table>");
    let failures: Vec<(&verify::AgentCheck, &verify::Failure)> = v
        .agents
        .iter()
        .flat_map(|a| a.failures.iter().map(move |f| (a, f)))
        .collect();
    if !failures.is_empty() {
        let _ = write!(
            out,
            "<h3 class=\"fail\">{}</h3><table class=\"failures\"><thead><tr><th>{}</th><th class=\"num\">{}</th><th>{}</th><th>{}</th></tr></thead><tbody>",
            esc(l.t("验证失败明细", "Failures")),
            esc(l.t("采集端", "Agent")),
            esc(l.t("序号", "Seq")),
            esc(l.t("原因", "Reason")),
            esc(l.t("详情", "Detail"))
        );
        for (a, f) in &failures {
            let seq = f.seq.map_or_else(String::new, |s| s.to_string());
            let _ = write!(
                out,
                "<tr data-agent=\"{agent}\" data-seq=\"{seq}\" data-reason=\"{reason}\"><td class=\"agent\">{agent}</td><td class=\"num\">{}</td><td>{}<span class=\"alt id\">{reason}</span></td><td class=\"mono\">{}</td></tr>",
                if seq.is_empty() { DASH } else { &seq },
                esc(reason_label(l, &f.reason)),
                esc(&f.detail),
                agent = esc(&a.agent),
                reason = esc(&f.reason),
            );
        }
        out.push_str("</tbody></table>");
        for a in &v.agents {
            if a.problems as usize > a.failures.len() {
                let _ = write!(
                    out,
                    "<p class=\"fail\">{} {}: {} {}</p>",
                    esc(&a.agent),
                    esc(l.t("另有未列出的问题", "more problems not listed")),
                    a.problems as usize - a.failures.len(),
                    esc(l.t("项", ""))
                );
            }
        }
    }
    let notes: Vec<(&str, &String)> = v
        .agents
        .iter()
        .flat_map(|a| a.notes.iter().map(move |n| (a.agent.as_str(), n)))
        .collect();
    if !notes.is_empty() {
        let _ = write!(
            out,
            "<h3>{}</h3><ul class=\"notes\">",
            esc(l.t("说明", "Notes"))
        );
        for (agent, n) in notes {
            let _ = write!(
                out,
                "<li><span class=\"id\">{}</span>: {}</li>",
                esc(agent),
                esc(n)
            );
        }
        out.push_str("</ul>");
    }
    out.push_str("</section>");
}

fn park(out: &mut String, d: &Doc, s: &mut Sections) {
    if d.enterprises.is_empty() {
        return;
    }
    let l = d.lang;
    let _ = write!(
        out,
        "<section id=\"enterprises\"><h2>{} {}</h2><table><thead><tr><th>{}</th><th>{}</th></tr></thead><tbody>",
        s.next(),
        esc(l.t("园区内企业", "Enterprises of the park")),
        esc(l.t("实体编号", "Entity")),
        esc(l.t("名称", "Name"))
    );
    for e in &d.enterprises {
        let _ = write!(
            out,
            "<tr><td class=\"id\">{}</td><td>{}</td></tr>",
            esc(&e.id),
            both(
                l,
                e.name_zh.as_deref().unwrap_or(""),
                e.name_en.as_deref().unwrap_or("")
            )
        );
    }
    out.push_str("</tbody></table></section>");
}

fn recompute(out: &mut String, d: &Doc, s: &mut Sections) {
    let l = d.lang;
    let h = &d.head;
    let _ = write!(
        out,
        "<section id=\"recompute\"><h2>{} {}</h2><p>{}</p><p class=\"mono\">shopfloor-gateway report --entity {} --from {} --to {} --format json --out evidence.json<br>sha256sum evidence.json<br>shopfloor-gateway calc --evidence evidence.json</p></section>",
        s.next(),
        esc(l.t("复核方法", "How to recompute")),
        esc(l.t(
            "导出同一实体、同一期间的证据文件（其 SHA-256 应与本报告所列一致），再用 calc 命令独立重算全部指标：",
            "Export the evidence file of the same entity and period (its SHA-256 should be the one printed above), then recompute every indicator independently with calc:"
        )),
        esc(&h.entity.id),
        esc(&h.from_rfc3339),
        esc(&h.to_rfc3339)
    );
    let _ = write!(
        out,
        "<table class=\"sign\"><tr><td><span>{}</span></td><td><span>{}</span></td><td><span>{}</span></td></tr></table>",
        esc(l.t("编制", "Prepared by")),
        esc(l.t("审核", "Reviewed by")),
        esc(l.t("日期", "Date"))
    );
}

/// The report as one HTML document.
pub(crate) fn render(d: &Doc) -> String {
    let l = d.lang;
    let mut out = String::with_capacity(64 * 1024);
    let _ = write!(
        out,
        "<!DOCTYPE html>\n<html lang=\"{}\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <meta name=\"generator\" content=\"shopfloor-gateway {}\">\n\
         <title>{} · {}</title>\n<style>{CSS}</style>\n</head>\n<body>\n",
        l.as_str(),
        esc(d.head.gateway_version),
        esc(&d.head.title),
        esc(&d.head.entity.id)
    );
    header(&mut out, d);
    let mut s = Sections { n: 0 };
    indicators(&mut out, d, &mut s);
    assessments(&mut out, d, &mut s);
    energy(&mut out, d, &mut s);
    inputs(&mut out, d, &mut s);
    completeness(&mut out, d, &mut s);
    signatures(&mut out, d, &mut s);
    park(&mut out, d, &mut s);
    recompute(&mut out, d, &mut s);
    let _ = write!(
        out,
        "<footer>{} · shopfloor-gateway {} · {}</footer>\n</body>\n</html>\n",
        esc(&d.head.entity.id),
        esc(d.head.gateway_version),
        esc(&d.head.generated_at)
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_escaped() {
        assert_eq!(
            esc("<a href=\"x\">&'"),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;"
        );
    }

    #[test]
    fn the_style_sheet_loads_nothing() {
        assert!(!CSS.contains("url("));
        assert!(!CSS.contains("@import"));
    }
}
