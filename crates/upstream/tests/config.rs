//! Configuration parsing and validation: defaults, normalisation, and errors that name the key
//! and never the secret.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::unwrap_in_result)]

use std::io::Write;

use fhirseal_upstream::{ConfigError, RawUpstreamConfig, Upstream, UpstreamConfig};
use serde_json::json;

fn parse(value: serde_json::Value) -> Result<UpstreamConfig, ConfigError> {
    UpstreamConfig::try_from(serde_json::from_value::<RawUpstreamConfig>(value).unwrap())
}

#[test]
fn base_url_is_normalised() {
    for (given, normalised) in [
        ("https://fhir.example/r4/", "https://fhir.example/r4"),
        ("https://fhir.example/r4", "https://fhir.example/r4"),
        ("HTTPS://FHIR.Example:443/r4//", "https://fhir.example/r4"),
        ("http://fhir.example", "http://fhir.example"),
        ("http://127.0.0.1:8080/fhir/", "http://127.0.0.1:8080/fhir"),
    ] {
        let config = parse(json!({ "base_url": given })).unwrap();
        assert_eq!(config.base_url(), normalised, "{given}");
        assert_eq!(Upstream::new(config).unwrap().base(), normalised);
    }
}

#[test]
fn bad_base_urls_are_refused_naming_the_key() {
    for bad in [
        "",
        "fhir.example/r4",
        "/r4",
        "ftp://fhir.example",
        "file:///etc/passwd",
        "http://",
    ] {
        let error = parse(json!({ "base_url": bad })).unwrap_err();
        assert!(
            matches!(error, ConfigError::NotHttpUrl { key: "base_url" }),
            "{bad}: {error:?}"
        );
    }
    for bad in [
        "http://a/fhir?x=1",
        "http://a/fhir?",
        "http://a/fhir#f",
        "http://user:hunter2@a/fhir",
    ] {
        let error = parse(json!({ "base_url": bad })).unwrap_err();
        assert!(
            matches!(error, ConfigError::UrlHasExtraParts { key: "base_url" }),
            "{bad}: {error:?}"
        );
        assert!(error.to_string().contains("base_url"));
        assert!(!error.to_string().contains("hunter2"));
    }
}

#[test]
fn numbers_out_of_range_name_their_key() {
    for (key, value) in [
        ("max_retries", 11),
        ("connect_timeout_ms", 0),
        ("request_timeout_ms", 0),
        ("max_response_bytes", 0),
        ("max_response_bytes", (1 << 30) + 1),
        ("backoff_base_ms", 0),
        ("pool_idle_per_host", 5000),
        ("retry_after_max_ms", 60_001),
    ] {
        let error = parse(json!({ "base_url": "http://a", key: value })).unwrap_err();
        assert!(
            matches!(error, ConfigError::OutOfRange { key: k, .. } if k == key),
            "{key}: {error:?}"
        );
        assert!(error.to_string().contains(key));
    }
    let error =
        parse(json!({ "base_url": "http://a", "backoff_base_ms": 500, "backoff_max_ms": 100 }))
            .unwrap_err();
    assert!(
        matches!(
            error,
            ConfigError::OutOfRange {
                key: "backoff_max_ms",
                min: 500,
                ..
            }
        ),
        "{error:?}"
    );
}

#[test]
fn unknown_keys_are_refused() {
    let error = serde_json::from_value::<RawUpstreamConfig>(
        json!({ "base_url": "http://a", "max_retry": 3 }),
    )
    .unwrap_err();
    assert!(error.to_string().contains("max_retry"), "{error}");
    let error = serde_json::from_value::<RawUpstreamConfig>(json!({
        "base_url": "http://a",
        "auth": { "kind": "bearer", "token": "t", "tokn_file": "/x" },
    }))
    .unwrap_err();
    assert!(error.to_string().contains("tokn_file"), "{error}");
    let error = serde_json::from_value::<RawUpstreamConfig>(
        json!({ "base_url": "http://a", "auth": { "kind": "basic" } }),
    )
    .unwrap_err();
    assert!(error.to_string().contains("basic"), "{error}");
}

#[test]
fn bearer_needs_exactly_one_source() {
    let error = parse(json!({ "base_url": "http://a", "auth": { "kind": "bearer" } })).unwrap_err();
    assert!(
        matches!(error, ConfigError::SecretSourceCount { key: "auth.token" }),
        "{error:?}"
    );
    let error = parse(json!({
        "base_url": "http://a",
        "auth": { "kind": "bearer", "token": "t", "token_env": "HOME" },
    }))
    .unwrap_err();
    assert!(
        matches!(error, ConfigError::SecretSourceCount { key: "auth.token" }),
        "{error:?}"
    );
}

#[test]
fn secrets_are_read_from_files_and_environment() {
    let mut file = tempfile::NamedTempFile::new().unwrap();
    writeln!(file, "file-token").unwrap();
    parse(
        json!({ "base_url": "http://a", "auth": { "kind": "bearer", "token_file": file.path() } }),
    )
    .unwrap();
    // Cargo and nextest both set this variable for test processes.
    assert!(std::env::var("CARGO_PKG_NAME").is_ok());
    parse(json!({ "base_url": "http://a", "auth": { "kind": "bearer", "token_env": "CARGO_PKG_NAME" } })).unwrap();

    let error = parse(json!({
        "base_url": "http://a",
        "auth": { "kind": "bearer", "token_file": "/nonexistent/fhirseal/token" },
    }))
    .unwrap_err();
    assert!(
        matches!(
            error,
            ConfigError::SecretFileUnreadable {
                key: "auth.token",
                ..
            }
        ),
        "{error:?}"
    );
    let error = parse(json!({
        "base_url": "http://a",
        "auth": { "kind": "bearer", "token_env": "FHIRSEAL_SURELY_UNSET_VARIABLE" },
    }))
    .unwrap_err();
    assert!(
        matches!(
            error,
            ConfigError::SecretEnvMissing {
                key: "auth.token",
                ..
            }
        ),
        "{error:?}"
    );

    let mut big = tempfile::NamedTempFile::new().unwrap();
    big.write_all(&vec![b'a'; 70_000]).unwrap();
    let error = parse(json!({
        "base_url": "http://a",
        "auth": { "kind": "client_credentials", "token_url": "http://a/token", "client_id": "gw", "client_secret_file": big.path() },
    }))
    .unwrap_err();
    assert!(
        matches!(
            error,
            ConfigError::SecretFileUnreadable {
                key: "auth.client_secret",
                ..
            }
        ),
        "{error:?}"
    );
}

#[test]
fn malformed_secrets_are_refused_without_echoing_them() {
    for token in ["", "two words", "line\r\nX-Injected: 1", "é-token", "==="] {
        let error =
            parse(json!({ "base_url": "http://a", "auth": { "kind": "bearer", "token": token } }))
                .unwrap_err();
        assert!(
            matches!(error, ConfigError::SecretMalformed { key: "auth.token" }),
            "{token:?}: {error:?}"
        );
        if !token.is_empty() {
            assert!(!error.to_string().contains(token));
            assert!(!format!("{error:?}").contains(token));
        }
    }
    let error = parse(json!({
        "base_url": "http://a",
        "auth": { "kind": "client_credentials", "token_url": "http://a/token", "client_id": "gw", "client_secret": "has space" },
    }))
    .unwrap_err();
    assert!(
        matches!(
            error,
            ConfigError::SecretMalformed {
                key: "auth.client_secret"
            }
        ),
        "{error:?}"
    );
}

#[test]
fn client_credentials_fields_are_checked() {
    let base = |auth: serde_json::Value| parse(json!({ "base_url": "http://a", "auth": auth }));
    let valid = json!({ "kind": "client_credentials", "token_url": "https://as/token", "client_id": "gw", "client_secret": "s" });
    base(valid.clone()).unwrap();

    let mut auth = valid.clone();
    auth["token_url"] = json!("as/token");
    assert!(matches!(
        base(auth).unwrap_err(),
        ConfigError::NotHttpUrl {
            key: "auth.token_url"
        }
    ));
    let mut auth = valid.clone();
    auth["token_url"] = json!("https://as/token#x");
    assert!(matches!(
        base(auth).unwrap_err(),
        ConfigError::UrlHasExtraParts {
            key: "auth.token_url"
        }
    ));
    let mut auth = valid.clone();
    auth["client_id"] = json!("");
    assert!(matches!(
        base(auth).unwrap_err(),
        ConfigError::Malformed {
            key: "auth.client_id"
        }
    ));
    let mut auth = valid.clone();
    auth["scopes"] = json!(["system/*.rs", "two scopes"]);
    assert!(matches!(
        base(auth).unwrap_err(),
        ConfigError::Malformed { key: "auth.scopes" }
    ));
    let mut auth = valid.clone();
    auth.as_object_mut().unwrap().remove("client_secret");
    assert!(matches!(
        base(auth).unwrap_err(),
        ConfigError::SecretSourceCount {
            key: "auth.client_secret"
        }
    ));
    let mut auth = valid;
    auth["auth_style"] = json!("jwt");
    let raw = serde_json::from_value::<RawUpstreamConfig>(
        json!({ "base_url": "http://a", "auth": auth }),
    );
    assert!(raw.is_err());
}
