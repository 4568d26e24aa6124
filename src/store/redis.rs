//! The Redis (or Valkey) store: the ledger of each quota key in one hash slot, admitted by one
//! server-side script.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::hash::Hash;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use redis::Value;
use tokio::time::Instant;

use super::builder::{MAX_LIMIT, Outage, RedisStoreBuilder, StoreStats, check_exact, scaled};
use super::call::{Args, Caller, Lost, Reply, Role, SCRIPT, View, ints};
use super::charge::{RedisCharge, Settler, free_permit};
use super::error::{StoreError, StoreWarning};
use super::key::StoreKey;
use super::local::LocalKey;
use crate::budget::{
    AdmissionError, Aimd, Budget, ConfigError, Dimension, DimensionStats, KeyStats, Permit, Quota,
    QuotaStore, Settings as BudgetSettings,
};
use crate::classify::ThrottleCause;

/// Buckets per window of the requests and tokens ledgers: a charge is freed at most one
/// step (1%) after its exact expiry, and a ledger holds at most 101 buckets.
const WINDOW_STEPS: u64 = 100;
/// Buckets per day of the tokens-per-day ledger (one a minute for a 24-hour day).
const DAY_STEPS: u64 = 1_440;
/// How often a degraded store asks Redis whether it is back.
const PROBE_EVERY: Duration = Duration::from_millis(50);

type QuotaFn<K> = Arc<dyn Fn(&K) -> Option<Quota> + Send + Sync>;

/// The settings of a built store.
pub(super) struct Settings {
    pub(super) window: Duration,
    pub(super) day: Duration,
    pub(super) window_us: u64,
    pub(super) win_us: u64,
    pub(super) day_us: u64,
    pub(super) aimd: Aimd,
    pub(super) max_wait: Option<Duration>,
    pub(super) grace_us: u64,
    pub(super) outage: Outage,
}

impl Settings {
    /// The resolution (µs) of the window's buckets and of the day's.
    pub(super) fn steps(&self) -> (u64, u64) {
        (
            (self.win_us / WINDOW_STEPS).max(1),
            (self.day_us / DAY_STEPS).max(1),
        )
    }

    /// How long a key's data lives after its last new bucket: its longest configured window,
    /// the margin and two steps (not a day when it has no daily limit).
    pub(super) fn ttl_ms(&self, quota: &Quota) -> u64 {
        let (rw, rd) = self.steps();
        let longest = if quota.tokens_per_day.is_some() {
            self.day_us + 2 * rd
        } else {
            self.win_us + 2 * rw
        };
        longest / 1_000 + 1_000
    }
}

pub(super) struct Inner<K> {
    /// For the background calls of permits and feedback.
    pub(super) this: std::sync::Weak<Inner<K>>,
    pub(super) caller: Caller,
    pub(super) prefix: String,
    pub(super) configured: QuotaFn<K>,
    pub(super) overrides: Mutex<HashMap<K, Quota>>,
    pub(super) settings: Settings,
    pub(super) fallback: Budget<K>,
    pub(super) keys: Mutex<HashMap<K, Arc<LocalKey>>>,
    pub(super) process: u64,
    pub(super) waiters: AtomicU64,
}

/// A quota store shared by every process that uses the same Redis (or Valkey, or Redis
/// Cluster): see the [module documentation](super) for the design and its guarantees.
/// Clones share the connection and the local state.
pub struct RedisStore<K> {
    pub(super) inner: Arc<Inner<K>>,
}

impl<K> Clone for RedisStore<K> {
    fn clone(&self) -> Self {
        RedisStore {
            inner: Arc::clone(&self.inner),
        }
    }
}

impl<K> fmt::Debug for RedisStore<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisStore")
            .field("prefix", &self.inner.prefix)
            .field("outage", &self.inner.settings.outage)
            .field(
                "degraded",
                &self.inner.caller.health.degraded.load(Ordering::Relaxed),
            )
            .finish_non_exhaustive()
    }
}

impl<K: Clone + Eq + Hash + StoreKey + Send + Sync + 'static> RedisStore<K> {
    /// The largest limit the store takes (2^53): see [`StoreError::LimitTooLarge`].
    pub const MAX_LIMIT: u64 = MAX_LIMIT;

    /// A builder for one server at `url` (`redis://host:port[/db]`; add
    /// [`node`](RedisStoreBuilder::node)s for a cluster), with the `settings` every store
    /// shares: the quotas (a limited quota or a quota function is required), the window and
    /// the day, the expiry margin, the longest wait and the feedback policy, as the in-process
    /// [`Budget::new`](crate::budget::Budget::new) takes them. Settings only the in-process
    /// store implements (fair shares, a queue bound, ledger buckets: the store's buckets are
    /// its own) are refused at [`build`](RedisStoreBuilder::build). A limit above
    /// [`MAX_LIMIT`](Self::MAX_LIMIT) in the settings' quotas is refused at build; one that the
    /// [quota function](crate::budget::Settings::quota_fn) returns later is used as
    /// [`MAX_LIMIT`](Self::MAX_LIMIT), with a warning (2^53 tokens per window limits nothing
    /// real).
    ///
    /// ```
    /// use std::time::Duration;
    /// use bedrock_throttle::budget::Settings;
    /// use bedrock_throttle::store::{Outage, RedisStore};
    ///
    /// let settings = Settings::new()
    ///     .tokens(100_000)
    ///     .window(Duration::from_secs(60))
    ///     .max_wait(Duration::from_secs(30));
    /// let store: RedisStore<String> = RedisStore::builder("redis://127.0.0.1:6379", settings)
    ///     .on_outage(Outage::LocalShare(0.25))
    ///     .build()?;
    /// # let _ = store;
    /// # Ok::<(), bedrock_throttle::store::BuildError>(())
    /// ```
    pub fn builder(url: impl Into<String>, settings: BudgetSettings<K>) -> RedisStoreBuilder<K> {
        RedisStoreBuilder {
            urls: vec![url.into()],
            cluster: false,
            prefix: "bt".to_owned(),
            settings,
            timeout: Duration::from_millis(250),
            background_timeout: None,
            outage: Outage::FailClosed,
            grace: Duration::ZERO,
        }
    }

    /// Connects now, loads the script, and reads the server's `maxmemory-policy`: the typed
    /// errors of a bad server at start, and the warnings of a server that may lose ledgers
    /// (each also logged at warn).
    ///
    /// # Errors
    ///
    /// [`StoreError::Unreachable`] (or [`StoreError::Timeout`]) when the server cannot be
    /// reached, [`StoreError::NoScripting`] when it does not run scripts.
    pub async fn ready(&self) -> Result<Vec<StoreWarning>, StoreError> {
        let conn = &self.inner.caller.conn;
        let load = async {
            // On a cluster the command goes to one node; a node without it loads it on the
            // first call (EVAL after NOSCRIPT), which is not taken for a lost ledger.
            conn.query(redis::cmd("SCRIPT").arg("LOAD").arg(SCRIPT))
                .await?;
            conn.query(redis::cmd("CONFIG").arg("GET").arg("maxmemory-policy"))
                .await
        };
        let policy = match tokio::time::timeout(self.inner.caller.timeout * 4, load).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => match StoreError::classify(e) {
                StoreError::Redis(e) => Err(e.to_string()),
                other => return Err(other),
            },
            Err(_) => return Err(StoreError::Timeout),
        };
        let warning = match policy.map(|v| policy_of(&v)) {
            Ok(Some(p)) if p == "noeviction" => None,
            Ok(Some(policy)) => Some(StoreWarning::Eviction { policy }),
            Ok(None) => Some(StoreWarning::EvictionUnknown {
                reason: "unexpected CONFIG GET reply".to_owned(),
            }),
            Err(reason) => Some(StoreWarning::EvictionUnknown { reason }),
        };
        if let Some(w) = &warning {
            tracing::warn!(prefix = %self.inner.prefix, "{w}");
        }
        Ok(warning.into_iter().collect())
    }

    /// One `PING` on the store's connection (on a cluster, to a node), and how long it took:
    /// a health check, and the round trip that an admission's latency compares with.
    ///
    /// # Errors
    ///
    /// A failed or timed-out call.
    pub async fn ping(&self) -> Result<Duration, StoreError> {
        let start = Instant::now();
        self.inner.caller.ping().await?;
        Ok(start.elapsed())
    }

    /// The health counters of the store.
    pub fn store_stats(&self) -> StoreStats {
        let h = &self.inner.caller.health;
        StoreStats {
            degraded: h.degraded.load(Ordering::Relaxed),
            outages: h.outages.load(Ordering::Relaxed),
            errors: h.errors.load(Ordering::Relaxed),
            local_admissions: h.local_admissions.load(Ordering::Relaxed),
            open_admissions: h.open_admissions.load(Ordering::Relaxed),
            lost_updates: h.lost_updates.load(Ordering::Relaxed),
            unconfirmed: h.unconfirmed.load(Ordering::Relaxed),
            lost_ledgers: h.lost_ledgers.load(Ordering::Relaxed),
        }
    }

    /// The in-process ledger of the local share (used while Redis is down, with
    /// [`Outage::LocalShare`]).
    pub fn local_share(&self) -> &Budget<K> {
        &self.inner.fallback
    }

    /// The fleet-wide snapshot of `key`, read from Redis (one round trip).
    ///
    /// # Errors
    ///
    /// A failed or timed-out call.
    pub async fn fetch_stats(&self, key: &K) -> Result<Option<KeyStats>, StoreError> {
        let Some(quota) = self.inner.quota_of(key) else {
            return Ok(None);
        };
        let local = self.inner.local(key);
        let s = &self.inner.settings;
        let mut args = Args::new("st");
        push_limits(&mut args, &quota);
        args.arg(s.win_us)
            .arg(s.day_us)
            .arg(s.window_us)
            .arg(s.aimd.recover_per_window)
            .arg(s.ttl_ms(&quota));
        let v = self
            .inner
            .caller
            .run(&local.names, &mut args, Role::Query)
            .await?;
        let Some(n) = ints(&v) else {
            return Ok(None);
        };
        let at = |j: usize| n.get(j).copied().unwrap_or(-1);
        let view = View {
            used: [0, 1, 2].map(|i| (at(i * 3) >= 0).then(|| at(i * 3).unsigned_abs())),
            effective: [0, 1, 2].map(|i| (at(i * 3) >= 0).then(|| at(i * 3 + 1).unsigned_abs())),
        };
        local.saw(view);
        let mut stats = self.inner.stats_of(&local, &quota, Some(view));
        stats.waiters = at(9).max(0).unsigned_abs() as usize;
        for (d, j) in Dimension::ALL.into_iter().zip(0..) {
            if let Some(s) = stats.dimension_mut(d)
                && at(j * 3 + 2) >= 0
            {
                s.limit = at(j * 3 + 2).unsigned_abs();
            }
        }
        Ok(Some(stats))
    }

    /// Sets the quota of `key` fleet-wide and waits for Redis to have it (see
    /// [`QuotaStore::set_quota`] for the version that does not wait).
    ///
    /// # Errors
    ///
    /// [`StoreError::LimitTooLarge`] for a limit above [`MAX_LIMIT`], or a failed or timed-out
    /// call.
    pub async fn apply_quota(&self, key: &K, quota: Quota) -> Result<(), StoreError> {
        check_exact(&quota)?;
        self.inner
            .overrides
            .lock()
            .expect("poisoned")
            .insert(key.clone(), quota);
        let _ = self
            .inner
            .fallback
            .set_quota(key, scaled(quota, self.inner.share()));
        let local = self.inner.local(key);
        let mut args = Args::new("q");
        push_limits(&mut args, &quota);
        args.arg(self.inner.settings.ttl_ms(&quota));
        self.inner
            .caller
            .run(&local.names, &mut args, Role::Query)
            .await?;
        local.freed.notify_waiters();
        Ok(())
    }
}

/// The policy from a `CONFIG GET maxmemory-policy` reply (an array or a map).
fn policy_of(v: &Value) -> Option<String> {
    let text = |v: &Value| match v {
        Value::BulkString(b) => Some(String::from_utf8_lossy(b).into_owned()),
        Value::SimpleString(s) => Some(s.clone()),
        _ => None,
    };
    match v {
        Value::Array(items) => items.get(1).and_then(text),
        Value::Map(pairs) => pairs.first().and_then(|(_, v)| text(v)),
        _ => None,
    }
}

pub(super) fn push_limits(args: &mut Args, q: &Quota) {
    for d in Dimension::ALL {
        args.arg(q.get(d).unwrap_or(0));
    }
}

trait StatsExt {
    fn dimension_mut(&mut self, d: Dimension) -> Option<&mut DimensionStats>;
}

impl StatsExt for KeyStats {
    fn dimension_mut(&mut self, d: Dimension) -> Option<&mut DimensionStats> {
        match d {
            Dimension::Requests => self.requests.as_mut(),
            Dimension::Tokens => self.tokens.as_mut(),
            Dimension::TokensPerDay => self.tokens_per_day.as_mut(),
        }
    }
}

impl<K: Clone + Eq + Hash + StoreKey + Send + Sync + 'static> Inner<K> {
    /// A strong reference to this state, from the weak one kept for background calls.
    pub(super) fn me(&self) -> Option<Arc<Inner<K>>> {
        self.this.upgrade()
    }

    fn share(&self) -> f64 {
        match self.settings.outage {
            Outage::LocalShare(f) => f,
            _ => 1.0,
        }
    }

    fn quota_of(&self, key: &K) -> Option<Quota> {
        if let Some(q) = self.overrides.lock().expect("poisoned").get(key) {
            return Some(*q);
        }
        let q = (self.configured)(key)?;
        if check_exact(&q).is_err() {
            tracing::warn!(prefix = %self.prefix, ?q, "a quota function returned a limit above 2^53: the store uses 2^53");
            let mut out = Quota::unlimited();
            for (d, limit) in q.limits() {
                out = out.with(d, Some(limit.min(MAX_LIMIT)));
            }
            return Some(out);
        }
        Some(q)
    }

    fn local(&self, key: &K) -> Arc<LocalKey> {
        let mut keys = self.keys.lock().expect("poisoned");
        if let Some(k) = keys.get(key) {
            return Arc::clone(k);
        }
        let mut bytes = Vec::new();
        key.write_name(&mut bytes);
        let digest = sha1_smol::Sha1::from(&bytes).digest().to_string();
        let tag = format!("{{{}:{}}}", self.prefix, &digest[..32]);
        let names = ["s", "r", "t", "d", "a", "q", "qc"].map(|s| format!("{tag}:{s}"));
        let epoch = self.caller.health.script_epoch.load(Ordering::Acquire);
        let local = Arc::new(LocalKey::new(names, epoch, self.settings.window));
        // Idle keys are forgotten (their Redis state expires by itself): a bounded map.
        if keys.len() >= 4096 {
            keys.retain(|_, k| Arc::strong_count(k) > 1);
        }
        keys.insert(key.clone(), Arc::clone(&local));
        local
    }

    /// The snapshot of a key from the fleet's figures last read (`view`), this process's
    /// waiters and live permits.
    fn stats_of(&self, local: &LocalKey, quota: &Quota, view: Option<View>) -> KeyStats {
        let dim = |d: Dimension| {
            quota.get(d).map(|limit| {
                let i = d.index();
                DimensionStats {
                    used: view.and_then(|v| v.used[i]).unwrap_or(0),
                    limit,
                    effective_limit: view.and_then(|v| v.effective[i]).unwrap_or(limit),
                }
            })
        };
        let outstanding = local.live.lock().expect("poisoned").permits;
        KeyStats {
            requests: dim(Dimension::Requests),
            tokens: dim(Dimension::Tokens),
            tokens_per_day: dim(Dimension::TokensPerDay),
            waiters: local.waiting.load(Ordering::Relaxed) as usize,
            outstanding: usize::try_from(outstanding).unwrap_or(usize::MAX),
            tenants: 0,
            // The Redis store does not count debt in flight (yet): its permits ignore
            // `Permit::expect_debt`.
            expected_debt: 0,
            // The ledger lives on the server (its bound is in the module docs); this process
            // holds no ledger of the key.
            memory: 0,
        }
    }

    /// While degraded, one task asks Redis every [`PROBE_EVERY`] whether it answers; the first
    /// answer switches back and wakes every waiter, so no waiter has to hold a key's turn to
    /// notice.
    fn start_prober(&self) {
        if self.caller.health.prober.swap(true, Ordering::AcqRel) {
            return;
        }
        let (Some(me), Ok(handle)) = (self.me(), tokio::runtime::Handle::try_current()) else {
            self.caller.health.prober.store(false, Ordering::Release);
            return;
        };
        let error = self
            .caller
            .health
            .last_error
            .lock()
            .expect("poisoned")
            .clone();
        tracing::warn!(prefix = %self.prefix, error = ?error, mode = ?self.settings.outage, "redis store unreachable or slow: switching to the outage mode");
        handle.spawn(async move {
            loop {
                tokio::time::sleep(PROBE_EVERY).await;
                if !me.caller.health.degraded.load(Ordering::Acquire) {
                    break;
                }
                if me.caller.ping().await.is_ok() {
                    me.caller.healthy();
                    break;
                }
            }
            me.caller.health.prober.store(false, Ordering::Release);
            // A failure between the last check and the flag's reset starts no prober: check.
            if me.caller.health.degraded.load(Ordering::Acquire) {
                me.start_prober();
            }
        });
    }

    fn admit_args(
        &self,
        local: &LocalKey,
        quota: &Quota,
        tokens: u64,
        waiter: &str,
        lost: bool,
    ) -> Args {
        let s = &self.settings;
        let (rw, rd) = s.steps();
        // This process's charges certainly still in the server's window (admitted less than
        // a window, minus the longest a reply may take, ago).
        let since = Instant::now().checked_sub(s.window.saturating_sub(self.caller.timeout));
        let since = if s.window > self.caller.timeout {
            since
        } else {
            None
        };
        let (live_r, live_t) = local.live.lock().expect("poisoned").totals(since);
        let mut args = Args::new("a");
        args.arg(tokens);
        push_limits(&mut args, quota);
        args.arg(s.win_us)
            .arg(s.day_us)
            .arg(s.window_us)
            .arg(s.aimd.recover_per_window)
            .arg(waiter)
            .arg(s.grace_us)
            .arg(s.ttl_ms(quota))
            .arg("1")
            .arg(rw)
            .arg(rd)
            .arg(live_r)
            .arg(live_t)
            .arg(live_t)
            .lost_flag(lost);
        args
    }

    /// The call of a waiter at the head of its process's line for `key`.
    async fn admit_once(
        &self,
        local: &LocalKey,
        quota: &Quota,
        tokens: u64,
        waiter: &str,
    ) -> Result<Reply, StoreError> {
        let epoch = self.caller.health.script_epoch.load(Ordering::Acquire);
        let lost = local.epoch.load(Ordering::Acquire) < epoch;
        let mut args = self.admit_args(local, quota, tokens, waiter, lost);
        let v = self
            .caller
            .run(&local.names, &mut args, Role::Admission)
            .await?;
        local.epoch.fetch_max(
            self.caller.health.script_epoch.load(Ordering::Acquire),
            Ordering::AcqRel,
        );
        let reply = Reply::parse(&v)?;
        match &reply {
            Reply::Admitted { lost, view, .. } | Reply::Refused { lost, view, .. } => {
                local.saw(*view);
                if *lost != Lost::No {
                    self.caller
                        .health
                        .lost_ledgers
                        .fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(prefix = %self.prefix, key = %local.names[0], "a key's ledger was lost: {}; it is treated as full for one window", lost.why());
                }
            }
            Reply::AboveLimit { .. } => {}
        }
        Ok(reply)
    }

    /// Local share: at the first admission of an outage, the share starts from what the fleet
    /// had left when this process last read it; once that reading is a window old, the
    /// requests and tokens shares grow back to their whole (the day's stays reduced).
    fn seed_share(&self, key: &K, local: &LocalKey, quota: &Quota) {
        let outage = self.caller.health.outages.load(Ordering::Relaxed);
        let mut state = local.outage.lock().expect("poisoned");
        let fresh = state.begin(outage);
        let now = Instant::now();
        let seeded = state.seeded_until();
        let restore = !fresh && seeded.is_some_and(|until| until <= now);
        if !fresh && !restore {
            return;
        }
        let view = local.view();
        let window = self.settings.window;
        let mut q = Quota::unlimited();
        for (d, limit) in quota.limits() {
            let day = d == Dimension::TokensPerDay;
            let used = view
                .filter(|(at, _)| day || (fresh && *at + window > now))
                .and_then(|(_, v)| v.used[d.index()])
                .unwrap_or(0);
            let left = limit.saturating_sub(used) as f64 * self.share();
            q = q.with(d, Some((left.floor() as u64).max(1)));
        }
        let _ = self.fallback.set_quota(key, q);
        *seeded = fresh.then(|| view.map_or(now, |(at, _)| at) + window);
    }
}

/// Cancels a fleet ticket when a waiter leaves without being admitted.
struct TicketGuard<K: Clone + Eq + Hash + StoreKey + Send + Sync + 'static> {
    inner: Arc<Inner<K>>,
    local: Arc<LocalKey>,
    waiter: String,
    ticketed: bool,
}

impl<K: Clone + Eq + Hash + StoreKey + Send + Sync + 'static> Drop for TicketGuard<K> {
    fn drop(&mut self) {
        self.local.waiting.fetch_sub(1, Ordering::Relaxed);
        if !self.ticketed {
            return;
        }
        let (inner, local, waiter) = (
            Arc::clone(&self.inner),
            Arc::clone(&self.local),
            std::mem::take(&mut self.waiter),
        );
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            handle.spawn(async move {
                let mut args = Args::new("c");
                args.arg(waiter);
                // A lost cancel costs nothing for good: the ticket expires after its grace.
                let _ = inner
                    .caller
                    .run(&local.names, &mut args, Role::Background)
                    .await;
            });
        }
    }
}

fn too_long(start: Instant, wait: Duration, max: Option<Duration>) -> Result<(), AdmissionError> {
    match max {
        Some(max) if start.elapsed() + wait > max => Err(AdmissionError::WaitTooLong {
            would_wait: start.elapsed() + wait,
            max_wait: max,
        }),
        _ => Ok(()),
    }
}

async fn acquire<K: Clone + Eq + Hash + StoreKey + Send + Sync + 'static>(
    inner: Arc<Inner<K>>,
    key: K,
    tokens: u64,
) -> Result<Permit, AdmissionError> {
    let Some(quota) = inner.quota_of(&key) else {
        return Ok(free_permit(tokens));
    };
    for (dimension, limit) in quota.limits() {
        let cost = dimension.cost(tokens);
        if cost > limit {
            return Err(AdmissionError::CostAboveLimit {
                dimension,
                cost,
                limit,
            });
        }
    }
    if quota.limits().all(|(d, _)| d.cost(tokens) == 0) {
        return Ok(free_permit(tokens));
    }
    let start = Instant::now();
    let local = inner.local(&key);
    local.waiting.fetch_add(1, Ordering::Relaxed);
    let mut guard = TicketGuard {
        inner: Arc::clone(&inner),
        local: Arc::clone(&local),
        waiter: format!(
            "{:016x}:{}",
            inner.process,
            inner.waiters.fetch_add(1, Ordering::Relaxed)
        ),
        ticketed: false,
    };
    let health = &inner.caller.health;
    let mut waited_on = None;
    let mut backoff = Duration::from_millis(10);
    loop {
        // The local line: only its head talks to Redis, so a process holds at most one ticket
        // per key in the fleet's line, and the waiters behind it cost no round trips.
        let turn = local.turn.lock().await;
        if !health.degraded.load(Ordering::Acquire) {
            match inner
                .admit_once(&local, &quota, tokens, &guard.waiter)
                .await
            {
                Ok(Reply::Admitted { at_us, .. }) => {
                    guard.ticketed = false;
                    let id = local.live.lock().expect("poisoned").add(tokens);
                    let charge = RedisCharge {
                        inner: Arc::clone(&inner) as Arc<dyn Settler>,
                        local: Arc::clone(&local),
                        quota,
                        live: id,
                        at_us,
                        admitted_at: Instant::now(),
                    };
                    return Ok(
                        Permit::from_store(tokens, Box::new(charge)).with_waited_on(waited_on)
                    );
                }
                Ok(Reply::Refused { wait, blocked, .. }) => {
                    guard.ticketed = true;
                    waited_on.get_or_insert(blocked);
                    too_long(start, wait, inner.settings.max_wait)?;
                    let notified = local.freed.notified();
                    tokio::select! {
                        () = tokio::time::sleep(wait) => {}
                        () = notified => {}
                    }
                    continue;
                }
                Ok(Reply::AboveLimit { dimension, limit }) => {
                    return Err(AdmissionError::CostAboveLimit {
                        dimension,
                        cost: dimension.cost(tokens),
                        limit,
                    });
                }
                Err(_) => {
                    // `run` switched the mode; the loop applies it, without the turn.
                }
            }
        }
        drop(turn);
        // Degraded: the outage mode, without the key's turn, so that the probe's answer sends
        // every waiter back to Redis at once.
        inner.start_prober();
        let recovered = health.recovered.notified();
        tokio::pin!(recovered);
        recovered.as_mut().enable();
        if !health.degraded.load(Ordering::Acquire) {
            continue;
        }
        match inner.settings.outage {
            Outage::LocalShare(_) => {
                inner.seed_share(&key, &local, &quota);
                tokio::select! {
                    admitted = inner.fallback.acquire(key.clone(), tokens) => match admitted {
                        Ok(permit) => {
                            health.local_admissions.fetch_add(1, Ordering::Relaxed);
                            return Ok(permit);
                        }
                        // Above the local share but within the fleet's limit: only Redis can
                        // admit it, so it waits for Redis (fail closed for this request).
                        Err(AdmissionError::CostAboveLimit { .. }) => {}
                        Err(e) => return Err(e),
                    },
                    () = &mut recovered => continue,
                }
            }
            Outage::FailOpen => {
                let at = {
                    let mut state = local.outage.lock().expect("poisoned");
                    state.begin(health.outages.load(Ordering::Relaxed));
                    state.pace(&quota, tokens, inner.settings.window, inner.settings.day)
                };
                too_long(
                    start,
                    at.saturating_duration_since(Instant::now()),
                    inner.settings.max_wait,
                )?;
                let mut at = at;
                loop {
                    tokio::select! {
                        () = tokio::time::sleep_until(at) => {}
                        () = &mut recovered => break,
                    }
                    let again = local.outage.lock().expect("poisoned").depart(
                        &quota,
                        tokens,
                        inner.settings.window,
                        inner.settings.day,
                    );
                    match again {
                        // Another overdue request just left: keep the pace between departures.
                        Some(next) => at = next,
                        None => {
                            health.open_admissions.fetch_add(1, Ordering::Relaxed);
                            return Ok(free_permit(tokens));
                        }
                    }
                }
                continue;
            }
            Outage::FailClosed => {}
        }
        too_long(start, backoff, inner.settings.max_wait)?;
        tokio::select! {
            () = tokio::time::sleep(backoff) => {}
            () = &mut recovered => {}
        }
        backoff = (backoff * 2).min(inner.caller.timeout.max(Duration::from_millis(100)));
    }
}

/// The future of [`RedisStore`]'s admission.
///
/// One allocation per admission: its cost is a network round trip, three orders of magnitude
/// above the allocation, and a hand-written state machine around the client's futures would
/// buy nothing measurable.
#[must_use = "futures do nothing unless polled"]
pub struct RedisAcquire(Pin<Box<dyn Future<Output = Result<Permit, AdmissionError>> + Send>>);

impl fmt::Debug for RedisAcquire {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RedisAcquire")
    }
}

impl Future for RedisAcquire {
    type Output = Result<Permit, AdmissionError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.0.as_mut().poll(cx)
    }
}

impl<K: Clone + Eq + Hash + StoreKey + Send + Sync + 'static> QuotaStore<K> for RedisStore<K> {
    type Acquire = RedisAcquire;

    fn acquire(&self, key: K, tokens: u64) -> Self::Acquire {
        RedisAcquire(Box::pin(acquire(Arc::clone(&self.inner), key, tokens)))
    }

    fn throttled(&self, key: &K, cause: ThrottleCause) {
        let dims = Dimension::of_cause(cause);
        if dims.is_empty() {
            return;
        }
        let Some(quota) = self.inner.quota_of(key) else {
            return;
        };
        let local = self.inner.local(key);
        self.inner.feedback(local, quota, dims, None, 0);
        self.inner.fallback.throttled(key, cause);
    }

    /// Changes the quota of `key` fleet-wide: every process's admissions use it from the next
    /// script call after it reaches Redis (sent in the background; see
    /// [`RedisStore::apply_quota`] to wait for it). A limit above [`MAX_LIMIT`] is refused
    /// as [`ConfigError::InvalidFactor`] named `redis limit`.
    fn set_quota(&self, key: &K, quota: Quota) -> Result<(), ConfigError> {
        if quota.zero_dimension().is_some() {
            return Err(ConfigError::ZeroLimit);
        }
        if quota.is_unlimited() {
            return Err(ConfigError::MissingLimit);
        }
        if let Err(StoreError::LimitTooLarge { limit, .. }) = check_exact(&quota) {
            return Err(ConfigError::InvalidFactor {
                name: "redis limit",
                value: limit as f64,
                expected: "at most 2^53",
            });
        }
        let this = self.clone();
        let key = key.clone();
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            handle.spawn(async move {
                // A failure is counted by the call.
                let _ = this.apply_quota(&key, quota).await;
            });
        } else {
            self.inner
                .overrides
                .lock()
                .expect("poisoned")
                .insert(key, quota);
        }
        Ok(())
    }

    /// The fleet's figures of `key` as this process last read them (every admission call
    /// returns them; [`RedisStore::fetch_stats`] reads them now), with this process's waiters
    /// and live permits. Before the first call, nothing is known to be used.
    fn stats(&self, key: &K) -> Option<KeyStats> {
        let quota = self.inner.quota_of(key)?;
        let local = self.inner.local(key);
        let view = local.view().map(|(_, v)| v);
        Some(self.inner.stats_of(&local, &quota, view))
    }
}
