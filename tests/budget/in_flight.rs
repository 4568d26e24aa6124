//! Debt in flight: a permit's expected debt counts against later admissions until it settles
//! (`Permit::expect_debt`), never against its own, and nothing of it is left behind.

use super::*;

/// The key's expected debt in flight.
fn expected(b: &Budget<&'static str>, key: &'static str) -> u64 {
    b.stats(&key).map_or(0, |s| s.expected_debt)
}

#[tokio::test(start_paused = true)]
async fn expected_debt_counts_for_later_admissions_not_for_its_own() {
    let b = budget(10_000);
    // Its own admission needed only its reservation (the server checks only that too).
    let call = b.try_acquire("k", 9_000).unwrap().expect_debt(5_000);
    assert_eq!(expected(&b, "k"), 5_000);
    assert_eq!(b.stats(&"k").unwrap().tokens.unwrap().used, 9_000);
    let err = b.try_acquire("k", 1).unwrap_err();
    assert!(matches!(err, AdmissionError::WaitTooLong { .. }), "{err:?}");
    // It settles 2,000 above its reservation: the estimate goes, the real debt stays a window.
    advance(Duration::from_secs(10)).await;
    call.settle(11_000);
    assert_eq!(expected(&b, "k"), 0);
    assert_eq!(b.stats(&"k").unwrap().tokens.unwrap().used, 11_000);
    advance(W - Duration::from_secs(10)).await;
    assert_eq!(b.stats(&"k").unwrap().tokens.unwrap().used, 2_000);
    assert!(b.try_acquire("k", 8_000).is_ok());
}

#[tokio::test(start_paused = true)]
async fn a_waiter_held_back_by_debt_in_flight_goes_when_the_call_settles() {
    let b = budget(10_000);
    let call = b.acquire("k", 2_000).await.unwrap().expect_debt(7_000);
    let start = Instant::now();
    let waiter = tokio::spawn({
        let b = b.clone();
        async move { b.acquire("k", 2_000).await.map(|_| Instant::now()) }
    });
    settle_tasks().await;
    assert_eq!(
        b.stats(&"k").unwrap().waiters,
        1,
        "2,000 + 7,000 + 2,000 > 10,000"
    );
    // Without a settlement the estimate holds for at most a window from now (the schedule's
    // bound), not for ever...
    advance(Duration::from_secs(5)).await;
    settle_tasks().await;
    assert_eq!(b.stats(&"k").unwrap().waiters, 1);
    // ... and the settlement lets the waiter in at once: 2,000 + 1,000 of real debt + 2,000.
    call.settle(3_000);
    let admitted = waiter.await.unwrap().unwrap();
    assert_eq!(admitted, start + Duration::from_secs(5));
    assert_eq!(expected(&b, "k"), 0);
}

#[tokio::test(start_paused = true)]
async fn a_call_dropped_unsettled_takes_its_estimate_back() {
    let b = budget(10_000);
    let call = b
        .try_acquire("k", 1_000)
        .unwrap()
        .with_if_unknown(6_000)
        .expect_debt(3_000);
    assert_eq!(expected(&b, "k"), 3_000);
    drop(call);
    // The worst case replaces the estimate: the reservation at admission and 5,000 of debt.
    assert_eq!(expected(&b, "k"), 0);
    assert_eq!(b.stats(&"k").unwrap().tokens.unwrap().used, 6_000);
    assert_eq!(b.stats(&"k").unwrap().outstanding, 0);
}

#[tokio::test(start_paused = true)]
async fn a_quota_change_keeps_the_debt_in_flight() {
    let b = budget(10_000);
    let call = b.try_acquire("k", 1_000).unwrap().expect_debt(4_000);
    b.set_quota(&"k", Quota::tokens(20_000)).unwrap();
    assert_eq!(expected(&b, "k"), 4_000);
    assert!(
        b.try_acquire("k", 15_001).is_err(),
        "1,000 + 4,000 + 15,001 > 20,000"
    );
    call.settle(1_000);
    assert_eq!(expected(&b, "k"), 0);
    assert!(b.try_acquire("k", 15_001).is_ok());
}

#[tokio::test(start_paused = true)]
async fn the_requests_dimension_does_not_count_it() {
    let b: Budget<&str> = Budget::builder()
        .quota(Quota::requests(2).with_tokens(10_000))
        .window(W)
        .build()
        .unwrap();
    let call = b.try_acquire("k", 100).unwrap().expect_debt(9_000);
    // A request costs one request and its tokens: the tokens are what the debt blocks.
    assert!(b.try_acquire("k", 901).is_err());
    assert!(
        b.try_acquire("k", 0).is_ok(),
        "a second request of no tokens still fits"
    );
    drop(call);
}

#[tokio::test(start_paused = true)]
async fn every_scope_counts_it() {
    use bedrock_throttle::budget::Scopes;
    let b: Budget<&str> = Budget::builder()
        .quota_fn(|k: &&str| match *k {
            "account" => Some(Quota::tokens(100_000)),
            _ => Some(Quota::tokens(10_000)),
        })
        .window(W)
        .build()
        .unwrap();
    let call = b
        .try_acquire_scopes(Scopes::new("model").with("account"), 1_000)
        .unwrap()
        .expect_debt(8_000);
    assert_eq!(expected(&b, "model"), 8_000);
    assert_eq!(expected(&b, "account"), 8_000);
    assert!(
        b.try_acquire("account", 91_001).is_err(),
        "1,000 + 8,000 + 91,001 > 100,000"
    );
    call.settle(1_000);
    assert!(b.try_acquire("account", 91_001).is_ok());
    assert_eq!((expected(&b, "model"), expected(&b, "account")), (0, 0));
}
