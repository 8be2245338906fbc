//! Access structures: the attributes a ciphertext policy names, the policy language, its
//! canonical printer, and the satisfaction check.
//!
//! # Language
//!
//! ```text
//! expr      := or_expr
//! or_expr   := and_expr ( "or" and_expr )*
//! and_expr  := primary ( "and" primary )*
//! primary   := "(" expr ")" | threshold | attribute
//! threshold := NUMBER "of" "(" expr ( "," expr )* ")"      1 <= NUMBER <= number of exprs
//! attribute := bare | quoted
//! bare      := [A-Za-z0-9_:./@#+-]+, not a keyword, not a NUMBER followed by "of"
//! quoted    := '"' ( any char but '"', '\' and controls | '\"' | '\\' )* '"'
//! ```
//!
//! Keywords (`and`, `or`, `of`) are ASCII case-insensitive; `and` binds tighter than `or`; any
//! Unicode whitespace may separate tokens. A bare number alone (`5`) is an attribute.
//!
//! # Normal form
//!
//! Every [`AccessStructure`] is kept normalised, so that equal structures compare equal:
//! an AND is a gate `n of n`, an OR a gate `1 of n`; a `k of (…)` with `k == n` is an AND and with
//! `k == 1` an OR; an AND child of an AND and an OR child of an OR are spliced into their parent
//! (`(a and b) and c` == `a and b and c`); a gate with one child is that child. Children keep their
//! written order, because the left-to-right order of the leaves is the row order of the LSSS
//! matrix ([`crate::lsss`]).
//!
//! # Limits
//!
//! A policy holds at most [`MAX_POLICY_BYTES`] bytes, [`MAX_LEAVES`] attribute occurrences,
//! [`MAX_CHILDREN`] children per gate and [`MAX_DEPTH`] nested gates; the parser also refuses
//! more than [`MAX_DEPTH`] nested parentheses, checked before it recurses. Every error names the
//! byte offset in the input where it was found. Parsing never panics.
//!
//! Checking satisfaction here is a convenience, not enforcement: the algebra of the scheme is.

use std::fmt::{self, Write as _};
use std::str::FromStr;

use unicode_normalization::UnicodeNormalization;

/// Longest attribute name, in bytes of its NFC form.
pub const MAX_ATTRIBUTE_BYTES: usize = 256;
/// Longest policy text, in bytes.
pub const MAX_POLICY_BYTES: usize = 16 * 1024;
/// Deepest nesting of gates in a policy (a single attribute has depth 0), and of parentheses in
/// policy text.
pub const MAX_DEPTH: usize = 32;
/// Most attribute occurrences (LSSS rows) in one policy.
pub const MAX_LEAVES: usize = 1024;
/// Most children of one gate, after normalisation.
pub const MAX_CHILDREN: usize = 256;

/// An attribute name in Unicode normalisation form C.
///
/// Names are not secret. Two names that differ only in Unicode composition (precomposed `é`
/// against `e` + U+0301) are the same attribute. `Display` prints the canonical policy token:
/// bare when the name fits the bare-token grammar and is not a keyword, quoted otherwise.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub struct Attribute(String);

/// A node of an access structure: an attribute occurrence or a threshold gate.
///
/// Values inside an [`AccessStructure`] are normalised (see the [module docs](self)): every gate
/// has 2 to [`MAX_CHILDREN`] children and `1 <= threshold <= children.len()`; a gate is an AND
/// when `threshold == children.len()` and an OR when `threshold == 1`.
#[derive(Clone, PartialEq, Eq, Hash, Debug)]
pub enum Node {
    /// One occurrence of an attribute: one row of the LSSS matrix.
    Leaf(Attribute),
    /// Satisfied when at least `threshold` of `children` are satisfied.
    Gate {
        /// How many children must be satisfied.
        threshold: usize,
        /// The inputs of the gate, in written order.
        children: Vec<Self>,
    },
}

/// A validated, normalised policy over attributes.
///
/// Build one with [`AccessStructure::parse`] (or [`str::parse`]) or [`AccessStructure::from_node`].
/// `Display` prints canonical text: parsing it gives back an equal value.
#[derive(Clone, PartialEq, Eq, Hash, Debug)]
pub struct AccessStructure {
    root: Node,
}

/// Why a policy or attribute name was refused, and where.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{kind} at byte {position}")]
pub struct PolicyError {
    /// What is wrong.
    pub kind: PolicyErrorKind,
    /// Byte offset in the input where the problem was found (0 for [`Attribute::new`] and
    /// [`AccessStructure::from_node`]).
    pub position: usize,
}

/// The kinds of [`PolicyError`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PolicyErrorKind {
    /// The policy text is empty or only whitespace.
    #[error("the policy is empty")]
    Empty,
    /// The policy text is longer than [`MAX_POLICY_BYTES`].
    #[error("the policy is longer than {} bytes", MAX_POLICY_BYTES)]
    TooLong,
    /// Gates or parentheses nest deeper than [`MAX_DEPTH`].
    #[error("the policy nests deeper than {} levels", MAX_DEPTH)]
    TooDeep,
    /// The policy names more than [`MAX_LEAVES`] attribute occurrences.
    #[error("the policy has more than {} attributes", MAX_LEAVES)]
    TooManyLeaves,
    /// A gate has more than [`MAX_CHILDREN`] children once normalised.
    #[error("a gate has more than {} inputs", MAX_CHILDREN)]
    TooManyChildren,
    /// A character that starts no token.
    #[error("unexpected character {0:?}")]
    UnexpectedChar(char),
    /// The text ends where an attribute, `(` or a threshold was expected.
    #[error("the policy ends where an attribute was expected")]
    UnexpectedEnd,
    /// A quoted attribute has no closing quote.
    #[error("a quoted attribute is not closed")]
    UnterminatedQuote,
    /// A backslash in a quoted attribute is followed by something other than `"` or `\`.
    #[error("a backslash in a quoted attribute must be followed by '\"' or '\\'")]
    BadEscape,
    /// A keyword, `)` or `,` stands where an attribute, `(` or a threshold was expected.
    #[error("expected an attribute")]
    ExpectedAttribute,
    /// A group or threshold is not closed with `)`.
    #[error("expected ')'")]
    ExpectedCloseParen,
    /// `k of` is not followed by `(`.
    #[error("expected '(' after 'of'")]
    ExpectedOpenParen,
    /// A gate needs `k` of `n` inputs with `k` not in `1..=n` (or `n` is 0).
    #[error("a threshold of {k} out of {n} inputs must be between 1 and {n}")]
    BadThreshold {
        /// The threshold asked for.
        k: usize,
        /// The number of inputs given.
        n: usize,
    },
    /// An attribute name is longer than [`MAX_ATTRIBUTE_BYTES`] after NFC normalisation.
    #[error("an attribute name is longer than {} bytes", MAX_ATTRIBUTE_BYTES)]
    AttributeTooLong,
    /// An attribute name holds a control character.
    #[error("an attribute name holds a control character")]
    ControlCharacter,
    /// An attribute name is empty (`""`).
    #[error("an attribute name is empty")]
    EmptyAttribute,
    /// Text follows a complete policy.
    #[error("unexpected text after the policy")]
    TrailingInput,
    /// A threshold number does not fit in a machine word.
    #[error("a threshold number is too large")]
    NumberTooLarge,
}

// === impl Attribute ===

impl Attribute {
    /// Normalises `name` to NFC and checks it.
    ///
    /// # Errors
    ///
    /// [`PolicyErrorKind::EmptyAttribute`], [`PolicyErrorKind::AttributeTooLong`] (more than
    /// [`MAX_ATTRIBUTE_BYTES`] after NFC) or [`PolicyErrorKind::ControlCharacter`], at position 0.
    pub fn new(name: &str) -> Result<Self, PolicyError> {
        Self::from_text(name).map_err(|kind| PolicyError { kind, position: 0 })
    }

    /// The NFC name.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    fn from_text(name: &str) -> Result<Self, PolicyErrorKind> {
        let nfc: String = name.nfc().collect();
        if nfc.is_empty() {
            Err(PolicyErrorKind::EmptyAttribute)
        } else if nfc.chars().any(char::is_control) {
            Err(PolicyErrorKind::ControlCharacter)
        } else if nfc.len() > MAX_ATTRIBUTE_BYTES {
            Err(PolicyErrorKind::AttributeTooLong)
        } else {
            Ok(Self(nfc))
        }
    }

    fn is_bare(&self) -> bool {
        self.0.chars().all(is_bare_char) && !is_keyword(&self.0)
    }
}

impl fmt::Display for Attribute {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_bare() {
            return f.write_str(&self.0);
        }
        f.write_char('"')?;
        for c in self.0.chars() {
            if c == '"' || c == '\\' {
                f.write_char('\\')?;
            }
            f.write_char(c)?;
        }
        f.write_char('"')
    }
}

// === impl AccessStructure ===

impl AccessStructure {
    /// Parses and normalises a policy formula (grammar in the [module docs](self)).
    ///
    /// # Errors
    ///
    /// A [`PolicyError`] naming the first problem and its byte offset: syntax, a bad attribute
    /// name, a threshold out of range, or a limit exceeded.
    pub fn parse(formula: &str) -> Result<Self, PolicyError> {
        if formula.len() > MAX_POLICY_BYTES {
            return Err(error(PolicyErrorKind::TooLong, MAX_POLICY_BYTES));
        }
        if formula.trim().is_empty() {
            return Err(error(PolicyErrorKind::Empty, 0));
        }
        let mut parser = Parser {
            src: formula,
            pos: 0,
            nesting: 0,
            leaves: 0,
        };
        let root = parser.or_expr()?;
        match parser.peek()? {
            Some(extra) => Err(error(PolicyErrorKind::TrailingInput, extra.start)),
            None => Ok(Self { root }),
        }
    }

    /// Validates and normalises a programmatically built tree, with the parser's rules.
    ///
    /// # Errors
    ///
    /// [`PolicyErrorKind::BadThreshold`] for a gate with no children or a threshold outside
    /// `1..=n`, or [`PolicyErrorKind::TooDeep`], [`PolicyErrorKind::TooManyChildren`] or
    /// [`PolicyErrorKind::TooManyLeaves`]; always at position 0. The input tree may not nest
    /// deeper than [`MAX_DEPTH`] gates even where normalising would make it shallower.
    pub fn from_node(root: Node) -> Result<Self, PolicyError> {
        let mut leaves = 0;
        normalise(root, 0, &mut leaves)
            .map(|root| Self { root })
            .map_err(|kind| error(kind, 0))
    }

    /// The root of the normalised tree.
    pub fn root(&self) -> &Node {
        &self.root
    }

    /// The attribute of every leaf, left to right. This order is the LSSS row order: row `i` of
    /// [`crate::lsss::Lsss`] belongs to `leaves()[i]`. An attribute named twice appears twice.
    pub fn leaves(&self) -> Vec<&Attribute> {
        let mut out = Vec::new();
        collect_leaves(&self.root, &mut out);
        out
    }

    /// The number of leaves (LSSS rows).
    pub fn leaf_count(&self) -> usize {
        count_leaves(&self.root)
    }

    /// Whether a holder of exactly the attributes for which `has` is true satisfies the policy.
    pub fn is_satisfied_by(&self, has: &dyn Fn(&Attribute) -> bool) -> bool {
        satisfied(&self.root, has)
    }
}

impl fmt::Display for AccessStructure {
    /// Canonical text: `a and b`, `a or b`, `k of (a, b, c)`, with an OR inside an AND in
    /// parentheses and children in tree order.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_node(f, &self.root)
    }
}

impl FromStr for AccessStructure {
    type Err = PolicyError;

    fn from_str(formula: &str) -> Result<Self, Self::Err> {
        Self::parse(formula)
    }
}

// === tree helpers ===

#[derive(Clone, Copy, PartialEq, Eq)]
enum GateKind {
    And,
    Or,
    Threshold,
}

fn gate_kind(threshold: usize, n: usize) -> GateKind {
    if threshold == n {
        GateKind::And
    } else if threshold == 1 {
        GateKind::Or
    } else {
        GateKind::Threshold
    }
}

fn error(kind: PolicyErrorKind, position: usize) -> PolicyError {
    PolicyError { kind, position }
}

/// Builds a normalised gate from normalised children: checks the threshold, turns `k == n` into
/// AND and `k == 1` into OR, splices same-kind children, collapses one child, checks limits.
fn make_gate(threshold: usize, mut children: Vec<Node>) -> Result<Node, PolicyErrorKind> {
    let n = children.len();
    if threshold == 0 || threshold > n {
        return Err(PolicyErrorKind::BadThreshold { k: threshold, n });
    }
    if n == 1
        && let Some(only) = children.pop()
    {
        return Ok(only);
    }
    let kind = gate_kind(threshold, n);
    let mut flat = Vec::with_capacity(n);
    for child in children {
        match child {
            Node::Gate {
                threshold: t,
                children: grand,
            } if kind != GateKind::Threshold && gate_kind(t, grand.len()) == kind => {
                flat.extend(grand);
            }
            other => flat.push(other),
        }
    }
    if flat.len() > MAX_CHILDREN {
        return Err(PolicyErrorKind::TooManyChildren);
    }
    let threshold = match kind {
        GateKind::And => flat.len(),
        GateKind::Or => 1,
        GateKind::Threshold => threshold,
    };
    let gate = Node::Gate {
        threshold,
        children: flat,
    };
    if depth(&gate) > MAX_DEPTH {
        return Err(PolicyErrorKind::TooDeep);
    }
    Ok(gate)
}

/// Normalises a caller-built tree bottom-up; `above` counts the gates above `node`, checked before
/// recursing so a hostile tree cannot exhaust the stack here.
fn normalise(node: Node, above: usize, leaves: &mut usize) -> Result<Node, PolicyErrorKind> {
    match node {
        Node::Leaf(attribute) => {
            *leaves += 1;
            if *leaves > MAX_LEAVES {
                return Err(PolicyErrorKind::TooManyLeaves);
            }
            Ok(Node::Leaf(attribute))
        }
        Node::Gate {
            threshold,
            children,
        } => {
            if above >= MAX_DEPTH {
                return Err(PolicyErrorKind::TooDeep);
            }
            if children.len() > MAX_CHILDREN {
                return Err(PolicyErrorKind::TooManyChildren);
            }
            let children = children
                .into_iter()
                .map(|child| normalise(child, above + 1, leaves))
                .collect::<Result<Vec<_>, _>>()?;
            make_gate(threshold, children)
        }
    }
}

/// Gate nesting depth. Only called on validated trees, whose depth is at most `MAX_DEPTH + 1`.
fn depth(node: &Node) -> usize {
    match node {
        Node::Leaf(_) => 0,
        Node::Gate { children, .. } => 1 + children.iter().map(depth).max().unwrap_or(0),
    }
}

fn collect_leaves<'a>(node: &'a Node, out: &mut Vec<&'a Attribute>) {
    match node {
        Node::Leaf(attribute) => out.push(attribute),
        Node::Gate { children, .. } => children.iter().for_each(|c| collect_leaves(c, out)),
    }
}

fn count_leaves(node: &Node) -> usize {
    match node {
        Node::Leaf(_) => 1,
        Node::Gate { children, .. } => children.iter().map(count_leaves).sum(),
    }
}

fn satisfied(node: &Node, has: &dyn Fn(&Attribute) -> bool) -> bool {
    match node {
        Node::Leaf(attribute) => has(attribute),
        Node::Gate {
            threshold,
            children,
        } => children.iter().filter(|c| satisfied(c, has)).count() >= *threshold,
    }
}

fn write_node(f: &mut fmt::Formatter<'_>, node: &Node) -> fmt::Result {
    let (threshold, children) = match node {
        Node::Leaf(attribute) => return write!(f, "{attribute}"),
        Node::Gate {
            threshold,
            children,
        } => (*threshold, children),
    };
    let kind = gate_kind(threshold, children.len());
    let separator = match kind {
        GateKind::And => " and ",
        GateKind::Or => " or ",
        GateKind::Threshold => ", ",
    };
    if kind == GateKind::Threshold {
        write!(f, "{threshold} of (")?;
    }
    for (i, child) in children.iter().enumerate() {
        if i > 0 {
            f.write_str(separator)?;
        }
        // An OR inside an AND needs parentheses; same-kind nesting cannot occur in a normalised
        // tree, but is bracketed anyway so printing stays faithful for any tree.
        let wrap = match child {
            Node::Gate {
                threshold: t,
                children: grand,
            } => matches!(
                (kind, gate_kind(*t, grand.len())),
                (GateKind::And, GateKind::And | GateKind::Or) | (GateKind::Or, GateKind::Or)
            ),
            Node::Leaf(_) => false,
        };
        if wrap {
            f.write_char('(')?;
            write_node(f, child)?;
            f.write_char(')')?;
        } else {
            write_node(f, child)?;
        }
    }
    if kind == GateKind::Threshold {
        f.write_char(')')?;
    }
    Ok(())
}

fn is_bare_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | ':' | '.' | '/' | '@' | '#' | '+' | '-')
}

fn is_keyword(word: &str) -> bool {
    ["and", "or", "of"]
        .iter()
        .any(|k| word.eq_ignore_ascii_case(k))
}

fn is_number(word: &str) -> bool {
    !word.is_empty() && word.bytes().all(|b| b.is_ascii_digit())
}

// === parser ===

/// Recursive-descent parser over a lazily lexed token stream; one token of lookahead, two for
/// `NUMBER of`. Recursion happens only at `(`, after checking `nesting` against `MAX_DEPTH`.
struct Parser<'s> {
    src: &'s str,
    /// Byte offset of the next unread character; always on a char boundary.
    pos: usize,
    /// Open parentheses around the current position.
    nesting: usize,
    /// Leaves read so far.
    leaves: usize,
}

enum Token<'s> {
    Open,
    Close,
    Comma,
    Word(&'s str),
    Quoted(String),
}

struct Lexed<'s> {
    token: Token<'s>,
    start: usize,
    end: usize,
}

impl<'s> Parser<'s> {
    fn or_expr(&mut self) -> Result<Node, PolicyError> {
        let start = self.peek_start()?;
        let mut items = vec![self.and_expr()?];
        while self.eat_keyword("or")? {
            items.push(self.and_expr()?);
        }
        make_gate(1, items).map_err(|kind| error(kind, start))
    }

    fn and_expr(&mut self) -> Result<Node, PolicyError> {
        let start = self.peek_start()?;
        let mut items = vec![self.primary()?];
        while self.eat_keyword("and")? {
            items.push(self.primary()?);
        }
        make_gate(items.len(), items).map_err(|kind| error(kind, start))
    }

    fn primary(&mut self) -> Result<Node, PolicyError> {
        let Some(lexed) = self.next()? else {
            return Err(error(PolicyErrorKind::UnexpectedEnd, self.src.len()));
        };
        match lexed.token {
            Token::Open => {
                self.open(lexed.start)?;
                let node = self.or_expr()?;
                self.close()?;
                Ok(node)
            }
            Token::Word(word) if is_number(word) && self.next_is_keyword("of")? => {
                self.threshold(word, lexed.start)
            }
            Token::Word(word) if is_keyword(word) => {
                Err(error(PolicyErrorKind::ExpectedAttribute, lexed.start))
            }
            Token::Word(word) => self.leaf(word, lexed.start),
            Token::Quoted(name) => self.leaf(&name, lexed.start),
            Token::Close | Token::Comma => {
                Err(error(PolicyErrorKind::ExpectedAttribute, lexed.start))
            }
        }
    }

    /// After `NUMBER` (at `start`), with `of` next: `of ( expr , … )`.
    fn threshold(&mut self, number: &str, start: usize) -> Result<Node, PolicyError> {
        let k: usize = number
            .parse()
            .map_err(|_| error(PolicyErrorKind::NumberTooLarge, start))?;
        self.next()?; // the `of` that `next_is_keyword` saw
        match self.next()? {
            Some(Lexed {
                token: Token::Open,
                start: open,
                ..
            }) => self.open(open)?,
            Some(other) => return Err(error(PolicyErrorKind::ExpectedOpenParen, other.start)),
            None => return Err(error(PolicyErrorKind::UnexpectedEnd, self.src.len())),
        }
        let mut items = vec![self.or_expr()?];
        while matches!(
            self.peek()?,
            Some(Lexed {
                token: Token::Comma,
                ..
            })
        ) {
            self.next()?;
            items.push(self.or_expr()?);
        }
        self.close()?;
        make_gate(k, items).map_err(|kind| error(kind, start))
    }

    fn leaf(&mut self, name: &str, start: usize) -> Result<Node, PolicyError> {
        let attribute = Attribute::from_text(name).map_err(|kind| error(kind, start))?;
        self.leaves += 1;
        if self.leaves > MAX_LEAVES {
            return Err(error(PolicyErrorKind::TooManyLeaves, start));
        }
        Ok(Node::Leaf(attribute))
    }

    /// Enters a parenthesis at `at`; refuses nesting beyond `MAX_DEPTH` before any recursion.
    fn open(&mut self, at: usize) -> Result<(), PolicyError> {
        self.nesting += 1;
        if self.nesting > MAX_DEPTH {
            return Err(error(PolicyErrorKind::TooDeep, at));
        }
        Ok(())
    }

    fn close(&mut self) -> Result<(), PolicyError> {
        match self.next()? {
            Some(Lexed {
                token: Token::Close,
                ..
            }) => {
                self.nesting -= 1;
                Ok(())
            }
            Some(other) => Err(error(PolicyErrorKind::ExpectedCloseParen, other.start)),
            None => Err(error(PolicyErrorKind::ExpectedCloseParen, self.src.len())),
        }
    }

    fn eat_keyword(&mut self, keyword: &str) -> Result<bool, PolicyError> {
        let found = self.next_is_keyword(keyword)?;
        if found {
            self.next()?;
        }
        Ok(found)
    }

    fn next_is_keyword(&self, keyword: &str) -> Result<bool, PolicyError> {
        Ok(
            matches!(self.peek()?, Some(Lexed { token: Token::Word(w), .. })
            if w.eq_ignore_ascii_case(keyword)),
        )
    }

    /// Where the next token starts (the end of the input if there is none).
    fn peek_start(&self) -> Result<usize, PolicyError> {
        Ok(self.peek()?.map_or(self.src.len(), |lexed| lexed.start))
    }

    fn next(&mut self) -> Result<Option<Lexed<'s>>, PolicyError> {
        let lexed = self.peek()?;
        if let Some(lexed) = &lexed {
            self.pos = lexed.end;
        }
        Ok(lexed)
    }

    fn peek(&self) -> Result<Option<Lexed<'s>>, PolicyError> {
        let Some(rest) = self.src.get(self.pos..) else {
            return Ok(None);
        };
        let Some((offset, first)) = rest.char_indices().find(|(_, c)| !c.is_whitespace()) else {
            return Ok(None);
        };
        let start = self.pos + offset;
        let single = |token| {
            Ok(Some(Lexed {
                token,
                start,
                end: start + 1,
            }))
        };
        match first {
            '(' => single(Token::Open),
            ')' => single(Token::Close),
            ',' => single(Token::Comma),
            '"' => lex_quoted(self.src, start).map(Some),
            c if is_bare_char(c) => {
                let word = &rest[offset..];
                let len = word.find(|c| !is_bare_char(c)).unwrap_or(word.len());
                let word = &word[..len]; // `len` is on a boundary: `find` returned it
                Ok(Some(Lexed {
                    token: Token::Word(word),
                    start,
                    end: start + len,
                }))
            }
            other => Err(error(PolicyErrorKind::UnexpectedChar(other), start)),
        }
    }
}

/// Lexes the quoted attribute whose opening `"` is at byte `start`.
fn lex_quoted(src: &str, start: usize) -> Result<Lexed<'_>, PolicyError> {
    let body = src.get(start + 1..).unwrap_or_default();
    let mut chars = body.char_indices();
    let mut value = String::new();
    while let Some((offset, c)) = chars.next() {
        let at = start + 1 + offset;
        match c {
            '"' => {
                return Ok(Lexed {
                    token: Token::Quoted(value),
                    start,
                    end: at + 1,
                });
            }
            '\\' => match chars.next() {
                Some((_, escaped @ ('"' | '\\'))) => value.push(escaped),
                Some(_) => return Err(error(PolicyErrorKind::BadEscape, at)),
                None => break,
            },
            c if c.is_control() => return Err(error(PolicyErrorKind::ControlCharacter, at)),
            c => value.push(c),
        }
    }
    Err(error(PolicyErrorKind::UnterminatedQuote, start))
}

#[cfg(test)]
mod tests;
