//! Scenario files (`shopfloor-sim --scenario FILE`, TOML): which servers to run, which devices
//! sit behind them, and what each device does over time.
//!
//! Every value is a pure function of simulated time (`t` seconds since start, scaled by
//! `time_scale`), so a scenario replays identically and tests can compute the expected values.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use shopfloor_devices::Template;
use shopfloor_devices::signals::RawState;

use crate::modbus::Holes;
use crate::signals::Fault;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    pub name: String,
    /// Simulated seconds per real second (speeds up shifts for demos and tests).
    #[serde(default = "one")]
    pub time_scale: f64,
    /// How often values are recomputed, real milliseconds.
    #[serde(default = "d_tick")]
    pub tick_ms: u64,
    /// Extra template files or directories (relative to the scenario file); built-ins always.
    #[serde(default)]
    pub templates: Vec<PathBuf>,
    #[serde(default)]
    pub modbus_tcp: Vec<TcpServerSpec>,
    #[serde(default)]
    pub modbus_rtu: Vec<RtuLineSpec>,
    #[serde(default)]
    pub opcua: Vec<OpcuaServerSpec>,
    #[serde(rename = "device")]
    pub devices: Vec<DeviceSpec>,
}

fn one() -> f64 {
    1.0
}
fn d_tick() -> u64 {
    100
}

/// A Modbus TCP listener (a device, or a gateway with several unit ids).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TcpServerSpec {
    pub name: String,
    /// `127.0.0.1:5020`; port 0 picks a free port (printed at start).
    pub listen: String,
}

/// A Modbus RTU line on a pseudo-terminal pair.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RtuLineSpec {
    pub name: String,
    /// A stable symlink to create for the pty (e.g. `/tmp/shopfloor-line1`).
    #[serde(default)]
    pub link: Option<PathBuf>,
}

/// An OPC UA server.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OpcuaServerSpec {
    pub name: String,
    pub listen: String,
    /// Also offer Basic256Sha256 Sign and SignAndEncrypt endpoints.
    #[serde(default)]
    pub secure: bool,
    #[serde(default)]
    pub users: Vec<UserSpec>,
    /// X.509 certificates (`.der` or `.pem`, relative to the scenario file) of users who may
    /// log in with a certificate identity, e.g. `user_certs = ["users/operator.der"]`. Loading
    /// resolves them against the scenario's directory and checks that the files exist.
    #[serde(default)]
    pub user_certs: Vec<PathBuf>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserSpec {
    pub user: String,
    pub password: String,
}

/// One simulated device.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceSpec {
    pub name: String,
    /// Template id (built-in or from `templates`).
    pub template: String,
    /// Name of the server (TCP listener, RTU line or OPC UA server) it sits behind.
    pub server: String,
    /// Modbus unit id.
    #[serde(default = "d_unit")]
    pub unit: u8,
    /// What addresses no point covers answer (Modbus).
    #[serde(default)]
    pub holes: Holes,
    /// A machine's cycle of states, with parts and scrap.
    #[serde(default)]
    pub machine: Option<MachineScript>,
    /// Points that grow steadily (energy, volume, running hours).
    #[serde(default, rename = "ramp")]
    pub ramps: Vec<Ramp>,
    /// Fixed values of points (anything not scripted reads 0 otherwise).
    #[serde(default)]
    pub values: BTreeMap<String, toml::Value>,
    /// Scheduled misbehaviour.
    #[serde(default, rename = "fault")]
    pub faults: Vec<FaultWindow>,
}

fn d_unit() -> u8 {
    1
}

/// A machine's repeating program.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MachineScript {
    /// Seconds per part while producing.
    #[serde(default = "d_cycle")]
    pub cycle_s: f64,
    /// Every n-th part is scrap (0: none).
    #[serde(default)]
    pub scrap_every: u64,
    /// Counter value at t = 0 (set near 2^width to exercise rollover).
    #[serde(default)]
    pub counter_start: u64,
    pub phases: Vec<Phase>,
}

fn d_cycle() -> f64 {
    30.0
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Phase {
    /// What the machine does: the same raw states the agent's rules classify into.
    pub state: RawState,
    pub for_s: f64,
    /// Alarm number shown while in `alarm`.
    #[serde(default)]
    pub alarm_code: Option<u32>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Ramp {
    pub point: String,
    /// Growth per simulated hour, in the point's engineering unit.
    pub per_hour: f64,
    #[serde(default)]
    pub start: f64,
    /// Only grow while the machine is producing (a spindle's energy).
    #[serde(default)]
    pub while_producing: bool,
    /// A daily load profile: 24 factors ≥ 0, one per hour of the day counted from simulated
    /// time 0 (the demo starts simulated time at a local midnight); the point grows
    /// `per_hour × factor` in that hour. Empty: a constant rate. Not with `while_producing`.
    #[serde(default)]
    pub day_profile: Vec<f64>,
}

impl Ramp {
    /// Hours of growth at full rate up to simulated time `t` (seconds), following the day
    /// profile when there is one.
    pub fn hours_at(&self, t: f64) -> f64 {
        let hours = t.max(0.0) / 3600.0;
        if self.day_profile.len() != 24 {
            return hours;
        }
        let per_day: f64 = self.day_profile.iter().sum();
        let days = (hours / 24.0).floor();
        let mut within = hours - days * 24.0;
        let mut total = days * per_day;
        for f in &self.day_profile {
            if within <= 0.0 {
                break;
            }
            total += f * within.min(1.0);
            within -= 1.0;
        }
        total
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultWindow {
    pub fault: Fault,
    /// Simulated seconds from start.
    pub at_s: f64,
    /// Duration; forever when absent.
    #[serde(default)]
    pub for_s: Option<f64>,
}

/// A scenario problem, with the field it concerns.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{file}: {path}: {reason}")]
pub struct ScenarioError {
    pub file: String,
    pub path: String,
    pub reason: String,
}

/// A scenario with its templates loaded and checked.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub scenario: Scenario,
    /// Template per device, in device order.
    pub templates: Vec<Template>,
}

impl Scenario {
    /// Reads, parses and validates a scenario file.
    pub fn load(path: &Path) -> Result<Loaded, ScenarioError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| ScenarioError {
            file: file.clone(),
            path: "-".into(),
            reason: e.to_string(),
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        Self::from_str(&text, &file, base)
    }

    /// Parses and validates scenario text; `base` resolves relative template paths.
    pub fn from_str(text: &str, file: &str, base: &Path) -> Result<Loaded, ScenarioError> {
        let e = |path: String, reason: String| ScenarioError {
            file: file.to_owned(),
            path,
            reason,
        };
        let mut scenario: Scenario =
            toml::from_str(text).map_err(|x| e("-".into(), x.to_string()))?;
        if !(scenario.time_scale.is_finite()
            && scenario.time_scale > 0.0
            && scenario.time_scale <= 100_000.0)
        {
            return Err(e("time_scale".into(), "must be > 0 and ≤ 100000".into()));
        }
        if !(10..=60_000).contains(&scenario.tick_ms) {
            return Err(e("tick_ms".into(), "must be 10..=60000".into()));
        }
        let mut extra: Vec<Template> = Vec::new();
        for (i, p) in scenario.templates.iter().enumerate() {
            let p = base.join(p);
            let files: Vec<PathBuf> = if p.is_dir() {
                let mut v: Vec<PathBuf> = std::fs::read_dir(&p)
                    .map_err(|x| e(format!("templates[{i}]"), format!("{}: {x}", p.display())))?
                    .filter_map(|d| d.ok().map(|d| d.path()))
                    .filter(|f| f.extension().is_some_and(|x| x == "toml"))
                    .collect();
                v.sort();
                v
            } else {
                vec![p]
            };
            for f in files {
                let text = std::fs::read_to_string(&f)
                    .map_err(|x| e(format!("templates[{i}]"), format!("{}: {x}", f.display())))?;
                let t = Template::parse(&text)
                    .map_err(|x| e(format!("templates[{i}]"), format!("{}: {x}", f.display())))?;
                extra.push(t);
            }
        }
        let mut names = std::collections::BTreeSet::new();
        let servers: Vec<&str> = scenario
            .modbus_tcp
            .iter()
            .map(|s| s.name.as_str())
            .chain(scenario.modbus_rtu.iter().map(|s| s.name.as_str()))
            .chain(scenario.opcua.iter().map(|s| s.name.as_str()))
            .collect();
        let mut seen = std::collections::BTreeSet::new();
        for s in &servers {
            if !seen.insert(*s) {
                return Err(e("-".into(), format!("two servers are named `{s}`")));
            }
        }
        for (k, server) in scenario.opcua.iter_mut().enumerate() {
            for (j, cert) in server.user_certs.iter_mut().enumerate() {
                let at = format!("opcua[{k}].user_certs[{j}]");
                let path = base.join(&*cert);
                if !path.extension().is_some_and(|x| x == "der" || x == "pem") {
                    return Err(e(
                        at,
                        format!(
                            "{}: a certificate must be a .der or .pem file",
                            path.display()
                        ),
                    ));
                }
                if !path.is_file() {
                    return Err(e(at, format!("{}: no such file", path.display())));
                }
                *cert = path;
            }
        }
        let mut templates = Vec::with_capacity(scenario.devices.len());
        let mut units = std::collections::BTreeSet::new();
        for (i, d) in scenario.devices.iter().enumerate() {
            let at = |f: &str| format!("device[{i}].{f}");
            if !names.insert(d.name.clone()) {
                return Err(e(at("name"), format!("two devices are named `{}`", d.name)));
            }
            let t = match extra.iter().find(|t| t.id == d.template) {
                Some(t) => t.clone(),
                None => match shopfloor_devices::template::builtin(&d.template) {
                    Some(Ok(t)) => t,
                    Some(Err(x)) => return Err(e(at("template"), x.to_string())),
                    None => {
                        return Err(e(
                            at("template"),
                            format!(
                                "no template `{}` (built in: {})",
                                d.template,
                                shopfloor_devices::template::builtin_ids().join(", ")
                            ),
                        ));
                    }
                },
            };
            let is_opcua_server = scenario.opcua.iter().any(|s| s.name == d.server);
            let is_modbus_server = scenario.modbus_tcp.iter().any(|s| s.name == d.server)
                || scenario.modbus_rtu.iter().any(|s| s.name == d.server);
            match t.protocol {
                shopfloor_devices::Protocol::Modbus if !is_modbus_server => {
                    return Err(e(
                        at("server"),
                        format!("no Modbus server or line named `{}`", d.server),
                    ));
                }
                shopfloor_devices::Protocol::Opcua if !is_opcua_server => {
                    return Err(e(
                        at("server"),
                        format!("no OPC UA server named `{}`", d.server),
                    ));
                }
                _ => {}
            }
            if is_modbus_server && !units.insert((d.server.clone(), d.unit)) {
                return Err(e(
                    at("unit"),
                    format!("unit {} is used twice on `{}`", d.unit, d.server),
                ));
            }
            let point_names: std::collections::BTreeSet<&str> =
                t.points.iter().map(|p| p.name.as_str()).collect();
            for (k, r) in d.ramps.iter().enumerate() {
                if !point_names.contains(r.point.as_str()) {
                    return Err(e(
                        format!("device[{i}].ramp[{k}].point"),
                        format!("template `{}` has no point `{}`", t.id, r.point),
                    ));
                }
                if !r.per_hour.is_finite() || !r.start.is_finite() {
                    return Err(e(
                        format!("device[{i}].ramp[{k}].per_hour"),
                        "must be finite".into(),
                    ));
                }
                if !r.day_profile.is_empty() {
                    let field = format!("device[{i}].ramp[{k}].day_profile");
                    if r.day_profile.len() != 24 {
                        return Err(e(
                            field,
                            format!(
                                "has {} factors; one per hour (24) is needed",
                                r.day_profile.len()
                            ),
                        ));
                    }
                    if r.day_profile.iter().any(|f| !f.is_finite() || *f < 0.0) {
                        return Err(e(field, "factors must be finite and ≥ 0".into()));
                    }
                    if r.while_producing {
                        return Err(e(
                            field,
                            "a day profile and while_producing exclude each other".into(),
                        ));
                    }
                }
            }
            for name in d.values.keys() {
                if !point_names.contains(name.as_str()) {
                    return Err(e(
                        format!("device[{i}].values.{name}"),
                        format!("template `{}` has no such point", t.id),
                    ));
                }
            }
            if let Some(m) = &d.machine {
                if !(m.cycle_s.is_finite() && m.cycle_s > 0.0) {
                    return Err(e(at("machine.cycle_s"), "must be > 0".into()));
                }
                if m.phases.is_empty() {
                    return Err(e(at("machine.phases"), "needs at least one phase".into()));
                }
                for (k, p) in m.phases.iter().enumerate() {
                    if !(p.for_s.is_finite() && p.for_s > 0.0) {
                        return Err(e(
                            format!("device[{i}].machine.phases[{k}].for_s"),
                            "must be > 0".into(),
                        ));
                    }
                }
                if t.states.is_none() && t.counters.is_none() {
                    return Err(e(
                        at("machine"),
                        format!("template `{}` has no [states] or [counters] to drive", t.id),
                    ));
                }
            }
            for (k, f) in d.faults.iter().enumerate() {
                if !(f.at_s.is_finite() && f.at_s >= 0.0)
                    || f.for_s.is_some_and(|x| !(x.is_finite() && x > 0.0))
                {
                    return Err(e(
                        format!("device[{i}].fault[{k}]"),
                        "at_s must be ≥ 0 and for_s > 0".into(),
                    ));
                }
            }
            templates.push(t);
        }
        Ok(Loaded {
            scenario,
            templates,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SERVER: &str =
        "name = \"x\"\ndevice = []\n[[opcua]]\nname = \"s\"\nlisten = \"127.0.0.1:0\"\n";

    #[test]
    fn user_certs_resolve_against_the_scenario_directory() {
        let dir = tempfile::TempDir::new().unwrap();
        std::fs::create_dir(dir.path().join("users")).unwrap();
        std::fs::write(dir.path().join("users/op.der"), b"not checked here").unwrap();
        let text = format!("{SERVER}user_certs = [\"users/op.der\"]\n");
        let loaded = Scenario::from_str(&text, "t.toml", dir.path()).unwrap();
        assert_eq!(
            loaded.scenario.opcua[0].user_certs,
            vec![dir.path().join("users/op.der")]
        );
        let none = Scenario::from_str(SERVER, "t.toml", dir.path()).unwrap();
        assert!(none.scenario.opcua[0].user_certs.is_empty());

        for (cert, reason) in [
            ("users/nope.der", "no such file"),
            ("users/op.crt", ".der or .pem"),
        ] {
            let text = format!("{SERVER}user_certs = [\"{cert}\"]\n");
            let err = Scenario::from_str(&text, "t.toml", dir.path()).unwrap_err();
            assert_eq!(err.path, "opcua[0].user_certs[0]", "{err}");
            assert!(err.reason.contains(reason), "{err}");
        }
    }
}
