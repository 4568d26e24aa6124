//! Regressions of issue 21: the fair bookkeeping stays exact when a limit change fails waiters,
//! weights are validated against what the arithmetic carries, and lane minimums are shares of
//! the limit in force.

use std::sync::{Arc, Mutex};

use bedrock_throttle::budget::{
    AdmissionError, Aimd, Budget, Class, ConfigError, Fairness, Lane, MAX_WEIGHT, MIN_WEIGHT, Quota,
};
use bedrock_throttle::classify::ThrottleCause;
use tokio::time::{Instant, advance, sleep};

use crate::scenarios::W;
use crate::{fair, poll_once};

#[tokio::test(start_paused = true)]
async fn a_limit_change_that_fails_two_waiters_of_one_tenant_keeps_the_books_exact() {
    let b = fair(10, Fairness::new());
    let full = b.try_acquire("k", 10).unwrap();
    let mut a1 = b.acquire_as("k", 8, Class::tenant("a"));
    let mut a2 = b.acquire_as("k", 9, Class::tenant("a"));
    let mut a3 = b.acquire_as("k", 3, Class::tenant("a"));
    let mut c1 = b.acquire_as("k", 4, Class::tenant("c"));
    for f in [&mut a1, &mut a2, &mut a3, &mut c1] {
        assert!(poll_once(f).is_pending());
    }
    // Raising then lowering the limit under fair load: the two big waiters of tenant "a"
    // fail together.
    b.set_quota(&"k", Quota::tokens(12)).unwrap();
    b.set_quota(&"k", Quota::tokens(5)).unwrap();
    for f in [&mut a1, &mut a2] {
        match poll_once(f) {
            std::task::Poll::Ready(Err(AdmissionError::CostAboveLimit { limit: 5, .. })) => {}
            other => panic!("expected the failure, got {other:?}"),
        }
    }
    assert_eq!(b.stats(&"k").unwrap().waiters, 2, "a3 and c1 still wait");
    drop(full);
    advance(W).await;
    let p = (&mut a3).await.unwrap();
    drop(p);
    advance(W).await;
    (&mut c1).await.unwrap().settle(4);
    let s = b.stats(&"k").unwrap();
    assert_eq!((s.waiters, s.outstanding), (0, 0));
    drop((a1, a2, a3, c1));
    // The key still admits and queues as before.
    advance(W).await;
    let p = b.try_acquire_as("k", 5, &Class::tenant("a")).unwrap();
    let mut w = b.acquire_as("k", 5, Class::tenant("a"));
    assert!(poll_once(&mut w).is_pending());
    drop(p);
    advance(W).await;
    w.await.unwrap();
}

#[test]
fn weights_are_refused_outside_the_range_the_arithmetic_carries() {
    let build = |f: Fairness| {
        Budget::<u8>::builder()
            .tokens(10)
            .fairness(f)
            .build()
            .map(|_| ())
    };
    for w in [
        1e-306,
        f64::MIN_POSITIVE,
        MIN_WEIGHT / 2.0,
        MAX_WEIGHT * 2.0,
        1e300,
    ] {
        let err = build(Fairness::new().weight("a", w)).unwrap_err();
        assert!(
            matches!(&err, ConfigError::InvalidWeight { tenant: Some(t), value } if &**t == "a" && *value == w),
            "{w}: {err:?}"
        );
        assert!(matches!(
            build(Fairness::new().default_weight(w)).unwrap_err(),
            ConfigError::InvalidWeight { tenant: None, .. }
        ));
    }
    for w in [MIN_WEIGHT, 1.0, MAX_WEIGHT] {
        build(Fairness::new().weight("a", w).default_weight(w)).unwrap();
    }
    let b = fair(10, Fairness::new());
    assert!(matches!(
        b.set_weight("a", 1e-306),
        Err(ConfigError::InvalidWeight { .. })
    ));
    assert!(matches!(
        b.set_default_weight(1e9),
        Err(ConfigError::InvalidWeight { .. })
    ));
}

/// Issue 21: after three throttles (effective limit 343 of 1,000), a batch lane with a minimum
/// of 0.5 took everything for windows while the priority lane got nothing: its minimum was a
/// share of the configured limit, more than the key could admit. It is a share of the limit in
/// force.
#[tokio::test(start_paused = true)]
async fn a_lane_minimum_is_a_share_of_the_limit_in_force() {
    // The reproduction used plain AIMD (three throttles: 343).
    let b: Budget<&'static str> = Budget::builder()
        .tokens(1_000)
        .window(W)
        .aimd(Aimd::plain())
        .fairness(
            Fairness::new()
                .lane(Lane::new("priority").priority(1))
                .lane(Lane::new("batch").minimum(0.5))
                .default_lane("batch"),
        )
        .build()
        .unwrap();
    for _ in 0..3 {
        b.throttled(&"k", ThrottleCause::Tokens);
    }
    let effective = b.stats(&"k").unwrap().tokens.unwrap().effective_limit;
    assert!(
        effective < 500,
        "three throttles lowered the limit: {effective}"
    );
    let start = Instant::now();
    let admitted: Arc<Mutex<Vec<(&'static str, Instant)>>> = Arc::default();
    let mut tasks = Vec::new();
    for lane in ["priority", "batch"] {
        for _ in 0..20 {
            let (b, admitted) = (b.clone(), Arc::clone(&admitted));
            tasks.push(tokio::spawn(async move {
                let permit = b.acquire_as("k", 100, Class::lane(lane)).await.unwrap();
                admitted.lock().unwrap().push((lane, Instant::now()));
                permit.settle(100);
            }));
        }
    }
    sleep(W * 2 + W / 2).await;
    let log = admitted.lock().unwrap().clone();
    let by = |lane| {
        log.iter()
            .filter(|(l, at)| *l == lane && *at < start + W * 2 + W / 2)
            .count()
    };
    let (priority, batch) = (by("priority"), by("batch"));
    assert!(priority > 0, "the priority lane was starved: {log:?}");
    assert!(batch > 0, "the batch lane keeps its minimum: {log:?}");
    for t in tasks {
        t.abort();
    }
}
