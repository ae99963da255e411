#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Modbus acquisition against the real tokio-modbus servers of `shopfloor-sim` (TCP on
//! loopback, RTU on a pseudo-terminal pair): never against a mock of our own client.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use shopfloor_acquire::modbus::{BusConfig, DeviceConfig, SerialSettings, Transport, run_bus};
use shopfloor_acquire::{Event, LinkState, Outcome};
use shopfloor_devices::plan::{self, Learned};
use shopfloor_devices::{Overrides, Template, Value};
use shopfloor_sim::{Fault, Plant, Scenario, StartOptions};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

const ORDERS: [&str; 4] = ["ABCD", "CDAB", "BADC", "DCBA"];
const TYPES: [&str; 8] = ["u16", "i16", "u32", "i32", "u64", "i64", "f32", "f64"];

/// A template with every type in every byte order, bits in a register, strings in all four
/// layouts, coils and discrete inputs. Points are 2 registers apart beyond their size, so the
/// planner has holes to read through.
fn all_types_template() -> String {
    let mut t = String::from(
        "id = \"all-types\"\nname = \"All types\"\nname_zh = \"全部类型\"\nkind = \"test\"\nprotocol = \"modbus\"\n[modbus]\nmax_gap = 4\n",
    );
    let mut addr = 0u32;
    for ty in TYPES {
        for o in ORDERS {
            t += &format!(
                "[[point]]\nname = \"{ty}_{o}\"\ntable = \"holding\"\naddress = {addr}\ntype = \"{ty}\"\norder = \"{o}\"\n"
            );
            addr += match ty {
                "u16" | "i16" => 1,
                "u32" | "i32" | "f32" => 2,
                _ => 4,
            } + 2;
        }
    }
    for bit in [0, 7, 15] {
        t += &format!(
            "[[point]]\nname = \"bit{bit}\"\ntable = \"input\"\naddress = 10\ntype = \"bool\"\nbit = {bit}\n"
        );
    }
    for (i, layout) in ["high_low", "low_high", "high", "low"].iter().enumerate() {
        t += &format!(
            "[[point]]\nname = \"str_{layout}\"\ntable = \"input\"\naddress = {}\ntype = \"string\"\nlength = 8\nstring_layout = \"{layout}\"\n",
            100 + i * 10
        );
    }
    t += "[[point]]\nname = \"coil3\"\ntable = \"coil\"\naddress = 3\n[[point]]\nname = \"di9\"\ntable = \"discrete\"\naddress = 9\n";
    t += "[[point]]\nname = \"scaled\"\ntable = \"input\"\naddress = 200\ntype = \"u32\"\nscale = 0.01\noffset = -5\nunit = \"kWh\"\n";
    t
}

fn all_types_values() -> BTreeMap<String, Value> {
    let mut v = BTreeMap::new();
    for o in ORDERS {
        v.insert(format!("u16_{o}"), Value::UInt(0xBEEF));
        v.insert(format!("i16_{o}"), Value::Int(-12_345));
        v.insert(format!("u32_{o}"), Value::UInt(0xDEAD_BEEF));
        v.insert(format!("i32_{o}"), Value::Int(-1_234_567_890));
        v.insert(format!("u64_{o}"), Value::UInt(u64::MAX - 5));
        v.insert(format!("i64_{o}"), Value::Int(-9_000_000_000_000_000_007));
        v.insert(format!("f32_{o}"), Value::Float(-1234.5));
        v.insert(format!("f64_{o}"), Value::Float(1.0e300 / 3.0));
    }
    v.insert("bit0".into(), Value::Bool(true));
    v.insert("bit7".into(), Value::Bool(false));
    v.insert("bit15".into(), Value::Bool(true));
    for l in ["high_low", "low_high"] {
        v.insert(format!("str_{l}"), Value::Text("SF-CNC-0001".into()));
    }
    for l in ["high", "low"] {
        v.insert(format!("str_{l}"), Value::Text("SN42".into()));
    }
    v.insert("coil3".into(), Value::Bool(true));
    v.insert("di9".into(), Value::Bool(true));
    // Raw register 123456 → 1234.56 − 5.
    v.insert("scaled".into(), Value::Float(1229.56));
    v
}

/// One all-types device behind a Modbus TCP server `gw`; holes read as zero.
const ONE_TCP_DEVICE: &str = "name = \"t\"\n[[modbus_tcp]]\nname = \"gw\"\nlisten = \"127.0.0.1:0\"\n\
    [[device]]\nname = \"dev\"\ntemplate = \"all-types\"\nserver = \"gw\"\nholes = \"zero\"\n";

async fn start(dir: &Path, scenario: &str) -> Plant {
    std::fs::write(dir.join("all-types.toml"), all_types_template()).unwrap();
    let text = format!("templates = [\"all-types.toml\"]\n{scenario}");
    let loaded = Scenario::from_str(&text, "test.toml", dir).unwrap();
    Plant::start(loaded, StartOptions::default()).await.unwrap()
}

fn template(plant: &Plant, device: &str) -> Template {
    plant
        .devices
        .iter()
        .find(|d| d.spec.name == device)
        .unwrap()
        .template
        .clone()
}

fn device(plant: &Plant, name: &str, unit: u8, poll_ms: u64) -> DeviceConfig {
    DeviceConfig {
        id: Arc::from(name),
        unit,
        poll: Duration::from_millis(poll_ms),
        device: Arc::new(
            template(plant, name)
                .resolve_modbus(&Overrides::default())
                .unwrap(),
        ),
    }
}

struct Bus {
    rx: mpsc::Receiver<Event>,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

fn spawn_bus(bus: BusConfig, devices: Vec<DeviceConfig>) -> Bus {
    let (tx, rx) = mpsc::channel(100_000);
    let (stop, stop_rx) = watch::channel(false);
    let task = tokio::spawn(run_bus(bus, devices, tx, stop_rx));
    Bus { rx, stop, task }
}

impl Bus {
    /// Events until `d` has passed.
    async fn collect(&mut self, d: Duration) -> Vec<(Instant, Event)> {
        let end = Instant::now() + d;
        let mut out = Vec::new();
        while let Ok(Some(e)) = tokio::time::timeout_at(end, self.rx.recv()).await {
            out.push((Instant::now(), e));
        }
        out
    }

    async fn shutdown(self) {
        let _ = self.finish().await;
    }

    /// Stops the poller and returns the events it sent after the last `collect`.
    async fn finish(mut self) -> Vec<(Instant, Event)> {
        let _ = self.stop.send(true);
        tokio::time::timeout(Duration::from_secs(5), self.task)
            .await
            .unwrap()
            .unwrap();
        let mut rest = Vec::new();
        while let Ok(e) = self.rx.try_recv() {
            rest.push((Instant::now(), e));
        }
        rest
    }
}

fn tcp_bus(addr: std::net::SocketAddr, timeout_ms: u64) -> BusConfig {
    let mut b = BusConfig::new("test", Transport::Tcp { addr });
    b.timeout = Duration::from_millis(timeout_ms);
    b.backoff_initial = Duration::from_millis(200);
    b.backoff_max = Duration::from_secs(1);
    b
}

/// Last value of every point of `device`.
fn last_values(
    events: &[(Instant, Event)],
    device: &str,
) -> HashMap<String, Result<Value, String>> {
    let mut m = HashMap::new();
    for (_, e) in events {
        for s in e.samples().iter().filter(|s| &*s.device == device) {
            m.insert(s.point.to_string(), s.value.clone());
        }
    }
    m
}

/// The good values of one point, in order.
fn ok_values<'a>(events: &'a [(Instant, Event)], point: &str) -> Vec<&'a Value> {
    events
        .iter()
        .flat_map(|(_, e)| e.samples())
        .filter(|s| &*s.point == point)
        .filter_map(|s| s.value.as_ref().ok())
        .collect()
}

fn requests(events: &[(Instant, Event)], device: &str, outcome: Outcome) -> usize {
    events
        .iter()
        .filter(|(_, e)| matches!(e, Event::Request { device: d, outcome: o, .. } if &**d == device && *o == outcome))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_type_and_byte_order_over_tcp() {
    let dir = tempfile::tempdir().unwrap();
    let plant = start(dir.path(), ONE_TCP_DEVICE).await;
    let expected = all_types_values();
    let sig = plant.signals("dev").unwrap();
    for (k, v) in &expected {
        sig.set(k, v.clone());
    }
    let mut bus = spawn_bus(
        tcp_bus(plant.tcp_addr("gw").unwrap(), 500),
        vec![device(&plant, "dev", 1, 100)],
    );
    let events = bus.collect(Duration::from_millis(350)).await;
    bus.shutdown().await;
    let got = last_values(&events, "dev");
    assert_eq!(got.len(), expected.len(), "every point delivered: {got:?}");
    for (k, v) in &expected {
        let g = got[k].clone().unwrap_or_else(|e| panic!("{k}: {e}"));
        match (v, &g) {
            (Value::Float(a), Value::Float(b)) => {
                assert!((a - b).abs() <= a.abs() * 1e-12, "{k}: {a} vs {b}")
            }
            _ => assert_eq!(&g, v, "{k}"),
        }
    }
    plant.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn coalescing_puts_the_planned_number_of_requests_on_the_wire() {
    let dir = tempfile::tempdir().unwrap();
    let plant = start(dir.path(), ONE_TCP_DEVICE).await;
    let cfg = device(&plant, "dev", 1, 50);
    let planned = plan::plan(&cfg.device.points, &cfg.device.limits, &Learned::default());
    let naive = plan::plan_per_point(&cfg.device.points).len();
    // 32 typed points (max_gap 4: holes of 2 are read through) span 142 holding registers:
    // two requests (124 + 16, never more than 125). Bits, strings and the scaled counter are
    // three input requests (gaps of 90 and 62 are beyond max_gap), plus 1 coil and 1 discrete.
    assert_eq!(planned.len(), 7, "{planned:?}");
    assert!(planned.iter().all(|r| r.count <= 125));
    assert_eq!(naive, 42);
    let sig = plant.signals("dev").unwrap();
    let before = sig.requests();
    let mut bus = spawn_bus(tcp_bus(plant.tcp_addr("gw").unwrap(), 500), vec![cfg]);
    let mut events = bus.collect(Duration::from_millis(500)).await;
    // Requests of the cycle running at shutdown are reported after the window: count them too.
    events.extend(bus.finish().await);
    let on_wire = sig.requests() - before;
    let ok = requests(&events, "dev", Outcome::Ok) as u64;
    assert_eq!(
        on_wire, ok,
        "the server saw exactly the requests the poller made"
    );
    assert!(ok >= 7 * 5, "at least 5 cycles in 500 ms at 50 ms: {ok}");
    assert_eq!(ok % 7, 0, "whole cycles of 7 requests: {ok}");
    plant.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn illegal_address_splits_the_request_and_is_remembered() {
    let dir = tempfile::tempdir().unwrap();
    // Points at 0..=1 and 3..=4 (u16 pairs): the coalesced read 0..=4 hits hole 2.
    std::fs::write(
        dir.path().join("holey.toml"),
        "id = \"holey\"\nname = \"h\"\nname_zh = \"h\"\nkind = \"test\"\nprotocol = \"modbus\"\n\
         [[point]]\nname = \"a\"\ntable = \"holding\"\naddress = 0\n[[point]]\nname = \"b\"\ntable = \"holding\"\naddress = 1\n\
         [[point]]\nname = \"c\"\ntable = \"holding\"\naddress = 3\n[[point]]\nname = \"d\"\ntable = \"holding\"\naddress = 4\n",
    )
    .unwrap();
    let text = "templates = [\"holey.toml\"]\nname = \"t\"\n[[modbus_tcp]]\nname = \"gw\"\nlisten = \"127.0.0.1:0\"\n\
                [[device]]\nname = \"dev\"\ntemplate = \"holey\"\nserver = \"gw\"\n";
    let plant = Plant::start(
        Scenario::from_str(text, "t.toml", dir.path()).unwrap(),
        StartOptions::default(),
    )
    .await
    .unwrap();
    // The agent's config adds a point at register 9, which the device does not have.
    let ghost: Overrides =
        toml::from_str("[[point]]\nname = \"ghost\"\ntable = \"holding\"\naddress = 9\n").unwrap();
    let dev_points = template(&plant, "dev").resolve_modbus(&ghost).unwrap();
    let sig = plant.signals("dev").unwrap();
    for (k, v) in [("a", 1u64), ("b", 2), ("c", 3), ("d", 4)] {
        sig.set(k, Value::UInt(v));
    }
    let cfg = DeviceConfig {
        id: Arc::from("dev"),
        unit: 1,
        poll: Duration::from_millis(40),
        device: Arc::new(dev_points),
    };
    let mut bus = spawn_bus(tcp_bus(plant.tcp_addr("gw").unwrap(), 500), vec![cfg]);
    let events = bus.collect(Duration::from_millis(800)).await;
    bus.shutdown().await;
    let got = last_values(&events, "dev");
    for (k, v) in [("a", 1u64), ("b", 2), ("c", 3), ("d", 4)] {
        assert_eq!(got[k], Ok(Value::UInt(v)), "{k}");
    }
    let ghost = got["ghost"].clone().unwrap_err();
    assert!(ghost.contains("illegal data address"), "{ghost}");
    // Bisection: 0..=9 → 0..=1 | 3..=9 → 3 | 4..=9 → 4 | 9 → 9 unreadable: four exceptions,
    // then none; the ghost is not asked again.
    let exceptions = requests(&events, "dev", Outcome::Exception);
    assert!(
        exceptions <= 4,
        "learning takes a few cycles, then no more exceptions: {exceptions}"
    );
    let tail: Vec<_> = events
        .iter()
        .rev()
        .take(40)
        .filter(|(_, e)| matches!(e, Event::Request { .. }))
        .collect();
    assert!(
        tail.iter().all(|(_, e)| matches!(
            e,
            Event::Request {
                outcome: Outcome::Ok,
                ..
            }
        )),
        "steady state has no exceptions"
    );
    plant.stop().await;
}

/// Polls per second of a device in [from, to): its successful requests divided by its
/// requests per cycle.
fn rate(
    events: &[(Instant, Event)],
    device: &str,
    from: Instant,
    to: Instant,
    per_cycle: usize,
) -> f64 {
    let n = events
        .iter()
        .filter(|(t, e)| *t >= from && *t < to && matches!(e, Event::Request { device: d, outcome: Outcome::Ok, .. } if &**d == device))
        .count();
    n as f64 / per_cycle as f64 / to.duration_since(from).as_secs_f64()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_unit_behind_a_gateway_leaves_the_others_on_schedule() {
    let dir = tempfile::tempdir().unwrap();
    let plant = start(
        dir.path(),
        "name = \"t\"\n[[modbus_tcp]]\nname = \"gw\"\nlisten = \"127.0.0.1:0\"\n\
         [[device]]\nname = \"a\"\ntemplate = \"all-types\"\nserver = \"gw\"\nunit = 1\nholes = \"zero\"\n\
         [[device]]\nname = \"b\"\ntemplate = \"all-types\"\nserver = \"gw\"\nunit = 2\nholes = \"zero\"\n\
         [[device]]\nname = \"dead\"\ntemplate = \"all-types\"\nserver = \"gw\"\nunit = 3\nholes = \"zero\"\n",
    )
    .await;
    plant.signals("dead").unwrap().set_fault(Fault::Silent);
    let poll = 100;
    let devices = vec![
        device(&plant, "a", 1, poll),
        device(&plant, "b", 2, poll),
        device(&plant, "dead", 3, poll),
    ];
    let per_cycle = plan::plan(
        &devices[0].device.points,
        &devices[0].device.limits,
        &Learned::default(),
    )
    .len();
    let mut bus = spawn_bus(tcp_bus(plant.tcp_addr("gw").unwrap(), 250), devices);
    let t0 = Instant::now();
    let events = bus.collect(Duration::from_millis(4300)).await;
    bus.shutdown().await;
    let (from, to) = (
        t0 + Duration::from_millis(300),
        t0 + Duration::from_millis(4300),
    );
    let nominal = 1000.0 / poll as f64;
    for d in ["a", "b"] {
        let r = rate(&events, d, from, to, per_cycle);
        assert!(
            (r - nominal).abs() <= nominal * 0.10,
            "{d}: {r:.2} polls/s vs nominal {nominal}"
        );
    }
    assert!(events.iter().any(|(_, e)| matches!(e, Event::Link { device, state: LinkState::Down, .. } if &**device == "dead")));
    let timeouts = requests(&events, "dead", Outcome::Timeout);
    assert!(
        (2..=12).contains(&timeouts),
        "the dead unit is probed on a backoff, not every cycle: {timeouts}"
    );
    plant.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_reply_after_a_timeout_never_poisons_later_reads() {
    let dir = tempfile::tempdir().unwrap();
    let plant = start(dir.path(), ONE_TCP_DEVICE).await;
    let sig = plant.signals("dev").unwrap();
    sig.set("u16_ABCD", Value::UInt(1111));
    sig.set_response_delay_ms(300);
    let mut bus = spawn_bus(
        tcp_bus(plant.tcp_addr("gw").unwrap(), 100),
        vec![device(&plant, "dev", 1, 50)],
    );
    let slow = bus.collect(Duration::from_millis(350)).await;
    assert!(requests(&slow, "dev", Outcome::Timeout) >= 1);
    // The late replies carrying 1111 are still on their way when the value changes.
    sig.set("u16_ABCD", Value::UInt(2222));
    sig.set_response_delay_ms(0);
    let fast = bus.collect(Duration::from_millis(1500)).await;
    bus.shutdown().await;
    let samples = ok_values(&fast, "u16_ABCD");
    assert!(samples.len() >= 5, "reads resumed: {}", samples.len());
    assert!(
        samples.iter().all(|v| **v == Value::UInt(2222)),
        "no stale reply was taken as a later answer: {samples:?}"
    );
    let link_errors =
        requests(&slow, "dev", Outcome::LinkError) + requests(&fast, "dev", Outcome::LinkError);
    assert_eq!(
        link_errors, 0,
        "no late reply ever reached a later request (it would fail with mismatching headers)"
    );
    plant.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exceptions_and_garbage_are_reported_and_survived() {
    let dir = tempfile::tempdir().unwrap();
    let plant = start(dir.path(), ONE_TCP_DEVICE).await;
    let sig = plant.signals("dev").unwrap();
    sig.set("u16_ABCD", Value::UInt(7));
    let mut bus = spawn_bus(
        tcp_bus(plant.tcp_addr("gw").unwrap(), 300),
        vec![device(&plant, "dev", 1, 50)],
    );
    sig.set_fault(Fault::Exceptions);
    let exc = bus.collect(Duration::from_millis(300)).await;
    let err = last_values(&exc, "dev")["u16_ABCD"].clone().unwrap_err();
    assert!(err.contains("device exception"), "{err}");
    sig.set_fault(Fault::Garbage);
    let garbage = bus.collect(Duration::from_millis(800)).await;
    assert!(
        requests(&garbage, "dev", Outcome::LinkError) >= 1,
        "wrong-length replies are link errors"
    );
    sig.set_fault(Fault::None);
    let ok = bus.collect(Duration::from_millis(1500)).await;
    bus.shutdown().await;
    assert_eq!(
        last_values(&ok, "dev")["u16_ABCD"],
        Ok(Value::UInt(7)),
        "back to normal after the faults"
    );
    plant.stop().await;
}

#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rtu_over_a_pseudo_terminal_with_a_dead_unit_on_the_line() {
    let dir = tempfile::tempdir().unwrap();
    let plant = start(
        dir.path(),
        "name = \"t\"\n[[modbus_rtu]]\nname = \"line\"\n\
         [[device]]\nname = \"a\"\ntemplate = \"all-types\"\nserver = \"line\"\nunit = 5\nholes = \"zero\"\n\
         [[device]]\nname = \"dead\"\ntemplate = \"all-types\"\nserver = \"line\"\nunit = 6\nholes = \"zero\"\n",
    )
    .await;
    let expected = all_types_values();
    let sig = plant.signals("a").unwrap();
    for (k, v) in &expected {
        sig.set(k, v.clone());
    }
    plant.signals("dead").unwrap().set_fault(Fault::Silent);
    let mut bus_cfg = BusConfig::new(
        "line",
        Transport::Rtu(SerialSettings {
            baud: 115_200,
            ..SerialSettings::new(plant.rtu_path("line").unwrap())
        }),
    );
    bus_cfg.timeout = Duration::from_millis(250);
    bus_cfg.backoff_initial = Duration::from_millis(300);
    bus_cfg.backoff_max = Duration::from_secs(1);
    let devices = vec![device(&plant, "a", 5, 200), device(&plant, "dead", 6, 200)];
    let per_cycle = plan::plan(
        &devices[0].device.points,
        &devices[0].device.limits,
        &Learned::default(),
    )
    .len();
    let mut bus = spawn_bus(bus_cfg, devices);
    let t0 = Instant::now();
    let events = bus.collect(Duration::from_millis(3300)).await;
    bus.shutdown().await;
    let got = last_values(&events, "a");
    for (k, v) in &expected {
        match (v, got[k].as_ref().unwrap()) {
            (Value::Float(a), Value::Float(b)) => assert!((a - b).abs() <= a.abs() * 1e-12, "{k}"),
            (v, g) => assert_eq!(g, v, "{k}"),
        }
    }
    let r = rate(
        &events,
        "a",
        t0 + Duration::from_millis(300),
        t0 + Duration::from_millis(3300),
        per_cycle,
    );
    assert!(
        (r - 5.0).abs() <= 0.5,
        "unit 5 keeps 5 polls/s beside a dead unit 6: {r:.2}"
    );
    assert!(requests(&events, "dead", Outcome::Timeout) >= 1);
    plant.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probe_decodes_what_the_engineer_asks_for() {
    use shopfloor_acquire::modbus::probe::{ProbeRequest, probe};
    use shopfloor_devices::{DataType, Order, Table};
    let dir = tempfile::tempdir().unwrap();
    let plant = start(dir.path(), ONE_TCP_DEVICE).await;
    let sig = plant.signals("dev").unwrap();
    sig.set("f32_CDAB", Value::Float(42.5));
    // f32_CDAB is the 14th point: 4×(1+2) + 4×(1+2) + 4×(2+2)... compute from the template.
    let cfg = device(&plant, "dev", 1, 100);
    let p = cfg
        .device
        .points
        .iter()
        .find(|p| p.name == "f32_CDAB")
        .unwrap();
    let req = ProbeRequest {
        transport: Transport::Tcp {
            addr: plant.tcp_addr("gw").unwrap(),
        },
        unit: 1,
        table: Table::Holding,
        address: p.layout.address,
        count: 1,
        data_type: DataType::F32,
        order: Order::CDAB,
        timeout: Duration::from_secs(1),
    };
    let values = probe(&req).await.unwrap();
    assert_eq!(values.len(), 1);
    assert_eq!(values[0].value, Ok(Value::Float(42.5)));
    assert_eq!(values[0].raw, "0000 422A");
    plant.stop().await;
}

#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_reply_on_a_serial_line_is_drained_not_taken_for_the_next_answer() {
    let dir = tempfile::tempdir().unwrap();
    let plant = start(
        dir.path(),
        "name = \"t\"\n[[modbus_rtu]]\nname = \"line\"\n[[device]]\nname = \"dev\"\ntemplate = \"all-types\"\nserver = \"line\"\nunit = 7\nholes = \"zero\"\n",
    )
    .await;
    let sig = plant.signals("dev").unwrap();
    sig.set("u16_ABCD", Value::UInt(1111));
    sig.set_response_delay_ms(250);
    let mut cfg = BusConfig::new(
        "line",
        Transport::Rtu(SerialSettings {
            baud: 115_200,
            ..SerialSettings::new(plant.rtu_path("line").unwrap())
        }),
    );
    cfg.timeout = Duration::from_millis(100);
    cfg.backoff_initial = Duration::from_millis(50);
    cfg.backoff_max = Duration::from_millis(100);
    // One point only, so that every request is the same function, unit and length: a late
    // reply would be indistinguishable from the answer to the next request.
    let mut d = device(&plant, "dev", 7, 50);
    Arc::make_mut(&mut d.device)
        .points
        .retain(|p| p.name == "u16_ABCD");
    let mut bus = spawn_bus(cfg, vec![d]);
    let slow = bus.collect(Duration::from_millis(200)).await;
    assert!(requests(&slow, "dev", Outcome::Timeout) >= 1);
    sig.set("u16_ABCD", Value::UInt(2222));
    sig.set_response_delay_ms(0);
    let fast = bus.collect(Duration::from_millis(1500)).await;
    bus.shutdown().await;
    let values = ok_values(&fast, "u16_ABCD");
    assert!(values.len() >= 5, "reads resumed: {values:?}");
    assert!(
        values.iter().all(|v| **v == Value::UInt(2222)),
        "a stale reply was taken as an answer: {values:?}"
    );
    plant.stop().await;
}
