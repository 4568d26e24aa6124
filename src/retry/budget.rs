//! The retry budget: retries as a bounded fraction of first attempts.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
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
/// they were made. The guarantee is exact: a retry is granted only if, counting it, the retries in
/// the ten slots ending at its own slot are at most `floor + ratio × first attempts` in those
/// slots, however many threads and clones deposit and withdraw at once (no lock is taken: every
/// operation is a few atomic loads and one compare-and-swap).
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

/// The budget's state, shared by every clone, without a lock: every first attempt and every
/// retry of every clone passes here, so a mutex would serialise all of them on one cache line
/// and park threads under contention.
///
/// Time is cut into slots of `window / 10`, numbered from the budget's first use (the slot's
/// *epoch*). Each counter is one `AtomicU64` packing an epoch (the high [`EPOCH_BITS`]) with a
/// count (the low [`COUNT_BITS`]), so that an epoch and its count always change together:
///
/// - `deposits[e % 10]` counts the first attempts of slot `e`. A deposit in a slot still tagged
///   with an older epoch replaces it (that slot has left the window).
/// - `head` counts the retries of the newest slot any withdrawal has reached. Every withdrawal
///   is a compare-and-swap on this one word, so withdrawals are totally ordered and each one
///   sees every earlier one: that is what keeps the guarantee exact, not just approximately.
/// - `past[e % 10]` holds the final count of an older slot `e`. A withdrawal that moves `head`
///   to a new epoch publishes the old epoch's count there *before* its compare-and-swap, so
///   whoever sees the new `head` also sees the old count (`fetch_max`: counts only grow, and a
///   later epoch is larger, so a stale writer can never replace a newer value).
///
/// A withdrawal checks the count of retries in the ten slots ending at its own, plus one,
/// against `floor + ratio × deposits` in the same slots, and succeeds only if `head` did not
/// change meanwhile. Deposits are read without ordering against withdrawals: a deposit missed
/// by a concurrent withdrawal only makes that withdrawal stricter, never looser.
struct Shared {
    window: Duration,
    /// Nanoseconds per slot (at least 1).
    slot_nanos: u128,
    floor: u32,
    ratio: f64,
    /// When the budget was first used: read from tokio's (possibly paused) clock at first use,
    /// not at construction, so that a budget built outside a runtime works under a paused one.
    origin: OnceLock<Instant>,
    deposits: [AtomicU64; SLOTS],
    head: AtomicU64,
    past: [AtomicU64; SLOTS],
}

/// Bits of a packed counter that hold the slot's epoch: 2^44 slots are 55 years at the shortest
/// window (1 ms, slots of 100 µs). Beyond that the epoch stays at its largest value, so counts
/// stop expiring and the budget only gets stricter.
const EPOCH_BITS: u32 = 44;
/// Bits that hold the count: about a million first attempts or retries per slot. A slot that is
/// full stops counting deposits (stricter) and refuses retries (stricter).
const COUNT_BITS: u32 = 64 - EPOCH_BITS;
const MAX_COUNT: u64 = (1 << COUNT_BITS) - 1;
const MAX_EPOCH: u64 = (1 << EPOCH_BITS) - 1;

const fn pack(epoch: u64, count: u64) -> u64 {
    (epoch << COUNT_BITS) | count
}

const fn unpack(word: u64) -> (u64, u64) {
    (word >> COUNT_BITS, word & MAX_COUNT)
}

/// Whether slot `epoch` is one of the ten slots ending at `at`.
const fn in_window(epoch: u64, at: u64) -> bool {
    epoch <= at && at - epoch < SLOTS as u64
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
        Ok(Self::build(window, floor, ratio))
    }

    fn build(window: Duration, floor: u32, ratio: f64) -> Self {
        Self {
            shared: Arc::new(Shared {
                window,
                slot_nanos: (window / SLOTS as u32).as_nanos().max(1),
                floor,
                ratio,
                origin: OnceLock::new(),
                deposits: Default::default(),
                head: AtomicU64::new(0),
                past: Default::default(),
            }),
        }
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
        self.shared.deposit(self.shared.epoch(Instant::now()));
    }

    /// Takes one retry from the budget: `true` if the budget allows it (and it is now counted),
    /// `false` if it does not (and nothing is counted).
    pub fn withdraw(&self) -> bool {
        self.shared
            .withdraw(self.shared.epoch(Instant::now()))
            .is_some()
    }

    /// How many retries the budget would allow right now.
    pub fn remaining(&self) -> u64 {
        self.shared.remaining(self.shared.epoch(Instant::now()))
    }
}

impl Shared {
    /// The slot of `now`.
    fn epoch(&self, now: Instant) -> u64 {
        let origin = *self.origin.get_or_init(|| now);
        let slots = now.saturating_duration_since(origin).as_nanos() / self.slot_nanos;
        u64::try_from(slots).map_or(MAX_EPOCH, |e| e.min(MAX_EPOCH))
    }

    /// Counts a first attempt in slot `now` (or in the slot's newer epoch, if a thread with a
    /// later clock reading got there first). Returns the epoch it was counted in.
    fn deposit(&self, now: u64) -> Option<u64> {
        let cell = &self.deposits[(now % SLOTS as u64) as usize];
        let mut word = cell.load(Ordering::Acquire);
        loop {
            let (epoch, count) = unpack(word);
            let (at, count) = if epoch >= now {
                (epoch, count)
            } else {
                (now, 0)
            };
            if count == MAX_COUNT {
                return None;
            }
            match cell.compare_exchange_weak(
                word,
                pack(at, count + 1),
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return Some(at),
                Err(current) => word = current,
            }
        }
    }

    /// First attempts counted in the ten slots ending at `at`. Slots tagged with another epoch
    /// have left the window (or belong to a later one) and count nothing.
    fn deposits_until(&self, at: u64) -> u64 {
        self.deposits
            .iter()
            .map(|cell| unpack(cell.load(Ordering::Acquire)))
            .filter(|&(epoch, _)| in_window(epoch, at))
            .fold(0u64, |sum, (_, count)| sum.saturating_add(count))
    }

    /// Retries in the ten slots ending at `at`, given the `head` word just read: the head's
    /// count if its epoch is in the window, plus the published counts of older slots.
    fn withdrawals_until(&self, at: u64, head: u64) -> u64 {
        let (head_epoch, head_count) = unpack(head);
        let mut sum = if in_window(head_epoch, at) {
            head_count
        } else {
            0
        };
        for cell in &self.past {
            let (epoch, count) = unpack(cell.load(Ordering::Acquire));
            // The head's own epoch is counted from `head` (a published copy may be older).
            if epoch != head_epoch && epoch != at && in_window(epoch, at) {
                sum = sum.saturating_add(count);
            }
        }
        sum
    }

    fn allowed(&self, deposits: u64) -> f64 {
        // u64 → f64 loses precision only above 2^53 counts per window.
        f64::from(self.floor) + self.ratio * deposits as f64
    }

    /// Takes one retry in slot `now` (or in the newer slot the head has reached): the epoch it
    /// was counted in, or `None` when the budget does not allow it.
    fn withdraw(&self, now: u64) -> Option<u64> {
        let mut head = self.head.load(Ordering::Acquire);
        loop {
            let (epoch, count) = unpack(head);
            let (at, count_at) = if epoch >= now {
                (epoch, count)
            } else {
                // Moving the head on: publish the old slot's count before the swap, so whoever
                // sees the new head also sees it.
                self.past[(epoch % SLOTS as u64) as usize].fetch_max(head, Ordering::AcqRel);
                (now, 0)
            };
            let withdrawals = self.withdrawals_until(at, head);
            let allowed = self.allowed(self.deposits_until(at));
            if count_at == MAX_COUNT || (withdrawals.saturating_add(1)) as f64 > allowed {
                return None;
            }
            match self.head.compare_exchange_weak(
                head,
                pack(at, count_at + 1),
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return Some(at),
                Err(current) => head = current,
            }
        }
    }

    fn remaining(&self, now: u64) -> u64 {
        let head = self.head.load(Ordering::Acquire);
        let at = unpack(head).0.max(now);
        let allowed = self.allowed(self.deposits_until(at)).floor();
        // `as` saturates for values above u64::MAX.
        (allowed as u64).saturating_sub(self.withdrawals_until(at, head))
    }
}

impl Default for RetryBudget {
    /// 10 retries per 10 s window, plus one for every five first attempts.
    fn default() -> Self {
        Self::build(Duration::from_secs(10), 10, 0.2)
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
    fn packing_round_trips() {
        assert_eq!(unpack(pack(MAX_EPOCH, MAX_COUNT)), (MAX_EPOCH, MAX_COUNT));
        assert_eq!(unpack(pack(7, 3)), (7, 3));
        assert!(
            pack(8, 0) > pack(7, MAX_COUNT),
            "a later epoch always wins fetch_max"
        );
    }

    /// Many threads deposit and withdraw at once, each with its own clock (so some read a slot
    /// that another thread has already left); afterwards, for every slot in which a retry was
    /// granted, the retries of the ten slots ending there are within `floor + ratio × first
    /// attempts` of the same slots.
    #[test]
    fn the_guarantee_holds_under_concurrency() {
        const THREADS: u64 = 4;
        const OPS: usize = 20_000;
        for (floor, ratio) in [(0, 0.2), (3, 0.5), (10, 0.0), (1, 1.0)] {
            let budget = RetryBudget::new(Duration::from_millis(10), floor, ratio).unwrap();
            let base = Instant::now();
            budget.shared.remaining(budget.shared.epoch(base));
            let logs: Vec<Vec<(u64, bool)>> = std::thread::scope(|scope| {
                let handles: Vec<_> = (0..THREADS)
                    .map(|t| {
                        let shared = &budget.shared;
                        scope.spawn(move || {
                            let mut rng = fastrand::Rng::with_seed(t * 7 + 1);
                            let mut now = base;
                            let mut log = Vec::with_capacity(OPS);
                            for _ in 0..OPS {
                                now += Duration::from_micros(rng.u64(0..300));
                                let epoch = shared.epoch(now);
                                // Withdraw as often as deposit, so the budget is always tight.
                                if rng.bool() {
                                    if let Some(at) = shared.deposit(epoch) {
                                        log.push((at, false));
                                    }
                                } else if let Some(at) = shared.withdraw(epoch) {
                                    log.push((at, true));
                                }
                            }
                            log
                        })
                    })
                    .collect();
                handles.into_iter().map(|h| h.join().unwrap()).collect()
            });
            let mut deposits = std::collections::BTreeMap::<u64, u64>::new();
            let mut withdrawals = std::collections::BTreeMap::<u64, u64>::new();
            for (at, withdrawal) in logs.into_iter().flatten() {
                let map = if withdrawal {
                    &mut withdrawals
                } else {
                    &mut deposits
                };
                *map.entry(at).or_default() += 1;
            }
            let sum = |m: &std::collections::BTreeMap<u64, u64>, end: u64| -> u64 {
                m.range(end.saturating_sub(SLOTS as u64 - 1)..=end)
                    .map(|(_, n)| n)
                    .sum()
            };
            assert!(withdrawals.len() > 10, "retries were granted");
            for &end in withdrawals.keys() {
                let (w, d) = (sum(&withdrawals, end), sum(&deposits, end));
                assert!(
                    w as f64 <= f64::from(floor) + ratio * d as f64,
                    "floor {floor}, ratio {ratio}: {w} retries and {d} first attempts in the ten slots ending at {end}"
                );
            }
        }
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
