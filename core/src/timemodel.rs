//! ISO 22400-2 time model (docs/ENGINE.md §2.1–2.2): state intervals → time buckets over a
//! window, with the shift calendar deciding what is planned.
//!
//! Invariants: the buckets of a window add up to the window's length; buckets are additive over
//! any tiling of a period into windows; `offline` is never production.

use jiff::Timestamp;

use crate::calendar::{Window, nanos};
use crate::evidence::{State, StateInterval};

/// Time per bucket, in nanoseconds (exact and additive).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Buckets {
    pub producing: i128,
    pub setup: i128,
    pub delay: i128,
    pub idle: i128,
    pub planned_down: i128,
    pub offline: i128,
}

impl Buckets {
    fn add_state(&mut self, s: State, ns: i128) {
        match s {
            State::Producing => self.producing += ns,
            State::Setup => self.setup += ns,
            State::Delay => self.delay += ns,
            State::Idle => self.idle += ns,
            State::PlannedDown => self.planned_down += ns,
            State::Offline => self.offline += ns,
        }
    }

    pub fn total(&self) -> i128 {
        self.producing + self.setup + self.delay + self.idle + self.planned_down + self.offline
    }

    /// Planned busy time PBT = period − planned_down.
    pub fn pbt(&self) -> i128 {
        self.total() - self.planned_down
    }

    /// (PBT − offline) / PBT; 1 when PBT = 0 (nothing was planned, nothing is missing).
    pub fn completeness(&self) -> f64 {
        let pbt = self.pbt();
        if pbt <= 0 {
            1.0
        } else {
            (pbt - self.offline) as f64 / pbt as f64
        }
    }
}

impl std::ops::AddAssign for Buckets {
    fn add_assign(&mut self, o: Buckets) {
        self.producing += o.producing;
        self.setup += o.setup;
        self.delay += o.delay;
        self.idle += o.idle;
        self.planned_down += o.planned_down;
        self.offline += o.offline;
    }
}

/// Length of the overlap of `[a, b)` with the planned windows (sorted, disjoint); `None` means
/// everything is planned.
fn planned_overlap(a: Timestamp, b: Timestamp, planned: Option<&[Window]>) -> i128 {
    let Some(planned) = planned else {
        return nanos(a, b);
    };
    let start = planned.partition_point(|w| w.end <= a);
    let mut sum = 0;
    for w in &planned[start..] {
        if w.start >= b {
            break;
        }
        let (s, e) = (w.start.max(a), w.end.min(b));
        if s < e {
            sum += nanos(s, e);
        }
    }
    sum
}

/// Sorts a machine's state intervals by start, the order [`buckets`] needs. Validated
/// intervals do not overlap, so their ends are then sorted too.
pub fn sort_states(states: &mut [StateInterval]) {
    states.sort_by_key(|s| (s.from, s.to));
}

/// Buckets of one machine over `[from, to)`. `states` must be validated (non-overlapping) and
/// sorted by [`sort_states`]; the window is found by binary search, so splitting a long period
/// into many shift windows costs one pass over the intervals, not one per window.
/// `planned` are the shift windows (None: no calendar).
pub fn buckets(
    states: &[StateInterval],
    from: Timestamp,
    to: Timestamp,
    planned: Option<&[Window]>,
) -> Buckets {
    debug_assert!(
        states.windows(2).all(|w| w[0].from <= w[1].from),
        "states must be sorted"
    );
    let mut out = Buckets::default();
    let mut put = |a: Timestamp, b: Timestamp, s: State| {
        let len = nanos(a, b);
        match s {
            // Work done is never hidden by the calendar.
            State::Producing | State::Setup => out.add_state(s, len),
            _ => {
                let planned_part = planned_overlap(a, b, planned);
                out.add_state(s, planned_part);
                out.planned_down += len - planned_part;
            }
        }
    };
    let first = states.partition_point(|s| s.to <= from);
    let mut cursor = from;
    for s in states[first..].iter().take_while(|s| s.from < to) {
        let (a, b) = (s.from.max(from), s.to.min(to));
        if a >= b {
            continue;
        }
        if a > cursor {
            put(cursor, a, State::Offline);
        }
        put(a, b, s.state);
        cursor = cursor.max(b);
    }
    if cursor < to {
        put(cursor, to, State::Offline);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(h: f64) -> Timestamp {
        Timestamp::from_second(1_790_000_000 + (h * 3600.0) as i64).unwrap()
    }
    fn st(a: f64, b: f64, state: State) -> StateInterval {
        StateInterval {
            from: t(a),
            to: t(b),
            state,
        }
    }
    const H: i128 = 3_600_000_000_000;

    #[test]
    fn gaps_are_offline_and_everything_adds_up() {
        // 8 h window: 0–3 producing, 3–3.5 setup, (3.5–4 gap), 4–5 delay, 5–5.5 planned_down,
        // 5.5–8 idle; one interval starts before the window and is clipped.
        let s = [
            st(-1.0, 3.0, State::Producing),
            st(3.0, 3.5, State::Setup),
            st(4.0, 5.0, State::Delay),
            st(5.0, 5.5, State::PlannedDown),
            st(5.5, 8.0, State::Idle),
        ];
        let mut s = s;
        sort_states(&mut s);
        let b = buckets(&s, t(0.0), t(8.0), None);
        assert_eq!(b.producing, 3 * H);
        assert_eq!(b.setup, H / 2);
        assert_eq!(b.offline, H / 2);
        assert_eq!(b.delay, H);
        assert_eq!(b.planned_down, H / 2);
        assert_eq!(b.idle, 5 * H / 2);
        assert_eq!(b.total(), 8 * H);
        assert_eq!(b.pbt(), 15 * H / 2);
        assert!((b.completeness() - 7.0 / 7.5).abs() < 1e-12);
    }

    #[test]
    fn calendar_turns_unplanned_idle_into_planned_down_but_keeps_production() {
        let shift = [Window {
            start: t(0.0),
            end: t(4.0),
            shift: Some("A".into()),
        }];
        // Producing 3–5 (1 h after the shift), idle 5–6, nothing 6–8.
        let s = [
            st(0.0, 3.0, State::Producing),
            st(3.0, 5.0, State::Producing),
            st(5.0, 6.0, State::Idle),
        ];
        let b = buckets(&s, t(0.0), t(8.0), Some(&shift));
        assert_eq!(b.producing, 5 * H);
        assert_eq!(b.idle, 0);
        assert_eq!(b.offline, 0);
        assert_eq!(b.planned_down, 3 * H);
        assert_eq!(b.pbt(), 5 * H);
    }

    #[test]
    fn no_states_is_all_offline() {
        let b = buckets(&[], t(0.0), t(2.0), None);
        assert_eq!(b.offline, 2 * H);
        assert_eq!(b.completeness(), 0.0);
    }
}
