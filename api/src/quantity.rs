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

/// A quantity as an exact count of thousandths (`"250m"` is 250, `"1Ki"` is 1024000), for sums
/// that must not drift (quota usage). Exact up to 2^53 thousandths, some 9 TB.
pub fn milli(input: &str) -> Result<i64, Error> {
    Ok((parse(input)? * 1000.0).round() as i64)
}

/// A number of thousandths in Kubernetes' canonical form: binary suffixes (`64Mi`) when
/// `binary` and the amount is a whole multiple of 1024, else decimal ones (`1k`, `1500m`).
pub fn format_milli(milli: i64, binary: bool) -> String {
    if milli % 1000 != 0 {
        return format!("{milli}m");
    }
    let units = milli / 1000;
    if units == 0 {
        return "0".to_string();
    }
    let pick = |base: i64, suffixes: &[&str]| {
        (1..=suffixes.len() as u32)
            .rev()
            .find(|&k| units % base.pow(k) == 0)
            .map(|k| format!("{}{}", units / base.pow(k), suffixes[k as usize - 1]))
    };
    if binary && let Some(text) = pick(1024, &["Ki", "Mi", "Gi", "Ti", "Pi", "Ei"]) {
        return text;
    }
    pick(1000, &["k", "M", "G", "T", "P", "E"]).unwrap_or_else(|| units.to_string())
}

/// Whether a quantity's text uses a binary suffix (`Ki` … `Ei`).
pub fn is_binary(input: &str) -> bool {
    input.trim_end().ends_with('i')
}

#[cfg(test)]
mod tests {
    use super::{format_milli, milli, parse};

    #[test]
    fn canonical_forms() {
        assert_eq!(milli("250m").unwrap(), 250);
        assert_eq!(milli("64Mi").unwrap(), 67108864000);
        assert_eq!(format_milli(milli("64Mi").unwrap() * 2, true), "128Mi");
        assert_eq!(format_milli(milli("1.5Gi").unwrap(), true), "1536Mi");
        assert_eq!(format_milli(milli("100M").unwrap(), true), "100M");
        assert_eq!(format_milli(1500, false), "1500m");
        assert_eq!(format_milli(2000, false), "2");
        assert_eq!(format_milli(5000, false), "5");
        assert_eq!(format_milli(1_000_000, false), "1k");
        assert_eq!(format_milli(0, true), "0");
        assert_eq!(format_milli(-3000, false), "-3");
    }

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
