//! The retry decision: whether a classified result is retried, and after which delay.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::backoff::Jitter;
use super::{Backoff, RetryBudget};
use crate::classify::{Classification, Outcome, ThrottleCause};

/// Number of [`ThrottleCause`] variants, for the per-cause attempt table.
const CAUSES: usize = 6;

fn cause_index(cause: ThrottleCause) -> usize {
    match cause {
        ThrottleCause::Requests => 0,
        ThrottleCause::Tokens => 1,
        ThrottleCause::TokensPerDay => 2,
        ThrottleCause::Capacity => 3,
        ThrottleCause::ModelNotReady => 4,
        ThrottleCause::Unknown => 5,
    }
}

/// The attempts per call by default, the first included (the AWS SDK's standard mode has 3).
pub(crate) const DEFAULT_ATTEMPTS: NonZeroU32 = NonZeroU32::new(3).unwrap();
const FIVE: NonZeroU32 = NonZeroU32::new(5).unwrap();

/// What the retry layer decided after an attempt that did not succeed, for an observer
/// ([`ThrottleRetryLayer::on_decision`](super::ThrottleRetryLayer::on_decision)).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum RetryEvent {
    /// Attempt `attempt` ended with `outcome`; another starts after `delay`.
    Retry {
        /// The attempt that ended (1 for the first).
        attempt: u32,
        /// How it ended.
        outcome: Outcome,
        /// The delay before the next attempt.
        delay: Duration,
    },
    /// Attempt `attempt` ended with `outcome` and its result goes back to the caller.
    GiveUp {
        /// The attempt that ended.
        attempt: u32,
        /// How it ended.
        outcome: Outcome,
        /// Why no other attempt is made.
        reason: GiveUpReason,
    },
}

/// Why the retry layer gave a failed result back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum GiveUpReason {
    /// The failure is fatal.
    Fatal,
    /// A throttle that waiting cannot cure (tokens per day).
    NotRetryable,
    /// The attempt cap is reached.
    AttemptsExhausted,
    /// The request cannot be copied for another attempt.
    CannotResend,
    /// A retry could not finish before the deadline.
    Deadline,
    /// The retry budget is spent.
    BudgetExhausted,
}

impl GiveUpReason {
    /// A short name, for labels.
    pub fn as_str(self) -> &'static str {
        match self {
            GiveUpReason::Fatal => "fatal",
            GiveUpReason::NotRetryable => "not-retryable",
            GiveUpReason::AttemptsExhausted => "attempts-exhausted",
            GiveUpReason::CannotResend => "cannot-resend",
            GiveUpReason::Deadline => "deadline",
            GiveUpReason::BudgetExhausted => "budget-exhausted",
        }
    }
}

/// An observer of retry decisions.
#[derive(Clone)]
pub(crate) struct OnDecision(pub(crate) Arc<dyn Fn(&RetryEvent) + Send + Sync>);

impl std::fmt::Debug for OnDecision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("OnDecision")
    }
}

/// Everything a layer's services share: the protocol knowledge and the settings.
pub(crate) struct Policy<C, R> {
    pub(crate) classifier: C,
    pub(crate) cloner: R,
    pub(crate) config: Config,
}

/// The settings of a retry layer.
#[derive(Debug, Clone)]
pub(crate) struct Config {
    pub(crate) max_attempts: NonZeroU32,
    pub(crate) per_cause: [Option<NonZeroU32>; CAUSES],
    pub(crate) backoff: Backoff,
    pub(crate) budget: RetryBudget,
    pub(crate) deadline: Option<Duration>,
    pub(crate) jitter: Jitter,
    pub(crate) on_decision: Option<OnDecision>,
}

impl Default for Config {
    fn default() -> Self {
        let mut per_cause = [None; CAUSES];
        // Bedrock documents up to 5 attempts for a model that is still loading.
        per_cause[cause_index(ThrottleCause::ModelNotReady)] = Some(FIVE);
        Self {
            max_attempts: DEFAULT_ATTEMPTS,
            per_cause,
            backoff: Backoff::default(),
            budget: RetryBudget::default(),
            deadline: None,
            jitter: Jitter::ThreadLocal,
            on_decision: None,
        }
    }
}

impl Config {
    pub(crate) fn set_attempts_for(&mut self, cause: ThrottleCause, attempts: NonZeroU32) {
        self.per_cause[cause_index(cause)] = Some(attempts);
    }

    /// The attempt cap for a result with this throttle cause.
    pub(crate) fn attempts_for(&self, cause: ThrottleCause) -> u32 {
        self.per_cause[cause_index(cause)]
            .unwrap_or(self.max_attempts)
            .get()
    }

    /// The most attempts any result could get: a request is only cloned when another attempt is
    /// possible at all.
    pub(crate) fn most_attempts(&self) -> u32 {
        self.per_cause
            .iter()
            .flatten()
            .map(|n| n.get())
            .fold(self.max_attempts.get(), u32::max)
    }

    /// Decides, after attempt number `attempt` (1 for the first) ended with `classification`,
    /// whether to retry and after which delay. `None` means: give the caller this result.
    ///
    /// The budget is asked last, so a retry refused for another reason costs it nothing.
    pub(crate) fn retry_delay(
        &self,
        classification: Classification,
        attempt: u32,
        can_resend: bool,
        first_start: Instant,
        attempt_start: Instant,
    ) -> Option<Duration> {
        let decision = self.decide(
            classification,
            attempt,
            can_resend,
            first_start,
            attempt_start,
        );
        if let Some(hook) = &self.on_decision {
            let outcome = classification.outcome;
            match decision {
                Ok(delay) => (hook.0)(&RetryEvent::Retry {
                    attempt,
                    outcome,
                    delay,
                }),
                Err(Some(reason)) => (hook.0)(&RetryEvent::GiveUp {
                    attempt,
                    outcome,
                    reason,
                }),
                Err(None) => {}
            }
        }
        decision.ok()
    }

    /// The decision: a delay, or why not (`None`: success).
    fn decide(
        &self,
        classification: Classification,
        attempt: u32,
        can_resend: bool,
        first_start: Instant,
        attempt_start: Instant,
    ) -> Result<Duration, Option<GiveUpReason>> {
        let outcome = classification.outcome;
        let limit = match outcome {
            Outcome::Success => return Err(None),
            Outcome::Fatal => {
                tracing::debug!(attempt, ?outcome, "not retrying: the failure is fatal");
                return Err(Some(GiveUpReason::Fatal));
            }
            Outcome::Throttled(cause) if !cause.is_retryable() => {
                tracing::debug!(
                    attempt,
                    ?outcome,
                    "not retrying: waiting cannot cure this throttle"
                );
                return Err(Some(GiveUpReason::NotRetryable));
            }
            Outcome::Throttled(cause) => self.attempts_for(cause),
            Outcome::Transient => self.max_attempts.get(),
        };
        if attempt >= limit {
            tracing::debug!(attempt, ?outcome, limit, "giving up: attempts exhausted");
            return Err(Some(GiveUpReason::AttemptsExhausted));
        }
        if !can_resend {
            tracing::debug!(attempt, ?outcome, "giving up: the request cannot be cloned");
            return Err(Some(GiveUpReason::CannotResend));
        }

        let backoff = self.jitter.delay(&self.backoff, attempt);
        let retry_after = classification.retry_after;
        let delay = retry_after.map_or(backoff, |server| {
            bounded_hint(server, backoff, &self.backoff)
        });

        if let Some(deadline) = self.deadline {
            let now = Instant::now();
            // The last attempt's duration is the best estimate of the next one's.
            let last_took = now.saturating_duration_since(attempt_start);
            let would_end = now
                .checked_add(delay)
                .and_then(|t| t.checked_add(last_took));
            // An unrepresentable deadline is no deadline.
            let fits = match (would_end, first_start.checked_add(deadline)) {
                (_, None) => true,
                (None, Some(_)) => false,
                (Some(end), Some(limit)) => end <= limit,
            };
            if !fits {
                tracing::debug!(
                    attempt,
                    ?outcome,
                    ?delay,
                    ?last_took,
                    ?deadline,
                    "giving up: a retry could not finish before the deadline"
                );
                return Err(Some(GiveUpReason::Deadline));
            }
        }

        if !self.budget.withdraw() {
            tracing::debug!(
                attempt,
                ?outcome,
                "giving up: the retry budget is exhausted"
            );
            return Err(Some(GiveUpReason::BudgetExhausted));
        }
        tracing::debug!(
            attempt,
            ?outcome,
            ?delay,
            ?retry_after,
            "retrying after a delay"
        );
        Ok(delay)
    }
}

/// The delay before a retry when the server suggested `server`: at least the jittered
/// `backoff` (so a server that keeps answering "retry after 1 s" during a long storm does not
/// pin every client to 1 s), and at most the backoff's largest cap.
///
/// The cap is what the AWS SDK for Rust does: its standard retry strategy
/// (`aws-smithy-runtime` 1.16, `client/retries/strategy/standard.rs`,
/// `StandardRetryStrategy::calculate_backoff`) takes `retry_after.min(max_backoff)` under
/// retry behaviour 2.0, and `retry_after.clamp(t_i, t_i + 5 s)` under 2.1, where `t_i` is the
/// jittered exponential backoff, itself capped at `max_backoff`. Either way a hint can never
/// make a client wait without bound: a hint is a server's guess, and one that says "2^64 ms"
/// (a bug, or a hostile proxy) must not park a call for ever. Waiting longer than the cap is the
/// caller's choice to make, by raising the backoff's `max`.
fn bounded_hint(server: Duration, backoff: Duration, config: &Backoff) -> Duration {
    server.min(config.max()).max(backoff)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hints_are_bounded_by_the_cap_and_floored_by_the_backoff() {
        let b = Backoff::default();
        let ms = Duration::from_millis;
        assert_eq!(bounded_hint(ms(u64::MAX), ms(300), &b), b.max());
        assert_eq!(bounded_hint(Duration::MAX, ms(300), &b), b.max());
        assert_eq!(bounded_hint(ms(5_000), ms(300), &b), ms(5_000));
        assert_eq!(bounded_hint(ms(100), ms(300), &b), ms(300));
        assert_eq!(
            bounded_hint(Duration::ZERO, Duration::ZERO, &b),
            Duration::ZERO
        );
    }

    #[test]
    fn defaults() {
        let c = Config::default();
        assert_eq!(c.attempts_for(ThrottleCause::Requests), 3);
        assert_eq!(c.attempts_for(ThrottleCause::ModelNotReady), 5);
        assert_eq!(c.most_attempts(), 5);
    }

    #[test]
    fn every_cause_has_its_own_slot() {
        let causes = [
            ThrottleCause::Requests,
            ThrottleCause::Tokens,
            ThrottleCause::TokensPerDay,
            ThrottleCause::Capacity,
            ThrottleCause::ModelNotReady,
            ThrottleCause::Unknown,
        ];
        let mut seen: Vec<_> = causes.iter().map(|c| cause_index(*c)).collect();
        seen.sort_unstable();
        assert_eq!(seen, (0..CAUSES).collect::<Vec<_>>());
    }
}
