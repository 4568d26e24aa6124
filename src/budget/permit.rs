//! The permit an admission returns.

use std::fmt;
use std::sync::Arc;

use tokio::time::Instant;

use super::key::KeyShared;
use super::queue::Account;
use super::quota::Dimension;
use super::scoped::MAX_SCOPES;
use super::store::StorePermit;
use crate::classify::ThrottleCause;

/// Capacity reserved on one key, returned by an admission.
///
/// The reservation is charged when the permit is granted: one request (if the key limits
/// requests) and the reserved tokens (on each token dimension). [`settle`](Permit::settle) it
/// with the tokens really used: a smaller amount is refunded at once, a larger one is booked as
/// debt at the settle instant.
///
/// Dropping a permit without settling settles its [`if_unknown`](Permit::if_unknown) amount:
/// the reservation by default, or what the protocol said the server can have booked at most
/// (see [`with_if_unknown`](Permit::with_if_unknown)), the part above the reservation booked as
/// debt at the drop instant. A caller that leaves before the usage is known must not make the
/// ledger free tokens the server still counts.
///
/// A permit is not generic over the key type: it holds the key's state, so it can travel with a
/// response (or a streamed body) anywhere. It is `Send + Sync + 'static`.
pub struct Permit {
    holder: Holder,
    reserved: u64,
    if_unknown: u64,
    waited_on: Option<Dimension>,
    /// With fairness: the tenant and lane whose account settlement corrects.
    account: Option<Account>,
    on_settle: Option<SettleHook>,
    /// The expected debt this permit counts on its keys while in flight
    /// ([`expect_debt`](Self::expect_debt)).
    expected_debt: u64,
}

/// Told `(reserved, settled)` once, when the permit settles or drops.
type SettleHook = Box<dyn FnOnce(u64, u64) + Send + Sync>;

/// What a permit holds besides its amounts.
enum Holder {
    /// Nothing is charged (a key without limit): only the admission instant.
    Free(Instant),
    /// A charge on a key of the in-process store: the key's state, and the admission as an
    /// offset on the key's clock (see `KeyConfig::offset`), at which every dimension's entry is
    /// dated. The key counts its outstanding permits by these references (see `KeyShared`).
    Charged { shared: Arc<KeyShared>, at: u64 },
    /// A charge on several keys of the in-process store (a request of several scopes), all at
    /// one offset; the first is the primary (whose account a fair settlement corrects).
    Scoped {
        keys: [Option<Arc<KeyShared>>; MAX_SCOPES],
        at: u64,
    },
    /// A charge in another store.
    Store(Box<dyn StorePermit>),
    /// Settled: nothing left to do when dropped.
    Settled,
}

impl Permit {
    pub(crate) fn charged(shared: Arc<KeyShared>, reserved: u64, at: u64) -> Self {
        Permit {
            holder: Holder::Charged { shared, at },
            reserved,
            if_unknown: reserved,
            waited_on: None,
            account: None,
            on_settle: None,
            expected_debt: 0,
        }
    }

    pub(crate) fn scoped(
        keys: [Option<Arc<KeyShared>>; MAX_SCOPES],
        reserved: u64,
        at: u64,
        account: Option<Account>,
    ) -> Self {
        Permit {
            holder: Holder::Scoped { keys, at },
            reserved,
            if_unknown: reserved,
            waited_on: None,
            account,
            on_settle: None,
            expected_debt: 0,
        }
    }

    /// A permit that charges nothing: a key without limit.
    pub(crate) fn free(reserved: u64, at: Instant) -> Self {
        Permit {
            holder: Holder::Free(at),
            reserved,
            if_unknown: reserved,
            waited_on: None,
            account: None,
            on_settle: None,
            expected_debt: 0,
        }
    }

    /// A permit of another [`QuotaStore`](super::QuotaStore): `charge` settles it there.
    pub fn from_store(reserved: u64, charge: Box<dyn StorePermit>) -> Self {
        Permit {
            holder: Holder::Store(charge),
            reserved,
            if_unknown: reserved,
            waited_on: None,
            account: None,
            on_settle: None,
            expected_debt: 0,
        }
    }

    /// The tokens reserved at admission.
    #[inline]
    pub fn reserved(&self) -> u64 {
        self.reserved
    }

    /// The dimension that made the request wait, if it waited: the one whose window was full
    /// for the head of the queue when the request arrived.
    #[inline]
    pub fn waited_on(&self) -> Option<Dimension> {
        self.waited_on
    }

    /// The same permit, correcting `tenant`'s account in `lane` when it settles.
    pub(crate) fn with_account(mut self, account: Account) -> Self {
        self.account = Some(account);
        self
    }

    pub(crate) fn with_waited_on(mut self, dimension: Option<Dimension>) -> Self {
        self.waited_on = dimension;
        self
    }

    /// The tokens an unsettled drop settles (at least the reservation).
    #[inline]
    pub fn if_unknown(&self) -> u64 {
        self.if_unknown
    }

    /// The same permit, settling `worst_case` tokens (at least the reservation) if it is dropped
    /// unsettled: the most the server can have booked for the call when its usage never
    /// arrives. For Bedrock that is `input + cache + burndown × max output`, up to five times
    /// the reserved output on recent Claude models, not the reservation.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use bedrock_throttle::budget::Budget;
    ///
    /// let budget: Budget<&str> = Budget::builder().tokens(10_000).build()?;
    /// let permit = budget.acquire("claude", 1_100).await?.with_if_unknown(5_100);
    /// drop(permit); // the caller went away: the usage will never be known
    /// assert_eq!(budget.stats(&"claude").unwrap().tokens.unwrap().used, 5_100);
    /// # Ok(())
    /// # }
    /// ```
    #[inline]
    pub fn with_if_unknown(mut self, worst_case: u64) -> Self {
        self.if_unknown = worst_case.max(self.reserved);
        self
    }

    /// The same permit, telling `hook` `(reserved, settled)` once, when it settles or drops (an
    /// observer of settlements: metrics, a capacity report).
    pub fn on_settle(mut self, hook: impl FnOnce(u64, u64) + Send + Sync + 'static) -> Self {
        self.on_settle = Some(Box::new(hook));
        self
    }

    /// The same permit, counting `extra` tokens of debt the call will most likely settle above
    /// its reservation, on its keys' token dimensions, until it settles.
    ///
    /// Why: a server that settles at the end of a call (Bedrock books `output × burndown` then)
    /// is already short of that debt while the call runs, and admissions in between would use
    /// room that is gone. Counting the expected debt while the call is in flight makes later
    /// admissions wait for it; the call's own admission did not (the server does not either).
    /// The settlement takes it back and books the real debt instead. A protocol supplies the
    /// estimate ([`Plan::expected_debt`](crate::admit::Plan::expected_debt); the Bedrock protocol
    /// learns it per model). A permit of another store, or a free one, ignores it.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use bedrock_throttle::budget::Budget;
    ///
    /// let budget: Budget<&str> = Budget::builder().tokens(10_000).build()?;
    /// // A call that reserves 1,100 tokens and will most likely settle 4,000 more.
    /// let permit = budget.acquire("claude", 1_100).await?.expect_debt(4_000);
    /// assert_eq!(budget.stats(&"claude").unwrap().expected_debt, 4_000);
    /// assert!(budget.try_acquire("claude", 5_000).is_err(), "its debt counts already");
    /// permit.settle(1_100 + 3_000); // it settled 3,000 above its reservation
    /// assert_eq!(budget.stats(&"claude").unwrap().expected_debt, 0);
    /// assert!(budget.try_acquire("claude", 5_900).is_ok());
    /// # Ok(())
    /// # }
    /// ```
    pub fn expect_debt(mut self, extra: u64) -> Self {
        self.count_expected_debt(extra);
        self
    }

    /// [`expect_debt`](Self::expect_debt) in place: counts `extra` more tokens.
    pub fn count_expected_debt(&mut self, extra: u64) {
        if extra == 0 {
            return;
        }
        match &self.holder {
            Holder::Charged { shared, .. } => shared.expect_debt(extra),
            Holder::Scoped { keys, .. } => keys.iter().flatten().for_each(|k| k.expect_debt(extra)),
            Holder::Store(_) | Holder::Free(_) | Holder::Settled => return,
        }
        self.expected_debt = self.expected_debt.saturating_add(extra);
    }

    /// The expected debt this permit counts while in flight ([`expect_debt`](Self::expect_debt)).
    #[inline]
    pub fn expected_debt(&self) -> u64 {
        self.expected_debt
    }

    /// The instant (tokio's clock) at which the reservation was charged.
    pub fn admitted_at(&self) -> Instant {
        match &self.holder {
            Holder::Free(at) => *at,
            Holder::Charged { shared, at } => shared.config().instant(*at),
            Holder::Scoped { keys, at } => match keys.iter().flatten().next() {
                Some(shared) => shared.config().instant(*at),
                None => Instant::now(),
            },
            Holder::Store(charge) => charge.admitted_at(),
            Holder::Settled => Instant::now(),
        }
    }

    /// Throttle feedback for this permit's key, as
    /// [`Budget::throttled`](super::Budget::throttled): each dimension the cause names has its
    /// effective limit lowered and its window treated as exhausted up to it, not counting this
    /// permit's own reservation (the server did not book it; settling the permit refunds it
    /// without reopening the window). If a dimension's limit was already lowered after this
    /// permit's admission, it is not lowered again (the throttle is an echo of the one that
    /// lowered it; see the [module documentation](super#feedback)). Useful where the throttle is
    /// seen far from the budget (a streamed body that fails mid-stream). Does nothing for a free
    /// permit.
    pub fn throttled(&self, cause: ThrottleCause) {
        let dims = Dimension::of_cause(cause);
        if dims.is_empty() {
            return;
        }
        match &self.holder {
            Holder::Charged { shared, at } => shared.throttled_now(dims, *at, self.reserved),
            // Each scope takes the dimensions of the cause that it limits: "too many tokens per
            // day" reaches the scopes that limit tokens per day (an account's), and a scope
            // that does not limit the dimension ignores it.
            Holder::Scoped { keys, at } => {
                for shared in keys.iter().flatten() {
                    shared.throttled_now(dims, *at, self.reserved);
                }
            }
            Holder::Store(charge) => charge.throttled(dims, self.reserved),
            Holder::Free(_) | Holder::Settled => {}
        }
    }

    /// Settles the reservation with the tokens really used.
    ///
    /// Below the reservation, the difference is refunded at once and waiting requests that now
    /// fit are admitted. Above it, the overshoot is booked as debt at this instant: later
    /// admissions wait it out.
    #[inline]
    pub fn settle(mut self, actual: u64) {
        let reserved = self.reserved;
        self.finish(actual, reserved);
    }

    /// Settles the reservation with the tokens really used, for a server whose own reservation
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
    /// let budget: Budget<&str> = Budget::builder().tokens(1_000).window(Duration::from_secs(60)).build()?;
    /// // We reserved 500 (the input over-estimated); the server reserved 400 and the call used 450.
    /// let permit = budget.acquire("claude", 500).await?;
    /// tokio::time::advance(Duration::from_secs(10)).await;
    /// permit.settle_against(450, 400);
    /// let used = || budget.stats(&"claude").unwrap().tokens.unwrap().used;
    /// assert_eq!(used(), 450);
    /// // 400 leave with the admission at t = 60 s; the 50 booked at t = 10 s stay until t = 70 s.
    /// tokio::time::advance(Duration::from_secs(50)).await;
    /// assert_eq!(used(), 50);
    /// # Ok(())
    /// # }
    /// ```
    #[inline]
    pub fn settle_against(mut self, actual: u64, server_reserved: u64) {
        self.finish(actual, server_reserved);
    }

    #[inline]
    fn finish(&mut self, actual: u64, server_reserved: u64) {
        if let Some(hook) = self.on_settle.take() {
            hook(self.reserved, actual);
        }
        let at_admission = actual.min(server_reserved).min(self.reserved);
        let refund = self.reserved - at_admission;
        let debt = actual - at_admission;
        let expected = std::mem::take(&mut self.expected_debt);
        match std::mem::replace(&mut self.holder, Holder::Settled) {
            Holder::Charged { shared, at } => {
                if refund > 0 || debt > 0 || expected > 0 {
                    shared.settle(at, refund, debt, self.account.as_ref(), expected);
                }
            }
            Holder::Scoped { keys, at } => {
                if refund > 0 || debt > 0 || expected > 0 {
                    for (i, shared) in keys.iter().flatten().enumerate() {
                        let account = if i == 0 { self.account.as_ref() } else { None };
                        shared.settle(at, refund, debt, account, expected);
                    }
                }
            }
            Holder::Store(charge) => charge.settle(self.reserved, refund, debt),
            Holder::Free(_) | Holder::Settled => {}
        }
    }
}

impl Drop for Permit {
    #[inline]
    fn drop(&mut self) {
        if matches!(self.holder, Holder::Settled)
            || (matches!(self.holder, Holder::Free(_)) && self.on_settle.is_none())
        {
            return;
        }
        // The usage is unknown: settle what the server can have booked at most, the
        // reservation at the admission and the rest as debt now.
        let (worst, reserved) = (self.if_unknown, self.reserved);
        self.finish(worst, reserved);
    }
}

impl fmt::Debug for Permit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Permit")
            .field("reserved", &self.reserved)
            .field("if_unknown", &self.if_unknown)
            .field("admitted_at", &self.admitted_at())
            .field(
                "charged",
                &matches!(
                    self.holder,
                    Holder::Charged { .. } | Holder::Scoped { .. } | Holder::Store(_)
                ),
            )
            .finish()
    }
}
