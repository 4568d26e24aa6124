//! A permit's charge in Redis: its settlement and throttle feedback, sent in the background.

use std::fmt;
use std::hash::Hash;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use tokio::time::Instant;

use super::builder::MAX_LIMIT;
use super::call::{Args, Role};
use super::key::StoreKey;
use super::local::LocalKey;
use super::redis::{Inner, push_limits};
use crate::budget::{Dimension, Permit, Quota, StorePermit};

pub(super) fn free_permit(tokens: u64) -> Permit {
    Permit::from_store(tokens, Box::new(Uncharged(Instant::now())))
}

/// What a permit's charge needs of its store, without the key type.
pub(super) trait Settler: Send + Sync + 'static {
    fn settle(&self, charge: &RedisCharge, refund: u64, debt: u64);
    fn feedback_permit(&self, charge: &RedisCharge, dims: &[Dimension], reserved: u64);
}

impl<K: Clone + Eq + Hash + StoreKey + Send + Sync + 'static> Settler for Inner<K> {
    fn settle(&self, charge: &RedisCharge, refund: u64, debt: u64) {
        let Ok(handle) = tokio::runtime::Handle::try_current() else {
            self.caller
                .health
                .lost_updates
                .fetch_add(1, Ordering::Relaxed);
            return;
        };
        let Some(me) = self.me() else { return };
        let (local, quota, at) = (Arc::clone(&charge.local), charge.quota, charge.at_us);
        handle.spawn(async move {
            let (rw, rd) = me.settings.steps();
            let mut args = Args::new("s");
            args.arg(at)
                .arg(refund.min(MAX_LIMIT))
                .arg(debt.min(MAX_LIMIT))
                .arg(me.settings.ttl_ms(&quota))
                .arg(quota.tokens.unwrap_or(0))
                .arg(quota.tokens_per_day.unwrap_or(0))
                .arg(rw)
                .arg(rd);
            let _ = me
                .caller
                .run(&local.names, &mut args, Role::Background)
                .await;
            if refund > 0 {
                local.freed.notify_waiters();
            }
        });
    }

    fn feedback_permit(&self, charge: &RedisCharge, dims: &[Dimension], reserved: u64) {
        self.feedback(
            Arc::clone(&charge.local),
            charge.quota,
            dims,
            Some(charge.at_us),
            reserved,
        );
    }
}

impl<K: Clone + Eq + Hash + StoreKey + Send + Sync + 'static> Inner<K> {
    pub(super) fn feedback(
        &self,
        local: Arc<LocalKey>,
        quota: Quota,
        dims: &[Dimension],
        at: Option<i64>,
        reserved: u64,
    ) {
        let Ok(handle) = tokio::runtime::Handle::try_current() else {
            self.caller
                .health
                .lost_updates
                .fetch_add(1, Ordering::Relaxed);
            return;
        };
        let Some(me) = self.me() else { return };
        let mask: String = dims
            .iter()
            .map(|d| match d {
                Dimension::Requests => 'r',
                Dimension::Tokens => 't',
                Dimension::TokensPerDay => 'd',
            })
            .collect();
        handle.spawn(async move {
            let s = &me.settings;
            let (rw, rd) = s.steps();
            let mut args = Args::new("t");
            args.arg(mask)
                .arg(at.unwrap_or(-1))
                .arg(reserved.min(MAX_LIMIT));
            push_limits(&mut args, &quota);
            args.arg(s.win_us)
                .arg(s.day_us)
                .arg(s.window_us)
                .arg(s.aimd.decrease)
                .arg(s.aimd.recover_per_window)
                .arg(s.aimd.floor)
                .arg(s.ttl_ms(&quota))
                .arg(rw)
                .arg(rd);
            let _ = me
                .caller
                .run(&local.names, &mut args, Role::Background)
                .await;
        });
    }
}

/// A permit's charge in Redis: when it was booked (the server's clock), to find its buckets
/// for a refund.
pub(super) struct RedisCharge {
    pub(super) inner: Arc<dyn Settler>,
    pub(super) local: Arc<LocalKey>,
    pub(super) quota: Quota,
    pub(super) live: u64,
    pub(super) at_us: i64,
    pub(super) admitted_at: Instant,
}

impl fmt::Debug for RedisCharge {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisCharge")
            .field("at_us", &self.at_us)
            .finish_non_exhaustive()
    }
}

impl StorePermit for RedisCharge {
    fn admitted_at(&self) -> Instant {
        self.admitted_at
    }

    fn settle(self: Box<Self>, _reserved: u64, refund: u64, debt: u64) {
        self.local
            .live
            .lock()
            .expect("poisoned")
            .settle(self.live, refund);
        // Settling at exactly the reservation changes nothing in the ledger: no round trip.
        if refund == 0 && debt == 0 {
            return;
        }
        self.inner.settle(&self, refund, debt);
    }

    fn throttled(&self, dims: &[Dimension], reserved: u64) {
        self.inner.feedback_permit(self, dims, reserved);
    }
}

/// The charge of a permit that nothing charged (a key without limit, or fail open).
#[derive(Debug)]
struct Uncharged(Instant);

impl StorePermit for Uncharged {
    fn admitted_at(&self) -> Instant {
        self.0
    }

    fn settle(self: Box<Self>, _reserved: u64, _refund: u64, _debt: u64) {}

    fn throttled(&self, _dims: &[Dimension], _reserved: u64) {}
}
