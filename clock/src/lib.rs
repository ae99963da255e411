//! The wall clock that stamps readings, batches and ingest: real time, unless a process
//! installs a [`Simulated`] clock once at start (only `shopfloor-gateway demo` does, for
//! `--speed N`).
//!
//! Invariants of the simulated clock, which is what lets a gateway, its agents and the
//! simulator share it without any check being relaxed:
//! - it never runs ahead of real time: `now() = min(start + (real - real_start) × speed, real)`,
//!   so the gateway's clock-skew check (nothing from the future) holds unchanged;
//! - it is continuous and goes back only when the system clock does: once it has caught up
//!   it is real time;
//! - it is installed at most once per process, before any reading is taken.
//!
//! What stays on real time regardless: timeouts, poll schedules, leases, sessions, rate
//! limits (all `Instant`s or explicit real-time reads), so security windows never shrink.

use std::sync::OnceLock;

use jiff::{SignedDuration, Timestamp};

static SIMULATED: OnceLock<Simulated> = OnceLock::new();

/// Time that starts in the past and runs `speed` times faster than real time until it reaches
/// real time, then goes on as real time.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Simulated {
    /// Real time when the clock was made.
    real_start: Timestamp,
    /// Simulated time at `real_start` (never after it).
    start: Timestamp,
    speed: f64,
}

/// Why a [`Simulated`] clock cannot be made or installed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClockError {
    /// `speed` is not a finite number ≥ 1.
    Speed(String),
    /// The start lies after the real time given.
    Future,
    /// A clock is already installed in this process.
    Installed,
}

impl std::fmt::Display for ClockError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ClockError::Speed(s) => write!(f, "speed: {s} is not a number between 1 and 100000"),
            ClockError::Future => f.write_str("start: lies in the future"),
            ClockError::Installed => f.write_str("a simulated clock is already installed"),
        }
    }
}

impl std::error::Error for ClockError {}

/// The largest speed accepted: a year in about five minutes.
pub const MAX_SPEED: f64 = 100_000.0;

impl Simulated {
    /// A clock that reads `start` at real time `real_start` and runs `speed` × faster.
    pub fn new(real_start: Timestamp, start: Timestamp, speed: f64) -> Result<Self, ClockError> {
        if !speed.is_finite() || !(1.0..=MAX_SPEED).contains(&speed) {
            return Err(ClockError::Speed(speed.to_string()));
        }
        if start > real_start {
            return Err(ClockError::Future);
        }
        Ok(Simulated {
            real_start,
            start,
            speed,
        })
    }

    /// Simulated time at real time `real`.
    pub fn at(&self, real: Timestamp) -> Timestamp {
        let elapsed = real.duration_since(self.real_start);
        if elapsed <= SignedDuration::ZERO {
            // Before the start (the system clock stepped back): hold the start.
            return self.start;
        }
        let ahead = elapsed.as_secs_f64() * self.speed;
        let run = SignedDuration::try_from_secs_f64(ahead).unwrap_or(SignedDuration::MAX);
        match self.start.checked_add(run) {
            Ok(t) if t < real => t,
            _ => real,
        }
    }

    /// Real time at which simulated time reaches real time.
    pub fn caught_up_at(&self) -> Timestamp {
        let behind = self.real_start.duration_since(self.start).as_secs_f64();
        let secs = behind / (self.speed - 1.0).max(f64::MIN_POSITIVE);
        SignedDuration::try_from_secs_f64(secs)
            .ok()
            .and_then(|d| self.real_start.checked_add(d).ok())
            .unwrap_or(Timestamp::MAX)
    }

    pub fn speed(&self) -> f64 {
        self.speed
    }

    pub fn start(&self) -> Timestamp {
        self.start
    }
}

/// Installs `clock` for the rest of the process. Call it once, before anything reads the clock.
pub fn install(clock: Simulated) -> Result<(), ClockError> {
    SIMULATED.set(clock).map_err(|_| ClockError::Installed)
}

/// The installed simulated clock, if any.
pub fn simulated() -> Option<Simulated> {
    SIMULATED.get().copied()
}

/// Now: real time, or simulated time when a clock is installed.
pub fn now() -> Timestamp {
    let real = Timestamp::now();
    match SIMULATED.get() {
        Some(c) => c.at(real),
        None => real,
    }
}

/// [`now`] in integer milliseconds since the Unix epoch (the wire format's unit).
pub fn now_ms() -> i64 {
    now().as_millisecond()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: i64) -> Timestamp {
        Timestamp::from_second(s).unwrap_or(Timestamp::UNIX_EPOCH)
    }

    #[test]
    fn runs_fast_then_is_real_time() {
        // 1000 s behind at ×11: caught up after 100 s real.
        let c = Simulated::new(ts(10_000), ts(9_000), 11.0).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.at(ts(10_000)), ts(9_000));
        assert_eq!(c.at(ts(10_010)), ts(9_110));
        assert_eq!(c.at(ts(10_099)), ts(10_089));
        assert_eq!(c.at(ts(10_100)), ts(10_100));
        assert_eq!(c.at(ts(20_000)), ts(20_000));
        assert_eq!(c.caught_up_at(), ts(10_100));
    }

    #[test]
    fn monotonic_and_never_ahead() {
        let c = Simulated::new(ts(50_000), ts(0), 600.0).unwrap_or_else(|e| panic!("{e}"));
        let mut last = Timestamp::MIN;
        for r in (49_990..50_200).map(ts) {
            let t = c.at(r);
            assert!(t <= r.max(c.start()), "{t} ahead of {r}");
            assert!(t >= last, "went back at {r}");
            last = t;
        }
    }

    #[test]
    fn bad_speed_and_future_start_are_refused() {
        for s in [0.5, f64::NAN, f64::INFINITY, 1e9] {
            assert!(matches!(
                Simulated::new(ts(10), ts(0), s),
                Err(ClockError::Speed(_))
            ));
        }
        assert_eq!(Simulated::new(ts(10), ts(11), 2.0), Err(ClockError::Future));
    }

    #[test]
    fn real_time_without_a_clock() {
        // No test in this crate installs a clock.
        let before = Timestamp::now();
        let n = now();
        assert!(n >= before && n <= Timestamp::now());
    }
}
