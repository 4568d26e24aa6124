//! The one settings value of a store: windows, margin, waiting bounds, feedback, buckets,
//! quotas, fairness. [`Budget::new`] takes it; as [`BudgetBuilder`] it is also the budget's
//! builder.

use std::collections::HashMap;
use std::fmt;
use std::hash::Hash;
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::time::Duration;

use super::config::KeyConfig;
use super::engine::{Inner, KeyHasher, QuotaFn};
use super::error::ConfigError;
use super::fair::Fairness;
use super::feedback::Aimd;
use super::quota::Quota;
use super::{Budget, DAY};

/// The default resolution of the requests and tokens ledgers.
const DEFAULT_RESOLUTION: Duration = Duration::from_millis(1);

/// The default number of buckets of the day ledger.
const DAY_BUCKETS: u32 = 1_440;

/// The settings of a store, in one value: the window and the day, the expiry margin, the
/// bounds on waiting, the feedback policy, the ledgers' buckets, the quotas (a default quota,
/// per-key quotas, a quota function) and fair shares. [`Budget::new`] takes it (and so does
/// [`BudgetBuilder::build`]: the builder is this value); the shared Redis store takes the
/// same value (`RedisStore::builder(url, settings)`, feature `redis`), and so does the SDK
/// setup (`BedrockThrottle::builder().settings(settings)`, feature `sdk`), so a deployment
/// moves from one store to another without restating its quotas, windows, margin, longest
/// wait or feedback. A store refuses, with [`ConfigError::Unsupported`], a setting it does
/// not implement rather than ignore it (the shared store has no fair shares, queue bound or
/// ledger buckets of its own).
///
/// Every setter sets one thing: none depends on another's order. The dimension setters
/// ([`tokens`](Self::tokens), [`requests`](Self::requests),
/// [`tokens_per_day`](Self::tokens_per_day)) win over [`quota`](Self::quota) on their
/// dimension, whichever comes first.
///
/// ```
/// use std::time::Duration;
/// use bedrock_throttle::budget::{Budget, Quota, Settings};
///
/// let settings: Settings<&str> = Settings::new()
///     .window(Duration::from_secs(60))
///     .tokens(100_000)
///     .quota(Quota::requests(50).with_tokens(1))
///     .max_wait(Duration::from_secs(30));
/// assert_eq!(settings.default_quota(), Quota::requests(50).with_tokens(100_000));
/// let budget = Budget::new(settings)?;
/// # let _ = budget;
/// # Ok::<(), bedrock_throttle::budget::ConfigError>(())
/// ```
#[derive(Clone)]
pub struct Settings<K> {
    /// What the dimension setters set (they win on their dimension).
    quota: Quota,
    /// What [`quota`](Self::quota) set.
    whole: Option<Quota>,
    window: Duration,
    day: Duration,
    per_key: HashMap<K, Quota>,
    quota_fn: Option<QuotaFn<K>>,
    max_wait: Option<Duration>,
    max_queue: Option<usize>,
    /// `None`: not set (zero for the in-process store; the SDK setup has a default of its own).
    margin: Option<Duration>,
    aimd: Option<Aimd>,
    fairness: Option<Fairness>,
    resolution: Option<Duration>,
    day_bucket: Option<Duration>,
}

/// The builder of a [`Budget`] ([`Budget::builder`]): its [`Settings`].
pub type BudgetBuilder<K> = Settings<K>;

impl<K: Clone + Eq + Hash + Send + Sync + 'static> Default for Settings<K> {
    fn default() -> Self {
        Self::new()
    }
}

impl<K: Clone + Eq + Hash + Send + Sync + 'static> Settings<K> {
    /// The defaults: a 60 s window, a 24-hour day, no margin, no bound on waiting, the default
    /// feedback ([`Aimd::default`]), 1 ms and day / 1,440 buckets, no quota (give one).
    pub fn new() -> Self {
        Settings {
            quota: Quota::unlimited(),
            whole: None,
            window: Duration::from_secs(60),
            day: DAY,
            per_key: HashMap::new(),
            quota_fn: None,
            max_wait: None,
            max_queue: None,
            margin: None,
            aimd: Some(Aimd::default()),
            fairness: None,
            resolution: None,
            day_bucket: None,
        }
    }

    /// The quota of keys without their own: [`quota`](Self::quota), with each dimension
    /// the dimension setters set.
    pub fn default_quota(&self) -> Quota {
        let mut quota = self.whole.unwrap_or_default();
        for (dimension, limit) in self.quota.limits() {
            quota = quota.with(dimension, Some(limit));
        }
        quota
    }

    /// The quota of `key`: its own ([`quota_for`](Self::quota_for)), else the
    /// [`quota_fn`](Self::quota_fn)'s, else the [default](Self::default_quota). `None` (or
    /// an unlimited quota) means no limit.
    pub fn quota_of(&self, key: &K) -> Option<Quota> {
        if let Some(&quota) = self.per_key.get(key) {
            return Some(quota);
        }
        match &self.quota_fn {
            Some(f) => f(key),
            None => Some(self.default_quota()),
        }
        .filter(|q| !q.is_unlimited())
    }

    /// The window of the requests and tokens limits.
    pub fn get_window(&self) -> Duration {
        self.window
    }

    /// The window of the tokens-per-day limit.
    pub fn get_day(&self) -> Duration {
        self.day
    }

    /// The expiry margin (zero when not set).
    pub fn get_expiry_margin(&self) -> Duration {
        self.margin.unwrap_or_default()
    }

    /// The expiry margin, if it was set (a store may have a default of its own).
    #[cfg_attr(not(feature = "sdk"), allow(dead_code))]
    pub(crate) fn expiry_margin_if_set(&self) -> Option<Duration> {
        self.margin
    }

    /// The name of the first setting only the in-process store implements (fair shares, a
    /// bound on the queue, ledger buckets), if any is set: another store refuses them rather
    /// than ignore them.
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pub(crate) fn in_process_only(&self) -> Option<&'static str> {
        if self.fairness.is_some() {
            Some("fairness")
        } else if self.max_queue.is_some() {
            Some("max_queue")
        } else if self.resolution.is_some() {
            Some("resolution")
        } else if self.day_bucket.is_some() {
            Some("day_bucket")
        } else {
            None
        }
    }

    /// Refuses a zero limit in the default quota or a per-key quota.
    pub(crate) fn check_quotas(&self) -> Result<(), ConfigError> {
        if self.default_quota().zero_dimension().is_some()
            || self.per_key.values().any(|q| q.zero_dimension().is_some())
        {
            return Err(ConfigError::ZeroLimit);
        }
        Ok(())
    }

    /// The per-key quotas (for a store that checks them).
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pub(crate) fn per_key_quotas(&self) -> impl Iterator<Item = &Quota> {
        self.per_key.values()
    }

    /// The same settings with `f` as the only source of quotas (the per-key quotas and the
    /// default dropped): a store that composes its own quota function from these settings'.
    #[cfg_attr(not(any(feature = "sdk", feature = "redis")), allow(dead_code))]
    pub(crate) fn with_quota_source(
        mut self,
        f: impl Fn(&K) -> Option<Quota> + Send + Sync + 'static,
    ) -> Self {
        self.per_key.clear();
        self.quota_fn = Some(Arc::new(f));
        self
    }

    /// The longest wait, if bounded.
    pub fn get_max_wait(&self) -> Option<Duration> {
        self.max_wait
    }

    /// The deepest queue, if bounded.
    pub fn get_max_queue(&self) -> Option<usize> {
        self.max_queue
    }

    /// The feedback policy (`None`: throttles only exhaust the window).
    pub fn get_aimd(&self) -> Option<Aimd> {
        self.aimd
    }

    /// The buckets of the window and day ledgers, as they will be used (defaults resolved).
    pub fn get_buckets(&self) -> (Duration, Duration) {
        (
            self.resolution
                .unwrap_or(DEFAULT_RESOLUTION.min(self.window)),
            self.day_bucket.unwrap_or(self.day / DAY_BUCKETS),
        )
    }

    /// Shares each key's quota fairly between tenants and priority lanes instead of FIFO (see
    /// the [module documentation](super#fair-shares)). Requests say who they are for with
    /// [`Budget::acquire_as`]; those admitted with [`Budget::acquire`] are the anonymous
    /// tenant in the default lane.
    pub fn fairness(mut self, fairness: Fairness) -> Self {
        self.fairness = Some(fairness);
        self
    }

    /// The tokens-per-window limit of every key not given a quota by
    /// [`quota_for`](Self::quota_for) or [`quota_fn`](Self::quota_fn).
    pub fn tokens(mut self, limit: u64) -> Self {
        self.quota.tokens = Some(limit);
        self
    }

    /// The requests-per-window limit of every key not given a quota by
    /// [`quota_for`](Self::quota_for) or [`quota_fn`](Self::quota_fn). Every admission counts
    /// as one request.
    pub fn requests(mut self, limit: u64) -> Self {
        self.quota.requests = Some(limit);
        self
    }

    /// The tokens-per-day limit of every key not given a quota by [`quota_for`](Self::quota_for)
    /// or [`quota_fn`](Self::quota_fn), over the [`day`](Self::day) window.
    pub fn tokens_per_day(mut self, limit: u64) -> Self {
        self.quota.tokens_per_day = Some(limit);
        self
    }

    /// The quota of every key not given one by [`quota_for`](Self::quota_for) or
    /// [`quota_fn`](Self::quota_fn). [`tokens`](Self::tokens), [`requests`](Self::requests)
    /// and [`tokens_per_day`](Self::tokens_per_day) win on their dimension, before or after.
    pub fn quota(mut self, quota: Quota) -> Self {
        self.whole = Some(quota);
        self
    }

    /// The window length `W` of the requests and tokens limits. Default 60 s.
    pub fn window(mut self, window: Duration) -> Self {
        self.window = window;
        self
    }

    /// The window of the tokens-per-day limit. Default 24 hours ([`DAY`]); shorter for a
    /// scaled emulator.
    pub fn day(mut self, day: Duration) -> Self {
        self.day = day;
        self
    }

    /// The quota of one key; takes precedence over [`quota_fn`](Self::quota_fn) and the default
    /// quota.
    pub fn quota_for(mut self, key: K, quota: Quota) -> Self {
        self.per_key.insert(key, quota);
        self
    }

    /// Computes the quota of a key the first time it is seen (and again after eviction).
    /// `None` (or an unlimited quota) means the key has no limit: its admissions are free and
    /// never wait (and, as such a key keeps no state, the function is called again at each of
    /// its admissions). When set, it decides for every key not given by
    /// [`quota_for`](Self::quota_for), and the default quota is not used. A function returning a
    /// zero limit makes every cost on that dimension fail with
    /// [`AdmissionError::CostAboveLimit`](super::AdmissionError::CostAboveLimit).
    pub fn quota_fn(mut self, f: impl Fn(&K) -> Option<Quota> + Send + Sync + 'static) -> Self {
        self.quota_fn = Some(Arc::new(f));
        self
    }

    /// The longest a request may wait. A request whose computed wait is longer fails at once with
    /// [`AdmissionError::WaitTooLong`](super::AdmissionError::WaitTooLong); one whose wait grows past it while queued (feedback, a
    /// lower limit) fails when its deadline passes. Default: no bound.
    ///
    /// Computing the wait of a new arrival walks the queue ahead of it and the window's entries,
    /// so with a bound each queued arrival costs time proportional to the queue; admissions that
    /// do not wait cost nothing extra.
    pub fn max_wait(mut self, max_wait: Duration) -> Self {
        self.max_wait = Some(max_wait);
        self
    }

    /// The most requests that may wait on one key; more fail with
    /// [`AdmissionError::QueueFull`](super::AdmissionError::QueueFull). `0` means never wait. Default: no bound.
    pub fn max_queue(mut self, max_queue: usize) -> Self {
        self.max_queue = Some(max_queue);
        self
    }

    /// Extra time each entry counts beyond its window, to absorb clock skew and latency between
    /// the client's admission and the server's booking. Default zero.
    pub fn expiry_margin(mut self, margin: Duration) -> Self {
        self.margin = Some(margin);
        self
    }

    /// The feedback policy of [`Budget::throttled`]. Default [`Aimd::default`].
    pub fn aimd(mut self, aimd: Aimd) -> Self {
        self.aimd = Some(aimd);
        self
    }

    /// Turns off the decrease of the effective limit on feedback: [`Budget::throttled`] only
    /// exhausts the window.
    pub fn without_aimd(mut self) -> Self {
        self.aimd = None;
        self
    }

    /// The resolution of the requests and tokens ledgers: charges within one bucket of this
    /// length share one entry, dated at the END of the bucket, so a key's ledger holds at most
    /// `window / resolution + 1` entries (16 bytes each) whatever the request rate, and no charge
    /// is freed before its exact expiry (up to one resolution later). Default 1 ms (at most the
    /// window): 60,001 entries for a minute at most, and in practice one per admission instant.
    pub fn resolution(mut self, resolution: Duration) -> Self {
        self.resolution = Some(resolution);
        self
    }

    /// The bucket of the tokens-per-day ledger, as [`resolution`](Self::resolution) for the
    /// day: a key's day holds at most `day / bucket + 1` entries, and a charge is freed at the
    /// end of its bucket's day (conservative by at most one bucket). Default: the
    /// [`day`](Self::day) / 1,440 (one minute for 24 hours: at most 1,441 entries, about
    /// 23 KB).
    pub fn day_bucket(mut self, bucket: Duration) -> Self {
        self.day_bucket = Some(bucket);
        self
    }

    /// Checks the settings without building a store: what [`build`](Self::build) refuses,
    /// except the fairness configuration (checked as it is built).
    pub(crate) fn check(&self) -> Result<(), ConfigError> {
        if self.window.is_zero() || self.day.is_zero() {
            return Err(ConfigError::ZeroWindow);
        }
        const YEAR: Duration = Duration::from_secs(365 * 24 * 3600);
        if self
            .window
            .max(self.day)
            .saturating_add(self.get_expiry_margin())
            > YEAR
        {
            return Err(ConfigError::WindowTooLong);
        }
        self.check_quotas()?;
        if self.default_quota().is_unlimited() && self.quota_fn.is_none() && self.per_key.is_empty()
        {
            return Err(ConfigError::MissingLimit);
        }
        if let Some(aimd) = &self.aimd {
            aimd.validate()?;
        }
        let (resolution, day_bucket) = self.get_buckets();
        for (bucket, window) in [(resolution, self.window), (day_bucket, self.day)] {
            if bucket.is_zero() {
                return Err(ConfigError::ZeroBucket);
            }
            if bucket > window {
                return Err(ConfigError::BucketAboveWindow { bucket, window });
            }
        }
        Ok(())
    }

    /// Checks the configuration and builds the budget.
    ///
    /// # Errors
    ///
    /// [`ConfigError::ZeroLimit`] for a zero limit (default or per key),
    /// [`ConfigError::ZeroWindow`] for a zero window or day, [`ConfigError::WindowTooLong`] for
    /// a window or day plus margin over a year, [`ConfigError::MissingLimit`] when neither a
    /// limited quota nor a quota function is given, [`ConfigError::InvalidFactor`] for an AIMD
    /// factor out of range or NaN.
    pub fn build(self) -> Result<Budget<K>, ConfigError> {
        self.check()?;
        let default_quota = self.default_quota();
        let margin = self.get_expiry_margin();
        let resolution = self
            .resolution
            .unwrap_or(DEFAULT_RESOLUTION.min(self.window));
        let day_bucket = self.day_bucket.unwrap_or(self.day / DAY_BUCKETS);
        let fair = self
            .fairness
            .map(Fairness::build)
            .transpose()?
            .map(Arc::new);
        Ok(Budget {
            inner: Arc::new(Inner {
                keys: papaya::HashMap::with_hasher(KeyHasher::default()),
                default_quota,
                per_key: self.per_key,
                quota_fn: self.quota_fn,
                config: Arc::new(
                    KeyConfig::new(self.window, self.day, margin, self.aimd, fair)
                        .with_bounds(self.max_wait, self.max_queue)
                        .with_buckets(resolution, day_bucket.max(Duration::from_nanos(1))),
                ),
                inserted: AtomicUsize::new(0),
            }),
        })
    }
}

impl<K> fmt::Debug for Settings<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Settings")
            .field("quota", &self.quota)
            .field("whole", &self.whole)
            .field("window", &self.window)
            .field("day", &self.day)
            .field("per_key", &self.per_key.len())
            .field("quota_fn", &self.quota_fn.is_some())
            .field("max_wait", &self.max_wait)
            .field("max_queue", &self.max_queue)
            .field("expiry_margin", &self.margin)
            .field("aimd", &self.aimd)
            .field("fairness", &self.fairness)
            .field("resolution", &self.resolution)
            .field("day_bucket", &self.day_bucket)
            .finish()
    }
}

impl<K: Clone + Eq + Hash + Send + Sync + 'static> Budget<K> {
    /// A builder; a limited quota ([`tokens`](BudgetBuilder::tokens),
    /// [`requests`](BudgetBuilder::requests), [`quota`](BudgetBuilder::quota),
    /// [`quota_for`](BudgetBuilder::quota_for)) or a [`quota_fn`](BudgetBuilder::quota_fn) is
    /// required.
    pub fn builder() -> BudgetBuilder<K> {
        Settings::new()
    }

    /// The budget of `settings` (as [`Settings::build`]).
    ///
    /// # Errors
    ///
    /// As [`BudgetBuilder::build`].
    pub fn new(settings: Settings<K>) -> Result<Self, ConfigError> {
        settings.build()
    }
}
