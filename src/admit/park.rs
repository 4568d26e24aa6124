//! Places in the queue kept for attempts that had to leave before admission.
//!
//! A signed request cannot wait longer than its signature is valid, but the queue in front of
//! it may be longer than that. Cancelling its waiter would send it to the back of the queue at
//! every re-sign, so a long backlog would starve it. Instead, the waiter keeps waiting in a
//! task of its own, under the request's [`ArrivalId`]; the re-sent attempt takes it back,
//! admitted or still in line, and from then on the place lasts as long as that attempt waits
//! (however many times it leaves and comes back). A place nobody comes back for within
//! [`KEEP_FOR`] is given up: the waiter is dropped (no trace), or the admission it got is
//! refunded (the request was never sent). A re-sent attempt that finds its place given up
//! fails with [`LostPlace`](super::LostPlace).

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::Duration;

use tokio::sync::oneshot;
use tokio::time::Instant;

use super::plan::ArrivalId;
use crate::budget::{AdmissionError, Permit};

/// How long a place is kept for the re-sent attempt to come back: the SDK re-signs at once (the
/// setup gives its retry of [`LeftQueue`](super::LeftQueue) no backoff to speak of), so this
/// is generous.
pub(crate) const KEEP_FOR: Duration = Duration::from_secs(15);

/// What a kept place hands to the attempt that takes it back.
pub(crate) type Admission = Result<Permit, NotAdmitted>;

/// Why a waiter ended without a permit.
#[derive(Debug)]
pub(crate) enum NotAdmitted {
    /// The store refused it.
    Refused(AdmissionError),
    /// The place kept for it was given up before it came back.
    LostPlace,
}

/// A kept place: the receiving end of its waiter's result.
struct Kept {
    /// Tells a place from a later one under the same arrival.
    generation: u64,
    result: oneshot::Receiver<Admission>,
}

/// The places kept by one admission layer (shared by its clones).
#[derive(Default)]
pub(crate) struct ParkingLot {
    places: Mutex<Places>,
}

#[derive(Default)]
struct Places {
    kept: HashMap<ArrivalId, Kept>,
    generation: u64,
}

impl fmt::Debug for ParkingLot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kept = self.lock().kept.len();
        f.debug_struct("ParkingLot").field("kept", &kept).finish()
    }
}

impl ParkingLot {
    fn lock(&self) -> std::sync::MutexGuard<'_, Places> {
        self.places.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Takes back the place kept for `arrival`, if any.
    pub(crate) fn take(&self, arrival: &ArrivalId) -> Option<oneshot::Receiver<Admission>> {
        self.lock().kept.remove(arrival).map(|kept| kept.result)
    }

    /// Keeps `waiter`'s place for `arrival`: it goes on waiting in a task of its own.
    pub(crate) fn keep<F>(self: &Arc<Self>, arrival: ArrivalId, waiter: F)
    where
        F: Future<Output = Admission> + Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        let generation = {
            let mut places = self.lock();
            places.generation += 1;
            let generation = places.generation;
            let previous = places.kept.insert(
                arrival.clone(),
                Kept {
                    generation,
                    result: rx,
                },
            );
            drop(places);
            release(previous.map(|kept| kept.result));
            generation
        };
        let lot = Arc::downgrade(self);
        let give_up_at = Instant::now() + KEEP_FOR;
        tokio::spawn(async move {
            let mut tx = tx;
            let mut waiter = std::pin::pin!(waiter);
            let mut give_up = std::pin::pin!(tokio::time::sleep_until(give_up_at));
            // Until `give_up_at`, the place waits for its re-sent attempt; once taken, it
            // waits as long as the attempt that took it does.
            let mut unclaimed = true;
            let result = loop {
                tokio::select! {
                    result = &mut waiter => break result,
                    // The attempt that took the place went away (or the place was replaced):
                    // dropping the waiter leaves no trace.
                    () = tx.closed() => return,
                    () = &mut give_up, if unclaimed => {
                        unclaimed = false;
                        if give_up_unclaimed(&lot, &arrival, generation) {
                            return;
                        }
                    }
                }
            };
            if let Err(Ok(permit)) = tx.send(result) {
                // Taken back and dropped before the admission: refund it.
                permit.settle(0);
            }
            if unclaimed {
                // Admitted before anyone came back: the admission waits in the channel until
                // `give_up_at`, then is refunded if still unclaimed.
                tokio::time::sleep_until(give_up_at).await;
                give_up_unclaimed(&lot, &arrival, generation);
            }
        });
    }
}

/// Gives up the place kept for `arrival` if nobody has taken it back (it is still in the lot
/// under `generation`); `true` if it was given up or the lot is gone.
fn give_up_unclaimed(lot: &Weak<ParkingLot>, arrival: &ArrivalId, generation: u64) -> bool {
    let Some(lot) = lot.upgrade() else {
        return true;
    };
    let mut places = lot.lock();
    if places
        .kept
        .get(arrival)
        .is_some_and(|kept| kept.generation == generation)
    {
        let kept = places.kept.remove(arrival);
        drop(places);
        release(kept.map(|kept| kept.result));
        true
    } else {
        false
    }
}

/// Gives up a kept place: refunds an admission it got (the request was never sent).
fn release(result: Option<oneshot::Receiver<Admission>>) {
    if let Some(mut rx) = result
        && let Ok(Ok(permit)) = rx.try_recv()
    {
        permit.settle(0);
    }
}
