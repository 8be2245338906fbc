//! Access structures: formulas over attributes, their parser and canonical printer.
//!
//! ```text
//! expr      := and_expr ( "or" and_expr )*
//! and_expr  := primary ( "and" primary )*
//! primary   := "(" expr ")" | NUMBER "of" "(" expr ( "," expr )* ")" | attribute
//! attribute := bare | '"' ( any char but '"', '\' and controls | '\"' | '\\' )* '"'
//! bare      := [A-Za-z0-9_:./@#+-]+, not a keyword (and, or, of; any case)
//! ```
//!
//! `and` binds tighter than `or`; chains of one operator flatten into one n-ary gate, and a
//! `k of (…)` with `k = n` is an AND, with `k = 1` an OR, so equal structures compare equal.
//! Children keep their order: it is the LSSS row order. Input size, nesting depth, leaves and
//! children are bounded, every error names the byte where it happened, and no input panics.

use std::fmt;
use std::str::FromStr;

use unicode_normalization::UnicodeNormalization;

/// The longest attribute name, in bytes of its NFC form.
pub const MAX_ATTRIBUTE_BYTES: usize = 256;
/// The longest formula, in bytes.
pub const MAX_POLICY_BYTES: usize = 16 * 1024;
/// The deepest nesting of gates.
pub const MAX_DEPTH: usize = 32;
/// The most attribute occurrences in one formula (LSSS rows).
pub const MAX_LEAVES: usize = 1024;
/// The most children of one gate.
pub const MAX_CHILDREN: usize = 256;

/// An attribute name in canonical form: Unicode NFC, 1 to [`MAX_ATTRIBUTE_BYTES`] bytes, no
/// control characters. Two names that differ only in their Unicode composition are equal.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub struct Attribute(String);

/// A node of an access structure: an attribute, or a gate satisfied when at least `threshold`
/// of its children are.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum Node {
    /// An attribute the key must hold.
    Leaf(Attribute),
    /// `threshold` of `children`: `n` of `n` is AND, 1 of `n` is OR.
    Gate {
        /// How many children must be satisfied, `1..=children.len()`.
        threshold: usize,
        /// The children, in order (at least two after normalisation).
        children: Vec<Self>,
    },
}

/// A validated, normalised access structure.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct AccessStructure {
    root: Node,
    leaves: usize,
}

/// Why a formula or an attribute name is invalid, and at which byte of the input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{kind} at byte {position}")]
pub struct PolicyError {
    /// What is wrong.
    pub kind: PolicyErrorKind,
    /// The byte offset in the input where it was found.
    pub position: usize,
}

/// What is wrong with a formula or a name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PolicyErrorKind {
    /// The formula holds nothing but white space.
    #[error("the formula is empty")]
    Empty,
    /// The formula is longer than [`MAX_POLICY_BYTES`].
    #[error("the formula is longer than {MAX_POLICY_BYTES} bytes")]
    TooLong,
    /// Gates nest deeper than [`MAX_DEPTH`].
    #[error("gates nest deeper than {MAX_DEPTH} levels")]
    TooDeep,
    /// More than [`MAX_LEAVES`] attribute occurrences.
    #[error("more than {MAX_LEAVES} attributes")]
    TooManyLeaves,
    /// A gate with more than [`MAX_CHILDREN`] children.
    #[error("a gate has more than {MAX_CHILDREN} children")]
    TooManyChildren,
    /// A character that cannot start or continue a token here.
    #[error("unexpected character {0:?}")]
    UnexpectedChar(char),
    /// The formula ends where more was expected.
    #[error("unexpected end of the formula")]
    UnexpectedEnd,
    /// A quoted name has no closing quote.
    #[error("unterminated quoted name")]
    UnterminatedQuote,
    /// A backslash in a quoted name not followed by `"` or `\`.
    #[error("a backslash in a quoted name must escape '\"' or '\\'")]
    BadEscape,
    /// An operator, comma or parenthesis where an attribute or `(` was expected.
    #[error("expected an attribute, a threshold or '('")]
    ExpectedAttribute,
    /// `k of` not followed by `(`.
    #[error("expected '(' after 'k of'")]
    ExpectedOpenParen,
    /// A missing `)`.
    #[error("expected ')'")]
    ExpectedCloseParen,
    /// `k of (…)` with `k` of 0 or more than its `n` children.
    #[error("threshold {k} of {n} children: k must be between 1 and n")]
    BadThreshold {
        /// The threshold written.
        k: usize,
        /// The number of children.
        n: usize,
    },
    /// A name longer than [`MAX_ATTRIBUTE_BYTES`] in NFC.
    #[error("an attribute name is longer than {MAX_ATTRIBUTE_BYTES} bytes")]
    AttributeTooLong,
    /// A name holding a control character.
    #[error("an attribute name holds a control character")]
    ControlCharacter,
    /// An empty name (`""`).
    #[error("an attribute name is empty")]
    EmptyAttribute,
    /// Text after a complete formula, such as a stray `)` or a missing operator.
    #[error("unexpected text after the formula (missing 'and' or 'or'?)")]
    TrailingInput,
    /// A threshold number too large to be meaningful.
    #[error("threshold number too large")]
    NumberTooLarge,
    /// The structure's canonical text (what a ciphertext stores) is longer than
    /// [`MAX_POLICY_BYTES`], so no ciphertext under it could be decoded again.
    #[error("the structure's canonical form is longer than {MAX_POLICY_BYTES} bytes")]
    CanonicalTooLong,
    /// The structure does not print to a text that parses back to it (never expected: it would
    /// be a bug in the printer, refused rather than stored).
    #[error("the structure does not print back to itself")]
    NotCanonical,
}

// === impl Attribute ===

impl Attribute {
    /// The canonical attribute for `name`: NFC-normalised; refused if empty, longer than
    /// [`MAX_ATTRIBUTE_BYTES`] in NFC, or holding a control character.
    pub fn new(name: &str) -> Result<Self, PolicyError> {
        Self::at(name, 0)
    }

    fn at(name: &str, position: usize) -> Result<Self, PolicyError> {
        let err = |kind| Err(PolicyError { kind, position });
        if name.is_empty() {
            return err(PolicyErrorKind::EmptyAttribute);
        }
        if name.chars().any(char::is_control) {
            return err(PolicyErrorKind::ControlCharacter);
        }
        if name.len() > 4 * MAX_ATTRIBUTE_BYTES {
            return err(PolicyErrorKind::AttributeTooLong);
        }
        // ASCII is its own NFC: no ASCII character decomposes, and none composes with another
        // (a combining mark is never ASCII). Every request's `patient:<id>` takes this way.
        let nfc: String = if name.is_ascii() {
            name.to_owned()
        } else {
            name.nfc().collect()
        };
        if nfc.len() > MAX_ATTRIBUTE_BYTES {
            return err(PolicyErrorKind::AttributeTooLong);
        }
        Ok(Self(nfc))
    }

    /// The canonical (NFC) name.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    fn is_bare(&self) -> bool {
        self.0.bytes().all(is_bare_byte) && !is_keyword(&self.0)
    }
}

impl fmt::Display for Attribute {
    /// The name as a formula token: bare when the grammar allows, else quoted and escaped.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_bare() {
            return f.write_str(&self.0);
        }
        f.write_str("\"")?;
        for c in self.0.chars() {
            if c == '"' || c == '\\' {
                f.write_str("\\")?;
            }
            write!(f, "{c}")?;
        }
        f.write_str("\"")
    }
}

impl FromStr for Attribute {
    type Err = PolicyError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::new(s)
    }
}

// === impl AccessStructure ===

impl AccessStructure {
    /// Parses a formula such as `role:physician and (dept:cardiology or 2 of (a, b, c))`.
    pub fn parse(formula: &str) -> Result<Self, PolicyError> {
        if formula.len() > MAX_POLICY_BYTES {
            return Err(PolicyError {
                kind: PolicyErrorKind::TooLong,
                position: MAX_POLICY_BYTES,
            });
        }
        let mut p = Parser {
            input: formula,
            pos: 0,
            leaves: 0,
        };
        p.skip_space();
        if p.pos == formula.len() {
            return Err(p.error(PolicyErrorKind::Empty));
        }
        let root = p.expr(0)?;
        p.skip_space();
        if p.pos != formula.len() {
            let at = p.error(PolicyErrorKind::TrailingInput);
            return Err(match p.next_token() {
                Err(e) if matches!(e.kind, PolicyErrorKind::UnexpectedChar(_)) => e,
                _ => at,
            });
        }
        Self {
            root,
            leaves: p.leaves,
        }
        .encodable()
    }

    /// Builds a structure from a tree, normalised and checked against the same limits as the
    /// parser (errors report position 0).
    pub fn from_node(root: Node) -> Result<Self, PolicyError> {
        let mut leaves = 0;
        let root = normalise(root, 0, &mut leaves)?;
        Self { root, leaves }.encodable()
    }

    /// The structure, if its canonical text fits [`MAX_POLICY_BYTES`]: every structure this
    /// crate hands out can be stored in a ciphertext and decoded again.
    fn encodable(self) -> Result<Self, PolicyError> {
        if self.to_string().len() > MAX_POLICY_BYTES {
            return Err(PolicyError {
                kind: PolicyErrorKind::CanonicalTooLong,
                position: 0,
            });
        }
        Ok(self)
    }

    /// The root of the normalised tree.
    pub fn root(&self) -> &Node {
        &self.root
    }

    /// The attribute occurrences, left to right: the LSSS row order.
    pub fn leaves(&self) -> Vec<&Attribute> {
        let mut out = Vec::with_capacity(self.leaves);
        collect_leaves(&self.root, &mut out);
        out
    }

    /// How many attribute occurrences (LSSS rows) the structure has.
    pub fn leaf_count(&self) -> usize {
        self.leaves
    }

    /// Whether a holder of the attributes for which `has` is true satisfies the structure. This
    /// is a convenience for policy tools; enforcement is the algebra of decryption.
    pub fn is_satisfied_by(&self, has: &dyn Fn(&Attribute) -> bool) -> bool {
        satisfied(&self.root, has)
    }
}

impl fmt::Display for AccessStructure {
    /// The canonical text: `parse(s.to_string()) == s` and printing is a fixed point.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_node(f, &self.root, false)
    }
}

impl FromStr for AccessStructure {
    type Err = PolicyError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

// === parser ===

struct Parser<'a> {
    input: &'a str,
    pos: usize,
    leaves: usize,
}

enum Token<'a> {
    Open,
    Close,
    Comma,
    And,
    Or,
    Of,
    Number(&'a str),
    Bare(&'a str),
    Quoted(String),
}

impl<'a> Parser<'a> {
    fn error(&self, kind: PolicyErrorKind) -> PolicyError {
        PolicyError {
            kind,
            position: self.pos,
        }
    }

    fn expr(&mut self, depth: usize) -> Result<Node, PolicyError> {
        let mut children = vec![self.and_expr(depth)?];
        while self.eat_keyword(Keyword::Or)? {
            children.push(self.and_expr(depth)?);
        }
        self.gate(1, children, depth)
    }

    fn and_expr(&mut self, depth: usize) -> Result<Node, PolicyError> {
        let mut children = vec![self.primary(depth)?];
        while self.eat_keyword(Keyword::And)? {
            children.push(self.primary(depth)?);
        }
        let n = children.len();
        self.gate(n, children, depth)
    }

    fn primary(&mut self, depth: usize) -> Result<Node, PolicyError> {
        self.skip_space();
        let start = self.pos;
        match self.next_token()? {
            Token::Open => {
                let inner = self.nested(depth)?;
                self.expect(Token::Close)?;
                Ok(inner)
            }
            Token::Number(digits) if self.peek_is_of()? => {
                let k: usize = digits.parse().map_err(|_| PolicyError {
                    kind: PolicyErrorKind::NumberTooLarge,
                    position: start,
                })?;
                self.next_token()?; // "of"
                self.expect(Token::Open)?;
                let mut children = vec![self.nested(depth)?];
                loop {
                    self.skip_space();
                    let at = self.pos;
                    match self.next_token() {
                        Ok(Token::Comma) => children.push(self.nested(depth)?),
                        Ok(Token::Close) => break,
                        _ => {
                            self.pos = at;
                            return Err(self.error(PolicyErrorKind::ExpectedCloseParen));
                        }
                    }
                }
                let n = children.len();
                if k == 0 || k > n {
                    return Err(PolicyError {
                        kind: PolicyErrorKind::BadThreshold { k, n },
                        position: start,
                    });
                }
                self.gate(k, children, depth)
            }
            Token::Number(name) | Token::Bare(name) => self.leaf(name, start),
            Token::Quoted(name) => self.leaf(&name, start),
            _ => Err(PolicyError {
                kind: PolicyErrorKind::ExpectedAttribute,
                position: start,
            }),
        }
    }

    /// An expression one level deeper, refused before recursing past [`MAX_DEPTH`].
    fn nested(&mut self, depth: usize) -> Result<Node, PolicyError> {
        if depth + 1 > MAX_DEPTH {
            return Err(self.error(PolicyErrorKind::TooDeep));
        }
        self.expr(depth + 1)
    }

    fn leaf(&mut self, name: &str, start: usize) -> Result<Node, PolicyError> {
        self.leaves += 1;
        if self.leaves > MAX_LEAVES {
            return Err(PolicyError {
                kind: PolicyErrorKind::TooManyLeaves,
                position: start,
            });
        }
        Ok(Node::Leaf(Attribute::at(name, start)?))
    }

    fn gate(
        &self,
        threshold: usize,
        children: Vec<Node>,
        depth: usize,
    ) -> Result<Node, PolicyError> {
        if children.len() > MAX_CHILDREN {
            return Err(self.error(PolicyErrorKind::TooManyChildren));
        }
        let mut leaves = 0;
        normalise(
            Node::Gate {
                threshold,
                children,
            },
            depth,
            &mut leaves,
        )
        .map_err(|e| PolicyError {
            position: self.pos,
            ..e
        })
    }

    fn expect(&mut self, want: Token<'_>) -> Result<(), PolicyError> {
        self.skip_space();
        let at = self.pos;
        let got = self.next_token();
        if got.is_ok_and(|got| std::mem::discriminant(&got) == std::mem::discriminant(&want)) {
            return Ok(());
        }
        self.pos = at;
        Err(self.error(match want {
            Token::Close => PolicyErrorKind::ExpectedCloseParen,
            _ => PolicyErrorKind::ExpectedOpenParen,
        }))
    }

    fn eat_keyword(&mut self, keyword: Keyword) -> Result<bool, PolicyError> {
        self.skip_space();
        let at = self.pos;
        if at == self.input.len() {
            return Ok(false);
        }
        let hit = matches!(
            (self.next_token(), keyword),
            (Ok(Token::And), Keyword::And) | (Ok(Token::Or), Keyword::Or)
        );
        if !hit {
            self.pos = at;
        }
        Ok(hit)
    }

    fn peek_is_of(&mut self) -> Result<bool, PolicyError> {
        let at = self.pos;
        self.skip_space();
        let of = self.pos < self.input.len() && matches!(self.next_token(), Ok(Token::Of));
        self.pos = at;
        Ok(of)
    }

    fn skip_space(&mut self) {
        let rest = &self.input[self.pos..];
        self.pos += rest.len() - rest.trim_start().len();
    }

    fn next_token(&mut self) -> Result<Token<'a>, PolicyError> {
        self.skip_space();
        let rest: &'a str = &self.input[self.pos..];
        let Some(c) = rest.chars().next() else {
            return Err(self.error(PolicyErrorKind::UnexpectedEnd));
        };
        let single = match c {
            '(' => Some(Token::Open),
            ')' => Some(Token::Close),
            ',' => Some(Token::Comma),
            _ => None,
        };
        if let Some(t) = single {
            self.pos += 1;
            return Ok(t);
        }
        if c == '"' {
            return self.quoted();
        }
        let len = rest.bytes().take_while(|b| is_bare_byte(*b)).count();
        if len == 0 {
            return Err(self.error(PolicyErrorKind::UnexpectedChar(c)));
        }
        let word = &rest[..len];
        self.pos += len;
        Ok(match word.to_ascii_lowercase().as_str() {
            "and" => Token::And,
            "or" => Token::Or,
            "of" => Token::Of,
            _ if word.bytes().all(|b| b.is_ascii_digit()) => Token::Number(word),
            _ => Token::Bare(word),
        })
    }

    fn quoted(&mut self) -> Result<Token<'a>, PolicyError> {
        let start = self.pos;
        let mut out = String::new();
        let mut chars = self.input[start + 1..].char_indices();
        while let Some((i, c)) = chars.next() {
            match c {
                '"' => {
                    self.pos = start + 1 + i + 1;
                    return Ok(Token::Quoted(out));
                }
                '\\' => match chars.next() {
                    Some((_, e @ ('"' | '\\'))) => out.push(e),
                    _ => {
                        self.pos = start + 1 + i;
                        return Err(self.error(PolicyErrorKind::BadEscape));
                    }
                },
                _ => out.push(c),
            }
        }
        self.pos = start;
        Err(self.error(PolicyErrorKind::UnterminatedQuote))
    }
}

#[derive(Clone, Copy)]
enum Keyword {
    And,
    Or,
}

// === normalisation, traversal and printing ===

/// Flattens same-operator chains, collapses one-child gates and checks every limit.
fn normalise(node: Node, depth: usize, leaves: &mut usize) -> Result<Node, PolicyError> {
    let err = |kind| PolicyError { kind, position: 0 };
    match node {
        Node::Leaf(a) => {
            *leaves += 1;
            if *leaves > MAX_LEAVES {
                return Err(err(PolicyErrorKind::TooManyLeaves));
            }
            Ok(Node::Leaf(a))
        }
        Node::Gate {
            threshold,
            children,
        } => {
            if depth > MAX_DEPTH {
                return Err(err(PolicyErrorKind::TooDeep));
            }
            let n = children.len();
            if threshold == 0 || threshold > n {
                return Err(err(PolicyErrorKind::BadThreshold { k: threshold, n }));
            }
            let kind = GateKind::of(threshold, n);
            let mut flat = Vec::with_capacity(n);
            for child in children {
                match normalise(child, depth + 1, leaves)? {
                    Node::Gate {
                        threshold: t,
                        children: grand,
                    } if kind != GateKind::Threshold && GateKind::of(t, grand.len()) == kind => {
                        flat.extend(grand);
                    }
                    other => flat.push(other),
                }
            }
            if flat.len() > MAX_CHILDREN {
                return Err(err(PolicyErrorKind::TooManyChildren));
            }
            let threshold = match kind {
                GateKind::And => flat.len(),
                GateKind::Or => 1,
                GateKind::Threshold => threshold,
            };
            if flat.len() == 1
                && let Some(only) = flat.pop()
            {
                return Ok(only);
            }
            Ok(Node::Gate {
                threshold,
                children: flat,
            })
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum GateKind {
    And,
    Or,
    Threshold,
}

impl GateKind {
    fn of(threshold: usize, n: usize) -> Self {
        if threshold == n {
            Self::And
        } else if threshold == 1 {
            Self::Or
        } else {
            Self::Threshold
        }
    }
}

fn collect_leaves<'a>(node: &'a Node, out: &mut Vec<&'a Attribute>) {
    match node {
        Node::Leaf(a) => out.push(a),
        Node::Gate { children, .. } => children.iter().for_each(|c| collect_leaves(c, out)),
    }
}

fn satisfied(node: &Node, has: &dyn Fn(&Attribute) -> bool) -> bool {
    match node {
        Node::Leaf(a) => has(a),
        Node::Gate {
            threshold,
            children,
        } => {
            children
                .iter()
                .filter(|c| satisfied(c, has))
                .take(*threshold)
                .count()
                == *threshold
        }
    }
}

fn write_node(f: &mut fmt::Formatter<'_>, node: &Node, parenthesise_or: bool) -> fmt::Result {
    let (threshold, children) = match node {
        Node::Leaf(a) => return write!(f, "{a}"),
        Node::Gate {
            threshold,
            children,
        } => (*threshold, children),
    };
    match GateKind::of(threshold, children.len()) {
        GateKind::Threshold => {
            write!(f, "{threshold} of (")?;
            for (i, c) in children.iter().enumerate() {
                if i > 0 {
                    f.write_str(", ")?;
                }
                write_node(f, c, false)?;
            }
            f.write_str(")")
        }
        GateKind::And => {
            for (i, c) in children.iter().enumerate() {
                if i > 0 {
                    f.write_str(" and ")?;
                }
                write_node(f, c, true)?;
            }
            Ok(())
        }
        GateKind::Or => {
            if parenthesise_or {
                f.write_str("(")?;
            }
            for (i, c) in children.iter().enumerate() {
                if i > 0 {
                    f.write_str(" or ")?;
                }
                write_node(f, c, false)?;
            }
            if parenthesise_or {
                f.write_str(")")?;
            }
            Ok(())
        }
    }
}

fn is_bare_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"_:./@#+-".contains(&b)
}

fn is_keyword(word: &str) -> bool {
    ["and", "or", "of"]
        .iter()
        .any(|k| word.eq_ignore_ascii_case(k))
}

#[cfg(test)]
mod tests;
