//! Pattern subscriptions indexed by their literal prefix ([`Pattern::literal_prefix`]), so a
//! publish looks only at the patterns that can match its destination instead of scanning
//! every pattern subscription in the process.
//!
//! A pattern is kept under its literal prefix without the trailing separator
//! (`/topic/admin/*/x` under `/topic/admin`, `/topic/**` under `/topic`, `/**` and `/*/x`
//! under the empty key). Every destination a pattern matches, with a separator appended,
//! starts with the prefix, so the patterns that may match `D` are under the empty key, under
//! every prefix of `D` that ends just before a separator, and under `D` itself. A lookup is
//! one hash probe per segment of the destination, with no allocation for the keys.
//!
//! [`Pattern::literal_prefix`]: super::pattern::Pattern::literal_prefix

use std::collections::{BTreeMap, HashMap};

/// Values (subscriptions) by pattern prefix, each at its position in subscription order.
#[derive(Debug)]
pub struct PatternIndex<V> {
    by_prefix: HashMap<String, BTreeMap<u64, V>>,
    separator: char,
    len: usize,
}

impl<V> PatternIndex<V> {
    /// An empty index for patterns whose segments `separator` divides.
    pub fn new(separator: char) -> PatternIndex<V> {
        PatternIndex {
            by_prefix: HashMap::new(),
            separator,
            len: 0,
        }
    }

    fn key<'a>(&self, literal_prefix: &'a str) -> &'a str {
        literal_prefix
            .strip_suffix(self.separator)
            .unwrap_or(literal_prefix)
    }

    /// Keep `value` at `position` for a pattern with `literal_prefix`.
    pub fn insert(&mut self, literal_prefix: &str, position: u64, value: V) {
        let key = self.key(literal_prefix).to_owned();
        if self
            .by_prefix
            .entry(key)
            .or_default()
            .insert(position, value)
            .is_none()
        {
            self.len += 1;
        }
    }

    /// Forget what is at `position` for a pattern with `literal_prefix`.
    pub fn remove(&mut self, literal_prefix: &str, position: u64) -> Option<V> {
        let key = self.key(literal_prefix);
        let bucket = self.by_prefix.get_mut(key)?;
        let value = bucket.remove(&position)?;
        if bucket.is_empty() {
            self.by_prefix.remove(key);
        }
        self.len -= 1;
        Some(value)
    }

    /// How many patterns it holds.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether it holds none.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The values whose pattern may match `destination`, in subscription order.
    pub fn candidates(&self, destination: &str) -> Vec<&V> {
        if self.len == 0 {
            return Vec::new();
        }
        let mut found: Vec<(u64, &V)> = Vec::new();
        let mut take = |key: &str| {
            if let Some(bucket) = self.by_prefix.get(key) {
                found.extend(bucket.iter().map(|(p, v)| (*p, v)));
            }
        };
        take("");
        for (at, c) in destination.char_indices() {
            if c == self.separator && at > 0 {
                take(&destination[..at]);
            }
        }
        if !destination.is_empty() && !destination.ends_with(self.separator) {
            take(destination);
        }
        found.sort_unstable_by_key(|(position, _)| *position);
        found.into_iter().map(|(_, v)| v).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stomp::pattern::{Pattern, PatternLimits};
    use proptest::prelude::*;

    fn compile(p: &str) -> Pattern {
        Pattern::compile(p, '/', &PatternLimits::default()).unwrap()
    }

    #[test]
    fn a_publish_looks_only_where_a_match_can_be() {
        let mut index = PatternIndex::new('/');
        for (position, p) in [
            "/topic/**",
            "/topic/admin/*/x",
            "/queue/*",
            "/**",
            "/topic/a*",
        ]
        .iter()
        .enumerate()
        {
            index.insert(compile(p).literal_prefix(), position as u64, *p);
        }
        assert_eq!(index.len(), 5);
        assert_eq!(
            index.candidates("/topic/admin/1/x"),
            [&"/topic/**", &"/topic/admin/*/x", &"/**", &"/topic/a*"]
        );
        assert_eq!(index.candidates("/queue/jobs"), [&"/queue/*", &"/**"]);
        // A candidate may still not match (`/topic/a*` here); matching decides.
        assert_eq!(
            index.candidates("/topic"),
            [&"/topic/**", &"/**", &"/topic/a*"]
        );
        assert_eq!(
            index.remove(compile("/**").literal_prefix(), 3),
            Some("/**")
        );
        assert_eq!(index.remove(compile("/**").literal_prefix(), 3), None);
        assert_eq!(index.candidates("/other/x"), Vec::<&&str>::new());
        assert_eq!(index.len(), 4);
    }

    proptest! {
        /// Whatever a pattern matches, the index offers it for that destination.
        #[test]
        fn every_match_is_a_candidate(
            pattern in "(/(topic|queue|a\\*|\\*|\\*\\*|x\\*y|[a-c]{1,2})){1,4}",
            destination in "(/(topic|queue|a|ab|x|xy|b|c|admin)){0,5}",
        ) {
            if let Ok(p) = Pattern::compile(&pattern, '/', &PatternLimits::default()) {
                let mut index = PatternIndex::new('/');
                index.insert(p.literal_prefix(), 0, ());
                if p.matches(&destination) {
                    prop_assert_eq!(index.candidates(&destination).len(), 1, "{} {}", pattern, destination);
                }
            }
        }
    }
}
