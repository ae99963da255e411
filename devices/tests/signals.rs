#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Signals → states and counters: every model's mapping table, rules validation, the state
//! tracker (micro-stop threshold on both sides, offline on link loss, out-of-order rejection,
//! merging, provisional open stops), the counter tracker, and a property test that the
//! timeline is contiguous, non-overlapping and final once drained.

use std::collections::{BTreeMap, BTreeSet};

use jiff::Timestamp;
use proptest::prelude::*;
use shopfloor_core::evidence::{State, StateInterval};
use shopfloor_devices::Value;
use shopfloor_devices::signals::{
    CounterRole, CounterRules, CounterTracker, RawState, SignalError, StateModel, StateRules,
    StateTracker,
};

fn t(s: i64) -> Timestamp {
    Timestamp::from_second(1_700_000_000 + s).unwrap()
}

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

fn classify(r: &StateRules, values: &[(&str, Value)]) -> Result<RawState, SignalError> {
    let map: BTreeMap<String, Value> = values
        .iter()
        .map(|(p, v)| ((*p).to_owned(), v.clone()))
        .collect();
    r.classify(|p| map.get(p))
}

fn iv(from: i64, to: i64, state: State) -> StateInterval {
    StateInterval {
        from: t(from),
        to: t(to),
        state,
    }
}

fn b(x: bool) -> Value {
    Value::Bool(x)
}

// ---------------------------------------------------------------------------------------------
// Mapping tables

fn run_alarm() -> StateRules {
    rules(
        StateModel::RunAlarm,
        &[
            ("run", "run"),
            ("alarm", "alarm_code"),
            ("setup", "setup"),
            ("planned_down", "planned"),
        ],
    )
}

#[test]
fn run_alarm_mapping_table() {
    let r = run_alarm();
    for bits in 0u8..16 {
        let (run, alarm, setup, planned) =
            (bits & 1 != 0, bits & 2 != 0, bits & 4 != 0, bits & 8 != 0);
        let expected = if planned {
            RawState::PlannedDown
        } else if setup {
            RawState::Setup
        } else if run {
            RawState::Producing
        } else if alarm {
            RawState::Alarm
        } else {
            RawState::Stopped
        };
        let got = classify(
            &r,
            &[
                ("run", b(run)),
                ("alarm_code", Value::UInt(if alarm { 1234 } else { 0 })),
                ("setup", b(setup)),
                ("planned", b(planned)),
            ],
        );
        assert_eq!(
            got,
            Ok(expected),
            "run={run} alarm={alarm} setup={setup} planned={planned}"
        );
    }
}

#[test]
fn run_alarm_with_only_the_required_role() {
    let r = rules(StateModel::RunAlarm, &[("run", "run")]);
    assert_eq!(classify(&r, &[("run", b(true))]), Ok(RawState::Producing));
    assert_eq!(
        classify(&r, &[("run", Value::UInt(0))]),
        Ok(RawState::Stopped)
    );
    assert_eq!(
        classify(&r, &[("run", Value::Float(1.0))]),
        Ok(RawState::Producing)
    );
}

#[test]
fn stack_light_default_meanings_and_precedence() {
    let r = rules(
        StateModel::StackLight,
        &[
            ("green", "g"),
            ("yellow", "y"),
            ("red", "r"),
            ("blue", "bl"),
        ],
    );
    let lamps = |g, y, red, bl| {
        classify(
            &r,
            &[("g", b(g)), ("y", b(y)), ("r", b(red)), ("bl", b(bl))],
        )
        .unwrap()
    };
    assert_eq!(lamps(true, false, false, false), RawState::Producing);
    assert_eq!(lamps(false, true, false, false), RawState::Stopped);
    assert_eq!(lamps(false, false, true, false), RawState::Alarm);
    assert_eq!(lamps(false, false, false, true), RawState::Stopped);
    assert_eq!(
        lamps(false, false, false, false),
        RawState::Stopped,
        "all dark"
    );
    assert_eq!(
        lamps(true, false, true, false),
        RawState::Alarm,
        "red + green is a fault"
    );
    assert_eq!(
        lamps(true, true, false, false),
        RawState::Producing,
        "green + yellow runs with a warning"
    );
    assert_eq!(lamps(true, true, true, true), RawState::Alarm);
}

#[test]
fn stack_light_colours_are_configurable() {
    let mut r = rules(StateModel::StackLight, &[("green", "g"), ("blue", "bl")]);
    r.colours.insert("blue".into(), RawState::Setup);
    r.colours.insert("none".into(), RawState::Off);
    r.validate_roles().unwrap();
    assert_eq!(
        classify(&r, &[("g", b(false)), ("bl", b(true))]),
        Ok(RawState::Setup)
    );
    assert_eq!(
        classify(&r, &[("g", b(true)), ("bl", b(true))]),
        Ok(RawState::Setup),
        "setup outranks producing"
    );
    assert_eq!(
        classify(&r, &[("g", b(false)), ("bl", b(false))]),
        Ok(RawState::Off)
    );
    let toml_rules: StateRules = toml::from_str(
        "model = \"stack_light\"\n[signals]\ngreen = \"g\"\n[colours]\nyellow = \"setup\"\n",
    )
    .unwrap();
    assert_eq!(toml_rules.colour_meaning("yellow"), Some(RawState::Setup));
    assert_eq!(toml_rules.colour_meaning("red"), Some(RawState::Alarm));
}

#[test]
fn machinery_mapping_table() {
    use RawState::*;
    let r = rules(
        StateModel::Machinery,
        &[("item_state", "item"), ("operation_mode", "mode")],
    );
    // Rows: item state NotAvailable, OutOfService, NotExecuting, Executing;
    // columns: mode None, Maintenance, Setup, Processing.
    let table = [
        [Off, PlannedDown, Setup, Off],
        [Alarm, PlannedDown, Setup, Alarm],
        [Stopped, PlannedDown, Setup, Stopped],
        [Producing, PlannedDown, Setup, Producing],
    ];
    for (item, row) in table.iter().enumerate() {
        for (mode, expected) in row.iter().enumerate() {
            let got = classify(
                &r,
                &[
                    ("item", Value::UInt(item as u64)),
                    ("mode", Value::Int(mode as i64)),
                ],
            );
            assert_eq!(got, Ok(*expected), "item {item} mode {mode}");
        }
    }
    // Without an operation mode the item state alone decides.
    let r = rules(StateModel::Machinery, &[("item_state", "item")]);
    assert_eq!(classify(&r, &[("item", Value::UInt(3))]), Ok(Producing));
    assert_eq!(classify(&r, &[("item", Value::Float(2.0))]), Ok(Stopped));
}

#[test]
fn machinery_values_outside_the_enums_are_errors() {
    let r = rules(
        StateModel::Machinery,
        &[("item_state", "item"), ("operation_mode", "mode")],
    );
    let e = classify(&r, &[("item", Value::UInt(4)), ("mode", Value::UInt(0))]).unwrap_err();
    match &e {
        SignalError::Invalid {
            role,
            point,
            reason,
        } => {
            assert_eq!((role.as_str(), point.as_str()), ("item_state", "item"));
            assert!(reason.contains("Executing=3"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
    let e = classify(&r, &[("item", Value::UInt(3)), ("mode", Value::Int(-1))]).unwrap_err();
    assert!(
        matches!(e, SignalError::Invalid { ref role, .. } if role == "operation_mode"),
        "{e}"
    );
    let e = classify(&r, &[("item", Value::Float(2.5)), ("mode", Value::UInt(0))]).unwrap_err();
    assert!(e.to_string().contains("not a whole number"), "{e}");
    let e = classify(&r, &[("item", Value::Bool(true)), ("mode", Value::UInt(0))]).unwrap_err();
    assert!(matches!(e, SignalError::Invalid { .. }), "{e}");
}

fn robot(in_motion: bool) -> StateRules {
    let mut s = vec![
        ("operational_mode", "mode"),
        ("emergency_stop", "estop"),
        ("protective_stop", "pstop"),
        ("task_running", "task"),
    ];
    if in_motion {
        s.push(("in_motion", "moving"));
    }
    rules(StateModel::Robot, &s)
}

#[test]
fn robot_mapping_table() {
    use RawState::*;
    let r = robot(false);
    let cls = |mode: u64, estop, pstop, task| {
        classify(
            &r,
            &[
                ("mode", Value::UInt(mode)),
                ("estop", b(estop)),
                ("pstop", b(pstop)),
                ("task", b(task)),
            ],
        )
        .unwrap()
    };
    for mode in 0..=4 {
        for task in [false, true] {
            assert_eq!(
                cls(mode, true, false, task),
                Alarm,
                "emergency stop, mode {mode}"
            );
            assert_eq!(
                cls(mode, false, true, task),
                Alarm,
                "protective stop, mode {mode}"
            );
            assert_eq!(cls(mode, true, true, task), Alarm);
        }
    }
    assert_eq!(
        cls(3, false, false, true),
        Producing,
        "AUTOMATIC, task running"
    );
    assert_eq!(
        cls(4, false, false, true),
        Producing,
        "AUTOMATIC_EXTERNAL, task running"
    );
    assert_eq!(
        cls(3, false, false, false),
        Stopped,
        "AUTOMATIC, not running"
    );
    assert_eq!(cls(4, false, false, false), Stopped);
    assert_eq!(cls(1, false, false, true), Setup, "MANUAL_REDUCED_SPEED");
    assert_eq!(cls(2, false, false, false), Setup, "MANUAL_HIGH_SPEED");
    assert_eq!(
        cls(0, false, false, true),
        Stopped,
        "OTHER claims no production"
    );
    let e = classify(
        &r,
        &[
            ("mode", Value::UInt(5)),
            ("estop", b(false)),
            ("pstop", b(false)),
            ("task", b(true)),
        ],
    );
    assert!(matches!(e, Err(SignalError::Invalid { ref role, .. }) if role == "operational_mode"));
    // With in_motion, a running program that waits is a stop.
    let r = robot(true);
    let base = |moving| {
        classify(
            &r,
            &[
                ("mode", Value::UInt(3)),
                ("estop", b(false)),
                ("pstop", b(false)),
                ("task", b(true)),
                ("moving", b(moving)),
            ],
        )
        .unwrap()
    };
    assert_eq!(base(true), Producing);
    assert_eq!(base(false), Stopped);
}

#[test]
fn classify_names_the_role_and_point_of_a_bad_or_missing_value() {
    let r = run_alarm();
    let e = classify(
        &r,
        &[("run", b(true)), ("setup", b(false)), ("planned", b(false))],
    )
    .unwrap_err();
    assert_eq!(
        e,
        SignalError::Missing {
            role: "alarm".into(),
            point: "alarm_code".into()
        }
    );
    let e = classify(
        &r,
        &[
            ("run", Value::Text("yes".into())),
            ("alarm_code", Value::UInt(0)),
            ("setup", b(false)),
            ("planned", b(false)),
        ],
    )
    .unwrap_err();
    assert!(
        matches!(e, SignalError::Invalid { ref role, ref point, .. } if role == "run" && point == "run"),
        "{e}"
    );
    let e = classify(
        &r,
        &[
            ("run", Value::Float(f64::NAN)),
            ("alarm_code", Value::UInt(0)),
            ("setup", b(false)),
            ("planned", b(false)),
        ],
    )
    .unwrap_err();
    assert!(e.to_string().contains("not a usable number"), "{e}");
}

// ---------------------------------------------------------------------------------------------
// Rules validation

#[test]
fn state_rules_validation() {
    let points: BTreeSet<&str> = ["run", "alarm"].into_iter().collect();
    let ok = rules(StateModel::RunAlarm, &[("run", "run"), ("alarm", "alarm")]);
    ok.validate(&points).unwrap();

    let e = rules(
        StateModel::RunAlarm,
        &[("run", "run"), ("spindle", "alarm")],
    )
    .validate(&points)
    .unwrap_err();
    assert_eq!(e.path, "signals.spindle");
    assert!(
        e.reason
            .contains("allowed roles are run, alarm, setup, planned_down"),
        "{e}"
    );

    let e = rules(StateModel::RunAlarm, &[("alarm", "alarm")])
        .validate(&points)
        .unwrap_err();
    assert!(e.reason.contains("needs role `run`"), "{e}");

    let e = rules(StateModel::RunAlarm, &[("run", "nope")])
        .validate(&points)
        .unwrap_err();
    assert_eq!(
        (e.path.as_str(), e.reason.as_str()),
        ("signals.run", "no point named `nope`")
    );

    for bad in [-1.0, f64::NAN, f64::INFINITY] {
        let mut r = ok.clone();
        r.micro_stop_s = bad;
        assert_eq!(r.validate(&points).unwrap_err().path, "micro_stop_s");
    }
    let mut r = ok.clone();
    r.micro_stop_s = 0.0;
    r.validate(&points).unwrap();

    let mut r = ok.clone();
    r.colours.insert("red".into(), RawState::Alarm);
    assert_eq!(r.validate(&points).unwrap_err().path, "colours");
    let mut r = rules(StateModel::StackLight, &[("green", "run")]);
    r.colours.insert("purple".into(), RawState::Alarm);
    let e = r.validate(&points).unwrap_err();
    assert_eq!(e.path, "colours.purple");
    assert!(e.reason.contains("green, yellow, red, blue, none"), "{e}");

    let e = rules(
        StateModel::Machinery,
        &[("item_state", "run"), ("run", "alarm")],
    )
    .validate(&points)
    .unwrap_err();
    assert!(e.reason.contains("item_state, operation_mode"), "{e}");
    assert!(StateTracker::new(rules(StateModel::Robot, &[("operational_mode", "m")])).is_err());
}

#[test]
fn state_rules_parse_with_defaults() {
    let r: StateRules =
        toml::from_str("model = \"machinery\"\n[signals]\nitem_state = \"s\"\n").unwrap();
    assert_eq!(r.micro_stop_s, 120.0);
    assert!(r.colours.is_empty());
    assert!(toml::from_str::<StateRules>("model = \"teapot\"\n[signals]\n").is_err());
}

#[test]
fn counter_rules_supported_combinations() {
    let c = |p: Option<&str>, g: Option<&str>, s: Option<&str>| CounterRules {
        produced: p.map(Into::into),
        good: g.map(Into::into),
        scrap: s.map(Into::into),
        width_bits: 32,
    };
    assert!(c(Some("p"), None, None).validate_roles().is_ok());
    assert_eq!(c(Some("p"), Some("g"), None).derived(), None);
    assert_eq!(
        c(Some("p"), None, Some("s")).derived(),
        Some(CounterRole::Good)
    );
    assert_eq!(
        c(None, Some("g"), Some("s")).derived(),
        Some(CounterRole::Produced)
    );
    assert_eq!(c(Some("p"), Some("g"), Some("s")).derived(), None);
    for bad in [
        c(None, Some("g"), None),
        c(None, None, Some("s")),
        c(None, None, None),
    ] {
        assert!(bad.validate_roles().is_err(), "{bad:?}");
    }
    let mut w = c(Some("p"), None, None);
    w.width_bits = 24;
    assert_eq!(w.validate_roles().unwrap_err().path, "width_bits");
    let points: BTreeSet<&str> = ["p"].into_iter().collect();
    let e = c(Some("p"), Some("x"), None).validate(&points).unwrap_err();
    assert_eq!(
        (e.path.as_str(), e.reason.as_str()),
        ("good", "no point named `x`")
    );
}

// ---------------------------------------------------------------------------------------------
// State tracker

fn run_only(micro_stop_s: f64) -> StateTracker {
    let mut r = rules(StateModel::RunAlarm, &[("run", "run"), ("alarm", "alarm")]);
    r.micro_stop_s = micro_stop_s;
    StateTracker::new(r).unwrap()
}

fn set(tr: &mut StateTracker, at: i64, run: bool, alarm: bool) {
    tr.update(t(at), "run", &b(run)).unwrap();
    tr.update(t(at), "alarm", &b(alarm)).unwrap();
}

fn timeline(tr: &mut StateTracker) -> Vec<StateInterval> {
    let mut v = tr.drain_closed();
    v.extend(tr.pending());
    v
}

#[test]
fn a_stop_shorter_than_the_threshold_is_a_micro_stop() {
    let mut tr = run_only(120.0);
    set(&mut tr, 0, true, false);
    set(&mut tr, 100, false, false);
    set(&mut tr, 219, true, false); // stopped 119 s
    tr.tick(t(300)).unwrap();
    assert_eq!(
        timeline(&mut tr),
        vec![
            iv(0, 100, State::Producing),
            iv(100, 219, State::Delay),
            iv(219, 300, State::Producing)
        ]
    );
}

#[test]
fn a_stop_at_or_over_the_threshold_is_idle() {
    let mut tr = run_only(120.0);
    set(&mut tr, 0, true, false);
    set(&mut tr, 100, false, false);
    set(&mut tr, 220, true, false); // stopped exactly 120 s
    set(&mut tr, 230, false, false);
    set(&mut tr, 1000, true, false); // stopped 770 s
    tr.tick(t(1010)).unwrap();
    assert_eq!(
        timeline(&mut tr),
        vec![
            iv(0, 100, State::Producing),
            iv(100, 220, State::Idle),
            iv(220, 230, State::Producing),
            iv(230, 1000, State::Idle),
            iv(1000, 1010, State::Producing),
        ]
    );
}

#[test]
fn an_open_stop_is_provisional_and_held_back_from_drain() {
    let mut tr = run_only(120.0);
    set(&mut tr, 0, false, true); // alarm
    set(&mut tr, 50, false, false); // stop without alarm: may merge with the alarm's delay
    tr.tick(t(100)).unwrap();
    assert_eq!(
        tr.current(),
        Some(iv(0, 100, State::Delay)),
        "provisional micro-stop merged with the alarm"
    );
    assert_eq!(
        tr.drain_closed(),
        vec![],
        "the alarm's delay may still grow"
    );
    tr.tick(t(170)).unwrap(); // the stop has lasted 120 s: idle for good
    assert_eq!(tr.current(), Some(iv(50, 170, State::Idle)));
    assert_eq!(tr.drain_closed(), vec![iv(0, 50, State::Delay)]);
    assert_eq!(tr.pending(), vec![iv(50, 170, State::Idle)]);
    set(&mut tr, 200, true, false);
    tr.tick(t(210)).unwrap();
    assert_eq!(tr.drain_closed(), vec![iv(50, 200, State::Idle)]);
    assert_eq!(tr.current(), Some(iv(200, 210, State::Producing)));
}

#[test]
fn alarm_then_micro_stop_merge_into_one_delay() {
    let mut tr = run_only(120.0);
    set(&mut tr, 0, true, false);
    set(&mut tr, 10, false, true);
    set(&mut tr, 40, false, false);
    set(&mut tr, 70, true, false);
    tr.tick(t(80)).unwrap();
    assert_eq!(
        timeline(&mut tr),
        vec![
            iv(0, 10, State::Producing),
            iv(10, 70, State::Delay),
            iv(70, 80, State::Producing)
        ]
    );
}

#[test]
fn zero_threshold_makes_every_stop_idle() {
    let mut tr = run_only(0.0);
    set(&mut tr, 0, true, false);
    set(&mut tr, 10, false, false);
    set(&mut tr, 11, true, false);
    // The stop ends at 11 once time moves past 11 (more updates at 11 could still change it).
    assert_eq!(tr.drain_closed(), vec![iv(0, 10, State::Producing)]);
    tr.tick(t(12)).unwrap();
    assert_eq!(tr.drain_closed(), vec![iv(10, 11, State::Idle)]);
}

#[test]
fn link_loss_is_offline_until_every_role_is_reported_again() {
    let mut tr = run_only(120.0);
    set(&mut tr, 0, true, false);
    tr.link_down(t(100)).unwrap();
    tr.tick(t(150)).unwrap();
    assert_eq!(tr.current(), Some(iv(100, 150, State::Offline)));
    tr.link_up(t(200)).unwrap();
    tr.update(t(205), "run", &b(true)).unwrap(); // alarm not yet re-reported: still offline
    tr.update(t(210), "alarm", &b(false)).unwrap();
    tr.tick(t(300)).unwrap();
    assert_eq!(
        timeline(&mut tr),
        vec![
            iv(0, 100, State::Producing),
            iv(100, 210, State::Offline),
            iv(210, 300, State::Producing)
        ]
    );
}

#[test]
fn values_received_while_the_link_is_down_count_once_it_is_up() {
    let mut tr = run_only(120.0);
    set(&mut tr, 0, true, false);
    tr.link_down(t(10)).unwrap();
    set(&mut tr, 20, true, false);
    tr.tick(t(25)).unwrap();
    assert_eq!(tr.current().unwrap().state, State::Offline);
    tr.link_up(t(30)).unwrap();
    tr.tick(t(40)).unwrap();
    assert_eq!(
        timeline(&mut tr),
        vec![
            iv(0, 10, State::Producing),
            iv(10, 30, State::Offline),
            iv(30, 40, State::Producing)
        ]
    );
}

#[test]
fn the_timeline_starts_offline_until_the_state_is_known() {
    let mut tr = run_only(120.0);
    tr.update(t(0), "run", &b(true)).unwrap(); // alarm unknown yet
    tr.update(t(5), "alarm", &b(false)).unwrap();
    tr.tick(t(9)).unwrap();
    assert_eq!(
        timeline(&mut tr),
        vec![iv(0, 5, State::Offline), iv(5, 9, State::Producing)]
    );
}

#[test]
fn an_update_older_than_the_last_is_rejected_and_changes_nothing() {
    let mut tr = run_only(120.0);
    set(&mut tr, 0, true, false);
    set(&mut tr, 50, true, false);
    let before = (tr.current(), tr.pending());
    let e = tr.update(t(49), "run", &b(false)).unwrap_err();
    assert_eq!(
        e,
        SignalError::OutOfOrder {
            at: t(49),
            last: t(50)
        }
    );
    assert!(e.to_string().contains("older than"), "{e}");
    assert!(tr.tick(t(10)).is_err());
    assert!(tr.link_down(t(10)).is_err());
    assert!(tr.link_up(t(10)).is_err());
    assert_eq!((tr.current(), tr.pending()), before);
    assert_eq!(tr.last_at(), Some(t(50)));
    // The same instant is fine.
    tr.update(t(50), "run", &b(true)).unwrap();
}

#[test]
fn the_last_update_at_an_instant_wins() {
    let mut tr = run_only(120.0);
    set(&mut tr, 0, true, false);
    // A poll at t=100 first delivers run=false, then alarm=true, then run=true again.
    tr.update(t(100), "run", &b(false)).unwrap();
    tr.update(t(100), "alarm", &b(true)).unwrap();
    tr.update(t(100), "run", &b(true)).unwrap();
    tr.tick(t(200)).unwrap();
    assert_eq!(timeline(&mut tr), vec![iv(0, 200, State::Producing)]);
}

#[test]
fn an_invalid_value_is_reported_and_the_state_is_offline_until_it_is_valid() {
    let r = rules(StateModel::Machinery, &[("item_state", "item")]);
    let mut tr = StateTracker::new(r).unwrap();
    tr.update(t(0), "item", &Value::UInt(3)).unwrap();
    let e = tr.update(t(10), "item", &Value::UInt(9)).unwrap_err();
    assert!(
        matches!(e, SignalError::Invalid { ref point, .. } if point == "item"),
        "{e}"
    );
    tr.update(t(10), "other", &Value::UInt(1)).unwrap(); // other points do not repeat the error
    tr.update(t(20), "item", &Value::UInt(2)).unwrap();
    tr.tick(t(30)).unwrap();
    assert_eq!(
        timeline(&mut tr),
        vec![
            iv(0, 10, State::Producing),
            iv(10, 20, State::Offline),
            iv(20, 30, State::Delay)
        ]
    );
}

#[test]
fn machinery_not_available_is_idle_whatever_its_duration() {
    let r = rules(
        StateModel::Machinery,
        &[("item_state", "item"), ("operation_mode", "mode")],
    );
    let mut tr = StateTracker::new(r).unwrap();
    tr.update(t(0), "mode", &Value::UInt(3)).unwrap();
    tr.update(t(0), "item", &Value::UInt(3)).unwrap();
    tr.update(t(10), "item", &Value::UInt(0)).unwrap();
    tr.update(t(15), "item", &Value::UInt(3)).unwrap();
    tr.update(t(20), "mode", &Value::UInt(1)).unwrap();
    tr.tick(t(30)).unwrap();
    assert_eq!(
        timeline(&mut tr),
        vec![
            iv(0, 10, State::Producing),
            iv(10, 15, State::Idle),
            iv(15, 20, State::Producing),
            iv(20, 30, State::PlannedDown)
        ]
    );
}

#[test]
fn a_tracker_without_events_has_nothing() {
    let mut tr = run_only(120.0);
    assert_eq!(tr.current(), None);
    assert!(tr.pending().is_empty());
    assert!(tr.drain_closed().is_empty());
    tr.tick(t(0)).unwrap();
    assert_eq!(tr.current(), Some(iv(0, 0, State::Offline)));
    assert!(tr.pending().is_empty(), "no zero-length intervals");
}

// ---------------------------------------------------------------------------------------------
// Counter tracker

fn counters(p: Option<&str>, g: Option<&str>, s: Option<&str>, width_bits: u8) -> CounterTracker {
    CounterTracker::new(CounterRules {
        produced: p.map(Into::into),
        good: g.map(Into::into),
        scrap: s.map(Into::into),
        width_bits,
    })
    .unwrap()
}

fn values(c: &Option<shopfloor_core::evidence::Counter>) -> Vec<(i64, f64)> {
    c.as_ref()
        .unwrap()
        .readings
        .iter()
        .map(|r| (r.at.as_second() - 1_700_000_000, r.value))
        .collect()
}

#[test]
fn direct_counters_keep_raw_values_and_the_width() {
    let mut c = counters(Some("parts"), Some("good"), None, 16);
    c.update(t(0), "parts", &Value::UInt(65530)).unwrap();
    c.update(t(0), "good", &Value::UInt(100)).unwrap();
    c.update(t(0), "spindle", &Value::Float(1.0)).unwrap();
    c.update(t(10), "parts", &Value::UInt(4)).unwrap();
    let out = c.drain();
    assert_eq!(values(&out.produced), vec![(0, 65530.0), (10, 4.0)]);
    assert_eq!(out.produced.as_ref().unwrap().width_bits, Some(16));
    assert_eq!(values(&out.good), vec![(0, 100.0)]);
    assert!(out.scrap.is_none(), "scrap neither read nor derivable");
    let again = c.drain();
    assert!(again.produced.unwrap().readings.is_empty());
}

#[test]
fn good_is_derived_from_produced_minus_scrap_without_stepping_back() {
    let mut c = counters(Some("p"), None, Some("s"), 32);
    c.update(t(0), "p", &Value::UInt(1000)).unwrap();
    c.update(t(0), "s", &Value::UInt(10)).unwrap();
    c.update(t(10), "p", &Value::UInt(1005)).unwrap(); // 5 parts, one of them scrap (reported later)
    c.update(t(11), "s", &Value::UInt(11)).unwrap(); // scrap lags produced by a poll
    c.update(t(20), "p", &Value::UInt(1006)).unwrap();
    c.update(t(30), "p", &Value::UInt(1008)).unwrap();
    let out = c.drain();
    assert_eq!(
        values(&out.good),
        vec![(0, 0.0), (10, 5.0), (11, 5.0), (20, 5.0), (30, 7.0)]
    );
    assert_eq!(
        out.good.as_ref().unwrap().width_bits,
        None,
        "the derived register never wraps"
    );
    assert_eq!(values(&out.produced).last(), Some(&(30, 1008.0)));
    // 8 produced − 1 scrap = 7 good.
}

#[test]
fn derived_good_follows_a_wrap_of_its_source() {
    let mut c = counters(Some("p"), None, Some("s"), 16);
    c.update(t(0), "p", &Value::UInt(65534)).unwrap();
    c.update(t(0), "s", &Value::UInt(0)).unwrap();
    c.update(t(10), "p", &Value::UInt(3)).unwrap(); // wrapped: 5 parts
    let out = c.drain();
    assert_eq!(values(&out.good), vec![(0, 0.0), (10, 5.0)]);
}

#[test]
fn produced_is_derived_from_good_plus_scrap() {
    let mut c = counters(None, Some("g"), Some("s"), 32);
    c.update(t(0), "g", &Value::UInt(50)).unwrap();
    c.update(t(5), "s", &Value::UInt(2)).unwrap();
    c.update(t(10), "g", &Value::UInt(53)).unwrap();
    c.update(t(15), "s", &Value::UInt(3)).unwrap();
    let out = c.drain();
    assert_eq!(values(&out.produced), vec![(5, 0.0), (10, 3.0), (15, 4.0)]);
}

#[test]
fn counter_errors() {
    let mut c = counters(Some("p"), None, None, 32);
    c.update(t(10), "p", &Value::UInt(5)).unwrap();
    assert_eq!(
        c.update(t(9), "p", &Value::UInt(6)),
        Err(SignalError::OutOfOrder {
            at: t(9),
            last: t(10)
        })
    );
    for bad in [
        Value::Int(-1),
        Value::Float(f64::NAN),
        Value::Bool(true),
        Value::Text("7".into()),
    ] {
        assert!(
            matches!(c.update(t(10), "p", &bad), Err(SignalError::Invalid { .. })),
            "{bad:?}"
        );
    }
    c.update(t(10), "p", &Value::UInt(6)).unwrap(); // replaces the buffered reading
    let out = c.drain();
    assert_eq!(values(&out.produced), vec![(10, 6.0)]);
    // The reading at t=10 was handed out: a different value at t=10 now is a conflict.
    assert!(matches!(
        c.update(t(10), "p", &Value::UInt(7)),
        Err(SignalError::Conflict { .. })
    ));
    c.update(t(10), "p", &Value::UInt(6)).unwrap();
    c.update(t(11), "p", &Value::UInt(7)).unwrap();
}

// ---------------------------------------------------------------------------------------------
// Property: contiguous, non-overlapping, merged, final once drained

#[derive(Debug, Clone)]
enum Ev {
    Update(i64, &'static str, Value),
    Tick(i64),
    Down(i64),
    Up(i64),
}

fn ev() -> impl Strategy<Value = Ev> {
    let dt = prop_oneof![3 => 0i64..5, 3 => 5i64..200, 1 => -20i64..0];
    let value = prop_oneof![
        4 => any::<bool>().prop_map(Value::Bool),
        2 => (0u64..3).prop_map(Value::UInt),
        1 => Just(Value::Text("x".into())),
    ];
    let point = prop_oneof![Just("run"), Just("alarm"), Just("setup"), Just("other")];
    prop_oneof![
        6 => (dt.clone(), point, value).prop_map(|(d, p, v)| Ev::Update(d, p, v)),
        2 => dt.clone().prop_map(Ev::Tick),
        1 => dt.clone().prop_map(Ev::Down),
        1 => dt.prop_map(Ev::Up),
    ]
}

fn apply(tr: &mut StateTracker, now: &mut i64, e: &Ev) {
    let before = tr.last_at();
    let (dt, r) = match e {
        Ev::Update(d, p, v) => (*d, tr.update(t(*now + d), p, v)),
        Ev::Tick(d) => (*d, tr.tick(t(*now + d))),
        Ev::Down(d) => (*d, tr.link_down(t(*now + d))),
        Ev::Up(d) => (*d, tr.link_up(t(*now + d))),
    };
    match r {
        Err(SignalError::OutOfOrder { .. }) => assert!(dt < 0 && before.is_some()),
        _ => {
            assert!(dt >= 0 || before.is_none(), "an older event was accepted");
            *now += dt;
        }
    }
}

fn tracker() -> StateTracker {
    let mut r = rules(
        StateModel::RunAlarm,
        &[("run", "run"), ("alarm", "alarm"), ("setup", "setup")],
    );
    r.micro_stop_s = 60.0;
    StateTracker::new(r).unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    #[test]
    fn intervals_are_contiguous_merged_and_final(events in proptest::collection::vec(ev(), 0..60)) {
        // A drains after every event, B only at the end: same timeline.
        let (mut a, mut b) = (tracker(), tracker());
        let (mut now_a, mut now_b) = (0i64, 0i64);
        let mut drained_a = Vec::new();
        let mut first = None;
        for e in &events {
            apply(&mut a, &mut now_a, e);
            apply(&mut b, &mut now_b, e);
            if first.is_none() {
                first = a.last_at();
            }
            drained_a.extend(a.drain_closed());
            // Drained intervals never reach past the last event.
            if let (Some(l), Some(last)) = (drained_a.last(), a.last_at()) {
                prop_assert!(l.to <= last);
            }
        }
        let mut full_a = drained_a;
        full_a.extend(a.pending());
        let mut full_b = b.drain_closed();
        full_b.extend(b.pending());
        prop_assert_eq!(&full_a, &full_b);

        for w in full_a.windows(2) {
            prop_assert_eq!(w[0].to, w[1].from, "contiguous: {:?}", full_a);
            prop_assert_ne!(w[0].state, w[1].state, "merged: {:?}", full_a);
        }
        for i in &full_a {
            prop_assert!(i.from < i.to, "positive length: {:?}", i);
        }
        if let (Some(f), Some(l)) = (full_a.first(), full_a.last()) {
            prop_assert_eq!(Some(f.from), first);
            prop_assert_eq!(Some(l.to), a.last_at());
        } else if let (Some(f), Some(last)) = (first, a.last_at()) {
            prop_assert_eq!(f, last, "no interval although time passed");
        }
        // The current interval is the tail of the timeline (unless it has just begun).
        if let Some(cur) = a.current()
            && cur.from < cur.to
        {
            prop_assert_eq!(full_a.last(), Some(&cur));
        }
    }

    #[test]
    fn classify_never_panics(item in any::<i64>(), mode in any::<u64>(), f in any::<f64>()) {
        let r = rules(StateModel::Machinery, &[("item_state", "item"), ("operation_mode", "mode")]);
        let _ = classify(&r, &[("item", Value::Int(item)), ("mode", Value::UInt(mode))]);
        let _ = classify(&r, &[("item", Value::Float(f)), ("mode", Value::Float(f))]);
        let r = robot(true);
        let _ = classify(&r, &[("mode", Value::Float(f)), ("estop", Value::Float(f)), ("pstop", Value::Int(item)), ("task", Value::UInt(mode)), ("moving", Value::Bool(true))]);
    }
}
