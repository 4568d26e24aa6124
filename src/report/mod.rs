//! The capacity report: what each quota key asked for, which limit made it wait, and what to
//! ask AWS for.
//!
//! # Why
//!
//! A `ThrottlingException` says a quota ran out, not which one, nor by how much. The report
//! states it from what the limiter saw over the last windows: demand per window at arrival
//! (not what the limit let through), the time spent waiting on each dimension (so
//! "TPM-bound" is measured, not guessed), queue waits, the share of time the key was
//! saturated, the server's throttles by cause, local refusals, and the quota at which the
//! p95 window would not have queued, beside the configured and the applied ones.
//!
//! A [`CapacityRecorder`] is an [`Observe`](crate::admit::Observe)r: give it to an
//! [`AdmissionLayer`](crate::admit::AdmissionLayer) and ask it for a
//! [`report`](CapacityRecorder::report) of a plain budget;
//! [`BedrockThrottle::report`](crate::sdk::BedrockThrottle::report) does it for the SDK
//! setup. The report is [`Display`](std::fmt::Display) (a table) and `serde::Serialize`.
//!
//! # Bounded whatever callers send
//!
//! Keys come from requests, so the recorder keeps windows of their own for at most
//! [`max_keys`](CapacityRecorder::max_keys) keys, only those it
//! [tracks](CapacityRecorder::track) (the one-call setup tracks the models with a configured
//! or applied quota, and its [allow-list](crate::sdk::BedrockThrottleBuilder::observe_models)),
//! and drops a key once its windows have left the report. Every other key's events are
//! counted together in one entry, [`OTHER`], which names a few of them.
//!
//! # The recommendation's arithmetic
//!
//! Per window, the tokens reserved by the attempts that *arrived* in it and the tokens settled
//! in it (p50/p95/max by nearest rank over the last N windows, windows without traffic counted
//! as zero). The recommended tokens per window is
//! `max(ceil(p95 reserved at arrival × r), p95 settled)`, where `r = max(1, Σ settled / Σ
//! reserved)` over the settlements of those windows (a call that books more than it reserved,
//! as output burndown does, costs the server more than its reservation); it is stated only
//! when it is above the applied quota (or the configured one when none is applied). Requests:
//! the p95 of attempts arrived per window, likewise.

// Numbers here come from requests, responses and settings: no arithmetic may panic or wrap
// on them (issue 21). Each exception is an `#[allow]` that says why it cannot.
#![warn(clippy::arithmetic_side_effects)]

mod build;
mod recorder;

use std::collections::BTreeMap;
use std::fmt;

#[cfg(feature = "sdk")]
pub(crate) use self::build::KeyInput;
pub use self::recorder::{CapacityRecorder, DEFAULT_MAX_KEYS, OTHER};

use crate::quotas::QuotaValues;

/// p50, p95 and max over the windows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
pub struct Spread {
    /// Median.
    pub p50: u64,
    /// 95th percentile (nearest rank).
    pub p95: u64,
    /// Maximum.
    pub max: u64,
}

/// Demand per window.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Demand {
    /// Attempts that arrived (admitted or not).
    pub requests: Spread,
    /// Tokens reserved by the attempts that arrived.
    pub tokens_reserved: Spread,
    /// Tokens settled.
    pub tokens_settled: Spread,
}

/// Queue waits, and which limit caused them.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Waits {
    /// Attempts admitted after waiting.
    pub waited: u64,
    /// Time spent waiting because the requests window was full.
    pub on_requests_secs: f64,
    /// Time spent waiting because the tokens window was full.
    pub on_tokens_secs: f64,
    /// Time spent waiting because the daily tokens were spent.
    pub on_tokens_per_day_secs: f64,
    /// The dimension that made attempts wait longest (`requests`, `tokens`,
    /// `tokens-per-day`), if any waited.
    pub binding: Option<&'static str>,
    /// Median queue wait of admitted attempts, in milliseconds.
    pub p50_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// Longest.
    pub max_ms: f64,
}

/// The limits of a key.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Limits {
    /// The configured limits.
    pub configured: QuotaValues,
    /// The limits in force now (lower after throttle feedback).
    pub effective: QuotaValues,
    /// The applied quota from Service Quotas, if known.
    pub applied: Option<QuotaValues>,
}

/// What to ask for.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Recommendation {
    /// Tokens per window that would have held the p95 window, when above the quota.
    pub tokens_per_window: Option<u64>,
    /// Requests per window likewise.
    pub requests_per_window: Option<u64>,
    /// "request an increase to N tokens per minute for MODEL in REGION", or that the quota
    /// covers the p95 window.
    pub text: String,
    /// When the daily quota will be spent at the observed rate, if the key has one.
    pub daily: Option<String>,
    /// The same, in seconds from now.
    pub daily_spent_in_secs: Option<f64>,
}

/// The report of one quota key.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct KeyReport {
    /// The key.
    pub key: String,
    /// The model id, for a Bedrock key.
    pub model: Option<String>,
    /// The region, for a Bedrock key.
    pub region: Option<String>,
    /// The output burndown the limiter settles this key's output tokens at (from the model
    /// table), for a Bedrock key: if the server books more, the key is throttled.
    pub burndown: Option<u64>,
    /// Demand per window.
    pub demand: Demand,
    /// Queue waits.
    pub waits: Waits,
    /// The share of the covered time some attempt was waiting (0 to 1).
    pub saturated_share: f64,
    /// Server throttles by cause.
    pub throttles: BTreeMap<&'static str, u64>,
    /// Local refusals by reason (`cost-above-limit`, `wait-too-long`, `queue-full`).
    pub refusals: BTreeMap<&'static str, u64>,
    /// Attempts that left the queue before their signature expired, handed back to be
    /// re-signed with their place kept (not refusals: the request goes on).
    pub resigns: u64,
    /// Transient failures.
    pub transient: u64,
    /// Fatal failures.
    pub fatal: u64,
    /// Configured, effective and applied limits.
    pub limits: Limits,
    /// What to ask for.
    pub recommendation: Recommendation,
    /// Configured above applied, no applied quota.
    pub warnings: Vec<String>,
}

/// The capacity report: every key seen over the last windows.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct CapacityReport {
    /// The window length, in seconds.
    pub window_secs: f64,
    /// How many windows it covers.
    pub windows: usize,
    /// Per key, sorted by key.
    pub keys: Vec<KeyReport>,
    /// Retries the stack made (all keys; from the retry layer).
    pub retries: u64,
    /// Attempts handed back to be re-signed, their place in line kept (all keys). Each one
    /// is an extra attempt of the SDK, not a failure. For a plain recorder, over the covered
    /// windows; for [`BedrockThrottle::report`](crate::sdk::BedrockThrottle::report), since
    /// the throttle was built.
    pub resigns: u64,
    /// Calls returned to the caller with an error by the retry layer (all keys): what it
    /// gave up on. A re-sign hand-back is not one.
    pub give_ups: u64,
}

fn q(v: Option<u64>) -> String {
    v.map_or_else(|| "-".to_owned(), |v| v.to_string())
}

impl fmt::Display for CapacityReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "capacity report: last {} windows of {}s; {} retries, {} re-signs, {} give-ups",
            self.windows, self.window_secs, self.retries, self.resigns, self.give_ups
        )?;
        for k in &self.keys {
            match k.burndown {
                Some(b) => writeln!(f, "  {} (output burndown {b}x)", k.key)?,
                None => writeln!(f, "  {}", k.key)?,
            }
            writeln!(
                f,
                "    {:<26} {:>10} {:>10} {:>10}",
                "per window", "p50", "p95", "max"
            )?;
            for (name, s) in [
                ("requests", k.demand.requests),
                ("tokens reserved (arrival)", k.demand.tokens_reserved),
                ("tokens settled", k.demand.tokens_settled),
            ] {
                writeln!(
                    f,
                    "    {name:<26} {:>10} {:>10} {:>10}",
                    s.p50, s.p95, s.max
                )?;
            }
            writeln!(
                f,
                "    {:<26} {:>10} {:>10} {:>10}",
                "limits", "configured", "effective", "applied"
            )?;
            let a = k.limits.applied.unwrap_or_default();
            for (name, c, e, a) in [
                (
                    "requests",
                    k.limits.configured.requests,
                    k.limits.effective.requests,
                    a.requests,
                ),
                (
                    "tokens",
                    k.limits.configured.tokens,
                    k.limits.effective.tokens,
                    a.tokens,
                ),
                (
                    "tokens per day",
                    k.limits.configured.tokens_per_day,
                    k.limits.effective.tokens_per_day,
                    a.tokens_per_day,
                ),
            ] {
                writeln!(f, "    {name:<26} {:>10} {:>10} {:>10}", q(c), q(e), q(a))?;
            }
            let w = &k.waits;
            writeln!(
                f,
                "    waited: {} attempts; on requests {:.1}s, tokens {:.1}s, tokens/day {:.1}s → {}",
                w.waited,
                w.on_requests_secs,
                w.on_tokens_secs,
                w.on_tokens_per_day_secs,
                match w.binding {
                    Some(b) => format!("{b}-bound"),
                    None => "no limit made anyone wait".to_owned(),
                }
            )?;
            writeln!(
                f,
                "    queue wait p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms; saturated {:.0}% of the time",
                w.p50_ms,
                w.p99_ms,
                w.max_ms,
                k.saturated_share * 100.0
            )?;
            let list = |m: &BTreeMap<&'static str, u64>| {
                if m.is_empty() {
                    "none".to_owned()
                } else {
                    m.iter()
                        .map(|(k, v)| format!("{k} {v}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                }
            };
            writeln!(
                f,
                "    server throttles: {}; local refusals: {}; re-signs {}; transient {}, fatal {}",
                list(&k.throttles),
                list(&k.refusals),
                k.resigns,
                k.transient,
                k.fatal
            )?;
            writeln!(f, "    → {}", k.recommendation.text)?;
            if let Some(d) = &k.recommendation.daily {
                writeln!(f, "    → {d}")?;
            }
            for warning in &k.warnings {
                writeln!(f, "    ! {warning}")?;
            }
        }
        Ok(())
    }
}
