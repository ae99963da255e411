//! The Modbus read planner: coalesces a device's points into as few requests as the protocol,
//! the device's holes and its forbidden ranges allow.
//!
//! Invariants (checked by unit and property tests):
//! - every readable point is covered by exactly one request, whole;
//! - a request never exceeds `max_registers` (≤ 125) registers or `max_bits` (≤ 2000) bits;
//! - a hole read through to join two points is at most `max_gap` long and never touches a
//!   forbidden range;
//! - no request spans a learned break; a point learned unreadable is not requested again;
//! - the plan is deterministic: the same points, limits and learning give the same requests.
//!
//! Learning: when a device answers exception 02 (illegal data address) to a coalesced request,
//! [`Learned::on_illegal_address`] splits it in the middle (bisection); the next plan honours
//! the split, so a hole is isolated in O(log n) cycles and remembered for the device's
//! lifetime. A single point that still gets exception 02 is marked unreadable.

use std::collections::BTreeSet;

use crate::codec::Table;
use crate::point::{ModbusPoint, PlanLimits};

/// One read request on the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadRequest {
    pub table: Table,
    /// Wire address of the first register or bit.
    pub start: u16,
    /// Registers or bits.
    pub count: u16,
    /// Indices (into the device's point list) of the points this request carries.
    pub points: Vec<usize>,
}

impl ReadRequest {
    /// Last address read.
    pub fn end(&self) -> u16 {
        self.start.saturating_add(self.count.saturating_sub(1))
    }
}

/// What the planner has learned about one device's address space.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Learned {
    /// (table, address): no request may contain both `address − 1` and `address`.
    breaks: BTreeSet<(Table, u16)>,
    /// (table, address): points starting here answer exception 02 on their own.
    unreadable: BTreeSet<(Table, u16)>,
}

/// What [`Learned::on_illegal_address`] concluded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Learning {
    /// The request will be split before this address from now on.
    SplitAt(Table, u16),
    /// The points at this address are unreadable and will not be requested again.
    Unreadable(Table, u16),
}

impl Learned {
    pub fn breaks(&self) -> usize {
        self.breaks.len()
    }

    pub fn is_unreadable(&self, table: Table, address: u16) -> bool {
        self.unreadable.contains(&(table, address))
    }

    pub fn unreadable(&self) -> impl Iterator<Item = (Table, u16)> + '_ {
        self.unreadable.iter().copied()
    }

    /// Records an exception 02 answer to `req` and returns what was learned.
    pub fn on_illegal_address(&mut self, req: &ReadRequest, points: &[ModbusPoint]) -> Learning {
        let starts: BTreeSet<u16> = req
            .points
            .iter()
            .filter_map(|&i| points.get(i))
            .map(|p| p.layout.address)
            .collect();
        let starts: Vec<u16> = starts.into_iter().collect();
        if starts.len() >= 2 {
            let at = starts[starts.len() / 2];
            self.breaks.insert((req.table, at));
            Learning::SplitAt(req.table, at)
        } else {
            let at = starts.first().copied().unwrap_or(req.start);
            self.unreadable.insert((req.table, at));
            Learning::Unreadable(req.table, at)
        }
    }
}

/// Plans the requests that read every readable point of a device.
pub fn plan(points: &[ModbusPoint], limits: &PlanLimits, learned: &Learned) -> Vec<ReadRequest> {
    let mut out = Vec::new();
    for table in [Table::Coil, Table::Discrete, Table::Holding, Table::Input] {
        let max = if table.is_bits() {
            limits.max_bits
        } else {
            limits.max_registers
        }
        .clamp(1, table.max_per_request());
        // (start, end inclusive, index), sorted by start then end.
        let mut spans: Vec<(u16, u16, usize)> = points
            .iter()
            .enumerate()
            .filter(|(_, p)| p.layout.table == table)
            .filter(|(_, p)| !learned.is_unreadable(table, p.layout.address))
            .filter_map(|(i, p)| p.layout.end_inclusive().map(|e| (p.layout.address, e, i)))
            .collect();
        spans.sort_unstable();
        let forbidden: Vec<(u16, u16)> = limits
            .forbidden
            .iter()
            .filter(|f| f.table == table)
            .map(|f| (f.from, f.to))
            .collect();
        let mut cur: Option<(u16, u16, Vec<usize>)> = None;
        for (s, e, i) in spans {
            if let Some((cs, ce, ref mut idx)) = cur {
                let new_end = ce.max(e);
                let gap_ok = s <= ce.saturating_add(1)
                    || u32::from(s) - u32::from(ce) - 1 <= u32::from(limits.max_gap);
                let size_ok = u32::from(new_end) - u32::from(cs) < u32::from(max);
                // Addresses read only to fill the hole between the request and this point.
                let hole_ok =
                    s <= ce.saturating_add(1) || !forbidden.iter().any(|&(f, t)| f < s && t > ce);
                let break_ok = learned
                    .breaks
                    .range((table, cs.saturating_add(1))..=(table, s))
                    .next()
                    .is_none()
                    || s <= cs;
                if gap_ok && size_ok && hole_ok && break_ok {
                    idx.push(i);
                    cur = Some((cs, new_end, std::mem::take(idx)));
                    continue;
                }
                out.push(request(table, cs, ce, std::mem::take(idx)));
            }
            cur = Some((s, e, vec![i]));
        }
        if let Some((cs, ce, idx)) = cur {
            out.push(request(table, cs, ce, idx));
        }
    }
    out
}

fn request(table: Table, start: u16, end: u16, points: Vec<usize>) -> ReadRequest {
    ReadRequest {
        table,
        start,
        count: end - start + 1,
        points,
    }
}

/// Naive plan: one request per point (the baseline the benchmark compares against, and what
/// a device that refuses all coalescing gets with `max_gap = 0, max_registers = 1`).
pub fn plan_per_point(points: &[ModbusPoint]) -> Vec<ReadRequest> {
    points
        .iter()
        .enumerate()
        .filter_map(|(i, p)| {
            p.layout
                .end_inclusive()
                .map(|e| request(p.layout.table, p.layout.address, e, vec![i]))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{DataType, Layout, Order, StringLayout};
    use crate::point::Forbidden;

    fn pt(table: Table, address: u16, t: DataType) -> ModbusPoint {
        ModbusPoint {
            name: format!("{table}{address}"),
            layout: Layout {
                table,
                address,
                data_type: t,
                order: Order::ABCD,
                bit: if t == DataType::Bool && !table.is_bits() {
                    Some(0)
                } else {
                    None
                },
                length: 1,
                string_layout: StringLayout::HighLow,
            },
            scale: 1.0,
            offset: 0.0,
            unit: None,
        }
    }

    fn shape(reqs: &[ReadRequest]) -> Vec<(Table, u16, u16)> {
        reqs.iter().map(|r| (r.table, r.start, r.count)).collect()
    }

    #[test]
    fn joins_within_gap_and_splits_beyond() {
        let pts = vec![
            pt(Table::Holding, 0, DataType::F32),  // 0..=1
            pt(Table::Holding, 4, DataType::U16),  // gap 2
            pt(Table::Holding, 20, DataType::U16), // gap 15 > 8
            pt(Table::Input, 72, DataType::F32),
        ];
        let reqs = plan(&pts, &PlanLimits::default(), &Learned::default());
        assert_eq!(
            shape(&reqs),
            vec![
                (Table::Holding, 0, 5),
                (Table::Holding, 20, 1),
                (Table::Input, 72, 2)
            ]
        );
        assert_eq!(reqs[0].points, vec![0, 1]);
    }

    #[test]
    fn never_exceeds_125_registers_or_2000_bits() {
        let regs: Vec<_> = (0..300)
            .map(|a| pt(Table::Input, a, DataType::U16))
            .collect();
        let reqs = plan(&regs, &PlanLimits::default(), &Learned::default());
        assert_eq!(
            shape(&reqs),
            vec![
                (Table::Input, 0, 125),
                (Table::Input, 125, 125),
                (Table::Input, 250, 50)
            ]
        );
        let bits: Vec<_> = (0..4500)
            .map(|a| pt(Table::Coil, a, DataType::Bool))
            .collect();
        let reqs = plan(&bits, &PlanLimits::default(), &Learned::default());
        assert_eq!(
            shape(&reqs),
            vec![
                (Table::Coil, 0, 2000),
                (Table::Coil, 2000, 2000),
                (Table::Coil, 4000, 500)
            ]
        );
    }

    #[test]
    fn forbidden_range_is_never_read_through() {
        let pts = vec![
            pt(Table::Holding, 0, DataType::U16),
            pt(Table::Holding, 4, DataType::U16),
        ];
        let limits = PlanLimits {
            forbidden: vec![Forbidden {
                table: Table::Holding,
                from: 2,
                to: 2,
            }],
            ..PlanLimits::default()
        };
        let reqs = plan(&pts, &limits, &Learned::default());
        assert_eq!(
            shape(&reqs),
            vec![(Table::Holding, 0, 1), (Table::Holding, 4, 1)]
        );
        // A forbidden range elsewhere in the table does not matter.
        let limits = PlanLimits {
            forbidden: vec![Forbidden {
                table: Table::Holding,
                from: 10,
                to: 20,
            }],
            ..PlanLimits::default()
        };
        assert_eq!(
            shape(&plan(&pts, &limits, &Learned::default())),
            vec![(Table::Holding, 0, 5)]
        );
    }

    #[test]
    fn bisection_isolates_a_hole_and_then_an_unreadable_point() {
        // Points at 0, 2, 4, 6; the device has no register 5 (between 4 and 6) and none at 6.
        let pts: Vec<_> = [0, 2, 4, 6]
            .iter()
            .map(|&a| pt(Table::Holding, a, DataType::U16))
            .collect();
        let mut learned = Learned::default();
        let r = plan(&pts, &PlanLimits::default(), &learned);
        assert_eq!(shape(&r), vec![(Table::Holding, 0, 7)]);
        assert_eq!(
            learned.on_illegal_address(&r[0], &pts),
            Learning::SplitAt(Table::Holding, 4)
        );
        let r = plan(&pts, &PlanLimits::default(), &learned);
        assert_eq!(
            shape(&r),
            vec![(Table::Holding, 0, 3), (Table::Holding, 4, 3)]
        );
        assert_eq!(
            learned.on_illegal_address(&r[1], &pts),
            Learning::SplitAt(Table::Holding, 6)
        );
        let r = plan(&pts, &PlanLimits::default(), &learned);
        assert_eq!(
            shape(&r),
            vec![
                (Table::Holding, 0, 3),
                (Table::Holding, 4, 1),
                (Table::Holding, 6, 1)
            ]
        );
        assert_eq!(
            learned.on_illegal_address(&r[2], &pts),
            Learning::Unreadable(Table::Holding, 6)
        );
        let r = plan(&pts, &PlanLimits::default(), &learned);
        assert_eq!(
            shape(&r),
            vec![(Table::Holding, 0, 3), (Table::Holding, 4, 1)]
        );
    }

    #[test]
    fn overlapping_points_share_a_request() {
        // Two bits of one status register and the register itself.
        let mut a = pt(Table::Holding, 10, DataType::Bool);
        a.layout.bit = Some(0);
        let mut b = pt(Table::Holding, 10, DataType::Bool);
        b.layout.bit = Some(3);
        let c = pt(Table::Holding, 10, DataType::U16);
        let reqs = plan(&[a, b, c], &PlanLimits::default(), &Learned::default());
        assert_eq!(shape(&reqs), vec![(Table::Holding, 10, 1)]);
        assert_eq!(reqs[0].points.len(), 3);
    }

    #[test]
    fn top_of_address_space() {
        let pts = vec![
            pt(Table::Holding, 65534, DataType::U16),
            pt(Table::Holding, 65535, DataType::U16),
        ];
        let reqs = plan(&pts, &PlanLimits::default(), &Learned::default());
        assert_eq!(shape(&reqs), vec![(Table::Holding, 65534, 2)]);
    }
}
