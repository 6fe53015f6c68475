//! When and how long to wait before trying an upstream call again.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

#[derive(Debug, Clone)]
pub struct RetryPolicy {
    /// Retries after the first attempt.
    pub max_retries: u32,
    /// The first backoff; doubles per retry.
    pub base_delay: Duration,
    pub max_delay: Duration,
    /// A server's Retry-After is honoured up to this long (longer ones are capped).
    pub max_retry_after: Duration,
}

impl RetryPolicy {
    pub fn new(max_retries: u32) -> Self {
        Self {
            max_retries,
            base_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(8),
            max_retry_after: Duration::from_secs(30),
        }
    }

    /// The wait before retry number `retry` (0-based): the server's Retry-After when given,
    /// else exponential backoff with "equal jitter" (half fixed, half random), so clients
    /// that failed together do not retry together.
    pub fn delay(&self, retry: u32, retry_after: Option<Duration>) -> Duration {
        if let Some(ra) = retry_after {
            return ra.min(self.max_retry_after);
        }
        let exp = self
            .base_delay
            .saturating_mul(1u32 << retry.min(16))
            .min(self.max_delay);
        let half = exp / 2;
        half + half.mul_f64(jitter_unit())
    }
}

/// HTTP statuses worth retrying: rate limits and server-side failures.
pub fn is_retryable_status(status: u16) -> bool {
    status == 429 || status == 408 || (500..=599).contains(&status)
}

/// `Retry-After`: delay-seconds (fractions accepted) or an HTTP-date (RFC 9110 §10.2.3),
/// which is turned into the wait from now (zero for a date in the past).
pub fn parse_retry_after(value: &str) -> Option<Duration> {
    parse_retry_after_at(value, SystemTime::now())
}

/// [`parse_retry_after`] with an explicit clock.
pub fn parse_retry_after_at(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<f64>() {
        // Beyond `Duration::MAX` (about 5.8e11 years) is as good as forever.
        return (secs.is_finite() && secs >= 0.0)
            .then(|| Duration::try_from_secs_f64(secs).unwrap_or(Duration::MAX));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

/// A number in [0, 1) that differs between calls; quality is irrelevant, spread is enough.
fn jitter_unit() -> f64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    let mut x = nanos ^ COUNTER.fetch_add(0x9E37_79B9_7F4A_7C15, Ordering::Relaxed);
    // splitmix64 finaliser
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^= x >> 31;
    (x >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_is_capped_and_jittered() {
        let p = RetryPolicy::new(5);
        for retry in 0..8 {
            let d = p.delay(retry, None);
            let exp = (p.base_delay * (1 << retry)).min(p.max_delay);
            assert!(d >= exp / 2 && d <= exp, "retry {retry}: {d:?}");
        }
        assert_eq!(
            p.delay(0, Some(Duration::from_secs(2))),
            Duration::from_secs(2)
        );
        assert_eq!(
            p.delay(0, Some(Duration::from_secs(3600))),
            p.max_retry_after
        );
    }

    #[test]
    fn statuses_and_retry_after() {
        assert!(is_retryable_status(429) && is_retryable_status(503));
        assert!(!is_retryable_status(400) && !is_retryable_status(401));
        assert_eq!(parse_retry_after(" 2 "), Some(Duration::from_secs(2)));
        assert_eq!(parse_retry_after("-1"), None);
        assert_eq!(parse_retry_after("soon"), None);
        assert_eq!(parse_retry_after("NaN"), None);
        // Found by fuzzing: a number of seconds beyond `Duration` panicked.
        assert_eq!(
            parse_retry_after("33333333333333333333"),
            Some(Duration::MAX)
        );
        // HTTP-date: the wait from now, zero once it has passed; all three RFC formats.
        let now = httpdate::parse_http_date("Wed, 21 Oct 2015 07:28:00 GMT").unwrap();
        let at = |v| parse_retry_after_at(v, now);
        assert_eq!(
            at("Wed, 21 Oct 2015 07:28:07 GMT"),
            Some(Duration::from_secs(7))
        );
        assert_eq!(
            at("Wednesday, 21-Oct-15 07:29:00 GMT"),
            Some(Duration::from_secs(60))
        );
        assert_eq!(at("Wed Oct 21 07:28:03 2015"), Some(Duration::from_secs(3)));
        assert_eq!(at("Tue, 20 Oct 2015 07:28:00 GMT"), Some(Duration::ZERO));
        assert_eq!(at("Wed, 32 Oct 2015 07:28:00 GMT"), None);
    }
}
