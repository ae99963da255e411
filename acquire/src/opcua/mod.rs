//! OPC UA acquisition on async-opcua: one subscription per device with a monitored item per
//! point, recovery after any loss (including a server restart with a fresh address space), and
//! `browse` for commissioning.
//!
//! Points are addressed by node id (`ns=`/`nsu=` text) or by browse path below the device's
//! root node; both are resolved on every connect, so a server that renumbers its namespaces
//! or node ids after an update is followed without configuration changes.

mod address;
mod browse;
mod config;
mod convert;
mod device;
mod session;

pub use browse::{BrowseEntry, browse};
pub use config::{Identity, Mode, OpcuaConfig, OpcuaError, Policy};
pub use device::run_device;
pub use session::prepare_certificate;
