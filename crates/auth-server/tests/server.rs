//! The embedded authorization server, driven through its router with `oneshot`: the
//! authorization-code flow with PKCE, refresh rotation, SMART Backend Services assertions,
//! introspection, discovery, and the signing key kept in the authority.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test helpers outside #[test] fns

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use argon2::password_hash::SaltString;
use argon2::{Argon2, PasswordHasher};
use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::rsa::{KeyPair as RsaKeyPair, KeySize};
use aws_lc_rs::signature::{
    ECDSA_P384_SHA384_FIXED_SIGNING, EcdsaKeyPair, KeyPair as _, RSA_PKCS1_SHA256,
    RSA_PKCS1_SHA384, RsaPublicKeyComponents,
};
use axum::Router;
use axum::body::{Body, to_bytes};
use axum::http::{HeaderMap, Request, StatusCode, header};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use fhirseal_auth_server::{AuthServer, RawServerConfig, ServerConfig, ServerError, SigningKey};
use fhirseal_authority::{Authority, InitOptions, Kek, store};
use fhirseal_smart::verify::{Verifier, VerifierConfig};
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use rand_core::OsRng;
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};
use tower::ServiceExt as _;

const ISSUER: &str = "http://127.0.0.1:8080/auth";
const FHIR: &str = "http://127.0.0.1:8080/fhir";
const TOKEN_URL: &str = "http://127.0.0.1:8080/auth/token";
const REDIRECT: &str = "http://127.0.0.1:9000/callback";

// === fixtures ===

/// A cheap argon2id hash (tests only: 8 KiB, one pass).
fn hash(password: &str) -> String {
    let params = argon2::Params::new(8, 1, 1, None).unwrap();
    Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params)
        .hash_password(password.as_bytes(), &SaltString::generate(&mut OsRng))
        .unwrap()
        .to_string()
}

/// The backend client's keys: RSA (kid `rsa-1`) and EC P-384 (kid `ec-1`).
struct ClientKeys {
    rsa: RsaKeyPair,
    ec: EcdsaKeyPair,
}

fn client_keys() -> &'static ClientKeys {
    static KEYS: OnceLock<ClientKeys> = OnceLock::new();
    KEYS.get_or_init(|| ClientKeys {
        rsa: RsaKeyPair::generate(KeySize::Rsa2048).unwrap(),
        ec: EcdsaKeyPair::generate(&ECDSA_P384_SHA384_FIXED_SIGNING).unwrap(),
    })
}

fn signing_key() -> SigningKey {
    static DER: OnceLock<Vec<u8>> = OnceLock::new();
    let der = DER.get_or_init(|| {
        RsaKeyPair::generate(KeySize::Rsa2048)
            .unwrap()
            .as_der()
            .unwrap()
            .as_ref()
            .to_vec()
    });
    SigningKey::from_pkcs8(der).unwrap()
}

fn client_jwks() -> Value {
    let keys = client_keys();
    let rsa = RsaPublicKeyComponents::<Vec<u8>>::from(keys.rsa.public_key());
    let point = keys.ec.public_key().as_ref();
    json!({"keys": [
        {"kty": "RSA", "kid": "rsa-1", "alg": "RS384", "use": "sig",
         "n": URL_SAFE_NO_PAD.encode(&rsa.n), "e": URL_SAFE_NO_PAD.encode(&rsa.e)},
        {"kty": "EC", "kid": "ec-1", "crv": "P-384",
         "x": URL_SAFE_NO_PAD.encode(&point[1..49]), "y": URL_SAFE_NO_PAD.encode(&point[49..])}
    ]})
}

fn raw_config(jwks_uri: Option<&str>) -> Value {
    let mut clients = vec![
        json!({
            "client_id": "app", "client_name": "Growth <Chart> & Co",
            "redirect_uris": [REDIRECT], "token_endpoint_auth_method": "none",
            "scope": "openid fhirUser launch/patient patient/*.rs user/*.rs offline_access"
        }),
        json!({
            "client_id": "backend", "client_name": "Nightly export",
            "token_endpoint_auth_method": "private_key_jwt", "jwks": client_jwks(),
            "scope": "system/*.rs system/Observation.cruds"
        }),
    ];
    clients.push(json!({
        "client_id": "confidential", "client_name": "Confidential app",
        "redirect_uris": [REDIRECT], "token_endpoint_auth_method": "private_key_jwt",
        "jwks": client_jwks(), "scope": "openid user/*.rs"
    }));
    if let Some(uri) = jwks_uri {
        clients.push(json!({
            "client_id": "remote", "client_name": "Remote keys",
            "token_endpoint_auth_method": "private_key_jwt", "jwks_uri": uri,
            "scope": "system/Patient.rs"
        }));
    }
    json!({
        "issuer": ISSUER,
        "fhir_base": FHIR,
        "users": [
            {"username": "house", "password_hash": hash("vicodin"), "fhir_user": "Practitioner/dr-house",
             "claims": {"practitioner_roles": [{"code": ["doctor"], "specialty": ["diagnostics"],
                                                 "organization": "Organization/ppth"}]}},
            {"username": "alice", "password_hash": hash("wonderland"), "fhir_user": "Patient/alice-1"}
        ],
        "clients": clients,
    })
}

struct Harness {
    server: Arc<AuthServer>,
}

impl Harness {
    fn new() -> Self {
        Self::with(raw_config(None))
    }

    fn with(raw: Value) -> Self {
        let raw: RawServerConfig = serde_json::from_value(raw).unwrap();
        let config = ServerConfig::try_from(raw).unwrap();
        let server = AuthServer::new(config, signing_key(), reqwest::Client::new()).unwrap();
        Self {
            server: Arc::new(server),
        }
    }

    fn app(&self) -> Router {
        self.server.clone().router()
    }

    async fn send(&self, request: Request<Body>) -> Reply {
        let response = self.app().oneshot(request).await.unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let body = to_bytes(response.into_body(), 1 << 20).await.unwrap();
        Reply {
            status,
            headers,
            body: String::from_utf8(body.to_vec()).unwrap(),
        }
    }

    async fn get(&self, uri: &str) -> Reply {
        self.send(Request::get(uri).body(Body::empty()).unwrap())
            .await
    }

    async fn post(&self, uri: &str, pairs: &[(&str, &str)], extra: &[(&str, &str)]) -> Reply {
        let mut request =
            Request::post(uri).header(header::CONTENT_TYPE, "application/x-www-form-urlencoded");
        for (name, value) in extra {
            request = request.header(*name, *value);
        }
        self.send(request.body(Body::from(form(pairs))).unwrap())
            .await
    }

    /// `GET /authorize` with the usual parameters, `overrides` replacing or removing (empty
    /// value) some.
    async fn authorize(&self, challenge: &str, overrides: &[(&str, &str)]) -> Reply {
        let mut params = vec![
            ("response_type", "code"),
            ("client_id", "app"),
            ("redirect_uri", REDIRECT),
            (
                "scope",
                "openid fhirUser launch/patient patient/*.rs offline_access",
            ),
            ("state", "state-123"),
            ("aud", FHIR),
            ("code_challenge", challenge),
            ("code_challenge_method", "S256"),
            ("nonce", "nonce-9"),
        ];
        for (name, value) in overrides {
            params.retain(|(n, _)| n != name);
            if !value.is_empty() {
                params.push((name, value));
            }
        }
        self.get(&format!("/authorize?{}", form(&params))).await
    }

    /// Submits the login form of `page` (an authorize reply).
    async fn login(&self, page: &Reply, fields: &[(&str, &str)]) -> Reply {
        let token = page.field("request_token");
        let cookie = page.cookie();
        let mut pairs = vec![("request_token", token.as_str())];
        pairs.extend_from_slice(fields);
        self.post("/login", &pairs, &[("cookie", &cookie)]).await
    }

    /// Authorization up to the code: returns the code and the PKCE verifier.
    async fn code(
        &self,
        scope: &str,
        user: &str,
        password: &str,
        patient: Option<&str>,
    ) -> (String, String) {
        let (verifier, challenge) = pkce();
        let page = self.authorize(&challenge, &[("scope", scope)]).await;
        assert_eq!(page.status, StatusCode::OK, "{}", page.body);
        let mut fields = vec![
            ("username", user),
            ("password", password),
            ("action", "allow"),
        ];
        if let Some(patient) = patient {
            fields.push(("patient", patient));
        }
        let reply = self.login(&page, &fields).await;
        assert_eq!(reply.status, StatusCode::SEE_OTHER, "{}", reply.body);
        let location = reply.location();
        assert_eq!(location.query_param("state").as_deref(), Some("state-123"));
        (location.query_param("code").unwrap(), verifier)
    }

    async fn exchange(&self, code: &str, verifier: &str) -> Reply {
        self.post(
            "/token",
            &[
                ("grant_type", "authorization_code"),
                ("code", code),
                ("redirect_uri", REDIRECT),
                ("client_id", "app"),
                ("code_verifier", verifier),
            ],
            &[],
        )
        .await
    }

    async fn backend(&self, assertion: &str, scope: &str) -> Reply {
        self.post(
            "/token",
            &[
                ("grant_type", "client_credentials"),
                (
                    "client_assertion_type",
                    "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
                ),
                ("client_assertion", assertion),
                ("scope", scope),
            ],
            &[],
        )
        .await
    }

    async fn introspect(&self, bearer: &str, token: &str) -> Reply {
        let auth = format!("Bearer {bearer}");
        self.post(
            "/introspect",
            &[("token", token)],
            &[("authorization", &auth)],
        )
        .await
    }
}

#[derive(Debug)]
struct Reply {
    status: StatusCode,
    headers: HeaderMap,
    body: String,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.body))
    }

    /// The `value` of the form input `name`.
    fn field(&self, name: &str) -> String {
        let marker = format!("name=\"{name}\" value=\"");
        let start = self
            .body
            .find(&marker)
            .unwrap_or_else(|| panic!("no {name} in {}", self.body))
            + marker.len();
        let end = self.body[start..].find('"').unwrap() + start;
        self.body[start..end].to_string()
    }

    /// The `name=value` of the login cookie set.
    fn cookie(&self) -> String {
        let set = self.headers[header::SET_COOKIE].to_str().unwrap();
        set.split(';').next().unwrap().to_string()
    }

    fn location(&self) -> url::Url {
        url::Url::parse(self.headers[header::LOCATION].to_str().unwrap()).unwrap()
    }

    /// An RFC 6749 error reply: its `error` code.
    fn error(&self) -> String {
        assert_eq!(self.headers[header::CACHE_CONTROL], "no-store");
        self.json()["error"]
            .as_str()
            .unwrap_or_else(|| panic!("not an error: {}", self.body))
            .to_string()
    }
}

trait QueryParam {
    fn query_param(&self, name: &str) -> Option<String>;
}

impl QueryParam for url::Url {
    fn query_param(&self, name: &str) -> Option<String> {
        self.query_pairs()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.into_owned())
    }
}

fn form(pairs: &[(&str, &str)]) -> String {
    url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(pairs)
        .finish()
}

fn pkce() -> (String, String) {
    let verifier = URL_SAFE_NO_PAD.encode(rand_bytes::<32>());
    let challenge = URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
    (verifier, challenge)
}

fn rand_bytes<const N: usize>() -> [u8; N] {
    let mut bytes = [0u8; N];
    rand_core::RngCore::fill_bytes(&mut OsRng, &mut bytes);
    bytes
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// A client assertion for `backend` signed by `alg` (RS384, ES384, RS256 or HS256) with header
/// fields `header` and claims `claims` merged over the usual ones.
fn assertion(alg: &str, header: Value, claims: Value) -> String {
    let now = unix_now();
    let mut h =
        json!({"alg": alg, "typ": "JWT", "kid": if alg == "ES384" { "ec-1" } else { "rsa-1" }});
    merge(&mut h, header);
    let mut c = json!({
        "iss": "backend", "sub": "backend", "aud": TOKEN_URL,
        "exp": now + 240, "iat": now, "jti": URL_SAFE_NO_PAD.encode(rand_bytes::<16>()),
    });
    merge(&mut c, claims);
    let signed = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(&h).unwrap()),
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(&c).unwrap())
    );
    let keys = client_keys();
    let rng = SystemRandom::new();
    let signature = match alg {
        "RS384" | "RS256" => {
            let padding = if alg == "RS384" {
                &RSA_PKCS1_SHA384
            } else {
                &RSA_PKCS1_SHA256
            };
            let mut sig = vec![0; keys.rsa.public_modulus_len()];
            keys.rsa
                .sign(padding, &rng, signed.as_bytes(), &mut sig)
                .unwrap();
            sig
        }
        "ES384" => keys
            .ec
            .sign(&rng, signed.as_bytes())
            .unwrap()
            .as_ref()
            .to_vec(),
        "HS256" => {
            // The attack: an HMAC keyed with the client's public RSA modulus.
            let rsa = RsaPublicKeyComponents::<Vec<u8>>::from(keys.rsa.public_key());
            let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, &rsa.n);
            aws_lc_rs::hmac::sign(&key, signed.as_bytes())
                .as_ref()
                .to_vec()
        }
        other => panic!("{other}"),
    };
    format!("{signed}.{}", URL_SAFE_NO_PAD.encode(signature))
}

fn merge(target: &mut Value, extra: Value) {
    for (k, v) in extra.as_object().unwrap() {
        if v.is_null() {
            target.as_object_mut().unwrap().remove(k);
        } else {
            target[k] = v.clone();
        }
    }
}

/// Verifies `token` with the server's published JWKS, as a resource server would.
fn verify(jwks: &JwkSet, token: &str, audience: &str) -> Value {
    let header = jsonwebtoken::decode_header(token).unwrap();
    assert_eq!(header.alg, Algorithm::RS256);
    let jwk = jwks
        .find(header.kid.as_deref().unwrap())
        .expect("kid in the JWKS");
    let (signed, signature) = token.rsplit_once('.').unwrap();
    assert!(
        jsonwebtoken::crypto::verify(
            signature,
            signed.as_bytes(),
            &DecodingKey::from_jwk(jwk).unwrap(),
            Algorithm::RS256
        )
        .unwrap(),
        "signature"
    );
    let claims: Value = serde_json::from_slice(
        &URL_SAFE_NO_PAD
            .decode(signed.split_once('.').unwrap().1)
            .unwrap(),
    )
    .unwrap();
    assert_eq!(claims["iss"], ISSUER);
    assert_eq!(claims["aud"], audience);
    claims
}

// === authorization code ===

#[tokio::test]
async fn the_authorization_code_flow_issues_tokens_a_resource_server_accepts() {
    let h = Harness::new();
    let (verifier, challenge) = pkce();
    let page = h.authorize(&challenge, &[]).await;
    assert_eq!(page.status, StatusCode::OK);
    assert_eq!(
        page.headers[header::CONTENT_TYPE],
        "text/html; charset=utf-8"
    );
    assert_eq!(page.headers[header::CACHE_CONTROL], "no-store");
    assert!(
        page.headers[header::SET_COOKIE]
            .to_str()
            .unwrap()
            .contains("HttpOnly; SameSite=Strict")
    );
    assert!(
        page.headers[header::SET_COOKIE]
            .to_str()
            .unwrap()
            .contains("Path=/auth")
    );
    assert!(
        page.body.contains("Growth &lt;Chart&gt; &amp; Co"),
        "client name escaped"
    );
    assert!(
        page.body.contains("<code>patient/*.rs</code>"),
        "scopes listed"
    );
    assert!(
        page.body.contains("name=\"patient\""),
        "a practitioner picks the patient"
    );
    assert!(!page.body.contains("<script"));

    let reply = h
        .login(
            &page,
            &[
                ("username", "house"),
                ("password", "vicodin"),
                ("patient", "p-42"),
                ("action", "allow"),
            ],
        )
        .await;
    assert_eq!(reply.status, StatusCode::SEE_OTHER, "{}", reply.body);
    let location = reply.location();
    assert!(location.as_str().starts_with(REDIRECT));
    assert_eq!(location.query_param("state").as_deref(), Some("state-123"));
    let code = location.query_param("code").unwrap();
    assert_eq!(
        URL_SAFE_NO_PAD.decode(&code).unwrap().len(),
        32,
        "256-bit code"
    );

    let reply = h.exchange(&code, &verifier).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert_eq!(reply.headers[header::CACHE_CONTROL], "no-store");
    let body = reply.json();
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], 3600);
    assert_eq!(
        body["scope"],
        "openid fhirUser launch/patient patient/*.rs offline_access"
    );
    assert_eq!(body["patient"], "p-42");
    assert_eq!(body["need_patient_banner"], true);
    assert!(body["refresh_token"].is_string());

    let jwks = h.server.jwks();
    let access = verify(&jwks, body["access_token"].as_str().unwrap(), FHIR);
    let now = unix_now();
    assert_eq!(access["sub"], "house");
    assert_eq!(access["client_id"], "app");
    assert_eq!(access["fhirUser"], "Practitioner/dr-house");
    assert_eq!(access["patient"], "p-42");
    assert_eq!(access["scope"], body["scope"]);
    assert_eq!(access["practitioner_roles"][0]["code"][0], "doctor");
    let exp = access["exp"].as_u64().unwrap();
    let iat = access["iat"].as_u64().unwrap();
    assert!(iat <= now && iat + 5 >= now && exp == iat + 3600);
    assert!(access["jti"].as_str().unwrap().len() > 30);

    // What the gateway makes of it: its verifier, configured from the server, accepts it.
    let verifier = Verifier::new(
        VerifierConfig::new(vec![h.server.issuer_config()]),
        reqwest::Client::new(),
    )
    .unwrap();
    let verified = verifier
        .verify(body["access_token"].as_str().unwrap())
        .await
        .unwrap();
    assert_eq!(verified.subject.as_deref(), Some("house"));
    let context = &verified.context;
    assert_eq!(context.patient.as_deref(), Some("Patient/p-42"));
    assert_eq!(
        context.principal.fhir_user.as_deref(),
        Some("Practitioner/dr-house")
    );
    assert_eq!(context.principal.client_id.as_deref(), Some("app"));
    assert_eq!(context.principal.practitioner_roles.len(), 1);
    assert_eq!(context.scopes.to_string(), body["scope"].as_str().unwrap());
    // The ID token is not an access token for the FHIR server.
    assert!(
        verifier
            .verify(body["id_token"].as_str().unwrap())
            .await
            .is_err()
    );

    // jsonwebtoken's own validation, as a resource server might use it.
    let mut validation = Validation::new(Algorithm::RS256);
    validation.set_audience(&[FHIR]);
    validation.set_issuer(&[ISSUER]);
    let decoded = jsonwebtoken::decode::<Value>(
        body["access_token"].as_str().unwrap(),
        &DecodingKey::from_jwk(&jwks.keys[0]).unwrap(),
        &validation,
    );
    assert_eq!(decoded.unwrap().claims, access);

    let id = verify(&jwks, body["id_token"].as_str().unwrap(), "app");
    assert_eq!(id["sub"], "house");
    assert_eq!(id["nonce"], "nonce-9");
    assert_eq!(id["fhirUser"], format!("{FHIR}/Practitioner/dr-house"));
}

#[tokio::test]
async fn a_patient_signs_in_to_their_own_record() {
    let h = Harness::new();
    let (code, verifier) = h
        .code(
            "launch/patient patient/Observation.rs",
            "alice",
            "wonderland",
            Some("someone-else"),
        )
        .await;
    let body = h.exchange(&code, &verifier).await.json();
    assert_eq!(body["patient"], "alice-1", "their own, whatever was typed");
    assert!(body.get("id_token").is_none() && body.get("refresh_token").is_none());
    let access = verify(
        &h.server.jwks(),
        body["access_token"].as_str().unwrap(),
        FHIR,
    );
    assert_eq!(access["fhirUser"], "Patient/alice-1");
    assert_eq!(access["patient"], "alice-1");
}

#[tokio::test]
async fn a_practitioner_must_pick_a_patient_for_patient_scopes() {
    let h = Harness::new();
    let (_, challenge) = pkce();
    let page = h.authorize(&challenge, &[]).await;
    for patient in ["", "not an id!"] {
        let reply = h
            .login(
                &page,
                &[
                    ("username", "house"),
                    ("password", "vicodin"),
                    ("patient", patient),
                    ("action", "allow"),
                ],
            )
            .await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST);
        assert!(reply.body.contains("Enter the id of the patient to open."));
    }
    // Without patient scopes, no patient is asked for or put in context.
    let (code, verifier) = h.code("openid user/*.rs", "house", "vicodin", None).await;
    let body = h.exchange(&code, &verifier).await.json();
    assert!(body.get("patient").is_none());
    assert_eq!(body["scope"], "openid user/*.rs");
}

#[tokio::test]
async fn pkce_is_mandatory_and_checked() {
    let h = Harness::new();
    let (_, challenge) = pkce();
    for (overrides, what) in [
        (vec![("code_challenge", "")], "missing challenge"),
        (vec![("code_challenge_method", "plain")], "plain"),
        (
            vec![("code_challenge_method", "")],
            "no method (plain by default)",
        ),
        (vec![("code_challenge", "short")], "malformed challenge"),
    ] {
        let reply = h.authorize(&challenge, &overrides).await;
        assert_eq!(reply.status, StatusCode::SEE_OTHER, "{what}");
        let location = reply.location();
        assert_eq!(
            location.query_param("error").as_deref(),
            Some("invalid_request"),
            "{what}"
        );
        assert_eq!(location.query_param("state").as_deref(), Some("state-123"));
        assert!(location.query_param("code").is_none());
    }

    let (code, verifier) = h.code("user/*.rs", "house", "vicodin", None).await;
    let (other, _) = pkce();
    let reply = h.exchange(&code, &other).await;
    assert_eq!(
        (reply.status, reply.error().as_str()),
        (StatusCode::BAD_REQUEST, "invalid_grant")
    );
    assert!(reply.body.contains("code_verifier does not match"));
    assert!(
        !reply.body.contains(&code) && !reply.body.contains(&other),
        "no secret echoed"
    );
    // The failed attempt spent the code.
    assert_eq!(h.exchange(&code, &verifier).await.error(), "invalid_grant");

    let (code, _) = h.code("user/*.rs", "house", "vicodin", None).await;
    let reply = h
        .post(
            "/token",
            &[
                ("grant_type", "authorization_code"),
                ("code", &code),
                ("redirect_uri", REDIRECT),
                ("client_id", "app"),
            ],
            &[],
        )
        .await;
    assert_eq!(reply.error(), "invalid_request", "no verifier");
}

#[tokio::test]
async fn redirect_uris_match_exactly_and_errors_before_them_are_not_redirected() {
    let h = Harness::new();
    let (_, challenge) = pkce();
    for uri in [
        "http://127.0.0.1:9000/callback/",
        "http://127.0.0.1:9000/callback?x=1",
        "https://evil.example/cb",
        "",
    ] {
        let reply = h.authorize(&challenge, &[("redirect_uri", uri)]).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{uri}");
        assert!(
            reply.headers.get(header::LOCATION).is_none(),
            "never redirected: {uri}"
        );
        assert!(reply.body.contains("redirect URI is not registered"));
    }
    for client in ["nobody", ""] {
        let reply = h.authorize(&challenge, &[("client_id", client)]).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST);
        assert!(reply.headers.get(header::LOCATION).is_none());
        assert!(reply.body.contains("not registered here"));
    }
    // Repeated parameters: refused outright.
    let reply = h
        .get(&format!(
            "/authorize?client_id=app&client_id=app&redirect_uri={}",
            form(&[("", REDIRECT)]).trim_start_matches('=')
        ))
        .await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);

    // At the token endpoint: the redirect URI must be the authorization request's.
    let (code, verifier) = h.code("user/*.rs", "house", "vicodin", None).await;
    let reply = h
        .post(
            "/token",
            &[
                ("grant_type", "authorization_code"),
                ("code", &code),
                ("redirect_uri", "http://127.0.0.1:9000/other"),
                ("client_id", "app"),
                ("code_verifier", &verifier),
            ],
            &[],
        )
        .await;
    assert_eq!(reply.error(), "invalid_grant");
}

#[tokio::test]
async fn aud_state_scope_and_launch_are_checked() {
    let h = Harness::new();
    let (_, challenge) = pkce();
    let cases: [(&[(&str, &str)], &str); 8] = [
        (
            &[("aud", "http://127.0.0.1:8080/other-fhir")],
            "invalid_request",
        ),
        (&[("aud", "")], "invalid_request"),
        (&[("state", "")], "invalid_request"),
        (&[("response_type", "token")], "unsupported_response_type"),
        (&[("launch", "xyz")], "invalid_request"),
        (&[("scope", "launch patient/*.rs")], "invalid_scope"),
        (&[("scope", "system/*.rs")], "invalid_scope"),
        (&[("scope", "patient/Observation.dus")], "invalid_scope"),
    ];
    for (overrides, error) in cases {
        let reply = h.authorize(&challenge, overrides).await;
        assert_eq!(reply.status, StatusCode::SEE_OTHER, "{overrides:?}");
        assert_eq!(
            reply.location().query_param("error").as_deref(),
            Some(error),
            "{overrides:?}"
        );
    }
    // Scopes beyond the client's allowance are dropped; nothing left is refused.
    let page = h
        .authorize(
            &challenge,
            &[("scope", "user/*.rs user/*.cruds patient/Patient.c")],
        )
        .await;
    assert!(page.body.contains("<code>user/*.rs</code>") && !page.body.contains("cruds"));
    let reply = h.authorize(&challenge, &[("scope", "user/*.cruds")]).await;
    assert_eq!(
        reply.location().query_param("error").as_deref(),
        Some("invalid_scope")
    );
}

#[tokio::test]
async fn a_code_is_single_use_and_its_replay_revokes_what_it_gave() {
    let h = Harness::new();
    let (code, verifier) = h
        .code(
            "openid launch/patient patient/*.rs offline_access",
            "alice",
            "wonderland",
            None,
        )
        .await;
    let first = h.exchange(&code, &verifier).await.json();
    let access = first["access_token"].as_str().unwrap();
    assert_eq!(h.introspect(access, access).await.json()["active"], true);

    let reply = h.exchange(&code, &verifier).await;
    assert_eq!(
        (reply.status, reply.error().as_str()),
        (StatusCode::BAD_REQUEST, "invalid_grant")
    );
    assert!(reply.body.contains("already used"));
    // RFC 6749 §4.1.2: what was issued from the code is revoked.
    let refresh = h
        .post(
            "/token",
            &[
                ("grant_type", "refresh_token"),
                ("refresh_token", first["refresh_token"].as_str().unwrap()),
                ("client_id", "app"),
            ],
            &[],
        )
        .await;
    assert_eq!(refresh.error(), "invalid_grant");
    let other = h.code("user/*.rs", "house", "vicodin", None).await;
    let other = h.exchange(&other.0, &other.1).await.json();
    let bearer = other["access_token"].as_str().unwrap();
    assert_eq!(
        h.introspect(bearer, access).await.json(),
        json!({"active": false})
    );
}

#[tokio::test]
async fn an_expired_code_is_refused() {
    let mut raw = raw_config(None);
    raw["code_lifetime_seconds"] = json!(1);
    let h = Harness::with(raw);
    let (code, verifier) = h.code("user/*.rs", "house", "vicodin", None).await;
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let reply = h.exchange(&code, &verifier).await;
    assert_eq!(reply.error(), "invalid_grant");
    assert!(reply.body.contains("unknown or expired"));
}

#[tokio::test]
async fn wrong_credentials_show_one_generic_error_and_are_limited() {
    let h = Harness::new();
    let (_, challenge) = pkce();
    let page = h.authorize(&challenge, &[("scope", "user/*.rs")]).await;
    let wrong_password = h
        .login(
            &page,
            &[
                ("username", "house"),
                ("password", "nope"),
                ("action", "allow"),
            ],
        )
        .await;
    let unknown_user = h
        .login(
            &page,
            &[
                ("username", "nobody"),
                ("password", "vicodin"),
                ("action", "allow"),
            ],
        )
        .await;
    for reply in [&wrong_password, &unknown_user] {
        assert_eq!(reply.status, StatusCode::BAD_REQUEST);
        assert!(reply.body.contains("Wrong user name or password."));
        assert!(reply.headers.get(header::LOCATION).is_none());
    }
    assert_eq!(
        wrong_password.body.replace("house", "USER"),
        unknown_user.body.replace("nobody", "USER"),
        "no user enumeration"
    );
    // The form still works after a failure, until five failures in all.
    for _ in 0..2 {
        let reply = h
            .login(
                &page,
                &[
                    ("username", "house"),
                    ("password", "nope"),
                    ("action", "allow"),
                ],
            )
            .await;
        assert!(reply.body.contains("Wrong user name or password."));
    }
    let reply = h
        .login(
            &page,
            &[
                ("username", "house"),
                ("password", "nope"),
                ("action", "allow"),
            ],
        )
        .await;
    assert!(reply.body.contains("Too many failed sign-in attempts"));
    let reply = h
        .login(
            &page,
            &[
                ("username", "house"),
                ("password", "vicodin"),
                ("action", "allow"),
            ],
        )
        .await;
    assert!(
        reply.body.contains("unknown or has expired"),
        "the request is gone"
    );
}

#[tokio::test]
async fn the_login_form_is_bound_to_its_browser_and_single_use() {
    let h = Harness::new();
    let (_, challenge) = pkce();
    let page = h.authorize(&challenge, &[("scope", "user/*.rs")]).await;
    let token = page.field("request_token");
    let fields = [
        ("request_token", token.as_str()),
        ("username", "house"),
        ("password", "vicodin"),
        ("action", "allow"),
    ];
    for cookie in [None, Some("fhirseal_login=forged")] {
        let extra: Vec<(&str, &str)> = cookie.map(|c| ("cookie", c)).into_iter().collect();
        let reply = h.post("/login", &fields, &extra).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "cookie {cookie:?}");
        assert!(reply.headers.get(header::LOCATION).is_none());
    }
    let reply = h.login(&page, &fields[1..]).await;
    assert_eq!(reply.status, StatusCode::SEE_OTHER);
    let again = h.login(&page, &fields[1..]).await;
    assert_eq!(again.status, StatusCode::BAD_REQUEST, "single use");
}

#[tokio::test]
async fn the_user_may_deny() {
    let h = Harness::new();
    let (_, challenge) = pkce();
    let page = h.authorize(&challenge, &[]).await;
    let reply = h.login(&page, &[("action", "deny")]).await;
    assert_eq!(reply.status, StatusCode::SEE_OTHER);
    let location = reply.location();
    assert_eq!(
        location.query_param("error").as_deref(),
        Some("access_denied")
    );
    assert_eq!(location.query_param("state").as_deref(), Some("state-123"));
    assert!(location.query_param("code").is_none());
}

#[tokio::test]
async fn hostile_values_are_escaped_on_the_page_and_encoded_in_the_redirect() {
    let h = Harness::new();
    let (verifier, challenge) = pkce();
    let hostile = "\"><script>alert(1)</script><x a='";
    let page = h
        .authorize(&challenge, &[("state", hostile), ("scope", "user/*.rs")])
        .await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(
        !page.body.contains("<script>") && !page.body.contains("alert(1)</script>"),
        "{}",
        page.body
    );
    assert!(
        page.headers[header::CONTENT_SECURITY_POLICY]
            .to_str()
            .unwrap()
            .contains("default-src 'none'")
    );
    // A hostile user name is echoed escaped on the retry page.
    let reply = h
        .login(
            &page,
            &[
                ("username", hostile),
                ("password", "x"),
                ("action", "allow"),
            ],
        )
        .await;
    assert!(!reply.body.contains("<script>"), "{}", reply.body);
    assert!(
        reply
            .body
            .contains("&quot;&gt;&lt;script&gt;alert(1)&lt;/script&gt;&lt;x a=&#39;")
    );
    let reply = h
        .login(
            &page,
            &[
                ("username", "house"),
                ("password", "vicodin"),
                ("action", "allow"),
            ],
        )
        .await;
    let location = reply.location();
    assert_eq!(location.query_param("state").as_deref(), Some(hostile));
    assert!(
        !reply.headers[header::LOCATION]
            .to_str()
            .unwrap()
            .contains('<')
    );
    let code = location.query_param("code").unwrap();
    assert_eq!(h.exchange(&code, &verifier).await.status, StatusCode::OK);
}

#[tokio::test]
async fn the_authorization_request_may_be_posted() {
    let h = Harness::new();
    let (verifier, challenge) = pkce();
    let page = h
        .post(
            "/authorize",
            &[
                ("response_type", "code"),
                ("client_id", "app"),
                ("redirect_uri", REDIRECT),
                ("scope", "user/*.rs"),
                ("state", "state-123"),
                ("aud", FHIR),
                ("code_challenge", &challenge),
                ("code_challenge_method", "S256"),
            ],
            &[],
        )
        .await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    let reply = h
        .login(
            &page,
            &[
                ("username", "house"),
                ("password", "vicodin"),
                ("action", "allow"),
            ],
        )
        .await;
    let code = reply.location().query_param("code").unwrap();
    assert_eq!(h.exchange(&code, &verifier).await.status, StatusCode::OK);
}

#[tokio::test]
async fn a_confidential_app_authenticates_its_code_exchange_with_an_assertion() {
    let h = Harness::new();
    let (verifier, challenge) = pkce();
    let page = h
        .authorize(
            &challenge,
            &[("client_id", "confidential"), ("scope", "openid user/*.rs")],
        )
        .await;
    assert!(page.body.contains("Confidential app"));
    let reply = h
        .login(
            &page,
            &[
                ("username", "house"),
                ("password", "vicodin"),
                ("action", "allow"),
            ],
        )
        .await;
    let code = reply.location().query_param("code").unwrap();
    let exchange = |client_auth: Vec<(&'static str, String)>| {
        let (h, code, verifier) = (&h, code.clone(), verifier.clone());
        async move {
            let mut pairs = vec![
                ("grant_type", "authorization_code".to_string()),
                ("code", code),
                ("redirect_uri", REDIRECT.to_string()),
                ("code_verifier", verifier),
            ];
            pairs.extend(client_auth);
            let pairs: Vec<(&str, &str)> = pairs.iter().map(|(n, v)| (*n, v.as_str())).collect();
            h.post("/token", &pairs, &[]).await
        }
    };
    // By client_id alone, as if it were public: refused, and the code is not spent.
    let reply = exchange(vec![("client_id", "confidential".to_string())]).await;
    assert_eq!(
        (reply.status, reply.error().as_str()),
        (StatusCode::UNAUTHORIZED, "invalid_client")
    );
    let signed = |iss: &str| assertion("ES384", json!({}), json!({"iss": iss, "sub": iss}));
    let with = |jwt: String| {
        vec![
            (
                "client_assertion_type",
                "urn:ietf:params:oauth:client-assertion-type:jwt-bearer".to_string(),
            ),
            ("client_assertion", jwt),
        ]
    };
    // Another registered client's valid assertion: authenticated, but not the code's client.
    let reply = exchange(with(signed("backend"))).await;
    assert_eq!(reply.error(), "invalid_grant");
    let page = h
        .authorize(
            &challenge,
            &[("client_id", "confidential"), ("scope", "openid user/*.rs")],
        )
        .await;
    let reply = h
        .login(
            &page,
            &[
                ("username", "house"),
                ("password", "vicodin"),
                ("action", "allow"),
            ],
        )
        .await;
    let code = reply.location().query_param("code").unwrap();
    let mut pairs = vec![
        ("grant_type", "authorization_code".to_string()),
        ("code", code),
        ("redirect_uri", REDIRECT.to_string()),
        ("code_verifier", verifier.clone()),
    ];
    pairs.extend(with(signed("confidential")));
    let pairs: Vec<(&str, &str)> = pairs.iter().map(|(n, v)| (*n, v.as_str())).collect();
    let reply = h.post("/token", &pairs, &[]).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    let body = reply.json();
    let access = verify(
        &h.server.jwks(),
        body["access_token"].as_str().unwrap(),
        FHIR,
    );
    assert_eq!(access["client_id"], "confidential");
    assert_eq!(
        verify(
            &h.server.jwks(),
            body["id_token"].as_str().unwrap(),
            "confidential"
        )["sub"],
        "house"
    );
}

// === refresh ===

#[tokio::test]
async fn refresh_tokens_rotate_narrow_and_a_replay_revokes_the_grant() {
    let h = Harness::new();
    let (code, verifier) = h
        .code(
            "launch/patient patient/*.rs user/*.rs offline_access",
            "house",
            "vicodin",
            Some("p-1"),
        )
        .await;
    let first = h.exchange(&code, &verifier).await.json();
    let old = first["refresh_token"].as_str().unwrap().to_string();
    let refresh = |token: String, scope: Option<&'static str>, client: &'static str| {
        let h = &h;
        async move {
            let mut pairs = vec![
                ("grant_type", "refresh_token"),
                ("refresh_token", token.as_str()),
                ("client_id", client),
            ];
            if let Some(scope) = scope {
                pairs.push(("scope", scope));
            }
            h.post("/token", &pairs, &[]).await
        }
    };
    // Widening is refused and spends nothing.
    let reply = refresh(old.clone(), Some("user/*.cruds offline_access"), "app").await;
    assert_eq!(reply.error(), "invalid_scope");
    // Another client cannot use it.
    let reply = refresh(old.clone(), None, "backend").await;
    assert_eq!(
        reply.error(),
        "invalid_client",
        "backend authenticates with an assertion"
    );

    let second = refresh(
        old.clone(),
        Some("patient/Observation.rs offline_access"),
        "app",
    )
    .await;
    assert_eq!(second.status, StatusCode::OK, "{}", second.body);
    let second = second.json();
    assert_eq!(second["scope"], "patient/Observation.rs offline_access");
    assert_eq!(second["patient"], "p-1");
    let new = second["refresh_token"].as_str().unwrap().to_string();
    assert_ne!(new, old);
    let access = verify(
        &h.server.jwks(),
        second["access_token"].as_str().unwrap(),
        FHIR,
    );
    assert_eq!(access["scope"], "patient/Observation.rs offline_access");

    // The old one is spent; presenting it again revokes the grant, the new one included.
    let reply = refresh(old, None, "app").await;
    assert_eq!(reply.error(), "invalid_grant");
    let reply = refresh(new, None, "app").await;
    assert_eq!(reply.error(), "invalid_grant");
    let bearer = first["access_token"].as_str().unwrap();
    let other = h.code("user/*.rs", "house", "vicodin", None).await;
    let other = h.exchange(&other.0, &other.1).await.json();
    assert_eq!(
        h.introspect(other["access_token"].as_str().unwrap(), bearer)
            .await
            .json()["active"],
        false
    );
}

// === backend services ===

#[tokio::test]
async fn backend_services_authenticate_with_rs384_or_es384_assertions() {
    let h = Harness::new();
    for alg in ["RS384", "ES384"] {
        let reply = h
            .backend(
                &assertion(alg, json!({}), json!({})),
                "system/Observation.rs system/Patient.rs",
            )
            .await;
        assert_eq!(reply.status, StatusCode::OK, "{alg}: {}", reply.body);
        let body = reply.json();
        assert_eq!(body["expires_in"], 300);
        assert_eq!(body["scope"], "system/Observation.rs system/Patient.rs");
        assert!(body.get("refresh_token").is_none() && body.get("patient").is_none());
        let access = verify(
            &h.server.jwks(),
            body["access_token"].as_str().unwrap(),
            FHIR,
        );
        assert_eq!(access["sub"], "backend");
        assert_eq!(access["client_id"], "backend");
        assert!(access.get("patient").is_none() && access.get("fhirUser").is_none());
        assert_eq!(
            access["exp"].as_u64().unwrap(),
            access["iat"].as_u64().unwrap() + 300
        );
    }
    // Scopes: system/ only, within the allowance.
    let reply = h
        .backend(&assertion("RS384", json!({}), json!({})), "patient/*.rs")
        .await;
    assert_eq!(reply.error(), "invalid_scope");
    let reply = h
        .backend(
            &assertion("RS384", json!({}), json!({})),
            "system/Patient.cruds",
        )
        .await;
    assert_eq!(reply.error(), "invalid_scope", "beyond the allowance");
}

#[tokio::test]
async fn bad_assertions_are_refused_with_invalid_client() {
    let h = Harness::new();
    let now = unix_now();
    let cases = [
        (
            "HS256 keyed with the public key",
            assertion("HS256", json!({}), json!({})),
        ),
        (
            "RS256 (not advertised)",
            assertion("RS256", json!({}), json!({})),
        ),
        (
            "unregistered kid",
            assertion("RS384", json!({"kid": "rsa-2"}), json!({})),
        ),
        (
            "EC kid with RS384",
            assertion("RS384", json!({"kid": "ec-1"}), json!({})),
        ),
        (
            "no kid",
            assertion("RS384", json!({"kid": null}), json!({})),
        ),
        (
            "jku not registered",
            assertion(
                "RS384",
                json!({"jku": "https://evil.example/jwks.json"}),
                json!({}),
            ),
        ),
        (
            "exp too far ahead",
            assertion("RS384", json!({}), json!({"exp": now + 3600})),
        ),
        (
            "expired",
            assertion("RS384", json!({}), json!({"exp": now - 120})),
        ),
        (
            "no exp",
            assertion("RS384", json!({}), json!({"exp": null})),
        ),
        (
            "wrong aud",
            assertion("RS384", json!({}), json!({"aud": FHIR})),
        ),
        (
            "sub is not the client",
            assertion("RS384", json!({}), json!({"sub": "someone"})),
        ),
        (
            "unknown issuer",
            assertion(
                "RS384",
                json!({}),
                json!({"iss": "nobody", "sub": "nobody"}),
            ),
        ),
        (
            "public client as issuer",
            assertion("RS384", json!({}), json!({"iss": "app", "sub": "app"})),
        ),
        (
            "no jti",
            assertion("RS384", json!({}), json!({"jti": null})),
        ),
        (
            "crit header",
            assertion("RS384", json!({"crit": ["exp"]}), json!({})),
        ),
        (
            "iat in the future",
            assertion("RS384", json!({}), json!({"iat": now + 200})),
        ),
    ];
    for (what, jwt) in cases {
        let reply = h.backend(&jwt, "system/Patient.rs").await;
        assert_eq!(
            (reply.status, reply.error().as_str()),
            (StatusCode::UNAUTHORIZED, "invalid_client"),
            "{what}: {}",
            reply.body
        );
    }
    // A tampered signature.
    let good = assertion("RS384", json!({}), json!({}));
    let (signed, _) = good.rsplit_once('.').unwrap();
    let forged = assertion(
        "RS384",
        json!({}),
        json!({"sub": "backend", "iss": "backend"}),
    );
    let reply = h
        .backend(
            &format!("{signed}.{}", forged.rsplit_once('.').unwrap().1),
            "system/Patient.rs",
        )
        .await;
    assert_eq!(reply.error(), "invalid_client");
    // The wrong assertion type.
    let reply = h
        .post(
            "/token",
            &[
                ("grant_type", "client_credentials"),
                ("client_assertion_type", "urn:other"),
                ("client_assertion", &good),
                ("scope", "system/Patient.rs"),
            ],
            &[],
        )
        .await;
    assert_eq!(reply.error(), "invalid_client");
    // The untampered one still works: the refusals above did not spend its jti.
    assert_eq!(
        h.backend(&good, "system/Patient.rs").await.status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn a_replayed_jti_is_refused() {
    let h = Harness::new();
    let jwt = assertion("ES384", json!({}), json!({}));
    assert_eq!(
        h.backend(&jwt, "system/Patient.rs").await.status,
        StatusCode::OK
    );
    let reply = h.backend(&jwt, "system/Patient.rs").await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    assert_eq!(reply.error(), "invalid_client");
    assert!(reply.body.contains("jti was already used"));
    let challenge = reply.headers[header::WWW_AUTHENTICATE].to_str().unwrap();
    assert!(
        challenge.contains("error=\"invalid_client\"")
            && challenge.contains("jti was already used"),
        "{challenge}"
    );
    // The same jti in a fresh assertion too.
    let first = assertion("RS384", json!({}), json!({"jti": "fixed-jti"}));
    let second = assertion(
        "RS384",
        json!({}),
        json!({"jti": "fixed-jti", "iat": unix_now() - 1}),
    );
    assert_eq!(
        h.backend(&first, "system/Patient.rs").await.status,
        StatusCode::OK
    );
    assert_eq!(
        h.backend(&second, "system/Patient.rs").await.error(),
        "invalid_client"
    );
}

#[tokio::test]
async fn keys_published_at_a_jwks_uri_are_fetched_cached_and_jku_must_match() {
    use wiremock::matchers::{method, path};
    use wiremock::{Mock, MockServer, ResponseTemplate};

    let mock = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/jwks.json"))
        .respond_with(ResponseTemplate::new(200).set_body_json(client_jwks()))
        .expect(1)
        .mount(&mock)
        .await;
    let uri = format!("{}/jwks.json", mock.uri());
    let h = Harness::with(raw_config(Some(&uri)));
    let remote =
        |header: Value| assertion("RS384", header, json!({"iss": "remote", "sub": "remote"}));
    for header in [json!({}), json!({"jku": uri})] {
        let reply = h.backend(&remote(header), "system/Patient.rs").await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    }
    let reply = h
        .backend(
            &remote(json!({"jku": format!("{}/other.json", mock.uri())})),
            "system/Patient.rs",
        )
        .await;
    assert_eq!(reply.error(), "invalid_client");
    // An unknown kid right after a fetch does not fetch again (the mock expects one request).
    let reply = h
        .backend(&remote(json!({"kid": "rsa-9"})), "system/Patient.rs")
        .await;
    assert_eq!(reply.error(), "invalid_client");
    // A client with keys by value may not point elsewhere with jku.
    let reply = h
        .backend(
            &assertion("RS384", json!({"jku": uri}), json!({})),
            "system/Patient.rs",
        )
        .await;
    assert_eq!(reply.error(), "invalid_client");
}

// === introspection and discovery ===

#[tokio::test]
async fn introspection_answers_active_or_inactive_to_authenticated_callers() {
    let h = Harness::new();
    let (code, verifier) = h
        .code(
            "openid fhirUser launch/patient patient/*.rs",
            "alice",
            "wonderland",
            None,
        )
        .await;
    let user = h.exchange(&code, &verifier).await.json();
    let user_token = user["access_token"].as_str().unwrap();
    let backend = h
        .backend(
            &assertion("RS384", json!({}), json!({})),
            "system/Patient.rs",
        )
        .await
        .json();
    let backend_token = backend["access_token"].as_str().unwrap();

    let reply = h.introspect(backend_token, user_token).await;
    assert_eq!(reply.status, StatusCode::OK);
    let answer = reply.json();
    assert_eq!(answer["active"], true);
    assert_eq!(
        answer["scope"],
        "openid fhirUser launch/patient patient/*.rs"
    );
    assert_eq!(answer["client_id"], "app");
    assert_eq!(answer["sub"], "alice");
    assert_eq!(answer["iss"], ISSUER);
    assert_eq!(answer["fhirUser"], "Patient/alice-1");
    assert_eq!(answer["patient"], "alice-1");
    assert!(answer["exp"].as_u64().unwrap() > unix_now());

    // Inactive: garbage, an ID token, a refresh-like string, a token signed by another key.
    let other_key = AuthServer::new(
        ServerConfig::try_from(
            serde_json::from_value::<RawServerConfig>(raw_config(None)).unwrap(),
        )
        .unwrap(),
        SigningKey::generate().unwrap(),
        reqwest::Client::new(),
    )
    .unwrap();
    let other = Harness {
        server: Arc::new(other_key),
    };
    let foreign = other
        .backend(
            &assertion("RS384", json!({}), json!({})),
            "system/Patient.rs",
        )
        .await
        .json();
    for token in [
        "garbage",
        user["id_token"].as_str().unwrap(),
        foreign["access_token"].as_str().unwrap(),
        &user_token[..user_token.len() - 2],
    ] {
        assert_eq!(
            h.introspect(backend_token, token).await.json(),
            json!({"active": false})
        );
    }

    // The caller must authenticate.
    let reply = h.post("/introspect", &[("token", user_token)], &[]).await;
    assert_eq!(
        (reply.status, reply.error().as_str()),
        (StatusCode::UNAUTHORIZED, "invalid_token")
    );
    assert!(
        reply.headers[header::WWW_AUTHENTICATE]
            .to_str()
            .unwrap()
            .starts_with("Bearer")
    );
    let reply = h.introspect("garbage", user_token).await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    let reply = h
        .introspect(foreign["access_token"].as_str().unwrap(), user_token)
        .await;
    assert_eq!(
        reply.status,
        StatusCode::UNAUTHORIZED,
        "another server's token"
    );
    // ... or with a client assertion.
    let reply = h
        .post(
            "/introspect",
            &[
                ("token", user_token),
                (
                    "client_assertion_type",
                    "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
                ),
                (
                    "client_assertion",
                    &assertion("ES384", json!({}), json!({})),
                ),
            ],
            &[],
        )
        .await;
    assert_eq!(reply.json()["active"], true);
}

#[tokio::test]
async fn the_smart_configuration_says_what_is_enforced() {
    let h = Harness::new();
    let c = h.server.smart_configuration();
    assert_eq!(c["issuer"], ISSUER);
    assert_eq!(c["jwks_uri"], format!("{ISSUER}/jwks"));
    assert_eq!(c["authorization_endpoint"], format!("{ISSUER}/authorize"));
    assert_eq!(c["token_endpoint"], TOKEN_URL);
    assert_eq!(c["introspection_endpoint"], format!("{ISSUER}/introspect"));
    assert_eq!(
        c["grant_types_supported"],
        json!(["authorization_code", "client_credentials", "refresh_token"])
    );
    assert_eq!(
        c["token_endpoint_auth_methods_supported"],
        json!(["private_key_jwt"])
    );
    assert_eq!(
        c["token_endpoint_auth_signing_alg_values_supported"],
        json!(["RS384", "ES384"])
    );
    assert_eq!(c["response_types_supported"], json!(["code"]));
    assert_eq!(c["code_challenge_methods_supported"], json!(["S256"]));
    assert_eq!(
        c["capabilities"],
        json!([
            "launch-standalone",
            "authorize-post",
            "client-public",
            "client-confidential-asymmetric",
            "sso-openid-connect",
            "context-standalone-patient",
            "permission-offline",
            "permission-patient",
            "permission-user",
            "permission-v1",
            "permission-v2"
        ])
    );
    let scopes: Vec<&str> = c["scopes_supported"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap())
        .collect();
    for scope in [
        "openid",
        "fhirUser",
        "launch/patient",
        "offline_access",
        "patient/*.rs",
        "user/*.rs",
        "system/*.rs",
    ] {
        assert!(scopes.contains(&scope), "{scope}");
    }
    assert!(!scopes.contains(&"launch"));

    let jwks = h.get("/jwks").await.json();
    let key = &jwks["keys"][0];
    assert_eq!(
        (
            key["kty"].as_str(),
            key["use"].as_str(),
            key["alg"].as_str()
        ),
        (Some("RSA"), Some("sig"), Some("RS256"))
    );
    assert_eq!(
        key["kid"],
        h.server.jwks().keys[0].common.key_id.clone().unwrap()
    );
    assert!(
        key.get("d").is_none() && key.get("p").is_none(),
        "public only"
    );
    let discovery = h.get("/.well-known/openid-configuration").await.json();
    assert_eq!(discovery["issuer"], ISSUER);
    assert_eq!(
        discovery["id_token_signing_alg_values_supported"],
        json!(["RS256"])
    );
    let config = h.server.issuer_config();
    assert_eq!(config.issuer, ISSUER);
    assert_eq!(config.audience, vec![FHIR.to_string()]);
    assert_eq!(config.algorithms, vec![Algorithm::RS256]);
}

#[tokio::test]
async fn token_requests_must_be_forms_with_known_grants() {
    let h = Harness::new();
    let reply = h
        .send(
            Request::post("/token")
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from("{}"))
                .unwrap(),
        )
        .await;
    assert_eq!(reply.error(), "invalid_request");
    assert_eq!(
        h.post("/token", &[("grant_type", "password")], &[])
            .await
            .error(),
        "unsupported_grant_type"
    );
    assert_eq!(h.post("/token", &[], &[]).await.error(), "invalid_request");
    let reply = h
        .send(
            Request::post("/token")
                .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
                .body(Body::from(
                    "grant_type=refresh_token&grant_type=refresh_token",
                ))
                .unwrap(),
        )
        .await;
    assert_eq!(reply.error(), "invalid_request", "repeated parameter");
    let reply = h
        .post(
            "/token",
            &[
                ("grant_type", "authorization_code"),
                ("code", "x"),
                ("redirect_uri", REDIRECT),
                ("client_id", "nobody"),
                ("code_verifier", "x"),
            ],
            &[],
        )
        .await;
    assert_eq!(
        (reply.status, reply.error().as_str()),
        (StatusCode::UNAUTHORIZED, "invalid_client")
    );
    let reply = h
        .post(
            "/token",
            &[
                ("grant_type", "authorization_code"),
                ("code", "x"),
                ("redirect_uri", REDIRECT),
                ("client_id", "app"),
                ("code_verifier", "x"),
                ("client_secret", "s"),
            ],
            &[],
        )
        .await;
    assert_eq!(reply.error(), "invalid_client", "no client secrets");
    let reply = h
        .post(
            "/token",
            &[
                ("grant_type", "client_credentials"),
                ("client_id", "app"),
                ("scope", "system/Patient.rs"),
            ],
            &[],
        )
        .await;
    assert_eq!(
        reply.error(),
        "invalid_client",
        "a public client has no backend access"
    );
}

// === configuration and keys ===

#[test]
fn configuration_errors_name_the_key() {
    let with = |edit: &dyn Fn(&mut Value)| {
        let mut raw = raw_config(None);
        edit(&mut raw);
        match serde_json::from_value::<RawServerConfig>(raw) {
            Err(e) => e.to_string(),
            Ok(raw) => match ServerConfig::try_from(raw) {
                Err(ServerError::InvalidConfig { key, .. }) => key,
                other => panic!("{other:?}"),
            },
        }
    };
    assert!(with(&|r| r["colour"] = json!("blue")).contains("unknown field `colour`"));
    assert!(with(&|r| r["clients"][0]["secret"] = json!("x")).contains("unknown field `secret`"));
    assert_eq!(with(&|r| r["issuer"] = json!("not a url")), "issuer");
    assert_eq!(
        with(&|r| r["fhir_base"] = json!("http://h/fhir?x=1")),
        "fhir_base"
    );
    assert_eq!(
        with(&|r| r["code_lifetime_seconds"] = json!(0)),
        "code_lifetime_seconds"
    );
    assert_eq!(
        with(&|r| r["users"][1]["username"] = json!("house")),
        "users[1].username"
    );
    assert_eq!(
        with(&|r| r["users"][0]["password_hash"] = json!("hunter2")),
        "users[0].password_hash"
    );
    assert_eq!(
        with(&|r| r["users"][0]["fhir_user"] = json!("Organization/x")),
        "users[0].fhir_user"
    );
    assert_eq!(
        with(&|r| r["users"][1]["patient"] = json!("bob")),
        "users[1].patient"
    );
    // FHIR's id syntax, less `.` and `..`, which would name the type or the base in a URL.
    assert_eq!(
        with(&|r| r["users"][0]["fhir_user"] = json!("Practitioner/..")),
        "users[0].fhir_user"
    );
    assert_eq!(
        with(&|r| r["users"][0]["patient"] = json!("Patient/..")),
        "users[0].patient"
    );
    assert_eq!(
        with(&|r| r["users"][0]["claims"]["patient"] = json!("x")),
        "users[0].claims.patient"
    );
    assert_eq!(
        with(&|r| r["clients"][1]["client_id"] = json!("app")),
        "clients[1].client_id"
    );
    assert_eq!(
        with(&|r| r["clients"][0]["redirect_uris"][0] = json!("http://evil.example/cb")),
        "clients[0].redirect_uris[0]"
    );
    assert_eq!(
        with(&|r| r["clients"][0]["redirect_uris"][0] = json!("https://a.example/cb#x")),
        "clients[0].redirect_uris[0]"
    );
    assert_eq!(
        with(&|r| r["clients"][0]["scope"] = json!("launch patient/*.rs")),
        "clients[0].scope"
    );
    assert_eq!(
        with(&|r| r["clients"][0]["scope"] = json!("patient/Nothing.rs")),
        "clients[0].scope"
    );
    assert_eq!(
        with(&|r| r["clients"][0]["token_endpoint_auth_method"] = json!("client_secret_basic")),
        "clients[0].token_endpoint_auth_method"
    );
    assert_eq!(
        with(&|r| r["clients"][1]["jwks_uri"] = json!("https://a.example/jwks")),
        "clients[1].jwks"
    );
    assert_eq!(
        with(&|r| r["clients"][1]["jwks"] =
            json!({"keys": [{"kty": "oct", "kid": "k", "k": "c2VjcmV0"}]})),
        "clients[1].jwks"
    );
    // The password hash never shows in Debug.
    let raw: RawServerConfig = serde_json::from_value(raw_config(None)).unwrap();
    let config = ServerConfig::try_from(raw.clone()).unwrap();
    for text in [format!("{raw:?}"), format!("{config:?}")] {
        assert!(!text.contains("$argon2id$"), "{text}");
    }
    assert_eq!(
        config.users[1].patient.as_deref(),
        Some("alice-1"),
        "from fhir_user"
    );
}

#[test]
fn the_signing_key_is_kept_in_the_authority_and_never_printed() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite:{}", dir.path().join("authority.sqlite3").display());
    let kek = "0303030303030303030303030303030303030303030303030303030303030303";
    let params = InitOptions::default();
    let authority = Authority::init(
        store::open(&url).unwrap(),
        Kek::from_hex(kek, "t").unwrap(),
        params,
        1_800_000_000,
        &mut OsRng,
    )
    .unwrap();
    let first = SigningKey::load_or_create(&authority, &mut OsRng).unwrap();
    let second = SigningKey::load_or_create(&authority, &mut OsRng).unwrap();
    assert_eq!(first.kid(), second.kid());
    drop(authority);
    let reopened =
        Authority::open(store::open(&url).unwrap(), Kek::from_hex(kek, "t").unwrap()).unwrap();
    let third = SigningKey::load_or_create(&reopened, &mut OsRng).unwrap();
    assert_eq!(first.kid(), third.kid(), "persisted");
    assert_eq!(first.jwks(), third.jwks());
    assert_ne!(first.kid(), SigningKey::generate().unwrap().kid());
    // RFC 7638 thumbprint of the published key.
    let jwk = &first.jwks().keys[0];
    assert_eq!(
        jwk.thumbprint(jsonwebtoken::jwk::ThumbprintHash::SHA256)
            .unwrap(),
        first.kid()
    );
    assert_eq!(
        format!("{first:?}"),
        format!("SigningKey {{ kid: {:?}, .. }}", first.kid())
    );
    assert!(matches!(
        SigningKey::from_pkcs8(b"not a key"),
        Err(ServerError::KeyRejected)
    ));
}

// === login throttling ===

#[path = "server/throttle.rs"]
mod throttle;
