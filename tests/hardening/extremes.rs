//! Numbers at the edges of their types through the public entry points: settings, admission,
//! the capacity recorder and its report, the retry settings, the emulator's configuration.
//! Each must end in a value or a typed error; a panic fails the property.

use std::time::Duration;

use bedrock_throttle::admit::{Event, Observe};
use bedrock_throttle::budget::{Budget, Dimension};
use bedrock_throttle::classify::{Classification, ThrottleCause};
use bedrock_throttle::emulator::EmulatorConfig;
use bedrock_throttle::report::{CapacityRecorder, CapacityReport};
use bedrock_throttle::retry::{Backoff, RetryBudget};
use proptest::prelude::*;

fn edge_u64() -> impl Strategy<Value = u64> {
    prop_oneof![
        Just(0),
        Just(1),
        Just(u64::MAX),
        Just(u64::MAX - 1),
        Just(1 << 53),
        Just((1 << 53) + 1),
        Just(1 << 63),
        Just(u64::from(u32::MAX)),
        any::<u64>(),
        0..10_000u64,
    ]
}

fn edge_f64() -> impl Strategy<Value = f64> {
    prop_oneof![
        Just(f64::NAN),
        Just(f64::INFINITY),
        Just(f64::NEG_INFINITY),
        Just(0.0),
        Just(-0.0),
        Just(5e-324),
        Just(f64::MIN_POSITIVE),
        Just(f64::MAX),
        Just(-1.0),
        Just(1e19),
        any::<f64>(),
        0.0..10.0,
    ]
}

fn edge_duration() -> impl Strategy<Value = Duration> {
    prop_oneof![
        Just(Duration::ZERO),
        Just(Duration::from_nanos(1)),
        Just(Duration::MAX),
        Just(Duration::from_secs(u64::MAX)),
        Just(Duration::from_secs(365 * 24 * 3600)),
        Just(Duration::from_secs(60)),
        any::<u64>().prop_map(Duration::from_nanos),
        (0..100_000u64).prop_map(Duration::from_millis),
    ]
}

#[derive(Debug, Clone)]
enum Op {
    Acquire { key: u8, cost: u64 },
    Event { key: u8, event: EventSpec },
    Advance(Duration),
}

#[derive(Debug, Clone)]
enum EventSpec {
    Admitted(u64, Duration, Option<usize>),
    Refused(Duration),
    LeftQueue(Duration),
    Throttled(usize),
    Settled(u64, u64),
}

fn op() -> impl Strategy<Value = Op> {
    let event = prop_oneof![
        (edge_u64(), edge_duration(), proptest::option::of(0..3usize))
            .prop_map(|(t, w, d)| EventSpec::Admitted(t, w, d)),
        edge_duration().prop_map(EventSpec::Refused),
        edge_duration().prop_map(EventSpec::LeftQueue),
        (0..6usize).prop_map(EventSpec::Throttled),
        (edge_u64(), edge_u64()).prop_map(|(r, s)| EventSpec::Settled(r, s)),
    ];
    prop_oneof![
        (0..4u8, edge_u64()).prop_map(|(key, cost)| Op::Acquire { key, cost }),
        (0..4u8, event).prop_map(|(key, event)| Op::Event { key, event }),
        (0..7_200_000u64).prop_map(|ms| Op::Advance(Duration::from_millis(ms))),
    ]
}

const DIMS: [Dimension; 3] = [
    Dimension::Requests,
    Dimension::Tokens,
    Dimension::TokensPerDay,
];
const CAUSES: [ThrottleCause; 6] = [
    ThrottleCause::Requests,
    ThrottleCause::Tokens,
    ThrottleCause::TokensPerDay,
    ThrottleCause::Capacity,
    ThrottleCause::ModelNotReady,
    ThrottleCause::Unknown,
];

fn check_report(report: &CapacityReport, keys: usize) {
    assert!(report.keys.len() <= keys + 1);
    for k in &report.keys {
        for s in [
            k.demand.requests,
            k.demand.tokens_reserved,
            k.demand.tokens_settled,
        ] {
            assert!(s.p50 <= s.p95 && s.p95 <= s.max, "{s:?}");
        }
        assert!(k.waits.p50_ms <= k.waits.p99_ms && k.waits.p99_ms <= k.waits.max_ms);
        assert!(
            (0.0..=1.0).contains(&k.saturated_share),
            "{}",
            k.saturated_share
        );
        if let Some(d) = k.recommendation.daily_spent_in_secs {
            assert!(d >= 0.0, "{d}");
        }
    }
    let _ = report.to_string();
    serde_json::to_string(report).unwrap();
}

/// Issue 21: `report()` panicked with a daily limit of `u64::MAX` ("cannot convert float
/// seconds to Duration"): the time to spend it at the observed rate is past `Duration::MAX`.
/// At one token a window it is about 1.1e21 s, past `Duration`'s 1.8e19 s (at 1,000 tokens a
/// window it would still fit, and the old code would not have panicked).
#[tokio::test(start_paused = true)]
async fn a_daily_limit_of_u64_max_reports() {
    let budget: Budget<&str> = Budget::builder()
        .tokens(1_000_000)
        .tokens_per_day(u64::MAX)
        .build()
        .unwrap();
    let recorder = CapacityRecorder::new(budget.window(), 60);
    budget.try_acquire("k", 1).unwrap().settle(1);
    recorder.observe(
        &"k",
        Event::Admitted {
            tokens: 1,
            waited: Duration::ZERO,
            waited_on: None,
        },
    );
    recorder.observe(
        &"k",
        Event::Settled {
            reserved: 1,
            settled: 1,
        },
    );
    let report = recorder.report(&budget);
    let daily = report.keys[0].recommendation.daily.as_deref().unwrap();
    assert!(daily.contains("lasts more than a year"), "{daily}");
    check_report(&report, 1);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// Settings, admission and the recorder with extreme values: the budget builds or says
    /// why not; admissions, settlements and events never panic; the report builds and its
    /// figures stay ordered.
    #[test]
    fn extreme_settings_and_events_never_panic(
        limits in (edge_u64(), edge_u64(), edge_u64()),
        times in (edge_duration(), edge_duration(), edge_duration(), edge_duration()),
        windows in prop_oneof![Just(0usize), Just(1), Just(usize::MAX), 1..100usize],
        max_keys in 0..4usize,
        ops in proptest::collection::vec(op(), 0..40),
    ) {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .unwrap();
        rt.block_on(async move {
            let (window, day, margin, max_wait) = times;
            let built = Budget::<u8>::builder()
                .requests(limits.0)
                .tokens(limits.1)
                .tokens_per_day(limits.2)
                .window(window)
                .day(day)
                .expiry_margin(margin)
                .max_wait(max_wait)
                .build();
            let Ok(budget) = built else { return };
            let recorder = CapacityRecorder::new(window, windows).max_keys(max_keys);
            let mut permits = Vec::new();
            // A refusal to report: a cost above a whole limit.
            let probe: Budget<u8> = Budget::builder().tokens(1).build().unwrap();
            let Err(error) = probe.try_acquire(0, 2) else { unreachable!() };
            for op in ops {
                match op {
                    Op::Acquire { key, cost } => {
                        // A refusal is a typed error: fine. A panic fails the property.
                        if let Ok(p) = budget.try_acquire(key, cost) {
                            permits.push(p);
                        }
                    }
                    Op::Event { key, event } => {
                        let event = match event {
                            EventSpec::Admitted(tokens, waited, d) => Event::Admitted {
                                tokens,
                                waited,
                                waited_on: d.map(|i| DIMS[i]),
                            },
                            EventSpec::Refused(waited) => Event::Refused { error: &error, waited },
                            EventSpec::LeftQueue(waited) => Event::LeftQueue { waited },
                            EventSpec::Throttled(i) => Event::Completed {
                                classification: Classification::throttled(CAUSES[i]),
                            },
                            EventSpec::Settled(reserved, settled) => {
                                if let Some(p) = permits.pop() {
                                    p.settle(settled);
                                }
                                Event::Settled { reserved, settled }
                            }
                        };
                        recorder.observe(&key, event);
                    }
                    Op::Advance(d) => tokio::time::advance(d).await,
                }
            }
            for key in 0..4u8 {
                if let Some(stats) = budget.stats(&key) {
                    for d in DIMS {
                        if let Some(s) = stats.dimension(d) {
                            assert!(s.effective_limit <= s.limit, "{s:?}");
                        }
                    }
                }
            }
            check_report(&recorder.report(&budget), 4);
            assert!(recorder.key_count() <= max_keys);
        });
    }

    /// Retry settings with extreme floats and durations: built or refused, and a built
    /// backoff gives delays within its cap.
    #[test]
    fn extreme_retry_settings_never_panic(
        initial in edge_duration(),
        factor in edge_f64(),
        max in edge_duration(),
        ratio in edge_f64(),
        floor in any::<u32>(),
        retry in any::<u32>(),
    ) {
        if let Ok(backoff) = Backoff::new(initial, factor, max) {
            let mut rng = fastrand::Rng::with_seed(7);
            let delay = backoff.delay(retry, &mut rng);
            prop_assert!(delay <= backoff.cap(retry));
            prop_assert!(backoff.cap(retry) <= backoff.max().max(backoff.initial()));
        }
        let _ = RetryBudget::new(initial, floor, ratio);
    }

    /// The emulator's configuration with extreme numbers in every numeric field: parsed and
    /// validated, or refused with a message.
    #[test]
    fn extreme_emulator_configs_are_refused_or_taken(
        f in proptest::collection::vec(edge_f64(), 5),
        n in proptest::collection::vec(edge_u64(), 6),
    ) {
        let num = |x: f64| if x.is_finite() { format!("{x:e}") } else { "1e999".to_owned() };
        let json = format!(
            r#"{{"window_secs": {}, "time_to_first_token_ms": {}, "tokens_per_second": {},
                 "header_read_timeout_ms": {}, "body_read_timeout_ms": {},
                 "default_quota": {{"rpm": {}, "tpm": {}, "tpd": {}}},
                 "output_tokens": {{"min": {}, "max": {}}}, "seed": {}}}"#,
            num(f[0]), num(f[1]), num(f[2]), num(f[3]), num(f[4]),
            n[0], n[1], n[2], n[3], n[4], n[5],
        );
        match EmulatorConfig::from_json(&json) {
            Ok(config) => prop_assert!(config.validate().is_ok()),
            Err(e) => prop_assert!(!e.message().is_empty()),
        }
    }
}
