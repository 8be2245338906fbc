//! An issuer's signature keys: JWKs (RFC 7517) parsed once into aws-lc public keys, each pinned
//! to one algorithm; fetched from the issuer's `jwks_uri`, cached, refreshed when old, and
//! refetched (rate-limited, one fetch at a time) when a token names a key not seen yet.

use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, Instant};

use aws_lc_rs::signature::{self, ParsedPublicKey, RsaPublicKeyComponents, VerificationAlgorithm};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::Algorithm;
use serde_json::{Map, Value};

use super::AuthError;
use super::fetch;
use super::jwt::{self, Jws};

/// The keys of one issuer, and how to get new ones.
pub(super) struct IssuerKeys {
    /// Where the keys come from; `None` for a static key set.
    jwks_uri: Option<String>,
    /// The algorithms the issuer may use.
    allowed: Vec<Algorithm>,
    /// The keys at hand, replaced whole by a fetch.
    current: RwLock<Option<Arc<KeySet>>>,
    /// Held while fetching (one fetch at a time); when the last fetch was attempted.
    last_fetch: tokio::sync::Mutex<Option<Instant>>,
}

/// How often keys are fetched.
#[derive(Clone, Copy, Debug)]
pub(super) struct Refresh {
    /// No refetch sooner than this after the last attempt.
    pub(super) min_interval: Duration,
    /// Keys older than this are refreshed.
    pub(super) max_age: Duration,
}

/// A key set as fetched (or configured).
pub(super) struct KeySet {
    keys: Vec<PinnedKey>,
    fetched_at: Instant,
}

/// A public key parsed once, usable with exactly one algorithm.
struct PinnedKey {
    kid: Option<String>,
    alg: Algorithm,
    key: ParsedPublicKey,
}

enum Lookup<'k> {
    /// The keys that may have signed the token.
    Keys(Vec<&'k ParsedPublicKey>),
    /// No key fits; a newer key set might have it.
    Unknown,
    /// The key named by `kid` exists but is pinned to another algorithm.
    Mispinned,
}

const JWKS_BODY_LIMIT: usize = 256 * 1024;

// === impl IssuerKeys ===

impl IssuerKeys {
    /// Keys fetched from `jwks_uri` on first use.
    pub(super) fn remote(jwks_uri: String, allowed: Vec<Algorithm>) -> Self {
        Self {
            jwks_uri: Some(jwks_uri),
            allowed,
            current: RwLock::new(None),
            last_fetch: tokio::sync::Mutex::new(None),
        }
    }

    /// A fixed key set; `None` if it holds no usable key.
    pub(super) fn fixed(jwks: &Value, allowed: Vec<Algorithm>) -> Option<Self> {
        let set = KeySet::from_jwks(jwks, &allowed)?;
        (!set.keys.is_empty()).then(|| Self {
            jwks_uri: None,
            allowed,
            current: RwLock::new(Some(Arc::new(set))),
            last_fetch: tokio::sync::Mutex::new(None),
        })
    }

    /// Verifies `jws`'s signature with the key its header names (fetching keys as needed).
    pub(super) async fn verify(
        &self,
        jws: &Jws<'_>,
        http: &reqwest::Client,
        refresh: Refresh,
    ) -> Result<(), AuthError> {
        let mut set = self.current();
        if self.jwks_uri.is_some() {
            match &set {
                None => set = self.fetch(http, refresh, None, true).await,
                Some(s) if s.fetched_at.elapsed() >= refresh.max_age => {
                    set = self.fetch(http, refresh, set.clone(), false).await;
                }
                Some(_) => {}
            }
        }
        let Some(mut set) = set else {
            return Err(AuthError::KeysUnavailable);
        };
        let mut refetched = false;
        loop {
            match set.lookup(jws.kid.as_deref(), jws.alg) {
                Lookup::Keys(keys) => {
                    return if keys
                        .iter()
                        .any(|k| k.verify_sig(jws.signing_input, &jws.signature).is_ok())
                    {
                        Ok(())
                    } else {
                        Err(AuthError::BadSignature)
                    };
                }
                Lookup::Mispinned => return Err(AuthError::AlgorithmRefused),
                Lookup::Unknown if refetched || self.jwks_uri.is_none() => {
                    return Err(AuthError::UnknownKey);
                }
                Lookup::Unknown => {
                    refetched = true;
                    let seen = Some(Arc::clone(&set));
                    match self.fetch(http, refresh, seen, true).await {
                        Some(newer) if !Arc::ptr_eq(&newer, &set) => set = newer,
                        _ => return Err(AuthError::UnknownKey),
                    }
                }
            }
        }
    }

    /// Fetches the key set now unless keys are at hand (a static set, or fetched before), so
    /// that the first token does not wait for them: whether keys are at hand afterwards. A failed
    /// attempt does not count against the refetch interval: the first token fetches again.
    pub(super) async fn prefetch(&self, http: &reqwest::Client) -> bool {
        let Some(uri) = &self.jwks_uri else {
            return true;
        };
        let mut last_fetch = self.last_fetch.lock().await;
        if self.current().is_some() {
            return true;
        }
        let fetched = fetch::json(http.get(uri), JWKS_BODY_LIMIT).await;
        let Some(set) = fetched.and_then(|jwks| KeySet::from_jwks(&jwks, &self.allowed)) else {
            return false;
        };
        *last_fetch = Some(Instant::now());
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = Some(Arc::new(set));
        true
    }

    fn current(&self) -> Option<Arc<KeySet>> {
        self.current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Fetches the key set unless another task did since `seen` was read, or the last attempt
    /// is more recent than the minimum interval; returns the keys at hand afterwards. A failed
    /// fetch keeps the keys at hand. With `wait` false, a fetch already running is not waited
    /// for.
    async fn fetch(
        &self,
        http: &reqwest::Client,
        refresh: Refresh,
        seen: Option<Arc<KeySet>>,
        wait: bool,
    ) -> Option<Arc<KeySet>> {
        let Some(uri) = &self.jwks_uri else {
            return self.current();
        };
        let mut last_fetch = if wait {
            self.last_fetch.lock().await
        } else {
            match self.last_fetch.try_lock() {
                Ok(guard) => guard,
                Err(_) => return self.current(),
            }
        };
        let current = self.current();
        let unchanged = match (&current, &seen) {
            (Some(a), Some(b)) => Arc::ptr_eq(a, b),
            (None, None) => true,
            _ => false,
        };
        let recent = last_fetch.is_some_and(|at| at.elapsed() < refresh.min_interval);
        if !unchanged || recent {
            return current;
        }
        *last_fetch = Some(Instant::now());
        let fetched = fetch::json(http.get(uri), JWKS_BODY_LIMIT).await;
        let Some(set) = fetched.and_then(|jwks| KeySet::from_jwks(&jwks, &self.allowed)) else {
            return current;
        };
        let set = Arc::new(set);
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = Some(Arc::clone(&set));
        Some(set)
    }
}

impl std::fmt::Debug for IssuerKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IssuerKeys")
            .field("jwks_uri", &self.jwks_uri)
            .field("keys", &self.current().map_or(0, |set| set.keys.len()))
            .finish_non_exhaustive()
    }
}

// === impl KeySet ===

impl KeySet {
    /// The usable keys of a JWK Set document (`{"keys": [...]}`); `None` if it is not one. Keys
    /// that cannot verify signatures with `allowed` algorithms are left out: symmetric (`oct`)
    /// keys, keys whose `use` is not `sig` or whose `key_ops` lack `verify`, unknown types or
    /// curves, RSA keys outside 2048–8192 bits, malformed keys.
    pub(super) fn from_jwks(jwks: &Value, allowed: &[Algorithm]) -> Option<Self> {
        let keys = jwks.get("keys")?.as_array()?;
        Some(Self {
            keys: keys
                .iter()
                .filter_map(Value::as_object)
                .flat_map(|jwk| pinned_keys(jwk, allowed))
                .collect(),
            fetched_at: Instant::now(),
        })
    }

    /// The keys that may have signed a token with this `kid` and `alg`. Without a `kid`, only
    /// when exactly one key fits the algorithm.
    fn lookup(&self, kid: Option<&str>, alg: Algorithm) -> Lookup<'_> {
        let Some(kid) = kid else {
            let mut fitting = self.keys.iter().filter(|k| k.alg == alg);
            return match (fitting.next(), fitting.next()) {
                (Some(only), None) => Lookup::Keys(vec![&only.key]),
                _ => Lookup::Unknown,
            };
        };
        let mut named = self
            .keys
            .iter()
            .filter(|k| k.kid.as_deref() == Some(kid))
            .peekable();
        if named.peek().is_none() {
            return Lookup::Unknown;
        }
        let keys: Vec<_> = named.filter(|k| k.alg == alg).map(|k| &k.key).collect();
        if keys.is_empty() {
            Lookup::Mispinned
        } else {
            Lookup::Keys(keys)
        }
    }
}

/// Builds a JWK's public key once per algorithm it may be used with: its `alg` if it has one,
/// else those of its type (RSA: RS256, RS384, RS512; EC P-256: ES256; EC P-384: ES384; OKP
/// Ed25519: EdDSA), each only if the issuer allows it.
fn pinned_keys(jwk: &Map<String, Value>, allowed: &[Algorithm]) -> Vec<PinnedKey> {
    let usable = match jwk.get("use") {
        None => true,
        Some(value) => value.as_str() == Some("sig"),
    } && match jwk.get("key_ops") {
        None => true,
        Some(ops) => ops
            .as_array()
            .is_some_and(|ops| ops.iter().any(|op| op.as_str() == Some("verify"))),
    };
    let kid = match jwk.get("kid") {
        None => None,
        Some(Value::String(kid)) => Some(kid.clone()),
        Some(_) => return Vec::new(),
    };
    let Some(material) = usable.then(|| KeyMaterial::from_jwk(jwk)).flatten() else {
        return Vec::new();
    };
    let algorithms: Vec<Algorithm> = match jwk.get("alg") {
        None => material.family().to_vec(),
        Some(alg) => match alg.as_str().and_then(jwt::algorithm) {
            Some(alg) if material.supports(alg) => vec![alg],
            _ => return Vec::new(),
        },
    };
    algorithms
        .into_iter()
        .filter(|alg| allowed.contains(alg))
        .filter_map(|alg| {
            material.parse(alg).map(|key| PinnedKey {
                kid: kid.clone(),
                alg,
                key,
            })
        })
        .collect()
}

/// A JWK's public key material, decoded.
enum KeyMaterial {
    Rsa { n: Vec<u8>, e: Vec<u8> },
    P256(Vec<u8>),
    P384(Vec<u8>),
    Ed25519(Vec<u8>),
}

impl KeyMaterial {
    fn from_jwk(jwk: &Map<String, Value>) -> Option<Self> {
        let bytes = |name: &str| {
            let text = jwk.get(name)?.as_str()?;
            URL_SAFE_NO_PAD.decode(text).ok()
        };
        let point = |size: usize| {
            let (x, y) = (bytes("x")?, bytes("y")?);
            (x.len() == size && y.len() == size).then(|| [&[4u8][..], &x, &y].concat())
        };
        let crv = jwk.get("crv").and_then(Value::as_str);
        match (jwk.get("kty").and_then(Value::as_str)?, crv) {
            ("RSA", _) => {
                let n = strip_leading_zeros(bytes("n")?);
                let e = strip_leading_zeros(bytes("e")?);
                let bits = n.len() * 8 - n.first().map_or(8, |b| b.leading_zeros() as usize);
                ((2048..=8192).contains(&bits) && !e.is_empty()).then_some(Self::Rsa { n, e })
            }
            ("EC", Some("P-256")) => point(32).map(Self::P256),
            ("EC", Some("P-384")) => point(48).map(Self::P384),
            ("OKP", Some("Ed25519")) => bytes("x").filter(|x| x.len() == 32).map(Self::Ed25519),
            _ => None,
        }
    }

    /// The algorithms a key of this type is used with when its JWK has no `alg`.
    fn family(&self) -> &'static [Algorithm] {
        match self {
            Self::Rsa { .. } => &[Algorithm::RS256, Algorithm::RS384, Algorithm::RS512],
            Self::P256(_) => &[Algorithm::ES256],
            Self::P384(_) => &[Algorithm::ES384],
            Self::Ed25519(_) => &[Algorithm::EdDSA],
        }
    }

    /// Whether a JWK `alg` of `alg` fits this key type (RSA keys may also be pinned to PS*).
    fn supports(&self, alg: Algorithm) -> bool {
        self.family().contains(&alg)
            || matches!(self, Self::Rsa { .. })
                && matches!(alg, Algorithm::PS256 | Algorithm::PS384 | Algorithm::PS512)
    }

    fn parse(&self, alg: Algorithm) -> Option<ParsedPublicKey> {
        match (self, alg) {
            (Self::Rsa { n, e }, _) => {
                let params: &'static signature::RsaParameters = match alg {
                    Algorithm::RS256 => &signature::RSA_PKCS1_2048_8192_SHA256,
                    Algorithm::RS384 => &signature::RSA_PKCS1_2048_8192_SHA384,
                    Algorithm::RS512 => &signature::RSA_PKCS1_2048_8192_SHA512,
                    Algorithm::PS256 => &signature::RSA_PSS_2048_8192_SHA256,
                    Algorithm::PS384 => &signature::RSA_PSS_2048_8192_SHA384,
                    Algorithm::PS512 => &signature::RSA_PSS_2048_8192_SHA512,
                    _ => return None,
                };
                RsaPublicKeyComponents { n, e }
                    .to_parsed_public_key(params)
                    .ok()
            }
            (Self::P256(point), Algorithm::ES256) => {
                parsed(&signature::ECDSA_P256_SHA256_FIXED, point)
            }
            (Self::P384(point), Algorithm::ES384) => {
                parsed(&signature::ECDSA_P384_SHA384_FIXED, point)
            }
            (Self::Ed25519(x), Algorithm::EdDSA) => parsed(&signature::ED25519, x),
            _ => None,
        }
    }
}

fn parsed(algorithm: &'static dyn VerificationAlgorithm, bytes: &[u8]) -> Option<ParsedPublicKey> {
    ParsedPublicKey::new(algorithm, bytes).ok()
}

/// RFC 7518 §6.3.1 asks for the minimal encoding; some issuers pad `n` with a zero byte.
fn strip_leading_zeros(mut bytes: Vec<u8>) -> Vec<u8> {
    let zeros = bytes.iter().take_while(|b| **b == 0).count();
    bytes.drain(..zeros);
    bytes
}
