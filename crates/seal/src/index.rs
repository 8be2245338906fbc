//! Blind-index tags: how the values of a `search = "blind-index"` element become tokens the
//! upstream server can search with `_tag`, and how a search becomes the tokens it asks for. Both
//! directions live here, on one list of indexes ([`leaves`]), so that what a search asks for is
//! always what a write stored.
//!
//! # Where tokens live
//!
//! Each token is a `meta.tag` coding of the sealed resource: `system` is
//! [`BLIND_INDEX_SYSTEM`] followed by the index name, `code` the truncated token
//! (`{"system": "https://fhirseal.dev/fhir/blind-index/Patient.name.family/prefix", "code":
//! "3fa2"}`). Every R4 server searches `meta.tag` with `_tag` (`_tag=system|code,system|code`
//! is an OR, repeated `_tag` an AND), so an unmodified server needs no custom SearchParameter and
//! no reindex. Tokens are taken off every answer, and a client's write holding one is refused.
//! Tokens made under a later generation of the secret (after a rotation) carry it in the system:
//! `…/blind-index/g2/Patient.name.family/prefix` ([`index_system`]).
//!
//! # Indexes
//!
//! An index is one leaf element and one transform of its values. The leaves of a sealed element
//! are its primitive members a search parameter reads: a `HumanName`'s `family`, `given`, `text`,
//! `prefix` and `suffix`, an `Address`'s `line`, `city`, `district`, `state`, `postalCode`,
//! `country` and `text`, or the element itself for a primitive, `Identifier`, `Coding`,
//! `CodeableConcept`, `ContactPoint` or `Reference`. The transforms, by the search type that reads the leaf:
//!
//! | leaf | transform | token of | serves |
//! |---|---|---|---|
//! | string | `prefix` | the folded value's first n characters, n = [`MIN_PREFIX`]..=[`MAX_PREFIX`] | `family=smi` (R4's default string match: starts with, case- and accent-insensitive) |
//! | string | `exact` | the value in NFC | `family:exact=Smith` |
//! | token | `system-code` | `system\|code` (`\|code` without a system) | `identifier=sys\|123`, `code=sys\|c`, `identifier=\|123` |
//! | token | `code` | the code or value alone | `code=c`, `telecom=555-1234` |
//! | date | `year`, `month`, `day` | `1974`, `1974-12`, `1974-12-25`, each at or above the value's precision; a time's date in its own zone and in UTC | `birthdate=1974`, `=1974-12`, `=1974-12-25` |
//! | date | `year-only` | `1974`, for a value given to the year only | date ranges |
//! | reference | `type-id` | `Type/id` of a literal reference (`[base/]Type/id[/_history/v]`, read as the matcher reads it) | `general-practitioner=Practitioner/1`, `:Practitioner=1`, a URL ending so |
//! | reference | `id` | its id | `general-practitioner=1` |
//!
//! "Folded" is NFKD, combining marks dropped, lower-cased character by character, white space
//! collapsed and trimmed: a superset of R4's and sekmet-fhir's case-insensitive match, so the
//! tokens never miss a resource the clear search would find. A `ge`/`gt` and `le`/`lt` pair is
//! answered by OR-ing the `month` tokens of every month it touches (and the `year-only` tokens of
//! their years) when it spans at most [`MAX_RANGE_MONTHS`] months, else the `year` tokens of every
//! year it touches, up to [`MAX_RANGE_YEARS`]; a wider or open range is refused.
//!
//! Tokens are candidates, not answers: they are truncated so that they collide, and a prefix or a
//! year matches more than the search asked for. The gateway opens every candidate and keeps only
//! the resources that match the search exactly (`fhirseal_fhir::matching`).

use std::num::NonZeroU32;

use fhirseal_envelope::BlindIndex;
use fhirseal_fhir::path::ElementPath;
use serde_json::{Map, Value, json};
use unicode_normalization::UnicodeNormalization;
use unicode_normalization::char::is_combining_mark;

pub use crate::shape::BLIND_INDEX_SYSTEM;

/// The shortest string a default (prefix) string search may give: shorter prefixes are not
/// indexed (each would stand for too many values and tell the server a value's first letter).
pub const MIN_PREFIX: usize = 2;
/// The longest prefix indexed: a longer search value asks for its first [`MAX_PREFIX`] characters
/// and the rest is checked on the opened candidates.
pub const MAX_PREFIX: usize = 8;
/// The widest date range answered with `month` tokens.
pub const MAX_RANGE_MONTHS: i64 = 24;
/// The widest date range answered at all (with `year` tokens).
pub const MAX_RANGE_YEARS: i64 = 10;

/// One blind-index token: a `meta.tag` coding.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Tag {
    /// [`BLIND_INDEX_SYSTEM`] and the index name (`Patient.name.family/prefix`).
    pub system: String,
    /// The truncated token, in hex.
    pub code: String,
}

impl Tag {
    /// The tag as a `_tag` search value: `system|code`.
    pub fn search_value(&self) -> String {
        format!("{}|{}", self.system, self.code)
    }
}

/// The transforms a leaf is indexed under; see the module documentation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
enum Transform {
    Prefix,
    Exact,
    SystemCode,
    Code,
    Year,
    Month,
    Day,
    YearOnly,
    TypeId,
    Id,
}

impl Transform {
    fn name(self) -> &'static str {
        match self {
            Self::Prefix => "prefix",
            Self::Exact => "exact",
            Self::SystemCode => "system-code",
            Self::Code => "code",
            Self::Year => "year",
            Self::Month => "month",
            Self::Day => "day",
            Self::YearOnly => "year-only",
            Self::TypeId => "type-id",
            Self::Id => "id",
        }
    }
}

/// What search type reads a leaf, and so how it is indexed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LeafKind {
    /// A string: `prefix` and `exact`.
    String,
    /// A code, identifier or coding: `system-code` and `code`.
    Token,
    /// A date, dateTime or instant: `year`, `month`, `day`, `year-only`.
    Date,
    /// A Reference: `type-id` and `id`.
    Reference,
}

/// One indexed value before it becomes a token: the leaf, the transform, and the value as that
/// transform normalises it. A write and a search both produce keys; [`Tokens`] turns them into
/// tags, alone ([`Tokens::tags`]) or paired across a compound index ([`Tokens::compound`]).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Key {
    leaf: String,
    transform: Transform,
    text: String,
}

impl Key {
    fn new(leaf: &str, transform: Transform, text: String) -> Self {
        Self {
            leaf: leaf.to_string(),
            transform,
            text,
        }
    }

    /// The leaf path (`Patient.name.family`).
    pub fn leaf(&self) -> &str {
        &self.leaf
    }
}

// The members a string search reads of a name and an address: the matcher's, so that the index
// holds every member the exact check looks at.
use fhirseal_fhir::matching::{ADDRESS_MEMBERS, NAME_MEMBERS, parse_reference};

/// The leaves of an element of R4 data type `data_type` at `path` (plain, no filters): each
/// indexed member path and how it is indexed. Empty for a type that cannot be indexed.
pub fn leaves(path: &str, data_type: &str) -> Vec<(String, LeafKind)> {
    let members = |names: &[&str]| {
        names
            .iter()
            .map(|m| (format!("{path}.{m}"), LeafKind::String))
            .collect()
    };
    match data_type {
        "HumanName" => members(NAME_MEMBERS),
        "Address" => members(ADDRESS_MEMBERS),
        "string" | "markdown" => vec![(path.to_string(), LeafKind::String)],
        "code" | "id" | "uri" | "url" | "canonical" | "oid" | "uuid" | "boolean" | "Identifier"
        | "Coding" | "CodeableConcept" | "ContactPoint" => {
            vec![(path.to_string(), LeafKind::Token)]
        }
        "date" | "dateTime" | "instant" => vec![(path.to_string(), LeafKind::Date)],
        "Reference" => vec![(path.to_string(), LeafKind::Reference)],
        _ => Vec::new(),
    }
}

/// Whether an element of this data type can be indexed.
pub fn indexable(data_type: &str) -> bool {
    !leaves("X", data_type).is_empty()
}

/// Mints tokens under one gateway secret at one truncation.
#[derive(Clone, Copy, Debug)]
pub struct Tokens<'a> {
    index: &'a BlindIndex,
    bits: u8,
}

impl<'a> Tokens<'a> {
    /// Tokens under `index`, truncated to `bits`.
    pub fn new(index: &'a BlindIndex, bits: u8) -> Self {
        Self { index, bits }
    }

    fn tag(&self, name: String, normalised: &str) -> Tag {
        let code = self.index.token(&name, normalised, self.bits);
        Tag {
            system: index_system(self.index.generation(), &name),
            code,
        }
    }

    /// The tags of `keys`, each alone: index `leaf/transform`. Sorted, without duplicates.
    pub fn tags(&self, keys: &[Key]) -> Vec<Tag> {
        let mut tags: Vec<Tag> = keys
            .iter()
            .map(|k| self.tag(format!("{}/{}", k.leaf, k.transform.name()), &k.text))
            .collect();
        tags.sort();
        tags.dedup();
        tags
    }

    /// The tags of a compound index over two leaves: one per pair of a key of `a` and a key of
    /// `b`, in index `leafA+leafB/transformA+transformB`, over both texts (the first
    /// length-prefixed, so that no two pairs share an input). Sorted, without duplicates.
    pub fn compound(&self, a: &[Key], b: &[Key]) -> Vec<Tag> {
        let mut tags = Vec::with_capacity(a.len() * b.len());
        for ka in a {
            for kb in b {
                let name = format!(
                    "{}+{}/{}+{}",
                    ka.leaf,
                    kb.leaf,
                    ka.transform.name(),
                    kb.transform.name()
                );
                let text = format!("{}:{}{}", ka.text.len(), ka.text, kb.text);
                tags.push(self.tag(name, &text));
            }
        }
        tags.sort();
        tags.dedup();
        tags
    }

    /// The tags of one value of a sealed element indexed alone ([`keys_of_value`], then
    /// [`Tokens::tags`]).
    pub fn of_value(&self, path: &str, data_type: &str, value: &Value, out: &mut Vec<Tag>) {
        let mut keys = Vec::new();
        keys_of_value(path, data_type, value, &mut keys);
        out.extend(self.tags(&keys));
    }

    /// The tags a search value asks for on `leaves` indexed alone ([`keys_of_query`], then
    /// [`Tokens::tags`]).
    ///
    /// # Errors
    /// Why the value cannot be answered from the index.
    pub fn of_query(
        &self,
        leaves: &[(String, LeafKind)],
        modifier: Option<&str>,
        value: &str,
    ) -> Result<Vec<Tag>, QueryRefusal> {
        Ok(self.tags(&keys_of_query(leaves, modifier, value)?))
    }

    /// The tags of a date range on `leaves` indexed alone ([`keys_of_range`], then
    /// [`Tokens::tags`]).
    ///
    /// # Errors
    /// Why the range cannot be answered from the index.
    pub fn of_range(
        &self,
        leaves: &[(String, LeafKind)],
        lower: Option<&str>,
        upper: Option<&str>,
        before: bool,
    ) -> Result<Vec<Tag>, QueryRefusal> {
        Ok(self.tags(&keys_of_range(leaves, lower, upper, before)?))
    }
}

/// The keys of one value of a sealed element at `path` (plain) of R4 type `data_type`, as it is
/// sealed: every leaf, every transform.
pub fn keys_of_value(path: &str, data_type: &str, value: &Value, out: &mut Vec<Key>) {
    if let Value::Array(items) = value {
        for item in items {
            keys_of_value(path, data_type, item, out);
        }
        return;
    }
    for (leaf, kind) in leaves(path, data_type) {
        let member = leaf.strip_prefix(path).and_then(|m| m.strip_prefix('.'));
        let target = match member {
            Some(member) => value.get(member),
            None => Some(value),
        };
        let Some(target) = target else { continue };
        let items: Vec<&Value> = match target {
            Value::Array(items) => items.iter().collect(),
            other => vec![other],
        };
        for item in items {
            match kind {
                LeafKind::String => {
                    if let Some(text) = item.as_str() {
                        keys_of_string(&leaf, text, out);
                    }
                }
                LeafKind::Token => keys_of_token(&leaf, item, out),
                LeafKind::Reference => keys_of_reference(&leaf, item, out),
                LeafKind::Date => {
                    if let Some(text) = item.as_str() {
                        keys_of_date(&leaf, text, out);
                    }
                }
            }
        }
    }
}

fn keys_of_string(leaf: &str, text: &str, out: &mut Vec<Key>) {
    let folded: Vec<char> = fold(text).chars().collect();
    for n in MIN_PREFIX..=MAX_PREFIX.min(folded.len()) {
        out.push(Key::new(
            leaf,
            Transform::Prefix,
            folded[..n].iter().collect(),
        ));
    }
    // A value shorter than the shortest prefix is still found by a search for all of it.
    if !folded.is_empty() && folded.len() < MIN_PREFIX {
        out.push(Key::new(leaf, Transform::Prefix, folded.iter().collect()));
    }
    out.push(Key::new(leaf, Transform::Exact, text.nfc().collect()));
}

fn keys_of_token(leaf: &str, value: &Value, out: &mut Vec<Key>) {
    let mut code = |system: Option<&str>, code: &str| {
        let code: String = code.nfc().collect();
        out.push(Key::new(
            leaf,
            Transform::SystemCode,
            format!("{}|{code}", system.unwrap_or("")),
        ));
        out.push(Key::new(leaf, Transform::Code, code));
    };
    match value {
        Value::String(text) => code(None, text),
        Value::Bool(b) => code(None, if *b { "true" } else { "false" }),
        Value::Object(object) => {
            let text = |k: &str| object.get(k).and_then(Value::as_str);
            if let Some(codings) = object.get("coding").and_then(Value::as_array) {
                // CodeableConcept: each coding.
                for coding in codings {
                    if let Some(c) = coding.get("code").and_then(Value::as_str) {
                        code(coding.get("system").and_then(Value::as_str), c);
                    }
                }
            } else if let Some(c) = text("code") {
                // Coding
                code(text("system"), c);
            } else if let Some(v) = text("value") {
                // Identifier, ContactPoint
                code(text("system"), v);
            }
        }
        _ => {}
    }
}

/// A literal reference as the search matcher reads it (`[base/]Type/id[/_history/v]`): its
/// `Type/id` and its id. Contained, `urn:` and logical references give none (no reference search
/// matches them).
fn keys_of_reference(leaf: &str, value: &Value, out: &mut Vec<Key>) {
    let Some((ty, id)) = value
        .get("reference")
        .and_then(Value::as_str)
        .and_then(parse_reference)
    else {
        return;
    };
    out.push(Key::new(leaf, Transform::TypeId, format!("{ty}/{id}")));
    out.push(Key::new(leaf, Transform::Id, id.to_string()));
}

fn keys_of_date(leaf: &str, text: &str, out: &mut Vec<Key>) {
    let Some(date) = FhirDate::parse(text) else {
        return;
    };
    let mut days = vec![date.local];
    if let Some(utc) = date.utc_day()
        && utc != date.local
    {
        days.push(utc);
    }
    for day in days {
        out.push(Key::new(leaf, Transform::Year, day.year_text()));
        if day.precision == Precision::Year {
            out.push(Key::new(leaf, Transform::YearOnly, day.year_text()));
        }
        if day.precision >= Precision::Month {
            out.push(Key::new(leaf, Transform::Month, day.month_text()));
        }
        if day.precision >= Precision::Day {
            out.push(Key::new(leaf, Transform::Day, day.day_text()));
        }
    }
}

/// The keys a search value asks for on `leaves` (one OR group), sorted and without duplicates.
///
/// # Errors
/// Why the value cannot be answered from the index.
pub fn keys_of_query(
    leaves: &[(String, LeafKind)],
    modifier: Option<&str>,
    value: &str,
) -> Result<Vec<Key>, QueryRefusal> {
    let mut keys = Vec::new();
    for item in split_or(value)? {
        for (leaf, kind) in leaves {
            match (kind, modifier) {
                (LeafKind::String, None) => {
                    let folded: Vec<char> = fold(&item).chars().collect();
                    if folded.is_empty() {
                        return Err(QueryRefusal::Empty);
                    }
                    if folded.len() < MIN_PREFIX {
                        // Only values of exactly this length were indexed so short.
                        return Err(QueryRefusal::TooShort);
                    }
                    let n = folded.len().min(MAX_PREFIX);
                    keys.push(Key::new(
                        leaf,
                        Transform::Prefix,
                        folded[..n].iter().collect(),
                    ));
                }
                (LeafKind::String, Some("exact")) => {
                    keys.push(Key::new(leaf, Transform::Exact, item.nfc().collect()));
                }
                (LeafKind::Token, None) => match item.split_once('|') {
                    None => keys.push(Key::new(leaf, Transform::Code, item.nfc().collect())),
                    Some((_, "")) => return Err(QueryRefusal::SystemOnly),
                    Some((system, code)) => {
                        let code: String = code.nfc().collect();
                        keys.push(Key::new(
                            leaf,
                            Transform::SystemCode,
                            format!("{system}|{code}"),
                        ));
                    }
                },
                // `Type/id` (or a URL ending so) asks for that type and id, a bare id for the id
                // of any type; `:Type` with an id for that type and id.
                (LeafKind::Reference, modifier) => {
                    let typed =
                        modifier.filter(|m| m.starts_with(|c: char| c.is_ascii_uppercase()));
                    if modifier.is_some() && typed.is_none() {
                        return Err(QueryRefusal::Modifier);
                    }
                    let key = match (parse_reference(&item), typed) {
                        (Some((ty, id)), _) => {
                            Key::new(leaf, Transform::TypeId, format!("{ty}/{id}"))
                        }
                        (None, Some(ty)) => {
                            Key::new(leaf, Transform::TypeId, format!("{ty}/{item}"))
                        }
                        (None, None) => Key::new(leaf, Transform::Id, item.clone()),
                    };
                    keys.push(key);
                }
                (LeafKind::Date, None) => {
                    let (prefix, rest) = date_prefix(&item);
                    if prefix != "eq" {
                        return Err(QueryRefusal::DatePrefix);
                    }
                    let date = FhirDate::parse(rest).ok_or(QueryRefusal::BadDate)?;
                    let mut days = vec![date.local];
                    if let Some(utc) = date.utc_day() {
                        days.push(utc);
                    }
                    for day in days {
                        let (transform, text) = match day.precision {
                            Precision::Year => (Transform::Year, day.year_text()),
                            Precision::Month => (Transform::Month, day.month_text()),
                            Precision::Day => (Transform::Day, day.day_text()),
                        };
                        keys.push(Key::new(leaf, transform, text));
                    }
                }
                _ => return Err(QueryRefusal::Modifier),
            }
        }
    }
    keys.sort();
    keys.dedup();
    Ok(keys)
}

/// The keys of a date range on `leaves`: the bounds are the dates of `ge`/`gt` and `le`/`lt`
/// values (`None`: open on that side, refused); `before` when the upper one is `lt` (what
/// matches starts before the bound's start: `lt1980` reaches 1979, not 1980).
///
/// # Errors
/// Why the range cannot be answered from the index.
pub fn keys_of_range(
    leaves: &[(String, LeafKind)],
    lower: Option<&str>,
    upper: Option<&str>,
    before: bool,
) -> Result<Vec<Key>, QueryRefusal> {
    let (Some(lower), Some(upper)) = (lower, upper) else {
        return Err(QueryRefusal::OpenRange);
    };
    let lower = FhirDate::parse(lower).ok_or(QueryRefusal::BadDate)?;
    let upper = FhirDate::parse(upper).ok_or(QueryRefusal::BadDate)?;
    // A bound with a time: a day either side covers every time zone's idea of its date.
    let widen = |date: &FhirDate, days: i64| i64::from(date.time.is_some()) * days;
    let from = lower.local.first_day().plus_days(widen(&lower, -1));
    let to = if before {
        // Strictly before the bound's first instant: its day before, or the day itself when the
        // bound has a time.
        let start = upper.local.first_day();
        start.plus_days(if upper.time.is_some() { 1 } else { -1 })
    } else {
        upper.local.last_day().plus_days(widen(&upper, 1))
    };
    // Bounds that cross (`ge1900-09&lt1900-09`) still match a coarser value spanning both
    // (`1900`): what matches touches the days between them either way.
    let key = |d: &Day| days_from_civil(d.year, d.month, d.day);
    let (from, to) = if key(&to) < key(&from) {
        (to, from)
    } else {
        (from, to)
    };
    let first = from.year * 12 + i64::from(from.month) - 1;
    let last = to.year * 12 + i64::from(to.month) - 1;
    let mut keys = Vec::new();
    for (leaf, _) in leaves {
        if last - first < MAX_RANGE_MONTHS {
            for m in first..=last {
                let text = format!("{:04}-{:02}", m.div_euclid(12), m.rem_euclid(12) + 1);
                keys.push(Key::new(leaf, Transform::Month, text));
            }
            for year in from.year..=to.year {
                keys.push(Key::new(leaf, Transform::YearOnly, format!("{year:04}")));
            }
        } else if to.year - from.year < MAX_RANGE_YEARS {
            for year in from.year..=to.year {
                keys.push(Key::new(leaf, Transform::Year, format!("{year:04}")));
            }
        } else {
            return Err(QueryRefusal::WideRange);
        }
    }
    keys.sort();
    keys.dedup();
    Ok(keys)
}

/// Why a search value cannot be answered from a blind index. The words are fixed: never a value.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum QueryRefusal {
    /// An empty value.
    #[error("an empty value cannot be searched on a blind index")]
    Empty,
    /// A string shorter than [`MIN_PREFIX`].
    #[error("a string search on a blind index needs at least 2 characters")]
    TooShort,
    /// `system|` (every code of a system).
    #[error(
        "a search for every code of a system (`system|`) cannot be answered from a blind index"
    )]
    SystemOnly,
    /// A modifier the index has no transform for.
    #[error("this modifier cannot be answered from a blind index")]
    Modifier,
    /// A date prefix other than `eq`, outside a `ge`/`lt` pair.
    #[error(
        "only equality (`eq`) and bounded ranges (`ge`/`gt` with `le`/`lt`) can be answered from a blind index"
    )]
    DatePrefix,
    /// A date value that is not a FHIR date.
    #[error("the value is not a FHIR date")]
    BadDate,
    /// A range with one bound.
    #[error(
        "a date range on a blind index needs a lower (`ge`/`gt`) and an upper (`le`/`lt`) bound"
    )]
    OpenRange,
    /// A range wider than [`MAX_RANGE_YEARS`].
    #[error("a date range on a blind index may span at most 10 years")]
    WideRange,
    /// The parameter reads a part of the element that is not indexed (`address-use`: an
    /// address's `use`), or a data type the index does not hold.
    #[error("it reads a part of a sealed element that is not indexed")]
    NotIndexed,
    /// The search asks for more tokens than one upstream URL holds.
    #[error(
        "the search asks for too many blind-index tokens (more than 256): ask for fewer values at once"
    )]
    TooMany,
    /// An escape in a value (`\,`): not answered from an index.
    #[error("escaped characters cannot be searched on a blind index")]
    Escape,
}

/// The items of a value list (`a,b`), refusing escapes.
fn split_or(value: &str) -> Result<Vec<String>, QueryRefusal> {
    if value.contains('\\') {
        return Err(QueryRefusal::Escape);
    }
    Ok(value.split(',').map(str::to_string).collect())
}

/// A date search value's prefix and the rest (`ge1974` → `("ge", "1974")`).
pub fn date_prefix(value: &str) -> (&str, &str) {
    match value.get(..2) {
        Some(p @ ("eq" | "ne" | "gt" | "lt" | "ge" | "le" | "sa" | "eb" | "ap")) => {
            (p, value.get(2..).unwrap_or_default())
        }
        _ => ("eq", value),
    }
}

/// NFKD, combining marks dropped, lower-cased character by character, white space collapsed and
/// trimmed.
pub fn fold(text: &str) -> String {
    let lowered: String = text
        .nfkd()
        .filter(|c| !is_combining_mark(*c))
        .flat_map(char::to_lowercase)
        .collect();
    lowered.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Precision {
    Year,
    Month,
    Day,
}

/// A calendar date at some precision.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Day {
    year: i64,
    month: u32,
    day: u32,
    precision: Precision,
}

impl Day {
    fn year_text(&self) -> String {
        format!("{:04}", self.year)
    }
    fn month_text(&self) -> String {
        format!("{:04}-{:02}", self.year, self.month)
    }
    fn day_text(&self) -> String {
        format!("{:04}-{:02}-{:02}", self.year, self.month, self.day)
    }
    fn first_day(&self) -> Self {
        Self {
            month: if self.precision >= Precision::Month {
                self.month
            } else {
                1
            },
            day: if self.precision >= Precision::Day {
                self.day
            } else {
                1
            },
            precision: Precision::Day,
            ..*self
        }
    }
    fn last_day(&self) -> Self {
        let month = if self.precision >= Precision::Month {
            self.month
        } else {
            12
        };
        let day = if self.precision >= Precision::Day {
            self.day
        } else {
            days_in_month(self.year, month)
        };
        Self {
            month,
            day,
            precision: Precision::Day,
            ..*self
        }
    }
    /// The day `n` days later (earlier if negative), at day precision.
    fn plus_days(&self, n: i64) -> Self {
        civil_from_days(days_from_civil(self.year, self.month, self.day) + n)
    }
}

/// A parsed FHIR date, dateTime or instant: its calendar date as written, and its offset from UTC
/// when it has a time.
struct FhirDate {
    local: Day,
    /// Minutes east of UTC, and the time of day in minutes, when a time was given.
    time: Option<(i64, i64)>,
}

impl FhirDate {
    fn parse(text: &str) -> Option<Self> {
        let (date, time) = match text.split_once('T') {
            Some((d, t)) => (d, Some(t)),
            None => (text, None),
        };
        let mut parts = date.split('-');
        let year = parts.next()?;
        if year.len() != 4 || !year.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let year: i64 = year.parse().ok()?;
        let two = |p: Option<&str>| -> Option<Option<u32>> {
            match p {
                None => Some(None),
                Some(p) if p.len() == 2 && p.bytes().all(|b| b.is_ascii_digit()) => {
                    Some(Some(p.parse().ok()?))
                }
                Some(_) => None,
            }
        };
        let month = two(parts.next())?;
        let day = two(parts.next())?;
        if parts.next().is_some() {
            return None;
        }
        let local = match (month, day) {
            (None, None) => Day {
                year,
                month: 1,
                day: 1,
                precision: Precision::Year,
            },
            (Some(m), None) if (1..=12).contains(&m) => Day {
                year,
                month: m,
                day: 1,
                precision: Precision::Month,
            },
            (Some(m), Some(d))
                if (1..=12).contains(&m) && d >= 1 && d <= days_in_month(year, m) =>
            {
                Day {
                    year,
                    month: m,
                    day: d,
                    precision: Precision::Day,
                }
            }
            _ => return None,
        };
        let time = match time {
            None => None,
            Some(_) if local.precision != Precision::Day => return None,
            Some(t) => Some(parse_time(t)?),
        };
        Some(Self { local, time })
    }

    /// The date in UTC, when a time with a zone was given.
    fn utc_day(&self) -> Option<Day> {
        let (offset, minutes) = self.time?;
        let utc = minutes - offset;
        let shift = utc.div_euclid(24 * 60);
        Some(self.local.plus_days(shift))
    }
}

/// `hh:mm[:ss[.f…]](Z|±hh:mm)` → (offset minutes east of UTC, minutes since midnight). A time
/// without a zone is taken as UTC.
fn parse_time(t: &str) -> Option<(i64, i64)> {
    let (clock, offset) = if let Some(c) = t.strip_suffix('Z') {
        (c, 0)
    } else if let Some(at) = t.rfind(['+', '-']) {
        let (c, z) = t.split_at(at);
        let sign = if z.starts_with('-') { -1 } else { 1 };
        let (h, m) = z.get(1..)?.split_once(':')?;
        let (h, m): (i64, i64) = (h.parse().ok()?, m.parse().ok()?);
        if h > 14 || m > 59 {
            return None;
        }
        (c, sign * (h * 60 + m))
    } else {
        (t, 0)
    };
    let mut parts = clock.split(':');
    let h: i64 = parts.next()?.parse().ok()?;
    let m: i64 = parts.next()?.parse().ok()?;
    if let Some(s) = parts.next() {
        let whole = s.split('.').next()?;
        let _: u32 = whole.parse().ok()?;
    }
    if !(0..24).contains(&h) || !(0..60).contains(&m) {
        return None;
    }
    Some((offset, h * 60 + m))
}

fn is_leap(year: i64) -> bool {
    (year % 4 == 0 && year % 100 != 0) || year % 400 == 0
}

fn days_in_month(year: i64, month: u32) -> u32 {
    match month {
        4 | 6 | 9 | 11 => 30,
        2 if is_leap(year) => 29,
        2 => 28,
        _ => 31,
    }
}

/// Days since 1970-01-01 (H. Hinnant's `days_from_civil`).
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(month);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The inverse of [`days_from_civil`].
fn civil_from_days(z: i64) -> Day {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    Day {
        year,
        month: u32::try_from(month).unwrap_or(1),
        day: u32::try_from(day).unwrap_or(1),
        precision: Precision::Day,
    }
}

/// The `meta.tag` system of index `name` (`Patient.name.family/prefix`) under generation
/// `generation` of the blind-index secret: [`BLIND_INDEX_SYSTEM`] and the name for generation 1
/// (what every token written before rotation existed holds), [`BLIND_INDEX_SYSTEM`], `g<n>/` and
/// the name for a later one. While a rotation re-indexes, a resource may hold the tokens of two
/// generations; each is searched under its own system.
pub fn index_system(generation: NonZeroU32, name: &str) -> String {
    if generation == NonZeroU32::MIN {
        format!("{BLIND_INDEX_SYSTEM}{name}")
    } else {
        format!("{BLIND_INDEX_SYSTEM}g{generation}/{name}")
    }
}

/// The generation of the blind-index secret a tag's system was made under (see
/// [`index_system`]), and the index name in it; `None` for a system that is not a blind-index
/// one.
pub fn index_generation(system: &str) -> Option<(NonZeroU32, &str)> {
    let rest = system.strip_prefix(BLIND_INDEX_SYSTEM)?;
    let later = rest.strip_prefix('g').and_then(|r| r.split_once('/'));
    if let Some((digits, name)) = later
        && !digits.is_empty()
        && digits.bytes().all(|b| b.is_ascii_digit())
    {
        return Some((digits.parse().ok()?, name));
    }
    Some((NonZeroU32::MIN, rest))
}

/// Whether `tag` (a `meta.tag` coding) is a blind-index token.
pub fn is_index_tag(tag: &Value) -> bool {
    tag.get("system")
        .and_then(Value::as_str)
        .is_some_and(|s| s.starts_with(BLIND_INDEX_SYSTEM))
}

/// Adds `tags` to the resource's `meta.tag`, sorted and without duplicates.
pub(crate) fn add_tags(object: &mut Map<String, Value>, mut tags: Vec<Tag>) {
    tags.sort();
    tags.dedup();
    add_tag_codings(
        object,
        tags.into_iter()
            .map(|t| json!({"system": t.system, "code": t.code}))
            .collect(),
    );
}

/// Adds `codings` to the resource's `meta.tag`, each one not already there.
pub(crate) fn add_tag_codings(object: &mut Map<String, Value>, codings: Vec<Value>) {
    if codings.is_empty() {
        return;
    }
    let meta = object
        .entry("meta")
        .or_insert_with(|| Value::Object(Map::new()));
    let Some(meta) = meta.as_object_mut() else {
        return;
    };
    let list = meta
        .entry("tag")
        .or_insert_with(|| Value::Array(Vec::new()));
    if let Some(list) = list.as_array_mut() {
        // A resource may carry many thousands of tokens (one per identifier): a set, not a scan.
        let key = |c: &Value| {
            (
                c.get("system").and_then(Value::as_str).map(str::to_string),
                c.get("code").and_then(Value::as_str).map(str::to_string),
            )
        };
        let mut present: std::collections::HashSet<_> = list.iter().map(key).collect();
        for coding in codings {
            if present.insert(key(&coding)) {
                list.push(coding);
            }
        }
    }
}

/// The blind-index token codings of a resource's `meta.tag`.
pub(crate) fn index_tag_codings(object: &Map<String, Value>) -> impl Iterator<Item = &Value> {
    object
        .get("meta")
        .and_then(|m| m.get("tag"))
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter(|t| is_index_tag(t))
}

/// Makes `tags` the resource's blind-index tokens (its other `meta.tag` codings kept): `false`,
/// and the resource untouched, when it already holds exactly these.
pub fn replace_index_tags(resource: &mut Value, tags: Vec<Tag>) -> bool {
    let Some(object) = resource.as_object_mut() else {
        return false;
    };
    let held: std::collections::BTreeSet<(String, String)> = index_tag_codings(object)
        .filter_map(|t| {
            Some((
                t.get("system")?.as_str()?.to_string(),
                t.get("code")?.as_str()?.to_string(),
            ))
        })
        .collect();
    let wanted: std::collections::BTreeSet<(String, String)> = tags
        .iter()
        .map(|t| (t.system.clone(), t.code.clone()))
        .collect();
    if held == wanted {
        return false;
    }
    take_tags(object);
    add_tags(object, tags);
    true
}

/// Takes the blind-index tokens off a resource's `meta.tag` (and an emptied `tag` or `meta`
/// with them), returning them.
pub(crate) fn take_tags(object: &mut Map<String, Value>) -> Vec<Value> {
    let mut taken = Vec::new();
    let Some(Value::Object(meta)) = object.get_mut("meta") else {
        return taken;
    };
    if let Some(Value::Array(list)) = meta.get_mut("tag") {
        let (ours, theirs): (Vec<Value>, Vec<Value>) =
            std::mem::take(list).into_iter().partition(is_index_tag);
        *list = theirs;
        taken = ours;
        if list.is_empty() {
            meta.shift_remove("tag");
        }
    }
    if meta.is_empty() {
        object.shift_remove("meta");
    }
    taken
}

/// The index name a tag's system names (`Patient.name.family/prefix`), and the leaf path in it.
pub(crate) fn tag_leaf(tag: &Value) -> Option<&str> {
    let (_, name) = index_generation(tag.get("system").and_then(Value::as_str)?)?;
    Some(name.rsplit_once('/').map_or(name, |(leaf, _)| leaf))
}

/// The R4 data type of the element at `path` (plain), when it has exactly one.
pub fn data_type(path: &str) -> Option<&'static str> {
    let parsed = ElementPath::parse(path).ok()?;
    match parsed.element().types.as_slice() {
        [one] => Some(one),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_generation_has_its_own_systems_and_reads_back() {
        let two = NonZeroU32::new(2).unwrap();
        let name = "Patient.name.family/prefix";
        let first = index_system(NonZeroU32::MIN, name);
        let second = index_system(two, name);
        assert_eq!(first, format!("{BLIND_INDEX_SYSTEM}{name}"));
        assert_eq!(second, format!("{BLIND_INDEX_SYSTEM}g2/{name}"));
        assert_eq!(index_generation(&first), Some((NonZeroU32::MIN, name)));
        assert_eq!(index_generation(&second), Some((two, name)));
        assert_eq!(index_generation("http://example.org/x"), None);
        // Not a generation: read as a generation-1 name, never a panic.
        for odd in ["g/x", "g0/x", "g99999999999/x", "gx/y", "g"] {
            let system = format!("{BLIND_INDEX_SYSTEM}{odd}");
            let parsed = index_generation(&system);
            assert!(parsed.is_none_or(|(g, _)| g == NonZeroU32::MIN), "{odd}");
        }
        for generation in [NonZeroU32::MIN, two] {
            let tag = json!({"system": index_system(generation, name), "code": "ab"});
            assert!(is_index_tag(&tag));
            assert_eq!(tag_leaf(&tag), Some("Patient.name.family"));
        }
        // The same value under two generations: unrelated tokens, under their own systems.
        let a = BlindIndex::new([1; 32]);
        let b = BlindIndex::of_generation([2; 32], two);
        let key = [Key::new(
            "Patient.name.family",
            Transform::Exact,
            "smith".into(),
        )];
        let (ta, tb) = (
            Tokens::new(&a, 64).tags(&key),
            Tokens::new(&b, 64).tags(&key),
        );
        assert_ne!(ta[0].code, tb[0].code);
        assert!(tb[0].system.contains("/g2/"));
        assert!(!ta[0].system.contains("/g"));
    }

    fn tokens() -> (BlindIndex, u8) {
        (BlindIndex::new([5; 32]), 64)
    }

    fn written(path: &str, data_type: &str, value: Value) -> Vec<Tag> {
        let (index, bits) = tokens();
        let mut out = Vec::new();
        Tokens::new(&index, bits).of_value(path, data_type, &value, &mut out);
        out
    }

    fn asked(leaves: &[(String, LeafKind)], modifier: Option<&str>, value: &str) -> Vec<Tag> {
        let (index, bits) = tokens();
        Tokens::new(&index, bits)
            .of_query(leaves, modifier, value)
            .unwrap()
    }

    fn finds(stored: &[Tag], asked: &[Tag]) -> bool {
        asked.iter().any(|t| stored.contains(t))
    }

    #[test]
    fn references_are_found_by_type_and_id_or_by_id() {
        let gp = leaves("Patient.generalPractitioner", "Reference");
        let stored = written(
            "Patient.generalPractitioner",
            "Reference",
            json!([{"reference": "https://other.example/fhir/Practitioner/dr-1/_history/3"},
                   {"reference": "#contained"}, {"identifier": {"value": "x"}}]),
        );
        // Two keys of the one literal reference; none of the contained or logical one.
        assert_eq!(stored.len(), 2);
        assert!(finds(&stored, &asked(&gp, None, "Practitioner/dr-1")));
        assert!(finds(
            &stored,
            &asked(&gp, None, "http://here/fhir/Practitioner/dr-1")
        ));
        assert!(finds(&stored, &asked(&gp, None, "dr-1")));
        assert!(finds(&stored, &asked(&gp, Some("Practitioner"), "dr-1")));
        assert!(!finds(&stored, &asked(&gp, Some("Organization"), "dr-1")));
        assert!(!finds(&stored, &asked(&gp, None, "Organization/dr-1")));
        assert!(!finds(&stored, &asked(&gp, None, "dr-2")));
        let (index, bits) = tokens();
        assert_eq!(
            Tokens::new(&index, bits).of_query(&gp, Some("identifier"), "x"),
            Err(QueryRefusal::Modifier)
        );
    }

    #[test]
    fn names_are_found_by_prefix_exact_and_member() {
        let stored = written(
            "Patient.name",
            "HumanName",
            json!([{"family": "Müller-Lüdenscheidt", "given": ["Anna", "Li"]}]),
        );
        let family = leaves("Patient.name.family", "string");
        let name = leaves("Patient.name", "HumanName");
        assert!(finds(&stored, &asked(&family, None, "mul")));
        assert!(finds(&stored, &asked(&family, None, "MÜLLER-LÜDENSCHEIDT")));
        assert!(finds(&stored, &asked(&family, None, "muller-lu")));
        assert!(!finds(&stored, &asked(&family, None, "anna")));
        assert!(finds(&stored, &asked(&name, None, "anna")));
        assert!(
            finds(&stored, &asked(&name, None, "li")),
            "a two-letter given name"
        );
        assert!(finds(
            &stored,
            &asked(&family, Some("exact"), "Müller-Lüdenscheidt")
        ));
        assert!(!finds(
            &stored,
            &asked(&family, Some("exact"), "müller-lüdenscheidt")
        ));
        let (index, bits) = tokens();
        let t = Tokens::new(&index, bits);
        assert_eq!(t.of_query(&family, None, "m"), Err(QueryRefusal::TooShort));
        assert_eq!(
            t.of_query(&family, Some("contains"), "ll"),
            Err(QueryRefusal::Modifier)
        );
        assert_eq!(
            t.of_query(&family, None, "a\\,b"),
            Err(QueryRefusal::Escape)
        );
        // An OR list asks for either.
        assert!(finds(&stored, &asked(&family, None, "smith,mül")));
    }

    #[test]
    fn identifiers_and_codes_are_found_with_and_without_system() {
        let stored = written(
            "Patient.identifier",
            "Identifier",
            json!({"system": "http://hl7.org/fhir/sid/us-ssn", "value": "999-12-3456"}),
        );
        let leaf = leaves("Patient.identifier", "Identifier");
        assert!(finds(
            &stored,
            &asked(&leaf, None, "http://hl7.org/fhir/sid/us-ssn|999-12-3456")
        ));
        assert!(finds(&stored, &asked(&leaf, None, "999-12-3456")));
        assert!(!finds(&stored, &asked(&leaf, None, "other|999-12-3456")));
        assert!(!finds(&stored, &asked(&leaf, None, "|999-12-3456")));
        let (index, bits) = tokens();
        assert_eq!(
            Tokens::new(&index, bits).of_query(&leaf, None, "sys|"),
            Err(QueryRefusal::SystemOnly)
        );
        let concept = written(
            "Condition.code",
            "CodeableConcept",
            json!({"coding": [{"system": "http://snomed.info/sct", "code": "44054006"}], "text": "Diabetes"}),
        );
        let leaf = leaves("Condition.code", "CodeableConcept");
        assert!(finds(
            &concept,
            &asked(&leaf, None, "http://snomed.info/sct|44054006")
        ));
        assert!(finds(&concept, &asked(&leaf, None, "44054006")));
        assert!(!finds(&concept, &asked(&leaf, None, "Diabetes")));
    }

    #[test]
    fn dates_are_found_at_each_precision_and_in_ranges() {
        let day = written("Patient.birthDate", "date", json!("1974-12-25"));
        let year = written("Patient.birthDate", "date", json!("1974"));
        let leaf = leaves("Patient.birthDate", "date");
        for q in ["1974", "1974-12", "1974-12-25", "eq1974-12-25"] {
            assert!(finds(&day, &asked(&leaf, None, q)), "{q}");
        }
        assert!(!finds(&day, &asked(&leaf, None, "1974-12-24")));
        assert!(finds(&year, &asked(&leaf, None, "1974")));
        assert!(!finds(&year, &asked(&leaf, None, "1974-12")), "not within");
        let (index, bits) = tokens();
        let t = Tokens::new(&index, bits);
        let range = t
            .of_range(&leaf, Some("1974-06-01"), Some("1975-03-01"), false)
            .unwrap();
        assert!(finds(&day, &range));
        assert!(finds(&year, &range), "a year-precision value may overlap");
        let wide = t
            .of_range(&leaf, Some("1970"), Some("1979"), false)
            .unwrap();
        assert!(finds(&day, &wide) && finds(&year, &wide));
        let outside = t
            .of_range(&leaf, Some("1980"), Some("1981"), false)
            .unwrap();
        assert!(!finds(&day, &outside) && !finds(&year, &outside));
        // `lt1975` ends with 1974; `le1974` too.
        let before = t.of_range(&leaf, Some("1966"), Some("1975"), true).unwrap();
        assert!(finds(&day, &before) && finds(&year, &before));
        assert!(t.of_range(&leaf, Some("1966"), Some("1976"), true).is_ok());
        assert_eq!(
            t.of_range(&leaf, Some("1966"), Some("1976"), false),
            Err(QueryRefusal::WideRange)
        );
        assert_eq!(
            t.of_range(&leaf, Some("1900"), Some("2000"), false),
            Err(QueryRefusal::WideRange)
        );
        assert_eq!(
            t.of_range(&leaf, Some("1900"), None, false),
            Err(QueryRefusal::OpenRange)
        );
        assert_eq!(
            t.of_query(&leaf, None, "ge1974"),
            Err(QueryRefusal::DatePrefix)
        );
        assert_eq!(
            t.of_query(&leaf, None, "1974-13"),
            Err(QueryRefusal::BadDate)
        );
        assert_eq!(
            t.of_query(&leaf, None, "1974-02-30"),
            Err(QueryRefusal::BadDate)
        );
    }

    #[test]
    fn times_are_indexed_on_their_own_date_and_on_the_utc_one() {
        let stored = written(
            "Observation.effective[x]",
            "dateTime",
            json!("2020-01-01T23:30:00-05:00"),
        );
        let leaf = leaves("Observation.effective[x]", "dateTime");
        assert!(finds(&stored, &asked(&leaf, None, "2020-01-01")));
        assert!(finds(&stored, &asked(&leaf, None, "2020-01-02")));
        assert!(finds(&stored, &asked(&leaf, None, "2020-01-02T04:30:00Z")));
    }

    #[test]
    fn civil_days_round_trip() {
        for (y, m, d) in [
            (1970, 1, 1),
            (2000, 2, 29),
            (1900, 3, 1),
            (-1, 12, 31),
            (2024, 12, 31),
        ] {
            let day = civil_from_days(days_from_civil(y, m, d));
            assert_eq!((day.year, day.month, day.day), (y, m, d));
        }
        let leap = Day {
            year: 2000,
            month: 2,
            day: 28,
            precision: Precision::Day,
        };
        assert_eq!(leap.plus_days(1).day_text(), "2000-02-29");
        assert_eq!(leap.plus_days(2).day_text(), "2000-03-01");
    }

    #[test]
    fn tags_go_on_meta_and_come_off_it_alone() {
        let mut object =
            json!({"resourceType": "Patient", "meta": {"tag": [{"system": "s", "code": "c"}]}});
        let object = object.as_object_mut().unwrap();
        add_tags(
            object,
            vec![Tag {
                system: format!("{BLIND_INDEX_SYSTEM}Patient.birthDate/day"),
                code: "ab".into(),
            }],
        );
        assert!(crate::shape::holds_sealed(&Value::Object(object.clone())));
        let taken = take_tags(object);
        assert_eq!(taken.len(), 1);
        assert_eq!(tag_leaf(&taken[0]), Some("Patient.birthDate"));
        assert_eq!(
            object["meta"],
            json!({"tag": [{"system": "s", "code": "c"}]})
        );
        let mut bare = json!({"resourceType": "Patient"});
        assert!(take_tags(bare.as_object_mut().unwrap()).is_empty());
        assert_eq!(bare, json!({"resourceType": "Patient"}));
    }
}
