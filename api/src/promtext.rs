//! Reading Prometheus' text exposition format (0.0.4), as the nodes write their series: each
//! sample's name, labels (unescaped) and value. Comments and blank lines are skipped; a line
//! that does not parse is skipped too (a reader wants the samples it can use).

/// One sample line.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: Vec<(String, String)>,
    pub value: f64,
}

impl Sample {
    /// The value of label `key`.
    pub fn label(&self, key: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// Every sample of `text`.
pub fn samples(text: &str) -> impl Iterator<Item = Sample> + '_ {
    text.lines().filter_map(|line| {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            return None;
        }
        parse_line(line)
    })
}

fn parse_line(line: &str) -> Option<Sample> {
    let name_end = line.find(|c: char| c == '{' || c.is_whitespace())?;
    let name = line[..name_end].to_string();
    let mut rest = &line[name_end..];
    let mut labels = Vec::new();
    if let Some(inner) = rest.strip_prefix('{') {
        let mut chars = inner.char_indices().peekable();
        let close = loop {
            // A label: key="value", with \\, \" and \n escapes in the value.
            while chars
                .peek()
                .is_some_and(|(_, c)| *c == ',' || c.is_whitespace())
            {
                chars.next();
            }
            let (start, c) = chars.next()?;
            if c == '}' {
                break start;
            }
            let mut key_end = start;
            for (i, c) in chars.by_ref() {
                if c == '=' {
                    key_end = i;
                    break;
                }
            }
            let key = inner[start..key_end].trim().to_string();
            if chars.next()?.1 != '"' {
                return None;
            }
            let mut value = String::new();
            loop {
                match chars.next()?.1 {
                    '"' => break,
                    '\\' => match chars.next()?.1 {
                        'n' => value.push('\n'),
                        other => value.push(other),
                    },
                    other => value.push(other),
                }
            }
            labels.push((key, value));
        };
        rest = &inner[close + 1..];
    }
    let value = rest.split_whitespace().next()?;
    let value = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        other => other.parse().ok()?,
    };
    Some(Sample {
        name,
        labels,
        value,
    })
}

/// The `q` quantile (0–1) of a histogram given as `(upper bound, cumulative count)` pairs
/// sorted by bound, the last `+Inf`: linear within the bucket it falls in, as Prometheus'
/// `histogram_quantile` estimates it. None without observations.
pub fn quantile(q: f64, buckets: &[(f64, f64)]) -> Option<f64> {
    let total = buckets.last()?.1;
    if total <= 0.0 {
        return None;
    }
    let rank = q * total;
    let (mut lower, mut below) = (0.0, 0.0);
    for &(bound, count) in buckets {
        if count >= rank {
            if bound.is_infinite() {
                // Above the highest finite bound: that bound is the best estimate.
                return Some(lower);
            }
            let inside = count - below;
            let fraction = if inside > 0.0 {
                (rank - below) / inside
            } else {
                1.0
            };
            return Some(lower + (bound - lower) * fraction);
        }
        lower = bound;
        below = count;
    }
    Some(lower)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_names_labels_and_values() {
        let text = "# HELP x A series\n# TYPE x counter\nx_total{a=\"1\",b=\"q\\\"uote\\\\\"} 3\nplain 1.5\nbad{a=\"1\" 2\ninf{le=\"+Inf\"} +Inf\n";
        let found: Vec<Sample> = samples(text).collect();
        assert_eq!(found.len(), 3, "{found:?}");
        assert_eq!(found[0].name, "x_total");
        assert_eq!(found[0].label("b"), Some("q\"uote\\"));
        assert_eq!(found[0].value, 3.0);
        assert_eq!(found[1].labels, Vec::new());
        assert_eq!(found[1].value, 1.5);
        assert!(found[2].value.is_infinite());
    }

    #[test]
    fn quantiles_interpolate_within_buckets() {
        let buckets = [(0.1, 50.0), (0.2, 100.0), (f64::INFINITY, 100.0)];
        assert_eq!(quantile(0.5, &buckets), Some(0.1));
        assert!((quantile(0.75, &buckets).unwrap() - 0.15).abs() < 1e-9);
        assert_eq!(quantile(0.5, &[(0.1, 0.0), (f64::INFINITY, 0.0)]), None);
        assert_eq!(
            quantile(0.99, &[(0.1, 0.0), (f64::INFINITY, 4.0)]),
            Some(0.1)
        );
    }
}
