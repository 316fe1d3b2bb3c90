//! Which requests are inbox deliveries, for plugins that read ActivityPub activities.

use serde::de::{Deserialize, Deserializer, Error as _};

use crate::{Exchange, Request};

/// Path endings that make a `POST` an inbox delivery: `/inbox` by default (personal and
/// shared inboxes alike); an empty list takes every `POST`. A plugin uses it as a setting:
///
/// ```
/// # use fedgate_sdk::InboxPaths;
/// #[derive(serde::Deserialize)]
/// struct Settings {
///     #[serde(default)]
///     path_suffixes: InboxPaths,
/// }
/// ```
///
/// Every suffix must start with `/`; the error names the one that does not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InboxPaths(Vec<String>);

impl Default for InboxPaths {
    fn default() -> Self {
        InboxPaths(vec!["/inbox".to_owned()])
    }
}

impl<'de> Deserialize<'de> for InboxPaths {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let suffixes = Vec::<String>::deserialize(deserializer)?;
        if let Some(suffix) = suffixes.iter().find(|s| !s.starts_with('/')) {
            return Err(D::Error::custom(format!(
                "{suffix:?} does not start with `/`"
            )));
        }
        Ok(InboxPaths(suffixes))
    }
}

impl InboxPaths {
    /// Whether `path` ends in one of the suffixes; trailing slashes are ignored on both.
    pub fn matches(&self, path: &str) -> bool {
        let path = path.trim_end_matches('/');
        self.0.is_empty()
            || self
                .0
                .iter()
                .any(|suffix| path.ends_with(suffix.trim_end_matches('/')))
    }

    /// Whether `request` is a `POST` to one of the paths.
    pub fn is_delivery(&self, request: &Request) -> bool {
        request.method().eq_ignore_ascii_case("POST") && self.matches(&request.path())
    }

    /// Whether the finished `exchange` was a `POST` to one of the paths (whatever became
    /// of it: see [`Exchange::admitted`]).
    pub fn is_delivery_exchange(&self, exchange: &Exchange<'_>) -> bool {
        exchange.method.eq_ignore_ascii_case("POST") && self.matches(&exchange.path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Config;

    #[derive(serde::Deserialize)]
    struct Settings {
        #[serde(default)]
        path_suffixes: InboxPaths,
    }

    #[test]
    fn inbox_paths_match_suffixes_and_name_bad_ones() {
        let default: Settings = Config::new("{}").parse().unwrap();
        assert!(default.path_suffixes.matches("/users/alice/inbox/"));
        assert!(default.path_suffixes.matches("/inbox"));
        assert!(!default.path_suffixes.matches("/users/alice/outbox"));
        let all: Settings = Config::new(r#"{"path_suffixes": []}"#).parse().unwrap();
        assert!(all.path_suffixes.matches("/anything"));
        let error = Config::new(r#"{"path_suffixes": ["inbox"]}"#)
            .parse::<Settings>()
            .err()
            .unwrap()
            .to_string();
        assert!(
            error.starts_with("invalid config: `path_suffixes`: \"inbox\" does not start with `/`"),
            "{error}"
        );
    }

    #[test]
    fn deliveries_are_posts_to_the_paths() {
        use crate::testing::{TestExchange, TestRequest};
        let paths = InboxPaths::default();
        assert!(paths.is_delivery(&TestRequest::post("/users/a/inbox").build()));
        assert!(!paths.is_delivery(&TestRequest::get("/users/a/inbox").build()));
        assert!(paths.is_delivery_exchange(&TestExchange::new("post", "/inbox/?x").build()));
        assert!(!paths.is_delivery_exchange(&TestExchange::post("/outbox").build()));
    }
}
