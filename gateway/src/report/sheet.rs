//! The report as an XLSX workbook: sheets Summary, Indicators, Assessment (enterprises and
//! workshops), Energy, Inputs, Audit, Signatures. Numbers are number cells holding the exact
//! values (ratios formatted as percentages, the value unchanged); times are RFC 3339 text with
//! the gateway's offset; the first row of each table holds its (localised) column labels.
//! Column orders are documented in docs/REPORTS.md and never depend on the language.

use rust_xlsxwriter::{Color, DocProperties, Format, Workbook, Worksheet, XlsxError};
use serde_json::Value;

use super::doc::{Coef, Doc};
use super::text::{INPUT_FIELDS, input_label};
use crate::indicators::rfc3339;

/// One cell.
enum Cell {
    Text(String),
    Num(Option<f64>),
    /// A ratio shown as a percentage.
    Ratio(Option<f64>),
    Bool(Option<bool>),
}

fn t(s: impl Into<String>) -> Cell {
    Cell::Text(s.into())
}

struct Formats {
    head: Format,
    ratio: Format,
    title: Format,
}

/// Writes rows one after the other.
struct Rows<'a> {
    ws: &'a mut Worksheet,
    row: u32,
    f: &'a Formats,
}

impl Rows<'_> {
    fn header(&mut self, labels: &[&str]) -> Result<(), XlsxError> {
        for (c, l) in labels.iter().enumerate() {
            self.ws
                .write_string_with_format(self.row, col(c), *l, &self.f.head)?;
        }
        self.row += 1;
        Ok(())
    }

    fn title(&mut self, text: &str) -> Result<(), XlsxError> {
        self.ws
            .write_string_with_format(self.row, 0, text, &self.f.title)?;
        self.row += 1;
        Ok(())
    }

    fn cells(&mut self, cells: Vec<Cell>) -> Result<(), XlsxError> {
        for (c, cell) in cells.into_iter().enumerate() {
            let c = col(c);
            match cell {
                Cell::Text(s) if s.is_empty() => {}
                Cell::Text(s) => {
                    self.ws.write_string(self.row, c, s)?;
                }
                Cell::Num(Some(v)) if v.is_finite() => {
                    self.ws.write_number(self.row, c, v)?;
                }
                Cell::Ratio(Some(v)) if v.is_finite() => {
                    self.ws
                        .write_number_with_format(self.row, c, v, &self.f.ratio)?;
                }
                Cell::Bool(Some(b)) => {
                    self.ws.write_boolean(self.row, c, b)?;
                }
                Cell::Num(_) | Cell::Ratio(_) | Cell::Bool(None) => {}
            }
        }
        self.row += 1;
        Ok(())
    }

    fn blank(&mut self) {
        self.row += 1;
    }
}

fn col(c: usize) -> u16 {
    u16::try_from(c).unwrap_or(u16::MAX)
}

fn sheet<'a>(
    wb: &'a mut Workbook,
    name: &str,
    widths: &[f64],
) -> Result<&'a mut Worksheet, XlsxError> {
    let ws = wb.add_worksheet();
    ws.set_name(name)?;
    ws.set_paper_size(9); // A4
    ws.set_landscape();
    for (c, w) in widths.iter().enumerate() {
        ws.set_column_width(col(c), *w)?;
    }
    Ok(ws)
}

fn json_cell(v: &Value) -> Cell {
    match v {
        Value::Null => Cell::Num(None),
        Value::Number(n) => Cell::Num(n.as_f64()),
        Value::String(s) => t(s.clone()),
        Value::Bool(b) => Cell::Bool(Some(*b)),
        other => t(other.to_string()),
    }
}

fn coef_cells(c: Option<&Coef>) -> [Cell; 2] {
    match c {
        None => [Cell::Num(None), t("")],
        Some(c) => [Cell::Num(c.value), t(c.source.clone())],
    }
}

/// The workbook's bytes.
pub(crate) fn render(d: &Doc) -> Result<Vec<u8>, XlsxError> {
    let l = d.lang;
    let h = &d.head;
    let tz = &d.tz;
    let f = Formats {
        head: Format::new()
            .set_bold()
            .set_background_color(Color::RGB(0x00E8_E8E8)),
        ratio: Format::new().set_num_format("0.00%"),
        title: Format::new().set_bold(),
    };
    let mut wb = Workbook::new();
    wb.set_properties(
        &DocProperties::new()
            .set_title(format!("{} {}", h.title, h.entity.id))
            .set_author(format!("shopfloor-gateway {}", h.gateway_version)),
    );

    // --- Summary ---
    {
        let ws = sheet(&mut wb, "Summary", &[24.0, 30.0, 70.0])?;
        let mut r = Rows { ws, row: 0, f: &f };
        r.header(&[l.t("键", "key"), l.t("项目", "item"), l.t("内容", "value")])?;
        let mut kv = |k: &str, label: &str, v: Cell| r.cells(vec![t(k), t(label), v]);
        kv("title", l.t("报告", "Report"), t(h.title.clone()))?;
        kv("entity", l.t("实体编号", "Entity"), t(h.entity.id.clone()))?;
        kv(
            "name_zh",
            l.t("中文名称", "Name (zh)"),
            t(h.entity.name_zh.clone().unwrap_or_default()),
        )?;
        kv(
            "name_en",
            l.t("英文名称", "Name (en)"),
            t(h.entity.name_en.clone().unwrap_or_default()),
        )?;
        kv(
            "level",
            l.t("层级", "Level"),
            t(h.entity.level.map_or("", |x| x.as_str())),
        )?;
        for p in &h.parents {
            let key = p.level.map_or("parent", |x| x.as_str());
            let name = p.name(l).map(|n| format!(" {n}")).unwrap_or_default();
            kv(key, l.t("所属", "Part of"), t(format!("{}{name}", p.id)))?;
        }
        kv(
            "region",
            l.t("地区", "Region"),
            t(h.region.clone().unwrap_or_default()),
        )?;
        kv(
            "from",
            l.t("起始（含）", "From (included)"),
            t(h.from_rfc3339.clone()),
        )?;
        kv(
            "to",
            l.t("截止（不含）", "To (excluded)"),
            t(h.to_rfc3339.clone()),
        )?;
        kv(
            "time_zone",
            l.t("时区", "Time zone"),
            t(h.time_zone.clone()),
        )?;
        kv(
            "generated_at",
            l.t("生成时间", "Generated at"),
            t(h.generated_at.clone()),
        )?;
        kv(
            "gateway_version",
            l.t("网关版本", "Gateway version"),
            t(h.gateway_version),
        )?;
        kv(
            "engine_version",
            l.t("计算引擎版本", "Engine version"),
            t(h.engine_version.clone()),
        )?;
        kv(
            "coefficient_set",
            l.t("折标系数集", "Coefficient set"),
            t(format!("{} {}", h.coefficient_set, h.coefficient_set_name)),
        )?;
        kv(
            "electricity_basis",
            l.t("电力折标方法", "Electricity basis"),
            t(h.electricity_basis),
        )?;
        kv(
            "co2_set",
            l.t("二氧化碳排放因子集", "CO₂ factor set"),
            t(format!("{} {}", h.co2_set, h.co2_set_name)),
        )?;
        for (k, v, whose) in &h.overrides {
            r.cells(vec![
                t("override"),
                t(format!("{k} ({whose})")),
                Cell::Num(Some(*v)),
            ])?;
        }
        let mut kv = |k: &str, label: &str, v: Cell| r.cells(vec![t(k), t(label), v]);
        kv(
            "value_added_source",
            l.t("工业增加值来源", "Value added source"),
            t(h.value_added_source.clone().unwrap_or_default()),
        )?;
        kv(
            "evidence_sha256",
            l.t("证据文件 SHA-256", "Evidence SHA-256"),
            t(h.evidence_sha256.clone()),
        )?;
        let verdict = match &d.verification {
            None => "NOT CHECKED",
            Some(v) if v.passed() => "PASS",
            Some(_) => "FAIL",
        };
        kv("signatures", l.t("签名验证", "Signatures"), t(verdict))?;
        if let Some(v) = &d.verification {
            let n = |x: u64| Cell::Num(Some(x as f64));
            kv(
                "agents_checked",
                l.t("采集端数", "Agents"),
                n(v.agents.len() as u64),
            )?;
            kv(
                "batches_checked",
                l.t("已检查批次", "Batches checked"),
                n(v.agents.iter().map(|a| a.checked).sum()),
            )?;
            kv(
                "signature_problems",
                l.t("问题数", "Problems"),
                n(v.agents.iter().map(|a| a.problems).sum()),
            )?;
        }
        for a in &d.assessments {
            kv(
                &format!("assessment.{}", a.rule_set),
                l.t("评价结果", "Assessment"),
                t(a.result.clone()),
            )?;
        }
    }

    // --- Indicators ---
    {
        let ws = sheet(
            &mut wb,
            "Indicators",
            &[
                30.0, 24.0, 34.0, 16.0, 12.0, 12.0, 8.0, 24.0, 10.0, 12.0, 8.0, 8.0,
            ],
        )?;
        ws.set_freeze_panes(1, 1)?;
        let mut r = Rows { ws, row: 0, f: &f };
        r.header(&[
            l.t("指标编号", "id"),
            l.t("中文名称", "name_zh"),
            l.t("英文名称", "name_en"),
            l.t("数值", "value"),
            l.t("单位", "unit"),
            l.t("完整性", "completeness"),
            l.t("分组", "group"),
            l.t("目标编号", "target_id"),
            l.t("比较", "comparison"),
            l.t("目标值", "target"),
            l.t("目标年份", "target_year"),
            l.t("达标", "met"),
        ])?;
        for i in &d.indicators {
            let value = if i.unit == "ratio" {
                Cell::Ratio(i.value)
            } else {
                Cell::Num(i.value)
            };
            let tg = i.target.as_ref();
            r.cells(vec![
                t(i.id.clone()),
                t(i.name_zh.clone()),
                t(i.name_en.clone()),
                value,
                t(i.unit.clone()),
                Cell::Ratio(Some(i.completeness)),
                t(if i.green { "green" } else { "other" }),
                t(tg.map(|x| x.id.clone()).unwrap_or_default()),
                t(tg.map(|x| x.comparison.clone()).unwrap_or_default()),
                Cell::Num(tg.map(|x| x.value)),
                Cell::Num(tg.map(|x| x.year as f64)),
                Cell::Bool(tg.and_then(|x| x.met)),
            ])?;
        }
    }

    // --- Assessment ---
    if !d.assessments.is_empty() {
        let ws = sheet(
            &mut wb,
            "Assessment",
            &[
                18.0, 18.0, 26.0, 26.0, 14.0, 8.0, 12.0, 12.0, 8.0, 10.0, 12.0,
            ],
        )?;
        let mut r = Rows { ws, row: 0, f: &f };
        r.header(&[
            l.t("规则集", "rule_set"),
            l.t("评价项", "criterion"),
            l.t("名称", "name"),
            l.t("指标", "indicator"),
            l.t("数值", "value"),
            l.t("比较", "comparison"),
            l.t("基准值", "benchmark"),
            l.t("引领值", "leading"),
            l.t("通过", "pass"),
            l.t("等级", "tier"),
            l.t("完整性", "completeness"),
        ])?;
        for a in &d.assessments {
            for c in &a.criteria {
                let ratio = c.unit == "ratio";
                let n = |v: Option<f64>| if ratio { Cell::Ratio(v) } else { Cell::Num(v) };
                r.cells(vec![
                    t(a.rule_set.clone()),
                    t(c.id.clone()),
                    t(l.t(&c.name_zh, &c.name_en)),
                    t(c.indicator.clone()),
                    n(c.value),
                    t(c.comparison.clone()),
                    n(Some(c.benchmark)),
                    n(c.leading),
                    Cell::Bool(c.pass),
                    t(c.tier.clone().unwrap_or_default()),
                    Cell::Ratio(Some(c.completeness)),
                ])?;
            }
        }
    }

    // --- Energy ---
    {
        let ws = sheet(
            &mut wb,
            "Energy",
            &[
                14.0, 18.0, 16.0, 14.0, 8.0, 12.0, 8.0, 10.0, 12.0, 26.0, 14.0, 10.0, 12.0, 22.0,
                14.0,
            ],
        )?;
        let mut r = Rows { ws, row: 0, f: &f };
        r.header(&[
            l.t("能源品种", "carrier"),
            l.t("指标编号", "indicator"),
            l.t("名称", "name"),
            l.t("实物量", "quantity"),
            l.t("单位", "unit"),
            l.t("完整性", "completeness"),
            l.t("计量表数", "meters"),
            l.t("可再生计量表", "renewable_meters"),
            l.t("折标系数 kgce/单位", "kgce_per_unit"),
            l.t("系数来源", "kgce_source"),
            l.t("折标准煤 kgce", "kgce"),
            l.t("占比", "share"),
            l.t("CO₂ 因子 kg/单位", "kgco2_per_unit"),
            l.t("因子来源", "co2_source"),
            l.t("CO₂ kg", "co2_kg"),
        ])?;
        let e = &d.energy;
        for c in &e.rows {
            let [kv, ks] = coef_cells(c.kgce_per_unit.as_ref());
            let [cv, cs] = coef_cells(Some(&c.co2_per_unit));
            r.cells(vec![
                t(c.carrier.clone()),
                t(c.indicator.clone()),
                t(l.t(&c.name_zh, &c.name_en)),
                Cell::Num(c.quantity),
                t(c.unit.clone()),
                Cell::Ratio(Some(c.completeness)),
                Cell::Num(Some(c.meters as f64)),
                Cell::Num(Some(c.renewable_meters as f64)),
                kv,
                ks,
                Cell::Num(c.kgce),
                Cell::Ratio(c.share),
                cv,
                cs,
                Cell::Num(c.co2_kg),
            ])?;
        }
        let mut total = vec![
            t("total"),
            t("energy_kgce"),
            t(l.t("综合能耗合计", "Total energy consumption")),
        ];
        total.extend((0..7).map(|_| t("")));
        total.extend([
            Cell::Num(e.total_kgce),
            Cell::Ratio(e.total_kgce.map(|_| 1.0)),
            t(""),
            t(""),
            Cell::Num(e.total_co2_kg),
        ]);
        r.cells(total)?;
        r.cells(vec![
            t("total"),
            t("energy_tce"),
            t(l.t("综合能耗（吨标准煤）", "Energy consumption (tce)")),
            Cell::Num(e.total_tce),
            t("tce"),
        ])?;
        r.cells(vec![
            t("total"),
            t("renewable_energy_share"),
            t(l.t("可再生能源使用比例", "Renewable energy share")),
            Cell::Ratio(e.renewable_share),
            t("ratio"),
        ])?;
    }

    // --- Inputs ---
    {
        let ws = sheet(
            &mut wb,
            "Inputs",
            &[
                16.0, 28.0, 28.0, 8.0, 8.0, 28.0, 18.0, 16.0, 16.0, 16.0, 14.0, 14.0, 16.0, 16.0,
                16.0,
            ],
        )?;
        let mut r = Rows { ws, row: 0, f: &f };
        r.title(l.t(
            "本期采用值（按期间折算）",
            "Values used for the period (prorated)",
        ))?;
        r.header(&[
            l.t("实体", "entity"),
            l.t("字段", "field"),
            l.t("名称", "name"),
            l.t("数值", "value"),
            l.t("单位", "unit"),
        ])?;
        for u in &d.inputs_used {
            for (field, v) in &u.values {
                let (label, unit) = input_label(l, field);
                r.cells(vec![
                    t(u.entity.clone()),
                    t(*field),
                    t(label),
                    Cell::Num(*v),
                    t(unit),
                ])?;
            }
        }
        r.blank();
        r.title(l.t(
            "与本期重叠的经济数据记录（全部版本）",
            "Input records overlapping the period (every version)",
        ))?;
        let mut labels = vec![
            l.t("实体", "entity"),
            l.t("记录起始", "from"),
            l.t("记录截止", "to"),
            l.t("版本", "version"),
            l.t("现行", "current"),
            l.t("提交时间", "at"),
            l.t("提交人", "actor"),
            l.t("来源", "source"),
        ];
        labels.extend(INPUT_FIELDS.iter().map(|f| f.0));
        r.header(&labels)?;
        for v in &d.input_versions {
            let mut cells = vec![
                t(v.entity.clone()),
                t(rfc3339(v.from, tz)),
                t(rfc3339(v.to, tz)),
                Cell::Num(Some(v.version as f64)),
                Cell::Bool(Some(v.current)),
                t(rfc3339(v.at, tz)),
                t(v.actor.clone()),
                t(v.source.clone()),
            ];
            cells.extend(
                INPUT_FIELDS
                    .iter()
                    .map(|f| Cell::Num(v.values.iter().find(|(k, _)| k == f.0).map(|(_, x)| *x))),
            );
            r.cells(cells)?;
        }
    }

    // --- Audit ---
    {
        let ws = sheet(
            &mut wb,
            "Audit",
            &[28.0, 18.0, 16.0, 28.0, 28.0, 8.0, 24.0, 24.0, 16.0, 16.0],
        )?;
        ws.set_freeze_panes(1, 0)?;
        let mut r = Rows { ws, row: 0, f: &f };
        r.header(&[
            l.t("时间", "at"),
            l.t("操作人", "actor"),
            l.t("实体", "entity"),
            l.t("记录起始", "from"),
            l.t("记录截止", "to"),
            l.t("版本", "version"),
            l.t("字段", "field"),
            l.t("名称", "name"),
            l.t("修改前", "before"),
            l.t("修改后", "after"),
        ])?;
        for a in &d.audit {
            r.cells(vec![
                t(rfc3339(a.at, tz)),
                t(a.actor.clone()),
                t(a.entity.clone()),
                t(rfc3339(a.from, tz)),
                t(rfc3339(a.to, tz)),
                Cell::Num(a.version.map(|v| v as f64)),
                t(a.field.clone()),
                t(if a.field.is_empty() {
                    l.t("（数值未变）", "(no value changed)").to_owned()
                } else {
                    input_label(l, &a.field).0
                }),
                json_cell(&a.before),
                json_cell(&a.after),
            ])?;
        }
    }

    // --- Signatures ---
    {
        let ws = sheet(
            &mut wb,
            "Signatures",
            &[
                18.0, 14.0, 60.0, 10.0, 10.0, 10.0, 10.0, 10.0, 10.0, 10.0, 66.0, 66.0,
            ],
        )?;
        let mut r = Rows { ws, row: 0, f: &f };
        let verdict = match &d.verification {
            None => "NOT CHECKED",
            Some(v) if v.passed() => "PASS",
            Some(_) => "FAIL",
        };
        r.cells(vec![
            t(l.t("签名验证结果", "Signature verification")),
            t(verdict),
        ])?;
        r.blank();
        r.header(&[
            l.t("采集端", "agent"),
            l.t("结果", "result"),
            l.t("登记公钥", "public_key"),
            l.t("已吊销", "revoked"),
            l.t("起始序号", "first_seq"),
            l.t("截止序号", "last_seq"),
            l.t("证据引用批次", "cited"),
            l.t("已检查", "checked"),
            l.t("通过", "verified"),
            l.t("问题", "problems"),
            l.t("起始哈希", "first_hash"),
            l.t("截止哈希", "last_hash"),
        ])?;
        let agents = d.verification.as_ref().map_or(&[][..], |v| &v.agents[..]);
        for a in agents {
            r.cells(vec![
                t(a.agent.clone()),
                t(if a.passed() { "PASS" } else { "FAIL" }),
                t(a.public_key.clone()),
                Cell::Bool(Some(a.revoked)),
                Cell::Num(Some(a.first_seq as f64)),
                Cell::Num(Some(a.last_seq as f64)),
                Cell::Num(Some(a.cited as f64)),
                Cell::Num(Some(a.checked as f64)),
                Cell::Num(Some(a.ok as f64)),
                Cell::Num(Some(a.problems as f64)),
                t(a.first_hash.clone()),
                t(a.last_hash.clone()),
            ])?;
        }
        r.blank();
        r.title(l.t("验证失败明细", "Failures"))?;
        r.header(&[
            l.t("采集端", "agent"),
            l.t("批次序号", "seq"),
            l.t("原因", "reason"),
            l.t("详情", "detail"),
        ])?;
        for a in agents {
            for fl in &a.failures {
                r.cells(vec![
                    t(a.agent.clone()),
                    Cell::Num(fl.seq.map(|s| s as f64)),
                    t(fl.reason.clone()),
                    t(fl.detail.clone()),
                ])?;
            }
        }
        r.blank();
        r.title(l.t("说明", "Notes"))?;
        for a in agents {
            for n in &a.notes {
                r.cells(vec![t(a.agent.clone()), t(""), t(""), t(n.clone())])?;
            }
        }
    }
    wb.save_to_buffer()
}
