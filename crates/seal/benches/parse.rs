//! `parse_for_reader` beside `serde_json::from_slice` (issue 18): a Patient whose `meta.tag` holds
//! 68 blind-index tokens, as the embedded policy's demographics give one (the tokens are most of
//! its bytes), and the 100-entry Observation Bundle of the `bundle` benchmark, which holds none
//! (the cost of the visitor where there is nothing to skip).
//!
//! And, for that Bundle, what a representation other than `serde_json::Value` could save on a
//! search's answer (issue 18): the round trip a search makes of it (parse, serialize, drop) with
//! `Value`, with a borrowed tree (strings borrowed from the input unless escaped, objects as lists
//! of members: no key hashed, no map built), and the scan alone (`IgnoredAny`: what any tree
//! built by serde over `serde_json`'s reader costs at least).
//! `cargo bench -p fhirseal-seal --bench parse`
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use fhirseal_seal::parse_for_reader;
use fhirseal_seal::shape::BLIND_INDEX_SYSTEM;
use serde::Deserialize as _;
use serde_json::{Value, json};

#[path = "bundle_data.rs"]
mod bundle_data;

/// A Patient with 68 tokens over four indexes, 16-bit codes as the policy's defaults give.
fn patient() -> Value {
    let indexes = [
        "Patient.name.family/prefix",
        "Patient.name.given/prefix",
        "g2/Patient.name.family+Patient.birthDate",
        "Patient.telecom.value",
    ];
    let mut tags: Vec<Value> = (0..68)
        .map(|i| {
            json!({"system": format!("{BLIND_INDEX_SYSTEM}{}", indexes[i % 4]),
                   "code": format!("{:04x}", (i * 7919) % 65_536)})
        })
        .collect();
    tags.push(json!({"system": "urn:ward", "code": "7"}));
    json!({"resourceType": "Patient", "id": "p1",
        "meta": {"versionId": "3", "lastUpdated": "2026-12-01T10:00:00Z", "tag": tags},
        "active": true,
        "identifier": [{"system": "urn:mrn", "value": "MRN-1"}],
        "name": [{"family": "Chalmers", "given": ["Peter", "James"]}],
        "gender": "male", "birthDate": "1974-12-25",
        "address": [{"line": ["534 Erewhon St"], "city": "PleasantVille", "postalCode": "3999"}]})
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("parse");
    for (name, value) in [
        ("patient with 68 tokens", patient()),
        (
            "bundle of 100 observations, no tokens",
            bundle_data::bundle(),
        ),
    ] {
        let bytes = serde_json::to_vec(&value).unwrap();
        group.throughput(Throughput::Bytes(bytes.len() as u64));
        group.bench_function(format!("{name}: from_slice"), |b| {
            b.iter(|| serde_json::from_slice::<Value>(black_box(&bytes)).unwrap());
        });
        group.bench_function(format!("{name}: parse_for_reader"), |b| {
            b.iter(|| parse_for_reader(black_box(&bytes)).unwrap());
        });
    }
    group.finish();

    let bytes = serde_json::to_vec(&bundle_data::bundle()).unwrap();
    let mut group = c.benchmark_group("search answer round trip");
    group.throughput(Throughput::Bytes(bytes.len() as u64));
    group.bench_function("Value: parse, serialize, drop", |b| {
        b.iter(|| {
            let value: Value = serde_json::from_slice(black_box(&bytes)).unwrap();
            serde_json::to_vec(&value).unwrap()
        });
    });
    group.bench_function("borrowed tree: parse, serialize, drop", |b| {
        b.iter(|| {
            let tree: borrowed::Tree<'_> = serde_json::from_slice(black_box(&bytes)).unwrap();
            serde_json::to_vec(&tree).unwrap()
        });
    });
    group.bench_function("scan alone", |b| {
        b.iter(|| {
            let mut deserializer = serde_json::Deserializer::from_slice(black_box(&bytes));
            serde::de::IgnoredAny::deserialize(&mut deserializer).unwrap();
        });
    });
    group.finish();
}

/// The borrowed tree of the round-trip benchmark: a measuring stick, not the gateway's.
mod borrowed {
    use std::borrow::Cow;
    use std::fmt;

    use serde::de::{self, MapAccess, SeqAccess, Visitor};
    use serde::ser::{SerializeMap, SerializeSeq};

    /// How `serde_json` (with `arbitrary_precision`) hands a number over: kept as its text.
    const NUMBER_TOKEN: &str = "$serde_json::private::Number";

    pub(crate) enum Tree<'a> {
        Null,
        Bool(bool),
        Number(Cow<'a, str>),
        Text(Cow<'a, str>),
        List(Vec<Self>),
        Object(Vec<(Cow<'a, str>, Self)>),
    }

    impl<'de> de::Deserialize<'de> for Tree<'de> {
        fn deserialize<D: de::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
            deserializer.deserialize_any(TreeVisitor)
        }
    }

    struct TreeVisitor;

    impl<'de> Visitor<'de> for TreeVisitor {
        type Value = Tree<'de>;

        fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
            formatter.write_str("any JSON value")
        }

        fn visit_bool<E>(self, v: bool) -> Result<Self::Value, E> {
            Ok(Tree::Bool(v))
        }

        fn visit_unit<E>(self) -> Result<Self::Value, E> {
            Ok(Tree::Null)
        }

        fn visit_i64<E>(self, v: i64) -> Result<Self::Value, E> {
            Ok(Tree::Number(Cow::Owned(v.to_string())))
        }

        fn visit_u64<E>(self, v: u64) -> Result<Self::Value, E> {
            Ok(Tree::Number(Cow::Owned(v.to_string())))
        }

        fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
            Ok(Tree::Text(Cow::Borrowed(v)))
        }

        fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
            Ok(Tree::Text(Cow::Owned(v.to_owned())))
        }

        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
            let mut items = Vec::new();
            while let Some(item) = seq.next_element()? {
                items.push(item);
            }
            Ok(Tree::List(items))
        }

        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut members = Vec::new();
            // Names borrowed as `&str`: the benchmark's Bundle holds no escaped one (`Cow`'s
            // own `Deserialize` would copy every name).
            while let Some(name) = map.next_key::<&'de str>()? {
                if name == NUMBER_TOKEN {
                    return Ok(Tree::Number(Cow::Borrowed(map.next_value()?)));
                }
                members.push((Cow::Borrowed(name), map.next_value()?));
            }
            Ok(Tree::Object(members))
        }
    }

    impl serde::Serialize for Tree<'_> {
        fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
            match self {
                Self::Null => serializer.serialize_unit(),
                Self::Bool(v) => serializer.serialize_bool(*v),
                Self::Number(text) => {
                    let number: serde_json::Number =
                        text.parse().map_err(serde::ser::Error::custom)?;
                    number.serialize(serializer)
                }
                Self::Text(text) => serializer.serialize_str(text),
                Self::List(items) => {
                    let mut seq = serializer.serialize_seq(Some(items.len()))?;
                    for item in items {
                        seq.serialize_element(item)?;
                    }
                    seq.end()
                }
                Self::Object(members) => {
                    let mut map = serializer.serialize_map(Some(members.len()))?;
                    for (name, value) in members {
                        map.serialize_entry(name, value)?;
                    }
                    map.end()
                }
            }
        }
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
