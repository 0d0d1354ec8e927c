//! Ant-style subscription patterns (`*`, `**`, `{name}`) as Redis interests.
//!
//! Redis PSUBSCRIBE takes a glob whose `*` matches any run of characters, separators
//! included, while an Ant `*` stops at the separator; Redis has no way to say "any run
//! without `/`". So a pattern becomes a set of Redis interests whose union contains every
//! destination the pattern matches, and the broker's own pattern matching (which runs on
//! every local delivery anyway) removes the rest. How close the translation is:
//!
//! * **Exact**: a literal prefix followed by `**` (`/topic/**`, `/topic/a.**` with `.` as
//!   separator) becomes the literal channel of the prefix plus the glob `prefix/*`; and `**`
//!   or `/**` alone becomes `/*` (every bridged destination starts with `/`). A node then
//!   receives exactly the traffic of destinations its pattern matches.
//! * **Wider**: any other pattern (`/topic/*`, `/topic/{id}/x`, `/a/**/b`): each `*` or
//!   `{name}` becomes a glob `*`, each `**` a `*` that also absorbs one separator. The node
//!   receives, and drops, traffic of destinations such as `/topic/a/b` for `/topic/*`, but
//!   nothing outside the pattern's literal parts.
//!
//! Every bridged destination starts with `/` (the cluster refuses broker prefixes that do
//! not), so no glob can match a user channel (`{prefix}user:...`).

/// One thing a node subscribes to in Redis, without the channel prefix.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Interest {
    /// SUBSCRIBE to one channel.
    Channel(String),
    /// PSUBSCRIBE to a Redis glob.
    Glob(String),
}

/// The Redis interests covering an Ant `pattern` over `separator`, and whether they match
/// exactly the destinations the pattern does (see the module comment).
pub fn interests(pattern: &str, separator: char) -> (Vec<Interest>, bool) {
    let segments: Vec<&str> = pattern.split(separator).collect();
    let wild = |s: &str| s.contains(['*', '{']);
    if pattern == "**" || (separator == '/' && pattern == "/**") {
        return (vec![Interest::Glob("/*".into())], true);
    }
    if let Some((last, prefix)) = segments.split_last()
        && *last == "**"
        && !prefix.is_empty()
        && !prefix.iter().any(|s| wild(s))
        && pattern.starts_with('/')
    {
        let literal = prefix.join(&separator.to_string());
        let glob = format!("{}{}*", escape(&literal), escape(&separator.to_string()));
        return (vec![Interest::Channel(literal), Interest::Glob(glob)], true);
    }
    (vec![Interest::Glob(widen(&segments, separator))], false)
}

/// The general translation: a glob at least as wide as the pattern.
fn widen(segments: &[&str], separator: char) -> String {
    let sep = escape(&separator.to_string());
    let mut out = String::new();
    let mut absorb_next = false;
    for (i, segment) in segments.iter().enumerate() {
        if *segment == "**" {
            // `a/**/b` also matches `a/b`: the `*` stands for "nothing, or segments", so it
            // replaces one neighbouring separator: the one before it, or at the start (`**/b`,
            // `/**/b`) the one after it, so that a rooted glob still starts with `/`.
            if i == 1 && segments[0].is_empty() {
                out.push_str(&sep);
                absorb_next = true;
            } else if i == 0 {
                absorb_next = true;
            }
            out.push('*');
            continue;
        }
        if i > 0 && !absorb_next {
            out.push_str(&sep);
        }
        absorb_next = false;
        if segment.starts_with('{') && segment.ends_with('}') {
            out.push('*');
        } else {
            for (j, part) in segment.split('*').enumerate() {
                if j > 0 {
                    out.push('*');
                }
                out.push_str(&escape(part));
            }
        }
    }
    if !out.starts_with('/') {
        // Only destinations starting with `/` cross nodes; a pattern that does not start
        // with one can still match them through a leading wildcard, so take them all.
        return "/*".into();
    }
    out
}

/// `text` with Redis glob characters escaped.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// Whether Redis would deliver `channel` to the glob `pattern`, for the globs [`interests`]
/// makes (`*` and `\` escapes; `?` as one byte).
pub fn glob_matches(pattern: &[u8], channel: &[u8]) -> bool {
    match pattern.split_first() {
        None => channel.is_empty(),
        Some((b'*', rest)) => (0..=channel.len()).any(|i| glob_matches(rest, &channel[i..])),
        Some((b'?', rest)) => !channel.is_empty() && glob_matches(rest, &channel[1..]),
        Some((b'\\', rest)) if !rest.is_empty() => {
            channel.first() == Some(&rest[0]) && glob_matches(&rest[1..], &channel[1..])
        }
        Some((&c, rest)) => channel.first() == Some(&c) && glob_matches(rest, &channel[1..]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stomp::destination::Pattern;
    use proptest::prelude::*;

    fn covered(interests: &[Interest], destination: &str) -> bool {
        interests.iter().any(|i| match i {
            Interest::Channel(c) => c == destination,
            Interest::Glob(g) => glob_matches(g.as_bytes(), destination.as_bytes()),
        })
    }

    #[test]
    fn trailing_double_star_is_exact() {
        let (i, exact) = interests("/topic/**", '/');
        assert!(exact);
        assert_eq!(
            i,
            vec![
                Interest::Channel("/topic".into()),
                Interest::Glob("/topic/*".into())
            ]
        );
        let (i, exact) = interests("/topic/a.**", '.');
        assert!(exact);
        assert_eq!(i[1], Interest::Glob("/topic/a.*".into()));
        assert_eq!(interests("**", '/').0, vec![Interest::Glob("/*".into())]);
        assert_eq!(interests("/**", '/').0, vec![Interest::Glob("/*".into())]);
    }

    #[test]
    fn other_patterns_widen() {
        assert_eq!(
            interests("/topic/*", '/'),
            (vec![Interest::Glob("/topic/*".into())], false)
        );
        assert_eq!(
            interests("/topic/{id}/x", '/').0[0],
            Interest::Glob("/topic/*/x".into())
        );
        assert_eq!(
            interests("/a/**/b", '/').0[0],
            Interest::Glob("/a*/b".into())
        );
        assert_eq!(interests("/**/b", '/').0[0], Interest::Glob("/*b".into()));
        assert_eq!(
            interests("/t/a?[x]*", '/').0[0],
            Interest::Glob("/t/a\\?\\[x\\]*".into())
        );
        assert_eq!(interests("*/b", '/').0[0], Interest::Glob("/*".into()));
    }

    #[test]
    fn glob_matching_follows_redis() {
        assert!(glob_matches(b"/topic/*", b"/topic/a/b"));
        assert!(!glob_matches(b"/topic/*", b"/topic"));
        assert!(glob_matches(b"a\\*b", b"a*b"));
        assert!(!glob_matches(b"a\\*b", b"axb"));
        assert!(glob_matches(b"a?c", b"abc"));
    }

    fn segment() -> impl Strategy<Value = String> {
        prop_oneof![
            Just("**".to_string()),
            Just("*".to_string()),
            Just("{id}".to_string()),
            "[ab]{1,2}",
            "[ab]\\*[ab]",
        ]
    }

    proptest! {
        // The guarantee the broker's local filter relies on: whatever the pattern matches
        // (among destinations that cross nodes), Redis delivers.
        #[test]
        fn interests_cover_every_matching_destination(
            segments in proptest::collection::vec(segment(), 1..5),
            parts in proptest::collection::vec("[ab]{0,2}", 0..5),
            rooted in any::<bool>(),
            dot in any::<bool>(),
        ) {
            let sep = if dot { '.' } else { '/' };
            let joined = segments.join(&sep.to_string());
            let pattern = if rooted { format!("{sep}{joined}") } else { joined };
            let destination = format!("/{}", parts.join(&sep.to_string()));
            let (interests, exact) = interests(&pattern, sep);
            let matches = Pattern::compile_admitted(&pattern, sep).matches(&destination);
            if matches {
                prop_assert!(covered(&interests, &destination), "{pattern} {destination} {interests:?}");
            }
            if exact {
                prop_assert_eq!(matches, covered(&interests, &destination), "{} {}", pattern, destination);
            }
        }
    }
}
