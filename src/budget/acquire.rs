//! The future of [`Budget::acquire`].

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::time::{Instant, Sleep};

use super::Budget;
use super::engine::Started;
use super::error::AdmissionError;
use super::fair::Class;
use super::key::{KeyShared, WaiterPoll};
use super::permit::Permit;
use super::queue::{Ticket, Verdict};
use super::quota::Dimension;
use super::scoped::{ScopedPoll, ScopedWait, Scopes};

/// The future returned by [`Budget::acquire`]: resolves to a [`Permit`] once the cost fits in
/// the key's window on every dimension, in arrival order, or to an [`AdmissionError`].
///
/// Dropping it before it resolves leaves no trace: it leaves the queue, and the next request in
/// line moves up.
#[must_use = "futures do nothing unless polled"]
pub struct Acquire<K> {
    budget: Budget<K>,
    cost: u64,
    state: State<K>,
    /// Allocated only if the request has to wait, then reset in place.
    sleep: Option<Pin<Box<Sleep>>>,
}

enum State<K> {
    /// The key and the class (the class is empty for [`Budget::acquire`]): moved into the
    /// queue on the first poll, so the class costs the future no room once it waits.
    Start(Target<K>, Class),
    Queued(Queued),
    /// A request of several scopes, waiting (boxed: a request of one scope does not pay for
    /// its room).
    Scoped(Box<ScopedQueued>),
    Done,
}

/// What an admission is for: one key, or several scopes.
pub(super) enum Target<K> {
    One(K),
    Many(Box<Scopes<K>>),
}

struct ScopedQueued {
    wait: ScopedWait,
    arrived: Instant,
    deadline: Option<Instant>,
}

struct Queued {
    shared: Arc<KeyShared>,
    ticket: u64,
    /// With fairness, the waiter's flow (see `Ticket`); it fits in what was padding.
    flow: u32,
    /// The arrival, as an offset on the key's clock (8 bytes, not an `Instant`'s 16: it keeps
    /// the future at 72 bytes).
    arrived: u64,
    deadline: Option<Instant>,
    /// The dimension that made it wait.
    blocked: Option<Dimension>,
}

// The key is never pinned: it is moved out on the first poll.
impl<K> Unpin for Acquire<K> {}

impl<K> Acquire<K> {
    pub(super) fn new(budget: Budget<K>, target: Target<K>, cost: u64, class: Class) -> Self {
        Acquire {
            budget,
            cost,
            state: State::Start(target, class),
            sleep: None,
        }
    }
}

fn finish(q: Queued, outcome: Verdict, cost: u64) -> Result<Permit, AdmissionError> {
    match outcome {
        Verdict::Granted { at, account } => {
            let permit = Permit::charged(q.shared, cost, at).with_waited_on(q.blocked);
            Ok(match account {
                Some(account) => permit.with_account(account),
                None => permit,
            })
        }
        Verdict::Failed(error) => Err(error),
    }
}

/// Sleeps until `at`, reusing the one allocated timer. Ready if `at` has passed.
fn sleep_until(sleep: &mut Option<Pin<Box<Sleep>>>, at: Instant, cx: &mut Context<'_>) -> bool {
    match sleep {
        Some(s) if s.deadline() == at => {}
        Some(s) => s.as_mut().reset(at),
        None => *sleep = Some(Box::pin(tokio::time::sleep_until(at))),
    }
    sleep
        .as_mut()
        .is_some_and(|s| s.as_mut().poll(cx).is_ready())
}

impl<K> Future for Acquire<K>
where
    K: Clone + Eq + std::hash::Hash + Send + Sync + 'static,
{
    type Output = Result<Permit, AdmissionError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        let cost = this.cost;
        loop {
            let queued = match &mut this.state {
                State::Done => panic!("`Acquire` polled after completion"),
                State::Start(..) => {
                    let State::Start(target, class) =
                        std::mem::replace(&mut this.state, State::Done)
                    else {
                        unreachable!()
                    };
                    let started = match target {
                        Target::One(key) => {
                            this.budget.start(key, cost, Some(cx.waker()), Some(&class))
                        }
                        Target::Many(scopes) => {
                            this.budget
                                .start_scoped(&scopes, cost, Some(cx.waker()), &class)
                        }
                    };
                    match started {
                        Started::Ready(result) => return Poll::Ready(result),
                        Started::Scoped(wait) => {
                            let arrived = Instant::now();
                            let deadline = this
                                .budget
                                .inner
                                .config
                                .max_wait
                                .and_then(|max| arrived.checked_add(max));
                            this.state = State::Scoped(Box::new(ScopedQueued {
                                wait: *wait,
                                arrived,
                                deadline,
                            }));
                        }
                        Started::Queued {
                            shared,
                            ticket,
                            at,
                            blocked,
                        } => {
                            let deadline = this
                                .budget
                                .inner
                                .config
                                .max_wait
                                .and_then(|max| at.checked_add(max));
                            let arrived = shared.config().offset(at);
                            this.state = State::Queued(Queued {
                                shared,
                                ticket: ticket.seq,
                                flow: ticket.flow,
                                arrived,
                                deadline,
                                blocked,
                            });
                        }
                    }
                    continue;
                }
                State::Queued(queued) => queued,
                State::Scoped(scoped) => {
                    let now = Instant::now();
                    let wake_at = match scoped.wait.poll(cost, now, cx.waker()) {
                        ScopedPoll::Admitted(permit) => {
                            this.state = State::Done;
                            return Poll::Ready(Ok(permit));
                        }
                        ScopedPoll::Failed(error) => {
                            this.state = State::Done;
                            return Poll::Ready(Err(error));
                        }
                        ScopedPoll::Head(at) => {
                            if scoped.deadline.is_some_and(|deadline| at > deadline) {
                                return Poll::Ready(this.give_up_scoped(now));
                            }
                            at.max(now + Duration::from_millis(1))
                        }
                        ScopedPoll::Behind | ScopedPoll::Queued(_) => match scoped.deadline {
                            Some(deadline) => {
                                if deadline <= now {
                                    return Poll::Ready(this.give_up_scoped(now));
                                }
                                deadline
                            }
                            None => return Poll::Pending,
                        },
                    };
                    if !sleep_until(&mut this.sleep, wake_at, cx) {
                        return Poll::Pending;
                    }
                    continue;
                }
            };
            let now = Instant::now();
            let ticket = Ticket {
                seq: queued.ticket,
                flow: queued.flow,
            };
            let wake_at = match queued.shared.poll_waiter(ticket, now, cx.waker()) {
                WaiterPoll::Done(outcome) => {
                    let State::Queued(q) = std::mem::replace(&mut this.state, State::Done) else {
                        unreachable!()
                    };
                    return Poll::Ready(finish(q, outcome, cost));
                }
                WaiterPoll::Head(at) => {
                    if queued.deadline.is_some_and(|deadline| at > deadline) {
                        return Poll::Ready(this.give_up(now));
                    }
                    tracing::debug!(cost, wait = ?at.saturating_duration_since(now), "head of queue sleeps until capacity frees");
                    // Defensive: never spin if the computed instant is not in the future.
                    at.max(now + Duration::from_millis(1))
                }
                WaiterPoll::Behind => match queued.deadline {
                    Some(deadline) => {
                        if deadline <= now {
                            return Poll::Ready(this.give_up(now));
                        }
                        deadline
                    }
                    None => return Poll::Pending,
                },
            };
            if !sleep_until(&mut this.sleep, wake_at, cx) {
                return Poll::Pending;
            }
        }
    }
}

impl<K> Acquire<K> {
    /// [`give_up`](Self::give_up) for a request of several scopes.
    fn give_up_scoped(&mut self, now: Instant) -> Result<Permit, AdmissionError> {
        let State::Scoped(mut q) = std::mem::replace(&mut self.state, State::Done) else {
            unreachable!("give_up_scoped is only called while a scoped request waits")
        };
        let max_wait = self.budget.inner.config.max_wait.unwrap_or(Duration::ZERO);
        let at = q.wait.give_up(self.cost, now);
        let would_wait = at.map_or(Duration::MAX, |at| at.saturating_duration_since(q.arrived));
        Err(AdmissionError::WaitTooLong {
            would_wait,
            max_wait,
        })
    }

    /// The deadline passed (or will pass before admission): leave the queue with the wait.
    fn give_up(&mut self, now: Instant) -> Result<Permit, AdmissionError> {
        let State::Queued(q) = std::mem::replace(&mut self.state, State::Done) else {
            unreachable!("give_up is only called while queued")
        };
        let max_wait = self.budget.inner.config.max_wait.unwrap_or(Duration::ZERO);
        let ticket = Ticket {
            seq: q.ticket,
            flow: q.flow,
        };
        match q.shared.give_up(ticket, now) {
            Ok(outcome) => finish(q, outcome, self.cost),
            Err(at) => {
                let would_wait = at.map_or(Duration::MAX, |at| {
                    at.saturating_duration_since(q.shared.config().instant(q.arrived))
                });
                tracing::debug!(cost = self.cost, ?would_wait, ?max_wait, "waiter gives up");
                Err(AdmissionError::WaitTooLong {
                    would_wait,
                    max_wait,
                })
            }
        }
    }
}

impl<K> Drop for Acquire<K> {
    fn drop(&mut self) {
        if let State::Scoped(q) = &mut self.state {
            q.wait.cancel();
        }
        if let State::Queued(q) = &self.state {
            let ticket = Ticket {
                seq: q.ticket,
                flow: q.flow,
            };
            q.shared.cancel(ticket, self.cost);
        }
    }
}

impl<K> fmt::Debug for Acquire<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match &self.state {
            State::Start(..) => "start",
            State::Queued(_) | State::Scoped(_) => "queued",
            State::Done => "done",
        };
        f.debug_struct("Acquire")
            .field("cost", &self.cost)
            .field("state", &state)
            .finish()
    }
}

#[cfg(all(test, target_pointer_width = "64"))]
mod size {
    /// A waiter's future stays small: the memory per waiting request is this plus a queue slot.
    #[test]
    fn acquire_is_72_bytes_for_small_keys() {
        assert_eq!(std::mem::size_of::<super::Acquire<u32>>(), 72);
    }
}
