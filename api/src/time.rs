//! RFC 3339 timestamps as the Kubernetes API writes them (`2026-11-29T18:00:00Z`), and the
//! short ages `kubectl get` prints (`5s`, `3m`, `2d`).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jiff::Timestamp;

/// Formats a time as `YYYY-MM-DDTHH:MM:SSZ` (UTC, whole seconds).
pub fn rfc3339(time: SystemTime) -> String {
    let secs = time.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs()) as i64;
    Timestamp::from_second(secs)
        .unwrap_or(Timestamp::UNIX_EPOCH)
        .to_string()
}

/// Formats a time as `YYYY-MM-DDTHH:MM:SS.nnnnnnnnnZ` (UTC, nanoseconds), as container log
/// lines carry it.
pub fn rfc3339_nanos(time: SystemTime) -> String {
    let at = Timestamp::try_from(time).unwrap_or(Timestamp::UNIX_EPOCH);
    format!("{at:.9}")
}

/// Parses an RFC 3339 time (`YYYY-MM-DDTHH:MM:SS[.frac](Z|±HH:MM)`), to the whole second as
/// every API timestamp is kept; `None` for anything else or before 1970.
pub fn parse_rfc3339(s: &str) -> Option<SystemTime> {
    let at: Timestamp = s.parse().ok()?;
    let secs = u64::try_from(at.as_second()).ok()?;
    Some(UNIX_EPOCH + Duration::from_secs(secs))
}

/// `kubectl`'s short age: `45s`, `12m`, `5h`, `3d`, `2y`.
pub fn short_age(age: Duration) -> String {
    let s = age.as_secs();
    match s {
        0..=119 => format!("{s}s"),
        120..=10_799 => format!("{}m", s / 60),
        10_800..=172_799 => format!("{}h", s / 3600),
        172_800..=63_071_999 => format!("{}d", s / 86_400),
        _ => format!("{}y", s / 31_536_000),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn nanosecond_timestamps_keep_every_digit() {
        let t = UNIX_EPOCH + Duration::new(1_764_403_200, 5_000_123);
        let s = rfc3339_nanos(t);
        assert_eq!(s, "2025-11-29T08:00:00.005000123Z");
        // Parsing keeps whole seconds, as for every API timestamp.
        assert_eq!(
            parse_rfc3339(&s),
            Some(UNIX_EPOCH + Duration::from_secs(1_764_403_200))
        );
    }

    #[test]
    fn known_dates() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00Z");
        let t = UNIX_EPOCH + Duration::from_secs(1_795_975_200);
        assert_eq!(rfc3339(t), "2026-11-29T18:00:00Z");
        assert_eq!(parse_rfc3339("2026-11-29T18:00:00Z"), Some(t));
        assert_eq!(parse_rfc3339("2026-11-29T19:00:00.123+01:00"), Some(t));
        assert_eq!(parse_rfc3339("2026-13-01T00:00:00Z"), None);
        assert_eq!(parse_rfc3339("yesterday"), None);
    }

    #[test]
    fn ages() {
        assert_eq!(short_age(Duration::from_secs(5)), "5s");
        assert_eq!(short_age(Duration::from_secs(600)), "10m");
        assert_eq!(short_age(Duration::from_secs(7200 * 3)), "6h");
        assert_eq!(short_age(Duration::from_secs(86_400 * 4)), "4d");
    }

    proptest! {
        #[test]
        fn round_trips(secs in 0u64..10_000_000_000) {
            let t = UNIX_EPOCH + Duration::from_secs(secs);
            prop_assert_eq!(parse_rfc3339(&rfc3339(t)), Some(t));
        }
    }
}
