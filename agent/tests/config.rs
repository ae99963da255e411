#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The agent configuration: every documented error (docs/CONFIG.md) with its exact field path,
//! all errors at once, the example config against the simulator scenarios, and `check`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use shopfloor_acquire::modbus::{Parity, Transport};
use shopfloor_acquire::opcua::{Identity, Mode, Policy};
use shopfloor_agent::config::{self, ConfigError, DeviceSource};

/// A valid configuration the tests break one way at a time.
const BASE: &str = r#"
[agent]
id = "w1-agent"
workshop = "p1/e1/w1"
data_dir = "data"

[mqtt]
url = "mqtt://127.0.0.1:1883"

[[product]]
id = "shaft-a"
ideal_cycle_s = 40

[[bus]]
name = "gw"
host = "127.0.0.1"
port = 5020

[[bus]]
name = "rs485"
serial = "/dev/ttyUSB0"

[[device]]
id = "p1/e1/w1/l1/cnc-01"
template = "cnc-modbus-generic"
bus = "gw"
unit = 1
product = "shaft-a"
"#;

/// An OPC UA device to append to [`BASE`] (as `device[1]`).
const OPCUA: &str = r#"
[[device]]
id = "p1/e1/w1/l2/mt-01"
template = "cnc-opcua-machinetool"
endpoint = "opc.tcp://127.0.0.1:4840/"
"#;

struct Cfg {
    dir: tempfile::TempDir,
    path: PathBuf,
}

fn write(text: &str) -> Cfg {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("agent.toml");
    std::fs::write(&path, text).unwrap();
    Cfg { dir, path }
}

fn errors_of(path: &Path) -> Vec<ConfigError> {
    match config::load(path) {
        Ok(_) => panic!("{} loaded, expected errors", path.display()),
        Err(e) => e.into_vec(),
    }
}

fn errors(text: &str) -> Vec<ConfigError> {
    let c = write(text);
    let errs = errors_of(&c.path);
    for e in &errs {
        assert_eq!(e.file, c.path, "{e}");
    }
    errs
}

/// Asserts that loading `text` reports an error at exactly `path` whose reason contains
/// `fragment`.
#[track_caller]
fn assert_error(text: &str, path: &str, fragment: &str) {
    let errs = errors(text);
    let listed: Vec<String> = errs
        .iter()
        .map(|e| format!("{}: {}", e.path, e.reason))
        .collect();
    assert!(
        errs.iter()
            .any(|e| e.path == path && e.reason.contains(fragment)),
        "no error at `{path}` containing `{fragment}`; got:\n{}",
        listed.join("\n")
    );
}

fn base_with(from: &str, to: &str) -> String {
    assert!(BASE.contains(from), "{from}");
    BASE.replacen(from, to, 1)
}

fn example_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs/agent.example.toml")
}

// ---- the happy path

#[test]
fn base_config_loads_with_defaults() {
    let c = write(BASE);
    let cfg = config::load(&c.path).unwrap();
    assert_eq!(cfg.agent.data_dir, c.dir.path().join("data"));
    assert_eq!(cfg.agent.time_zone, "Asia/Shanghai");
    assert_eq!(cfg.mqtt.host, "127.0.0.1");
    assert_eq!(cfg.mqtt.port, 1883);
    assert_eq!(cfg.mqtt.client_id, "w1-agent");
    assert_eq!(cfg.mqtt.topic_prefix, "shopfloor/v1");
    assert_eq!(cfg.mqtt.keep_alive, Duration::from_secs(30));
    assert_eq!(cfg.mqtt.inflight, 32);
    assert_eq!(cfg.batch.interval, Duration::from_secs(5));
    assert_eq!(cfg.batch.heartbeat, Duration::from_secs(300));
    assert_eq!(cfg.batch.max_samples, 50_000);
    assert_eq!(cfg.outbox.budget_bytes, 1024 * 1024 * 1024);
    assert_eq!(cfg.outbox.fsync, "full");
    assert_eq!(cfg.metrics.listen, Some("127.0.0.1:9464".parse().unwrap()));
    assert_eq!(cfg.indicators.rolling, vec![Duration::from_secs(3600)]);
    let d = &cfg.devices[0];
    assert_eq!(d.kind, "cnc");
    assert_eq!(d.control.as_deref(), Some("cnc"));
    assert!(d.networked);
    assert!(d.states.is_some() && d.counters.is_some());
    assert!(d.points.iter().any(|p| p.name == "part_count"));
    match &d.source {
        DeviceSource::Modbus {
            bus, unit, poll, ..
        } => {
            assert_eq!(bus, "gw");
            assert_eq!(*unit, 1);
            assert_eq!(*poll, Duration::from_secs(1));
        }
        other => panic!("{other:?}"),
    }
    // Serial defaults follow the Modbus serial line spec: 8E1.
    let rs485 = cfg.buses.iter().find(|b| b.name == "rs485").unwrap();
    match &rs485.config.transport {
        Transport::Rtu(s) => {
            assert_eq!(
                (s.baud, s.parity, s.data_bits, s.stop_bits),
                (9600, Parity::Even, 8, 1)
            );
        }
        other => panic!("{other:?}"),
    }
}

/// Devices of one template share its resolved point map (one copy, not one per device); a
/// device whose overrides change the map gets its own.
#[test]
fn devices_of_one_template_share_the_resolved_points() {
    let text = format!(
        "{BASE}
[[device]]
id = \"p1/e1/w1/l1/cnc-02\"
template = \"cnc-modbus-generic\"
bus = \"gw\"
unit = 2

[[device]]
id = \"p1/e1/w1/l1/cnc-03\"
template = \"cnc-modbus-generic\"
bus = \"gw\"
unit = 3
[[device.overrides.point]]
name = \"part_count\"
address = 20
"
    );
    let c = write(&text);
    let cfg = config::load(&c.path).unwrap();
    let map = |i: usize| match &cfg.devices[i].source {
        DeviceSource::Modbus { device, .. } => device.clone(),
        other => panic!("{other:?}"),
    };
    let (a, b, own) = (map(0), map(1), map(2));
    assert!(std::sync::Arc::ptr_eq(&a, &b));
    assert!(std::sync::Arc::ptr_eq(
        &cfg.devices[0].points,
        &cfg.devices[1].points
    ));
    assert!(std::sync::Arc::ptr_eq(
        &cfg.devices[0].template,
        &cfg.devices[2].template
    ));
    assert!(!std::sync::Arc::ptr_eq(&a, &own));
    assert_ne!(*a, *own);
    let addr = |d: &shopfloor_devices::template::ModbusDevice| {
        d.points
            .iter()
            .find(|p| p.name == "part_count")
            .map(|p| p.layout.address)
    };
    assert!(addr(&own).is_some());
    assert_ne!(addr(&a), addr(&own));
    // Each device's own settings stay its own.
    let acq = cfg.acquisition();
    let units: Vec<u8> = acq.modbus[0].1.iter().map(|d| d.unit).collect();
    assert_eq!(units, [1, 2, 3]);
}

#[test]
fn example_config_loads_and_covers_both_scenarios() {
    let cfg = config::load(&example_path()).unwrap_or_else(|e| panic!("{e}"));
    let ids: Vec<&str> = cfg.devices.iter().map(|d| d.id.as_str()).collect();
    for name in [
        "cnc-01",
        "cnc-02",
        "cnc-03",
        "meter-line1",
        "meter-main",
        "water-line1",
        "mt-01",
        "robot-01",
    ] {
        assert!(
            ids.iter().any(|i| i.ends_with(&format!("/{name}"))),
            "{name} missing from {ids:?}"
        );
    }
    for d in &cfg.devices {
        if d.kind == "meter" {
            assert!(d.carrier.is_some(), "{}", d.id);
        }
        if d.kind == "cnc" {
            assert!(d.product.is_some(), "{}", d.id);
        }
    }
    let acq = cfg.acquisition();
    let mut links: Vec<(String, Vec<(String, u8)>)> = acq
        .modbus
        .iter()
        .map(|(b, ds)| {
            (
                b.transport.to_string(),
                ds.iter().map(|d| (d.id.to_string(), d.unit)).collect(),
            )
        })
        .collect();
    links.sort();
    assert_eq!(
        links,
        vec![
            (
                "rtu:///tmp/shopfloor-rs485-line1@9600".to_string(),
                vec![
                    ("p1/e1/w1/l1/meter-line1".to_string(), 11),
                    ("p1/e1/w1/meter-main".to_string(), 12),
                    ("p1/e1/w1/l1/water-line1".to_string(), 21),
                ]
            ),
            (
                "tcp://127.0.0.1:5020".to_string(),
                vec![
                    ("p1/e1/w1/l1/cnc-01".to_string(), 1),
                    ("p1/e1/w1/l1/cnc-02".to_string(), 2),
                ]
            ),
            (
                "tcp://127.0.0.1:5023".to_string(),
                vec![("p1/e1/w1/l1/cnc-03".to_string(), 1)]
            ),
        ]
    );
    // The device with its own host gets a link named after it.
    let own = acq
        .modbus
        .iter()
        .find(|(b, _)| b.transport.to_string() == "tcp://127.0.0.1:5023")
        .unwrap();
    assert_eq!(&*own.0.name, "p1/e1/w1/l1/cnc-03");
    assert_eq!(acq.opcua.len(), 2);
    for (id, c, dev) in &acq.opcua {
        assert_eq!(c.endpoint, "opc.tcp://127.0.0.1:4840/");
        assert_eq!(c.security_policy, Policy::Basic256Sha256);
        assert_eq!(c.security_mode, Mode::SignAndEncrypt);
        assert!(
            matches!(&c.identity, Identity::UserName { user, password } if user == "agent" && password == "change-me")
        );
        assert!(c.trust_server_certs);
        assert_eq!(c.pki_dir, cfg.agent.data_dir.join("pki"));
        let name = id.rsplit('/').next().unwrap();
        assert_eq!(
            c.root.as_deref(),
            Some(format!("nsu=urn:shopfloor:sim;s={name}").as_str())
        );
        assert!(!dev.points.is_empty());
    }
    // data_dir is relative to the config file, not to the working directory.
    assert!(
        cfg.agent
            .data_dir
            .starts_with(example_path().parent().unwrap())
    );
    assert_eq!(cfg.indicators.shifts.len(), 2);
}

// ---- syntax and structure

#[test]
fn missing_file_is_reported_with_the_os_reason() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nope.toml");
    let errs = errors_of(&path);
    assert_eq!(errs.len(), 1);
    assert_eq!(errs[0].path, "");
    assert!(errs[0].reason.contains("cannot read"), "{}", errs[0]);
    assert!(
        errs[0]
            .to_string()
            .starts_with(&format!("{}: ", path.display()))
    );
}

#[test]
fn toml_syntax_error_names_line_and_column() {
    let text = format!("{BASE}\n[[device]]\nid = \"p1/e1/w1/l1/x\ntemplate = 3\n");
    let errs = errors(&text);
    assert!(
        errs.iter()
            .any(|e| e.path.starts_with("line ") && e.path.contains(", column ")),
        "{errs:?}"
    );
    assert!(
        errs.iter().all(|e| e.reason.starts_with("TOML syntax")),
        "{errs:?}"
    );
}

#[test]
fn unknown_section_is_named_with_a_suggestion() {
    assert_error(
        &format!("{BASE}\n[[devices]]\nid = \"x\"\n"),
        "devices",
        "did you mean `device`?",
    );
}

#[test]
fn unknown_key_in_a_device_names_the_key_and_the_place() {
    let text = base_with("unit = 1", "unti = 1");
    assert_error(&text, "device[0].unti", "unknown key `unti` in device[0]");
}

#[test]
fn unknown_key_in_a_nested_override_point_is_located() {
    let text = format!("{BASE}\n[[device.overrides.point]]\nname = \"part_count\"\nadress = 70\n");
    assert_error(
        &text,
        "device[0].overrides.point[0].adress",
        "unknown key `adress`",
    );
}

#[test]
fn unknown_key_in_mqtt_tls() {
    let text = base_with(
        "url = \"mqtt://127.0.0.1:1883\"",
        "url = \"mqtts://127.0.0.1\"\n[mqtt.tls]\nca = \"ca.pem\"",
    );
    assert_error(&text, "mqtt.tls.ca", "unknown key `ca`");
}

#[test]
fn wrong_type_is_reported_in_plain_words() {
    assert_error(
        &base_with("unit = 1", "unit = \"one\""),
        "device[0].unit",
        "wrong type: string \"one\", expected an integer",
    );
}

#[test]
fn missing_required_key() {
    assert_error(
        &base_with("id = \"w1-agent\"\n", ""),
        "agent.id",
        "missing required key",
    );
    assert_error(
        &base_with("url = \"mqtt://127.0.0.1:1883\"\n", ""),
        "mqtt.url",
        "missing required key",
    );
    assert_error(
        &base_with("template = \"cnc-modbus-generic\"\n", ""),
        "device[0].template",
        "missing required key",
    );
}

#[test]
fn device_written_as_a_plain_table() {
    let text = BASE.replace("[[device]]", "[device]");
    assert_error(&text, "device", "write [[device]]");
}

// ---- [agent]

#[test]
fn bad_agent_id() {
    assert_error(
        &base_with("id = \"w1-agent\"", "id = \"W1 Agent\""),
        "agent.id",
        "not a valid agent id",
    );
}

#[test]
fn bad_workshop_path() {
    assert_error(
        &base_with("workshop = \"p1/e1/w1\"", "workshop = \"p1//w1\""),
        "agent.workshop",
        "empty segment",
    );
}

#[test]
fn bad_time_zone() {
    assert_error(
        &base_with(
            "data_dir = \"data\"",
            "data_dir = \"data\"\ntime_zone = \"Asia/Chongqin\"",
        ),
        "agent.time_zone",
        "unknown time zone",
    );
}

// ---- [mqtt]

#[test]
fn mqtt_url_scheme() {
    assert_error(
        &base_with("mqtt://127.0.0.1:1883", "tcp://127.0.0.1:1883"),
        "mqtt.url",
        "mqtt:// (plain TCP) or mqtts://",
    );
}

#[test]
fn mqtts_needs_tls_section_and_defaults_to_8883() {
    assert_error(
        &base_with("mqtt://127.0.0.1:1883", "mqtts://broker.example"),
        "mqtt.tls",
        "needs a [mqtt.tls] section",
    );
    let c = write(&base_with(
        "url = \"mqtt://127.0.0.1:1883\"",
        "url = \"mqtts://broker.example\"\n[mqtt.tls]\nca_file = \"ca.pem\"",
    ));
    std::fs::write(c.dir.path().join("ca.pem"), "pem").unwrap();
    let cfg = config::load(&c.path).unwrap();
    assert_eq!(cfg.mqtt.port, 8883);
    assert_eq!(cfg.mqtt.tls.unwrap().ca, c.dir.path().join("ca.pem"));
}

#[test]
fn tls_files_must_be_readable_and_cert_needs_key() {
    let text = base_with(
        "url = \"mqtt://127.0.0.1:1883\"",
        "url = \"mqtts://127.0.0.1\"\n[mqtt.tls]\nca_file = \"missing-ca.pem\"\ncert_file = \"agent.pem\"",
    );
    let c = write(&text);
    std::fs::write(c.dir.path().join("agent.pem"), "pem").unwrap();
    let errs = errors_of(&c.path);
    assert!(
        errs.iter()
            .any(|e| e.path == "mqtt.tls.ca_file" && e.reason.contains("cannot read")),
        "{errs:?}"
    );
    assert!(
        errs.iter()
            .any(|e| e.path == "mqtt.tls.key_file" && e.reason.contains("needs its private key")),
        "{errs:?}"
    );
}

#[test]
fn password_and_password_file_not_both_and_file_must_be_readable() {
    let text = base_with(
        "url = \"mqtt://127.0.0.1:1883\"",
        "url = \"mqtt://127.0.0.1:1883\"\nusername = \"a\"\npassword = \"x\"\npassword_file = \"pw\"",
    );
    assert_error(&text, "mqtt.password_file", "not both");
    let text = base_with(
        "url = \"mqtt://127.0.0.1:1883\"",
        "url = \"mqtt://127.0.0.1:1883\"\nusername = \"a\"\npassword_file = \"secrets/none\"",
    );
    assert_error(&text, "mqtt.password_file", "cannot read");
    // A readable one is read at load time, without its line break.
    let c = write(&text);
    std::fs::create_dir(c.dir.path().join("secrets")).unwrap();
    std::fs::write(c.dir.path().join("secrets/none"), "s3cret\n").unwrap();
    let cfg = config::load(&c.path).unwrap();
    assert_eq!(cfg.mqtt.password.as_deref(), Some("s3cret"));
}

// ---- [batch], [outbox], [metrics], [indicators]

#[test]
fn heartbeat_below_interval() {
    assert_error(
        &format!("{BASE}\n[batch]\ninterval_s = 60\nheartbeat_s = 30\n"),
        "batch.heartbeat_s",
        "must be ≥ batch.interval_s (60 s)",
    );
}

#[test]
fn outbox_budget_zero_and_fsync_value() {
    let errs = errors(&format!(
        "{BASE}\n[outbox]\nbudget_mb = 0\nfsync = \"always\"\n"
    ));
    assert!(
        errs.iter()
            .any(|e| e.path == "outbox.budget_mb" && e.reason.contains("1..=1048576 MB (got 0)")),
        "{errs:?}"
    );
    assert!(
        errs.iter()
            .any(|e| e.path == "outbox.fsync" && e.reason.contains("\"full\" or \"normal\"")),
        "{errs:?}"
    );
}

#[test]
fn metrics_off_and_bad_address() {
    let c = write(&format!("{BASE}\n[metrics]\nlisten = \"off\"\n"));
    assert_eq!(config::load(&c.path).unwrap().metrics.listen, None);
    assert_error(
        &format!("{BASE}\n[metrics]\nlisten = \"localhost\"\n"),
        "metrics.listen",
        "not an IP address and port",
    );
}

#[test]
fn overlapping_shifts_are_rejected_overnight_allowed() {
    let shifts = |a: &str, b: &str| {
        format!(
            "{BASE}\n[[indicators.shift]]\nname = \"day\"\nstart = \"{a}\"\nhours = 12\n[[indicators.shift]]\nname = \"night\"\nstart = \"{b}\"\nhours = 12\n"
        )
    };
    assert_error(
        &shifts("08:00", "19:00"),
        "indicators.shift[1]",
        "overlaps shift `day`",
    );
    // 22:00 for 12 h runs into the next morning's 08:00 shift.
    assert_error(&shifts("08:00", "22:00"), "indicators.shift[1]", "overlaps");
    let c = write(&shifts("08:00", "20:00"));
    let cfg = config::load(&c.path).unwrap();
    assert_eq!(cfg.indicators.shifts.len(), 2);
    assert_eq!(
        cfg.indicators.shifts[1].start,
        jiff::civil::time(20, 0, 0, 0)
    );
    assert_error(
        &format!("{BASE}\n[[indicators.shift]]\nname = \"a\"\nstart = \"8:00\"\nhours = 8\n"),
        "indicators.shift[0].start",
        "HH:MM",
    );
}

#[test]
fn rolling_window_out_of_range() {
    assert_error(
        &format!("{BASE}\n[indicators]\nrolling_minutes = [60, 0]\n"),
        "indicators.rolling_minutes[1]",
        "1..=10080",
    );
}

// ---- [[product]], [[bus]]

#[test]
fn product_cycle_must_be_positive() {
    assert_error(
        &base_with("ideal_cycle_s = 40", "ideal_cycle_s = 0"),
        "product[0].ideal_cycle_s",
        "must be > 0",
    );
}

#[test]
fn duplicate_bus_name() {
    assert_error(
        &base_with("name = \"rs485\"", "name = \"gw\""),
        "bus[1].name",
        "duplicate bus name `gw` (also bus[0])",
    );
}

#[test]
fn bus_with_serial_and_host() {
    assert_error(
        &base_with("port = 5020", "port = 5020\nserial = \"/dev/ttyS0\""),
        "bus[0].serial",
        "not both",
    );
}

#[test]
fn bus_serial_settings_validated() {
    let text = base_with(
        "serial = \"/dev/ttyUSB0\"",
        "serial = \"/dev/ttyUSB0\"\nbaud = 0\nparity = \"mark\"\nstop_bits = 3",
    );
    let errs = errors(&text);
    for (path, frag) in [
        ("bus[1].baud", "300..=921600 baud (got 0)"),
        ("bus[1].parity", "\"even\", \"odd\" or \"none\""),
        ("bus[1].stop_bits", "1..=2"),
    ] {
        assert!(
            errs.iter()
                .any(|e| e.path == path && e.reason.contains(frag)),
            "{path}: {errs:?}"
        );
    }
    assert_error(
        &base_with("port = 5020", "port = 5020\nbaud = 19200"),
        "bus[0].baud",
        "only for a serial line",
    );
}

// ---- [[device]]

#[test]
fn device_not_below_workshop() {
    assert_error(
        &base_with("p1/e1/w1/l1/cnc-01", "p1/e1/w2/l1/cnc-01"),
        "device[0].id",
        "not below agent.workshop `p1/e1/w1`",
    );
}

#[test]
fn duplicate_device_id() {
    let text = format!(
        "{BASE}\n[[device]]\nid = \"p1/e1/w1/l1/cnc-01\"\ntemplate = \"cnc-modbus-generic\"\nbus = \"gw\"\nunit = 2\n"
    );
    assert_error(
        &text,
        "device[1].id",
        "duplicate device id `p1/e1/w1/l1/cnc-01` (also device[0])",
    );
}

#[test]
fn unknown_template_suggests_the_closest() {
    let errs = errors(&base_with("cnc-modbus-generic", "cnc-modbus-generik"));
    let e = errs
        .iter()
        .find(|e| e.path == "device[0].template")
        .unwrap();
    assert!(
        e.reason.contains("unknown template `cnc-modbus-generik`"),
        "{e}"
    );
    assert!(
        e.reason.contains("did you mean `cnc-modbus-generic`?"),
        "{e}"
    );
    assert!(e.reason.contains("robot-opcua-40010"), "{e}");
}

#[test]
fn protocol_mismatch_both_ways() {
    let text = base_with("unit = 1", "unit = 1\nendpoint = \"opc.tcp://x:4840\"");
    assert_error(
        &text,
        "device[0].endpoint",
        "is an OPC UA key, but template `cnc-modbus-generic` is Modbus",
    );
    let text = format!("{BASE}{OPCUA}bus = \"gw\"\npoll_ms = 100\n");
    assert_error(
        &text,
        "device[1].bus",
        "is a Modbus key, but template `cnc-opcua-machinetool` is OPC UA",
    );
    assert_error(&text, "device[1].poll_ms", "is a Modbus key");
}

#[test]
fn device_with_unknown_bus() {
    assert_error(
        &base_with("bus = \"gw\"", "bus = \"gw2\""),
        "device[0].bus",
        "no [[bus]] named `gw2` (did you mean `gw`? buses: gw, rs485)",
    );
}

#[test]
fn device_with_bus_and_host_or_neither() {
    assert_error(
        &base_with("bus = \"gw\"", "bus = \"gw\"\nhost = \"127.0.0.1\""),
        "device[0].host",
        "not both",
    );
    assert_error(&base_with("bus = \"gw\"\n", ""), "device[0]", "needs `bus");
}

#[test]
fn device_with_own_host_gets_its_own_bus() {
    let c = write(&base_with(
        "bus = \"gw\"",
        "host = \"127.0.0.1\"\nport = 5023",
    ));
    let cfg = config::load(&c.path).unwrap();
    let acq = cfg.acquisition();
    assert_eq!(acq.modbus.len(), 1);
    assert_eq!(&*acq.modbus[0].0.name, "p1/e1/w1/l1/cnc-01");
    assert_eq!(
        acq.modbus[0].0.transport.to_string(),
        "tcp://127.0.0.1:5023"
    );
}

#[test]
fn unit_out_of_range_and_broadcast_on_serial() {
    assert_error(
        &base_with("unit = 1", "unit = 248"),
        "device[0].unit",
        "must be 0..=247 (got 248)",
    );
    assert_error(
        &base_with("bus = \"gw\"\nunit = 1", "bus = \"rs485\"\nunit = 0"),
        "device[0].unit",
        "broadcast",
    );
    // 0 is fine on TCP.
    let c = write(&base_with("unit = 1", "unit = 0"));
    config::load(&c.path).unwrap();
}

#[test]
fn poll_out_of_range() {
    assert_error(
        &base_with("unit = 1", "unit = 1\npoll_ms = 5"),
        "device[0].poll_ms",
        "must be 10..=3600000 ms (got 5)",
    );
}

#[test]
fn unknown_product_and_control_value() {
    assert_error(
        &base_with("product = \"shaft-a\"", "product = \"shaft-b\""),
        "device[0].product",
        "no [[product]] with id `shaft-b`",
    );
    assert_error(
        &base_with("product = \"shaft-a\"", "control = \"nc\""),
        "device[0].control",
        "not a control type: one of cnc, plc, dcs, robot, manual",
    );
}

#[test]
fn deadband_on_unknown_point() {
    let text = format!("{BASE}[device.deadband]\nspindle_rpm = 5.0\n");
    assert_error(
        &text,
        "device[0].deadband.spindle_rpm",
        "did you mean `spindle_speed_rpm`?",
    );
    let text = format!("{BASE}[device.deadband]\nspindle_speed_rpm = -1.0\n");
    assert_error(&text, "device[0].deadband.spindle_speed_rpm", "must be ≥ 0");
}

#[test]
fn template_override_errors_point_at_the_override_entry() {
    // The second override entry adds a point without a table.
    let text = format!(
        "{BASE}[[device.overrides.point]]\nname = \"part_count\"\naddress = 20\n[[device.overrides.point]]\nname = \"door_open\"\naddress = 30\n"
    );
    assert_error(
        &text,
        "device[0].overrides.point[1].table",
        "point `door_open`: missing",
    );
    // An address beyond the wire range.
    let text =
        format!("{BASE}[[device.overrides.point]]\nname = \"part_count\"\naddress = 70000\n");
    assert_error(
        &text,
        "device[0].overrides.point[0].address",
        "not a wire address",
    );
    // Removing a counter point without replacing [counters].
    let text = format!("{BASE}[[device.overrides.point]]\nname = \"good_count\"\nremove = true\n");
    assert_error(
        &text,
        "device[0].overrides",
        "replace [device.overrides.counters]",
    );
    // Removing a point the template does not have (the template module's own path).
    let text = format!("{BASE}[[device.overrides.point]]\nname = \"nope\"\nremove = true\n");
    assert_error(
        &text,
        "device[0].overrides.point[0].name",
        "no point `nope` to remove",
    );
    // Removing and replacing the rules is fine, and the rules in force are the override's.
    let text = format!(
        "{BASE}[[device.overrides.point]]\nname = \"good_count\"\nremove = true\n[device.overrides.counters]\nproduced = \"part_count\"\nscrap = \"scrap_count\"\n"
    );
    let c = write(&text);
    let cfg = config::load(&c.path).unwrap();
    let counters = cfg.devices[0].counters.as_ref().unwrap();
    assert_eq!(counters.good, None);
    assert!(!cfg.devices[0].points.iter().any(|p| p.name == "good_count"));
}

#[test]
fn modbus_overrides_on_an_opcua_template() {
    let text = format!("{BASE}{OPCUA}[device.overrides]\nmax_registers = 60\n");
    assert_error(&text, "device[1].overrides.max_registers", "does not apply");
}

// ---- OPC UA devices

#[test]
fn opcua_endpoint_must_be_opc_tcp() {
    let text =
        format!("{BASE}{OPCUA}").replace("opc.tcp://127.0.0.1:4840/", "http://127.0.0.1:4840");
    assert_error(&text, "device[1].endpoint", "must start with opc.tcp://");
    let text = format!("{BASE}{OPCUA}").replace("opc.tcp://127.0.0.1:4840/", "opc.tcp://:4840");
    assert_error(&text, "device[1].endpoint", "the host is missing");
}

#[test]
fn opcua_policy_mode_mismatch() {
    let text = format!("{BASE}{OPCUA}security_policy = \"None\"\nsecurity_mode = \"Sign\"\n");
    assert_error(&text, "device[1].security_mode", "needs a security policy");
    let text =
        format!("{BASE}{OPCUA}security_policy = \"Basic256Sha256\"\nsecurity_mode = \"None\"\n");
    assert_error(
        &text,
        "device[1].security_mode",
        "needs mode Sign or SignAndEncrypt",
    );
    let text = format!("{BASE}{OPCUA}security_policy = \"Basic128\"\n");
    assert_error(
        &text,
        "device[1].security_policy",
        "unknown security policy",
    );
}

#[test]
fn opcua_identity_rules() {
    let text = format!("{BASE}{OPCUA}user = \"agent\"\npassword = \"x\"\npassword_file = \"pw\"\n");
    assert_error(&text, "device[1].password_file", "not both");
    let text = format!("{BASE}{OPCUA}user = \"agent\"\n");
    assert_error(
        &text,
        "device[1].user",
        "needs `password` or `password_file`",
    );
    let text = format!("{BASE}{OPCUA}user = \"agent\"\npassword_file = \"nope\"\n");
    assert_error(&text, "device[1].password_file", "cannot read");
    let text = format!("{BASE}{OPCUA}user_cert = \"user.der\"\n");
    assert_error(&text, "device[1].user_key", "needs its private key");
    let text = format!("{BASE}{OPCUA}user_cert = \"user.der\"\nuser_key = \"user.pem\"\n");
    assert_error(&text, "device[1].user_cert", "cannot read");
}

#[test]
fn opcua_defaults() {
    let c = write(&format!(
        "{BASE}{OPCUA}security_policy = \"Basic256Sha256\"\n"
    ));
    let cfg = config::load(&c.path).unwrap();
    let acq = cfg.acquisition();
    let (id, oc, _) = &acq.opcua[0];
    assert_eq!(&**id, "p1/e1/w1/l2/mt-01");
    assert_eq!(oc.security_mode, Mode::SignAndEncrypt);
    assert!(matches!(oc.identity, Identity::Anonymous));
    assert!(!oc.trust_server_certs);
    assert_eq!(oc.pki_dir, c.dir.path().join("data").join("pki"));
    assert_eq!(oc.publishing_interval, Duration::from_millis(500));
}

// ---- everything at once, disabled devices, templates_dir

#[test]
fn all_errors_are_reported_at_once() {
    let text = base_with("id = \"w1-agent\"", "id = \"W1\"")
        .replace("unit = 1", "unit = 300")
        .replace("port = 5020", "port = 5020\nbogus = 1")
        + "\n[outbox]\nfsync = \"sometimes\"\n";
    let errs = errors(&text);
    let paths: Vec<&str> = errs.iter().map(|e| e.path.as_str()).collect();
    for p in ["agent.id", "device[0].unit", "bus[0].bogus", "outbox.fsync"] {
        assert!(paths.contains(&p), "{p} missing: {paths:?}");
    }
    // A bus that failed to parse does not make its devices report "no such bus".
    assert!(!paths.contains(&"device[0].bus"), "{paths:?}");
    // Display: one `file: path: reason` per line.
    let c = write(&text);
    let shown = config::load(&c.path).unwrap_err().to_string();
    assert_eq!(shown.lines().count(), errs.len());
    for line in shown.lines() {
        assert!(
            line.starts_with(&format!("{}: ", c.path.display())),
            "{line}"
        );
    }
}

#[test]
fn disabled_devices_are_validated_but_left_out() {
    let text = format!(
        "{BASE}\n[[device]]\nid = \"p1/e1/w1/l1/cnc-02\"\ntemplate = \"cnc-modbus-generic\"\nbus = \"gw\"\nunit = 2\nenabled = false\n"
    );
    let c = write(&text);
    let cfg = config::load(&c.path).unwrap();
    assert_eq!(cfg.devices.len(), 1);
    assert_error(
        &text.replace("unit = 2", "unit = 999"),
        "device[1].unit",
        "0..=247",
    );
}

#[test]
fn site_templates_load_and_are_checked() {
    let c = write(&base_with(
        "data_dir = \"data\"",
        "data_dir = \"data\"\ntemplates_dir = \"templates\"",
    ));
    let tdir = c.dir.path().join("templates");
    std::fs::create_dir(&tdir).unwrap();
    let tpl = |id: &str| {
        format!(
            "id = \"{id}\"\nname = \"Press\"\nname_zh = \"压力机\"\nkind = \"press\"\ncontrol = \"plc\"\nprotocol = \"modbus\"\n[[point]]\nname = \"strokes\"\ntable = \"holding\"\naddress = 0\ntype = \"u32\"\n[counters]\nproduced = \"strokes\"\n"
        )
    };
    std::fs::write(tdir.join("press-plc.toml"), tpl("press-plc")).unwrap();
    let text = std::fs::read_to_string(&c.path).unwrap()
        + "\n[[device]]\nid = \"p1/e1/w1/l1/press-01\"\ntemplate = \"press-plc\"\nbus = \"gw\"\nunit = 3\n";
    std::fs::write(&c.path, &text).unwrap();
    let cfg = config::load(&c.path).unwrap();
    assert_eq!(cfg.devices[1].kind, "press");
    assert_eq!(cfg.devices[1].control.as_deref(), Some("plc"));

    // A file with a built-in id, and one whose id is not its file name.
    std::fs::write(tdir.join("eastron-sdm630.toml"), tpl("eastron-sdm630")).unwrap();
    std::fs::write(tdir.join("other.toml"), tpl("different")).unwrap();
    let errs = errors_of(&c.path);
    let builtin = errs
        .iter()
        .find(|e| e.file == tdir.join("eastron-sdm630.toml"))
        .unwrap();
    assert_eq!(builtin.path, "id");
    assert!(builtin.reason.contains("built-in template id"), "{builtin}");
    let other = errs
        .iter()
        .find(|e| e.file == tdir.join("other.toml"))
        .unwrap();
    assert_eq!(other.path, "id");
    assert!(other.reason.contains("file name"), "{other}");

    // An unknown key in a site template is located in that file.
    std::fs::remove_file(tdir.join("eastron-sdm630.toml")).unwrap();
    std::fs::remove_file(tdir.join("other.toml")).unwrap();
    std::fs::write(
        tdir.join("press-plc.toml"),
        tpl("press-plc").replace("type = \"u32\"", "type = \"u32\"\nscal = 2"),
    )
    .unwrap();
    let errs = errors_of(&c.path);
    assert!(
        errs.iter().any(|e| e.file == tdir.join("press-plc.toml")
            && e.path == "point[0].scal"
            && e.reason.contains("unknown key `scal`")),
        "{errs:?}"
    );
    assert!(
        errs.iter()
            .any(|e| e.path == "device[1].template" && e.reason.contains("has errors")),
        "{errs:?}"
    );
}

#[test]
fn meter_paths_may_sit_below_a_machine_and_have_no_control() {
    let meter = "\n[[device]]\nid = \"p1/e1/w1/l1/cnc-01/meter\"\ntemplate = \"eastron-sdm630\"\nbus = \"rs485\"\nunit = 11\n";
    let c = write(&format!("{BASE}{meter}"));
    let cfg = config::load(&c.path).unwrap();
    assert_eq!(cfg.devices[1].carrier.as_deref(), Some("electricity"));
    assert!(cfg.devices[1].control.is_none());
    assert_error(
        &format!("{BASE}{meter}control = \"plc\"\n"),
        "device[1].control",
        "a meter has no control type",
    );
}

// ---- data_dir_of and the `check` command

#[test]
fn data_dir_of_resolves_against_the_config_dir() {
    let c = write(&base_with("unit = 1", "unit = 999")); // invalid elsewhere: still fine
    assert_eq!(
        config::data_dir_of(&c.path).unwrap(),
        c.dir.path().join("data")
    );
    let c = write(&base_with("data_dir = \"data\"\n", ""));
    let e = config::data_dir_of(&c.path).unwrap_err();
    assert!(e.contains("agent.data_dir: missing required key"), "{e}");
    let e = config::data_dir_of(&c.dir.path().join("nope.toml")).unwrap_err();
    assert!(e.contains("cannot read"), "{e}");
}

fn check(path: &Path) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_shopfloor-agent"))
        .args(["check", "--config"])
        .arg(path)
        .output()
        .unwrap()
}

#[test]
fn check_command_exit_codes() {
    let ok = check(&example_path());
    assert_eq!(
        ok.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&ok.stdout).trim(), "ok");

    let c = write(&base_with("unit = 1", "unit = 300").replace("fsync", "x"));
    let bad = check(&c.path);
    assert_eq!(bad.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert!(
        stderr.contains(&format!(
            "{}: device[0].unit: must be 0..=247 (got 300)",
            c.path.display()
        )),
        "{stderr}"
    );
    assert!(bad.stdout.is_empty());

    let missing = check(&c.dir.path().join("missing.toml"));
    assert_eq!(missing.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&missing.stderr);
    assert!(
        stderr.contains("missing.toml: cannot read the configuration"),
        "{stderr}"
    );
}

// ---- parse_str (the fuzz target's entry point)

#[test]
fn parse_str_is_load_without_reading_the_file() {
    let example = example_path();
    let text = std::fs::read_to_string(&example).unwrap();
    let loaded = config::load(&example).unwrap();
    let parsed = config::parse_str(&example, &text).unwrap();
    assert_eq!(format!("{parsed:?}"), format!("{loaded:?}"));

    let broken = base_with("unit = 1", "unit = 300");
    let c = write(&broken);
    let from_text = config::parse_str(&c.path, &broken).unwrap_err();
    assert_eq!(from_text, config::load(&c.path).unwrap_err());
    assert_eq!(from_text[0].path, "device[0].unit");
    // The path is not read: text given for a file that does not exist.
    let nowhere = c.dir.path().join("missing.toml");
    let from_text = config::parse_str(&nowhere, &broken).unwrap_err();
    assert_eq!(from_text[0].file, nowhere);
    assert_eq!(from_text[0].path, "device[0].unit");
}
