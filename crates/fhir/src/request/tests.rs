use serde_json::json;

use super::*;

const BASE: &str = "https://gw.example/fhir";

fn http(method: &str, url: &str) -> Result<FhirRequest, RequestError> {
    let (path, query) = match url.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (url, None),
    };
    FhirRequest::from_http(method, path, query, |_| None, None)
}

fn entry(method: &str, url: &str) -> Result<FhirRequest, RequestError> {
    FhirRequest::from_entry(
        &json!({"request": {"method": method, "url": url}}),
        Prefer::Unspecified,
        BASE,
    )
}

fn t(name: &str) -> ResourceType {
    ResourceType::parse(name).unwrap()
}

fn id(value: &str) -> Id {
    Id::parse(value).unwrap()
}

#[test]
fn every_interaction_shape_parses_to_its_type() {
    use Interaction as I;
    let cases = [
        ("POST", "", I::BatchOrTransaction),
        ("POST", "/", I::BatchOrTransaction),
        ("GET", "metadata", I::Capabilities),
        ("GET", "Patient", I::Search(t("Patient"))),
        ("GET", "Patient/", I::Search(t("Patient"))),
        ("GET", "Patient?name=x", I::Search(t("Patient"))),
        ("POST", "Patient/_search", I::Search(t("Patient"))),
        ("POST", "Patient", I::Create(t("Patient"))),
        (
            "PUT",
            "Patient?identifier=a|b",
            I::ConditionalUpdate(t("Patient")),
        ),
        ("GET", "Patient/_history", I::HistoryType(t("Patient"))),
        ("GET", "Patient/p-1.a", I::Read(t("Patient"), id("p-1.a"))),
        ("PUT", "Patient/p1", I::Update(t("Patient"), id("p1"))),
        ("PATCH", "Patient/p1", I::Patch(t("Patient"), id("p1"))),
        ("DELETE", "Patient/p1", I::Delete(t("Patient"), id("p1"))),
        (
            "GET",
            "Patient/p1/_history",
            I::HistoryInstance(t("Patient"), id("p1")),
        ),
        (
            "GET",
            "Patient/p1/_history/3",
            I::Vread(t("Patient"), id("p1"), id("3")),
        ),
        (
            "GET",
            "Patient/p1/$everything",
            I::Operation(t("Patient"), id("p1"), "everything".into()),
        ),
    ];
    for (method, url, expected) in cases {
        assert_eq!(
            http(method, url).unwrap().interaction,
            expected,
            "{method} {url}"
        );
    }
}

/// Wave 1's lesson: a batch entry is a request like any other. Every shape, good or bad, parses
/// to the same value (or the same error) alone and inside a Bundle.
#[test]
fn alone_and_inside_a_bundle_parse_the_same() {
    let urls = [
        "Patient",
        "Patient?name=a,b&_count=2",
        "Patient/p1",
        "Patient/p1/_history/2",
        "Patient/p1/$everything",
        "Patient/..",
        "Patient/.",
        "Patient/p1/_history/..",
        "Nope/1",
        "Patient/p1/x/y/z",
        "Patient?subject:Patient.name=x",
        "Patient?:a=b",
        "metadata",
        "Observation/_history",
    ];
    for method in ["GET", "POST", "PUT", "PATCH", "DELETE"] {
        for url in urls {
            assert_eq!(http(method, url), entry(method, url), "{method} {url}");
        }
    }
}

#[test]
fn dot_segments_and_bad_ids_are_refused_at_parse_time() {
    assert_eq!(
        http("GET", "Patient/.").unwrap_err(),
        RequestError::InvalidId
    );
    assert_eq!(
        http("GET", "Patient/..").unwrap_err(),
        RequestError::InvalidId
    );
    assert_eq!(
        http("DELETE", "Patient/..").unwrap_err(),
        RequestError::InvalidId
    );
    assert_eq!(
        http("GET", "Patient/p1/_history/..").unwrap_err(),
        RequestError::InvalidVersion
    );
    assert_eq!(
        http("GET", "Patient/a%2Fb").unwrap_err(),
        RequestError::InvalidId
    );
    assert_eq!(
        http("GET", &format!("Patient/{}", "a".repeat(65))).unwrap_err(),
        RequestError::InvalidId
    );
    assert!(http("GET", &format!("Patient/{}", "a".repeat(64))).is_ok());
    assert!(http("GET", "Patient/a..b").is_ok());
}

#[test]
fn unknown_types_paths_and_methods_are_refused() {
    assert_eq!(http("GET", "Nope").unwrap_err(), RequestError::UnknownType);
    assert_eq!(
        http("GET", "Element/1").unwrap_err(),
        RequestError::UnknownType
    );
    assert_eq!(
        http("GET", "Patient/1/x/y/z").unwrap_err(),
        RequestError::UnknownPath
    );
    assert_eq!(
        http("GET", "Patient/1/foo").unwrap_err(),
        RequestError::UnknownPath
    );
    assert_eq!(http("GET", "").unwrap_err(), RequestError::MethodNotAllowed);
    assert_eq!(
        http("DELETE", "Patient").unwrap_err(),
        RequestError::MethodNotAllowed
    );
    assert_eq!(
        http("POST", "Patient/1").unwrap_err(),
        RequestError::MethodNotAllowed
    );
    assert_eq!(
        http("PUT", "Patient").unwrap_err(),
        RequestError::EmptyCondition
    );
    assert_eq!(
        entry("GET", "http://other.example/fhir/Patient/1").unwrap_err(),
        RequestError::AbsoluteEntryUrl
    );
    assert_eq!(
        FhirRequest::from_entry(
            &json!({"request": {"method": "GET"}}),
            Prefer::Unspecified,
            BASE
        )
        .unwrap_err(),
        RequestError::InvalidEntry
    );
    assert_eq!(
        FhirRequest::from_entry(&json!({"resource": {}}), Prefer::Unspecified, BASE).unwrap_err(),
        RequestError::InvalidEntry
    );
}

#[test]
fn search_parameters_split_into_name_modifier_chain_and_values() {
    let request = http(
        "GET",
        "Observation?subject:Patient.name.given=Ann&code=a%5C%2Cb,c&_count=2&&value-quantity:missing=true",
    )
    .unwrap();
    let p = &request.params;
    assert_eq!(p.len(), 4);
    assert_eq!(p[0].name, "subject");
    assert_eq!(p[0].modifier.as_deref(), Some("Patient"));
    assert_eq!(p[0].chain, vec!["name".to_string(), "given".into()]);
    assert!(p[0].is_chained());
    assert_eq!(p[0].key(), "subject:Patient.name.given");
    assert_eq!(p[1].values(), vec!["a,b".to_string(), "c".into()]);
    assert_eq!(p[1].value, "a\\,b,c");
    assert_eq!(p[3].modifier.as_deref(), Some("missing"));
    assert_eq!(
        request.param_pairs()[2],
        ("_count".to_string(), "2".to_string())
    );
    for bad in [
        "Patient?:x=1",
        "Patient?name:=1",
        "Patient?subject.=1",
        "Patient?a..b=1",
    ] {
        assert_eq!(
            http("GET", bad).unwrap_err(),
            RequestError::InvalidParameter,
            "{bad}"
        );
    }
}

#[test]
fn conditions_and_prefer_come_from_headers_or_entry_fields_alike() {
    let headers = |name: &str| match name {
        "if-match" => Some("W/\"3\""),
        "if-none-exist" => Some("identifier=a|b"),
        "prefer" => Some("handling=strict, return=minimal"),
        _ => None,
    };
    let alone = FhirRequest::from_http("POST", "Patient", None, headers, Some(json!({}))).unwrap();
    let inside = FhirRequest::from_entry(
        &json!({"resource": {}, "request": {"method": "POST", "url": "Patient",
            "ifMatch": "W/\"3\"", "ifNoneExist": "identifier=a|b"}}),
        Prefer::Minimal,
        BASE,
    )
    .unwrap();
    assert_eq!(alone, inside);
    assert_eq!(alone.conditions.if_match.as_deref(), Some("W/\"3\""));
    assert_eq!(
        alone.conditions.if_none_exist.as_ref().unwrap()[0].name,
        "identifier"
    );
    assert_eq!(alone.prefer, Prefer::Minimal);
    assert_eq!(
        Prefer::parse("return=representation"),
        Prefer::Representation
    );
    assert_eq!(
        Prefer::parse("return=\"OperationOutcome\""),
        Prefer::OperationOutcome
    );
    assert_eq!(Prefer::parse("respond-async"), Prefer::Unspecified);
}

#[test]
fn the_reference_and_type_of_a_request() {
    let read = http("GET", "Patient/p1/_history/2").unwrap();
    assert_eq!(read.reference().as_deref(), Some("Patient/p1"));
    assert_eq!(
        read.resource_type().map(ResourceType::as_str),
        Some("Patient")
    );
    let batch = http("POST", "").unwrap();
    assert_eq!(batch.reference(), None);
    assert_eq!(batch.resource_type(), None);
}
