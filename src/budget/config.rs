//! What every key of a budget shares: the windows, the clock's origin, the feedback policy, the
//! queue discipline and the bounds on waiting.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use tokio::time::Instant;

use super::fair::FairShared;
use super::feedback::Aimd;
use super::quota::Dimension;

const DIMENSIONS: usize = Dimension::ALL.len();

/// Settings shared by every key of a budget.
#[derive(Debug)]
pub(crate) struct KeyConfig {
    /// The window length W (requests and tokens).
    pub(crate) window: Duration,
    /// The day window (tokens per day).
    pub(crate) day: Duration,
    /// Each dimension's window in nanoseconds, at least 1 (for the AIMD recovery rate).
    pub(super) window_nanos: [u64; DIMENSIONS],
    /// How long an entry counts on each dimension, in nanoseconds: its window + the margin.
    span_nanos: [u64; DIMENSIONS],
    /// Each dimension's bucket in nanoseconds, at least 1: charges are dated at the end of
    /// their bucket (see [`grid`](Self::grid)).
    bucket_nanos: [u64; DIMENSIONS],
    /// The feedback policy, if any.
    pub(crate) aimd: Option<Aimd>,
    /// The origin of the keys' time offsets.
    epoch: Instant,
    /// Fair shares between tenants and lanes; `None`: FIFO.
    pub(crate) fair: Option<Arc<FairShared>>,
    /// The longest a request may wait.
    pub(crate) max_wait: Option<Duration>,
    /// The most requests that may wait on one key (with fairness: per tenant).
    pub(crate) max_queue: Option<usize>,
    /// The order of the gates of requests of several scopes, across the budget's keys.
    pub(super) gate_seq: AtomicU64,
}

impl KeyConfig {
    /// `window + margin` and `day + margin` must fit in a `u64` of nanoseconds (the builder
    /// refuses more than a year).
    pub(crate) fn new(
        window: Duration,
        day: Duration,
        margin: Duration,
        aimd: Option<Aimd>,
        fair: Option<Arc<FairShared>>,
    ) -> Self {
        let nanos = |d: Duration| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        let windows = [window, window, day];
        KeyConfig {
            window,
            day,
            window_nanos: windows.map(|w| nanos(w).max(1)),
            span_nanos: windows.map(|w| nanos(w.saturating_add(margin))),
            bucket_nanos: [1; DIMENSIONS],
            aimd,
            epoch: Instant::now(),
            fair,
            max_wait: None,
            max_queue: None,
            gate_seq: AtomicU64::new(0),
        }
    }

    /// The same settings with bounds on waiting.
    pub(crate) fn with_bounds(
        mut self,
        max_wait: Option<Duration>,
        max_queue: Option<usize>,
    ) -> Self {
        self.max_wait = max_wait;
        self.max_queue = max_queue;
        self
    }

    /// The same settings with `resolution` as the bucket of the requests and tokens ledgers and
    /// `day_bucket` as that of the tokens-per-day ledger (each at most its window: the
    /// builder checks).
    pub(crate) fn with_buckets(mut self, resolution: Duration, day_bucket: Duration) -> Self {
        let nanos = |d: Duration| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX).max(1);
        self.bucket_nanos = [nanos(resolution), nanos(resolution), nanos(day_bucket)];
        self
    }

    /// The entry a booking at offset `at` joins on `dimension`: the end of its bucket, `at`
    /// rounded UP to the dimension's resolution. Later than the booking (by less than one
    /// bucket), so it counts longer, never shorter: no charge is freed before its exact
    /// expiry.
    #[inline]
    pub(crate) fn grid(&self, dimension: Dimension, at: u64) -> u64 {
        let bucket = self.bucket_nanos[dimension.index()];
        if bucket <= 1 {
            return at;
        }
        at.div_ceil(bucket).saturating_mul(bucket)
    }

    /// `t` as nanoseconds since the epoch. An instant before the epoch (a clock from another
    /// runtime) maps to the epoch itself: later than the truth, so its entries count longer,
    /// never shorter.
    #[inline]
    pub(crate) fn offset(&self, t: Instant) -> u64 {
        let d = t.saturating_duration_since(self.epoch);
        d.as_secs()
            .saturating_mul(1_000_000_000)
            .saturating_add(u64::from(d.subsec_nanos()))
    }

    /// The instant of an offset; exact inverse of [`offset`](Self::offset) after the epoch.
    pub(crate) fn instant(&self, offset: u64) -> Instant {
        self.epoch + Duration::from_nanos(offset)
    }

    /// How long an entry counts on `dimension`, in nanoseconds.
    #[inline]
    pub(super) fn span(&self, dimension: Dimension) -> u64 {
        self.span_nanos[dimension.index()]
    }
}
