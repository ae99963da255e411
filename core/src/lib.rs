//! `shopfloor-core`: the wire types and the indicator mathematics shared by the agent and the
//! gateway. Pure: no I/O, no async runtime, no clock reads — every instant is passed in, and
//! the versioned data it needs (coefficients, assessment rules) is compiled in.
//!
//! Map (details and invariants in each module and in docs/ARCHITECTURE.md):
//! - [`evidence`]: the `shopfloor.evidence/1` document, parsing and validation;
//! - [`engine`]: evidence → indicators, roll-ups as ratios of sums;
//! - [`timemodel`], [`calendar`]: ISO 22400-2 buckets, shift windows and time zones;
//! - [`counter`]: register wraps, resets and replacements for counters and meters;
//! - [`coefficients`]: GB/T 2589 energy and CO₂ factors as versioned data;
//! - [`catalog`]: indicator ids, names (zh/en), units, levels;
//! - [`assessment`], [`targets`]: rule sets and plan targets as data.

pub mod assessment;
pub mod batch;
pub mod calendar;
pub mod catalog;
pub mod coefficients;
pub mod counter;
pub mod engine;
pub mod error;
pub mod evidence;
pub mod path;
pub mod targets;
pub mod timemodel;

pub use engine::{Indicator, Report, compute};
pub use error::{FieldError, InputError};
pub use evidence::{Evidence, parse};

/// Parses, validates and computes an evidence document in one call (what `calc` does).
pub fn calc(json: &str) -> Result<Report, InputError> {
    compute(&parse(json)?)
}
