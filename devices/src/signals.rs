//! Signals → machine model: rules that turn raw device signals into the states of
//! INDICATORS.md §2 and into part / scrap counters.
//!
//! Three layers, all pure (no clock reads, no I/O):
//! 1. [`StateRules::classify`]: the values of a device's points *now* → a [`RawState`]
//!    (producing, setup, alarm, stopped, planned down, off), per model (tables below);
//! 2. [`StateTracker`]: timestamped updates and link events → contiguous, non-overlapping
//!    [`StateInterval`]s with the core [`State`]; this is where stops become micro-stops
//!    (`delay`) or `idle` by their duration, and where lost links become `offline`;
//! 3. [`CounterTracker`]: samples of the produced / good / scrap points → the [`Reading`]s of
//!    core [`Counter`]s, deriving the missing one of the three when two are known.
//!
//! # Mapping tables (first matching row wins)
//!
//! `run_alarm` (roles `run` required; `alarm`, `setup`, `planned_down` optional):
//!
//! | planned_down | setup | run | alarm | raw state |
//! |---|---|---|---|---|
//! | on | – | – | – | `planned_down` |
//! | – | on | – | – | `setup` (AUST = Setup ∧ Executing; a stop inside setup mode is still changeover) |
//! | – | – | on | – | `producing` (an alarm code while the machine runs is a warning, not a stop) |
//! | – | – | off | active | `alarm` |
//! | – | – | off | none | `stopped` |
//!
//! `stack_light` (roles `green` required; `yellow`, `red`, `blue` optional). OPC 10000-200
//! gives no normative colour semantics; the default follows the indicator-light colours of
//! IEC 60204-1 (red = emergency / fault, yellow = abnormal, green = normal, blue = operator
//! action required): `red` → `alarm`, `green` → `producing`, `yellow` → `stopped`, `blue` →
//! `stopped`, all lamps dark (`none`) → `stopped`. A site changes any of them with
//! `[states.colours]` (e.g. `blue = "setup"`, `none = "off"`). When several lamps are lit the
//! meaning with the highest precedence wins, in the order `planned_down`, `setup`, `alarm`,
//! `producing`, `stopped`, `off` (so red + green is a fault, green + yellow is running with a
//! warning).
//!
//! `machinery` (OPC 40001-1 §5.2 enums; role `item_state` required, `operation_mode`
//! optional, absent = None):
//!
//! | MachineryItemState \ OperationMode | None 0 | Maintenance 1 | Setup 2 | Processing 3 |
//! |---|---|---|---|---|
//! | NotAvailable 0 | `off` | `planned_down` | `setup` | `off` |
//! | OutOfService 1 | `alarm` | `planned_down` | `setup` | `alarm` |
//! | NotExecuting 2 | `stopped` | `planned_down` | `setup` | `stopped` |
//! | Executing 3 | `producing` | `planned_down` | `setup` | `producing` |
//!
//! Why: OPC 40501-1 C.2.3 gives APT = Executing ∧ Processing, AUST = Setup ∧ Executing, ADET =
//! OutOfService, ADOT = NotExecuting; OPC 40001-1 Annex C books Setup in any non-executing item
//! state as setup time and Maintenance in every item state as planned maintenance (APMT), which
//! is PDOT in INDICATORS.md §2 — so a repair after a breakdown must be reported by the machine
//! as OutOfService, not as Maintenance, or it is excluded from PBT. Executing with mode None is
//! `producing`: OPC 40001-1 lets the mode come from an MES, many machines never set it, and
//! "executing" is then the best evidence of production (strict 40501 would give no APT at all).
//! NotAvailable ("switched off, energy saving") during planned time is ADOT → `off` → `idle`
//! whatever its duration; NotExecuting is a stop subject to the micro-stop rule. Values outside
//! the enums are errors.
//!
//! `robot` (OPC 40010-1 §5.5; roles `operational_mode`, `emergency_stop`, `protective_stop`,
//! `task_running` required; `in_motion` optional):
//!
//! | condition (in this order) | raw state |
//! |---|---|
//! | emergency_stop ∨ protective_stop | `alarm` |
//! | MANUAL_REDUCED_SPEED 1 / MANUAL_HIGH_SPEED 2 | `setup` (teaching, jogging) |
//! | AUTOMATIC 3 / AUTOMATIC_EXTERNAL 4 ∧ task_running (∧ in_motion when configured) | `producing` |
//! | AUTOMATIC(_EXTERNAL) otherwise | `stopped` |
//! | OTHER 0 (vendor-specific mode) | `stopped` (no production claimed; long → idle) |
//!
//! # Raw state → core state ([`StateTracker`])
//!
//! `producing` → `producing`, `setup` → `setup`, `alarm` → `delay`, `planned_down` →
//! `planned_down`, `off` → `idle`; a contiguous `stopped` run shorter than `micro_stop_s` →
//! `delay` (micro-stop, ISO 22400 minor stoppage in ADET), otherwise `idle` (the whole run, as
//! UMH does with its 120 s default). No data, a lost link or an invalid value → `offline`.

use std::collections::{BTreeMap, BTreeSet};

use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use shopfloor_core::evidence::{Counter, Reading, State, StateInterval};

use crate::codec::Value;

/// Which rule family classifies the state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StateModel {
    /// A run flag plus an optional alarm code/flag and optional setup / planned-stop flags.
    RunAlarm,
    /// Stack light colours (green / yellow / red, optional blue).
    StackLight,
    /// OPC 40001-1 MachineryItemState × MachineryOperationMode (Annex C).
    Machinery,
    /// OPC 40010-1 robot: operational mode, emergency / protective stop, task running.
    Robot,
}

impl StateModel {
    /// The name used in templates (`run_alarm`, ...).
    pub fn name(self) -> &'static str {
        match self {
            StateModel::RunAlarm => "run_alarm",
            StateModel::StackLight => "stack_light",
            StateModel::Machinery => "machinery",
            StateModel::Robot => "robot",
        }
    }

    /// Roles every `[states.signals]` of this model must map.
    pub fn required_roles(self) -> &'static [&'static str] {
        match self {
            StateModel::RunAlarm => &["run"],
            StateModel::StackLight => &["green"],
            StateModel::Machinery => &["item_state"],
            StateModel::Robot => &[
                "operational_mode",
                "emergency_stop",
                "protective_stop",
                "task_running",
            ],
        }
    }

    /// Roles this model uses when they are mapped.
    pub fn optional_roles(self) -> &'static [&'static str] {
        match self {
            StateModel::RunAlarm => &["alarm", "setup", "planned_down"],
            StateModel::StackLight => &["yellow", "red", "blue"],
            StateModel::Machinery => &["operation_mode"],
            StateModel::Robot => &["in_motion"],
        }
    }

    fn allowed_roles(self) -> Vec<&'static str> {
        let mut v = self.required_roles().to_vec();
        v.extend_from_slice(self.optional_roles());
        v
    }
}

/// What the signals say the machine is doing at one instant, before durations are known.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RawState {
    /// Executing value-adding work (APT).
    Producing,
    /// Setup, changeover, teaching (AUST).
    Setup,
    /// Fault, alarm, emergency or protective stop (ADET).
    Alarm,
    /// Available but not executing: a micro-stop (ADET) or idle (ADOT) depending on how long.
    Stopped,
    /// Declared planned stop or planned maintenance (PDOT).
    PlannedDown,
    /// Switched off / not available during planned time (ADOT whatever the duration).
    Off,
}

impl RawState {
    /// The core state of this raw state held for `held_s` seconds: only `Stopped` depends on
    /// the duration (`< micro_stop_s` → `Delay`, else `Idle`).
    pub fn to_state(self, held_s: f64, micro_stop_s: f64) -> State {
        match self {
            RawState::Producing => State::Producing,
            RawState::Setup => State::Setup,
            RawState::Alarm => State::Delay,
            RawState::PlannedDown => State::PlannedDown,
            RawState::Off => State::Idle,
            RawState::Stopped if held_s < micro_stop_s => State::Delay,
            RawState::Stopped => State::Idle,
        }
    }

    /// Precedence when several stack-light lamps are lit (higher wins).
    fn precedence(self) -> u8 {
        match self {
            RawState::PlannedDown => 5,
            RawState::Setup => 4,
            RawState::Alarm => 3,
            RawState::Producing => 2,
            RawState::Stopped => 1,
            RawState::Off => 0,
        }
    }
}

/// Stack-light lamps that `[states.colours]` may give a meaning to; `none` = all lamps dark.
pub const COLOURS: [&str; 5] = ["green", "yellow", "red", "blue", "none"];

/// Default meaning of a stack-light lamp (IEC 60204-1 indicator colours; see the module doc).
pub fn default_colour_meaning(colour: &str) -> Option<RawState> {
    Some(match colour {
        "green" => RawState::Producing,
        "red" => RawState::Alarm,
        "yellow" | "blue" | "none" => RawState::Stopped,
        _ => return None,
    })
}

/// `[states]` of a template: model, role → point name, micro-stop threshold.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct StateRules {
    /// The rule family (and with it the roles and the mapping table).
    pub model: StateModel,
    /// Stops without an alarm shorter than this are micro-stops (`delay`); longer ones `idle`.
    #[serde(default = "d_micro_stop")]
    pub micro_stop_s: f64,
    /// Role → point name.
    pub signals: BTreeMap<String, String>,
    /// `stack_light` only: lamp (`green`, `yellow`, `red`, `blue`, `none` = all dark) → meaning,
    /// replacing the defaults of [`default_colour_meaning`] for the lamps listed.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub colours: BTreeMap<String, RawState>,
}

fn d_micro_stop() -> f64 {
    120.0
}

/// `[counters]` of a template: which points count parts.
///
/// Supported combinations: `produced` alone (good unknown: no quality rate); `produced` +
/// `good` (scrap optional, read as is); `produced` + `scrap` (good derived); `good` + `scrap`
/// (produced derived). Anything else is rejected by [`CounterRules::validate`].
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CounterRules {
    /// Point counting every part made (good and bad).
    #[serde(default)]
    pub produced: Option<String>,
    /// Point counting good (first-pass) parts.
    #[serde(default)]
    pub good: Option<String>,
    /// Point counting scrap / rejected parts.
    #[serde(default)]
    pub scrap: Option<String>,
    /// Register width of the counters (wrap at 2^width_bits): 16, 32 or 64.
    #[serde(default = "d_width")]
    pub width_bits: u8,
}

fn d_width() -> u8 {
    32
}

/// A rules problem with the field path it concerns.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{path}: {reason}")]
pub struct RulesError {
    /// Field path inside `[states]` / `[counters]` (`signals.run`, `micro_stop_s`, ...).
    pub path: String,
    pub reason: String,
}

fn rules_err(path: impl Into<String>, reason: impl Into<String>) -> RulesError {
    RulesError {
        path: path.into(),
        reason: reason.into(),
    }
}

/// Why signals could not be turned into a state or a reading.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SignalError {
    /// A mapped point has not delivered a value yet (or lost it with the link).
    #[error("role `{role}` (point `{point}`): no value yet")]
    Missing { role: String, point: String },
    /// A value of the wrong type, out of its enum's range or not a usable number.
    #[error("role `{role}` (point `{point}`): {reason}")]
    Invalid {
        role: String,
        point: String,
        reason: String,
    },
    /// The rules themselves are inconsistent (not validated before use).
    #[error("rules: {0}")]
    Rules(RulesError),
    /// An update older than the previous one: rejected, nothing changed.
    #[error(
        "update at {at} is older than the previous one at {last}: updates must not go back in time"
    )]
    OutOfOrder { at: Timestamp, last: Timestamp },
    /// A second, different value of a counter at an instant whose reading was already drained.
    #[error("point `{point}`: a different value at {at}, whose reading was already handed out")]
    Conflict { point: String, at: Timestamp },
}

impl SignalError {
    /// The point the error is about, if any.
    pub fn point(&self) -> Option<&str> {
        match self {
            SignalError::Missing { point, .. }
            | SignalError::Invalid { point, .. }
            | SignalError::Conflict { point, .. } => Some(point),
            SignalError::Rules(_) | SignalError::OutOfOrder { .. } => None,
        }
    }
}

impl StateRules {
    /// Checks the rules without knowing the points: roles of the model (required present,
    /// no unknown ones), the threshold, the colours.
    pub fn validate_roles(&self) -> Result<(), RulesError> {
        let model = self.model;
        let allowed = model.allowed_roles();
        for role in self.signals.keys() {
            if !allowed.contains(&role.as_str()) {
                return Err(rules_err(
                    format!("signals.{role}"),
                    format!(
                        "unknown role `{role}` for model {}: allowed roles are {}",
                        model.name(),
                        allowed.join(", ")
                    ),
                ));
            }
        }
        for role in model.required_roles() {
            if !self.signals.contains_key(*role) {
                return Err(rules_err(
                    "signals",
                    format!(
                        "model {} needs role `{role}` (required: {})",
                        model.name(),
                        model.required_roles().join(", ")
                    ),
                ));
            }
        }
        for (role, p) in &self.signals {
            if p.trim().is_empty() {
                return Err(rules_err(
                    format!("signals.{role}"),
                    "the point name must not be empty",
                ));
            }
        }
        if !(self.micro_stop_s.is_finite() && self.micro_stop_s >= 0.0) {
            return Err(rules_err(
                "micro_stop_s",
                format!("must be a finite number ≥ 0 s (got {})", self.micro_stop_s),
            ));
        }
        if !self.colours.is_empty() && model != StateModel::StackLight {
            return Err(rules_err(
                "colours",
                format!(
                    "only the stack_light model has colours, not {}",
                    model.name()
                ),
            ));
        }
        for colour in self.colours.keys() {
            if !COLOURS.contains(&colour.as_str()) {
                return Err(rules_err(
                    format!("colours.{colour}"),
                    format!("unknown lamp `{colour}`: expected {}", COLOURS.join(", ")),
                ));
            }
        }
        Ok(())
    }

    /// [`StateRules::validate_roles`], and every role names one of `points`.
    pub fn validate(&self, points: &BTreeSet<&str>) -> Result<(), RulesError> {
        self.validate_roles()?;
        for (role, p) in &self.signals {
            if !points.contains(p.as_str()) {
                return Err(rules_err(
                    format!("signals.{role}"),
                    format!("no point named `{p}`"),
                ));
            }
        }
        Ok(())
    }

    /// Meaning of a stack-light lamp: the configured one, else the default.
    pub fn colour_meaning(&self, colour: &str) -> Option<RawState> {
        self.colours
            .get(colour)
            .copied()
            .or_else(|| default_colour_meaning(colour))
    }

    /// Point names the rules read.
    pub fn points(&self) -> BTreeSet<&str> {
        self.signals.values().map(String::as_str).collect()
    }

    /// The instantaneous raw state from the current point values (`value(point)`), per the
    /// model's table (module doc). Every mapped role must have a value: a missing one is
    /// [`SignalError::Missing`], a wrong type or out-of-range enum [`SignalError::Invalid`].
    pub fn classify<'v, F>(&self, value: F) -> Result<RawState, SignalError>
    where
        F: Fn(&str) -> Option<&'v Value>,
    {
        self.validate_roles().map_err(SignalError::Rules)?;
        let r = Reader {
            rules: self,
            value: &value,
        };
        match self.model {
            StateModel::RunAlarm => {
                // Read every mapped role, so a bad value is reported whatever the others say.
                let run = r.flag("run")?.unwrap_or(false);
                let alarm = r.flag("alarm")?.unwrap_or(false);
                let setup = r.flag("setup")?.unwrap_or(false);
                let planned = r.flag("planned_down")?.unwrap_or(false);
                Ok(if planned {
                    RawState::PlannedDown
                } else if setup {
                    RawState::Setup
                } else if run {
                    RawState::Producing
                } else if alarm {
                    RawState::Alarm
                } else {
                    RawState::Stopped
                })
            }
            StateModel::StackLight => {
                let mut best: Option<RawState> = None;
                for colour in ["green", "yellow", "red", "blue"] {
                    if r.flag(colour)? == Some(true) {
                        let m = self.colour_meaning(colour).unwrap_or(RawState::Stopped);
                        if best.is_none_or(|b| m.precedence() > b.precedence()) {
                            best = Some(m);
                        }
                    }
                }
                Ok(
                    best.unwrap_or_else(|| {
                        self.colour_meaning("none").unwrap_or(RawState::Stopped)
                    }),
                )
            }
            StateModel::Machinery => {
                let item = r
                    .enumeration("item_state", "MachineryItemState", &ITEM_STATES)?
                    .unwrap_or(0);
                let mode = r
                    .enumeration("operation_mode", "MachineryOperationMode", &OPERATION_MODES)?
                    .unwrap_or(0);
                Ok(match (mode, item) {
                    (1, _) => RawState::PlannedDown,
                    (2, _) => RawState::Setup,
                    (_, 0) => RawState::Off,
                    (_, 1) => RawState::Alarm,
                    (_, 2) => RawState::Stopped,
                    _ => RawState::Producing,
                })
            }
            StateModel::Robot => {
                let mode = r
                    .enumeration("operational_mode", "OperationalMode", &OPERATIONAL_MODES)?
                    .unwrap_or(0);
                let estop = r.flag("emergency_stop")?.unwrap_or(false);
                let pstop = r.flag("protective_stop")?.unwrap_or(false);
                let running = r.flag("task_running")?.unwrap_or(false);
                let moving = r.flag("in_motion")?.unwrap_or(true);
                Ok(if estop || pstop {
                    RawState::Alarm
                } else {
                    match mode {
                        1 | 2 => RawState::Setup,
                        3 | 4 if running && moving => RawState::Producing,
                        _ => RawState::Stopped,
                    }
                })
            }
        }
    }
}

const ITEM_STATES: [&str; 4] = ["NotAvailable", "OutOfService", "NotExecuting", "Executing"];
const OPERATION_MODES: [&str; 4] = ["None", "Maintenance", "Setup", "Processing"];
const OPERATIONAL_MODES: [&str; 5] = [
    "OTHER",
    "MANUAL_REDUCED_SPEED",
    "MANUAL_HIGH_SPEED",
    "AUTOMATIC",
    "AUTOMATIC_EXTERNAL",
];

/// Role-wise access to the point values during one classification.
struct Reader<'a, 'v, F: Fn(&str) -> Option<&'v Value>> {
    rules: &'a StateRules,
    value: &'a F,
}

impl<'v, F: Fn(&str) -> Option<&'v Value>> Reader<'_, 'v, F> {
    /// `Ok(None)`: the role is not mapped. `Ok(Some((point, value)))` otherwise.
    fn get(&self, role: &str) -> Result<Option<(&str, &'v Value)>, SignalError> {
        let Some(point) = self.rules.signals.get(role) else {
            return Ok(None);
        };
        match (self.value)(point) {
            Some(v) => Ok(Some((point.as_str(), v))),
            None => Err(SignalError::Missing {
                role: role.into(),
                point: point.clone(),
            }),
        }
    }

    fn invalid(role: &str, point: &str, reason: String) -> SignalError {
        SignalError::Invalid {
            role: role.into(),
            point: point.into(),
            reason,
        }
    }

    /// A flag: bool, or a number where non-zero means on (alarm codes).
    fn flag(&self, role: &str) -> Result<Option<bool>, SignalError> {
        let Some((point, v)) = self.get(role)? else {
            return Ok(None);
        };
        match v {
            Value::Bool(b) => Ok(Some(*b)),
            Value::Int(i) => Ok(Some(*i != 0)),
            Value::UInt(u) => Ok(Some(*u != 0)),
            Value::Float(f) if f.is_finite() => Ok(Some(*f != 0.0)),
            Value::Float(f) => Err(Self::invalid(
                role,
                point,
                format!("{f} is not a usable number"),
            )),
            Value::Text(t) => Err(Self::invalid(
                role,
                point,
                format!("text {t:?} where a flag (bool or number) is expected"),
            )),
        }
    }

    /// An enumeration value, checked against `names` (index = value).
    fn enumeration(
        &self,
        role: &str,
        what: &str,
        names: &[&str],
    ) -> Result<Option<usize>, SignalError> {
        let Some((point, v)) = self.get(role)? else {
            return Ok(None);
        };
        let n = match v {
            Value::Int(_) | Value::UInt(_) | Value::Float(_) => v.as_i64().ok_or_else(|| {
                Self::invalid(
                    role,
                    point,
                    format!("{v} is not a whole number: {what} is an enumeration"),
                )
            })?,
            Value::Bool(_) | Value::Text(_) => {
                return Err(Self::invalid(
                    role,
                    point,
                    format!("{v} where a {what} number is expected"),
                ));
            }
        };
        let listing = || {
            names
                .iter()
                .enumerate()
                .map(|(i, n)| format!("{n}={i}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        match usize::try_from(n) {
            Ok(i) if i < names.len() => Ok(Some(i)),
            _ => Err(Self::invalid(
                role,
                point,
                format!("{n} is outside {what} ({})", listing()),
            )),
        }
    }
}

impl CounterRules {
    /// Checks the combination of roles and the width without knowing the points.
    pub fn validate_roles(&self) -> Result<(), RulesError> {
        for (role, p) in self.roles() {
            if p.trim().is_empty() {
                return Err(rules_err(role.name(), "the point name must not be empty"));
            }
        }
        let (p, g, s) = (
            self.produced.is_some(),
            self.good.is_some(),
            self.scrap.is_some(),
        );
        if !(p || (g && s)) {
            return Err(rules_err(
                "produced",
                "counters need `produced` (optionally with `good` and/or `scrap`), or `good` and `scrap`",
            ));
        }
        if ![16, 32, 64].contains(&self.width_bits) {
            return Err(rules_err(
                "width_bits",
                format!("must be 16, 32 or 64 (got {})", self.width_bits),
            ));
        }
        Ok(())
    }

    /// [`CounterRules::validate_roles`], and every role names one of `points`.
    pub fn validate(&self, points: &BTreeSet<&str>) -> Result<(), RulesError> {
        for (role, p) in self.roles() {
            if !points.contains(p) {
                return Err(rules_err(role.name(), format!("no point named `{p}`")));
            }
        }
        self.validate_roles()
    }

    /// Mapped roles and their points.
    pub fn roles(&self) -> Vec<(CounterRole, &str)> {
        [
            (CounterRole::Produced, &self.produced),
            (CounterRole::Good, &self.good),
            (CounterRole::Scrap, &self.scrap),
        ]
        .into_iter()
        .filter_map(|(r, p)| p.as_deref().map(|p| (r, p)))
        .collect()
    }

    /// The role computed from the other two, if any: good = produced − scrap, or
    /// produced = good + scrap.
    pub fn derived(&self) -> Option<CounterRole> {
        match (
            self.produced.is_some(),
            self.good.is_some(),
            self.scrap.is_some(),
        ) {
            (true, false, true) => Some(CounterRole::Good),
            (false, true, true) => Some(CounterRole::Produced),
            _ => None,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// State tracking

/// What the tracker knows at an instant: a classified raw state, or nothing usable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Known(RawState),
    Offline,
}

/// Turns timestamped signal updates and link events into core [`StateInterval`]s.
///
/// Semantics:
/// - the timeline starts at the first event (update, tick or link event) and is contiguous
///   from there: drained intervals followed by [`StateTracker::pending`] cover it without gaps
///   or overlaps, never going back in time; consecutive equal states are merged;
/// - the state at an instant is the one after the *last* event at that instant (a Modbus poll
///   delivers its points one by one with the same timestamp: no zero-length flicker);
/// - an event older than the previous one is rejected with [`SignalError::OutOfOrder`] and
///   changes nothing;
/// - `offline` while the link is down, before every mapped role has a value, and while a mapped
///   value is invalid. `link_down` forgets the values (they are stale); after `link_up` the
///   state stays `offline` until every role has been reported again;
/// - stops: a run of `stopped` is classified as a whole when it ends: shorter than
///   `micro_stop_s` → `delay`, otherwise `idle`. While it lasts, it is reported
///   *provisionally* by its duration so far (`delay`, turning `idle` once it reaches the
///   threshold — never back), and nothing it might merge with is handed out by
///   [`StateTracker::drain_closed`], so drained intervals are final.
#[derive(Debug, Clone)]
pub struct StateTracker {
    rules: StateRules,
    /// Points the rules read; updates of other points only advance time.
    points: BTreeSet<String>,
    values: BTreeMap<String, Value>,
    link_up: bool,
    last_at: Option<Timestamp>,
    /// The run in progress (committed): since when, in which phase.
    open: Option<(Timestamp, Phase)>,
    /// Phase after the last event at `last_at`; it replaces the open run's phase only when
    /// time moves on, which is what makes "last event at an instant wins".
    latest: Phase,
    /// Closed, merged intervals not yet drained; only the last one can still grow.
    held: Vec<StateInterval>,
}

impl StateTracker {
    /// A tracker for these rules (checked with [`StateRules::validate_roles`]).
    pub fn new(rules: StateRules) -> Result<StateTracker, RulesError> {
        rules.validate_roles()?;
        let points = rules.signals.values().cloned().collect();
        Ok(StateTracker {
            rules,
            points,
            values: BTreeMap::new(),
            link_up: true,
            last_at: None,
            open: None,
            latest: Phase::Offline,
            held: Vec::new(),
        })
    }

    /// The rules in use.
    pub fn rules(&self) -> &StateRules {
        &self.rules
    }

    /// Time of the last accepted event.
    pub fn last_at(&self) -> Option<Timestamp> {
        self.last_at
    }

    /// A new value of `point` at `at`. Points the rules do not read only advance time.
    ///
    /// Errors: [`SignalError::OutOfOrder`] (nothing changed); [`SignalError::Invalid`] when
    /// this value cannot be classified — it is recorded anyway and the state is `offline`
    /// until a valid value replaces it. A missing value of another role is not an error (the
    /// state is `offline` until it arrives).
    pub fn update(&mut self, at: Timestamp, point: &str, value: &Value) -> Result<(), SignalError> {
        self.advance(at)?;
        if !self.points.contains(point) {
            return Ok(());
        }
        self.values.insert(point.to_owned(), value.clone());
        match self.refresh() {
            Err(e) if e.point() == Some(point) => Err(e),
            _ => Ok(()),
        }
    }

    /// Time passes without a change (a poll cycle with the same values): extends the current
    /// interval and lets an open stop reach the micro-stop threshold.
    pub fn tick(&mut self, at: Timestamp) -> Result<(), SignalError> {
        self.advance(at)
    }

    /// The link to the device was lost at `at`: `offline` from then on; the values are stale
    /// and forgotten.
    pub fn link_down(&mut self, at: Timestamp) -> Result<(), SignalError> {
        self.advance(at)?;
        self.link_up = false;
        self.values.clear();
        self.latest = Phase::Offline;
        Ok(())
    }

    /// The link is back at `at`; the state is known again once every role has a value
    /// (values received while the link was down count).
    pub fn link_up(&mut self, at: Timestamp) -> Result<(), SignalError> {
        self.advance(at)?;
        self.link_up = true;
        // An invalid value received while down makes the state offline; it was reported
        // when it arrived.
        let _ = self.refresh();
        Ok(())
    }

    /// Closed intervals that can no longer change, oldest first; they are removed from the
    /// tracker. Together with earlier drains they form a contiguous, merged timeline.
    pub fn drain_closed(&mut self) -> Vec<StateInterval> {
        let keep_last = match (self.held.last(), self.open, self.last_at) {
            (Some(l), Some((start, phase)), Some(last)) => {
                self.possible(phase, start, last).contains(&l.state)
            }
            _ => false,
        };
        let n = self.held.len() - usize::from(keep_last);
        self.held.drain(..n).collect()
    }

    /// The current interval, provisional: from the start of the current state (merged with
    /// an undrained interval of the same state) to the last event. `None` before any event.
    /// May be zero-length right after a change.
    pub fn current(&self) -> Option<StateInterval> {
        self.tail().map(|(_, cur)| cur)
    }

    /// Everything not yet drained up to the last event, with the open stop classified
    /// provisionally: for a report "up to now", take the drained intervals plus these.
    pub fn pending(&self) -> Vec<StateInterval> {
        self.tail().map(|(list, _)| list).unwrap_or_default()
    }

    // -- internals

    /// Checks and moves the clock; when time moves on, the phase of the instant left behind
    /// is committed.
    fn advance(&mut self, at: Timestamp) -> Result<(), SignalError> {
        match self.last_at {
            Some(last) if at < last => return Err(SignalError::OutOfOrder { at, last }),
            Some(last) if at > last => self.commit(last),
            Some(_) => {}
            None => self.open = Some((at, self.latest)),
        }
        self.last_at = Some(at);
        Ok(())
    }

    /// `latest` is the phase from `last` on: close the open run there if it differs.
    fn commit(&mut self, last: Timestamp) {
        let Some((start, phase)) = self.open else {
            return;
        };
        if phase == self.latest {
            return;
        }
        if start < last {
            let state = self.state_of(phase, start, last);
            push_merge(
                &mut self.held,
                StateInterval {
                    from: start,
                    to: last,
                    state,
                },
            );
            self.open = Some((last, self.latest));
        } else {
            // The run began at this very instant: it never lasted, replace it.
            self.open = Some((start, self.latest));
        }
    }

    /// Recomputes `latest` from the link and the values.
    fn refresh(&mut self) -> Result<(), SignalError> {
        if !self.link_up {
            self.latest = Phase::Offline;
            return Ok(());
        }
        match self.rules.classify(|p| self.values.get(p)) {
            Ok(raw) => {
                self.latest = Phase::Known(raw);
                Ok(())
            }
            Err(e) => {
                self.latest = Phase::Offline;
                match e {
                    SignalError::Missing { .. } => Ok(()),
                    e => Err(e),
                }
            }
        }
    }

    fn state_of(&self, phase: Phase, from: Timestamp, to: Timestamp) -> State {
        match phase {
            Phase::Offline => State::Offline,
            Phase::Known(raw) => raw.to_state(
                to.duration_since(from).as_secs_f64(),
                self.rules.micro_stop_s,
            ),
        }
    }

    /// States the run `(start, phase)`, seen until `last`, may still end up with.
    fn possible(&self, phase: Phase, start: Timestamp, last: Timestamp) -> Vec<State> {
        match phase {
            Phase::Known(RawState::Stopped)
                if self.state_of(phase, start, last) == State::Delay =>
            {
                vec![State::Delay, State::Idle]
            }
            _ => vec![self.state_of(phase, start, last)],
        }
    }

    /// Undrained intervals with the open run (and a phase change at the last instant)
    /// closed provisionally at `last_at`, and the current interval.
    fn tail(&self) -> Option<(Vec<StateInterval>, StateInterval)> {
        let (start, phase) = self.open?;
        let last = self.last_at?;
        let mut list = self.held.clone();
        let (cur_start, cur_phase) = if phase == self.latest {
            (start, phase)
        } else if start < last {
            push_merge(
                &mut list,
                StateInterval {
                    from: start,
                    to: last,
                    state: self.state_of(phase, start, last),
                },
            );
            (last, self.latest)
        } else {
            (start, self.latest)
        };
        let cur = StateInterval {
            from: cur_start,
            to: last,
            state: self.state_of(cur_phase, cur_start, last),
        };
        let current = match list.last() {
            Some(l) if l.state == cur.state && l.to == cur.from => StateInterval {
                from: l.from,
                ..cur
            },
            _ => cur,
        };
        push_merge(&mut list, cur);
        Some((list, current))
    }
}

/// Appends `iv`, extending the last interval when it has the same state and touches it;
/// zero-length intervals are dropped.
fn push_merge(list: &mut Vec<StateInterval>, iv: StateInterval) {
    if iv.from >= iv.to {
        return;
    }
    if let Some(l) = list.last_mut()
        && l.state == iv.state
        && l.to == iv.from
    {
        l.to = iv.to;
        return;
    }
    list.push(iv);
}

// ---------------------------------------------------------------------------------------------
// Counters

/// The three part counts of INDICATORS.md §2.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum CounterRole {
    Produced,
    Good,
    Scrap,
}

impl CounterRole {
    /// `produced`, `good` or `scrap`.
    pub fn name(self) -> &'static str {
        match self {
            CounterRole::Produced => "produced",
            CounterRole::Good => "good",
            CounterRole::Scrap => "scrap",
        }
    }

    fn index(self) -> usize {
        match self {
            CounterRole::Produced => 0,
            CounterRole::Good => 1,
            CounterRole::Scrap => 2,
        }
    }
}

/// Counters handed out by [`CounterTracker::drain`]: `None` for a count the rules can
/// neither read nor derive.
#[derive(Debug, Clone, Default)]
pub struct PartCounters {
    pub produced: Option<Counter>,
    pub good: Option<Counter>,
    pub scrap: Option<Counter>,
}

/// Turns samples of the counter points into [`Reading`]s of core [`Counter`]s.
///
/// - Registers read directly keep their raw values and get `width_bits` from the rules; the
///   engine handles wraps and resets (docs/ENGINE.md §2.4).
/// - A derived count ([`CounterRules::derived`]) is a virtual register that starts at 0 when
///   both of its sources have a value and never wraps (`width_bits` none). It accumulates the
///   sources' deltas with the engine's own wrap/reset rule; derived good is additionally held
///   non-decreasing (`max(previous, Δproduced − Δscrap)`), because a scrap count that lags
///   its produced count by a poll would otherwise make the register step back by one, which
///   the engine would take for a reset. The hold heals itself: the total stays exact as soon
///   as produced − scrap catches up.
/// - Every accepted sample becomes a reading (thinning is the caller's job; keep at least
///   one reading per reporting window, or that window's completeness drops). A second sample
///   at the same instant replaces the first.
#[derive(Debug, Clone)]
pub struct CounterTracker {
    rules: CounterRules,
    modulus: f64,
    last_at: Option<Timestamp>,
    /// Readings not yet drained, by role index.
    buf: [Vec<Reading>; 3],
    /// Last reading handed out or buffered, by role index.
    last: [Option<Reading>; 3],
    /// Last raw value of each read role (for derivation).
    raw: [Option<f64>; 3],
    /// Deltas accumulated by each source since the derivation started.
    acc: [f64; 3],
    /// Current value of the derived register, once started.
    derived_value: Option<f64>,
}

impl CounterTracker {
    /// A tracker for these rules (checked with [`CounterRules::validate_roles`]).
    pub fn new(rules: CounterRules) -> Result<CounterTracker, RulesError> {
        rules.validate_roles()?;
        let modulus = 2f64.powi(i32::from(rules.width_bits));
        Ok(CounterTracker {
            rules,
            modulus,
            last_at: None,
            buf: Default::default(),
            last: [None; 3],
            raw: [None; 3],
            acc: [0.0; 3],
            derived_value: None,
        })
    }

    /// The rules in use.
    pub fn rules(&self) -> &CounterRules {
        &self.rules
    }

    /// A sample of `point` at `at`. Points the rules do not read only advance time.
    ///
    /// Errors (nothing recorded): [`SignalError::OutOfOrder`]; [`SignalError::Invalid`] for a
    /// value that is not a finite number ≥ 0; [`SignalError::Conflict`] for a different value
    /// at an instant already drained.
    pub fn update(&mut self, at: Timestamp, point: &str, value: &Value) -> Result<(), SignalError> {
        if let Some(last) = self.last_at
            && at < last
        {
            return Err(SignalError::OutOfOrder { at, last });
        }
        let roles: Vec<CounterRole> = self
            .rules
            .roles()
            .into_iter()
            .filter(|(_, p)| *p == point)
            .map(|(r, _)| r)
            .collect();
        // Check everything before recording anything, so an error leaves no trace.
        let mut samples = Vec::with_capacity(roles.len());
        for role in roles {
            let v = counter_value(role, point, value)?;
            let i = role.index();
            if let Some(l) = self.last[i] {
                let drained = self.buf[i].last().is_none_or(|b| b.at != at);
                if l.at == at && drained && l.value.to_bits() != v.to_bits() {
                    return Err(SignalError::Conflict {
                        point: point.into(),
                        at,
                    });
                }
            }
            samples.push((role, v));
        }
        self.last_at = Some(at);
        for (role, v) in samples {
            let i = role.index();
            record(
                &mut self.buf[i],
                &mut self.last[i],
                Reading { at, value: v },
            );
            if let Some(prev) = self.raw[i] {
                self.acc[i] += delta(prev, v, self.modulus);
            }
            self.raw[i] = Some(v);
            self.derive(at, role);
        }
        Ok(())
    }

    /// Updates the derived register after a sample of `role`.
    fn derive(&mut self, at: Timestamp, role: CounterRole) {
        let Some(target) = self.rules.derived() else {
            return;
        };
        let (a, b) = match target {
            CounterRole::Good => (CounterRole::Produced, CounterRole::Scrap),
            _ => (CounterRole::Good, CounterRole::Scrap),
        };
        if role != a && role != b {
            return;
        }
        if self.raw[a.index()].is_none() || self.raw[b.index()].is_none() {
            return;
        }
        let value = match self.derived_value {
            None => {
                // Both sources known for the first time: the virtual register starts at 0.
                self.acc[a.index()] = 0.0;
                self.acc[b.index()] = 0.0;
                0.0
            }
            Some(prev) => {
                let (da, db) = (self.acc[a.index()], self.acc[b.index()]);
                if target == CounterRole::Good {
                    prev.max(da - db)
                } else {
                    da + db
                }
            }
        };
        self.derived_value = Some(value);
        let t = target.index();
        let drained_at_same_instant = self.last[t].is_some_and(|l| l.at == at)
            && self.buf[t].last().is_none_or(|b| b.at != at);
        // A derived reading at an instant already handed out is skipped: the next sample
        // carries the new total.
        if !drained_at_same_instant {
            record(&mut self.buf[t], &mut self.last[t], Reading { at, value });
        }
    }

    /// The readings since the last drain, as core counters.
    pub fn drain(&mut self) -> PartCounters {
        let derived = self.rules.derived();
        let mut out: [Option<Counter>; 3] = [None, None, None];
        for role in [CounterRole::Produced, CounterRole::Good, CounterRole::Scrap] {
            let read = self.rules.roles().iter().any(|(r, _)| *r == role);
            if !read && derived != Some(role) {
                continue;
            }
            let readings = std::mem::take(&mut self.buf[role.index()]);
            out[role.index()] = Some(Counter {
                readings,
                width_bits: if read {
                    Some(self.rules.width_bits)
                } else {
                    None
                },
                rollover: None,
                replaced_at: Vec::new(),
            });
        }
        let [produced, good, scrap] = out;
        PartCounters {
            produced,
            good,
            scrap,
        }
    }
}

/// A counter sample as a number: finite and ≥ 0.
fn counter_value(role: CounterRole, point: &str, value: &Value) -> Result<f64, SignalError> {
    let invalid = |reason: String| SignalError::Invalid {
        role: role.name().into(),
        point: point.into(),
        reason,
    };
    let v = match value {
        Value::Int(_) | Value::UInt(_) | Value::Float(_) => value.as_f64().unwrap_or(f64::NAN),
        Value::Bool(_) | Value::Text(_) => {
            return Err(invalid(format!("{value} where a count is expected")));
        }
    };
    if !(v.is_finite() && v >= 0.0) {
        return Err(invalid(format!("{value} is not a count (finite, ≥ 0)")));
    }
    Ok(v)
}

/// Appends a reading, or replaces the buffered one at the same instant.
fn record(buf: &mut Vec<Reading>, last: &mut Option<Reading>, r: Reading) {
    match buf.last_mut() {
        Some(b) if b.at == r.at => b.value = r.value,
        _ => buf.push(r),
    }
    *last = Some(r);
}

/// The increase from `prev` to `next` by the rule of docs/ENGINE.md §2.4 step 3: a decrease
/// is a wrap when it is the shorter way round the register, else a reset to zero.
fn delta(prev: f64, next: f64, modulus: f64) -> f64 {
    if next >= prev {
        next - prev
    } else if modulus - prev + next <= modulus / 2.0 {
        modulus - prev + next
    } else {
        next
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(model: StateModel, signals: &[(&str, &str)]) -> StateRules {
        StateRules {
            model,
            micro_stop_s: 120.0,
            signals: signals
                .iter()
                .map(|(r, p)| ((*r).to_owned(), (*p).to_owned()))
                .collect(),
            colours: BTreeMap::new(),
        }
    }

    #[test]
    fn unknown_role_lists_the_allowed_ones() {
        let r = rules(StateModel::RunAlarm, &[("run", "a"), ("spindle", "b")]);
        let e = r.validate_roles().unwrap_err();
        assert_eq!(e.path, "signals.spindle");
        assert!(e.reason.contains("run, alarm, setup, planned_down"), "{e}");
    }

    #[test]
    fn missing_required_role_is_named() {
        let r = rules(StateModel::Robot, &[("operational_mode", "m")]);
        let e = r.validate_roles().unwrap_err();
        assert!(e.reason.contains("`emergency_stop`"), "{e}");
    }

    #[test]
    fn delta_follows_the_engine_rule() {
        assert_eq!(delta(5.0, 9.0, 65536.0), 4.0);
        assert_eq!(delta(65530.0, 4.0, 65536.0), 10.0);
        assert_eq!(delta(30000.0, 2.0, 65536.0), 2.0);
    }

    #[test]
    fn precedence_orders_meanings() {
        assert!(RawState::Alarm.precedence() > RawState::Producing.precedence());
        assert!(RawState::Producing.precedence() > RawState::Stopped.precedence());
    }
}
