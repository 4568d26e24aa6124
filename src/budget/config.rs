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
