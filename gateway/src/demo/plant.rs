//! The demo's simulated park, described once and written out as the files a real deployment
//! has: the simulator's scenario, one agent configuration per workshop, the gateway's registry
//! (entities, products, agents) and the enterprises' economic inputs.
//!
//! Machine programs are one local day long (simulated time 0 is a local midnight), built from
//! a shift pattern (planned breaks, shift handovers with setups, nights off) and a few
//! disturbances per machine (alarms, micro-stops, waiting for material), so every indicator has
//! something to show: availability below 1, performance below 1 (machines run a little slower
//! than their products' ideal cycle), scrap, key processes partly without NC control, meters
//! following the shifts.

use std::fmt::Write as _;

/// Raw machine states as the simulator's scenario names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum S {
    Producing,
    Stopped,
    Alarm,
    Setup,
    PlannedDown,
}

impl S {
    fn name(self) -> &'static str {
        match self {
            S::Producing => "producing",
            S::Stopped => "stopped",
            S::Alarm => "alarm",
            S::Setup => "setup",
            S::PlannedDown => "planned_down",
        }
    }
}

/// A window of the day in minutes `[from, to)` in state `s`.
type Window = (u32, u32, S);

/// Shift patterns: what a machine does when nothing goes wrong.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Pattern {
    /// Round the clock in two 12-hour shifts (08:00, 20:00) with handover setups, a night
    /// break and lunch.
    TwoByTwelve,
    /// Day shift 08:00–17:30 with lunch; the rest of the day planned down.
    DayShift,
    /// Two shifts 06:00–22:00 with handovers, lunch and dinner; nights planned down.
    TwoShifts,
}

impl Pattern {
    fn windows(self) -> &'static [Window] {
        const H: u32 = 60;
        match self {
            Pattern::TwoByTwelve => &[
                (2 * H, 2 * H + 30, S::PlannedDown),
                (8 * H, 8 * H + 25, S::Setup),
                (12 * H, 12 * H + 45, S::PlannedDown),
                (20 * H, 20 * H + 20, S::Setup),
            ],
            Pattern::DayShift => &[
                (0, 8 * H, S::PlannedDown),
                (8 * H, 8 * H + 20, S::Setup),
                (12 * H, 13 * H, S::PlannedDown),
                (17 * H + 30, 24 * H, S::PlannedDown),
            ],
            Pattern::TwoShifts => &[
                (0, 6 * H, S::PlannedDown),
                (6 * H, 6 * H + 20, S::Setup),
                (11 * H + 30, 12 * H, S::PlannedDown),
                (14 * H, 14 * H + 15, S::Setup),
                (18 * H, 18 * H + 30, S::PlannedDown),
                (22 * H, 24 * H, S::PlannedDown),
            ],
        }
    }

    /// Relative electrical load by hour of the day (1.0 = full production).
    fn load_profile(self) -> [f64; 24] {
        let mut p = [0.0; 24];
        for (h, f) in p.iter_mut().enumerate() {
            let h = h as u32 * 60;
            let planned_down = self
                .windows()
                .iter()
                .any(|&(a, b, s)| s == S::PlannedDown && a <= h && h + 60 <= b);
            let partly = self.windows().iter().any(|&(a, b, _)| a < h + 60 && b > h);
            *f = if planned_down {
                0.18 // lighting, compressors, standby
            } else if partly {
                0.75
            } else {
                1.0
            };
        }
        p
    }
}

/// A disturbance: `(start minute, minutes, state, alarm code)`.
type Event = (u32, u32, S, u32);

/// How a machine is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Via {
    /// `cnc-modbus-generic` behind the workshop's Modbus TCP gateway.
    ModbusCnc,
    /// `cnc-opcua-machinetool` (OPC 40501) on the workshop's OPC UA server.
    OpcuaMachineTool,
    /// `robot-opcua-40010` on the workshop's OPC UA server.
    OpcuaRobot,
}

impl Via {
    fn template(self) -> &'static str {
        match self {
            Via::ModbusCnc => "cnc-modbus-generic",
            Via::OpcuaMachineTool => "cnc-opcua-machinetool",
            Via::OpcuaRobot => "robot-opcua-40010",
        }
    }

    /// Data points of the template (for `data_auto_collection_rate`).
    fn data_points(self) -> u32 {
        match self {
            Via::ModbusCnc => 15,
            Via::OpcuaMachineTool | Via::OpcuaRobot => 8,
        }
    }
}

#[derive(Debug)]
pub(crate) struct Machine {
    /// Entity path below the workshop: `line/equipment`.
    pub path: &'static str,
    pub name_zh: &'static str,
    pub name_en: &'static str,
    pub via: Via,
    pub key_process: Option<&'static str>,
    pub product: Option<&'static str>,
    /// Real cycle time (s); the product's ideal cycle is a little shorter.
    pub cycle_s: f64,
    /// One part in this many is scrap (0: none).
    pub scrap_every: u32,
    pub events: &'static [Event],
}

/// Equipment in the registry that no agent reads (manual machines): it counts in the NC rate
/// and the networking rate like in a real plant.
#[derive(Debug)]
pub(crate) struct Manual {
    pub path: &'static str,
    pub name_zh: &'static str,
    pub name_en: &'static str,
    pub kind: &'static str,
    pub key_process: &'static str,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum MeterKind {
    /// Schneider PM5xxx, energy in Wh.
    MainElectricity,
    /// Eastron SDM630, energy in kWh.
    SubElectricity,
    Water,
    Gas,
}

#[derive(Debug)]
pub(crate) struct Meter {
    pub path: &'static str,
    pub name_zh: &'static str,
    pub name_en: &'static str,
    pub kind: MeterKind,
    /// Consumption per hour at full load, in the meter's engineering unit.
    pub per_hour: f64,
    pub start: f64,
    /// A sub-meter of this meter (path below the workshop).
    pub parent: Option<&'static str>,
}

impl MeterKind {
    fn template(self) -> &'static str {
        match self {
            MeterKind::MainElectricity => "schneider-pm5xxx",
            MeterKind::SubElectricity => "eastron-sdm630",
            MeterKind::Water => "water-meter-modbus",
            MeterKind::Gas => "gas-meter-modbus",
        }
    }

    fn carrier_unit(self) -> (&'static str, &'static str) {
        match self {
            MeterKind::MainElectricity => ("electricity", "Wh"),
            MeterKind::SubElectricity => ("electricity", "kWh"),
            MeterKind::Water => ("water", "m3"),
            MeterKind::Gas => ("natural_gas", "m3"),
        }
    }

    /// The points that grow (all accounting registers of the template).
    fn ramp_points(self) -> &'static [&'static str] {
        match self {
            MeterKind::MainElectricity => &["energy_delivered_wh"],
            MeterKind::SubElectricity => &["energy_import_kwh", "energy_total_kwh"],
            MeterKind::Water | MeterKind::Gas => &["volume_total_m3"],
        }
    }
}

#[derive(Debug)]
pub(crate) struct Workshop {
    /// `enterprise/workshop`, e.g. `e1/w1`.
    pub path: &'static str,
    pub name_zh: &'static str,
    pub name_en: &'static str,
    pub agent: &'static str,
    pub pattern: Pattern,
    pub lines: &'static [(&'static str, &'static str, &'static str)],
    pub machines: &'static [Machine],
    pub manual: &'static [Manual],
    pub meters: &'static [Meter],
    pub certified_digital: Option<&'static str>,
}

#[derive(Debug)]
pub(crate) struct Enterprise {
    pub id: &'static str,
    pub name_zh: &'static str,
    pub name_en: &'static str,
    pub land_area_m2: f64,
    pub green_factory_since: Option<&'static str>,
    /// Yearly economic inputs: value added, gross output (CNY), employees, solid waste
    /// generated and utilised (t).
    pub inputs: (f64, f64, f64, f64, f64),
}

#[derive(Debug)]
pub(crate) struct Product {
    pub id: &'static str,
    pub name_zh: &'static str,
    pub name_en: &'static str,
    pub ideal_cycle_s: f64,
    pub value_added_per_unit_cny: f64,
}

pub(crate) const PARK: &str = "p1";

pub(crate) const PRODUCTS: &[Product] = &[
    Product {
        id: "shaft-a",
        name_zh: "传动轴 A",
        name_en: "Shaft A",
        ideal_cycle_s: 40.0,
        value_added_per_unit_cny: 12.5,
    },
    Product {
        id: "flange-b",
        name_zh: "法兰 B",
        name_en: "Flange B",
        ideal_cycle_s: 60.0,
        value_added_per_unit_cny: 8.0,
    },
    Product {
        id: "housing-c",
        name_zh: "壳体 C",
        name_en: "Housing C",
        ideal_cycle_s: 85.0,
        value_added_per_unit_cny: 15.0,
    },
    Product {
        id: "bracket-d",
        name_zh: "支架 D",
        name_en: "Bracket D",
        ideal_cycle_s: 70.0,
        value_added_per_unit_cny: 20.0,
    },
    Product {
        id: "door-frame",
        name_zh: "车门框",
        name_en: "Door frame",
        ideal_cycle_s: 55.0,
        value_added_per_unit_cny: 36.0,
    },
    Product {
        id: "brake-disc",
        name_zh: "制动盘",
        name_en: "Brake disc",
        ideal_cycle_s: 90.0,
        value_added_per_unit_cny: 22.0,
    },
];

pub(crate) const ENTERPRISES: &[Enterprise] = &[
    Enterprise {
        id: "e1",
        name_zh: "示例精密机械有限公司",
        name_en: "Example Precision Machinery Co., Ltd.",
        land_area_m2: 120_000.0,
        green_factory_since: Some("2024-06-01"),
        inputs: (180_000_000.0, 620_000_000.0, 420.0, 300.0, 270.0),
    },
    Enterprise {
        id: "e2",
        name_zh: "示例汽车零部件有限公司",
        name_en: "Example Auto Parts Co., Ltd.",
        land_area_m2: 85_000.0,
        green_factory_since: None,
        inputs: (96_000_000.0, 410_000_000.0, 260.0, 820.0, 700.0),
    },
];

use MeterKind::{Gas, MainElectricity, SubElectricity, Water};
use S::{Alarm, Setup, Stopped};

pub(crate) const WORKSHOPS: &[Workshop] = &[
    Workshop {
        path: "e1/w1",
        name_zh: "机加工车间",
        name_en: "Machining workshop",
        agent: "e1-w1-agent",
        pattern: Pattern::TwoByTwelve,
        lines: &[
            ("l1", "一号轴类加工线", "Line 1 (shafts, Modbus)"),
            ("l2", "柔性加工单元", "Flexible cell (OPC UA)"),
        ],
        machines: &[
            Machine {
                path: "l1/cnc-01",
                name_zh: "1号数控车床",
                name_en: "CNC lathe 1",
                via: Via::ModbusCnc,
                key_process: Some("machining"),
                product: Some("shaft-a"),
                cycle_s: 42.0,
                scrap_every: 37,
                events: &[(400, 3, Stopped, 0), (910, 40, Alarm, 2031)],
            },
            Machine {
                path: "l1/cnc-02",
                name_zh: "2号数控车床",
                name_en: "CNC lathe 2",
                via: Via::ModbusCnc,
                key_process: Some("machining"),
                product: Some("flange-b"),
                cycle_s: 65.0,
                scrap_every: 50,
                events: &[(600, 25, Stopped, 0), (1300, 15, Setup, 0)],
            },
            Machine {
                path: "l1/cnc-03",
                name_zh: "3号数控铣床",
                name_en: "CNC mill 3",
                via: Via::ModbusCnc,
                key_process: Some("machining"),
                product: Some("housing-c"),
                cycle_s: 90.0,
                scrap_every: 60,
                events: &[(180, 55, Alarm, 1102), (1000, 4, Stopped, 0)],
            },
            Machine {
                path: "l1/cnc-04",
                name_zh: "4号数控车床",
                name_en: "CNC lathe 4",
                via: Via::ModbusCnc,
                key_process: Some("machining"),
                product: Some("shaft-a"),
                cycle_s: 43.0,
                scrap_every: 45,
                events: &[(700, 90, Setup, 0)],
            },
            Machine {
                path: "l2/mt-01",
                name_zh: "1号加工中心",
                name_en: "Machining centre 1",
                via: Via::OpcuaMachineTool,
                key_process: Some("machining"),
                product: Some("bracket-d"),
                cycle_s: 75.0,
                scrap_every: 40,
                events: &[(1100, 7, Alarm, 700)],
            },
            Machine {
                path: "l2/mt-02",
                name_zh: "2号加工中心",
                name_en: "Machining centre 2",
                via: Via::OpcuaMachineTool,
                key_process: Some("machining"),
                product: Some("bracket-d"),
                cycle_s: 78.0,
                scrap_every: 55,
                events: &[(540, 30, Stopped, 0), (1380, 20, Alarm, 410)],
            },
            Machine {
                path: "l2/robot-01",
                name_zh: "上下料机器人",
                name_en: "Loading robot",
                via: Via::OpcuaRobot,
                key_process: None,
                product: None,
                cycle_s: 75.0,
                scrap_every: 0,
                events: &[(1100, 7, Stopped, 0)],
            },
        ],
        manual: &[Manual {
            path: "l1/deburr-01",
            name_zh: "手动去毛刺工位",
            name_en: "Manual deburring station",
            kind: "workbench",
            key_process: "deburring",
        }],
        meters: &[
            Meter {
                path: "meter-main",
                name_zh: "车间总电表",
                name_en: "Workshop main electricity meter",
                kind: MainElectricity,
                per_hour: 310_000.0,
                start: 9_870_000_000.0,
                parent: None,
            },
            Meter {
                path: "l1/meter-l1",
                name_zh: "一号线电表",
                name_en: "Line 1 electricity meter",
                kind: SubElectricity,
                per_hour: 85.0,
                start: 152_340.0,
                parent: Some("meter-main"),
            },
            Meter {
                path: "water-w1",
                name_zh: "车间水表",
                name_en: "Workshop water meter",
                kind: Water,
                per_hour: 1.8,
                start: 4_521.0,
                parent: None,
            },
            Meter {
                path: "gas-w1",
                name_zh: "热处理天然气表",
                name_en: "Heat-treatment gas meter",
                kind: Gas,
                per_hour: 42.0,
                start: 88_410.0,
                parent: None,
            },
        ],
        certified_digital: Some("2025-03-15"),
    },
    Workshop {
        path: "e1/w2",
        name_zh: "装配车间",
        name_en: "Assembly workshop",
        agent: "e1-w2-agent",
        pattern: Pattern::DayShift,
        lines: &[("a1", "减速器装配线", "Gearbox assembly line")],
        machines: &[
            Machine {
                path: "a1/robot-02",
                name_zh: "拧紧机器人",
                name_en: "Screwdriving robot",
                via: Via::OpcuaRobot,
                key_process: Some("assembly"),
                product: None,
                cycle_s: 60.0,
                scrap_every: 0,
                events: &[(610, 12, Alarm, 0)],
            },
            Machine {
                path: "a1/robot-03",
                name_zh: "涂胶机器人",
                name_en: "Gluing robot",
                via: Via::OpcuaRobot,
                key_process: Some("assembly"),
                product: None,
                cycle_s: 60.0,
                scrap_every: 0,
                events: &[(900, 20, Stopped, 0)],
            },
            Machine {
                path: "a1/cnc-05",
                name_zh: "5号数控车床",
                name_en: "CNC lathe 5",
                via: Via::ModbusCnc,
                key_process: Some("machining"),
                product: Some("flange-b"),
                cycle_s: 63.0,
                scrap_every: 70,
                events: &[(840, 35, Alarm, 2044)],
            },
            Machine {
                path: "a1/cnc-06",
                name_zh: "6号数控车床",
                name_en: "CNC lathe 6",
                via: Via::ModbusCnc,
                key_process: Some("machining"),
                product: Some("housing-c"),
                cycle_s: 92.0,
                scrap_every: 80,
                events: &[(560, 5, Stopped, 0), (1000, 25, Stopped, 0)],
            },
        ],
        manual: &[Manual {
            path: "a1/press-01",
            name_zh: "手动压装机",
            name_en: "Manual press-fit station",
            kind: "press",
            key_process: "assembly",
        }],
        meters: &[Meter {
            path: "meter-w2",
            name_zh: "装配车间电表",
            name_en: "Assembly electricity meter",
            kind: SubElectricity,
            per_hour: 120.0,
            start: 48_200.0,
            parent: None,
        }],
        certified_digital: None,
    },
    Workshop {
        path: "e2/w1",
        name_zh: "冲焊车间",
        name_en: "Stamping and welding workshop",
        agent: "e2-w1-agent",
        pattern: Pattern::TwoShifts,
        lines: &[
            ("l1", "车门焊装线", "Door welding line"),
            ("l2", "制动盘加工线", "Brake disc line"),
        ],
        machines: &[
            Machine {
                path: "l1/robot-01",
                name_zh: "1号焊接机器人",
                name_en: "Welding robot 1",
                via: Via::OpcuaRobot,
                key_process: Some("welding"),
                product: None,
                cycle_s: 58.0,
                scrap_every: 0,
                events: &[(455, 10, Alarm, 0), (1200, 6, Stopped, 0)],
            },
            Machine {
                path: "l1/robot-02",
                name_zh: "2号焊接机器人",
                name_en: "Welding robot 2",
                via: Via::OpcuaRobot,
                key_process: Some("welding"),
                product: None,
                cycle_s: 58.0,
                scrap_every: 0,
                events: &[(980, 45, Alarm, 0)],
            },
            Machine {
                path: "l1/robot-03",
                name_zh: "搬运机器人",
                name_en: "Handling robot",
                via: Via::OpcuaRobot,
                key_process: None,
                product: None,
                cycle_s: 58.0,
                scrap_every: 0,
                events: &[(640, 15, Stopped, 0)],
            },
            Machine {
                path: "l1/mt-01",
                name_zh: "焊装检测加工中心",
                name_en: "Door frame machining centre",
                via: Via::OpcuaMachineTool,
                key_process: Some("welding"),
                product: Some("door-frame"),
                cycle_s: 58.0,
                scrap_every: 35,
                events: &[(980, 45, Stopped, 0), (1230, 30, Setup, 0)],
            },
            Machine {
                path: "l2/cnc-01",
                name_zh: "1号数控车床",
                name_en: "CNC lathe 1",
                via: Via::ModbusCnc,
                key_process: Some("machining"),
                product: Some("brake-disc"),
                cycle_s: 96.0,
                scrap_every: 48,
                events: &[(500, 20, Stopped, 0), (1150, 50, Alarm, 3012)],
            },
            Machine {
                path: "l2/cnc-02",
                name_zh: "2号数控车床",
                name_en: "CNC lathe 2",
                via: Via::ModbusCnc,
                key_process: Some("machining"),
                product: Some("brake-disc"),
                cycle_s: 95.0,
                scrap_every: 52,
                events: &[(760, 4, Stopped, 0), (820, 4, Stopped, 0)],
            },
            Machine {
                path: "l2/cnc-03",
                name_zh: "3号数控铣床",
                name_en: "CNC mill 3",
                via: Via::ModbusCnc,
                key_process: Some("machining"),
                product: Some("brake-disc"),
                cycle_s: 99.0,
                scrap_every: 40,
                events: &[(1020, 75, Setup, 0)],
            },
        ],
        manual: &[
            Manual {
                path: "l1/press-01",
                name_zh: "1号冲压机（手动送料）",
                name_en: "Press 1 (manual feed)",
                kind: "press",
                key_process: "stamping",
            },
            Manual {
                path: "l1/press-02",
                name_zh: "2号冲压机（手动送料）",
                name_en: "Press 2 (manual feed)",
                kind: "press",
                key_process: "stamping",
            },
        ],
        meters: &[
            Meter {
                path: "meter-main",
                name_zh: "车间总电表",
                name_en: "Workshop main electricity meter",
                kind: MainElectricity,
                per_hour: 520_000.0,
                start: 3_120_000_000.0,
                parent: None,
            },
            Meter {
                path: "gas-paint",
                name_zh: "烘干炉天然气表",
                name_en: "Drying oven gas meter",
                kind: Gas,
                per_hour: 65.0,
                start: 210_400.0,
                parent: None,
            },
            Meter {
                path: "water-w1",
                name_zh: "车间水表",
                name_en: "Workshop water meter",
                kind: Water,
                per_hour: 3.2,
                start: 12_870.0,
                parent: None,
            },
        ],
        certified_digital: None,
    },
];

/// Counts for the start-up summary: (enterprises, workshops, machines read, manual machines,
/// meters).
pub(crate) fn counts() -> (usize, usize, usize, usize, usize) {
    let m = WORKSHOPS.iter().map(|w| w.machines.len()).sum();
    let manual = WORKSHOPS.iter().map(|w| w.manual.len()).sum();
    let meters = WORKSHOPS.iter().map(|w| w.meters.len()).sum();
    (ENTERPRISES.len(), WORKSHOPS.len(), m, manual, meters)
}

/// A machine's day as scenario phases: the pattern, then the disturbances on top.
pub(crate) fn phases(pattern: Pattern, events: &[Event]) -> Vec<(S, u32, u32)> {
    let mut minute = [(S::Producing, 0u32); 1440];
    for &(a, b, s) in pattern.windows() {
        for m in &mut minute[a as usize..(b as usize).min(1440)] {
            *m = (s, 0);
        }
    }
    for &(a, len, s, code) in events {
        let end = (a + len).min(1440) as usize;
        for m in &mut minute[a as usize..end] {
            // A disturbance only interrupts production or a setup, never a planned break.
            if m.0 != S::PlannedDown {
                *m = (s, code);
            }
        }
    }
    let mut out: Vec<(S, u32, u32)> = Vec::new();
    for &(s, code) in &minute {
        match out.last_mut() {
            Some((ls, lc, n)) if *ls == s && *lc == code => *n += 60,
            _ => out.push((s, code, 60)),
        }
    }
    out
}

fn entity(out: &mut String, id: &str, kind: &str, zh: &str, en: &str) {
    let _ = write!(
        out,
        "\n[[entity]]\nid = \"{id}\"\nkind = \"{kind}\"\nname_zh = \"{zh}\"\nname_en = \"{en}\"\n"
    );
}

/// `entities.toml` of the registry.
pub(crate) fn entities_toml() -> String {
    let mut o = String::from(
        "# Shopfloor demo: the registry's entities (园区 → 企业 → 车间 → 产线 → 设备, 计量表).\n\
         # Written by `shopfloor-gateway demo`; the same format as configs/registry/.\n",
    );
    entity(
        &mut o,
        PARK,
        "park",
        "两江智能制造产业园",
        "Liangjiang Smart Manufacturing Park",
    );
    o.push_str("region = \"重庆市两江新区\"\n");
    for e in ENTERPRISES {
        entity(
            &mut o,
            &format!("{PARK}/{}", e.id),
            "enterprise",
            e.name_zh,
            e.name_en,
        );
        let _ = writeln!(
            o,
            "region = \"重庆市两江新区\"\nland_area_m2 = {:.1}\nindustry_mode = \"discrete\"\nindustry = \"general\"",
            e.land_area_m2
        );
        if let Some(since) = e.green_factory_since {
            let _ = writeln!(
                o,
                "certifications = [{{ kind = \"green_factory\", since = \"{since}\" }}]"
            );
        }
    }
    for w in WORKSHOPS {
        let wid = format!("{PARK}/{}", w.path);
        entity(&mut o, &wid, "workshop", w.name_zh, w.name_en);
        if let Some(since) = w.certified_digital {
            let _ = writeln!(
                o,
                "certifications = [{{ kind = \"digital_workshop\", since = \"{since}\" }}]\n\
                 baseline = {{ label = \"before digitalisation\", good_per_pbt_hour = 60.0, defect_rate = 0.035 }}"
            );
        }
        for (l, zh, en) in w.lines {
            entity(&mut o, &format!("{wid}/{l}"), "line", zh, en);
        }
        for m in w.machines {
            entity(
                &mut o,
                &format!("{wid}/{}", m.path),
                "equipment",
                m.name_zh,
                m.name_en,
            );
            let (kind, control) = match m.via {
                Via::OpcuaRobot => ("robot", "robot"),
                _ => ("cnc", "cnc"),
            };
            let _ = writeln!(o, "equipment_kind = \"{kind}\"\ncontrol = \"{control}\"");
            if let Some(k) = m.key_process {
                let _ = writeln!(o, "key_process = \"{k}\"");
            }
            if let Some(p) = m.product {
                let _ = writeln!(o, "product = \"{p}\"");
            }
            let _ = writeln!(o, "data_points = {}", m.via.data_points());
        }
        for m in w.manual {
            entity(
                &mut o,
                &format!("{wid}/{}", m.path),
                "equipment",
                m.name_zh,
                m.name_en,
            );
            let _ = writeln!(
                o,
                "equipment_kind = \"{}\"\ncontrol = \"manual\"\nkey_process = \"{}\"",
                m.kind, m.key_process
            );
        }
        for m in w.meters {
            entity(
                &mut o,
                &format!("{wid}/{}", m.path),
                "meter",
                m.name_zh,
                m.name_en,
            );
            let (carrier, unit) = m.kind.carrier_unit();
            let _ = writeln!(o, "carrier = \"{carrier}\"\nunit = \"{unit}\"");
            if let Some(p) = m.parent {
                let _ = writeln!(o, "parent = \"{wid}/{p}\"");
            }
        }
    }
    o
}

/// `products.toml` of the registry.
pub(crate) fn products_toml() -> String {
    let mut o = String::from("# Shopfloor demo: products (产品).\n");
    for p in PRODUCTS {
        let _ = write!(
            o,
            "\n[[product]]\nid = \"{}\"\nname_zh = \"{}\"\nname_en = \"{}\"\nideal_cycle_s = {:.1}\nvalue_added_per_unit_cny = {:.1}\n",
            p.id, p.name_zh, p.name_en, p.ideal_cycle_s, p.value_added_per_unit_cny
        );
    }
    o
}

/// `agents.toml` of the registry: each workshop's agent and its public key.
pub(crate) fn agents_toml(keys: &[(&str, String)]) -> String {
    let mut o = String::from(
        "# Shopfloor demo: agents (边缘采集代理) and their public keys (agent.key in each agent's data directory).\n",
    );
    for w in WORKSHOPS {
        let Some((_, key)) = keys.iter().find(|(a, _)| *a == w.agent) else {
            continue;
        };
        let _ = write!(
            o,
            "\n[[agent]]\nid = \"{}\"\npublic_key = \"{key}\"\nscope = [\"{PARK}/{}\"]\n",
            w.agent, w.path
        );
    }
    o
}

/// Server names in the scenario.
fn modbus_server(w: &Workshop) -> String {
    format!("{}-modbus", w.path.replace('/', "-"))
}

fn opcua_server(w: &Workshop) -> String {
    format!("{}-opcua", w.path.replace('/', "-"))
}

/// A scenario device name: unique over the park.
fn device_name(w: &Workshop, path: &str) -> String {
    format!("{}-{}", w.path.replace('/', "-"), path.replace('/', "-"))
}

/// Modbus unit id of a CNC on its workshop's gateway: 1, 2, … in the order of the list.
fn machine_unit(w: &Workshop, m: &Machine) -> u8 {
    let n = w
        .machines
        .iter()
        .filter(|x| x.via == Via::ModbusCnc)
        .position(|x| std::ptr::eq(x, m))
        .unwrap_or(0);
    u8::try_from(n + 1).unwrap_or(u8::MAX)
}

/// The workshop's meters with their unit ids: 11, 12, ….
fn meter_units(w: &Workshop) -> impl Iterator<Item = (&Meter, u8)> {
    w.meters.iter().zip(11u8..)
}

/// The simulator's scenario (`shopfloor-sim --scenario` reads the same file), every server on
/// an ephemeral loopback port.
pub(crate) fn scenario_toml() -> String {
    let mut o = String::from(
        "# Shopfloor demo plant: every workshop's Modbus TCP gateway (machines and meters) and its\n\
         # OPC UA server (machine tools, robots). Simulated time 0 is a local midnight; each\n\
         # machine program is one day long. Written by `shopfloor-gateway demo`.\n\
         name = \"Shopfloor demo park\"\ntime_scale = 1\ntick_ms = 200\n",
    );
    for w in WORKSHOPS {
        let _ = write!(
            o,
            "\n[[modbus_tcp]]\nname = \"{}\"\nlisten = \"127.0.0.1:0\"\n",
            modbus_server(w)
        );
        if w.machines.iter().any(|m| m.via != Via::ModbusCnc) {
            let _ = write!(
                o,
                "\n[[opcua]]\nname = \"{}\"\nlisten = \"127.0.0.1:0\"\nsecure = false\n",
                opcua_server(w)
            );
        }
    }
    let profile = |w: &Workshop| {
        w.pattern
            .load_profile()
            .iter()
            .map(|f| format!("{f}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    for w in WORKSHOPS {
        for m in w.machines {
            let (server, unit) = match m.via {
                Via::ModbusCnc => (modbus_server(w), machine_unit(w, m)),
                _ => (opcua_server(w), 1),
            };
            let _ = write!(
                o,
                "\n[[device]]\nname = \"{}\"\ntemplate = \"{}\"\nserver = \"{server}\"\n",
                device_name(w, m.path),
                m.via.template()
            );
            if m.via == Via::ModbusCnc {
                let _ = writeln!(o, "unit = {unit}");
            }
            let _ = write!(
                o,
                "[device.machine]\ncycle_s = {:.1}\nscrap_every = {}\nphases = [\n",
                m.cycle_s, m.scrap_every
            );
            for (s, code, secs) in phases(w.pattern, m.events) {
                if code > 0 {
                    let _ = writeln!(
                        o,
                        "  {{ state = \"{}\", for_s = {secs}, alarm_code = {code} }},",
                        s.name()
                    );
                } else {
                    let _ = writeln!(o, "  {{ state = \"{}\", for_s = {secs} }},", s.name());
                }
            }
            o.push_str("]\n");
            if m.via == Via::ModbusCnc {
                o.push_str(
                    "[device.values]\nprogram_number = 4711\nfeed_override_pct = 100\nspindle_speed_rpm = 6000.0\n",
                );
            }
        }
        for (m, unit) in meter_units(w) {
            let _ = write!(
                o,
                "\n[[device]]\nname = \"{}\"\ntemplate = \"{}\"\nserver = \"{}\"\nunit = {unit}\n",
                device_name(w, m.path),
                m.kind.template(),
                modbus_server(w)
            );
            // Water and gas follow production less closely than electricity.
            let prof = match m.kind {
                MainElectricity | SubElectricity => profile(w),
                Water | Gas => w
                    .pattern
                    .load_profile()
                    .iter()
                    .map(|f| format!("{}", 0.4 + 0.6 * f))
                    .collect::<Vec<_>>()
                    .join(", "),
            };
            for p in m.kind.ramp_points() {
                let _ = write!(
                    o,
                    "[[device.ramp]]\npoint = \"{p}\"\nper_hour = {:.3}\nstart = {:.1}\nday_profile = [{prof}]\n",
                    m.per_hour, m.start
                );
            }
        }
    }
    o
}

/// Where a workshop's servers ended up, for its agent's configuration.
#[derive(Debug, Clone)]
pub(crate) struct Endpoints {
    pub modbus: std::net::SocketAddr,
    pub opcua: Option<String>,
    /// Scenario device name → OPC UA root node id.
    pub roots: Vec<(String, String)>,
}

/// Finds a workshop's servers in the running plant.
pub(crate) fn endpoints(w: &Workshop, plant: &shopfloor_sim::Plant) -> Option<Endpoints> {
    Some(Endpoints {
        modbus: plant.tcp_addr(&modbus_server(w))?,
        opcua: plant.opcua_endpoint(&opcua_server(w)),
        roots: plant.opcua_roots.clone(),
    })
}

/// One workshop's agent configuration.
pub(crate) fn agent_toml(
    w: &Workshop,
    data_dir: &std::path::Path,
    mqtt_port: u16,
    ep: &Endpoints,
) -> String {
    let wid = format!("{PARK}/{}", w.path);
    let mut o = format!(
        "# Shopfloor demo: the agent of workshop {wid} ({zh}). The same format as\n\
         # configs/agent.example.toml (docs/CONFIG.md); written by `shopfloor-gateway demo`.\n\
         [agent]\nid = \"{agent}\"\nworkshop = \"{wid}\"\ndata_dir = {data:?}\ntime_zone = \"Asia/Shanghai\"\n\n\
         [mqtt]\nurl = \"mqtt://127.0.0.1:{mqtt_port}\"\nkeep_alive_s = 10\nreconnect_min_ms = 200\nreconnect_max_ms = 5000\n\n\
         [batch]\ninterval_s = 2\nheartbeat_s = 300\n\n\
         [outbox]\nbudget_mb = 256\n\n\
         [metrics]\nlisten = \"off\"\n\n\
         [indicators]\nrolling_minutes = [60, 480]\n",
        zh = w.name_zh,
        agent = w.agent,
        data = data_dir.display().to_string(),
    );
    let shifts: &[(&str, &str, u32)] = match w.pattern {
        Pattern::TwoByTwelve => &[("day", "08:00", 12), ("night", "20:00", 12)],
        Pattern::DayShift => &[("day", "08:00", 10)],
        Pattern::TwoShifts => &[("early", "06:00", 8), ("late", "14:00", 8)],
    };
    for (name, start, hours) in shifts {
        let _ = write!(
            o,
            "[[indicators.shift]]\nname = \"{name}\"\nstart = \"{start}\"\nhours = {hours}\n"
        );
    }
    for p in PRODUCTS {
        let _ = write!(
            o,
            "\n[[product]]\nid = \"{}\"\nideal_cycle_s = {:.1}\nvalue_added_per_unit_cny = {:.1}\n",
            p.id, p.ideal_cycle_s, p.value_added_per_unit_cny
        );
    }
    let _ = write!(
        o,
        "\n# The workshop's Modbus TCP gateway: CNCs (units 1…) and meters (units 11…).\n\
         [[bus]]\nname = \"gw\"\nhost = \"{}\"\nport = {}\ntimeout_ms = 1000\nbackoff_max_ms = 5000\n",
        ep.modbus.ip(),
        ep.modbus.port()
    );
    for m in w.machines {
        let _ = write!(
            o,
            "\n[[device]]\nid = \"{wid}/{}\"\ntemplate = \"{}\"\n",
            m.path,
            m.via.template()
        );
        match m.via {
            Via::ModbusCnc => {
                let unit = machine_unit(w, m);
                let _ = writeln!(o, "bus = \"gw\"\nunit = {unit}\npoll_ms = 250");
            }
            _ => {
                let name = device_name(w, m.path);
                let root = ep
                    .roots
                    .iter()
                    .find(|(n, _)| *n == name)
                    .map(|(_, r)| r.clone())
                    .unwrap_or_default();
                let _ = writeln!(
                    o,
                    "endpoint = {:?}\nroot = {root:?}\npublishing_ms = 250",
                    ep.opcua.clone().unwrap_or_default()
                );
            }
        }
        if let Some(k) = m.key_process {
            let _ = writeln!(o, "key_process = \"{k}\"");
        }
        if let Some(p) = m.product {
            let _ = writeln!(o, "product = \"{p}\"");
        }
        if m.via != Via::ModbusCnc {
            o.push_str("[device.overrides]\nsampling_ms = 250\n");
        }
    }
    for (m, unit) in meter_units(w) {
        let _ = write!(
            o,
            "\n[[device]]\nid = \"{wid}/{}\"\ntemplate = \"{}\"\nbus = \"gw\"\nunit = {unit}\npoll_ms = 1000\n",
            m.path,
            m.kind.template()
        );
    }
    o
}

/// The enterprises' economic inputs for calendar year `year` (经济指标), as the CSV the API and
/// `inputs` import take.
pub(crate) fn inputs_csv(year: i16) -> String {
    let mut o = String::from(
        "entity,from,to,value_added_cny,gross_output_cny,employees_avg,solid_waste_generated_t,solid_waste_utilized_t\n",
    );
    for e in ENTERPRISES {
        let (va, go, emp, waste, used) = e.inputs;
        let _ = writeln!(
            o,
            "{PARK}/{},{year}-01-01T00:00:00+08:00,{}-01-01T00:00:00+08:00,{va},{go},{emp},{waste},{used}",
            e.id,
            year + 1
        );
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_machine_day_is_24_hours() {
        for w in WORKSHOPS {
            for m in w.machines {
                let p = phases(w.pattern, m.events);
                assert_eq!(p.iter().map(|x| x.2).sum::<u32>(), 86_400, "{}", m.path);
                assert!(p.iter().any(|x| x.0 == S::Producing));
            }
        }
    }

    #[test]
    fn disturbances_do_not_replace_planned_breaks() {
        // 01:00–03:00 alarm across the 02:00–02:30 break of the two-by-twelve pattern.
        let p = phases(Pattern::TwoByTwelve, &[(60, 120, S::Alarm, 9)]);
        let kinds: Vec<S> = p.iter().map(|x| x.0).collect();
        assert_eq!(
            &kinds[..4],
            &[S::Producing, S::Alarm, S::PlannedDown, S::Alarm]
        );
        assert_eq!(p[1].2, 3600);
        assert_eq!(p[2].2, 1800);
    }

    #[test]
    fn products_are_slower_than_ideal() {
        for w in WORKSHOPS {
            for m in w.machines {
                if let Some(id) = m.product {
                    let p = PRODUCTS.iter().find(|p| p.id == id);
                    assert!(p.is_some_and(|p| p.ideal_cycle_s < m.cycle_s), "{id}");
                }
            }
        }
    }

    #[test]
    fn the_scenario_loads() {
        let s = scenario_toml();
        let loaded = shopfloor_sim::Scenario::from_str(&s, "demo.toml", std::path::Path::new("."));
        assert!(loaded.is_ok(), "{:?}", loaded.err());
    }
}
