//! One script call to Redis: the connection, the arguments, the replies, and the store's health.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::cluster_async::ClusterConnection;
use redis::{Script, Value};
use tokio::sync::{Notify, OnceCell};

use super::error::StoreError;
use crate::budget::Dimension;

pub(super) const SCRIPT: &str = include_str!("admit.lua");

pub(super) struct SingleConn {
    pub(super) client: redis::Client,
    pub(super) config: ConnectionManagerConfig,
    pub(super) conn: OnceCell<ConnectionManager>,
}

pub(super) struct ClusterConn {
    pub(super) client: redis::cluster::ClusterClient,
    pub(super) conn: OnceCell<ClusterConnection>,
}

pub(super) enum Conn {
    Single(SingleConn),
    Cluster(ClusterConn),
}

impl Conn {
    async fn single(s: &SingleConn) -> redis::RedisResult<ConnectionManager> {
        s.conn
            .get_or_try_init(|| {
                ConnectionManager::new_with_config(s.client.clone(), s.config.clone())
            })
            .await
            .cloned()
    }

    async fn cluster(c: &ClusterConn) -> redis::RedisResult<ClusterConnection> {
        c.conn
            .get_or_try_init(|| c.client.get_async_connection())
            .await
            .cloned()
    }

    /// Sends one command (routed by its first key on a cluster).
    pub(super) async fn query(&self, cmd: &redis::Cmd) -> redis::RedisResult<Value> {
        match self {
            Conn::Single(s) => {
                let mut c = Self::single(s).await?;
                cmd.query_async(&mut c).await
            }
            Conn::Cluster(c) => {
                let mut conn = Self::cluster(c).await?;
                cmd.query_async(&mut conn).await
            }
        }
    }
}

/// The arguments of one script call (after the key names).
#[derive(Default)]
pub(super) struct Args {
    args: Vec<String>,
    /// The position of the "script cache was lost" flag, set on a `NOSCRIPT` retry.
    lost_flag: Option<usize>,
}

impl Args {
    pub(super) fn new(op: &str) -> Self {
        Args {
            args: vec![op.to_owned()],
            lost_flag: None,
        }
    }

    pub(super) fn arg(&mut self, a: impl std::fmt::Display) -> &mut Self {
        self.args.push(a.to_string());
        self
    }

    /// The flag the script reads to treat the key as full after its cache (and with it,
    /// perhaps, the ledger) was lost.
    pub(super) fn lost_flag(&mut self, lost: bool) -> &mut Self {
        self.lost_flag = Some(self.args.len());
        self.arg(if lost { "1" } else { "0" })
    }

    fn command(&self, head: &str, script: &str, names: &[String; 7]) -> redis::Cmd {
        let mut cmd = redis::cmd(head);
        cmd.arg(script).arg(names.len());
        for n in names {
            cmd.arg(n.as_str());
        }
        for a in &self.args {
            cmd.arg(a.as_str());
        }
        cmd
    }
}

/// Who makes a call: an admission (its failure switches the store to its outage mode), or a
/// background settlement, feedback or cancel (counted, never switching the health).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) enum Role {
    Admission,
    Background,
    /// A call the caller awaits itself (`fetch_stats`, `apply_quota`): its error is returned.
    Query,
}

/// The store's health: degraded or not, its counters, and the wake-up of the waiters when
/// Redis answers again.
#[derive(Default)]
pub(super) struct Health {
    pub(super) degraded: AtomicBool,
    pub(super) prober: AtomicBool,
    pub(super) recovered: Notify,
    pub(super) outages: AtomicU64,
    pub(super) errors: AtomicU64,
    pub(super) local_admissions: AtomicU64,
    pub(super) open_admissions: AtomicU64,
    pub(super) lost_updates: AtomicU64,
    pub(super) unconfirmed: AtomicU64,
    pub(super) lost_ledgers: AtomicU64,
    /// Bumped each time the server forgot the script: every key's next admission treats its
    /// ledger as lost.
    pub(super) script_epoch: AtomicU64,
    /// Whether a script call ever succeeded (a `NOSCRIPT` before that is the first load).
    pub(super) ever_ran: AtomicBool,
    pub(super) last_error: Mutex<Option<String>>,
}

/// The script, and how calls to it are timed and counted.
pub(super) struct Caller {
    pub(super) conn: Conn,
    pub(super) script: Script,
    pub(super) timeout: Duration,
    pub(super) background_timeout: Duration,
    pub(super) health: Health,
    pub(super) prefix: String,
}

impl Caller {
    /// One script call: EVALSHA, and on `NOSCRIPT` the full script with EVAL (which loads it).
    /// A `NOSCRIPT` after the script has run once means the server lost its cache: a restart,
    /// a failover to a replica, a `SCRIPT FLUSH`. The ledger may be gone with it, so the repeat
    /// carries the lost flag and every key's next admission does the same.
    pub(super) async fn run(
        &self,
        names: &[String; 7],
        args: &mut Args,
        role: Role,
    ) -> Result<Value, StoreError> {
        let timeout = match role {
            Role::Background => self.background_timeout,
            Role::Admission | Role::Query => self.timeout,
        };
        let call = async {
            let first = self
                .conn
                .query(&args.command("EVALSHA", self.script.get_hash(), names))
                .await;
            match first {
                Err(e)
                    if matches!(
                        e.kind(),
                        redis::ErrorKind::Server(redis::ServerErrorKind::NoScript)
                    ) =>
                {
                    if self.health.ever_ran.load(Ordering::Acquire) {
                        self.health.script_epoch.fetch_add(1, Ordering::AcqRel);
                        if let Some(at) = args.lost_flag {
                            args.args[at] = "1".to_owned();
                        }
                    }
                    self.conn.query(&args.command("EVAL", SCRIPT, names)).await
                }
                other => other,
            }
        };
        let result = match tokio::time::timeout(timeout, call).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(StoreError::classify(e)),
            Err(_) => Err(StoreError::Timeout),
        };
        match (&result, role) {
            (Ok(_), _) => self.health.ever_ran.store(true, Ordering::Release),
            (Err(StoreError::Timeout), Role::Background) => {
                // It may well have run: counted apart, and no reason to doubt the server.
                self.health.unconfirmed.fetch_add(1, Ordering::Relaxed);
            }
            (Err(_), Role::Background) => {
                self.health.lost_updates.fetch_add(1, Ordering::Relaxed);
            }
            (Err(e), Role::Admission) => {
                self.failed(e);
            }
            (Err(_), Role::Query) => {
                self.health.errors.fetch_add(1, Ordering::Relaxed);
            }
        }
        result
    }

    /// An admission call failed: the store switches to its outage mode (logged once per
    /// outage). Returns whether this call made the switch.
    pub(super) fn failed(&self, e: &StoreError) -> bool {
        self.health.errors.fetch_add(1, Ordering::Relaxed);
        *self.health.last_error.lock().expect("poisoned") = Some(e.to_string());
        let switched = !self.health.degraded.swap(true, Ordering::AcqRel);
        if switched {
            self.health.outages.fetch_add(1, Ordering::Relaxed);
        }
        switched
    }

    /// Redis answered a probe: admissions go back to it at once.
    pub(super) fn healthy(&self) {
        if self.health.degraded.swap(false, Ordering::AcqRel) {
            tracing::warn!(prefix = %self.prefix, "redis store reachable again: fleet-wide admission resumes");
        }
        self.health.recovered.notify_waiters();
    }

    /// One `PING` within the admission timeout.
    pub(super) async fn ping(&self) -> Result<(), StoreError> {
        match tokio::time::timeout(self.timeout, self.conn.query(&redis::cmd("PING"))).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(StoreError::classify(e)),
            Err(_) => Err(StoreError::Timeout),
        }
    }
}

/// What the admission script answered.
pub(super) enum Reply {
    Admitted {
        at_us: i64,
        lost: Lost,
        view: View,
    },
    Refused {
        wait: Duration,
        blocked: Dimension,
        lost: Lost,
        view: View,
    },
    AboveLimit {
        dimension: Dimension,
        limit: u64,
    },
}

/// Why the script found a key's ledger lost.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) enum Lost {
    No,
    /// The server forgot the script (restart, failover, `SCRIPT FLUSH`).
    ScriptCache,
    /// The state hash is gone while this process holds live charges on the key.
    State,
    /// The fleet's usage is below this process's own live charges.
    Usage,
}

impl Lost {
    fn of(code: i64) -> Self {
        match code {
            1 => Lost::ScriptCache,
            2 => Lost::State,
            3 => Lost::Usage,
            _ => Lost::No,
        }
    }

    pub(super) fn why(self) -> &'static str {
        match self {
            Lost::No => "",
            Lost::ScriptCache => {
                "the server forgot the script (a restart, a failover to a replica that may lack \
                 the last writes, or SCRIPT FLUSH)"
            }
            Lost::State => {
                "the key's state is gone while this process holds live charges on it (eviction, \
                 FLUSHALL, a restart)"
            }
            Lost::Usage => {
                "the fleet's usage is below this process's own live charges (lost writes: \
                 eviction, a failover, a restart)"
            }
        }
    }
}

/// The fleet's figures of one key, as the last script call read them: used and effective
/// limit of each dimension (`None`: not limited).
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct View {
    pub(super) used: [Option<u64>; 3],
    pub(super) effective: [Option<u64>; 3],
}

pub(super) fn dim_of(i: i64) -> Dimension {
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

pub(super) fn ints(v: &Value) -> Option<Vec<i64>> {
    match v {
        Value::Array(items) => Some(items.iter().map(int).collect()),
        _ => None,
    }
}

fn view(n: &[i64]) -> View {
    let get = |j: usize| {
        n.get(j)
            .copied()
            .filter(|&x| x >= 0)
            .map(|x| x.unsigned_abs())
    };
    View {
        used: [get(0), get(1), get(2)],
        effective: [get(3), get(4), get(5)],
    }
}

impl Reply {
    pub(super) fn parse(v: &Value) -> Result<Reply, StoreError> {
        let Some(n) = ints(v) else {
            return Err(StoreError::Redis(redis::RedisError::from((
                redis::ErrorKind::UnexpectedReturnType,
                "admission script reply",
            ))));
        };
        let at = |j: usize| n.get(j).copied().unwrap_or(0);
        Ok(match at(0) {
            1 => Reply::Admitted {
                at_us: at(1),
                lost: Lost::of(at(2)),
                view: view(n.get(3..).unwrap_or_default()),
            },
            0 => Reply::Refused {
                wait: Duration::from_micros(at(1).max(1).unsigned_abs()),
                blocked: dim_of(at(2)),
                lost: Lost::of(at(3)),
                view: view(n.get(4..).unwrap_or_default()),
            },
            _ => Reply::AboveLimit {
                dimension: dim_of(n.get(1).copied().unwrap_or(2)),
                limit: at(2).max(0).unsigned_abs(),
            },
        })
    }
}
