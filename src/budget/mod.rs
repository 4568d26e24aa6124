//! The admission engine (placeholder: the real engine lands with issue 2).

/// A reservation of capacity on one key (placeholder signature).
#[derive(Debug)]
pub struct Permit {
    reserved: u64,
}

impl Permit {
    /// The amount reserved.
    pub fn reserved(&self) -> u64 {
        self.reserved
    }
    /// Settles the reservation with the amount really used: refunds the difference, or books
    /// the overshoot as debt.
    pub fn settle(self, actual: u64) {
        let _ = actual;
    }
}
