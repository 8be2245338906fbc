//! Rewriting absolute URLs from the upstream's base to the gateway's, for `Location` and
//! `Content-Location` headers, `Bundle.entry.fullUrl` and `Bundle.link.url`.

use std::borrow::Cow;

/// Rewrites every absolute URL under `from` in `text` so that it lies under `to`.
///
/// An occurrence of `from` is rewritten only when it is a whole URL prefix:
/// - it starts the text, or follows a character that cannot continue a URL scheme (anything
///   but an ASCII letter, digit, `+`, `-` or `.`), so `xhttp://a/fhir` is left alone;
/// - it ends the text, or is followed by `/`, `?` or `#`, or by a character that cannot appear
///   in a URL (space, `"`, `<`, `>`, …), so `http://a/fhir2/…` and `http://a/fhir.x` are left
///   alone when `from` is `http://a/fhir`.
///
/// Matching is exact and case-sensitive on bytes: give `from` and `to` in the normalised form
/// of [`Upstream::base`](crate::Upstream::base) (no trailing slash). An empty `from` rewrites
/// nothing. Text without a match is returned borrowed.
pub fn rewrite_base<'a>(text: &'a str, from: &str, to: &str) -> Cow<'a, str> {
    if from.is_empty() {
        return Cow::Borrowed(text);
    }
    let mut out: Option<String> = None;
    let mut copied = 0;
    for (start, _) in text.match_indices(from) {
        let end = start + from.len();
        if !starts_url(text, start) || !ends_prefix(text, end) {
            continue;
        }
        let buffer = out.get_or_insert_with(|| String::with_capacity(text.len() + to.len()));
        buffer.push_str(&text[copied..start]);
        buffer.push_str(to);
        copied = end;
    }
    match out {
        Some(mut buffer) => {
            buffer.push_str(&text[copied..]);
            Cow::Owned(buffer)
        }
        None => Cow::Borrowed(text),
    }
}

/// Whether a URL can start at `start`: the text begins there or the character before cannot
/// be part of a scheme.
fn starts_url(text: &str, start: usize) -> bool {
    text[..start]
        .chars()
        .next_back()
        .is_none_or(|c| !(c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.')))
}

/// Whether the match ending at `end` is a whole prefix: end of text, a delimiter that starts
/// the path, query or fragment, or a character that ends the URL.
fn ends_prefix(text: &str, end: usize) -> bool {
    text[end..]
        .chars()
        .next()
        .is_none_or(|c| matches!(c, '/' | '?' | '#') || !is_url_char(c))
}

/// RFC 3986 `unreserved`, `reserved` and `%`.
fn is_url_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || "-._~:/?#[]@!$&'()*+,;=%".contains(c)
}

#[cfg(test)]
mod tests {
    use super::*;

    const FROM: &str = "http://a/fhir";
    const TO: &str = "https://gw.example/r4";

    #[test]
    fn rewrites_whole_prefixes() {
        let cases = [
            ("http://a/fhir", "https://gw.example/r4"),
            ("http://a/fhir/Patient/1", "https://gw.example/r4/Patient/1"),
            (
                "http://a/fhir?_getpages=x",
                "https://gw.example/r4?_getpages=x",
            ),
            ("http://a/fhir#top", "https://gw.example/r4#top"),
            (
                "<http://a/fhir/P/1>; rel=\"next\"",
                "<https://gw.example/r4/P/1>; rel=\"next\"",
            ),
            (
                "\"http://a/fhir/P/1\",\"http://a/fhir\"",
                "\"https://gw.example/r4/P/1\",\"https://gw.example/r4\"",
            ),
            (
                "see http://a/fhir/P/1 and http://a/fhir/P/2",
                "see https://gw.example/r4/P/1 and https://gw.example/r4/P/2",
            ),
        ];
        for (text, expected) in cases {
            assert_eq!(rewrite_base(text, FROM, TO), expected, "{text}");
        }
    }

    #[test]
    fn leaves_prefix_confusions_alone() {
        for text in [
            "http://a/fhir2/Patient/1",
            "http://a/fhir2",
            "http://a/fhir.x/Patient",
            "http://a/fhir-old/Patient",
            "http://a/fhir_x",
            "http://a/fhir%2F/x",
            "http://a/fhir:8080/x",
            "xhttp://a/fhir/Patient/1",
            "shttp://a/fhir",
            "http://a/fhi",
            "https://a/fhir/Patient/1",
            "HTTP://A/fhir/Patient/1",
            "",
        ] {
            let rewritten = rewrite_base(text, FROM, TO);
            assert!(matches!(rewritten, Cow::Borrowed(_)), "{text}");
            assert_eq!(rewritten, text);
        }
    }

    #[test]
    fn empty_from_rewrites_nothing() {
        assert_eq!(rewrite_base("http://a/fhir", "", TO), "http://a/fhir");
    }

    #[test]
    fn base_at_host_root() {
        assert_eq!(
            rewrite_base("http://a/Patient/1", "http://a", TO),
            "https://gw.example/r4/Patient/1"
        );
        assert_eq!(
            rewrite_base("http://ab/Patient/1", "http://a", TO),
            "http://ab/Patient/1"
        );
        assert_eq!(
            rewrite_base("http://a:80/Patient/1", "http://a", TO),
            "http://a:80/Patient/1"
        );
    }

    #[test]
    fn does_not_rewrite_inside_a_replacement() {
        // `to` contains `from`: the output must not be rewritten again.
        assert_eq!(
            rewrite_base("http://a/fhir/P", FROM, "http://a/fhir/v2"),
            "http://a/fhir/v2/P"
        );
    }
}
