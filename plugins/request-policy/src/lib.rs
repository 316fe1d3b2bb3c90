//! Refuses requests that break the operator's policy: missing required fields, a denied user
//! agent, a content type outside the allowed ones, or a body over the size limit.
//!
//! Runs in `on-request`. Each check is off until configured. Checks run in a fixed order
//! (`required_headers`, `user_agent`, `content_type`, `body_size`); the first that fails
//! refuses the request, with 403 (413 for `body_size`) and a short body. In `observe` mode
//! nothing is refused: every check runs and failures are only counted.
//!
//! `policy_decisions_total{rule,decision}` counts each request once as `{none, allow}` when
//! it goes on, or `{<rule>, deny}` with the check that refused it; in `observe` mode every
//! check that would have refused it adds `{<rule>, would_deny}` as well.
//!
//! It stays an **inline** plugin (it decides), unlike the metric plugins, which observe. The
//! fields its checks read (the required ones, `user-agent`, `content-type`,
//! `content-length`) are registered at `init`, so each request costs one host call for all
//! of them (`declared-headers`) rather than one per field.

use std::borrow::Cow;
use std::fmt;

use fedgate_sdk::{
    export_plugin, log, Config, Counter, CounterSeries, DeclaredHeaders, Hooks, Plugin, Request,
    Verdict,
};
use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Settings {
    /// Field names that must be present with a non-blank value.
    #[serde(default)]
    required_headers: Vec<String>,
    /// Glob patterns (`*`, `?`), matched case-insensitively against the whole `User-Agent`.
    #[serde(default)]
    denied_user_agents: Vec<String>,
    /// Media types (`application/activity+json`, or `application/*`) allowed for requests
    /// with a body.
    #[serde(default)]
    allowed_content_types: Vec<String>,
    /// The largest body allowed: bytes, or a size such as `"1MiB"`.
    #[serde(default)]
    max_body_size: Option<Size>,
    /// `enforce` refuses; `observe` only counts.
    #[serde(default)]
    mode: Mode,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Mode {
    #[default]
    Enforce,
    Observe,
}

/// A byte count, written as a number or as a string with a unit (`B`, `kB`, `KiB`, `MB`,
/// `MiB`, `GB`, `GiB`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Size(u64);

impl<'de> Deserialize<'de> for Size {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct SizeVisitor;

        impl Visitor<'_> for SizeVisitor {
            type Value = Size;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a number of bytes or a size such as \"1MiB\"")
            }

            fn visit_u64<E: de::Error>(self, bytes: u64) -> Result<Size, E> {
                Ok(Size(bytes))
            }

            fn visit_i64<E: de::Error>(self, bytes: i64) -> Result<Size, E> {
                u64::try_from(bytes)
                    .map(Size)
                    .map_err(|_| E::custom("a size cannot be negative"))
            }

            fn visit_str<E: de::Error>(self, text: &str) -> Result<Size, E> {
                parse_size(text).map(Size).map_err(E::custom)
            }
        }

        deserializer.deserialize_any(SizeVisitor)
    }
}

fn parse_size(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: u64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a size such as \"1MiB\""))?;
    let multiplier: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kb" => 1_000,
        "kib" => 1 << 10,
        "mb" => 1_000_000,
        "mib" => 1 << 20,
        "gb" => 1_000_000_000,
        "gib" => 1 << 30,
        other => return Err(format!("unknown size unit {other:?} in {text:?}")),
    };
    number
        .checked_mul(multiplier)
        .ok_or_else(|| format!("{text:?} is too large"))
}

/// The checks, in the order they run; the `rule` label of each.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Rule {
    RequiredHeaders,
    UserAgent,
    ContentType,
    BodySize,
}

impl Rule {
    fn label(self) -> &'static str {
        match self {
            Rule::RequiredHeaders => "required_headers",
            Rule::UserAgent => "user_agent",
            Rule::ContentType => "content_type",
            Rule::BodySize => "body_size",
        }
    }
}

/// Why a check failed: the status and the short body the client gets.
struct Failure {
    status: u16,
    body: String,
}

impl Failure {
    fn forbidden(body: impl Into<String>) -> Self {
        Failure {
            status: 403,
            body: body.into(),
        }
    }
}

/// The most request fields a plugin may register (the ABI's bound).
const MAX_FIELDS: usize = fedgate_sdk::MAX_REQUEST_HEADERS;

/// The request's fields the checks read: the registered ones from one `declared-headers`
/// call, any others (beyond the registration's bound) one call each.
struct Fields<'a> {
    names: &'a [String],
    values: DeclaredHeaders,
    request: &'a Request,
}

impl Fields<'_> {
    /// The first value of `name` (lowercase): borrowed when it was registered, so a check
    /// copies nothing.
    fn get(&self, name: &str) -> Option<Cow<'_, str>> {
        match self.names.iter().position(|known| known == name) {
            Some(index) => self.values.get(index).map(Cow::Borrowed),
            None => self.request.header(name).map(Cow::Owned),
        }
    }
}

/// A configured check with its counter of refusals (or, in `observe` mode, of requests it
/// would have refused), resolved at `init` so counting costs one host call.
#[derive(Debug)]
struct Check {
    rule: Rule,
    deny: CounterSeries,
}

#[derive(Debug)]
struct RequestPolicy {
    required_headers: Vec<String>,
    denied_user_agents: Vec<String>,
    allowed_content_types: Vec<String>,
    max_body_size: Option<u64>,
    mode: Mode,
    checks: Vec<Check>,
    /// Requests that went on: `{rule="none", decision="allow"}` (with checks configured).
    allowed: Option<CounterSeries>,
    /// The request fields registered: what the checks read, at most [`MAX_FIELDS`].
    fields: Vec<String>,
}

impl Plugin for RequestPolicy {
    fn init(config: &Config) -> Result<Self, String> {
        let settings: Settings = config.parse()?;
        let required_headers = lowercase(settings.required_headers);
        if let Some(name) = required_headers.iter().find(|name| !is_token(name)) {
            return Err(format!(
                "invalid config: `required_headers`: {name:?} is not a field name"
            ));
        }
        let denied_user_agents = lowercase(settings.denied_user_agents);
        if denied_user_agents.iter().any(String::is_empty) {
            return Err("invalid config: `denied_user_agents`: a pattern is empty".to_owned());
        }
        let allowed_content_types = lowercase(settings.allowed_content_types);
        if let Some(media) = allowed_content_types
            .iter()
            .find(|media| !is_media_type(media))
        {
            return Err(format!(
                "invalid config: `allowed_content_types`: {media:?} is not a media type \
                 such as \"application/activity+json\" or \"application/*\""
            ));
        }
        let max_body_size = settings.max_body_size.map(|Size(bytes)| bytes);

        let mut rules = Vec::new();
        if !required_headers.is_empty() {
            rules.push(Rule::RequiredHeaders);
        }
        if !denied_user_agents.is_empty() {
            rules.push(Rule::UserAgent);
        }
        if !allowed_content_types.is_empty() {
            rules.push(Rule::ContentType);
        }
        if max_body_size.is_some() {
            rules.push(Rule::BodySize);
        }

        let decisions = Counter::declare(
            "policy_decisions_total",
            "Requests by policy decision: allow (rule none), or deny with the rule that \
             refused; would_deny for each rule that would have refused, in observe mode.",
            &["rule", "decision"],
        )?;
        let refused = match settings.mode {
            Mode::Enforce => "deny",
            Mode::Observe => "would_deny",
        };
        let checks: Vec<Check> = rules
            .into_iter()
            .map(|rule| Check {
                rule,
                deny: decisions.series(&[rule.label(), refused]),
            })
            .collect();
        let allowed = (!checks.is_empty()).then(|| decisions.series(&["none", "allow"]));
        let mut fields: Vec<String> = Vec::new();
        for check in &checks {
            let names: Vec<String> = match check.rule {
                Rule::RequiredHeaders => required_headers.clone(),
                Rule::UserAgent => vec!["user-agent".to_owned()],
                Rule::ContentType => vec!["content-type".to_owned(), "content-length".to_owned()],
                Rule::BodySize => vec!["content-length".to_owned()],
            };
            for name in names {
                if !fields.contains(&name) && fields.len() < MAX_FIELDS {
                    fields.push(name);
                }
            }
        }
        Ok(RequestPolicy {
            required_headers,
            denied_user_agents,
            allowed_content_types,
            max_body_size,
            mode: settings.mode,
            checks,
            allowed,
            fields,
        })
    }

    fn hooks(&self) -> Hooks {
        if self.checks.is_empty() {
            Hooks::NONE
        } else {
            Hooks::ON_REQUEST
        }
    }

    fn request_headers(&self) -> Vec<String> {
        self.fields.clone()
    }

    fn on_request(&mut self, request: &Request) -> Verdict {
        let fields = Fields {
            names: &self.fields,
            values: request.declared_headers(),
            request,
        };
        let content_length = content_length(&fields);
        for check in &self.checks {
            let rule = check.rule;
            let outcome = match rule {
                Rule::RequiredHeaders => self.check_required_headers(&fields),
                Rule::UserAgent => self.check_user_agent(&fields),
                Rule::ContentType => self.check_content_type(&fields, content_length),
                Rule::BodySize => self.check_body_size(request, content_length),
            };
            let Err(failure) = outcome else {
                continue;
            };
            check.deny.inc();
            if self.mode == Mode::Observe {
                log::debug!(
                    "request {} would be refused by {} ({})",
                    request.request_id(),
                    rule.label(),
                    failure.body
                );
                continue;
            }
            log::debug!(
                "refused request {} by {} ({})",
                request.request_id(),
                rule.label(),
                failure.body
            );
            return Verdict::deny(failure.status, failure.body);
        }
        if let Some(allowed) = self.allowed {
            allowed.inc();
        }
        Verdict::Continue
    }
}

/// The request's `Content-Length`, when it is a number. (A request with conflicting
/// lengths never gets this far: the gateway refuses it as malformed.)
fn content_length(fields: &Fields<'_>) -> Option<u64> {
    fields.get("content-length")?.trim().parse().ok()
}

impl RequestPolicy {
    fn check_required_headers(&self, fields: &Fields<'_>) -> Result<(), Failure> {
        for name in &self.required_headers {
            // A blank first value may be followed by a real one: only then read them all.
            let present = match fields.get(name) {
                Some(value) if !value.trim().is_empty() => true,
                Some(_) => fields
                    .request
                    .header_values(name)
                    .iter()
                    .any(|value| !value.trim().is_empty()),
                None => false,
            };
            if !present {
                return Err(Failure::forbidden(format!(
                    "missing required header: {name}"
                )));
            }
        }
        Ok(())
    }

    fn check_user_agent(&self, fields: &Fields<'_>) -> Result<(), Failure> {
        let Some(agent) = fields.get("user-agent") else {
            return Ok(());
        };
        // Patterns are lowercase; nearly every agent is ASCII and is compared as it is.
        let lowered;
        let agent = if agent.is_ascii() {
            &*agent
        } else {
            lowered = agent.to_lowercase();
            lowered.as_str()
        };
        if self
            .denied_user_agents
            .iter()
            .any(|pattern| glob_match(pattern, agent))
        {
            return Err(Failure::forbidden("user agent not allowed"));
        }
        Ok(())
    }

    /// Requests with a body must declare an allowed content type. A request has a body when
    /// its `Content-Length` is above 0 or, without one, when the gateway buffered a non-empty
    /// body for it. A request whose body cannot be told (no `Content-Length`, nothing
    /// buffered) is checked only if it declares a content type.
    fn check_content_type(
        &self,
        fields: &Fields<'_>,
        content_length: Option<u64>,
    ) -> Result<(), Failure> {
        let content_type = fields.get("content-type");
        let has_body = match content_length {
            Some(length) => length > 0,
            None => fields.request.body().is_some_and(|body| !body.is_empty()),
        };
        let Some(content_type) = content_type else {
            return if has_body {
                Err(Failure::forbidden("missing content type"))
            } else {
                Ok(())
            };
        };
        if content_length == Some(0) {
            return Ok(());
        }
        // Allowed types are lowercase; the request's is compared case-insensitively.
        let media = content_type.split(';').next().unwrap_or_default().trim();
        let allowed =
            self.allowed_content_types
                .iter()
                .any(|allowed| match allowed.strip_suffix("/*") {
                    Some(kind) => media
                        .split_once('/')
                        .is_some_and(|(media_kind, _)| media_kind.eq_ignore_ascii_case(kind)),
                    None => allowed.eq_ignore_ascii_case(media),
                });
        if allowed {
            Ok(())
        } else {
            Err(Failure::forbidden("content type not allowed"))
        }
    }

    /// `Content-Length` over the limit fails; without one, the buffered body is measured.
    fn check_body_size(
        &self,
        request: &Request,
        content_length: Option<u64>,
    ) -> Result<(), Failure> {
        let Some(limit) = self.max_body_size else {
            return Ok(());
        };
        let size = match content_length {
            Some(length) => length,
            None => request
                .body()
                .map_or(0, |body| u64::try_from(body.len()).unwrap_or(u64::MAX)),
        };
        if size > limit {
            return Err(Failure {
                status: 413,
                body: "request body too large".to_owned(),
            });
        }
        Ok(())
    }
}

fn lowercase(values: Vec<String>) -> Vec<String> {
    values
        .into_iter()
        .map(|value| value.trim().to_lowercase())
        .collect()
}

fn is_token(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

fn is_media_type(media: &str) -> bool {
    media
        .split_once('/')
        .is_some_and(|(kind, sub)| is_token(kind) && (sub == "*" || is_token(sub)))
}

/// Whether `text` matches `pattern` as a whole: `*` matches any run of characters (also
/// none), `?` exactly one, everything else itself, ASCII letters of `text` in either case
/// (`pattern` is lowercase).
fn glob_match(pattern: &str, text: &str) -> bool {
    let (pattern, text) = (pattern.as_bytes(), text.as_bytes());
    // Positions stay on character boundaries: a literal matches whole UTF-8 sequences, and
    // `?` and a `*` that swallows one more step over a whole character.
    let char_len = |at: usize| match text[at] {
        b if b < 0x80 => 1,
        b if b >= 0xf0 => 4,
        b if b >= 0xe0 => 3,
        _ => 2,
    };
    let (mut p, mut t) = (0, 0);
    // Where the last `*` was, and where in the text it started matching.
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        match pattern.get(p) {
            Some(b'*') => {
                star = Some((p, t));
                p += 1;
            }
            Some(b'?') => {
                p += 1;
                t += char_len(t);
            }
            Some(&c) if c == text[t].to_ascii_lowercase() => {
                p += 1;
                t += 1;
            }
            _ => match star {
                // Let the last `*` swallow one more character and retry.
                Some((star_p, star_t)) => {
                    let next = star_t + char_len(star_t);
                    p = star_p + 1;
                    t = next;
                    star = Some((star_p, next));
                }
                None => return false,
            },
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
}

export_plugin!(RequestPolicy);

#[cfg(test)]
mod tests {
    use super::*;
    use fedgate_sdk::testing::{self, TestRequest};

    fn plugin(config: &str) -> RequestPolicy {
        testing::init(config).expect("config is valid")
    }

    fn decisions(rule: &str, decision: &str) -> f64 {
        testing::counter_value("policy_decisions_total", &[rule, decision])
    }

    #[test]
    fn nothing_configured_checks_nothing() {
        let mut p = plugin("{}");
        assert_eq!(p.hooks(), Hooks::NONE);
        assert_eq!(
            p.on_request(&TestRequest::post("/x").body("x").build()),
            Verdict::Continue
        );
        assert!(testing::series("policy_decisions_total").is_empty());
    }

    #[test]
    fn required_headers_must_be_present_and_not_blank() {
        let mut p = plugin(r#"{"required_headers": ["User-Agent", "date"]}"#);
        assert_eq!(p.hooks(), Hooks::ON_REQUEST);
        let ok = TestRequest::get("/")
            .header("user-agent", "a")
            .header("date", "d")
            .build();
        assert_eq!(p.on_request(&ok), Verdict::Continue);
        let blank = TestRequest::get("/")
            .header("user-agent", " ")
            .header("date", "d")
            .build();
        let verdict = p.on_request(&blank);
        assert_eq!(verdict.status(), Some(403));
        assert_eq!(
            verdict.body_text(),
            Some("missing required header: user-agent")
        );
        let missing = TestRequest::get("/").header("user-agent", "a").build();
        assert_eq!(
            p.on_request(&missing).body_text(),
            Some("missing required header: date")
        );
        assert_eq!(decisions("none", "allow"), 1.0);
        assert_eq!(decisions("required_headers", "deny"), 2.0);
    }

    #[test]
    fn denied_user_agents_match_globs_without_case() {
        let mut p = plugin(r#"{"denied_user_agents": ["*python-requests*", "curl/?.*", "Bad"]}"#);
        for (agent, denied) in [
            ("python-requests/2.31", true),
            ("Mozilla/5.0 Python-Requests/2", true),
            ("curl/8.5.0", true),
            ("curl/10.0", false),
            ("bad", true),
            ("badder", false),
            (
                "Mastodon/4.2.0 (http.rb/5.1.1; +https://example.org/)",
                false,
            ),
        ] {
            let verdict = p.on_request(&TestRequest::get("/").header("user-agent", agent).build());
            assert_eq!(verdict.is_deny(), denied, "{agent}");
        }
        // No user agent is not a denied one (`required_headers` can demand one).
        assert!(p.on_request(&TestRequest::get("/").build()).is_continue());
        assert_eq!(decisions("user_agent", "deny"), 4.0);
        assert_eq!(decisions("none", "allow"), 4.0);
    }

    #[test]
    fn checked_fields_are_registered_and_read_in_one_call() {
        let p = plugin(
            r#"{"required_headers": ["Date", "user-agent"], "denied_user_agents": ["x"],
                "allowed_content_types": ["text/*"], "max_body_size": 10}"#,
        );
        assert_eq!(
            p.request_headers(),
            ["date", "user-agent", "content-type", "content-length"]
        );
        assert!(plugin("{}").request_headers().is_empty());
        // Past the registration's bound, the other fields are read one by one.
        let names: Vec<String> = (0..40).map(|n| format!("\"x-{n}\"")).collect();
        let mut p = plugin(&format!(r#"{{"required_headers": [{}]}}"#, names.join(",")));
        assert_eq!(p.request_headers().len(), 32);
        let mut request = TestRequest::get("/");
        for n in 0..40 {
            request = request.header(&format!("x-{n}"), "1");
        }
        assert!(p.on_request(&request.build()).is_continue());
        let missing_last = TestRequest::get("/").header("x-0", "1").build();
        assert_eq!(
            p.on_request(&missing_last).body_text(),
            Some("missing required header: x-1")
        );
    }

    #[test]
    fn a_blank_first_value_does_not_hide_a_real_one() {
        let mut p = plugin(r#"{"required_headers": ["x-a"]}"#);
        let request = TestRequest::get("/")
            .header("x-a", " ")
            .header("x-a", "set")
            .build();
        assert!(p.on_request(&request).is_continue());
    }

    #[test]
    fn globs() {
        assert!(glob_match("*", ""));
        assert!(glob_match("a*b*c", "axxbyyc"));
        assert!(glob_match("a*b", "abab"));
        assert!(!glob_match("a*b", "abac"));
        assert!(glob_match("??", "éa"));
        assert!(!glob_match("?", ""));
        assert!(glob_match("*x*", "xx"));
    }

    #[test]
    fn bodies_need_an_allowed_content_type() {
        let mut p = plugin(
            r#"{"allowed_content_types": ["application/activity+json", "Application/LD+JSON",
                                           "text/*"]}"#,
        );
        let post = |content_type: Option<&str>, length: Option<&str>| {
            let mut request = TestRequest::post("/inbox");
            if let Some(content_type) = content_type {
                request = request.header("content-type", content_type);
            }
            if let Some(length) = length {
                request = request.header("content-length", length);
            }
            request
        };
        let allowed = [
            post(Some("application/activity+json"), Some("10")),
            post(
                Some("application/ld+json; profile=\"https://www.w3.org/ns/activitystreams\""),
                Some("10"),
            ),
            post(Some("text/plain"), Some("3")),
            post(None, Some("0")),
            post(None, None),
            post(Some("application/x-www-form-urlencoded"), Some("0")),
        ];
        for request in allowed {
            let request = request.build();
            assert!(p.on_request(&request).is_continue(), "{request:?}");
        }
        let denied = [
            post(Some("application/json"), Some("10")),
            post(None, Some("10")),
            post(None, None).body("{}"),
            post(Some("multipart/form-data"), None),
        ];
        for request in denied {
            let request = request.build();
            let verdict = p.on_request(&request);
            assert_eq!(verdict.status(), Some(403), "{request:?}");
        }
        assert_eq!(decisions("content_type", "deny"), 4.0);
    }

    #[test]
    fn oversized_bodies_are_refused_with_413() {
        let mut p = plugin(r#"{"max_body_size": "1KiB"}"#);
        let small = TestRequest::post("/")
            .header("content-length", "1024")
            .build();
        assert!(p.on_request(&small).is_continue());
        let large = TestRequest::post("/")
            .header("content-length", "1025")
            .build();
        let verdict = p.on_request(&large);
        assert_eq!(verdict.status(), Some(413));
        assert_eq!(verdict.body_text(), Some("request body too large"));
        let buffered = TestRequest::post("/").body(vec![b'x'; 2048]).build();
        assert_eq!(p.on_request(&buffered).status(), Some(413));
        assert!(p.on_request(&TestRequest::post("/").build()).is_continue());
        assert_eq!(decisions("body_size", "deny"), 2.0);
        assert_eq!(decisions("none", "allow"), 2.0);

        let mut p = plugin(r#"{"max_body_size": 10}"#);
        let large = TestRequest::post("/")
            .header("content-length", "11")
            .build();
        assert_eq!(p.on_request(&large).status(), Some(413));
    }

    #[test]
    fn the_first_failing_check_decides() {
        let mut p = plugin(
            r#"{"required_headers": ["user-agent"], "denied_user_agents": ["*bot*"],
                "allowed_content_types": ["application/activity+json"],
                "max_body_size": 100}"#,
        );
        let request = TestRequest::post("/")
            .header("user-agent", "somebot")
            .header("content-length", "1000")
            .build();
        assert_eq!(
            p.on_request(&request).body_text(),
            Some("user agent not allowed")
        );
        assert_eq!(decisions("user_agent", "deny"), 1.0);
        assert_eq!(decisions("none", "allow"), 0.0);
        for rule in ["required_headers", "content_type", "body_size"] {
            assert_eq!(decisions(rule, "deny"), 0.0, "{rule}");
        }
    }

    #[test]
    fn observe_mode_counts_without_refusing() {
        let mut p =
            plugin(r#"{"mode": "observe", "denied_user_agents": ["*bot*"], "max_body_size": 100}"#);
        let request = TestRequest::post("/")
            .header("user-agent", "somebot")
            .header("content-length", "1000")
            .build();
        assert_eq!(p.on_request(&request), Verdict::Continue);
        assert_eq!(decisions("user_agent", "would_deny"), 1.0);
        assert_eq!(decisions("body_size", "would_deny"), 1.0);
        assert_eq!(decisions("none", "allow"), 1.0, "the request went on");
        assert_eq!(testing::logs().len(), 2);
    }

    #[test]
    fn sizes_parse_with_units() {
        assert_eq!(parse_size("512"), Ok(512));
        assert_eq!(parse_size("2kB"), Ok(2000));
        assert_eq!(parse_size("1 MiB"), Ok(1 << 20));
        assert_eq!(parse_size("3GB"), Ok(3_000_000_000));
        assert!(parse_size("1.5MiB").is_err());
        assert!(parse_size("MiB").is_err());
        assert!(parse_size("99999999999999GiB").is_err());
    }

    #[test]
    fn bad_configuration_is_refused_with_the_key() {
        for (config, key) in [
            (r#"{"max_body_size": "1 parsec"}"#, "`max_body_size`"),
            (r#"{"max_body_size": -1}"#, "`max_body_size`"),
            (r#"{"mode": "loud"}"#, "`mode`"),
            (
                r#"{"required_headers": ["bad name"]}"#,
                "`required_headers`",
            ),
            (r#"{"denied_user_agents": [""]}"#, "`denied_user_agents`"),
            (
                r#"{"allowed_content_types": ["json"]}"#,
                "`allowed_content_types`",
            ),
            (r#"{"max_body": 1}"#, "unknown field `max_body`"),
        ] {
            let error = testing::init::<RequestPolicy>(config).unwrap_err();
            assert!(error.contains(key), "{config}: {error}");
        }
    }
}
