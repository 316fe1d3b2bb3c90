//! Phase 5: authentication. A route that lists `auth` methods admits a request only with a
//! credential one of them accepts: an API key ([`api_key`]), a bearer JWT ([`jwt`]) or the
//! client certificate its TLS connection verified ([`mtls`]). The outcome is a principal name
//! for the phases after this one (the rate limiter keys on it), or a [`Refusal`] the proxy
//! answers with 401 (and `WWW-Authenticate`) or, for a principal the route does not allow,
//! 403.
//!
//! Everything that can be prepared is prepared when the runtime is built ([`RouteAuth`]): the
//! key table, the JWKS, the challenge header and one counter per method and result, so a
//! request costs a header lookup, one hash or signature check and one counter increment.
//! Routes without `auth` carry `None` and pay one `Option` check.

pub mod api_key;
pub mod jwt;
pub mod mtls;

use std::sync::Arc;

use http::header::HeaderValue;
use http::{HeaderMap, StatusCode};
use prometheus::Registry;
use prometheus::{IntCounter, IntCounterVec};

/// A way of authenticating, as routes list them; the `method` label of
/// `fedgate_auth_attempts_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuthMethod {
    ApiKey,
    Jwt,
    Mtls,
}

impl AuthMethod {
    pub const ALL: [Self; 3] = [Self::ApiKey, Self::Jwt, Self::Mtls];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::ApiKey => "api_key",
            Self::Jwt => "jwt",
            Self::Mtls => "mtls",
        }
    }

    /// The challenge this method adds to `WWW-Authenticate` on a 401.
    fn challenge(self) -> &'static str {
        match self {
            Self::ApiKey => "ApiKey realm=\"fedgate\"",
            Self::Jwt => "Bearer realm=\"fedgate\"",
            // No registered scheme names a TLS client certificate; the name tells a client
            // what it lacks.
            Self::Mtls => "Certificate realm=\"fedgate\"",
        }
    }
}

/// What one authentication attempt came to; the `result` label of
/// `fedgate_auth_attempts_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthResult {
    Ok,
    /// No credential of any method the route accepts.
    Missing,
    /// A credential that does not verify: unknown key, bad signature, wrong issuer or
    /// audience, a token not valid yet, a malformed token.
    Invalid,
    /// A token past its `exp` (beyond the leeway).
    Expired,
    /// Authenticated, but the principal is not on the route's allow list.
    Forbidden,
}

impl AuthResult {
    pub const ALL: [Self; 5] = [
        Self::Ok,
        Self::Missing,
        Self::Invalid,
        Self::Expired,
        Self::Forbidden,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Missing => "missing",
            Self::Invalid => "invalid",
            Self::Expired => "expired",
            Self::Forbidden => "forbidden",
        }
    }
}

/// Why a credential failed: the result label and a fixed reason for the log and the body
/// (never the credential itself).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Failure {
    pub result: AuthResult,
    pub reason: &'static str,
}

impl Failure {
    pub(crate) const fn invalid(reason: &'static str) -> Self {
        Failure {
            result: AuthResult::Invalid,
            reason,
        }
    }
}

/// A request the route refuses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refusal {
    pub method: AuthMethod,
    pub result: AuthResult,
    pub reason: &'static str,
}

impl Refusal {
    /// 403 for an authenticated principal the route does not allow, else 401.
    pub fn status(&self) -> StatusCode {
        if self.result == AuthResult::Forbidden {
            StatusCode::FORBIDDEN
        } else {
            StatusCode::UNAUTHORIZED
        }
    }
}

/// `[auth]`, validated: what every route's methods check against. Loaded with the config, so
/// a reload re-reads the JWKS file.
#[derive(Debug, Clone, Default)]
pub struct AuthConfig {
    pub api_keys: api_key::ApiKeys,
    pub jwt: Option<Arc<jwt::JwtVerifier>>,
}

/// A route's `auth` and `principals`, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteAuthConfig {
    /// Accepted methods in the order written; the first one also names a request that
    /// carries no credential at all in the metrics.
    pub methods: Vec<AuthMethod>,
    /// Principals allowed on the route; `None` allows every authenticated one.
    pub principals: Option<Vec<String>>,
}

/// Phase 5 of one route, resolved when the runtime is built.
#[derive(Debug)]
pub struct RouteAuth {
    methods: Box<[AuthMethod]>,
    principals: Option<Box<[Box<str>]>>,
    /// By `AuthMethod as usize`, then `AuthResult as usize`; `None` for methods the route
    /// does not accept, which never count.
    counters: [Option<[IntCounter; 5]>; 3],
    challenge: HeaderValue,
    config: Arc<AuthConfig>,
}

impl RouteAuth {
    pub fn new(
        route: &str,
        rc: &RouteAuthConfig,
        config: Arc<AuthConfig>,
        attempts: &IntCounterVec,
    ) -> Self {
        let counters = AuthMethod::ALL.map(|m| {
            rc.methods.contains(&m).then(|| {
                AuthResult::ALL
                    .map(|r| attempts.with_label_values(&[route, m.as_str(), r.as_str()]))
            })
        });
        let challenge = rc
            .methods
            .iter()
            .map(|m| m.challenge())
            .collect::<Vec<_>>()
            .join(", ");
        RouteAuth {
            methods: rc.methods.clone().into_boxed_slice(),
            principals: rc
                .principals
                .as_ref()
                .map(|p| p.iter().map(|s| s.as_str().into()).collect()),
            counters,
            challenge: HeaderValue::from_str(&challenge)
                .expect("challenges are fixed ASCII strings"),
            config,
        }
    }

    /// The `WWW-Authenticate` value of this route's 401s.
    pub fn challenge(&self) -> &HeaderValue {
        &self.challenge
    }

    /// Authenticates a request by its headers and the principal of its connection's verified
    /// client certificate. The first accepted method (in the route's order) whose credential
    /// the request carries decides; the attempt is counted once.
    pub fn check(&self, headers: &HeaderMap, peer: Option<&Arc<str>>) -> Result<Arc<str>, Refusal> {
        self.check_with_method(headers, peer).map(|(_, p)| p)
    }

    /// As [`RouteAuth::check`], with the method that authenticated the principal.
    pub fn check_with_method(
        &self,
        headers: &HeaderMap,
        peer: Option<&Arc<str>>,
    ) -> Result<(AuthMethod, Arc<str>), Refusal> {
        for &method in self.methods.iter() {
            let attempt = match method {
                AuthMethod::ApiKey => self
                    .config
                    .api_keys
                    .presented(headers)
                    .map(|key| self.config.api_keys.lookup(key)),
                AuthMethod::Jwt => match (&self.config.jwt, jwt::bearer(headers)) {
                    (Some(verifier), Some(token)) => Some(verifier.verify(token)),
                    _ => None,
                },
                AuthMethod::Mtls => peer.map(|p| Ok(p.clone())),
            };
            if let Some(attempt) = attempt {
                return self.decide(method, attempt).map(|p| (method, p));
            }
        }
        let method = self.methods[0];
        self.refuse(
            method,
            Failure {
                result: AuthResult::Missing,
                reason: "this route requires authentication",
            },
        )
        .map(|p| (method, p))
    }

    fn decide(
        &self,
        method: AuthMethod,
        attempt: Result<Arc<str>, Failure>,
    ) -> Result<Arc<str>, Refusal> {
        let principal = match attempt {
            Ok(p) => p,
            Err(f) => return self.refuse(method, f),
        };
        if let Some(allowed) = &self.principals {
            if !allowed.iter().any(|a| **a == *principal) {
                return self.refuse(
                    method,
                    Failure {
                        result: AuthResult::Forbidden,
                        reason: "this principal is not allowed on this route",
                    },
                );
            }
        }
        self.count(method, AuthResult::Ok);
        Ok(principal)
    }

    fn refuse(&self, method: AuthMethod, f: Failure) -> Result<Arc<str>, Refusal> {
        self.count(method, f.result);
        Err(Refusal {
            method,
            result: f.result,
            reason: f.reason,
        })
    }

    fn count(&self, method: AuthMethod, result: AuthResult) {
        if let Some(c) = &self.counters[method as usize] {
            c[result as usize].inc();
        }
    }
}

/// `fedgate_auth_attempts_total{route,method,result}` (phase 5), registered on `registry`;
/// each route with `auth` resolves its children when it is built.
pub fn attempts_family(registry: &Registry) -> Result<IntCounterVec, prometheus::Error> {
    crate::register::counter_vec(
        registry,
        "fedgate_auth_attempts_total",
        "Authentication attempts on routes with auth, by route, method (api_key, jwt, mtls) and result (ok, missing, invalid, expired, forbidden).",
        &["route", "method", "result"],
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::Digest as _;

    fn route_auth(
        methods: &[AuthMethod],
        principals: Option<&[&str]>,
    ) -> (RouteAuth, IntCounterVec) {
        let keys = api_key::ApiKeys::new(
            http::header::HeaderName::from_static("x-api-key"),
            vec![
                (sha2::Sha256::digest(b"alice-key").into(), "alice".into()),
                (sha2::Sha256::digest(b"bob-key").into(), "bob".into()),
            ],
        );
        let family = IntCounterVec::new(
            prometheus::Opts::new("fedgate_auth_attempts_total", "test"),
            &["route", "method", "result"],
        )
        .unwrap();
        let rc = RouteAuthConfig {
            methods: methods.to_vec(),
            principals: principals.map(|p| p.iter().map(|s| s.to_string()).collect()),
        };
        let config = Arc::new(AuthConfig {
            api_keys: keys,
            jwt: None,
        });
        (RouteAuth::new("r", &rc, config, &family), family)
    }

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_static(v));
        }
        h
    }

    fn count(family: &IntCounterVec, method: &str, result: &str) -> u64 {
        family.with_label_values(&["r", method, result]).get()
    }

    #[test]
    fn the_first_credential_carried_decides_and_counts_once() {
        let (auth, family) = route_auth(&[AuthMethod::Mtls, AuthMethod::ApiKey], None);
        let peer: Arc<str> = "svc.example".into();
        assert_eq!(
            auth.check(&headers(&[("x-api-key", "alice-key")]), Some(&peer))
                .unwrap()
                .as_ref(),
            "svc.example"
        );
        assert_eq!(
            auth.check(&headers(&[("x-api-key", "alice-key")]), None)
                .unwrap()
                .as_ref(),
            "alice"
        );
        let r = auth
            .check(&headers(&[("x-api-key", "wrong")]), None)
            .unwrap_err();
        assert_eq!(
            (r.method, r.result),
            (AuthMethod::ApiKey, AuthResult::Invalid)
        );
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
        // Nothing at all: counted as the first method the route lists.
        let r = auth.check(&HeaderMap::new(), None).unwrap_err();
        assert_eq!(
            (r.method, r.result),
            (AuthMethod::Mtls, AuthResult::Missing)
        );
        assert_eq!(count(&family, "mtls", "ok"), 1);
        assert_eq!(count(&family, "api_key", "ok"), 1);
        assert_eq!(count(&family, "api_key", "invalid"), 1);
        assert_eq!(count(&family, "mtls", "missing"), 1);
        assert_eq!(count(&family, "api_key", "missing"), 0);
        assert_eq!(
            auth.challenge(),
            "Certificate realm=\"fedgate\", ApiKey realm=\"fedgate\""
        );
    }

    #[test]
    fn principals_outside_the_allow_list_are_forbidden() {
        let (auth, family) = route_auth(&[AuthMethod::ApiKey], Some(&["alice"]));
        assert!(auth
            .check(&headers(&[("x-api-key", "alice-key")]), None)
            .is_ok());
        let r = auth
            .check(&headers(&[("x-api-key", "bob-key")]), None)
            .unwrap_err();
        assert_eq!(r.result, AuthResult::Forbidden);
        assert_eq!(r.status(), StatusCode::FORBIDDEN);
        assert_eq!(count(&family, "api_key", "forbidden"), 1);
        assert_eq!(count(&family, "api_key", "ok"), 1);
    }

    #[test]
    fn a_bearer_token_on_a_route_without_jwt_is_no_credential() {
        let (auth, family) = route_auth(&[AuthMethod::ApiKey], None);
        let r = auth
            .check(&headers(&[("authorization", "Bearer abc.def.ghi")]), None)
            .unwrap_err();
        assert_eq!(r.result, AuthResult::Missing);
        assert_eq!(count(&family, "api_key", "missing"), 1);
    }
}
