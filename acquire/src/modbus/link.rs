//! One Modbus link (a TCP connection or a serial line) and the rules that keep it healthy:
//! every call under a timeout; after any timeout, transport, framing or protocol error the
//! connection is dropped, so a late reply can never be taken for the answer to a later request
//! (tokio-modbus matches replies to requests by order only on RTU, and on TCP rejects every
//! later reply once one is late: slowtec/tokio-modbus#324); frames on a shared line are spaced
//! by the inter-frame pause.
//!
//! tokio-modbus's `Reader` helpers `debug_assert!` the reply length, so a device answering
//! the wrong number of registers would panic a debug build: we call `Client::call` and check
//! lengths ourselves.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::time::Instant;
use tokio_modbus::ExceptionCode;
use tokio_modbus::client::{Client, Context};
use tokio_modbus::prelude::{Request, Response, Slave, SlaveContext};

use shopfloor_devices::Table;

/// How to reach the devices of one link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transport {
    /// Modbus TCP to one endpoint (a device or a gateway with several unit ids behind it).
    Tcp { addr: SocketAddr },
    /// Modbus RTU on a serial line.
    Rtu(SerialSettings),
}

impl std::fmt::Display for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Transport::Tcp { addr } => write!(f, "tcp://{addr}"),
            Transport::Rtu(s) => write!(f, "rtu://{}@{}", s.path, s.baud),
        }
    }
}

/// Serial line settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SerialSettings {
    pub path: String,
    pub baud: u32,
    pub parity: Parity,
    pub data_bits: u8,
    pub stop_bits: u8,
}

impl SerialSettings {
    /// 9600 8N1, the most common factory default.
    pub fn new(path: impl Into<String>) -> Self {
        SerialSettings {
            path: path.into(),
            baud: 9600,
            parity: Parity::None,
            data_bits: 8,
            stop_bits: 1,
        }
    }

    /// The Modbus RTU minimum silent interval between frames: 3.5 character times, and a
    /// fixed 1.75 ms above 19200 baud (Modbus over Serial Line V1.02, §2.5.1.1).
    pub fn inter_frame_min(&self) -> Duration {
        if self.baud > 19_200 {
            return Duration::from_micros(1750);
        }
        let bits_per_char = 1
            + u64::from(self.data_bits)
            + u64::from(self.stop_bits)
            + u64::from(self.parity != Parity::None);
        Duration::from_micros(bits_per_char * 3_500_000 / u64::from(self.baud.max(1)))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Parity {
    None,
    Even,
    Odd,
}

/// Data read by one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Data {
    Bits(Vec<bool>),
    Registers(Vec<u16>),
}

/// Why a read gave no data.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReadError {
    /// The device answered with an exception: the link is fine.
    #[error("device exception {0}")]
    Exception(ExceptionKind),
    #[error("no reply within {0:?}")]
    Timeout(Duration),
    #[error("cannot connect: {0}")]
    Connect(String),
    /// Transport error, framing error, mismatching header or function, wrong length.
    #[error("{0}")]
    Link(String),
}

/// Modbus exception codes we distinguish (02 drives the planner's learning).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExceptionKind {
    IllegalAddress,
    Other(u8),
}

impl std::fmt::Display for ExceptionKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ExceptionKind::IllegalAddress => f.write_str("02 (illegal data address)"),
            ExceptionKind::Other(c) => write!(f, "{c:02X}"),
        }
    }
}

impl From<ExceptionCode> for ExceptionKind {
    fn from(e: ExceptionCode) -> Self {
        match e {
            ExceptionCode::IllegalDataAddress => ExceptionKind::IllegalAddress,
            other => ExceptionKind::Other(u8::from(other)),
        }
    }
}

impl ReadError {
    /// Whether the connection was dropped because of this error.
    pub fn dropped_link(&self) -> bool {
        !matches!(self, ReadError::Exception(_))
    }
}

/// A link and its connection, if any.
pub struct Link {
    transport: Transport,
    ctx: Option<Context>,
    timeout: Duration,
    connect_timeout: Duration,
    inter_frame: Duration,
    last_frame: Option<Instant>,
    /// Set after a timeout: a late reply may still be on its way.
    late_reply_possible: bool,
}

impl std::fmt::Debug for Link {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Link")
            .field("transport", &self.transport)
            .field("connected", &self.ctx.is_some())
            .field("timeout", &self.timeout)
            .field("inter_frame", &self.inter_frame)
            .finish()
    }
}

impl Link {
    /// `inter_frame` is the pause kept between the end of one frame exchange and the next
    /// request (raised to the RTU minimum on serial lines).
    pub fn new(
        transport: Transport,
        timeout: Duration,
        connect_timeout: Duration,
        inter_frame: Duration,
    ) -> Self {
        let inter_frame = match &transport {
            Transport::Rtu(s) => inter_frame.max(s.inter_frame_min()),
            Transport::Tcp { .. } => inter_frame,
        };
        Link {
            transport,
            ctx: None,
            timeout,
            connect_timeout,
            inter_frame,
            last_frame: None,
            late_reply_possible: false,
        }
    }

    pub fn transport(&self) -> &Transport {
        &self.transport
    }

    pub fn is_connected(&self) -> bool {
        self.ctx.is_some()
    }

    /// Opens the connection if there is none.
    pub async fn connect(&mut self) -> Result<(), ReadError> {
        if self.ctx.is_some() {
            return Ok(());
        }
        let ctx = match &self.transport {
            Transport::Tcp { addr } => {
                match tokio::time::timeout(
                    self.connect_timeout,
                    tokio_modbus::client::tcp::connect(*addr),
                )
                .await
                {
                    Ok(Ok(ctx)) => ctx,
                    Ok(Err(e)) => return Err(ReadError::Connect(format!("{addr}: {e}"))),
                    Err(_) => {
                        return Err(ReadError::Connect(format!(
                            "{addr}: no answer within {:?}",
                            self.connect_timeout
                        )));
                    }
                }
            }
            Transport::Rtu(s) => {
                let builder = tokio_serial::new(&s.path, s.baud)
                    .parity(match s.parity {
                        Parity::None => tokio_serial::Parity::None,
                        Parity::Even => tokio_serial::Parity::Even,
                        Parity::Odd => tokio_serial::Parity::Odd,
                    })
                    .data_bits(match s.data_bits {
                        7 => tokio_serial::DataBits::Seven,
                        _ => tokio_serial::DataBits::Eight,
                    })
                    .stop_bits(if s.stop_bits == 2 {
                        tokio_serial::StopBits::Two
                    } else {
                        tokio_serial::StopBits::One
                    });
                let mut port = tokio_serial::SerialStream::open(&builder)
                    .map_err(|e| ReadError::Connect(format!("{}: {e}", s.path)))?;
                if std::mem::take(&mut self.late_reply_possible) {
                    // On a serial line a late reply has no transaction id: it would be taken
                    // as the answer to the next request of the same unit and function. Drain
                    // the line until it has been quiet for a whole timeout.
                    drain_until_quiet(&mut port, self.timeout).await;
                }
                use tokio_serial::SerialPort as _;
                let _ = port.clear(tokio_serial::ClearBuffer::Input);
                tokio_modbus::client::rtu::attach(port)
            }
        };
        self.ctx = Some(ctx);
        Ok(())
    }

    /// Drops the connection (after an error, or to force a fresh one).
    pub fn drop_connection(&mut self) {
        self.ctx = None;
    }

    /// Reads `count` bits or registers at `start` of `table` from unit `unit`.
    pub async fn read(
        &mut self,
        unit: u8,
        table: Table,
        start: u16,
        count: u16,
    ) -> Result<Data, ReadError> {
        self.connect().await?;
        if let Some(last) = self.last_frame {
            tokio::time::sleep_until(last + self.inter_frame).await;
        }
        let Some(ctx) = self.ctx.as_mut() else {
            return Err(ReadError::Connect("not connected".into()));
        };
        ctx.set_slave(Slave(unit));
        let request = match table {
            Table::Coil => Request::ReadCoils(start, count),
            Table::Discrete => Request::ReadDiscreteInputs(start, count),
            Table::Holding => Request::ReadHoldingRegisters(start, count),
            Table::Input => Request::ReadInputRegisters(start, count),
        };
        let result = tokio::time::timeout(self.timeout, ctx.call(request)).await;
        self.last_frame = Some(Instant::now());
        let response = match result {
            Err(_) => {
                // On TCP the late reply would make every later call fail with mismatching
                // headers (slowtec/tokio-modbus#324); a new connection never sees it.
                self.ctx = None;
                self.late_reply_possible = true;
                return Err(ReadError::Timeout(self.timeout));
            }
            Ok(Err(e)) => {
                self.ctx = None;
                return Err(ReadError::Link(e.to_string()));
            }
            Ok(Ok(Err(exc))) => return Err(ReadError::Exception(exc.into())),
            Ok(Ok(Ok(r))) => r,
        };
        let n = usize::from(count);
        let data = match (table, response) {
            (Table::Coil, Response::ReadCoils(mut bits))
            | (Table::Discrete, Response::ReadDiscreteInputs(mut bits))
                if bits.len() >= n && bits.len() < n + 8 =>
            {
                bits.truncate(n);
                Data::Bits(bits)
            }
            (Table::Holding, Response::ReadHoldingRegisters(regs))
            | (Table::Input, Response::ReadInputRegisters(regs))
                if regs.len() == n =>
            {
                Data::Registers(regs)
            }
            (_, other) => {
                self.ctx = None;
                return Err(ReadError::Link(format!(
                    "reply does not match the request ({table} {start}+{count}): {}",
                    describe(&other)
                )));
            }
        };
        Ok(data)
    }
}

/// Reads and discards until nothing has arrived for `quiet` (bounded to 10 × `quiet`, so a
/// babbling line cannot hold the link forever).
async fn drain_until_quiet(port: &mut tokio_serial::SerialStream, quiet: Duration) {
    use tokio::io::AsyncReadExt as _;
    let give_up = Instant::now() + quiet * 10;
    let mut buf = [0u8; 256];
    while Instant::now() < give_up {
        match tokio::time::timeout(quiet, port.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => tracing::debug!(bytes = n, "discarded a late reply"),
            Ok(Ok(_)) | Ok(Err(_)) | Err(_) => return,
        }
    }
}

fn describe(r: &Response) -> String {
    match r {
        Response::ReadCoils(b) => format!("{} coils", b.len()),
        Response::ReadDiscreteInputs(b) => format!("{} discrete inputs", b.len()),
        Response::ReadHoldingRegisters(r) => format!("{} holding registers", r.len()),
        Response::ReadInputRegisters(r) => format!("{} input registers", r.len()),
        other => format!("{other:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rtu_inter_frame_time() {
        let mut s = SerialSettings::new("/dev/ttyS0");
        // 9600 8N1: 10 bits/char, 3.5 chars = 3.646 ms.
        assert_eq!(s.inter_frame_min(), Duration::from_micros(3645));
        s.baud = 115_200;
        assert_eq!(s.inter_frame_min(), Duration::from_micros(1750));
    }
}
