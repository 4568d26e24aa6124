//! Memory per waiting request and per idle key, measured with a counting global allocator.
//!
//! - **Waiting request**: 100,000 [`Acquire`] futures on one full key, each polled once so it is
//!   queued. A waiter costs its future (`size_of::<Acquire<K>>()`, wherever the caller keeps it)
//!   plus the heap the engine allocates for it (its queue slot). A second measurement spawns the
//!   waiters as tokio tasks, to show what a waiting request costs an application in all (the
//!   task's own allocation included), and a third spawns tasks that wait on nothing, for tokio's
//!   own share.
//! - **Idle key**: 100,000 keys each admitted once and settled, still in their window (so not yet
//!   evictable): the key map, the key's state and its one ledger entry. Then the window passes
//!   and the idle keys are evicted, to show the memory comes back.
//! - **Tenant** (fair shares): 100,000 waiters on one full key of a budget with
//!   [`Fairness`], each of a tenant of its own, so the key tracks 100,000 tenants: the heap per
//!   tenant beyond the caller's own class, then what is left once they are dropped.
//!
//! Run with `cargo bench --bench memory`; the results are in `BENCHMARKS.md`.

use std::alloc::{GlobalAlloc, Layout, System};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicIsize, Ordering};
use std::task::{Context, Waker};
use std::time::Duration;

use bedrock_throttle::budget::{Acquire, Budget, Class, Fairness, Permit};

/// Counts the bytes currently allocated, on top of the system allocator.
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

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded as is (see the impl).
        let ptr = unsafe { System.alloc_zeroed(layout) };
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

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: forwarded as is (see the impl).
        let new = unsafe { System.realloc(ptr, layout, new_size) };
        if !new.is_null() {
            LIVE.fetch_add(
                new_size as isize - layout.size() as isize,
                Ordering::Relaxed,
            );
        }
        new
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn live() -> isize {
    LIVE.load(Ordering::Relaxed)
}

const N: usize = 100_000;
const WINDOW: Duration = Duration::from_secs(60);

/// A Bedrock-like quota key: a region and a model id.
fn model_key(i: usize) -> String {
    format!("us-east-1/anthropic.claude-sonnet-4-{i:06}-v1:0")
}

fn budget<K: Clone + Eq + std::hash::Hash + Send + Sync + 'static>(limit: u64) -> Budget<K> {
    Budget::builder()
        .tokens(limit)
        .window(WINDOW)
        .build()
        .unwrap()
}

struct Row {
    what: String,
    per_item: f64,
    note: String,
}

/// Queues `N` waiters on one full key, polled once each with a no-op waker, and returns the heap
/// bytes per waiter (beyond the future itself), and the bytes left once they are dropped.
fn waiters<K: Clone + Eq + std::hash::Hash + Send + Sync + 'static>(key: K) -> (f64, isize) {
    let budget: Budget<K> = budget(1);
    let full: Permit = budget.try_acquire(key.clone(), 1).unwrap();
    // The futures live inline in this vector: their size is counted apart, as size_of.
    let mut futures: Vec<Acquire<K>> = Vec::with_capacity(N);
    let mut cx = Context::from_waker(Waker::noop());
    let before = live();
    for _ in 0..N {
        // A key of its own for each request, as a caller would build it.
        futures.push(budget.acquire(key.clone(), 1));
    }
    for f in &mut futures {
        assert!(Pin::new(f).poll(&mut cx).is_pending());
    }
    let after = live();
    assert_eq!(budget.stats(&key).unwrap().waiters, N);
    futures.clear();
    let left = live() - before;
    drop(full);
    ((after - before) as f64 / N as f64, left)
}

/// Queues `N` waiters on one full key of a fair budget, each of tenant `tenant(i)`, and returns
/// the heap bytes per waiter (the classes are the caller's, built before), the tenants tracked,
/// and the bytes left once they are dropped.
fn fair_waiters(tenant: impl Fn(usize) -> String) -> (f64, usize, isize) {
    let budget: Budget<u32> = Budget::builder()
        .tokens(1)
        .window(WINDOW)
        .fairness(Fairness::new().max_tenants(N))
        .build()
        .unwrap();
    let full: Permit = budget.try_acquire(7, 1).unwrap();
    let classes: Vec<Class> = (0..N).map(|i| Class::tenant(tenant(i))).collect();
    let mut futures: Vec<Acquire<u32>> = Vec::with_capacity(N);
    let mut cx = Context::from_waker(Waker::noop());
    let before = live();
    for class in &classes {
        futures.push(budget.acquire_as(7, 1, class.clone()));
    }
    for f in &mut futures {
        assert!(Pin::new(f).poll(&mut cx).is_pending());
    }
    let after = live();
    let stats = budget.stats(&7).unwrap();
    assert_eq!(stats.waiters, N);
    futures.clear();
    let left = live() - before;
    assert_eq!(budget.stats(&7).unwrap().tenants, 0);
    drop(full);
    ((after - before) as f64 / N as f64, stats.tenants, left)
}

/// Spawns `N` tasks that each wait on one full key, and returns the bytes per waiting task.
fn waiting_tasks(rt: &tokio::runtime::Runtime) -> f64 {
    rt.block_on(async {
        let budget: Budget<u32> = budget(1);
        let _full = budget.try_acquire(7, 1).unwrap();
        let before = live();
        let mut handles = Vec::with_capacity(N);
        for _ in 0..N {
            let budget = budget.clone();
            handles.push(tokio::spawn(async move {
                drop(budget.acquire(7, 1).await);
            }));
        }
        // Let every task reach its first poll and queue.
        while budget.stats(&7).unwrap().waiters < N {
            tokio::task::yield_now().await;
        }
        bytes_per_task(before, handles).await
    })
}

/// The heap grown since `before` per task in `handles`, measured now (the handles' own vector
/// left out: it is the application's, not part of a request); then the tasks are ended.
async fn bytes_per_task(before: isize, handles: Vec<tokio::task::JoinHandle<()>>) -> f64 {
    let after = live();
    let vec = (handles.capacity() * std::mem::size_of_val(&handles[0])) as isize;
    for h in &handles {
        h.abort();
    }
    for h in handles {
        let _ = h.await;
    }
    (after - before - vec) as f64 / N as f64
}

/// Spawns `N` tasks that wait forever on nothing: tokio's own cost per waiting task, for
/// comparison with [`waiting_tasks`].
fn idle_tasks(rt: &tokio::runtime::Runtime) -> f64 {
    rt.block_on(async {
        let before = live();
        let mut handles = Vec::with_capacity(N);
        for _ in 0..N {
            handles.push(tokio::spawn(std::future::pending::<()>()));
        }
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        bytes_per_task(before, handles).await
    })
}

/// Admits and settles once on `N` keys, and returns the bytes per idle key, then the bytes left
/// per key after the window passes and the keys are evicted.
fn idle_keys<K: Clone + Eq + std::hash::Hash + Send + Sync + 'static>(
    rt: &tokio::runtime::Runtime,
    key: impl Fn(usize) -> K,
) -> (f64, f64, usize) {
    let keys: Vec<K> = (0..N).map(&key).collect();
    rt.block_on(async {
        let budget: Budget<K> = budget(10);
        let before = live();
        for k in &keys {
            budget.try_acquire(k.clone(), 1).unwrap().settle(1);
        }
        let count = budget.key_count();
        let after = live();
        tokio::time::advance(WINDOW).await;
        budget.evict_idle();
        // Let deferred reclamation of the map's removed entries run.
        for _ in 0..N {
            let _ = budget.stats(&keys[0]);
        }
        let evicted = live();
        (
            (after - before) as f64 / count as f64,
            (evicted - before) as f64 / N as f64,
            count,
        )
    })
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` does not: run only when benchmarking.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap();
    let _guard = rt.enter();
    let mut rows = Vec::new();

    let (heap, left) = waiters(7u32);
    let size = std::mem::size_of::<Acquire<u32>>();
    rows.push(Row {
        what: "waiting request, u32 key".into(),
        per_item: size as f64 + heap,
        note: format!(
            "future {size} B + heap {heap:.1} B (queue slot); {left} B in all left once they are dropped (the key's waiting state, freed with the key)"
        ),
    });
    let (heap, left) = waiters(model_key(0));
    let size = std::mem::size_of::<Acquire<String>>();
    rows.push(Row {
        what: format!("waiting request, String key ({} bytes)", model_key(0).len()),
        per_item: size as f64 + heap,
        note: format!(
            "future {size} B + heap {heap:.1} B (queue slot; the key's copy is freed at the first poll); {left} B in all left once they are dropped (the key's waiting state, freed with the key)"
        ),
    });
    let (heap, tenants, left) = fair_waiters(|i| format!("tenant-{i:06}"));
    let size = std::mem::size_of::<Acquire<u32>>();
    rows.push(Row {
        what: format!("fair: waiting request of its own tenant ({tenants} tenants on one key)"),
        per_item: size as f64 + heap,
        note: format!(
            "future {size} B + heap {heap:.1} B per tenant (its flow, index entry, place in its lane's order, queue slot; the class is the caller's); {left} B in all left once they are dropped"
        ),
    });
    let (heap, tenants, left) = fair_waiters(|_| "one".into());
    rows.push(Row {
        what: format!("fair: waiting request, all of one tenant ({tenants} tenant)"),
        per_item: size as f64 + heap,
        note: format!(
            "future {size} B + heap {heap:.1} B (queue slot in the tenant's queue); {left} B in all left once they are dropped"
        ),
    });
    let per_task = waiting_tasks(&rt);
    rows.push(Row {
        what: "waiting request as a spawned tokio task, u32 key".into(),
        per_item: per_task,
        note: "everything: tokio's task allocation (with the future inside) + queue slot".into(),
    });
    let per_idle_task = idle_tasks(&rt);
    rows.push(Row {
        what: "for comparison: a spawned tokio task waiting on nothing".into(),
        per_item: per_idle_task,
        note: "tokio's own cost per waiting task, without the budget".into(),
    });

    let (idle, after, count) = idle_keys(&rt, |i| i as u32);
    rows.push(Row {
        what: "idle key, u32".into(),
        per_item: idle,
        note: format!(
            "{count} keys: map entry + key state + one ledger entry; {after:.1} B per key left after eviction"
        ),
    });
    let (idle, after, count) = idle_keys(&rt, model_key);
    rows.push(Row {
        what: format!("idle key, String ({} bytes)", model_key(0).len()),
        per_item: idle,
        note: format!(
            "{count} keys: as above + the key's own heap copy in the map; {after:.1} B per key left after eviction"
        ),
    });

    println!(
        "memory, {N} items each (size_of: Permit {} B, Acquire<u32> {} B, Acquire<String> {} B)",
        std::mem::size_of::<Permit>(),
        std::mem::size_of::<Acquire<u32>>(),
        std::mem::size_of::<Acquire<String>>()
    );
    println!("| what | bytes per item | breakdown |");
    println!("|---|---:|---|");
    for row in &rows {
        println!("| {} | {:.1} | {} |", row.what, row.per_item, row.note);
    }
}
