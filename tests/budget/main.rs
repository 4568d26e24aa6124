//! The admission engine's guarantees, under `tokio::time::pause()`.

mod day;
mod in_flight;
mod invariant;
mod learn;
mod prop;
mod scopes;

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bedrock_throttle::budget::{
    Acquire, AdmissionError, Aimd, Budget, ConfigError, Dimension, Quota,
};
use bedrock_throttle::classify::ThrottleCause;
use tokio::time::{Instant, advance, sleep};

const W: Duration = Duration::from_secs(60);

fn budget(limit: u64) -> Budget<&'static str> {
    Budget::builder().tokens(limit).window(W).build().unwrap()
}

/// Polls a future once with a no-op waker.
fn poll_once<F: Future + Unpin>(f: &mut F) -> Poll<F::Output> {
    Pin::new(f).poll(&mut Context::from_waker(Waker::noop()))
}

/// Lets spawned tasks run without moving the paused clock.
async fn settle_tasks() {
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
}

#[tokio::test(start_paused = true)]
async fn admits_at_once_within_the_limit() {
    let b = budget(10);
    let p = b.acquire("k", 4).await.unwrap();
    assert_eq!(p.reserved(), 4);
    assert_eq!(p.admitted_at(), Instant::now());
    let q = b.try_acquire("k", 6).unwrap();
    let s = b.stats(&"k").unwrap();
    assert_eq!(
        (
            s.tokens.unwrap().used,
            s.tokens.unwrap().limit,
            s.tokens.unwrap().effective_limit,
            s.waiters,
            s.outstanding
        ),
        (10, 10, 10, 0, 2)
    );
    drop(p);
    drop(q);
    assert_eq!(b.stats(&"k").unwrap().outstanding, 0);
    assert_eq!(
        b.stats(&"k").unwrap().tokens.unwrap().used,
        10,
        "unsettled permits keep their charge"
    );
}

#[tokio::test(start_paused = true)]
async fn waits_exactly_until_the_window_slides() {
    let b = budget(10);
    b.try_acquire("k", 6).unwrap().settle(6);
    advance(Duration::from_secs(20)).await;
    b.try_acquire("k", 4).unwrap().settle(4);
    let start = Instant::now();
    // 5 needs the first entry (6 at t=0) to expire: at t=60, i.e. 40 s from now.
    let p = b.acquire("k", 5).await.unwrap();
    assert_eq!(start.elapsed(), Duration::from_secs(40));
    assert_eq!(p.admitted_at(), Instant::now());
    // 5 more needs the 4 of t=20 to expire too: t=80.
    let p2 = b.acquire("k", 5).await.unwrap();
    assert_eq!(start.elapsed(), Duration::from_secs(60));
    drop((p, p2));
}

#[tokio::test(start_paused = true)]
async fn zero_cost_and_unlimited_keys_are_free() {
    let b: Budget<u32> = Budget::builder()
        .quota_fn(|k| {
            if *k == 0 {
                None
            } else {
                Some(Quota::tokens(5))
            }
        })
        .build()
        .unwrap();
    for _ in 0..100 {
        b.acquire(0, 1_000_000).await.unwrap().settle(2_000_000);
    }
    assert!(b.stats(&0).is_none(), "a key without limit has no state");
    b.try_acquire(1, 5).unwrap();
    let p = b.try_acquire(1, 0).unwrap();
    assert_eq!(p.reserved(), 0);
    assert_eq!(b.stats(&1).unwrap().tokens.unwrap().used, 5);
}

#[tokio::test(start_paused = true)]
async fn per_key_limits_take_precedence() {
    let b: Budget<&str> = Budget::builder()
        .tokens(10)
        .quota_for("big", Quota::tokens(100))
        .build()
        .unwrap();
    b.try_acquire("big", 100).unwrap();
    assert!(matches!(
        b.try_acquire("small", 11),
        Err(AdmissionError::CostAboveLimit {
            dimension: Dimension::Tokens,
            cost: 11,
            limit: 10
        })
    ));
}

#[tokio::test(start_paused = true)]
async fn fifo_per_key_large_head_is_not_overtaken() {
    let b = budget(10);
    b.try_acquire("k", 5).unwrap();
    advance(Duration::from_secs(10)).await;
    b.try_acquire("k", 5).unwrap();
    // At t=60 five units free up: enough for the 1s behind, not for the 8 at the head.
    let order = Arc::new(Mutex::new(Vec::new()));
    let mut tasks = Vec::new();
    for (name, cost) in [("head8", 8), ("a1", 1), ("b1", 1)] {
        let (b, order) = (b.clone(), order.clone());
        tasks.push(tokio::spawn(async move {
            let p = b.acquire("k", cost).await.unwrap();
            order.lock().unwrap().push((name, p.admitted_at()));
            p
        }));
        settle_tasks().await;
    }
    let t0 = Instant::now();
    for t in tasks {
        drop(t.await.unwrap());
    }
    let order = order.lock().unwrap().clone();
    let names: Vec<_> = order.iter().map(|(n, _)| *n).collect();
    assert_eq!(names, ["head8", "a1", "b1"]);
    // The head needs both entries to expire: t=70 (60 s after t0 = 10 s).
    for (_, at) in &order {
        assert_eq!(*at - t0, Duration::from_secs(60));
    }
}

#[tokio::test(start_paused = true)]
async fn independent_keys_never_block_each_other() {
    let b = budget(10);
    b.try_acquire("a", 10).unwrap();
    let waiter = {
        let b = b.clone();
        tokio::spawn(async move { b.acquire("a", 10).await.map(|_| Instant::now()) })
    };
    settle_tasks().await;
    assert_eq!(b.stats(&"a").unwrap().waiters, 1);
    let t0 = Instant::now();
    for _ in 0..10 {
        b.acquire("b", 1).await.unwrap();
    }
    assert_eq!(Instant::now(), t0, "key b never waited");
    assert_eq!(waiter.await.unwrap().unwrap() - t0, W);
}

#[tokio::test(start_paused = true)]
async fn cost_above_limit_fails_at_once() {
    let b = budget(10);
    let err = b.acquire("k", 11).await.unwrap_err();
    assert_eq!(
        err,
        AdmissionError::CostAboveLimit {
            dimension: Dimension::Tokens,
            cost: 11,
            limit: 10
        }
    );
    assert!(err.to_string().contains("never be admitted"));
    assert_eq!(b.stats(&"k").unwrap().tokens.unwrap().used, 0);
}

#[tokio::test(start_paused = true)]
async fn wait_too_long_carries_the_computed_wait() {
    let b: Budget<&str> = Budget::builder()
        .tokens(10)
        .max_wait(Duration::from_secs(90))
        .build()
        .unwrap();
    b.try_acquire("k", 10).unwrap();
    let t0 = Instant::now();
    // The first waiter would wait 60 s: accepted.
    let first = {
        let b = b.clone();
        tokio::spawn(async move { b.acquire("k", 10).await.map(|p| p.admitted_at()) })
    };
    settle_tasks().await;
    // The second would wait behind it: until its entry of t=60 expires at t=120.
    let err = b.acquire("k", 10).await.unwrap_err();
    assert_eq!(
        err,
        AdmissionError::WaitTooLong {
            would_wait: Duration::from_secs(120),
            max_wait: Duration::from_secs(90)
        }
    );
    assert_eq!(Instant::now(), t0, "refused at once");
    assert_eq!(first.await.unwrap().unwrap() - t0, W);
    // try_acquire reports the wait with a max_wait of zero.
    assert_eq!(
        b.try_acquire("k", 1).unwrap_err(),
        AdmissionError::WaitTooLong {
            would_wait: W,
            max_wait: Duration::ZERO
        }
    );
}

#[tokio::test(start_paused = true)]
async fn wait_bound_holds_when_feedback_lengthens_the_wait() {
    let b: Budget<&str> = Budget::builder()
        .tokens(10)
        .max_wait(Duration::from_secs(80))
        .aimd(Aimd {
            decrease: 0.5,
            ..Aimd::default()
        })
        .build()
        .unwrap();
    b.try_acquire("k", 6).unwrap();
    let t0 = Instant::now();
    // Would wait 60 s: accepted.
    let waiter = {
        let b = b.clone();
        tokio::spawn(async move { b.acquire("k", 6).await })
    };
    settle_tasks().await;
    advance(Duration::from_secs(30)).await;
    // Throttled at t=30: the effective limit drops to 5 (already below the 6 in the window, so
    // no fill) and recovers 1 per window, so the waiter (6) could only be admitted at t=90,
    // past its deadline (t=80). It gives up at t=60, when its timer fires and it learns so.
    b.throttled(&"k", ThrottleCause::Tokens);
    let err = waiter.await.unwrap().unwrap_err();
    assert_eq!(
        err,
        AdmissionError::WaitTooLong {
            would_wait: Duration::from_secs(90),
            max_wait: Duration::from_secs(80)
        }
    );
    assert_eq!(Instant::now() - t0, Duration::from_secs(60));
    assert_eq!(b.stats(&"k").unwrap().waiters, 0);
}

#[tokio::test(start_paused = true)]
async fn queue_full_is_refused_with_the_wait() {
    let b: Budget<&str> = Budget::builder().tokens(10).max_queue(2).build().unwrap();
    b.try_acquire("k", 10).unwrap();
    let mut fa = b.acquire("k", 10);
    let mut fb = b.acquire("k", 10);
    assert!(poll_once(&mut fa).is_pending());
    assert!(poll_once(&mut fb).is_pending());
    let mut fc = b.acquire("k", 10);
    match poll_once(&mut fc) {
        Poll::Ready(Err(AdmissionError::QueueFull { depth, would_wait })) => {
            assert_eq!(depth, 2);
            assert_eq!(would_wait, Some(Duration::from_secs(180)));
        }
        other => panic!("expected QueueFull, got {other:?}"),
    }
    drop(fa);
    // A place freed: the next one queues.
    let mut fd = b.acquire("k", 10);
    assert!(poll_once(&mut fd).is_pending());
    assert_eq!(b.stats(&"k").unwrap().waiters, 2);
}

#[tokio::test(start_paused = true)]
async fn a_huge_max_wait_means_no_bound() {
    let b: Budget<&str> = Budget::builder()
        .tokens(1)
        .max_wait(Duration::MAX)
        .build()
        .unwrap();
    b.try_acquire("k", 1).unwrap();
    let t0 = Instant::now();
    b.acquire("k", 1).await.unwrap();
    assert_eq!(Instant::now() - t0, W);
}

#[tokio::test(start_paused = true)]
async fn max_queue_zero_never_waits() {
    let b: Budget<&str> = Budget::builder().tokens(10).max_queue(0).build().unwrap();
    b.try_acquire("k", 10).unwrap();
    assert!(matches!(
        b.acquire("k", 1).await,
        Err(AdmissionError::QueueFull { depth: 0, .. })
    ));
}

#[tokio::test(start_paused = true)]
async fn a_cancelled_waiter_leaves_no_trace() {
    let b = budget(10);
    b.try_acquire("k", 10).unwrap();
    let t0 = Instant::now();
    let mut head = b.acquire("k", 10);
    assert!(poll_once(&mut head).is_pending());
    let behind = {
        let b = b.clone();
        tokio::spawn(async move { b.acquire("k", 4).await.map(|p| p.admitted_at()) })
    };
    settle_tasks().await;
    assert_eq!(b.stats(&"k").unwrap().waiters, 2);
    drop(head);
    assert_eq!(b.stats(&"k").unwrap().waiters, 1);
    // The 4 behind moves up and is admitted as soon as the window slides.
    assert_eq!(behind.await.unwrap().unwrap() - t0, W);
    let s = b.stats(&"k").unwrap();
    assert_eq!((s.tokens.unwrap().used, s.waiters), (4, 0));
}

#[tokio::test(start_paused = true)]
async fn a_waiter_granted_then_dropped_is_refunded() {
    let b = budget(10);
    let p = b.try_acquire("k", 10).unwrap();
    let mut waiter = b.acquire("k", 6);
    assert!(poll_once(&mut waiter).is_pending());
    // The refund admits the waiter (granted, not yet polled) ...
    p.settle(2);
    assert_eq!(b.stats(&"k").unwrap().tokens.unwrap().used, 8);
    assert_eq!(b.stats(&"k").unwrap().outstanding, 1);
    // ... and dropping it before it sees its permit gives the 6 back.
    drop(waiter);
    let s = b.stats(&"k").unwrap();
    assert_eq!(
        (s.tokens.unwrap().used, s.outstanding, s.waiters),
        (2, 0, 0)
    );
}

#[tokio::test(start_paused = true)]
async fn refund_wakes_the_head_at_once_and_debt_delays_it() {
    let b = budget(10);
    let p = b.try_acquire("k", 10).unwrap();
    let t0 = Instant::now();
    let waiter = {
        let b = b.clone();
        tokio::spawn(async move { b.acquire("k", 5).await.map(|p| p.admitted_at()) })
    };
    settle_tasks().await;
    advance(Duration::from_secs(5)).await;
    p.settle(3); // refund 7: the 5 fits now.
    assert_eq!(waiter.await.unwrap().unwrap() - t0, Duration::from_secs(5));

    // Debt: reserved 2, used 9, booked at the settle instant t=10.
    let d = b.try_acquire("k", 2).unwrap(); // used 3 + 5 + 2 = 10
    advance(Duration::from_secs(5)).await;
    d.settle(9);
    assert_eq!(b.stats(&"k").unwrap().tokens.unwrap().used, 17);
    // 1 more fits once the 3 (t=0), the 5 and the 2 (t=5) have expired: at t=65.
    b.acquire("k", 1).await.unwrap();
    assert_eq!(Instant::now() - t0, Duration::from_secs(65));
    assert_eq!(b.stats(&"k").unwrap().tokens.unwrap().used, 8);
    // 3 more needs the debt (7, booked at t=10, not back-dated to t=5) to expire: t=70.
    b.acquire("k", 3).await.unwrap();
    assert_eq!(Instant::now() - t0, Duration::from_secs(70));
}

#[tokio::test(start_paused = true)]
async fn set_limit_raise_wakes_waiters_and_lower_fails_those_above() {
    let b = budget(10);
    b.try_acquire("k", 10).unwrap();
    let small = {
        let b = b.clone();
        tokio::spawn(async move { b.acquire("k", 5).await.map(|p| p.admitted_at()) })
    };
    settle_tasks().await;
    let t0 = Instant::now();
    b.set_quota(&"k", Quota::tokens(15)).unwrap();
    assert_eq!(small.await.unwrap().unwrap(), t0, "admitted at once");
    assert_eq!(b.stats(&"k").unwrap().tokens.unwrap().limit, 15);

    let big = {
        let b = b.clone();
        tokio::spawn(async move { b.acquire("k", 12).await })
    };
    settle_tasks().await;
    b.set_quota(&"k", Quota::tokens(8)).unwrap();
    assert_eq!(
        big.await.unwrap().unwrap_err(),
        AdmissionError::CostAboveLimit {
            dimension: Dimension::Tokens,
            cost: 12,
            limit: 8
        }
    );
    assert_eq!(
        b.set_quota(&"k", Quota::tokens(0)),
        Err(ConfigError::ZeroLimit)
    );
    // A key set at run time keeps its limit across idleness.
    advance(2 * W).await;
    assert_eq!(b.evict_idle(), 0);
    assert_eq!(b.stats(&"k").unwrap().tokens.unwrap().limit, 8);
}

#[tokio::test(start_paused = true)]
async fn feedback_exhausts_the_window_and_lowers_then_recovers_the_limit() {
    let b: Budget<&str> = Budget::builder()
        .tokens(100)
        .aimd(Aimd {
            decrease: 0.5,
            recover_per_window: 0.1,
            floor: 0.2,
            learn: None,
        })
        .build()
        .unwrap();
    b.try_acquire("k", 10).unwrap();
    let t0 = Instant::now();
    b.throttled(&"k", ThrottleCause::Tokens);
    let s = b.stats(&"k").unwrap();
    assert_eq!(
        (s.tokens.unwrap().used, s.tokens.unwrap().effective_limit),
        (50, 50),
        "limit halved, window full up to it"
    );
    // A queued request waits for the window to empty (the synthetic entry expires with the
    // real one, a full window later), sooner than the limit would grow by its cost.
    let p = b.acquire("k", 20).await.unwrap();
    assert_eq!(p.admitted_at() - t0, W);
    // Recovery: +10 per window from 50, computed at any instant.
    assert_eq!(b.stats(&"k").unwrap().tokens.unwrap().effective_limit, 60);
    advance(W / 2).await;
    assert_eq!(b.stats(&"k").unwrap().tokens.unwrap().effective_limit, 65);
    // A second throttle multiplies the current effective limit, not below the floor (20).
    b.throttled(&"k", ThrottleCause::Tokens);
    assert_eq!(b.stats(&"k").unwrap().tokens.unwrap().effective_limit, 32);
    b.throttled(&"k", ThrottleCause::Tokens);
    b.throttled(&"k", ThrottleCause::Tokens);
    assert_eq!(b.stats(&"k").unwrap().tokens.unwrap().effective_limit, 20);
    advance(W).await;
    assert_eq!(b.stats(&"k").unwrap().tokens.unwrap().effective_limit, 30);
    let t1 = Instant::now();
    let full = b.try_acquire("k", 30).unwrap();
    // 5 more needs an effective limit of 35: recovery gets there in half a window.
    let q = b.acquire("k", 5).await.unwrap();
    assert_eq!(q.admitted_at() - t1, W / 2);
    // Full recovery, then the key is idle again.
    drop((p, full, q));
    advance(10 * W).await;
    let s = b.stats(&"k").unwrap();
    assert_eq!(
        (s.tokens.unwrap().effective_limit, s.tokens.unwrap().used),
        (100, 0)
    );
    assert_eq!(b.evict_idle(), 1);
}

#[tokio::test(start_paused = true)]
async fn throttles_of_requests_sent_before_a_decrease_do_not_lower_the_limit_again() {
    // The plain AIMD numbers (the learned policy keeps the same echo rule: see `learn`).
    let b: Budget<&str> = Budget::builder()
        .tokens(100)
        .window(W)
        .aimd(Aimd::plain())
        .build()
        .unwrap();
    let early = [
        b.try_acquire("k", 10).unwrap(),
        b.try_acquire("k", 10).unwrap(),
        b.try_acquire("k", 10).unwrap(),
    ];
    advance(W / 10).await;
    // Three requests in flight together are throttled together: one decrease (to 70). Each
    // settles at 0 (the server booked nothing), which does not reopen the window.
    for permit in early {
        permit.throttled(ThrottleCause::Tokens);
        permit.settle(0);
    }
    let s = b.stats(&"k").unwrap();
    assert_eq!(
        (s.tokens.unwrap().effective_limit, s.tokens.unwrap().used),
        (70, 70),
        "one decrease, filled up to it"
    );
    // A request admitted after the decrease and throttled is news: the limit goes down again.
    advance(W).await;
    let late = b.try_acquire("k", 5).unwrap();
    let before = b.stats(&"k").unwrap().tokens.unwrap().effective_limit;
    assert_eq!(before, 80, "recovered 10 in a window");
    late.throttled(ThrottleCause::Tokens);
    assert_eq!(b.stats(&"k").unwrap().tokens.unwrap().effective_limit, 56);
    // Feedback without a permit always lowers.
    b.throttled(&"k", ThrottleCause::Tokens);
    assert_eq!(b.stats(&"k").unwrap().tokens.unwrap().effective_limit, 39);
}

#[tokio::test(start_paused = true)]
async fn settle_as_keeps_at_most_the_servers_reservation_at_the_admission() {
    let b = budget(100);
    // Reserved 50; the server reserved 30; the call used 40: 30 stay at the admission (t=0),
    // 10 are debt at the settle instant (t=10 s), 20 come back at once.
    let p = b.try_acquire("k", 50).unwrap();
    advance(Duration::from_secs(10)).await;
    p.settle_against(40, 30);
    assert_eq!(b.stats(&"k").unwrap().tokens.unwrap().used, 40);
    advance(W - Duration::from_secs(10)).await;
    assert_eq!(
        b.stats(&"k").unwrap().tokens.unwrap().used,
        10,
        "the debt outlives the admission"
    );
    advance(Duration::from_secs(10)).await;
    assert_eq!(b.stats(&"k").unwrap().tokens.unwrap().used, 0);
    // Used less than the server reserved: a refund, as `settle`.
    let p = b.try_acquire("k", 50).unwrap();
    p.settle_against(20, 30);
    assert_eq!(b.stats(&"k").unwrap().tokens.unwrap().used, 20);
    // The server reserved more than we did: nothing moves to the admission beyond our charge.
    let p = b.try_acquire("k", 30).unwrap();
    p.settle_against(45, 60);
    assert_eq!(b.stats(&"k").unwrap().tokens.unwrap().used, 65);
    advance(W).await;
    assert_eq!(b.stats(&"k").unwrap().tokens.unwrap().used, 0);
}

#[tokio::test(start_paused = true)]
async fn a_waiter_above_the_lowered_limit_waits_for_recovery() {
    let b: Budget<&str> = Budget::builder()
        .tokens(100)
        .window(Duration::from_secs(10))
        .aimd(Aimd::plain())
        .build()
        .unwrap();
    let t0 = Instant::now();
    b.throttled(&"k", ThrottleCause::Tokens); // window full until t=10, effective 70, +10 per 10 s.
    let p = b.acquire("k", 90).await.unwrap();
    // Effective reaches 90 at t = 20 s.
    assert_eq!(p.admitted_at() - t0, Duration::from_secs(20));
}

#[tokio::test(start_paused = true)]
async fn throttle_without_aimd_only_exhausts() {
    let b: Budget<&str> = Budget::builder().tokens(10).without_aimd().build().unwrap();
    b.throttled(&"k", ThrottleCause::Tokens);
    let s = b.stats(&"k").unwrap();
    assert_eq!(
        (s.tokens.unwrap().used, s.tokens.unwrap().effective_limit),
        (10, 10)
    );
}

#[tokio::test(start_paused = true)]
async fn idle_keys_are_evicted_but_never_with_an_outstanding_permit() {
    let b = budget(10);
    for k in ["a", "b", "c"] {
        b.try_acquire(k, 3).unwrap().settle(3);
    }
    let held = b.try_acquire("d", 3).unwrap();
    assert_eq!(b.key_count(), 4);
    assert_eq!(b.evict_idle(), 0, "every window still holds entries");
    advance(W).await;
    assert_eq!(b.evict_idle(), 3);
    assert_eq!(b.key_count(), 1);
    // The held permit still accounts to its key: a debt settles on the live state.
    held.settle(10);
    assert_eq!(b.stats(&"d").unwrap().tokens.unwrap().used, 7);
    advance(W).await;
    assert_eq!(b.evict_idle(), 1);
    assert_eq!(b.key_count(), 0);
    // Keys come back with a fresh state.
    b.try_acquire("a", 10).unwrap();
    assert_eq!(b.stats(&"a").unwrap().tokens.unwrap().used, 10);
}

#[tokio::test(start_paused = true)]
async fn new_keys_sweep_idle_ones_so_memory_stays_bounded() {
    let b = budget(10);
    for i in 0..10_000u32 {
        let key: &'static str = Box::leak(i.to_string().into_boxed_str());
        b.try_acquire(key, 1).unwrap().settle(1);
        advance(Duration::from_millis(60)).await;
    }
    // 10,000 keys over 600 s, each idle after 60 s: at most about two windows' worth remain.
    assert!(b.key_count() <= 2_100, "{} keys kept", b.key_count());
}

#[test]
fn bad_configuration_is_refused() {
    let err = |b: bedrock_throttle::budget::BudgetBuilder<u8>| b.build().unwrap_err();
    assert_eq!(err(Budget::builder().tokens(0)), ConfigError::ZeroLimit);
    assert_eq!(
        err(Budget::builder().tokens(1).window(Duration::ZERO)),
        ConfigError::ZeroWindow
    );
    assert_eq!(err(Budget::builder()), ConfigError::MissingLimit);
    assert_eq!(
        err(Budget::builder().tokens(1).window(Duration::MAX)),
        ConfigError::WindowTooLong
    );
    assert_eq!(
        err(Budget::builder().tokens(1).expiry_margin(Duration::MAX)),
        ConfigError::WindowTooLong
    );
    assert_eq!(
        err(Budget::builder().tokens(1).quota_for(3, Quota::tokens(0))),
        ConfigError::ZeroLimit
    );
    for aimd in [
        Aimd {
            decrease: f64::NAN,
            ..Aimd::default()
        },
        Aimd {
            decrease: 0.0,
            ..Aimd::default()
        },
        Aimd {
            decrease: 1.5,
            ..Aimd::default()
        },
        Aimd {
            floor: -0.1,
            ..Aimd::default()
        },
        Aimd {
            recover_per_window: f64::INFINITY,
            ..Aimd::default()
        },
        Aimd {
            recover_per_window: 0.0,
            ..Aimd::default()
        },
    ] {
        let e = err(Budget::builder().tokens(1).aimd(aimd));
        assert!(matches!(e, ConfigError::InvalidFactor { .. }), "{aimd:?}");
        assert!(e.to_string().contains("must be"));
    }
}

#[test]
fn a_waiter_is_small() {
    // The future of a waiting request, plus its 40-byte queue slot, stays well under 256 bytes.
    assert!(std::mem::size_of::<Acquire<String>>() <= 128);
    assert!(std::mem::size_of::<Acquire<(String, String)>>() <= 160);
}

#[test]
fn permits_and_budgets_are_send_sync_static() {
    fn check<T: Send + Sync + 'static>() {}
    check::<bedrock_throttle::budget::Permit>();
    check::<Budget<String>>();
    fn send<T: Send + 'static>() {}
    send::<Acquire<String>>();
}

/// 10,000 concurrent waiters on one key, on a multi-thread runtime with a short real window:
/// all complete and the recorded charges never exceed the limit in any window.
#[test]
fn ten_thousand_concurrent_waiters_on_a_multi_thread_runtime() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .unwrap();
    let window = Duration::from_millis(50);
    let limit = 1_000;
    let b: Budget<&str> = Budget::builder()
        .tokens(limit)
        .window(window)
        .build()
        .unwrap();
    let charges = rt.block_on(async {
        let mut tasks = Vec::with_capacity(10_000);
        for i in 0..10_000u64 {
            let b = b.clone();
            tasks.push(tokio::spawn(async move {
                let cost = 1 + i % 3;
                let p = b.acquire("k", cost).await.unwrap();
                let at = p.admitted_at();
                // Some refund part of their reservation.
                let actual = if i % 5 == 0 { cost - 1 } else { cost };
                tokio::task::yield_now().await;
                p.settle(actual);
                (at, actual)
            }));
        }
        let mut charges = Vec::with_capacity(10_000);
        for t in tasks {
            charges.push(t.await.unwrap());
        }
        charges
    });
    assert_eq!(charges.len(), 10_000);
    invariant::check_windows(&charges, &[], window, limit).unwrap();
    let s = b.stats(&"k").unwrap();
    assert_eq!((s.waiters, s.outstanding), (0, 0));
}

#[tokio::test(start_paused = true)]
async fn stays_correct_over_a_long_paused_run() {
    // Continuous pressure from two keys with mixed costs for an hour of paused time.
    let b = budget(50);
    let log = Arc::new(Mutex::new(Vec::new()));
    let mut tasks = Vec::new();
    for i in 0..2_000u64 {
        let (b, log) = (b.clone(), log.clone());
        tasks.push(tokio::spawn(async move {
            sleep(Duration::from_millis(i * 1_700)).await;
            let cost = 1 + (i * 7) % 20;
            let p = b
                .acquire(if i % 2 == 0 { "x" } else { "y" }, cost)
                .await
                .unwrap();
            if i % 2 == 0 {
                log.lock().unwrap().push((p.admitted_at(), cost));
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let log = log.lock().unwrap().clone();
    invariant::check_windows(&log, &[], W, 50).unwrap();
}
