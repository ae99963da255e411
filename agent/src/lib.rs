//! The edge agent as a library: the binary (`main.rs`) is a thin command line over it, and the
//! integration tests and benchmarks drive the same code.
//!
//! - [`config`]: the agent's TOML configuration, validated before anything starts;
//! - [`identity`]: the agent's Ed25519 signing key in its data directory;
//! - [`outbox`]: the durable store-and-forward queue (SQLite);
//! - [`live`]: live indicators over rolling and shift windows (the shared engine);
//! - [`pipeline`]: acquisition events → report by exception, states, counters → batch contents;
//! - [`mqtt`]: the publisher (persistent session, QoS 1, birth/will, TLS);
//! - [`metrics`]: `/metrics` and `/healthz`;
//! - [`run`]: wires everything together, reloads on SIGHUP or file change;
//! - [`diag`]: the plant engineer's diagnostics (`probe modbus`, `browse opcua`).

pub mod alloc;
pub mod config;
pub mod diag;
pub mod identity;
pub mod live;
pub mod metrics;
pub mod mqtt;
pub mod outbox;
pub mod pipeline;
pub mod run;
