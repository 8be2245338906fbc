//! What a sealed element looks like on the upstream server: the extension URLs, labels and
//! placeholders shared by sealing and opening.

use fhirseal_fhir::Members;
use serde_json::{Map, Value, json};

/// Our canonical base; the StructureDefinitions under `fhir-profiles/` use it.
pub const CANONICAL: &str = "https://fhirseal.dev/fhir";
/// The sealed-element extension: `valueBase64Binary` holds one envelope.
pub const SEALED_ELEMENT: &str = "https://fhirseal.dev/fhir/StructureDefinition/sealed-element";
/// The sealed-header extension (on the resource, `resource` granularity): `valueBase64Binary`
/// holds one RS-HABE header.
pub const SEALED_HEADER: &str = "https://fhirseal.dev/fhir/StructureDefinition/sealed-header";
/// The system prefix of blind-index tokens, which are `meta.tag` codings
/// (`https://fhirseal.dev/fhir/blind-index/Patient.name.family/prefix`; see [`crate::index`]).
pub const BLIND_INDEX_SYSTEM: &str = "https://fhirseal.dev/fhir/blind-index/";
/// HL7's data-absent-reason extension.
pub const DATA_ABSENT_REASON: &str = "http://hl7.org/fhir/StructureDefinition/data-absent-reason";
/// The data-absent-reason code system.
pub const DATA_ABSENT_REASON_SYSTEM: &str =
    "http://terminology.hl7.org/CodeSystem/data-absent-reason";
/// The code system of the `MASKED` security label.
pub const OBSERVATION_VALUE_SYSTEM: &str =
    "http://terminology.hl7.org/CodeSystem/v3-ObservationValue";
/// FHIRseal's code system (`fhir-profiles/CodeSystem-fhirseal.json`).
pub const FHIRSEAL_CODE_SYSTEM: &str = "https://fhirseal.dev/fhir/CodeSystem/fhirseal";
/// The `meta.security` code (of [`FHIRSEAL_CODE_SYSTEM`]) of a resource in which the gateway
/// found sealed content that is not what FHIRseal sealed there (forged, modified or moved by
/// whoever stored it), withheld from the reader. Each such element carries data-absent-reason
/// [`FORGED_REASON`].
pub const FORGED_CODE: &str = "forged";
/// The data-absent-reason code of a forged element (`error`: "Some system or workflow process
/// error means that the information is not available"); a masked one has `masked`.
pub const FORGED_REASON: &str = "error";
/// The narrative that stands in for a sealed one.
pub const NEUTRAL_DIV: &str = "<div xmlns=\"http://www.w3.org/1999/xhtml\"><p>Some content of this resource is protected.</p></div>";

/// `{"url": data-absent-reason, "valueCode": "masked"}`.
pub(crate) fn masked_reason() -> Value {
    json!({"url": DATA_ABSENT_REASON, "valueCode": "masked"})
}

/// The forged-content label as the reader adds it to `meta.security`.
pub(crate) fn forged_label() -> Value {
    json!({"system": FHIRSEAL_CODE_SYSTEM, "code": FORGED_CODE,
           "display": "Forged sealed content withheld"})
}

/// Flags a forged element's placeholder (before its envelope is stripped): its data-absent-reason
/// becomes [`FORGED_REASON`]: the `coding` of a `dataAbsentReason` concept when `concept`,
/// otherwise the data-absent-reason extension (added when the upstream left none).
pub(crate) fn flag_forged(placeholder: &mut Value, concept: bool) {
    let Some(object) = placeholder.as_object_mut() else {
        *placeholder = json!({"extension": [reason(FORGED_REASON)]});
        return;
    };
    if concept {
        object.insert(
            "coding".into(),
            json!([{"system": DATA_ABSENT_REASON_SYSTEM, "code": FORGED_REASON, "display": "Error"}]),
        );
        object.shift_remove("text");
        return;
    }
    let extensions = object
        .entry("extension")
        .or_insert_with(|| Value::Array(Vec::new()));
    if !extensions.is_array() {
        *extensions = Value::Array(Vec::new());
    }
    if let Some(extensions) = extensions.as_array_mut() {
        extensions.retain(|e| e.member("url").and_then(Value::as_str) != Some(DATA_ABSENT_REASON));
        extensions.insert(0, reason(FORGED_REASON));
    }
}

fn reason(code: &str) -> Value {
    json!({"url": DATA_ABSENT_REASON, "valueCode": code})
}

/// The placeholder of a complex element `key`: `extensions`, plus what its type cannot do
/// without (an Extension's `url`; a Narrative's `status` and the neutral `div`), taken from
/// `original`. Only an Extension (`extension`, `modifierExtension`) keeps a `url`: R4's other
/// `url` children (`Attachment.url`, `RelatedArtifact.url`, backbone elements') are content, and
/// sealed with the rest of the element.
pub(crate) fn complex_placeholder(
    key: &str,
    original: Option<&Value>,
    extensions: Vec<Value>,
) -> Value {
    let narrative = original.is_some_and(|o| o.member("div").is_some());
    let extension = matches!(key, "extension" | "modifierExtension");
    let mut placeholder = Map::new();
    if let Some(url) = original
        .and_then(|o| o.member("url"))
        .and_then(Value::as_str)
        && extension
        && !narrative
    {
        placeholder.insert("url".into(), Value::String(url.to_string()));
    }
    placeholder.insert("extension".into(), Value::Array(extensions));
    if narrative {
        placeholder.insert("status".into(), Value::String("generated".into()));
        placeholder.insert("div".into(), Value::String(NEUTRAL_DIV.into()));
    }
    Value::Object(placeholder)
}

/// What a reader gets in place of a forged element that has no placeholder to flag (a value in
/// clear where the rules say sealed): [`complex_placeholder`] with data-absent-reason
/// [`FORGED_REASON`] for a primitive's `_name` or a complex element, or the `dataAbsentReason`
/// concept coded [`FORGED_REASON`] when `concept` (for `value[x]`).
pub(crate) fn forged_placeholder_for(key: &str, original: Option<&Value>, concept: bool) -> Value {
    if concept {
        let mut placeholder = Value::Object(Map::new());
        flag_forged(&mut placeholder, true);
        return placeholder;
    }
    complex_placeholder(key, original, vec![reason(FORGED_REASON)])
}

/// The narrative a reader gets in place of a forged one: the neutral `div`, with data-absent-reason
/// [`FORGED_REASON`].
pub(crate) fn forged_narrative() -> Value {
    json!({"extension": [reason(FORGED_REASON)], "status": "generated", "div": NEUTRAL_DIV})
}

/// Whether the resource's `meta.security` holds the forged-content label ([`FORGED_CODE`]).
pub fn has_forged_label(resource: &Value) -> bool {
    resource
        .member("meta")
        .and_then(|m| m.member("security"))
        .and_then(Value::as_array)
        .is_some_and(|labels| labels.iter().any(is_forged_label))
}

/// Removes every forged-content label from the resource's `meta.security` (then an emptied
/// `security` and `meta`): only the gateway says what is forged, so one the upstream stored or
/// a client sent goes.
pub fn remove_forged_labels(object: &mut Map<String, Value>) {
    let Some(Value::Object(meta)) = object.member_mut("meta") else {
        return;
    };
    let Some(Value::Array(labels)) = meta.member_mut("security") else {
        return;
    };
    let before = labels.len();
    labels.retain(|l| !is_forged_label(l));
    if labels.len() != before {
        tidy_meta(object);
    }
}

/// Drops an emptied `meta.security`, then an emptied `meta`.
pub(crate) fn tidy_meta(object: &mut Map<String, Value>) {
    let Some(Value::Object(meta)) = object.member_mut("meta") else {
        return;
    };
    if meta
        .member("security")
        .and_then(Value::as_array)
        .is_some_and(Vec::is_empty)
    {
        meta.shift_remove("security");
    }
    if meta.is_empty() {
        object.shift_remove("meta");
    }
}

fn is_forged_label(label: &Value) -> bool {
    label.member("system").and_then(Value::as_str) == Some(FHIRSEAL_CODE_SYSTEM)
        && label.member("code").and_then(Value::as_str) == Some(FORGED_CODE)
}

/// The path (`Patient.birthDate`, `Patient.name[0]`, `Observation.dataAbsentReason`) of the
/// first element of `resource` that holds data-absent-reason [`FORGED_REASON`], as the extension
/// or as a `dataAbsentReason` concept's coding: what a reader got for a forged element. A path,
/// never a value.
pub fn forged_placeholder(resource: &Value) -> Option<String> {
    let mut path = resource
        .member("resourceType")
        .and_then(Value::as_str)
        .unwrap_or("Resource")
        .to_string();
    find_forged_reason(resource, &mut path).then_some(path)
}

/// Whether `value` (at `path`) holds a forged reason; `path` is left at the element holding it.
fn find_forged_reason(value: &Value, path: &mut String) -> bool {
    let len = path.len();
    match value {
        Value::Object(object) => {
            let extension = object.member("url").and_then(Value::as_str)
                == Some(DATA_ABSENT_REASON)
                && object.member("valueCode").and_then(Value::as_str) == Some(FORGED_REASON);
            let coding = object.member("system").and_then(Value::as_str)
                == Some(DATA_ABSENT_REASON_SYSTEM)
                && object.member("code").and_then(Value::as_str) == Some(FORGED_REASON);
            if extension || coding {
                return true;
            }
            for (key, child) in object {
                if matches!(key.as_str(), "extension" | "coding") {
                    // The element is the one holding them.
                    if find_forged_reason(child, path) {
                        path.truncate(len);
                        return true;
                    }
                    continue;
                }
                path.push('.');
                path.push_str(key.strip_prefix('_').unwrap_or(key));
                if find_forged_reason(child, path) {
                    return true;
                }
                path.truncate(len);
            }
            false
        }
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                use std::fmt::Write as _;
                let _ = write!(path, "[{i}]");
                if find_forged_reason(item, path) {
                    return true;
                }
                path.truncate(len);
            }
            false
        }
        _ => false,
    }
}

/// `{"url": sealed-element, "valueBase64Binary": envelope}`.
pub(crate) fn sealed_extension(envelope: String) -> Value {
    json!({"url": SEALED_ELEMENT, "valueBase64Binary": envelope})
}

/// The `MASKED` label as the seal adds it to `meta.security`.
pub(crate) fn masked_label() -> Value {
    json!({"system": OBSERVATION_VALUE_SYSTEM, "code": "MASKED"})
}

/// The `Observation.dataAbsentReason` that stands for a sealed `value[x]`.
pub(crate) fn masked_concept(envelope: String) -> Value {
    json!({
        "extension": [sealed_extension(envelope)],
        "coding": [{"system": DATA_ABSENT_REASON_SYSTEM, "code": "masked", "display": "Masked"}],
    })
}

/// Whether `value` carries a sealed-element extension, well-formed or not: a placeholder, to be
/// opened or masked, never passed on with its extension.
pub(crate) fn is_sealed(value: &Value) -> bool {
    value
        .member("extension")
        .and_then(Value::as_array)
        .is_some_and(|e| {
            e.iter()
                .any(|e| e.member("url").and_then(Value::as_str) == Some(SEALED_ELEMENT))
        })
}

/// The envelope of `value`'s sealed-element extension, if it has one.
pub(crate) fn envelope_of(value: &Value) -> Option<&str> {
    value
        .member("extension")?
        .as_array()?
        .iter()
        .find(|e| e.member("url").and_then(Value::as_str) == Some(SEALED_ELEMENT))?
        .member("valueBase64Binary")?
        .as_str()
}

/// Removes the sealed-element extension from `value`, keeping everything else (the
/// data-absent-reason): how an element looks to a reader who cannot open it.
pub(crate) fn strip_envelope(value: &mut Value) {
    if let Some(object) = value.as_object_mut() {
        strip_envelope_in(object);
    }
}

/// [`strip_envelope`] on an object.
///
/// Headers and blind-index tokens are taken from a resource's root before its walk, so any left
/// wherever this runs are strays, and go too.
pub(crate) fn strip_envelope_in(object: &mut Map<String, Value>) {
    if object.has_member("meta") {
        crate::index::take_tags(object);
    }
    if let Some(Value::Array(extensions)) = object.member_mut("extension") {
        extensions.retain(|e| {
            !matches!(
                e.member("url").and_then(Value::as_str),
                Some(SEALED_ELEMENT | SEALED_HEADER)
            )
        });
        if extensions.is_empty() {
            object.shift_remove("extension");
        }
    }
}

/// Whether anything in `value` is one of our extensions: input that already holds sealed
/// content cannot be sealed again.
pub(crate) fn holds_sealed(value: &Value) -> bool {
    match value {
        Value::Object(object) => {
            if let Some(Value::String(url)) = object.member("url")
                && (url == SEALED_ELEMENT || url == SEALED_HEADER)
            {
                return true;
            }
            // A blind-index token (a coding of our system), in `meta.tag` or anywhere else.
            if let Some(Value::String(system)) = object.member("system")
                && system.starts_with(BLIND_INDEX_SYSTEM)
            {
                return true;
            }
            object.values().any(holds_sealed)
        }
        Value::Array(items) => items.iter().any(holds_sealed),
        _ => false,
    }
}

/// Whether `object` is a `sealed-header` extension (by its `url`).
pub(crate) fn is_header(object: &Map<String, Value>) -> bool {
    object.member("url").and_then(Value::as_str) == Some(SEALED_HEADER)
}

/// Whether `value` (a resource or a Bundle) carries RS-HABE headers of its own (`resource`
/// granularity): opening it then takes an attribute-based decryption, not only AES.
pub fn carries_headers(value: &Value) -> bool {
    match value {
        Value::Object(object) => is_header(object) || object.values().any(carries_headers),
        Value::Array(items) => items.iter().any(carries_headers),
        _ => false,
    }
}

/// Appends `[index]` to `loc`, the path the walks extend for every array item they enter: the
/// digits written here, without `core::fmt`'s machinery, as `format!("[{index}]")` writes them.
pub(crate) fn push_index(loc: &mut String, index: usize) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    let mut rest = index;
    loop {
        at -= 1;
        // `rest % 10` is a digit: the cast cannot truncate.
        digits[at] = b'0' + (rest % 10) as u8;
        rest /= 10;
        if rest == 0 {
            break;
        }
    }
    loc.push('[');
    for &digit in &digits[at..] {
        loc.push(char::from(digit));
    }
    loc.push(']');
}

/// Inserts `key: value` at `index` of `object` (or at its end), keeping the other members' order.
pub(crate) fn insert_at(object: &mut Map<String, Value>, index: usize, key: String, value: Value) {
    let index = index.min(object.len());
    object.shift_insert(index, key, value);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_index_is_written_as_format_writes_it() {
        let edges = [9_999, 10_000, 123_456_789, u32::MAX as usize, usize::MAX];
        for index in (0..=1_000).chain(edges) {
            let mut loc = String::from("Patient.name");
            push_index(&mut loc, index);
            assert_eq!(loc, format!("Patient.name[{index}]"));
        }
    }
}
