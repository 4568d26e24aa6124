//! Error types of the retry layer.
//!
//! The layer adds no failure of its own at run time (the caller always gets the inner service's
//! own response or error), so the only error here is about configuration.

use std::fmt;
use std::time::Duration;

/// A retry setting that cannot work, reported when the [`Backoff`](super::Backoff) or the
/// [`RetryBudget`](super::RetryBudget) is built.
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub enum ConfigError {
    /// The backoff's initial delay is zero, so every retry would start at once.
    ZeroInitialDelay,
    /// The backoff's initial delay is longer than its cap.
    InitialAboveMax {
        /// The initial delay given.
        initial: Duration,
        /// The cap given.
        max: Duration,
    },
    /// The backoff's growth factor is NaN, infinite or below 1.
    InvalidFactor(f64),
    /// The retry budget's ratio is NaN, infinite or negative.
    InvalidRatio(f64),
    /// The retry budget's window is shorter than the 1 ms minimum.
    WindowTooShort(Duration),
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::ZeroInitialDelay => f.write_str(
                "retry backoff: the initial delay is zero, so retries would not back off; \
                 give it a positive duration (the default is 1 s)",
            ),
            ConfigError::InitialAboveMax { initial, max } => write!(
                f,
                "retry backoff: the initial delay ({initial:?}) is longer than the cap ({max:?}); \
                 raise the cap or lower the initial delay"
            ),
            ConfigError::InvalidFactor(factor) => write!(
                f,
                "retry backoff: the growth factor {factor} is not a finite number of at least 1 \
                 (the default is 2)"
            ),
            ConfigError::InvalidRatio(ratio) => write!(
                f,
                "retry budget: the ratio {ratio} is not a finite, non-negative number \
                 (0.2 allows one retry for every five first attempts)"
            ),
            ConfigError::WindowTooShort(window) => write!(
                f,
                "retry budget: the window ({window:?}) is shorter than 1 ms; \
                 give it a window of at least 1 ms (the default is 10 s)"
            ),
        }
    }
}

impl std::error::Error for ConfigError {}
