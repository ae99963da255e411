//! Modbus TCP and RTU servers (tokio-modbus) that serve simulated devices' points from their
//! live [`Signals`], encoded with the same codec the agent decodes with.
//!
//! One server is one TCP listener or one serial line; several unit ids may sit behind it, as
//! behind a real TCP gateway or on a multi-drop RS-485 line. A request for an unknown unit id
//! gets no answer at all, as on a real bus (tokio-modbus 0.17's RTU server does not filter by
//! unit id itself).

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_modbus::prelude::{ExceptionCode, Request, Response, SlaveRequest};
use tokio_modbus::server::tcp::{Server as TcpServer, accept_tcp_connection};

use shopfloor_devices::codec::{DataType, Table, Value, encode_registers};
use shopfloor_devices::point::ModbusPoint;

use crate::signals::{Fault, Signals};

/// What a device answers for an address no point covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Holes {
    /// Exception 02 (illegal data address), like most meters.
    #[default]
    Exception,
    /// Zero, like many PLCs.
    Zero,
}

/// One unit id's register image.
#[derive(Debug)]
pub struct Unit {
    pub signals: Arc<Signals>,
    points: Vec<ModbusPoint>,
    /// (table, address) → (point index, register offset inside the point).
    index: HashMap<(Table, u16), Vec<(usize, u16)>>,
    holes: Holes,
}

impl Unit {
    pub fn new(signals: Arc<Signals>, points: Vec<ModbusPoint>, holes: Holes) -> Self {
        let mut index: HashMap<(Table, u16), Vec<(usize, u16)>> = HashMap::new();
        for (i, p) in points.iter().enumerate() {
            for off in 0..p.layout.span() {
                if let Some(a) = p.layout.address.checked_add(off) {
                    index.entry((p.layout.table, a)).or_default().push((i, off));
                }
            }
        }
        Unit {
            signals,
            points,
            index,
            holes,
        }
    }

    /// The raw (unscaled) value the device holds for a point: the engineering value in Signals
    /// converted back through scale and offset.
    fn raw(&self, p: &ModbusPoint) -> Value {
        let v = self.signals.get(&p.name).unwrap_or(Value::UInt(0));
        raw_value(p, v)
    }

    fn read_registers(
        &self,
        table: Table,
        start: u16,
        count: u16,
    ) -> Result<Vec<u16>, ExceptionCode> {
        let mut cache: HashMap<usize, Vec<u16>> = HashMap::new();
        let mut out = Vec::with_capacity(usize::from(count));
        for k in 0..count {
            let Some(addr) = start.checked_add(k) else {
                return Err(ExceptionCode::IllegalDataAddress);
            };
            let Some(entries) = self.index.get(&(table, addr)) else {
                match self.holes {
                    Holes::Exception => return Err(ExceptionCode::IllegalDataAddress),
                    Holes::Zero => {
                        out.push(0);
                        continue;
                    }
                }
            };
            // A whole-register point first, then the bits of bool points on top of it.
            let mut word = 0u16;
            let mut ordered: Vec<&(usize, u16)> = entries.iter().collect();
            ordered.sort_by_key(|(i, _)| self.points[*i].layout.data_type == DataType::Bool);
            for &&(i, off) in &ordered {
                let p = &self.points[i];
                let regs = match cache.get(&i) {
                    Some(r) if p.layout.data_type != DataType::Bool => r.clone(),
                    _ => {
                        let r = encode_registers(&p.layout, &self.raw(p), word)
                            .map_err(|_| ExceptionCode::ServerDeviceFailure)?;
                        if p.layout.data_type != DataType::Bool {
                            cache.insert(i, r.clone());
                        }
                        r
                    }
                };
                word = regs.get(usize::from(off)).copied().unwrap_or(0);
            }
            out.push(word);
        }
        Ok(out)
    }

    fn read_bits(&self, table: Table, start: u16, count: u16) -> Result<Vec<bool>, ExceptionCode> {
        let mut out = Vec::with_capacity(usize::from(count));
        for k in 0..count {
            let Some(addr) = start.checked_add(k) else {
                return Err(ExceptionCode::IllegalDataAddress);
            };
            match self.index.get(&(table, addr)).and_then(|e| e.first()) {
                Some(&(i, _)) => out.push(self.raw(&self.points[i]).as_bool().unwrap_or(false)),
                None if self.holes == Holes::Zero => out.push(false),
                None => return Err(ExceptionCode::IllegalDataAddress),
            }
        }
        Ok(out)
    }

    fn answer(&self, request: &Request<'_>) -> Result<Response, ExceptionCode> {
        match *request {
            Request::ReadCoils(a, n) => check_count(n, 2000)
                .and_then(|()| self.read_bits(Table::Coil, a, n))
                .map(Response::ReadCoils),
            Request::ReadDiscreteInputs(a, n) => check_count(n, 2000)
                .and_then(|()| self.read_bits(Table::Discrete, a, n))
                .map(Response::ReadDiscreteInputs),
            Request::ReadHoldingRegisters(a, n) => check_count(n, 125)
                .and_then(|()| self.read_registers(Table::Holding, a, n))
                .map(Response::ReadHoldingRegisters),
            Request::ReadInputRegisters(a, n) => check_count(n, 125)
                .and_then(|()| self.read_registers(Table::Input, a, n))
                .map(Response::ReadInputRegisters),
            _ => Err(ExceptionCode::IllegalFunction),
        }
    }
}

fn check_count(n: u16, max: u16) -> Result<(), ExceptionCode> {
    if (1..=max).contains(&n) {
        Ok(())
    } else {
        Err(ExceptionCode::IllegalDataValue)
    }
}

/// Engineering value → raw register value of a point (inverse of `raw × scale + offset`),
/// coerced to the point's type; counters wrap at the type's width as real registers do.
pub fn raw_value(p: &ModbusPoint, v: Value) -> Value {
    let x = match (&v, p.scale == 1.0 && p.offset == 0.0) {
        (Value::Text(_), _) | (Value::Bool(_), _) => return v,
        (_, true) => match v {
            Value::Int(i) => return coerce_int(i128::from(i), p.layout.data_type),
            Value::UInt(u) => return coerce_int(i128::from(u), p.layout.data_type),
            Value::Float(f) => f,
            _ => return v,
        },
        (_, false) => (v.as_f64().unwrap_or(0.0) - p.offset) / p.scale,
    };
    match p.layout.data_type {
        DataType::F32 | DataType::F64 => Value::Float(x),
        DataType::Bool => Value::Bool(x != 0.0),
        DataType::String => Value::Text(x.to_string()),
        t => coerce_int(x.round() as i128, t),
    }
}

fn coerce_int(i: i128, t: DataType) -> Value {
    let wrap = |bits: u32| i.rem_euclid(1i128 << bits);
    match t {
        DataType::U16 => Value::UInt(wrap(16) as u64),
        DataType::U32 => Value::UInt(wrap(32) as u64),
        DataType::U64 => Value::UInt(wrap(64) as u64),
        DataType::I16 => Value::Int(i64::from(wrap(16) as u16 as i16)),
        DataType::I32 => Value::Int(i64::from(wrap(32) as u32 as i32)),
        DataType::I64 => Value::Int(wrap(64) as u64 as i64),
        DataType::F32 | DataType::F64 => Value::Float(i as f64),
        DataType::Bool => Value::Bool(i != 0),
        DataType::String => Value::Text(i.to_string()),
    }
}

/// The units behind one server.
#[derive(Debug, Clone, Default)]
pub struct Units(Arc<HashMap<u8, Arc<Unit>>>);

impl Units {
    pub fn new(units: HashMap<u8, Arc<Unit>>) -> Self {
        Units(Arc::new(units))
    }
}

type BoxFuture = Pin<Box<dyn Future<Output = Result<Option<Response>, ExceptionCode>> + Send>>;

impl tokio_modbus::server::Service for Units {
    type Request = SlaveRequest<'static>;
    type Response = Option<Response>;
    type Exception = ExceptionCode;
    type Future = BoxFuture;

    fn call(&self, req: Self::Request) -> Self::Future {
        let unit = self.0.get(&req.slave).cloned();
        Box::pin(async move {
            // Unknown unit id: silence, as on a real line.
            let Some(unit) = unit else { return Ok(None) };
            unit.signals.count_request();
            // The answer is taken now and sent late: a late reply carries the old value, as a
            // slow device's does.
            let answer = match unit.signals.fault() {
                Fault::Silent => Ok(None),
                Fault::Exceptions => Err(ExceptionCode::ServerDeviceFailure),
                Fault::Garbage => Ok(Some(garbage(&req.request))),
                Fault::None => unit.answer(&req.request).map(Some),
            };
            let delay = unit.signals.response_delay_ms();
            if delay > 0 {
                tokio::time::sleep(Duration::from_millis(delay)).await;
            }
            answer
        })
    }
}

/// A well-framed reply with the wrong content: one register too many, or the wrong function.
fn garbage(request: &Request<'_>) -> Response {
    match *request {
        Request::ReadHoldingRegisters(_, n) => {
            Response::ReadHoldingRegisters(vec![0xDEAD; usize::from(n) + 1])
        }
        Request::ReadInputRegisters(_, n) => {
            Response::ReadHoldingRegisters(vec![0xBEEF; usize::from(n)])
        }
        Request::ReadCoils(_, n) => Response::ReadDiscreteInputs(vec![true; usize::from(n)]),
        _ => Response::ReadCoils(vec![true; 3]),
    }
}

/// A running server.
#[derive(Debug)]
pub struct Running {
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
    /// TCP: the bound address. RTU: none.
    pub addr: Option<SocketAddr>,
    /// RTU: the path a client opens (the pseudo-terminal, or the stable symlink to it).
    pub path: Option<String>,
    /// RTU: the pty end kept open so the line does not hang up between client connections.
    _keep: Option<tokio_serial::SerialStream>,
}

impl Running {
    pub async fn stop(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        let _ = (&mut self.task).await;
    }
}

/// Serves `units` over Modbus TCP on `listener`.
pub fn serve_tcp(listener: TcpListener, units: Units) -> std::io::Result<Running> {
    let addr = listener.local_addr()?;
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        let server = TcpServer::new(listener);
        let on_connected = move |stream, peer| {
            let units = units.clone();
            async move { accept_tcp_connection(stream, peer, move |_| Ok(Some(units.clone()))) }
        };
        let on_error = |e| tracing::debug!(error = %e, "modbus tcp sim: connection error");
        let _ = server
            .serve_until(&on_connected, on_error, async {
                let _ = stop_rx.await;
            })
            .await;
    });
    Ok(Running {
        stop: Some(stop_tx),
        task,
        addr: Some(addr),
        path: None,
        _keep: None,
    })
}

/// Serves `units` over Modbus RTU on a new pseudo-terminal pair; clients open `Running::path`.
/// With `link`, a symlink at that path points at the pty (a stable name for configs).
#[cfg(unix)]
pub fn serve_rtu_pty(units: Units, link: Option<&std::path::Path>) -> std::io::Result<Running> {
    use tokio_serial::SerialPort as _;
    let (master, slave) = tokio_serial::SerialStream::pair().map_err(std::io::Error::other)?;
    let pty = slave
        .name()
        .ok_or_else(|| std::io::Error::other("pseudo-terminal has no name"))?;
    let path = match link {
        Some(l) => {
            let _ = std::fs::remove_file(l);
            std::os::unix::fs::symlink(&pty, l)?;
            l.display().to_string()
        }
        None => pty,
    };
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        let server = tokio_modbus::server::rtu::Server::new(master);
        let _ = server
            .serve_until(units, async {
                let _ = stop_rx.await;
            })
            .await;
    });
    Ok(Running {
        stop: Some(stop_tx),
        task,
        addr: None,
        path: Some(path),
        _keep: Some(slave),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use shopfloor_devices::codec::{Layout, Order, StringLayout};

    fn point(name: &str, address: u16, t: DataType, bit: Option<u8>) -> ModbusPoint {
        ModbusPoint {
            name: name.into(),
            layout: Layout {
                table: Table::Holding,
                address,
                data_type: t,
                order: Order::ABCD,
                bit,
                length: 1,
                string_layout: StringLayout::HighLow,
            },
            scale: 1.0,
            offset: 0.0,
            unit: None,
        }
    }

    #[test]
    fn status_word_bits_combine_and_holes_answer_exception() {
        let s = Arc::new(Signals::new());
        s.set("run", Value::Bool(true));
        s.set("alarm", Value::Bool(true));
        s.set("count", Value::UInt(0x0001_0002));
        let u = Unit::new(
            s,
            vec![
                point("run", 0, DataType::Bool, Some(0)),
                point("alarm", 0, DataType::Bool, Some(2)),
                point("count", 1, DataType::U32, None),
            ],
            Holes::Exception,
        );
        assert_eq!(
            u.read_registers(Table::Holding, 0, 3),
            Ok(vec![0b101, 1, 2])
        );
        assert_eq!(
            u.read_registers(Table::Holding, 0, 4),
            Err(ExceptionCode::IllegalDataAddress)
        );
    }

    #[test]
    fn counters_wrap_at_their_width() {
        let p = point("c", 0, DataType::U16, None);
        assert_eq!(raw_value(&p, Value::UInt(65_537)), Value::UInt(1));
        let mut q = point("e", 0, DataType::U32, None);
        q.scale = 0.1;
        assert_eq!(raw_value(&q, Value::Float(12.3)), Value::UInt(123));
    }
}
