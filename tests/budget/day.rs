//! A day of traffic on an account's daily scope shared by three models, under a paused clock:
//! the account key's ledger stays small, the minute windows stay exact, and the daily limit
//! stops every model together.

use std::collections::VecDeque;
use std::time::Duration;

use bedrock_throttle::budget::{AdmissionError, Budget, Quota, Scopes};
use tokio::time::{Instant, advance};

const MODELS: [&str; 3] = ["m0", "m1", "m2"];
/// 33 requests a second: 1,980 a minute.
const PER_SECOND: usize = 33;
const COST: u64 = 100;
/// Each model's minute holds exactly its traffic (11 requests a second for 60 s): one charge
/// freed late, by any amount, would refuse a request.
const MODEL_LIMIT: u64 = 60 * 11 * COST;
/// Reached after about 21.6 hours.
const DAY_LIMIT: u64 = (PER_SECOND as u64) * COST * 86_400 / 10 * 9;

#[tokio::test(start_paused = true)]
async fn a_day_at_two_thousand_requests_a_minute_keeps_the_account_key_small() {
    let b: Budget<&'static str> = Budget::builder()
        .quota_fn(|k: &&'static str| match *k {
            "account" => Some(Quota::unlimited().with_tokens_per_day(DAY_LIMIT)),
            _ => Some(Quota::tokens(MODEL_LIMIT)),
        })
        .build()
        .unwrap();
    let start = Instant::now();
    let mut minute: Vec<VecDeque<Instant>> = vec![VecDeque::new(); MODELS.len()];
    let mut stopped: [Option<Instant>; 3] = [None; 3];
    let mut admitted: u64 = 0;
    let mut largest = 0;
    for second in 0..86_400u64 {
        let now = Instant::now();
        for i in 0..PER_SECOND {
            let m = i % MODELS.len();
            let scopes = Scopes::new(MODELS[m]).with("account");
            match b.try_acquire_scopes(scopes, COST) {
                Ok(permit) => {
                    assert!(
                        stopped[m].is_none(),
                        "{} admitted after the day ran out",
                        MODELS[m]
                    );
                    permit.settle(COST);
                    minute[m].push_back(now);
                    admitted += COST;
                }
                Err(AdmissionError::WaitTooLong { .. }) => {
                    stopped[m].get_or_insert(now);
                }
                Err(e) => panic!("second {second}: {e}"),
            }
        }
        if second % 60 == 59 || stopped.iter().any(Option::is_some) && second % 600 == 0 {
            // Exact on the minute windows: each model's ledger holds what the last minute
            // admitted, to the token.
            for (m, times) in minute.iter_mut().enumerate() {
                while times
                    .front()
                    .is_some_and(|&t| t + Duration::from_secs(60) <= now)
                {
                    times.pop_front();
                }
                let used = b.stats(&MODELS[m]).unwrap().tokens.unwrap().used;
                assert_eq!(
                    used,
                    times.len() as u64 * COST,
                    "{} at {second} s",
                    MODELS[m]
                );
            }
            let account = b.stats(&"account").unwrap();
            largest = largest.max(account.memory);
            assert_eq!(account.tokens_per_day.unwrap().used, admitted);
        }
        advance(Duration::from_secs(1)).await;
    }
    // The daily limit stops the three models together, at the same instant, near 90% of the
    // day, having admitted all but less than one request of it.
    let first = stopped[0].expect("the day ran out");
    assert_eq!(stopped, [Some(first); 3]);
    let at = first - start;
    assert!(
        at > Duration::from_secs(21 * 3600) && at < Duration::from_secs(22 * 3600),
        "{at:?}"
    );
    assert!(admitted <= DAY_LIMIT && DAY_LIMIT - admitted < COST);
    // Memory of the account key after 2.8 million admissions: bounded by the day's buckets
    // (1,441 entries of 16 bytes at most), not by the requests.
    let memory = b.stats(&"account").unwrap().memory;
    assert!(
        largest < 64 * 1024 && memory < 64 * 1024,
        "{largest} / {memory} bytes"
    );
}

#[test]
fn a_bucket_coarser_than_its_window_is_refused() {
    use bedrock_throttle::budget::ConfigError;
    let build = |b: bedrock_throttle::budget::BudgetBuilder<u8>| b.tokens(10).build().map(|_| ());
    let window = Duration::from_secs(60);
    assert_eq!(
        build(Budget::builder().window(window).resolution(window * 2)),
        Err(ConfigError::BucketAboveWindow {
            bucket: window * 2,
            window
        })
    );
    assert!(matches!(
        build(
            Budget::builder()
                .day(window)
                .day_bucket(window + Duration::from_nanos(1))
        ),
        Err(ConfigError::BucketAboveWindow { .. })
    ));
    assert_eq!(
        build(Budget::builder().resolution(Duration::ZERO)),
        Err(ConfigError::ZeroBucket)
    );
    assert_eq!(
        build(Budget::builder().day_bucket(Duration::ZERO)),
        Err(ConfigError::ZeroBucket)
    );
    build(
        Budget::builder()
            .resolution(window)
            .day_bucket(Duration::from_secs(3600)),
    )
    .unwrap();
}
