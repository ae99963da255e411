#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The built-in device templates: every one parses and validates; the Modbus maps resolve to
//! the wire addresses, tables and types of their sources (standards.md §5.6); every physical
//! point has a unit; state and counter roles name existing points; the README's override
//! examples resolve.

use std::collections::BTreeSet;

use shopfloor_devices::codec::{DataType, Order, Table};
use shopfloor_devices::plan::{Learned, plan};
use shopfloor_devices::point::ModbusPoint;
use shopfloor_devices::signals::{StateModel, StateTracker};
use shopfloor_devices::template::{self, ModbusDevice, Overrides, Protocol, Template};

fn load(id: &str) -> Template {
    template::builtin(id)
        .unwrap_or_else(|| panic!("no built-in `{id}`"))
        .unwrap_or_else(|e| panic!("{id}: {e}"))
}

fn modbus(id: &str) -> ModbusDevice {
    load(id).resolve_modbus(&Overrides::default()).unwrap()
}

fn point<'a>(d: &'a ModbusDevice, name: &str) -> &'a ModbusPoint {
    d.points
        .iter()
        .find(|p| p.name == name)
        .unwrap_or_else(|| panic!("no point `{name}`"))
}

/// (table, wire address, type, order) of a point.
fn wire(d: &ModbusDevice, name: &str) -> (Table, u16, DataType, Order) {
    let p = point(d, name);
    (
        p.layout.table,
        p.layout.address,
        p.layout.data_type,
        p.layout.order,
    )
}

/// The OPC UA templates are written by someone else; until they are, they are one-point
/// placeholders that are only parse-checked.
fn is_placeholder(t: &Template) -> bool {
    t.name == "placeholder"
}

/// Points that carry no physical quantity: flags, codes, identifiers, power factors.
fn dimensionless(name: &str, data_type: Option<DataType>) -> bool {
    data_type == Some(DataType::Bool)
        || data_type == Some(DataType::String)
        || name.ends_with("_code")
        || name.ends_with("_number")
        || name.starts_with("power_factor")
}

/// Name suffixes that say a point is a physical quantity.
const UNIT_SUFFIXES: &[&str] = &[
    "_v", "_a", "_w", "_kw", "_va", "_kva", "_var", "_kvar", "_wh", "_kwh", "_kvarh", "_hz",
    "_rpm", "_pct", "_s", "_h", "_m3", "_m3h", "_c", "_kpa", "_mm", "_nm", "_j", "_kg",
];

#[test]
fn every_builtin_template_parses_and_is_named_in_both_languages() {
    let ids = template::builtin_ids();
    for id in [
        "cnc-modbus-generic",
        "cnc-opcua-machinetool",
        "robot-opcua-40010",
        "eastron-sdm630",
        "schneider-pm5xxx",
        "water-meter-modbus",
        "gas-meter-modbus",
    ] {
        assert!(ids.contains(&id), "{id} is not built in: {ids:?}");
    }
    for id in ids {
        let t = load(id);
        assert_eq!(t.id, id);
        if is_placeholder(&t) {
            continue;
        }
        assert!(!t.name.trim().is_empty(), "{id}: name");
        assert!(
            t.name_zh
                .chars()
                .any(|c| ('\u{4e00}'..='\u{9fff}').contains(&c)),
            "{id}: name_zh is not Chinese"
        );
        assert!(!t.references.is_empty(), "{id}: references");
        let names: Vec<&str> = t.points.iter().map(|p| p.name.as_str()).collect();
        for n in &names {
            assert!(
                n.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
                    && !n.starts_with('_'),
                "{id}: point `{n}` is not snake_case"
            );
        }
        assert_eq!(
            names.iter().collect::<BTreeSet<_>>().len(),
            names.len(),
            "{id}: duplicate point names"
        );
    }
}

#[test]
fn every_physical_point_has_a_unit() {
    for id in template::builtin_ids() {
        let t = load(id);
        if is_placeholder(&t) {
            continue;
        }
        for p in &t.points {
            let needs_unit = match t.protocol {
                Protocol::Modbus => !dimensionless(&p.name, p.data_type.or(Some(DataType::U16))),
                // OPC UA points carry no type in the template: a name with a unit suffix
                // (`_kwh`, `_rpm`, ...) is a physical quantity.
                Protocol::Opcua => UNIT_SUFFIXES.iter().any(|s| p.name.ends_with(s)),
            };
            if needs_unit {
                assert!(
                    p.unit.as_deref().is_some_and(|u| !u.trim().is_empty()),
                    "{id}: point `{}` has no unit",
                    p.name
                );
            }
        }
    }
}

#[test]
fn meters_name_their_carrier_and_machines_their_control() {
    for id in template::builtin_ids() {
        let t = load(id);
        if is_placeholder(&t) {
            continue;
        }
        if t.kind == "meter" {
            assert!(t.carrier.is_some(), "{id}: a meter needs a carrier");
            assert!(
                t.states.is_none() && t.counters.is_none(),
                "{id}: a meter has no machine states"
            );
        } else {
            assert!(t.control.is_some(), "{id}: a machine needs a control type");
        }
    }
    assert_eq!(
        load("eastron-sdm630").carrier.as_deref(),
        Some("electricity")
    );
    assert_eq!(
        load("schneider-pm5xxx").carrier.as_deref(),
        Some("electricity")
    );
    assert_eq!(load("water-meter-modbus").carrier.as_deref(), Some("water"));
    assert_eq!(
        load("gas-meter-modbus").carrier.as_deref(),
        Some("natural_gas")
    );
}

#[test]
fn state_and_counter_roles_name_existing_points_and_build_trackers() {
    for id in template::builtin_ids() {
        let t = load(id);
        let names: BTreeSet<&str> = t.points.iter().map(|p| p.name.as_str()).collect();
        if let Some(s) = &t.states {
            s.validate(&names)
                .unwrap_or_else(|e| panic!("{id}: states.{e}"));
            for p in s.signals.values() {
                assert!(names.contains(p.as_str()), "{id}: states name `{p}`");
            }
            StateTracker::new(s.clone()).unwrap();
        }
        if let Some(c) = &t.counters {
            c.validate(&names)
                .unwrap_or_else(|e| panic!("{id}: counters.{e}"));
            for (_, p) in c.roles() {
                assert!(names.contains(p), "{id}: counters name `{p}`");
            }
        }
    }
}

#[test]
fn every_modbus_template_plans_within_its_limits() {
    for id in template::builtin_ids() {
        let t = load(id);
        if t.protocol != Protocol::Modbus {
            continue;
        }
        let d = t.resolve_modbus(&Overrides::default()).unwrap();
        let reqs = plan(&d.points, &d.limits, &Learned::default());
        let covered: usize = reqs.iter().map(|r| r.points.len()).sum();
        assert_eq!(
            covered,
            d.points.len(),
            "{id}: every point in exactly one request"
        );
        for r in &reqs {
            let max = if r.table.is_bits() {
                d.limits.max_bits
            } else {
                d.limits.max_registers
            };
            assert!(
                r.count <= max,
                "{id}: request of {} over the limit {max}",
                r.count
            );
        }
    }
}

#[test]
fn sdm630_reads_float32_abcd_input_registers_at_wire_addresses() {
    let d = modbus("eastron-sdm630");
    let f = |a| (Table::Input, a, DataType::F32, Order::ABCD);
    assert_eq!(wire(&d, "voltage_l1_v"), f(0));
    assert_eq!(wire(&d, "voltage_l3_v"), f(4));
    assert_eq!(wire(&d, "current_l1_a"), f(6));
    assert_eq!(wire(&d, "power_l1_w"), f(12));
    assert_eq!(wire(&d, "power_total_w"), f(0x34));
    assert_eq!(wire(&d, "frequency_hz"), f(0x46));
    assert_eq!(wire(&d, "energy_import_kwh"), f(72));
    assert_eq!(wire(&d, "energy_export_kwh"), f(74));
    assert_eq!(wire(&d, "energy_total_kwh"), f(0x156));
    assert_eq!(point(&d, "energy_import_kwh").unit.as_deref(), Some("kWh"));
    assert_eq!(point(&d, "power_total_w").unit.as_deref(), Some("W"));
    assert!(
        d.points
            .iter()
            .all(|p| p.layout.table == Table::Input && p.scale == 1.0)
    );
    // Eastron: at most 40 parameters (80 registers) per request.
    assert_eq!(d.limits.max_registers, 80);
}

#[test]
fn pm5xxx_documented_one_based_registers_become_wire_addresses() {
    let t = load("schneider-pm5xxx");
    assert_eq!(t.modbus.as_ref().unwrap().address_base, 1);
    let doc = |name: &str| {
        t.points
            .iter()
            .find(|p| p.name == name)
            .unwrap()
            .address
            .unwrap()
    };
    assert_eq!(doc("energy_delivered_wh"), 3204);
    let d = modbus("schneider-pm5xxx");
    let h = |a, ty| (Table::Holding, a, ty, Order::ABCD);
    assert_eq!(wire(&d, "energy_delivered_wh"), h(3203, DataType::I64));
    assert_eq!(wire(&d, "energy_received_wh"), h(3207, DataType::I64));
    assert_eq!(wire(&d, "power_total_kw"), h(3059, DataType::F32));
    assert_eq!(wire(&d, "frequency_hz"), h(3109, DataType::F32));
    assert_eq!(wire(&d, "current_a_a"), h(2999, DataType::F32));
    assert_eq!(wire(&d, "voltage_ab_v"), h(3019, DataType::F32));
    assert_eq!(wire(&d, "energy_delivered_kwh"), h(2699, DataType::F32));
    assert_eq!(point(&d, "energy_delivered_wh").unit.as_deref(), Some("Wh"));
    assert_eq!(point(&d, "power_total_kw").unit.as_deref(), Some("kW"));
    assert_eq!(
        point(&d, "energy_delivered_wh").scale,
        1.0,
        "the accounting register stays an exact integer"
    );
}

#[test]
fn cnc_generic_map_status_bits_and_counters() {
    let t = load("cnc-modbus-generic");
    assert_eq!(
        (t.kind.as_str(), t.control.as_deref()),
        ("cnc", Some("cnc"))
    );
    let d = modbus("cnc-modbus-generic");
    for (name, bit) in [
        ("run", 0),
        ("alarm", 1),
        ("setup", 2),
        ("planned_stop", 3),
        ("feed_hold", 4),
    ] {
        let p = point(&d, name);
        assert_eq!(
            (
                p.layout.table,
                p.layout.address,
                p.layout.data_type,
                p.layout.bit
            ),
            (Table::Holding, 0, DataType::Bool, Some(bit)),
            "{name}"
        );
    }
    assert_eq!(
        wire(&d, "alarm_code"),
        (Table::Holding, 1, DataType::U16, Order::ABCD)
    );
    assert_eq!(
        wire(&d, "part_count"),
        (Table::Holding, 2, DataType::U32, Order::ABCD)
    );
    assert_eq!(
        wire(&d, "good_count"),
        (Table::Holding, 4, DataType::U32, Order::ABCD)
    );
    assert_eq!(
        wire(&d, "scrap_count"),
        (Table::Holding, 6, DataType::U32, Order::ABCD)
    );
    let s = t.states.as_ref().unwrap();
    assert_eq!(s.model, StateModel::RunAlarm);
    assert_eq!(s.micro_stop_s, 120.0);
    assert_eq!(s.signals.get("run").map(String::as_str), Some("run"));
    assert_eq!(
        s.signals.get("planned_down").map(String::as_str),
        Some("planned_stop")
    );
    let c = t.counters.as_ref().unwrap();
    assert_eq!(c.produced.as_deref(), Some("part_count"));
    assert_eq!(c.good.as_deref(), Some("good_count"));
    assert_eq!(c.scrap.as_deref(), Some("scrap_count"));
    // The counter width matches the registers it counts in.
    assert_eq!(c.width_bits, 32);
}

#[test]
fn volume_meters_share_the_accounting_point_name() {
    let w = modbus("water-meter-modbus");
    let p = point(&w, "volume_total_m3");
    assert_eq!(
        (p.layout.table, p.layout.address, p.layout.data_type),
        (Table::Holding, 0, DataType::U32)
    );
    assert_eq!(p.scale, 0.001);
    assert_eq!(p.unit.as_deref(), Some("m3"));
    assert_eq!(point(&w, "flow_rate_m3h").unit.as_deref(), Some("m3/h"));
    let g = modbus("gas-meter-modbus");
    let p = point(&g, "volume_total_m3");
    assert_eq!(
        (p.layout.table, p.layout.address, p.layout.data_type),
        (Table::Holding, 0, DataType::U32)
    );
    assert_eq!(p.scale, 0.01);
    assert_eq!(p.unit.as_deref(), Some("m3"));
}

/// The ```toml blocks of the README that start with `# overrides of <id>`.
fn readme_overrides() -> Vec<(String, String)> {
    let readme = include_str!("../../configs/devices/README.md");
    let mut out = Vec::new();
    let mut rest = readme;
    while let Some(start) = rest.find("```toml\n") {
        let body = &rest[start + 8..];
        let end = body.find("```").unwrap();
        let block = &body[..end];
        if let Some(id) = block
            .lines()
            .next()
            .and_then(|l| l.strip_prefix("# overrides of "))
        {
            out.push((id.trim().to_owned(), block.to_owned()));
        }
        rest = &body[end + 3..];
    }
    out
}

#[test]
fn readme_override_examples_resolve() {
    let examples = readme_overrides();
    assert_eq!(examples.len(), 3, "{examples:?}");
    for (id, text) in &examples {
        let t = load(id);
        let o: Overrides = toml::from_str(text).unwrap_or_else(|e| panic!("{id}: {e}"));
        let d = t.resolve_modbus(&o).unwrap_or_else(|e| panic!("{id}: {e}"));
        let names: BTreeSet<&str> = d.points.iter().map(|p| p.name.as_str()).collect();
        if let Some(c) = t.counter_rules(&o) {
            c.validate(&names).unwrap_or_else(|e| panic!("{id}: {e}"));
        }
        if let Some(s) = t.state_rules(&o) {
            s.validate(&names).unwrap_or_else(|e| panic!("{id}: {e}"));
        }
    }
    // The address change: SDM630 import moved to wire 0x156, word-swapped.
    let (_, text) = examples
        .iter()
        .find(|(id, _)| id == "eastron-sdm630")
        .unwrap();
    let d = load("eastron-sdm630")
        .resolve_modbus(&toml::from_str(text).unwrap())
        .unwrap();
    assert_eq!(
        wire(&d, "energy_import_kwh"),
        (Table::Input, 0x156, DataType::F32, Order::CDAB)
    );
    // The removal: no good counter any more, good is derived.
    let (_, text) = examples
        .iter()
        .find(|(id, _)| id == "cnc-modbus-generic")
        .unwrap();
    let t = load("cnc-modbus-generic");
    let o: Overrides = toml::from_str(text).unwrap();
    let d = t.resolve_modbus(&o).unwrap();
    assert!(d.points.iter().all(|p| p.name != "good_count"));
    assert_eq!(
        t.counter_rules(&o).unwrap().derived(),
        Some(shopfloor_devices::signals::CounterRole::Good)
    );
}
