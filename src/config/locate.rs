//! Reading a TOML config so that every problem of the file is reported at once, each with
//! its key and line.
//!
//! serde stops at the first error. So the document is parsed once into a spanned tree, the
//! configuration is deserialized from it, and on an error the key the error's span points at
//! is noted and taken out of the tree (it then falls back to its default), and the
//! configuration is deserialized again, until it succeeds. The checks that run on the
//! result add their problems; keys already reported are not reported twice. Every line of
//! a problem comes from the same tree, so a check's problem can name its line too.

use std::ops::Range;

use serde::de::DeserializeOwned;
use toml::Spanned;
use toml::de::{DeTable, DeValue};

use super::types::{Problem, closest};

/// A deserialized configuration, with the problems met on the way and where each key is.
pub struct Parsed<T> {
    /// The configuration with the keys that had problems left at their defaults; None when
    /// even that could not be built.
    pub value: Option<T>,
    /// The problems, in file order.
    pub problems: Vec<Problem>,
    /// Every key of the file with its 1-based line.
    places: Vec<(String, usize)>,
}

impl<T> Parsed<T> {
    /// The line `key` is on, or the line of its nearest enclosing key that is in the file.
    pub fn line_of(&self, key: &str) -> Option<usize> {
        let mut key = key;
        loop {
            if let Some((_, line)) = self.places.iter().find(|(k, _)| k == key) {
                return Some(*line);
            }
            key = &key[..key.rfind(['.', '['])?];
        }
    }

    /// Whether a problem was already reported for `key` or for a key that encloses it.
    pub fn reported(&self, key: &str) -> bool {
        self.problems
            .iter()
            .filter_map(|p| p.key.as_deref())
            .any(|done| {
                key == done
                    || key
                        .strip_prefix(done)
                        .is_some_and(|rest| rest.starts_with(['.', '[']))
            })
    }
}

/// One step of a key path: a table key or an array index.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Step {
    Key(String),
    Index(usize),
}

/// One key or array element of the tree.
struct Node {
    /// Its path from the root.
    steps: Vec<Step>,
    /// Where its key is written (None for an array element).
    key: Option<Range<usize>>,
    /// Where its value is written (a table's header for a `[table]`).
    value: Range<usize>,
}

/// The most attempts: each one takes a key out, so this bounds the work on a file with very
/// many broken keys (the rest are reported as they are met after a fix).
const MAX_PROBLEMS: usize = 64;

/// Deserialize `T` from `text`, gathering every key's problem.
pub fn parse<T: DeserializeOwned>(text: &str) -> Parsed<T> {
    let (mut root, syntax) = DeTable::parse_recoverable(text);
    if !syntax.is_empty() {
        let problems = syntax
            .iter()
            .map(|e| Problem {
                line: e.span().map(|s| line_at(text, s.start)),
                key: None,
                message: e.message().to_string(),
            })
            .collect();
        return Parsed {
            value: None,
            problems,
            places: Vec::new(),
        };
    }
    root.get_mut().make_owned();
    let mut nodes = Vec::new();
    collect(root.get_ref(), &mut Vec::new(), &mut nodes);
    let places = nodes
        .iter()
        .map(|n| {
            let at = n.key.as_ref().unwrap_or(&n.value).start;
            (path_text(&n.steps), line_at(text, at))
        })
        .collect();
    let mut problems: Vec<Problem> = Vec::new();
    for _ in 0..MAX_PROBLEMS {
        let error = match T::deserialize(toml::de::Deserializer::from(root.clone())) {
            Ok(value) => {
                problems.sort_by_key(|p| p.line.unwrap_or(usize::MAX));
                return Parsed {
                    value: Some(value),
                    problems,
                    places,
                };
            }
            Err(error) => error,
        };
        let line = error.span().map(|s| line_at(text, s.start));
        let node = error.span().and_then(|span| find(&nodes, &span));
        let Some(node) = node else {
            problems.push(Problem {
                line,
                key: None,
                message: error.message().to_string(),
            });
            break;
        };
        // An element of an array goes with its array: indices of the rest stay as written.
        let mut steps = node.steps.clone();
        while matches!(steps.last(), Some(Step::Index(_))) {
            steps.pop();
        }
        problems.push(Problem {
            line,
            key: Some(path_text(&node.steps)),
            message: explain(error.message()),
        });
        if steps.is_empty() || !remove(root.get_mut(), &steps) {
            break;
        }
    }
    problems.sort_by_key(|p| p.line.unwrap_or(usize::MAX));
    Parsed {
        value: None,
        problems,
        places,
    }
}

/// Every key and array element under `table`, depth first.
fn collect(table: &DeTable<'_>, at: &mut Vec<Step>, nodes: &mut Vec<Node>) {
    for (key, value) in table.iter() {
        at.push(Step::Key(key.get_ref().to_string()));
        nodes.push(Node {
            steps: at.clone(),
            key: Some(key.span()),
            value: value.span(),
        });
        collect_value(value, at, nodes);
        at.pop();
    }
}

fn collect_value(value: &Spanned<DeValue<'_>>, at: &mut Vec<Step>, nodes: &mut Vec<Node>) {
    match value.get_ref() {
        DeValue::Table(table) => collect(table, at, nodes),
        DeValue::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                at.push(Step::Index(i));
                nodes.push(Node {
                    steps: at.clone(),
                    key: None,
                    value: item.span(),
                });
                collect_value(item, at, nodes);
                at.pop();
            }
        }
        _ => {}
    }
}

/// The deepest node the error's span is the key or the value of, or failing that the
/// deepest whose value holds it.
fn find<'n>(nodes: &'n [Node], span: &Range<usize>) -> Option<&'n Node> {
    let exact = nodes
        .iter()
        .filter(|n| n.key.as_ref() == Some(span) || n.value == *span)
        .max_by_key(|n| n.steps.len());
    exact.or_else(|| {
        nodes
            .iter()
            .filter(|n| n.value.start <= span.start && span.end <= n.value.end)
            .max_by_key(|n| n.steps.len())
    })
}

/// Take the key at `steps` (which ends with a key) out of `table`.
fn remove(table: &mut DeTable<'_>, steps: &[Step]) -> bool {
    match steps {
        [Step::Key(key)] => table.remove(key.as_str()).is_some(),
        [Step::Key(key), rest @ ..] => table
            .get_mut(key.as_str())
            .is_some_and(|value| remove_in(value, rest)),
        _ => false,
    }
}

/// [`remove`] below a value: a table's key, or an array element's.
fn remove_in(value: &mut Spanned<DeValue<'_>>, steps: &[Step]) -> bool {
    match (value.get_mut(), steps) {
        (DeValue::Table(table), _) => remove(table, steps),
        (DeValue::Array(items), [Step::Index(i), rest @ ..]) => {
            items.get_mut(*i).is_some_and(|item| remove_in(item, rest))
        }
        _ => false,
    }
}

/// `service[0].heartbeat_delay` for a path.
fn path_text(steps: &[Step]) -> String {
    let mut text = String::new();
    for step in steps {
        match step {
            Step::Key(key) if text.is_empty() => text.push_str(key),
            Step::Key(key) => {
                text.push('.');
                text.push_str(key);
            }
            Step::Index(i) => text.push_str(&format!("[{i}]")),
        }
    }
    text
}

/// serde's message, with a likely intended key named for an unknown one: "unknown field
/// `respons_limit`, expected one of ..." lists every key, which hides the one meant.
fn explain(message: &str) -> String {
    let Some(rest) = message.strip_prefix("unknown field `") else {
        return message.to_string();
    };
    let Some((wrong, expected)) = rest.split_once('`') else {
        return message.to_string();
    };
    let accepted: Vec<&str> = expected.split('`').skip(1).step_by(2).collect();
    match closest(wrong, &accepted) {
        Some(meant) => format!("unknown key `{wrong}`; did you mean `{meant}`?"),
        None => format!(
            "unknown key `{wrong}`; the keys here are {}",
            accepted.join(", ")
        ),
    }
}

/// The 1-based line of byte `at`.
fn line_at(text: &str, at: usize) -> usize {
    let at = at.min(text.len());
    text.as_bytes()[..at]
        .iter()
        .filter(|b| **b == b'\n')
        .count()
        + 1
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize, Default)]
    #[serde(default, deny_unknown_fields)]
    struct Section {
        number: u32,
        name: String,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Doc {
        #[serde(default)]
        one: Section,
        #[serde(default)]
        many: Vec<Section>,
    }

    #[test]
    fn every_bad_key_is_reported_with_its_line() {
        let text = "[one]\nnumber = \"x\"\nnam = \"a\"\n\n[[many]]\nname = \"ok\"\n\n[[many]]\nnumber = -1\n";
        let parsed = parse::<Doc>(text);
        let found: Vec<(Option<usize>, Option<String>)> = parsed
            .problems
            .iter()
            .map(|p| (p.line, p.key.clone()))
            .collect();
        assert_eq!(
            found,
            [
                (Some(2), Some("one.number".into())),
                (Some(3), Some("one.nam".into())),
                (Some(9), Some("many[1].number".into())),
            ],
            "{:?}",
            parsed.problems
        );
        assert!(parsed.problems[1].message.contains("did you mean `name`"));
        let doc = parsed.value.as_ref().expect("the rest still parses");
        assert_eq!(doc.many.len(), 2);
        assert_eq!(doc.many[0].name, "ok");
        assert_eq!(doc.one.number, 0, "a broken key falls back to its default");
        assert_eq!(parsed.line_of("many[1].number"), Some(9));
        assert_eq!(parsed.line_of("many[1].missing"), Some(8));
        assert!(parsed.reported("one.number"));
        assert!(!parsed.reported("one.name"));
    }

    #[test]
    fn syntax_errors_are_reported_by_line() {
        let parsed = parse::<Doc>("[one]\nnumber = = 3\n");
        assert!(parsed.value.is_none());
        assert_eq!(parsed.problems[0].line, Some(2));
    }

    #[test]
    fn unknown_sections_are_named() {
        let parsed = parse::<Doc>("[tow]\nx = 1\n");
        assert_eq!(parsed.problems[0].key.as_deref(), Some("tow"));
        assert!(parsed.value.is_some());
    }
}
