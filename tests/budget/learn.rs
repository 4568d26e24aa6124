//! Learned limits against a model server, under `tokio::time::pause()`: a server with its own
//! quota (sliding or fixed windows) that throttles what does not fit, and a client whose every
//! attempt goes through the budget, feeds a throttle back with its permit and tries again (as
//! the retry layer does). The client is told the quota wrong, or shares it with a consumer it
//! does not see; the learned limit must find what the server allows, and then stay there with
//! few throttles and most of the quota used.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use bedrock_throttle::budget::Learn;

use super::*;

const Q: u64 = 10_000;
const COST: u64 = 100;
const WINDOW: Duration = Duration::from_secs(1);
const WINDOWS: u32 = 60;
/// How long a call lasts on the server.
const CALL: Duration = Duration::from_millis(10);
/// Callers sending back to back: far more demand than the quota (held back by the budget).
const CALLERS: usize = 8;

fn learned(limit: u64) -> Budget<&'static str> {
    Budget::builder()
        .tokens(limit)
        .window(W)
        .aimd(Aimd::learned())
        .build()
        .unwrap()
}

#[derive(Debug, Clone, Copy)]
enum Window {
    Sliding,
    Fixed,
}

/// The server: a quota of `Q` tokens per `WINDOW`, and an unseen consumer taking `other` per
/// window in small pieces.
struct Server {
    window: Window,
    start: Instant,
    booked: VecDeque<(Instant, u64)>,
    other: u64,
    other_booked_until: Instant,
    /// Per window index: tokens of our calls the server admitted.
    ours: Vec<u64>,
    attempts: u64,
    throttled: u64,
}

impl Server {
    fn new(window: Window, other: u64) -> Self {
        let start = Instant::now();
        Server {
            window,
            start,
            booked: VecDeque::new(),
            other,
            other_booked_until: start,
            ours: vec![0; WINDOWS as usize + 1],
            attempts: 0,
            throttled: 0,
        }
    }

    fn used(&mut self, now: Instant) -> u64 {
        let from = match self.window {
            Window::Sliding => now.checked_sub(WINDOW).unwrap_or(self.start),
            Window::Fixed => {
                let n = (now - self.start).as_nanos() / WINDOW.as_nanos();
                self.start + WINDOW * n as u32
            }
        };
        self.booked.retain(|&(at, _)| at + WINDOW * 2 > now);
        self.booked
            .iter()
            .filter(|&&(at, _)| match self.window {
                Window::Sliding => at > from,
                Window::Fixed => at >= from,
            })
            .map(|&(_, c)| c)
            .sum()
    }

    /// The other consumer books its share in pieces of one hundredth of a window, whatever
    /// the window holds (its calls are in flight already): what it takes is gone for us.
    fn other_consumer(&mut self, now: Instant) {
        if self.other == 0 {
            return;
        }
        let step = WINDOW / 100;
        while self.other_booked_until + step <= now {
            self.other_booked_until += step;
            self.booked
                .push_back((self.other_booked_until, self.other / 100));
        }
    }

    fn call(&mut self, now: Instant, cost: u64) -> bool {
        self.other_consumer(now);
        self.attempts += 1;
        if self.used(now) + cost > Q {
            self.throttled += 1;
            return false;
        }
        self.booked.push_back((now, cost));
        let w = ((now - self.start).as_nanos() / WINDOW.as_nanos()) as usize;
        if let Some(ours) = self.ours.get_mut(w) {
            *ours += cost;
        }
        true
    }
}

#[derive(Debug)]
struct Outcome {
    /// Our share of the quota used per window, after the first `settle` windows.
    utilisation: f64,
    throttled_pct: f64,
    throttled: u64,
    attempts: u64,
    effective: u64,
}

async fn run(told: u64, window: Window, other: u64, settle: usize) -> Outcome {
    run_with(Aimd::learned(), told, window, other, settle).await
}

async fn run_with(aimd: Aimd, told: u64, window: Window, other: u64, settle: usize) -> Outcome {
    let budget: Budget<&str> = Budget::builder()
        .tokens(told)
        .window(WINDOW)
        .aimd(aimd)
        .build()
        .unwrap();
    let server = Arc::new(Mutex::new(Server::new(window, other)));
    let end = Instant::now() + WINDOW * WINDOWS;
    let mut callers = Vec::new();
    for _ in 0..CALLERS {
        let (budget, server) = (budget.clone(), Arc::clone(&server));
        callers.push(tokio::spawn(async move {
            while Instant::now() < end {
                let permit = budget.acquire("k", COST).await.unwrap();
                let admitted = server.lock().unwrap().call(Instant::now(), COST);
                if admitted {
                    sleep(CALL).await;
                    permit.settle(COST);
                } else {
                    permit.throttled(ThrottleCause::Tokens);
                    permit.settle(0);
                }
            }
        }));
    }
    for c in callers {
        c.await.unwrap();
    }
    let s = server.lock().unwrap();
    let room = (Q - other) as f64;
    let counted = &s.ours[settle..WINDOWS as usize];
    let utilisation = counted.iter().sum::<u64>() as f64 / (room * counted.len() as f64);
    Outcome {
        utilisation,
        throttled_pct: 100.0 * s.throttled as f64 / s.attempts as f64,
        throttled: s.throttled,
        attempts: s.attempts,
        effective: budget.stats(&"k").unwrap().tokens.unwrap().effective_limit,
    }
}

#[tokio::test(start_paused = true)]
async fn told_the_right_quota_nothing_is_throttled() {
    for window in [Window::Sliding, Window::Fixed] {
        let o = run(Q, window, 0, 1).await;
        println!("{window:?} told right: {o:?}");
        // On a fixed window too: it admits up to twice its quota across a boundary, and the
        // client's sliding ledger never sends that much, so it is never refused.
        assert_eq!(o.throttled, 0, "{o:?}");
        assert!(o.utilisation >= 0.97, "{o:?}");
        // 100 calls of 100 tokens fit a window: about 6,000 in 60 windows, none refused.
        assert!(o.attempts >= 5_900, "{o:?}");
    }
}

#[tokio::test(start_paused = true)]
async fn told_too_much_it_finds_the_quota_and_stays_near_it() {
    for told in [Q * 12 / 10, Q * 15 / 10] {
        for window in [Window::Sliding, Window::Fixed] {
            let learned = run(told, window, 0, 10).await;
            println!("{window:?} told {told}: {learned:?}");
            assert!(learned.throttled_pct <= 0.5, "{learned:?}");
            assert!(learned.utilisation >= 0.95, "{learned:?}");
            // Where it ended: at the quota, give or take a probe.
            assert!(learned.effective <= Q * 105 / 100, "{learned:?}");
        }
    }
}

#[tokio::test(start_paused = true)]
async fn an_unseen_consumer_of_30_percent_is_left_its_share() {
    for window in [Window::Sliding, Window::Fixed] {
        let o = run(Q, window, Q * 3 / 10, 10).await;
        println!("{window:?} with another consumer: {o:?}");
        assert!(o.throttled_pct <= 0.5, "{o:?}");
        assert!(o.utilisation >= 0.93, "{o:?}");
    }
}

#[tokio::test(start_paused = true)]
async fn told_too_much_plain_aimd_throttles_more_and_uses_less() {
    // The policy of before, on the same server, told 20% too much: it climbs back into the
    // same wall every few windows, and sits below it in between.
    let learned = run(Q * 12 / 10, Window::Sliding, 0, 10).await;
    let plain = run_with(Aimd::plain(), Q * 12 / 10, Window::Sliding, 0, 10).await;
    println!("learned: {learned:?}\nplain AIMD: {plain:?}");
    assert!(
        learned.throttled * 3 < plain.throttled,
        "{learned:?} {plain:?}"
    );
    assert!(
        learned.utilisation > plain.utilisation,
        "{learned:?} {plain:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_throttle_on_an_empty_ledger_lowers_by_one_step_at_most() {
    // Nothing charged: the server refused for a reason the ledger cannot see. The limit goes
    // down by `decrease` (0.7), not to what the ledger held (0).
    let b = learned(10_000);
    b.throttled(&"k", ThrottleCause::Tokens);
    assert_eq!(
        b.stats(&"k").unwrap().tokens.unwrap().effective_limit,
        7_000
    );
}

#[tokio::test(start_paused = true)]
async fn a_throttle_goes_to_what_the_ledger_held_less_the_margin() {
    let b = learned(10_000);
    b.try_acquire("k", 8_000).unwrap().settle(8_000);
    let refused = b.try_acquire("k", 1_000).unwrap();
    refused.throttled(ThrottleCause::Tokens);
    // The server held 8,000 when it refused 1,000 more: 8,000 less 2%.
    assert_eq!(
        b.stats(&"k").unwrap().tokens.unwrap().effective_limit,
        7_840
    );
    // Requests in flight with it are throttled with it: one step, not one each.
    let stats = b.stats(&"k").unwrap();
    drop(refused);
    assert_eq!(stats.tokens.unwrap().effective_limit, 7_840);
}

#[tokio::test(start_paused = true)]
async fn a_daily_throttle_leaves_the_per_window_limit_alone() {
    let b: Budget<&str> = Budget::builder()
        .quota(Quota::tokens(10_000).with_tokens_per_day(100_000))
        .window(W)
        .aimd(Aimd::learned())
        .build()
        .unwrap();
    b.try_acquire("k", 5_000).unwrap().settle(5_000);
    b.throttled(&"k", ThrottleCause::TokensPerDay);
    let s = b.stats(&"k").unwrap();
    assert_eq!(s.tokens.unwrap().effective_limit, 10_000);
    assert!(s.tokens_per_day.unwrap().effective_limit < 100_000);
}

#[test]
fn learning_settings_out_of_range_are_refused() {
    for learn in [
        Learn {
            margin: 0.6,
            ..Learn::default()
        },
        Learn {
            margin: f64::NAN,
            ..Learn::default()
        },
        Learn {
            probe_per_window: 0.0,
            ..Learn::default()
        },
        Learn {
            probe_per_window: f64::INFINITY,
            ..Learn::default()
        },
        Learn {
            max: 0.9,
            ..Learn::default()
        },
        Learn {
            max: f64::NAN,
            ..Learn::default()
        },
    ] {
        let built = Budget::<&str>::builder()
            .tokens(1_000)
            .aimd(Aimd {
                learn: Some(learn),
                ..Aimd::default()
            })
            .build();
        assert!(
            matches!(built, Err(ConfigError::InvalidFactor { .. })),
            "{learn:?}: {built:?}"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn told_too_little_with_room_to_learn_it_finds_the_quota() {
    for (told, max) in [(Q * 8 / 10, 1.5), (Q / 2, 2.5)] {
        for window in [Window::Sliding, Window::Fixed] {
            let aimd = Aimd {
                learn: Some(Learn {
                    max,
                    ..Learn::default()
                }),
                ..Aimd::learned()
            };
            let o = run_with(aimd, told, window, 0, 10).await;
            println!("{window:?} told {told}, max {max}: {o:?}");
            assert!(o.throttled_pct <= 0.5, "{o:?}");
            assert!(o.utilisation >= 0.95, "{o:?}");
            assert!(o.effective <= Q * 105 / 100, "{o:?}");
        }
    }
    // Without room above the configured limit (the default `max`), it stays there.
    let o = run(Q * 8 / 10, Window::Sliding, 0, 10).await;
    assert!((0.79..=0.81).contains(&o.utilisation), "{o:?}");
    assert_eq!((o.throttled, o.effective), (0, Q * 8 / 10), "{o:?}");
}
