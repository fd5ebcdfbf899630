//! An incremental JSON scanner that cuts a response into units small enough to mask
//! one at a time, whatever the chunk boundaries: bytes go in as they arrive, masked
//! JSON comes out as soon as a unit is complete.
//!
//! - An object response is buffered as one unit, except that when its `items` (a
//!   `…List`) or `rows` (a `Table`) member starts, the members before it are emitted
//!   and each element becomes a unit of its own: memory is bounded by the largest
//!   element, not the list.
//! - A watch response is a sequence of event objects, each a unit.
//!
//! Every unit is parsed by serde_json, masked and re-serialized: nothing the upstream
//! sent reaches the client as raw bytes, so malformed input can only end the stream.
//! The byte-level tracking (strings, escapes, depth) only finds where units end.
//!
//! Not here: the masking rules (`rules`), HTTP (`body`).

use std::sync::Arc;

use serde_json::{Map, Value};

use super::{
    MaskError,
    rules::{self, Rules, Target},
};

/// Where in the response the scanner is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Before the top-level object.
    Start,
    /// Inside the top-level object, before any streamed array (buffered).
    Prefix,
    /// Inside the streamed array, between elements.
    Between,
    /// Inside one element of the streamed array (buffered).
    Element,
    /// Right after the streamed array's `]`.
    AfterArray,
    /// Members after the streamed array (buffered).
    Trailer,
    /// After the top-level object: only whitespace may follow.
    Done,
    /// Between watch events.
    WatchIdle,
    /// Inside one watch event (buffered).
    WatchEvent,
    /// An error was returned; nothing more is accepted.
    Failed,
}

/// The member whose array is streamed element by element.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Array {
    Items,
    Rows,
}

/// String and nesting state of the buffered bytes.
#[derive(Debug, Default)]
struct Lexer {
    in_string: bool,
    escaped: bool,
    depth: usize,
}

impl Lexer {
    /// Steps over one byte; whether it closed a string.
    fn step(&mut self, b: u8) -> Result<bool, MaskError> {
        if self.in_string {
            if self.escaped {
                self.escaped = false;
            } else if b == b'\\' {
                self.escaped = true;
            } else if b == b'"' {
                self.in_string = false;
                return Ok(true);
            }
            return Ok(false);
        }
        match b {
            b'"' => self.in_string = true,
            b'{' | b'[' => self.depth += 1,
            b'}' | b']' => {
                self.depth = self.depth.checked_sub(1).ok_or(MaskError::Unexpected(b))?;
            }
            _ => {}
        }
        Ok(false)
    }
}

/// Bookkeeping of the top-level object's members while they are buffered.
#[derive(Debug, Default)]
struct Members {
    /// The next string at depth 1 is a key.
    expect_key: bool,
    /// Inside a key; where its bytes start in the buffer.
    key_start: Option<usize>,
    /// The last key seen, if it names a streamable array.
    array_key: Option<Array>,
    /// A `:` was seen; the next non-space byte starts the member's value.
    expect_value: bool,
    /// Buffer offset just after the `{` or `,` that precedes the current member.
    member_start: usize,
}

/// Cuts one response into units and masks each.
pub struct Scanner {
    rules: Arc<Rules>,
    target: Target,
    max_unit: usize,
    state: State,
    lex: Lexer,
    buf: Vec<u8>,
    members: Members,
    array: Array,
    /// Elements emitted from the streamed array, and whether a `,` awaits the next.
    elements: usize,
    need_element: bool,
    /// The streamed object's members before its array: one repeated after it would
    /// make a second object of the same bytes for a client that keeps the last copy
    /// (a `kind` there turns the list back into an object of the kind).
    head_keys: Vec<String>,
}

// === impl Scanner ===

impl Scanner {
    pub fn new(rules: Arc<Rules>, target: Target, watch: bool, max_unit: usize) -> Self {
        Self {
            rules,
            target,
            max_unit,
            state: if watch {
                State::WatchIdle
            } else {
                State::Start
            },
            lex: Lexer::default(),
            buf: Vec::new(),
            members: Members::default(),
            array: Array::Items,
            head_keys: Vec::new(),
            elements: 0,
            need_element: false,
        }
    }

    /// Consumes `input`, appending whatever masked output is complete to `out`.
    pub fn feed(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<(), MaskError> {
        let result = self.feed_inner(input, out);
        if result.is_err() {
            self.state = State::Failed;
            self.buf = Vec::new();
        }
        result
    }

    /// The response ended: an error unless it ended between units.
    pub fn finish(&mut self) -> Result<(), MaskError> {
        match self.state {
            State::Done | State::WatchIdle => Ok(()),
            State::Failed => Err(MaskError::AlreadyFailed),
            _ => {
                self.state = State::Failed;
                Err(MaskError::Truncated)
            }
        }
    }

    /// The bytes held for the unit in progress (for tests of bounded buffering).
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    fn feed_inner(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<(), MaskError> {
        let mut i = 0;
        while i < input.len() {
            match self.state {
                State::Failed => return Err(MaskError::AlreadyFailed),
                State::Prefix | State::Element | State::Trailer | State::WatchEvent => {
                    // String contents are most of the bytes: copy them in one go.
                    if self.lex.in_string && !self.lex.escaped {
                        let rest = &input[i..];
                        let n = memchr::memchr2(b'"', b'\\', rest).unwrap_or(rest.len());
                        self.push(&rest[..n])?;
                        i += n;
                        if i == input.len() {
                            break;
                        }
                    }
                    let b = input[i];
                    i += 1;
                    self.push(&[b])?;
                    self.unit_byte(b, out)?;
                }
                _ => {
                    let b = input[i];
                    i += 1;
                    if !is_space(b) {
                        self.structural(b, out)?;
                    }
                }
            }
        }
        Ok(())
    }

    fn push(&mut self, bytes: &[u8]) -> Result<(), MaskError> {
        if self.buf.len() + bytes.len() > self.max_unit {
            return Err(MaskError::TooLarge(self.max_unit));
        }
        self.buf.extend_from_slice(bytes);
        Ok(())
    }

    /// Starts buffering a unit that opens with `{`.
    fn open_unit(&mut self, state: State) {
        self.buf.clear();
        self.buf.push(b'{');
        self.lex = Lexer {
            depth: 1,
            ..Lexer::default()
        };
        self.state = state;
    }

    /// A non-space byte between units.
    fn structural(&mut self, b: u8, out: &mut Vec<u8>) -> Result<(), MaskError> {
        match (self.state, b) {
            (State::Start, b'{') => {
                self.open_unit(State::Prefix);
                self.members = Members {
                    expect_key: true,
                    member_start: 1,
                    ..Members::default()
                };
            }
            (State::WatchIdle, b'{') => self.open_unit(State::WatchEvent),
            (State::Between, b'{') if self.elements == 0 || self.need_element => {
                self.open_unit(State::Element);
            }
            (State::Between, b',') if self.elements > 0 && !self.need_element => {
                self.need_element = true;
            }
            (State::Between, b']') if !self.need_element => {
                out.push(b']');
                self.state = State::AfterArray;
            }
            (State::AfterArray, b'}') => {
                out.push(b'}');
                self.state = State::Done;
            }
            (State::AfterArray, b',') => self.open_unit(State::Trailer),
            _ => return Err(MaskError::Unexpected(b)),
        }
        Ok(())
    }

    /// A byte of a buffered unit, already pushed.
    fn unit_byte(&mut self, b: u8, out: &mut Vec<u8>) -> Result<(), MaskError> {
        let top = self.lex.depth == 1 && !self.lex.in_string;
        let closed_string = self.lex.step(b)?;
        if self.state == State::Prefix {
            if top {
                self.prefix_byte(b, out)?;
                if self.state != State::Prefix {
                    return Ok(());
                }
            } else if closed_string
                && self.lex.depth == 1
                && let Some(start) = self.members.key_start.take()
            {
                let key = &self.buf[start..self.buf.len() - 1];
                self.members.array_key = match key {
                    b"items" => Some(Array::Items),
                    b"rows" => Some(Array::Rows),
                    _ => None,
                };
            }
        }
        if self.lex.depth > 0 {
            return Ok(());
        }
        let unit = std::mem::take(&mut self.buf);
        match self.state {
            State::Prefix => {
                let mut value: Value = parse(&unit)?;
                rules::mask_value(&self.rules, self.target, &mut value);
                write(out, &value)?;
                self.state = State::Done;
            }
            State::Element => {
                let mut value: Value = parse(&unit)?;
                match self.array {
                    Array::Items => rules::mask_value(&self.rules, self.target, &mut value),
                    Array::Rows => rules::mask_row(&self.rules, self.target, &mut value),
                }
                if self.elements > 0 {
                    out.push(b',');
                }
                write(out, &value)?;
                self.elements += 1;
                self.need_element = false;
                self.state = State::Between;
            }
            State::Trailer => {
                let trailer: Map<String, Value> = parse(&unit)?;
                if trailer.contains_key("items") || trailer.contains_key("rows") {
                    return Err(MaskError::DuplicateArray);
                }
                if let Some(key) = trailer.keys().find(|k| self.head_keys.contains(k)) {
                    return Err(MaskError::DuplicateMember(key.clone()));
                }
                if trailer.is_empty() {
                    // `,}`: the comma promised a member.
                    return Err(MaskError::Unexpected(b'}'));
                }
                let text = serde_json::to_vec(&trailer).map_err(MaskError::Serialize)?;
                out.push(b',');
                out.extend_from_slice(&text[1..text.len() - 1]);
                out.push(b'}');
                self.state = State::Done;
            }
            State::WatchEvent => {
                let mut event: Value = parse(&unit)?;
                if let Some(object) = event.get_mut("object") {
                    rules::mask_value(&self.rules, self.target, object);
                }
                write(out, &event)?;
                out.push(b'\n');
                self.state = State::WatchIdle;
            }
            _ => unreachable!("only buffered states hold units"),
        }
        // A unit's buffer is reused only while it stays small.
        if unit.capacity() <= 1 << 20 {
            self.buf = unit;
            self.buf.clear();
        }
        Ok(())
    }

    /// A byte directly inside the top-level object, outside strings.
    fn prefix_byte(&mut self, b: u8, out: &mut Vec<u8>) -> Result<(), MaskError> {
        let m = &mut self.members;
        match b {
            b'"' if m.expect_key => {
                m.expect_key = false;
                m.key_start = Some(self.buf.len());
            }
            b':' => m.expect_value = true,
            b',' => {
                m.expect_key = true;
                m.member_start = self.buf.len();
            }
            _ if m.expect_value && !is_space(b) => {
                m.expect_value = false;
                if let Some(array) = m.array_key.take()
                    && b == b'['
                {
                    self.start_streaming(array, out)?;
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// At the `[` of `items` or `rows`: emits the members before it and streams the
    /// array, if the object is a list (or a Table) and no member before it is another
    /// `items` or `rows` (an earlier one, or one spelt with escapes), which would go
    /// out unmasked. Otherwise the whole object stays one unit.
    fn start_streaming(&mut self, array: Array, out: &mut Vec<u8>) -> Result<(), MaskError> {
        // The member tracking skips bytes it has no use for; what it skipped between
        // the key and the `[` must be JSON's, or the output would be a repaired copy
        // of malformed input.
        check_array_member(&self.buf[self.members.member_start..], array)?;
        let mut head = self.buf[..self.members.member_start].to_vec();
        if head.last() == Some(&b',') {
            head.pop();
        }
        head.push(b'}');
        let head: Map<String, Value> = parse(&head)?;
        let kind = head.get("kind").and_then(Value::as_str).unwrap_or_default();
        let fits = match array {
            Array::Items => kind.ends_with("List"),
            Array::Rows => kind == "Table",
        };
        if !fits || head.contains_key("items") || head.contains_key("rows") {
            return Ok(());
        }
        let mut text = serde_json::to_vec(&head).map_err(MaskError::Serialize)?;
        self.head_keys = head.keys().cloned().collect();
        text.pop();
        if !head.is_empty() {
            text.push(b',');
        }
        out.extend_from_slice(&text);
        out.extend_from_slice(match array {
            Array::Items => b"\"items\":[",
            Array::Rows => b"\"rows\":[",
        });
        self.buf.clear();
        self.lex = Lexer::default();
        self.array = array;
        self.elements = 0;
        self.need_element = false;
        self.state = State::Between;
        Ok(())
    }
}

/// `member`, the streamed array's member up to its `[`, is `"items" : [` (or `rows`)
/// with optional whitespace. The key's bytes matched exactly, so no whitespace is
/// inside it, and every non-space byte must be the expected one.
fn check_array_member(member: &[u8], array: Array) -> Result<(), MaskError> {
    let want: &[u8] = match array {
        Array::Items => b"\"items\":[",
        Array::Rows => b"\"rows\":[",
    };
    let mut got = member.iter().copied().filter(|&b| !is_space(b));
    for &w in want {
        match got.next() {
            Some(b) if b == w => {}
            Some(b) => return Err(MaskError::Unexpected(b)),
            None => return Err(MaskError::Truncated),
        }
    }
    got.next().map_or(Ok(()), |b| Err(MaskError::Unexpected(b)))
}

/// JSON's whitespace.
fn is_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r')
}

fn parse<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, MaskError> {
    serde_json::from_slice(bytes).map_err(MaskError::Malformed)
}

fn write(out: &mut Vec<u8>, value: &Value) -> Result<(), MaskError> {
    serde_json::to_writer(out, value).map_err(MaskError::Serialize)
}
