//! Exponential backoff with a cap and deterministic jitter.

use std::time::Duration;

/// Reconnect delays: `initial`, doubling up to `max`, with ±20 % jitter so that many devices
/// behind one gateway do not reconnect in lock step.
#[derive(Debug, Clone)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    current: Duration,
    seed: u64,
}

impl Backoff {
    pub fn new(initial: Duration, max: Duration) -> Self {
        let initial = initial.max(Duration::from_millis(1));
        Backoff {
            initial,
            max: max.max(initial),
            current: initial,
            seed: 0x9E37_79B9_7F4A_7C15,
        }
    }

    /// The next delay to wait before reconnecting.
    pub fn next_delay(&mut self) -> Duration {
        let base = self.current;
        self.current = (self.current * 2).min(self.max);
        // xorshift64: cheap, deterministic, good enough for jitter.
        self.seed ^= self.seed << 13;
        self.seed ^= self.seed >> 7;
        self.seed ^= self.seed << 17;
        let permille = 800 + self.seed % 401; // 0.8 ..= 1.2
        base * u32::try_from(permille).unwrap_or(1000) / 1000
    }

    /// After a successful connect.
    pub fn reset(&mut self) {
        self.current = self.initial;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_up_to_the_cap_with_bounded_jitter() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
        let d: Vec<u128> = (0..8).map(|_| b.next_delay().as_millis()).collect();
        let bases = [100u128, 200, 400, 800, 1600, 2000, 2000, 2000];
        for (got, base) in d.iter().zip(bases) {
            assert!(
                *got >= base * 8 / 10 && *got <= base * 12 / 10,
                "{got} vs {base}"
            );
        }
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(120));
    }
}
