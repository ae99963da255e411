//! Modbus TCP and RTU acquisition on tokio-modbus: [`link`] keeps one connection healthy,
//! [`poller`] schedules the devices of a link, [`probe`] is the plant engineer's one-shot read.

pub mod link;
pub mod poller;
pub mod probe;

pub use link::{Link, Parity, ReadError, SerialSettings, Transport};
pub use poller::{BusConfig, DeviceConfig, run_bus};
