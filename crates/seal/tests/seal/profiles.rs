//! The StructureDefinitions and SearchParameter under `fhir-profiles/` describe exactly what the
//! transforms write. (`scripts/test` also validates them as R4 with a real validator.)
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test helpers outside #[test] fns

use std::path::PathBuf;

use fhirseal_seal::shape::{CANONICAL, SEALED_ELEMENT, SEALED_HEADER};
use serde_json::Value;

fn load(name: &str) -> Value {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../fhir-profiles")
        .join(name);
    serde_json::from_slice(
        &std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display())),
    )
    .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn element<'a>(sd: &'a Value, id: &str) -> &'a Value {
    sd["differential"]["element"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["id"] == id)
        .unwrap_or_else(|| panic!("{} has no element {id}", sd["id"]))
}

/// (file, url, context, max, value type)
const EXTENSIONS: &[(&str, &str, &str, &str, &str)] = &[
    (
        "StructureDefinition-sealed-element.json",
        SEALED_ELEMENT,
        "Element",
        "1",
        "base64Binary",
    ),
    (
        "StructureDefinition-sealed-header.json",
        SEALED_HEADER,
        "DomainResource",
        "*",
        "base64Binary",
    ),
];

#[test]
fn extension_definitions_match_the_transforms() {
    for (file, url, context, max, value_type) in EXTENSIONS {
        let sd = load(file);
        assert_eq!(sd["resourceType"], "StructureDefinition", "{file}");
        assert_eq!(sd["url"], *url, "{file}");
        assert!(url.starts_with(CANONICAL));
        assert_eq!(sd["fhirVersion"], "4.0.1");
        assert_eq!(sd["type"], "Extension");
        assert_eq!(sd["derivation"], "constraint");
        assert_eq!(sd["context"][0]["expression"], *context, "{file}");
        assert_eq!(element(&sd, "Extension")["max"], *max, "{file}");
        assert_eq!(element(&sd, "Extension.url")["fixedUri"], *url, "{file}");
        assert_eq!(
            element(&sd, "Extension.extension")["max"],
            "0",
            "{file}: a simple extension"
        );
        assert_eq!(
            element(&sd, "Extension.value[x]")["type"][0]["code"],
            *value_type,
            "{file}"
        );
        assert_eq!(element(&sd, "Extension.value[x]")["min"], 1, "{file}");
    }
}
