//! Modbus response decoding (`shopfloor_devices::codec`) and the read planner whose requests
//! the responses answer (`shopfloor_devices::plan`).
//!
//! 1. One layout from the first 16 bytes (0: table, 1: data type, 2: byte order, 3: bit, none
//!    when ≥ 0x80, 4–5: string length, 6: string layout, 7–8: address, 9: slice offset,
//!    10–11: scale and offset from a table, 12: a coil bit) and a "response" of big-endian
//!    registers from the rest, sliced at the offset as the poller does: `decode_registers`
//!    never panics on any layout or length; a decoded float is finite; for a valid numeric
//!    layout, `encode_registers` of the decoded value decodes to the same value (the simulator
//!    serves what the agent reads).
//! 2. The same bytes as planner limits (0: max registers, 1–2: max bits, 3: max gap, 4–11: two
//!    forbidden ranges, each used when its first byte has bit 7 set) and up to 64 points of 9
//!    bytes from byte 12 on (layout as above, byte 5: string length 0..=125), valid points
//!    only: `plan` covers every point exactly once and whole, within the limits (a point larger
//!    than the limit alone), and each point decodes from its request's reply at
//!    `address − start` (what `acquire`'s poller does).

#![no_main]

use libfuzzer_sys::fuzz_target;
use shopfloor_devices::codec::{
    DataType, Layout, Order, StringLayout, Table, Value, decode_bit, decode_registers,
    encode_registers, scale,
};
use shopfloor_devices::plan::{Learned, plan};
use shopfloor_devices::point::{Forbidden, ModbusPoint, PlanLimits};

const TABLES: [Table; 4] = [Table::Coil, Table::Discrete, Table::Holding, Table::Input];
const TYPES: [DataType; 10] = [
    DataType::Bool,
    DataType::U16,
    DataType::I16,
    DataType::U32,
    DataType::I32,
    DataType::U64,
    DataType::I64,
    DataType::F32,
    DataType::F64,
    DataType::String,
];
const ORDERS: [Order; 4] = [Order::ABCD, Order::CDAB, Order::BADC, Order::DCBA];
const STRINGS: [StringLayout; 4] = [
    StringLayout::HighLow,
    StringLayout::LowHigh,
    StringLayout::High,
    StringLayout::Low,
];
const FACTORS: [f64; 8] = [1.0, 0.1, 10.0, -1.0, 0.001, 1e300, -1e-300, 0.0];

fn byte(data: &[u8], i: usize) -> u8 {
    data.get(i).copied().unwrap_or(0)
}

fn word(data: &[u8], i: usize) -> u16 {
    u16::from_be_bytes([byte(data, i), byte(data, i + 1)])
}

/// A layout from 8 bytes; every combination, valid or not.
fn layout(b: &[u8]) -> Layout {
    let bit = byte(b, 3);
    Layout {
        table: TABLES[usize::from(byte(b, 0) & 3)],
        data_type: TYPES[usize::from(byte(b, 1)) % TYPES.len()],
        order: ORDERS[usize::from(byte(b, 2) & 3)],
        bit: (bit & 0x80 == 0).then_some(bit & 0x1f),
        length: word(b, 4),
        string_layout: STRINGS[usize::from(byte(b, 6) & 3)],
        address: word(b, 7),
    }
}

fn registers(bytes: &[u8]) -> Vec<u16> {
    bytes
        .chunks(2)
        .map(|c| u16::from_be_bytes([c[0], c.get(1).copied().unwrap_or(0)]))
        .collect()
}

/// Decoding `regs` with `l`; a value that decodes must be finite and, for a valid numeric
/// layout, survive encode → decode unchanged.
fn check_decode(l: &Layout, regs: &[u16]) {
    let Ok(v) = decode_registers(l, regs) else {
        return;
    };
    if let Value::Float(f) = v {
        assert!(f.is_finite(), "decoded a non-finite float {f} with {l:?}");
    }
    if l.data_type == DataType::String {
        return;
    }
    let current = regs.first().copied().unwrap_or(0);
    let encoded = match encode_registers(l, &v, current) {
        Ok(e) => e,
        Err(e) => panic!("decoded {v:?} with {l:?} but cannot encode it: {e}"),
    };
    assert_eq!(
        decode_registers(l, &encoded),
        Ok(v.clone()),
        "encode of {v:?} with {l:?} gave {encoded:?}"
    );
}

fn single(data: &[u8]) {
    let head = data.get(..16).unwrap_or(data);
    let rest = data.get(16..).unwrap_or_default();
    let l = layout(head);
    let regs = registers(rest);
    // Sliced as the poller slices a reply: at an offset, the layout's span, or whatever is left.
    let off = usize::from(byte(head, 9));
    let span = usize::from(l.span());
    let slice = regs
        .get(off..off.saturating_add(span))
        .or_else(|| regs.get(off.min(regs.len())..))
        .unwrap_or_default();
    check_decode(&l, slice);
    // And the whole reply, whatever its length.
    if let Ok(v) = decode_registers(&l, &regs) {
        let _ = scale(
            v,
            FACTORS[usize::from(byte(head, 10) & 7)],
            FACTORS[usize::from(byte(head, 11) & 7)],
        );
    }
    let _ = decode_bit(byte(head, 12) & 1 == 1);
    let _ = l.validate();
    let _ = l.end_inclusive();
}

fn planned(data: &[u8]) {
    let limits = PlanLimits {
        max_registers: u16::from(byte(data, 0) % 125) + 1,
        max_bits: (word(data, 1) % 2000) + 1,
        max_gap: u16::from(byte(data, 3)),
        forbidden: data
            .get(4..12)
            .unwrap_or_default()
            .chunks_exact(4)
            .filter(|f| f[0] & 0x80 != 0)
            .map(|f| {
                let (a, b) = (word(f, 1), u16::from(f[3]));
                Forbidden {
                    table: TABLES[usize::from(f[0] & 3)],
                    from: a,
                    to: a.saturating_add(b),
                }
            })
            .collect(),
    };
    if limits.validate().is_err() {
        return;
    }
    // Points as the configuration gives them: validated layouts only.
    let points: Vec<ModbusPoint> = data
        .get(12..)
        .unwrap_or_default()
        .chunks_exact(9)
        .take(64)
        .enumerate()
        .map(|(i, b)| {
            let mut l = layout(b);
            // Short strings, as a template allows (1..=125 registers).
            l.length = u16::from(b[5] % 126);
            ModbusPoint {
                name: format!("p{i}"),
                layout: l,
                scale: 1.0,
                offset: 0.0,
                unit: None,
            }
        })
        .filter(|p| p.layout.validate().is_ok())
        .collect();
    let requests = plan(&points, &limits, &Learned::default());
    let mut seen = vec![0u32; points.len()];
    for r in &requests {
        assert!(r.count >= 1, "empty request {r:?}");
        let max = if r.table.is_bits() {
            limits.max_bits
        } else {
            limits.max_registers
        };
        let max = max.min(r.table.max_per_request());
        // A point larger than the limit is read alone, whole.
        assert!(
            r.count <= max || r.points.len() == 1,
            "request {r:?} over the limit {max}"
        );
        // The reply to this request, as a device would send it.
        let reply: Vec<u16> = (0..r.count)
            .map(|k| word(data, usize::from(k) % data.len().max(1)))
            .collect();
        let bits: Vec<bool> = reply.iter().map(|w| w & 1 == 1).collect();
        for &i in &r.points {
            let p = &points[i];
            seen[i] += 1;
            assert_eq!(
                p.layout.table, r.table,
                "point {i} in a request of another table"
            );
            let end = p.layout.end_inclusive();
            assert!(
                p.layout.address >= r.start && end.is_some_and(|e| e <= r.end()),
                "point {i} {:?} not inside request {r:?}",
                p.layout
            );
            let off = usize::from(p.layout.address - r.start);
            if r.table.is_bits() {
                assert!(bits.get(off).is_some(), "bit {off} outside the reply");
            } else {
                let span = usize::from(p.layout.span());
                let Some(slice) = reply.get(off..off + span) else {
                    panic!("point {i} outside the reply of {r:?}");
                };
                check_decode(&p.layout, slice);
            }
        }
    }
    for (i, n) in seen.iter().enumerate() {
        assert_eq!(*n, 1, "point {i} {:?} in {n} requests", points[i].layout);
    }
}

fuzz_target!(|data: &[u8]| {
    single(data);
    planned(data);
});
