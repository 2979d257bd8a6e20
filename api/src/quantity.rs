//! Kubernetes resource quantities (`100m`, `1.5Gi`, `2e3`): parsing into a number of base
//! units (cores, bytes), as the scheduler and the node agent need them.

/// Why text is not a quantity.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("{0:?} is not a quantity")]
    NotAQuantity(String),
    #[error("{input:?} has an unknown suffix {suffix:?}")]
    Suffix { input: String, suffix: String },
}

/// Parses a quantity into base units: `"250m"` → 0.25, `"1Gi"` → 1073741824.
pub fn parse(input: &str) -> Result<f64, Error> {
    let not_a_quantity = || Error::NotAQuantity(input.to_string());
    let s = input.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '+' || c == '-'))
        .unwrap_or(s.len());
    let (number, suffix) = s.split_at(split);
    if number.is_empty() || number == "+" || number == "-" || number.matches('.').count() > 1 {
        return Err(not_a_quantity());
    }
    let value: f64 = number.parse().map_err(|_| not_a_quantity())?;
    let scale = match suffix {
        "" => 1.0,
        "n" => 1e-9,
        "u" => 1e-6,
        "m" => 1e-3,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "E" => 1e18,
        "Ki" => 1024.0,
        "Mi" => 1024f64.powi(2),
        "Gi" => 1024f64.powi(3),
        "Ti" => 1024f64.powi(4),
        "Pi" => 1024f64.powi(5),
        "Ei" => 1024f64.powi(6),
        exp if exp.starts_with(['e', 'E']) => {
            let e: i32 = exp[1..].parse().map_err(|_| not_a_quantity())?;
            10f64.powi(e)
        }
        _ => {
            return Err(Error::Suffix {
                input: input.to_string(),
                suffix: suffix.to_string(),
            });
        }
    };
    Ok(value * scale)
}

#[cfg(test)]
mod tests {
    use super::parse;

    #[test]
    fn suffixes() {
        assert_eq!(parse("250m").unwrap(), 0.25);
        assert_eq!(parse("2").unwrap(), 2.0);
        assert_eq!(parse("1Gi").unwrap(), 1073741824.0);
        assert_eq!(parse("128Mi").unwrap(), 134217728.0);
        assert_eq!(parse("1.5k").unwrap(), 1500.0);
        assert_eq!(parse("2e3").unwrap(), 2000.0);
        for bad in ["", "lots", "1X", "Mi", "1..2"] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }
}
