//! `[rate_limits.NAME]`: named limiters, and the checks that tie a route's limiters to what
//! their keys need (auth for principal keys, signature checks for instance keys).

use std::collections::BTreeMap;
use std::time::Duration;

use super::parse::is_label_safe;
use super::{file, ConfigError, RouteConfig, SignatureMode};
use crate::ratelimit::{KeyKind, LimiterConfig};

/// Limiters with a larger default key cap would hold too much state per limiter: about
/// 100 bytes a key.
const DEFAULT_LIMITER_KEYS: usize = 100_000;

/// Every `[rate_limits.NAME]`, then the limiters each route lists: defined, listed once, and
/// keyed by something the route establishes.
pub(super) fn validate_rate_limits(
    sections: &BTreeMap<String, file::RateLimitSection>,
    routes: &[RouteConfig],
) -> Result<BTreeMap<String, LimiterConfig>, ConfigError> {
    let mut rate_limits = BTreeMap::new();
    for (name, l) in sections {
        rate_limits.insert(name.clone(), validate_rate_limit(name, l)?);
    }
    for (i, route) in routes.iter().enumerate() {
        for (j, name) in route.rate_limits.iter().enumerate() {
            let field = format!("routes[{i}].rate_limits[{j}]");
            let Some(limiter) = rate_limits.get(name) else {
                return Err(ConfigError::field(
                    field,
                    format!("no limiter named {name:?} is defined"),
                ));
            };
            if route.rate_limits[..j].contains(name) {
                return Err(ConfigError::field(
                    field,
                    format!("{name:?} is listed twice"),
                ));
            }
            if limiter.key == KeyKind::Principal && route.auth.is_none() {
                return Err(ConfigError::field(
                    field,
                    format!("{name:?} is keyed by principal, which needs `auth` on this route"),
                ));
            }
            if limiter.key == KeyKind::Instance && route.signatures == SignatureMode::Off {
                return Err(ConfigError::field(
                    field,
                    format!(
                        "{name:?} is keyed by instance, which needs `signatures` on this route (observe or enforce)"
                    ),
                ));
            }
        }
    }
    Ok(rate_limits)
}

fn validate_rate_limit(
    name: &str,
    l: &file::RateLimitSection,
) -> Result<crate::ratelimit::LimiterConfig, ConfigError> {
    use crate::ratelimit::Mode;
    let field = |k: &str| format!("rate_limits.{name}.{k}");
    if !is_label_safe(name) {
        return Err(ConfigError::field(
            format!("rate_limits.{name}"),
            "limiter names use letters, digits, '_', '-' or '.'",
        ));
    }
    let key = l
        .key
        .ok_or_else(|| ConfigError::field(field("key"), "missing"))?;
    let rate = l
        .rate
        .as_deref()
        .ok_or_else(|| ConfigError::field(field("rate"), "missing"))?;
    let (count, per) = parse_rate(rate).map_err(|m| ConfigError::field(field("rate"), m))?;
    let burst = match l.burst {
        None => count,
        Some(0) => return Err(ConfigError::field(field("burst"), "must be at least 1")),
        Some(b) => b,
    };
    let mode = l.mode.unwrap_or(Mode::Enforce);
    let max_keys = match l.max_keys.unwrap_or(DEFAULT_LIMITER_KEYS) {
        n @ 1..=10_000_000 => n,
        _ => {
            return Err(ConfigError::field(
                field("max_keys"),
                "must be between 1 and 10000000",
            ))
        }
    };
    let ipv6_prefix = match l.ipv6_prefix.unwrap_or(64) {
        p @ 1..=128 => p,
        _ => {
            return Err(ConfigError::field(
                field("ipv6_prefix"),
                "must be between 1 and 128",
            ))
        }
    };
    Ok(LimiterConfig {
        name: name.to_string(),
        key,
        count,
        per,
        burst,
        mode,
        max_keys,
        ipv6_prefix,
    })
}

/// `"100/s"`, `"6000/min"`, `"300/5m"`: a count and the period it is spread over.
fn parse_rate(rate: &str) -> Result<(u32, Duration), String> {
    let bad = || format!("{rate:?} is not a rate such as \"100/s\", \"6000/min\" or \"300/5m\"");
    let (count, period) = rate.split_once('/').ok_or_else(bad)?;
    let count: u32 = count.trim().parse().map_err(|_| bad())?;
    if count == 0 {
        return Err("the count must be at least 1".into());
    }
    let per = match period.trim() {
        "s" | "sec" | "second" => Duration::from_secs(1),
        "m" | "min" | "minute" => Duration::from_secs(60),
        "h" | "hour" => Duration::from_secs(3600),
        "d" | "day" => Duration::from_secs(86400),
        other => humantime::parse_duration(other).map_err(|_| bad())?,
    };
    if per.is_zero() || per > Duration::from_secs(86400 * 7) {
        return Err("the period must be between 1ns and 7 days".into());
    }
    Ok((count, per))
}

#[cfg(test)]
mod tests {
    use super::super::tests::{field_of, parse, MINIMAL};
    use std::time::Duration;

    #[test]
    fn rate_limits_are_validated() {
        use crate::ratelimit::{KeyKind, Mode};
        let limiter =
            |body: &str| format!("{MINIMAL}rate_limits = [\"l\"]\n[rate_limits.l]\n{body}\n");
        let c = parse(&limiter("key = \"client\"\nrate = \"300/5m\"")).unwrap();
        let l = &c.rate_limits["l"];
        assert_eq!(
            (l.key, l.count, l.per, l.burst),
            (KeyKind::Client, 300, Duration::from_secs(300), 300)
        );
        assert_eq!(
            (l.mode, l.max_keys, l.ipv6_prefix),
            (Mode::Enforce, 100_000, 64)
        );
        assert_eq!(c.routes[0].rate_limits, vec!["l".to_string()]);
        assert!(c.routes[0].blocklist);
        let c = parse(&limiter(
            "key = \"route\"\nrate = \"6000/min\"\nburst = 10\nmode = \"observe\"",
        ))
        .unwrap();
        assert_eq!(
            (c.rate_limits["l"].per, c.rate_limits["l"].burst),
            (Duration::from_secs(60), 10)
        );

        assert_eq!(field_of(&limiter("rate = \"1/s\"")), "rate_limits.l.key");
        assert_eq!(
            field_of(&limiter("key = \"ip\"\nrate = \"1/s\"")),
            "rate_limits.l.key"
        );
        for bad in ["\"fast\"", "\"0/s\"", "\"10/fortnight\"", "\"10\""] {
            assert_eq!(
                field_of(&limiter(&format!("key = \"client\"\nrate = {bad}"))),
                "rate_limits.l.rate",
                "{bad}"
            );
        }
        assert_eq!(
            field_of(&limiter("key = \"client\"\nrate = \"1/s\"\nburst = 0")),
            "rate_limits.l.burst"
        );
        assert_eq!(
            field_of(&limiter(
                "key = \"client\"\nrate = \"1/s\"\nmode = \"shadow\""
            )),
            "rate_limits.l.mode"
        );
        // Principal keys need auth on the route, instance keys signature checks.
        assert_eq!(
            field_of(&limiter("key = \"principal\"\nrate = \"1/s\"")),
            "routes[0].rate_limits[0]"
        );
        // Instance keys need the route to check signatures.
        assert_eq!(
            field_of(&limiter("key = \"instance\"\nrate = \"1/s\"")),
            "routes[0].rate_limits[0]"
        );
        let unknown = format!("{MINIMAL}rate_limits = [\"nope\"]\n");
        assert_eq!(field_of(&unknown), "routes[0].rate_limits[0]");
    }
}
