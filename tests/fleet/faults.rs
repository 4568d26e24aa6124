//! Each fault under each outage mode, with the mode's written promise checked from an
//! independent record of the admissions (client-side instants bounding each server instant).
//!
//! The callers do not wait in the store's queue (`max_wait` 0: a request that does not fit is
//! refused, and its task tries again a few milliseconds later), so the call that admits a
//! request is the first one after the instant its task records before asking: the server
//! instant lies between the two instants the task records, whatever the machine's load. (A
//! queued request would be admitted by some later call of the store, at an instant its task
//! can only guess, and a guess breaks when the scheduler is slow.)
//!
//! Faults: slow replies past the timeout (`DEBUG SLEEP`), `CLIENT PAUSE`, a kill and a restart
//! empty, `FLUSHALL`, a replica promoted without the last writes (the keys restored to an
//! earlier copy and the script cache gone, as on a replica that takes over), and an eviction
//! (the key's state hash dropped, as `allkeys-lru` would).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bedrock_throttle::budget::{QuotaStore, Settings};
use bedrock_throttle::store::{Outage, RedisStore};
use tokio::time::Instant;

use crate::support::{RedisServer, keys, text};
use crate::{Charge, W, check};

const LIMIT: u64 = 1_000;
const MAX_COST: u64 = 80;
const PROCESSES: usize = 2;
const TIMEOUT: Duration = Duration::from_millis(150);

#[derive(Debug, Clone, Copy)]
enum Fault {
    SlowReplies,
    ClientPause,
    KillRestart,
    FlushAll,
    Failover,
    Eviction,
}

const FAULTS: [Fault; 6] = [
    Fault::SlowReplies,
    Fault::ClientPause,
    Fault::KillRestart,
    Fault::FlushAll,
    Fault::Failover,
    Fault::Eviction,
];

/// Every key with its dump and TTL: a replica's copy.
fn copy(server: &RedisServer) -> Vec<(String, Vec<u8>, i64)> {
    keys(server)
        .into_iter()
        .filter_map(|k| match server.cmd(&["DUMP", &k]) {
            redis::Value::BulkString(d) => {
                let ttl = crate::support::int(&server.cmd(&["PTTL", &k]));
                Some((k, d, ttl.max(0)))
            }
            _ => None,
        })
        .collect()
}

fn restore(server: &RedisServer, copy: &[(String, Vec<u8>, i64)]) {
    let mut c = server.sync_conn().unwrap();
    let _: () = redis::cmd("FLUSHALL").query(&mut c).unwrap();
    for (k, d, ttl) in copy {
        let _: redis::RedisResult<()> = redis::cmd("RESTORE")
            .arg(k)
            .arg(*ttl)
            .arg(d.as_slice())
            .arg("REPLACE")
            .query(&mut c);
    }
    let _: () = redis::cmd("SCRIPT").arg("FLUSH").query(&mut c).unwrap();
}

/// Two processes, three tasks each, at about three times the limit; the fault one window in.
async fn run(fault: Fault, outage: Outage) -> Vec<Charge> {
    let mut server = RedisServer::start();
    let stores: Vec<RedisStore<String>> = (0..PROCESSES)
        .map(|_| {
            RedisStore::builder(
                server.url(),
                Settings::new()
                    .tokens(LIMIT)
                    .window(W)
                    .max_wait(Duration::ZERO),
            )
            .timeout(TIMEOUT)
            .on_outage(outage)
            .build()
            .unwrap()
        })
        .collect();
    for s in &stores {
        s.ready().await.unwrap();
    }
    let record = Arc::new(Mutex::new(Vec::new()));
    let end = Instant::now() + Duration::from_millis(3_000);
    let mut tasks = Vec::new();
    for (i, s) in stores.iter().enumerate() {
        for t in 0..3u64 {
            let (s, record) = (s.clone(), Arc::clone(&record));
            tasks.push(tokio::spawn(async move {
                let mut n = 0u64;
                while Instant::now() < end {
                    n += 1;
                    let cost = 20 + (n * 37 + t * 11 + i as u64 * 7) % (MAX_COST - 20);
                    let lo = Instant::now();
                    let Ok(admitted) = tokio::time::timeout(
                        end.saturating_duration_since(lo),
                        s.acquire("k".to_owned(), cost),
                    )
                    .await
                    else {
                        break;
                    };
                    let Ok(p) = admitted else {
                        // Refused (it does not fit now, or the store refuses in an outage):
                        // another request shortly, about three times the limit in all.
                        tokio::time::sleep(Duration::from_millis(5)).await;
                        continue;
                    };
                    let hi = Instant::now();
                    record.lock().unwrap().push(Charge {
                        lo,
                        hi,
                        amount: cost,
                        admission: true,
                    });
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    p.settle(cost);
                }
            }));
        }
    }
    tokio::time::sleep(Duration::from_millis(600)).await;
    let earlier = copy(&server);
    tokio::time::sleep(Duration::from_millis(400)).await;
    match fault {
        Fault::SlowReplies => {
            let url = server.url();
            std::thread::spawn(move || {
                let mut c = redis::Client::open(url).unwrap().get_connection().unwrap();
                let _: redis::RedisResult<()> =
                    redis::cmd("DEBUG").arg("SLEEP").arg("0.8").query(&mut c);
            });
        }
        Fault::ClientPause => {
            server.cmd(&["CLIENT", "PAUSE", "800", "ALL"]);
        }
        Fault::KillRestart => {
            server.kill();
            tokio::time::sleep(Duration::from_millis(500)).await;
            server.restart();
        }
        Fault::FlushAll => {
            server.cmd(&["FLUSHALL"]);
        }
        Fault::Failover => restore(&server, &earlier),
        Fault::Eviction => {
            for k in keys(&server) {
                if k.ends_with(":s") {
                    server.cmd(&["DEL", &k]);
                }
            }
        }
    }
    for t in tasks {
        t.await.unwrap();
    }
    let stats: Vec<_> = stores.iter().map(RedisStore::store_stats).collect();
    let record = record.lock().unwrap().clone();
    assert!(record.len() > 20, "{fault:?}: too few admissions");
    eprintln!(
        "{fault:?} / {outage:?}: {} admissions, stats {stats:?}, server {}",
        record.len(),
        text(&server.cmd(&["PING"]))
    );
    record
}

/// What a lost ledger that the script survives (`FLUSHALL`, an eviction) may cost beyond a
/// mode's promise, as the store documents it: a process notices the loss through its own
/// charges certainly still in the window, those admitted less than the window minus the
/// timeout ago. Charges in the last `TIMEOUT` of their window are not counted, so the fleet
/// can admit again up to what it admitted in a `TIMEOUT` (the most any `TIMEOUT` of the
/// record holds). A loss the script does not survive (a restart, a failover) is noticed
/// whatever the charges: no slack.
fn unnoticed(fault: Fault, record: &[Charge]) -> u64 {
    if !matches!(fault, Fault::FlushAll | Fault::Eviction) {
        return 0;
    }
    let mut his: Vec<(Instant, u64)> = record.iter().map(|c| (c.hi, c.amount)).collect();
    his.sort_by_key(|&(hi, _)| hi);
    let mut most = 0;
    for (i, &(from, _)) in his.iter().enumerate() {
        let sum: u64 = his[i..]
            .iter()
            .take_while(|&&(hi, _)| hi < from + TIMEOUT)
            .map(|&(_, a)| a)
            .sum();
        most = most.max(sum);
    }
    most
}

/// Fail closed admits nothing the fleet's ledger has not seen, and a lost ledger is treated as
/// full: the limit holds in every window, through every fault (but for what a loss the script
/// survives can cost, [`unnoticed`]).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fail_closed_holds_the_limit_through_every_fault() {
    for fault in FAULTS {
        let record = run(fault, Outage::FailClosed).await;
        check(&record, LIMIT + unnoticed(fault, &record))
            .unwrap_or_else(|e| panic!("{fault:?}: {e}"));
    }
}

/// The local share (half each, two processes) starts from the fleet's usage as last read: the
/// fleet stays within the limit but for what was admitted between a process's last read and
/// the outage (at most one request of the other process in this run's pattern of calls).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_share_keeps_its_promise_through_every_fault() {
    for fault in FAULTS {
        let record = run(fault, Outage::LocalShare(0.5)).await;
        check(
            &record,
            LIMIT + MAX_COST * PROCESSES as u64 + unnoticed(fault, &record),
        )
        .unwrap_or_else(|e| panic!("{fault:?}: {e}"));
    }
}

/// Fail open paces each process at the configured rate: what the server's window held when
/// Redis went away, plus each process's pace (its limit and one request).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fail_open_keeps_its_promise_through_every_fault() {
    for fault in FAULTS {
        let record = run(fault, Outage::FailOpen).await;
        check(
            &record,
            LIMIT + (LIMIT + MAX_COST) * PROCESSES as u64 + unnoticed(fault, &record),
        )
        .unwrap_or_else(|e| panic!("{fault:?}: {e}"));
    }
}
