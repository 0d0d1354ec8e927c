//! Ant-style destination patterns (spec §7.3): `*` matches within one segment, `**` any
//! number of segments, `{name}` one whole segment. A pattern is compiled once (at SUBSCRIBE,
//! or at config load for ACL rules) and then matched in time linear in the destination,
//! however it is written.
//!
//! # Why matching never backtracks
//!
//! A pattern comes from a client and is evaluated on publishes, so its cost must not depend on
//! how hostile it is. A backtracking matcher tries every split for each `**` and every position
//! for each `*`, which is exponential in their number (`/topic/**/**/…/z`, `*a*a*a…c`). Both
//! wildcards match *anything* of their kind, so no split ever has to be revisited:
//!
//! * Within a segment, a glob `L0*L1*…*Lk` matches a text iff the text starts with `L0`, ends
//!   with `Lk`, and `L1 … Lk-1` occur in that order in between. Taking the leftmost occurrence
//!   of each is always right: a later one only leaves less room for the rest. Each occurrence
//!   is found by a linear-time, constant-space substring search (`memchr::memmem`), so a
//!   segment costs O(its length + the glob's length).
//! * Across segments, `R0/**/R1/**/…/Rk` (each `Ri` a run of one-segment matchers) matches iff
//!   `R0` matches the first segments, `Rk` the last ones, and each middle run matches somewhere
//!   in between, leftmost first, for the same reason. A run of `r` matchers tried at each of
//!   `n` positions costs O(n·r) segment tests: O(P·D) overall for a pattern of P segments
//!   (bounded by [`PatternLimits`]) and a destination of D bytes.
//!
//! Matching allocates nothing.
//!
//! # Set relations, for authorization
//!
//! [`Pattern::overlaps`] (is there a destination both match?) and [`Pattern::covers`] (does
//! one match every destination the other matches?) let the ACL judge a pattern SUBSCRIBE by
//! what it *can* receive (see `acl.rs`). Both are exact:
//!
//! * Overlap is the intersection of two automata over segments: a product walk over
//!   (segment of A, segment of B) whose one-segment steps ask whether two globs share a text.
//!   Two globs with `*` share one iff their heads are prefixes of one another and their tails
//!   suffixes of one another; a glob without `*` is a literal the other must match.
//! * Containment of globs: `L(p) ⊆ L(r)` iff `r` matches `p` read as a word in which each `*`
//!   of `p` is a symbol only a `*` of `r` can absorb (instantiate each `*` of `p` with a
//!   character `r` never mentions to see why); the word is matched with the same linear
//!   matcher, the symbol being a byte UTF-8 never uses. Containment of patterns: a walk over
//!   (position in `p`, set of positions in `r`) that feeds `r` the hardest segments `p` can
//!   produce: for a one-segment matcher of `p`, a text that only the globs of `r` containing
//!   it accept; for a `**` of `p`, a segment only all-`*` globs accept. Any other choice only
//!   lets more of `r` survive. The walk is bounded ([`COVER_SEARCH_LIMIT`]); past the bound
//!   the answer is a conservative "does not cover".
//!
//! Both run once per SUBSCRIBE and rule, in time linear in the two patterns' bytes times their
//! segment counts.
//!
//! ACL rules are compiled with [`Pattern::compile_rule`], where `{user}` (anywhere in a
//! segment) stands for the caller's own name and is filled in at match time without building
//! a string; client patterns treat `{user}` like any other `{name}`.

use std::borrow::Cow;
use std::collections::{HashSet, VecDeque};
use std::fmt;

use memchr::memmem;

/// Bounds on the shape of a client's pattern, enforced by [`Pattern::compile`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PatternLimits {
    /// The most segments a pattern may have. Every segment counts, the empty one before a
    /// leading separator too: `/topic/a/*` has 4.
    pub max_segments: usize,
    /// The most `**` segments a pattern may have.
    pub max_any_segments: usize,
    /// The most `*` characters one segment may hold (a segment that is exactly `**` is counted
    /// by `max_any_segments` instead).
    pub max_stars_per_segment: usize,
}

impl Default for PatternLimits {
    fn default() -> Self {
        PatternLimits {
            max_segments: 32,
            max_any_segments: 4,
            max_stars_per_segment: 4,
        }
    }
}

/// Why a pattern was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PatternError {
    /// More segments than [`PatternLimits::max_segments`].
    #[error("pattern has {count} segments; at most {max} are allowed")]
    TooManySegments {
        /// Segments in the pattern.
        count: usize,
        /// The limit.
        max: usize,
    },
    /// More `**` than [`PatternLimits::max_any_segments`].
    #[error("pattern has {count} `**` segments; at most {max} are allowed")]
    TooManyAnySegments {
        /// `**` segments in the pattern.
        count: usize,
        /// The limit.
        max: usize,
    },
    /// A segment with more `*` than [`PatternLimits::max_stars_per_segment`].
    #[error("pattern segment {position} ({excerpt:?}) has {count} `*`; at most {max} are allowed")]
    TooManyStars {
        /// The segment's position, counting from 1.
        position: usize,
        /// The segment, cut to 40 characters.
        excerpt: String,
        /// `*` in that segment.
        count: usize,
        /// The limit.
        max: usize,
    },
}

/// How many (position, state set) pairs [`Pattern::covers`] may visit before it gives up and
/// answers "does not cover". Client patterns within the default limits stay far below it.
pub const COVER_SEARCH_LIMIT: usize = 1 << 16;

/// A piece of a block: literal text, or the caller's name (`{user}` in ACL rules).
#[derive(Debug, Clone)]
enum Part {
    /// Literal text.
    Lit(Box<str>),
    /// The caller's user name.
    User,
}

/// The text between two `*` of a glob (possibly empty).
#[derive(Debug, Clone, Default)]
struct Block {
    /// Its parts, in order; adjacent literal text is merged.
    parts: Vec<Part>,
}

impl Block {
    /// Each part's bytes, or None when a `{user}` part has no user to stand for.
    fn pieces<'a>(&'a self, user: Option<&'a str>) -> impl Iterator<Item = Option<&'a [u8]>> {
        self.parts.iter().map(move |part| match part {
            Part::Lit(text) => Some(text.as_bytes()),
            Part::User => user.map(str::as_bytes),
        })
    }

    /// The block's bytes with `{user}` filled in (for the set relations, not the hot path).
    fn bytes<'a>(&'a self, user: Option<&'a str>) -> Option<Cow<'a, [u8]>> {
        match self.parts.as_slice() {
            [] => Some(Cow::Borrowed(&[])),
            [_] => self.pieces(user).next().flatten().map(Cow::Borrowed),
            _ => {
                let mut out = Vec::new();
                for piece in self.pieces(user) {
                    out.extend_from_slice(piece?);
                }
                Some(Cow::Owned(out))
            }
        }
    }

    /// Its length in bytes, or None when it cannot be resolved.
    fn len(&self, user: Option<&str>) -> Option<usize> {
        self.pieces(user)
            .try_fold(0, |sum, piece| Some(sum + piece?.len()))
    }

    /// Whether `text` starts with the block; returns the block's length.
    fn prefix_of(&self, text: &[u8], user: Option<&str>) -> Option<usize> {
        let mut at = 0;
        for piece in self.pieces(user) {
            let piece = piece?;
            if !text[at..].starts_with(piece) {
                return None;
            }
            at += piece.len();
        }
        Some(at)
    }

    /// Where the block starts when `text` ends with it.
    fn suffix_of(&self, text: &[u8], user: Option<&str>) -> Option<usize> {
        let start = text.len().checked_sub(self.len(user)?)?;
        self.prefix_of(&text[start..], user).map(|_| start)
    }

    /// The leftmost occurrence of the block in `haystack`.
    fn find(&self, haystack: &[u8], user: Option<&str>) -> Option<usize> {
        match self.parts.as_slice() {
            [] => Some(0),
            [Part::Lit(text)] => memmem::find(haystack, text.as_bytes()),
            [Part::User] => memmem::find(haystack, user?.as_bytes()),
            _ => {
                // A block mixing literal text and `{user}` (ACL rules only): search for the
                // assembled needle, on the stack when it is short.
                let len = self.len(user)?;
                let mut stack = [0u8; 128];
                let mut heap = Vec::new();
                let needle: &mut [u8] = if len <= stack.len() {
                    &mut stack[..len]
                } else {
                    heap.resize(len, 0);
                    &mut heap
                };
                let mut at = 0;
                for piece in self.pieces(user) {
                    let piece = piece?;
                    needle[at..at + piece.len()].copy_from_slice(piece);
                    at += piece.len();
                }
                memmem::find(haystack, needle)
            }
        }
    }
}

/// A one-segment matcher: blocks separated by `*` (one block: the segment is literal).
#[derive(Debug, Clone)]
struct Glob {
    /// At least one block; `blocks.len() - 1` is the number of (collapsed) `*`.
    blocks: Vec<Block>,
}

impl Glob {
    /// The glob of one pattern segment (not `**`).
    fn parse(segment: &str, user_placeholder: bool) -> Glob {
        let whole_placeholder =
            segment.len() >= 2 && segment.starts_with('{') && segment.ends_with('}');
        if whole_placeholder && !(user_placeholder && segment == "{user}") {
            return Glob {
                blocks: vec![Block::default(), Block::default()],
            };
        }
        let mut blocks = Vec::new();
        let mut block = Block::default();
        let mut text = String::new();
        let flush = |text: &mut String, block: &mut Block| {
            if !text.is_empty() {
                block.parts.push(Part::Lit(text.as_str().into()));
                text.clear();
            }
        };
        let mut rest = segment;
        let mut after_star = false;
        while let Some(c) = rest.chars().next() {
            if c == '*' {
                if !after_star {
                    flush(&mut text, &mut block);
                    blocks.push(std::mem::take(&mut block));
                }
                after_star = true;
                rest = &rest[1..];
                continue;
            }
            after_star = false;
            if user_placeholder && let Some(tail) = rest.strip_prefix("{user}") {
                flush(&mut text, &mut block);
                block.parts.push(Part::User);
                rest = tail;
                continue;
            }
            text.push(c);
            rest = &rest[c.len_utf8()..];
        }
        flush(&mut text, &mut block);
        blocks.push(block);
        Glob { blocks }
    }

    /// Whether the glob is plain literal text.
    fn is_literal(&self) -> bool {
        match self.blocks.as_slice() {
            [block] => block.parts.iter().all(|p| matches!(p, Part::Lit(_))),
            _ => false,
        }
    }

    /// Whether one segment's text matches (see the module comment).
    fn matches(&self, text: &[u8], user: Option<&str>, meter: &mut impl Meter) -> bool {
        meter.add(text.len() + 1);
        let Some((first, rest)) = self.blocks.split_first() else {
            return false;
        };
        let Some((last, middle)) = rest.split_last() else {
            return first.prefix_of(text, user) == Some(text.len());
        };
        let Some(mut pos) = first.prefix_of(text, user) else {
            return false;
        };
        let Some(end) = last.suffix_of(&text[pos..], user).map(|s| pos + s) else {
            return false;
        };
        for block in middle {
            meter.add(end - pos + 1);
            let Some(at) = block.find(&text[pos..end], user) else {
                return false;
            };
            let Some(len) = block.len(user) else {
                return false;
            };
            pos += at + len;
        }
        true
    }

    /// Whether the glob can match anything for `user` (a `{user}` part needs a user).
    fn resolvable(&self, user: Option<&str>) -> bool {
        user.is_some()
            || self
                .blocks
                .iter()
                .all(|b| b.parts.iter().all(|p| matches!(p, Part::Lit(_))))
    }

    /// Whether the glob matches every segment (it is only `*`).
    fn is_universal(&self) -> bool {
        self.blocks.len() > 1 && self.blocks.iter().all(|b| b.parts.is_empty())
    }
}

/// A pattern segment for the set relations.
#[derive(Debug)]
enum FlatSegment<'a> {
    /// `**`.
    Any,
    /// A one-segment matcher.
    One(&'a Glob),
}

/// Counts matching work in tests; the production meter does nothing and compiles away.
trait Meter {
    /// Record `steps` units of work.
    fn add(&mut self, steps: usize);
}

impl Meter for () {
    #[inline(always)]
    fn add(&mut self, _steps: usize) {}
}

/// A compiled Ant-style destination pattern over a separator.
#[derive(Debug, Clone)]
pub struct Pattern {
    /// The pattern as written.
    source: Box<str>,
    /// The separator (`/` or `.`).
    separator: char,
    /// Runs of one-segment matchers, split at each `**` (k `**` give k + 1 runs).
    runs: Vec<Vec<Glob>>,
    /// Length of the literal prefix (see [`Pattern::literal_prefix`]).
    prefix_len: usize,
    /// Compiled as an ACL rule (`{user}` is the caller's name).
    rule: bool,
}

impl PartialEq for Pattern {
    fn eq(&self, other: &Pattern) -> bool {
        self.source == other.source && self.separator == other.separator && self.rule == other.rule
    }
}

impl Eq for Pattern {}

impl Pattern {
    /// Compile a client's pattern, refusing it when it exceeds `limits`. `{user}` is an
    /// ordinary one-segment placeholder here.
    pub fn compile(
        pattern: &str,
        separator: char,
        limits: &PatternLimits,
    ) -> Result<Pattern, PatternError> {
        check_limits(pattern, separator, limits)?;
        Ok(Pattern::build(pattern, separator, false))
    }

    /// Compile a pattern without limits: one from the configuration, or one that already
    /// passed the configured limits at SUBSCRIBE (the matcher is linear whatever the shape).
    pub fn compile_admitted(pattern: &str, separator: char) -> Pattern {
        Pattern::build(pattern, separator, false)
    }

    /// Compile an ACL rule's pattern (trusted configuration: no limits), where `{user}`
    /// anywhere in a segment stands for the caller's own name.
    pub fn compile_rule(pattern: &str, separator: char) -> Pattern {
        Pattern::build(pattern, separator, true)
    }

    fn build(source: &str, separator: char, rule: bool) -> Pattern {
        let mut runs = Vec::new();
        let mut run = Vec::new();
        let mut prefix_len = 0;
        let mut in_prefix = true;
        let mut segments = source.split(separator).peekable();
        while let Some(segment) = segments.next() {
            if segment == "**" {
                runs.push(std::mem::take(&mut run));
                in_prefix = false;
                continue;
            }
            let glob = Glob::parse(segment, rule);
            // The prefix is whole literal segments followed by their separator, so a pattern
            // that is entirely literal keeps its last segment out of it.
            if in_prefix && glob.is_literal() && segments.peek().is_some() {
                prefix_len += segment.len() + separator.len_utf8();
            } else {
                in_prefix = false;
            }
            run.push(glob);
        }
        runs.push(run);
        Pattern {
            source: source.into(),
            separator,
            runs,
            prefix_len,
            rule,
        }
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// The literal text before the first wildcard, cut back to the last separator: empty, or
    /// ending with the separator (`/topic/admin/` for `/topic/admin/*/x`), so an index keyed
    /// by it lets a publish skip the patterns that cannot match.
    ///
    /// The exact guarantee: every destination the pattern matches, *with a separator
    /// appended*, starts with it. That is, it starts with it, or it is the prefix without its
    /// trailing separator: `/topic/**` (prefix `/topic/`) matches `/topic`, because `**` may
    /// match no segment. An index lookup for a destination `D` must therefore try `""`, every
    /// prefix of `D` that ends with a separator, and `D` plus a separator.
    pub fn literal_prefix(&self) -> &str {
        &self.source[..self.prefix_len]
    }

    /// Whether a literal destination matches. Linear in the destination; no allocation.
    pub fn matches(&self, destination: &str) -> bool {
        self.matches_metered(destination, None, &mut ())
    }

    /// [`Pattern::matches`] with `{user}` of an ACL rule standing for `user` (a rule that
    /// mentions `{user}` matches nothing without one).
    pub fn matches_as(&self, destination: &str, user: Option<&str>) -> bool {
        self.matches_metered(destination, user, &mut ())
    }

    fn matches_metered(&self, dest: &str, user: Option<&str>, meter: &mut impl Meter) -> bool {
        let sep = self.separator;
        let Some((head, rest)) = self.runs.split_first() else {
            return false;
        };
        let Some((tail, middles)) = rest.split_last() else {
            // No `**`: the one run must match every segment.
            let mut cursor = Some(0);
            for glob in head {
                let Some(start) = cursor else {
                    return false;
                };
                let (segment, next) = segment_at(dest, start, sep, meter);
                if !glob.matches(segment.as_bytes(), user, meter) {
                    return false;
                }
                cursor = next;
            }
            return cursor.is_none();
        };
        meter.add(dest.len() + 1);
        let total = dest.matches(sep).count() + 1;
        let needed: usize = self.runs.iter().map(Vec::len).sum();
        if needed > total {
            return false;
        }
        // The head run on the first segments.
        let mut cursor = Some(0);
        for glob in head {
            let Some(start) = cursor else {
                return false;
            };
            let (segment, next) = segment_at(dest, start, sep, meter);
            if !glob.matches(segment.as_bytes(), user, meter) {
                return false;
            }
            cursor = next;
        }
        let mut index = head.len();
        // The tail run on the last segments, walking back from the end.
        let mut end = dest.len();
        for glob in tail.iter().rev() {
            let start = dest[..end].rfind(sep).map_or(0, |i| i + sep.len_utf8());
            meter.add(end - start + 1);
            if !glob.matches(&dest.as_bytes()[start..end], user, meter) {
                return false;
            }
            end = start.saturating_sub(sep.len_utf8());
        }
        let limit = total - tail.len();
        // Each middle run at its leftmost place in between (`**/**` leaves an empty one).
        for run in middles.iter().filter(|run| !run.is_empty()) {
            loop {
                if index + run.len() > limit {
                    return false;
                }
                let Some(start) = cursor else {
                    return false;
                };
                if let Some(after) = run_at(run, dest, start, sep, user, meter) {
                    cursor = after;
                    index += run.len();
                    break;
                }
                cursor = segment_at(dest, start, sep, meter).1;
                index += 1;
            }
        }
        true
    }

    /// Whether some destination matches both patterns (both must use the same separator).
    pub fn overlaps(&self, other: &Pattern) -> bool {
        self.overlaps_as(other, None)
    }

    /// [`Pattern::overlaps`] with `{user}` of ACL rules standing for `user`.
    pub fn overlaps_as(&self, other: &Pattern, user: Option<&str>) -> bool {
        let a = self.flat();
        let b = other.flat();
        let width = b.len() + 1;
        let mut reach = vec![false; (a.len() + 1) * width];
        reach[0] = true;
        for i in 0..=a.len() {
            for j in 0..=b.len() {
                if !reach[i * width + j] {
                    continue;
                }
                if i == a.len() && j == b.len() {
                    return true;
                }
                let (x, y) = (a.get(i), b.get(j));
                // `**` may match nothing more.
                if let Some(FlatSegment::Any) = x {
                    reach[(i + 1) * width + j] = true;
                }
                if let Some(FlatSegment::Any) = y {
                    reach[i * width + j + 1] = true;
                }
                // One more segment, matched by both.
                match (x, y) {
                    (Some(FlatSegment::One(x)), Some(FlatSegment::One(y)))
                        if globs_intersect(x, y, user) =>
                    {
                        reach[(i + 1) * width + j + 1] = true;
                    }
                    (Some(FlatSegment::Any), Some(FlatSegment::One(y))) if y.resolvable(user) => {
                        reach[i * width + j + 1] = true;
                    }
                    (Some(FlatSegment::One(x)), Some(FlatSegment::Any)) if x.resolvable(user) => {
                        reach[(i + 1) * width + j] = true;
                    }
                    _ => {}
                }
            }
        }
        false
    }

    /// Whether every destination `other` matches is matched by `self` too (both must use the
    /// same separator). Conservative (false) past [`COVER_SEARCH_LIMIT`] or for patterns of
    /// more than 127 segments.
    pub fn covers(&self, other: &Pattern) -> bool {
        self.covers_as(other, None)
    }

    /// [`Pattern::covers`] with `{user}` of ACL rules standing for `user`.
    pub fn covers_as(&self, other: &Pattern, user: Option<&str>) -> bool {
        let r = self.flat();
        let p = other.flat();
        if r.len() >= 128 {
            return false;
        }
        let bit = |j: usize| 1u128 << j;
        let accept = bit(r.len());
        let mut any_mask = 0u128;
        let mut universal = 0u128;
        for (j, segment) in r.iter().enumerate() {
            match segment {
                FlatSegment::Any => any_mask |= bit(j),
                FlatSegment::One(glob) if glob.is_universal() => universal |= bit(j),
                FlatSegment::One(_) => {}
            }
        }
        // For each one-segment matcher of `p`: the matchers of `r` that accept all it does.
        let accepted: Vec<u128> = p
            .iter()
            .map(|segment| match segment {
                FlatSegment::One(pg) => r
                    .iter()
                    .enumerate()
                    .filter(
                        |(_, s)| matches!(s, FlatSegment::One(rg) if glob_contains(rg, pg, user)),
                    )
                    .fold(0, |mask, (j, _)| mask | bit(j)),
                _ => 0,
            })
            .collect();
        let closure = |mut set: u128| {
            for j in 0..r.len() {
                if set & bit(j) != 0 && any_mask & bit(j) != 0 {
                    set |= bit(j + 1);
                }
            }
            set
        };
        let step = |set: u128, accepts: u128| {
            closure((((set & accepts) & !any_mask) << 1) | (set & any_mask))
        };
        let start = (0usize, closure(bit(0)), false);
        let mut seen: HashSet<(usize, u128, bool)> = HashSet::from([start]);
        let mut queue = VecDeque::from([start]);
        while let Some((i, set, consumed)) = queue.pop_front() {
            if seen.len() > COVER_SEARCH_LIMIT {
                return false;
            }
            let mut next = Vec::with_capacity(2);
            match p.get(i) {
                // `p` is done: a destination (at least one segment) that `r` rejects?
                None => {
                    if consumed && set & accept == 0 {
                        return false;
                    }
                }
                Some(FlatSegment::Any) => {
                    next.push((i + 1, set, consumed));
                    next.push((i, step(set, universal), true));
                }
                Some(FlatSegment::One(glob)) => {
                    if glob.resolvable(user) {
                        next.push((i + 1, step(set, accepted[i]), true));
                    }
                }
            }
            for state in next {
                if seen.insert(state) {
                    queue.push_back(state);
                }
            }
        }
        true
    }

    /// The segments in order, `**` included.
    fn flat(&self) -> Vec<FlatSegment<'_>> {
        let mut out = Vec::new();
        for (i, run) in self.runs.iter().enumerate() {
            if i > 0 {
                out.push(FlatSegment::Any);
            }
            out.extend(run.iter().map(FlatSegment::One));
        }
        out
    }
}

impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

/// Check `pattern` against `limits` before building anything.
fn check_limits(
    pattern: &str,
    separator: char,
    limits: &PatternLimits,
) -> Result<(), PatternError> {
    let segments = pattern.split(separator).count();
    if segments > limits.max_segments {
        return Err(PatternError::TooManySegments {
            count: segments,
            max: limits.max_segments,
        });
    }
    let any = pattern.split(separator).filter(|s| *s == "**").count();
    if any > limits.max_any_segments {
        return Err(PatternError::TooManyAnySegments {
            count: any,
            max: limits.max_any_segments,
        });
    }
    for (i, segment) in pattern.split(separator).enumerate() {
        let stars = segment.bytes().filter(|b| *b == b'*').count();
        if segment != "**" && stars > limits.max_stars_per_segment {
            return Err(PatternError::TooManyStars {
                position: i + 1,
                excerpt: segment.chars().take(40).collect(),
                count: stars,
                max: limits.max_stars_per_segment,
            });
        }
    }
    Ok(())
}

/// The segment starting at byte `start`, and where the next one starts (None: it was the last).
fn segment_at<'a>(
    dest: &'a str,
    start: usize,
    sep: char,
    meter: &mut impl Meter,
) -> (&'a str, Option<usize>) {
    let rest = &dest[start..];
    match rest.find(sep) {
        Some(i) => {
            meter.add(i + 1);
            (&rest[..i], Some(start + i + sep.len_utf8()))
        }
        None => {
            meter.add(rest.len() + 1);
            (rest, None)
        }
    }
}

/// Match `run` on consecutive segments from byte `start`; returns the cursor after them.
fn run_at(
    run: &[Glob],
    dest: &str,
    start: usize,
    sep: char,
    user: Option<&str>,
    meter: &mut impl Meter,
) -> Option<Option<usize>> {
    let mut cursor = Some(start);
    for glob in run {
        let (segment, next) = segment_at(dest, cursor?, sep, meter);
        if !glob.matches(segment.as_bytes(), user, meter) {
            return None;
        }
        cursor = next;
    }
    Some(cursor)
}

/// Whether two globs share a text. A glob without `*` is a literal: the other must match it.
/// Two globs with `*` share a text iff their heads (before the first `*`) are prefixes of one
/// another and their tails (after the last `*`) suffixes of one another: the longer head, every
/// middle literal of both, then the longer tail is such a text.
fn globs_intersect(x: &Glob, y: &Glob, user: Option<&str>) -> bool {
    if !x.resolvable(user) || !y.resolvable(user) {
        return false;
    }
    /// A glob's head and tail blocks.
    type Ends<'a> = (Cow<'a, [u8]>, Cow<'a, [u8]>);
    /// The head and the tail block of a glob.
    fn ends<'a>(g: &'a Glob, user: Option<&'a str>) -> Option<Ends<'a>> {
        Some((
            g.blocks.first()?.bytes(user)?,
            g.blocks.last()?.bytes(user)?,
        ))
    }
    match (x.blocks.len() > 1, y.blocks.len() > 1) {
        (false, _) => ends(x, user).is_some_and(|(text, _)| y.matches(&text, user, &mut ())),
        (true, false) => ends(y, user).is_some_and(|(text, _)| x.matches(&text, user, &mut ())),
        (true, true) => match (ends(x, user), ends(y, user)) {
            (Some((hx, tx)), Some((hy, ty))) => {
                (hx.starts_with(&hy) || hy.starts_with(&hx))
                    && (tx.ends_with(&ty) || ty.ends_with(&tx))
            }
            _ => false,
        },
    }
}

/// A byte that never occurs in UTF-8 text: it stands for a `*` of the glob whose containment
/// is tested, so that only a `*` of the containing glob can absorb it.
const STAR_SYMBOL: u8 = 0xFF;

/// Whether every text glob `p` matches is matched by glob `r`: `r` must match `p` read as a
/// word in which each `*` of `p` is a symbol only a `*` of `r` absorbs.
fn glob_contains(r: &Glob, p: &Glob, user: Option<&str>) -> bool {
    let mut word = Vec::new();
    for (i, block) in p.blocks.iter().enumerate() {
        if i > 0 {
            word.push(STAR_SYMBOL);
        }
        match block.bytes(user) {
            Some(bytes) => word.extend_from_slice(&bytes),
            None => return false,
        }
    }
    r.resolvable(user) && r.matches(&word, user, &mut ())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn compile(pattern: &str) -> Pattern {
        Pattern::compile(pattern, '/', &PatternLimits::default()).unwrap()
    }

    #[test]
    fn matches_ant_patterns() {
        let one = compile("/topic/*");
        let any = compile("/topic/**");
        let var = compile("/topic/{id}/x");
        assert!(one.matches("/topic/a"));
        assert!(one.matches("/topic/"));
        assert!(!one.matches("/topic/a/b"));
        assert!(any.matches("/topic"));
        assert!(any.matches("/topic/a"));
        assert!(any.matches("/topic/a/b"));
        assert!(!any.matches("/topics/a"));
        assert!(var.matches("/topic/7/x"));
        assert!(!var.matches("/topic/7/y"));
        assert!(compile("/topic/a*c").matches("/topic/abbc"));
        assert!(compile("/topic/a*c").matches("/topic/ac"));
        assert!(!compile("/topic/a*c").matches("/topic/abcd"));
        assert!(!compile("/topic/a*a").matches("/topic/a"));
        assert!(compile("/topic/**/x/**/y").matches("/topic/x/y"));
        assert!(compile("/topic/**/x/**/y").matches("/topic/a/x/b/c/y"));
        assert!(!compile("/topic/**/x/**/y").matches("/topic/a/y/x"));
        assert!(compile("**").matches(""));
        assert!(compile("/topic/é*ü").matches("/topic/éaü"));
        let dot = Pattern::compile("a.*", '.', &PatternLimits::default()).unwrap();
        assert!(dot.matches("a.b"));
        assert!(!dot.matches("a.b.c"));
    }

    #[test]
    fn braces_inside_a_segment_are_literal() {
        let p = compile("/topic/a{b}");
        assert!(p.matches("/topic/a{b}"));
        assert!(!p.matches("/topic/ab"));
    }

    #[test]
    fn literal_prefix_stops_at_the_first_wildcard_segment() {
        assert_eq!(
            compile("/topic/admin/*/x").literal_prefix(),
            "/topic/admin/"
        );
        assert_eq!(compile("/topic/a*c").literal_prefix(), "/topic/");
        assert_eq!(compile("/topic/**").literal_prefix(), "/topic/");
        assert_eq!(compile("/topic/{id}").literal_prefix(), "/topic/");
        assert_eq!(compile("/topic/news").literal_prefix(), "/topic/");
        assert_eq!(compile("**/x").literal_prefix(), "");
        assert_eq!(compile("*").literal_prefix(), "");
        let rule = Pattern::compile_rule("/user/{user}/**", '/');
        assert_eq!(rule.literal_prefix(), "/user/");
    }

    #[test]
    fn limits_are_enforced_with_a_message_that_names_the_problem() {
        let limits = PatternLimits::default();
        let deep = format!("/topic/{}z", "**/".repeat(11));
        let err = Pattern::compile(&deep, '/', &limits).unwrap_err();
        assert_eq!(
            err.to_string(),
            "pattern has 11 `**` segments; at most 4 are allowed"
        );
        let long = format!("/t{}", "/a".repeat(40));
        let err = Pattern::compile(&long, '/', &limits).unwrap_err();
        assert_eq!(
            err.to_string(),
            "pattern has 42 segments; at most 32 are allowed"
        );
        let stars = "/topic/*a*a*a*a*c";
        let err = Pattern::compile(stars, '/', &limits).unwrap_err();
        assert_eq!(
            err.to_string(),
            "pattern segment 3 (\"*a*a*a*a*c\") has 5 `*`; at most 4 are allowed"
        );
        assert!(Pattern::compile("/topic/**/**/**/**/x", '/', &limits).is_ok());
    }

    #[test]
    fn rules_bind_user_to_the_callers_name() {
        let rule = Pattern::compile_rule("/user/{user}/**", '/');
        assert!(rule.matches_as("/user/alice/queue/x", Some("alice")));
        assert!(!rule.matches_as("/user/bob/queue/x", Some("alice")));
        assert!(!rule.matches_as("/user/alice/queue/x", None));
        // A user name is literal text, never a wildcard.
        assert!(!rule.matches_as("/user/bob/queue/x", Some("*")));
        let inside = Pattern::compile_rule("/queue/in-{user}-*", '/');
        assert!(inside.matches_as("/queue/in-alice-1", Some("alice")));
        assert!(!inside.matches_as("/queue/in-bob-1", Some("alice")));
        let mid = Pattern::compile_rule("/queue/*x{user}y*", '/');
        assert!(mid.matches_as("/queue/1xalicey2", Some("alice")));
        assert!(!mid.matches_as("/queue/1xaliceZy2", Some("alice")));
        let long = "u".repeat(300);
        assert!(mid.matches_as(&format!("/queue/x{long}y"), Some(&long)));
        // In a client pattern `{user}` is an ordinary placeholder.
        assert!(compile("/user/{user}/x").matches("/user/anyone/x"));
    }

    #[test]
    fn overlap_and_cover_on_the_acl_examples() {
        let deny = compile("/topic/admin/**");
        for sub in [
            "/topic/**",
            "/topic/*/log",
            "/topic/{x}/log",
            "/topic/ad*/x",
            "**",
        ] {
            assert!(deny.overlaps(&compile(sub)), "{sub}");
        }
        for sub in ["/topic/news/*", "/queue/**", "/topic", "/topic/b*/**"] {
            assert!(!deny.overlaps(&compile(sub)), "{sub}");
        }
        assert!(deny.covers(&compile("/topic/admin/*/log")));
        assert!(deny.covers(&compile("/topic/admin/**")));
        assert!(!deny.covers(&compile("/topic/**")));
        assert!(compile("/topic/*/**").covers(&compile("/topic/**/x")));
        assert!(!compile("/topic/*/**").covers(&compile("/topic/**")));
        assert!(compile("*/**").covers(&compile("**")));
        assert!(compile("/a*").covers(&compile("/ab*")));
        assert!(!compile("/ab*").covers(&compile("/a*")));
        let own = Pattern::compile_rule("/user/{user}/**", '/');
        assert!(own.covers_as(&compile("/user/alice/*"), Some("alice")));
        assert!(!own.covers_as(&compile("/user/*/x"), Some("alice")));
        assert!(own.overlaps_as(&compile("/user/*/x"), Some("alice")));
        assert!(!own.overlaps_as(&compile("/user/bob/*"), Some("alice")));
    }

    /// Counts every unit of work.
    struct Steps(usize);

    impl Meter for Steps {
        fn add(&mut self, steps: usize) {
            self.0 += steps;
        }
    }

    fn steps(pattern: &Pattern, dest: &str) -> (bool, usize) {
        let mut meter = Steps(0);
        let matched = pattern.matches_metered(dest, None, &mut meter);
        (matched, meter.0)
    }

    /// No limits: the matcher must be linear whatever the pattern.
    const UNLIMITED: PatternLimits = PatternLimits {
        max_segments: usize::MAX,
        max_any_segments: usize::MAX,
        max_stars_per_segment: usize::MAX,
    };

    #[test]
    fn the_reported_freeze_is_a_few_thousand_steps() {
        let pattern =
            Pattern::compile("/topic/**/**/**/**/**/**/**/**/**/**/z", '/', &UNLIMITED).unwrap();
        let dest = format!("/topic/{}b", "a/".repeat(30));
        let (matched, n) = steps(&pattern, &dest);
        assert!(!matched);
        assert!(n < 10_000, "{n} steps");
        let glob = Pattern::compile(&format!("/t/{}c", "*a".repeat(8)), '/', &UNLIMITED).unwrap();
        let (matched, n) = steps(&glob, &format!("/t/{}", "a".repeat(40)));
        assert!(!matched);
        assert!(n < 2_000, "{n} steps");
    }

    /// The obvious backtracking matcher (exponential), as the reference.
    fn reference(pattern: &str, dest: &str) -> bool {
        fn segments(pattern: &[&str], parts: &[&str]) -> bool {
            match pattern.split_first() {
                None => parts.is_empty(),
                Some((&"**", rest)) => (0..=parts.len()).any(|k| segments(rest, &parts[k..])),
                Some((glob, rest)) => match parts.split_first() {
                    Some((part, others)) => one(glob, part) && segments(rest, others),
                    None => false,
                },
            }
        }
        fn one(glob: &str, text: &str) -> bool {
            if glob.len() >= 2 && glob.starts_with('{') && glob.ends_with('}') {
                return true;
            }
            glob_text(glob.as_bytes(), text.as_bytes())
        }
        fn glob_text(glob: &[u8], text: &[u8]) -> bool {
            match glob.split_first() {
                None => text.is_empty(),
                Some((b'*', rest)) => (0..=text.len()).any(|k| glob_text(rest, &text[k..])),
                Some((c, rest)) => text.first() == Some(c) && glob_text(rest, &text[1..]),
            }
        }
        let p: Vec<&str> = pattern.split('/').collect();
        let d: Vec<&str> = dest.split('/').collect();
        segments(&p, &d)
    }

    fn arb_segment_pattern() -> impl Strategy<Value = String> {
        prop_oneof![
            Just("**".to_string()),
            Just("{x}".to_string()),
            "[ab*]{0,4}",
        ]
    }

    fn arb_pattern(max: usize) -> impl Strategy<Value = String> {
        prop::collection::vec(arb_segment_pattern(), 1..=max).prop_map(|s| s.join("/"))
    }

    fn arb_dest(max: usize) -> impl Strategy<Value = String> {
        prop::collection::vec("[ab]{0,3}", 1..=max).prop_map(|s| s.join("/"))
    }

    /// Every destination of 1..=4 segments, each of 0..=2 characters over {a, b, z}: enough
    /// to hold a witness for any overlap or non-containment of patterns of at most 3 segments
    /// of at most 2 characters over {a, b} (a `*` of one side is witnessed by `z`).
    static SMALL_DESTINATIONS: std::sync::LazyLock<Vec<String>> =
        std::sync::LazyLock::new(all_small_destinations);

    fn all_small_destinations() -> Vec<String> {
        let mut segs = vec![String::new()];
        for a in ["a", "b", "z"] {
            segs.push(a.to_string());
            for b in ["a", "b", "z"] {
                segs.push(format!("{a}{b}"));
            }
        }
        let mut out: Vec<String> = segs.clone();
        let mut last = segs.clone();
        for _ in 1..4 {
            last = last
                .iter()
                .flat_map(|d| segs.iter().map(move |s| format!("{d}/{s}")))
                .collect();
            out.extend(last.iter().cloned());
        }
        out
    }

    fn arb_small_pattern() -> impl Strategy<Value = String> {
        let segment = prop::sample::select(vec!["", "a", "b", "ab", "*", "a*", "*a", "{x}", "**"]);
        prop::collection::vec(segment, 1..=3).prop_map(|s| s.join("/"))
    }

    /// Every text of 0..=6 characters over {a, b, z}: enough to witness an overlap of two
    /// globs of at most 3 characters over {a, b, *} (at most 6 literal characters), or a
    /// non-containment (the contained glob with each `*` replaced by `z`).
    static SMALL_TEXTS: std::sync::LazyLock<Vec<String>> = std::sync::LazyLock::new(|| {
        let mut out = vec![String::new()];
        let mut last = out.clone();
        for _ in 0..6 {
            last = last
                .iter()
                .flat_map(|t| ["a", "b", "z"].map(|c| format!("{t}{c}")))
                .collect();
            out.extend(last.iter().cloned());
        }
        out
    });

    #[test]
    fn every_pair_of_short_globs_agrees_with_brute_force() {
        let mut globs = vec![String::new()];
        for _ in 0..3 {
            let longer: Vec<String> = globs
                .iter()
                .flat_map(|g| ["a", "b", "*"].map(|c| format!("{g}{c}")))
                .collect();
            globs.extend(longer);
        }
        globs.sort();
        globs.dedup();
        // Exactly `**` is not a glob but any number of segments.
        globs.retain(|g| g != "**");
        for x in &globs {
            for y in &globs {
                let (px, py) = (compile(x), compile(y));
                let common = SMALL_TEXTS.iter().any(|t| px.matches(t) && py.matches(t));
                assert_eq!(px.overlaps(&py), common, "overlap {x} {y}");
                let covered = SMALL_TEXTS.iter().all(|t| !py.matches(t) || px.matches(t));
                assert_eq!(px.covers(&py), covered, "{x} covers {y}");
            }
        }
    }

    proptest! {
        #[test]
        fn agrees_with_the_reference_matcher(pattern in arb_pattern(5), dest in arb_dest(6)) {
            let compiled = Pattern::compile(&pattern, '/', &UNLIMITED).unwrap();
            prop_assert_eq!(compiled.matches(&dest), reference(&pattern, &dest));
            if compiled.matches(&dest) {
                let with_separator = format!("{dest}/");
                prop_assert!(with_separator.starts_with(compiled.literal_prefix()));
            }
        }

        #[test]
        fn adversarial_patterns_take_bounded_steps(
            anys in 1usize..12,
            segments in 1usize..64,
            stars in 1usize..16,
            len in 1usize..200,
        ) {
            let pattern = Pattern::compile(
                &format!("/topic/{}z", "**/".repeat(anys)), '/', &UNLIMITED).unwrap();
            let dest = format!("/topic/{}b", "a/".repeat(segments));
            let (_, n) = steps(&pattern, &dest);
            let bound = 4 * (anys + 4) * (dest.len() + 1);
            prop_assert!(n <= bound, "{} steps > {}", n, bound);

            let glob = Pattern::compile(
                &format!("/t/{}c", "*a".repeat(stars)), '/', &UNLIMITED).unwrap();
            let dest = format!("/t/{}", "a".repeat(len));
            let (_, n) = steps(&glob, &dest);
            let bound = 4 * (stars + 4) * (dest.len() + 1);
            prop_assert!(n <= bound, "{} steps > {}", n, bound);
        }

        #[test]
        fn overlap_and_cover_agree_with_brute_force(
            a in arb_small_pattern(),
            b in arb_small_pattern(),
        ) {
            let pa = compile(&a);
            let pb = compile(&b);
            let dests = &*SMALL_DESTINATIONS;
            let common = dests.iter().any(|d| pa.matches(d) && pb.matches(d));
            prop_assert_eq!(pa.overlaps(&pb), common, "overlap {} {}", a, b);
            prop_assert_eq!(pb.overlaps(&pa), common);
            let covered = dests.iter().all(|d| !pb.matches(d) || pa.matches(d));
            prop_assert_eq!(pa.covers(&pb), covered, "{} covers {}", a, b);
        }
    }
}
