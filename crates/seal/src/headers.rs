//! Which shared headers a reader needs: the ids of the headers that the envelopes of a resource
//! (or a Bundle of them) are wrapped under and that do not travel in the resource itself.
//!
//! With `shared` granularity a header is stored once on the upstream, not in the resources sealed
//! under it (DESIGN.md, "Keys and performance"), so before opening a response the gateway fetches
//! the headers its envelopes name ([`shared_header_ids`]) and hands them to the
//! [`Reader`](crate::Reader) as a [`HeaderLookup`](crate::HeaderLookup).

use std::collections::HashSet;

use base64::Engine as _;
use fhirseal_envelope::{Envelope, Header, HeaderId};
use fhirseal_fhir::Members;
use serde_json::{Map, Value};

use crate::shape::{SEALED_ELEMENT, SEALED_HEADER, carries_headers, is_header};

/// The ids of the headers that the sealed elements of `resource` are wrapped under, for a
/// resource (its contained resources included), every entry of a Bundle (at any depth) or each
/// item of a JSON array: deduplicated, in first-seen order.
///
/// Left out, as [`Reader::open`](crate::Reader::open) does not look them up:
/// - ids whose header travels in the resource itself (a well-formed `sealed-header` extension on
///   its root, `resource` granularity);
/// - envelopes too short to be one, or whose version is unknown (they stay masked whatever is
///   found); an envelope is otherwise not decoded here, only its id (the reader refuses a
///   malformed one when it opens it, and fetching its header is then harmless);
/// - envelopes in a Bundle's own members or an entry's `search`, `request` or `response`, where
///   sealing never writes (they are masked, never opened).
///
/// Nothing is decrypted or decoded beyond each envelope's first 24 characters, where its id is.
pub fn shared_header_ids(resource: &Value) -> Vec<HeaderId> {
    needed_headers(resource).ids
}

/// What a reader needs to know of `value` before it opens it, found in one walk: the shared
/// headers to look up first, and whether a header travels anywhere in it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NeededHeaders {
    /// [`shared_header_ids`] of `value`.
    pub ids: Vec<HeaderId>,
    /// [`carries_headers`] of `value`: a `sealed-header` extension somewhere in it, whose key is
    /// known only once the reader has found and opened it.
    pub carried: bool,
}

/// [`NeededHeaders`] of `value` (a resource, a Bundle, or an array of either).
pub fn needed_headers(value: &Value) -> NeededHeaders {
    let mut found = Found::default();
    found.any(value);
    NeededHeaders {
        ids: found.ids,
        carried: found.carried,
    }
}

/// The ids found so far, in order, and the set of them; whether a header was seen.
#[derive(Default)]
struct Found {
    ids: Vec<HeaderId>,
    seen: HashSet<HeaderId>,
    carried: bool,
}

impl Found {
    /// A resource, a Bundle, or an array of either (walked as [`Reader::open`](crate::Reader::open)
    /// walks them).
    fn any(&mut self, value: &Value) {
        match value {
            Value::Array(items) => items.iter().for_each(|item| self.any(item)),
            Value::Object(object)
                if object.member("resourceType").and_then(Value::as_str) == Some("Bundle") =>
            {
                // Only the entries' resources hold envelopes a reader opens; the rest of the
                // Bundle is only looked at for a header.
                self.carried |= is_header(object);
                for (key, member) in object {
                    match member {
                        Value::Array(entries) if key == "entry" => {
                            for entry in entries {
                                self.entry(entry);
                            }
                        }
                        _ => self.note_carried(member),
                    }
                }
            }
            Value::Object(object) => {
                let local = local_header_ids(object);
                self.envelopes(value, &local);
            }
            _ => {}
        }
    }

    /// One item of a Bundle's `entry`: its `resource` walked, the rest looked at for a header.
    fn entry(&mut self, entry: &Value) {
        let Value::Object(object) = entry else {
            self.note_carried(entry);
            return;
        };
        self.carried |= is_header(object);
        for (key, member) in object {
            if key == "resource" {
                self.any(member);
            } else {
                self.note_carried(member);
            }
        }
    }

    /// Whether `value`, where no envelope is looked for, holds a header.
    fn note_carried(&mut self, value: &Value) {
        if !self.carried {
            self.carried = carries_headers(value);
        }
    }

    /// Every sealed-element envelope in `value`, at any depth, whose header is not in `local`;
    /// and whether a header is there.
    fn envelopes(&mut self, value: &Value, local: &HashSet<HeaderId>) {
        match value {
            Value::Object(object) => {
                let url = object.member("url").and_then(Value::as_str);
                self.carried |= url == Some(SEALED_HEADER);
                if url == Some(SEALED_ELEMENT)
                    && let Some(text) = object.member("valueBase64Binary").and_then(Value::as_str)
                    && let Ok(id) = Envelope::header_of_base64(text)
                    && !local.contains(&id)
                    && self.seen.insert(id)
                {
                    self.ids.push(id);
                }
                object.values().for_each(|v| self.envelopes(v, local));
            }
            Value::Array(items) => items.iter().for_each(|v| self.envelopes(v, local)),
            _ => {}
        }
    }
}

/// The ids of the `sealed-header` extensions on a resource's root that the reader would use:
/// valid base64 whose header prefix reads (`Header::peek`), as when opening.
fn local_header_ids(object: &Map<String, Value>) -> HashSet<HeaderId> {
    let extensions = object.member("extension").and_then(Value::as_array);
    extensions
        .into_iter()
        .flatten()
        .filter(|e| e.member("url").and_then(Value::as_str) == Some(SEALED_HEADER))
        .filter_map(|e| e.member("valueBase64Binary").and_then(Value::as_str))
        .filter_map(|text| base64::engine::general_purpose::STANDARD.decode(text).ok())
        .filter_map(|bytes| Header::peek(&bytes).ok().map(|(id, _, _)| id))
        .collect()
}
