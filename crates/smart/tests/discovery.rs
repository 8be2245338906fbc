//! The `smart-configuration` derived for an external authorization server.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use fhirseal_smart::discovery::{Discovery, DiscoveryError};
use serde_json::{Value, json};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

fn openid(issuer: &str) -> Value {
    json!({
        "issuer": issuer,
        "authorization_endpoint": format!("{issuer}/protocol/openid-connect/auth"),
        "token_endpoint": format!("{issuer}/protocol/openid-connect/token"),
        "jwks_uri": format!("{issuer}/protocol/openid-connect/certs"),
        "grant_types_supported": ["authorization_code", "refresh_token", "client_credentials"],
        "token_endpoint_auth_methods_supported": ["private_key_jwt", "client_secret_basic"],
        "response_types_supported": ["code"],
        "userinfo_endpoint": format!("{issuer}/userinfo"),
    })
}

#[tokio::test]
async fn the_issuers_openid_document_gives_its_endpoints_and_our_capabilities() {
    let server = MockServer::start().await;
    let issuer = format!("{}/realms/clinic", server.uri());
    Mock::given(method("GET"))
        .and(path("/realms/clinic/.well-known/openid-configuration"))
        .respond_with(ResponseTemplate::new(200).set_body_json(openid(&issuer)))
        .expect(1)
        .mount(&server)
        .await;
    let discovery = Discovery::new(issuer.clone(), reqwest::Client::new());
    let document = discovery.document().await.unwrap();
    assert_eq!(document["issuer"], issuer);
    assert_eq!(
        document["token_endpoint"],
        format!("{issuer}/protocol/openid-connect/token")
    );
    assert_eq!(
        document["code_challenge_methods_supported"],
        json!(["S256"])
    );
    let capabilities = document["capabilities"].as_array().unwrap();
    for wanted in [
        "launch-standalone",
        "permission-v2",
        "client-confidential-asymmetric",
        "client-confidential-symmetric",
    ] {
        assert!(capabilities.iter().any(|c| c == wanted), "{wanted}");
    }
    // Only what SMART defines is copied.
    assert!(document.get("userinfo_endpoint").is_none());
    // Cached: the second call does not fetch again (expect(1)).
    assert_eq!(discovery.document().await.unwrap(), document);
}

#[tokio::test]
async fn a_smart_document_of_the_issuer_is_preferred() {
    let server = MockServer::start().await;
    let issuer = server.uri();
    let mut smart = openid(&issuer);
    smart["token_endpoint_auth_methods_supported"] = json!(["private_key_jwt"]);
    Mock::given(method("GET"))
        .and(path("/.well-known/smart-configuration"))
        .respond_with(ResponseTemplate::new(200).set_body_json(smart))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/.well-known/openid-configuration"))
        .respond_with(ResponseTemplate::new(500))
        .expect(0)
        .mount(&server)
        .await;
    let document = Discovery::new(issuer, reqwest::Client::new())
        .document()
        .await
        .unwrap();
    let capabilities = document["capabilities"].as_array().unwrap();
    assert!(
        !capabilities
            .iter()
            .any(|c| c == "client-confidential-symmetric")
    );
}

#[tokio::test]
async fn a_document_for_another_issuer_or_without_endpoints_is_refused() {
    let server = MockServer::start().await;
    let issuer = server.uri();
    Mock::given(method("GET"))
        .and(path("/.well-known/openid-configuration"))
        .respond_with(ResponseTemplate::new(200).set_body_json(openid("https://evil.example")))
        .mount(&server)
        .await;
    let error = Discovery::new(issuer.clone(), reqwest::Client::new())
        .document()
        .await
        .unwrap_err();
    assert!(matches!(error, DiscoveryError::Unusable(_)), "{error}");

    let other = MockServer::start().await;
    let mut document = openid(&other.uri());
    document["token_endpoint"] = json!("http://tokens.example.org/token");
    Mock::given(method("GET"))
        .and(path("/.well-known/openid-configuration"))
        .respond_with(ResponseTemplate::new(200).set_body_json(document))
        .mount(&other)
        .await;
    let error = Discovery::new(other.uri(), reqwest::Client::new())
        .document()
        .await
        .unwrap_err();
    assert!(matches!(error, DiscoveryError::Unusable(_)), "{error}");
}

#[tokio::test]
async fn unreachable_or_plain_http_issuers_give_no_document() {
    let server = MockServer::start().await;
    let error = Discovery::new(server.uri(), reqwest::Client::new())
        .document()
        .await
        .unwrap_err();
    assert_eq!(error, DiscoveryError::Unavailable);
    let error = Discovery::new("http://login.hospital.example", reqwest::Client::new())
        .document()
        .await
        .unwrap_err();
    assert!(matches!(error, DiscoveryError::NotHttps { .. }));
}
