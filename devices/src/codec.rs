//! Modbus data types and byte orders: registers ⇄ values, without I/O.
//!
//! Invariants:
//! - decoding never panics, whatever the register contents or lengths;
//! - `encode` is the exact inverse of `decode` for every type and order (the simulator serves
//!   what the agent will read with the same code path reversed);
//! - integers stay exact (u64/i64) unless a scale or offset is configured;
//! - NaN and ±∞ floats are reported as `DecodeError::NotFinite` (meters use NaN as "not
//!   available"), never passed on as numbers.

use std::fmt;

use serde::{Deserialize, Serialize};

/// The four Modbus data tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Table {
    /// Read/write bits, function code 01.
    Coil,
    /// Read-only bits, function code 02.
    Discrete,
    /// Read/write 16-bit registers, function code 03 (documented as 4xxxx).
    Holding,
    /// Read-only 16-bit registers, function code 04 (documented as 3xxxx).
    Input,
}

impl Table {
    /// Bit tables are read in bits (≤ 2000 per request), register tables in registers (≤ 125).
    pub fn is_bits(self) -> bool {
        matches!(self, Table::Coil | Table::Discrete)
    }

    /// Protocol maximum of one read request, in bits or registers.
    pub fn max_per_request(self) -> u16 {
        if self.is_bits() { 2000 } else { 125 }
    }

    pub fn name(self) -> &'static str {
        match self {
            Table::Coil => "coil",
            Table::Discrete => "discrete",
            Table::Holding => "holding",
            Table::Input => "input",
        }
    }
}

impl fmt::Display for Table {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Table {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "coil" | "coils" => Ok(Table::Coil),
            "discrete" | "discrete_input" | "discrete_inputs" => Ok(Table::Discrete),
            "holding" | "holding_register" | "holding_registers" => Ok(Table::Holding),
            "input" | "input_register" | "input_registers" => Ok(Table::Input),
            other => Err(format!(
                "unknown table `{other}`: expected coil, discrete, holding or input"
            )),
        }
    }
}

/// Byte order of a multi-byte value, named by where bytes A (most significant) .. D land on the
/// wire. For 64-bit values the same pattern is applied to the four words:
/// - `ABCD`: big-endian words, high word first (Modbus default, Eastron, Schneider);
/// - `CDAB`: big-endian words, low word first ("word swap");
/// - `BADC`: bytes swapped inside each word, high word first ("byte swap");
/// - `DCBA`: fully little-endian.
///
/// 16-bit values: `ABCD`/`CDAB` read the register as is, `BADC`/`DCBA` swap its two bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Deserialize, Serialize)]
pub enum Order {
    #[default]
    ABCD,
    CDAB,
    BADC,
    DCBA,
}

impl Order {
    fn word_swap(self) -> bool {
        matches!(self, Order::CDAB | Order::DCBA)
    }
    fn byte_swap(self) -> bool {
        matches!(self, Order::BADC | Order::DCBA)
    }
}

impl std::str::FromStr for Order {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_uppercase().as_str() {
            "ABCD" => Ok(Order::ABCD),
            "CDAB" => Ok(Order::CDAB),
            "BADC" => Ok(Order::BADC),
            "DCBA" => Ok(Order::DCBA),
            _ => Err(format!(
                "unknown byte order `{s}`: expected ABCD, CDAB, BADC or DCBA"
            )),
        }
    }
}

impl fmt::Display for Order {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Order::ABCD => "ABCD",
            Order::CDAB => "CDAB",
            Order::BADC => "BADC",
            Order::DCBA => "DCBA",
        })
    }
}

/// How characters sit in the registers of a string.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StringLayout {
    /// Two characters per register, first character in the high byte (most devices).
    #[default]
    HighLow,
    /// Two characters per register, first character in the low byte.
    LowHigh,
    /// One character per register, in the high byte.
    High,
    /// One character per register, in the low byte.
    Low,
}

/// A point's data type. Bits in registers are `Bool` with a `bit` on the point.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DataType {
    Bool,
    U16,
    I16,
    U32,
    I32,
    U64,
    I64,
    F32,
    F64,
    String,
}

impl DataType {
    /// Registers one value occupies (strings: given by the point's `length`).
    pub fn registers(self) -> u16 {
        match self {
            DataType::Bool | DataType::U16 | DataType::I16 | DataType::String => 1,
            DataType::U32 | DataType::I32 | DataType::F32 => 2,
            DataType::U64 | DataType::I64 | DataType::F64 => 4,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            DataType::Bool => "bool",
            DataType::U16 => "u16",
            DataType::I16 => "i16",
            DataType::U32 => "u32",
            DataType::I32 => "i32",
            DataType::U64 => "u64",
            DataType::I64 => "i64",
            DataType::F32 => "f32",
            DataType::F64 => "f64",
            DataType::String => "string",
        }
    }
}

impl std::str::FromStr for DataType {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s.to_ascii_lowercase().as_str() {
            "bool" | "bit" => DataType::Bool,
            "u16" | "uint16" => DataType::U16,
            "i16" | "int16" => DataType::I16,
            "u32" | "uint32" => DataType::U32,
            "i32" | "int32" => DataType::I32,
            "u64" | "uint64" => DataType::U64,
            "i64" | "int64" => DataType::I64,
            "f32" | "float32" | "float" => DataType::F32,
            "f64" | "float64" | "double" => DataType::F64,
            "string" | "str" => DataType::String,
            other => {
                return Err(format!(
                    "unknown type `{other}`: expected bool, u16, i16, u32, i32, u64, i64, f32, f64 or string"
                ));
            }
        })
    }
}

/// A decoded value. Integers stay integers until a scale or offset makes them real numbers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Value {
    Bool(bool),
    Int(i64),
    UInt(u64),
    Float(f64),
    Text(String),
}

impl Value {
    /// The value as a real number (bool as 0/1); `None` for text.
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            Value::Bool(b) => Some(if b { 1.0 } else { 0.0 }),
            Value::Int(i) => Some(i as f64),
            Value::UInt(u) => Some(u as f64),
            Value::Float(f) => Some(f),
            Value::Text(_) => None,
        }
    }

    /// The value as an exact integer where it is one (floats only when integral).
    pub fn as_i64(&self) -> Option<i64> {
        match *self {
            Value::Bool(b) => Some(i64::from(b)),
            Value::Int(i) => Some(i),
            Value::UInt(u) => i64::try_from(u).ok(),
            Value::Float(f) if f.fract() == 0.0 && f.abs() < 9.0e15 => Some(f as i64),
            _ => None,
        }
    }

    pub fn as_bool(&self) -> Option<bool> {
        match *self {
            Value::Bool(b) => Some(b),
            Value::Int(i) => Some(i != 0),
            Value::UInt(u) => Some(u != 0),
            Value::Float(f) => Some(f != 0.0),
            Value::Text(_) => None,
        }
    }
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Bool(b) => write!(f, "{b}"),
            Value::Int(i) => write!(f, "{i}"),
            Value::UInt(u) => write!(f, "{u}"),
            Value::Float(x) => write!(f, "{x}"),
            Value::Text(s) => write!(f, "{s:?}"),
        }
    }
}

/// How to read one value out of a table: the part of a point that decoding needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Layout {
    pub table: Table,
    /// Wire address (0-based) of the first register or bit.
    pub address: u16,
    pub data_type: DataType,
    pub order: Order,
    /// Bit 0..=15 inside a register, for `Bool` points in register tables.
    pub bit: Option<u8>,
    /// Registers of a string.
    pub length: u16,
    pub string_layout: StringLayout,
}

impl Layout {
    /// Registers (or bits) this value spans on the wire.
    pub fn span(&self) -> u16 {
        if self.table.is_bits() {
            1
        } else if self.data_type == DataType::String {
            self.length.max(1)
        } else {
            self.data_type.registers()
        }
    }

    /// Last address covered, or `None` when the value would run past register 65535.
    pub fn end_inclusive(&self) -> Option<u16> {
        self.address.checked_add(self.span() - 1)
    }

    /// Checks that the combination is meaningful; the message names what is wrong.
    pub fn validate(&self) -> Result<(), String> {
        if self.table.is_bits() {
            if self.data_type != DataType::Bool {
                return Err(format!(
                    "a {} holds single bits: its type must be bool, not {}",
                    self.table,
                    self.data_type.name()
                ));
            }
            if self.bit.is_some() {
                return Err(format!(
                    "`bit` applies to registers, not to a {}",
                    self.table
                ));
            }
        } else {
            match (self.data_type, self.bit) {
                (DataType::Bool, None) => {
                    return Err("a bool in a register needs `bit` (0..=15)".into());
                }
                (DataType::Bool, Some(b)) if b > 15 => {
                    return Err(format!("bit {b} is out of range 0..=15"));
                }
                (DataType::Bool, Some(_)) => {}
                (t, Some(_)) => {
                    return Err(format!("`bit` only applies to bool, not to {}", t.name()));
                }
                _ => {}
            }
            if self.data_type == DataType::String && !(1..=125).contains(&self.length) {
                return Err(format!(
                    "a string needs `length` in registers, 1..=125 (got {})",
                    self.length
                ));
            }
        }
        if self.end_inclusive().is_none() {
            return Err(format!(
                "address {} with {} registers runs past 65535",
                self.address,
                self.span()
            ));
        }
        Ok(())
    }
}

/// Why registers could not become a value.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DecodeError {
    #[error("expected {expected} registers or bits, got {got}")]
    Length { expected: usize, got: usize },
    #[error("the device reports a non-finite float ({0}): value not available")]
    NotFinite(f64),
    #[error("{0}")]
    Layout(String),
}

/// Reorders the register words of a multi-register value into big-endian bytes (A first).
fn to_be_bytes(regs: &[u16], order: Order) -> Vec<u8> {
    let mut words: Vec<u16> = regs.to_vec();
    if order.word_swap() {
        words.reverse();
    }
    let mut out = Vec::with_capacity(words.len() * 2);
    for w in words {
        let w = if order.byte_swap() { w.swap_bytes() } else { w };
        out.extend_from_slice(&w.to_be_bytes());
    }
    out
}

/// Inverse of [`to_be_bytes`].
fn from_be_bytes(bytes: &[u8], order: Order) -> Vec<u16> {
    let mut words: Vec<u16> = bytes
        .chunks(2)
        .map(|c| {
            let w = u16::from_be_bytes([c[0], c.get(1).copied().unwrap_or(0)]);
            if order.byte_swap() { w.swap_bytes() } else { w }
        })
        .collect();
    if order.word_swap() {
        words.reverse();
    }
    words
}

fn array<const N: usize>(bytes: &[u8]) -> [u8; N] {
    let mut a = [0u8; N];
    for (d, s) in a.iter_mut().zip(bytes) {
        *d = *s;
    }
    a
}

/// Decodes the raw value (before scale and offset) from the registers that start at
/// `layout.address`; `regs` must hold exactly `layout.span()` registers.
pub fn decode_registers(layout: &Layout, regs: &[u16]) -> Result<Value, DecodeError> {
    layout.validate().map_err(DecodeError::Layout)?;
    let need = usize::from(layout.span());
    if regs.len() != need {
        return Err(DecodeError::Length {
            expected: need,
            got: regs.len(),
        });
    }
    let o = layout.order;
    Ok(match layout.data_type {
        DataType::Bool => {
            let bit = layout.bit.unwrap_or(0);
            Value::Bool(regs[0] >> bit & 1 == 1)
        }
        DataType::U16 => Value::UInt(u64::from(u16::from_be_bytes(array(&to_be_bytes(regs, o))))),
        DataType::I16 => Value::Int(i64::from(i16::from_be_bytes(array(&to_be_bytes(regs, o))))),
        DataType::U32 => Value::UInt(u64::from(u32::from_be_bytes(array(&to_be_bytes(regs, o))))),
        DataType::I32 => Value::Int(i64::from(i32::from_be_bytes(array(&to_be_bytes(regs, o))))),
        DataType::U64 => Value::UInt(u64::from_be_bytes(array(&to_be_bytes(regs, o)))),
        DataType::I64 => Value::Int(i64::from_be_bytes(array(&to_be_bytes(regs, o)))),
        DataType::F32 => {
            let f = f32::from_be_bytes(array(&to_be_bytes(regs, o)));
            if !f.is_finite() {
                return Err(DecodeError::NotFinite(f64::from(f)));
            }
            Value::Float(f64::from(f))
        }
        DataType::F64 => {
            let f = f64::from_be_bytes(array(&to_be_bytes(regs, o)));
            if !f.is_finite() {
                return Err(DecodeError::NotFinite(f));
            }
            Value::Float(f)
        }
        DataType::String => {
            let mut bytes = Vec::with_capacity(regs.len() * 2);
            for &r in regs {
                let [hi, lo] = r.to_be_bytes();
                match layout.string_layout {
                    StringLayout::HighLow => bytes.extend_from_slice(&[hi, lo]),
                    StringLayout::LowHigh => bytes.extend_from_slice(&[lo, hi]),
                    StringLayout::High => bytes.push(hi),
                    StringLayout::Low => bytes.push(lo),
                }
            }
            // Devices pad with NUL or spaces; a NUL ends the string.
            let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
            let text = String::from_utf8_lossy(&bytes[..end]).trim_end().to_owned();
            Value::Text(text)
        }
    })
}

/// Decodes a bit from a coil or discrete input.
pub fn decode_bit(bit: bool) -> Value {
    Value::Bool(bit)
}

/// Applies `raw × scale + offset`. Exact integers stay integers when scale is 1 and offset 0.
pub fn scale(value: Value, scale: f64, offset: f64) -> Value {
    if scale == 1.0 && offset == 0.0 {
        return value;
    }
    match value.as_f64() {
        Some(x) if !matches!(value, Value::Bool(_)) => Value::Float(x * scale + offset),
        _ => value,
    }
}

/// Why a value could not become registers (simulator side).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum EncodeError {
    #[error("value {value} does not fit {data_type}")]
    Range {
        value: String,
        data_type: &'static str,
    },
    #[error("{0}")]
    Layout(String),
}

/// Encodes a raw value into the registers of `layout` (the inverse of [`decode_registers`]).
/// A `Bool` with a `bit` sets or clears that bit of `current` (the register's other bits).
pub fn encode_registers(
    layout: &Layout,
    value: &Value,
    current: u16,
) -> Result<Vec<u16>, EncodeError> {
    layout.validate().map_err(EncodeError::Layout)?;
    let o = layout.order;
    let range = || EncodeError::Range {
        value: value.to_string(),
        data_type: layout.data_type.name(),
    };
    let int = || -> Result<i128, EncodeError> {
        match *value {
            Value::Int(i) => Ok(i128::from(i)),
            Value::UInt(u) => Ok(i128::from(u)),
            Value::Bool(b) => Ok(i128::from(b)),
            Value::Float(f) if f.fract() == 0.0 && f.is_finite() && f.abs() < 1.8e19 => {
                Ok(f as i128)
            }
            _ => Err(range()),
        }
    };
    let float = || value.as_f64().ok_or_else(range);
    Ok(match layout.data_type {
        DataType::Bool => {
            let bit = layout.bit.unwrap_or(0);
            let on = value.as_bool().ok_or_else(range)?;
            vec![if on {
                current | 1 << bit
            } else {
                current & !(1 << bit)
            }]
        }
        DataType::U16 => from_be_bytes(
            &u16::try_from(int()?).map_err(|_| range())?.to_be_bytes(),
            o,
        ),
        DataType::I16 => from_be_bytes(
            &i16::try_from(int()?).map_err(|_| range())?.to_be_bytes(),
            o,
        ),
        DataType::U32 => from_be_bytes(
            &u32::try_from(int()?).map_err(|_| range())?.to_be_bytes(),
            o,
        ),
        DataType::I32 => from_be_bytes(
            &i32::try_from(int()?).map_err(|_| range())?.to_be_bytes(),
            o,
        ),
        DataType::U64 => from_be_bytes(
            &u64::try_from(int()?).map_err(|_| range())?.to_be_bytes(),
            o,
        ),
        DataType::I64 => from_be_bytes(
            &i64::try_from(int()?).map_err(|_| range())?.to_be_bytes(),
            o,
        ),
        DataType::F32 => from_be_bytes(&(float()? as f32).to_be_bytes(), o),
        DataType::F64 => from_be_bytes(&float()?.to_be_bytes(), o),
        DataType::String => {
            let Value::Text(s) = value else {
                return Err(range());
            };
            let n = usize::from(layout.length);
            let per = match layout.string_layout {
                StringLayout::HighLow | StringLayout::LowHigh => 2,
                StringLayout::High | StringLayout::Low => 1,
            };
            let bytes = s.as_bytes();
            if bytes.len() > n * per {
                return Err(range());
            }
            let mut regs = vec![0u16; n];
            for (i, r) in regs.iter_mut().enumerate() {
                let b = |k: usize| bytes.get(k).copied().unwrap_or(0);
                *r = match layout.string_layout {
                    StringLayout::HighLow => u16::from_be_bytes([b(2 * i), b(2 * i + 1)]),
                    StringLayout::LowHigh => u16::from_be_bytes([b(2 * i + 1), b(2 * i)]),
                    StringLayout::High => u16::from_be_bytes([b(i), 0]),
                    StringLayout::Low => u16::from_be_bytes([0, b(i)]),
                };
            }
            regs
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout(t: DataType, o: Order) -> Layout {
        Layout {
            table: Table::Holding,
            address: 0,
            data_type: t,
            order: o,
            bit: None,
            length: 1,
            string_layout: StringLayout::HighLow,
        }
    }

    #[test]
    fn f32_in_every_order() {
        // 42.5f32 = 0x422A0000: A=42 B=2A C=00 D=00.
        let cases = [
            (Order::ABCD, [0x422A, 0x0000]),
            (Order::CDAB, [0x0000, 0x422A]),
            (Order::BADC, [0x2A42, 0x0000]),
            (Order::DCBA, [0x0000, 0x2A42]),
        ];
        for (o, regs) in cases {
            assert_eq!(
                decode_registers(&layout(DataType::F32, o), &regs),
                Ok(Value::Float(42.5)),
                "{o}"
            );
        }
    }

    #[test]
    fn i64_schneider_energy_register() {
        // 0x0000_0001_0000_0002 Wh big-endian, high word first.
        let l = layout(DataType::I64, Order::ABCD);
        assert_eq!(
            decode_registers(&l, &[0, 1, 0, 2]),
            Ok(Value::Int(4_294_967_298))
        );
        let l = layout(DataType::I64, Order::DCBA);
        assert_eq!(
            decode_registers(&l, &[0x0200, 0, 0x0100, 0]),
            Ok(Value::Int(4_294_967_298))
        );
    }

    #[test]
    fn nan_is_not_a_value() {
        let l = layout(DataType::F32, Order::ABCD);
        assert!(matches!(
            decode_registers(&l, &[0xFFC0, 0]),
            Err(DecodeError::NotFinite(_))
        ));
    }

    #[test]
    fn wrong_length_is_an_error_not_a_panic() {
        let l = layout(DataType::U64, Order::ABCD);
        assert_eq!(
            decode_registers(&l, &[1, 2]),
            Err(DecodeError::Length {
                expected: 4,
                got: 2
            })
        );
    }

    #[test]
    fn bits_and_strings() {
        let mut l = layout(DataType::Bool, Order::ABCD);
        l.bit = Some(15);
        assert_eq!(decode_registers(&l, &[0x8000]), Ok(Value::Bool(true)));
        assert_eq!(
            encode_registers(&l, &Value::Bool(false), 0x8001),
            Ok(vec![0x0001])
        );
        let mut s = layout(DataType::String, Order::ABCD);
        s.length = 3;
        assert_eq!(
            decode_registers(&s, &[0x4142, 0x4300, 0x4444]),
            Ok(Value::Text("ABC".into()))
        );
        s.string_layout = StringLayout::Low;
        assert_eq!(
            decode_registers(&s, &[0x0041, 0x0042, 0x0020]),
            Ok(Value::Text("AB".into()))
        );
    }

    #[test]
    fn scale_keeps_exact_integers_when_not_scaled() {
        assert_eq!(
            scale(Value::UInt(u64::MAX), 1.0, 0.0),
            Value::UInt(u64::MAX)
        );
        assert_eq!(
            scale(Value::Int(123), 0.1, 1.0),
            Value::Float(123.0 * 0.1 + 1.0)
        );
    }

    #[test]
    fn layout_errors_name_the_problem() {
        let mut l = layout(DataType::U32, Order::ABCD);
        l.address = 65535;
        assert!(l.validate().unwrap_err().contains("runs past 65535"));
        let mut c = layout(DataType::U16, Order::ABCD);
        c.table = Table::Coil;
        assert!(c.validate().unwrap_err().contains("must be bool"));
    }
}
