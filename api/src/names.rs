//! Name rules of the Kubernetes API (apimachinery's `validation` package).

/// Longest DNS-1123 subdomain (most object names).
pub const DNS1123_SUBDOMAIN_MAX: usize = 253;
/// Longest DNS-1123 label (namespaces, services, container names).
pub const DNS1123_LABEL_MAX: usize = 63;

/// Why a name breaks a rule; the texts are apimachinery's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("must not be empty")]
    Empty,
    #[error("must be no more than {0} characters")]
    TooLong(usize),
    #[error(
        "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', \
         and must start and end with an alphanumeric character"
    )]
    NotLabel,
    #[error(
        "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, \
         '-' or '.', and must start and end with an alphanumeric character"
    )]
    NotSubdomain,
    #[error("prefix part {0}")]
    Prefix(Box<NameError>),
    #[error("name part must be between 1 and 63 characters")]
    NamePartLength,
    #[error(
        "name part must consist of alphanumeric characters, '-', '_' or '.', and must start \
         and end with an alphanumeric character"
    )]
    NamePartChars,
    #[error(
        "a valid label must be an empty string or consist of alphanumeric characters, '-', \
         '_' or '.', and must start and end with an alphanumeric character"
    )]
    NotLabelValue,
    #[error("may not be '.' or '..'")]
    DotSegment,
    #[error("may not contain '{0}'")]
    PathCharacter(char),
    #[error("must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)")]
    PortNameChars,
    #[error("must contain at least one letter (a-z)")]
    PortNameLetter,
    #[error("must not contain consecutive hyphens")]
    PortNameHyphens,
    #[error("must not begin or end with a hyphen")]
    PortNameEdge,
}

/// Checks a port name (an IANA service name: `http`, `metrics-1`): 1 to 15 lower-case
/// alphanumerics and hyphens, with a letter, no `--`, and no hyphen at either end.
pub fn check_port_name(name: &str) -> Result<(), NameError> {
    if name.is_empty() {
        return Err(NameError::Empty);
    }
    if name.len() > 15 {
        return Err(NameError::TooLong(15));
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        return Err(NameError::PortNameChars);
    }
    if !name.bytes().any(|b| b.is_ascii_lowercase()) {
        return Err(NameError::PortNameLetter);
    }
    if name.contains("--") {
        return Err(NameError::PortNameHyphens);
    }
    if name.starts_with('-') || name.ends_with('-') {
        return Err(NameError::PortNameEdge);
    }
    Ok(())
}

/// Checks a name that is only a path segment (RBAC's roles and bindings: `system:node` is
/// valid): not empty, not `.` or `..`, no `/` or `%`.
pub fn check_path_segment_name(name: &str) -> Result<(), NameError> {
    if name.is_empty() {
        return Err(NameError::Empty);
    }
    if name == "." || name == ".." {
        return Err(NameError::DotSegment);
    }
    if let Some(c) = name.chars().find(|c| *c == '/' || *c == '%') {
        return Err(NameError::PathCharacter(c));
    }
    Ok(())
}

/// Checks a DNS-1123 label: lower-case alphanumerics and '-', starting and ending alphanumeric,
/// at most 63 characters.
pub fn check_dns1123_label(name: &str) -> Result<(), NameError> {
    if name.is_empty() {
        return Err(NameError::Empty);
    }
    if name.len() > DNS1123_LABEL_MAX {
        return Err(NameError::TooLong(DNS1123_LABEL_MAX));
    }
    if !label_chars_ok(name) {
        return Err(NameError::NotLabel);
    }
    Ok(())
}

/// Checks a DNS-1123 subdomain: dot-separated DNS-1123 labels, at most 253 characters.
pub fn check_dns1123_subdomain(name: &str) -> Result<(), NameError> {
    if name.is_empty() {
        return Err(NameError::Empty);
    }
    if name.len() > DNS1123_SUBDOMAIN_MAX {
        return Err(NameError::TooLong(DNS1123_SUBDOMAIN_MAX));
    }
    if !name.split('.').all(label_chars_ok) {
        return Err(NameError::NotSubdomain);
    }
    Ok(())
}

fn label_chars_ok(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= DNS1123_LABEL_MAX
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b[0] != b'-'
        && b[b.len() - 1] != b'-'
}

/// Checks a qualified name as used for label and annotation keys: an optional DNS-1123
/// subdomain prefix and '/', then a name of at most 63 characters of `[A-Za-z0-9_.-]` that
/// starts and ends alphanumeric.
pub fn check_qualified_name(key: &str) -> Result<(), NameError> {
    let (prefix, name) = match key.rsplit_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, key),
    };
    if let Some(prefix) = prefix {
        check_dns1123_subdomain(prefix).map_err(|e| NameError::Prefix(Box::new(e)))?;
    }
    if name.is_empty() || name.len() > 63 {
        return Err(NameError::NamePartLength);
    }
    if !label_value_chars_ok(name) {
        return Err(NameError::NamePartChars);
    }
    Ok(())
}

/// Checks a label value: empty, or at most 63 characters of `[A-Za-z0-9_.-]` that start and
/// end alphanumeric.
pub fn check_label_value(value: &str) -> Result<(), NameError> {
    if value.is_empty() {
        return Ok(());
    }
    if value.len() > 63 {
        return Err(NameError::TooLong(63));
    }
    if !label_value_chars_ok(value) {
        return Err(NameError::NotLabelValue);
    }
    Ok(())
}

fn label_value_chars_ok(s: &str) -> bool {
    let b = s.as_bytes();
    b.iter()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dns1123_labels() {
        for ok in ["a", "web-1", "0abc", &"x".repeat(63)] {
            assert!(check_dns1123_label(ok).is_ok(), "{ok}");
        }
        for bad in ["", "-a", "a-", "A", "a_b", "a.b", &"x".repeat(64)] {
            assert!(check_dns1123_label(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn dns1123_subdomains() {
        assert!(check_dns1123_subdomain("kube-system.example.com").is_ok());
        assert!(check_dns1123_subdomain("a..b").is_err());
        assert!(check_dns1123_subdomain("Upper").is_err());
        assert!(check_dns1123_subdomain(&"a.".repeat(127)).is_err());
    }

    #[test]
    fn qualified_names_and_values() {
        assert!(check_qualified_name("app").is_ok());
        assert!(check_qualified_name("app.kubernetes.io/name").is_ok());
        assert!(check_qualified_name("Bad_Prefix/x").is_err());
        assert!(check_qualified_name("x/").is_err());
        assert!(check_label_value("").is_ok());
        assert!(check_label_value("v1.2_3-A").is_ok());
        assert!(check_label_value("-v").is_err());
    }
}
