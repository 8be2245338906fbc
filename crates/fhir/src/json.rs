//! Member lookup in the small JSON objects FHIR is made of ([`Members`]).
//!
//! `serde_json::Map` is, with `preserve_order`, an `IndexMap` under std's SipHash: every lookup
//! in an object of two members or more hashes its key first. A FHIR object has a handful of
//! members (a Coding three, an extension two, a resource's root ten or so), and comparing the
//! key with each member's name in turn costs less than hashing it. The walks that run over every
//! object of every resource the gateway passes (finding envelopes, opening, masking) look members
//! up this way: on a 100-entry searchset of sealed Observations, a walk asking two members of
//! every object took 33 µs instead of 90 µs with `get` (issue 18, BENCHMARKS.md). Larger objects
//! are looked up by hash, as before.
//!
//! A map's keys are unique, so both ways find the same member.
//!
//! # Writing
//!
//! [`write_json`] writes a [`Value`] as the compact JSON text `serde_json::to_string` writes,
//! byte for byte, straight into a `String`; [`write_json_with`] lets the caller write each string
//! value (the gateway moves the upstream's base in them on the way out). `serde_json`'s writer
//! goes through its `Serializer` and `Formatter` traits for every quote, comma and colon, and looks
//! each byte of each string up in its escape table one at a time; this one checks eight bytes of
//! a string at a time for the bytes JSON escapes (`"`, `\` and those below `0x20`) and copies
//! the runs between them whole. On the 180 kB answer of a 100-entry search it took 62 µs where
//! `serde_json::to_vec` took 86 µs, the two alternating in one process (issue 18, BENCHMARKS.md).

use serde_json::{Map, Value};

/// Objects of at most this many members are searched member by member; larger ones by hash.
pub const LINEAR_MEMBERS: usize = 12;

/// `value` as JSON text ([`write_json`]): the text `Value`'s `to_string` (its `Display`) and
/// `serde_json::to_string` make, written straight into one buffer.
pub fn json_text(value: &Value) -> String {
    let mut out = String::new();
    write_json(&mut out, value);
    out
}

/// Appends `value` to `out` as compact JSON text, byte for byte what `serde_json::to_string`
/// writes: members in their order, numbers as their text (`arbitrary_precision`), strings escaped
/// as `serde_json` escapes them (`\"`, `\\`, `\b`, `\f`, `\n`, `\r`, `\t`, `\u00xx` for the
/// other bytes below `0x20`, nothing else). It cannot fail.
pub fn write_json(out: &mut String, value: &Value) {
    write_json_with(out, value, &mut write_json_string);
}

/// [`write_json`], with each string value (not each member name) written by `string`, which
/// appends it as a JSON string ([`write_json_string`] of it, or of what it stands for).
pub fn write_json_with<F>(out: &mut String, value: &Value, string: &mut F)
where
    F: FnMut(&mut String, &str),
{
    match value {
        Value::Null => out.push_str("null"),
        Value::Bool(true) => out.push_str("true"),
        Value::Bool(false) => out.push_str("false"),
        Value::Number(number) => out.push_str(number.as_str()),
        Value::String(text) => string(out, text),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_json_with(out, item, string);
            }
            out.push(']');
        }
        Value::Object(members) => {
            out.push('{');
            for (i, (name, member)) in members.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_json_string(out, name);
                out.push(':');
                write_json_with(out, member, string);
            }
            out.push('}');
        }
    }
}

/// Appends `text` to `out` as a JSON string, escaped as [`write_json`] says.
pub fn write_json_string(out: &mut String, text: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push('"');
    let bytes = text.as_bytes();
    let mut start = 0;
    loop {
        let at = start + first_escaped(&bytes[start..]);
        // `at` is the end of `text` or an ASCII byte: a character boundary either way.
        out.push_str(&text[start..at]);
        let Some(&byte) = bytes.get(at) else {
            break;
        };
        match byte {
            b'"' => out.push_str("\\\""),
            b'\\' => out.push_str("\\\\"),
            0x08 => out.push_str("\\b"),
            0x09 => out.push_str("\\t"),
            0x0a => out.push_str("\\n"),
            0x0c => out.push_str("\\f"),
            0x0d => out.push_str("\\r"),
            _ => {
                out.push_str("\\u00");
                out.push(char::from(HEX[usize::from(byte >> 4)]));
                out.push(char::from(HEX[usize::from(byte & 0x0f)]));
            }
        }
        start = at + 1;
    }
    out.push('"');
}

/// The index of the first byte of `bytes` that JSON escapes (`"`, `\`, below `0x20`), or its
/// length. Eight bytes at a time: for each kind, with `x` the word made so that the bytes of that
/// kind are zero, `(x - 0x01…) & !x & 0x80…` has the high bit of the lowest such byte set (below
/// `0x20`: `(w - 0x20…) & !w & 0x80…`), and bits above it only where a borrow ran on from it, so
/// the lowest bit set names the first such byte exactly. The last few bytes one at a time (padding
/// them into a word took longer: a copy of a length not known until run time).
fn first_escaped(bytes: &[u8]) -> usize {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    let mut chunks = bytes.chunks_exact(8);
    let mut offset = 0;
    for chunk in &mut chunks {
        let mut word = [0; 8];
        word.copy_from_slice(chunk);
        let word = u64::from_le_bytes(word);
        let quote = word ^ (ONES * u64::from(b'"'));
        let backslash = word ^ (ONES * u64::from(b'\\'));
        let found = ((word.wrapping_sub(ONES * 0x20) & !word)
            | (quote.wrapping_sub(ONES) & !quote)
            | (backslash.wrapping_sub(ONES) & !backslash))
            & HIGHS;
        if found != 0 {
            // A bit index below 64 divided by 8: at most 7, which any `usize` holds.
            return offset + (found.trailing_zeros() / 8) as usize;
        }
        offset += 8;
    }
    let rest = chunks.remainder();
    offset
        + rest
            .iter()
            .position(|&b| b < 0x20 || b == b'"' || b == b'\\')
            .unwrap_or(rest.len())
}

/// `get`, `get_mut` and `contains_key` by member name, searched in order in a small object
/// (module docs). Implemented for a JSON object and for any JSON value (`None` for a value that
/// is not an object, as `Value::get` with a `&str`).
pub trait Members {
    /// The member `key`, as `get(key)`.
    fn member(&self, key: &str) -> Option<&Value>;
    /// The member `key`, mutably, as `get_mut(key)`.
    fn member_mut(&mut self, key: &str) -> Option<&mut Value>;
    /// Whether there is a member `key`, as `contains_key(key)`.
    fn has_member(&self, key: &str) -> bool {
        self.member(key).is_some()
    }
}

impl Members for Map<String, Value> {
    #[inline]
    fn member(&self, key: &str) -> Option<&Value> {
        if self.len() > LINEAR_MEMBERS {
            return self.get(key);
        }
        self.iter()
            .find(|(name, _)| name.as_str() == key)
            .map(|(_, value)| value)
    }

    #[inline]
    fn member_mut(&mut self, key: &str) -> Option<&mut Value> {
        if self.len() > LINEAR_MEMBERS {
            return self.get_mut(key);
        }
        self.iter_mut()
            .find(|(name, _)| name.as_str() == key)
            .map(|(_, value)| value)
    }
}

impl Members for Value {
    #[inline]
    fn member(&self, key: &str) -> Option<&Value> {
        self.as_object()?.member(key)
    }

    #[inline]
    fn member_mut(&mut self, key: &str) -> Option<&mut Value> {
        self.as_object_mut()?.member_mut(key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    /// Every member of objects below, at and above the linear bound is found as `get` finds it,
    /// and a missing one is missing, both ways and mutably.
    #[test]
    fn finds_what_get_finds_at_every_size() {
        for size in [
            0,
            1,
            2,
            LINEAR_MEMBERS - 1,
            LINEAR_MEMBERS,
            LINEAR_MEMBERS + 1,
            40,
        ] {
            let mut object = Map::new();
            for i in 0..size {
                object.insert(format!("m{i}"), json!(i));
            }
            for i in 0..size {
                let key = format!("m{i}");
                assert_eq!(object.member(&key), object.get(&key), "{size}: {key}");
                assert_eq!(object.member(&key), Some(&json!(i)));
                assert!(object.has_member(&key));
            }
            for missing in ["", "m", "m00", "M0", "x"] {
                assert_eq!(object.member(missing), None, "{size}: {missing}");
                assert!(!object.has_member(missing));
            }
            if size > 0 {
                let last = format!("m{}", size - 1);
                *object.member_mut(&last).unwrap() = json!("changed");
                assert_eq!(object.get(&last), Some(&json!("changed")));
            }
            let mut value = Value::Object(object.clone());
            assert_eq!(value.member("m0"), object.get("m0"));
            assert_eq!(value.member_mut("nope"), None);
        }
    }

    #[test]
    fn json_text_is_what_display_writes() {
        let values = [
            json!(null),
            json!({}),
            json!([]),
            json!({"resourceType": "Patient", "name": [{"family": "Ö\"\\\n\u{1}", "given": ["é", "😀"]}],
                   "multipleBirthInteger": -3, "x": 1.5e300, "active": true, "_birthDate": null}),
            json!("a \u{7f} b </script>"),
        ];
        for value in values {
            assert_eq!(json_text(&value), value.to_string());
            assert_eq!(
                serde_json::from_str::<Value>(&json_text(&value)).unwrap(),
                value
            );
        }
    }

    /// Every ASCII byte and some wider characters, each at every place in an eight-byte chunk and
    /// in the tail after the last one, as a string value and as a member name: written as
    /// `serde_json` writes them.
    #[test]
    fn every_byte_is_escaped_as_serde_json_escapes_it_wherever_it_falls() {
        let specials = (0u8..0x80)
            .map(char::from)
            .chain(['é', '€', '😀', '\u{2028}']);
        for special in specials {
            for before in 0..17 {
                for after in [0, 1, 7, 8, 9] {
                    let text = format!("{}{special}{}", "a".repeat(before), "b".repeat(after));
                    let mut written = String::new();
                    write_json_string(&mut written, &text);
                    assert_eq!(
                        written,
                        serde_json::to_string(&text).unwrap(),
                        "{special:?} after {before}"
                    );
                    let object = json!({text.clone(): [text.clone(), 1.50, null]});
                    assert_eq!(json_text(&object), object.to_string(), "{special:?}");
                }
            }
        }
    }

    /// A string value goes through the caller's writer; a member name does not.
    #[test]
    fn string_values_go_through_the_callers_writer_and_names_do_not() {
        let value = json!({"a": "x", "b": ["x", {"x": "y"}], "x": 1});
        let mut written = String::new();
        write_json_with(&mut written, &value, &mut |out, text| {
            write_json_string(out, &text.to_uppercase());
        });
        assert_eq!(written, r#"{"a":"X","b":["X",{"x":"Y"}],"x":1}"#);
    }

    fn any_text() -> impl Strategy<Value = String> {
        let character = prop_oneof![
            3 => (0u8..0x80).prop_map(char::from),
            1 => any::<char>(),
        ];
        proptest::collection::vec(character, 0..24).prop_map(|chars| chars.into_iter().collect())
    }

    fn any_value() -> impl Strategy<Value = Value> {
        let number = prop_oneof![
            any::<i64>().prop_map(|n| json!(n)),
            any::<u64>().prop_map(|n| json!(n)),
            any::<f64>()
                .prop_filter("finite", |f| f.is_finite())
                .prop_map(|f| json!(f)),
            prop_oneof![
                Just("1.50"),
                Just("-0.0"),
                Just("1e400"),
                Just("0.000"),
                Just("-12345678901234567890123"),
            ]
            .prop_map(|text| serde_json::from_str::<Value>(text).unwrap()),
        ];
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            number,
            any_text().prop_map(Value::String),
        ];
        leaf.prop_recursive(4, 48, 6, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                proptest::collection::vec((any_text(), inner), 0..6)
                    .prop_map(|members| Value::Object(members.into_iter().collect())),
            ]
        })
    }

    proptest! {
        /// Any value is written byte for byte as `serde_json::to_string` writes it.
        #[test]
        fn any_value_is_written_as_serde_json_writes_it(value in any_value()) {
            prop_assert_eq!(json_text(&value), serde_json::to_string(&value).unwrap());
        }
    }

    #[test]
    fn a_value_that_is_not_an_object_has_no_members() {
        for mut value in [
            json!(null),
            json!(1),
            json!("m0"),
            json!(["m0"]),
            json!(true),
        ] {
            assert_eq!(value.member("m0"), None);
            assert_eq!(value.member_mut("0"), None);
            assert!(!value.has_member("m0"));
        }
    }
}
