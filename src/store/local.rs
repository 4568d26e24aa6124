//! The local side of one quota key: the process's line, its live charges, the fleet's figures
//! as last read, and the state of the outage modes.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

use super::call::View;
use crate::budget::{Dimension, Quota};

/// The local side of one quota key: the process's FIFO line (only its head talks to Redis),
/// the wake-up of a local refund, and what the outage modes and the lost-ledger check need.
pub(super) struct LocalKey {
    pub(super) names: [String; 7],
    pub(super) turn: tokio::sync::Mutex<()>,
    pub(super) freed: Notify,
    pub(super) waiting: AtomicU64,
    /// The script epoch this key's admissions have seen (see `Health::script_epoch`).
    pub(super) epoch: AtomicU64,
    pub(super) live: Mutex<Live>,
    pub(super) fleet: Mutex<Option<(Instant, View)>>,
    pub(super) outage: Mutex<OutageState>,
}

impl LocalKey {
    pub(super) fn new(names: [String; 7], epoch: u64, window: Duration) -> Self {
        LocalKey {
            names,
            turn: tokio::sync::Mutex::new(()),
            freed: Notify::new(),
            waiting: AtomicU64::new(0),
            epoch: AtomicU64::new(epoch),
            live: Mutex::new(Live::new(window)),
            fleet: Mutex::new(None),
            outage: Mutex::new(OutageState::default()),
        }
    }

    pub(super) fn saw(&self, view: View) {
        *self.fleet.lock().expect("poisoned") = Some((Instant::now(), view));
    }

    pub(super) fn view(&self) -> Option<(Instant, View)> {
        *self.fleet.lock().expect("poisoned")
    }
}

/// This process's charges on a key that are certainly still in the fleet's window (refunds
/// taken off, debts not counted), in buckets of a hundredth of the window: a fleet usage below
/// them means the ledger lost writes. Bounded by the window, whatever the rate.
pub(super) struct Live {
    step: Duration,
    epoch: Option<Instant>,
    /// (bucket index, requests, tokens), oldest first.
    buckets: VecDeque<(u64, u64, u64)>,
    /// Permits alive.
    pub(super) permits: u64,
}

impl Live {
    pub(super) fn new(window: Duration) -> Self {
        Live {
            step: (window / 100).max(Duration::from_millis(1)),
            epoch: None,
            buckets: VecDeque::new(),
            permits: 0,
        }
    }

    /// Books an admission of `tokens` now; returns its bucket, for its settlement.
    pub(super) fn add(&mut self, tokens: u64) -> u64 {
        let now = Instant::now();
        let epoch = *self.epoch.get_or_insert(now);
        let index = (now.duration_since(epoch).as_nanos() / self.step.as_nanos().max(1))
            .try_into()
            .unwrap_or(u64::MAX);
        match self.buckets.back_mut() {
            Some(b) if b.0 == index => {
                b.1 += 1;
                b.2 = b.2.saturating_add(tokens);
            }
            _ => self.buckets.push_back((index, 1, tokens)),
        }
        self.permits += 1;
        index
    }

    /// A permit of bucket `index` settled, `refund` tokens below its reservation.
    pub(super) fn settle(&mut self, index: u64, refund: u64) {
        self.permits = self.permits.saturating_sub(1);
        if let Some(b) = self.buckets.iter_mut().rev().find(|b| b.0 == index) {
            b.2 = b.2.saturating_sub(refund);
        }
    }

    /// The requests and tokens charged from `since` on (older ones may have left the server's
    /// window: they are forgotten).
    pub(super) fn totals(&mut self, since: Option<Instant>) -> (u64, u64) {
        let (Some(since), Some(epoch)) = (since, self.epoch) else {
            return (0, 0);
        };
        while let Some(&(index, _, _)) = self.buckets.front() {
            let start = u32::try_from(index)
                .ok()
                .and_then(|i| epoch.checked_add(self.step * i));
            if start.is_some_and(|s| s >= since) {
                break;
            }
            self.buckets.pop_front();
        }
        self.buckets
            .iter()
            .fold((0, 0), |(r, t), b| (r + b.1, t.saturating_add(b.2)))
    }
}

/// What an outage mode keeps per key, reset at each outage.
#[derive(Default)]
pub(super) struct OutageState {
    /// The outage (its number) this state belongs to.
    outage: u64,
    /// Fail open: the instant each dimension is free again at the configured rate.
    pace: [Option<Instant>; 3],
    /// Fail open: the earliest instant the next request may really leave (see `depart`).
    next_departure: Option<Instant>,
    /// Local share: when the first window's seed expires and the share grows to its whole.
    seeded_until: Option<Instant>,
}

impl OutageState {
    /// Starts the state of outage number `outage` if it is a new one; true then.
    pub(super) fn begin(&mut self, outage: u64) -> bool {
        if self.outage == outage {
            return false;
        }
        *self = OutageState {
            outage,
            ..OutageState::default()
        };
        true
    }

    /// Fail open: the instant a request of `tokens` may leave, paced at the configured rate
    /// (each dimension's limit per window, no burst beyond one request), and books it.
    pub(super) fn pace(
        &mut self,
        quota: &Quota,
        tokens: u64,
        window: Duration,
        day: Duration,
    ) -> Instant {
        let now = Instant::now();
        let start = self
            .pace
            .iter()
            .flatten()
            .fold(now, |a, &b| if b > a { b } else { a });
        for (d, limit) in quota.limits() {
            let w = if d == Dimension::TokensPerDay {
                day
            } else {
                window
            };
            let cost = d.cost(tokens) as f64;
            let step = w.mul_f64((cost / limit.max(1) as f64).min(1e6));
            self.pace[d.index()] = Some(start + step);
        }
        start
    }

    /// Fail open: whether a request of `tokens` whose paced instant has come may leave now.
    /// It may if the previous request left at least its own step (its cost at the configured
    /// rate, the longest of its dimensions) ago; the departure is then booked and `None`
    /// returned, else the instant to ask again. Why: the paced instants are handed out ahead,
    /// and a machine that stalls wakes several overdue requests at once; without this check
    /// they would leave together, a burst the pacing promised not to send.
    pub(super) fn depart(
        &mut self,
        quota: &Quota,
        tokens: u64,
        window: Duration,
        day: Duration,
    ) -> Option<Instant> {
        let now = Instant::now();
        if let Some(next) = self.next_departure
            && next > now
        {
            return Some(next);
        }
        let step = quota
            .limits()
            .map(|(d, limit)| {
                let w = if d == Dimension::TokensPerDay {
                    day
                } else {
                    window
                };
                w.mul_f64((d.cost(tokens) as f64 / limit.max(1) as f64).min(1e6))
            })
            .max()
            .unwrap_or(Duration::ZERO);
        self.next_departure = Some(now + step);
        None
    }

    pub(super) fn seeded_until(&mut self) -> &mut Option<Instant> {
        &mut self.seeded_until
    }
}
