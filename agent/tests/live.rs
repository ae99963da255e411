#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Live indicators at the agent: hand-computed expectations for windows built from what the
//! pipeline records and computed by the shared engine.

use std::time::Duration;

use jiff::Timestamp;
use jiff::civil::time;
use jiff::tz::TimeZone;
use shopfloor_agent::live::{
    Live, LiveEquipment, LiveIndicator, LiveMeter, LiveProduct, LiveSetup, LiveShift, LiveWindow,
};
use shopfloor_core::batch::{Reading, StateSpan};
use shopfloor_core::evidence::State;

const CNC: &str = "p1/e1/w1/l1/cnc-01";
const SAW: &str = "p1/e1/w1/l1/saw-01";
const CNC_METER: &str = "p1/e1/w1/l1/cnc-01/main";
const WATER: &str = "p1/e1/w1/water-01";
const WORKSHOP: &str = "p1/e1/w1";

fn ms(s: &str) -> i64 {
    s.parse::<Timestamp>().unwrap().as_millisecond()
}

fn span(from: &str, to: &str, state: State) -> StateSpan {
    StateSpan {
        from: ms(from),
        to: ms(to),
        state,
    }
}

fn r(t: &str, v: f64) -> Reading {
    Reading { t: ms(t), v }
}

fn cnc() -> LiveEquipment {
    LiveEquipment {
        id: CNC.into(),
        kind: "cnc".into(),
        control: Some("cnc".into()),
        key_process: Some("machining".into()),
        networked: true,
        product: Some(LiveProduct {
            id: "shaft-a".into(),
            ideal_cycle_s: 10.0,
            value_added_per_unit_cny: Some(12.5),
        }),
    }
}

fn saw() -> LiveEquipment {
    LiveEquipment {
        id: SAW.into(),
        kind: "saw".into(),
        control: Some("manual".into()),
        key_process: None,
        networked: false,
        product: None,
    }
}

fn setup() -> LiveSetup {
    LiveSetup {
        workshop: WORKSHOP.into(),
        time_zone: TimeZone::get("Asia/Shanghai").unwrap(),
        equipment: vec![saw(), cnc()],
        meters: vec![
            LiveMeter {
                id: CNC_METER.into(),
                carrier: "electricity".into(),
                unit: "kWh".into(),
            },
            LiveMeter {
                id: WATER.into(),
                carrier: "water".into(),
                unit: "m3".into(),
            },
        ],
        rolling: vec![Duration::from_secs(3600)],
        shifts: vec![],
    }
}

fn window<'a>(ws: &'a [LiveWindow], name: &str) -> &'a LiveWindow {
    ws.iter()
        .find(|w| w.name == name)
        .unwrap_or_else(|| panic!("no window {name}"))
}

fn ind<'a>(w: &'a LiveWindow, entity: &str, id: &str) -> &'a LiveIndicator {
    let e = w
        .entities
        .iter()
        .find(|e| e.entity == entity)
        .unwrap_or_else(|| panic!("no entity {entity} in {}", w.name));
    e.indicators
        .iter()
        .find(|i| i.id == id)
        .unwrap_or_else(|| panic!("no indicator {id} for {entity} in {}", w.name))
}

fn val(w: &LiveWindow, entity: &str, id: &str) -> f64 {
    ind(w, entity, id)
        .value
        .unwrap_or_else(|| panic!("{id} of {entity} is null"))
}

fn close(a: f64, b: f64) {
    assert!((a - b).abs() <= 1e-9 * b.abs().max(1.0), "{a} != {b}");
}

/// The CNC produces 09:00–09:45 and is in alarm 09:45–10:00 (the open interval), makes 250
/// parts of which 240 good; its own meter counts 100 kWh; the workshop's water meter 2.5 m³.
fn one_hour(live: &mut Live) {
    live.record_states(
        CNC,
        &[
            span(
                "2026-10-01T08:30:00+08:00",
                "2026-10-01T09:00:00+08:00",
                State::Idle,
            ),
            span(
                "2026-10-01T09:00:00+08:00",
                "2026-10-01T09:45:00+08:00",
                State::Producing,
            ),
        ],
    );
    live.set_open_state(
        CNC,
        Some(span(
            "2026-10-01T09:45:00+08:00",
            "2026-10-01T10:00:00+08:00",
            State::Delay,
        )),
    );
    // The last reading before 09:00 is the base; the earlier one is not in the window at all.
    for (t, p, g) in [
        ("2026-10-01T08:30:00+08:00", 950.0, 860.0),
        ("2026-10-01T08:59:00+08:00", 1000.0, 900.0),
        ("2026-10-01T09:30:00+08:00", 1125.0, 1020.0),
        ("2026-10-01T10:00:00+08:00", 1250.0, 1140.0),
    ] {
        live.record_counter(CNC, "produced", r(t, p), Some(32));
        live.record_counter(CNC, "good", r(t, g), Some(32));
        live.record_counter(CNC, "scrap", r(t, p - g), Some(32));
    }
    for (t, v) in [
        ("2026-10-01T09:00:00+08:00", 5000.0),
        ("2026-10-01T09:30:00+08:00", 5040.0),
        ("2026-10-01T10:00:00+08:00", 5100.0),
    ] {
        live.record_meter(CNC_METER, r(t, v));
    }
    live.record_meter(WATER, r("2026-10-01T09:00:00+08:00", 10.0));
    live.record_meter(WATER, r("2026-10-01T10:00:00+08:00", 12.5));
}

#[test]
fn one_hour_of_a_cnc_gives_hand_computed_oee_energy_and_value_added() {
    let mut live = Live::new(setup()).unwrap();
    one_hour(&mut live);
    let ws = live.compute(ms("2026-10-01T10:00:00+08:00"));
    assert_eq!(ws.len(), 1);
    let w = window(&ws, "rolling_60m");
    assert_eq!(w.from_ms, ms("2026-10-01T09:00:00+08:00"));
    assert_eq!(w.to_ms, ms("2026-10-01T10:00:00+08:00"));
    // The workshop first, then equipment in id order.
    let order: Vec<&str> = w.entities.iter().map(|e| e.entity.as_str()).collect();
    assert_eq!(order, vec![WORKSHOP, CNC, SAW]);

    // Equipment: availability 45/60, performance 250 × 10 s / 2700 s, quality 240/250,
    // OEE = 240 × 10 s / 3600 s = their product.
    close(val(w, CNC, "planned_busy_time_s"), 3600.0);
    close(val(w, CNC, "actual_production_time_s"), 2700.0);
    close(val(w, CNC, "availability"), 0.75);
    close(val(w, CNC, "performance"), 2500.0 / 2700.0);
    close(val(w, CNC, "quality_rate"), 0.96);
    close(val(w, CNC, "oee"), 0.75 * (2500.0 / 2700.0) * 0.96);
    close(val(w, CNC, "oee"), 2400.0 / 3600.0);
    close(val(w, CNC, "produced_qty"), 250.0);
    close(val(w, CNC, "good_qty"), 240.0);
    close(val(w, CNC, "scrap_qty"), 10.0);
    close(val(w, CNC, "defect_rate"), 0.04);
    assert_eq!(ind(w, CNC, "availability").completeness, Some(1.0));
    assert_eq!(ind(w, CNC, "produced_qty").completeness, Some(1.0));
    // Energy of its own meter: 100 kWh × 0.1229 kgce/kWh, per good part.
    close(val(w, CNC, "electricity_kwh"), 100.0);
    assert_eq!(ind(w, CNC, "electricity_kwh").unit, "kWh");
    close(val(w, CNC, "energy_kgce"), 12.29);
    close(val(w, CNC, "energy_per_unit_kgce"), 12.29 / 240.0);
    assert_eq!(ind(w, CNC, "water_m3").value, None);
    close(val(w, CNC, "value_added_cny"), 240.0 * 12.5);
    close(val(w, CNC, "networked"), 1.0);
    close(val(w, CNC, "nc_controlled"), 1.0);

    // The manual saw delivered nothing: offline all hour (availability 0 with completeness 0),
    // not networked, no parts.
    close(val(w, SAW, "availability"), 0.0);
    assert_eq!(ind(w, SAW, "availability").completeness, Some(0.0));
    close(val(w, SAW, "networked"), 0.0);
    close(val(w, SAW, "nc_controlled"), 0.0);
    assert_eq!(ind(w, SAW, "oee").value, None);
    assert_eq!(ind(w, SAW, "electricity_kwh").value, None);

    // Workshop: ratios of sums. Availability over both machines 2700 / 7200; OEE over
    // machines with products 2400 / 3600; NC inputs; all meters; value added and energy per
    // value added (tce / 万元).
    close(val(w, WORKSHOP, "availability"), 2700.0 / 7200.0);
    close(val(w, WORKSHOP, "oee"), 2400.0 / 3600.0);
    close(val(w, WORKSHOP, "key_process_nc_rate"), 1.0);
    close(val(w, WORKSHOP, "digital_equipment_rate"), 0.5);
    close(val(w, WORKSHOP, "equipment_networking_rate"), 0.5);
    close(val(w, WORKSHOP, "electricity_kwh"), 100.0);
    close(val(w, WORKSHOP, "water_m3"), 2.5);
    close(val(w, WORKSHOP, "energy_kgce"), 12.29);
    close(val(w, WORKSHOP, "energy_per_unit_kgce"), 12.29 / 240.0);
    close(val(w, WORKSHOP, "value_added_cny"), 3000.0);
    close(
        val(w, WORKSHOP, "energy_per_value_added"),
        (12.29 / 1000.0) / (3000.0 / 1e4),
    );
    // Equipment-level ids are not workshop ids.
    assert!(
        w.entities[0]
            .indicators
            .iter()
            .all(|i| i.id != "networked" && i.id != "nc_controlled")
    );
}

#[test]
fn the_window_serialises_as_json() {
    let mut live = Live::new(setup()).unwrap();
    one_hour(&mut live);
    let ws = live.compute(ms("2026-10-01T10:00:00+08:00"));
    let j = serde_json::to_value(&ws).unwrap();
    assert_eq!(j[0]["name"], "rolling_60m");
    assert_eq!(j[0]["entities"][0]["entity"], WORKSHOP);
    let oee = j[0]["entities"][1]["indicators"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["id"] == "oee")
        .unwrap();
    assert_eq!(oee["unit"], "ratio");
    assert_eq!(oee["completeness"], 1.0);
    // Null, not NaN or 0, for an unknown value.
    let saw_oee = j[0]["entities"][2]["indicators"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["id"] == "oee")
        .unwrap();
    assert!(saw_oee["value"].is_null());
}

#[test]
fn a_count_across_the_window_start_is_counted_once() {
    // Readings every 10 minutes, +10 parts each; the window (09:05, 10:05] receives the deltas
    // of 09:10 … 10:00 (6 × 10) with 09:00 as its base; the 09:00 delta belongs to the window
    // before.
    let mut s = setup();
    s.equipment = vec![cnc()];
    s.meters.clear();
    let mut live = Live::new(s).unwrap();
    for k in 0..=12 {
        let t = ms("2026-10-01T08:00:00+08:00") + k * 600_000;
        let v = 100.0 + 10.0 * k as f64;
        live.record_counter(CNC, "produced", Reading { t, v }, Some(16));
        live.record_counter(CNC, "good", Reading { t, v }, Some(16));
    }
    let ws = live.compute(ms("2026-10-01T10:05:00+08:00"));
    let w = window(&ws, "rolling_60m");
    close(val(w, CNC, "produced_qty"), 60.0);
    // Base at 09:05 (a value is known before), last reading 10:00: 55 of 60 minutes.
    close(
        ind(w, CNC, "produced_qty").completeness.unwrap(),
        55.0 / 60.0,
    );
    // Exactly at a reading: (09:00, 10:00] gets 09:10 … 10:00.
    let ws = live.compute(ms("2026-10-01T10:00:00+08:00"));
    close(val(&ws[0], CNC, "produced_qty"), 60.0);
    close(ind(&ws[0], CNC, "produced_qty").completeness.unwrap(), 1.0);
}

#[test]
fn a_16_bit_counter_wrap_inside_the_window_is_counted_by_the_engine() {
    let mut s = setup();
    s.equipment = vec![cnc()];
    s.meters.clear();
    let mut live = Live::new(s).unwrap();
    for (t, v) in [
        ("2026-10-01T09:00:00+08:00", 65_500.0),
        ("2026-10-01T09:30:00+08:00", 65_530.0),
        ("2026-10-01T10:00:00+08:00", 14.0),
    ] {
        live.record_counter(CNC, "produced", r(t, v), Some(16));
        live.record_counter(CNC, "good", r(t, v), Some(16));
    }
    let ws = live.compute(ms("2026-10-01T10:00:00+08:00"));
    // 30 + (65 536 − 65 530 + 14) = 50.
    close(val(&ws[0], CNC, "produced_qty"), 50.0);
}

#[test]
fn good_ahead_of_produced_at_the_window_edge_does_not_break_the_window() {
    // The good register is read a second after the produced one and already shows a part the
    // produced reading in the window has not: the engine would reject good > produced.
    let mut s = setup();
    s.equipment = vec![cnc()];
    s.meters.clear();
    let mut live = Live::new(s).unwrap();
    live.record_states(
        CNC,
        &[span(
            "2026-10-01T09:00:00+08:00",
            "2026-10-01T10:00:00+08:00",
            State::Producing,
        )],
    );
    live.record_counter(CNC, "produced", r("2026-10-01T09:00:00+08:00", 0.0), None);
    live.record_counter(CNC, "good", r("2026-10-01T09:00:00+08:00", 0.0), None);
    live.record_counter(CNC, "produced", r("2026-10-01T09:59:58+08:00", 100.0), None);
    live.record_counter(CNC, "good", r("2026-10-01T09:59:59+08:00", 101.0), None);
    let ws = live.compute(ms("2026-10-01T10:00:00+08:00"));
    let w = &ws[0];
    close(val(w, CNC, "produced_qty"), 100.0);
    close(val(w, CNC, "good_qty"), 100.0);
    close(val(w, CNC, "quality_rate"), 1.0);
    close(val(w, WORKSHOP, "good_qty"), 100.0);
}

#[test]
fn without_a_good_counter_the_counts_are_unknown_not_guessed() {
    let mut s = setup();
    s.equipment = vec![cnc()];
    s.meters.clear();
    let mut live = Live::new(s).unwrap();
    live.record_states(
        CNC,
        &[span(
            "2026-10-01T09:00:00+08:00",
            "2026-10-01T10:00:00+08:00",
            State::Producing,
        )],
    );
    live.record_counter(CNC, "produced", r("2026-10-01T09:00:00+08:00", 0.0), None);
    live.record_counter(CNC, "produced", r("2026-10-01T10:00:00+08:00", 300.0), None);
    let ws = live.compute(ms("2026-10-01T10:00:00+08:00"));
    let w = &ws[0];
    close(val(w, CNC, "availability"), 1.0);
    assert_eq!(ind(w, CNC, "performance").value, None);
    assert_eq!(ind(w, CNC, "quality_rate").value, None);
    assert_eq!(ind(w, CNC, "oee").value, None);
    assert_eq!(ind(w, CNC, "good_qty").completeness, Some(0.0));
}

fn shifts() -> Vec<LiveShift> {
    vec![
        LiveShift {
            name: "day".into(),
            start: time(8, 0, 0, 0),
            hours: 8.0,
        },
        LiveShift {
            name: "night".into(),
            start: time(20, 0, 0, 0),
            hours: 12.0,
        },
    ]
}

#[test]
fn the_shift_window_starts_at_the_local_shift_start() {
    let mut s = setup();
    s.shifts = shifts();
    let live = Live::new(s).unwrap();
    // 10:00 in Shanghai: the day shift began at 08:00 local = 00:00 UTC.
    let now = ms("2026-10-01T10:00:00+08:00");
    let ws = live.compute(now);
    let names: Vec<&str> = ws.iter().map(|w| w.name.as_str()).collect();
    assert_eq!(names, vec!["rolling_60m", "shift_day"]);
    let d = window(&ws, "shift_day");
    assert_eq!(d.from_ms, ms("2026-10-01T00:00:00Z"));
    assert_eq!(d.to_ms, now);
    // 03:00 the next morning: the night shift that began at 20:00 the day before.
    let ws = live.compute(ms("2026-10-02T03:00:00+08:00"));
    assert_eq!(
        window(&ws, "shift_night").from_ms,
        ms("2026-10-01T20:00:00+08:00")
    );
    assert!(ws.iter().all(|w| w.name != "shift_day"));
    // 18:00: between shifts, no shift window.
    let ws = live.compute(ms("2026-10-01T18:00:00+08:00"));
    assert_eq!(ws.len(), 1);
    // Exactly at a shift start the window would be empty: none.
    let ws = live.compute(ms("2026-10-01T08:00:00+08:00"));
    assert!(ws.iter().all(|w| w.name != "shift_day"));
}

#[test]
fn back_to_back_and_round_the_clock_shifts_are_found() {
    let mut s = setup();
    s.shifts = vec![
        LiveShift {
            name: "a".into(),
            start: time(0, 0, 0, 0),
            hours: 8.0,
        },
        LiveShift {
            name: "b".into(),
            start: time(8, 0, 0, 0),
            hours: 8.0,
        },
        LiveShift {
            name: "c".into(),
            start: time(16, 0, 0, 0),
            hours: 8.0,
        },
    ];
    let live = Live::new(s.clone()).unwrap();
    let ws = live.compute(ms("2026-10-01T17:30:00+08:00"));
    let shift: Vec<(&str, i64)> = ws
        .iter()
        .filter(|w| w.name.starts_with("shift_"))
        .map(|w| (w.name.as_str(), w.from_ms))
        .collect();
    assert_eq!(shift, vec![("shift_c", ms("2026-10-01T16:00:00+08:00"))]);

    // One 24-hour shift from 06:00: at 05:00 it is still yesterday's.
    s.shifts = vec![LiveShift {
        name: "all".into(),
        start: time(6, 0, 0, 0),
        hours: 24.0,
    }];
    let live = Live::new(s).unwrap();
    let ws = live.compute(ms("2026-10-02T05:00:00+08:00"));
    assert_eq!(
        window(&ws, "shift_all").from_ms,
        ms("2026-10-01T06:00:00+08:00")
    );
    let ws = live.compute(ms("2026-10-02T06:30:00+08:00"));
    assert_eq!(
        window(&ws, "shift_all").from_ms,
        ms("2026-10-02T06:00:00+08:00")
    );
}

#[test]
fn shift_windows_follow_local_time_across_dst() {
    // Europe/Berlin falls back on 2026-10-25 at 03:00 → 02:00: a night shift 22:00–06:00
    // lasts 9 real hours, and at 05:00 local it began at 22:00 local the day before.
    let mut s = setup();
    s.time_zone = TimeZone::get("Europe/Berlin").unwrap();
    s.shifts = vec![LiveShift {
        name: "night".into(),
        start: time(22, 0, 0, 0),
        hours: 8.0,
    }];
    let live = Live::new(s).unwrap();
    let now = ms("2026-10-25T05:00:00+01:00");
    let ws = live.compute(now);
    let w = window(&ws, "shift_night");
    assert_eq!(w.from_ms, ms("2026-10-24T22:00:00+02:00"));
    assert_eq!(w.to_ms - w.from_ms, 8 * 3_600_000);
}

#[test]
fn the_calendar_reaches_the_engine_in_rolling_windows() {
    // Day shift 08:00–16:00. 15:00–16:00 producing, 16:00–17:00 idle after the shift: with the
    // calendar the idle hour is planned down, so the 2-hour window has PBT 1 h and availability 1.
    let mut s = setup();
    s.equipment = vec![cnc()];
    s.meters.clear();
    s.rolling = vec![Duration::from_secs(7200)];
    s.shifts = shifts();
    let mut live = Live::new(s).unwrap();
    live.record_states(
        CNC,
        &[
            span(
                "2026-10-01T15:00:00+08:00",
                "2026-10-01T16:00:00+08:00",
                State::Producing,
            ),
            span(
                "2026-10-01T16:00:00+08:00",
                "2026-10-01T17:00:00+08:00",
                State::Idle,
            ),
        ],
    );
    let ws = live.compute(ms("2026-10-01T17:00:00+08:00"));
    let w = window(&ws, "rolling_120m");
    close(val(w, CNC, "planned_busy_time_s"), 3600.0);
    close(val(w, CNC, "availability"), 1.0);
}

#[test]
fn pruning_keeps_memory_bounded() {
    // A week of 100 000 state intervals (6.048 s each, alternating producing and idle) with a
    // counter and a meter reading at every change.
    let mut s = setup();
    s.equipment = vec![cnc()];
    s.meters.truncate(1);
    let mut live = Live::new(s).unwrap();
    let t0 = ms("2026-10-01T00:00:00+08:00");
    let step = 604_800_000 / 100_000;
    for k in 0..100_000i64 {
        let (a, b) = (t0 + k * step, t0 + (k + 1) * step);
        let state = if k % 2 == 0 {
            State::Producing
        } else {
            State::Idle
        };
        live.record_states(
            CNC,
            &[StateSpan {
                from: a,
                to: b,
                state,
            }],
        );
        let v = (k + 1) as f64;
        live.record_counter(CNC, "produced", Reading { t: b, v }, Some(32));
        live.record_counter(CNC, "good", Reading { t: b, v }, Some(32));
        live.record_meter(CNC_METER, Reading { t: b, v });
    }
    let now = t0 + 100_000 * step;
    // Already bounded without an explicit prune: twice the horizon (65 min) per series.
    let per_series = (2 * live.horizon().as_millis() as i64) / step + 2;
    assert!(
        live.retained() as i64 <= 4 * per_series,
        "{} entries kept",
        live.retained()
    );
    live.prune(now);
    let per_series = live.horizon().as_millis() as i64 / step + 2;
    let kept = live.retained() as i64;
    assert!(kept <= 4 * per_series, "{kept} entries kept after prune");
    assert!(
        kept >= 4 * (3_600_000 / step),
        "{kept}: the last hour must stay"
    );
    // The last hour is still complete: 3600 s / 6.048 s intervals, half of them producing.
    let ws = live.compute(now);
    let w = &ws[0];
    close(val(w, CNC, "planned_busy_time_s"), 3600.0);
    assert_eq!(ind(w, CNC, "availability").completeness, Some(1.0));
    let a = val(w, CNC, "availability");
    assert!((a - 0.5).abs() < 0.002, "{a}");
    // One part per interval: 3600 / 6.048 parts (the base reading is before the window).
    let parts = val(w, CNC, "produced_qty");
    assert!((parts - 3600.0 / 6.048).abs() <= 1.0, "{parts}");
    assert_eq!(ind(w, CNC, "produced_qty").completeness, Some(1.0));
    close(val(w, CNC, "electricity_kwh"), parts);
}

#[test]
fn reconfigure_keeps_the_history_of_devices_that_remain() {
    let mut live = Live::new(setup()).unwrap();
    one_hour(&mut live);
    live.record_states(
        SAW,
        &[span(
            "2026-10-01T09:00:00+08:00",
            "2026-10-01T10:00:00+08:00",
            State::Producing,
        )],
    );
    let before = live.retained();
    let now = ms("2026-10-01T10:00:00+08:00");
    let first = live.compute(now);

    // The saw leaves, a press arrives, the CNC and the meters stay.
    let mut s = setup();
    s.equipment = vec![
        cnc(),
        LiveEquipment {
            id: "p1/e1/w1/l2/press-01".into(),
            kind: "press".into(),
            control: Some("plc".into()),
            key_process: Some("forming".into()),
            networked: true,
            product: None,
        },
    ];
    live.reconfigure(s);
    assert_eq!(live.retained(), before - 1);
    let ws = live.compute(now);
    let w = &ws[0];
    for id in ["availability", "oee", "produced_qty", "electricity_kwh"] {
        assert_eq!(ind(w, CNC, id), ind(&first[0], CNC, id), "{id}");
    }
    // The press has no history yet: offline all hour.
    close(val(w, "p1/e1/w1/l2/press-01", "availability"), 0.0);
    assert!(w.entities.iter().all(|e| e.entity != SAW));
    // The saw's history is gone: re-adding it starts empty.
    live.reconfigure(setup());
    let ws = live.compute(now);
    close(val(&ws[0], SAW, "availability"), 0.0);
    assert_eq!(ind(&ws[0], SAW, "availability").completeness, Some(0.0));

    // An invalid setup is rejected and the running one stays.
    let mut bad = setup();
    bad.equipment[0].control = Some("abacus".into());
    assert!(Live::check(&bad).is_err());
    live.reconfigure(bad);
    assert_eq!(live.setup().equipment[0].control.as_deref(), Some("manual"));
}

#[test]
fn setup_problems_are_all_reported_with_their_field() {
    let mut s = setup();
    s.equipment[0].control = Some("abacus".into());
    s.equipment.push(LiveEquipment {
        id: "p9/e1/w1/l1/x".into(),
        ..saw()
    });
    s.rolling = vec![Duration::from_secs(3600), Duration::from_secs(3600)];
    s.time_zone = TimeZone::fixed(jiff::tz::offset(8));
    s.shifts = shifts();
    let e = Live::new(s).unwrap_err();
    for part in [
        "equipment[0].control",
        "equipment[2].id",
        "rolling[1]: rolling_60m is listed twice",
        "time_zone",
    ] {
        assert!(e.contains(part), "{part} missing in: {e}");
    }
    // Carrier, unit and ideal cycle are checked by the evidence's own validation.
    let mut s = setup();
    s.meters[0].unit = "furlong".into();
    s.meters[1].carrier = "moonlight".into();
    s.equipment[1].product.as_mut().unwrap().ideal_cycle_s = 0.0;
    let e = Live::new(s).unwrap_err();
    for part in [
        "meters[0].unit",
        "meters[1].carrier",
        "equipment[1].products[0].ideal_cycle_s",
    ] {
        assert!(e.contains(part), "{part} missing in: {e}");
    }
}

#[test]
fn unknown_devices_and_out_of_order_readings_are_ignored() {
    let mut live = Live::new(setup()).unwrap();
    one_hour(&mut live);
    let before = live.retained();
    live.record_states(
        "p1/e1/w1/l9/ghost",
        &[span(
            "2026-10-01T09:00:00+08:00",
            "2026-10-01T10:00:00+08:00",
            State::Producing,
        )],
    );
    live.record_meter(CNC, r("2026-10-01T09:59:00+08:00", 1.0));
    live.record_counter(
        CNC_METER,
        "produced",
        r("2026-10-01T09:59:00+08:00", 1.0),
        None,
    );
    // Older than the newest reading, negative, not a number.
    live.record_counter(CNC, "produced", r("2026-10-01T09:40:00+08:00", 1.0), None);
    live.record_meter(CNC_METER, r("2026-10-01T10:00:01+08:00", -1.0));
    live.record_meter(CNC_METER, r("2026-10-01T10:00:01+08:00", f64::NAN));
    assert_eq!(live.retained(), before);
    let ws = live.compute(ms("2026-10-01T10:00:00+08:00"));
    close(val(&ws[0], CNC, "produced_qty"), 250.0);
}
