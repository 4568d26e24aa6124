//! Time an attempt spent waiting for admission, told to the retry layer around it, so the
//! deadline counts only the time the calls themselves and the backoffs took.
//!
//! An admission layer inside the retry layer is polled within the retry future's poll, on the
//! same thread: the retry future turns a meter on around that poll, and an admission that
//! resolves after waiting adds its wait to the meter. No request or response carries it, and
//! without a retry layer around it (or behind a `Buffer`, which polls elsewhere) the admission's
//! note goes nowhere.

use std::cell::Cell;
use std::time::Duration;

thread_local! {
    static WAITED: Cell<Option<Duration>> = const { Cell::new(None) };
}

/// Restores the enclosing meter (adding what this one counted) even if the poll panics.
struct Meter {
    outer: Option<Duration>,
}

impl Drop for Meter {
    fn drop(&mut self) {
        let inner = WAITED.with(|w| w.get()).unwrap_or_default();
        // An enclosing retry layer waited as long as this one did.
        WAITED.with(|w| w.set(self.outer.map(|o| o.saturating_add(inner))));
    }
}

/// Runs `poll` with the meter on; returns its result and the admission waits told inside it.
pub(crate) fn metered<T>(poll: impl FnOnce() -> T) -> (T, Duration) {
    let meter = Meter {
        outer: WAITED.with(|w| w.replace(Some(Duration::ZERO))),
    };
    let out = poll();
    let waited = WAITED.with(|w| w.get()).unwrap_or_default();
    drop(meter);
    (out, waited)
}

/// Tells the retry layer polling this attempt, if any, that it waited `waited` for admission.
pub(crate) fn admission_waited(waited: Duration) {
    WAITED.with(|w| {
        if let Some(sum) = w.get() {
            w.set(Some(sum.saturating_add(waited)));
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nested_meters_add_up_and_restore() {
        admission_waited(Duration::from_secs(9)); // no meter: goes nowhere
        let ((_, inner), outer) = metered(|| {
            admission_waited(Duration::from_secs(1));
            metered(|| admission_waited(Duration::from_secs(2)))
        });
        assert_eq!(inner, Duration::from_secs(2));
        assert_eq!(outer, Duration::from_secs(3));
        assert_eq!(WAITED.with(|w| w.get()), None);
    }
}
