//! Device behaviour: the values of a simulated device's points as a pure function of simulated
//! time, written into its [`Signals`] on every tick. The machine's state drives the template's
//! `[states]` roles (run flag, alarm code, OPC 40001 item state, robot mode, ...) in the way
//! the agent's rules read them back, and its part count drives the `[counters]` points.

use std::sync::Arc;

use shopfloor_devices::codec::{DataType, Value};
use shopfloor_devices::signals::{RawState, StateModel};
use shopfloor_devices::{Protocol, Template};

use crate::scenario::{DeviceSpec, MachineScript};
use crate::signals::{Fault, Signals};

/// A machine's position in its program at time `t`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MachineAt {
    pub state: RawState,
    pub alarm_code: u32,
    /// Parts completed since t = 0.
    pub parts: u64,
    pub scrap: u64,
    /// Seconds spent producing since t = 0.
    pub producing_s: f64,
}

/// Where the machine program stands at simulated time `t` (seconds).
pub fn machine_at(m: &MachineScript, t: f64) -> MachineAt {
    let round: f64 = m.phases.iter().map(|p| p.for_s).sum();
    let producing_per_round: f64 = m
        .phases
        .iter()
        .filter(|p| p.state == RawState::Producing)
        .map(|p| p.for_s)
        .sum();
    let t = t.max(0.0);
    let rounds = (t / round).floor();
    let mut within = t - rounds * round;
    let mut producing_s = rounds * producing_per_round;
    let mut state = m.phases.first().map_or(RawState::Off, |p| p.state);
    let mut alarm_code = 0;
    for p in &m.phases {
        state = p.state;
        alarm_code = p.alarm_code.unwrap_or(0);
        if within < p.for_s {
            if p.state == RawState::Producing {
                producing_s += within;
            }
            break;
        }
        if p.state == RawState::Producing {
            producing_s += p.for_s;
        }
        within -= p.for_s;
    }
    let parts = (producing_s / m.cycle_s).floor() as u64;
    let scrap = parts.checked_div(m.scrap_every).unwrap_or(0);
    if state != RawState::Alarm {
        alarm_code = 0;
    } else if alarm_code == 0 {
        alarm_code = 1;
    }
    MachineAt {
        state,
        alarm_code,
        parts,
        scrap,
        producing_s,
    }
}

/// One simulated device: its spec, template and live signals.
#[derive(Debug)]
pub struct Device {
    pub spec: DeviceSpec,
    pub template: Template,
    pub signals: Arc<Signals>,
}

impl Device {
    pub fn new(spec: DeviceSpec, template: Template) -> Self {
        Device {
            spec,
            template,
            signals: Arc::new(Signals::new()),
        }
    }

    fn point_type(&self, name: &str) -> Option<DataType> {
        let p = self.template.points.iter().find(|p| p.name == name)?;
        match self.template.protocol {
            Protocol::Modbus => Some(p.data_type.unwrap_or(DataType::U16)),
            Protocol::Opcua => None,
        }
    }

    fn set(&self, name: &str, v: Value) {
        self.signals.set(name, v);
    }

    /// Writes every scripted value for simulated time `t`.
    pub fn update(&self, t: f64) {
        // Fixed values first, so scripts override them.
        for (name, v) in &self.spec.values {
            let value = match v {
                toml::Value::Boolean(b) => Value::Bool(*b),
                toml::Value::Integer(i) => Value::Int(*i),
                toml::Value::Float(f) => Value::Float(*f),
                toml::Value::String(s) => Value::Text(s.clone()),
                other => Value::Text(format!("{other:?}")),
            };
            self.set(name, value);
        }
        let machine = self.spec.machine.as_ref().map(|m| (m, machine_at(m, t)));
        if let Some((m, at)) = machine {
            self.drive_states(at);
            self.drive_counters(m, at);
        }
        for r in &self.spec.ramps {
            let hours = match (r.while_producing, machine) {
                (true, Some((_, at))) => at.producing_s / 3600.0,
                _ => r.hours_at(t),
            };
            let x = r.start + r.per_hour * hours;
            let v = match self.point_type(&r.point) {
                Some(DataType::F32 | DataType::F64) | None => Value::Float(x),
                Some(_) => Value::UInt(x.max(0.0).floor() as u64),
            };
            self.set(&r.point, v);
        }
        let mut fault = Fault::None;
        for f in &self.spec.faults {
            if t >= f.at_s && f.for_s.is_none_or(|d| t < f.at_s + d) {
                fault = f.fault;
            }
        }
        if !self.spec.faults.is_empty() {
            self.signals.set_fault(fault);
        }
    }

    fn role(&self, role: &str) -> Option<&str> {
        self.template
            .states
            .as_ref()?
            .signals
            .get(role)
            .map(String::as_str)
    }

    fn drive_states(&self, at: MachineAt) {
        let Some(rules) = &self.template.states else {
            return;
        };
        let s = at.state;
        let put = |role: &str, v: Value| {
            if let Some(p) = self.role(role) {
                self.set(p, v);
            }
        };
        match rules.model {
            StateModel::RunAlarm => {
                put("run", Value::Bool(s == RawState::Producing));
                put("alarm", Value::UInt(u64::from(at.alarm_code)));
                put("setup", Value::Bool(s == RawState::Setup));
                put("planned_down", Value::Bool(s == RawState::PlannedDown));
            }
            StateModel::StackLight => {
                // Light the lamps whose configured meaning is the machine's state (the rules'
                // colour table, IEC 60204-1 defaults); no lamp for a state means all dark.
                let mut lit = false;
                for colour in ["green", "yellow", "red", "blue"] {
                    let on = !lit && rules.colour_meaning(colour) == Some(s);
                    lit |= on;
                    put(colour, Value::Bool(on));
                }
            }
            StateModel::Machinery => {
                // OPC 40001-1: item state NotAvailable 0, OutOfService 1, NotExecuting 2,
                // Executing 3; operation mode None 0, Maintenance 1, Setup 2, Processing 3.
                let (item, mode) = match s {
                    RawState::Producing => (3, 3),
                    RawState::Setup => (3, 2),
                    RawState::Alarm => (1, 3),
                    RawState::Stopped => (2, 3),
                    RawState::PlannedDown => (2, 1),
                    RawState::Off => (0, 0),
                };
                put("item_state", Value::UInt(item));
                put("operation_mode", Value::UInt(mode));
            }
            StateModel::Robot => {
                // OPC 40010-1 OperationalMode: MANUAL_REDUCED_SPEED 1, AUTOMATIC 3.
                let mode = if s == RawState::Setup { 1 } else { 3 };
                put("operational_mode", Value::Int(mode));
                put("emergency_stop", Value::Bool(false));
                put("protective_stop", Value::Bool(s == RawState::Alarm));
                put("task_running", Value::Bool(s == RawState::Producing));
                put("in_motion", Value::Bool(s == RawState::Producing));
            }
        }
    }

    fn drive_counters(&self, m: &MachineScript, at: MachineAt) {
        let Some(c) = &self.template.counters else {
            return;
        };
        let modulus = if c.width_bits >= 64 {
            None
        } else {
            Some(1u64 << c.width_bits)
        };
        let wrap = |x: u64| modulus.map_or(x, |m| x % m);
        let start = m.counter_start;
        if let Some(p) = &c.produced {
            self.set(p, Value::UInt(wrap(start.wrapping_add(at.parts))));
        }
        if let Some(p) = &c.good {
            self.set(
                p,
                Value::UInt(wrap(start.wrapping_add(at.parts - at.scrap))),
            );
        }
        if let Some(p) = &c.scrap {
            self.set(p, Value::UInt(wrap(at.scrap)));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenario::Phase;

    #[test]
    fn day_profile_integrates_hour_by_hour() {
        let mut profile = vec![0.0; 24];
        profile[8] = 1.0;
        profile[9] = 0.5;
        let r = crate::scenario::Ramp {
            point: "e".into(),
            per_hour: 100.0,
            start: 0.0,
            while_producing: false,
            day_profile: profile,
        };
        assert_eq!(r.hours_at(8.0 * 3600.0), 0.0);
        assert_eq!(r.hours_at(8.5 * 3600.0), 0.5);
        assert_eq!(r.hours_at(9.5 * 3600.0), 1.25);
        assert_eq!(r.hours_at(24.0 * 3600.0), 1.5);
        assert_eq!(r.hours_at(24.0 * 3600.0 + 8.5 * 3600.0), 2.0);
        let flat = crate::scenario::Ramp {
            day_profile: Vec::new(),
            ..r
        };
        assert_eq!(flat.hours_at(7200.0), 2.0);
    }

    #[test]
    fn program_position_and_parts() {
        let m = MachineScript {
            cycle_s: 10.0,
            scrap_every: 4,
            counter_start: 0,
            phases: vec![
                Phase {
                    state: RawState::Producing,
                    for_s: 100.0,
                    alarm_code: None,
                },
                Phase {
                    state: RawState::Alarm,
                    for_s: 20.0,
                    alarm_code: Some(17),
                },
            ],
        };
        let a = machine_at(&m, 55.0);
        assert_eq!((a.state, a.parts, a.scrap), (RawState::Producing, 5, 1));
        let a = machine_at(&m, 110.0);
        assert_eq!((a.state, a.alarm_code, a.parts), (RawState::Alarm, 17, 10));
        // Second round: 100 s + 30 s producing.
        let a = machine_at(&m, 150.0);
        assert_eq!((a.state, a.parts, a.scrap), (RawState::Producing, 13, 3));
    }
}
