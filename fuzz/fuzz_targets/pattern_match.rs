//! Fuzz Ant patterns: compile arbitrary text as a client pattern (within the default limits)
//! and as an ACL rule, and match arbitrary destinations. Nothing may panic, and the set
//! relations must agree with matching: a destination both patterns match means they overlap,
//! a destination the covered pattern matches is matched by the one that covers it, and every
//! match (with a separator appended) starts with the literal prefix.
//!
//! Input: UTF-8 lines; the first two are patterns, the rest (up to 16) destinations. A first
//! byte that is odd selects `.` as the separator.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sockjs_gateway::stomp::pattern::{Pattern, PatternLimits};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let separator = if data.first().is_some_and(|b| b % 2 == 1) {
        '.'
    } else {
        '/'
    };
    let mut lines = text.split('\n');
    let first = lines.next().unwrap_or_default();
    let second = lines.next().unwrap_or_default();
    let limits = PatternLimits::default();
    let (Ok(a), Ok(b)) = (
        Pattern::compile(first, separator, &limits),
        Pattern::compile(second, separator, &limits),
    ) else {
        return;
    };
    let rule = Pattern::compile_rule(first, separator);
    let user = Some("alice");
    let overlaps = a.overlaps(&b);
    assert_eq!(overlaps, b.overlaps(&a), "overlap is symmetric");
    let a_covers_b = a.covers(&b);
    let rule_overlaps = rule.overlaps_as(&b, user);
    let rule_covers = rule.covers_as(&b, user);
    for dest in lines.take(16) {
        let (in_a, in_b) = (a.matches(dest), b.matches(dest));
        if in_a && in_b {
            assert!(overlaps, "{first:?} and {second:?} both match {dest:?}");
        }
        if a_covers_b && in_b {
            assert!(in_a, "{first:?} covers {second:?} but misses {dest:?}");
        }
        for (pattern, matched) in [(&a, in_a), (&b, in_b)] {
            if matched {
                let with_separator = format!("{dest}{separator}");
                assert!(with_separator.starts_with(pattern.literal_prefix()));
            }
        }
        let in_rule = rule.matches_as(dest, user);
        if in_rule && in_b {
            assert!(
                rule_overlaps,
                "rule {first:?} and {second:?} both match {dest:?}"
            );
        }
        if rule_covers && in_b {
            assert!(
                in_rule,
                "rule {first:?} covers {second:?} but misses {dest:?}"
            );
        }
    }
});
