//! Property test: random arrivals, costs, cancellations, settlements (refunds and debt) and
//! throttles never break the sliding-window invariant, keep FIFO order, and leak nothing.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bedrock_throttle::budget::{AdmissionError, Budget, Dimension};
use bedrock_throttle::classify::ThrottleCause;
use proptest::prelude::*;
use tokio::time::{Instant, advance, sleep, timeout};

use crate::invariant::check_windows;

const LIMIT: u64 = 10;
const KEYS: u8 = 2;

#[derive(Debug, Clone)]
enum Settlement {
    /// Dropped unsettled: the reservation stands.
    Drop,
    Exact,
    /// Settles this much less (capped at the reservation).
    Refund(u64),
    /// Settles this much more: debt.
    Debt(u64),
    /// `settle_against(actual, server_reserved)`: `(actual, server_reserved)`.
    As(u64, u64),
}

#[derive(Debug, Clone)]
struct Op {
    gap_ms: u64,
    key: u8,
    cost: u64,
    cancel_after_ms: Option<u64>,
    hold_ms: u64,
    settlement: Settlement,
    throttle: bool,
}

fn settlement() -> impl Strategy<Value = Settlement> {
    prop_oneof![
        1 => Just(Settlement::Drop),
        1 => Just(Settlement::Exact),
        2 => (1u64..=10).prop_map(Settlement::Refund),
        2 => (1u64..=8).prop_map(Settlement::Debt),
        2 => (0u64..=16, 0u64..=12).prop_map(|(actual, server)| Settlement::As(actual, server)),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    (
        prop_oneof![2 => Just(0u64), 5 => 0u64..20_000],
        0..KEYS,
        prop_oneof![1 => Just(0u64), 12 => 1..=LIMIT, 1 => LIMIT + 1..=LIMIT + 3],
        prop::option::weighted(0.2, 0u64..120_000),
        0u64..40_000,
        settlement(),
        prop::bool::weighted(0.05),
    )
        .prop_map(
            |(gap_ms, key, cost, cancel_after_ms, hold_ms, settlement, throttle)| Op {
                gap_ms,
                key,
                cost,
                cancel_after_ms,
                hold_ms,
                settlement,
                throttle,
            },
        )
}

#[derive(Debug, Default)]
struct Log {
    /// Per key: (arrival index, admission instant, final amount).
    admissions: Vec<Vec<(usize, Instant, u64)>>,
    /// Per key: (settle instant, overshoot).
    debts: Vec<Vec<(Instant, u64)>>,
    failures: Vec<String>,
}

async fn run(ops: Vec<Op>, margin_ms: u64) -> Result<(), TestCaseError> {
    let window = Duration::from_secs(60);
    let budget: Budget<u8> = Budget::builder()
        .tokens(LIMIT)
        .window(window)
        .expiry_margin(Duration::from_millis(margin_ms))
        .build()
        .unwrap();
    let log = Arc::new(Mutex::new(Log {
        admissions: vec![Vec::new(); KEYS as usize],
        debts: vec![Vec::new(); KEYS as usize],
        failures: Vec::new(),
    }));
    let mut tasks = Vec::new();
    for (index, op) in ops.into_iter().enumerate() {
        sleep(Duration::from_millis(op.gap_ms)).await;
        if op.throttle {
            budget.throttled(&op.key, ThrottleCause::Tokens);
            continue;
        }
        let (budget, log) = (budget.clone(), log.clone());
        tasks.push(tokio::spawn(async move {
            let acquire = budget.acquire(op.key, op.cost);
            let result = match op.cancel_after_ms {
                Some(ms) => match timeout(Duration::from_millis(ms), acquire).await {
                    Ok(result) => result,
                    Err(_) => return, // cancelled: must leave no trace
                },
                None => acquire.await,
            };
            let permit = match result {
                Ok(permit) => permit,
                Err(AdmissionError::CostAboveLimit {
                    dimension: Dimension::Tokens,
                    cost,
                    limit,
                }) if cost == op.cost && limit == LIMIT && cost > LIMIT => {
                    return;
                }
                Err(e) => {
                    log.lock().unwrap().failures.push(format!("{op:?}: {e}"));
                    return;
                }
            };
            let at = permit.admitted_at();
            if op.cost > 0 && at != Instant::now() {
                log.lock()
                    .unwrap()
                    .failures
                    .push("admission instant is not now".into());
            }
            sleep(Duration::from_millis(op.hold_ms)).await;
            let key = op.key as usize;
            let charged = match op.settlement {
                Settlement::Drop => {
                    drop(permit);
                    op.cost
                }
                Settlement::Exact => {
                    permit.settle(op.cost);
                    op.cost
                }
                Settlement::Refund(r) => {
                    let actual = op.cost.saturating_sub(r);
                    permit.settle(actual);
                    actual
                }
                Settlement::Debt(d) => {
                    permit.settle(op.cost + d);
                    if op.cost > 0 {
                        log.lock().unwrap().debts[key].push((Instant::now(), d));
                    }
                    op.cost
                }
                Settlement::As(actual, server) => {
                    permit.settle_against(actual, server);
                    // At most the server's reservation stays at the admission; the rest is
                    // debt now.
                    let kept = actual.min(server).min(op.cost);
                    if op.cost > 0 && actual > kept {
                        log.lock().unwrap().debts[key].push((Instant::now(), actual - kept));
                    }
                    kept
                }
            };
            if op.cost > 0 {
                log.lock().unwrap().admissions[key].push((index, at, charged));
            }
        }));
    }
    // A hang would show as this timeout (paused time jumps to it when nothing else can run).
    let all = async {
        for t in tasks {
            t.await.unwrap();
        }
    };
    prop_assert!(
        timeout(Duration::from_secs(365 * 24 * 3600), all)
            .await
            .is_ok(),
        "admissions hung"
    );
    let log = std::mem::take(&mut *log.lock().unwrap());
    prop_assert!(log.failures.is_empty(), "{:?}", log.failures);
    let span = window + Duration::from_millis(margin_ms);
    for key in 0..KEYS as usize {
        let admissions: Vec<(Instant, u64)> = log.admissions[key]
            .iter()
            .map(|&(_, t, a)| (t, a))
            .collect();
        check_windows(&admissions, &log.debts[key], span, LIMIT).map_err(TestCaseError::fail)?;
        // FIFO: in arrival order, admission instants never go back.
        let mut by_arrival = log.admissions[key].clone();
        by_arrival.sort_by_key(|&(i, _, _)| i);
        for pair in by_arrival.windows(2) {
            prop_assert!(pair[0].1 <= pair[1].1, "FIFO broken: {pair:?}");
        }
    }
    // Nothing leaks: once every permit is settled and the windows have passed (and the
    // effective limit recovered from any throttle), the whole limit is available again.
    advance(span * 12).await;
    for key in 0..KEYS {
        if let Some(s) = budget.stats(&key) {
            prop_assert_eq!(
                (s.waiters, s.outstanding, s.tokens.unwrap().used),
                (0, 0, 0)
            );
            prop_assert_eq!(s.tokens.unwrap().effective_limit, LIMIT);
        }
        let full = budget.try_acquire(key, LIMIT);
        prop_assert!(full.is_ok(), "{full:?}");
    }
    Ok(())
}

proptest! {
    // 96 cases by default; PROPTEST_CASES=N for a longer hunt.
    #![proptest_config(ProptestConfig::with_cases(
        std::env::var("PROPTEST_CASES").ok().and_then(|n| n.parse().ok()).unwrap_or(96)
    ))]

    #[test]
    fn sliding_window_fifo_and_no_leaks(
        ops in prop::collection::vec(op(), 1..80),
        margin_ms in prop_oneof![Just(0u64), 0u64..5_000],
    ) {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .unwrap();
        rt.block_on(run(ops, margin_ms))?;
    }
}
