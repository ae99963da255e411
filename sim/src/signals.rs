//! Live values of one simulated device, shared by the scenario clock (writer) and the protocol
//! front ends (readers): point name → value, plus the device's fault mode.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::sync::{PoisonError, RwLock};

use shopfloor_devices::Value;
use tokio::sync::watch;

/// How a device misbehaves right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Fault {
    /// Answers normally.
    None,
    /// Accepts requests and never answers (a dead slave, a pulled cable behind a gateway).
    Silent,
    /// Answers every read with a Modbus exception 04 (server device failure) / OPC UA Bad status.
    Exceptions,
    /// Answers with garbage: wrong lengths and wrong transaction ids on Modbus TCP, values
    /// of the wrong type on OPC UA.
    Garbage,
}

impl Fault {
    fn code(self) -> u8 {
        match self {
            Fault::None => 0,
            Fault::Silent => 1,
            Fault::Exceptions => 2,
            Fault::Garbage => 3,
        }
    }
    fn from_code(c: u8) -> Fault {
        match c {
            1 => Fault::Silent,
            2 => Fault::Exceptions,
            3 => Fault::Garbage,
            _ => Fault::None,
        }
    }
}

/// The shared live state of one simulated device.
#[derive(Debug)]
pub struct Signals {
    values: RwLock<BTreeMap<String, Value>>,
    fault: AtomicU8,
    /// Requests the device has received (Modbus PDUs, OPC UA reads): what tests count as
    /// "requests on the wire".
    requests: AtomicU64,
    /// Extra time before every answer, ms (a slow device, or late replies after a timeout).
    delay_ms: AtomicU64,
    changed: watch::Sender<u64>,
}

impl Default for Signals {
    fn default() -> Self {
        Signals {
            values: RwLock::new(BTreeMap::new()),
            fault: AtomicU8::new(0),
            requests: AtomicU64::new(0),
            delay_ms: AtomicU64::new(0),
            changed: watch::channel(0).0,
        }
    }
}

impl Signals {
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets a value and wakes subscribers (OPC UA front end) when it changed.
    pub fn set(&self, name: &str, value: Value) {
        let mut map = self.values.write().unwrap_or_else(PoisonError::into_inner);
        if map.get(name) != Some(&value) {
            map.insert(name.to_owned(), value);
            drop(map);
            self.changed.send_modify(|v| *v += 1);
        }
    }

    pub fn get(&self, name: &str) -> Option<Value> {
        self.values
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(name)
            .cloned()
    }

    pub fn snapshot(&self) -> Vec<(String, Value)> {
        self.values
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    /// A receiver that sees a new version number after every change.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    pub fn fault(&self) -> Fault {
        Fault::from_code(self.fault.load(Ordering::Relaxed))
    }

    pub fn set_fault(&self, f: Fault) {
        self.fault.store(f.code(), Ordering::Relaxed);
    }

    pub fn count_request(&self) {
        self.requests.fetch_add(1, Ordering::Relaxed);
    }

    pub fn set_response_delay_ms(&self, ms: u64) {
        self.delay_ms.store(ms, Ordering::Relaxed);
    }

    pub fn response_delay_ms(&self) -> u64 {
        self.delay_ms.load(Ordering::Relaxed)
    }

    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }
}
