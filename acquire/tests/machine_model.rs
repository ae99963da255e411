#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Signals to machine model, end to end: a simulated CNC runs a scripted program (producing,
//! alarm, short stop, setup, long stop) behind a real Modbus TCP server; the poller reads the
//! generic CNC template; the template's state and counter rules turn the samples into ISO
//! 22400 state intervals and part counters that the indicator engine accepts.

use std::sync::Arc;
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use shopfloor_acquire::modbus::{BusConfig, DeviceConfig, Transport, run_bus};
use shopfloor_core::counter::Deltas;
use shopfloor_core::evidence::State;
use shopfloor_devices::Overrides;
use shopfloor_devices::signals::{CounterTracker, StateTracker};
use shopfloor_sim::{Plant, Scenario, StartOptions};
use tokio::sync::{mpsc, watch};

/// Simulated seconds per real second.
const SCALE: f64 = 300.0;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scripted_cnc_becomes_state_intervals_and_part_counts() {
    // 120 s producing (12 parts, every 5th scrap), 30 s alarm, 60 s stop (< 120 s: a
    // micro-stop, delay), 60 s setup, 240 s stop (idle), then producing again.
    // The counter starts 5 below 2^32, so it wraps during the first phase.
    let text = format!(
        "name = \"t\"\ntime_scale = {SCALE}\ntick_ms = 10\n[[modbus_tcp]]\nname = \"gw\"\nlisten = \"127.0.0.1:0\"\n\
         [[device]]\nname = \"cnc\"\ntemplate = \"cnc-modbus-generic\"\nserver = \"gw\"\n\
         [device.machine]\ncycle_s = 10\nscrap_every = 5\ncounter_start = {}\nphases = [\n\
           {{ state = \"producing\", for_s = 120 }}, {{ state = \"alarm\", for_s = 30, alarm_code = 17 }},\n\
           {{ state = \"stopped\", for_s = 60 }}, {{ state = \"setup\", for_s = 60 }},\n\
           {{ state = \"stopped\", for_s = 240 }}, {{ state = \"producing\", for_s = 600 }} ]\n",
        (1u64 << 32) - 5
    );
    let loaded = Scenario::from_str(&text, "t.toml", std::path::Path::new(".")).unwrap();
    let template = loaded.templates[0].clone();
    let plant = Plant::start(loaded, StartOptions::default()).await.unwrap();
    let (tx, mut rx) = mpsc::channel(100_000);
    let (stop, stop_rx) = watch::channel(false);
    let bus = BusConfig::new(
        "gw",
        Transport::Tcp {
            addr: plant.tcp_addr("gw").unwrap(),
        },
    );
    let dev = DeviceConfig {
        id: Arc::from("p1/e1/w1/l1/cnc"),
        unit: 1,
        poll: Duration::from_millis(10),
        device: Arc::new(template.resolve_modbus(&Overrides::default()).unwrap()),
    };
    let t0_real = Timestamp::now();
    let task = tokio::spawn(run_bus(bus, vec![dev], tx, stop_rx));

    let mut states = StateTracker::new(template.states.clone().unwrap()).unwrap();
    let mut counters = CounterTracker::new(template.counters.clone().unwrap()).unwrap();
    // Samples carry real receive times; map them onto the simulated clock so the template's
    // 120 s micro-stop threshold applies unchanged.
    let sim_t0 = Timestamp::from_second(1_790_000_000).unwrap();
    let to_sim = |t: Timestamp| {
        let real = t.duration_since(t0_real).as_secs_f64();
        sim_t0 + SignedDuration::from_secs_f64(real * SCALE)
    };
    let end = tokio::time::Instant::now() + Duration::from_secs_f64(560.0 / SCALE);
    while let Ok(Some(e)) = tokio::time::timeout_at(end, rx.recv()).await {
        for s in e.samples() {
            let Ok(v) = &s.value else { continue };
            let at = to_sim(s.received);
            if states.rules().signals.values().any(|p| **p == *s.point) {
                states.update(at, &s.point, v).unwrap();
            }
            if [Some("part_count"), Some("good_count"), Some("scrap_count")]
                .contains(&Some(&*s.point))
            {
                counters.update(at, &s.point, v).unwrap();
            }
        }
    }
    let _ = stop.send(true);
    task.await.unwrap();
    plant.stop().await;

    let intervals = states.drain_closed();
    let seq: Vec<State> = intervals.iter().map(|i| i.state).collect();
    assert_eq!(
        seq,
        vec![State::Producing, State::Delay, State::Setup, State::Idle],
        "{intervals:#?}"
    );
    let secs = |i: usize| {
        intervals[i]
            .to
            .duration_since(intervals[i].from)
            .as_secs_f64()
    };
    // Polling every 10 ms real is 3 s simulated; allow for scheduling jitter on a busy box.
    for (i, expect) in [(1, 90.0), (2, 60.0), (3, 240.0)] {
        assert!(
            (secs(i) - expect).abs() <= 15.0,
            "{:?} lasted {:.1} s, expected {expect}",
            intervals[i].state,
            secs(i)
        );
    }

    let parts = counters.drain();
    let produced = parts.produced.unwrap();
    let deltas = Deltas::new(produced.register());
    let first = produced.readings.first().unwrap().at;
    let last = produced.readings.last().unwrap().at;
    let got = deltas.attributed(first, last).value.unwrap();
    // Parts made between the first and last reading, from the script itself.
    let sim_secs = |t: Timestamp| t.duration_since(sim_t0).as_secs_f64();
    let m = plant_machine();
    let expect = shopfloor_sim::plant::machine_at(&m, sim_secs(last)).parts
        - shopfloor_sim::plant::machine_at(&m, sim_secs(first)).parts;
    assert!(
        (got - expect as f64).abs() <= 1.0,
        "produced {got} across the 2^32 wrap, script says {expect}"
    );
    assert!(
        got >= 11.0,
        "the first producing phase alone makes 12 parts: {got}"
    );
    let good = parts.good.unwrap();
    assert!(
        good.readings.last().unwrap().value < 100.0,
        "good counter wrapped too"
    );
}

fn plant_machine() -> shopfloor_sim::scenario::MachineScript {
    use shopfloor_devices::signals::RawState;
    use shopfloor_sim::scenario::{MachineScript, Phase};
    let p = |state, for_s| Phase {
        state,
        for_s,
        alarm_code: None,
    };
    MachineScript {
        cycle_s: 10.0,
        scrap_every: 5,
        counter_start: 0,
        phases: vec![
            p(RawState::Producing, 120.0),
            p(RawState::Alarm, 30.0),
            p(RawState::Stopped, 60.0),
            p(RawState::Setup, 60.0),
            p(RawState::Stopped, 240.0),
            p(RawState::Producing, 600.0),
        ],
    }
}
