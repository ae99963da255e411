//! Cumulative registers, part counters and energy meters alike (docs/ENGINE.md §2.4): wrap at
//! the register width, reset to zero, device replacement, attribution of each delta to the
//! time of the later reading.
//!
//! Invariant: for any split of a period into consecutive windows, the windows' attributed
//! deltas add up to the period's (a delta belongs to exactly one half-open window (a, b]).

use jiff::Timestamp;

use crate::calendar::nanos;
use crate::evidence::Register;

/// A counter prepared once: its deltas in time order.
#[derive(Debug, Clone, Default)]
pub struct Deltas {
    /// (time of the later reading, delta), sorted by time.
    events: Vec<(Timestamp, f64)>,
    /// Every instant at which the register's value is known, sorted.
    known: Vec<Timestamp>,
    /// How many decreases were taken as wraps, and as resets (reported, not hidden).
    pub wraps: u32,
    pub resets: u32,
}

/// The part of a counter attributed to a window.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Attributed {
    /// Σ deltas of readings in (from, to]; `None` when no reading covers the window.
    pub value: Option<f64>,
    /// Share of the window between the base reading and the last reading in it, 0..=1.
    pub completeness: f64,
}

impl Deltas {
    pub fn new(counter: Register<'_>) -> Deltas {
        let modulus = match (counter.width_bits, counter.rollover) {
            (Some(w), _) => Some(2f64.powi(i32::from(w))),
            (None, Some(r)) => Some(r),
            (None, None) => None,
        };
        let mut readings: Vec<(Timestamp, f64)> =
            counter.readings.iter().map(|r| (r.at, r.value)).collect();
        readings.sort_by(|a, b| a.0.cmp(&b.0).then(a.1.total_cmp(&b.1)));
        readings.dedup_by(|b, a| a.0 == b.0);
        let mut reps = counter.replaced_at.to_vec();
        reps.sort_by_key(|r| r.at);

        // Series of one physical device each: the old device's series ends with old_final at the
        // replacement instant, the new one starts with new_initial at the same instant.
        let mut series: Vec<Vec<(Timestamp, f64)>> = vec![Vec::new()];
        let mut ri = 0;
        for &(at, v) in &readings {
            while ri < reps.len() && reps[ri].at < at {
                if let Some(cur) = series.last_mut() {
                    cur.push((reps[ri].at, reps[ri].old_final));
                }
                series.push(vec![(reps[ri].at, reps[ri].new_initial)]);
                ri += 1;
            }
            if let Some(cur) = series.last_mut() {
                cur.push((at, v));
            }
        }
        for rep in &reps[ri..] {
            if let Some(cur) = series.last_mut() {
                cur.push((rep.at, rep.old_final));
            }
            series.push(vec![(rep.at, rep.new_initial)]);
        }

        let mut out = Deltas::default();
        for s in &series {
            for w in s.windows(2) {
                let ((_, prev), (at, next)) = (w[0], w[1]);
                let delta = if next >= prev {
                    next - prev
                } else {
                    match modulus {
                        Some(m) if m - prev + next <= m / 2.0 => {
                            out.wraps += 1;
                            m - prev + next
                        }
                        _ => {
                            out.resets += 1;
                            next
                        }
                    }
                };
                out.events.push((at, delta));
            }
            out.known.extend(s.iter().map(|&(t, _)| t));
        }
        out.events.sort_by_key(|e| e.0);
        out.known.sort();
        out.known.dedup();
        out
    }

    /// The deltas attributed to `(from, to]` and how much of the window they cover.
    pub fn attributed(&self, from: Timestamp, to: Timestamp) -> Attributed {
        let lo = self.events.partition_point(|e| e.0 <= from);
        let hi = self.events.partition_point(|e| e.0 <= to);
        let value: f64 = self.events[lo..hi].iter().map(|e| e.1).sum();
        // Base: the last known value at or before `from`, else the first inside the window.
        let k_lo = self.known.partition_point(|&t| t <= from);
        let base = if k_lo > 0 {
            Some(from)
        } else {
            self.known.first().copied().filter(|&t| t <= to)
        };
        let k_hi = self.known.partition_point(|&t| t <= to);
        let last = if k_hi > 0 {
            Some(self.known[k_hi - 1])
        } else {
            None
        };
        let covered = match (base, last) {
            (Some(b), Some(l)) if l > b => nanos(b, l),
            _ => 0,
        };
        let window = nanos(from, to);
        if covered == 0 {
            return Attributed {
                value: None,
                completeness: 0.0,
            };
        }
        Attributed {
            value: Some(value),
            completeness: (covered as f64 / window as f64).clamp(0.0, 1.0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::evidence::{Counter, Reading, Replacement};

    fn t(min: i64) -> Timestamp {
        Timestamp::from_second(1_790_000_000 + min * 60).unwrap()
    }

    fn counter(vals: &[(i64, f64)]) -> Counter {
        Counter {
            readings: vals
                .iter()
                .map(|&(m, v)| Reading { at: t(m), value: v })
                .collect(),
            ..Counter::default()
        }
    }

    #[test]
    fn plain_increase() {
        // 100 → 130 → 175: 75 in (0, 20].
        let d = Deltas::new(counter(&[(0, 100.0), (10, 130.0), (20, 175.0)]).register());
        let a = d.attributed(t(0), t(20));
        assert_eq!(a.value, Some(75.0));
        assert_eq!(a.completeness, 1.0);
    }

    #[test]
    fn sixteen_bit_wrap() {
        // 65530 → 4 on a 16-bit register: 65536 − 65530 + 4 = 10 parts, not a reset.
        let mut c = counter(&[(0, 65_530.0), (5, 4.0), (10, 20.0)]);
        c.width_bits = Some(16);
        let d = Deltas::new(c.register());
        assert_eq!(d.attributed(t(0), t(10)).value, Some(26.0));
        assert_eq!((d.wraps, d.resets), (1, 0));
    }

    #[test]
    fn reset_to_zero() {
        // 20 000 → 12 on a 16-bit register: a wrap would mean 65 536 − 20 000 + 12 = 45 548 parts,
        // more than half the register, so it is a reset: the 12 parts counted since the reset.
        let mut c = counter(&[(0, 20_000.0), (5, 12.0)]);
        c.width_bits = Some(16);
        let d = Deltas::new(c.register());
        assert_eq!(d.attributed(t(0), t(5)).value, Some(12.0));
        assert_eq!((d.wraps, d.resets), (0, 1));
        // Without a known width every decrease is a reset.
        let d = Deltas::new(counter(&[(0, 99_990.0), (5, 10.0)]).register());
        assert_eq!(d.attributed(t(0), t(5)).value, Some(10.0));
    }

    #[test]
    fn meter_rollover() {
        // A 6-digit meter wrapping at 1 000 000: 999 900 → 150 = 250 kWh.
        let mut c = counter(&[(0, 999_900.0), (15, 150.0)]);
        c.rollover = Some(1_000_000.0);
        assert_eq!(
            Deltas::new(c.register()).attributed(t(0), t(15)).value,
            Some(250.0)
        );
    }

    #[test]
    fn replacement_keeps_both_devices_consumption() {
        // Old meter 5000 → 5040, removed at 5060; new meter installed at 0, reads 30 at the end:
        // 40 + 20 + 30 = 90.
        let mut c = counter(&[(0, 5000.0), (10, 5040.0), (30, 30.0)]);
        c.replaced_at = vec![Replacement {
            at: t(20),
            old_final: 5060.0,
            new_initial: 0.0,
        }];
        let d = Deltas::new(c.register());
        assert_eq!(d.attributed(t(0), t(30)).value, Some(90.0));
        assert_eq!((d.wraps, d.resets), (0, 0));
        // Split at the replacement: 60 before, 30 after.
        assert_eq!(d.attributed(t(0), t(20)).value, Some(60.0));
        assert_eq!(d.attributed(t(20), t(30)).value, Some(30.0));
    }

    #[test]
    fn attribution_is_to_the_later_reading_and_completeness_counts_coverage() {
        let d = Deltas::new(counter(&[(5, 0.0), (15, 10.0), (25, 30.0)]).register());
        // Window (0, 20]: base is the first reading at 5, last at 15: 10 of 20 minutes covered.
        let a = d.attributed(t(0), t(20));
        assert_eq!(a.value, Some(10.0));
        assert_eq!(a.completeness, 0.5);
        // Window (20, 40]: base at 20 (a value is known before), last reading 25.
        let b = d.attributed(t(20), t(40));
        assert_eq!(b.value, Some(20.0));
        assert_eq!(b.completeness, 0.25);
        // Nothing known in (30, 40] beyond the base: null, not 0.
        assert_eq!(
            d.attributed(t(30), t(40)),
            Attributed {
                value: None,
                completeness: 0.0
            }
        );
        // Nothing at all before 5.
        assert_eq!(d.attributed(t(0), t(4)).value, None);
    }
}
