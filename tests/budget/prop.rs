//! Property test: random arrivals, costs, cancellations, settlements (refunds and debt) and
//! throttles never break the sliding-window invariant, keep FIFO order, and leak nothing; and
//! the same with fair shares on (random tenants, weights, lanes, minimums, a small tenant
//! bound, weight changes at run time), where the order kept is FIFO within each tenant's lane.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bedrock_throttle::budget::{AdmissionError, Budget, Class, Dimension, Fairness, Lane};
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
    tenant: u8,
    lane: u8,
    /// With fairness: change this tenant's weight at run time instead of a request.
    reweight: bool,
}

const TENANTS: u8 = 4;
const LANES: [&str; 3] = ["hi", "mid", "lo"];

/// A fair configuration: tenant weights, lane minimums (adding up to at most 1), and a tenant
/// bound small enough to reach the overflow tenant.
#[derive(Debug, Clone)]
struct FairConfig {
    weights: Vec<f64>,
    minimums: [f64; 2],
    max_tenants: usize,
}

fn fair_config() -> impl Strategy<Value = FairConfig> {
    (
        prop::collection::vec(0.1f64..10.0, TENANTS as usize),
        (0.0f64..0.6, 0.0f64..0.4),
        1usize..=TENANTS as usize + 1,
    )
        .prop_map(|(weights, (m1, m2), max_tenants)| FairConfig {
            weights,
            minimums: [m1, m2],
            max_tenants,
        })
}

impl FairConfig {
    fn fairness(&self) -> Fairness {
        let mut f = Fairness::new()
            .lane(Lane::new(LANES[0]).priority(2))
            .lane(Lane::new(LANES[1]).priority(1).minimum(self.minimums[0]))
            .lane(Lane::new(LANES[2]).minimum(self.minimums[1]))
            .max_tenants(self.max_tenants);
        for (t, &w) in self.weights.iter().enumerate() {
            f = f.weight(format!("t{t}"), w);
        }
        f
    }
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
        (
            0..TENANTS,
            0..LANES.len() as u8 + 1,
            prop::bool::weighted(0.03),
        ),
    )
        .prop_map(
            |(
                gap_ms,
                key,
                cost,
                cancel_after_ms,
                hold_ms,
                settlement,
                throttle,
                (tenant, lane, reweight),
            )| Op {
                gap_ms,
                key,
                cost,
                cancel_after_ms,
                hold_ms,
                settlement,
                throttle,
                tenant,
                lane,
                reweight,
            },
        )
}

/// (arrival index, admission instant, final amount, (tenant, lane): the group FIFO holds in).
type Admitted = (usize, Instant, u64, (u8, u8));

#[derive(Debug, Default)]
struct Log {
    /// Per key: (arrival index, admission instant, final amount, tenant and lane).
    admissions: Vec<Vec<Admitted>>,
    /// Per key: (settle instant, overshoot).
    debts: Vec<Vec<(Instant, u64)>>,
    failures: Vec<String>,
}

async fn run(ops: Vec<Op>, margin_ms: u64, fair: Option<FairConfig>) -> Result<(), TestCaseError> {
    let window = Duration::from_secs(60);
    let builder = Budget::builder()
        .tokens(LIMIT)
        .window(window)
        .expiry_margin(Duration::from_millis(margin_ms));
    let budget: Budget<u8> = match &fair {
        Some(config) => builder.fairness(config.fairness()),
        None => builder,
    }
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
        if fair.is_some() && op.reweight {
            budget
                .set_weight(format!("t{}", op.tenant), 0.5 + op.cost as f64)
                .unwrap();
            continue;
        }
        let (budget, log) = (budget.clone(), log.clone());
        // Lane index LANES.len() is "no lane": the default lane.
        let mut class = Class::tenant(format!("t{}", op.tenant));
        if let Some(lane) = LANES.get(op.lane as usize) {
            class = class.with_lane(*lane);
        }
        let fifo_group = if fair.is_some() {
            (op.tenant, op.lane.min(LANES.len() as u8 - 1))
        } else {
            (0, 0)
        };
        tasks.push(tokio::spawn(async move {
            let acquire = budget.acquire_as(op.key, op.cost, class);
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
                log.lock().unwrap().admissions[key].push((index, at, charged, fifo_group));
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
            .map(|&(_, t, a, _)| (t, a))
            .collect();
        check_windows(&admissions, &log.debts[key], span, LIMIT).map_err(TestCaseError::fail)?;
        // FIFO (within each tenant's lane, with fairness; the default lane is the last): in
        // arrival order, admission instants never go back.
        let mut by_arrival = log.admissions[key].clone();
        by_arrival.sort_by_key(|&(i, _, _, g)| (g, i));
        for pair in by_arrival.windows(2) {
            if pair[0].3 == pair[1].3 {
                prop_assert!(pair[0].1 <= pair[1].1, "FIFO broken: {pair:?}");
            }
        }
    }
    // Nothing leaks: once every permit is settled and the windows have passed (and the
    // effective limit recovered from any throttle), the whole limit is available again.
    advance(span * 12).await;
    for key in 0..KEYS {
        if let Some(s) = budget.stats(&key) {
            prop_assert_eq!(
                (s.waiters, s.outstanding, s.tokens.unwrap().used, s.tenants),
                (0, 0, 0, 0)
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
        rt.block_on(run(ops, margin_ms, None))?;
    }

    #[test]
    fn fair_shares_keep_the_window_fifo_per_tenant_and_no_leaks(
        ops in prop::collection::vec(op(), 1..80),
        margin_ms in prop_oneof![Just(0u64), 0u64..5_000],
        config in fair_config(),
    ) {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .unwrap();
        rt.block_on(run(ops, margin_ms, Some(config)))?;
    }
}
