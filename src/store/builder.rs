//! [`RedisStoreBuilder`]: the configuration of a [`RedisStore`], checked at build.

use std::collections::HashMap;
use std::fmt;
use std::hash::Hash;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use redis::Script;
use redis::aio::ConnectionManagerConfig;
use tokio::sync::OnceCell;

use super::call::{Caller, ClusterConn, Conn, Health, SCRIPT, SingleConn};
use super::error::StoreError;
use super::key::StoreKey;
use super::redis::{Inner, RedisStore, Settings as StoreSettings};
use crate::budget::{Aimd, Budget, ConfigError, Quota, Settings};

/// The largest limit the Redis store takes: amounts are exact integers in the script's
/// numbers (doubles) up to 2^53, so a larger limit is refused rather than rounded.
pub const MAX_LIMIT: u64 = 1 << 53;

/// What the store does while Redis is unreachable or slower than its
/// [timeout](RedisStoreBuilder::timeout). While degraded, a probe asks Redis every 50 ms; the
/// first answer sends every waiting request back to Redis at once.
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub enum Outage {
    /// Wait for the store, bounded by the caller's deadline (dropping the admission) or the
    /// [`max_wait`](crate::budget::Settings::max_wait). Never admits what the fleet's ledger has not
    /// seen: it overshoots nothing.
    FailClosed,
    /// Admit against an in-process ledger holding this fraction of each limit (in `(0, 1]`,
    /// e.g. `1 / expected processes`), until Redis answers again. In the outage's first
    /// window the share is a fraction of what the fleet had left when this process last read
    /// it (the day dimension keeps that reduction for the whole outage), so with fractions
    /// that add up to 1 the fleet stays within its limits as long as every process saw recent
    /// figures. It can overshoot by what the fleet admitted between those last reads and the
    /// outage, and, if the fractions add up to more than 1, by the excess.
    LocalShare(f64),
    /// Admit every request, paced at the configured rate (each limit spread over its window,
    /// with no burst beyond one request), until Redis answers again: the backlog that waited
    /// when Redis went away is paced too, never released at once. It can overshoot by what
    /// the server's window still held when the outage began: up to one window's limit if the
    /// fleet had just filled it, and the pacing of every process adds up (N processes pace at
    /// N times the rate).
    FailOpen,
}

/// Counters of the store's health, from [`RedisStore::store_stats`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct StoreStats {
    /// Whether the store is in its outage mode now.
    pub degraded: bool,
    /// Switches from healthy to the outage mode.
    pub outages: u64,
    /// Admission calls to Redis that failed or timed out (only these switch the mode).
    pub errors: u64,
    /// Admissions granted by the local share during outages.
    pub local_admissions: u64,
    /// Admissions granted without the fleet's ledger during outages (fail open, paced).
    pub open_admissions: u64,
    /// Settlements, feedback and cancels that failed (their charge stays as reserved and
    /// expires with the window).
    pub lost_updates: u64,
    /// Settlements, feedback and cancels that timed out: they may have run. They never switch
    /// the mode.
    pub unconfirmed: u64,
    /// Keys whose ledger was found lost (and treated as full for one window).
    pub lost_ledgers: u64,
}

type QuotaFn<K> = Arc<dyn Fn(&K) -> Option<Quota> + Send + Sync>;

/// Builds a [`RedisStore`]; see [`RedisStore::builder`]. What every store shares (the
/// quotas, the window and the day, the expiry margin, the longest wait, the feedback policy)
/// comes in one [`Settings`] value given to [`RedisStore::builder`]; the setters here are the
/// Redis store's own (where Redis is, the key prefix, timeouts, the outage mode), and none
/// depends on another's order.
pub struct RedisStoreBuilder<K> {
    pub(super) urls: Vec<String>,
    pub(super) cluster: bool,
    pub(super) prefix: String,
    pub(super) settings: Settings<K>,
    pub(super) timeout: Duration,
    pub(super) background_timeout: Option<Duration>,
    pub(super) outage: Outage,
    pub(super) grace: Duration,
}

impl<K> fmt::Debug for RedisStoreBuilder<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisStoreBuilder")
            .field("urls", &self.urls)
            .field("cluster", &self.cluster)
            .field("prefix", &self.prefix)
            .field("settings", &self.settings)
            .field("timeout", &self.timeout)
            .field("background_timeout", &self.background_timeout)
            .field("outage", &self.outage)
            .field("ticket_grace", &self.grace)
            .finish()
    }
}

/// Refuses a limit the script could not carry exactly.
pub(super) fn check_exact(quota: &Quota) -> Result<(), StoreError> {
    match quota.limits().find(|&(_, limit)| limit > MAX_LIMIT) {
        Some((dimension, limit)) => Err(StoreError::LimitTooLarge { dimension, limit }),
        None => Ok(()),
    }
}

/// The local share's quota: `share` of each limit, at least 1.
pub(super) fn scaled(q: Quota, share: f64) -> Quota {
    let mut out = Quota::unlimited();
    for (d, limit) in q.limits() {
        out = out.with(d, Some(((limit as f64 * share).floor() as u64).max(1)));
    }
    out
}

impl<K: Clone + Eq + Hash + StoreKey + Send + Sync + 'static> RedisStoreBuilder<K> {
    /// The prefix of every Redis key the store writes. Default `bt`. Must not hold braces.
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// The URLs are the seed nodes of a Redis Cluster, not one server.
    pub fn cluster(mut self) -> Self {
        self.cluster = true;
        self
    }

    /// Another seed node of the cluster (implies [`cluster`](Self::cluster)).
    pub fn node(mut self, url: impl Into<String>) -> Self {
        self.urls.push(url.into());
        self.cluster = true;
        self
    }

    /// The longest one admission call to Redis may take before the store counts it as down.
    /// Default 250 ms.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The longest a background call (a settlement, throttle feedback, a cancelled ticket) may
    /// take before it is counted as [unconfirmed](StoreStats::unconfirmed). These calls never
    /// switch the store to its outage mode: in a burst they queue behind admissions, and a slow
    /// one may well have run. Default four times the [`timeout`](Self::timeout).
    pub fn background_timeout(mut self, timeout: Duration) -> Self {
        self.background_timeout = Some(timeout);
        self
    }

    /// What to do while Redis is down or slow. Default [`Outage::FailClosed`].
    pub fn on_outage(mut self, outage: Outage) -> Self {
        self.outage = outage;
        self
    }

    /// How long a waiting process keeps its turn in the fleet's line past the instant it was
    /// told to come back (a process that died holds the line no longer). Default 250 ms plus
    /// the timeout.
    pub fn ticket_grace(mut self, grace: Duration) -> Self {
        self.grace = grace;
        self
    }

    /// Checks the configuration and builds the store. It connects on first use; call
    /// [`RedisStore::ready`] to connect (and check the server) now.
    ///
    /// # Errors
    ///
    /// [`StoreError::BadUrl`] for a URL that does not parse, [`StoreError::KeySpansSlots`] for
    /// a prefix with braces, [`StoreError::LimitTooLarge`] for a limit above [`MAX_LIMIT`]; a
    /// bad limit, window or factor as [`ConfigError`] inside [`BuildError::Config`].
    pub fn build(self) -> Result<RedisStore<K>, BuildError> {
        if self.prefix.contains(['{', '}']) {
            return Err(BuildError::Store(StoreError::KeySpansSlots {
                prefix: self.prefix,
            }));
        }
        if let Outage::LocalShare(f) = self.outage
            && !(f > 0.0 && f <= 1.0)
        {
            return Err(BuildError::Config(ConfigError::InvalidFactor {
                name: "outage.local_share",
                value: f,
                expected: "in (0, 1]",
            }));
        }
        if self.timeout.is_zero() || self.background_timeout.is_some_and(|t| t.is_zero()) {
            return Err(BuildError::Config(ConfigError::ZeroWindow));
        }
        let shared = &self.settings;
        shared.check().map_err(BuildError::Config)?;
        if let Some(setting) = shared.in_process_only() {
            return Err(BuildError::Config(ConfigError::Unsupported {
                setting,
                store: "Redis",
            }));
        }
        for q in std::iter::once(&shared.default_quota()).chain(shared.per_key_quotas()) {
            check_exact(q).map_err(BuildError::Store)?;
        }
        let share = match self.outage {
            Outage::LocalShare(f) => f,
            _ => 1.0,
        };
        let quotas = Arc::new(self.settings.clone());
        let configured: QuotaFn<K> = Arc::new(move |k: &K| quotas.quota_of(k));
        // The local ledger is the local share during an outage: the same settings, each
        // quota scaled.
        let for_local = Arc::clone(&configured);
        let fallback = Budget::new(
            self.settings
                .clone()
                .with_quota_source(move |k: &K| for_local(k).map(|q| scaled(q, share))),
        )
        .map_err(BuildError::Config)?;
        let (window, day, margin) = (
            shared.get_window(),
            shared.get_day(),
            shared.get_expiry_margin(),
        );
        let conn = self.connect().map_err(BuildError::Store)?;
        let us = |d: Duration| d.as_micros().min(u128::from(u64::MAX)) as u64;
        let settings = StoreSettings {
            window,
            day,
            window_us: us(window).max(1),
            win_us: us(window + margin).max(1),
            day_us: us(day + margin).max(1),
            aimd: shared.get_aimd().unwrap_or(Aimd {
                decrease: 1.0,
                ..Aimd::default()
            }),
            max_wait: shared.get_max_wait(),
            grace_us: us(if self.grace.is_zero() {
                Duration::from_millis(250) + self.timeout
            } else {
                self.grace
            }),
            outage: self.outage,
        };
        let caller = Caller {
            conn,
            script: Script::new(SCRIPT),
            timeout: self.timeout,
            background_timeout: self.background_timeout.unwrap_or(self.timeout * 4),
            health: Health::default(),
            prefix: self.prefix.clone(),
        };
        Ok(RedisStore {
            inner: Arc::new_cyclic(|this| Inner {
                this: this.clone(),
                caller,
                prefix: self.prefix,
                configured,
                overrides: Mutex::new(HashMap::new()),
                settings,
                fallback,
                keys: Mutex::new(HashMap::new()),
                process: fastrand::u64(..),
                waiters: AtomicU64::new(0),
            }),
        })
    }

    fn connect(&self) -> Result<Conn, StoreError> {
        if self.cluster {
            let client =
                redis::cluster::ClusterClientBuilder::new(self.urls.iter().map(String::as_str))
                    .connection_timeout(self.timeout)
                    .response_timeout(self.timeout)
                    .retries(1)
                    .build()
                    .map_err(|source| StoreError::BadUrl {
                        url: self.urls.join(","),
                        source,
                    })?;
            Ok(Conn::Cluster(ClusterConn {
                client,
                conn: OnceCell::new(),
            }))
        } else {
            let url = self.urls.first().cloned().unwrap_or_default();
            let client = redis::Client::open(url.as_str())
                .map_err(|source| StoreError::BadUrl { url, source })?;
            // Reconnection attempts stay within the probe interval, so the store is back on
            // Redis soon after it answers.
            let config = ConnectionManagerConfig::new()
                .set_connection_timeout(Some(self.timeout))
                .set_response_timeout(Some(self.timeout))
                .set_number_of_retries(1)
                .set_max_delay(self.timeout.min(Duration::from_millis(50)));
            Ok(Conn::Single(SingleConn {
                client,
                config,
                conn: OnceCell::new(),
            }))
        }
    }
}

/// A configuration error of [`RedisStoreBuilder::build`].
#[derive(Debug)]
#[non_exhaustive]
pub enum BuildError {
    /// A limit, window or factor is invalid.
    Config(ConfigError),
    /// A URL, prefix or limit the store cannot take.
    Store(StoreError),
}

impl fmt::Display for BuildError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BuildError::Config(e) => write!(f, "invalid store configuration: {e}"),
            BuildError::Store(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for BuildError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            BuildError::Config(e) => Some(e),
            BuildError::Store(e) => Some(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::budget::Fairness;

    use crate::budget::tests::orders;

    /// Issue 16: the store's own setters do not depend on their order, and a setting only the
    /// in-process store implements is refused, never ignored.
    #[test]
    fn setters_do_not_depend_on_their_order_and_unsupported_settings_are_refused() {
        type Setter = Box<dyn Fn(RedisStoreBuilder<String>) -> RedisStoreBuilder<String>>;
        let setters: Vec<Setter> = vec![
            Box::new(|b| b.prefix("p")),
            Box::new(|b| b.node("redis://127.0.0.1:2")),
            Box::new(|b| b.cluster()),
            Box::new(|b| b.timeout(Duration::from_millis(100))),
            Box::new(|b| b.on_outage(Outage::LocalShare(0.5))),
            Box::new(|b| b.ticket_grace(Duration::from_millis(10))),
        ];
        let mut first: Option<String> = None;
        let orders = orders(setters.len());
        assert_eq!(orders.len(), 720);
        for order in orders {
            let settings = Settings::new().tokens(10);
            let b = order.iter().fold(
                RedisStore::<String>::builder("redis://127.0.0.1:1", settings),
                |b, &i| setters[i](b),
            );
            let state = format!("{b:?}");
            let built = format!("{:?}", b.build().map(|s| format!("{s:?}")));
            let seen = format!("{state} {built}");
            match &first {
                None => first = Some(seen),
                Some(f) => assert_eq!(*f, seen),
            }
        }
        for (settings, setting) in [
            (
                Settings::new().tokens(10).fairness(Fairness::new()),
                "fairness",
            ),
            (Settings::new().tokens(10).max_queue(3), "max_queue"),
            (
                Settings::new()
                    .tokens(10)
                    .resolution(Duration::from_millis(5)),
                "resolution",
            ),
            (
                Settings::new()
                    .tokens(10)
                    .day_bucket(Duration::from_secs(60)),
                "day_bucket",
            ),
        ] {
            let refused = RedisStore::<String>::builder("redis://127.0.0.1:1", settings).build();
            assert!(
                matches!(
                    refused,
                    Err(BuildError::Config(ConfigError::Unsupported { setting: s, .. })) if s == setting
                ),
                "{setting}"
            );
        }
        let missing = RedisStore::<String>::builder("redis://127.0.0.1:1", Settings::new()).build();
        assert!(matches!(
            missing,
            Err(BuildError::Config(ConfigError::MissingLimit))
        ));
    }
}
