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
    holder: Holder,
    seq: u64,
    reserved: u64,
}

/// What a permit holds besides its amounts.
enum Holder {
    /// Nothing is charged (cost 0, or a key without limit): only the admission instant.
    Free(Instant),
    /// A charge on a key: the key's state, and the admission as an offset on the key's clock
    /// (see `Settings::offset`). Dropping the permit unsettled drops this reference and nothing
    /// else: the reservation stands. The key counts its outstanding permits by these references
    /// (see `KeyShared`). The offset, not an [`Instant`], is what the engine compares (throttle
    /// echoes), and an admission does not convert it back unless
    /// [`admitted_at`](Permit::admitted_at) asks.
    Charged { shared: Arc<KeyShared>, at: u64 },
}

impl Permit {
    pub(crate) fn charged(shared: Arc<KeyShared>, seq: u64, reserved: u64, at: u64) -> Self {
        Permit {
            holder: Holder::Charged { shared, at },
            seq,
            reserved,
        }
    }

    /// A permit that charges nothing: cost 0, or a key without limit.
    pub(crate) fn free(reserved: u64, at: Instant) -> Self {
        Permit {
            holder: Holder::Free(at),
            seq: 0,
            reserved,
        }
    }

    /// The amount reserved at admission.
    #[inline]
    pub fn reserved(&self) -> u64 {
        self.reserved
    }

    /// The instant (tokio's clock) at which the reservation was charged.
    pub fn admitted_at(&self) -> Instant {
        match &self.holder {
            Holder::Free(at) => *at,
            Holder::Charged { shared, at } => shared.settings().instant(*at),
        }
    }

    /// Throttle feedback for this permit's key, as [`Budget::throttled`](super::Budget::throttled):
    /// the key's effective limit is lowered and its window treated as exhausted up to it, not
    /// counting this permit's own reservation (the server did not book it; settling the permit
    /// refunds it without reopening the window). If the limit was already lowered after this
    /// permit's admission, it is not lowered again (the throttle is an echo of the one that
    /// lowered it; see the [module documentation](super#feedback)). Useful where the throttle is
    /// seen far from the budget (a streamed body that fails mid-stream). Does nothing for a free
    /// permit.
    pub fn throttled(&self) {
        if let Holder::Charged { shared, at } = &self.holder {
            shared.throttled_now(*at, self.reserved);
        }
    }

    /// Settles the reservation with the amount really used.
    ///
    /// Below the reservation, the difference is refunded at once and waiting requests that now
    /// fit are admitted. Above it, the overshoot is booked as debt at this instant: later
    /// admissions wait it out.
    #[inline]
    pub fn settle(self, actual: u64) {
        let reserved = self.reserved;
        self.settle_as(actual, reserved);
    }

    /// Settles the reservation with the amount really used, for a server whose own reservation
    /// for the call was `server_reserved`.
    ///
    /// A server that reserves at admission and settles at the end keeps
    /// `min(actual, server_reserved)` dated at the admission and books the rest when the call
    /// settles. When this permit reserved more than the server (a conservative estimate of the
    /// input, say) and the call used more than the server reserved, [`settle`](Self::settle)
    /// would leave the difference at the admission instant, where it expires earlier than in
    /// the server's ledger, and later admissions could overrun the server's window. This method
    /// keeps `min(actual, server_reserved, reserved)` at the admission, refunding the rest of
    /// the reservation at once, and books everything above it as debt at this instant, so the
    /// ledger never frees tokens before the server does. With `server_reserved >= reserved` it
    /// is exactly [`settle`](Self::settle).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use std::time::Duration;
    /// use bedrock_throttle::budget::Budget;
    ///
    /// let budget: Budget<&str> = Budget::builder().limit(1_000).window(Duration::from_secs(60)).build()?;
    /// // We reserved 500 (the input over-estimated); the server reserved 400 and the call used 450.
    /// let permit = budget.acquire("claude", 500).await?;
    /// tokio::time::advance(Duration::from_secs(10)).await;
    /// permit.settle_as(450, 400);
    /// assert_eq!(budget.stats(&"claude").unwrap().used, 450);
    /// // 400 leave with the admission at t = 60 s; the 50 booked at t = 10 s stay until t = 70 s.
    /// tokio::time::advance(Duration::from_secs(50)).await;
    /// assert_eq!(budget.stats(&"claude").unwrap().used, 50);
    /// # Ok(())
    /// # }
    /// ```
    #[inline]
    pub fn settle_as(self, actual: u64, server_reserved: u64) {
        let Holder::Charged { shared, .. } = self.holder else {
            return;
        };
        let at_admission = actual.min(server_reserved).min(self.reserved);
        let refund = self.reserved - at_admission;
        let debt = actual - at_admission;
        if refund > 0 || debt > 0 {
            shared.settle(self.seq, refund, debt);
        }
        // Dropping the reference ends the permit.
    }
}

impl fmt::Debug for Permit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Permit")
            .field("reserved", &self.reserved)
            .field("admitted_at", &self.admitted_at())
            .field("charged", &matches!(self.holder, Holder::Charged { .. }))
            .finish()
    }
}
