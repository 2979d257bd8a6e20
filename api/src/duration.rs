//! Durations written the Kubernetes/Go way: `300ms`, `40s`, `5m`, `1h30m`.

use std::time::Duration;

/// Why text is not a duration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("empty duration")]
    Empty,
    #[error("missing unit in duration {0:?}")]
    MissingUnit(String),
    #[error("invalid duration {0:?}")]
    Invalid(String),
    #[error("invalid number in duration {0:?}")]
    Number(String),
    #[error("unknown unit {unit:?} in duration {input:?}")]
    Unit { unit: String, input: String },
    #[error("duration {input:?}: {reason}")]
    OutOfRange { input: String, reason: String },
}

/// Parses a Go-style duration: one or more `<number><unit>` pairs with units `ns`, `us`, `µs`,
/// `ms`, `s`, `m`, `h`; the number may have a fraction (`1.5s`). A bare `0` is zero.
pub fn parse(input: &str) -> Result<Duration, Error> {
    let s = input.trim();
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    if s.is_empty() {
        return Err(Error::Empty);
    }
    let mut rest = s;
    let mut total = 0f64;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(|| Error::MissingUnit(input.to_string()))?;
        if num_len == 0 {
            return Err(Error::Invalid(input.to_string()));
        }
        let number: f64 = rest[..num_len]
            .parse()
            .map_err(|_| Error::Number(input.to_string()))?;
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let seconds = match &rest[..unit_len] {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            unit => {
                return Err(Error::Unit {
                    unit: unit.to_string(),
                    input: input.to_string(),
                });
            }
        };
        total += number * seconds;
        rest = &rest[unit_len..];
    }
    Duration::try_from_secs_f64(total).map_err(|e| Error::OutOfRange {
        input: input.to_string(),
        reason: e.to_string(),
    })
}

/// Writes a duration as Go does for whole seconds and up (`10s`, `1m20s`, `5m0s`, `1h0m0s`)
/// and in milliseconds below a second (`250ms`).
pub fn format(d: Duration) -> String {
    let secs = d.as_secs();
    if secs == 0 {
        return format!("{}ms", d.as_millis());
    }
    let (h, m, s) = (secs / 3600, secs / 60 % 60, secs % 60);
    match (h, m) {
        (0, 0) => format!("{s}s"),
        (0, _) => format!("{m}m{s}s"),
        _ => format!("{h}h{m}m{s}s"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_like_go() {
        let s = Duration::from_secs;
        assert_eq!(format(s(10)), "10s");
        assert_eq!(format(s(80)), "1m20s");
        assert_eq!(format(s(300)), "5m0s");
        assert_eq!(format(s(3600)), "1h0m0s");
        assert_eq!(format(Duration::from_millis(250)), "250ms");
        assert_eq!(parse(&format(s(4000))).unwrap(), s(4000));
    }

    #[test]
    fn parses_go_durations() {
        assert_eq!(parse("40s").unwrap(), Duration::from_secs(40));
        assert_eq!(parse("5m").unwrap(), Duration::from_secs(300));
        assert_eq!(parse("1h30m").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse("1.5s").unwrap(), Duration::from_millis(1500));
        assert_eq!(parse("0").unwrap(), Duration::ZERO);
    }

    #[test]
    fn rejects_garbage() {
        for bad in ["", "5", "s", "5x", "1h-3m", "..s"] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }
}
