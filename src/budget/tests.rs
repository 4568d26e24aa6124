//! Unit tests of the engine's internals (the public behaviour is tested in `tests/budget`).

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use tokio::time::advance;

use super::ledger::{Entry, Ledger};
use crate::budget::{AdmissionError, Budget, Dimension};

const W: Duration = Duration::from_secs(60);

fn budget(limit: u64) -> Budget<&'static str> {
    Budget::builder().tokens(limit).window(W).build().unwrap()
}

fn entries(b: &Budget<&'static str>, key: &'static str) -> Vec<(u64, u64)> {
    let keys = b.inner.keys.pin();
    let state = keys.get(&key).unwrap().lock();
    state.dims.as_slice()[0]
        .ledger
        .entries
        .iter()
        .map(|e| (e.at, e.amount))
        .collect()
}

fn used(b: &Budget<&'static str>, key: &'static str) -> u64 {
    b.stats(&key).unwrap().tokens.unwrap().used
}

#[test]
fn a_late_clock_read_joins_the_later_entry() {
    let mut ledger = Ledger::default();
    ledger.push(100, 1);
    // Read the clock at 50 but got the lock after the charge at 100: it counts from 100.
    ledger.push(50, 2);
    ledger.push(150, 4);
    let all: Vec<_> = ledger.entries.iter().map(|e| (e.at, e.amount)).collect();
    assert_eq!(all, [(100, 3), (150, 4)]);
    assert_eq!(ledger.used, 7);
    // A sum that would overflow an entry gets an entry of its own, at the same instant.
    ledger.push(150, u64::MAX);
    assert_eq!(ledger.entries.len(), 3);
    assert_eq!(ledger.last_at(), Some(150));
}

#[test]
fn a_refund_finds_its_entry_by_offset_and_never_goes_below_zero() {
    let mut ledger = Ledger::default();
    ledger.push(10, 5);
    ledger.push(20, 7);
    ledger.push(30, 1);
    ledger.refund(20, 3);
    ledger.refund(10, 99);
    ledger.refund(15, 1); // no entry there: nothing
    let all: Vec<_> = ledger.entries.iter().map(|e| (e.at, e.amount)).collect();
    assert_eq!(all, [(10, 0), (20, 4), (30, 1)]);
    assert_eq!(ledger.used, 5);
}

#[test]
fn expiry_is_exact_and_never_early() {
    let mut ledger = Ledger::default();
    ledger.entries.push_back(Entry { at: 0, amount: 1 });
    ledger.entries.push_back(Entry { at: 10, amount: 2 });
    ledger.used = 3;
    // `now` below the span: nothing can have expired (an entry at 0 counts until `span`).
    ledger.expire(100, 99);
    assert_eq!(ledger.used, 3);
    ledger.expire(100, 100);
    assert_eq!((ledger.used, ledger.entries.len()), (2, 1));
    ledger.expire(100, 109);
    assert_eq!(ledger.used, 2);
    ledger.expire(100, 110);
    assert_eq!((ledger.used, ledger.entries.len()), (0, 0));
    // A refund for an expired entry changes nothing.
    ledger.refund(10, 2);
    assert_eq!(ledger.used, 0);
}

#[tokio::test(start_paused = true)]
async fn permits_sharing_an_entry_refund_only_their_own_part() {
    let b = budget(10);
    let p = b.try_acquire("k", 4).unwrap();
    let q = b.try_acquire("k", 5).unwrap();
    assert_eq!(entries(&b, "k").len(), 1, "same instant, one entry");
    assert_eq!(p.admitted_at(), q.admitted_at());
    p.settle(0);
    assert_eq!(used(&b, "k"), 5);
    q.settle(2);
    assert_eq!(used(&b, "k"), 2);
    assert_eq!(entries(&b, "k")[0].1, 2);
    // Debt at a later instant is an entry of its own.
    advance(Duration::from_secs(1)).await;
    b.try_acquire("k", 1).unwrap().settle(3);
    assert_eq!(entries(&b, "k").len(), 2);
    assert_eq!(used(&b, "k"), 5);
    advance(W).await;
    assert_eq!(used(&b, "k"), 0);
}

#[tokio::test(start_paused = true)]
async fn outstanding_counts_permits_and_granted_waiters_only() {
    let b = budget(10);
    let p = b.try_acquire("k", 10).unwrap();
    let mut cx = Context::from_waker(Waker::noop());
    let mut small = b.acquire("k", 4);
    let mut big = b.acquire("k", 8);
    assert!(Pin::new(&mut small).poll(&mut cx).is_pending());
    assert!(Pin::new(&mut big).poll(&mut cx).is_pending());
    let s = b.stats(&"k").unwrap();
    assert_eq!((s.outstanding, s.waiters), (1, 2));
    // The big one fails (not collected yet), the small one is granted by the refund.
    b.set_quota(&"k", crate::budget::Quota::tokens(6)).unwrap();
    p.settle(2);
    let s = b.stats(&"k").unwrap();
    assert_eq!(
        (s.outstanding, s.waiters, s.tokens.unwrap().used),
        (1, 0, 6)
    );
    match Pin::new(&mut big).poll(&mut cx) {
        Poll::Ready(Err(e)) => assert_eq!(
            e,
            AdmissionError::CostAboveLimit {
                dimension: Dimension::Tokens,
                cost: 8,
                limit: 6
            }
        ),
        other => panic!("expected the failure, got {other:?}"),
    }
    let granted = match Pin::new(&mut small).poll(&mut cx) {
        Poll::Ready(Ok(permit)) => permit,
        other => panic!("expected the grant, got {other:?}"),
    };
    assert_eq!(b.stats(&"k").unwrap().outstanding, 1);
    drop(granted);
    drop((small, big));
    assert_eq!(b.stats(&"k").unwrap().outstanding, 0);
}

#[tokio::test(start_paused = true)]
async fn a_burst_of_waiters_gives_its_queue_memory_back() {
    let b = budget(1);
    let p = b.try_acquire("k", 1).unwrap();
    let mut cx = Context::from_waker(Waker::noop());
    let mut waiters: Vec<_> = (0..1_000).map(|_| b.acquire("k", 1)).collect();
    for w in &mut waiters {
        assert!(Pin::new(w).poll(&mut cx).is_pending());
    }
    drop(waiters);
    drop(p);
    let keys = b.inner.keys.pin();
    let state = keys.get(&"k").unwrap().lock();
    let (len, capacity) = state.waiting.as_ref().unwrap().fifo_capacity().unwrap();
    assert_eq!(len, 0);
    assert!(capacity <= super::queue::KEEP_CAPACITY);
}

/// Every order of `0..n` (the order tests of every builder use it).
pub(crate) fn orders(n: usize) -> Vec<Vec<usize>> {
    if n == 0 {
        return vec![Vec::new()];
    }
    let mut out = Vec::new();
    for rest in orders(n - 1) {
        for i in 0..=rest.len() {
            let mut order = rest.clone();
            order.insert(i, n - 1);
            out.push(order);
        }
    }
    out
}

/// Issue 16: no setter of the one settings value depends on another's order.
#[test]
fn settings_setters_do_not_depend_on_their_order() {
    use crate::budget::{Quota, Settings};
    type Setter = Box<dyn Fn(Settings<&'static str>) -> Settings<&'static str>>;
    let setters: Vec<Setter> = vec![
        Box::new(|s| s.quota(Quota::requests(50).with_tokens(1))),
        Box::new(|s| s.tokens(100_000)),
        Box::new(|s| s.window(Duration::from_secs(10))),
        Box::new(|s| s.day(Duration::from_secs(3_600))),
        Box::new(|s| s.expiry_margin(Duration::from_millis(5))),
        Box::new(|s| s.max_wait(Duration::from_secs(1))),
        Box::new(|s| s.quota_for("k", Quota::tokens(5))),
    ];
    let seen: Vec<String> = orders(setters.len())
        .into_iter()
        .map(|order| {
            let settings = order.iter().fold(Settings::new(), |s, &i| setters[i](s));
            let quotas = (settings.default_quota(), settings.quota_of(&"k"));
            let built = format!("{:?}", Budget::new(settings.clone()));
            format!("{settings:?} {quotas:?} {built}")
        })
        .collect();
    assert_eq!(seen.len(), 5_040);
    assert!(seen.iter().all(|s| *s == seen[0]), "{}", seen[0]);
}
