//! The ledger's bounds: what one script call costs the server and what a key holds, at any
//! rate; integer-exact amounts up to 2^53; keys that live as long as their longest window.

use std::time::Duration;

use bedrock_throttle::budget::{ConfigError, Dimension, Quota, QuotaStore, Settings};
use bedrock_throttle::classify::ThrottleCause;
use bedrock_throttle::store::{BuildError, RedisStore, StoreError};

use crate::support::{RedisServer, int, keys, text};

/// The server-side duration (µs) of every admission call (`EVALSHA` with op `a`) in the slow
/// log (logging every command).
fn admission_calls(server: &RedisServer) -> Vec<u64> {
    let redis::Value::Array(entries) = server.cmd(&["SLOWLOG", "GET", "1000"]) else {
        panic!("SLOWLOG GET")
    };
    let mut out = Vec::new();
    for e in entries {
        let redis::Value::Array(fields) = e else {
            continue;
        };
        let redis::Value::Array(args) = &fields[3] else {
            continue;
        };
        let args: Vec<String> = args.iter().map(text).collect();
        // EVALSHA sha 7 k1..k7 op ...
        if args.len() > 10 && args[0].eq_ignore_ascii_case("evalsha") && args[10] == "a" {
            out.push(int(&fields[2]) as u64);
        }
    }
    out
}

/// Issue 17: a refusal copied the whole day's ledger (37 ms at 29k entries, 8.7 s at 2.88M).
/// Filled with 10^5 admissions, a refusal costs the server well under 5 ms, and the key holds
/// under 1 MB.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusal_on_a_full_day_ledger_is_cheap_and_the_key_small() {
    const FILL: u64 = 100_000;
    let server = RedisServer::start();
    // A day of 10 minutes: the fill spreads over many of its buckets, and none expires.
    let make = || {
        RedisStore::<String>::builder(
            server.url(),
            Settings::new()
                .tokens_per_day(FILL)
                .day(Duration::from_secs(600)),
        )
        .timeout(Duration::from_secs(2))
        .build()
        .unwrap()
    };
    let stores: Vec<_> = (0..8).map(|_| make()).collect();
    stores[0].ready().await.unwrap();
    let mut tasks = Vec::new();
    for s in &stores {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            for _ in 0..FILL / 8 {
                s.acquire("model".to_owned(), 1).await.unwrap().settle(1);
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let stats = stores[0]
        .fetch_stats(&"model".to_owned())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stats.tokens_per_day.unwrap().used, FILL, "the day is full");

    server.cmd(&["CONFIG", "SET", "slowlog-log-slower-than", "0"]);
    server.cmd(&["CONFIG", "SET", "slowlog-max-len", "1000"]);
    server.cmd(&["SLOWLOG", "RESET"]);
    // A refusal (the request then waits; the timeout drops it).
    let refused = tokio::time::timeout(
        Duration::from_millis(500),
        stores[1].acquire("model".to_owned(), 1),
    )
    .await;
    assert!(refused.is_err(), "a full day refuses");
    server.cmd(&["CONFIG", "SET", "slowlog-log-slower-than", "10000"]);
    let calls = admission_calls(&server);
    assert!(!calls.is_empty(), "the refusal is in the slow log");
    for us in &calls {
        assert!(*us < 5_000, "a refusal cost the server {us} µs");
    }

    let mut bytes = 0;
    for k in keys(&server) {
        bytes += int(&server.cmd(&["MEMORY", "USAGE", &k, "SAMPLES", "0"]));
        if k.ends_with(":d") {
            let buckets = int(&server.cmd(&["ZCARD", &k]));
            assert!(buckets <= 1_441, "{buckets} day buckets");
        }
    }
    assert!(bytes < 1 << 20, "the key holds {bytes} bytes");
    eprintln!(
        "refusal after {FILL} admissions: {:?} µs of server time; the key holds {bytes} bytes",
        calls
    );
}

/// The per-minute ledger keeps a bounded number of buckets whatever the rate, and a key
/// without a daily limit lives a window (plus the margin and two steps), not a day.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn window_ledger_is_bounded_and_keys_live_a_window() {
    let server = RedisServer::start();
    let store = RedisStore::<String>::builder(
        server.url(),
        Settings::new()
            .quota(Quota::tokens(1_000_000).with_requests(1_000_000))
            .window(Duration::from_secs(2)),
    )
    .build()
    .unwrap();
    for _ in 0..3_000 {
        store.acquire("k".to_owned(), 3).await.unwrap().settle(2);
    }
    for k in keys(&server) {
        if k.ends_with(":r") || k.ends_with(":t") {
            let buckets = int(&server.cmd(&["ZCARD", &k]));
            assert!(buckets <= 101, "{buckets} buckets in {k}");
        }
        let ttl = int(&server.cmd(&["PTTL", &k]));
        assert!(
            (0..=2_000 + 40 + 1_000).contains(&ttl),
            "{k} lives {ttl} ms, more than its window"
        );
    }
    // Refunds came off their buckets exactly: 3,000 requests of 2 tokens. A settlement is a
    // background call: the last ones may still be on their way when the loop ends, so read
    // until they have landed (a missed refund never lands, and the check fails).
    let mut seen = Vec::new();
    for _ in 0..50 {
        let stats = store.fetch_stats(&"k".to_owned()).await.unwrap().unwrap();
        let (r, t) = (stats.requests.unwrap().used, stats.tokens.unwrap().used);
        seen.push((r, t));
        if r <= 3_000 && t == 2 * r {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (r, t) = *seen.last().unwrap();
    assert!(r <= 3_000 && t == 2 * r, "requests and tokens: {seen:?}");
}

/// Issue 21: a `u64::MAX` limit became a negative fill in the script (`'%d'` of a double), so
/// after a throttle the next admission passed at once. Limits above 2^53 are refused; up to
/// 2^53 every amount stays exact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_above_2_pow_53_are_refused_and_amounts_stay_exact() {
    let server = RedisServer::start();
    let too_big =
        RedisStore::<String>::builder(server.url(), Settings::new().tokens(u64::MAX)).build();
    assert!(matches!(
        too_big,
        Err(BuildError::Store(StoreError::LimitTooLarge {
            dimension: Dimension::Tokens,
            limit: u64::MAX
        }))
    ));
    let per_key = RedisStore::<String>::builder(
        server.url(),
        Settings::new().tokens(10).quota_for(
            "k".to_owned(),
            Quota::tokens(10).with_tokens_per_day((1 << 53) + 1),
        ),
    )
    .build();
    assert!(matches!(
        per_key,
        Err(BuildError::Store(StoreError::LimitTooLarge { .. }))
    ));

    const L: u64 = RedisStore::<String>::MAX_LIMIT;
    let store = RedisStore::<String>::builder(
        server.url(),
        Settings::new().tokens(L).window(Duration::from_secs(2)),
    )
    .build()
    .unwrap();
    assert!(matches!(
        QuotaStore::set_quota(&store, &"k".to_owned(), Quota::tokens(u64::MAX)),
        Err(ConfigError::InvalidFactor { .. })
    ));
    assert!(matches!(
        store
            .apply_quota(&"k".to_owned(), Quota::tokens(L + 1))
            .await,
        Err(StoreError::LimitTooLarge { .. })
    ));
    let key = "k".to_owned();
    let permit = store.acquire(key.clone(), L / 2).await.unwrap();
    QuotaStore::throttled(&store, &key, ThrottleCause::Tokens);
    // The feedback is a background call: wait until Redis has it.
    let mut stats = store.fetch_stats(&key).await.unwrap().unwrap();
    for _ in 0..100 {
        if stats.tokens.unwrap().effective_limit < L {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
        stats = store.fetch_stats(&key).await.unwrap().unwrap();
    }
    let tokens = stats.tokens.unwrap();
    let lowered = (L as f64 * 0.7).floor() as u64;
    // The fill is the lowered limit, exact to the token (the limit recovers since).
    assert_eq!(tokens.used, lowered, "{stats:?}");
    assert!((lowered..L).contains(&tokens.effective_limit), "{stats:?}");
    assert!(
        tokio::time::timeout(
            Duration::from_millis(300),
            store.acquire(key.clone(), L / 4)
        )
        .await
        .is_err(),
        "after the throttle the next admission waits"
    );
    drop(permit);
}
