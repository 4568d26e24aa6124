//! Fair shares between tenants and lanes, under `tokio::time::pause()`.

mod robust;
mod scenarios;

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use bedrock_throttle::budget::{
    Acquire, AdmissionError, Budget, Class, ConfigError, Fairness, Lane, Permit,
};
use tokio::time::{Instant, advance};

use crate::scenarios::{W, paused};

fn fair(limit: u64, fairness: Fairness) -> Budget<&'static str> {
    Budget::builder()
        .tokens(limit)
        .window(W)
        .fairness(fairness)
        .build()
        .unwrap()
}

fn poll_once<F: Future + Unpin>(f: &mut F) -> Poll<F::Output> {
    Pin::new(f).poll(&mut Context::from_waker(Waker::noop()))
}

#[test]
fn a_flooding_tenant_does_not_hold_back_a_light_one() {
    let (_, p99) = paused(scenarios::flood(true));
    assert!(p99 <= W, "B's p99 wait {p99:?} is above one window");
    let (_, fifo) = paused(scenarios::flood(false));
    assert!(fifo > W, "FIFO keeps B behind A's backlog ({fifo:?})");
}

#[test]
fn backlogged_tenants_share_tokens_by_weight() {
    let shares = paused(scenarios::weighted(true));
    for (share, want) in shares.iter().zip([1.0 / 6.0, 2.0 / 6.0, 3.0 / 6.0]) {
        assert!(
            (share - want).abs() <= 0.05 * want,
            "shares {shares:?}, expected 1:2:3 within 5%"
        );
    }
}

#[test]
fn the_priority_lane_waits_less_than_a_window_while_batch_saturates() {
    let (p99, batch) = paused(scenarios::priority(true, 0.3, None));
    assert!(p99 <= W, "interactive p99 {p99:?}");
    assert!(
        batch > 0.6,
        "batch takes the rest (work-conserving): {batch}"
    );
}

#[test]
fn a_lower_lane_gets_its_minimum_even_under_a_flood_of_priority() {
    let (_, starved) = paused(scenarios::priority(true, 1.5, None));
    assert!(
        starved < 0.02,
        "without a minimum, priority wins: {starved}"
    );
    let (_, batch) = paused(scenarios::priority(true, 1.5, Some(0.25)));
    assert!(
        batch >= 0.24,
        "batch share {batch} below its minimum of 0.25"
    );
}

#[tokio::test(start_paused = true)]
async fn the_lighter_tenant_goes_first_and_fifo_holds_within_a_tenant() {
    let b = fair(10, Fairness::new());
    let full = b.try_acquire("k", 10).unwrap();
    let mut a1 = b.acquire_as("k", 5, Class::tenant("a"));
    let mut a2 = b.acquire_as("k", 5, Class::tenant("a"));
    let mut a3 = b.acquire_as("k", 5, Class::tenant("a"));
    let mut b1 = b.acquire_as("k", 5, Class::tenant("b"));
    for f in [&mut a1, &mut a2, &mut a3, &mut b1] {
        assert!(poll_once(f).is_pending());
    }
    assert_eq!(b.stats(&"k").unwrap().tenants, 2);
    // Both tenants start even: a1 (first in), then b1 (b's tag is below a's), then a2.
    full.settle(0);
    let p1 = match poll_once(&mut a1) {
        Poll::Ready(Ok(p)) => p,
        other => panic!("{other:?}"),
    };
    assert!(poll_once(&mut a2).is_pending());
    let q1 = match poll_once(&mut b1) {
        Poll::Ready(Ok(p)) => p,
        other => panic!("{other:?}"),
    };
    p1.settle(0);
    q1.settle(0);
    assert!(matches!(poll_once(&mut a2), Poll::Ready(Ok(_))));
    assert!(matches!(poll_once(&mut a3), Poll::Ready(Ok(_))));
    drop((a1, a2, a3, b1));
}

type Waiters = Vec<(char, Option<Acquire<&'static str>>)>;

/// Polls every waiter still waiting once; returns who was admitted, with the permits.
fn poll_all(waiters: &mut Waiters) -> Vec<(char, Permit)> {
    let mut out = Vec::new();
    for (who, slot) in waiters.iter_mut() {
        let Some(f) = slot else { continue };
        match poll_once(f) {
            Poll::Ready(Ok(p)) => {
                out.push((*who, p));
                *slot = None;
            }
            Poll::Ready(Err(e)) => panic!("{e}"),
            Poll::Pending => {}
        }
    }
    out
}

fn waiters(b: &Budget<&'static str>, who: char, n: usize, cost: u64) -> Waiters {
    (0..n)
        .map(|_| {
            let class = Class::tenant(who.to_string());
            (who, Some(b.acquire_as("k", cost, class)))
        })
        .collect()
}

#[tokio::test(start_paused = true)]
async fn a_tenant_that_was_idle_gets_no_saved_burst() {
    // a is alone for a window, then b comes: from then on they share evenly, b does not get
    // the share it "saved".
    let b = fair(10, Fairness::new());
    let hold = b.try_acquire("k", 10).unwrap();
    let mut queued = waiters(&b, 'a', 20, 1);
    assert!(poll_all(&mut queued).is_empty());
    hold.settle(0);
    // a's first ten take the window (their charges stay: the permits are kept).
    let mut kept = poll_all(&mut queued);
    assert_eq!(kept.len(), 10);
    queued.append(&mut waiters(&b, 'b', 10, 1));
    assert!(poll_all(&mut queued).is_empty());
    advance(W).await;
    let admitted = poll_all(&mut queued);
    let bs = admitted.iter().filter(|(w, _)| *w == 'b').count();
    assert_eq!(admitted.len(), 10);
    assert!((4..=6).contains(&bs), "b got {bs} of 10");
    kept.extend(admitted);
}

#[tokio::test(start_paused = true)]
async fn settled_usage_corrects_the_account() {
    // a reserves 10 and uses 30 (debt); b reserves and uses 10: b is owed, so it is served
    // more, about three to one.
    let budget = fair(100, Fairness::new());
    let hold = budget.try_acquire("k", 100).unwrap();
    let mut queued = waiters(&budget, 'a', 40, 10);
    queued.append(&mut waiters(&budget, 'b', 40, 10));
    assert!(poll_all(&mut queued).is_empty());
    drop(hold);
    let mut served = Vec::new();
    while served.len() < 40 {
        advance(W).await;
        for (who, p) in poll_all(&mut queued) {
            served.push(who);
            p.settle(if who == 'a' { 30 } else { 10 });
        }
    }
    let a = served.iter().filter(|&&w| w == 'a').count() as f64;
    let b = served.iter().filter(|&&w| w == 'b').count() as f64;
    assert!(
        b > 2.0 * a,
        "b should be served about 3x as often: a {a}, b {b}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_dropped_waiter_leaves_no_trace_and_the_next_is_selected() {
    let b = fair(10, Fairness::new());
    let hold = b.try_acquire("k", 10).unwrap();
    let mut a = b.acquire_as("k", 8, Class::tenant("a"));
    let mut c = b.acquire_as("k", 8, Class::tenant("c"));
    assert!(poll_once(&mut a).is_pending());
    assert!(poll_once(&mut c).is_pending());
    drop(a);
    assert_eq!(b.stats(&"k").unwrap().waiters, 1);
    let start = Instant::now();
    drop(hold);
    let p = c.await.unwrap();
    assert_eq!(
        start.elapsed(),
        W,
        "c waits for the window, as the head would"
    );
    drop(p);
    advance(W * 2).await;
    let s = b.stats(&"k").unwrap();
    assert_eq!(
        (s.waiters, s.outstanding, s.tokens.unwrap().used),
        (0, 0, 0)
    );
    assert_eq!(s.tenants, 0, "idle tenants are forgotten");
}

#[tokio::test(start_paused = true)]
async fn max_queue_bounds_each_tenant_and_max_wait_ends_exactly() {
    let budget = Budget::builder()
        .tokens(10)
        .window(W)
        .max_queue(2)
        .max_wait(W * 3)
        .fairness(Fairness::new())
        .build()
        .unwrap();
    let _hold = budget.try_acquire("k", 10).unwrap();
    let mut a: Vec<_> = (0..3)
        .map(|_| budget.acquire_as("k", 10, Class::tenant("a")))
        .collect();
    assert!(poll_once(&mut a[0]).is_pending());
    assert!(poll_once(&mut a[1]).is_pending());
    assert!(matches!(
        poll_once(&mut a[2]),
        Poll::Ready(Err(AdmissionError::QueueFull { depth: 2, .. }))
    ));
    // Another tenant still gets in line: the bound is per tenant.
    let mut b1 = budget.acquire_as("k", 10, Class::tenant("b"));
    assert!(poll_once(&mut b1).is_pending());
    // b1's estimated wait: behind a's first (its tag is below b's), then b: 2 windows.
    let mut b2 = budget.acquire_as("k", 10, Class::tenant("b"));
    assert!(
        poll_once(&mut b2).is_pending(),
        "estimated within 3 windows"
    );
    let mut b3 = budget.acquire_as("k", 10, Class::tenant("b"));
    assert!(matches!(
        poll_once(&mut b3),
        Poll::Ready(Err(AdmissionError::QueueFull { .. }))
    ));
    drop(a);
    drop((b1, b2, b3));
    assert_eq!(budget.stats(&"k").unwrap().waiters, 0);
}

#[tokio::test(start_paused = true)]
async fn a_new_tenant_per_request_cannot_grow_memory() {
    let b = fair(10, Fairness::new().max_tenants(8));
    let _hold = b.try_acquire("k", 10).unwrap();
    let mut waiters: Vec<_> = (0..1_000)
        .map(|i| b.acquire_as("k", 1, Class::tenant(format!("t{i}"))))
        .collect();
    for w in &mut waiters {
        assert!(poll_once(w).is_pending());
    }
    let s = b.stats(&"k").unwrap();
    assert_eq!(s.waiters, 1_000);
    assert!(s.tenants <= 9, "8 tenants and the overflow: {}", s.tenants);
    drop(waiters);
    assert_eq!(b.stats(&"k").unwrap().tenants, 0);
}

#[tokio::test(start_paused = true)]
async fn weights_change_at_run_time() {
    let b = fair(100, Fairness::new());
    b.set_weight("heavy", 3.0).unwrap();
    let hold = b.try_acquire("k", 100).unwrap();
    let mut h: Vec<_> = (0..8)
        .map(|_| b.acquire_as("k", 10, Class::tenant("heavy")))
        .collect();
    let mut l: Vec<_> = (0..8)
        .map(|_| b.acquire_as("k", 10, Class::tenant("light")))
        .collect();
    for f in h.iter_mut().chain(l.iter_mut()) {
        assert!(poll_once(f).is_pending());
    }
    hold.settle(60);
    let heavy = h
        .iter_mut()
        .map(|f| poll_once(f).is_ready())
        .filter(|&r| r)
        .count();
    let light = l
        .iter_mut()
        .map(|f| poll_once(f).is_ready())
        .filter(|&r| r)
        .count();
    assert_eq!(heavy + light, 4);
    assert_eq!((heavy, light), (3, 1), "3:1 by weight");
}

#[tokio::test(start_paused = true)]
async fn an_arrival_that_is_owed_more_is_selected_and_admitted() {
    // The selected waiter is large and waits; a small request of a tenant that is owed more
    // arrives and fits: it is selected instead and admitted at once.
    let b = fair(10, Fairness::new());
    let hold = b.try_acquire("k", 8).unwrap();
    let mut big1 = b.acquire_as("k", 10, Class::tenant("big"));
    let mut big2 = b.acquire_as("k", 10, Class::tenant("big"));
    assert!(poll_once(&mut big1).is_pending());
    assert!(poll_once(&mut big2).is_pending());
    drop(hold);
    advance(W).await;
    let p = match poll_once(&mut big1) {
        Poll::Ready(Ok(p)) => p,
        other => panic!("{other:?}"),
    };
    drop(p);
    // big2 is selected (waiting a window); small arrives, owed more, fits in nothing yet.
    let mut small = b.acquire_as("k", 1, Class::tenant("small"));
    assert!(poll_once(&mut small).is_pending());
    assert!(poll_once(&mut big2).is_pending());
    advance(W).await;
    // The window is free: small (lower tag) goes first, then big2 still fits? 1 + 10 > 10.
    assert!(poll_once(&mut small).is_ready());
    assert!(poll_once(&mut big2).is_pending());
    drop(big2);
}

#[test]
fn bad_fairness_is_refused_at_build() {
    let build = |f: Fairness| {
        Budget::<u8>::builder()
            .tokens(10)
            .fairness(f)
            .build()
            .map(|_| ())
    };
    for w in [0.0, -1.0, f64::NAN, f64::INFINITY] {
        let err = build(Fairness::new().weight("a", w)).unwrap_err();
        assert!(
            matches!(&err, ConfigError::InvalidWeight { tenant: Some(t), .. } if &**t == "a"),
            "{err:?}"
        );
        assert!(err.to_string().contains("finite and greater than 0"));
        assert!(matches!(
            build(Fairness::new().default_weight(w)).unwrap_err(),
            ConfigError::InvalidWeight { tenant: None, .. }
        ));
    }
    let err = build(
        Fairness::new()
            .lane(Lane::new("a").minimum(0.6))
            .lane(Lane::new("b").minimum(0.5)),
    )
    .unwrap_err();
    assert!(
        matches!(err, ConfigError::MinimumsAboveWhole { .. }),
        "{err}"
    );
    assert!(err.to_string().contains("more than the whole"));
    for m in [-0.1, 1.5, f64::NAN] {
        assert!(matches!(
            build(Fairness::new().lane(Lane::new("a").minimum(m))).unwrap_err(),
            ConfigError::InvalidMinimum { .. }
        ));
    }
    assert!(matches!(
        build(Fairness::new().lane(Lane::new("a")).lane(Lane::new("a"))).unwrap_err(),
        ConfigError::DuplicateLane { .. }
    ));
    assert!(matches!(
        build(Fairness::new().lane(Lane::new("a")).default_lane("b")).unwrap_err(),
        ConfigError::UnknownLane { .. }
    ));
    assert!(build(Fairness::new().max_tenants(0)).is_err());
    // 0.1 + 0.2 + 0.7 is the whole, not more.
    assert!(
        build(
            Fairness::new()
                .lane(Lane::new("a").minimum(0.1))
                .lane(Lane::new("b").minimum(0.2))
                .lane(Lane::new("c").minimum(0.7))
        )
        .is_ok()
    );
}

#[test]
fn bad_changes_at_run_time_are_refused() {
    let b = Budget::<u8>::builder()
        .tokens(10)
        .fairness(
            Fairness::new()
                .lane(Lane::new("a").minimum(0.5))
                .lane(Lane::new("b")),
        )
        .build()
        .unwrap();
    assert!(matches!(
        b.set_weight("t", 0.0),
        Err(ConfigError::InvalidWeight { .. })
    ));
    assert!(matches!(
        b.set_default_weight(f64::NAN),
        Err(ConfigError::InvalidWeight { tenant: None, .. })
    ));
    assert!(matches!(
        b.set_lane_minimum("b", 0.6),
        Err(ConfigError::MinimumsAboveWhole { .. })
    ));
    assert!(matches!(
        b.set_lane_minimum("x", 0.1),
        Err(ConfigError::UnknownLane { .. })
    ));
    b.set_lane_minimum("b", 0.5).unwrap();
    let fifo = Budget::<u8>::builder().tokens(10).build().unwrap();
    assert_eq!(fifo.set_weight("t", 1.0), Err(ConfigError::NotFair));
    assert!(!fifo.is_fair() && b.is_fair());
}

#[tokio::test(start_paused = true)]
async fn the_admission_layer_passes_the_class_of_each_request() {
    use bedrock_throttle::admit::{AdmissionLayer, Closures};
    use tower::{ServiceBuilder, ServiceExt};

    let budget = fair(10, Fairness::new().weight("gold", 3.0));
    let protocol = Closures::new(|_: &(&'static str, u64)| "k")
        .tokens(|r: &(&'static str, u64)| r.1, |_: &()| None::<u64>)
        .class(|r: &(&'static str, u64)| Class::tenant(r.0));
    let svc = ServiceBuilder::new()
        .layer(AdmissionLayer::new(budget.clone(), protocol))
        .service_fn(|_: (&'static str, u64)| async { Ok::<(), std::io::Error>(()) });
    let hold = budget.try_acquire("k", 10).unwrap();
    let mut calls: Vec<_> = ["gold", "free", "free"]
        .into_iter()
        .map(|tenant| Box::pin(svc.clone().oneshot((tenant, 5))))
        .collect();
    for call in &mut calls {
        assert!(poll_once(call).is_pending());
    }
    let s = budget.stats(&"k").unwrap();
    assert_eq!(
        (s.waiters, s.tenants),
        (3, 2),
        "two tenants wait: the class got through"
    );
    drop(hold);
    advance(W * 3).await;
    for call in calls {
        call.await.unwrap();
    }
}
