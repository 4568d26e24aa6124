//! The permit an admission returns.

use std::fmt;
use std::sync::Arc;

use tokio::time::Instant;

use super::state::KeyShared;

/// Capacity reserved on one key, returned by an admission.
///
/// The reservation is charged when the permit is granted. [`settle`](Permit::settle) it with the
/// amount really used: a smaller amount is refunded at once, a larger one is booked as debt at the
/// settle instant. Dropping a permit without settling keeps the whole reservation charged, which
/// is the safe choice when the usage is unknown.
///
/// A permit is not generic over the key type: it holds the key's state, so it can travel with a
/// response (or a streamed body) anywhere. It is `Send + Sync + 'static`.
pub struct Permit {
    /// `None` for a free permit (cost 0, or a key without limit). Dropping the permit unsettled
    /// drops this reference and nothing else: the reservation stands. The key counts its
    /// outstanding permits by these references (see `KeyShared`).
    shared: Option<Arc<KeyShared>>,
    seq: u64,
    reserved: u64,
    admitted_at: Instant,
}

impl Permit {
    pub(crate) fn charged(shared: Arc<KeyShared>, seq: u64, reserved: u64, at: Instant) -> Self {
        Permit {
            shared: Some(shared),
            seq,
            reserved,
            admitted_at: at,
        }
    }

    /// A permit that charges nothing: cost 0, or a key without limit.
    pub(crate) fn free(reserved: u64, at: Instant) -> Self {
        Permit {
            shared: None,
            seq: 0,
            reserved,
            admitted_at: at,
        }
    }

    /// The amount reserved at admission.
    pub fn reserved(&self) -> u64 {
        self.reserved
    }

    /// The instant (tokio's clock) at which the reservation was charged.
    pub fn admitted_at(&self) -> Instant {
        self.admitted_at
    }

    /// Throttle feedback for this permit's key, as [`Budget::throttled`](super::Budget::throttled):
    /// the key's window is treated as exhausted and its effective limit lowered. Useful where the
    /// throttle is seen far from the budget (a streamed body that fails mid-stream). Does nothing
    /// for a free permit.
    pub fn throttled(&self) {
        if let Some(shared) = &self.shared {
            shared.throttled_now();
        }
    }

    /// Settles the reservation with the amount really used.
    ///
    /// Below the reservation, the difference is refunded at once and waiting requests that now
    /// fit are admitted. Above it, the overshoot is booked as debt at this instant: later
    /// admissions wait it out.
    pub fn settle(mut self, actual: u64) {
        let Some(shared) = self.shared.take() else {
            return;
        };
        if actual < self.reserved {
            shared.refund(self.seq, self.reserved - actual);
        } else if actual > self.reserved {
            shared.debt(actual - self.reserved);
        }
        // Exact: nothing to book. Dropping the reference ends the permit.
    }
}

impl fmt::Debug for Permit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Permit")
            .field("reserved", &self.reserved)
            .field("admitted_at", &self.admitted_at)
            .field("charged", &self.shared.is_some())
            .finish()
    }
}
