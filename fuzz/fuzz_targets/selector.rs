//! Fuzz the SUBSCRIBE selector parser: arbitrary text must never panic; whatever parses must
//! print a canonical form that parses back to the same selector, and evaluation against
//! headers taken from the input must not panic either, nor select a message together with
//! the selector's negation.
//!
//! Input: the selector on the first line; each later line `name:value` is a header.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sockjs_gateway::stomp::selector::Selector;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut lines = text.split('\n');
    let source = lines.next().unwrap_or_default();
    let Ok(selector) = Selector::parse(source) else {
        return;
    };
    let printed = selector.to_string();
    assert_eq!(
        Selector::parse(&printed).as_ref(),
        Ok(&selector),
        "{source:?} printed as {printed:?}"
    );
    let headers: Vec<(String, String)> = lines
        .take(32)
        .filter_map(|line| line.split_once(':'))
        .map(|(n, v)| (n.to_owned(), v.to_owned()))
        .collect();
    let selected = selector.matches(&headers);
    if let Ok(negated) = Selector::parse(&format!("!({printed})")) {
        assert!(!(selected && negated.matches(&headers)), "{printed:?}");
    }
});
