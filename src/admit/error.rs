//! The failures the admission layer adds to the store's.

use std::fmt;
use std::time::Duration;

/// An attempt that was still waiting for admission when it had to leave (see
/// [`Plan::leave_by`](super::Plan::leave_by)): a signed request about to outlive its signature.
///
/// Its place in the queue is kept for a while under its [`arrival`](super::Plan::arrival): the
/// same request sent again (re-signed) takes it back, behind those who were ahead of it and
/// ahead of those who came after. The AWS SDK setup retries exactly this error, and nothing
/// else, by re-signing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeftQueue {
    waited: Duration,
    kept_place: bool,
}

impl LeftQueue {
    pub(crate) fn new(waited: Duration, kept_place: bool) -> Self {
        LeftQueue { waited, kept_place }
    }

    /// How long the attempt waited before it left.
    pub fn waited(&self) -> Duration {
        self.waited
    }

    /// Whether its place is kept for a re-sent attempt (it has an arrival identity).
    pub fn kept_place(&self) -> bool {
        self.kept_place
    }
}

impl fmt::Display for LeftQueue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "the request waited {:?} for admission and had to leave before its signature expires",
            self.waited
        )?;
        if self.kept_place {
            f.write_str("; its place in the queue is kept: re-sign it and send it again")
        } else {
            f.write_str("; send it again (it has no arrival id, so it queues anew)")
        }
    }
}

impl std::error::Error for LeftQueue {}

/// A re-sent attempt came back for the place its request kept in the queue (see
/// [`LeftQueue`]) after that place was given up: nobody had come back for it within
/// [`kept_for`](Self::kept_for). The request was never sent; sending it again queues it anew,
/// behind those who arrived after it.
///
/// It is not [`AdmissionError::QueueFull`](crate::budget::AdmissionError::QueueFull): the queue
/// may well have room, so allowing a deeper queue would not help.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LostPlace {
    kept_for: Duration,
}

impl LostPlace {
    pub(crate) fn new(kept_for: Duration) -> Self {
        LostPlace { kept_for }
    }

    /// How long a place is kept for a re-sent attempt.
    pub fn kept_for(&self) -> Duration {
        self.kept_for
    }
}

impl fmt::Display for LostPlace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "the place this request kept in the queue was given up (a place is kept {:?} for the \
             re-sent attempt, and it came back later): send it again, it queues anew",
            self.kept_for
        )
    }
}

impl std::error::Error for LostPlace {}
