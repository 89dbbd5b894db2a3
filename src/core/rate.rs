//! A token bucket for byte rates (`--transfer-limit-mb`): every outgoing
//! partition transfer of a node takes its messages' bytes from one bucket.
//!
//! Time is passed in as nanoseconds since any fixed origin (the caller's
//! clock), so the rule is testable without one. A sender may go into debt:
//! [`TokenBucket::take`] always accepts the bytes and answers how long the
//! caller must wait before sending them. A message larger than the burst
//! therefore still goes, late by its size over the rate, and concurrent
//! senders queue behind each other's debt in the order they asked.

/// Refills at `rate` bytes per second up to `burst` bytes.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    rate: f64,
    burst: f64,
    /// Bytes that may be sent now; negative while in debt.
    tokens: f64,
    /// When `tokens` was last brought up to date (nanoseconds).
    updated: u64,
}

/// How much a full bucket holds, in seconds of its rate: enough to smooth
/// the first messages, little enough that the cap holds over any second.
pub const BURST_SECONDS: f64 = 0.1;

impl TokenBucket {
    /// A bucket refilled at `bytes_per_second` (above 0), full at `now`.
    pub fn new(bytes_per_second: u64, now: u64) -> TokenBucket {
        assert!(bytes_per_second > 0, "a token bucket needs a rate above 0");
        let rate = bytes_per_second as f64;
        let burst = rate * BURST_SECONDS;
        TokenBucket { rate, burst, tokens: burst, updated: now }
    }

    /// Takes `bytes` at `now`; returns the nanoseconds to wait before
    /// sending them (0: send now). A clock that goes back is taken as
    /// standing still.
    pub fn take(&mut self, bytes: u64, now: u64) -> u64 {
        let elapsed = now.saturating_sub(self.updated) as f64 / 1e9;
        self.updated = self.updated.max(now);
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        self.tokens -= bytes as f64;
        if self.tokens >= 0.0 { 0 } else { (-self.tokens / self.rate * 1e9).ceil() as u64 }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: u64 = 1_000_000_000;

    #[test]
    fn the_burst_goes_at_once_then_bytes_wait_their_share_of_the_rate() {
        let mut b = TokenBucket::new(1000, 0);
        assert_eq!(b.take(100, 0), 0, "a full bucket holds a tenth of a second");
        // 100 bytes more at 1000 B/s: a tenth of a second of debt.
        assert_eq!(b.take(100, 0), SECOND / 10);
        // A second caller queues behind the first one's debt.
        assert_eq!(b.take(100, 0), 2 * SECOND / 10);
    }

    #[test]
    fn time_refills_up_to_the_burst_only() {
        let mut b = TokenBucket::new(1000, 0);
        assert_eq!(b.take(100, 0), 0);
        // An idle hour refills a tenth of a second's worth, no more.
        assert_eq!(b.take(100, 3600 * SECOND), 0);
        assert_eq!(b.take(1, 3600 * SECOND), SECOND / 1000);
        // Half a second later the debt is paid and 100 bytes are back.
        assert_eq!(b.take(100, 3600 * SECOND + SECOND / 2), 0);
    }

    #[test]
    fn a_message_above_the_burst_goes_late_by_its_size() {
        let mut b = TokenBucket::new(1_000_000, 0);
        // 1 MB at 1 MB/s with 0.1 MB banked: 0.9 s.
        assert_eq!(b.take(1_000_000, 0), 9 * SECOND / 10);
    }

    #[test]
    fn the_long_run_rate_is_the_cap() {
        // Sending whenever allowed, 64 KiB at a time, for a simulated 10 s.
        let mut b = TokenBucket::new(5_000_000, 0);
        let (mut now, mut sent) = (0u64, 0u64);
        while now < 10 * SECOND {
            now += b.take(65_536, now);
            sent += 65_536;
        }
        let rate = sent as f64 / 10.0;
        assert!((4_900_000.0..5_600_000.0).contains(&rate), "{rate}");
    }

    #[test]
    fn a_clock_going_back_stands_still() {
        let mut b = TokenBucket::new(1000, SECOND);
        assert_eq!(b.take(100, SECOND), 0);
        assert_eq!(b.take(100, 0), SECOND / 10);
    }
}
