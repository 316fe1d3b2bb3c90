//! Small parsers every section shares: durations, byte sizes, socket addresses, paths
//! relative to the config file, and the alphabets of names and tokens. Each names the field
//! it was given when it refuses a value.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::ConfigError;

/// The longest duration any setting takes.
pub const MAX_DURATION: Duration = Duration::from_secs(365 * 86400);

pub(super) fn duration(
    field: &str,
    value: Option<&str>,
    default: Duration,
) -> Result<Duration, ConfigError> {
    let Some(v) = value else { return Ok(default) };
    let d = humantime::parse_duration(v.trim()).map_err(|e| {
        ConfigError::field(
            field,
            format!("{v:?} is not a duration (e.g. \"5s\", \"250ms\"): {e}"),
        )
    })?;
    if d.is_zero() {
        return Err(ConfigError::field(field, "must be greater than zero"));
    }
    // Every duration is added to an instant somewhere (a deadline, a timer); one that
    // overflows it would panic on the request path.
    if d > MAX_DURATION {
        return Err(ConfigError::field(
            field,
            format!("{v:?} is too long: at most 365 days"),
        ));
    }
    Ok(d)
}

/// Like [`duration`], but zero is allowed.
pub(super) fn duration_or_zero(
    field: &str,
    value: Option<&str>,
    default: Duration,
) -> Result<Duration, ConfigError> {
    match value.map(str::trim) {
        Some("0") | Some("0s") => Ok(Duration::ZERO),
        v => duration(field, v, default),
    }
}

/// A size in bytes: an integer, or a string with a unit (`"64KiB"`, `"16MiB"`, `"1GiB"`,
/// `"512B"`), at least 1 and at most `max`.
pub(super) fn byte_size(field: &str, v: &toml::Value, max: usize) -> Result<usize, ConfigError> {
    let bad = || {
        ConfigError::field(
            field,
            format!("{v} is not a size (bytes, or a string such as \"64KiB\" or \"16MiB\")"),
        )
    };
    let n: u64 = match v {
        toml::Value::Integer(i) => u64::try_from(*i).map_err(|_| bad())?,
        toml::Value::String(s) => {
            let s = s.trim();
            let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
            let (digits, unit) = s.split_at(split);
            let n: u64 = digits.parse().map_err(|_| bad())?;
            let scale: u64 = match unit.trim() {
                "" | "B" => 1,
                "KiB" => 1 << 10,
                "MiB" => 1 << 20,
                "GiB" => 1 << 30,
                _ => return Err(bad()),
            };
            n.checked_mul(scale).ok_or_else(bad)?
        }
        _ => return Err(bad()),
    };
    if n == 0 || n > max as u64 {
        return Err(ConfigError::field(
            field,
            format!("must be between 1 byte and {max} bytes"),
        ));
    }
    Ok(n as usize)
}

pub(super) fn parse_addr(field: &str, v: &str) -> Result<SocketAddr, ConfigError> {
    v.parse().map_err(|_| {
        ConfigError::field(
            field,
            format!("{v:?} is not an address (e.g. \"0.0.0.0:8080\" or \"[::]:8443\")"),
        )
    })
}

pub(super) fn resolve(base: &Path, p: &str) -> PathBuf {
    let p = Path::new(p);
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        base.join(p)
    }
}

/// Names used as metric label values: short and from a safe alphabet.
pub(super) fn is_label_safe(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

pub(super) fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}
