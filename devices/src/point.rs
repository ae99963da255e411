//! Resolved acquisition points: what a driver reads, after template, address and overrides
//! have been merged (see `template`). Drivers and the simulator work on these only.

use serde::{Deserialize, Serialize};

use crate::codec::{Layout, Table};

/// One Modbus point of a device.
#[derive(Debug, Clone, PartialEq)]
pub struct ModbusPoint {
    /// Point name, unique within the device (`energy_import_kwh`, `run`, ...).
    pub name: String,
    pub layout: Layout,
    /// Engineering value = raw × scale + offset.
    pub scale: f64,
    pub offset: f64,
    /// Engineering unit after scaling (`kWh`, `m3`, ...), if any.
    pub unit: Option<String>,
}

/// A forbidden address range of one table, inclusive on both ends: never read, not even as a
/// gap filler inside a coalesced request (some devices fault or answer garbage there).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Forbidden {
    pub table: Table,
    pub from: u16,
    pub to: u16,
}

/// Limits of the read planner for one device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlanLimits {
    /// Registers per request, 1..=125.
    pub max_registers: u16,
    /// Bits per request, 1..=2000.
    pub max_bits: u16,
    /// Largest hole (in registers or bits) read through to join two points into one request.
    pub max_gap: u16,
    pub forbidden: Vec<Forbidden>,
}

impl Default for PlanLimits {
    fn default() -> Self {
        PlanLimits {
            max_registers: 125,
            max_bits: 2000,
            max_gap: 8,
            forbidden: Vec::new(),
        }
    }
}

impl PlanLimits {
    pub fn validate(&self) -> Result<(), String> {
        if !(1..=125).contains(&self.max_registers) {
            return Err(format!(
                "max_registers must be 1..=125 (got {})",
                self.max_registers
            ));
        }
        if !(1..=2000).contains(&self.max_bits) {
            return Err(format!("max_bits must be 1..=2000 (got {})", self.max_bits));
        }
        for f in &self.forbidden {
            if f.from > f.to {
                return Err(format!(
                    "forbidden range {}..{} of {} is empty: from > to",
                    f.from, f.to, f.table
                ));
            }
        }
        Ok(())
    }
}

/// OPC UA deadband of a monitored item.
#[derive(Debug, Clone, Copy, PartialEq, Default, Deserialize, Serialize)]
#[serde(rename_all = "snake_case", tag = "kind", content = "value")]
pub enum Deadband {
    #[default]
    None,
    /// Report when |new − last| > value (engineering units).
    Absolute(f64),
    /// Report when |new − last| > value % of the EURange (the server needs an EURange).
    Percent(f64),
}

/// Where an OPC UA point lives in the server's address space.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum NodeRef {
    /// A node id in OPC UA text form: `ns=2;s=Machine.Run`, `i=2258`, or with a namespace
    /// URI instead of an index, `nsu=http://opcfoundation.org/UA/Machinery/;i=1002`
    /// (the URI is resolved against the server's namespace array on every connect).
    Node(String),
    /// A browse path relative to the device's root node, segments separated by `/`; each
    /// segment is `Name` (in the device's default namespace) or `<uri>#Name`.
    Path(String),
}

/// One OPC UA point of a device.
#[derive(Debug, Clone, PartialEq)]
pub struct OpcuaPoint {
    pub name: String,
    pub node: NodeRef,
    /// Requested sampling interval, ms (the server may revise it).
    pub sampling_ms: f64,
    pub queue_size: u32,
    pub deadband: Deadband,
    pub scale: f64,
    pub offset: f64,
    pub unit: Option<String>,
}

/// The base OPC UA namespace, always index 0.
pub const UA_NAMESPACE: &str = "http://opcfoundation.org/UA/";

/// One segment of a browse path: namespace URI (`None`: the base namespace) and name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Segment {
    pub uri: Option<String>,
    pub name: String,
}

/// Splits `A/B/C` into segments. A segment is `Name` (in `default_ns`, or the base namespace
/// when there is none) or `<uri>#Name`. URIs contain `/` themselves, so a segment that starts
/// with a URI scheme (`http:`, `urn:`, …) runs to its `#` before the next `/` is looked for;
/// the URI may also be written in angle brackets, `<http://…/>#Name`.
pub fn parse_path(path: &str, default_ns: Option<&str>) -> Result<Vec<Segment>, String> {
    let mut out = Vec::new();
    let mut rest = path.trim().trim_start_matches('/');
    while !rest.is_empty() {
        let (uri, after_uri) = if let Some(r) = rest.strip_prefix('<') {
            let end = r.find(">#").ok_or_else(|| {
                format!("browse path `{path}`: `<uri>` must be followed by `#Name`")
            })?;
            (Some(r[..end].to_string()), &r[end + 2..])
        } else if starts_with_scheme(rest) && rest.contains('#') {
            let hash = rest.find('#').unwrap_or(0);
            (Some(rest[..hash].to_string()), &rest[hash + 1..])
        } else {
            (None, rest)
        };
        let end = after_uri.find('/').unwrap_or(after_uri.len());
        let name = after_uri[..end].trim();
        if name.is_empty() {
            return Err(format!("browse path `{path}`: empty segment"));
        }
        let uri = match uri {
            Some(u) if u.is_empty() => {
                return Err(format!(
                    "browse path `{path}`: empty namespace URI before `#{name}`"
                ));
            }
            Some(u) => Some(u),
            None => default_ns.map(str::to_string),
        };
        let uri = uri.filter(|u| u != UA_NAMESPACE);
        out.push(Segment {
            uri,
            name: name.to_string(),
        });
        rest = after_uri[end..].trim_start_matches('/');
    }
    if out.is_empty() {
        return Err(format!("browse path `{path}` is empty"));
    }
    Ok(out)
}

/// `scheme:` at the start, as in RFC 3986 (letters, digits, `+ - .`, starting with a letter).
fn starts_with_scheme(s: &str) -> bool {
    let Some(colon) = s.find(':') else {
        return false;
    };
    let scheme = &s[..colon];
    scheme.len() > 1
        && scheme
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic())
        && scheme
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
}
