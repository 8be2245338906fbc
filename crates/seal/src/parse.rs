//! Parsing an upstream answer that is about to be opened for a reader, without its blind-index
//! tokens.
//!
//! A sealed resource carries one `meta.tag` coding per blind-index token: for a Patient under the
//! embedded policy that is 68 codings, three quarters of its bytes. They are for the upstream's
//! search alone; opening takes them off ([`crate::index::take_tags`]) before the reader sees the
//! resource. [`parse_for_reader`] never builds them: an index token in a resource's `meta.tag` is
//! read as borrowed text, recognised by its system and skipped. Everything else becomes the same
//! [`Value`] as `serde_json::from_slice` makes (numbers kept exactly as written, member order
//! kept, a repeated member's last value winning), but each object and list is made once at its
//! final size rather than grown as it is read ([`Scratch`]); the plaintext of an opened element
//! is parsed that way too.
//!
//! Only for answers that are opened and nothing else: a write merges with the tokens a stored
//! resource holds ([`crate::merge()`]), and re-indexing compares them, so those parse whole.

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

use crate::shape::BLIND_INDEX_SYSTEM;

/// The member name by which `serde_json` (with `arbitrary_precision`, as this workspace builds
/// it) hands a number to a visitor: a one-member map holding the number's text. `serde_json`'s
/// own [`Value`] reads an object whose first member has this name as that number, and so does
/// this parser (the tests compare the two on numbers).
const NUMBER_TOKEN: &str = "$serde_json::private::Number";

/// The members under which R4 JSON can hold a resource: `DomainResource.contained`,
/// `Bundle.entry` with its `resource` and `response.outcome`, `Parameters.parameter` with its
/// `resource` and its `part`s. The root and every object reached through these alone are where a
/// resource (and its `meta`) can sit.
const HOLDING_A_RESOURCE: [&str; 7] = [
    "contained",
    "entry",
    "resource",
    "response",
    "outcome",
    "parameter",
    "part",
];

/// `json` as [`serde_json::from_slice`] would parse it, less every blind-index token (a coding
/// whose `system` starts with [`BLIND_INDEX_SYSTEM`]) in the `meta.tag` of the root and of every
/// object below it through members that can hold a resource (`contained`, `entry`, `resource`,
/// `response`, `outcome`, `parameter`, `part`) alone: where a resource can sit.
/// A `tag` list that held nothing else is left out, and so is a `meta` that held nothing else: no
/// `"tag": []` or `"meta": {}` is made. The same errors as `from_slice` for input that is not
/// JSON.
pub fn parse_for_reader(json: &[u8]) -> serde_json::Result<Value> {
    // UTF-8 checked once for the whole body rather than string by string; a body that is not
    // UTF-8 is parsed from its bytes, for `from_slice`'s own error at its own place.
    match std::str::from_utf8(json) {
        Ok(text) => parse_with(serde_json::Deserializer::from_str(text)),
        Err(_) => parse_with(serde_json::Deserializer::from_slice(json)),
    }
}

fn parse_with<'de, R: serde_json::de::Read<'de>>(
    mut deserializer: serde_json::Deserializer<R>,
) -> serde_json::Result<Value> {
    let mut scratch = Scratch::default();
    let value = Any(Node(At::Resource, &mut scratch)).deserialize(&mut deserializer)?;
    deserializer.end()?;
    // A resource position is always kept.
    Ok(value.unwrap_or(Value::Null))
}

/// `text` as [`serde_json::from_str`] would parse it into a [`Value`], each object and list made
/// at its final size on `scratch` (left empty, its room kept for the next parse): for the
/// plaintext of each element an answer opens.
pub(crate) fn parse_value(text: &str, scratch: &mut Scratch) -> serde_json::Result<Value> {
    let mut deserializer = serde_json::Deserializer::from_str(text);
    let parsed = Any(Plain(scratch)).deserialize(&mut deserializer);
    // A parse that failed half-way leaves what it had pushed.
    scratch.members.clear();
    scratch.items.clear();
    let value = parsed?;
    deserializer.end()?;
    Ok(value)
}

/// The members and items of the objects and lists a parse is inside, on one stack each, so that
/// each object and list is made once, at its final size, when its last member or item has been
/// read. `serde_json`'s own [`Value`] grows each one as it reads (an `IndexMap` of five members
/// has its hash table and its entries allocated twice, and the table rehashed once): made at
/// their size, the 100-entry Bundle of the `parse` benchmark parsed 11 % faster, and a search
/// took 4 % less CPU at 16 connections (issue 18, BENCHMARKS.md).
#[derive(Default)]
pub(crate) struct Scratch {
    members: Vec<(String, Value)>,
    items: Vec<Value>,
}

impl Scratch {
    /// The object of the members pushed since `base`, as `serde_json` builds one (a repeated
    /// member keeps its first place and its last value), less those named in `gone`.
    fn object(&mut self, base: usize, gone: &[String]) -> Map<String, Value> {
        let mut object = Map::with_capacity(self.members.len() - base);
        for (name, value) in self.members.drain(base..) {
            if gone.is_empty() || !gone.contains(&name) {
                object.insert(name, value);
            }
        }
        object
    }

    /// The list of the items pushed since `base`.
    fn list(&mut self, base: usize) -> Vec<Value> {
        self.items.drain(base..).collect()
    }
}

/// Where in the tree a value sits, as far as index tokens are concerned.
#[derive(Clone, Copy, PartialEq, Eq)]
enum At {
    /// Where a resource can sit (or the path to one).
    Resource,
    /// The value of a resource's `meta`.
    Meta,
    /// The value of its `meta.tag`.
    Tags,
    /// One element of its `meta.tag`.
    Tag,
}

impl At {
    /// Where the value of member `name` of an object here sits: `None` for nowhere that matters,
    /// which [`Plain`] parses.
    fn member(self, name: &str) -> Option<Self> {
        match (self, name) {
            (Self::Resource, "meta") => Some(Self::Meta),
            (Self::Resource, name) if HOLDING_A_RESOURCE.contains(&name) => Some(Self::Resource),
            (Self::Meta, "tag") => Some(Self::Tags),
            _ => None,
        }
    }

    /// Where the elements of a list here sit.
    fn element(self) -> Option<Self> {
        match self {
            Self::Resource => Some(Self::Resource),
            Self::Tags => Some(Self::Tag),
            Self::Meta | Self::Tag => None,
        }
    }
}

/// Any JSON value, handed to the visitor it holds: the seed of each of this module's visitors.
struct Any<V>(V);

impl<'de, V: Visitor<'de>> DeserializeSeed<'de> for Any<V> {
    type Value = V::Value;

    #[inline]
    fn deserialize<D: de::Deserializer<'de>>(
        self,
        deserializer: D,
    ) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_any(self.0)
    }
}

/// Parses one value at `At`: `None` when it is to be left out (an index token, or a `tag` list or
/// `meta` that held nothing but index tokens).
struct Node<'s>(At, &'s mut Scratch);

/// A value at `Some(At)` through [`Node`], elsewhere through [`Plain`].
struct Somewhere<'s>(Option<At>, &'s mut Scratch);

impl<'de> DeserializeSeed<'de> for Somewhere<'_> {
    type Value = Option<Value>;

    #[inline]
    fn deserialize<D: de::Deserializer<'de>>(
        self,
        deserializer: D,
    ) -> Result<Self::Value, D::Error> {
        match self.0 {
            Some(at) => deserializer.deserialize_any(Node(at, self.1)),
            None => deserializer.deserialize_any(Plain(self.1)).map(Some),
        }
    }
}

impl<'de> Visitor<'de> for Node<'_> {
    type Value = Option<Value>;

    fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("any valid JSON value")
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Self::Value, E> {
        Plain(self.1).visit_bool(v).map(Some)
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
        Plain(self.1).visit_i64(v).map(Some)
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
        Plain(self.1).visit_u64(v).map(Some)
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
        Plain(self.1).visit_f64(v).map(Some)
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Plain(self.1).visit_str(v).map(Some)
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
        Plain(self.1).visit_string(v).map(Some)
    }

    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(Some(Value::Null))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let Self(at, scratch) = self;
        let element = at.element();
        let base = scratch.items.len();
        let mut dropped = false;
        while let Some(value) = seq.next_element_seed(Somewhere(element, &mut *scratch))? {
            match value {
                Some(value) => scratch.items.push(value),
                None => dropped = true,
            }
        }
        let list = scratch.list(base);
        Ok((!(at == At::Tags && dropped && list.is_empty())).then_some(Value::Array(list)))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let Self(at, scratch) = self;
        let Some(first) = map.next_key_seed(Key)? else {
            return Ok(Some(Value::Object(Map::new())));
        };
        if first == NUMBER_TOKEN {
            return number(map).map(Some);
        }
        if at == At::Tag {
            return tag(first, map, scratch);
        }
        let base = scratch.members.len();
        // Members whose last occurrence so far was left out: as though parsed and then taken
        // off, so an earlier occurrence goes too, since the last one would have won.
        let mut gone: Vec<String> = Vec::new();
        let mut dropped = false;
        let mut key = Some(first);
        while let Some(name) = key {
            let child = at.member(&name);
            let value = map.next_value_seed(Somewhere(child, &mut *scratch))?;
            let name = name.into_owned();
            match value {
                Some(value) => {
                    if !gone.is_empty() {
                        gone.retain(|g| *g != name);
                    }
                    scratch.members.push((name, value));
                }
                None => {
                    // A `meta` goes with its own `tag` list only, as `take_tags` would take it.
                    dropped |= child == Some(At::Tags);
                    if !gone.contains(&name) {
                        gone.push(name.clone());
                    }
                    // Held in its place, for a later occurrence that is kept.
                    scratch.members.push((name, Value::Null));
                }
            }
            key = map.next_key_seed(Key)?;
        }
        let object = scratch.object(base, &gone);
        Ok((!(at == At::Meta && dropped && object.is_empty())).then_some(Value::Object(object)))
    }
}

/// A value parsed as `serde_json`'s own [`Value`] parses it, but through [`Scratch`]: the same
/// tree (numbers kept exactly as written, member order kept, a repeated member's last value
/// winning), each object and list allocated once. One difference: `serde_json` built with its
/// `raw_value` feature (axum turns it on in the gateway's build) reads an object whose first
/// member is `$serde_json::private::RawValue` as the JSON text inside that member's string; here
/// it is an object like any other, as it is where a resource can sit ([`Node`]).
struct Plain<'s>(&'s mut Scratch);

impl<'de> Visitor<'de> for Plain<'_> {
    type Value = Value;

    fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("any valid JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Self::Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Self::Value, E> {
        Ok(Value::Number(v.into()))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Self::Value, E> {
        Ok(Value::Number(v.into()))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Self::Value, E> {
        Ok(serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number))
    }

    fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<Self::Value, E> {
        Ok(Value::String(v))
    }

    // `serde_json` hands `null` here; it calls `visit_none` and `visit_some` only for an
    // `Option`, which nothing in this module asks it for.
    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let scratch = self.0;
        let base = scratch.items.len();
        while let Some(value) = seq.next_element_seed(Any(Plain(&mut *scratch)))? {
            scratch.items.push(value);
        }
        Ok(Value::Array(scratch.list(base)))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let scratch = self.0;
        let Some(first) = map.next_key_seed(Key)? else {
            return Ok(Value::Object(Map::new()));
        };
        if first == NUMBER_TOKEN {
            return number(map);
        }
        let base = scratch.members.len();
        let mut key = Some(first);
        while let Some(name) = key {
            let value = map.next_value_seed(Any(Plain(&mut *scratch)))?;
            scratch.members.push((name.into_owned(), value));
            key = map.next_key_seed(Key)?;
        }
        Ok(Value::Object(scratch.object(base, &[])))
    }
}

/// The number whose text is the value of the one member [`NUMBER_TOKEN`] (already read).
fn number<'de, A: MapAccess<'de>>(mut map: A) -> Result<Value, A::Error> {
    let text: Cow<'de, str> = map.next_value_seed(Key)?;
    text.parse().map(Value::Number).map_err(de::Error::custom)
}

/// One `meta.tag` element that is an object, from its first member on: `None` for an index
/// token, which is read as borrowed text and never built.
fn tag<'de, A: MapAccess<'de>>(
    first: Cow<'de, str>,
    mut map: A,
    scratch: &mut Scratch,
) -> Result<Option<Value>, A::Error> {
    let mut members: Vec<(Cow<'de, str>, Member<'de>)> = Vec::with_capacity(2);
    let mut key = Some(first);
    while let Some(name) = key {
        members.push((name, map.next_value_seed(Any(TagMember(&mut *scratch)))?));
        key = map.next_key_seed(Key)?;
    }
    // The last `system` wins, as in a parsed object.
    let system = members.iter().rev().find(|(name, _)| name == "system");
    if let Some((_, Member::Text(system))) = system
        && system.starts_with(BLIND_INDEX_SYSTEM)
    {
        return Ok(None);
    }
    let mut object = Map::with_capacity(members.len());
    for (name, member) in members {
        let value = match member {
            Member::Text(text) => Value::String(text.into_owned()),
            Member::Other(value) => value,
        };
        object.insert(name.into_owned(), value);
    }
    Ok(Some(Value::Object(object)))
}

/// A member name (or a number's text), borrowed from the input unless it holds an escape.
struct Key;

impl<'de> DeserializeSeed<'de> for Key {
    type Value = Cow<'de, str>;

    fn deserialize<D: de::Deserializer<'de>>(
        self,
        deserializer: D,
    ) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for Key {
    type Value = Cow<'de, str>;

    fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("a string")
    }

    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(Cow::Borrowed(v))
    }

    fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Cow::Owned(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<Self::Value, E> {
        Ok(Cow::Owned(v))
    }
}

/// A member of a `meta.tag` element: text borrowed where it can be, anything else parsed.
enum Member<'de> {
    Text(Cow<'de, str>),
    Other(Value),
}

/// Reads one member of a `meta.tag` element ([`Member`]).
struct TagMember<'s>(&'s mut Scratch);

impl<'de> Visitor<'de> for TagMember<'_> {
    type Value = Member<'de>;

    fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("any valid JSON value")
    }

    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(Member::Text(Cow::Borrowed(v)))
    }

    fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Member::Text(Cow::Owned(v.to_owned())))
    }

    fn visit_string<E>(self, v: String) -> Result<Self::Value, E> {
        Ok(Member::Text(Cow::Owned(v)))
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Self::Value, E> {
        Plain(self.0).visit_bool(v).map(Member::Other)
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
        Plain(self.0).visit_i64(v).map(Member::Other)
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
        Plain(self.0).visit_u64(v).map(Member::Other)
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
        Plain(self.0).visit_f64(v).map(Member::Other)
    }

    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(Member::Other(Value::Null))
    }

    // Lists and objects (numbers among them): [`Plain`], from where the parser stands.
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
        Plain(self.0).visit_seq(seq).map(Member::Other)
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        Plain(self.0).visit_map(map).map(Member::Other)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// What the reader got before: the whole tree, then the tokens taken off every resource.
    fn parsed_then_taken(json: &str) -> Value {
        fn walk(value: &mut Value) {
            match value {
                Value::Object(object) => {
                    if object.get("meta").is_some_and(Value::is_object) {
                        take(object);
                    }
                    object
                        .iter_mut()
                        .filter(|(name, _)| HOLDING_A_RESOURCE.contains(&name.as_str()))
                        .for_each(|(_, value)| walk(value));
                }
                Value::Array(list) => list.iter_mut().for_each(walk),
                _ => {}
            }
        }
        /// `take_tags`, but a `tag` or `meta` goes only when tokens were taken from it (a
        /// resource root's empty ones are `take_tags`' to remove, whichever parse ran).
        fn take(object: &mut Map<String, Value>) {
            let Some(Value::Object(meta)) = object.get_mut("meta") else {
                return;
            };
            let Some(Value::Array(list)) = meta.get_mut("tag") else {
                return;
            };
            let before = list.len();
            list.retain(|t| !crate::index::is_index_tag(t));
            if list.len() < before && list.is_empty() {
                meta.shift_remove("tag");
                if meta.is_empty() {
                    object.shift_remove("meta");
                }
            }
        }
        let mut value: Value = serde_json::from_str(json).unwrap();
        walk(&mut value);
        value
    }

    fn same(json: &str) {
        let lean = parse_for_reader(json.as_bytes()).unwrap();
        let whole = parsed_then_taken(json);
        assert_eq!(lean, whole, "{json}");
        // Equal trees can still differ in member order, which serialising shows.
        assert_eq!(
            serde_json::to_string(&lean).unwrap(),
            serde_json::to_string(&whole).unwrap()
        );
    }

    fn token(name: &str, code: &str) -> Value {
        json!({"system": format!("{BLIND_INDEX_SYSTEM}{name}"), "code": code})
    }

    #[test]
    fn a_sealed_resource_loses_its_tokens_and_keeps_the_rest() {
        let patient = json!({
            "resourceType": "Patient",
            "id": "p",
            "meta": {
                "versionId": "3",
                "tag": [
                    token("Patient.name.family", "a1"),
                    {"system": "urn:ward", "code": "7", "display": "Ward \"7\"", "userSelected": true},
                    token("g2/Patient.birthDate", "b2"),
                ],
                "security": [{"system": "urn:s", "code": "MASKED"}],
            },
            "name": [{"family": "Ünïcode", "given": ["A", "B"]}],
            "multipleBirthInteger": 2,
        });
        let text = patient.to_string();
        let lean = parse_for_reader(text.as_bytes()).unwrap();
        assert_eq!(
            lean["meta"]["tag"],
            json!([{"system": "urn:ward", "code": "7", "display": "Ward \"7\"", "userSelected": true}])
        );
        assert_eq!(lean["meta"]["versionId"], "3");
        same(&text);
    }

    #[test]
    fn a_list_or_meta_of_tokens_alone_goes_and_empty_ones_stay() {
        let only =
            json!({"resourceType": "Patient", "meta": {"tag": [token("x", "1")]}, "id": "p"});
        let lean = parse_for_reader(only.to_string().as_bytes()).unwrap();
        assert_eq!(lean, json!({"resourceType": "Patient", "id": "p"}));
        same(&only.to_string());

        let beside = json!({"meta": {"tag": [token("x", "1")], "versionId": "1"}});
        assert_eq!(
            parse_for_reader(beside.to_string().as_bytes()).unwrap(),
            json!({"meta": {"versionId": "1"}})
        );
        // Nothing taken, nothing removed: a root's empty `tag` is opening's to tidy.
        for kept in [
            r#"{"meta":{"tag":[]}}"#,
            r#"{"meta":{}}"#,
            r#"{"meta":{"tag":{}}}"#,
        ] {
            assert_eq!(
                parse_for_reader(kept.as_bytes()).unwrap(),
                serde_json::from_str::<Value>(kept).unwrap()
            );
        }
    }

    #[test]
    fn tokens_go_at_every_depth_and_only_inside_meta_tag() {
        let bundle = json!({
            "resourceType": "Bundle",
            "meta": {"tag": [token("b", "0")]},
            "entry": [
                {"resource": {"resourceType": "Observation", "meta": {"tag": [token("o", "1")]},
                    "contained": [{"resourceType": "Patient", "meta": {"tag": [token("p", "2"), {"code": "c"}]}}],
                    // Not a `meta.tag`: kept as they are.
                    "code": {"coding": [token("o", "3")]},
                    "tag": [token("o", "4")],
                    "extension": [{"url": "u", "valueCoding": token("o", "5")}]}},
                {"search": {"mode": "match"}},
            ],
        });
        let lean = parse_for_reader(bundle.to_string().as_bytes()).unwrap();
        assert!(lean.get("meta").is_none());
        let resource = &lean["entry"][0]["resource"];
        assert!(resource.get("meta").is_none());
        assert_eq!(
            resource["contained"][0]["meta"]["tag"],
            json!([{"code": "c"}])
        );
        assert_eq!(resource["code"]["coding"][0], token("o", "3"));
        assert_eq!(resource["tag"][0], token("o", "4"));
        same(&bundle.to_string());
    }

    #[test]
    fn numbers_escapes_and_repeated_members_read_as_serde_json_reads_them() {
        for text in [
            r#"{"valueDecimal":1.50,"n":-0,"big":123456789012345678901234567890,"e":1e400,"f":-2.5E-3}"#,
            r#"{"meta":{"tag":[{"system":"https://fhirseal.dev/fhir/blind-index/x","code":1.0}]}}"#,
            r#"{"meta":{"tag":[{"sys\u0074em":"https://fhirseal.dev/fhir/blind-index/x","code":"c"}]}}"#,
            r#"{"meta":{"tag":[{"system":"https:\/\/fhirseal.dev\/fhir\/blind-index\/x","code":"c"}]}}"#,
            // The last `system` decides, as in a parsed object.
            r#"{"meta":{"tag":[{"system":"https://fhirseal.dev/fhir/blind-index/x","system":"urn:a"}]}}"#,
            r#"{"meta":{"tag":[{"system":"urn:a","system":"https://fhirseal.dev/fhir/blind-index/x"}]}}"#,
            r#"{"meta":{"tag":[{"system":"https://fhirseal.dev/fhir/blind-index/x","system":7}]}}"#,
            r#"{"meta":{"tag":[{"system":["https://fhirseal.dev/fhir/blind-index/x"]}]}}"#,
            // A later `meta` of tokens alone wins over an earlier one, and then goes.
            r#"{"a":1,"meta":{"versionId":"1"},"meta":{"tag":[{"system":"https://fhirseal.dev/fhir/blind-index/x"}]},"b":2}"#,
            r#"{"meta":{"tag":[{"system":"https://fhirseal.dev/fhir/blind-index/x"}],"tag":[{"code":"k"}]}}"#,
            r#"{"meta":{"versionId":"1"},"a":1,"meta":{"tag":[{"system":"https://fhirseal.dev/fhir/blind-index/x"}]},"meta":{"versionId":"2"}}"#,
            r#"{"meta":{"tag":[{"system":"https://fhirseal.dev/fhir/blind-index/x"}]},"a":1,"meta":{"versionId":"2"}}"#,
            r#"{"meta":{"tag":[{"code":"c","meta":{"tag":[{"system":"https://fhirseal.dev/fhir/blind-index/x"}]},"x":1,"meta":{"a":1}}]}}"#,
            r#"{"meta":{"tag":[1,"s",null,true,[],{},{"$serde_json::private::Number":"5"}]}}"#,
            r#"{"$serde_json::private::Number":"12.10"}"#,
            r#"{"meta":{"meta":{"tag":[{"system":"https://fhirseal.dev/fhir/blind-index/x"}]}}}"#,
            r#"{"meta":{"tag":{"meta":{"tag":[{"system":"https://fhirseal.dev/fhir/blind-index/x"}]}}}}"#,
            r#"{"meta":{"tag":[{"code":"c","meta":{"tag":[{"system":"https://fhirseal.dev/fhir/blind-index/x"}]}}]}}"#,
            r#"{"meta":[{"meta":{"tag":[{"system":"https://fhirseal.dev/fhir/blind-index/x"}]}}]}"#,
            r#"[{"meta":{"tag":[{"system":"https://fhirseal.dev/fhir/blind-index/"}]}},{"meta":null},{"meta":"x"}]"#,
            r#""a \"string\" \u00e9\ud83d\ude00""#,
            "  null  ",
        ] {
            same(text);
        }
    }

    /// The one place the two parsers can part: `serde_json` built with `raw_value` (axum turns it
    /// on in the gateway's build, not in this crate's tests) reads an object whose first member
    /// is its raw-value token as the JSON text in that member's string; here it is an object
    /// like any other, at every depth, in every build, so nothing the upstream writes is parsed
    /// twice.
    #[test]
    fn a_raw_value_token_is_an_ordinary_member_here() {
        let text = r#"{"a":{"$serde_json::private::RawValue":"[1,2]"}}"#;
        let expected = json!({"a": {"$serde_json::private::RawValue": "[1,2]"}});
        assert_eq!(parse_for_reader(text.as_bytes()).unwrap(), expected);
        assert_eq!(
            parse_value(text, &mut Scratch::default()).unwrap(),
            expected
        );
    }

    #[test]
    fn element_plaintext_and_errors_parse_as_serde_json_parses_them() {
        let good = [
            r#"{"valueQuantity":{"value":1.50,"unit":"kg"},"v":[1,{"a":null}],"v":true}"#,
            r#""a \"string\" \u00e9""#,
            "[]",
            "  7.10 ",
        ];
        let bad = [
            "",
            "{",
            "[1,]",
            r#"{"a":[1,{"b":[2,3"#,
            "{\"a\":1} x",
            r#"{"$serde_json::private::Number":"x"}"#,
        ];
        // One scratch throughout, as an answer's elements share one: what a parse that failed
        // half-way had pushed is cleared, and never reaches the next.
        let mut scratch = Scratch::default();
        for _ in 0..2 {
            for (text, wrong) in good.iter().zip(bad.iter().cycle().skip(2)) {
                assert!(parse_value(wrong, &mut scratch).is_err(), "{wrong:?}");
                assert!(scratch.members.is_empty() && scratch.items.is_empty());
                assert_eq!(
                    parse_value(text, &mut scratch).unwrap(),
                    serde_json::from_str::<Value>(text).unwrap()
                );
            }
        }
        for text in bad {
            assert!(parse_value(text, &mut scratch).is_err(), "{text:?}");
        }
        let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
        assert!(parse_value(&deep, &mut Scratch::default()).is_err());
    }

    #[test]
    fn what_is_not_json_is_refused_as_serde_json_refuses_it() {
        for text in [
            "",
            "{",
            r#"{"meta":{"tag":[{"system":"https://fhirseal.dev/fhir/blind-index/x",}]}}"#,
            r#"{"meta":{"tag":[{"system":"https://fhirseal.dev/fhir/blind-index/x"}]}} trailing"#,
            r#"{"$serde_json::private::Number":"abc"}"#,
            r#"{"$serde_json::private::Number":5}"#,
            r#"{"$serde_json::private::Number":"5","x":1}"#,
            r#"{"a":"\ud800"}"#,
            "\"\u{1}\"",
        ] {
            assert!(parse_for_reader(text.as_bytes()).is_err(), "{text:?}");
            assert!(serde_json::from_str::<Value>(text).is_err(), "{text:?}");
        }
        // Nesting beyond serde_json's limit is refused, not a stack overflow.
        let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
        assert!(parse_for_reader(deep.as_bytes()).is_err());
        let deep_meta = format!("{}1{}", r#"{"meta":"#.repeat(5_000), "}".repeat(5_000));
        assert!(parse_for_reader(deep_meta.as_bytes()).is_err());
    }

    #[test]
    fn bodies_that_are_not_utf8_are_refused_as_from_slice_refuses_them() {
        let bad: [&[u8]; 4] = [
            b"{\"a\":\"\xff\"}",
            b"{\"meta\":{\"tag\":[{\"system\":\"\xc3\x28\"}]}}",
            b"{\"a\":1}\xff",
            // UTF-8, but a byte-order mark is not JSON: refused both ways, with one error.
            b"\xef\xbb\xbf{}",
        ];
        for bytes in bad {
            let ours = parse_for_reader(bytes).map_err(|e| e.to_string());
            let theirs = serde_json::from_slice::<Value>(bytes).map_err(|e| e.to_string());
            assert!(ours.is_err(), "{bytes:?}");
            assert_eq!(ours, theirs, "{bytes:?}");
        }
        // What is UTF-8 beyond ASCII reads as `from_slice` reads it.
        let text = "{\"name\":[{\"family\":\"Øvrebø 😀\",\"given\":[\"J\\u00e9r\\u00f4me\"]}]}";
        assert_eq!(
            parse_for_reader(text.as_bytes()).unwrap(),
            serde_json::from_slice::<Value>(text.as_bytes()).unwrap()
        );
    }

    /// A JSON text with repeated members allowed, over the names and values that matter here.
    #[derive(Debug, Clone)]
    enum Text {
        Leaf(&'static str),
        List(Vec<Self>),
        Object(Vec<(&'static str, Self)>),
    }

    impl Text {
        fn render(&self, out: &mut String) {
            match self {
                Self::Leaf(leaf) => out.push_str(leaf),
                Self::List(items) => {
                    out.push('[');
                    for (i, item) in items.iter().enumerate() {
                        if i > 0 {
                            out.push(',');
                        }
                        item.render(out);
                    }
                    out.push(']');
                }
                Self::Object(members) => {
                    out.push('{');
                    for (i, (name, value)) in members.iter().enumerate() {
                        if i > 0 {
                            out.push(',');
                        }
                        out.push_str(&serde_json::to_string(name).unwrap());
                        out.push(':');
                        value.render(out);
                    }
                    out.push('}');
                }
            }
        }
    }

    fn text() -> impl proptest::strategy::Strategy<Value = Text> {
        use proptest::prelude::*;
        let leaf = prop::sample::select(vec![
            r#""https://fhirseal.dev/fhir/blind-index/Patient.name.family""#,
            r#""https:\/\/fhirseal.dev\/fhir\/blind-index\/g2\/x""#,
            r#""urn:ward""#,
            r#""c""#,
            "1.50",
            "-0",
            "null",
            "true",
        ])
        .prop_map(Text::Leaf);
        leaf.prop_recursive(5, 48, 4, |inner| {
            use prop::collection::vec;
            use prop::sample::select;
            // Shaped so that resources with `meta.tag` lists of codings, tokens among them and
            // members repeated, are common, at any depth.
            let system = select(vec![
                r#""https://fhirseal.dev/fhir/blind-index/x""#,
                r#""urn:ward""#,
            ])
            .prop_map(Text::Leaf);
            let coding = vec(
                (
                    select(vec!["system", "system", "code", "meta"]),
                    prop_oneof![3 => system, 1 => inner.clone()],
                ),
                0..4,
            )
            .prop_map(Text::Object);
            let tags = vec(prop_oneof![3 => coding, 1 => inner.clone()], 0..4).prop_map(Text::List);
            let meta = vec(
                (
                    select(vec!["tag", "tag", "meta", "versionId"]),
                    prop_oneof![3 => tags, 1 => inner.clone()],
                ),
                0..3,
            )
            .prop_map(Text::Object);
            prop_oneof![
                1 => vec(inner.clone(), 0..4).prop_map(Text::List),
                2 => vec(
                    (
                        select(vec!["meta", "meta", "tag", "a", "entry", "resource", "contained"]),
                        prop_oneof![2 => meta, 1 => inner],
                    ),
                    0..4,
                )
                .prop_map(Text::Object),
            ]
        })
    }

    proptest::proptest! {
        #![proptest_config(proptest::test_runner::Config::with_cases(4096))]
        #[test]
        fn any_json_parses_as_parsing_whole_then_taking_the_tokens(text in text()) {
            let mut json = String::new();
            text.render(&mut json);
            same(&json);
            // An opened element's plaintext: the whole tree, tokens and all, as `serde_json`.
            let plain = parse_value(&json, &mut Scratch::default()).unwrap();
            let whole: Value = serde_json::from_str(&json).unwrap();
            proptest::prop_assert_eq!(
                serde_json::to_string(&plain).unwrap(),
                serde_json::to_string(&whole).unwrap()
            );
        }
    }
}
