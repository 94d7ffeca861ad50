//! A small least-recently-used map: credentials and clients are cached per identity, and
//! a cluster with many identities must not grow the cache without limit.

use std::collections::HashMap;
use std::hash::Hash;

pub struct Bounded<K, V> {
    capacity: usize,
    tick: u64,
    entries: HashMap<K, (V, u64)>,
}

impl<K: Eq + Hash + Clone, V: Clone> Bounded<K, V> {
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity: capacity.max(1),
            tick: 0,
            entries: HashMap::new(),
        }
    }

    pub fn get(&mut self, key: &K) -> Option<V> {
        self.tick += 1;
        let tick = self.tick;
        self.entries.get_mut(key).map(|(value, used)| {
            *used = tick;
            value.clone()
        })
    }

    /// Inserts, evicting the least recently used entry when full; an entry already
    /// present (inserted by a racing caller) wins and is returned.
    pub fn insert(&mut self, key: K, value: V) -> V {
        if let Some(existing) = self.get(&key) {
            return existing;
        }
        if self.entries.len() >= self.capacity
            && let Some(oldest) = self
                .entries
                .iter()
                .min_by_key(|(_, (_, used))| *used)
                .map(|(k, _)| k.clone())
        {
            self.entries.remove(&oldest);
        }
        self.tick += 1;
        self.entries.insert(key, (value.clone(), self.tick));
        value
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.entries.len()
    }
}

#[cfg(test)]
mod tests {
    use super::Bounded;

    #[test]
    fn evicts_the_least_recently_used() {
        let mut cache = Bounded::new(2);
        cache.insert("a", 1);
        cache.insert("b", 2);
        assert_eq!(cache.get(&"a"), Some(1));
        cache.insert("c", 3);
        assert_eq!(cache.len(), 2);
        assert_eq!(cache.get(&"b"), None, "b was least recently used");
        assert_eq!(cache.get(&"a"), Some(1));
        assert_eq!(cache.get(&"c"), Some(3));
    }

    #[test]
    fn a_racing_insert_keeps_the_first_value() {
        let mut cache = Bounded::new(4);
        assert_eq!(cache.insert("k", 1), 1);
        assert_eq!(cache.insert("k", 2), 1);
    }
}
