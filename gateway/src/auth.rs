//! Bearer tokens (JWT) and the one decision every route goes through:
//! [`authorize`] — may this principal read this service on this plane?
//!
//! jsonwebtoken's defaults are not this module's: it is told the one algorithm
//! the key is for (so `alg: none` and algorithm swaps fail), to check `nbf`, to
//! require `exp` and `sub`, and to check `iss`/`aud` exactly when configured.
//! `iat` in the future is refused here, since jsonwebtoken does not look at it.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, RwLock};
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use daeda_catalog::ServiceDef;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use crate::ApiError;

/// Seconds of clock skew tolerated on `exp`, `nbf` and `iat`.
pub const LEEWAY_SECS: u64 = 30;

/// The two ways to read features.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Plane {
    Online,
    Sql,
}

impl Plane {
    pub fn as_str(self) -> &'static str {
        match self {
            Plane::Online => "online",
            Plane::Sql => "sql",
        }
    }
}

/// Which services a token covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// `"*"`: every approved service.
    All,
    /// Shared, so a cached principal is cloned per request without copying the set.
    Only(Arc<HashSet<String>>),
}

impl Scope {
    pub fn covers(&self, service: &str) -> bool {
        match self {
            Scope::All => true,
            Scope::Only(s) => s.contains(service),
        }
    }
}

/// Who is calling, from a verified token.
#[derive(Debug, Clone)]
pub struct Principal {
    pub sub: String,
    pub services: Scope,
    pub planes: Vec<Plane>,
}

/// The claims daeda issues and requires.
#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    sub: String,
    exp: u64,
    services: Vec<String>,
    planes: Vec<Plane>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    iat: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    nbf: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    iss: Option<String>,
    /// RFC 7519 §4.1.3: one audience or an array of them. jsonwebtoken checks
    /// it against `jwt.audience` (any element may match); this field only has
    /// to accept both shapes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    aud: Option<Audience>,
}

/// The `aud` claim: a string or an array of strings.
#[derive(Debug, Serialize, Deserialize)]
#[serde(untagged)]
enum Audience {
    One(String),
    Many(Vec<String>),
}

/// How tokens are verified.
#[derive(Debug, Clone, Default)]
pub struct AuthSettings {
    /// HS256 shared secret.
    pub secret: Option<String>,
    /// PEM public key: RS256, ES256 or EdDSA by its type.
    pub public_key: Option<std::path::PathBuf>,
    pub issuer: Option<String>,
    pub audience: Option<String>,
}

/// Why auth settings cannot be used (a start-up error).
#[derive(Debug, thiserror::Error)]
pub enum AuthConfigError {
    #[error("no token verification key: set DAEDA_JWT_SECRET (HS256) or DAEDA_JWT_PUBLIC_KEY (a PEM public key)")]
    NoKey,
    #[error("set only one of jwt.secret and jwt.public_key")]
    BothKeys,
    #[error("cannot read the JWT public key {path}: {reason}")]
    BadPublicKey { path: String, reason: String },
}

/// A verifier built once at start-up.
pub struct Verifier {
    key: DecodingKey,
    validation: Validation,
    /// Tokens already verified, with the window they are valid in. A token's
    /// claims are fixed by its signature, so a cached token only needs its time
    /// checks repeated; this spares the HMAC/RSA and JSON work per request.
    verified: RwLock<HashMap<String, Verified>>,
}

#[derive(Clone)]
struct Verified {
    principal: Principal,
    not_before: u64,
    expires: u64,
}

/// Verified tokens kept at most; the cache is emptied when it is full.
const CACHE_CAPACITY: usize = 10_000;

impl Verifier {
    pub fn new(s: &AuthSettings) -> Result<Verifier, AuthConfigError> {
        let (key, alg) = match (&s.secret, &s.public_key) {
            (Some(_), Some(_)) => return Err(AuthConfigError::BothKeys),
            (None, None) => return Err(AuthConfigError::NoKey),
            (Some(secret), None) => (DecodingKey::from_secret(secret.as_bytes()), Algorithm::HS256),
            (None, Some(path)) => public_key(path)?,
        };
        let mut v = Validation::new(alg);
        v.leeway = LEEWAY_SECS;
        v.validate_exp = true;
        v.validate_nbf = true;
        v.set_required_spec_claims(&["exp", "sub"]);
        match &s.audience {
            Some(aud) => v.set_audience(&[aud]),
            None => v.validate_aud = false,
        }
        if let Some(iss) = &s.issuer {
            v.set_issuer(&[iss]);
            v.required_spec_claims.insert("iss".into());
        }
        if s.audience.is_some() {
            v.required_spec_claims.insert("aud".into());
        }
        Ok(Verifier { key, validation: v, verified: RwLock::new(HashMap::new()) })
    }

    /// Verifies the `Authorization` header's bearer token.
    pub fn verify(&self, authorization: Option<&str>) -> Result<Principal, ApiError> {
        const MISSING: &str = "a bearer token is required (Authorization: Bearer <JWT>)";
        const INVALID: &str = "the bearer token is invalid, expired or not yet valid";
        let header = authorization.ok_or(ApiError::Unauthorized(MISSING))?;
        let (scheme, token) = header.trim().split_once(' ').ok_or(ApiError::Unauthorized(MISSING))?;
        let token = token.trim();
        if !scheme.eq_ignore_ascii_case("bearer") || token.is_empty() {
            return Err(ApiError::Unauthorized(MISSING));
        }
        let now = now();
        if let Some(v) = self.verified.read().expect("token cache lock").get(token) {
            if now + LEEWAY_SECS >= v.not_before && now <= v.expires + LEEWAY_SECS {
                return Ok(v.principal.clone());
            }
            return Err(ApiError::Unauthorized(INVALID));
        }
        let data = jsonwebtoken::decode::<Claims>(token, &self.key, &self.validation).map_err(|e| {
            tracing::debug!(error = %e, "token refused");
            ApiError::Unauthorized(INVALID)
        })?;
        let c = data.claims;
        if c.iat.is_some_and(|iat| iat > now + LEEWAY_SECS) {
            return Err(ApiError::Unauthorized(INVALID));
        }
        if c.sub.is_empty() {
            return Err(ApiError::Unauthorized(INVALID));
        }
        let services = if c.services.iter().any(|s| s == "*") {
            Scope::All
        } else {
            Scope::Only(Arc::new(c.services.into_iter().collect()))
        };
        let principal = Principal { sub: c.sub, services, planes: c.planes };
        let mut cache = self.verified.write().expect("token cache lock");
        if cache.len() >= CACHE_CAPACITY {
            cache.clear();
        }
        let verified = Verified { principal: principal.clone(), not_before: c.nbf.unwrap_or(0), expires: c.exp };
        cache.insert(token.to_string(), verified);
        Ok(principal)
    }
}

fn public_key(path: &Path) -> Result<(DecodingKey, Algorithm), AuthConfigError> {
    let bad = |reason: String| AuthConfigError::BadPublicKey { path: path.display().to_string(), reason };
    let pem = std::fs::read(path).map_err(|e| bad(e.to_string()))?;
    if let Ok(k) = DecodingKey::from_rsa_pem(&pem) {
        return Ok((k, Algorithm::RS256));
    }
    if let Ok(k) = DecodingKey::from_ec_pem(&pem) {
        return Ok((k, Algorithm::ES256));
    }
    if let Ok(k) = DecodingKey::from_ed_pem(&pem) {
        return Ok((k, Algorithm::EdDSA));
    }
    Err(bad("not an RSA, EC (P-256) or Ed25519 public key in PEM".into()))
}

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// The chokepoint: whether `who` may read `service` on `plane`. A service whose
/// serving is not allowed is refused whatever the token says, `"*"` included.
pub fn authorize(who: &Principal, service: &ServiceDef, plane: Plane) -> Result<(), ApiError> {
    if !service.serving.allowed {
        return Err(ApiError::Forbidden(format!("service `{}` is not approved for serving", service.name)));
    }
    if !who.services.covers(&service.name) {
        return Err(ApiError::Forbidden(format!("the token does not grant service `{}`", service.name)));
    }
    if !who.planes.contains(&plane) {
        return Err(ApiError::Forbidden(format!("the token does not grant the {} plane", plane.as_str())));
    }
    Ok(())
}

/// What `daeda token mint` signs.
pub struct MintRequest<'a> {
    pub secret: &'a str,
    pub sub: &'a str,
    pub services: Vec<String>,
    pub planes: Vec<Plane>,
    pub ttl_secs: u64,
    pub issuer: Option<String>,
    pub audience: Option<String>,
}

/// An HS256 token for development and tests.
pub fn mint(r: MintRequest<'_>) -> Result<String, jsonwebtoken::errors::Error> {
    let iat = now();
    let claims = Claims {
        sub: r.sub.to_string(),
        exp: iat + r.ttl_secs,
        services: r.services,
        planes: r.planes,
        iat: Some(iat),
        nbf: None,
        iss: r.issuer,
        aud: r.audience.map(Audience::One),
    };
    jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &EncodingKey::from_secret(r.secret.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(aud: serde_json::Value) -> String {
        let claims = serde_json::json!({"sub": "x", "exp": now() + 600, "services": ["*"], "planes": ["online"], "aud": aud});
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &EncodingKey::from_secret(b"s")).unwrap()
    }

    /// Regression (issue 14): `aud` as an array (RFC 7519 §4.1.3) was refused
    /// because the claim was read as a string.
    #[test]
    fn an_audience_array_passes_when_any_element_matches() {
        let settings = AuthSettings { secret: Some("s".into()), audience: Some("daeda-gateway".into()), ..Default::default() };
        let v = Verifier::new(&settings).unwrap();
        let bearer = |t: String| format!("Bearer {t}");
        let ok = v.verify(Some(&bearer(token(serde_json::json!(["another-gateway", "daeda-gateway"])))));
        assert_eq!(ok.unwrap().sub, "x");
        assert!(v.verify(Some(&bearer(token(serde_json::json!("daeda-gateway"))))).is_ok());
        for wrong in [serde_json::json!(["another-gateway", "ads"]), serde_json::json!([]), serde_json::json!("ads"), serde_json::json!([1])] {
            let e = v.verify(Some(&bearer(token(wrong.clone())))).unwrap_err();
            assert!(matches!(e, ApiError::Unauthorized(_)), "{wrong}: {e}");
        }
    }
}
