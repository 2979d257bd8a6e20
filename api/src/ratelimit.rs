//! A token bucket: `burst` tokens, refilled at `rate` per second. It only does the arithmetic;
//! the caller waits for as long as [`TokenBucket::reserve`] says, so the same bucket serves the
//! control plane's event recorder and the node agent's.

use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
pub struct TokenBucket {
    rate: f64,
    burst: f64,
    /// Below zero when tokens are reserved ahead of their refill.
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    /// A full bucket at `now`. A `rate` of zero (or less) means no limit, as the kubelet's
    /// `eventRecordQPS` does; a `burst` of zero is taken as one.
    pub fn new(rate: f64, burst: u32, now: Instant) -> Self {
        let burst = f64::from(burst.max(1));
        Self {
            rate,
            burst,
            tokens: burst,
            last: now,
        }
    }

    /// Takes one token at `now`: returns how long to wait before using it (zero while the
    /// burst lasts). Reservations queue: each one waits for its own token's refill.
    pub fn reserve(&mut self, now: Instant) -> Duration {
        if self.rate <= 0.0 || self.rate.is_nan() {
            return Duration::ZERO;
        }
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        self.last = self.last.max(now);
        self.tokens -= 1.0;
        if self.tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::try_from_secs_f64(-self.tokens / self.rate).unwrap_or(Duration::MAX)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_is_free_then_the_rate_holds() {
        let start = Instant::now();
        let mut bucket = TokenBucket::new(10.0, 5, start);
        for _ in 0..5 {
            assert_eq!(bucket.reserve(start), Duration::ZERO);
        }
        // Reserved at once, the next ten wait 0.1 s, 0.2 s, … 1 s.
        let waits: Vec<u128> = (0..10).map(|_| bucket.reserve(start).as_millis()).collect();
        assert_eq!(waits, [100, 200, 300, 400, 500, 600, 700, 800, 900, 1000]);
    }

    #[test]
    fn tokens_come_back_with_time_up_to_the_burst() {
        let start = Instant::now();
        let mut bucket = TokenBucket::new(2.0, 3, start);
        for _ in 0..3 {
            bucket.reserve(start);
        }
        assert_eq!(bucket.reserve(start), Duration::from_millis(500));
        // An hour later the bucket is full again, not fuller.
        let later = start + Duration::from_secs(3600);
        for _ in 0..3 {
            assert_eq!(bucket.reserve(later), Duration::ZERO);
        }
        assert_eq!(bucket.reserve(later), Duration::from_millis(500));
    }

    #[test]
    fn a_zero_rate_is_no_limit_and_a_zero_burst_is_one() {
        let start = Instant::now();
        let mut unlimited = TokenBucket::new(0.0, 1, start);
        for _ in 0..1000 {
            assert_eq!(unlimited.reserve(start), Duration::ZERO);
        }
        let mut one = TokenBucket::new(1.0, 0, start);
        assert_eq!(one.reserve(start), Duration::ZERO);
        assert_eq!(one.reserve(start), Duration::from_secs(1));
        let mut slow = TokenBucket::new(f64::MIN_POSITIVE, 1, start);
        slow.reserve(start);
        assert_eq!(slow.reserve(start), Duration::MAX);
    }
}
