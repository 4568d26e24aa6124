//! bedrock-mantle's quotas on the OpenAI-compatible bodies (`POST /v1/chat/completions`,
//! `POST /v1/responses`): input and output tokens per window, two limits, no burndown.
//!
//! As the Bedrock user guide ("Quotas for the bedrock-mantle endpoint") describes them:
//! admission checks input + max tokens (the model's default when unset) against the INPUT
//! quota and answers 429 when over; the output is charged to the OUTPUT quota while it is
//! generated, and when that runs out the generation stops: a 200 with a `length` finish, not a
//! 429; the unused input reservation returns after the call; no requests-per-minute quota, and
//! no share of bedrock-runtime's account-wide day. The 429's body is
//! `{"code":"ThrottlingException","Message":"Too many requests"}` (the one shape seen, in a
//! third party's fixtures; see `ApiError::mantle_envelope`).
//!
//! The two limits live in two ledgers of the emulator's [`Ledgers`](super::ledger::Ledgers),
//! under the keys [`input_key`] and [`output_key`], so the stats show them per model.

use std::sync::Arc;

use http::{Response, StatusCode};
use tokio::time::Instant;

use super::error::ApiError;
use super::ledger::{Admission, lock};
use super::openai::{Api, Request, answer, invalid};
use super::ops::{Output, end_time};
use super::server::{Body, Shared};
use super::stats::bump;

/// The prefix of the mantle ledgers' keys.
pub(crate) const PREFIX: &str = "bedrock-mantle/";

/// The ledger key of `model`'s mantle input quota.
pub(crate) fn input_key(model: &str) -> String {
    format!("{PREFIX}input/{model}")
}

/// The ledger key of `model`'s mantle output quota.
pub(crate) fn output_key(model: &str) -> String {
    format!("{PREFIX}output/{model}")
}

/// Serves one validated request on bedrock-mantle.
pub(crate) async fn serve(
    shared: &Arc<Shared>,
    api: Api,
    request: Request,
    mut rng: fastrand::Rng,
    request_id: &str,
    start: Instant,
) -> Response<Body> {
    let model = request.model;
    let (inputs, outputs) = (
        shared.ledgers.get(&input_key(&model)),
        shared.ledgers.get(&output_key(&model)),
    );
    bump(&mut lock(&inputs).counters.requests);
    let info = shared.table.resolve(&model).0;
    let max_output = match request.max_output {
        Some(n) if n > info.max_output_tokens => {
            bump(&mut lock(&inputs).counters.rejected);
            return invalid(format!(
                "The maximum tokens you requested exceeds the model limit of {}.",
                info.max_output_tokens
            ))
            .into_response(request_id);
        }
        Some(n) => n,
        None => info.default_max_tokens,
    };
    let input = request.input;
    let now = Instant::now();
    let admitted = {
        let mut l = lock(&inputs);
        let r = l.admit(now, input.saturating_add(max_output));
        if r.is_ok() {
            l.counters.input_tokens = l.counters.input_tokens.saturating_add(input);
        }
        r
    };
    let Ok(reservation) = admitted else {
        return ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "ThrottlingException",
            "Too many requests",
        )
        .mantle_envelope()
        .into_response(request_id);
    };
    // The unused input reservation returns when the call ends.
    let input_admission = Admission::new(Arc::clone(&inputs), reservation, input);
    // What the output quota has left bounds what is generated: a cutoff, never a 429.
    let (output, cut, booked) = {
        let mut l = lock(&outputs);
        let room = match l.token_limit() {
            Some(limit) => limit.saturating_sub(l.usage(now).tokens),
            None => u64::MAX,
        };
        let cap = max_output.min(room);
        let output = Output::new(shared.config.output_length, cap, &mut rng);
        // Stopped by the output quota: it generated all the room there was (maybe none).
        let cut = room < max_output && output.n() == cap;
        if cut {
            bump(&mut l.counters.cutoffs);
        }
        let booked = l.admit(now, output.n());
        if booked.is_ok() {
            l.counters.output_tokens = l.counters.output_tokens.saturating_add(output.n());
        }
        (output, cut, booked)
    };
    let n = output.n();
    let end = end_time(&shared.config.latency, n);
    tokio::time::sleep_until(start.checked_add(end).unwrap_or(start)).await;
    input_admission.settle(input, 0);
    if let Ok(r) = booked {
        Admission::new(Arc::clone(&outputs), r, n).settle(n, n);
    }
    let truncated = cut || output.truncated();
    answer(api, &model, input, &output, truncated, &mut rng, request_id)
}
