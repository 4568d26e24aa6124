//! Counters the emulator keeps per model, served as JSON at `GET /_emulator/stats` and returned
//! typed by [`EmulatorHandle::stats`](super::EmulatorHandle::stats). Tests and benchmarks read
//! them to check that a client stayed inside its quota (`peak_window`) and how often it was
//! throttled.

use std::collections::BTreeMap;
use std::ops::AddAssign;

use serde::{Deserialize, Serialize};

/// A snapshot of every counter.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
#[non_exhaustive]
pub struct Stats {
    /// Per model id (as decoded from the request path).
    pub models: BTreeMap<String, ModelStats>,
    /// The counters summed over every model.
    pub totals: Counters,
    /// Usage of the account-wide day (every model's reservations and settlements), when the
    /// emulator has an [account-wide daily quota](super::EmulatorBuilder::account_tokens_per_day).
    pub account_tokens_per_day: Option<u64>,
}

impl Stats {
    /// The stats of one model, or all zeros when it was never seen.
    pub fn model(&self, model_id: &str) -> ModelStats {
        self.models.get(model_id).cloned().unwrap_or_default()
    }
}

/// What happened to one model.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
#[non_exhaustive]
pub struct ModelStats {
    /// Event counters.
    #[serde(flatten)]
    pub counters: Counters,
    /// Usage of the current windows at the time of the snapshot.
    pub window: WindowUsage,
    /// The highest usage of each window seen right after a booking (a reservation, or a
    /// settlement above its reservation). For a token bucket: capacity minus level.
    pub peak_window: WindowUsage,
}

/// Event counters (since start or the last reset).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
#[non_exhaustive]
pub struct Counters {
    /// Inference requests received (InvokeModel, Converse and the streaming variants), whatever
    /// their outcome.
    pub requests: u64,
    /// Requests admitted by the quota (a response, possibly a stream fault, followed).
    pub admitted: u64,
    /// Refused with "Too many requests".
    pub throttled_requests: u64,
    /// Refused with "Too many tokens".
    pub throttled_tokens: u64,
    /// Refused with "Too many tokens per day".
    pub throttled_tokens_per_day: u64,
    /// Refused with `ValidationException` or `ResourceNotFoundException`.
    pub rejected: u64,
    /// Injected faults.
    pub faults: FaultCounters,
    /// Tokens reserved at admission (input + max output).
    pub tokens_reserved: u64,
    /// Tokens settled at the end of responses (input + output × burndown).
    pub tokens_settled: u64,
    /// Input tokens of admitted requests (the emulator's counting rule).
    pub input_tokens: u64,
    /// Output tokens produced.
    pub output_tokens: u64,
    /// Admitted requests whose settlement is done.
    pub settled: u64,
    /// CountTokens requests answered (they use no quota).
    pub count_tokens_requests: u64,
    /// bedrock-mantle answers cut short because the output tokens per minute ran out (a 200
    /// with a `length` finish, not a 429).
    pub cutoffs: u64,
}

/// Adds one to a counter, saturating (a counter never wraps, however long the emulator runs).
pub(crate) fn bump(count: &mut u64) {
    *count = count.saturating_add(1);
}

impl AddAssign for Counters {
    fn add_assign(&mut self, o: Self) {
        self.requests = self.requests.saturating_add(o.requests);
        self.admitted = self.admitted.saturating_add(o.admitted);
        self.throttled_requests = self.throttled_requests.saturating_add(o.throttled_requests);
        self.throttled_tokens = self.throttled_tokens.saturating_add(o.throttled_tokens);
        self.throttled_tokens_per_day = self
            .throttled_tokens_per_day
            .saturating_add(o.throttled_tokens_per_day);
        self.rejected = self.rejected.saturating_add(o.rejected);
        // `FaultCounters`' `AddAssign` saturates, field by field.
        #[allow(clippy::arithmetic_side_effects)]
        {
            self.faults += o.faults;
        }
        self.tokens_reserved = self.tokens_reserved.saturating_add(o.tokens_reserved);
        self.tokens_settled = self.tokens_settled.saturating_add(o.tokens_settled);
        self.input_tokens = self.input_tokens.saturating_add(o.input_tokens);
        self.output_tokens = self.output_tokens.saturating_add(o.output_tokens);
        self.settled = self.settled.saturating_add(o.settled);
        self.count_tokens_requests = self
            .count_tokens_requests
            .saturating_add(o.count_tokens_requests);
        self.cutoffs = self.cutoffs.saturating_add(o.cutoffs);
    }
}

/// Injected faults by kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
#[non_exhaustive]
pub struct FaultCounters {
    /// 503 "Bedrock is unable to process your request."
    pub service_unavailable: u64,
    /// 503 "Too many connections, please wait before trying again."
    pub too_many_connections: u64,
    /// 500 `InternalServerException`.
    pub internal_server: u64,
    /// 408 `ModelTimeoutException`.
    pub model_timeout: u64,
    /// 429 `ModelNotReadyException`.
    pub model_not_ready: u64,
    /// 424 `ModelErrorException`.
    pub model_error: u64,
    /// 403 `AccessDeniedException`.
    pub access_denied: u64,
    /// 400 `ServiceQuotaExceededException`.
    pub service_quota_exceeded: u64,
    /// HTTP 529 `overloaded_error`.
    pub overloaded: u64,
    /// Exception frames sent before the first event.
    pub stream_exception_before_events: u64,
    /// Exception frames sent after some events.
    pub stream_exception_after_events: u64,
}

impl FaultCounters {
    /// All faults together.
    pub fn total(&self) -> u64 {
        [
            self.service_unavailable,
            self.too_many_connections,
            self.internal_server,
            self.model_timeout,
            self.model_not_ready,
            self.model_error,
            self.access_denied,
            self.service_quota_exceeded,
            self.overloaded,
            self.stream_exception_before_events,
            self.stream_exception_after_events,
        ]
        .into_iter()
        .fold(0, u64::saturating_add)
    }
}

impl AddAssign for FaultCounters {
    fn add_assign(&mut self, o: Self) {
        self.service_unavailable = self
            .service_unavailable
            .saturating_add(o.service_unavailable);
        self.too_many_connections = self
            .too_many_connections
            .saturating_add(o.too_many_connections);
        self.internal_server = self.internal_server.saturating_add(o.internal_server);
        self.model_timeout = self.model_timeout.saturating_add(o.model_timeout);
        self.model_not_ready = self.model_not_ready.saturating_add(o.model_not_ready);
        self.model_error = self.model_error.saturating_add(o.model_error);
        self.access_denied = self.access_denied.saturating_add(o.access_denied);
        self.service_quota_exceeded = self
            .service_quota_exceeded
            .saturating_add(o.service_quota_exceeded);
        self.stream_exception_before_events = self
            .stream_exception_before_events
            .saturating_add(o.stream_exception_before_events);
        self.stream_exception_after_events = self
            .stream_exception_after_events
            .saturating_add(o.stream_exception_after_events);
        self.overloaded = self.overloaded.saturating_add(o.overloaded);
    }
}

/// Usage of the three windows of one model.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
#[non_exhaustive]
pub struct WindowUsage {
    /// Requests in the request window.
    pub requests: u64,
    /// Tokens in the token window.
    pub tokens: u64,
    /// Tokens in the day window.
    pub tokens_per_day: u64,
}

impl WindowUsage {
    pub(crate) fn max_with(&mut self, o: Self) {
        self.requests = self.requests.max(o.requests);
        self.tokens = self.tokens.max(o.tokens);
        self.tokens_per_day = self.tokens_per_day.max(o.tokens_per_day);
    }
}
