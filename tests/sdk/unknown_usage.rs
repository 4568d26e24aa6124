//! Calls whose usage never arrives (the caller leaves, the body is dropped): the crate settles
//! what the server can have booked at most, so its ledger is never below the server's.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use aws_sdk_bedrockruntime::types::InferenceConfiguration;
use bedrock_throttle::budget::Quota as Limits;
use bedrock_throttle::budget::Quota;
use bedrock_throttle::emulator::{Emulator, EmulatorHandle, Enforcement, OutputLength};
use bedrock_throttle::sdk::BedrockThrottle;

use crate::support::{SONNET4, client, converse, key, settings, throttle, throttle_with, user};

/// The crate's tokens in the window of the key, and the emulator's.
fn ledgers(throttle: &BedrockThrottle, emulator: &EmulatorHandle) -> (u64, u64) {
    // The emulator first: anything booked later only raises the crate's side.
    let theirs = emulator.stats().model(SONNET4).window.tokens;
    let ours = throttle
        .budget()
        .stats(&key())
        .and_then(|s| s.tokens)
        .map_or(0, |t| t.used);
    (ours, theirs)
}

/// Waits (real time, bounded) until the emulator has settled every admitted call.
async fn emulator_settled(emulator: &EmulatorHandle) {
    for _ in 0..500 {
        let c = emulator.stats().model(SONNET4).counters;
        if c.settled == c.admitted {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the emulator never settled its calls");
}

/// Streams and calls dropped before the body, after the first event and mid-stream, and a
/// Converse whose caller gave up while the model generated: afterwards the crate's ledger is
/// never below the emulator's. (Before the worst case was settled, a dropped permit kept its
/// reservation, input + max output, while Bedrock books input + 5 x the output produced.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abandoned_calls_never_leave_the_ledger_below_the_server() {
    // A long window: nothing expires during the test, so the ledgers only accumulate. The
    // model writes its whole answer at once (no pacing), so the emulator books all of it, at
    // five times its count, whenever the caller leaves.
    let window = Duration::from_secs(600);
    let emulator = Emulator::builder()
        .model_quota(SONNET4, Quota::tokens(10_000_000))
        .window(window)
        .output_length(OutputLength::Fixed(200))
        .start()
        .await
        .unwrap();
    let throttle = throttle(window)
        .quota(SONNET4, Limits::tokens(10_000_000))
        .build()
        .unwrap();
    let client = client(&emulator, &throttle);
    let stream = || {
        client
            .converse_stream()
            .model_id(SONNET4)
            .messages(user(&"tell me a long story ".repeat(20)))
            .inference_config(InferenceConfiguration::builder().max_tokens(200).build())
            .send()
    };
    let mut cases = Vec::new();
    for events in [0usize, 1, 4] {
        let out = stream().await.unwrap();
        let mut receiver = out.stream;
        for _ in 0..events {
            receiver.recv().await.unwrap().expect("an event");
        }
        drop(receiver);
        emulator_settled(&emulator).await;
        cases.push((
            format!("stream dropped after {events} events"),
            ledgers(&throttle, &emulator),
        ));
    }
    // A Converse whose caller leaves before the answer (the model takes 300 ms to answer).
    let slow = Emulator::builder()
        .model_quota(SONNET4, Quota::tokens(10_000_000))
        .window(window)
        .output_length(OutputLength::Fixed(200))
        .time_to_first_token(Duration::from_millis(300))
        .start()
        .await
        .unwrap();
    let slow_throttle = crate::support::throttle(window)
        .quota(SONNET4, Limits::tokens(10_000_000))
        .build()
        .unwrap();
    let slow_client = crate::support::client(&slow, &slow_throttle);
    let story = "tell me a long story ".repeat(20);
    let call = converse(&slow_client, &story, 200);
    assert!(
        tokio::time::timeout(Duration::from_millis(100), call)
            .await
            .is_err(),
        "the call was still waiting for its answer"
    );
    emulator_settled(&slow).await;
    cases.push(("converse abandoned".into(), ledgers(&slow_throttle, &slow)));

    for (case, (ours, theirs)) in &cases {
        assert!(ours >= theirs, "{case}: crate {ours} < emulator {theirs}");
    }
    // The emulator booked more than the reservations (5x output), so the check has teeth.
    let c = emulator.stats().model(SONNET4).counters;
    assert!(c.tokens_settled > 0 && c.output_tokens > 0, "{c:?}");
    let s = throttle.budget().stats(&key()).unwrap();
    assert_eq!(s.outstanding, 0);
}

/// How a caller of the thousand-call test behaves.
#[derive(Debug, Clone, Copy)]
enum Caller {
    /// Reads the whole answer, however long it waits.
    Patient,
    /// Gives up after this long (queued, or halfway through the answer).
    GivesUpAfter(Duration),
    /// Leaves as soon as the answer starts, without reading it.
    LeavesAtTheAnswer,
}

/// A ConverseStream call by `caller`; `None` when the caller gave up.
async fn stream_call(
    client: &aws_sdk_bedrockruntime::Client,
    text: &str,
    max_tokens: i32,
    caller: Caller,
) -> Option<Result<(), String>> {
    let call = async {
        let out = client
            .converse_stream()
            .model_id(SONNET4)
            .messages(user(text))
            .inference_config(
                InferenceConfiguration::builder()
                    .max_tokens(max_tokens)
                    .build(),
            )
            .send()
            .await
            .map_err(|e| format!("{e:?}"))?;
        if matches!(caller, Caller::LeavesAtTheAnswer) {
            return Ok(false);
        }
        let mut stream = out.stream;
        while stream.recv().await.map_err(|e| format!("{e:?}"))?.is_some() {}
        Ok(true)
    };
    let finished = match caller {
        Caller::GivesUpAfter(patience) => tokio::time::timeout(patience, call).await.ok()?,
        Caller::Patient | Caller::LeavesAtTheAnswer => call.await,
    };
    match finished {
        Ok(true) => Some(Ok(())),
        Ok(false) => None,
        Err(e) => Some(Err(e)),
    }
}

/// 1,000 streams at about 3x the quota, with callers that give up at random (while queued,
/// halfway through reading the answer, as soon as it starts, or not at all): nothing stays outstanding, and the
/// crate's ledger is never below the emulator's as the windows slide. While calls settle, a
/// sample can fall between the server's settlement (when it generates the last token) and the
/// client's reading of it; a deficit is allowed there, of at most one call's worth. Once the
/// traffic stops, none is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_calls_with_caller_timeouts_leave_nothing_behind() {
    const CALLS: u64 = 1_000;
    const QUOTA: u64 = 30_000;
    const MAX_TOKENS: i32 = 20;
    let window = Duration::from_secs(1);
    let emulator = Emulator::builder()
        .model_quota(SONNET4, Quota::tokens(QUOTA))
        .window(window)
        .enforcement(Enforcement::SlidingWindow)
        .output_length(OutputLength::Uniform { min: 5, max: 20 })
        .seed(5)
        .start()
        .await
        .unwrap();
    // The margin is generous for a loaded test machine: the delay from our admission to the
    // emulator's booking, and from a caller's leaving to the emulator's noticing it.
    let throttle = throttle_with(settings(window).expiry_margin(Duration::from_millis(150)))
        .quota(SONNET4, Limits::tokens(QUOTA))
        .build()
        .unwrap();
    let client = client(&emulator, &throttle);
    let prompt = "word ".repeat(20);
    // One call's worst case: its input estimate and five times its max output.
    let per_call = prompt.len() as u64 / 3 + 8 + 5 * MAX_TOKENS as u64;

    let emulator = Arc::new(emulator);
    let done = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (throttle, emulator, done) = (throttle.clone(), emulator.clone(), done.clone());
        tokio::spawn(async move {
            let (mut busy, mut quiet) = (Vec::new(), Vec::new());
            let mut quiet_until = None;
            loop {
                let traffic_over = done.load(Ordering::SeqCst);
                let (ours, theirs) = ledgers(&throttle, &emulator);
                let gap = theirs as i64 - ours as i64;
                if traffic_over {
                    quiet.push(gap);
                    let until = *quiet_until
                        .get_or_insert_with(|| tokio::time::Instant::now() + window * 2);
                    if tokio::time::Instant::now() >= until {
                        return (busy, quiet);
                    }
                } else {
                    busy.push(gap);
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
    };

    let mut rng = fastrand::Rng::with_seed(11);
    let mut calls = Vec::new();
    for _ in 0..CALLS {
        let client = client.clone();
        let prompt = prompt.clone();
        // A third wait for ever, a third give up after up to 3 s, a third leave as soon as
        // the answer starts (the emulator has then booked all of it).
        let caller = match rng.u8(..3) {
            0 => Caller::Patient,
            1 => Caller::GivesUpAfter(Duration::from_millis(rng.u64(0..3_000))),
            _ => Caller::LeavesAtTheAnswer,
        };
        calls.push(tokio::spawn(async move {
            stream_call(&client, &prompt, MAX_TOKENS, caller).await
        }));
        tokio::time::sleep(Duration::from_micros(1_000)).await;
    }
    let mut completed = 0;
    for call in calls {
        if let Some(result) = call.await.unwrap() {
            result.expect("a caller that waits gets its answer");
            completed += 1;
        }
    }
    emulator_settled(&emulator).await;
    done.store(true, Ordering::SeqCst);
    let (busy, quiet) = sampler.await.unwrap();

    let s = throttle.budget().stats(&key());
    if let Some(s) = s {
        assert_eq!((s.outstanding, s.waiters), (0, 0), "nothing left behind");
    }
    let worst_busy = busy.iter().copied().max().unwrap_or(0);
    let worst_quiet = quiet.iter().copied().max().unwrap_or(0);
    let c = emulator.stats().model(SONNET4).counters;
    println!(
        "{completed} of {CALLS} completed; {} samples under traffic, worst deficit {worst_busy} \
         tokens; {} samples after, worst deficit {worst_quiet}; server throttles {}",
        busy.len(),
        quiet.len(),
        c.throttled_tokens
    );
    assert!(completed > CALLS / 3, "{completed}");
    assert!(!quiet.is_empty() && !busy.is_empty());
    assert!(
        worst_quiet <= 0,
        "after the traffic, the crate's ledger fell {worst_quiet} tokens below the emulator's"
    );
    assert!(
        worst_busy <= per_call as i64,
        "under traffic, the crate's ledger fell {worst_busy} tokens below the emulator's"
    );
}
