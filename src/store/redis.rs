//! The Redis (or Valkey) store: the ledger of each quota key in one hash slot, admitted by one
//! server-side script.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::hash::Hash;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::cluster_async::ClusterConnection;
use redis::{Script, Value};
use tokio::sync::{Notify, OnceCell};
use tokio::time::Instant;

use super::error::StoreError;
use super::key::StoreKey;
use crate::budget::{
    AdmissionError, Aimd, Budget, ConfigError, Dimension, DimensionStats, KeyStats, Permit, Quota,
    QuotaStore, StorePermit,
};
use crate::classify::ThrottleCause;

const SCRIPT: &str = include_str!("admit.lua");

/// What the store does while Redis is unreachable or slower than its
/// [timeout](RedisStoreBuilder::timeout).
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub enum Outage {
    /// Wait for the store (retrying with a capped backoff), bounded by the caller's deadline
    /// (dropping the admission) or the [`max_wait`](RedisStoreBuilder::max_wait). Never admits
    /// what the fleet's ledger has not seen.
    FailClosed,
    /// Admit against an in-process ledger holding this fraction of each limit (in `(0, 1]`,
    /// e.g. `1 / expected processes`), until Redis answers again.
    LocalShare(f64),
    /// Admit without limit until Redis answers again.
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
    /// Calls to Redis that failed or timed out.
    pub errors: u64,
    /// Admissions granted by the local share during outages.
    pub local_admissions: u64,
    /// Admissions granted without limit during outages (fail open).
    pub open_admissions: u64,
    /// Settlements and feedback that could not reach Redis (their charge stays as reserved
    /// and expires with the window).
    pub lost_updates: u64,
}

type QuotaFn<K> = Arc<dyn Fn(&K) -> Option<Quota> + Send + Sync>;

/// Builds a [`RedisStore`]; see [`RedisStore::builder`].
pub struct RedisStoreBuilder<K> {
    urls: Vec<String>,
    cluster: bool,
    prefix: String,
    quota: Quota,
    per_key: HashMap<K, Quota>,
    quota_fn: Option<QuotaFn<K>>,
    window: Duration,
    day: Duration,
    margin: Duration,
    aimd: Option<Aimd>,
    max_wait: Option<Duration>,
    timeout: Duration,
    outage: Outage,
    grace: Duration,
}

impl<K> fmt::Debug for RedisStoreBuilder<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisStoreBuilder")
            .field("urls", &self.urls)
            .field("cluster", &self.cluster)
            .field("prefix", &self.prefix)
            .field("quota", &self.quota)
            .field("window", &self.window)
            .field("timeout", &self.timeout)
            .field("outage", &self.outage)
            .finish_non_exhaustive()
    }
}

impl<K: Clone + Eq + Hash + StoreKey + Send + Sync + 'static> RedisStoreBuilder<K> {
    /// The tokens-per-window limit of every key not given one otherwise.
    pub fn tokens(mut self, limit: u64) -> Self {
        self.quota.tokens = Some(limit);
        self
    }

    /// The requests-per-window limit of every key not given one otherwise.
    pub fn requests(mut self, limit: u64) -> Self {
        self.quota.requests = Some(limit);
        self
    }

    /// The tokens-per-day limit of every key not given one otherwise.
    pub fn tokens_per_day(mut self, limit: u64) -> Self {
        self.quota.tokens_per_day = Some(limit);
        self
    }

    /// The quota of every key not given one otherwise.
    pub fn quota(mut self, quota: Quota) -> Self {
        self.quota = quota;
        self
    }

    /// The quota of one key.
    pub fn quota_for(mut self, key: K, quota: Quota) -> Self {
        self.per_key.insert(key, quota);
        self
    }

    /// Computes the quota of a key (`None`: no limit), as
    /// [`BudgetBuilder::quota_fn`](crate::budget::BudgetBuilder::quota_fn).
    pub fn quota_fn(mut self, f: impl Fn(&K) -> Option<Quota> + Send + Sync + 'static) -> Self {
        self.quota_fn = Some(Arc::new(f));
        self
    }

    /// The window `W` of the requests and tokens limits. Default 60 s.
    pub fn window(mut self, window: Duration) -> Self {
        self.window = window;
        self
    }

    /// The window of the tokens-per-day limit. Default 24 hours.
    pub fn day(mut self, day: Duration) -> Self {
        self.day = day;
        self
    }

    /// Extra time each entry counts beyond its window. Default zero.
    pub fn expiry_margin(mut self, margin: Duration) -> Self {
        self.margin = margin;
        self
    }

    /// The feedback policy, shared fleet-wide through the key's state. Default
    /// [`Aimd::default`].
    pub fn aimd(mut self, aimd: Aimd) -> Self {
        self.aimd = Some(aimd);
        self
    }

    /// Feedback only exhausts the window; it does not lower the effective limit.
    pub fn without_aimd(mut self) -> Self {
        self.aimd = None;
        self
    }

    /// The longest a request may wait for admission; longer fails with
    /// [`AdmissionError::WaitTooLong`]. Default: no bound.
    pub fn max_wait(mut self, max_wait: Duration) -> Self {
        self.max_wait = Some(max_wait);
        self
    }

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

    /// The longest one call to Redis may take before the store counts it as down. Default
    /// 250 ms.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
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
    /// a prefix with braces; a bad limit, window or factor as [`ConfigError`] inside
    /// [`BuildError::Config`].
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
        if self.timeout.is_zero() {
            return Err(BuildError::Config(ConfigError::ZeroWindow));
        }
        let share = match self.outage {
            Outage::LocalShare(f) => f,
            _ => 1.0,
        };
        // The local ledger checks the configuration the same way as the in-process store, and
        // is the local share during an outage.
        let scale = move |q: Quota| {
            let mut out = Quota::unlimited();
            for (d, limit) in q.limits() {
                out = out.with(d, Some(((limit as f64 * share).floor() as u64).max(1)));
            }
            out
        };
        let per_key = self.per_key.clone();
        let quota_fn = self.quota_fn.clone();
        let default = self.quota;
        let configured = Arc::new(move |k: &K| -> Option<Quota> {
            if let Some(q) = per_key.get(k) {
                return Some(*q);
            }
            match &quota_fn {
                Some(f) => f(k),
                None => Some(default),
            }
            .filter(|q| !q.is_unlimited())
        });
        let mut local = Budget::<K>::builder()
            .window(self.window)
            .day(self.day)
            .expiry_margin(self.margin);
        local = match self.aimd {
            Some(aimd) => local.aimd(aimd),
            None => local.without_aimd(),
        };
        if let Some(max_wait) = self.max_wait {
            local = local.max_wait(max_wait);
        }
        for (k, q) in &self.per_key {
            local = local.quota_for(k.clone(), scale(*q));
        }
        let for_local = Arc::clone(&configured);
        let fallback = local
            .quota_fn(move |k: &K| for_local(k).map(scale))
            .build()
            .map_err(BuildError::Config)?;
        if self.quota.zero_dimension().is_some()
            || self.per_key.values().any(|q| q.zero_dimension().is_some())
        {
            return Err(BuildError::Config(ConfigError::ZeroLimit));
        }
        let conn = if self.cluster {
            let client =
                redis::cluster::ClusterClientBuilder::new(self.urls.iter().map(String::as_str))
                    .connection_timeout(self.timeout)
                    .response_timeout(self.timeout)
                    .retries(1)
                    .build()
                    .map_err(|source| {
                        BuildError::Store(StoreError::BadUrl {
                            url: self.urls.join(","),
                            source,
                        })
                    })?;
            Conn::Cluster(Arc::new(ClusterConn {
                client,
                conn: OnceCell::new(),
            }))
        } else {
            let url = self.urls.first().cloned().unwrap_or_default();
            let client = redis::Client::open(url.as_str())
                .map_err(|source| BuildError::Store(StoreError::BadUrl { url, source }))?;
            let config = ConnectionManagerConfig::new()
                .set_connection_timeout(Some(self.timeout))
                .set_response_timeout(Some(self.timeout))
                .set_number_of_retries(1)
                .set_max_delay(self.timeout);
            Conn::Single(Arc::new(SingleConn {
                client,
                config,
                conn: OnceCell::new(),
            }))
        };
        let aimd = self.aimd;
        let us = |d: Duration| d.as_micros().min(u128::from(u64::MAX)) as u64;
        let ttl = self.window.max(self.day) + self.margin + Duration::from_secs(1);
        Ok(RedisStore {
            inner: Arc::new_cyclic(|this| Inner {
                this: this.clone(),
                conn,
                script: Script::new(SCRIPT),
                prefix: self.prefix,
                configured,
                overrides: Mutex::new(HashMap::new()),
                window_us: us(self.window).max(1),
                win_us: us(self.window + self.margin).max(1),
                day_us: us(self.day + self.margin).max(1),
                ttl_ms: ttl.as_millis().min(u128::from(u64::MAX)) as u64,
                aimd: aimd.unwrap_or(Aimd {
                    decrease: 1.0,
                    ..Aimd::default()
                }),
                max_wait: self.max_wait,
                timeout: self.timeout,
                grace_us: us(if self.grace.is_zero() {
                    Duration::from_millis(250) + self.timeout
                } else {
                    self.grace
                }),
                outage: self.outage,
                fallback,
                keys: Mutex::new(HashMap::new()),
                process: fastrand::u64(..),
                waiters: AtomicU64::new(0),
                health: Health::default(),
            }),
        })
    }
}

/// A configuration error of [`RedisStoreBuilder::build`].
#[derive(Debug)]
#[non_exhaustive]
pub enum BuildError {
    /// A limit, window or factor is invalid.
    Config(ConfigError),
    /// A URL or prefix is invalid.
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

struct SingleConn {
    client: redis::Client,
    config: ConnectionManagerConfig,
    conn: OnceCell<ConnectionManager>,
}

struct ClusterConn {
    client: redis::cluster::ClusterClient,
    conn: OnceCell<ClusterConnection>,
}

#[derive(Clone)]
enum Conn {
    Single(Arc<SingleConn>),
    Cluster(Arc<ClusterConn>),
}

#[derive(Default)]
struct Health {
    degraded: AtomicBool,
    /// While degraded, the earliest instant (ms since the first outage's epoch) of the next
    /// probe of Redis; the others go straight to the outage mode.
    next_probe: Mutex<Option<Instant>>,
    outages: AtomicU64,
    errors: AtomicU64,
    local_admissions: AtomicU64,
    open_admissions: AtomicU64,
    lost_updates: AtomicU64,
}

/// The local side of one quota key: the process's FIFO line (only its head talks to Redis)
/// and the wake-up of a local refund.
struct LocalKey {
    names: [String; 6],
    turn: tokio::sync::Mutex<()>,
    freed: Notify,
    waiting: AtomicU64,
}

struct Inner<K> {
    /// For the background calls of permits and feedback.
    this: std::sync::Weak<Inner<K>>,
    conn: Conn,
    script: Script,
    prefix: String,
    configured: QuotaFn<K>,
    overrides: Mutex<HashMap<K, Quota>>,
    window_us: u64,
    win_us: u64,
    day_us: u64,
    ttl_ms: u64,
    aimd: Aimd,
    max_wait: Option<Duration>,
    timeout: Duration,
    grace_us: u64,
    outage: Outage,
    fallback: Budget<K>,
    keys: Mutex<HashMap<K, Arc<LocalKey>>>,
    process: u64,
    waiters: AtomicU64,
    health: Health,
}

/// A quota store shared by every process that uses the same Redis (or Valkey, or Redis
/// Cluster): see the [module documentation](super) for the design and its guarantees.
/// Clones share the connection and the local state.
pub struct RedisStore<K> {
    inner: Arc<Inner<K>>,
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
            .field("outage", &self.inner.outage)
            .field(
                "degraded",
                &self.inner.health.degraded.load(Ordering::Relaxed),
            )
            .finish_non_exhaustive()
    }
}

/// What the admission script answered.
enum Reply {
    Admitted { seq: i64, at_us: i64 },
    Refused { wait: Duration, blocked: Dimension },
    AboveLimit { dimension: Dimension, limit: u64 },
}

fn dim_of(i: i64) -> Dimension {
    match i {
        1 => Dimension::Requests,
        2 => Dimension::Tokens,
        _ => Dimension::TokensPerDay,
    }
}

fn int(v: &Value) -> i64 {
    match v {
        Value::Int(i) => *i,
        Value::BulkString(b) => std::str::from_utf8(b)
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(0),
        _ => 0,
    }
}

impl<K: Clone + Eq + Hash + StoreKey + Send + Sync + 'static> RedisStore<K> {
    /// A builder for one server at `url` (`redis://host:port[/db]`; add
    /// [`node`](RedisStoreBuilder::node)s for a cluster). A limited quota or a quota function
    /// is required.
    pub fn builder(url: impl Into<String>) -> RedisStoreBuilder<K> {
        RedisStoreBuilder {
            urls: vec![url.into()],
            cluster: false,
            prefix: "bt".to_owned(),
            quota: Quota::unlimited(),
            per_key: HashMap::new(),
            quota_fn: None,
            window: Duration::from_secs(60),
            day: crate::budget::DAY,
            margin: Duration::ZERO,
            aimd: Some(Aimd::default()),
            max_wait: None,
            timeout: Duration::from_millis(250),
            outage: Outage::FailClosed,
            grace: Duration::ZERO,
        }
    }

    /// Connects now and loads the script: the typed errors of a bad server at start.
    ///
    /// # Errors
    ///
    /// [`StoreError::Unreachable`] (or [`StoreError::Timeout`]) when the server cannot be
    /// reached, [`StoreError::NoScripting`] when it does not run scripts.
    pub async fn ready(&self) -> Result<(), StoreError> {
        let load = async {
            match &self.inner.conn {
                Conn::Single(s) => {
                    let mut c = self.inner.single(s).await?;
                    self.inner.script.prepare_invoke().load_async(&mut c).await
                }
                Conn::Cluster(c) => {
                    let mut conn = self.inner.cluster(c).await?;
                    // Load on every master: a script is cached per node.
                    let reply: redis::RedisResult<Value> = redis::cmd("SCRIPT")
                        .arg("LOAD")
                        .arg(SCRIPT)
                        .query_async(&mut conn)
                        .await;
                    reply.map(|_| String::new())
                }
            }
        };
        match tokio::time::timeout(self.inner.timeout * 4, load).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(StoreError::classify(e)),
            Err(_) => Err(StoreError::Timeout),
        }
    }

    /// One `PING` on the store's connection (on a cluster, to a node), and how long it took:
    /// a health check, and the round trip that an admission's latency compares with.
    ///
    /// # Errors
    ///
    /// A failed or timed-out call.
    pub async fn ping(&self) -> Result<Duration, StoreError> {
        let start = Instant::now();
        let call = async {
            match &self.inner.conn {
                Conn::Single(s) => {
                    let mut c = self.inner.single(s).await?;
                    redis::cmd("PING").query_async::<Value>(&mut c).await
                }
                Conn::Cluster(c) => {
                    let mut conn = self.inner.cluster(c).await?;
                    redis::cmd("PING").query_async::<Value>(&mut conn).await
                }
            }
        };
        match tokio::time::timeout(self.inner.timeout, call).await {
            Ok(Ok(_)) => Ok(start.elapsed()),
            Ok(Err(e)) => Err(StoreError::classify(e)),
            Err(_) => Err(StoreError::Timeout),
        }
    }

    /// The health counters of the store.
    pub fn store_stats(&self) -> StoreStats {
        let h = &self.inner.health;
        StoreStats {
            degraded: h.degraded.load(Ordering::Relaxed),
            outages: h.outages.load(Ordering::Relaxed),
            errors: h.errors.load(Ordering::Relaxed),
            local_admissions: h.local_admissions.load(Ordering::Relaxed),
            open_admissions: h.open_admissions.load(Ordering::Relaxed),
            lost_updates: h.lost_updates.load(Ordering::Relaxed),
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
        let i = &self.inner;
        let mut inv = i.invocation(&local.names);
        inv.arg("st");
        push_limits(&mut inv, &quota);
        inv.arg(i.win_us)
            .arg(i.day_us)
            .arg(i.window_us)
            .arg(i.aimd.recover_per_window);
        let v = i.run(&mut inv).await?;
        let Value::Array(items) = v else {
            return Ok(None);
        };
        let n: Vec<i64> = items.iter().map(int).collect();
        let dim = |j: usize| {
            (n.get(j * 3).copied().unwrap_or(-1) >= 0).then(|| DimensionStats {
                used: n[j * 3] as u64,
                effective_limit: n[j * 3 + 1] as u64,
                limit: n[j * 3 + 2] as u64,
            })
        };
        Ok(Some(KeyStats {
            requests: dim(0),
            tokens: dim(1),
            tokens_per_day: dim(2),
            waiters: n.get(9).copied().unwrap_or(0) as usize,
            outstanding: 0,
            tenants: 0,
            memory: 0,
        }))
    }

    /// Sets the quota of `key` fleet-wide and waits for Redis to have it (see
    /// [`QuotaStore::set_quota`] for the version that does not wait).
    ///
    /// # Errors
    ///
    /// A failed or timed-out call.
    pub async fn apply_quota(&self, key: &K, quota: Quota) -> Result<(), StoreError> {
        self.inner
            .overrides
            .lock()
            .expect("poisoned")
            .insert(key.clone(), quota);
        let _ = self
            .inner
            .fallback
            .set_quota(key, scale_share(&self.inner, quota));
        let local = self.inner.local(key);
        let i = &self.inner;
        let mut inv = i.invocation(&local.names);
        inv.arg("q");
        push_limits(&mut inv, &quota);
        inv.arg(i.ttl_ms);
        i.run(&mut inv).await?;
        local.freed.notify_waiters();
        Ok(())
    }
}

fn scale_share<K>(inner: &Inner<K>, q: Quota) -> Quota {
    let share = match inner.outage {
        Outage::LocalShare(f) => f,
        _ => 1.0,
    };
    let mut out = Quota::unlimited();
    for (d, limit) in q.limits() {
        out = out.with(d, Some(((limit as f64 * share).floor() as u64).max(1)));
    }
    out
}

fn push_limits(inv: &mut redis::ScriptInvocation<'_>, q: &Quota) {
    for d in Dimension::ALL {
        inv.arg(q.get(d).unwrap_or(0));
    }
}

impl<K: Clone + Eq + Hash + StoreKey + Send + Sync + 'static> Inner<K> {
    async fn single(&self, s: &SingleConn) -> redis::RedisResult<ConnectionManager> {
        s.conn
            .get_or_try_init(|| {
                ConnectionManager::new_with_config(s.client.clone(), s.config.clone())
            })
            .await
            .cloned()
    }

    async fn cluster(&self, c: &ClusterConn) -> redis::RedisResult<ClusterConnection> {
        c.conn
            .get_or_try_init(|| c.client.get_async_connection())
            .await
            .cloned()
    }

    fn quota_of(&self, key: &K) -> Option<Quota> {
        if let Some(q) = self.overrides.lock().expect("poisoned").get(key) {
            return Some(*q);
        }
        (self.configured)(key)
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
        let names = ["s", "r", "t", "d", "q", "qc"].map(|s| format!("{tag}:{s}"));
        let local = Arc::new(LocalKey {
            names,
            turn: tokio::sync::Mutex::new(()),
            freed: Notify::new(),
            waiting: AtomicU64::new(0),
        });
        // Idle keys are forgotten (their Redis state expires by itself): a bounded map.
        if keys.len() >= 4096 {
            keys.retain(|_, k| Arc::strong_count(k) > 1);
        }
        keys.insert(key.clone(), Arc::clone(&local));
        local
    }

    fn invocation<'a>(&'a self, names: &[String; 6]) -> redis::ScriptInvocation<'a> {
        let mut inv = self.script.prepare_invoke();
        for n in names {
            inv.key(n.as_str());
        }
        inv
    }

    /// One script call: EVALSHA, and on NOSCRIPT the script is loaded and the call repeated
    /// (the server restarted or flushed its script cache).
    async fn run(&self, inv: &mut redis::ScriptInvocation<'_>) -> Result<Value, StoreError> {
        let call = async {
            match &self.conn {
                Conn::Single(s) => {
                    let mut c = self.single(s).await?;
                    inv.invoke_async::<Value>(&mut c).await
                }
                Conn::Cluster(c) => {
                    let mut conn = self.cluster(c).await?;
                    inv.invoke_async::<Value>(&mut conn).await
                }
            }
        };
        let result = match tokio::time::timeout(self.timeout, call).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(StoreError::classify(e)),
            Err(_) => Err(StoreError::Timeout),
        };
        match &result {
            Ok(_) => self.healthy(),
            Err(e) => self.failed(e),
        }
        result
    }

    fn healthy(&self) {
        if self.health.degraded.swap(false, Ordering::AcqRel) {
            *self.health.next_probe.lock().expect("poisoned") = None;
            tracing::warn!(prefix = %self.prefix, "redis store reachable again: fleet-wide admission resumes");
        }
    }

    fn failed(&self, e: &StoreError) {
        self.health.errors.fetch_add(1, Ordering::Relaxed);
        *self.health.next_probe.lock().expect("poisoned") =
            Some(Instant::now() + self.timeout.max(Duration::from_millis(100)));
        if !self.health.degraded.swap(true, Ordering::AcqRel) {
            self.health.outages.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(prefix = %self.prefix, error = %e, mode = ?self.outage, "redis store unreachable or slow: switching to the outage mode");
        }
    }

    /// Whether this call should go to Redis: always when healthy; when degraded, one probe per
    /// interval.
    fn should_try(&self) -> bool {
        if !self.health.degraded.load(Ordering::Acquire) {
            return true;
        }
        let mut next = self.health.next_probe.lock().expect("poisoned");
        let now = Instant::now();
        match *next {
            Some(at) if at > now => false,
            _ => {
                *next = Some(now + self.timeout.max(Duration::from_millis(100)));
                true
            }
        }
    }

    async fn admit_once(
        &self,
        names: &[String; 6],
        quota: &Quota,
        tokens: u64,
        waiter: &str,
        may_wait: bool,
    ) -> Result<Reply, StoreError> {
        let mut inv = self.invocation(names);
        inv.arg("a").arg(tokens);
        push_limits(&mut inv, quota);
        inv.arg(self.win_us)
            .arg(self.day_us)
            .arg(self.window_us)
            .arg(self.aimd.recover_per_window)
            .arg(waiter)
            .arg(self.grace_us)
            .arg(self.ttl_ms)
            .arg(if may_wait { "1" } else { "0" });
        let v = self.run(&mut inv).await?;
        let Value::Array(items) = v else {
            return Err(StoreError::Redis(redis::RedisError::from((
                redis::ErrorKind::UnexpectedReturnType,
                "admission script reply",
            ))));
        };
        let n: Vec<i64> = items.iter().map(int).collect();
        Ok(match n.first().copied() {
            Some(1) => Reply::Admitted {
                seq: n[1],
                at_us: n[2],
            },
            Some(0) => Reply::Refused {
                wait: Duration::from_micros(n[1].max(1) as u64),
                blocked: dim_of(n[2]),
            },
            _ => Reply::AboveLimit {
                dimension: dim_of(n.get(1).copied().unwrap_or(2)),
                limit: n.get(2).copied().unwrap_or(0) as u64,
            },
        })
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
                let mut inv = inner.invocation(&local.names);
                inv.arg("c").arg(waiter);
                // A lost cancel costs nothing for good: the ticket expires after its grace.
                let _ = inner.run(&mut inv).await;
            });
        }
    }
}

fn free_permit(tokens: u64) -> Permit {
    Permit::from_store(tokens, Box::new(Uncharged(Instant::now())))
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
    // The local line: only its head talks to Redis, so a process holds at most one ticket per
    // key in the fleet's line, and the waiters behind it cost no round trips.
    let _turn = local.turn.lock().await;
    let mut waited_on = None;
    let mut backoff = Duration::from_millis(10);
    loop {
        if !inner.should_try() {
            match inner.outage {
                Outage::FailClosed => {}
                Outage::LocalShare(_) => match inner.fallback.acquire(key.clone(), tokens).await {
                    Ok(permit) => {
                        inner
                            .health
                            .local_admissions
                            .fetch_add(1, Ordering::Relaxed);
                        return Ok(permit);
                    }
                    // Above the local share but within the fleet's limit: only Redis can
                    // admit it, so it waits for Redis (fail closed for this request).
                    Err(AdmissionError::CostAboveLimit { .. }) => {}
                    Err(e) => return Err(e),
                },
                Outage::FailOpen => {
                    inner.health.open_admissions.fetch_add(1, Ordering::Relaxed);
                    return Ok(free_permit(tokens));
                }
            }
            if let Some(max) = inner.max_wait
                && start.elapsed() + backoff > max
            {
                return Err(AdmissionError::WaitTooLong {
                    would_wait: start.elapsed() + backoff,
                    max_wait: max,
                });
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(inner.timeout.max(Duration::from_millis(100)));
            continue;
        }
        match inner
            .admit_once(&local.names, &quota, tokens, &guard.waiter, true)
            .await
        {
            Ok(Reply::Admitted { seq, at_us }) => {
                guard.ticketed = false;
                let charge = RedisCharge {
                    inner: Arc::clone(&inner) as Arc<dyn Settler>,
                    local: Arc::clone(&local),
                    quota,
                    seq,
                    at_us,
                    admitted_at: Instant::now(),
                };
                return Ok(Permit::from_store(tokens, Box::new(charge)).with_waited_on(waited_on));
            }
            Ok(Reply::Refused { wait, blocked }) => {
                guard.ticketed = true;
                waited_on.get_or_insert(blocked);
                if let Some(max) = inner.max_wait
                    && start.elapsed() + wait > max
                {
                    return Err(AdmissionError::WaitTooLong {
                        would_wait: start.elapsed() + wait,
                        max_wait: max,
                    });
                }
                let notified = local.freed.notified();
                tokio::select! {
                    () = tokio::time::sleep(wait) => {}
                    () = notified => {}
                }
            }
            Ok(Reply::AboveLimit { dimension, limit }) => {
                return Err(AdmissionError::CostAboveLimit {
                    dimension,
                    cost: dimension.cost(tokens),
                    limit,
                });
            }
            Err(_) => {
                // `run` switched the mode; the next turn of the loop applies it.
            }
        }
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
    /// [`RedisStore::apply_quota`] to wait for it).
    fn set_quota(&self, key: &K, quota: Quota) -> Result<(), ConfigError> {
        if quota.zero_dimension().is_some() {
            return Err(ConfigError::ZeroLimit);
        }
        if quota.is_unlimited() {
            return Err(ConfigError::MissingLimit);
        }
        let this = self.clone();
        let key = key.clone();
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            handle.spawn(async move {
                if this.apply_quota(&key, quota).await.is_err() {
                    this.inner
                        .health
                        .lost_updates
                        .fetch_add(1, Ordering::Relaxed);
                }
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

    /// The local view of `key`: its configured limits and the requests waiting in this
    /// process (the fleet-wide usage needs a round trip: [`RedisStore::fetch_stats`]).
    fn stats(&self, key: &K) -> Option<KeyStats> {
        let quota = self.inner.quota_of(key)?;
        let waiters = self
            .inner
            .keys
            .lock()
            .expect("poisoned")
            .get(key)
            .map_or(0, |k| k.waiting.load(Ordering::Relaxed) as usize);
        let dim = |d: Dimension| {
            quota.get(d).map(|limit| DimensionStats {
                used: 0,
                limit,
                effective_limit: limit,
            })
        };
        Some(KeyStats {
            requests: dim(Dimension::Requests),
            tokens: dim(Dimension::Tokens),
            tokens_per_day: dim(Dimension::TokensPerDay),
            waiters,
            outstanding: 0,
            tenants: 0,
            memory: 0,
        })
    }
}

/// What a permit's charge needs of its store, without the key type.
trait Settler: Send + Sync + 'static {
    fn settle(&self, charge: &RedisCharge, reserved: u64, refund: u64, debt: u64);
    fn feedback_permit(&self, charge: &RedisCharge, dims: &[Dimension], reserved: u64);
}

impl<K: Clone + Eq + Hash + StoreKey + Send + Sync + 'static> Settler for Inner<K> {
    fn settle(&self, charge: &RedisCharge, reserved: u64, refund: u64, debt: u64) {
        let Ok(handle) = tokio::runtime::Handle::try_current() else {
            self.health.lost_updates.fetch_add(1, Ordering::Relaxed);
            return;
        };
        let Some(me) = self.me() else { return };
        let (local, quota, seq, at) = (
            Arc::clone(&charge.local),
            charge.quota,
            charge.seq,
            charge.at_us,
        );
        handle.spawn(async move {
            let mut inv = me.invocation(&local.names);
            inv.arg("s")
                .arg(seq)
                .arg(at)
                .arg(reserved)
                .arg(refund)
                .arg(debt)
                .arg(me.ttl_ms)
                .arg(quota.tokens.unwrap_or(0))
                .arg(quota.tokens_per_day.unwrap_or(0));
            if me.run(&mut inv).await.is_err() {
                me.health.lost_updates.fetch_add(1, Ordering::Relaxed);
            }
            if refund > 0 {
                local.freed.notify_waiters();
            }
        });
    }

    fn feedback_permit(&self, charge: &RedisCharge, dims: &[Dimension], reserved: u64) {
        if let Some(me) = self.me() {
            me.feedback(
                Arc::clone(&charge.local),
                charge.quota,
                dims,
                Some((charge.seq, charge.at_us)),
                reserved,
            );
        }
    }
}

impl<K: Clone + Eq + Hash + StoreKey + Send + Sync + 'static> Inner<K> {
    /// A strong reference to this state, from the weak one kept for the permits' background
    /// calls.
    fn me(&self) -> Option<Arc<Inner<K>>> {
        self.this.upgrade()
    }

    fn feedback(
        &self,
        local: Arc<LocalKey>,
        quota: Quota,
        dims: &[Dimension],
        permit: Option<(i64, i64)>,
        reserved: u64,
    ) {
        let Ok(handle) = tokio::runtime::Handle::try_current() else {
            self.health.lost_updates.fetch_add(1, Ordering::Relaxed);
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
        let (seq, at) = permit.unwrap_or((-1, -1));
        handle.spawn(async move {
            let mut inv = me.invocation(&local.names);
            inv.arg("t").arg(mask).arg(at).arg(seq).arg(reserved);
            push_limits(&mut inv, &quota);
            inv.arg(me.win_us)
                .arg(me.day_us)
                .arg(me.window_us)
                .arg(me.aimd.decrease)
                .arg(me.aimd.recover_per_window)
                .arg(me.aimd.floor)
                .arg(me.ttl_ms);
            if me.run(&mut inv).await.is_err() {
                me.health.lost_updates.fetch_add(1, Ordering::Relaxed);
            }
        });
    }
}

/// A permit's charge in Redis: where its entries are, to refund them or book debt.
struct RedisCharge {
    inner: Arc<dyn Settler>,
    local: Arc<LocalKey>,
    quota: Quota,
    seq: i64,
    at_us: i64,
    admitted_at: Instant,
}

impl fmt::Debug for RedisCharge {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisCharge")
            .field("seq", &self.seq)
            .field("at_us", &self.at_us)
            .finish_non_exhaustive()
    }
}

impl StorePermit for RedisCharge {
    fn admitted_at(&self) -> Instant {
        self.admitted_at
    }

    fn settle(self: Box<Self>, reserved: u64, refund: u64, debt: u64) {
        // Settling at exactly the reservation changes nothing in the ledger: no round trip.
        if refund == 0 && debt == 0 {
            return;
        }
        self.inner.settle(&self, reserved, refund, debt);
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
