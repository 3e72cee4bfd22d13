//! Who is calling: a JSON Web Token (RFC 7519) signed with HS256.
//!
//! A token is `header.claims.signature`, each part base64url; the signature is an
//! HMAC-SHA256 of the first two parts under a key only the issuer and the gateway
//! know. The gateway accepts a request when the signature matches, the algorithm is
//! the one it expects (never the `alg` the token claims: accepting `none` or an RSA
//! public key as an HMAC secret are the classic JWT holes), and the token has not
//! expired. The customer is the token's subject (`sub`); whatever a request body says
//! about its customer is overwritten with it.
//!
//! The key comes from `GATEWAY_JWT_KEY`. The default is a development key, printed
//! nowhere and documented in the README: fine on a laptop, wrong anywhere else.

use axum::extract::FromRequestParts;
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use common::http::Problem;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The development key (32 bytes, as HS256 wants at least).
pub const DEVELOPMENT_KEY: &str = "ferriseats-development-key-32-by";
/// Who issues the tokens the gateway accepts (`iss`).
pub const ISSUER: &str = "ferriseats";
/// Clock difference tolerated on `exp` between the issuer and the gateway.
const LEEWAY: Duration = Duration::from_secs(5);

/// What a token says.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Claims {
    /// The customer.
    pub sub: String,
    pub iss: String,
    /// Issued at, seconds since the epoch.
    pub iat: u64,
    /// Expires at, seconds since the epoch.
    pub exp: u64,
}

/// The signing and checking halves of one HS256 key.
#[derive(Clone)]
pub struct Keys {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Keys { .. }") // never print a secret
    }
}

impl Keys {
    pub fn hs256(secret: &[u8]) -> anyhow::Result<Keys> {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = LEEWAY.as_secs();
        validation.set_issuer(&[ISSUER]);
        validation.set_required_spec_claims(&["exp", "sub", "iss"]);
        Ok(Keys {
            encoding: EncodingKey::from_secret(secret)?,
            decoding: DecodingKey::from_secret(secret)?,
            validation,
        })
    }

    /// A token for `customer`, valid for `ttl` from now.
    pub fn mint(&self, customer: &str, ttl: Duration) -> anyhow::Result<String> {
        let now = unix_now();
        self.mint_at(customer, now, now + ttl.as_secs())
    }

    /// A token with explicit times (tests mint expired ones).
    pub fn mint_at(&self, customer: &str, iat: u64, exp: u64) -> anyhow::Result<String> {
        anyhow::ensure!(!customer.trim().is_empty(), "a customer id is required");
        let claims = Claims {
            sub: customer.to_owned(),
            iss: ISSUER.to_owned(),
            iat,
            exp,
        };
        Ok(jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &self.encoding,
        )?)
    }

    /// The claims of a valid token, or why it is not.
    pub fn verify(&self, token: &str) -> Result<Claims, Unauthorized> {
        jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation)
            .map(|data| data.claims)
            .map_err(|err| {
                use jsonwebtoken::errors::ErrorKind;
                Unauthorized(match err.kind() {
                    ErrorKind::ExpiredSignature => "the token has expired",
                    ErrorKind::InvalidSignature => "the token's signature does not match",
                    ErrorKind::InvalidAlgorithm => "the token is not signed with HS256",
                    ErrorKind::InvalidIssuer => "the token was not issued by ferriseats",
                    ErrorKind::MissingRequiredClaim(_) => "the token lacks sub, iss or exp",
                    _ => "the token is malformed",
                })
            })
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The authenticated customer of a request (an axum extractor).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Customer(pub String);

/// Why a request is not authenticated: 401 with `WWW-Authenticate: Bearer`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unauthorized(pub &'static str);

impl IntoResponse for Unauthorized {
    fn into_response(self) -> Response {
        let mut response = Problem::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "Missing or invalid bearer token",
        )
        .detail(self.0)
        .into_response();
        response.headers_mut().insert(
            axum::http::header::WWW_AUTHENTICATE,
            axum::http::HeaderValue::from_static("Bearer realm=\"ferriseats\""),
        );
        response
    }
}

impl<S> FromRequestParts<S> for Customer
where
    Arc<Keys>: axum::extract::FromRef<S>,
    S: Send + Sync,
{
    type Rejection = Unauthorized;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let keys: Arc<Keys> = axum::extract::FromRef::from_ref(state);
        let header = parts
            .headers
            .get(axum::http::header::AUTHORIZATION)
            .ok_or(Unauthorized("no Authorization header: send `Authorization: Bearer <token>` (mint one with `phase4-chaos token --customer NAME`)"))?;
        let token = header
            .to_str()
            .ok()
            .and_then(|value| value.strip_prefix("Bearer "))
            .ok_or(Unauthorized(
                "the Authorization header is not `Bearer <token>`",
            ))?;
        let claims = keys.verify(token.trim())?;
        Ok(Customer(claims.sub))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_minted_token_verifies_and_names_its_customer() {
        let keys = Keys::hs256(DEVELOPMENT_KEY.as_bytes()).unwrap();
        let token = keys.mint("alice", Duration::from_secs(60)).unwrap();
        assert_eq!(keys.verify(&token).unwrap().sub, "alice");
    }

    #[test]
    fn expired_forged_and_foreign_tokens_are_refused_with_their_reason() {
        let keys = Keys::hs256(DEVELOPMENT_KEY.as_bytes()).unwrap();
        let now = unix_now();
        let expired = keys.mint_at("alice", now - 3600, now - 60).unwrap();
        assert_eq!(
            keys.verify(&expired),
            Err(Unauthorized("the token has expired"))
        );

        let other = Keys::hs256(b"another-key-of-thirty-two-bytes!").unwrap();
        let foreign = other.mint("alice", Duration::from_secs(60)).unwrap();
        assert_eq!(
            keys.verify(&foreign),
            Err(Unauthorized("the token's signature does not match"))
        );

        // Same signature, claims changed to another customer: forged.
        let token = keys.mint("alice", Duration::from_secs(60)).unwrap();
        let parts: Vec<&str> = token.split('.').collect();
        let mallory = base64_url(
            &serde_json::to_vec(&Claims {
                sub: "mallory".into(),
                iss: ISSUER.into(),
                iat: now,
                exp: now + 60,
            })
            .unwrap(),
        );
        let forged = format!("{}.{}.{}", parts[0], mallory, parts[2]);
        assert_eq!(
            keys.verify(&forged),
            Err(Unauthorized("the token's signature does not match"))
        );

        // `alg: none`, the oldest trick.
        let none = format!(
            "{}.{}.",
            base64_url(br#"{"alg":"none","typ":"JWT"}"#),
            parts[1]
        );
        assert!(keys.verify(&none).is_err());
        assert_eq!(
            keys.verify("not-a-token"),
            Err(Unauthorized("the token is malformed"))
        );
    }

    fn base64_url(bytes: &[u8]) -> String {
        use base64::Engine;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    }
}
