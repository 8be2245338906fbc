use proptest::prelude::*;

use super::*;

fn leaf(name: &str) -> Node {
    Node::Leaf(Attribute::new(name).unwrap())
}

fn gate(threshold: usize, children: Vec<Node>) -> Node {
    Node::Gate {
        threshold,
        children,
    }
}

fn parse(s: &str) -> AccessStructure {
    AccessStructure::parse(s).unwrap()
}

fn error(s: &str) -> PolicyError {
    AccessStructure::parse(s).unwrap_err()
}

#[test]
fn precedence_flattening_and_normal_forms() {
    let abc_and = gate(3, vec![leaf("a"), leaf("b"), leaf("c")]);
    for s in [
        "a and b and c",
        "(a and b) and c",
        "a AND (b and c)",
        "3 of (a, b, c)",
        "((a)) and b and (c)",
    ] {
        assert_eq!(parse(s).root(), &abc_and, "{s}");
    }
    let abc_or = gate(1, vec![leaf("a"), leaf("b"), leaf("c")]);
    for s in ["a or b or c", "a or (b OR c)", "1 of (a, b, c)"] {
        assert_eq!(parse(s).root(), &abc_or, "{s}");
    }
    assert_eq!(
        parse("a and b or c").root(),
        &gate(1, vec![gate(2, vec![leaf("a"), leaf("b")]), leaf("c")])
    );
    assert_eq!(
        parse("a and (b or c)").root(),
        &gate(2, vec![leaf("a"), gate(1, vec![leaf("b"), leaf("c")])])
    );
    assert_eq!(
        parse("2 of (a, b or c, d)").root(),
        &gate(
            2,
            vec![leaf("a"), gate(1, vec![leaf("b"), leaf("c")]), leaf("d")]
        )
    );
    assert_eq!(parse("(x)").root(), &leaf("x"));
    assert_eq!(parse("1 of (x)").root(), &leaf("x"));
    assert_eq!(parse("5").root(), &leaf("5"));
    assert_eq!(
        parse("5 and 6").root(),
        &gate(2, vec![leaf("5"), leaf("6")])
    );
}

#[test]
fn quoted_names_hold_any_character() {
    let p = parse(r#""dept: (cardio), and \"icu\"" and "ümlaut \\ x" and "or""#);
    let names: Vec<&str> = p.leaves().iter().map(|a| a.as_str()).collect();
    assert_eq!(names, ["dept: (cardio), and \"icu\"", "ümlaut \\ x", "or"]);
    assert_eq!(
        p.to_string(),
        r#""dept: (cardio), and \"icu\"" and "ümlaut \\ x" and "or""#
    );
    assert_eq!(parse(&p.to_string()), p);
}

#[test]
fn names_are_nfc_canonical() {
    let composed = Attribute::new("caf\u{e9}").unwrap();
    let decomposed = Attribute::new("cafe\u{301}").unwrap();
    assert_eq!(composed, decomposed);
    assert_eq!(decomposed.as_str(), "caf\u{e9}");
    assert_eq!(parse("\"cafe\u{301}\"").leaves()[0], &composed);
}

/// The ASCII shortcut gives what NFC gives: every printable ASCII character, alone and before
/// every other (where a composition would show), and before a combining mark (which is not
/// ASCII, so the name takes the normalising way and composes).
#[test]
fn ascii_names_are_what_nfc_makes_them() {
    let printable = (0x20u8..0x7f).map(char::from).collect::<Vec<_>>();
    for &a in &printable {
        for name in printable
            .iter()
            .map(|&b| format!("{a}{b}"))
            .chain([a.to_string()])
        {
            let nfc: String = name.nfc().collect();
            assert_eq!(Attribute::new(&name).unwrap().as_str(), nfc, "{name:?}");
        }
    }
    assert_eq!(Attribute::new("e\u{301}").unwrap().as_str(), "\u{e9}");
}

#[test]
fn printing_quotes_what_the_bare_grammar_cannot_hold() {
    for (name, printed) in [
        ("role:physician", "role:physician"),
        ("org:st-mary/dept:cardiology", "org:st-mary/dept:cardiology"),
        ("AND", "\"AND\""),
        ("of", "\"of\""),
        ("two words", "\"two words\""),
        ("é", "\"é\""),
    ] {
        assert_eq!(Attribute::new(name).unwrap().to_string(), printed);
    }
}

#[test]
fn errors_name_the_kind_and_the_byte() {
    let cases: &[(&str, PolicyErrorKind, usize)] = &[
        ("", PolicyErrorKind::Empty, 0),
        ("   ", PolicyErrorKind::Empty, 3),
        ("a and", PolicyErrorKind::UnexpectedEnd, 5),
        ("a and or b", PolicyErrorKind::ExpectedAttribute, 6),
        ("a b", PolicyErrorKind::TrailingInput, 2),
        ("(a and b", PolicyErrorKind::ExpectedCloseParen, 8),
        ("a and b)", PolicyErrorKind::TrailingInput, 7),
        ("a & b", PolicyErrorKind::UnexpectedChar('&'), 2),
        ("\"abc", PolicyErrorKind::UnterminatedQuote, 0),
        ("\"a\\nb\"", PolicyErrorKind::BadEscape, 2),
        ("\"\"", PolicyErrorKind::EmptyAttribute, 0),
        ("a and \"x\u{7}\"", PolicyErrorKind::ControlCharacter, 6),
        (
            "0 of (a, b)",
            PolicyErrorKind::BadThreshold { k: 0, n: 2 },
            0,
        ),
        (
            "x or 3 of (a, b)",
            PolicyErrorKind::BadThreshold { k: 3, n: 2 },
            5,
        ),
        ("2 of a, b", PolicyErrorKind::ExpectedOpenParen, 5),
        (
            "99999999999999999999999 of (a)",
            PolicyErrorKind::NumberTooLarge,
            0,
        ),
        ("2 of (a, b", PolicyErrorKind::ExpectedCloseParen, 10),
        ("2 of (a b)", PolicyErrorKind::ExpectedCloseParen, 8),
    ];
    for (input, kind, position) in cases {
        let e = error(input);
        assert_eq!((&e.kind, e.position), (kind, *position), "{input:?}: {e}");
        assert!(!e.to_string().is_empty());
    }
    let long = format!("\"{}\"", "x".repeat(MAX_ATTRIBUTE_BYTES + 1));
    assert_eq!(error(&long).kind, PolicyErrorKind::AttributeTooLong);
}

#[test]
fn limits_are_enforced_without_recursing_past_them() {
    let deep = format!(
        "{}a{}",
        "(".repeat(MAX_DEPTH + 1),
        ")".repeat(MAX_DEPTH + 1)
    );
    assert_eq!(error(&deep).kind, PolicyErrorKind::TooDeep);
    let very_deep = format!("{}a{}", "(".repeat(100_000), ")".repeat(100_000));
    assert_eq!(error(&very_deep).kind, PolicyErrorKind::TooLong);
    let deep_ok = format!("{}a{}", "(".repeat(MAX_DEPTH), ")".repeat(MAX_DEPTH));
    assert_eq!(parse(&deep_ok).root(), &leaf("a"));
    let many = (0..=MAX_LEAVES)
        .map(|i| format!("a{i}"))
        .collect::<Vec<_>>()
        .join(" or ");
    assert_eq!(error(&many).kind, PolicyErrorKind::TooManyLeaves);
    let wide = (0..=MAX_CHILDREN)
        .map(|i| format!("a{i}"))
        .collect::<Vec<_>>()
        .join(" and ");
    assert_eq!(error(&wide).kind, PolicyErrorKind::TooManyChildren);
    let ok = (0..MAX_CHILDREN)
        .map(|i| format!("a{i}"))
        .collect::<Vec<_>>()
        .join(" and ");
    assert_eq!(parse(&ok).leaf_count(), MAX_CHILDREN);
    assert_eq!(
        AccessStructure::from_node(gate(3, vec![leaf("a"), leaf("b")]))
            .unwrap_err()
            .kind,
        PolicyErrorKind::BadThreshold { k: 3, n: 2 }
    );
}

#[test]
fn satisfaction_follows_thresholds() {
    let p = parse("2 of (a, b, c) and (d or e)");
    let holds = |set: &[&str]| p.is_satisfied_by(&|x: &Attribute| set.contains(&x.as_str()));
    assert!(holds(&["a", "b", "d"]));
    assert!(holds(&["a", "c", "e"]));
    assert!(!holds(&["a", "d"]));
    assert!(!holds(&["a", "b", "c"]));
}

fn names() -> impl Strategy<Value = Node> {
    prop::sample::select(vec![
        "a",
        "b",
        "role:nurse",
        "and",
        "x y",
        "é",
        "\"q\"",
        "7",
    ])
    .prop_map(leaf)
}

fn trees() -> impl Strategy<Value = Node> {
    names().prop_recursive(4, 24, 5, |inner| {
        prop::collection::vec(inner, 1..5).prop_flat_map(|children| {
            let n = children.len();
            (1..=n).prop_map(move |k| gate(k, children.clone()))
        })
    })
}

proptest! {
    #[test]
    fn print_then_parse_is_the_identity(root in trees()) {
        let p = AccessStructure::from_node(root).unwrap();
        let text = p.to_string();
        let again = AccessStructure::parse(&text).unwrap();
        prop_assert_eq!(&again, &p);
        prop_assert_eq!(again.to_string(), text);
        prop_assert_eq!(p.leaves().len(), p.leaf_count());
    }

    #[test]
    fn arbitrary_strings_never_panic(s in ".{0,200}") {
        let _ = AccessStructure::parse(&s);
    }

    #[test]
    fn token_soup_never_panics(tokens in prop::collection::vec(
        prop::sample::select(vec!["a", "and", "or", "of", "2", "(", ")", ",", "\"x\"", "\"", "\\", " ", "0"]), 0..40)) {
        let s = tokens.concat();
        if let Ok(p) = AccessStructure::parse(&s) {
            prop_assert_eq!(AccessStructure::parse(&p.to_string()).unwrap(), p);
        }
    }
}
