//! The agent's configuration (TOML, documented for plant engineers in `docs/CONFIG.md`).
//!
//! Invariants:
//! - nothing starts on an unvalidated configuration: [`load`] reads, parses, validates and
//!   resolves every device (template + address + overrides) before it returns;
//! - unknown keys are rejected at every level (`deny_unknown_fields`), so a typo never silently
//!   falls back to a default;
//! - every problem is reported, not only the first: each section and each `[[product]]`,
//!   `[[bus]]` and `[[device]]` entry is parsed on its own, and semantic checks run over
//!   everything that parsed; each error names the file, the field path (`device[2].unit`,
//!   `mqtt.url`, `bus[0].baud`) and a reason;
//! - relative paths (`data_dir`, `templates_dir`, password and certificate files) are relative
//!   to the directory of the config file, never to the working directory;
//! - files the agent needs at run time (password files, TLS and user certificates) are read at
//!   load time, so `check` finds a missing one.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::ops::{Deref, Range, RangeInclusive};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use serde::de::DeserializeOwned;
use toml::Spanned;
use toml::de::{DeTable, DeValue, ValueDeserializer};

use shopfloor_acquire::modbus::{BusConfig, DeviceConfig, Parity, SerialSettings, Transport};
use shopfloor_acquire::opcua::{Identity, Mode, OpcuaConfig, OpcuaError, Policy};
use shopfloor_core::path::EntityPath;
use shopfloor_devices::signals::{CounterRules, StateRules};
use shopfloor_devices::template::{
    self, MeterRules, ModbusDevice, OpcuaDevice, Overrides, Protocol, Template, TemplateError,
};

// ---------------------------------------------------------------------------------------------
// Errors

/// One problem in a configuration (or in a template file it loads).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The file the problem is in: the config file, or a file of `agent.templates_dir`.
    pub file: PathBuf,
    /// Field path (`device[2].unit`, `mqtt.url`); `line L, column C` for a TOML syntax error;
    /// empty when the whole file is concerned (cannot be read).
    pub path: String,
    pub reason: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            write!(f, "{}: {}", self.file.display(), self.reason)
        } else {
            write!(f, "{}: {}: {}", self.file.display(), self.path, self.reason)
        }
    }
}

impl std::error::Error for ConfigError {}

/// Every problem found in a configuration, in file order as far as possible.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl ConfigErrors {
    pub fn into_vec(self) -> Vec<ConfigError> {
        self.0
    }
}

impl Deref for ConfigErrors {
    type Target = [ConfigError];
    fn deref(&self) -> &[ConfigError] {
        &self.0
    }
}

impl IntoIterator for ConfigErrors {
    type Item = ConfigError;
    type IntoIter = std::vec::IntoIter<ConfigError>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.into_iter()
    }
}

/// One error a line.
impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// Collects errors of one load.
struct Errs {
    file: PathBuf,
    list: Vec<ConfigError>,
}

impl Errs {
    fn push(&mut self, path: impl Into<String>, reason: impl Into<String>) {
        self.list.push(ConfigError {
            file: self.file.clone(),
            path: path.into(),
            reason: reason.into(),
        });
    }

    fn push_in(&mut self, file: &Path, path: impl Into<String>, reason: impl Into<String>) {
        self.list.push(ConfigError {
            file: file.to_path_buf(),
            path: path.into(),
            reason: reason.into(),
        });
    }
}

// ---------------------------------------------------------------------------------------------
// Resolved configuration

/// A validated agent configuration with every device resolved.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// The file it was loaded from.
    pub file: PathBuf,
    pub agent: AgentSection,
    pub mqtt: MqttSection,
    pub batch: BatchSection,
    pub outbox: OutboxSection,
    pub metrics: MetricsSection,
    pub indicators: IndicatorsSection,
    pub products: Vec<ProductDef>,
    /// Every Modbus link: the `[[bus]]` entries, then one per Modbus device with its own
    /// `host` (named after the device id).
    pub buses: Vec<BusDef>,
    /// Enabled devices, in file order (`enabled = false` devices are validated, then left out).
    pub devices: Vec<DeviceDef>,
}

/// `[agent]`.
#[derive(Debug, Clone)]
pub struct AgentSection {
    pub id: String,
    /// Entity path of the workshop (or line) the agent serves; every device lies below it.
    pub workshop: String,
    /// Absolute, or joined to the config file's directory.
    pub data_dir: PathBuf,
    /// IANA time zone of shifts and local times.
    pub time_zone: String,
}

/// `[mqtt]`.
#[derive(Debug, Clone)]
pub struct MqttSection {
    pub host: String,
    pub port: u16,
    /// Present exactly for `mqtts://`.
    pub tls: Option<TlsFiles>,
    pub username: Option<String>,
    /// From `password` or the contents of `password_file`.
    pub password: Option<String>,
    pub client_id: String,
    pub topic_prefix: String,
    pub keep_alive: Duration,
    pub inflight: u16,
    pub reconnect_min: Duration,
    pub reconnect_max: Duration,
}

/// `[mqtt.tls]`: PEM files, checked readable at load time.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub ca: PathBuf,
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
}

/// `[batch]`.
#[derive(Debug, Clone)]
pub struct BatchSection {
    pub interval: Duration,
    pub max_samples: usize,
    /// Report by exception: an unchanged point is still reported after this long.
    pub heartbeat: Duration,
}

/// `[outbox]`.
#[derive(Debug, Clone)]
pub struct OutboxSection {
    pub budget_bytes: u64,
    /// `"full"` or `"normal"` (SQLite `synchronous`).
    pub fsync: String,
}

/// `[metrics]`.
#[derive(Debug, Clone)]
pub struct MetricsSection {
    /// `None`: `listen = "off"`.
    pub listen: Option<SocketAddr>,
}

/// `[indicators]`.
#[derive(Debug, Clone)]
pub struct IndicatorsSection {
    pub rolling: Vec<Duration>,
    pub shifts: Vec<ShiftDef>,
}

/// `[[indicators.shift]]`.
#[derive(Debug, Clone)]
pub struct ShiftDef {
    pub name: String,
    /// Local start time in `agent.time_zone`.
    pub start: jiff::civil::Time,
    /// Length, 0 < hours ≤ 24; a shift may run past midnight.
    pub hours: f64,
}

/// `[[product]]`.
#[derive(Debug, Clone)]
pub struct ProductDef {
    pub id: String,
    pub ideal_cycle_s: f64,
    pub value_added_per_unit_cny: Option<f64>,
}

/// A Modbus link: a `[[bus]]`, or the implicit one of a device with its own `host`.
#[derive(Debug, Clone)]
pub struct BusDef {
    pub name: String,
    pub config: BusConfig,
}

/// A `[[device]]`, resolved.
#[derive(Debug, Clone)]
pub struct DeviceDef {
    /// Entity path.
    pub id: String,
    /// The template as loaded (before the device's overrides); shared by its devices.
    pub template: Arc<Template>,
    /// Equipment kind from the template (`cnc`, `robot`, `meter`, ...).
    pub kind: String,
    /// `cnc`, `plc`, `dcs`, `robot` or `manual`: the device's `control`, else the template's.
    pub control: Option<String>,
    /// Energy or water carrier of a meter, from the template.
    pub carrier: Option<String>,
    pub key_process: Option<String>,
    /// A `[[product]]` id.
    pub product: Option<String>,
    pub networked: bool,
    /// Absolute deadband per point name (report by exception).
    pub deadbands: BTreeMap<String, f64>,
    /// State rules in force (the device's overrides, else the template's).
    pub states: Option<StateRules>,
    /// Counter rules in force (the device's overrides, else the template's).
    pub counters: Option<CounterRules>,
    /// A meter's accounting register in force (the device's overrides, else the template's).
    pub meter: Option<MeterRules>,
    /// Resolved points, in the order the driver reports them; shared by the devices whose
    /// template and overrides resolve to the same points.
    pub points: Arc<[PointInfo]>,
    pub source: DeviceSource,
}

/// Name and unit of a resolved point.
#[derive(Debug, Clone)]
pub struct PointInfo {
    pub name: String,
    pub unit: Option<String>,
}

/// How a device is read.
#[derive(Debug, Clone)]
pub enum DeviceSource {
    Modbus {
        /// Name of its [`BusDef`].
        bus: String,
        unit: u8,
        poll: Duration,
        /// Shared by the devices whose template and overrides resolve to the same points (a
        /// 200-point map is tens of kB; a plant has a few templates and hundreds of devices).
        device: Arc<ModbusDevice>,
    },
    Opcua {
        config: Box<OpcuaConfig>,
        device: OpcuaDevice,
    },
}

/// What the acquisition drivers need.
#[derive(Debug, Clone)]
pub struct Acquisition {
    /// One entry per Modbus link with at least one device; the poller serialises a link.
    pub modbus: Vec<(BusConfig, Vec<DeviceConfig>)>,
    /// One entry per OPC UA device: its id, connection and points.
    pub opcua: Vec<(Arc<str>, OpcuaConfig, OpcuaDevice)>,
}

impl AgentConfig {
    /// The driver inputs: Modbus devices grouped by link, OPC UA devices one by one.
    pub fn acquisition(&self) -> Acquisition {
        let mut modbus = Vec::new();
        for b in &self.buses {
            let devices: Vec<DeviceConfig> = self
                .devices
                .iter()
                .filter_map(|d| match &d.source {
                    DeviceSource::Modbus {
                        bus,
                        unit,
                        poll,
                        device,
                    } if *bus == b.name => Some(DeviceConfig {
                        id: Arc::from(d.id.as_str()),
                        unit: *unit,
                        poll: *poll,
                        device: device.clone(),
                    }),
                    _ => None,
                })
                .collect();
            if !devices.is_empty() {
                modbus.push((b.config.clone(), devices));
            }
        }
        let opcua = self
            .devices
            .iter()
            .filter_map(|d| match &d.source {
                DeviceSource::Opcua { config, device } => {
                    Some((Arc::from(d.id.as_str()), (**config).clone(), device.clone()))
                }
                DeviceSource::Modbus { .. } => None,
            })
            .collect();
        Acquisition { modbus, opcua }
    }
}

// ---------------------------------------------------------------------------------------------
// Entry points

/// Reads, parses, validates and resolves a configuration; every problem at once.
pub fn load(path: &Path) -> Result<AgentConfig, ConfigErrors> {
    let mut errs = Errs {
        file: path.to_path_buf(),
        list: Vec::new(),
    };
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) => {
            errs.push("", format!("cannot read the configuration: {e}"));
            return Err(ConfigErrors(errs.list));
        }
    };
    parse_str(path, &text)
}

/// [`load`] on `text` given as the contents of `path` (which is not read). Everything else is
/// as in [`load`]: files the configuration names (`agent.templates_dir`, password and TLS
/// files) are read relative to `path`'s directory, and Modbus TCP host names are resolved.
pub fn parse_str(path: &Path, text: &str) -> Result<AgentConfig, ConfigErrors> {
    let mut errs = Errs {
        file: path.to_path_buf(),
        list: Vec::new(),
    };
    let cfg = parse_and_build(path, text, &mut errs);
    match cfg {
        Some(c) if errs.list.is_empty() => Ok(c),
        _ => Err(ConfigErrors(errs.list)),
    }
}

/// `shopfloor-agent check --config FILE`: `ok` on stdout (exit 0), or every error on stderr
/// (exit 2).
pub fn check_command(path: &Path) -> ExitCode {
    match load(path) {
        Ok(_) => {
            println!("ok");
            ExitCode::SUCCESS
        }
        Err(errors) => {
            for e in errors.iter() {
                eprintln!("{e}");
            }
            ExitCode::from(2)
        }
    }
}

/// Only `agent.data_dir` of a configuration (resolved against the file's directory), for
/// `shopfloor-agent key show --config`: works even if other parts of the file are invalid.
pub fn data_dir_of(path: &Path) -> Result<PathBuf, String> {
    let file = path.display();
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("{file}: cannot read the configuration: {e}"))?;
    let root = DeTable::parse(&text).map_err(|e| {
        let at = e
            .span()
            .map(|s| line_col(&text, s.start))
            .unwrap_or_default();
        format!("{file}: {at}: {}", e.message())
    })?;
    let Some(agent) = root.get_ref().iter().find(|(k, _)| k.get_ref() == "agent") else {
        return Err(format!("{file}: agent: missing required section [agent]"));
    };
    let Some(dir) = agent.1.get_ref().get("data_dir") else {
        return Err(format!("{file}: agent.data_dir: missing required key"));
    };
    match dir.get_ref().as_str() {
        Some(d) if !d.trim().is_empty() => Ok(config_dir(path).join(d)),
        _ => Err(format!(
            "{file}: agent.data_dir: must be a non-empty string (a directory path)"
        )),
    }
}

// ---------------------------------------------------------------------------------------------
// Raw (file) types

fn yes() -> bool {
    true
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAgent {
    id: String,
    workshop: String,
    data_dir: String,
    time_zone: Option<String>,
    templates_dir: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMqtt {
    url: String,
    username: Option<String>,
    password: Option<String>,
    password_file: Option<String>,
    client_id: Option<String>,
    topic_prefix: Option<String>,
    keep_alive_s: Option<i64>,
    inflight: Option<i64>,
    reconnect_min_ms: Option<i64>,
    reconnect_max_ms: Option<i64>,
    tls: Option<RawTls>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTls {
    ca_file: String,
    cert_file: Option<String>,
    key_file: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBatch {
    interval_s: Option<i64>,
    max_samples: Option<i64>,
    heartbeat_s: Option<i64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawOutbox {
    budget_mb: Option<i64>,
    fsync: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMetrics {
    listen: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawIndicators {
    rolling_minutes: Option<Vec<i64>>,
    #[serde(default, rename = "shift")]
    shifts: Vec<RawShift>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawShift {
    name: String,
    start: String,
    hours: f64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProduct {
    id: String,
    ideal_cycle_s: f64,
    value_added_per_unit_cny: Option<f64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBus {
    name: String,
    host: Option<String>,
    port: Option<i64>,
    serial: Option<String>,
    baud: Option<i64>,
    parity: Option<String>,
    stop_bits: Option<i64>,
    timeout_ms: Option<i64>,
    connect_timeout_ms: Option<i64>,
    inter_frame_ms: Option<i64>,
    backoff_min_ms: Option<i64>,
    backoff_max_ms: Option<i64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDevice {
    id: String,
    template: String,
    #[serde(default = "yes")]
    enabled: bool,
    // ---- Modbus
    bus: Option<String>,
    host: Option<String>,
    port: Option<i64>,
    unit: Option<i64>,
    poll_ms: Option<i64>,
    // ---- OPC UA
    endpoint: Option<String>,
    security_policy: Option<String>,
    security_mode: Option<String>,
    user: Option<String>,
    password: Option<String>,
    password_file: Option<String>,
    user_cert: Option<String>,
    user_key: Option<String>,
    root: Option<String>,
    trust_server_certs: Option<bool>,
    publishing_ms: Option<i64>,
    // ---- registry facts
    key_process: Option<String>,
    control: Option<String>,
    product: Option<String>,
    networked: Option<bool>,
    #[serde(default)]
    overrides: Overrides,
    #[serde(default)]
    deadband: BTreeMap<String, f64>,
}

// ---------------------------------------------------------------------------------------------
// TOML parsing with field paths

/// `line L, column C` (1-based) of a byte offset.
fn line_col(text: &str, offset: usize) -> String {
    let offset = offset.min(text.len());
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    format!("line {line}, column {col}")
}

/// Parses a TOML document; every syntax error is pushed (to `file`), `None` if there was one.
fn parse_toml<'a>(text: &'a str, file: &Path, errs: &mut Errs) -> Option<Spanned<DeTable<'a>>> {
    let (root, syntax) = DeTable::parse_recoverable(text);
    if syntax.is_empty() {
        return Some(root);
    }
    for e in syntax {
        let at = e
            .span()
            .map(|s| line_col(text, s.start))
            .unwrap_or_else(|| "line ?".into());
        errs.push_in(file, at, format!("TOML syntax: {}", e.message()));
    }
    None
}

fn join(prefix: &str, key: &str) -> String {
    if prefix.is_empty() {
        key.to_owned()
    } else {
        format!("{prefix}.{key}")
    }
}

fn contains(outer: &Range<usize>, inner: &Range<usize>) -> bool {
    outer.start <= inner.start && inner.end <= outer.end
}

/// The field path of the deepest key or value whose span holds `span` (tables defined by a
/// `[header]` have the header's span, so every child is searched, not only containing ones).
fn locate(v: &Spanned<DeValue<'_>>, span: &Range<usize>, path: &str) -> Option<String> {
    match v.get_ref() {
        DeValue::Table(t) => {
            for (k, val) in t.iter() {
                let p = join(path, k.get_ref());
                if let Some(found) = locate(val, span, &p) {
                    return Some(found);
                }
                if contains(&k.span(), span) || contains(&val.span(), span) {
                    return Some(p);
                }
            }
            None
        }
        DeValue::Array(a) => {
            for (i, val) in a.iter().enumerate() {
                let p = format!("{path}[{i}]");
                if let Some(found) = locate(val, span, &p) {
                    return Some(found);
                }
                if contains(&val.span(), span) {
                    return Some(p);
                }
            }
            None
        }
        _ => None,
    }
}

/// serde's type names in words a plant engineer reads.
fn plain_expected(s: &str) -> String {
    let s = s.trim();
    match s {
        "u8" | "u16" | "u32" | "u64" | "usize" | "i8" | "i16" | "i32" | "i64" | "isize" => {
            format!("an integer ({s})")
        }
        "f32" | "f64" => "a number".into(),
        "a sequence" => "an array".into(),
        "a map" => "a table".into(),
        "a boolean" | "a string" => s.into(),
        _ if s.starts_with("struct ") => "a table".into(),
        _ => s.into(),
    }
}

/// Field path and reason of a deserialization error of the value `v` found at `path`.
fn describe(e: &toml::de::Error, v: &Spanned<DeValue<'_>>, path: &str) -> (String, String) {
    let at = e
        .span()
        .and_then(|s| locate(v, &s, path))
        .unwrap_or_else(|| path.to_owned());
    let msg = e.message().trim();
    if let Some(field) = msg
        .strip_prefix("missing field `")
        .and_then(|r| r.strip_suffix('`'))
    {
        return (join(&at, field), "missing required key".into());
    }
    if let Some(rest) = msg.strip_prefix("unknown field `") {
        let (key, expected) = rest.split_once("`, ").unwrap_or((rest, ""));
        let key = key.trim_end_matches('`');
        let expected = if expected.is_empty() || expected == "there are no fields" {
            "no keys are allowed here".to_owned()
        } else {
            expected.to_owned()
        };
        let place = if path.is_empty() {
            "top level".to_owned()
        } else {
            at.strip_suffix(&format!(".{key}"))
                .unwrap_or(&at)
                .to_owned()
        };
        return (at, format!("unknown key `{key}` in {place} ({expected})"));
    }
    if let Some(rest) = msg.strip_prefix("unknown variant `") {
        let (value, expected) = rest.split_once("`, ").unwrap_or((rest, ""));
        return (at, format!("unknown value `{value}` ({expected})"));
    }
    if let Some(rest) = msg.strip_prefix("invalid type: ") {
        let (got, expected) = rest.split_once(", expected ").unwrap_or((rest, "?"));
        return (
            at,
            format!("wrong type: {got}, expected {}", plain_expected(expected)),
        );
    }
    if let Some(rest) = msg.strip_prefix("invalid value: ") {
        let (got, expected) = rest.split_once(", expected ").unwrap_or((rest, "?"));
        return (
            at,
            format!("invalid value {got}: expected {}", plain_expected(expected)),
        );
    }
    (at, msg.to_owned())
}

/// Deserializes one value, pushing a located error on failure.
fn de<T: DeserializeOwned>(
    v: &Spanned<DeValue<'_>>,
    path: &str,
    file: &Path,
    errs: &mut Errs,
) -> Option<T> {
    match T::deserialize(ValueDeserializer::from(v.clone())) {
        Ok(t) => Some(t),
        Err(e) => {
            let (p, r) = describe(&e, v, path);
            errs.push_in(file, p, r);
            None
        }
    }
}

/// Items of an array-of-tables section (`[[device]]`); a plain table is an error.
fn items<'v, 'a>(
    v: &'v Spanned<DeValue<'a>>,
    name: &str,
    errs: &mut Errs,
) -> Vec<&'v Spanned<DeValue<'a>>> {
    match v.get_ref() {
        DeValue::Array(a) => a.iter().collect(),
        _ => {
            errs.push(
                name,
                format!("must be a list of tables: write [[{name}]], one per entry"),
            );
            Vec::new()
        }
    }
}

/// A string key of a raw table that failed to parse (to avoid follow-up errors).
fn raw_str<'v>(v: &'v Spanned<DeValue<'_>>, key: &str) -> Option<&'v str> {
    v.get_ref().get(key).and_then(|x| x.get_ref().as_str())
}

// ---------------------------------------------------------------------------------------------
// Small checks

/// Levenshtein distance (for "did you mean").
fn distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != *cb);
            cur[j + 1] = sub.min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

fn closest<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    candidates
        .into_iter()
        .map(|c| (distance(word, c), c))
        .filter(|(d, c)| *d <= (c.len().max(word.len()) / 2).max(2))
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

fn config_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// An integer key with a default and an inclusive range.
fn int_in(
    errs: &mut Errs,
    path: &str,
    v: Option<i64>,
    default: i64,
    range: RangeInclusive<i64>,
    unit: &str,
) -> i64 {
    match v {
        None => default,
        Some(x) if range.contains(&x) => x,
        Some(x) => {
            let unit = if unit.is_empty() {
                String::new()
            } else {
                format!(" {unit}")
            };
            errs.push(
                path,
                format!(
                    "must be {}..={}{unit} (got {x})",
                    range.start(),
                    range.end()
                ),
            );
            default
        }
    }
}

fn ms(v: i64) -> Duration {
    Duration::from_millis(u64::try_from(v).unwrap_or(0))
}

fn secs(v: i64) -> Duration {
    Duration::from_secs(u64::try_from(v).unwrap_or(0))
}

/// Reads a secret file (relative to the config dir); trailing line breaks are dropped.
fn read_secret(dir: &Path, file: &str, path: &str, errs: &mut Errs) -> Option<String> {
    let full = dir.join(file);
    match std::fs::read_to_string(&full) {
        Ok(s) => {
            let s = s.trim_end_matches(['\r', '\n']).to_owned();
            if s.is_empty() {
                errs.push(path, format!("`{}` is empty", full.display()));
                None
            } else {
                Some(s)
            }
        }
        Err(e) => {
            errs.push(path, format!("cannot read `{}`: {e}", full.display()));
            None
        }
    }
}

/// A file that must exist and be readable (certificates, keys).
fn readable_file(dir: &Path, file: &str, path: &str, errs: &mut Errs) -> PathBuf {
    let full = dir.join(file);
    if file.trim().is_empty() {
        errs.push(path, "must not be empty");
    } else if full.is_dir() {
        errs.push(
            path,
            format!("`{}` is a directory, not a file", full.display()),
        );
    } else if let Err(e) = std::fs::File::open(&full) {
        errs.push(path, format!("cannot read `{}`: {e}", full.display()));
    }
    full
}

fn valid_agent_id(s: &str) -> bool {
    let mut chars = s.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    first_ok
        && s.len() <= 64
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-')
}

/// `host[:port]` (IPv6 in brackets) → host and optional port.
fn split_host_port(s: &str) -> Result<(String, Option<u16>), String> {
    let (host, port) = if let Some(r) = s.strip_prefix('[') {
        let (h, rest) = r
            .split_once(']')
            .ok_or_else(|| format!("`{s}`: IPv6 address without closing `]`"))?;
        let port = match rest {
            "" => None,
            _ => Some(
                rest.strip_prefix(':')
                    .ok_or_else(|| format!("`{s}`: expected `:port` after `]`"))?,
            ),
        };
        (h.to_owned(), port)
    } else {
        match s.split_once(':') {
            Some((h, p)) if !p.contains(':') => (h.to_owned(), Some(p)),
            Some(_) => return Err(format!("`{s}`: write an IPv6 address in brackets, [::1]")),
            None => (s.to_owned(), None),
        }
    };
    if host.is_empty() {
        return Err(format!("`{s}`: the host is missing"));
    }
    if !host
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_' | ':'))
    {
        return Err(format!("`{s}`: `{host}` is not a host name or IP address"));
    }
    let port = match port {
        None => None,
        Some(p) => match p.parse::<u16>() {
            Ok(n) if n > 0 => Some(n),
            _ => return Err(format!("`{s}`: the port must be 1..=65535")),
        },
    };
    Ok((host, port))
}

/// A Modbus TCP address: an IP literal, or a name resolved now.
fn socket_addr(host: &str, port: u16) -> Result<SocketAddr, String> {
    if let Ok(ip) = host.trim_matches(['[', ']']).parse::<IpAddr>() {
        return Ok(SocketAddr::new(ip, port));
    }
    match (host, port).to_socket_addrs() {
        Ok(mut it) => it
            .next()
            .ok_or_else(|| format!("host name `{host}` resolves to no address")),
        Err(e) => Err(format!(
            "cannot resolve host name `{host}`: {e} (use an IP address on networks without DNS)"
        )),
    }
}

const CONTROLS: &[&str] = &["cnc", "plc", "dcs", "robot", "manual"];
const SECTIONS: &[&str] = &[
    "agent",
    "mqtt",
    "batch",
    "outbox",
    "metrics",
    "indicators",
    "product",
    "bus",
    "device",
];

// ---------------------------------------------------------------------------------------------
// Building

fn parse_and_build(path: &Path, text: &str, errs: &mut Errs) -> Option<AgentConfig> {
    let root = parse_toml(text, path, errs)?;
    let dir = config_dir(path);
    let mut sections: BTreeMap<&str, &Spanned<DeValue<'_>>> = BTreeMap::new();
    for (k, v) in root.get_ref().iter() {
        let key: &str = k.get_ref();
        if let Some(s) = SECTIONS.iter().find(|s| **s == key) {
            sections.insert(s, v);
        } else {
            let hint = closest(key, SECTIONS.iter().copied())
                .map(|c| format!("did you mean `{c}`? "))
                .unwrap_or_default();
            errs.push(
                key,
                format!(
                    "unknown section `{key}` at top level ({hint}sections: {})",
                    SECTIONS.join(", ")
                ),
            );
        }
    }
    let file = path.to_path_buf();

    // [agent]
    let raw_agent: Option<RawAgent> = match sections.get("agent") {
        Some(v) => de(v, "agent", &file, errs),
        None => {
            errs.push(
                "agent",
                "missing required section [agent] (id, workshop, data_dir)",
            );
            None
        }
    };
    let (agent, workshop, templates_dir) = match raw_agent {
        Some(a) => build_agent(a, &dir, errs),
        None => (None, None, None),
    };

    // [mqtt]
    let raw_mqtt: Option<RawMqtt> = match sections.get("mqtt") {
        Some(v) => de(v, "mqtt", &file, errs),
        None => {
            errs.push(
                "mqtt",
                "missing required section [mqtt] (url of the broker)",
            );
            None
        }
    };
    let mqtt =
        raw_mqtt.and_then(|m| build_mqtt(m, agent.as_ref().map(|a| a.id.as_str()), &dir, errs));

    let batch = section::<RawBatch>(&sections, "batch", &file, errs).map(|b| build_batch(b, errs));
    let outbox =
        section::<RawOutbox>(&sections, "outbox", &file, errs).map(|o| build_outbox(o, errs));
    let metrics =
        section::<RawMetrics>(&sections, "metrics", &file, errs).map(|m| build_metrics(m, errs));
    let indicators = section::<RawIndicators>(&sections, "indicators", &file, errs)
        .map(|i| build_indicators(i, errs));

    // [[product]]
    let mut products = Vec::new();
    let mut product_ids: BTreeSet<String> = BTreeSet::new();
    if let Some(v) = sections.get("product") {
        for (i, item) in items(v, "product", errs).into_iter().enumerate() {
            let p = format!("product[{i}]");
            match de::<RawProduct>(item, &p, &file, errs) {
                Some(raw) => {
                    let id = raw.id.clone();
                    if let Some(prod) = build_product(raw, &p, &product_ids, errs) {
                        products.push(prod);
                    }
                    // Known even when invalid: devices naming it get no second error.
                    product_ids.insert(id);
                }
                None => {
                    if let Some(id) = raw_str(item, "id") {
                        product_ids.insert(id.to_owned());
                    }
                }
            }
        }
    }

    // [[bus]]
    let mut buses: Vec<BusDef> = Vec::new();
    let mut bus_names: BTreeMap<String, usize> = BTreeMap::new();
    if let Some(v) = sections.get("bus") {
        for (i, item) in items(v, "bus", errs).into_iter().enumerate() {
            let p = format!("bus[{i}]");
            match de::<RawBus>(item, &p, &file, errs) {
                Some(raw) => {
                    if let Some(&j) = bus_names.get(&raw.name) {
                        errs.push(
                            format!("{p}.name"),
                            format!("duplicate bus name `{}` (also bus[{j}])", raw.name),
                        );
                        continue;
                    }
                    bus_names.insert(raw.name.clone(), i);
                    if let Some(b) = build_bus(raw, &p, errs) {
                        buses.push(b);
                    }
                }
                None => {
                    if let Some(name) = raw_str(item, "name") {
                        bus_names.entry(name.to_owned()).or_insert(i);
                    }
                }
            }
        }
    }

    // Templates: built-in, then the site's.
    let mut templates: BTreeMap<String, Arc<Template>> = BTreeMap::new();
    for id in template::builtin_ids() {
        match template::builtin(id) {
            Some(Ok(t)) => {
                templates.insert(id.to_owned(), Arc::new(t));
            }
            Some(Err(e)) => errs.push(
                "agent",
                format!("built-in template {id} is broken: {e} (a bug: report it)"),
            ),
            None => {}
        }
    }
    let mut template_errors = BTreeSet::new();
    if let Some(tdir) = &templates_dir {
        load_templates(tdir, &mut templates, &mut template_errors, errs);
    }

    // [[device]]
    let mut ctx = DeviceCtx {
        dir: &dir,
        data_dir: agent.as_ref().map(|a| a.data_dir.clone()),
        workshop: workshop.as_ref(),
        templates: &templates,
        broken_templates: &template_errors,
        buses: &buses,
        bus_names: &bus_names,
        products: &product_ids,
        ids: BTreeMap::new(),
        resolved: BTreeMap::new(),
    };
    let mut devices = Vec::new();
    let mut implicit = Vec::new();
    if let Some(v) = sections.get("device") {
        for (i, item) in items(v, "device", errs).into_iter().enumerate() {
            let p = format!("device[{i}]");
            match de::<RawDevice>(item, &p, &file, errs) {
                Some(raw) => {
                    let enabled = raw.enabled;
                    if let Some((d, bus)) = build_device(raw, i, &mut ctx, errs)
                        && enabled
                    {
                        devices.push(d);
                        implicit.extend(bus);
                    }
                }
                None => {
                    if let Some(id) = raw_str(item, "id") {
                        ctx.ids.entry(id.to_owned()).or_insert(i);
                    }
                }
            }
        }
    }
    let mut all_buses = buses;
    all_buses.extend(implicit);

    Some(AgentConfig {
        file,
        agent: agent?,
        mqtt: mqtt?,
        batch: batch.unwrap_or_else(|| build_batch(RawBatch::default(), errs)),
        outbox: outbox.unwrap_or_else(|| build_outbox(RawOutbox::default(), errs)),
        metrics: metrics.unwrap_or_else(|| build_metrics(RawMetrics::default(), errs)),
        indicators: indicators.unwrap_or_else(|| build_indicators(RawIndicators::default(), errs)),
        products,
        buses: all_buses,
        devices,
    })
}

/// An optional section: absent → defaults, present → parsed (or an error).
fn section<T: DeserializeOwned + Default>(
    sections: &BTreeMap<&str, &Spanned<DeValue<'_>>>,
    name: &str,
    file: &Path,
    errs: &mut Errs,
) -> Option<T> {
    match sections.get(name) {
        Some(v) => de(v, name, file, errs),
        None => Some(T::default()),
    }
}

fn build_agent(
    a: RawAgent,
    dir: &Path,
    errs: &mut Errs,
) -> (Option<AgentSection>, Option<EntityPath>, Option<PathBuf>) {
    if !valid_agent_id(&a.id) {
        errs.push(
            "agent.id",
            format!(
                "`{}` is not a valid agent id: 1 to 64 characters, lower-case letters, digits, `_` or `-`, starting with a letter or digit (it is the MQTT client id and a topic segment)",
                a.id
            ),
        );
    }
    let workshop = match EntityPath::parse(&a.workshop) {
        Ok(w) if w.depth() >= 5 => {
            errs.push(
                "agent.workshop",
                format!(
                    "`{}` is an equipment path; give the workshop (park/enterprise/workshop) or line the devices lie below",
                    a.workshop
                ),
            );
            None
        }
        Ok(w) => Some(w),
        Err(r) => {
            errs.push("agent.workshop", r);
            None
        }
    };
    if a.data_dir.trim().is_empty() {
        errs.push("agent.data_dir", "must not be empty");
    }
    let time_zone = a
        .time_zone
        .unwrap_or_else(|| shopfloor_core::calendar::DEFAULT_ZONE.to_owned());
    if let Err(r) = shopfloor_core::calendar::zone(&time_zone) {
        errs.push("agent.time_zone", r);
    }
    let templates_dir = a.templates_dir.map(|t| dir.join(t));
    (
        Some(AgentSection {
            id: a.id,
            workshop: a.workshop,
            data_dir: dir.join(a.data_dir),
            time_zone,
        }),
        workshop,
        templates_dir,
    )
}

fn build_mqtt(
    m: RawMqtt,
    agent_id: Option<&str>,
    dir: &Path,
    errs: &mut Errs,
) -> Option<MqttSection> {
    let (tls_scheme, rest) = if let Some(r) = m.url.strip_prefix("mqtt://") {
        (false, Some(r))
    } else if let Some(r) = m.url.strip_prefix("mqtts://") {
        (true, Some(r))
    } else {
        (false, None)
    };
    let mut host = String::new();
    let mut port = 1883;
    match rest {
        None => errs.push(
            "mqtt.url",
            format!(
                "`{}`: the scheme must be mqtt:// (plain TCP) or mqtts:// (TLS), e.g. mqtt://127.0.0.1:1883",
                m.url
            ),
        ),
        Some(r) => {
            let r = r.strip_suffix('/').unwrap_or(r);
            if r.contains('@') {
                errs.push(
                    "mqtt.url",
                    "put the user name and password in `username` and `password`/`password_file`, not in the URL",
                );
            } else if r.contains('/') || r.contains('?') || r.contains('#') {
                errs.push(
                    "mqtt.url",
                    format!("`{}`: only scheme://host[:port], no path or query", m.url),
                );
            } else {
                match split_host_port(r) {
                    Ok((h, p)) => {
                        host = h;
                        port = p.unwrap_or(if tls_scheme { 8883 } else { 1883 });
                    }
                    Err(reason) => errs.push("mqtt.url", reason),
                }
            }
        }
    }
    let tls = match (&m.tls, tls_scheme, rest.is_some()) {
        (Some(t), true, _) => {
            let ca = readable_file(dir, &t.ca_file, "mqtt.tls.ca_file", errs);
            let cert = t
                .cert_file
                .as_deref()
                .map(|c| readable_file(dir, c, "mqtt.tls.cert_file", errs));
            let key = t
                .key_file
                .as_deref()
                .map(|k| readable_file(dir, k, "mqtt.tls.key_file", errs));
            match (&cert, &key) {
                (Some(_), None) => errs.push(
                    "mqtt.tls.key_file",
                    "missing: `cert_file` (client certificate) needs its private key `key_file`",
                ),
                (None, Some(_)) => errs.push(
                    "mqtt.tls.cert_file",
                    "missing: `key_file` needs the client certificate `cert_file`",
                ),
                _ => {}
            }
            Some(TlsFiles { ca, cert, key })
        }
        (None, true, _) => {
            errs.push(
                "mqtt.tls",
                "mqtts:// needs a [mqtt.tls] section with at least `ca_file` (the CA that signed the broker's certificate)",
            );
            None
        }
        (Some(_), false, true) => {
            errs.push(
                "mqtt.tls",
                "[mqtt.tls] is given but the url is mqtt:// (plain TCP): use mqtts://",
            );
            None
        }
        _ => None,
    };
    if m.password.is_some() && m.password_file.is_some() {
        errs.push(
            "mqtt.password_file",
            "give `password` or `password_file`, not both",
        );
    }
    let password = match (&m.password, &m.password_file) {
        (Some(p), _) => Some(p.clone()),
        (None, Some(f)) => read_secret(dir, f, "mqtt.password_file", errs),
        (None, None) => None,
    };
    if (m.password.is_some() || m.password_file.is_some()) && m.username.is_none() {
        errs.push("mqtt.username", "missing: a password needs a `username`");
    }
    if m.username.as_deref().is_some_and(|u| u.is_empty()) {
        errs.push("mqtt.username", "must not be empty");
    }
    let client_id = m
        .client_id
        .clone()
        .unwrap_or_else(|| agent_id.unwrap_or_default().to_owned());
    if m.client_id.is_some()
        && (client_id.is_empty()
            || client_id.len() > 128
            || client_id
                .chars()
                .any(|c| c.is_whitespace() || c.is_control()))
    {
        errs.push(
            "mqtt.client_id",
            "must be 1 to 128 characters without spaces",
        );
    }
    let topic_prefix = m.topic_prefix.unwrap_or_else(|| "shopfloor/v1".to_owned());
    if topic_prefix.is_empty()
        || topic_prefix.split('/').any(str::is_empty)
        || topic_prefix.contains(['+', '#'])
        || topic_prefix
            .chars()
            .any(|c| c.is_whitespace() || c.is_control())
    {
        errs.push(
            "mqtt.topic_prefix",
            format!(
                "`{topic_prefix}`: topic levels separated by `/`, no empty level, no leading or trailing `/`, no wildcards `+` `#`"
            ),
        );
    }
    let keep_alive = int_in(errs, "mqtt.keep_alive_s", m.keep_alive_s, 30, 5..=3600, "s");
    let inflight = int_in(errs, "mqtt.inflight", m.inflight, 32, 1..=1000, "");
    let rmin = int_in(
        errs,
        "mqtt.reconnect_min_ms",
        m.reconnect_min_ms,
        500,
        10..=600_000,
        "ms",
    );
    let rmax = int_in(
        errs,
        "mqtt.reconnect_max_ms",
        m.reconnect_max_ms,
        30_000,
        10..=3_600_000,
        "ms",
    );
    if rmax < rmin {
        errs.push(
            "mqtt.reconnect_max_ms",
            format!("must be ≥ reconnect_min_ms ({rmin})"),
        );
    }
    Some(MqttSection {
        host,
        port,
        tls,
        username: m.username,
        password,
        client_id,
        topic_prefix,
        keep_alive: secs(keep_alive),
        inflight: u16::try_from(inflight).unwrap_or(32),
        reconnect_min: ms(rmin),
        reconnect_max: ms(rmax),
    })
}

fn build_batch(b: RawBatch, errs: &mut Errs) -> BatchSection {
    let interval = int_in(errs, "batch.interval_s", b.interval_s, 5, 1..=3600, "s");
    let max_samples = int_in(
        errs,
        "batch.max_samples",
        b.max_samples,
        50_000,
        1..=1_000_000,
        "",
    );
    let heartbeat = int_in(
        errs,
        "batch.heartbeat_s",
        b.heartbeat_s,
        300,
        1..=86_400,
        "s",
    );
    if heartbeat < interval {
        errs.push(
            "batch.heartbeat_s",
            format!("must be ≥ batch.interval_s ({interval} s): an unchanged point is re-sent at most once a batch"),
        );
    }
    BatchSection {
        interval: secs(interval),
        max_samples: usize::try_from(max_samples).unwrap_or(50_000),
        heartbeat: secs(heartbeat),
    }
}

fn build_outbox(o: RawOutbox, errs: &mut Errs) -> OutboxSection {
    let mb = int_in(
        errs,
        "outbox.budget_mb",
        o.budget_mb,
        1024,
        1..=1_048_576,
        "MB",
    );
    let fsync = o.fsync.unwrap_or_else(|| "full".to_owned());
    if fsync != "full" && fsync != "normal" {
        errs.push(
            "outbox.fsync",
            format!("must be \"full\" or \"normal\" (got \"{fsync}\")"),
        );
    }
    OutboxSection {
        budget_bytes: u64::try_from(mb).unwrap_or(1024) * 1024 * 1024,
        fsync,
    }
}

fn build_metrics(m: RawMetrics, errs: &mut Errs) -> MetricsSection {
    let listen = match m.listen.as_deref() {
        None => Some(SocketAddr::from(([127, 0, 0, 1], 9464))),
        Some("off") => None,
        Some(s) => match s.parse::<SocketAddr>() {
            Ok(a) => Some(a),
            Err(_) => {
                errs.push(
                    "metrics.listen",
                    format!(
                        "`{s}` is not an IP address and port (e.g. 127.0.0.1:9464, 0.0.0.0:9464) or \"off\""
                    ),
                );
                None
            }
        },
    };
    MetricsSection { listen }
}

fn build_indicators(i: RawIndicators, errs: &mut Errs) -> IndicatorsSection {
    let minutes = i.rolling_minutes.unwrap_or_else(|| vec![60]);
    let mut rolling = Vec::new();
    let mut seen = BTreeSet::new();
    for (k, m) in minutes.iter().enumerate() {
        let p = format!("indicators.rolling_minutes[{k}]");
        if !(1..=10_080).contains(m) {
            errs.push(p, format!("must be 1..=10080 minutes (got {m})"));
        } else if !seen.insert(*m) {
            errs.push(p, format!("{m} minutes is listed twice"));
        } else {
            rolling.push(secs(m * 60));
        }
    }
    if i.shifts.len() > shopfloor_core::calendar::MAX_SHIFTS {
        errs.push(
            "indicators.shift",
            format!(
                "at most {} shifts a day (got {})",
                shopfloor_core::calendar::MAX_SHIFTS,
                i.shifts.len()
            ),
        );
    }
    let mut shifts: Vec<ShiftDef> = Vec::new();
    let mut placed: Vec<(usize, String, f64, f64)> = Vec::new();
    let mut names: BTreeMap<String, usize> = BTreeMap::new();
    for (k, s) in i.shifts.into_iter().enumerate() {
        let p = format!("indicators.shift[{k}]");
        let mut ok = true;
        if s.name.trim().is_empty() {
            errs.push(format!("{p}.name"), "must not be empty");
            ok = false;
        } else if let Some(j) = names.get(&s.name) {
            errs.push(
                format!("{p}.name"),
                format!(
                    "duplicate shift name `{}` (also indicators.shift[{j}])",
                    s.name
                ),
            );
            ok = false;
        } else {
            names.insert(s.name.clone(), k);
        }
        let start = parse_hm(&s.start);
        if start.is_none() {
            errs.push(
                format!("{p}.start"),
                format!("`{}` is not a local time HH:MM (e.g. \"08:00\")", s.start),
            );
            ok = false;
        }
        if !(s.hours.is_finite() && s.hours > 0.0 && s.hours <= 24.0) {
            errs.push(
                format!("{p}.hours"),
                format!("must be > 0 and ≤ 24 (got {})", s.hours),
            );
            ok = false;
        }
        let (true, Some(start)) = (ok, start) else {
            continue;
        };
        let from = f64::from(start.hour()) * 3600.0 + f64::from(start.minute()) * 60.0;
        let to = from + s.hours * 3600.0;
        for (j, other, f2, t2) in &placed {
            let day = 86_400.0;
            let overlaps = [-day, 0.0, day]
                .iter()
                .any(|off| from.max(f2 + off) < to.min(t2 + off));
            if overlaps {
                errs.push(
                    p.clone(),
                    format!(
                        "shift `{}` ({} for {} h) overlaps shift `{other}` (indicators.shift[{j}]); shifts must not overlap within a day",
                        s.name, s.start, s.hours
                    ),
                );
                ok = false;
                break;
            }
        }
        if ok {
            placed.push((k, s.name.clone(), from, to));
            shifts.push(ShiftDef {
                name: s.name,
                start,
                hours: s.hours,
            });
        }
    }
    IndicatorsSection { rolling, shifts }
}

/// `HH:MM` (two digits each) as a local time.
fn parse_hm(s: &str) -> Option<jiff::civil::Time> {
    let (h, m) = s.split_once(':')?;
    if h.len() != 2 || m.len() != 2 {
        return None;
    }
    let h: i8 = h.parse().ok()?;
    let m: i8 = m.parse().ok()?;
    jiff::civil::Time::new(h, m, 0, 0).ok()
}

fn build_product(
    raw: RawProduct,
    p: &str,
    ids: &BTreeSet<String>,
    errs: &mut Errs,
) -> Option<ProductDef> {
    let mut ok = true;
    if raw.id.trim().is_empty() || raw.id.chars().any(|c| c.is_whitespace() || c.is_control()) {
        errs.push(format!("{p}.id"), "must be non-empty, without spaces");
        ok = false;
    } else if ids.contains(&raw.id) {
        errs.push(
            format!("{p}.id"),
            format!("duplicate product id `{}`", raw.id),
        );
        ok = false;
    }
    if !(raw.ideal_cycle_s.is_finite() && raw.ideal_cycle_s > 0.0) {
        errs.push(
            format!("{p}.ideal_cycle_s"),
            format!("must be > 0 seconds (got {})", raw.ideal_cycle_s),
        );
        ok = false;
    }
    if let Some(v) = raw.value_added_per_unit_cny
        && !(v.is_finite() && v >= 0.0)
    {
        errs.push(
            format!("{p}.value_added_per_unit_cny"),
            format!("must be ≥ 0 (got {v})"),
        );
        ok = false;
    }
    ok.then_some(ProductDef {
        id: raw.id,
        ideal_cycle_s: raw.ideal_cycle_s,
        value_added_per_unit_cny: raw.value_added_per_unit_cny,
    })
}

fn build_bus(raw: RawBus, p: &str, errs: &mut Errs) -> Option<BusDef> {
    let errors_before = errs.list.len();
    if raw.name.trim().is_empty()
        || raw
            .name
            .chars()
            .any(|c| c.is_whitespace() || c.is_control())
    {
        errs.push(format!("{p}.name"), "must be non-empty, without spaces");
    }
    let transport = match (&raw.host, &raw.serial) {
        (Some(_), Some(_)) => {
            errs.push(
                format!("{p}.serial"),
                "give `host` (Modbus TCP gateway) or `serial` (RS-485 line, Modbus RTU), not both",
            );
            None
        }
        (None, None) => {
            errs.push(
                p.to_owned(),
                "a bus needs `host` (Modbus TCP gateway) or `serial` (RS-485 line, e.g. \"/dev/ttyUSB0\" or \"COM3\")",
            );
            None
        }
        (Some(host), None) => {
            for (key, given) in [
                ("baud", raw.baud.is_some()),
                ("parity", raw.parity.is_some()),
                ("stop_bits", raw.stop_bits.is_some()),
            ] {
                if given {
                    errs.push(
                        format!("{p}.{key}"),
                        "only for a serial line (`serial`), not with `host`",
                    );
                }
            }
            let port = int_in(errs, &format!("{p}.port"), raw.port, 502, 1..=65_535, "");
            match socket_addr(host, u16::try_from(port).unwrap_or(502)) {
                Ok(addr) => Some(Transport::Tcp { addr }),
                Err(r) => {
                    errs.push(format!("{p}.host"), r);
                    None
                }
            }
        }
        (None, Some(serial)) => {
            if raw.port.is_some() {
                errs.push(
                    format!("{p}.port"),
                    "only with `host` (Modbus TCP), not with `serial`",
                );
            }
            if serial.trim().is_empty() {
                errs.push(format!("{p}.serial"), "must not be empty");
            }
            let baud = int_in(
                errs,
                &format!("{p}.baud"),
                raw.baud,
                9600,
                300..=921_600,
                "baud",
            );
            let parity = match raw.parity.as_deref().unwrap_or("even") {
                "even" => Parity::Even,
                "odd" => Parity::Odd,
                "none" => Parity::None,
                other => {
                    errs.push(
                        format!("{p}.parity"),
                        format!("must be \"even\", \"odd\" or \"none\" (got \"{other}\")"),
                    );
                    Parity::Even
                }
            };
            let stop_bits = int_in(errs, &format!("{p}.stop_bits"), raw.stop_bits, 1, 1..=2, "");
            let mut s = SerialSettings::new(serial.clone());
            s.baud = u32::try_from(baud).unwrap_or(9600);
            s.parity = parity;
            s.data_bits = 8;
            s.stop_bits = u8::try_from(stop_bits).unwrap_or(1);
            Some(Transport::Rtu(s))
        }
    };
    let timeout = int_in(
        errs,
        &format!("{p}.timeout_ms"),
        raw.timeout_ms,
        1000,
        10..=60_000,
        "ms",
    );
    let connect = int_in(
        errs,
        &format!("{p}.connect_timeout_ms"),
        raw.connect_timeout_ms,
        3000,
        10..=60_000,
        "ms",
    );
    let inter_frame = int_in(
        errs,
        &format!("{p}.inter_frame_ms"),
        raw.inter_frame_ms,
        0,
        0..=10_000,
        "ms",
    );
    let bmin = int_in(
        errs,
        &format!("{p}.backoff_min_ms"),
        raw.backoff_min_ms,
        500,
        10..=600_000,
        "ms",
    );
    let bmax = int_in(
        errs,
        &format!("{p}.backoff_max_ms"),
        raw.backoff_max_ms,
        30_000,
        10..=3_600_000,
        "ms",
    );
    if bmax < bmin {
        errs.push(
            format!("{p}.backoff_max_ms"),
            format!("must be ≥ backoff_min_ms ({bmin})"),
        );
    }
    let transport = transport?;
    if errs.list.len() > errors_before {
        return None;
    }
    let mut config = BusConfig::new(raw.name.clone(), transport);
    config.timeout = ms(timeout);
    config.connect_timeout = ms(connect);
    config.inter_frame = ms(inter_frame);
    config.backoff_initial = ms(bmin);
    config.backoff_max = ms(bmax);
    Some(BusDef {
        name: raw.name,
        config,
    })
}

// ---------------------------------------------------------------------------------------------
// Templates

/// Loads `*.toml` of the site's template directory; errors name the template file.
fn load_templates(
    dir: &Path,
    templates: &mut BTreeMap<String, Arc<Template>>,
    broken: &mut BTreeSet<String>,
    errs: &mut Errs,
) {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) => {
            errs.push(
                "agent.templates_dir",
                format!("cannot read directory `{}`: {e}", dir.display()),
            );
            return;
        }
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "toml") && p.is_file())
        .collect();
    files.sort();
    for f in files {
        let stem = f
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let text = match std::fs::read_to_string(&f) {
            Ok(t) => t,
            Err(e) => {
                errs.push_in(&f, "", format!("cannot read the template: {e}"));
                broken.insert(stem);
                continue;
            }
        };
        if templates.contains_key(&stem) {
            errs.push_in(
                &f,
                "id",
                format!(
                    "`{stem}` is a built-in template id; give the site's template another file name and id"
                ),
            );
            continue;
        }
        let Some(root) = parse_toml(&text, &f, errs) else {
            broken.insert(stem);
            continue;
        };
        let value = Spanned::new(root.span(), DeValue::Table(root.into_inner()));
        let Some(t) = de::<Template>(&value, "", &f, errs) else {
            broken.insert(stem);
            continue;
        };
        if t.id != stem {
            errs.push_in(
                &f,
                "id",
                format!(
                    "`{}` must equal the file name without .toml (`{stem}`)",
                    t.id
                ),
            );
            broken.insert(stem);
            continue;
        }
        if let Err(e) = t.validate() {
            errs.push_in(&f, e.path, e.reason);
            broken.insert(stem);
            continue;
        }
        templates.insert(stem, Arc::new(t));
    }
}

/// Where a template module error belongs in the device entry. Errors about a point carry the
/// index of the merged point list (template points minus removed, then added ones); the
/// engineer edits `[[device.overrides.point]]`, so the index is mapped to the override entry
/// naming that point.
fn override_error(d: &str, t: &Template, o: &Overrides, e: &TemplateError) -> (String, String) {
    let path = e.path.as_str();
    if let Some(rest) = path.strip_prefix("overrides.") {
        return (format!("{d}.overrides.{rest}"), e.reason.clone());
    }
    if let Some(rest) = path.strip_prefix("point[")
        && let Some((idx, field)) = rest.split_once(']')
        && let Ok(i) = idx.parse::<usize>()
    {
        let mut names: Vec<&str> = t.points.iter().map(|p| p.name.as_str()).collect();
        for ov in &o.points {
            match names.iter().position(|n| *n == ov.name) {
                Some(k) if ov.remove => {
                    names.remove(k);
                }
                Some(_) => {}
                None if !ov.remove => names.push(ov.name.as_str()),
                None => {}
            }
        }
        if let Some(name) = names.get(i)
            && let Some(k) = o.points.iter().position(|p| p.name == *name)
        {
            return (
                format!("{d}.overrides.point[{k}]{field}"),
                format!("point `{name}`: {}", e.reason),
            );
        }
        return (
            format!("{d}.template"),
            format!("template `{}` {path}: {}", t.id, e.reason),
        );
    }
    if path == "template" {
        return (format!("{d}.template"), e.reason.clone());
    }
    if path == "modbus" {
        let key = ["max_registers", "max_bits", "forbidden"]
            .into_iter()
            .find(|k| e.reason.starts_with(k) || e.reason.contains(&format!("{k} ")))
            .unwrap_or("max_registers");
        return (format!("{d}.overrides.{key}"), e.reason.clone());
    }
    if path.starts_with("states.") || path.starts_with("counters.") || path.starts_with("meter.") {
        let section = path.split('.').next().unwrap_or("states");
        return (
            format!("{d}.overrides"),
            format!(
                "the template's rule {path}: {} (removed by the overrides); when removing a point the template's [{section}] uses, replace [device.overrides.{section}] in the same device",
                e.reason
            ),
        );
    }
    (format!("{d}.overrides.{path}"), e.reason.clone())
}

// ---------------------------------------------------------------------------------------------
// Devices

struct DeviceCtx<'a> {
    dir: &'a Path,
    data_dir: Option<PathBuf>,
    workshop: Option<&'a EntityPath>,
    templates: &'a BTreeMap<String, Arc<Template>>,
    broken_templates: &'a BTreeSet<String>,
    buses: &'a [BusDef],
    bus_names: &'a BTreeMap<String, usize>,
    products: &'a BTreeSet<String>,
    /// Device id → first index.
    ids: BTreeMap<String, usize>,
    /// Resolved Modbus devices by template id, each once, shared by every device that
    /// resolves to it.
    resolved: BTreeMap<String, Vec<SharedModbus>>,
}

/// A resolved Modbus point map and its point list, shared by the devices that resolve to it.
type SharedModbus = (Arc<ModbusDevice>, Arc<[PointInfo]>);

impl DeviceCtx<'_> {
    /// The shared copy of a resolved Modbus device and its points, if an earlier device of
    /// the same template resolved to the same; else this one, kept for the next.
    fn share(
        &mut self,
        template: &str,
        device: Arc<ModbusDevice>,
        points: Vec<PointInfo>,
    ) -> SharedModbus {
        let seen = self.resolved.entry(template.to_owned()).or_default();
        if let Some((d, p)) = seen.iter().find(|(d, _)| **d == *device) {
            return (d.clone(), p.clone());
        }
        let shared = (device, Arc::<[PointInfo]>::from(points));
        seen.push(shared.clone());
        shared
    }
}

const MODBUS_KEYS: &[&str] = &["bus", "host", "port", "unit", "poll_ms"];
const OPCUA_KEYS: &[&str] = &[
    "endpoint",
    "security_policy",
    "security_mode",
    "user",
    "password",
    "password_file",
    "user_cert",
    "user_key",
    "root",
    "trust_server_certs",
    "publishing_ms",
];

impl RawDevice {
    fn given(&self, key: &str) -> bool {
        match key {
            "bus" => self.bus.is_some(),
            "host" => self.host.is_some(),
            "port" => self.port.is_some(),
            "unit" => self.unit.is_some(),
            "poll_ms" => self.poll_ms.is_some(),
            "endpoint" => self.endpoint.is_some(),
            "security_policy" => self.security_policy.is_some(),
            "security_mode" => self.security_mode.is_some(),
            "user" => self.user.is_some(),
            "password" => self.password.is_some(),
            "password_file" => self.password_file.is_some(),
            "user_cert" => self.user_cert.is_some(),
            "user_key" => self.user_key.is_some(),
            "root" => self.root.is_some(),
            "trust_server_certs" => self.trust_server_certs.is_some(),
            "publishing_ms" => self.publishing_ms.is_some(),
            _ => false,
        }
    }
}

/// A resolved device, and the implicit bus of a Modbus device with its own `host`.
fn build_device(
    raw: RawDevice,
    i: usize,
    ctx: &mut DeviceCtx<'_>,
    errs: &mut Errs,
) -> Option<(DeviceDef, Option<BusDef>)> {
    let d = format!("device[{i}]");
    let before = errs.list.len();

    // Template.
    let template = match ctx.templates.get(&raw.template) {
        Some(t) => Some(t),
        None if ctx.broken_templates.contains(&raw.template) => {
            errs.push(
                format!("{d}.template"),
                format!("template `{}` has errors (see its file)", raw.template),
            );
            None
        }
        None => {
            let hint = closest(&raw.template, ctx.templates.keys().map(String::as_str))
                .map(|c| format!("did you mean `{c}`? "))
                .unwrap_or_default();
            errs.push(
                format!("{d}.template"),
                format!(
                    "unknown template `{}` ({hint}available: {})",
                    raw.template,
                    ctx.templates.keys().cloned().collect::<Vec<_>>().join(", ")
                ),
            );
            None
        }
    };
    let is_meter = template.is_some_and(|t| t.kind == "meter");

    // Id.
    let parsed = if is_meter {
        EntityPath::parse_meter(&raw.id)
    } else {
        EntityPath::parse(&raw.id)
    };
    match parsed {
        Err(r) => errs.push(format!("{d}.id"), r),
        Ok(id) => {
            if let Some(w) = ctx.workshop
                && !w.contains_strictly(&id)
            {
                errs.push(
                    format!("{d}.id"),
                    format!(
                        "`{}` is not below agent.workshop `{w}` (write e.g. {w}/l1/cnc-01)",
                        raw.id
                    ),
                );
            }
        }
    }
    if let Some(j) = ctx.ids.get(&raw.id) {
        errs.push(
            format!("{d}.id"),
            format!("duplicate device id `{}` (also device[{j}])", raw.id),
        );
    } else {
        ctx.ids.insert(raw.id.clone(), i);
    }

    // Registry facts.
    let control = raw
        .control
        .clone()
        .or_else(|| template.and_then(|t| t.control.clone()));
    if let Some(c) = &raw.control {
        if !CONTROLS.contains(&c.as_str()) {
            errs.push(
                format!("{d}.control"),
                format!(
                    "`{c}` is not a control type: one of {}",
                    CONTROLS.join(", ")
                ),
            );
        } else if is_meter {
            errs.push(
                format!("{d}.control"),
                "a meter has no control type (only machines do)",
            );
        }
    }
    if let Some(k) = &raw.key_process
        && k.trim().is_empty()
    {
        errs.push(
            format!("{d}.key_process"),
            "must not be empty (leave the key out when the device is not a key process)",
        );
    }
    if let Some(p) = &raw.product
        && !ctx.products.contains(p)
    {
        let known: Vec<&str> = ctx.products.iter().map(String::as_str).collect();
        errs.push(
            format!("{d}.product"),
            format!(
                "no [[product]] with id `{p}` (products: {})",
                if known.is_empty() {
                    "none defined".to_owned()
                } else {
                    known.join(", ")
                }
            ),
        );
    }
    for (name, v) in &raw.deadband {
        if !(v.is_finite() && *v >= 0.0) {
            errs.push(
                format!("{d}.deadband.{name}"),
                format!("must be ≥ 0 (got {v})"),
            );
        }
    }

    let template = template?;

    // Protocol-specific keys and overrides.
    let (other, other_name) = match template.protocol {
        Protocol::Modbus => (OPCUA_KEYS, "an OPC UA"),
        Protocol::Opcua => (MODBUS_KEYS, "a Modbus"),
    };
    let proto = match template.protocol {
        Protocol::Modbus => "Modbus",
        Protocol::Opcua => "OPC UA",
    };
    for key in other {
        if raw.given(key) {
            errs.push(
                format!("{d}.{key}"),
                format!(
                    "`{key}` is {other_name} key, but template `{}` is {proto}",
                    template.id
                ),
            );
        }
    }
    let o = &raw.overrides;
    let wrong_override: Vec<&str> = match template.protocol {
        Protocol::Modbus => [("sampling_ms", o.sampling_ms.is_some())]
            .into_iter()
            .filter_map(|(k, g)| g.then_some(k))
            .collect(),
        Protocol::Opcua => [
            ("address_base", o.address_base.is_some()),
            ("order", o.order.is_some()),
            ("max_registers", o.max_registers.is_some()),
            ("max_bits", o.max_bits.is_some()),
            ("max_gap", o.max_gap.is_some()),
            ("forbidden", o.forbidden.is_some()),
        ]
        .into_iter()
        .filter_map(|(k, g)| g.then_some(k))
        .collect(),
    };
    for key in wrong_override {
        errs.push(
            format!("{d}.overrides.{key}"),
            format!("does not apply to template `{}` ({proto})", template.id),
        );
    }

    let (source, points, implicit) = match template.protocol {
        Protocol::Modbus => modbus_source(&raw, &d, template, ctx, errs)?,
        Protocol::Opcua => opcua_source(&raw, &d, template, ctx, errs)?,
    };
    let (source, points) = match source {
        DeviceSource::Modbus {
            bus,
            unit,
            poll,
            device,
        } => {
            let (device, points) = ctx.share(&template.id, device, points);
            let source = DeviceSource::Modbus {
                bus,
                unit,
                poll,
                device,
            };
            (source, points)
        }
        opcua @ DeviceSource::Opcua { .. } => (opcua, Arc::<[PointInfo]>::from(points)),
    };

    if errs.list.len() > before {
        return None;
    }
    let def = DeviceDef {
        id: raw.id,
        template: template.clone(),
        kind: template.kind.clone(),
        control,
        carrier: template.carrier.clone(),
        key_process: raw.key_process,
        product: raw.product,
        networked: raw.networked.unwrap_or(true),
        deadbands: raw.deadband,
        states: template.state_rules(o).cloned(),
        counters: template.counter_rules(o).cloned(),
        meter: template.meter_rules(o).cloned(),
        points,
        source,
    };
    Some((def, implicit))
}

/// Deadbands must name points of the resolved device.
fn check_deadbands<'a>(
    raw: &RawDevice,
    d: &str,
    points: impl Iterator<Item = &'a str>,
    errs: &mut Errs,
) {
    let names: BTreeSet<&str> = points.collect();
    for name in raw.deadband.keys() {
        if !names.contains(name.as_str()) {
            let hint = closest(name, names.iter().copied())
                .map(|c| format!("did you mean `{c}`? "))
                .unwrap_or_default();
            errs.push(
                format!("{d}.deadband.{name}"),
                format!(
                    "the device has no point `{name}` ({hint}points: {})",
                    names.iter().copied().collect::<Vec<_>>().join(", ")
                ),
            );
        }
    }
}

type Source = (DeviceSource, Vec<PointInfo>, Option<BusDef>);

fn modbus_source(
    raw: &RawDevice,
    d: &str,
    t: &Template,
    ctx: &DeviceCtx<'_>,
    errs: &mut Errs,
) -> Option<Source> {
    let poll = int_in(
        errs,
        &format!("{d}.poll_ms"),
        raw.poll_ms,
        1000,
        10..=3_600_000,
        "ms",
    );
    // Which link, and is it TCP?
    let mut tcp = None;
    let mut implicit = None;
    let bus_name = match (&raw.bus, &raw.host) {
        (Some(_), Some(_)) => {
            errs.push(
                format!("{d}.host"),
                "give `bus` (a shared [[bus]]) or `host` (the device's own Modbus TCP address), not both",
            );
            None
        }
        (None, None) => {
            errs.push(
                d.to_owned(),
                "a Modbus device needs `bus = \"<name of a [[bus]]>\"` or `host = \"<IP address>\"` (its own Modbus TCP connection)",
            );
            None
        }
        (Some(b), None) => {
            if raw.port.is_some() {
                errs.push(
                    format!("{d}.port"),
                    "only with `host`; the port of a shared bus is set in its [[bus]]",
                );
            }
            match ctx.buses.iter().find(|x| x.name == *b) {
                Some(bus) => {
                    tcp = Some(matches!(bus.config.transport, Transport::Tcp { .. }));
                    Some(b.clone())
                }
                None if ctx.bus_names.contains_key(b) => Some(b.clone()), // bus has its own errors
                None => {
                    let names: Vec<&str> = ctx.bus_names.keys().map(String::as_str).collect();
                    let hint = closest(b, names.iter().copied())
                        .map(|c| format!("did you mean `{c}`? "))
                        .unwrap_or_default();
                    errs.push(
                        format!("{d}.bus"),
                        format!(
                            "no [[bus]] named `{b}` ({hint}buses: {})",
                            if names.is_empty() {
                                "none defined".to_owned()
                            } else {
                                names.join(", ")
                            }
                        ),
                    );
                    None
                }
            }
        }
        (None, Some(host)) => {
            tcp = Some(true);
            if ctx.bus_names.contains_key(&raw.id) {
                errs.push(
                    format!("{d}.host"),
                    format!(
                        "a [[bus]] is named `{}` like this device, whose own connection is named after its id: rename the bus",
                        raw.id
                    ),
                );
            }
            let port = int_in(errs, &format!("{d}.port"), raw.port, 502, 1..=65_535, "");
            match socket_addr(host, u16::try_from(port).unwrap_or(502)) {
                Ok(addr) => {
                    implicit = Some(BusDef {
                        name: raw.id.clone(),
                        config: BusConfig::new(raw.id.clone(), Transport::Tcp { addr }),
                    });
                    Some(raw.id.clone())
                }
                Err(r) => {
                    errs.push(format!("{d}.host"), r);
                    None
                }
            }
        }
    };
    let unit = int_in(errs, &format!("{d}.unit"), raw.unit, 1, 0..=247, "");
    if unit == 0 && tcp == Some(false) {
        errs.push(
            format!("{d}.unit"),
            "unit 0 is the broadcast address on a serial line (no device answers it): use 1..=247",
        );
    }
    let device = match t.resolve_modbus(&raw.overrides) {
        Ok(dev) => Some(dev),
        Err(e) => {
            let (p, r) = override_error(d, t, &raw.overrides, &e);
            errs.push(p, r);
            None
        }
    };
    let device = device?;
    check_deadbands(raw, d, device.points.iter().map(|p| p.name.as_str()), errs);
    let bus = bus_name?;
    let points = device
        .points
        .iter()
        .map(|p| PointInfo {
            name: p.name.clone(),
            unit: p.unit.clone(),
        })
        .collect();
    Some((
        DeviceSource::Modbus {
            bus,
            unit: u8::try_from(unit).unwrap_or(1),
            poll: ms(poll),
            device: Arc::new(device),
        },
        points,
        implicit,
    ))
}

fn opcua_source(
    raw: &RawDevice,
    d: &str,
    t: &Template,
    ctx: &DeviceCtx<'_>,
    errs: &mut Errs,
) -> Option<Source> {
    let before = errs.list.len();
    let endpoint = match &raw.endpoint {
        None => {
            errs.push(
                format!("{d}.endpoint"),
                "missing required key: an OPC UA device needs endpoint = \"opc.tcp://host:4840\"",
            );
            String::new()
        }
        Some(e) => {
            match e.strip_prefix("opc.tcp://") {
                None => errs.push(
                    format!("{d}.endpoint"),
                    format!("`{e}` must start with opc.tcp:// (only the binary TCP transport is supported)"),
                ),
                Some(rest) => {
                    let authority = rest.split('/').next().unwrap_or_default();
                    if let Err(r) = split_host_port(authority) {
                        errs.push(format!("{d}.endpoint"), r);
                    }
                }
            }
            e.clone()
        }
    };
    let policy = match raw.security_policy.as_deref().map(str::parse::<Policy>) {
        None => Policy::None,
        Some(Ok(p)) => p,
        Some(Err(r)) => {
            errs.push(format!("{d}.security_policy"), r);
            Policy::None
        }
    };
    let mode = match raw.security_mode.as_deref().map(str::parse::<Mode>) {
        None if policy == Policy::None => Mode::None,
        None => Mode::SignAndEncrypt,
        Some(Ok(m)) => m,
        Some(Err(r)) => {
            errs.push(format!("{d}.security_mode"), r);
            Mode::None
        }
    };
    // Identity.
    if raw.password.is_some() && raw.password_file.is_some() {
        errs.push(
            format!("{d}.password_file"),
            "give `password` or `password_file`, not both",
        );
    }
    if raw.user.is_some() && (raw.user_cert.is_some() || raw.user_key.is_some()) {
        errs.push(
            format!("{d}.user_cert"),
            "give `user` (with a password) or `user_cert` + `user_key`, not both",
        );
    }
    let identity = match (&raw.user, &raw.user_cert, &raw.user_key) {
        (Some(user), None, None) => {
            let password = match (&raw.password, &raw.password_file) {
                (Some(p), _) => Some(p.clone()),
                (None, Some(f)) => read_secret(ctx.dir, f, &format!("{d}.password_file"), errs),
                (None, None) => {
                    errs.push(
                        format!("{d}.user"),
                        "a user name needs `password` or `password_file`",
                    );
                    None
                }
            };
            if user.is_empty() {
                errs.push(format!("{d}.user"), "must not be empty");
            }
            Identity::UserName {
                user: user.clone(),
                password: password.unwrap_or_default(),
            }
        }
        (None, cert, key) => {
            if raw.password.is_some() || raw.password_file.is_some() {
                errs.push(
                    format!("{d}.user"),
                    "missing: `password`/`password_file` needs a `user`",
                );
            }
            match (cert, key) {
                (Some(c), Some(k)) => Identity::Certificate {
                    cert: readable_file(ctx.dir, c, &format!("{d}.user_cert"), errs),
                    key: readable_file(ctx.dir, k, &format!("{d}.user_key"), errs),
                },
                (Some(_), None) => {
                    errs.push(
                        format!("{d}.user_key"),
                        "missing: `user_cert` needs its private key `user_key`",
                    );
                    Identity::Anonymous
                }
                (None, Some(_)) => {
                    errs.push(
                        format!("{d}.user_cert"),
                        "missing: `user_key` needs the certificate `user_cert`",
                    );
                    Identity::Anonymous
                }
                (None, None) => Identity::Anonymous,
            }
        }
        _ => Identity::Anonymous, // both kinds: reported above
    };
    if let Some(r) = &raw.root
        && r.trim().is_empty()
    {
        errs.push(
            format!("{d}.root"),
            "must not be empty (leave it out to start at the Objects folder)",
        );
    }
    let publishing = int_in(
        errs,
        &format!("{d}.publishing_ms"),
        raw.publishing_ms,
        500,
        10..=3_600_000,
        "ms",
    );
    let data_dir = ctx.data_dir.clone().unwrap_or_default();
    let mut config = OpcuaConfig::new(endpoint, data_dir.join("pki"));
    config.security_policy = policy;
    config.security_mode = mode;
    config.identity = identity;
    config.trust_server_certs = raw.trust_server_certs.unwrap_or(false);
    config.root = raw.root.clone();
    config.publishing_interval = ms(publishing);
    if errs.list.len() == before
        && let Err(e) = config.validate()
    {
        let reason = match &e {
            OpcuaError::Config(r) => r.clone(),
            other => other.to_string(),
        };
        let key = if reason.contains("endpoint") {
            "endpoint"
        } else if raw.security_mode.is_some() || !reason.contains("mode") {
            "security_mode"
        } else {
            "security_policy"
        };
        errs.push(format!("{d}.{key}"), reason);
    }
    let device = match t.resolve_opcua(&raw.overrides) {
        Ok(dev) => dev,
        Err(e) => {
            let (p, r) = override_error(d, t, &raw.overrides, &e);
            errs.push(p, r);
            return None;
        }
    };
    check_deadbands(raw, d, device.points.iter().map(|p| p.name.as_str()), errs);
    if errs.list.len() > before {
        return None;
    }
    let points = device
        .points
        .iter()
        .map(|p| PointInfo {
            name: p.name.clone(),
            unit: p.unit.clone(),
        })
        .collect();
    let config = Box::new(config);
    Some((DeviceSource::Opcua { config, device }, points, None))
}
