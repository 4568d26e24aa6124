//! The key map of the observers (metrics, capacity report): bounded whatever keys callers send.
//!
//! Keys come from requests (a gateway forwards the model id its users choose), so an observer
//! that kept one entry per key would grow without bound, and a metrics exporter would grow one
//! series set per key. This map keeps an entry only for keys its predicate tracks (the models
//! with a configured or applied quota, or an allow-list), at most `max` of them, and drops
//! entries idle for longer than `idle`; every other event goes to one `other` entry.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

/// Which keys get an entry of their own.
pub(crate) type Track<K> = Arc<dyn Fn(&K) -> bool + Send + Sync>;

/// The most keys an observer keeps an entry for by default; further keys share `other`.
pub(crate) const DEFAULT_MAX_KEYS: usize = 256;

struct Entry<V> {
    value: V,
    seen: Instant,
}

/// Entries per tracked key up to a cap, one `other` entry for the rest.
pub(crate) struct KeyMap<K, V> {
    entries: HashMap<K, Entry<V>>,
    other: Option<V>,
    /// The most entries of their own.
    pub(crate) max: usize,
    /// An entry not used for this long is dropped.
    pub(crate) idle: Duration,
    /// Which keys may have an entry of their own (all, when `None`).
    pub(crate) track: Option<Track<K>>,
    /// A lower bound of every entry's last use, so a sweep that cannot drop anything is skipped.
    oldest: Instant,
}

impl<K: Hash + Eq + Clone, V> KeyMap<K, V> {
    pub(crate) fn new(idle: Duration) -> Self {
        Self {
            entries: HashMap::new(),
            other: None,
            max: DEFAULT_MAX_KEYS,
            idle,
            track: None,
            oldest: Instant::now(),
        }
    }

    /// The entry of `key`, made by `make` (given `true` for the `other` entry) if it has none:
    /// its own when the key is tracked and there is room, `other` otherwise. The flag says
    /// which.
    pub(crate) fn entry(
        &mut self,
        key: &K,
        now: Instant,
        make: impl FnOnce(&K, bool) -> V,
    ) -> (&mut V, bool) {
        if !self.entries.contains_key(key) {
            self.sweep(now);
            let tracked = self.track.as_ref().is_none_or(|t| t(key));
            if tracked && self.entries.len() < self.max {
                let e = self.entries.entry(key.clone()).or_insert(Entry {
                    value: make(key, false),
                    seen: now,
                });
                return (&mut e.value, false);
            }
        } else if let Some(e) = self.entries.get_mut(key) {
            e.seen = now;
            return (&mut e.value, false);
        }
        (self.other.get_or_insert_with(|| make(key, true)), true)
    }

    /// Drops the entries idle for `idle` or longer (a no-op unless one can be).
    pub(crate) fn sweep(&mut self, now: Instant) {
        if now.saturating_duration_since(self.oldest) < self.idle {
            return;
        }
        let idle = self.idle;
        let mut oldest = now;
        self.entries.retain(|_, e| {
            let keep = now.saturating_duration_since(e.seen) < idle;
            if keep {
                oldest = oldest.min(e.seen);
            }
            keep
        });
        self.oldest = oldest;
    }

    /// The entries of their own.
    #[cfg_attr(not(feature = "bedrock"), allow(dead_code))]
    pub(crate) fn iter(&self) -> impl Iterator<Item = (&K, &V)> {
        self.entries.iter().map(|(k, e)| (k, &e.value))
    }

    /// The `other` entry, once an event went to it.
    #[cfg_attr(not(feature = "bedrock"), allow(dead_code))]
    pub(crate) fn other(&self) -> Option<&V> {
        self.other.as_ref()
    }

    /// How many keys have an entry of their own.
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn untracked_and_overflow_keys_share_other_and_idle_keys_leave() {
        let mut map: KeyMap<u32, u32> = KeyMap::new(Duration::from_secs(10));
        map.max = 3;
        map.track = Some(Arc::new(|k: &u32| k.is_multiple_of(2)));
        let now = Instant::now();
        for k in 0..100u32 {
            let (v, other) = map.entry(&k, now, |_, other| u32::from(other));
            *v += 1;
            assert_eq!(other, k % 2 == 1 || k >= 6, "{k}");
        }
        assert_eq!(map.len(), 3);
        // 50 odd keys and 47 even ones past the cap (the entry starts at 1).
        assert_eq!(map.other(), Some(&98));
        // Idle keys are dropped, which makes room for new ones.
        let later = now + Duration::from_secs(10);
        let (_, other) = map.entry(&200, later, |_, other| u32::from(other));
        assert!(!other);
        assert_eq!(map.iter().map(|(k, _)| *k).collect::<Vec<_>>(), [200]);
    }
}
