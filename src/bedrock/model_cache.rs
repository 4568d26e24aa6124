//! The model ids a [`Bedrock`](super::Bedrock) has seen on request paths, by their
//! percent-encoded path segment, with what the model table says of each.
//!
//! Why: every request's model id is needed three times (the rate limiter's key, the token
//! budget's key, the estimate's model lookup), each time from the raw path. Without a cache each
//! is a percent-decode (the SDK encodes the `:` of every model id), two allocations and, for the
//! estimate, a model-table lookup: about 0.4 µs each (BENCHMARKS.md, "Stack overhead"). A
//! deployment calls a handful of models, so after the first request of each the work is one hash
//! lookup and one `Arc` clone.
//!
//! The cache is bounded ([`CAPACITY`] entries): in a gateway the path is client input. Past the
//! bound, new ids are decoded and looked up on every request, exactly as without the cache. It
//! is derived data: a clone starts empty, and [`Bedrock`](super::Bedrock)'s setters clear it, so
//! it never answers from an older model table.

use std::fmt;
use std::sync::Arc;

use super::models::ModelInfo;

/// The most model ids remembered.
pub(crate) const CAPACITY: usize = 1024;

/// A decoded model id and the model table's answer for it.
#[derive(Debug, Clone)]
pub(crate) struct SeenModel {
    pub(crate) model: Arc<str>,
    pub(crate) info: ModelInfo,
}

#[derive(Default)]
pub(crate) struct ModelCache {
    seen: papaya::HashMap<Box<str>, SeenModel>,
}

impl ModelCache {
    /// The entry for `encoded`, computing (and, below the bound, remembering) it on a miss.
    pub(crate) fn get_or_insert_with(
        &self,
        encoded: &str,
        compute: impl FnOnce() -> SeenModel,
    ) -> SeenModel {
        let seen = self.seen.pin();
        if let Some(found) = seen.get(encoded) {
            return found.clone();
        }
        let computed = compute();
        if seen.len() < CAPACITY {
            // Two racing misses insert the same value: either copy is right.
            seen.insert(encoded.into(), computed.clone());
        }
        computed
    }

    /// Forgets everything (the configuration it was derived from changed).
    pub(crate) fn clear(&self) {
        self.seen.pin().clear();
    }
}

/// A clone starts empty: the cache belongs to one configuration, and the clone is about to be
/// changed (`Arc::make_mut` in the setters).
impl Clone for ModelCache {
    fn clone(&self) -> Self {
        Self::default()
    }
}

impl fmt::Debug for ModelCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ModelCache")
            .field("len", &self.seen.len())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bedrock::models::ModelFamily;

    fn seen(model: &str) -> SeenModel {
        SeenModel {
            model: Arc::from(model),
            info: ModelInfo::new(ModelFamily::AnthropicClaude, 8_192, 5),
        }
    }

    #[test]
    fn computes_once_per_id_and_stops_remembering_at_the_bound() {
        let cache = ModelCache::default();
        let mut computed = 0;
        for _ in 0..3 {
            let got = cache.get_or_insert_with("a%3A0", || {
                computed += 1;
                seen("a:0")
            });
            assert_eq!(&*got.model, "a:0");
        }
        assert_eq!(computed, 1);

        for i in 0..CAPACITY + 10 {
            cache.get_or_insert_with(&format!("m{i}"), || seen("m"));
        }
        assert_eq!(cache.seen.len(), CAPACITY);
        let mut computed = 0;
        for _ in 0..2 {
            cache.get_or_insert_with("past-the-bound", || {
                computed += 1;
                seen("p")
            });
        }
        assert_eq!(computed, 2, "past the bound every request computes its own");

        cache.clear();
        assert_eq!(cache.seen.len(), 0);
        assert_eq!(cache.clone().seen.len(), 0);
    }
}
