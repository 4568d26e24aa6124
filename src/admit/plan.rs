//! What the protocol tells admission about one attempt, and the closures that plug in.

use std::fmt;
use std::hash::Hash;
use std::sync::Arc;

use tokio::time::Instant;

use crate::budget::{Class, Permit};
use crate::classify::{Classification, Classify, EstimateTokens, OkIsSuccess, QuotaKey};

/// The identity of a request across the attempts that re-send it unchanged (the AWS SDK's
/// `amz-sdk-invocation-id`): an attempt that had to leave the queue before admission (its
/// signature expiring) and comes back with the same arrival takes its old place again.
pub type ArrivalId = Arc<str>;

/// The instant by which an attempt must leave the admission queue, as a request extension: a
/// generic leave-by value that a lower layer sets (the SDK adapter sets it on SigV4-signed
/// requests, as their signature expires) and a protocol reads into [`Plan::leave_by`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaveBy(pub Instant);

/// The answer to the one question admission asks per attempt: which quota key, what it costs,
/// and what its settlement will need.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Plan<K, M> {
    /// The quota key the attempt draws on.
    pub key: K,
    /// The tokens to reserve (every attempt also counts one request).
    pub tokens: u64,
    /// The tokens to settle if the usage never arrives (the caller leaves, the body is dropped,
    /// the call fails after it may have been booked): the most the server can have booked. At
    /// least `tokens`.
    pub if_unknown: u64,
    /// The tokens the attempt will most likely settle above its reservation (a server that
    /// books part of a call's cost when it ends: Bedrock's `output × burndown`), counted on the
    /// key while the attempt is in flight so that later admissions wait for that debt
    /// ([`Permit::expect_debt`]). 0 by default; the Bedrock protocol learns it per model.
    pub expected_debt: u64,
    /// What the settlement needs (for Bedrock: the operation, the burndown, the max output
    /// reserved). It travels inside the response future; nothing goes through the request or
    /// response.
    pub memo: M,
    /// The instant by which the attempt must leave, if any (a signed request whose signature
    /// expires). An attempt still waiting then leaves the queue with
    /// [`LeftQueue`](super::LeftQueue), keeping its place for its [`arrival`](Self::arrival).
    pub leave_by: Option<Instant>,
    /// The identity of the request across re-sent attempts, if it has one.
    pub arrival: Option<ArrivalId>,
    /// Who the attempt is for and its lane, for a store that shares keys fairly
    /// ([`Fairness`](crate::budget::Fairness)); empty by default (and ignored by a FIFO store).
    pub class: Class,
    /// Further scopes the attempt is charged to with [`key`](Self::key), admitted together
    /// ([`Scopes`](crate::budget::Scopes): for Bedrock, the account's daily key). Empty for
    /// most plans (an empty `Vec` allocates nothing).
    pub also: Vec<K>,
}

impl<K> Plan<K, ()> {
    /// A plan of `tokens` on `key`, with nothing to remember.
    pub fn new(key: K, tokens: u64) -> Self {
        Plan {
            key,
            tokens,
            if_unknown: tokens,
            expected_debt: 0,
            memo: (),
            leave_by: None,
            arrival: None,
            class: Class::default(),
            also: Vec::new(),
        }
    }
}

impl<K, M> Plan<K, M> {
    /// The same plan with a memo for the settlement.
    pub fn with_memo<M2>(self, memo: M2) -> Plan<K, M2> {
        Plan {
            key: self.key,
            tokens: self.tokens,
            if_unknown: self.if_unknown,
            expected_debt: self.expected_debt,
            memo,
            leave_by: self.leave_by,
            arrival: self.arrival,
            class: self.class,
            also: self.also,
        }
    }

    /// The same plan, also charged to `scope` (admitted together with the key).
    pub fn with_scope(mut self, scope: K) -> Self {
        self.also.push(scope);
        self
    }

    /// The same plan, settling `tokens` (at least the reservation) if the usage never arrives.
    pub fn with_if_unknown(mut self, tokens: u64) -> Self {
        self.if_unknown = tokens.max(self.tokens);
        self
    }

    /// The same plan, counting `tokens` of expected debt while in flight
    /// ([`expected_debt`](Self::expected_debt)).
    pub fn with_expected_debt(mut self, tokens: u64) -> Self {
        self.expected_debt = tokens;
        self
    }

    /// The same plan, leaving the queue at `leave_by` if still waiting then.
    pub fn with_leave_by(mut self, leave_by: Option<Instant>) -> Self {
        self.leave_by = leave_by;
        self
    }

    /// The same plan for `class` (tenant and lane).
    pub fn with_class(mut self, class: Class) -> Self {
        self.class = class;
        self
    }

    /// The same plan, with an identity across re-sent attempts.
    pub fn with_arrival(mut self, arrival: Option<ArrivalId>) -> Self {
        self.arrival = arrival;
        self
    }
}

/// Settles a reservation from a response: how many tokens the call really used.
///
/// Implemented by any `Fn(&Res) -> Option<u64>`: `Some(n)` settles `n`, `None` lets the permit
/// drop unsettled (it settles its [`if_unknown`](Permit::if_unknown): the reservation, for a
/// protocol of closures). A protocol whose usage arrives at the end of a streamed body
/// implements this trait directly, moving the [`Permit`] into the body so it settles when the
/// stream ends or is dropped.
pub trait Settle<Res> {
    /// The response handed to the caller (the same type, unless the body was wrapped).
    type Output;
    /// Settles `permit` from `response` now, or arranges for it to settle later.
    fn settle(&self, response: Res, permit: Permit) -> Self::Output;
}

impl<F, Res> Settle<Res> for F
where
    F: Fn(&Res) -> Option<u64>,
{
    type Output = Res;
    fn settle(&self, response: Res, permit: Permit) -> Res {
        if let Some(used) = self(&response) {
            permit.settle(used);
        }
        // Otherwise the permit drops unsettled and settles its `if_unknown`.
        response
    }
}

/// Protocol knowledge for admission: plans each attempt, settles it from the response, and
/// classifies its result. [`Bedrock`](crate::bedrock::Bedrock) implements it for Bedrock
/// Runtime; [`Closures`] builds one from closures.
pub trait Protocol<Req, Res, E> {
    /// The quota key type.
    type Key: Clone + Eq + Hash + Send + Sync + 'static;
    /// What the settlement needs to know from the plan.
    type Memo: Send + 'static;
    /// The response handed to the caller (the same type, unless the body was wrapped to settle
    /// when it ends).
    type Output;

    /// The one question per attempt. It reads the request and changes nothing: what admission
    /// needs later is in the plan.
    fn plan(&self, request: &Req) -> Plan<Self::Key, Self::Memo>;

    /// Settles `permit` from `response`, now or when its body ends. A permit dropped unsettled
    /// settles its [`Plan::if_unknown`].
    fn settle(&self, response: Res, permit: Permit, memo: Self::Memo) -> Self::Output;

    /// Classifies the result of the attempt (once: the admission layer feeds throttles back to
    /// the store by cause).
    fn classify(&self, result: Result<&Res, &E>) -> Classification;
}

/// Who a request is for and its lane ([`Class`]), as a function of the request, like its quota
/// key. Closures `Fn(&Req) -> Class` implement it.
pub trait RequestClass<Req> {
    /// The class of `request`.
    fn request_class(&self, request: &Req) -> Class;
}

impl<F, Req> RequestClass<Req> for F
where
    F: Fn(&Req) -> Class,
{
    fn request_class(&self, request: &Req) -> Class {
        self(request)
    }
}

/// No class: every request is the anonymous tenant in the default lane.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoClass;

impl<Req> RequestClass<Req> for NoClass {
    #[inline]
    fn request_class(&self, _request: &Req) -> Class {
        Class::default()
    }
}

/// A [`Protocol`] made of closures, one per role: the quota key ([`QuotaKey`]), the token
/// estimate ([`EstimateTokens`]), the settlement ([`Settle`]), the classification
/// ([`Classify`]) and, for fair shares, the request's class ([`RequestClass`]).
/// [`RateLimitLayer`](super::RateLimitLayer) and [`TokenBudgetLayer`](super::TokenBudgetLayer)
/// build theirs.
#[derive(Clone, Copy)]
pub struct Closures<KF, E = NoTokens, ST = KeepReservation, C = OkIsSuccess, CL = NoClass> {
    pub(crate) key: KF,
    pub(crate) estimate: E,
    pub(crate) settle: ST,
    pub(crate) classify: C,
    pub(crate) class: CL,
}

impl<KF> Closures<KF> {
    /// A protocol that keys requests with `key`, reserves no tokens, and calls every `Ok` a
    /// success.
    pub fn new(key: KF) -> Self {
        Closures {
            key,
            estimate: NoTokens,
            settle: KeepReservation,
            classify: OkIsSuccess,
            class: NoClass,
        }
    }
}

impl<KF, E, ST, C, CL> Closures<KF, E, ST, C, CL> {
    /// Reserves `estimate` tokens per request and settles with `settle`.
    pub fn tokens<E2, ST2>(self, estimate: E2, settle: ST2) -> Closures<KF, E2, ST2, C, CL> {
        Closures {
            key: self.key,
            estimate,
            settle,
            classify: self.classify,
            class: self.class,
        }
    }

    /// Classifies results with `classify`, for throttle feedback.
    pub fn classify<C2>(self, classify: C2) -> Closures<KF, E, ST, C2, CL> {
        Closures {
            key: self.key,
            estimate: self.estimate,
            settle: self.settle,
            classify,
            class: self.class,
        }
    }

    /// Gives each request the class `class` returns (its tenant and lane), for a budget with
    /// [`Fairness`](crate::budget::Fairness).
    pub fn class<CL2>(self, class: CL2) -> Closures<KF, E, ST, C, CL2> {
        Closures {
            key: self.key,
            estimate: self.estimate,
            settle: self.settle,
            classify: self.classify,
            class,
        }
    }
}

impl<KF, E, ST, C, CL> fmt::Debug for Closures<KF, E, ST, C, CL> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Closures").finish_non_exhaustive()
    }
}

/// The estimate of a protocol that counts requests only: zero tokens.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoTokens;

impl<Req> EstimateTokens<Req> for NoTokens {
    fn estimate_tokens(&self, _request: &Req) -> u64 {
        0
    }
}

/// The settlement of a protocol that learns nothing from responses: the reservation stands.
#[derive(Debug, Clone, Copy, Default)]
pub struct KeepReservation;

impl<Res> Settle<Res> for KeepReservation {
    type Output = Res;
    fn settle(&self, response: Res, permit: Permit) -> Res {
        let reserved = permit.reserved();
        permit.settle(reserved);
        response
    }
}

impl<Req, Res, Err, KF, E, ST, C, CL> Protocol<Req, Res, Err> for Closures<KF, E, ST, C, CL>
where
    KF: QuotaKey<Req>,
    E: EstimateTokens<Req>,
    ST: Settle<Res>,
    C: Classify<Res, Err>,
    CL: RequestClass<Req>,
{
    type Key = KF::Key;
    type Memo = ();
    type Output = ST::Output;

    #[inline]
    fn plan(&self, request: &Req) -> Plan<KF::Key, ()> {
        let key = self.key.quota_key(request);
        Plan::new(key, self.estimate.estimate_tokens(request))
            .with_class(self.class.request_class(request))
    }

    #[inline]
    fn settle(&self, response: Res, permit: Permit, _memo: ()) -> ST::Output {
        self.settle.settle(response, permit)
    }

    #[inline]
    fn classify(&self, result: Result<&Res, &Err>) -> Classification {
        self.classify.classify(result)
    }
}
