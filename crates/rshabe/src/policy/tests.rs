use proptest::prelude::*;

use super::*;

fn parse(s: &str) -> AccessStructure {
    AccessStructure::parse(s).unwrap_or_else(|e| panic!("{s:?} should parse: {e}"))
}

fn fail(s: &str) -> PolicyError {
    match AccessStructure::parse(s) {
        Ok(p) => panic!("{s:?} should fail, parsed as {p}"),
        Err(e) => e,
    }
}

fn attr(name: &str) -> Attribute {
    Attribute::new(name).unwrap()
}

fn leaf(name: &str) -> Node {
    Node::Leaf(attr(name))
}

fn gate(threshold: usize, children: Vec<Node>) -> Node {
    Node::Gate {
        threshold,
        children,
    }
}

fn canonical(s: &str) -> String {
    parse(s).to_string()
}

/// Satisfaction of a raw, unnormalised tree, for comparing with the normalised one.
fn raw_satisfied(node: &Node, has: &dyn Fn(&Attribute) -> bool) -> bool {
    match node {
        Node::Leaf(a) => has(a),
        Node::Gate {
            threshold,
            children,
        } => children.iter().filter(|c| raw_satisfied(c, has)).count() >= *threshold,
    }
}

#[test]
fn and_binds_tighter_than_or() {
    let p = parse("a or b and c");
    assert_eq!(
        p.root(),
        &gate(1, vec![leaf("a"), gate(2, vec![leaf("b"), leaf("c")])])
    );
    assert_eq!(p.to_string(), "a or b and c");
    assert_eq!(canonical("(a or b) and c"), "(a or b) and c");
}

#[test]
fn chains_and_same_operator_parentheses_flatten() {
    let flat = gate(3, vec![leaf("a"), leaf("b"), leaf("c")]);
    for s in [
        "a and b and c",
        "(a and b) and c",
        "a and (b and c)",
        "((a) and ((b and c)))",
    ] {
        assert_eq!(parse(s).root(), &flat, "{s}");
    }
    let or = gate(1, vec![leaf("a"), leaf("b"), leaf("c")]);
    for s in [
        "a or b or c",
        "(a or b) or c",
        "a or (b or c)",
        "1 of (a, b or c)",
    ] {
        assert_eq!(parse(s).root(), &or, "{s}");
    }
}

#[test]
fn thresholds_normalise() {
    assert_eq!(parse("3 of (a, b, c)"), parse("a and b and c"));
    assert_eq!(parse("2 of (a and b, c)"), parse("a and b and c"));
    assert_eq!(parse("1 of (a, b, c)"), parse("a or b or c"));
    assert_eq!(parse("1 of (a)"), parse("a"));
    assert_eq!(
        parse("2 OF (a, b, c)").root(),
        &gate(2, vec![leaf("a"), leaf("b"), leaf("c")])
    );
    assert_eq!(
        canonical("2 of (a, b or c, d and e)"),
        "2 of (a, b or c, d and e)"
    );
    // A threshold is never spliced into another threshold.
    assert_eq!(
        canonical("2 of (2 of (a, b, c), d, e)"),
        "2 of (2 of (a, b, c), d, e)"
    );
    assert_eq!(canonical("x and 2 of (a, b, c)"), "x and 2 of (a, b, c)");
}

#[test]
fn numbers_are_attributes_unless_followed_by_of() {
    assert_eq!(parse("5").root(), &leaf("5"));
    assert_eq!(
        parse("5 and 7").root(),
        &gate(2, vec![leaf("5"), leaf("7")])
    );
    assert_eq!(parse("2of").root(), &leaf("2of"));
    assert_eq!(canonical("0002 of (a, 1, c)"), "2 of (a, 1, c)");
}

#[test]
fn keywords_are_case_insensitive() {
    assert_eq!(parse("a AND b Or c"), parse("a and b or c"));
}

#[test]
fn quoted_attributes_hold_anything_but_controls() {
    let p = parse(r#""role: (head, and) of" and "naïve \"x\" \\ y" and "日本""#);
    let names: Vec<&str> = p.leaves().iter().map(|a| a.as_str()).collect();
    assert_eq!(names, ["role: (head, and) of", r#"naïve "x" \ y"#, "日本"]);
    assert_eq!(
        p.to_string(),
        r#""role: (head, and) of" and "naïve \"x\" \\ y" and "日本""#
    );
    assert_eq!(parse("\"a\"").root(), &leaf("a"));
}

#[test]
fn attribute_display_quotes_only_when_needed() {
    let cases = [
        ("role:physician", "role:physician"),
        ("a.b/c@d#e+f-g_h", "a.b/c@d#e+f-g_h"),
        ("42", "42"),
        ("and", "\"and\""),
        ("OR", "\"OR\""),
        ("Of", "\"Of\""),
        ("android", "android"),
        ("a b", "\"a b\""),
        ("é", "\"é\""),
        ("q\"\\", r#""q\"\\""#),
    ];
    for (name, shown) in cases {
        assert_eq!(attr(name).to_string(), shown);
        assert_eq!(parse(shown).root(), &leaf(name));
    }
}

#[test]
fn attributes_are_nfc() {
    let composed = attr("caf\u{e9}");
    let decomposed = attr("cafe\u{301}");
    assert_eq!(composed, decomposed);
    assert_eq!(decomposed.as_str(), "caf\u{e9}");
    assert_eq!(parse("\"cafe\u{301}\""), parse("\"caf\u{e9}\""));
}

#[test]
fn attribute_new_refuses_bad_names() {
    let kind = |s: &str| Attribute::new(s).unwrap_err();
    assert_eq!(kind(""), error(PolicyErrorKind::EmptyAttribute, 0));
    assert_eq!(kind("a\nb").kind, PolicyErrorKind::ControlCharacter);
    assert_eq!(kind("\u{7f}").kind, PolicyErrorKind::ControlCharacter);
    assert_eq!(
        kind(&"x".repeat(257)).kind,
        PolicyErrorKind::AttributeTooLong
    );
    assert!(Attribute::new(&"x".repeat(256)).is_ok());
    // 128 two-byte characters are fine; decomposed they are 384 bytes but NFC makes them 256.
    assert!(Attribute::new(&"e\u{301}".repeat(128)).is_ok());
    assert_eq!(
        kind(&"é".repeat(129)).kind,
        PolicyErrorKind::AttributeTooLong
    );
}

#[test]
fn unicode_whitespace_separates_tokens() {
    assert_eq!(
        parse("\u{3000}a\u{a0}and\tb\n or\u{2029}c "),
        parse("a and b or c")
    );
}

#[test]
fn errors_name_kind_and_position() {
    use PolicyErrorKind::*;
    let cases: &[(&str, PolicyErrorKind, usize)] = &[
        ("", Empty, 0),
        (" \t\n", Empty, 0),
        ("a and", UnexpectedEnd, 5),
        ("a and )", ExpectedAttribute, 6),
        ("a or or b", ExpectedAttribute, 5),
        ("and", ExpectedAttribute, 0),
        ("a and of", ExpectedAttribute, 6),
        (", a", ExpectedAttribute, 0),
        ("a b", TrailingInput, 2),
        ("a )", TrailingInput, 2),
        ("(a b)", ExpectedCloseParen, 3),
        ("(a and b", ExpectedCloseParen, 8),
        ("2 of (a, b", ExpectedCloseParen, 10),
        ("2 of a", ExpectedOpenParen, 5),
        ("2 of", UnexpectedEnd, 4),
        ("a & b", UnexpectedChar('&'), 2),
        ("é", UnexpectedChar('é'), 0),
        ("a and \"bc", UnterminatedQuote, 6),
        ("\"a\\", UnterminatedQuote, 0),
        ("\"a\\n\"", BadEscape, 2),
        ("\"a\u{1}\"", ControlCharacter, 2),
        ("x or \"\"", EmptyAttribute, 5),
        ("0 of (a, b)", BadThreshold { k: 0, n: 2 }, 0),
        ("x and 4 of (a, b, c)", BadThreshold { k: 4, n: 3 }, 6),
        ("99999999999999999999999 of (a)", NumberTooLarge, 0),
    ];
    for (input, kind, position) in cases {
        assert_eq!(fail(input), error(kind.clone(), *position), "{input:?}");
    }
    assert_eq!(
        fail("a b").to_string(),
        "unexpected text after the policy at byte 2"
    );
    // A long number alone is just an attribute.
    assert_eq!(parse("99999999999999999999999").leaf_count(), 1);
}

#[test]
fn limits_are_enforced() {
    use PolicyErrorKind::*;
    let long = format!("x or {}", "a".repeat(MAX_ATTRIBUTE_BYTES + 1));
    assert_eq!(fail(&long), error(AttributeTooLong, 5));
    assert_eq!(
        fail(&format!("\"{}\"", "a".repeat(300))).kind,
        AttributeTooLong
    );

    let big = format!("a or {}", " ".repeat(MAX_POLICY_BYTES));
    assert_eq!(fail(&big), error(TooLong, MAX_POLICY_BYTES));

    let group = format!("({})", vec!["a"; MAX_CHILDREN].join(" and "));
    let full = vec![group; MAX_LEAVES / MAX_CHILDREN].join(" or ");
    assert_eq!(parse(&full).leaf_count(), MAX_LEAVES);
    let over = format!("{full} or b");
    assert_eq!(fail(&over), error(TooManyLeaves, over.len() - 1));
    let too_many = vec!["a"; MAX_LEAVES + 1].join(",");
    assert_eq!(fail(&format!("2 of ({too_many})")).kind, TooManyLeaves);

    let children = vec!["a"; MAX_CHILDREN].join(" and ");
    assert_eq!(parse(&children).leaf_count(), MAX_CHILDREN);
    let over = vec!["a"; MAX_CHILDREN + 1].join(" and ");
    assert_eq!(fail(&over), error(TooManyChildren, 0));
    // Splicing counts: 2 + 255 children after flattening.
    let spliced = format!(
        "(a and b) and ({})",
        vec!["c"; MAX_CHILDREN - 1].join(" and ")
    );
    assert_eq!(fail(&spliced).kind, TooManyChildren);
}

#[test]
fn nesting_is_limited_before_recursing() {
    let nested = |depth: usize| format!("{}x{}", "(".repeat(depth), ")".repeat(depth));
    assert!(AccessStructure::parse(&nested(MAX_DEPTH)).is_ok());
    assert_eq!(
        fail(&nested(MAX_DEPTH + 1)),
        error(PolicyErrorKind::TooDeep, MAX_DEPTH)
    );
    // Deep input far past the limit fails fast instead of overflowing the stack.
    assert_eq!(fail(&"(".repeat(10_000)).kind, PolicyErrorKind::TooDeep);
    assert_eq!(fail(&"1 of (".repeat(2_000)).kind, PolicyErrorKind::TooDeep);

    // Gate depth: each level alternates AND and OR, so nothing flattens.
    let mut s = "x0".to_string();
    for level in 1..=MAX_DEPTH {
        let op = if level % 2 == 1 { "and" } else { "or" };
        s = format!("y{level} {op} ({s})");
    }
    let p = parse(&s);
    assert_eq!(depth(p.root()), MAX_DEPTH);
    assert_eq!(parse(&p.to_string()), p);
    assert_eq!(fail(&format!("z and ({s})")).kind, PolicyErrorKind::TooDeep);
    let deeper = gate(2, vec![leaf("z"), p.root().clone()]);
    assert_eq!(
        AccessStructure::from_node(deeper).unwrap_err().kind,
        PolicyErrorKind::TooDeep
    );
}

#[test]
fn gate_depth_limit_applies_without_parenthesis_limit() {
    // 17 parentheses, 34 gates: `a or b and (…)` adds two gates per parenthesis.
    let mut s = "x".to_string();
    for _ in 0..17 {
        s = format!("a or b and ({s})");
    }
    assert_eq!(fail(&s).kind, PolicyErrorKind::TooDeep);
}

#[test]
fn leaves_are_in_written_order_with_repeats() {
    let p = parse("(a and b) or (a and c) or 2 of (d, a, e)");
    let names: Vec<&str> = p.leaves().iter().map(|a| a.as_str()).collect();
    assert_eq!(names, ["a", "b", "a", "c", "d", "a", "e"]);
    assert_eq!(p.leaf_count(), 7);
}

#[test]
fn satisfaction() {
    let p = parse("(a and b) or 2 of (c, d, e)");
    let holds = |set: &[&str]| {
        let set: Vec<Attribute> = set.iter().map(|s| attr(s)).collect();
        p.is_satisfied_by(&|a| set.contains(a))
    };
    assert!(holds(&["a", "b"]));
    assert!(holds(&["c", "e"]));
    assert!(!holds(&["a", "c"]));
    assert!(!holds(&[]));
    assert!(holds(&["a", "b", "c", "d", "e"]));
}

#[test]
fn from_node_normalises_and_validates() {
    let built = gate(
        2,
        vec![
            gate(1, vec![leaf("a")]),
            gate(2, vec![leaf("b"), leaf("c")]),
            leaf("d"),
        ],
    );
    assert_eq!(
        AccessStructure::from_node(built).unwrap(),
        parse("2 of (a, b and c, d)")
    );
    let built = gate(
        3,
        vec![gate(2, vec![leaf("a"), leaf("b")]), leaf("c"), leaf("d")],
    );
    assert_eq!(
        AccessStructure::from_node(built).unwrap(),
        parse("a and b and c and d")
    );

    let err = |node| AccessStructure::from_node(node).unwrap_err();
    assert_eq!(
        err(gate(1, vec![])),
        error(PolicyErrorKind::BadThreshold { k: 1, n: 0 }, 0)
    );
    assert_eq!(
        err(gate(0, vec![leaf("a")])).kind,
        PolicyErrorKind::BadThreshold { k: 0, n: 1 }
    );
    assert_eq!(
        err(gate(3, vec![leaf("a"), leaf("b")])).kind,
        PolicyErrorKind::BadThreshold { k: 3, n: 2 }
    );
    let wide = gate(1, vec![leaf("a"); MAX_CHILDREN + 1]);
    assert_eq!(err(wide).kind, PolicyErrorKind::TooManyChildren);
    let many = gate(1, vec![gate(1, vec![leaf("a"); 200]); 6]);
    assert_eq!(err(many).kind, PolicyErrorKind::TooManyLeaves);
    let mut deep = leaf("a");
    for _ in 0..10_000 {
        deep = gate(1, vec![deep]);
    }
    assert_eq!(err(deep).kind, PolicyErrorKind::TooDeep);
}

#[test]
fn from_str_matches_parse() {
    let p: AccessStructure = "a and b".parse().unwrap();
    assert_eq!(p, parse("a and b"));
}

// === property tests ===

const NAMES: &[&str] = &[
    "a",
    "b",
    "c",
    "role:x",
    "5",
    "and",
    "OR",
    "of",
    "é",
    "e\u{301}",
    "two words",
    "q\"uote",
    "back\\slash",
    "(",
    ",",
    "日本",
];

fn arb_attribute() -> impl Strategy<Value = Attribute> {
    prop::sample::select(NAMES).prop_map(attr)
}

/// Random valid (not necessarily normalised) trees: thresholds in `1..=n`.
fn arb_node() -> impl Strategy<Value = Node> {
    arb_attribute()
        .prop_map(Node::Leaf)
        .prop_recursive(6, 64, 5, |inner| {
            (
                prop::collection::vec(inner, 1..5),
                any::<prop::sample::Index>(),
            )
                .prop_map(|(children, k)| {
                    let threshold = 1 + k.index(children.len());
                    Node::Gate {
                        threshold,
                        children,
                    }
                })
        })
}

const TOKENS: &[&str] = &[
    "and",
    "or",
    "of",
    "AND",
    "(",
    ")",
    ",",
    "a",
    "b",
    "2",
    "1",
    "0",
    "3",
    "\"x y\"",
    "\"",
    "\\",
    "\"\\\"\"",
    "é",
    "&",
    " ",
    "\u{3000}",
    "\n",
    "9999999999999999999999",
];

proptest! {
    #[test]
    fn never_panics_on_arbitrary_text(s in any::<String>()) {
        if let Ok(p) = AccessStructure::parse(&s) {
            prop_assert_eq!(AccessStructure::parse(&p.to_string()), Ok(p));
        }
    }

    #[test]
    fn never_panics_on_token_soup(
        tokens in prop::collection::vec(prop::sample::select(TOKENS), 0..40),
        spaced in any::<bool>(),
    ) {
        let s = tokens.join(if spaced { " " } else { "" });
        match AccessStructure::parse(&s) {
            Ok(p) => {
                let printed = p.to_string();
                let again = AccessStructure::parse(&printed);
                prop_assert_eq!(again.as_ref(), Ok(&p));
                prop_assert_eq!(again.map(|q| q.to_string()), Ok(printed));
            }
            Err(e) => prop_assert!(e.position <= s.len()),
        }
    }

    #[test]
    fn print_then_parse_is_identity(node in arb_node()) {
        let p = AccessStructure::from_node(node).unwrap();
        let printed = p.to_string();
        let parsed = AccessStructure::parse(&printed).unwrap();
        prop_assert_eq!(&parsed, &p);
        prop_assert_eq!(parsed.to_string(), printed);
        // Normal form is idempotent.
        prop_assert_eq!(AccessStructure::from_node(p.root().clone()).unwrap(), p);
    }

    #[test]
    fn normalising_keeps_meaning_and_leaf_order(node in arb_node(), mask in any::<u16>()) {
        let p = AccessStructure::from_node(node.clone()).unwrap();
        let has = |a: &Attribute| {
            NAMES.iter().position(|n| attr(n) == *a).is_some_and(|i| mask & (1 << i) != 0)
        };
        prop_assert_eq!(p.is_satisfied_by(&has), raw_satisfied(&node, &has));
        let mut raw = Vec::new();
        collect_leaves(&node, &mut raw);
        prop_assert_eq!(p.leaves(), raw);
    }
}
