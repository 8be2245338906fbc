//! Properties of `rewrite_base`: URLs under the base move, everything else stays byte for byte.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::borrow::Cow;

use fhirseal_upstream::rewrite_base;
use proptest::prelude::*;

const FROM: &str = "http://up.internal:8080/fhir";
const TO: &str = "https://gateway.example/r4";

/// A URL tail under the base: empty, or a path/query/fragment start followed by URL characters
/// that cannot form `FROM` again (no `:`).
fn tail() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(String::new()),
        ("[/?#]", "[A-Za-z0-9/._~?&=$|%-]{0,30}")
            .prop_map(|(start, rest)| format!("{start}{rest}")),
    ]
}

/// A word that is not a URL under the base.
fn word() -> impl Strategy<Value = String> {
    "[A-Za-z0-9/._~?&=:\"<>{}\\[\\], -]{0,20}"
        .prop_filter("must not contain the base", |w| !w.contains(FROM))
}

#[derive(Clone, Debug)]
enum Piece {
    Url(String),
    Word(String),
}

fn piece() -> impl Strategy<Value = Piece> {
    prop_oneof![tail().prop_map(Piece::Url), word().prop_map(Piece::Word)]
}

proptest! {
    #[test]
    fn urls_under_the_base_move_and_the_rest_stays(pieces in prop::collection::vec(piece(), 0..8)) {
        // Pieces are separated by a space, which ends a URL and cannot continue a scheme.
        let render = |base: &str| {
            pieces
                .iter()
                .map(|piece| match piece {
                    Piece::Url(tail) => format!("{base}{tail}"),
                    Piece::Word(word) => word.clone(),
                })
                .collect::<Vec<_>>()
                .join(" \n ")
        };
        let text = render(FROM);
        prop_assert_eq!(rewrite_base(&text, FROM, TO).into_owned(), render(TO));
    }

    #[test]
    fn text_without_the_base_is_borrowed_unchanged(text in ".{0,60}") {
        prop_assume!(!text.contains(FROM));
        let rewritten = rewrite_base(&text, FROM, TO);
        prop_assert!(matches!(rewritten, Cow::Borrowed(_)));
        prop_assert_eq!(rewritten, text.as_str());
    }

    /// Prefix confusion: the base followed by any URL character other than `/`, `?`, `#` is a
    /// different URL (`…/fhir2`, `…/fhir.old`, `…/fhir:9`), and a scheme character before it
    /// makes it part of another URL (`xhttp://…`).
    #[test]
    fn longer_or_embedded_prefixes_are_left_alone(
        next in "[A-Za-z0-9._~:@!$&'()*+,;=%\\[\\]-]",
        rest in "[A-Za-z0-9/]{0,10}",
        before in "[A-Za-z0-9+.-]",
    ) {
        let longer = format!("{FROM}{next}{rest}");
        prop_assert_eq!(rewrite_base(&longer, FROM, TO), longer.as_str());
        let embedded = format!("{before}{FROM}/{rest}");
        prop_assert_eq!(rewrite_base(&embedded, FROM, TO), embedded.as_str());
    }

    /// Rewriting there and back restores the text when neither base occurs in it otherwise.
    #[test]
    fn round_trip(tails in prop::collection::vec(tail(), 0..5)) {
        let text = tails.iter().map(|t| format!("\"{FROM}{t}\"")).collect::<Vec<_>>().join(",");
        let there = rewrite_base(&text, FROM, TO).into_owned();
        prop_assert!(!there.contains(FROM));
        prop_assert_eq!(rewrite_base(&there, TO, FROM), text.as_str());
    }
}

#[test]
fn the_briefs_example() {
    assert_eq!(
        rewrite_base(
            "http://a/fhir2/Patient/1",
            "http://a/fhir",
            "https://gw/fhir"
        ),
        "http://a/fhir2/Patient/1"
    );
    assert_eq!(
        rewrite_base(
            "http://a/fhir/Patient/1",
            "http://a/fhir",
            "https://gw/fhir"
        ),
        "https://gw/fhir/Patient/1"
    );
}
