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

use serde_json::{Map, Value};

/// Objects of at most this many members are searched member by member; larger ones by hash.
pub const LINEAR_MEMBERS: usize = 12;

/// `value` as JSON text, written straight into one buffer. `Value`'s `to_string` (its `Display`)
/// hands the same text to a `fmt::Formatter` a piece at a time (a quote, a name, a colon), each
/// piece a call through `fmt` into a `String` grown from empty. Writing a `Value` cannot fail
/// (its keys are strings, the buffer is memory); were it to, the text would come from `Display`.
pub fn json_text(value: &Value) -> String {
    serde_json::to_string(value).unwrap_or_else(|_| value.to_string())
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
