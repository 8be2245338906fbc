//! Sealing: a resource or Bundle and its rules → the form the upstream server stores.

use std::borrow::Cow;
use std::cell::OnceCell;
use std::collections::{BTreeMap, HashMap};

use base64::Engine as _;
use fhirseal_envelope::{
    BlindIndex, ElementContext, Granularity, Header, HeaderId, HeaderKey, ResourceKey, SealingKey,
    WrappedKey,
};
use rand_core::{CryptoRng, RngCore};
use rshabe::{AccessStructure, PublicParams};
use serde_json::{Map, Value, json};
use zeroize::Zeroizing;

use crate::index::{Key, Tag, Tokens, add_tags, data_type, indexable, keys_of_value};
use crate::rules::{Displays, ElementRule, Narrative, RuleSet, Rules, SearchMode};
use crate::shape::{
    NEUTRAL_DIV, OBSERVATION_VALUE_SYSTEM, SEALED_HEADER, complex_placeholder, holds_sealed,
    insert_at, masked_concept, masked_label, masked_reason, push_index, sealed_extension,
};
use crate::{HeaderLookup, SealError};
use fhirseal_fhir::Members;
use fhirseal_fhir::path::Step;
use fhirseal_fhir::structure::r4;

/// The headers shared per (access structure, period), `shared` granularity: the ones this
/// process may seal under (it holds their keys) and the ones it only reads.
#[derive(Default)]
pub struct SharedHeaders {
    current: HashMap<(String, u64), HeaderId>,
    headers: HashMap<HeaderId, (Header, Option<HeaderKey>)>,
    created: Vec<HeaderId>,
}

/// A resource or Bundle in its upstream form.
#[derive(Clone, Debug, PartialEq)]
pub struct Sealed {
    /// The resource to send upstream.
    pub resource: Value,
    /// How many elements were sealed.
    pub elements: usize,
}

/// Seals resources under the public parameters and current period, drawing keys and nonces from
/// `rng`, every header and envelope tagged with and bound to the sealing key (version 2). New
/// shared headers are recorded in `headers`; the caller stores them
/// ([`SharedHeaders::take_created`]).
pub struct Sealer<'a, R> {
    pp: &'a PublicParams,
    sealing: &'a SealingKey,
    period: u64,
    headers: Book<'a>,
    rng: &'a mut R,
    blind_index: Option<&'a BlindIndex>,
}

/// The shared headers a [`Sealer`] seals under.
enum Book<'a> {
    /// Makes what is missing: a shared header for a structure and period, a resource's own one.
    Grows(&'a mut SharedHeaders),
    /// Makes nothing ([`Sealer::known_headers_only`]).
    Known(&'a SharedHeaders),
}

/// One resource being sealed: what its envelopes are bound to and the keys drawn for it.
struct Work {
    resource_type: String,
    id: String,
    resource_key: ResourceKey,
    /// The header and wrapped key drawn for each structure (by its text) and granularity: a
    /// handful per resource, looked through in order.
    keys: Vec<(String, Granularity, HeaderId, WrappedKey)>,
    resource_headers: Vec<Header>,
    /// For each sealed element: its structure and the strings it held (for `Displays`).
    sealed: Vec<(AccessStructure, Vec<String>)>,
    any_resource_granularity: bool,
    /// The blind-index keys of the resource's sealed values, which become its `meta.tag` tokens
    /// once every rule has run (compound indexes pair the values of two rules).
    index_keys: Vec<Key>,
}

/// An access structure elements are sealed under, with its canonical text: written out once,
/// when a rule first seals an element, rather than for each element's additional data and again
/// for the slots its header and wrapped key are kept in.
struct Structure<'p> {
    structure: &'p AccessStructure,
    text: OnceCell<String>,
}

impl<'p> Structure<'p> {
    fn new(structure: &'p AccessStructure) -> Self {
        Self {
            structure,
            text: OnceCell::new(),
        }
    }

    fn text(&self) -> &str {
        self.text.get_or_init(|| self.structure.to_string())
    }
}

/// Where a selected element is, in the object that holds it.
pub(crate) enum Slot {
    /// A single element: `key` (or `_key`), or `value[x]` standing in `dataAbsentReason`.
    Field {
        key: String,
        primitive: bool,
        absent_reason: bool,
        path: String,
    },
    /// Items `indices` of the repeating element `key`.
    Items {
        key: String,
        indices: Vec<usize>,
        primitive: bool,
        path: String,
    },
}

// === impl SharedHeaders ===

impl SharedHeaders {
    /// An empty book.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a known header, with its key if this process may seal under it (it becomes the
    /// current header for its structure and period).
    pub fn insert(&mut self, header: Header, key: Option<HeaderKey>) {
        let id = header.id();
        if key.is_some() {
            let slot = (
                header.policy_text().to_owned(),
                header.ciphertext().period(),
            );
            self.current.insert(slot, id);
        }
        self.headers.insert(id, (header, key));
    }

    /// The headers created by sealing since the last call, to be stored where readers find them.
    pub fn take_created(&mut self) -> Vec<Header> {
        std::mem::take(&mut self.created)
            .into_iter()
            .filter_map(|id| self.headers.get(&id).map(|(h, _)| h.clone()))
            .collect()
    }

    /// The header and key this process seals under for `policy` at `period`, if it holds one.
    fn known_key(&self, policy: &Structure<'_>, period: u64) -> Option<(HeaderId, HeaderKey)> {
        let id = self.current.get(&(policy.text().to_owned(), period))?;
        match self.headers.get(id) {
            Some((_, Some(key))) => Some((*id, key.clone())),
            _ => None,
        }
    }

    /// The header and key to seal under for `policy` at `period`, made if missing.
    fn sealing_key(
        &mut self,
        pp: &PublicParams,
        sealing: &SealingKey,
        policy: &Structure<'_>,
        period: u64,
        rng: &mut (impl CryptoRng + RngCore),
    ) -> Result<(HeaderId, HeaderKey), SealError> {
        if let Some(known) = self.known_key(policy, period) {
            return Ok(known);
        }
        let slot = (policy.text().to_owned(), period);
        let (header, key) = Header::new(
            pp,
            policy.structure,
            period,
            Granularity::Shared,
            sealing,
            rng,
        )?;
        let id = header.id();
        self.current.insert(slot, id);
        self.headers.insert(id, (header, Some(key.clone())));
        self.created.push(id);
        Ok((id, key))
    }
}

impl HeaderLookup for SharedHeaders {
    fn header(&self, id: HeaderId) -> Option<Header> {
        self.headers.get(&id).map(|(h, _)| h.clone())
    }
}

impl std::fmt::Debug for SharedHeaders {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedHeaders")
            .field("headers", &self.headers.len())
            .field("created", &self.created.len())
            .finish_non_exhaustive()
    }
}

// === impl Sealer ===

impl<'a, R: CryptoRng + RngCore> Sealer<'a, R> {
    /// A sealer for `period`, sealing with the trusted zone's `sealing` key.
    pub fn new(
        pp: &'a PublicParams,
        sealing: &'a SealingKey,
        period: u64,
        headers: &'a mut SharedHeaders,
        rng: &'a mut R,
    ) -> Self {
        Self::with_book(pp, sealing, period, Book::Grows(headers), rng)
    }

    /// A sealer for `period` that makes no header: it seals under the shared headers `headers`
    /// holds keys for, and refuses with [`SealError::HeaderNeeded`] what needs another one (a
    /// structure without a shared header of `period` in the book, or a resource granularity).
    /// Making a header is an attribute-based encryption (milliseconds of pairings); sealing
    /// without one is a few AES-GCM encryptions and HMACs per element, quick enough for an
    /// async thread, and needs the book only for reading, so such sealers can share it.
    pub fn known_headers_only(
        pp: &'a PublicParams,
        sealing: &'a SealingKey,
        period: u64,
        headers: &'a SharedHeaders,
        rng: &'a mut R,
    ) -> Self {
        Self::with_book(pp, sealing, period, Book::Known(headers), rng)
    }

    fn with_book(
        pp: &'a PublicParams,
        sealing: &'a SealingKey,
        period: u64,
        headers: Book<'a>,
        rng: &'a mut R,
    ) -> Self {
        Self {
            pp,
            sealing,
            period,
            headers,
            rng,
            blind_index: None,
        }
    }

    /// Writes blind-index tokens, under `index`, for the rules that ask for them
    /// ([`ElementRule::with_blind_index`]). Without it such rules are refused at sealing time.
    pub fn with_blind_index(self, index: &'a BlindIndex) -> Self {
        Self {
            blind_index: Some(index),
            ..self
        }
    }

    /// Seals a resource, or each entry of a Bundle (and of Bundles inside it).
    pub fn seal(&mut self, resource: &Value, rules: &Rules) -> Result<Sealed, SealError> {
        if resource.get("resourceType").and_then(Value::as_str) == Some("Bundle") {
            self.seal_bundle(resource, rules)
        } else {
            self.seal_resource(resource, rules, None)
        }
    }

    /// Seals one resource. Its envelopes are bound to its `id`, or when it has none to
    /// `binding` (the `urn:uuid:` of a transaction entry); a resource without either that has
    /// something to seal is refused.
    pub fn seal_resource(
        &mut self,
        resource: &Value,
        rules: &Rules,
        binding: Option<&str>,
    ) -> Result<Sealed, SealError> {
        let mut out = resource.clone();
        let elements = self.seal_resource_in_place(&mut out, rules, binding)?;
        Ok(Sealed {
            resource: out,
            elements,
        })
    }

    /// Seals each entry of a Bundle (searchset, history, transaction, batch, collection,
    /// document), binding an entry without an `id` to its `fullUrl`.
    pub fn seal_bundle(&mut self, bundle: &Value, rules: &Rules) -> Result<Sealed, SealError> {
        let mut out = bundle.clone();
        let elements = self.seal_bundle_in_place(&mut out, rules)?;
        Ok(Sealed {
            resource: out,
            elements,
        })
    }

    /// [`Sealer::seal_resource`] on the caller's copy; returns how many elements were sealed.
    /// A resource with nothing to seal is left untouched. On error the copy is half sealed and
    /// must be dropped.
    fn seal_resource_in_place(
        &mut self,
        resource: &mut Value,
        rules: &Rules,
        binding: Option<&str>,
    ) -> Result<usize, SealError> {
        // Every check first, on the resource as given; then sealing in place.
        let Some(object) = resource.as_object() else {
            return Err(SealError::NotAResource);
        };
        let Some(resource_type) = object
            .get("resourceType")
            .and_then(Value::as_str)
            .map(str::to_string)
        else {
            return Err(SealError::NotAResource);
        };
        if !applies(object, rules) {
            return Ok(0);
        }
        if holds_sealed(resource) || has_masked_label(object) {
            return Err(SealError::AlreadySealed { resource_type });
        }
        let id = match (object.get("id").and_then(Value::as_str), binding) {
            (Some(id), _) | (None, Some(id)) => id.to_string(),
            (None, None) => return Err(SealError::NoId { resource_type }),
        };
        let Some(object) = resource.as_object_mut() else {
            return Err(SealError::NotAResource);
        };
        let mut work = Work {
            resource_type: resource_type.clone(),
            id,
            resource_key: ResourceKey::generate(self.rng),
            keys: Vec::new(),
            resource_headers: Vec::new(),
            sealed: Vec::new(),
            any_resource_granularity: false,
            index_keys: Vec::new(),
        };
        let set = rules.for_type(&resource_type);
        self.seal_object(object, rules, &resource_type, &mut work)?;
        if work.sealed.is_empty() {
            return Ok(0);
        }
        let displays = set.map_or(Displays::default(), RuleSet::displays);
        if displays != Displays::Keep {
            self.seal_displays(object, &resource_type, displays, &mut work)?;
        }
        self.handle_narrative(object, &resource_type, set, 0, &mut work)?;
        // The label and the headers go on the outer resource (contained resources SHALL NOT
        // carry security labels, dom-5).
        add_masked_label(object);
        if let (Some(index), Some(set)) = (self.blind_index, set) {
            add_tags(object, resource_tags(index, set, &work.index_keys));
        }
        if !work.resource_headers.is_empty() {
            let extensions: Vec<Value> = work
                .resource_headers
                .iter()
                .map(|h| {
                    json!({"url": SEALED_HEADER,
                        "valueBase64Binary": base64::engine::general_purpose::STANDARD.encode(h.to_bytes())})
                })
                .collect();
            append_extensions(object, extensions)?;
        }
        Ok(work.sealed.len())
    }

    /// [`Sealer::seal_bundle`] on the caller's copy, entry by entry (Bundles inside too).
    fn seal_bundle_in_place(
        &mut self,
        bundle: &mut Value,
        rules: &Rules,
    ) -> Result<usize, SealError> {
        let mut elements = 0;
        if let Some(Value::Array(entries)) = bundle.get_mut("entry") {
            for entry in entries {
                let binding = entry
                    .get("fullUrl")
                    .and_then(Value::as_str)
                    .map(str::to_string);
                let Some(resource) = entry.get_mut("resource") else {
                    continue;
                };
                elements +=
                    if resource.get("resourceType").and_then(Value::as_str) == Some("Bundle") {
                        self.seal_bundle_in_place(resource, rules)?
                    } else {
                        self.seal_resource_in_place(resource, rules, binding.as_deref())?
                    };
            }
        }
        Ok(elements)
    }

    /// Applies the rules of `object`'s type, then seals its contained resources by theirs.
    fn seal_object(
        &mut self,
        object: &mut Map<String, Value>,
        rules: &Rules,
        loc: &str,
        work: &mut Work,
    ) -> Result<(), SealError> {
        let resource_type = object
            .get("resourceType")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        if let Some(set) = rules.for_type(&resource_type) {
            for rule in set.elements() {
                self.seal_rule(object, rule, loc, work)?;
            }
        }
        if let Some(Value::Array(contained)) = object.get_mut("contained") {
            for (i, inner) in contained.iter_mut().enumerate() {
                let Some(inner) = inner.as_object_mut() else {
                    continue;
                };
                let inner_loc = contained_loc(loc, inner, i);
                let before = work.sealed.len();
                self.seal_object(inner, rules, &inner_loc, work)?;
                let inner_type = inner
                    .get("resourceType")
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                let set = rules.for_type(inner_type);
                self.handle_narrative(inner, &inner_loc, set, before, work)?;
            }
        }
        Ok(())
    }

    fn seal_rule(
        &mut self,
        object: &mut Map<String, Value>,
        rule: &ElementRule,
        loc: &str,
        work: &mut Work,
    ) -> Result<(), SealError> {
        let policy = &Structure::new(rule.policy());
        let granularity = rule.granularity();
        // Tokens are for searching the resource itself: not for its contained resources.
        let index = match (rule.blind_index(), loc == work.resource_type) {
            (false, _) | (true, false) => None,
            (true, true) => match (self.blind_index, rule.search()) {
                (Some(_), SearchMode::BlindIndex { .. }) => {
                    let plain = rule.path().plain();
                    let data_type =
                        data_type(&plain).filter(|t| indexable(t)).ok_or_else(|| {
                            SealError::Invalid {
                                path: rule.path().to_string(),
                                reason:
                                    "asks for a blind index, but its data type cannot be indexed"
                                        .into(),
                            }
                        })?;
                    Some((plain, data_type))
                }
                _ => {
                    return Err(SealError::Invalid {
                        path: rule.path().to_string(),
                        reason: "asks for a blind index, but no blind-index secret is configured"
                            .into(),
                    });
                }
            },
        };
        select(object, rule.path().steps(), loc, &mut |holder, slot| {
            if let Some((path, data_type)) = &index {
                for value in slot_values(holder, &slot) {
                    keys_of_value(path, data_type, value, &mut work.index_keys);
                }
            }
            self.seal_slot(holder, slot, policy, granularity, work)
        })
    }

    fn seal_slot(
        &mut self,
        holder: &mut Map<String, Value>,
        slot: Slot,
        policy: &Structure<'_>,
        granularity: Granularity,
        work: &mut Work,
    ) -> Result<(), SealError> {
        match slot {
            Slot::Field {
                key,
                primitive,
                absent_reason,
                path,
            } => {
                let companion = format!("_{key}");
                let index = holder
                    .keys()
                    .position(|k| *k == key || *k == companion)
                    .unwrap_or(holder.len());
                let mut removed = Map::new();
                for name in [&key, &companion] {
                    if let Some(value) = holder.shift_remove(name.as_str()) {
                        removed.insert(name.clone(), value);
                    }
                }
                if removed.is_empty() {
                    return Ok(());
                }
                let envelope = self.envelope(work, policy, granularity, &path, &removed)?;
                if absent_reason {
                    if holder.contains_key("dataAbsentReason") {
                        return Err(SealError::Invalid {
                            path,
                            reason: "has both a value and a dataAbsentReason (obs-6)".into(),
                        });
                    }
                    insert_at(
                        holder,
                        index,
                        "dataAbsentReason".into(),
                        masked_concept(envelope),
                    );
                } else if primitive {
                    let placeholder =
                        json!({"extension": [masked_reason(), sealed_extension(envelope)]});
                    insert_at(holder, index, companion, placeholder);
                } else {
                    let placeholder = sealed_placeholder(&key, removed.get(&key), envelope);
                    insert_at(holder, index, key, placeholder);
                }
            }
            Slot::Items {
                key,
                indices,
                primitive,
                path,
            } => {
                let companion = format!("_{key}");
                let len = indices.iter().max().map_or(0, |i| i + 1);
                let mut sealed_any = false;
                for i in indices {
                    let item_path = format!("{path}[{i}]");
                    let mut removed = Map::new();
                    for name in [&key, &companion] {
                        if let Some(Value::Array(items)) = holder.get_mut(name.as_str())
                            && let Some(item) = items.get_mut(i)
                            && !item.is_null()
                        {
                            removed.insert(name.clone(), item.take());
                        }
                    }
                    if removed.is_empty() {
                        continue;
                    }
                    sealed_any = true;
                    let envelope =
                        self.envelope(work, policy, granularity, &item_path, &removed)?;
                    if primitive {
                        let values_len = holder
                            .get(&key)
                            .and_then(Value::as_array)
                            .map_or(0, Vec::len);
                        if !holder.contains_key(&companion) {
                            let at = holder
                                .keys()
                                .position(|k| *k == key)
                                .map_or(holder.len(), |i| i + 1);
                            insert_at(holder, at, companion.clone(), Value::Array(Vec::new()));
                        }
                        let Some(companions) =
                            holder.get_mut(&companion).and_then(Value::as_array_mut)
                        else {
                            return Err(SealError::Invalid {
                                path: item_path,
                                reason: format!("`{companion}` is not an array"),
                            });
                        };
                        companions.resize(values_len.max(len).max(companions.len()), Value::Null);
                        companions[i] =
                            json!({"extension": [masked_reason(), sealed_extension(envelope)]});
                    } else if let Some(Value::Array(items)) = holder.get_mut(&key)
                        && let Some(item) = items.get_mut(i)
                    {
                        *item = sealed_placeholder(&key, removed.get(&key), envelope);
                    }
                }
                // Nothing sealed, nothing touched: sealing leaves such a resource as it was.
                if !sealed_any {
                    return Ok(());
                }
                // A repeating primitive whose values are all sealed loses its value array.
                if let Some(Value::Array(values)) = holder.get(&key)
                    && values.iter().all(Value::is_null)
                {
                    holder.shift_remove(&key);
                }
                // Keep the parallel arrays aligned (FHIR JSON: the same length, `null` for absent).
                let values_len = holder.get(&key).and_then(Value::as_array).map(Vec::len);
                if let (Some(values_len), Some(Value::Array(companions))) =
                    (values_len, holder.get_mut(&companion))
                    && companions.len() < values_len
                {
                    companions.resize(values_len, Value::Null);
                }
            }
        }
        Ok(())
    }

    /// Seals `removed` (the members taken out of the element's holder) as element `path`.
    fn envelope(
        &mut self,
        work: &mut Work,
        policy: &Structure<'_>,
        granularity: Granularity,
        path: &str,
        removed: &Map<String, Value>,
    ) -> Result<String, SealError> {
        let (header, wrapped) = self.wrapped_key(work, policy, granularity)?;
        let plaintext =
            Zeroizing::new(serde_json::to_vec(removed).map_err(|_| SealError::Invalid {
                path: path.to_string(),
                reason: "cannot be serialised".into(),
            })?);
        let ctx =
            ElementContext::with_policy_text(&work.resource_type, &work.id, path, policy.text());
        let envelope = fhirseal_envelope::seal(
            &ctx,
            header,
            &wrapped,
            &work.resource_key,
            &plaintext,
            self.sealing,
            self.rng,
        );
        let mut strings = Vec::new();
        for value in removed.values() {
            collect_strings(value, "", &mut strings);
        }
        work.sealed.push((policy.structure.clone(), strings));
        Ok(envelope.to_base64())
    }

    /// The header and wrapped resource key for `policy` in this resource, drawn once.
    fn wrapped_key(
        &mut self,
        work: &mut Work,
        policy: &Structure<'_>,
        granularity: Granularity,
    ) -> Result<(HeaderId, WrappedKey), SealError> {
        let drawn = work
            .keys
            .iter()
            .find(|(text, g, _, _)| text == policy.text() && *g == granularity);
        if let Some(&(_, _, id, wrapped)) = drawn {
            return Ok((id, wrapped));
        }
        let (id, key) = match (granularity, &mut self.headers) {
            (Granularity::Shared, Book::Grows(book)) => {
                book.sealing_key(self.pp, self.sealing, policy, self.period, self.rng)?
            }
            (Granularity::Shared, Book::Known(book)) => book
                .known_key(policy, self.period)
                .ok_or(SealError::HeaderNeeded)?,
            (Granularity::Resource, Book::Known(_)) => return Err(SealError::HeaderNeeded),
            (Granularity::Resource, Book::Grows(_)) => {
                let (header, key) = Header::new(
                    self.pp,
                    policy.structure,
                    self.period,
                    Granularity::Resource,
                    self.sealing,
                    self.rng,
                )?;
                let id = header.id();
                work.resource_headers.push(header);
                work.any_resource_granularity = true;
                (id, key)
            }
        };
        let wrapped = work
            .resource_key
            .wrap(&key, id, &work.resource_type, &work.id, self.rng);
        work.keys
            .push((policy.text().to_owned(), granularity, id, wrapped));
        Ok((id, wrapped))
    }

    /// Seals `Reference.display` strings that repeat a sealed value (or all of them).
    fn seal_displays(
        &mut self,
        object: &mut Map<String, Value>,
        resource_type: &str,
        mode: Displays,
        work: &mut Work,
    ) -> Result<(), SealError> {
        each_display(
            object,
            resource_type,
            resource_type,
            &mut |inner, display, loc| {
                let lowered = display.to_lowercase();
                let mut policies: Vec<AccessStructure> = Vec::new();
                for (policy, strings) in &work.sealed {
                    let repeats = mode == Displays::All
                        || strings
                            .iter()
                            .any(|s| s.chars().count() >= 3 && lowered.contains(&s.to_lowercase()));
                    if repeats && !policies.contains(policy) {
                        policies.push(policy.clone());
                    }
                }
                if policies.is_empty() {
                    return Ok(());
                }
                let path = format!("{loc}.display");
                self.seal_copy(inner, "display", true, &path, &policies, work)
            },
        )
    }

    /// Seals `holder[key]`, a copy of sealed values (a display, a narrative), under the
    /// conjunction of the structures of the values it may repeat: only a reader who may see all
    /// of them may see it.
    fn seal_copy(
        &mut self,
        holder: &mut Map<String, Value>,
        key: &str,
        primitive: bool,
        path: &str,
        policies: &[AccessStructure],
        work: &mut Work,
    ) -> Result<(), SealError> {
        let policy = conjunction(policies)?;
        let granularity = if work.any_resource_granularity {
            Granularity::Resource
        } else {
            Granularity::Shared
        };
        let slot = Slot::Field {
            key: key.to_string(),
            primitive,
            absent_reason: false,
            path: path.to_string(),
        };
        self.seal_slot(holder, slot, &Structure::new(&policy), granularity, work)
    }

    /// Seals or neutralises the narrative of `object` if anything was sealed in it since
    /// `work.sealed[from]`.
    fn handle_narrative(
        &mut self,
        object: &mut Map<String, Value>,
        loc: &str,
        set: Option<&RuleSet>,
        from: usize,
        work: &mut Work,
    ) -> Result<(), SealError> {
        if work.sealed.len() <= from || !object.contains_key("text") {
            return Ok(());
        }
        match set.map_or(Narrative::default(), RuleSet::narrative) {
            Narrative::Neutral => {
                object.insert(
                    "text".into(),
                    json!({"status": "generated", "div": NEUTRAL_DIV}),
                );
            }
            Narrative::Seal => {
                let mut policies: Vec<AccessStructure> = Vec::new();
                for (policy, _) in &work.sealed[from..] {
                    if !policies.contains(policy) {
                        policies.push(policy.clone());
                    }
                }
                self.seal_copy(
                    object,
                    "text",
                    false,
                    &format!("{loc}.text"),
                    &policies,
                    work,
                )?;
                // The text's own strings are not display material: drop what `envelope` noted.
                if let Some((_, strings)) = work.sealed.last_mut() {
                    strings.clear();
                }
            }
        }
        Ok(())
    }
}

impl<R> std::fmt::Debug for Sealer<'_, R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sealer")
            .field("period", &self.period)
            .finish_non_exhaustive()
    }
}

/// Whether any rule could apply to `object` or its contained resources.
fn applies(object: &Map<String, Value>, rules: &Rules) -> bool {
    let own = object
        .get("resourceType")
        .and_then(Value::as_str)
        .is_some_and(|t| rules.for_type(t).is_some());
    own || object
        .get("contained")
        .and_then(Value::as_array)
        .is_some_and(|items| {
            items
                .iter()
                .filter_map(Value::as_object)
                .any(|inner| applies(inner, rules))
        })
}

/// `Observation.contained(#p1)`, or by position for a contained resource without an id.
pub(crate) fn contained_loc(loc: &str, inner: &Map<String, Value>, index: usize) -> String {
    let mut at = loc.to_string();
    push_contained_loc(&mut at, inner, index);
    at
}

/// Appends to `loc` what [`contained_loc`] appends to it.
fn push_contained_loc(loc: &mut String, inner: &Map<String, Value>, index: usize) {
    match inner.get("id").and_then(Value::as_str) {
        Some(id) => {
            loc.push_str(".contained(#");
            loc.push_str(id);
            loc.push(')');
        }
        None => {
            loc.push_str(".contained");
            push_index(loc, index);
        }
    }
}

/// The placeholder of a sealed complex element ([`complex_placeholder`]).
fn sealed_placeholder(key: &str, original: Option<&Value>, envelope: String) -> Value {
    complex_placeholder(
        key,
        original,
        vec![masked_reason(), sealed_extension(envelope)],
    )
}

/// What [`each_display`] calls for each `Reference` with a `display` string: the reference, the
/// display (a copy: the reference may be changed) and the reference's path.
pub(crate) type DisplayFound<'f> =
    dyn FnMut(&mut Map<String, Value>, &str, &str) -> Result<(), SealError> + 'f;

/// Walks `object` (of R4 type `context`, at path `loc`) by its R4 definition and calls `found`
/// for each `Reference` holding a `display` string; contained resources by their own type. What
/// sealing displays and the read path's check of them ([`crate::plaintext`]) both walk.
pub(crate) fn each_display(
    object: &mut Map<String, Value>,
    context: &str,
    loc: &str,
    found: &mut DisplayFound<'_>,
) -> Result<(), SealError> {
    // One buffer for every path of the walk: each step appends its part and truncates it away.
    let mut at = String::with_capacity(loc.len() + 64);
    at.push_str(loc);
    walk_displays(object, context, &mut at, found)
}

/// [`each_display`] with `loc` the path of `object`, extended and restored as it descends: an
/// element that holds no display costs no allocation.
fn walk_displays(
    object: &mut Map<String, Value>,
    context: &str,
    loc: &mut String,
    found: &mut DisplayFound<'_>,
) -> Result<(), SealError> {
    let r4 = r4();
    // Found once for all of `object`'s members.
    let members = r4.context(context);
    // On an error the walk ends and the buffer with it: only success restores `loc`.
    let len = loc.len();
    for (key, value) in object.iter_mut() {
        if key.starts_with('_') || key == "resourceType" {
            continue;
        }
        if key == "contained" {
            if let Value::Array(items) = value {
                for (i, item) in items.iter_mut().enumerate() {
                    if let Some(inner) = item.as_object_mut() {
                        let inner_type = inner
                            .member("resourceType")
                            .and_then(Value::as_str)
                            .unwrap_or_default();
                        // The walk holds `inner` mutably: the type by its interned name (a copy
                        // only for a type R4 does not know).
                        let inner_type: Cow<'static, str> = match r4.type_name(inner_type) {
                            Some(name) => Cow::Borrowed(name),
                            None => Cow::Owned(inner_type.to_string()),
                        };
                        push_contained_loc(loc, inner, i);
                        walk_displays(inner, &inner_type, loc, found)?;
                        loc.truncate(len);
                    }
                }
            }
            continue;
        }
        // A string, number, boolean or null holds no Reference: no need to know what it is.
        if !matches!(value, Value::Object(_) | Value::Array(_)) {
            continue;
        }
        let Some(child) = members.and_then(|members| members.child(key)) else {
            continue;
        };
        if child.primitive {
            continue;
        }
        let ty = child
            .chosen
            .or_else(|| child.element.types.first().copied())
            .unwrap_or_default();
        let child_context = child.context;
        match value {
            Value::Object(inner) => {
                loc.push('.');
                loc.push_str(key);
                display_or_descend(inner, ty, child_context, loc, found)?;
                loc.truncate(len);
            }
            Value::Array(items) => {
                loc.push('.');
                loc.push_str(key);
                let child_len = loc.len();
                for (i, item) in items.iter_mut().enumerate() {
                    if let Some(inner) = item.as_object_mut() {
                        push_index(loc, i);
                        display_or_descend(inner, ty, child_context, loc, found)?;
                        loc.truncate(child_len);
                    }
                }
                loc.truncate(len);
            }
            _ => {}
        }
    }
    Ok(())
}

fn display_or_descend(
    inner: &mut Map<String, Value>,
    ty: &str,
    context: &str,
    loc: &mut String,
    found: &mut DisplayFound<'_>,
) -> Result<(), SealError> {
    if ty == "Reference"
        && let Some(display) = inner.member("display").and_then(Value::as_str)
    {
        let display = display.to_string();
        return found(inner, &display, loc);
    }
    if ty == "Resource" {
        return Ok(());
    }
    walk_displays(inner, context, loc, found)
}

/// The concrete paths (as envelopes bind them: `Patient.name[1]`, `Observation.value[x]`) of
/// the elements `rule` selects in `resource`, a resource of the rule's type; contained resources
/// are not searched. For `explain`: which elements a rule covers in one resource.
pub fn locate(resource: &Value, rule: &ElementRule) -> Vec<String> {
    let mut copy = resource.clone();
    let mut found = Vec::new();
    let Some(object) = copy.as_object_mut() else {
        return found;
    };
    let loc = rule.path().resource_type().to_string();
    let _ = select(object, rule.path().steps(), &loc, &mut |holder, slot| {
        match slot {
            Slot::Field { key, path, .. } => {
                if holder.contains_key(&key) || holder.contains_key(&format!("_{key}")) {
                    found.push(path);
                }
            }
            Slot::Items { indices, path, .. } => {
                found.extend(indices.into_iter().map(|i| format!("{path}[{i}]")));
            }
        }
        Ok(())
    });
    found
}

/// The tags a resource of `set`'s type is stored with, from the keys of its sealed values (every
/// blind-index rule's, [`keys_of_value`]): the keys of each leaf whose rule is indexed alone
/// ([`crate::ElementRule::index_alone`]), at that rule's width, and every pair of each compound index
/// ([`RuleSet::compounds`]). Sorted, without duplicates.
pub fn resource_tags(index: &BlindIndex, set: &RuleSet, keys: &[Key]) -> Vec<Tag> {
    let mut by_leaf: BTreeMap<&str, Vec<Key>> = BTreeMap::new();
    for key in keys {
        by_leaf.entry(key.leaf()).or_default().push(key.clone());
    }
    let mut tags = Vec::new();
    for (leaf, keys) in &by_leaf {
        if let Some((rule, _)) = set.index_leaf(leaf)
            && rule.index_alone()
            && let SearchMode::BlindIndex { bits } = rule.search()
        {
            tags.extend(Tokens::new(index, bits).tags(keys));
        }
    }
    for compound in set.compounds() {
        let [(a, _), (b, _)] = compound.parts();
        if let (Some(a), Some(b)) = (by_leaf.get(a.as_str()), by_leaf.get(b.as_str())) {
            tags.extend(Tokens::new(index, compound.bits()).compound(a, b));
        }
    }
    tags.sort();
    tags.dedup();
    tags
}

/// The blind-index tags a resource of `set`'s type is stored with, recomputed from its opened
/// form (`opened`: the resource as a reader who opens every blind-index element sees it, so the
/// same values sealing saw): the keys of each blind-index rule's values, then
/// [`resource_tags`], exactly as [`Sealer::seal`] makes them. For the re-index job,
/// which refreshes the tokens of stored resources after the policy's indexes changed. A value
/// still masked in `opened` gives no key: the caller must check that every blind-index element
/// opened first.
pub fn reindex_tags(index: &BlindIndex, set: &RuleSet, opened: &Value) -> Vec<Tag> {
    let mut copy = opened.clone();
    let mut keys = Vec::new();
    let Some(object) = copy.as_object_mut() else {
        return Vec::new();
    };
    let loc = set.resource_type().to_string();
    for rule in set.elements().iter().filter(|r| r.blind_index()) {
        let plain = rule.path().plain();
        let Some(data_type) = data_type(&plain).filter(|t| indexable(t)) else {
            continue;
        };
        let _ = select(object, rule.path().steps(), &loc, &mut |holder, slot| {
            for value in slot_values(holder, &slot) {
                keys_of_value(&plain, data_type, value, &mut keys);
            }
            Ok(())
        });
    }
    resource_tags(index, set, &keys)
}

/// What `select` calls for each element it selects.
pub(crate) type Found<'f> = dyn FnMut(&mut Map<String, Value>, Slot) -> Result<(), SealError> + 'f;

/// Walks `steps` from `object`, calling `found` for each selected element with the object that
/// holds it. A value whose JSON shape does not fit the definition is refused: it would otherwise
/// go upstream unsealed.
pub(crate) fn select(
    object: &mut Map<String, Value>,
    steps: &[Step],
    loc: &str,
    found: &mut Found<'_>,
) -> Result<(), SealError> {
    let Some((step, rest)) = steps.split_first() else {
        return Ok(());
    };
    let r4 = r4();
    let parent = step.element.path.rsplit_once('.').map_or("", |(p, _)| p);
    let key = if step.choice {
        object
            .keys()
            .map(|k| k.strip_prefix('_').unwrap_or(k))
            .find(|k| {
                k.starts_with(&step.name)
                    && r4
                        .child(parent, k)
                        .is_some_and(|c| c.element.path == step.element.path)
            })
            .map(str::to_string)
    } else if object.has_member(&step.name)
        || object
            .keys()
            .any(|k| k.strip_prefix('_') == Some(step.name.as_str()))
    {
        Some(step.name.clone())
    } else {
        None
    };
    let Some(key) = key else {
        return Ok(());
    };
    let primitive = r4.child(parent, &key).is_some_and(|c| c.primitive);
    let path = format!("{loc}.{key}");
    let invalid = |reason: &str| SealError::Invalid {
        path: path.clone(),
        reason: reason.to_string(),
    };
    let matches = |item: &Value| match &step.filter {
        Some(filter) => {
            item.member(&filter.member).and_then(Value::as_str) == Some(filter.value.as_str())
        }
        None => true,
    };
    if !rest.is_empty() {
        match object.get_mut(&key) {
            Some(Value::Array(items)) if step.repeating => {
                for (i, item) in items.iter_mut().enumerate() {
                    if !matches(item) {
                        continue;
                    }
                    let Some(inner) = item.as_object_mut() else {
                        return Err(invalid("holds an item that is not an object"));
                    };
                    select(inner, rest, &format!("{path}[{i}]"), found)?;
                }
            }
            Some(Value::Object(inner)) if !step.repeating => select(inner, rest, &path, found)?,
            None => {}
            Some(_) => return Err(invalid("does not have the JSON shape R4 defines")),
        }
        return Ok(());
    }
    if step.repeating {
        let companion = format!("_{key}");
        let mut len = 0;
        for name in [&key, &companion] {
            match object.get(name.as_str()) {
                Some(Value::Array(items)) => len = len.max(items.len()),
                None => {}
                Some(_) => return Err(invalid("repeats in R4 but is not an array")),
            }
        }
        let items = object.get(&key).and_then(Value::as_array);
        let indices = (0..len)
            .filter(|i| {
                step.filter.is_none() || items.and_then(|items| items.get(*i)).is_some_and(matches)
            })
            .collect();
        found(
            object,
            Slot::Items {
                key,
                indices,
                primitive,
                path,
            },
        )
    } else {
        if object.get(&key).is_some_and(Value::is_array) {
            return Err(invalid("is single in R4 but is an array"));
        }
        let absent_reason = step.choice
            && step.name == "value"
            && r4.element(&format!("{parent}.dataAbsentReason")).is_some();
        let path = if absent_reason {
            format!("{loc}.value[x]")
        } else {
            path
        };
        found(
            object,
            Slot::Field {
                key,
                primitive,
                absent_reason,
                path,
            },
        )
    }
}

/// The values a slot selects (not their `_name` companions), before sealing.
fn slot_values<'v>(holder: &'v Map<String, Value>, slot: &Slot) -> Vec<&'v Value> {
    match slot {
        Slot::Field { key, .. } => holder.get(key).into_iter().collect(),
        Slot::Items { key, indices, .. } => {
            let items = holder.get(key).and_then(Value::as_array);
            indices
                .iter()
                .filter_map(|i| items.and_then(|items| items.get(*i)))
                .collect()
        }
    }
}

/// The string values under `value`, but not URLs and codes (systems, `use`), for display matching.
fn collect_strings(value: &Value, key: &str, out: &mut Vec<String>) {
    match value {
        Value::String(s)
            if !matches!(key, "system" | "url" | "use" | "version" | "reference")
                && !s.contains("://")
                && !s.starts_with("urn:") =>
        {
            out.push(s.clone());
        }
        Value::Array(items) => items.iter().for_each(|v| collect_strings(v, key, out)),
        Value::Object(object) => object.iter().for_each(|(k, v)| collect_strings(v, k, out)),
        _ => {}
    }
}

/// `(p1) and (p2) and …`, or `p1` alone.
fn conjunction(policies: &[AccessStructure]) -> Result<AccessStructure, SealError> {
    match policies {
        [one] => Ok(one.clone()),
        _ => {
            let formula = policies
                .iter()
                .map(|p| format!("({p})"))
                .collect::<Vec<_>>()
                .join(" and ");
            AccessStructure::parse(&formula).map_err(|e| SealError::Invalid {
                path: "text".into(),
                reason: format!(
                    "the conjunction of the sealed elements' structures is invalid: {e}"
                ),
            })
        }
    }
}

fn has_masked_label(object: &Map<String, Value>) -> bool {
    object
        .get("meta")
        .and_then(|m| m.get("security"))
        .and_then(Value::as_array)
        .is_some_and(|labels| {
            labels.iter().any(|l| {
                l.get("system").and_then(Value::as_str) == Some(OBSERVATION_VALUE_SYSTEM)
                    && l.get("code").and_then(Value::as_str) == Some("MASKED")
            })
        })
}

fn add_masked_label(object: &mut Map<String, Value>) {
    let index = object.keys().position(|k| k == "meta").unwrap_or_else(|| {
        object
            .keys()
            .position(|k| k == "id")
            .map_or(object.len().min(1), |i| i + 1)
    });
    let meta = match object.shift_remove("meta") {
        Some(Value::Object(meta)) => meta,
        _ => Map::new(),
    };
    let mut meta = meta;
    match meta.get_mut("security") {
        Some(Value::Array(labels)) => labels.push(masked_label()),
        _ => {
            meta.insert("security".into(), json!([masked_label()]));
        }
    }
    insert_at(object, index, "meta".into(), Value::Object(meta));
}

fn append_extensions(
    object: &mut Map<String, Value>,
    extensions: Vec<Value>,
) -> Result<(), SealError> {
    let index = object
        .keys()
        .position(|k| k == "extension")
        .or_else(|| {
            object
                .keys()
                .position(|k| k == "text" || k == "contained")
                .map(|i| i + 1)
        })
        .unwrap_or(object.len());
    match object.shift_remove("extension") {
        Some(Value::Array(mut existing)) => {
            existing.extend(extensions);
            insert_at(object, index, "extension".into(), Value::Array(existing));
        }
        None => insert_at(object, index, "extension".into(), Value::Array(extensions)),
        Some(_) => {
            return Err(SealError::Invalid {
                path: "extension".into(),
                reason: "is not an array".into(),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::index::{keys_of_query, keys_of_range, leaves};
    use rshabe::AccessStructure;
    use serde_json::json;

    /// A compound index pairs every key of one leaf with every key of the other, keyed apart
    /// from both leaves' own indexes; a resource stores the pairs, and the leaf indexed only in
    /// the compound stores nothing alone.
    #[test]
    fn compound_tokens_pair_the_two_leaves_and_replace_a_lone_index() {
        let index = BlindIndex::new([5; 32]);
        let bits = 16;
        let policy = AccessStructure::parse("role:a").unwrap();
        let rule = |path: &str| {
            ElementRule::new(path, policy.clone(), Granularity::Shared)
                .unwrap()
                .with_search(SearchMode::BlindIndex { bits })
        };
        let set = RuleSet::new(
            "Patient",
            vec![
                rule("Patient.name"),
                rule("Patient.birthDate").with_index_alone(false),
            ],
            Narrative::Seal,
            Displays::Keep,
        )
        .unwrap()
        .with_compound("Patient.name.family", "Patient.birthDate")
        .unwrap();
        let mut keys = Vec::new();
        keys_of_value(
            "Patient.name",
            "HumanName",
            &json!([{"family": "Smith"}, {"family": "Jones"}]),
            &mut keys,
        );
        keys_of_value("Patient.birthDate", "date", &json!("1974-12-25"), &mut keys);
        let stored = resource_tags(&index, &set, &keys);
        let finds = |stored: &[Tag], asked: &[Tag]| asked.iter().any(|t| stored.contains(t));
        // Two names × (4 prefixes + exact) × (year, month, day), and each name's own tokens.
        let compound: Vec<&Tag> = stored.iter().filter(|t| t.system.contains('+')).collect();
        assert_eq!(compound.len(), 2 * 5 * 3);
        assert!(
            !stored
                .iter()
                .any(|t| t.system.ends_with("Patient.birthDate/day")),
            "the birth date alone is not indexed"
        );
        let family = leaves("Patient.name.family", "string");
        let birth = leaves("Patient.birthDate", "date");
        let t = Tokens::new(&index, bits);
        let pair = |f: &str, d: &str| {
            t.compound(
                &keys_of_query(&family, None, f).unwrap(),
                &keys_of_query(&birth, None, d).unwrap(),
            )
        };
        assert!(finds(&stored, &pair("smi", "1974")));
        assert!(finds(&stored, &pair("jones", "1974-12-25")));
        assert!(!finds(&stored, &pair("smi", "1975")));
        assert!(!finds(&stored, &pair("brown", "1974-12")));
        let range = keys_of_range(&birth, Some("1974-06"), Some("1975-01"), false).unwrap();
        assert!(finds(
            &stored,
            &t.compound(&keys_of_query(&family, None, "jo").unwrap(), &range)
        ));
        // The pair's inputs are length-prefixed: shifting a character between the parts gives
        // another token (at full width, where a collision would be a bug).
        let full = Tokens::new(&index, 64);
        let text = leaves("X.a", "string");
        let exact = |v: &str| keys_of_query(&text, Some("exact"), v).unwrap();
        assert_ne!(
            full.compound(&exact("ab"), &exact("c")),
            full.compound(&exact("a"), &exact("bc"))
        );
        // A resource without a birth date stores no pair, and still its names alone.
        let names_only: Vec<Key> = keys
            .iter()
            .filter(|k| k.leaf() != "Patient.birthDate")
            .cloned()
            .collect();
        let stored = resource_tags(&index, &set, &names_only);
        assert!(!stored.is_empty());
        assert!(stored.iter().all(|t| !t.system.contains('+')));
    }
}
