//! Opening: the upstream form → the original resource for a reader whose attributes satisfy an
//! element's structure, the element masked (data-absent-reason kept, envelope removed) for others,
//! and the element masked and flagged as forged when it is not what FHIRseal sealed there.
//!
//! Each sealed element has one of three outcomes ([`OpenReport`]):
//!
//! | outcome | when | what the reader gets |
//! |---|---|---|
//! | opened | authentic, and the reader's attributes satisfy its structure | the element as sealed |
//! | masked | the reader may not open it, or its shared header is not found | the placeholder without its envelope (data-absent-reason `masked`) |
//! | forged | its envelope's or header's tag does not verify under the sealing key (made from the public parameters, modified, version 1, malformed), it was moved from another element, resource or header (transplanted), or its header's key unwraps no resource key though the reader's attributes satisfy the structure | the placeholder without its envelope, data-absent-reason `error` (for `value[x]`: `dataAbsentReason` coded `error`), and the resource labelled `meta.security` [`FORGED_CODE`](crate::shape::FORGED_CODE) of [`FHIRSEAL_CODE_SYSTEM`](crate::shape::FHIRSEAL_CODE_SYSTEM) |
//!
//! The tag checks need only the sealing key, so every reader, entitled or not, sees a forged
//! element as forged. With [`Reader::with_rules`], so is an element the sealing rules seal that
//! stands in clear where sealing would have left a placeholder: the upstream wrote it.

use std::collections::HashMap;
use std::time::Instant;

use base64::Engine as _;
use std::rc::Rc;

use fhirseal_envelope::{
    ElementContext, Envelope, Header, HeaderCache, HeaderCipher, HeaderId, HeaderKey,
    ResourceCipher, SealingKey, WrappedKey,
};
use fhirseal_fhir::Members;
use rshabe::DecryptionKey;
use serde_json::{Map, Value};

use crate::parse::{Scratch, parse_value};
use crate::plaintext::withhold_plaintext;
use crate::seal::contained_loc;
use crate::shape::{
    OBSERVATION_VALUE_SYSTEM, SEALED_HEADER, envelope_of, flag_forged, forged_label, insert_at,
    is_sealed, push_index, remove_forged_labels, strip_envelope, strip_envelope_in, tidy_meta,
};
use crate::{HeaderLookup, RuleSource};

/// Who reads, with which key, and where headers and opened header keys are found.
pub struct Reader<'a> {
    holder: &'a str,
    key: Option<&'a DecryptionKey>,
    cache: &'a HeaderCache,
    headers: &'a dyn HeaderLookup,
    sealing: &'a SealingKey,
    rules: Option<&'a dyn RuleSource>,
    now: Instant,
}

/// What opening did. No member holds a protected value.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OpenReport {
    /// Elements restored.
    pub opened: usize,
    /// Elements left masked: the reader's attributes do not satisfy their structure, their
    /// header is unknown or of a period after the reader's key.
    pub masked: usize,
    /// Elements masked and flagged as forged (see the module docs): not counted in `masked`.
    pub forged: usize,
    /// Where the first [`MAX_FORGED_LISTED`] forged elements were, as `Type/id Path`
    /// (`Patient/p1 Patient.birthDate`): references and element paths, never values.
    pub forged_elements: Vec<String>,
    /// The distinct element paths opened (`Condition.code`, `Patient.telecom`: indices left
    /// out), at most [`MAX_PATHS_LISTED`], in the order first met: what the audit trail says was
    /// read, never a value.
    pub opened_paths: Vec<String>,
    /// The distinct element paths left masked, likewise.
    pub masked_paths: Vec<String>,
}

/// How many forged elements an [`OpenReport`] lists by path (all are counted).
pub const MAX_FORGED_LISTED: usize = 32;

/// How many distinct element paths an [`OpenReport`] lists as opened, and as masked.
pub const MAX_PATHS_LISTED: usize = 64;

/// Adds `path` without its indices (`Patient.telecom[2].value` → `Patient.telecom.value`) to
/// `list` unless it is there or the list is full; allocates only for a path not yet listed.
pub(crate) fn list_path(list: &mut Vec<String>, path: &str) {
    if list.len() >= MAX_PATHS_LISTED || list.iter().any(|l| l.chars().eq(without_indices(path))) {
        return;
    }
    list.push(without_indices(path).collect());
}

/// The characters of `path` outside its `[…]` indices.
fn without_indices(path: &str) -> impl Iterator<Item = char> + '_ {
    let mut depth = 0usize;
    path.chars().filter(move |c| match c {
        '[' => {
            depth += 1;
            false
        }
        ']' => {
            depth = depth.saturating_sub(1);
            false
        }
        _ => depth == 0,
    })
}

/// The state of one `open` call: which headers were tried, for whom.
struct Session<'r, 'a> {
    reader: &'r Reader<'a>,
    headers: HashMap<HeaderId, Found>,
    report: OpenReport,
    /// What parsing each element's plaintext builds on, kept from one element to the next.
    scratch: Scratch,
}

/// What one header id stands for in this call.
#[derive(Clone)]
enum Found {
    /// No header of that id: its elements stay masked.
    Missing,
    /// A header that does not verify (or does not decode): its elements are forged.
    Forged,
    /// A header that verified.
    Genuine(Rc<Opened>),
}

/// A header that verified: its canonical access structure, and its key if this reader opened it
/// (its schedule prepared once for all the resources of the answer sealed under it).
struct Opened {
    key: Option<HeaderCipher>,
    policy: String,
}

/// What unsealing one element gave.
enum Unsealed {
    /// The element's members, as sealed.
    Opened(Map<String, Value>),
    /// Not for this reader (or its header is not found).
    Masked,
    /// Not what FHIRseal sealed there.
    Forged,
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
    /// reader with no key sees every sealed element masked, or forged); `sealing` is the trusted
    /// zone's sealing key every envelope and header is checked with.
    pub fn new(
        holder: &'a str,
        key: Option<&'a DecryptionKey>,
        cache: &'a HeaderCache,
        headers: &'a dyn HeaderLookup,
        sealing: &'a SealingKey,
    ) -> Self {
        Self {
            holder,
            key,
            cache,
            headers,
            sealing,
            rules: None,
            now: Instant::now(),
        }
    }

    /// The same reader, also checking each resource against the sealing rules `rules` gives for
    /// it: an element they seal that stands in clear (neither a placeholder nor absent) did not
    /// come from FHIRseal and is forged (module docs), its value never shown. Without it, a
    /// value in clear anywhere is passed on as it is.
    pub fn with_rules(self, rules: &'a dyn RuleSource) -> Self {
        Self {
            rules: Some(rules),
            ..self
        }
    }

    /// Opens a resource, or each entry of a Bundle, in place.
    pub fn open(&self, resource: &mut Value) -> OpenReport {
        let mut session = Session {
            reader: self,
            headers: HashMap::new(),
            report: OpenReport::default(),
            scratch: Scratch::default(),
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
            .field("checks_rules", &self.rules.is_some())
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
        if object.member("resourceType").and_then(Value::as_str) == Some("Bundle") {
            if let Some(Value::Array(entries)) = object.member_mut("entry") {
                for entry in entries {
                    let Some(entry) = entry.as_object_mut() else {
                        self.stray_value(entry);
                        continue;
                    };
                    let binding = entry
                        .member("fullUrl")
                        .and_then(Value::as_str)
                        .map(str::to_string);
                    if let Some(inner) = entry.member_mut("resource") {
                        self.open_any(inner, binding.as_deref());
                    }
                    // Nothing is sealed in an entry's own members (search, request, response):
                    // whatever sealed content the upstream put there is masked.
                    self.stray_members(entry, "resource");
                }
            }
            // (An `entry` that is not a list was not walked above: it is walked as stray.)
            let walked = if object.member("entry").is_some_and(Value::is_array) {
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
            .member("resourceType")
            .and_then(Value::as_str)
            .map_or_else(|| "(not a resource)".to_string(), str::to_string);
        let id = object
            .member("id")
            .and_then(Value::as_str)
            .or(binding)
            .unwrap_or_default()
            .to_string();
        let local = take_resource_headers(object);
        // Only the gateway says what is forged: a label the upstream wrote goes.
        remove_forged_labels(object);
        let (opened, masked, forged) = (self.report.opened, self.report.masked, self.report.forged);
        if let Some(source) = self.reader.rules {
            let rules = source.rules_for(object);
            withhold_plaintext(object, &rules, &resource_type, &mut |path| {
                self.forged(&resource_type, &id, path);
            });
        }
        let mut walk = Walk {
            session: self,
            resource_type: &resource_type,
            id: &id,
            local: &local,
            resource_keys: Vec::new(),
        };
        let mut loc = resource_type.clone();
        walk.object(object, &mut loc);
        let opened = self.report.opened - opened;
        let masked = self.report.masked - masked;
        let forged = self.report.forged - forged;
        if forged > 0 {
            add_label(object, forged_label());
        } else if opened > 0 && masked == 0 {
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

    /// What header `id` stands for, found once per call: verified under the sealing key, then
    /// its key from the cache when this holder opened it before (reading only the structure), or
    /// by attribute-based decryption with the reader's key.
    fn header(&mut self, id: HeaderId, local: &HashMap<HeaderId, Vec<u8>>) -> Found {
        if let Some(known) = self.headers.get(&id) {
            return known.clone();
        }
        let found = self.find_header(id, local);
        self.headers.insert(id, found.clone());
        found
    }

    fn find_header(&self, id: HeaderId, local: &HashMap<HeaderId, Vec<u8>>) -> Found {
        let reader = self.reader;
        if let Some(bytes) = local.get(&id) {
            let Ok((peeked, period, policy)) = Header::peek_verified(bytes, reader.sealing) else {
                return Found::Forged;
            };
            if peeked != id {
                return Found::Forged;
            }
            let key = match self.cached_key(id, period) {
                Some(key) => Some(key),
                None if reader.key.is_none() => None,
                // A header whose tag verifies but whose ciphertext does not decode was cut or
                // changed upstream.
                None => match Header::from_bytes(bytes) {
                    Ok(header) => self.decrypt_header(&header),
                    Err(_) => return Found::Forged,
                },
            };
            return genuine(key, policy.to_string());
        }
        let Some(header) = reader.headers.header(id) else {
            return Found::Missing;
        };
        if header.id() != id || header.verify(reader.sealing).is_err() {
            return Found::Forged;
        }
        let key = self
            .cached_key(id, header.ciphertext().period())
            .or_else(|| self.decrypt_header(&header));
        genuine(key, header.policy_text().to_owned())
    }

    /// The key this holder opened for header `id` before, if cached. A cached key still obeys
    /// the scheme: a header moved to a period after the reader's key (a ciphertext update after
    /// a revocation) does not open with it (RS-HABE.md: "policy ∧ time ≥ t").
    fn cached_key(&self, id: HeaderId, header_period: u64) -> Option<HeaderKey> {
        let reader = self.reader;
        // A reader without a key opens nothing, whatever the cache holds for its name.
        let key_period = reader.key?.period();
        let cached = reader.cache.get(reader.holder, id, reader.now)?;
        (header_period <= key_period).then_some(cached)
    }

    /// Opens `header` with the reader's key by attribute-based decryption, and caches what came
    /// of it: the key, or that this key (of its period) does not open it, so that the next read
    /// masks at once instead of trying again (HeaderCache's docs say why that stays true).
    fn decrypt_header(&self, header: &Header) -> Option<HeaderKey> {
        let reader = self.reader;
        let key = reader.key?;
        let (holder, id, now) = (reader.holder, header.id(), reader.now);
        if reader.cache.is_unopenable(holder, id, key.period(), now) {
            return None;
        }
        // A key that does not satisfy the structure (or is of an earlier period) is remembered
        // so: the same key will not open it on the next read either. (A header that does not
        // verify was turned away before this.)
        reader
            .cache
            .open_header(holder, header, key, reader.sealing, now)
            .ok()
    }

    /// Counts a forged element at `path` of the resource `resource_type/id`.
    fn forged(&mut self, resource_type: &str, id: &str, path: &str) {
        self.report.forged += 1;
        if self.report.forged_elements.len() < MAX_FORGED_LISTED {
            self.report
                .forged_elements
                .push(format!("{resource_type}/{id} {path}"));
        }
    }
}

fn genuine(key: Option<HeaderKey>, policy: String) -> Found {
    let key = key.as_ref().map(HeaderKey::cipher);
    Found::Genuine(Rc::new(Opened { key, policy }))
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
            Unsealed::Opened(mut restored) => match restored.shift_remove(key) {
                Some(value) if restored.is_empty() => {
                    *item = value;
                    self.session.report.opened += 1;
                    list_path(&mut self.session.report.opened_paths, path);
                }
                _ => self.mask(item, path),
            },
            Unsealed::Masked => self.mask(item, path),
            Unsealed::Forged => self.forge(item, path, false),
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
        let Some(placeholder) = object.member(key) else {
            return;
        };
        if !is_sealed(placeholder) {
            return;
        }
        let fits = |restored: &Map<String, Value>| {
            restored.keys().all(|k| {
                let name = k.strip_prefix('_').unwrap_or(k);
                match form {
                    Form::Primitive => name == base,
                    Form::Complex => k == base,
                    Form::AbsentReason => name.starts_with(base) && name.len() > base.len(),
                }
            })
        };
        let restored = match self.unseal(placeholder, path) {
            Unsealed::Opened(restored) if fits(&restored) => Some(restored),
            Unsealed::Forged => {
                if let Some(placeholder) = object.member_mut(key) {
                    self.forge(placeholder, path, form == Form::AbsentReason);
                }
                return;
            }
            Unsealed::Opened(_) | Unsealed::Masked => None,
        };
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
                list_path(&mut self.session.report.opened_paths, path);
            }
            None => {
                if let Some(placeholder) = object.member_mut(key) {
                    self.mask(placeholder, path);
                }
            }
        }
    }

    /// Items of a repeating primitive `base` whose `_base` companions are placeholders.
    fn primitive_items(&mut self, object: &mut Map<String, Value>, base: &str, path: &str) {
        let companion = format!("_{base}");
        let len = object
            .member(&companion)
            .and_then(Value::as_array)
            .map_or(0, Vec::len);
        let mut any = false;
        for i in 0..len {
            let Some(placeholder) = object.member(&companion).and_then(|c| c.get(i)) else {
                continue;
            };
            if !is_sealed(placeholder) {
                continue;
            }
            any = true;
            let item_path = format!("{path}[{i}]");
            let restored = match self.unseal(placeholder, &item_path) {
                Unsealed::Opened(r) if r.keys().all(|k| k == base || *k == companion) => Ok(r),
                Unsealed::Forged => Err(true),
                Unsealed::Opened(_) | Unsealed::Masked => Err(false),
            };
            let mut restored = match restored {
                Ok(restored) => restored,
                Err(forged) => {
                    if let Some(placeholder) =
                        object.member_mut(&companion).and_then(|c| c.get_mut(i))
                    {
                        if forged {
                            self.forge(placeholder, &item_path, false);
                        } else {
                            self.mask(placeholder, &item_path);
                        }
                    }
                    continue;
                }
            };
            let value = restored.shift_remove(base).unwrap_or(Value::Null);
            let extra = restored.shift_remove(&companion).unwrap_or(Value::Null);
            if !value.is_null() {
                if !object.has_member(base) {
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
                if let Some(Value::Array(values)) = object.member_mut(base) {
                    if values.len() <= i {
                        values.resize(i + 1, Value::Null);
                    }
                    values[i] = value;
                }
            }
            if let Some(Value::Array(companions)) = object.member_mut(&companion) {
                companions[i] = extra;
            }
            self.session.report.opened += 1;
            list_path(&mut self.session.report.opened_paths, path);
        }
        if !any {
            return;
        }
        // Put the arrays back in the shape FHIR JSON gives them.
        for name in [base.to_string(), companion] {
            if let Some(Value::Array(items)) = object.member(&name)
                && items.iter().all(Value::is_null)
            {
                object.shift_remove(&name);
            }
        }
    }

    /// Verifies the envelope in `placeholder` as element `path`, then decrypts it if this reader
    /// may: the module docs' three outcomes.
    fn unseal(&mut self, placeholder: &Value, path: &str) -> Unsealed {
        let Some(envelope) = envelope_of(placeholder).and_then(|t| Envelope::from_base64(t).ok())
        else {
            // A sealed-element extension without a well-formed envelope: not FHIRseal's.
            return Unsealed::Forged;
        };
        let header = match self.session.header(envelope.header(), self.local) {
            Found::Missing => return Unsealed::Masked,
            Found::Forged => return Unsealed::Forged,
            Found::Genuine(header) => header,
        };
        let ctx =
            ElementContext::with_policy_text(self.resource_type, self.id, path, &header.policy);
        let sealing = self.session.reader.sealing;
        let Ok(verified) = envelope.verify(&ctx, sealing) else {
            return Unsealed::Forged;
        };
        let Some(header_key) = &header.key else {
            return Unsealed::Masked;
        };
        let slot = (envelope.header(), *envelope.wrapped());
        let at = match self.resource_keys.iter().position(|(s, _)| *s == slot) {
            Some(at) => at,
            None => {
                let key = envelope
                    .wrapped()
                    .unwrap_with(header_key, envelope.header(), self.resource_type, self.id)
                    .ok()
                    .map(|key| key.cipher());
                self.resource_keys.push((slot, key));
                self.resource_keys.len() - 1
            }
        };
        // An authentic envelope whose header key, opened by an entitled reader, unwraps nothing:
        // the header's ciphertext is not the one it was sealed under (swapped upstream).
        let Some(cipher) = self.resource_keys[at].1.as_ref() else {
            return Unsealed::Forged;
        };
        let Ok(plaintext) = verified.open(cipher) else {
            return Unsealed::Forged;
        };
        // UTF-8 checked once, not string by string as `from_slice` does: the same answer.
        let scratch = &mut self.session.scratch;
        match std::str::from_utf8(&plaintext).map(|text| parse_value(text, scratch)) {
            Ok(Ok(Value::Object(restored))) => Unsealed::Opened(restored),
            Ok(Ok(_) | Err(_)) | Err(_) => Unsealed::Masked,
        }
    }

    /// A value where FHIR JSON has none (an array in an array): walked only to mask whatever
    /// sealed content the upstream put there.
    fn stray(&mut self, value: &mut Value) {
        match value {
            Value::Array(items) => items.iter_mut().for_each(|item| self.stray(item)),
            Value::Object(_) if is_sealed(value) => self.mask(value, "(stray)"),
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
    fn mask(&mut self, placeholder: &mut Value, path: &str) {
        self.session.report.masked += 1;
        list_path(&mut self.session.report.masked_paths, path);
        self.withhold(placeholder);
    }

    /// Masks a forged element at `path` and flags it: data-absent-reason `error` (coded in the
    /// `dataAbsentReason` concept itself when `concept`), counted and listed in the report.
    fn forge(&mut self, placeholder: &mut Value, path: &str, concept: bool) {
        self.session.forged(self.resource_type, self.id, path);
        flag_forged(placeholder, concept);
        self.withhold(placeholder);
    }

    /// [`Walk::mask`] without the count.
    fn withhold(&mut self, placeholder: &mut Value) {
        strip_envelope(placeholder);
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

/// Removes the sealed-header extensions from the resource and returns their bytes by header id
/// (decoded only when needed); a malformed one opens nothing (its envelopes stay masked).
fn take_resource_headers(object: &mut Map<String, Value>) -> HashMap<HeaderId, Vec<u8>> {
    let mut headers = HashMap::new();
    // Search tokens are for the upstream server only.
    crate::index::take_tags(object);
    let Some(Value::Array(extensions)) = object.member_mut("extension") else {
        return headers;
    };
    extensions.retain(|e| {
        let url = e.member("url").and_then(Value::as_str);
        if url != Some(SEALED_HEADER) {
            return true;
        }
        let header = e
            .member("valueBase64Binary")
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
    let Some(Value::Object(meta)) = object.member_mut("meta") else {
        return;
    };
    if let Some(Value::Array(labels)) = meta.member_mut("security") {
        let ours = labels.iter().position(|l| {
            l.as_object().is_some_and(|l| {
                l.len() == 2
                    && l.member("system").and_then(Value::as_str) == Some(OBSERVATION_VALUE_SYSTEM)
                    && l.member("code").and_then(Value::as_str) == Some("MASKED")
            })
        });
        if let Some(ours) = ours {
            labels.remove(ours);
        }
    }
    tidy_meta(object);
}

/// Adds `label` to the resource's `meta.security`.
fn add_label(object: &mut Map<String, Value>, label: Value) {
    let meta = object
        .entry("meta")
        .or_insert_with(|| Value::Object(Map::new()));
    if !meta.is_object() {
        *meta = Value::Object(Map::new());
    }
    let Some(meta) = meta.as_object_mut() else {
        return;
    };
    let security = meta
        .entry("security")
        .or_insert_with(|| Value::Array(Vec::new()));
    if !security.is_array() {
        *security = Value::Array(Vec::new());
    }
    if let Some(labels) = security.as_array_mut() {
        labels.push(label);
    }
}

#[cfg(test)]
mod listed_paths {
    use super::*;

    #[test]
    fn paths_are_listed_once_without_indices_and_bounded() {
        let mut list = Vec::new();
        list_path(&mut list, "Patient.telecom[2].value");
        list_path(&mut list, "Patient.telecom[0].value");
        list_path(&mut list, "Patient.telecom");
        list_path(&mut list, "Patient.contact[1].telecom[3]");
        assert_eq!(
            list,
            [
                "Patient.telecom.value",
                "Patient.telecom",
                "Patient.contact.telecom"
            ]
        );
        for i in 0..2 * MAX_PATHS_LISTED {
            list_path(&mut list, &format!("Patient.x{i}"));
        }
        assert_eq!(list.len(), MAX_PATHS_LISTED);
    }
}
