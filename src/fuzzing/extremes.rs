//! Numbers at the edges of their types through the admission engine's settings and verbs, the
//! capacity recorder and its report, and the emulator's configuration (issue 21: no
//! arithmetic panic or wrap on any number from input or configuration).

use std::time::Duration;

use crate::admit::{Event, Observe};
use crate::budget::{Budget, Dimension, Permit, Quota};
use crate::classify::{Classification, ThrottleCause};
use crate::emulator::EmulatorConfig;
use crate::report::{CapacityRecorder, CapacityReport};

/// The values a selector byte below 0x80 picks; from 0x80, the next eight bytes are the value.
const EDGE_U64: [u64; 12] = [
    0,
    1,
    2,
    1_000,
    u32::MAX as u64,
    1 << 53,
    (1 << 53) + 1,
    1 << 63,
    u64::MAX - 1,
    u64::MAX,
    100_000,
    60,
];

/// Nanoseconds: zero, one, a millisecond, a second, a minute, a day, a year, and `u64::MAX`
/// seconds (a selector picks one; from 0x80 the next eight bytes are nanoseconds).
const EDGE_DURATIONS: [Duration; 8] = [
    Duration::ZERO,
    Duration::from_nanos(1),
    Duration::from_millis(1),
    Duration::from_secs(1),
    Duration::from_secs(60),
    Duration::from_secs(86_400),
    Duration::from_secs(365 * 86_400),
    Duration::from_secs(u64::MAX),
];

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

struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn byte(&mut self) -> Option<u8> {
        let (first, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(*first)
    }

    fn raw(&mut self) -> u64 {
        let mut value = [0u8; 8];
        for b in &mut value {
            *b = self.byte().unwrap_or(0);
        }
        u64::from_le_bytes(value)
    }

    fn u64(&mut self) -> u64 {
        match self.byte() {
            Some(b) if b >= 0x80 => self.raw(),
            Some(b) => EDGE_U64[usize::from(b) % EDGE_U64.len()],
            None => 0,
        }
    }

    fn duration(&mut self) -> Duration {
        match self.byte() {
            Some(b) if b >= 0x80 => Duration::from_nanos(self.raw()),
            Some(b) => EDGE_DURATIONS[usize::from(b) % EDGE_DURATIONS.len()],
            None => Duration::ZERO,
        }
    }

    fn limit(&mut self) -> Option<u64> {
        // One selector in four leaves the dimension unlimited.
        (self.byte()? % 4 != 0).then(|| self.u64())
    }

    fn quota(&mut self) -> Quota {
        Quota {
            requests: self.limit(),
            tokens: self.limit(),
            tokens_per_day: self.limit(),
        }
    }
}

/// Settings, then operations, from the bytes: `[quota: 3 × (selector, value)] [window] [day]
/// [margin] [max wait] [windows]` then records `[op] ...` (acquire, settle, drop, throttle
/// feedback, quota change, recorder events, report). Asserts that the budget builds or says
/// why not, that nothing panics, that no effective limit exceeds its configured limit, and
/// that every report keeps its figures ordered and serializes.
pub fn extremes(data: &[u8]) {
    let mut r = Reader(data);
    let quota = r.quota();
    let (window, day, margin, max_wait) = (r.duration(), r.duration(), r.duration(), r.duration());
    let windows = usize::from(r.byte().unwrap_or(1));
    let built = Budget::<u8>::builder()
        .quota(quota)
        .window(window)
        .day(day)
        .expiry_margin(margin)
        .max_wait(max_wait)
        .build();
    let Ok(budget) = built else { return };
    let recorder = CapacityRecorder::new(window, windows).max_keys(2);
    // A refusal to report: a cost above a whole limit.
    let refusal = Budget::<u8>::builder()
        .tokens(1)
        .build()
        .ok()
        .and_then(|b| b.try_acquire(0, 2).err());
    let mut permits: Vec<Permit> = Vec::new();
    while let Some(op) = r.byte() {
        let key = op >> 4;
        match op % 12 {
            0 => {
                if let Ok(p) = budget.try_acquire(key, r.u64()) {
                    permits.push(p);
                }
            }
            1 => {
                let amount = r.u64();
                if let Some(p) = permits.pop() {
                    p.settle(amount);
                }
            }
            2 => drop(permits.pop()),
            3 => {
                let cause = CAUSES[usize::from(r.byte().unwrap_or(0)) % CAUSES.len()];
                budget.throttled(&key, cause);
            }
            4 => {
                let _ = budget.set_quota(&key, r.quota());
            }
            5 => {
                let (tokens, waited) = (r.u64(), r.duration());
                let waited_on = r.byte().and_then(|b| DIMS.get(usize::from(b) % 4).copied());
                recorder.observe(
                    &key,
                    Event::Admitted {
                        tokens,
                        waited,
                        waited_on,
                    },
                );
            }
            6 => {
                if let Some(error) = &refusal {
                    let waited = r.duration();
                    recorder.observe(&key, Event::Refused { error, waited });
                }
            }
            7 => {
                let waited = r.duration();
                recorder.observe(&key, Event::LeftQueue { waited });
            }
            8 => {
                let cause = CAUSES[usize::from(r.byte().unwrap_or(0)) % CAUSES.len()];
                let classification = Classification::throttled(cause);
                recorder.observe(&key, Event::Completed { classification });
            }
            9 => {
                let (reserved, settled) = (r.u64(), r.u64());
                recorder.observe(&key, Event::Settled { reserved, settled });
            }
            10 => check_report(&recorder.report(&budget)),
            _ => check_stats(&budget),
        }
    }
    check_stats(&budget);
    check_report(&recorder.report(&budget));
    drop(permits);
    emulator_config(quota, window);
}

fn check_stats(budget: &Budget<u8>) {
    for key in 0..16u8 {
        let Some(stats) = budget.stats(&key) else {
            continue;
        };
        for d in DIMS {
            if let Some(s) = stats.dimension(d) {
                assert!(s.effective_limit <= s.limit, "{d}: {s:?}");
            }
        }
    }
}

fn check_report(report: &CapacityReport) {
    // At most the recorder's two keys and `other`.
    assert!(report.keys.len() <= 3, "{} keys", report.keys.len());
    for k in &report.keys {
        for s in [
            k.demand.requests,
            k.demand.tokens_reserved,
            k.demand.tokens_settled,
        ] {
            assert!(s.p50 <= s.p95 && s.p95 <= s.max, "{s:?}");
        }
        let w = &k.waits;
        assert!(w.p50_ms <= w.p99_ms && w.p99_ms <= w.max_ms, "{w:?}");
        assert!(
            (0.0..=1.0).contains(&k.saturated_share),
            "{}",
            k.saturated_share
        );
    }
    let _ = report.to_string();
    assert!(serde_json::to_string(report).is_ok());
}

/// The emulator's configuration with the same numbers: parsed, or refused with a message.
fn emulator_config(quota: Quota, window: Duration) {
    let n = |v: Option<u64>| v.map_or_else(|| "null".to_owned(), |v| v.to_string());
    let secs = window.as_secs_f64();
    let json = format!(
        r#"{{"window_secs": {secs:e}, "time_to_first_token_ms": {secs:e},
            "tokens_per_second": {secs:e}, "body_read_timeout_ms": {secs:e},
            "default_quota": {{"rpm": {}, "tpm": {}, "tpd": {}}}}}"#,
        n(quota.requests),
        n(quota.tokens),
        n(quota.tokens_per_day),
    );
    match EmulatorConfig::from_json(&json) {
        Ok(config) => assert!(config.validate().is_ok()),
        Err(e) => assert!(!e.message().is_empty()),
    }
}
