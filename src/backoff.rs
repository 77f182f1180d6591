//! How long to wait before trying again: exponential backoff with full jitter, shared by the
//! bulk sink, the backfill's reads and the dead-letter writes.

use std::cell::Cell;
use std::time::Duration;

/// Exponential backoff with full jitter: a uniformly random wait in `[0, min(max, base · 2^attempt)]`.
/// `unit` is a random number in `[0, 1)`, passed in so the rule stays a pure function.
pub fn backoff(attempt: u32, base: Duration, max: Duration, unit: f64) -> Duration {
    let ceiling = base
        .saturating_mul(1u32.checked_shl(attempt.min(30)).unwrap_or(u32::MAX))
        .min(max);
    ceiling.mul_f64(unit.clamp(0.0, 1.0))
}

thread_local! {
    static RNG: Cell<u64> = Cell::new(seed());
}

fn seed() -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    nanos | 1
}

/// A uniform random number in `[0, 1)` for backoff jitter (xorshift; quality is not a concern here).
pub fn jitter() -> f64 {
    RNG.with(|cell| {
        let mut x = cell.get();
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        cell.set(x);
        (x >> 11) as f64 / (1u64 << 53) as f64
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_then_caps_and_never_exceeds_the_ceiling() {
        let base = Duration::from_millis(100);
        let max = Duration::from_secs(10);
        assert_eq!(
            backoff(0, base, max, 0.999_999),
            Duration::from_millis(100).mul_f64(0.999_999)
        );
        assert_eq!(backoff(3, base, max, 0.5), Duration::from_millis(400));
        assert_eq!(backoff(20, base, max, 0.5), Duration::from_secs(5));
        assert_eq!(backoff(u32::MAX, base, max, 1.0), max);
        assert_eq!(backoff(5, base, max, 0.0), Duration::ZERO);
    }

    #[test]
    fn jitter_stays_in_the_unit_interval() {
        for _ in 0..1_000 {
            let unit = jitter();
            assert!((0.0..1.0).contains(&unit), "{unit}");
        }
    }
}
