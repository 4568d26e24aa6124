//! The observers' memory after 100,000 distinct model ids (issue 21), measured with a counting
//! global allocator (this test binary holds this one test, so nothing else allocates
//! meanwhile). `cargo test --all-features --test observer_memory -- --nocapture` prints the
//! figures that BENCHMARKS.md quotes.

#![cfg(all(feature = "bedrock", feature = "metrics"))]

use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicIsize, Ordering};
use std::time::Duration;

use bedrock_throttle::admit::{Event, Observe};
use bedrock_throttle::bedrock::BedrockKey;
use bedrock_throttle::classify::Classification;
use bedrock_throttle::metrics::Metrics;
use bedrock_throttle::report::{CapacityRecorder, DEFAULT_MAX_KEYS};

struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);

// SAFETY: every method forwards to `System` with the caller's arguments unchanged, so `System`'s
// guarantees carry over; the counter is a side effect only.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded as is (see the impl).
        let ptr = unsafe { System.alloc(layout) };
        if !ptr.is_null() {
            LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        }
        ptr
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded as is (see the impl).
        unsafe { System.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn live() -> isize {
    LIVE.load(Ordering::Relaxed)
}

const N: usize = 100_000;
const CONFIGURED: &str = "us.anthropic.claude-sonnet-4-20250514-v1:0";

fn key(i: usize) -> BedrockKey {
    BedrockKey::new("us-east-1", format!("acme.model-{i:06}-v1:0"))
}

/// What the one-call setup observes with: the capacity recorder and the metrics, both tracking
/// the configured models only (`all`: every model, up to the cap).
#[derive(Clone)]
struct Observer {
    recorder: CapacityRecorder<BedrockKey>,
    metrics: Metrics<BedrockKey>,
}

fn observer(all: bool, max_keys: usize) -> Observer {
    let configured: Arc<HashSet<String>> = Arc::new([CONFIGURED.to_owned()].into());
    let track = move |k: &BedrockKey| all || configured.contains(k.model());
    Observer {
        recorder: CapacityRecorder::new(Duration::from_secs(60), 60)
            .track(track.clone())
            .max_keys(max_keys),
        metrics: Metrics::bedrock().track(track).max_keys(max_keys),
    }
}

/// One call's events: admitted, completed, settled.
fn call(o: &Observer, key: &BedrockKey) {
    for event in [
        Event::Admitted {
            tokens: 1_000,
            waited: Duration::from_millis(3),
            waited_on: None,
        },
        Event::Completed {
            classification: Classification::success(),
        },
        Event::Settled {
            reserved: 1_000,
            settled: 800,
        },
    ] {
        o.recorder.observe(key, event);
        o.metrics.observe(key, event);
    }
}

/// The heap an observer holds after `calls` calls on the keys `keys` gives.
fn grown(o: &Observer, calls: usize, keys: impl Fn(usize) -> BedrockKey) -> isize {
    let before = live();
    for i in 0..calls {
        call(o, &keys(i));
    }
    live() - before
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn the_observer_holds_at_most_the_caps_worth() {
    // The most one key's entry can hold within a window: enough calls to fill its samples.
    let full = observer(true, DEFAULT_MAX_KEYS);
    let one_full_key = grown(&full, 5_000, |_| key(0));
    // A key's entry after one call (no cap in the way).
    let per_key = grown(&observer(true, usize::MAX), 1_000, key) / 1_000;

    // 100,000 distinct unknown ids, with a configured model (the setup's case).
    let setup = observer(false, DEFAULT_MAX_KEYS);
    call(&setup, &BedrockKey::new("us-east-1", CONFIGURED));
    let unknown = grown(&setup, N, key);
    assert_eq!(setup.recorder.key_count(), 1);
    assert_eq!(setup.metrics.key_count(), 1);

    // 100,000 distinct ids, every one tracked: the cap holds.
    let capped = observer(true, DEFAULT_MAX_KEYS);
    let all_tracked = grown(&capped, N, key);
    assert_eq!(capped.recorder.key_count(), DEFAULT_MAX_KEYS);
    assert_eq!(capped.metrics.key_count(), DEFAULT_MAX_KEYS);

    println!(
        "observer memory: one key after one call {per_key} B; one key after 5,000 calls \
         {one_full_key} B; after {N} distinct unknown ids {unknown} B; after {N} distinct \
         tracked ids (cap {DEFAULT_MAX_KEYS}) {all_tracked} B"
    );
    // Unknown ids share one entry: at most one full key's worth (and its `other` handles).
    assert!(unknown <= 2 * one_full_key, "{unknown} B");
    // Tracked ids: at most the cap's worth, plus `other`.
    let cap_worth = (DEFAULT_MAX_KEYS as isize + 1) * per_key.max(1) + one_full_key;
    assert!(all_tracked <= cap_worth, "{all_tracked} B > {cap_worth} B");
}
