//! What a [`Bedrock`](super::Bedrock) has derived from the strings of requests it has seen:
//! model ids by their percent-encoded path segment (with the model table's entry for each), and
//! regions by host name.
//!
//! Why: every request's key is needed three times (the rate limiter's key, the token budget's
//! key, the estimate's model lookup), each time from the raw host and path. Without a cache each
//! is a host-name parse, a percent-decode (the SDK encodes the `:` of every model id), two
//! allocations and, for the estimate, a model-table lookup (BENCHMARKS.md, "Stack overhead",
//! has the cost). A deployment calls a handful of models in a few regions, so after the
//! first request of each the work is a hash lookup and an `Arc` clone.
//!
//! Each cache is bounded ([`CAPACITY`] entries): in a gateway the host and path are client
//! input. Past the bound, new strings are parsed on every request, exactly as without the cache.
//! It is derived data: a clone starts empty, and [`Bedrock`](super::Bedrock)'s setters clear it,
//! so it never answers from an older configuration.

use std::fmt;
use std::sync::Arc;

use super::models::ModelInfo;

/// The most strings remembered per cache.
pub(crate) const CAPACITY: usize = 1024;

/// A decoded model id and the model table's answer for it.
#[derive(Debug, Clone)]
pub(crate) struct SeenModel {
    pub(crate) model: Arc<str>,
    pub(crate) info: ModelInfo,
}

/// Values derived from request strings, by the string.
pub(crate) struct SeenCache<V> {
    // foldhash, seeded per map, as the budget's key map (see `budget`): at most CAPACITY
    // entries, so even a crafted collision costs a bounded probe.
    seen: papaya::HashMap<Box<str>, V, foldhash::fast::RandomState>,
}

impl<V> Default for SeenCache<V> {
    fn default() -> Self {
        Self {
            seen: papaya::HashMap::builder()
                .hasher(foldhash::fast::RandomState::default())
                .build(),
        }
    }
}

impl<V: Clone> SeenCache<V> {
    /// The value for `string`, computing (and, below the bound, remembering) it on a miss.
    pub(crate) fn get_or_insert_with(&self, string: &str, compute: impl FnOnce() -> V) -> V {
        let seen = self.seen.pin();
        if let Some(found) = seen.get(string) {
            return found.clone();
        }
        let computed = compute();
        if seen.len() < CAPACITY {
            // Two racing misses insert the same value: either copy is right.
            seen.insert(string.into(), computed.clone());
        }
        computed
    }

    /// The value for `string`, if remembered.
    pub(crate) fn get(&self, string: &str) -> Option<V> {
        self.seen.pin().get(string).cloned()
    }

    /// Forgets everything (the configuration it was derived from changed).
    pub(crate) fn clear(&self) {
        self.seen.pin().clear();
    }
}

/// A clone starts empty: the cache belongs to one configuration, and the clone is about to be
/// changed (`Arc::make_mut` in the setters).
impl<V> Clone for SeenCache<V> {
    fn clone(&self) -> Self {
        Self::default()
    }
}

impl<V> fmt::Debug for SeenCache<V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SeenCache")
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
        let cache = SeenCache::default();
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
