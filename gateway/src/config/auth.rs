//! Validation of phase 5's settings: `[auth]`, each route's `auth` and `principals`, and the
//! client-certificate keys of `[listeners.tls]`. Keys and the JWKS file are parsed here, so a
//! bad hash or key file refuses the config (and a reload) and names the field.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use http::header::HeaderName;

use super::parse::{duration_or_zero, resolve};
use super::{file, ConfigError, ListenerConfig, RouteConfig};
use crate::auth::jwt::{Expectations, JwtVerifier};
use crate::auth::{api_key, AuthConfig, AuthMethod, RouteAuthConfig};

/// mTLS on a TLS listener: the CAs client certificates must chain to.
#[derive(Clone)]
pub struct ClientAuth {
    /// The CAs of `client_ca_file` (a PEM bundle), loaded when the config is.
    pub roots: Arc<rustls::RootCertStore>,
    /// `false` (`client_auth = "optional"`): a client may present no certificate.
    pub required: bool,
}

impl std::fmt::Debug for ClientAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientAuth")
            .field("roots", &self.roots.len())
            .field("required", &self.required)
            .finish()
    }
}

/// `listeners[].tls.client_auth`: whether a client must present a certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClientAuthMode {
    /// No handshake without a valid client certificate.
    Required,
    /// A client may present none; one it presents must verify.
    Optional,
}

/// Default clock tolerance for `exp` and `nbf`.
const DEFAULT_LEEWAY: Duration = Duration::from_secs(60);

pub(super) fn validate_auth(s: &file::AuthSection, base: &Path) -> Result<AuthConfig, ConfigError> {
    let header_name = s
        .api_key_header
        .as_deref()
        .unwrap_or(api_key::DEFAULT_HEADER)
        .trim()
        .to_ascii_lowercase();
    let header = HeaderName::from_bytes(header_name.as_bytes()).map_err(|_| {
        ConfigError::field(
            "auth.api_key_header",
            format!("{header_name:?} is not a valid header name"),
        )
    })?;
    let mut keys: Vec<([u8; 32], Arc<str>)> = Vec::with_capacity(s.api_keys.len());
    for (i, k) in s.api_keys.iter().enumerate() {
        let field = |f: &str| format!("auth.api_keys[{i}].{f}");
        let principal = k
            .principal
            .as_deref()
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .ok_or_else(|| ConfigError::field(field("principal"), "missing"))?;
        let hex = k
            .sha256
            .as_deref()
            .ok_or_else(|| ConfigError::field(field("sha256"), "missing"))?;
        let digest =
            api_key::parse_digest(hex).map_err(|m| ConfigError::field(field("sha256"), m))?;
        if keys.iter().any(|(d, _)| *d == digest) {
            return Err(ConfigError::field(
                field("sha256"),
                "the same key is listed twice",
            ));
        }
        keys.push((digest, principal.into()));
    }
    let jwt = match &s.jwt {
        None => None,
        Some(j) => Some(Arc::new(validate_jwt(j, base)?)),
    };
    Ok(AuthConfig {
        api_keys: api_key::ApiKeys::new(header, keys),
        jwt,
    })
}

fn validate_jwt(j: &file::JwtSection, base: &Path) -> Result<JwtVerifier, ConfigError> {
    let required = |v: &Option<String>, f: &str| {
        v.as_deref()
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .map(str::to_string)
            .ok_or_else(|| ConfigError::field(format!("auth.jwt.{f}"), "missing"))
    };
    let jwks_file = required(&j.jwks_file, "jwks_file")?;
    let issuer = required(&j.issuer, "issuer")?;
    let audience = required(&j.audience, "audience")?;
    let leeway = duration_or_zero("auth.jwt.leeway", j.leeway.as_deref(), DEFAULT_LEEWAY)?;
    if leeway > Duration::from_secs(3600) {
        return Err(ConfigError::field("auth.jwt.leeway", "at most 1h"));
    }
    let algorithms = match &j.algorithms {
        None => None,
        Some(list) if list.is_empty() => {
            return Err(ConfigError::field(
                "auth.jwt.algorithms",
                "list at least one algorithm, or leave it out",
            ))
        }
        Some(list) => Some(
            list.iter()
                .enumerate()
                .map(|(i, a)| {
                    crate::auth::jwt::algorithm(a).ok_or_else(|| {
                        ConfigError::field(
                            format!("auth.jwt.algorithms[{i}]"),
                            format!("{a:?} is not one of HS256, RS256, ES256, EdDSA"),
                        )
                    })
                })
                .collect::<Result<Vec<_>, _>>()?,
        ),
    };
    let expect = Expectations {
        issuer,
        audience,
        leeway,
        algorithms,
    };
    JwtVerifier::load(&resolve(base, &jwks_file), &expect)
        .map_err(|m| ConfigError::field("auth.jwt.jwks_file", m))
}

/// A route's `auth` and `principals`, checked on their own.
pub(super) fn validate_route_auth(
    i: usize,
    r: &file::RouteSection,
) -> Result<Option<RouteAuthConfig>, ConfigError> {
    let Some(names) = &r.auth else {
        if r.principals.is_some() {
            return Err(ConfigError::field(
                format!("routes[{i}].principals"),
                "principals need `auth` methods to authenticate them",
            ));
        }
        return Ok(None);
    };
    if names.is_empty() {
        return Err(ConfigError::field(
            format!("routes[{i}].auth"),
            "list at least one of api_key, jwt, mtls, or leave `auth` out",
        ));
    }
    let mut methods = Vec::with_capacity(names.len());
    for (j, &m) in names.iter().enumerate() {
        if methods.contains(&m) {
            return Err(ConfigError::field(
                format!("routes[{i}].auth[{j}]"),
                format!("{:?} is listed twice", m.as_str()),
            ));
        }
        methods.push(m);
    }
    let principals = match &r.principals {
        None => None,
        Some(list) => {
            for (j, p) in list.iter().enumerate() {
                if p.trim().is_empty() {
                    return Err(ConfigError::field(
                        format!("routes[{i}].principals[{j}]"),
                        "empty",
                    ));
                }
            }
            Some(list.iter().map(|p| p.trim().to_string()).collect())
        }
    };
    Ok(Some(RouteAuthConfig {
        methods,
        principals,
    }))
}

/// Every method a route accepts has what it needs: keys, a JWKS, a listener that asks for
/// client certificates.
pub(super) fn check_route_methods(
    routes: &[RouteConfig],
    auth: &AuthConfig,
    listeners: &[ListenerConfig],
) -> Result<(), ConfigError> {
    let mtls = listeners
        .iter()
        .any(|l| l.tls.as_ref().is_some_and(|t| t.client_auth.is_some()));
    for (i, r) in routes.iter().enumerate() {
        let Some(ra) = &r.auth else { continue };
        for (j, m) in ra.methods.iter().enumerate() {
            let missing = match m {
                AuthMethod::ApiKey => auth
                    .api_keys
                    .is_empty()
                    .then_some("no [[auth.api_keys]] are configured"),
                AuthMethod::Jwt => auth.jwt.is_none().then_some("no [auth.jwt] is configured"),
                AuthMethod::Mtls => (!mtls)
                    .then_some("no TLS listener asks for client certificates (client_ca_file)"),
            };
            if let Some(m) = missing {
                return Err(ConfigError::field(format!("routes[{i}].auth[{j}]"), m));
            }
        }
    }
    Ok(())
}

/// `client_ca_file` and `client_auth` of listener `i`.
pub(super) fn validate_client_auth(
    i: usize,
    t: &file::ListenerTlsSection,
    base: &Path,
) -> Result<Option<ClientAuth>, ConfigError> {
    let field = |f: &str| format!("listeners[{i}].tls.{f}");
    let Some(ca) = &t.client_ca_file else {
        if t.client_auth.is_some() {
            return Err(ConfigError::field(
                field("client_auth"),
                "needs client_ca_file to verify client certificates against",
            ));
        }
        return Ok(None);
    };
    let required = t.client_auth.unwrap_or(ClientAuthMode::Required) == ClientAuthMode::Required;
    let roots = crate::tls::load_roots(&resolve(base, ca))
        .map_err(|e| ConfigError::field(field("client_ca_file"), e))?;
    Ok(Some(ClientAuth {
        roots: Arc::new(roots),
        required,
    }))
}

#[cfg(test)]
mod tests {
    use super::super::{from_str, Config, ConfigError};
    use crate::auth::AuthMethod;

    const BASE: &str = r#"
[[listeners]]
address = "127.0.0.1:0"
[upstreams.app]
endpoints = ["http://127.0.0.1:3000"]
"#;
    /// SHA-256 of "secret-key".
    const DIGEST: &str = "85dbe15d75ef9308c7ae0f33c7a324cc6f4bf519a2ed2f3027bd33c140a4f9aa";

    fn parse(extra: &str, dir: &std::path::Path) -> Result<Config, ConfigError> {
        from_str(&format!("{BASE}{extra}"), dir)
    }

    fn field_of(extra: &str, dir: &std::path::Path) -> String {
        match parse(extra, dir) {
            Err(ConfigError::Field { field, .. }) => field,
            other => panic!("expected a field error, got {other:?}"),
        }
    }

    fn jwks_dir() -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(
            d.path().join("jwks.json"),
            r#"{"keys": [{"kty": "oct", "kid": "a", "k": "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY"}]}"#,
        )
        .unwrap();
        std::fs::write(
            d.path().join("bad.json"),
            r#"{"keys": [{"kty": "oct", "k": "c2hvcnQ"}]}"#,
        )
        .unwrap();
        d
    }

    const JWT: &str = "[auth.jwt]\njwks_file = \"jwks.json\"\nissuer = \"https://id.example\"\naudience = \"fedgate\"\n";

    #[test]
    fn a_full_auth_config_loads() {
        let d = jwks_dir();
        let text = format!(
            "[auth]\napi_key_header = \"Authorization\"\n[[auth.api_keys]]\nprincipal = \"alice\"\nsha256 = \"{DIGEST}\"\n{JWT}leeway = \"0s\"\n\
             [[routes]]\nupstream = \"app\"\nauth = [\"jwt\", \"api_key\"]\nprincipals = [\"alice\"]\n"
        );
        let c = parse(&text, d.path()).unwrap();
        assert_eq!(c.auth.api_keys.len(), 1);
        assert_eq!(c.auth.api_keys.header(), "authorization");
        assert_eq!(c.auth.jwt.as_ref().unwrap().keys(), 1);
        let ra = c.routes[0].auth.as_ref().unwrap();
        assert_eq!(ra.methods, vec![AuthMethod::Jwt, AuthMethod::ApiKey]);
        assert_eq!(ra.principals.as_deref(), Some(&["alice".to_string()][..]));
        // Without `auth` a route has nothing to do in phase 5.
        let open = parse("[[routes]]\nupstream = \"app\"\n", d.path()).unwrap();
        assert!(open.routes[0].auth.is_none());
        assert_eq!(open.auth.api_keys.header(), "x-api-key");
    }

    #[test]
    fn bad_auth_settings_name_the_field() {
        let d = jwks_dir();
        let route = |auth: &str| format!("[[routes]]\nupstream = \"app\"\n{auth}\n");
        let key = format!("[[auth.api_keys]]\nprincipal = \"alice\"\nsha256 = \"{DIGEST}\"\n");
        let cases: Vec<(String, &str)> = vec![
            (
                "[[auth.api_keys]]\nprincipal = \"a\"\nsha256 = \"abc\"\n".into(),
                "auth.api_keys[0].sha256",
            ),
            (
                format!(
                    "[[auth.api_keys]]\nprincipal = \"a\"\nsha256 = \"{}\"\n",
                    "zz".repeat(32)
                ),
                "auth.api_keys[0].sha256",
            ),
            (
                format!("[[auth.api_keys]]\nsha256 = \"{DIGEST}\"\n"),
                "auth.api_keys[0].principal",
            ),
            (
                format!("{key}[[auth.api_keys]]\nprincipal = \"b\"\nsha256 = \"{DIGEST}\"\n"),
                "auth.api_keys[1].sha256",
            ),
            (
                "[auth]\napi_key_header = \"x api key\"\n".into(),
                "auth.api_key_header",
            ),
            (
                JWT.replace("jwks.json", "missing.json"),
                "auth.jwt.jwks_file",
            ),
            (JWT.replace("jwks.json", "bad.json"), "auth.jwt.jwks_file"),
            (
                JWT.replace("issuer = \"https://id.example\"\n", ""),
                "auth.jwt.issuer",
            ),
            (
                JWT.replace("audience = \"fedgate\"\n", ""),
                "auth.jwt.audience",
            ),
            (format!("{JWT}leeway = \"soon\"\n"), "auth.jwt.leeway"),
            (
                format!("{JWT}algorithms = [\"RS256\", \"PS256\"]\n"),
                "auth.jwt.algorithms[1]",
            ),
            (route("auth = [\"password\"]"), "routes[0].auth[0]"),
            (
                format!("{key}{}", route("auth = [\"api_key\", \"api_key\"]")),
                "routes[0].auth[1]",
            ),
            (route("auth = []"), "routes[0].auth"),
            (route("principals = [\"alice\"]"), "routes[0].principals"),
            (route("auth = [\"api_key\"]"), "routes[0].auth[0]"),
            (
                format!("{key}{}", route("auth = [\"api_key\", \"jwt\"]")),
                "routes[0].auth[1]",
            ),
            (
                format!("{key}{}", route("auth = [\"mtls\"]")),
                "routes[0].auth[0]",
            ),
        ];
        for (extra, want) in cases {
            assert_eq!(field_of(&extra, d.path()), want, "{extra}");
        }
        let missing = parse(&JWT.replace("jwks.json", "missing.json"), d.path()).unwrap_err();
        assert!(missing.to_string().contains("missing.json"), "{missing}");
    }

    #[test]
    fn client_auth_needs_a_ca_and_a_known_mode() {
        let d = jwks_dir();
        let tls = |extra: &str| {
            format!(
                "[[listeners]]\naddress = \"127.0.0.1:0\"\n[listeners.tls]\ncertificates = [{{ cert = \"c.pem\", key = \"k.pem\" }}]\n{extra}"
            )
        };
        // Certificates are checked first; these fail on them, so build real ones.
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["gw.example".to_string()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        std::fs::write(d.path().join("c.pem"), cert.pem()).unwrap();
        std::fs::write(d.path().join("k.pem"), key.serialize_pem()).unwrap();
        assert_eq!(
            field_of(&tls("client_auth = \"optional\"\n"), d.path()),
            "listeners[1].tls.client_auth"
        );
        assert_eq!(
            field_of(
                &tls("client_ca_file = \"c.pem\"\nclient_auth = \"sometimes\"\n"),
                d.path()
            ),
            "listeners[1].tls.client_auth"
        );
        assert_eq!(
            field_of(&tls("client_ca_file = \"nope.pem\"\n"), d.path()),
            "listeners[1].tls.client_ca_file"
        );
        let ok = parse(
            &format!(
                "{}[[routes]]\nupstream = \"app\"\nauth = [\"mtls\"]\n",
                tls("client_ca_file = \"c.pem\"\nclient_auth = \"optional\"\n")
            ),
            d.path(),
        )
        .unwrap();
        let ca = ok.listeners[1]
            .tls
            .as_ref()
            .unwrap()
            .client_auth
            .as_ref()
            .unwrap();
        assert!(!ca.required);
    }
}
