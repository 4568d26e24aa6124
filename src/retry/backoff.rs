//! Exponential backoff with full jitter.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::ConfigError;

/// Exponential backoff with full jitter: before retry `n` (1 for the first retry) the layer waits
/// a uniformly random delay in `0 ..= min(initial × factor^(n-1), max)`.
///
/// The defaults are the AWS SDK's: 1 s initial, factor 2, capped at 20 s, so the caps of the
/// first retries are 1 s, 2 s, 4 s, 8 s, 16 s, then 20 s.
///
/// ```
/// use std::time::Duration;
/// use bedrock_throttle::retry::Backoff;
///
/// let backoff = Backoff::new(Duration::from_millis(100), 3.0, Duration::from_secs(1))?;
/// assert_eq!(backoff.cap(1), Duration::from_millis(100));
/// assert_eq!(backoff.cap(3), Duration::from_millis(900));
/// assert_eq!(backoff.cap(4), Duration::from_secs(1)); // 2.7 s, capped
///
/// let mut rng = fastrand::Rng::with_seed(7);
/// assert!(backoff.delay(2, &mut rng) <= Duration::from_millis(300));
///
/// assert!(Backoff::new(Duration::from_secs(1), f64::NAN, Duration::from_secs(20)).is_err());
/// # Ok::<(), bedrock_throttle::retry::ConfigError>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Backoff {
    initial: Duration,
    factor: f64,
    max: Duration,
}

impl Backoff {
    /// A backoff whose first cap is `initial`, multiplied by `factor` for each further retry and
    /// never above `max`.
    ///
    /// # Errors
    /// [`ConfigError::ZeroInitialDelay`] if `initial` is zero,
    /// [`ConfigError::InitialAboveMax`] if `initial > max`, and
    /// [`ConfigError::InvalidFactor`] if `factor` is NaN, infinite or below 1 (a shrinking backoff
    /// would retry faster the longer the throttling lasts).
    pub fn new(initial: Duration, factor: f64, max: Duration) -> Result<Self, ConfigError> {
        if initial.is_zero() {
            return Err(ConfigError::ZeroInitialDelay);
        }
        if initial > max {
            return Err(ConfigError::InitialAboveMax { initial, max });
        }
        if !factor.is_finite() || factor < 1.0 {
            return Err(ConfigError::InvalidFactor(factor));
        }
        Ok(Self {
            initial,
            factor,
            max,
        })
    }

    /// The cap of the first retry's delay.
    pub fn initial(&self) -> Duration {
        self.initial
    }

    /// How much the cap grows from one retry to the next.
    pub fn factor(&self) -> f64 {
        self.factor
    }

    /// The largest cap.
    pub fn max(&self) -> Duration {
        self.max
    }

    /// The upper bound of the delay before retry `retry` (1 for the first retry; 0 is read as
    /// 1): `min(initial × factor^(retry-1), max)`.
    pub fn cap(&self, retry: u32) -> Duration {
        let exponent = retry.saturating_sub(1);
        // `factor ≥ 1` and `initial > 0`, so the product is positive; an overflow to infinity
        // simply loses to `max`.
        let grown = self.initial.as_secs_f64() * self.factor.powf(f64::from(exponent));
        if grown >= self.max.as_secs_f64() {
            self.max
        } else {
            // `grown` is finite and below `max` here, so the conversion cannot fail; the result
            // is never above `max` even after rounding.
            Duration::try_from_secs_f64(grown).map_or(self.max, |d| d.min(self.max))
        }
    }

    /// A delay for retry `retry`, drawn uniformly from `0 ..= cap(retry)` with `rng`.
    pub fn delay(&self, retry: u32, rng: &mut fastrand::Rng) -> Duration {
        let cap = nanos(self.cap(retry));
        Duration::from_nanos(rng.u64(0..=cap))
    }
}

impl Default for Backoff {
    /// 1 s initial, factor 2, capped at 20 s.
    fn default() -> Self {
        Self {
            initial: Duration::from_secs(1),
            factor: 2.0,
            max: Duration::from_secs(20),
        }
    }
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// Where the jitter comes from: the thread-local generator (no lock), or one seeded generator
/// shared by every clone of a layer, for reproducible tests.
///
/// Only the seeded variant takes a lock, and only to draw one number. A seed asks for one
/// reproducible sequence across every clone, which is inherently one shared state; production
/// layers (no seed) never touch a mutex here.
#[derive(Debug, Clone, Default)]
pub(crate) enum Jitter {
    #[default]
    ThreadLocal,
    Seeded(Arc<Mutex<fastrand::Rng>>),
}

impl Jitter {
    pub(crate) fn seeded(seed: u64) -> Self {
        Jitter::Seeded(Arc::new(Mutex::new(fastrand::Rng::with_seed(seed))))
    }

    /// A full-jitter delay for retry `retry` of `backoff`.
    pub(crate) fn delay(&self, backoff: &Backoff, retry: u32) -> Duration {
        match self {
            Jitter::ThreadLocal => {
                Duration::from_nanos(fastrand::u64(0..=nanos(backoff.cap(retry))))
            }
            Jitter::Seeded(rng) => {
                // A poisoned lock only means another thread panicked while drawing a number; the
                // generator state is still a valid generator.
                let mut rng = rng.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
                backoff.delay(retry, &mut rng)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_caps_double_up_to_twenty_seconds() {
        let b = Backoff::default();
        let caps: Vec<u64> = (1..=8).map(|n| b.cap(n).as_secs()).collect();
        assert_eq!(caps, [1, 2, 4, 8, 16, 20, 20, 20]);
        assert_eq!(b.cap(0), b.cap(1));
        assert_eq!(b.cap(u32::MAX), Duration::from_secs(20));
    }

    #[test]
    fn invalid_settings_are_rejected() {
        let s = Duration::from_secs;
        assert_eq!(
            Backoff::new(Duration::ZERO, 2.0, s(1)),
            Err(ConfigError::ZeroInitialDelay)
        );
        assert!(matches!(
            Backoff::new(s(2), 2.0, s(1)),
            Err(ConfigError::InitialAboveMax { .. })
        ));
        for factor in [f64::NAN, f64::INFINITY, -1.0, 0.0, 0.5] {
            assert!(matches!(
                Backoff::new(s(1), factor, s(20)),
                Err(ConfigError::InvalidFactor(_))
            ));
        }
        // A constant backoff is allowed.
        assert!(Backoff::new(s(1), 1.0, s(1)).is_ok());
    }

    #[test]
    fn seeded_jitter_is_reproducible() {
        let b = Backoff::default();
        let (a, c) = (Jitter::seeded(42), Jitter::seeded(42));
        let xs: Vec<_> = (1..=10).map(|n| a.delay(&b, n)).collect();
        let ys: Vec<_> = (1..=10).map(|n| c.delay(&b, n)).collect();
        assert_eq!(xs, ys);
    }
}
