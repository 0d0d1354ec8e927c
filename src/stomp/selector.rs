//! Subscription selectors (spec §7.3): a small boolean expression over a message's headers,
//! given in the SUBSCRIBE `selector` header when `[stomp] selectors = true`. It is parsed once,
//! at SUBSCRIBE, and evaluated for each delivery without allocating.
//!
//! ```text
//! headers.type == 'alert' && headers.priority > 3
//! headers['x-region'] in ('eu', 'us') || !(headers.test != null)
//! ```
//!
//! # Grammar
//!
//! ```text
//! selector   = or
//! or         = and *( ("||" / "or") and )
//! and        = unary *( ("&&" / "and") unary )
//! unary      = ("!" / "not") unary / "(" or ")" / comparison
//! comparison = header ( op literal / "in" "(" literal *( "," literal ) ")" )
//! header     = "headers" "." name / "headers" "[" string "]"
//! name       = (ALPHA / "_") *(ALPHA / DIGIT / "_" / "-")
//! op         = "==" / "!=" / "<" / "<=" / ">" / ">="
//! literal    = string / number / "null"
//! string     = "'" chars "'" / DQUOTE chars DQUOTE      ; escapes: \\  \'  \"
//! number     = ["-" / "+"] (1*DIGIT ["." *DIGIT] / "." 1*DIGIT) [("e" / "E") ["-" / "+"] 1*DIGIT]
//! ```
//!
//! Keywords (`and`, `or`, `not`, `in`, `null`) are case-insensitive, as in Spring's SpEL
//! selectors. `!` and `not` bind tighter than `&&`, which binds tighter than `||`.
//!
//! # Meaning
//!
//! A header is looked up by exact name among the message's user headers (the first
//! occurrence wins). `==` with a string compares exactly; with a number, numerically (a value
//! that is not a number is simply not equal); `== null` is true when the header is absent.
//! `!=` is the negation of `==`. `<`, `<=`, `>`, `>=` compare numerically with a number and
//! byte-wise with a string. `in` is `==` against any item. `&&` and `||` evaluate left to right
//! and stop once the result is known.
//!
//! An ordering comparison on an absent header, or a numeric one on a value that is not a
//! number, *fails*, and a selector whose evaluation fails does not deliver the message (spec
//! §7.3), whatever `!` or `||` surround it: `!(headers.p > 3)` does not select a message
//! without `p`.
//!
//! # Bounds and printing
//!
//! At most [`MAX_DEPTH`] levels of parentheses and negations, and [`MAX_TERMS`] comparisons
//! (each `in` item counts); the text itself is bounded by the frame's header line limit.
//! [`Selector`]'s `Display` prints a canonical form that parses back to the same selector.

use std::fmt;

/// The deepest nesting of parentheses and negations.
pub const MAX_DEPTH: usize = 32;

/// The most comparisons one selector may hold (each item of an `in` list counts).
pub const MAX_TERMS: usize = 128;

/// Why a selector does not parse. Offsets count bytes from the start of the selector.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SelectorError {
    /// Nothing but whitespace.
    #[error("the selector is empty")]
    Empty,
    /// A token that does not fit where it is.
    #[error("unexpected {found} at offset {offset}; expected {expected}")]
    Unexpected {
        /// Where it starts.
        offset: usize,
        /// What was found, quoted and cut to 40 characters.
        found: String,
        /// What would have fit.
        expected: &'static str,
    },
    /// The text ended in the middle of the expression.
    #[error("the selector ends early; expected {expected}")]
    UnexpectedEnd {
        /// What would have fit.
        expected: &'static str,
    },
    /// A character no token starts with (or `=`, `&`, `|` alone).
    #[error("unexpected character {found:?} at offset {offset}{hint}")]
    BadCharacter {
        /// Where it is.
        offset: usize,
        /// The character.
        found: char,
        /// A suggestion, when there is an obvious one.
        hint: &'static str,
    },
    /// A string without its closing quote.
    #[error("unterminated string starting at offset {offset}")]
    UnterminatedString {
        /// Where the string starts.
        offset: usize,
    },
    /// A backslash followed by something other than `\`, `'` or `"`.
    #[error("unknown escape at offset {offset}; only \\\\, \\' and \\\" are defined")]
    BadEscape {
        /// Where the backslash is.
        offset: usize,
    },
    /// A number too large for a double.
    #[error("the number at offset {offset} is out of range")]
    NumberOutOfRange {
        /// Where the number starts.
        offset: usize,
    },
    /// `null` with `<`, `<=`, `>` or `>=`.
    #[error("null at offset {offset} can only be compared with == or != (or listed in `in`)")]
    NullOrdering {
        /// Where `null` is.
        offset: usize,
    },
    /// `headers['']`.
    #[error("empty header name at offset {offset}")]
    EmptyHeaderName {
        /// Where the name's string starts.
        offset: usize,
    },
    /// Parentheses and negations nested too deep.
    #[error("parentheses and negations are nested more than {max} levels deep")]
    TooDeep {
        /// [`MAX_DEPTH`].
        max: usize,
    },
    /// Too many comparisons.
    #[error("more than {max} comparisons (each `in` item counts)")]
    TooManyTerms {
        /// [`MAX_TERMS`].
        max: usize,
    },
}

/// A parsed selector.
#[derive(Debug, Clone, PartialEq)]
pub struct Selector {
    /// The expression.
    expr: Expr,
}

/// A node of the expression. `Or` and `And` are flat (never directly nested in their own
/// kind) and have at least two items, so each selector has one canonical tree.
#[derive(Debug, Clone, PartialEq)]
enum Expr {
    /// Any item holds.
    Or(Vec<Expr>),
    /// Every item holds.
    And(Vec<Expr>),
    /// The item does not hold.
    Not(Box<Expr>),
    /// `header op value`.
    Compare {
        /// The header name.
        header: String,
        /// The operator.
        op: Op,
        /// The literal.
        value: Value,
    },
    /// `header in (values)`.
    In {
        /// The header name.
        header: String,
        /// The literals (at least one).
        values: Vec<Value>,
    },
}

/// A comparison operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

impl Op {
    fn as_str(self) -> &'static str {
        match self {
            Op::Eq => "==",
            Op::Ne => "!=",
            Op::Lt => "<",
            Op::Le => "<=",
            Op::Gt => ">",
            Op::Ge => ">=",
        }
    }
}

/// A literal.
#[derive(Debug, Clone, PartialEq)]
enum Value {
    /// A string.
    Str(String),
    /// A finite number.
    Num(f64),
    /// `null`: the header is absent.
    Null,
}

/// Evaluation failed (see the module comment): the message is not delivered.
struct Failed;

impl Selector {
    /// Parse a selector.
    pub fn parse(text: &str) -> Result<Selector, SelectorError> {
        let tokens = lex(text)?;
        if tokens.is_empty() {
            return Err(SelectorError::Empty);
        }
        let mut parser = Parser {
            tokens,
            pos: 0,
            terms: 0,
        };
        let expr = parser.or(0)?;
        if let Some(token) = parser.tokens.get(parser.pos) {
            return Err(token.unexpected("`&&`, `||` or the end"));
        }
        Ok(Selector { expr })
    }

    /// Whether a message with these user headers is selected. Allocates nothing.
    pub fn matches(&self, headers: &[(String, String)]) -> bool {
        matches!(self.expr.eval(headers), Ok(true))
    }
}

impl Expr {
    fn eval(&self, headers: &[(String, String)]) -> Result<bool, Failed> {
        match self {
            Expr::Or(items) => {
                for item in items {
                    if item.eval(headers)? {
                        return Ok(true);
                    }
                }
                Ok(false)
            }
            Expr::And(items) => {
                for item in items {
                    if !item.eval(headers)? {
                        return Ok(false);
                    }
                }
                Ok(true)
            }
            Expr::Not(item) => item.eval(headers).map(|b| !b),
            Expr::Compare { header, op, value } => compare(lookup(headers, header), *op, value),
            Expr::In { header, values } => {
                let found = lookup(headers, header);
                Ok(values.iter().any(|v| equals(found, v)))
            }
        }
    }
}

/// The first value of `name`.
fn lookup<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
}

fn equals(found: Option<&str>, value: &Value) -> bool {
    match (found, value) {
        (None, Value::Null) => true,
        (None, _) | (Some(_), Value::Null) => false,
        (Some(text), Value::Str(s)) => text == s,
        (Some(text), Value::Num(n)) => number(text) == Some(*n),
    }
}

fn compare(found: Option<&str>, op: Op, value: &Value) -> Result<bool, Failed> {
    let ordering = match op {
        Op::Eq => return Ok(equals(found, value)),
        Op::Ne => return Ok(!equals(found, value)),
        _ => match (found, value) {
            (Some(text), Value::Str(s)) => text.cmp(s.as_str()),
            (Some(text), Value::Num(n)) => {
                number(text).and_then(|x| x.partial_cmp(n)).ok_or(Failed)?
            }
            _ => return Err(Failed),
        },
    };
    Ok(match op {
        Op::Lt => ordering.is_lt(),
        Op::Le => ordering.is_le(),
        Op::Gt => ordering.is_gt(),
        _ => ordering.is_ge(),
    })
}

/// A header value as a number, when it is written as one (the `number` rule).
fn number(text: &str) -> Option<f64> {
    (number_len(text.as_bytes()) == Some(text.len()))
        .then(|| text.parse::<f64>().ok())
        .flatten()
        .filter(|x| x.is_finite())
}

/// The length of the `number` at the start of `bytes`, if one starts there.
fn number_len(bytes: &[u8]) -> Option<usize> {
    let digits = |from: usize| {
        bytes[from.min(bytes.len())..]
            .iter()
            .take_while(|b| b.is_ascii_digit())
            .count()
    };
    let mut at = usize::from(matches!(bytes.first(), Some(b'-' | b'+')));
    let whole = digits(at);
    at += whole;
    let mut fraction = 0;
    if bytes.get(at) == Some(&b'.') {
        fraction = digits(at + 1);
        if whole == 0 && fraction == 0 {
            return None;
        }
        at += 1 + fraction;
    }
    if whole == 0 && fraction == 0 {
        return None;
    }
    if matches!(bytes.get(at), Some(b'e' | b'E')) {
        let sign = usize::from(matches!(bytes.get(at + 1), Some(b'-' | b'+')));
        let exponent = digits(at + 1 + sign);
        if exponent > 0 {
            at += 1 + sign + exponent;
        }
    }
    Some(at)
}

/// A lexical token.
#[derive(Debug, Clone, PartialEq)]
enum Tok {
    LParen,
    RParen,
    LBracket,
    RBracket,
    Comma,
    Dot,
    AndAnd,
    OrOr,
    Bang,
    Cmp(Op),
    Word(String),
    Str(String),
    Num(f64),
}

/// A token and where it starts.
#[derive(Debug, Clone)]
struct Spanned {
    tok: Tok,
    offset: usize,
}

impl Spanned {
    fn unexpected(&self, expected: &'static str) -> SelectorError {
        let found = match &self.tok {
            Tok::Word(w) => format!("`{}`", cut(w)),
            Tok::Str(s) => format!("string '{}'", cut(s)),
            Tok::Num(n) => format!("number {}", NumText(*n)),
            other => format!("`{}`", token_text(other)),
        };
        SelectorError::Unexpected {
            offset: self.offset,
            found,
            expected,
        }
    }

    fn is_keyword(&self, keyword: &str) -> bool {
        matches!(&self.tok, Tok::Word(w) if w.eq_ignore_ascii_case(keyword))
    }
}

fn cut(text: &str) -> String {
    text.chars().take(40).collect()
}

fn token_text(tok: &Tok) -> &'static str {
    match tok {
        Tok::LParen => "(",
        Tok::RParen => ")",
        Tok::LBracket => "[",
        Tok::RBracket => "]",
        Tok::Comma => ",",
        Tok::Dot => ".",
        Tok::AndAnd => "&&",
        Tok::OrOr => "||",
        Tok::Bang => "!",
        Tok::Cmp(op) => op.as_str(),
        Tok::Word(_) | Tok::Str(_) | Tok::Num(_) => "token",
    }
}

fn is_name_start(b: u8) -> bool {
    b.is_ascii_alphabetic() || b == b'_'
}

fn is_name_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b'-'
}

fn lex(text: &str) -> Result<Vec<Spanned>, SelectorError> {
    let bytes = text.as_bytes();
    let mut tokens = Vec::new();
    let mut at = 0;
    while let Some(&b) = bytes.get(at) {
        let start = at;
        let next = bytes.get(at + 1).copied();
        let (tok, len) = match b {
            b' ' | b'\t' | b'\r' | b'\n' => {
                at += 1;
                continue;
            }
            b'(' => (Tok::LParen, 1),
            b')' => (Tok::RParen, 1),
            b'[' => (Tok::LBracket, 1),
            b']' => (Tok::RBracket, 1),
            b',' => (Tok::Comma, 1),
            b'&' if next == Some(b'&') => (Tok::AndAnd, 2),
            b'|' if next == Some(b'|') => (Tok::OrOr, 2),
            b'=' if next == Some(b'=') => (Tok::Cmp(Op::Eq), 2),
            b'!' if next == Some(b'=') => (Tok::Cmp(Op::Ne), 2),
            b'!' => (Tok::Bang, 1),
            b'<' if next == Some(b'=') => (Tok::Cmp(Op::Le), 2),
            b'<' => (Tok::Cmp(Op::Lt), 1),
            b'>' if next == Some(b'=') => (Tok::Cmp(Op::Ge), 2),
            b'>' => (Tok::Cmp(Op::Gt), 1),
            b'\'' | b'"' => {
                let (value, len) = lex_string(text, start)?;
                (Tok::Str(value), len)
            }
            b'0'..=b'9' | b'.' | b'-' | b'+' if number_len(&bytes[start..]).is_some() => {
                let len = number_len(&bytes[start..]).unwrap_or(1);
                let value = number(&text[start..start + len])
                    .ok_or(SelectorError::NumberOutOfRange { offset: start })?;
                (Tok::Num(value), len)
            }
            b'.' => (Tok::Dot, 1),
            b if is_name_start(b) => {
                let len = bytes[start..]
                    .iter()
                    .take_while(|b| is_name_char(**b))
                    .count();
                (Tok::Word(text[start..start + len].to_owned()), len)
            }
            _ => {
                let found = text[start..].chars().next().unwrap_or('?');
                let hint = match found {
                    '=' => "; compare with ==",
                    '&' => "; use && (or and)",
                    '|' => "; use || (or or)",
                    _ => "",
                };
                return Err(SelectorError::BadCharacter {
                    offset: start,
                    found,
                    hint,
                });
            }
        };
        tokens.push(Spanned { tok, offset: start });
        at = start + len;
    }
    Ok(tokens)
}

/// A quoted string starting at `start`: its value and its length with the quotes.
fn lex_string(text: &str, start: usize) -> Result<(String, usize), SelectorError> {
    let quote = text.as_bytes()[start];
    let mut value = String::new();
    let mut chars = text[start + 1..].char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some((_, e @ ('\\' | '\'' | '"'))) => value.push(e),
                Some(_) => {
                    return Err(SelectorError::BadEscape {
                        offset: start + 1 + i,
                    });
                }
                None => break,
            },
            c if c as u32 == u32::from(quote) => return Ok((value, i + 2)),
            c => value.push(c),
        }
    }
    Err(SelectorError::UnterminatedString { offset: start })
}

/// A recursive-descent parser over the tokens.
struct Parser {
    /// The tokens.
    tokens: Vec<Spanned>,
    /// The next token.
    pos: usize,
    /// Comparisons so far.
    terms: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Spanned> {
        self.tokens.get(self.pos)
    }

    fn next(&mut self, expected: &'static str) -> Result<Spanned, SelectorError> {
        let token = self
            .tokens
            .get(self.pos)
            .cloned()
            .ok_or(SelectorError::UnexpectedEnd { expected })?;
        self.pos += 1;
        Ok(token)
    }

    fn expect(&mut self, tok: Tok, expected: &'static str) -> Result<(), SelectorError> {
        let token = self.next(expected)?;
        if token.tok == tok {
            Ok(())
        } else {
            Err(token.unexpected(expected))
        }
    }

    fn or(&mut self, depth: usize) -> Result<Expr, SelectorError> {
        let mut items = vec![self.and(depth)?];
        while let Some(token) = self.peek() {
            if token.tok != Tok::OrOr && !token.is_keyword("or") {
                break;
            }
            self.pos += 1;
            items.push(self.and(depth)?);
        }
        Ok(flatten(items, true))
    }

    fn and(&mut self, depth: usize) -> Result<Expr, SelectorError> {
        let mut items = vec![self.unary(depth)?];
        while let Some(token) = self.peek() {
            if token.tok != Tok::AndAnd && !token.is_keyword("and") {
                break;
            }
            self.pos += 1;
            items.push(self.unary(depth)?);
        }
        Ok(flatten(items, false))
    }

    fn unary(&mut self, depth: usize) -> Result<Expr, SelectorError> {
        let Some(token) = self.peek() else {
            return Err(SelectorError::UnexpectedEnd {
                expected: "a comparison, `!` or `(`",
            });
        };
        let negation = token.tok == Tok::Bang || token.is_keyword("not");
        let group = token.tok == Tok::LParen;
        if (negation || group) && depth >= MAX_DEPTH {
            return Err(SelectorError::TooDeep { max: MAX_DEPTH });
        }
        if negation {
            self.pos += 1;
            return Ok(Expr::Not(Box::new(self.unary(depth + 1)?)));
        }
        if group {
            self.pos += 1;
            let inner = self.or(depth + 1)?;
            self.expect(Tok::RParen, "`)`")?;
            return Ok(inner);
        }
        self.comparison()
    }

    fn comparison(&mut self) -> Result<Expr, SelectorError> {
        let header = self.header()?;
        let token = self.next("a comparison operator or `in`")?;
        if token.is_keyword("in") {
            self.expect(Tok::LParen, "`(` after `in`")?;
            let mut values = Vec::new();
            loop {
                values.push(self.literal()?.0);
                self.count_term()?;
                let token = self.next("`,` or `)`")?;
                match token.tok {
                    Tok::Comma => continue,
                    Tok::RParen => break,
                    _ => return Err(token.unexpected("`,` or `)`")),
                }
            }
            return Ok(Expr::In { header, values });
        }
        let Tok::Cmp(op) = token.tok else {
            return Err(token.unexpected("a comparison operator or `in`"));
        };
        let (value, offset) = self.literal()?;
        if value == Value::Null && !matches!(op, Op::Eq | Op::Ne) {
            return Err(SelectorError::NullOrdering { offset });
        }
        self.count_term()?;
        Ok(Expr::Compare { header, op, value })
    }

    fn count_term(&mut self) -> Result<(), SelectorError> {
        self.terms += 1;
        if self.terms > MAX_TERMS {
            return Err(SelectorError::TooManyTerms { max: MAX_TERMS });
        }
        Ok(())
    }

    fn header(&mut self) -> Result<String, SelectorError> {
        const EXPECTED: &str = "`headers.<name>` or `headers['<name>']`";
        let token = self.next(EXPECTED)?;
        if !matches!(&token.tok, Tok::Word(w) if w == "headers") {
            return Err(token.unexpected(EXPECTED));
        }
        let token = self.next("`.` or `[` after `headers`")?;
        match token.tok {
            Tok::Dot => {
                let name = self.next("a header name")?;
                match name.tok {
                    Tok::Word(w) => Ok(w),
                    _ => Err(name.unexpected("a header name")),
                }
            }
            Tok::LBracket => {
                let name = self.next("a quoted header name")?;
                let Tok::Str(text) = name.tok else {
                    return Err(name.unexpected("a quoted header name"));
                };
                if text.is_empty() {
                    return Err(SelectorError::EmptyHeaderName {
                        offset: name.offset,
                    });
                }
                self.expect(Tok::RBracket, "`]`")?;
                Ok(text)
            }
            _ => Err(token.unexpected("`.` or `[` after `headers`")),
        }
    }

    fn literal(&mut self) -> Result<(Value, usize), SelectorError> {
        const EXPECTED: &str = "a string, a number or null";
        let token = self.next(EXPECTED)?;
        let value = match token.tok {
            Tok::Str(ref s) => Value::Str(s.clone()),
            Tok::Num(n) => Value::Num(n),
            _ if token.is_keyword("null") => Value::Null,
            _ => return Err(token.unexpected(EXPECTED)),
        };
        Ok((value, token.offset))
    }
}

/// `items` joined by `||` (`or`) or `&&`, flattening nested nodes of the same kind.
fn flatten(items: Vec<Expr>, or: bool) -> Expr {
    let mut flat = Vec::with_capacity(items.len());
    for item in items {
        match item {
            Expr::Or(inner) if or => flat.extend(inner),
            Expr::And(inner) if !or => flat.extend(inner),
            other => flat.push(other),
        }
    }
    if flat.len() == 1 {
        return flat.remove(0);
    }
    if or { Expr::Or(flat) } else { Expr::And(flat) }
}

impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.expr)
    }
}

impl fmt::Display for Expr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Expr::Or(items) => {
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        f.write_str(" || ")?;
                    }
                    write!(f, "{item}")?;
                }
                Ok(())
            }
            Expr::And(items) => {
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        f.write_str(" && ")?;
                    }
                    match item {
                        Expr::Or(_) => write!(f, "({item})")?,
                        _ => write!(f, "{item}")?,
                    }
                }
                Ok(())
            }
            Expr::Not(item) => match **item {
                Expr::Not(_) => write!(f, "!{item}"),
                _ => write!(f, "!({item})"),
            },
            Expr::Compare { header, op, value } => {
                write!(f, "{} {} {value}", HeaderRef(header), op.as_str())
            }
            Expr::In { header, values } => {
                write!(f, "{} in (", HeaderRef(header))?;
                for (i, value) in values.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{value}")?;
                }
                f.write_str(")")
            }
        }
    }
}

/// A header reference as written: `headers.name`, or `headers['...']` for other names.
struct HeaderRef<'a>(&'a str);

impl fmt::Display for HeaderRef<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let bytes = self.0.as_bytes();
        let plain = bytes.first().is_some_and(|b| is_name_start(*b))
            && bytes.iter().all(|b| is_name_char(*b));
        if plain {
            write!(f, "headers.{}", self.0)
        } else {
            write!(f, "headers[{}]", Quoted(self.0))
        }
    }
}

/// A string literal: single quotes, `\` and `'` escaped.
struct Quoted<'a>(&'a str);

impl fmt::Display for Quoted<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("'")?;
        for c in self.0.chars() {
            if c == '\\' || c == '\'' {
                f.write_str("\\")?;
            }
            write!(f, "{c}")?;
        }
        f.write_str("'")
    }
}

/// A number in the shortest form that reads back to the same value.
struct NumText(f64);

impl fmt::Display for NumText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let plain = self.0.to_string();
        if plain.len() <= 24 {
            f.write_str(&plain)
        } else {
            write!(f, "{:e}", self.0)
        }
    }
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Str(s) => write!(f, "{}", Quoted(s)),
            Value::Num(n) => write!(f, "{}", NumText(*n)),
            Value::Null => f.write_str("null"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn headers(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect()
    }

    fn selects(selector: &str, pairs: &[(&str, &str)]) -> bool {
        Selector::parse(selector)
            .unwrap_or_else(|e| panic!("{selector}: {e}"))
            .matches(&headers(pairs))
    }

    #[test]
    fn evaluates_the_spec_example() {
        let s = "headers.type == 'alert' && headers.priority > 3";
        assert!(selects(s, &[("type", "alert"), ("priority", "5")]));
        assert!(!selects(s, &[("type", "alert"), ("priority", "3")]));
        assert!(!selects(s, &[("type", "info"), ("priority", "9")]));
        assert!(!selects(s, &[("type", "alert")]));
        assert!(!selects(s, &[("type", "alert"), ("priority", "high")]));
    }

    #[test]
    fn operators_literals_and_precedence() {
        let h = [
            ("a", "1"),
            ("b", "x"),
            ("content-type", "text/plain"),
            ("e", "2.5e1"),
        ];
        for (selector, expected) in [
            ("headers.a == 1", true),
            ("headers.a == 1.0", true),
            ("headers.a == '1'", true),
            ("headers.a == '1.0'", false),
            ("headers.a != 2", true),
            ("headers.a < 2 && headers.a <= 1 && headers.a >= 1", true),
            ("headers.e > 24 && headers.e < 26", true),
            ("headers.b > 'w' && headers.b < 'y'", true),
            ("headers.b == 1", false),
            ("headers.b != 1", true),
            ("headers.content-type == 'text/plain'", true),
            (
                "headers['content-type'] in ('text/html', 'text/plain')",
                true,
            ),
            ("headers.b in (1, 'y', null)", false),
            ("headers.missing in (1, null)", true),
            ("headers.missing == null", true),
            ("headers.a != null", true),
            ("headers.missing != 'x'", true),
            ("!(headers.a == 1) || headers.b == 'x'", true),
            ("!headers.a == 1", false),
            ("not headers.a == 2 and headers.b == 'x'", true),
            ("headers.a == 2 || headers.b == 'x' && headers.a == 1", true),
            (
                "(headers.a == 2 || headers.b == 'x') && headers.a == 2",
                false,
            ),
            ("headers.a == 2 OR headers.a == 1", true),
            ("headers.b == \"x\"", true),
            ("headers.a == -1 || headers.a == +1", true),
            ("headers.a > .5", true),
            (
                "headers.a == 1. && headers.a == 1.e0 && headers.a == 10e-1",
                true,
            ),
        ] {
            assert_eq!(selects(selector, &h), expected, "{selector}");
        }
    }

    #[test]
    fn a_failed_evaluation_never_selects() {
        for selector in [
            "headers.p > 3",
            "!(headers.p > 3)",
            "!(headers.b > 3)",
            "headers.p < 'a' || headers.b == 'x'",
        ] {
            assert!(!selects(selector, &[("b", "x")]), "{selector}");
        }
        // Short-circuit: the failing side is never evaluated.
        assert!(selects("headers.b == 'x' || headers.p > 3", &[("b", "x")]));
        assert!(!selects("headers.b == 'y' && headers.p > 3", &[("b", "x")]));
    }

    #[test]
    fn the_first_header_occurrence_wins() {
        assert!(selects("headers.a == 1", &[("a", "1"), ("a", "2")]));
    }

    #[test]
    fn errors_say_what_was_wrong_and_where() {
        for (selector, message) in [
            ("", "the selector is empty"),
            ("   ", "the selector is empty"),
            (
                "headers.a = 1",
                "unexpected character '=' at offset 10; compare with ==",
            ),
            (
                "headers.a == 'x",
                "unterminated string starting at offset 13",
            ),
            (
                "headers.a == 'x\\n'",
                "unknown escape at offset 15; only \\\\, \\' and \\\" are defined",
            ),
            (
                "headers.a ==",
                "the selector ends early; expected a string, a number or null",
            ),
            (
                "headers.a > null",
                "null at offset 12 can only be compared with == or != (or listed in `in`)",
            ),
            (
                "type == 'alert'",
                "unexpected `type` at offset 0; expected `headers.<name>` or `headers['<name>']`",
            ),
            (
                "headers.a == 1 headers.b == 2",
                "unexpected `headers` at offset 15; expected `&&`, `||` or the end",
            ),
            (
                "headers.a == 1e999",
                "the number at offset 13 is out of range",
            ),
            ("headers[''] == 1", "empty header name at offset 8"),
            (
                "headers.a in ()",
                "unexpected `)` at offset 14; expected a string, a number or null",
            ),
            ("(headers.a == 1", "the selector ends early; expected `)`"),
            (
                "headers.a & 1",
                "unexpected character '&' at offset 10; use && (or and)",
            ),
        ] {
            let err = Selector::parse(selector).unwrap_err();
            assert_eq!(err.to_string(), message, "{selector}");
        }
        let deep = format!("{}headers.a == 1{}", "(".repeat(40), ")".repeat(40));
        assert_eq!(
            Selector::parse(&deep).unwrap_err(),
            SelectorError::TooDeep { max: MAX_DEPTH }
        );
        let nots = format!("{}headers.a == 1", "!".repeat(40));
        assert_eq!(
            Selector::parse(&nots).unwrap_err(),
            SelectorError::TooDeep { max: MAX_DEPTH }
        );
        let many = vec!["headers.a == 1"; MAX_TERMS + 1].join(" || ");
        assert_eq!(
            Selector::parse(&many).unwrap_err(),
            SelectorError::TooManyTerms { max: MAX_TERMS }
        );
        let list = format!("headers.a in ({})", vec!["1"; MAX_TERMS + 1].join(","));
        assert!(Selector::parse(&list).is_err());
    }

    #[test]
    fn prints_a_canonical_form() {
        for (input, canonical) in [
            (
                "headers.type=='alert'&&headers.priority>3",
                "headers.type == 'alert' && headers.priority > 3",
            ),
            (
                "(headers.a==1 or (headers.b==2 || headers.c==3)) and not headers.d!=null",
                "(headers.a == 1 || headers.b == 2 || headers.c == 3) && !(headers.d != null)",
            ),
            (
                "headers[\"x y\"] in (\"it's\", 1e3, -0.5, NULL)",
                "headers['x y'] in ('it\\'s', 1000, -0.5, null)",
            ),
            ("!!headers.a == 1e300", "!!(headers.a == 1e300)"),
        ] {
            let parsed = Selector::parse(input).unwrap();
            assert_eq!(parsed.to_string(), canonical);
            assert_eq!(Selector::parse(canonical).unwrap(), parsed);
        }
    }

    fn arb_selector_text() -> impl Strategy<Value = String> {
        let atom = prop_oneof![
            Just("headers.a".to_string()),
            Just("headers['x y']".to_string()),
            Just("headers.content-type".to_string()),
        ];
        let literal = prop_oneof![
            "[a-z' \\\\]{0,3}".prop_map(|s| Quoted(&s).to_string()),
            any::<f64>()
                .prop_filter("finite", |x| x.is_finite())
                .prop_map(|x| format!("{x:e}")),
            (-1000i64..1000).prop_map(|n| n.to_string()),
            Just("null".to_string()),
        ];
        let op = prop::sample::select(vec!["==", "!=", "<", "<=", ">", ">="]);
        let cmp = (atom, op, literal).prop_map(|(a, o, l)| format!("{a} {o} {l}"));
        cmp.prop_recursive(4, 24, 4, |inner| {
            prop_oneof![
                (inner.clone(), inner.clone()).prop_map(|(a, b)| format!("{a} && {b}")),
                (inner.clone(), inner.clone()).prop_map(|(a, b)| format!("({a}) || {b}")),
                inner.clone().prop_map(|a| format!("!({a})")),
                inner.prop_map(|a| format!("not {a}")),
            ]
        })
    }

    proptest! {
        #[test]
        fn never_panics_and_round_trips_its_printout(text in "\\PC{0,80}") {
            if let Ok(selector) = Selector::parse(&text) {
                let printed = selector.to_string();
                prop_assert_eq!(Selector::parse(&printed), Ok(selector), "{}", printed);
            }
        }

        #[test]
        fn generated_selectors_round_trip_and_evaluate(
            text in arb_selector_text(),
            a in prop::option::of("[0-9a-z.]{0,4}"),
        ) {
            if let Ok(selector) = Selector::parse(&text) {
                let printed = selector.to_string();
                let reparsed = Selector::parse(&printed);
                prop_assert_eq!(reparsed.as_ref(), Ok(&selector), "{}", printed);
                // A selected message is never selected by the negation.
                let headers: Vec<(String, String)> =
                    a.into_iter().map(|v| ("a".to_string(), v)).collect();
                let negated = Selector::parse(&format!("!({printed})")).unwrap();
                prop_assert!(!(selector.matches(&headers) && negated.matches(&headers)));
            }
        }
    }
}
