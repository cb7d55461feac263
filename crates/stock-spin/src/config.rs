//! The service's configuration from Spin variables (SPEC §3: tokens are secret
//! variables; the tunables have defaults, so a component that does not map them runs
//! with the defaults).

use anyhow::{Context, anyhow, bail};
use stock_domain::Config;

pub const DEFAULT_TTL_SECONDS: u64 = 900;
pub const MAX_TTL_SECONDS: u64 = 7200;
const HOUR_MS: u64 = 60 * 60 * 1000;
/// One write in this many runs a step of the expiry sweep (see `Config`).
pub const DEFAULT_SWEEP_EVERY_WRITES: u32 = 100;
/// The most feed partitions: a page of the whole feed reads every partition head, and its
/// cursor names a position in each.
pub const MAX_FEED_PARTITIONS: u64 = 1024;

/// Builds the domain configuration from `lookup`, which returns a variable's value or
/// `None` when the component does not define it.
pub fn from_lookup(
    lookup: impl Fn(&str) -> anyhow::Result<Option<String>>,
) -> anyhow::Result<Config> {
    let seconds = |name: &str, default: u64| -> anyhow::Result<u64> {
        let Some(raw) = lookup(name)? else {
            return Ok(default);
        };
        raw.trim()
            .parse::<u64>()
            .ok()
            .filter(|s| *s >= 1 && s.checked_mul(1000).is_some())
            .ok_or_else(|| anyhow!("{name} must be a whole number of seconds, at least 1"))
    };
    let default_ttl = seconds("reservation_default_ttl_seconds", DEFAULT_TTL_SECONDS)?;
    let max_ttl = seconds("reservation_max_ttl_seconds", MAX_TTL_SECONDS)?;
    if default_ttl > max_ttl {
        bail!(
            "reservation_default_ttl_seconds ({default_ttl}) exceeds reservation_max_ttl_seconds ({max_ttl})"
        );
    }
    let verify_writes = match lookup("kv_verify_writes")?.as_deref().map(str::trim) {
        None | Some("true") => true,
        Some("false") => false,
        Some(other) => bail!("kv_verify_writes must be true or false, not {other:?}"),
    };
    let defaults = Config::default();
    // Retention periods in whole units of `unit_ms`, at least one.
    let period = |name: &str, unit_ms: u64, default_ms: u64| -> anyhow::Result<u64> {
        let Some(raw) = lookup(name)? else {
            return Ok(default_ms);
        };
        raw.trim()
            .parse::<u64>()
            .ok()
            .filter(|n| *n >= 1)
            .and_then(|n| n.checked_mul(unit_ms))
            .ok_or_else(|| anyhow!("{name} must be a whole number, at least 1"))
    };
    let mut config = Config {
        default_ttl_ms: default_ttl * 1000,
        max_ttl_ms: max_ttl * 1000,
        idempotency_retention_ms: period(
            "idempotency_retention_hours",
            HOUR_MS,
            defaults.idempotency_retention_ms,
        )?,
        inbound_retention_ms: period(
            "inbound_event_retention_hours",
            HOUR_MS,
            defaults.inbound_retention_ms,
        )?,
        settled_retention_ms: period(
            "settled_retention_days",
            24 * HOUR_MS,
            defaults.settled_retention_ms,
        )?,
        sweep_every_writes: match lookup("sweep_every_writes")? {
            None => DEFAULT_SWEEP_EVERY_WRITES,
            Some(raw) => raw.trim().parse::<u32>().map_err(|_| {
                anyhow!("sweep_every_writes must be a whole number (0 turns it off)")
            })?,
        },
        feed_partitions: match lookup("feed_partitions")? {
            None => defaults.feed_partitions,
            Some(raw) => raw
                .trim()
                .parse::<u64>()
                .ok()
                .filter(|n| (1..=MAX_FEED_PARTITIONS).contains(n))
                .ok_or_else(|| {
                    anyhow!(
                        "feed_partitions must be a whole number from 1 to {MAX_FEED_PARTITIONS}"
                    )
                })?,
        },
        ..defaults
    };
    config.retry.verify_writes = verify_writes;
    Ok(config)
}

/// One Spin variable of this component; undefined is `None`.
pub fn variable(name: &str) -> anyhow::Result<Option<String>> {
    match spin_sdk::variables::get(name) {
        Ok(value) => Ok(Some(value)),
        Err(spin_sdk::variables::Error::Undefined(_)) => Ok(None),
        Err(e) => Err(anyhow!("{e:?}")).with_context(|| format!("reading variable {name}")),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn config(vars: &[(&str, &str)]) -> anyhow::Result<Config> {
        let vars: BTreeMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        from_lookup(|name| Ok(vars.get(name).cloned()))
    }

    #[test]
    fn undefined_tunables_take_their_defaults() {
        let c = config(&[]).unwrap();
        assert_eq!(c.default_ttl_ms, 900_000);
        assert_eq!(c.max_ttl_ms, 7_200_000);
        assert!(c.retry.verify_writes);
        assert_eq!(c.idempotency_retention_ms, 24 * HOUR_MS);
        assert_eq!(c.inbound_retention_ms, 7 * 24 * HOUR_MS);
        assert_eq!(c.settled_retention_ms, 30 * 24 * HOUR_MS);
        assert_eq!(c.sweep_every_writes, 100);
        assert_eq!(c.feed_partitions, 16);
    }

    #[test]
    fn defined_tunables_are_used() {
        let c = config(&[
            ("reservation_default_ttl_seconds", "60"),
            ("reservation_max_ttl_seconds", "120"),
            ("kv_verify_writes", "false"),
            ("idempotency_retention_hours", "2"),
            ("inbound_event_retention_hours", "3"),
            ("settled_retention_days", "4"),
            ("sweep_every_writes", "0"),
            ("feed_partitions", "4"),
        ])
        .unwrap();
        assert_eq!(c.default_ttl_ms, 60_000);
        assert_eq!(c.max_ttl_ms, 120_000);
        assert!(!c.retry.verify_writes);
        assert_eq!(c.idempotency_retention_ms, 2 * HOUR_MS);
        assert_eq!(c.inbound_retention_ms, 3 * HOUR_MS);
        assert_eq!(c.settled_retention_ms, 4 * 24 * HOUR_MS);
        assert_eq!(c.sweep_every_writes, 0);
        assert_eq!(c.feed_partitions, 4);
    }

    #[test]
    fn a_default_ttl_above_the_maximum_is_refused() {
        assert!(config(&[("reservation_default_ttl_seconds", "7201")]).is_err());
    }

    #[test]
    fn malformed_tunables_are_refused() {
        for (name, value) in [
            ("reservation_default_ttl_seconds", "0"),
            ("reservation_default_ttl_seconds", "15m"),
            ("reservation_max_ttl_seconds", "-1"),
            ("reservation_max_ttl_seconds", "18446744073709551615"),
            ("kv_verify_writes", "yes"),
            ("idempotency_retention_hours", "0"),
            ("inbound_event_retention_hours", "1.5"),
            ("settled_retention_days", "18446744073709551615"),
            ("sweep_every_writes", "-1"),
            ("feed_partitions", "0"),
            ("feed_partitions", "1025"),
        ] {
            assert!(config(&[(name, value)]).is_err(), "{name}={value}");
        }
    }

    #[test]
    fn a_failing_lookup_is_an_error() {
        assert!(from_lookup(|_| Err(anyhow!("host down"))).is_err());
    }
}
