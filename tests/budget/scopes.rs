//! Requests of several scopes: admitted on every key at one instant, waiting in order on the
//! set, settled, refunded and throttled on each scope; typed errors for scopes named wrongly;
//! a property test against an independent model.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bedrock_throttle::budget::{AdmissionError, Budget, Dimension, Quota, Scopes};
use bedrock_throttle::classify::ThrottleCause;
use proptest::prelude::*;
use tokio::time::{Instant, advance, sleep, timeout};

use crate::invariant::check_windows;
use crate::{W, poll_once};

/// Models `a` and `b` (tokens per minute), the account (tokens per day, shared), a key
/// without a quota.
fn bedrock_like(model: u64, day: u64) -> Budget<&'static str> {
    Budget::builder()
        .window(W)
        .day(Duration::from_secs(24 * 3600))
        .max_wait(Duration::from_secs(120))
        .quota_fn(move |k: &&'static str| match *k {
            "a" | "b" => Some(Quota::tokens(model)),
            "account" => Some(Quota::unlimited().with_tokens_per_day(day)),
            _ => None,
        })
        .build()
        .unwrap()
}

fn used(b: &Budget<&'static str>, key: &'static str, d: Dimension) -> u64 {
    b.stats(&key).unwrap().dimension(d).unwrap().used
}

#[tokio::test(start_paused = true)]
async fn every_scope_is_charged_at_one_instant_and_settled() {
    let b = bedrock_like(100, 1_000);
    let p = b
        .acquire_scopes(Scopes::new("a").with("account"), 60)
        .await
        .unwrap();
    assert_eq!(used(&b, "a", Dimension::Tokens), 60);
    assert_eq!(used(&b, "account", Dimension::TokensPerDay), 60);
    assert_eq!(p.admitted_at(), Instant::now());
    advance(Duration::from_secs(1)).await;
    // Debt: 40 more on both scopes, at the settle instant.
    p.settle(100);
    assert_eq!(used(&b, "a", Dimension::Tokens), 100);
    assert_eq!(used(&b, "account", Dimension::TokensPerDay), 100);
    // A refund on both.
    let q = b
        .acquire_scopes(Scopes::new("b").with("account"), 80)
        .await
        .unwrap();
    q.settle(30);
    assert_eq!(used(&b, "b", Dimension::Tokens), 30);
    assert_eq!(used(&b, "account", Dimension::TokensPerDay), 130);
    // Dropped unsettled: the worst case on every scope.
    let r = b
        .acquire_scopes(Scopes::new("b").with("account"), 10)
        .await
        .unwrap()
        .with_if_unknown(50);
    drop(r);
    assert_eq!(used(&b, "b", Dimension::Tokens), 80);
    assert_eq!(used(&b, "account", Dimension::TokensPerDay), 180);
    let s = b.stats(&"account").unwrap();
    assert_eq!((s.outstanding, s.waiters), (0, 0));
}

#[tokio::test(start_paused = true)]
async fn the_daily_limit_of_the_account_stops_every_model_together() {
    let b = bedrock_like(1_000, 1_500);
    b.acquire_scopes(Scopes::new("a").with("account"), 1_000)
        .await
        .unwrap()
        .settle(1_000);
    advance(W).await;
    b.acquire_scopes(Scopes::new("b").with("account"), 500)
        .await
        .unwrap()
        .settle(500);
    advance(W).await;
    // The day is spent: either model would wait for the day to slide, far beyond max_wait.
    for model in ["a", "b"] {
        match b
            .acquire_scopes(Scopes::new(model).with("account"), 1)
            .await
        {
            Err(AdmissionError::WaitTooLong { would_wait, .. }) => {
                assert!(
                    would_wait > Duration::from_secs(23 * 3600),
                    "{would_wait:?}"
                )
            }
            other => panic!("{model}: expected a refusal, got {other:?}"),
        }
    }
    // Each model's own minute is free: the account is what stops them.
    assert_eq!(used(&b, "a", Dimension::Tokens), 0);
}

#[tokio::test(start_paused = true)]
async fn too_many_tokens_per_day_on_one_model_makes_the_other_fail_fast() {
    let b = bedrock_like(1_000, 1_000_000);
    let p = b
        .acquire_scopes(Scopes::new("a").with("account"), 100)
        .await
        .unwrap();
    // The server says "Too many tokens per day" for model a: feedback reaches the scope that
    // limits tokens per day, the account, not only model a.
    p.throttled(ThrottleCause::TokensPerDay);
    drop(p);
    let started = Instant::now();
    match b
        .acquire_scopes(Scopes::new("b").with("account"), 100)
        .await
    {
        Err(AdmissionError::WaitTooLong {
            would_wait,
            max_wait,
        }) => assert!(would_wait > max_wait, "{would_wait:?}"),
        other => panic!("expected b to fail fast, got {other:?}"),
    }
    assert_eq!(Instant::now(), started, "refused at once, without waiting");
}

#[tokio::test(start_paused = true)]
async fn a_request_waits_on_the_set_and_its_first_scope_stays_fifo() {
    let b: Budget<&'static str> = Budget::builder().tokens(10).window(W).build().unwrap();
    let on_b = b.try_acquire("b", 10).unwrap();
    // x needs a and b; y (behind x on a) needs only a.
    let mut x = b.acquire_scopes(Scopes::new("a").with("b"), 5);
    assert!(poll_once(&mut x).is_pending());
    let mut y = b.acquire("a", 5);
    assert!(
        poll_once(&mut y).is_pending(),
        "y waits behind x on a (FIFO)"
    );
    assert_eq!(b.stats(&"a").unwrap().tokens.unwrap().used, 0);
    drop(on_b);
    advance(W).await;
    let px = x.await.unwrap();
    let py = y.await.unwrap();
    assert_eq!(px.admitted_at(), py.admitted_at());
    assert_eq!(b.stats(&"a").unwrap().tokens.unwrap().used, 10);
    assert_eq!(b.stats(&"b").unwrap().tokens.unwrap().used, 5);
}

#[tokio::test(start_paused = true)]
async fn crossed_scopes_do_not_deadlock() {
    let b: Budget<&'static str> = Budget::builder().tokens(10).window(W).build().unwrap();
    let hold_a = b.try_acquire("a", 10).unwrap();
    let hold_b = b.try_acquire("b", 10).unwrap();
    let mut tasks = Vec::new();
    for i in 0..20 {
        let b = b.clone();
        let scopes = if i % 2 == 0 {
            Scopes::new("a").with("b")
        } else {
            Scopes::new("b").with("a")
        };
        tasks.push(tokio::spawn(async move {
            b.acquire_scopes(scopes, 4).await.unwrap().settle(4);
        }));
    }
    drop((hold_a, hold_b));
    timeout(W * 30, async {
        for t in tasks {
            t.await.unwrap();
        }
    })
    .await
    .expect("every request of crossed scopes is admitted");
    for key in ["a", "b"] {
        let s = b.stats(&key).unwrap();
        assert_eq!((s.waiters, s.outstanding), (0, 0));
    }
}

#[tokio::test(start_paused = true)]
async fn scopes_named_wrongly_are_typed_errors() {
    let b = bedrock_like(100, 1_000);
    let err = |scopes| b.try_acquire_scopes(scopes, 10).unwrap_err();
    assert_eq!(
        err(Scopes::new("a").with("nobody")),
        AdmissionError::ScopeWithoutQuota { scope: 1 }
    );
    assert_eq!(
        err(Scopes::new("a").with("account").with("a")),
        AdmissionError::DuplicateScope { scope: 2 }
    );
    assert_eq!(
        err(Scopes::new("a").with("b").with("c").with("d").with("e")),
        AdmissionError::TooManyScopes { max: 4 }
    );
    let above = b
        .try_acquire_scopes(Scopes::new("a").with("account"), 101)
        .unwrap_err();
    assert_eq!(
        above,
        AdmissionError::ScopeAboveLimit {
            scope: 0,
            dimension: Dimension::Tokens,
            cost: 101,
            limit: 100
        }
    );
    assert!(above.to_string().contains("scope 0"));
    assert!(!above.is_retryable());
    // A first scope without a quota is not charged (as a key without a limit never is).
    let p = b
        .try_acquire_scopes(Scopes::new("unknown").with("account"), 10)
        .unwrap();
    drop(p);
    assert_eq!(used(&b, "account", Dimension::TokensPerDay), 10);
}

#[tokio::test(start_paused = true)]
async fn a_daily_limit_of_zero_refuses_at_once_on_tokens_per_day() {
    let b: Budget<&'static str> = Budget::builder()
        .quota_fn(|k: &&'static str| match *k {
            "account" => Some(Quota::unlimited().with_tokens_per_day(0)),
            _ => Some(Quota::tokens(100)),
        })
        .build()
        .unwrap();
    let err = b
        .acquire_scopes(Scopes::new("a").with("account"), 10)
        .await
        .unwrap_err();
    assert_eq!(err.dimension(), Some(Dimension::TokensPerDay));
    assert_eq!(err.scope(), Some(1));
    assert!(!err.is_retryable());
}

// ---- The property test -------------------------------------------------------------------

const LIMIT: u64 = 10;
const KEYS: u8 = 3;

#[derive(Debug, Clone)]
enum Settlement {
    Drop,
    Refund(u64),
    Debt(u64),
}

#[derive(Debug, Clone)]
struct Op {
    gap_ms: u64,
    /// The scopes: distinct keys, the first is the primary.
    keys: Vec<u8>,
    cost: u64,
    cancel_after_ms: Option<u64>,
    hold_ms: u64,
    settlement: Settlement,
    /// Feedback instead of a request: throttle this key.
    throttle: bool,
}

fn op() -> impl Strategy<Value = Op> {
    (
        prop_oneof![2 => Just(0u64), 5 => 0u64..20_000],
        Just((0..KEYS).collect::<Vec<u8>>()).prop_shuffle(),
        1usize..=3,
        prop_oneof![12 => 1..=LIMIT, 1 => LIMIT + 1..=LIMIT + 2],
        prop::option::weighted(0.15, 0u64..120_000),
        0u64..40_000,
        prop_oneof![
            1 => Just(Settlement::Drop),
            2 => (0u64..=10).prop_map(Settlement::Refund),
            2 => (1u64..=6).prop_map(Settlement::Debt),
        ],
        prop::bool::weighted(0.05),
    )
        .prop_map(
            |(gap_ms, keys, n, cost, cancel_after_ms, hold_ms, settlement, throttle)| Op {
                gap_ms,
                keys: keys[..n].to_vec(),
                cost,
                cancel_after_ms,
                hold_ms,
                settlement,
                throttle,
            },
        )
}

/// Per key: (arrival index, admission instant, final amount, primary key).
#[derive(Debug, Default)]
struct Log {
    admissions: Vec<Vec<(usize, Instant, u64, u8)>>,
    debts: Vec<Vec<(Instant, u64)>>,
    failures: Vec<String>,
}

async fn run(ops: Vec<Op>) -> Result<(), TestCaseError> {
    let budget: Budget<u8> = Budget::builder().tokens(LIMIT).window(W).build().unwrap();
    let log = Arc::new(Mutex::new(Log {
        admissions: vec![Vec::new(); KEYS as usize],
        debts: vec![Vec::new(); KEYS as usize],
        failures: Vec::new(),
    }));
    let mut tasks = Vec::new();
    for (index, op) in ops.into_iter().enumerate() {
        sleep(Duration::from_millis(op.gap_ms)).await;
        if op.throttle {
            budget.throttled(&op.keys[0], ThrottleCause::Tokens);
            continue;
        }
        let (budget, log) = (budget.clone(), log.clone());
        tasks.push(tokio::spawn(async move {
            let mut scopes = Scopes::new(op.keys[0]);
            for &k in &op.keys[1..] {
                scopes = scopes.with(k);
            }
            let acquire = budget.acquire_scopes(scopes, op.cost);
            let result = match op.cancel_after_ms {
                Some(ms) => match timeout(Duration::from_millis(ms), acquire).await {
                    Ok(result) => result,
                    Err(_) => return,
                },
                None => acquire.await,
            };
            let permit = match result {
                Ok(permit) => permit,
                Err(AdmissionError::CostAboveLimit { cost, .. })
                | Err(AdmissionError::ScopeAboveLimit { cost, .. })
                    if cost > LIMIT =>
                {
                    return;
                }
                Err(e) => {
                    log.lock().unwrap().failures.push(format!("{op:?}: {e}"));
                    return;
                }
            };
            let at = permit.admitted_at();
            if at != Instant::now() {
                log.lock()
                    .unwrap()
                    .failures
                    .push("admitted in the past".into());
            }
            sleep(Duration::from_millis(op.hold_ms)).await;
            let charged = match op.settlement {
                Settlement::Drop => {
                    drop(permit);
                    op.cost
                }
                Settlement::Refund(r) => {
                    let actual = op.cost.saturating_sub(r);
                    permit.settle(actual);
                    actual
                }
                Settlement::Debt(d) => {
                    permit.settle(op.cost + d);
                    let mut log = log.lock().unwrap();
                    for &k in &op.keys {
                        log.debts[k as usize].push((Instant::now(), d));
                    }
                    op.cost
                }
            };
            let mut log = log.lock().unwrap();
            for &k in &op.keys {
                log.admissions[k as usize].push((index, at, charged, op.keys[0]));
            }
        }));
    }
    let all = async {
        for t in tasks {
            t.await.unwrap();
        }
    };
    prop_assert!(
        timeout(Duration::from_secs(365 * 24 * 3600), all)
            .await
            .is_ok(),
        "admissions hung (a deadlock across scopes?)"
    );
    let log = std::mem::take(&mut *log.lock().unwrap());
    prop_assert!(log.failures.is_empty(), "{:?}", log.failures);
    for key in 0..KEYS as usize {
        let admissions: Vec<(Instant, u64)> = log.admissions[key]
            .iter()
            .map(|&(_, t, a, _)| (t, a))
            .collect();
        // The independent model: every window of every scope holds at most the limit.
        check_windows(&admissions, &log.debts[key], W, LIMIT).map_err(TestCaseError::fail)?;
        // FIFO within a scope: among the requests whose first scope it is, admission instants
        // follow arrival order.
        let mut own: Vec<_> = log.admissions[key]
            .iter()
            .filter(|a| a.3 as usize == key)
            .collect();
        own.sort_by_key(|a| a.0);
        for pair in own.windows(2) {
            prop_assert!(pair[0].1 <= pair[1].1, "FIFO broken on {key}: {pair:?}");
        }
    }
    advance(W * 12).await;
    for key in 0..KEYS {
        if let Some(s) = budget.stats(&key) {
            prop_assert_eq!(
                (s.waiters, s.outstanding, s.tokens.unwrap().used),
                (0, 0, 0)
            );
        }
        prop_assert!(budget.try_acquire(key, LIMIT).is_ok());
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(
        std::env::var("PROPTEST_CASES").ok().and_then(|n| n.parse().ok()).unwrap_or(96)
    ))]

    #[test]
    fn scopes_keep_every_window_fifo_per_scope_and_no_leaks(
        ops in prop::collection::vec(op(), 1..60),
    ) {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .unwrap();
        rt.block_on(run(ops))?;
    }
}

#[tokio::test(start_paused = true)]
async fn a_request_of_several_scopes_waits_fairly_in_its_first_scope() {
    use bedrock_throttle::budget::{Class, Fairness};
    let b: Budget<&'static str> = Budget::builder()
        .window(W)
        .fairness(Fairness::new())
        .quota_fn(|k: &&'static str| match *k {
            "account" => Some(Quota::tokens(1_000)),
            _ => Some(Quota::tokens(10)),
        })
        .build()
        .unwrap();
    let hold = b.try_acquire("a", 10).unwrap();
    let order = Arc::new(Mutex::new(Vec::new()));
    let mut tasks = Vec::new();
    for (i, tenant) in ["heavy", "heavy", "heavy", "heavy", "light"]
        .into_iter()
        .enumerate()
    {
        let (b, order) = (b.clone(), Arc::clone(&order));
        tasks.push(tokio::spawn(async move {
            let p = b
                .acquire_scopes_as(Scopes::new("a").with("account"), 10, Class::tenant(tenant))
                .await
                .unwrap();
            order.lock().unwrap().push((i, tenant));
            p.settle(10);
        }));
        tokio::task::yield_now().await;
    }
    drop(hold);
    for t in tasks {
        t.await.unwrap();
    }
    let order = order.lock().unwrap().clone();
    let light = order.iter().position(|&(_, t)| t == "light").unwrap();
    assert!(
        light <= 1,
        "the light tenant does not wait behind the heavy one's backlog: {order:?}"
    );
    advance(W).await;
    assert_eq!(b.stats(&"account").unwrap().tokens.unwrap().used, 0);
}
