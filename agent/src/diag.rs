//! Diagnostics for plant engineers: `probe modbus` and `browse opcua`. Readable output on
//! stdout; exit 2 on bad arguments, 1 when the device cannot be read.

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Subcommand};

use shopfloor_acquire::modbus::probe::{ProbeRequest, probe as modbus_probe, span};
use shopfloor_acquire::modbus::{Parity, SerialSettings, Transport};
use shopfloor_devices::{DataType, Order, Table};

#[derive(Debug, Subcommand)]
pub enum ProbeProtocol {
    /// Modbus TCP (`--host`) or RTU (`--serial`).
    Modbus(ModbusArgs),
}

#[derive(Debug, Subcommand)]
pub enum BrowseProtocol {
    /// OPC UA (security None, anonymous login).
    Opcua(OpcuaArgs),
}

#[derive(Debug, Args)]
pub struct ModbusArgs {
    /// Device or gateway host (Modbus TCP).
    #[arg(long, required_unless_present = "serial", conflicts_with = "serial")]
    host: Option<String>,
    #[arg(long, default_value_t = 502)]
    port: u16,
    /// Serial device (Modbus RTU), e.g. /dev/ttyUSB0 or COM3.
    #[arg(long)]
    serial: Option<String>,
    #[arg(long, default_value_t = 9600)]
    baud: u32,
    /// none, even or odd.
    #[arg(long, default_value = "none", value_parser = parse_parity)]
    parity: Parity,
    /// Unit id (slave address), 0..=247.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u8).range(0..=247))]
    unit: u8,
    /// holding, input, coil or discrete.
    #[arg(long, value_parser = parse_table)]
    kind: Table,
    /// Wire address (0-based), decimal or 0x hex.
    #[arg(long, value_parser = parse_address)]
    address: u16,
    /// Number of values (for string: registers of the string).
    #[arg(long, default_value_t = 1)]
    count: u16,
    /// bool, u16, i16, u32, i32, u64, i64, f32, f64 or string.
    #[arg(long = "type", default_value = "u16", value_parser = parse_type)]
    data_type: DataType,
    /// ABCD, CDAB, BADC or DCBA.
    #[arg(long, default_value = "ABCD", value_parser = parse_order)]
    order: Order,
    /// Reply timeout, ms.
    #[arg(long, default_value_t = 1000)]
    timeout_ms: u64,
}

#[derive(Debug, Args)]
pub struct OpcuaArgs {
    /// Endpoint URL, e.g. opc.tcp://10.0.0.5:4840/
    #[arg(long)]
    endpoint: String,
    /// Start node (default: the Objects folder), e.g. ns=2;s=Machine1 or i=85.
    #[arg(long)]
    node: Option<String>,
    /// Levels below the start node.
    #[arg(long, default_value_t = 3)]
    depth: usize,
    /// Where the client keeps its certificate (default: shopfloor-agent-pki in the temp dir).
    #[arg(long)]
    pki_dir: Option<PathBuf>,
}

fn parse_address(s: &str) -> Result<u16, String> {
    let t = s.trim();
    let parsed = match t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")) {
        Some(hex) => u16::from_str_radix(hex, 16),
        None => t.parse::<u16>(),
    };
    parsed.map_err(|_| format!("`{s}` is not an address 0..=65535 (decimal, or hex with 0x)"))
}

fn parse_table(s: &str) -> Result<Table, String> {
    s.parse()
}
fn parse_type(s: &str) -> Result<DataType, String> {
    s.parse()
}
fn parse_order(s: &str) -> Result<Order, String> {
    s.parse()
}
fn parse_parity(s: &str) -> Result<Parity, String> {
    match s.to_ascii_lowercase().as_str() {
        "none" | "n" => Ok(Parity::None),
        "even" | "e" => Ok(Parity::Even),
        "odd" | "o" => Ok(Parity::Odd),
        _ => Err(format!("`{s}`: parity is none, even or odd")),
    }
}

fn runtime() -> Result<tokio::runtime::Runtime, ExitCode> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| {
            eprintln!("error: cannot start the runtime: {e}");
            ExitCode::from(1)
        })
}

pub fn probe(p: ProbeProtocol) -> ExitCode {
    let ProbeProtocol::Modbus(a) = p;
    let transport = match (&a.host, &a.serial) {
        (Some(host), _) => match resolve(host, a.port) {
            Ok(addr) => Transport::Tcp { addr },
            Err(e) => {
                eprintln!("error: --host: {e}");
                return ExitCode::from(2);
            }
        },
        (None, Some(path)) => Transport::Rtu(SerialSettings {
            baud: a.baud,
            parity: a.parity,
            ..SerialSettings::new(path)
        }),
        (None, None) => {
            eprintln!("error: give --host (Modbus TCP) or --serial (Modbus RTU)");
            return ExitCode::from(2);
        }
    };
    let req = ProbeRequest {
        transport,
        unit: a.unit,
        table: a.kind,
        address: a.address,
        count: a.count,
        data_type: a.data_type,
        order: a.order,
        timeout: Duration::from_millis(a.timeout_ms.max(1)),
    };
    let n = match span(&req) {
        Ok(n) => n,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let rt = match runtime() {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    println!(
        "modbus {} unit {} · {} {} (0x{:04X}) × {} {} · {} {}",
        req.transport,
        req.unit,
        req.table,
        req.address,
        req.address,
        n,
        if req.table.is_bits() {
            "bits"
        } else {
            "registers"
        },
        req.data_type.name(),
        req.order
    );
    match rt.block_on(modbus_probe(&req)) {
        Ok(values) => {
            println!("{:<8} {:<8} {:<22} value", "address", "hex", "raw");
            for v in values {
                let value = match v.value {
                    Ok(x) => x.to_string(),
                    Err(e) => format!("(cannot decode: {e})"),
                };
                println!(
                    "{:<8} 0x{:04X}   {:<22} {value}",
                    v.address, v.address, v.raw
                );
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(1)
        }
    }
}

fn resolve(host: &str, port: u16) -> Result<SocketAddr, String> {
    (host, port)
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve `{host}`: {e}"))?
        .next()
        .ok_or_else(|| format!("`{host}` has no address"))
}

pub fn browse(p: BrowseProtocol) -> ExitCode {
    let BrowseProtocol::Opcua(a) = p;
    if !a.endpoint.starts_with("opc.tcp://") {
        eprintln!(
            "error: --endpoint: `{}` is not an opc.tcp:// URL",
            a.endpoint
        );
        return ExitCode::from(2);
    }
    let rt = match runtime() {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    // A stable default, so the client presents the same certificate every time and a server
    // administrator has to trust it only once.
    let pki = a
        .pki_dir
        .unwrap_or_else(|| std::env::temp_dir().join("shopfloor-agent-pki"));
    let cfg = shopfloor_acquire::opcua::OpcuaConfig::new(a.endpoint.clone(), pki);
    let result = rt.block_on(shopfloor_acquire::opcua::browse(
        &cfg,
        a.node.as_deref(),
        a.depth,
    ));
    match result {
        Ok(entries) => {
            println!(
                "opcua {} · from {} · depth {}",
                a.endpoint,
                a.node.as_deref().unwrap_or("Objects (i=85)"),
                a.depth
            );
            for e in entries {
                let indent = "  ".repeat(e.depth);
                let value = e.value.map(|v| format!(" = {v}")).unwrap_or_default();
                println!(
                    "{indent}{} [{}] {}{value}",
                    e.browse_name, e.node_class, e.node_id
                );
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(1)
        }
    }
}
