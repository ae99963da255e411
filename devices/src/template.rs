//! Device templates (`configs/devices/*.toml`): a device in a config is template + address +
//! overrides. The built-in templates are compiled into every binary, so an air-gapped agent
//! needs no files besides its own config; a site may add its own templates.
//!
//! Invariants:
//! - a template or override never reaches a driver unvalidated: `resolve_*` checks every point
//!   and reports `point[<i>].<field>: <reason>` (or `overrides.point[<i>]...`);
//! - documented addresses are converted to wire addresses exactly once, here
//!   (`wire = documented − address_base`).

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use crate::codec::{DataType, Layout, Order, StringLayout, Table};
use crate::point::{Deadband, Forbidden, ModbusPoint, NodeRef, OpcuaPoint, PlanLimits};
use crate::signals::{CounterRules, StateRules};

/// Which protocol a template speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Protocol {
    Modbus,
    Opcua,
}

/// A device template.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Template {
    /// Stable id, also the file name without `.toml`.
    pub id: String,
    pub name: String,
    pub name_zh: String,
    /// Equipment kind as in the evidence (`cnc`, `robot`, `meter`, ...).
    pub kind: String,
    /// Control type of a machine (`cnc`, `plc`, `dcs`, `robot`, `manual`); absent for meters.
    #[serde(default)]
    pub control: Option<String>,
    /// Energy or water carrier of a meter (`electricity`, `water`, `natural_gas`, ...).
    #[serde(default)]
    pub carrier: Option<String>,
    pub protocol: Protocol,
    /// Documents the map was taken from.
    #[serde(default)]
    pub references: Vec<String>,
    #[serde(default)]
    pub modbus: Option<ModbusDefaults>,
    #[serde(default)]
    pub opcua: Option<OpcuaDefaults>,
    #[serde(rename = "point")]
    pub points: Vec<PointDef>,
    #[serde(default)]
    pub states: Option<StateRules>,
    #[serde(default)]
    pub counters: Option<CounterRules>,
    /// For a meter: its accounting register.
    #[serde(default)]
    pub meter: Option<MeterRules>,
}

/// The accounting register of a meter: the cumulative point whose increase is the
/// consumption of its carrier (a meter's other points are instantaneous values).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct MeterRules {
    /// Name of the cumulative point, in the meter's accounting unit.
    pub point: String,
    /// Where the value wraps to 0, in the point's engineering unit (a u32 total in litres
    /// scaled to m3 wraps at 4294967.296); absent when it does not wrap in practice.
    #[serde(default)]
    pub rollover: Option<f64>,
}

impl MeterRules {
    fn validate(&self, names: &BTreeSet<&str>) -> Result<(), TemplateError> {
        if !names.contains(self.point.as_str()) {
            return Err(err("point", format!("no point named `{}`", self.point)));
        }
        if let Some(r) = self.rollover
            && !(r.is_finite() && r > 0.0)
        {
            return Err(err("rollover", "must be a number > 0"));
        }
        Ok(())
    }
}

/// Device-wide Modbus settings of a template.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ModbusDefaults {
    /// 0 when the documentation gives wire addresses, 1 when it numbers registers from 1
    /// (Schneider "register 3204" is wire address 3203).
    #[serde(default)]
    pub address_base: u16,
    #[serde(default)]
    pub order: Order,
    #[serde(default = "d_max_registers")]
    pub max_registers: u16,
    #[serde(default = "d_max_bits")]
    pub max_bits: u16,
    #[serde(default = "d_max_gap")]
    pub max_gap: u16,
    /// Documented (not wire) address ranges never to read.
    #[serde(default)]
    pub forbidden: Vec<Forbidden>,
}

fn d_max_registers() -> u16 {
    125
}
fn d_max_bits() -> u16 {
    2000
}
fn d_max_gap() -> u16 {
    8
}

impl Default for ModbusDefaults {
    fn default() -> Self {
        ModbusDefaults {
            address_base: 0,
            order: Order::ABCD,
            max_registers: d_max_registers(),
            max_bits: d_max_bits(),
            max_gap: d_max_gap(),
            forbidden: Vec::new(),
        }
    }
}

/// Device-wide OPC UA settings of a template.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct OpcuaDefaults {
    /// Namespace URI of path segments written without `<uri>#`.
    #[serde(default)]
    pub namespace: Option<String>,
    #[serde(default = "d_sampling")]
    pub sampling_ms: f64,
    #[serde(default = "d_queue")]
    pub queue_size: u32,
}

fn d_sampling() -> f64 {
    500.0
}
fn d_queue() -> u32 {
    10
}

impl Default for OpcuaDefaults {
    fn default() -> Self {
        OpcuaDefaults {
            namespace: None,
            sampling_ms: d_sampling(),
            queue_size: d_queue(),
        }
    }
}

/// One point of a template, or an override of one (then every field but `name` is optional).
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PointDef {
    pub name: String,
    /// Overrides only: drop this template point.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub remove: bool,
    #[serde(default)]
    pub description: Option<String>,
    // ---- Modbus
    #[serde(default)]
    pub table: Option<Table>,
    /// Documented address (wire address + the template's `address_base`).
    #[serde(default)]
    pub address: Option<u32>,
    #[serde(default, rename = "type")]
    pub data_type: Option<DataType>,
    #[serde(default)]
    pub order: Option<Order>,
    #[serde(default)]
    pub bit: Option<u8>,
    /// Registers of a string.
    #[serde(default)]
    pub length: Option<u16>,
    #[serde(default)]
    pub string_layout: Option<StringLayout>,
    // ---- OPC UA
    #[serde(default)]
    pub node: Option<String>,
    #[serde(default)]
    pub path: Option<String>,
    #[serde(default)]
    pub sampling_ms: Option<f64>,
    #[serde(default)]
    pub queue_size: Option<u32>,
    #[serde(default)]
    pub deadband: Option<Deadband>,
    // ---- both
    #[serde(default)]
    pub scale: Option<f64>,
    #[serde(default)]
    pub offset: Option<f64>,
    #[serde(default)]
    pub unit: Option<String>,
}

impl PointDef {
    /// `raw × scale + offset`, checked: scale finite and non-zero, offset finite.
    fn scale_offset(&self, i: usize) -> Result<(f64, f64), TemplateError> {
        let scale = self.scale.unwrap_or(1.0);
        let offset = self.offset.unwrap_or(0.0);
        if !scale.is_finite() || scale == 0.0 {
            return Err(err(
                format!("point[{i}].scale"),
                "must be a finite, non-zero number",
            ));
        }
        if !offset.is_finite() {
            return Err(err(format!("point[{i}].offset"), "must be finite"));
        }
        Ok((scale, offset))
    }

    /// Fields of `o` that are set replace this point's.
    fn merge(&mut self, o: &PointDef) {
        macro_rules! take {
            ($($f:ident),*) => { $( if o.$f.is_some() { self.$f = o.$f.clone(); } )* };
        }
        take!(
            description,
            table,
            address,
            data_type,
            order,
            bit,
            length,
            string_layout,
            node,
            path,
            sampling_ms,
            queue_size,
            deadband,
            scale,
            offset,
            unit
        );
    }
}

/// What a device config may change of its template.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Overrides {
    #[serde(default)]
    pub address_base: Option<u16>,
    #[serde(default)]
    pub order: Option<Order>,
    #[serde(default)]
    pub max_registers: Option<u16>,
    #[serde(default)]
    pub max_bits: Option<u16>,
    #[serde(default)]
    pub max_gap: Option<u16>,
    /// Replaces the template's forbidden ranges (documented addresses).
    #[serde(default)]
    pub forbidden: Option<Vec<Forbidden>>,
    #[serde(default)]
    pub sampling_ms: Option<f64>,
    /// Points to change (matched by name), remove (`remove = true`) or add.
    #[serde(default, rename = "point")]
    pub points: Vec<PointDef>,
    #[serde(default)]
    pub states: Option<StateRules>,
    #[serde(default)]
    pub counters: Option<CounterRules>,
    /// Replaces the meter's accounting register.
    #[serde(default)]
    pub meter: Option<MeterRules>,
}

/// A template or override problem, with the field path it concerns.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{path}: {reason}")]
pub struct TemplateError {
    pub path: String,
    pub reason: String,
}

fn err(path: impl Into<String>, reason: impl Into<String>) -> TemplateError {
    TemplateError {
        path: path.into(),
        reason: reason.into(),
    }
}

/// A Modbus device's acquisition plan inputs after merging template and overrides.
#[derive(Debug, Clone, PartialEq)]
pub struct ModbusDevice {
    pub points: Vec<ModbusPoint>,
    pub limits: PlanLimits,
}

/// An OPC UA device's points after merging template and overrides.
#[derive(Debug, Clone, PartialEq)]
pub struct OpcuaDevice {
    pub namespace: Option<String>,
    pub points: Vec<OpcuaPoint>,
}

const BUILTIN: &[(&str, &str)] = &[
    (
        "cnc-modbus-generic",
        include_str!("../../configs/devices/cnc-modbus-generic.toml"),
    ),
    (
        "cnc-opcua-machinetool",
        include_str!("../../configs/devices/cnc-opcua-machinetool.toml"),
    ),
    (
        "robot-opcua-40010",
        include_str!("../../configs/devices/robot-opcua-40010.toml"),
    ),
    (
        "eastron-sdm630",
        include_str!("../../configs/devices/eastron-sdm630.toml"),
    ),
    (
        "schneider-pm5xxx",
        include_str!("../../configs/devices/schneider-pm5xxx.toml"),
    ),
    (
        "water-meter-modbus",
        include_str!("../../configs/devices/water-meter-modbus.toml"),
    ),
    (
        "gas-meter-modbus",
        include_str!("../../configs/devices/gas-meter-modbus.toml"),
    ),
];

/// Ids of the templates compiled in.
pub fn builtin_ids() -> Vec<&'static str> {
    BUILTIN.iter().map(|(id, _)| *id).collect()
}

/// A compiled-in template by id.
pub fn builtin(id: &str) -> Option<Result<Template, TemplateError>> {
    BUILTIN.iter().find(|(i, _)| *i == id).map(|(i, text)| {
        Template::parse(text).map_err(|e| err(format!("{i}.toml: {}", e.path), e.reason))
    })
}

impl Template {
    /// Parses and validates a template file's text.
    pub fn parse(text: &str) -> Result<Template, TemplateError> {
        let t: Template = toml::from_str(text).map_err(|e| err("template", e.to_string()))?;
        t.validate()?;
        Ok(t)
    }

    /// Checks what can be checked without a device: ids, names, protocol sections and every
    /// point (by resolving it with no overrides).
    pub fn validate(&self) -> Result<(), TemplateError> {
        if self.id.is_empty()
            || !self
                .id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(err(
                "id",
                "must be non-empty ASCII letters, digits, `-` or `_`",
            ));
        }
        if self.points.is_empty() {
            return Err(err("point", "a template needs at least one point"));
        }
        match self.protocol {
            Protocol::Modbus => {
                self.resolve_modbus(&Overrides::default())?;
            }
            Protocol::Opcua => {
                self.resolve_opcua(&Overrides::default())?;
            }
        }
        let names: BTreeSet<&str> = self.points.iter().map(|p| p.name.as_str()).collect();
        if let Some(s) = &self.states {
            s.validate(&names)
                .map_err(|e| err(format!("states.{}", e.path), e.reason))?;
        }
        if let Some(c) = &self.counters {
            c.validate(&names)
                .map_err(|e| err(format!("counters.{}", e.path), e.reason))?;
        }
        if let Some(m) = &self.meter {
            m.validate(&names)
                .map_err(|e| err(format!("meter.{}", e.path), e.reason))?;
        }
        if self.kind == "meter" && self.meter.is_none() {
            return Err(err(
                "meter",
                "a meter template names its accounting register: [meter] point = \"...\"",
            ));
        }
        Ok(())
    }

    /// Template points with overrides applied (changed, removed, added), in template order
    /// then added ones.
    fn merged_points(&self, o: &Overrides) -> Result<Vec<PointDef>, TemplateError> {
        let mut points = self.points.clone();
        let mut seen = BTreeSet::new();
        for (i, p) in points.iter().enumerate() {
            if p.name.is_empty() {
                return Err(err(format!("point[{i}].name"), "must not be empty"));
            }
            if !seen.insert(p.name.clone()) {
                return Err(err(
                    format!("point[{i}].name"),
                    format!("duplicate point name `{}`", p.name),
                ));
            }
        }
        for (i, ov) in o.points.iter().enumerate() {
            if ov.name.is_empty() {
                return Err(err(
                    format!("overrides.point[{i}].name"),
                    "must not be empty",
                ));
            }
            match points.iter().position(|p| p.name == ov.name) {
                Some(k) if ov.remove => {
                    points.remove(k);
                }
                Some(k) => points[k].merge(ov),
                None if ov.remove => {
                    return Err(err(
                        format!("overrides.point[{i}].name"),
                        format!("the template has no point `{}` to remove", ov.name),
                    ));
                }
                None => points.push(ov.clone()),
            }
        }
        Ok(points)
    }

    /// Template + overrides → the Modbus points and planner limits a driver uses.
    pub fn resolve_modbus(&self, o: &Overrides) -> Result<ModbusDevice, TemplateError> {
        if self.protocol != Protocol::Modbus {
            return Err(err(
                "template",
                format!("`{}` is an OPC UA template, not Modbus", self.id),
            ));
        }
        let d = self.modbus.clone().unwrap_or_default();
        let base = o.address_base.unwrap_or(d.address_base);
        if base > 1 {
            return Err(err("address_base", format!("must be 0 or 1 (got {base})")));
        }
        let order = o.order.unwrap_or(d.order);
        let forbidden_doc = o.forbidden.clone().unwrap_or(d.forbidden);
        let mut forbidden = Vec::with_capacity(forbidden_doc.len());
        for (i, f) in forbidden_doc.iter().enumerate() {
            let (Some(from), Some(to)) = (f.from.checked_sub(base), f.to.checked_sub(base)) else {
                return Err(err(
                    format!("forbidden[{i}].from"),
                    "below the address base",
                ));
            };
            forbidden.push(Forbidden {
                table: f.table,
                from,
                to,
            });
        }
        let limits = PlanLimits {
            max_registers: o.max_registers.unwrap_or(d.max_registers),
            max_bits: o.max_bits.unwrap_or(d.max_bits),
            max_gap: o.max_gap.unwrap_or(d.max_gap),
            forbidden,
        };
        limits.validate().map_err(|r| err("modbus", r))?;
        let defs = self.merged_points(o)?;
        let mut points = Vec::with_capacity(defs.len());
        for (i, p) in defs.iter().enumerate() {
            let at = |f: &str| format!("point[{i}].{f}");
            if p.node.is_some() || p.path.is_some() {
                return Err(err(at("node"), "OPC UA fields in a Modbus point"));
            }
            let table = p
                .table
                .ok_or_else(|| err(at("table"), "missing: coil, discrete, holding or input"))?;
            let documented = p.address.ok_or_else(|| err(at("address"), "missing"))?;
            let wire = documented
                .checked_sub(u32::from(base))
                .and_then(|a| u16::try_from(a).ok())
                .ok_or_else(|| {
                    err(
                        at("address"),
                        format!(
                            "{documented} minus address base {base} is not a wire address 0..=65535"
                        ),
                    )
                })?;
            let data_type = p.data_type.unwrap_or(if table.is_bits() {
                DataType::Bool
            } else {
                DataType::U16
            });
            let layout = Layout {
                table,
                address: wire,
                data_type,
                order: p.order.unwrap_or(order),
                bit: p.bit,
                length: p
                    .length
                    .unwrap_or(if data_type == DataType::String { 0 } else { 1 }),
                string_layout: p.string_layout.unwrap_or_default(),
            };
            layout.validate().map_err(|r| err(at("type"), r))?;
            let (scale, offset) = p.scale_offset(i)?;
            points.push(ModbusPoint {
                name: p.name.clone(),
                layout,
                scale,
                offset,
                unit: p.unit.clone(),
            });
        }
        self.check_rules(o, points.iter().map(|p| p.name.as_str()))?;
        Ok(ModbusDevice { points, limits })
    }

    /// Template + overrides → the OPC UA points a driver subscribes to.
    pub fn resolve_opcua(&self, o: &Overrides) -> Result<OpcuaDevice, TemplateError> {
        if self.protocol != Protocol::Opcua {
            return Err(err(
                "template",
                format!("`{}` is a Modbus template, not OPC UA", self.id),
            ));
        }
        let d = self.opcua.clone().unwrap_or_default();
        let defs = self.merged_points(o)?;
        let mut points = Vec::with_capacity(defs.len());
        for (i, p) in defs.iter().enumerate() {
            let at = |f: &str| format!("point[{i}].{f}");
            if p.table.is_some() || p.address.is_some() {
                return Err(err(at("table"), "Modbus fields in an OPC UA point"));
            }
            let node = match (&p.node, &p.path) {
                (Some(n), None) if !n.trim().is_empty() => NodeRef::Node(n.clone()),
                (None, Some(path)) if !path.trim().is_empty() => NodeRef::Path(path.clone()),
                (Some(_), Some(_)) => {
                    return Err(err(at("node"), "give `node` or `path`, not both"));
                }
                _ => {
                    return Err(err(
                        at("node"),
                        "missing: give a node id (`node`) or a browse path (`path`)",
                    ));
                }
            };
            let sampling_ms = p.sampling_ms.or(o.sampling_ms).unwrap_or(d.sampling_ms);
            if !sampling_ms.is_finite() || sampling_ms < 0.0 {
                return Err(err(at("sampling_ms"), "must be ≥ 0 ms"));
            }
            let deadband = p.deadband.unwrap_or_default();
            match deadband {
                Deadband::Absolute(v) if !(v.is_finite() && v >= 0.0) => {
                    return Err(err(at("deadband"), "an absolute deadband must be ≥ 0"));
                }
                Deadband::Percent(v) if !(0.0..=100.0).contains(&v) => {
                    return Err(err(at("deadband"), "a percent deadband must be 0..=100"));
                }
                _ => {}
            }
            let (scale, offset) = p.scale_offset(i)?;
            points.push(OpcuaPoint {
                name: p.name.clone(),
                node,
                sampling_ms,
                queue_size: p.queue_size.unwrap_or(d.queue_size).max(1),
                deadband,
                scale,
                offset,
                unit: p.unit.clone(),
            });
        }
        self.check_rules(o, points.iter().map(|p| p.name.as_str()))?;
        Ok(OpcuaDevice {
            namespace: d.namespace,
            points,
        })
    }

    /// The state and counter rules in force must name points that survived the overrides
    /// (removing a point the rules read needs new rules in the same override).
    fn check_rules<'a>(
        &self,
        o: &Overrides,
        names: impl Iterator<Item = &'a str>,
    ) -> Result<(), TemplateError> {
        let names: BTreeSet<&str> = names.collect();
        // Errors name the section the rules come from: the device's override or the template.
        let at = |own: bool, section: &str, path: String, reason: String| {
            let prefix = if own { "overrides." } else { "" };
            err(format!("{prefix}{section}.{path}"), reason)
        };
        if let Some(s) = self.state_rules(o) {
            s.validate(&names)
                .map_err(|e| at(o.states.is_some(), "states", e.path, e.reason))?;
        }
        if let Some(c) = self.counter_rules(o) {
            c.validate(&names)
                .map_err(|e| at(o.counters.is_some(), "counters", e.path, e.reason))?;
        }
        if let Some(m) = self.meter_rules(o) {
            m.validate(&names)
                .map_err(|e| at(o.meter.is_some(), "meter", e.path, e.reason))?;
        }
        Ok(())
    }

    /// State rules after overrides.
    pub fn state_rules<'a>(&'a self, o: &'a Overrides) -> Option<&'a StateRules> {
        o.states.as_ref().or(self.states.as_ref())
    }

    /// Meter accounting register after overrides.
    pub fn meter_rules<'a>(&'a self, o: &'a Overrides) -> Option<&'a MeterRules> {
        o.meter.as_ref().or(self.meter.as_ref())
    }

    /// Counter rules after overrides.
    pub fn counter_rules<'a>(&'a self, o: &'a Overrides) -> Option<&'a CounterRules> {
        o.counters.as_ref().or(self.counters.as_ref())
    }
}
