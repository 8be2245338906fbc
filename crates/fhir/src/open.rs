//! Opening: the upstream form → the original resource for a reader whose attributes satisfy an
//! element's structure, the element masked (data-absent-reason kept, envelope removed) for others.

use std::collections::HashMap;
use std::time::Instant;

use base64::Engine as _;
use std::rc::Rc;

use fhirseal_envelope::{
    ElementContext, Envelope, Header, HeaderCache, HeaderId, HeaderKey, ResourceCipher, WrappedKey,
};
use rshabe::DecryptionKey;
use serde_json::{Map, Value};

use crate::HeaderLookup;
use crate::seal::contained_loc;
use crate::shape::{
    BLIND_INDEX, OBSERVATION_VALUE_SYSTEM, SEALED_HEADER, envelope_of, insert_at, is_sealed,
    strip_envelope, strip_envelope_in,
};

/// Who reads, with which key, and where headers and opened header keys are found.
pub struct Reader<'a> {
    holder: &'a str,
    key: Option<&'a DecryptionKey>,
    cache: &'a HeaderCache,
    headers: &'a dyn HeaderLookup,
    now: Instant,
}

/// What opening did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OpenReport {
    /// Elements restored.
    pub opened: usize,
    /// Elements left masked: the reader's attributes do not satisfy their structure, their
    /// header is unknown or of another period, or their envelope does not open here.
    pub masked: usize,
}

/// The state of one `open` call: which headers were tried, for whom.
struct Session<'r, 'a> {
    reader: &'r Reader<'a>,
    keys: HashMap<HeaderId, Option<Rc<Opened>>>,
    report: OpenReport,
}

/// A header this reader opened: its key and canonical access structure.
struct Opened {
    key: HeaderKey,
    policy: String,
}

/// What a placeholder stands for.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Form {
    /// `_name` of a single primitive: restores `name` and `_name`.
    Primitive,
    /// A single complex element: restores `name`.
    Complex,
    /// `dataAbsentReason` standing for `value[x]`: restores `valueX` and `_valueX`.
    AbsentReason,
}

// === impl Reader ===

impl<'a> Reader<'a> {
    /// `holder` (the key holder's stable name, keying the cache) reading with `key` (`None`: a
    /// reader with no key sees every sealed element masked).
    pub fn new(
        holder: &'a str,
        key: Option<&'a DecryptionKey>,
        cache: &'a HeaderCache,
        headers: &'a dyn HeaderLookup,
    ) -> Self {
        Self {
            holder,
            key,
            cache,
            headers,
            now: Instant::now(),
        }
    }

    /// Opens a resource, or each entry of a Bundle, in place.
    pub fn open(&self, resource: &mut Value) -> OpenReport {
        let mut session = Session {
            reader: self,
            keys: HashMap::new(),
            report: OpenReport::default(),
        };
        session.open_any(resource, None);
        session.report
    }
}

impl std::fmt::Debug for Reader<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reader")
            .field("holder", &self.holder)
            .field("has_key", &self.key.is_some())
            .finish_non_exhaustive()
    }
}

// === impl Session ===

impl Session<'_, '_> {
    fn open_any(&mut self, resource: &mut Value, binding: Option<&str>) {
        let object = match resource {
            Value::Object(object) => object,
            // Not FHIR (an array at the top): whatever is in it is walked like a resource.
            Value::Array(items) => {
                items.iter_mut().for_each(|item| self.open_any(item, None));
                return;
            }
            _ => return,
        };
        if object.get("resourceType").and_then(Value::as_str) == Some("Bundle") {
            if let Some(Value::Array(entries)) = object.get_mut("entry") {
                for entry in entries {
                    let Some(entry) = entry.as_object_mut() else {
                        self.stray_value(entry);
                        continue;
                    };
                    let binding = entry
                        .get("fullUrl")
                        .and_then(Value::as_str)
                        .map(str::to_string);
                    if let Some(inner) = entry.get_mut("resource") {
                        self.open_any(inner, binding.as_deref());
                    }
                    // Nothing is sealed in an entry's own members (search, request, response):
                    // whatever sealed content the upstream put there is masked.
                    self.stray_members(entry, "resource");
                }
            }
            // (An `entry` that is not a list was not walked above: it is walked as stray.)
            let walked = if object.get("entry").is_some_and(Value::is_array) {
                "entry"
            } else {
                ""
            };
            self.stray_members(object, walked);
            return;
        }
        self.open_resource(object, binding);
    }

    fn open_resource(&mut self, object: &mut Map<String, Value>, binding: Option<&str>) {
        // Not a resource (an upstream error or junk): nothing in it opens, anything sealed in it
        // is masked.
        let resource_type = object
            .get("resourceType")
            .and_then(Value::as_str)
            .map_or_else(|| "(not a resource)".to_string(), str::to_string);
        let id = object
            .get("id")
            .and_then(Value::as_str)
            .or(binding)
            .unwrap_or_default()
            .to_string();
        let local = take_resource_headers(object);
        let before = self.report;
        let mut walk = Walk {
            session: self,
            resource_type: &resource_type,
            id: &id,
            local: &local,
            resource_keys: Vec::new(),
        };
        let mut loc = resource_type.clone();
        walk.object(object, &mut loc);
        let opened = self.report.opened - before.opened;
        let masked = self.report.masked - before.masked;
        if opened > 0 && masked == 0 {
            remove_masked_label(object);
        }
    }

    /// Masks sealed content in the members of `object` other than `skip`, which sealing never
    /// writes to (a Bundle's own members, an entry's `search`, `request`, `response`).
    fn stray_members(&mut self, object: &mut Map<String, Value>, skip: &str) {
        strip_envelope_in(object);
        for (key, value) in object.iter_mut() {
            if key != skip {
                self.stray_value(value);
            }
        }
    }

    /// Masks sealed content in `value`, which sealing never writes to.
    fn stray_value(&mut self, value: &mut Value) {
        let none = HashMap::new();
        let mut walk = Walk {
            session: self,
            resource_type: "(not a resource)",
            id: "",
            local: &none,
            resource_keys: Vec::new(),
        };
        walk.stray(value);
    }

    /// The key and structure of header `id`, found once per call: from the cache when this
    /// holder opened the header before (reading only the structure from it), otherwise by
    /// attribute-based decryption with the reader's key.
    fn header_key(
        &mut self,
        id: HeaderId,
        local: &HashMap<HeaderId, Vec<u8>>,
    ) -> Option<Rc<Opened>> {
        if let Some(known) = self.keys.get(&id) {
            return known.clone();
        }
        let found = self.find_header_key(id, local).map(Rc::new);
        self.keys.insert(id, found.clone());
        found
    }

    fn find_header_key(&self, id: HeaderId, local: &HashMap<HeaderId, Vec<u8>>) -> Option<Opened> {
        let reader = self.reader;
        // A reader without a key opens nothing, whatever the cache holds for its name.
        let key_period = reader.key?.period();
        let cached = reader.cache.get(reader.holder, id, reader.now);
        // A cached key still obeys the scheme: a header moved to a period after the reader's key
        // (a ciphertext update after a revocation) does not open with it (RS-HABE.md: "policy ∧
        // time ≥ t").
        if let Some(bytes) = local.get(&id) {
            if let Some(key) = cached {
                let (peeked, period, policy) = Header::peek(bytes).ok()?;
                return (peeked == id && period <= key_period).then(|| Opened {
                    key,
                    policy: policy.to_string(),
                });
            }
            let header = Header::from_bytes(bytes).ok()?;
            return self.decrypt_header(&header);
        }
        let header = reader.headers.header(id)?;
        match cached {
            Some(key) => (header.ciphertext().period() <= key_period).then(|| Opened {
                key,
                policy: header.ciphertext().policy().to_string(),
            }),
            None => self.decrypt_header(&header),
        }
    }

    fn decrypt_header(&self, header: &Header) -> Option<Opened> {
        let reader = self.reader;
        let key = header.open(reader.key?).ok()?;
        reader
            .cache
            .insert(reader.holder, header.id(), key.clone(), reader.now);
        Some(Opened {
            key,
            policy: header.ciphertext().policy().to_string(),
        })
    }
}

/// A walk over one resource (and its contained resources), whose envelopes share a binding.
struct Walk<'w, 'r, 'a> {
    session: &'w mut Session<'r, 'a>,
    resource_type: &'w str,
    id: &'w str,
    local: &'w HashMap<HeaderId, Vec<u8>>,
    /// The resource's key, unwrapped once per header (`None`: it does not unwrap). A resource
    /// has one or a few: a list beats a map.
    resource_keys: Vec<((HeaderId, WrappedKey), Option<ResourceCipher>)>,
}

impl Walk<'_, '_, '_> {
    /// Opens the placeholders in `object`, whose path is `loc` (restored on return).
    fn object(&mut self, object: &mut Map<String, Value>, loc: &mut String) {
        // Placeholders are handled by the object holding them, so a sealed-element extension
        // here (on a resource's root, say) was not put there by sealing: it goes.
        strip_envelope_in(object);
        let mut fields: Vec<(String, Form)> = Vec::new();
        let mut primitive_arrays: Vec<String> = Vec::new();
        let len = loc.len();
        for (key, value) in object.iter_mut() {
            if let Some(base) = key.strip_prefix('_') {
                match value {
                    Value::Object(_) if is_sealed(value) => {
                        fields.push((key.clone(), Form::Primitive));
                    }
                    Value::Array(items) => {
                        if items.iter().any(is_sealed) {
                            primitive_arrays.push(base.to_string());
                        }
                        // The companions' own extensions may hold anything: walk them too.
                        for item in items.iter_mut().filter(|i| !is_sealed(i)) {
                            self.stray(item);
                        }
                    }
                    Value::Object(_) => self.stray(value),
                    _ => {}
                }
                continue;
            }
            if is_sealed(value) {
                let form = if key == "dataAbsentReason" {
                    Form::AbsentReason
                } else {
                    Form::Complex
                };
                fields.push((key.clone(), form));
                continue;
            }
            match value {
                Value::Object(inner) => {
                    push_member(loc, key);
                    self.object(inner, loc);
                    loc.truncate(len);
                }
                Value::Array(items) => {
                    for (i, item) in items.iter_mut().enumerate() {
                        if key == "contained" {
                            if let Some(inner) = item.as_object_mut() {
                                let mut inner_loc = contained_loc(&loc[..len], inner, i);
                                self.object(inner, &mut inner_loc);
                            }
                            continue;
                        }
                        push_member(loc, key);
                        push_index(loc, i);
                        if is_sealed(item) {
                            self.item(item, key, loc);
                        } else if let Some(inner) = item.as_object_mut() {
                            self.object(inner, loc);
                        } else if item.is_array() {
                            self.stray(item);
                        }
                        loc.truncate(len);
                    }
                }
                _ => {}
            }
        }
        for (key, form) in fields {
            let base = match form {
                Form::Primitive => key[1..].to_string(),
                Form::Complex => key.clone(),
                Form::AbsentReason => "value".to_string(),
            };
            push_member(
                loc,
                if form == Form::AbsentReason {
                    "value[x]"
                } else {
                    &base
                },
            );
            self.field(object, &key, &base, loc, form);
            loc.truncate(len);
        }
        for base in primitive_arrays {
            push_member(loc, &base);
            self.primitive_items(object, &base, loc);
            loc.truncate(len);
        }
    }

    /// A sealed item of a repeating complex element `key`.
    fn item(&mut self, item: &mut Value, key: &str, path: &str) {
        match self.unseal(item, path) {
            Some(mut restored) => match restored.shift_remove(key) {
                Some(value) if restored.is_empty() => {
                    *item = value;
                    self.session.report.opened += 1;
                }
                _ => self.mask(item),
            },
            None => self.mask(item),
        }
    }

    /// A single sealed element whose placeholder is `object[key]`.
    fn field(
        &mut self,
        object: &mut Map<String, Value>,
        key: &str,
        base: &str,
        path: &str,
        form: Form,
    ) {
        let Some(placeholder) = object.get(key) else {
            return;
        };
        if !is_sealed(placeholder) {
            return;
        }
        let restored = self.unseal(placeholder, path).filter(|restored| {
            restored.keys().all(|k| {
                let name = k.strip_prefix('_').unwrap_or(k);
                match form {
                    Form::Primitive => name == base,
                    Form::Complex => k == base,
                    Form::AbsentReason => name.starts_with(base) && name.len() > base.len(),
                }
            })
        });
        match restored {
            Some(restored) => {
                let index = object.keys().position(|k| k == key).unwrap_or(object.len());
                object.shift_remove(key);
                if form == Form::Primitive {
                    // A placeholder `_name` stands alone: the value was taken with it.
                    object.shift_remove(base);
                }
                for (offset, (k, v)) in restored.into_iter().enumerate() {
                    insert_at(object, index + offset, k, v);
                }
                self.session.report.opened += 1;
            }
            None => {
                if let Some(placeholder) = object.get_mut(key) {
                    self.mask(placeholder);
                }
            }
        }
    }

    /// Items of a repeating primitive `base` whose `_base` companions are placeholders.
    fn primitive_items(&mut self, object: &mut Map<String, Value>, base: &str, path: &str) {
        let companion = format!("_{base}");
        let len = object
            .get(&companion)
            .and_then(Value::as_array)
            .map_or(0, Vec::len);
        let mut any = false;
        for i in 0..len {
            let Some(placeholder) = object.get(&companion).and_then(|c| c.get(i)) else {
                continue;
            };
            if !is_sealed(placeholder) {
                continue;
            }
            any = true;
            let item_path = format!("{path}[{i}]");
            let restored = self
                .unseal(placeholder, &item_path)
                .filter(|r| r.keys().all(|k| k == base || *k == companion));
            let Some(mut restored) = restored else {
                if let Some(placeholder) = object.get_mut(&companion).and_then(|c| c.get_mut(i)) {
                    self.mask(placeholder);
                }
                continue;
            };
            let value = restored.shift_remove(base).unwrap_or(Value::Null);
            let extra = restored.shift_remove(&companion).unwrap_or(Value::Null);
            if !value.is_null() {
                if !object.contains_key(base) {
                    let at = object
                        .keys()
                        .position(|k| *k == companion)
                        .unwrap_or(object.len());
                    insert_at(
                        object,
                        at,
                        base.to_string(),
                        Value::Array(vec![Value::Null; len]),
                    );
                }
                if let Some(Value::Array(values)) = object.get_mut(base) {
                    if values.len() <= i {
                        values.resize(i + 1, Value::Null);
                    }
                    values[i] = value;
                }
            }
            if let Some(Value::Array(companions)) = object.get_mut(&companion) {
                companions[i] = extra;
            }
            self.session.report.opened += 1;
        }
        if !any {
            return;
        }
        // Put the arrays back in the shape FHIR JSON gives them.
        for name in [base.to_string(), companion] {
            if let Some(Value::Array(items)) = object.get(&name)
                && items.iter().all(Value::is_null)
            {
                object.shift_remove(&name);
            }
        }
    }

    /// Decrypts the envelope in `placeholder` as element `path`; `None` if it does not open here.
    fn unseal(&mut self, placeholder: &Value, path: &str) -> Option<Map<String, Value>> {
        let envelope = Envelope::from_base64(envelope_of(placeholder)?).ok()?;
        let header = self.session.header_key(envelope.header(), self.local)?;
        let slot = (envelope.header(), *envelope.wrapped());
        let at = match self.resource_keys.iter().position(|(s, _)| *s == slot) {
            Some(at) => at,
            None => {
                let key = envelope
                    .wrapped()
                    .unwrap(&header.key, envelope.header(), self.resource_type, self.id)
                    .ok()
                    .map(|key| key.cipher());
                self.resource_keys.push((slot, key));
                self.resource_keys.len() - 1
            }
        };
        let cipher = self.resource_keys[at].1.as_ref()?;
        let ctx =
            ElementContext::with_policy_text(self.resource_type, self.id, path, &header.policy);
        let plaintext = fhirseal_envelope::open_prepared(&ctx, &envelope, cipher).ok()?;
        serde_json::from_slice(&plaintext).ok()
    }

    /// A value where FHIR JSON has none (an array in an array): walked only to mask whatever
    /// sealed content the upstream put there.
    fn stray(&mut self, value: &mut Value) {
        match value {
            Value::Array(items) => items.iter_mut().for_each(|item| self.stray(item)),
            Value::Object(_) if is_sealed(value) => self.mask(value),
            Value::Object(inner) => {
                let mut nowhere = String::from("(stray)");
                self.object(inner, &mut nowhere);
            }
            _ => {}
        }
    }

    /// Leaves a placeholder masked: its envelope goes, its data-absent-reason stays. Anything
    /// else in it came from the upstream, so it is walked too, under a path no envelope is bound
    /// to: a sealed-element extension hidden inside is removed, never opened.
    fn mask(&mut self, placeholder: &mut Value) {
        strip_envelope(placeholder);
        self.session.report.masked += 1;
        if let Some(inner) = placeholder.as_object_mut() {
            let mut nowhere = String::from("(masked)");
            self.object(inner, &mut nowhere);
        }
    }
}

/// `.name`
fn push_member(loc: &mut String, name: &str) {
    loc.push('.');
    loc.push_str(name);
}

/// `[i]`
fn push_index(loc: &mut String, i: usize) {
    use std::fmt::Write as _;
    let _ = write!(loc, "[{i}]");
}

/// Removes the sealed-header extensions from the resource and returns their bytes by header id
/// (decoded only when needed); a malformed one opens nothing (its envelopes stay masked).
fn take_resource_headers(object: &mut Map<String, Value>) -> HashMap<HeaderId, Vec<u8>> {
    let mut headers = HashMap::new();
    let Some(Value::Array(extensions)) = object.get_mut("extension") else {
        return headers;
    };
    extensions.retain(|e| {
        let url = e.get("url").and_then(Value::as_str);
        if url == Some(BLIND_INDEX) {
            // Search tokens are for the upstream server only.
            return false;
        }
        if url != Some(SEALED_HEADER) {
            return true;
        }
        let header = e
            .get("valueBase64Binary")
            .and_then(Value::as_str)
            .and_then(|text| base64::engine::general_purpose::STANDARD.decode(text).ok())
            .and_then(|bytes| Some((Header::peek(&bytes).ok()?.0, bytes)));
        if let Some((id, bytes)) = header {
            headers.insert(id, bytes);
        }
        false
    });
    if extensions.is_empty() {
        object.shift_remove("extension");
    }
    headers
}

/// Removes the `MASKED` label the seal added, once everything is open.
fn remove_masked_label(object: &mut Map<String, Value>) {
    let Some(Value::Object(meta)) = object.get_mut("meta") else {
        return;
    };
    if let Some(Value::Array(labels)) = meta.get_mut("security") {
        let ours = labels.iter().position(|l| {
            l.as_object().is_some_and(|l| {
                l.len() == 2
                    && l.get("system").and_then(Value::as_str) == Some(OBSERVATION_VALUE_SYSTEM)
                    && l.get("code").and_then(Value::as_str) == Some("MASKED")
            })
        });
        if let Some(ours) = ours {
            labels.remove(ours);
        }
        if labels.is_empty() {
            meta.shift_remove("security");
        }
    }
    if meta.is_empty() {
        object.shift_remove("meta");
    }
}
