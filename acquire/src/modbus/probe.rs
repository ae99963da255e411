//! One-shot diagnostic read for plant engineers (`shopfloor-agent probe modbus`).

use std::time::Duration;

use shopfloor_devices::codec::{self, DataType, Layout, Order, StringLayout, Table, Value};

use super::link::{Data, Link, ReadError, Transport};

/// What to read.
#[derive(Debug, Clone)]
pub struct ProbeRequest {
    pub transport: Transport,
    pub unit: u8,
    pub table: Table,
    /// Wire address (0-based).
    pub address: u16,
    /// Number of values (for `string`: registers of the one string).
    pub count: u16,
    pub data_type: DataType,
    pub order: Order,
    pub timeout: Duration,
}

/// One decoded value with the raw words it came from.
#[derive(Debug, Clone, PartialEq)]
pub struct ProbeValue {
    pub address: u16,
    /// Raw registers (hex) or bit.
    pub raw: String,
    pub value: Result<Value, String>,
}

/// Registers (or bits) the request spans, or why it cannot be made.
pub fn span(req: &ProbeRequest) -> Result<u16, String> {
    if req.count == 0 {
        return Err("--count must be at least 1".into());
    }
    if req.table.is_bits() {
        if req.data_type != DataType::Bool {
            return Err(format!(
                "--type must be bool for a {} (got {})",
                req.table,
                req.data_type.name()
            ));
        }
        if req.count > 2000 {
            return Err("--count is at most 2000 bits".into());
        }
        return Ok(req.count);
    }
    let total = match req.data_type {
        DataType::String => u32::from(req.count),
        DataType::Bool => u32::from(req.count),
        t => u32::from(req.count) * u32::from(t.registers()),
    };
    if total > 125 {
        return Err(format!(
            "{total} registers asked: a Modbus read is at most 125 registers"
        ));
    }
    if u32::from(req.address) + total > 65_536 {
        return Err(format!(
            "address {} + {total} registers runs past 65535",
            req.address
        ));
    }
    u16::try_from(total).map_err(|e| e.to_string())
}

/// Reads and decodes.
pub async fn probe(req: &ProbeRequest) -> Result<Vec<ProbeValue>, ReadError> {
    let n = span(req).map_err(ReadError::Link)?;
    let mut link = Link::new(
        req.transport.clone(),
        req.timeout,
        req.timeout.max(Duration::from_secs(3)),
        Duration::ZERO,
    );
    let data = link.read(req.unit, req.table, req.address, n).await?;
    Ok(decode_all(req, &data))
}

/// Decodes what `probe` read (split out for tests).
pub fn decode_all(req: &ProbeRequest, data: &Data) -> Vec<ProbeValue> {
    match data {
        Data::Bits(bits) => bits
            .iter()
            .enumerate()
            .map(|(i, &b)| ProbeValue {
                address: req.address.wrapping_add(u16::try_from(i).unwrap_or(0)),
                raw: u8::from(b).to_string(),
                value: Ok(codec::decode_bit(b)),
            })
            .collect(),
        Data::Registers(regs) => {
            let (step, length) = match req.data_type {
                DataType::String => (regs.len(), u16::try_from(regs.len()).unwrap_or(125)),
                DataType::Bool => (1, 1),
                t => (usize::from(t.registers()), 1),
            };
            let mut out = Vec::new();
            for (k, chunk) in regs.chunks(step.max(1)).enumerate() {
                let address = req
                    .address
                    .wrapping_add(u16::try_from(k * step).unwrap_or(0));
                let raw = chunk
                    .iter()
                    .map(|r| format!("{r:04X}"))
                    .collect::<Vec<_>>()
                    .join(" ");
                if req.data_type == DataType::Bool {
                    // Every bit of the register, bit 0 first.
                    let bits: String = (0..16)
                        .map(|b| if chunk[0] >> b & 1 == 1 { '1' } else { '0' })
                        .collect();
                    out.push(ProbeValue {
                        address,
                        raw,
                        value: Ok(Value::Text(format!("bits 0..15: {bits}"))),
                    });
                    continue;
                }
                let layout = Layout {
                    table: req.table,
                    address,
                    data_type: req.data_type,
                    order: req.order,
                    bit: None,
                    length,
                    string_layout: StringLayout::HighLow,
                };
                out.push(ProbeValue {
                    address,
                    raw,
                    value: codec::decode_registers(&layout, chunk).map_err(|e| e.to_string()),
                });
            }
            out
        }
    }
}
