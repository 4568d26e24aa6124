//! The recorder: an [`Observe`] implementation that keeps the last windows of each key.

use std::collections::VecDeque;
use std::fmt;
use std::hash::Hash;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use crate::admit::{Event, Observe};
use crate::bounded::KeyMap;
use crate::budget::{AdmissionError, Budget, Dimension};
use crate::classify::{Outcome, ThrottleCause};

use super::build::{KeyInput, build_key};
use super::{CapacityReport, KeyReport};

/// The most queue waits one window keeps for the quantiles (the count and the time are exact).
const MAX_WAIT_SAMPLES: usize = 4096;

/// The most keys a recorder keeps of its own by default
/// ([`CapacityRecorder::max_keys`]); events of further keys go to the `other` entry.
pub const DEFAULT_MAX_KEYS: usize = crate::bounded::DEFAULT_MAX_KEYS;

/// The name of the entry that keys without one of their own share.
pub const OTHER: &str = "other";

/// How many of the keys folded into `other` the report names.
const FOLDED_SAMPLE: usize = 8;

/// The throttle causes, in report order.
pub(crate) const CAUSES: [ThrottleCause; 6] = [
    ThrottleCause::Requests,
    ThrottleCause::Tokens,
    ThrottleCause::TokensPerDay,
    ThrottleCause::Capacity,
    ThrottleCause::ModelNotReady,
    ThrottleCause::Unknown,
];

pub(crate) fn cause_name(cause: ThrottleCause) -> &'static str {
    match cause {
        ThrottleCause::Requests => "requests",
        ThrottleCause::Tokens => "tokens",
        ThrottleCause::TokensPerDay => "tokens-per-day",
        ThrottleCause::Capacity => "capacity",
        ThrottleCause::ModelNotReady => "model-not-ready",
        _ => "unknown",
    }
}

fn cause_index(cause: ThrottleCause) -> usize {
    CAUSES.iter().position(|c| *c == cause).unwrap_or(5)
}

/// The refusal reasons, in report order. (An attempt that left the queue to be re-signed is
/// no refusal: it keeps its place, and the report counts it apart, as a re-sign.)
pub(crate) const REFUSALS: [&str; 3] = ["cost-above-limit", "wait-too-long", "queue-full"];

pub(crate) fn refusal_index(error: &AdmissionError) -> usize {
    match error {
        AdmissionError::CostAboveLimit { .. } => 0,
        AdmissionError::WaitTooLong { .. } => 1,
        _ => 2,
    }
}

/// One window of one key.
#[derive(Debug, Clone, Default)]
pub(crate) struct Slot {
    pub(crate) index: u64,
    /// Attempts that arrived in this window (admitted, refused or left the queue).
    pub(crate) requests: u64,
    /// Tokens reserved by the attempts that arrived in this window.
    pub(crate) reserved: u64,
    /// Tokens settled in this window.
    pub(crate) settled: u64,
    /// What the permits settled in this window had reserved.
    pub(crate) settled_reserved: u64,
    /// Time spent waiting, by the dimension that made the attempt wait.
    pub(crate) waited_on: [Duration; 3],
    /// Attempts admitted after waiting.
    pub(crate) waited: u64,
    /// Queue waits of attempts admitted in this window (zero included), up to a cap.
    pub(crate) waits: Vec<Duration>,
    /// Time some attempt was waiting.
    pub(crate) saturated: Duration,
    pub(crate) throttles: [u64; 6],
    pub(crate) refusals: [u64; 3],
    /// Attempts that left the queue before their signature expired (to be re-signed).
    pub(crate) resigns: u64,
    pub(crate) transient: u64,
    pub(crate) fatal: u64,
}

#[derive(Debug, Default)]
pub(crate) struct KeyLog {
    pub(crate) slots: VecDeque<Slot>,
    covered_until: Option<Instant>,
}

impl KeyLog {
    fn slot(&mut self, index: u64, keep: usize) -> &mut Slot {
        if self.slots.back().is_none_or(|s| s.index < index) {
            self.slots.push_back(Slot {
                index,
                ..Slot::default()
            });
            while self.slots.len() > keep {
                self.slots.pop_front();
            }
        }
        // Events are recorded in time order, but an arrival may be dated in an earlier window.
        let pos = self.slots.iter().rposition(|s| s.index <= index);
        match pos {
            Some(p) if self.slots[p].index == index => &mut self.slots[p],
            Some(p) => {
                // `p` is a position in the deque, so `p + 1 <= len`.
                #[allow(clippy::arithmetic_side_effects)]
                let next = p + 1;
                self.slots.insert(
                    next,
                    Slot {
                        index,
                        ..Slot::default()
                    },
                );
                &mut self.slots[next]
            }
            None => {
                self.slots.push_front(Slot {
                    index,
                    ..Slot::default()
                });
                &mut self.slots[0]
            }
        }
    }
}

pub(crate) struct Inner<K> {
    pub(crate) window: Duration,
    pub(crate) windows: usize,
    pub(crate) start: Instant,
    pub(crate) keys: Mutex<Keys<K>>,
}

/// The logs of the keys, bounded (see [`KeyMap`]), and a few of the keys folded into `other`.
pub(crate) struct Keys<K> {
    logs: KeyMap<K, KeyLog>,
    folded: Vec<K>,
}

/// Records what the capacity report needs, per key, over the last `windows` windows: an
/// [`Observe`]r for an [`AdmissionLayer`](crate::admit::AdmissionLayer). Clones share the
/// record and its settings.
///
/// Its memory is bounded whatever keys callers send: it keeps the windows of at most
/// [`max_keys`](Self::max_keys) keys (only those [`track`](Self::track) accepts, when set),
/// drops a key once its windows have left the report, and records every other key's events in
/// one entry, reported as `other`.
///
/// ```
/// use std::time::Duration;
/// use bedrock_throttle::admit::TokenBudgetLayer;
/// use bedrock_throttle::budget::Budget;
/// use bedrock_throttle::report::CapacityRecorder;
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() -> Result<(), bedrock_throttle::BoxError> {
/// let budget: Budget<&'static str> = Budget::builder().tokens(10_000).build()?;
/// let recorder = CapacityRecorder::new(budget.window(), 10);
/// let layer = bedrock_throttle::admit::AdmissionLayer::new(
///     budget.clone(),
///     bedrock_throttle::admit::Closures::new(|_: &u64| "tenant"),
/// )
/// .observe(recorder.clone());
/// # let _ = layer;
/// let report = recorder.report(&budget);
/// assert!(report.keys.is_empty()); // no traffic yet
/// # Ok(()) }
/// ```
pub struct CapacityRecorder<K> {
    pub(crate) inner: Arc<Inner<K>>,
}

impl<K> Clone for CapacityRecorder<K> {
    fn clone(&self) -> Self {
        Self {
            inner: Arc::clone(&self.inner),
        }
    }
}

impl<K> fmt::Debug for CapacityRecorder<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CapacityRecorder")
            .field("window", &self.inner.window)
            .field("windows", &self.inner.windows)
            .finish_non_exhaustive()
    }
}

impl<K: Hash + Eq + Clone> CapacityRecorder<K> {
    /// A recorder of windows of length `window` (the budget's), keeping the last `windows`
    /// (at least 1). Windows are counted from now.
    pub fn new(window: Duration, windows: usize) -> Self {
        let window = window.max(Duration::from_millis(1));
        let windows = windows.max(1);
        // A key idle this long has no window left in the report.
        let idle = u32::try_from(windows)
            .ok()
            .and_then(|n| n.checked_add(1))
            .and_then(|n| window.checked_mul(n))
            .unwrap_or(Duration::MAX);
        Self {
            inner: Arc::new(Inner {
                window,
                windows,
                start: Instant::now(),
                keys: Mutex::new(Keys {
                    logs: KeyMap::new(idle),
                    folded: Vec::new(),
                }),
            }),
        }
    }

    /// Keeps the windows of at most `max` keys of their own (default [`DEFAULT_MAX_KEYS`]);
    /// the events of further keys go to the `other` entry until a key leaves.
    pub fn max_keys(self, max: usize) -> Self {
        self.keys().logs.max = max;
        self
    }

    /// Keeps windows of their own only for the keys `track` accepts (for Bedrock, the models
    /// with a configured or applied quota); the others share the `other` entry. Default: every
    /// key, up to [`max_keys`](Self::max_keys).
    pub fn track(self, track: impl Fn(&K) -> bool + Send + Sync + 'static) -> Self {
        self.keys().logs.track = Some(Arc::new(track));
        self
    }

    /// How many keys have windows of their own now (the `other` entry aside).
    pub fn key_count(&self) -> usize {
        self.keys().logs.len()
    }

    fn keys(&self) -> std::sync::MutexGuard<'_, Keys<K>> {
        self.inner.keys.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The window length.
    pub fn window(&self) -> Duration {
        self.inner.window
    }

    /// How many windows the report covers.
    pub fn windows(&self) -> usize {
        self.inner.windows
    }

    fn index(&self, at: Instant) -> u64 {
        let since = at.saturating_duration_since(self.inner.start);
        let index = since
            .as_nanos()
            .checked_div(self.inner.window.as_nanos())
            .unwrap_or(0);
        u64::try_from(index).unwrap_or(u64::MAX)
    }

    fn with_log<R>(&self, key: &K, now: Instant, f: impl FnOnce(&mut KeyLog) -> R) -> R {
        let mut keys = self.keys();
        let Keys { logs, folded } = &mut *keys;
        let (log, other) = logs.entry(key, now, |_, _| KeyLog::default());
        if other && folded.len() < FOLDED_SAMPLE && !folded.contains(key) {
            folded.push(key.clone());
        }
        f(log)
    }

    /// The current window index and the first one a report covers.
    pub(crate) fn range(&self) -> (u64, u64) {
        let now = self.index(Instant::now());
        let windows = u64::try_from(self.inner.windows).unwrap_or(u64::MAX);
        let first = now.saturating_add(1).saturating_sub(windows);
        (first, now)
    }

    /// The report for a plain budget: per key seen, the last windows, with the budget's
    /// configured and effective limits.
    pub fn report(&self, budget: &Budget<K>) -> CapacityReport
    where
        K: fmt::Debug + Send + Sync + 'static,
    {
        self.report_with(|key| KeyInput {
            name: format!("{key:?}"),
            model: None,
            region: None,
            stats: budget.stats(key),
            applied: None,
            applied_known: false,
        })
    }

    pub(crate) fn report_with(&self, mut input: impl FnMut(&K) -> KeyInput) -> CapacityReport {
        let (first, last) = self.range();
        // `first <= last` (see `range`); at most `self.inner.windows`.
        let windows =
            usize::try_from(last.saturating_sub(first).saturating_add(1)).unwrap_or(usize::MAX);
        let now = Instant::now();
        let elapsed = now.saturating_duration_since(self.inner.start);
        let span = u32::try_from(self.inner.windows)
            .ok()
            .and_then(|n| self.inner.window.checked_mul(n))
            .unwrap_or(Duration::MAX);
        let covered = elapsed.min(span);
        let build = |input: KeyInput, log: &KeyLog| {
            let slots: Vec<&Slot> = log
                .slots
                .iter()
                .filter(|s| s.index >= first && s.index <= last)
                .collect();
            build_key(input, &slots, windows, self.inner.window, covered)
        };
        let mut keys = self.keys();
        keys.logs.sweep(now);
        let mut reports: Vec<KeyReport> = keys
            .logs
            .iter()
            .map(|(key, log)| build(input(key), log))
            .collect();
        reports.sort_by(|a, b| a.key.cmp(&b.key));
        if let Some(log) = keys.logs.other() {
            let whole = KeyInput {
                name: OTHER.to_owned(),
                model: None,
                region: None,
                stats: None,
                applied: None,
                applied_known: false,
            };
            let mut other = build(whole, log);
            other.recommendation.text = format!(
                "keys without an entry of their own (not tracked, or past the recorder's {} \
                 keys) are counted here together",
                keys.logs.max
            );
            let names: Vec<String> = keys.folded.iter().map(|k| input(k).name).collect();
            other.warnings.push(format!(
                "folded into {OTHER}, among others: {}",
                names.join(", ")
            ));
            reports.push(other);
        }
        drop(keys);
        let resigns = reports
            .iter()
            .map(|k| k.resigns)
            .fold(0, u64::saturating_add);
        CapacityReport {
            window_secs: self.inner.window.as_secs_f64(),
            windows,
            keys: reports,
            retries: 0,
            resigns,
            give_ups: 0,
        }
    }
}

impl<K: Hash + Eq + Clone + Send + Sync + 'static> Observe<K> for CapacityRecorder<K> {
    fn observe(&self, key: &K, event: Event<'_>) {
        let now = Instant::now();
        let keep = self.inner.windows.saturating_add(1);
        let at = self.index(now);
        // Every count saturates: tokens come from request bodies (`max_tokens` may be
        // `u64::MAX`), and a report must not panic or wrap on them.
        match event {
            Event::Admitted {
                tokens,
                waited,
                waited_on,
            } => {
                let arrived = now.checked_sub(waited).unwrap_or(now);
                let arrived_at = self.index(arrived);
                self.with_log(key, now, |log| {
                    let s = log.slot(arrived_at, keep);
                    s.requests = s.requests.saturating_add(1);
                    s.reserved = s.reserved.saturating_add(tokens);
                    // Saturated: some attempt was held by a full window.
                    let saturated = match waited_on {
                        Some(_) => covered(&mut log.covered_until, arrived, now),
                        None => Duration::ZERO,
                    };
                    let s = log.slot(at, keep);
                    s.saturated = s.saturated.saturating_add(saturated);
                    if s.waits.len() < MAX_WAIT_SAMPLES {
                        s.waits.push(waited);
                    }
                    if let Some(d) = waited_on {
                        s.waited = s.waited.saturating_add(1);
                        let on = &mut s.waited_on[d.index_for_report()];
                        *on = on.saturating_add(waited);
                    }
                });
            }
            Event::Refused { error, waited } => {
                let arrived = now.checked_sub(waited).unwrap_or(now);
                let arrived_at = self.index(arrived);
                self.with_log(key, now, |log| {
                    let s = log.slot(arrived_at, keep);
                    s.requests = s.requests.saturating_add(1);
                    let saturated = covered(&mut log.covered_until, arrived, now);
                    let s = log.slot(at, keep);
                    s.saturated = s.saturated.saturating_add(saturated);
                    bump(&mut s.refusals[refusal_index(error)]);
                });
            }
            Event::LeftQueue { waited } => {
                let arrived = now.checked_sub(waited).unwrap_or(now);
                self.with_log(key, now, |log| {
                    let saturated = covered(&mut log.covered_until, arrived, now);
                    let s = log.slot(at, keep);
                    s.saturated = s.saturated.saturating_add(saturated);
                    bump(&mut s.resigns);
                });
            }
            Event::Completed { classification } => match classification.outcome {
                Outcome::Throttled(cause) => self.with_log(key, now, |log| {
                    bump(&mut log.slot(at, keep).throttles[cause_index(cause)]);
                }),
                Outcome::Transient => {
                    self.with_log(key, now, |log| bump(&mut log.slot(at, keep).transient))
                }
                Outcome::Fatal => {
                    self.with_log(key, now, |log| bump(&mut log.slot(at, keep).fatal))
                }
                _ => {}
            },
            Event::Settled { reserved, settled } => self.with_log(key, now, |log| {
                let s = log.slot(at, keep);
                s.settled = s.settled.saturating_add(settled);
                s.settled_reserved = s.settled_reserved.saturating_add(reserved);
            }),
        }
    }
}

fn bump(count: &mut u64) {
    *count = count.saturating_add(1);
}

/// The part of `[from, to]` not yet covered by earlier waits (the union of waiting intervals,
/// which end in time order).
fn covered(until: &mut Option<Instant>, from: Instant, to: Instant) -> Duration {
    if to <= from {
        return Duration::ZERO;
    }
    let start = until.map_or(from, |u| u.max(from));
    *until = Some(until.map_or(to, |u| u.max(to)));
    to.saturating_duration_since(start)
}

trait ReportIndex {
    fn index_for_report(self) -> usize;
}

impl ReportIndex for Dimension {
    fn index_for_report(self) -> usize {
        match self {
            Dimension::Requests => 0,
            Dimension::Tokens => 1,
            Dimension::TokensPerDay => 2,
        }
    }
}
