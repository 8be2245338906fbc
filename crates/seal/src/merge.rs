//! Writes element by element: what a caller may change in a resource it read masked.
//!
//! The rule: a caller may set, change or remove an element only if it may read it. An element
//! the caller cannot open (masked for it) must come back exactly as it was served, or be left
//! out; either way the stored envelope is carried across unchanged. An element withheld as
//! forged (`docs/authenticity.md`) is nobody's and is not carried: replaced or left out, it goes.
//!
//! [`merge`] takes the stored resource in its upstream form, the same resource as the caller's
//! reader opened it ([`crate::Reader::open`]: which elements stay masked is the reader's answer,
//! not worked out again here) and the client's new body, and gives the resource to seal
//! ([`Merged::resource`]) plus what to put back after sealing ([`Merged::finish`]):
//!
//! | the stored element is | the client's body holds there | result |
//! |---|---|---|
//! | unreadable | the placeholder as served | kept: the stored envelope carried across |
//! | unreadable | nothing (its model dropped it) | kept, likewise |
//! | unreadable | a value, or the placeholder edited (`masked` → `unknown`) | [`MergeError::Changed`] (403) |
//! | unreadable, inside an object the client removed | — | [`MergeError::Removed`] (403) |
//! | readable, or absent | anything, or nothing | the client's (nothing deletes: PUT semantics) |
//!
//! Arrays: an envelope is bound to its item's index (`Patient.telecom[2]`), so an unreadable
//! item keeps its index. The other slots are filled with the client's items in order, the
//! placeholders it sent back (anywhere in the array) taken out first; when the stored index can
//! no longer be reached (readable items before it were removed) the write is refused
//! ([`MergeError::Moved`], 409). An item that is not sealed itself but holds an unreadable
//! element (`Patient.contact[0].telecom[1]`) keeps its index too and is merged recursively; such
//! an array must keep its length.
//!
//! Anything of ours in the client's body that is not such a placeholder is refused
//! ([`MergeError::Foreign`], 422), on every type, protected or not: a `sealed-element` or
//! `sealed-header` extension, a blind-index token (a coding of a
//! `https://fhirseal.dev/fhir/blind-index/` system), a `MASKED` label on a resource that was not served
//! with one, a `masked` data-absent-reason where no element was masked for this caller.
//!
//! Whether a *new* value is one the caller may set (it would be sealed under a structure the
//! caller does not satisfy) is known only after sealing: [`unreadable_paths`] of the sealed
//! result opened for the caller, minus [`Merged::carried_paths`], must be empty.

use std::collections::HashSet;

use base64::Engine as _;
use fhirseal_envelope::{Envelope, Header, HeaderId};
use serde_json::{Map, Value, json};

use crate::index::{add_tag_codings, index_tag_codings, tag_leaf};
use crate::shape::{
    BLIND_INDEX_SYSTEM, DATA_ABSENT_REASON, DATA_ABSENT_REASON_SYSTEM, NEUTRAL_DIV,
    OBSERVATION_VALUE_SYSTEM, SEALED_ELEMENT, SEALED_HEADER, envelope_of, is_sealed, masked_label,
    tidy_meta,
};

/// What stands in a carried slot while the rest is sealed; never stored (replaced by
/// [`Merged::finish`], which checks none is left).
const CARRIED: &str = "https://fhirseal.dev/fhir/StructureDefinition/carried-across";

/// Why a write cannot be merged with the stored resource. Each names an element path, never a
/// value.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MergeError {
    /// The client changed, edited the placeholder of, or set a value over an element the caller
    /// cannot read. 403.
    #[error(
        "{path} is an element this caller cannot read: it may only be sent back as it was \
         served (its placeholder) or left out"
    )]
    Changed {
        /// The element's path.
        path: String,
    },
    /// The client removed an object holding an element the caller cannot read. 403.
    #[error("the request removes {holder}, which holds {path}, an element this caller cannot read")]
    Removed {
        /// The object removed.
        holder: String,
        /// The unreadable element inside it.
        path: String,
    },
    /// The client would set an element that is sealed under a structure it does not satisfy
    /// (found after sealing, [`unreadable_paths`]). 403.
    #[error(
        "{path} would be sealed under a structure this caller does not satisfy: a caller may set \
         only what it may read"
    )]
    NotReadable {
        /// The element's path.
        path: String,
    },
    /// An unreadable item cannot keep its index: readable items before it were removed, or an
    /// array holding unreadable elements inside its items changed its length. 409.
    #[error(
        "{path} is an element this caller cannot read and is bound to its position; the \
         request would move it (readable items before it were added or removed). Keep the \
         array's items in place"
    )]
    Moved {
        /// The element's path.
        path: String,
    },
    /// Sealed content, a masked placeholder or the `MASKED` label that was not served to this
    /// caller for this resource. 422.
    #[error(
        "{path} holds sealed content or a masked placeholder that was not served to this caller \
         for this resource"
    )]
    Foreign {
        /// Where it is.
        path: String,
    },
    /// The element shares a compound blind index with an element this write carries across
    /// unread: no token can pair the new value with the stored one. 422.
    #[error(
        "{path} shares a compound blind index with an element this write leaves as stored without \
         reading it: set both in one write, or neither"
    )]
    Compound {
        /// The element's path (a leaf: `Patient.name.family`).
        path: String,
    },
    /// An element holding an unreadable one has another JSON shape in the client's body (an
    /// object where an array was). 422.
    #[error("{path} does not have the shape of the stored element")]
    Shape {
        /// The element's path.
        path: String,
    },
}

impl MergeError {
    /// Its HTTP status: 403, 409 or 422 (see each variant).
    pub fn status(&self) -> u16 {
        match self {
            Self::Changed { .. } | Self::Removed { .. } | Self::NotReadable { .. } => 403,
            Self::Moved { .. } => 409,
            Self::Foreign { .. } | Self::Shape { .. } | Self::Compound { .. } => 422,
        }
    }
}

/// One member step of a location in a resource's JSON.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Step {
    Key(String),
    Index(usize),
}

/// How a carried placeholder sits in its holder.
#[derive(Clone, Debug)]
enum Slot {
    /// `holder[key]` (a complex element, `_name` of a primitive, `dataAbsentReason`); `value`:
    /// the primitive's value member to keep absent (`birthDate` for `_birthDate`), or `value`
    /// for `dataAbsentReason` (every `value…` member).
    Field { key: String, value: Option<String> },
    /// `holder[key][index]`; `values`: a repeating primitive's value array (`given` for
    /// `_given`), whose item there stays `null`.
    Item {
        key: String,
        index: usize,
        values: Option<String>,
    },
}

#[derive(Clone, Debug)]
struct Carried {
    holder: Vec<Step>,
    slot: Slot,
    /// The stored upstream placeholder, envelope and all.
    stored: Value,
    path: String,
}

/// A client's body merged with the stored resource: [`Merged::resource`] to seal, then
/// [`Merged::finish`] on the sealed form.
#[derive(Clone, Debug)]
pub struct Merged {
    resource: Value,
    carried: Vec<Carried>,
    /// The stored resource's `sealed-header` extensions and blind-index `meta.tag` codings.
    headers: Vec<Value>,
    tokens: Vec<Value>,
    masked_label: bool,
}

impl Merged {
    /// The resource to seal: the client's body, with a stand-in where each unreadable element
    /// is carried across and the `MASKED` label taken off (sealing adds its own).
    pub fn resource(&self) -> &Value {
        &self.resource
    }

    /// [`Merged::resource`], taken.
    pub fn take_resource(&mut self) -> Value {
        std::mem::take(&mut self.resource)
    }

    /// The paths of the elements carried across (`Patient.telecom[1]`).
    pub fn carried_paths(&self) -> impl Iterator<Item = &str> {
        self.carried.iter().map(|c| c.path.as_str())
    }

    /// Whether anything is carried across.
    pub fn carries(&self) -> bool {
        !self.carried.is_empty()
    }

    /// Puts each stored placeholder back into `sealed` (the sealed form of
    /// [`Merged::resource`]) where it was, with the `sealed-header`s its envelopes name
    /// (`resource` granularity), the stored blind-index tokens of its element and the `MASKED`
    /// label.
    ///
    /// # Errors
    /// [`MergeError::Shape`] if a slot's holder is no longer where it was (sealing replaced it):
    /// nothing is half carried.
    pub fn finish(&self, mut sealed: Value) -> Result<Value, MergeError> {
        if self.carried.is_empty() {
            return Ok(sealed);
        }
        let mut needed: HashSet<HeaderId> = HashSet::new();
        let mut plain: HashSet<String> = HashSet::new();
        for carried in &self.carried {
            let shape = || MergeError::Shape {
                path: carried.path.clone(),
            };
            let holder = locate_mut(&mut sealed, &carried.holder)
                .and_then(Value::as_object_mut)
                .ok_or_else(shape)?;
            match &carried.slot {
                Slot::Field { key, value } => {
                    match value.as_deref() {
                        Some("value") => holder.retain(|k, _| !is_value_member(k)),
                        Some(value) => {
                            holder.shift_remove(value);
                        }
                        None => {}
                    }
                    holder.insert(key.clone(), carried.stored.clone());
                }
                Slot::Item { key, index, values } => {
                    let items = holder
                        .entry(key.clone())
                        .or_insert_with(|| Value::Array(Vec::new()));
                    let items = items.as_array_mut().ok_or_else(shape)?;
                    if items.len() <= *index {
                        items.resize(index + 1, Value::Null);
                    }
                    items[*index] = carried.stored.clone();
                    if let Some(values) = values
                        && let Some(Value::Array(items)) = holder.get_mut(values)
                    {
                        if let Some(item) = items.get_mut(*index) {
                            *item = Value::Null;
                        }
                        if items.iter().all(Value::is_null) {
                            holder.shift_remove(values);
                        }
                    }
                }
            }
            collect_header_ids(&carried.stored, &mut needed);
            plain.insert(plain_path(&carried.path));
        }
        if holds_url(&sealed, CARRIED) {
            return Err(MergeError::Shape {
                path: root_name(&sealed),
            });
        }
        let Some(object) = sealed.as_object_mut() else {
            return Err(MergeError::Shape {
                path: "Resource".into(),
            });
        };
        let mut extra: Vec<Value> = Vec::new();
        let present: Vec<Value> = object
            .get("extension")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        for header in &self.headers {
            let id = header_bytes(header).and_then(|b| Header::peek(&b).ok().map(|p| p.0));
            let wanted = id.is_some_and(|id| needed.contains(&id));
            if wanted && !present.contains(header) {
                extra.push(header.clone());
            }
        }
        if !extra.is_empty() {
            let extensions = object
                .entry("extension")
                .or_insert_with(|| Value::Array(Vec::new()));
            if let Some(extensions) = extensions.as_array_mut() {
                extensions.extend(extra);
            }
        }
        // The stored tokens of each carried element: its values are the stored ones. A compound
        // token (`leafA+leafB`) pairs two elements' values: it is carried when both are. When
        // only one is (a `writers` caller sets one element and leaves the other, which it cannot
        // read, as stored), no token can pair the new value with the carried one, and the
        // resource would drop out of searches on both: refused.
        let is_carried = |leaf: &str| {
            plain.iter().any(|p| {
                leaf.strip_prefix(p.as_str())
                    .is_some_and(|rest| rest.is_empty() || rest.starts_with('.'))
            })
        };
        let mut carried_tokens: Vec<Value> = Vec::new();
        for token in &self.tokens {
            let Some(leaves) = tag_leaf(token) else {
                continue;
            };
            let carried = leaves.split('+').filter(|l| is_carried(l)).count();
            if carried == leaves.split('+').count() {
                carried_tokens.push(token.clone());
            } else if carried > 0 {
                let path = leaves
                    .split('+')
                    .find(|l| !is_carried(l))
                    .unwrap_or(leaves)
                    .to_string();
                return Err(MergeError::Compound { path });
            }
        }
        add_tag_codings(object, carried_tokens);
        if self.masked_label {
            add_masked_label(object);
        }
        Ok(sealed)
    }
}

/// Merges the client's `client` body with the stored resource: `stored` in its upstream form,
/// `opened` that resource as the writer's reader opened it (`None`: nothing stored, a create).
/// See the module documentation for the rule.
///
/// # Errors
/// [`MergeError`] naming the first element the body may not hold or change.
pub fn merge(
    stored: Option<&Value>,
    opened: Option<&Value>,
    client: &Value,
) -> Result<Merged, MergeError> {
    let mut merged = Merged {
        resource: client.clone(),
        carried: Vec::new(),
        headers: Vec::new(),
        tokens: Vec::new(),
        masked_label: false,
    };
    let root = root_name(client);
    let served_label = opened.is_some_and(has_masked_label);
    if let (Some(Value::Object(stored)), Some(Value::Object(opened)), Value::Object(result)) =
        (stored, opened, &mut merged.resource)
    {
        let mut walk = Walk {
            carried: &mut merged.carried,
        };
        walk.object(stored, opened, result, &mut Vec::new(), &root)?;
        for extension in stored
            .get("extension")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if extension.get("url").and_then(Value::as_str) == Some(SEALED_HEADER) {
                merged.headers.push(extension.clone());
            }
        }
        merged.tokens = index_tag_codings(stored).cloned().collect();
    }
    if let Value::Object(result) = &mut merged.resource {
        if served_label {
            remove_masked_label(result);
        }
        if has_masked_label_in(result) {
            return Err(MergeError::Foreign {
                path: format!("{root}.meta.security"),
            });
        }
    }
    merged.masked_label = !merged.carried.is_empty();
    let mut path = root;
    if let Some(path) = foreign(&merged.resource, &mut path) {
        return Err(MergeError::Foreign { path });
    }
    Ok(merged)
}

/// The paths of the elements of `sealed` (a resource in its upstream form) that stay masked (or
/// are withheld as forged) in `opened`, the same resource opened by a reader: what that reader
/// cannot read.
pub fn unreadable_paths(sealed: &Value, opened: &Value) -> Vec<String> {
    let mut out = Vec::new();
    if let (Value::Object(sealed), Value::Object(opened)) = (sealed, opened) {
        let root = root_name_map(sealed);
        collect_unreadable(sealed, opened, &root, &mut out);
    }
    out
}

fn collect_unreadable(
    stored: &Map<String, Value>,
    opened: &Map<String, Value>,
    path: &str,
    out: &mut Vec<String>,
) {
    for (key, sv) in stored {
        let base = key.strip_prefix('_').unwrap_or(key);
        let ov = opened.get(key);
        let here = member_path(path, key);
        match sv {
            Value::Object(_) if is_sealed(sv) && ov.is_some_and(is_masked_view) => {
                out.push(here);
            }
            Value::Object(_) if is_sealed(sv) => {}
            Value::Object(inner) => {
                if let Some(Value::Object(o)) = ov {
                    collect_unreadable(inner, o, &here, out);
                }
            }
            Value::Array(items) => {
                let here = format!("{path}.{base}");
                for (i, item) in items.iter().enumerate() {
                    let oi = ov.and_then(|o| o.get(i));
                    let item_path = format!("{here}[{i}]");
                    if is_sealed(item) {
                        if oi.is_some_and(is_masked_view) {
                            out.push(item_path);
                        }
                    } else if let (Value::Object(s), Some(Value::Object(o))) = (item, oi) {
                        collect_unreadable(s, o, &item_path, out);
                    }
                }
            }
            _ => {}
        }
    }
}

/// The merge's walk: records what is carried.
struct Walk<'m> {
    carried: &'m mut Vec<Carried>,
}

impl Walk<'_> {
    /// Merges `result` (the client's object at `loc`, `path`) with the stored object.
    fn object(
        &mut self,
        stored: &Map<String, Value>,
        opened: &Map<String, Value>,
        result: &mut Map<String, Value>,
        loc: &mut Vec<Step>,
        path: &str,
    ) -> Result<(), MergeError> {
        for (key, sv) in stored {
            let ov = opened.get(key);
            let base = key.strip_prefix('_').unwrap_or(key);
            match sv {
                Value::Object(_) if is_sealed(sv) => {
                    let Some(served) = ov.filter(|o| is_masked_view(o)) else {
                        continue; // readable: the client's to change
                    };
                    let (element, value) = if key.starts_with('_') {
                        (format!("{path}.{base}"), Some(base.to_string()))
                    } else if key == "dataAbsentReason" {
                        (format!("{path}.value[x]"), Some("value".to_string()))
                    } else {
                        (format!("{path}.{key}"), None)
                    };
                    let changed = || MergeError::Changed {
                        path: element.clone(),
                    };
                    match value.as_deref() {
                        Some("value") if result.keys().any(|k| is_value_member(k)) => {
                            return Err(changed());
                        }
                        Some(value) if value != "value" && result.contains_key(value) => {
                            return Err(changed());
                        }
                        _ => {}
                    }
                    if result.get(key).is_some_and(|c| c != served) {
                        return Err(changed());
                    }
                    result.insert(key.clone(), stand_in(key));
                    self.carried.push(Carried {
                        holder: loc.clone(),
                        slot: Slot::Field {
                            key: key.clone(),
                            value,
                        },
                        stored: sv.clone(),
                        path: element,
                    });
                }
                // A narrative the sealing rules neutralised, sent back as served or left out:
                // it is what the server holds.
                Value::Object(inner)
                    if key == "text"
                        && inner.get("div").and_then(Value::as_str) == Some(NEUTRAL_DIV)
                        && result.get(key).is_none_or(|c| Some(c) == ov) =>
                {
                    result.insert(key.clone(), stand_in(key));
                    self.carried.push(Carried {
                        holder: loc.clone(),
                        slot: Slot::Field {
                            key: key.clone(),
                            value: None,
                        },
                        stored: sv.clone(),
                        path: format!("{path}.text"),
                    });
                }
                Value::Object(inner) => {
                    let Some(Value::Object(o)) = ov else {
                        continue;
                    };
                    let here = format!("{path}.{base}");
                    let Some(inside) = first_unreadable(inner, o, &here) else {
                        continue;
                    };
                    let Some(client) = result.get_mut(key) else {
                        return Err(MergeError::Removed {
                            holder: here,
                            path: inside,
                        });
                    };
                    let Some(client) = client.as_object_mut() else {
                        return Err(MergeError::Shape { path: here });
                    };
                    loc.push(Step::Key(key.clone()));
                    self.object(inner, o, client, loc, &here)?;
                    loc.pop();
                }
                Value::Array(items) => {
                    let empty = Vec::new();
                    let opened_items = ov.and_then(Value::as_array).unwrap_or(&empty);
                    self.array(key, items, opened_items, result, loc, path)?;
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// Merges the array `key` of `result` with the stored `items` (see the module docs).
    fn array(
        &mut self,
        key: &str,
        items: &[Value],
        opened: &[Value],
        result: &mut Map<String, Value>,
        loc: &mut Vec<Step>,
        path: &str,
    ) -> Result<(), MergeError> {
        let base = key.strip_prefix('_').unwrap_or(key);
        let here = format!("{path}.{base}");
        // A repeating primitive's companions: the value array goes with them.
        let values = key.strip_prefix('_').map(str::to_string);
        let mut unreadable: Vec<(usize, Value)> = Vec::new();
        let mut holding: Vec<usize> = Vec::new();
        for (i, item) in items.iter().enumerate() {
            let oi = opened.get(i);
            if is_sealed(item) {
                if let Some(served) = oi.filter(|o| is_masked_view(o)) {
                    unreadable.push((i, served.clone()));
                }
            } else if let (Value::Object(s), Some(Value::Object(o))) = (item, oi)
                && first_unreadable(s, o, &here).is_some()
            {
                holding.push(i);
            }
        }
        if unreadable.is_empty() && holding.is_empty() {
            return Ok(());
        }
        // The client's items: (companion or item, value) pairs.
        let take =
            |result: &mut Map<String, Value>, name: &str| -> Result<Vec<Value>, MergeError> {
                match result.shift_remove(name) {
                    None | Some(Value::Null) => Ok(Vec::new()),
                    Some(Value::Array(items)) => Ok(items),
                    Some(_) => Err(MergeError::Shape {
                        path: format!("{path}.{name}"),
                    }),
                }
            };
        // Keep the member order the client sent.
        let position = result
            .keys()
            .position(|k| k == key || values.as_deref() == Some(k.as_str()));
        let client_items = take(result, key)?;
        let client_values = match &values {
            Some(values) => take(result, values)?,
            None => Vec::new(),
        };
        let len = client_items.len().max(client_values.len());
        let mut pairs: Vec<(Value, Value)> = (0..len)
            .map(|i| {
                (
                    client_items.get(i).cloned().unwrap_or(Value::Null),
                    client_values.get(i).cloned().unwrap_or(Value::Null),
                )
            })
            .collect();
        // Placeholders sent back, wherever they are, are taken out: each unreadable item goes
        // back to its own index.
        let mut served: Vec<Value> = unreadable.iter().map(|(_, s)| s.clone()).collect();
        pairs.retain(|(item, value)| {
            if !value.is_null() {
                return true;
            }
            match served.iter().position(|s| s == item) {
                Some(at) => {
                    served.remove(at);
                    false
                }
                None => true,
            }
        });
        let total = pairs.len() + unreadable.len();
        if !holding.is_empty() && total != items.len() {
            let first = holding[0];
            return Err(MergeError::Moved {
                path: format!("{here}[{first}]"),
            });
        }
        if let Some((i, _)) = unreadable.iter().find(|(i, _)| *i >= total) {
            return Err(MergeError::Moved {
                path: format!("{here}[{i}]"),
            });
        }
        let mut rest = pairs.into_iter();
        let mut new_items = Vec::with_capacity(total);
        let mut new_values = Vec::with_capacity(total);
        for (i, item) in items
            .iter()
            .enumerate()
            .chain((items.len()..total).map(|i| (i, &Value::Null)))
            .take(total)
        {
            if unreadable.iter().any(|(u, _)| *u == i) {
                new_items.push(stand_in(key));
                new_values.push(Value::Null);
                self.carried.push(Carried {
                    holder: loc.clone(),
                    slot: Slot::Item {
                        key: key.to_string(),
                        index: i,
                        values: values.clone(),
                    },
                    stored: item.clone(),
                    path: format!("{here}[{i}]"),
                });
            } else if let Some((item, value)) = rest.next() {
                new_items.push(item);
                new_values.push(value);
            }
        }
        for &i in &holding {
            let (Value::Object(s), Some(Value::Object(o))) = (&items[i], opened.get(i)) else {
                continue;
            };
            let item_path = format!("{here}[{i}]");
            let Some(client) = new_items.get_mut(i).and_then(Value::as_object_mut) else {
                return Err(MergeError::Shape { path: item_path });
            };
            loc.push(Step::Key(key.to_string()));
            loc.push(Step::Index(i));
            self.object(s, o, client, loc, &item_path)?;
            loc.pop();
            loc.pop();
        }
        let at = position.unwrap_or(result.len()).min(result.len());
        if let Some(values) = values
            && new_values.iter().any(|v| !v.is_null())
        {
            result.shift_insert(at, values, Value::Array(new_values));
            result.shift_insert(
                (at + 1).min(result.len()),
                key.to_string(),
                Value::Array(new_items),
            );
        } else {
            result.shift_insert(at, key.to_string(), Value::Array(new_items));
        }
        Ok(())
    }
}

/// The first element under `stored` that `opened` shows masked, as a path under `path`.
fn first_unreadable(
    stored: &Map<String, Value>,
    opened: &Map<String, Value>,
    path: &str,
) -> Option<String> {
    let mut out = Vec::new();
    collect_unreadable(stored, opened, path, &mut out);
    out.into_iter().next()
}

/// What stands in a carried slot while sealing: an extension-only element no rule reads as a
/// value, replaced by [`Merged::finish`].
fn stand_in(key: &str) -> Value {
    if key == "text" {
        return json!({"extension": [{"url": CARRIED}], "status": "empty",
                      "div": "<div xmlns=\"http://www.w3.org/1999/xhtml\">carried</div>"});
    }
    json!({"extension": [{"url": CARRIED}]})
}

/// Whether `value` is a placeholder as a reader gets it when it cannot open it: a
/// data-absent-reason `masked`, as the extension or as a `dataAbsentReason` concept's coding,
/// with no envelope. (A forged element's, `error`, is nobody's: not carried; written back as it
/// is, the gateway refuses it by path.)
fn is_masked_view(value: &Value) -> bool {
    if is_sealed(value) {
        return false;
    }
    let code = |c: &Value| c.as_str() == Some("masked");
    let extension = value
        .get("extension")
        .and_then(Value::as_array)
        .is_some_and(|e| {
            e.iter().any(|e| {
                e.get("url").and_then(Value::as_str) == Some(DATA_ABSENT_REASON)
                    && e.get("valueCode").is_some_and(code)
            })
        });
    let coding = value
        .get("coding")
        .and_then(Value::as_array)
        .is_some_and(|c| {
            c.iter().any(|c| {
                c.get("system").and_then(Value::as_str) == Some(DATA_ABSENT_REASON_SYSTEM)
                    && c.get("code").is_some_and(code)
            })
        });
    extension || coding
}

/// `valueQuantity`, `_valueString`, …: a `value[x]` member.
fn is_value_member(key: &str) -> bool {
    let name = key.strip_prefix('_').unwrap_or(key);
    name.strip_prefix("value")
        .is_some_and(|rest| rest.starts_with(|c: char| c.is_ascii_uppercase()))
}

/// The first place in `value` (at `path`) holding sealed content or a masked placeholder:
/// one of our extensions, or a `masked` data-absent-reason. Stand-ins are skipped.
fn foreign(value: &Value, path: &mut String) -> Option<String> {
    let len = path.len();
    match value {
        Value::Object(object) => {
            let url = object.get("url").and_then(Value::as_str);
            if matches!(url, Some(SEALED_ELEMENT | SEALED_HEADER)) {
                return Some(path.clone());
            }
            if object
                .get("system")
                .and_then(Value::as_str)
                .is_some_and(|s| s.starts_with(BLIND_INDEX_SYSTEM))
            {
                return Some(path.clone());
            }
            if url == Some(DATA_ABSENT_REASON)
                && object.get("valueCode").and_then(Value::as_str) == Some("masked")
            {
                return Some(path.clone());
            }
            if object.get("system").and_then(Value::as_str) == Some(DATA_ABSENT_REASON_SYSTEM)
                && object.get("code").and_then(Value::as_str) == Some("masked")
            {
                return Some(path.clone());
            }
            for (key, child) in object {
                if matches!(key.as_str(), "extension" | "coding") {
                    // The element is the one holding them.
                    let items = child.as_array().map_or(&[][..], Vec::as_slice);
                    for item in items {
                        if let Some(found) = foreign(item, path) {
                            return Some(found);
                        }
                    }
                    continue;
                }
                path.push('.');
                path.push_str(key.strip_prefix('_').unwrap_or(key));
                if let Some(found) = foreign(child, path) {
                    return Some(found);
                }
                path.truncate(len);
            }
            None
        }
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                use std::fmt::Write as _;
                let _ = write!(path, "[{i}]");
                if let Some(found) = foreign(item, path) {
                    return Some(found);
                }
                path.truncate(len);
            }
            None
        }
        _ => None,
    }
}

fn holds_url(value: &Value, url: &str) -> bool {
    match value {
        Value::Object(object) => {
            object.get("url").and_then(Value::as_str) == Some(url)
                || object.values().any(|v| holds_url(v, url))
        }
        Value::Array(items) => items.iter().any(|v| holds_url(v, url)),
        _ => false,
    }
}

fn locate_mut<'v>(value: &'v mut Value, loc: &[Step]) -> Option<&'v mut Value> {
    let mut at = value;
    for step in loc {
        at = match step {
            Step::Key(key) => at.get_mut(key.as_str())?,
            Step::Index(i) => at.get_mut(*i)?,
        };
    }
    Some(at)
}

/// The header ids the envelopes in `value` name, as bytes.
fn collect_header_ids(value: &Value, out: &mut HashSet<HeaderId>) {
    if let Some(envelope) = envelope_of(value).and_then(|t| Envelope::from_base64(t).ok()) {
        out.insert(envelope.header());
    }
}

fn header_bytes(extension: &Value) -> Option<Vec<u8>> {
    let text = extension.get("valueBase64Binary")?.as_str()?;
    base64::engine::general_purpose::STANDARD.decode(text).ok()
}

/// `Patient.contact[0].telecom[1]` → `Patient.contact.telecom`.
fn plain_path(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    let mut depth = 0usize;
    for c in path.chars() {
        match c {
            '[' | '(' => depth += 1,
            ']' | ')' => depth = depth.saturating_sub(1),
            c if depth == 0 => out.push(c),
            _ => {}
        }
    }
    out
}

fn member_path(path: &str, key: &str) -> String {
    if key == "dataAbsentReason" {
        return format!("{path}.value[x]");
    }
    format!("{path}.{}", key.strip_prefix('_').unwrap_or(key))
}

fn root_name(value: &Value) -> String {
    value
        .get("resourceType")
        .and_then(Value::as_str)
        .unwrap_or("Resource")
        .to_string()
}

fn root_name_map(object: &Map<String, Value>) -> String {
    object
        .get("resourceType")
        .and_then(Value::as_str)
        .unwrap_or("Resource")
        .to_string()
}

fn is_masked_label(label: &Value) -> bool {
    label.get("system").and_then(Value::as_str) == Some(OBSERVATION_VALUE_SYSTEM)
        && label.get("code").and_then(Value::as_str) == Some("MASKED")
}

fn has_masked_label(resource: &Value) -> bool {
    resource.as_object().is_some_and(has_masked_label_in)
}

fn has_masked_label_in(object: &Map<String, Value>) -> bool {
    object
        .get("meta")
        .and_then(|m| m.get("security"))
        .and_then(Value::as_array)
        .is_some_and(|labels| labels.iter().any(is_masked_label))
}

fn remove_masked_label(object: &mut Map<String, Value>) {
    if let Some(Value::Object(meta)) = object.get_mut("meta")
        && let Some(Value::Array(labels)) = meta.get_mut("security")
    {
        labels.retain(|l| !is_masked_label(l));
    }
    tidy_meta(object);
}

fn add_masked_label(object: &mut Map<String, Value>) {
    if has_masked_label_in(object) {
        return;
    }
    let meta = object
        .entry("meta")
        .or_insert_with(|| Value::Object(Map::new()));
    if let Some(meta) = meta.as_object_mut() {
        let security = meta
            .entry("security")
            .or_insert_with(|| Value::Array(Vec::new()));
        if let Some(labels) = security.as_array_mut() {
            labels.push(masked_label());
        }
    }
}
