//! Field and label selectors, parsed only as far as the API server's request-info
//! derivation needs: whether they parse (a selector that does not parse makes the API
//! server drop a `metadata.name` match), and the exact-match terms of a field selector.
//!
//! The grammars are apimachinery's `fields.ParseSelector` and `labels.Parse`, including
//! their quirks (field selector terms are sorted before the first match is taken; the
//! label lexer stops at a NUL byte).

/// The equality terms of a parsed field selector, in the API server's (sorted) order.
pub(super) struct FieldTerms(Vec<FieldTerm>);

struct FieldTerm {
    field: String,
    value: String,
    equal: bool,
}

impl FieldTerms {
    /// The value that the selector requires `field` to have exactly, if any.
    pub(super) fn required_exact_match(&self, field: &str) -> Option<String> {
        self.0
            .iter()
            .find(|t| t.equal && t.field == field)
            .map(|t| t.value.clone())
    }
}

/// A field selector (`a=b,c==d,e!=f`, values escaped with `\`); `None` if it does not
/// parse. The left side has no escapes: the first operator splits the term.
pub(super) fn parse_field_selector(selector: &str) -> Option<FieldTerms> {
    let mut raw_terms = split_unescaped_commas(selector);
    raw_terms.sort_unstable();
    let mut terms = Vec::with_capacity(raw_terms.len());
    for term in raw_terms.into_iter().filter(|t| !t.is_empty()) {
        let (field, equal, value) = split_field_term(term)?;
        terms.push(FieldTerm {
            field: field.to_owned(),
            value: unescape_field_value(value)?,
            equal,
        });
    }
    Some(FieldTerms(terms))
}

fn split_unescaped_commas(s: &str) -> Vec<&str> {
    if s.is_empty() {
        return Vec::new();
    }
    let (mut terms, mut start, mut escaped) = (Vec::new(), 0, false);
    for (i, b) in s.bytes().enumerate() {
        match b {
            _ if escaped => escaped = false,
            b'\\' => escaped = true,
            b',' => {
                terms.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    terms.push(&s[start..]);
    terms
}

/// Splits at the first `!=`, `==` or `=`; the bool is true for the equality operators.
fn split_field_term(term: &str) -> Option<(&str, bool, &str)> {
    let bytes = term.as_bytes();
    (0..bytes.len()).find_map(|i| match &bytes[i..] {
        [b'!', b'=', ..] => Some((&term[..i], false, &term[i + 2..])),
        [b'=', b'=', ..] => Some((&term[..i], true, &term[i + 2..])),
        [b'=', ..] => Some((&term[..i], true, &term[i + 1..])),
        _ => None,
    })
}

/// `\\`, `\,` and `\=` are the only escapes; a bare `,` or `=` is an error.
fn unescape_field_value(value: &str) -> Option<String> {
    let mut out = String::with_capacity(value.len());
    let mut chars = value.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next()? {
                escaped @ ('\\' | ',' | '=') => out.push(escaped),
                _ => return None,
            },
            ',' | '=' => return None,
            c => out.push(c),
        }
    }
    Some(out)
}

// === label selectors ===

/// Whether a label selector (`a=b,c!=d,e in (f,g),!h,i>3`) parses and validates.
pub(super) fn is_valid_label_selector(selector: &str) -> bool {
    let mut parser = LabelParser {
        tokens: lex(selector),
        position: 0,
    };
    parser.selector().is_some()
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Token {
    End,
    ClosedPar,
    Comma,
    Not,
    DoubleEquals,
    Equals,
    GreaterThan,
    Identifier(String),
    In,
    LessThan,
    NotEquals,
    NotIn,
    OpenPar,
}

fn symbol_token(symbol: &[u8]) -> Option<Token> {
    Some(match symbol {
        b")" => Token::ClosedPar,
        b"," => Token::Comma,
        b"!" => Token::Not,
        b"==" => Token::DoubleEquals,
        b"=" => Token::Equals,
        b">" => Token::GreaterThan,
        b"<" => Token::LessThan,
        b"!=" => Token::NotEquals,
        b"(" => Token::OpenPar,
        _ => return None,
    })
}

fn is_special(b: u8) -> bool {
    matches!(b, b'=' | b'!' | b'(' | b')' | b',' | b'>' | b'<')
}

fn is_blank(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\r' | b'\n')
}

/// apimachinery's label lexer, byte for byte: reading past the end and reading a NUL
/// byte both yield 0, which ends a token (and, where a token would start, the input).
fn lex(s: &str) -> Vec<Token> {
    let bytes = s.as_bytes();
    let read = |pos: &mut usize| {
        let b = bytes.get(*pos).copied().unwrap_or(0);
        if *pos < bytes.len() {
            *pos += 1;
        }
        b
    };
    let mut pos = 0;
    let mut tokens = Vec::new();
    loop {
        let mut b = read(&mut pos);
        while is_blank(b) {
            b = read(&mut pos);
        }
        if b == 0 {
            tokens.push(Token::End);
            return tokens;
        }
        pos -= 1;
        let mut buffer = Vec::new();
        if is_special(b) {
            // The longest run of special bytes that is still a token; a single special
            // byte always is one.
            let mut last = Token::End;
            loop {
                let b = read(&mut pos);
                if b == 0 {
                    break;
                }
                if !is_special(b) {
                    pos -= 1;
                    break;
                }
                buffer.push(b);
                match symbol_token(&buffer) {
                    Some(token) => last = token,
                    None if last != Token::End => {
                        pos -= 1;
                        break;
                    }
                    None => {}
                }
            }
            tokens.push(last);
        } else {
            loop {
                let b = read(&mut pos);
                if b == 0 {
                    break;
                }
                if is_special(b) || is_blank(b) {
                    pos -= 1;
                    break;
                }
                buffer.push(b);
            }
            // Split at ASCII bytes only, so the identifier is whole UTF-8.
            let word = String::from_utf8_lossy(&buffer).into_owned();
            tokens.push(match word.as_str() {
                "in" => Token::In,
                "notin" => Token::NotIn,
                _ => Token::Identifier(word),
            });
        }
    }
}

struct LabelParser {
    tokens: Vec<Token>,
    position: usize,
}

impl LabelParser {
    /// The next token where a key or value may stand: `in` and `notin` are identifiers
    /// there, operators only right after a key.
    fn peek(&self) -> Token {
        match self.tokens.get(self.position).cloned() {
            None => Token::End,
            Some(Token::In) => Token::Identifier("in".to_owned()),
            Some(Token::NotIn) => Token::Identifier("notin".to_owned()),
            Some(token) => token,
        }
    }

    fn next(&mut self) -> Token {
        let token = self.peek();
        self.position += 1;
        token
    }

    fn next_operator(&mut self) -> Token {
        let token = self.tokens.get(self.position).cloned();
        self.position += 1;
        token.unwrap_or(Token::End)
    }

    fn selector(&mut self) -> Option<()> {
        loop {
            match self.peek() {
                Token::Identifier(_) | Token::Not => {
                    self.requirement()?;
                    match self.next() {
                        Token::End => return Some(()),
                        Token::Comma => {
                            if !matches!(self.peek(), Token::Identifier(_) | Token::Not) {
                                return None;
                            }
                        }
                        _ => return None,
                    }
                }
                Token::End => return Some(()),
                _ => return None,
            }
        }
    }

    fn requirement(&mut self) -> Option<()> {
        let mut token = self.next();
        let negated = token == Token::Not;
        if negated {
            token = self.next();
        }
        let Token::Identifier(key) = token else {
            return None;
        };
        if !is_qualified_name(&key) {
            return None;
        }
        if negated || matches!(self.peek(), Token::End | Token::Comma) {
            // `!key` or `key` alone: no values to check.
            return Some(());
        }
        let values_ok = match self.next_operator() {
            Token::In | Token::NotIn => self.value_set()?.iter().all(|v| is_label_value(v)),
            Token::Equals | Token::DoubleEquals | Token::NotEquals => {
                is_label_value(&self.exact_value()?)
            }
            Token::GreaterThan | Token::LessThan => {
                let value = self.exact_value()?;
                is_label_value(&value) && value.parse::<i64>().is_ok()
            }
            _ => return None,
        };
        values_ok.then_some(())
    }

    /// `( a, b, … )`; empty members (`(a,,b)`, `()`) stand for the empty value, so the
    /// set is never empty.
    fn value_set(&mut self) -> Option<Vec<String>> {
        if self.next() != Token::OpenPar {
            return None;
        }
        match self.peek() {
            Token::ClosedPar => {
                self.next();
                return Some(vec![String::new()]);
            }
            Token::Identifier(_) | Token::Comma => {}
            _ => return None,
        }
        let mut values = Vec::new();
        loop {
            match self.next() {
                Token::Identifier(value) => {
                    values.push(value);
                    match self.peek() {
                        Token::Comma => {}
                        Token::ClosedPar => break,
                        _ => return None,
                    }
                }
                Token::Comma => {
                    if values.is_empty() || self.peek() == Token::Comma {
                        values.push(String::new());
                    }
                    if self.peek() == Token::ClosedPar {
                        values.push(String::new());
                        break;
                    }
                }
                _ => return None,
            }
        }
        (self.next() == Token::ClosedPar).then_some(values)
    }

    fn exact_value(&mut self) -> Option<String> {
        if matches!(self.peek(), Token::End | Token::Comma) {
            return Some(String::new());
        }
        match self.next() {
            Token::Identifier(value) => Some(value),
            _ => None,
        }
    }
}

/// `[DNS-1123 subdomain "/"] name`, name at most 63 characters of `[-A-Za-z0-9_.]`
/// starting and ending alphanumeric (apimachinery `IsQualifiedName`).
fn is_qualified_name(key: &str) -> bool {
    let (prefix, name) = match key.split_once('/') {
        Some((prefix, name)) => (Some(prefix), name),
        None => (None, key),
    };
    prefix.is_none_or(is_dns1123_subdomain)
        && !name.contains('/')
        && !name.is_empty()
        && is_label_value(name)
}

/// Empty, or at most 63 characters of `[-A-Za-z0-9_.]` starting and ending
/// alphanumeric (apimachinery `IsValidLabelValue`).
fn is_label_value(value: &str) -> bool {
    let bytes = value.as_bytes();
    let (Some(first), Some(last)) = (bytes.first(), bytes.last()) else {
        return true;
    };
    bytes.len() <= 63
        && first.is_ascii_alphanumeric()
        && last.is_ascii_alphanumeric()
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// At most 253 characters; dot-separated labels of `[a-z0-9-]` that start and end
/// alphanumeric.
fn is_dns1123_subdomain(s: &str) -> bool {
    s.len() <= 253
        && s.split('.').all(|label| {
            let bytes = label.as_bytes();
            let alnum = |b: &u8| b.is_ascii_lowercase() || b.is_ascii_digit();
            bytes.first().is_some_and(alnum)
                && bytes.last().is_some_and(alnum)
                && bytes.iter().all(|b| alnum(b) || *b == b'-')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_selector_grammar() {
        let valid = [
            "",
            "a",
            "!a",
            "a=b",
            "a==b",
            "a!=b",
            "a=",
            "a=,b",
            "a in (b,c)",
            "a notin (b)",
            "a in ()",
            "a in (,)",
            "a in (b,,c)",
            "x in (foo,,baz),y,z notin ()",
            "a>1",
            "a<10",
            "  a = b ,  c  ",
            "in in (in)",
            "notin=notin",
            "example.com/app=web-1",
            "a.b-c_d=A.b-C_9",
            // NUL ends the input where a token would start, and otherwise ends a token
            "a \0 never lexed",
            "a=\0b",
            "a,\0b",
        ];
        let invalid = [
            ",",
            "a,",
            "a b",
            "a=b=c",
            "!a=b",
            "a in b",
            "a in (b",
            "a in (b c)",
            "a>b",
            "a>-1",
            "a>",
            "-a",
            "a-",
            "a=-b",
            "/a",
            "Example.com/a",
            "a/b/c",
            "a=(b)",
            "(a)",
            "a!b",
            "a=b,,c",
            "é=b",
            "a=b\0c",
            "a, \0b",
        ];
        for s in valid {
            assert!(is_valid_label_selector(s), "{s:?} should parse");
        }
        let long = "a".repeat(64);
        let too_long = [
            format!("{long}=b"),
            format!("a={long}"),
            format!("{}.com/a", "b".repeat(250)),
        ];
        for s in invalid
            .iter()
            .copied()
            .chain(too_long.iter().map(String::as_str))
        {
            assert!(!is_valid_label_selector(s), "{s:?} should not parse");
        }
        assert!(is_valid_label_selector(&format!("{}/a=b", "b".repeat(253))));
    }
}
