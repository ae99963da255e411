#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Properties of the Modbus codec and the read planner (DESIGN.md §7: bad Modbus frames get an
//! error, never a panic; every readable point is read whole, within the protocol's limits).

use proptest::prelude::*;
use shopfloor_devices::codec::{
    DataType, Layout, Order, StringLayout, Table, Value, decode_registers, encode_registers,
};
use shopfloor_devices::plan::{Learned, plan};
use shopfloor_devices::point::{Forbidden, ModbusPoint, PlanLimits};

const TYPES: [DataType; 9] = [
    DataType::Bool,
    DataType::U16,
    DataType::I16,
    DataType::U32,
    DataType::I32,
    DataType::U64,
    DataType::I64,
    DataType::F32,
    DataType::F64,
];
const ORDERS: [Order; 4] = [Order::ABCD, Order::CDAB, Order::BADC, Order::DCBA];
const LAYOUTS: [StringLayout; 4] = [
    StringLayout::HighLow,
    StringLayout::LowHigh,
    StringLayout::High,
    StringLayout::Low,
];

fn layout(t: DataType, o: Order, bit: Option<u8>, length: u16, sl: StringLayout) -> Layout {
    Layout {
        table: Table::Holding,
        address: 0,
        data_type: t,
        order: o,
        bit,
        length,
        string_layout: sl,
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Whatever a device sends, in whatever length, decoding gives a value or an error.
    #[test]
    fn decoding_any_registers_never_panics(
        t in 0usize..10, o in 0usize..4, sl in 0usize..4, bit in proptest::option::of(0u8..20),
        length in 0u16..130, regs in proptest::collection::vec(any::<u16>(), 0..130),
    ) {
        let data_type = if t == 9 { DataType::String } else { TYPES[t] };
        let l = layout(data_type, ORDERS[o], bit, length, LAYOUTS[sl]);
        let _ = decode_registers(&l, &regs);
    }

    /// What the simulator encodes, the agent decodes to the same value, in every order.
    #[test]
    fn encode_then_decode_is_the_identity(raw in any::<u64>(), o in 0usize..4, t in 1usize..9, bit in 0u8..16) {
        let data_type = TYPES[t];
        let order = ORDERS[o];
        let value = match data_type {
            DataType::U16 => Value::UInt(raw & 0xFFFF),
            DataType::I16 => Value::Int(i64::from(raw as u16 as i16)),
            DataType::U32 => Value::UInt(raw & 0xFFFF_FFFF),
            DataType::I32 => Value::Int(i64::from(raw as u32 as i32)),
            DataType::U64 => Value::UInt(raw),
            DataType::I64 => Value::Int(raw as i64),
            DataType::F32 => Value::Float(f64::from(f32::from_bits(raw as u32))),
            DataType::F64 => Value::Float(f64::from_bits(raw)),
            _ => Value::Bool(raw & 1 == 1),
        };
        let l = layout(data_type, order, None, 1, StringLayout::HighLow);
        let regs = encode_registers(&l, &value, 0).unwrap();
        match (&value, decode_registers(&l, &regs)) {
            (Value::Float(f), Err(_)) => prop_assert!(!f.is_finite(), "{f} rejected"),
            (v, Ok(d)) => prop_assert_eq!(&d, v),
            (v, Err(e)) => prop_assert!(false, "{v:?}: {e}"),
        }
        // A bit in a register leaves the register's other bits alone.
        let b = layout(DataType::Bool, order, Some(bit), 1, StringLayout::HighLow);
        let other = (raw as u16) & !(1 << bit);
        let word = encode_registers(&b, &Value::Bool(true), other).unwrap();
        prop_assert_eq!(word[0], other | 1 << bit);
        prop_assert_eq!(decode_registers(&b, &word), Ok(Value::Bool(true)));
    }

    /// Every readable point lies whole in exactly one request; requests respect the protocol
    /// limits; a hole is read through only if it is ≤ max_gap and outside forbidden ranges.
    #[test]
    fn the_plan_covers_every_point_once_within_limits(
        specs in proptest::collection::vec((0usize..4, 0u16..3000, 0usize..9), 1..150),
        max_gap in 0u16..20, max_registers in 1u16..=125,
        forbidden in proptest::collection::vec((0usize..4, 0u16..3000, 0u16..30), 0..5),
    ) {
        let tables = [Table::Coil, Table::Discrete, Table::Holding, Table::Input];
        let points: Vec<ModbusPoint> = specs
            .iter()
            .enumerate()
            .map(|(i, &(t, address, ty))| {
                let table = tables[t];
                let data_type = if table.is_bits() { DataType::Bool } else { TYPES[ty] };
                let bit = (data_type == DataType::Bool && !table.is_bits()).then_some(3);
                ModbusPoint {
                    name: format!("p{i}"),
                    layout: Layout { table, address, data_type, order: Order::ABCD, bit, length: 1, string_layout: StringLayout::HighLow },
                    scale: 1.0,
                    offset: 0.0,
                    unit: None,
                }
            })
            .collect();
        let limits = PlanLimits {
            max_registers,
            max_bits: 2000,
            max_gap,
            forbidden: forbidden.iter().map(|&(t, from, len)| Forbidden { table: tables[t], from, to: from + len }).collect(),
        };
        let reqs = plan(&points, &limits, &Learned::default());
        let mut seen = vec![0usize; points.len()];
        for r in &reqs {
            let max = if r.table.is_bits() { 2000 } else { max_registers };
            let biggest_point = r.points.iter().map(|&i| points[i].layout.span()).max().unwrap_or(1);
            prop_assert!(r.count <= max.max(biggest_point), "{r:?} exceeds {max}");
            let mut covered: Vec<(u16, u16)> = Vec::new();
            for &i in &r.points {
                seen[i] += 1;
                let l = &points[i].layout;
                prop_assert_eq!(l.table, r.table);
                prop_assert!(l.address >= r.start && l.end_inclusive().unwrap() <= r.end(), "point {i} not whole in {r:?}");
                covered.push((l.address, l.end_inclusive().unwrap()));
            }
            // Addresses read only as hole filler: ≤ max_gap in a row, never forbidden.
            covered.sort_unstable();
            let mut end = covered[0].1;
            for &(s, e) in &covered[1..] {
                if s > end + 1 {
                    prop_assert!(s - end - 1 <= max_gap, "hole {}..{} in {r:?}", end + 1, s - 1);
                    for f in limits.forbidden.iter().filter(|f| f.table == r.table) {
                        prop_assert!(f.to <= end || f.from >= s, "forbidden {f:?} read in {r:?}");
                    }
                }
                end = end.max(e);
            }
        }
        prop_assert!(seen.iter().all(|&n| n == 1), "{seen:?}");
    }
}
