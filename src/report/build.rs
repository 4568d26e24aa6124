//! From the recorded windows to a key's report: quantiles, the binding limit, the
//! recommendation.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::budget::{KeyStats, Quota};
use crate::quotas::QuotaValues;

use super::recorder::{CAUSES, REFUSALS, Slot, cause_name};
use super::{Demand, KeyReport, Limits, Recommendation, Spread, Waits};

/// What the report of one key needs beside the recorded windows.
pub(crate) struct KeyInput {
    pub(crate) name: String,
    pub(crate) model: Option<String>,
    pub(crate) region: Option<String>,
    pub(crate) stats: Option<KeyStats>,
    /// The applied quota (Service Quotas), if one is known.
    pub(crate) applied: Option<Quota>,
    /// Whether applied quotas were loaded at all (so a missing one is worth a warning).
    pub(crate) applied_known: bool,
}

/// The nearest-rank quantile `q` of `sorted` (0 for none).
pub(crate) fn quantile<T: Copy + Default>(sorted: &[T], q: f64) -> T {
    if sorted.is_empty() {
        return T::default();
    }
    // A float-to-int `as` saturates (NaN gives 0), and the rank is clamped into the slice.
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()).saturating_sub(1)]
}

fn spread(mut values: Vec<u64>) -> Spread {
    values.sort_unstable();
    Spread {
        p50: quantile(&values, 0.50),
        p95: quantile(&values, 0.95),
        max: values.last().copied().unwrap_or(0),
    }
}

fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e6).round() / 1e3
}

pub(crate) fn build_key(
    input: KeyInput,
    slots: &[&Slot],
    windows: usize,
    window: Duration,
    covered: Duration,
) -> KeyReport {
    // Windows without traffic count as zero demand.
    let pad = |f: &dyn Fn(&Slot) -> u64| {
        let mut v: Vec<u64> = slots.iter().map(|s| f(s)).collect();
        v.resize(windows.max(v.len()), 0);
        v
    };
    let demand = Demand {
        requests: spread(pad(&|s| s.requests)),
        tokens_reserved: spread(pad(&|s| s.reserved)),
        tokens_settled: spread(pad(&|s| s.settled)),
    };
    let mut waited_on = [Duration::ZERO; 3];
    let mut waits: Vec<Duration> = Vec::new();
    let mut saturated = Duration::ZERO;
    let mut waited = 0;
    let mut throttles = BTreeMap::new();
    let mut refusals = BTreeMap::new();
    let (mut transient, mut fatal, mut resigns) = (0, 0, 0);
    // Sums saturate: the counts come from request bodies and settings (see the recorder).
    let add = |total: &mut u64, n: u64| *total = total.saturating_add(n);
    for s in slots {
        for (total, d) in waited_on.iter_mut().zip(s.waited_on) {
            *total = total.saturating_add(d);
        }
        waits.extend_from_slice(&s.waits);
        saturated = saturated.saturating_add(s.saturated);
        add(&mut waited, s.waited);
        for (cause, n) in CAUSES.iter().zip(s.throttles) {
            if n > 0 {
                add(throttles.entry(cause_name(*cause)).or_insert(0), n);
            }
        }
        for (reason, n) in REFUSALS.iter().zip(s.refusals) {
            if n > 0 {
                add(refusals.entry(*reason).or_insert(0), n);
            }
        }
        add(&mut transient, s.transient);
        add(&mut fatal, s.fatal);
        add(&mut resigns, s.resigns);
    }
    waits.sort_unstable();
    let binding = ["requests", "tokens", "tokens-per-day"]
        .into_iter()
        .zip(waited_on)
        .filter(|(_, d)| !d.is_zero())
        .max_by_key(|(_, d)| *d)
        .map(|(name, _)| name);
    let waits_report = Waits {
        waited,
        on_requests_secs: waited_on[0].as_secs_f64(),
        on_tokens_secs: waited_on[1].as_secs_f64(),
        on_tokens_per_day_secs: waited_on[2].as_secs_f64(),
        binding,
        p50_ms: ms(quantile(&waits, 0.50)),
        p99_ms: ms(quantile(&waits, 0.99)),
        max_ms: ms(waits.last().copied().unwrap_or_default()),
    };
    let stats = input.stats;
    let configured = Quota {
        requests: stats.and_then(|s| s.requests).map(|d| d.limit),
        tokens: stats.and_then(|s| s.tokens).map(|d| d.limit),
        tokens_per_day: stats.and_then(|s| s.tokens_per_day).map(|d| d.limit),
    };
    let effective = Quota {
        requests: stats.and_then(|s| s.requests).map(|d| d.effective_limit),
        tokens: stats.and_then(|s| s.tokens).map(|d| d.effective_limit),
        tokens_per_day: stats
            .and_then(|s| s.tokens_per_day)
            .map(|d| d.effective_limit),
    };
    let mut warnings = Vec::new();
    if let Some(applied) = input.applied {
        for (dim, limit) in configured.limits() {
            if let Some(a) = applied.get(dim).filter(|a| limit > *a) {
                warnings.push(format!(
                    "configured {limit} {dim} per window is above the applied quota of {a}: \
                     the server will throttle what the limiter admits"
                ));
            }
        }
    } else if input.applied_known {
        warnings.push(
            "no applied quota in Service Quotas for this model id: the limit is configuration only"
                .to_owned(),
        );
    }
    let per = if window == Duration::from_secs(60) {
        "per minute".to_owned()
    } else {
        format!("per window ({window:?})")
    };
    let what = match (&input.model, &input.region) {
        (Some(m), Some(r)) => format!("{m} in {r}"),
        _ => input.name.clone(),
    };
    // The quota at which the p95 window would not have queued: its demand at arrival, in the
    // server's currency (reservations scaled by the observed settled / reserved ratio when
    // calls cost more than they reserved, as with output burndown), and no less than the p95
    // window of settlements.
    let (sum_settled, sum_reserved) = slots.iter().fold((0u64, 0u64), |(s, r), slot| {
        (
            s.saturating_add(slot.settled),
            r.saturating_add(slot.settled_reserved),
        )
    });
    let ratio = if sum_reserved > 0 {
        (sum_settled as f64 / sum_reserved as f64).max(1.0)
    } else {
        1.0
    };
    let tokens_needed =
        ((demand.tokens_reserved.p95 as f64 * ratio).ceil() as u64).max(demand.tokens_settled.p95);
    let requests_needed = demand.requests.p95;
    let reference = |dim: crate::budget::Dimension| {
        input
            .applied
            .and_then(|a| a.get(dim))
            .or(configured.get(dim))
    };
    let tpm_short = reference(crate::budget::Dimension::Tokens).filter(|q| tokens_needed > *q);
    let rpm_short = reference(crate::budget::Dimension::Requests).filter(|q| requests_needed > *q);
    let mut lines = Vec::new();
    if tpm_short.is_some() {
        lines.push(format!(
            "request an increase to {tokens_needed} tokens {per} for {what}"
        ));
    }
    if rpm_short.is_some() {
        lines.push(format!(
            "request an increase to {requests_needed} requests {per} for {what}"
        ));
    }
    if lines.is_empty() {
        lines.push(format!("the quota covers the p95 window for {what}"));
    }
    let daily = stats.and_then(|s| s.tokens_per_day).and_then(|d| {
        let spent_windows = windows.max(1) as f64;
        let rate = sum_settled as f64 / spent_windows;
        if rate <= 0.0 {
            return None;
        }
        let left = d.effective_limit.saturating_sub(d.used) as f64;
        let secs = left / rate * window.as_secs_f64();
        // A daily limit of u64::MAX lasts longer than a `Duration` can say.
        let when = match Duration::try_from_secs_f64(secs) {
            Ok(d) if d < LONG => format!("is spent in {}", human(d)),
            _ => "lasts more than a year".to_owned(),
        };
        Some((
            secs,
            format!(
                "at this rate ({rate:.0} tokens per window) the daily quota of {} {when}",
                d.limit,
            ),
        ))
    });
    KeyReport {
        key: input.name,
        model: input.model,
        region: input.region,
        burndown: None,
        demand,
        waits: waits_report,
        saturated_share: if covered.is_zero() {
            0.0
        } else {
            (saturated.as_secs_f64() / covered.as_secs_f64()).min(1.0)
        },
        throttles,
        refusals,
        resigns,
        transient,
        fatal,
        limits: Limits {
            configured: QuotaValues::from(configured),
            effective: QuotaValues::from(effective),
            applied: input.applied.map(QuotaValues::from),
        },
        recommendation: Recommendation {
            tokens_per_window: tpm_short.map(|_| tokens_needed),
            requests_per_window: rpm_short.map(|_| requests_needed),
            daily_spent_in_secs: daily.as_ref().map(|(s, _)| *s),
            text: lines.join("; "),
            daily: daily.map(|(_, t)| t),
        },
        warnings,
    }
}

/// Beyond this, the report says "more than a year" instead of a number of hours.
const LONG: Duration = Duration::from_secs(365 * 24 * 3600);

pub(crate) fn human(d: Duration) -> String {
    let s = d.as_secs();
    if s >= 3600 {
        format!("{}h{:02}m", s / 3600, (s % 3600) / 60)
    } else if s >= 60 {
        format!("{}m{:02}s", s / 60, s % 60)
    } else {
        format!("{:.1}s", d.as_secs_f64())
    }
}
