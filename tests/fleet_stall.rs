//! Fail open after a stall, in a test binary of its own: the test stops its whole process for
//! 400 ms (`SIGSTOP`, then `SIGCONT` from a shell), as a loaded machine stops a program, which
//! would disturb any other test running in the same process.
//!
//! Fail open paces requests at the configured rate by handing each one an instant ahead. A
//! stall wakes every request whose instant fell due meanwhile at once; before the store checked
//! real departures they left together (four in the same millisecond), and a window after them
//! held 1,200 tokens where the mode promises at most the limit and one request (1,100). A CI
//! run on a loaded machine failed the same way.

#![cfg(feature = "redis")]

#[allow(dead_code)]
#[path = "fleet/support.rs"]
mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bedrock_throttle::budget::{QuotaStore, Settings};
use bedrock_throttle::store::{Outage, RedisStore};
use tokio::time::Instant;

use crate::support::RedisServer;

const W: Duration = Duration::from_secs(1);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fail_open_keeps_its_pace_through_a_stall() {
    let mut server = RedisServer::start();
    let store: RedisStore<String> =
        RedisStore::builder(server.url(), Settings::new().tokens(1_000).window(W))
            .timeout(Duration::from_millis(100))
            .on_outage(Outage::FailOpen)
            .build()
            .unwrap();
    store.ready().await.unwrap();
    // The window is full: what follows queues, then is paced when Redis goes away.
    crate::support::fill_window(&store).await;
    let admitted = Arc::new(Mutex::new(Vec::<Instant>::new()));
    let mut tasks = Vec::new();
    for _ in 0..20 {
        let (store, admitted) = (store.clone(), Arc::clone(&admitted));
        tasks.push(tokio::spawn(async move {
            let p = store.acquire("k".to_owned(), 100).await.unwrap();
            admitted.lock().unwrap().push(p.admitted_at());
        }));
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    server.kill();
    while admitted.lock().unwrap().len() < 3 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let pid = std::process::id();
    let mut stall = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("kill -STOP {pid}; sleep 0.4; kill -CONT {pid}"))
        .spawn()
        .unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(stall.wait().unwrap().success());
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(store.store_stats().open_admissions, 20);
    // In any window, at most the limit and one request: 11 admissions of 100.
    let mut at = admitted.lock().unwrap().clone();
    at.sort();
    let offsets: Vec<u128> = at.iter().map(|a| (*a - at[0]).as_millis()).collect();
    for (i, &start) in at.iter().enumerate() {
        let within = at[i..].iter().take_while(|&&a| a < start + W).count();
        assert!(
            within <= 11,
            "{within} admissions in one window: {offsets:?} ms"
        );
    }
}
