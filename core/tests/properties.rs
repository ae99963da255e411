//! Properties of the engine (issue 2): splitting a period and rolling up equals computing the
//! whole; OEE = Σ ideal×good / PBT; results do not depend on input order; no NaN or infinity
//! ever leaves the engine.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed test

use jiff::Timestamp;
use proptest::prelude::*;
use shopfloor_core::calendar::{Calendar, Shift, split_period};
use shopfloor_core::counter::Deltas;
use shopfloor_core::evidence::{
    Counter, DataPoints, Equipment, Evidence, Inputs, Meter, Period, Product, Quantity, Reading,
    State, StateInterval,
};
use shopfloor_core::timemodel::{Buckets, buckets, sort_states};
use shopfloor_core::{Report, compute};

const T0: i64 = 1_790_000_000; // 2026-09-21, a fixed origin; the engine never reads a clock.

fn ts(s: i64) -> Timestamp {
    Timestamp::from_second(T0 + s).unwrap()
}

const STATES: [State; 6] = [
    State::Producing,
    State::Setup,
    State::Delay,
    State::Idle,
    State::PlannedDown,
    State::Offline,
];

/// Non-overlapping state intervals over about [−1 h, horizon + 1 h), with gaps.
fn states(horizon: i64) -> impl Strategy<Value = Vec<StateInterval>> {
    prop::collection::vec((1i64..7200, 0usize..6, prop::bool::weighted(0.2)), 0..40).prop_map(
        move |steps| {
            let mut t = -3600;
            let mut out = Vec::new();
            for (len, st, gap) in steps {
                if t > horizon + 3600 {
                    break;
                }
                if !gap {
                    out.push(StateInterval {
                        from: ts(t),
                        to: ts(t + len),
                        state: STATES[st],
                    });
                }
                t += len;
            }
            out
        },
    )
}

/// A cumulative counter with increments, 16-bit wraps and occasional resets.
fn counter(horizon: i64) -> impl Strategy<Value = Counter> {
    (
        0u32..65_536,
        prop::collection::vec((1i64..3600, 0u32..400, 0u8..20), 0..30),
    )
        .prop_map(move |(start, steps)| {
            let mut t = -600;
            let mut v = start;
            let mut readings = vec![Reading {
                at: ts(t),
                value: f64::from(v),
            }];
            for (dt, inc, kind) in steps {
                t += dt;
                if t > horizon + 3600 {
                    break;
                }
                v = if kind == 0 {
                    inc % 10
                } else {
                    (v + inc) % 65_536
                };
                readings.push(Reading {
                    at: ts(t),
                    value: f64::from(v),
                });
            }
            Counter {
                readings,
                width_bits: Some(16),
                rollover: None,
                replaced_at: vec![],
            }
        })
}

fn calendar() -> impl Strategy<Value = Option<Calendar>> {
    prop::option::of((0i8..24, 1i8..12).prop_map(|(h, len)| Calendar {
        time_zone: "Asia/Shanghai".into(),
        shifts: vec![Shift {
            name: "A".into(),
            start: format!("{h:02}:00"),
            end: format!("{:02}:30", (h + len) % 24),
        }],
        weekdays: None,
        holidays: vec![],
    }))
}

fn sum_buckets(
    st: &[StateInterval],
    cal: Option<&Calendar>,
    from: Timestamp,
    to: Timestamp,
) -> Buckets {
    // Shuffled on purpose: the caller's order must not matter once sorted.
    let mut st = st.to_vec();
    st.reverse();
    sort_states(&mut st);
    let st = st.as_slice();
    let planned = cal.map(|c| c.shift_windows(from, to));
    let mut b = Buckets::default();
    for w in split_period(cal, from, to) {
        b += buckets(st, w.start, w.end, planned.as_deref());
    }
    b
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// Time buckets: any split of a period adds up exactly, with or without a shift calendar,
    /// and every window's buckets add up to its length.
    #[test]
    fn time_buckets_split_and_sum_to_the_whole(st in states(86_400), cal in calendar(), cut in 1i64..86_400) {
        let (a, m, b) = (ts(0), ts(cut), ts(86_400));
        let whole = sum_buckets(&st, cal.as_ref(), a, b);
        let mut parts = sum_buckets(&st, cal.as_ref(), a, m);
        parts += sum_buckets(&st, cal.as_ref(), m, b);
        prop_assert_eq!(whole, parts);
        prop_assert_eq!(whole.total(), 86_400i128 * 1_000_000_000);
        prop_assert!(whole.pbt() >= whole.producing);
    }

    /// Counters: deltas attributed to (a, m] and (m, b] add up to those of (a, b].
    #[test]
    fn counter_deltas_split_and_sum_to_the_whole(c in counter(86_400), cut in 1i64..86_400) {
        let d = Deltas::new(c.register());
        let v = |x: i64, y: i64| d.attributed(ts(x), ts(y)).value.unwrap_or(0.0);
        let whole = v(0, 86_400);
        let parts = v(0, cut) + v(cut, 86_400);
        prop_assert!((whole - parts).abs() <= 1e-9 * whole.abs().max(1.0), "{whole} vs {parts}");
        prop_assert!(whole >= 0.0);
    }
}

// -------------------------------------------------------------------------------------------
// Whole-engine properties on generated evidence.

#[derive(Debug, Clone)]
struct Machine {
    states: Vec<StateInterval>,
    products: Vec<(f64, Counter, u32)>, // ideal cycle, produced counter, scrap per mille
    control: usize,
    key: bool,
    networked: bool,
}

fn machine(horizon: i64) -> impl Strategy<Value = Machine> {
    (
        states(horizon),
        prop::collection::vec((0.5f64..600.0, counter(horizon), 0u32..300), 0..3),
        0usize..5,
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(|(states, products, control, key, networked)| Machine {
            states,
            products,
            control,
            key,
            networked,
        })
}

fn evidence(
    machines: &[Machine],
    meter: &Counter,
    from: i64,
    to: i64,
    cal: Option<Calendar>,
) -> Evidence {
    use shopfloor_core::evidence::Control;
    let controls = [
        Control::Cnc,
        Control::Plc,
        Control::Dcs,
        Control::Robot,
        Control::Manual,
    ];
    let equipment = machines
        .iter()
        .enumerate()
        .map(|(i, m)| Equipment {
            id: format!("p1/e1/w1/l1/m{i:02}"),
            kind: "cnc".into(),
            control: controls[m.control],
            key_process: m.key.then(|| "machining".to_owned()),
            networked: m.networked,
            states: m.states.clone(),
            products: m
                .products
                .iter()
                .enumerate()
                .map(|(j, (ic, c, scrap))| {
                    // good = produced less a scrap share, as a counter read at the same instants.
                    let mut good = c.clone();
                    let mut acc = 0.0;
                    let mut prev: Option<f64> = None;
                    for r in &mut good.readings {
                        // A good counter that is a fixed share of the produced one, without wraps.
                        let step = match prev {
                            Some(p) if r.value >= p => r.value - p,
                            Some(_) => r.value,
                            None => 0.0,
                        };
                        prev = Some(r.value);
                        acc += (step * f64::from(1000 - scrap) / 1000.0).floor();
                        r.value = acc;
                    }
                    good.width_bits = None;
                    Product {
                        id: format!("prod-{j}"),
                        ideal_cycle_s: *ic,
                        produced: Quantity::Counter(c.clone()),
                        good: Quantity::Counter(good),
                        value_added_per_unit_cny: Some(12.5),
                    }
                })
                .collect(),
            data_points: Some(DataPoints {
                configured: 10,
                received: (i as u64) % 11,
            }),
        })
        .collect();
    let meters = vec![Meter {
        id: "p1/e1/w1/em-1".into(),
        carrier: "electricity".into(),
        unit: "kWh".into(),
        consumption: None,
        readings: Some(meter.readings.clone()),
        rollover: Some(65_536.0),
        replaced_at: vec![],
        ct_ratio: Some(40.0),
        pt_ratio: None,
        renewable: false,
        parent: None,
    }];
    Evidence {
        schema: "shopfloor.evidence/1".into(),
        entity: "p1/e1/w1".into(),
        period: Period {
            from: ts(from),
            to: ts(to),
        },
        calendar: cal,
        time_zone: None,
        coefficients: None,
        industry_mode: None,
        industry: None,
        equipment,
        meters,
        inputs: Some(Inputs {
            value_added_cny: None,
            ..Inputs::default()
        }),
        baseline: None,
        entities: vec![],
        signatures: vec![],
    }
}

fn run(ev: &Evidence) -> Report {
    ev.validate().unwrap();
    compute(ev).unwrap()
}

fn val(r: &Report, id: &str) -> Option<f64> {
    r.indicators.get(id).and_then(|i| i.value)
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1.0)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    /// Split the period in two, compute each half, roll up the sums: equals the whole.
    #[test]
    fn splitting_a_period_and_rolling_up_equals_the_whole(
        machines in prop::collection::vec(machine(28_800), 1..5),
        meter in counter(28_800),
        cal in calendar(),
        cut in 600i64..28_200,
    ) {
        let whole = run(&evidence(&machines, &meter, 0, 28_800, cal.clone()));
        let a = run(&evidence(&machines, &meter, 0, cut, cal.clone()));
        let b = run(&evidence(&machines, &meter, cut, 28_800, cal));
        for id in ["planned_busy_time_s", "actual_production_time_s", "produced_qty", "good_qty", "scrap_qty", "electricity_kwh", "energy_kgce", "co2_kg", "value_added_cny"] {
            let sum = val(&a, id).unwrap_or(0.0) + val(&b, id).unwrap_or(0.0);
            prop_assert!(close(val(&whole, id).unwrap_or(0.0), sum), "{id}: whole {:?}, halves {:?} + {:?}", val(&whole, id), val(&a, id), val(&b, id));
        }
        // Ratios roll up as ratios of the summed parts: value × denominator is additive. A half
        // whose denominator is 0 has a null ratio; its numerator is then 0 too, unless parts were
        // counted in a half without production time (the counter is read after the work), which
        // is exactly why ratios must never be averaged: skip that case here.
        let part = |r: &Report, id: &str, den: &str, num_zero: bool| -> Option<f64> {
            match (val(r, id), val(r, den).unwrap_or(0.0)) {
                (Some(v), d) => Some(v * d),
                (None, _) if num_zero => Some(0.0),
                (None, _) => None,
            }
        };
        let no_parts = |r: &Report| val(r, "produced_qty").unwrap_or(0.0) == 0.0;
        let no_good = |r: &Report| val(r, "good_qty").unwrap_or(0.0) == 0.0;
        let all_count = machines.iter().all(|m| !m.products.is_empty());
        type Check = (&'static str, &'static str, fn(&Report) -> bool, bool);
        let checks: [Check; 3] = [
            ("availability", "planned_busy_time_s", |_| true, true),
            ("performance", "actual_production_time_s", no_parts, all_count),
            ("oee", "planned_busy_time_s", no_good, all_count),
        ];
        for (id, den, zero, applies) in checks {
            let d = val(&whole, den).unwrap_or(0.0);
            if !applies || d == 0.0 {
                continue;
            }
            if let (Some(x), Some(y)) = (part(&a, id, den, zero(&a)), part(&b, id, den, zero(&b))) {
                let w = val(&whole, id).unwrap_or(0.0);
                prop_assert!(close(w, (x + y) / d), "{id}: whole {w}, rolled up {}", (x + y) / d);
            }
        }
    }

    /// OEE is Σ ideal_cycle × good / PBT over the machines that count parts.
    #[test]
    fn oee_is_ideal_time_of_good_parts_over_planned_busy_time(
        machines in prop::collection::vec(machine(28_800), 1..5),
        meter in counter(28_800),
    ) {
        let ev = evidence(&machines, &meter, 0, 28_800, None);
        let r = run(&ev);
        let mut ideal_good = 0.0;
        let mut pbt = 0.0;
        for (m, eq) in machines.iter().zip(&ev.equipment) {
            if m.products.is_empty() {
                continue;
            }
            let single = Evidence { entity: eq.id.clone(), equipment: vec![eq.clone()], meters: vec![], inputs: None, ..ev.clone() };
            let rs = run(&single);
            pbt += val(&rs, "planned_busy_time_s").unwrap_or(0.0);
            for p in &eq.products {
                if let Quantity::Counter(g) = &p.good {
                    ideal_good += p.ideal_cycle_s * Deltas::new(g.register()).attributed(ev.period.from, ev.period.to).value.unwrap_or(0.0);
                }
            }
        }
        match val(&r, "oee") {
            Some(oee) => prop_assert!(close(oee, ideal_good / pbt), "oee {oee} vs {}", ideal_good / pbt),
            None => prop_assert!(pbt == 0.0 || ideal_good == 0.0 && r.indicators["good_qty"].value.is_none()),
        }
    }

    /// Shuffling every list of the evidence changes nothing, to the last bit.
    #[test]
    fn results_do_not_depend_on_input_order(
        machines in prop::collection::vec(machine(28_800), 1..5),
        meter in counter(28_800),
        seed in any::<u64>(),
    ) {
        let ev = evidence(&machines, &meter, 0, 28_800, None);
        let mut shuffled = ev.clone();
        let mut rng = seed;
        let mut next = move || { rng ^= rng << 13; rng ^= rng >> 7; rng ^= rng << 17; rng };
        fn shuffle<T>(v: &mut [T], next: &mut dyn FnMut() -> u64) {
            for i in (1..v.len()).rev() {
                let j = (next() % (i as u64 + 1)) as usize;
                v.swap(i, j);
            }
        }
        shuffle(&mut shuffled.equipment, &mut next);
        for e in &mut shuffled.equipment {
            shuffle(&mut e.states, &mut next);
            shuffle(&mut e.products, &mut next);
            for p in &mut e.products {
                if let Quantity::Counter(c) = &mut p.produced { shuffle(&mut c.readings, &mut next); }
            }
        }
        if let Some(r) = shuffled.meters[0].readings.as_mut() { shuffle(r, &mut next); }
        let (x, y) = (run(&ev), run(&shuffled));
        prop_assert_eq!(&x.indicators, &y.indicators);
    }
}

// -------------------------------------------------------------------------------------------
// No NaN or infinity, whatever the (valid) input.

fn extreme() -> impl Strategy<Value = f64> {
    prop_oneof![
        Just(0.0),
        Just(1e-300),
        Just(1e300),
        Just(f64::MAX),
        0.0f64..1e9
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn no_nan_or_infinity_leaves_the_engine(
        st in states(3600),
        produced in prop_oneof![Just(0u64), Just(u64::MAX / 2), 0u64..1_000_000],
        good_share in 0.0f64..=1.0,
        ideal in prop_oneof![Just(1e-300), Just(f64::MAX), 1e-3f64..1e6],
        consumption in extreme(),
        inputs in prop::collection::vec(prop::option::of(extreme()), 6),
        period_s in prop_oneof![Just(1i64), 1i64..100_000],
        level in 1usize..=5,
    ) {
        let entity = ["p1", "p1/e1", "p1/e1/w1", "p1/e1/w1/l1", "p1/e1/w1/l1/m1"][level - 1];
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let good = (produced as f64 * good_share) as u64;
        let eq = Equipment {
            id: "p1/e1/w1/l1/m1".into(),
            kind: "cnc".into(),
            control: shopfloor_core::evidence::Control::Cnc,
            key_process: Some("k".into()),
            networked: true,
            states: st,
            products: vec![Product { id: "a".into(), ideal_cycle_s: ideal, produced: Quantity::Count(produced), good: Quantity::Count(good.min(produced)), value_added_per_unit_cny: Some(1e300) }],
            data_points: Some(DataPoints { configured: 0, received: 0 }),
        };
        let meters = vec![
            Meter { id: "p1/e1/w1/l1/m1/em".into(), carrier: "electricity".into(), unit: "MWh".into(), consumption: Some(consumption), readings: None, rollover: None, replaced_at: vec![], ct_ratio: None, pt_ratio: None, renewable: false, parent: None },
            Meter { id: "p1/e1/w1/l1/m1/wm".into(), carrier: "water".into(), unit: "m3".into(), consumption: Some(consumption), readings: None, rollover: None, replaced_at: vec![], ct_ratio: None, pt_ratio: None, renewable: true, parent: None },
        ];
        let inp = Inputs {
            value_added_cny: inputs[0], gross_output_cny: inputs[1], employees_avg: inputs[2],
            land_area_m2: inputs[3], solid_waste_generated_t: inputs[4], solid_waste_utilized_t: inputs[5],
        };
        let ev = Evidence {
            schema: "shopfloor.evidence/1".into(),
            entity: entity.into(),
            period: Period { from: ts(0), to: ts(period_s) },
            calendar: None, time_zone: None, coefficients: None, industry_mode: None, industry: None,
            equipment: vec![eq],
            meters,
            inputs: (level > 1).then_some(inp),
            baseline: Some(shopfloor_core::evidence::Baseline { label: None, good_per_pbt_hour: Some(0.0), defect_rate: Some(1e-300), energy_per_value_added: Some(0.0), water_per_value_added: Some(f64::MAX) }),
            entities: vec![],
            signatures: vec![],
        };
        prop_assume!(ev.validate().is_ok());
        let r = compute(&ev).unwrap();
        let all = std::iter::once(&r).chain(r.enterprises.iter());
        for rep in all {
            for (id, i) in &rep.indicators {
                if let Some(v) = i.value { prop_assert!(v.is_finite(), "{id} = {v}"); }
                prop_assert!((0.0..=1.0).contains(&i.completeness), "{id} completeness {}", i.completeness);
            }
            for a in &rep.assessments {
                for c in &a.criteria {
                    if let Some(v) = c.value { prop_assert!(v.is_finite()); }
                }
            }
        }
        let json = serde_json::to_string(&r).unwrap();
        prop_assert!(!json.contains("NaN") && !json.contains("inf"));
    }
}
