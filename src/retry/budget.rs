//! The retry budget: retries as a bounded fraction of first attempts.

use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use super::ConfigError;

/// How many slots a window is cut into: counts leave the budget one tenth of a window at a time.
const SLOTS: usize = 10;

/// A budget that allows, over a sliding window, at most `floor + ratio × first attempts` retries.
///
/// Every first attempt (every call of the service) *deposits*; every retry must *withdraw*, and
/// a retry that the budget cannot pay for is not made: the caller gets the last result. Counts
/// are kept in ten slots of `window / 10`, so they leave the budget between 0.9 and 1 window after
/// they were made. Within any such run of ten slots, `retries ≤ floor + ratio × first attempts`.
///
/// Clones share one budget (an `Arc` inside): give the same budget to several layers to bound
/// their retries together. The default allows 10 retries per 10 s window plus one retry for
/// every five first attempts (`ratio` 0.2), like Finagle's and tower's defaults.
///
/// Why not tower's [`TpsBudget`]? It is the same idea, but it quantizes the ratio
/// to `1/n` (a ratio of 0.3 becomes one retry in three, 0.15 one in six), which lets more retries
/// through than configured; its floor is an integer per second over whole seconds; and it panics
/// on bad settings instead of returning an error. This budget keeps the exact ratio, takes the
/// floor per window and reports bad settings as [`ConfigError`].
///
/// [`TpsBudget`]: https://docs.rs/tower/0.5/tower/retry/budget/tps_budget/struct.TpsBudget.html
///
/// ```
/// use std::time::Duration;
/// use bedrock_throttle::retry::RetryBudget;
///
/// // No floor, one retry for every two first attempts.
/// let budget = RetryBudget::new(Duration::from_secs(10), 0, 0.5)?;
/// assert!(!budget.withdraw()); // nothing deposited yet
/// budget.deposit();
/// budget.deposit();
/// assert!(budget.withdraw());
/// assert!(!budget.withdraw());
///
/// assert!(RetryBudget::new(Duration::from_secs(10), 0, f64::NAN).is_err());
/// # Ok::<(), bedrock_throttle::retry::ConfigError>(())
/// ```
#[derive(Clone)]
pub struct RetryBudget {
    shared: Arc<Shared>,
}

struct Shared {
    window: Duration,
    slot: Duration,
    floor: u32,
    ratio: f64,
    ring: Mutex<Ring>,
}

#[derive(Default)]
struct Ring {
    slots: [Slot; SLOTS],
    /// The slot that counts now.
    head: usize,
    /// When the head slot began; `None` until the budget is first used, so that a budget built
    /// outside a runtime reads tokio's (possibly paused) clock only once it is used.
    head_start: Option<Instant>,
}

#[derive(Default, Clone, Copy)]
struct Slot {
    deposits: u64,
    withdrawals: u64,
}

impl RetryBudget {
    /// A budget that allows `floor + ratio × first attempts` retries over `window`.
    ///
    /// - `window`: how long a first attempt or a retry counts (at least 1 ms).
    /// - `floor`: retries allowed per window whatever the traffic, so a client that sends few
    ///   requests can still retry.
    /// - `ratio`: retries allowed per first attempt (0.2: one retry for every five calls; 0: only
    ///   the floor).
    ///
    /// # Errors
    /// [`ConfigError::WindowTooShort`] for a window under 1 ms and
    /// [`ConfigError::InvalidRatio`] for a NaN, infinite or negative ratio.
    pub fn new(window: Duration, floor: u32, ratio: f64) -> Result<Self, ConfigError> {
        if window < Duration::from_millis(1) {
            return Err(ConfigError::WindowTooShort(window));
        }
        if !ratio.is_finite() || ratio < 0.0 {
            return Err(ConfigError::InvalidRatio(ratio));
        }
        Ok(Self {
            shared: Arc::new(Shared {
                window,
                slot: window / SLOTS as u32,
                floor,
                ratio,
                ring: Mutex::new(Ring::default()),
            }),
        })
    }

    /// How long a first attempt or a retry counts.
    pub fn window(&self) -> Duration {
        self.shared.window
    }

    /// Retries allowed per window whatever the traffic.
    pub fn floor(&self) -> u32 {
        self.shared.floor
    }

    /// Retries allowed per first attempt.
    pub fn ratio(&self) -> f64 {
        self.shared.ratio
    }

    /// Records a first attempt. The retry layer calls this once per call of its service.
    pub fn deposit(&self) {
        self.with_ring(|ring| ring.slots[ring.head].deposits += 1);
    }

    /// Takes one retry from the budget: `true` if the budget allows it (and it is now counted),
    /// `false` if it does not (and nothing is counted).
    pub fn withdraw(&self) -> bool {
        let (floor, ratio) = (self.shared.floor, self.shared.ratio);
        self.with_ring(|ring| {
            let (deposits, withdrawals) = ring.totals();
            // u64 → f64 loses precision only above 2^53 counts per window.
            let allowed = f64::from(floor) + ratio * deposits as f64;
            if (withdrawals + 1) as f64 <= allowed {
                ring.slots[ring.head].withdrawals += 1;
                true
            } else {
                false
            }
        })
    }

    /// How many retries the budget would allow right now.
    pub fn remaining(&self) -> u64 {
        let (floor, ratio) = (self.shared.floor, self.shared.ratio);
        self.with_ring(|ring| {
            let (deposits, withdrawals) = ring.totals();
            let allowed = (f64::from(floor) + ratio * deposits as f64).floor();
            // `as` saturates for values above u64::MAX.
            (allowed as u64).saturating_sub(withdrawals)
        })
    }

    fn with_ring<T>(&self, f: impl FnOnce(&mut Ring) -> T) -> T {
        let now = Instant::now();
        // A poisoned lock means a panic elsewhere while holding it; the counts are still counts.
        let mut ring = self
            .shared
            .ring
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        ring.advance(now, self.shared.slot);
        f(&mut ring)
    }
}

impl Ring {
    /// Moves the head to the slot of `now`, clearing the slots it passes.
    fn advance(&mut self, now: Instant, slot: Duration) {
        let Some(start) = self.head_start else {
            self.head_start = Some(now);
            return;
        };
        let elapsed = now.saturating_duration_since(start);
        let steps = elapsed.as_nanos() / slot.as_nanos();
        if steps == 0 {
            return;
        }
        if steps >= SLOTS as u128 {
            self.slots = [Slot::default(); SLOTS];
        } else {
            for _ in 0..steps {
                self.head = (self.head + 1) % SLOTS;
                self.slots[self.head] = Slot::default();
            }
        }
        // Keep slot boundaries aligned to the first use. The remainder is below one slot (at
        // most the window, which fits a u64 of nanoseconds for any window up to 584 years).
        let rest = elapsed.as_nanos() % slot.as_nanos();
        self.head_start = Some(now - Duration::from_nanos(u64::try_from(rest).unwrap_or(0)));
    }

    fn totals(&self) -> (u64, u64) {
        self.slots.iter().fold((0, 0), |(d, w), slot| {
            (
                d.saturating_add(slot.deposits),
                w.saturating_add(slot.withdrawals),
            )
        })
    }
}

impl Default for RetryBudget {
    /// 10 retries per 10 s window, plus one for every five first attempts.
    fn default() -> Self {
        Self {
            shared: Arc::new(Shared {
                window: Duration::from_secs(10),
                slot: Duration::from_secs(1),
                floor: 10,
                ratio: 0.2,
                ring: Mutex::new(Ring::default()),
            }),
        }
    }
}

impl fmt::Debug for RetryBudget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RetryBudget")
            .field("window", &self.shared.window)
            .field("floor", &self.shared.floor)
            .field("ratio", &self.shared.ratio)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn budget(floor: u32, ratio: f64) -> RetryBudget {
        RetryBudget::new(Duration::from_secs(10), floor, ratio).unwrap()
    }

    #[tokio::test(start_paused = true)]
    async fn floor_alone_allows_floor_retries_per_window() {
        let b = budget(3, 0.0);
        for _ in 0..100 {
            b.deposit();
        }
        assert_eq!(b.remaining(), 3);
        assert!(b.withdraw() && b.withdraw() && b.withdraw());
        assert!(!b.withdraw());
        tokio::time::advance(Duration::from_secs(10)).await;
        assert!(b.withdraw());
    }

    #[tokio::test(start_paused = true)]
    async fn ratio_is_exact() {
        // 0.3 must not become "one in three".
        let b = budget(0, 0.3);
        for _ in 0..10 {
            b.deposit();
        }
        let granted = (0..10).filter(|_| b.withdraw()).count();
        assert_eq!(granted, 3);
    }

    #[tokio::test(start_paused = true)]
    async fn counts_expire_slot_by_slot() {
        let b = budget(0, 1.0);
        b.deposit(); // t = 0
        tokio::time::advance(Duration::from_secs(5)).await;
        b.deposit(); // t = 5
        tokio::time::advance(Duration::from_secs(5)).await;
        // t = 10: the first deposit has left the window, the second has not.
        assert_eq!(b.remaining(), 1);
        assert!(b.withdraw());
        assert!(!b.withdraw());
        tokio::time::advance(Duration::from_secs(5)).await;
        // t = 15: the second deposit has left; the withdrawal (t = 10) still counts.
        assert_eq!(b.remaining(), 0);
        tokio::time::advance(Duration::from_secs(3600)).await;
        b.deposit();
        assert!(b.withdraw());
    }

    #[tokio::test(start_paused = true)]
    async fn clones_share_counts() {
        let a = budget(1, 0.0);
        let b = a.clone();
        assert!(a.withdraw());
        assert!(!b.withdraw());
    }

    #[test]
    fn invalid_settings_are_rejected() {
        let w = Duration::from_secs(10);
        for ratio in [f64::NAN, -0.1, f64::INFINITY, f64::NEG_INFINITY] {
            assert!(matches!(
                RetryBudget::new(w, 1, ratio),
                Err(ConfigError::InvalidRatio(_))
            ));
        }
        assert!(matches!(
            RetryBudget::new(Duration::ZERO, 1, 0.2),
            Err(ConfigError::WindowTooShort(_))
        ));
        assert!(RetryBudget::new(Duration::from_millis(1), 0, 0.0).is_ok());
    }
}
