//! Field selectors (`?fieldSelector=`): `path=value`, `path==value`, `path!=value`, joined by
//! commas. Values may escape `\,`, `\=` and `\\`. Which paths a kind supports is the API
//! server's business; this module parses and evaluates them against a JSON object.

use serde_json::Value;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Selector {
    requirements: Vec<Requirement>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Requirement {
    /// Dotted path such as `metadata.name` or `spec.nodeName`.
    pub field: String,
    pub value: String,
    /// `!=` rather than `=`.
    pub negated: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid field selector {selector:?}: {reason}")]
pub struct ParseError {
    pub selector: String,
    pub reason: String,
}

impl Selector {
    pub fn everything() -> Self {
        Self::default()
    }

    pub fn is_empty(&self) -> bool {
        self.requirements.is_empty()
    }

    pub fn requirements(&self) -> &[Requirement] {
        &self.requirements
    }

    pub fn parse(input: &str) -> Result<Self, ParseError> {
        let err = |reason: String| ParseError {
            selector: input.to_string(),
            reason,
        };
        let mut requirements = Vec::new();
        if input.trim().is_empty() {
            return Ok(Self { requirements });
        }
        for term in split_unescaped(input, ',') {
            let (field, value, negated) = if let Some((f, v)) = split_once_unescaped(&term, "!=") {
                (f, v, true)
            } else if let Some((f, v)) = split_once_unescaped(&term, "==") {
                (f, v, false)
            } else if let Some((f, v)) = split_once_unescaped(&term, "=") {
                (f, v, false)
            } else {
                return Err(err(format!("{term:?} is not of the form field=value")));
            };
            let field = field.trim();
            if field.is_empty()
                || !field
                    .split('.')
                    .all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_alphanumeric()))
            {
                return Err(err(format!("{field:?} is not a field path")));
            }
            requirements.push(Requirement {
                field: field.to_string(),
                value: unescape(value.trim()),
                negated,
            });
        }
        Ok(Self { requirements })
    }

    /// Whether `object` satisfies every requirement. A missing field reads as the empty string,
    /// as in Kubernetes (`spec.nodeName=` selects unscheduled pods).
    pub fn matches(&self, object: &Value) -> bool {
        self.requirements.iter().all(|r| {
            let actual = field_value(object, &r.field);
            (actual == r.value) != r.negated
        })
    }

    /// The value an equality requirement pins `field` to, if any (`spec.nodeName=n1` → `n1`).
    pub fn equality(&self, field: &str) -> Option<&str> {
        self.requirements
            .iter()
            .find(|r| r.field == field && !r.negated)
            .map(|r| r.value.as_str())
    }
}

/// The string form of a JSON field at a dotted path: strings as they are, numbers and booleans
/// printed, anything absent or structured as "".
pub fn field_value(object: &Value, path: &str) -> String {
    let mut v = object;
    for part in path.split('.') {
        match v.get(part) {
            Some(next) => v = next,
            None => return String::new(),
        }
    }
    match v {
        Value::String(s) => s.clone(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        _ => String::new(),
    }
}

fn split_unescaped(s: &str, sep: char) -> Vec<String> {
    let mut parts = vec![String::new()];
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            parts.last_mut().unwrap().push(c);
            if let Some(n) = chars.next() {
                parts.last_mut().unwrap().push(n);
            }
        } else if c == sep {
            parts.push(String::new());
        } else {
            parts.last_mut().unwrap().push(c);
        }
    }
    parts
}

fn split_once_unescaped<'a>(s: &'a str, op: &str) -> Option<(&'a str, &'a str)> {
    let bytes = s.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' {
            i += 2;
            continue;
        }
        if s[i..].starts_with(op) {
            return Some((&s[..i], &s[i + op.len()..]));
        }
        i += 1;
    }
    None
}

fn unescape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            if let Some(n) = chars.next() {
                out.push(n);
            }
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn selects_by_equality_and_inequality() {
        let pod = json!({
            "metadata": {"name": "web-1", "namespace": "default"},
            "spec": {"nodeName": "n1"},
            "status": {"phase": "Running"}
        });
        let cases = [
            ("metadata.name=web-1", true),
            ("metadata.name==web-1", true),
            ("metadata.name!=web-1", false),
            ("spec.nodeName=n1,status.phase!=Failed", true),
            ("spec.nodeName=n2", false),
            ("spec.missing=", true),
            ("", true),
        ];
        for (sel, want) in cases {
            assert_eq!(Selector::parse(sel).unwrap().matches(&pod), want, "{sel}");
        }
    }

    #[test]
    fn escaped_values() {
        let s = Selector::parse(r"metadata.name=a\,b\=c").unwrap();
        assert_eq!(s.requirements()[0].value, "a,b=c");
        assert!(s.matches(&json!({"metadata": {"name": "a,b=c"}})));
    }

    #[test]
    fn rejects_malformed() {
        for bad in ["metadata.name", "=x", "a..b=c", "spec nodeName=x"] {
            assert!(Selector::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn equality_lookup() {
        let s = Selector::parse("spec.nodeName=n1,status.phase!=Failed").unwrap();
        assert_eq!(s.equality("spec.nodeName"), Some("n1"));
        assert_eq!(s.equality("status.phase"), None);
    }
}
