//! The outage modes keep what their docs promise, background calls never switch the store's
//! health, and a lost ledger is noticed.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bedrock_throttle::budget::{Quota, QuotaStore, Settings};
use bedrock_throttle::classify::ThrottleCause;
use bedrock_throttle::store::{Outage, RedisStore, StoreWarning};
use tokio::time::Instant;

use crate::support::{RedisServer, keys};
use crate::{Charge, W, check};

fn with_outage(url: &str, outage: Outage, timeout: Duration) -> RedisStore<String> {
    RedisStore::builder(url, Settings::new().tokens(1_000).window(W))
        .timeout(timeout)
        .on_outage(outage)
        .build()
        .unwrap()
}

/// Issue 17: in a burst, settlements that timed out were counted lost and switched the store
/// to its outage mode. Settlements, feedback and cancels that time out are counted as
/// unconfirmed, and the store stays healthy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn background_calls_never_switch_health() {
    let server = RedisServer::start();
    let store =
        RedisStore::<String>::builder(server.url(), Settings::new().tokens(100_000).window(W))
            .timeout(Duration::from_millis(100))
            .background_timeout(Duration::from_millis(100))
            .on_outage(Outage::FailOpen)
            .build()
            .unwrap();
    store.ready().await.unwrap();
    let mut permits = Vec::new();
    for _ in 0..50 {
        permits.push(store.acquire("k".to_owned(), 100).await.unwrap());
    }
    // A ticket, to be cancelled while the server sleeps.
    let filler = store.acquire("k".to_owned(), 95_000).await.unwrap();
    let waiting = tokio::spawn({
        let store = store.clone();
        async move { store.acquire("k".to_owned(), 10_000).await }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let url = server.url();
    let sleeper = std::thread::spawn(move || {
        let mut c = redis::Client::open(url).unwrap().get_connection().unwrap();
        let _: redis::RedisResult<()> = redis::cmd("DEBUG").arg("SLEEP").arg("0.6").query(&mut c);
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    waiting.abort();
    for (i, p) in permits.into_iter().enumerate() {
        if i % 5 == 0 {
            p.throttled(ThrottleCause::Tokens);
        }
        p.settle(40); // a refund: one background call each
    }
    filler.settle(1);
    QuotaStore::throttled(&store, &"k".to_owned(), ThrottleCause::Requests);
    sleeper.join().unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let stats = store.store_stats();
    assert!(stats.unconfirmed > 0, "{stats:?}");
    assert!(
        !stats.degraded,
        "background calls switched the health: {stats:?}"
    );
    assert_eq!(stats.outages, 0, "{stats:?}");
    assert_eq!(stats.open_admissions, 0, "{stats:?}");
}

/// Issue 17: fail open released the whole local queue at once when Redis went away. The
/// backlog and the arrivals during the outage are paced at the configured rate: in any window
/// at most the limit and one request, from the instants the permits were admitted at. (Not from
/// when each task saw its admission: the pacing is a local decision, and a task that a loaded
/// machine runs late would make admissions look bunched that were paced.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fail_open_paces_the_backlog() {
    let mut server = RedisServer::start();
    let store = with_outage(&server.url(), Outage::FailOpen, Duration::from_millis(100));
    store.ready().await.unwrap();
    // The window is full: what follows queues.
    crate::support::fill_window(&store).await;
    let record = Arc::new(Mutex::new(Vec::new()));
    let mut tasks = Vec::new();
    for _ in 0..20 {
        let (store, record) = (store.clone(), Arc::clone(&record));
        tasks.push(tokio::spawn(async move {
            let p = store.acquire("k".to_owned(), 100).await.unwrap();
            let at = p.admitted_at();
            record.lock().unwrap().push(Charge {
                // A nanosecond wide, so that `check` does not count an admission in its own
                // window twice.
                lo: at - Duration::from_nanos(1),
                hi: at,
                amount: 100,
                admission: true,
            });
            drop(p);
        }));
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    server.kill();
    for t in tasks {
        t.await.unwrap();
    }
    let stats = store.store_stats();
    assert_eq!(stats.open_admissions, 20, "{stats:?}");
    let record = record.lock().unwrap();
    check(&record, 1_000 + 100).unwrap();
}

/// Issue 17: the local share started empty while the fleet's window was full. It starts from
/// the usage this process last read from Redis.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_share_starts_from_the_fleet_usage() {
    let mut server = RedisServer::start();
    let store = with_outage(
        &server.url(),
        Outage::LocalShare(0.5),
        Duration::from_millis(100),
    );
    let held = store.acquire("k".to_owned(), 800).await.unwrap();
    server.kill();
    let p = store.acquire("k".to_owned(), 100).await.unwrap();
    assert_eq!(store.store_stats().local_admissions, 1);
    let local = store.local_share().stats(&"k".to_owned()).unwrap();
    assert_eq!(
        local.tokens.unwrap().limit,
        100,
        "half of the 200 the fleet had left"
    );
    drop((p, held));
}

/// Issue 17: a waiter on the local share held the key's turn, so nothing probed Redis and the
/// store came back 1.6-2.6 s late. A waiter on the local share goes back to Redis when the
/// probe sees it answer, and is admitted there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_share_waiter_goes_back_to_redis() {
    let server = RedisServer::start();
    let store = RedisStore::<String>::builder(
        server.url(),
        Settings::new()
            .tokens(1_000)
            .window(Duration::from_secs(30)),
    )
    .timeout(Duration::from_millis(100))
    .on_outage(Outage::LocalShare(0.5))
    .build()
    .unwrap();
    store.ready().await.unwrap();
    store
        .acquire("k".to_owned(), 100)
        .await
        .unwrap()
        .settle(100);
    server.cmd(&["CLIENT", "PAUSE", "1000", "ALL"]);
    // The local share (half of the 900 left) is used up; the next waits on it, for a window
    // of 30 s, unless Redis comes back.
    let local = store.acquire("k".to_owned(), 450).await.unwrap();
    assert_eq!(store.store_stats().local_admissions, 1);
    let start = Instant::now();
    let back = tokio::time::timeout(Duration::from_secs(10), store.acquire("k".to_owned(), 400))
        .await
        .expect("the waiter went back to Redis")
        .unwrap();
    assert!(
        start.elapsed() < Duration::from_secs(10),
        "admitted long before the local share would have"
    );
    let stats = store.store_stats();
    assert_eq!(stats.local_admissions, 1, "admitted by Redis: {stats:?}");
    assert!(!stats.degraded);
    let fleet = store.fetch_stats(&"k".to_owned()).await.unwrap().unwrap();
    // Redis booked it (and perhaps the 450 too: an admission call that timed out during the
    // pause ran when it ended, a charge nobody uses that expires with the window).
    let used = fleet.tokens.unwrap().used;
    assert!(used == 500 || used == 950, "Redis booked it: {used}");
    drop((local, back));
}

/// Issue 17: a lost ledger (FLUSHALL, a forgotten script, lost writes) over-admitted
/// silently. It is treated as full for one window, counted and logged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_ledger_is_noticed() {
    let server = RedisServer::start();
    let store = RedisStore::<String>::builder(
        server.url(),
        Settings::new().tokens(1_000).window(Duration::from_secs(3)),
    )
    .timeout(Duration::from_millis(300))
    .build()
    .unwrap();
    store.ready().await.unwrap();
    let refused = |key: &'static str| {
        let store = store.clone();
        async move {
            tokio::time::timeout(
                Duration::from_millis(300),
                store.acquire(key.to_owned(), 100),
            )
            .await
            .is_err()
        }
    };

    // FLUSHALL while this process holds a live charge.
    let held = store.acquire("a".to_owned(), 300).await.unwrap();
    server.cmd(&["FLUSHALL"]);
    assert!(refused("a").await, "after FLUSHALL the key is full");
    assert_eq!(store.store_stats().lost_ledgers, 1);
    drop(held);

    // Lost writes: the fleet's usage is below this process's live charge.
    let held = store.acquire("b".to_owned(), 300).await.unwrap();
    for k in keys(&server) {
        if k.ends_with(":s") && server.cmd(&["HGET", &k, "u_t"]) != redis::Value::Nil {
            let used = crate::support::int(&server.cmd(&["HGET", &k, "u_t"]));
            if used == 300 {
                server.cmd(&["HSET", &k, "u_t", "0"]);
            }
        }
    }
    assert!(refused("b").await, "usage below this process's charges");
    assert_eq!(store.store_stats().lost_ledgers, 2);
    drop(held);

    // The server forgot the script (as a promoted replica or a restart would).
    store
        .acquire("c".to_owned(), 100)
        .await
        .unwrap()
        .settle(100);
    server.cmd(&["SCRIPT", "FLUSH"]);
    assert!(refused("c").await, "after NOSCRIPT the key is full");
    assert!(store.store_stats().lost_ledgers >= 3);
    // A key not known before is not refused for it.
    let fresh = RedisStore::<String>::builder(server.url(), Settings::new().tokens(1_000))
        .build()
        .unwrap();
    assert!(!refused_with(&fresh, "d").await);
}

async fn refused_with(store: &RedisStore<String>, key: &str) -> bool {
    tokio::time::timeout(
        Duration::from_millis(300),
        store.acquire(key.to_owned(), 100),
    )
    .await
    .is_err()
}

/// `ready()` reads `maxmemory-policy`: a typed warning unless it is `noeviction`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_warns_about_an_evicting_server() {
    let server = RedisServer::start();
    let store =
        RedisStore::<String>::builder(server.url(), Settings::new().quota(Quota::tokens(10)))
            .build()
            .unwrap();
    assert_eq!(store.ready().await.unwrap(), vec![]);
    server.cmd(&["CONFIG", "SET", "maxmemory-policy", "allkeys-lru"]);
    assert_eq!(
        store.ready().await.unwrap(),
        vec![StoreWarning::Eviction {
            policy: "allkeys-lru".to_owned()
        }]
    );
}
