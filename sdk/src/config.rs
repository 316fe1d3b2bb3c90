//! The plugin's configuration: the `config` table of its gateway configuration entry, handed
//! to `init` as a JSON object.

use std::fmt;

use serde::de::DeserializeOwned;

/// The configuration given to [`Plugin::init`](crate::Plugin::init): a JSON object (`{}` when
/// the gateway configuration gives none).
///
/// ```
/// use fedgate_sdk::Config;
/// use serde::Deserialize;
///
/// #[derive(Debug, Deserialize)]
/// #[serde(deny_unknown_fields)]
/// struct Settings {
///     #[serde(default)]
///     max_instances: Option<usize>,
/// }
///
/// let settings: Settings = Config::new(r#"{"max_instances": 500}"#).parse().unwrap();
/// assert_eq!(settings.max_instances, Some(500));
///
/// let error = Config::new(r#"{"max_instances": "many"}"#).parse::<Settings>().unwrap_err();
/// assert_eq!(error.field(), "max_instances");
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    raw: String,
}

impl Config {
    /// Wraps a configuration document. The gateway does this before `init`; tests use it to
    /// hand a plugin its configuration.
    pub fn new(raw: impl Into<String>) -> Self {
        Config { raw: raw.into() }
    }

    /// The JSON text, exactly as the gateway passed it.
    pub fn raw(&self) -> &str {
        &self.raw
    }

    /// Deserializes the configuration into `T`. An empty document reads as `{}`.
    ///
    /// The error names the offending field (`thresholds.degraded_error_ratio`) and converts
    /// into the `String` that `init` returns, so `config.parse()?` reads naturally there.
    /// Use `#[serde(deny_unknown_fields)]` on `T` so misspelt keys are refused rather than
    /// ignored.
    pub fn parse<T: DeserializeOwned>(&self) -> Result<T, ConfigError> {
        let text = if self.raw.trim().is_empty() {
            "{}"
        } else {
            self.raw.as_str()
        };
        let mut deserializer = serde_json::Deserializer::from_str(text);
        let value: T = serde_path_to_error::deserialize(&mut deserializer).map_err(|error| {
            let field = error.path().to_string();
            ConfigError {
                // `.` is the document itself and `?` a position serde could not name.
                field: if field == "." || field == "?" {
                    String::new()
                } else {
                    field
                },
                message: error.into_inner().to_string(),
            }
        })?;
        deserializer.end().map_err(|error| ConfigError {
            field: String::new(),
            message: error.to_string(),
        })?;
        Ok(value)
    }
}

impl Default for Config {
    /// The configuration of a plugin whose entry has no `config` table: `{}`.
    fn default() -> Self {
        Config::new("{}")
    }
}

/// Why a configuration did not deserialize, and where.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    field: String,
    message: String,
}

impl ConfigError {
    /// The path of the offending field (`max_instances`, `rules[2].pattern`); empty when the
    /// document as a whole is wrong (not JSON, not an object).
    pub fn field(&self) -> &str {
        &self.field
    }

    /// What is wrong, as serde put it.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.field.is_empty() {
            write!(f, "invalid config: {}", self.message)
        } else {
            write!(f, "invalid config: `{}`: {}", self.field, self.message)
        }
    }
}

impl std::error::Error for ConfigError {}

impl From<ConfigError> for String {
    fn from(error: ConfigError) -> String {
        error.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Settings {
        #[serde(default)]
        limit: u32,
        #[serde(default)]
        nested: Nested,
    }

    #[derive(Debug, Default, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Nested {
        #[serde(default)]
        ratio: f64,
    }

    #[test]
    fn empty_document_reads_as_empty_object() {
        let settings: Settings = Config::new("").parse().unwrap();
        assert_eq!(settings.limit, 0);
        let settings: Settings = Config::default().parse().unwrap();
        assert_eq!(settings.nested, Nested::default());
    }

    #[test]
    fn errors_name_the_field() {
        let error = Config::new(r#"{"nested": {"ratio": "high"}}"#)
            .parse::<Settings>()
            .unwrap_err();
        assert_eq!(error.field(), "nested.ratio");
        assert!(error
            .to_string()
            .starts_with("invalid config: `nested.ratio`: invalid type"));
    }

    #[test]
    fn unknown_fields_are_named() {
        let error = Config::new(r#"{"limt": 3}"#)
            .parse::<Settings>()
            .unwrap_err();
        assert!(
            error.to_string().contains("unknown field `limt`"),
            "{error}"
        );
    }

    #[test]
    fn syntax_errors_have_no_field() {
        let error = Config::new("{not json").parse::<Settings>().unwrap_err();
        assert_eq!(error.field(), "");
        assert!(error.to_string().starts_with("invalid config: "));
        let error = Config::new(r#"{"limit": 1} trailing"#)
            .parse::<Settings>()
            .unwrap_err();
        assert_eq!(error.field(), "");
    }

    #[test]
    fn converts_into_string_for_init() {
        fn init(config: &Config) -> Result<Settings, String> {
            Ok(config.parse()?)
        }
        assert!(init(&Config::new(r#"{"limit": -1}"#))
            .unwrap_err()
            .contains("`limit`"));
        assert_eq!(Config::new("{}").raw(), "{}");
    }
}
