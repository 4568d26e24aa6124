//! The no-wait admission allocates nothing (issue 16 item 6): one key, and a request of
//! several scopes (its key set, lock order, locks and permit are kept inline). Counted with a
//! global allocator that counts the allocations of the thread that asks (this test binary
//! holds this one test).

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::time::Duration;

use bedrock_throttle::budget::{Budget, Quota, Scopes};

struct Counting;

thread_local! {
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

// SAFETY: every method forwards to `System` with the caller's arguments unchanged, so `System`'s
// guarantees carry over; the counter is a side effect only (a const thread-local `Cell`, which
// never allocates).
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let _ = ALLOCATIONS.try_with(|n| n.set(n.get() + 1));
        // SAFETY: forwarded as is (see the impl).
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded as is (see the impl).
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// The allocations of this thread while `f` runs.
fn allocations(f: impl FnOnce()) -> u64 {
    let before = ALLOCATIONS.with(Cell::get);
    f();
    ALLOCATIONS.with(Cell::get) - before
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_no_wait_admission_allocates_nothing() {
    let budget: Budget<u32> = Budget::builder()
        .quota_fn(|k: &u32| match k {
            0 => Some(Quota::unlimited().with_tokens_per_day(u64::MAX / 4)),
            _ => Some(Quota::tokens(u64::MAX / 4).with_requests(u64::MAX / 4)),
        })
        .window(Duration::from_secs(60))
        .build()
        .unwrap();
    // The counter counts.
    assert_eq!(allocations(|| drop(std::hint::black_box(vec![1u8]))), 1);
    // Warm up: the keys' states, their ledgers' first entries.
    for _ in 0..3 {
        budget.try_acquire(1, 10).unwrap().settle(10);
        budget
            .try_acquire_scopes(Scopes::new(1).with(0), 10)
            .unwrap()
            .settle(10);
    }
    let one = allocations(|| {
        for _ in 0..100 {
            budget.try_acquire(1, 10).unwrap().settle(10);
        }
    });
    assert_eq!(one, 0, "one scope");
    let two = allocations(|| {
        for _ in 0..100 {
            budget
                .try_acquire_scopes(Scopes::new(1).with(0), 10)
                .unwrap()
                .settle(10);
        }
    });
    assert_eq!(two, 0, "two scopes");
    // A refund and a drop unsettled: no allocation either.
    let settled = allocations(|| {
        for _ in 0..100 {
            budget
                .try_acquire_scopes(Scopes::new(1).with(0), 10)
                .unwrap()
                .settle(4);
            drop(
                budget
                    .try_acquire_scopes(Scopes::new(1).with(0), 10)
                    .unwrap(),
            );
        }
    });
    assert_eq!(settled, 0, "settled below the reservation, or dropped");
}
