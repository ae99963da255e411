//! `shopfloor-acquire`: the agent's eyes. Modbus TCP/RTU pollers and OPC UA subscriptions that
//! turn devices into [`Event`]s, with a timeout on every call, reconnect with backoff, and no
//! device able to delay another.

pub mod backoff;
pub mod modbus;
pub mod opcua;
pub mod sample;

pub use sample::{Event, LinkState, Outcome, Sample};
